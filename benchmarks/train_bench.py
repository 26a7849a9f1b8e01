"""Training speed and memory: PetDream's trainer against diffusers' DreamBooth-LoRA script.

Both sides train a rank-4 LoRA on the same model folder and photos with the same settings
(resolution, batch 1, learning rate, seed, fp32, no prior preservation, no validation, no
checkpoints during the run), one after the other, never at the same time, each with the
same number of CPU threads. Both run under step_clock.py, which stamps the moment each step
ends (when the trainer's progress bar advances), so one timer reads both trainers:

    steps/s = (N - W) / (end of step N - end of step W)      W = N // 10 warm-up steps, at least 1

Loading, encoding, the first steps' warm-up, the final sample and saving fall outside it; the
table shows them as "before steps" and "after steps". Peak memory is the maximum resident set
size of the process (os.wait4's ru_maxrss, which includes its waited-for children); the target
judges it. "before exit" is the same peak when the program's own code ended: with torch's CUDA
build the interpreter's exit pages in 70-140 MiB of library code on either side, so the process's
peak can be set there. On a GPU it is host RAM, not GPU memory.

The reference script is not part of PetDream (see benchmarks/README.md for how to get it and
the one venv, with torch 2.14.1 and torchvision, that both sides run in). Configs:

    tiny       the tiny profile's 128 px model (random weights), built by PetDream
    sd15-arch  a Stable Diffusion 1.5-shaped pipeline with random weights (sd15_arch.py), 256 px

    python benchmarks/train_bench.py --config all \\
        --reference-script /work/bench/ref/train_dreambooth_lora.py \\
        --reference-python /work/bench/venv-pd214/bin/python \\
        --petdream-python /work/bench/venv-pd214/bin/python --work-dir /work/bench
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STEP_CLOCK = REPO / "benchmarks" / "step_clock.py"
DEFAULT_PHOTOS = REPO.parent / "shared" / "data" / "dreambench" / "dog"
TARGET_SPEEDUP = 1.5  # PetDream's steps/s over the reference's, at least
TARGET_MEMORY = 1.0  # PetDream's peak RSS over the reference's, at most
PET_NAME, CLASS_NOUN = "bruno", "dog"
NOISE_SHARE = 0.1  # warn when other processes used more CPU-s than this share of a run's wall time
NEVER = 1_000_000  # "checkpoint every" this many steps: no checkpoint during a benchmark run


@dataclass(frozen=True)
class Config:
    """One benchmark configuration: which model, at what size, for how many steps."""

    name: str
    resolution: int  # px, square
    steps: int  # each run's training steps; the rate leaves out the first tenth (at least one)


CONFIGS = {
    "tiny": Config("tiny", resolution=128, steps=200),
    "sd15-arch": Config("sd15-arch", resolution=256, steps=12),
}


@dataclass(frozen=True)
class Recipe:
    """The training settings both sides share."""

    model: Path  # a diffusers StableDiffusionPipeline folder
    photos: Path
    resolution: int  # px
    steps: int
    rank: int = 4
    learning_rate: float = 1e-4
    batch_size: int = 1
    seed: int = 0


@dataclass
class Run:
    """One training process, timed step by step (step_clock.py)."""

    steps: int
    wall_s: float  # wall-clock seconds, start to exit
    peak_rss_mb: float  # max resident set size, MiB, to the process's end (the figure the target judges)
    cpu_s: float  # CPU seconds it used (user + system)
    others_cpu_s: float  # CPU seconds the rest of the machine used meanwhile: noise if large
    stamps: list[tuple[int, float]]  # (step, seconds since the process started) as each step ended
    log: str  # its stdout and stderr
    work_peak_rss_mb: float = math.nan  # max RSS when the program itself ended, before the interpreter's exit

    @property
    def warmup_steps(self) -> int:
        """Steps left out of the rate: the first ones pay for allocations and kernel selection."""
        return max(1, self.steps // 10)

    def steps_per_s(self) -> float:
        """Steps per second from the end of the warm-up steps to the end of the last step; NaN if the
        stamps do not cover that (the run printed no progress bar of `steps` steps)."""
        ended = dict(self.stamps)
        first, last = self.warmup_steps, self.steps
        if first not in ended or last not in ended or ended[last] <= ended[first]:
            return math.nan
        return (last - first) / (ended[last] - ended[first])

    def before_steps_s(self) -> float:
        """Seconds from the start to the end of the first step (loading, encoding, the first step)."""
        return self.stamps[0][1] if self.stamps else math.nan

    def after_steps_s(self) -> float:
        """Seconds from the end of the last step to the exit (final sample, saving)."""
        return self.wall_s - self.stamps[-1][1] if self.stamps else math.nan


@dataclass
class Side:
    """One trainer's runs on one config, and what follows from them."""

    name: str  # "reference" or "petdream"
    torch: str  # torch version of its interpreter
    threads: int  # torch.get_num_threads() under the benchmark's environment
    cwd: Path  # where its processes run
    command_for: Callable[[int, Path], list[str]]  # (steps, output folder) -> its command line
    runs: list[Run] = field(default_factory=list)

    def fastest(self) -> Run:
        """The run with the highest steady rate: the one that counts (noise only ever slows a run)."""
        timed = [r for r in self.runs if not math.isnan(r.steps_per_s())]
        return max(timed, key=Run.steps_per_s) if timed else self.runs[-1]

    def noisy(self) -> bool:
        """True if other processes used the CPUs noticeably during the run that counts."""
        run = self.fastest()
        return run.others_cpu_s > NOISE_SHARE * run.wall_s

    def peak_rss_mb(self) -> float:
        """MiB: the highest peak RSS of any of its runs."""
        return max(r.peak_rss_mb for r in self.runs)

    def work_peak_rss_mb(self) -> float:
        """MiB: the highest peak RSS of any of its runs up to the program's end, before the exit."""
        return max((r.work_peak_rss_mb for r in self.runs if not math.isnan(r.work_peak_rss_mb)), default=math.nan)


