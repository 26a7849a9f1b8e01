"""The command line: `python -m petdream SUBCOMMAND ...`. Flags and outputs are a contract."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import shlex
import sys
import typing
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


# The hyperparameter flags' help, where the flag's name does not say it all.
HYPERPARAMETER_HELP = {
    "method": "lora: a small adapter on the UNet; full: every UNet weight (the paper's)",
    "steps": "optimizer steps",
    "batch_size": "images per forward pass (and as many class images with prior preservation)",
    "gradient_accumulation": "micro-batches per optimizer step",
    "resolution": "px (default: the profile's, 512 for SD 1.5)",
    "rank": "LoRA rank",
    "lora_alpha": "LoRA alpha (default: the rank, a scale of 1)",
    "lora_target_modules": "the UNet modules LoRA adapts, e.g. to_q to_k to_v to_out.0",
    "train_text_encoder": "train the text encoder too (LoRA on its attention, or all of it for full)",
    "prior_preservation": "train on class images from the base model too, so the class keeps its meaning",
    "prior_loss_weight": "weight of the class images' loss",
    "num_class_images": "class images for prior preservation (drawn once per base model and class, then reused)",
    "class_image_steps": "sampling steps for each class image",
    "snr_gamma": "Min-SNR loss weighting, e.g. 5",
    "offset_noise": "noise offset, e.g. 0.05 (learns very dark or bright pictures)",
    "random_flip": "also train on the photos' mirror images",
    "mixed_precision": "auto: fp16 on CUDA, none elsewhere",
    "optimizer": "auto: 8-bit AdamW for full on CUDA, fused AdamW otherwise",
    "compile": "torch.compile the UNet: faster steps after a compile of a minute or more",
    "sample_every": "steps between sample images (0: only at the end)",
    "sample_steps": "sampling steps for each sample image",
    "checkpoint_every": "steps between checkpoints",
    "checkpoints_kept": "how many of the newest checkpoints are kept",
}


def _add_hyperparameter_flags(parser: argparse.ArgumentParser) -> None:
    """A flag for each TrainingConfig field (--learning-rate for learning_rate), None unless given: the
    preset's value then stands."""
    from petdream.training.config import LR_SCHEDULERS, METHODS, MIXED_PRECISION, OPTIMIZERS, TrainingConfig

    choices = {"method": METHODS, "mixed_precision": MIXED_PRECISION, "optimizer": OPTIMIZERS,
               "lr_scheduler": LR_SCHEDULERS}
    types = typing.get_type_hints(TrainingConfig)  # "int | None" read as the type it names
    group = parser.add_argument_group("hyperparameters (default: the preset's)")
    for field in dataclasses.fields(TrainingConfig):
        hint = types[field.name]
        optional = type(None) in typing.get_args(hint)  # "X | None": an X, left out by default
        kind = next(t for t in typing.get_args(hint) if t is not type(None)) if optional else hint
        options = {"default": None, "help": HYPERPARAMETER_HELP.get(field.name)}
        if kind is bool:
            options["action"] = argparse.BooleanOptionalAction
        elif typing.get_origin(kind) is tuple:  # lora_target_modules: --lora-target-modules to_q to_v
            options.update(nargs="+", type=typing.get_args(kind)[0], metavar=field.name.rsplit("_", 1)[-1].removesuffix("s").upper())
        elif field.name in choices:
            options["choices"] = choices[field.name]
        else:
            options["type"] = kind
        group.add_argument("--" + field.name.replace("_", "-"), **options)


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

    train = commands.add_parser(
        "train", help="fine-tune the base model on photos of a pet (DreamBooth), writing a pet model folder",
        description="DreamBooth on your pet's photos. Bad photos are reported and skipped, not fatal. "
                    "Ctrl-C stops after the current step and keeps a checkpoint for --resume. "
                    "With --init-model, an existing pet model is trained further (e.g. on its photos plus "
                    "pictures you liked) instead of starting from the base model.",
    )
    train.add_argument("--photos", required=True, type=Path, help="folder of the pet's photos (3 to 50)")
    train.add_argument("--name", help="the pet's name, e.g. Bruno (required, unless --init-model gives it)")
    train.add_argument("--class-noun", help="what kind of animal: dog, cat, rabbit, ... (required, unless "
                                            "--init-model gives it)")
    train.add_argument("--output", required=True, type=Path, help="folder to write the pet model to")
    train.add_argument("--init-model", type=Path, metavar="DIR",
                       help="train this pet model (a folder written by train) further: start from its weights, "
                            "not the base model's. Its profile, method, LoRA rank and pet are the defaults; "
                            "the new petdream.json records it as training.init_model")
    train.add_argument("--preset", choices=("paper", "quick", "tiny"),
                       help="paper: the paper's full fine-tune; quick: fast LoRA (default); tiny: CPU tests "
                            "(default on the tiny profile)")
    train.add_argument("--resume", action="store_true", help="continue an interrupted run from its last checkpoint")
    train.add_argument("--trigger", help="the word prompts use for the pet (default: its name, or a rare token)")
    _add_hyperparameter_flags(train)
    train.add_argument("--push-to", nargs="?", const="", metavar="REPO",
                       help="push the pet model to this Hub repo after training (owner/name; alone: "
                            "{you}/petdream-{name}). Write access is checked before training starts")
    train.add_argument("--public", action="store_true", help="with --push-to: make the repo public (default: private)")
    train.add_argument("--include-photos", action="store_true",
                       help="with --push-to: upload the training photos too (cropped, without EXIF; default: not)")
    train.add_argument("--endpoint", dest="hub_endpoint", metavar="URL",
                       help="the Hub's address (default: HF_ENDPOINT)")
    Settings.add_arguments(train)
    train.set_defaults(run=run_train)

    chat = commands.add_parser(
        "chat", help="talk to the supportive companion, which answers and draws your pet",
        description="One turn with the companion: an empathetic reply, the mood it heard, and a picture of "
                    "your pet. An AI companion, not therapy; messages in crisis get help resources instead.",
    )
    chat.add_argument("--pet", required=True, help="the pet's name")
    chat.add_argument("--class-noun", required=True, help="what kind of animal: dog, cat, ...")
    chat.add_argument("--message", required=True, help="how you feel, or what's on your mind")
    chat.add_argument("--name", help="your name (optional)")
    chat.add_argument("--age", help="your age (optional)")
    chat.add_argument("--occupation", help="what you do (optional)")
    chat.add_argument("--model", type=Path, help="the pet's model folder, to draw the pet itself")
    chat.add_argument("--image-out", type=Path, help="PNG to write the picture to (default: in the data dir)")
    chat.add_argument("--seed", type=int, help="seed for the picture")
    chat.add_argument("--json", action="store_true", help="print one JSON object")
    Settings.add_arguments(chat)
    chat.set_defaults(run=run_chat)

    screen = commands.add_parser(
        "screen", help="screen messages for crisis signals: one per line on stdin, one JSON line each out",
        description='Reads one message per line on stdin; prints {"text", "level", "reasons"} per message.',
    )
    screen.set_defaults(run=run_screen)

    evaluate = commands.add_parser(
        "evaluate", help="score a pet model (CLIPScore, SSIM, DINO, CLIP-I, CLIP-T, FID) beside the base model",
        description="Draw the evaluation prompts with the pet model and with the base model (same seeds), score "
                    "them against the prompts and the pet's photos, and write report.json, report.md, grid.png "
                    "and fidelity.png to --out.",
    )
    evaluate.add_argument("--model", required=True, type=Path, help="the pet model folder (written by train)")
    evaluate.add_argument("--photos", required=True, type=Path, help="folder of the pet's photos to compare with")
    evaluate.add_argument("--out", required=True, type=Path, help="folder to write the report to")
    evaluate.add_argument("--prompts", type=Path,
                          help="prompt file, one a line, {0} for the pet's trigger word and {1} for its class "
                               "(default: the paper's 2 prompts and DreamBench's 25)")
    evaluate.add_argument("--images-per-prompt", type=int, default=4,
                          help="images per prompt; image i uses seed i (default: 4, as DreamBench)")
    evaluate.add_argument("--steps", type=int, default=25, help="denoising steps (default: 25)")
    evaluate.add_argument("--no-baseline", dest="baseline", action="store_false",
                          help="skip the base model: half the time, but no 'what training gained'")
    Settings.add_arguments(evaluate)
    evaluate.set_defaults(run=run_evaluate)

    push = commands.add_parser(
        "push", help="upload a pet model to a Hugging Face Hub repo, with a model card",
        description="Push a pet model folder to a model repo on the Hub in one commit: the weights, petdream.json, "
                    "samples, the evaluation report when there is one, and a model card. The repo is private unless "
                    "--public; the training photos stay local unless --include-photos. The token comes from HF_TOKEN "
                    "or `hf auth login`, never from a flag.",
    )
    push.add_argument("--model", required=True, type=Path, metavar="DIR",
                      help="the pet model folder (written by train)")
    push.add_argument("--repo", metavar="ID",
                      help="owner/name, or name under your account (default: {you}/petdream-{pet name})")
    push.add_argument("--public", action="store_true", help="make the repo public (default: private)")
    push.add_argument("--include-photos", action="store_true",
                      help="upload the training photos too: the square crops it trained on, without EXIF "
                           "(needs --photos)")
    push.add_argument("--photos", type=Path, metavar="DIR", help="with --include-photos: the folder the pet was "
                                                                   "trained on")
    push.add_argument("--evaluation", type=Path, metavar="DIR",
                      help="the folder `evaluate --out` wrote (default: the model folder's evaluation/, if any)")
    push.add_argument("--message", metavar="TEXT", help="commit message")
    push.add_argument("--endpoint", dest="hub_endpoint", metavar="URL", help="the Hub's address (default: HF_ENDPOINT)")
    push.set_defaults(run=run_push)

    pull = commands.add_parser(
        "pull", help="download a pet model from a Hub repo (PetDream's, or any diffusers DreamBooth LoRA)",
        description="Download a model repo into a pet model folder. A repo PetDream pushed comes back as it was; "
                    "another diffusers DreamBooth LoRA repo gets its petdream.json from its model card and the "
                    "flags below (pull says which ones it needs).",
    )
    pull.add_argument("--repo", required=True, metavar="ID", help="owner/name")
    pull.add_argument("--output", required=True, type=Path, metavar="DIR", help="the folder to write (new, or empty)")
    pull.add_argument("--revision", metavar="REV", help="branch, tag or commit (default: main)")
    pull.add_argument("--name", help="the pet's name (for repos not made by PetDream)")
    pull.add_argument("--class-noun", help="what kind of animal, e.g. dog (default: from the card's instance_prompt)")
    pull.add_argument("--trigger", help="the trigger word, e.g. sks (default: from the card's instance_prompt)")
    pull.add_argument("--base-model", dest="pull_base_model", metavar="ID",
                      help="the base model the LoRA was trained on (default: the card's base_model)")
    pull.add_argument("--endpoint", dest="hub_endpoint", metavar="URL", help="the Hub's address (default: HF_ENDPOINT)")
    pull.set_defaults(run=run_pull)

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


