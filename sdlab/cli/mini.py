"""``sdlab mini data | train | eval``: the shapes world's data, training and evaluation."""
from __future__ import annotations

import json

from ..validation import invalid


def register(sub) -> None:
    mini = sub.add_parser("mini", help="the shapes world: make its data, train it, evaluate it")
    verbs = mini.add_subparsers(dest="mini_command", metavar="VERB", parser_class=type(mini))
    verbs.required = True

    p = verbs.add_parser("data", help="write shapes-world images (PNG) and their LAION-style metadata parquet")
    p.add_argument("--out", required=True)
    p.add_argument("-n", type=int, default=2000, help="number of images (default 2000)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_data)

    p = verbs.add_parser("train", help="train the shapes world from scratch (resumes if killed)")
    p.add_argument("--out", required=True, help="run directory: checkpoints, logs and the exported pipeline")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--images", type=int, help="training images (default 40000)")
    p.add_argument("--vae-steps", type=int)
    p.add_argument("--unet-steps", type=int, help="UNet steps at batch 64 (default 11000: about 64 of the 81 minutes here)")
    p.add_argument("--foreground-weight", type=float,
                   help="extra UNet loss weight on latent cells at and next to the shape (default 12; 0: plain loss)")
    p.add_argument("--text-reads", choices=("end", "words"),
                   help="where the text encoder is taught to put the meaning: words (default, the shipped model; A1111 weighting acts) or end")
    p.set_defaults(func=cmd_train)

    p = verbs.add_parser("finetune", help="continue training a shapes-world model's UNet (VAE and text encoder frozen; resumes if killed)")
    p.add_argument("model", nargs="?", default="shapes-world", help="shapes-world, or a pipeline directory from 'mini train'")
    p.add_argument("--out", required=True, help="run directory: checkpoint, log and the exported pipeline")
    p.add_argument("--steps", type=int, default=3000, help="UNet steps (default 3000)")
    p.add_argument("--lr", type=float, default=1.5e-4, help="peak learning rate, cosine-decayed to 10%% (default 1.5e-4)")
    p.add_argument("--foreground-weight", type=float, default=0.0,
                   help="extra loss weight on latent cells at and next to the shape (default 0: plain loss)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_finetune)

    p = verbs.add_parser("eval", help="accuracy per attribute per guidance, skews, negative prompts, diversity")
    p.add_argument("model", nargs="?", default="shapes-world")
    p.add_argument("--prompts", type=int, default=320, help="fully specified evaluation prompts (default 320)")
    p.add_argument("--guidance", default="1,2,3,5,7.5,10,15", help="comma-separated guidance values")
    p.add_argument("--seeds", type=int, default=64, help="seeds for the skew and negative-prompt checks")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--out", help="also write the report as JSON to this file")
    p.set_defaults(func=cmd_eval)


def cmd_data(args) -> int:
    from pathlib import Path

    from PIL import Image

    from ..io import atomic_path, check_output
    from ..mini import world

    out = check_output("out", args.out, "dir")
    images, meta = world.make_dataset(args.n, seed=args.seed)
    files = []
    for i, array in enumerate(images):
        path = out / "images" / f"{i:07d}.png"
        with atomic_path(path) as tmp:
            Image.fromarray(array).save(tmp, format="PNG")
        files.append(str(path.relative_to(out)))
    meta["file"] = files
    with atomic_path(out / "metadata.parquet") as tmp:
        meta.to_parquet(tmp, index=False)
    print(out / "metadata.parquet")
    return 0


def cmd_train(args) -> int:
    from dataclasses import replace

    from ..io import check_output

    check_output("out", args.out, "dir")  # before torch and diffusers load (train checks it again)
    from ..mini.train import TrainConfig, train

    given = {"seed": args.seed, "n_images": args.images, "vae_steps": args.vae_steps, "unet_steps": args.unet_steps,
             "unet_foreground_weight": args.foreground_weight, "text_reads": args.text_reads}
    print(train(args.out, replace(TrainConfig(), **{k: v for k, v in given.items() if v is not None})))
    return 0


def cmd_finetune(args) -> int:
    from ..mini.finetune import FinetuneConfig, finetune, model_directory

    cfg = FinetuneConfig(steps=args.steps, lr=args.lr, foreground_weight=args.foreground_weight, seed=args.seed)
    print(finetune(model_directory(args.model), args.out, cfg))
    return 0


def cmd_eval(args) -> int:
    from ..io import atomic_write_text, check_output
    from ..cost import check_budget, estimate_generation
    from ..mini.evaluate import EVALUATE_CONSTRAINTS, evaluate, evaluation_images
    from ..models import load_pipeline, locate, model_info
    from ..validation import validate_params

    try:
        guidance = tuple(float(v) for v in args.guidance.split(","))
    except ValueError:
        raise invalid("--guidance", args.guidance, "comma-separated numbers, e.g. 1,3,7.5") from None
    validate_params({"n_prompts": args.prompts, "n_seeds": args.seeds, "guidance": guidance}, EVALUATE_CONSTRAINTS)
    if args.out:
        check_output("out", args.out, "file")
    source, defaults = locate(args.model)  # all of it before the model loads, the cost too
    one = estimate_generation(source, defaults.get("width", 64), defaults.get("height", 64), 1, defaults.get("steps", 25))
    check_budget("--prompts", args.prompts, one.peak_bytes, one.seconds * evaluation_images(args.prompts, guidance, args.seeds))
    pipe = load_pipeline(args.model, device="auto")
    report = evaluate(pipe, n_prompts=args.prompts, guidance=guidance, n_seeds=args.seeds, progress=not args.json)
    report["model"] = model_info(pipe).name
    text = json.dumps(report, indent=None if args.json else 2)
    if args.out:
        atomic_write_text(args.out, text)
    if args.json:
        print(text)
    else:
        _print_report(report)
    return 0


def _print_report(report: dict) -> None:
    import pandas as pd

    print(f"model {report['model']}: defaults {report['defaults']}")
    print("accuracy per guidance (share correct):")
    print(pd.DataFrame(report["accuracy"]).to_string(index=False))
    print(f"best guidance: {report['best_guidance']}")
    skews = pd.DataFrame(report["skews"])
    print("colour shares for under-specified prompts (generated vs training captions):")
    print(skews[(skews.generated_share > 0) | (skews.training_share > 0)].to_string(index=False))
    print("negative prompt:")
    print(pd.DataFrame(report["negative_prompt"]).to_string(index=False))
    print("similarity over seeds (mean pairwise SSIM; lower = more diverse):")
    print(pd.DataFrame(report["diversity"]).to_string(index=False))
    print(f"{report['seconds']} s")
