"""Condition maps from the shapes world, where the truth is known: the rendered shape's region and outline."""
import numpy as np
import pytest
from PIL import Image
from scipy.ndimage import binary_erosion, distance_transform_edt

from sdlab.control.preprocess import MODULES, canny, check_module, mask, outline, preprocess, subject_region
from sdlab.errors import ValidationError
from sdlab.mini import world

SCENES = [world.sample_scene(np.random.default_rng(seed)) for seed in range(24)]


def _truth(scene):
    return world.render_mask(scene.shape, scene.cx, scene.cy, scene.radius, scene.rotation) > 0.5


def _white(image: Image.Image) -> np.ndarray:
    array = np.asarray(image)
    assert image.mode == "RGB" and array.shape[2] == 3
    assert set(np.unique(array)) <= {0, 255} and (array[..., 0] == array[..., 2]).all()  # white on black, grey RGB
    return array[..., 0] == 255


def test_mask_is_the_rendered_shape():
    ious = []
    for scene in SCENES:
        found, truth = _white(mask(world.render(scene))), _truth(scene)
        ious.append((found & truth).sum() / (found | truth).sum())
    assert min(ious) >= 0.95, ious


def test_canny_edges_lie_on_the_outline_and_cover_it():
    for scene in SCENES:
        truth = _truth(scene)
        boundary = truth & ~binary_erosion(truth, border_value=1)  # a shape cut by the frame has no edge there
        edges = _white(canny(world.render(scene)))
        near_boundary = distance_transform_edt(~boundary)  # pixels from the true outline
        assert edges.sum() > 0
        assert near_boundary[edges].max() <= 1.5, scene  # no edge off the outline
        near_edges = distance_transform_edt(~edges)
        assert (near_edges[boundary] <= 1.5).mean() >= 0.9, scene  # and the outline is found


def test_canny_agrees_with_opencv_as_a1111_calls_it():
    cv2 = pytest.importorskip("cv2")
    for scene in SCENES[:8]:
        image = world.render(scene)
        ours = _white(canny(image))
        theirs = cv2.Canny(np.asarray(image), 100, 200) > 0
        # the same edges up to a pixel (OpenCV's L1 gradient and its own non-maximum suppression differ slightly)
        assert (distance_transform_edt(~theirs)[ours] <= 1.5).mean() >= 0.9
        assert (distance_transform_edt(~ours)[theirs] <= 1.5).mean() >= 0.9


def test_outline_is_the_exact_boundary_of_the_region():
    for scene in SCENES[:8]:
        truth = _truth(scene)
        found = _white(outline(world.render(scene)))
        boundary = truth & ~binary_erosion(truth, structure=np.ones((3, 3), bool), border_value=0)
        assert (found == boundary).mean() >= 0.99


def test_passthrough_and_preprocessed_keep_the_pixels():
    depth = np.tile(np.linspace(0, 255, 32).astype(np.uint8), (16, 1))
    out = np.asarray(preprocess(Image.fromarray(depth), "depth"))
    assert out.shape == (16, 32, 3) and (out == depth[..., None]).all()
    ready = world.render(SCENES[0])
    assert (np.asarray(preprocess(ready, "edges", preprocessed=True)) == np.asarray(ready)).all()


def test_flat_image_has_no_subject_and_thresholds_matter():
    assert not subject_region(np.full((16, 16, 3), 90, np.uint8)).any()
    faint = np.full((32, 32, 3), 100, np.uint8)
    faint[8:24, 8:24] = 130  # a step of 30: a Sobel magnitude of 120, between the thresholds' effect
    assert not _white(canny(faint)).any()
    assert _white(canny(faint, low=50, high=100)).any()


def test_refusals_name_the_parameter():
    assert check_module("edges", None) == MODULES["edges"][0] == "canny"
    with pytest.raises(ValidationError, match=r"^control_type: 'pose' is not valid; valid: one of edges, mask, depth$"):
        preprocess(np.zeros((8, 8, 3), np.uint8), "pose")
    with pytest.raises(ValidationError, match=r"^module: 'canny' is not valid; valid: for mask: one of mask$"):
        preprocess(np.zeros((8, 8, 3), np.uint8), "mask", module="canny")
    with pytest.raises(ValidationError, match=r"^high: 50"):
        canny(np.zeros((8, 8, 3), np.uint8), low=100, high=50)
