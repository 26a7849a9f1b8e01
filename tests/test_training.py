"""DreamBooth training on the tiny profile: outputs, events, checkpoints, resume, guard rails."""

import errno
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from pet_factory import make_full_pet
from photo_factory import make_photo
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from conftest import REPO
from petdream.petmodel import PetModel
from petdream.photos import intake
from petdream.training import (
    Cancelled,
    CheckpointSaved,
    DreamBoothTrainer,
    Failed,
    Finished,
    Note,
    Progress,
    Resumed,
    Sample,
    TrainingConfig,
    choose_trigger,
    new_pet,
)
from petdream.training.checkpoints import Checkpoints

FAST = dict(steps=6, checkpoint_every=3, num_class_images=2, class_image_steps=2, sample_steps=2)
THP_MODE = Path("/sys/kernel/mm/transparent_hugepage/enabled")  # the kernel's transparent huge page policy


@pytest.fixture(scope="module")
def photos(tiny):
    """Four synthetic photos, already at the tiny resolution (intake's output)."""
    return intake([(f"p{i}.png", _png(make_photo(i, (200, 160)))) for i in range(4)], resolution=tiny.resolution).accepted


def _png(image):
    import io

    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def make_trainer(tiny, photos, data_dir, output, name="Bruno", init_model=None, device="cpu", lock_dir=None,
                 **overrides):
    pet, _ = new_pet(name, "dog")
    config = TrainingConfig.preset("tiny", **{**FAST, **overrides})
    return DreamBoothTrainer(tiny, photos, pet, output, config, data_dir=data_dir, device=device, init_model=init_model,
                             lock_dir=lock_dir)  # None: the machine's (in tests, each test process's: conftest)


def run_all(trainer, resume=False):
    return list(trainer.run(resume=resume))


def weights(folder):
    return load_file(folder / "pytorch_lora_weights.safetensors")


def same_weights(a, b) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def slow_checkpoint_writes(monkeypatch, seconds):
    """Each checkpoint's weights take `seconds` longer to reach the disk (on the writer's thread)."""
    from petdream.training import checkpoints

    real_save_file = checkpoints.save_file

    def slow_save_file(tensors, path):
        time.sleep(seconds)
        return real_save_file(tensors, path)

    monkeypatch.setattr(checkpoints, "save_file", slow_save_file)


# -- configuration and triggers --------------------------------------------------------------


def test_paper_preset_is_the_papers_recipe():
    paper = TrainingConfig.preset("paper")
    assert (paper.method, paper.learning_rate, paper.steps, paper.batch_size, paper.gradient_accumulation) == (
        "full", 5e-6, 300, 2, 2)
    assert paper.mixed_precision == "fp16" and paper.gradient_checkpointing and paper.optimizer == "adamw8bit"
    assert not paper.prior_preservation and not paper.random_flip  # diffusers' DreamBooth script, which it ran


def test_presets_can_be_overridden_and_bad_values_are_refused():
    assert TrainingConfig.preset("quick", steps=10, rank=None).steps == 10
    assert TrainingConfig.preset("quick").prior_preservation
    with pytest.raises(ValueError, match="unknown preset 'fast'; choose one of paper, quick, tiny"):
        TrainingConfig.preset("fast")
    with pytest.raises(ValueError, match="method must be one of lora, full; got 'dora'"):
        TrainingConfig(method="dora")
    with pytest.raises(ValueError, match="resolution must be a multiple of 8"):
        TrainingConfig(resolution=100)
    with pytest.raises(ValueError, match="checkpoint_every must be at least 1, got 0"):
        TrainingConfig(checkpoint_every=0)
    with pytest.raises(ValueError, match="sample_every must be 0 .samples only at the end. or more, got -1"):
        TrainingConfig(sample_every=-1)
    with pytest.raises(ValueError, match="num_class_images must be at least 1 with prior preservation, got 0"):
        TrainingConfig(prior_preservation=True, num_class_images=0)
    with pytest.raises(ValueError, match="max_grad_norm must be positive, got -1"):
        TrainingConfig(max_grad_norm=-1)
    for name in ("lr_warmup_steps", "prior_loss_weight", "offset_noise"):
        with pytest.raises(ValueError, match=f"{name} must be 0 or more, got -1"):
            TrainingConfig(**{name: -1})
    for name in ("lora_alpha", "snr_gamma"):
        with pytest.raises(ValueError, match=rf"{name} must be positive \(or left out\), got 0"):
            TrainingConfig(**{name: 0})
    assert TrainingConfig(prior_preservation=False, num_class_images=0).num_class_images == 0


@pytest.mark.parametrize(
    "name, trigger, why",
    [
        ("Bruno", "bruno", None),
        ("Luna", "luna", None),
        ("Pepper", "ohwx", "'pepper' is also a common word, so the model would draw a pepper"),
        ("Mr. Whiskers", "ohwx", "'mrwhiskers' splits into"),
        ("小黑", "ohwx", "has no Latin letters"),
        ("Kitty", "ohwx", "'kitty' is also a common word, so the model would draw a kitty"),
        ("Pizza", "ohwx", "the model would draw a pizza"),
        ("K9", "ohwx", "the name 'K9' has digits, which the text encoder reads as numbers"),
        ("R2-D2", "ohwx", "has digits"),
        ("Bo", "ohwx", "'bo' is too short to tell the pet apart from other words"),
        ("Sks", "ohwx", "the text encoder already reads 'sks' as a rifle"),
        ("Max", "max", None),
    ],
)
def test_trigger_is_the_name_unless_it_would_draw_the_wrong_thing(name, trigger, why):
    from petdream.models.tiny import clip_tokenizer

    chosen, reason = choose_trigger(name, clip_tokenizer())
    assert chosen == trigger
    assert (reason is None) if why is None else why in reason


def test_new_pet_keeps_name_and_trigger_and_says_why():
    pet, note = new_pet("Pepper", " Dog ")
    assert (pet.name, pet.trigger, pet.class_noun, pet.instance_prompt) == ("Pepper", "ohwx", "dog", "a photo of ohwx dog")
    assert note.startswith('Pepper will be called "ohwx" in prompts')
    assert new_pet("Pepper", "dog", trigger="pep")[0].trigger == "pep"
    with pytest.raises(ValueError, match=r"Say what kind of animal Rex is \(the class noun: dog, cat, ...\)"):
        new_pet("Rex", "  ")  # none is chosen for them: a cat trained as a "dog" draws a dog


# -- a whole run -----------------------------------------------------------------------------


def test_a_run_emits_events_in_order_and_writes_a_pet_model(tiny, photos, data_dir, tmp_path):
    events = run_all(make_trainer(tiny, photos, data_dir, tmp_path / "bruno", sample_every=2))
    kinds = [type(e) for e in events]
    assert kinds[-1] is Finished and Failed not in kinds
    progress = [e for e in events if isinstance(e, Progress)]
    assert [p.step for p in progress] == [1, 2, 3, 4, 5, 6] and progress[-1].eta_seconds == 0
    assert all(p.total_steps == 6 and p.loss > 0 and p.learning_rate == 1e-3 and p.steps_per_second > 0 for p in progress)
    assert [e.step for e in events if isinstance(e, Sample)] == [2, 4, 6]
    assert [e.step for e in events if isinstance(e, CheckpointSaved)] == [3]
    sample = [e for e in events if isinstance(e, Sample)][-1]
    assert sample.prompts == ["a photo of bruno dog", "a photo of bruno dog on a sunny beach"]
    assert all(image.size == (128, 128) for image in sample.images)

    model = events[-1].model
    assert isinstance(model, PetModel) and model.method == "lora" and model.pet.trigger == "bruno"
    meta = json.loads((model.path / "petdream.json").read_text())
    training = meta["training"]
    for key in ("learning_rate", "rank", "batch_size", "gradient_accumulation", "prior_preservation", "seed",
                "steps", "seconds", "final_loss", "instance_prompt", "class_prompt", "resolution"):
        assert key in training, key
    assert training["steps_done"] == 6 and training["final_loss"] == progress[-1].loss and training["processes"] == 1
    assert meta["base_model"] == {"id": "petdream/tiny-sd-v1", "revision": None, "commit": None}  # built here
    assert [p["sha256"] for p in meta["photos"]] == [p.sha256 for p in photos]
    assert (model.path / "loss.png").stat().st_size > 1000
    assert (model.path / "samples" / "grid.png").is_file()
    assert not (model.path / "checkpoints").exists()  # only an unfinished run needs them


def test_progress_gives_the_learning_rate_each_step_used(tiny, photos, data_dir, tmp_path):
    events = run_all(make_trainer(tiny, photos, data_dir, tmp_path / "pet", steps=6, learning_rate=1e-3,
                                  lr_scheduler="constant_with_warmup", lr_warmup_steps=4))
    rates = [e.learning_rate for e in events if isinstance(e, Progress)]
    assert rates == pytest.approx([0, 2.5e-4, 5e-4, 7.5e-4, 1e-3, 1e-3])  # warm-up's first step trains at 0


def test_steps_per_second_leave_out_the_first_step_which_warms_up(tiny, photos, data_dir, tmp_path, monkeypatch):
    real_step, calls = DreamBoothTrainer._step, []

    def slow_first_step(self, *args):
        calls.append(1)
        if len(calls) == 1:
            time.sleep(5)  # as a compiling first step does
        return real_step(self, *args)

    monkeypatch.setattr(DreamBoothTrainer, "_step", slow_first_step)
    progress = [e for e in run_all(make_trainer(tiny, photos, data_dir, tmp_path / "pet", steps=6))
                if isinstance(e, Progress)]
    assert progress[0].steps_per_second < 1 / 5
    # Counting the first step, 6 steps could not beat 6 / 5 s; the later steps' own pace does
    assert progress[-1].steps_per_second > 6 / 5 and progress[-2].eta_seconds == pytest.approx(
        1 / progress[-2].steps_per_second)


