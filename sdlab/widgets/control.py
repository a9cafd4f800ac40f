"""``ControlSection``: the ControlNet units of the generation panel (A1111's ControlNet accordion), thin.

Each unit row holds an image upload, the map type and preprocessor, the ControlNet (a registered
name, a directory, a single file, a file of the section's folder -- A1111's ``models/ControlNet`` --
by its name, or a model handed in by name through ``models``), the weight and the step window; "Preview map" draws the map as the generation will (``sdlab.control.apply.condition_map``).
The rows become :class:`~sdlab.control.unit.ControlUnit` values; the core does the rest.
"""
from __future__ import annotations

import io

import ipywidgets as W
from PIL import Image

from ..control.infotext import BALANCED, CONTROL_MODES, CONTROL_MORE, PROMPT_MORE
from ..control.nets import CONTROLNETS
from ..control.preprocess import CONTROL_TYPES, MODULES
from ..errors import SdlabError, ValidationError
from .base import png_bytes


def _uploaded(upload: W.FileUpload) -> Image.Image | None:
    if not upload.value:
        return None
    item = upload.value[0] if isinstance(upload.value, (list, tuple)) else next(iter(upload.value.values()))
    return Image.open(io.BytesIO(bytes(item["content"]))).convert("RGB")


class UnitRow:
    """One ControlNet unit's controls."""

    def __init__(self, index: int, model_names: list[str]) -> None:
        self.image: Image.Image | None = None  # set by the upload, or directly from a notebook
        self.enabled = W.Checkbox(value=False, description=f"ControlNet {index}")  # ticked to use it
        self.upload = W.FileUpload(accept="image/*", multiple=False, description="Control image")
        self.upload.observe(lambda _: setattr(self, "image", _uploaded(self.upload)), names="value")
        self.control_type = W.Dropdown(options=CONTROL_TYPES, value="edges", description="Type")
        self.module = W.Dropdown(options=MODULES["edges"], description="Preprocessor")
        self.control_type.observe(lambda change: setattr(self.module, "options", MODULES[change["new"]]), names="value")
        self.model = W.Combobox(options=model_names, value=model_names[0] if model_names else "", ensure_option=False,
                                description="Model", placeholder="name, directory or file")
        self.scale = W.FloatSlider(value=1.0, min=0.0, max=2.0, step=0.05, description="Weight")
        self.window = W.FloatRangeSlider(value=(0.0, 1.0), min=0.0, max=1.0, step=0.05, description="Start / end")
        self.preprocessed = W.Checkbox(value=False, description="image is the map (preprocessor none)")
        self.preview_button = W.Button(description="Preview map", icon="eye")
        self.preview = W.Image(format="png", layout=W.Layout(width="128px"))
        self.widget = W.VBox([
            W.HBox([self.enabled, self.upload]), W.HBox([self.control_type, self.module]), self.model,
            W.HBox([self.scale, self.window]), W.HBox([self.preprocessed, self.preview_button]), self.preview,
        ])

    def unit(self, models: dict, folder: str = "", allow_pickle: bool = False):
        """The row's :class:`ControlUnit` (None when the row is off); a name is looked up in ``folder`` first
        (:func:`sdlab.control.recorded.locate_model`); bad values raise ValidationError."""
        from ..control.recorded import locate_model
        from ..control.unit import ControlUnit

        if not self.enabled.value:
            return None
        if self.image is None:
            raise ValidationError(f"{self.enabled.description}: upload a control image (or switch the unit off)")
        name = self.model.value.strip()
        model = models.get(name) if name in models else (locate_model(name, folder or None, allow_pickle=allow_pickle) if name else None)
        start, end = self.window.value
        return ControlUnit(self.image, self.control_type.value, model=model, scale=float(self.scale.value),
                           start=float(start), end=float(end), preprocessed=bool(self.preprocessed.value),
                           module=None if self.preprocessed.value else self.module.value, allow_pickle=bool(allow_pickle))


class ControlSection:
    """ControlNet units for a generation panel: ``units()`` and ``guess_mode`` go into its spec (the mode
    "My prompt is more important" is each unit's, "ControlNet is more important" diffusers' guess mode)."""

    def __init__(self, models: dict | None = None, size: tuple[int, int] = (64, 64)) -> None:
        self.models = dict(models or {})  # name -> a loaded ControlNet (shown first in the model list)
        self.size = size  # the size a preview map is fitted to
        self.rows: list[UnitRow] = []
        self.mode = W.Dropdown(options=CONTROL_MODES, value=BALANCED, description="Control mode")  # A1111's, for every unit
        self.folder = W.Text(description="Folder", placeholder="ControlNet files (A1111: models/ControlNet)", layout=W.Layout(width="60%"))
        self.folder.observe(lambda _: self._list_models(), names="value")
        self.allow_pickle = W.Checkbox(value=False, description="trust .pth files (pickle runs code)")
        self.add_button = W.Button(description="Add ControlNet", icon="plus")
        self.add_button.on_click(lambda _: self.add_unit())
        self.message = W.HTML()
        self.maps = W.HBox()
        self.box = W.VBox()
        self.widget = W.Accordion(children=[W.VBox([W.HBox([self.folder, self.allow_pickle]), self.box,
                                                    W.HBox([self.add_button, self.mode]), self.message,
                                                    W.HTML("Maps the ControlNets read:"), self.maps])])
        self.widget.set_title(0, "ControlNet")
        self.add_unit()

    def _names(self) -> list[str]:
        """Handed-in models, the folder's files by stem (as A1111 lists them), then the registered names."""
        from ..control.nets import folder_files

        try:
            files = [p.stem for p in folder_files(self.folder.value.strip())] if self.folder.value.strip() else []
        except ValidationError:  # a folder still being typed: no files yet
            files = []
        return [*self.models, *files, *CONTROLNETS]

    def _list_models(self) -> None:
        for row in self.rows:
            row.model.options = self._names()

    def add_unit(self) -> UnitRow:
        row = UnitRow(len(self.rows), self._names())
        row.preview_button.on_click(lambda _, r=row: self.preview(r))
        self.rows.append(row)
        self.box.children = tuple(r.widget for r in self.rows)
        return row

    def units(self) -> tuple:
        return tuple(u for u in (self._unit(row) for row in self.rows) if u is not None)

    @property
    def guess_mode(self) -> bool:
        return self.mode.value == CONTROL_MORE

    def _unit(self, row: UnitRow):
        unit = row.unit(self.models, self.folder.value.strip(), bool(self.allow_pickle.value))
        return unit.replace(prompt_more_important=True) if unit is not None and self.mode.value == PROMPT_MORE else unit

    def preview(self, row: UnitRow) -> None:
        from ..control.apply import condition_map

        try:
            unit = self._unit(row)
            if unit is not None:
                row.preview.value = png_bytes(condition_map(unit, self.size).resize((128, 128), Image.NEAREST))
                self.message.value = ""
        except SdlabError as exc:
            self.message.value = f"<span style='color:#b00020'>{exc}</span>"

    def show_maps(self, maps: list) -> None:
        """The maps a generation used (``Result.control_maps``)."""
        self.maps.children = tuple(W.Image(value=png_bytes(m.resize((128, 128 * m.height // m.width), Image.NEAREST)), format="png")
                                   for m in maps)
