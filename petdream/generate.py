"""Generator: draws pictures with the base pipeline, or with a pet's own model.

The base pipeline is loaded once. A LoRA pet model is applied by loading its weights as a
named adapter the first time and switching adapters after that, so moving between pets (or
back to the plain base model) costs milliseconds, not a reload. A fully fine-tuned pet brings
its own pipeline, which is cached alongside.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image, PngImagePlugin

from petdream.models import Profile, load_pipeline, pick_device, pick_dtype
from petdream.models.pipeline import quiet_libraries
from petdream.petmodel import LORA_WEIGHTS_FILE, PetModel, PetModelError

logger = logging.getLogger(__name__)

# name -> (diffusers scheduler class, extra config). DPM-Solver++ gives SD 1.5's best
# quality per step at ~25 steps; Euler ancestral adds variety; DDIM is the classic.
SCHEDULERS = {
    "dpmpp": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++"}),
    "euler_a": ("EulerAncestralDiscreteScheduler", {}),
    "ddim": ("DDIMScheduler", {}),
}
DEFAULT_STEPS = 25
DEFAULT_GUIDANCE = 7.5
MAX_IMAGES_PER_CALL = 8
MAX_CACHED_ADAPTERS = 8


@dataclass
class Generation:
    """The result of one call: `images[i]` was drawn with seed `seed + i`."""

    images: list[Image.Image]
    seed: int
    parameters: dict  # prompt, negative_prompt, steps, guidance_scale, scheduler, size, model, pet
    warnings: list[str] = field(default_factory=list)

    def save(self, path: str | Path) -> list[Path]:
        """Write the images as PNG with their parameters in a text chunk (so a picture always
        says how to make it again). One image goes to `path`; several to `name-1.png`, ..."""
        path = Path(path)
        if path.suffix.lower() != ".png":
            raise ValueError(f"{path}: the output must be a .png file")
        path.parent.mkdir(parents=True, exist_ok=True)
        paths = [path] if len(self.images) == 1 else [
            path.with_name(f"{path.stem}-{i + 1}{path.suffix}") for i in range(len(self.images))
        ]
        for i, (image, target) in enumerate(zip(self.images, paths)):
            info = PngImagePlugin.PngInfo()
            info.add_text("parameters", repr({**self.parameters, "seed": self.seed + i}))
            image.save(target, pnginfo=info)
        return paths


class Generator:
    """Text to image with one cached base pipeline and per-pet adapters.

    Thread-safe: calls are serialized, since one pipeline cannot run two prompts at once.
    """

    def __init__(self, profile: Profile, device: str = "auto", dtype: str = "auto"):
        self.profile = profile
        self.device = pick_device(device)
        self.dtype = pick_dtype(dtype, self.device)
        self._pipeline = None
        self._scheduler_configs: dict[int, dict] = {}  # id(pipeline) -> the scheduler config it shipped with
        self._adapters: OrderedDict[str, str] = OrderedDict()  # PetModel.key -> adapter name
        self._full_pipeline: tuple[str, object] | None = None  # (PetModel.key, pipeline)
        self._lock = threading.Lock()

    @property
    def pipeline(self):
        """The base pipeline, loaded on first use."""
        if self._pipeline is None:
            self._pipeline = self._load(self.profile.base_model, self.profile.base_model_revision)
        return self._pipeline

    def _load(self, model: str, revision: str | None = None):
        pipeline = load_pipeline(model, revision=revision, device=self.device, dtype=self.dtype)
        self._scheduler_configs[id(pipeline)] = pipeline.scheduler.config
        return pipeline

    def generate(
        self,
        prompt: str,
        *,
        pet: PetModel | None = None,
        negative_prompt: str | None = None,
        steps: int = DEFAULT_STEPS,
        guidance_scale: float = DEFAULT_GUIDANCE,
        seed: int | None = None,
        num_images: int = 1,
        scheduler: str = "dpmpp",
        size: int | None = None,
    ) -> Generation:
        """Draw `num_images` images of `size` x `size` px (default: the profile's resolution)."""
        if not prompt or not prompt.strip():
            raise ValueError("The prompt is empty: describe the picture, e.g. 'a photo of a dog on a beach'.")
        if scheduler not in SCHEDULERS:
            raise ValueError(f"Unknown scheduler {scheduler!r}; choose one of {', '.join(SCHEDULERS)}.")
        if not 1 <= num_images <= MAX_IMAGES_PER_CALL:
            raise ValueError(f"num_images must be between 1 and {MAX_IMAGES_PER_CALL}, got {num_images}.")
        if not 1 <= steps <= 200:
            raise ValueError(f"steps must be between 1 and 200, got {steps}.")
        size = size or self.profile.resolution
        if size % 8:
            raise ValueError(f"size must be a multiple of 8 px (the VAE works in 8 px cells), got {size}.")
        seed = secrets.randbelow(2**31) if seed is None else seed

        with self._lock, quiet_libraries():
            pipeline = self._pipeline_for(pet)
            warnings = [w for w in (
                _truncation_warning(pipeline.tokenizer, prompt, "prompt"),
                _truncation_warning(pipeline.tokenizer, negative_prompt or "", "negative prompt"),
                _missing_trigger_warning(prompt, pet),
            ) if w]
            for warning in warnings:
                logger.warning(warning)
            pipeline.scheduler = _make_scheduler(scheduler, self._scheduler_configs[id(pipeline)])
            # One CPU generator per image: image i is reproducible alone from seed + i, on any device.
            generators = [torch.Generator("cpu").manual_seed(seed + i) for i in range(num_images)]
            with torch.inference_mode():
                images = pipeline(
                    prompt=[prompt] * num_images,
                    negative_prompt=[negative_prompt] * num_images if negative_prompt else None,
                    num_inference_steps=steps,
                    guidance_scale=guidance_scale,
                    generator=generators,
                    height=size,
                    width=size,
                ).images
        parameters = {
            "prompt": prompt,
            "negative_prompt": negative_prompt,
            "steps": steps,
            "guidance_scale": guidance_scale,
            "scheduler": scheduler,
            "size": size,
            "model": self.profile.base_model_id if pet is None else str(pet.path),
            "pet": None if pet is None else pet.pet.name,
        }
        return Generation(images=images, seed=seed, parameters=parameters, warnings=warnings)

    @property
    def loaded_adapters(self) -> list[str]:
        """Adapter names currently held by the base pipeline, oldest first."""
        return list(self._adapters.values())

    def _pipeline_for(self, pet: PetModel | None):
        """The pipeline that draws `pet` (or the plain base model for None), ready to run."""
        if pet is not None and not self.profile.names_base(pet.base_model_id):
            raise PetModelError(
                f"{pet.pet.name}'s model was trained on {pet.base_model_id} (profile {pet.profile}), but this "
                f"generator runs {self.profile.base_model_id}. Use --profile {pet.profile}, or the same base model."
            )
        if pet is not None and pet.method == "full":
            return self._full_pipeline_for(pet)
        pipeline = self.pipeline
        if pet is None:
            if self._adapters:
                pipeline.disable_lora()
            return pipeline
        adapter = self._adapters.get(pet.key)
        if adapter is None:
            adapter = "pet_" + hashlib.sha1(pet.key.encode()).hexdigest()[:12]
            pipeline.load_lora_weights(pet.path, weight_name=LORA_WEIGHTS_FILE, adapter_name=adapter)
            self._adapters[pet.key] = adapter
            if len(self._adapters) > MAX_CACHED_ADAPTERS:
                _, oldest = self._adapters.popitem(last=False)
                pipeline.delete_adapters(oldest)
        self._adapters.move_to_end(pet.key)
        pipeline.enable_lora()
        pipeline.set_adapters([adapter])
        return pipeline

    def _full_pipeline_for(self, pet: PetModel):
        if self._full_pipeline is None or self._full_pipeline[0] != pet.key:
            if self._full_pipeline is not None:  # free the previous one before loading the next
                self._scheduler_configs.pop(id(self._full_pipeline[1]))
                self._full_pipeline = None
            self._full_pipeline = (pet.key, self._load(str(pet.pipeline_dir)))
        return self._full_pipeline[1]


def _make_scheduler(name: str, config):
    import diffusers

    class_name, extra = SCHEDULERS[name]
    return getattr(diffusers, class_name).from_config(config, **extra)


def _truncation_warning(tokenizer, text: str, label: str) -> str | None:
    """Say which words CLIP will not see: it reads 77 tokens, two of them start/end markers."""
    ids = tokenizer(text, add_special_tokens=False, truncation=False).input_ids
    limit = tokenizer.model_max_length - 2
    if len(ids) <= limit:
        return None
    dropped = tokenizer.decode(ids[limit:]).strip()
    return (
        f"The {label} is {len(ids)} tokens long, but the text encoder reads only the first {limit}; "
        f"this end was cut: \"{dropped}\". Shorten the {label} to keep it."
    )


def _missing_trigger_warning(prompt: str, pet: PetModel | None) -> str | None:
    if pet is None or pet.pet.trigger.lower() in prompt.lower():
        return None
    return (
        f"The prompt does not mention \"{pet.pet.phrase}\", the words {pet.pet.name}'s model was "
        f"trained on, so the picture may not show {pet.pet.name}."
    )
