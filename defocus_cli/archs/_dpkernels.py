"""Dual-pixel (DP) defocus blur kernels after Abuolaim et al. (ICCV 2021, "Learning to reduce defocus blur by
realistically modeling dual-pixel data"), written from the model's description (Butterworth-shaped disc,
Gaussian smoothing, linear L/R ramp). Pure numpy; the one definition of the package: the map network's
kernel bank (:mod:`defocus_cli.archs.defocusgan_map`), the synthetic DP data generator
(:mod:`defocus_cli.data.synth`, which draws one parameter set of the paper's grid below per scene) and the
classical map's disparity → CoC conversion (:mod:`defocus_cli.map_classical`) all use it.
"""

from __future__ import annotations

import functools

import numpy as np

__all__ = ["dp_kernels", "dp_kernels_subpixel", "kernel_size_subpixel", "kernel_size", "ORDERS", "CUTOFF_FACTORS", "BETAS", "SMOOTH"]

#: The paper's parameter grid: Butterworth order, cut-off factor, β; and the smoothing strength.
ORDERS = (3, 6, 9)
CUTOFF_FACTORS = (2.5, 2.0)
BETAS = (0.1, 0.2)
SMOOTH = 7.0


def _smoothing_window(k: int, smooth: float) -> int:
    """Gaussian window ``g = round(k / smooth) + 1``, forced odd (+1 when even)."""
    g = int(round(k / smooth)) + 1
    return g if g % 2 == 1 else g + 1


