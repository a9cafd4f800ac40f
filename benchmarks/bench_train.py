"""Training speed of ``sdlab mini train`` with the default recipe, against the foundation issue's target.

- the whole from-scratch run (every stage at its default step count, 40,000 images) <= 90 min on this machine;
- the UNet step as the training loop takes it, against a bare forward + backward + AdamW step of the
  same UNet in the same run (the loop's own overhead: batch draw, noise, shape weights, clipping, EMA).

Each stage's seconds per step is the difference between a short and a longer run of the real stage
function (so its setup does not count), on a small in-memory dataset; the fixed costs (drawing the
images, encoding the latents) are timed on a slice and scaled. This projects the run; the closing
notes give the measured wall clock of full runs.
"""
from __future__ import annotations

import copy
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import report  # noqa: E402

from sdlab.mini import model as model_lib  # noqa: E402
from sdlab.mini import tokenizer as tokenizer_lib  # noqa: E402
from sdlab.mini import train as T  # noqa: E402
from sdlab.mini import world  # noqa: E402

TARGET_MINUTES = 90.0
SAMPLE = 512  # images in the timing dataset


def _seconds(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def per_step(run, short: int, long: int) -> float:
    """Seconds per step of ``run(steps, directory)``: the difference of two fresh runs, so setup cancels."""
    with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
        t_short = _seconds(lambda: run(short, Path(a)))
        t_long = _seconds(lambda: run(long, Path(b)))
    return (t_long - t_short) / (long - short)


def bare_unet_step(cfg: T.TrainConfig, repeat: int = 10) -> float:
    """Seconds of one forward + backward + AdamW step of the default UNet, nothing else."""
    unet = model_lib.build_unet(cfg.model)
    opt = torch.optim.AdamW(unet.parameters(), lr=1e-4)
    z, t = torch.randn(cfg.unet_batch, cfg.model.latent_channels, 16, 16), torch.randint(0, 1000, (cfg.unet_batch,))
    context = torch.randn(cfg.unet_batch, tokenizer_lib.MAX_LENGTH, cfg.model.text_width)

    def step() -> None:
        loss = unet(z, t, context).sample.pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(3):
        step()
    return min(_seconds(step) for _ in range(repeat))


def main() -> None:
    torch.set_num_threads(int(sys.argv[1]) if len(sys.argv) > 1 else torch.get_num_threads())
    cfg = T.TrainConfig()
    small = replace(cfg, n_images=SAMPLE, checkpoint_minutes=1e9)
    draw = _seconds(lambda: world.make_dataset(SAMPLE, seed=0)) * cfg.n_images / SAMPLE
    images, meta = world.make_dataset(SAMPLE, seed=0)
    captions = meta["TEXT"].tolist()
    with tempfile.TemporaryDirectory() as d:
        tok = tokenizer_lib.save_tokenizer(world.vocabulary(), Path(d) / "tokenizer")
    vae = model_lib.build_vae(cfg.model).requires_grad_(False).eval()
    with tempfile.TemporaryDirectory() as d:
        encode = _seconds(lambda: T.encode_latents(Path(d), vae, images, progress=False)) * cfg.n_images / SAMPLE
        latents = T.encode_latents(Path(d), vae, images, progress=False)
    text = model_lib.build_text_encoder(cfg.model, tok).eval()

    stages = {
        "vae": (cfg.vae_steps, lambda n, d: T.train_vae(d, images, replace(small, vae_steps=n), progress=False)),
        "text": (cfg.text_steps, lambda n, d: T.pretrain_text_encoder(d, captions, tok, replace(small, text_steps=n), progress=False)),
        "unet": (cfg.unet_steps, lambda n, d: T.train_unet(d, latents, captions, tok, text, replace(small, unet_steps=n),
                                                          progress=False, images=images)),
        "decoder": (cfg.decoder_steps, lambda n, d: T.finetune_decoder(d, copy.deepcopy(vae), images,
                                                                       replace(small, decoder_steps=n), progress=False)),
    }
    seconds = {name: per_step(run, 5, 25) for name, (_, run) in stages.items()}
    bare = bare_unet_step(cfg)
    minutes = {name: seconds[name] * steps / 60 for name, (steps, _) in stages.items()}
    total = sum(minutes.values()) + (draw + encode) / 60

    print(f"threads {torch.get_num_threads()}; default recipe: VAE {cfg.vae_steps}, text {cfg.text_steps}, "
          f"UNet {cfg.unet_steps} (batch {cfg.unet_batch}, shape weight {cfg.unet_foreground_weight:g}), decoder {cfg.decoder_steps}")
    for name, (steps, _) in stages.items():
        print(f"  {name:<8} {1 / seconds[name]:6.2f} steps/s  x {steps:>6,} steps = {minutes[name]:5.1f} min")
    print(f"  data     {draw / 60:5.1f} min to draw {cfg.n_images:,} images, {encode / 60:4.1f} min to encode them")
    report([
        ("UNet step in the training loop (s)", seconds["unet"], "(measured)", True),
        ("bare UNet fwd+bwd+AdamW step (s)", bare, "(reference)", True),
        ("training loop overhead vs bare step", seconds["unet"] / bare - 1, "(figure)", True),
        ("projected from-scratch run (min)", total, f"<= {TARGET_MINUTES:g}", total <= TARGET_MINUTES),
    ])


if __name__ == "__main__":
    main()
