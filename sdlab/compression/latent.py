"""A lossy image codec made of a diffusers ``AutoencoderKL``: Bühlmann's (2022) method, generalised.

encode: image -> VAE posterior mean (tile by tile when the image is larger
than the VAE's training size) -> per-channel 8-bit quantisation with a stored
offset/scale -> optionally fewer levels, or a palette of <= 256 latent vectors
with Floyd–Steinberg dithering -> lossless coding (zlib, LZMA, zstd or stored;
"auto" keeps the smallest) -> a self-describing byte string. decode reverses
it; an optional repair pass runs a few low-strength denoising steps of the
diffusion model over the dequantised latents, as Bühlmann did.

Byte string layout (little-endian), so a file says what made it::

    "SL" | version u8 | VAE id 4 bytes | flags u8 | channels u8 | height u16 | width u16
    | tile u16 (0: whole image) | levels-1 u8 | palette-1 u8 | low f16 x C | high f16 x C
    | payload | CRC-32 of everything before it (u32)

flags: bits 0-1 the lossless coder, bit 2 palette. The VAE id is the first 4
bytes of SHA-256 over the VAE's config and its weights in float16, so the same
weights in float32 or float16 share an id and any other VAE is refused.
"""
from __future__ import annotations

import binascii
import hashlib
import json
import lzma
import math
import struct
import zlib
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from ..errors import CodecError, DependencyError, ValidationError, require
from ..images import load_rgb
from .base import Codec

MAGIC = b"SL"
VERSION = 1
_FIXED = struct.Struct("<2sB4sBBHHHBB")
_CRC = struct.Struct("<I")
CODERS = ("zlib", "lzma", "zstd", "raw")  # index = the code stored in flags
_LZMA_FILTERS = [{"id": lzma.FILTER_LZMA2, "preset": 9 | lzma.PRESET_EXTREME}]


# -- identity of a VAE -----------------------------------------------------------------
def vae_id(vae: Any) -> bytes:
    """4-byte id of a VAE: SHA-256 of its config and float16 weights (stable across runs and devices)."""
    h = hashlib.sha256()
    config = {k: v for k, v in dict(vae.config).items() if not k.startswith("_")}
    h.update(json.dumps(config, sort_keys=True, default=str).encode())
    for name, tensor in sorted(vae.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().to("cpu").half().contiguous().numpy().tobytes())
    return h.digest()[:4]


# -- lossless coders ---------------------------------------------------------------------
def _zstd():
    try:
        import zstandard
    except ImportError:
        return None
    return zstandard


def available_coders() -> list[str]:
    """The lossless coders this machine can run (zstd needs the ``zstandard`` package)."""
    return [c for c in CODERS if c != "zstd" or _zstd() is not None]


def compress(data: bytes, coder: str) -> bytes:
    """Compress with one lossless coder, without container overhead (the header says which)."""
    if coder == "zlib":
        c = zlib.compressobj(9, zlib.DEFLATED, -15, 9)
        return c.compress(data) + c.flush()
    if coder == "lzma":
        return lzma.compress(data, format=lzma.FORMAT_RAW, filters=_LZMA_FILTERS)
    if coder == "zstd":
        zstandard = _zstd()
        if zstandard is None:
            raise DependencyError("coder: 'zstd' needs the zstandard package: pip install zstandard")
        params = zstandard.ZstdCompressionParameters.from_level(
            22, format=zstandard.FORMAT_ZSTD1_MAGICLESS, write_content_size=False, write_checksum=False,
            write_dict_id=False)
        return zstandard.ZstdCompressor(compression_params=params).compress(data)
    if coder == "raw":
        return bytes(data)
    raise ValidationError(f"coder: expected one of {', '.join(CODERS)} or 'auto', got {coder!r}")


