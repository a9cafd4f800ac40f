"""rd_curves, the content checks, the plots, the CLI and the panel (small images, untrained VAE)."""
from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")
import numpy as np
import pytest
import torch

from sdlab.compression import get_codec, rd_curves, summarize
from sdlab.compression.content import (ContentCase, detail_ratio, edge_f1, region_psnr, small_faces_image,
                                       text_mask)
from sdlab.errors import ValidationError
from sdlab.images import sample_photos
from sdlab.mini.model import ModelConfig, build_vae
from sdlab.mini.world import make_dataset


@pytest.fixture(scope="module")
def vae():
    torch.manual_seed(0)
    return build_vae(ModelConfig()).eval()


@pytest.fixture(scope="module")
def shapes() -> dict[str, np.ndarray]:
    images = make_dataset(2, seed=3)[0]
    return {"a": images[0], "b": images[1]}


def test_one_row_per_image_codec_budget_and_budgets_hold(vae, shapes):
    frame = rd_curves(shapes, ["vae", "vae-levels", "jpeg", "webp"], [100, 400, 900], vae=vae)
    assert len(frame) == 2 * 4 * 3
    assert set(frame["status"]) <= {"ok", "over budget"}
    ok = frame[frame["status"] == "ok"]
    assert (ok["bytes"] <= ok["budget"]).all() and ok["psnr"].notna().all() and ok["ssim"].between(-1, 1).all()
    assert ok["bpp"].equals(ok["bytes"] * 8 / (64 * 64))
    jpeg_100 = frame[(frame["codec"] == "jpeg") & (frame["budget"] == 100)]
    assert (jpeg_100["status"] == "over budget").all() and jpeg_100["psnr"].isna().all()  # JPEG headers alone are larger
    assert frame["ms_ssim"].isna().all()  # 64 px is below MS-SSIM's 161 px
    table = summarize(frame)
    assert {"codec", "budget", "images", "psnr"} <= set(table.columns)


def test_rd_curves_rejects_bad_input(shapes):
    with pytest.raises(ValidationError, match="budgets"):
        rd_curves(shapes, ["jpeg"], [0])
    with pytest.raises(ValidationError, match="metrics"):
        rd_curves(shapes, ["jpeg"], [500], metrics=("lpips",))


def test_edge_f1_is_one_on_identical_text_and_low_on_blank():
    from skimage import data

    text = np.repeat(data.text()[..., None], 3, axis=2)
    mask = text_mask(text)
    assert 0.02 < mask.mean() < 0.9
    assert edge_f1(text, text, mask) == pytest.approx(1.0)
    blank = np.full_like(text, 128)
    assert edge_f1(text, blank, mask) == 0.0
    assert math.isnan(edge_f1(blank, blank))


