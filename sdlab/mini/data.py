"""A training run's data, made once and kept in its directory: the images with their captions, and their latents."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ..images import to_tensor
from ..io import atomic_path
from . import world
from .config import TrainConfig


def prepare_data(out: Path, cfg: TrainConfig) -> tuple[np.ndarray, "object"]:
    """Generate (or reuse) the training images and their metadata parquet under ``out/data``."""
    import pandas as pd

    data = out / "data"
    images_path, meta_path = data / "images.npy", data / "metadata.parquet"
    if images_path.exists() and meta_path.exists():
        return np.load(images_path), pd.read_parquet(meta_path)
    images, meta = world.make_dataset(cfg.n_images, seed=cfg.seed)
    data.mkdir(parents=True, exist_ok=True)
    with atomic_path(images_path) as tmp:
        np.save(tmp, images)
    with atomic_path(meta_path) as tmp:
        meta.to_parquet(tmp, index=False)
    return images, meta


@torch.no_grad()
def encode_latents(out: Path, vae, images: np.ndarray, batch: int = 256, progress: bool = True) -> np.ndarray:
    """The VAE posterior means of every training image, cached (``out/latents.npy``) so the UNet never runs the encoder."""
    path = out / "latents.npy"
    if path.exists():
        return np.load(path)
    chunks = []
    for i in tqdm(range(0, len(images), batch), desc="encode", disable=not progress):
        chunks.append(vae.encode(to_tensor(images[i : i + batch])).latent_dist.mean.numpy())
    latents = np.concatenate(chunks).astype(np.float32)
    with atomic_path(path) as tmp:
        np.save(tmp, latents)
    return latents
