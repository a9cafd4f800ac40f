"""``GenerationPanel``: every generation parameter on one panel, results as a gallery with their A1111 text."""
from __future__ import annotations

import html
import io
import random

import ipywidgets as W
import numpy as np
from PIL import Image

from ..models import model_info
from ..errors import SdlabError, ValidationError
from .adapters import AdapterSection
from .base import Panel, png_bytes


def _uploaded_image(upload: W.FileUpload) -> Image.Image | None:
    if not upload.value:
        return None
    item = upload.value[0] if isinstance(upload.value, (list, tuple)) else next(iter(upload.value.values()))
    return Image.open(io.BytesIO(bytes(item["content"]))).convert("RGB")


class GenerationPanel(Panel):
    """Prompt, negative prompt, seed (dice + lock), steps, CFG, sampler, size, batch;
    img2img / inpaint / outpaint tabs; Generate with progress and Cancel; a gallery."""

    def __init__(self, pipe=None, model: str = "shapes-world", controlnets: dict | None = None) -> None:
        super().__init__()
        from ..samplers import sampler_names
        from .control import ControlSection

        self._pipe, self.model = pipe, model
        self.results: list = []
        defaults = model_info(pipe).defaults if pipe is not None else {}
        wide = W.Layout(width="100%")
        self.prompt = W.Textarea(value="a large red circle at the top left on a white background", description="Prompt", layout=wide)
        self.negative = W.Textarea(value="", description="Negative", layout=wide, rows=1)
        self.adapters = AdapterSection(self.prompt, self.negative)  # LoRA / embedding pickers (set its folders, Scan)
        self.seed = W.IntText(value=1, description="Seed", layout=W.Layout(width="200px"))
        self.dice = W.Button(icon="dice", tooltip="random seed", layout=W.Layout(width="40px"))
        self.dice.on_click(lambda _: self.roll_seed())
        self.lock = W.ToggleButton(value=True, icon="lock", tooltip="locked: keep the seed; unlocked: a new seed every time", layout=W.Layout(width="40px"))
        self.steps = W.IntSlider(value=int(defaults.get("steps", 25)), min=1, max=150, description="Steps")
        self.cfg = W.FloatSlider(value=float(defaults.get("guidance", 5.0)), min=0.0, max=30.0, step=0.5, description="CFG")
        self.sampler = W.Dropdown(options=sampler_names(), value=defaults.get("sampler", "DPM++ 2M"), description="Sampler")
        self.width = W.IntText(value=int(defaults.get("width", 64)), description="Width", layout=W.Layout(width="160px"))
        self.height = W.IntText(value=int(defaults.get("height", 64)), description="Height", layout=W.Layout(width="160px"))
        self.batch = W.IntSlider(value=4, min=1, max=16, description="Batch")

        self.init_upload = W.FileUpload(accept="image/*", multiple=False, description="Init image")
        self.strength = W.FloatSlider(value=0.75, min=0.0, max=1.0, step=0.05, description="Strength")
        self.mask_upload = W.FileUpload(accept="image/*", multiple=False, description="Mask")
        self.mask_box = [W.IntSlider(value=v, min=0, max=512, description=d) for v, d in ((16, "Mask x"), (16, "Mask y"), (32, "Mask w"), (32, "Mask h"))]
        self.mask_blur = W.IntSlider(value=4, min=0, max=32, description="Mask blur")
        self.margins = [W.IntSlider(value=v, min=0, max=256, step=8, description=d) for v, d in ((16, "Left"), (0, "Top"), (16, "Right"), (0, "Bottom"))]
        self.mode = W.Tab(children=[
            W.HTML("Text to image: the prompt alone."),
            W.VBox([self.init_upload, self.strength]),
            W.VBox([W.HTML("Upload a mask (white = repaint) or draw a rectangle:"), self.mask_upload, *self.mask_box, self.mask_blur, self.strength]),
            W.VBox([W.HTML("Extend the init image by these margins (pixels):"), *self.margins, self.mask_blur]),
        ])
        for i, title in enumerate(("txt2img", "img2img", "inpaint", "outpaint")):
            self.mode.set_title(i, title)

        self.control = ControlSection(controlnets, (int(self.width.value), int(self.height.value)))  # ControlNet units

        self.generate_button = W.Button(description="Generate", button_style="primary", icon="play")
        self.generate_button.on_click(lambda _: self.generate())
        self.gallery = W.HBox(layout=W.Layout(flex_flow="row wrap"))
        self.gallery.add_class("sdlab-gallery")  # the results, apart from the control previews above them
        self.clipboard = W.Textarea(description="A1111 text", layout=wide, rows=3)
        self.widget = W.VBox([
            self.prompt, self.negative, self.adapters.widget,
            W.HBox([self.seed, self.dice, self.lock]),
            W.HBox([self.steps, self.cfg]), W.HBox([self.sampler, self.batch]), W.HBox([self.width, self.height]),
            self.mode, self.control.widget, W.HBox([self.generate_button, self.progress_row()]), self.status, self.gallery, self.clipboard,
        ])

    # -- model -----------------------------------------------------------------------
    @property
    def pipe(self):
        if self._pipe is None:
            from ..models import load_pipeline

            self._pipe = load_pipeline(self.model)
        return self._pipe

    # -- reading the controls ------------------------------------------------------
    def roll_seed(self) -> None:
        self.seed.value = random.randrange(2**31)

    def _rectangle_mask(self, size: tuple[int, int]) -> Image.Image:
        x, y, w, h = (s.value for s in self.mask_box)
        mask = np.zeros((size[1], size[0]), np.uint8)
        mask[y : y + h, x : x + w] = 255
        return Image.fromarray(mask, "L")

    def spec(self):
        """The :class:`GenerationSpec` the controls describe (raises ValidationError on bad values)."""
        from ..spec import GenerationSpec

        mode = self.mode.selected_index or 0
        fields = dict(
            prompt=self.prompt.value, negative_prompt=self.negative.value, seed=int(self.seed.value),
            steps=int(self.steps.value), guidance=float(self.cfg.value), sampler=self.sampler.value,
            width=int(self.width.value), height=int(self.height.value), batch_size=int(self.batch.value),
        )
        if mode:
            init = _uploaded_image(self.init_upload)
            if init is None:
                raise ValidationError("init image: upload one for img2img, inpaint or outpaint")
            fields.update(init_image=init, strength=float(self.strength.value), width=None, height=None)
            if mode == 2:
                fields["mask"] = _uploaded_image(self.mask_upload) or self._rectangle_mask(init.size)
                fields["mask_blur"] = int(self.mask_blur.value)
            if mode == 3:
                fields.update(outpaint=tuple(m.value for m in self.margins), mask_blur=int(self.mask_blur.value))
        return GenerationSpec(**fields, control=self.control.units(), guess_mode=self.control.guess_mode)

    # -- actions ---------------------------------------------------------------------
    def generate(self, background: bool = True) -> None:
        from ..cost import check_pipeline
        from ..generate import generate

        if not self.lock.value:
            self.roll_seed()
        try:
            spec, folders = self.spec(), self.adapters.folders()
            check_pipeline(self.pipe, spec)  # a size or batch this machine cannot afford: refused, not a frozen kernel
        except SdlabError as exc:  # a bad value, or a ControlNet file that is missing or a pickle without consent
            self.show_error(str(exc))
            return
        self.run(lambda callback: generate(self.pipe, spec, callback=callback, adapters=folders), self._show, background)

    def _show(self, result) -> None:
        from ..metadata import format_parameters

        self.results.append(result)
        self.control.show_maps(result.control_maps)
        tiles = []
        for image, spec in zip(result.images, result.specs):
            text = format_parameters(spec)
            copy = W.Button(description="Copy A1111 text", icon="copy", layout=W.Layout(width="160px"))
            copy.on_click(lambda _, t=text: setattr(self.clipboard, "value", t))
            caption = W.HTML(f"<pre style='font-size:10px;white-space:pre-wrap;width:220px'>{html.escape(text)}</pre>")
            view = W.Image(value=png_bytes(image.resize((192, 192 * image.height // image.width), Image.NEAREST)), format="png")
            tiles.append(W.VBox([view, caption, copy]))
        self.gallery.children = tuple(tiles) + tuple(self.gallery.children)
        self.show_info(f"{len(result.images)} image(s) in {result.timings['total']:.2f} s")
