import json

import pytest
from pet_factory import make_lora_pet

from petdream.petmodel import FORMAT_VERSION, PetModel, PetModelError


@pytest.fixture
def lora_pet(tmp_path, tiny):
    return make_lora_pet(tmp_path / "bruno", tiny)


def test_a_written_pet_model_loads_back_with_its_metadata(lora_pet):
    model = PetModel.load(lora_pet.path)
    assert model.pet.name == "Bruno" and model.pet.phrase == "bruno dog"
    assert model.pet.instance_prompt == "a photo of bruno dog"
    assert model.method == "lora" and model.profile == "tiny"
    assert model.base_model_id == "petdream/tiny-sd-v1"
    meta = json.loads((lora_pet.path / "petdream.json").read_text())
    assert set(meta) == {"format_version", "pet", "base_model", "profile", "method", "training", "photos", "created_at"}
    assert meta["format_version"] == FORMAT_VERSION


def test_lora_weights_load_in_plain_diffusers(lora_pet, tiny):
    from diffusers import StableDiffusionPipeline

    pipeline = StableDiffusionPipeline.from_pretrained(tiny.base_model, safety_checker=None)
    pipeline.load_lora_weights(lora_pet.path)  # the contract: no PetDream needed
    assert pipeline.get_list_adapters()["unet"]


def _edit_meta(model, **changes):
    path = model.path / "petdream.json"
    meta = json.loads(path.read_text())
    meta.update(changes)
    path.write_text(json.dumps(meta))


def test_missing_folder(tmp_path):
    with pytest.raises(PetModelError, match="that folder does not exist"):
        PetModel.load(tmp_path / "nope")


def test_a_file_is_not_a_pet_model(tmp_path):
    (tmp_path / "x.png").write_bytes(b"png")
    with pytest.raises(PetModelError, match="is a file; a pet model is a folder"):
        PetModel.load(tmp_path / "x.png")


def test_folder_without_metadata_points_to_train(tmp_path):
    with pytest.raises(PetModelError, match="has no petdream.json.*petdream train --output"):
        PetModel.load(tmp_path)


def test_plain_diffusers_lora_folder_is_recognised(lora_pet):
    (lora_pet.path / "petdream.json").unlink()
    with pytest.raises(PetModelError, match="holds diffusers LoRA weights"):
        PetModel.load(lora_pet.path)


def test_damaged_json(lora_pet):
    (lora_pet.path / "petdream.json").write_text("{not json")
    with pytest.raises(PetModelError, match="petdream.json is not valid JSON"):
        PetModel.load(lora_pet.path)


def test_missing_field_is_named(lora_pet):
    _edit_meta(lora_pet, pet={"name": "Bruno", "class_noun": "dog"})
    with pytest.raises(PetModelError, match="'pet.trigger' must be a non-empty string"):
        PetModel.load(lora_pet.path)


def test_unknown_method(lora_pet):
    _edit_meta(lora_pet, method="dreamy")
    with pytest.raises(PetModelError, match="'method' must be one of lora, full"):
        PetModel.load(lora_pet.path)


def test_newer_format_asks_for_an_upgrade(lora_pet):
    _edit_meta(lora_pet, format_version=FORMAT_VERSION + 1)
    with pytest.raises(PetModelError, match="newer PetDream.*Upgrade"):
        PetModel.load(lora_pet.path)


def test_missing_weights(lora_pet):
    lora_pet.lora_weights.unlink()
    with pytest.raises(PetModelError, match="pytorch_lora_weights.safetensors is missing"):
        PetModel.load(lora_pet.path)


def test_damaged_weights(lora_pet):
    lora_pet.lora_weights.write_bytes(b"\x00" * 20)
    with pytest.raises(PetModelError, match="is damaged"):
        PetModel.load(lora_pet.path)


def test_full_model_without_pipeline(lora_pet):
    _edit_meta(lora_pet, method="full")
    with pytest.raises(PetModelError, match="holds no diffusers pipeline"):
        PetModel.load(lora_pet.path)
