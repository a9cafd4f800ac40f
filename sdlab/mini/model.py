"""Architecture of the shapes-world model: standard diffusers/transformers parts, small.

Sizes were chosen by measurement on a 2-core CPU (see ``benchmarks/``): a
VAE that downsamples by 4 (64x64 RGB <-> 4x16x16; at a factor of 8 a small
shape falls into one or two latent pixels and the VAE learned it several
times slower), a three-level UNet with cross-attention at 8x8 and 4x4, a
3-layer CLIP text encoder of width 128.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

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


POSTERIOR_LOGVAR = -30.0  # diffusers clamps a posterior's log-variance to [-30, 20]: -30 is the narrowest it can declare


def pin_posterior(vae: AutoencoderKL) -> AutoencoderKL:
    """Make the encoder declare the posterior it was trained with: its mean, with (next to) no variance. In place.

    The shapes world's VAE is trained on the posterior's mean (its KL term is tiny), and so is the UNet, on
    cached means; the log-variance half of ``quant_conv`` only ever met the KL term, which holds it at 0, a
    standard deviation of 1 (2 after scaling, twice the latents' own spread). diffusers' img2img and
    inpainting pipelines *sample* the posterior, so they started from the image buried in that noise:
    img2img at strength 0.05 came out further from its input than at 0.3. Pinning the log-variance to
    -30 (a scaled std below 1e-6) leaves the mean, the decoder and every text-to-image pixel as they were.
    """
    c = vae.config.latent_channels
    with torch.no_grad():
        vae.quant_conv.weight[c:] = 0.0
        vae.quant_conv.bias[c:] = POSTERIOR_LOGVAR
    return vae


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


TERMINAL_ALPHA_BAR = 1e-5  # alpha_bar at t = T: signal share of x_T, ~0 (SNR 1e-5)
SNR_SHIFT = 4.0  # divide SD's SNR by this at every t (Hoogeboom et al. 2023's schedule shift)


def zero_snr_betas(num_train_timesteps: int = 1000, beta_start: float = 0.00085, beta_end: float = 0.012,
                   snr_shift: float = SNR_SHIFT, terminal_alpha_bar: float = TERMINAL_ALPHA_BAR) -> list[float]:
    """SD's scaled-linear betas, made noisier by ``snr_shift`` and rescaled so x_T carries (almost) no signal.

    SD's own schedule ends at sqrt(alpha_bar_T) = 0.068. On a 16x16 latent of
    one flat shape the average over the shape's region then keeps an SNR near 1
    at t = T, and the layout stays readable from x_t for most of the schedule:
    a model trained on it copies where the shape is from x_t, which at
    inference is noise, so the seed, not the prompt, decides the position.
    Dividing the SNR by ``snr_shift`` (simple diffusion's shift, for an image
    far more redundant than its size suggests) puts more of training and
    sampling where the layout is still open; Lin et al. 2024's rescaling
    (Alg. 1: shift sqrt(alpha_bar) linearly to 0 at T) removes the rest. We stop
    at a tiny floor instead of 0 so every sampler's sigma_max stays finite
    (sqrt((1 - 1e-5) / 1e-5) = 316).
    """
    t = torch.linspace(beta_start**0.5, beta_end**0.5, num_train_timesteps, dtype=torch.float64) ** 2
    alpha_bar = torch.cumprod(1.0 - t, dim=0)
    snr = alpha_bar / (1 - alpha_bar) / snr_shift
    root = (snr / (1 + snr)).sqrt()
    first, last, floor = root[0].clone(), root[-1].clone(), terminal_alpha_bar**0.5
    root = (root - last) * (first - floor) / (first - last) + floor
    alpha_bar = root**2
    alphas = torch.cat([alpha_bar[:1], alpha_bar[1:] / alpha_bar[:-1]])
    return (1.0 - alphas).tolist()


def build_noise_scheduler() -> DDPMScheduler:
    """The training schedule: 1000 steps, SD's betas shifted and rescaled to ~zero terminal SNR, v-prediction.

    With (almost) no signal left at t = T the model must predict the whole
    layout from the text at the first step, which epsilon prediction cannot do
    (at SNR 0 the noise *is* x_T), hence v-prediction (Salimans & Ho 2022), as
    in SD 2.x. The betas are stored as ``trained_betas`` so every sampler built
    from this config walks the same schedule; "trailing" spacing makes the
    first inference step t = T, where training put pure noise. ``steps_offset``
    only shifts "leading" spacing; it is 1 because ``StableDiffusionPipeline``
    rewrites any other value to 1 (with a deprecation warning) on every load.
    """
    return DDPMScheduler(
        num_train_timesteps=1000, trained_betas=zero_snr_betas(), beta_schedule="scaled_linear",
        beta_start=0.00085, beta_end=0.012,
        prediction_type="v_prediction", clip_sample=False, steps_offset=1, timestep_spacing="trailing",
    )
