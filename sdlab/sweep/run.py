"""Running a sweep: what each image measures, the batches, and the run that writes them to the store.

Cells that share steps, sampler and size run in one batched call, with seeds,
prompts and guidance varying inside it (``generate_many``). After each batch
its cells are written to the store before more are, so a killed sweep rerun
with the same arguments finishes only what is missing, and a finished one
answers from its store without loading the model. The batches run in this
process or, given a ``cluster``, on Dask workers that each load the model once
(:mod:`sdlab.cluster`); either way this process is the store's only writer,
and a cell's image is the same.
"""
from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

from ..errors import ValidationError
from ..spec import GenerationSpec
from ..validation import Interval, validate_params
from .axes import Axis, Cell, expand
from .store import ResultStore, spec_row

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

Metric = Callable[["np.ndarray", GenerationSpec], dict]


IMAGE_METRICS = ("saturation", "clipped_share")  # what saturation_metric measures


def saturation_metric(image: np.ndarray, spec: GenerationSpec) -> dict:
    """Mean HSV saturation and the share of clipped pixels: how far guidance pushes colours."""
    from ..metrics import clipped_share, saturation

    return {"saturation": saturation(image), "clipped_share": clipped_share(image)}


def default_metrics() -> dict[str, Metric]:
    """What every sweep measures; a model's own metrics (the shapes world's attribute checker) are passed in."""
    return {"saturation": saturation_metric}


def resolve_metrics(metrics, pipe) -> dict[str, Metric]:
    """``metrics`` as a dict: given as one, or made by a function of the pipeline; None: :func:`default_metrics`."""
    if callable(metrics):
        metrics = metrics(pipe)
    return default_metrics() if metrics is None else metrics


def plan(cells: list[Cell], max_batch: int) -> list[list[Cell]]:
    """The batches that run: cells sharing steps, sampler, size and clip skip, at most ``max_batch`` each.

    Grouped on the fields as given: in a sweep a field is set in every cell or in
    none, so these are the groups of the resolved specs, found without the model.
    """
    groups: dict[tuple, list[Cell]] = {}
    for cell in cells:
        s = cell.spec
        groups.setdefault((s.steps, s.sampler, s.width, s.height, s.clip_skip), []).append(cell)
    return [group[i : i + max_batch] for group in groups.values() for i in range(0, len(group), max_batch)]


def describe(pipe, base: GenerationSpec, axes: list[Axis], prompts: list[str] | None, checks: list[GenerationSpec] = ()) -> dict:
    """A sweep's arguments as its store records them (the base spec resolved against the model);
    ``checks`` (one spec per batch shape) are checked against the model first."""
    from ..generate import prepare
    from ..models import model_info

    for spec in checks:
        prepare(pipe, spec)
    return {
        "base": {k: v for k, v in spec_row(prepare(pipe, base.replace(seed=max(base.seed, 0)))).items() if k not in ("prompt", "seed")},
        "seed": base.seed, "prompt": base.prompt, "prompts": prompts or [],
        "axes": [{"name": a.name, "values": list(a.values)} for a in axes], "model": model_info(pipe).name,
    }


def run_batch(pipe, cells: list[Cell], metrics, max_batch: int, adapters=None) -> list[dict]:
    """One batch in one ``generate_many`` call: per cell its key, resolved spec row, PNG bytes (with the
    A1111 ``parameters`` chunk, LoRA and embedding hashes included) and measurements. Runs wherever the pipeline is."""
    from io import BytesIO

    import numpy as np
    from PIL import PngImagePlugin

    from ..generate import generate_many
    from ..metadata import format_parameters

    metrics = resolve_metrics(metrics, pipe)
    out = []
    for cell, (image, spec) in zip(cells, generate_many(pipe, [c.spec for c in cells], max_batch=max_batch, adapters=adapters)):
        chunk = PngImagePlugin.PngInfo()
        chunk.add_text("parameters", format_parameters(spec))
        png = BytesIO()
        image.save(png, format="PNG", pnginfo=chunk)
        pixels = np.asarray(image.convert("RGB"))
        measured: dict = {}
        for metric in metrics.values():
            measured.update(metric(pixels, spec))
        out.append({"cell": cell.key, "spec": spec_row(spec), "png": png.getvalue(), "metrics": measured})
    return out


def _save(store: ResultStore, cells: list[Cell], outcomes: list[dict], done: set[str]) -> int:
    """Write a batch's PNGs, then its rows in one atomic append; a cell already stored is never written again."""
    coords = {c.key: c.coords for c in cells}
    rows = []
    for outcome in outcomes:
        key = outcome["cell"]
        if key in done:
            continue
        file = store.write_image(key, outcome["png"])
        rows.append({"cell": key, **coords[key], **outcome["spec"], "file": file, **outcome["metrics"]})
    if rows:
        store.append(rows)
        done.update(row["cell"] for row in rows)
    return len(rows)


