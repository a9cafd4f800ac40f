"""LoRA and embedding hashes in the PNG as A1111 writes them, read back by A1111's rules, and reproduce applying them again."""
import json
import re
import shutil

import numpy as np
import pytest
import torch
from adapters_kit import embedding_vectors, make_lora
from PIL import Image

from sdlab.adapters import hypernetwork as hn
from sdlab.adapters.embeddings import embedding_hash, save_embedding
from sdlab.adapters.lora import lora_hash
from sdlab.adapters.networks import AdapterFolders
from sdlab.cli import main
from sdlab.errors import ValidationError
from sdlab.generate import generate
from sdlab.metadata import read_parameters
from sdlab.models import load_pipeline
from sdlab.reproduce import reproduce
from sdlab.spec import GenerationSpec

RE_PARAM = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')  # A1111's infotext regex
SPEC = GenerationSpec("a photo of shiny cat <lora:style:0.8>", negative_prompt="blurry", seed=5, steps=3, sampler="Euler", guidance=5.0)


def a1111_infotext(text: str) -> dict:
    """parse_generation_parameters' key/value pass: its regex, and json.loads for quoted values (unquote)."""
    return {k.strip(): (json.loads(v) if v.strip().startswith('"') else v.strip()) for k, v in RE_PARAM.findall(text.strip().split("\n")[-1])}


def a1111_hashes(value: str) -> dict:
    """The Lora extension's infotext_pasted split of 'name: hash, ...'."""
    return {x[0].strip().replace(",", ""): x[1].strip() for x in (y.strip().split(":", 1) for y in value.split(","))}


@pytest.fixture()
def made(family_dir, tmp_path):
    pipe = load_pipeline(str(family_dir("sd1")), device="cpu")
    make_lora(pipe, "sd1", tmp_path / "loras" / "style.safetensors")
    save_embedding(tmp_path / "emb" / "shiny.safetensors", "shiny", embedding_vectors(pipe))
    folders = AdapterFolders(lora_dirs=[tmp_path / "loras"], embedding_dirs=[tmp_path / "emb"])
    # the PNG names the model by its directory, so that reproduce can locate it before loading
    png = generate(pipe, SPEC.replace(model=str(family_dir("sd1"))), adapters=folders).save(tmp_path / "out")[0]
    return pipe, folders, png, tmp_path


def test_png_records_hashes_as_a1111_writes_them(made):
    _, _, png, tmp = made
    text = Image.open(png).text["parameters"]
    style, shiny = lora_hash(tmp / "loras" / "style.safetensors"), embedding_hash(tmp / "emb" / "shiny.safetensors")
    assert f'Lora hashes: "style: {style}"' in text and f'TI hashes: "shiny: {shiny}"' in text
    pairs = a1111_infotext(text)
    assert a1111_hashes(pairs["Lora hashes"]) == {"style": style} and a1111_hashes(pairs["TI hashes"]) == {"shiny": shiny}
    spec = read_parameters(png)
    assert spec.extra["Lora hashes"] == f"style: {style}" and spec.prompt == SPEC.prompt


def test_reproduce_applies_them_again_and_finds_a_renamed_lora_by_hash(made, family_dir):
    pipe, folders, png, tmp = made
    done = reproduce(lambda spec: pipe, png, adapters=folders)
    assert done.max_abs_difference == 0 and done.result.specs[0].extra["Lora hashes"].startswith("style: ")
    shutil.move(tmp / "loras" / "style.safetensors", tmp / "loras" / "renamed.safetensors")  # A1111 finds it by hash
    again = reproduce(lambda spec: pipe, png, adapters=AdapterFolders(lora_dirs=[tmp / "loras"], embedding_dirs=[tmp / "emb"]))
    assert again.max_abs_difference == 0 and "<lora:renamed:0.8>" in again.result.specs[0].prompt
    plain = generate(pipe, SPEC.replace(prompt="a photo of shiny cat")).arrays()[0]
    assert np.abs(plain.astype(int) - np.asarray(Image.open(png).convert("RGB"), dtype=int)).max() > 10  # they mattered


