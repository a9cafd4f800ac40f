"""ComfyUI files that carry only the UI's ``workflow`` (no ``prompt`` API graph): read from the widgets.

The fixtures are written in ComfyUI's saved-workflow format as its frontend writes it: ``nodes`` with
``type``, ``mode``, ``inputs`` (``{name, type, link}``) and ``widgets_values`` in the order the node
declares its widgets (KSampler: seed, control_after_generate, steps, cfg, sampler_name, scheduler,
denoise), ``links`` as ``[id, origin, origin slot, target, target slot, type]`` (format 0.4) or as
objects (format 1). The oracle is the same graph in ComfyUI's API form, read by sdlab's prompt reader.
"""
from __future__ import annotations

import json

import pytest
from PIL import Image, PngImagePlugin

from sdlab.cli import main
from sdlab.comfyui import prompt_from_workflow, spec_from_comfyui, spec_from_workflow
from sdlab.errors import MetadataError
from sdlab.metadata import read_parameters

SEED = 156680208700286  # ComfyUI's default workflow's seed: more than 32 bits


def _node(nid, cls, inputs=(), widgets=(), mode=0, outputs=()):
    return {"id": nid, "type": cls, "pos": [0, 0], "size": [315, 262], "flags": {}, "order": nid, "mode": mode,
            "inputs": [{"name": n, "type": t, "link": link} for n, t, link in inputs],
            "outputs": [{"name": n, "type": t, "links": links} for n, t, links in outputs],
            "properties": {"Node name for S&R": cls}, "widgets_values": list(widgets)}


def default_workflow() -> dict:
    """ComfyUI's default text-to-image workflow, as its frontend saves it."""
    nodes = [
        _node(3, "KSampler", [("model", "MODEL", 1), ("positive", "CONDITIONING", 4), ("negative", "CONDITIONING", 6),
                              ("latent_image", "LATENT", 2)], [SEED, "randomize", 20, 8, "euler", "normal", 1]),
        _node(4, "CheckpointLoaderSimple", [], ["v1-5-pruned-emaonly.safetensors"]),
        _node(5, "EmptyLatentImage", [], [512, 512, 1]),
        _node(6, "CLIPTextEncode", [("clip", "CLIP", 3)], ["beautiful scenery nature glass bottle landscape, , purple galaxy bottle,"]),
        _node(7, "CLIPTextEncode", [("clip", "CLIP", 5)], ["text, watermark"]),
        _node(8, "VAEDecode", [("samples", "LATENT", 7), ("vae", "VAE", 8)]),
        _node(9, "SaveImage", [("images", "IMAGE", 9)], ["ComfyUI"]),
    ]
    links = [[1, 4, 0, 3, 0, "MODEL"], [2, 5, 0, 3, 3, "LATENT"], [3, 4, 1, 6, 0, "CLIP"], [4, 6, 0, 3, 1, "CONDITIONING"],
             [5, 4, 1, 7, 0, "CLIP"], [6, 7, 0, 3, 2, "CONDITIONING"], [7, 3, 0, 8, 0, "LATENT"], [8, 4, 2, 8, 1, "VAE"],
             [9, 8, 0, 9, 0, "IMAGE"]]
    return {"last_node_id": 9, "last_link_id": 9, "nodes": nodes, "links": links, "groups": [], "config": {},
            "extra": {}, "version": 0.4}


def default_prompt() -> dict:
    """The same graph in ComfyUI's API form (what the ``prompt`` chunk would hold)."""
    return {
        "3": {"class_type": "KSampler", "inputs": {"seed": SEED, "steps": 20, "cfg": 8, "sampler_name": "euler", "scheduler": "normal",
                                                   "denoise": 1, "model": ["4", 0], "positive": ["6", 0], "negative": ["7", 0],
                                                   "latent_image": ["5", 0]}},
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "v1-5-pruned-emaonly.safetensors"}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 512, "height": 512, "batch_size": 1}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "beautiful scenery nature glass bottle landscape, , purple galaxy bottle,", "clip": ["4", 1]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "text, watermark", "clip": ["4", 1]}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "ComfyUI", "images": ["8", 0]}},
    }


