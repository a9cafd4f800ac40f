"""Files the community's tools write, made here in each tool's documented format, read back by sdlab.

Fixtures: A1111 stealth PNGs (alpha and RGB, plain and gzip, written bit for bit as the sd-webui
stealth-pnginfo extension writes them), A1111 JPEG/WebP (EXIF UserComment as piexif dumps it), InvokeAI
(``invokeai_metadata``, ``sd-metadata``, ``Dream``), NovelAI (``Comment``/``Description``, and its stealth
JSON), Fooocus (JSON scheme, A1111 text, JPEG EXIF) and ComfyUI graphs of both styles.
"""
import gzip
import json

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from sdlab.cli import main
from sdlab.errors import MetadataError
from sdlab.metadata import format_parameters, read_parameters, save_png

A1111 = ("a lighthouse at dusk, (golden hour:1.2)\nNegative prompt: blurry, lowres\n"
         "Steps: 24, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 6.5, Seed: 987654321, Size: 512x768, "
         "Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, Version: v1.10.1")


def _noise(size=(64, 64), mode="RGB"):
    pixels = np.random.default_rng(1).integers(0, 256, (size[1], size[0], len(mode)), dtype=np.uint8)
    return Image.fromarray(pixels, mode)


def _png(tmp_path, chunks: dict, image=None, name="x.png"):
    info = PngImagePlugin.PngInfo()
    for key, text in chunks.items():
        info.add_text(key, text)
    path = tmp_path / name
    (image or _noise()).save(path, pnginfo=info)
    return path


def _stealth(image, text, mode="alpha", compressed=False, payload=None, length=None):
    """sd-webui-stealth-pnginfo's add_data: signature, 32-bit bit count, payload; pixels column by column."""
    signature = f"stealth_{'png' if mode == 'alpha' else 'rgb'}{'comp' if compressed else 'info'}"
    if payload is None:
        payload = gzip.compress(text.encode("utf-8")) if compressed else text.encode("utf-8")
    bits = "".join(f"{b:08b}" for b in signature.encode()) + f"{length if length is not None else len(payload) * 8:032b}"
    bits += "".join(f"{b:08b}" for b in payload)
    image = image.convert("RGBA" if mode == "alpha" else "RGB")
    if mode == "alpha":
        image.putalpha(255)
    pixels, index = image.load(), 0
    for x in range(image.width):
        for y in range(image.height):
            if index >= len(bits):
                return image
            if mode == "alpha":
                r, g, b, a = pixels[x, y]
                pixels[x, y] = (r, g, b, (a & ~1) | int(bits[index]))
                index += 1
            else:
                r, g, b = pixels[x, y]
                r = (r & ~1) | int(bits[index])
                g = (g & ~1) | int(bits[index + 1]) if index + 1 < len(bits) else g
                b = (b & ~1) | int(bits[index + 2]) if index + 2 < len(bits) else b
                pixels[x, y] = (r, g, b)
                index += 3
    return image


def _expect_a1111(spec):
    assert (spec.prompt, spec.negative_prompt) == ("a lighthouse at dusk, (golden hour:1.2)", "blurry, lowres")
    assert (spec.seed, spec.steps, spec.guidance, spec.sampler) == (987654321, 24, 6.5, "DPM++ 2M Karras")
    assert (spec.width, spec.height, spec.model, spec.model_hash) == (512, 768, "v1-5-pruned-emaonly", "6ce0161689")


# -- AUTOMATIC1111 beyond the text chunk ---------------------------------------------------------
@pytest.mark.parametrize("mode", ["alpha", "rgb"])
@pytest.mark.parametrize("compressed", [False, True])
def test_a1111_stealth_png(tmp_path, mode, compressed):
    path = tmp_path / "stealth.png"
    _stealth(_noise(), A1111, mode, compressed).save(path)
    _expect_a1111(read_parameters(path))


def test_a1111_stealth_survives_a_clean_image_and_says_nothing_when_absent(tmp_path):
    path = tmp_path / "plain.png"
    _noise(mode="RGBA").save(path)
    with pytest.raises(MetadataError, match="no generation metadata"):
        read_parameters(path)


@pytest.mark.parametrize("fmt", ["JPEG", "WEBP"])
@pytest.mark.parametrize("endian", ["utf-16-be", "utf-16-le"])
def test_a1111_jpeg_and_webp_user_comment(tmp_path, fmt, endian):
    exif = Image.Exif()
    exif[0x8769] = {0x9286: b"UNICODE\0" + A1111.encode(endian)}  # piexif's UserComment.dump(..., "unicode")
    path = tmp_path / f"a1111.{fmt.lower()}"
    _noise().save(path, fmt, exif=exif, quality=90)
    _expect_a1111(read_parameters(path))


