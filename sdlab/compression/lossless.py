"""The lossless coders behind the latent codec: zlib, LZMA, zstd, or the bytes stored as they are.

Each runs raw (no container of its own: no zlib header, no xz stream, no zstd
magic), because the latent byte string's header already says which coder made
the payload and how long it decodes to; on payloads of a few hundred bytes
those container bytes would be a large share of the file.
"""
from __future__ import annotations

import lzma
import zlib

from ..errors import CodecError, DependencyError
from ..validation import Options, validate_params

CODERS = ("zlib", "lzma", "zstd", "raw")  # index = the code stored in the header's flags
_LZMA_FILTERS = [{"id": lzma.FILTER_LZMA2, "preset": 9 | lzma.PRESET_EXTREME}]
_ZSTD_MISSING = "coder: 'zstd' needs the zstandard package: pip install zstandard"


def _zstd():
    try:
        import zstandard
    except ImportError:
        return None
    return zstandard


def available_coders() -> list[str]:
    """The lossless coders this machine can run (zstd needs the ``zstandard`` package)."""
    return [c for c in CODERS if c != "zstd" or _zstd() is not None]


def check_coder(coder: str, auto: bool = False) -> None:
    """Refuse an unknown coder (``"auto"`` too when ``auto``) and zstd where zstandard is missing."""
    validate_params({"coder": coder}, {"coder": [Options(CODERS + (("auto",) if auto else ()))]})
    if coder == "zstd" and _zstd() is None:
        raise DependencyError(_ZSTD_MISSING)


def compress(data: bytes, coder: str) -> bytes:
    """Compress with one lossless coder, without container overhead (the header says which)."""
    check_coder(coder)
    if coder == "zlib":
        c = zlib.compressobj(9, zlib.DEFLATED, -15, 9)
        return c.compress(data) + c.flush()
    if coder == "lzma":
        return lzma.compress(data, format=lzma.FORMAT_RAW, filters=_LZMA_FILTERS)
    if coder == "zstd":
        zstandard = _zstd()
        params = zstandard.ZstdCompressionParameters.from_level(
            22, format=zstandard.FORMAT_ZSTD1_MAGICLESS, write_content_size=False, write_checksum=False,
            write_dict_id=False)
        return zstandard.ZstdCompressor(compression_params=params).compress(data)
    return bytes(data)


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
