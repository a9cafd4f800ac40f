"""A1111 'parameters' chunk: written as A1111 writes it, read from sdlab, A1111 and ComfyUI PNGs."""
import json

import pytest
from PIL import Image, PngImagePlugin

from sdlab.errors import MetadataError
from sdlab.metadata import format_parameters, parse_parameters, read_parameters, save_png, spec_from_parameters
from sdlab.spec import GenerationSpec

A1111 = """a castle on a hill, (golden hour:1.2), [fog]
with a second line
Negative prompt: blurry, lowres
Steps: 20, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 1234, Size: 512x768, Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, Denoising strength: 0.75, Clip skip: 2, Lora hashes: "detail: ab12, style: cd34", Version: v1.10.1"""


def _png_with(tmp_path, key, text):
    info = PngImagePlugin.PngInfo()
    info.add_text(key, text)
    path = tmp_path / f"{key}.png"
    Image.new("RGB", (8, 8)).save(path, pnginfo=info)
    return path


def test_reads_a_real_a1111_string(tmp_path):
    spec = read_parameters(_png_with(tmp_path, "parameters", A1111))
    assert spec.prompt == "a castle on a hill, (golden hour:1.2), [fog]\nwith a second line"
    assert spec.negative_prompt == "blurry, lowres"
    assert (spec.steps, spec.sampler, spec.guidance, spec.seed) == (20, "DPM++ 2M Karras", 7.0, 1234)
    assert (spec.width, spec.height, spec.clip_skip) == (512, 768, 2)
    assert (spec.model, spec.model_hash) == ("v1-5-pruned-emaonly", "6ce0161689")
    assert spec.extra["Lora hashes"] == "detail: ab12, style: cd34" and spec.extra["Version"] == "v1.10.1"


def test_unknown_keys_survive_a_round_trip():
    again = spec_from_parameters(format_parameters(spec_from_parameters(A1111)))
    assert again.extra["Lora hashes"] == "detail: ab12, style: cd34"
    assert "Denoising strength: 0.75" in format_parameters(again)


def test_old_style_karras_sampler_and_no_negative_prompt():
    spec = spec_from_parameters("a cat\nSteps: 30, Sampler: DPM++ 2M Karras, CFG scale: 7.5, Seed: 1, Size: 64x64")
    assert spec.sampler == "DPM++ 2M Karras" and spec.negative_prompt == "" and spec.guidance == 7.5


def test_a_last_line_with_few_pairs_is_prompt():
    prompt, negative, pairs = parse_parameters("a photo\nstyle: oil, mood: calm")
    assert prompt == "a photo\nstyle: oil, mood: calm" and pairs == {}


def test_every_field_round_trips_through_a_png(tmp_path):
    spec = GenerationSpec(
        "a (red:1.3) circle, \"quoted\"\nsecond line", negative_prompt="blue, green", seed=42, steps=12,
        guidance=7.5, sampler="Euler a", width=64, height=48, clip_skip=2, model="shapes-world", model_hash="0123456789",
        extra={"Custom key": "a, b"},
    )
    path = save_png(Image.new("RGB", (64, 48)), spec, tmp_path)
    assert path.name.startswith("42-") and path.suffix == ".png"
    assert read_parameters(path) == spec
    assert read_parameters(path).extra == {"Custom key": "a, b"}
    second = save_png(Image.new("RGB", (64, 48)), spec, tmp_path)
    assert second != path and path.exists()  # never overwrites


def test_comfyui_prompt_chunk(tmp_path):
    graph = {
        "3": {"class_type": "KSampler", "inputs": {"seed": 7, "steps": 20, "cfg": 6.5, "sampler_name": "dpmpp_2m", "scheduler": "karras",
                                                    "denoise": 1.0, "positive": ["6", 0], "negative": ["7", 0], "latent_image": ["5", 0]}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 512, "height": 512, "batch_size": 1}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a fox"}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry"}},
    }
    spec = read_parameters(_png_with(tmp_path, "prompt", json.dumps(graph)))
    assert (spec.prompt, spec.negative_prompt, spec.seed, spec.steps, spec.guidance) == ("a fox", "blurry", 7, 20, 6.5)
    assert spec.sampler == "DPM++ 2M Karras" and (spec.width, spec.height) == (512, 512)
    graph["3"]["inputs"]["sampler_name"] = "res_multistep"
    odd = read_parameters(_png_with(tmp_path, "prompt", json.dumps(graph)))
    assert "res_multistep" in odd.extra["unmapped"]


@pytest.mark.parametrize("text, message", [
    ("a\nSteps: x, Sampler: Euler, Seed: 1", "Steps 'x' is not a number"),
    ("a\nSteps: 2, Size: huge, Seed: 1", "Size 'huge' is not WIDTHxHEIGHT"),
    ("   ", "empty"),
])
def test_malformed_metadata_is_a_clear_error(text, message):
    with pytest.raises(MetadataError, match=message):
        spec_from_parameters(text)


def test_png_without_metadata(tmp_path):
    Image.new("RGB", (4, 4)).save(tmp_path / "x.png")
    with pytest.raises(MetadataError, match="no generation metadata"):
        read_parameters(tmp_path / "x.png")
    (tmp_path / "broken.png").write_bytes(b"not a png")
    with pytest.raises(MetadataError, match="not a readable image"):
        read_parameters(tmp_path / "broken.png")
