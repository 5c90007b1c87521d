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

Two implementations of the one definition: :func:`lowpass`/:func:`lock_tone` on torch tensors (differentiable:
the trainers' losses) and :func:`lowpass_np`/:func:`lock_tone_np` on numpy ``(H, W, C)`` arrays (inference,
every backend, no torch). ``tests/test_tone.py`` pins them equal to 1e-5 on random images of odd sizes.
Importing this module imports numpy only; the torch functions import torch.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    import torch


DEFAULT_SIGMA = 32.0
"""σ (px) when the lock is asked for and the weights name none: 2× the largest blur radius of training."""


def _radius(sigma: float) -> int:
    """Half-width of the Gaussian kernel of ``sigma`` px: ``ceil(3σ)``, at least 1."""
    return max(1, int(math.ceil(3 * sigma)))


def _gauss1d(sigma: float, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    import torch

    r = _radius(sigma)
    x = torch.arange(-r, r + 1, device=device, dtype=dtype)
    w = torch.exp(-(x * x) / (2 * sigma * sigma))
    return w / w.sum()


def lowpass(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian low-pass of ``x`` ``(N, C, H, W)`` with standard deviation ``sigma`` px (replicate borders).

    Pools by ``f = max(1, floor(σ / 4))`` first, filters with ``σ / f`` there and upsamples bilinearly to
    ``(H, W)``; returns the same shape and dtype as ``x``."""
    import torch.nn.functional as F

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


def _gauss1d_np(sigma: float) -> np.ndarray:
    """The kernel of :func:`_gauss1d` as float32 numpy ``(2r + 1,)``, summing to 1."""
    r = _radius(sigma)
    x = np.arange(-r, r + 1, dtype=np.float32)
    w = np.exp(-(x * x) / np.float32(2 * sigma * sigma))
    return w / w.sum()


def _avg_pool_np(x: np.ndarray, f: int) -> np.ndarray:
    """``(H, W, C)`` → ``(ceil(H/f), ceil(W/f), C)`` means of ``f × f`` blocks; a block cut by the border is the
    mean of its pixels inside (``torch.nn.functional.avg_pool2d(x, f, ceil_mode=True)``)."""
    import cv2

    h, w, c = x.shape
    sh, sw = -(-h // f), -(-w // f)
    exact = (sh * f, sw * f) == (h, w)
    xp = x if exact else np.pad(x, ((0, sh * f - h), (0, sw * f - w), (0, 0)))
    # OpenCV's area resize by a whole factor is the block mean (zeros included where padded)
    y = cv2.resize(np.ascontiguousarray(xp), (sw, sh), interpolation=cv2.INTER_AREA).reshape(sh, sw, c)
    if not exact:  # the padded blocks: mean of the pixels inside only
        nh = np.minimum(f, h - np.arange(sh) * f).astype(np.float32)
        nw = np.minimum(f, w - np.arange(sw) * f).astype(np.float32)
        y *= np.float32(f * f) / (nh[:, None, None] * nw[None, :, None])
    return y


def _blur_np(x: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian of ``sigma`` px with replicate borders (OpenCV) of a float ``(h, w, C)`` array."""
    import cv2

    k = _gauss1d_np(sigma)
    planes = [cv2.sepFilter2D(np.ascontiguousarray(x[..., i]), cv2.CV_32F, k, k, borderType=cv2.BORDER_REPLICATE)
              for i in range(x.shape[2])]
    return np.stack(planes, axis=-1)


def _upsample_bilinear_np(x: np.ndarray, h: int, w: int) -> np.ndarray:
    """``(sh, sw, C)`` → ``(h, w, C)`` bilinear with half-pixel centres, source coordinates clamped at the border
    (OpenCV's linear resize = ``torch.nn.functional.interpolate(..., mode="bilinear", align_corners=False)``)."""
    import cv2

    return cv2.resize(np.ascontiguousarray(x), (w, h), interpolation=cv2.INTER_LINEAR).reshape(h, w, x.shape[2])


def lowpass_np(x: np.ndarray, sigma: float) -> np.ndarray:
    """:func:`lowpass` of a float ``(H, W, C)`` array, without torch: the same average pool by
    ``f = max(1, floor(σ / 4))``, separable Gaussian of ``σ / f`` with replicate borders (OpenCV) and bilinear
    upsampling with half-pixel centres (``align_corners=False``). Returns float32 ``(H, W, C)``."""
    x = np.asarray(x, dtype=np.float32)
    if sigma <= 0:
        return x
    h, w, _ = x.shape
    f = max(1, int(sigma // 4))
    if f == 1:
        return _blur_np(x, sigma)
    return _upsample_bilinear_np(_blur_np(_avg_pool_np(x, f), sigma / f), h, w)


def lock_tone_np(
    out: np.ndarray, inp: np.ndarray, sigma: float, clamp: bool = True, *, in_place: bool = False
) -> np.ndarray:
    """:func:`lock_tone` of float ``(H, W, C)`` arrays (``out`` restored, ``inp`` its input, values in [0, 1]),
    without torch: ``out + lowpass_np(inp − out)``, float32 ``(H, W, C)``, clamped to [0, 1] when ``clamp``.

    The average pool being linear, the pooled difference is taken as ``pool(inp) − pool(out)`` and the low-pass
    is added channel by channel: no full-size temporary image (each costs page faults on a fresh photo).

    Args:
        in_place: write the result into ``out`` (a float32 array) and return it.
    """
    if out.shape != inp.shape:
        raise ValueError(f"lock_tone: expected out and inp of one shape, got {tuple(out.shape)} and {tuple(inp.shape)}")
    if in_place and out.dtype != np.float32:
        raise ValueError(f"lock_tone_np: in_place needs a float32 out, got {out.dtype}")
    y = out if in_place else np.array(out, dtype=np.float32)
    h, w, c = y.shape
    f = max(1, int(sigma // 4))
    if sigma <= 0:
        pass
    elif f == 1:
        y += _blur_np(np.asarray(inp, dtype=np.float32) - y, sigma)
    else:
        import cv2

        low = _blur_np(_avg_pool_np(np.asarray(inp, dtype=np.float32), f) - _avg_pool_np(y, f), sigma / f)
        for i in range(c):
            y[..., i] += cv2.resize(np.ascontiguousarray(low[..., i]), (w, h), interpolation=cv2.INTER_LINEAR)
    return np.clip(y, 0.0, 1.0, out=y) if clamp else y


__all__ = ["lowpass", "lock_tone", "lowpass_np", "lock_tone_np", "DEFAULT_SIGMA"]
