"""``sdlab lora info | export-kohya`` and ``sdlab embedding info | convert``; ``--lora-dir`` / ``--embeddings-dir``
for the verbs that make images (``generate``, ``reproduce``, ``sweep``)."""
from __future__ import annotations

import json


def add_adapter_options(parser) -> None:
    """The user's folders of LoRAs (``<lora:NAME:W>`` in the prompt) and embeddings (their names in the prompts)."""
    parser.add_argument("--lora-dir", action="append", default=[], metavar="DIR",
                        help="folder of LoRA files for <lora:NAME:WEIGHT> in the prompt (repeatable)")
    parser.add_argument("--embeddings-dir", action="append", default=[], metavar="DIR",
                        help="folder of textual-inversion embeddings, used where their names appear in the prompts (repeatable)")
    parser.add_argument("--hypernetwork-dir", action="append", default=[], metavar="DIR",
                        help="folder of hypernetworks for <hypernet:NAME:STRENGTH> in the prompt (repeatable)")


def adapter_folders(args, prompt: str | None = None):
    """:class:`~sdlab.adapters.networks.AdapterFolders` from the options (None when none given); with ``prompt``,
    its LoRA tags are resolved now, so a missing file fails before a model loads."""
    from ..adapters.networks import AdapterFolders, preflight

    folders = None
    if args.lora_dir or args.embeddings_dir or args.hypernetwork_dir:
        folders = AdapterFolders(tuple(args.lora_dir), tuple(args.embeddings_dir), tuple(args.hypernetwork_dir),
                                 allow_pickle=bool(getattr(args, "allow_pickle", False)))
    if prompt is not None:
        preflight(prompt, folders)
    return folders


def register(sub) -> None:
    lora = sub.add_parser("lora", help="LoRA files: show one, or export diffusers' format to kohya/A1111's")
    verbs = lora.add_subparsers(dest="lora_command", metavar="VERB")
    verbs.required = True
    p = verbs.add_parser("info", help="format, A1111 hash, size, modules, rank and alpha of a LoRA file")
    p.add_argument("file")
    p.add_argument("--allow-pickle", action="store_true", help="read a .pt/.bin/.ckpt LoRA (pickle runs code from the file)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_lora_info)
    p = verbs.add_parser("export-kohya", help="write a diffusers-format LoRA in kohya/A1111's key layout; prints the path")
    p.add_argument("src", help="diffusers LoRA (.safetensors, e.g. pytorch_lora_weights.safetensors)")
    p.add_argument("out", help="output .safetensors")
    p.add_argument("--family", default="sd1", help="sd1, sd2 or sdxl (default: sd1)")
    p.add_argument("--model", help="SDXL: the diffusers pipeline directory the LoRA is for (its UNet's layers_per_block; default 2, SDXL base)")
    p.set_defaults(func=cmd_export_kohya)

    emb = sub.add_parser("embedding", help="textual-inversion embeddings: show one, or convert between layouts")
    verbs = emb.add_subparsers(dest="embedding_command", metavar="VERB")
    verbs.required = True
    p = verbs.add_parser("info", help="name, vectors, widths and A1111 hash of an embedding file")
    p.add_argument("file")
    p.add_argument("--allow-pickle", action="store_true", help="read a .pt/.bin embedding (pickle runs code from the file)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_embedding_info)
    p = verbs.add_parser("convert", help="rewrite an embedding as diffusers' .safetensors or A1111's .pt/.safetensors; prints the path")
    p.add_argument("src")
    p.add_argument("out")
    p.add_argument("--format", default="diffusers", help="diffusers or a1111 (default: diffusers)")
    p.add_argument("--token", help="the token to store (default: the source file's name)")
    p.add_argument("--allow-pickle", action="store_true", help="read a .pt/.bin source (pickle runs code from the file)")
    p.set_defaults(func=cmd_embedding_convert)


def _writable(option: str, path: str) -> None:
    """Refuse an output path whose folder cannot be made or written, in one line, before any work."""
    import os
    from pathlib import Path

    from ..errors import ValidationError

    folder = Path(path).expanduser().resolve().parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ValidationError(f"{option}: cannot create the folder {str(folder)!r} ({exc.strerror or type(exc).__name__})") from None
    if not os.access(folder, os.W_OK) or Path(path).is_dir():
        raise ValidationError(f"{option}: {path!r} cannot be written (a folder, or a folder without write permission)")


def _print(record: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(record, ensure_ascii=False))
    else:
        for key, value in record.items():
            print(f"{key}: {value}")


def cmd_lora_info(args) -> int:
    from ..adapters.lora import describe_lora

    _print(describe_lora(args.file, allow_pickle=args.allow_pickle), args.json)
    return 0


def cmd_export_kohya(args) -> int:
    from types import SimpleNamespace

    from ..adapters.lora import KOHYA_FAMILIES, export_kohya
    from ..validation import Options, validate_params

    validate_params({"family": args.family}, {"family": [Options(KOHYA_FAMILIES)]})
    _writable("out", args.out)
    config = None
    if args.family == "sdxl":
        config = SimpleNamespace(layers_per_block=_layers_per_block(args.model) if args.model else 2)
    print(export_kohya(args.src, args.out, family=args.family, unet_config=config))
    return 0


def _layers_per_block(model: str) -> int:
    from pathlib import Path

    from ..errors import ModelNotFoundError

    path = Path(model) / "unet" / "config.json"
    if not path.is_file():
        raise ModelNotFoundError(f"--model: {model!r} is not a diffusers pipeline directory with unet/config.json")
    return int(json.loads(path.read_text())["layers_per_block"])


def cmd_embedding_info(args) -> int:
    from ..adapters.embeddings import embedding_hash, read_embedding

    emb = read_embedding(args.file, allow_pickle=args.allow_pickle)
    record = {"name": emb.name, "vectors": emb.n_vectors, "widths": emb.widths(), "hash": embedding_hash(args.file)}
    if emb.step is not None:
        record["step"] = emb.step
    record.update(emb.extra)
    _print(record, args.json)
    return 0


def cmd_embedding_convert(args) -> int:
    from ..adapters.embeddings import convert_embedding

    _writable("out", args.out)
    print(convert_embedding(args.src, args.out, format=args.format, token=args.token, allow_pickle=args.allow_pickle))
    return 0
