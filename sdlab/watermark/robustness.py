"""The robustness battery: every image x method x attack x strength, resumable, on all cores.

A *scheme* makes a (clean, marked) pair from a source image and scores any
image (higher = more likely marked). Post-hoc methods embed a payload in the
photo; :class:`sdlab.watermark.treering.TreeRing` generates its own pair, so
both run through the same loop. Each row holds the marked copy's bit accuracy
and score and the clean copy's, under the same attack with the same random
draw; the clean scores are the negatives of the ROC, as in WAVES.

One unit of work is one image x one scheme (all its attacks). After each
unit the rows are rewritten atomically, so a killed run loses at most the
units in flight and a rerun with the same arguments skips what is done.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Protocol, Sequence

import numpy as np
import pandas as pd

from ..errors import StoreError
from ..images import SAMPLE_PHOTOS, sample_photos
from ..io import atomic_path, atomic_write_text
from ..progress import Callback, Reporter
from ..validation import NON_NEGATIVE_INT, POSITIVE_INT, invalid, validate_params
from . import attacks as attacks_lib
from .calibration import Calibration, bundled
from .codec import PRESETS, Decoder, Payload, check_method, codec_input, embed_array, parse_payload
from .roc import auc, tpr_at_fpr

MANIFEST, ROWS = "battery.json", "rows.parquet"
ROW_COLUMNS = ["image", "method", "attack", "strength", "bit_accuracy", "score", "clean_bit_accuracy", "clean_score"]
BATTERY_CONSTRAINTS = {"workers": [POSITIVE_INT, None], "seed": [NON_NEGATIVE_INT]}
DEFAULT_PAYLOADS = {"dwtDct": PRESETS["sd1"].payload, "dwtDctSvd": PRESETS["sd1"].payload, "rivaGan": PRESETS["sd2"].payload}


class Scheme(Protocol):
    """Anything the battery can test: makes (clean, marked) pairs and scores images."""

    name: str

    def pair(self, index: int, name: str, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...

    def score(self, image: np.ndarray) -> tuple[float, float]:
        """(bit accuracy or NaN for zero-bit schemes, detection score: higher means marked)."""
        ...

    def signature(self) -> dict: ...


@dataclass
class PostHoc:
    """An invisible-watermark method with a fixed payload; score = -log10 p of :func:`detect`'s test."""

    method: str
    payload: Payload
    calibration: Calibration = field(default_factory=bundled, repr=False)

    def __post_init__(self) -> None:
        check_method(self.method, self.payload)

    @property
    def name(self) -> str:
        return self.method

    def pair(self, index: int, name: str, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        rgb, _ = codec_input(image, upscale=True, n_bits=self.payload.n_bits)
        return rgb, embed_array(rgb, self.payload, self.method)

    def score(self, image: np.ndarray) -> tuple[float, float]:
        """(bit accuracy of the library's decode, -log10 of the p-value ``detect`` reports)."""
        rgb, _ = codec_input(image, upscale=True, n_bits=self.payload.n_bits)
        outcome = self.calibration.test(Decoder(rgb), self.payload, self.method)
        return outcome.matched / self.payload.n_bits, float(-np.log10(max(outcome.p_value, 1e-300)))

    def signature(self) -> dict:
        return {"method": self.method, "payload": self.payload.key, "score": "detect p-value (vote contrast where it applies)"}


def as_scheme(method: str | Scheme, payload: Any = None) -> Scheme:
    """A method name (with its default payload, or ``payload``) or a ready scheme."""
    if not isinstance(method, str):
        return method
    check_method(method)
    return PostHoc(method, parse_payload(payload) if payload is not None else DEFAULT_PAYLOADS[method])


def plan_attacks(attacks: Sequence[str] | None, strengths: Mapping[str, Sequence[float]] | None,
                 models: Mapping[str, Any]) -> list[tuple[str, float]]:
    """(attack, strength) pairs, with an unattacked baseline first."""
    names = list(attacks) if attacks is not None else list(attacks_lib.DEFAULT_ATTACKS)
    strengths = dict(strengths or {})
    unknown = sorted(set(strengths) - set(names))
    if unknown:
        raise invalid("strengths", {k: strengths[k] for k in unknown},
                      f"strengths for the attacks being run only ({', '.join(names)})")
    plan = [("none", 0.0)]
    for name in names:
        if name == "none":
            continue
        attack = attacks_lib.check_attack(name, None, dict(models))
        for s in strengths.get(name, attack.strengths):
            attacks_lib.check_attack(name, float(s), dict(models))
            plan.append((name, float(s)))
    return plan


def _image_digest(image: np.ndarray | None) -> str:
    if image is None:
        return "generated"
    return hashlib.sha1(np.ascontiguousarray(image).tobytes() + str(image.shape).encode()).hexdigest()[:16]


# -- the work of one unit (runs in worker processes) --------------------------------------------
_WORKER: dict = {}


def _init_worker(schemes: dict, models: dict) -> None:
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass
    _WORKER.update(schemes=schemes, models=models)


def run_unit(scheme: Scheme, index: int, name: str, image: np.ndarray, plan: list[tuple[str, float]],
             seed: int, models: Mapping[str, Any]) -> list[dict]:
    """All attack rows of one image under one scheme."""
    clean, marked = scheme.pair(index, name, image)
    rows = []
    for a, (attack, strength) in enumerate(plan):
        attack_seed = seed * 1_000_003 + index * 1009 + a
        bits, score = scheme.score(attacks_lib.apply(marked, attack, strength, attack_seed, **models))
        clean_bits, clean_score = scheme.score(attacks_lib.apply(clean, attack, strength, attack_seed, **models))
        rows.append({"image": name, "method": scheme.name, "attack": attack, "strength": strength,
                     "bit_accuracy": bits, "score": score, "clean_bit_accuracy": clean_bits, "clean_score": clean_score})
    return rows


def _worker_unit(task: tuple) -> tuple[str, str, list[dict]]:
    scheme_name, index, name, image, plan, seed = task
    scheme = _WORKER["schemes"][scheme_name]
    return name, scheme_name, run_unit(scheme, index, name, image, plan, seed, _WORKER["models"])


def _cluster_unit(shared: tuple[dict, dict], task: tuple) -> list[dict]:
    """One unit on a Dask worker; ``shared`` (schemes, models) reached every worker once."""
    schemes, models = shared
    scheme_name, index, name, image, plan, seed = task
    return run_unit(schemes[scheme_name], index, name, image, plan, seed, models)


# -- the store -----------------------------------------------------------------------------------
class BatteryStore:
    """``battery.json`` (the arguments) and ``rows.parquet`` (finished rows) in one directory."""

    def __init__(self, directory: str | os.PathLike, manifest: dict) -> None:
        self.dir = Path(directory)
        self.manifest = manifest
        path = self.dir / MANIFEST
        if path.exists():
            try:
                old = json.loads(path.read_text(encoding="utf-8"))
            except json.JSONDecodeError as exc:
                raise StoreError(f"out: {str(path)!r} is corrupt ({exc}); delete the directory to start again") from None
            differ = sorted(k for k in set(old) | set(manifest) if old.get(k) != manifest.get(k))
            if differ:
                raise StoreError(f"out: {str(self.dir)!r} holds a battery run with other arguments "
                                 f"(differs in: {', '.join(differ)}); use another --out directory or delete it")
        else:
            atomic_write_text(path, json.dumps(manifest, indent=1))
        self.rows = self._read()

    def _read(self) -> pd.DataFrame:
        path = self.dir / ROWS
        if not path.exists():
            return pd.DataFrame(columns=ROW_COLUMNS)
        try:
            return pd.read_parquet(path)
        except Exception as exc:  # pyarrow raises several types for a damaged file
            raise StoreError(f"out: {str(path)!r} is unreadable ({exc}); delete it to recompute") from None

    def done(self) -> set[tuple[str, str]]:
        return set(zip(self.rows["image"], self.rows["method"]))

    def add(self, rows: list[dict]) -> None:
        new = pd.DataFrame(rows, columns=ROW_COLUMNS)
        self.rows = new if self.rows.empty else pd.concat([self.rows, new], ignore_index=True)
        with atomic_path(self.dir / ROWS) as tmp:
            self.rows.to_parquet(tmp, index=False)


def default_images(size: int = 512, names: Sequence[str] = SAMPLE_PHOTOS) -> dict[str, np.ndarray]:
    """The battery's default images: eight distinct photos scikit-image bundles (offline), square, ``size`` px."""
    return sample_photos(size, tuple(names))


def _as_named(images: Mapping[str, Any] | Iterable[Any] | None) -> dict[str, np.ndarray]:
    from ..images import load_rgb

    if images is None:
        return default_images()
    if isinstance(images, Mapping):  # None values: sources for schemes that generate their own pair (Tree-Ring)
        return {str(k): None if v is None else load_rgb(v) for k, v in images.items()}
    named = {}
    for i, image in enumerate(images):
        key = Path(image).stem if isinstance(image, (str, os.PathLike)) else f"image{i:03d}"
        named[key if key not in named else f"{key}-{i}"] = load_rgb(image)
    return named


def battery(images: Mapping[str, Any] | Iterable[Any] | None = None,
            methods: Sequence[str | Scheme] = ("dwtDct", "dwtDctSvd"),
            attacks: Sequence[str] | None = None,
            strengths: Mapping[str, Sequence[float]] | None = None,
            out: str | os.PathLike | None = None, workers: int | None = None, seed: int = 0,
            payload: Any = None, progress: bool = True, callback: Callback | None = None,
            cluster: Any = None, **models: Any) -> pd.DataFrame:
    """Run the battery; one row per image x method x attack x strength (plus an unattacked baseline).

    ``strengths`` maps an attack to its strengths (default: each attack's three).
    ``out`` makes it resumable; ``workers`` processes share the units (default:
    all cores for post-hoc methods; 1, in this process, when a torch model is
    involved, since forking a process that already runs torch threads can hang).
    ``cluster`` runs the units on Dask workers instead (see :func:`sdlab.cluster.connect`:
    a client or cluster, a scheduler address, a number of local workers); schemes and
    ``models`` reach each worker once, and this process stays the store's only writer.
    ``models`` passes ``vae=`` / ``pipe=`` to the regeneration attacks. An image
    given as ``None`` (in a mapping) is only a name for generating schemes.
    """
    validate_params({"workers": workers, "seed": seed}, BATTERY_CONSTRAINTS)
    if cluster is not None and workers is not None:
        raise invalid("workers", workers, "None when a cluster is given (its workers run the units)")
    if cluster is not None:
        from ..cluster import check_cluster

        check_cluster(cluster)
    named = _as_named(images)
    if not named:
        raise invalid("images", images, "at least one image")
    schemes = {s.name: s for s in (as_scheme(m, payload) for m in methods)}
    if not schemes:
        raise invalid("methods", methods, "at least one method")
    plan = plan_attacks(attacks, strengths, models)
    manifest = {
        "version": 1, "seed": seed, "plan": [list(p) for p in plan],
        "schemes": [s.signature() for s in schemes.values()],
        "images": {k: _image_digest(v) for k, v in named.items()},
    }
    store = BatteryStore(out, manifest) if out is not None else None
    done = store.done() if store else set()
    tasks = [(s, i, name, image, plan, seed) for s in schemes for i, (name, image) in enumerate(named.items())
             if (name, s) not in done]
    total, finished = len(named) * len(schemes), len(named) * len(schemes) - len(tasks)
    if any(image is None for image in named.values()) and any(isinstance(s, PostHoc) for s in schemes.values()):
        raise invalid("images", {k: v for k, v in named.items() if v is None},
                      "real images for post-hoc methods; None only for generating schemes such as Tree-Ring")
    torch_inside = bool(models) or not all(isinstance(s, PostHoc) for s in schemes.values())
    workers = workers or (1 if torch_inside else os.cpu_count() or 1)
    workers = max(1, min(workers, len(tasks) or 1))
    collected: list[dict] = []

    def record(rows: list[dict]) -> None:
        nonlocal finished
        finished += 1
        if store is not None:
            store.add(rows)
        collected.extend(rows)
        reporter(finished, total)

    started = time.monotonic()
    with Reporter(callback, progress, desc="battery") as reporter:
        if cluster is not None:
            from ..cluster import connect, map_tasks

            with connect(cluster) as client:
                for _, rows in map_tasks(client, _cluster_unit, [(task,) for task in tasks], (schemes, models)):
                    record(rows)
        elif workers == 1:
            _init_worker(schemes, models)
            for task in tasks:
                record(_worker_unit(task)[2])
        else:
            import multiprocessing as mp

            with mp.get_context("fork").Pool(workers, _init_worker, (schemes, models)) as pool:
                for _, _, rows in pool.imap_unordered(_worker_unit, tasks):
                    record(rows)
    rows = store.rows if store is not None else pd.DataFrame(collected, columns=ROW_COLUMNS)
    rows = rows.sort_values(["method", "image", "attack", "strength"], kind="stable").reset_index(drop=True)
    rows.attrs["seconds"] = time.monotonic() - started
    return rows


def summarize(rows: pd.DataFrame, fprs: Sequence[float] = (0.001, 0.01)) -> pd.DataFrame:
    """Per method x attack x strength: mean bit accuracy, TPR at each FPR (clean-vs-marked ROC), AUC, and
    the shares of marked and of clean copies detected at the calibrated 1 % and 0.1 % thresholds (score >= 2 or 3)."""
    records = []
    for (method, attack, strength), g in rows.groupby(["method", "attack", "strength"], sort=False):
        rec = {"method": method, "attack": attack, "strength": strength, "n": len(g),
               "bit_accuracy": g["bit_accuracy"].mean(), "clean_bit_accuracy": g["clean_bit_accuracy"].mean(),
               "detected@p<=1%": (g["score"] >= 2).mean(), "false_alarms@p<=1%": (g["clean_score"] >= 2).mean(),
               "detected@p<=0.1%": (g["score"] >= 3).mean(), "false_alarms@p<=0.1%": (g["clean_score"] >= 3).mean(),
               "auc": auc(g["clean_score"], g["score"])}
        for f in fprs:
            rec[f"tpr@{f:.1%}fpr"] = tpr_at_fpr(g["clean_score"], g["score"], f)
        records.append(rec)
    return pd.DataFrame(records).sort_values(["method", "attack", "strength"], kind="stable").reset_index(drop=True)
