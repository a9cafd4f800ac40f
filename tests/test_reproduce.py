"""reproduce: inputs checked before any model is loaded, then the regenerated pixels compared."""
import numpy as np
import pytest
from PIL import Image

from sdlab.errors import ValidationError
from sdlab.generate import generate
from sdlab.models import load_pipeline
from sdlab.reproduce import reproduce
from sdlab.spec import GenerationSpec


@pytest.fixture(scope="module")
def pipe(tiny_pipeline_dir):
    return load_pipeline(str(tiny_pipeline_dir), device="cpu")


def test_img2img_png_needs_its_own_init_image_and_then_reproduces(pipe, tmp_path):
    init = Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    png = generate(pipe, GenerationSpec("a red circle", seed=2, steps=4, init_image=init, strength=0.5)).save(tmp_path)[0]
    loads = []

    def load(spec):
        loads.append(spec)
        return pipe

    with pytest.raises(ValidationError, match="init: this PNG was made from an image with hash"):
        reproduce(load, png)
    other = Image.fromarray(255 - np.asarray(init))
    with pytest.raises(ValidationError, match="init: .* but the PNG was made from"):
        reproduce(load, png, init=other)
    assert loads == []  # refused before any model was loaded
    done = reproduce(load, png, init=init)
    assert done.max_abs_difference <= 1 and len(loads) == 1


def test_an_upscaled_png_is_refused_before_generating(pipe, tmp_path):
    png = generate(pipe, GenerationSpec("a blue square", seed=1, steps=2)).save(tmp_path)[0]
    image = Image.open(png)
    bigger = tmp_path / "bigger.png"
    image.resize((128, 128)).save(bigger, pnginfo=_text(image))
    with pytest.raises(ValidationError, match="png: the image is 128x128 but its metadata asks for 64x64"):
        reproduce(lambda spec: pytest.fail("the model must not be loaded"), bigger)


def _text(image):
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", image.text["parameters"])
    return info
