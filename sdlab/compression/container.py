"""The latent codec's byte string: a header that says what made it, the payload, a CRC-32.

Layout (little-endian), so a file says what made it::

    "SL" | version u8 | VAE id 4 bytes | flags u8 | channels u8 | height u16 | width u16
    | tile u16 (0: whole image) | levels-1 u8 | palette-1 u8 | low f16 x C | high f16 x C
    | payload | CRC-32 of everything before it (u32)

flags: bits 0-1 the lossless coder (an index into
:data:`~sdlab.compression.lossless.CODERS`), bit 2 palette. The VAE id
(:func:`~sdlab.compression.vae.vae_id`) lets a decoder refuse bytes made for
another VAE instead of decoding them into noise; the CRC catches truncation
and corruption before any of the payload is trusted.
"""
from __future__ import annotations

import binascii
import struct
from dataclasses import dataclass

import numpy as np

from ..errors import CodecError
from ..validation import invalid
from .lossless import CODERS

MAGIC = b"SL"
VERSION = 1
_FIXED = struct.Struct("<2sB4sBBHHHBB")
_CRC = struct.Struct("<I")
CRC_SIZE = _CRC.size


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
        """Read and check the header of a whole byte string (the CRC covers all of it)."""
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


def seal(body: bytes) -> bytes:
    """Header + payload with its CRC-32 appended: a complete byte string."""
    return body + _CRC.pack(binascii.crc32(body))


def open_bytes(data: object) -> tuple[LatentHeader, bytes]:
    """The checked header of a byte string and its payload (between the header and the CRC)."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise invalid("data", data, "bytes")
    data = bytes(data)
    header = LatentHeader.unpack(data)
    return header, data[header.size : -_CRC.size]
