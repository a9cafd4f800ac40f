"""``sdlab precision`` (fp32 / bf16 / fp16 compared) and ``sdlab hires`` (A1111's hires fix)."""
from __future__ import annotations

from ._options import add_spec_options, preflight, spec_from_args


def register(sub) -> None:
    p = sub.add_parser("precision", help="the same prompts and seeds in each dtype: pixel difference, accuracy, seconds, memory")
    p.add_argument("--model", default="shapes-world", help="registered name, diffusers directory or .safetensors file (default: shapes-world)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or mps (default: cpu)")
    p.add_argument("--dtypes", default="fp32,bf16", help="comma-separated, the first is the reference (default: fp32,bf16)")
    p.add_argument("--prompt", help="one prompt over seeds 0..n-1 (default for the shapes world: its evaluation prompts)")
    p.add_argument("-n", type=int, default=8, help="images per dtype (default: 8)")
    p.add_argument("--steps", type=int, help="denoising steps (default: the model's)")
    p.add_argument("--vae", help="a VAE to load instead of the checkpoint's (e.g. SDXL's fp16-fix)")
    p.add_argument("--in-process", action="store_true", help="one process for every dtype (faster; no per-dtype peak memory)")
    p.add_argument("--csv", help="also write the per-image table here")
    p.set_defaults(func=cmd_precision)

    p = sub.add_parser("hires", help="A1111's hires fix: generate at native size, upscale, img2img (--strength) at the target size")
    add_spec_options(p)
    p.add_argument("--scale", type=float, default=2.0, help="target size = first pass size x scale (default: 2)")
    p.add_argument("--upscaler", default="lanczos", help="lanczos or latent (default: lanczos)")
    p.add_argument("--hires-steps", type=int, help="second-pass steps (default: the first pass's)")
    p.add_argument("--dtype", default="auto", help="auto, fp16, bf16 or fp32")
    p.add_argument("--vae", help="a VAE to load instead of the checkpoint's (e.g. SDXL's fp16-fix)")
    p.add_argument("--out", default="outputs", help="output directory (default: outputs)")
    p.set_defaults(func=cmd_hires)


def precision_specs(model: str, prompt: str | None, n: int, steps: int | None) -> tuple[list, object]:
    """The specs to compare and the measure to read them with: the shapes world's evaluation prompts and
    checker by default; a given prompt over seeds 0..n-1 (no measure) for any other model."""
    from ..errors import ValidationError
    from ..models import SHAPES_WORLD
    from ..spec import GenerationSpec

    if not isinstance(n, int) or n < 1:
        raise ValidationError(f"-n: {n!r} is not valid; valid: a whole number >= 1")
    if prompt is not None:
        return [GenerationSpec(prompt, seed=s, steps=steps) for s in range(n)], None
    if model != SHAPES_WORLD:
        raise ValidationError(f"--prompt: None is not valid for {model!r}; valid: a prompt (only the shapes world has default prompts)")
    from ..mini import world
    from ..mini.metrics import checker_metric

    rows = world.evaluation_prompts(n).itertuples()
    return [GenerationSpec(row.prompt, seed=int(row.seed), steps=steps) for row in rows], checker_metric


def cmd_precision(args) -> int:
    from ..io import check_output
    from ..models import check_vae
    from ..precision import measure_dtypes, summarize

    dtypes = tuple(d.strip() for d in args.dtypes.split(","))
    specs, measure = precision_specs(args.model, args.prompt, args.n, args.steps)
    preflight(args)  # the model, the device's name: before any process loads it
    if args.csv:
        check_output("csv", args.csv, "file")
    if args.vae:
        check_vae(args.vae)
    table = measure_dtypes(args.model, specs, dtypes, device=args.device, measure=measure, reference=dtypes[0],
                           isolate=not args.in_process, load_options={"vae": args.vae} if args.vae else None)
    if args.csv:
        table.to_csv(args.csv, index=False)
    summary = summarize(table)
    print(summary.drop(columns=[c for c in ("cuda_peak_mb",) if summary[c].isna().all()]).round(3).to_string(index=False))
    return 0


def cmd_hires(args) -> int:
    from ..hires import HIRES_CONSTRAINTS, hires_fix
    from ..models import check_vae, load_pipeline
    from ..validation import Options, validate_params

    spec = spec_from_args(args)
    hires = {"scale": args.scale, "strength": args.strength, "upscaler": args.upscaler, "steps": args.hires_steps}
    validate_params(hires, HIRES_CONSTRAINTS)  # before the model is loaded
    validate_params({"dtype": args.dtype}, {"dtype": [Options(("auto", "fp16", "bf16", "fp32"))]})
    preflight(args, spec, out=args.out, scale=args.scale)
    if args.vae:
        check_vae(args.vae)
    pipe = load_pipeline(args.model, device=args.device, dtype=args.dtype, allow_pickle=args.allow_pickle, vae=args.vae)
    result = hires_fix(pipe, spec, **hires)
    for path in result.save(args.out):
        print(path)
    return 0
