"""Architecture of the shapes-world model: standard diffusers/transformers parts, small.

Sizes were chosen by measurement on a 2-core CPU (see ``../shared/DESIGN.md``
and ``benchmarks/``): an 8x8x4 latent, a two-level UNet with cross-attention
at both levels (about 15 ms per classifier-free-guidance call), a 3-layer
CLIP text encoder of width 128.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from . import tokenizer as tokenizer_lib
from .world import IMAGE_SIZE

LATENT_CHANNELS = 4
VAE_FACTOR = 8  # 64x64 image -> 8x8 latent, as SD's VAE
TEXT_WIDTH = 128


@dataclass(frozen=True)
class ModelConfig:
    """The knobs of the shapes-world architecture (the defaults are what ships)."""

    unet_channels: tuple[int, ...] = (64, 128)
    unet_heads: int = 4
    text_layers: int = 3
    text_width: int = TEXT_WIDTH
    vae_channels: tuple[int, ...] = (16, 32, 64, 64)

    def to_dict(self) -> dict:
        return asdict(self)


def build_vae(cfg: ModelConfig) -> AutoencoderKL:
    """A 4-level KL autoencoder: 64x64 RGB <-> 4x8x8 latents."""
    n = len(cfg.vae_channels)
    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=LATENT_CHANNELS,
        down_block_types=("DownEncoderBlock2D",) * n, up_block_types=("UpDecoderBlock2D",) * n,
        block_out_channels=cfg.vae_channels, layers_per_block=1, norm_num_groups=8,
        sample_size=IMAGE_SIZE,
    )


def build_text_encoder(cfg: ModelConfig, tok: CLIPTokenizer) -> CLIPTextModel:
    """A small CLIP text transformer over the project's vocabulary."""
    config = CLIPTextConfig(
        vocab_size=len(tok), hidden_size=cfg.text_width, intermediate_size=4 * cfg.text_width,
        projection_dim=cfg.text_width, num_hidden_layers=cfg.text_layers, num_attention_heads=4,
        max_position_embeddings=tokenizer_lib.MAX_LENGTH,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
    )
    return CLIPTextModel(config)


def build_unet(cfg: ModelConfig) -> UNet2DConditionModel:
    """A two-level conditional UNet with cross-attention at both levels."""
    n = len(cfg.unet_channels)
    return UNet2DConditionModel(
        sample_size=IMAGE_SIZE // VAE_FACTOR, in_channels=LATENT_CHANNELS, out_channels=LATENT_CHANNELS,
        block_out_channels=cfg.unet_channels,
        down_block_types=("CrossAttnDownBlock2D",) * n, up_block_types=("CrossAttnUpBlock2D",) * n,
        layers_per_block=1, cross_attention_dim=cfg.text_width, attention_head_dim=cfg.unet_heads,
    )


def build_noise_scheduler() -> DDPMScheduler:
    """SD 1.x's training schedule: 1000 steps, scaled-linear betas, epsilon prediction."""
    return DDPMScheduler(
        num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
        prediction_type="epsilon", clip_sample=False, steps_offset=1, timestep_spacing="leading",
    )
