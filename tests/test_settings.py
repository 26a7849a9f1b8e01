import argparse
import os
import tempfile
from pathlib import Path

import pytest

from petdream.settings import Settings, default_data_dir


def test_defaults_without_environment():
    settings = Settings.from_env({})
    assert settings.profile == "auto"
    assert settings.base_model == "stable-diffusion-v1-5/stable-diffusion-v1-5"
    assert settings.clip_model == "openai/clip-vit-large-patch14"
    assert settings.dino_model == "facebook/dino-vits16"
    assert (settings.device, settings.dtype, settings.port) == ("auto", "auto", 7860)
    # The device locks: one folder for every PetDream of this user on the machine, whatever its data dir.
    assert settings.lock_dir == Path(tempfile.gettempdir()) / f"petdream-locks-{os.getuid()}"
    assert Settings.from_env({"PETDREAM_LOCK_DIR": "~/locks"}).lock_dir == Path.home() / "locks"


def test_environment_sets_every_field_and_flags_win():
    env = {var: "x" for var in Settings.ENV_VARS}
    env.update(PETDREAM_PROFILE="tiny", PETDREAM_DEVICE="cpu", PETDREAM_DTYPE="float32",
               GRADIO_SERVER_PORT="8000", PETDREAM_DATA_DIR="/tmp/pets", PETDREAM_FORGET_SESSIONS_AFTER_DAYS="7")
    settings = Settings.from_env(env)
    assert settings.base_model == settings.clip_model == settings.llm_model == "x"
    assert settings.port == 8000 and settings.data_dir == Path("/tmp/pets") and settings.forget_sessions_after_days == 7

    parser = argparse.ArgumentParser()
    Settings.add_arguments(parser)
    args = parser.parse_args(["--profile", "sd15", "--base-model", "./my-sd", "--data-dir", "/srv/pd"])
    settings = Settings.from_args(args, env)
    assert settings.profile == "sd15"
    assert settings.base_model == "./my-sd"
    assert settings.data_dir == Path("/srv/pd")
    assert settings.dtype == "float32"  # not given as a flag: the environment's value stays


@pytest.mark.parametrize(
    "env, message",
    [
        ({"PETDREAM_PROFILE": "huge"}, "profile must be one of auto, tiny, sd15; got 'huge'"),
        ({"PETDREAM_DEVICE": "tpu"}, "device must be one of auto, cpu, cuda, mps; got 'tpu'"),
        ({"PETDREAM_DTYPE": "int8"}, "dtype must be one of"),
        ({"GRADIO_SERVER_PORT": "eighty"}, "port must be a whole number, got 'eighty'"),
        ({"PETDREAM_FORGET_SESSIONS_AFTER_DAYS": "a month"}, "forget_sessions_after_days must be a whole number"),
        ({"PETDREAM_FORGET_SESSIONS_AFTER_DAYS": "-1"}, r"forget_sessions_after_days must be 0 \(never\) to 36500"),
        ({"PETDREAM_FORGET_SESSIONS_AFTER_DAYS": "800000"}, "got 800000"),
    ],
)
def test_bad_values_say_what_is_allowed(env, message):
    with pytest.raises(ValueError, match=message):
        Settings.from_env(env)


def test_cuda_device_with_index_is_accepted():
    assert Settings.from_env({"PETDREAM_DEVICE": "cuda:1"}).device == "cuda:1"


def test_data_dir_is_persistent_storage_on_a_space(tmp_path):
    assert default_data_dir(tmp_path) == tmp_path / "petdream"
    assert default_data_dir(tmp_path / "absent") == Path("petdream-data")


def test_token_is_read_when_needed_and_never_kept(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_secretvalue123")
    settings = Settings.from_env()
    assert settings.hf_token() == "hf_secretvalue123"
    assert "hf_secretvalue123" not in repr(settings)
    assert "hf_secretvalue123" not in str(vars(settings))
