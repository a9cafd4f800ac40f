"""A1111 hypernetworks: the module layout A1111 saves, .pt only with consent, safetensors, and applying without a trace."""
from dataclasses import replace

import numpy as np
import pytest
import torch

from sdlab.adapters import hypernetwork as hn_lib
from sdlab.errors import UnsafeCheckpointError, ValidationError
from sdlab.generate import generate_many
from sdlab.models import load_pipeline
from sdlab.spec import GenerationSpec


@pytest.fixture(scope="module")
def pipe():
    return load_pipeline("shapes-world")


def _noisy(hn: hn_lib.Hypernetwork, seed: int = 0) -> hn_lib.Hypernetwork:
    """Weights big enough to change images (A1111's N(0, 0.01) start barely does)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in hn.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    return hn


def _images(p, n=2):
    return [np.asarray(im) for im, _ in generate_many(p, [GenerationSpec("a large red square at the top left", seed=i, steps=4) for i in range(n)])]


def test_a1111_layout_and_sequential_indices():
    hn = hn_lib.Hypernetwork(hn_lib.HypernetworkConfig(sizes=(768, 320), activation_func="relu", add_layer_norm=True))
    state = hn_lib.to_a1111(hn)
    assert sorted(k for k in state if isinstance(k, int)) == [320, 768]
    k_state, v_state = state[768]
    # A1111: Linear, ReLU (not after the last Linear), LayerNorm after each Linear; no dropout
    assert sorted(k_state) == ["linear.0.bias", "linear.0.weight", "linear.2.bias", "linear.2.weight",
                               "linear.3.bias", "linear.3.weight", "linear.4.bias", "linear.4.weight"]
    assert k_state["linear.0.weight"].shape == (1536, 768) and v_state["linear.3.weight"].shape == (768, 1536)
    assert state["layer_structure"] == [1.0, 2.0, 1.0] and state["activation_func"] == "relu" and state["is_layer_norm"] is True
    # an old file with use_dropout and last_layer_dropout has a Dropout after the first block: indices shift
    legacy = {**state, "use_dropout": True, "last_layer_dropout": True}
    legacy.pop("dropout_structure")
    with pytest.raises(ValidationError, match=r"^hypernetwork: 'width 768' is not valid; valid: state dicts matching its layer_structure"):
        hn_lib.from_a1111(legacy)
    shifted = {k: v for k, v in legacy.items() if not isinstance(k, int)}
    for size in (320, 768):
        shifted[size] = tuple({k.replace("linear.4.", "linear.5.").replace("linear.3.", "linear.4."): t for k, t in sd.items()}
                              for sd in state[size])
    loaded = hn_lib.from_a1111(shifted)
    assert isinstance(loaded.layers["768"][0].linear[3], torch.nn.Dropout)


def test_old_linear1_linear2_keys_load():
    state = {768: ({"linear1.weight": torch.ones(1536, 768), "linear1.bias": torch.zeros(1536),
                    "linear2.weight": torch.ones(768, 1536), "linear2.bias": torch.zeros(768)},) * 2}
    hn = hn_lib.from_a1111(state, "old")
    assert torch.equal(hn.layers["768"][0].linear[0].weight, torch.ones(1536, 768)) and hn.cfg.name == "old"


def test_pt_needs_consent_and_both_files_round_trip(pipe, tmp_path):
    hn = _noisy(hn_lib.new(pipe, seed=1, name="style"))
    pt = hn_lib.save(hn, tmp_path / "style.pt")
    with pytest.raises(UnsafeCheckpointError, match="allow_pickle=True"):
        hn_lib.load(pt)
    st = hn_lib.save(hn, tmp_path / "style.safetensors")
    for loaded in (hn_lib.load(pt, allow_pickle=True), hn_lib.load(st)):
        assert replace(loaded.cfg, sizes=hn.cfg.sizes) == hn.cfg and sorted(loaded.cfg.sizes) == sorted(hn.cfg.sizes)
        theirs = loaded.state_dict()
        assert all(torch.equal(v, theirs[k]) for k, v in hn.state_dict().items())
    raw = torch.load(pt, weights_only=True)
    assert isinstance(raw[128], tuple) and len(raw[128]) == 2 and raw["name"] == "style"


def test_applied_changes_images_and_restores_the_unet_exactly(pipe):
    hn = _noisy(hn_lib.new(pipe, seed=2))
    processors = dict(pipe.unet.attn_processors)
    state = {k: v.clone() for k, v in pipe.unet.state_dict().items()}
    base = _images(pipe)
    with hn_lib.applied(pipe, hn, 0.0):
        assert all(np.array_equal(a, b) for a, b in zip(_images(pipe), base))
    with hn_lib.applied(pipe, hn, 1.0):
        bent = _images(pipe)
    assert any(not np.array_equal(a, b) for a, b in zip(bent, base))
    with pytest.raises(RuntimeError):
        with hn_lib.applied(pipe, hn, 1.0):
            raise RuntimeError("interrupted")
    assert all(pipe.unet.attn_processors[k] is v for k, v in processors.items())
    assert all(torch.equal(v, pipe.unet.state_dict()[k]) for k, v in state.items())
    assert all(np.array_equal(a, b) for a, b in zip(_images(pipe), base))
    with pytest.raises(ValidationError, match=r"^strength: -1 is not valid; valid: a number >= 0$"):
        with hn_lib.applied(pipe, hn, -1):
            pass


def test_bad_structure_is_one_line():
    with pytest.raises(ValidationError, match=r"^layer_structure: \(2, 1\) is not valid; valid: multipliers starting and ending with 1"):
        hn_lib.HypernetworkConfig(layer_structure=(2, 1))


def test_with_hypernetwork_keeps_it_on_a_copy(pipe):
    hn = _noisy(hn_lib.new(pipe, seed=3))
    processors = dict(pipe.unet.attn_processors)
    base = _images(pipe)
    tuned = hn_lib.with_hypernetwork(pipe, hn, 1.0)
    import gc

    gc.collect()  # nothing it returns may depend on an object the caller drops
    assert tuned.unet is not pipe.unet and tuned.vae is pipe.vae
    assert any(not np.array_equal(a, b) for a, b in zip(_images(tuned), base))
    assert all(np.array_equal(a, b) for a, b in zip(_images(hn_lib.with_hypernetwork(pipe, hn, 0.0)), base))
    assert all(pipe.unet.attn_processors[k] is v for k, v in processors.items())
