"""Pet models for tests, made without training: random LoRA weights (or a perturbed UNet)
written in exactly the PetModel folder format."""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

from petdream.models.profiles import Profile
from petdream.petmodel import Pet, PetModel


def make_lora_pet(folder: Path, profile: Profile, *, name="Bruno", trigger="bruno", class_noun="dog", seed=1,
                  scale=0.3) -> PetModel:
    """A LoRA PetModel whose adapter visibly changes the UNet (peft zero-initialises B; we don't)."""
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    unet = UNet2DConditionModel.from_pretrained(profile.base_model, subfolder="unet")
    unet.add_adapter(LoraConfig(r=4, lora_alpha=4, target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param_name, param in unet.named_parameters():
            if "lora_" in param_name:
                param.copy_(torch.randn(param.shape, generator=generator) * scale)
    layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(unet))
    StableDiffusionPipeline.save_lora_weights(folder, unet_lora_layers=layers)
    return _write(folder, profile, "lora", Pet(name, trigger, class_noun))


def make_full_pet(folder: Path, profile: Profile, *, name="Mia", trigger="mia", class_noun="cat", seed=2) -> PetModel:
    """A fully fine-tuned PetModel: the base pipeline with its UNet weights nudged."""
    from diffusers import UNet2DConditionModel

    shutil.copytree(profile.base_model, folder / "pipeline")
    unet = UNet2DConditionModel.from_pretrained(folder / "pipeline", subfolder="unet")
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in unet.parameters():
            param.add_(torch.randn(param.shape, generator=generator) * 0.05)
    unet.save_pretrained(folder / "pipeline" / "unet")
    return _write(folder, profile, "full", Pet(name, trigger, class_noun))


def _write(folder: Path, profile: Profile, method: str, pet: Pet) -> PetModel:
    model = PetModel(
        path=Path(folder),
        pet=pet,
        base_model_id=profile.base_model_id,
        base_model_revision=profile.base_model_revision,
        profile=profile.name,
        method=method,
        training={"method": method, "steps": 0, "note": "random weights made by tests"},
        photos=[],
        created_at=PetModel.now(),
    )
    model.write_metadata()
    return PetModel.load(folder)


def add_trained_pet(store, owner: str, profile: Profile, *, name: str, class_noun="dog", seed=1):
    """A trained pet of `owner` in `store`, the newest of theirs, made without training: its model is
    `make_lora_pet`'s, in the pet's own folder (so deleting the pet deletes it)."""
    record = store.add_pet(owner, name, class_noun, name.lower())
    model = make_lora_pet(store.paths(owner, record.id).runs / "made-by-tests", profile, name=name,
                          trigger=name.lower(), class_noun=class_noun, seed=seed)
    return store.update_pet(owner, record.id, model_dir=model.path)
