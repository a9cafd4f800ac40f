"""``AdapterSection``: pick LoRAs and embeddings from the user's folders into the prompt (A1111's extra-networks cards), thin.

The section lists the folders' files (:class:`sdlab.adapters.networks.AdapterFolders`), shows a picked
file's A1111 hash and size, and toggles ``<lora:NAME:WEIGHT>`` or an embedding's name in the prompt
text boxes it is given (:func:`~sdlab.adapters.networks.toggle_lora`); generating then hands
:meth:`folders` to ``generate(..., adapters=...)``, which applies them to that call only.
"""
from __future__ import annotations

import html

import ipywidgets as W

from ..errors import SdlabError


class AdapterSection:
    """LoRA and embedding folders, their files, and buttons that put them into the prompts."""

    def __init__(self, prompt: W.Textarea, negative: W.Textarea | None = None, lora_dir: str = "", embeddings_dir: str = "") -> None:
        self.prompt, self.negative = prompt, negative
        self.lora_dir = W.Text(value=str(lora_dir), description="LoRA folder", placeholder="e.g. models/Lora")
        self.embeddings_dir = W.Text(value=str(embeddings_dir), description="Embeddings", placeholder="e.g. embeddings")
        self.scan_button = W.Button(description="Scan", icon="refresh", layout=W.Layout(width="90px"))
        self.scan_button.on_click(lambda _: self.scan())
        self.lora = W.Dropdown(options=[], description="LoRA")
        self.weight = W.FloatSlider(value=1.0, min=-1.0, max=2.0, step=0.05, description="Weight")
        self.lora_button = W.Button(description="Add / remove", icon="plus", layout=W.Layout(width="130px"))
        self.lora_button.on_click(lambda _: self.toggle_lora())
        self.embedding = W.Dropdown(options=[], description="Embedding")
        self.embedding_button = W.Button(description="Prompt", icon="plus", layout=W.Layout(width="100px"))
        self.embedding_button.on_click(lambda _: self.toggle_embedding(negative=False))
        self.negative_button = W.Button(description="Negative", icon="minus", layout=W.Layout(width="100px"))
        self.negative_button.on_click(lambda _: self.toggle_embedding(negative=True))
        self.info = W.HTML(value="")
        self.lora.observe(lambda _: self._describe(), names="value")
        self.widget = W.Accordion(children=[W.VBox([
            W.HBox([self.lora_dir, self.embeddings_dir, self.scan_button]),
            W.HBox([self.lora, self.weight, self.lora_button]),
            W.HBox([self.embedding, self.embedding_button, self.negative_button]), self.info,
        ])])
        self.widget.set_title(0, "LoRA and embeddings")
        if lora_dir or embeddings_dir:
            self.scan()

    def folders(self):
        """The :class:`AdapterFolders` the fields name (None when both are empty); a missing folder raises ValidationError."""
        from ..adapters.networks import AdapterFolders

        loras, embeddings = self.lora_dir.value.strip(), self.embeddings_dir.value.strip()
        if not loras and not embeddings:
            return None
        return AdapterFolders(lora_dirs=[loras] if loras else [], embedding_dirs=[embeddings] if embeddings else [])

    def scan(self) -> None:
        """List the folders' LoRAs and embeddings in the pickers."""
        try:
            folders = self.folders()
        except SdlabError as exc:
            self.info.value = f"<span style='color:#b00020'>error: {html.escape(str(exc))}</span>"
            return
        for picker, names in ((self.lora, sorted(folders.loras()) if folders else []),
                              (self.embedding, sorted(folders.embeddings()) if folders else [])):
            picker.options = names
            picker.value = names[0] if names else None
        self._describe()

    def _describe(self) -> None:
        from ..adapters.lora import file_size, lora_hash

        text = f"{len(self.lora.options)} LoRA(s), {len(self.embedding.options)} embedding(s)"
        folders = self.folders() if self.lora.value else None
        if folders is not None:
            path = folders.loras()[self.lora.value]
            text += f"; {path.name}: A1111 hash {lora_hash(path)}, {file_size(path) / 1024:.1f} KiB"
        self.info.value = html.escape(text)

    def toggle_lora(self) -> None:
        from ..adapters.networks import toggle_lora

        if self.lora.value:
            self.prompt.value = toggle_lora(self.prompt.value, self.lora.value, float(self.weight.value))

    def toggle_embedding(self, negative: bool = False) -> None:
        from ..adapters.networks import toggle_word

        box = self.negative if negative and self.negative is not None else self.prompt
        if self.embedding.value:
            box.value = toggle_word(box.value, self.embedding.value)
