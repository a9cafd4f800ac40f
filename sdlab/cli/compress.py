"""``sdlab compress``: one image through one codec, decode a file, or the RD benchmark.

    sdlab compress IMG --codec vae|vae-levels|jpeg|jpeg444|webp|avif|jxl [--bytes N | --quality Q] --out PATH
    sdlab compress decode FILE [--model NAME] --out PNG
    sdlab compress bench [IMAGES...] [--codecs ...] [--budgets ...] [--shapes N] --out DIR

One parser serves the three forms (the first word picks), so the documented
``sdlab compress IMG`` needs no sub-verb. Heavy imports live in the handlers.
"""
from __future__ import annotations

import argparse

CODECS = ("vae", "vae-levels", "jpeg", "jpeg444", "webp", "avif", "jxl")
DEFAULT_CODECS = ("vae", "jpeg", "webp", "avif", "jxl")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "compress", help="compress images with the VAE latent codec or classical codecs; RD benchmark",
        usage="sdlab compress IMG --codec C [--bytes N | --quality Q] --out PATH\n"
              "       sdlab compress decode FILE --out PNG\n"
              "       sdlab compress bench [IMAGES ...] [--budgets N ...] --out DIR",
        description="Encode one image (prints bytes, bpp, PSNR, SSIM), decode a file, or run the "
                    "rate-distortion benchmark ('bench'; default images: scikit-image's bundled photos).")
    p.add_argument("inputs", nargs="+", metavar="IMG | decode FILE | bench [IMAGES...]")
    p.add_argument("--codec", choices=CODECS, default="jpeg", help="single image: codec (default jpeg)")
    rate = p.add_mutually_exclusive_group()
    rate.add_argument("--bytes", type=int, metavar="N", help="single image: largest output that fits N bytes")
    rate.add_argument("--quality", type=int, metavar="Q", help="single image: the codec's quality setting")
    p.add_argument("--model", default="shapes-world", help="VAE for the vae codecs (default shapes-world)")
    p.add_argument("--device", default="cpu", help="torch device for the VAE (default cpu)")
    p.add_argument("--decoded", metavar="PNG", help="single image: also write the decoded image")
    p.add_argument("--out", required=True, metavar="PATH",
                   help="single image: the compressed file; decode: the PNG; bench: the results directory")
    p.add_argument("--codecs", nargs="+", choices=CODECS, default=list(DEFAULT_CODECS), help="bench: codecs")
    p.add_argument("--budgets", nargs="+", type=int, metavar="N", help="bench: byte budgets")
    p.add_argument("--size", type=int, default=512, help="bench: side of the default photos (default 512)")
    p.add_argument("--shapes", type=int, metavar="N", help="bench: N unseen shapes-world images instead of photos")
    p.add_argument("--progress", action="store_true", help="bench: show a progress bar")
    p.set_defaults(func=_dispatch)


SHAPES_SEED = 1  # the shipped model saw seed 0's scenes; seed 1 gives scenes it has not seen


def shapes_images(n: int, seed: int = SHAPES_SEED) -> dict:
    """``n`` unseen shapes-world scenes (64x64), named shapes00, shapes01, ...: the bench's in-domain set."""
    from ..mini.world import make_dataset

    return {f"shapes{i:02d}": im for i, im in enumerate(make_dataset(n, seed)[0])}


def _dispatch(args: argparse.Namespace) -> int:
    from ..validation import invalid

    verb = args.inputs[0]
    if verb == "bench":
        return _bench(args, args.inputs[1:])
    if verb == "decode":
        if len(args.inputs) != 2:
            raise invalid("inputs", args.inputs, "decode FILE (exactly one FILE)")
        return _decode(args, args.inputs[1])
    if len(args.inputs) != 1:
        raise invalid("inputs", args.inputs, "one IMG, 'decode FILE' or 'bench [IMAGES...]'")
    return _single(args, verb)


def _vae_if_needed(args: argparse.Namespace, codecs) -> object | None:
    if not any(c.startswith("vae") for c in codecs):
        return None
    from ..compression.latent import load_vae

    return load_vae(args.model, args.device)


