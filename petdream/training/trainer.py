"""DreamBoothTrainer: a handful of pet photos in, a PetModel folder out.

The run is a generator of events (events.py), so a CLI draws a progress bar from it and the
app drives it from a worker thread; `cancel()` may be called from any thread. Everything the
frozen VAE and text encoder produce is computed once up front (data.py); each step draws its
batch, noise and timesteps from a generator seeded by (seed, process, step), which is what makes
a resumed run end with exactly the weights of an uninterrupted one.

With `init_model` a run trains an existing pet model further (say on photos plus the pictures the
person liked): the same loop, starting from that model's weights instead of the base model's.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import math
import os
import re
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from petdream.models import Profile, load_pipeline, pick_device
from petdream.models.device import release_host_memory
from petdream.models.pipeline import draw_seeded, quiet_libraries
from petdream.models.profiles import base_model_commit
from petdream.petmodel import LORA_WEIGHTS_FILE, METADATA_FILE, PIPELINE_DIR, Pet, PetModel
from petdream.photos import Photo
from petdream.settings import default_lock_dir
from petdream.training.checkpoints import (CheckpointDamaged, CheckpointMismatch, Checkpoints, fsync_tree,
                                           full_disk_as_oserror)
from petdream.training.config import TrainingConfig, lora_shape
from petdream.training.data import (
    LatentCache,
    class_images_folder,
    encode_images,
    encode_prompt,
    ensure_class_images,
    missing_class_images,
    tokenize,
)
from petdream.training.events import (
    Cancelled,
    CheckpointSaved,
    Event,
    Failed,
    Finished,
    Note,
    Progress,
    Resumed,
    Sample,
)

logger = logging.getLogger(__name__)
SAMPLE_SEEDS = (0, 1)


class TrainingFailure(Exception):
    """Stops a run; the message is shown to the person as is. `resumable`: whether resuming from the
    last checkpoint can get past it (not if the same steps would fail the same way)."""

    def __init__(self, message: str, resumable: bool = True):
        super().__init__(message)
        self.resumable = resumable


class DreamBoothTrainer:
    """Fine-tunes `profile`'s base model on `photos` of `pet`, writing a PetModel to `output_dir`.

    photos: accepted photos from `petdream.photos.intake`, at the training resolution.
    data_dir: where class images are cached and devices are locked.
    init_model: train this pet model further: start from its weights instead of the base model's.
        It must be on the same base model with the same method; a LoRA must have the shape `config`
        asks for (rank, alpha, target modules, text encoder; `further_training_settings` gives them).
        A mismatch is refused with a Failed event rather than adapted silently: petdream.json must
        record the settings the weights really have. Class images still come from the base model.
    """

    # Run a step's micro-batches as one pass (the same draws, the same gradient, far fewer kernel
    # launches: 1.66x the steps/s of `paper` on an H100). None: on CUDA, falling back on out of memory.
    fuse_micro_batches: bool | None = None

    def __init__(self, profile: Profile, photos: list[Photo], pet: Pet, output_dir: Path, config: TrainingConfig,
                 *, data_dir: Path, device: str = "auto", init_model: PetModel | None = None,
                 lock_dir: Path | None = None):  # None: Settings' default
        resolution = config.resolution or profile.resolution
        wrong = [p.file for p in photos if p.image.size != (resolution, resolution)]
        if wrong:
            raise ValueError(f"Photos must be {resolution}x{resolution} px for this run (from intake); not: {wrong}")
        if not photos:
            raise ValueError("No photos to train on.")
        self.profile, self.photos, self.pet, self.config = profile, photos, pet, config
        self.resolution = resolution
        self.output_dir = Path(output_dir)
        self.data_dir = Path(data_dir)
        self.lock_dir = Path(lock_dir) if lock_dir is not None else default_lock_dir()  # the machine's, for this user
        self.device_setting = device
        self.checkpoints = Checkpoints(self.output_dir / "checkpoints", keep=config.checkpoints_kept)
        self.init_model = init_model
        # The starting weights' content, not their path: a copied folder is the same start, a retrained one is not.
        self.init_model_sha256 = init_model.weights_sha256() if init_model is not None else None
        # What the weights depend on: a checkpoint resumes only into the same run.
        identity = [config.fingerprint(), profile.base_model_id, profile.base_model_revision, resolution,
                    pet.instance_prompt, pet.class_noun, sorted(p.sha256 for p in photos)]
        if init_model is not None:  # appended only then, so runs from the base keep their fingerprints
            identity.append(self.init_model_sha256)
        processes = int(os.environ.get("WORLD_SIZE", "1"))  # as accelerate reads it: each draws its own images
        if processes > 1:  # likewise only then
            identity.append(f"processes={processes}")
        self.fingerprint = hashlib.sha256(json.dumps(identity).encode()).hexdigest()[:16]
        # The same, readable (and as JSON keeps it: tuples are lists): a checkpoint of another run can then
        # say what differs.
        self.identity = json.loads(json.dumps({
            "settings": config.weight_settings(), "base model": _model_name(profile.base_model_id,
            profile.base_model_revision), "resolution": resolution, "instance prompt": pet.instance_prompt,
            "class noun": pet.class_noun, "photos": sorted(p.sha256 for p in photos),
            "starting model": self.init_model_sha256, "processes": processes}))
        self._cancel = threading.Event()

    @property
    def instance_prompt(self) -> str:
        return self.pet.instance_prompt

    @property
    def sample_prompts(self) -> tuple[str, str]:
        """What the sample images show, the same at every step so they can be compared."""
        return self.instance_prompt, f"a photo of {self.pet.phrase} on a sunny beach"

    @property
    def class_prompt(self) -> str:
        return f"a photo of {self.pet.class_noun}"

    def cancel(self) -> None:
        """Ask the run to stop after the current step; it keeps a checkpoint to resume from. A cancelled
        trainer stays so (a cancel asked before its run starts is kept): resume with a new one."""
        self._cancel.set()

    def train(self, resume: bool = False, on_event=None) -> PetModel:
        """Run to the end; return the PetModel or raise TrainingFailure with the reason."""
        outcome = None
        for event in self.run(resume=resume):  # to its end: after the last event the run frees its models
            if on_event:
                on_event(event)
            if isinstance(event, (Finished, Failed, Cancelled)):
                outcome = event
        if isinstance(outcome, Finished):
            return outcome.model
        if isinstance(outcome, (Failed, Cancelled)):
            raise TrainingFailure(outcome.reason if isinstance(outcome, Failed) else "Training was cancelled.")
        raise TrainingFailure("Training ended without a result.")

    def run(self, resume: bool = False) -> Iterator[Event]:
        """Train, yielding events; the last one is Finished, Failed or Cancelled."""
        try:
            self._check_output_folder(resume)
            self._check_init_model()
            device = _training_device(self.device_setting)
            lock = yield from self._wait_for_device(device)
            if lock is None:  # cancelled while it waited
                yield self._cancelled_before_a_step()
                return
            with lock:
                self._check_output_folder(resume)  # again: a run it waited for may have written to this folder
                try:
                    yield from self._run(resume, device)
                finally:  # however the run ends, a checkpoint being written lands before the device is free
                    self._finish_checkpoint_write()
        except TrainingFailure as failure:
            if not failure.resumable:  # its checkpoints could only fail again (GBs each for a full fine-tune)
                self.checkpoints.delete_all()
            yield Failed(str(failure), self.checkpoints.latest(), failure.resumable)
        except OSError as error:
            if error.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            full = "The disk is full" if error.errno == errno.ENOSPC else "Your disk quota is used up"
            yield Failed(
                f"{full} ({error.filename or self.output_dir}). Free some space and resume (--resume, "
                "or Resume under Unfinished trainings in the app): the last checkpoint is kept.",
                self.checkpoints.latest())
        # Here, not in a `finally`: while an exception is on its way out, its traceback still holds the
        # run's frame, and with it the models and optimizer.
        release_host_memory()

    # -- the run ---------------------------------------------------------------------------

    def _cancelled_before_a_step(self) -> Cancelled:
        """Cancelled before this session's first step: where the run stands is its newest checkpoint."""
        latest = self.checkpoints.latest()
        return Cancelled(self.checkpoints.step_of(latest) if latest else 0, latest)

    def _run(self, resume: bool, device: torch.device) -> Iterator[Event]:
        session_started = time.monotonic()
        run = yield from self._prepare(device)
        if run is None:
            yield self._cancelled_before_a_step()
            return
        config, accelerator = self.config, run.accelerator
        step, losses, seconds_before = 0, [], 0.0  # seconds: of the sessions before this one, up to their checkpoint
        fused = self.fuse_micro_batches if self.fuse_micro_batches is not None else accelerator.device.type == "cuda"
        passes = _Passes(config.batch_size, config.gradient_accumulation, fused)
        if resume:
            step, losses, passes, seconds_before = yield from self._resume(run, passes)
        steps_started = time.monotonic()

        def seconds() -> float:
            """The run's wall time so far, set-up included, over every session that led here."""
            return seconds_before + time.monotonic() - session_started
        warmed_up = None  # (step, time) at the end of this session's first step, which warms up (or compiles)
        while step < config.steps:
            yield from self._checkpoint_written(wait=False)
            if self._any_process(accelerator, self._cancel.is_set()):
                yield from self._checkpoint_written(wait=True)
                # Unless this step's is just written, or no step is done (the base model needs no checkpoint).
                if step > 0 and self.checkpoints.latest() != self.checkpoints.path(step):
                    self._save_checkpoint(run, step, losses, passes, seconds())
                    yield from self._checkpoint_written(wait=True)
                accelerator.wait_for_everyone()  # the first process's checkpoint is on disk before any process ends
                yield Cancelled(step, self.checkpoints.latest())
                return
            learning_rate = run.lr_scheduler.get_last_lr()[0]  # the rate this step uses (after it: the next's)
            try:
                loss = self._step(run, step, passes)
            except torch.OutOfMemoryError:
                loss = None  # handled below: leaving `except` frees the failed step's tensors first
            if loss is None:
                if accelerator.num_processes > 1:
                    raise TrainingFailure(_out_of_memory_with_several_processes(accelerator, step))
                run.optimizer.zero_grad(set_to_none=True)
                torch.cuda.empty_cache()
                yield Note(passes.shrink(step))
                if passes.checkpointing_forced:
                    run.plain(run.unet).enable_gradient_checkpointing()
                continue
            if self._any_process(accelerator, not math.isfinite(loss)):
                raise TrainingFailure(  # resuming draws the same batches from the same weights: it would diverge again
                    f"The loss became {loss if not math.isfinite(loss) else 'NaN or infinite on another GPU'} at step "
                    f"{step + 1}: training diverged. Lower the learning rate "
                    f"(now {config.learning_rate:g}) or train without mixed precision, then start again. Its "
                    "checkpoints are deleted: resuming would repeat the same steps.", resumable=False)
            step += 1
            losses.append(loss)
            now = time.monotonic()
            if warmed_up is None:
                warmed_up, rate = (step, now), 1 / max(now - steps_started, 1e-9)
            else:  # steps/s and the ETA leave the first step out: a compiling one would skew them for long
                rate = (step - warmed_up[0]) / max(now - warmed_up[1], 1e-9)
            yield Progress(step, config.steps, loss, learning_rate, rate, (config.steps - step) / rate)
            if step % config.checkpoint_every == 0 and step < config.steps:
                yield from self._checkpoint_written(wait=True)  # one write at a time
                self._save_checkpoint(run, step, losses, passes, seconds())  # written while the sample and next steps run
            if config.sample_every and step % config.sample_every == 0 and step < config.steps:
                yield self._sample(run, step)  # after the checkpoint: a sample that fails loses no steps
        yield from self._checkpoint_written(wait=True)

        accelerator.wait_for_everyone()
        total = seconds()  # the run's time before its final sample and save (for full, GBs to write)
        if accelerator.is_main_process:  # one PetModel, written by one process
            final_sample = self._sample(run, step)
            yield final_sample
            self._save_pet_model(run, losses, final_sample, total, passes)
        accelerator.wait_for_everyone()
        yield Finished(PetModel.load(self.output_dir), total, losses[-1])

    @staticmethod
    def _any_process(accelerator, flag: bool) -> bool:
        """Whether `flag` is set in any process: several stop at the same step or not at all. A Ctrl-C
        reaches them at different moments, and a loss may be NaN on one GPU's batch alone; one process
        stopping alone would leave the others waiting in the gradient exchange (a hang, with NCCL)."""
        if accelerator.num_processes == 1:
            return flag
        return bool(accelerator.reduce(torch.tensor(int(flag), device=accelerator.device), "sum").item())

    def _step(self, run: "_Run", step: int, passes: "_Passes") -> float:
        """One optimizer step, its micro-batches run as `passes` says; returns its loss.

        The loss is read once, after the optimizer's work is queued: the step's one wait for the GPU.
        A non-finite loss has then already updated the weights, which is fine: the run stops on it.
        """
        config, accelerator = self.config, run.accelerator
        run.optimizer.zero_grad(set_to_none=True)
        generators = [torch.Generator("cpu").manual_seed(_step_seed(config.seed, accelerator.process_index, step, micro))
                      for micro in range(passes.accumulation)]
        each_pass = [generators] if passes.fused else [[g] for g in generators]
        step_loss = torch.zeros((), device=accelerator.device)
        for i, micro_batches in enumerate(each_pass):
            share = len(micro_batches) / passes.accumulation  # of the step's gradient
            sync = accelerator.no_sync(run.unet) if i < len(each_pass) - 1 else contextlib.nullcontext()
            with sync, accelerator.autocast():
                pass_loss = self._loss(run, passes.batch_size, micro_batches)
                accelerator.backward(pass_loss * share)
            step_loss += pass_loss.detach() * share
        try:
            accelerator.clip_grad_norm_(list(run.trainable.values()), config.max_grad_norm)
            run.optimizer.step()
        except torch.OutOfMemoryError:  # a smaller batch cannot help: the optimizer's state is the weights' size
            raise TrainingFailure(
                f"Out of GPU memory in the optimizer's update at step {step + 1}: its state for "
                f"{sum(p.numel() for p in run.trainable.values()):,} trained weights does not fit. Use "
                "8-bit AdamW (--optimizer adamw8bit), the LoRA method, or a GPU with more memory.") from None
        run.lr_scheduler.step()
        return step_loss.item()

    def _loss(self, run: "_Run", batch_size: int, micro_batches: list[torch.Generator]) -> torch.Tensor:
        """The DreamBooth loss, averaged over micro-batches run in one pass: the denoising error on
        the pet's photos plus the weighted error on class images (prior preservation). Each
        micro-batch draws its images, noise and timesteps from its own generator, so a step's
        gradient is the same whether its micro-batches run in one pass or one after another."""
        config, noise_scheduler = self.config, run.noise_scheduler
        sets = [(run.instance_latents, self.instance_prompt)]
        if run.class_latents is not None:
            sets.append((run.class_latents, self.class_prompt))
        # One text encoding per prompt and pass, even when the encoder trains and micro-batches share the pass.
        conditions = [run.embeddings(prompt, batch_size) for _, prompt in sets] * len(micro_batches)
        latents, noise, timesteps = [], [], []
        for g in micro_batches:  # each draws (instance images, class images) of batch_size
            drawn = []
            for cache, _ in sets:
                indices = torch.randint(len(cache), (batch_size,), generator=g)
                flips = torch.randint(2, (batch_size,), generator=g) if config.random_flip else torch.zeros_like(indices)
                drawn.append(cache.sample(indices, flips, g))
            drawn = torch.cat(drawn)
            latents.append(drawn)
            noise.append(torch.randn(drawn.shape, generator=g))
            if config.offset_noise:
                noise[-1] += config.offset_noise * torch.randn((*drawn.shape[:2], 1, 1), generator=g)
            timesteps.append(torch.randint(noise_scheduler.config.num_train_timesteps, (drawn.shape[0],), generator=g))
        latents = torch.cat(latents) * run.vae.config.scaling_factor
        conditions = torch.cat(conditions)
        device = conditions.device
        noise = torch.cat(noise).to(device, non_blocking=True)
        timesteps = torch.cat(timesteps).to(device, non_blocking=True)
        noisy = noise_scheduler.add_noise(latents, noise, timesteps)
        v_prediction = noise_scheduler.config.prediction_type == "v_prediction"
        target = noise_scheduler.get_velocity(latents, noise, timesteps) if v_prediction else noise
        prediction = run.unet(noisy, timesteps, conditions).sample
        per_image = F.mse_loss(prediction.float(), target.float(), reduction="none").mean(dim=(1, 2, 3))
        by_set = (len(micro_batches), len(sets), batch_size)  # (micro-batch, set, image)
        per_image = per_image.view(by_set)
        instance_loss = per_image[:, 0]
        if config.snr_gamma:  # Min-SNR: stop easy, low-noise steps from dominating the gradient
            from diffusers.training_utils import compute_snr

            snr = compute_snr(noise_scheduler, timesteps.view(by_set)[:, 0])
            instance_loss = instance_loss * torch.clamp(snr, max=config.snr_gamma) / (snr + 1 if v_prediction else snr)
        loss = instance_loss.mean()  # equal-sized micro-batches: the mean of their means
        if len(sets) > 1:
            loss = loss + config.prior_loss_weight * per_image[:, 1].mean()
        return loss

    # -- set-up ----------------------------------------------------------------------------

    def _prepare(self, device: torch.device):
        """Load the models onto `device`, encode the data once, make the trainable weights and the
        optimizer. Yields Notes about fallbacks; returns the _Run, or None if cancelled meanwhile."""
        from accelerate import Accelerator
        from accelerate.state import AcceleratorState, GradientState
        from diffusers.optimization import get_scheduler

        config = self.config
        cuda = device.type == "cuda"
        precision = config.mixed_precision if config.mixed_precision != "auto" else ("fp16" if cuda else "no")
        if precision != "no" and not cuda:
            yield Note(f"Mixed precision {precision} needs a CUDA GPU; training in full precision (fp32) on "
                       f"{_device_name(device)}.")
            precision = "no"
        if cuda:  # one process's Accelerator puts models on "cuda": the current device of this thread
            torch.cuda.set_device(device)
        # accelerate keeps its settings process-wide and refuses new ones; the app trains pet after pet
        # in one process (one at a time per device), so each run starts from a clean state.
        AcceleratorState._reset_state(reset_partial_state=False)  # keeps a distributed launch's process group
        GradientState._reset_state()
        accelerator = Accelerator(mixed_precision=precision, cpu=device.type == "cpu")  # else CUDA or MPS
        if cuda:
            torch.backends.cuda.matmul.allow_tf32 = True  # free speed on Ampere+; DreamBooth doesn't need full fp32
            torch.backends.cudnn.allow_tf32 = True
        weight_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(precision, torch.float32)
        if self.init_model is not None:
            yield Note(f"Training further from {self.init_model.path} ({self.init_model.method}, "
                       f"weights sha256 {self.init_model_sha256[:12]}).")
            if self.init_model.pet.phrase != self.pet.phrase:
                yield Note(f"{self.init_model.path} learned \"{self.init_model.pet.phrase}\"; this run teaches "
                           f"\"{self.pet.phrase}\".")

        parts = self._load_models(accelerator.device)
        unet, vae, text_encoder, tokenizer, noise_scheduler = parts
        class_latents = None
        if config.prior_preservation:
            count, folder = config.num_class_images, self._class_images_folder()
            missing = missing_class_images(folder, count)
            pictures = f"pictures of \"{self.class_prompt}\""
            yield Note((f"Preparing {missing} {pictures} (kept for next time)" if missing == count else
                        f"Preparing {missing} more {pictures}, reusing {count - missing} made before" if missing else
                        f"Reusing the {count} {pictures} made before") +
                       f": they keep the model knowing what any {self.pet.class_noun} looks like, not only "
                       f"{self.pet.name}.")
            # A cancel while they are drawn (minutes on a small GPU) stops it, one process alone; several
            # stop together at the first step (see `_any_process`).
            stop = self._cancel.is_set if accelerator.num_processes == 1 else lambda: False
            with accelerator.main_process_first():  # one process fills the cache, the others read it
                class_photos = self._class_images(parts, folder, stop)
            if class_photos is None:
                return None
        _cast(vae, weight_dtype)
        instance_latents = encode_images(vae, [p.image for p in self.photos])
        if config.prior_preservation:
            class_latents = encode_images(vae, class_photos)
        torch.manual_seed(config.seed)  # LoRA's initial weights come from the global generator
        # After the class images: those must show the base model's idea of the class, not the init model's.
        trainable = self._make_trainable(unet, text_encoder, weight_dtype)
        prompt_embeddings = {}
        if not config.train_text_encoder:
            _cast(text_encoder, weight_dtype)
            prompts = (self.instance_prompt, self.class_prompt, *self.sample_prompts, "")  # "": the negative prompt
            prompt_embeddings = {p: encode_prompt(text_encoder, tokenizer, p) for p in prompts}
            if config.method == "lora":
                # Every prompt the run needs is encoded and every photo cached: the text encoder and the
                # VAE's encoder would only hold memory (0.6 GB at SD 1.5 size). `full` saves them.
                text_encoder, vae.encoder, vae.quant_conv = None, None, None
        if config.gradient_checkpointing:
            unet.enable_gradient_checkpointing()
        if cuda and not config.compile:  # compiled, inductor lays tensors out itself (channels_last broke it)
            unet.to(memory_format=torch.channels_last)
        optimizer, note = self._optimizer(list(trainable.values()), cuda)
        if note:
            yield Note(note)
        lr_scheduler = get_scheduler(config.lr_scheduler, optimizer, num_warmup_steps=config.lr_warmup_steps,
                                     num_training_steps=config.steps)
        unet, optimizer = accelerator.prepare(unet, optimizer)
        if config.train_text_encoder:  # a frozen module must not be wrapped for distributed training
            text_encoder = accelerator.prepare(text_encoder)
        if config.compile:
            _cache_compiled_kernels_in(self.data_dir / "compile-cache")
            unet = torch.compile(unet)
        return _Run(accelerator, unet, text_encoder, vae, tokenizer, noise_scheduler, trainable, optimizer,
                    lr_scheduler, instance_latents, class_latents, prompt_embeddings)

    def _resume(self, run: "_Run", passes: "_Passes"):
        """(step, losses, passes, seconds) restored from the newest checkpoint that can be read into `run`;
        yields a Note either way. Passes that out of GPU memory had shrunk stay so: the resumed run draws
        what the whole run would. A damaged checkpoint is set aside for the one before it."""
        checkpoints = self.checkpoints.complete()
        if not checkpoints:
            yield Note("No checkpoint to resume from; starting at step 0.")
            return 0, [], passes, 0.0
        for path in reversed(checkpoints):
            try:
                resumed = self.checkpoints.load(path, self.fingerprint, self.identity, run.trainable, run.optimizer,
                                                run.lr_scheduler, run.accelerator.scaler)
                break
            except CheckpointMismatch as mismatch:
                raise TrainingFailure(str(mismatch)) from None
            except CheckpointDamaged as damage:  # cut short outside PetDream, say: never by its own writes
                # Set aside by one process; the others, reading the same files, find the same damage (or
                # the folder already gone) and go back alike.
                if run.accelerator.is_main_process:
                    self.checkpoints.set_aside(path)
                yield Note(f"The checkpoint {path.name} cannot be read ({damage}); it is set aside as "
                           f"unreadable-{path.name}" + (", going back to the one before it." if path != checkpoints[0]
                                                        else "."))
        else:  # resumable: a run resumed now finds no checkpoint it can read, so starts over
            raise TrainingFailure(
                f"None of the checkpoints in {self.checkpoints.folder} can be read (they are set aside as "
                "unreadable-step-...). Resume to train again from step 0, or delete the folder.")
        yield Note(f"Resuming from step {resumed.step} ({resumed.path.name}).")
        yield Resumed(resumed.step, list(resumed.losses))
        if "passes" in resumed.loop_state:  # out of memory had shrunk them
            passes = _Passes(**resumed.loop_state["passes"])
            if passes.checkpointing_forced:
                run.plain(run.unet).enable_gradient_checkpointing()
            yield Note(f"Going on as the run did after running out of GPU memory: {passes.describe()}.")
        return resumed.step, resumed.losses, passes, resumed.loop_state.get("seconds", 0.0)

    def _load_models(self, device):
        """(unet, vae, text_encoder, tokenizer, DDPM noise scheduler) through the one pipeline loader."""
        from diffusers import DDPMScheduler

        pipeline = load_pipeline(self.profile.base_model, revision=self.profile.base_model_revision,
                                 device=device, dtype=torch.float32)
        for model in (pipeline.unet, pipeline.vae, pipeline.text_encoder):
            model.requires_grad_(False)
        noise_scheduler = DDPMScheduler.from_config(pipeline.scheduler.config)
        return pipeline.unet, pipeline.vae, pipeline.text_encoder, pipeline.tokenizer, noise_scheduler

    def _class_images_folder(self) -> Path:
        return class_images_folder(self.data_dir, self.profile.base_model_id, self.profile.base_model_revision,
                                   self.pet.class_noun, self.resolution, self.config.class_image_steps)

    def _class_images(self, parts, folder: Path, stop):
        unet, vae, text_encoder, tokenizer, noise_scheduler = parts
        pipeline = _pipeline_over(unet, vae, text_encoder, tokenizer, noise_scheduler)
        cuda = unet.device.type == "cuda"
        # Batches keep a GPU busy; on the CPU one image at a time keeps memory low and costs no speed.
        with quiet_libraries(), torch.autocast("cuda", torch.float16, enabled=cuda):
            return ensure_class_images(pipeline, folder, self.class_prompt, self.config.num_class_images,
                                       self.resolution, self.config.class_image_steps, batch_size=8 if cuda else 1,
                                       stop=stop)

    def _make_trainable(self, unet, text_encoder, weight_dtype) -> dict[str, torch.nn.Parameter]:
        """Switch on gradients for what this method trains; return those parameters by name."""
        config = self.config
        if config.method == "lora":
            from peft import LoraConfig

            _cast(unet, weight_dtype)  # the frozen base may be half precision; the adapter stays fp32
            unet.add_adapter(LoraConfig(r=config.rank, lora_alpha=config.lora_alpha or config.rank,
                                        init_lora_weights="gaussian", target_modules=list(config.lora_target_modules)))
            if config.train_text_encoder:
                _cast(text_encoder, weight_dtype)
                text_encoder.add_adapter(LoraConfig(r=config.rank, lora_alpha=config.lora_alpha or config.rank,
                                                    init_lora_weights="gaussian",
                                                    target_modules=["q_proj", "k_proj", "v_proj", "out_proj"]))
            for model in (unet, text_encoder):
                for name, parameter in model.named_parameters():
                    if "lora_" in name:
                        parameter.data = parameter.data.float()
            if self.init_model is not None:
                self._load_init_lora(unet, text_encoder)
        else:
            if self.init_model is not None:
                self._load_init_pipeline(unet, text_encoder)
            unet.requires_grad_(True)
            if config.train_text_encoder:
                text_encoder.requires_grad_(True)
        unet.train()
        text_encoder.train(config.train_text_encoder)
        named = {f"unet.{n}": p for n, p in unet.named_parameters() if p.requires_grad}
        named.update({f"text_encoder.{n}": p for n, p in text_encoder.named_parameters() if p.requires_grad})
        return named

    def _load_init_lora(self, unet, text_encoder) -> None:
        """Put the init model's LoRA into the adapters just added, the way diffusers' DreamBooth-LoRA
        script resumes (lora_state_dict, then peft names, then set_peft_model_state_dict). Every adapter
        weight must come from the file and every tensor in the file must land: a partial load would
        quietly train a half-new adapter."""
        from diffusers import StableDiffusionPipeline
        from diffusers.utils import (convert_state_dict_to_diffusers, convert_state_dict_to_peft,
                                     convert_unet_state_dict_to_peft)
        from peft.utils import set_peft_model_state_dict

        source = self.init_model.lora_weights
        state_dict, _ = StableDiffusionPipeline.lora_state_dict(source.parent, weight_name=source.name)
        parts = {"unet": (unet, convert_unet_state_dict_to_peft)}
        if self.config.train_text_encoder:
            parts["text_encoder"] = (text_encoder,
                                     lambda d: convert_state_dict_to_peft(convert_state_dict_to_diffusers(d)))
        missing, unexpected = [], [k for k in state_dict if k.split(".", 1)[0] not in parts]
        for prefix, (model, to_peft) in parts.items():
            part = to_peft({k[len(prefix) + 1:]: v for k, v in state_dict.items() if k.startswith(f"{prefix}.")})
            try:
                result = set_peft_model_state_dict(model, part, adapter_name="default")
            except RuntimeError as error:  # a tensor of another shape
                raise TrainingFailure(_unfit(source, f"tensors of other shapes ({_first_line(error)})")) from None
            # load_state_dict(strict=False) lists the whole base model as missing; only adapter weights count.
            missing += [f"{prefix}.{k}" for k in result.missing_keys if "lora_" in k]
            unexpected += [f"{prefix}.{k}" for k in result.unexpected_keys]
        if missing or unexpected:
            raise TrainingFailure(_unfit(source, _key_problems(missing, unexpected)))

    def _load_init_pipeline(self, unet, text_encoder) -> None:
        """Copy the init model's UNet and text encoder (trained or the base's copy, either way what it
        draws with) into the modules loaded from the base model, every weight or none."""
        from diffusers import UNet2DConditionModel

        folder = self.init_model.pipeline_dir
        for model, part, cls in ((unet, "unet", UNet2DConditionModel),
                                 (text_encoder, "text_encoder", type(text_encoder))):
            try:
                with quiet_libraries():
                    weights = cls.from_pretrained(folder, subfolder=part).state_dict()
                result = model.load_state_dict(weights, strict=False)
            except (OSError, ValueError, RuntimeError) as error:  # absent, damaged, or tensors of another shape
                raise TrainingFailure(_unfit(folder / part, _first_line(error))) from None
            if result.missing_keys or result.unexpected_keys:
                raise TrainingFailure(_unfit(folder / part, _key_problems(result.missing_keys, result.unexpected_keys)))

    def _optimizer(self, parameters, cuda: bool) -> tuple[torch.optim.Optimizer, str | None]:
        """(optimizer, a note on any fallback). 8-bit AdamW saves ~75% of optimizer memory on a full
        fine-tune; for LoRA's few weights plain fused AdamW is as small and faster."""
        config, note = self.config, None
        kwargs = dict(lr=config.learning_rate, betas=(0.9, 0.999), weight_decay=1e-2, eps=1e-8)
        wants_8bit = config.optimizer == "adamw8bit" or (config.optimizer == "auto" and cuda and config.method == "full")
        if wants_8bit and cuda:
            try:
                import bitsandbytes

                return bitsandbytes.optim.AdamW8bit(parameters, **kwargs), None
            except Exception as error:  # a broken CUDA setup shows up only here
                note = f"8-bit AdamW is unavailable ({type(error).__name__}: {error}); using AdamW."
        elif wants_8bit:
            # bitsandbytes runs it on a CPU, but ~28x slower than fused AdamW (263 vs 9.5 ms a step for 16.7 M
            # weights, measured on 2 cores), and a CPU's memory is not what 8-bit state is there to save.
            note = ("8-bit AdamW is made for CUDA GPUs (on a CPU it runs ~28x slower); using AdamW (32-bit state) "
                    "on the CPU.")
        return torch.optim.AdamW(parameters, fused=True, **kwargs), note  # one kernel for all tensors, CPU too

    def _check_output_folder(self, resume: bool) -> None:
        if self.output_dir.exists() and not self.output_dir.is_dir():  # found out only at the first write, else
            raise TrainingFailure(f"{self.output_dir} is a file, not a folder. Choose a folder for the pet model "
                                  "(a new one is made).", resumable=False)
        if (self.output_dir / METADATA_FILE).is_file():
            raise TrainingFailure(
                f"{self.output_dir} already holds a trained pet model. Choose another output folder, or "
                "delete it to train again.")
        if not resume and self.checkpoints.latest() is not None:
            raise TrainingFailure(
                f"{self.output_dir} holds checkpoints of an unfinished run. Add --resume to continue it, or "
                "delete the folder to start over.")

    def _check_init_model(self) -> None:
        """Refuse an init model this run cannot continue, saying what to do instead."""
        source, config, profile = self.init_model, self.config, self.profile
        if source is None:
            return
        start_fresh = "or train a new model from the base model (without --init-model)"
        theirs = (source.base_model_id, source.base_model_revision)
        if theirs != (profile.base_model_id, profile.base_model_revision):
            raise TrainingFailure(
                f"{source.path} was trained on the base model {_model_name(*theirs)}, but this run uses "
                f"{_model_name(profile.base_model_id, profile.base_model_revision)}. Train it further on its own "
                f"base model (profile {source.profile}), {start_fresh}.")
        if source.method != config.method:
            raise TrainingFailure(
                f"{source.path} was trained with the {source.method} method, but this run asks for {config.method}. "
                f"Training further keeps the method: use --method {source.method}, {start_fresh}.")
        if config.method != "lora":
            return
        recorded, wanted = lora_shape(source.training), config.lora_shape()
        if recorded is None:
            raise TrainingFailure(
                f"{source.path / METADATA_FILE} does not record its LoRA's rank and target modules "
                f"(training.rank, training.lora_target_modules), so its weights cannot be continued; {start_fresh}.")
        differ = [f"{name} {wanted[name]} (the model has {recorded[name]})" for name in wanted
                  if wanted[name] != recorded[name]]
        if differ:
            raise TrainingFailure(
                f"{source.path} is a LoRA of another shape than this run asks for: {'; '.join(differ)}. Training "
                f"further continues its weights, so their shape stays: use the model's values (the CLI takes them "
                f"when these flags are left out), {start_fresh}.")

    def _wait_for_device(self, device: torch.device):
        """An exclusive lock on the training device, shared by threads and processes; waits if taken.
        None if the run was cancelled while it waited."""
        # The CPU is counted per process of a launch, like a GPU: processes of one launch never wait for each other.
        index = device.index if device.type != "cpu" else int(os.environ.get("LOCAL_RANK", "0"))
        handle = _open_lock(self.lock_dir / f"train-{device.type}-{index or 0}.lock")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield Note(f"Another training is using {_device_name(device)}; this one starts when it ends.")
            while True:
                if self._cancel.is_set():
                    handle.close()
                    return None
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    time.sleep(0.2)
        return handle  # closing the file releases the lock

    # -- outputs ---------------------------------------------------------------------------

    def _save_checkpoint(self, run: "_Run", step: int, losses: list[float], passes: "_Passes", seconds: float) -> None:
        """Start writing the checkpoint of `step`, `seconds` into the run (one process writes it for all)."""
        if run.accelerator.is_main_process:
            loop_state = {"seconds": seconds} | ({"passes": asdict(passes)} if passes.shrunk else {})
            self.checkpoints.save(step, self.fingerprint, self.identity, losses, run.trainable, run.optimizer,
                                  run.lr_scheduler,
                                  run.accelerator.scaler, loop_state=loop_state)

    def _checkpoint_written(self, wait: bool) -> Iterator[CheckpointSaved]:
        """CheckpointSaved for a background write that has finished (`wait`: once it has)."""
        written = self.checkpoints.wait() if wait else self.checkpoints.written()
        if written is not None:
            yield CheckpointSaved(written.step, written.path)

    def _finish_checkpoint_write(self) -> None:
        """Wait for a checkpoint still being written. Its error is logged, not raised: the run is already
        ending with an error of its own, and the checkpoint before it stands."""
        try:
            self.checkpoints.wait()
        except Exception:
            logger.warning("A checkpoint could not be written; the one before it is kept.", exc_info=True)

    @torch.no_grad()
    def _sample(self, run: "_Run", step: int) -> Sample:
        """Pictures from the model as it is now: fixed prompts and seeds, comparable across steps."""
        prompts = list(self.sample_prompts)
        run.optimizer.zero_grad(set_to_none=True)  # the step is done: its gradients would only hold memory
        pipeline = run.pipeline()
        pipeline.unet.eval()
        # One batch, each image from its own seed: the same pictures as one by one, with half the
        # UNet calls (on a GPU a sampling step is bound by launching kernels, not by the batch).
        text = ({"prompt": prompts} if pipeline.text_encoder is not None else
                {"prompt_embeds": torch.cat([run.prompt_embeddings[p] for p in prompts]),
                 "negative_prompt_embeds": run.prompt_embeddings[""].expand(len(prompts), -1, -1)})
        with quiet_libraries(), run.accelerator.autocast():
            images = draw_seeded(pipeline, SAMPLE_SEEDS[:len(prompts)], text, num_inference_steps=self.config.sample_steps,
                                 height=self.resolution, width=self.resolution)
        pipeline.unet.train()
        return Sample(step, images, prompts)

    def _save_pet_model(self, run: "_Run", losses: list[float], sample: Sample, seconds: float,
                        passes: "_Passes") -> None:
        """Write weights, samples, loss.png, then petdream.json last: a folder with it is complete.
        The checkpoints go only then: a disk that fills meanwhile leaves them to resume from."""
        self.output_dir.mkdir(parents=True, exist_ok=True)
        with full_disk_as_oserror(self.output_dir):
            self._write_pet_model(run, losses, sample, seconds, passes)
        shutil.rmtree(self.checkpoints.folder, ignore_errors=True)  # only needed to resume an unfinished run

    def _write_pet_model(self, run: "_Run", losses: list[float], sample: Sample, seconds: float,
                         passes: "_Passes") -> None:
        from diffusers import StableDiffusionPipeline

        out, config = self.output_dir, self.config
        unet = run.plain(run.unet)
        text_encoder = run.plain(run.text_encoder) if run.text_encoder is not None else None
        if config.method == "lora":
            from diffusers.utils import convert_state_dict_to_diffusers
            from peft.utils import get_peft_model_state_dict

            kwargs = {"unet_lora_layers": convert_state_dict_to_diffusers(get_peft_model_state_dict(unet)),
                      "unet_lora_adapter_metadata": unet.peft_config["default"].to_dict()}
            if config.train_text_encoder:
                kwargs["text_encoder_lora_layers"] = convert_state_dict_to_diffusers(get_peft_model_state_dict(text_encoder))
                kwargs["text_encoder_lora_adapter_metadata"] = text_encoder.peft_config["default"].to_dict()
            StableDiffusionPipeline.save_lora_weights(out, weight_name=LORA_WEIGHTS_FILE, **kwargs)
        else:
            # What was not trained comes from the files it was loaded from (the init model's, else the
            # base model's): the run's copies were cast to fp16/bf16 under mixed precision, and casting
            # them back up would not undo the rounding.
            trained = {"unet": unet.float()} | ({"text_encoder": text_encoder.float()} if config.train_text_encoder else {})
            source, revision = ((self.init_model.pipeline_dir, None) if self.init_model is not None
                                else (self.profile.base_model, self.profile.base_model_revision))
            with quiet_libraries():
                pipeline = StableDiffusionPipeline.from_pretrained(
                    source, revision=revision, **trained, safety_checker=None, requires_safety_checker=False)
                pipeline.save_pretrained(out / PIPELINE_DIR)
        samples = _save_samples(out / "samples", sample)
        _plot_losses(out / "loss.png", losses)
        model = PetModel(
            path=out, pet=self.pet, base_model_id=self.profile.base_model_id,
            base_model_revision=self.profile.base_model_revision, base_model_commit=base_model_commit(self.profile),
            profile=self.profile.name, method=config.method,
            training={**config.to_dict(), "init_model": self._lineage(),
                      "resolution": self.resolution, "instance_prompt": self.instance_prompt,
                      "class_prompt": self.class_prompt if config.prior_preservation else None,
                      "steps_done": len(losses), "seconds": round(seconds, 1), "final_loss": losses[-1],
                      # What ran, where it differs from what was asked: a fallback, or out of memory's retry.
                      "mixed_precision_used": run.accelerator.mixed_precision, "device": str(run.accelerator.device),
                      "optimizer_used": type(getattr(run.optimizer, "optimizer", run.optimizer)).__name__,
                      "batch_size_used": passes.batch_size, "gradient_accumulation_used": passes.accumulation,
                      "gradient_checkpointing_used": config.gradient_checkpointing or passes.checkpointing_forced,
                      "processes": run.accelerator.num_processes,
                      "samples": samples},
            photos=[{"sha256": p.sha256, "width": p.width, "height": p.height} for p in self.photos],
            created_at=PetModel.now(),
        )
        fsync_tree(out, skip=self.checkpoints.folder)  # the weights are on disk before petdream.json says so
        model.write_metadata()

    def _lineage(self) -> dict | None:
        """Where this model's starting weights came from; None: the base model. The path is relative to
        this model's folder: it stays true when the two move together (a pet's folder does), and a model
        pushed to the Hub publishes no path of this machine."""
        if self.init_model is None:
            return None
        return {"path": os.path.relpath(self.init_model.path.resolve(), self.output_dir.resolve()),
                "sha256": self.init_model_sha256}


