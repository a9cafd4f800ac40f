"""``sdlab train controlnet``: a ControlNet for the shapes world, trained on its images' edge or mask maps."""
from __future__ import annotations

from pathlib import Path


def register(methods) -> None:
    p = methods.add_parser(
        "controlnet", help="train a ControlNet (trainable encoder copy + zero convolutions) on the shapes world; resumes if killed",
    )
    p.add_argument("--condition", required=True, choices=("edges", "mask"),
                   help="edges: Canny and exact outlines (fill50k-like); mask: the shape's region")
    p.add_argument("--out", required=True, help="run directory: data cache, checkpoint, log, snapshots and controlnet/")
    p.add_argument("--model", default="shapes-world", help="the locked base model (default: the shipped shapes world)")
    p.add_argument("--steps", type=int, default=2500, help="optimiser steps (default 2500: the first stage of the shipped edge ControlNet)")
    p.add_argument("--batch", type=int, default=32, help="images per step (default 32)")
    p.add_argument("--lr", type=float, default=5e-4, help="AdamW learning rate after a 50-step warm-up (default 5e-4)")
    p.add_argument("--lr-scheduler", default="constant",
                   help="after the warm-up: constant (default, ControlNet's recipe) or cosine (toward 0 by the last step)")
    p.add_argument("--images", type=int, default=8000, help="training scenes (default 8000)")
    p.add_argument("--focus-weight", type=float, default=12.0,
                   help="extra loss weight on latent cells at and next to the shape (default 12, as the shapes world's UNet; 0: plain loss)")
    p.add_argument("--text-dropout", type=float, default=0.2, help="share of empty captions (default 0.2)")
    p.add_argument("--guided-weight", type=float, default=0.0,
                   help="also a loss on the CFG-guided prediction, this much (default 0: off; a step then costs about twice as much)")
    p.add_argument("--guided-cfg", type=float, default=5.0, help="the CFG scale of that loss (default 5, the shapes world's)")
    p.add_argument("--unconditional-weight", type=float, default=0.5,
                   help="with --guided-weight: also a loss on the empty prompt's prediction, this much (default 0.5)")
    p.add_argument("--timestep-range", type=int, nargs=2, metavar=("LO", "HI"),
                   help="draw training timesteps from [LO, HI) only (default: all; low ones refine outlines, high ones place the layout)")
    p.add_argument("--init", help="continue from this ControlNet (registered name or diffusers directory) instead of zero convolutions")
    p.add_argument("--snapshot-every", type=int, default=0, help="keep the ControlNet every N steps (default 0: never)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out (without it, a directory holding a run is refused)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_controlnet)


def cmd_controlnet(args) -> int:
    from ..conditioning.train import CHECKPOINT, ControlNetConfig
    from ..errors import SdlabError
    from ..validation import POSITIVE_INT, invalid, validate_params

    cfg = ControlNetConfig(steps=args.steps, batch=args.batch, lr=args.lr, lr_scheduler=args.lr_scheduler, text_dropout=args.text_dropout, focus_weight=args.focus_weight,
                           guided_weight=args.guided_weight, guided_cfg=args.guided_cfg,
                           unconditional_weight=args.unconditional_weight, snapshot_every=args.snapshot_every, seed=args.seed,
                           timestep_range=tuple(args.timestep_range) if args.timestep_range else None)  # refuses bad values in one line
    validate_params({"--images": args.images}, {"--images": [POSITIVE_INT]})
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise invalid("--out", args.out, "a directory (new, or a run's to continue with --resume)")
    if (out / CHECKPOINT).exists() and not args.resume:
        raise invalid("--out", args.out, "a new directory, or add --resume to continue the run it holds")
    model = Path(args.model)
    if args.model != "shapes-world" and not (model / "model_index.json").exists():
        raise invalid("--model", args.model, "shapes-world or a diffusers pipeline directory (one with model_index.json)")

    if args.init:
        from ..control.nets import resolve

        try:
            resolve(args.init)  # checks only: a missing ControlNet is one line before the base model loads
        except SdlabError as exc:
            raise invalid("--init", args.init, "a registered ControlNet name or a diffusers ControlNet directory") from exc

    from ..conditioning.train import train_controlnet
    from ..mini.control_data import training_data
    from ..models import load_pipeline

    data = training_data(args.images, args.condition, seed=args.seed)
    pipe = load_pipeline(args.model, device="cpu")
    init = None
    if args.init:
        from ..control.nets import load_controlnet

        init = load_controlnet(args.init)
    print(train_controlnet(pipe, data["images"], data["captions"], data["maps"], out, cfg, progress=not args.quiet, focus=data["masks"], init=init,
                           describe={"condition": args.condition, "model": args.model, "dataset": "shapes world", "data_seed": args.seed}))
    return 0
