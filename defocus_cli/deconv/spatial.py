"""Spatially varying deconvolution driven by a defocus (CoC radius) map.

The map's radius range is split into levels (at most ``max_levels``, evenly spaced, at least ``min_step`` px
apart). The whole image is deconvolved once per level with that level's PSF; each output pixel is the linear
interpolation between the two levels nearest to its own radius (hat-function weights, so neighbouring regions
blend without seams). Levels below :data:`~defocus_cli.deconv.psf.MIN_RADIUS` are the input itself.
Depth-edge taper (on by default): a level deconvolves ``mask·image + (1 - mask)·(image * psf)``, ``mask`` = the
pixels that use it, so it never inverts its PSF on content blurred differently (which rings across depth edges;
two-region test r = 2 | 6 px: −4.5 dB → +2.1 dB in the edge band, bench/deconv_two_region.py).
Memory: the input, one level's (tapered) input and result and the running sum (levels are accumulated, not
stored).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

import numpy as np

from defocus_cli.deconv.psf import make_psf

__all__ = ["radius_levels", "deconvolve_varying"]

log = logging.getLogger(__name__)

DeconvFn = Callable[[np.ndarray, np.ndarray], np.ndarray]


def radius_levels(radius: np.ndarray, *, max_levels: int = 16, min_step: float = 0.5) -> np.ndarray:
    """Evenly spaced radius levels covering ``[min(radius), max(radius)]``: float64, 1 to ``max_levels`` values."""
    lo, hi = float(radius.min()), float(radius.max())
    if hi - lo < 1e-6:
        return np.array([lo])
    n = int(min(max_levels, max(2, math.ceil((hi - lo) / min_step) + 1)))
    return np.linspace(lo, hi, n)


def _tapered(image: np.ndarray, region: np.ndarray, psf: np.ndarray, sigma: float) -> np.ndarray:
    """``a·image + (1 - a)·(image * psf)`` with ``a`` = ``region`` (bool ``(H, W)``) blurred by a Gaussian of
    σ = ``sigma`` px (soft 0..1); the image itself where the region is everything or the PSF is a delta."""
    if psf.size == 1 or region.all():
        return image
    import cv2

    from defocus_cli.deconv._fourier import blur

    a = region.astype(np.float32)
    if sigma > 0:
        a = np.maximum(a, cv2.GaussianBlur(a, (0, 0), sigma, borderType=cv2.BORDER_REFLECT))
    if image.ndim == 3:
        a = a[..., None]
    return (a * image + (1.0 - a) * blur(image, psf)).astype(np.float32)


def deconvolve_varying(
    image: np.ndarray,
    radius: np.ndarray,
    fn: DeconvFn,
    *,
    kernel: str = "disc",
    max_levels: int = 16,
    min_step: float = 0.5,
    progress: Callable[[int, int], None] | None = None,
    taper: float | None = 0.0,
) -> np.ndarray:
    """Deconvolve ``image`` (H, W, C) [0, 1] where pixel (i, j) is blurred with radius ``radius[i, j]`` px.

    Args:
        image: float (H, W, C) in [0, 1].
        radius: float (H, W), CoC radius in px (its absolute value is used; NaNs count as 0).
        fn: ``fn(image, psf) -> (H, W, C)``, a uniform deconvolution (e.g. a ``functools.partial`` of
            :func:`~defocus_cli.deconv.wiener.wiener`).
        kernel: PSF family (see :func:`~defocus_cli.deconv.psf.make_psf`).
        progress: optional ``progress(done, total)`` callback, one call per level.
        taper: depth-edge taper (``None`` = off). Each level deconvolves ``a·image + (1 - a)·(image * psf)``
            instead of the image, where ``a`` is the mask of the pixels that use the level, blurred with a
            Gaussian of σ = ``taper`` × the level's radius: outside its own region the level sees content that
            is consistent with its PSF (blurred once more by it), so it rings neither there nor, through the
            inverse filter's reach, into its own region across the depth edge.
    Returns:
        float32 (H, W, C) in [0, 1].
    """
    if radius.shape != image.shape[:2]:
        raise ValueError(f"map {radius.shape} and image {image.shape[:2]} differ in size")
    r = np.nan_to_num(np.abs(radius.astype(np.float32)), nan=0.0, posinf=0.0)
    levels = radius_levels(r, max_levels=max_levels, min_step=min_step)
    log.info("deconvolving at %d radius levels %.2f..%.2f px", len(levels), levels[0], levels[-1])
    acc = np.zeros(image.shape, dtype=np.float32)
    for i, level in enumerate(levels):
        if len(levels) == 1:
            weight = np.ones_like(r)
        else:
            left = levels[i - 1] if i > 0 else -np.inf
            right = levels[i + 1] if i + 1 < len(levels) else np.inf
            weight = np.zeros_like(r)
            up = (r >= left) & (r <= level)
            down = (r > level) & (r <= right)
            weight[up] = 1.0 if i == 0 else (r[up] - left) / (level - left)
            weight[down] = 1.0 if i == len(levels) - 1 else (right - r[down]) / (right - level)
        if weight.any():
            psf = make_psf(kernel, float(level))
            src = image if taper is None else _tapered(image, weight > 0, psf, taper * float(level))
            out = fn(src, psf)
            acc += weight[..., None] * out if acc.ndim == 3 else weight * out
        if progress is not None:
            progress(i + 1, len(levels))
    return np.clip(acc, 0.0, 1.0).astype(np.float32)
