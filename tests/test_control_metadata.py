"""ControlNet units in A1111's infotext (the sd-webui-controlnet extension's format), read back and reproduced."""
import hashlib

import numpy as np
import pytest
from PIL import Image

from sdlab.control.infotext import parse_unit
from sdlab.control.nets import EMPTY_HASH, a1111_hash
from sdlab.control.unit import ControlUnit
from sdlab.errors import ValidationError
from sdlab.metadata import format_parameters, parse_parameters, read_parameters, spec_from_parameters
from sdlab.spec import GenerationSpec

# As the extension writes them (ControlNetUnit.serialize, A1111 quoting the value), an SD 1.5 canny and a depth unit.
A1111_TEXT = (
    "a house by a lake\nNegative prompt: blurry\n"
    "Steps: 20, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 1234, Size: 512x512, Model hash: 6ce0161689, "
    'Model: v1-5-pruned-emaonly, ControlNet 0: "Module: canny, Model: control_v11p_sd15_canny [d14c016b], Weight: 0.85, '
    "Resize Mode: Crop and Resize, Processor Res: 512, Threshold A: 100.0, Threshold B: 200.0, Guidance Start: 0.0, "
    'Guidance End: 0.9, Pixel Perfect: False, Control Mode: Balanced", ControlNet 1: "Module: none, Model: '
    "control_v11f1p_sd15_depth [cfd03158], Weight: 1.0, Resize Mode: Just Resize, Processor Res: 512, Threshold A: 0.5, "
    'Threshold B: 0.5, Guidance Start: 0.1, Guidance End: 1.0, Pixel Perfect: False, Control Mode: Balanced", Version: v1.10.1'
)


def _extension_parse(text: str) -> dict:
    """The extension's own parse_unit: split on commas, then on ': '."""
    return {key: value for item in text.split(",") for (key, value) in (item.strip().split(": "),)}


def test_a1111_units_are_read():
    spec = spec_from_parameters(A1111_TEXT)
    canny, depth = spec.control
    assert (canny.module, canny.control_type, canny.model, canny.model_hash) == ("canny", "edges", "control_v11p_sd15_canny", "d14c016b")
    assert (canny.scale, canny.start, canny.end, canny.low, canny.high, canny.processor_res) == (0.85, 0.0, 0.9, 100.0, 200.0, 512)
    assert (depth.preprocessed, depth.model, depth.start, depth.resize_mode) == (True, "control_v11f1p_sd15_depth", 0.1, "Just Resize")
    assert depth.control_type == "depth"  # the registered sd15-depth tells the kind; none means the image is the map
    assert not spec.guess_mode and spec.extra == {"Version": "v1.10.1"}
    assert all(u.image is None for u in spec.control)


def test_written_units_read_back_and_parse_as_the_extension_parses_them():
    image = np.zeros((48, 64, 3), np.uint8)
    image[10:30, 20:40] = 200
    units = [ControlUnit(image, "edges", model="shapes-world-edges", model_hash="1a2b3c4d", scale=0.75, end=0.8, processor_res=48),
             ControlUnit(image, "mask", model="shapes-world-mask", start=0.25, resize_mode="Resize and Fill")]
    spec = GenerationSpec("a red circle", seed=3, steps=20, sampler="Euler", guidance=5, width=64, height=48, control=units, guess_mode=True)
    text = format_parameters(spec)
    _, _, pairs = parse_parameters(text)  # A1111's regex: the quoted value comes back whole
    written = _extension_parse(pairs["ControlNet 0"])
    assert list(written) == ["Module", "Model", "Weight", "Resize Mode", "Processor Res", "Threshold A", "Threshold B",
                             "Guidance Start", "Guidance End", "Pixel Perfect", "Control Mode"]
    assert written["Model"] == "shapes-world-edges [1a2b3c4d]" and written["Control Mode"] == "ControlNet is more important"
    assert written["Weight"] == "0.75" and written["Threshold A"] == "100.0" and written["Processor Res"] == "48"
    assert pairs["Control 0 image hash"] == hashlib.md5(image.tobytes()).hexdigest()
    again = spec_from_parameters(text)
    assert again.guess_mode
    for a, b in zip(again.control, units):
        for field in ("control_type", "model", "scale", "start", "end", "module", "resize_mode", "preprocessed", "processor_res"):
            assert getattr(a, field) == getattr(b, field), field
    assert parse_parameters(format_parameters(again))[2] == pairs  # written again from the read spec: the same pairs