def _png(tmp_path, **chunks) -> str:
    info = PngImagePlugin.PngInfo()
    for key, value in chunks.items():
        info.add_text(key, value)
    path = tmp_path / "comfy.png"
    Image.new("RGB", (512, 512), (90, 60, 140)).save(path, pnginfo=info)
    return str(path)


def test_the_default_workflow_becomes_its_api_graph():
    prompt, unmapped = prompt_from_workflow(json.dumps(default_workflow()))
    assert prompt == {**default_prompt(), "9": {"class_type": "SaveImage", "inputs": {"widget_0": "ComfyUI", "images": ["8", 0]}}}
    assert unmapped == []


def test_a_workflow_only_png_reads_like_its_prompt(tmp_path):
    spec = read_parameters(_png(tmp_path, workflow=json.dumps(default_workflow())))
    oracle = spec_from_comfyui(json.dumps(default_prompt()))
    assert (spec.prompt, spec.negative_prompt, spec.seed, spec.steps, spec.guidance, spec.sampler, spec.width, spec.height, spec.model) == (
        oracle.prompt, oracle.negative_prompt, oracle.seed, oracle.steps, oracle.guidance, oracle.sampler, oracle.width, oracle.height, oracle.model)
    assert (spec.seed, spec.steps, spec.guidance, spec.width, spec.height, spec.model) == (SEED, 20, 8.0, 512, 512, "v1-5-pruned-emaonly")
    assert spec.prompt.startswith("beautiful scenery") and spec.negative_prompt == "text, watermark"
    assert spec.extra["source"] == "ComfyUI workflow"


def test_a_saved_workflow_json_is_read_too(tmp_path):
    from sdlab.foreign import from_text

    spec = from_text(json.dumps(default_workflow()), "workflow.json")
    assert (spec.seed, spec.steps, spec.model) == (SEED, 20, "v1-5-pruned-emaonly")


