"""The CLI as a person (or a script) runs it: a real subprocess, real files."""

import json
import os
import signal
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


ONE_PROCESS_FAILS = """
# `python -m petdream`, but process 1 cancels after step CANCEL_AFTER (as if its Ctrl-C came first), or
# runs out of memory part-way through the backward pass of its pass OUT_OF_MEMORY_AT: after the later
# layers' gradients were already exchanged (once the file WAIT_FOR is there, if set: the checkpoint the first
# process writes in the background, or the race with it decides which checkpoint is the last), or sees a NaN
# loss at step NAN_AT.
import os, runpy, sys, time
import torch
from petdream.training.trainer import DreamBoothTrainer

real_loss, real_step, passes = DreamBoothTrainer._loss, DreamBoothTrainer._step, []

def loss_then_out_of_memory_in_backward(self, run, batch_size, micro_batches):
    loss = real_loss(self, run, batch_size, micro_batches)
    passes.append(batch_size)
    if os.environ["RANK"] == "1" and str(len(passes)) == os.environ.get("OUT_OF_MEMORY_AT"):
        deadline = time.monotonic() + 60
        while os.environ.get("WAIT_FOR") and not os.path.exists(os.environ["WAIT_FOR"]) and time.monotonic() < deadline:
            time.sleep(0.05)
        early_layer = [p for p in run.unet.parameters() if p.requires_grad][0]
        early_layer.register_hook(lambda grad: (_ for _ in ()).throw(torch.OutOfMemoryError("CUDA out of memory")))
    return loss

def step_then_cancel(self, run, step, passes):
    loss = real_step(self, run, step, passes)
    if os.environ["RANK"] == "1" and str(step + 1) == os.environ.get("CANCEL_AFTER"):
        self.cancel()
    if os.environ["RANK"] == "1" and str(step + 1) == os.environ.get("NAN_AT"):
        return float("nan")  # its batch diverged; the other process's did not
    return loss

DreamBoothTrainer._loss, DreamBoothTrainer._step = loss_then_out_of_memory_in_backward, step_then_cancel
sys.argv = ["petdream", *sys.argv[1:]]
runpy.run_module("petdream", run_name="__main__", alter_sys=True)
"""


def test_several_processes_stop_together_and_resume_to_the_weights_of_an_uninterrupted_run(
        tiny, data_dir, tmp_path, dreambench):
    """What `accelerate launch` runs on several GPUs, as two CPU processes: torchrun, gloo, DDP.
    Process 1 alone cancels after step 1: both stop there, step 1's checkpoint kept. Resumed,
    process 1 runs out of memory mid-backward at step 3: the run stops with that said (not DDP's
    "Expected to have finished reduction"), step 2's checkpoint kept. Resumed again, it ends with
    one PetModel with the weights of an uninterrupted two-process run."""
    import torch
    from diffusers import StableDiffusionPipeline
    from safetensors.torch import load_file

    (tmp_path / "one_process_fails.py").write_text(ONE_PROCESS_FAILS)
    env = {**os.environ, "PETDREAM_DATA_DIR": str(data_dir), "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    args = ["train", "--profile", "tiny", "--photos", dreambench / "dog", "--name", "bruno", "--class-noun", "dog",
            "--steps", "4", "--checkpoint-every", "2", "--num-class-images", "2"]
    checkpoints = tmp_path / "bruno" / "checkpoints"

    def torchrun(*program, **extra_env):
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                   *map(str, program)]
        launch = subprocess.Popen(command, cwd=REPO, env={**env, **extra_env}, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True, start_new_session=True)
        try:
            out, err = launch.communicate(timeout=180)
        except subprocess.TimeoutExpired:  # a hang (one process waiting on the other): end the workers too
            os.killpg(launch.pid, signal.SIGKILL)
            raise
        return subprocess.CompletedProcess(command, launch.returncode, out, err)

    whole = torchrun("-m", "petdream", *args, "--output", tmp_path / "whole")
    assert whole.returncode == 0, whole.stderr
    args += ["--output", tmp_path / "bruno"]

    cancelled = torchrun(tmp_path / "one_process_fails.py", *args, CANCEL_AFTER="1")
    assert cancelled.returncode != 0
    assert cancelled.stderr.count("cancelled at step 1; continue with the same command and --resume.") == 1
    assert sorted(p.name for p in checkpoints.iterdir()) == ["step-000001"]

    failed = torchrun(tmp_path / "one_process_fails.py", *args, "--resume", OUT_OF_MEMORY_AT="2",
                      WAIT_FOR=str(checkpoints / "step-000002"))
    assert failed.returncode != 0
    assert ("error: Out of GPU memory at step 3 on GPU 1 of 2. With several GPUs PetDream cannot retry one GPU's "
            "step with a smaller batch.") in failed.stderr
    assert f"The last checkpoint is kept: {checkpoints / 'step-000002'}." in failed.stderr
    assert not (tmp_path / "bruno" / "petdream.json").exists()

    resumed = torchrun("-m", "petdream", *args, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stderr.count("Resuming from step 2") == 1  # said once, by the first process
    assert resumed.stdout.count("trained bruno (lora, preset tiny, 5 photos, 4 steps)") == 1
    pipeline = StableDiffusionPipeline.from_pretrained(tiny.base_model, safety_checker=None)
    pipeline.load_lora_weights(tmp_path / "bruno")  # plain diffusers: no DDP "module." left in the keys
    assert pipeline.get_list_adapters() == {"unet": ["default_0"]}
    expected, ours = (load_file(tmp_path / run / "pytorch_lora_weights.safetensors") for run in ("whole", "bruno"))
    assert expected.keys() == ours.keys() and all(torch.equal(expected[k], ours[k]) for k in ours)

    # A NaN loss on one process's batch alone: both stop at that step (the other one is not left waiting in
    # the gradient exchange, which hangs on GPUs), with the reason, and no checkpoint to repeat it from.
    diverged = torchrun(tmp_path / "one_process_fails.py", *args[:-1], tmp_path / "diverged", NAN_AT="3")
    assert diverged.returncode != 0
    assert ("error: The loss became NaN or infinite on another GPU at step 3: training diverged."
            in diverged.stderr), diverged.stderr
    assert "Connection closed" not in diverged.stderr and not (tmp_path / "diverged" / "checkpoints").exists()
