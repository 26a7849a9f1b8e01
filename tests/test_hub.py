"""The Hub: push a pet model with its model card, pull one back, tokens, retries, messages.

Everything talks to `fake_hub.FakeHub`, a local server speaking the Hub's HTTP API; a guard
fails any test whose process tries to connect anywhere but 127.0.0.1.
"""

import dataclasses
import io
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from fake_hub import FakeHub
from huggingface_hub import ModelCard
from PIL import Image
from pet_factory import make_full_pet, make_lora_pet
from photo_factory import make_photo

from conftest import REPO
from petdream.__main__ import main
from petdream.hub import HubError, MissingPetInfo, PetHub, Retry, default_repo_name, make_model_card
from petdream.petmodel import PetModel
from petdream.photos import intake
from petdream.settings import Settings

TOKEN = "hf_WriteTokenOfSam0123456789abcdef"  # what must never show up anywhere
READ_TOKEN = "hf_ReadOnlyTokenOfSam0123456789ab"
OTHER_TOKEN = "hf_TokenOfAnotherPerson0123456789"
SD15 = "stable-diffusion-v1-5/stable-diffusion-v1-5"


# -- fixtures -----------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def hub_environment(monkeypatch, tmp_path):
    """Online (HF_HUB_OFFLINE would block even 127.0.0.1), no saved login, no real Hub."""
    import huggingface_hub.constants as constants

    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_ENDPOINT"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "hf-home" / "token"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")

    # huggingface_hub 2.4 fetches an "agent harness" list from its import-time endpoint on the
    # first request, whatever endpoint= says: point that at a closed local port.
    import_time_endpoint(monkeypatch, "http://127.0.0.1:9")

    attempts = []
    connect, getaddrinfo = socket.socket.connect, socket.getaddrinfo
    local = ("127.0.0.1", "::1", "localhost")

    def loopback_only(sock, address):
        if sock.family in (socket.AF_INET, socket.AF_INET6) and address[0] not in local:
            attempts.append(address)
            raise ConnectionRefusedError(f"test guard: no connections to {address[0]} (only the fake Hub)")
        return connect(sock, address)

    def resolve_loopback_only(host, *args, **kwargs):
        if host.endswith(".invalid"):  # never resolves (RFC 6761): answered as a resolver would
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        if host not in local:
            attempts.append(host)
            raise socket.gaierror(f"test guard: no look-ups of {host} (only the fake Hub)")
        return getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", loopback_only)
    monkeypatch.setattr(socket, "getaddrinfo", resolve_loopback_only)
    yield
    assert not attempts, f"something tried to reach {attempts}"


@pytest.fixture
def fake(monkeypatch):
    users = {TOKEN: FakeHub.user("sam", orgs={"dogclub": "write", "catclub": "read"}),
             READ_TOKEN: FakeHub.user("sam", role="read"),
             OTHER_TOKEN: FakeHub.user("alex")}
    with FakeHub(users) as hub:
        import_time_endpoint(monkeypatch, hub.url)
        yield hub


def import_time_endpoint(monkeypatch, url):
    """What HF_ENDPOINT would have set when huggingface_hub was imported (PetDream passes
    endpoint= explicitly; these only matter to requests huggingface_hub makes on its own)."""
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "ENDPOINT", url)
    # hf_hub_url swaps in endpoint= only where the template starts with ENDPOINT: keep them in step.
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", url + "/{repo_id}/resolve/{revision}/{filename}")


class Sleeps(list):
    """Retry's sleep, recorded instead of slept."""

    def __call__(self, seconds):
        self.append(seconds)


@pytest.fixture
def sleeps():
    return Sleeps()


@pytest.fixture
def hub(fake, sleeps):
    return PetHub(TOKEN, endpoint=fake.url, retry=Retry(sleep=sleeps))


def sd15_labelled(tiny):
    """The tiny profile's weights, recorded as a Stable Diffusion 1.5 pet (for the card's metadata)."""
    return dataclasses.replace(tiny, name="sd15", base_model_id=SD15)


def with_samples_and_training(model: PetModel) -> PetModel:
    """What a real training run adds: samples with their prompts, a loss curve, hyperparameters."""
    samples = []
    for i, prompt in enumerate([model.pet.instance_prompt, f"a photo of {model.pet.phrase} on a sunny beach"]):
        name = f"samples/{i:02d}-sample.png"
        (model.path / "samples").mkdir(exist_ok=True)
        make_photo(i, (128, 128)).save(model.path / name)
        samples.append({"file": name, "prompt": prompt, "seed": i})
    make_photo(9, (128, 128)).save(model.path / "samples" / "grid.png")
    make_photo(8, (200, 100)).save(model.path / "loss.png")
    (model.path / "checkpoints").mkdir()
    (model.path / "checkpoints" / "step-3.bin").write_bytes(b"resume state")  # never uploaded
    training = {"method": "lora", "steps": 400, "steps_done": 400, "learning_rate": 1e-4, "rank": 16,
                "batch_size": 1, "gradient_accumulation": 1, "prior_preservation": True, "num_class_images": 50,
                "snr_gamma": 5.0, "resolution": 512, "seed": 0, "final_loss": 0.0812, "seconds": 612.3,
                "instance_prompt": model.pet.instance_prompt, "class_prompt": "a photo of dog", "samples": samples}
    photos = [{"sha256": "ab" * 32, "width": 640, "height": 480}] * 5
    model = dataclasses.replace(model, training=training, photos=photos)
    model.write_metadata()
    return PetModel.load(model.path)


