"""LoRA and embedding files and their cost at generation time, measured: the figures the README and notebook quote.

1. file sizes: LoRAs on the attention (to_q, to_k, to_v, to_out.0) of the shapes world's UNet and of the
   real SD 1.5 and SDXL UNets (built on the meta device from their published configs, benchmarks/bench_cuda.py;
   the weights written are zeros of the real shapes), in diffusers' format (save_lora) and kohya's
   (export_kohya), fp32 and fp16; plus an embedding of 1 and 8 vectors;
2. the cost of applying at generation time on the shapes world: generate with a rank-4 LoRA on the UNet and
   text encoder, or an embedding, beside plain generate (best of N), and the weight memory the call's
   clones add (only the LoRA's own tensors: every base weight is shared with the user's pipeline);
3. an X/Y/Z plot over LoRA weights (3 weights x 8 seeds, 20 steps): ``generate_many``, which builds one LoRA
   pipeline per weight and batches the seeds on it, beside one ``generate`` call per image (what it did before).

Usage: python benchmarks/bench_adapters.py [--repeat 5] [--json OUT]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import best_of  # noqa: E402
from bench_cuda import SD15_UNET, SDXL_UNET  # noqa: E402

from sdlab.adapters.apply import prepare_adapters  # noqa: E402
from sdlab.adapters.embeddings import save_embedding  # noqa: E402
from sdlab.adapters.lora import export_kohya, save_lora  # noqa: E402
from sdlab.adapters.networks import AdapterFolders  # noqa: E402
from sdlab.generate import generate, generate_many  # noqa: E402
from sdlab.models import load_pipeline  # noqa: E402
from sdlab.spec import GenerationSpec  # noqa: E402

TARGETS = ("to_q", "to_k", "to_v", "to_out.0")


def lora_shapes(unet) -> dict[str, tuple[int, int]]:
    """``{module: (in, out)}`` of the attention projections a LoRA targets."""
    return {name: (m.in_features, m.out_features) for name, m in unet.named_modules()
            if isinstance(m, torch.nn.Linear) and name.endswith(tuple("." + t for t in TARGETS))}


def zero_lora(shapes: dict, rank: int, dtype) -> dict:
    out = {}
    for name, (fan_in, fan_out) in shapes.items():
        out[f"{name}.lora_A.weight"] = torch.zeros(rank, fan_in, dtype=dtype)
        out[f"{name}.lora_B.weight"] = torch.zeros(fan_out, rank, dtype=dtype)
    return out


def file_sizes(work: Path, shapes_world) -> list[dict]:
    from diffusers import UNet2DConditionModel

    unets = {"shapes world": shapes_world.unet}
    with torch.device("meta"):
        unets["SD 1.5"] = UNet2DConditionModel(**SD15_UNET)
        unets["SDXL"] = UNet2DConditionModel(**SDXL_UNET)
    rows = []
    for model, unet in unets.items():
        shapes = lora_shapes(unet)
        family = "sdxl" if model == "SDXL" else "sd1"
        for rank in (4, 16):
            for dtype in (torch.float32, torch.float16):
                path = save_lora(work / f"{model}-{rank}-{dtype}.safetensors", zero_lora(shapes, rank, dtype), family=family, rank=rank)
                kohya = export_kohya(path, work / f"k-{model}-{rank}-{dtype}.safetensors", family=family, unet_config=unet.config)
                rows.append({"model": model, "rank": rank, "dtype": str(dtype).removeprefix("torch."), "modules": len(shapes),
                             "parameters": sum(rank * (i + o) for i, o in shapes.values()),
                             "diffusers_bytes": path.stat().st_size, "kohya_bytes": kohya.stat().st_size})
    for n in (1, 8):
        path = save_embedding(work / f"e{n}.safetensors", "e", torch.zeros(n, 768))
        rows.append({"model": "SD 1.5 embedding", "rank": n, "dtype": "float32", "modules": 0, "parameters": n * 768,
                     "diffusers_bytes": path.stat().st_size, "kohya_bytes": None})
    return rows


def overhead(work: Path, pipe, repeat: int) -> dict:
    from peft import LoraConfig, get_peft_model_state_dict, inject_adapter_in_model
    import copy

    unet = inject_adapter_in_model(LoraConfig(r=4, lora_alpha=4, target_modules=list(TARGETS)), copy.deepcopy(pipe.unet))
    te = inject_adapter_in_model(LoraConfig(r=4, lora_alpha=4, target_modules=["q_proj", "k_proj", "v_proj", "out_proj"]),
                                 copy.deepcopy(pipe.text_encoder))
    save_lora(work / "loras" / "x.safetensors", get_peft_model_state_dict(unet), get_peft_model_state_dict(te), rank=4)
    save_embedding(work / "emb" / "shiny.safetensors", "shiny", torch.zeros(2, pipe.text_encoder.config.hidden_size))
    folders = AdapterFolders(lora_dirs=[work / "loras"], embedding_dirs=[work / "emb"])
    spec = GenerationSpec("a red circle", seed=1, steps=20)
    times = {
        "plain": best_of(lambda: generate(pipe, spec), repeat),
        "lora": best_of(lambda: generate(pipe, spec.replace(prompt="a red circle <lora:x:1>"), adapters=folders), repeat),
        "embedding": best_of(lambda: generate(pipe, spec.replace(prompt="a red shiny circle"), adapters=folders), repeat),
        "prepare_lora": best_of(lambda: prepare_adapters(pipe, spec.replace(prompt="a <lora:x:1>"), folders), repeat),
    }
    used = prepare_adapters(pipe, spec.replace(prompt="a <lora:x:1>"), folders)
    shared = {p.data_ptr() for p in pipe.unet.parameters()}
    added = sum(p.numel() * p.element_size() for p in used.pipe.unet.parameters() if p.data_ptr() not in shared)
    weights = [spec.replace(prompt=f"a red circle <lora:x:{w}>", seed=seed) for w in (0.25, 0.5, 1) for seed in range(8)]
    times["sweep_one_call_each"] = best_of(lambda: [generate(pipe, s, adapters=folders) for s in weights], 1)
    times["sweep_batched"] = best_of(lambda: generate_many(pipe, weights, adapters=folders), 1)
    return {**{f"{k}_s": v for k, v in times.items()}, "steps": 20, "unet_bytes": sum(p.numel() * p.element_size() for p in pipe.unet.parameters()),
            "clone_added_bytes": added}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    pipe = load_pipeline("shapes-world", device="cpu")
    with tempfile.TemporaryDirectory() as tmp:
        rows = file_sizes(Path(tmp), pipe)
        cost = overhead(Path(tmp), pipe, args.repeat)
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch threads 1, load {os.getloadavg()[0]:.1f}")
    print(f"{'model':<18}{'rank':>5}{'dtype':>9}{'modules':>8}{'params':>11}{'diffusers':>12}{'kohya':>12}")
    for r in rows:
        kohya = f"{r['kohya_bytes']:,}" if r["kohya_bytes"] else "-"
        print(f"{r['model']:<18}{r['rank']:>5}{r['dtype']:>9}{r['modules']:>8}{r['parameters']:>11,}{r['diffusers_bytes']:>12,}{kohya:>12}")
    print(f"generate, 20 steps, shapes world: plain {cost['plain_s']:.3f} s, with a LoRA {cost['lora_s']:.3f} s "
          f"(building the call's LoRA pipeline {cost['prepare_lora_s']:.3f} s), with an embedding {cost['embedding_s']:.3f} s")
    print(f"LoRA weights 0.25/0.5/1 x 8 seeds, 20 steps: one generate call per image {cost['sweep_one_call_each_s']:.2f} s, "
          f"generate_many (one LoRA pipeline per weight, seeds batched) {cost['sweep_batched_s']:.2f} s "
          f"({cost['sweep_one_call_each_s'] / cost['sweep_batched_s']:.1f}x)")
    print(f"weight memory the call's clones add: {cost['clone_added_bytes']:,} bytes (the UNet holds {cost['unet_bytes']:,})")
    if args.json:
        Path(args.json).write_text(json.dumps({"files": rows, "cost": cost}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
