"""The compression lab: a VAE latent codec beside JPEG, WebP, AVIF and JPEG XL at matched byte budgets.

- :mod:`.base`: the Codec interface and ``encode_to_budget`` (binary search on quality).
- :mod:`.latent`: the latent codec for any diffusers ``AutoencoderKL`` (Bühlmann 2022).
- :mod:`.classical`: Pillow's codecs and JPEG XL.
- :mod:`.rd`: ``rd_curves`` (image x codec x budget table) and the codec registry.
- :mod:`.content`: text, small-face and texture checks that show where learned codecs fail.
- :mod:`.plots`: rate–distortion curves, crops at equal bytes, the "where it fails" panel.

Importing this package does not import torch; the latent codec does when used.
"""
from __future__ import annotations

from .base import BudgetTooSmall, Codec, Encoded
from .rd import CODEC_NAMES, DEFAULT_CODECS, get_codec, rd_curves, summarise

__all__ = ["BudgetTooSmall", "Codec", "Encoded", "CODEC_NAMES", "DEFAULT_CODECS", "get_codec", "rd_curves",
           "summarise"]