def further_training_settings(model: PetModel) -> dict:
    """TrainingConfig overrides for a run that trains `model` further: its method, whether it trained the
    text encoder and, for LoRA, its adapter's rank, alpha and target modules (values not recorded are None,
    which `TrainingConfig.preset` ignores). Explicit choices go on top; the trainer refuses ones that can't be."""
    training = model.training
    settings = {"method": model.method, "train_text_encoder": training.get("train_text_encoder")}
    if model.method == "lora":
        targets = training.get("lora_target_modules")
        settings.update(rank=training.get("rank"), lora_alpha=training.get("lora_alpha") or training.get("rank"),
                        lora_target_modules=tuple(targets) if targets else None)
    return settings


@dataclass
class _Passes:
    """How a step's images run: `accumulation` micro-batches of `batch_size`, in one pass if `fused`.
    Running out of GPU memory shrinks it (one process only: see `_out_of_memory_with_several_processes`);
    checkpoints then record it, so a resumed run draws the same."""

    batch_size: int
    accumulation: int
    fused: bool
    checkpointing_forced: bool = False  # out of memory's one retry is spent
    shrunk: bool = False  # by out of memory

    def describe(self) -> str:
        return (f"batch size {self.batch_size} x {self.accumulation} accumulation"
                + (", micro-batches one after another" if self.accumulation > 1 and not self.fused else "")
                + (", gradient checkpointing" if self.checkpointing_forced else ""))

    def shrink(self, step: int) -> str:
        """Run smaller after out of GPU memory at `step`; returns what to tell the person.
        Raises TrainingFailure when nothing smaller is left."""
        self.shrunk = True
        if self.fused and self.accumulation > 1:
            self.fused = False
            return (f"Out of GPU memory at step {step + 1} with the {self.accumulation} micro-batches in one pass; "
                    "running them one after another.")
        if self.checkpointing_forced:
            raise TrainingFailure(
                f"Out of GPU memory even with gradient checkpointing and batch size {self.batch_size}. "
                "Use the LoRA method, a lower resolution, or a GPU with more memory.")
        self.checkpointing_forced, self.fused = True, False  # fused, half-size micro-batches would make the same pass
        if self.batch_size > 1:  # keep the effective batch: half the images, twice the passes
            self.batch_size, self.accumulation = self.batch_size // 2, self.accumulation * 2
        return (f"Out of GPU memory at step {step + 1}: retrying with gradient checkpointing and "
                f"batch size {self.batch_size} x {self.accumulation} accumulation.")


