"""ControlNet on the shapes world, measured: training time, control fidelity, and what control costs per image.

1. training: the minutes and steps of a ControlNet's runs, read from their ``train_log.jsonl`` (``--run``, with the
   load average logged beside each line; a recipe of stages adds up), or a fresh run trained here (``--train-out``, timed);
2. fidelity: mean IoU between each held-out outline's filled region and the generated shape, with the ControlNet
   at scale 1 and without control (the base model on the same prompts and seeds), through sdlab's generate;
3. cost: seconds per image with and without the ControlNet (same prompts, interleaved, fastest of several);
4. with ``--lessons DIR``, the notebook's full figures: IoU against the control scale and against start/end
   windows, IoU over the run's training snapshots, the prompt-control conflict table, and keeping an image's
   layout while the prompt changes its colours (ControlNet against img2img); tables (CSV, markdown) and plots (PNG) in DIR.

Targets (issue 24): training <= 30 min, IoU >= 0.85 at scale 1 on >= 100 held-out outlines, control <= 1.6x the time.
Usage:
    python benchmarks/bench_control.py [--controlnet shapes-world-edges] [--condition edges] [--n 100]
                                       [--run RUN [RUN2 ...] | --train-out DIR --train-steps 2000] [--json OUT]
                                       [--lessons DIR --lesson-n 30]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numpy as np
import pandas as pd

from _common import report
from sdlab.conditioning import measure
from sdlab.mini.control_data import heldout_cases, shape_region, training_data
from sdlab.models import load_pipeline


def load() -> str:
    return "load average %.2f %.2f %.2f" % os.getloadavg()


def training_figures(run_dirs: list[str]) -> dict:
    """Minutes, steps and mean load of a ControlNet's runs, from their logs: a recipe's stages (a run continued
    from another with ``--init``) and a run's resumed sessions add up."""
    minutes, steps, loads, done = 0.0, 0, [], True
    for run_dir in run_dirs:
        records = [json.loads(line) for line in open(os.path.join(run_dir, "train_log.jsonl")) if line.strip()]
        finished = [r for r in records if r.get("stage") == "controlnet_done"]
        logged = [r for r in records if r.get("stage") == "controlnet"]
        minutes += sum(r["seconds_this_run"] for r in finished) / 60 if finished else (logged[-1]["time"] - logged[0]["time"]) / 60
        steps += logged[-1]["step"] + 1 if logged else 0
        loads += [r["load"] for r in logged if "load" in r]
        done = done and bool(finished)
    return {"train_minutes": minutes, "train_steps": steps, "train_mean_load": float(np.mean(loads)) if loads else None,
            "train_stages": len(run_dirs), "finished": done}


def load_controlnet(name: str):
    from sdlab.control.nets import load_controlnet as load_named

    return load_named(name)


