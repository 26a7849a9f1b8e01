"""One settings object for the whole app, read from environment variables and CLI flags.

Every model id is a setting, so a person can point PetDream at a mirror, a local folder or
another checkpoint without touching code. CLI flags override environment variables, which
override the defaults below. The README's settings table lists the same names.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

PROFILES = ("auto", "tiny", "sd15")
DEVICES = ("auto", "cpu", "cuda", "mps")
DTYPES = ("auto", "float32", "float16", "bfloat16")


def default_data_dir(space_storage: Path = Path("/data")) -> Path:
    """`/data/petdream` where `/data` exists (a Space's persistent storage), else `./petdream-data`."""
    if space_storage.is_dir() and os.access(space_storage, os.W_OK):
        return space_storage / "petdream"
    return Path("petdream-data")


def default_lock_dir() -> Path:
    """This user's folder for the training devices' locks, the same for every PetDream they run on this
    machine whatever its data dir: the app and a CLI run then take turns on a GPU instead of colliding."""
    return Path(tempfile.gettempdir()) / f"petdream-locks-{os.getuid()}"


@dataclass(frozen=True)
class Settings:
    """Everything PetDream can be configured with. Build it with `Settings.from_env()`.

    The HF token is deliberately not a field: it is read from `HF_TOKEN` or the saved
    `hf auth login` at the moment it is needed (`hf_token()`), so it never ends up in a
    repr, a log line or a file written by PetDream.
    """

    data_dir: Path = field(default_factory=default_data_dir)
    lock_dir: Path = field(default_factory=default_lock_dir)  # one training a device at a time, across processes
    profile: str = "auto"
    base_model: str = "stable-diffusion-v1-5/stable-diffusion-v1-5"
    base_model_revision: str | None = None
    base_model_id: str | None = None  # the Hub id a local base model folder is a copy of (recorded, published)
    clip_model: str = "openai/clip-vit-large-patch14"
    dino_model: str = "facebook/dino-vits16"
    llm_model: str = "HuggingFaceTB/SmolLM2-1.7B-Instruct"  # run locally with transformers
    llm_remote_model: str = "meta-llama/Llama-3.1-8B-Instruct"  # on HF Inference Providers or the server below
    llm_base_url: str | None = None  # an OpenAI-compatible server
    device: str = "auto"
    dtype: str = "auto"
    hub_endpoint: str = "https://huggingface.co"
    host: str = "127.0.0.1"
    port: int = 7860
    # Where others reach the app, a login-less browser's pets are deleted after this many days unused; 0: never.
    forget_sessions_after_days: int = 30

    # environment variable -> field; the README's settings table is written from this.
    ENV_VARS = {
        "PETDREAM_DATA_DIR": "data_dir",
        "PETDREAM_LOCK_DIR": "lock_dir",
        "PETDREAM_PROFILE": "profile",
        "PETDREAM_BASE_MODEL": "base_model",
        "PETDREAM_BASE_MODEL_REVISION": "base_model_revision",
        "PETDREAM_BASE_MODEL_ID": "base_model_id",
        "PETDREAM_CLIP_MODEL": "clip_model",
        "PETDREAM_DINO_MODEL": "dino_model",
        "PETDREAM_LLM_MODEL": "llm_model",
        "PETDREAM_LLM_REMOTE_MODEL": "llm_remote_model",
        "PETDREAM_LLM_BASE_URL": "llm_base_url",
        "PETDREAM_DEVICE": "device",
        "PETDREAM_DTYPE": "dtype",
        "HF_ENDPOINT": "hub_endpoint",
        "GRADIO_SERVER_NAME": "host",  # Gradio's own names, which Spaces set
        "GRADIO_SERVER_PORT": "port",
        "PETDREAM_FORGET_SESSIONS_AFTER_DAYS": "forget_sessions_after_days",
    }

    def __post_init__(self):
        _check_choice("profile", self.profile, PROFILES)
        _check_choice("dtype", self.dtype, DTYPES)
        device_kind = self.device.split(":")[0]
        _check_choice("device", device_kind, DEVICES)
        if not 0 <= self.forget_sessions_after_days <= 36500:
            raise ValueError("forget_sessions_after_days must be 0 (never) to 36500 (a century); "
                             f"got {self.forget_sessions_after_days}")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides) -> "Settings":
        """Defaults, then environment variables, then `overrides` (CLI flags; None means unset)."""
        env = os.environ if env is None else env
        values = {}
        for var, name in cls.ENV_VARS.items():
            if env.get(var):
                values[name] = env[var]
        values.update({k: v for k, v in overrides.items() if v is not None})
        types = {f.name: f.type for f in dataclasses.fields(cls)}
        for name in ("data_dir", "lock_dir"):
            if name in values:
                values[name] = Path(values[name]).expanduser()
        for name in [name for name in values if types.get(name) == "int"]:
            try:
                values[name] = int(values[name])
            except ValueError:
                raise ValueError(f"{name} must be a whole number, got {values[name]!r}") from None
        unknown = set(values) - set(types)
        if unknown:
            raise TypeError(f"unknown settings: {sorted(unknown)}")
        return cls(**values)

    @classmethod
    def from_args(cls, args: argparse.Namespace, env: Mapping[str, str] | None = None) -> "Settings":
        """Settings from parsed CLI flags added by `add_arguments` (flags win over env vars)."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls.from_env(env, **{k: v for k, v in vars(args).items() if k in names})

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        """The flags every subcommand shares."""
        parser.add_argument("--profile", choices=PROFILES, help="model profile (default: auto)")
        parser.add_argument("--data-dir", dest="data_dir", help="where PetDream keeps models and data")
        parser.add_argument("--device", help="auto, cpu, cuda, cuda:N or mps")
        parser.add_argument("--dtype", choices=DTYPES, help="weights dtype (default: auto)")
        parser.add_argument("--base-model", dest="base_model", help="Hub id or local folder of the base pipeline")

    def hf_token(self) -> str | None:
        """The person's HF token from `HF_TOKEN` or a saved `hf auth login`, or None."""
        from huggingface_hub import get_token

        return get_token()

    def ensure_data_dir(self) -> Path:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        return self.data_dir


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}; got {value!r}")