def decompress(data: bytes, coder: str, size: int) -> bytes:
    """Inverse of :func:`compress`; ``size`` is the expected output length (from the header)."""
    try:
        if coder == "zlib":
            d = zlib.decompressobj(-15)
            out = d.decompress(data, size + 1)
        elif coder == "lzma":
            out = lzma.LZMADecompressor(format=lzma.FORMAT_RAW, filters=_LZMA_FILTERS).decompress(data, size + 1)
        elif coder == "zstd":
            zstandard = _zstd()
            if zstandard is None:
                raise DependencyError("data: was coded with zstd, which needs the zstandard package: pip install zstandard")
            d = zstandard.ZstdDecompressor(format=zstandard.FORMAT_ZSTD1_MAGICLESS)
            out = d.decompressobj().decompress(data)
        else:
            out = bytes(data)
    except DependencyError:
        raise
    except Exception as exc:
        raise CodecError(f"data: the {coder} payload does not decompress ({type(exc).__name__}: {exc})") from None
    if len(out) != size:
        raise CodecError(f"data: the {coder} payload holds {len(out)} bytes, the header promises {size}")
    return out


# -- header ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class LatentHeader:
    """What a latent byte string says about itself."""

    vae_id: bytes
    coder: str
    palette: int  # number of palette entries, 0 = none
    channels: int
    height: int
    width: int
    tile: int  # 0: the whole image went through the VAE at once
    levels: int
    low: np.ndarray  # float16 per channel
    high: np.ndarray

    def pack(self) -> bytes:
        flags = CODERS.index(self.coder) | (4 if self.palette else 0)
        fixed = _FIXED.pack(MAGIC, VERSION, self.vae_id, flags, self.channels, self.height, self.width,
                            self.tile, self.levels - 1, max(self.palette, 1) - 1)
        return fixed + self.low.astype("<f2").tobytes() + self.high.astype("<f2").tobytes()

    @property
    def size(self) -> int:
        return _FIXED.size + 4 * self.channels

    @classmethod
    def unpack(cls, data: bytes) -> "LatentHeader":
        if len(data) < _FIXED.size + _CRC.size:
            raise CodecError(f"data: truncated: {len(data)} bytes is shorter than a latent header ({_FIXED.size + _CRC.size})")
        magic, version, vid, flags, channels, height, width, tile, levels_m1, palette_m1 = _FIXED.unpack_from(data)
        if magic != MAGIC:
            raise CodecError(f"data: not an sdlab latent byte string (starts {data[:2]!r}, expected {MAGIC!r})")
        if _CRC.unpack_from(data, len(data) - _CRC.size)[0] != binascii.crc32(data[: -_CRC.size]):
            raise CodecError("data: corrupt or truncated latent byte string (checksum mismatch)")
        if version != VERSION:
            raise CodecError(f"data: latent format version {version}; this sdlab reads version {VERSION}")
        if (flags & 3) >= len(CODERS) or channels == 0 or height == 0 or width == 0:
            raise CodecError("data: malformed latent header")
        n = _FIXED.size
        if len(data) < n + 4 * channels + _CRC.size:
            raise CodecError("data: truncated latent header")
        low = np.frombuffer(data, "<f2", channels, n).copy()
        high = np.frombuffer(data, "<f2", channels, n + 2 * channels).copy()
        return cls(vid, CODERS[flags & 3], palette_m1 + 1 if flags & 4 else 0, channels, height, width, tile,
                   levels_m1 + 1, low, high)


