"""Watermark codec, calibration and detection: real bits on real photos."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from sdlab.errors import ValidationError
from sdlab.images import sample_photos
from sdlab.watermark import PRESETS, Payload, detect, embed, parse_payload
from sdlab.watermark import calibration as cal_lib
from sdlab.watermark import codec


@pytest.fixture(scope="module")
def photos() -> dict[str, np.ndarray]:
    return sample_photos(512, ("astronaut", "coffee", "rocket", "chelsea"))


@pytest.mark.parametrize("preset", ["sd1", "sd2", "sdxl"])
def test_round_trip_per_preset(photos, preset):
    for name, photo in photos.items():
        marked = embed(photo, preset=preset)
        assert marked.shape == photo.shape and marked.dtype == np.uint8
        assert 0 < np.abs(marked.astype(int) - photo).mean() < 3  # invisible but present
        found = detect(marked, preset=preset)
        assert found.detected, (name, found)
        assert found.bit_accuracy >= 0.85
        assert found.p_value < 1e-4


def test_clean_photos_not_detected(photos):
    for name, photo in photos.items():
        for d in detect(photo):
            assert not d.detected, (name, d)
            assert d.p_value > 0.01


def test_no_preset_reports_each_and_sdxl_rule(photos):
    results = detect(embed(photos["rocket"], preset="sdxl"))
    assert [d.preset for d in results] == ["sd1", "sd2", "sdxl"]
    sdxl = results[2]
    assert sdxl.bits_total == 48 and sdxl.bits_matched >= 36 and sdxl.decision == "very likely"
    assert detect(photos["rocket"], preset="sdxl").decision in ("none", "partial")
    assert [results[0].decision, results[1].decision] == ["not detected", "not detected"]


def test_sdxl_published_rule():
    from sdlab.watermark.detection import sdxl_decision

    assert [sdxl_decision(k) for k in (0, 27, 28, 33, 34, 35, 36, 48)] == [
        "none", "none", "partial", "partial", "likely", "likely", "very likely", "very likely"]


def test_channel_order_library_bgr_found_on_rgb(photos):
    """Mark through the library itself in BGR; detect must find it when handed RGB."""
    from imwatermark import WatermarkEncoder

    rgb = photos["coffee"]
    encoder = WatermarkEncoder()
    encoder.set_watermark("bytes", b"StableDiffusionV1")
    marked_bgr = encoder.encode(np.ascontiguousarray(rgb[..., ::-1]), "dwtDct")
    assert detect(np.ascontiguousarray(marked_bgr[..., ::-1]), preset="sd1").detected
    assert not detect(marked_bgr, preset="sd1").detected  # BGR handed in as if RGB: the mark is in the wrong chroma


@pytest.mark.parametrize("method", ["dwtDct", "dwtDctSvd"])
def test_fast_decoder_matches_library(photos, method):
    payload = PRESETS["sd1"].payload
    for photo in photos.values():
        marked = codec.embed_array(photo, payload, method)
        for image in (marked, photo):
            for n in (136, 48):
                ours, theirs = codec.decode_bits(image, method, n), codec.library_decode(image, method, n)
                # dwtDctSvd's float rounding may flip one tied block vote in 4096 on a clean image
                assert (ours != theirs).sum() <= (0 if method == "dwtDct" or image is marked else 1)


def test_custom_payloads_and_methods(photos):
    photo = photos["astronaut"]
    for payload, method in (("hell", "dwtDct"), (b"\x01\x02\x03\x04\x05\x06", "dwtDctSvd"), ("0b1011001110", "dwtDct")):
        found = detect(embed(photo, payload=payload, method=method), payload=payload, method=method)
        assert found.preset == "custom" and found.bits_matched == found.bits_total and found.detected
    assert any("calibrated now" in note for note in found.notes)  # 10 bits: no stored calibration, made on the fly
    assert not cal_lib.bundled().has("dwtDct", 10)  # made beside the shared calibration, not stored into it
    assert cal_lib.bundled().n_images("dwtDct", 10) == cal_lib.QUICK_IMAGES


def test_parse_payload_forms():
    assert parse_payload("0b101").bits == (1, 0, 1)
    assert parse_payload("0x8001").bits == (1,) + (0,) * 14 + (1,)
    assert parse_payload("A").bits == (0, 1, 0, 0, 0, 0, 0, 1)
    assert parse_payload([1, 0]).bits == (1, 0)
    assert PRESETS["sdxl"].payload.n_bits == 48 and PRESETS["sd1"].payload.n_bits == 136
    with pytest.raises(ValidationError, match="payload: '' is not valid"):
        parse_payload("")
    with pytest.raises(ValidationError, match="payload: 'hi' is not valid; valid: exactly 32 bits for rivaGan"):
        embed(np.zeros((256, 256, 3), np.uint8), payload="hi", method="rivaGan")
    with pytest.raises(ValidationError, match="method: 'lsb' is not valid; valid: one of dwtDct, dwtDctSvd, rivaGan"):
        embed(np.zeros((256, 256, 3), np.uint8), payload="hi", method="lsb")
    with pytest.raises(ValidationError, match="preset: 'sd3' is not valid; valid: one of sd1, sd2, sdxl"):
        detect(np.zeros((256, 256, 3), np.uint8), preset="sd3")
    with pytest.raises(ValidationError, match="method: 'dwtDctSvd' is not valid; valid: None unless a payload is given"):
        detect(np.zeros((256, 256, 3), np.uint8), method="dwtDctSvd")


def test_size_guard_names_size_and_offers_upscale():
    small = np.full((200, 150, 3), 90, np.uint8)
    with pytest.raises(ValidationError, match=r"150x200 .*256x256.*upscale=True"):
        embed(small, preset="sd1")
    with pytest.raises(ValidationError, match="upscale=True"):
        detect(small)
    marked = embed(small, preset="sd1", upscale=True)
    assert marked.shape[0] * marked.shape[1] >= 256 * 256
    found = detect(marked, preset="sd1")
    assert found.detected
    assert "upscaled" in detect(small, preset="sd1", upscale=True).notes[0]
    with pytest.raises(ValidationError, match=r"one 8x8 block per payload bit \(\d+ bits, this one has 0 blocks\)"):  # enough area, too thin for the block grid
        detect(np.zeros((65536, 2, 3), np.uint8))


def test_conversions_are_noted(photos):
    photo = photos["astronaut"][:256, :256]
    rgba = Image.fromarray(photo).convert("RGBA")
    gray = Image.fromarray(photo).convert("L")
    palette = Image.fromarray(photo).convert("P")
    sixteen = Image.fromarray((gray_arr := np.asarray(gray)).astype(np.uint16) * 257)
    for image, word in ((rgba, "alpha"), (gray, "grayscale"), (palette, "palette"), (sixteen, "16-bit")):
        found = detect(image, preset="sd1")
        assert any(word in note for note in found.notes), (word, found.notes)
    assert gray_arr.dtype == np.uint8


def test_marked_survives_png_round_trip(tmp_path, photos):
    path = tmp_path / "m.png"
    Image.fromarray(embed(photos["chelsea"], preset="sd2")).save(path)
    assert detect(path, preset="sd2").detected


def test_null_pmf_follows_the_bias():
    """A calibration where every clean image decodes all zeros puts the null's mass on the payload's zero count."""
    payload = Payload.from_bits("0b1100000000")
    zeros = cal_lib.Calibration({("dwtDct", 10): np.zeros(50, int)})
    pmf = zeros.null_pmf(payload, "dwtDct")
    assert pmf[8] == pytest.approx(1.0)
    assert zeros.p_value(payload, "dwtDct", 8) == pytest.approx(1.0)
    assert zeros.p_value(payload, "dwtDct", 9) == pytest.approx(0.0, abs=1e-12)
    fair = cal_lib.Calibration({("dwtDct", 10): np.full(50, 5)})  # rate 0.5: Binomial(10, 0.5)
    assert fair.p_value(payload, "dwtDct", 10) == pytest.approx(2**-10)
    assert fair.p_value(payload, "dwtDct", 8) == pytest.approx(56 / 1024)  # P(X >= 8) = (1 + 10 + 45) / 1024
    assert fair.threshold(payload, "dwtDct", 0.06) == 8  # 5.5 % <= 6 % < P(X >= 7) = 17 %
    assert fair.threshold(payload, "dwtDct", 0.01) == 10  # P(X >= 9) = 1.07 % > 1 %


def test_bundled_calibration_is_biased_and_fpr_measured():
    cal = cal_lib.bundled()
    rates = cal.ones[("dwtDct", 136)] / 136
    assert len(rates) >= 300
    assert np.median(rates) < 0.25  # most clean images decode to (nearly) all zeros: not a fair coin
    for method in ("dwtDct", "dwtDctSvd"):
        for n in (136, 48, 32):
            counts, blocks = cal.votes[(method, n)]
            assert counts.shape == (len(rates), n) and (counts <= codec.block_totals(blocks, n)).all()
    records = cal.evaluation["fpr"]
    assert {r["payload"] for r in records} == {"sd1", "sd2", "sdxl"}
    for r in records:
        assert r["test"] == "vote contrast"
        assert r["measured_fpr"] <= max(2 * r["target_fpr"], 0.01)
        assert r["bits_measured_fpr"] <= max(2 * r["target_fpr"], 0.02)


def test_calibration_file_round_trip(tmp_path):
    cal = cal_lib.bundled()
    cal.save(tmp_path / "c.json")
    again = cal_lib.Calibration.load(tmp_path / "c.json")
    for key, (counts, blocks) in cal.votes.items():
        assert np.array_equal(again.votes[key][0], counts) and np.array_equal(again.votes[key][1], blocks)
    assert np.array_equal(again.ones[("rivaGan", 32)], cal.ones[("rivaGan", 32)])
    (tmp_path / "bad.json").write_text('{"version": 9, "ones": {}}')
    from sdlab.errors import DataError
    with pytest.raises(DataError, match="calibration"):
        cal_lib.Calibration.load(tmp_path / "bad.json")


def test_fast_dwtdct_embed_is_the_library_encoder(photos):
    """sdlab embeds dwtDct without the library's Python loop; the output must be the library's, byte for byte."""
    from imwatermark import WatermarkEncoder

    images = [photos["coffee"], photos["rocket"][:300, :333], np.zeros((257, 260, 3), np.uint8),
              np.full((260, 300, 3), 255, np.uint8)]
    for preset in ("sd1", "sdxl"):
        payload = PRESETS[preset].payload
        for rgb in images:
            encoder = WatermarkEncoder()
            encoder.set_watermark("bits", list(payload.bits))
            theirs = encoder.encode(np.ascontiguousarray(rgb[..., ::-1]), "dwtDct")[..., ::-1]
            assert np.array_equal(codec.embed_array(rgb, payload, "dwtDct"), theirs), (preset, rgb.shape)


def test_vote_contrast_is_a_two_sample_t():
    from scipy.stats import ttest_ind

    rng = np.random.default_rng(0)
    bits = np.array([1, 0, 1, 1, 0, 0, 1, 0, 1, 1, 0, 0])
    totals = np.full(12, 40)
    ones = rng.integers(0, 41, 12)
    m = ones / 40
    expected = ttest_ind(m[bits == 1], m[bits == 0]).statistic
    assert cal_lib.contrast(ones, totals, bits) == pytest.approx(expected)
    both = cal_lib.contrast(ones, totals, np.stack([bits, 1 - bits]))
    assert both == pytest.approx([expected, -expected])
    assert cal_lib.contrast(np.full(12, 7), totals, bits) == 0  # a flat clean image: no evidence either way
    assert cal_lib.contrast(40 * bits, totals, bits) == cal_lib.MAX_CONTRAST  # a flat image marked: perfect separation


def test_smooth_mark_that_bits_matched_misses_is_found():
    """dwtDct writes a 0 by lowering a block's largest coefficient; in a smooth block another one takes over and the 0
    is read as the image's own vote. Where those lean to 1 the marked image decodes like a clean one (bits matched
    at chance), but its 1-bits still vote 1 everywhere, which the vote contrast sees."""
    chelsea = sample_photos(None, ("chelsea",))["chelsea"]
    smooth = np.asarray(Image.fromarray(np.ascontiguousarray(chelsea[66:210, 306:450, :][:, ::-1])).resize((512, 512), Image.LANCZOS))
    assert codec.block_votes(smooth, "dwtDct").mean() > 0.6  # this image's own votes lean to 1
    for preset in ("sd1", "sdxl"):
        found = detect(embed(smooth, preset=preset), preset=preset)
        assert found.bit_accuracy < 0.6 and found.bits_p_value > 0.01  # the library's bits: nothing to see
        assert found.test == "vote contrast" and found.detected and found.p_value < 1e-10
        clean = detect(smooth, preset=preset)
        assert not clean.detected and clean.p_value > 0.01


def test_clean_images_take_their_scenes_from_the_caller():
    from sdlab.errors import ValidationError
    from sdlab.mini import world
    from sdlab.watermark import cleanset

    with_scenes = [name for name, _ in cleanset.clean_images(12, seed=3, size=256, scenes=world)]
    assert sum("-scene-" in name for name in with_scenes) == 2  # one in six
    without = list(cleanset.clean_images(10, seed=3, size=256))
    assert not any("-scene-" in name for name, _ in without) and sum("-texture-" in name for name, _ in without) == 2
    assert all(image.shape == (256, 256, 3) for _, image in without)
    with pytest.raises(ValidationError, match="scenes: None is not valid; valid: a scene source"):
        list(cleanset.clean_images(1, kinds=("scene",)))


def test_held_out_photos_detection_rates():
    """A quick slice of the benchmark's target measurement: marked and clean 512² evaluation photos."""
    from sdlab.watermark import cleanset

    assert not set(cleanset.CALIBRATION_PHOTOS) & set(cleanset.EVALUATION_PHOTOS)
    assert "clean_images" in cal_lib.bundled().source  # calibrated on the calibration group only
    images = [img for _, img in cleanset.evaluation_photos(16, seed=99)]
    assert all(img.shape == (512, 512, 3) for img in images)
    for preset in ("sd1", "sdxl"):
        assert all(detect(embed(img, preset=preset), preset=preset).detected for img in images)
        assert not any(detect(img, preset=preset).detected for img in images)


