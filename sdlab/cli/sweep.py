"""``sdlab sweep``: an X/Y/Z grid of any spec fields, measured, resumable, here or on a Dask cluster.

Everything the command line can get wrong (axes, the prompts file, the
cluster options) is checked before torch or diffusers are imported, and a
finished sweep rerun with the same arguments answers from its store without
loading the model.
"""
from __future__ import annotations

from ._options import add_cluster_options, add_spec_options, cluster_from_args, preflight, spec_from_args
from .adapters import adapter_folders, add_adapter_options


def register(sub) -> None:
    p = sub.add_parser("sweep", help="vary spec fields on X/Y/Z axes; prints the grid's and the store's paths")
    add_spec_options(p)
    p.add_argument("--x", required=True, help="axis NAME=VALUES, e.g. seed=1-8 or cfg=1,3,7.5 or 'sampler=Euler a,DPM++ 2M'")
    p.add_argument("--y", help="second axis")
    p.add_argument("--z", help="third axis (one grid per value)")
    p.add_argument("--prompts", help="a text file with one prompt per line (each is swept)")
    p.add_argument("--out", required=True, help="the result store directory")
    p.add_argument("--new", action="store_true", help="archive an existing store made with other arguments and start again")
    add_adapter_options(p)  # an X/Y/Z plot over LoRA weights: --x "sr=<lora:NAME:0>,<lora:NAME:0.5>,<lora:NAME:1>"
    add_cluster_options(p, "cells")
    p.set_defaults(func=cmd_sweep)


def shapes_world_metrics(pipe):
    """The shapes world's checker beside the generic metrics when ``pipe`` is the shapes world (None otherwise):
    the CLI's choice of default, evaluated wherever the pipeline is loaded."""
    from ..mini.metrics import sweep_metrics

    return sweep_metrics(pipe)


def cmd_sweep(args) -> int:
    from pathlib import Path

    from ..cluster import ModelSource
    from ..cost import check_budget
    from ..errors import ValidationError
    from ..sweep.axes import Axis
    from ..validation import invalid

    axes = [Axis.parse(text) for text in (args.x, args.y, args.z) if text]
    prompts = None
    if args.prompts:
        path = Path(args.prompts)
        if not path.is_file():
            raise ValidationError(f"--prompts: no such file {args.prompts!r}" if not path.exists() else f"--prompts: {args.prompts!r} is not a file")
        try:
            prompts = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        except UnicodeDecodeError as exc:
            raise invalid("--prompts", args.prompts, f"a UTF-8 text file, one prompt per line (byte {exc.start} is not UTF-8)") from None
        if not prompts:
            raise invalid("--prompts", args.prompts, "a text file with at least one prompt (one per line)")
    from ..io import atomic_path
    from ..sweep import grid, run_sweep

    spec = spec_from_args(args)
    folders = adapter_folders(args)  # each cell's LoRA tags are resolved in run_sweep, before the model loads
    one = preflight(args, spec, out=args.out)  # the model, the inputs, one cell's cost: before anything loads
    cells = len(prompts or [spec.prompt])
    for axis in axes:
        cells *= len(axis.values)
    seconds = None if one.seconds is None or args.scheduler else one.seconds * cells / (args.workers or 1)  # a remote cluster's CPUs are not these
    check_budget("cells", f"{cells} cells", one.peak_bytes, seconds, one.device, args.force)
    model = ModelSource(args.model, device=args.device, allow_pickle=args.allow_pickle)
    table = run_sweep(model, spec, axes, args.out, prompts=prompts, new=args.new, metrics=shapes_world_metrics,
                      cluster=cluster_from_args(args), adapters=folders)
    x, y = axes[0].column, axes[1].column if len(axes) > 1 else None
    z = axes[2] if len(axes) > 2 else None
    for z_value in (z.values if z else [None]):
        path = Path(args.out) / (f"grid-{z.column}-{z_value}.png" if z else "grid.png")
        image = grid(table, args.out, x, y, z_value=z_value, z=z.column if z else None)
        with atomic_path(path) as tmp:
            image.save(tmp)
        print(path)
    print(Path(args.out) / "results.parquet")
    return 0
