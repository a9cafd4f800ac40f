"""ControlNets as single files, as A1111's ControlNet extension and ComfyUI keep them, on tiny pipelines.

The original ControlNet layout is written here from a diffusers ControlNet (``to_ldm``), and that writer
is itself checked against diffusers' own converter (``convert_controlnet_checkpoint`` maps every key and
tensor back). The oracle for reading: diffusers' ``ControlNetModel.from_single_file`` given the config,
and generation with the diffusers model object itself.
"""
import re

import diffusers
import numpy as np
import pytest
import torch
from diffusers.loaders.single_file_utils import DIFFUSERS_TO_LDM_MAPPING, convert_controlnet_checkpoint
from PIL import Image
from safetensors.torch import save_file

from sdlab.control.nets import a1111_hash, load_controlnet, name_and_hash
from sdlab.control.unit import ControlUnit
from sdlab.errors import ModelNotFoundError, UnsafeCheckpointError, ValidationError
from sdlab.generate import generate
from sdlab.metadata import read_parameters
from sdlab.reproduce import reproduce
from sdlab.spec import GenerationSpec
from test_control_families import MAP, tiny_controlnet

RESNET = (("norm1", "in_layers.0"), ("conv1", "in_layers.2"), ("norm2", "out_layers.0"), ("conv2", "out_layers.3"),
          ("time_emb_proj", "emb_layers.1"), ("conv_shortcut", "skip_connection"))


def to_ldm(state: dict, layers_per_block: int, prefix: str = "control_model.") -> dict:
    """A diffusers ControlNet's tensors under the original ControlNet keys (cldm.py's ``ControlNet``)."""
    fixed = DIFFUSERS_TO_LDM_MAPPING["controlnet"]["layers"]
    step = layers_per_block + 1
    out = {}
    for key, value in state.items():
        m = re.match(r"(down_blocks|mid_block)\.(?:(\d+)\.)?(resnets|attentions|downsamplers)\.(\d+)\.(.*)", key)
        if key in fixed:
            new = fixed[key]
        elif m and m.group(1) == "down_blocks":
            b, j, rest = int(m.group(2)), int(m.group(4)), m.group(5)
            if m.group(3) == "resnets":
                new = f"input_blocks.{1 + b * step + j}.0.{_resnet(rest)}"
            elif m.group(3) == "attentions":
                new = f"input_blocks.{1 + b * step + j}.1.{rest}"
            else:
                new = f"input_blocks.{(b + 1) * step}.0.op.{rest.removeprefix('conv.')}"
        elif m:
            k, rest = int(m.group(4)), m.group(5)
            new = f"middle_block.{2 * k}.{_resnet(rest)}" if m.group(3) == "resnets" else f"middle_block.1.{rest}"
        elif key.startswith("controlnet_down_blocks."):
            i, rest = key.split(".")[1], key.split(".", 2)[2]
            new = f"zero_convs.{i}.0.{rest}"
        elif key.startswith("controlnet_mid_block."):
            new = "middle_block_out.0." + key.split(".", 1)[1]
        elif key.startswith("controlnet_cond_embedding.blocks."):
            d, rest = int(key.split(".")[2]), key.split(".", 3)[3]
            new = f"input_hint_block.{2 * (d + 1)}.{rest}"
        else:
            raise KeyError(key)
        out[prefix + new] = value
    return out


def _resnet(rest: str) -> str:
    for ours, theirs in RESNET:
        rest = rest.replace(ours, theirs)
    return rest


def _px(result) -> np.ndarray:
    return np.stack([np.asarray(im.convert("RGB"), dtype=np.int16) for im in result.images])


@pytest.mark.parametrize("name", ["sd1", "sd2"])
def test_the_original_layout_writer_agrees_with_diffusers_converter(loaded, name):
    pipe, _ = loaded(name)
    state = tiny_controlnet(pipe).state_dict()
    back = convert_controlnet_checkpoint(to_ldm(state, pipe.unet.config.layers_per_block), {"layers_per_block": pipe.unet.config.layers_per_block})
    back = {k: v for k, v in back.items() if v is not None}
    assert set(back) == set(state)
    assert all(torch.equal(back[k], state[k]) for k in state)


