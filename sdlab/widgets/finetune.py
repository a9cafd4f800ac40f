"""``FinetunePanel``: continue training a shapes-world UNet from a notebook, with its loss curve and a sample."""
from __future__ import annotations

import ipywidgets as W

from .training import TrainingPanel


class FinetunePanel(TrainingPanel):
    """The fields of ``sdlab mini finetune``; Run/Cancel (Cancel checkpoints, Run again resumes);
    then the run's loss curve and the new model's image for ``prompt``."""

    def __init__(self, model: str = "shapes-world", out_dir: str = "runs/finetune",
                 prompt: str = "a small green cross at the top right on a white background") -> None:
        super().__init__(prompt, "Fine-tune")
        from ..mini.finetune import FinetuneConfig

        default = FinetuneConfig()
        self.model = W.Text(value=str(model), description="Model", layout=W.Layout(width="60%"))
        self.out_dir = W.Text(value=out_dir, description="Run dir", layout=W.Layout(width="60%"))
        self.steps = W.BoundedIntText(value=default.steps, min=1, max=1_000_000, description="Steps")
        self.lr = W.FloatText(value=default.lr, description="Peak lr")
        self.foreground_weight = W.FloatText(value=12.0, description="Shape weight")
        self.seed = W.IntText(value=default.seed, description="Seed")
        self.widget = self.layout(self.model, self.out_dir, W.HBox([self.steps, self.lr]), W.HBox([self.foreground_weight, self.seed]))

    def config(self):
        from ..mini.finetune import FinetuneConfig

        return FinetuneConfig(steps=int(self.steps.value), lr=float(self.lr.value),
                              foreground_weight=float(self.foreground_weight.value), seed=int(self.seed.value))

    def work(self):
        from ..mini.finetune import finetune, model_directory

        cfg = self.config()
        model, out_dir = model_directory(self.model.value), self.out_dir.value
        return lambda callback: finetune(model, out_dir, cfg, progress=False, callback=callback)

    def _finished(self, exported) -> None:
        from ..trainlog import read_log

        self.show_run(exported, read_log(self.out_dir.value, stage="unet"), "UNet fine-tune")
        self.show_info(f"saved {exported}; load it with load_pipeline({str(exported)!r})")
