"""A1111 weighting, BREAK, long prompts and clip skip on each real SD architecture (tiny random pipelines).

The oracle is diffusers' own ``pipe.encode_prompt``: for plain short prompts
sdlab's embeddings must equal it; weighting must change exactly the weighted
token's position (up to the chunk's mean restoration); long prompts and
``BREAK`` add 77-position chunks instead of being cut.
"""
from __future__ import annotations

import types

import pytest
import torch
from diffusers import DiffusionPipeline

from sdlab.errors import ValidationError
from sdlab.prompts import encode_prompts, plain_text, text_family

CLIP_FAMILIES = ("sd1", "sd2", "sd2-inpaint")
ALL = CLIP_FAMILIES + ("sdxl", "sd3")
TEXT_FAMILY = {"sd1": "clip", "sd2": "clip", "sd2-inpaint": "clip", "sdxl": "sdxl", "sd3": "sd3"}
T5_LENGTH = 256
TOL = dict(atol=1e-6, rtol=1e-5)


@pytest.fixture(scope="module")
def load(family_dir):
    """``load(name)``: the family's pipeline, loaded once per module with plain diffusers."""
    cache: dict = {}

    def get(name):
        if name not in cache:
            pipe = DiffusionPipeline.from_pretrained(family_dir(name))
            pipe.set_progress_bar_config(disable=True)
            cache[name] = pipe
        return cache[name]

    return get


def oracle(pipe, name, prompt, negative_prompt, clip_skip=None):
    """diffusers' own encode_prompt, called with each pipeline's own argument order.

    Under no_grad, as the pipeline's ``__call__`` runs it (with grad enabled T5's kernels differ by ~1e-5).
    """
    with torch.no_grad():
        return _oracle(pipe, name, prompt, negative_prompt, clip_skip)


def _oracle(pipe, name, prompt, negative_prompt, clip_skip):
    if name == "sd3":
        out = pipe.encode_prompt(prompt, None, None, device="cpu", negative_prompt=negative_prompt, clip_skip=clip_skip)
    elif name == "sdxl":
        out = pipe.encode_prompt(prompt, None, device="cpu", negative_prompt=negative_prompt, clip_skip=clip_skip)
    else:
        out = pipe.encode_prompt(prompt, "cpu", 1, True, negative_prompt=negative_prompt, clip_skip=clip_skip)
    keys = ("prompt_embeds", "negative_prompt_embeds", "pooled_prompt_embeds", "negative_pooled_prompt_embeds")
    return dict(zip(keys, out))


def clip_widths(pipe, name) -> list[int]:
    """Feature widths of the CLIP encoders whose outputs are concatenated (each has its own mean restoration)."""
    if name in CLIP_FAMILIES:
        return [pipe.text_encoder.config.hidden_size]
    return [pipe.text_encoder.config.hidden_size, pipe.text_encoder_2.config.hidden_size]


@pytest.mark.parametrize("name", ALL)
def test_families_load_with_sdlab_and_diffusers(family_dir, name):
    from sdlab.models import load_pipeline

    path = family_dir(name)
    assert (path / "model_index.json").exists()
    assert sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) < 5e6
    pipe = load_pipeline(path, device="cpu")
    assert text_family(pipe) == TEXT_FAMILY[name]
    expected = {"sd1": "StableDiffusionPipeline", "sd2": "StableDiffusionPipeline", "sd2-inpaint": "StableDiffusionInpaintPipeline",
                "sdxl": "StableDiffusionXLPipeline", "sd3": "StableDiffusion3Pipeline"}[name]
    assert type(pipe).__name__ == expected
    assert pipe.vae_scale_factor == 8
    if name == "sd2":
        assert pipe.scheduler.config.prediction_type == "v_prediction"
    if name == "sd2-inpaint":
        assert pipe.unet.config.in_channels == 9
    if name == "sdxl":
        assert pipe.unet.config.addition_embed_type == "text_time"
    if name == "sd3":
        assert pipe.vae.config.latent_channels == 16 and type(pipe.scheduler).__name__ == "FlowMatchEulerDiscreteScheduler"


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("negative", ["", "blurry, ugly"])
def test_plain_prompts_equal_diffusers_encode_prompt(load, name, negative):
    pipe = load(name)
    ours = encode_prompts(pipe, "a photo of a red cat", negative, 1)
    # sdlab's empty negative is "no negative prompt": diffusers' None (SDXL: zeros, force_zeros_for_empty_prompt)
    theirs = oracle(pipe, name, "a photo of a red cat", negative or None)
    expected = {k: v for k, v in theirs.items() if v is not None}
    assert ours.keys() == expected.keys()
    for key in expected:
        torch.testing.assert_close(ours[key], expected[key], **TOL)