def write_evaluation(folder: Path, model: PetModel) -> Path:
    folder.mkdir(parents=True)
    overall = {"clip_score": 27.5, "clip_t": 0.281, "clip_i": 0.812, "dino": 0.655,
               "ssim": {"best": 0.41, "mean": 0.22}}
    base = {"clip_score": 28.1, "clip_t": 0.29, "clip_i": 0.61, "dino": 0.31, "ssim": {"best": 0.3, "mean": 0.18}}
    report = {"model": "/home/sam/pets/bruno", "pet": {"name": model.pet.name, "trigger": model.pet.trigger,
                                                       "class_noun": model.pet.class_noun},
              "profile": "sd15", "random_weights": False,
              "settings": {"images_per_prompt": 4, "steps": 25},
              "prompts": [{"prompt": "a bruno dog at the beach"}, {"prompt": "a bruno dog in the snow"}],
              "overall": overall, "fid": 123.4, "n_images": 8, "n_photos": 5,
              "baseline": {"model": SD15, "overall": base, "fid": 150.2, "n_images": 8},
              "warnings": ["FID here compares 8 generated images with 5 photos."], "seconds": 61.0}
    (folder / "report.json").write_text(json.dumps(report))
    (folder / "report.md").write_text("| prompt | CLIPScore |\n")
    make_photo(3, (256, 128)).save(folder / "grid.png")
    (folder / "images").mkdir()
    make_photo(4, (64, 64)).save(folder / "images" / "not-uploaded.png")
    return folder


def card_of(fake, repo_id) -> ModelCard:
    return ModelCard(fake.files(repo_id)["README.md"].decode())


def folder_state(folder: Path) -> dict:
    return {p.relative_to(folder).as_posix(): (p.stat().st_mtime_ns, p.read_bytes())
            for p in sorted(folder.rglob("*")) if p.is_file()}


# -- push ---------------------------------------------------------------------------------------


def test_push_is_one_private_commit_with_a_model_card(tiny, tmp_path, fake, hub):
    model = with_samples_and_training(make_lora_pet(tmp_path / "bruno", sd15_labelled(tiny)))
    write_evaluation(model.path / "evaluation", model)
    result = hub.push(model)

    assert result.repo_id == "sam/petdream-bruno" and result.private
    assert [c.json()["visibility"] for c in fake.calls("POST", "/api/repos/create")] == ["private"]
    assert fake.repos["sam/petdream-bruno"].private
    commits = fake.commit_payloads("sam/petdream-bruno")
    assert len(commits) == 1
    committed = sorted(line["value"]["path"] for line in commits[0] if line["key"] == "file")
    # No checkpoints, no photos, no evaluation images: only what a repo needs.
    assert committed == result.files == [
        "README.md", "evaluation/grid.png", "evaluation/report.json", "evaluation/report.md", "loss.png",
        "petdream.json", "pytorch_lora_weights.safetensors", "samples/00-sample.png", "samples/01-sample.png",
        "samples/grid.png"]
    files = fake.files("sam/petdream-bruno")
    assert files["pytorch_lora_weights.safetensors"] == model.lora_weights.read_bytes()
    assert json.loads(files["petdream.json"]) == model.to_dict()
    assert json.loads(files["evaluation/report.json"])["model"] == "sam/petdream-bruno"  # no local path

    card = card_of(fake, "sam/petdream-bruno")
    data = card.data.to_dict()
    assert data["base_model"] == SD15 and data["license"] == "creativeml-openrail-m"
    assert {"text-to-image", "diffusers", "lora", "dreambooth", "petdream"} <= set(data["tags"])
    assert data["library_name"] == "diffusers" and data["pipeline_tag"] == "text-to-image"
    assert data["instance_prompt"] == "a photo of bruno dog"
    assert data["widget"] == [
        {"text": "a photo of bruno dog", "output": {"url": "samples/00-sample.png"}},
        {"text": "a photo of bruno dog on a sunny beach", "output": {"url": "samples/01-sample.png"}},
    ]
    assert all(item["output"]["url"] in files for item in data["widget"])
    metrics = {m["type"]: m["value"] for m in data["model-index"][0]["results"][0]["metrics"]}
    assert metrics == {"clip_score": 27.5, "clip_t": 0.281, "clip_i": 0.812, "dino": 0.655, "ssim_best": 0.41,
                       "ssim_mean": 0.22, "fid": 123.4}

    text = card.text
    assert f'StableDiffusionPipeline.from_pretrained("{SD15}", torch_dtype=torch.float16)' in text
    assert 'pipeline.load_lora_weights("sam/petdream-bruno")' in text
    assert "**`bruno dog`**" in text and "`a photo of bruno dog`" in text
    for row in ("| learning rate | 0.0001 |", "| LoRA rank | 16 |", "| steps | 400 |", "| Min-SNR gamma | 5 |",
                "| prior preservation | True |", "| class prompt | a photo of dog |"):
        assert row in text, row
    assert "| DINO | 0.655 | 0.310 |" in text and "| FID (lower is better) | 123.4 | 150.2 |" in text
    assert "`creativeml-openrail-m`" in text and "training photos are not in this repo" in text
    assert "<Gallery />" in text


def test_the_card_of_a_tiny_pet_names_no_hub_base_model_and_warns(tiny, tmp_path, fake, hub):
    model = make_lora_pet(tmp_path / "bruno", tiny)
    hub.push(model, "bruno-test")
    data = card_of(fake, "sam/bruno-test").data.to_dict()
    assert "base_model" not in data and "license" not in data  # the Hub checks base_model is a Hub model
    assert "petdream-tiny" in data["tags"]
    assert "random weights" in card_of(fake, "sam/bruno-test").text


def test_a_full_fine_tune_pushes_its_pipeline_folder(tiny, tmp_path, fake, hub):
    model = make_full_pet(tmp_path / "mia", sd15_labelled(tiny))
    result = hub.push(model)
    assert result.repo_id == "sam/petdream-mia"
    assert "pipeline/model_index.json" in result.files and "pipeline/unet/config.json" in result.files
    assert "pytorch_lora_weights.safetensors" not in result.files
    card = card_of(fake, "sam/petdream-mia")
    assert "lora" not in card.data.tags
    assert 'from_pretrained(f"{folder}/pipeline"' in card.text


