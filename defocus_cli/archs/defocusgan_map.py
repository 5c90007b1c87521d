"""Defocus-map network of the learnable-blur-kernel paper (Zhai et al., AAAI 2023) and its learnable
blur-kernel bank, re-implemented from the paper and the architecture notes (§2.4). Checkpoint layout identical
to the released map network (324 tensors, 3,306,755 parameters).

:class:`DefocusMapNet` is the generator's multi-branch U-shaped block without the 1/4 and 1/8 paths:
head conv3x3 (6→64) + ReLU on ``cat(left, right)`` (BGR views), four branches with ``kernel_size`` list
``[1, 4, 4, 7]`` (1x1 conv; 1 RCAB; 1 RCAB; 2 RCABs per stage), eight stages each with the skips
o3→L6, o2→L7, o1→L8 (the generator has only the last two) and the pooled head output added before every
stage after the first, output
``tail_hard(head + sum of branches)`` (conv3x3 64→3, no activation) clamped to ±24: a signed circle-of-
confusion radius per pixel and channel, in px.

:class:`BlurKernelBank` is the trainable re-blurring bank used to train the map network without ground truth.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from defocus_cli.archs._dpkernels import dp_kernels, kernel_size
from defocus_cli.archs.defocusgan import BranchStages, _conv, _Pyramid, flip_rgb_bgr

__all__ = ["DefocusMapNet", "BlurKernelBank", "COC_LIMIT"]

#: the official network clamps its output to ±24 px.
COC_LIMIT: float = 24.0


class DefocusMapNet(nn.Module):
    """Dual-pixel defocus-map network (task ``map``).

    ``forward(left, right)``: each ``(N, 3, H, W)`` RGB [0, 1], H, W multiples of 16 (the runtime pads) → ``(N, 1, H, W)`` signed CoC
    radius in px of the input, in [-24, 24]: the **mean over the three output channels** of the official
    3-channel map (the official net predicts one radius per colour channel; they agree closely and the
    mean is less noisy). Sign: the official convention of the released weights (the learned map's sign is
    whatever the reblurring bank's positive/negative kernels were initialised to; see :class:`BlurKernelBank`).
    """

    multiple_of: int = 16
    #: context px per side a tile needs: with the official-layout test weights 99.3% of an output pixel's
    #: gradient mass lies within 64 px and 99.8% within 96 px (320x320 input).
    receptive_field: int = 96
    #: CPU autocast vs fp32 on the test vector (radius in px): fp16 max |Δ| 0.02 px, bf16 0.19 px (mean 0.03).
    safe_precisions: tuple[str, ...] = ("fp32", "bf16", "fp16")

    def __init__(self, channels: int = 64, kernel_sizes: Sequence[int] = (1, 4, 4, 7)) -> None:
        super().__init__()
        c = channels
        self.kernel_sizes = tuple(kernel_sizes)
        self.head = nn.Sequential(_conv(6, c, 3), nn.ReLU(inplace=True))
        self.tail_hard = nn.Sequential(_conv(c, 3, 3))
        for i in range(1, 9):
            self.add_module(f"layer{i}", BranchStages(c, self.kernel_sizes, down=i <= 4))

    def _branch(self, b: int, x: torch.Tensor, pyr: _Pyramid) -> torch.Tensor:
        def L(i: int) -> nn.Module:
            return getattr(self, f"layer{i}")[b]

        o1 = L(1)(x)
        o2 = L(2)(pyr.at(o1) + o1)
        o3 = L(3)(pyr.at(o2) + o2)
        o4 = L(4)(pyr.at(o3) + o3)
        o5 = L(5)(pyr.at(o4) + o4)
        del o4
        o6 = L(6)(pyr.at(o5) + o5 + o3)  # unlike the generator, the map net also skips o3 → stage 6
        del o5, o3
        o7 = L(7)(pyr.at(o6) + o6 + o2)
        del o6, o2
        return L(8)(pyr.at(o7) + o7 + o1)

    def forward_official(self, left_bgr: torch.Tensor, right_bgr: torch.Tensor) -> torch.Tensor:
        """The official network: ``(N, 3, H, W)`` BGR views in [0, 1], H, W multiples of 16 →
        ``(N, 3, H, W)`` signed CoC radius per channel, clamped to [-24, 24]."""
        x = self.head(torch.cat([left_bgr, right_bgr], dim=1))
        pyr = _Pyramid(x)
        total = x
        for b in range(len(self.kernel_sizes)):
            total = total + self._branch(b, x, pyr)
        return self.tail_hard(total).clamp(-COC_LIMIT, COC_LIMIT)

    def forward(self, left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
        """Map contract: ``left``, ``right`` ``(N, 3, H, W)`` RGB [0, 1], H, W multiples of 16 (the runtime,
        :func:`defocus_cli.runtime.run_engine`, pads other sizes and crops back) → ``(N, 1, H, W)`` signed CoC
        radius (px), the mean of the official three channels."""
        if left.shape != right.shape:
            raise ValueError(f"left and right views differ in shape: {tuple(left.shape)} vs {tuple(right.shape)}")
        out = self.forward_official(flip_rgb_bgr(left), flip_rgb_bgr(right))
        return out.mean(dim=1, keepdim=True)


class BlurKernelBank(nn.Module):
    """Learnable defocus blur-kernel bank ("GemorestructNet" role) for training the map network unsupervised.

    ``levels`` radius levels r = 0 .. levels-1 px, each with a positive- and a negative-CoC single-channel
    kernel, all zero-padded to the size of the largest (57x57 for 25 levels), initialised from Abuolaim et al.'s Butterworth model
    (:func:`defocus_cli.archs._dpkernels.dp_kernels` with order 3, cut-off factor 2.5, β 0.1, smoothing 7)
    and left trainable. Level 0 is the identity (delta) kernel. The positive bank uses the *left* DP kernel
    of +r and the negative bank the left DP kernel of -r when ``view="left"`` (the right kernel when
    ``"right"``), or the combined kernel for both when ``view="combined"`` (sign-blind).

    Orientation: the re-blur is a true **convolution** with the DP kernel (point-spread function), the same
    operation the synthetic DP generator (:func:`defocus_cli.data.synth.layered_dp_blur`, FFT convolution)
    uses, so ``view="left"`` reproduces the generator's *left* view and ``view="right"`` its right view.
    ``F.conv2d`` is a cross-correlation, so the parameters ``pos``/``neg`` hold the conv2d weights, i.e. each
    DP kernel **rotated by 180°** (:meth:`kernel` gives the kernel itself). A bank's state dict therefore equals
    the one the earlier, unflipped implementation built for the *other* view (same tensors, ``"left"`` ↔
    ``"right"``), which is how that implementation's trainer compensated (it built its left-view bank with
    ``view="right"``).

    ``forward(sharp, coc)``: ``sharp`` ``(N, C, H, W)``, ``coc`` ``(N, 1, H, W)`` signed radius in px →
    ``(N, C, H, W)`` re-blurred image: per pixel, the two nearest radius levels of the sign's bank,
    blended linearly by the fractional radius (|coc| clamped to ``levels - 1``).
    """

    def __init__(
        self,
        levels: int = 25,
        view: str = "combined",
        order: float = 3,
        cutoff_factor: float = 2.5,
        beta: float = 0.1,
        smooth: float = 7,
    ) -> None:
        super().__init__()
        if view not in ("left", "right", "combined"):
            raise ValueError(f"view must be left, right or combined; got {view!r}")
        self.levels = levels
        size = kernel_size(levels - 1, smooth)
        pos = np.zeros((levels, 1, size, size), np.float32)
        neg = np.zeros_like(pos)
        self.view = view
        idx = {"combined": 0, "left": 1, "right": 2}[view]
        for r in range(levels):
            for bank, sign in ((pos, 1.0), (neg, -1.0)):
                k = dp_kernels(sign * r, order, cutoff_factor, beta, smooth)[idx]
                o = (size - k.shape[0]) // 2
                # stored rotated by 180°: conv2d correlates, so this makes forward() convolve with ``k``
                bank[r, 0, o : o + k.shape[0], o : o + k.shape[1]] = k[::-1, ::-1]
        self.pos = nn.Parameter(torch.from_numpy(pos))
        self.neg = nn.Parameter(torch.from_numpy(neg))

    def kernel(self, level: int, negative: bool = False) -> torch.Tensor:
        """The blur kernel (point-spread function) that :meth:`forward` convolves with at radius ``level`` of the
        positive (or ``negative``) bank: ``(K, K)``, the stored conv2d weight rotated back by 180°."""
        return (self.neg if negative else self.pos)[level, 0].flip(-2, -1)

    def forward(self, sharp: torch.Tensor, coc: torch.Tensor) -> torch.Tensor:
        n, c, h, w = sharp.shape
        size = self.pos.shape[-1]
        x = F.pad(sharp.reshape(n * c, 1, h, w), [size // 2] * 4, mode="replicate")
        # (N*C, levels, H, W) per bank; blend in place of a per-pixel kernel gather. The weights are the kernels
        # rotated by 180° (see __init__), so these correlations are convolutions with the DP kernels.
        blur_pos = F.conv2d(x, self.pos).reshape(n, c, self.levels, h, w)
        blur_neg = F.conv2d(x, self.neg).reshape(n, c, self.levels, h, w)
        r = coc.abs().clamp(max=self.levels - 1)
        lo = r.floor().clamp(max=self.levels - 2).long()
        frac = (r - lo.to(r.dtype)).unsqueeze(2)  # (N,1,1,H,W)
        lo = lo.unsqueeze(2).expand(n, c, 1, h, w)
        pick = torch.where((coc >= 0).unsqueeze(2), blur_pos, blur_neg)
        a = pick.gather(2, lo)
        b = pick.gather(2, lo + 1)
        return (a * (1 - frac) + b * frac).squeeze(2)
