"""The command line's cold start, and torch's thread count on a quiet and on a busy CPU.

1. The split of one ``sdlab generate`` (one shapes-world image, 25 steps): a bare
   ``python -c "import torch, diffusers"``, ``sdlab --help`` (what parsing costs), then the
   whole command; target: the whole command <= the bare import + 2 s (same run).
2. Bad input (a wrong-size init image, an unknown sampler, a negative step count, a
   missing model directory): each refused in <= 1 s, before torch is imported.
3. A finished sweep run again with the same arguments: <= 2 s (it answers from its store).
4. Threads: seconds per shapes-world image with 1 and 2 torch threads, alone and with one
   CPU-bound process beside it (a classroom laptop's browser); each case in a fresh process.

Every figure comes from this run; the load average is printed with them.
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import best_of, report  # noqa: E402

PY = sys.executable
PROMPT = "a small green cross at the bottom on a pink background"


def timed(argv: list[str], env: dict | None = None) -> tuple[float, subprocess.CompletedProcess]:
    started = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, env={**os.environ, **(env or {})})
    return time.perf_counter() - started, done


def best(argv: list[str], repeat: int) -> float:
    return best_of(lambda: subprocess.run(argv, capture_output=True), repeat=repeat, warmup=0)


def cold_start(tmp: Path, repeat: int) -> list[tuple]:
    bare = best([PY, "-c", "import torch, diffusers"], repeat)
    helptime = best([PY, "-m", "sdlab", "--help"], repeat)
    whole = best([PY, "-m", "sdlab", "generate", PROMPT, "--seed", "1", "--out", str(tmp / "gen")], repeat)
    print(f"bare import torch+diffusers {bare:.2f} s | sdlab --help {helptime:.2f} s | sdlab generate end to end {whole:.2f} s")
    return [("generate end to end - bare import (s)", whole - bare, "<= 2", whole - bare <= 2)]


def bad_inputs(tmp: Path) -> list[tuple]:
    from PIL import Image

    init = tmp / "odd.png"
    Image.new("RGB", (50, 50)).save(init)
    cases = {
        "init of a size the model cannot take": ["generate", PROMPT, "--init", str(init), "--out", str(tmp / "x")],
        "unknown sampler": ["generate", PROMPT, "--sampler", "Euler z", "--out", str(tmp / "x")],
        "negative steps": ["generate", PROMPT, "--steps", "-3", "--out", str(tmp / "x")],
        "missing model directory": ["generate", PROMPT, "--model", str(tmp / "nope"), "--out", str(tmp / "x")],
    }
    rows = []
    for what, argv in cases.items():
        seconds, done = timed([PY, "-X", "importtime", "-m", "sdlab", *argv])
        torch_loaded = re.search(r"^import time:.*\|\s+torch$", done.stderr, re.MULTILINE) is not None
        line = [l for l in done.stderr.splitlines() if l.startswith("error:")]
        print(f"{what}: exit {done.returncode} in {seconds:.2f} s, torch imported: {torch_loaded}; {line[0] if line else done.stderr[-200:]}")
        rows.append((f"bad input refused: {what} (s)", seconds, "<= 1, exit 2, no torch",
                     seconds <= 1 and done.returncode == 2 and not torch_loaded))
    return rows


def finished_sweep(tmp: Path) -> list[tuple]:
    argv = [PY, "-m", "sdlab", "sweep", PROMPT, "--x", "seed=1-2", "--steps", "2", "--out", str(tmp / "sweep")]
    first, done = timed(argv)
    assert done.returncode == 0, done.stderr
    again = min(timed(argv)[0] for _ in range(3))
    print(f"sweep of 2 cells first run {first:.2f} s, rerun of the finished sweep {again:.2f} s")
    return [("finished sweep rerun (s)", again, "<= 2", again <= 2)]


THREADS_SCRIPT = """
import sys, time, torch
from sdlab.generate import generate
from sdlab.models import load_pipeline
from sdlab.spec import GenerationSpec
pipe = load_pipeline("shapes-world", device="cpu")
generate(pipe, GenerationSpec("a red circle", seed=0, steps=3))
assert torch.get_num_threads() == int(sys.argv[1])
times = []
for seed in range(int(sys.argv[2])):
    started = time.perf_counter()
    generate(pipe, GenerationSpec(%r, seed=seed, steps=25))
    times.append(time.perf_counter() - started)
print(min(times), sorted(times)[len(times) // 2])
""" % PROMPT


def threads(images: int) -> list[tuple]:
    rows, figures = [], {}
    for busy in (False, True):
        hog = subprocess.Popen([PY, "-c", "while True: pass"]) if busy else None
        try:
            for n in (1, 2):
                done = subprocess.run([PY, "-c", THREADS_SCRIPT, str(n), str(images)], capture_output=True, text=True, check=True,
                                      env={**os.environ, "SDLAB_THREADS": str(n)})  # else loading applies sdlab's policy
                fastest, median = map(float, done.stdout.split())
                figures[(busy, n)] = median
                print(f"{'busy' if busy else 'quiet'} CPU, {n} torch thread(s): median {median:.3f} s per image (fastest {fastest:.3f})")
        finally:
            if hog is not None:
                hog.kill()
    for busy in (False, True):
        ratio = figures[(busy, 2)] / figures[(busy, 1)]
        rows.append((f"{'busy' if busy else 'quiet'}: 2 threads / 1 thread, s per image", ratio, "(measured)", True))
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--images", type=int, default=5, help="images per thread measurement")
    parser.add_argument("--only", choices=("cold", "bad", "sweep", "threads"))
    args = parser.parse_args(argv)
    print("load average before:", " ".join(f"{x:.2f}" for x in os.getloadavg()))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        parts = {"cold": lambda: cold_start(tmp, args.repeat), "bad": lambda: bad_inputs(tmp), "sweep": lambda: finished_sweep(tmp),
                 "threads": lambda: threads(args.images)}
        for name, part in parts.items():
            if args.only in (None, name):
                rows += part()
    print("load average after:", " ".join(f"{x:.2f}" for x in os.getloadavg()))
    report(rows)


if __name__ == "__main__":
    main()
