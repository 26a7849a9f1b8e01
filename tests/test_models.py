import os

import pytest
import torch

from petdream.models.profiles import resolve_profile
from petdream.models.tiny import RESOLUTION, clip_tokenizer, ensure_tiny_models, tiny_models_dir
from petdream.settings import Settings


# Ids from openai/clip-vit-large-patch14's tokenizer, as published alongside public CLIP ports.
@pytest.mark.parametrize(
    "text, ids",
    [
        ("a photo of a cat", [49406, 320, 1125, 539, 320, 2368, 49407]),
        ("the black dog", [49406, 518, 1449, 1929, 49407]),
        ("a photo of an astronaut riding a horse on mars",
         [49406, 320, 1125, 539, 550, 18376, 6765, 320, 4558, 525, 7496, 49407]),
    ],
)
def test_offline_tokenizer_gives_clips_own_ids(text, ids):
    tokenizer = clip_tokenizer()
    assert len(tokenizer) == 49408
    assert tokenizer(text).input_ids == ids


def test_tiny_models_load_with_the_ordinary_from_pretrained(tiny):
    from diffusers import StableDiffusionPipeline
    from transformers import AutoImageProcessor, CLIPModel, CLIPProcessor, ViTModel

    pipeline = StableDiffusionPipeline.from_pretrained(tiny.base_model)
    assert pipeline.vae_scale_factor == 8
    assert pipeline.unet.config.sample_size * 8 == RESOLUTION == tiny.resolution >= 128
    assert pipeline.tokenizer("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]

    clip, processor = CLIPModel.from_pretrained(tiny.clip_model), CLIPProcessor.from_pretrained(tiny.clip_model)
    from PIL import Image

    inputs = processor(text=["a dog"], images=[Image.new("RGB", (200, 150), "white")], return_tensors="pt")
    out = clip(**inputs)
    assert out.image_embeds.shape == out.text_embeds.shape == (1, 64)

    dino = ViTModel.from_pretrained(tiny.dino_model)
    pixels = AutoImageProcessor.from_pretrained(tiny.dino_model)(Image.new("RGB", (90, 70)), return_tensors="pt")
    assert dino(**pixels).last_hidden_state[:, 0].shape == (1, 64)  # the CLS token DINO scores use


def test_tiny_models_are_built_once_and_reused(tiny, data_dir):
    folder = tiny_models_dir(data_dir)
    stamp = (folder / "sd" / "unet" / "config.json").stat().st_mtime_ns
    assert ensure_tiny_models(data_dir) == folder
    assert (folder / "sd" / "unet" / "config.json").stat().st_mtime_ns == stamp
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".building-")]


def test_tiny_builds_are_identical(tmp_path, tiny):
    from safetensors.torch import load_file

    other = ensure_tiny_models(tmp_path)
    ours = load_file(os.path.join(tiny.base_model, "unet", "diffusion_pytorch_model.safetensors"))
    theirs = load_file(other / "sd" / "unet" / "diffusion_pytorch_model.safetensors")
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)


def test_auto_without_cuda_picks_tiny_and_says_why(data_dir, tiny, monkeypatch, caplog):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with caplog.at_level("INFO"):
        profile = resolve_profile(Settings.from_env({}, data_dir=data_dir))
    assert profile.name == "tiny" and profile.random_weights
    assert "no CUDA GPU" in profile.reason
    assert "profile tiny: no CUDA GPU" in caplog.text