def test_public_only_when_asked_and_an_existing_public_repo_is_not_pushed_to_by_default(tiny, tmp_path, fake, hub):
    model = make_lora_pet(tmp_path / "bruno", tiny)
    assert hub.push(model, "open-bruno", public=True).private is False
    assert [c.json()["visibility"] for c in fake.calls("POST", "/api/repos/create")] == ["public"]
    with pytest.raises(HubError, match="already exists and is public.*Add --public"):
        hub.push(model, "open-bruno")
    assert len(fake.commit_payloads("sam/open-bruno")) == 1  # nothing more was uploaded
    hub.push(model, "secret-bruno")
    result = hub.push(model, "secret-bruno", public=True)
    assert result.private and "stays private" in result.notes[0]


def test_photos_are_uploaded_only_when_asked_without_exif_and_removed_again(tiny, tmp_path, fake, hub):
    from PIL.ExifTags import Base

    exif = Image.Exif()
    exif[Base.Make] = "PhoneCo"
    uploads = []
    for i in range(3):
        buffer = io.BytesIO()
        make_photo(i).save(buffer, format="JPEG", exif=exif)
        uploads.append((f"IMG_{i}_at_home.jpg", buffer.getvalue()))
    photos = intake(uploads, resolution=128).accepted
    model = make_lora_pet(tmp_path / "bruno", tiny)
    model = dataclasses.replace(model, photos=[{"sha256": p.sha256, "width": p.width, "height": p.height}
                                               for p in photos])
    model.write_metadata()

    assert not any(path.startswith("photos/") for path in hub.push(model).files)
    result = hub.push(model, photos=photos)
    uploaded = [path for path in result.files if path.startswith("photos/")]
    assert uploaded == sorted(f"photos/{p.sha256[:16]}.png" for p in photos)  # named by content, not by file name
    picture = Image.open(io.BytesIO(fake.files("sam/petdream-bruno")[uploaded[0]]))
    assert picture.size == (128, 128) and not picture.getexif() and "exif" not in picture.info
    assert "3 training photos are in `photos/`" in card_of(fake, "sam/petdream-bruno").text

    again = hub.push(model)  # without photos: the earlier ones go
    assert again.deleted == uploaded
    assert not any(path.startswith("photos/") for path in fake.files("sam/petdream-bruno"))
    with pytest.raises(ValueError, match="None of the photos given are the ones Bruno was trained on"):
        hub.push(model, photos=intake([("other.png", _png(make_photo(7)))], resolution=128).accepted)


def _png(image):
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_repo_names(fake, hub):
    assert default_repo_name("Bruno") == "petdream-bruno"
    assert default_repo_name("Mr. Bean II") == "petdream-mr-bean-ii"
    assert default_repo_name("小黑").startswith("petdream-pet-")
    assert default_repo_name("小黑") != default_repo_name("小白")  # two pets, two repos
    assert hub.repo_id_for("my-dog") == "sam/my-dog"
    assert hub.repo_id_for("dogclub/bruno") == "dogclub/bruno"
    for bad in ("a/b/c", "sam/has space", "sam/double--dash", ""):
        with pytest.raises(ValueError):
            hub.repo_id_for(bad or " ", None)


# -- tokens and write access -------------------------------------------------------------------


@pytest.mark.parametrize("token, repo, message", [
    (READ_TOKEN, None, "Your Hugging Face token is read-only.*'Write'"),
    (TOKEN, "catclub/bruno", "role in the organisation catclub is 'read'"),
    (TOKEN, "strangers/bruno", "strangers is neither that nor one of your organisations"),
])
def test_write_access_is_checked_before_anything_is_created(fake, sleeps, token, repo, message):
    hub = PetHub(token, endpoint=fake.url, retry=Retry(sleep=sleeps))
    with pytest.raises(HubError, match=message):
        hub.check_write_access(repo, pet_name="Bruno")
    assert not fake.calls("POST", ".")


def test_fine_grained_tokens_need_repo_write_on_the_namespace_or_repo(fake, sleeps):
    def hub_with(scoped):
        token = f"hf_fine{len(fake.users)}Grained0123456789"
        fake.users[token] = FakeHub.user("sam", role="fineGrained", scoped=scoped)
        return PetHub(token, endpoint=fake.url, retry=Retry(sleep=sleeps))

    read_only = [{"entity": {"type": "user", "name": "sam"}, "permissions": ["repo.content.read"]}]
    with pytest.raises(HubError, match="is fine-grained.*'Write access to contents/settings of all repos under sam'"):
        hub_with(read_only).check_write_access(None, "Bruno")
    user_write = [{"entity": {"type": "user", "name": "sam"}, "permissions": ["repo.content.read", "repo.write"]}]
    assert hub_with(user_write).check_write_access(None, "Bruno") == "sam/petdream-bruno"
    repo_write = [{"entity": {"type": "model", "name": "sam/petdream-bruno"}, "permissions": ["repo.write"]}]
    assert hub_with(repo_write).check_write_access(None, "Bruno") == "sam/petdream-bruno"
    with pytest.raises(HubError, match="may not write to sam/other"):
        hub_with(repo_write).check_write_access("other")