def _single(args: argparse.Namespace, path: str) -> int:
    from ..compression import get_codec
    from ..images import load_rgb
    from ..io import atomic_write_bytes, check_output
    from ..metrics import bits_per_pixel, ms_ssim, psnr, ssim

    image = load_rgb(path)
    check_output("out", args.out, "file", inputs=(path,))
    if args.decoded:
        check_output("decoded", args.decoded, "file", inputs=(path, args.out))
    codec = get_codec(args.codec, _vae_if_needed(args, [args.codec]))
    codec.check_available()
    if args.bytes is not None:
        enc = codec.encode_to_budget(image, args.bytes)
        quality, data = enc.quality, enc.data
    else:
        quality = codec.check_quality(args.quality if args.quality is not None else codec.default_quality)
        data = codec.encode(image, quality)
    decoded = codec.decode(data)
    atomic_write_bytes(args.out, data)
    if args.decoded:
        _save_png(decoded, args.decoded)
    line = (f"{args.codec} q{quality}: {len(data)} bytes, {bits_per_pixel(len(data), image.shape):.4f} bpp, "
            f"PSNR {psnr(image, decoded):.2f} dB, SSIM {ssim(image, decoded):.4f}")
    m = ms_ssim(image, decoded)
    print(line + (f", MS-SSIM {m:.4f}" if m == m else "") + f" -> {args.out}")
    return 0


def _save_png(image, path: str) -> None:
    from PIL import Image

    from ..io import atomic_path

    with atomic_path(path) as tmp:
        Image.fromarray(image).save(tmp, format="PNG")


def _decode(args: argparse.Namespace, path: str) -> int:
    from ..compression.latent import decode_file
    from ..io import check_output

    check_output("out", args.out, "file", inputs=(path,))
    image = decode_file(path, args.model, args.device)
    _save_png(image, args.out)
    print(f"{path}: {image.shape[1]}x{image.shape[0]} -> {args.out}")
    return 0


def _bench(args: argparse.Namespace, paths: list[str]) -> int:
    import time

    import pandas as pd

    from ..compression import bench
    from ..compression.rd import summarize
    from ..validation import POSITIVE_INT, Check, invalid, validate_params

    from ..cost import check_budget
    from ..io import check_output

    if paths and args.shapes is not None:
        raise invalid("inputs", paths, "IMAGES or --shapes N, not both")
    check_output("out", args.out, "dir")
    validate_params({"size": args.size, "budgets": args.budgets},
                    {"size": [POSITIVE_INT], "budgets": [None, Check(lambda b: all(POSITIVE_INT.accepts(x) for x in b), "byte budgets >= 1")]})
    if not paths and args.shapes is None:  # the bundled photos at --size: eight RGB images and their encodings
        check_budget("size", args.size, memory_bytes=8 * 4 * 3 * args.size**2)
    if args.shapes is not None:
        validate_params({"--shapes": args.shapes}, {"--shapes": [POSITIVE_INT]})
        images, budgets = shapes_images(args.shapes), bench.SHAPES_BUDGETS
    elif paths:
        images, budgets = bench.load_images(paths), bench.PHOTO_BUDGETS
    else:
        images, budgets = bench.photo_set(args.size), bench.PHOTO_BUDGETS
    budgets = args.budgets or budgets
    start = time.perf_counter()
    frame = bench.run_bench(images, budgets, args.out, codecs=args.codecs, vae=_vae_if_needed(args, args.codecs),
                            progress=args.progress)
    seconds = time.perf_counter() - start
    table = summarize(frame)
    with pd.option_context("display.width", 160, "display.max_rows", 200):
        print(table[["codec", "budget", "images", "bytes", "bpp", "psnr", "ssim", "ms_ssim"]].round(3).to_string(index=False))
    missing = sorted({f"{c}: {s}" for c, s in zip(frame["codec"], frame["status"]) if s.startswith("not installed")})
    for line in missing:
        print(line)
    print(f"{len(images)} images x {len(args.codecs)} codecs x {len(budgets)} budgets in {seconds:.1f} s -> {args.out}")
    return 0