def test_auto_with_cuda_but_offline_picks_tiny(data_dir, tiny, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    profile = resolve_profile(Settings.from_env({}, data_dir=data_dir))
    assert profile.name == "tiny" and "HF_HUB_OFFLINE" in profile.reason


def test_auto_with_cuda_and_an_unreachable_hub_picks_tiny(data_dir, tiny, monkeypatch):
    import socket

    with socket.socket() as s:  # a local port with nobody listening: connection refused at once
        s.bind(("127.0.0.1", 0))
        endpoint = f"http://127.0.0.1:{s.getsockname()[1]}"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    profile = resolve_profile(Settings.from_env({}, data_dir=data_dir, hub_endpoint=endpoint))
    assert profile.name == "tiny"
    assert f"the Hub did not answer at {endpoint}" in profile.reason


def test_auto_with_cuda_and_a_local_base_model_picks_sd15(data_dir, tiny, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    profile = resolve_profile(Settings.from_env({}, data_dir=data_dir, base_model=tiny.base_model))
    assert profile.name == "sd15" and not profile.random_weights
    assert profile.base_model == tiny.base_model and profile.base_model_id == "local:sd"  # recorded: not the path
    assert profile.resolution == 512


def test_sd15_profile_carries_every_model_setting(data_dir):
    settings = Settings.from_env({}, data_dir=data_dir, profile="sd15", base_model="me/sd", clip_model="me/clip",
                                 dino_model="me/dino", base_model_revision="abc123")
    profile = resolve_profile(settings)
    assert (profile.base_model, profile.base_model_revision, profile.clip_model, profile.dino_model) == (
        "me/sd", "abc123", "me/clip", "me/dino")


def test_the_base_models_commit_is_read_from_the_hub_cache_without_the_network(data_dir, tiny, tmp_path,
                                                                               monkeypatch):
    """A revision of None (or "main") says "the latest, whenever that was"; the commit names the weights."""
    from huggingface_hub import constants

    from petdream.models.profiles import base_model_commit

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    repo = tmp_path / "hub" / "models--me--sd15"
    latest, half = "a" * 40, "b" * 40
    for branch, commit in (("main", latest), ("fp16", half)):  # the cache's own layout, as a download leaves it
        (repo / "refs").mkdir(parents=True, exist_ok=True)
        (repo / "refs" / branch).write_text(commit)
        (repo / "snapshots" / commit).mkdir(parents=True)
        (repo / "snapshots" / commit / "model_index.json").write_text("{}")

    def commit_of(base_model, **settings):
        return base_model_commit(resolve_profile(Settings.from_env({}, data_dir=data_dir, profile="sd15",
                                                                   base_model=base_model, **settings)))

    assert commit_of("me/sd15") == latest
    assert commit_of("me/sd15", base_model_revision="fp16") == half
    assert commit_of("me/sd15", base_model_revision=half) == half
    assert commit_of("me/other") is None  # not downloaded yet
    assert commit_of(str(repo / "snapshots" / latest)) == latest  # a folder in the cache
    (tmp_path / "my-sd15").mkdir()
    assert commit_of(str(tmp_path / "my-sd15")) is None  # a folder of its own: no commit to name
    assert base_model_commit(tiny) is None  # built here


def test_a_local_base_model_folder_is_recorded_by_its_hub_id_never_its_path(data_dir, tmp_path):
    """A pet model moves between machines and its Hub card names its base: the id, not this machine's path."""
    def recorded(folder, **settings):
        profile = resolve_profile(Settings.from_env({}, data_dir=data_dir, profile="sd15", base_model=str(folder),
                                                    **settings))
        return profile.base_model, profile.base_model_id, profile.base_model_revision

    cached = tmp_path / "hub" / "models--stable-diffusion-v1-5--stable-diffusion-v1-5" / "snapshots" / "451f4fe1"
    plain = tmp_path / "my-sd15"
    for folder in (cached, plain):
        folder.mkdir(parents=True)
    assert recorded(cached) == (str(cached), "stable-diffusion-v1-5/stable-diffusion-v1-5", "451f4fe1")  # as downloaded
    assert recorded(plain, base_model_id="me/sd15") == (str(plain), "me/sd15", None)  # PETDREAM_BASE_MODEL_ID
    assert recorded(plain) == (str(plain), "local:my-sd15", None)  # unnamed: its folder's name alone
    assert recorded("me/sd15") == ("me/sd15", "me/sd15", None)  # a Hub id is its own