def kernel_size(coc: float, smooth: float = 7) -> int:
    """Side of the kernels :func:`dp_kernels` returns for ``coc``: ``k + 2 * (g // 2)``, ``k = 2 round|coc| + 1``."""
    k = 2 * int(round(abs(coc))) + 1
    if k == 1:
        return 1
    return k + 2 * (_smoothing_window(k, smooth) // 2)


def _gaussian_1d(g: int) -> np.ndarray:
    """Normalised Gaussian taps of window ``g`` with OpenCV's default σ = 0.3 ((g - 1) / 2 - 1) + 0.8."""
    sigma = 0.3 * ((g - 1) / 2 - 1) + 0.8
    x = np.arange(g, dtype=np.float64) - (g - 1) / 2
    t = np.exp(-(x * x) / (2 * sigma * sigma))
    return t / t.sum()


def _conv_same_zero(a: np.ndarray, taps: np.ndarray) -> np.ndarray:
    """Separable 'same'-size convolution of 2-D ``a`` with symmetric 1-D ``taps`` (zero outside)."""
    rows = np.apply_along_axis(lambda r: np.convolve(r, taps, mode="same"), 1, a)
    return np.apply_along_axis(lambda c: np.convolve(c, taps, mode="same"), 0, rows)


def dp_kernels(
    coc: float,
    order: float = 3,
    cutoff_factor: float = 2.5,
    beta: float = 0.1,
    smooth: float = 7,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Combined, left and right DP blur kernels for a signed circle of confusion.

    Args:
        coc: signed CoC radius in px (rounded to an integer radius ``r``; kernel core size ``k = 2r + 1``).
            Negative = the other side of the focal plane: left and right kernels are swapped.
        order: Butterworth order ``n`` (Abuolaim's grid: 3, 6, 9).
        cutoff_factor: ``D0 = (k - 1) / cutoff_factor`` (2.5 or 2; = 1/α of the paper).
        beta: the Butterworth weight is rescaled linearly from [min, max] over the k×k grid to [β, 1]
            (dim centre, bright rim).
        smooth: smoothing strength κ⁻¹: Gaussian window ``g = round(k / smooth) + 1`` forced odd, σ by OpenCV's
            default formula; the kernel is zero-padded by ``g // 2`` on each side before smoothing.

    Returns:
        ``(combined, left, right)``, each a float64 array of shape ``(K, K)``, ``K = k + 2 (g // 2)``
        (``K = 1``, three deltas, for ``|coc| < 0.5``), each normalised to sum 1. ``left`` is the combined
        kernel times a horizontal ramp rising from 0 (first column) to 1 (last column); ``right`` is ``left``
        rotated by 180°. ``right == left[::-1, ::-1]`` always; for ``coc < 0`` the two are swapped.
    """
    r = int(round(abs(coc)))
    if r == 0:
        d = np.ones((1, 1), np.float64)
        return d, d.copy(), d.copy()
    k = 2 * r + 1
    yy, xx = np.mgrid[0:k, 0:k].astype(np.float64) - r
    dist = np.hypot(yy, xx)
    disc = (dist <= r).astype(np.float64)
    d0 = (k - 1) / cutoff_factor
    q = (dist / d0) ** (2 * order)
    bw = q / (1.0 + q)  # Butterworth high-pass: 0 at the centre, → 1 far out
    lo, hi = bw.min(), bw.max()
    bw = beta + (1.0 - beta) * (bw - lo) / (hi - lo) if hi > lo else np.ones_like(bw)
    return _smooth_and_split(disc * bw, _smoothing_window(k, smooth), coc)


def _smooth_and_split(core: np.ndarray, g: int, coc: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The disc ``core`` zero-padded by ``g // 2`` and smoothed by the Gaussian window ``g``, split into the L/R
    views by the horizontal ramp (``right`` = ``left`` rotated by 180°, swapped for ``coc < 0``); each of
    ``(combined, left, right)`` normalised to sum 1."""
    comb = np.pad(core, g // 2)
    if g > 1:
        comb = _conv_same_zero(comb, _gaussian_1d(g))
    left = comb * np.linspace(0.0, 1.0, comb.shape[1])[None, :]
    right = left[::-1, ::-1].copy()
    comb, left, right = comb / comb.sum(), left / left.sum(), right / right.sum()
    if coc < 0:
        left, right = right, left
    return comb, left, right




def kernel_size_subpixel(coc: float, smooth: float = 7) -> int:
    """Side of the kernels :func:`dp_kernels_subpixel` returns for ``coc``."""
    rho = abs(float(coc))
    if rho < 0.125:
        return 1
    k = 2 * (int(np.ceil(rho)) + 1) + 1
    return k + 2 * (_smoothing_window(int(round(2 * rho + 1)), smooth) // 2)


@functools.lru_cache(maxsize=4096)
def _subpixel_cached(coc: float, order: float, cutoff_factor: float, beta: float, smooth: float,
                     supersample: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rho = abs(coc)
    if rho < 0.125:
        d = np.ones((1, 1), np.float64)
        return d, d.copy(), d.copy()
    r = int(np.ceil(rho)) + 1  # the tent below reaches one pixel beyond the disc
    k = 2 * r + 1
    n = 2 * int(supersample)
    sub = (np.arange(n, dtype=np.float64) + 0.5) / n * 2 - 1  # sub-pixel offsets in (-1, 1)
    tent = 1 - np.abs(sub)
    w2 = (tent[:, None] * tent[None, :]) / (tent.sum() ** 2)
    yy, xx = np.mgrid[0:k, 0:k].astype(np.float64) - r
    sy = yy[:, :, None, None] + sub[None, None, :, None]
    sx = xx[:, :, None, None] + sub[None, None, None, :]
    cover = ((np.hypot(sy, sx) <= rho) * w2).sum(axis=(2, 3))
    dist = np.hypot(yy, xx)
    q = (dist / max(2 * rho / cutoff_factor, 1e-6)) ** (2 * order)
    bw = q / (1.0 + q)
    inside = dist <= rho
    lo, hi = (bw[inside].min(), bw[inside].max()) if inside.sum() > 1 else (0.0, 0.0)
    bw = np.clip(beta + (1.0 - beta) * (bw - lo) / (hi - lo), beta, 1.0) if hi > lo else np.ones_like(bw)
    comb, left, right = _smooth_and_split(cover * bw, _smoothing_window(int(round(2 * rho + 1)), smooth), coc)
    for a in (comb, left, right):
        a.setflags(write=False)
    return comb, left, right


def dp_kernels_subpixel(
    coc: float,
    order: float = 3,
    cutoff_factor: float = 2.5,
    beta: float = 0.1,
    smooth: float = 7,
    supersample: int = 8,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`dp_kernels` for a fractional CoC radius ``ρ = |coc|``: blur of 0.5, 1.25 or 2.75 px exists (the
    integer model knows only a delta, a 5-pixel cross and a 5×5 disc below 3 px, where most of a real photo's
    blur lies).

    Each tap is the disc of radius ρ integrated against a pixel tent (box ⊗ box: the sharp image is
    piecewise constant and the output pixel integrates light), sampled on ``2·supersample`` sub-pixel
    positions per axis, so the kernel grows continuously from a delta. The disc is weighted by the same
    Butterworth profile as :func:`dp_kernels` (``D0 = 2ρ / cutoff_factor``, rescaled to [β, 1] over the pixels
    inside the disc), smoothed with the window of ``k = round(2ρ + 1)``, and split into L/R views by the
    same ramp and sign convention. A delta for ``ρ < 0.125``. Returns read-only (cached) ``(combined, left,
    right)`` float64 ``(K, K)``, ``K = kernel_size_subpixel(coc)``, each summing to 1.
    """
    return _subpixel_cached(float(coc), float(order), float(cutoff_factor), float(beta), float(smooth),
                            int(supersample))
