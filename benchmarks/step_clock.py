"""Run a Python program and record the moment each of its training steps ends.

    python step_clock.py STAMPS TOTAL -m petdream train ...
    python step_clock.py STAMPS TOTAL path/to/train_dreambooth_lora.py ...

The first shown tqdm progress bar whose total is TOTAL (the run's step count) appends a line
"step seconds" to the file STAMPS each time it advances; other bars (class images, sampling) are
ignored. Seconds are time.perf_counter(), the system's monotonic clock, so stamps from different
processes compare. When the program ends (returns, exits or fails) one last line
"peak-rss-kib N" gives its peak resident set size so far: the peak of its own work, before the
interpreter's exit (which, with torch's CUDA build, pages in another 70-140 MiB of library code).
train_bench.py runs both trainers under this, so their steps are timed by the same code, with
loading and saving outside the stamps.
"""

from __future__ import annotations

import os
import runpy
import sys
import time


def main() -> None:
    stamps_path, total, target = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
    from tqdm import std

    stamps = open(stamps_path, "w", buffering=1)  # line-buffered: a killed run keeps what it stamped
    update = std.tqdm.update

    run_bar = []  # the bar that counts the run's steps, once it shows itself

    def update_and_stamp(bar, n=1):
        shown = update(bar, n)
        if not run_bar and bar.total == total and not bar.disable:
            run_bar.append(bar)
        if run_bar and bar is run_bar[0]:
            stamps.write(f"{bar.n} {time.perf_counter():.6f}\n")
        return shown

    std.tqdm.update = update_and_stamp  # tqdm.auto's class inherits it
    try:
        if target[0] == "-m":
            sys.path[0] = os.getcwd()  # as `python -m` has it (not this script's folder)
            sys.argv = [target[1], *target[2:]]
            runpy.run_module(target[1], run_name="__main__", alter_sys=True)
        else:
            sys.path[0] = os.path.dirname(os.path.abspath(target[0]))  # as `python script.py` has it
            sys.argv = target
            runpy.run_path(target[0], run_name="__main__")
    finally:
        stamps.write(f"peak-rss-kib {peak_rss_kib()}\n")


def peak_rss_kib() -> int:
    """This process's own peak resident set size (KiB), counted from the exec that started it (Linux).
    Not getrusage's ru_maxrss: that carries over the peak of whatever process forked this one."""
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))


if __name__ == "__main__":
    main()