def test_same_seed_same_weights_other_seed_other_weights(tiny, photos, data_dir, tmp_path):
    run_all(make_trainer(tiny, photos, data_dir, tmp_path / "a"))
    run_all(make_trainer(tiny, photos, data_dir, tmp_path / "b"))
    run_all(make_trainer(tiny, photos, data_dir, tmp_path / "c", seed=1))
    assert same_weights(weights(tmp_path / "a"), weights(tmp_path / "b"))
    assert not same_weights(weights(tmp_path / "a"), weights(tmp_path / "c"))


def test_class_images_are_generated_once_per_base_model_and_class(tiny, photos, data_dir, tmp_path):
    from petdream.training.data import class_images_folder

    run_all(make_trainer(tiny, photos, data_dir, tmp_path / "one", num_class_images=3))
    folder = class_images_folder(data_dir, tiny.base_model_id, None, "dog", 128, FAST["class_image_steps"])
    stamps = {p.name: p.stat().st_mtime_ns for p in folder.glob("*.png")}
    assert len(stamps) >= 3
    def notes(events):
        return [event.text for event in events if isinstance(event, Note) and "a photo of dog" in event.text]

    reused = notes(run_all(make_trainer(tiny, photos, data_dir, tmp_path / "two", num_class_images=3)))
    assert {p.name: p.stat().st_mtime_ns for p in folder.glob("*.png")} == stamps
    assert reused == ['Reusing the 3 pictures of "a photo of dog" made before: they keep the model knowing what '
                      'any dog looks like, not only Bruno.']  # not "Preparing": nothing is drawn
    # Drawn in more sampling steps, they are other pictures: not taken from this cache
    drawn = notes(run_all(make_trainer(tiny, photos, data_dir, tmp_path / "three", num_class_images=3,
                                       class_image_steps=3)))
    assert len(list(folder.parent.glob("dog-128px-3steps/*.png"))) == 3
    assert {p.name: p.stat().st_mtime_ns for p in folder.glob("*.png")} == stamps
    assert drawn[0].startswith('Preparing 3 pictures of "a photo of dog" (kept for next time): ')


def test_the_final_sample_is_what_plain_diffusers_draws_with_the_saved_lora(tiny, photos, data_dir, tmp_path):
    """Samples are drawn from cached prompt embeddings (the text encoder is freed during LoRA
    training); they must still show exactly what the saved model draws from the prompt."""
    import numpy as np
    from diffusers import DPMSolverMultistepScheduler, StableDiffusionPipeline
    from PIL import Image

    run_all(make_trainer(tiny, photos, data_dir, tmp_path / "pet", prior_preservation=False, sample_steps=4))
    pipeline = StableDiffusionPipeline.from_pretrained(tiny.base_model, safety_checker=None)
    pipeline.scheduler = DPMSolverMultistepScheduler.from_config(pipeline.scheduler.config, algorithm_type="dpmsolver++")
    pipeline.set_progress_bar_config(disable=True)
    pipeline.load_lora_weights(tmp_path / "pet")
    for i, prompt in enumerate(["a photo of bruno dog", "a photo of bruno dog on a sunny beach"]):
        sample = Image.open(next((tmp_path / "pet" / "samples").glob(f"{i:02d}-*.png")))
        drawn = pipeline(prompt, num_inference_steps=4, height=128, width=128,
                         generator=torch.Generator("cpu").manual_seed(i)).images[0]  # sample i has seed i
        assert np.abs(np.asarray(drawn, dtype=int) - np.asarray(sample, dtype=int)).max() <= 2, prompt


def test_a_pet_model_records_the_commit_of_a_base_model_from_the_hubs_cache(tiny, photos, data_dir, tmp_path):
    import dataclasses

    commit = "0123456789abcdef0123456789abcdef01234567"
    snapshot = tmp_path / "hub" / "models--me--sd15" / "snapshots" / commit  # as a download leaves it
    shutil.copytree(tiny.base_model, snapshot)
    profile = dataclasses.replace(tiny, name="sd15", base_model=str(snapshot), base_model_id="me/sd15")
    model = make_trainer(profile, photos, data_dir, tmp_path / "bruno", steps=2, prior_preservation=False,
                         checkpoint_every=100).train()
    assert json.loads((model.path / "petdream.json").read_text())["base_model"] == {
        "id": "me/sd15", "revision": None, "commit": commit}
    assert PetModel.load(model.path).base_model_commit == commit


def test_trains_after_accelerate_was_set_up_differently_in_the_same_process(tiny, photos, data_dir, tmp_path):
    """The app trains pet after pet in one process; accelerate's process-wide settings from an
    earlier run (here bf16, where this run trains in fp32) must not make the next one fail."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state()  # whatever earlier tests left: this process now says bf16
    Accelerator(mixed_precision="bf16", cpu=True)
    events = run_all(make_trainer(tiny, photos, data_dir, tmp_path / "pet", prior_preservation=False))
    assert isinstance(events[-1], Finished), events[-1]


def test_photos_are_encoded_one_at_a_time_on_the_cpu_to_the_same_latents(tiny, photos):
    """Four photos and their flips at once would set a CPU run's peak memory: the VAE encoder's
    activations, ~40 MB at the tiny profile's 128 px and ~2 GB at SD's 512."""
    from diffusers import AutoencoderKL

    from petdream.training.data import _to_tensor, encode_images

    vae = AutoencoderKL.from_pretrained(Path(tiny.base_model) / "vae")
    batches, encode = [], vae.encode
    vae.encode = lambda pixels: (batches.append(pixels.shape[0]), encode(pixels))[1]
    cache = encode_images(vae, [p.image for p in photos])
    assert batches == [2, 2, 2, 2]  # each photo with its mirror image
    assert cache.mean.shape == (4, 2, 4, tiny.resolution // 8, tiny.resolution // 8)
    pixels = torch.stack([_to_tensor(p.image) for p in photos])
    with torch.no_grad():
        at_once = encode(torch.cat([pixels, pixels.flip(-1)])).latent_dist
    assert torch.allclose(cache.mean[:, 0], at_once.mean[:4], atol=1e-5)
    assert torch.allclose(cache.mean[:, 1], at_once.mean[4:], atol=1e-5)
    assert torch.allclose(cache.std[:, 1], at_once.std[4:], atol=1e-5)


def test_class_images_are_the_same_whether_generated_in_batches_or_one_by_one(tiny, tmp_path):
    import numpy as np

    from petdream.models.pipeline import load_pipeline
    from petdream.training.data import ensure_class_images

    pipeline = load_pipeline(tiny.base_model, device="cpu", dtype=torch.float32)
    pipeline.set_progress_bar_config(disable=True)
    (tmp_path / "one").mkdir()
    killed, writing = tmp_path / "one" / ".0001-1234-5678.tmp", tmp_path / "one" / ".0002-4321-8765.tmp"
    for staged in (killed, writing):
        staged.write_bytes(b"half a PNG")
    os.utime(killed, (time.time() - 7200,) * 2)  # left by a run killed two hours ago
    one_by_one = ensure_class_images(pipeline, tmp_path / "one", "a photo of dog", 3, 128, 2, batch_size=1)
    assert not killed.exists() and writing.exists()  # another run's, being written now, is left alone
    batched = ensure_class_images(pipeline, tmp_path / "batched", "a photo of dog", 3, 128, 2, batch_size=2)
    assert len(batched) == 3 and sorted(p.name for p in (tmp_path / "batched").iterdir()) == [
        "0000.png", "0001.png", "0002.png"]
    for single, in_batch in zip(one_by_one, batched):
        difference = np.abs(np.asarray(single, dtype=int) - np.asarray(in_batch, dtype=int))
        assert difference.max() <= 2  # batched convolutions may round differently, nothing more
    assert np.abs(np.asarray(batched[0], dtype=int) - np.asarray(batched[1], dtype=int)).mean() > 5

    # Out of GPU memory for a batch (a small GPU): the same images, drawn one by one.
    def no_room_for_batches(*args, generator, **kwargs):
        if len(generator) > 1:
            torch.randn(4, generator=generator[0])  # the generators had started drawing: the retry needs new ones
            raise torch.OutOfMemoryError("CUDA out of memory")
        return type(pipeline).__call__(pipeline, *args, generator=generator, **kwargs)

    small_gpu = ensure_class_images(no_room_for_batches, tmp_path / "small", "a photo of dog", 3, 128, 2, batch_size=2)
    assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(one_by_one, small_gpu))


@pytest.mark.parametrize("options", [
    dict(prior_preservation=False),
    dict(snr_gamma=5.0, offset_noise=0.05),
    dict(batch_size=2, gradient_accumulation=2, lr_scheduler="cosine", lr_warmup_steps=2),
    dict(gradient_checkpointing=True, optimizer="adamw8bit"),
])
def test_training_options_run_to_the_end(tiny, photos, data_dir, tmp_path, options):
    events = run_all(make_trainer(tiny, photos, data_dir, tmp_path / "pet", **options))
    assert isinstance(events[-1], Finished), events[-1]
    notes = [e.text for e in events if isinstance(e, Note)]
    if options.get("optimizer") == "adamw8bit":
        assert "8-bit AdamW is made for CUDA GPUs (on a CPU it runs ~28x slower); using AdamW (32-bit state) on the CPU." in notes
        assert events[-1].model.training["optimizer_used"] == "AdamW"  # what ran, beside what was asked


def test_micro_batches_in_one_pass_give_the_weights_of_one_after_another(tiny, photos, data_dir, tmp_path):
    """On a GPU a step's micro-batches run as one pass (fewer kernel launches); each still draws
    from its own generator, so the weights are those of accumulating them one by one."""
    options = dict(batch_size=2, gradient_accumulation=2, snr_gamma=5.0, offset_noise=0.05, steps=6)
    apart = make_trainer(tiny, photos, data_dir, tmp_path / "apart", **options)
    apart.fuse_micro_batches = False
    fused = make_trainer(tiny, photos, data_dir, tmp_path / "fused", **options)
    fused.fuse_micro_batches = True
    losses = {}
    for name, trainer in (("apart", apart), ("fused", fused)):
        losses[name] = [e.loss for e in run_all(trainer) if isinstance(e, Progress)]
    assert losses["apart"] == pytest.approx(losses["fused"], rel=1e-4)
    a, b = weights(tmp_path / "apart"), weights(tmp_path / "fused")
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-3, atol=1e-5)
    other_seed = make_trainer(tiny, photos, data_dir, tmp_path / "other", seed=1, **options)
    run_all(other_seed)
    assert not torch.allclose(a[next(iter(a))], weights(tmp_path / "other")[next(iter(a))], atol=1e-5)


def test_every_micro_batch_of_every_step_draws_from_its_own_seed():
    from petdream.training.trainer import _step_seed

    seeds = {_step_seed(7, process, step, micro) for process in range(2) for step in range(4) for micro in range(300)}
    assert len(seeds) == 2 * 4 * 300  # accumulation past 101 once made step s, micro 101 = step s+1, micro 0


@pytest.mark.skipif(not THP_MODE.exists() or "[madvise]" not in THP_MODE.read_text(),
                    reason="needs Linux with transparent huge pages on request (madvise)")
@pytest.mark.parametrize("setting, huge", [(None, True), ("0", False)])
def test_large_cpu_tensors_get_huge_pages_unless_the_person_says_otherwise(setting, huge):
    """torch reads THP_MEM_ALLOC_ENABLE once, at its first large CPU allocation, so importing
    PetDream sets it, before anything imports torch; a setting of the person's own is kept."""
    env = {key: value for key, value in os.environ.items() if key != "THP_MEM_ALLOC_ENABLE"}
    if setting is not None:
        env["THP_MEM_ALLOC_ENABLE"] = setting
    code = ("import re, petdream, torch; tensor = torch.ones(64 << 20, dtype=torch.uint8); "
            "print(re.search(r'AnonHugePages:\\s+(\\d+)', open('/proc/self/smaps_rollup').read()).group(1))")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert (int(result.stdout) > 0) == huge


