"""``sdlab generate | info | reproduce | samplers | demo``."""
from __future__ import annotations

import json

from ._options import add_model_options, add_spec_options, load_model, preflight, spec_from_args
from .adapters import adapter_folders, add_adapter_options
from .control import add_control_options, control_from_args


def register(sub) -> None:
    p = sub.add_parser("generate", help="make images; prints the path of each PNG written")
    add_spec_options(p)
    add_adapter_options(p)
    add_control_options(p)
    p.add_argument("--out", default="outputs", help="output directory (default: outputs)")
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("info", help="the generation parameters stored in a PNG (sdlab, A1111 or ComfyUI)")
    p.add_argument("png")
    p.add_argument("--json", action="store_true", help="one JSON object")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("reproduce", help="regenerate a PNG from its own metadata and report the pixel difference")
    p.add_argument("png")
    p.add_argument("--init", help="the init image, for img2img/inpainting PNGs (its hash is checked)")
    p.add_argument("--mask", help="the mask, for inpainting PNGs")
    p.add_argument("--out", default="outputs")
    add_model_options(p)
    add_adapter_options(p)
    add_control_options(p, reproduce=True)
    p.set_defaults(func=cmd_reproduce, model=None)

    p = sub.add_parser("samplers", help="list sampler names")
    p.set_defaults(func=cmd_samplers)

    p = sub.add_parser("demo", help="a labelled seed x guidance grid from the shapes world; prints its path")
    p.add_argument("--prompt", default="a large red circle at the top left on a white background")
    p.add_argument("--out", default="outputs")
    add_model_options(p)
    p.set_defaults(func=cmd_demo)


def cmd_generate(args) -> int:
    from ..generate import generate

    spec = control_from_args(args, spec_from_args(args))  # ControlNet images, types and names checked, nothing loaded
    preflight(args, spec, out=args.out)  # bad input fails in well under a second: before torch and diffusers load
    folders = adapter_folders(args, spec.prompt)  # a missing LoRA or folder fails before the model loads
    result = generate(load_model(args), spec, adapters=folders)
    for path in result.save(args.out):
        print(path)
    return 0


def info_dict(spec) -> dict:
    """The JSON shape of ``sdlab info --json``: A1111's main keys, then everything else found."""
    from ..metadata import format_parameters, parse_parameters

    _, _, pairs = parse_parameters(format_parameters(spec))
    out = {
        "prompt": spec.prompt, "negative_prompt": spec.negative_prompt, "steps": spec.steps,
        "sampler": spec.sampler, "cfg_scale": spec.guidance, "seed": spec.seed,
        "width": spec.width, "height": spec.height, "model": spec.model, "model_hash": spec.model_hash,
    }
    taken = {"Steps", "Sampler", "Schedule type", "CFG scale", "Seed", "Size", "Model", "Model hash"}
    out.update({k: v for k, v in pairs.items() if k not in taken})
    return out


def cmd_info(args) -> int:
    from ..metadata import format_parameters, read_parameters

    spec = read_parameters(args.png)
    print(json.dumps(info_dict(spec), ensure_ascii=False) if args.json else format_parameters(spec))
    return 0


def cmd_reproduce(args) -> int:
    from ..io import check_output
    from ..models import locate
    from ..reproduce import reproduce

    def load(spec):
        args.model = args.model or spec.model or "shapes-world"
        locate(args.model, allow_pickle=args.allow_pickle)  # a name the PNG records but this machine lacks: one line, no import
        return load_model(args)

    check_output("out", args.out, "dir")
    done = reproduce(load, args.png, init=args.init, mask=args.mask, adapters=adapter_folders(args),
                     control=args.control, control_models=args.control_model, model=args.model, device=args.device,
                     force=args.force, control_dir=args.controlnet_dir, allow_pickle=args.allow_pickle)
    print(done.result.save(args.out)[0])
    print(f"max abs pixel difference: {done.max_abs_difference}")
    return 0


def cmd_samplers(args) -> int:
    from ..samplers import SAMPLERS

    for name, sampler in SAMPLERS.items():
        note = "" if sampler.available else f"  (needs {sampler.needs})"
        print(f"{name:<22} {sampler.scheduler}{' karras' if sampler.karras else ''}{note}")
    return 0


def cmd_demo(args) -> int:
    from pathlib import Path

    from ..generate import generate_many
    from ..grid import labelled_grid
    from ..io import atomic_path
    from ..metadata import save_png
    from ..spec import GenerationSpec

    preflight(args, out=args.out)
    pipe = load_model(args)
    seeds, guidance = [1, 2, 3, 4], [1.0, 3.0, 5.0, 7.5, 15.0]
    specs = [GenerationSpec(args.prompt, seed=s, guidance=g) for s in seeds for g in guidance]
    results = generate_many(pipe, specs)
    out = Path(args.out)
    for image, spec in results:
        save_png(image, spec, out / "demo")
    rows = [[results[i * len(guidance) + j][0] for j in range(len(guidance))] for i in range(len(seeds))]
    grid = labelled_grid(rows, [f"{g:g}" for g in guidance], [str(s) for s in seeds], "guidance (CFG scale)", "seed", cell=128, title=args.prompt)
    path = out / "demo-grid.png"
    with atomic_path(path) as tmp:
        grid.save(tmp)
    print(path)
    return 0