def run_train(args: argparse.Namespace) -> int:
    import signal

    from tqdm import tqdm

    from petdream.models import TINY_WARNING, resolve_profile
    from petdream.models.tiny import clip_tokenizer
    from petdream.petmodel import PetModel
    from petdream.photos import intake
    from petdream.training import (LIVE_SAMPLES_DIR, Cancelled, CheckpointSaved, DreamBoothTrainer, Failed, Finished,
                                   Note, Progress, Sample, TrainingConfig, further_training_settings, new_pet)

    # Under `accelerate launch` / torchrun every process runs this; only rank 0 reports, but any process's failure shows.
    quiet = os.environ.get("RANK", "0") != "0"
    init_model = PetModel.load(args.init_model) if args.init_model else None
    if init_model is not None and args.profile is None:
        args.profile = init_model.profile  # training further only works on the base it was trained on
    if init_model is None and not (args.name and args.class_noun):
        raise ValueError("Say the pet's --name and --class-noun (or train an existing model further with "
                         "--init-model DIR).")
    settings = Settings.from_args(args)
    if not args.photos.is_dir():
        raise ValueError(f"{args.photos} is not a folder; give the folder that holds your pet's photos.")
    if (args.public or args.include_photos) and args.push_to is None:
        raise ValueError("--public and --include-photos go with --push-to REPO.")
    hub, repo_id = None, None
    if args.push_to is not None and not quiet:
        from petdream.hub import PetHub

        _quiet_http_log()
        # Before any GPU time: a read-only or mistyped token fails now, not after training.
        hub = PetHub.from_settings(settings)
        repo_id = hub.check_write_access(args.push_to or None, pet_name=args.name)
        print(f"will push to {repo_id} ({'public' if args.public else 'private'}) after training", file=sys.stderr)
    profile = resolve_profile(settings)
    if profile.random_weights and not quiet:
        logging.warning("note: %s", TINY_WARNING)
    overrides = {field.name: getattr(args, field.name) for field in dataclasses.fields(TrainingConfig)}
    if overrides["lora_target_modules"] is not None:
        overrides["lora_target_modules"] = tuple(overrides["lora_target_modules"])
    if init_model is not None:  # the model's method and LoRA shape, unless a flag says otherwise (then refused)
        overrides = {**further_training_settings(init_model), **{k: v for k, v in overrides.items() if v is not None}}
    preset = args.preset or ("tiny" if profile.name == "tiny" else "quick")
    config = TrainingConfig.preset(preset, **overrides)
    resolution = config.resolution or profile.resolution

    entries = sorted(p for p in args.photos.iterdir() if not p.name.startswith("."))
    report = intake([p for p in entries if p.is_file()], resolution=resolution)
    for rejection in [] if quiet else report.rejected:
        print(f"skipped {rejection.file}: {rejection.reason}", file=sys.stderr)
    folders = [f"{p.name}/" for p in entries if p.is_dir()]
    if folders and not quiet:
        print(f"skipped {', '.join(folders)}: photos are read from {args.photos} itself, not from the folders in it",
              file=sys.stderr)
    report.require_enough()
    if init_model is not None:  # the same pet, prompted with the same words, unless flags say otherwise
        trigger = args.trigger or (init_model.pet.trigger if args.name is None else None)
        pet, note = new_pet(args.name or init_model.pet.name, args.class_noun or init_model.pet.class_noun, trigger)
    else:
        pet, note = new_pet(args.name, args.class_noun, args.trigger)
    if note and not quiet:
        print(note, file=sys.stderr)
    clip_tokenizer.cache_clear()  # chosen: the run reads the base model's own tokenizer; this one held ~30 MB
    trainer = DreamBoothTrainer(profile, report.accepted, pet, args.output, config, data_dir=settings.data_dir,
                                device=settings.device, init_model=init_model, lock_dir=settings.lock_dir)

    def cancel_on_ctrl_c(signum, frame):
        if not quiet:
            print("\nstopping after this step; a checkpoint is kept for --resume (Ctrl-C again to abort)", file=sys.stderr)
        trainer.cancel()
        signal.signal(signal.SIGINT, signal.default_int_handler)

    signal.signal(signal.SIGINT, cancel_on_ctrl_c)
    bar, outcome = None, None
    # To the generator's end, not only to its last event: after it the run releases its models and
    # hands their memory back, before a push to the Hub or the summary.
    for event in trainer.run(resume=args.resume):
        if isinstance(event, Progress):
            if bar is None:  # from the first step, resumed or not: its rate and time left count this session's steps
                bar = tqdm(total=config.steps, initial=event.step - 1, unit="step", file=sys.stderr,
                           dynamic_ncols=True, disable=quiet)
            bar.update(event.step - bar.n)
            bar.set_postfix(loss=f"{event.loss:.4f}", lr=f"{event.learning_rate:.2g}")
        elif isinstance(event, Note) and not quiet:
            tqdm.write(event.text, file=sys.stderr)
        elif isinstance(event, CheckpointSaved) and not quiet:
            tqdm.write(f"checkpoint: {event.path}", file=sys.stderr)
        elif isinstance(event, Sample) and event.step < config.steps and not quiet:  # the last is the model's own
            paths = event.save(args.output / LIVE_SAMPLES_DIR)
            tqdm.write(f"samples at step {event.step}: {', '.join(map(str, paths))}", file=sys.stderr)
        elif isinstance(event, (Finished, Failed, Cancelled)):
            outcome = event
    if bar is not None:
        bar.close()
    if isinstance(outcome, Finished):
        if quiet:
            return 0
        further = f", further from {init_model.path}" if init_model is not None else ""
        print(f"trained {pet.name} ({config.method}, preset {preset}, {len(report.accepted)} photos, "
              f"{outcome.model.training['steps_done']} steps{further}) in {outcome.seconds:.1f} s, final loss "
              f"{outcome.final_loss:.4f}; prompt with \"{pet.phrase}\" -> {outcome.model.path}")
        if hub is None:
            return 0
        photos = report.accepted if args.include_photos else None
        return _push_after_training(hub, outcome.model, repo_id, args, photos)
    if isinstance(outcome, Failed):
        kept = f" The last checkpoint is kept: {outcome.checkpoint}." if outcome.checkpoint else ""
        print(f"error: {outcome.reason}{kept}", file=sys.stderr)
        return 1
    if isinstance(outcome, Cancelled):
        if not quiet:
            print(f"cancelled at step {outcome.step}; continue with the same command and --resume." if outcome.checkpoint
                  else "cancelled before the first step; run the same command again to start.", file=sys.stderr)
        return 130
    return 1