@pytest.mark.parametrize("name, prefix", [("sd1", "control_model."), ("sd2", "")])
def test_an_original_layout_file_generates_as_the_diffusers_model_does(loaded, name, prefix, tmp_path):
    pipe, _ = loaded(name)
    net = tiny_controlnet(pipe, seed=4)
    path = tmp_path / f"control_tiny_{name}.safetensors"
    save_file({k: v.contiguous() for k, v in to_ldm(net.state_dict(), pipe.unet.config.layers_per_block, prefix).items()}, str(path))
    ours = load_controlnet(path, unet=pipe.unet)
    assert isinstance(ours, diffusers.ControlNetModel)
    # diffusers' own single-file loader, told the config, reads the same tensors
    net.save_config(tmp_path / "config")
    theirs = diffusers.ControlNetModel.from_single_file(str(path), config=str(tmp_path / "config"), local_files_only=True)
    assert all(torch.equal(ours.state_dict()[k], v) for k, v in theirs.state_dict().items())
    spec = GenerationSpec("a red circle on a blue background", seed=2, steps=3, guidance=4.0, sampler="Euler")
    from_file = generate(pipe, spec.replace(control=ControlUnit(MAP, model=str(path), scale=0.9, preprocessed=True)))
    from_object = generate(pipe, spec.replace(control=ControlUnit(MAP, model=net, scale=0.9, preprocessed=True)))
    assert np.array_equal(_px(from_file), _px(from_object))
    assert np.abs(_px(from_file) - _px(generate(pipe, spec))).max() > 10  # the control acts: the comparison could fail
    # A1111 names a ControlNet file by its stem and its legacy hash
    assert name_and_hash(ours) == (path.stem, a1111_hash(path))
    from sdlab.metadata import format_parameters

    assert f"Model: {path.stem} [{a1111_hash(path)}]" in format_parameters(from_file.specs[0])


def test_an_sdxl_file_in_diffusers_keys_loads_and_shallower_nets_are_read_from_the_file(loaded, tmp_path):
    pipe, _ = loaded("sdxl")
    net = tiny_controlnet(pipe, seed=5)
    path = tmp_path / "diffusers_xl_tiny.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
    ours = load_controlnet(path, unet=pipe.unet)
    assert all(torch.equal(ours.state_dict()[k], v) for k, v in net.state_dict().items())
    spec = GenerationSpec("a red circle", seed=1, steps=3, guidance=4.0, sampler="Euler")
    assert np.array_equal(_px(generate(pipe, spec.replace(control=ControlUnit(MAP, model=str(path), preprocessed=True)))),
                          _px(generate(pipe, spec.replace(control=ControlUnit(MAP, model=net, preprocessed=True)))))
    # a ControlNet whose blocks hold another transformer depth than the UNet's (SDXL's "mid"/"small" kind)
    depths = [0 if t == "DownBlock2D" else 2 for t in pipe.unet.config.down_block_types]
    deeper = diffusers.ControlNetModel.from_config({**net.config, "transformer_layers_per_block": [d or 1 for d in depths]})
    path2 = tmp_path / "diffusers_xl_deeper.safetensors"
    save_file({k: v.contiguous() for k, v in deeper.state_dict().items()}, str(path2))
    read = load_controlnet(path2, unet=pipe.unet)
    assert all(torch.equal(read.state_dict()[k], v) for k, v in deeper.state_dict().items())


def test_files_that_do_not_fit_are_refused_in_one_line(loaded, tmp_path):
    sd1, _ = loaded("sd1")
    sdxl, _ = loaded("sdxl")
    xl = tiny_controlnet(sdxl)
    ldm_xl = tmp_path / "xl_original.safetensors"  # diffusers' converter has no mapping for SDXL's label_emb
    save_file({k: v.contiguous() for k, v in to_ldm({k: v for k, v in xl.state_dict().items() if not k.startswith("add_embedding")},
                                                    sdxl.unet.config.layers_per_block).items()}, str(ldm_xl))
    with pytest.raises(ValidationError, match=r"missing \(e\.g\. add_embedding"):
        load_controlnet(ldm_xl, unet=sdxl.unet)
    other = tmp_path / "sd1_net.safetensors"
    save_file({k: v.contiguous() for k, v in tiny_controlnet(sd1).state_dict().items()}, str(other))
    with pytest.raises(ValidationError, match="does not fit this pipeline's UNet"):
        load_controlnet(other, unet=sdxl.unet)
    lora = tmp_path / "a_lora.safetensors"
    save_file({"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": torch.zeros(4, 8)}, str(lora))
    with pytest.raises(ValidationError, match="is not a ControlNet"):
        load_controlnet(lora, unet=sd1.unet)
    with pytest.raises(ValidationError, match="unet="):
        load_controlnet(other)
    with pytest.raises(ModelNotFoundError, match="no such file"):
        load_controlnet(tmp_path / "absent.safetensors", unet=sd1.unet)


def test_a_pickle_needs_consent(loaded, tmp_path):
    pipe, _ = loaded("sd1")
    net = tiny_controlnet(pipe, seed=6)
    path = tmp_path / "control_tiny.pth"
    torch.save({"state_dict": to_ldm(net.state_dict(), pipe.unet.config.layers_per_block)}, path)
    with pytest.raises(UnsafeCheckpointError, match="allow_pickle"):
        load_controlnet(path, unet=pipe.unet)
    spec = GenerationSpec("a red circle", seed=1, steps=2, sampler="Euler", control=ControlUnit(MAP, model=str(path), preprocessed=True))
    with pytest.raises(UnsafeCheckpointError):
        generate(pipe, spec)
    ok = spec.replace(control=spec.control[0].replace(allow_pickle=True))
    assert np.array_equal(_px(generate(pipe, ok)), _px(generate(pipe, spec.replace(control=ControlUnit(MAP, model=net, preprocessed=True)))))


