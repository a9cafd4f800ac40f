"""The VAE latent codec on an untrained shapes-world-sized VAE built in-process (no trained files needed)."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from sdlab.compression.latent import (CODERS, LatentCodec, LatentHeader, available_coders, dither_to_palette,
                                      kmeans_palette, ladder, vae_id)
from sdlab.errors import CodecError, ValidationError
from sdlab.mini.model import ModelConfig, build_vae
from sdlab.mini.world import make_dataset


def _vae(seed: int):
    torch.manual_seed(seed)
    return build_vae(ModelConfig()).eval()


@pytest.fixture(scope="module")
def vae():
    return _vae(0)


@pytest.fixture(scope="module")
def codec(vae):
    return LatentCodec(vae)


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return make_dataset(3, seed=5)[0]


def test_round_trip_is_deterministic(codec, vae, images):
    data = codec.encode(images[0], 70)
    assert data == codec.encode(images[0], 70)
    first, second = codec.decode(data), codec.decode(data)
    assert first.shape == (64, 64, 3) and first.dtype == np.uint8
    assert np.array_equal(first, second)
    assert np.array_equal(LatentCodec(vae).decode(data), first)  # a fresh codec on the same VAE


def test_batched_decode_matches_one_by_one_to_rounding(codec, images):
    # a different batch size changes float summation order, so a pixel may round the other way
    datas = [codec.encode(im, 50) for im in images]
    for one, batched in zip([codec.decode(d) for d in datas], codec.decode_many(datas)):
        assert np.abs(one.astype(int) - batched).max() <= 1


def test_quantisation_error_is_within_half_a_step(codec, images):
    grid = codec.latents([images[1]])[0]
    header, back = codec.unpack(codec.encode(images[1], 100))
    assert header.levels == 256 and header.palette == 0
    step = (header.high.astype(np.float32) - header.low.astype(np.float32)) / 255
    assert np.all(np.abs(back - grid) <= step[:, None, None] * 0.5 + 2e-2 * np.abs(grid).max())


def test_fewer_levels_make_fewer_bytes(codec, images):
    sizes = [len(codec.encode(images[0], q)) for q in (1, 40, 100)]
    assert sizes[0] < sizes[1] < sizes[2]
    assert [ladder(q) for q in (1, 100)] == [2, 256]


@pytest.mark.parametrize("coder", CODERS)
def test_every_coder_decodes_to_the_same_latents(vae, images, coder):
    if coder not in available_coders():
        pytest.skip(f"{coder} not installed")
    reference = LatentCodec(vae, coder="raw").unpack(LatentCodec(vae, coder="raw").encode(images[0], 60))[1]
    c = LatentCodec(vae, coder=coder)
    header, grid = c.unpack(c.encode(images[0], 60))
    assert header.coder == coder and np.array_equal(grid, reference)


def test_auto_coder_is_never_larger_than_any_single_coder(vae, images):
    auto = len(LatentCodec(vae).encode(images[2], 80))
    assert all(auto <= len(LatentCodec(vae, coder=c).encode(images[2], 80)) for c in available_coders())


def test_palette_has_at_most_the_asked_entries_and_dithers(vae, images):
    c = LatentCodec(vae, palette=True)
    for q in (1, 30, 100):
        header, grid = c.unpack(c.encode(images[0], q))
        assert 1 <= header.palette <= ladder(q)
        assert c.decode(c.encode(images[0], q)).shape == (64, 64, 3)
    rng = np.random.default_rng(0)
    flat = np.full((2, 6, 6), 100, np.uint8)  # halfway between two entries: dithering alternates them
    pal = np.array([[90, 90], [110, 110]], np.uint8)
    idx = dither_to_palette(flat, pal, dither=True)
    assert 0.3 < idx.mean() < 0.7
    assert len(np.unique(dither_to_palette(flat, pal, dither=False))) == 1
    vectors = rng.integers(0, 256, (500, 4)).astype(np.uint8)
    assert len(kmeans_palette(vectors, 16)) <= 16
    assert len(kmeans_palette(vectors[:5], 16)) == 5  # fewer distinct vectors than entries: exact


def test_header_says_what_made_it(codec, images):
    data = codec.encode(images[0], 100)
    header = LatentHeader.unpack(data)
    assert (header.height, header.width, header.tile) == (64, 64, 0)
    assert header.channels == codec.vae.config.latent_channels
    assert header.vae_id == codec.id and header.size + 4 + 0 <= len(data)


def test_truncated_corrupt_and_foreign_strings_are_refused(codec, images):
    data = codec.encode(images[0], 100)
    for cut in (b"", data[:5], data[:20], data[:-1]):
        with pytest.raises(CodecError, match="truncated"):
            codec.decode(cut)
    for i in (3, 9, len(data) // 2, len(data) - 1):
        bad = bytearray(data)
        bad[i] ^= 0x40
        with pytest.raises(CodecError, match="corrupt|VAE|not an sdlab"):
            codec.decode(bytes(bad))
    with pytest.raises(CodecError, match="not an sdlab latent"):
        codec.decode(b"\x89PNG" + data[4:])
    with pytest.raises(CodecError, match="made for VAE"):
        LatentCodec(_vae(1)).decode(data)
    with pytest.raises(ValidationError, match="data"):
        codec.decode("not bytes")


def test_vae_id_is_stable_across_dtype_and_differs_between_vaes(vae):
    assert vae_id(vae) == vae_id(copy.deepcopy(vae).half())
    assert vae_id(vae) != vae_id(_vae(1))
    assert len(vae_id(vae)) == 4


def test_large_and_odd_images_go_through_in_tiles_or_whole(vae, images):
    big = np.tile(images[0], (2, 2, 1))[:100, :72]  # 100x72: two rows of 64-px tiles, padded
    c, f = vae.config.latent_channels, 2 ** (len(vae.config.block_out_channels) - 1)
    tiled = LatentCodec(vae)
    header, grid = tiled.unpack(tiled.encode(big, 60))
    assert header.tile == 64 and grid.shape == (c, 128 // f, 128 // f)  # 2x2 tiles of 64 px
    assert tiled.decode(tiled.encode(big, 60)).shape == big.shape
    whole = LatentCodec(vae, tile=None)
    header, grid = whole.unpack(whole.encode(big, 60))
    assert header.tile == 0 and grid.shape == (c, -(-100 // f), -(-72 // f))
    assert whole.decode(whole.encode(big, 60)).shape == big.shape


def test_budget_search_on_the_latent_codec(codec, images):
    smallest = len(codec.encode(images[0], 1))
    enc = codec.encode_to_budget(images[0], smallest + 40)
    assert enc.n_bytes <= smallest + 40 and enc.quality > 1
    assert len(codec.encode(images[0], enc.quality + 1)) > smallest + 40


def test_bad_options_name_themselves(vae):
    with pytest.raises(ValidationError, match="coder"):
        LatentCodec(vae, coder="brotli")
    with pytest.raises(ValidationError, match="tile"):
        LatentCodec(vae, tile=63)


def test_repair_pass_runs_a_few_denoising_steps_deterministically(vae, images, tmp_path):
    from diffusers import DPMSolverMultistepScheduler, StableDiffusionPipeline

    from sdlab.compression.latent import Repair
    from sdlab.mini import model as model_lib
    from sdlab.mini.tokenizer import save_tokenizer

    cfg = model_lib.ModelConfig()
    tok = save_tokenizer(["red", "circle"], tmp_path / "tok")
    torch.manual_seed(0)
    pipe = StableDiffusionPipeline(
        vae=vae, text_encoder=model_lib.build_text_encoder(cfg, tok), tokenizer=tok,
        unet=model_lib.build_unet(cfg).eval(),
        scheduler=DPMSolverMultistepScheduler.from_config(model_lib.build_noise_scheduler().config),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    codec = LatentCodec(vae)
    data = codec.encode(images[0], 100)
    repair = Repair(pipe, strength=0.1, steps=20)
    fixed = codec.decode_many([data], repair=repair)[0]
    assert fixed.shape == (64, 64, 3)
    assert np.array_equal(fixed, codec.decode_many([data], repair=repair)[0])  # seeded CPU noise
    assert not np.array_equal(fixed, codec.decode(data))
    with pytest.raises(ValidationError, match="strength"):
        Repair(pipe, strength=0)


def test_a_flat_latent_channel_survives_quantisation(codec):
    c = codec.vae.config.latent_channels
    side = 64 // codec.factor
    grid = np.random.default_rng(0).normal(size=(c, side, side)).astype(np.float32)
    grid[0] = 18.5  # max == min: the stored scale must not collapse to zero
    header, back = codec.unpack(codec.pack(grid, (64, 64), 100))
    assert np.isfinite(back).all() and np.allclose(back[0], 18.5, atol=0.02)


def test_mixed_sizes_batch_in_groups(vae, images):
    whole = LatentCodec(vae, tile=None)
    small = images[1][:40, :56]
    grids = whole.latents([images[0], small])
    assert grids[0].shape[1:] != grids[1].shape[1:]
    outs = whole.decode_many([whole.encode(images[0], 80), whole.encode(small, 80)])
    assert [o.shape for o in outs] == [(64, 64, 3), (40, 56, 3)]
