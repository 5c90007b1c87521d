"""Dual-pixel defocus kernels of Abuolaim et al. (ICCV 2021), implemented from the description
(design architectures.md §4), as float64 NumPy arrays, cached per parameter set.

If ``defocus_cli.archs._dpkernels`` (engineer C) is present, :func:`dp_kernels` delegates to it so the
project has one definition; the local implementation below is the fallback with the same signature.

Kernel for a signed CoC radius ``c`` (pixels; kernel size ``k = 2|c| + 1``):

1. disc of radius ``|c|`` on a ``k×k`` grid;
2. Butterworth high-pass of order ``n``: ``r^(2n) / (1 + r^(2n))``, ``r = dist / D0``,
   ``D0 = (k - 1) / cutoff_factor``, rescaled linearly to ``[beta, 1]`` (dim centre, bright rim);
3. disc × Butterworth, zero-padded by ``g // 2`` with ``g = round(k / smooth) + 1`` forced odd, Gaussian
   blurred (window ``g``, ``sigma = 0.3 ((g - 1) / 2 - 1) + 0.8``) → the combined kernel ``C``;
4. left = ``C`` × a horizontal ramp 0→1 across columns; right = left rotated by 180°; every kernel
   normalised to sum 1; for ``c < 0`` (in front of the focal plane) left and right are swapped.

Parameter grid of the paper: ``order ∈ {3, 6, 9}``, ``cutoff_factor ∈ {2.5, 2}``, ``beta ∈ {0.1, 0.2}``,
``smooth = 7``.
"""

from __future__ import annotations

import functools

import numpy as np

ORDERS = (3, 6, 9)
CUTOFF_FACTORS = (2.5, 2.0)
BETAS = (0.1, 0.2)
SMOOTH = 7.0


def _gauss_1d(g: int) -> np.ndarray:
    sigma = 0.3 * ((g - 1) / 2 - 1) + 0.8
    x = np.arange(g, dtype=np.float64) - (g - 1) / 2
    w = np.exp(-(x**2) / (2 * sigma**2))
    return w / w.sum()


@functools.lru_cache(maxsize=4096)
def _dp_kernels_local(
    coc: int, order: int, cutoff_factor: float, beta: float, smooth: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    r = abs(int(coc))
    if r == 0:
        d = np.ones((1, 1), dtype=np.float64)
        return d, d.copy(), d.copy()
    k = 2 * r + 1
    yy, xx = np.mgrid[0:k, 0:k].astype(np.float64) - r
    dist = np.sqrt(xx**2 + yy**2)
    disc = (dist <= r + 1e-9).astype(np.float64)
    d0 = (k - 1) / cutoff_factor
    rr = (dist / d0) ** (2 * order)
    bw = rr / (1 + rr)
    bw = beta + (1 - beta) * (bw - bw.min()) / max(bw.max() - bw.min(), 1e-12)
    c = disc * bw
    g = int(round(k / smooth)) + 1
    if g % 2 == 0:
        g += 1
    p = g // 2
    c = np.pad(c, p)
    if g > 1:
        w = _gauss_1d(g)
        # separable 'same' Gaussian filter with zero padding (the kernel was zero-padded by g//2 already)
        c = np.apply_along_axis(lambda v: np.convolve(v, w, mode="same"), 0, c)
        c = np.apply_along_axis(lambda v: np.convolve(v, w, mode="same"), 1, c)
    c = np.clip(c, 0, None)
    ramp = np.linspace(0.0, 1.0, c.shape[1])[None, :]
    left = c * ramp
    right = np.flip(left, (0, 1)).copy()
    c = c / c.sum()
    left = left / left.sum()
    right = right / right.sum()
    if coc < 0:
        left, right = right, left
    return c, left, right


def dp_kernels(
    coc: int, order: int = 3, cutoff_factor: float = 2.5, beta: float = 0.1, smooth: float = SMOOTH
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return ``(combined, left, right)`` kernels (float64, square, odd size, each summing to 1) for the
    signed integer CoC radius ``coc`` (px). ``coc = 0`` gives 1×1 identity kernels."""
    try:  # one definition in the project when engineer C's module exists
        from defocus_cli.archs._dpkernels import dp_kernels as _ext  # type: ignore[import-not-found]
    except ImportError:
        _ext = None
    if _ext is not None and coc != 0:
        c, left, right = _ext(coc, order, cutoff_factor, beta, smooth)
        return (np.asarray(c, np.float64), np.asarray(left, np.float64), np.asarray(right, np.float64))
    return _dp_kernels_local(int(coc), int(order), float(cutoff_factor), float(beta), float(smooth))


def kernel_size(coc: int, smooth: float = SMOOTH) -> int:
    """Side length of the kernels of :func:`dp_kernels` for radius ``coc`` (without delegation)."""
    r = abs(int(coc))
    if r == 0:
        return 1
    k = 2 * r + 1
    g = int(round(k / smooth)) + 1
    g += 1 - g % 2
    return k + 2 * (g // 2)


__all__ = ["dp_kernels", "kernel_size", "ORDERS", "CUTOFF_FACTORS", "BETAS", "SMOOTH"]