def test_text_encoder_lora_is_saved_for_plain_diffusers(tiny, photos, data_dir, tmp_path):
    from diffusers import StableDiffusionPipeline

    events = run_all(make_trainer(tiny, photos, data_dir, tmp_path / "pet", train_text_encoder=True))
    keys = weights(tmp_path / "pet").keys()
    assert any(k.startswith("text_encoder.") for k in keys) and any(k.startswith("unet.") for k in keys)
    pipeline = StableDiffusionPipeline.from_pretrained(tiny.base_model, safety_checker=None)
    pipeline.load_lora_weights(events[-1].model.path)
    assert set(pipeline.get_list_adapters()) == {"unet", "text_encoder"}


def test_full_fine_tune_writes_a_pipeline_the_generator_draws_with(tiny, photos, data_dir, tmp_path, generator):
    events = run_all(make_trainer(tiny, photos, data_dir, tmp_path / "full", method="full", learning_rate=1e-3))
    model = events[-1].model
    assert model.method == "full" and (model.path / "pipeline" / "unet").is_dir()
    assert not model.lora_weights.exists()
    trained = generator.generate("a photo of bruno dog", seed=0, steps=3, pet=model).images[0]
    base = generator.generate("a photo of bruno dog", seed=0, steps=3).images[0]
    assert trained.tobytes() != base.tobytes()


def test_a_compiled_run_saves_a_lora_plain_diffusers_loads_and_samples_without_recompiling(
        tiny, photos, data_dir, tmp_path, monkeypatch):
    """`compile=True` trains a torch.compile'd UNet. Its weights must be saved under their own names
    (a compiled module calls them `_orig_mod.*`), and samples must come from the plain UNet: a
    compiled one recompiles for inference, which took 135 s for one sample on an H200."""
    real_compile, graphs_compiled_with_grad = torch.compile, []

    def compile_recording(model):
        def backend(graph, example_inputs):  # dynamo's eager backend, noting what each graph is for
            graphs_compiled_with_grad.append(torch.is_grad_enabled())
            return graph.forward

        return real_compile(model, backend=backend)

    monkeypatch.setattr(torch, "compile", compile_recording)
    from torch._inductor.runtime.cache_dir_utils import cache_dir, default_cache_dir

    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", default_cache_dir())  # what importing diffusers leaves there
    options = dict(prior_preservation=False, steps=3)
    events = run_all(make_trainer(tiny, photos, data_dir, tmp_path / "compiled", compile=True, **options))
    assert isinstance(events[-1], Finished), events[-1]
    assert graphs_compiled_with_grad and all(graphs_compiled_with_grad)  # training graphs only
    assert Path(cache_dir()).is_relative_to(data_dir)  # compiled kernels outlive a restart with the data dir
    run_all(make_trainer(tiny, photos, data_dir, tmp_path / "eager", **options))
    compiled, eager = weights(tmp_path / "compiled"), weights(tmp_path / "eager")
    assert compiled.keys() == eager.keys()
    assert all(torch.allclose(compiled[k], eager[k], atol=1e-5) for k in eager)

    from diffusers import StableDiffusionPipeline

    pipeline = StableDiffusionPipeline.from_pretrained(tiny.base_model, safety_checker=None)
    pipeline.load_lora_weights(tmp_path / "compiled")
    assert pipeline.get_list_adapters()["unet"]


# -- interruptions -----------------------------------------------------------------------------


def test_cancel_from_another_thread_stops_within_a_step_and_resume_matches(tiny, photos, data_dir, tmp_path):
    run_all(make_trainer(tiny, photos, data_dir, tmp_path / "whole", steps=8))
    trainer = make_trainer(tiny, photos, data_dir, tmp_path / "cut", steps=8)
    events = []
    for event in trainer.run():
        events.append(event)
        if isinstance(event, Progress) and event.step == 2:
            threading.Thread(target=trainer.cancel).start()
            time.sleep(0.2)
    cancelled, saved = events[-1], events[-2]
    assert isinstance(cancelled, Cancelled) and cancelled.step in (2, 3)
    assert cancelled.checkpoint.name == f"step-{cancelled.step:06d}"
    assert isinstance(saved, CheckpointSaved) and saved.path == cancelled.checkpoint  # told, as every checkpoint is
    assert not (tmp_path / "cut" / "petdream.json").exists()

    again = make_trainer(tiny, photos, data_dir, tmp_path / "cut", steps=8)
    with pytest.raises(Exception):  # without --resume the unfinished run is not thrown away
        again.train()
    resumed = run_all(make_trainer(tiny, photos, data_dir, tmp_path / "cut", steps=8), resume=True)
    assert f"Resuming from step {cancelled.step}" in " ".join(e.text for e in resumed if isinstance(e, Note))
    [restored] = [e for e in resumed if isinstance(e, Resumed)]  # the steps before, for a chart of the whole run
    assert restored == Resumed(cancelled.step, [e.loss for e in events if isinstance(e, Progress)][:cancelled.step])
    assert [e.step for e in resumed if isinstance(e, Progress)][0] == cancelled.step + 1
    assert same_weights(weights(tmp_path / "whole"), weights(tmp_path / "cut"))


def test_a_cancel_while_class_images_are_drawn_stops_there_keeping_them_and_no_untrained_checkpoint(
        tiny, photos, tmp_path):
    """Drawing the class images takes minutes on a small GPU: a cancel stops it before the next picture.
    No step is done, so there is nothing to checkpoint; the pictures drawn so far stay in the cache."""
    data_dir = tmp_path / "data"
    trainer = make_trainer(tiny, photos, data_dir, tmp_path / "pet", num_class_images=40, class_image_steps=10)

    def cancel_once_the_first_is_drawn():
        deadline = time.monotonic() + 120
        while not list(data_dir.glob("class-images/*/*/*.png")) and time.monotonic() < deadline:
            time.sleep(0.01)
        trainer.cancel()

    events = []
    for event in trainer.run():
        events.append(event)
        if isinstance(event, Note) and event.text.startswith("Preparing 40 pictures"):
            threading.Thread(target=cancel_once_the_first_is_drawn).start()
    assert isinstance(events[-1], Cancelled) and (events[-1].step, events[-1].checkpoint) == (0, None)
    assert not any(isinstance(e, (Progress, CheckpointSaved)) for e in events)
    assert not list((tmp_path / "pet").glob("checkpoints/step-*"))
    cached = list(data_dir.glob("class-images/*/*/*"))
    assert 0 < len(cached) < 40 and all(path.suffix == ".png" for path in cached)  # whole pictures only

    events = []
    for event in make_trainer(tiny, photos, data_dir, tmp_path / "pet", num_class_images=40,
                              class_image_steps=10).run():
        events.append(event)
        if isinstance(event, Progress):  # once the pictures are drawn and a step is done
            break
    assert isinstance(events[-1], Progress) and len(list(data_dir.glob("class-images/*/*/*.png"))) == 40


def cancelled_at(trainer, step):
    """Run `trainer`, cancelling it once `step` is done; its events."""
    events = []
    for event in trainer.run():
        events.append(event)
        if isinstance(event, Progress) and event.step == step:
            trainer.cancel()
    assert isinstance(events[-1], Cancelled) and events[-1].step == step
    return events


def test_a_damaged_newest_checkpoint_is_set_aside_and_the_run_resumes_from_the_one_before(tiny, photos, data_dir,
                                                                                         tmp_path):
    run_all(make_trainer(tiny, photos, data_dir, tmp_path / "whole", steps=8))
    cancelled_at(make_trainer(tiny, photos, data_dir, tmp_path / "cut", steps=8), 5)  # checkpoints at steps 3 and 5
    damaged = tmp_path / "cut" / "checkpoints" / "step-000005" / "optimizer.pt"
    damaged.write_bytes(damaged.read_bytes()[:100])  # cut short, as by a failing disk
    resumed = run_all(make_trainer(tiny, photos, data_dir, tmp_path / "cut", steps=8), resume=True)
    notes = " ".join(e.text for e in resumed if isinstance(e, Note))
    assert "The checkpoint step-000005 cannot be read (" in notes and "set aside as unreadable-step-000005" in notes
    assert "Resuming from step 3 (step-000003)" in notes
    assert isinstance(resumed[-1], Finished)
    assert same_weights(weights(tmp_path / "whole"), weights(tmp_path / "cut"))


