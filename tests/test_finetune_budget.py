"""A fine-tuning run that would not fit in memory or not end today is refused with its estimate before any step."""
import copy

import pytest

from sdlab.cli import main


@pytest.mark.parametrize("name", ["shapes-world", "sd1", "sdxl"])
@pytest.mark.parametrize("targets", ["attention", "attention+conv"])
def test_the_adapter_count_is_what_peft_adds(name, targets, loaded):
    """The estimate counts a LoRA's weights without adding it; peft's add_adapter adds exactly that many."""
    from peft import LoraConfig

    from sdlab.finetune.budget import lora_parameters
    from sdlab.finetune.lora import TARGETS
    from sdlab.models import load_pipeline

    unet = (load_pipeline("shapes-world") if name == "shapes-world" else loaded(name)[0]).unet
    for rank in (1, 7):
        adapted = copy.deepcopy(unet).requires_grad_(False)
        adapted.add_adapter(LoraConfig(r=rank, lora_alpha=rank, target_modules=TARGETS[targets]))
        added = sum(p.numel() for p in adapted.parameters() if p.requires_grad)
        assert added > 0 and lora_parameters(unet, TARGETS[targets], rank) == added


@pytest.mark.parametrize("extra, message", [
    (["--rank", "1000000"], "rank: 1000000 is not valid; valid: work that fits in memory: this needs about "),
    (["--batch", "100000"], "batch: 100000 is not valid; valid: work that fits in memory: this needs about "),
    (["--steps", "100000000"], "steps: 100000000 is not valid; valid: work under 24 h here: this would take about "),
])
def test_a_run_too_big_for_the_machine_is_refused_in_one_line_before_any_step(extra, message, tmp_path, capsys, monkeypatch):
    import sdlab.cost

    monkeypatch.setattr(sdlab.cost, "available_memory", lambda device="cpu": 16 * 2**30)  # the same answer on any machine
    out = tmp_path / "run"
    assert main(["train", "lora", "--concept", "star", "-n", "4", "--quiet", "--out", str(out), *extra]) == 2
    err = capsys.readouterr().err.strip()  # after diffusers' loading bars: the model is read to count the adapter
    last = err.splitlines()[-1]
    assert last.startswith("error: " + message) and "(CLI: --force)" in last and "Traceback" not in err
    assert not (out / "train_state.pt").exists() and not (out / "train_log.jsonl").exists()


def test_the_estimate_grows_with_what_a_step_holds(monkeypatch):
    """More items per step, a larger rank, DreamBooth's whole UNet: each costs more; the default run is far inside 1 GB."""
    import sdlab.cost
    from sdlab.errors import SdlabError
    from sdlab.finetune.budget import check_training
    from sdlab.finetune.dreambooth import DreamBoothConfig
    from sdlab.finetune.lora import LoraConfig
    from sdlab.models import load_pipeline

    pipe = load_pipeline("shapes-world")
    peak = lambda method, cfg, items: check_training(method, pipe, cfg, (16, 16), items)["estimated_peak_bytes"]  # noqa: E731
    small = peak("lora", LoraConfig(), 8)
    assert small < 2**30
    assert peak("lora", LoraConfig(), 64) > small and peak("lora", LoraConfig(rank=64), 8) > small
    assert peak("dreambooth", DreamBoothConfig(), 8) > small
    monkeypatch.setattr(sdlab.cost, "available_memory", lambda device="cpu": small / 2)
    with pytest.raises(SdlabError, match="^batch: 8 is not valid; valid: work that fits in memory"):
        check_training("lora", pipe, LoraConfig(), (16, 16), 8)
    assert check_training("lora", pipe, LoraConfig(), (16, 16), 8, force=True)["estimated_peak_bytes"] == small


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_mixed_precision_off_cuda_is_refused_before_any_step(precision, tmp_path):
    """Autocast runs on CUDA only: on the CPU the run would be fp32 under an fp16 label, so it is refused, nothing written."""
    from sdlab.errors import ValidationError
    from sdlab.finetune.common import Dataset
    from sdlab.finetune.lora import LoraConfig, train_lora
    from sdlab.mini import concepts
    from sdlab.models import load_pipeline

    images, table = concepts.make_set("star", 2)
    with pytest.raises(ValidationError, match=f"^mixed_precision: '{precision}' is not valid; valid: no on cpu"):
        train_lora(load_pipeline("shapes-world"), Dataset(images, table["TEXT"].tolist()), tmp_path / "run",
                   LoraConfig(steps=1, batch=1, mixed_precision=precision))
    assert not (tmp_path / "run").exists()
