"""Every CLI verb walked through a table of bad inputs, as a user would feed them.

Each row is (verb, argv, fragment): the command must exit 2 with exactly one
line on stderr that starts ``error:`` and holds ``fragment`` (the parameter and
the value), print no traceback, take at most 10 s, and never load a model:
``sdlab.models.load_pipeline`` is replaced by a function that fails the test.
``@/`` in an argument is the directory of generated fixture files (corrupt,
empty, foreign, wrongly sized). A verb the parser offers but the table does not
cover fails :func:`test_every_verb_has_rows`, so a new verb joins the table.
"""
from __future__ import annotations

import io
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sdlab.cli import build_parser, main

# -- the table -------------------------------------------------------------------------------
# Spec options shared by generate, trace, sweep and hires: (argv after the verb's own required ones, fragment).
SPEC_ROWS = [
    (["--size", "65x64"], "width: 65 is not valid"),
    (["--size", "big"], "size: 'big' is not valid"),
    (["--size", "0x64"], "width: 0 is not valid"),
    (["--size", "64x-8"], "size: '64x-8' is not valid"),
    (["--steps", "0"], "steps: 0 is not valid"),
    (["--steps", "-3"], "steps: -3 is not valid"),
    (["--steps", "many"], "--steps: invalid int value: 'many'"),
    (["--cfg", "nan"], "guidance: nan is not valid"),
    (["--cfg", "-1"], "guidance: -1.0 is not valid"),
    (["--cfg", "inf"], "guidance: inf is not valid"),
    (["--sampler", "Eulr"], "sampler: 'Eulr' is not valid"),
    (["-n", "0"], "batch_size: 0 is not valid"),
    (["-n", "-1"], "batch_size: -1 is not valid"),
    (["--seed", "-2"], "seed: -2 is not valid"),
    (["--seed", str(2**64)], f"seed: {2**64} is not valid"),
    (["--clip-skip", "0"], "clip_skip: 0 is not valid"),
    (["--strength", "1.5", "--init", "@/img.png"], "strength: 1.5 is not valid"),
    (["--strength", "nan", "--init", "@/img.png"], "strength: nan is not valid"),
    (["--init", "@/missing.png"], "init: no such file"),
    (["--init", "@/zero.png"], "init: '@/zero.png' is not a readable image"),
    (["--init", "@/corrupt.png"], "is not a readable image"),
    (["--init", "@/dir.png"], "init: '@/dir.png' is not a readable image"),
    (["--mask", "@/img.png"], "mask: a mask without an init_image is not valid"),
    (["--init", "@/img.png", "--mask", "@/missing.png"], "mask: no such file"),
    (["--init", "@/img.png", "--mask", "@/img48.png"], "mask: '48x48' is not valid"),
    (["--mask-blur", "-1", "--init", "@/img.png"], "mask_blur: -1 is not valid"),
    (["--outpaint", "1,2,3", "--init", "@/img.png"], "--outpaint: '1,2,3'"),
    (["--outpaint", "0,0,0,0", "--init", "@/img.png"], "outpaint: (0, 0, 0, 0) is not valid"),
    (["--outpaint", "8,0,8,0"], "outpaint: (8, 0, 8, 0) is not valid"),
    (["--model", "@/nothing.ckpt"], "model: no such file"),
    (["--model", "@/nothing.safetensors"], "model: no such file"),
    (["--model", "@/afile"], "model: '"),
    (["--model", "@/notamodel"], "model: '"),
    (["--model", "no-such-model"], "model: 'no-such-model' is not"),
    (["--model", "@/pickle.ckpt"], "is a pickle checkpoint"),
    (["--device", "tpu"], "device: 'tpu' is not valid"),
    (["--size", "4096x4096"], "cost: '"),
    (["-n", "100000"], "100000 image"),
    (["--steps", "10000000"], "10000000 steps"),
]
DREAMBOOTH = {"dreambooth": ["--class-word", "dog"]}
SPEC_VERBS = {  # the verb's own argv (before the spec options) and its output option
    "generate": ["generate", "a circle"],
    "trace": ["trace", "a circle", "--out", "@/trace-out"],
    "sweep": ["sweep", "a circle", "--x", "seed=1-2", "--out", "@/sweep-out"],
    "hires": ["hires", "a circle"],
}

