"""``sdlab watermark``: embed, detect, battery, calibrate, and the in-generation signature (heavy imports inside the handlers)."""
from __future__ import annotations

import argparse
import json
import sys

from ._options import add_cluster_options

PRESET_NAMES = ("sd1", "sd2", "sdxl")
METHOD_NAMES = ("dwtDct", "dwtDctSvd", "rivaGan")
GENERATING = ("stable-signature", "treering")  # schemes that make their own images with the shapes world


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
    p.add_argument("--methods", nargs="+", default=["dwtDct", "dwtDctSvd"], choices=METHOD_NAMES + GENERATING,
                   help="post-hoc methods mark the images; stable-signature and treering generate one shapes-world "
                        "pair per image instead (the image only names the seed)")
    p.add_argument("--attacks", nargs="+", help="default: every attack that needs no model")
    p.add_argument("--out", required=True, metavar="DIR", help="results directory (a rerun resumes)")
    p.add_argument("--workers", type=int, help="local processes (default: all cores)")
    p.add_argument("--seed", type=int, default=0)
    add_cluster_options(p, "units (image x method)", workers=False)
    p.set_defaults(func=_battery)

    p = sub.add_parser("signature", help="Stable Signature: the shapes world's decoder that marks every image it draws")
    sig = p.add_subparsers(dest="signature_command", metavar="ACTION", parser_class=type(parser))
    sig.required = True
    q = sig.add_parser("train", help="fine-tune a marked decoder and its extractor (resumes), then measure them")
    q.add_argument("--out", required=True, metavar="DIR")
    q.add_argument("--extractor-steps", type=int, help="stage 1: embedder and extractor on random messages (default 20000)")
    q.add_argument("--clean-steps", type=int, help="stage 1 steps before the augmentations start (default 4000)")
    q.add_argument("--steps", type=int, help="stage 2: the decoder learns the key (default 2400)")
    q.add_argument("--bits", type=int, help="key length (default 32)")
    q.add_argument("--key-seed", type=int, help="seed of the key (default 0)")
    q.add_argument("--measure-images", type=int, default=64, help="seeds for the TPR/FPR/PSNR figures")
    q.add_argument("--extractor-from", metavar="DIR",
                   help="reuse a trained signature's extractor and skip stage 1 (another key or model: stage 2 only)")
    q.add_argument("--model", default="shapes-world", help="the shapes-world pipeline whose decoder is marked (default: the shipped one)")
    q.set_defaults(func=_signature_train)
    q = sig.add_parser("generate", help="images from the marked decoder (or --clean: the original one)")
    q.add_argument("prompt")
    q.add_argument("--seeds", type=int, default=4, help="seeds 0..N-1")
    q.add_argument("--out", required=True, metavar="DIR")
    q.add_argument("--clean", action="store_true", help="the unmarked twin of each image")
    q.add_argument("--signature", metavar="DIR", help="a trained signature (default: the shipped one)")
    q.set_defaults(func=_signature_generate)
    q = sig.add_parser("detect", help="read the key from images")
    q.add_argument("images", nargs="+", metavar="IMG")
    q.add_argument("--signature", metavar="DIR", help="a trained signature (default: the shipped one)")
    q.add_argument("--fpr", type=float, default=0.01, help="p-value for 'detected' (default 0.01)")
    q.add_argument("--json", action="store_true", help="one JSON object per image per line")
    q.set_defaults(func=_signature_detect)

    p = sub.add_parser("calibrate", help="recompute the clean-image null and the measured FPR")
    p.add_argument("--out", required=True, metavar="PATH", help="calibration JSON to write")
    p.add_argument("--images", type=int, default=400, help="clean images to calibrate on")
    p.set_defaults(func=_calibrate)


def _embed(args: argparse.Namespace) -> int:
    from PIL import Image

    from ..images import WRITABLE_SUFFIXES
    from ..io import atomic_path, check_output
    from ..watermark import embed

    check_output("out", args.out, "file", suffixes=WRITABLE_SUFFIXES, inputs=(args.image,))
    marked = embed(args.image, preset=args.preset, payload=args.payload, method=args.method, upscale=args.upscale)
    with atomic_path(args.out) as tmp:
        Image.fromarray(marked).save(tmp)
    if args.out.lower().endswith((".jpg", ".jpeg", ".webp")):
        print("note: lossy formats weaken the watermark; PNG keeps it", file=sys.stderr)
    print(args.out)
    return 0


