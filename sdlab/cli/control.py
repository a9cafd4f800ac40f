"""``sdlab control preprocess | list``; ``--control IMG --control-type ... --control-model ...`` for ``generate`` and ``reproduce``.

Per-unit options are repeatable and line up with the ``--control`` images in order; one value is used
for every unit. Every check (files, types, ranges, model names) runs before torch or a model loads.
"""
from __future__ import annotations


def add_control_options(parser, reproduce: bool = False) -> None:
    """The ControlNet options of a verb that makes images (``reproduce``: only the images and model names)."""
    parser.add_argument("--control", action="append", default=[], metavar="IMG",
                        help="an image a ControlNet follows (repeatable: one per ControlNet); its map is drawn by --control-type"
                        + (" (reproduce: the recorded units' images, in order)" if reproduce else ""))
    parser.add_argument("--control-model", action="append", default=[], metavar="NAME|DIR|FILE",
                        help="the ControlNet: a registered name (see 'sdlab control list'), a diffusers directory, or a single "
                        "file as A1111 and ComfyUI keep them (.safetensors; .pth with --allow-pickle) (repeatable)"
                        + (" replacing the recorded names" if reproduce else ""))
    parser.add_argument("--controlnet-dir", metavar="DIR",
                        help="a folder of ControlNet files (A1111: models/ControlNet) where model names are looked up"
                        + (", as A1111 looks up a recorded 'name [hash]'" if reproduce else ""))
    if reproduce:
        return
    parser.add_argument("--control-type", action="append", default=[], metavar="TYPE",
                        help="edges (Canny), mask (the subject's region) or depth (your own depth map); default: edges")
    parser.add_argument("--control-module", action="append", default=[], metavar="NAME",
                        help="the preprocessor: canny or outline for edges (default: the type's first)")
    parser.add_argument("--control-scale", action="append", default=[], type=float, metavar="W", help="ControlNet weight in [0, 2] (default 1)")
    parser.add_argument("--control-start", action="append", default=[], type=float, metavar="F", help="fraction of the steps it starts at (default 0)")
    parser.add_argument("--control-end", action="append", default=[], type=float, metavar="F", help="fraction of the steps it ends at (default 1)")
    parser.add_argument("--control-preprocessed", action="store_true", help="the --control images are maps already: pass them as is")
    parser.add_argument("--control-mode", action="append", default=[], metavar="MODE",
                        help="A1111's Control Mode: balanced (default), prompt (My prompt is more important: residuals ramped "
                        "down toward the first block) or controlnet (ControlNet is more important, = --guess-mode, every unit)")
    parser.add_argument("--guess-mode", action="store_true", help="ControlNets on the prompt's half only (A1111: ControlNet is more important)")


CONTROL_MODES = ("balanced", "prompt", "controlnet")  # A1111: Balanced, My prompt is more important, ControlNet is more important


def _per_unit(args, name: str, n: int) -> list:
    values = getattr(args, name.replace("-", "_"))
    if len(values) > 1 and len(values) != n:
        from ..validation import invalid

        raise invalid(f"--{name}", values, f"one value, or one per --control ({n})")
    return values * n if len(values) == 1 else values or [None] * n