def _quiet_http_log() -> None:
    """huggingface_hub's HTTP client logs every request at INFO; a push is a handful of lines, not dozens."""
    for name in ("httpx", "httpx2"):
        logging.getLogger(name).setLevel(logging.WARNING)


def _push_after_training(hub, model, repo_id: str, args: argparse.Namespace, photos) -> int:
    """Push a just-trained pet; if that fails the model stays, and the way to retry is printed."""
    from petdream.hub import HubError

    try:
        result = hub.push(model, repo_id, public=args.public, photos=photos)
    except HubError as error:
        retry = ["python -m petdream push", "--model", shlex.quote(str(model.path)), "--repo", repo_id]
        retry += ["--public"] if args.public else []
        retry += ["--include-photos", "--photos", shlex.quote(str(args.photos))] if args.include_photos else []
        retry += ["--endpoint", hub.endpoint] if args.hub_endpoint else []
        print(f"error: the pet model was trained, but pushing it failed: {error}\n"
              f"push it later with: {' '.join(retry)}", file=sys.stderr)
        return 1
    _print_push(result)
    return 0


def _print_push(result) -> None:
    for note in result.notes:
        print(f"note: {note}", file=sys.stderr)
    print(f"pushed {len(result.files)} files to {result.url} ({'private' if result.private else 'public'}), "
          f"commit {result.commit[:7]}")


