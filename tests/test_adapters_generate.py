"""LoRAs and embeddings applied by generate on tiny pipelines of each real family, with plain diffusers as the oracle.

The oracle: a fresh pipeline from the same directory with the file loaded by diffusers itself
(``load_lora_weights`` + ``set_adapters``; ``load_textual_inversion``), run through the same
generation path, gives the same pixels as sdlab's ``<lora:NAME:W>`` / embedding name in the prompt.
And the user's pipeline is the same afterwards: pixels, modules, parameters, flags, tokenizer.
"""
import shutil

import diffusers
import numpy as np
import pytest
import torch
from adapters_kit import CONV_TARGETS, UNET_TARGETS, allow_transformers_peft, embedding_vectors, make_lora

from sdlab.adapters.apply import prepare_adapters
from sdlab.adapters.embeddings import save_embedding
from sdlab.adapters.lora import export_kohya, lora_hash
from sdlab.adapters.networks import AdapterFolders
from sdlab.errors import ValidationError
from sdlab.generate import generate, generate_many
from sdlab.models import family, load_pipeline
from sdlab.prompts import encode_prompts
from sdlab.spec import GenerationSpec

SPEC = GenerationSpec("a photo of a red cat", negative_prompt="blurry", seed=3, steps=3, sampler="Euler", guidance=5.0)


@pytest.fixture(scope="module")
def pipes(family_dir):
    cache = {}

    def get(name):
        if name not in cache:
            cache[name] = load_pipeline(str(family_dir(name)), device="cpu")
        return cache[name]

    return get


def _state(pipe) -> tuple:
    """Everything that would show a change to the user's pipeline: module types, tensors (by identity), flags."""
    out = []
    for name in ("unet", "transformer", "text_encoder", "text_encoder_2"):
        model = getattr(pipe, name, None)
        if model is not None:
            out.append((name, [type(m).__name__ for m in model.modules()],
                        [(k, v.data_ptr(), v.requires_grad) for k, v in model.named_parameters()],
                        hasattr(model, "peft_config")))
    out.append(len(pipe.tokenizer))
    return tuple(out)


@pytest.mark.parametrize("name", ["sd1", "sd2", "sdxl", "sd3"])
def test_lora_equals_plain_diffusers_and_leaves_the_pipe_alone(pipes, family_dir, tmp_path, monkeypatch, name):
    allow_transformers_peft(monkeypatch)
    pipe = pipes(name)
    fam = family(pipe)
    loras = tmp_path / "loras"
    make_lora(pipe, fam, loras / "style.safetensors")
    before, state = generate(pipe, SPEC).arrays(), _state(pipe)
    ours = generate(pipe, SPEC.replace(prompt=SPEC.prompt + " <lora:style:0.7>"), adapters=AdapterFolders(lora_dirs=[loras]))
    reference = load_pipeline(str(family_dir(name)), device="cpu")
    reference.load_lora_weights(str(loras / "style.safetensors"), adapter_name="style")
    reference.set_adapters(["style"], [0.7])
    theirs = generate(reference, SPEC).arrays()
    assert np.array_equal(ours.arrays(), theirs)
    assert np.abs(ours.arrays().astype(int) - before).max() > 10  # the LoRA changed the image: the test can fail
    assert np.array_equal(generate(pipe, SPEC).arrays(), before) and _state(pipe) == state
    assert ours.specs[0].extra["Lora hashes"] == f"style: {lora_hash(loras / 'style.safetensors')}"
    assert ours.specs[0].prompt.endswith("<lora:style:0.7>")  # the tag stays in the recorded prompt, as in A1111


@pytest.mark.parametrize("name, targets", [("sd1", UNET_TARGETS), ("sd2", UNET_TARGETS), ("sdxl", UNET_TARGETS), ("sd1", CONV_TARGETS),
                                           ("sdxl", CONV_TARGETS)],
                         ids=["sd1-attention", "sd2-attention", "sdxl-attention", "sd1-attention+conv", "sdxl-attention+conv"])