def _diffusers_sdxl_mark(rgb: np.ndarray, order: str) -> np.ndarray:
    """diffusers' StableDiffusionXLWatermarker on a decoded image, then the pipeline's uint8 output: the float32
    array (255 * (x / 2 + 0.5)) handed to imwatermark as it is ("rgb": diffusers before PR #7013) or flipped to
    BGR and back ("bgr": since), clamped to [-1, 1] and rounded to uint8 by the image processor."""
    from imwatermark import WatermarkEncoder

    encoder = WatermarkEncoder()
    encoder.set_watermark("bits", list(PRESETS["sdxl"].payload.bits))
    image = rgb.astype(np.float32)
    if order == "bgr":
        marked = encoder.encode(np.ascontiguousarray(image[..., ::-1]), "dwtDct")[..., ::-1]
    else:
        marked = encoder.encode(image, "dwtDct")
    return np.round(np.clip(marked / 255, 0, 1) * 255).astype(np.uint8)


def _library_mark(rgb: np.ndarray, order: str) -> np.ndarray:
    """imwatermark on a uint8 array, handed BGR as documented or, by the same slip, RGB."""
    from imwatermark import WatermarkEncoder

    encoder = WatermarkEncoder()
    encoder.set_watermark("bits", list(PRESETS["sdxl"].payload.bits))
    handed = np.ascontiguousarray(rgb[..., ::-1] if order == "bgr" else rgb)
    marked = encoder.encode(handed, "dwtDct")
    return np.ascontiguousarray(marked[..., ::-1] if order == "bgr" else marked)