def run_push(args: argparse.Namespace) -> int:
    from petdream.hub import HubError, PetHub
    from petdream.petmodel import PetModel
    from petdream.photos import intake

    _quiet_http_log()
    settings = Settings.from_args(args)
    model = PetModel.load(args.model)
    photos = None
    if args.include_photos:
        if args.photos is None or not args.photos.is_dir():
            raise ValueError("--include-photos needs --photos DIR, the folder the pet was trained on: a pet model "
                             "folder keeps only the photos' hashes, not the photos.")
        files = sorted(p for p in args.photos.iterdir() if p.is_file() and not p.name.startswith("."))
        photos = intake(files, resolution=int(model.training.get("resolution") or 512), min_photos=1).accepted
    elif args.photos is not None:
        raise ValueError("--photos goes with --include-photos (the photos are not uploaded otherwise).")
    try:
        result = PetHub.from_settings(settings).push(model, args.repo, public=args.public, photos=photos,
                                                     evaluation=args.evaluation, commit_message=args.message)
    except HubError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    _print_push(result)
    return 0


def run_pull(args: argparse.Namespace) -> int:
    from petdream.hub import HubError, PetHub

    _quiet_http_log()
    settings = Settings.from_args(args)
    try:
        model = PetHub.from_settings(settings).pull(
            args.repo, args.output, revision=args.revision, name=args.name, class_noun=args.class_noun,
            trigger=args.trigger, base_model=args.pull_base_model)
    except HubError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"pulled {args.repo} -> {model.path}: {model.pet.name} the {model.pet.class_noun} ({model.method}, base "
          f"{model.base_model_id}); prompt with \"{model.pet.phrase}\"")
    return 0


