"""``sdlab trace``: record every denoising step of one generation."""
from __future__ import annotations

from ._options import add_spec_options, load_model, preflight, spec_from_args


def register(sub) -> None:
    p = sub.add_parser("trace", help="record x_t, noise predictions, x0 (and attention) at every step")
    add_spec_options(p)
    p.add_argument("--attention", action="store_true", help="also record cross-attention maps per token")
    p.add_argument("--out", required=True, help="directory for the filmstrips, animation, trace.parquet")
    p.set_defaults(func=cmd_trace)


def cmd_trace(args) -> int:
    from ..trace import save_trace, trace

    spec = spec_from_args(args)
    preflight(args, spec, out=args.out)  # before the model loads
    pipe = load_model(args)
    tr = trace(pipe, spec, attention=args.attention)
    for name, path in save_trace(tr, args.out, pipe).items():
        print(f"{name}: {path}")
    return 0
