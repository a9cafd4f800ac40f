"""``sdlab train embedding | lora | dreambooth | hypernetwork``: teach a model a new concept from a few images.

The images come from a folder (``--images DIR``; a caption per image from a ``.txt`` file of
the same name, else ``--caption`` with ``{token}``) or from a shapes-world concept
(``--concept star|sun|ruby|outlined``). Everything the user typed is checked before a model is
loaded: an empty folder, images of mixed sizes, a token already in the vocabulary, a rank
<= 0, an unknown concept each end in one line and exit status 2. ``--out`` is the run
directory: its checkpoint makes a killed run continue when the same command runs again.
"""
from __future__ import annotations

import json
from pathlib import Path

METHODS = ("embedding", "lora", "dreambooth", "hypernetwork")


def register(methods) -> None:
    helps = {
        "embedding": "textual inversion: learn a new token's vector (everything else frozen)",
        "lora": "LoRA on the UNet's attention (peft), optionally the text encoder",
        "dreambooth": "fine-tune the whole UNet on a subject, with or without prior preservation",
        "hypernetwork": "an A1111 hypernetwork (residual MLPs on attention keys/values)",
    }
    for method in METHODS:
        p = methods.add_parser(method, help=helps[method] + "; resumes if killed")
        source = p.add_mutually_exclusive_group(required=True)
        source.add_argument("--images", help="folder of training images (one size); captions from NAME.txt beside each")
        source.add_argument("--concept", help="a shapes-world concept: star (new shape), sun and ruby (reachable: a subject, a "
                            "colour word), outlined (style)")
        p.add_argument("--token", help="the trigger word (embedding: a new token; lora/dreambooth: a rare word in the captions); "
                       "needed with --images, with --concept the concept's own word by default (star, sun, ruby, outlined)")
        p.add_argument("--out", required=True, help="run directory: checkpoint, log and the result (TOKEN.safetensors for an "
                       "embedding or a LoRA, TOKEN.pt or .safetensors for a hypernetwork, hypernetwork.pt without --token; "
                       "pipeline/ for DreamBooth)")
        p.add_argument("--model", default="shapes-world", help="shapes-world or a diffusers pipeline directory")
        p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
        p.add_argument("--caption", default="a {token}", help="caption for images without a .txt file ({token} is replaced)")
        p.add_argument("-n", "--n-images", type=int, default=20, help="images of a --concept (default 20)")
        p.add_argument("--steps", type=int, help="optimiser steps (default: the method's)")
        p.add_argument("--lr", type=float, help="learning rate (default: the method's)")
        p.add_argument("--lr-scheduler", default="constant", help="constant (default) or cosine (toward 0 by the last step)")
        p.add_argument("--batch", type=int, help="images per step")
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--mixed-precision", default="no", help="no, fp16 or bf16 (CUDA only: refused on the CPU, where it would train in fp32)")
        p.add_argument("--gradient-checkpointing", action="store_true")
        p.add_argument("--mask-weight", type=float, default=0.0,
                       help="with --concept: the shape's latent cells weigh 1 + this in the loss (default 0; the benchmark uses 12)")
        if method != "embedding":
            p.add_argument("--caption-dropout", type=float, default=0.0,
                           help="share of captions trained as the empty prompt (kohya's caption_dropout_rate; default 0): keeps "
                           "CFG's unconditional prediction in step on data like the base model's own; on a concept's set it "
                           "teaches the empty prompt the concept")
        p.add_argument("--checkpoint-minutes", type=float, default=2.0,
                       help="write a resumable checkpoint this often (default 2; 0: after every step); a rerun resumes from it")
        p.add_argument("--quiet", action="store_true", help="no progress bar")
        p.add_argument("--force", action="store_true", help="train even when the estimate says the run will not fit in memory "
                       "or will not end today on this CPU")
        if method == "embedding":
            p.add_argument("--init-word", help="start the vector at this word's (default: the concept's class word, else 'a')")
            p.add_argument("--num-vectors", type=int, default=1)
        if method == "lora":
            p.add_argument("--rank", type=int, default=4)
            p.add_argument("--alpha", type=float)
            p.add_argument("--train-text-encoder", action="store_true")
        if method in ("dreambooth", "lora"):  # prior preservation: DreamBooth's class images, kohya's regularisation images
            p.add_argument("--class-word", help="the class in 'a TOKEN CLASS' (default: the concept's)")
            p.add_argument("--prior-weight", type=float, default=1.0 if method == "dreambooth" else 0.0,
                           help=f"prior-preservation loss weight (0: off; default {1.0 if method == 'dreambooth' else 0.0:g})")
            p.add_argument("--class-images", type=int, default=50, help="class images the base model generates (default 50)")
            p.add_argument("--preserve-weight", type=float, default=0.0,
                           help="output preservation's weight (0: off, the default): the base model's own predictions are kept "
                           "on the --preserve items (ai-toolkit's DOP/BPP)")
            p.add_argument("--preserve", default="class-word,blank",
                           help="what output preservation keeps, comma-separated: class-word (the subject's images, the class word "
                           "for the trigger), blank (the subject's images, empty prompt), class-images (the base model's class "
                           "images), world (images like the base model's own: the shapes world's, or --world-images), world-blank (the same, "
                           "empty prompt: CFG's unconditional branch); default class-word,blank")
            p.add_argument("--world-images", help="folder of images like the base model's own training data, one caption per "
                           "image in NAME.txt (none: the empty prompt), the subject's size: the world and world-blank items "
                           "(default on shapes-world: 200 of its own training images)")
            p.add_argument("--preserve-batch", type=int, default=4, help="preservation items per step (default 4)")
        if method == "hypernetwork":
            p.add_argument("--layer-structure", default="1,2,1", help="A1111's layer structure (default 1,2,1)")
            p.add_argument("--activation", default="linear", help="linear, relu, leakyrelu, elu, swish, tanh, sigmoid")
            p.add_argument("--format", default="pt", choices=("pt", "safetensors"), help="A1111's .pt (default) or .safetensors")
        p.set_defaults(func=cmd_finetune, finetune_method=method)