def control_from_args(args, spec):
    """``spec`` with the ControlNet units the options describe; images and model names checked, nothing loaded."""
    from ..control.recorded import locate_model
    from ..control.unit import ControlUnit
    from ..images import open_image
    from ..validation import invalid

    n = len(args.control)
    if n == 0:
        extras = [f"--{k}" for k in ("control-type", "control-model", "control-scale", "control-start", "control-end", "control-module",
                                     "controlnet-dir", "control-mode") if getattr(args, k.replace("-", "_"))]
        if extras:
            raise invalid(extras[0], getattr(args, extras[0][2:].replace("-", "_")), "only with --control IMG")
        return spec.replace(guess_mode=bool(args.guess_mode)) if args.guess_mode else spec
    for path in args.control:
        open_image(path, "--control").close()
    units = []
    columns = {k: _per_unit(args, k, n) for k in ("control-type", "control-model", "control-scale", "control-start", "control-end",
                                                  "control-module", "control-mode")}
    modes = [m or "balanced" for m in columns["control-mode"]]
    for m in modes:
        if m not in CONTROL_MODES:
            raise invalid("--control-mode", m, "balanced, prompt or controlnet")
    guess = bool(args.guess_mode) or "controlnet" in modes
    if "controlnet" in modes and set(modes) != {"controlnet"}:
        raise invalid("--control-mode", modes, "controlnet for every unit or for none (diffusers' guess mode acts on all)")
    for i, image in enumerate(args.control):
        model = columns["control-model"][i]
        if model is not None:  # a name that is neither registered, a directory, a file nor in --controlnet-dir fails now
            model = locate_model(model, args.controlnet_dir, allow_pickle=bool(getattr(args, "allow_pickle", False)))
        elif (columns["control-type"][i] or "edges") != "depth":
            raise invalid("--control-model", None, "a ControlNet name (see 'sdlab control list') or directory, one per --control "
                          "(only a depth map for an sd2-depth model needs none)")
        fields = {"control_type": columns["control-type"][i] or "edges", "model": model, "module": columns["control-module"][i],
                  "preprocessed": bool(args.control_preprocessed), "allow_pickle": bool(getattr(args, "allow_pickle", False)),
                  "prompt_more_important": modes[i] == "prompt"}
        for key, option in (("scale", "control-scale"), ("start", "control-start"), ("end", "control-end")):
            if columns[option][i] is not None:
                fields[key] = columns[option][i]
        units.append(ControlUnit(image, **fields))
    return spec.replace(control=tuple(units), guess_mode=guess)


def register(sub) -> None:
    control = sub.add_parser("control", help="ControlNet condition maps and the registered ControlNets")
    verbs = control.add_subparsers(dest="control_command", metavar="VERB")
    verbs.required = True
    p = verbs.add_parser("preprocess", help="draw an image's condition map (A1111's preprocessors); prints the map's path")
    p.add_argument("image")
    p.add_argument("--type", default="edges", help="edges, mask or depth (default: edges)")
    p.add_argument("--module", help="canny or outline for edges (default: the type's first)")
    p.add_argument("--low", type=float, default=100.0, help="Canny's low threshold on 0-255 (A1111's Threshold A, default 100)")
    p.add_argument("--high", type=float, default=200.0, help="Canny's high threshold (A1111's Threshold B, default 200)")
    p.add_argument("--out", required=True, help="the map's PNG path")
    p.set_defaults(func=cmd_preprocess)
    p = verbs.add_parser("list", help="the registered ControlNet names, what they read and where they come from")
    p.add_argument("--controlnet-dir", metavar="DIR", help="also list a folder's ControlNet files, as A1111 names them: 'name [hash]'")
    p.set_defaults(func=cmd_list)


def cmd_preprocess(args) -> int:
    from ..control.preprocess import preprocess
    from ..images import open_image
    from ..io import atomic_path, check_output

    image = open_image(args.image, "image")
    out = check_output("out", args.out, "file", inputs=(args.image,))
    drawn = preprocess(image, args.type, module=args.module, low=args.low, high=args.high)
    with atomic_path(out) as tmp:
        drawn.save(tmp, format="PNG")
    print(out)
    return 0


def cmd_list(args) -> int:
    from ..control.nets import CONTROLNETS, WEIGHTS, a1111_hash, folder_files

    files = folder_files(args.controlnet_dir, "--controlnet-dir") if args.controlnet_dir else []
    for name, known in CONTROLNETS.items():
        where = WEIGHTS / known.source if known.shipped else f"hub: {known.source}"
        ready = "" if not known.shipped or (WEIGHTS / known.source / "config.json").exists() else "  (not shipped yet)"
        print(f"{name:<20} {known.control_type:<6} {known.family:<5} {where}{ready}")
    for path in files:
        print(f"{path.stem} [{a1111_hash(path)}]  {path}")  # the type and family are read when a pipeline loads it
    return 0
