"""``FinetunePanel``: continue training a shapes-world UNet from a notebook, with its loss curve and a sample."""
from __future__ import annotations

import ipywidgets as W

from ..errors import SdlabError
from .base import Panel
from .base import figure_png, png_bytes


class FinetunePanel(Panel):
    """The fields of ``sdlab mini finetune``; Run/Cancel (Cancel checkpoints, Run again resumes);
    then the run's loss curve and the new model's image for ``prompt``."""

    def __init__(self, model: str = "shapes-world", out_dir: str = "runs/finetune",
                 prompt: str = "a small green cross at the top right on a white background") -> None:
        super().__init__()
        from ..mini.finetune import FinetuneConfig

        default = FinetuneConfig()
        self.exported = None
        self.model = W.Text(value=str(model), description="Model", layout=W.Layout(width="60%"))
        self.out_dir = W.Text(value=out_dir, description="Run dir", layout=W.Layout(width="60%"))
        self.steps = W.BoundedIntText(value=default.steps, min=1, max=1_000_000, description="Steps")
        self.lr = W.FloatText(value=default.lr, description="Peak lr")
        self.foreground_weight = W.FloatText(value=12.0, description="Shape weight")
        self.seed = W.IntText(value=default.seed, description="Seed")
        self.prompt = W.Text(value=prompt, description="Sample", layout=W.Layout(width="100%"))
        self.run_button = W.Button(description="Fine-tune", button_style="primary", icon="play")
        self.run_button.on_click(lambda _: self.start())
        self.loss_plot = W.Image(format="png")
        self.sample = W.Image(format="png", width=192)
        self.widget = W.VBox([
            self.model, self.out_dir, W.HBox([self.steps, self.lr]), W.HBox([self.foreground_weight, self.seed]), self.prompt,
            W.HBox([self.run_button, self.progress_row()]), self.status, W.HBox([self.loss_plot, self.sample]),
        ])

    def config(self):
        from ..mini.finetune import FinetuneConfig

        return FinetuneConfig(steps=int(self.steps.value), lr=float(self.lr.value),
                              foreground_weight=float(self.foreground_weight.value), seed=int(self.seed.value))

    def start(self, background: bool = True) -> None:
        from ..mini.finetune import finetune, model_directory

        try:
            cfg = self.config()
        except SdlabError as exc:
            self.show_error(str(exc))
            return
        model, out_dir = model_directory(self.model.value), self.out_dir.value
        self.run(lambda callback: finetune(model, out_dir, cfg, progress=False, callback=callback), self._finished, background)

    def _finished(self, exported) -> None:
        from ..mini.log import read_log

        show_run(self, exported, read_log(self.out_dir.value, stage="unet"), "UNet fine-tune")
        self.show_info(f"saved {exported}; load it with load_pipeline({str(exported)!r})")


def show_run(panel: Panel, exported, log, title: str, x: str = "step", ylabel: str | None = None) -> None:
    """A training panel's result: ``log``'s loss curve in ``panel.loss_plot``, the exported model's image
    for ``panel.prompt`` (seed 0) in ``panel.sample``; ``panel.exported`` remembers the pipeline."""
    import matplotlib.pyplot as plt

    from ..generate import generate
    from ..mini.log import plot_loss
    from ..models import load_pipeline
    from ..spec import GenerationSpec

    panel.exported = exported
    fig, ax = plt.subplots(figsize=(4.5, 3))
    plot_loss(log, ax=ax, x=x)
    if ylabel:
        ax.set_ylabel(ylabel)
    ax.set_title(title)
    panel.loss_plot.value = figure_png(fig)
    image = generate(load_pipeline(str(exported), device="cpu"), GenerationSpec(panel.prompt.value, seed=0)).images[0]
    panel.sample.value = png_bytes(image.resize((192, 192)))