def test_sdxl_empty_negative_is_zeros(load):
    ours = encode_prompts(load("sdxl"), "a red cat", "", 1)
    assert not ours["negative_prompt_embeds"].any() and not ours["negative_pooled_prompt_embeds"].any()


@pytest.mark.parametrize("name", ["sdxl", "sd3"])
def test_embeddings_give_diffusers_own_latents(load, name):
    """End to end: the pipeline fed sdlab's embeddings denoises exactly as when fed the text."""
    pipe = load(name)
    common = dict(num_inference_steps=2, guidance_scale=5.0, width=64, height=64, output_type="latent")
    by_text = pipe("a red cat", generator=torch.Generator().manual_seed(3), **common).images
    by_embeds = pipe(**encode_prompts(pipe, "a red cat", "", 1), generator=torch.Generator().manual_seed(3), **common).images
    torch.testing.assert_close(by_embeds, by_text, **TOL)


def assert_scaled(weighted, plain, positions, factor):
    """``weighted`` = c * ``plain`` at every position, and c * factor at ``positions`` (c: mean restoration)."""
    others = [i for i in range(plain.shape[0]) if i not in positions]
    c = float((weighted[others] * plain[others]).sum() / (plain[others] ** 2).sum())
    assert c != pytest.approx(1.0, abs=1e-6)  # the mean was restored, so every position moved a little
    torch.testing.assert_close(weighted[others], c * plain[others], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(weighted[positions], factor * c * plain[positions], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("name", ALL)
def test_weights_scale_the_weighted_token(load, name):
    pipe = load(name)
    plain = encode_prompts(pipe, "a red cat", "", 1)
    weighted = encode_prompts(pipe, "a (red:1.5) cat", "", 1)
    assert not torch.allclose(weighted["prompt_embeds"], plain["prompt_embeds"])
    torch.testing.assert_close(weighted["negative_prompt_embeds"], plain["negative_prompt_embeds"], atol=0, rtol=0)
    start = 0
    for width in clip_widths(pipe, name):  # BOS, "a", "red": "red" is position 2 of the CLIP chunk
        assert_scaled(weighted["prompt_embeds"][0, :77, start : start + width], plain["prompt_embeds"][0, :77, start : start + width], [2], 1.5)
        start += width
    if name in ("sdxl", "sd3"):  # the pooled embedding is the first chunk's, unweighted (A1111, compel)
        torch.testing.assert_close(weighted["pooled_prompt_embeds"], plain["pooled_prompt_embeds"], atol=0, rtol=0)
    if name == "sd3":  # T5 is weighted per token: "▁a", "▁red", "▁cat", "</s>"
        assert_scaled(weighted["prompt_embeds"][0, 77:], plain["prompt_embeds"][0, 77:], [1], 1.5)
        assert not weighted["prompt_embeds"][0, :77, start:].any()  # CLIP padded with zeros up to T5's width


@pytest.mark.parametrize("name", ALL)
def test_long_prompts_are_chunked_not_cut(load, name):
    pipe = load(name)
    head = " ".join(["red"] * 75)
    one = encode_prompts(pipe, head + " cat on a blue sky", "blurry", 2)
    two = encode_prompts(pipe, head + " dog in a green forest", "blurry", 2)
    clip_length = 154
    total = clip_length + (T5_LENGTH if name == "sd3" else 0)
    assert one["prompt_embeds"].shape[:2] == (2, total)
    assert one["negative_prompt_embeds"].shape == one["prompt_embeds"].shape  # the negative is padded with empty chunks
    torch.testing.assert_close(one["prompt_embeds"][:, :77], two["prompt_embeds"][:, :77], atol=0, rtol=0)
    assert not torch.allclose(one["prompt_embeds"][:, 77:clip_length], two["prompt_embeds"][:, 77:clip_length])
    if name == "sd3":
        assert not torch.allclose(one["prompt_embeds"][:, clip_length:], two["prompt_embeds"][:, clip_length:])


def test_sd3_t5_takes_512_tokens_then_refuses(load):
    pipe = load("sd3")
    out = encode_prompts(pipe, " ".join(["red"] * 300), "", 1)
    assert out["prompt_embeds"].shape[1] == 4 * 77 + 512 and out["negative_prompt_embeds"].shape[1] == 4 * 77 + 512
    with pytest.raises(ValidationError, match=r"^prompt: .* at most 512 T5 tokens") as err:
        encode_prompts(pipe, " ".join(["red"] * 600), "", 1)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("name", ALL)
def test_break_starts_a_new_chunk(load, name):
    pipe = load(name)
    broken = encode_prompts(pipe, "a red cat BREAK a blue dog", "", 1)["prompt_embeds"]
    first = encode_prompts(pipe, "a red cat", "", 1)["prompt_embeds"]
    second = encode_prompts(pipe, "a blue dog", "", 1)["prompt_embeds"]
    torch.testing.assert_close(broken[:, :77], first[:, :77], **TOL)
    torch.testing.assert_close(broken[:, 77:154], second[:, :77], **TOL)
    if name == "sd3":  # T5 reads the whole prompt in one sequence, BREAK dropped
        whole = encode_prompts(pipe, "a red cat a blue dog", "", 1)["prompt_embeds"]
        torch.testing.assert_close(broken[:, 154:], whole[:, 77:], **TOL)
    else:
        assert broken.shape[1] == 154


@pytest.mark.parametrize("name", ["sd1", "sd2"])
def test_clip_skip_on_sd1_and_sd2(load, name):
    """Layer -2 through the final layer norm (diffusers' own SD 1.x path crashes on transformers 5.25 here)."""
    pipe = load(name)
    plain = encode_prompts(pipe, "a red cat", "", 1)["prompt_embeds"]
    skipped = encode_prompts(pipe, "a red cat", "", 1, clip_skip=2)
    ids = pipe.tokenizer("a red cat", padding="max_length", max_length=77, return_tensors="pt").input_ids
    with torch.no_grad():
        hidden = pipe.text_encoder(ids, output_hidden_states=True).hidden_states[-2]
        expected = pipe.text_encoder.final_layer_norm(hidden)
    torch.testing.assert_close(skipped["prompt_embeds"], expected, **TOL)
    assert not torch.allclose(skipped["prompt_embeds"], plain)


@pytest.mark.parametrize("name", ["sdxl", "sd3"])
def test_clip_skip_on_sdxl_and_sd3_is_diffusers_clip_skip_minus_one(load, name):
    pipe = load(name)
    ours = encode_prompts(pipe, "a red cat", "", 1, clip_skip=2)
    theirs = oracle(pipe, name, "a red cat", None, clip_skip=1)
    torch.testing.assert_close(ours["prompt_embeds"], theirs["prompt_embeds"], **TOL)
    torch.testing.assert_close(ours["pooled_prompt_embeds"], theirs["pooled_prompt_embeds"], **TOL)
    assert not torch.allclose(ours["prompt_embeds"], encode_prompts(pipe, "a red cat", "", 1)["prompt_embeds"])


@pytest.mark.parametrize("name", ["sd1", "sdxl"])
def test_clip_skip_beyond_the_encoder_is_refused(load, name):
    with pytest.raises(ValidationError, match=r"^clip_skip: 40 is not valid; valid: 1 to \d+ ") as err:
        encode_prompts(load(name), "a red cat", "", 1, clip_skip=40)
    assert "\n" not in str(err.value)


def test_unsupported_family_refuses_weighting_and_passes_plain_text():
    pipe = types.SimpleNamespace(components={"tokenizer": object(), "text_encoder": object()})
    assert text_family(pipe) is None
    assert encode_prompts(pipe, r"a \(red\) cat", "blurry", 2) == {"prompt": ["a (red) cat"] * 2, "negative_prompt": ["blurry"] * 2}
    for prompt, negative in (("a (red:1.3) cat", ""), ("a red cat", "[blurry]"), ("a red BREAK cat", "")):
        with pytest.raises(ValidationError, match="A1111 weighting and BREAK work with SD 1.x/2.x, SDXL and SD 3") as err:
            encode_prompts(pipe, prompt, negative, 1)
        assert "\n" not in str(err.value)
    with pytest.raises(ValidationError, match="^clip_skip: 2 is not valid"):
        encode_prompts(pipe, "a red cat", "", 1, clip_skip=2)


def test_plain_text():
    assert plain_text(r"a (red:1.3) \(big\) [cat] BREAK on a mat") == "a red (big) cat on a mat"


def test_sd3_without_t5_matches_diffusers(family_dir):
    """SD 3 loaded without its T5 (a common way to save memory): zeros in T5's place, as diffusers."""
    pipe = DiffusionPipeline.from_pretrained(family_dir("sd3"), text_encoder_3=None, tokenizer_3=None)
    assert text_family(pipe) == "sd3"
    ours = encode_prompts(pipe, "a photo of a red cat", "blurry", 1)
    theirs = oracle(pipe, "sd3", "a photo of a red cat", "blurry")
    for key in ours:
        torch.testing.assert_close(ours[key], theirs[key], **TOL)
    assert not ours["prompt_embeds"][:, 77:].any()