# -- InvokeAI ------------------------------------------------------------------------------------
INVOKE = {"generation_mode": "txt2img", "positive_prompt": "a castle on a hill", "negative_prompt": "fog",
          "width": 768, "height": 512, "seed": 3141592653, "rand_device": "cpu", "cfg_scale": 7.5,
          "cfg_rescale_multiplier": 0, "steps": 30, "scheduler": "dpmpp_2m_k", "clip_skip": 1,
          "model": {"key": "a1b2", "hash": "blake3:9f8e", "name": "stable-diffusion-v1-5", "base": "sd-1", "type": "main"},
          "app_version": "4.2.4"}


def test_invokeai_metadata(tmp_path):
    spec = read_parameters(_png(tmp_path, {"invokeai_metadata": json.dumps(INVOKE)}))
    assert (spec.prompt, spec.negative_prompt, spec.seed, spec.steps, spec.guidance) == ("a castle on a hill", "fog", 3141592653, 30, 7.5)
    assert (spec.sampler, spec.width, spec.height, spec.clip_skip) == ("DPM++ 2M Karras", 768, 512, 2)
    assert (spec.model, spec.model_hash, spec.extra["source"]) == ("stable-diffusion-v1-5", "blake3:9f8e", "InvokeAI")
    assert "unmapped" not in spec.extra
    odd = read_parameters(_png(tmp_path, {"invokeai_metadata": json.dumps({**INVOKE, "scheduler": "deis", "loras": [{"weight": 1}]})}))
    assert odd.sampler is None and odd.extra["Sampler"] == "deis"
    assert "'deis'" in odd.extra["unmapped"] and "loras" in odd.extra["unmapped"]


def test_invokeai2_sd_metadata_and_dream(tmp_path):
    sd = {"model": "stable diffusion", "model_weights": "stable-diffusion-1.5", "model_hash": "cc6cb27103",
          "app_id": "invoke-ai/InvokeAI", "app_version": "2.2.5",
          "image": {"prompt": [{"prompt": "a tabby cat [blurry, lowres]", "weight": 1.0}], "steps": 50, "cfg_scale": 7.5,
                    "threshold": 0, "perlin": 0, "height": 512, "width": 640, "seed": 42, "seamless": False,
                    "hires_fix": False, "type": "txt2img", "postprocessing": None, "sampler": "k_euler_a", "variations": []}}
    spec = read_parameters(_png(tmp_path, {"sd-metadata": json.dumps(sd)}))
    assert (spec.prompt, spec.negative_prompt, spec.seed, spec.steps, spec.guidance) == ("a tabby cat", "blurry, lowres", 42, 50, 7.5)
    assert (spec.sampler, spec.width, spec.height, spec.model, spec.model_hash) == ("Euler a", 640, 512, "stable-diffusion-1.5", "cc6cb27103")
    assert "karras_max" in spec.extra["unmapped"]  # the schedule InvokeAI 2 ran is not in its file
    dream = read_parameters(_png(tmp_path, {"Dream": '"a tabby cat [blurry]" -s 40 -S 1234 -W 512 -H 576 -C 8.5 -A k_lms'}))
    assert (dream.prompt, dream.negative_prompt, dream.seed, dream.steps, dream.guidance) == ("a tabby cat", "blurry", 1234, 40, 8.5)
    assert (dream.sampler, dream.width, dream.height) == ("LMS", 512, 576)
    assert read_parameters(_png(tmp_path, {"Dream": "a tabby cat -S77"})).seed == 77  # prompt2png's form


# -- NovelAI -------------------------------------------------------------------------------------
NAI = {"prompt": "1girl, lighthouse, dusk", "steps": 28, "height": 1216, "width": 832, "scale": 5.0, "uncond_scale": 1.0,
       "cfg_rescale": 0.0, "seed": 2718281828, "n_samples": 1, "noise_schedule": "karras", "sampler": "k_dpmpp_2m",
       "sm": False, "sm_dyn": False, "uc": "lowres, bad anatomy", "request_type": "PromptGenerateRequest"}
NAI_CHUNKS = {"Title": "AI generated image", "Description": "1girl, lighthouse, dusk", "Software": "NovelAI",
              "Source": "Stable Diffusion XL C1E1DE52", "Comment": json.dumps(NAI)}


