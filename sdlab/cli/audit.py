"""``sdlab audit``: the training-data and bias audit from the command line.

    sdlab audit summary PATH
    sdlab audit domains PATH --top 20 --json
    sdlab audit funnel PATH --aesthetic-min 6 --out results/
    sdlab audit amplification shapes-world --n 64 --guidance 1 3 7.5

PATH is a parquet file, a directory of shards, a glob, a CSV/TSV/JSONL file,
or remote parquet (s3://, hf://). Heavy modules load inside the handlers, and
every value is checked by the core, so the command line and Python refuse the
same things in the same words. The amplification study runs on the shapes
world, which this module chooses and passes in (see :func:`shapes_world`).
"""
from __future__ import annotations

import argparse
import json
import sys

from ._options import add_cluster_options, cluster_from_args


def _common(p: argparse.ArgumentParser, path: bool = True) -> None:
    if path:
        p.add_argument("path", metavar="PATH", help="parquet file/dir/glob, CSV/TSV/JSONL, or s3://…/*.parquet")
        p.add_argument("--engine", default="duckdb", help="where the work runs: duckdb (default) or dask")
        p.add_argument("--scheduler", default=None,
                       help="with --engine dask: 'local' for a LocalCluster or an address like tcp://host:8786")
        p.add_argument("--setup-sql", action="append", default=None, metavar="SQL",
                       help="with --engine duckdb: a statement to run first, e.g. a CREATE SECRET for s3:// or hf://")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    p.add_argument("--out", default=None, metavar="DIR", help="also write CSV, parquet and PNG files here")
    p.add_argument("--rows", type=int, default=20, metavar="N", help="table rows to print (default 20)")


def _open(args):
    from ..audit import open_dataset

    _check_output(args)
    given = {"scheduler": args.scheduler, "setup_sql": args.setup_sql}
    return open_dataset(args.path, engine=args.engine, **{k: v for k, v in given.items() if v is not None})


def _check_output(args) -> None:
    """--rows and --out refused before any data is read or generated."""
    from ..audit.results import ROWS
    from ..io import check_output
    from ..validation import validate_params

    validate_params({"rows": args.rows}, ROWS)
    if args.out:
        check_output("out", args.out, "dir")


def shapes_world():
    """The shapes world as the amplification study reads it (:class:`KnownWorld`): the command line's world."""
    from ..audit.amplification import KnownWorld
    from ..mini import checker, world

    return KnownWorld(parse=world.parse_caption, check=checker.check, describe=world.describe,
                      training=lambda rows, seed: world.make_dataset(rows, seed=seed)[1])


def _emit(result, args, payload: dict | None = None) -> int:
    """Print ``result`` (text or JSON), save it under ``--out``; "not available" is a message, not an error."""
    import pandas as pd

    shown = result.head(args.rows)  # a bad --rows fails before anything is written
    if args.out and result.available:
        written = result.save(args.out)
        if not args.json:
            print(f"wrote {len(written)} files to {args.out}")
    if args.json:
        print(json.dumps(payload if payload is not None else result.to_dict(rows=args.rows), ensure_ascii=False))
        return 0
    if not result.available:
        for note in result.notes:
            print(note)
        return 0
    for key, value in result.stats.items():
        print(f"{key}: {value:.4g}" if isinstance(value, float) else f"{key}: {value}")
    for note in result.notes:
        print(f"note: {note}")
    with pd.option_context("display.width", 160, "display.max_columns", 20, "display.max_colwidth", 40):
        print(shown.to_string(index=False))
    return 0


def _summary(args) -> int:
    ds = _open(args)
    return _emit(ds.summary(), args)


def _domains(args) -> int:
    from ..audit.domains import domain_counts, domains_json

    result = domain_counts(_open(args), top=args.top, idn=args.idn, categories=args.categories, progress=not args.json and sys.stderr.isatty())
    args.rows = args.top
    return _emit(result, args, domains_json(result, args.top) if args.json and result.available else None)


def _languages(args) -> int:
    from ..audit.languages import languages

    return _emit(languages(_open(args), sample=args.sample, seed=args.seed, accuracy=args.accuracy), args)


def _sizes(args) -> int:
    from ..audit.sizes import sizes

    return _emit(sizes(_open(args), min_side=args.min_side), args)


def _scores(args) -> int:
    from ..audit.scores import scores

    return _emit(scores(_open(args)), args)


