"""DefocusGAN generator (Zhai et al., AAAI 2023, "Learnable Blur Kernel for Single-Image Defocus Deblurring
in the Wild"), re-implemented from the paper and the architecture notes; checkpoint layout identical to the
released generator (468 tensors, 4,934,531 parameters, including the two unused convs ``connect``/``connect2``).

Structure (64 channels throughout):

* ``head``: conv3x3 (3→64) + ReLU on the image (the official net receives 6 channels, the image twice or
  image + defocus map in training, but only channels 0-2 reach the convolutions).
* A "defocus-map guide block" (DGB) of four branches with ``kernel_size`` list ``[1, 4, 7, 10]``:
  branch 0 is a 1x1 conv + ReLU per stage (stays at full resolution), branches 1-3 use a residual group
  of ``k // 3`` RCABs (1, 2, 3) + a conv per stage, followed by max-pool x2 (stages 1-4) or nearest
  upsample x2 (stages 5-8). The stage modules ``layer1..layer8`` are shared by three paths:

  - full resolution (8 stages, U-shaped with skips o2→L7 and o1→L8) → ``T1``;
  - 1/4 resolution on ``D4 = unetdown4(T1)`` (stages 1, 2, 7, 8) → ``T4``;
  - 1/8 resolution on ``D8 = unetdown2(T4)`` (stages 1, 7) → ``T8 = sum + D8``.

  Every stage after the first also receives the path input average-pooled to its resolution.
* Fusion: ``U2 = unetup2(T8, D4)`` (bilinear x2 align_corners, concat, double conv 128→64),
  ``U4 = unetup4(T4 + U2)`` (transposed conv, double conv, transposed conv → full resolution),
  output ``sigmoid(tail_hard(head + U4 + T1))``.

Colour order: the released weights were trained on **BGR** images; :meth:`DefocusGAN.forward` takes RGB
and flips internally. Inference always takes the mask-free path (the training curriculum counter at its
final value); :meth:`DefocusGAN.forward_train` exposes the blur-mask curriculum for trainers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "CALayer",
    "RCAB",
    "ResidualGroup",
    "DoubleConv",
    "BranchStages",
    "DefocusGAN",
    "blur_masks",
    "curriculum_weight",
    "flip_rgb_bgr",
]

#: CoC radius thresholds (px) that split the defocus map between the four branches in training.
MASK_THRESHOLDS: tuple[float, ...] = (0.0, 1.9, 4.2, 6.2, math.inf)
#: Iterations over which the blur-mask guidance is annealed away in training.
ANNEAL_ITERS: float = 2e4


# --------------------------------------------------------------------------------------------------
# building blocks (layout = the official state-dict names)


def _conv(cin: int, cout: int, k: int, bias: bool = True) -> nn.Conv2d:
    """k×k convolution with 'same' padding (k // 2)."""
    return nn.Conv2d(cin, cout, k, padding=k // 2, bias=bias)


class CALayer(nn.Module):
    """Channel attention: global average pool → 1x1 (C→C/16) → ReLU → 1x1 (C/16→C) → sigmoid, scales x."""

    def __init__(self, channels: int = 64, reduction: int = 16) -> None:
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.conv_du = nn.Sequential(
            nn.Conv2d(channels, channels // reduction, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels // reduction, channels, 1),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.conv_du(self.avg_pool(x))


class RCAB(nn.Module):
    """Residual channel-attention block (RCAN): conv3x3 → ReLU → conv3x3 → CA, plus the input."""

    def __init__(self, channels: int = 64) -> None:
        super().__init__()
        self.body = nn.Sequential(
            _conv(channels, channels, 3), nn.ReLU(inplace=True), _conv(channels, channels, 3), CALayer(channels)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + x


class ResidualGroup(nn.Module):
    """``n`` RCABs followed by a conv3x3, plus the group input."""

    def __init__(self, channels: int, n_blocks: int) -> None:
        super().__init__()
        self.body = nn.Sequential(*[RCAB(channels) for _ in range(n_blocks)], _conv(channels, channels, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + x


class DoubleConv(nn.Module):
    """conv3x3 (no bias) → ReLU → conv3x3 (no bias) → ReLU."""

    def __init__(self, cin: int, cout: int, mid: int | None = None) -> None:
        super().__init__()
        mid = cout if mid is None else mid
        self.double_conv = nn.Sequential(
            _conv(cin, mid, 3, bias=False), nn.ReLU(inplace=True), _conv(mid, cout, 3, bias=False), nn.ReLU(inplace=True)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.double_conv(x)


class _Down(nn.Module):
    """Max-pool by ``factor`` then :class:`DoubleConv` (state-dict name ``maxpool_conv``)."""

    def __init__(self, channels: int, factor: int) -> None:
        super().__init__()
        self.maxpool_conv = nn.Sequential(nn.MaxPool2d(factor), DoubleConv(channels, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.maxpool_conv(x)


class _UpBilinear(nn.Module):
    """Bilinear x2 (align_corners=True) of the coarse input, pad to the skip's size, concat [skip, up], DoubleConv."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = DoubleConv(2 * channels, channels, channels)

    def forward(self, coarse: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        up = F.interpolate(coarse, scale_factor=2, mode="bilinear", align_corners=True)
        dy, dx = skip.shape[-2] - up.shape[-2], skip.shape[-1] - up.shape[-1]
        if dy or dx:
            up = F.pad(up, [dx // 2, dx - dx // 2, dy // 2, dy - dy // 2])
        return self.conv(torch.cat([skip, up], dim=1))


class _UpTransposed(nn.Module):
    """Transposed conv 2x2/2 → DoubleConv → transposed conv 2x2/2 (x4 in total; state-dict name ``up``)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.up = nn.Sequential(
            nn.ConvTranspose2d(channels, channels, 2, stride=2),
            DoubleConv(channels, channels),
            nn.ConvTranspose2d(channels, channels, 2, stride=2),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(x)


def _branch_stage(channels: int, k: int, down: bool) -> nn.Sequential:
    """One stage of one DGB branch: ``k <= 1`` → 1x1 conv + ReLU (no resampling, ever);
    else ResidualGroup(k // 3 RCABs) then MaxPool2d(2) (``down``) or nearest Upsample x2."""
    if k <= 1:
        return nn.Sequential(nn.Conv2d(channels, channels, 1), nn.ReLU(inplace=True))
    resample: nn.Module = nn.MaxPool2d(2) if down else nn.Upsample(scale_factor=2, mode="nearest")
    return nn.Sequential(ResidualGroup(channels, k // 3), resample)


class BranchStages(nn.ModuleList):
    """``layerN``: stage N of every branch (index = branch)."""

    def __init__(self, channels: int, kernel_sizes: Sequence[int], down: bool) -> None:
        super().__init__([_branch_stage(channels, k, down) for k in kernel_sizes])


# --------------------------------------------------------------------------------------------------
# shared helpers


def flip_rgb_bgr(x: torch.Tensor) -> torch.Tensor:
    """Reverse the channel order of ``(N, 3, H, W)`` (RGB ↔ BGR)."""
    return x.flip(1)


class _Pyramid:
    """Adaptive average pools of a path input, computed once per scale and shared by all branches."""

    def __init__(self, x: torch.Tensor) -> None:
        self.x = x
        self._cache: dict[tuple[int, int], torch.Tensor] = {tuple(x.shape[-2:]): x}  # type: ignore[dict-item]

    def at(self, ref: torch.Tensor) -> torch.Tensor:
        size = (int(ref.shape[-2]), int(ref.shape[-1]))
        p = self._cache.get(size)
        if p is None:
            p = F.adaptive_avg_pool2d(self.x, size)
            self._cache[size] = p
        return p


def curriculum_weight(iter_num: float) -> float:
    """Blur-mask guidance weight ``w = exp(-(2 * iter / 2e4) ** 2)`` (1 at the start, ~0 after 2e4 iterations)."""
    return math.exp(-((2.0 * iter_num / ANNEAL_ITERS) ** 2))


def blur_masks(defocus_map: torch.Tensor, thresholds: Sequence[float] = MASK_THRESHOLDS) -> list[torch.Tensor]:
    """Binary branch masks from a defocus map.

    Args:
        defocus_map: ``(N, C, H, W)`` CoC radius in px (sign ignored); the channel-wise max of |map| is used.
    Returns:
        ``len(thresholds) - 1`` float masks ``(N, 1, H, W)``: mask ``b`` is 1 where
        ``thresholds[b] <= blur < thresholds[b + 1]``.
    """
    blur = defocus_map.abs().amax(dim=1, keepdim=True)
    return [((blur >= lo) & (blur < hi)).to(defocus_map.dtype) for lo, hi in zip(thresholds[:-1], thresholds[1:])]


# --------------------------------------------------------------------------------------------------
# the generator


class DefocusGAN(nn.Module):
    """DefocusGAN generator, engine contract (see :mod:`defocus_cli.archs`).

    ``forward(x)``: ``x`` ``(N, 3, H, W)`` RGB float in [0, 1], H, W multiples of 16 → ``(N, 3, H, W)`` RGB in
    (0, 1). Internally: RGB→BGR, core network, BGR→RGB; the engine (:class:`defocus_cli.restorer.Restorer`) pads
    other sizes at the bottom/right and crops back.
    """

    #: the core network halves the size four times.
    multiple_of: int = 16
    #: Context (px per side) a tile needs. The theoretical receptive field is several hundred px per side
    #: (1/16 bottlenecks in three chained paths) and channel attention pools globally, but the response decays
    #: fast: with the official-layout test weights, 99.0% of the gradient mass of an output pixel lies within
    #: 64 px and 99.8% within 128 px (384x384 input, Chebyshev radius). Re-measure with trained weights.
    receptive_field: int = 128
    #: Peak RSS growth of a whole-image fp32 forward on CPU with the tuned allocator, bytes per input pixel
    #: (slope 3009 at 0.6-2.1 MP by bench/bench_engines.py --sections bpp; 2770 in a 1680x1120 run);
    #: tile="auto" uses it.
    bytes_per_pixel: int = 2900
    #: CPU autocast vs fp32 on the 96x112 test vector (official-layout test weights): fp16 max |Δ| 0.003,
    #: bf16 0.023 (mean 0.0014); outputs stay finite (sigmoid-bounded).
    safe_precisions: tuple[str, ...] = ("fp32", "bf16", "fp16")

    def __init__(self, channels: int = 64, kernel_sizes: Sequence[int] = (1, 4, 7, 10)) -> None:
        super().__init__()
        c = channels
        self.kernel_sizes = tuple(kernel_sizes)
        # registration order == official state_dict order
        self.head = nn.Sequential(_conv(3, c, 3), nn.ReLU(inplace=True))
        self.tail_hard = nn.Sequential(_conv(c, 3, 3), nn.Sigmoid())
        self.connect = _conv(c, c, 3)  # present in the released checkpoint, unused by the network
        self.connect2 = _conv(c, c, 3)  # present in the released checkpoint, unused by the network
        self.unetdown4 = _Down(c, 4)
        self.unetdown2 = _Down(c, 2)
        self.unetup2 = _UpBilinear(c)
        self.unetup4 = _UpTransposed(c)
        for i in range(1, 9):
            self.add_module(f"layer{i}", BranchStages(c, self.kernel_sizes, down=i <= 4))

    # ---- the three paths over the shared stage modules ----------------------------------------------

    def _stage(self, i: int, b: int) -> nn.Module:
        return getattr(self, f"layer{i}")[b]

    def _branch_full(self, b: int, x: torch.Tensor, pyr: _Pyramid) -> torch.Tensor:
        L = self._stage
        o1 = L(1, b)(x)
        o2 = L(2, b)(pyr.at(o1) + o1)
        o3 = L(3, b)(pyr.at(o2) + o2)
        o4 = L(4, b)(pyr.at(o3) + o3)
        o5 = L(5, b)(pyr.at(o4) + o4)
        del o3, o4
        o6 = L(6, b)(pyr.at(o5) + o5)
        del o5
        o7 = L(7, b)(pyr.at(o6) + o6 + o2)
        del o6, o2
        return L(8, b)(pyr.at(o7) + o7 + o1)

    def _branch_quarter(self, b: int, x: torch.Tensor, pyr: _Pyramid) -> torch.Tensor:
        L = self._stage
        a1 = L(1, b)(x)
        a2 = L(2, b)(pyr.at(a1) + a1)
        a7 = L(7, b)(pyr.at(a2) + a2)
        del a2
        return L(8, b)(pyr.at(a7) + a7 + a1)

    def _branch_eighth(self, b: int, x: torch.Tensor, pyr: _Pyramid) -> torch.Tensor:
        L = self._stage
        c1 = L(1, b)(x)
        return L(7, b)(pyr.at(c1) + c1)

    def _path(self, fn, x: torch.Tensor, weights: Sequence[torch.Tensor] | None) -> torch.Tensor:  # noqa: ANN001
        """Sum of ``fn`` over the branches; with ``weights`` each branch output is multiplied by its weight map."""
        pyr = _Pyramid(x)
        total: torch.Tensor | None = None
        for b in range(len(self.kernel_sizes)):
            y = fn(b, x, pyr)
            if weights is not None:
                y = y * weights[b]
            total = y if total is None else total + y
        assert total is not None
        return total

    def core(self, x6: torch.Tensor, iter_num: float = 1e6) -> torch.Tensor:
        """The official network on its own terms.

        Args:
            x6: ``(N, 6, H, W)``, H and W multiples of 16; channels 0-2 the **BGR** image in [0, 1], channels
                3-5 the image again (inference) or the defocus map in px (training, see :meth:`forward_train`).
            iter_num: training-curriculum counter; ``>= 2e4`` (default) = plain branch sums (inference).
        Returns:
            ``(N, 3, H, W)`` BGR in (0, 1).
        """
        img = x6[:, :3]
        w = curriculum_weight(iter_num) if iter_num < ANNEAL_ITERS else 0.0
        masks = blur_masks(x6[:, 3:]) if w > 0.0 else None

        def weights_at(ref: torch.Tensor) -> list[torch.Tensor] | None:
            if masks is None:
                return None
            return [
                (F.interpolate(m, size=ref.shape[-2:], mode="nearest") if m.shape[-2:] != ref.shape[-2:] else m) * w
                + (1.0 - w)
                for m in masks
            ]

        x = self.head(img)
        t1 = self._path(self._branch_full, x, weights_at(x))
        d4 = self.unetdown4(t1)
        t4 = self._path(self._branch_quarter, d4, weights_at(d4))
        d8 = self.unetdown2(t4)
        t8 = self._path(self._branch_eighth, d8, weights_at(d8)) + d8
        u2 = self.unetup2(t8, d4)
        del t8, d8, d4
        u4 = self.unetup4(t4 + u2)
        del t4, u2
        return self.tail_hard(x + u4 + t1)

    # ---- public entry points ------------------------------------------------------------------------

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Deblur ``x`` ``(N, 3, H, W)`` RGB [0, 1], H, W multiples of 16 (the engine pads other sizes) →
        ``(N, 3, H, W)`` RGB (0, 1) (mask-free path)."""
        bgr = flip_rgb_bgr(x)
        return flip_rgb_bgr(self.core(torch.cat([bgr, bgr], dim=1)))

    def forward_train(self, x: torch.Tensor, defocus_map: torch.Tensor, iter_num: float) -> torch.Tensor:
        """Training forward with the blur-mask curriculum (paper §"DefocusGAN Generator", notes §2.2).

        Args:
            x: ``(N, 3, H, W)`` RGB [0, 1]; H, W multiples of 16 (training crops, no padding done here).
            defocus_map: ``(N, 1 or 3, H, W)`` CoC radius in px (e.g. the map net's output; sign ignored).
            iter_num: training iteration. While ``iter_num < 2e4`` each branch output of every path is
                multiplied by ``mask_b * w + (1 - w)``, ``w = exp(-(2 iter / 2e4)^2)``, mask_b = 1 where the
                map's max |radius| falls in ``[0, 1.9) [1.9, 4.2) [4.2, 6.2) [6.2, inf)`` for branch b
                (nearest-resized to each resolution); afterwards the plain sum (= inference) is used.
        Returns:
            ``(N, 3, H, W)`` RGB in (0, 1).
        """
        if x.shape[-2] % self.multiple_of or x.shape[-1] % self.multiple_of:
            raise ValueError(f"forward_train needs H, W multiples of {self.multiple_of}; got {tuple(x.shape[-2:])}")
        m = defocus_map
        if m.shape[1] == 1:
            m = m.expand(-1, 3, -1, -1)
        out = self.core(torch.cat([flip_rgb_bgr(x), m.to(x.dtype)], dim=1), iter_num=iter_num)
        return flip_rgb_bgr(out)