def run_chat(args: argparse.Namespace) -> int:
    import time

    from petdream.companion import Companion, Person, backend_for
    from petdream.generate import Generator
    from petdream.models import resolve_profile
    from petdream.petmodel import PetModel
    from petdream.training import new_pet

    pet_model = PetModel.load(args.model) if args.model else None
    if pet_model is not None and args.profile is None:
        args.profile = pet_model.profile
    pet = pet_model.pet if pet_model else new_pet(args.pet, args.class_noun)[0]
    settings = Settings.from_args(args)
    profile = resolve_profile(settings)
    companion = Companion(backend_for(settings, profile.name))
    person = Person(name=args.name, age=args.age, occupation=args.occupation)
    streamed: list[str] = []

    def stream(piece: str) -> None:
        streamed.append(piece)
        print(piece, end="", flush=True)

    turn = companion.respond(args.message, pet=pet, person=person, on_token=None if args.json else stream)
    image = None
    if turn.draw:
        image = args.image_out or settings.data_dir / "chat" / f"{time.strftime('%Y%m%d-%H%M%S')}.png"
        result = Generator(profile, device=settings.device, dtype=settings.dtype).generate(
            turn.image_prompt, negative_prompt=turn.negative_prompt, pet=pet_model, seed=args.seed)
        image = result.save(image)[0]
    if args.json:
        print(json.dumps({
            "reply": turn.reply, "image_prompt": turn.image_prompt, "mood": turn.mood,
            "safety": {"level": turn.safety.level, "reasons": turn.safety.reasons},
            "image": str(image) if image else None, "notices": turn.notices,
        }, ensure_ascii=False, indent=2))
    else:
        if "".join(streamed).strip() != turn.reply.strip():  # the streamed draft was replaced or salvaged
            print(("\n" if streamed else "") + turn.reply)
        else:
            print()
        for notice in turn.notices:
            print(f"\n({notice})")
        print(f"\npicture: {image}" if image else "")
    return 0


