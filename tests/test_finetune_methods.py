"""The four fine-tuning methods on the shipped shapes world: each trains a few steps and changes only what it should."""
import copy

import numpy as np
import pytest
import torch

from sdlab.errors import Cancelled, ValidationError
from sdlab.finetune import dreambooth, embedding, hypernetwork, lora
from sdlab.finetune.common import Dataset, check_images
from sdlab.generate import generate_many
from sdlab.mini import concepts
from sdlab.models import load_pipeline
from sdlab.spec import GenerationSpec

SPECS = [GenerationSpec("a large red star at the top left on a white background", seed=1, steps=4),
         GenerationSpec("a small blue circle on the right", seed=2, steps=4)]


@pytest.fixture(scope="module")
def pipe():
    torch.set_num_threads(1)
    return load_pipeline("shapes-world")


@pytest.fixture(scope="module")
def data():
    images, table = concepts.make_set("star", 4, seed=0)
    return Dataset(images, table["TEXT"].tolist())


def images_of(p, specs=SPECS):
    return [np.asarray(im) for im, _ in generate_many(p, specs)]


def snapshot(p):
    return {part: {k: v.clone() for k, v in getattr(p, part).state_dict().items()} for part in ("unet", "text_encoder", "vae")}


def same(before, p):
    return all(torch.equal(v, getattr(p, part).state_dict()[k]) for part, sd in before.items() for k, v in sd.items())


def test_embedding_trains_only_the_new_rows_and_loads_in_plain_diffusers(pipe, data, tmp_path):
    before, vocab = snapshot(pipe), len(pipe.tokenizer)
    old_table = pipe.text_encoder.get_input_embeddings().weight.detach().clone()
    result = embedding.train_embedding(pipe, data, "star", "cross", tmp_path / "run", embedding.EmbeddingConfig(steps=3, batch=2))
    assert same(before, pipe) and len(pipe.tokenizer) == vocab  # the user's pipeline is untouched
    tuned = result.apply(pipe)
    table = tuned.text_encoder.get_input_embeddings().weight.detach()
    assert table.shape[0] == old_table.shape[0] + 1
    assert torch.equal(table[:-1], old_table)  # every old row bit-identical
    cross = pipe.tokenizer.convert_tokens_to_ids("cross</w>")
    assert not torch.equal(table[-1], old_table[cross])  # the new row moved from its start
    path = result.save(tmp_path / "star.safetensors")
    from diffusers import StableDiffusionPipeline

    plain = StableDiffusionPipeline(**{**pipe.components, "tokenizer": copy.deepcopy(pipe.tokenizer),
                                       "text_encoder": copy.deepcopy(pipe.text_encoder)})
    plain.load_textual_inversion(str(path), token="star")
    assert torch.equal(plain.text_encoder.get_input_embeddings().weight[-1], table[-1])
    assert all(np.array_equal(a, b) for a, b in zip(images_of(plain), images_of(tuned)))


def test_embedding_refuses_a_token_in_the_vocabulary(pipe, data, tmp_path):
    with pytest.raises(ValidationError, match=r"^token: 'red' is not valid; valid: a word not already in the tokenizer's vocabulary"):
        embedding.train_embedding(pipe, data, "red", "cross", tmp_path)
    with pytest.raises(ValidationError, match=r"^init_word: 'starry' is not valid"):
        embedding.train_embedding(pipe, data, "star", "starry", tmp_path)


def test_lora_leaves_base_weights_bit_identical_and_loads_in_plain_diffusers(pipe, data, tmp_path):
    before = snapshot(pipe)
    base = images_of(pipe)
    result = lora.train_lora(pipe, data, tmp_path / "run", lora.LoraConfig(steps=3, batch=2, lr=1e-2))
    assert same(before, pipe) and not getattr(pipe.unet, "peft_config", None)
    assert result.unet and any(k.endswith("lora_B.weight") and v.abs().sum() > 0 for k, v in result.unet.items())
    assert all(np.array_equal(a, b) for a, b in zip(images_of(result.apply(pipe, 0.0)), base))  # strength 0: the model's own
    tuned = images_of(result.apply(pipe, 1.0))
    assert any(not np.array_equal(a, b) for a, b in zip(tuned, base))
    path = result.save(tmp_path / "lora.safetensors")
    assert path.stat().st_size < 1_000_000
    fresh = load_pipeline("shapes-world")
    fresh.load_lora_weights(str(path))
    plain = images_of(fresh)
    assert all(np.abs(a.astype(int) - b.astype(int)).max() <= 1 for a, b in zip(plain, tuned))


