"""The benchmarks' step clock: the one timer both trainers are read with (benchmarks/step_clock.py),
and train_bench.py's reading of its stamps."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))  # a folder of scripts, not a package

from train_bench import read_stamps  # noqa: E402

TRAINER = """
import sys, time
from tqdm.auto import tqdm
steps = int(sys.argv[1])
def advance(bar, pause=0.0):
    for _ in range(bar.total):
        time.sleep(pause)
        bar.update(1)

advance(tqdm(total=3, desc="class images"))  # another bar: not the run's steps
advance(tqdm(total=steps, disable=True))  # a hidden bar of the same length (a sampler's, say)
advance(tqdm(total=steps), pause=0.05)  # the run's steps
advance(tqdm(total=steps, desc="final sample"))  # a later bar of the same length
print("argv", sys.argv[1:])
"""


def stamps_of(path: Path) -> list[tuple[int, float]]:
    """(step, time.perf_counter() value) as train_bench.py reads them."""
    return read_stamps(path, started=0.0)[0]


def peak_of(path: Path) -> float:
    """The peak RSS (KiB) step_clock.py writes when the program ends, as train_bench.py reads it (NaN if absent)."""
    return read_stamps(path, started=0.0)[1] * 1024


def test_step_clock_stamps_each_step_of_the_run_bar_only(tmp_path):
    script = tmp_path / "trainer.py"
    script.write_text(TRAINER)
    stamps = tmp_path / "run.stamps"
    result = subprocess.run([sys.executable, str(REPO / "benchmarks" / "step_clock.py"), str(stamps), "5", str(script),
                             "5"], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "argv ['5']" in result.stdout  # the program sees its own arguments
    stamped = stamps_of(stamps)
    assert [step for step, _ in stamped] == [1, 2, 3, 4, 5]
    gaps = [b - a for (_, a), (_, b) in zip(stamped, stamped[1:])]
    assert all(0.04 < gap < 1.0 for gap in gaps), gaps
    assert 10_000 < peak_of(stamps) < 2_000_000  # KiB: a Python process with tqdm, not 0, not bytes


def test_step_clock_records_the_peak_of_a_program_that_fails(tmp_path):
    script = tmp_path / "trainer.py"
    script.write_text("import sys\nblock = bytearray(300 << 20)  # touched: 300 MiB resident\nsys.exit(3)\n")
    stamps = tmp_path / "run.stamps"
    result = subprocess.run([sys.executable, str(REPO / "benchmarks" / "step_clock.py"), str(stamps), "5", str(script)],
                            capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 3
    assert peak_of(stamps) > 300 << 10


def test_step_clock_runs_a_module_from_the_working_directory(tmp_path):
    (tmp_path / "fake_trainer.py").write_text(TRAINER)
    stamps = tmp_path / "run.stamps"
    result = subprocess.run([sys.executable, str(REPO / "benchmarks" / "step_clock.py"), str(stamps), "2", "-m",
                             "fake_trainer", "2"], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert [step for step, _ in stamps_of(stamps)] == [1, 2]
