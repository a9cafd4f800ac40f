"""AUTOMATIC1111 sampler names -> diffusers schedulers built from the model's own scheduler config.

The table follows ``../shared/REFERENCE.md``. A "Karras" suffix (or
``schedule="karras"``, A1111's "Schedule type: Karras") turns on Karras sigmas.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from importlib.util import find_spec

from .errors import ValidationError
from .validation import invalid


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
        raise invalid("sampler", name, "one of " + ", ".join(sampler_names(False)))
    found = SAMPLERS[lookup[key]]
    if not found.available:
        raise ValidationError(f"sampler: {found.name!r} needs the package {found.needs!r}; pip install {found.needs}")
    return found.name


# Flow-matching models (SD 3): the samplers that have a flow form, by A1111 name.
FLOW_SAMPLERS: dict[str, Sampler] = {
    "Euler": Sampler("Euler", "FlowMatchEulerDiscreteScheduler"),
    "Heun": Sampler("Heun", "FlowMatchHeunDiscreteScheduler"),
    "DPM++ 2M": Sampler("DPM++ 2M", "DPMSolverMultistepScheduler",
                        {"algorithm_type": "dpmsolver++", "solver_order": 2, "use_flow_sigmas": True, "prediction_type": "flow_prediction"}),
    "UniPC": Sampler("UniPC", "UniPCMultistepScheduler", {"use_flow_sigmas": True, "prediction_type": "flow_prediction"}),
}


def is_flow_config(config: dict) -> bool:
    """A flow-matching model's scheduler config (SD 3's FlowMatchEulerDiscreteScheduler)."""
    return str(config.get("_class_name", "")).startswith("FlowMatch") or config.get("prediction_type") == "flow_prediction"


def names_for(config: dict) -> list[str]:
    """The sampler names a model with this scheduler config can run."""
    return list(FLOW_SAMPLERS) if is_flow_config(config) else sampler_names()


def make_scheduler(name: str, base_config: dict, seeds: list[int] | None = None):
    """A fresh scheduler for sampler ``name`` built from a model's scheduler config.

    Flow-matching models get the flow form of the sampler (a name without one
    is refused with the names that model can run). ``seeds`` (one per image)
    seed the Brownian tree of ``DPM++ SDE``, so its noise is fixed by the spec
    and image k of a batch equals the single image with seed + k.
    """
    import diffusers

    canonical = canonical_name(name)
    config = dict(base_config)
    if is_flow_config(config):
        if canonical not in FLOW_SAMPLERS:
            raise ValidationError(
                f"sampler: {canonical!r} has no flow-matching form for this model (SD 3 family); valid: {', '.join(FLOW_SAMPLERS)}"
            )
        sampler = FLOW_SAMPLERS[canonical]
        options = dict(sampler.options)
        if "use_flow_sigmas" in options:
            options["flow_shift"] = float(config.get("shift", 1.0))
        return getattr(diffusers, sampler.scheduler).from_config(config, **options)
    sampler = SAMPLERS[canonical]
    options = dict(sampler.options)
    if sampler.name.removesuffix(" Karras") in _KARRAS_CAPABLE:
        options["use_karras_sigmas"] = sampler.karras
    if sampler.scheduler == "DPMSolverSDEScheduler" and seeds is not None:
        options["noise_sampler_seed"] = [int(s) for s in seeds]
    return getattr(diffusers, sampler.scheduler).from_config(config, **options)


def scheduler_config(pipe) -> dict:
    """The model's scheduler config (the pipeline's own scheduler is never replaced, so this is it)."""
    return dict(pipe.scheduler.config)
