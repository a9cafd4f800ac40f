"""The CLI turns bad input into one line 'error: ...' and exit status 2, never a traceback."""
import subprocess
import sys

import pytest

from sdlab.cli import main


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["generate", "a circle", "--size", "65x64"], "width: 65 is not valid; valid: a multiple of 8; nearest: 64 or 72"),
        (["generate", "a circle", "--size", "big"], "size: 'big' is not valid; valid: WIDTHxHEIGHT"),
        (["generate", "a circle", "--sampler", "Eulr"], "sampler: 'Eulr' is not valid; valid: one of Euler"),
        (["generate", "a circle", "--steps", "0"], "steps: 0 is not valid; valid: a whole number >= 1"),
        (["generate", "a circle", "--strength", "1.5", "--init", "x.png"], "strength: 1.5 is not valid; valid: a number in [0, 1]"),
        (["generate", "a circle", "--model", "nothing.ckpt"], "no such file"),
        (["info", "does-not-exist.png"], "no such file"),
        (["mini", "eval", "--guidance", "1,x"], "--guidance"),
        (["mini", "train", "--out", "never-made", "--images", "0"], "n_images: 0 is not valid; valid: a whole number >= 1"),
        (["mini", "train", "--out", "never-made", "--foreground-weight", "-1"], "unet_foreground_weight: -1.0 is not valid; valid: a number >= 0"),
        (["watermark", "signature", "train", "--out", "never-made", "--steps", "0"], "steps: 0 is not valid; valid: a whole number >= 1"),
        (["watermark", "signature", "train", "--out", "never-made", "--bits", "4"], "n_bits: 4 is not valid; valid: a whole number >= 8"),
        (["watermark", "signature", "train", "--out", "never-made", "--extractor-from", "no-such-dir"],
         "extractor_from: no trained signature at no-such-dir"),
        (["watermark", "signature", "detect", "x.png", "--fpr", "2"], "fpr: 2.0 is not valid; valid: a number in (0, 1)"),
        (["nonsense"], "invalid choice"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(argv, expected, capsys):
    with pytest.raises(SystemExit) as exit_info:
        raise SystemExit(main(argv))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err
    assert expected in err


def test_pickle_refusal_from_the_command_line(tmp_path):
    ckpt = tmp_path / "model.ckpt"
    ckpt.write_bytes(b"\x80\x04junk")
    proc = subprocess.run([sys.executable, "-m", "sdlab", "generate", "a", "--model", str(ckpt)], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: model: model.ckpt is a pickle checkpoint") and proc.stderr.count("\n") == 1


def test_metadata_error_for_a_png_without_parameters(tmp_path):
    from PIL import Image

    Image.new("RGB", (8, 8)).save(tmp_path / "plain.png")
    proc = subprocess.run([sys.executable, "-m", "sdlab", "info", str(tmp_path / "plain.png")], capture_output=True, text=True)
    assert proc.returncode == 2 and "no generation metadata" in proc.stderr
