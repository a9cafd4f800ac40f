"""The watermark battery and the bias-amplification study on a Dask cluster: the same rows as one process.

The cluster is a LocalCluster of 2 single-thread worker processes on 127.0.0.1; the local
reference runs with one torch thread too, so images are identical (see test_sweep_cluster.py).
"""
from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest

from sdlab.audit.amplification import run_amplification
from sdlab.cli.audit import shapes_world
from sdlab.errors import ValidationError
from sdlab.images import sample_photos
from sdlab.watermark import battery

distributed = pytest.importorskip("distributed")
ARGS = dict(methods=["dwtDct", "dwtDctSvd"], attacks=["jpeg", "rotate"], strengths={"jpeg": [90], "rotate": [10]}, progress=False)


@pytest.fixture(scope="module")
def client():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                  dashboard_address=None, silence_logs=logging.ERROR) as cluster:
        with distributed.Client(cluster, set_as_default=False) as c:
            yield c


@pytest.fixture(scope="module")
def images() -> dict[str, np.ndarray]:
    return sample_photos(256, ("astronaut", "rocket", "coffee"))


def test_battery_on_a_cluster_equals_one_process_and_resumes(client, images, tmp_path):
    local = battery(images, workers=1, **ARGS)
    seen = []
    remote = battery(images, cluster=client, out=tmp_path / "b", callback=lambda done, total: seen.append((done, total)), **ARGS)
    pd.testing.assert_frame_equal(remote, local)
    assert seen[-1] == (6, 6) and len(local) == 3 * 2 * 3
    again = battery(images, cluster=client, out=tmp_path / "b", **ARGS)  # a finished store: nothing is rerun
    pd.testing.assert_frame_equal(again, local)
    assert pd.read_parquet(tmp_path / "b" / "rows.parquet").shape[0] == len(local)


def test_battery_refuses_workers_beside_a_cluster(client, images):
    with pytest.raises(ValidationError, match=r"^workers: 2 is not valid; valid: None when a cluster is given"):
        battery(images, cluster=client, workers=2, **ARGS)


@pytest.mark.slow
def test_amplification_on_a_cluster_equals_one_process(client, tiny_pipeline_dir):
    import torch

    study = dict(model=str(tiny_pipeline_dir), n=6, guidance_scales=(1.0, 5.0), train_rows=200, steps=2, seed=3)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        local = run_amplification(shapes_world(), **study)
    finally:
        torch.set_num_threads(threads)
    remote = run_amplification(shapes_world(), cluster=client, **study)
    pd.testing.assert_frame_equal(remote.table, local.table)
    pd.testing.assert_frame_equal(remote.tables["distribution"], local.tables["distribution"])


@pytest.mark.slow
def test_amplification_jobs_make_the_same_pixels_on_a_worker(client, tiny_pipeline_dir):
    """The images the study checks, not only its counts (a random tiny model's checker readings say little)."""
    import torch

    from sdlab.audit.amplification import _generate_on_worker, pipeline_generator
    from sdlab.cluster import ModelSource, map_on_workers
    from sdlab.models import load_pipeline

    jobs = [("a triangle", 3, 5.0, 0, 2), ("a triangle", 2, 1.0, 7, 2)]
    remote = dict(map_on_workers(client, ModelSource(str(tiny_pipeline_dir), device="cpu"), _generate_on_worker, jobs))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        pipe = load_pipeline(str(tiny_pipeline_dir), device="cpu")
        local = [pipeline_generator(pipe, steps=steps)(prompt, n, g, seed) for prompt, n, g, seed, steps in jobs]
    finally:
        torch.set_num_threads(threads)
    for i, images in enumerate(local):
        assert images.shape == (jobs[i][1], 64, 64, 3) and np.ptp(images) > 0
        assert np.array_equal(remote[i], images)


def test_amplification_cluster_needs_a_model_not_a_function(client):
    with pytest.raises(ValidationError, match=r"^cluster: .* is not valid; valid: a cluster with model="):
        run_amplification(shapes_world(), generate=lambda *a: None, cluster=client)


@pytest.mark.parametrize("argv, message", [
    (["audit", "amplification", "--scheduler", "nonsense"], "error: scheduler: 'nonsense' is not valid; valid: an address HOST:PORT"),
    (["audit", "amplification", "--workers", "0"], "argument --workers: '0' is not valid; valid: a whole number >= 1"),
    (["audit", "amplification", "--workers", "2", "--scheduler", "127.0.0.1:1"], "not allowed with argument --workers"),
    (["watermark", "battery", "--out", "OUT", "--scheduler", "nonsense"], "error: scheduler: 'nonsense' is not valid"),
    (["watermark", "battery", "--out", "OUT", "--scheduler", "127.0.0.1:1", "--workers", "2"],
     "error: workers: 2 is not valid; valid: None when a cluster is given"),
])
def test_cluster_options_refuse_in_one_line(argv, message, capsys, tmp_path):
    from sdlab.cli import main

    argv = [str(tmp_path / "b") if a == "OUT" else a for a in argv]
    try:
        status = main(argv)
    except SystemExit as exc:  # argparse's own refusals
        status = exc.code
    err = capsys.readouterr().err.strip()
    assert status == 2 and message in err and len(err.splitlines()) == 1