def custom_workflow(link_objects: bool = True) -> dict:
    """SamplerCustomAdvanced with RandomNoise, KSamplerSelect, BasicScheduler (karras) and CFGGuider; the model
    through a Reroute and a bypassed LoRA; the seed from a PrimitiveNode; a muted second KSampler."""
    seed = 2**63 + 12345
    nodes = [
        _node(10, "SamplerCustomAdvanced", [("noise", "NOISE", 1), ("guider", "GUIDER", 2), ("sampler", "SAMPLER", 3),
                                            ("sigmas", "SIGMAS", 4), ("latent_image", "LATENT", 5)]),
        _node(11, "RandomNoise", [("noise_seed", "INT", 12)], [7, "randomize"]),  # the widget holds a stale value
        _node(12, "CFGGuider", [("model", "MODEL", 6), ("positive", "CONDITIONING", 7), ("negative", "CONDITIONING", 8)], [6.5]),
        _node(13, "KSamplerSelect", [], ["dpmpp_2m"]),
        _node(14, "BasicScheduler", [("model", "MODEL", 9)], ["karras", 30, 1.0]),
        _node(15, "EmptyLatentImage", [], [768, 512, 1]),
        _node(16, "CheckpointLoaderSimple", [], ["sd_xl_base_1.0.safetensors"]),
        _node(17, "Reroute", [("", "*", 10)]),
        _node(18, "LoraLoader", [("model", "MODEL", 11), ("clip", "CLIP", 13)], ["style.safetensors", 0.8, 0.8], mode=4),
        _node(19, "CLIPTextEncode", [("clip", "CLIP", 14)], ["a lighthouse at dusk"]),
        _node(20, "CLIPTextEncode", [("clip", "CLIP", 15)], ["blurry"]),
        _node(21, "PrimitiveNode", [], [seed, "fixed"]),
        _node(22, "KSampler", [("model", "MODEL", 16), ("positive", "CONDITIONING", 17), ("negative", "CONDITIONING", 18),
                               ("latent_image", "LATENT", 19)], [1, "fixed", 4, 2, "euler", "normal", 1], mode=2),
    ]
    raw = [[1, 11, 0, 10, 0, "NOISE"], [2, 12, 0, 10, 1, "GUIDER"], [3, 13, 0, 10, 2, "SAMPLER"], [4, 14, 0, 10, 3, "SIGMAS"],
           [5, 15, 0, 10, 4, "LATENT"], [6, 17, 0, 12, 0, "MODEL"], [7, 19, 0, 12, 1, "CONDITIONING"], [8, 20, 0, 12, 2, "CONDITIONING"],
           [9, 17, 0, 14, 0, "MODEL"], [10, 18, 0, 17, 0, "MODEL"], [11, 16, 0, 18, 0, "MODEL"], [12, 21, 0, 11, 0, "INT"],
           [13, 16, 1, 18, 1, "CLIP"], [14, 16, 1, 19, 0, "CLIP"], [15, 16, 1, 20, 0, "CLIP"],
           [16, 16, 0, 22, 0, "MODEL"], [17, 19, 0, 22, 1, "CONDITIONING"], [18, 20, 0, 22, 2, "CONDITIONING"], [19, 15, 0, 22, 3, "LATENT"]]
    links = ([{"id": i, "origin_id": o, "origin_slot": s, "target_id": t, "target_slot": ts, "type": ty} for i, o, s, t, ts, ty in raw]
             if link_objects else raw)
    return {"last_node_id": 22, "last_link_id": 19, "nodes": nodes, "links": links, "version": 1 if link_objects else 0.4}, seed


@pytest.mark.parametrize("link_objects", [True, False])
def test_custom_sampling_reroutes_bypasses_and_primitives(link_objects):
    workflow, seed = custom_workflow(link_objects)
    spec = spec_from_workflow(json.dumps(workflow))
    assert (spec.seed, spec.steps, spec.guidance, spec.sampler, spec.width, spec.height) == (seed, 30, 6.5, "DPM++ 2M Karras", 768, 512)
    assert (spec.prompt, spec.negative_prompt, spec.model) == ("a lighthouse at dusk", "blurry", "sd_xl_base_1.0")
    assert "second sampler" not in spec.extra.get("unmapped", "")  # the muted KSampler never runs
    assert "LoRA" not in spec.extra.get("unmapped", "")  # the bypassed LoRA does not apply


def test_a_link_to_a_missing_node_is_reported():
    workflow = default_workflow()
    workflow["links"] = [link for link in workflow["links"] if link[0] != 6]  # the negative prompt's link, lost
    spec = spec_from_workflow(json.dumps(workflow))
    assert spec.negative_prompt == "" and "input negative of KSampler (node 3): its link leads to no node" in spec.extra["unmapped"]


def test_a_workflow_without_a_sampler_is_one_line(tmp_path, capsys):
    workflow = default_workflow()
    workflow["nodes"] = [n for n in workflow["nodes"] if n["type"] != "KSampler"]
    with pytest.raises(MetadataError, match="ComfyUI workflow .*no sampler node"):
        spec_from_workflow(json.dumps(workflow))
    assert main(["info", _png(tmp_path, workflow=json.dumps(workflow))]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no sampler node" in err and "comfy.png" in err


def test_an_empty_or_broken_workflow_is_one_line(tmp_path, capsys):
    for text, words in (('{"nodes": [], "links": []}', "no nodes"), ("{nodes", "not valid JSON")):
        with pytest.raises(MetadataError, match=words):
            spec_from_workflow(text)
    assert main(["info", _png(tmp_path, workflow="{nodes")]) == 2
    assert "not valid JSON" in capsys.readouterr().err
