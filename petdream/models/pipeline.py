"""Loading a Stable Diffusion pipeline: the one `from_pretrained` path every profile uses."""

from __future__ import annotations

import contextlib
import logging
import warnings
from pathlib import Path

import torch

logger = logging.getLogger(__name__)


@contextlib.contextmanager
def quiet_libraries():
    """Hold back transformers', diffusers' and peft's chatter while PetDream drives them.

    What they say here is either expected or said better by PetDream itself: diffusers asks
    transformers for `CLIPImageProcessor`, which in transformers 5 wants torchvision, kept out
    on purpose (it drags in a CUDA torch); a pet LoRA has no text-encoder part; several pets'
    adapters on one UNet are the design, not a mistake; prompt truncation is reported by the
    Generator with the words that were cut. Progress bars for cached models are noise too.
    """
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    levels = transformers_logging.get_verbosity(), diffusers_logging.get_verbosity()
    transformers_logging.set_verbosity_error()
    diffusers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()
    diffusers_logging.disable_progress_bar()
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Already found a `peft_config`")
            yield
    finally:
        transformers_logging.set_verbosity(levels[0])
        diffusers_logging.set_verbosity(levels[1])
        transformers_logging.enable_progress_bar()
        diffusers_logging.enable_progress_bar()


def load_pipeline(model: str, *, revision: str | None = None, device: torch.device, dtype: torch.dtype):
    """A StableDiffusionPipeline from a Hub id or a local folder, on `device` in `dtype`.

    The safety checker is not loaded: PetDream screens prompts before they reach the model
    (a pet picture has no business being NSFW), and the checker costs 1.2 GB and blacks out
    whole images on false alarms.
    """
    with quiet_libraries():
        from diffusers import StableDiffusionPipeline

        try:
            pipeline = StableDiffusionPipeline.from_pretrained(
                model,
                revision=revision,
                dtype=dtype,
                safety_checker=None,
                requires_safety_checker=False,
            )
        except (OSError, ValueError) as error:
            where = "local folder" if Path(model).exists() else "Hub model"
            raise RuntimeError(
                f"Could not load the base pipeline from the {where} {model!r}: {error}. "
                "Check PETDREAM_BASE_MODEL (a Hub id or a diffusers folder), or run offline "
                "with --profile tiny."
            ) from error
    pipeline.to(device)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def draw_seeded(pipeline, seeds: list[int], batched: dict, **settings) -> list:
    """The images `pipeline` draws, image i from a generator seeded `seeds[i]`; `batched` holds the per-image
    inputs (a list or a tensor, an entry per image: prompts, or prompt embeddings). In one call; out of GPU
    memory, one call per image, which needs a batch's worth less memory and draws the same images (each one
    has its own generator, made anew for the retry)."""
    def generators(chosen):
        return [torch.Generator("cpu").manual_seed(seed) for seed in chosen]

    try:
        return pipeline(**batched, generator=generators(seeds), **settings).images
    except torch.OutOfMemoryError:
        if len(seeds) == 1:
            raise
    # Retried here, not in `except`: its traceback would keep the failed batch's tensors alive.
    logger.warning("out of GPU memory drawing %d images at once; drawing them one by one", len(seeds))
    torch.cuda.empty_cache()
    return [pipeline(**{name: value[i:i + 1] for name, value in batched.items()}, generator=generators(seeds[i:i + 1]),
                     **settings).images[0] for i in range(len(seeds))]
