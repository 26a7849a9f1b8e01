"""Shared fixtures. Everything runs offline on the tiny profile."""

import atexit
import os
import shutil
import tempfile

# Two torch threads fighting over two busy cores can make a step 40x slower (DESIGN.md).
os.environ["OMP_NUM_THREADS"] = "1"
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
# A temp folder of each test process's own (its children's too): the trainings' device locks live under it
# (Settings.lock_dir), so tests wait neither for a PetDream training elsewhere on this machine nor for the
# other test process's.
os.environ["TMPDIR"] = tempfile.tempdir = tempfile.mkdtemp(prefix="petdream-tests-")
atexit.register(shutil.rmtree, tempfile.tempdir, ignore_errors=True)

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)

REPO = Path(__file__).resolve().parent.parent
DREAMBENCH = REPO.parent / "shared" / "data" / "dreambench"


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: takes more than a few seconds")
    config.addinivalue_line("markers", "browser: drives the served app in headless Chromium (tests/test_browser.py)")
    # Raised inside torch by libraries we import; nothing PetDream can act on.
    config.addinivalue_line("filterwarnings", "ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")
    config.addinivalue_line("filterwarnings", "ignore:__array__ implementation doesn't accept a copy:DeprecationWarning")
    config.addinivalue_line("filterwarnings", "ignore::Warning:gradio.queueing")


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> Path:
    """One PetDream data dir for the whole run, so the tiny models are built once."""
    return tmp_path_factory.mktemp("petdream-data")


@pytest.fixture(scope="session")
def tiny(data_dir):
    """The tiny profile, its models built in the session's data dir."""
    from petdream.models.profiles import tiny_profile

    return tiny_profile(data_dir)


@pytest.fixture(scope="session")
def generator(tiny):
    from petdream.generate import Generator

    return Generator(tiny, device="cpu")


@pytest.fixture
def dreambench():
    """The real DreamBench pet photos beside the checkout, or a skip saying why not."""
    if not DREAMBENCH.is_dir():
        pytest.skip(f"real pet photos not found at {DREAMBENCH} (../shared/data/dreambench beside the checkout)")
    return DREAMBENCH
