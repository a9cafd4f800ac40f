"""LoRAs and embeddings in batched generation and sweeps: A1111's X/Y/Z plot over LoRA weights (a prompt S/R axis
over ``<lora:NAME:W>``), each cell the image ``generate`` makes for its spec, with A1111's ``Lora hashes``."""
import numpy as np
import pandas as pd
import pytest
from adapters_kit import embedding_vectors, make_lora
from PIL import Image

from sdlab.adapters.embeddings import save_embedding
from sdlab.adapters.lora import lora_hash
from sdlab.adapters.networks import AdapterFolders
from sdlab.cli import main
from sdlab.errors import ModelNotFoundError, StoreError, ValidationError
from sdlab.generate import generate, generate_many
from sdlab.metadata import parse_parameters
from sdlab.models import load_pipeline
from sdlab.spec import GenerationSpec
from sdlab.sweep import Axis, grid, run_sweep

PROMPT = "a small red circle in the center on a white background"


@pytest.fixture(scope="module")
def pipe(tiny_pipeline_dir):
    return load_pipeline(str(tiny_pipeline_dir), device="cpu")


@pytest.fixture(scope="module")
def folders(pipe, tmp_path_factory):
    """A folder with a random LoRA (``rnd``) and a random embedding (``shiny``) for the tiny shapes world."""
    root = tmp_path_factory.mktemp("adapters")
    make_lora(pipe, "sd1", root / "loras" / "rnd.safetensors")
    save_embedding(root / "embeddings" / "shiny.safetensors", "shiny", embedding_vectors(pipe, n=2))
    return AdapterFolders(lora_dirs=[root / "loras"], embedding_dirs=[root / "embeddings"])


@pytest.fixture(scope="module")
def world():
    """The shipped model: batched images must match single ones within a level, which a model trained for two steps
    (the tiny pipeline) does not allow under a LoRA: there a change in the last bit of an embedding moves pixels by 100+."""
    return load_pipeline("shapes-world", device="cpu")


@pytest.fixture(scope="module")
def gentle(world, tmp_path_factory):
    """A random LoRA for the shipped model, small enough (alpha 1, rank 4) that the model still draws under it."""
    root = tmp_path_factory.mktemp("gentle")
    make_lora(world, "sd1", root / "rnd.safetensors", alpha=1.0)
    return AdapterFolders(lora_dirs=[root])


