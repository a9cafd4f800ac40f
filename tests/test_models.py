"""load_pipeline: names, directories, files, the pickle refusal, the offline error, device/dtype."""
import time

import pytest
import torch

from sdlab.errors import ModelNotFoundError, UnsafeCheckpointError, ValidationError
from sdlab.models import load_pipeline, model_info, resolve_device, resolve_dtype


def test_pickle_checkpoint_is_refused_before_it_is_read(tmp_path):
    ckpt = tmp_path / "model.ckpt"
    ckpt.write_bytes(b"not even a pickle")  # refused before any byte is unpickled
    with pytest.raises(UnsafeCheckpointError, match="allow_pickle"):
        load_pipeline(str(ckpt))


def test_hub_model_not_cached_gives_a_fast_one_line_error(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    started = time.monotonic()
    with pytest.raises(ModelNotFoundError) as info:
        load_pipeline("sd15")
    message = str(info.value)
    assert "stable-diffusion-v1-5" in message and "huggingface-cli download" in message and "\n" not in message
    assert time.monotonic() - started < 10


def test_unknown_name_and_non_pipeline_directory(tmp_path):
    with pytest.raises(ModelNotFoundError, match=r"^model: .no-such-model. is not valid; valid: a registered name"):
        load_pipeline("no-such-model")
    with pytest.raises(ModelNotFoundError, match="model_index.json"):
        load_pipeline(str(tmp_path))
    with pytest.raises(ModelNotFoundError, match="no such file"):
        load_pipeline(str(tmp_path / "missing.safetensors"))


def test_device_and_dtype_resolution():
    assert resolve_device("auto") in ("cpu", "cuda", "mps")
    assert resolve_dtype("auto", "cpu") == torch.float32
    assert resolve_dtype("auto", "cuda") == torch.float16
    assert resolve_dtype("bf16", "cpu") == torch.bfloat16
    with pytest.raises(ValidationError, match="device"):
        resolve_device("tpu")
    with pytest.raises(ValidationError, match="dtype"):
        resolve_dtype("fp8")
    if not torch.cuda.is_available():
        with pytest.raises(ValidationError, match="no CUDA"):
            resolve_device("cuda")


def test_local_directory_loads_with_name_and_hash(tiny_pipeline_dir):
    pipe = load_pipeline(str(tiny_pipeline_dir), device="cpu")
    info = model_info(pipe)
    assert info.name == "shapes-world" and len(info.hash) == 10
    assert info.hash == model_info(load_pipeline(str(tiny_pipeline_dir), device="cpu")).hash
    assert pipe.unet.dtype == torch.float32