def test_a_run_whose_checkpoints_are_all_damaged_fails_saying_to_start_again(tiny, photos, data_dir, tmp_path):
    cancelled_at(make_trainer(tiny, photos, data_dir, tmp_path / "pet", steps=8), 4)
    for weights_file in (tmp_path / "pet" / "checkpoints").glob("step-*/trainable.safetensors"):
        weights_file.write_bytes(b"not safetensors")
    events = run_all(make_trainer(tiny, photos, data_dir, tmp_path / "pet", steps=8), resume=True)
    failed = events[-1]
    assert isinstance(failed, Failed) and failed.resumable and failed.checkpoint is None
    assert failed.reason.startswith(f"None of the checkpoints in {tmp_path / 'pet' / 'checkpoints'} can be read (")
    assert failed.reason.endswith("Resume to train again from step 0, or delete the folder.")
    assert sorted(p.name for p in (tmp_path / "pet" / "checkpoints").iterdir()) == [
        "unreadable-step-000003", "unreadable-step-000004"]  # kept, out of the way
    again = run_all(make_trainer(tiny, photos, data_dir, tmp_path / "pet", steps=8), resume=True)
    assert "No checkpoint to resume from; starting at step 0." in [e.text for e in again if isinstance(e, Note)]
    assert isinstance(again[-1], Finished)


def test_a_checkpoint_that_cannot_be_read_for_want_of_memory_is_not_taken_for_damaged(tiny, photos, data_dir, tmp_path,
                                                                                      monkeypatch):
    cancelled_at(make_trainer(tiny, photos, data_dir, tmp_path / "pet", steps=8), 4)
    real_load = torch.load

    def out_of_memory(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(torch, "load", out_of_memory)
    with pytest.raises(torch.OutOfMemoryError):
        run_all(make_trainer(tiny, photos, data_dir, tmp_path / "pet", steps=8), resume=True)
    monkeypatch.setattr(torch, "load", real_load)
    assert sorted(p.name for p in (tmp_path / "pet" / "checkpoints").iterdir()) == ["step-000003", "step-000004"]


def test_the_wall_time_recorded_counts_every_session_of_a_resumed_run(tiny, photos, data_dir, tmp_path):
    cancelled_at(make_trainer(tiny, photos, data_dir, tmp_path / "pet", steps=8), 5)
    first_session = json.loads((tmp_path / "pet" / "checkpoints" / "step-000005" / "state.json").read_text())
    before = first_session["loop_state"]["seconds"]  # set-up and 5 steps
    started = time.monotonic()
    finished = run_all(make_trainer(tiny, photos, data_dir, tmp_path / "pet", steps=8), resume=True)[-1]
    second_session = time.monotonic() - started
    recorded = PetModel.load(tmp_path / "pet").training["seconds"]
    assert before > 0 and before < recorded <= round(before + second_session, 1) + 0.1
    assert round(finished.seconds, 1) == recorded


def test_resume_refuses_a_checkpoint_of_other_settings(tiny, photos, data_dir, tmp_path):
    trainer = make_trainer(tiny, photos, data_dir, tmp_path / "pet", steps=8)
    for event in trainer.run():
        if isinstance(event, CheckpointSaved):
            trainer.cancel()
    events = run_all(make_trainer(tiny, photos, data_dir, tmp_path / "pet", steps=8, learning_rate=5e-4), resume=True)
    assert isinstance(events[-1], Failed) and events[-1].reason.startswith(  # what differs, so it can be put back
        f"The checkpoint {events[-1].checkpoint} was made with learning_rate 0.001 (now 0.0005). Resuming it would "
        "mix two runs.")
    events = run_all(make_trainer(tiny, photos[:3], data_dir, tmp_path / "pet", steps=8, name="Rex", random_flip=False),
                     resume=True)
    assert ("was made with random_flip True (now False); instance prompt 'a photo of bruno dog' (now 'a photo of rex "
            "dog'); other photos (1 of its 4 are not among these). Resuming") in events[-1].reason


def test_a_checkpoint_resumes_only_under_as_many_processes(tiny, photos, data_dir, tmp_path, monkeypatch):
    """Each process draws its own images: two processes' steps are not one process's."""
    one = make_trainer(tiny, photos, data_dir, tmp_path / "pet").fingerprint
    monkeypatch.setenv("WORLD_SIZE", "2")  # what torchrun / accelerate launch set
    assert make_trainer(tiny, photos, data_dir, tmp_path / "pet").fingerprint != one


def test_a_run_stopped_while_a_checkpoint_is_written_leaves_it_whole(tiny, photos, data_dir, tmp_path, monkeypatch):
    """The caller stops iterating (the app closed the run) mid-write: the write still lands whole, and
    the device is free for the next training."""
    slow_checkpoint_writes(monkeypatch, 1.0)
    run = make_trainer(tiny, photos, data_dir, tmp_path / "pet", steps=8).run()
    for event in run:
        if isinstance(event, Progress) and event.step == 4:  # step 3's checkpoint is being written
            break
    run.close()
    assert sorted(p.name for p in (tmp_path / "pet" / "checkpoints").iterdir()) == ["step-000003"]
    monkeypatch.undo()
    events = run_all(make_trainer(tiny, photos, data_dir, tmp_path / "pet", steps=8), resume=True)
    assert isinstance(events[-1], Finished) and "Resuming from step 3" in " ".join(
        e.text for e in events if isinstance(e, Note))


def test_a_checkpoint_of_channels_last_weights_resumes_them_and_their_optimizer_state_as_they_were(tmp_path):
    """On CUDA the UNet's convolutions are channels_last, and the checkpoint stores the weights row-major
    (safetensors' layout). Resuming puts the values back without changing any tensor's layout; above
    all the optimizer's state must keep its parameters' layout (8-bit AdamW's kernels read both as flat
    memory), which copying every host tensor row-major would break."""
    from torch.optim.lr_scheduler import ConstantLR

    def make():
        torch.manual_seed(0)
        conv = torch.nn.Conv2d(4, 8, 3).to(memory_format=torch.channels_last)
        optimizer = torch.optim.AdamW(conv.parameters(), lr=0.1)
        return conv, optimizer, ConstantLR(optimizer, factor=1.0)

    conv, optimizer, schedule = make()
    conv(torch.randn(2, 4, 6, 6).to(memory_format=torch.channels_last)).square().sum().backward()
    optimizer.step()
    checkpoints = Checkpoints(tmp_path, keep=2)
    checkpoints.save(1, "fp", {}, [0.5], dict(conv.named_parameters()), optimizer, schedule)
    checkpoints.wait()

    fresh, fresh_optimizer, fresh_schedule = make()
    resumed = checkpoints.load(checkpoints.latest(), "fp", {}, dict(fresh.named_parameters()), fresh_optimizer,
                               fresh_schedule)
    assert resumed.step == 1 and resumed.losses == [0.5]
    assert torch.equal(fresh.weight, conv.weight) and fresh.weight.is_contiguous(memory_format=torch.channels_last)
    state = fresh_optimizer.state[fresh.weight]
    assert torch.equal(state["exp_avg"], optimizer.state[conv.weight]["exp_avg"])
    assert state["exp_avg"].stride() == fresh.weight.stride() == conv.weight.stride()


def test_checkpoints_keep_the_last_n(tiny, photos, data_dir, tmp_path):
    trainer = make_trainer(tiny, photos, data_dir, tmp_path / "pet", steps=9, checkpoint_every=2, checkpoints_kept=2)
    for event in trainer.run():
        if isinstance(event, Progress) and event.step == 7:
            trainer.cancel()
    names = sorted(p.name for p in (tmp_path / "pet" / "checkpoints").iterdir())
    assert names == ["step-000006", "step-000007"]


def test_killed_with_sigkill_resumes_to_the_same_weights(tiny, photos, data_dir, tmp_path, dreambench):
    """The CLI, killed -9 mid-run, resumed with --resume, ends where an uninterrupted run ends."""
    args = ["--profile", "tiny", "--photos", dreambench / "dog", "--name", "bruno", "--class-noun", "dog",
            "--steps", "40", "--checkpoint-every", "5", "--num-class-images", "2"]
    env = {**os.environ, "PETDREAM_DATA_DIR": str(data_dir), "OMP_NUM_THREADS": "1"}

    def train(output, *extra):
        command = [sys.executable, "-m", "petdream", "train", *map(str, args), "--output", str(output), *extra]
        return subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    whole = train(tmp_path / "whole")
    assert whole.wait(timeout=300) == 0, whole.stderr.read()

    victim = train(tmp_path / "killed")
    checkpoints = tmp_path / "killed" / "checkpoints"
    deadline = time.monotonic() + 300
    while not (checkpoints / "step-000010").is_dir():
        assert victim.poll() is None and time.monotonic() < deadline, "the run ended before it could be killed"
        time.sleep(0.02)
    victim.send_signal(signal.SIGKILL)
    assert victim.wait(timeout=30) == -signal.SIGKILL
    assert not (tmp_path / "killed" / "petdream.json").exists()
    assert Checkpoints(checkpoints, keep=2).latest() is not None

    resumed = train(tmp_path / "killed", "--resume")
    out, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    assert "Resuming from step" in err and "trained bruno" in out
    assert same_weights(weights(tmp_path / "whole"), weights(tmp_path / "killed"))


# -- training further (the feedback loop) --------------------------------------------------------


@pytest.fixture(scope="module")
def pet_a(tiny, photos, data_dir, tmp_path_factory):
    """A LoRA pet model trained from the base model: what further training starts from."""
    return make_trainer(tiny, photos, data_dir, tmp_path_factory.mktemp("further") / "a").train()


@pytest.fixture(scope="module")
def liked(tiny):
    """The pet's four photos plus a picture the person liked."""
    images = [make_photo(i, (200, 160)) for i in range(4)] + [make_photo(40, (160, 200))]
    return intake([(f"p{i}.png", _png(image)) for i, image in enumerate(images)], resolution=tiny.resolution).accepted


class _BeforeTheFirstStep(Exception):
    pass


def step_zero_weights(trainer):
    """The trainable weights as the run starts, copied as its first step begins (the run stops there)."""
    from unittest import mock

    start = {}

    def copy_and_stop(run, step, passes):
        start.update({name: weight.detach().clone() for name, weight in run.trainable.items()})
        raise _BeforeTheFirstStep

    with mock.patch.object(trainer, "_step", copy_and_stop), pytest.raises(_BeforeTheFirstStep):
        run_all(trainer)
    return start


def lora_loaded_by_diffusers(tiny, folder):
    """A pet model's LoRA as plain diffusers loads it, under the trainer's parameter names."""
    from diffusers import StableDiffusionPipeline

    pipeline = StableDiffusionPipeline.from_pretrained(tiny.base_model, safety_checker=None)
    pipeline.load_lora_weights(folder, adapter_name="default")
    return {f"{part}.{name}": parameter.detach() for part in ("unet", "text_encoder")
            for name, parameter in getattr(pipeline, part).named_parameters() if "lora_" in name}


def test_training_further_starts_from_the_init_models_lora(tiny, liked, data_dir, tmp_path, pet_a):
    start = step_zero_weights(make_trainer(tiny, liked, data_dir, tmp_path / "start", init_model=pet_a))
    assert same_weights(start, lora_loaded_by_diffusers(tiny, pet_a.path))
    fresh_start = step_zero_weights(make_trainer(tiny, liked, data_dir, tmp_path / "fresh-start"))
    assert fresh_start.keys() == start.keys() and not same_weights(fresh_start, start)

    further = make_trainer(tiny, liked, data_dir, tmp_path / "further", init_model=pet_a).train()
    fresh = make_trainer(tiny, liked, data_dir, tmp_path / "fresh").train()  # same seed, settings and photos
    assert not same_weights(weights(further.path), weights(pet_a.path))
    assert not same_weights(weights(further.path), weights(fresh.path))
    assert further.training["init_model"] == {
        "path": os.path.relpath(pet_a.path, further.path), "sha256": hashlib.sha256(pet_a.lora_weights.read_bytes()).hexdigest()}
    assert fresh.training["init_model"] is None
    assert [p["sha256"] for p in further.photos] == [p.sha256 for p in liked]


def test_training_further_continues_a_text_encoder_lora_too(tiny, photos, data_dir, tmp_path):
    a = make_trainer(tiny, photos, data_dir, tmp_path / "a", train_text_encoder=True, steps=2).train()
    start = step_zero_weights(make_trainer(tiny, photos, data_dir, tmp_path / "b", train_text_encoder=True,
                                           init_model=a))
    assert any(k.startswith("text_encoder.") for k in start) and any(k.startswith("unet.") for k in start)
    assert same_weights(start, lora_loaded_by_diffusers(tiny, a.path))


def test_full_fine_tune_further_starts_from_the_init_models_unet_and_text_encoder(tiny, photos, data_dir, tmp_path):
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextModel

    init = make_full_pet(tmp_path / "init", tiny, name="Bruno", trigger="bruno", class_noun="dog")
    text_encoder = CLIPTextModel.from_pretrained(init.pipeline_dir, subfolder="text_encoder")
    with torch.no_grad():  # as if it had trained the text encoder too
        for parameter in text_encoder.parameters():
            parameter.add_(0.01)
    text_encoder.save_pretrained(init.pipeline_dir / "text_encoder")
    init = PetModel.load(init.path)

    start = step_zero_weights(make_trainer(tiny, photos, data_dir, tmp_path / "further", method="full",
                                           train_text_encoder=True, init_model=init))
    expected = {f"unet.{k}": v for k, v in UNet2DConditionModel.from_pretrained(
        init.pipeline_dir, subfolder="unet").state_dict().items()}
    expected.update({f"text_encoder.{k}": v for k, v in CLIPTextModel.from_pretrained(
        init.pipeline_dir, subfolder="text_encoder").state_dict().items()})
    assert start.keys() <= expected.keys() and any(k.startswith("text_encoder.") for k in start)
    assert all(torch.equal(start[k], expected[k]) for k in start)
    base = UNet2DConditionModel.from_pretrained(tiny.base_model, subfolder="unet").state_dict()
    assert not torch.equal(start["unet.conv_in.weight"], base["conv_in.weight"])


def test_a_full_fine_tune_saves_what_it_did_not_train_from_the_files_it_came_from(tiny, photos, data_dir, tmp_path):
    """The frozen VAE and text encoder are saved as loaded (under mixed precision the run holds
    rounded fp16/bf16 copies): here the init model's own text encoder, not the base model's."""
    from diffusers import AutoencoderKL
    from transformers import CLIPTextModel

    init = make_full_pet(tmp_path / "init", tiny, name="Bruno", trigger="bruno", class_noun="dog")
    text_encoder = CLIPTextModel.from_pretrained(init.pipeline_dir, subfolder="text_encoder")
    with torch.no_grad():  # as if an earlier run had trained it
        for parameter in text_encoder.parameters():
            parameter.add_(0.01)
    text_encoder.save_pretrained(init.pipeline_dir / "text_encoder")
    init = PetModel.load(init.path)

    run_all(make_trainer(tiny, photos, data_dir, tmp_path / "further", method="full", train_text_encoder=False,
                         init_model=init, steps=2))
    saved = tmp_path / "further" / "pipeline"
    for part, cls in (("text_encoder", CLIPTextModel), ("vae", AutoencoderKL)):
        ours, theirs = (cls.from_pretrained(folder, subfolder=part).state_dict() for folder in (saved, init.pipeline_dir))
        assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours), part


