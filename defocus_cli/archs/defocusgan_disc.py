"""DefocusGAN discriminator (training only): a PatchGAN critic (Isola et al. 2017) as released with DefocusGAN
(notes §2.3). 2,764,737 parameters; state-dict names ``model.{0,2,5,8,11}.*`` as in the released checkpoint's
``state_dict_D``.

Layers (4x4 kernels, padding 2): conv(3→64, s2) + LReLU 0.2; conv(64→128, s2) + InstanceNorm + LReLU;
conv(128→256, s2) + IN + LReLU; conv(256→512, s1) + IN + LReLU; conv(512→1, s1). InstanceNorm without affine
parameters or running statistics; the output is an unbounded per-patch critic score (WGAN-GP).
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["PatchDiscriminator"]


class PatchDiscriminator(nn.Module):
    """``forward(x)``: ``(N, in_channels, H, W)`` image (the generator's colour order, [0, 1]) →
    ``(N, 1, H', W')`` critic scores, ``H' ≈ H / 8 + 2`` (each score sees a 70x70-ish patch)."""

    def __init__(self, in_channels: int = 3, ndf: int = 64, n_layers: int = 3) -> None:
        super().__init__()
        k, p = 4, 2
        layers: list[nn.Module] = [nn.Conv2d(in_channels, ndf, k, stride=2, padding=p), nn.LeakyReLU(0.2, True)]
        mult = 1
        for n in range(1, n_layers):
            prev, mult = mult, min(2**n, 8)
            layers += [
                nn.Conv2d(ndf * prev, ndf * mult, k, stride=2, padding=p),
                nn.InstanceNorm2d(ndf * mult),
                nn.LeakyReLU(0.2, True),
            ]
        prev, mult = mult, min(2**n_layers, 8)
        layers += [
            nn.Conv2d(ndf * prev, ndf * mult, k, stride=1, padding=p),
            nn.InstanceNorm2d(ndf * mult),
            nn.LeakyReLU(0.2, True),
            nn.Conv2d(ndf * mult, 1, k, stride=1, padding=p),
        ]
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)
