"""``SignatureTrainPanel``: train a Stable Signature from a notebook, then see its loss curves, figures and a marked pair."""
from __future__ import annotations

from typing import Any

import ipywidgets as W
import numpy as np
from PIL import Image

from ..errors import SdlabError
from .base import Panel
from .base import figure_png, png_bytes


class SignatureTrainPanel(Panel):
    """The main fields of ``sdlab watermark signature train`` (Extractor: reuse a trained one, stage 2 only);
    Run/Cancel (Cancel checkpoints, Run again resumes);
    then both stages' loss curves, :func:`~sdlab.watermark.signature.measure`'s figures and one clean/marked pair.

    ``fixed`` sets :class:`~sdlab.watermark.signature.SignatureConfig` fields the panel does not show;
    ``dataset(n, seed)`` gives the model's images to train on (default: the shapes world's).
    """

    def __init__(self, model: str = "shapes-world", out_dir: str = "runs/signature", dataset: Any = None, **fixed: Any) -> None:
        super().__init__()
        from ..watermark.signature import SignatureConfig

        default = SignatureConfig(**fixed)
        self.fixed, self.scheme, self.figures = fixed, None, None
        self.dataset = dataset or shapes_world_images
        self.model = W.Text(value=str(model), description="Model", layout=W.Layout(width="60%"))
        self.out_dir = W.Text(value=out_dir, description="Run dir", layout=W.Layout(width="60%"))
        self.extractor_steps = W.BoundedIntText(value=default.extractor_steps, min=0, max=10_000_000, description="Stage 1")
        self.steps = W.BoundedIntText(value=default.steps, min=1, max=10_000_000, description="Stage 2")
        self.n_bits = W.BoundedIntText(value=default.n_bits, min=8, max=256, description="Key bits")
        self.key_seed = W.IntText(value=default.key_seed, description="Key seed")
        self.image_weight = W.FloatText(value=default.image_weight, description="Image weight")
        self.measure_images = W.BoundedIntText(value=16, min=1, max=10_000, description="Measure")
        self.extractor_from = W.Text(value="", description="Extractor", placeholder="a signature dir: skip stage 1",
                                     layout=W.Layout(width="60%"))
        self.run_button = W.Button(description="Train", button_style="primary", icon="play")
        self.run_button.on_click(lambda _: self.start())
        self.loss_plot = W.Image(format="png")
        self.pair = W.Image(format="png", width=384)
        self.table = W.HTML()
        self.widget = W.VBox([
            self.model, self.out_dir, self.extractor_from, W.HBox([self.extractor_steps, self.steps]), W.HBox([self.n_bits, self.key_seed]),
            W.HBox([self.image_weight, self.measure_images]), W.HBox([self.run_button, self.progress_row()]),
            self.status, W.HBox([self.loss_plot, W.VBox([self.pair, self.table])]),
        ])

    def config(self):
        from ..watermark.signature import SignatureConfig

        shown = {"extractor_steps": int(self.extractor_steps.value), "steps": int(self.steps.value),
                 "n_bits": int(self.n_bits.value), "key_seed": int(self.key_seed.value),
                 "image_weight": float(self.image_weight.value)}
        return SignatureConfig(**{**self.fixed, **shown})

    def start(self, background: bool = True) -> None:
        from ..models import load_pipeline
        from ..watermark.signature import train

        try:
            cfg = self.config()
            pipe = load_pipeline(self.model.value, device="cpu")
        except SdlabError as exc:
            self.show_error(str(exc))
            return
        out, source = self.out_dir.value, self.extractor_from.value.strip() or None
        self.run(lambda callback: (pipe, train(pipe, out, cfg, progress=False, callback=callback, extractor_from=source,
                                               dataset=self.dataset)),
                 self._finished, background)

    def _finished(self, result) -> None:
        import matplotlib.pyplot as plt
        import pandas as pd

        from ..trainlog import plot_loss, read_log
        from ..watermark.signature import StableSignature, measure

        pipe, out = result
        self.scheme = StableSignature(pipe, out)
        self.figures = measure(self.scheme, n_images=int(self.measure_images.value),
                               n_photos=int(self.measure_images.value), progress=False)
        fig, ax = plt.subplots(figsize=(4.5, 3))
        plot_loss(read_log(out), ax=ax)
        ax.set_ylabel("bits loss (BCE, log scale)")
        ax.set_title("Stable Signature training")
        self.loss_plot.value = figure_png(fig)
        clean, marked = self.scheme.pair(0, "0")
        self.pair.value = png_bytes(Image.fromarray(np.concatenate([clean, marked], axis=1)))
        self.table.value = pd.Series(self.figures, name="measured").to_frame().to_html()
        self.show_info(f"saved {out}; use it with StableSignature(pipe, {str(out)!r}) (left: original decoder, right: marked)")


def shapes_world_images(n: int, seed: int) -> np.ndarray:
    """``n`` shapes-world images drawn from ``seed``: what the shipped signature trains on."""
    from ..mini import world

    return world.make_dataset(n, seed=seed)[0]