def _config(args):
    """The method's config from the arguments (its validation refuses bad values in one line)."""
    given = {k: v for k, v in (("steps", args.steps), ("lr", args.lr), ("batch", args.batch)) if v is not None}
    given.update(seed=args.seed, mixed_precision=args.mixed_precision, gradient_checkpointing=args.gradient_checkpointing,
                 mask_weight=args.mask_weight, checkpoint_minutes=args.checkpoint_minutes, caption_dropout=getattr(args, "caption_dropout", 0.0),
                 lr_scheduler=args.lr_scheduler)
    if args.finetune_method == "embedding":
        from ..finetune.embedding import EmbeddingConfig

        return EmbeddingConfig(**given, num_vectors=args.num_vectors)
    if args.finetune_method == "lora":
        from ..finetune.lora import LoraConfig

        return LoraConfig(**given, **_keeping(args), rank=args.rank, alpha=args.alpha, train_text_encoder=args.train_text_encoder)
    if args.finetune_method == "dreambooth":
        from ..finetune.dreambooth import DreamBoothConfig

        return DreamBoothConfig(**given, **_keeping(args))
    from ..finetune.hypernetwork import HypernetworkTrainConfig
    from ..validation import invalid

    try:
        structure = tuple(float(x) for x in args.layer_structure.split(","))
    except ValueError:
        raise invalid("--layer-structure", args.layer_structure, "comma-separated numbers, e.g. 1,2,1") from None
    return HypernetworkTrainConfig(**given, layer_structure=structure, activation_func=args.activation)


def _keeping(args) -> dict:
    """Prior and output preservation's fields (DreamBooth and LoRA)."""
    return {"prior_weight": args.prior_weight, "preserve_weight": args.preserve_weight, "preserve_batch": args.preserve_batch}


def _tokenizer_check(model: str, token: str) -> None:
    """Refuse a token in the vocabulary before the model loads (the tokenizer alone is read)."""
    from transformers import CLIPTokenizer

    from ..finetune.embedding import check_token
    from ..mini.finetune import model_directory

    directory = model_directory(model)
    for sub in ("tokenizer", "tokenizer_2"):
        if (directory / sub).is_dir():
            check_token(CLIPTokenizer.from_pretrained(directory / sub), token)


