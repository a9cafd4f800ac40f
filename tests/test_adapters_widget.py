"""The generation panel's LoRA / embedding picker, driven without a browser."""
import pytest
from adapters_kit import embedding_vectors, make_lora

from sdlab.adapters.embeddings import save_embedding
from sdlab.adapters.lora import lora_hash
from sdlab.adapters.networks import toggle_lora, toggle_word
from sdlab.models import load_pipeline


def test_toggles_add_and_remove_as_a1111_cards_do():
    assert toggle_lora("a cat", "style", 0.8) == "a cat <lora:style:0.8>"
    assert toggle_lora("a cat <lora:style:0.8>, night", "style") == "a cat, night"
    assert toggle_word("", "shiny") == "shiny" and toggle_word("a cat", "shiny") == "a cat, shiny"
    assert toggle_word("a cat, shiny", "shiny") == "a cat"


def test_panel_picks_a_lora_and_an_embedding_and_generates_with_them(family_dir, tmp_path):
    from sdlab.widgets.generation import GenerationPanel

    pipe = load_pipeline(str(family_dir("sd1")), device="cpu")
    make_lora(pipe, "sd1", tmp_path / "loras" / "style.safetensors", text=False)
    save_embedding(tmp_path / "emb" / "shiny.safetensors", "shiny", embedding_vectors(pipe))
    panel = GenerationPanel(pipe)
    panel.prompt.value, panel.steps.value, panel.batch.value, panel.seed.value = "a red cat", 2, 1, 3
    section = panel.adapters
    section.lora_dir.value, section.embeddings_dir.value = str(tmp_path / "loras"), str(tmp_path / "emb")
    section.scan()
    assert list(section.lora.options) == ["style"] and list(section.embedding.options) == ["shiny"]
    assert lora_hash(tmp_path / "loras" / "style.safetensors") in section.info.value
    section.weight.value = 0.5
    section.lora_button.click()
    section.embedding_button.click()
    section.negative_button.click()
    assert panel.prompt.value == "a red cat <lora:style:0.5>, shiny" and panel.negative.value == "shiny"
    panel.generate(background=False)
    assert panel.last_error is None
    extra = panel.results[-1].specs[0].extra
    assert extra["Lora hashes"].startswith("style: ") and extra["TI hashes"].startswith("shiny: ")
    section.lora_dir.value = str(tmp_path / "missing")
    panel.generate(background=False)
    assert panel.last_error.startswith("lora_dirs: ")
    section.scan()
    assert "error" in section.info.value