def run_screen(args: argparse.Namespace) -> int:
    from petdream.companion.safety import screen_message

    for line in sys.stdin:
        text = line.rstrip("\n")
        if not text.strip():
            continue
        assessment = screen_message(text)
        print(json.dumps({"text": text, "level": assessment.level, "reasons": assessment.reasons},
                         ensure_ascii=False), flush=True)
    return 0


def run_evaluate(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from petdream.evaluation import EvaluationConfig, Evaluator, Failed, Finished, Note, Progress, load_prompts
    from petdream.models import resolve_profile
    from petdream.petmodel import PetModel
    from petdream.photos import intake

    pet = PetModel.load(args.model)
    if args.profile is None:
        args.profile = pet.profile  # a pet model only runs on the base it was trained on
    settings = Settings.from_args(args)
    if not args.photos.is_dir():
        raise ValueError(f"{args.photos} is not a folder; give the folder that holds your pet's photos.")
    config = EvaluationConfig(prompts=tuple(load_prompts(args.prompts)) if args.prompts else None,
                              images_per_prompt=args.images_per_prompt, steps=args.steps, baseline=args.baseline)
    profile = resolve_profile(settings)
    files = sorted(p for p in args.photos.iterdir() if p.is_file() and not p.name.startswith("."))
    photos = intake(files, resolution=profile.resolution, min_photos=1)
    for rejection in photos.rejected:
        print(f"skipped {rejection.file}: {rejection.reason}", file=sys.stderr)
    if not photos.accepted:
        raise ValueError(f"No usable photos in {args.photos}: subject fidelity compares the images with them.")

    bar = tqdm(unit="image", file=sys.stderr, dynamic_ncols=True)
    for event in Evaluator(profile, device=settings.device, dtype=settings.dtype).run(pet, photos.accepted, config):
        if isinstance(event, Progress):
            bar.total, bar.n = event.total_steps, event.step
            bar.set_postfix_str(f"{event.model}: {event.prompt}", refresh=False)
            bar.refresh()
        elif isinstance(event, Note):
            bar.write(f"note: {event.text}", file=sys.stderr)
        elif isinstance(event, Finished):
            bar.close()
            for path in event.report.save(args.out).values():
                print(f"wrote {path}")
            print(event.report.summary())
            return 0
        elif isinstance(event, Failed):
            bar.close()
            print(f"error: {event.reason}", file=sys.stderr)
            return 1
    return 1


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
