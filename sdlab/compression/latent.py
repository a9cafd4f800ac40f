"""A lossy image codec made of a diffusers ``AutoencoderKL``: Bühlmann's (2022) method, generalised.

encode: image -> VAE posterior mean (tile by tile when the image is larger
than the VAE's training size) -> per-channel 8-bit quantisation with a stored
offset/scale -> optionally fewer levels, or a palette of <= 256 latent vectors
with Floyd–Steinberg dithering (:mod:`.palette`) -> lossless coding
(:mod:`.lossless`; "auto" keeps the smallest) -> a self-describing byte
string (:mod:`.container`). decode reverses it; an optional repair pass
(:mod:`.repair`) runs a few low-strength denoising steps of the diffusion
model over the dequantised latents, as Bühlmann did.

The names other modules define are importable from here too, so the codec's
whole surface reads ``from sdlab.compression.latent import ...``.
"""
from __future__ import annotations

import hashlib
import os
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..errors import CodecError
from ..images import load_rgb
from ..progress import Callback
from ..validation import NON_NEGATIVE_INT, POSITIVE_INT, Check, Interval, Options, invalid, validate_params
from .base import Codec
from .container import MAGIC, VERSION, LatentHeader, open_bytes, seal
from .lossless import CODERS, available_coders, check_coder, compress, decompress
from .palette import dither_to_palette, kmeans_palette
from .repair import Repair
from .vae import load_vae, vae_id

__all__ = ["CODERS", "MAGIC", "VERSION", "LatentCodec", "LatentHeader", "Repair", "available_coders", "compress",
           "decode_file", "decompress", "dither_to_palette", "kmeans_palette", "ladder", "load_vae", "vae_id"]


def ladder(quality: int) -> int:
    """Quality 1..100 -> 2..256 quantisation levels (or palette entries), geometrically spaced."""
    return int(round(2 ** (1 + 7 * (quality - 1) / 99)))


def _groups(items, key) -> list[list]:
    """``items`` grouped by ``key(item)``, in first-seen order (batches need equal shapes)."""
    groups: dict = {}
    for item in items:
        groups.setdefault(key(item), []).append(item)
    return list(groups.values())