def run_sweep(
    pipe, base: GenerationSpec, axes: list[Axis], out_dir: str | Path, prompts: list[str] | None = None,
    metrics=None, new: bool = False, max_batch: int = 32,
    progress: bool = True, callback: Callable[[int, int], None] | None = None, cluster=None, adapters=None,
) -> pd.DataFrame:
    """Run (or finish) a sweep into ``out_dir``; return the store's table, one row per image.

    ``pipe``: a loaded pipeline, or the model to load: a name, a path or a
    :class:`~sdlab.cluster.ModelSource` (with device and dtype). Given a model to
    load, a finished store answers without loading it, and on a cluster only the
    workers load it.
    ``metrics``: name -> ``metric(pixels, spec) -> dict``, or a function of the
    pipeline returning such a dict (it runs where the pipeline is); None: :func:`default_metrics`.
    ``cluster``: where the batches run (see :func:`sdlab.cluster.connect`): None for
    this process, a ``distributed.Client`` or cluster, a scheduler address, or a
    number of local worker processes. Workers load the model by its source; a
    pipeline passed in is loaded there from its source, device and dtype, and refused
    in one line if it differs from that (weights, scheduler, tokenizer changed in
    memory). The batches and seeds are a local run's.
    ``adapters``: the :class:`~sdlab.adapters.networks.AdapterFolders` where the cells' ``<lora:NAME:W>``
    tags and embedding names are found (A1111's X/Y/Z plot over LoRA weights is a prompt S/R axis); every
    tag is resolved before the model loads; on a cluster the folders must be at the same paths on the workers.
    """
    from ..adapters.lora import lora_hash
    from ..adapters.networks import preflight
    from ..cluster import ModelSource, call_on_worker, check_same_pipeline, connect, map_on_workers

    validate_params({"max_batch": max_batch}, {"max_batch": [Interval(int, 1, None)]})
    if base.mode != "txt2img":
        raise ValidationError("sweep: only text-to-image sweeps are supported; the base spec has an init image")
    cells = expand(base, axes, prompts)
    loras = {}  # every cell's LoRA tags resolved before the model loads (a missing folder or file: one line)
    for prompt in sorted({c.spec.prompt for c in cells}):
        loras.update((use.name, lora_hash(path)) for use, path in preflight(prompt, adapters))
    folders = None if adapters is None else {**{k: [str(d) for d in getattr(adapters, k)] for k in ("lora_dirs", "embedding_dirs", "hypernetwork_dirs")},
                                             "lora_hashes": dict(sorted(loras.items()))}  # a retrained LoRA is not answered from the store
    loaded = None if isinstance(pipe, (str, Path, ModelSource)) else pipe
    model = ModelSource.of(pipe)
    request = json.loads(json.dumps({"model": model.fingerprint(), "base": spec_row(base), "prompts": prompts or [],
                                     "axes": [{"name": a.name, "values": list(a.values)} for a in axes],
                                     **({"adapters": folders} if folders else {})}))
    store = ResultStore(out_dir)
    store.check()
    if store.answers(request, [c.key for c in cells]):
        return store.rows()
    with connect(cluster) as client:
        if loaded is None and client is None:
            loaded = model.load()
        checks = [batch[0].spec for batch in plan(cells, len(cells))]
        if loaded is not None:
            if client is not None:
                check_same_pipeline(client, model, loaded)
            arguments = describe(loaded, base, axes, prompts, checks)
        else:
            arguments = call_on_worker(client, model, describe, base, axes, prompts, checks)
        if folders:
            arguments["adapters"] = folders
        done = store.open(arguments, new=new)
        store.remember(request)
        batches = plan([c for c in cells if c.key not in done], max_batch)
        if client is None:
            results: Iterator = ((i, run_batch(loaded, batch, metrics, max_batch, adapters)) for i, batch in enumerate(batches))
        else:
            results = map_on_workers(client, model, run_batch, [(batch, metrics, max_batch, adapters) for batch in batches])
        from tqdm.auto import tqdm

        bar = tqdm(total=len(cells), initial=len(done), desc="sweep", disable=not progress)
        with contextlib.closing(results), contextlib.closing(bar):
            for i, outcomes in results:
                bar.update(_save(store, batches[i], outcomes, done))
                if callback is not None:
                    callback(len(done), len(cells))
    return store.rows()