def _copy_model(model, folder, edit_metadata=None, edit_weights=None):
    """A copy of a pet model's folder with its petdream.json and/or LoRA tensors changed."""
    shutil.copytree(model.path, folder)
    if edit_metadata:
        meta = json.loads((folder / "petdream.json").read_text())
        edit_metadata(meta)
        (folder / "petdream.json").write_text(json.dumps(meta))
    if edit_weights:
        path = folder / "pytorch_lora_weights.safetensors"
        with safe_open(path, framework="pt") as f:
            metadata = f.metadata()
        tensors = load_file(path)
        edit_weights(tensors)
        save_file(tensors, path, metadata=metadata)
    return PetModel.load(folder)


def _drop_one(tensors):
    del tensors[sorted(tensors)[0]]


def _add_one(tensors):
    tensors["unet.mid_block.attentions.0.transformer_blocks.0.attn1.to_q.lora.extra.weight"] = torch.zeros(4, 4)


@pytest.mark.parametrize("overrides, edit_metadata, edit_weights, message", [
    ({}, lambda m: m["base_model"].update(id="someone/other-sd"), None,
     "was trained on the base model 'someone/other-sd', but this run uses 'petdream/tiny-sd-v1'. Train it further "
     "on its own base model (profile tiny), or train a new model from the base model (without --init-model)."),
    (dict(method="full"), None, None,
     "was trained with the lora method, but this run asks for full. Training further keeps the method: use "
     "--method lora, or train a new model"),
    (dict(rank=8), None, None, "is a LoRA of another shape than this run asks for: rank 8 (the model has 4); "
                               "lora_alpha 8 (the model has 4). Training further continues its weights"),
    (dict(train_text_encoder=True), None, None, "train_text_encoder True (the model has False)"),
    ({}, lambda m: m["training"].pop("rank"), None, "does not record its LoRA's rank and target modules"),
    ({}, None, _drop_one, "do not fit this run's model: 1 of the model's weights are not in it (e.g. unet.down_"),
    ({}, None, _add_one, "do not fit this run's model: 1 of its tensors fit nowhere in the model (e.g. unet.mid_block"),
], ids=["base-model", "method", "rank", "text-encoder", "unrecorded-shape", "missing-key", "unexpected-key"])
def test_training_further_refuses_a_model_it_cannot_continue(tiny, photos, data_dir, tmp_path, pet_a, overrides,
                                                             edit_metadata, edit_weights, message):
    init = _copy_model(pet_a, tmp_path / "init", edit_metadata, edit_weights)
    events = run_all(make_trainer(tiny, photos, data_dir, tmp_path / "further", init_model=init, **overrides))
    assert isinstance(events[-1], Failed) and message in events[-1].reason, events[-1]
    assert not any(isinstance(e, Progress) for e in events) and not (tmp_path / "further" / "petdream.json").exists()


def test_training_further_resumes_to_the_same_weights_and_only_from_the_same_model(tiny, liked, data_dir, tmp_path,
                                                                                   pet_a):
    run_all(make_trainer(tiny, liked, data_dir, tmp_path / "whole", steps=8, init_model=pet_a))
    trainer = make_trainer(tiny, liked, data_dir, tmp_path / "cut", steps=8, init_model=pet_a)
    for event in trainer.run():
        if isinstance(event, Progress) and event.step == 2:
            trainer.cancel()
    assert isinstance(event, Cancelled) and event.step == 2

    retrained = _copy_model(pet_a, tmp_path / "retrained", edit_weights=lambda t: t.update(
        {k: v * 1.01 for k, v in t.items()}))
    refused = run_all(make_trainer(tiny, liked, data_dir, tmp_path / "cut", steps=8, init_model=retrained), resume=True)
    assert isinstance(refused[-1], Failed), refused[-1]
    assert (f"was made with starting model '{pet_a.weights_sha256()}' (now '{retrained.weights_sha256()}'). "
            "Resuming it would mix two runs.") in refused[-1].reason  # the weights' content tells them apart

    copied = _copy_model(pet_a, tmp_path / "copied")  # the same weights elsewhere: the same start
    resumed = run_all(make_trainer(tiny, liked, data_dir, tmp_path / "cut", steps=8, init_model=copied), resume=True)
    assert "Resuming from step 2" in " ".join(e.text for e in resumed if isinstance(e, Note))
    assert isinstance(resumed[-1], Finished) and [e.step for e in resumed if isinstance(e, Progress)][0] == 3
    assert same_weights(weights(tmp_path / "whole"), weights(tmp_path / "cut"))