def test_kohya_export_gives_the_same_images_through_diffusers_converter(pipes, family_dir, tmp_path, monkeypatch, name, targets):
    """Also with LoCon-style targets (projections, feed-forward, ResNet convolutions): every layer survives both
    layouts (a diffusers-format file whose attention keys alone were renamed lost them in diffusers' loader)."""
    allow_transformers_peft(monkeypatch)
    pipe = pipes(name)
    fam = family(pipe)
    src = make_lora(pipe, fam, tmp_path / "d" / "pytorch_lora_weights.safetensors", alpha=2.0, targets=targets)
    loras = tmp_path / "loras"
    loras.mkdir()
    export_kohya(src, loras / "k.safetensors", family=fam, unet_config=pipe.unet.config)
    shutil.copy(src, loras / "d.safetensors")
    folders = AdapterFolders(lora_dirs=[loras])
    via_diffusers_format = generate(pipe, SPEC.replace(prompt="a cat <lora:d:1>"), adapters=folders).arrays()
    via_kohya = generate(pipe, SPEC.replace(prompt="a cat <lora:k:1>"), adapters=folders).arrays()
    reference = load_pipeline(str(family_dir(name)), device="cpu")
    reference.load_lora_weights(str(loras / "k.safetensors"))  # plain diffusers detects kohya's keys itself
    assert np.array_equal(via_kohya, via_diffusers_format)
    assert np.array_equal(via_kohya, generate(reference, SPEC.replace(prompt="a cat ")).arrays())
    reference = load_pipeline(str(family_dir(name)), device="cpu")
    reference.load_lora_weights(str(src))
    layer = reference.unet.down_blocks[0].attentions[0].transformer_blocks[0].attn1.to_q
    assert hasattr(layer, "lora_A") and np.array_equal(via_kohya, generate(reference, SPEC.replace(prompt="a cat ")).arrays())
    assert not np.array_equal(via_kohya, generate(pipe, SPEC.replace(prompt="a cat ")).arrays())


def test_fused_lora_and_te_unet_multipliers(pipes, family_dir, tmp_path, monkeypatch):
    """A1111 merges the LoRA into the weights; diffusers' fuse_lora does the same: equal to float rounding.
    ``<lora:x:TE:UNET>`` scales the text encoder's and the UNet's layers separately."""
    allow_transformers_peft(monkeypatch)
    pipe = pipes("sd1")
    make_lora(pipe, "sd1", tmp_path / "l" / "x.safetensors")
    folders = AdapterFolders(lora_dirs=[tmp_path / "l"])
    ours = generate(pipe, SPEC.replace(prompt="a cat <lora:x:0.8>"), adapters=folders).arrays().astype(int)
    fused = load_pipeline(str(family_dir("sd1")), device="cpu")
    fused.load_lora_weights(str(tmp_path / "l" / "x.safetensors"))
    fused.fuse_lora(lora_scale=0.8)
    assert np.abs(generate(fused, SPEC.replace(prompt="a cat ")).arrays().astype(int) - ours).max() <= 2
    used = prepare_adapters(pipe, SPEC.replace(prompt="a cat <lora:x:0.25:1.5>"), folders)
    te_layer = used.pipe.text_encoder.encoder.layers[0].self_attn.q_proj
    unet_layer = used.pipe.unet.down_blocks[0].attentions[0].transformer_blocks[0].attn1.to_q
    assert te_layer.scaling["sdlab_call_0"] == pytest.approx(0.25 * 8 / 4)
    assert unet_layer.scaling["sdlab_call_0"] == pytest.approx(1.5 * 8 / 4)


def test_the_users_own_adapter_stays_active_beside_the_calls(pipes, family_dir, tmp_path, monkeypatch):
    allow_transformers_peft(monkeypatch)
    user = load_pipeline(str(family_dir("sd1")), device="cpu")
    make_lora(user, "sd1", tmp_path / "a" / "mine.safetensors", seed=1, text=False)
    make_lora(user, "sd1", tmp_path / "l" / "other.safetensors", seed=2, text=False)
    user.load_lora_weights(str(tmp_path / "a" / "mine.safetensors"), adapter_name="mine")
    before, adapters = generate(user, SPEC).arrays(), user.get_active_adapters()
    ours = generate(user, SPEC.replace(prompt=SPEC.prompt + " <lora:other:1>"), adapters=AdapterFolders(lora_dirs=[tmp_path / "l"]))
    reference = load_pipeline(str(family_dir("sd1")), device="cpu")
    reference.load_lora_weights(str(tmp_path / "a" / "mine.safetensors"), adapter_name="mine")
    reference.load_lora_weights(str(tmp_path / "l" / "other.safetensors"), adapter_name="other")
    reference.set_adapters(["mine", "other"], [1.0, 1.0])
    assert np.array_equal(ours.arrays(), generate(reference, SPEC).arrays())
    assert user.get_active_adapters() == adapters and list(user.unet.peft_config) == ["mine"]
    assert np.array_equal(generate(user, SPEC).arrays(), before)


