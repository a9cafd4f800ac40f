"""Bad input to ``sdlab generate`` is refused before torch and diffusers are imported (a cold start costs
seconds of imports; a refusal should not), and the early checks say what generate itself would say."""
from __future__ import annotations

import subprocess
import sys

import pytest
from PIL import Image

from sdlab.errors import ModelNotFoundError, ValidationError
from sdlab.generate import size_factor
from sdlab.models import config_size_factor, load_pipeline, locate
from sdlab.spec import GenerationSpec, check_inputs

PROBE = """
import sys
from sdlab.cli import main
status = main(sys.argv[1:])
heavy = sorted(m for m in ("torch", "diffusers", "transformers") if m in sys.modules)
print("STATUS", status, "HEAVY", ",".join(heavy) or "-")
"""


def _run(*argv) -> tuple[int, str, str]:
    done = subprocess.run([sys.executable, "-c", PROBE, *argv], capture_output=True, text=True, timeout=120)
    status, heavy = done.stdout.split("STATUS ")[1].split(" HEAVY ")
    return int(status), heavy.strip(), done.stderr.strip()


@pytest.mark.parametrize("argv, message", [
    (["--model", "/no/such/dir"], "model: '/no/such/dir' is not valid; valid: a registered name"),
    (["--model", "missing.safetensors"], "model: no such file 'missing.safetensors'"),
    (["--init", "INIT"], "width of the init image: 50 is not valid; valid: a multiple of 4; nearest: 48 or 52"),
    (["--init", "INIT64", "--outpaint", "3,0,0,0"], "width of the extended init image: 67 is not valid"),
    (["--init", "NOFILE"], "init: no such file"),
    (["--size", "66x64"], "width: 66 is not valid; valid: a multiple of 8"),
])
def test_generate_refuses_before_torch_is_imported(argv, message, tmp_path):
    Image.new("RGB", (50, 50)).save(tmp_path / "odd.png")
    Image.new("RGB", (64, 64)).save(tmp_path / "ok.png")
    paths = {"INIT": tmp_path / "odd.png", "INIT64": tmp_path / "ok.png", "NOFILE": tmp_path / "nope.png"}
    argv = [str(paths.get(a, a)) for a in argv]
    status, heavy, err = _run("generate", "a red circle", "--out", str(tmp_path / "out"), *argv)
    assert status == 2 and heavy == "-" and message in err and len(err.splitlines()) == 1, err


@pytest.mark.parametrize("name", ["sd1", "sd2", "sd2-inpaint", "sdxl", "sd3"])
def test_config_size_factor_is_the_loaded_models(family_dir, name):
    pipe = load_pipeline(str(family_dir(name)), device="cpu")
    assert config_size_factor(family_dir(name)) == size_factor(pipe)


def test_shapes_world_factor_and_sources():
    assert config_size_factor("shapes-world") == size_factor(load_pipeline("shapes-world", device="cpu")) == 4
    assert config_size_factor("sd15") is None  # a hub id: its configs are not on disk here
    for ok in ("shapes-world", "sd15", "owner/repo"):
        locate(ok)
    with pytest.raises(ModelNotFoundError, match=r"^model: '\./here' is not valid"):
        locate("./here")


def test_early_size_checks_match_generate(tmp_path):
    with pytest.raises(ValidationError, match=r"^height: 72 is not valid; valid: a multiple of 16; nearest: 64 or 80"):
        check_inputs(GenerationSpec("a", width=64, height=72), 16)  # SD 3: VAE 8 x patch 2
    check_inputs(GenerationSpec("a", init_image=Image.new("RGB", (64, 48))), 4)  # passes: generate accepts it too
    with pytest.raises(ValidationError, match=r"^width of the init image: 62 is not valid"):
        check_inputs(GenerationSpec("a", init_image=Image.new("RGB", (62, 64))), 4)
