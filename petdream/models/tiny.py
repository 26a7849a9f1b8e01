"""The `tiny` profile's models: small, random-weight copies of the real architectures.

Nothing can be downloaded from the Hub offline, so the tiny profile builds a Stable Diffusion
pipeline, a CLIP model and a DINO ViT from configs with random weights (seeded, so every
build is identical), saves them with `save_pretrained`, and from then on they are loaded with
exactly the same `from_pretrained` code as the real checkpoints. Their outputs mean nothing;
their shapes, code paths and file formats are the real ones.

The only real piece is CLIP's tokenizer: its BPE vocabulary ships inside the `open_clip_torch`
wheel, and `clip_tokenizer()` rebuilds from it the vocab.json/merges.txt that give token ids
identical to `openai/clip-vit-large-patch14`'s tokenizer.
"""

from __future__ import annotations

import functools
import gzip
import importlib.util
import shutil
import tempfile
from pathlib import Path

import torch

from petdream.models.pipeline import quiet_libraries

# Bump when a config below changes, so caches built by older code are not reused.
TINY_VERSION = 1
RESOLUTION = 128  # px; the VAE downsamples 8x, as SD's does, so latents are 16x16
CLIP_MAX_TOKENS = 77
SEED = 0


def tiny_models_dir(data_dir: Path) -> Path:
    return Path(data_dir) / "models" / f"tiny-v{TINY_VERSION}"


def ensure_tiny_models(data_dir: Path) -> Path:
    """Build the tiny SD pipeline, CLIP and DINO under `data_dir` once; return their folder.

    The folder holds `sd/` (a StableDiffusionPipeline), `clip/` (CLIPModel + CLIPProcessor)
    and `dino/` (ViTModel + image processor). It is built in a temporary folder and renamed
    into place, so a crash or a concurrent build never leaves a half-written model behind.
    """
    target = tiny_models_dir(data_dir)
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".building-", dir=target.parent))
    try:
        with quiet_libraries():
            build_tiny_sd(staging / "sd")
            build_tiny_clip(staging / "clip")
            build_tiny_dino(staging / "dino")
        staging.rename(target)
    except OSError:
        if not target.is_dir():  # another process finished first: use theirs
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


@functools.cache
def clip_tokenizer():
    """CLIP's real tokenizer, rebuilt offline from the BPE merges in the open_clip wheel.

    Built once per process (~2 s): trigger choice, prompt fitting and the tiny model share it."""
    from transformers import CLIPTokenizer

    spec = importlib.util.find_spec("open_clip")  # locates the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "The tiny profile needs CLIP's BPE vocabulary from the open_clip_torch wheel. "
            "Install it with: pip install --no-deps -r requirements-nodeps.txt"
        )
    bpe_path = Path(spec.submodule_search_locations[0]) / "bpe_simple_vocab_16e6.txt.gz"
    lines = gzip.open(bpe_path).read().decode("utf-8").split("\n")
    # The same slice as OpenAI's simple_tokenizer: 48,894 merges after a header line.
    merges = [tuple(line.split()) for line in lines[1 : 49152 - 256 - 2 + 1]]
    byte_chars = list(_bytes_to_unicode().values())
    tokens = byte_chars + [c + "</w>" for c in byte_chars]
    tokens += ["".join(merge) for merge in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {token: i for i, token in enumerate(tokens)}
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=CLIP_MAX_TOKENS)


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character table, which CLIP's BPE is written in."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    chars = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, map(chr, chars)))


def _tiny_clip_text_config(**extra):
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        vocab_size=49408,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=CLIP_MAX_TOKENS,
        bos_token_id=49406,
        eos_token_id=49407,
        pad_token_id=49407,
        **extra,
    )


def build_tiny_sd(folder: Path) -> None:
    """A Stable Diffusion 1.x pipeline at 128 px: same blocks and attention layout as SD 1.5
    (cross-attention down/up blocks, so LoRA targets to_q/to_k/to_v/to_out.0 exist), narrower."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel

    torch.manual_seed(SEED)
    unet = UNet2DConditionModel(
        sample_size=RESOLUTION // 8,
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 64, 64),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=64,
        attention_head_dim=8,
        norm_num_groups=32,
    )
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        block_out_channels=(16, 32, 32, 32),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=16,
        sample_size=RESOLUTION,
    )
    text_encoder = CLIPTextModel(_tiny_clip_text_config(projection_dim=64))
    save_sd_pipeline(folder, unet, vae, text_encoder)


def save_sd_pipeline(folder: Path, unet, vae, text_encoder) -> None:
    """Save these models as a StableDiffusionPipeline folder, with SD 1.5's scheduler config (so noise
    levels and timesteps match the real model's) and CLIP's tokenizer, loadable by `from_pretrained`."""
    from diffusers import PNDMScheduler, StableDiffusionPipeline

    scheduler = PNDMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                              num_train_timesteps=1000, set_alpha_to_one=False, skip_prk_steps=True, steps_offset=1)
    pipeline = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=clip_tokenizer(), unet=unet,
                                       scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                       requires_safety_checker=False)
    pipeline.save_pretrained(folder)


def build_tiny_clip(folder: Path) -> None:
    """CLIP (vision + text) with 64-d embeddings on 64 px images, for CLIPScore/CLIP-I/CLIP-T."""
    from transformers import CLIPConfig, CLIPImageProcessorPil, CLIPModel, CLIPProcessor, CLIPVisionConfig

    torch.manual_seed(SEED)
    vision = CLIPVisionConfig(
        hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        image_size=64, patch_size=8,
    )
    config = CLIPConfig(text_config=_tiny_clip_text_config().to_dict(), vision_config=vision.to_dict(), projection_dim=64)
    CLIPModel(config).save_pretrained(folder)
    image_processor = CLIPImageProcessorPil(size={"shortest_edge": 64}, crop_size={"height": 64, "width": 64})
    CLIPProcessor(image_processor=image_processor, tokenizer=clip_tokenizer()).save_pretrained(folder)


def build_tiny_dino(folder: Path) -> None:
    """A ViT shaped like DINO ViT-S/16 (CLS token, patch grid), narrower, on 64 px images."""
    from transformers import ViTConfig, ViTImageProcessorPil, ViTModel

    torch.manual_seed(SEED)
    config = ViTConfig(
        hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        image_size=64, patch_size=8,
    )
    ViTModel(config, add_pooling_layer=False).save_pretrained(folder)
    ViTImageProcessorPil(size={"height": 64, "width": 64}).save_pretrained(folder)