def _detect(args: argparse.Namespace) -> int:
    from ..mini import world
    from ..watermark import bundled_calibration, detect

    calibration = bundled_calibration(scenes=world)  # a payload length it lacks is calibrated with shapes-world scenes too
    for path in args.images:
        found = detect(path, preset=args.preset, payload=args.payload, method=args.method, fpr=args.fpr,
                       upscale=args.upscale, calibration=calibration)
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
    from ..io import atomic_path, check_output
    from ..models import load_pipeline
    from ..watermark import battery, plots, summarize

    check_output("out", args.out, "dir")
    pipe = load_pipeline("shapes-world", device="cpu") if set(args.methods) & set(GENERATING) else None
    methods = [_generating_scheme(m, pipe) if m in GENERATING else m for m in args.methods]
    rows = battery(args.images or None, methods=methods, attacks=args.attacks, out=args.out,
                   workers=args.workers, seed=args.seed, progress=True, cluster=args.scheduler)
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
    from ..mini import world
    from ..watermark import calibrate

    from ..io import check_output

    check_output("out", args.out, "file")
    cal = calibrate(n_images=args.images, progress=True, path=args.out, scenes=world)  # as the bundled file was made
    for rec in cal.evaluation["fpr"]:
        print(f"{rec['payload']:>5} {rec['method']:<10} target FPR {rec['target_fpr']:.1%}: "
              f">= {rec['threshold_bits']} bits, measured {rec['measured_fpr']:.2%} on {rec['n_images']} clean images")
    print(args.out)
    return 0


def _generating_scheme(name: str, pipe):
    """The battery scheme ``name`` (one of GENERATING) on ``pipe``; one pipeline serves both."""
    if name == "treering":
        from ..watermark.treering import TreeRing

        return TreeRing(pipe)
    from ..watermark.signature import StableSignature

    return StableSignature(pipe)


def _signature(args: argparse.Namespace, fpr: float = 0.01):
    from ..models import load_pipeline
    from ..validation import validate_params
    from pathlib import Path

    from ..errors import ModelNotFoundError
    from ..watermark.signature import CONFIG, SHIPPED_SIGNATURE, StableSignature

    validate_params({"fpr": fpr}, StableSignature._parameter_constraints)  # before loading the model
    directory = Path(args.signature or SHIPPED_SIGNATURE)
    if not (directory / CONFIG).is_file():
        raise ModelNotFoundError(f"signature: no Stable Signature at {str(directory)!r} (make one with `sdlab watermark signature train`)")
    return StableSignature(load_pipeline("shapes-world"), args.signature or SHIPPED_SIGNATURE, fpr=fpr)


def _signature_train(args: argparse.Namespace) -> int:
    from ..io import check_output
    from ..mini import world
    from ..models import load_pipeline, locate
    from ..validation import validate_params
    from ..watermark import signature

    flags = {"n_bits": args.bits, "key_seed": args.key_seed, "extractor_steps": args.extractor_steps,
             "clean_steps": args.clean_steps, "steps": args.steps}
    cfg = signature.SignatureConfig(**{k: v for k, v in flags.items() if v is not None})  # the rest: its defaults
    validate_params({"n_images": args.measure_images}, signature.MEASURE_CONSTRAINTS)  # before the long training
    if args.extractor_from is not None:
        signature.extractor_source(args.extractor_from, cfg)  # refuse a bad directory before loading the model
    check_output("out", args.out, "dir")
    locate(args.model)
    pipe = load_pipeline(args.model)
    out = signature.train(pipe, args.out, cfg, extractor_from=args.extractor_from,
                          dataset=lambda n, seed: world.make_dataset(n, seed=seed)[0])
    figures = signature.measure(signature.StableSignature(pipe, out), n_images=args.measure_images)
    print(" ".join(f"{k}={v}" for k, v in figures.items()))
    print(out)
    return 0


def _signature_generate(args: argparse.Namespace) -> int:
    from PIL import Image

    from ..cost import check_budget, estimate_generation
    from ..io import atomic_path, check_output
    from ..models import SHIPPED_DIR
    from ..validation import POSITIVE_INT, validate_params

    validate_params({"--seeds": args.seeds}, {"--seeds": [POSITIVE_INT]})
    out = check_output("out", args.out, "dir")
    one = estimate_generation(SHIPPED_DIR, 64, 64, 2)  # each seed: the marked image and its clean twin
    check_budget("--seeds", args.seeds, seconds=one.seconds * args.seeds)
    scheme = _signature(args)
    out.mkdir(parents=True, exist_ok=True)
    for seed in range(args.seeds):
        path = out / f"{'clean' if args.clean else 'marked'}_{seed:04d}.png"
        with atomic_path(path) as tmp:
            Image.fromarray(scheme.generate(seed, args.prompt, marked=not args.clean)).save(tmp, format="PNG")
        print(path)
    return 0


def _signature_detect(args: argparse.Namespace) -> int:
    from ..images import load_rgb

    from ..validation import validate_params
    from ..watermark.signature import StableSignature

    validate_params({"fpr": args.fpr}, StableSignature._parameter_constraints)
    images = [load_rgb(path) for path in args.images]  # every file read before the model loads
    scheme = _signature(args, args.fpr)
    for path, image in zip(args.images, images):
        found = scheme.detect(image)
        if args.json:
            print(json.dumps({"path": path, "method": scheme.name, **found}))
        else:
            verdict = "detected" if found["detected"] else "not detected"
            print(f"{path}: {scheme.name} {found['bits_matched']}/{found['bits_total']} bits, p={found['p_value']:.2g}, {verdict}")
    return 0