# -- guard rails -------------------------------------------------------------------------------


def test_nan_loss_stops_with_a_clear_message(tiny, photos, data_dir, tmp_path, monkeypatch):
    real = DreamBoothTrainer._loss
    calls = []

    def diverging(self, *args):
        calls.append(1)
        loss = real(self, *args)
        return loss * float("nan") if len(calls) >= 4 else loss

    monkeypatch.setattr(DreamBoothTrainer, "_loss", diverging)
    events = run_all(make_trainer(tiny, photos, data_dir, tmp_path / "pet"))
    failed = events[-1]
    assert isinstance(failed, Failed)
    assert failed.reason.startswith("The loss became nan at step 4: training diverged. Lower the learning rate")
    assert failed.reason.endswith("then start again. Its checkpoints are deleted: resuming would repeat the same steps.")
    assert failed.checkpoint is None and not failed.resumable and not (tmp_path / "pet" / "checkpoints").exists()
    again = run_all(make_trainer(tiny, photos, data_dir, tmp_path / "pet", learning_rate=1e-5))  # the same folder
    assert isinstance(again[-1], Failed) and again[-1].reason.startswith("The loss became nan")  # (still patched)


def test_the_cli_says_to_start_over_after_a_diverged_loss_and_names_a_missing_device(tiny, data_dir, tmp_path,
                                                                                     monkeypatch, capsys):
    from petdream.__main__ import main

    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(3):
        make_photo(i).save(folder / f"p{i}.jpg")
    real = DreamBoothTrainer._loss
    monkeypatch.setattr(DreamBoothTrainer, "_loss", lambda self, *args: real(self, *args) * float("nan"))
    monkeypatch.setenv("PETDREAM_DATA_DIR", str(data_dir))
    monkeypatch.setattr(signal, "signal", lambda *args: None)  # keep pytest's Ctrl-C handler
    train = ["train", "--photos", str(folder), "--name", "Rex", "--class-noun", "dog", "--profile", "tiny",
             "--preset", "tiny", "--steps", "2", "--no-prior-preservation"]

    assert main([*train, "--output", str(tmp_path / "rex"), "--device", "cpu"]) == 1
    assert ("error: The loss became nan at step 1: training diverged. Lower the learning rate (now 0.001) or train "
            "without mixed precision, then start again. Its checkpoints are deleted: resuming would repeat the same "
            "steps.\n") in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert main([*train, "--output", str(tmp_path / "rex2"), "--device", "cuda"]) == 1
        assert ("error: Cannot train: device 'cuda' was asked for, but this machine has no CUDA GPU. Choose a device "
                "it has (--device or PETDREAM_DEVICE: auto, cpu, cuda, cuda:N or mps).") in capsys.readouterr().err


def test_out_of_memory_retries_once_with_checkpointing_and_a_smaller_batch(tiny, photos, data_dir, tmp_path, monkeypatch):
    real = DreamBoothTrainer._loss
    calls = []

    def oom_once(self, *args):
        calls.append(args[-2])  # batch_size
        if len(calls) == 2:
            raise torch.OutOfMemoryError("CUDA out of memory")
        return real(self, *args)

    monkeypatch.setattr(DreamBoothTrainer, "_loss", oom_once)
    events = run_all(make_trainer(tiny, photos, data_dir, tmp_path / "pet", batch_size=2))
    notes = [e.text for e in events if isinstance(e, Note)]
    assert ("Out of GPU memory at step 2: retrying with gradient checkpointing and batch size 1 x 2 accumulation."
            in notes)
    assert isinstance(events[-1], Finished) and calls[:3] == [2, 2, 1]
    training = events[-1].model.training  # what was asked, and what ran
    assert (training["batch_size"], training["gradient_accumulation"], training["gradient_checkpointing"]) == (2, 1, False)
    assert (training["batch_size_used"], training["gradient_accumulation_used"],
            training["gradient_checkpointing_used"]) == (1, 2, True)


def test_out_of_memory_drawing_the_samples_draws_them_one_by_one(tiny, photos, data_dir, tmp_path, monkeypatch):
    """A GPU with room to train but not to draw the sample prompts at once: the same samples, one by one."""
    import numpy as np
    from diffusers import StableDiffusionPipeline

    whole = run_all(make_trainer(tiny, photos, data_dir, tmp_path / "whole", steps=4, sample_every=2))
    real_call = StableDiffusionPipeline.__call__

    def no_room_for_batches(self, *args, generator=None, **kwargs):
        if isinstance(generator, list) and len(generator) > 1:
            raise torch.OutOfMemoryError("CUDA out of memory")
        return real_call(self, *args, generator=generator, **kwargs)

    monkeypatch.setattr(StableDiffusionPipeline, "__call__", no_room_for_batches)
    small = run_all(make_trainer(tiny, photos, data_dir, tmp_path / "small", steps=4, sample_every=2))
    assert isinstance(small[-1], Finished)
    samples = [[e.images for e in events if isinstance(e, Sample)] for events in (whole, small)]
    assert len(samples[0]) == len(samples[1]) == 2 and len(samples[0][0]) > 1
    for step_a, step_b in zip(*samples):
        for a, b in zip(step_a, step_b):  # batched convolutions may round differently, nothing more
            assert np.abs(np.asarray(a, dtype=int) - np.asarray(b, dtype=int)).max() <= 2


def test_out_of_memory_with_micro_batches_in_one_pass_runs_them_one_by_one(tiny, photos, data_dir, tmp_path,
                                                                           monkeypatch):
    real = DreamBoothTrainer._loss
    passes = []

    def oom_on_a_fused_pass(self, run, batch_size, micro_batches):
        passes.append(len(micro_batches))
        if len(micro_batches) > 1 and len(passes) == 2:
            raise torch.OutOfMemoryError("CUDA out of memory")
        return real(self, run, batch_size, micro_batches)

    monkeypatch.setattr(DreamBoothTrainer, "_loss", oom_on_a_fused_pass)
    trainer = make_trainer(tiny, photos, data_dir, tmp_path / "pet", gradient_accumulation=2)
    trainer.fuse_micro_batches = True
    events = run_all(trainer)
    notes = [e.text for e in events if isinstance(e, Note)]
    assert ("Out of GPU memory at step 2 with the 2 micro-batches in one pass; running them one after another."
            in notes)
    assert isinstance(events[-1], Finished) and passes[:4] == [2, 2, 1, 1]
    assert not any("gradient checkpointing" in note for note in notes)  # the retry is still unspent


def test_a_run_resumed_after_running_out_of_memory_goes_on_as_it_had(tiny, photos, data_dir, tmp_path, monkeypatch):
    """Out of memory at step 2 halves the batch. Resumed, the run keeps the halved batch even where
    the full one would now fit: the same draws, so it ends with an uninterrupted run's weights."""
    real = DreamBoothTrainer._loss
    batch_sizes, out_of_memory_at_call = [], {2}

    def out_of_memory_once(self, run, batch_size, micro_batches):
        batch_sizes.append(batch_size)
        if len(batch_sizes) in out_of_memory_at_call:
            raise torch.OutOfMemoryError("CUDA out of memory")
        return real(self, run, batch_size, micro_batches)

    monkeypatch.setattr(DreamBoothTrainer, "_loss", out_of_memory_once)
    run_all(make_trainer(tiny, photos, data_dir, tmp_path / "whole", batch_size=2, steps=8))
    batch_sizes.clear()
    trainer = make_trainer(tiny, photos, data_dir, tmp_path / "cut", batch_size=2, steps=8)
    for event in trainer.run():
        if isinstance(event, CheckpointSaved):
            trainer.cancel()
    assert isinstance(event, Cancelled) and batch_sizes[:3] == [2, 2, 1]

    batch_sizes.clear()
    out_of_memory_at_call.clear()  # the GPU now has room for the full batch
    resumed = run_all(make_trainer(tiny, photos, data_dir, tmp_path / "cut", batch_size=2, steps=8), resume=True)
    notes = [e.text for e in resumed if isinstance(e, Note)]
    assert ("Going on as the run did after running out of GPU memory: batch size 1 x 2 accumulation, micro-batches "
            "one after another, gradient checkpointing.") in notes
    assert isinstance(resumed[-1], Finished) and set(batch_sizes) == {1}
    assert same_weights(weights(tmp_path / "whole"), weights(tmp_path / "cut"))


def test_out_of_memory_twice_fails_kindly(tiny, photos, data_dir, tmp_path, monkeypatch):
    def always_oom(self, *args):
        raise torch.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(DreamBoothTrainer, "_loss", always_oom)
    events = run_all(make_trainer(tiny, photos, data_dir, tmp_path / "pet"))
    assert isinstance(events[-1], Failed) and "Out of GPU memory even with gradient checkpointing" in events[-1].reason


def test_out_of_memory_in_the_optimizers_update_fails_clearly_instead_of_retrying(tiny, photos, data_dir, tmp_path,
                                                                                  monkeypatch):
    """A smaller batch frees activations, not the optimizer's state; on fp16 a retry after the
    gradients were unscaled would fail anyway ("unscale_() has already been called")."""
    real_step, steps = torch.optim.AdamW.step, []

    def out_of_memory_at_the_third_update(self, *args, **kwargs):
        steps.append(1)
        if len(steps) == 3:
            raise torch.OutOfMemoryError("CUDA out of memory")
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", out_of_memory_at_the_third_update)
    events = run_all(make_trainer(tiny, photos, data_dir, tmp_path / "pet", steps=6, checkpoint_every=2))
    assert isinstance(events[-1], Failed) and events[-1].reason.startswith(
        "Out of GPU memory in the optimizer's update at step 3: its state for ")
    assert events[-1].checkpoint == tmp_path / "pet" / "checkpoints" / "step-000002"
    assert not any(isinstance(e, Note) and "retrying" in e.text for e in events)


