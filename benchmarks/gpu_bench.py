"""PetDream's trainer on one GPU: steps/s at 512 px and the wall time of each preset.

Runs in one process, on the SD 1.5-shaped model with random weights (`sd15_arch.py`, built
into `--model` if it is not there), with the real dog photos. Its images are noise, but every
step costs what it costs on the real checkpoint. For each recipe it times every event the
trainer yields, so the wall time splits into set-up (loading, class images, encoding),
training steps, samples, checkpoints (the time the loop waited for a write: checkpoints are
written in the background, their copy to host memory counts in the step after them) and the
final save; set-up's loading and first step (kernel warm-up, compiling) and the final sample
are also timed alone. Results go to `--json` after each recipe, so a run cut short keeps what
it measured.

    python benchmarks/gpu_bench.py --model /tmp/sd15-arch --photos ../shared/data/dreambench/dog \\
        --json gpu.json --recipes lora-512,paper,quick

Recipes:
    lora-512   rank-4 LoRA, batch 1, no prior preservation: the CPU benchmark's recipe at 512 px,
               for steady-state steps/s (measured after the first 25 steps)
    paper      the `paper` preset as it ships (full fine-tune, 300 steps, batch 2 x 2, fp16,
               gradient checkpointing, 8-bit AdamW, samples and checkpoints every 100 steps)
    quick      the `quick` preset as it ships (rank-16 LoRA, 400 steps, Min-SNR, prior
               preservation with 50 class images generated first)
  Steps/s of `paper`'s training step changed one way at a time (60 steps, no samples or checkpoints):
    paper-steps    as it ships (on a GPU its 2 micro-batches of 2 run as one pass)
    paper-apart    its micro-batches one after another (as before session 3)
    paper-no-ckpt  without gradient checkpointing
    paper-compile  with the UNet compiled (torch.compile; its compile time is in set-up)
    paper-graphs   compiled with CUDA graphs (torch.compile mode "reduce-overhead"): the step without
                   its ~7,500 kernel launches, still fp16 with gradient checkpointing
    paper-fast     all that an 80 GB card allows: bf16, no checkpointing, compiled

--profile RECIPE profiles three of that recipe's steady steps (after step 30) and prints where
their time went: GPU kernels by time, and how busy the GPU was over the steps' wall time.
"""

from __future__ import annotations

import argparse
import functools
import gc
import json
import shutil
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

STEPS_ONLY = dict(steps=60, sample_every=0, checkpoint_every=10**6)
RECIPES = {
    "lora-512": ("quick", dict(rank=4, prior_preservation=False, snr_gamma=None, steps=150, sample_every=0,
                               checkpoint_every=10**6)),
    "paper": ("paper", {}),
    "quick": ("quick", {}),
    "paper-steps": ("paper", STEPS_ONLY),
    "paper-apart": ("paper", dict(STEPS_ONLY, fuse_micro_batches=False)),
    "paper-no-ckpt": ("paper", dict(STEPS_ONLY, gradient_checkpointing=False)),
    "paper-compile": ("paper", dict(STEPS_ONLY, compile=True)),
    "paper-graphs": ("paper", dict(STEPS_ONLY, compile=True, compile_mode="reduce-overhead")),
    "paper-fast": ("paper", dict(STEPS_ONLY, mixed_precision="bf16", gradient_checkpointing=False, compile=True)),
}
PROFILED_STEPS = (30, 33)  # profile from the end of step 30 to the end of step 33


def run_recipe(name: str, args: argparse.Namespace) -> dict:
    """Train one recipe from scratch; return its timings (seconds), steps/s and peak GPU memory (GiB)."""
    preset, overrides = RECIPES[name]
    overrides = dict(overrides)
    fuse_micro_batches = overrides.pop("fuse_micro_batches", None)  # the trainer's, not a hyperparameter
    compile_mode = overrides.pop("compile_mode", None)  # torch.compile's, which the trainer leaves at its default
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
    shutil.rmtree(output, ignore_errors=True)  # a pet model left by an earlier run would be refused
    trainer = DreamBoothTrainer(profile, photos, pet, output, config, data_dir=settings.data_dir)
    trainer.fuse_micro_batches = fuse_micro_batches
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()

    phases = {"setup": 0.0, "steps": 0.0, "samples": 0.0, "checkpoints": 0.0, "final_save": 0.0}
    notes, step_seconds, result, profiler = [], [], {"recipe": name, "config": config.to_dict()}, None
    started = last = time.perf_counter()
    real_compile = torch.compile
    if compile_mode:
        torch.compile = functools.partial(real_compile, mode=compile_mode)
    set_up = result["setup_parts_s"] = {}  # where set-up's seconds go: loading, the first step (kernel warm-up)
    trainer._load_models = _timed(trainer._load_models, set_up, "load_models")
    trainer._step = _timed(trainer._step, set_up, "first_step")
    try:
        for event in trainer.run():
            now = time.perf_counter()
            took, last = now - last, now
            if isinstance(event, Progress):
                if name == args.profile and event.step in PROFILED_STEPS:
                    profiler = _profile(profiler, event.step == PROFILED_STEPS[0], result)
                    last = time.perf_counter()  # starting and summing up the profile is no step's time
                if step_seconds or event.step > 1:
                    step_seconds.append(took)  # the step alone: samples and checkpoints are events of their own
                    phases["steps"] += took
                else:
                    phases["setup"] += took  # includes the first step, which also warms up kernels
                # the time since the start on each line: a run cut off at its limit still tells where time went
                print(f"\r  {name}: step {event.step}/{event.total_steps} loss {event.loss:.4f} at {now - started:.1f} s",
                      end="", flush=True)
            elif isinstance(event, Sample):
                phases["samples" if event.step < config.steps else "final_save"] += took
                if event.step == config.steps:
                    result["final_sample_s"] = took  # of final_save: the rest is writing the pet model
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
    finally:
        torch.compile = real_compile
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