def test_reproduce_finds_the_recorded_controlnet_in_an_a1111_folder(loaded, family_dir, tmp_path):
    pipe, _ = loaded("sd1")
    folder = tmp_path / "ControlNet"
    folder.mkdir()
    net = tiny_controlnet(pipe, seed=8)
    # over 1 MiB (metadata padding), so A1111's legacy hash tells files apart
    pad = {"note": np.random.default_rng(0).bytes(700_000).hex()}
    path = folder / "control_tiny_canny.safetensors"
    save_file({k: v.contiguous() for k, v in to_ldm(net.state_dict(), pipe.unet.config.layers_per_block).items()}, str(path), metadata=pad)
    spec = GenerationSpec("a red circle", seed=4, steps=3, guidance=4.0, sampler="Euler",
                          control=ControlUnit(MAP, model=str(path), preprocessed=True))
    made = generate(pipe, spec).save(tmp_path / "out")[0]
    assert read_parameters(made).control[0].model == "control_tiny_canny"
    MAP.save(tmp_path / "map.png")

    def load(_):
        return pipe

    again = reproduce(load, made, control=[tmp_path / "map.png"], model=str(family_dir("sd1")), control_dir=folder)
    assert again.max_abs_difference == 0
    path.rename(folder / "renamed.safetensors")  # found again by its hash
    assert reproduce(load, made, control=[tmp_path / "map.png"], model=str(family_dir("sd1")), control_dir=folder).max_abs_difference == 0
    (folder / "renamed.safetensors").unlink()
    with pytest.raises(ModelNotFoundError, match="control_tiny_canny"):  # before any load
        reproduce(lambda _: pytest.fail("loaded"), made, control=[tmp_path / "map.png"], model=str(family_dir("sd1")), control_dir=folder)


def test_cli_generates_with_a_file_from_the_folder(loaded, family_dir, tmp_path, capsys):
    from sdlab.cli import main

    pipe, _ = loaded("sd1")
    folder = tmp_path / "ControlNet"
    folder.mkdir()
    save_file({k: v.contiguous() for k, v in to_ldm(tiny_controlnet(pipe, seed=9).state_dict(), pipe.unet.config.layers_per_block).items()},
              str(folder / "control_tiny.safetensors"))
    MAP.save(tmp_path / "map.png")
    base = ["generate", "a red circle", "--model", str(family_dir("sd1")), "--steps", "2", "--seed", "1", "--out", str(tmp_path / "o"),
            "--control", str(tmp_path / "map.png"), "--control-preprocessed"]
    assert main(base + ["--control-model", "control_tiny", "--controlnet-dir", str(folder)]) == 0
    png = capsys.readouterr().out.strip().splitlines()[-1]
    assert read_parameters(png).control[0].model == "control_tiny"
    assert main(base + ["--control-model", "control_absent", "--controlnet-dir", str(folder)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "control_absent" in err[0]
    torch.save({}, folder / "x.pth")
    assert main(base + ["--control-model", str(folder / "x.pth")]) == 2
    assert "--allow-pickle" in capsys.readouterr().err


def test_the_panel_lists_and_uses_an_a1111_folder(loaded, tmp_path):
    from sdlab.widgets.generation import GenerationPanel

    pipe, _ = loaded("sd1")
    folder = tmp_path / "ControlNet"
    folder.mkdir()
    net = tiny_controlnet(pipe, seed=10)
    save_file({k: v.contiguous() for k, v in to_ldm(net.state_dict(), pipe.unet.config.layers_per_block).items()},
              str(folder / "control_tiny.safetensors"))
    torch.save({}, folder / "control_old.pth")
    panel = GenerationPanel(pipe)
    panel.control.folder.value = str(folder)
    row = panel.control.rows[0]
    assert {"control_tiny", "control_old"} <= set(row.model.options)
    row.enabled.value, row.image, row.preprocessed.value = True, MAP, True
    row.model.value = "control_tiny"
    panel.prompt.value, panel.steps.value = "a red circle", 2
    unit = panel.spec().control[0]
    assert unit.model == str(folder / "control_tiny.safetensors")
    panel.generate(background=False)
    assert not panel.last_error and panel.results
    row.model.value = "control_old"  # a pickle, without the section's consent: one line in the panel, nothing run
    before = len(panel.results)
    panel.generate(background=False)
    assert "pickle" in panel.last_error and len(panel.results) == before


def test_cli_lists_a_folder_as_a1111_names_its_files(tmp_path, capsys):
    from sdlab.cli import main

    (tmp_path / "control_a.safetensors").write_bytes(b"x" * 10)
    (tmp_path / "notes.txt").write_text("not a model")
    assert main(["control", "list", "--controlnet-dir", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert f"control_a [e3b0c442]  {tmp_path / 'control_a.safetensors'}" in lines and not any("notes" in x for x in lines)
    assert main(["control", "list", "--controlnet-dir", str(tmp_path / "absent")]) == 2