def test_units_sdlab_cannot_run_stay_as_text_and_reproduce_refuses_them(tmp_path):
    text = A1111_TEXT.replace("Module: canny", "Module: depth_midas")
    spec = spec_from_parameters(text)
    assert spec.control == () and spec.extra["ControlNet 0"].startswith("Module: depth_midas")
    assert format_parameters(spec).count("ControlNet ") == 2  # both units written back untouched
    from sdlab.control.recorded import attach_controls

    with pytest.raises(ValidationError, match=r"^control: 'ControlNet 0 with module depth_midas' is not valid"):
        attach_controls(spec, [np.zeros((8, 8, 3), np.uint8)] * 2)
    prompt_first = spec_from_parameters(A1111_TEXT.replace("Control Mode: Balanced", "Control Mode: My prompt is more important", 1))
    assert [u.prompt_more_important for u in prompt_first.control] == [True, False] and not prompt_first.guess_mode
    written = parse_parameters(format_parameters(prompt_first))[2]
    assert _extension_parse(written["ControlNet 0"])["Control Mode"] == "My prompt is more important"
    assert _extension_parse(written["ControlNet 1"])["Control Mode"] == "Balanced"


def test_a1111_legacy_hash(tmp_path):
    small, big = tmp_path / "small.safetensors", tmp_path / "big.safetensors"
    small.write_bytes(b"x" * 1000)
    data = np.random.default_rng(0).integers(0, 256, 0x100000 + 0x20000, dtype=np.uint8).tobytes()
    big.write_bytes(data)
    assert a1111_hash(small) == EMPTY_HASH == "e3b0c442"
    assert a1111_hash(big) == hashlib.sha256(data[0x100000:0x110000]).hexdigest()[:8]


def test_parse_unit_matches_the_extension():
    text = "Module: canny, Model: x [abc12345], Weight: 1.0"
    assert parse_unit(text) == _extension_parse(text)


@pytest.fixture(scope="module")
def sd1_with_controlnet(family_dir, tmp_path_factory):
    import torch
    from test_control_families import tiny_controlnet

    from sdlab.models import load_pipeline

    pipe = load_pipeline(str(family_dir("sd1")), device="cpu")
    directory = tmp_path_factory.mktemp("cn") / "tiny-edges"
    with torch.no_grad():
        tiny_controlnet(pipe, seed=11).save_pretrained(directory)
    return pipe, directory


def test_reproduce_regenerates_a_controlled_png(sd1_with_controlnet, family_dir, tmp_path):
    from sdlab.generate import generate
    from sdlab.reproduce import reproduce

    pipe, directory = sd1_with_controlnet
    model_dir = family_dir("sd1")
    control = tmp_path / "control.png"
    shape = np.full((64, 64, 3), 250, np.uint8)
    shape[16:40, 20:44] = (220, 30, 30)
    Image.fromarray(shape).save(control)
    spec = GenerationSpec("a red square", seed=8, steps=3, sampler="Euler", guidance=4.0,
                          control=ControlUnit(str(control), "edges", model=str(directory), scale=1.3, end=0.7))
    png = generate(pipe, spec).save(tmp_path / "out")[0]
    read = read_parameters(png)
    assert read.control[0].model == "tiny-edges" and read.control[0].scale == 1.3 and read.control[0].end == 0.7

    def must_not_load(_spec):
        raise AssertionError("no model may load before the inputs are checked")

    with pytest.raises(ValidationError, match=r"^control: '0 image\(s\)' is not valid; valid: 1 image\(s\), one per recorded"):
        reproduce(must_not_load, png)
    wrong = tmp_path / "wrong.png"
    Image.fromarray(np.flipud(shape).copy()).save(wrong)
    with pytest.raises(ValidationError, match=r"^control image of unit 0: .* is not valid; valid: the image with hash"):
        reproduce(must_not_load, png, control=[wrong])
    done = reproduce(lambda _spec: pipe, png, control=[control], control_models=[str(directory)], model=str(model_dir), device="cpu")
    assert done.max_abs_difference == 0
    plain = generate(pipe, spec.replace(control=())).images[0]
    assert np.abs(np.asarray(plain, np.int16) - np.asarray(done.result.images[0], np.int16)).max() > 10


def test_registered_names_resolve_to_the_shipped_directory_and_are_cached(sd1_with_controlnet, tmp_path, monkeypatch):
    import shutil

    import sdlab.control.nets as nets
    from sdlab.errors import ModelNotFoundError

    _, directory = sd1_with_controlnet
    monkeypatch.setattr(nets, "WEIGHTS", tmp_path)
    with pytest.raises(ModelNotFoundError, match=r"^control model: the shapes-world-edges weights are missing from .*sdlab train controlnet"):
        nets.load_controlnet("shapes-world-edges")
    shutil.copytree(directory, tmp_path / "shapes-world-controlnet-edges")
    net = nets.load_controlnet("shapes-world-edges")
    assert nets.name_and_hash(net) == ("shapes-world-edges", a1111_hash(tmp_path / "shapes-world-controlnet-edges" / "diffusion_pytorch_model.safetensors"))
    assert nets.load_controlnet("shapes-world-edges") is net  # a name used again is not read again
    with pytest.raises(ModelNotFoundError, match=r"^control model: 'sd15-canny' \(lllyasviel/control_v11p_sd15_canny\) is not in the local"):
        monkeypatch.setattr("sdlab.models._hub_cached", lambda repo: None)
        nets.resolve("sd15-canny")
