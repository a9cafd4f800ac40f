"""Architecture of the shapes-world model: standard diffusers/transformers parts, small.

Sizes were chosen by measurement on a 2-core CPU (see ``benchmarks/``): a
VAE that downsamples by 4 (64x64 RGB <-> 4x16x16; at a factor of 8 a small
shape falls into one or two latent pixels and the VAE learned it several
times slower), a three-level UNet with cross-attention at 8x8 and 4x4 (about
17 ms per classifier-free-guidance call), a 3-layer CLIP text encoder of width 128.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from . import tokenizer as tokenizer_lib
from .world import IMAGE_SIZE

TEXT_WIDTH = 128


@dataclass(frozen=True)
class ModelConfig:
    """The knobs of the shapes-world architecture (the defaults are what ships)."""

    unet_channels: tuple[int, ...] = (32, 64, 128)
    unet_attention: tuple[bool, ...] = (False, True, True)  # cross-attention per level
    unet_heads: int = 4
    text_layers: int = 3
    text_width: int = TEXT_WIDTH
    vae_channels: tuple[int, ...] = (16, 32, 64)
    latent_channels: int = 4
    vae_norm_groups: int = 8

    @property
    def vae_factor(self) -> int:
        """How much the VAE downsamples: 2 per level after the first."""
        return 2 ** (len(self.vae_channels) - 1)

    def to_dict(self) -> dict:
        return asdict(self)


def build_vae(cfg: ModelConfig) -> AutoencoderKL:
    """A 3-level KL autoencoder: 64x64 RGB <-> 4x16x16 latents."""
    n = len(cfg.vae_channels)
    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=cfg.latent_channels,
        down_block_types=("DownEncoderBlock2D",) * n, up_block_types=("UpDecoderBlock2D",) * n,
        block_out_channels=cfg.vae_channels, layers_per_block=1, norm_num_groups=cfg.vae_norm_groups,
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
    """A conditional UNet; cross-attention on the levels ``cfg.unet_attention`` marks."""
    down = tuple("CrossAttnDownBlock2D" if a else "DownBlock2D" for a in cfg.unet_attention)
    up = tuple("CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(cfg.unet_attention))
    return UNet2DConditionModel(
        sample_size=IMAGE_SIZE // cfg.vae_factor, in_channels=cfg.latent_channels, out_channels=cfg.latent_channels,
        block_out_channels=cfg.unet_channels,
        down_block_types=down, up_block_types=up,
        layers_per_block=1, cross_attention_dim=cfg.text_width, attention_head_dim=cfg.unet_heads,
    )


def build_noise_scheduler() -> DDPMScheduler:
    """SD 1.x's training schedule: 1000 steps, scaled-linear betas, epsilon prediction."""
    return DDPMScheduler(
        num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
        prediction_type="epsilon", clip_sample=False, steps_offset=1, timestep_spacing="leading",
    )
