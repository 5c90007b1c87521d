"""SFT-net (after Ye, Suganuma, Okatani: defocus deblurring with a defocus map as spatial feature
transform condition) — our own efficient design; no official code or weights exist.

The paper's three sub-networks, kept; widths/depths/resolutions are ours (chosen to train on a CPU):

* **Defocus-map estimation net** (DME): pixel-unshuffle ×4 (3 → 48 ch at 1/4 resolution), conv 3×3
  48→32 + LReLU, 4 residual blocks (conv-LReLU-conv + skip, 32 ch), conv 32→32 + LReLU, conv 32→1,
  softplus → unsigned CoC radius (px of the input image) at 1/4 resolution; :meth:`SFTNet.defocus_map`
  upsamples it bilinearly to full resolution.
* **Condition net**: three convolutions, conv 3×3 1→32 + LReLU, conv 1×1 32→32 + LReLU, conv 1×1 32→32,
  on the map / 8 → 32-ch condition features at 1/4 resolution.
* **Deblurring net**: full-res conv 3→16, strided convs to 1/2 (32 ch) and 1/4 (64 ch); at 1/4 resolution
  ``n_blocks`` = 8 **conditioned residual blocks** ``x + conv(LReLU(SFT(conv(LReLU(SFT(x))))))``, then
  SFT → conv and a long skip; decoder by conv + pixel-shuffle ×2 twice with skips from the encoder,
  full-res head conv 16→16 → conv 16→3, added to the input and clamped to [0, 1].
* **Decomposed SFT layer** (per layer; condition ``c`` has 32 ch): ``γ = γ_c · γ_s`` with the channel
  factor ``γ_c`` (C×1×1) = 1×1 convs 32→32→C on the spatially averaged condition and the spatial factor
  ``γ_s`` (1×H×W) = 1×1 convs 32→32→1; ``β`` (C×H×W) = 1×1 convs 32→32→C (not decomposed, as in the
  paper); output ``F · (1 + γ) + β``.

Numbers (default configuration, measured with ``tests/test_sftnet.py``-style counting):
**990,997 parameters** (284 tensors): map net 97,377, condition net 2,432, deblurring net 891,188;
**69.1 GMAC per megapixel** (forward hooks over the conv layers, 512×512 input; the §3.2
reconstruction is 1,734 GMAC/MP, so 25× fewer). Input sizes: multiples of 4 (the engine,
:class:`defocus_cli.restorer.Restorer`, pads other sizes and crops back). ``γ_c`` pools over the whole input, so tiles of one photo see
slightly different channel factors; the runtime's overlap hides it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

MAP_SCALE = 8.0
"""Defocus maps (px) are divided by this before the condition net."""


def _lrelu() -> nn.LeakyReLU:
    return nn.LeakyReLU(0.1, inplace=True)


class ResBlock(nn.Module):
    """conv3×3 → LReLU → conv3×3, plus the input. ``(N, C, H, W)`` → same."""

    def __init__(self, ch: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(ch, ch, 3, padding=1)
        self.conv2 = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.leaky_relu(self.conv1(x), 0.1))


class DefocusMapNet(nn.Module):
    """Image ``(N, 3, H, W)`` [0, 1] (H, W multiples of 4) → unsigned CoC radius (px) ``(N, 1, H/4, W/4)``."""

    def __init__(self, ch: int = 32, n_blocks: int = 4) -> None:
        super().__init__()
        self.head = nn.Conv2d(48, ch, 3, padding=1)
        self.blocks = nn.Sequential(*[ResBlock(ch) for _ in range(n_blocks)])
        self.conv = nn.Conv2d(ch, ch, 3, padding=1)
        self.tail = nn.Conv2d(ch, 1, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = F.leaky_relu(self.head(F.pixel_unshuffle(x, 4)), 0.1)
        f = F.leaky_relu(self.conv(self.blocks(f)), 0.1)
        return F.softplus(self.tail(f))


class ConditionNet(nn.Module):
    """Three convolutions: map ``(N, 1, h, w)`` (px) → condition features ``(N, cond_ch, h, w)``."""

    def __init__(self, cond_ch: int = 32) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, cond_ch, 3, padding=1)
        self.conv2 = nn.Conv2d(cond_ch, cond_ch, 1)
        self.conv3 = nn.Conv2d(cond_ch, cond_ch, 1)

    def forward(self, m: torch.Tensor) -> torch.Tensor:
        c = F.leaky_relu(self.conv1(m / MAP_SCALE), 0.1)
        c = F.leaky_relu(self.conv2(c), 0.1)
        return self.conv3(c)


class DecomposedSFT(nn.Module):
    """``F · (1 + γ_c · γ_s) + β``: ``γ_c`` ``(N, C, 1, 1)`` from the pooled condition, ``γ_s``
    ``(N, 1, h, w)``, ``β`` ``(N, C, h, w)``; features and condition share the spatial size ``h × w``."""

    #: Test-time local pooling (TLC, Chu et al. 2022): when set, ``γ_c`` pools the condition over a
    #: ``pool_window``² window around each position (cells of the 1/4-resolution grid) instead of the whole
    #: input, so a whole photo sees the statistics of a training patch. ``None``: global (as trained).
    pool_window: int | None = None

    def __init__(self, ch: int, cond_ch: int = 32) -> None:
        super().__init__()
        self.gc1 = nn.Conv2d(cond_ch, cond_ch, 1)
        self.gc2 = nn.Conv2d(cond_ch, ch, 1)
        self.gs1 = nn.Conv2d(cond_ch, cond_ch, 1)
        self.gs2 = nn.Conv2d(cond_ch, 1, 1)
        self.b1 = nn.Conv2d(cond_ch, cond_ch, 1)
        self.b2 = nn.Conv2d(cond_ch, ch, 1)

    def gammas(self, cond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(γ_c (N, C, 1, 1), γ_s (N, 1, h, w))``."""
        win = self.pool_window
        h, w = cond.shape[-2:]
        if win and (h > win or w > win):
            kh, kw = min(win, h), min(win, w)
            padded = F.pad(cond, (kw // 2, (kw - 1) // 2, kh // 2, (kh - 1) // 2), mode="replicate")
            pooled = F.avg_pool2d(padded, (kh, kw), stride=1)
        else:
            pooled = cond.mean(dim=(2, 3), keepdim=True)
        gc = self.gc2(F.leaky_relu(self.gc1(pooled), 0.1))
        gs = self.gs2(F.leaky_relu(self.gs1(cond), 0.1))
        return gc, gs

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        gc, gs = self.gammas(cond)
        beta = self.b2(F.leaky_relu(self.b1(cond), 0.1))
        return x * (1 + gc * gs) + beta


class CondResBlock(nn.Module):
    """``x + conv(LReLU(SFT(conv(LReLU(SFT(x, c))), c)))`` — the conditioned residual block."""

    def __init__(self, ch: int, cond_ch: int) -> None:
        super().__init__()
        self.sft1 = DecomposedSFT(ch, cond_ch)
        self.conv1 = nn.Conv2d(ch, ch, 3, padding=1)
        self.sft2 = DecomposedSFT(ch, cond_ch)
        self.conv2 = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        y = self.conv1(F.leaky_relu(self.sft1(x, cond), 0.1))
        y = self.conv2(F.leaky_relu(self.sft2(y, cond), 0.1))
        return x + y


class DeblurNet(nn.Module):
    """Image ``(N, 3, H, W)`` (multiples of 4) + condition ``(N, cond_ch, H/4, W/4)`` → residual ``(N, 3, H, W)``."""

    def __init__(self, ch: int = 64, n_blocks: int = 8, cond_ch: int = 32) -> None:
        super().__init__()
        c0, c1 = 16, 32
        self.enc0 = nn.Conv2d(3, c0, 3, padding=1)
        self.enc1 = nn.Conv2d(c0, c1, 3, stride=2, padding=1)
        self.enc1b = nn.Conv2d(c1, c1, 3, padding=1)
        self.enc2 = nn.Conv2d(c1, ch, 3, stride=2, padding=1)
        self.blocks = nn.ModuleList([CondResBlock(ch, cond_ch) for _ in range(n_blocks)])
        self.body_sft = DecomposedSFT(ch, cond_ch)
        self.body_conv = nn.Conv2d(ch, ch, 3, padding=1)
        self.up2 = nn.Conv2d(ch, c1 * 4, 3, padding=1)
        self.dec1 = nn.Conv2d(c1, c1, 3, padding=1)
        self.up1 = nn.Conv2d(c1, c0 * 4, 3, padding=1)
        self.dec0 = nn.Conv2d(c0, c0, 3, padding=1)
        self.out = nn.Conv2d(c0, 3, 3, padding=1)
        nn.init.zeros_(self.out.weight)  # start as the identity (output = input)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        f0 = F.leaky_relu(self.enc0(x), 0.1)
        f1 = F.leaky_relu(self.enc1b(F.leaky_relu(self.enc1(f0), 0.1)), 0.1)
        f2 = F.leaky_relu(self.enc2(f1), 0.1)
        h = f2
        for blk in self.blocks:
            h = blk(h, cond)
        h = self.body_conv(self.body_sft(h, cond)) + f2
        u = F.pixel_shuffle(self.up2(h), 2) + f1
        u = F.leaky_relu(self.dec1(F.leaky_relu(u, 0.1)), 0.1)
        u = F.pixel_shuffle(self.up1(u), 2) + f0
        u = F.leaky_relu(self.dec0(F.leaky_relu(u, 0.1)), 0.1)
        return self.out(u)


class SFTNet(nn.Module):
    """SFT-net engine. ``forward(x)``: ``(N, 3, H, W)`` RGB [0, 1], H, W multiples of 4 → same shape, [0, 1]
    (the clamp is part of the trained function: :meth:`restore`, whose output the trainer's losses see)."""

    multiple_of: int = 4
    #: Context per tile side (px). Tiled-vs-whole PSNR of the shipped weights at 1680x1120, tile 768
    #: (bench/bench_tiling.py --overlaps): 82.7/83.1/83.1/84.9/82.2 dB at 32/48/64/96/160 px: flat, so the
    #: context is not what limits agreement (γ's channel factor pools over the whole tile); 48 px cuts the
    #: tiling overhead of 160 px.
    receptive_field: int = 48
    #: Peak RSS growth of a whole-image fp32 forward on CPU with the tuned allocator, bytes per input pixel
    #: (measured 559 at 0.6-2.1 MP by bench/bench_engines.py --sections bpp, plus ~10%); tile='auto' uses it.
    bytes_per_pixel: int = 620
    safe_precisions: tuple[str, ...] = ("fp32", "bf16", "fp16")

    def __init__(self, ch: int = 64, n_blocks: int = 8, cond_ch: int = 32, map_ch: int = 32,
                 map_blocks: int = 4) -> None:
        super().__init__()
        self.dme = DefocusMapNet(map_ch, map_blocks)
        self.cond = ConditionNet(cond_ch)
        self.deblur = DeblurNet(ch, n_blocks, cond_ch)

    def map_lowres(self, x: torch.Tensor) -> torch.Tensor:
        """Unsigned CoC radius (px) at 1/4 resolution, ``(N, 1, H/4, W/4)``; H, W multiples of 4."""
        return self.dme(x)

    def restore(self, x: torch.Tensor, map_lowres: torch.Tensor) -> torch.Tensor:
        """Deblur ``x`` (H, W multiples of 4) given a 1/4-resolution map (px) → clamped [0, 1] image."""
        return (x + self.deblur(x, self.cond(map_lowres))).clamp(0, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Deblur ``x`` ``(N, 3, H, W)`` RGB [0, 1], H, W multiples of 4 → same shape, clamped to [0, 1]."""
        return self.restore(x, self.map_lowres(x))

    def set_pool_window(self, cells: int | None) -> None:
        """Local (TLC) pooling of every SFT layer's channel factor over ``cells``² cells of the 1/4-resolution
        grid (``cells`` = training patch / 4 mimics training), or ``None`` for global pooling."""
        for m in self.modules():
            if isinstance(m, DecomposedSFT):
                m.pool_window = cells

    def defocus_map(self, x: torch.Tensor) -> torch.Tensor:
        """Unsigned CoC radius in px of ``x`` (H, W multiples of 4; the runtime pads other sizes): ``(N, 1, H, W)``
        float (bilinear from 1/4 resolution)."""
        return F.interpolate(self.map_lowres(x), size=x.shape[-2:], mode="bilinear", align_corners=False)
