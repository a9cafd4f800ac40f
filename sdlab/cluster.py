"""Long image work on a Dask cluster: one pipeline per worker, loaded by name, kept, never pickled.

A :class:`ModelSource` says what a worker loads (``load_pipeline(source,
device, dtype)``); each worker process loads it the first time a task needs it
and keeps it for every later task (a per-process cache keyed by source, device
and dtype). :func:`connect` turns what a user passes as ``cluster`` (a
``distributed.Client``, a scheduler address, a number of local worker
processes) into a client; :func:`map_on_workers` runs ``fn(pipe, *args)`` for
many argument tuples and yields each result as it completes, so the caller,
the only writer of its store, saves results as they arrive.

Dask reschedules the tasks of a worker that dies (``kill -9``, out of memory)
on the others; results already handed to the caller are not recomputed.
Failures the user can act on come back as one :class:`~sdlab.errors.SdlabError`
line: a scheduler that does not answer, a worker that cannot load the model,
a task that kept killing its workers.

GPUs: start one worker per GPU (dask-cuda's ``LocalCUDACluster`` does, each
pinned to its device through ``CUDA_VISIBLE_DEVICES``) and pass the client;
with ``device="auto"`` each worker uses its own GPU. Noise is drawn on the CPU,
so images do not depend on which worker made them.
"""
from __future__ import annotations

import contextlib
import hashlib
import logging
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from .errors import ModelNotFoundError, SdlabError
from .validation import invalid

CONNECT_SECONDS = 5  # how long to wait for a scheduler before saying it does not answer
_ADDRESS = re.compile(r"^(?:[a-z]+://)?[^\s:/]+:\d+$")


@dataclass(frozen=True)
class ModelSource:
    """A model as a worker loads it: a registered name, a directory or a file, on ``device`` in ``dtype``."""

    source: str
    device: str = "auto"
    dtype: str = "auto"
    allow_pickle: bool = False

    @classmethod
    def of(cls, model) -> "ModelSource":
        """A ModelSource as given, from a name or path, or from a loaded pipeline (its source, device and dtype)."""
        if isinstance(model, cls):
            return model
        if isinstance(model, (str, Path)):
            return cls(str(model))
        from .models import HUB_ALIASES, PICKLE_SUFFIXES, model_info

        info = model_info(model)
        source = info.name if info.name in HUB_ALIASES else info.source
        return cls(source, device=model.device.type, dtype=str(model.dtype).removeprefix("torch."),
                   allow_pickle=Path(source).suffix.lower() in PICKLE_SUFFIXES)

    def load(self):
        from .models import load_pipeline

        return load_pipeline(self.source, device=self.device, dtype=self.dtype, allow_pickle=self.allow_pickle)

    def fingerprint(self) -> dict:
        """The source and a digest of its configs (defaults, sizes, name): what a model contributes to a
        sweep's arguments, read without loading it. A changed config gives another fingerprint."""
        from .models import SHAPES_WORLD, SHIPPED_DIR

        path = SHIPPED_DIR if self.source == SHAPES_WORLD else Path(self.source).expanduser()
        digest = hashlib.sha256()
        if path.is_dir():
            for file in sorted([*path.glob("*.json"), *path.glob("*/*.json")]):
                digest.update(file.relative_to(path).as_posix().encode() + b"\0" + file.read_bytes())
        elif path.is_file():
            stat = path.stat()
            digest.update(f"{stat.st_size}:{stat.st_mtime_ns}".encode())
        return {"source": self.source, "configs": digest.hexdigest()[:16]}


# -- on the workers ------------------------------------------------------------------------
_PIPES: dict[tuple, Any] = {}
_LOCK = threading.Lock()


def worker_pipeline(model: ModelSource):
    """This process's pipeline for ``model``: loaded on first use, then kept (one model at a time)."""
    key = (model.source, model.device, model.dtype)
    with _LOCK:
        if key not in _PIPES:
            _PIPES.clear()  # a worker asked for another model lets the previous one go
            _PIPES[key] = model.load()
        return _PIPES[key]


def _load(model: ModelSource) -> None:
    worker_pipeline(model)