def cmd_finetune(args) -> int:
    from ..validation import Interval, Options, invalid, validate_params

    method = args.finetune_method
    cfg = _config(args)
    if cfg.mixed_precision != "no":  # CUDA's autocast: refused on the device this run would get, before the model loads
        from ..finetune.common import check_precision
        from ..models import resolve_device

        check_precision(cfg.mixed_precision, resolve_device(args.device))
    validate_params({"--n-images": args.n_images}, {"--n-images": [Interval(int, 1, 500)]})
    if args.token is not None and (not args.token.strip() or any(c.isspace() for c in args.token)):
        raise invalid("--token", args.token, "one word without spaces")
    concept = None
    if args.concept is not None:
        from ..mini import concepts

        validate_params({"--concept": args.concept}, {"--concept": [Options(concepts.CONCEPTS)]})
        concept = concepts.CONCEPTS[args.concept]
    if args.token is None and concept is None and method != "hypernetwork":
        raise invalid("--token", None, "a trigger word (one word without spaces) when training on --images")
    token = args.token or (concept.token if concept is not None and method != "hypernetwork" else "hypernetwork")
    prior = method in ("dreambooth", "lora") and cfg.prior_weight > 0  # class images of the class word
    world_dir = getattr(args, "world_images", None)  # lora and dreambooth have --world-images
    keep = ()
    if method in ("dreambooth", "lora") and cfg.preserve_weight > 0:
        from ..finetune.preserve import WORLD_KINDS, check_kinds

        keep = check_kinds(args.preserve, "--preserve")
        if set(keep) & set(WORLD_KINDS) and args.model != "shapes-world" and not world_dir:
            raise invalid("--preserve", args.preserve, "kinds without world or world-blank for a model other than shapes-world, "
                          "or --world-images DIR (images like that model's own)")
    if world_dir and not (keep and set(keep) & set(WORLD_KINDS)):  # imported where keep is made
        raise invalid("--world-images", world_dir, "given with --preserve-weight > 0 and world or world-blank in --preserve")
    class_word = None
    if method == "dreambooth" or prior or "class-word" in keep or "class-images" in keep:
        class_word = args.class_word or (concept.class_word if concept else None)
        if not class_word:
            raise invalid("--class-word", args.class_word, "the subject's class word, e.g. dog (needed with --images)")
        validate_params({"--class-images": args.class_images}, {"--class-images": [Interval(int, 1, 10_000)]})
    if keep:
        validate_params({"--preserve-batch": args.preserve_batch}, {"--preserve-batch": [Interval(int, 1, 10_000)]})
    if args.model != "shapes-world" and not (Path(args.model) / "model_index.json").exists():
        raise invalid("--model", args.model, "shapes-world or a diffusers pipeline directory (one with model_index.json)")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise invalid("--out", args.out, "a directory (new, or a run's to continue)")
    trigger = f"{token} {class_word}" if method == "dreambooth" else ("" if method == "hypernetwork" and concept else token)
    if concept is not None:
        images, table = concepts.make_set(concept.name, args.n_images, args.seed, trigger=trigger)
        captions, masks = table["TEXT"].tolist(), concepts.shape_masks(images)
    else:
        from ..finetune.common import read_folder

        images, captions = read_folder(args.images, args.caption, trigger or token)
        masks = None
        if cfg.mask_weight:
            raise invalid("--mask-weight", cfg.mask_weight, "0 with --images (masks come with a --concept)")
    world_folder = None  # (images, captions) of --world-images, read before the model loads
    if world_dir:
        from ..finetune.common import read_folder

        world_folder = read_folder(world_dir, "", "", "--world-images")
        if world_folder[0].shape[1:3] != images.shape[1:3]:
            raise invalid("--world-images", world_dir, f"images of the subject's size ({images.shape[2]}x{images.shape[1]})")
    from ..finetune.embedding import check_token_text

    check_token_text(token)  # every method's result file is named after it
    if method == "embedding":
        _tokenizer_check(args.model, token)
    recorded = {"method": method, "model": args.model, "images": args.images, "concept": args.concept, "token": token,
                "preserve": list(keep), "world_images": world_dir,
                "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in cfg.__dict__.items()}}
    config_file = out / "finetune_config.json"
    if config_file.exists() and not _same_run(json.loads(config_file.read_text()), recorded, cfg):
        raise invalid("--out", args.out, "a new directory, or the one of an identical command (it holds another run)")
    out.mkdir(parents=True, exist_ok=True)
    from ..io import atomic_write_text

    atomic_write_text(config_file, json.dumps(recorded, indent=2))
    from ..finetune.common import Dataset
    from ..finetune.preserve import WORLD_KINDS
    from ..finetune.run import keeping_sets, train_and_save
    from ..mini.concepts import world_images
    from ..models import load_pipeline, model_info

    data = Dataset(images, captions, masks)
    pipe = load_pipeline(args.model, device=args.device)
    prompts = []  # the class images' prompts, where prior preservation or class-images preservation makes them
    if prior or "class-images" in keep:
        prompts = concepts.class_prompts(concept.name, args.class_images) if concept else [f"a {class_word}"] * args.class_images
    world_data = None
    if set(WORLD_KINDS) & set(keep):  # --world-images, else the shapes world's own (checked above: another model needs the folder)
        world_data = Dataset(*(world_folder or world_images()))
    class_data, preserve_data = keeping_sets(pipe, data, trigger, class_word or "", prompts, prior, keep, world_data)
    info = model_info(pipe)
    init = getattr(args, "init_word", None) or (concept.init_word if concept else "a")
    trained = train_and_save(method, pipe, data, out, cfg, token, init, class_data, getattr(args, "format", "pt"),
                             {"name": f"{info.name}-{method}", "defaults": info.defaults, "preview": info.preview},
                             progress=not args.quiet, preserve_data=preserve_data, force=args.force)
    print(f"{method}: {trained.path} ({cfg.steps} steps, {trained.info.get('seconds', 0.0) / 60:.1f} min)")
    print("use: " + trained.usage())
    return 0


def _same_run(old: dict, new: dict, cfg) -> bool:
    """Whether the run recorded in ``old`` is the command ``new``. A run recorded by an older sdlab lacks the
    fields added since (output preservation's): it is the same run when those are at their defaults now."""
    import dataclasses

    defaults = {f.name: list(f.default) if isinstance(f.default, tuple) else f.default for f in dataclasses.fields(cfg)}
    config = {**{k: defaults[k] for k in new["config"] if k in defaults}, **old.get("config", {})}
    return {"preserve": [], "world_images": None, **old, "config": config} == new
