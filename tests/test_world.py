"""The shapes-world generator: determinism, captions, skews, metadata."""
import numpy as np
import pytest

from sdlab.mini import world


def test_dataset_is_deterministic_and_varied():
    a_images, a_meta = world.make_dataset(50, seed=3)
    b_images, b_meta = world.make_dataset(50, seed=3)
    assert np.array_equal(a_images, b_images) and a_meta.equals(b_meta)
    c_images, _ = world.make_dataset(50, seed=4)
    assert not np.array_equal(a_images, c_images)
    assert a_images.shape == (50, 64, 64, 3) and a_images.dtype == np.uint8


def test_metadata_is_laion_like_and_complete():
    _, meta = world.make_dataset(200, seed=0)
    for column in ("URL", "TEXT", "WIDTH", "HEIGHT", "source", "shape", "colour", "size", "position", "background"):
        assert column in meta
    assert meta["URL"].str.startswith("https://cdn.").all()
    assert (meta["WIDTH"] == 64).all()
    assert not ((meta["colour"] == meta["background"])).any()  # never invisible


def test_same_caption_different_seeds_differ_in_jitter():
    rng = np.random.default_rng(0)
    scenes = [world.sample_scene(rng, shape="circle", colour="red", size="large", position="center", background="white") for _ in range(4)]
    images = [np.asarray(world.render(s)) for s in scenes]
    assert len({im.tobytes() for im in images}) == 4


@pytest.mark.parametrize(
    "attrs, text",
    [
        (dict(shape="circle", colour="red", size="large", position="top left", background="white"),
         "a large red circle at the top left on a white background"),
        (dict(shape="cross", colour="orange"), "an orange cross"),
        (dict(shape="square", position="left"), "a square on the left"),
        (dict(shape="triangle", position="center", background="gray"), "a triangle in the center on a gray background"),
    ],
)
def test_canonical_captions_follow_the_template(attrs, text):
    assert world.describe(**attrs) == text


def test_captions_leave_attributes_out_and_use_synonyms():
    _, meta = world.make_dataset(3000, seed=1)
    text = meta["TEXT"]
    assert (~text.str.contains(" background")).mean() == pytest.approx(world.DROP["background"], abs=0.04)
    assert text.str.contains(" big ").any() and text.str.contains(" grey ").any() and text.str.contains(" in the middle").any()
    words = set(" ".join(text).split())
    assert words <= set(world.vocabulary())


def test_triangle_colour_skew_is_in_the_data():
    _, meta = world.make_dataset(6000, seed=2)
    triangles = meta[meta["shape"] == "triangle"]
    assert (triangles["colour"] == "yellow").mean() == pytest.approx(world.TRIANGLE_YELLOW_SHARE, abs=0.05)
    head = triangles["TEXT"].str.split(" on a ").str[0]
    colourless = triangles[~head.str.contains("|".join(world.COLOURS))]
    assert (colourless["colour"] == "yellow").mean() > 0.75  # "a triangle" usually means a yellow one


def test_source_skew():
    _, meta = world.make_dataset(3000, seed=5)
    shares = meta["source"].value_counts(normalize=True)
    assert shares.index[0] == "shapeshop.example"
    assert shares.iloc[0] == pytest.approx(0.40, abs=0.03)


def test_evaluation_prompts_are_fully_specified_and_fixed():
    a, b = world.evaluation_prompts(320), world.evaluation_prompts(320)
    assert a.equals(b) and len(a) == 320
    assert a[["shape", "colour", "size", "position", "background"]].notna().all().all()
    assert (a["colour"] != a["background"]).all()
    assert set(a["shape"]) == set(world.SHAPES)


def test_parse_caption_reads_back_every_named_attribute():
    from sdlab.mini.world import make_dataset, parse_caption

    _, meta = make_dataset(400, seed=3)
    named = 0
    for row in meta.itertuples():
        attrs = parse_caption(row.TEXT)
        assert attrs["shape"] == row.shape  # the shape is always named
        for key, value in attrs.items():
            assert getattr(row, key) == value, (row.TEXT, key)
        named += len(attrs)
    assert 1600 < named < 5 * 400  # some attributes are left out, as designed


def test_parse_caption_folds_synonyms_and_is_describes_inverse():
    from sdlab.mini.world import describe, evaluation_prompts, parse_caption

    assert parse_caption("a tiny purple cross in the bottom left corner") == {"size": "small", "colour": "purple", "shape": "cross", "position": "bottom left"}
    assert parse_caption("a big square in the middle on a grey background") == {"size": "large", "shape": "square", "position": "center", "background": "gray"}
    for row in evaluation_prompts(50).itertuples():
        attrs = {k: getattr(row, k) for k in ("shape", "colour", "size", "position", "background")}
        assert parse_caption(describe(**attrs)) == attrs


def test_data_similarity_rises_as_the_prompt_fixes_more():
    from sdlab.mini.evaluate import data_similarity

    full = data_similarity("a large red circle at the top left on a white background")
    loose = data_similarity("a red circle")
    assert 0 < loose < full < 1  # more left unsaid, more varied scenes (0.48 against 0.88)
    assert data_similarity("a red circle") == loose  # a fixed draw
    assert data_similarity("a red circle", seed=1) != loose


def test_bad_scene_requests_name_the_parameter_and_what_is_valid():
    from sdlab.errors import ValidationError

    rng = np.random.default_rng(0)
    with pytest.raises(ValidationError, match="attribute: 'hue' is not valid; valid: one of shape, colour"):
        world.sample_scene(rng, hue="red")
    with pytest.raises(ValidationError, match="shape: 'hexagon' is not valid; valid: one of circle, square"):
        world.sample_scene(rng, shape="hexagon")
    with pytest.raises(ValidationError, match="colour: 'white' is not valid; valid: any colour but white on a white background"):
        world.sample_scene(rng, colour="white", background="white")
    with pytest.raises(ValidationError, match="n: 0 is not valid; valid: a whole number >= 1"):
        world.make_dataset(0)