def _on_worker(model: ModelSource, fn: Callable, args: tuple):
    """A task: ``fn(pipe, *args)`` with this worker's pipeline; a failed load becomes one line naming the worker."""
    try:
        pipe = worker_pipeline(model)
    except Exception as exc:
        from distributed import get_worker

        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if not isinstance(exc, SdlabError):
            reason = f"{type(exc).__name__}: {reason}"
        raise ModelNotFoundError(f"worker {get_worker().address} could not load the model {model.source!r}: {reason}") from None
    return fn(pipe, *args)


# -- on the client -------------------------------------------------------------------------
def check_cluster(cluster) -> None:
    """Refuse, in one line and before any work, a number of workers below 1 or a malformed scheduler address."""
    if isinstance(cluster, bool) or isinstance(cluster, int) and cluster < 1:
        raise invalid("workers", cluster, "a whole number >= 1")
    if isinstance(cluster, str) and not _ADDRESS.match(cluster.strip()):
        raise invalid("scheduler", cluster, "an address HOST:PORT or PROTOCOL://HOST:PORT, e.g. tcp://10.0.0.5:8786")


@contextlib.contextmanager
def connect(cluster) -> Iterator[Any]:
    """A ``distributed.Client`` for ``cluster``, closed afterwards if made here; ``None`` stays ``None``.

    ``cluster``: a ``distributed.Client`` (used as is), a cluster object such as
    ``LocalCluster`` or ``LocalCUDACluster``, a scheduler address (``tcp://host:8786``),
    or a number of local worker processes (a ``LocalCluster`` of one thread each, on
    127.0.0.1, started here and closed afterwards).
    """
    if cluster is None:
        yield None
        return
    check_cluster(cluster)
    from distributed import Client, LocalCluster

    if isinstance(cluster, Client):
        yield cluster
        return
    with contextlib.ExitStack() as stack:
        if isinstance(cluster, int):
            cluster = stack.enter_context(LocalCluster(  # loopback only; no dashboard, and a free port for the health server
                n_workers=cluster, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None,
                scheduler_kwargs={"dashboard": False, "dashboard_address": "127.0.0.1:0"}, silence_logs=logging.ERROR))
        elif isinstance(cluster, str):
            try:
                client = Client(cluster.strip(), timeout=CONNECT_SECONDS, set_as_default=False)
            except (OSError, TimeoutError):
                raise SdlabError(f"scheduler: no Dask scheduler answers at {cluster} within {CONNECT_SECONDS} s; "
                                 "start one ('dask scheduler', then 'dask worker ADDRESS') or use --workers N") from None
            yield stack.enter_context(client)
            return
        elif not hasattr(cluster, "scheduler_address"):
            raise invalid("cluster", cluster, "None, a distributed.Client or cluster, a scheduler address like tcp://host:8786, or a number of local workers")
        yield stack.enter_context(Client(cluster, set_as_default=False))


def _result(future):
    """A task's result; a task that kept killing its workers becomes one line."""
    from distributed import KilledWorker

    try:
        return future.result()
    except KilledWorker:
        raise SdlabError("cluster: a task was lost with every worker that ran it (each died: out of memory?); "
                         "the results so far are saved, run again to finish") from None


def preload(client, model: ModelSource) -> None:
    """Load ``model`` on every worker now (a timed run, or first batches that should not wait for it)."""
    client.run(_load, model)


def pipeline_summary(pipe) -> dict:
    """What two copies of a pipeline must share to draw the same images: each component's class, the
    scheduler's config, a tokenizer's length, and per weight its shape and float64 sum and absolute sum
    (a fused LoRA, a learned embedding, an edited weight or a swapped scheduler all change it)."""
    import torch

    summary = {}
    for name, part in sorted(pipe.components.items()):
        if part is None:
            continue
        entry: dict[str, Any] = {"class": type(part).__name__}
        if isinstance(part, torch.nn.Module):
            with torch.no_grad():
                entry["weights"] = {k: (tuple(v.shape), float(v.double().sum()), float(v.double().abs().sum()))
                                    for k, v in part.state_dict().items()}
        elif hasattr(part, "config") and name == "scheduler":
            entry["config"] = {k: v for k, v in dict(part.config).items() if not k.startswith("_")}
        elif hasattr(part, "__len__"):
            entry["length"] = len(part)
        summary[name] = entry
    return summary


