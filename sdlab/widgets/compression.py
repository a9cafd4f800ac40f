"""CompressionPanel: every codec side by side at one byte budget, metrics under each, zoomable crops.

Thin: the work is :func:`sdlab.compression.rd_curves` (one image, one budget,
``keep_images=True``); this panel only picks inputs and draws results.
"""
from __future__ import annotations

import html
from typing import Any, Sequence

import ipywidgets as W
import numpy as np
from PIL import Image

from ..compression.rd import CODEC_NAMES, DEFAULT_CODECS
from ..validation import POSITIVE, Check, validate_params
from .base import Panel, png_bytes

CODEC_CHOICES = ("vae", "vae-levels", "jpeg", "jpeg444", "webp", "avif", "jxl")  # CODEC_NAMES, latent first
VIEW_PX = 224  # each column's crop is shown at this size (nearest-neighbour zoom)


class CompressionPanel(Panel):
    """Pick an image and a byte budget; see each codec's best fit at that budget.

    ``images``: name -> RGB array (default: scikit-image photos at 256 px and
    four shapes-world scenes). ``vae``: an ``AutoencoderKL`` for the latent
    codec, else ``model`` is loaded on first use.
    """

    _parameter_constraints = {
        "images": [Check(lambda d: len(d) > 0 and all(isinstance(k, str) for k in d), "a non-empty dict name -> image"),
                   None],
        "codecs": [Check(lambda cs: not isinstance(cs, str) and set(cs) <= set(CODEC_NAMES),
                         "a list of codec names among " + ", ".join(CODEC_CHOICES))],
        "bpp": [POSITIVE],
    }

    def __init__(self, images: dict[str, np.ndarray] | None = None, codecs: Sequence[str] = DEFAULT_CODECS,
                 vae: Any = None, model: str = "shapes-world", bpp: float = 0.15) -> None:
        validate_params({"images": images, "codecs": codecs, "bpp": bpp}, self._parameter_constraints)
        super().__init__()
        if images is None:
            from ..images import sample_photos
            from ..mini.world import make_dataset

            shapes = make_dataset(4, seed=1)[0]  # seed 1: scenes the shipped model was not trained on
            images = {**sample_photos(256), **{f"shapes{i:02d}": im for i, im in enumerate(shapes)}}
        from ..images import load_rgb

        self.images = {k: load_rgb(v) for k, v in images.items()}
        self.vae, self.model, self.frame = vae, model, None
        self.image_picker = W.Dropdown(options=list(self.images), description="image")
        self.budget = W.IntSlider(description="bytes", continuous_update=False, layout=W.Layout(width="420px"))
        self.codec_picker = W.SelectMultiple(options=list(CODEC_CHOICES),
                                             value=tuple(codecs), description="codecs", rows=4)
        self.crop_size = W.Dropdown(options=[16, 32, 64, 128, 256], value=64, description="crop px")
        self.crop_x = W.FloatSlider(0.5, min=0, max=1, step=0.01, description="crop x", continuous_update=False)
        self.crop_y = W.FloatSlider(0.5, min=0, max=1, step=0.01, description="crop y", continuous_update=False)
        self.go = W.Button(description="Compare", icon="play", button_style="primary")
        self.columns = W.HBox([])
        self._bpp = bpp
        self.image_picker.observe(lambda _: self._reset_budget(), names="value")
        for w in (self.crop_size, self.crop_x, self.crop_y):
            w.observe(lambda _: self.render(), names="value")
        self.go.on_click(lambda _: self.compare())
        self._reset_budget()
        self.widget = W.VBox([
            W.HBox([self.image_picker, self.budget, self.go]),
            W.HBox([self.codec_picker, W.VBox([self.crop_size, self.crop_x, self.crop_y])]),
            self.progress_row(), self.status, self.columns,
        ])

    # -- inputs ------------------------------------------------------------------------------
    @property
    def image(self) -> np.ndarray:
        return self.images[self.image_picker.value]

    def _reset_budget(self) -> None:
        h, w = self.image.shape[:2]
        pixels = h * w
        self.budget.min = 1  # widen first: setting min above the old max would be refused
        self.budget.max = max(64, pixels // 8)  # 1 bpp
        self.budget.min = max(16, pixels // 400)  # 0.02 bpp
        self.budget.step = max(1, pixels // 8000)
        self.budget.value = int(np.clip(self._bpp * pixels / 8, self.budget.min, self.budget.max))

    # -- work ----------------------------------------------------------------------------------
    def compare(self, background: bool = True) -> None:
        """Encode the image with every chosen codec at the budget (in a thread), then render."""
        from ..compression import get_codec, rd_curves

        name, image, budget, names = self.image_picker.value, self.image, int(self.budget.value), list(self.codec_picker.value)

        def work(callback):
            codecs = {}
            for n in names:
                if n.startswith("vae") and self.vae is None:
                    from ..compression.latent import load_vae

                    self.vae = load_vae(self.model)
                codecs[n] = get_codec(n, self.vae)
            return rd_curves({name: image}, codecs, [budget], keep_images=True, callback=callback)

        def done(frame):
            self.frame = frame
            self.render()

        self.run(work, done, background=background)

    # -- drawing -------------------------------------------------------------------------------
    def _crop(self, image: np.ndarray) -> np.ndarray:
        h, w = image.shape[:2]
        s = min(self.crop_size.value, h, w)
        top = int(round(self.crop_y.value * (h - s)))
        left = int(round(self.crop_x.value * (w - s)))
        crop = image[top : top + s, left : left + s]
        k = max(1, VIEW_PX // s)
        return np.repeat(np.repeat(crop, k, axis=0), k, axis=1)

    def render(self) -> None:
        """Redraw the columns from the last comparison (crop changes need no re-encoding)."""
        if self.frame is None or self.frame["image"].iloc[0] != self.image_picker.value:
            return
        cols = [self._column("original", self.image, "")]
        for row in self.frame.itertuples(index=False):
            if row.status != "ok":
                cols.append(self._column(row.codec, None, html.escape(row.status)))
                continue
            ms = "" if row.ms_ssim != row.ms_ssim else f"<br>MS-SSIM {row.ms_ssim:.3f}"
            text = (f"q{int(row.quality)} · {int(row.bytes)} B · {row.bpp:.3f} bpp<br>"
                    f"PSNR {row.psnr:.2f} dB<br>SSIM {row.ssim:.3f}{ms}")
            cols.append(self._column(row.codec, row.decoded, text))
        self.columns.children = cols

    def _column(self, title: str, image: np.ndarray | None, text: str) -> W.VBox:
        head = W.HTML(f"<b>{html.escape(title)}</b>")
        body = (W.Image(value=png_bytes(Image.fromarray(self._crop(image))), format="png", layout=W.Layout(width=f"{VIEW_PX}px"))
                if image is not None else W.HTML(f"<div style='width:{VIEW_PX}px'>—</div>"))
        return W.VBox([head, body, W.HTML(f"<small>{text}</small>")])