def _expect_nai(spec, sampler="DPM++ 2M Karras"):
    assert (spec.prompt, spec.negative_prompt, spec.seed, spec.steps, spec.guidance) == (
        "1girl, lighthouse, dusk", "lowres, bad anatomy", 2718281828, 28, 5.0)
    assert (spec.sampler, spec.width, spec.height, spec.model) == (sampler, 832, 1216, "Stable Diffusion XL C1E1DE52")
    assert spec.extra["source"] == "NovelAI"


def test_novelai_comment_and_its_stealth_copy(tmp_path):
    _expect_nai(read_parameters(_png(tmp_path, NAI_CHUNKS)))
    older = {k: v for k, v in NAI.items() if k not in ("prompt", "noise_schedule")} | {"sampler": "k_euler_ancestral"}
    _expect_nai(read_parameters(_png(tmp_path, {**NAI_CHUNKS, "Comment": json.dumps(older)})), "Euler a")
    path = tmp_path / "nai-stealth.png"
    _stealth(_noise(), json.dumps(NAI_CHUNKS), "alpha", compressed=True).save(path)  # NovelAI's stealth_pngcomp
    _expect_nai(read_parameters(path))
    odd = read_parameters(_png(tmp_path, {**NAI_CHUNKS, "Comment": json.dumps({**NAI, "noise_schedule": "exponential", "sm": True})}))
    assert odd.sampler is None and "'exponential'" in odd.extra["unmapped"] and "sm True" in odd.extra["unmapped"]


# -- Fooocus -------------------------------------------------------------------------------------
FOOOCUS = {"prompt": "a lighthouse at dusk", "negative_prompt": "blurry", "styles": "['Fooocus V2', 'Fooocus Enhance']",
           "performance": "Speed", "steps": 30, "resolution": "(1152, 896)", "guidance_scale": 4.0, "sharpness": 2.0,
           "adm_guidance": "(1.5, 0.8, 0.3)", "base_model": "juggernautXL_v8Rundiffusion.safetensors",
           "refiner_model": "None", "refiner_switch": 0.5, "sampler": "dpmpp_2m_sde_gpu", "scheduler": "karras",
           "seed": "8223405834394411904", "version": "Fooocus v2.5.5", "base_model_hash": "aeb7e9e689"}


def _expect_fooocus(spec, sampler="DPM++ 2M SDE Karras"):
    assert (spec.prompt, spec.negative_prompt, spec.seed, spec.steps, spec.guidance) == (
        "a lighthouse at dusk", "blurry", 8223405834394411904, 30, 4.0)
    assert (spec.sampler, spec.width, spec.height, spec.model) == (sampler, 1152, 896, "juggernautXL_v8Rundiffusion")
    assert spec.extra["source"] == "Fooocus" and "Fooocus V2" in spec.extra["unmapped"]


def test_fooocus_json_in_parameters_and_in_jpeg_exif(tmp_path):
    _expect_fooocus(read_parameters(_png(tmp_path, {"parameters": json.dumps(FOOOCUS), "fooocus_scheme": "fooocus"})))
    exif = Image.Exif()
    exif[0x9286], exif[0x0131], exif[0x927C] = json.dumps(FOOOCUS), "Fooocus v2.5.5", "fooocus"  # Fooocus's get_exif
    path = tmp_path / "fooocus.jpg"
    _noise().save(path, "JPEG", exif=exif)
    _expect_fooocus(read_parameters(path))


@pytest.mark.parametrize("sampler_words, scheduler, expected", [
    ("DPM++ 2M SDE Karras", "karras", "DPM++ 2M SDE Karras"),
    ("DPM++ 2M SDE", "normal", "DPM++ 2M SDE"),  # A1111 would read this bare name as Exponential: Fooocus means normal
    ("DPM++ 2M SDE", "exponential", None),
])
def test_fooocus_a1111_text_reads_its_scheduler(tmp_path, sampler_words, scheduler, expected):
    text = ("a lighthouse at dusk, (golden hour:1.2)\nNegative prompt: blurry\n"
            f"Steps: 30, Sampler: {sampler_words}, Seed: 8223405834394411904, Size: 1152x896, CFG scale: 4, Sharpness: 2, "
            f'ADM Guidance: "(1.5, 0.8, 0.3)", Model: juggernautXL_v8Rundiffusion, Model hash: aeb7e9e689, '
            f"Performance: Speed, Scheduler: {scheduler}, Version: Fooocus v2.5.5")
    spec = read_parameters(_png(tmp_path, {"parameters": text, "fooocus_scheme": "a1111"}))
    assert (spec.sampler, spec.seed, spec.steps, spec.guidance, spec.width, spec.model) == (
        expected, 8223405834394411904, 30, 4.0, 1152, "juggernautXL_v8Rundiffusion")
    assert spec.extra["source"] == "Fooocus"
    if expected is None:
        assert "'exponential'" in spec.extra["unmapped"] and spec.extra["Sampler"] == "DPM++ 2M SDE"


