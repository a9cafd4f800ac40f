"""Loading pipelines: the shapes world offline, real SD checkpoints through the same function."""
from __future__ import annotations

SDLAB_META = "sdlab.json"  # sdlab's own notes saved beside a diffusers pipeline
MODEL_DEFAULTS = {"guidance": 5.0, "sampler": "DPM++ 2M", "steps": 25}
