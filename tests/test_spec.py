"""GenerationSpec validation names the field and the valid range."""
import pytest

from sdlab.errors import ValidationError
from sdlab.spec import GenerationSpec


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"steps": 0}, "steps: 0 is not valid; valid: a whole number >= 1"),
        ({"guidance": -1.0}, "guidance: -1.0 is not valid; valid: a number >= 0"),
        ({"width": 100}, "width: 100 is not valid; valid: a multiple of 8; nearest: 96 or 104"),
        ({"height": 0}, "height: 0 is not valid; valid: a whole number >= 1"),
        ({"strength": 1.2, "init_image": "x.png"}, "strength: 1.2 is not valid; valid: a number in [0, 1]"),
        ({"batch_size": 0}, "batch_size: 0 is not valid; valid: a whole number >= 1"),
        ({"seed": -5}, "seed: -5 is not valid; valid: -1 (random) or a whole number in [0, 2**64)"),
        ({"sampler": "Euler b"}, "sampler: 'Euler b' is not valid; valid: one of Euler, Euler a"),
        ({"mask": "m.png"}, "mask: a mask without an init_image is not valid"),
        ({"outpaint": (1, 2, 3)}, "outpaint:"),
        ({"outpaint": (0, 0, 0, 0), "init_image": "x.png"}, "not all 0"),
    ],
)
def test_invalid_fields_are_named(changes, message):
    with pytest.raises(ValidationError) as info:
        GenerationSpec("a red circle", **changes)
    assert message in str(info.value)


def test_sampler_names_are_canonicalised_and_defaults_resolved():
    spec = GenerationSpec("x", sampler="dpm++ 2m karras")
    assert spec.sampler == "DPM++ 2M Karras"
    resolved = GenerationSpec("x", seed=3).resolved({"steps": 25, "guidance": 5.0, "sampler": "Euler a", "width": 64, "height": 64})
    assert (resolved.steps, resolved.guidance, resolved.sampler, resolved.width, resolved.seed) == (25, 5.0, "Euler a", 64, 3)
    assert GenerationSpec("x", steps=7).resolved({"steps": 25}).steps == 7


def test_random_seed_is_drawn_once_and_recorded():
    spec = GenerationSpec("x").with_seed()
    assert 0 <= spec.seed < 2**32 and spec.with_seed() is spec


def test_modes_and_replace():
    assert GenerationSpec("x").mode == "txt2img"
    assert GenerationSpec("x", init_image="a.png").mode == "img2img"
    assert GenerationSpec("x", init_image="a.png", mask="m.png").mode == "inpaint"
    assert GenerationSpec("x", init_image="a.png", outpaint=(8, 0, 8, 0)).mode == "outpaint"
    with pytest.raises(ValidationError, match="unknown spec field"):
        GenerationSpec("x").replace(cfg=3)
