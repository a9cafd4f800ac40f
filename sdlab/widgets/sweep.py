"""``SweepPanel``: axes from drop-downs, run/cancel, the grid filling in as cells finish, a metric plot."""
from __future__ import annotations

import ipywidgets as W

from ..models import model_info
from ..errors import SdlabError
from .adapters import AdapterSection
from .base import Panel
from .base import figure_png, png_bytes

AXIS_NAMES = ["(none)", "seed", "cfg", "steps", "sampler", "prompt", "negative", "size"]


class SweepPanel(Panel):
    def __init__(self, pipe, out_dir: str = "outputs/sweep") -> None:
        super().__init__()
        self.pipe = pipe
        self.table = None
        self.prompt = W.Text(value="a small red circle in the center on a white background", description="Prompt", layout=W.Layout(width="100%"))
        self.adapters = AdapterSection(self.prompt)  # LoRA / embedding folders: a prompt axis can sweep <lora:NAME:W>
        self.axes = []
        for label, name, values in (("X", "seed", "1-4"), ("Y", "cfg", "1,3,7.5"), ("Z", "(none)", "")):
            self.axes.append((W.Dropdown(options=AXIS_NAMES, value=name, description=label, layout=W.Layout(width="200px")),
                              W.Text(value=values, placeholder="values, e.g. 1-8 or 1,3,7.5", layout=W.Layout(width="300px"))))
        self.steps = W.IntSlider(value=int(model_info(pipe).defaults.get("steps", 25)), min=1, max=100, description="Steps")
        self.out_dir = W.Text(value=out_dir, description="Store")
        self.new = W.Checkbox(value=False, description="start again (--new)")
        self.run_button = W.Button(description="Run sweep", button_style="primary", icon="play")
        self.run_button.on_click(lambda _: self.start())
        self.grid_view = W.Image(format="png")
        from ..sweep import IMAGE_METRICS

        self.metric = W.Dropdown(options=["all_ok", *IMAGE_METRICS], value="saturation", description="Metric")
        self.plot = W.Image(format="png")  # an image, not an Output: the plot is drawn from the worker thread
        self.metric.observe(lambda _: self.draw_plot(), names="value")
        self.widget = W.VBox([
            self.prompt, self.adapters.widget, *[W.HBox(list(pair)) for pair in self.axes], W.HBox([self.steps, self.out_dir, self.new]),
            W.HBox([self.run_button, self.progress_row()]), self.status, W.HBox([self.grid_view, W.VBox([self.metric, self.plot])]),
        ])

    def axis_list(self):
        from ..sweep import Axis

        return [Axis.parse(f"{name.value}={values.value}") for name, values in self.axes if name.value != "(none)"]

    def start(self, background: bool = True) -> None:
        import math

        from ..cost import check_budget, check_pipeline
        from ..spec import GenerationSpec
        from ..mini.metrics import sweep_metrics
        from ..sweep import run_sweep

        try:
            axes, folders = self.axis_list(), self.adapters.folders()
            base = GenerationSpec(self.prompt.value, seed=1, steps=int(self.steps.value))
            one, cells = check_pipeline(self.pipe, base), math.prod(len(a.values) for a in axes)
            check_budget("cells", f"{cells} cells", one.peak_bytes, one.seconds * cells if one.seconds is not None else None, one.device)
        except SdlabError as exc:
            self.show_error(str(exc))
            return

        def on_progress(done: int, total: int) -> None:
            self.callback(done, total)
            self.refresh_grid(axes)

        def work(callback):
            return run_sweep(self.pipe, base, axes, self.out_dir.value, new=self.new.value, progress=False, metrics=sweep_metrics(self.pipe),
                             callback=lambda d, t: on_progress(d, t), adapters=folders)

        self.run(work, self._finished, background)

    def refresh_grid(self, axes) -> None:
        """Show the cells finished so far (a missing cell leaves the grid as it was)."""
        from ..sweep import ResultStore, grid

        table = ResultStore(self.out_dir.value).rows()
        if table.empty:
            return
        try:
            image = grid(table, self.out_dir.value, axes[0].column, axes[1].column if len(axes) > 1 else None,
                         z_value=axes[2].values[0] if len(axes) > 2 else None, z=axes[2].column if len(axes) > 2 else None, cell=64)
        except (IndexError, KeyError):  # some cells still missing
            return
        self.grid_view.value = png_bytes(image)

    def _finished(self, table) -> None:
        from ..sweep import IMAGE_METRICS

        self.table = table
        self.metric.options = [c for c in table.columns if c.endswith("_ok") or c in IMAGE_METRICS] or ["saturation"]
        self.refresh_grid(self.axis_list())
        self.draw_plot()
        self.show_info(f"{len(table)} images in {self.out_dir.value}")

    def draw_plot(self) -> None:
        import matplotlib.pyplot as plt

        from ..sweep import plot_metric

        if self.table is None or self.metric.value not in self.table:
            return
        axes = self.axis_list()
        fig, ax = plt.subplots(figsize=(4.5, 3))
        x = axes[1].column if len(axes) > 1 and axes[0].name == "seed" else axes[0].column
        plot_metric(self.table, self.metric.value, x, ax=ax)
        self.plot.value = figure_png(fig)
