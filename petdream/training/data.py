"""Training data, encoded once: the frozen VAE and text encoder never change during a run, so
each photo's latent distribution and each prompt's embedding are computed a single time."""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from petdream.models.pipeline import draw_seeded

STALE_STAGING_S = 3600  # a class image half-written this long ago was left by a run that is gone


@dataclass
class LatentCache:
    """The VAE's latent distribution of each image and of its mirror image.

    mean, std: (n_images, 2, 4, resolution/8, resolution/8) float32; index 1 on the second
    axis is the horizontally flipped photo, so a random flip costs nothing.
    """

    mean: torch.Tensor
    std: torch.Tensor

    def __len__(self) -> int:
        return self.mean.shape[0]

    def sample(self, indices: torch.Tensor, flips: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Draw latents (batch, 4, h, w) for images `indices`, mirrored where `flips` is 1.

        Drawing from the distribution each step, as training through the VAE would, rather
        than reusing its mean keeps the same augmentation the reference scripts get.
        """
        # Random numbers come from the CPU generator (the same on every device, so runs reproduce);
        # non-blocking copies let the GPU keep working instead of waiting for each small transfer.
        device = self.mean.device
        noise = torch.randn((len(indices), *self.mean.shape[2:]), generator=generator)
        indices, flips = indices.to(device, non_blocking=True), flips.to(device, non_blocking=True)
        return self.mean[indices, flips] + self.std[indices, flips] * noise.to(device, non_blocking=True)


@torch.no_grad()
def encode_images(vae, images: list[Image.Image]) -> LatentCache:
    """LatentCache of RGB PIL images (all the same square size), on the VAE's device."""
    device, dtype = vae.device, vae.dtype
    # Batches keep a GPU busy; on the CPU one photo (and its flip) at a time is as fast, and the
    # encoder's activations for four would set the run's peak memory (~40 MB at 128 px, ~2 GB at 512).
    batch_size = 1 if device.type == "cpu" else 4
    means, stds = [], []
    for start in range(0, len(images), batch_size):
        pixels = torch.stack([_to_tensor(image) for image in images[start : start + batch_size]])
        pixels = torch.stack([pixels, pixels.flip(-1)], dim=1).flatten(0, 1)  # (2b, 3, H, W)
        dist = vae.encode(pixels.to(device, dtype)).latent_dist
        means.append(dist.mean.float().unflatten(0, (-1, 2)))
        stds.append(dist.std.float().unflatten(0, (-1, 2)))
    return LatentCache(torch.cat(means), torch.cat(stds))


@torch.no_grad()
def encode_prompt(text_encoder, tokenizer, prompt: str) -> torch.Tensor:
    """CLIP hidden states (1, 77, hidden) of `prompt`, as the UNet's cross-attention reads them."""
    ids = tokenize(tokenizer, prompt).to(text_encoder.device)
    return text_encoder(ids)[0].float()


def tokenize(tokenizer, prompt: str) -> torch.Tensor:
    return tokenizer(
        prompt, padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt"
    ).input_ids


def _to_tensor(image: Image.Image) -> torch.Tensor:
    """(3, H, W) in [-1, 1], the range SD's VAE was trained on."""
    array = np.asarray(image.convert("RGB"), dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(array).permute(2, 0, 1)


def class_images_folder(data_dir: Path, base_model_id: str, revision: str | None, class_noun: str, resolution: int,
                        steps: int) -> Path:
    """Where class images of one base model and class noun, drawn at `resolution` px in `steps`
    sampling steps, are cached, to be reused by every pet."""
    base = hashlib.sha256(f"{base_model_id}@{revision}".encode()).hexdigest()[:12]
    noun = "".join(c if c.isalnum() else "-" for c in class_noun.lower())
    return Path(data_dir) / "class-images" / base / f"{noun}-{resolution}px-{steps}steps"


@torch.no_grad()
def ensure_class_images(pipeline, folder: Path, prompt: str, count: int, resolution: int, steps: int,
                        batch_size: int = 1, stop: Callable[[], bool] = lambda: False) -> list[Image.Image] | None:
    """`count` images of `prompt` in `folder`, generating only the missing ones, `batch_size` per call;
    None if `stop()` said so before a call (the images drawn so far stay in the cache).

    Image i always uses seed i (its own generator, whatever the batch), so a cache filled over
    several runs equals one filled at once.
    """
    folder.mkdir(parents=True, exist_ok=True)
    for staged in folder.glob(".*.tmp"):  # a killed run's; a live writer's is seconds old
        with contextlib.suppress(FileNotFoundError):  # renamed into place meanwhile
            if time.time() - staged.stat().st_mtime > STALE_STAGING_S:
                staged.unlink()
    paths = _class_image_paths(folder, count)
    missing = [i for i, path in enumerate(paths) if not path.is_file()]
    for start in range(0, len(missing), batch_size):
        if stop():
            return None
        chunk = missing[start : start + batch_size]
        images = draw_seeded(pipeline, chunk, {"prompt": [prompt] * len(chunk)}, num_inference_steps=steps,
                             height=resolution, width=resolution)
        for i, image in zip(chunk, images):
            # Named for this writer: runs on two GPUs may fill one cache at once.
            staging = paths[i].with_name(f".{paths[i].stem}-{os.getpid()}-{threading.get_ident()}.tmp")
            image.save(staging, format="PNG")
            os.replace(staging, paths[i])  # a killed run never leaves half an image in the cache
    return [Image.open(path).convert("RGB") for path in paths]


def missing_class_images(folder: Path, count: int) -> int:
    """How many of the `count` class images `ensure_class_images` would have to draw in `folder`."""
    return sum(not path.is_file() for path in _class_image_paths(folder, count))


def _class_image_paths(folder: Path, count: int) -> list[Path]:
    return [folder / f"{i:04d}.png" for i in range(count)]
