"""Column names: the variants LAION-style metadata uses, mapped to one canonical set.

laion2B parquet says ``URL, TEXT, WIDTH``; img2dataset says ``url, caption,
width``; aesthetics subsets add ``AESTHETIC_SCORE``. Every analysis reads the
canonical names only, and knows which it needs, so a dataset can report what
it allows before any work is done.
"""
from __future__ import annotations

from ..validation import Check, validate_params

# canonical name -> accepted spellings, compared case-insensitively, first match wins.
# Resolution prefers the original image size (img2dataset's ``width`` is after resizing).
VARIANTS: dict[str, tuple[str, ...]] = {
    "URL": ("url", "image_url", "img_url"),
    "TEXT": ("text", "caption", "alt_text", "alt"),
    "WIDTH": ("original_width", "width"),
    "HEIGHT": ("original_height", "height"),
    "AESTHETIC_SCORE": ("aesthetic_score", "aesthetic", "aesthetics_score"),
    "pwatermark": ("pwatermark", "p_watermark", "watermark_probability"),
    "punsafe": ("punsafe", "p_unsafe", "unsafe_probability"),
    "similarity": ("similarity", "clip_similarity", "similarity_score"),
    "LANGUAGE": ("language", "lang"),
}
CANONICAL = tuple(VARIANTS)
CONSTRAINTS = {"columns": [None, Check(lambda c: not isinstance(c, str) and all(w in VARIANTS for w in c),
                                       f"a list of {', '.join(CANONICAL)}")]}

# analysis -> (all of these columns, or any one of these columns)
REQUIREMENTS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "domains": (("URL",), ()),
    "sizes": (("WIDTH", "HEIGHT"), ()),
    "scores": ((), ("AESTHETIC_SCORE", "pwatermark", "punsafe", "similarity")),
    "funnel": ((), ("AESTHETIC_SCORE", "pwatermark", "punsafe", "WIDTH")),
    "languages": ((), ("LANGUAGE", "TEXT")),
    "captions": (("TEXT",), ()),
}
ANALYSES = tuple(REQUIREMENTS)


def map_columns(names: list[str], wanted: list[str] | None = None) -> dict[str, str]:
    """Return ``{canonical: actual}`` for the canonical columns found among ``names``.

    ``wanted`` restricts the result to those canonical names (the user's
    ``columns=``); unknown canonical names there are a mistake worth naming.
    """
    validate_params({"columns": wanted}, CONSTRAINTS)
    lower = {}
    for name in names:
        lower.setdefault(name.lower(), name)
    found: dict[str, str] = {}
    for canonical, spellings in VARIANTS.items():
        if wanted is not None and canonical not in wanted:
            continue
        for spelling in spellings:
            if spelling in lower:
                found[canonical] = lower[spelling]
                break
    return found


def availability(columns: list[str] | set[str]) -> dict[str, str]:
    """For each analysis: ``"available"`` or ``"not available: needs …"`` given canonical ``columns``."""
    have = set(columns)
    out = {}
    for analysis, (all_of, any_of) in REQUIREMENTS.items():
        missing = [c for c in all_of if c not in have]
        if missing:
            out[analysis] = f"not available: needs {' and '.join(missing)}"
        elif any_of and not have & set(any_of):
            out[analysis] = f"not available: needs one of {', '.join(any_of)}"
        else:
            out[analysis] = "available"
    return out


def not_available(analysis: str, columns: list[str] | set[str]) -> str | None:
    """The "not available" reason for ``analysis`` or ``None`` when the columns allow it."""
    status = availability(columns)[analysis]
    return None if status == "available" else status
