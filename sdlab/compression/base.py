"""What every codec in the lab is: encode at a quality, decode, and fit a byte budget.

Codecs are compared at matched sizes, so the one shared algorithm lives here:
:meth:`Codec.encode_to_budget` binary-searches the integer quality knob for
the highest quality whose output fits ``max_bytes``. It assumes size grows
with quality, which holds for every codec here except for rare one-step
wiggles; the result always fits and the next quality up never does.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import DependencyError, ValidationError
from ..validation import POSITIVE_INT, Interval, invalid, validate_params


class BudgetTooSmall(ValidationError):
    """Even the lowest quality of a codec does not fit the byte budget."""


@dataclass(frozen=True)
class Encoded:
    """One encoded image: the bytes and the quality setting that made them."""

    codec: str
    quality: int
    data: bytes

    @property
    def n_bytes(self) -> int:
        return len(self.data)


class Codec:
    """Base class: subclasses set ``name`` and ``quality_range`` and implement encode/decode."""

    name: str = "codec"
    quality_range: tuple[int, int] = (1, 100)
    default_quality: int = 75
    install_hint: str = ""

    # -- availability ----------------------------------------------------------------
    def unavailable_reason(self) -> str | None:
        """None when the codec works here, else one line saying what to install."""
        return None

    @property
    def available(self) -> bool:
        return self.unavailable_reason() is None

    def check_available(self) -> None:
        """Raise :class:`DependencyError` when the codec cannot run here."""
        reason = self.unavailable_reason()
        if reason is not None:
            raise DependencyError(f"codec {self.name!r} is not installed: {reason}")

    # -- coding ------------------------------------------------------------------------
    def encode(self, image: np.ndarray, quality: int) -> bytes:
        raise NotImplementedError

    def decode(self, data: bytes) -> np.ndarray:
        raise NotImplementedError

    def decode_many(self, datas: list[bytes]) -> list[np.ndarray]:
        """Decode several byte strings (latent codecs batch them through the VAE)."""
        return [self.decode(d) for d in datas]

    def check_quality(self, quality: int) -> int:
        """``quality`` as an int, refused unless it is a whole number in this codec's ``quality_range``."""
        allowed = Interval(int, *self.quality_range)
        if not allowed.accepts(quality):
            raise invalid("quality", quality, f"{allowed.describe()} for {self.name}")
        return int(quality)

    def encode_to_budget(self, image: np.ndarray, max_bytes: int, cache: dict[int, bytes] | None = None) -> Encoded:
        """The highest-quality encoding of ``image`` that is at most ``max_bytes`` long.

        ``cache`` (quality -> bytes, for this image only) lets a sweep over
        several budgets share encodings. Raises :class:`BudgetTooSmall` when
        even the lowest quality is larger.
        """
        validate_params({"max_bytes": max_bytes}, {"max_bytes": [POSITIVE_INT]})
        self.check_available()
        cache = {} if cache is None else cache

        def size(q: int) -> int:
            if q not in cache:
                cache[q] = self.encode(image, q)
            return len(cache[q])

        lo, hi = self.quality_range
        if size(hi) <= max_bytes:
            return Encoded(self.name, hi, cache[hi])
        if size(lo) > max_bytes:
            raise BudgetTooSmall(
                f"max_bytes: {max_bytes} is below {self.name}'s smallest output for this image "
                f"({size(lo)} bytes at quality {lo})"
            )
        # Narrow the bracket with what the cache already knows, then bisect. Invariant: lo fits, hi does not.
        lo = max([q for q, d in cache.items() if len(d) <= max_bytes and q < hi] + [lo])
        hi = min([q for q, d in cache.items() if len(d) > max_bytes and q > lo] + [hi])
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if size(mid) <= max_bytes:
                lo = mid
            else:
                hi = mid
        return Encoded(self.name, lo, cache[lo])

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"
