"""Evaluation: each metric's sanity, the prompt set, the protocol end to end, the report, the CLI."""

import json

import numpy as np
import pytest
import torch
from pet_factory import make_lora_pet
from photo_factory import make_photo
from PIL import Image
from test_cli import petdream

from petdream.evaluation import (DEFAULT_PROMPTS_FILE, EvaluationConfig, Evaluator, Failed, Finished, MetricModels,
                                 Note, Progress, load_prompts, render_prompt)
from petdream.evaluation.metrics import InceptionFeatures, mean_pairwise_cosine, ssim, ssim_pixels, to_uint8
from petdream.petmodel import Pet

SCORE_KEYS = {"clip_score", "clip_t", "clip_i", "dino", "ssim"}


@pytest.fixture(scope="module")
def metrics(tiny):
    return MetricModels(tiny.clip_model, tiny.dino_model)


@pytest.fixture(scope="module")
def photos():
    """Three different photo-like squares, standing in for a pet's photos."""
    return [make_photo(seed, (128, 128)) for seed in range(3)]


# -- the metrics ----------------------------------------------------------------------------


def test_ssim_of_an_image_with_itself_is_one_and_ssim_is_symmetric(photos):
    pixels = ssim_pixels(photos, 64)
    table = ssim(pixels, pixels)
    assert table.shape == (3, 3)
    assert torch.allclose(table.diagonal(), torch.ones(3), atol=1e-4)
    assert torch.allclose(table, table.T, atol=1e-5)
    assert (table.fill_diagonal_(0) < 0.9).all()  # different photos are not alike


def test_clip_i_and_dino_of_an_image_with_itself_are_one_and_symmetric(metrics, photos):
    for embed in (metrics.clip_image_embeddings, metrics.dino_embeddings):
        a, b = embed(photos[:1]), embed(photos[1:])
        assert mean_pairwise_cosine(a, a) == pytest.approx(1.0, abs=1e-5)
        assert mean_pairwise_cosine(a, b) == pytest.approx(mean_pairwise_cosine(b, a), abs=1e-6)
        assert mean_pairwise_cosine(a, b) < 1 - 1e-4


def test_clip_score_is_100_times_the_clamped_cosine_computed_by_hand(tiny, metrics, photos):
    from transformers import CLIPModel, CLIPProcessor

    model, processor = CLIPModel.from_pretrained(tiny.clip_model), CLIPProcessor.from_pretrained(tiny.clip_model)
    image = photos[0]
    captions = ["a dog", "an orange", "a cube shaped dog", "a cat on the beach"]
    with torch.no_grad():
        image_embedding = model.get_image_features(**processor(images=[image], return_tensors="pt")).pooler_output
        tokens = processor(text=captions, return_tensors="pt", padding=True)
        text_embeddings = model.get_text_features(**tokens).pooler_output
    by_hand = torch.nn.functional.cosine_similarity(image_embedding, text_embeddings).tolist()
    assert min(by_hand) < 0 < max(by_hand)  # random weights: both sides of the clamp are exercised

    clip_score = metrics.clip_score_metric()
    pixels = list(to_uint8([image]))
    for caption, cosine in zip(captions, by_hand):
        assert clip_score(pixels, [caption]).item() == pytest.approx(100 * max(cosine, 0), abs=1e-3)
        clip_t = mean_pairwise_cosine(metrics.clip_image_embeddings([image]), metrics.clip_text_embeddings([caption]))
        assert clip_t == pytest.approx(cosine, abs=1e-5)  # CLIP-T is the raw cosine


def test_fid_is_near_zero_for_a_set_against_itself_and_large_against_a_different_set(metrics, photos):
    from torchmetrics.image.fid import FrechetInceptionDistance

    real = to_uint8(photos)
    flat = torch.stack([torch.full((3, 128, 128), value, dtype=torch.uint8) for value in (0, 120, 240)])
    fid = FrechetInceptionDistance(feature=metrics.inception, reset_real_features=False)
    fid.update(real, real=True)
    fid.update(real, real=False)
    assert abs(fid.compute().item()) < 1.0
    fid.reset()  # keeps the real set
    fid.update(flat, real=False)
    assert fid.compute().item() > 100


def test_inception_takes_uint8_images_of_any_size_and_returns_2048_features():
    features = InceptionFeatures()(torch.randint(0, 256, (2, 3, 128, 96), dtype=torch.uint8))
    assert features.shape == (2, 2048) and features.dtype == torch.float32


# -- prompts --------------------------------------------------------------------------------


def test_default_prompts_are_the_papers_two_then_dreambenchs_25_live_subject_prompts():
    templates = load_prompts()
    assert len(templates) == 27
    assert templates[:2] == ["a {0} {1} at the beach", "a {0} {1} in a superhero costume"]
    assert templates[2] == "a {0} {1} in the jungle" and templates[-1] == "a cube shaped {0} {1}"
    header = DEFAULT_PROMPTS_FILE.read_text()
    assert "Ruiz" in header and "CVPR 2023" in header and "google/dreambooth" in header


