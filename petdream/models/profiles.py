"""Profiles: which set of models PetDream runs on.

- `sd15`: Stable Diffusion 1.5 and the real CLIP/DINO models from the Hub (or local folders).
- `tiny`: random-weight models of the same architectures, built offline (see `tiny.py`).
- `auto`: `sd15` where a CUDA GPU is present and the base model can be had (the Hub answers,
  or the base model is a local folder); otherwise `tiny`. It says which it picked and why.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from petdream.settings import Settings

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Profile:
    """The models one run uses. Model fields are Hub ids or local folders."""

    name: str  # "sd15" or "tiny"
    base_model: str  # what to load: a Hub id or a local folder
    base_model_id: str  # what a PetModel records as its base: portable, never a local path
    base_model_revision: str | None
    clip_model: str
    dino_model: str
    resolution: int  # px, square: what the base model was trained at
    random_weights: bool  # True for `tiny`: its images and scores mean nothing
    reason: str  # why this profile was chosen, for the log and the UI

    def names_base(self, model_id: str) -> bool:
        """Whether a pet model recorded as trained on `model_id` was trained on this profile's base model.
        Pet models made before a local base folder was recorded by its Hub id (see `portable_base_model`)
        hold the folder as it was configured: that still counts, so those pets keep drawing."""
        return model_id in (self.base_model_id, self.base_model)


TINY_WARNING = (
    "PetDream is running on the tiny offline profile: small models with random weights. "
    "Everything works end to end, but the images are noise and the scores mean nothing. "
    "Run on a GPU with Hub access (profile sd15) for real pictures of your pet."
)


def resolve_profile(settings: Settings, build_models: bool = True) -> Profile:
    """Turn `settings.profile` into a concrete Profile, building the tiny models if needed.

    build_models=False leaves the tiny models for later (`ensure_models`): the app shows its page
    first and builds them on first use."""
    name, reason = settings.profile, "chosen with --profile or PETDREAM_PROFILE"
    if name == "auto":
        name, reason = _pick_automatically(settings)
    logger.info("profile %s: %s", name, reason)
    if name == "tiny":
        return tiny_profile(settings.data_dir, reason, build=build_models)
    base_model_id, revision = portable_base_model(settings)
    return Profile(
        name="sd15",
        base_model=settings.base_model,
        base_model_id=base_model_id,
        base_model_revision=revision,
        clip_model=settings.clip_model,
        dino_model=settings.dino_model,
        resolution=512,
        random_weights=False,
        reason=reason,
    )


LOCAL_PREFIX = "local:"  # a base model known only as a folder: no Hub id has a colon


def portable_base_model(settings: Settings) -> tuple[str, str | None]:
    """(id, revision) a pet model records for the sd15 base: a Hub id, never a path of this machine (a pet
    model moves, and its Hub card names its base). A local folder is the Hub id declared for it
    (PETDREAM_BASE_MODEL_ID); else, in the Hub's cache (.../models--{owner}--{name}/snapshots/{commit}),
    the id and commit it was downloaded as; else `local:<folder name>`."""
    folder = Path(settings.base_model)
    if not folder.is_dir():
        return settings.base_model, settings.base_model_revision
    if settings.base_model_id:
        return settings.base_model_id, settings.base_model_revision
    if _is_hub_snapshot(folder):
        repo = folder.resolve().parent.parent
        return repo.name.removeprefix("models--").replace("--", "/"), settings.base_model_revision or folder.name
    return f"{LOCAL_PREFIX}{folder.resolve().name}", settings.base_model_revision


def base_model_commit(profile: Profile) -> str | None:
    """The Hub commit of the base model `profile` loads, read from this machine's Hub cache (no network):
    a Hub id's at its revision (main by default), or a folder's that is a snapshot in the cache. None for
    a folder of its own, the tiny models (built here), or a model not downloaded yet. A revision like
    "main" moves on; the commit names the weights a pet was trained on."""
    from huggingface_hub import try_to_load_from_cache

    folder = Path(profile.base_model)
    if folder.is_dir():
        return folder.resolve().name if _is_hub_snapshot(folder) else None
    cached = try_to_load_from_cache(profile.base_model, "model_index.json", revision=profile.base_model_revision)
    return Path(cached).parent.name if isinstance(cached, str) else None


def _is_hub_snapshot(folder: Path) -> bool:
    """Whether `folder` is .../models--{owner}--{name}/snapshots/{commit} in the Hub's cache."""
    snapshots = folder.resolve().parent
    return snapshots.name == "snapshots" and snapshots.parent.name.startswith("models--")


def tiny_profile(data_dir: Path, reason: str = "chosen with --profile or PETDREAM_PROFILE", build: bool = True) -> Profile:
    from petdream.models.tiny import RESOLUTION, TINY_VERSION, ensure_tiny_models, tiny_models_dir

    folder = ensure_tiny_models(data_dir) if build else tiny_models_dir(data_dir)
    return Profile(
        name="tiny",
        base_model=str(folder / "sd"),
        base_model_id=f"petdream/tiny-sd-v{TINY_VERSION}",
        base_model_revision=None,
        clip_model=str(folder / "clip"),
        dino_model=str(folder / "dino"),
        resolution=RESOLUTION,
        random_weights=True,
        reason=reason,
    )


def _pick_automatically(settings: Settings) -> tuple[str, str]:
    if not torch.cuda.is_available():
        return "tiny", "no CUDA GPU on this machine, and Stable Diffusion is impractically slow without one"
    if Path(settings.base_model).is_dir():
        return "sd15", f"a CUDA GPU is present and the base model is the local folder {settings.base_model}"
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        return "tiny", "HF_HUB_OFFLINE is set, so the base model cannot be downloaded"
    problem = _hub_problem(settings)
    if problem:
        return "tiny", f"the Hub did not answer at {settings.hub_endpoint} ({problem})"
    return "sd15", f"a CUDA GPU is present and {settings.base_model} is reachable on the Hub"


def _hub_problem(settings: Settings) -> str | None:
    """None if the base model's info can be fetched from the Hub within a few seconds."""
    from huggingface_hub import HfApi

    try:
        HfApi(endpoint=settings.hub_endpoint).model_info(
            settings.base_model, revision=settings.base_model_revision, timeout=5
        )
    except Exception as error:  # any failure means "not usable now"; the reason is logged
        return f"{type(error).__name__}: {error}".splitlines()[0][:200]
    return None


def ensure_models(profile: Profile, data_dir: Path) -> None:
    """Build what a profile resolved with build_models=False still lacks (the tiny models)."""
    if profile.name == "tiny":
        from petdream.models.tiny import ensure_tiny_models

        ensure_tiny_models(data_dir)
