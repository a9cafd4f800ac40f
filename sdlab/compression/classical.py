"""Classical image codecs through Pillow: JPEG (4:2:0 and 4:4:4), WebP, AVIF and JPEG XL.

Each is a :class:`~sdlab.compression.base.Codec` with a quality knob, so
:meth:`encode_to_budget` compares them at matched sizes. Settings favour size
over speed where that is cheap (JPEG Huffman optimisation, WebP method 6),
because the lab compares codecs at their best. JPEG XL comes from
``pillow-jxl-plugin`` (preferred) or ``imagecodecs``; a codec whose library is
missing reports why in :meth:`unavailable_reason` instead of failing later.
"""
from __future__ import annotations

import importlib
import io
from typing import Any

import numpy as np
from PIL import Image, features

from ..errors import CodecError
from ..images import load_rgb
from ..validation import Interval, Options, validate_params
from .base import Codec


def _decode_with_pillow(name: str, data: bytes) -> np.ndarray:
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            return load_rgb(im)
    except Exception as exc:
        raise CodecError(f"data: not a decodable {name} byte string ({type(exc).__name__}: {exc})") from None


class PillowCodec(Codec):
    """A codec Pillow writes itself: ``fmt`` plus fixed save options, ``quality`` varied."""

    def __init__(self, name: str, fmt: str, feature: str, quality_range: tuple[int, int], install_hint: str,
                 **options: Any) -> None:
        self.name, self.fmt, self.feature = name, fmt, feature
        self.quality_range, self.install_hint, self.options = quality_range, install_hint, options

    def unavailable_reason(self) -> str | None:
        if not features.check(self.feature):
            return f"this Pillow was built without {self.fmt} support ({self.install_hint})"
        return None

    def encode(self, image: np.ndarray, quality: int) -> bytes:
        quality = self.check_quality(quality)
        self.check_available()
        buf = io.BytesIO()
        Image.fromarray(load_rgb(image)).save(buf, format=self.fmt, quality=quality, **self.options)
        return buf.getvalue()

    def decode(self, data: bytes) -> np.ndarray:
        self.check_available()
        return _decode_with_pillow(self.name, data)


class JxlCodec(Codec):
    """JPEG XL (lossy, VarDCT) through ``pillow-jxl-plugin``, else ``imagecodecs``."""

    name = "jxl"
    quality_range = (1, 99)  # 100 means distance 0, which libjxl accepts only as lossless
    install_hint = "pip install pillow-jxl-plugin"

    def __init__(self, effort: int = 7) -> None:
        validate_params({"effort": effort}, {"effort": [Interval(int, 1, 9)]})
        self.effort = effort

    def _backend(self) -> str | None:
        for module in ("pillow_jxl", "imagecodecs"):
            try:
                lib = importlib.import_module(module)
            except ImportError:
                continue
            if module == "imagecodecs" and not getattr(lib, "JPEGXL", None):
                continue
            return module
        return None

    def unavailable_reason(self) -> str | None:
        if self._backend() is None:
            return f"neither pillow-jxl-plugin nor imagecodecs with JPEG XL is importable ({self.install_hint})"
        return None

    def encode(self, image: np.ndarray, quality: int) -> bytes:
        quality = self.check_quality(quality)
        self.check_available()
        image = load_rgb(image)
        if self._backend() == "pillow_jxl":
            buf = io.BytesIO()
            Image.fromarray(image).save(buf, format="JXL", quality=quality, effort=self.effort, lossless=False)
            return buf.getvalue()
        import imagecodecs

        return bytes(imagecodecs.jpegxl_encode(image, level=quality, effort=self.effort))

    def decode(self, data: bytes) -> np.ndarray:
        self.check_available()
        if self._backend() == "pillow_jxl":
            return _decode_with_pillow(self.name, data)
        import imagecodecs

        try:
            return load_rgb(np.asarray(imagecodecs.jpegxl_decode(data)))
        except Exception as exc:
            raise CodecError(f"data: not a decodable jxl byte string ({type(exc).__name__}: {exc})") from None


def jpeg(subsampling: str = "4:2:0") -> PillowCodec:
    """Baseline JPEG with optimised Huffman tables; ``subsampling`` is "4:2:0" or "4:4:4"."""
    validate_params({"subsampling": subsampling}, {"subsampling": [Options(("4:2:0", "4:4:4"))]})
    name = "jpeg" if subsampling == "4:2:0" else "jpeg444"
    return PillowCodec(name, "JPEG", "jpg", (1, 100), "reinstall Pillow", optimize=True,
                       subsampling=0 if subsampling == "4:4:4" else 2)


def webp(method: int = 6) -> PillowCodec:
    """Lossy WebP; ``method`` 0 (fast) .. 6 (smallest)."""
    validate_params({"method": method}, {"method": [Interval(int, 0, 6)]})
    return PillowCodec("webp", "WEBP", "webp", (0, 100), "reinstall Pillow with libwebp", method=method)


def avif(speed: int = 6) -> PillowCodec:
    """AVIF (AV1 intra, 4:2:0) through Pillow >= 11.3; ``speed`` 0 (slowest, smallest) .. 10."""
    validate_params({"speed": speed}, {"speed": [Interval(int, 0, 10)]})
    return PillowCodec("avif", "AVIF", "avif", (0, 100), "Pillow >= 11.3 built with libavif", speed=speed)


def jxl(effort: int = 7) -> JxlCodec:
    """JPEG XL; ``effort`` 1 (fast) .. 9 (smallest)."""
    return JxlCodec(effort=effort)
