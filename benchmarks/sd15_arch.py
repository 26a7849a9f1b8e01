"""Build a Stable Diffusion 1.5-shaped pipeline with random weights, for benchmarks.

The Hub is not needed: every component is built from SD 1.5's published configs (UNet
860 M parameters, VAE 84 M, CLIP ViT-L/14 text encoder 123 M), seeded, and saved with
`save_pretrained`, so trainers load it with the same `from_pretrained` code as the real
checkpoint and spend the same compute per step. Its images are noise; only shapes matter.
The tokenizer is CLIP's real BPE, rebuilt offline by `petdream.models.tiny.clip_tokenizer()`.

    python benchmarks/sd15_arch.py /work/bench/sd15-arch     # ~4.3 GB on disk, ~1 min
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

import torch

SEED = 0
CLIP_MAX_TOKENS = 77


def build_sd15_arch(folder: Path) -> None:
    """Write the random-weight SD 1.5-shaped StableDiffusionPipeline into `folder`."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from petdream.models.tiny import save_sd_pipeline

    torch.manual_seed(SEED)
    unet = UNet2DConditionModel(
        sample_size=64,
        in_channels=4,
        out_channels=4,
        block_out_channels=(320, 640, 1280, 1280),
        layers_per_block=2,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        cross_attention_dim=768,
        attention_head_dim=8,
        norm_num_groups=32,
        act_fn="silu",
        flip_sin_to_cos=True,
        freq_shift=0,
        downsample_padding=1,
        mid_block_scale_factor=1,
        norm_eps=1e-5,
    )
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        block_out_channels=(128, 256, 512, 512),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        layers_per_block=2,
        latent_channels=4,
        norm_num_groups=32,
        act_fn="silu",
        sample_size=512,
    )
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=49408,
            hidden_size=768,
            intermediate_size=3072,
            num_hidden_layers=12,
            num_attention_heads=12,
            max_position_embeddings=CLIP_MAX_TOKENS,
            hidden_act="quick_gelu",
            layer_norm_eps=1e-5,
            projection_dim=768,
            bos_token_id=49406,
            eos_token_id=49407,
            pad_token_id=49407,
        )
    )
    save_sd_pipeline(folder, unet, vae, text_encoder)


def ensure_sd15_arch(folder: Path) -> Path:
    """Build the pipeline into `folder` unless it is already there; return `folder`.

    It is written to a staging folder beside it and renamed, so an interrupted build never
    leaves a half-written model that a later run would take for a complete one.
    """
    folder = Path(folder)
    if (folder / "model_index.json").is_file():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}-building-", dir=folder.parent))
    try:
        build_sd15_arch(staging)
        staging.rename(folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path, help="where to write the pipeline (skipped if already built)")
    args = parser.parse_args(argv)
    print(ensure_sd15_arch(args.folder))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # so `petdream` imports from a checkout
    sys.exit(main())