def test_lora_rank_must_be_positive():
    with pytest.raises(ValidationError, match=r"^rank: 0 is not valid; valid: a whole number >= 1$"):
        lora.LoraConfig(rank=0)


@pytest.mark.parametrize("extra", [{}, {"lr_scheduler": "cosine", "caption_dropout": 0.5}])
def test_resume_after_cancel_equals_an_uninterrupted_run(pipe, data, tmp_path, extra):
    cfg = lora.LoraConfig(steps=4, batch=2, checkpoint_minutes=60.0, **extra)
    whole = lora.train_lora(pipe, data, tmp_path / "whole", cfg)

    def cancel_at_2(done, total):
        if done == 2:
            raise Cancelled("stop")

    with pytest.raises(Cancelled):
        lora.train_lora(pipe, data, tmp_path / "cut", cfg, callback=cancel_at_2)
    seen = []
    resumed = lora.train_lora(pipe, data, tmp_path / "cut", cfg, callback=lambda d, t: seen.append(d))
    assert seen[0] == 2 and seen[-1] == 4  # it went on from the checkpoint, not from 0
    assert all(torch.equal(whole.unet[k], resumed.unet[k]) for k in whole.unet)


def test_hypernetwork_strength_zero_is_pixel_identical_and_the_unet_is_restored(pipe, data, tmp_path):
    from sdlab.adapters import hypernetwork as hn_lib

    before = snapshot(pipe)
    processors = dict(pipe.unet.attn_processors)
    hn = hypernetwork.train_hypernetwork(pipe, data, tmp_path / "run", "star", hypernetwork.HypernetworkTrainConfig(steps=3, batch=2, lr=1e-2))
    base = images_of(pipe)
    with hn_lib.applied(pipe, hn, 0.0):
        zero = images_of(pipe)
    with hn_lib.applied(pipe, hn, 1.0):
        one = images_of(pipe)
    assert all(np.array_equal(a, b) for a, b in zip(zero, base))
    assert any(not np.array_equal(a, b) for a, b in zip(one, base))
    assert same(before, pipe)
    assert all(pipe.unet.attn_processors[k] is v for k, v in processors.items())
    assert all(np.array_equal(a, b) for a, b in zip(images_of(pipe), base))


