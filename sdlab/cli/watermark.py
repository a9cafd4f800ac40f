"""``sdlab watermark``: embed, detect, battery, calibrate (heavy imports inside the handlers)."""
from __future__ import annotations

import argparse
import json
import sys

PRESET_NAMES = ("sd1", "sd2", "sdxl")
METHOD_NAMES = ("dwtDct", "dwtDctSvd", "rivaGan")


def register(subparsers) -> None:
    parser = subparsers.add_parser("watermark", help="embed, detect and stress-test invisible watermarks")
    sub = parser.add_subparsers(dest="watermark_command", metavar="ACTION", parser_class=type(parser))
    sub.required = True

    p = sub.add_parser("embed", help="write a watermarked copy of an image")
    p.add_argument("image", metavar="IMG")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--preset", choices=PRESET_NAMES)
    target.add_argument("--payload", metavar="TEXT", help="text (UTF-8), 0b… bits or 0x… hex bytes")
    p.add_argument("--method", choices=METHOD_NAMES, help="with --payload (default dwtDct)")
    p.add_argument("--out", required=True, metavar="PATH", help="output image (PNG keeps the mark best)")
    p.add_argument("--upscale", action="store_true", help="enlarge images under 256x256 instead of refusing them")
    p.set_defaults(func=_embed)

    p = sub.add_parser("detect", help="test images for the presets (or one payload)")
    p.add_argument("images", nargs="+", metavar="IMG")
    target = p.add_mutually_exclusive_group()
    target.add_argument("--preset", choices=PRESET_NAMES, help="default: test every preset")
    target.add_argument("--payload", metavar="TEXT")
    p.add_argument("--method", choices=METHOD_NAMES)
    p.add_argument("--fpr", type=float, default=0.001, help="false-positive rate for 'detected' (default 0.001)")
    p.add_argument("--upscale", action="store_true")
    p.add_argument("--json", action="store_true", help="one JSON object per image and payload per line")
    p.set_defaults(func=_detect)

    p = sub.add_parser("battery", help="attack marked and clean images, write rows, summary and plots")
    p.add_argument("images", nargs="*", metavar="IMAGES", help="default: scikit-image's bundled photos")
    p.add_argument("--methods", nargs="+", default=["dwtDct", "dwtDctSvd"], choices=METHOD_NAMES)
    p.add_argument("--attacks", nargs="+", help="default: every attack that needs no model")
    p.add_argument("--out", required=True, metavar="DIR", help="results directory (a rerun resumes)")
    p.add_argument("--workers", type=int, help="processes (default: all cores)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_battery)

    p = sub.add_parser("calibrate", help="recompute the clean-image null and the measured FPR")
    p.add_argument("--out", required=True, metavar="PATH", help="calibration JSON to write")
    p.add_argument("--images", type=int, default=400, help="clean images to calibrate on")
    p.set_defaults(func=_calibrate)


def _embed(args: argparse.Namespace) -> int:
    from PIL import Image

    from ..io import atomic_path
    from ..watermark import embed

    marked = embed(args.image, preset=args.preset, payload=args.payload, method=args.method, upscale=args.upscale)
    with atomic_path(args.out) as tmp:
        Image.fromarray(marked).save(tmp)
    if args.out.lower().endswith((".jpg", ".jpeg", ".webp")):
        print("note: lossy formats weaken the watermark; PNG keeps it", file=sys.stderr)
    print(args.out)
    return 0


def _detect(args: argparse.Namespace) -> int:
    from ..errors import ValidationError
    from ..watermark import detect

    if not 0 < args.fpr < 1:
        raise ValidationError(f"--fpr: {args.fpr} must be strictly between 0 and 1")
    if args.method and not args.payload:
        raise ValidationError("--method: only with --payload (a preset fixes its method)")
    for path in args.images:
        found = detect(path, preset=args.preset, payload=args.payload, method=args.method, fpr=args.fpr, upscale=args.upscale)
        for d in found if isinstance(found, list) else [found]:
            if args.json:
                record = {"path": path, **{k: v for k, v in d.to_dict().items() if k != "bits"}}
                print(json.dumps(record))
            else:
                print(f"{path}: {d.summary()}" + (f" [{'; '.join(d.notes)}]" if d.notes else ""))
    return 0


def _battery(args: argparse.Namespace) -> int:
    from pathlib import Path

    import matplotlib

    matplotlib.use("Agg")
    from ..io import atomic_path
    from ..watermark import battery, plots, summarize

    rows = battery(args.images or None, methods=args.methods, attacks=args.attacks, out=args.out,
                   workers=args.workers, seed=args.seed, progress=True)
    table = summarize(rows)
    out = Path(args.out)
    with atomic_path(out / "summary.csv") as tmp:
        table.to_csv(tmp, index=False)
    for name, fig in (("heatmap.png", plots.heatmap(rows)), ("bit_accuracy.png", plots.accuracy_curves(rows)),
                      ("roc_jpeg.png", plots.roc_curves(rows, "jpeg", 70.0) if "jpeg" in set(rows.attack) else None)):
        if fig is not None:
            with atomic_path(out / name) as tmp:
                fig.savefig(tmp, dpi=100)
    with_cols = ["method", "attack", "strength", "bit_accuracy", "tpr@0.1%fpr", "tpr@1.0%fpr"]
    print(table[with_cols].to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(f"rows: {out / 'rows.parquet'}; summary: {out / 'summary.csv'}; plots in {out}")
    return 0


def _calibrate(args: argparse.Namespace) -> int:
    from ..watermark import calibrate

    cal = calibrate(n_images=args.images, progress=True, path=args.out)
    for rec in cal.evaluation["fpr"]:
        print(f"{rec['payload']:>5} {rec['method']:<10} target FPR {rec['target_fpr']:.1%}: "
              f">= {rec['threshold_bits']} bits, measured {rec['measured_fpr']:.2%} on {rec['n_images']} clean images")
    print(args.out)
    return 0