ROWS = [(verb, [*head, *tail], fragment) for verb, head in SPEC_VERBS.items() for tail, fragment in SPEC_ROWS]
ROWS += [
    # generate: output paths
    ("generate", ["generate", "a circle", "--out", "@/afile"], "out: '"),
    ("generate", ["generate", "a circle", "--out", "@/afile/sub"], "is not a directory"),
    ("generate", ["generate", "a circle", "--out", "/proc/sdlab-out"], "out: '/proc/sdlab-out'"),
    ("generate", ["generate", "a circle", "--unknown-flag"], "unrecognized arguments: --unknown-flag"),
    ("generate", ["generate"], "the following arguments are required: prompt"),
    # info
    ("info", ["info", "@/missing.png"], "no such file"),
    ("info", ["info", "@/zero.png"], "zero.png"),
    ("info", ["info", "@/corrupt.png"], "corrupt.png"),
    ("info", ["info", "@/truncated.png"], "truncated.png"),
    ("info", ["info", "@/dir.png"], "dir.png"),
    ("info", ["info", "@/img.png"], "no generation metadata"),
    ("info", ["info", "@/text.txt"], "text.txt"),
    ("info", ["info", "@/comfy_badseed.png"], "seed"),
    ("info", ["info", "@/comfy_notjson.png"], "prompt"),
    ("info", ["info", "@/workflow_empty.png"], "workflow"),
    ("info", ["info", "@/a1111_badsteps.png"], "Steps"),
    # reproduce
    ("reproduce", ["reproduce", "@/missing.png"], "no such file"),
    ("reproduce", ["reproduce", "@/img.png"], "no generation metadata"),
    ("reproduce", ["reproduce", "@/meta_size.png"], "2152x784"),
    ("reproduce", ["reproduce", "@/meta_odd.png"], "width: 2153 is not valid"),
    ("reproduce", ["reproduce", "@/meta_steps.png"], "10000000 steps"),
    ("reproduce", ["reproduce", "@/meta_huge.png"], "4096x4096"),
    ("reproduce", ["reproduce", "@/meta_big.png"], "cost: '4096x4096, 1 image, 20 steps' is not valid"),
    ("reproduce", ["reproduce", "@/meta_ok.png", "--out", "@/afile"], "out: '"),
    ("reproduce", ["reproduce", "@/meta_ok.png", "--out", "@/afile/sub"], "is not a directory"),
    ("reproduce", ["reproduce", "@/meta_ok.png", "--model", "@/notamodel"], "model: '"),
    ("reproduce", ["reproduce", "@/meta_ok.png", "--device", "tpu"], "device: 'tpu' is not valid"),
    ("reproduce", ["reproduce", "@/meta_init.png"], "init: this PNG was made from an image"),
    ("reproduce", ["reproduce", "@/meta_nomodel.png"], "model: None is not valid"),
    ("reproduce", ["reproduce", "@/meta_foreign.png"], "model: 'v1-5-pruned-emaonly' is not"),
    ("reproduce", ["reproduce", "@/meta_init.png", "--init", "@/img48.png"], "init: "),
    ("reproduce", ["reproduce", "@/meta_init.png", "--init", "@/missing.png"], "init: no such file"),
    # samplers
    ("samplers", ["samplers", "extra"], "unrecognized arguments: extra"),
    ("samplers", ["samplers", "--json"], "unrecognized arguments: --json"),
    # demo
    ("demo", ["demo", "--out", "@/afile"], "out: '"),
    ("demo", ["demo", "--out", "@/afile/sub"], "is not a directory"),
    ("demo", ["demo", "--model", "@/notamodel"], "model: '"),
    ("demo", ["demo", "--device", "tpu"], "device: 'tpu' is not valid"),
    ("demo", ["demo", "--out", "/proc/sdlab-demo"], "out: '/proc/sdlab-demo'"),
    # mini data
    ("mini data", ["mini", "data", "--out", "@/mini-data", "-n", "0"], "n: 0 is not valid"),
    ("mini data", ["mini", "data", "--out", "@/mini-data", "-n", "-5"], "n: -5 is not valid"),
    ("mini data", ["mini", "data", "--out", "@/mini-data", "--seed", "-1"], "seed: -1 is not valid"),
    ("mini data", ["mini", "data", "--out", "@/afile", "-n", "2"], "out: '"),
    ("mini data", ["mini", "data", "--out", "@/afile/sub", "-n", "2"], "is not a directory"),
    ("mini data", ["mini", "data", "--out", "/proc/sdlab-data", "-n", "2"], "out: '/proc/sdlab-data'"),
    ("mini data", ["mini", "data", "--out", "@/mini-data", "-n", "1000000000"], "1000000000"),
    ("mini data", ["mini", "data"], "the following arguments are required: --out"),
    # mini train
    ("mini train", ["mini", "train", "--out", "@/never", "--images", "0"], "n_images: 0 is not valid"),
    ("mini train", ["mini", "train", "--out", "@/never", "--vae-steps", "-1"], "vae_steps: -1 is not valid"),
    ("mini train", ["mini", "train", "--out", "@/never", "--unet-steps", "0"], "unet_steps: 0 is not valid"),
    ("mini train", ["mini", "train", "--out", "@/never", "--foreground-weight", "nan"], "unet_foreground_weight: nan is not valid"),
    ("mini train", ["mini", "train", "--out", "@/never", "--seed", "-1"], "seed: -1 is not valid"),
    ("mini train", ["mini", "train", "--out", "@/never", "--text-reads", "middle"], "--text-reads: invalid choice: 'middle'"),
    ("mini train", ["mini", "train", "--out", "@/afile"], "out: '"),
    ("mini train", ["mini", "train", "--out", "@/afile/sub"], "is not a directory"),
    ("mini train", ["mini", "train", "--out", "/proc/sdlab-run"], "out: '/proc/sdlab-run'"),
    ("mini train", ["mini", "train", "--out", "@/bad-run", "--images", "8"], "checkpoint: '@/bad-run/vae.ckpt' is unreadable"),
    ("mini train", ["mini", "train", "--out", "@/never", "--unet-steps", "1000000000"], "unet_steps: 1000000000 is not valid; valid: work under 24 h"),
    ("mini eval", ["mini", "eval", "--prompts", "1000000"], "--prompts: 1000000 is not valid; valid: work under 2 h"),
    ("sweep", ["sweep", "a", "--x", "seed=1-1000000000", "--out", "@/sw"], "axis seed: '1-1000000000' is not valid; valid: at most 10000"),
    ("audit captions", ["audit", "captions", "@/ok.csv", "--n-boot", "1000000000"], "n_boot: 1000000000 is not valid"),
    # mini finetune
    ("mini finetune", ["mini", "finetune", "@/notamodel", "--out", "@/never"], "notamodel"),
    ("mini finetune", ["mini", "finetune", "--out", "@/never", "--steps", "0"], "steps: 0 is not valid"),
    ("mini finetune", ["mini", "finetune", "--out", "@/never", "--lr", "0"], "lr: 0.0 is not valid"),
    ("mini finetune", ["mini", "finetune", "--out", "@/never", "--lr", "nan"], "lr: nan is not valid"),
    ("mini finetune", ["mini", "finetune", "--out", "@/never", "--foreground-weight", "-1"], "foreground_weight: -1.0 is not valid"),
    ("mini finetune", ["mini", "finetune", "--out", "@/never", "--seed", "-1"], "seed: -1 is not valid"),
    ("mini finetune", ["mini", "finetune", "--out", "@/afile"], "out: '"),
    ("mini finetune", ["mini", "finetune", "--out", "@/afile/sub"], "is not a directory"),
    # mini eval
    ("mini eval", ["mini", "eval", "--guidance", "1,x"], "--guidance: '1,x' is not valid"),
    ("mini eval", ["mini", "eval", "--guidance", ""], "--guidance: '' is not valid"),
    ("mini eval", ["mini", "eval", "--guidance", "nan"], "guidance"),
    ("mini eval", ["mini", "eval", "--guidance", "-1"], "guidance"),
    ("mini eval", ["mini", "eval", "--prompts", "0"], "n_prompts: 0 is not valid"),
    ("mini eval", ["mini", "eval", "--seeds", "0"], "n_seeds: 0 is not valid"),
    ("mini eval", ["mini", "eval", "@/notamodel"], "model: '"),
    ("mini eval", ["mini", "eval", "--out", "@/dir.png"], "out: '"),
    ("mini eval", ["mini", "eval", "--out", "@/afile/report.json"], "is not a directory"),
    # precision
    ("precision", ["precision", "-n", "0"], "-n: 0 is not valid"),
    ("precision", ["precision", "--dtypes", "fp64"], "dtypes: ('fp64',) is not valid"),
    ("precision", ["precision", "--dtypes", ""], "dtypes: ('',) is not valid"),
    ("precision", ["precision", "--dtypes", "fp32,fp32"], "dtypes: ('fp32', 'fp32') is not valid"),
    ("precision", ["precision", "--device", "tpu"], "device: 'tpu' is not valid"),
    ("precision", ["precision", "--steps", "0"], "steps: 0 is not valid"),
    ("precision", ["precision", "--model", "@/notamodel", "--prompt", "a"], "model: '"),
    ("precision", ["precision", "--model", "@/notamodel"], "--prompt: None is not valid"),
    ("precision", ["precision", "--csv", "@/dir.png"], "csv: '"),
    ("precision", ["precision", "--csv", "@/afile/t.csv"], "is not a directory"),
    ("precision", ["precision", "--vae", "@/missing-vae"], "vae: '"),
    # hires: its own options
    ("hires", ["hires", "a circle", "--scale", "0"], "scale: 0.0 is not valid"),
    ("hires", ["hires", "a circle", "--scale", "nan"], "scale: nan is not valid"),
    ("hires", ["hires", "a circle", "--upscaler", "bicubic"], "upscaler: 'bicubic' is not valid"),
    ("hires", ["hires", "a circle", "--hires-steps", "0"], "steps: 0 is not valid"),
    ("hires", ["hires", "a circle", "--dtype", "fp64"], "dtype: 'fp64' is not valid"),
    ("hires", ["hires", "a circle", "--vae", "@/missing-vae"], "vae: '"),
    ("hires", ["hires", "a circle", "--out", "@/afile"], "out: '"),
    ("hires", ["hires", "a circle", "--scale", "64"], "64"),
    # sweep: its own options
    ("sweep", ["sweep", "a", "--x", "seed", "--out", "@/sw"], "seed"),
    ("sweep", ["sweep", "a", "--x", "seed=", "--out", "@/sw"], "axis seed: no values in ''"),
    ("sweep", ["sweep", "a", "--x", "colour=1,2", "--out", "@/sw"], "colour"),
    ("sweep", ["sweep", "a", "--x", "seed=1-3", "--y", "seed=4,5", "--out", "@/sw"], "seed"),
    ("sweep", ["sweep", "a", "--x", "cfg=1,x", "--out", "@/sw"], "axis guidance: 'x' is not a number"),
    ("sweep", ["sweep", "a", "--x", "steps=0,5", "--out", "@/sw"], "steps: 0 is not valid"),
    ("sweep", ["sweep", "a", "--x", "seed=1-2", "--prompts", "@/missing.txt", "--out", "@/sw"], "--prompts: no such file"),
    ("sweep", ["sweep", "a", "--x", "seed=1-2", "--prompts", "@/latin1.txt", "--out", "@/sw"], "latin1.txt"),
    ("sweep", ["sweep", "a", "--x", "seed=1-2", "--prompts", "@/empty.txt", "--out", "@/sw"], "empty.txt"),
    ("sweep", ["sweep", "a", "--x", "seed=1-2", "--prompts", "@/dir.png", "--out", "@/sw"], "--prompts: "),
    ("sweep", ["sweep", "a", "--x", "seed=1-2", "--workers", "0", "--out", "@/sw"], "--workers: '0' is not valid"),
    ("sweep", ["sweep", "a", "--x", "seed=1-2", "--scheduler", "nonsense", "--out", "@/sw"], "scheduler"),
    ("sweep", ["sweep", "a", "--x", "seed=1-2", "--scheduler", "tcp://127.0.0.1:9", "--out", "@/sw"], "tcp://127.0.0.1:9"),
    ("sweep", ["sweep", "a", "--x", "seed=1-2", "--out", "@/afile"], "out: '"),
    ("sweep", ["sweep", "a", "--x", "seed=1-2", "--out", "/proc/sdlab-sweep"], "out: '/proc/sdlab-sweep'"),
    ("sweep", ["sweep", "a", "--x", "seed=1-100000", "--out", "@/sw"], "100000"),
    ("sweep", ["sweep", "a", "--x", "seed=1-2", "--out", "@/bad-store"], "results.parquet' is unreadable"),
    ("sweep", ["sweep", "a", "--x", "seed=1-2", "--out", "@/bad-meta"], "sweep.json' is unreadable"),
    ("watermark battery", ["watermark", "battery", "@/big.png", "--out", "@/bad-rows"], "rows.parquet' is unreadable"),
    # trace: its own options
    ("trace", ["trace", "a circle", "--out", "/proc/sdlab-trace"], "out: '/proc/sdlab-trace'"),
    ("trace", ["trace", "a circle", "--out", "@/afile"], "out: '"),
    ("trace", ["trace", "a circle", "--out", "@/afile/sub"], "is not a directory"),
    ("trace", ["trace", "a circle"], "the following arguments are required: --out"),
    # watermark embed
    ("watermark embed", ["watermark", "embed", "@/missing.png", "--preset", "sd1", "--out", "@/m.png"], "no such file"),
    ("watermark embed", ["watermark", "embed", "@/corrupt.png", "--preset", "sd1", "--out", "@/m.png"], "is not a readable image"),
    ("watermark embed", ["watermark", "embed", "@/dir.png", "--preset", "sd1", "--out", "@/m.png"], "dir.png"),
    ("watermark embed", ["watermark", "embed", "@/img.png", "--preset", "sd1", "--out", "@/m.png"], "64x64"),
    ("watermark embed", ["watermark", "embed", "@/big.png", "--preset", "sd9", "--out", "@/m.png"], "--preset: invalid choice: 'sd9'"),
    ("watermark embed", ["watermark", "embed", "@/big.png", "--payload", "", "--out", "@/m.png"], "payload: '' is not valid"),
    ("watermark embed", ["watermark", "embed", "@/big.png", "--payload", "x" * 400, "--out", "@/m.png"], "3200 bits"),
    ("watermark embed", ["watermark", "embed", "@/big.png", "--preset", "sd1", "--out", "@/m.xyz"], "out: '"),
    ("watermark embed", ["watermark", "embed", "@/big.png", "--preset", "sd1", "--out", "@/dir.png"], "out: '"),
    ("watermark embed", ["watermark", "embed", "@/big.png", "--preset", "sd1", "--out", "@/afile/m.png"], "is not a directory"),
    ("watermark embed", ["watermark", "embed", "@/big.png", "--preset", "sd1", "--out", "/proc/sdlab.png"], "out: '/proc/sdlab.png'"),
    ("watermark embed", ["watermark", "embed", "@/big.png", "--preset", "sd1", "--out", "@/big.png"], "out: '"),
    ("watermark embed", ["watermark", "embed", "@/big.png", "--out", "@/m.png"], "one of the arguments --preset --payload is required"),
    # watermark detect
    ("watermark detect", ["watermark", "detect", "@/missing.png"], "no such file"),
    ("watermark detect", ["watermark", "detect", "@/corrupt.png"], "is not a readable image"),
    ("watermark detect", ["watermark", "detect", "@/zero.png"], "zero.png"),
    ("watermark detect", ["watermark", "detect", "@/dir.png"], "dir.png"),
    ("watermark detect", ["watermark", "detect", "@/big.png", "--fpr", "0"], "fpr: 0.0 is not valid"),
    ("watermark detect", ["watermark", "detect", "@/big.png", "--fpr", "2"], "fpr: 2.0 is not valid"),
    ("watermark detect", ["watermark", "detect", "@/big.png", "--fpr", "nan"], "fpr: nan is not valid"),
    ("watermark detect", ["watermark", "detect", "@/big.png", "--payload", ""], "payload: '' is not valid"),
    ("watermark detect", ["watermark", "detect", "@/img.png"], "64x64"),
    ("watermark detect", ["watermark", "detect", "@/big.png", "@/missing.png"], "no such file"),
    # watermark battery
    ("watermark battery", ["watermark", "battery", "@/big.png", "--attacks", "melt", "--out", "@/bat"], "attacks"),
    ("watermark battery", ["watermark", "battery", "@/big.png", "--workers", "0", "--out", "@/bat"], "workers: 0 is not valid"),
    ("watermark battery", ["watermark", "battery", "@/big.png", "--seed", "-1", "--out", "@/bat"], "seed: -1 is not valid"),
    ("watermark battery", ["watermark", "battery", "@/missing.png", "--out", "@/bat"], "no such file"),
    ("watermark battery", ["watermark", "battery", "@/corrupt.png", "--out", "@/bat"], "is not a readable image"),
    ("watermark battery", ["watermark", "battery", "@/big.png", "--methods", "lsb", "--out", "@/bat"], "--methods: invalid choice: 'lsb'"),
    ("watermark battery", ["watermark", "battery", "@/big.png", "--out", "@/afile"], "out: '"),
    ("watermark battery", ["watermark", "battery", "@/big.png", "--out", "/proc/sdlab-bat"], "out: '/proc/sdlab-bat'"),
    # watermark signature train / generate / detect
    ("watermark signature train", ["watermark", "signature", "train", "--out", "@/never", "--steps", "0"], "steps: 0 is not valid"),
    ("watermark signature train", ["watermark", "signature", "train", "--out", "@/never", "--bits", "4"], "n_bits: 4 is not valid"),
    ("watermark signature train", ["watermark", "signature", "train", "--out", "@/never", "--key-seed", "-1"], "key_seed: -1 is not valid"),
    ("watermark signature train", ["watermark", "signature", "train", "--out", "@/never", "--measure-images", "0"], "n_images: 0 is not valid"),
    ("watermark signature train", ["watermark", "signature", "train", "--out", "@/never", "--extractor-from", "@/missing"], "extractor_from: no trained signature"),
    ("watermark signature train", ["watermark", "signature", "train", "--out", "@/never", "--model", "@/notamodel"], "model: '"),
    ("watermark signature train", ["watermark", "signature", "train", "--out", "@/afile"], "out: '"),
    ("watermark signature train", ["watermark", "signature", "train", "--out", "@/afile/sub"], "is not a directory"),
    ("watermark signature generate", ["watermark", "signature", "generate", "a circle", "--seeds", "0", "--out", "@/sg"], "--seeds: 0 is not valid"),
    ("watermark signature generate", ["watermark", "signature", "generate", "a circle", "--signature", "@/missing", "--out", "@/sg"], "signature: "),
    ("watermark signature generate", ["watermark", "signature", "generate", "a circle", "--out", "@/afile"], "out: '"),
    ("watermark signature generate", ["watermark", "signature", "generate", "a circle", "--out", "@/afile/sub"], "is not a directory"),
    ("watermark signature generate", ["watermark", "signature", "generate", "a circle", "--seeds", "100000", "--out", "@/sg"], "100000"),
    ("watermark signature detect", ["watermark", "signature", "detect", "@/big.png", "--fpr", "2"], "fpr: 2.0 is not valid"),
    ("watermark signature detect", ["watermark", "signature", "detect", "@/big.png", "--signature", "@/missing"], "signature: "),
    ("watermark signature detect", ["watermark", "signature", "detect", "@/missing.png"], "no such file"),
    ("watermark signature detect", ["watermark", "signature", "detect", "@/corrupt.png"], "is not a readable image"),
    # watermark calibrate
    ("watermark calibrate", ["watermark", "calibrate", "--out", "@/cal.json", "--images", "0"], "n_images: 0 is not valid"),
    ("watermark calibrate", ["watermark", "calibrate", "--out", "@/dir.png"], "out: '"),
    ("watermark calibrate", ["watermark", "calibrate", "--out", "@/cal.json", "--images", "10000000"], "n_images: 10000000 is not valid"),
    ("watermark calibrate", ["watermark", "calibrate", "--out", "@/afile/cal.json"], "is not a directory"),
    ("watermark calibrate", ["watermark", "calibrate", "--out", "/proc/cal.json"], "out: '/proc/cal.json'"),
    # audit: the data files
    *[(f"audit {verb}", ["audit", verb, path], fragment) for verb in ("summary", "domains", "languages", "sizes", "scores", "funnel", "captions")
      for path, fragment in (("@/missing.parquet", "missing.parquet"), ("@/zero.parquet", "zero.parquet"),
                             ("@/trunc.parquet", "trunc.parquet"), ("@/notparquet.parquet", "notparquet.parquet"))],
    ("audit summary", ["audit", "summary", "@/flipped.parquet"], "flipped.parquet"),
    ("audit summary", ["audit", "summary", "@/ragged.csv"], "ragged.csv"),
    ("audit summary", ["audit", "summary", "@/bad.jsonl"], "bad.jsonl"),
    ("audit summary", ["audit", "summary", "@/nocols.csv"], "path: none of the columns"),
    ("audit summary", ["audit", "summary", "@/ok.csv", "--engine", "spark"], "engine: 'spark' is not valid"),
    ("audit summary", ["audit", "summary", "@/ok.csv", "--scheduler", "local"], "scheduler"),
    ("audit summary", ["audit", "summary", "@/ok.csv", "--setup-sql", "SELEKT 1"], "setup_sql"),
    ("audit summary", ["audit", "summary", "@/ok.csv", "--rows", "-1"], "rows: -1 is not valid"),
    ("audit summary", ["audit", "summary", "@/ok.csv", "--out", "@/afile"], "out: '"),
    ("audit summary", ["audit", "summary", "@/ok.csv", "--out", "/proc/sdlab-audit"], "out: '/proc/sdlab-audit'"),
    ("audit summary", ["audit", "summary", "@/ok.csv", "--engine", "dask", "--scheduler", "tcp://127.0.0.1:9"], "tcp://127.0.0.1:9"),
    ("audit domains", ["audit", "domains", "@/ok.csv", "--top", "0"], "top: 0 is not valid"),
    ("audit domains", ["audit", "domains", "@/ok.csv", "--idn", "ascii"], "idn: 'ascii' is not valid"),
    ("audit domains", ["audit", "domains", "@/ok.csv", "--categories", "@/missing.csv"], "missing.csv"),
    ("audit domains", ["audit", "domains", "@/ok.csv", "--categories", "@/ragged.csv"], "ragged.csv"),
    ("audit domains", ["audit", "domains", "@/ok.csv", "--out", "@/afile/sub"], "is not a directory"),
    ("audit languages", ["audit", "languages", "@/ok.csv", "--sample", "0"], "sample: 0 is not valid"),
    ("audit languages", ["audit", "languages", "@/ok.csv", "--accuracy", "best"], "accuracy: 'best' is not valid"),
    ("audit languages", ["audit", "languages", "@/ok.csv", "--seed", "-1"], "seed: -1 is not valid"),
    ("audit sizes", ["audit", "sizes", "@/ok.csv", "--min-side", "0"], "min_side: 0 is not valid"),
    ("audit sizes", ["audit", "sizes", "@/ok.csv", "--min-side", "-5"], "min_side: -5 is not valid"),
    ("audit scores", ["audit", "scores", "@/ok.csv", "--rows", "-3"], "rows: -3 is not valid"),
    ("audit scores", ["audit", "scores", "@/ok.csv", "--out", "@/afile"], "out: '"),
    ("audit funnel", ["audit", "funnel", "@/ok.csv", "--aesthetic-min", "nan"], "aesthetic_min: nan is not valid"),
    ("audit funnel", ["audit", "funnel", "@/ok.csv", "--pwatermark-max", "2"], "pwatermark_max: 2.0 is not valid"),
    ("audit funnel", ["audit", "funnel", "@/ok.csv", "--punsafe-max", "-0.5"], "punsafe_max: -0.5 is not valid"),
    ("audit funnel", ["audit", "funnel", "@/ok.csv", "--min-side", "-1"], "min_side: -1 is not valid"),
    ("audit captions", ["audit", "captions", "@/ok.csv", "--terms", "@/missing.csv"], "missing.csv"),
    ("audit captions", ["audit", "captions", "@/ok.csv", "--terms", "@/nocols.csv"], "nocols.csv"),
    ("audit captions", ["audit", "captions", "@/ok.csv", "--against", "age"], "columns: 'age' is not valid"),
    ("audit captions", ["audit", "captions", "@/ok.csv", "--n-boot", "0"], "n_boot: 0 is not valid"),
    ("audit captions", ["audit", "captions", "@/ok.csv", "--seed", "-1"], "seed: -1 is not valid"),
    # audit amplification (the shapes world's study)
    ("audit amplification", ["audit", "amplification", "--n", "0"], "n: 0 is not valid"),
    ("audit amplification", ["audit", "amplification", "--n", "100000"], "100000"),
    ("audit amplification", ["audit", "amplification", "--guidance", "nan"], "guidance_scales: "),
    ("audit amplification", ["audit", "amplification", "--guidance", "-1"], "guidance_scales: "),
    ("audit amplification", ["audit", "amplification", "--steps", "0"], "steps: 0 is not valid"),
    ("audit amplification", ["audit", "amplification", "--train-rows", "0"], "train_rows: 0 is not valid"),
    ("audit amplification", ["audit", "amplification", "--shape", "hexagon"], "hexagon"),
    ("audit amplification", ["audit", "amplification", "--attribute", "smell"], "smell"),
    ("audit amplification", ["audit", "amplification", "--value", "plaid"], "plaid"),
    ("audit amplification", ["audit", "amplification", "--rows", "-1"], "rows: -1 is not valid"),
    ("audit amplification", ["audit", "amplification", "--seed", "-1"], "seed: -1 is not valid"),
    ("audit amplification", ["audit", "amplification", "@/notamodel"], "model: '"),
    ("audit amplification", ["audit", "amplification", "--out", "@/afile"], "out: '"),
    # compress: one image, decode, bench
    ("compress", ["compress", "@/missing.png", "--out", "@/c.jpg"], "no such file"),
    ("compress", ["compress", "@/corrupt.png", "--out", "@/c.jpg"], "is not a readable image"),
    ("compress", ["compress", "@/dir.png", "--out", "@/c.jpg"], "dir.png"),
    ("compress", ["compress", "@/img.png", "--bytes", "0", "--out", "@/c.jpg"], "bytes: 0 is not valid"),
    ("compress", ["compress", "@/img.png", "--bytes", "-10", "--out", "@/c.jpg"], "bytes: -10 is not valid"),
    ("compress", ["compress", "@/img.png", "--quality", "101", "--out", "@/c.jpg"], "quality: 101 is not valid"),
    ("compress", ["compress", "@/img.png", "--quality", "-1", "--out", "@/c.jpg"], "quality: -1 is not valid"),
    ("compress", ["compress", "@/img.png", "--codec", "gif", "--out", "@/c.gif"], "--codec: invalid choice: 'gif'"),
    ("compress", ["compress", "@/img.png", "--out", "@/dir.png"], "out: '"),
    ("compress", ["compress", "@/img.png", "--out", "@/afile/c.jpg"], "is not a directory"),
    ("compress", ["compress", "@/img.png", "--out", "/proc/c.jpg"], "out: '/proc/c.jpg'"),
    ("compress", ["compress", "@/img.png", "--out", "@/img.png"], "out: '"),
    ("compress", ["compress", "@/img.png", "--decoded", "@/dir.png", "--out", "@/c.jpg"], "decoded: '"),
    ("compress", ["compress", "@/img.png", "--codec", "vae", "--model", "@/notamodel", "--out", "@/c.sdl"], "model: '"),
    ("compress", ["compress", "@/img.png", "@/big.png", "--out", "@/c.jpg"], "inputs: "),
    ("compress", ["compress", "@/img.png"], "the following arguments are required: --out"),
    ("compress decode", ["compress", "decode", "@/missing.sdl", "--out", "@/d.png"], "path: '@/missing.sdl' is not valid"),
    ("compress decode", ["compress", "decode", "@/zero.parquet", "--out", "@/d.png"], "zero.parquet"),
    ("compress decode", ["compress", "decode", "@/text.txt", "--out", "@/d.png"], "text.txt"),
    ("compress decode", ["compress", "decode", "@/text.txt", "@/img.png", "--out", "@/d.png"], "inputs: "),
    ("compress decode", ["compress", "decode", "@/text.txt", "--out", "@/dir.png"], "out: '"),
    ("compress bench", ["compress", "bench", "--shapes", "0", "--out", "@/bench"], "--shapes: 0 is not valid"),
    ("compress bench", ["compress", "bench", "--budgets", "0", "--out", "@/bench"], "budgets"),
    ("compress bench", ["compress", "bench", "--size", "0", "--out", "@/bench"], "size: 0 is not valid"),
    ("compress bench", ["compress", "bench", "--size", "100000", "--out", "@/bench"], "100000"),
    ("compress bench", ["compress", "bench", "@/missing.png", "--out", "@/bench"], "no such file"),
    ("compress bench", ["compress", "bench", "@/img.png", "--shapes", "2", "--out", "@/bench"], "inputs: "),
    ("compress bench", ["compress", "bench", "--shapes", "2", "--out", "@/afile"], "out: '"),
    ("compress bench", ["compress", "bench", "--shapes", "2", "--out", "/proc/sdlab-bench"], "out: '/proc/sdlab-bench'"),
    # generate's adapters and ControlNets (other verbs of the same work)
    ("generate", ["generate", "a <lora:nothing:1>", "--lora-dir", "@/missing-dir"], "missing-dir"),
    ("generate", ["generate", "a <lora:nothing:1>", "--lora-dir", "@/notamodel"], "nothing"),
    ("generate", ["generate", "a circle", "--embeddings-dir", "@/afile"], "afile"),
    ("generate", ["generate", "a circle", "--control", "@/missing.png", "--control-model", "@/notamodel"], "no such file"),
    ("generate", ["generate", "a circle", "--control", "@/corrupt.png", "--control-model", "@/notamodel"], "is not a readable image"),
    ("generate", ["generate", "a circle", "--control", "@/img.png"], "--control-model: None is not valid"),
    ("generate", ["generate", "a circle", "--control", "@/img.png", "--control-model", "no-such-controlnet"], "no-such-controlnet"),
    ("generate", ["generate", "a circle", "--control", "@/img.png", "--control-model", "@/notamodel"], "notamodel"),
    # control
    ("control list", ["control", "list", "extra"], "unrecognized arguments: extra"),
    ("control preprocess", ["control", "preprocess", "@/missing.png", "--out", "@/map.png"], "no such file"),
    ("control preprocess", ["control", "preprocess", "@/corrupt.png", "--out", "@/map.png"], "is not a readable image"),
    ("control preprocess", ["control", "preprocess", "@/img.png", "--type", "smell", "--out", "@/map.png"], "smell"),
    ("control preprocess", ["control", "preprocess", "@/img.png", "--low", "-5", "--out", "@/map.png"], "-5"),
    ("control preprocess", ["control", "preprocess", "@/img.png", "--out", "@/dir.png"], "out: '"),
    ("control preprocess", ["control", "preprocess", "@/img.png", "--out", "@/afile/map.png"], "is not a directory"),
    # lora / embedding files
    ("lora info", ["lora", "info", "@/missing.safetensors"], "no such file"),
    ("lora info", ["lora", "info", "@/text.txt"], "text.txt"),
    ("lora info", ["lora", "info", "@/pickle.ckpt"], "pickle"),
    ("lora export-kohya", ["lora", "export-kohya", "@/missing.safetensors", "@/k.safetensors"], "no such file"),
    ("lora export-kohya", ["lora", "export-kohya", "@/text.txt", "@/k.safetensors"], "text.txt"),
    ("lora export-kohya", ["lora", "export-kohya", "@/text.txt", "@/k.safetensors", "--family", "sd9"], "sd9"),
    ("embedding info", ["embedding", "info", "@/missing.pt"], "no such file"),
    ("embedding info", ["embedding", "info", "@/text.txt"], "text.txt"),
    ("embedding info", ["embedding", "info", "@/pickle.ckpt"], "pickle"),
    ("embedding convert", ["embedding", "convert", "@/missing.pt", "@/e.safetensors"], "no such file"),
    ("embedding convert", ["embedding", "convert", "@/text.txt", "@/e.safetensors", "--format", "gif"], "embedding: 'text.txt' is not valid"),
    # train METHOD (DreamBooth on your own images also needs the class word)
    *[(f"train {m}", ["train", m, "--images", "@/missing-dir", "--token", "sks", *DREAMBOOTH.get(m, []), "--out", "@/tr-out"], "missing-dir")
      for m in ("lora", "embedding", "dreambooth", "hypernetwork")],
    *[(f"train {m}", ["train", m, "--concept", "unicorn", "--token", "sks", "--out", "@/tr-out"], "unicorn")
      for m in ("lora", "embedding", "dreambooth", "hypernetwork")],
    *[(f"train {m}", ["train", m, "--images", "@/dir.png", "--token", "sks", "--out", "@/tr-out", "--steps", "0"], "steps: 0 is not valid")
      for m in ("lora", "embedding", "dreambooth", "hypernetwork")],
    *[(f"train {m}", ["train", m, "--images", "@/dir.png", "--token", "sks", "--out", "@/tr-out", "--lr", "nan"], "nan")
      for m in ("lora", "embedding", "dreambooth", "hypernetwork")],
    *[(f"train {m}", ["train", m, "--images", "@/dir.png", "--token", "sks", *DREAMBOOTH.get(m, []), "--out", "@/afile"], "out: '")
      for m in ("lora", "embedding", "dreambooth", "hypernetwork")],
    *[(f"train {m}", ["train", m, "--images", "@/dir.png", "--token", "sks", *DREAMBOOTH.get(m, []), "--out", "@/tr-out", "--model", "@/notamodel"], "model: '")
      for m in ("lora", "embedding", "dreambooth", "hypernetwork")],
    ("train lora", ["train", "lora", "--images", "@/dir.png", "--token", "sks", "--out", "@/tr-out", "--rank", "0"], "rank: 0 is not valid"),
    ("train lora", ["train", "lora", "--concept", "star", "--token", "my/star", "--out", "@/tr-out"], "token: 'my/star' is not valid"),
    ("train controlnet", ["train", "controlnet", "--condition", "smell", "--out", "@/cn"], "--condition: invalid choice: 'smell'"),
    ("train controlnet", ["train", "controlnet", "--condition", "edges", "--out", "@/cn", "--steps", "0"], "steps: 0 is not valid"),
    ("train controlnet", ["train", "controlnet", "--condition", "edges", "--out", "@/cn", "--lr", "-1"], "-1"),
    ("train controlnet", ["train", "controlnet", "--condition", "edges", "--out", "@/cn", "--text-dropout", "2"], "2"),
    ("train controlnet", ["train", "controlnet", "--condition", "edges", "--out", "@/afile"], "out: '"),
    ("train controlnet", ["train", "controlnet", "--condition", "edges", "--out", "@/cn", "--model", "@/notamodel"], "model: '"),
    # top level
    ("sdlab", ["nonsense"], "invalid choice: 'nonsense'"),
    ("sdlab", [], "the following arguments are required: COMMAND"),
]


