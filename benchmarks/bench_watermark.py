"""Watermark lab figures beside the issue's targets: PASS/MISS per line, always exits 0.

    nice -n 19 python benchmarks/bench_watermark.py [--quick] [--no-rivagan] [--treering PIPELINE_DIR]

1. sd1 / sdxl detection on 200 held-out 512² photos (cleanset.evaluation_photos), marked
   (TPR) and unmarked (FPR): target TPR >= 99 % at FPR <= 1 %, >= 20 of each.
2. Detecting all presets on one 512 px image: target <= 100 ms.
3. Default battery (8 photos, dwtDct + dwtDctSvd, 13 attacks x 3 strengths,
   all cores): target <= 5 minutes; bit accuracy beside REFERENCE.md's figures.
4. rivaGan on a few photos (about a second per decode) beside REFERENCE.md.
5. Tree-Ring on a trained pipeline (default: the shipped shapes world).

Times are wall clock and, separately, CPU seconds (this process plus finished
workers): on a shared machine the wall clock includes waiting for the CPU.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def line(name: str, measured: str, target: str, ok: bool) -> None:
    print(f"{'PASS' if ok else 'MISS'}  {name:<46} {measured:<34} target {target}")


def detection_rates(n: int) -> None:
    """TPR and FPR on the held-out 512² evaluation photos (cleanset.evaluation_photos: every natural colour photo
    scikit-image bundles, square crops of side >= 256 px resized to 512, flipped; none of these photos is in the
    calibration), at detect's default FPR (0.1 %) and at 1 %; beside it the library's bits matched alone and the
    published SDXL rule, to show what the vote contrast adds."""
    from sdlab.watermark import cleanset, detect, embed
    from sdlab.watermark.detection import DEFAULT_FPR

    photos = [img for _, img in cleanset.evaluation_photos(n, seed=0)]
    sources = len(cleanset.EVALUATION_PHOTOS)
    print(f"held-out evaluation set: {n} photos from {sources} sources, {cleanset.EVAL_MIN_SIDE}+ px crops -> "
          f"{cleanset.EVAL_SIZE}², flips; calibration sources: {', '.join(cleanset.CALIBRATION_PHOTOS)} + scenes, textures")
    for preset in ("sd1", "sdxl"):
        marked = [detect(embed(p, preset=preset), preset=preset) for p in photos]
        clean = [detect(p, preset=preset) for p in photos]
        for fpr in (DEFAULT_FPR, 0.01):
            tpr = np.mean([d.p_value <= fpr for d in marked])
            far = np.mean([d.p_value <= fpr for d in clean])
            line(f"{preset}: TPR, vote contrast p <= {fpr:.1%} ({n} marked)", f"{tpr:.1%} (max p {max(d.p_value for d in marked):.1e})",
                 ">= 99 %", tpr >= 0.99)
            line(f"{preset}: FPR, vote contrast p <= {fpr:.1%} ({n} unmarked)", f"{far:.1%} ({sum(d.p_value <= fpr for d in clean)} of {n})",
                 "<= 1 %", far <= 0.01)
        bits_tpr = np.mean([d.bits_p_value <= DEFAULT_FPR for d in marked])
        bits_fpr = np.mean([d.bits_p_value <= DEFAULT_FPR for d in clean])
        print(f"      {preset} bits matched alone at p <= {DEFAULT_FPR:.1%}: TPR {bits_tpr:.1%}, FPR {bits_fpr:.1%}; "
              f"marked bit accuracy min {min(d.bit_accuracy for d in marked):.2f}, "
              f"{np.mean([d.bit_accuracy < 1 for d in marked]):.0%} of marked photos decode imperfectly")
        if preset == "sdxl":
            rule_tpr = np.mean([d.decision in ("likely", "very likely") for d in marked])
            rule_fpr = np.mean([d.decision in ("likely", "very likely") for d in clean])
            print(f"      sdxl published rule (>= 34 of 48 bits = likely): TPR {rule_tpr:.1%}, FPR {rule_fpr:.1%}")


def detection_time() -> None:
    from sdlab.images import sample_photos
    from sdlab.watermark import detect, embed

    image = embed(sample_photos(512, ("astronaut",))["astronaut"], preset="sd1")
    detect(image)  # warm-up: imports, calibration load
    walls, cpus = [], []
    for _ in range(20):
        w, c = time.perf_counter(), time.process_time()
        detect(image)
        walls.append(time.perf_counter() - w)
        cpus.append(time.process_time() - c)
    ms, cpu_ms = 1000 * np.median(walls), 1000 * np.median(cpus)
    line("detect all 3 presets, 512 px (median of 20)", f"{ms:.1f} ms wall, {cpu_ms:.1f} ms CPU", "<= 100 ms", min(ms, cpu_ms) <= 100)


REFERENCE = {  # REFERENCE.md, bit accuracy on natural 512 px images
    ("dwtDct", "none", 0.0): "0.95", ("dwtDct", "jpeg", 90.0): "0.52", ("dwtDct", "resize", 0.75): "0.77",
    ("dwtDctSvd", "jpeg", 90.0): "survives", ("dwtDctSvd", "resize", 0.5): "survives", ("dwtDctSvd", "blur", 1.0): "survives",
    ("dwtDctSvd", "noise", 5.0): "survives", ("dwtDctSvd", "rotate", 5.0): "fails", ("dwtDctSvd", "crop", 0.9): "fails",
    ("dwtDctSvd", "brightness", 1.3): "fails",
}
SURVIVES, FAILS = 0.9, 0.7  # bit accuracy read as "survives" / "fails"


def default_battery(quick: bool) -> None:
    from sdlab.watermark import DEFAULT_ATTACKS, battery, summarize

    strengths = {a: [s] for a, s in (("jpeg", 90), ("resize", 0.5), ("rotate", 5))} if quick else None
    attacks = list(strengths) if quick else list(DEFAULT_ATTACKS)
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as out:
        w, c = time.perf_counter(), cpu_seconds()
        rows = battery(methods=["dwtDct", "dwtDctSvd"], attacks=attacks, strengths=strengths, out=out, workers=os.cpu_count(),
                       progress=False)
        wall, cpu = time.perf_counter() - w, cpu_seconds() - c
    n_attacks = len(set(rows.attack) - {"none"})
    n_strengths = rows[rows.attack != "none"].groupby("attack")["strength"].nunique().min()
    line(f"battery: {rows.image.nunique()} images x 2 methods x {n_attacks} attacks x {n_strengths}",
         f"{wall:.0f} s wall, {cpu:.0f} s CPU, {len(rows)} rows", "<= 300 s", min(wall, cpu) <= 300)
    print(f"      {os.cpu_count()} worker processes; load average {load:.1f} before, {os.getloadavg()[0]:.1f} after "
          "(other jobs on the machine lengthen the wall time)")
    table = summarize(rows)
    print("\nbit accuracy (mean over images) | TPR at 0.1 % / 1 % FPR from the clean-vs-marked ROC | detected at p <= 0.1 %")
    for r in table.to_dict("records"):
        ref = REFERENCE.get((r["method"], r["attack"], r["strength"]))
        print(f"  {r['method']:<10} {r['attack']:<14} {r['strength']:>6g}  acc {r['bit_accuracy']:.3f}"
              f"  tpr@0.1% {r['tpr@0.1%fpr']:.2f}  tpr@1% {r['tpr@1.0%fpr']:.2f}  detected {r['detected@p<=0.1%']:.2f}"
              + (f"   REFERENCE {ref}" if ref else ""))
    acc = table.set_index(["method", "attack", "strength"])["bit_accuracy"]

    def check(name: str, keys: list, want: str) -> None:
        found = {k: acc[k] for k in keys if k in acc}
        ok = all(v >= SURVIVES for v in found.values()) if want == "survives" else all(v < FAILS for v in found.values())
        line(name, ", ".join(f"{k[1]} {k[2]:g} {v:.2f}" for k, v in found.items()),
             f"REFERENCE: {want} (acc {'>= ' + str(SURVIVES) if want == 'survives' else '< ' + str(FAILS)})", ok)

    figures = {k: float(v) for k, v in REFERENCE.items() if k[0] == "dwtDct"}
    near = {k: acc[k] for k in figures if k in acc}
    line("dwtDct clean / JPEG q90 / resize 0.75 vs REFERENCE", ", ".join(f"{v:.2f} (ref {figures[k]:.2f})" for k, v in near.items()),
         "within 0.08 of REFERENCE", all(abs(v - figures[k]) <= 0.08 for k, v in near.items()))
    check("dwtDct fragile to JPEG q90 and resize 0.5", [("dwtDct", "jpeg", 90.0), ("dwtDct", "resize", 0.5)], "fails")
    check("dwtDctSvd survives JPEG90/resize/blur/noise",
          [("dwtDctSvd", "jpeg", 90.0), ("dwtDctSvd", "resize", 0.5), ("dwtDctSvd", "blur", 1.0), ("dwtDctSvd", "noise", 5.0)], "survives")
    check("dwtDctSvd fails rotation/crop/brightness",
          [("dwtDctSvd", "rotate", 5.0), ("dwtDctSvd", "crop", 0.9), ("dwtDctSvd", "brightness", 1.3)], "fails")
    check("dwtDct fails rotation/crop", [("dwtDct", "rotate", 5.0), ("dwtDct", "crop", 0.9)], "fails")


def rivagan(n: int) -> None:
    from sdlab.images import sample_photos
    from sdlab.watermark import battery, summarize

    photos = sample_photos(512, ("astronaut", "coffee", "rocket", "chelsea")[:n])
    w = time.perf_counter()
    rows = battery(photos, methods=["rivaGan"], attacks=["jpeg", "rotate", "resize", "crop"],
                   strengths={"jpeg": [50], "rotate": [10], "resize": [0.5], "crop": [0.9]}, workers=os.cpu_count(), progress=False)
    wall = time.perf_counter() - w
    decodes = 2 * len(rows)
    t = summarize(rows).set_index(["attack", "strength"])["bit_accuracy"]
    line(f"rivaGan clean ({n} photos)", f"{t[('none', 0.0)]:.3f}", "high (REFERENCE: survives nearly all)", t[("none", 0.0)] >= 0.9)
    line("rivaGan JPEG q50", f"{t[('jpeg', 50.0)]:.3f}", "REFERENCE ≈0.93", t[("jpeg", 50.0)] >= 0.85)
    line("rivaGan rotation 10°", f"{t[('rotate', 10.0)]:.3f}", "REFERENCE ≈0.99", t[("rotate", 10.0)] >= 0.9)
    line("rivaGan resize 0.5", f"{t[('resize', 0.5)]:.3f}", "REFERENCE: survives", t[("resize", 0.5)] >= 0.9)
    line("rivaGan centre crop 0.9", f"{t[('crop', 0.9)]:.3f}", "REFERENCE: survives (unlike the DWT methods)", t[("crop", 0.9)] >= 0.9)
    print(f"      rivaGan: {wall / decodes:.2f} s wall per decode+attack on this machine (REFERENCE ~1 s per image)")


def treering(directory: Path, n: int) -> None:
    from diffusers import StableDiffusionPipeline

    from sdlab.watermark import battery, summarize
    from sdlab.watermark.treering import TreeRing

    tree = TreeRing(StableDiffusionPipeline.from_pretrained(directory), steps=20)
    w = time.perf_counter()
    rows = battery({f"seed{i}": None for i in range(n)}, methods=[tree],
                   attacks=["jpeg", "resize", "rotate", "crop", "blur", "noise"],
                   strengths={"jpeg": [50], "resize": [0.5], "rotate": [10], "crop": [0.75], "blur": [1.0], "noise": [10]},
                   progress=False)
    table = summarize(rows)
    print(f"\nTree-Ring on {directory} ({n} seeds, {time.perf_counter() - w:.0f} s):")
    for r in table.to_dict("records"):
        print(f"  {r['attack']:<8} {r['strength']:>5g}  AUC {r['auc']:.2f}  tpr@1% {r['tpr@1.0%fpr']:.2f}"
              f"  detected@p<=1% {r['detected@p<=1%']:.2f}  false alarms {r['false_alarms@p<=1%']:.2f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer images and attacks (a smoke run)")
    parser.add_argument("--no-rivagan", action="store_true")
    parser.add_argument("--treering", type=Path, default=ROOT / "sdlab" / "weights" / "shapes-world")
    args = parser.parse_args()
    print(f"sdlab watermark benchmark — {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at start "
          "(wall times include waiting for the CPU)\n")
    detection_rates(16 if args.quick else 200)
    detection_time()
    default_battery(args.quick)
    if not args.no_rivagan:
        rivagan(1 if args.quick else 3)
    if (args.treering / "model_index.json").exists():
        treering(args.treering, 2 if args.quick else 8)
    else:
        print(f"\nTree-Ring: skipped, no trained pipeline at {args.treering}")
    print(f"\nload average {os.getloadavg()[0]:.1f} at the end")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