@dataclass
class _Run:
    """What the steps of one run work with, built once by `DreamBoothTrainer._prepare`."""

    accelerator: object
    unet: torch.nn.Module  # as prepared by accelerate (maybe wrapped for DDP or compiled)
    text_encoder: torch.nn.Module | None  # None once every prompt is encoded (LoRA with a frozen encoder)
    vae: torch.nn.Module  # only its decoder is left when LoRA training has cached the latents
    tokenizer: object
    noise_scheduler: object  # DDPM, with the base model's noise schedule
    trainable: dict[str, torch.nn.Parameter]
    optimizer: torch.optim.Optimizer
    lr_scheduler: object
    instance_latents: LatentCache
    class_latents: LatentCache | None  # None without prior preservation
    prompt_embeddings: dict[str, torch.Tensor]  # (1, 77, hidden) per prompt; empty when the text encoder trains
    token_ids: dict[str, torch.Tensor] = field(default_factory=dict)  # (1, 77) per prompt, on the device

    def embeddings(self, prompt: str, batch: int) -> torch.Tensor:
        """(batch, 77, hidden) conditioning for `prompt`."""
        if prompt in self.prompt_embeddings:
            return self.prompt_embeddings[prompt].expand(batch, -1, -1)
        if prompt not in self.token_ids:  # copied to the device once, not every step
            self.token_ids[prompt] = tokenize(self.tokenizer, prompt).to(self.accelerator.device)
        return self.text_encoder(self.token_ids[prompt])[0].expand(batch, -1, -1)  # the encoder trains: with gradients

    def plain(self, module: torch.nn.Module) -> torch.nn.Module:
        """`module` without accelerate's wrappers or torch.compile's, for sampling and saving: a compiled
        UNet recompiles for inference (135 s for one sample on an H200), and names its weights `_orig_mod.*`."""
        return self.accelerator.unwrap_model(module, keep_torch_compile=False)

    def pipeline(self):
        """A pipeline over the weights being trained, for samples."""
        text_encoder = self.plain(self.text_encoder) if self.text_encoder is not None else None
        return _pipeline_over(self.plain(self.unet), self.vae, text_encoder, self.tokenizer, self.noise_scheduler)


