"""Training from scratch: a few steps through every stage, a standard diffusers pipeline out."""
import json
from dataclasses import replace

import numpy as np
import torch
from diffusers import StableDiffusionPipeline

from sdlab.mini.train import TrainConfig, train


def test_pipeline_loads_with_plain_diffusers_and_generates(tiny_pipeline_dir):
    pipe = StableDiffusionPipeline.from_pretrained(tiny_pipeline_dir)
    image = pipe("a red circle", num_inference_steps=2, height=64, width=64, generator=torch.Generator().manual_seed(0)).images[0]
    assert image.size == (64, 64)
    meta = json.loads((tiny_pipeline_dir / "sdlab.json").read_text())
    assert meta["defaults"]["steps"] >= 1 and len(meta["preview"]["latent_rgb_factors"]) == pipe.unet.config.in_channels
    assert all(p.suffix == ".safetensors" for p in tiny_pipeline_dir.rglob("*.safetensors"))
    assert not list(tiny_pipeline_dir.rglob("*.bin"))
    posterior = pipe.vae.encode(torch.rand(2, 3, 64, 64) * 2 - 1).latent_dist  # export declares the mean the UNet learned on
    assert float(posterior.std.max()) < 1e-6 and not torch.equal(posterior.mean, torch.zeros_like(posterior.mean))


def test_training_resumes_where_it_stopped(tmp_path):
    cfg = TrainConfig(n_images=64, vae_steps=2, decoder_steps=2, unet_steps=3, text_steps=2, vae_batch=4, decoder_batch=4, unet_batch=4, text_batch=4, checkpoint_minutes=0.0)
    first = train(tmp_path, cfg, progress=False)
    unet_before = {k: v.clone() for k, v in StableDiffusionPipeline.from_pretrained(first).unet.state_dict().items()}
    log_lines = (tmp_path / "train_log.jsonl").read_text().splitlines()
    # a rerun finds every stage done: same weights, no new training steps
    again = train(tmp_path, cfg, progress=False)
    unet_after = StableDiffusionPipeline.from_pretrained(again).unet.state_dict()
    assert all(torch.equal(unet_before[k], unet_after[k]) for k in unet_before)
    new_lines = (tmp_path / "train_log.jsonl").read_text().splitlines()[len(log_lines):]
    assert [json.loads(l)["stage"] for l in new_lines] == ["done"]
    assert (tmp_path / "vae_decoder" / "config.json").exists()
    # extending the run continues from the checkpoint rather than starting over
    longer = train(tmp_path, replace(cfg, unet_steps=5), progress=False)
    steps = [json.loads(l) for l in (tmp_path / "train_log.jsonl").read_text().splitlines() if '"unet"' in l]
    assert [s["step"] for s in steps] == [0]  # a restart from scratch would have logged step 0 again
    state = torch.load(tmp_path / "unet.ckpt", weights_only=True)
    assert state["step"] == 5 and longer.exists()


def test_export_checkpoint_writes_the_checkpoints_ema_weights(tmp_path):
    from sdlab.mini.export import export_checkpoint

    cfg = TrainConfig(n_images=64, vae_steps=2, decoder_steps=2, unet_steps=3, text_steps=2, vae_batch=4, decoder_batch=4, unet_batch=4, text_batch=4, checkpoint_minutes=0.0)
    train(tmp_path, cfg, progress=False)
    state = torch.load(tmp_path / "unet.ckpt", weights_only=True)
    exported = export_checkpoint(tmp_path)
    assert exported == tmp_path / f"pipeline-step{state['step']}"
    unet = StableDiffusionPipeline.from_pretrained(exported).unet.state_dict()
    assert all(torch.equal(unet[k], v) for k, v in state["ema_unet"].items())
    # the configs say nothing about where the components were loaded from on this machine
    for config in exported.glob("*/config.json"):
        assert "_name_or_path" not in json.loads(config.read_text()), config


def test_caption_labels_mark_unnamed_attributes():
    from sdlab.mini.stages.text import ATTRIBUTE_VALUES, caption_labels

    labels = caption_labels(["a red circle at the top left", ""])
    assert labels.shape == (2, 5)
    expected = {"shape": "circle", "colour": "red", "position": "top left"}
    for i, (attribute, values) in enumerate(ATTRIBUTE_VALUES.items()):
        want = values.index(expected[attribute]) if attribute in expected else len(values)
        assert labels[0, i] == want
        assert labels[1, i] == len(values)  # the empty prompt names nothing


def test_word_positions_cover_the_caption_and_nothing_else():
    from transformers import CLIPTokenizer

    from sdlab.mini.stages.text import token_ids, word_positions
    from sdlab.models import SHIPPED_DIR

    tok = CLIPTokenizer.from_pretrained(SHIPPED_DIR / "tokenizer")
    ids = token_ids(tok, ["a red circle", "", "a small blue square at the top left"])
    words = word_positions(ids, tok.eos_token_id)
    assert words.sum(1).tolist() == [3, 0, 8]  # start-of-text, end-of-text and padding excluded
    assert not words[:, 0].any() and words[0, 1:4].all() and not words[0, 4:].any()