def _pixels(image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def test_generate_many_gives_each_adapter_spec_generates_image_and_hashes(pipe, folders):
    base = GenerationSpec(PROMPT, seed=5, steps=4)
    specs = [base, base.replace(prompt=PROMPT + " <lora:rnd:1>"), base.replace(prompt=PROMPT + " <lora:rnd:0.5>", seed=6),
             base.replace(prompt="shiny " + PROMPT), base.replace(seed=7), base.replace(prompt=PROMPT + " <lora:rnd:0>")]
    made = generate_many(pipe, specs, adapters=folders)
    alone = [generate(pipe, s, adapters=folders) for s in specs]
    for (image, spec), result in zip(made, alone):
        assert np.array_equal(_pixels(image), _pixels(result.images[0])), spec.prompt
        assert spec.extra == result.specs[0].extra, spec.prompt
    lora_file = folders.lora("rnd")
    assert made[1][1].extra["Lora hashes"] == f"rnd: {lora_hash(lora_file)}"
    assert "Lora hashes" not in made[0][1].extra and "TI hashes" in made[3][1].extra
    assert not np.array_equal(_pixels(made[1][0]), _pixels(made[0][0]))  # the LoRA acts...
    assert np.array_equal(_pixels(made[5][0]), _pixels(made[0][0]))  # ...and at weight 0 changes no pixel


def test_generate_many_refuses_a_lora_without_its_folder_before_any_image(pipe, monkeypatch):
    import sdlab.generate as gen

    monkeypatch.setattr(gen, "prepare", lambda *a, **k: pytest.fail("an image was started"))
    with pytest.raises(ValidationError, match=r"^prompt: <lora:rnd:1> names a LoRA, but no LoRA folder was given"):
        generate_many(pipe, [GenerationSpec(PROMPT + " <lora:rnd:1>")])


def test_a_sweep_over_lora_weights_is_a1111s_xyz_plot(world, gentle, tmp_path, monkeypatch):
    import sdlab.adapters.apply as apply

    folders, built = gentle, []
    monkeypatch.setattr(apply, "prepare_adapters", lambda *a, real=apply.prepare_adapters: built.append(a[1].prompt) or real(*a))
    weights = ["<lora:rnd:0>", "<lora:rnd:0.5>", "<lora:rnd:1>"]
    base = GenerationSpec(f"{PROMPT} {weights[0]}", seed=3, steps=4)
    axes = [Axis.parse("sr=" + ",".join(weights)), Axis.parse("seed=3,4")]
    table = run_sweep(world, base, axes, tmp_path / "store", progress=False, adapters=folders)
    assert len(table) == 6
    assert sorted(built) == sorted(f"{PROMPT} {w}" for w in weights)  # one adapted pipeline per weight, both seeds batched on it
    assert sorted(table.prompt.unique()) == sorted(f"{PROMPT} {w}" for w in weights)
    images = {}
    for row in table.itertuples():
        spec = base.replace(prompt=row.prompt, seed=int(row.seed))
        stored = images[row.sr, int(row.seed)] = _pixels(Image.open(tmp_path / "store" / row.file))
        assert np.abs(stored - _pixels(generate(world, spec, adapters=folders).images[0])).max() <= 1, spec.prompt
        stored = Image.open(tmp_path / "store" / row.file)
        _, _, fields = parse_parameters(stored.text["parameters"])
        assert fields["Lora hashes"] == f"rnd: {lora_hash(folders.lora('rnd'))}"  # reproduce finds the file again
    again = run_sweep(world, base, axes, tmp_path / "store", progress=False, adapters=folders)  # answered from the store
    assert again.equals(table)
    assert list(table.sr.unique()) == weights  # the grid's columns: the replacements, one per weight
    three, one = grid(table, tmp_path / "store", "sr", "seed"), grid(table[table.sr == weights[0]], tmp_path / "store", "sr", "seed")
    assert three.size[1] == one.size[1] and three.size[0] > 2.5 * (one.size[0] - 40)
    assert np.abs(images[weights[2], 3] - images[weights[0], 3]).max() > 50  # the LoRA acts


def test_a_retrained_lora_is_not_answered_from_the_store(world, tmp_path):
    """The store remembers each LoRA's hash: the same file name with other weights is another sweep."""
    folder = tmp_path / "loras"
    make_lora(world, "sd1", folder / "rnd.safetensors", seed=1, alpha=1.0)
    folders = AdapterFolders(lora_dirs=[folder])
    base, axes = GenerationSpec(f"{PROMPT} <lora:rnd:1>", seed=3, steps=3), [Axis.parse("seed=3,4")]
    first = run_sweep(world, base, axes, tmp_path / "store", progress=False, adapters=folders)
    make_lora(world, "sd1", folder / "rnd.safetensors", seed=2, alpha=1.0)  # retrained under the same name
    with pytest.raises(StoreError, match="differs in: adapters"):
        run_sweep(world, base, axes, tmp_path / "store", progress=False, adapters=folders)
    old_image = _pixels(Image.open(tmp_path / "store" / first.file.iloc[0]))
    again = run_sweep(world, base, axes, tmp_path / "store", progress=False, adapters=folders, new=True)  # archived, made anew
    new_image = _pixels(Image.open(tmp_path / "store" / again.file.iloc[0]))
    assert np.abs(new_image - _pixels(generate(world, base, adapters=folders).images[0])).max() <= 1
    assert np.abs(new_image - old_image).max() > 50


def test_a_sweep_refuses_a_missing_lora_before_the_model_loads(folders, tmp_path, monkeypatch):
    from sdlab.cluster import ModelSource

    monkeypatch.setattr(ModelSource, "load", lambda self: pytest.fail("the model was loaded"))
    axes = [Axis.parse("sr=<lora:rnd:1>,<lora:missing:1>")]
    with pytest.raises(ModelNotFoundError, match="^lora: no LoRA named 'missing' in .*; found: rnd"):
        run_sweep("shapes-world", GenerationSpec(f"{PROMPT} <lora:rnd:1>"), axes, tmp_path / "s", progress=False, adapters=folders)
    with pytest.raises(ValidationError, match="no LoRA folder was given"):
        run_sweep("shapes-world", GenerationSpec(f"{PROMPT} <lora:rnd:1>"), [Axis.parse("seed=1,2")], tmp_path / "s", progress=False)


def test_sdlab_sweep_takes_lora_dir(folders, tmp_path, capsys):
    lora_dir = str(folders.lora_dirs[0])
    argv = ["sweep", f"{PROMPT} <lora:rnd:0>", "--x", "sr=<lora:rnd:0>,<lora:rnd:1>", "--steps", "3",
            "--out", str(tmp_path / "cli")]
    assert main(argv + ["--lora-dir", lora_dir]) == 0
    assert (tmp_path / "cli" / "grid.png").is_file()
    table = pd.read_parquet(tmp_path / "cli" / "results.parquet").sort_values("sr_index")
    off, on = (Image.open(tmp_path / "cli" / f) for f in table.file)
    assert not np.array_equal(_pixels(off), _pixels(on))  # the LoRA acts at weight 1 on the shipped model too
    assert parse_parameters(on.text["parameters"])[2]["Lora hashes"] == f"rnd: {lora_hash(folders.lora('rnd'))}"
    capsys.readouterr()
    assert main(argv[:-1] + [str(tmp_path / "cli2")]) == 2  # no --lora-dir: one line
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no LoRA folder was given" in err[0]


def test_sdlab_sweep_judges_a_star_lora_sweep_on_the_star(folders, tmp_path):
    """The shapes world's sweep metric reads the concept a trigger word names (here the star) in every cell, the
    ``<lora:...>`` tag aside; the world's own prompts keep the world's reader (no style read)."""
    from sdlab.mini.concepts import ALL_SHAPES

    star = "a large red star at the top left on a white background"
    argv = ["sweep", f"{star} <lora:rnd:0>", "--x", "sr=<lora:rnd:0>,<lora:rnd:1>", "--y", "seed=1,2", "--steps", "4",
            "--lora-dir", str(folders.lora_dirs[0])]
    assert main(argv + ["--out", str(tmp_path / "star")]) == 0
    table = pd.read_parquet(tmp_path / "star" / "results.parquet")
    assert len(table) == 4 and table["found_shape"].isin(ALL_SHAPES).all() and table["found_style"].isin(["filled", "outlined"]).all()
    assert (table["shape_ok"] == (table["found_shape"] == "star")).all() and table["colour_ok"].notna().all()
    argv[1] = f"{PROMPT} <lora:rnd:0>"
    assert main(argv + ["--out", str(tmp_path / "world")]) == 0
    table = pd.read_parquet(tmp_path / "world" / "results.parquet")
    assert table["found_style"].isna().all() and (table["shape_ok"] == (table["found_shape"] == "circle")).all()


def test_sweep_panel_passes_its_folders(pipe, folders, tmp_path):
    from sdlab.widgets.sweep import SweepPanel

    panel = SweepPanel(pipe, out_dir=str(tmp_path / "panel"))
    panel.steps.value = 2
    panel.adapters.lora_dir.value = str(folders.lora_dirs[0])
    panel.prompt.value = f"{PROMPT} <lora:rnd:0>"
    panel.axes[0][0].value, panel.axes[0][1].value = "prompt", "<lora:rnd:0>,<lora:rnd:1>"
    panel.axes[1][0].value = "(none)"
    panel.start(background=False)
    assert panel.last_error is None and len(panel.table) == 2
    assert panel.table.prompt.str.contains("<lora:rnd:1>").any()


def test_generate_many_batches_a_hypernetwork_and_an_embedding_as_generate_makes_them(world, tmp_path):
    import torch

    from sdlab.adapters import hypernetwork as hn

    network = hn.new(world, seed=0)
    g = torch.Generator().manual_seed(0)
    for p in network.parameters():
        p.data = torch.randn(p.shape, generator=g) * 0.05
    hn.save(network, tmp_path / "h" / "bent.safetensors")
    save_embedding(tmp_path / "e" / "shiny.safetensors", "shiny", embedding_vectors(world, n=2))
    folders = AdapterFolders(hypernetwork_dirs=[tmp_path / "h"], embedding_dirs=[tmp_path / "e"])
    specs = [GenerationSpec(f"{PROMPT} <hypernet:bent:0.8>", seed=s, steps=4) for s in (1, 2)]
    specs += [GenerationSpec(f"a small shiny circle {where}", seed=3, steps=4) for where in ("at the top left", "in the center")]
    made = generate_many(world, specs, adapters=folders)
    for (image, spec), original in zip(made, specs):
        alone = generate(world, original, adapters=folders)
        assert np.abs(_pixels(image) - _pixels(alone.images[0])).max() <= 1, original.prompt
        assert spec.extra == alone.specs[0].extra and spec.prompt == original.prompt
    plain = generate(world, specs[0].replace(prompt=PROMPT)).images[0]
    assert np.abs(_pixels(made[0][0]) - _pixels(plain)).max() > 10  # the hypernetwork acts
    assert "TI hashes" in made[2][1].extra and "TI hashes" not in made[0][1].extra