def _pipeline_over(unet, vae, text_encoder, tokenizer, noise_scheduler):
    """A StableDiffusionPipeline sharing these modules (no copies), sampling with DPM-Solver++."""
    from diffusers import DPMSolverMultistepScheduler, StableDiffusionPipeline

    pipeline = StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, safety_checker=None,
        feature_extractor=None, requires_safety_checker=False,
        scheduler=DPMSolverMultistepScheduler.from_config(noise_scheduler.config, algorithm_type="dpmsolver++"))
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def _cache_compiled_kernels_in(folder: Path) -> None:
    """Keep torch.compile's kernels in `folder` unless the person chose a place (TORCHINDUCTOR_CACHE_DIR).
    torch's own place is under /tmp, which a Space loses at restart (a compiled run of the tiny UNet
    set up in 282 s cold, 25 s warm, on 2 CPU cores). torch writes that default into the variable when
    diffusers imports it, so "chose" means any other value."""
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    if os.environ.get("TORCHINDUCTOR_CACHE_DIR", default_cache_dir()) == default_cache_dir():
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(folder)


def _open_lock(path: Path):
    """The lock file at `path`, opened for flock. Its folder sits in the shared temp folder: it must be this
    user's (another could have made it, with a link in it to a file of ours), and a link is never followed."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    if path.parent.stat().st_uid != os.getuid():
        raise TrainingFailure(f"The lock folder {path.parent} belongs to another user. Set PETDREAM_LOCK_DIR to "
                              "a folder of your own.")
    try:
        return os.fdopen(os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600), "r+")
    except OSError as error:
        if error.errno != errno.ELOOP:
            raise
        raise TrainingFailure(f"The lock file {path} is a link, which PetDream does not follow there. Delete it "
                              "and start again.") from None


def _model_name(model_id: str, revision: str | None) -> str:
    return f"{model_id!r}" + (f" (revision {revision})" if revision else "")


def _training_device(requested: str) -> torch.device:
    """The device this process trains on, from the `device` setting (auto, cpu, cuda, cuda:N or mps).
    Under a launch of several processes each takes the GPU of its local rank, as accelerate does;
    a device this machine lacks fails the run, instead of training somewhere else unasked."""
    try:
        device = pick_device(requested)
    except RuntimeError as error:
        raise TrainingFailure(f"Cannot train: {error}. Choose a device it has (--device or PETDREAM_DEVICE: "
                              "auto, cpu, cuda, cuda:N or mps).") from None
    if device.type != "cuda":
        return device
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return torch.device("cuda", int(os.environ["LOCAL_RANK"]))
    return torch.device("cuda", device.index or 0)


def _device_name(device: torch.device) -> str:
    return "the CPU" if device.type == "cpu" else str(device)


def _out_of_memory_with_several_processes(accelerator, step: int) -> str:
    """Why a run under `accelerate launch` stops at out of memory instead of shrinking. The processes
    exchange gradients during the backward pass; one that fails part-way leaves the exchange broken
    (DDP: "Expected to have finished reduction in the prior iteration"), and one that shrank alone
    would no longer match what the others' checkpoints record."""
    return (f"Out of GPU memory at step {step + 1} on GPU {accelerator.process_index} of "
            f"{accelerator.num_processes}. With several GPUs PetDream cannot retry one GPU's step with a smaller batch. "
            "Free that GPU's memory and resume (--resume), or start again with --gradient-checkpointing, "
            "a smaller --batch-size (and more --gradient-accumulation), or the LoRA method.")


