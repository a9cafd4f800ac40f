"""``sdlab control preprocess``, ``generate --control ...`` and ``reproduce --control ...``: results, and exit 2 in one line."""
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from sdlab.cli import main
from sdlab.control.preprocess import preprocess
from sdlab.mini import world


@pytest.fixture(scope="module")
def scene_png(tmp_path_factory):
    path = tmp_path_factory.mktemp("scene") / "scene.png"
    world.render(world.sample_scene(np.random.default_rng(4), shape="square", size="large")).save(path)
    return path


def test_preprocess_writes_the_map(scene_png, tmp_path, capsys):
    for kind in ("edges", "mask"):
        out = tmp_path / f"{kind}.png"
        assert main(["control", "preprocess", str(scene_png), "--type", kind, "--out", str(out)]) == 0
        assert capsys.readouterr().out.strip() == str(out)
        assert np.array_equal(np.asarray(Image.open(out)), np.asarray(preprocess(Image.open(scene_png), kind)))
    assert main(["control", "list"]) == 0
    assert "shapes-world-edges" in capsys.readouterr().out


@pytest.mark.parametrize("argv,fragment", [
    (["control", "preprocess", "@scene", "--type", "pose", "--out", "@out"], "control_type: 'pose' is not valid; valid: one of edges, mask, depth"),
    (["control", "preprocess", "@scene", "--module", "mask", "--out", "@out"], "module: 'mask' is not valid; valid: for edges: one of canny, outline"),
    (["control", "preprocess", "@missing", "--out", "@out"], "image: no such file"),
    (["generate", "a", "--control", "@missing", "--control-model", "shapes-world-edges"], "--control: no such file"),
    (["generate", "a", "--control", "@scene", "--control-model", "no-such-net"], "control model: 'no-such-net' is not a registered ControlNet"),
    (["generate", "a", "--control", "@scene"], "--control-model: None is not valid"),
    (["generate", "a", "--control", "@scene", "--control-model", "@dir", "--control-scale", "3"], "scale: 3.0 is not valid; valid: a number in [0, 2]"),
    (["generate", "a", "--control", "@scene", "--control-model", "@dir", "--control-start", "0.8", "--control-end", "0.2"],
     "control end: 0.2 is not valid"),
    (["generate", "a", "--control", "@scene", "--control", "@scene", "--control-model", "@dir", "--control-scale", "1", "--control-scale", "1",
      "--control-scale", "1"], "--control-scale: [1.0, 1.0, 1.0] is not valid; valid: one value, or one per --control (2)"),
    (["generate", "a", "--control-type", "mask"], "--control-type: ['mask'] is not valid; valid: only with --control IMG"),
    (["generate", "a", "--control-mode", "prompt"], "--control-mode: ['prompt'] is not valid; valid: only with --control IMG"),
    (["generate", "a", "--control", "@scene", "--control-model", "@dir", "--control-mode", "loud"],
     "--control-mode: 'loud' is not valid; valid: balanced, prompt or controlnet"),
    (["generate", "a", "--control", "@scene", "--control", "@scene", "--control-model", "@dir", "--control-mode", "controlnet",
      "--control-mode", "balanced"], "--control-mode: ['controlnet', 'balanced'] is not valid; valid: controlnet for every unit or for none"),
    (["generate", "a", "--control", "@scene", "--control-type", "depth", "--control-model", "@dir", "--control-module", "canny"],
     "module: 'canny' is not valid; valid: for depth: one of none"),
])
def test_bad_control_input_exits_2_in_one_line_before_any_model_loads(argv, fragment, scene_png, tmp_path, capsys, monkeypatch):
    import sdlab.models

    monkeypatch.setattr(sdlab.models, "load_pipeline", lambda *a, **k: pytest.fail("a model was loaded for a bad input"))
    (tmp_path / "net").mkdir()
    (tmp_path / "net" / "config.json").write_text("{}")
    names = {"@scene": str(scene_png), "@out": str(tmp_path / "map.png"), "@missing": str(tmp_path / "nope.png"), "@dir": str(tmp_path / "net")}
    assert main([names.get(a, a) for a in argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and fragment in err[0], err


def test_a_refusing_process_never_imports_torch(scene_png):
    code = ("import sys; from sdlab.cli import main; rc = main(['generate', 'a', '--control', %r, '--control-model', 'no-such-net']); "
            "print(rc, 'torch' in sys.modules)" % str(scene_png))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.stdout.split() == ["2", "False"], proc.stderr


def test_generate_and_reproduce_with_control(family_dir, scene_png, tmp_path, capsys):
    import torch
    from test_control_families import tiny_controlnet

    from sdlab.metadata import read_parameters
    from sdlab.models import load_pipeline

    model = family_dir("sd1")
    net_dir = tmp_path / "tiny-edges"
    with torch.no_grad():
        tiny_controlnet(load_pipeline(str(model), device="cpu"), seed=5).save_pretrained(net_dir)
    out = tmp_path / "out"
    argv = ["generate", "a red square", "--model", str(model), "--device", "cpu", "--seed", "4", "--steps", "3", "--sampler", "Euler",
            "--control", str(scene_png), "--control-type", "edges", "--control-model", str(net_dir), "--control-scale", "1.5",
            "--control-end", "0.7", "--control-mode", "prompt", "--out", str(out)]
    assert main(argv) == 0
    png = capsys.readouterr().out.strip()
    unit = read_parameters(png).control[0]
    assert (unit.module, unit.model, unit.scale, unit.end, unit.prompt_more_important) == ("canny", "tiny-edges", 1.5, 0.7, True)
    assert main(["reproduce", png, "--model", str(model), "--device", "cpu", "--out", str(tmp_path / "again")]) == 2
    assert "control: '0 image(s)' is not valid" in capsys.readouterr().err
    assert main(["reproduce", png, "--model", str(model), "--device", "cpu", "--out", str(tmp_path / "again"),
                 "--control", str(scene_png), "--control-model", str(net_dir)]) == 0
    assert capsys.readouterr().out.strip().endswith("max abs pixel difference: 0")


def test_the_shipped_controlnet_by_name_from_generate_to_reproduce(scene_png, tmp_path, capsys):
    from sdlab.control.nets import WEIGHTS, a1111_hash
    from sdlab.metadata import read_parameters

    argv = ["generate", "a large yellow square on a teal background", "--device", "cpu", "--seed", "2", "--steps", "8",
            "--control", str(scene_png), "--control-model", "shapes-world-edges", "--out", str(tmp_path / "out")]
    assert main(argv) == 0
    png = capsys.readouterr().out.strip()
    unit = read_parameters(png).control[0]
    shipped = WEIGHTS / "shapes-world-controlnet-edges" / "diffusion_pytorch_model.safetensors"
    assert (unit.model, unit.model_hash) == ("shapes-world-edges", a1111_hash(shipped))
    assert main(["reproduce", png, "--device", "cpu", "--control", str(scene_png), "--out", str(tmp_path / "again")]) == 0
    assert capsys.readouterr().out.strip().endswith("max abs pixel difference: 0")  # found again by its registered name and hash
