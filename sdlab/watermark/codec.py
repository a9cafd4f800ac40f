"""Payloads, presets and the post-hoc watermark codec (``invisible-watermark``).

Everything here takes and returns RGB ``uint8`` arrays. The library works in
OpenCV's BGR order; the flip to BGR and back happens in :func:`_to_bgr` /
:func:`_from_bgr` and nowhere else in sdlab.

Marks in the wild were not all written that way. A :data:`Reading` says how the
marking code handed the image to the library's encoder: in which channel order
(``"bgr"``, as the library expects, or ``"rgb"``, an RGB array passed as if it
were BGR, as diffusers' SDXL watermarker did before diffusers PR #7013) and as
which dtype (``"uint8"``, or ``"float32"`` as diffusers and Stability's
reference scripts pass it: OpenCV then centres the chroma on 0.5 instead of 128,
which moves the DWT coefficients the mark is quantised in). Decoding under the
matching reading reads the mark back; a preset lists the readings its mark is
known to have been written with (:attr:`Preset.readings`). The channel order is
told apart reliably; a mark often reads under both dtypes, so the dtype of the
best reading is a hint, not proof of how the mark was written.

Decoding ``dwtDct`` and ``dwtDctSvd`` is vectorised here (one pass over the
4x4 blocks of the U channel's Haar approximation, then a vote per bit),
which gives the library's bits (checked in the tests) and lets one block
pass serve payloads of every length, so testing all presets costs one decode.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Iterable, Sequence, Union

import numpy as np
from PIL import Image

from ..errors import DependencyError
from ..images import ImageLike, to_rgb
from ..validation import Options, invalid, validate_params

METHODS = ("dwtDct", "dwtDctSvd", "rivaGan")
MIN_AREA = 256 * 256  # the library raises below this many pixels
RIVAGAN_BITS = 32
_SCALE = 36.0  # the library's default quantisation step for both DWT methods
_BLOCK = 4
# Orthonormal DCT-II matrix, so that _DCT @ B @ _DCT.T equals cv2.dct(B) for a 4x4 block.
_DCT = np.array(
    [[np.sqrt((1 if k == 0 else 2) / _BLOCK) * np.cos(np.pi * (2 * n + 1) * k / (2 * _BLOCK)) for n in range(_BLOCK)] for k in range(_BLOCK)]
)

PayloadLike = Union[str, bytes, Sequence[int], "Payload"]


@dataclass(frozen=True)
class Payload:
    """A watermark message as bits (most significant bit of each byte first, as the library packs them)."""

    bits: tuple[int, ...]
    label: str

    @property
    def n_bits(self) -> int:
        return len(self.bits)

    @property
    def array(self) -> np.ndarray:
        return np.asarray(self.bits, dtype=np.uint8)

    @property
    def key(self) -> str:
        """Stable text form used by the calibration file: ``0b`` then the bits."""
        return "0b" + "".join(map(str, self.bits))

    @classmethod
    def from_bytes(cls, data: bytes, label: str | None = None) -> "Payload":
        if not data:
            raise invalid("payload", data, "at least one byte")
        bits = tuple(int(b) for b in np.unpackbits(np.frombuffer(data, dtype=np.uint8)))
        return cls(bits, label or repr(data))

    @classmethod
    def from_bits(cls, bits: Iterable[int] | str, label: str | None = None) -> "Payload":
        if isinstance(bits, str):
            text = bits[2:] if bits.startswith("0b") else bits
            if not text or set(text) - {"0", "1"}:
                raise invalid("payload", bits, "a bit string: 0b followed by 0s and 1s")
            values = tuple(int(c) for c in text)
        else:
            try:
                values = tuple(int(b) for b in bits)
            except (TypeError, ValueError):
                values = ()
            if not values or set(values) - {0, 1}:
                raise invalid("payload", bits, "a non-empty sequence of 0 and 1")
        return cls(values, label or "0b" + "".join(map(str, values)))


Reading = tuple[str, str]  # (channel order handed to the encoder, its dtype): see the module docstring
LIBRARY = ("bgr", "uint8")  # the library used as documented; sdlab's own embed
CHANNEL_ORDERS, ENCODER_DTYPES = ("bgr", "rgb"), ("uint8", "float32")


@dataclass(frozen=True)
class Preset:
    """A payload and method some released model ships with, and the readings its mark is written with."""

    name: str
    payload: Payload
    method: str
    source: str = ""
    readings: tuple[Reading, ...] = (LIBRARY,)


SDXL_BITS = "0b101100111110110010010000011110111011000110011110"  # 0xB3EC907BB19E, diffusers' StableDiffusionXLWatermarker
PRESETS: dict[str, Preset] = {
    "sd1": Preset("sd1", Payload.from_bytes(b"StableDiffusionV1", "StableDiffusionV1"), "dwtDct", "SD 1.x reference scripts"),
    "sd2": Preset("sd2", Payload.from_bytes(b"SDV2", "SDV2"), "dwtDct", "SD 2.x reference scripts"),
    # diffusers before PR #7013 handed the encoder its RGB float array, since then BGR; sdlab and the library's
    # documented use hand it uint8 BGR; uint8 RGB is the same slip on 8-bit images.
    "sdxl": Preset("sdxl", Payload.from_bits(SDXL_BITS, "0xB3EC907BB19E"), "dwtDct", "diffusers StableDiffusionXLWatermarker",
                   readings=tuple((order, dtype) for order in CHANNEL_ORDERS for dtype in ENCODER_DTYPES)),
}


def preset_for(pipe) -> str | None:
    """The mark a family's reference pipeline puts on its output: SD 1.x and 2.x's scripts (``sd1``, ``sd2``),
    diffusers' SDXL pipeline (``sdxl``); SD 3 and the shapes world mark nothing (None)."""
    from ..models import SHAPES_WORLD, family, model_info

    if model_info(pipe).name == SHAPES_WORLD:
        return None
    kind = family(pipe)
    if kind == "sd-inpaint":  # SD 2's inpainting model reads 1024-wide OpenCLIP states, SD 1.5's 768-wide CLIP
        kind = "sd2" if pipe.unet.config.cross_attention_dim == 1024 else "sd1"
    return kind if kind in PRESETS else None


