"""The command line: `python -m petdream SUBCOMMAND ...`. Flags and outputs are a contract."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from petdream.settings import Settings

EXIT_USAGE = 2  # bad input, or not enough usable photos


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        return args.run(args)
    except (ValueError, RuntimeError) as error:  # the engine's errors are written for people
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m petdream",
        description="PetDream: a personal image model of your pet, and a kind companion that draws it.",
    )
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)

    generate = commands.add_parser(
        "generate", help="draw a picture from a prompt, with the base model or a pet's model",
        description="Draw pictures from a prompt with the base model, or with a trained pet model.",
    )
    generate.add_argument("--prompt", required=True, help="what to draw, e.g. 'a photo of sks dog at the beach'")
    generate.add_argument("--out", required=True, type=Path, help="PNG file to write (several: NAME-1.png, ...)")
    generate.add_argument("--model", type=Path, help="a pet model folder (written by train); default: the base model")
    generate.add_argument("--steps", type=int, default=25, help="denoising steps (default: 25)")
    generate.add_argument("--seed", type=int, help="random seed; image i uses seed + i (default: random)")
    generate.add_argument("--num-images", type=int, default=1, help="how many images (default: 1)")
    generate.add_argument("--negative-prompt", help="what to keep out of the picture")
    generate.add_argument("--guidance", type=float, default=7.5, help="classifier-free guidance scale (default: 7.5)")
    generate.add_argument("--scheduler", choices=("dpmpp", "euler_a", "ddim"), default="dpmpp",
                          help="sampler (default: dpmpp, DPM-Solver++)")
    Settings.add_arguments(generate)
    generate.set_defaults(run=run_generate)

    check = commands.add_parser(
        "check-photos", help="check which photos in a folder can be used for training, and why not",
        description="Run photo intake on every file in DIR; exit 0 if enough photos are usable to train, 2 if not.",
    )
    check.add_argument("folder", type=Path, metavar="DIR")
    check.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    check.add_argument("--resolution", type=int, default=512, help="training resolution in px (default: 512)")
    check.set_defaults(run=run_check_photos)
    return parser


def run_generate(args: argparse.Namespace) -> int:
    from petdream.generate import Generator
    from petdream.models import TINY_WARNING, resolve_profile
    from petdream.petmodel import PetModel

    pet = PetModel.load(args.model) if args.model else None
    if pet is not None and args.profile is None:
        args.profile = pet.profile  # a pet model only runs on the base it was trained on
    settings = Settings.from_args(args)
    profile = resolve_profile(settings)
    if profile.random_weights:
        logging.warning("note: %s", TINY_WARNING)
    generator = Generator(profile, device=settings.device, dtype=settings.dtype)
    result = generator.generate(
        args.prompt,
        pet=pet,
        negative_prompt=args.negative_prompt,
        steps=args.steps,
        guidance_scale=args.guidance,
        seed=args.seed,
        num_images=args.num_images,
        scheduler=args.scheduler,
    )
    for path in result.save(args.out):
        print(f"wrote {path}")
    print(f"seed {result.seed}")
    return 0


def run_check_photos(args: argparse.Namespace) -> int:
    from petdream.photos import intake

    folder: Path = args.folder
    if not folder.is_dir():
        raise ValueError(f"{folder} is not a folder; give the folder that holds your pet's photos.")
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    report = intake(files, resolution=args.resolution)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        for photo in report.accepted:
            print(f"accepted  {photo.file}  ({photo.width}x{photo.height})")
        for rejection in report.rejected:
            print(f"rejected  {rejection.file}: {rejection.reason}")
        verdict = "enough to train" if report.enough else f"{report.missing} more needed to train"
        print(f"{len(report.accepted)} usable, {len(report.rejected)} rejected: {verdict}.")
    return 0 if report.enough else EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