# -- ComfyUI -------------------------------------------------------------------------------------
def _custom_graph(scheduler="karras", seed=89848141647836):
    return {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "SDXL\\juggernautXL_v9.safetensors"}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 1024, "height": 768, "batch_size": 1}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a red fox", "clip": ["4", 1]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["4", 1]}},
        "10": {"class_type": "RandomNoise", "inputs": {"noise_seed": seed}},
        "11": {"class_type": "CFGGuider", "inputs": {"cfg": 5.5, "model": ["4", 0], "positive": ["6", 0], "negative": ["7", 0]}},
        "12": {"class_type": "KSamplerSelect", "inputs": {"sampler_name": "dpmpp_2m"}},
        "13": {"class_type": "BasicScheduler", "inputs": {"scheduler": scheduler, "steps": 28, "denoise": 1.0, "model": ["4", 0]}},
        "14": {"class_type": "SamplerCustomAdvanced", "inputs": {"noise": ["10", 0], "guider": ["11", 0], "sampler": ["12", 0],
                                                                 "sigmas": ["13", 0], "latent_image": ["5", 0]}},
        "15": {"class_type": "VAEDecode", "inputs": {"samples": ["14", 0], "vae": ["4", 2]}},
    }


@pytest.mark.parametrize("scheduler, expected", [
    ("karras", "DPM++ 2M Karras"), ("normal", "DPM++ 2M"), ("simple", "DPM++ 2M"), ("exponential", None), ("sgm_uniform", None),
])
def test_comfyui_sampler_custom_advanced(tmp_path, scheduler, expected):
    spec = read_parameters(_png(tmp_path, {"prompt": json.dumps(_custom_graph(scheduler)), "workflow": "{}"}))
    assert (spec.prompt, spec.negative_prompt, spec.seed, spec.steps, spec.guidance) == ("a red fox", "blurry", 89848141647836, 28, 5.5)
    assert (spec.sampler, spec.width, spec.height, spec.model) == (expected, 1024, 768, "juggernautXL_v9")
    if expected is None:
        assert f"'{scheduler}'" in spec.extra["unmapped"] and spec.extra["Sampler"] == "DPM++ 2M"
    else:
        assert "unmapped" not in spec.extra


def _ksampler_graph():
    """txt2img KSampler (node 3), then a hires pass: LatentUpscaleBy and a second KSampler (node 2, a lower id)."""
    return {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "v1-5-pruned-emaonly.safetensors"}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 512, "height": 512, "batch_size": 1}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a fox", "clip": ["4", 1]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["4", 1]}},
        "3": {"class_type": "KSampler", "inputs": {"seed": 18446744073709551615, "steps": 20, "cfg": 6.5, "sampler_name": "euler_ancestral",
                                                   "scheduler": "normal", "denoise": 1.0, "model": ["4", 0],
                                                   "positive": ["6", 0], "negative": ["7", 0], "latent_image": ["5", 0]}},
        "20": {"class_type": "LatentUpscaleBy", "inputs": {"upscale_method": "nearest-exact", "scale_by": 1.5, "samples": ["3", 0]}},
        "2": {"class_type": "KSampler", "inputs": {"seed": 5, "steps": 12, "cfg": 6.5, "sampler_name": "euler", "scheduler": "normal",
                                                   "denoise": 0.5, "model": ["4", 0], "positive": ["6", 0], "negative": ["7", 0],
                                                   "latent_image": ["20", 0]}},
    }


def test_comfyui_ksampler_with_a_hires_pass(tmp_path):
    spec = read_parameters(_png(tmp_path, {"prompt": json.dumps(_ksampler_graph())}))
    assert (spec.seed, spec.steps, spec.guidance, spec.sampler) == (2**64 - 1, 20, 6.5, "Euler a")
    assert (spec.prompt, spec.width, spec.height, spec.model) == ("a fox", 512, 512, "v1-5-pruned-emaonly")
    assert "second sampler, KSampler (node 2)" in spec.extra["unmapped"] and "LatentUpscaleBy" in spec.extra["unmapped"]