@pytest.mark.parametrize("name", ["sd1", "sd2", "sdxl"])
def test_embedding_equals_diffusers_load_textual_inversion(pipes, family_dir, tmp_path, name):
    pipe = pipes(name)
    folder = tmp_path / "emb"
    vectors = embedding_vectors(pipe, n=2)
    path = save_embedding(folder / "shiny.safetensors", "shiny", vectors)
    prompt, negative = "a photo of shiny cat", "blurry shiny"
    state = _state(pipe)
    used = prepare_adapters(pipe, SPEC.replace(prompt=prompt, negative_prompt=negative), AdapterFolders(embedding_dirs=[folder]))
    ours = encode_prompts(used.pipe, used.prompt, used.negative_prompt, 1)
    ref = diffusers.DiffusionPipeline.from_pretrained(str(family_dir(name)))
    if name == "sdxl":
        ref.load_textual_inversion(vectors["clip_l"], token="shiny", text_encoder=ref.text_encoder, tokenizer=ref.tokenizer)
        ref.load_textual_inversion(vectors["clip_g"], token="shiny", text_encoder=ref.text_encoder_2, tokenizer=ref.tokenizer_2)
        embeds = ref.encode_prompt(prompt, device="cpu", num_images_per_prompt=1, do_classifier_free_guidance=True, negative_prompt=negative)
        keys = ["prompt_embeds", "negative_prompt_embeds", "pooled_prompt_embeds", "negative_pooled_prompt_embeds"]
    else:
        ref.load_textual_inversion(str(path), token="shiny")
        embeds = ref.encode_prompt(prompt, "cpu", 1, True, negative)
        keys = ["prompt_embeds", "negative_prompt_embeds"]
    for key, theirs in zip(keys, embeds):
        assert torch.equal(ours[key], theirs), key
    plain = encode_prompts(pipe, prompt, negative, 1)
    assert not torch.equal(plain["prompt_embeds"], ours["prompt_embeds"])  # the name alone is just text
    assert _state(pipe) == state


def test_embedding_image_equals_plain_diffusers_call(pipes, family_dir, tmp_path):
    pipe = pipes("sd1")
    save_embedding(tmp_path / "shiny.safetensors", "shiny", embedding_vectors(pipe, n=3))
    spec = SPEC.replace(prompt="a photo of shiny cat")
    ours = generate(pipe, spec, adapters=AdapterFolders(embedding_dirs=[tmp_path]))
    ref = diffusers.DiffusionPipeline.from_pretrained(str(family_dir("sd1")))
    ref.load_textual_inversion(str(tmp_path / "shiny.safetensors"), token="shiny")
    ref.scheduler = diffusers.EulerDiscreteScheduler.from_config(ref.scheduler.config)
    ref.set_progress_bar_config(disable=True)
    theirs = ref(prompt=spec.prompt, negative_prompt=spec.negative_prompt, num_inference_steps=3, guidance_scale=5.0,
                 width=64, height=64, generator=torch.Generator().manual_seed(3)).images[0]
    assert np.abs(ours.arrays()[0].astype(int) - np.asarray(theirs, dtype=int)).max() <= 1
    assert ours.specs[0].extra["TI hashes"].startswith("shiny: ")


def test_refusals_are_one_line(pipes, tmp_path):
    pipe = pipes("sd3")
    save_embedding(tmp_path / "shiny.safetensors", "shiny", torch.zeros(1, 8))
    with pytest.raises(ValidationError, match="embeddings work with SD 1.x/2.x and SDXL .* not sd3"):
        generate(pipe, SPEC.replace(prompt="a shiny cat"), adapters=AdapterFolders(embedding_dirs=[tmp_path]))
    sd1 = pipes("sd1")
    with pytest.raises(ValidationError, match="no LoRA folder was given"):
        generate(sd1, SPEC.replace(prompt="a cat <lora:x:1>"))
    with pytest.raises(ValidationError, match="has 8-wide vectors for text_encoder; this model's takes 32"):
        generate(sd1, SPEC.replace(prompt="a shiny cat"), adapters=AdapterFolders(embedding_dirs=[tmp_path]))
    with pytest.raises(ValidationError, match="no LoRA folder was given"):  # batched generation reads the same folders
        generate_many(sd1, [SPEC.replace(prompt="a cat <lora:x:1>")])
    with pytest.raises(ValidationError, match="lora_dirs: .* valid: existing folders"):
        AdapterFolders(lora_dirs=[tmp_path / "missing"])


