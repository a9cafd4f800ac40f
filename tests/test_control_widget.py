"""The generation panel's ControlNet section, driven as a user would."""
import numpy as np
import pytest

from sdlab.control.preprocess import preprocess
from sdlab.mini import world


@pytest.fixture(scope="module")
def panel_and_net(family_dir):
    from test_control_families import tiny_controlnet

    from sdlab.models import load_pipeline
    from sdlab.widgets.generation import GenerationPanel

    pipe = load_pipeline(str(family_dir("sd1")), device="cpu")
    net = tiny_controlnet(pipe, seed=2)
    panel = GenerationPanel(pipe, controlnets={"tiny": net})
    panel.steps.value, panel.batch.value, panel.sampler.value = 2, 1, "Euler"
    return panel, net


def test_the_section_is_off_until_ticked_and_refuses_a_missing_image(panel_and_net):
    panel, _ = panel_and_net
    assert panel.spec().control == ()
    row = panel.control.rows[0]
    row.enabled.value = True
    panel.generate(background=False)
    assert "ControlNet 0: upload a control image" in panel.last_error
    row.enabled.value = False


def test_a_controlled_generation_from_the_panel(panel_and_net):
    panel, net = panel_and_net
    scene = world.render(world.sample_scene(np.random.default_rng(3), size="large"))
    row = panel.control.rows[0]
    row.enabled.value, row.image, row.model.value = True, scene, "tiny"
    row.control_type.value = "mask"
    assert row.module.options == ("mask",)
    row.scale.value, row.window.value = 1.5, (0.0, 0.5)
    spec = panel.spec()
    unit = spec.control[0]
    assert unit.model is net and (unit.control_type, unit.scale, unit.start, unit.end) == ("mask", 1.5, 0.0, 0.5)
    panel.control.preview(row)
    assert row.preview.value  # the map, drawn as the generation will
    panel.generate(background=False)
    assert panel.last_error is None
    result = panel.results[-1]
    assert np.array_equal(np.asarray(result.control_maps[0]), np.asarray(preprocess(scene, "mask")))
    assert len(panel.control.maps.children) == 1
    assert 'ControlNet 0: "Module: mask' in panel.gallery.children[0].children[1].value.replace("&quot;", '"')
    second = panel.control.add_unit()
    assert len(panel.control.rows) == 2 and not second.enabled.value
    row.enabled.value = False


def test_the_control_mode_goes_into_the_spec(panel_and_net):
    panel, net = panel_and_net
    row = panel.control.rows[0]
    row.enabled.value, row.image, row.model.value = True, world.render(world.sample_scene(np.random.default_rng(5))), "tiny"
    assert panel.control.mode.options == ("Balanced", "My prompt is more important", "ControlNet is more important")
    for mode, guess, prompt_first in (("Balanced", False, False), ("My prompt is more important", False, True),
                                      ("ControlNet is more important", True, False)):
        panel.control.mode.value = mode
        spec = panel.spec()
        assert (spec.guess_mode, spec.control[0].prompt_more_important) == (guess, prompt_first)
    panel.control.mode.value = "Balanced"
    row.enabled.value = False