def test_a_prompt_names_the_pet_and_its_caption_leaves_the_trigger_out():
    prompt = render_prompt("a {0} {1} wearing a red hat", Pet("Bruno", "ohwx", "dog"))
    assert prompt.text == "a ohwx dog wearing a red hat"
    assert prompt.caption == "a dog wearing a red hat"
    assert render_prompt("a photo of ohwx dog on the moon", Pet("Bruno", "ohwx", "dog")).caption == \
        "a photo of dog on the moon"


@pytest.mark.parametrize("text, message", [
    ("a {0} {1}\na {2} in the snow\n", r"line 2: \{2\} is not a placeholder"),
    ("# only a comment\n\n", "holds no prompts"),
])
def test_a_bad_prompt_file_says_what_is_wrong(tmp_path, text, message):
    path = tmp_path / "prompts.txt"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        load_prompts(path)


def test_bad_settings_are_refused_before_anything_runs():
    with pytest.raises(ValueError, match="images_per_prompt must be at least 1"):
        EvaluationConfig(images_per_prompt=0)


# -- the protocol, end to end ---------------------------------------------------------------


@pytest.fixture(scope="module")
def run(tiny, generator, photos, tmp_path_factory):
    """One evaluation of a LoRA pet on two prompts, 2 images each, with the baseline: its events and report.

    One photo keeps it fast: FID needs two, and is left out (the CLI test computes one)."""
    pet = make_lora_pet(tmp_path_factory.mktemp("pets") / "bruno", tiny)
    config = EvaluationConfig(prompts=("a {0} {1} at the beach", "a {0} {1} in the snow"), images_per_prompt=2,
                              steps=2)
    events = list(Evaluator(tiny, generator=generator).run(pet, photos[:1], config))
    return pet, config, events


def test_a_run_reports_progress_then_finishes(run):
    _, _, events = run
    assert isinstance(events[-1], Finished)
    notes = [event.text for event in events if isinstance(event, Note)]
    assert any("random weights" in note for note in notes) and any("FID needs at least 2 photos" in note for note in notes)
    progress = [event for event in events if isinstance(event, Progress)]
    assert [event.step for event in progress] == [2, 4, 6, 8] and {event.total_steps for event in progress} == {8}
    assert [event.model for event in progress] == ["pet", "pet", "baseline", "baseline"]
    assert progress[-1].eta_seconds == 0


def test_image_i_uses_seed_i_and_the_baseline_draws_the_same_prompts_without_the_pet(run, generator):
    pet, config, events = run
    report = events[-1].report
    second = report.result.prompts[1]
    assert second.prompt.text == "a bruno dog in the snow" and second.prompt.caption == "a dog in the snow"

    def difference(a, b):  # largest pixel difference: a batch of 2 and a batch of 1 may differ by rounding
        return np.abs(np.asarray(a, dtype=int) - np.asarray(b, dtype=int)).max()

    seed_1 = generator.generate(second.prompt.text, pet=pet, seed=1, steps=config.steps).images[0]
    assert difference(second.images[1], seed_1) <= 2 < difference(second.images[0], seed_1)
    base = report.baseline.prompts[1]
    assert base.prompt == second.prompt and difference(base.images[1], seed_1) > 2


def test_the_report_files_and_the_json_contract(run, tmp_path):
    pet, config, events = run
    report = events[-1].report
    paths = report.save(tmp_path)
    assert {path.name for path in paths.values()} == {"report.json", "report.md", "grid.png", "fidelity.png"}
    data = json.loads(paths["json"].read_text())
    assert {"model", "profile", "prompts", "overall", "baseline", "fid", "n_images"} <= set(data)
    assert data["model"] == str(pet.path) and data["profile"] == "tiny" and data["random_weights"] is True
    assert data["n_images"] == 4 and data["n_photos"] == 1 and data["settings"]["seeds"] == [0, 1]
    assert data["fid"] is None  # one photo: see the fixture
    for model in (data, data["baseline"]):
        assert [entry["prompt"] for entry in model["prompts"]] == ["a bruno dog at the beach", "a bruno dog in the snow"]
        for entry in model["prompts"] + [model["overall"]]:
            assert SCORE_KEYS <= set(entry) and set(entry["ssim"]) == {"best", "mean"}
            assert 0 <= entry["clip_score"] <= 100 and -1 <= entry["clip_t"] <= 1 and -1 <= entry["dino"] <= 1
            assert 0 <= entry["ssim"]["mean"] <= entry["ssim"]["best"] <= 1
        for entry in model["prompts"]:
            assert len(entry["images"]) == 2 and all((tmp_path / image).is_file() for image in entry["images"])
    assert data["baseline"]["model"] == "petdream/tiny-sd-v1" and data["baseline"]["n_images"] == 4

    markdown = paths["markdown"].read_text()
    assert "random weights" in markdown and "| 2 | a bruno dog in the snow |" in markdown
    assert f"{pet.pet.name}'s model ({pet.method}, " in markdown and "2 prompts, 2 images each" in markdown
    assert markdown.count("**overall**") == 2 and " / " in markdown.split("**overall**")[1].split("\n")[0]
    _, clip_score, ssim_best, ssim_mean = (cell.split(" (")[0] for cell in
                                           markdown.split("**overall**")[1].split("\n")[0].split(" | ")[:4])
    # The status line's figures are the table's, on its scale (SSIM x 100, as in the paper's Table I).
    assert f"CLIPScore {clip_score}, SSIM x 100 best {ssim_best}, mean {ssim_mean}" in report.summary()
    assert Image.open(paths["grid"]).size[1] > 2 * 128 and Image.open(paths["chart"]).format == "PNG"


