"""What a diffusion UNet predicts, converted: epsilon, v or x0, from one another.

A latent at noise level alpha_bar is ``z = sqrt(abar) x0 + sqrt(1 - abar) eps``.
SD 1.x predicts ``eps``; SD 2.x-768 and the shapes world predict the velocity
``v = sqrt(abar) eps - sqrt(1 - abar) x0`` (Salimans & Ho 2022). Tools that
look inside the loop (the trace, Tree-Ring's DDIM inversion) need eps and x0
whatever the model predicts; this is the one place that converts.

k-diffusion-style samplers hold ``x = x0 + sigma eps``; the UNet's input
there is ``x / sqrt(sigma^2 + 1)``, which is the same ``z`` with
``abar = 1 / (sigma^2 + 1)``.
"""
from __future__ import annotations

import torch

from .validation import invalid

PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")


def eps_and_x0(prediction: torch.Tensor, z: torch.Tensor, alpha_bar: float | torch.Tensor,
               prediction_type: str = "epsilon") -> tuple[torch.Tensor, torch.Tensor]:
    """(eps, x0) from the model's ``prediction`` at latent ``z`` of noise level ``alpha_bar``."""
    a = torch.as_tensor(alpha_bar, dtype=torch.float32)
    signal, noise = a.sqrt(), (1 - a).sqrt()
    if prediction_type == "epsilon":
        eps = prediction
        return eps, (z - noise * eps) / signal
    if prediction_type == "v_prediction":
        return noise * z + signal * prediction, signal * z - noise * prediction
    if prediction_type == "sample":
        x0 = prediction
        return (z - signal * x0) / noise, x0
    raise invalid("prediction_type", prediction_type, "one of " + ", ".join(PREDICTION_TYPES))