def test_text_pretraining_pins_end_of_text_states_to_the_empty_prompts(tmp_path):
    """The second loss of the text stage: after it, end-of-text states barely depend on the caption."""
    from sdlab.mini import tokenizer as tokenizer_lib
    from sdlab.mini import world
    from sdlab.mini.stages.text import pretrain_text_encoder, token_ids, word_positions

    _, meta = world.make_dataset(256, seed=3)
    tok = tokenizer_lib.save_tokenizer(world.vocabulary(), tmp_path / "tok")
    captions = meta["TEXT"].tolist()

    def end_spread(weight: float) -> float:
        cfg = TrainConfig(text_steps=60, text_batch=32, text_reads="words", text_end_weight=weight)
        out = tmp_path / f"w{weight}"
        out.mkdir()
        text = pretrain_text_encoder(out, captions, tok, cfg, progress=False)
        ids = token_ids(tok, captions[:64])
        with torch.no_grad():
            hidden, empty = text(ids).last_hidden_state, text(token_ids(tok, [""])).last_hidden_state
        end = ~word_positions(ids, tok.eos_token_id)
        end[:, 0] = False
        return float((hidden - empty).pow(2)[end].mean() / empty[0, 1:].pow(2).mean())

    pinned, free = end_spread(1.0), end_spread(0.0)
    assert pinned < 0.1 * free, (pinned, free)


def test_config_names_the_bad_field():
    import pytest

    from sdlab.errors import ValidationError

    with pytest.raises(ValidationError, match="text_reads: 'eos' is not valid; valid: one of end, words"):
        TrainConfig(text_reads="eos")
    with pytest.raises(ValidationError, match="noise: 'pink' is not valid; valid: one of gaussian, pyramid"):
        TrainConfig(noise="pink")
    with pytest.raises(ValidationError, match="unet_steps: 0 is not valid; valid: a whole number >= 1"):
        TrainConfig(unet_steps=0)
    with pytest.raises(ValidationError, match="unet_lr: 0.0 is not valid; valid: a number > 0"):
        TrainConfig(unet_lr=0.0)
    with pytest.raises(ValidationError, match=r"cfg_dropout: 1.0 is not valid; valid: a number in \[0, 1\)"):
        TrainConfig(cfg_dropout=1.0)


TINY = dict(n_images=64, vae_steps=2, decoder_steps=2, unet_steps=3, text_steps=2, vae_batch=4, decoder_batch=4, unet_batch=4, text_batch=4)


def test_callback_counts_all_stages_and_cancel_resumes_mid_stage(tmp_path):
    import pytest

    from sdlab.errors import Cancelled

    cfg = TrainConfig(**TINY, checkpoint_minutes=60.0)  # only the cancel may checkpoint
    seen = []

    def stop_in_the_unet(done, total):
        seen.append((done, total))
        if done == 2 + 2 + 2:  # VAE 2, text 2, then the UNet's second step
            raise Cancelled("cancelled by the user")

    with pytest.raises(Cancelled):
        train(tmp_path, cfg, progress=False, callback=stop_in_the_unet)
    assert seen == [(i, 9) for i in range(1, 7)]
    assert torch.load(tmp_path / "unet.ckpt", weights_only=True)["step"] == 2
    seen.clear()
    target = train(tmp_path, cfg, progress=False, callback=lambda done, total: seen.append((done, total)))
    assert seen == [(7, 9), (8, 9), (9, 9)]  # the UNet's last step, then the decoder's two
    assert (target / "model_index.json").exists()
    unet_steps = [json.loads(l)["step"] for l in (tmp_path / "train_log.jsonl").read_text().splitlines() if '"stage": "unet"' in l]
    assert unet_steps == [0]  # the rerun resumed at step 2 instead of starting over


def test_cancel_in_the_vae_checkpoints_that_step(tmp_path):
    import pytest

    from sdlab.errors import Cancelled

    def stop(done, total):
        if done == 1:
            raise Cancelled("cancelled by the user")

    with pytest.raises(Cancelled):
        train(tmp_path, TrainConfig(**TINY, checkpoint_minutes=60.0), progress=False, callback=stop)
    assert torch.load(tmp_path / "vae.ckpt", weights_only=True)["step"] == 1
    assert not (tmp_path / "vae" / "config.json").exists()


def test_train_panel_trains_shows_the_curves_and_a_sample_and_names_bad_fields(tmp_path):
    from sdlab.widgets.train import TrainPanel

    fixed = {k: v for k, v in TINY.items() if k not in ("n_images", "vae_steps", "unet_steps")}
    panel = TrainPanel(out_dir=str(tmp_path / "run"), **fixed)
    panel.n_images.value, panel.vae_steps.value, panel.unet_steps.value, panel.foreground_weight.value = 64, 2, 3, 4.0
    panel.start(background=False)
    assert panel.last_error is None and panel.exported == tmp_path / "run" / "pipeline"
    assert panel.progress.value == panel.progress.max == 2 + 2 + 3 + 2
    assert panel.loss_plot.value[:4] == b"\x89PNG" and panel.sample.value[:4] == b"\x89PNG"
    saved = json.loads((tmp_path / "run" / "train_config.json").read_text())
    assert saved["unet_foreground_weight"] == 4.0 and saved["unet_steps"] == 3 and saved["n_images"] == 64
    panel.foreground_weight.value = -1.0
    panel.start(background=False)
    assert panel.last_error == "unet_foreground_weight: -1.0 is not valid; valid: a number >= 0"