def test_dreambooth_prior_term_is_computed_and_changes_the_result(pipe, data, tmp_path):
    prompts = concepts.class_prompts("star", 3)
    class_data = Dataset(dreambooth.class_images(pipe, prompts), prompts)
    assert class_data.images.shape == (3, 64, 64, 3)
    before = snapshot(pipe)
    cfg = dreambooth.DreamBoothConfig(steps=2, batch=2, class_batch=2, lr=1e-3)
    with_prior = dreambooth.train_dreambooth(pipe, data, tmp_path / "prior", cfg, class_data)
    without = dreambooth.train_dreambooth(pipe, data, tmp_path / "none", dreambooth.DreamBoothConfig(steps=2, batch=2, lr=1e-3, prior_weight=0.0))
    assert same(before, pipe)
    assert with_prior.info["last_prior_loss"] > 0 and with_prior.info["n_class"] == 3 and without.info["prior_weight"] == 0.0
    expected = dreambooth.prior_loss(pipe, pipe.unet, class_data, seed=0, batch=2)
    assert expected > 0
    a, b = with_prior.unet.state_dict(), without.unet.state_dict()
    assert any(not torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(ValidationError, match=r"^class_data: None is not valid"):
        dreambooth.train_dreambooth(pipe, data, tmp_path / "x", cfg)


@pytest.mark.parametrize("text_encoder", [False, True])
def test_lora_prior_preservation_is_kohyas_regularisation(pipe, data, tmp_path, text_encoder):
    prompts = concepts.class_prompts("star", 3)
    class_data = Dataset(dreambooth.class_images(pipe, prompts), prompts)
    before = snapshot(pipe)
    base = dict(steps=2, batch=2, class_batch=2, lr=1e-2, train_text_encoder=text_encoder)
    with_prior = lora.train_lora(pipe, data, tmp_path / "prior", lora.LoraConfig(**base, prior_weight=1.0), class_data=class_data)
    without = lora.train_lora(pipe, data, tmp_path / "none", lora.LoraConfig(**base))
    ignored = lora.train_lora(pipe, data, tmp_path / "ignored", lora.LoraConfig(**base), class_data=class_data)
    assert same(before, pipe)
    assert with_prior.info["n_class"] == 3 and with_prior.info["last_prior_loss"] > 0 and without.info["prior_weight"] == 0.0
    assert any(not torch.equal(with_prior.unet[k], without.unet[k]) for k in without.unet)  # the class images' loss moved it
    assert all(torch.equal(ignored.unet[k], without.unet[k]) for k in without.unet)  # weight 0: class images change nothing
    with pytest.raises(ValidationError, match=r"^class_data: None is not valid"):
        lora.train_lora(pipe, data, tmp_path / "x", lora.LoraConfig(**base, prior_weight=1.0))


def test_bad_data_is_one_line():
    with pytest.raises(ValidationError, match=r"^images: 'no images' is not valid"):
        check_images([])
    with pytest.raises(ValidationError, match=r"^images: 'mixed sizes 32x32, 64x64' is not valid"):
        check_images([np.zeros((64, 64, 3), np.uint8), np.zeros((32, 32, 3), np.uint8)])
    with pytest.raises(ValidationError, match=r"^captions: "):
        Dataset(np.zeros((2, 64, 64, 3), np.uint8), ["one"])


def test_caption_dropout_trains_on_the_empty_prompt(pipe, data, tmp_path):
    """Dropped captions are the empty prompt CFG subtracts: with (almost) every caption dropped the captions no
    longer matter; with none dropped they do; and textual inversion, which has nothing to learn then, refuses it."""
    other = Dataset(data.images, ["a small green circle"] * len(data.images))
    runs = {}
    for name, d, drop in (("a0", data, 0.0), ("b0", other, 0.0), ("a1", data, 0.999), ("b1", other, 0.999)):
        runs[name] = lora.train_lora(pipe, d, tmp_path / name, lora.LoraConfig(steps=3, batch=2, caption_dropout=drop)).unet
    assert all(torch.equal(runs["a1"][k], runs["b1"][k]) for k in runs["a1"])
    assert any(not torch.equal(runs["a0"][k], runs["b0"][k]) for k in runs["a0"])
    assert any(not torch.equal(runs["a0"][k], runs["a1"][k]) for k in runs["a0"])
    with pytest.raises(ValidationError, match=r"^caption_dropout: 0.1 is not valid; valid: 0 for textual inversion"):
        embedding.EmbeddingConfig(caption_dropout=0.1)
    with pytest.raises(ValidationError, match=r"^caption_dropout: 1.0 is not valid"):
        lora.LoraConfig(caption_dropout=1.0)


def test_the_cosine_schedule(pipe, data, tmp_path):
    from sdlab.finetune.common import TrainConfig, learning_rate

    cfg = TrainConfig(steps=10, lr=1e-3, warmup_steps=2, lr_scheduler="cosine")
    rates = [learning_rate(cfg, s) for s in range(10)]
    assert rates[:3] == [5e-4, 1e-3, 1e-3] and all(a >= b for a, b in zip(rates[1:], rates[2:])) and rates[-1] < 0.05 * 1e-3
    assert {learning_rate(TrainConfig(steps=10, lr=1e-3), s) for s in range(10)} == {1e-3}
    cosine = lora.train_lora(pipe, data, tmp_path / "cosine", lora.LoraConfig(steps=4, batch=2, lr_scheduler="cosine"))
    constant = lora.train_lora(pipe, data, tmp_path / "constant", lora.LoraConfig(steps=4, batch=2))
    assert any(not torch.equal(cosine.unet[k], constant.unet[k]) for k in cosine.unet)


def _prediction_gap(pipe, unet, keep: Dataset) -> float:
    """Mean squared difference between ``unet``'s and the base UNet's predictions on the preservation items (fixed draw)."""
    from sdlab.finetune.common import diffusion_loss, noise_scheduler, snr_weights
    from sdlab.finetune.embedding import text_parts
    from sdlab.finetune.preserve import preservation_set

    toks, encs = text_parts(pipe)
    sched = noise_scheduler(pipe)
    items = preservation_set(pipe, lora.LoraConfig(preserve_weight=1.0), keep, encs, toks, "cpu", False)
    with torch.no_grad():
        return float(diffusion_loss(unet, sched, snr_weights(sched, None), items.latents, items.states, torch.Generator().manual_seed(5),
                                    teacher=pipe.unet))


@pytest.mark.parametrize("method", ["lora", "dreambooth"])
def test_output_preservation_starts_at_zero_and_keeps_the_base_models_predictions(pipe, data, tmp_path, method):
    """The trained copy starts as the base model, so the term is 0 at the first step (up to rounding: attention with and
    without gradients takes different kernels); after a few large steps the
    copy trained with it predicts, on its items, closer to the base model than the copy trained without it."""
    from sdlab.finetune.preserve import preservation_data

    keep = preservation_data("class-word,blank", data, trigger="star", class_word="cross")
    assert keep.captions[0] == data.captions[0].replace("star", "cross") and keep.captions[-1] == "" and len(keep.captions) == 8
    before = snapshot(pipe)
    if method == "lora":
        train, cfg = lora.train_lora, (lambda **k: lora.LoraConfig(batch=2, lr=5e-3, targets="attention+conv", **k))
    else:
        train, cfg = dreambooth.train_dreambooth, (lambda **k: dreambooth.DreamBoothConfig(batch=2, lr=5e-4, prior_weight=0.0, **k))
    first = train(pipe, data, tmp_path / "first", cfg(steps=1, preserve_weight=1.0), preserve_data=keep)
    assert first.info["n_preserve"] == 8 and first.info["last_preserve_loss"] < 1e-9
    kept = train(pipe, data, tmp_path / "kept", cfg(steps=20, preserve_weight=1.0, preserve_batch=4), preserve_data=keep)
    free = train(pipe, data, tmp_path / "free", cfg(steps=20), preserve_data=keep)  # weight 0: the items are not used
    assert kept.info["last_preserve_loss"] > 0 and free.info["preserve_weight"] == 0.0 and free.info["n_preserve"] == 0
    assert same(before, pipe)

    def unet_of(result):
        return result.apply(pipe).unet if method == "lora" else result.unet

    gap_kept, gap_free = _prediction_gap(pipe, unet_of(kept), keep), _prediction_gap(pipe, unet_of(free), keep)
    assert 0 < gap_kept < 0.6 * gap_free  # measured: LoRA 0.020 against 0.069, DreamBooth 0.078 against 0.150
    with pytest.raises(ValidationError, match=r"^preserve_data: None is not valid"):
        train(pipe, data, tmp_path / "x", cfg(steps=1, preserve_weight=1.0))


def test_preservation_items_and_their_refusals(pipe, data):
    from sdlab.finetune.preserve import preservation_data

    prompts = concepts.class_prompts("star", 2)
    class_data = Dataset(np.zeros((2, 64, 64, 3), np.uint8), prompts)
    items = preservation_data(["world", "class-images"], data, class_data=class_data, world_data=Dataset(*concepts.world_images(3)))
    assert len(items.images) == 5 and items.captions[3:] == prompts and all(items.captions[:3])
    world_data = Dataset(*concepts.world_images(3))
    both = preservation_data("world,world-blank", data, world_data=world_data)  # the same images, the second time unconditioned
    assert np.array_equal(both.images[3:], world_data.images) and both.captions == list(world_data.captions) + [""] * 3
    with pytest.raises(ValidationError, match=r"^preserve: 'blanks' is not valid; valid: one of class-word, blank, class-images, world, world-blank"):
        preservation_data("class-word,blanks", data, "star", "cross")
    with pytest.raises(ValidationError, match=r"^preserve: '' is not valid; valid: one or more of"):
        preservation_data("", data)
    with pytest.raises(ValidationError, match=r"^class_data: None is not valid"):
        preservation_data("class-images", data)
    with pytest.raises(ValidationError, match=r"^world_data: None is not valid"):
        preservation_data("world", data)
    with pytest.raises(ValidationError, match=r"^world_data: None is not valid; valid: .* for world-blank preservation$"):
        preservation_data("blank,world-blank", data)
    with pytest.raises(ValidationError, match=r"^class_word: '' is not valid"):
        preservation_data("class-word", data, "star", "")
    with pytest.raises(ValidationError, match=r"^preserve: 'blank,class-images' is not valid; valid: kinds whose images have one size"):
        preservation_data("blank,class-images", data, class_data=Dataset(np.zeros((1, 32, 32, 3), np.uint8), ["a cross"]))
