"""Real-size Stable Diffusion speed on a CUDA GPU, with no downloads: random weights, real architectures.

Builds SD 1.5 (UNet 860M, CLIP ViT-L text encoder, SD's VAE) and SDXL base (UNet 2.6B, CLIP ViT-L +
OpenCLIP bigG text encoders, SDXL's VAE) from their published configs, written inline below, with
random weights made on the GPU, and times diffusers' own pipelines in fp16:

- SD 1.5: 25 steps at 512 x 512; SDXL: 30 steps at 1024 x 1024; DPM++ 2M Karras, CFG 7, batch 1;
- three modes, applied in turn to one build of each model: ``eager``; ``channels_last`` (UNet and VAE
  in NHWC); ``compile`` (channels_last plus ``torch.compile`` of the UNet). Each mode's first call
  (compilation, autotuning) is reported on its own, then ``--repeat`` calls are timed.

Prompts are token ids fed to the text encoders (no tokenizer files): the text encoders, the denoising
loop and the VAE decode all run, as in a real call. Random weights run the same kernels as trained
ones, so the timings and memory are the real models' (the images are noise). It prints one table:
seconds per image (text encoding + loop + decode), the loop's it/s, peak GPU memory, first-call
seconds. Meant to finish in under 8 minutes on an H100/H200; ``--budget`` skips what would not fit.

    python benchmarks/bench_cuda.py [--repeat 3] [--modes eager,channels_last,compile] [--json OUT]
    python benchmarks/bench_cuda.py --tiny      # the same code at toy widths on the CPU (what the tests run)

Without CUDA (and without ``--tiny``) it prints one line and exits 0.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time

# --- published configs (diffusers' config.json of each component), inline so nothing is downloaded ---------
SD15_UNET = dict(
    sample_size=64, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(320, 640, 1280, 1280),
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=768, attention_head_dim=8, norm_num_groups=32, norm_eps=1e-5, act_fn="silu",
    flip_sin_to_cos=True, freq_shift=0, downsample_padding=1, mid_block_scale_factor=1, center_input_sample=False,
)
SDXL_UNET = dict(
    sample_size=128, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(320, 640, 1280),
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    transformer_layers_per_block=(1, 2, 10), attention_head_dim=(5, 10, 20), cross_attention_dim=2048,
    use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=256,
    projection_class_embeddings_input_dim=2816, norm_num_groups=32, act_fn="silu", flip_sin_to_cos=True, freq_shift=0,
)
SD_VAE = dict(
    in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(128, 256, 512, 512), layers_per_block=2,
    down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4, norm_num_groups=32,
    act_fn="silu", sample_size=512, scaling_factor=0.18215,
)
SDXL_VAE = {**SD_VAE, "sample_size": 1024, "scaling_factor": 0.13025, "force_upcast": True}
CLIP_L = dict(  # SD 1.5's text encoder, and SDXL's first
    vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
    max_position_embeddings=77, hidden_act="quick_gelu", projection_dim=768, bos_token_id=49406, eos_token_id=49407, pad_token_id=49407,
)
CLIP_BIG_G = {**CLIP_L, "hidden_size": 1280, "intermediate_size": 5120, "num_hidden_layers": 32, "num_attention_heads": 20,
              "hidden_act": "gelu", "projection_dim": 1280}
SCHEDULER = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                 algorithm_type="dpmsolver++", solver_order=2, use_karras_sigmas=True, steps_offset=1)
MODELS = {  # name: (UNet, VAE, text encoders, size, steps)
    "SD 1.5": (SD15_UNET, SD_VAE, (CLIP_L,), 512, 25),
    "SDXL": (SDXL_UNET, SDXL_VAE, (CLIP_L, CLIP_BIG_G), 1024, 30),
}
# --tiny: the same architectures at toy widths, to run this file's code on a CPU in seconds
TINY = {
    "unet": dict(layers_per_block=1, norm_num_groups=8),
    "SD 1.5": dict(block_out_channels=(8, 8, 16, 16), cross_attention_dim=16, attention_head_dim=2),
    "SDXL": dict(block_out_channels=(8, 16, 16), transformer_layers_per_block=(1, 1, 2), attention_head_dim=(2, 2, 4),
                 cross_attention_dim=32, addition_time_embed_dim=4, projection_class_embeddings_input_dim=6 * 4 + 16),
    "vae": dict(block_out_channels=(8, 8, 8, 8), layers_per_block=1, norm_num_groups=4),
    "clip": dict(hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2, projection_dim=16),
    "size": 64, "steps": 3,
}
MODES = ("eager", "channels_last", "compile")
PROMPT_TOKENS = 20  # a typical prompt's length in CLIP tokens


def configs(name: str, tiny: bool) -> tuple[dict, dict, tuple[dict, ...], int, int]:
    """The model's component configs, size and steps (toy widths with ``tiny``)."""
    unet, vae, clips, size, steps = MODELS[name]
    if not tiny:
        return unet, vae, clips, size, steps
    unet = {**unet, **TINY["unet"], **TINY[name]}
    clips = tuple({**c, **TINY["clip"]} for c in clips)
    if name == "SDXL":  # the second encoder is the wider one in SDXL too
        clips = (clips[0], {**clips[1], "hidden_size": 16, "projection_dim": 16})
    return unet, {**vae, **TINY["vae"]}, clips, TINY["size"], TINY["steps"]