def test_a_space_login_without_write_scope_is_told_what_the_space_must_ask_for(fake, sleeps):
    fake.users["hf_oauth_0123456789abcdef"] = FakeHub.user("sam", role=None)
    hub = PetHub("hf_oauth_0123456789abcdef", endpoint=fake.url, oauth_scope="openid profile",
                 retry=Retry(sleep=sleeps))
    with pytest.raises(HubError, match=r"hf_oauth_scopes: \[write-repos, manage-repos\]"):
        hub.check_write_access(None, "Bruno")
    hub = PetHub("hf_oauth_0123456789abcdef", endpoint=fake.url, oauth_scope="openid profile write-repos manage-repos")
    assert hub.check_write_access(None, "Bruno") == "sam/petdream-bruno"


def test_tokens_come_from_the_argument_then_hf_token_then_the_saved_login(fake, monkeypatch, tmp_path):
    def whoami_token(hub):
        hub.account()
        return fake.calls("GET", "whoami")[-1].headers["authorization"].removeprefix("Bearer ")

    settings = Settings.from_env({"HF_ENDPOINT": fake.url})
    with pytest.raises(HubError, match="No Hugging Face token.*HF_TOKEN.*hf auth login"):
        PetHub.from_settings(settings).account()
    saved = tmp_path / "hf-home" / "token"
    saved.parent.mkdir(parents=True)
    saved.write_text(OTHER_TOKEN)
    assert whoami_token(PetHub.from_settings(settings)) == OTHER_TOKEN
    assert PetHub.from_settings(settings).token_source == "the token saved by `hf auth login`"
    monkeypatch.setenv("HF_TOKEN", READ_TOKEN)
    assert whoami_token(PetHub.from_settings(settings)) == READ_TOKEN
    assert whoami_token(PetHub.from_settings(settings, token=TOKEN)) == TOKEN  # a Space login wins
    assert TOKEN not in repr(PetHub.from_settings(settings, token=TOKEN))


# -- failures -----------------------------------------------------------------------------------


def test_5xx_and_429_are_retried_with_backoff_then_the_push_succeeds(tiny, tmp_path, fake, hub, sleeps):
    model = make_lora_pet(tmp_path / "bruno", tiny)
    fake.fail("GET", "/api/whoami-v2", 500)
    fake.fail("POST", "/api/repos/create", 502)
    fake.fail("POST", "/commit/", 503, times=2)
    fake.fail("POST", "/commit/", 429, headers={"Retry-After": "7"})
    result = hub.push(model)
    assert sleeps == [2, 2, 2, 4, 7]  # per call: 2 s, then 4 s, ...; Retry-After when the Hub says
    assert len(fake.calls("POST", "/commit/")) == 4 and len(fake.commit_payloads(result.repo_id)) == 4
    assert len(fake.repos[result.repo_id].commits) == 2  # the repo's first commit, and this push


def test_a_hub_that_stays_down_gives_up_after_four_tries_and_leaves_the_model_as_it_was(tiny, tmp_path, fake, hub,
                                                                                         sleeps):
    model = make_lora_pet(tmp_path / "bruno", tiny)
    before = folder_state(model.path)
    fake.fail("POST", "/commit/", 503, times=10)
    with pytest.raises(HubError) as failure:
        hub.push(model)
    assert len(fake.calls("POST", "/commit/")) == 4 and sleeps == [2, 4, 8]
    message = str(failure.value)
    assert "did not answer properly 4 times in a row (HTTP 503)" in message and "try again" in message
    assert f"Your pet model at {model.path} is unchanged." in message
    assert folder_state(model.path) == before
    fake.failures.clear()
    assert hub.push(model).files  # the same push, run again, works


def test_a_commit_whose_answer_was_lost_is_not_made_twice(tiny, tmp_path, fake, hub, sleeps):
    model = make_lora_pet(tmp_path / "bruno", tiny)
    photos = intake([(f"p{i}.png", _png(make_photo(i))) for i in range(3)], resolution=128).accepted
    hub.push(model, photos=photos)
    fake.fail("POST", "/commit/", 502, after=True)  # committed, but the answer never arrives
    result = hub.push(model)
    assert sleeps == [2] and not any(path.startswith("photos/") for path in fake.files("sam/petdream-bruno"))
    assert len(fake.repos["sam/petdream-bruno"].commits) == 3  # created, with photos, without: no duplicate
    assert result.commit == fake.repos["sam/petdream-bruno"].head[0]


def test_an_unreachable_hub_is_retried_then_explained(tiny, tmp_path, sleeps):
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    hub = PetHub(TOKEN, endpoint=f"http://127.0.0.1:{port}", retry=Retry(tries=3, sleep=sleeps))
    with pytest.raises(HubError) as failure:
        hub.push(make_lora_pet(tmp_path / "bruno", tiny))
    assert sleeps == [2, 4]
    assert str(failure.value).startswith(
        f"Could not reach the Hub at http://127.0.0.1:{port} to check your token (3 tries): nothing "
        "answers at that address (connection refused). Nothing is lost: check your internet connection and the "
        "endpoint (--endpoint or HF_ENDPOINT), then try again. Your pet model at")


def test_a_hub_whose_name_does_not_resolve_is_tried_twice_and_called_offline(tmp_path, sleeps):
    """No connection at all (or a mistyped address) is not worth 14 s of retries, nor "[Errno -2] ..." as
    the explanation. `.invalid` never resolves (RFC 6761), online or not."""
    hub = PetHub(endpoint="http://hub.petdream.invalid", retry=Retry(tries=4, sleep=sleeps))
    with pytest.raises(HubError) as failure:
        hub.pull("sam/petdream-bruno", tmp_path / "bruno")
    assert sleeps == [2]
    message = str(failure.value)
    assert message.startswith("Could not reach the Hub at http://hub.petdream.invalid to download sam/petdream-bruno "
                              "(2 tries): its address could not be looked up, so this machine seems to be offline")
    assert "Errno" not in message and not (tmp_path / "bruno").exists()


