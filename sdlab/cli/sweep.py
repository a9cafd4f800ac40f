"""``sdlab sweep``: an X/Y/Z grid of any spec fields, measured, resumable."""
from __future__ import annotations

from ._options import add_spec_options, load_model, spec_from_args


def register(sub) -> None:
    p = sub.add_parser("sweep", help="vary spec fields on X/Y/Z axes; prints the grid's and the store's paths")
    add_spec_options(p)
    p.add_argument("--x", required=True, help="axis NAME=VALUES, e.g. seed=1-8 or cfg=1,3,7.5 or 'sampler=Euler a,DPM++ 2M'")
    p.add_argument("--y", help="second axis")
    p.add_argument("--z", help="third axis (one grid per value)")
    p.add_argument("--prompts", help="a text file with one prompt per line (each is swept)")
    p.add_argument("--out", required=True, help="the result store directory")
    p.add_argument("--new", action="store_true", help="archive an existing store made with other arguments and start again")
    p.set_defaults(func=cmd_sweep)


def cmd_sweep(args) -> int:
    from pathlib import Path

    from ..errors import ValidationError
    from ..io import atomic_path
    from ..sweep import Axis, grid, run_sweep

    axes = [Axis.parse(text) for text in (args.x, args.y, args.z) if text]
    prompts = None
    if args.prompts:
        path = Path(args.prompts)
        if not path.exists():
            raise ValidationError(f"--prompts: no such file {args.prompts!r}")
        prompts = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    from ..mini.metrics import sweep_metrics

    pipe = load_model(args)
    table = run_sweep(pipe, spec_from_args(args), axes, args.out, prompts=prompts, new=args.new, metrics=sweep_metrics(pipe))
    x, y = axes[0].name, axes[1].name if len(axes) > 1 else None
    z = axes[2] if len(axes) > 2 else None
    for z_value in (z.values if z else [None]):
        image = grid(table, args.out, x, y, z_value=z_value, z=z.name if z else None)
        path = Path(args.out) / (f"grid-{z.name}-{z_value}.png" if z else "grid.png")
        with atomic_path(path) as tmp:
            image.save(tmp)
        print(path)
    print(Path(args.out) / "results.parquet")
    return 0
