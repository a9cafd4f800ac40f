"""Sweeps on a Dask cluster: the same store as one process, nothing lost or duplicated when a worker dies,
one-line failures; and a finished sweep that answers from its store without torch.

The cluster is a LocalCluster of 2 single-thread worker processes on 127.0.0.1. The
single-process reference runs with one torch thread too: on a CPU, torch's reductions
sum in per-thread chunks, so images are identical for equal thread counts (another count
can move a pixel by one level).
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from sdlab.errors import ModelNotFoundError, SdlabError, StoreError
from sdlab.mini.metrics import sweep_metrics
from sdlab.spec import GenerationSpec
from sdlab.sweep import Axis, run_sweep

BASE = GenerationSpec("a red circle at the top left on a white background", steps=3, sampler="Euler a")
AXES = ["seed=1-4", "cfg=1,3,7"]  # 12 cells; max_batch=3: 4 batches, guidance varying inside them


@pytest.fixture(scope="module")
def client():
    distributed = pytest.importorskip("distributed")
    import logging

    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                  dashboard_address=None, silence_logs=logging.ERROR) as cluster:
        with distributed.Client(cluster, set_as_default=False) as c:
            yield c


@pytest.fixture(scope="module")
def local_store(tiny_pipeline_dir, tmp_path_factory):
    """The single-process sweep, with one torch thread like each worker."""
    import torch

    out = tmp_path_factory.mktemp("local")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run_sweep(str(tiny_pipeline_dir), BASE, [Axis.parse(a) for a in AXES], out, metrics=sweep_metrics, max_batch=3, progress=False)
    finally:
        torch.set_num_threads(threads)
    return out


def _table(store: Path) -> pd.DataFrame:
    return pd.read_parquet(store / "results.parquet").sort_values("cell").reset_index(drop=True)


def _assert_same_store(store: Path, reference: Path) -> None:
    """Row for row (every column, file names included) and pixel for pixel; no stray PNG."""
    table, expected = _table(store), _table(reference)
    assert table["cell"].is_unique and len(table) == len(expected)
    pd.testing.assert_frame_equal(table, expected)
    for file in expected["file"]:
        assert np.array_equal(np.asarray(Image.open(store / file)), np.asarray(Image.open(reference / file))), file
    assert len(list((store / "images").glob("*.png"))) == len(expected)


def _pipelines(client) -> dict:
    """Per worker, the id of each pipeline it keeps."""
    return client.run(lambda: {k[0]: id(v) for k, v in __import__("sdlab.cluster").cluster._PIPES.items()})


@pytest.mark.slow
def test_cluster_sweep_equals_the_single_process_sweep(client, tiny_pipeline_dir, local_store, tmp_path):
    out = tmp_path / "cluster"
    progress = []
    table = run_sweep(str(tiny_pipeline_dir), BASE, [Axis.parse(a) for a in AXES], out, metrics=sweep_metrics, max_batch=3,
                      progress=False, cluster=client, callback=lambda done, total: progress.append((done, total)))
    assert len(table) == 12 and progress[-1] == (12, 12) and len(progress) == 4  # one report per batch
    assert {"saturation", "all_ok"} <= set(table.columns)  # metrics made by a function of the pipeline, on the workers
    _assert_same_store(out, local_store)
    # each worker loaded the model once and keeps it: a second sweep reuses the same pipelines
    loaded = _pipelines(client)
    assert any(loaded.values())
    run_sweep(str(tiny_pipeline_dir), BASE, [Axis.parse("seed=5-8")], tmp_path / "again", max_batch=1, progress=False, cluster=client)
    assert {w: p for w, p in _pipelines(client).items() if loaded.get(w)} == {w: p for w, p in loaded.items() if p}


def test_a_pipeline_handed_in_runs_on_workers_only_if_they_load_the_same(client, tiny_pipeline_dir, local_store, tmp_path):
    """Workers load a pipeline's source; one changed in memory (an edited weight, a LoRA added, another
    scheduler) is refused in one line, before any image, instead of silently sweeping the unchanged model."""
    import copy

    import torch
    from diffusers import EulerDiscreteScheduler
    from peft import LoraConfig

    from sdlab.models import load_pipeline, rebuild_pipeline

    pipe = load_pipeline(str(tiny_pipeline_dir), device="cpu")
    run_sweep(pipe, BASE, [Axis.parse(a) for a in AXES], tmp_path / "same", metrics=sweep_metrics, max_batch=3, progress=False, cluster=client)
    _assert_same_store(tmp_path / "same", local_store)

    def fresh():
        return load_pipeline(str(tiny_pipeline_dir), device="cpu")

    edited, lora, swapped = fresh(), fresh(), fresh()  # changed in place, as load_lora_weights or a new scheduler do
    with torch.no_grad():
        edited.unet.conv_in.weight[0, 0, 0, 0] += 0.01
    lora.unet.add_adapter(LoraConfig(r=2, target_modules=["to_q"]))
    swapped.scheduler = EulerDiscreteScheduler.from_config(swapped.scheduler.config)
    built = rebuild_pipeline(pipe, unet=copy.deepcopy(pipe.unet))  # made in memory: no source to load
    for changed, reason in ((edited, r"is not what the workers load from .*\(unet: 1 weights differ \(e\.g\. conv_in\.weight\)\)"),
                            (lora, r"is not what the workers load from .*\(unet: \d+ weights the workers' copy lacks \(e\.g\. .*to_q\."),
                            (swapped, r"is not what the workers load from .*\(scheduler: EulerDiscreteScheduler here, "),
                            (built, r"the workers cannot load the pipeline handed in from its source 'unknown'")):
        out = tmp_path / f"changed{len(list(tmp_path.iterdir()))}"
        with pytest.raises(SdlabError, match=rf"^cluster: .*{reason}") as caught:
            run_sweep(changed, BASE, [Axis.parse("seed=1-2")], out, progress=False, cluster=client)
        assert "\n" not in str(caught.value) and "pipe.save_pretrained(DIR)" in str(caught.value)
        assert not list(out.glob("images/*.png"))


@pytest.mark.slow
def test_a_worker_killed_mid_sweep_loses_and_duplicates_nothing(client, tiny_pipeline_dir, local_store, tmp_path):
    client.wait_for_workers(2, timeout=60)
    killed = []

    def kill_a_busy_worker(done, total):
        if killed:
            return
        pids = client.run(os.getpid)
        deadline = time.monotonic() + 10
        while not (busy := [w for w, keys in client.processing().items() if keys and w in pids]) and time.monotonic() < deadline:
            time.sleep(0.05)  # the next batch is on its way to a worker
        assert busy, "no worker was running a batch"
        os.kill(pids[busy[0]], signal.SIGKILL)
        killed.append((done, busy[0], pids[busy[0]]))

    out = tmp_path / "killed"
    table = run_sweep(str(tiny_pipeline_dir), BASE, [Axis.parse(a) for a in AXES], out, metrics=sweep_metrics, max_batch=3,
                      progress=False, cluster=client, callback=kill_a_busy_worker)
    assert killed and killed[0][0] < 12  # killed mid-sweep, after the first batch was written
    assert len(table) == 12 and table["cell"].is_unique
    _assert_same_store(out, local_store)
    client.wait_for_workers(2, timeout=60)  # the nanny restarted it
    assert killed[0][2] not in client.run(os.getpid).values()


@pytest.mark.slow
def test_a_client_killed_mid_sweep_resumes_from_its_store(client, tiny_pipeline_dir, local_store, tmp_path):
    from sdlab.errors import Cancelled

    def stop(done, total):
        raise Cancelled("stopped by the test")

    out = tmp_path / "resumed"
    with pytest.raises(Cancelled):
        run_sweep(str(tiny_pipeline_dir), BASE, [Axis.parse(a) for a in AXES], out, metrics=sweep_metrics, max_batch=3,
                  progress=False, cluster=client, callback=stop)
    assert 3 <= len(_table(out)) < 12  # the batch that reported was saved, the rest cancelled
    run_sweep(str(tiny_pipeline_dir), BASE, [Axis.parse(a) for a in AXES], out, metrics=sweep_metrics, max_batch=3,
              progress=False, cluster=client)
    table = _table(out)
    assert len(table) == 12 and table["cell"].is_unique
    with pytest.raises(StoreError, match="other arguments"):
        run_sweep(str(tiny_pipeline_dir), BASE, [Axis.parse("seed=1-2")], out, progress=False, cluster=client)


def test_a_worker_that_cannot_load_the_model_gives_one_line(client, tmp_path):
    with pytest.raises(ModelNotFoundError) as caught:
        run_sweep(str(tmp_path / "no-such-model"), BASE, [Axis.parse("seed=1-2")], tmp_path / "store", progress=False, cluster=client)
    message = str(caught.value)
    assert "\n" not in message and message.startswith("worker tcp://127.0.0.1:") and "no-such-model" in message


def test_a_scheduler_that_does_not_answer_gives_one_line_quickly(tmp_path, monkeypatch):
    import socket

    import sdlab.cluster

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setattr(sdlab.cluster, "CONNECT_SECONDS", 1)
    started = time.perf_counter()
    with pytest.raises(SdlabError, match=f"no Dask scheduler answers at tcp://127.0.0.1:{port}") as caught:
        run_sweep("shapes-world", BASE, [Axis.parse("seed=1-2")], tmp_path, progress=False, cluster=f"tcp://127.0.0.1:{port}")
    assert time.perf_counter() - started < 10 and "\n" not in str(caught.value)
    for bad, name in (("nonsense", "scheduler"), (0, "workers"), (1.5, "cluster")):
        with pytest.raises(SdlabError, match=f"^{name}: "):
            run_sweep("shapes-world", BASE, [Axis.parse("seed=1-2")], tmp_path / "b", progress=False, cluster=bad)


def _cli(args: list[str]) -> subprocess.CompletedProcess:
    """``sdlab`` in a fresh interpreter; prints which of torch/diffusers/distributed were imported."""
    code = ("import sys\nfrom sdlab.cli import main\ntry:\n    rc = main(sys.argv[1:])\nfinally:\n"
            "    print('imported:', sorted(m for m in ('torch', 'diffusers', 'distributed') if m in sys.modules))\nsys.exit(rc)")
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120)


def test_cli_refuses_bad_sweeps_and_answers_a_finished_one_without_torch(tiny_pipeline_dir, tmp_path):
    from sdlab.cli import main

    args = ["sweep", "a red circle", "--seed", "1", "--steps", "2", "--x", "seed=1-2", "--model", str(tiny_pipeline_dir), "--out", str(tmp_path / "s")]
    assert main(args) == 0  # made in this process: the model loads here
    again = _cli(args)
    assert again.returncode == 0, again.stderr
    assert "imported: []" in again.stdout and str(tmp_path / "s" / "grid.png") in again.stdout
    for bad, message in (
        (["--x", "seed=1-x"], "not a number or a range"),
        (["--x", "prompt=blue,green"], "does not occur in the prompt"),
        (["--prompts", str(tmp_path / "missing.txt")], "--prompts: no such file"),
        (["--scheduler", "nonsense"], "scheduler: 'nonsense' is not valid"),
    ):
        refused = _cli([*args[:-1], str(tmp_path / "t"), *bad])
        assert refused.returncode == 2 and message in refused.stderr and refused.stderr.count("\n") == 1, refused.stderr
        assert "imported: []" in refused.stdout
