"""Stable Signature: a watermark in the VAE decoder, so every image the model makes carries it (Fernandez et al. 2023).

Tree-Ring hides its key in the starting noise and needs the image to give
that noise back, which the shapes world's images do not (``treering.py``
says why). Stable Signature needs no inversion: the decoder is fine-tuned so
that whatever it draws carries a fixed key of ``n_bits`` bits, which a small
extractor network reads from any image. Nothing in the sampling loop changes,
so no sampler setting turns the mark off; only editing the image (or
swapping the decoder) can.

Training (:func:`train`) follows the paper's two stages. Stage 1 trains a
HiDDeN embedder H and extractor E on random messages m, so E reads any
message and, on an unmarked image, none in particular (trained on one key
alone, it learns to answer "key" for every image). Stage 2 fine-tunes a copy
of the decoder, D_w, so that E (frozen) reads the key from what it draws,
while staying close to the original decoder D_0. Each step draws one
augmentation for its batch (:data:`AUGMENTATIONS`) so the mark survives the
battery's attacks; JPEG passes straight through (forward: the real codec,
backward: identity). The paper's perceptual (Watson-VGG) loss is MSE here::

    stage 1:  BCE(E(aug(x + H(x, m))), m) + embed_weight * mean(H(x, m)^2)
              (faint_embed_weight instead in the last faint_steps; x: the model's images and photo crops)
    stage 2:  BCE(E(aug(D_w(z))), key) + image_weight * MSE(D_w(z), D_0(z))

Stage 1 ends with the residual weighed more (``faint_embed_weight``) so that E
reads a mark as faint as a decoder can draw, and it hides messages in photo
crops too, so that on a photo E reads no message in particular rather than
something key-like. The model's own images come from the caller
(``dataset``: the CLI and the panel pass the shapes world's).

Detection: k of n bits match the key; p = P(Binomial(n, 1/2) >= k). The
false-positive rate on clean images is measured after training and stored
with the weights (``signature.json``, "measured"), not assumed; the shipped
signature's figures are there, and notebook 05 discusses them.

- :mod:`.config` -- :class:`SignatureConfig` and the file names of a trained signature
- :mod:`.nets` -- the embedder and the extractor
- :mod:`.augmentations` -- :func:`augment`, differentiable stand-ins for the battery's attacks
- :mod:`.training` -- :func:`train` (two stages, resumable), :func:`export`, :func:`extractor_source`
- :mod:`.scheme` -- :class:`StableSignature` (marked pipeline, detection, battery scheme) and :func:`measure`
"""
from .augmentations import AUGMENTATIONS, augment
from .config import CHECKPOINT, CONFIG, DECODER, EXTRACTOR, SHIPPED_SIGNATURE, Dataset, SignatureConfig
from .nets import build_embedder, build_extractor
from .scheme import MEASURE_CONSTRAINTS, StableSignature, binomial_p_value, measure
from .training import export, extractor_source, train

__all__ = [
    "AUGMENTATIONS", "CHECKPOINT", "CONFIG", "DECODER", "EXTRACTOR", "MEASURE_CONSTRAINTS", "SHIPPED_SIGNATURE",
    "Dataset", "SignatureConfig", "StableSignature", "augment", "binomial_p_value", "build_embedder", "build_extractor",
    "export", "extractor_source", "measure", "train",
]