def build(name: str, tiny: bool, device: str, dtype):
    """The diffusers pipeline of ``name`` with random weights made on ``device`` (no tokenizers: prompts are ids)."""
    import torch
    from diffusers import (AutoencoderKL, DPMSolverMultistepScheduler, StableDiffusionPipeline,
                           StableDiffusionXLPipeline, UNet2DConditionModel)
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    unet_cfg, vae_cfg, clip_cfgs, _, _ = configs(name, tiny)
    torch.manual_seed(0)
    with torch.device(device):
        unet = UNet2DConditionModel(**unet_cfg).to(dtype).eval()
        vae = AutoencoderKL(**vae_cfg).to(dtype).eval()
        encoders = [CLIPTextModel(CLIPTextConfig(**clip_cfgs[0])).to(dtype).eval()]
        if len(clip_cfgs) == 2:
            encoders.append(CLIPTextModelWithProjection(CLIPTextConfig(**clip_cfgs[1])).to(dtype).eval())
    scheduler = DPMSolverMultistepScheduler(**SCHEDULER)
    if name == "SD 1.5":
        pipe = StableDiffusionPipeline(vae=vae, text_encoder=encoders[0], tokenizer=None, unet=unet, scheduler=scheduler,
                                       safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    else:
        pipe = StableDiffusionXLPipeline(vae=vae, text_encoder=encoders[0], text_encoder_2=encoders[1], tokenizer=None,
                                         tokenizer_2=None, unet=unet, scheduler=scheduler, add_watermarker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def token_ids(seed: int, device: str):
    """A CLIP-shaped prompt: BOS, ``PROMPT_TOKENS`` word ids, EOS, then padding to 77 (ids, no tokenizer)."""
    import torch

    words = torch.randint(1000, 40000, (PROMPT_TOKENS,), generator=torch.Generator().manual_seed(seed))
    ids = torch.full((1, 77), CLIP_L["pad_token_id"])
    ids[0, 0], ids[0, 1 : 1 + PROMPT_TOKENS], ids[0, 1 + PROMPT_TOKENS] = CLIP_L["bos_token_id"], words, CLIP_L["eos_token_id"]
    return ids.to(device)


def embeddings(pipe, ids) -> dict:
    """The pipeline's conditioning from token ids, as its own encode_prompt computes it (penultimate layer for SDXL)."""
    import torch

    with torch.no_grad():
        if getattr(pipe, "text_encoder_2", None) is None:
            return {"prompt_embeds": pipe.text_encoder(ids)[0]}
        first = pipe.text_encoder(ids, output_hidden_states=True).hidden_states[-2]
        out = pipe.text_encoder_2(ids, output_hidden_states=True)
        return {"prompt_embeds": torch.cat([first, out.hidden_states[-2]], dim=-1), "pooled_prompt_embeds": out.text_embeds}


def generate_once(pipe, size: int, steps: int, device: str) -> tuple[float, float]:
    """One image: (seconds for text encoding + loop + decode, the loop's iterations per second)."""
    import torch

    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    marks: list[float] = []

    def on_step_end(_pipe, _i, _t, tensors):
        sync()
        marks.append(time.perf_counter())
        return tensors

    sync()
    started = time.perf_counter()
    positive, negative = embeddings(pipe, token_ids(1, device)), embeddings(pipe, token_ids(2, device))
    pipe(**positive, **{f"negative_{k}": v for k, v in negative.items()}, height=size, width=size, num_inference_steps=steps,
         guidance_scale=7.0, generator=torch.Generator(device).manual_seed(0), output_type="np", callback_on_step_end=on_step_end)
    sync()
    total = time.perf_counter() - started
    loop = (len(marks) - 1) / (marks[-1] - marks[0]) if len(marks) > 1 else float("nan")
    return total, loop


def prepare_mode(pipe, mode: str, backend: str) -> None:
    """Put this benchmark's own pipeline in ``mode`` (these pipelines are the script's, made above)."""
    import torch

    if mode in ("channels_last", "compile"):
        pipe.unet.to(memory_format=torch.channels_last)
        pipe.vae.to(memory_format=torch.channels_last)
    if mode == "compile" and not hasattr(pipe.unet, "_orig_mod"):
        pipe.unet = torch.compile(pipe.unet, backend=backend, fullgraph=True)


def measure(pipe, name: str, mode: str, size: int, steps: int, device: str, repeat: int) -> dict:
    """One warm-up image (compilation, autotuning), then ``repeat`` timed ones."""
    import torch

    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    first, _ = generate_once(pipe, size, steps, device)
    times, speeds = zip(*(generate_once(pipe, size, steps, device) for _ in range(repeat)))
    return {"model": name, "mode": mode, "size": size, "steps": steps, "first_call_s": first,
            "seconds_per_image": statistics.median(times), "it_per_s": statistics.median(speeds),
            "peak_gpu_gb": torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else float("nan")}


def run(args) -> list[dict]:
    """Each model built once; its modes applied in order (eager, then NHWC, then NHWC + compile)."""
    import torch

    device = "cuda" if not args.tiny else "cpu"
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[args.dtype]
    deadline = time.perf_counter() + args.budget
    modes = [m for m in MODES if m in args.modes.split(",")]
    rows = []
    for name in args.models.split(","):
        _, _, _, size, steps = configs(name, args.tiny)
        built = time.perf_counter()
        pipe = build(name, args.tiny, device, dtype)
        print(f"  {name}: built in {time.perf_counter() - built:.1f} s", flush=True)
        for mode in modes:
            left = deadline - time.perf_counter()
            if left < (args.compile_reserve if mode == "compile" else 0):
                rows.append({"model": name, "mode": mode, "skipped": f"time budget ({left:.0f} s left)"})
                print(f"  {name} {mode}: skipped, {left:.0f} s of the budget left", flush=True)
                continue
            try:
                prepare_mode(pipe, mode, args.compile_backend)
                row = measure(pipe, name, mode, size, steps, device, args.repeat)
            except Exception as exc:  # one failing mode (a compile error) must not lose the others' figures
                row = {"model": name, "mode": mode, "skipped": f"failed: {type(exc).__name__}: {str(exc).splitlines()[0][:120]}"}
                print(f"  {name} {mode}: {row['skipped']}", flush=True)
            else:
                print(f"  {name} {mode}: {row['seconds_per_image']:.3f} s/image, {row['it_per_s']:.2f} it/s", flush=True)
            rows.append(row)
        del pipe
        if device == "cuda":
            torch.cuda.empty_cache()
    return rows


def table(rows: list[dict]) -> str:
    head = f"{'model':<7} {'mode':<14} {'size':>5} {'steps':>5} {'s/image':>8} {'it/s':>7} {'peak GB':>8} {'1st call s':>10}"
    lines = [head, "-" * len(head)]
    for r in rows:
        if "skipped" in r:
            lines.append(f"{r['model']:<7} {r['mode']:<14} skipped: {r['skipped']}")
        else:
            lines.append(f"{r['model']:<7} {r['mode']:<14} {r['size']:>5} {r['steps']:>5} {r['seconds_per_image']:>8.3f} "
                         f"{r['it_per_s']:>7.2f} {r['peak_gpu_gb']:>8.2f} {r['first_call_s']:>10.1f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", "--dry-run", action="store_true", help="toy widths on the CPU: runs this code, measures nothing")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--dtype", default=None, help="fp16 (default on CUDA), bf16 or fp32 (default with --tiny)")
    parser.add_argument("--repeat", type=int, default=3, help="timed images per model and mode, after one warm-up")
    parser.add_argument("--compile-backend", default=None, help="torch.compile backend (default: inductor; eager with --tiny)")
    parser.add_argument("--budget", type=float, default=420.0, help="seconds; a mode that would start later is skipped")
    parser.add_argument("--compile-reserve", type=float, default=150.0, help="seconds a compile mode needs to be started")
    parser.add_argument("--json", help="also write the rows here")
    args = parser.parse_args(argv)
    args.dtype = args.dtype or ("fp32" if args.tiny else "fp16")
    args.compile_backend = args.compile_backend or ("eager" if args.tiny else "inductor")
    for value, valid, flag in ((args.models, MODELS, "--models"), (args.modes, MODES, "--modes")):
        unknown = [v for v in value.split(",") if v not in valid]
        if unknown:
            parser.error(f"{flag}: {', '.join(unknown)} not valid; valid: {', '.join(valid)}")

    import torch

    if not args.tiny and not torch.cuda.is_available():
        print(f"bench_cuda: no CUDA device (torch {torch.__version__}); run it on a GPU machine, or --tiny for the CPU code path")
        return 0
    import diffusers

    where = "CPU (--tiny: toy widths, figures meaningless)" if args.tiny else torch.cuda.get_device_name(0)
    print(f"{where}; torch {torch.__version__}, diffusers {diffusers.__version__}, {args.dtype}, {platform.python_version()}", flush=True)
    started = time.perf_counter()
    rows = run(args)
    print(table(rows))
    print(f"total {time.perf_counter() - started:.0f} s")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"device": where, "torch": torch.__version__, "dtype": args.dtype, "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
