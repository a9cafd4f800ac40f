"""The watermark CLI and panel, driven as a user would."""
from __future__ import annotations

import datetime
import io
import json

import numpy as np
import pytest
from PIL import Image

from sdlab.cli import main
from sdlab.images import sample_photos


@pytest.fixture(scope="module")
def photo_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("wm") / "astronaut.png"
    Image.fromarray(sample_photos(384, ("astronaut",))["astronaut"]).save(path)
    return path


def test_cli_embed_then_detect_json(photo_path, tmp_path, capsys):
    out = tmp_path / "marked.png"
    assert main(["watermark", "embed", str(photo_path), "--preset", "sd1", "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["watermark", "detect", str(out), str(photo_path), "--json"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(lines) == 6  # 2 images x 3 presets
    for rec in lines:
        assert {"path", "preset", "method", "bits_matched", "bits_total", "bit_accuracy", "p_value", "detected", "decision"} <= set(rec)
        assert isinstance(rec["detected"], bool)
    found = {(r["path"], r["preset"]): r["detected"] for r in lines}
    assert found[(str(out), "sd1")] and not found[(str(out), "sdxl")]
    assert not any(found[(str(photo_path), p)] for p in ("sd1", "sd2", "sdxl"))


def test_cli_custom_payload_and_errors(photo_path, tmp_path, capsys):
    out = tmp_path / "m.png"
    assert main(["watermark", "embed", str(photo_path), "--payload", "labs", "--method", "dwtDctSvd", "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["watermark", "detect", str(out), "--payload", "labs", "--method", "dwtDctSvd"]) == 0
    assert "detected" in capsys.readouterr().out
    small = tmp_path / "small.png"
    Image.fromarray(np.zeros((100, 120, 3), np.uint8)).save(small)
    assert main(["watermark", "detect", str(small)]) == 2
    assert "120x100" in capsys.readouterr().err
    assert main(["watermark", "detect", str(photo_path), "--fpr", "2"]) == 2
    assert "fpr: 2.0 is not valid; valid: a number in (0, 1)" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["watermark", "embed", str(photo_path), "--out", str(out)])  # neither preset nor payload


def test_cli_battery_writes_results(photo_path, tmp_path, capsys):
    out = tmp_path / "bat"
    args = ["watermark", "battery", str(photo_path), "--methods", "dwtDct", "--attacks", "jpeg", "blur",
            "--out", str(out), "--workers", "1"]
    assert main(args) == 0
    assert {"rows.parquet", "summary.csv", "heatmap.png", "bit_accuracy.png", "roc_jpeg.png"} <= {p.name for p in out.iterdir()}
    assert main(args) == 0  # resumes
    assert main(["watermark", "battery", str(photo_path), "--methods", "dwtDctSvd", "--attacks", "jpeg",
                 "--out", str(out), "--workers", "1"]) == 2
    assert "other arguments" in capsys.readouterr().err


def test_panel_live_attack_updates_bits(photo_path):
    from sdlab.widgets.watermark import WatermarkPanel

    panel = WatermarkPanel(photo_path)
    assert [d.preset for d in panel.results] == ["sd1", "sd2", "sdxl"]
    assert not any(d.detected for d in panel.results)
    panel.mark.value = "sdxl"
    sdxl = panel.results[2]
    assert sdxl.detected and sdxl.decision == "very likely" and "very likely" in panel.table.value
    panel.attack.value = "rotate"
    assert panel.strength.value == 0 and panel.results[2].detected
    panel.strength.value = 10
    assert panel.results[2].bits_matched < 36  # rotation breaks dwtDct
    assert panel.preview.value[:4] == b"\x89PNG"


def test_panel_upload_and_errors():
    from sdlab.widgets.watermark import WatermarkPanel

    panel = WatermarkPanel()
    buf = io.BytesIO()
    Image.fromarray(np.full((64, 64, 4), 200, np.uint8)).save(buf, "PNG")
    panel.upload.value = ({"name": "tiny.png", "content": memoryview(buf.getvalue()), "type": "image/png", "size": 1,
                     "last_modified": datetime.datetime(2024, 1, 1)},)
    assert "64x64" in (panel.last_error or "") and panel.results == []
    panel.upscale.value = True
    assert panel.last_error is None and len(panel.results) == 3
    assert "alpha" in panel.status.value and "upscaled" in panel.status.value
