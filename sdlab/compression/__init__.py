"""The compression lab: a VAE latent codec beside JPEG, WebP, AVIF and JPEG XL at matched byte budgets.

- :mod:`.base`: the Codec interface and ``encode_to_budget`` (binary search on quality).
- :mod:`.latent`: the latent codec for any diffusers ``AutoencoderKL`` (Bühlmann 2022), built from
  :mod:`.lossless` (entropy coders), :mod:`.container` (the byte string with its header and CRC),
  :mod:`.palette` (k-means palette, dithering), :mod:`.repair` (the denoising repair pass) and
  :mod:`.vae` (a VAE's id, loading one).
- :mod:`.classical`: Pillow's codecs and JPEG XL.
- :mod:`.rd`: ``rd_curves`` (image x codec x budget table) and the codec registry.
- :mod:`.content`: text, small-face and texture checks that show where learned codecs fail.
- :mod:`.bench`: the standard RD benchmark (budgets, image sets, files on disk).
- :mod:`.plots`: rate–distortion curves, crops at equal bytes, the "where it fails" panel.

Importing this package does not import torch; the latent codec does when used.
"""
from __future__ import annotations

from .base import BudgetTooSmall, Codec, Encoded
from .rd import CODEC_NAMES, DEFAULT_CODECS, get_codec, rd_curves, summarize

__all__ = ["BudgetTooSmall", "Codec", "Encoded", "CODEC_NAMES", "DEFAULT_CODECS", "get_codec", "rd_curves",
           "summarize"]