@pytest.mark.parametrize("method, path, status, phrases", [
    ("GET", "/api/whoami-v2", 401, ["did not accept your Hugging Face token (401)", "expired or revoked",
                                    "/settings/tokens", "hf auth login"]),
    ("POST", "/commit/", 403, ["may not write to sam/petdream-bruno (403)", "'Write' role", "/settings/tokens"]),
    ("POST", "/api/repos/create", 404, ["no user or organisation sam", "(404)", "Check --repo"]),
    ("POST", "/commit/", 409, ["conflict on sam/petdream-bruno (409)", "Nothing was committed", "run the push again"]),
    ("POST", "/commit/", 413, ["too large (413)", "3 files", "without --include-photos", "--method lora"]),
])
def test_each_refusal_gets_a_message_that_says_what_to_do(tiny, tmp_path, fake, hub, sleeps, method, path, status,
                                                           phrases):
    model = make_lora_pet(tmp_path / "bruno", tiny)
    fake.fail(method, path, status, body={"error": f"server says {status} {TOKEN}"})  # a server echoing the token
    with pytest.raises(HubError) as failure:
        hub.push(model)
    message = str(failure.value)
    for phrase in phrases:
        assert phrase in message, (phrase, message)
    assert failure.value.status == status and not sleeps  # refusals are not retried
    assert TOKEN not in message and "Traceback" not in message


def test_offline_mode_is_named(tiny, tmp_path, hub, monkeypatch):
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(HubError, match="HF_HUB_OFFLINE is set"):
        hub.push(make_lora_pet(tmp_path / "bruno", tiny))


# -- pull ---------------------------------------------------------------------------------------


def test_pull_gives_back_the_pet_model_folder(tiny, tmp_path, fake, hub):
    model = with_samples_and_training(make_lora_pet(tmp_path / "bruno", tiny))
    hub.push(model)
    anonymous = PetHub(None, endpoint=fake.url)
    with pytest.raises(HubError, match="not found.*or it is private and you are not signed in"):
        anonymous.pull("sam/petdream-bruno", tmp_path / "out")
    with pytest.raises(HubError, match="no model repo sam/petdream-bruno.*or it is private"):
        PetHub(OTHER_TOKEN, endpoint=fake.url).pull("sam/petdream-bruno", tmp_path / "out")

    pulled = hub.pull("sam/petdream-bruno", tmp_path / "pulled")
    assert pulled.to_dict() == model.to_dict()
    assert pulled.lora_weights.read_bytes() == model.lora_weights.read_bytes()
    assert (pulled.path / "samples" / "01-sample.png").is_file() and (pulled.path / "README.md").is_file()
    assert hub.pull("sam/petdream-bruno", tmp_path / "pulled").pet == model.pet  # again: resumes, same folder
    renamed = hub.pull("sam/petdream-bruno", tmp_path / "rex", name="Rex")
    assert renamed.pet.name == "Rex" and renamed.pet.trigger == "bruno"
    with pytest.raises(ValueError, match="is not empty"):
        hub.pull("sam/petdream-bruno", model.path)


def test_a_failed_download_is_retried(tiny, tmp_path, fake, hub, sleeps):
    hub.push(make_lora_pet(tmp_path / "bruno", tiny))
    fake.fail("GET", "/resolve/.*/pytorch_lora_weights.safetensors", 503)
    assert hub.pull("sam/petdream-bruno", tmp_path / "pulled").pet.name == "Bruno"
    assert sleeps == [2]


def _plain_lora_repo(fake, tiny, tmp_path, card: str | None, weights_name="pytorch_lora_weights.safetensors"):
    """A repo as diffusers' DreamBooth LoRA script leaves it: weights and a card, no petdream.json."""
    source = make_lora_pet(tmp_path / "source", tiny)
    files = {weights_name: source.lora_weights.read_bytes()}
    if card is not None:
        files["README.md"] = card.encode()
    fake.add_repo("someone/sks-dog-lora", files)
    return source


def test_pull_a_diffusers_dreambooth_lora_repo_and_ask_for_what_its_card_does_not_say(tiny, tmp_path, fake, hub):
    card = "---\nbase_model: petdream/tiny-sd-v1\ninstance_prompt: a photo of sks dog\ntags:\n- lora\n---\n# LoRA\n"
    source = _plain_lora_repo(fake, tiny, tmp_path, card)
    with pytest.raises(MissingPetInfo) as missing:
        hub.pull("someone/sks-dog-lora", tmp_path / "out")
    assert missing.value.missing == [("the pet's name", "--name")]
    assert "--name ..." in str(missing.value) and not (tmp_path / "out").exists()  # asked before downloading

    model = hub.pull("someone/sks-dog-lora", tmp_path / "out", name="Rex")
    assert model.pet == model.pet.__class__("Rex", "sks", "dog")
    assert model.base_model_id == "petdream/tiny-sd-v1" and model.profile == "tiny" and model.method == "lora"
    assert model.training["source"] == "hub:someone/sks-dog-lora"
    assert model.lora_weights.read_bytes() == source.lora_weights.read_bytes()


def test_a_repo_without_a_card_needs_every_flag_and_odd_weight_names_are_taken(tiny, tmp_path, fake, hub):
    _plain_lora_repo(fake, tiny, tmp_path, None, weights_name="sks_dog.safetensors")
    with pytest.raises(MissingPetInfo) as missing:
        hub.pull("someone/sks-dog-lora", tmp_path / "out", name="Rex")
    assert [flag for _, flag in missing.value.missing] == ["--class-noun", "--trigger", "--base-model"]
    model = hub.pull("someone/sks-dog-lora", tmp_path / "out", name="Rex", class_noun="dog", trigger="sks",
                     base_model="petdream/tiny-sd-v1")
    assert model.lora_weights.read_bytes() == (tmp_path / "out" / "sks_dog.safetensors").read_bytes()
    fake.add_repo("someone/not-a-lora", {"a.safetensors": b"x", "b.safetensors": b"y"})
    with pytest.raises(ValueError, match="neither a PetDream repo.*found: a.safetensors, b.safetensors"):
        hub.pull("someone/not-a-lora", tmp_path / "other", name="Rex")


