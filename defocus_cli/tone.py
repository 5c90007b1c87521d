"""Tone lock: keep a restored image's low frequencies (local brightness and colour) equal to the input's.

Defocus moves light by at most the blur radius, so deblurring only has to change detail at that scale; a
network that also shifts brightness or colour over large areas (trained on data whose tone differs between
input and target) changes what the photographer exposed for. :func:`lock_tone` removes that shift:

``out + G_σ(inp − out)``, with ``G_σ`` a Gaussian low-pass of standard deviation ``σ`` px (computed on an
average-pooled copy and upsampled bilinearly, so its cost is a small fraction of a network forward).

It is a pure function of the two whole images (never applied per tile, so tiling stays exact), is
differentiable (trainers put it inside the loss, so the network learns the detail it contributes), and is
the identity when ``out == inp``. Weights ask for it through their ``tone_lock_sigma`` metadata (px of the
image the network sees); weights without it (official checkpoints) run unchanged.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


DEFAULT_SIGMA = 32.0
"""σ (px) when the lock is asked for and the weights name none: 2× the largest blur radius of training."""


def _gauss1d(sigma: float, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    r = max(1, int(math.ceil(3 * sigma)))
    x = torch.arange(-r, r + 1, device=device, dtype=dtype)
    w = torch.exp(-(x * x) / (2 * sigma * sigma))
    return w / w.sum()


def lowpass(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian low-pass of ``x`` ``(N, C, H, W)`` with standard deviation ``sigma`` px (replicate borders).

    Pools by ``f = max(1, floor(σ / 4))`` first, filters with ``σ / f`` there and upsamples bilinearly to
    ``(H, W)``; returns the same shape and dtype as ``x``."""
    if sigma <= 0:
        return x
    n, c, h, w = x.shape
    f = max(1, int(sigma // 4))
    small = F.avg_pool2d(x, f, ceil_mode=True) if f > 1 else x
    s = sigma / f
    k = _gauss1d(s, x.device, x.dtype)
    r = k.numel() // 2
    sh, sw = small.shape[-2:]
    y = small.reshape(n * c, 1, sh, sw)
    y = F.pad(y, (r, r, 0, 0), mode="replicate") if sw > 1 else y.expand(-1, -1, -1, 1 + 2 * r)
    y = F.conv2d(y, k.view(1, 1, 1, -1))
    y = F.pad(y, (0, 0, r, r), mode="replicate") if sh > 1 else y.expand(-1, -1, 1 + 2 * r, -1)
    y = F.conv2d(y, k.view(1, 1, -1, 1)).reshape(n, c, sh, sw)
    if f > 1:
        y = F.interpolate(y, size=(h, w), mode="bilinear", align_corners=False)
    return y


def lock_tone(out: torch.Tensor, inp: torch.Tensor, sigma: float, clamp: bool = True) -> torch.Tensor:
    """``out`` with its low frequencies (scale > ``sigma`` px) replaced by those of ``inp``.

    Args:
        out: restored image ``(N, C, H, W)``, values in [0, 1].
        inp: the input it was restored from, same shape.
        sigma: low-pass standard deviation in px (≥ 3× the largest blur radius leaves deblurring intact).
        clamp: clamp the result to [0, 1].
    """
    if out.shape != inp.shape:
        raise ValueError(f"lock_tone: expected out and inp of one shape, got {tuple(out.shape)} and {tuple(inp.shape)}")
    y = out + lowpass(inp - out, sigma)
    return y.clamp(0, 1) if clamp else y


__all__ = ["lowpass", "lock_tone", "DEFAULT_SIGMA"]
