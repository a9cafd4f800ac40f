"""Options shared by every verb that makes images (generate, sweep, trace, demo)."""
from __future__ import annotations

import argparse

from ..errors import ValidationError
from ..spec import parse_size


def parse_margins(text: str) -> tuple[int, int, int, int]:
    """``L,T,R,B`` -> four pixel margins."""
    parts = text.split(",")
    if len(parts) != 4 or not all(p.strip().isdigit() for p in parts):
        raise ValidationError(f"--outpaint: {text!r} must be four whole numbers LEFT,TOP,RIGHT,BOTTOM, e.g. 16,0,16,0")
    return tuple(int(p) for p in parts)  # type: ignore[return-value]


def add_model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="shapes-world", help="registered name, diffusers directory or .safetensors file (default: shapes-world)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (default: auto)")
    parser.add_argument("--allow-pickle", action="store_true", help="allow .ckpt/.pt/.pth checkpoints and ControlNet files (pickle runs code from the file)")
    parser.add_argument("--force", action="store_true", help="run even when the memory or time estimate says it will not fit")


def add_spec_options(parser: argparse.ArgumentParser, prompt: bool = True) -> None:
    if prompt:
        parser.add_argument("prompt", help="the prompt (A1111 weighting syntax allowed)")
    parser.add_argument("--negative", default="", help="negative prompt")
    parser.add_argument("--seed", type=int, default=-1, help="seed (-1: random, recorded in the PNG)")
    parser.add_argument("--steps", type=int, help="denoising steps (default: the model's)")
    parser.add_argument("--cfg", type=float, help="guidance (CFG) scale (default: the model's)")
    parser.add_argument("--sampler", help="A1111 sampler name, e.g. 'Euler a' (see 'sdlab samplers')")
    parser.add_argument("--size", help="WIDTHxHEIGHT (default: the model's)")
    parser.add_argument("-n", "--batch", type=int, default=1, help="images, seeds seed..seed+n-1")
    parser.add_argument("--clip-skip", type=int, default=1)
    parser.add_argument("--init", help="init image for img2img / inpainting / outpainting")
    parser.add_argument("--strength", type=float, default=0.75, help="img2img denoising strength in [0, 1]")
    parser.add_argument("--mask", help="inpainting mask (white = repaint), same size as --init")
    parser.add_argument("--mask-blur", type=int, default=4)
    parser.add_argument("--outpaint", help="extend --init by margins LEFT,TOP,RIGHT,BOTTOM pixels")
    add_model_options(parser)


def spec_from_args(args: argparse.Namespace):
    from ..spec import GenerationSpec

    width, height = parse_size(args.size) if args.size else (None, None)
    return GenerationSpec(
        prompt=args.prompt, negative_prompt=args.negative, seed=args.seed, steps=args.steps,
        guidance=args.cfg, sampler=args.sampler, width=width, height=height, batch_size=args.batch,
        clip_skip=args.clip_skip, init_image=args.init, strength=args.strength, mask=args.mask,
        mask_blur=args.mask_blur, outpaint=parse_margins(args.outpaint) if args.outpaint else None,
    )


def load_model(args: argparse.Namespace):
    from ..models import load_pipeline

    return load_pipeline(args.model, device=args.device, allow_pickle=args.allow_pickle)


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not valid; valid: a whole number >= 1")
    return int(text)


def add_cluster_options(parser: argparse.ArgumentParser, what: str, workers: bool = True) -> None:
    """``--scheduler ADDRESS`` (and ``--workers N`` local processes): where ``what`` runs, on Dask (sdlab.cluster)."""
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--scheduler", metavar="ADDRESS",
                       help=f"run the {what} on the Dask cluster at ADDRESS (e.g. tcp://10.0.0.5:8786); each worker loads what it needs once")
    if workers:
        where.add_argument("--workers", type=_positive, metavar="N", help=f"run the {what} on N local Dask worker processes (one thread each)")


def cluster_from_args(args: argparse.Namespace):
    """What :func:`sdlab.cluster.connect` takes: the scheduler address, a number of local workers, or None."""
    return getattr(args, "scheduler", None) or getattr(args, "workers", None)


def preflight(args: argparse.Namespace, spec=None, out: str | None = None, out_kind: str = "dir", inputs: tuple = (),
              scale: float = 1.0):
    """What a generating verb checks before it loads a model (each in one line): the output path, the model's
    place, the device's name, the spec's images and sizes, and the estimated memory and time (``--force``; at
    ``scale`` times the size for a hires fix). Returns the estimate (:class:`sdlab.cost.Cost`) or None."""
    from ..cost import check_spec, likely_device
    from ..io import check_output
    from ..models import config_size_factor, locate

    if out is not None:
        check_output("out", out, out_kind, inputs=inputs)
    locate(args.model, allow_pickle=getattr(args, "allow_pickle", False))
    likely_device(args.device)
    if spec is None:
        return None
    from ..spec import check_inputs

    check_inputs(spec, config_size_factor(args.model))
    return check_spec(args.model, spec, args.device, force=getattr(args, "force", False),
                      allow_pickle=getattr(args, "allow_pickle", False), scale=scale)
