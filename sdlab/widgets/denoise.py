"""``DenoiseExplorer``: scrub the denoising loop step by step: x_t, x0, noise prediction, attention per token."""
from __future__ import annotations

import ipywidgets as W
import numpy as np
from PIL import Image

from ..models import model_info
from ..errors import SdlabError
from .base import Panel
from .base import png_bytes

VIEW = 160  # pixels per view


class DenoiseExplorer(Panel):
    def __init__(self, pipe, prompt: str = "a large red circle at the top left on a white background", seed: int = 1) -> None:
        super().__init__()
        self.pipe = pipe
        self.trace = None
        self.prompt = W.Text(value=prompt, description="Prompt", layout=W.Layout(width="100%"))
        self.seed = W.IntText(value=seed, description="Seed", layout=W.Layout(width="180px"))
        self.cfg = W.FloatText(value=float(model_info(pipe).defaults.get("guidance", 5.0)), description="CFG", layout=W.Layout(width="180px"))
        self.trace_button = W.Button(description="Trace", button_style="primary", icon="play")
        self.trace_button.on_click(lambda _: self.start())
        self.step = W.IntSlider(value=0, min=0, max=0, description="Step")
        self.play = W.Play(interval=250, min=0, max=0, step=1)
        W.jslink((self.play, "value"), (self.step, "value"))
        self.token = W.Dropdown(options=[], description="Token")
        self.views = {name: W.Image(format="png", width=VIEW, height=VIEW) for name in ("x_t", "x0", "noise", "attention")}
        self.caption = W.HTML()
        self.step.observe(lambda _: self.show_step(), names="value")
        self.token.observe(lambda _: self.show_step(), names="value")
        boxes = [W.VBox([W.HTML(f"<b>{name}</b>"), view]) for name, view in self.views.items()]
        self.widget = W.VBox([
            self.prompt, W.HBox([self.seed, self.cfg, self.trace_button, self.progress_row()]), self.status,
            W.HBox([self.play, self.step, self.token]), W.HBox(boxes), self.caption,
        ])

    def start(self, background: bool = True) -> None:
        from ..spec import GenerationSpec
        from ..trace import trace

        try:
            spec = GenerationSpec(self.prompt.value, seed=int(self.seed.value), guidance=float(self.cfg.value))
        except SdlabError as exc:
            self.show_error(str(exc))
            return
        self.run(lambda callback: trace(self.pipe, spec, attention=True, callback=callback), self._loaded, background)

    def _loaded(self, tr) -> None:
        from ..trace import prompt_tokens

        self.trace = tr
        self.token.options = [(t, i) for i, t in prompt_tokens(tr)]
        if self.token.options:  # show an attention map straight away, not a broken image
            self.token.value = self.token.options[0][1]
        last = len(tr.steps) - 1
        self.step.max = self.play.max = last
        self.step.value = 0
        self.show_step()

    def _picture(self, pixels: np.ndarray) -> bytes:
        return png_bytes(Image.fromarray(pixels).resize((VIEW, VIEW), Image.NEAREST))

    def show_step(self) -> None:
        from ..trace import latent_preview

        if self.trace is None:
            return
        i = self.step.value
        s = self.trace.steps[i]
        method = "linear" if self.trace.preview_factors else "vae"
        pipe = self.pipe if method == "vae" else None
        self.views["x_t"].value = png_bytes(self.trace.preview(i, "x_t", method, pipe).resize((VIEW, VIEW), Image.NEAREST))
        self.views["x0"].value = png_bytes(self.trace.preview(i, "x0", method, pipe).resize((VIEW, VIEW), Image.NEAREST))
        self.views["noise"].value = png_bytes(latent_preview(s.eps, self.trace.preview_factors, pipe).resize((VIEW, VIEW), Image.NEAREST))
        if s.attention is not None and self.token.value is not None:
            a = s.attention[self.token.value].numpy()
            heat = (255 * a / max(float(a.max()), 1e-8)).astype(np.uint8)
            self.views["attention"].value = self._picture(np.stack([heat, heat // 3, 255 - heat], axis=2))
        self.caption.value = f"step {i + 1}/{len(self.trace.steps)}: timestep {s.timestep:.0f}, sigma {s.sigma:.3f}"
