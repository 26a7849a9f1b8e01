"""TrainingConfig: every hyperparameter of a DreamBooth run, and the named presets.

A preset is a starting point; every field can be overridden (`TrainingConfig.preset(name, **overrides)`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass

METHODS = ("lora", "full")
MIXED_PRECISION = ("auto", "no", "fp16", "bf16")
OPTIMIZERS = ("auto", "adamw", "adamw8bit")
# diffusers.optimization's schedules that need no extra arguments
LR_SCHEDULERS = ("constant", "constant_with_warmup", "linear", "cosine", "cosine_with_restarts", "polynomial")


def _check(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}; got {value!r}")


@dataclass(frozen=True)
class TrainingConfig:
    method: str = "lora"  # "lora": a small adapter on the UNet; "full": every UNet weight
    steps: int = 400  # optimizer steps
    learning_rate: float = 1e-4
    batch_size: int = 1  # images per forward pass (instance; the same again for prior images)
    gradient_accumulation: int = 1  # micro-batches per optimizer step (on a GPU, one pass while memory allows)
    resolution: int | None = None  # px; None: the profile's (512 for SD 1.5, 128 for tiny)
    lr_scheduler: str = "constant"  # one of LR_SCHEDULERS
    lr_warmup_steps: int = 0
    max_grad_norm: float = 1.0
    seed: int = 0

    # LoRA
    rank: int = 16
    lora_alpha: int | None = None  # None: equal to rank (scale 1.0)
    lora_target_modules: tuple[str, ...] = ("to_q", "to_k", "to_v", "to_out.0")
    train_text_encoder: bool = False  # LoRA on CLIP's attention too (method lora), or all of it (full)

    # Prior preservation: class images from the base model keep "dog" meaning any dog.
    prior_preservation: bool = True
    prior_loss_weight: float = 1.0
    num_class_images: int = 50
    class_image_steps: int = 25  # sampling steps when generating class images

    # Loss shaping
    snr_gamma: float | None = None  # Min-SNR weighting (Hang et al. 2023); 5.0 is the paper's value
    offset_noise: float = 0.0  # adds per-channel noise offset, lets the model learn very dark/bright images
    random_flip: bool = True

    # Speed and memory
    mixed_precision: str = "auto"  # "auto": fp16 on CUDA, none on the CPU
    gradient_checkpointing: bool = False
    optimizer: str = "auto"  # "auto": 8-bit AdamW for full fine-tuning on CUDA, fused AdamW otherwise
    compile: bool = False  # torch.compile the UNet

    # What happens during the run
    sample_every: int = 0  # steps between sample images; 0: only at the end
    sample_steps: int = 25
    checkpoint_every: int = 100
    checkpoints_kept: int = 2

    def __post_init__(self):
        _check("method", self.method, METHODS)
        _check("mixed_precision", self.mixed_precision, MIXED_PRECISION)
        _check("optimizer", self.optimizer, OPTIMIZERS)
        _check("lr_scheduler", self.lr_scheduler, LR_SCHEDULERS)
        for name in ("steps", "batch_size", "gradient_accumulation", "rank", "checkpoints_kept", "checkpoint_every",
                     "sample_steps", "class_image_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.sample_every < 0:
            raise ValueError(f"sample_every must be 0 (samples only at the end) or more, got {self.sample_every}")
        if self.prior_preservation and self.num_class_images < 1:
            raise ValueError(f"num_class_images must be at least 1 with prior preservation, got {self.num_class_images}")
        for name in ("learning_rate", "max_grad_norm"):  # a norm of 0 zeroes every gradient, below 0 flips them
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        for name in ("lr_warmup_steps", "prior_loss_weight", "offset_noise"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be 0 or more, got {getattr(self, name)}")
        for name in ("lora_alpha", "snr_gamma"):  # None: unset (alpha = rank; no Min-SNR)
            if getattr(self, name) is not None and getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive (or left out), got {getattr(self, name)}")
        if self.resolution is not None and (self.resolution < 64 or self.resolution % 8):
            raise ValueError(f"resolution must be a multiple of 8 px, at least 64; got {self.resolution}")

    @classmethod
    def preset(cls, name: str, **overrides) -> "TrainingConfig":
        """A preset with some fields overridden; None values in `overrides` are ignored."""
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
        return dataclasses.replace(PRESETS[name], **{k: v for k, v in overrides.items() if v is not None})

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "TrainingConfig":
        """A config from `to_dict()`'s output as stored in JSON (petdream.json's training section, the
        store); keys that are not hyperparameters (steps_done, seconds, ...) are ignored."""
        names = {f.name for f in dataclasses.fields(cls)}
        known = {k: v for k, v in values.items() if k in names}
        if "lora_target_modules" in known:
            known["lora_target_modules"] = tuple(known["lora_target_modules"])
        return cls(**known)

    def lora_shape(self) -> dict:
        """What this run's LoRA tensors are and where they sit; see `lora_shape`."""
        return lora_shape(self.to_dict())

    def weight_settings(self) -> dict:
        """The fields the trained weights depend on (not how often samples and checkpoints are made)."""
        ignored = {"sample_every", "sample_steps", "checkpoint_every", "checkpoints_kept", "compile"}
        return {k: v for k, v in self.to_dict().items() if k not in ignored}

    def fingerprint(self) -> str:
        """Identifies what the weights depend on; a checkpoint resumes only under the same one."""
        return hashlib.sha256(json.dumps(self.weight_settings(), sort_keys=True).encode()).hexdigest()[:16]