@pytest.mark.parametrize("prompt, trigger, class_noun", [
    ("a photo of sks dog", "sks", "dog"),
    ("A photo of TOK golden retriever", "TOK", "golden retriever"),
    ("an image of zwx cat", "zwx", "cat"),
    ("ohwx", "ohwx", None),
    (None, None, None),
])
def test_the_trigger_and_class_come_from_the_instance_prompt(prompt, trigger, class_noun):
    from petdream.hub import _parse_instance_prompt

    assert _parse_instance_prompt(prompt) == (trigger, class_noun)


def test_pull_says_when_a_repo_does_not_exist(fake, hub, tmp_path):
    with pytest.raises(HubError, match=r"no model repo sam/nothing-here on http://127.0.0.1:\d+ \(404\)"):
        hub.pull("sam/nothing-here", tmp_path / "out")


# -- the command line ---------------------------------------------------------------------------


def _env(fake, tmp_path, token=TOKEN):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("HF_", "HUGGING_FACE")) and k != "TRANSFORMERS_OFFLINE"}
    env.update({"HF_TOKEN": token, "HF_HOME": str(tmp_path / "hf-home"), "HF_ENDPOINT": fake.url,
                "HF_HUB_DISABLE_TELEMETRY": "1", "NO_PROXY": "127.0.0.1,localhost", "OMP_NUM_THREADS": "1",
                "PETDREAM_DATA_DIR": str(tmp_path / "data")})
    return env


