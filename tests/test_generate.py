import numpy as np
import pytest
from PIL import Image
from pet_factory import make_full_pet, make_lora_pet

from petdream.generate import Generator
from petdream.models.profiles import resolve_profile
from petdream.petmodel import PetModelError
from petdream.settings import Settings

PROMPT = "a photo of bruno dog on a beach"


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.float32)


def differ(a: Image.Image, b: Image.Image) -> float:
    """Mean absolute pixel difference, 0..255."""
    return float(np.abs(pixels(a) - pixels(b)).mean())


@pytest.fixture(scope="module")
def pets(tmp_path_factory, tiny):
    root = tmp_path_factory.mktemp("pets")
    return {
        "bruno": make_lora_pet(root / "bruno", tiny, seed=1),
        "rex": make_lora_pet(root / "rex", tiny, name="Rex", trigger="rex", seed=2),
        "mia": make_full_pet(root / "mia", tiny),
    }


def test_draws_rgb_images_at_the_profile_resolution(generator):
    result = generator.generate(PROMPT, seed=0, steps=4)
    [image] = result.images
    assert image.mode == "RGB" and image.size == (128, 128)
    assert pixels(image).std() > 1  # a picture, not a blank


def test_same_seed_same_image_and_image_i_uses_seed_plus_i(generator):
    one = generator.generate(PROMPT, seed=7, steps=4).images[0]
    again = generator.generate(PROMPT, seed=7, steps=4).images[0]
    assert differ(one, again) == 0
    batch = generator.generate(PROMPT, seed=6, steps=4, num_images=3)
    assert len(batch.images) == 3 and batch.seed == 6
    assert differ(batch.images[1], one) < 1.0  # batched matmuls may differ in the last bits
    assert differ(batch.images[0], batch.images[2]) > 5


def test_no_seed_picks_a_fresh_one_each_time(generator):
    seeds = {generator.generate(PROMPT, steps=1).seed for _ in range(3)}
    assert len(seeds) == 3


@pytest.mark.parametrize("scheduler", ["dpmpp", "euler_a", "ddim"])
def test_every_scheduler_draws(generator, scheduler):
    result = generator.generate(PROMPT, seed=0, steps=6, scheduler=scheduler)
    assert result.parameters["scheduler"] == scheduler
    assert type(generator.pipeline.scheduler).__name__ == {
        "dpmpp": "DPMSolverMultistepScheduler", "euler_a": "EulerAncestralDiscreteScheduler", "ddim": "DDIMScheduler",
    }[scheduler]
    assert pixels(result.images[0]).std() > 1


def test_dpmpp_with_25_steps_is_the_default_and_samplers_give_different_pictures(generator):
    default = generator.generate(PROMPT, seed=0)
    assert (default.parameters["scheduler"], default.parameters["steps"]) == ("dpmpp", 25)
    ddim = generator.generate(PROMPT, seed=0, scheduler="ddim")
    assert differ(default.images[0], ddim.images[0]) > 0.5


def test_guidance_and_negative_prompt_change_the_picture(generator):
    plain = generator.generate(PROMPT, seed=0, steps=4).images[0]
    negative = generator.generate(PROMPT, seed=0, steps=4, negative_prompt="rain, night").images[0]
    weak = generator.generate(PROMPT, seed=0, steps=4, guidance_scale=1.0).images[0]
    assert differ(plain, negative) > 0.5 and differ(plain, weak) > 0.5


@pytest.mark.parametrize("prompt", ["", "   \n"])
def test_empty_prompt_is_an_error(generator, prompt):
    with pytest.raises(ValueError, match="The prompt is empty"):
        generator.generate(prompt)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"scheduler": "plms"}, "Unknown scheduler 'plms'; choose one of dpmpp, euler_a, ddim"),
        ({"num_images": 0}, "num_images must be between 1 and 8"),
        ({"steps": 0}, "steps must be between 1 and 200"),
        ({"size": 100}, "multiple of 8"),
    ],
)
def test_bad_arguments_are_refused_before_drawing(generator, kwargs, message):
    with pytest.raises(ValueError, match=message):
        generator.generate(PROMPT, **kwargs)


def test_long_prompt_is_truncated_with_a_warning_naming_what_was_cut(generator):
    prompt = "a photo of a dog " + "very " * 80 + "fluffy tail"
    result = generator.generate(prompt, seed=0, steps=1)
    [warning] = result.warnings
    assert "tokens long, but the text encoder reads only the first 75" in warning
    assert warning.rstrip(". Shorten the prompt to keep it").endswith('very very fluffy tail"')
    assert generator.generate("a short prompt", seed=0, steps=1).warnings == []


def test_a_pets_lora_changes_the_picture_and_switching_back_restores_the_base(generator, pets):
    base = generator.generate(PROMPT, seed=0, steps=6).images[0]
    bruno = generator.generate(PROMPT, seed=0, steps=6, pet=pets["bruno"]).images[0]
    rex = generator.generate("a photo of rex dog on a beach", seed=0, steps=6, pet=pets["rex"]).images[0]
    rex_same_prompt = generator.generate(PROMPT, seed=0, steps=6, pet=pets["rex"]).images[0]
    back = generator.generate(PROMPT, seed=0, steps=6).images[0]
    assert differ(base, bruno) > 2 and differ(bruno, rex_same_prompt) > 2 and differ(rex, rex_same_prompt) > 0.5
    assert differ(base, back) == 0
    assert differ(bruno, generator.generate(PROMPT, seed=0, steps=6, pet=pets["bruno"]).images[0]) == 0