@pytest.fixture
def small_disk(tmp_path):
    """A file system of its own, 16 MB, that can really fill up (a tmpfs: mounting one needs root)."""
    folder = tmp_path / "small-disk"
    folder.mkdir()
    mounted = os.geteuid() == 0 and subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(folder)],
                                                   capture_output=True).returncode == 0
    if not mounted:
        pytest.skip("a small file system to fill needs root to mount a tmpfs")
    yield folder
    subprocess.run(["umount", "--lazy", str(folder)], check=True)


def fill(disk: Path, leave: int = 0) -> Path:
    """Fill `disk` up, but `leave` bytes (to a page); the file that does it."""
    filler = disk / "filler"
    with open(filler, "wb") as f:
        f.write(b"\0" * max(0, shutil.disk_usage(disk).free - leave))
    return filler


@pytest.mark.parametrize("filled_before", ["checkpoint weights", "checkpoint optimizer state", "pet model"])
def test_a_full_disk_fails_clearly_keeps_the_last_checkpoint_and_resumes_once_there_is_room(
        tiny, photos, data_dir, small_disk, filled_before):
    """A real disk fills up: before the second checkpoint's weights are written (safetensors' error), after them
    but before its optimizer state (torch.save's, which names no cause), or before the pet model's weights."""
    output, filler = small_disk / "pet", None
    trainer = make_trainer(tiny, photos, data_dir, output, steps=8)  # checkpoints at steps 3 and 6
    events = []
    for event in trainer.run():
        events.append(event)
        if filler is None and isinstance(event, CheckpointSaved) and filled_before != "pet model":
            weights_size = (event.path / "trainable.safetensors").stat().st_size
            filler = fill(small_disk, leave=weights_size + 16384 if filled_before == "checkpoint optimizer state" else 0)
        if filler is None and isinstance(event, Sample) and event.step == 8:  # the last sample: the model is next
            filler = fill(small_disk)
    failed, kept = events[-1], "step-000006" if filled_before == "pet model" else "step-000003"
    assert isinstance(failed, Failed) and failed.reason.startswith("The disk is full"), events[-1]
    assert "Free some space and resume" in failed.reason
    assert failed.checkpoint == output / "checkpoints" / kept
    names = sorted(p.name for p in (output / "checkpoints").iterdir())
    assert names[-1] == kept and all(name.startswith("step-") for name in names)  # no half-written one
    assert not (output / "petdream.json").exists()

    filler.unlink()
    resumed = run_all(make_trainer(tiny, photos, data_dir, output, steps=8), resume=True)
    assert isinstance(resumed[-1], Finished) and resumed[-1].model.training["steps_done"] == 8


def test_a_write_refused_by_a_disk_quota_says_so(tmp_path):
    from safetensors import SafetensorError

    from petdream.training.checkpoints import full_disk_as_oserror

    with pytest.raises(OSError) as caught, full_disk_as_oserror(tmp_path):  # safetensors' words for EDQUOT
        raise SafetensorError("Error while serializing: I/O error: Disk quota exceeded (os error 122)")
    assert caught.value.errno == errno.EDQUOT and caught.value.filename == str(tmp_path)
    with pytest.raises(SafetensorError), full_disk_as_oserror(tmp_path):  # not every failure is a full disk
        raise SafetensorError("Error while serializing: invalid tensor")


def test_checkpoints_are_written_while_training_goes_on(tiny, photos, data_dir, tmp_path, monkeypatch):
    """A slow disk does not hold up the steps; the checkpoint still holds its own step's state,
    so resuming from it ends with the weights of an uninterrupted run."""
    run_all(make_trainer(tiny, photos, data_dir, tmp_path / "whole", steps=8))
    slow_checkpoint_writes(monkeypatch, 1.5)
    trainer = make_trainer(tiny, photos, data_dir, tmp_path / "cut", steps=8)
    events = []
    for event in trainer.run():
        events.append(event)
        if isinstance(event, CheckpointSaved):
            trainer.cancel()
    steps_before_saved = [e.step for e in events[:events.index(next(e for e in events if isinstance(e, CheckpointSaved)))]
                          if isinstance(e, Progress)]
    assert max(steps_before_saved) > 3  # steps 4, 5, ... ran while step 3 was being written
    assert events[-1].checkpoint.name != "step-000003"

    for old in (tmp_path / "cut" / "checkpoints").glob("step-*"):
        if old.name != "step-000003":
            shutil.rmtree(old)  # resume from the checkpoint written in the background
    state = json.loads((tmp_path / "cut" / "checkpoints" / "step-000003" / "state.json").read_text())
    assert state["step"] == 3 and len(state["losses"]) == 3  # its step's, not those of the steps during the write
    monkeypatch.undo()
    resumed = run_all(make_trainer(tiny, photos, data_dir, tmp_path / "cut", steps=8), resume=True)
    assert [e.step for e in resumed if isinstance(e, Progress)][0] == 4
    assert same_weights(weights(tmp_path / "whole"), weights(tmp_path / "cut"))


def test_a_second_training_on_the_same_device_waits_whatever_its_data_dir(tiny, photos, data_dir, tmp_path):
    # The app and a CLI run, each with a data dir of its own: the device's lock is the machine's (Settings.lock_dir).
    first = make_trainer(tiny, photos, data_dir, tmp_path / "first", steps=10)
    second = make_trainer(tiny, photos, tmp_path / "cli-data", tmp_path / "second", steps=2)
    first_events, second_events = [], []
    started = threading.Event()

    def run_first():
        for event in first.run():
            first_events.append((time.monotonic(), event))
            started.set()

    thread = threading.Thread(target=run_first)
    thread.start()
    started.wait(60)
    for event in second.run():
        second_events.append((time.monotonic(), event))
    thread.join()
    assert isinstance(second_events[0][1], Note) and "Another training is using the CPU" in second_events[0][1].text
    first_done = first_events[-1][0]
    assert isinstance(second_events[-1][1], Finished)
    assert all(t >= first_done for t, e in second_events if isinstance(e, Progress))


def test_a_lock_folder_of_another_user_or_a_linked_lock_file_is_refused(tiny, photos, data_dir, tmp_path):
    """The locks' folder sits in the shared temp folder: another user could have made it first, with a link in it
    to a file of ours, which opening the lock would empty."""
    ours = tmp_path / "locks"
    ours.mkdir()
    precious = tmp_path / "precious.txt"
    precious.write_text("my notes")
    (ours / "train-cpu-0.lock").symlink_to(precious)
    events = run_all(make_trainer(tiny, photos, data_dir, tmp_path / "a", lock_dir=ours))
    assert isinstance(events[-1], Failed) and events[-1].reason == (
        f"The lock file {ours / 'train-cpu-0.lock'} is a link, which PetDream does not follow there. Delete it and "
        "start again.")
    assert precious.read_text() == "my notes"
    if os.getuid() != 0:
        pytest.skip("giving a folder to another user needs root")
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    os.chown(theirs, 12345, -1)
    events = run_all(make_trainer(tiny, photos, data_dir, tmp_path / "b", lock_dir=theirs))
    assert isinstance(events[-1], Failed) and events[-1].reason == (
        f"The lock folder {theirs} belongs to another user. Set PETDREAM_LOCK_DIR to a folder of your own.")


@pytest.mark.skipif(torch.cuda.is_available() or torch.backends.mps.is_available(), reason="this machine has a GPU")
@pytest.mark.parametrize("device, lacking", [("cuda", "no CUDA GPU"), ("cuda:1", "no CUDA GPU"),
                                             ("mps", "no Apple MPS device")])
def test_a_device_the_machine_lacks_fails_the_run_instead_of_training_on_the_cpu(tiny, photos, data_dir, tmp_path,
                                                                                 device, lacking):
    events = run_all(make_trainer(tiny, photos, data_dir, tmp_path / "out", device=device))
    assert len(events) == 1 and isinstance(events[0], Failed)
    assert f"device '{device}' was asked for, but this machine has {lacking}" in events[0].reason
    assert "--device or PETDREAM_DEVICE" in events[0].reason and events[0].checkpoint is None
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_a_run_cancelled_while_it_waits_for_the_device_is_cancelled(tiny, photos, data_dir, tmp_path):
    first = make_trainer(tiny, photos, data_dir, tmp_path / "first", steps=30)
    second = make_trainer(tiny, photos, data_dir, tmp_path / "second", steps=2)
    started = threading.Event()

    def run_first():
        for event in first.run():
            started.set()

    thread = threading.Thread(target=run_first)
    thread.start()
    started.wait(60)
    events = []
    for event in second.run():
        events.append(event)
        if isinstance(event, Note) and "Another training is using the CPU" in event.text:
            second.cancel()
    first.cancel()
    thread.join()
    assert isinstance(events[-1], Cancelled) and events[-1].step == 0 and not any(
        isinstance(e, Progress) for e in events)


def test_a_run_that_waited_for_the_device_does_not_overwrite_what_the_first_one_finished(tiny, photos, data_dir,
                                                                                          tmp_path):
    """The same command twice: the second waits for the device, then finds the pet model there."""
    first = make_trainer(tiny, photos, data_dir, tmp_path / "pet", steps=6)
    second = make_trainer(tiny, photos, data_dir, tmp_path / "pet", steps=6)
    started, first_events = threading.Event(), []

    def run_first():
        for event in first.run():
            first_events.append(event)
            started.set()

    thread = threading.Thread(target=run_first)
    thread.start()
    started.wait(60)
    second_events = list(second.run())
    thread.join()
    assert isinstance(first_events[-1], Finished)
    created = PetModel.load(tmp_path / "pet").created_at
    assert "Another training is using the CPU" in second_events[0].text
    assert isinstance(second_events[-1], Failed) and "already holds a trained pet model" in second_events[-1].reason
    assert PetModel.load(tmp_path / "pet").created_at == created


def test_a_finished_pet_model_is_never_overwritten(tiny, photos, data_dir, tmp_path):
    run_all(make_trainer(tiny, photos, data_dir, tmp_path / "pet"))
    events = run_all(make_trainer(tiny, photos, data_dir, tmp_path / "pet"))
    assert isinstance(events[-1], Failed) and "already holds a trained pet model" in events[-1].reason