# -- the codec ---------------------------------------------------------------------------------
class LatentCodec(Codec):
    """Images <-> bytes through a diffusers ``AutoencoderKL``.

    quality 1..100 sets the number of quantisation levels per latent channel
    (2..256; 100 is Bühlmann's 8 bits), or with ``palette=True`` the number of
    palette entries (2..256) over 8-bit latent vectors. ``tile``: "auto" codes
    images larger than the VAE's training size (``config.sample_size``) in
    tiles of that size, an int forces a tile size, None sends the whole image
    through at once. The encoder's latents are cached per image, so a budget
    search or a sweep of budgets runs the VAE encoder once.
    """

    name = "vae"
    quality_range = (1, 100)
    default_quality = 100

    _parameter_constraints = {
        "vae": [Check(lambda v: all(hasattr(v, a) for a in ("config", "encode", "decode")), "a diffusers AutoencoderKL")],
        "palette": [bool],
        "dither": [bool],
        "coder": [Options(CODERS + ("auto",))],
        "tile": "no_validation",  # a multiple of the VAE's factor: see _tile_constraints
        "batch_size": [POSITIVE_INT],
        "name": [str, None],
        "cache_size": [NON_NEGATIVE_INT],
    }

    @staticmethod
    def _tile_constraints(factor: int) -> list:
        return [None, Options(("auto",)),
                Check(lambda t: Interval(int, factor, 65535).accepts(t) and t % factor == 0,
                      f"a multiple of {factor} in [{factor}, 65535]")]

    def __init__(self, vae: Any, *, palette: bool = False, dither: bool = True, coder: str = "auto",
                 tile: int | str | None = "auto", batch_size: int = 32, name: str | None = None,
                 cache_size: int = 64) -> None:
        validate_params({"vae": vae, "palette": palette, "dither": dither, "coder": coder, "batch_size": batch_size,
                         "name": name, "cache_size": cache_size}, self._parameter_constraints)
        check_coder(coder, auto=True)
        self.factor = 2 ** (len(vae.config.block_out_channels) - 1)
        validate_params({"tile": tile}, {"tile": self._tile_constraints(self.factor)})
        if tile == "auto":  # the VAE's training size, which must itself be a valid tile
            tile = int(vae.config.sample_size) if vae.config.sample_size else None
            validate_params({"tile": tile}, {"tile": self._tile_constraints(self.factor)})
        self.vae, self.palette, self.dither, self.coder, self.tile = vae, palette, dither, coder, tile
        self.batch_size = batch_size
        self.name = name or ("vae" if palette else "vae-levels")
        self.id = vae_id(vae)
        self._cache: OrderedDict[tuple, np.ndarray] = OrderedDict()
        self._cache_size = cache_size

    @property
    def id_hex(self) -> str:
        return self.id.hex()

    # -- VAE passes (batched over tiles and images) ------------------------------------------
    def _layout(self, h: int, w: int) -> int:
        """The tile size stored in the header for an h x w image (0: whole image at once)."""
        return 0 if self.tile is None or (h <= self.tile and w <= self.tile) else self.tile

    def _tile_shape(self, h: int, w: int, tile: int) -> tuple[int, int]:
        if tile:
            return tile, tile
        return -(-h // self.factor) * self.factor, -(-w // self.factor) * self.factor

    def _tiles(self, image: np.ndarray) -> tuple[np.ndarray, tuple[int, int], tuple[int, int]]:
        h, w = image.shape[:2]
        th, tw = self._tile_shape(h, w, self._layout(h, w))
        ny, nx = -(-h // th), -(-w // tw)
        padded = np.pad(image, ((0, ny * th - h), (0, nx * tw - w), (0, 0)), mode="edge")
        tiles = padded.reshape(ny, th, nx, tw, 3).transpose(0, 2, 1, 3, 4).reshape(ny * nx, th, tw, 3)
        return tiles, (ny, nx), (th, tw)

    def _run(self, fn: Callable, batch: np.ndarray) -> np.ndarray:
        import torch

        param = next(self.vae.parameters())
        outs = []
        with torch.no_grad():
            for i in range(0, len(batch), self.batch_size):
                t = torch.from_numpy(np.ascontiguousarray(batch[i : i + self.batch_size]))
                outs.append(fn(t.to(param.device, param.dtype)).float().cpu().numpy())
        return np.concatenate(outs)

    def _encode_tiles(self, tiles: np.ndarray) -> np.ndarray:
        x = tiles.transpose(0, 3, 1, 2).astype(np.float32) / 127.5 - 1.0
        return self._run(lambda t: self.vae.encode(t).latent_dist.mean, x)

    def _decode_tiles(self, latents: np.ndarray) -> np.ndarray:
        x = self._run(lambda t: self.vae.decode(t).sample, latents.astype(np.float32))
        return np.clip(np.rint((x + 1.0) * 127.5), 0, 255).astype(np.uint8).transpose(0, 2, 3, 1)

    @staticmethod
    def _key(image: np.ndarray) -> tuple:
        return (image.shape, hashlib.sha1(np.ascontiguousarray(image).tobytes()).hexdigest())

    def latents(self, images: Sequence[np.ndarray], callback: Callback | None = None) -> list[np.ndarray]:
        """Latent grids (C x h x w float32, tiles laid side by side) of ``images``; one batched encoder pass.

        Results are cached, so calling this first for a set of images (as
        :func:`~sdlab.compression.rd.rd_curves` does) batches the encoder on a GPU.
        """
        images = [load_rgb(im) for im in images]
        keys = [self._key(im) for im in images]
        found = {k: self._cache[k] for k in keys if k in self._cache}
        todo = [i for i, k in enumerate(keys) if k not in found]
        cut = {i: self._tiles(images[i]) for i in todo}
        for group in _groups(todo, lambda i: cut[i][2]):  # one encoder pass per tile shape
            flat = self._encode_tiles(np.concatenate([cut[i][0] for i in group]))
            start = 0
            for i in group:
                tiles, (ny, nx), _ = cut[i]
                chunk = flat[start : start + len(tiles)]
                start += len(tiles)
                c, lh, lw = chunk.shape[1:]
                grid = chunk.reshape(ny, nx, c, lh, lw).transpose(2, 0, 3, 1, 4).reshape(c, ny * lh, nx * lw)
                found[keys[i]] = grid
                self._remember(keys[i], grid)
                if callback is not None:
                    callback(len(found), len(set(keys)))
        return [found[k] for k in keys]

    def _remember(self, key: tuple, grid: np.ndarray) -> None:
        self._cache[key] = grid
        self._cache.move_to_end(key)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)

    # -- quantisation and packing --------------------------------------------------------------
    def encode(self, image: np.ndarray, quality: int) -> bytes:
        quality = self.check_quality(quality)
        image = load_rgb(image)
        grid = self.latents([image])[0]
        return self.pack(grid, image.shape[:2], quality)

    def pack(self, grid: np.ndarray, size: tuple[int, int], quality: int) -> bytes:
        """Quantise a latent grid at ``quality`` and wrap it in the self-describing byte string."""
        c = grid.shape[0]
        low = grid.reshape(c, -1).min(1).astype(np.float16)
        high = grid.reshape(c, -1).max(1).astype(np.float16)
        bump = np.maximum(np.float32(1e-2), np.abs(low.astype(np.float32)) * 1e-2)  # flat channel: keep hi > lo in float16
        high = np.where(high > low, high, (low.astype(np.float32) + bump).astype(np.float16))
        n = ladder(quality)
        levels = 256 if self.palette else n
        lo, hi = low.astype(np.float32)[:, None, None], high.astype(np.float32)[:, None, None]
        codes = np.clip(np.rint((grid - lo) / (hi - lo) * (levels - 1)), 0, levels - 1).astype(np.uint8)
        if self.palette:
            pal = kmeans_palette(codes.reshape(c, -1).T, n)
            idx = dither_to_palette(codes, pal, self.dither)
            raw, n_pal = pal.tobytes() + idx.tobytes(), len(pal)
        else:
            raw, n_pal = codes.tobytes(), 0
        tile = self._layout(*size)
        candidates = available_coders() if self.coder == "auto" else [self.coder]
        best = None
        for coder in candidates:
            header = LatentHeader(self.id, coder, n_pal, c, size[0], size[1], tile, levels, low, high)
            body = header.pack() + compress(raw, coder)
            if best is None or len(body) < len(best):
                best = body
        return seal(best)

    def unpack(self, data: bytes) -> tuple[LatentHeader, np.ndarray]:
        """Validate a byte string and return its header and the dequantised latent grid (C x h x w)."""
        header, payload = open_bytes(data)
        if header.vae_id != self.id:
            raise CodecError(f"data: made for VAE {header.vae_id.hex()}, this codec's VAE is {self.id_hex}")
        if header.tile % self.factor:
            raise CodecError(f"data: tile {header.tile} is not a multiple of this VAE's factor {self.factor}")
        th, tw = self._tile_shape(header.height, header.width, header.tile)
        ny, nx = -(-header.height // th), -(-header.width // tw)
        gh, gw = ny * th // self.factor, nx * tw // self.factor
        c = header.channels
        n_idx = gh * gw
        size = header.palette * c + n_idx if header.palette else c * n_idx
        raw = decompress(payload, header.coder, size)
        buf = np.frombuffer(raw, np.uint8)
        if header.palette:
            pal = buf[: header.palette * c].reshape(header.palette, c)
            idx = buf[header.palette * c :]
            if idx.max(initial=0) >= header.palette:
                raise CodecError("data: palette index out of range")
            codes = pal[idx].T.reshape(c, gh, gw)
        else:
            codes = buf.reshape(c, gh, gw)
        lo = header.low.astype(np.float32)[:, None, None]
        hi = header.high.astype(np.float32)[:, None, None]
        return header, lo + codes.astype(np.float32) / (header.levels - 1) * (hi - lo)

    def decode(self, data: bytes) -> np.ndarray:
        return self.decode_many([data])[0]

    def decode_many(self, datas: Sequence[bytes], repair: Repair | None = None) -> list[np.ndarray]:
        """Decode byte strings with one batched decoder pass over all their tiles; ``repair`` optional."""
        parts = [self.unpack(d) for d in datas]
        all_tiles, shapes = [], []
        for header, grid in parts:
            if header.tile:
                lt = header.tile // self.factor
                c, gh, gw = grid.shape
                ny, nx = gh // lt, gw // lt
                tiles = grid.reshape(c, ny, lt, nx, lt).transpose(1, 3, 0, 2, 4).reshape(ny * nx, c, lt, lt)
            else:
                ny = nx = 1
                tiles = grid[None]
            all_tiles.append(tiles)
            shapes.append((header, ny, nx))
        pixels: list[np.ndarray] = [None] * len(all_tiles)  # type: ignore[list-item]
        for group in _groups(range(len(all_tiles)), lambda i: all_tiles[i].shape[1:]):  # one pass per latent shape
            latents = np.concatenate([all_tiles[i] for i in group])
            if repair is not None:
                latents = repair(latents)
            decoded, start = self._decode_tiles(latents), 0
            for i in group:
                pixels[i] = decoded[start : start + len(all_tiles[i])]
                start += len(all_tiles[i])
        out = []
        for (header, ny, nx), chunk in zip(shapes, pixels):
            th, tw = chunk.shape[1:3]
            image = chunk.reshape(ny, nx, th, tw, 3).transpose(0, 2, 1, 3, 4).reshape(ny * th, nx * tw, 3)
            out.append(np.ascontiguousarray(image[: header.height, : header.width]))
        return out


def decode_file(path: str | os.PathLike, model: str | os.PathLike = "shapes-world", device: str = "cpu") -> np.ndarray:
    """The image in a file the lab wrote: a latent byte string through ``model``'s VAE, any other file as an image.

    The first bytes decide (:data:`MAGIC`), so ``sdlab compress decode`` reads
    the classical codecs' files and the latent codec's alike.
    """
    file = Path(path)
    if not file.is_file():
        raise invalid("path", os.fspath(path), "an existing file")
    data = file.read_bytes()
    if data[: len(MAGIC)] == MAGIC:
        return LatentCodec(load_vae(model, device)).decode(data)
    return load_rgb(file)
