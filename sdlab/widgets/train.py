"""``TrainPanel``: train a shapes-world model from scratch from a notebook, with its loss curves and a sample."""
from __future__ import annotations

from typing import Any

import ipywidgets as W

from .training import TrainingPanel


class TrainPanel(TrainingPanel):
    """The fields of ``sdlab mini train``; Train/Cancel (Cancel checkpoints, Train again resumes);
    then every stage's loss curve and the new model's image for ``prompt``.

    ``fixed`` sets :class:`~sdlab.mini.config.TrainConfig` fields the panel does not show.
    """

    def __init__(self, out_dir: str = "runs/train", prompt: str = "a large red circle at the top left on a white background",
                 **fixed: Any) -> None:
        super().__init__(prompt, "Train")
        from ..mini.config import TrainConfig

        default = TrainConfig(**fixed)
        self.fixed = fixed
        self.out_dir = W.Text(value=out_dir, description="Run dir", layout=W.Layout(width="60%"))
        self.seed = W.IntText(value=default.seed, description="Seed")
        self.n_images = W.BoundedIntText(value=default.n_images, min=1, max=10_000_000, description="Images")
        self.vae_steps = W.BoundedIntText(value=default.vae_steps, min=1, max=10_000_000, description="VAE steps")
        self.unet_steps = W.BoundedIntText(value=default.unet_steps, min=1, max=10_000_000, description="UNet steps")
        self.foreground_weight = W.FloatText(value=default.unet_foreground_weight, description="Shape weight")
        self.text_reads = W.Dropdown(options=("words", "end"), value=default.text_reads, description="Text reads")
        self.widget = self.layout(self.out_dir, W.HBox([self.seed, self.n_images]), W.HBox([self.vae_steps, self.unet_steps]),
                                  W.HBox([self.foreground_weight, self.text_reads]))

    def config(self):
        from ..mini.config import TrainConfig

        shown = {"seed": int(self.seed.value), "n_images": int(self.n_images.value), "vae_steps": int(self.vae_steps.value),
                 "unet_steps": int(self.unet_steps.value), "unet_foreground_weight": float(self.foreground_weight.value),
                 "text_reads": self.text_reads.value}
        return TrainConfig(**{**self.fixed, **shown})

    def work(self):
        from ..mini.train import train

        cfg, out_dir = self.config(), self.out_dir.value
        return lambda callback: train(out_dir, cfg, progress=False, callback=callback)

    def _finished(self, exported) -> None:
        from ..trainlog import read_log

        self.show_run(exported, read_log(self.out_dir.value), "Training from scratch", x="minutes",
                      ylabel="loss (per stage: MSE; text: cross-entropy)")
        self.show_info(f"saved {exported}; load it with load_pipeline({str(exported)!r}), measure it with: sdlab mini eval {exported}")
