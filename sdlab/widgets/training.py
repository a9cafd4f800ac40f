"""What the shapes-world training panels share: a Run button, a start that reads the fields first,
and the result: the run's loss curve beside the new model's image for the sample prompt."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import ipywidgets as W

from ..errors import SdlabError
from ..progress import Callback
from .base import Panel, figure_png, png_bytes


class TrainingPanel(Panel):
    """Base of :class:`~sdlab.widgets.train.TrainPanel` and :class:`~sdlab.widgets.finetune.FinetunePanel`.

    A subclass builds its fields, lays them out with :meth:`layout`, and says in
    :meth:`work` what its run is; Cancel checkpoints, and running again resumes.
    """

    def __init__(self, prompt: str, run_label: str) -> None:
        super().__init__()
        self.exported = None
        self.prompt = W.Text(value=prompt, description="Sample", layout=W.Layout(width="100%"))
        self.run_button = W.Button(description=run_label, button_style="primary", icon="play")
        self.run_button.on_click(lambda _: self.start())
        self.loss_plot = W.Image(format="png")
        self.sample = W.Image(format="png", width=192)

    def layout(self, *fields: W.Widget) -> W.VBox:
        """The panel: ``fields``, the sample prompt, Run and progress, status, then the result row."""
        return W.VBox([*fields, self.prompt, W.HBox([self.run_button, self.progress_row()]), self.status,
                       W.HBox([self.loss_plot, self.sample])])

    def work(self) -> Callable[[Callback], Path]:
        """The run, from the fields as they are now (raises :class:`~sdlab.errors.SdlabError` for a bad field)."""
        raise NotImplementedError

    def _finished(self, exported: Path) -> None:
        """Show the result of a finished run."""
        raise NotImplementedError

    def start(self, background: bool = True) -> None:
        try:
            work = self.work()
        except SdlabError as exc:
            self.show_error(str(exc))
            return
        self.run(work, self._finished, background)

    def show_run(self, exported: Path, log, title: str, x: str = "step", ylabel: str | None = None) -> None:
        """``log``'s loss curve in ``loss_plot``, the exported model's image for the sample prompt (seed 0)
        in ``sample``; ``exported`` remembers the pipeline."""
        import matplotlib.pyplot as plt

        from ..generate import generate
        from ..models import load_pipeline
        from ..spec import GenerationSpec
        from ..trainlog import plot_loss

        self.exported = exported
        fig, ax = plt.subplots(figsize=(4.5, 3))
        plot_loss(log, ax=ax, x=x)
        if ylabel:
            ax.set_ylabel(ylabel)
        ax.set_title(title)
        self.loss_plot.value = figure_png(fig)
        image = generate(load_pipeline(str(exported), device="cpu"), GenerationSpec(self.prompt.value, seed=0)).images[0]
        self.sample.value = png_bytes(image.resize((192, 192)))