def parse_payload(value: PayloadLike) -> Payload:
    """Text (UTF-8), bytes, ``0b…`` bits, ``0x…`` hex bytes, a bit sequence, or a :class:`Payload`."""
    if isinstance(value, Payload):
        return value
    if isinstance(value, (bytes, bytearray)):
        return Payload.from_bytes(bytes(value))
    if isinstance(value, str):
        if re.fullmatch(r"0b[01]+", value):
            return Payload.from_bits(value)
        if re.fullmatch(r"0x([0-9a-fA-F]{2})+", value):
            return Payload.from_bytes(bytes.fromhex(value[2:]), value)
        if not value:
            raise invalid("payload", value, "non-empty text, 0b… bits or 0x… hex")
        return Payload.from_bytes(value.encode("utf-8"), value)
    if isinstance(value, (list, tuple, np.ndarray)):
        return Payload.from_bits(list(value))
    raise invalid("payload", value, "text, bytes, 0b… bits, 0x… hex or a sequence of 0 and 1")


def check_method(method: str, payload: Payload | None = None) -> str:
    """Validate ``method`` (and the payload length rivaGan needs)."""
    validate_params({"method": method}, {"method": [Options(METHODS)]})
    if method == "rivaGan" and payload is not None:
        check_rivagan_bits(payload.n_bits, payload.label)
    return method


def check_rivagan_bits(n_bits: int, payload: object = None) -> None:
    """rivaGan carries exactly :data:`RIVAGAN_BITS` bits."""
    if n_bits != RIVAGAN_BITS:
        raise invalid("payload", payload if payload is not None else f"{n_bits} bits",
                      f"exactly {RIVAGAN_BITS} bits for rivaGan (this one has {n_bits})")


def resolve(preset: str | None = None, payload: PayloadLike | None = None, method: str | None = None) -> tuple[str, Payload, str]:
    """(preset name or ``custom``, payload, method) from a preset name or a custom payload."""
    if preset is not None and payload is not None:
        raise invalid("payload", payload, f"None when a preset is given (preset {preset!r} fixes its payload)")
    if preset is not None:
        validate_params({"preset": preset}, {"preset": [Options(PRESETS)]})
        p = PRESETS[preset]
        if method is not None and method != p.method:
            raise invalid("method", method, f"{p.method} or None for preset {preset!r}; pass a payload to use {method}")
        return preset, p.payload, p.method
    if payload is None:
        raise invalid("preset", preset, f"one of {', '.join(PRESETS)} when no payload is given")
    parsed = parse_payload(payload)
    method = check_method(method or "dwtDct", parsed)
    return "custom", parsed, method