def lora_shape(settings: dict) -> dict | None:
    """The rank, alpha, target modules and text-encoder part of a LoRA, from a `TrainingConfig.to_dict()`
    or a PetModel's recorded `training`; None when the rank or targets were not recorded. A run that
    trains a LoRA further must have the same: its tensors are the old ones, continued."""
    if settings.get("rank") is None or not settings.get("lora_target_modules"):
        return None
    return {"rank": settings["rank"], "lora_alpha": settings.get("lora_alpha") or settings["rank"],
            "lora_target_modules": sorted(settings["lora_target_modules"]),
            "train_text_encoder": bool(settings.get("train_text_encoder"))}


PRESETS = {
    # The paper's recipe, exactly: full fine-tune, lr 5e-6, 300 steps, batch 2 x accumulation 2,
    # fp16, gradient checkpointing, 8-bit AdamW. It does not use prior preservation, nor flip photos
    # (diffusers' DreamBooth script, which it ran, does not; a flip mirrors a pet's markings).
    "paper": TrainingConfig(
        method="full", steps=300, learning_rate=5e-6, batch_size=2, gradient_accumulation=2,
        mixed_precision="fp16", gradient_checkpointing=True, optimizer="adamw8bit",
        prior_preservation=False, random_flip=False, checkpoint_every=100, sample_every=100,
    ),
    # A good likeness fast: rank-16 LoRA at lr 1e-4 (the diffusers DreamBooth-LoRA default lr)
    # for 400 steps, Min-SNR weighting (faster convergence for the same steps), and prior
    # preservation with 50 class images so "dog" stays any dog.
    "quick": TrainingConfig(
        method="lora", steps=400, learning_rate=1e-4, rank=16, snr_gamma=5.0,
        prior_preservation=True, num_class_images=50, checkpoint_every=100, sample_every=100,
    ),
    # For CPU tests on the tiny profile: every code path, in seconds. The high learning rate
    # makes 50 steps change what the random-weight model draws.
    "tiny": TrainingConfig(
        method="lora", steps=50, learning_rate=1e-3, rank=4, prior_preservation=True,
        num_class_images=4, class_image_steps=10, sample_steps=10, checkpoint_every=25,
    ),
}
