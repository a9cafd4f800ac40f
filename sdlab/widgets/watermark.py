"""WatermarkPanel: drop an image, see every preset's verdict, attack it with sliders and watch the bits."""
from __future__ import annotations

import html
import io
from typing import Any

import ipywidgets as W
import numpy as np

from ..errors import SdlabError
from .base import Panel


class WatermarkPanel(Panel):
    """Upload (or :meth:`load`) an image; optionally mark it; pick an attack and strength; results update live.

    ``signature`` (a :class:`sdlab.watermark.signature.StableSignature`) adds its verdict as one more row.
    """

    def __init__(self, image: Any = None, signature: Any = None) -> None:
        super().__init__()
        from ..watermark import ATTACKS, PRESETS

        self.signature = signature
        self.signature_result: dict | None = None
        self.original: np.ndarray | None = None
        self.notes: list[str] = []
        self.results: list = []
        self.upload = W.FileUpload(accept="image/*", multiple=False, description="Image")
        self.upload.observe(self._on_upload, names="value")
        self.mark = W.Dropdown(options=["(as uploaded)"] + list(PRESETS), description="Mark with")
        self.upscale = W.Checkbox(value=False, description="upscale small images")
        self.attack = W.Dropdown(options=[n for n, a in ATTACKS.items() if a.needs is None], value="none", description="Attack")
        self.strength = W.FloatSlider(description="Strength", continuous_update=True, readout_format=".2f")
        self.preview = W.Image(format="png", layout=W.Layout(max_width="256px"))
        self.table = W.HTML()
        for control in (self.mark, self.upscale, self.strength):
            control.observe(lambda _: self.refresh(), names="value")
        self.attack.observe(self._on_attack, names="value")
        self._on_attack()
        self.widget = W.VBox([
            W.HBox([self.upload, self.mark, self.upscale]),
            W.HBox([self.attack, self.strength]),
            W.HBox([self.preview, self.table]),
            self.status,
        ])
        if image is not None:
            self.load(image)

    # -- inputs ----------------------------------------------------------------------------
    def load(self, image: Any) -> None:
        """Use ``image`` (path, PIL image or array) as the panel's original."""
        from ..images import to_rgb

        try:
            self.original, self.notes = to_rgb(image)
        except SdlabError as exc:
            self.show_error(str(exc))
            return
        self.refresh()

    def _on_upload(self, change: dict) -> None:
        from PIL import Image

        files = change["new"]
        if files:
            self.load(Image.open(io.BytesIO(bytes(files[0]["content"]))))

    def _on_attack(self, _: Any = None) -> None:
        from ..watermark import ATTACKS

        a = ATTACKS[self.attack.value]
        low = a.low if np.isfinite(a.low) else -max(a.strengths) * 2
        high = a.high if np.isfinite(a.high) else max(max(a.strengths) * 2, 1.0)
        with self.strength.hold_trait_notifications():
            self.strength.min, self.strength.max = min(low, high - 1e-6), high
            self.strength.step = (high - low) / 100
            self.strength.value = a.identity if a.identity is not None else a.strengths[0]
        self.refresh()

    # -- work (all of it in sdlab.watermark) -------------------------------------------------
    def refresh(self) -> None:
        """Mark (optionally), attack and detect every preset; show the table and the attacked image."""
        from PIL import Image

        from ..watermark import attack, detect, embed

        if self.original is None:
            return
        try:
            image = self.original
            if self.mark.value in ("sd1", "sd2", "sdxl"):
                image = embed(image, preset=self.mark.value, upscale=self.upscale.value)
            attacked = attack(image, self.attack.value, float(self.strength.value), seed=0)
            self.results = detect(attacked, upscale=self.upscale.value)
            self.signature_result = self.signature.detect(attacked) if self.signature is not None else None
        except SdlabError as exc:
            self.results, self.signature_result = [], None
            self.table.value = ""
            self.show_error(str(exc))
            return
        buf = io.BytesIO()
        Image.fromarray(attacked).resize((256, round(256 * attacked.shape[0] / attacked.shape[1]))).save(buf, "PNG")
        self.preview.value = buf.getvalue()
        self.table.value = self._render()
        notes = sorted(set(self.notes) | {n for d in self.results for n in d.notes})
        self.show_info("; ".join(notes) if notes else f"{attacked.shape[1]}x{attacked.shape[0]} image")

    def _render(self) -> str:
        rows = "".join(
            _row(d.preset, d.bits_matched, d.bits_total, d.bit_accuracy, d.p_value, f"{d.confidence:.4f}", d.detected, html.escape(d.decision))
            for d in self.results
        )
        if self.signature_result is not None:
            d = self.signature_result
            rows += _row(self.signature.name, d["bits_matched"], d["bits_total"], d["bit_accuracy"], d["p_value"], "-",
                         d["detected"], f"p &le; {self.signature.fpr:g} (in the model's decoder)")
        fpr = self.results[0].fpr if self.results else 0.001
        head = (f"<tr><th>preset</th><th>bits matched</th><th>accuracy</th><th>p-value</th><th>confidence</th>"
                f"<th>detected at {fpr:.1%} FPR</th><th>decision (sdxl: published rule)</th></tr>")
        return f"<table>{head}{rows}</table>"


def _row(name: str, matched: int, total: int, accuracy: float, p_value: float, confidence: str, detected: bool, decision: str) -> str:
    """One HTML table row of the panel: a preset's result or the signature's."""
    return (f"<tr><td>{name}</td><td>{matched}/{total}</td><td>{accuracy:.1%}</td><td>{p_value:.2g}</td><td>{confidence}</td>"
            f"<td style='color:{'#087f23' if detected else '#555'}'><b>{'yes' if detected else 'no'}</b></td><td>{decision}</td></tr>")