def test_reproduce_refuses_a_missing_or_changed_file_before_loading(made):
    pipe, folders, png, tmp = made

    def must_not_load(spec):
        raise AssertionError("the model was loaded")

    with pytest.raises(ValidationError, match="made with the LoRA\\(s\\) style; pass the folder"):
        reproduce(must_not_load, png)
    make_lora(pipe, "sd1", tmp / "loras" / "style.safetensors", seed=9)  # same name, other weights
    with pytest.raises(ValidationError, match=r"made with style \(hash [0-9a-f]{12}\), and no LoRA in .* has that hash; style.safetensors there has hash"):
        reproduce(must_not_load, png, adapters=AdapterFolders(lora_dirs=[tmp / "loras"], embedding_dirs=[tmp / "emb"]))
    other = tmp / "other"
    make_lora(pipe, "sd1", other / "loras" / "style.safetensors")  # the same weights again: the same hash
    save_embedding(other / "emb" / "shiny.safetensors", "shiny", torch.zeros(2, 32))
    with pytest.raises(ValidationError, match="embedding: shiny.safetensors has hash .* but the PNG was made with shiny of hash"):
        reproduce(must_not_load, png, adapters=AdapterFolders(lora_dirs=[other / "loras"], embedding_dirs=[other / "emb"]))


def test_cli_generate_and_reproduce_with_folders(made, family_dir, capsys, monkeypatch):
    _, _, _, tmp = made
    model = str(family_dir("sd1"))
    args = ["--model", model, "--lora-dir", str(tmp / "loras"), "--embeddings-dir", str(tmp / "emb")]
    assert main(["generate", SPEC.prompt, "--negative", "blurry", "--seed", "5", "--steps", "3", "--sampler", "Euler",
                 "--cfg", "5", "--out", str(tmp / "cli"), *args]) == 0
    png = capsys.readouterr().out.strip().splitlines()[-1]
    assert "Lora hashes" in read_parameters(png).extra and "TI hashes" in read_parameters(png).extra
    assert main(["reproduce", png, "--out", str(tmp / "again"), *args]) == 0
    assert capsys.readouterr().out.strip().endswith("max abs pixel difference: 0")
    import sdlab.cli.generate as cli

    monkeypatch.setattr(cli, "load_model", lambda a: (_ for _ in ()).throw(AssertionError("loaded")))
    assert main(["generate", "a cat <lora:nope:1>", "--out", str(tmp / "x"), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no LoRA named 'nope'" in err


def test_hypernetwork_tag_applies_sdlab_hypernetworks_on_a_copy(family_dir, tmp_path):
    pipe = load_pipeline(str(family_dir("sd1")), device="cpu")
    network = hn.new(pipe, seed=0)
    g = torch.Generator().manual_seed(0)
    for p in network.parameters():
        p.data = torch.randn(p.shape, generator=g) * 0.2
    hn.save(network, tmp_path / "h" / "bent.safetensors")
    processors = {k: id(v) for k, v in pipe.unet.attn_processors.items()}
    spec = SPEC.replace(prompt="a red cat <hypernet:bent:0.6>", model=str(family_dir("sd1")))
    ours = generate(pipe, spec, adapters=AdapterFolders(hypernetwork_dirs=[tmp_path / "h"]))
    reference = load_pipeline(str(family_dir("sd1")), device="cpu")
    with hn.applied(reference, hn.load(tmp_path / "h" / "bent.safetensors"), 0.6):
        theirs = generate(reference, spec.replace(prompt="a red cat")).arrays()
    assert np.array_equal(ours.arrays(), theirs)
    assert not np.array_equal(theirs, generate(reference, spec.replace(prompt="a red cat")).arrays())
    assert {k: id(v) for k, v in pipe.unet.attn_processors.items()} == processors
    png = ours.save(tmp_path / "out")[0]
    with pytest.raises(ValidationError, match="names a hypernetwork, but no hypernetwork folder was given"):
        reproduce(lambda spec: (_ for _ in ()).throw(AssertionError("loaded")), png)
    assert reproduce(lambda spec: pipe, png, adapters=AdapterFolders(hypernetwork_dirs=[tmp_path / "h"])).max_abs_difference == 0