# -- palette with dithering -----------------------------------------------------------------
def kmeans_palette(vectors: np.ndarray, k: int, iters: int = 15, seed: int = 0) -> np.ndarray:
    """At most ``k`` centres (uint8) for the rows of ``vectors`` (uint8 N x C): k-means++ then Lloyd."""
    unique = np.unique(vectors, axis=0)
    if len(unique) <= k:
        return unique
    x = vectors.astype(np.float32)
    rng = np.random.default_rng(seed)
    centres = [x[rng.integers(len(x))]]
    d2 = ((x - centres[0]) ** 2).sum(1)
    for _ in range(1, k):
        total = d2.sum()
        i = int(rng.choice(len(x), p=d2 / total)) if total > 0 else int(rng.integers(len(x)))
        centres.append(x[i])
        d2 = np.minimum(d2, ((x - x[i]) ** 2).sum(1))
    c = np.stack(centres)
    for _ in range(iters):
        assign = _nearest(x, c)
        sums = np.zeros_like(c)
        np.add.at(sums, assign, x)
        counts = np.bincount(assign, minlength=len(c))[:, None]
        c = np.where(counts > 0, sums / np.maximum(counts, 1), c)
    c = np.unique(np.clip(np.rint(c), 0, 255).astype(np.uint8), axis=0)
    return c


def _nearest(x: np.ndarray, centres: np.ndarray) -> np.ndarray:
    d = (x * x).sum(1)[:, None] - 2.0 * x @ centres.T.astype(np.float32) + (centres.astype(np.float32) ** 2).sum(1)[None]
    return d.argmin(1)


