"""The two networks of Stable Signature: the embedder (training only) and the extractor that reads the key."""
from __future__ import annotations


def build_embedder(n_bits: int, width: int = 32):
    """HiDDeN-style embedder: image and message in, a residual out (training only: it keeps E message-agnostic).

    The message reaches the convolutions as a coarse learned spatial map (a linear layer to 4x16x16,
    upsampled), as in StegaStamp. Broadcast as constant maps, as HiDDeN does, it can only shift the
    colour of the shapes world's flat regions: three numbers for 32 bits, too few to carry the message.
    """
    import torch
    import torch.nn.functional as F
    from torch import nn

    class Embedder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.carrier = nn.Linear(n_bits, 4 * 16 * 16)
            self.net = nn.Sequential(
                nn.Conv2d(3 + 4, width, 3, 1, 1), nn.GroupNorm(8, width), nn.SiLU(),
                nn.Conv2d(width, width, 3, 1, 1), nn.GroupNorm(8, width), nn.SiLU(),
                nn.Conv2d(width, 3, 1),
            )

        def forward(self, x, bits):
            maps = self.carrier(bits * 2 - 1).view(-1, 4, 16, 16)
            maps = F.interpolate(maps, size=x.shape[-2:], mode="bilinear", align_corners=False)
            return self.net(torch.cat([x, maps], dim=1))

    return Embedder()


def build_extractor(n_bits: int, width: int = 32):
    """HiDDeN-style extractor: conv blocks, one logit map per bit, global average pool (so it reads any size)."""
    from torch import nn

    def block(cin: int, cout: int, stride: int) -> list:
        return [nn.Conv2d(cin, cout, 3, stride, 1), nn.GroupNorm(8, cout), nn.SiLU()]

    return nn.Sequential(
        *block(3, width, 1), *block(width, width, 2), *block(width, 2 * width, 2), *block(2 * width, 2 * width, 1),
        nn.Conv2d(2 * width, n_bits, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
    )