def test_cli_push_then_pull_round_trips_and_plain_diffusers_draws_with_the_pulled_weights(tiny, tmp_path, fake):
    from diffusers import StableDiffusionPipeline

    model = make_lora_pet(tmp_path / "bruno", tiny)
    env = _env(fake, tmp_path)
    push = subprocess.run([sys.executable, "-m", "petdream", "push", "--model", str(model.path)],  # HF_ENDPOINT
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert push.returncode == 0, push.stderr
    assert push.stdout.strip().startswith(f"pushed 3 files to {fake.url}/sam/petdream-bruno (private), commit ")
    env["HF_ENDPOINT"] = "http://127.0.0.1:9"  # --endpoint wins over HF_ENDPOINT
    pull = subprocess.run([sys.executable, "-m", "petdream", "pull", "--repo", "sam/petdream-bruno", "--output",
                           str(tmp_path / "pulled"), "--endpoint", fake.url],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert pull.returncode == 0, pull.stderr
    assert pull.stdout.strip() == (f"pulled sam/petdream-bruno -> {tmp_path / 'pulled'}: Bruno the dog (lora, base "
                                   'petdream/tiny-sd-v1); prompt with "bruno dog"')
    for output in (push.stdout + push.stderr, pull.stdout + pull.stderr):
        assert TOKEN not in output

    pipeline = StableDiffusionPipeline.from_pretrained(tiny.base_model, safety_checker=None)
    pipeline.set_progress_bar_config(disable=True)

    def draw():
        return pipeline("a photo of bruno dog", num_inference_steps=3, generator=torch.Generator().manual_seed(0),
                        output_type="np").images[0]

    before = draw()
    pipeline.load_lora_weights(tmp_path / "pulled")  # plain diffusers, no PetDream
    after = draw()
    assert abs(after - before).mean() > 0.005


def test_cli_flags_public_photos_and_evaluation(tiny, tmp_path, fake, monkeypatch, capsys):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(3):
        make_photo(i).save(folder / f"p{i}.jpg")
    photos = intake(sorted(folder.iterdir()), resolution=128).accepted
    model = make_lora_pet(tmp_path / "bruno", sd15_labelled(tiny))
    model = dataclasses.replace(model, training={"resolution": 128},
                                photos=[{"sha256": p.sha256, "width": p.width, "height": p.height} for p in photos])
    model.write_metadata()
    evaluation = write_evaluation(tmp_path / "eval", model)
    assert main(["push", "--model", str(model.path), "--repo", "dogclub/bruno", "--public", "--include-photos",
                 "--photos", str(folder), "--evaluation", str(evaluation), "--endpoint", fake.url]) == 0
    out = capsys.readouterr().out
    assert "to " + fake.url + "/dogclub/bruno (public)" in out
    files = fake.files("dogclub/bruno")
    assert sum(path.startswith("photos/") for path in files) == 3 and "evaluation/report.json" in files
    assert not fake.repos["dogclub/bruno"].private

    assert main(["push", "--model", str(model.path), "--include-photos", "--endpoint", fake.url]) == 2
    assert "--include-photos needs --photos DIR" in capsys.readouterr().err


def test_the_token_appears_nowhere(tiny, tmp_path, fake, monkeypatch, capsys, caplog):
    caplog.set_level("DEBUG")
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    model = make_lora_pet(tmp_path / "bruno", tiny)
    args = ["--endpoint", fake.url]
    assert main(["push", "--model", str(model.path), *args]) == 0
    # (A server echoing the token back is covered by the refusal test: PetDream's message scrubs it;
    # a library's DEBUG log of the response would not, and the Hub does not echo tokens.)
    fake.fail("POST", "/preupload/", 403)
    assert main(["push", "--model", str(model.path), *args]) == 1
    fake.fail("GET", "/api/whoami-v2", 401)
    assert main(["push", "--model", str(model.path), "--repo", "x", *args]) == 1
    assert main(["pull", "--repo", "sam/petdream-bruno", "--output", str(tmp_path / "pulled"), *args]) == 0
    captured = capsys.readouterr()
    assert "may not write to sam/petdream-bruno" in captured.err and "did not accept the HF_TOKEN token" in captured.err
    assert TOKEN not in captured.out + captured.err + caplog.text
    written = [p for p in tmp_path.rglob("*") if p.is_file() and p.name != "token"]
    assert written and not [p for p in written if TOKEN.encode() in p.read_bytes()]
    assert not any(TOKEN.encode() in content for content in fake.files("sam/petdream-bruno").values())


@pytest.fixture
def photo_folder(tmp_path):
    """Three photos to train on. (Also puts back pytest's Ctrl-C handler, which `train` replaces.)"""
    import signal

    previous = signal.getsignal(signal.SIGINT)
    yield _photos(tmp_path)
    signal.signal(signal.SIGINT, previous)


def _photos(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(3):
        make_photo(i).save(folder / f"p{i}.jpg")
    return folder


TRAIN_FAST = ["--profile", "tiny", "--preset", "tiny", "--steps", "2", "--no-prior-preservation", "--device", "cpu"]


def test_train_push_to_refuses_a_read_only_token_before_training(tmp_path, fake, monkeypatch, capsys, photo_folder):
    monkeypatch.setenv("HF_TOKEN", READ_TOKEN)
    code = main(["train", "--photos", str(photo_folder), "--name", "Rex", "--class-noun", "dog", "--output",
                 str(tmp_path / "rex"), "--push-to", "--endpoint", fake.url, *TRAIN_FAST])
    assert code == 2 and "The HF_TOKEN token is read-only" in capsys.readouterr().err
    assert not (tmp_path / "rex").exists()  # no training happened


def test_train_push_to_pushes_after_training_and_a_failed_push_keeps_the_model(tiny, data_dir, tmp_path, fake,
                                                                               monkeypatch, capsys, photo_folder):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    monkeypatch.setenv("PETDREAM_DATA_DIR", str(data_dir))
    common = ["--photos", str(photo_folder), "--name", "Rex", "--class-noun", "dog", "--endpoint", fake.url,
              *TRAIN_FAST]
    assert main(["train", *common, "--output", str(tmp_path / "rex"), "--push-to", "dogclub/rex",
                 "--include-photos"]) == 0
    captured = capsys.readouterr()
    assert "will push to dogclub/rex (private) after training" in captured.err
    assert "pushed " in captured.out and "/dogclub/rex (private)" in captured.out
    files = fake.files("dogclub/rex")
    assert "pytorch_lora_weights.safetensors" in files and sum(p.startswith("photos/") for p in files) == 3
    assert [s["text"] for s in card_of(fake, "dogclub/rex").data.widget] == [
        "a photo of rex dog", "a photo of rex dog on a sunny beach"]

    fake.fail("POST", "/commit/", 413)
    assert main(["train", *common, "--output", str(tmp_path / "rex2"), "--push-to", "--public"]) == 1
    err = capsys.readouterr().err
    assert "the pet model was trained, but pushing it failed" in err and "too large (413)" in err
    assert (f"push it later with: python -m petdream push --model {tmp_path / 'rex2'} --repo sam/petdream-rex "
            f"--public --endpoint {fake.url}") in err
    assert PetModel.load(tmp_path / "rex2").pet.name == "Rex"


def test_train_push_to_frees_the_training_device_before_the_upload(tiny, data_dir, tmp_path, fake, monkeypatch,
                                                                    capsys, photo_folder):
    """An upload takes minutes on a slow line: another training may have the device (and the memory the
    models held) meanwhile."""
    import fcntl

    import petdream.__main__ as cli

    monkeypatch.setenv("HF_TOKEN", TOKEN)
    monkeypatch.setenv("PETDREAM_DATA_DIR", str(data_dir))
    monkeypatch.setenv("PETDREAM_LOCK_DIR", str(tmp_path / "locks"))
    device_free_at_upload = []

    def push(*args):
        with open(tmp_path / "locks" / "train-cpu-0.lock", "w") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as the next training's would
                device_free_at_upload.append(True)
            except BlockingIOError:
                device_free_at_upload.append(False)
        return push_after_training(*args)

    push_after_training = cli._push_after_training
    monkeypatch.setattr(cli, "_push_after_training", push)
    assert main(["train", "--photos", str(photo_folder), "--name", "Rex", "--class-noun", "dog", "--endpoint",
                 fake.url, *TRAIN_FAST, "--output", str(tmp_path / "rex"), "--push-to", "dogclub/rex"]) == 0
    assert device_free_at_upload == [True]
    assert "pushed " in capsys.readouterr().out


def test_the_card_pins_the_base_models_commit_where_the_pet_recorded_it(tiny, tmp_path):
    hub_base = dataclasses.replace(tiny, name="sd15", base_model_id="stable-diffusion-v1-5/stable-diffusion-v1-5")
    model = make_lora_pet(tmp_path / "bruno", hub_base)
    commit = "451f4fe16113bff5a5d2269ed5ad43b0592e9a14"
    card = make_model_card(dataclasses.replace(model, base_model_commit=commit), "sam/petdream-bruno", license=None)
    assert f"Base model revision: commit `{commit}`." in card.text
    assert (f'from_pretrained("stable-diffusion-v1-5/stable-diffusion-v1-5", revision="{commit}", '
            'torch_dtype=torch.float16)') in card.text
    snapshot = dataclasses.replace(model, base_model_revision=commit, base_model_commit=commit)  # a cached folder's
    assert f"Base model revision: `{commit}`." in make_model_card(snapshot, "sam/petdream-bruno", license=None).text
    on_main = dataclasses.replace(model, base_model_revision="main", base_model_commit=commit)
    assert (f"Base model revision: `main`, commit `{commit}`." in
            make_model_card(on_main, "sam/petdream-bruno", license=None).text)
    unpinned = make_model_card(model, "sam/petdream-bruno", license=None)  # made before commits were recorded
    assert "Base model revision: the latest." in unpinned.text
    assert 'from_pretrained("stable-diffusion-v1-5/stable-diffusion-v1-5", torch_dtype' in unpinned.text


def test_the_card_of_a_pet_on_a_local_base_model_names_no_path_and_no_hub_model(tiny, tmp_path):
    model = make_lora_pet(tmp_path / "bruno", dataclasses.replace(tiny, name="sd15", base_model_id="local:my-sd15"))
    card = make_model_card(model, "sam/petdream-bruno", license=None)
    assert card.data.base_model is None  # the Hub checks base_model names one of its models
    assert "a local copy of Stable Diffusion known as `my-sd15`, not named on the Hub" in card.text
    assert 'from_pretrained("path/to/your/base-model", torch_dtype=torch.float16)' in card.text
    assert str(tmp_path) not in card.text


def test_make_model_card_is_a_huggingface_hub_model_card(tiny, tmp_path):
    model = make_lora_pet(tmp_path / "bruno", sd15_labelled(tiny))
    card = make_model_card(model, "sam/petdream-bruno", license="creativeml-openrail-m")
    assert isinstance(card, ModelCard)
    assert card.data.base_model == SD15 and card.data.license == "creativeml-openrail-m"
    assert ModelCard(str(card)).data.to_dict() == card.data.to_dict()


@pytest.mark.parametrize("space_id, shared, host, reachable_by_host_only", [
    (None, False, "127.0.0.1", True),
    (None, False, "0.0.0.0", False),  # anyone on the network
    (None, True, "127.0.0.1", False),  # a gradio.live link
    ("sam/petdream", False, "0.0.0.0", False),  # a Space, signed in or not
])
def test_the_machines_token_is_only_for_an_app_nobody_else_can_reach(monkeypatch, space_id, shared, host,
                                                                    reachable_by_host_only):
    from petdream.ui.session import only_the_host_can_reach

    monkeypatch.delenv("SPACE_ID", raising=False)
    if space_id:
        monkeypatch.setenv("SPACE_ID", space_id)
    assert only_the_host_can_reach(Settings.from_env({}, host=host), shared) is reachable_by_host_only


def test_an_app_others_can_reach_never_pushes_or_pulls_with_the_machines_token(tiny, tmp_path, fake, monkeypatch):
    """Shared (a link, a Space, a public address), a visitor without a sign-in of their own gets a
    clear refusal to push and anonymous pulls: the host's HF_TOKEN is never sent for them."""
    from petdream.hub import HubError
    from petdream.service import PetDreamService

    monkeypatch.setenv("HF_TOKEN", TOKEN)  # the host's own
    PetHub(TOKEN, endpoint=fake.url).push(make_lora_pet(tmp_path / "secret", tiny), "petdream-secret")  # private
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "models").symlink_to(Path(tiny.base_model).parent.parent)
    settings = Settings.from_env({}, data_dir=tmp_path / "data", profile="tiny", device="cpu", hub_endpoint=fake.url)
    shared = PetDreamService(settings, tiny, host_only=False)
    visitor = "session:" + "v" * 40
    record = shared.store.add_pet(visitor, "Bruno", "dog", "bruno")
    model = make_lora_pet(shared.store.paths(visitor, record.id).runs / "r1", tiny)
    shared.store.update_pet(visitor, record.id, model_dir=model.path)
    fake.requests.clear()

    with pytest.raises(HubError, match="never pushes with the Hugging Face token of the machine it runs on"):
        shared.push_to_hub(visitor, record.id, None)
    with pytest.raises(HubError, match="or it is private and you are not signed in"):
        shared.load_from_hub(visitor, "sam/petdream-secret")
    assert fake.requests and not any(TOKEN in str(r.headers) for r in fake.requests)

    private = PetDreamService(settings, tiny)  # the host's own app on 127.0.0.1: their token is theirs to use
    assert private.load_from_hub(visitor, "sam/petdream-secret").name == "Bruno"


def test_the_app_pushes_a_persons_pet_and_another_person_loads_it_back(tiny, tmp_path, fake, caplog):
    """The service behind the app's Hub buttons: each person's pets stay theirs; the pulled pet draws."""
    from petdream.service import PetDreamService
    from petdream.store import NotFound

    caplog.set_level("DEBUG")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "models").symlink_to(Path(tiny.base_model).parent.parent)
    service = PetDreamService(Settings.from_env({}, data_dir=tmp_path / "data", profile="tiny", device="cpu",
                                                hub_endpoint=fake.url), tiny)
    alice, bob = "session:" + "a" * 40, "session:" + "b" * 40
    record = service.store.add_pet(alice, "Bruno", "dog", "bruno")
    model = make_lora_pet(service.store.paths(alice, record.id).runs / "r1", tiny)
    service.store.update_pet(alice, record.id, model_dir=model.path)

    with pytest.raises(NotFound):
        service.push_to_hub(bob, record.id, TOKEN)
    result = service.push_to_hub(alice, record.id, TOKEN)
    assert result.repo_id == "sam/petdream-bruno" and result.private
    assert service.store.pet(alice, record.id).hub_repo == "sam/petdream-bruno"

    loaded = service.load_from_hub(bob, "sam/petdream-bruno", TOKEN)
    assert [p.id for p in service.pets(bob, trained_only=True)] == [loaded.id] and loaded.name == "Bruno"
    assert service.pet_model(bob, loaded.id).lora_weights.read_bytes() == model.lora_weights.read_bytes()
    picture = service.draw(bob, loaded.id, "a photo of bruno dog", seed=3)
    assert picture.path.is_file() and [p.id for p in service.pets(alice)] == [record.id]
    assert TOKEN not in caplog.text
