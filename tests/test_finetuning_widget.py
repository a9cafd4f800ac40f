"""The fine-tuning panel, driven without a browser: a run, its loss and samples, Cancel and resume, a bad field."""
import pytest
import torch
from PIL import Image

from sdlab.models import load_pipeline


@pytest.fixture(scope="module")
def pipe():
    torch.set_num_threads(1)
    return load_pipeline("shapes-world")


def test_panel_trains_shows_base_and_tuned_samples_and_resumes_after_cancel(pipe, tmp_path):
    from sdlab.widgets.finetuning import FinetuningPanel

    panel = FinetuningPanel(pipe, out_dir=str(tmp_path))
    panel.method.value, panel.steps.value = "lora", 3
    follow = panel.callback

    def press_cancel_after_one_step(done, total):
        if done >= 1:
            panel.cancel()  # what the Cancel button does
        follow(done, total)

    panel.callback = press_cancel_after_one_step
    panel.start(background=False)
    assert panel.status.value == "cancelled" and (tmp_path / "lora" / "train_state.pt").exists()
    assert panel.progress.value == 1
    panel.callback = follow
    panel.start(background=False)
    assert panel.last_error is None and panel.trained.path.name == f"{panel.token.value}.safetensors"
    import html

    assert f"use: <lora:star:1> in a prompt, with --lora-dir {tmp_path / 'lora'}" in html.unescape(panel.status.value)  # as the CLI says
    assert panel.progress.value == panel.progress.max == 3
    assert panel.loss_plot.value[:4] == b"\x89PNG" and panel.sample.value[:4] == b"\x89PNG" and panel.base_sample.value[:4] == b"\x89PNG"


def test_panel_shows_a_bad_field_in_one_line(pipe, tmp_path):
    from sdlab.widgets.finetuning import FinetuningPanel

    panel = FinetuningPanel(pipe, out_dir=str(tmp_path))
    panel.method.value, panel.rank.value = "embedding", 1
    panel.token.value = "red"
    panel.start(background=False)
    assert panel.last_error.startswith("token: 'red' is not valid")
    panel.method.value, panel.token.value = "lora", "my/star"  # names the LoRA's file: refused before any step
    panel.start(background=False)
    assert panel.last_error.startswith("token: 'my/star' is not valid") and not (tmp_path / "lora").exists()
    panel.method.value, panel.token.value = "embedding", "red"
    panel.concept.value, panel.folder.value = "folder", str(tmp_path / "none")
    assert panel.token.value == "red"  # a folder keeps the typed token
    panel.start(background=False)
    assert panel.last_error.startswith("--images: ")


def test_panel_token_follows_the_concept(pipe, tmp_path):
    from sdlab.mini.concepts import CONCEPTS
    from sdlab.widgets.finetuning import FinetuningPanel

    panel = FinetuningPanel(pipe, out_dir=str(tmp_path))
    for name in ("sun", "outlined", "star"):
        panel.concept.value = name
        assert panel.token.value == CONCEPTS[name].token == name  # each concept's own trigger word


def test_panel_prior_weight_follows_the_method_and_reaches_the_run(pipe, tmp_path):
    from sdlab.widgets.finetuning import FinetuningPanel

    panel = FinetuningPanel(pipe, out_dir=str(tmp_path))
    panel.method.value = "dreambooth"
    assert panel.prior.value == 1.0  # DreamBooth preserves the prior by default; a LoRA does not
    panel.method.value = "lora"
    assert panel.prior.value == 0.0
    panel.prior.value, panel.steps.value = 0.5, 1
    panel.start(background=False)
    assert panel.last_error is None
    assert panel.trained.info["prior_weight"] == 0.5 and panel.trained.info["n_class"] == 20


def test_panel_caption_dropout_follows_the_method_and_reaches_the_run(pipe, tmp_path):
    from sdlab.widgets.finetuning import FinetuningPanel

    panel = FinetuningPanel(pipe, out_dir=str(tmp_path))
    assert panel.caption_dropout.value == 0.0  # off: on a concept's set the empty prompt would learn the concept
    panel.caption_dropout.value = 0.3
    panel.method.value = "embedding"
    assert panel.caption_dropout.value == 0.0 and panel.caption_dropout.disabled  # no token in a dropped caption
    panel.method.value = "lora"
    assert not panel.caption_dropout.disabled
    panel.caption_dropout.value, panel.steps.value = 0.25, 1
    panel.start(background=False)
    assert panel.last_error is None
    assert panel.trained.info["caption_dropout"] == 0.25


def test_panel_output_preservation_reaches_the_run(pipe, tmp_path):
    from sdlab.widgets.finetuning import FinetuningPanel

    panel = FinetuningPanel(pipe, out_dir=str(tmp_path))
    assert panel.keep_weight.value == 0.0 and panel.keep.value == ("class-word", "blank")  # off by default
    panel.method.value = "embedding"
    assert panel.keep_weight.disabled  # textual inversion changes no weight the base model uses
    panel.method.value = "lora"
    panel.keep_weight.value, panel.keep.value, panel.steps.value = 2.0, ("class-word", "blank", "world"), 1
    panel.start(background=False)
    assert panel.last_error is None
    assert panel.trained.info["preserve_weight"] == 2.0 and panel.trained.info["n_preserve"] == 20 + 20 + 200
    world_dir = tmp_path / "world"  # a user's own images like the base model's: the world kinds' items
    world_dir.mkdir()
    for i in range(3):
        Image.new("RGB", (64, 64), (40 * i, 90, 200)).save(world_dir / f"{i}.png")
    panel.keep.value, panel.world_folder.value, panel.out_dir.value = ("world", "world-blank"), str(world_dir), str(tmp_path / "w")
    panel.start(background=False)
    assert panel.last_error is None and panel.trained.info["n_preserve"] == 3 + 3
