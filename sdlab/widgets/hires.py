"""``HiresPanel``: one prompt at a larger size, made directly and with the hires fix, side by side.

Thin: the work is :func:`sdlab.hires.hires_fix` and :func:`sdlab.generate.generate`; a ``measure``
(for the shapes world, :func:`sdlab.mini.resolution.size_metric`, passed in by the notebook) labels
each image with what it reads.
"""
from __future__ import annotations

import html
from typing import Callable

import ipywidgets as W

from ..errors import SdlabError
from .base import Panel, png_bytes

VIEW = 192  # pixels per image on screen


class HiresPanel(Panel):
    def __init__(self, pipe, prompt: str = "a large red circle at the top left on a white background", seed: int = 1,
                 measure: Callable | None = None) -> None:
        super().__init__()
        from ..hires import DEFAULT_STRENGTH, UPSCALERS

        self.pipe, self.measure, self.result = pipe, measure, None
        self.prompt = W.Text(value=prompt, description="Prompt", layout=W.Layout(width="100%"))
        self.seed = W.IntText(value=seed, description="Seed", layout=W.Layout(width="180px"))
        self.scale = W.FloatSlider(value=2.0, min=1.25, max=4.0, step=0.25, description="Upscale by")
        self.strength = W.FloatSlider(value=DEFAULT_STRENGTH, min=0.05, max=1.0, step=0.05, description="Denoising")
        self.upscaler = W.Dropdown(options=list(UPSCALERS), value="lanczos", description="Upscaler")
        self.steps = W.IntText(value=0, description="Hires steps", tooltip="0: the first pass's", layout=W.Layout(width="180px"))
        self.button = W.Button(description="Generate", button_style="primary", icon="play")
        self.button.on_click(lambda _: self.start())
        self.views = [W.VBox([W.HTML(), W.Image(format="png")]) for _ in range(3)]
        self.widget = W.VBox([
            self.prompt, W.HBox([self.seed, self.scale, self.strength]), W.HBox([self.upscaler, self.steps, self.button]),
            self.progress_row(), self.status, W.HBox(self.views),
        ])

    def start(self, background: bool = True) -> None:
        from ..cost import check_pipeline
        from ..spec import GenerationSpec

        try:
            spec = GenerationSpec(self.prompt.value, seed=int(self.seed.value))
            check_pipeline(self.pipe, spec, scale=float(self.scale.value))  # the second pass, at the target size
        except SdlabError as exc:
            self.show_error(str(exc))
            return
        options = {"scale": float(self.scale.value), "strength": float(self.strength.value), "upscaler": self.upscaler.value,
                   "steps": int(self.steps.value) or None}
        self.run(lambda callback: self._work(spec, options, callback), self.show, background)

    def _work(self, spec, options: dict, callback):
        from ..generate import generate
        from ..hires import hires_fix

        fixed = hires_fix(self.pipe, spec, callback=callback, **options)
        width, height = fixed.images[0].size
        direct = generate(self.pipe, fixed.first_pass.specs[0].replace(width=width, height=height))
        return fixed, direct

    def show(self, results) -> None:
        fixed, direct = self.result = results
        panels = (("first pass", fixed.first_pass.images[0], fixed.first_pass.specs[0]),
                  ("direct at the target size", direct.images[0], direct.specs[0]), ("hires fix", fixed.images[0], fixed.specs[0]))
        for view, (title, image, spec) in zip(self.views, panels):
            label = f"<b>{title}</b> {image.size[0]}x{image.size[1]}"
            if self.measure is not None:
                import numpy as np

                read = self.measure(np.asarray(image.convert("RGB")), spec)
                label += "<br>" + html.escape(", ".join(f"{k}: {v}" for k, v in read.items() if not k.startswith("found_")))
            view.children[0].value = label
            view.children[1].value = png_bytes(image.resize((VIEW, VIEW * image.size[1] // image.size[0])))