def read_stamps(path: Path, started: float) -> tuple[list[tuple[int, float]], float]:
    """step_clock.py's file: its stamps as (step, seconds since `started`, a time.perf_counter() value),
    and the program's peak RSS in MiB before the interpreter's exit (NaN if it did not get that far)."""
    if not path.is_file():
        return [], math.nan
    stamps, work_peak_mb = {}, math.nan
    for line in path.read_text().splitlines():
        key, value = line.split()
        if key == "peak-rss-kib":
            work_peak_mb = int(value) / 1024
        else:
            stamps.setdefault(int(key), float(value) - started)  # the first time the bar showed that step
    return sorted(stamps.items()), work_peak_mb


# -- running processes ----------------------------------------------------------------------


def thread_env(threads: int) -> dict[str, str]:
    """The environment for every measured process: `threads` CPU threads, the Hub offline."""
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), HF_HUB_OFFLINE="1",
               TOKENIZERS_PARALLELISM="false", PYTHONUNBUFFERED="1")
    return env


def busy_cpu_s() -> float:
    """CPU seconds the whole machine has spent busy since boot (/proc/stat; 0 where there is none)."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except OSError:
        return 0.0
    user, nice, system, idle, iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def run_measured(command: list[str], env: dict[str, str], cwd: Path,
                 log: Path) -> tuple[float, float, float, float, float]:
    """Run `command` to completion; return (wall s, peak RSS MiB, its CPU s, other processes' CPU s,
    the time.perf_counter() value at its start).

    Raise RuntimeError, quoting the end of its log, if it fails.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as out:
        out.write(" ".join(command) + "\n\n")
        out.flush()
        busy_before, started = busy_cpu_s(), time.perf_counter()
        process = subprocess.Popen(command, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(process.pid, 0)  # this child's own rusage, not all children's
        wall, busy = time.perf_counter() - started, busy_cpu_s() - busy_before
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        tail = "".join(log.read_text(errors="replace").splitlines(keepends=True)[-25:])
        raise RuntimeError(f"exit {process.returncode}: {' '.join(command)}\n--- last lines of {log} ---\n{tail}")
    cpu = usage.ru_utime + usage.ru_stime
    return wall, usage.ru_maxrss / 1024, cpu, max(busy - cpu, 0.0), started  # Linux: ru_maxrss in KiB


def probe(python: str, env: dict[str, str], modules: tuple[str, ...]) -> dict:
    """torch version, thread count and CUDA availability of `python`; fails if `modules` do not import."""
    code = (f"import json, torch, {', '.join(modules)}; print(json.dumps({{'torch': torch.__version__, "
            "'threads': torch.get_num_threads(), 'cuda': torch.cuda.is_available()}))")
    result = subprocess.run([python, "-c", code], env=env, capture_output=True, text=True, cwd=REPO)
    if result.returncode != 0:
        raise RuntimeError(f"{python} cannot import {', '.join(modules)}:\n{result.stderr.strip()[-1500:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def petdream_can_train(python: str, env: dict[str, str]) -> bool:
    """True if this checkout has the `train` command."""
    result = subprocess.run([python, "-m", "petdream", "train", "--help"], env=env, cwd=REPO, capture_output=True)
    return result.returncode == 0


# -- the two trainers' command lines ---------------------------------------------------------


def reference_command(python: str, script: Path, recipe: Recipe, steps: int, output: Path) -> list[str]:
    """diffusers' train_dreambooth_lora.py, single process, with the recipe's settings."""
    return [
        python, str(script),
        "--pretrained_model_name_or_path", str(recipe.model),
        "--instance_data_dir", str(recipe.photos),
        "--instance_prompt", f"a photo of {PET_NAME} {CLASS_NOUN}",
        "--output_dir", str(output),
        "--resolution", str(recipe.resolution),
        "--train_batch_size", str(recipe.batch_size),
        "--rank", str(recipe.rank),
        "--learning_rate", str(recipe.learning_rate),
        "--lr_scheduler", "constant",
        "--max_train_steps", str(steps),
        "--checkpointing_steps", str(NEVER),
        "--mixed_precision", "no",
        "--report_to", "all",  # "all" of none installed: no tracker (the default needs tensorboard)
        "--seed", str(recipe.seed),
    ]


def petdream_command(python: str, config: Config, recipe: Recipe, steps: int, output: Path,
                     data_dir: Path) -> list[str]:
    """`python -m petdream train` with the recipe's settings; the tiny preset has no Min-SNR/offset noise."""
    if config.name == "tiny":
        profile = ["--profile", "tiny"]
    else:
        profile = ["--profile", "sd15", "--base-model", str(recipe.model)]
    return [
        python, "-m", "petdream", "train",
        "--photos", str(recipe.photos),
        "--name", PET_NAME,
        "--class-noun", CLASS_NOUN,
        "--output", str(output),
        *profile,
        "--data-dir", str(data_dir),
        "--preset", "tiny",
        "--method", "lora",
        "--steps", str(steps),
        "--resolution", str(recipe.resolution),
        "--no-prior-preservation",
        "--seed", str(recipe.seed),
        "--rank", str(recipe.rank),
        "--batch-size", str(recipe.batch_size),
        "--gradient-accumulation", "1",
        "--learning-rate", str(recipe.learning_rate),
        "--mixed-precision", "no",
        "--no-train-text-encoder",
        "--no-gradient-checkpointing",
        "--checkpoint-every", str(NEVER),
        "--sample-every", "0",
    ]


# -- model folders ---------------------------------------------------------------------------


def model_folder(config: Config, work_dir: Path, petdream_python: str, env: dict[str, str]) -> Path:
    """The pipeline folder for `config`, built with PetDream's interpreter on first use."""
    if config.name == "tiny":
        code = ("import pathlib, sys; from petdream.models.profiles import tiny_profile; "
                "print(tiny_profile(pathlib.Path(sys.argv[1])).base_model)")
        command = [petdream_python, "-c", code, str(work_dir / "data")]
    else:
        print(f"building (once) the SD 1.5-shaped pipeline in {work_dir / 'sd15-arch'} ...", flush=True)
        command = [petdream_python, str(REPO / "benchmarks" / "sd15_arch.py"), str(work_dir / "sd15-arch")]
    result = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"could not build the {config.name} model:\n{result.stderr[-2000:]}")
    return Path(result.stdout.strip().splitlines()[-1])


# -- measuring -------------------------------------------------------------------------------


def wait_for_quiet(limit_s: float, window_s: float = 5.0) -> None:
    """Wait (at most `limit_s` seconds) until other processes use under NOISE_SHARE of the CPUs."""
    deadline, told = time.monotonic() + limit_s, False
    while True:
        before = busy_cpu_s()
        time.sleep(window_s)
        share = (busy_cpu_s() - before) / (window_s * (os.cpu_count() or 1))
        if share < NOISE_SHARE or time.monotonic() > deadline:
            return
        if not told:
            print(f"(the machine is {share:.0%} busy: waiting up to {limit_s:.0f} s for it to be quiet)", end=" ",
                  flush=True)
            told = True


def run_once(side: Side, steps: int, repeat: int, args: argparse.Namespace, env: dict[str, str],
             run_dir: Path) -> None:
    """One run of `side` for `steps` steps under step_clock.py, added to `side.runs`.

    It starts once the machine is quiet; if other processes still used the CPUs noticeably
    during it, it is done again, up to `args.retries` times (every attempt is kept).
    """
    for attempt in range(args.retries + 1):
        output = run_dir / (f"{side.name}-{steps}steps-r{repeat}" + (f"-retry{attempt}" if attempt else ""))
        shutil.rmtree(output, ignore_errors=True)
        stamps = output.with_suffix(".stamps")
        python, *trainer = side.command_for(steps, output)
        command = [python, str(STEP_CLOCK), str(stamps), str(steps), *trainer]
        print(f"  {side.name}: {steps} steps (repeat {repeat}/{args.repeats}) ...", end=" ", flush=True)
        wait_for_quiet(args.quiet_wait)
        wall, rss, cpu, others, started = run_measured(command, env, side.cwd, output.with_suffix(".log"))
        stamped, work_peak = read_stamps(stamps, started)
        run = Run(steps, wall, rss, cpu, others, stamped, str(output.with_suffix(".log")), work_peak)
        noisy = others > NOISE_SHARE * wall
        print(f"{wall:.1f} s, {run.steps_per_s():.3f} steps/s, {cpu:.0f} CPU-s, peak RSS {rss:.0f} MiB "
              f"({work_peak:.0f} before the exit)"
              + (f"; other processes used {others:.0f} CPU-s meanwhile: noisy" if noisy else ""), flush=True)
        side.runs.append(run)
        if not noisy:
            return


def measure(sides: list[Side], recipe: Recipe, args: argparse.Namespace, env: dict[str, str], run_dir: Path) -> None:
    """Run every side `args.repeats` times, interleaved (A, B, A, B, ...) so that a slow spell of a
    shared machine falls on both sides alike."""
    for repeat in range(1, args.repeats + 1):
        for side in sides:
            run_once(side, recipe.steps, repeat, args, env, run_dir)


def print_table(config: Config, recipe: Recipe, sides: list[Side], threads: int) -> dict:
    """Print one config's table and ratios; return them as a dict (for --json)."""
    print(f"\n{config.name}: {recipe.resolution} px, batch {recipe.batch_size}, LoRA rank {recipe.rank}, "
          f"lr {recipe.learning_rate:g}, seed {recipe.seed}, fp32, no prior preservation; {recipe.steps} steps, "
          f"rate over steps {max(1, recipe.steps // 10)}-{recipe.steps}; {threads} threads")
    header = f"{'side':<10} {'torch':<14} {'steps/s':>8} {'s/step':>8} {'before steps s':>14} " \
             f"{'after steps s':>13} {'wall s':>8} {'peak RSS MiB':>12} {'before exit':>11}"
    print(header + "\n" + "-" * len(header))
    rows = {}
    for side in sides:
        run = side.fastest()
        rate = run.steps_per_s()
        rows[side.name] = r = dict(
            torch=side.torch, threads=side.threads, steps_per_s=rate, s_per_step=1 / rate,
            before_steps_s=run.before_steps_s(), after_steps_s=run.after_steps_s(), wall_s=run.wall_s,
            peak_rss_mb=side.peak_rss_mb(), work_peak_rss_mb=side.work_peak_rss_mb(), noisy=side.noisy(),
            runs=[dataclasses.asdict(r) for r in side.runs])
        print(f"{side.name:<10} {side.torch:<14} {rate:>8.3f} {1 / rate:>8.2f} {r['before_steps_s']:>14.1f} "
              f"{r['after_steps_s']:>13.1f} {run.wall_s:>8.1f} {r['peak_rss_mb']:>12.0f} {r['work_peak_rss_mb']:>11.0f}"
              + ("  (noisy: other processes were busy)" if side.noisy() else ""))
    result = dict(config=config.name, resolution=recipe.resolution, steps=recipe.steps, threads=threads,
                  model=str(recipe.model), sides=rows)
    if any(math.isnan(r["steps_per_s"]) for r in rows.values()):
        print("warning: a side's steps were not stamped (see its log): no rate for it")
    if {"reference", "petdream"} <= rows.keys():
        speed = rows["petdream"]["steps_per_s"] / rows["reference"]["steps_per_s"]
        memory = rows["petdream"]["peak_rss_mb"] / rows["reference"]["peak_rss_mb"]
        work_memory = rows["petdream"]["work_peak_rss_mb"] / rows["reference"]["work_peak_rss_mb"]
        met = speed >= TARGET_SPEEDUP and memory <= TARGET_MEMORY
        print(f"petdream/reference: steps/s {speed:.2f}x, peak RSS {memory:.2f}x ({work_memory:.2f}x before the exit)  "
              f"(target: steps/s >= {TARGET_SPEEDUP:g}x with peak RSS <= {TARGET_MEMORY:g}x: "
              f"{'met' if met else 'NOT met'})")
        result.update(speedup=speed, memory_ratio=memory, work_memory_ratio=work_memory, target_met=met)
    return result


def bench_config(config: Config, args: argparse.Namespace, env: dict[str, str], sides: dict[str, dict]) -> dict:
    """Build the model folder, run both sides, print the table."""
    recipe = Recipe(model=model_folder(config, args.work_dir, args.petdream_python, env), photos=args.photos,
                    resolution=args.resolution or config.resolution, steps=args.steps or config.steps)
    run_dir = args.work_dir / "runs" / config.name
    print(f"\n== {config.name}: model {recipe.model}, logs in {run_dir}", flush=True)
    measured = []
    if "reference" in sides:
        measured.append(Side(
            "reference", sides["reference"]["torch"], sides["reference"]["threads"], cwd=run_dir,
            command_for=lambda steps, out: reference_command(args.reference_python, args.reference_script, recipe,
                                                             steps, out)))
    if "petdream" in sides:
        measured.append(Side(
            "petdream", sides["petdream"]["torch"], sides["petdream"]["threads"], cwd=REPO,
            command_for=lambda steps, out: petdream_command(args.petdream_python, config, recipe, steps, out,
                                                            args.work_dir / "data")))
    measure(measured, recipe, args, env, run_dir)
    return print_table(config, recipe, measured, args.threads)


# -- the command line ------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", choices=(*CONFIGS, "all"), default="tiny")
    parser.add_argument("--steps", type=int, help="training steps per run "
                        f"(default: {', '.join(f'{c.name} {c.steps}' for c in CONFIGS.values())})")
    parser.add_argument("--resolution", type=int, help="px (default: tiny 128, sd15-arch 256; 512 on a GPU)")
    parser.add_argument("--threads", type=int, default=2, help="OMP/MKL/torch threads for both sides (default: 2)")
    parser.add_argument("--repeats", type=int, default=1, help="runs of each side; the fastest counts (default 1)")
    parser.add_argument("--retries", type=int, default=2,
                        help="redo a run this many times if other processes used the CPUs during it (default 2)")
    parser.add_argument("--quiet-wait", type=float, default=600,
                        help="seconds to wait, before each run, for other processes to go quiet (default 600)")
    parser.add_argument("--reference-script", type=Path, default=os.environ.get("PETDREAM_REFERENCE_SCRIPT"),
                        help="diffusers' examples/dreambooth/train_dreambooth_lora.py "
                             "(or env PETDREAM_REFERENCE_SCRIPT)")
    parser.add_argument("--reference-python", default=os.environ.get("PETDREAM_REFERENCE_PYTHON", sys.executable),
                        help="interpreter with torchvision for the reference (or env PETDREAM_REFERENCE_PYTHON; "
                             "default: this one)")
    parser.add_argument("--petdream-python", default=sys.executable, help="interpreter for PetDream (default: this one)")
    parser.add_argument("--photos", type=Path, default=DEFAULT_PHOTOS, help=f"instance photos (default: {DEFAULT_PHOTOS})")
    parser.add_argument("--work-dir", type=Path, default=Path.home() / ".cache" / "petdream-bench",
                        help="models, outputs and logs (default: ~/.cache/petdream-bench)")
    parser.add_argument("--only", choices=("reference", "petdream"), help="run one side only")
    parser.add_argument("--json", type=Path, metavar="OUT", help="also write the results to this JSON file")
    args = parser.parse_args(argv)
    args.work_dir = args.work_dir.resolve()
    args.photos = args.photos.resolve()
    return args


def available_sides(args: argparse.Namespace, env: dict[str, str]) -> dict[str, dict]:
    """{side: probe info} for the sides that can run; explain on stdout why one cannot."""
    sides = {}
    if args.only in (None, "reference"):
        if args.reference_script is None or not Path(args.reference_script).is_file():
            sys.exit(f"error: the reference script {args.reference_script or '(not given)'} is missing. Get it with\n"
                     "  git clone --depth 1 https://github.com/huggingface/diffusers && pass\n"
                     "  --reference-script diffusers/examples/dreambooth/train_dreambooth_lora.py "
                     "(see benchmarks/README.md)")
        args.reference_script = Path(args.reference_script).resolve()
        sides["reference"] = probe(args.reference_python, env, ("torchvision", "diffusers", "peft", "accelerate"))
    if args.only in (None, "petdream"):
        if petdream_can_train(args.petdream_python, env):
            sides["petdream"] = probe(args.petdream_python, env, ("petdream",))
        else:
            print(f"note: `{args.petdream_python} -m petdream train` is not available in this checkout; "
                  "measuring the reference only")
    for name, info in sides.items():
        if info["threads"] != args.threads:
            print(f"warning: {name}'s torch uses {info['threads']} threads, not {args.threads}")
    return sides


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.photos.is_dir():
        print(f"SKIP: the photos folder {args.photos} does not exist (give one with --photos)")
        return 0
    env = thread_env(args.threads)
    sides = available_sides(args, env)
    for name, info in sides.items():
        print(f"{name}: torch {info['torch']}, {info['threads']} threads, CUDA {'yes' if info['cuda'] else 'no'}")
    configs = list(CONFIGS.values()) if args.config == "all" else [CONFIGS[args.config]]
    results = [bench_config(config, args, env, sides) for config in configs]
    if args.json:
        machine = dict(cpus=os.cpu_count(), platform=platform.platform(), python=platform.python_version())
        args.json.write_text(json.dumps(dict(machine=machine, threads=args.threads, results=results), indent=2))
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
