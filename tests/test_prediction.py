"""eps/v/x0 conversions: from a known x0 and eps, each prediction type gives them back."""
import pytest
import torch

from sdlab.prediction import eps_and_x0


@pytest.mark.parametrize("alpha_bar", [0.9991, 0.5, 0.0471, 1e-5])
def test_each_prediction_type_recovers_eps_and_x0(alpha_bar):
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(4, 16, 16, generator=g), torch.randn(4, 16, 16, generator=g)
    a = torch.tensor(alpha_bar)
    z = a.sqrt() * x0 + (1 - a).sqrt() * eps
    v = a.sqrt() * eps - (1 - a).sqrt() * x0
    for kind, prediction in (("epsilon", eps), ("v_prediction", v), ("sample", x0)):
        got_eps, got_x0 = eps_and_x0(prediction, z, alpha_bar, kind)
        assert torch.allclose(got_eps, eps, atol=1e-3), kind
        if kind != "epsilon" or alpha_bar > 1e-3:  # eps -> x0 divides by sqrt(abar)
            assert torch.allclose(got_x0, x0, atol=1e-3), kind


def test_v_prediction_at_zero_snr_is_minus_x0():
    x0 = torch.ones(2, 2)
    eps, got_x0 = eps_and_x0(-x0, torch.zeros(2, 2), 0.0, "v_prediction")
    assert torch.equal(got_x0, x0) and torch.equal(eps, torch.zeros(2, 2))


def test_unknown_prediction_type_is_named():
    with pytest.raises(ValueError, match="prediction_type: 'flow'"):
        eps_and_x0(torch.zeros(1), torch.zeros(1), 0.5, "flow")
