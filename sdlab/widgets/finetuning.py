"""``FinetuningPanel``: train an embedding, a LoRA, a DreamBooth UNet or a hypernetwork from a notebook.

Thin: the fields become a config and a dataset, :func:`sdlab.finetune.run.train_and_save` does the
work (Cancel checkpoints; Run again resumes), and the result is shown as the loss curve beside the
sample prompt drawn by the base model and by the fine-tuned one.
"""
from __future__ import annotations

from pathlib import Path

import ipywidgets as W

from .training import TrainingPanel


class FinetuningPanel(TrainingPanel):
    """Method, concept (a shapes-world concept, or a folder of images), token, steps, lr, rank, strength."""

    def __init__(self, pipe=None, out_dir: str = "runs/finetune/panel", prompt: str = "a large red star at the top left on a white background") -> None:
        super().__init__(prompt, "Train")
        from ..finetune.run import METHODS
        from ..mini.concepts import CONCEPTS

        self.pipe = pipe
        self.trained = None
        self.method = W.Dropdown(options=METHODS, value="lora", description="Method")
        self.concept = W.Dropdown(options=list(CONCEPTS) + ["folder"], value="star", description="Concept")
        self.folder = W.Text(value="", description="Folder", placeholder="images (with NAME.txt captions) when Concept is folder")
        self.token = W.Text(value="star", description="Token")
        # a concept's own trigger word follows the concept (as the CLI's default); a folder keeps what was typed
        self.concept.observe(lambda change: change["new"] in CONCEPTS and setattr(self.token, "value", CONCEPTS[change["new"]].token),
                             names="value")
        self.out_dir = W.Text(value=out_dir, description="Run dir", layout=W.Layout(width="60%"))
        self.steps = W.BoundedIntText(value=300, min=1, max=1_000_000, description="Steps")
        self.lr = W.FloatText(value=1e-3, description="lr")
        self.rank = W.BoundedIntText(value=4, min=1, max=1024, description="Rank")
        self.strength = W.FloatSlider(value=1.0, min=0.0, max=1.5, step=0.25, description="Strength")
        # prior preservation's weight (DreamBooth: on by default; LoRA: kohya's regularisation images, off by default)
        self.prior = W.BoundedFloatText(value=0.0, min=0.0, max=100.0, description="Prior weight")
        self.method.observe(lambda change: setattr(self.prior, "value", 1.0 if change["new"] == "dreambooth" else 0.0), names="value")
        # captions trained as the empty prompt: keeps CFG in step on a set like the base model's own data, but on a concept's
        # set the empty prompt learns the concept (notebook 09, section 7), so off by default; no use to textual inversion
        self.caption_dropout = W.BoundedFloatText(value=0.0, min=0.0, max=0.9, step=0.05, description="Caption drop")
        self.method.observe(lambda change: self._dropout_for(change["new"]), names="value")
        # output preservation (DreamBooth and LoRA): the base model's own predictions kept on the chosen items
        from ..finetune.preserve import KINDS

        self.keep_weight = W.BoundedFloatText(value=0.0, min=0.0, max=100.0, description="Keep weight")
        self.keep = W.SelectMultiple(options=KINDS, value=("class-word", "blank"), rows=len(KINDS), description="Keep on")
        self.world_folder = W.Text(value="", description="World dir",
                                   placeholder="images like the model's own (NAME.txt captions); empty: the shapes world's")
        self.method.observe(lambda change: self._keep_for(change["new"]), names="value")
        self.base_sample = W.Image(format="png", width=192)
        self.widget = self.layout(W.HBox([self.method, self.concept, self.token]), self.folder, self.out_dir,
                                  W.HBox([self.steps, self.lr, self.rank]), W.HBox([self.strength, self.prior, self.caption_dropout]),
                                  W.HBox([self.keep_weight, self.keep, self.world_folder]))
        self.widget.children += (W.HBox([W.Label("base"), self.base_sample]),)

    def _dropout_for(self, method: str) -> None:
        self.caption_dropout.disabled = method == "embedding"
        if method == "embedding":
            self.caption_dropout.value = 0.0

    def _keep_for(self, method: str) -> None:
        self.keep_weight.disabled = self.keep.disabled = self.world_folder.disabled = method not in ("dreambooth", "lora")
        if self.keep_weight.disabled:
            self.keep_weight.value = 0.0

    def data(self):
        """The dataset from the fields (a concept's fine-tuning set, or a folder's images and captions)."""
        from ..finetune.common import Dataset

        trigger = self.token.value if self.method.value != "dreambooth" else None
        if self.concept.value == "folder":
            from ..finetune.common import read_folder

            images, captions = read_folder(self.folder.value, "a {token}", self.token.value)
            return Dataset(images, captions), None
        from ..mini import concepts

        c = concepts.concept(self.concept.value)
        if trigger is None:
            trigger = f"{self.token.value} {c.class_word}".strip()
        images, table = concepts.make_set(c.name, 20, trigger=trigger)
        return Dataset(images, table["TEXT"].tolist(), concepts.shape_masks(images)), c

    def work(self):
        from ..finetune.run import default_config, train_and_save
        from ..models import load_pipeline

        method = self.method.value
        data, c = self.data()
        cfg = default_config(method, steps=int(self.steps.value), lr=float(self.lr.value), rank=int(self.rank.value),
                             prior_weight=float(self.prior.value), mask_weight=12.0 if c is not None else None,
                             preserve_weight=float(self.keep_weight.value),
                             caption_dropout=float(self.caption_dropout.value) if method != "embedding" else None)  # a concept's shape weighs 13x, as in the benchmark
        pipe = self.pipe if self.pipe is not None else load_pipeline("shapes-world")
        out = Path(self.out_dir.value) / method
        init = c.init_word if c is not None else "a"

        keep = tuple(self.keep.value) if getattr(cfg, "preserve_weight", 0) > 0 else ()
        class_word = c.class_word if c is not None else ""
        trigger = f"{self.token.value} {class_word}".strip() if method == "dreambooth" else self.token.value
        world_data = self._world_data(keep)

        def run(callback):
            from ..finetune.run import keeping_sets
            from ..mini.concepts import class_prompts

            class_data, preserve_data = keeping_sets(pipe, data, trigger, class_word, class_prompts(c.name if c else "star", 20),
                                                     getattr(cfg, "prior_weight", 0) > 0, keep, world_data)
            return pipe, train_and_save(method, pipe, data, out, cfg, self.token.value, init, class_data, callback=callback,
                                        preserve_data=preserve_data)

        return run

    def _world_data(self, keep: tuple):
        """The world and world-blank items: the World dir's images and captions, else the shapes world's own."""
        from ..finetune.common import Dataset, read_folder
        from ..finetune.preserve import WORLD_KINDS
        from ..mini.concepts import world_images

        if not set(WORLD_KINDS) & set(keep):
            return None
        return Dataset(*(read_folder(self.world_folder.value, "", "", "World dir") if self.world_folder.value.strip() else world_images()))

    def _finished(self, result) -> None:
        import matplotlib.pyplot as plt

        from ..generate import generate
        from ..spec import GenerationSpec
        from ..trainlog import plot_loss, read_log
        from .base import figure_png, png_bytes

        pipe, self.trained = result
        log = read_log(self.trained.path.parent, stage=self.trained.method)
        fig, ax = plt.subplots(figsize=(4.5, 3))
        plot_loss(log, ax=ax)
        ax.set_title(f"{self.trained.method}: training loss")
        self.loss_plot.value = figure_png(fig)
        spec = GenerationSpec(self.prompt.value, seed=0)
        self.base_sample.value = png_bytes(generate(pipe, spec).images[0].resize((192, 192)))
        tuned = self.trained.apply(pipe, float(self.strength.value))
        self.sample.value = png_bytes(generate(tuned, spec).images[0].resize((192, 192)))
        self.show_info(f"saved {self.trained.path} ({self.trained.info.get('seconds', 0) / 60:.1f} min); use: {self.trained.usage()}")
