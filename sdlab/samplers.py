"""AUTOMATIC1111 sampler names -> diffusers schedulers built from the model's own scheduler config.

The table follows ``../shared/REFERENCE.md``. A "Karras" suffix (or
``schedule="karras"``, A1111's "Schedule type: Karras") turns on Karras sigmas.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from importlib.util import find_spec

from .errors import ValidationError


@dataclass(frozen=True)
class Sampler:
    name: str
    scheduler: str  # diffusers class name
    options: dict = field(default_factory=dict)
    needs: str | None = None  # optional package it depends on
    karras: bool = False

    @property
    def available(self) -> bool:
        return self.needs is None or find_spec(self.needs) is not None


_BASE = [
    Sampler("Euler", "EulerDiscreteScheduler"),
    Sampler("Euler a", "EulerAncestralDiscreteScheduler"),
    Sampler("Heun", "HeunDiscreteScheduler"),
    Sampler("LMS", "LMSDiscreteScheduler"),
    Sampler("DDIM", "DDIMScheduler"),
    Sampler("PLMS", "PNDMScheduler", {"skip_prk_steps": True}),
    Sampler("DPM2", "KDPM2DiscreteScheduler"),
    Sampler("DPM2 a", "KDPM2AncestralDiscreteScheduler"),
    Sampler("DPM++ 2M", "DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2}),
    Sampler("DPM++ 2M SDE", "DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++", "solver_order": 2}),
    Sampler("DPM++ SDE", "DPMSolverSDEScheduler", needs="torchsde"),
    Sampler("UniPC", "UniPCMultistepScheduler"),
    Sampler("LCM", "LCMScheduler"),
]
_KARRAS_CAPABLE = {"Euler", "Heun", "LMS", "DPM2", "DPM2 a", "DPM++ 2M", "DPM++ 2M SDE", "DPM++ SDE", "UniPC"}
SAMPLERS: dict[str, Sampler] = {s.name: s for s in _BASE}
for _s in _BASE:
    if _s.name in _KARRAS_CAPABLE:
        SAMPLERS[f"{_s.name} Karras"] = Sampler(f"{_s.name} Karras", _s.scheduler, _s.options, _s.needs, karras=True)


def sampler_names(available_only: bool = True) -> list[str]:
    """Names accepted by :func:`make_scheduler` (by default only those whose dependencies are installed)."""
    return [n for n, s in SAMPLERS.items() if s.available or not available_only]


def canonical_name(name: str, schedule: str | None = None) -> str:
    """Validate ``name`` (case-insensitive) and fold A1111's separate "Schedule type" into it."""
    lookup = {n.lower(): n for n in SAMPLERS}
    key = name.strip().lower()
    if schedule and schedule.strip().lower() == "karras" and not key.endswith(" karras"):
        key += " karras"
    if key not in lookup:
        raise ValidationError(f"sampler: {name!r} is not known; valid: {', '.join(sampler_names(False))}")
    found = SAMPLERS[lookup[key]]
    if not found.available:
        raise ValidationError(f"sampler: {found.name!r} needs the package {found.needs!r}; pip install {found.needs}")
    return found.name


def make_scheduler(name: str, base_config: dict):
    """A fresh scheduler for sampler ``name`` built from a model's scheduler config."""
    import diffusers

    sampler = SAMPLERS[canonical_name(name)]
    cls = getattr(diffusers, sampler.scheduler)
    options = dict(sampler.options)
    if sampler.karras:
        options["use_karras_sigmas"] = True
    return cls.from_config(dict(base_config), **options)


def scheduler_config(pipe) -> dict:
    """The model's scheduler config, remembered once so swapping samplers never drifts from it."""
    original = getattr(pipe, "_sdlab_scheduler_config", None)
    if original is None:
        original = dict(pipe.scheduler.config)
        pipe._sdlab_scheduler_config = original
    return original
