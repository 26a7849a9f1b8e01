"""The PetModel folder: what training writes and generation, evaluation and the Hub read.

It is a contract (DESIGN.md), relied on by scripts outside PetDream:

    <dir>/
      petdream.json                      metadata, see `PetModel.to_dict()`
      pytorch_lora_weights.safetensors   method "lora": plain diffusers `load_lora_weights(dir)`
      pipeline/                          method "full": a diffusers pipeline folder
      samples/  loss.png                 optional
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

FORMAT_VERSION = 1
METADATA_FILE = "petdream.json"
LORA_WEIGHTS_FILE = "pytorch_lora_weights.safetensors"
PIPELINE_DIR = "pipeline"
METHODS = ("lora", "full")


class PetModelError(ValueError):
    """A folder that is not a usable PetModel; the message says what is wrong and what to do."""


@dataclass(frozen=True)
class Pet:
    name: str  # what the person calls the pet, e.g. "Bruno"
    trigger: str  # the token(s) the model learned for this pet, e.g. "bruno" or "sks"
    class_noun: str  # e.g. "dog"

    @property
    def phrase(self) -> str:
        """How prompts refer to this pet: "sks dog"."""
        return f"{self.trigger} {self.class_noun}"

    @property
    def instance_prompt(self) -> str:
        return f"a photo of {self.phrase}"


@dataclass(frozen=True)
class PetModel:
    path: Path
    pet: Pet
    base_model_id: str
    base_model_revision: str | None
    profile: str
    method: str
    training: dict = field(default_factory=dict)
    photos: list = field(default_factory=list)  # [{"sha256", "width", "height"}]
    created_at: str = ""
    format_version: int = FORMAT_VERSION
    base_model_commit: str | None = None  # the Hub commit the base was at, where known (revision may be "main")

    @property
    def lora_weights(self) -> Path:
        return self.path / LORA_WEIGHTS_FILE

    @property
    def pipeline_dir(self) -> Path:
        return self.path / PIPELINE_DIR

    @property
    def key(self) -> str:
        """Identifies these exact weights: the folder and when its weights were last written."""
        weights = self.lora_weights if self.method == "lora" else self.pipeline_dir / "model_index.json"
        return f"{self.path.resolve()}@{weights.stat().st_mtime_ns}"

    def weights_sha256(self) -> str:
        """A content hash of the weights: for LoRA the sha256 of its weights file (what `sha256sum`
        prints); for a full model the sha256 of its UNet's and text encoder's files, one
        "sha256  path" line each. Lineage records it, and a run training further is tied to it."""
        if self.method == "lora":
            return _file_sha256(self.lora_weights)
        files = sorted(p for part in ("unet", "text_encoder") for p in (self.pipeline_dir / part).rglob("*")
                       if p.is_file())
        lines = "".join(f"{_file_sha256(p)}  {p.relative_to(self.pipeline_dir).as_posix()}\n" for p in files)
        return hashlib.sha256(lines.encode()).hexdigest()

    def to_dict(self) -> dict:
        return {
            "format_version": self.format_version,
            "pet": {"name": self.pet.name, "trigger": self.pet.trigger, "class_noun": self.pet.class_noun},
            "base_model": {"id": self.base_model_id, "revision": self.base_model_revision,
                           "commit": self.base_model_commit},
            "profile": self.profile,
            "method": self.method,
            "training": self.training,
            "photos": self.photos,
            "created_at": self.created_at,
        }

    def write_metadata(self) -> Path:
        """Write petdream.json atomically (a crash never leaves half a file)."""
        self.path.mkdir(parents=True, exist_ok=True)
        target = self.path / METADATA_FILE
        fd, staging = tempfile.mkstemp(prefix=".petdream-", suffix=".json", dir=self.path)
        with os.fdopen(fd, "w") as f:
            json.dump(self.to_dict(), f, indent=2)
            f.flush()
            os.fsync(f.fileno())  # on disk before its name says the folder is complete
        os.replace(staging, target)
        return target

    @staticmethod
    def now() -> str:
        return datetime.now(timezone.utc).isoformat(timespec="seconds")

    @classmethod
    def load(cls, path: str | os.PathLike) -> "PetModel":
        """Read and validate a PetModel folder; raise PetModelError saying what is wrong."""
        path = Path(path)
        if not path.exists():
            raise PetModelError(f"No pet model at {path}: that folder does not exist.")
        if not path.is_dir():
            raise PetModelError(f"{path} is a file; a pet model is a folder holding {METADATA_FILE}.")
        meta_path = path / METADATA_FILE
        if not meta_path.is_file():
            hint = (
                " It holds diffusers LoRA weights, but PetDream needs to know the pet's name, "
                "trigger word and class: add a petdream.json or pull it from the Hub with PetDream."
                if (path / LORA_WEIGHTS_FILE).is_file()
                else " Point to the folder that `python -m petdream train --output` wrote."
            )
            raise PetModelError(f"{path} is not a PetDream pet model: it has no {METADATA_FILE}.{hint}")
        try:
            meta = json.loads(meta_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise PetModelError(f"{meta_path} is not valid JSON ({error}); the file is damaged.") from None
        model = cls._from_dict(path, meta)
        model._check_weights()
        return model

    @classmethod
    def _from_dict(cls, path: Path, meta) -> "PetModel":
        meta_path = path / METADATA_FILE

        def need(container, key, kind, where):
            value = container.get(key) if isinstance(container, dict) else None
            if not isinstance(value, kind) or (kind is str and not value.strip()):
                expected = {str: "a non-empty string", int: "a whole number", dict: "an object"}[kind]
                raise PetModelError(f"{meta_path}: '{where}' must be {expected}, found {value!r}.")
            return value

        version = need(meta, "format_version", int, "format_version")
        if version > FORMAT_VERSION:
            raise PetModelError(
                f"{path} was written by a newer PetDream (format {version}); this one reads format "
                f"{FORMAT_VERSION}. Upgrade PetDream to use it."
            )
        pet = need(meta, "pet", dict, "pet")
        base = need(meta, "base_model", dict, "base_model")
        method = need(meta, "method", str, "method")
        if method not in METHODS:
            raise PetModelError(f"{meta_path}: 'method' must be one of {', '.join(METHODS)}, found {method!r}.")
        return cls(
            path=path,
            pet=Pet(
                name=need(pet, "name", str, "pet.name"),
                trigger=need(pet, "trigger", str, "pet.trigger"),
                class_noun=need(pet, "class_noun", str, "pet.class_noun"),
            ),
            base_model_id=need(base, "id", str, "base_model.id"),
            base_model_revision=base.get("revision"),
            base_model_commit=base.get("commit"),
            profile=need(meta, "profile", str, "profile"),
            method=method,
            training=meta.get("training") or {},
            photos=meta.get("photos") or [],
            created_at=meta.get("created_at") or "",
            format_version=version,
        )

    def _check_weights(self) -> None:
        if self.method == "full":
            if not (self.pipeline_dir / "model_index.json").is_file():
                raise PetModelError(
                    f"{self.path} is a fully fine-tuned pet model, but {self.pipeline_dir} holds no "
                    "diffusers pipeline (model_index.json is missing). Train it again or copy the whole folder."
                )
            return
        if not self.lora_weights.is_file():
            raise PetModelError(
                f"{self.path} is a LoRA pet model, but {LORA_WEIGHTS_FILE} is missing. "
                "Train it again or copy the whole folder."
            )
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(self.lora_weights, framework="pt") as weights:
                if not list(weights.keys()):
                    raise PetModelError(f"{self.lora_weights} holds no tensors; train the pet again.")
        except SafetensorError as error:
            raise PetModelError(
                f"{self.lora_weights} is damaged ({error}); train the pet again or copy the file anew."
            ) from None


def _file_sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()
