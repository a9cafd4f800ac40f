"""The CPU thread policy: one torch thread for small models, the user's SDLAB_THREADS first."""
from __future__ import annotations

import pytest
import torch

from sdlab.errors import ValidationError
from sdlab.models import load_pipeline
from sdlab.threads import SMALL_MODEL_PARAMETERS, apply_thread_policy, policy_threads


@pytest.fixture
def restore_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_policy():
    assert policy_threads(5_000_000, "auto") == 1
    assert policy_threads(SMALL_MODEL_PARAMETERS, "auto") is None  # real SD: torch's own choice
    assert policy_threads(5_000_000, "torch") is None
    assert policy_threads(860_000_000, "3") == 3
    for bad in ("0", "-1", "many", "1.5"):
        with pytest.raises(ValidationError, match=rf"^SDLAB_THREADS: '{bad}' is not valid; valid: auto, torch, or a whole number >= 1"):
            policy_threads(1, bad)


def test_loading_a_small_model_on_cpu_uses_one_thread(restore_threads, monkeypatch):
    monkeypatch.delenv("SDLAB_THREADS", raising=False)
    torch.set_num_threads(2)
    pipe = load_pipeline("shapes-world", device="cpu")
    assert torch.get_num_threads() == 1
    monkeypatch.setenv("SDLAB_THREADS", "torch")
    torch.set_num_threads(2)
    assert apply_thread_policy(pipe) == 2  # the user's setting is kept
    monkeypatch.setenv("SDLAB_THREADS", "2")
    torch.set_num_threads(1)
    assert apply_thread_policy(pipe) == 2