def test_unknown_extra_networks_are_cut_from_the_prompt_as_a1111_does(pipes):
    pipe = pipes("sd1")
    a = generate(pipe, SPEC.replace(prompt="a photo of a red cat<foo:bar:1>")).arrays()
    assert np.array_equal(a, generate(pipe, SPEC).arrays())


def test_a_pipeline_under_offload_hooks_is_refused_not_silently_unchanged(family_dir, tmp_path):
    pipe = load_pipeline(str(family_dir("sd1")), device="cpu")
    make_lora(pipe, "sd1", tmp_path / "x.safetensors", text=False)
    original = pipe.unet.forward
    pipe.unet.forward = lambda *a, **k: original(*a, **k)  # what accelerate's add_hook_to_module does
    with pytest.raises(ValidationError, match="CPU-offload hooks or torch.compile"):
        generate(pipe, SPEC.replace(prompt="a cat <lora:x:1>"), adapters=AdapterFolders(lora_dirs=[tmp_path]))


def test_two_loras_in_one_prompt_equal_diffusers_set_adapters(pipes, family_dir, tmp_path, monkeypatch):
    allow_transformers_peft(monkeypatch)
    pipe = pipes("sd1")
    make_lora(pipe, "sd1", tmp_path / "a.safetensors", seed=3)
    make_lora(pipe, "sd1", tmp_path / "b.safetensors", seed=4, targets=CONV_TARGETS)
    ours = generate(pipe, SPEC.replace(prompt="a cat <lora:a:1> <lora:b:0.5:0.25>"), adapters=AdapterFolders(lora_dirs=[tmp_path]))
    reference = load_pipeline(str(family_dir("sd1")), device="cpu")
    reference.load_lora_weights(str(tmp_path / "a.safetensors"), adapter_name="a")
    reference.load_lora_weights(str(tmp_path / "b.safetensors"), adapter_name="b")
    reference.set_adapters(["a", "b"], adapter_weights=[{"unet": 1.0, "text_encoder": 1.0}, {"unet": 0.25, "text_encoder": 0.5}])
    assert np.array_equal(ours.arrays(), generate(reference, SPEC.replace(prompt="a cat  ")).arrays())
    hashes = ours.specs[0].extra["Lora hashes"]
    assert hashes == f"a: {lora_hash(tmp_path / 'a.safetensors')}, b: {lora_hash(tmp_path / 'b.safetensors')}"


def test_an_embedding_is_never_split_across_chunks_as_in_a1111(pipes, tmp_path):
    """sd_hijack_clip.tokenize_line: an embedding that does not fit in the current 75-token chunk starts the next."""
    from sdlab.prompts import tokenize_weighted

    pipe = pipes("sd1")
    save_embedding(tmp_path / "shiny.safetensors", "shiny", embedding_vectors(pipe, n=3))
    prompt = "cat " * 73 + "shiny dog"
    assert len(tokenize_weighted(pipe.tokenizer, "cat " * 73)[0]) == 73  # one token per word here
    used = prepare_adapters(pipe, SPEC.replace(prompt=prompt), AdapterFolders(embedding_dirs=[tmp_path]))
    chunks = tokenize_weighted(used.pipe.tokenizer, used.prompt)
    assert [len(c) for c in chunks] == [73, 4]  # the 3 vectors moved whole, then "dog"
    assert [len(c) for c in tokenize_weighted(pipe.tokenizer, "cat " * 76)] == [75, 1]  # plain text still cut at 75


@pytest.mark.parametrize("name", ["sd1", "sdxl"])
def test_a_lora_call_leaves_a_half_precision_pipeline_half_precision(family_dir, tmp_path, monkeypatch, name):
    """diffusers' from_pipe casts to float32 unless given a dtype; the call's pipeline shares the user's modules."""
    allow_transformers_peft(monkeypatch)
    pipe = load_pipeline(str(family_dir(name)), device="cpu", dtype="bf16")
    loras = tmp_path / "loras"
    make_lora(pipe, family(pipe), loras / "style.safetensors")
    generate(pipe, SPEC.replace(prompt=SPEC.prompt + " <lora:style:0.7>"), adapters=AdapterFolders(lora_dirs=[loras]))
    for part in ("unet", "vae", "text_encoder", "text_encoder_2"):
        if getattr(pipe, part, None) is not None:
            assert getattr(pipe, part).dtype == torch.bfloat16, part