def _timed(method, seconds: dict, key: str):
    """`method`, noting in seconds[key] how long its first call took (to the GPU's finishing it)."""
    def timed(*args, **kwargs):
        if key in seconds:
            return method(*args, **kwargs)
        began = time.perf_counter()
        out = method(*args, **kwargs)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        seconds[key] = time.perf_counter() - began
        return out
    return timed


def _profile(profiler, start: bool, result: dict):
    """Start a CPU+CUDA profile, or stop it and print (and keep in `result`) where the time went."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    if start:
        profiler = profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA])
        profiler.__enter__()
        profiler.began = time.perf_counter()
        return profiler
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    wall = time.perf_counter() - profiler.began
    profiler.__exit__(None, None, None)
    averages = profiler.key_averages()
    # GPU events that are kernels: the rest are CPU-side ops, and user annotations (torch's
    # "Optimizer.step#..." spans its kernels on the GPU's timeline and would count them twice)
    kernels = [e for e in averages if e.device_type == DeviceType.CUDA and not e.is_user_annotation]
    kernels_s = sum(e.self_device_time_total for e in kernels) / 1e6
    steps = PROFILED_STEPS[1] - PROFILED_STEPS[0]
    result["profile"] = {"steps": steps, "wall_s": wall, "gpu_kernels_s": kernels_s, "gpu_busy": kernels_s / wall,
                         "kernel_launches": sum(e.count for e in kernels)}
    print(f"\nprofile of {steps} steps: wall {wall:.3f} s, GPU kernels {kernels_s:.3f} s "
          f"({kernels_s / wall:.0%} busy), {result['profile']['kernel_launches']} kernels")
    print(averages.table(sort_by="self_device_time_total", row_limit=18, max_name_column_width=60))
    return None


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
    parser.add_argument("--profile", metavar="RECIPE", help="profile three steady steps of this recipe")
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
        try:
            result = run_recipe(name, args)
        except Exception as error:  # one recipe's crash (say, the compiler's) must not lose the others
            import traceback

            traceback.print_exc()
            result = {"recipe": name, "error": f"{type(error).__name__}: {error}"[:2000]}
        report["recipes"].append(result)
        print(json.dumps({k: v for k, v in result.items() if k != "config"}, indent=1), flush=True)
        if args.json:
            args.json.write_text(json.dumps(report, indent=2))
    print_summary(report)
    return 0


def print_summary(report: dict) -> None:
    print(f"\n{report['device']}, torch {report['torch']}")
    print(f"{'recipe':<14} {'wall s':>7} {'set-up':>7} {'steps':>7} {'samples':>7} {'ckpts':>7} {'final':>7} "
          f"{'steps/s':>8} {'GiB':>6}")
    for r in report["recipes"]:
        if "error" in r:
            print(f"{r['recipe']:<14} failed: {r['error'][:100]}")
            continue
        phases = r["phases_s"]
        print(f"{r['recipe']:<14} {r['wall_s']:>7.1f} {phases['setup']:>7.1f} {phases['steps']:>7.1f} "
              f"{phases['samples']:>7.1f} {phases['checkpoints']:>7.1f} {phases['final_save']:>7.1f} "
              f"{r.get('steps_per_s', float('nan')):>8.2f} {r.get('peak_gpu_memory_gib', float('nan')):>6.1f}"
              + (f"  FAILED: {r['failed'][:60]}" if "failed" in r else ""))
        parts = {**r.get("setup_parts_s", {}), "final_sample": r.get("final_sample_s")}
        print(f"{'':<14} of which " + ", ".join(f"{k} {v:.1f} s" for k, v in parts.items() if v is not None))


if __name__ == "__main__":
    raise SystemExit(main())