def time_per_image(pipe, controlnet, cases: dict, repeat: int, steps: int | None) -> tuple[float, float]:
    """Fastest seconds per image without and with control, interleaved so both see the same load."""
    plain, controlled = [], []
    for k in range(repeat):
        row = cases["table"].iloc[k % len(cases["table"])]
        for store, net in ((plain, None), (controlled, controlnet)):
            started = time.perf_counter()
            measure.generate_one(pipe, row.prompt, int(row.seed), net, cases["maps"][k % len(cases["table"])], steps=steps)
            store.append(time.perf_counter() - started)
    return min(plain), min(controlled)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--controlnet", default="shapes-world-edges", help="a registered name or a ControlNet directory")
    parser.add_argument("--condition", default="edges", choices=("edges", "mask"))
    parser.add_argument("--n", type=int, default=100, help="held-out outlines (default 100)")
    parser.add_argument("--steps", type=int, help="denoising steps (default: the model's, 25)")
    parser.add_argument("--run", nargs="+", help="the ControlNet's run directories, whose training logs give the training figures: "
                        "several for a recipe of stages (a run continued with --init after the run it started from), in order")
    parser.add_argument("--train-out", help="train a ControlNet here first (timed) and measure it")
    parser.add_argument("--train-steps", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=8, help="timed images with and without control")
    parser.add_argument("--json", help="also write the figures and tables here")
    parser.add_argument("--lessons", help="also measure the notebook's full figures into this directory")
    parser.add_argument("--lesson-n", type=int, default=30, help="held-out cases per lesson curve (default 30)")
    parser.add_argument("--also-guidance", type=lambda t: [float(v) for v in t.split(",") if v], default=[],
                        help="also measure the IoU at these CFG scales, e.g. 2,3 (the headline uses the model's default)")
    parser.add_argument("--also-guess-mode", action="store_true",
                        help="also measure the IoU in guess mode (A1111's 'ControlNet is more important') at each CFG measured")
    parser.add_argument("--conflict-n", type=int, default=12, help="prompt-control conflicts (default 12)")
    parser.add_argument("--modes", help="only the conflict table under A1111's three Control Modes, into this directory (the lessons hold it too)")
    parser.add_argument("--snapshot-stride", type=int, default=500, help="fidelity over training: every this many steps (default 500)")
    parser.add_argument("--skip-headline", action="store_true", help="only the lessons (the headline figures measured already)")
    args = parser.parse_args(argv)
    torch_threads = os.environ.get("OMP_NUM_THREADS", "default")
    print(f"{platform.processor() or platform.machine()}, torch threads {torch_threads}; {load()} at start")
    pipe = load_pipeline("shapes-world", device="cpu")
    figures: dict = {}
    if args.train_out:
        from sdlab.conditioning.train import ControlNetConfig, train_controlnet

        data = training_data(8000, args.condition)
        started = time.perf_counter()
        controlnet_dir = train_controlnet(pipe, data["images"], data["captions"], data["maps"], args.train_out,
                                          ControlNetConfig(steps=args.train_steps), progress=False)
        figures["train_minutes_here"] = (time.perf_counter() - started) / 60
        args.run, args.controlnet = [args.train_out], str(controlnet_dir)
    if args.run:
        figures.update(training_figures(args.run))
    controlnet = load_controlnet(args.controlnet)
    if args.modes:
        control_modes(pipe, controlnet, args, args.modes)
        return figures
    if args.lessons:
        lessons(pipe, controlnet, args)
    if args.skip_headline:
        return figures
    cases = heldout_cases(args.n, args.condition)
    with_control = measure.fidelity(pipe, controlnet, cases, shape_region, scales=(1.0,), steps=args.steps, control_type=args.condition)
    without = measure.fidelity(pipe, None, cases, shape_region, steps=args.steps)
    figures["iou_scale_1"], figures["iou_no_control"] = float(with_control.iou.mean()), float(without.iou.mean())
    figures["share_iou_ge_0.85"] = float((with_control.iou >= 0.85).mean())
    for g in args.also_guidance:  # the prompt's pull grows with CFG while the control's does not (both halves get it)
        at = measure.fidelity(pipe, controlnet, cases, shape_region, scales=(1.0,), steps=args.steps, guidance=g, control_type=args.condition)
        base_at = measure.fidelity(pipe, None, cases, shape_region, steps=args.steps, guidance=g)
        figures[f"iou_scale_1_cfg_{g:g}"], figures[f"iou_no_control_cfg_{g:g}"] = float(at.iou.mean()), float(base_at.iou.mean())
    if args.also_guess_mode:  # control on the conditional half only: CFG then amplifies the control with the prompt
        for g in [None] + list(args.also_guidance):
            at = measure.fidelity(pipe, controlnet, cases, shape_region, scales=(1.0,), steps=args.steps, guidance=g, control_type=args.condition,
                                  guess_mode=True)
            figures[f"iou_scale_1_guess_mode_cfg_{'model' if g is None else f'{g:g}'}"] = float(at.iou.mean())
    plain, controlled = time_per_image(pipe, controlnet, cases, args.repeat, args.steps)
    figures.update(seconds_uncontrolled=plain, seconds_controlled=controlled, control_time_ratio=controlled / plain)
    figures["load_at_end"] = load()
    print(f"{args.n} held-out {args.condition} cases, ControlNet {args.controlnet}; {load()} at end")
    rows = [("IoU, ControlNet at scale 1 (model's CFG)", figures["iou_scale_1"], ">= 0.85", figures["iou_scale_1"] >= 0.85),
            ("IoU, no control (same prompts, seeds, CFG)", figures["iou_no_control"], "(baseline)", True),
            ("controlled / uncontrolled seconds", figures["control_time_ratio"], "<= 1.6", figures["control_time_ratio"] <= 1.6)]
    for g in args.also_guidance:
        rows += [(f"IoU, ControlNet at scale 1, CFG {g:g}", figures[f"iou_scale_1_cfg_{g:g}"], ">= 0.85", figures[f"iou_scale_1_cfg_{g:g}"] >= 0.85),
                 (f"IoU, no control, CFG {g:g}", figures[f"iou_no_control_cfg_{g:g}"], "(baseline)", True)]
    if args.also_guess_mode:
        for g in ["model"] + [f"{g:g}" for g in args.also_guidance]:
            value = figures[f"iou_scale_1_guess_mode_cfg_{g}"]
            rows.append((f"IoU, ControlNet at scale 1, guess mode, CFG {g}", value, ">= 0.85", value >= 0.85))
    if "train_minutes" in figures:
        load_note = f"mean load {figures['train_mean_load']:.1f}" if figures.get("train_mean_load") else "load not logged"
        stages = f", {figures['train_stages']} runs" if figures["train_stages"] > 1 else ""
        rows.insert(0, (f"training minutes ({figures['train_steps']} steps{stages}, {load_note})", figures["train_minutes"], "<= 30",
                        figures["train_minutes"] <= 30))
    report(rows)
    print(f"seconds per image: {plain:.3f} uncontrolled, {controlled:.3f} controlled (fastest of {args.repeat})")
    if args.json:
        table = pd.concat([with_control, without], ignore_index=True)
        with open(args.json, "w") as f:
            json.dump({"figures": figures, "rows": table.to_dict(orient="records")}, f, indent=1, default=str)
    return figures


