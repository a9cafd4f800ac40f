"""One call for any of the four methods: train, save in the community's format, and return the result.

The CLI (``sdlab train METHOD``) and the panel (:class:`~sdlab.widgets.finetuning.FinetuningPanel`)
both call :func:`train_and_save`, so a run means the same thing from either.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..progress import Callback
from ..validation import Options, validate_params
from .common import Dataset, TrainConfig

METHODS = ("embedding", "lora", "dreambooth", "hypernetwork")
# how the verbs that make images (generate, sweep, reproduce) take each result, A1111's way
USE = {"lora": "<lora:{stem}:1> in a prompt, with --lora-dir {dir}",
       "embedding": "the word {stem} in a prompt, with --embeddings-dir {dir}",
       "hypernetwork": "<hypernet:{stem}:1> in a prompt, with --hypernetwork-dir {dir}",
       "dreambooth": "--model {path}"}


@dataclass
class Trained:
    """A finished run: the method's result object, the file (or directory) written, and the run's figures."""

    method: str
    result: Any
    path: Path
    info: dict

    def apply(self, pipe, strength: float = 1.0):
        """A new pipeline that draws with the result (``pipe`` is not changed; a hypernetwork runs in a copy of the UNet)."""
        if self.method == "lora":
            return self.result.apply(pipe, strength)
        if self.method == "hypernetwork":
            from ..adapters.hypernetwork import with_hypernetwork

            return with_hypernetwork(pipe, self.result, strength)
        return self.result.apply(pipe)

    def usage(self) -> str:
        """One line saying how ``sdlab generate`` (and sweep, reproduce) takes the result: its prompt tag or word and
        the folder option, with ``--allow-pickle`` for A1111's pickled ``.pt`` hypernetworks (they load only with consent)."""
        path = Path(self.path)
        return USE[self.method].format(stem=path.stem, dir=path.parent, path=path) + (" --allow-pickle" if path.suffix == ".pt" else "")


def default_config(method: str, **fields) -> TrainConfig:
    """The method's config with ``fields`` (None values left at the method's defaults)."""
    validate_params({"method": method}, {"method": [Options(METHODS)]})
    from .dreambooth import DreamBoothConfig
    from .embedding import EmbeddingConfig
    from .hypernetwork import HypernetworkTrainConfig
    from .lora import LoraConfig

    cls = {"embedding": EmbeddingConfig, "lora": LoraConfig, "dreambooth": DreamBoothConfig, "hypernetwork": HypernetworkTrainConfig}[method]
    return cls(**{k: v for k, v in fields.items() if v is not None and k in cls.__dataclass_fields__})


def keeping_sets(pipe, data: Dataset, trigger: str, class_word: str, class_prompts: list[str], prior: bool,
                 keep: tuple[str, ...] = (), world_data: Dataset | None = None) -> tuple[Dataset | None, Dataset | None]:
    """What keeps the base model, built from the base model ``pipe`` before training: the class images
    (generated from ``class_prompts`` when ``prior`` preservation is on or ``keep`` holds ``class-images``)
    and output preservation's items of the ``keep`` kinds (:func:`.preserve.preservation_data`; ``world`` and
    ``world-blank`` need ``world_data``). Returns ``(class_data, preserve_data)``, ``None`` for what is not used."""
    class_data = preserve_data = None
    if prior or "class-images" in keep:
        from .dreambooth import class_images

        class_data = Dataset(class_images(pipe, class_prompts), class_prompts)
    if keep:
        from .preserve import preservation_data

        preserve_data = preservation_data(keep, data, trigger, class_word, class_data, world_data)
    return class_data, preserve_data


def train_and_save(method: str, pipe, data: Dataset, out: str | Path, cfg: TrainConfig, token: str = "concept",
                   init_word: str = "a", class_data: Dataset | None = None, file_format: str = "pt",
                   meta: dict | None = None, callback: Callback | None = None, progress: bool = False,
                   preserve_data: Dataset | None = None, force: bool = False) -> Trained:
    """Train ``method`` on ``data`` (resumable from ``out``) and write its file into ``out``:
    ``<token>.safetensors`` (embedding; a LoRA in diffusers' format, the only ``.safetensors`` in ``out``, so plain
    ``pipe.load_lora_weights(out)`` finds it and A1111's ``<lora:<token>:1>`` names it), ``pipeline/`` (DreamBooth, with
    ``meta`` as its ``sdlab.json``), ``<token>.pt|.safetensors`` (hypernetwork).
    ``class_data``: the class images of prior preservation (DreamBooth, and a LoRA with ``prior_weight > 0``);
    ``preserve_data``: the items of output preservation (the same two, with ``preserve_weight > 0``: :mod:`.preserve`).
    A run that would not fit in memory, or not end today on the CPU, is refused before its first step
    (:func:`.budget.check_training`) unless ``force``."""
    validate_params({"method": method}, {"method": [Options(METHODS)]})
    from .embedding import check_token_text

    check_token_text(token)  # before any training: the result file is named after it
    from .budget import check_training, items_per_step

    factor = int(getattr(pipe, "vae_scale_factor", 8))
    latent_hw = (data.images.shape[1] // factor, data.images.shape[2] // factor)
    check_training(method, pipe, cfg, latent_hw, items_per_step(cfg, class_data, preserve_data), force)
    out = Path(out)
    if method == "embedding":
        from .embedding import train_embedding

        result = train_embedding(pipe, data, token, init_word, out, cfg, callback, progress)
        return Trained(method, result, result.save(out / f"{token}.safetensors"), result.info)
    if method == "lora":
        from .lora import train_lora

        result = train_lora(pipe, data, out, cfg, callback, progress, class_data, preserve_data)
        return Trained(method, result, result.save(out / f"{token}.safetensors"), result.info)
    if method == "dreambooth":
        from .dreambooth import train_dreambooth

        result = train_dreambooth(pipe, data, out, cfg, class_data, callback, progress, preserve_data)
        return Trained(method, result, result.save(pipe, out / "pipeline", meta), result.info)
    from ..adapters.hypernetwork import save
    from .hypernetwork import train_hypernetwork

    result = train_hypernetwork(pipe, data, out, token, cfg, callback, progress)
    info = {k.removeprefix("run_"): v for k, v in result.info.items()}
    return Trained(method, result, save(result, out / f"{token}.{file_format}"), info)