def _funnel(args) -> int:
    from ..audit.funnel import funnel

    result = funnel(_open(args), aesthetic_min=args.aesthetic_min, pwatermark_max=args.pwatermark_max,
                    punsafe_max=args.punsafe_max, min_side=args.min_side)
    return _emit(result, args)


def _captions(args) -> int:
    from ..audit.captions import caption_terms

    result = caption_terms(_open(args), rows=args.terms, columns=args.against, n_boot=args.n_boot, seed=args.seed)
    return _emit(result, args)


def _amplification(args) -> int:
    from ..audit.amplification import run_amplification

    _check_output(args)
    result = run_amplification(shapes_world(), args.model, n=args.n, guidance_scales=args.guidance, train_rows=args.train_rows,
                               given={"shape": args.shape}, attribute=args.attribute, value=args.value,
                               seed=args.seed, steps=args.steps, progress=not args.json and sys.stderr.isatty(),
                               cluster=cluster_from_args(args))
    return _emit(result, args)


def register(subparsers) -> None:
    audit = subparsers.add_parser("audit", help="training-data and bias audit (domains, filters, languages, captions)",
                                  description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    verbs = audit.add_subparsers(dest="audit_command", metavar="ANALYSIS", parser_class=type(audit))
    verbs.required = True

    p = verbs.add_parser("summary", help="rows, columns found, analyses possible")
    _common(p)
    p.set_defaults(func=_summary)

    p = verbs.add_parser("domains", help="registrable domains by the Public Suffix List: top N, coverage, categories")
    _common(p)
    p.add_argument("--top", type=int, default=20, metavar="N", help="domains to list (default 20)")
    p.add_argument("--idn", default="punycode", help="how to write IDN domains: punycode (default) or unicode")
    p.add_argument("--categories", default=None, metavar="CSV", help="your own domain,category map")
    p.set_defaults(func=_domains)

    p = verbs.add_parser("languages", help="share per language (LANGUAGE column, or detected on a caption sample)")
    _common(p)
    p.add_argument("--sample", type=int, default=2000, help="captions to detect when there is no LANGUAGE column")
    p.add_argument("--accuracy", default="high", help="lingua mode: high (default) or low (faster, worse on short captions)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_languages)

    p = verbs.add_parser("sizes", help="short side and aspect-ratio histograms")
    _common(p)
    p.add_argument("--min-side", type=int, default=512, help="pixels (default 512)")
    p.set_defaults(func=_sizes)

    p = verbs.add_parser("scores", help="aesthetic, watermark, unsafe and CLIP-similarity distributions")
    _common(p)
    p.set_defaults(func=_scores)

    p = verbs.add_parser("funnel", help="rows kept by each of SD's data filters in turn")
    _common(p)
    p.add_argument("--aesthetic-min", type=float, default=5.0)
    p.add_argument("--pwatermark-max", type=float, default=0.5)
    p.add_argument("--punsafe-max", type=float, default=0.1)
    p.add_argument("--min-side", type=int, default=512)
    p.set_defaults(func=_funnel)

    p = verbs.add_parser("captions", help="term co-occurrence in captions (occupations x gender) with bootstrap CIs")
    _common(p)
    p.add_argument("--terms", default="occupations", help="'occupations' or a CSV with columns group,term")
    p.add_argument("--against", default="gender", help="'gender' or a CSV with columns group,term")
    p.add_argument("--n-boot", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_captions)

    p = verbs.add_parser("amplification", help="shapes world: generated skew vs training-caption skew, per guidance")
    p.add_argument("model", nargs="?", default="shapes-world", metavar="MODEL")
    _common(p, path=False)
    p.add_argument("--n", type=int, default=64, help="images per guidance scale")
    p.add_argument("--guidance", type=float, nargs="+", default=[1.0, 3.0, 5.0, 7.5])
    p.add_argument("--train-rows", type=int, default=4000, help="shapes-world training rows to measure the skew on")
    p.add_argument("--shape", default="triangle", help="the prompt's shape (the prompt is 'a <shape>')")
    p.add_argument("--attribute", default="colour")
    p.add_argument("--value", default="yellow")
    p.add_argument("--steps", type=int, default=25)
    p.add_argument("--seed", type=int, default=0)
    add_cluster_options(p, "generations")
    p.set_defaults(func=_amplification)