# -- fixtures ----------------------------------------------------------------------------------
def _png_with(path: Path, size: int = 64, **text: str) -> None:  # a flat colour: a 4096 px PNG is a few KB
    from PIL import Image, PngImagePlugin

    info = PngImagePlugin.PngInfo()
    for key, value in text.items():
        info.add_text(key, value)
    Image.new("RGB", (size, size), (200, 30, 30)).save(path, pnginfo=info)


def make_fixtures(d: Path) -> None:
    """Every file the table feeds in: corrupt, empty, foreign or wrongly sized, made here."""
    import numpy as np
    import pandas as pd
    from PIL import Image

    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(d / "img.png")
    Image.fromarray(rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)).save(d / "img48.png")
    Image.fromarray(rng.integers(0, 256, (320, 320, 3), dtype=np.uint8)).save(d / "big.png")
    (d / "zero.png").write_bytes(b"")
    (d / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(rng.integers(0, 256, 200, dtype=np.uint8)))
    (d / "truncated.png").write_bytes((d / "big.png").read_bytes()[:300])
    (d / "dir.png").mkdir()
    (d / "afile").write_text("a file, not a directory\n")
    (d / "text.txt").write_text("hello\n")
    (d / "latin1.txt").write_bytes("caf\xe9 au lait\n".encode("latin-1"))
    (d / "empty.txt").write_bytes(b"\n\n")
    (d / "notamodel").mkdir()
    (d / "pickle.ckpt").write_bytes(b"\x80\x04junk")
    a1111 = "a circle\nNegative prompt: blur\nSteps: {steps}, Sampler: Euler, CFG scale: 5, Seed: 1, Size: {size}, Model: shapes-world"
    _png_with(d / "meta_ok.png", parameters=a1111.format(steps=4, size="64x64"))
    _png_with(d / "meta_size.png", parameters=a1111.format(steps=4, size="2152x784"))
    _png_with(d / "meta_odd.png", parameters=a1111.format(steps=4, size="2153x788"))
    _png_with(d / "meta_steps.png", parameters=a1111.format(steps=10000000, size="64x64"))
    _png_with(d / "meta_huge.png", parameters=a1111.format(steps=20, size="4096x4096") + ", Denoising strength: 0.5")
    _png_with(d / "meta_big.png", 4096, parameters=a1111.format(steps=20, size="4096x4096"))  # really that size: the cost refuses
    _png_with(d / "meta_init.png", parameters=a1111.format(steps=4, size="64x64") + ", Denoising strength: 0.5, Init image hash: 0123456789abcdef0123456789abcdef")
    _png_with(d / "a1111_badsteps.png", parameters=a1111.format(steps="many", size="64x64"))
    _png_with(d / "meta_nomodel.png", parameters=a1111.format(steps=4, size="64x64").replace(", Model: shapes-world", ""))
    _png_with(d / "meta_foreign.png", parameters=a1111.format(steps=4, size="64x64").replace("shapes-world", "v1-5-pruned-emaonly"))
    graph = {"3": {"class_type": "KSampler", "inputs": {"seed": "abc", "steps": 20, "cfg": 7.0, "sampler_name": "euler", "scheduler": "normal",
                                                        "denoise": 1.0, "model": ["4", 0], "positive": ["6", 0], "negative": ["7", 0], "latent_image": ["5", 0]}},
             "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "v1-5.safetensors"}},
             "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 512, "height": 512, "batch_size": 1}},
             "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a cat", "clip": ["4", 1]}},
             "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["4", 1]}}}
    _png_with(d / "comfy_badseed.png", prompt=json.dumps(graph))
    _png_with(d / "comfy_notjson.png", prompt="{not json")
    _png_with(d / "workflow_empty.png", workflow=json.dumps({"last_node_id": 0, "last_link_id": 0, "nodes": [], "links": [], "version": 0.4}))
    rows = pd.DataFrame({"URL": ["https://a.example.com/x.jpg", "https://b.example.org/y.png"], "TEXT": ["a nurse", "a doctor"],
                         "WIDTH": [512, 640], "HEIGHT": [512, 480]})
    rows.to_csv(d / "ok.csv", index=False)
    rows.to_parquet(d / "good.parquet", index=False)
    data = (d / "good.parquet").read_bytes()
    (d / "zero.parquet").write_bytes(b"")
    (d / "trunc.parquet").write_bytes(data[: len(data) // 2])
    (d / "notparquet.parquet").write_text("URL,TEXT\nhttps://a.example.com,a cat\n")
    flipped = bytearray(data)
    for i in range(len(flipped) // 3, len(flipped) // 3 + 64):
        flipped[i] ^= 0xFF
    (d / "flipped.parquet").write_bytes(bytes(flipped))
    (d / "ragged.csv").write_text("URL,TEXT\nhttps://a.example.com/x,a cat,extra,more\nhttps://b.example.com\n\"unterminated\n")
    (d / "bad.jsonl").write_text('{"URL": "https://a.example.com", "TEXT": "a cat"}\n{not json\n')
    (d / "nocols.csv").write_text("alpha,beta\n1,2\n")
    # result stores and checkpoints a crash or a full disk left damaged
    for store, file, junk in (("bad-store", "results.parquet", b"PAR1 junk"), ("bad-meta", "sweep.json", b"{not json"),
                              ("bad-rows", "rows.parquet", b"junk"), ("bad-run", "vae.ckpt", b"PK\x03\x04 cut short")):
        (d / store).mkdir()
        (d / store / file).write_bytes(junk)


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory) -> Path:
    """The fixture files; and torch, diffusers and transformers imported once here, so that a case's 10 s are its
    own work, not whichever case happens to import them first in this process (a fresh process pays that once)."""
    import torch  # noqa: F401
    import transformers  # noqa: F401
    from diffusers import AutoencoderKL, UNet2DConditionModel  # noqa: F401  (diffusers' models load lazily, ~7 s)

    d = tmp_path_factory.mktemp("fuzz")
    make_fixtures(d)
    return d


@pytest.fixture
def no_model_load(monkeypatch):
    """Loading a model fails the test: every bad input must be refused before it."""
    import sdlab.models

    def refuse(*args, **kwargs):
        raise AssertionError(f"a model was loaded for a bad input: load_pipeline{args}")

    monkeypatch.setattr(sdlab.models, "load_pipeline", refuse)


class _Slow(Exception):
    pass


def run_cli(argv: list[str], limit: float = 10.0) -> tuple[int, str, float]:
    """``sdlab argv`` in this process: (exit status, stderr, seconds); a run over ``limit`` seconds is stopped."""
    def alarm(signum, frame):
        raise _Slow(f"{argv} ran over {limit} s")

    old = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, limit)
    err, start = io.StringIO(), time.perf_counter()
    real_err, sys.stderr = sys.stderr, err
    try:
        try:
            code = main(argv)
        except SystemExit as exc:
            code = exc.code
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
        sys.stderr = real_err
    return code, err.getvalue(), time.perf_counter() - start


def _expand(argv: list[str], d: Path) -> list[str]:
    return [a.replace("@/", f"{d}/") for a in argv]


@pytest.mark.parametrize("verb, argv, fragment", ROWS, ids=[f"{i:03d}-{r[0]}" for i, r in enumerate(ROWS)])
def test_bad_input_is_one_line_exit_2(verb, argv, fragment, fixtures, no_model_load):
    code, err, seconds = run_cli(_expand(argv, fixtures))
    err = err.replace(str(fixtures) + "/", "@/")
    lines = err.strip("\n").split("\n")
    assert code == 2, (code, err)
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    assert fragment in lines[0], lines[0]
    assert seconds <= 10


def _verbs(parser, prefix: str = "") -> set[str]:
    """Every runnable verb path (``watermark signature train``) the parser offers."""
    import argparse

    found = set()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                path = f"{prefix} {name}".strip()
                inner = _verbs(sub, path)
                found |= inner or {path}
    return found


def test_every_verb_has_rows():
    covered = {verb for verb, _, _ in ROWS}
    verbs = _verbs(build_parser()) | {"compress decode", "compress bench"}
    assert verbs - covered == set(), f"verbs without bad-input rows: {sorted(verbs - covered)}"
    assert len(ROWS) >= 200


@pytest.mark.parametrize("argv", [["generate", "a", "--steps", "0"], ["info", "@/corrupt.png"], ["audit", "summary", "@/trunc.parquet"],
                                  ["compress", "@/img.png", "--out", "@/afile/c.jpg"], ["generate", "a", "--size", "4096x4096"]])
def test_no_traceback_reaches_the_terminal(argv, fixtures):
    """A sample in a real process: stderr is one line, whatever the libraries print on the way."""
    proc = subprocess.run([sys.executable, "-m", "sdlab", *_expand(argv, fixtures)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1, proc.stderr
