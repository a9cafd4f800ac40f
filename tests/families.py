"""Tiny random-weight pipelines of each real Stable Diffusion architecture, built offline in seconds.

Each family has the real model's *structure* (component classes, text
encoders, conditioning, latent channels, scheduler config, VAE downsampling
by 8) at toy widths, in the style of diffusers' own ``get_dummy_components``
tests, so code written for the real checkpoints runs unchanged on them:

- ``sd1``: SD 1.x, ``StableDiffusionPipeline``, one ``CLIPTextModel``, epsilon (PNDM config, as SD 1.5);
- ``sd2``: SD 2.1, linear-projection attention, GELU text encoder, ``v_prediction`` (DDIM config, as sd21);
- ``sd2-inpaint``: SD 2 inpainting, ``StableDiffusionInpaintPipeline``, 9-channel UNet (latents + mask + masked image);
- ``sd2-depth``: SD 2 depth, ``StableDiffusionDepth2ImgPipeline``, 5-channel UNet (latents + depth), v-prediction off
  (as stabilityai/stable-diffusion-2-depth: epsilon, DDIM config); no depth estimator (the user's depth map is passed);
- ``sdxl``: ``StableDiffusionXLPipeline``, ``CLIPTextModel`` + ``CLIPTextModelWithProjection`` (its tokenizer pads
  with ``!`` as SDXL's second tokenizer does), ``addition_embed_type="text_time"``;
- ``sd3``: ``StableDiffusion3Pipeline``, ``SD3Transformer2DModel`` (MMDiT, patch 2), two
  ``CLIPTextModelWithProjection`` + ``T5EncoderModel``, 16-channel VAE with SD3's shift/scale, flow matching.

The CLIP tokenizers are real byte-level BPE tokenizers over a small vocabulary
(:func:`sdlab.mini.tokenizer.build_vocab`; any text still tokenizes); the T5
tokenizer is transformers' own ``T5Tokenizer`` over a small Unigram vocabulary
made in-process (no sentencepiece model needed). Weights come from fixed torch
seeds, so a family's directory is the same on every build.

``make_family(name, directory)`` saves the whole pipeline (``model_index.json``
and every component) and returns the directory; ``build_family(name)`` returns
the pipeline object without saving.
"""
from __future__ import annotations

from pathlib import Path

FAMILIES = ("sd1", "sd2", "sd2-inpaint", "sdxl", "sd3", "sd2-depth")
WORDS = (
    "a an the of on in at with and photo painting portrait drawing of cat dog fox bird tree house car "
    "red green blue yellow white black small large circle square triangle background sky city forest "
    "night day sunset river mountain masterpiece detailed blurry ugly"
).split()
T5_PIECES_SCORE, T5_CHAR_SCORE = -5.0, -10.0
SCALED_LINEAR = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000)


def clip_tokenizer(directory: Path, pad_token: str | None = None):
    """A CLIP tokenizer over :data:`WORDS` (pad with ``pad_token``, else ``<|endoftext|>`` as CLIP-L does)."""
    from transformers import CLIPTokenizer

    from sdlab.mini.tokenizer import BOS, EOS, MAX_LENGTH, build_vocab

    vocab, merges = build_vocab(WORDS)
    tok = CLIPTokenizer(vocab=vocab, merges=merges, bos_token=BOS, eos_token=EOS, unk_token=EOS,
                        pad_token=pad_token or EOS, model_max_length=MAX_LENGTH)
    directory.mkdir(parents=True, exist_ok=True)
    tok.save_pretrained(directory)
    return CLIPTokenizer.from_pretrained(directory)


def t5_tokenizer(directory: Path):
    """transformers' ``T5Tokenizer`` over a Unigram vocabulary of :data:`WORDS` plus single characters."""
    import string

    from transformers import T5Tokenizer

    chars = string.ascii_letters + string.digits + string.punctuation
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    pieces += [("▁" + w, T5_PIECES_SCORE) for w in dict.fromkeys(WORDS)]
    pieces += [(c, T5_CHAR_SCORE) for c in chars] + [("▁" + c, T5_CHAR_SCORE) for c in chars]
    tok = T5Tokenizer(vocab=pieces, extra_ids=0, model_max_length=512)
    directory.mkdir(parents=True, exist_ok=True)
    tok.save_pretrained(directory)
    return T5Tokenizer.from_pretrained(directory)


def _clip_encoder(tokenizer, hidden: int, projection: int | None, seed: int, sd2: bool = False):
    import torch
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config = CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=4,
        num_attention_heads=4, max_position_embeddings=77, layer_norm_eps=1e-5,
        hidden_act="gelu" if sd2 else "quick_gelu", projection_dim=projection or hidden,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = (CLIPTextModelWithProjection if projection else CLIPTextModel)(config)
    return model.eval()


def _vae(latent_channels: int = 4, sd3: bool = False):
    """4 levels (downsampling by 8, as every real SD VAE), 8 channels each."""
    import torch
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    extra = dict(use_quant_conv=False, use_post_quant_conv=False, shift_factor=0.0609, scaling_factor=1.5035) if sd3 else \
        dict(scaling_factor=0.18215)
    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=latent_channels, block_out_channels=(8, 8, 8, 8),
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        layers_per_block=1, norm_num_groups=4, sample_size=64, **extra,
    ).eval()


