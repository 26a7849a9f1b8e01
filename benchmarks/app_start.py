"""How long `python app.py` takes to serve its first page, cold: a new data dir every run.

    python benchmarks/app_start.py --runs 3

Cold means PetDream has nothing in its data dir yet (no tiny models, no store); Python's own
caches (the OS page cache, __pycache__) are as they are, as after any first install. Target: under
15 s on the 2-core CPU machine.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def first_page_seconds(python: str, timeout: float) -> float:
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="petdream-cold-") as data_dir:
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PETDREAM_DATA_DIR": data_dir}
        started = time.perf_counter()
        app = subprocess.Popen([python, "app.py", "--port", str(port)], cwd=REPO, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            while time.perf_counter() - started < timeout:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1) as page:
                        if page.status == 200 and b"PetDream" in page.read():
                            return time.perf_counter() - started
                except OSError:
                    time.sleep(0.1)
            raise TimeoutError(f"no page after {timeout:.0f} s")
        finally:
            app.terminate()
            app.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--python", default=sys.executable)
    parser.add_argument("--timeout", type=float, default=120)
    args = parser.parse_args()
    times = [first_page_seconds(args.python, args.timeout) for _ in range(args.runs)]
    print("first page after " + ", ".join(f"{t:.1f}" for t in times) + f" s (best {min(times):.1f} s)")


if __name__ == "__main__":
    main()