def test_comfyui_prompts_through_conditioning_nodes(tmp_path):
    graph = _ksampler_graph()
    del graph["2"], graph["20"]
    graph["8"] = {"class_type": "CLIPTextEncode", "inputs": {"text": "a forest", "clip": ["4", 1]}}
    graph["9"] = {"class_type": "ConditioningConcat", "inputs": {"conditioning_to": ["6", 0], "conditioning_from": ["8", 0]}}
    graph["3"]["inputs"]["positive"] = ["9", 0]
    spec = read_parameters(_png(tmp_path, {"prompt": json.dumps(graph)}))
    assert spec.prompt == "a fox BREAK a forest" and "unmapped" not in spec.extra
    graph["9"]["class_type"], graph["9"]["inputs"] = "ConditioningCombine", {"conditioning_1": ["6", 0], "conditioning_2": ["8", 0]}
    graph["10"] = {"class_type": "ControlNetApplyAdvanced", "inputs": {"positive": ["9", 0], "negative": ["7", 0], "strength": 1.0}}
    graph["3"]["inputs"].update(positive=["10", 0], negative=["10", 1])
    spec = read_parameters(_png(tmp_path, {"prompt": json.dumps(graph)}))
    assert (spec.prompt, spec.negative_prompt) == ("a fox AND a forest", "blurry")
    assert "ConditioningCombine" in spec.extra["unmapped"] and "ControlNetApplyAdvanced" in spec.extra["unmapped"]
    graph["3"]["inputs"]["positive"] = ["99", 0]  # a prompt that cannot be followed is reported, not silently empty
    assert "dangling" in read_parameters(_png(tmp_path, {"prompt": json.dumps(graph)})).extra["unmapped"]


def test_foreign_specs_write_back_as_a1111_text(tmp_path):
    spec = read_parameters(_png(tmp_path, {"prompt": json.dumps(_custom_graph("exponential"))}))
    text = format_parameters(spec)
    assert "Seed: 89848141647836" in text and "exponential" in text
    spec = read_parameters(_png(tmp_path, {"prompt": json.dumps(_ksampler_graph())}))
    again = read_parameters(save_png(Image.new("RGB", (512, 512)), spec, tmp_path / "out"))
    assert again.seed == 2**64 - 1 and again.sampler == "Euler a"  # a 64-bit seed read back exactly from A1111 text


# -- corrupt inputs: one line, no traceback ------------------------------------------------------
def _corrupt(tmp_path):
    graph = _custom_graph()
    graph["10"]["inputs"]["noise_seed"] = "abc"
    truncated = _stealth(_noise((16, 16)), A1111, "alpha", length=8 * 4000)  # header promises more than 256 pixels hold
    truncated.save(tmp_path / "truncated.png")
    _stealth(_noise(), "", "alpha", compressed=True, payload=b"\x1f\x8bnot gzip").save(tmp_path / "badgzip.png")
    return [
        (_png(tmp_path, {"prompt": json.dumps(graph)}, name="seed.png"), "seed of node 14 'abc' is not a whole number"),
        (_png(tmp_path, {"prompt": "{not json"}, name="comfy.png"), "ComfyUI prompt: not valid JSON"),
        (_png(tmp_path, {"invokeai_metadata": '{"seed": 1,'}, name="invoke.png"), "invokeai_metadata: not valid JSON"),
        (_png(tmp_path, {**NAI_CHUNKS, "Comment": "[1, 2]"}, name="nai.png"), "expected a JSON object"),
        (_png(tmp_path, {"parameters": json.dumps({**FOOOCUS, "resolution": "huge"})}, name="fooocus.png"), "resolution 'huge'"),
        (_png(tmp_path, {"prompt": json.dumps({**_custom_graph(), "10": {"class_type": "RandomNoise", "inputs": {"noise_seed": 2**64}}})},
              name="big.png"), "seed"),
        (_png(tmp_path, {"Dream": '"unclosed -s 5'}, name="dream.png"), "not a command line"),
        (tmp_path / "truncated.png", "stealth text: the header announces 32000 bits"),
        (tmp_path / "badgzip.png", "compressed payload is corrupt"),
    ]


def test_corrupt_metadata_is_one_metadata_error_line(tmp_path):
    for path, message in _corrupt(tmp_path):
        with pytest.raises(MetadataError) as info:
            read_parameters(path)
        assert message in str(info.value) and "\n" not in str(info.value), str(info.value)
        assert str(info.value).startswith(f"{path.name}: ")


def test_sdlab_info_on_a_corrupt_graph_exits_2_with_one_line(tmp_path, capsys):
    path = _corrupt(tmp_path)[0][0]
    assert main(["info", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "is not a whole number" in err
    assert main(["info", str(_png(tmp_path, {"prompt": json.dumps(_custom_graph())}))]) == 0
    assert "Seed: 89848141647836" in capsys.readouterr().out
