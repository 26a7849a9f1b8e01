"""Helpers for the browser tests: PetDream served as `python app.py`, and Debian's Chromium.

Playwright's own browser download is not used: the tests drive the system Chromium
(`apt-get install -y --no-install-recommends chromium`, which `.ci/run` does).
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from conftest import REPO

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
VIEWPORT = {"width": 1280, "height": 900}
ARTIFACTS = REPO / "test-artifacts" / "browser"  # screenshots and the app's log (gitignored)


def missing_browser() -> str | None:
    """Why the browser tests cannot run here, or None when they can."""
    if not CHROMIUM.is_file():
        return (f"Chromium not found at {CHROMIUM}: apt-get install -y --no-install-recommends chromium "
                "(.ci/run does this)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is not installed: pip install -r tests/requirements.txt"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def log_tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@contextlib.contextmanager
def served_app(data_dir: Path, log_path: Path, startup_timeout: float = 120):
    """`python app.py --profile tiny` on a free port, as a person starts it; yields its URL."""
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GRADIO_ANALYTICS_ENABLED": "False", "PYTHONUNBUFFERED": "1"}
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "app.py", "--profile", "tiny", "--data-dir", str(data_dir), "--port", str(port)],
            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + startup_timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"app.py exited with {process.returncode} before serving:\n{log_tail(log_path)}")
            try:
                if httpx.get(url, timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"app.py did not answer on {url} within {startup_timeout:.0f} s:\n"
                                   f"{log_tail(log_path)}")
            time.sleep(0.5)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=20)


@contextlib.contextmanager
def launched_chromium():
    """Headless Debian Chromium through Playwright's sync API."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def screenshot(page, name: str, full_page: bool = True) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=full_page)
    return path


@contextlib.contextmanager
def stage(page, name: str, app_log: Path | None = None):
    """One step of a walk-through: a full-page screenshot after it, or, when it fails, one named
    FAILED-<name> and the end of the app's log attached to the error; its time goes to timings.txt."""
    started = time.monotonic()
    try:
        yield
    except BaseException as error:
        with contextlib.suppress(Exception):
            shot = screenshot(page, f"FAILED-{name}")
            error.add_note(f"screenshot: {shot}")
        if app_log is not None:
            error.add_note(f"app log ({app_log}), last lines:\n{log_tail(app_log)}")
        raise
    finally:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        with open(ARTIFACTS / "timings.txt", "a") as timings:
            timings.write(f"{name}: {time.monotonic() - started:.1f} s\n")
    screenshot(page, name)


def save_readme_screenshot(page, target: Path, max_bytes: int = 300_000) -> Path:
    """A viewport screenshot, as a palette PNG (small enough for the repository)."""
    from PIL import Image

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    raw = ARTIFACTS / "readme-screenshot-raw.png"
    page.screenshot(path=str(raw))
    image = Image.open(raw).convert("RGB").quantize(colors=128, method=Image.Quantize.MEDIANCUT)
    target.parent.mkdir(parents=True, exist_ok=True)
    image.save(target, optimize=True)
    if target.stat().st_size > max_bytes:
        image.convert("RGB").quantize(colors=48).save(target, optimize=True)
    return target


def data_dir_sharing_models(session_data_dir: Path, data_dir: Path) -> Path:
    """A fresh data dir whose models/ is the session's: the tiny models are built once per test
    run, and the offline chat model converted once (as tests/test_app.py does for a restart)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    models = session_data_dir / "models"
    if models.is_dir() and not (data_dir / "models").exists():
        (data_dir / "models").symlink_to(models, target_is_directory=True)
    return data_dir