@pytest.mark.parametrize("pet_dino, base_dino, pet_clip_t, base_clip_t, said", [
    (0.70, 0.40, 0.30, 0.31, ["✅ **Looks like Bruno**: its pictures are closer to your photos than the base model's "
                              "pictures of any dog (DINO 0.70 against 0.40, where 1 is identical).",
                              "✅ **Draws what you ask for** as well as the base model (CLIP-T 0.300 against 0.310)."]),
    (0.41, 0.40, 0.25, 0.31, ["➖ **Not yet like Bruno**: its pictures are about as close to your photos as the base "
                              "model's pictures of any dog (DINO 0.41 against 0.40, where 1 is identical). Train "
                              "longer, or on more varied photos.",
                              "⚠️ **Follows the prompts less than the base model** (CLIP-T 0.250 against 0.310): it "
                              "draws your photos more than the scene asked for. Some of that comes with learning a pet; "
                              "much is a sign of overtraining, which fewer steps or a lower learning rate help."]),
    (0.30, 0.40, 0.31, 0.31, ["❌ **Less like Bruno than the base model's pictures of any dog** (DINO 0.30 against "
                              "0.40, where 1 is identical): the training went wrong. Train again with a lower learning "
                              "rate.",
                              "✅ **Draws what you ask for** as well as the base model (CLIP-T 0.310 against 0.310)."]),
])
def test_the_verdict_says_in_plain_words_whether_the_model_draws_the_pet_and_the_scene(
        run, tmp_path, pet_dino, base_dino, pet_clip_t, base_clip_t, said):
    import dataclasses

    report = run[2][-1].report

    def scored(result, dino, clip_t):
        return dataclasses.replace(result, overall=dataclasses.replace(result.overall, dino=dino, clip_t=clip_t))

    report = dataclasses.replace(report, result=scored(report.result, pet_dino, pet_clip_t),
                                 baseline=scored(report.baseline, base_dino, base_clip_t))
    said = ["ℹ️ From 4 pictures of your pet's model (and as many of the base model's), a rough sign: the full check "
            "is surer.", *said]  # 2 prompts, 2 pictures each
    assert report.verdict() == said
    assert "## In short\n\n" + "\n".join(f"- {line}" for line in said) in report.to_markdown()
    assert dataclasses.replace(report, baseline=None).verdict() == []  # nothing to compare with


def test_no_photos_fails_with_a_reason(tiny, generator, tmp_path):
    pet = make_lora_pet(tmp_path / "bruno", tiny)
    events = list(Evaluator(tiny, generator=generator).run(pet, [], EvaluationConfig(prompts=("a {0} {1}",))))
    assert isinstance(events[-1], Failed) and "at least one photo" in events[-1].reason


def test_cli_writes_the_report_without_a_baseline(tiny, data_dir, photos, tmp_path):
    pet = make_lora_pet(tmp_path / "bruno", tiny)
    (tmp_path / "photos").mkdir()
    for i, photo in enumerate(photos):
        photo.save(tmp_path / "photos" / f"{i}.png")
    (tmp_path / "prompts.txt").write_text("a {0} {1} on the beach\na {0} {1} wearing a red hat\n")
    out = tmp_path / "out"
    result = petdream("evaluate", "--model", pet.path, "--photos", tmp_path / "photos", "--out", out,
                      "--prompts", tmp_path / "prompts.txt", "--images-per-prompt", "1", "--steps", "2",
                      "--no-baseline", data_dir=data_dir)
    assert result.returncode == 0, result.stderr
    assert f"wrote {out / 'report.json'}" in result.stdout and "overall: CLIPScore" in result.stdout
    assert "random weights" in result.stderr  # the profile came from the pet model: tiny
    data = json.loads((out / "report.json").read_text())
    assert data["baseline"] is None and data["n_images"] == 2 and data["fid"] >= 0
    assert any("FID here compares 2 generated images with 3 photos" in warning for warning in data["warnings"])
    assert [entry["prompt"] for entry in data["prompts"]] == ["a bruno dog on the beach", "a bruno dog wearing a red hat"]
