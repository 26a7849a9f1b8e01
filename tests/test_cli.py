"""The CLI as a person (or a script) runs it: a real subprocess, real files."""

import json
import os
import subprocess
import sys

import pytest
from PIL import Image
from pet_factory import make_lora_pet
from photo_factory import encode, make_photo

from conftest import REPO


def petdream(*args, data_dir, timeout=120):
    env = {**os.environ, "PETDREAM_DATA_DIR": str(data_dir), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "petdream", *map(str, args)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_help_lists_every_subcommand_with_a_description(tmp_path):
    result = petdream("--help", data_dir=tmp_path)
    assert result.returncode == 0
    assert "generate    draw a picture from a prompt" in result.stdout
    assert "check which photos in a folder can be used for training" in result.stdout


def test_generate_writes_a_png_on_the_tiny_profile(tiny, data_dir, tmp_path):
    out = tmp_path / "x.png"
    result = petdream("generate", "--profile", "tiny", "--prompt", "a photo of a dog", "--out", out,
                      "--steps", "5", "--seed", "42", data_dir=data_dir)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [f"wrote {out}", "seed 42"]
    assert "random weights" in result.stderr  # the tiny profile says so plainly
    image = Image.open(out)
    assert image.format == "PNG" and image.size[0] >= 128 and image.size == image.size[::-1]


def test_generate_with_a_pet_model_and_several_images(tiny, data_dir, tmp_path):
    pet = make_lora_pet(tmp_path / "bruno", tiny)
    result = petdream("generate", "--model", pet.path, "--prompt", "a photo of bruno dog in the snow",
                      "--out", tmp_path / "snow.png", "--num-images", "2", "--steps", "3", data_dir=data_dir)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "snow-1.png").is_file() and (tmp_path / "snow-2.png").is_file()
    assert "'pet': 'Bruno'" in Image.open(tmp_path / "snow-2.png").text["parameters"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--prompt", " "], "error: The prompt is empty"),
        (["--prompt", "a dog", "--model", "nowhere"], "error: No pet model at nowhere"),
        (["--prompt", "a dog", "--num-images", "99"], "error: num_images must be between 1 and 8"),
    ],
)
def test_generate_bad_input_is_one_clear_line(tiny, data_dir, tmp_path, args, message):
    result = petdream("generate", "--profile", "tiny", "--out", tmp_path / "x.png", *args, data_dir=data_dir)
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "x.png").exists()


@pytest.fixture
def mixed_folder(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(3):
        make_photo(i).save(folder / f"good{i}.jpg", quality=92)
    (folder / "same.jpg").write_bytes((folder / "good0.jpg").read_bytes())
    make_photo(9, (100, 80)).save(folder / "tiny.png")
    (folder / "notes.jpg").write_text("not a picture")
    (folder / "empty.png").write_bytes(b"")
    (folder / "cut.jpg").write_bytes(encode(make_photo(5), "JPEG")[:3000])
    return folder


def test_check_photos_reports_each_file(mixed_folder, tmp_path):
    result = petdream("check-photos", mixed_folder, data_dir=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert [line.split()[1] for line in lines if line.startswith("accepted")] == ["good0.jpg", "good1.jpg", "good2.jpg"]
    rejected = {line.split()[1].rstrip(":"): line for line in lines if line.startswith("rejected")}
    assert set(rejected) == {"same.jpg", "tiny.png", "notes.jpg", "empty.png", "cut.jpg"}
    assert "exact copy of good0.jpg" in rejected["same.jpg"]
    assert "100x80 px" in rejected["tiny.png"]
    assert lines[-1] == "3 usable, 5 rejected: enough to train."


def test_check_photos_json_and_exit_2_when_too_few(mixed_folder, tmp_path):
    (mixed_folder / "good2.jpg").unlink()
    result = petdream("check-photos", mixed_folder, "--json", data_dir=tmp_path)
    assert result.returncode == 2
    report = json.loads(result.stdout)
    assert [a["file"] for a in report["accepted"]] == ["good0.jpg", "good1.jpg"]
    assert all(set(r) == {"file", "reason"} and r["reason"] for r in report["rejected"])
    assert {"file", "sha256", "width", "height"} <= set(report["accepted"][0])


def test_check_photos_on_a_missing_folder(tmp_path):
    result = petdream("check-photos", tmp_path / "absent", data_dir=tmp_path)
    assert result.returncode == 2 and "is not a folder" in result.stderr


def test_check_photos_on_the_real_dog_photos(dreambench, tmp_path):
    result = petdream("check-photos", dreambench / "dog", "--json", data_dir=tmp_path)
    assert result.returncode == 0
    assert len(json.loads(result.stdout)["accepted"]) == 5