def test_region_psnr_and_detail_ratio_by_hand():
    ref = np.zeros((10, 10, 3), np.uint8)
    test = ref.copy()
    test[:5] = 10  # error only in the top half
    mask = np.zeros((10, 10), bool)
    mask[:5] = True
    out = region_psnr(ref, test, mask)
    assert out["inside"] == pytest.approx(10 * math.log10(255**2 / 100)) and out["outside"] == math.inf
    rng = np.random.default_rng(0)
    texture = rng.integers(0, 256, (64, 64, 3)).astype(np.uint8)
    assert detail_ratio(texture, texture) == pytest.approx(1.0)
    smooth = ((texture.astype(int) + np.roll(texture, 1, 0) + np.roll(texture, 1, 1)) // 3).astype(np.uint8)
    assert detail_ratio(texture, smooth) < 0.8


def test_small_faces_are_pasted_where_the_boxes_say():
    image, boxes = small_faces_image(256, n=16)
    assert image.shape == (256, 256, 3) and len(boxes) == 16
    assert all(b[2] - b[0] == 25 and b[3] - b[1] == 25 for b in boxes)
    top, left, bottom, right = boxes[0]
    face = image[top:bottom, left:right]
    assert np.array_equal(face[..., 0], face[..., 1])  # lfw faces are grey on a colour photo
    case = ContentCase("faces", image, np.zeros(image.shape[:2], bool) | True, "psnr_deficit", "")
    assert case.evaluate(image)["psnr_region"] == math.inf


def test_content_checks_and_failure_panel_run_on_classical_codecs():
    from sdlab.compression.content import content_cases, content_checks
    from sdlab.compression.plots import failure_panel

    cases = content_cases(128)
    assert set(cases) == {"text", "page", "faces", "astronaut", "texture"}
    assert cases["astronaut"].boxes  # the LBP cascade finds the astronaut's face
    frame = content_checks({"jpeg": get_codec("jpeg")}, bpp=(0.5,), cases=cases, keep_images=True)
    assert len(frame) == len(cases) and (frame["status"] == "ok").all()
    text = frame[frame["case"] == "text"].iloc[0]
    assert 0 < text["value"] < 1
    fig = failure_panel(frame, cases)
    assert len(fig.axes) == len(cases) * 2


def test_plots_have_labelled_axes(shapes):
    from sdlab.compression.plots import crop_viewer, plot_rd

    frame = rd_curves(shapes, ["jpeg", "webp"], [400, 700], keep_images=True)
    fig = plot_rd(frame)
    assert [ax.get_xlabel() for ax in fig.axes] == ["rate (bits per pixel)"] * 2  # MS-SSIM is NaN here
    assert fig.axes[0].get_ylabel() == "PSNR (dB)"
    one = frame[(frame["image"] == "a") & (frame["budget"] == 700)]
    fig = crop_viewer(shapes["a"], one, zoom_side=16)
    assert len(fig.axes) == 2 * 3


def test_cli_single_image_and_errors(tmp_path, capsys):
    from PIL import Image

    from sdlab.cli import main

    photo = sample_photos(128, ("coffee",))["coffee"]
    src = tmp_path / "coffee.png"
    Image.fromarray(photo).save(src)
    out = tmp_path / "coffee.webp"
    assert main(["compress", str(src), "--codec", "webp", "--bytes", "1500", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "bytes" in printed and "bpp" in printed and "PSNR" in printed and "SSIM" in printed
    assert 0 < out.stat().st_size <= 1500
    assert main(["compress", str(src), "--codec", "jpeg", "--bytes", "50", "--out", str(out)]) == 2
    assert "error: max_bytes" in capsys.readouterr().err
    assert main(["compress", str(tmp_path / "missing.png"), "--out", str(out)]) == 2


def test_cli_vae_codec_from_a_vae_directory_and_decode(tmp_path, capsys, vae, shapes):
    from PIL import Image

    from sdlab.cli import main

    vae.save_pretrained(tmp_path / "vae")
    src = tmp_path / "shape.png"
    Image.fromarray(shapes["a"]).save(src)
    packed, png = tmp_path / "shape.sdl", tmp_path / "back.png"
    args = ["--model", str(tmp_path / "vae")]
    assert main(["compress", str(src), "--codec", "vae", "--quality", "40", "--out", str(packed)] + args) == 0
    assert main(["compress", "decode", str(packed), "--out", str(png)] + args) == 0
    assert np.asarray(Image.open(png)).shape == (64, 64, 3)
    packed.write_bytes(packed.read_bytes()[:-3])
    assert main(["compress", "decode", str(packed), "--out", str(png)] + args) == 2
    assert "corrupt or truncated" in capsys.readouterr().err


def test_cli_bench_writes_table_and_plot(tmp_path, capsys):
    import pandas as pd

    from sdlab.cli import main

    rc = main(["compress", "bench", "--shapes", "2", "--codecs", "jpeg", "webp", "--budgets", "150", "400",
               "--out", str(tmp_path / "bench")])
    assert rc == 0
    frame = pd.read_csv(tmp_path / "bench" / "rd.csv")
    assert len(frame) == 2 * 2 * 2 and (tmp_path / "bench" / "rd.png").stat().st_size > 0
    assert "2 images x 2 codecs x 2 budgets" in capsys.readouterr().out


def test_panel_compares_codecs_at_one_budget(shapes):
    from sdlab.widgets.compression import CompressionPanel

    panel = CompressionPanel(images=shapes, codecs=("jpeg", "webp"))
    panel.budget.value = 450
    panel.compare(background=False)
    assert panel.last_error is None
    assert len(panel.columns.children) == 3  # original + 2 codecs
    assert (panel.frame["bytes"] <= 450).all()
    before = panel.columns.children[1].children[1].value
    panel.crop_size.value = 16
    assert panel.columns.children[1].children[1].value != before  # a new crop without re-encoding
    panel.budget.value = panel.budget.min
    panel.compare(background=False)
    assert "over budget" in panel.columns.children[1].children[2].value