def test_sdxl_marks_in_either_channel_order_are_detected_and_named():
    """The scikit-image photos at the calibrated FPR: RGB-order and BGR-order SDXL marks (diffusers' float32
    watermarker, old and new, and the library on uint8) are detected and their order named; clean photos are not."""
    from sdlab.images import SAMPLE_PHOTOS
    from sdlab.watermark.detection import DEFAULT_FPR

    for name, photo in sample_photos(512, SAMPLE_PHOTOS).items():
        for order in ("rgb", "bgr"):
            for mark in (_diffusers_sdxl_mark, _library_mark):
                found = detect(mark(photo, order), preset="sdxl")
                assert found.detected and found.channel_order == order, (name, order, mark.__name__, found)
                assert found.fpr == DEFAULT_FPR and found.readings == 4
        clean = detect(photo, preset="sdxl")
        assert not clean.detected and clean.p_value > 0.01, (name, clean)
    assert detect(embed(photo, preset="sdxl"), preset="sdxl").channel_order == "bgr"  # sdlab marks as the library expects


def test_trying_four_readings_keeps_the_false_positive_rate():
    """Each reading's FPR on clean images (a draw not used to calibrate), measured against the one null, is at its
    target; with the p-value multiplied by 4 (Bonferroni), so is detect's FPR over all four."""
    from sdlab.mini import world
    from sdlab.watermark import cleanset

    images = [img for _, img in cleanset.clean_images(160, seed=1, scenes=world)]
    cal, payload = cal_lib.bundled(), PRESETS["sdxl"].payload
    decoders = [codec.Decoder(img) for img in images]
    per_reading = np.array([[cal.test(d, payload, "dwtDct", r).p_value for r in PRESETS["sdxl"].readings] for d in decoders])
    assert ((per_reading <= 0.01).mean(axis=0) <= 0.02).all(), (per_reading <= 0.01).mean(axis=0)
    combined = np.minimum(1, 4 * per_reading.min(axis=1))
    assert (combined <= 0.01).mean() <= 0.01
    assert np.allclose([detect(img, preset="sdxl").p_value for img in images[:8]], combined[:8])  # what detect reports