def test_an_output_that_is_a_file_is_refused_before_any_work(tiny, photos, data_dir, tmp_path):
    (tmp_path / "bruno").write_text("my notes")
    events = run_all(make_trainer(tiny, photos, data_dir, tmp_path / "bruno"))
    assert len(events) == 1 and isinstance(events[0], Failed)  # no model loaded, no step trained first
    assert events[0].reason == (f"{tmp_path / 'bruno'} is a file, not a folder. Choose a folder for the pet model "
                                "(a new one is made).")
    assert (tmp_path / "bruno").read_text() == "my notes"


def test_photos_at_the_wrong_size_are_refused(tiny, data_dir, tmp_path):
    wrong = intake([("a.png", _png(make_photo(1, (300, 300))))], resolution=256).accepted
    with pytest.raises(ValueError, match="Photos must be 128x128 px"):
        make_trainer(tiny, wrong, data_dir, tmp_path / "pet")


# -- the command line --------------------------------------------------------------------------


def test_cli_trains_the_dog_photos_and_plain_diffusers_draws_with_the_result(tiny, data_dir, tmp_path, dreambench):
    from diffusers import StableDiffusionPipeline

    env = {**os.environ, "PETDREAM_DATA_DIR": str(data_dir), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "petdream", "train", "--profile", "tiny", "--preset", "tiny", "--photos",
               str(dreambench / "dog"), "--name", "bruno", "--class-noun", "dog", "--output", str(tmp_path / "bruno"),
               "--steps", "50"]
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    summary = result.stdout.strip().splitlines()[-1]
    assert summary.startswith("trained bruno (lora, preset tiny, 5 photos, 50 steps) in ")
    assert summary.endswith(f'prompt with "bruno dog" -> {tmp_path / "bruno"}')

    pipeline = StableDiffusionPipeline.from_pretrained(tiny.base_model, safety_checker=None)
    pipeline.set_progress_bar_config(disable=True)

    def draw():
        return pipeline("a photo of bruno dog", num_inference_steps=5, generator=torch.Generator().manual_seed(0),
                        output_type="np").images[0]

    before = draw()
    pipeline.load_lora_weights(tmp_path / "bruno")  # plain diffusers, no PetDream
    after = draw()
    assert abs(after - before).mean() > 0.005


def test_every_hyperparameter_has_a_cli_flag_that_reaches_petdream_json(tiny, data_dir, tmp_path):
    """The CLI's flags come from TrainingConfig's fields: each one overrides the preset, as recorded."""
    import dataclasses

    from petdream.__main__ import build_parser

    defaults = vars(build_parser().parse_args(["train", "--photos", "p", "--output", "o"]))
    assert {field.name for field in dataclasses.fields(TrainingConfig)} <= defaults.keys()
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(3):
        make_photo(i, (200, 160)).save(folder / f"p{i}.png")
    env = {**os.environ, "PETDREAM_DATA_DIR": str(data_dir), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "petdream", "train", "--profile", "tiny", "--photos", str(folder), "--name", "Rex",
         "--class-noun", "dog", "--output", str(tmp_path / "rex"), "--steps", "3", "--no-prior-preservation",
         "--lora-alpha", "8", "--lora-target-modules", "to_q", "to_v", "--lr-scheduler", "cosine",
         "--lr-warmup-steps", "1", "--max-grad-norm", "0.5", "--no-random-flip", "--sample-steps", "3",
         "--checkpoints-kept", "1", "--prior-loss-weight", "0.5"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    training = json.loads((tmp_path / "rex" / "petdream.json").read_text())["training"]
    assert {name: training[name] for name in ("lora_alpha", "lora_target_modules", "lr_scheduler", "lr_warmup_steps",
                                              "max_grad_norm", "random_flip", "sample_steps", "checkpoints_kept",
                                              "prior_loss_weight", "rank")} == {
        "lora_alpha": 8, "lora_target_modules": ["to_q", "to_v"], "lr_scheduler": "cosine", "lr_warmup_steps": 1,
        "max_grad_norm": 0.5, "random_flip": False, "sample_steps": 3, "checkpoints_kept": 1,
        "prior_loss_weight": 0.5, "rank": 4}  # the rank: tiny's, not given
    refused = subprocess.run([sys.executable, "-m", "petdream", "train", "--photos", str(folder), "--output",
                              str(tmp_path / "x"), "--lr-scheduler", "exponential"],
                             cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2 and "--lr-scheduler: invalid choice: 'exponential'" in refused.stderr


def test_cli_keeps_the_samples_drawn_as_it_learns_and_counts_a_resumed_sessions_steps(tiny, data_dir, tmp_path,
                                                                                      dreambench):
    env = {**os.environ, "PETDREAM_DATA_DIR": str(data_dir), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "petdream", "train", "--profile", "tiny", "--preset", "tiny", "--photos",
               str(dreambench / "dog"), "--name", "bruno", "--class-noun", "dog", "--output", str(tmp_path / "bruno"),
               "--steps", "6", "--checkpoint-every", "2", "--sample-every", "2", "--no-prior-preservation"]
    first = subprocess.Popen(command, cwd=REPO, env=env, stderr=subprocess.PIPE, text=True)
    told = []
    for line in first.stderr:  # Ctrl-C once the first samples are out
        told.append(line)
        if line.startswith("samples at step 2: "):
            first.send_signal(signal.SIGINT)
    assert first.wait(timeout=120) == 130, "".join(told)
    live = tmp_path / "bruno" / "live-samples"
    assert f"samples at step 2: {live / 'step00002-0.png'}, {live / 'step00002-1.png'}\n" in told
    stopped = int(next(line for line in told if line.startswith("cancelled at step ")).split()[3].rstrip(";"))

    resumed = subprocess.run([*command, "--resume"], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    assert f"Resuming from step {stopped}" in resumed.stderr
    # The bar starts where the run stands: its rate and time left are this session's, not 0 to 6 in one go.
    assert f"{stopped}/6 [" in resumed.stderr and " 0/6 [" not in resumed.stderr
    assert sorted(p.name for p in live.iterdir()) == [f"step{step:05d}-{i}.png" for step in (2, 4) for i in (0, 1)]
    assert (tmp_path / "bruno" / "samples" / "grid.png").is_file()  # the last sample is the pet model's own


def test_cli_with_too_few_usable_photos_says_how_many_more(tmp_path, data_dir, tiny):
    folder = tmp_path / "photos"
    folder.mkdir()
    make_photo(1).save(folder / "a.jpg")
    (folder / "b.jpg").write_text("not a photo")
    (folder / "more").mkdir()  # photos sorted into a folder of their own: not read, and it says so
    for i in range(3):
        make_photo(i).save(folder / "more" / f"{i}.jpg")
    env = {**os.environ, "PETDREAM_DATA_DIR": str(data_dir)}
    result = subprocess.run([sys.executable, "-m", "petdream", "train", "--profile", "tiny", "--photos", str(folder),
                             "--name", "rex", "--class-noun", "dog", "--output", str(tmp_path / "rex")],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "skipped b.jpg: b.jpg is not a photo" in result.stderr
    assert "error: Only 1 usable photo; DreamBooth needs at least 3. Add 2 more photos of your pet." in result.stderr
    assert f"skipped more/: photos are read from {folder} itself, not from the folders in it" in result.stderr
    assert not (tmp_path / "rex").exists()


def test_cli_trains_a_pet_model_further_with_init_model(tiny, photos, data_dir, tmp_path, capsys):
    from petdream.__main__ import main

    a = make_trainer(tiny, photos, data_dir, tmp_path / "a", rank=2, lora_alpha=4, steps=2).train()  # not tiny's 4
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(4):
        make_photo(i, (200, 160)).save(folder / f"p{i}.png")
    make_photo(40, (160, 200)).save(folder / "liked.png")  # a picture the person liked
    env = {**os.environ, "PETDREAM_DATA_DIR": str(data_dir), "OMP_NUM_THREADS": "1"}

    def train(output, *extra):  # no --profile, --name, --class-noun or --rank: the init model gives them
        return subprocess.run([sys.executable, "-m", "petdream", "train", "--photos", str(folder), "--output",
                               str(output), "--steps", "4", "--num-class-images", "2", *map(str, extra)],
                              cwd=REPO, env=env, capture_output=True, text=True, timeout=300)

    result = train(tmp_path / "further", "--init-model", a.path)
    assert result.returncode == 0, result.stderr
    assert f"Training further from {a.path} (lora, weights sha256 " in result.stderr
    summary = result.stdout.strip().splitlines()[-1]
    assert summary.startswith(f"trained Bruno (lora, preset tiny, 5 photos, 4 steps, further from {a.path}) in ")
    meta = json.loads((tmp_path / "further" / "petdream.json").read_text())
    assert meta["profile"] == "tiny" and meta["pet"] == {"name": "Bruno", "trigger": "bruno", "class_noun": "dog"}
    training = meta["training"]
    assert (training["rank"], training["lora_alpha"], training["steps_done"]) == (2, 4, 4)
    assert training["init_model"] == {
        "path": os.path.join("..", a.path.name), "sha256": hashlib.sha256(a.lora_weights.read_bytes()).hexdigest()}
    assert not same_weights(weights(tmp_path / "further"), weights(a.path))

    refused = train(tmp_path / "refused", "--init-model", a.path, "--rank", "8")
    assert refused.returncode == 1, refused.stderr
    assert "error: " in refused.stderr and "rank 8 (the model has 2)" in refused.stderr
    assert not (tmp_path / "refused" / "petdream.json").exists()

    assert main(["train", "--photos", str(folder), "--output", str(tmp_path / "x"), "--init-model",
                 str(tmp_path / "absent")]) == 2
    assert f"error: No pet model at {tmp_path / 'absent'}" in capsys.readouterr().err
    assert main(["train", "--photos", str(folder), "--output", str(tmp_path / "x"), "--name", "Rex"]) == 2
    assert "error: Say the pet's --name and --class-noun" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    assert "--init-model DIR train this pet model (a folder written by train) further" in " ".join(
        capsys.readouterr().out.split())