# -- images ------------------------------------------------------------------------------------
def codec_input(image: ImageLike, upscale: bool = False, n_bits: int = 1) -> tuple[np.ndarray, list[str]]:
    """Any image as the RGB uint8 array the codec accepts, plus notes: refuses (or, with ``upscale``,
    enlarges) images under the library's minimum area or with too few blocks for ``n_bits`` bits."""
    rgb, notes = to_rgb(image)
    h, w = rgb.shape[:2]
    too_small = h * w < MIN_AREA or (h // (2 * _BLOCK)) * (w // (2 * _BLOCK)) < n_bits
    if too_small:
        if not upscale:
            blocks = (h // (2 * _BLOCK)) * (w // (2 * _BLOCK))
            need = ("the watermark library's minimum area of 256x256 pixels" if h * w < MIN_AREA else
                    f"an image with one {2 * _BLOCK}x{2 * _BLOCK} block per payload bit ({n_bits} bits, this one has {blocks} blocks); "
                    "a shorter payload")
            raise invalid("image", f"{w}x{h} pixels", f"{need}, or pass upscale=True (CLI: --upscale) to enlarge it first")
        factor = max(np.sqrt(MIN_AREA / (h * w)), 2 * _BLOCK * np.sqrt(n_bits) / min(h, w), 1.0)
        new_w, new_h = int(np.ceil(w * factor)), int(np.ceil(h * factor))
        rgb = np.asarray(Image.fromarray(rgb).resize((new_w, new_h), Image.LANCZOS))
        notes.append(f"upscaled from {w}x{h} to {new_w}x{new_h} to reach the library's minimum area")
    return rgb, notes


def _to_bgr(rgb: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(rgb[..., ::-1])


def _from_bgr(bgr: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(bgr[..., ::-1])


def _riva():
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        raise DependencyError("method: rivaGan needs onnxruntime; pip install onnxruntime") from None
    from imwatermark.rivaGan import RivaWatermark

    RivaWatermark.loadModel()
    return RivaWatermark


def embed_array(rgb: np.ndarray, payload: Payload, method: str) -> np.ndarray:
    """Embed ``payload`` in an RGB array already checked by :func:`codec_input`; returns RGB."""
    from imwatermark import WatermarkEncoder

    check_method(method, payload)
    if method == "dwtDct":
        return _from_bgr(_embed_dwtdct_bgr(_to_bgr(rgb), payload.array))
    if method == "rivaGan":
        _riva()
    encoder = WatermarkEncoder()
    encoder.set_watermark("bits", list(payload.bits))
    return _from_bgr(encoder.encode(_to_bgr(rgb), method))


def _embed_dwtdct_bgr(bgr: np.ndarray, bits: np.ndarray) -> np.ndarray:
    """The library's dwtDct encoder (``imwatermark.maxDct.EmbedMaxDct.encode``, scales 0/36/36) without its
    Python loop over blocks: the same float operations block by block, so the output is identical (tested).

    Like the library it swaps the horizontal and vertical Haar details when it rebuilds the U channel, and it
    writes the float result into the uint8 YUV array with numpy's truncating cast.
    """
    import cv2
    import pywt

    row, col = bgr.shape[:2]
    yuv = cv2.cvtColor(bgr, cv2.COLOR_BGR2YUV)
    approx, (h1, v1, d1) = pywt.dwt2(yuv[: row // 4 * 4, : col // 4 * 4, 1], "haar")
    rows, cols = approx.shape[0] // _BLOCK, approx.shape[1] // _BLOCK
    view = approx[: rows * _BLOCK, : cols * _BLOCK].reshape(rows, _BLOCK, cols, _BLOCK).swapaxes(1, 2)
    blocks = view.reshape(rows * cols, _BLOCK * _BLOCK).copy()
    pos = np.argmax(np.abs(blocks[:, 1:]), axis=1) + 1
    idx = np.arange(len(blocks))
    val = blocks[idx, pos]
    bit = bits[idx % len(bits)].astype(np.float64)
    mag = np.abs(val)
    new = (mag // _SCALE + 0.25 + 0.5 * bit) * _SCALE
    blocks[idx, pos] = np.where(val >= 0.0, new, -1.0 * new)
    approx[: rows * _BLOCK, : cols * _BLOCK] = blocks.reshape(rows, cols, _BLOCK, _BLOCK).swapaxes(1, 2).reshape(
        rows * _BLOCK, cols * _BLOCK)
    yuv[: row // 4 * 4, : col // 4 * 4, 1] = pywt.idwt2((approx, (v1, h1, d1)), "haar")
    return cv2.cvtColor(yuv, cv2.COLOR_YUV2BGR)


# -- decoding ------------------------------------------------------------------------------------
def block_votes(rgb: np.ndarray, method: str, reading: Reading = LIBRARY) -> np.ndarray:
    """Per-block bit votes (0/1) of a DWT method, in the library's block order (row-major), read as the encoder
    saw the image under ``reading`` (channel order, dtype)."""
    import cv2
    import pywt

    order, dtype = reading
    handed = _to_bgr(rgb) if order == "bgr" else np.ascontiguousarray(rgb)
    yuv = cv2.cvtColor(handed.astype(np.float32) if dtype == "float32" else handed, cv2.COLOR_BGR2YUV)
    h, w = yuv.shape[:2]
    approx, _ = pywt.dwt2(yuv[: h // 4 * 4, : w // 4 * 4, 1], "haar")  # U channel; Y and V carry nothing
    rows, cols = approx.shape[0] // _BLOCK, approx.shape[1] // _BLOCK
    blocks = approx[: rows * _BLOCK, : cols * _BLOCK].reshape(rows, _BLOCK, cols, _BLOCK).swapaxes(1, 2)
    blocks = blocks.reshape(rows * cols, _BLOCK * _BLOCK)
    if method == "dwtDct":  # largest AC coefficient of the (DWT-domain) block
        pos = np.argmax(np.abs(blocks[:, 1:]), axis=1) + 1
        values = np.abs(blocks[np.arange(len(blocks)), pos])
    elif method == "dwtDctSvd":  # largest singular value of the block's 2-D DCT
        stack = blocks.reshape(-1, _BLOCK, _BLOCK)
        values = np.linalg.svd(_DCT @ stack @ _DCT.T, compute_uv=False)[:, 0]
    else:
        raise invalid("method", method, "dwtDct or dwtDctSvd (the methods with block votes)")
    return ((values % _SCALE) > 0.5 * _SCALE).astype(np.float64)


def vote_counts(votes: np.ndarray, n_bits: int) -> tuple[np.ndarray, np.ndarray]:
    """(blocks voting 1, blocks) for each bit: block ``k`` votes for bit ``k % n_bits``."""
    index = np.arange(len(votes)) % n_bits
    ones = np.bincount(index, weights=votes, minlength=n_bits).round().astype(np.int64)
    return ones, block_totals(len(votes), n_bits)


def block_totals(n_blocks: int | np.ndarray, n_bits: int) -> np.ndarray:
    """How many of ``n_blocks`` blocks vote for each bit (``n_blocks`` may be an array: one row per image)."""
    n = np.asarray(n_blocks)[..., None]
    return n // n_bits + (np.arange(n_bits) < n % n_bits)


def bits_from_counts(ones: np.ndarray, totals: np.ndarray) -> np.ndarray:
    """The library's decision: a bit is 1 when its mean vote exceeds 127/255."""
    return (ones / np.maximum(totals, 1) * 255 > 127).astype(np.uint8)


def riva_scores(rgb: np.ndarray) -> np.ndarray:
    """rivaGan's 32 decoder outputs (a bit is 1 above the library's 0.52)."""
    riva = _riva()
    frame = _to_bgr(rgb).astype(np.float32)[None] / 127.5 - 1.0  # (1, H, W, 3)
    return riva.decoder.run(None, {"frame": frame.transpose(3, 0, 1, 2)[None]})[0][0]


@dataclass
class Decoder:
    """Decodes one image once per method and answers for any payload length (caches the block pass)."""

    rgb: np.ndarray
    _votes: dict[str, np.ndarray] = field(default_factory=dict)

    def bits(self, method: str, n_bits: int, reading: Reading = LIBRARY) -> np.ndarray:
        check_method(method)
        if method == "rivaGan":
            check_rivagan_bits(n_bits)
            if "rivaGan" not in self._votes:
                self._votes["rivaGan"] = (riva_scores(self.rgb) > 0.52).astype(np.uint8)
            return self._votes["rivaGan"]
        return bits_from_counts(*self.counts(method, n_bits, reading))

    def counts(self, method: str, n_bits: int, reading: Reading = LIBRARY) -> tuple[np.ndarray, np.ndarray]:
        """Per bit: (blocks voting 1, blocks), for dwtDct and dwtDctSvd, under ``reading``."""
        if method not in ("dwtDct", "dwtDctSvd"):
            raise invalid("method", method, "dwtDct or dwtDctSvd (the methods with block votes)")
        key = method if reading == LIBRARY else f"{method} {reading[0]} {reading[1]}"
        if key not in self._votes:
            self._votes[key] = block_votes(self.rgb, method, reading)
        return vote_counts(self._votes[key], n_bits)


def decode_bits(rgb: np.ndarray, method: str, n_bits: int) -> np.ndarray:
    """Decoded bits (uint8 0/1) of an RGB array."""
    return Decoder(rgb).bits(method, n_bits)


def library_decode(rgb: np.ndarray, method: str, n_bits: int) -> np.ndarray:
    """The library's own decoder (slower; the tests compare it with :func:`decode_bits`)."""
    from imwatermark import WatermarkDecoder

    if method == "rivaGan":
        _riva()
    return np.asarray(WatermarkDecoder("bits", n_bits).decode(_to_bgr(rgb), method), dtype=np.uint8)