def _first_line(error: Exception) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


def _key_problems(missing: list[str], unexpected: list[str]) -> str:
    said = []
    if missing:
        said.append(f"{len(missing)} of the model's weights are not in it (e.g. {missing[0]})")
    if unexpected:
        said.append(f"{len(unexpected)} of its tensors fit nowhere in the model (e.g. {unexpected[0]})")
    return "; ".join(said)


def _unfit(source: Path, problem: str) -> str:
    return (f"The weights in {source} do not fit this run's model: {problem}. The folder may be damaged or "
            "written by another tool; copy it anew, or train a new model from the base model (without --init-model).")


def _cast(model: torch.nn.Module, dtype: torch.dtype) -> None:
    """Cast a frozen model for mixed precision; a no-op (and no diffusers warning) in fp32."""
    if dtype != torch.float32:
        model.to(dtype=dtype)


def _step_seed(seed: int, process: int, step: int, micro: int) -> int:
    """A distinct, reproducible seed for every (process, step, micro-batch) of a run: each number gets
    its own place value, so no two combinations meet (below a million processes, steps and micro-batches)."""
    return (((seed * 1_000_003 + process) * 1_000_003 + step) * 1_000_003 + micro) % (2**63)


def _save_samples(folder: Path, sample: Sample) -> list[dict]:
    """Write the sample images and a grid; return [{"file", "prompt", "seed"}] for petdream.json
    (the Hub's model card shows them with their prompts)."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for i, (image, prompt, seed) in enumerate(zip(sample.images, sample.prompts, SAMPLE_SEEDS)):
        name = f"{i:02d}-{re.sub(r'[^a-z0-9]+', '-', prompt.lower()).strip('-')[:60]}.png"
        image.save(folder / name)
        written.append({"file": f"{folder.name}/{name}", "prompt": prompt, "seed": seed})
    size = sample.images[0].size
    grid = Image.new("RGB", (size[0] * len(sample.images), size[1]))
    for i, image in enumerate(sample.images):
        grid.paste(image, (i * size[0], 0))
    grid.save(folder / "grid.png")
    return written


def _plot_losses(path: Path, losses: list[float]) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6, 3.5), dpi=100)
    FigureCanvasAgg(figure)  # the Agg backend, without pyplot's global state (the app trains in a worker thread)
    axes = figure.subplots()
    window = max(1, len(losses) // 20)
    axes.plot(range(1, len(losses) + 1), losses, linewidth=0.8 if window > 1 else 1.8,
              alpha=0.4 if window > 1 else 1.0, label="step")
    if window > 1:  # under 40 steps the mean of one step is the step itself
        smooth = [sum(losses[max(0, i - window + 1): i + 1]) / len(losses[max(0, i - window + 1): i + 1])
                  for i in range(len(losses))]
        axes.plot(range(1, len(losses) + 1), smooth, linewidth=1.8, label=f"mean of {window}")
    axes.set(xlabel="step", ylabel="loss", title="DreamBooth training loss")
    axes.legend()
    figure.tight_layout()
    figure.savefig(path)
