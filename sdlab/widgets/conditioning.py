"""``ConditioningPanel``: train a shapes-world ControlNet (progress, Cancel, resume) and measure its control fidelity.

Thin: the work is :func:`sdlab.conditioning.train.train_controlnet` and :func:`sdlab.conditioning.measure.fidelity`;
the shapes world's data (images, captions, maps, held-out outlines, the region finder) comes from
:mod:`sdlab.mini.control_data` and is handed to the lab as arrays and a callable. Generating with a control map
drawn from one image is the generation panel's control section.
"""
from __future__ import annotations

from pathlib import Path

import ipywidgets as W

from ..errors import SdlabError
from .base import Panel, figure_png, png_bytes

VIEW = 96  # pixels per image on screen


class ConditioningPanel(Panel):
    """Train: condition, run directory, steps, learning rate, images, seed; Train/Cancel (running again resumes).
    Measure: IoU of held-out outlines' regions and the generated shapes against the control scale."""

    def __init__(self, pipe, controlnet: str = "shapes-world-edges", out_dir: str = "runs/controlnet/panel", condition: str = "edges",
                 cases: int = 4, scales: str = "0,0.5,1,1.5") -> None:
        super().__init__()
        from ..conditioning.train import ControlNetConfig
        from ..schedules import LR_SCHEDULERS

        default = ControlNetConfig()
        self.pipe, self.controlnet_model, self.table = pipe, None, None
        self.condition = W.Dropdown(options=["edges", "mask"], value=condition, description="Condition")
        self.out_dir = W.Text(value=out_dir, description="Run dir", layout=W.Layout(width="60%"))
        self.steps = W.BoundedIntText(value=default.steps, min=1, max=1_000_000, description="Steps")
        self.lr = W.FloatText(value=default.lr, description="lr")
        self.lr_scheduler = W.Dropdown(options=list(LR_SCHEDULERS), value=default.lr_scheduler, description="lr after warm-up")
        self.images = W.BoundedIntText(value=8000, min=1, max=1_000_000, description="Images")
        self.seed = W.IntText(value=default.seed, description="Seed")
        self.focus_weight = W.FloatText(value=12.0, description="Shape weight", tooltip="extra loss weight on the shape's latent cells (0: plain loss)")
        self.guided_weight = W.FloatText(value=default.guided_weight, description="CFG loss",
                                         tooltip="weight of a loss on the CFG-guided prediction (0: off; a step costs about twice as much)")
        self.guided_cfg = W.FloatText(value=default.guided_cfg, description="at CFG", tooltip="the CFG scale of that loss")
        self.timestep_range = W.Text(value="", description="Timesteps", placeholder="all; or lo,hi",
                                     tooltip="draw training timesteps from [lo, hi) only (low ones refine outlines, high ones place the layout)")
        self.init = W.Text(value="", description="Start from", placeholder="zero convolutions; or a ControlNet name or directory",
                           layout=W.Layout(width="60%"), tooltip="continue an existing ControlNet instead of a fresh copy")
        self.train_button = W.Button(description="Train", button_style="primary", icon="play")
        self.train_button.on_click(lambda _: self.start_training())
        self.controlnet = W.Text(value=controlnet, description="ControlNet", layout=W.Layout(width="60%"),
                                 tooltip="a registered name (shapes-world-edges, shapes-world-mask) or a directory")
        self.cases = W.BoundedIntText(value=cases, min=1, max=1000, description="Outlines")
        self.scales = W.Text(value=scales, description="Scales")
        self.measure_button = W.Button(description="Measure", icon="line-chart")
        self.measure_button.on_click(lambda _: self.start_measure())
        self.plot = W.Image(format="png")
        self.samples = W.HBox([])
        self.widget = W.VBox([
            W.HTML("<b>Train a ControlNet</b> (the shapes world's own captions; the map carries the layout)"),
            W.HBox([self.condition, self.out_dir]), W.HBox([self.steps, self.lr, self.lr_scheduler]), W.HBox([self.images, self.seed]), self.focus_weight,
            W.HBox([self.guided_weight, self.guided_cfg]), W.HBox([self.timestep_range, self.init]), self.train_button,
            W.HTML("<b>Measure control fidelity</b> (IoU of the outline's region and the generated shape)"),
            self.controlnet, W.HBox([self.cases, self.scales, self.measure_button]),
            self.progress_row(), self.status, self.plot, self.samples,
        ])

    # -- training ----------------------------------------------------------------------
    def config(self):
        from ..conditioning.train import ControlNetConfig

        from ..validation import invalid

        text = self.timestep_range.value.strip()
        try:
            bounds = tuple(int(v) for v in text.split(",")) if text else None
        except ValueError:
            raise invalid("timestep_range", text, "empty (all timesteps) or lo,hi with 0 <= lo < hi, e.g. 0,300") from None
        return ControlNetConfig(steps=int(self.steps.value), lr=float(self.lr.value), lr_scheduler=self.lr_scheduler.value, seed=int(self.seed.value),
                                focus_weight=float(self.focus_weight.value), guided_weight=float(self.guided_weight.value),
                                guided_cfg=float(self.guided_cfg.value), timestep_range=bounds)

    def start_training(self, background: bool = True) -> None:
        try:
            cfg = self.config()
        except SdlabError as exc:
            self.show_error(str(exc))
            return
        condition, out_dir, n, init = self.condition.value, self.out_dir.value, int(self.images.value), self.init.value.strip()

        def work(callback):
            from ..conditioning.train import train_controlnet
            from ..control.nets import load_controlnet
            from ..mini.control_data import training_data

            data = training_data(n, condition, seed=cfg.seed)
            return train_controlnet(self.pipe, data["images"], data["captions"], data["maps"], out_dir, cfg, callback=callback,
                                    progress=False, focus=data["masks"], init=load_controlnet(init) if init else None, describe={"condition": condition, "dataset": "shapes world", "data_seed": cfg.seed})

        self.run(work, self._trained, background)

    def _trained(self, exported: Path) -> None:
        import matplotlib.pyplot as plt

        from ..trainlog import plot_loss, read_log

        fig, ax = plt.subplots(figsize=(4.5, 3))
        plot_loss(read_log(self.out_dir.value, stage="controlnet"), ax=ax)
        ax.set_title("ControlNet training loss")
        self.plot.value = figure_png(fig)
        self.controlnet.value = str(exported)
        self.show_info(f"saved {exported}; Measure uses it now")

    # -- measuring ---------------------------------------------------------------------
    def parsed_scales(self) -> list[float]:
        from ..validation import invalid

        try:
            scales = [float(v) for v in self.scales.value.split(",") if v.strip()]
        except ValueError:
            raise invalid("scales", self.scales.value, "comma-separated numbers in [0, 2], e.g. 0,0.5,1") from None
        if not scales or not all(0 <= s <= 2 for s in scales):
            raise invalid("scales", self.scales.value, "comma-separated numbers in [0, 2], e.g. 0,0.5,1")
        return scales

    def start_measure(self, background: bool = True) -> None:
        try:
            scales = self.parsed_scales()
        except SdlabError as exc:
            self.show_error(str(exc))
            return
        name, n, condition = self.controlnet.value.strip(), int(self.cases.value), self.condition.value

        def work(callback):
            from ..conditioning.measure import fidelity
            from ..control.nets import load_controlnet
            from ..mini.control_data import heldout_cases, shape_region

            from ..conditioning.measure import generate_one

            cases, net = heldout_cases(n, condition), load_controlnet(name)
            table = fidelity(self.pipe, net, cases, shape_region, scales=scales, control_type=condition, callback=callback)
            first = cases["table"].iloc[0]
            images = [generate_one(self.pipe, first.prompt, int(first.seed), net, cases["maps"][0], s, control_type=condition) for s in scales]
            return cases, table, list(zip(scales, images))

        self.run(work, self._measured, background)

    def _measured(self, result) -> None:
        import matplotlib.pyplot as plt
        from PIL import Image

        from ..conditioning.measure import plot_curve, summarize

        cases, self.table, images = result
        fig, ax = plt.subplots(figsize=(4.5, 3))
        plot_curve(self.table, "scale", xlabel="control scale (ControlNet weight)", ax=ax,
                   title=f"{len(cases['table'])} held-out outlines, mean ± s.e.")
        self.plot.value = figure_png(fig)
        summary = summarize(self.table)
        views = [("control map", cases["maps"][0])] + [(f"scale {s:g}", image) for s, image in images]
        self.samples.children = [W.VBox([W.HTML(title), W.Image(value=png_bytes(Image.fromarray(a).resize((VIEW, VIEW), Image.NEAREST)), format="png")])
                                 for title, a in views]
        self.show_info("mean IoU per scale: " + ", ".join(f"{r.scale:g}: {r.mean_iou:.3f}" for r in summary.itertuples()))