def test_switching_pets_swaps_adapters_without_reloading_the_base(tiny, pets, monkeypatch):
    import petdream.generate as generate_module

    generator = Generator(tiny, device="cpu")
    base_loads, lora_loads = [], []
    real_load = generate_module.load_pipeline
    monkeypatch.setattr(generate_module, "load_pipeline", lambda *a, **k: base_loads.append(a) or real_load(*a, **k))
    pipeline = generator.pipeline
    real_lora = pipeline.load_lora_weights
    monkeypatch.setattr(pipeline, "load_lora_weights", lambda *a, **k: lora_loads.append(a) or real_lora(*a, **k))
    for pet in ["bruno", "rex", "bruno", None, "rex", "bruno"]:
        generator.generate(PROMPT, seed=0, steps=1, pet=pets[pet] if pet else None)
    assert len(base_loads) == 1 and generator.pipeline is pipeline
    assert len(lora_loads) == 2 and len(generator.loaded_adapters) == 2


def test_retrained_weights_are_picked_up(generator, pets, tiny, tmp_path):
    folder = tmp_path / "bruno"
    first = make_lora_pet(folder, tiny, seed=11)
    before = generator.generate(PROMPT, seed=0, steps=4, pet=first).images[0]
    second = make_lora_pet(folder, tiny, seed=12)  # same folder, new weights
    after = generator.generate(PROMPT, seed=0, steps=4, pet=second).images[0]
    assert differ(before, after) > 1


def test_fully_fine_tuned_pet_uses_its_own_pipeline(generator, pets):
    base = generator.generate("a photo of mia cat", seed=0, steps=4).images[0]
    mia = generator.generate("a photo of mia cat", seed=0, steps=4, pet=pets["mia"])
    assert differ(base, mia.images[0]) > 2
    assert mia.parameters["pet"] == "Mia" and mia.warnings == []


def test_prompt_without_the_pets_trigger_warns(generator, pets):
    result = generator.generate("a photo of a dog", seed=0, steps=1, pet=pets["rex"])
    assert result.warnings == [
        "The prompt does not mention \"rex dog\", the words Rex's model was trained on, "
        "so the picture may not show Rex."
    ]


def test_pet_trained_on_another_base_is_refused(pets, data_dir, tiny):
    sd15 = resolve_profile(Settings.from_env({}, data_dir=data_dir, profile="sd15", base_model=tiny.base_model))
    with pytest.raises(PetModelError, match="trained on petdream/tiny-sd-v1 .*Use --profile tiny"):
        Generator(sd15, device="cpu").generate(PROMPT, pet=pets["bruno"], steps=1)


def test_a_pet_that_recorded_its_local_base_folder_by_path_still_draws_on_it(data_dir, tiny, tmp_path):
    """Pet models made before local base folders were recorded by Hub id hold the folder's path."""
    import dataclasses

    sd15 = resolve_profile(Settings.from_env({}, data_dir=data_dir, profile="sd15", base_model=tiny.base_model))
    older = make_lora_pet(tmp_path / "old", dataclasses.replace(tiny, name="sd15", base_model_id=tiny.base_model))
    assert sd15.base_model_id == "local:sd" and older.base_model_id == tiny.base_model
    assert Generator(sd15, device="cpu").generate(PROMPT, pet=older, steps=1, size=128).images


def test_sd15_profile_loads_a_local_folder_through_the_same_code(data_dir, tiny, generator):
    """`sd15` and `tiny` share one from_pretrained path: point sd15 at the tiny folder."""
    sd15 = resolve_profile(Settings.from_env({}, data_dir=data_dir, profile="sd15", base_model=tiny.base_model))
    image = Generator(sd15, device="cpu").generate(PROMPT, seed=3, steps=4, size=128).images[0]
    assert differ(image, generator.generate(PROMPT, seed=3, steps=4).images[0]) == 0


def test_missing_base_model_is_a_clear_error(data_dir, tmp_path):
    profile = resolve_profile(Settings.from_env({}, data_dir=data_dir, profile="sd15", base_model=str(tmp_path)))
    with pytest.raises(RuntimeError, match="Could not load the base pipeline from the local folder"):
        Generator(profile, device="cpu").generate(PROMPT, steps=1)


def test_saved_png_carries_its_parameters(generator, tmp_path):
    result = generator.generate(PROMPT, seed=5, steps=2, num_images=2)
    paths = result.save(tmp_path / "out" / "beach.png")
    assert [p.name for p in paths] == ["beach-1.png", "beach-2.png"]
    saved = Image.open(paths[1])
    assert saved.size == (128, 128)
    assert "'seed': 6" in saved.text["parameters"] and PROMPT in saved.text["parameters"]
    with pytest.raises(ValueError, match="must be a .png file"):
        result.save(tmp_path / "beach.jpg")
