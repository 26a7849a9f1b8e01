"""PetDream's trainer on one GPU: steps/s at 512 px and the wall time of each preset.

Runs in one process, on the SD 1.5-shaped model with random weights (`sd15_arch.py`, built
into `--model` if it is not there), with the real dog photos. Its images are noise, but every
step costs what it costs on the real checkpoint. For each recipe it times every event the
trainer yields, so the wall time splits into set-up (loading, class images, encoding),
training steps, samples, checkpoints and the final save. Results go to `--json` after each
recipe, so a run cut short keeps what it measured.

    python benchmarks/gpu_bench.py --model /tmp/sd15-arch --photos ../shared/data/dreambench/dog \\
        --json gpu.json --recipes lora-512,paper,quick

Recipes:
    lora-512   rank-4 LoRA, batch 1, no prior preservation: the CPU benchmark's recipe at 512 px,
               for steady-state steps/s (measured after the first 25 steps)
    paper      the `paper` preset as it ships (full fine-tune, 300 steps, batch 2 x 2, fp16,
               gradient checkpointing, 8-bit AdamW, samples and checkpoints every 100 steps)
    quick      the `quick` preset as it ships (rank-16 LoRA, 400 steps, Min-SNR, prior
               preservation with 50 class images generated first)
    paper-bf16 `paper` in bf16 without gradient checkpointing: what the H100 can do with memory to spare
    paper-no-ckpt  `paper` in fp16 without gradient checkpointing
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from petdream.models import resolve_profile  # noqa: E402
from petdream.photos import intake  # noqa: E402
from petdream.settings import Settings  # noqa: E402
from petdream.training import (CheckpointSaved, DreamBoothTrainer, Failed, Finished, Note, Progress,  # noqa: E402
                               Sample, TrainingConfig, new_pet)

WARMUP_STEPS = 25  # steps/s is measured after these (allocator warm-up, cuDNN autotuning)

RECIPES = {
    "lora-512": ("quick", dict(rank=4, prior_preservation=False, snr_gamma=None, steps=150, sample_every=0,
                               checkpoint_every=10**6)),
    "paper": ("paper", {}),
    "quick": ("quick", {}),
    "paper-bf16": ("paper", dict(mixed_precision="bf16", gradient_checkpointing=False)),
    "paper-no-ckpt": ("paper", dict(gradient_checkpointing=False)),
}


def run_recipe(name: str, args: argparse.Namespace) -> dict:
    """Train one recipe from scratch; return its timings (seconds), steps/s and peak GPU memory (GiB)."""
    preset, overrides = RECIPES[name]
    if args.steps:
        overrides = {**overrides, "steps": args.steps, "checkpoint_every": max(1, args.steps // 3),
                     "sample_every": 0 if overrides.get("sample_every") == 0 else max(1, args.steps // 3)}
    config = TrainingConfig.preset(preset, resolution=args.resolution, **overrides)
    settings = Settings.from_env(profile="sd15", base_model=str(args.model), data_dir=args.work_dir / "data")
    profile = resolve_profile(settings)
    files = sorted(p for p in args.photos.iterdir() if p.is_file())
    photos = intake(files, resolution=config.resolution or profile.resolution).accepted
    pet, _ = new_pet("bruno", "dog", None)
    output = args.work_dir / "runs" / name
    trainer = DreamBoothTrainer(profile, photos, pet, output, config, data_dir=settings.data_dir)
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()

    phases = {"setup": 0.0, "steps": 0.0, "samples": 0.0, "checkpoints": 0.0, "final_save": 0.0}
    notes, step_seconds, result = [], [], {"recipe": name, "config": config.to_dict()}
    started = last = time.perf_counter()
    for event in trainer.run():
        now = time.perf_counter()
        took, last = now - last, now
        if isinstance(event, Progress):
            if step_seconds or event.step > 1:
                step_seconds.append(took)  # the step alone: samples and checkpoints are events of their own
                phases["steps"] += took
            else:
                phases["setup"] += took  # includes the first step, which also warms up kernels
            print(f"\r  {name}: step {event.step}/{event.total_steps} loss {event.loss:.4f}", end="", flush=True)
        elif isinstance(event, Sample):
            phases["samples" if event.step < config.steps else "final_save"] += took
        elif isinstance(event, CheckpointSaved):
            phases["checkpoints"] += took
        elif isinstance(event, Note):
            notes.append(event.text)
            phases["setup"] += took
        elif isinstance(event, Finished):
            phases["final_save"] += took
            result["final_loss"] = event.final_loss
        elif isinstance(event, Failed):
            result["failed"] = event.reason
    print()
    result["wall_s"] = time.perf_counter() - started
    result["phases_s"] = phases
    result["notes"] = notes
    steady = step_seconds[WARMUP_STEPS:] if len(step_seconds) > 2 * WARMUP_STEPS else step_seconds
    if steady:
        result["steps_per_s"] = len(steady) / sum(steady)
    if torch.cuda.is_available():
        result["peak_gpu_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
    del trainer
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True, help="sd15-arch folder (built there if missing)")
    parser.add_argument("--photos", type=Path, default=REPO.parent / "shared" / "data" / "dreambench" / "dog")
    parser.add_argument("--work-dir", type=Path, default=Path("/tmp/petdream-gpu-bench"))
    parser.add_argument("--recipes", default="lora-512,paper,quick", help=f"comma-separated, of {', '.join(RECIPES)}")
    parser.add_argument("--resolution", type=int, help="px (default: the profile's, 512)")
    parser.add_argument("--steps", type=int, help="override every recipe's steps (dry runs)")
    parser.add_argument("--deadline", type=float, default=float("inf"),
                        help="seconds after which no further recipe starts")
    parser.add_argument("--json", type=Path, help="write results here after each recipe")
    args = parser.parse_args(argv)

    began = time.perf_counter()
    from sd15_arch import ensure_sd15_arch

    if not (args.model / "model_index.json").is_file():
        print(f"building the sd15-arch model in {args.model} ...", flush=True)
        ensure_sd15_arch(args.model)
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    report = {"device": device, "torch": torch.__version__, "build_s": time.perf_counter() - began, "recipes": []}
    print(f"device {device}, torch {torch.__version__}", flush=True)
    for name in args.recipes.split(","):
        if time.perf_counter() - began > args.deadline:
            print(f"skipping {name}: past the deadline of {args.deadline:.0f} s")
            report.setdefault("skipped", []).append(name)
            continue
        result = run_recipe(name, args)
        report["recipes"].append(result)
        print(json.dumps({k: v for k, v in result.items() if k != "config"}, indent=1), flush=True)
        if args.json:
            args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
