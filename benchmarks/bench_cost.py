"""How close sdlab.cost's estimate comes to a real generation's time and memory on this machine.

Each case (shapes world; size, batch, steps) runs in a fresh process with one torch thread: the generate
call's seconds and the process's peak resident memory above what it held before the call (ru_maxrss minus
VmRSS after loading), beside the estimate's seconds and activation bytes (peak minus weights). The estimate
is meant as an order of magnitude; the target is a ratio (measured / estimated) within 1/5 to 5. The load
average is printed with the figures: under load the measured seconds grow, the estimate does not.

Fine-tuning (``sdlab.finetune.budget``): a LoRA's two training steps at batch 64 and 256 in fresh processes; the
peak's growth per item beside the estimate's (the generation working set times ``TRAINING_ACTIVATIONS``).

    python benchmarks/bench_cost.py            # 64, 128 and 256 px; batch 1 and 4; training
    python benchmarks/bench_cost.py --quick    # 64 px only
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import report  # noqa: E402

CHILD = r"""
import json, resource, sys, time
import torch
torch.set_num_threads(1)
from sdlab.generate import generate
from sdlab.models import load_pipeline
from sdlab.spec import GenerationSpec
size, batch, steps = map(int, sys.argv[1:4])
pipe = load_pipeline("shapes-world", device="cpu")
generate(pipe, GenerationSpec("a red circle", seed=0, steps=2, width=64, height=64))  # warm: first-call costs apart
rss = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmRSS:")) * 1024
start = time.perf_counter()
generate(pipe, GenerationSpec("a red circle", seed=0, steps=steps, width=size, height=size, batch_size=batch))
seconds = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"seconds": seconds, "activation_bytes": max(0, peak - rss)}))
"""

TRAIN_CHILD = r"""
import json, resource, sys, tempfile
import torch
torch.set_num_threads(1)
from sdlab.finetune.common import Dataset
from sdlab.finetune.lora import LoraConfig, train_lora
from sdlab.mini import concepts
from sdlab.models import load_pipeline
pipe = load_pipeline("shapes-world", device="cpu")
images, table = concepts.make_set("star", 20)
with tempfile.TemporaryDirectory() as out:
    train_lora(pipe, Dataset(images, table["TEXT"].tolist()), out, LoraConfig(steps=2, batch=int(sys.argv[1])))
print(json.dumps({"peak_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))
"""


def run_child(code: str, *args) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "SDLAB_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True, env=env)
    if done.returncode:
        raise SystemExit(done.stderr[-2000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def training_per_item() -> tuple[float, float]:
    """(measured, estimated) bytes a LoRA training step holds per item on the shapes world."""
    from sdlab.cost import unet_cost
    from sdlab.finetune.budget import TRAINING_ACTIVATIONS
    from sdlab.models import load_pipeline

    small, large = (run_child(TRAIN_CHILD, b)["peak_bytes"] for b in (64, 256))
    _, alive = unet_cost(dict(load_pipeline("shapes-world").unet.config), 16, 16)
    return (large - small) / (256 - 64), TRAINING_ACTIVATIONS * alive * 4


def measure(size: int, batch: int, steps: int) -> dict:
    return run_child(CHILD, size, batch, steps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    from sdlab import cost
    from sdlab.models import SHIPPED_DIR

    cases = [(64, 1, 25), (64, 4, 25)] + ([] if args.quick else [(128, 1, 25), (256, 1, 10)])
    print(f"load average {os.getloadavg()[0]:.1f}; matmul rate {cost.cpu_flops() / 1e9:.1f} GFLOP/s per CPU-second (numpy)")
    print(f"{'case':<22}{'est. s':>9}{'meas. s':>9}{'ratio':>7}{'est. act. MB':>14}{'meas. act. MB':>15}{'ratio':>7}")
    rows = []
    for size, batch, steps in cases:
        est = cost.estimate_generation(SHIPPED_DIR, size, size, batch, steps, 5.0, "cpu")
        got = measure(size, batch, steps)
        act = est.peak_bytes - est.weight_bytes
        t_ratio, m_ratio = got["seconds"] / est.seconds, got["activation_bytes"] / act
        name = f"{size}px x{batch}, {steps} steps"
        print(f"{name:<22}{est.seconds:9.2f}{got['seconds']:9.2f}{t_ratio:7.2f}{act / 1e6:14.1f}{got['activation_bytes'] / 1e6:15.1f}{m_ratio:7.2f}")
        rows.append((f"time ratio {name}", t_ratio, "1/5 .. 5", 0.2 <= t_ratio <= 5))
        rows.append((f"memory ratio {name}", m_ratio, "<= 5", m_ratio <= 5))
    if not args.quick:
        got, est = training_per_item()
        print(f"LoRA training, per item: estimated {est / 1e6:.2f} MB, measured {got / 1e6:.2f} MB (batch 64 -> 256)")
        rows.append(("training memory per item, measured / estimated", got / est, "1/2 .. 2", 0.5 <= got / est <= 2))
    report(rows)


if __name__ == "__main__":
    main()
