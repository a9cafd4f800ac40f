"""``sdlab train embedding|lora|dreambooth|hypernetwork``: one-line refusals (exit 2) before a model loads, a run, a resume."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from sdlab.cli import main


@pytest.fixture
def folders(tmp_path):
    empty, mixed, good = tmp_path / "empty", tmp_path / "mixed", tmp_path / "good"
    for d in (empty, mixed, good):
        d.mkdir()
    Image.new("RGB", (64, 64)).save(mixed / "a.png")
    Image.new("RGB", (32, 32)).save(mixed / "b.png")
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(good / f"{i}.png")
    (good / "0.txt").write_text("a large red star on a white background")
    small = tmp_path / "small"
    small.mkdir()
    Image.new("RGB", (32, 32)).save(small / "a.png")
    return {"empty": empty, "mixed": mixed, "good": good, "small": small}


@pytest.mark.parametrize("argv, message", [
    (["embedding", "--images", "{empty}", "--token", "sks"], "--images: '{empty}' is not valid; valid: a folder holding one or more images"),
    (["lora", "--images", "{mixed}", "--token", "sks"], "images: 'mixed sizes 32x32, 64x64' is not valid"),
    (["embedding", "--concept", "star", "--token", "red"], "token: 'red' is not valid; valid: a word not already in the tokenizer's vocabulary"),
    (["lora", "--concept", "star", "--token", "star", "--rank", "0"], "rank: 0 is not valid; valid: a whole number >= 1"),
    (["embedding", "--concept", "star", "--token", "<star>"], "token: '<star>' is not valid; valid: one word without spaces or the characters"),
    (["lora", "--concept", "star", "--token", "my/star"], "token: 'my/star' is not valid; valid: one word without spaces or the characters"),
    (["lora", "--concept", "star", "--mixed-precision", "fp16", "--device", "cpu"], "mixed_precision: 'fp16' is not valid; valid: no on cpu"),
    (["lora", "--concept", "moon", "--token", "moon"], "--concept: 'moon' is not valid; valid: one of star, sun, ruby, outlined"),
    (["lora", "--images", "{good}"], "--token: None is not valid; valid: a trigger word (one word without spaces) when training on --images"),
    (["dreambooth", "--images", "{good}", "--token", "sks"], "--class-word: None is not valid"),
    (["lora", "--images", "{good}", "--token", "sks", "--prior-weight", "1"], "--class-word: None is not valid"),
    (["lora", "--concept", "star", "--token", "star", "--prior-weight", "-1"], "prior_weight: -1.0 is not valid"),
    (["hypernetwork", "--concept", "outlined", "--layer-structure", "2,1"], "layer_structure: (2.0, 1.0) is not valid"),
    (["lora", "--concept", "star", "--token", "star", "--steps", "0"], "steps: 0 is not valid; valid: a whole number >= 1"),
    (["lora", "--concept", "star", "--token", "star", "--lr-scheduler", "linear"], "lr_scheduler: 'linear' is not valid; valid: one of constant, cosine"),
    (["lora", "--concept", "star", "--token", "star", "--caption-dropout", "1"], "caption_dropout: 1.0 is not valid"),
    (["embedding", "--concept", "star", "--token", "star", "--model", "{empty}"], "--model: "),
    (["lora", "--concept", "star", "--token", "star", "--preserve-weight", "1", "--preserve", "class-word,blanks"],
     "--preserve: 'blanks' is not valid; valid: one of class-word, blank, class-images, world, world-blank"),
    (["lora", "--images", "{good}", "--token", "sks", "--preserve-weight", "1"], "--class-word: None is not valid"),
    (["dreambooth", "--concept", "star", "--token", "sks", "--preserve-weight", "-1"], "preserve_weight: -1.0 is not valid"),
    (["lora", "--concept", "star", "--token", "star", "--preserve-weight", "1", "--preserve", "world", "--model", "{empty}"],
     "--preserve: 'world' is not valid; valid: kinds without world or world-blank for a model other than shapes-world"),
    (["lora", "--concept", "star", "--token", "star", "--preserve-weight", "1", "--preserve", "blank,world-blank", "--model", "{empty}"],
     "--preserve: 'blank,world-blank' is not valid; valid: kinds without world or world-blank"),
    (["lora", "--concept", "star", "--token", "star", "--preserve-weight", "1", "--preserve-batch", "0"], "--preserve-batch: 0 is not valid"),
    (["lora", "--concept", "star", "--token", "star", "--world-images", "{good}"],
     "--world-images: '{good}' is not valid; valid: given with --preserve-weight > 0 and world or world-blank in --preserve"),
    (["lora", "--concept", "star", "--token", "star", "--preserve-weight", "1", "--preserve", "world", "--world-images", "{empty}"],
     "--world-images: '{empty}' is not valid; valid: a folder holding one or more images"),
    (["dreambooth", "--concept", "star", "--token", "sks", "--preserve-weight", "1", "--preserve", "world-blank", "--world-images", "{small}"],
     "--world-images: '{small}' is not valid; valid: images of the subject's size (64x64)"),
])
def test_bad_input_exits_2_with_one_line_before_loading(argv, message, folders, tmp_path, capsys, monkeypatch):
    import sdlab.models

    monkeypatch.setattr(sdlab.models, "load_pipeline", lambda *a, **k: pytest.fail("the model was loaded"))
    argv = [a.format(**folders) for a in argv]
    assert main(["train", *argv, "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: " + message.format(**folders)) and "\n" not in err


def test_lora_run_writes_a_file_and_a_rerun_resumes(folders, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["train", "lora", "--concept", "star", "-n", "4", "--steps", "2", "--batch", "2", "--quiet", "--out", str(out)]
    assert main(argv) == 0
    assert (out / "star.safetensors").stat().st_size < 1_000_000  # named after its trigger, as A1111 calls it
    assert json.loads((out / "finetune_config.json").read_text())["token"] == "star"  # the concept's own trigger
    log = (out / "train_log.jsonl").read_text().splitlines()
    assert main(argv[:4] + ["--token", "star"] + argv[4:]) == 0  # the same run, finished: nothing trains again
    assert (out / "train_log.jsonl").read_text().splitlines() == log
    printed = capsys.readouterr().out
    assert "<lora:star:1>" in printed and _generate_as_printed(printed, tmp_path)[2]["Lora hashes"].startswith("star: ")
    from safetensors.torch import load_file

    from sdlab.models import load_pipeline

    fresh = load_pipeline("shapes-world")
    fresh.load_lora_weights(str(out))  # plain diffusers, handed the run directory, finds the run's one .safetensors
    saved = load_file(str(out / "star.safetensors"))
    loaded = {f"unet.{k.replace('.default_0', '')}": v for k, v in fresh.unet.state_dict().items() if "lora_" in k}
    assert set(loaded) == set(saved) and all(torch.equal(loaded[k], saved[k]) for k in saved)
    changed = [a if a != "2" else "3" for a in argv]
    assert main(changed) == 2  # another run's directory is refused


def _generate_as_printed(printed: str, tmp_path) -> tuple:
    """``sdlab generate`` with the result as the run's last line (``use: ...``) says; the PNG's A1111 parameters
    (prompt, negative prompt, fields)."""
    import re

    from sdlab.metadata import parse_parameters

    use = printed.strip().splitlines()[-1]
    tag, options = re.fullmatch(r"use: (<[^>]+>) in a prompt, with (--\S+ \S+(?: --allow-pickle)?)", use).groups()
    assert main(["generate", f"a large red cross on a white background {tag}", *options.split(), "--steps", "2",
                 "--out", str(tmp_path / "made")]) == 0
    png = next((tmp_path / "made").glob("*.png"))
    return parse_parameters(Image.open(png).text["parameters"])


def test_lora_with_prior_preservation_generates_class_images_of_the_class_word(tmp_path, capsys):
    out = tmp_path / "prior"
    argv = ["train", "lora", "--concept", "star", "--token", "star", "-n", "4", "--steps", "2", "--batch", "2", "--quiet",
            "--prior-weight", "1", "--class-images", "3", "--out", str(out)]
    assert main(argv) == 0
    records = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert records and all(np.isfinite(r["loss"]) for r in records if "loss" in r)
    assert json.loads((out / "finetune_config.json").read_text())["config"]["prior_weight"] == 1.0


def test_lora_with_output_preservation_records_what_it_kept(tmp_path, capsys):
    out = tmp_path / "keep"
    argv = ["train", "lora", "--concept", "star", "--token", "star", "-n", "4", "--steps", "2", "--batch", "2", "--quiet",
            "--preserve-weight", "1", "--preserve", "class-word,blank", "--out", str(out)]
    assert main(argv) == 0
    recorded = json.loads((out / "finetune_config.json").read_text())
    assert recorded["preserve"] == ["class-word", "blank"] and recorded["config"]["preserve_weight"] == 1.0
    assert main([a if a != "class-word,blank" else "blank" for a in argv]) == 2  # another preservation is another run


def test_output_preservation_on_a_folder_of_the_users_world_images(folders, tmp_path):
    """--world-images: a real-SD user's images like the base model's data (LAION-style captions in NAME.txt) as the
    world and world-blank items; recorded, so another folder is another run."""
    out = tmp_path / "keep-world"
    argv = ["train", "lora", "--concept", "star", "--token", "star", "-n", "4", "--steps", "2", "--batch", "2", "--quiet",
            "--preserve-weight", "1", "--preserve", "world,world-blank", "--preserve-batch", "2",
            "--world-images", str(folders["good"]), "--out", str(out)]
    assert main(argv) == 0
    recorded = json.loads((out / "finetune_config.json").read_text())
    assert recorded["world_images"] == str(folders["good"]) and recorded["preserve"] == ["world", "world-blank"]
    import shutil

    other = shutil.copytree(folders["good"], tmp_path / "good2")
    assert main(argv[:-4] + ["--world-images", str(other), "--out", str(out)]) == 2


def test_embedding_from_a_folder_uses_sidecar_captions(folders, tmp_path):
    out = tmp_path / "emb"
    assert main(["train", "embedding", "--images", str(folders["good"]), "--token", "sks-thing", "--steps", "1", "--batch", "1",
                 "--quiet", "--out", str(out)]) == 0
    from safetensors.torch import load_file

    assert set(load_file(str(out / "sks-thing.safetensors"))) == {"sks-thing"}
    assert json.loads((out / "finetune_config.json").read_text())["token"] == "sks-thing"


def test_hypernetwork_on_the_style_writes_a1111_pt(tmp_path, capsys):
    out = tmp_path / "hn"
    assert main(["train", "hypernetwork", "--concept", "outlined", "-n", "2", "--steps", "1", "--batch", "1", "--quiet", "--out", str(out)]) == 0
    from sdlab.adapters import hypernetwork as hn_lib

    hn = hn_lib.load(out / "hypernetwork.pt", allow_pickle=True)
    assert hn.cfg.layer_structure == (1.0, 2.0, 1.0)
    assert "<hypernet:hypernetwork:1>" in _generate_as_printed(capsys.readouterr().out, tmp_path)[0]  # .pt: with the consent printed


def test_a_run_killed_mid_training_resumes_to_the_same_file(tmp_path):
    """SIGKILL, not Cancel: nothing in the process gets to save; the last checkpoint is all a rerun has."""
    import os
    import signal
    import subprocess
    import sys
    import time

    import torch
    from safetensors.torch import load_file

    argv = [sys.executable, "-m", "sdlab", "train", "lora", "--concept", "star", "--token", "star", "-n", "4", "--steps", "40",
            "--batch", "2", "--quiet", "--checkpoint-minutes", "0"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    subprocess.run(argv + ["--out", str(whole)], check=True, env=env, capture_output=True)
    proc = subprocess.Popen(argv + ["--out", str(cut)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not (cut / "train_state.pt").exists():  # written atomically after each step
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.02)
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    step = torch.load(cut / "train_state.pt", weights_only=True)["step"]
    assert 1 <= step < 40 and not (cut / "star.safetensors").exists()
    subprocess.run(argv + ["--out", str(cut)], check=True, env=env, capture_output=True)
    a, b = load_file(str(whole / "star.safetensors")), load_file(str(cut / "star.safetensors"))
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)


def test_a_run_recorded_before_output_preservation_still_resumes(tmp_path, capsys):
    """A run directory from an sdlab without the preservation fields: the same command continues it, another is refused."""
    out = tmp_path / "run"
    argv = ["train", "lora", "--concept", "star", "--token", "star", "-n", "4", "--steps", "2", "--batch", "2", "--quiet", "--out", str(out)]
    assert main(argv) == 0
    config_file = out / "finetune_config.json"
    recorded = json.loads(config_file.read_text())
    del recorded["preserve"]
    for field in ("preserve_weight", "preserve_batch"):
        del recorded["config"][field]
    config_file.write_text(json.dumps(recorded))
    log = (out / "train_log.jsonl").read_text()
    assert main(argv) == 0 and (out / "train_log.jsonl").read_text() == log
    assert main(argv[:-2] + ["--preserve-weight", "1", "--out", str(out)]) == 2


def test_world_preservation_on_a_real_family_takes_the_users_folder(family_dir, tmp_path):
    """On a model other than the shapes world the world kinds need --world-images; with it, a LoRA trains on a tiny SD 1."""
    rng = np.random.default_rng(1)
    subject, world_dir = tmp_path / "subject", tmp_path / "world"
    for d in (subject, world_dir):
        d.mkdir()
        for i in range(2):
            Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(d / f"{i}.png")
    (world_dir / "0.txt").write_text("a photo of a street at night")
    argv = ["train", "lora", "--images", str(subject), "--token", "sks", "--class-word", "cat", "--model", str(family_dir("sd1")),
            "--steps", "1", "--batch", "1", "--quiet", "--preserve-weight", "1", "--preserve", "blank,world,world-blank",
            "--preserve-batch", "2", "--out", str(tmp_path / "run")]
    assert main(argv) == 2  # world kinds without a folder of that model's kind of image
    assert main(argv + ["--world-images", str(world_dir)]) == 0
    assert (tmp_path / "run" / "sks.safetensors").exists()