def markdown(table: pd.DataFrame) -> str:
    """A DataFrame as a markdown table (index included), numbers to 3 decimals."""
    flat = table if isinstance(table.index, pd.RangeIndex) else table.reset_index()
    cell = lambda v: f"{v:.3f}" if isinstance(v, float) else str(v)
    lines = ["| " + " | ".join(map(str, flat.columns)) + " |", "|" + "---|" * len(flat.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in flat.itertuples(index=False)]
    return "\n".join(lines)


def _save(table: pd.DataFrame, out: str, name: str, title: str) -> None:
    table.to_csv(os.path.join(out, f"{name}.csv"))
    text = markdown(table)
    with open(os.path.join(out, f"{name}.md"), "w") as f:
        f.write(f"{title}\n\n{text}\n")
    print(f"\n{title} ({load()})\n{text}")


def _conflict_inputs(args) -> tuple[pd.DataFrame, np.ndarray]:
    """The first ``--conflict-n`` conflict cases (12: two colour pairs, six position and six shape conflicts) and their maps."""
    from sdlab.mini.control_data import condition_maps, conflict_cases, scene_images

    table = conflict_cases().iloc[:args.conflict_n]
    maps = condition_maps(scene_images(table.scene), args.condition, "outline" if args.condition == "edges" else "mask")
    return table.drop(columns="scene"), maps


def control_modes(pipe, controlnet, args, out: str) -> None:
    """Who wins the conflicts under A1111's Control Modes (Balanced, My prompt / ControlNet is more important), at CFG 5."""
    from sdlab.control.infotext import CONTROL_MODES
    from sdlab.mini import checker

    os.makedirs(out, exist_ok=True)
    table, maps = _conflict_inputs(args)
    fights = measure.conflicts(pipe, controlnet, table, maps, judge=checker.check, scales=(0.5, 1.0, 1.5, 2.0), guidances=(5.0,),
                               steps=args.steps, modes=CONTROL_MODES)
    _save(measure.conflict_table(fights), out, "conflicts_by_mode",
          f"share of conflicts the control wins per Control Mode ({len(table)} cases, CFG 5: rows kind, mode; columns scale)")


def lessons(pipe, controlnet, args) -> None:
    """The notebook's full figures, each table and plot saved with the conditions it was measured under."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from sdlab.mini import checker
    from sdlab.mini.control_data import layout_cases

    os.makedirs(args.lessons, exist_ok=True)
    n, kind = args.lesson_n, args.condition
    cases = heldout_cases(n, kind)
    # 1. IoU against the control scale, and against the window of steps the ControlNet acts in
    curve = measure.fidelity(pipe, controlnet, cases, shape_region, scales=measure.DEFAULT_SCALES, steps=args.steps, control_type=kind)
    base = measure.fidelity(pipe, None, cases, shape_region, steps=args.steps)
    _save(measure.summarize(curve), args.lessons, "iou_vs_scale", f"IoU vs control scale ({n} held-out {kind} cases; no control: "
          f"{base.iou.mean():.3f})")
    windows = measure.fidelity(pipe, controlnet, cases, shape_region, windows=measure.DEFAULT_WINDOWS, steps=args.steps, control_type=kind)
    _save(measure.summarize(windows, by=("start", "end")), args.lessons, "iou_vs_window", f"IoU vs start/end window at scale 1 ({n} cases)")
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    measure.plot_curve(curve, "scale", ax=axes[0], xlabel="control scale (ControlNet weight)", title=f"{n} held-out outlines, mean ± s.e.")
    axes[0].axhline(base.iou.mean(), color="gray", ls="--", label="no control")
    axes[0].legend(fontsize=8)
    labels = windows.assign(window=windows.start.map("{:g}".format) + "–" + windows.end.map("{:g}".format))
    means = labels.groupby("window", sort=False).iou.mean()
    axes[1].bar(means.index, means.values)
    axes[1].set_xlabel("window of the steps the ControlNet acts in (start–end, fraction)")
    axes[1].set_ylabel("mean IoU")
    axes[1].set_ylim(0, 1)
    fig.savefig(os.path.join(args.lessons, "iou_scale_window.png"), dpi=90, bbox_inches="tight")
    # 2. fidelity over training: the run's snapshots (does it converge suddenly?)
    if args.run:
        from diffusers import ControlNetModel

        from sdlab.conditioning.train import snapshots

        kept, offset = [(0, None)], 0  # a later stage's snapshots count on from the steps before it
        for run in args.run:
            kept += [(offset + step, ControlNetModel.from_pretrained(path)) for step, path in snapshots(run) if (offset + step) % args.snapshot_stride == 0]
            offset += training_figures([run])["train_steps"]
        over = pd.concat([base.assign(step=0)] + [measure.fidelity(pipe, m, cases, shape_region, steps=args.steps, control_type=kind).assign(step=s)
                                                 for s, m in kept[1:]], ignore_index=True)
        _save(measure.summarize(over, by=("step",)), args.lessons, "iou_vs_training_step", f"IoU at scale 1 vs training step ({n} cases)")
        fig, ax = plt.subplots(figsize=(5, 3.5))
        measure.plot_curve(over, "step", ax=ax, xlabel="training step (batch 32)", title="fidelity over training")
        fig.savefig(os.path.join(args.lessons, "iou_vs_training_step.png"), dpi=90, bbox_inches="tight")
    # 3. prompt against control
    table, maps = _conflict_inputs(args)
    fights = measure.conflicts(pipe, controlnet, table, maps, judge=checker.check, scales=(0.0, 0.5, 1.0, 1.5),
                               guidances=(2.0, 5.0, 10.0), steps=args.steps)
    _save(measure.conflict_table(fights), args.lessons, "conflicts", f"share of conflicts the control wins ({len(table)} cases: rows kind, guidance; columns scale)")
    _save(fights.groupby(["kind", "scale", "guidance"]).winner.value_counts().unstack(fill_value=0), args.lessons, "conflict_winners",
          "who wins: counts of prompt / control / neither")
    control_modes(pipe, controlnet, args, args.lessons)
    # 4. keep the layout, change the colours: ControlNet against img2img
    layout = layout_cases(min(n, 16), kind)
    kept_layout = measure.keep_layout(pipe, controlnet, layout, shape_region, judge=checker.check, scales=(0.5, 1.0), strengths=(0.3, 0.5, 0.75, 0.9),
                                      steps=args.steps)
    _save(kept_layout.groupby("method", sort=False)[["layout_iou", "colour_ok", "background_ok"]].mean(), args.lessons, "keep_layout",
          f"keep the layout, change colour and background ({len(layout['table'])} inputs)")


if __name__ == "__main__":
    main()