def dither_to_palette(grid: np.ndarray, palette: np.ndarray, dither: bool = True) -> np.ndarray:
    """Indices (h x w uint8) of ``palette`` entries for a C x h x w uint8 grid, Floyd–Steinberg error diffusion."""
    c, h, w = grid.shape
    x = grid.reshape(c, -1).T.astype(np.float32)
    pal = palette.astype(np.float32)
    if not dither:
        return _nearest(x, pal).reshape(h, w).astype(np.uint8)
    work = grid.transpose(1, 2, 0).astype(np.float32)
    out = np.empty((h, w), np.uint8)
    pal_sq = (pal * pal).sum(1)
    for y in range(h):
        for xx in range(w):
            v = np.clip(work[y, xx], 0, 255)
            i = int((pal_sq - 2.0 * pal @ v).argmin())
            out[y, xx] = i
            err = v - pal[i]
            if xx + 1 < w:
                work[y, xx + 1] += err * (7 / 16)
            if y + 1 < h:
                if xx > 0:
                    work[y + 1, xx - 1] += err * (3 / 16)
                work[y + 1, xx] += err * (5 / 16)
                if xx + 1 < w:
                    work[y + 1, xx + 1] += err * (1 / 16)
    return out


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

    def __init__(self, vae: Any, *, palette: bool = False, dither: bool = True, coder: str = "auto",
                 tile: int | str | None = "auto", batch_size: int = 32, name: str | None = None,
                 cache_size: int = 64) -> None:
        require(coder == "auto" or coder in CODERS, f"coder: expected one of {', '.join(CODERS)} or 'auto', got {coder!r}")
        if coder == "zstd" and _zstd() is None:
            raise DependencyError("coder: 'zstd' needs the zstandard package: pip install zstandard")
        self.factor = 2 ** (len(vae.config.block_out_channels) - 1)
        if tile == "auto":
            tile = int(vae.config.sample_size) if vae.config.sample_size else None
        require(tile is None or (isinstance(tile, int) and tile > 0 and tile % self.factor == 0 and tile < 65536),
                f"tile: expected None, 'auto' or a positive multiple of {self.factor}, got {tile!r}")
        require(isinstance(batch_size, int) and batch_size > 0, f"batch_size: expected a positive integer, got {batch_size!r}")
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

    def latents(self, images: Sequence[np.ndarray], callback: Callable[[int, int], None] | None = None) -> list[np.ndarray]:
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
        return best + _CRC.pack(binascii.crc32(best))

    def unpack(self, data: bytes) -> tuple[LatentHeader, np.ndarray]:
        """Validate a byte string and return its header and the dequantised latent grid (C x h x w)."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise ValidationError(f"data: expected bytes, got {type(data).__name__}")
        data = bytes(data)
        header = LatentHeader.unpack(data)
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
        raw = decompress(data[header.size : -_CRC.size], header.coder, size)
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

    def decode_many(self, datas: Sequence[bytes], repair: "Repair | None" = None) -> list[np.ndarray]:
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


# -- the repair pass ---------------------------------------------------------------------------
class Repair:
    """A few low-strength denoising steps of a diffusion pipeline over decoded latents (Bühlmann's fix).

    Like img2img: noise the latents to the timestep ``strength`` of the way
    into the schedule, then denoise back to 0 with the pipeline's UNet and
    scheduler under ``prompt`` (empty: unconditional). Noise comes from a CPU
    generator seeded with ``seed``, so the result is the same on every device.
    """

    def __init__(self, pipeline: Any, strength: float = 0.04, steps: int = 50, prompt: str = "", seed: int = 0) -> None:
        require(0.0 < strength <= 1.0, f"strength: expected a value in (0, 1], got {strength!r}")
        require(isinstance(steps, int) and steps > 0, f"steps: expected a positive integer, got {steps!r}")
        for part in ("unet", "scheduler", "vae"):
            require(hasattr(pipeline, part), f"pipeline: needs a diffusers pipeline with a {part}, got {type(pipeline).__name__}")
        self.pipeline, self.strength, self.steps, self.prompt, self.seed = pipeline, strength, steps, prompt, seed

    def __call__(self, latents: np.ndarray) -> np.ndarray:
        import torch

        pipe = self.pipeline
        unet, vae = pipe.unet, pipe.vae
        device, dtype = next(unet.parameters()).device, next(unet.parameters()).dtype
        scheduler = type(pipe.scheduler).from_config(pipe.scheduler.config)
        scheduler.set_timesteps(self.steps, device=device)
        n_run = min(max(int(round(self.steps * self.strength)), 1), self.steps)
        timesteps = scheduler.timesteps[(self.steps - n_run) * scheduler.order :]
        if hasattr(scheduler, "set_begin_index"):
            scheduler.set_begin_index((self.steps - n_run) * scheduler.order)
        scale = float(vae.config.scaling_factor)
        shift = float(getattr(vae.config, "shift_factor", None) or 0.0)
        with torch.no_grad():
            embeds = pipe.encode_prompt([self.prompt] * len(latents), device, 1, False)[0].to(dtype)
            x = (torch.from_numpy(latents).to(device, dtype) - shift) * scale
            noise = torch.randn(x.shape, generator=torch.Generator("cpu").manual_seed(self.seed)).to(device, dtype)
            x = scheduler.add_noise(x, noise, timesteps[:1].repeat(len(x)))
            for t in timesteps:
                eps = unet(scheduler.scale_model_input(x, t), t, encoder_hidden_states=embeds).sample
                x = scheduler.step(eps, t, x).prev_sample
        return (x.float() / scale + shift).cpu().numpy()


# -- loading a VAE by name ------------------------------------------------------------------------
def load_vae(model: str = "shapes-world", device: str = "cpu") -> Any:
    """The ``AutoencoderKL`` of ``model``, through :func:`sdlab.models.load_pipeline`.

    Falls back to a bare VAE directory (``config.json`` + weights): ``model``
    itself, or for the shapes world the trainer's ``runs/shapes-world/vae``
    while the shipped pipeline is not there yet.
    """
    from pathlib import Path

    from .. import models
    from ..errors import ModelNotFoundError

    try:
        return models.load_pipeline(model, device=device).vae.eval()
    except ModelNotFoundError:
        root = Path(__file__).resolve().parents[2]
        candidates = [Path(model), Path(model) / "vae"]
        if model == models.SHAPES_WORLD:
            candidates += [root / "runs" / "shapes-world" / "vae", root / "runs" / "shapes-world" / "pipeline" / "vae"]
        for path in candidates:
            if (path / "config.json").is_file():
                from diffusers import AutoencoderKL

                return AutoencoderKL.from_pretrained(path).to(device).eval()
        raise
