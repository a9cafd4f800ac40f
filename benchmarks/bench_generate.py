"""Generation speed on the shapes world (CPU, fp32), against the targets of the foundation and studio issues.

- one 25-step image <= 0.5 s; a batch of 8 <= 2 s;
- sdlab's overhead over calling the diffusers pipeline directly, same run: <= 5%;
- time per image for each sampler at 25 steps (figures, no target).
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import best_of, report  # noqa: E402

from sdlab.generate import generate  # noqa: E402
from sdlab.models import load_pipeline, model_info  # noqa: E402
from sdlab.samplers import make_scheduler, sampler_names, scheduler_config  # noqa: E402
from sdlab.spec import GenerationSpec  # noqa: E402

PROMPT = "a large red circle at the top left on a white background"


def main() -> None:
    torch.set_num_threads(int(sys.argv[1]) if len(sys.argv) > 1 else torch.get_num_threads())
    pipe = load_pipeline("shapes-world", device="cpu")
    d = model_info(pipe).defaults
    spec = GenerationSpec(PROMPT, seed=1, steps=25)
    one = best_of(lambda: generate(pipe, spec))
    eight = best_of(lambda: generate(pipe, spec.replace(batch_size=8)), repeat=3)

    def plain():  # what a user of diffusers alone would write
        pipe.scheduler = make_scheduler(d["sampler"], scheduler_config(pipe))
        return pipe(PROMPT, num_inference_steps=25, guidance_scale=d["guidance"], width=64, height=64,
                    generator=torch.Generator("cpu").manual_seed(1)).images

    # interleave so drifting machine load hits both alike
    plain_t, sdlab_t = [], []
    for _ in range(5):
        plain_t.append(best_of(plain, repeat=2, warmup=0))
        sdlab_t.append(best_of(lambda: generate(pipe, spec), repeat=2, warmup=0))
    overhead = min(sdlab_t) / min(plain_t) - 1
    print(f"threads {torch.get_num_threads()}, defaults {d}")
    report([
        ("one image, 25 steps (s)", one, "<= 0.5", one <= 0.5),
        ("batch of 8, 25 steps (s)", eight, "<= 2.0", eight <= 2.0),
        ("plain diffusers, one image (s)", min(plain_t), "(reference)", True),
        ("sdlab overhead vs plain diffusers", overhead, "<= 0.05", overhead <= 0.05),
    ])
    print("\nseconds per image at 25 steps, by sampler:")
    for name in sampler_names():
        t = best_of(lambda: generate(pipe, spec.replace(sampler=name)), repeat=3)
        print(f"  {name:<20} {t:.3f}")


if __name__ == "__main__":
    main()