def _summary_difference(ours: dict, theirs: dict) -> str | None:
    """The first way two :func:`pipeline_summary` results differ, in a few words; None when they agree."""
    for name in sorted(set(ours) | set(theirs)):
        a, b = ours.get(name), theirs.get(name)
        if a is None or b is None:
            return f"{name}: {'none' if a is None else a['class']} here, {'none' if b is None else b['class']} on the workers"
        if a["class"] != b["class"]:
            return f"{name}: {a['class']} here, {b['class']} on the workers"
        ca, cb = a.get("config", {}), b.get("config", {})
        if ca != cb or a.get("length") != b.get("length"):
            keys = sorted(k for k in set(ca) | set(cb) if ca.get(k) != cb.get(k))
            return f"{name}: {'config ' + ', '.join(keys[:3]) if keys else 'length'} differs"
        wa, wb = a.get("weights", {}), b.get("weights", {})
        extra, lacking = sorted(set(wa) - set(wb)), sorted(set(wb) - set(wa))
        if extra or lacking:
            return (f"{name}: {len(extra)} weights the workers' copy lacks (e.g. {extra[0]})" if extra
                    else f"{name}: {len(lacking)} weights missing here (e.g. {lacking[0]})")
        changed = sorted(k for k in wa if wa[k][0] != wb[k][0] or any(
            abs(x - y) > 1e-9 * max(wa[k][2], wb[k][2], 1e-30) for x, y in zip(wa[k][1:], wb[k][1:])))
        if changed:
            return f"{name}: {len(changed)} weights differ (e.g. {changed[0]})"
    return None


def check_same_pipeline(client, model: ModelSource, pipe) -> None:
    """Refuse, in one line, a pipeline handed in that differs from what the workers load from its source:
    changes made in memory (a LoRA fused in, a swapped scheduler) would otherwise be silently left out."""
    advice = "save it (pipe.save_pretrained(DIR)) and pass DIR, or run without a cluster"
    try:
        theirs = call_on_worker(client, model, pipeline_summary)
    except ModelNotFoundError as exc:  # a pipeline built in memory has no source a worker can load
        raise SdlabError(f"cluster: the workers cannot load the pipeline handed in from its source {model.source!r} "
                         f"({str(exc).split(': ', 1)[-1][:160]}); {advice}") from None
    difference = _summary_difference(pipeline_summary(pipe), theirs)
    if difference is not None:
        raise SdlabError(f"cluster: the pipeline handed in is not what the workers load from {model.source!r} ({difference}); {advice}")


def call_on_worker(client, model: ModelSource, fn: Callable, *args):
    """``fn(pipe, *args)`` on one worker (which keeps the pipeline it loads)."""
    return _result(client.submit(_on_worker, model, fn, args, pure=False))


def map_tasks(client, fn: Callable, jobs: Iterable[tuple], *shared) -> Iterator[tuple[int, Any]]:
    """``(i, fn(*shared, *jobs[i]))`` as each completes on the cluster, each job once.

    ``shared`` values (schemes, small models) are sent to every worker once
    (scattered, broadcast), not once per task. Tasks lost with a dying worker
    are rerun by Dask elsewhere; a result is released on the cluster once handed
    over. Closing the iterator (an exception in the caller's loop, a cancel)
    cancels what has not run.
    """
    from distributed import as_completed

    jobs = list(jobs)
    if not jobs:  # nothing to run (a resumed study that had finished): send nothing
        return
    # fresh keys (hash=False): a value scattered again under the key of one still being released hung a worker
    shared = tuple(client.scatter(list(shared), broadcast=True, hash=False)) if shared else ()
    futures = {client.submit(fn, *shared, *job, pure=False): i for i, job in enumerate(jobs)}
    try:
        for future in as_completed(list(futures), loop=client.loop):
            i = futures.pop(future)
            yield i, _result(future)
            future.release()
    finally:
        if futures:
            client.cancel(list(futures))


def map_on_workers(client, model: ModelSource, fn: Callable, jobs: Iterable[tuple]) -> Iterator[tuple[int, Any]]:
    """``(i, fn(pipe, *jobs[i]))`` as each completes, with each worker's own pipeline (see :func:`map_tasks`)."""
    return map_tasks(client, _on_worker, [(model, fn, job) for job in jobs])