def _unet(cross_attention_dim: int, in_channels: int = 4, sd2: bool = False, sdxl_pooled: int | None = None):
    import torch
    from diffusers import UNet2DConditionModel

    extra: dict = {}
    if sd2 or sdxl_pooled:
        extra.update(use_linear_projection=True, attention_head_dim=(2, 4))
    if sdxl_pooled:
        extra.update(addition_embed_type="text_time", addition_time_embed_dim=8,
                     projection_class_embeddings_input_dim=6 * 8 + sdxl_pooled, transformer_layers_per_block=(1, 2))
    torch.manual_seed(0)
    return UNet2DConditionModel(
        sample_size=8, in_channels=in_channels, out_channels=4, layers_per_block=1, block_out_channels=(16, 32),
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=cross_attention_dim, norm_num_groups=4, **extra,
    ).eval()


def build_family(name: str, work_dir: Path):
    """The pipeline object of family ``name`` (tokenizers are written under ``work_dir``)."""
    import diffusers

    if name not in FAMILIES:
        raise KeyError(f"family: {name!r} is not one of {', '.join(FAMILIES)}")
    work_dir = Path(work_dir)
    if name == "sd2-depth":
        tok = clip_tokenizer(work_dir / "tokenizer")
        scheduler = diffusers.DDIMScheduler(**SCALED_LINEAR, clip_sample=False, set_alpha_to_one=False, steps_offset=1)
        return diffusers.StableDiffusionDepth2ImgPipeline(
            vae=_vae(), text_encoder=_clip_encoder(tok, 32, None, seed=0, sd2=True), tokenizer=tok, scheduler=scheduler,
            unet=_unet(32, in_channels=5, sd2=True), depth_estimator=None, feature_extractor=None,
        )
    if name in ("sd1", "sd2", "sd2-inpaint"):
        sd2 = name != "sd1"
        tok = clip_tokenizer(work_dir / "tokenizer")
        encoder = _clip_encoder(tok, 32, None, seed=0, sd2=sd2)
        if name == "sd1":
            scheduler = diffusers.PNDMScheduler(**SCALED_LINEAR, skip_prk_steps=True, steps_offset=1, set_alpha_to_one=False)
        else:
            scheduler = diffusers.DDIMScheduler(**SCALED_LINEAR, clip_sample=False, set_alpha_to_one=False, steps_offset=1,
                                                prediction_type="v_prediction" if name == "sd2" else "epsilon")
        cls = diffusers.StableDiffusionInpaintPipeline if name == "sd2-inpaint" else diffusers.StableDiffusionPipeline
        return cls(
            vae=_vae(), text_encoder=encoder, tokenizer=tok, scheduler=scheduler,
            unet=_unet(32, in_channels=9 if name == "sd2-inpaint" else 4, sd2=sd2),
            safety_checker=None, feature_extractor=None, requires_safety_checker=False,
        )
    if name == "sdxl":
        tok = clip_tokenizer(work_dir / "tokenizer")
        tok_2 = clip_tokenizer(work_dir / "tokenizer_2", pad_token="!")
        encoder = _clip_encoder(tok, 32, None, seed=0)
        encoder_2 = _clip_encoder(tok_2, 48, 24, seed=1, sd2=True)
        scheduler = diffusers.EulerDiscreteScheduler(**SCALED_LINEAR, steps_offset=1, timestep_spacing="leading",
                                                     interpolation_type="linear", use_karras_sigmas=False)
        return diffusers.StableDiffusionXLPipeline(
            vae=_vae(), text_encoder=encoder, text_encoder_2=encoder_2, tokenizer=tok, tokenizer_2=tok_2,
            unet=_unet(32 + 48, sdxl_pooled=24), scheduler=scheduler,
        )
    # sd3
    import torch
    from transformers import T5Config, T5EncoderModel

    tok = clip_tokenizer(work_dir / "tokenizer")
    tok_2 = clip_tokenizer(work_dir / "tokenizer_2", pad_token="!")
    tok_3 = t5_tokenizer(work_dir / "tokenizer_3")
    encoder = _clip_encoder(tok, 32, 16, seed=0)
    encoder_2 = _clip_encoder(tok_2, 48, 24, seed=1, sd2=True)
    torch.manual_seed(2)
    encoder_3 = T5EncoderModel(T5Config(
        vocab_size=len(tok_3), d_model=96, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
        relative_attention_num_buckets=8, feed_forward_proj="gated-gelu", is_encoder_decoder=False,
        pad_token_id=tok_3.pad_token_id, eos_token_id=tok_3.eos_token_id, decoder_start_token_id=tok_3.pad_token_id,
    )).eval()
    torch.manual_seed(0)
    transformer = diffusers.SD3Transformer2DModel(
        sample_size=8, patch_size=2, in_channels=16, out_channels=16, num_layers=2, attention_head_dim=8,
        num_attention_heads=4, caption_projection_dim=32, joint_attention_dim=96, pooled_projection_dim=16 + 24,
        pos_embed_max_size=16,
    ).eval()
    return diffusers.StableDiffusion3Pipeline(
        transformer=transformer, vae=_vae(16, sd3=True), scheduler=diffusers.FlowMatchEulerDiscreteScheduler(shift=3.0),
        text_encoder=encoder, text_encoder_2=encoder_2, text_encoder_3=encoder_3,
        tokenizer=tok, tokenizer_2=tok_2, tokenizer_3=tok_3,
    )


def make_family(name: str, directory: str | Path) -> Path:
    """Save family ``name`` as a full pipeline directory (``model_index.json`` + components); return it."""
    import tempfile

    directory = Path(directory)
    with tempfile.TemporaryDirectory() as work:
        pipe = build_family(name, Path(work))
        pipe.save_pretrained(directory)
    for sub in ("tokenizer", "tokenizer_2"):  # CLIP's vocab.json/merges.txt beside tokenizer.json, as real checkpoints
        if (directory / sub).is_dir():
            from sdlab.mini.tokenizer import write_vocab_files

            write_vocab_files(getattr(pipe, sub), directory / sub)
    return directory
