"""Evaluator: a pet model and its photos in, an EvaluationReport out.

The protocol is DreamBench's (Ruiz et al. 2023): every prompt is drawn `images_per_prompt`
times, image i with seed i, and the images are compared with the prompt (CLIPScore, CLIP-T) and
with the pet's photos (CLIP-I, DINO, SSIM, FID). The base model draws the same prompts with the
same seeds, so every number has a "before training" beside it.

The run is a generator of events (events.py), like training's, so the CLI draws a progress bar
from it and the app drives it from a worker thread.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence

import torch
from PIL import Image

from petdream.evaluation.config import EvaluationConfig
from petdream.evaluation.events import Event, Failed, Finished, Note, Progress
from petdream.evaluation.metrics import FID_MIN_IMAGES, MetricModels, Reference, ScoreSheet
from petdream.evaluation.prompts import EvaluationPrompt, render_prompt
from petdream.evaluation.report import EvaluationReport, ModelResult, PromptResult
from petdream.generate import MAX_IMAGES_PER_CALL, Generator
from petdream.models import TINY_WARNING, Profile
from petdream.petmodel import PetModel
from petdream.photos import Photo

logger = logging.getLogger(__name__)


class EvaluationFailure(Exception):
    """Stops a run; the message is shown to the person as is."""


class Evaluator:
    """Scores pet models on `profile`: its base model draws, its CLIP and DINO judge.

    generator: a Generator to share (the app keeps one); default: a new one on `device`.
    The metric models load on the first run and stay for the next ones.
    """

    def __init__(self, profile: Profile, *, device: str = "auto", dtype: str = "auto",
                 generator: Generator | None = None):
        self.profile = profile
        self.generator = generator or Generator(profile, device=device, dtype=dtype)
        self.metrics = MetricModels(profile.clip_model, profile.dino_model, device=self.generator.device)

    def evaluate(self, pet: PetModel, photos: Sequence[Photo | Image.Image],
                 config: EvaluationConfig = EvaluationConfig(), on_event=None) -> EvaluationReport:
        """Run to the end; return the report or raise EvaluationFailure with the reason."""
        for event in self.run(pet, photos, config):
            if on_event:
                on_event(event)
            if isinstance(event, Finished):
                return event.report
            if isinstance(event, Failed):
                raise EvaluationFailure(event.reason)
        raise EvaluationFailure("The evaluation ended without a result.")

    def run(self, pet: PetModel, photos: Sequence[Photo | Image.Image],
            config: EvaluationConfig = EvaluationConfig()) -> Iterator[Event]:
        """Draw and score, yielding events; the last one is Finished or Failed.

        photos: the pet's photos, ideally the accepted ones from `petdream.photos.intake` (any
            square size; each metric resizes them as it needs).
        """
        started = time.monotonic()
        try:
            prompts = [render_prompt(template, pet.pet) for template in config.templates()]
            warnings = self._warnings(pet, photos, len(prompts) * config.images_per_prompt)
            for warning in warnings:
                yield Note(warning)
            reference = self.metrics.reference([getattr(p, "image", p) for p in photos], config.ssim_size)
            models = [("pet", pet)] + ([("baseline", None)] if config.baseline else [])
            clock = _Clock(total=len(models) * len(prompts) * config.images_per_prompt)
            results = {}
            for which, model in models:
                results[which] = yield from self._draw_and_score(which, model, prompts, reference, config, clock)
        except torch.OutOfMemoryError:
            yield Failed("Out of GPU memory while drawing or scoring. Lower --images-per-prompt, or free the GPU "
                         "of other work, and run the evaluation again.")
            return
        except (ValueError, RuntimeError) as error:  # the engine's errors are written for people
            logger.error("The evaluation failed", exc_info=True)
            yield Failed(str(error))
            return
        report = EvaluationReport(
            pet=pet, profile=self.profile, config=config, result=results["pet"], baseline=results.get("baseline"),
            n_photos=reference.count, warnings=warnings, seconds=time.monotonic() - started,
        )
        yield Finished(report, report.seconds)

    def _draw_and_score(self, which: str, pet: PetModel | None, prompts: list[EvaluationPrompt],
                        reference: Reference, config: EvaluationConfig, clock: "_Clock"):
        """One model over every prompt (pet=None: the base model); returns its ModelResult."""
        sheet = ScoreSheet(self.metrics, reference)
        results = []
        for prompt in prompts:
            images = self._draw(prompt.text, pet, config)
            results.append(PromptResult(prompt, sheet.add(images, prompt.caption), images))
            yield clock.tick(len(images), which, prompt.text)
        model = str(pet.path) if pet is not None else self.profile.base_model_id
        return ModelResult(model, results, sheet.overall(), sheet.frechet_distance())

    def _draw(self, prompt: str, pet: PetModel | None, config: EvaluationConfig) -> list[Image.Image]:
        """`images_per_prompt` images of `prompt`, image i with seed i."""
        images = []
        for first in range(0, config.images_per_prompt, MAX_IMAGES_PER_CALL):
            count = min(MAX_IMAGES_PER_CALL, config.images_per_prompt - first)
            images += self.generator.generate(
                prompt, pet=pet, seed=first, num_images=count, steps=config.steps,
                guidance_scale=config.guidance_scale, scheduler=config.scheduler,
            ).images
        return images

    def _warnings(self, pet: PetModel, photos: Sequence[Photo | Image.Image], n_images: int) -> list[str]:
        """What the person should know before reading the numbers."""
        warnings = []
        if self.profile.random_weights:
            warnings.append(TINY_WARNING)
        if min(n_images, len(photos)) < 2:
            warnings.append("FID needs at least 2 photos and 2 generated images; it is left out of this report.")
        elif min(n_images, len(photos)) < FID_MIN_IMAGES:
            warnings.append(
                f"FID here compares {n_images} generated images with {len(photos)} photos. With fewer than "
                f"{FID_MIN_IMAGES} images in a set FID is unreliable (its 2048-dimensional statistics are mostly "
                "noise): compare the pet's FID with the base model's, and do not read it as an absolute number."
            )
        trained_on = {photo.get("sha256") for photo in pet.photos}
        given = {photo.sha256 for photo in photos if isinstance(photo, Photo)}
        if trained_on and given and not trained_on & given:
            warnings.append(
                f"None of these photos are the ones {pet.pet.name}'s model was trained on, so subject fidelity "
                "(CLIP-I, DINO, SSIM, FID) measures likeness to these photos, not recall of the training set."
            )
        return warnings


class _Clock:
    """Counts images drawn and estimates the time left from the rate so far."""

    def __init__(self, total: int):
        self.total, self.done, self.started = total, 0, time.monotonic()

    def tick(self, images: int, which: str, prompt: str) -> Progress:
        self.done += images
        rate = self.done / max(time.monotonic() - self.started, 1e-9)
        return Progress(self.done, self.total, which, prompt, (self.total - self.done) / rate)
