"""Point-spread functions of defocus blur and their Fourier transforms.

Every PSF is a 2-D float64 array, odd-sized, centred, non-negative, summing to 1. A *radius* is the circle-of-
confusion (CoC) radius in pixels, the unit of the ``defocus map`` files. Kernels:

* ``disc``: uniform disc of radius ``r`` (the thin-lens model), anti-aliased by 8x8 supersampling of each pixel.
* ``gaussian``: isotropic Gaussian with ``sigma = r / 2`` -- the disc's second moment (a disc of radius ``r``
  has per-axis variance ``r**2 / 4``), so a map means the same blur amount for both kernels.
* ``butterworth``: a disc with a soft, Butterworth-shaped rim, ``1 / (1 + (rho / r) ** (2 * order))``, order 3
  (the radial profile family Abuolaim et al. use for dual-pixel defocus kernels); truncated at 2r.

Radii below :data:`MIN_RADIUS` give the identity (a 1x1 delta).
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np

from defocus_cli.deconv._fft import rfft2
from defocus_cli.errors import UsageError

__all__ = ["KERNELS", "MIN_RADIUS", "make_psf", "disc_psf", "gaussian_psf", "butterworth_psf", "psf2otf"]

Kernel = Literal["disc", "gaussian", "butterworth"]
KERNELS: tuple[str, ...] = ("disc", "gaussian", "butterworth")
#: Radii (px) below this are treated as in focus.
MIN_RADIUS: float = 0.25
_SS = 8  # supersampling per axis for the disc


def _delta() -> np.ndarray:
    return np.ones((1, 1), dtype=np.float64)


def _grid(half: int, ss: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Sample coordinates of a (2*half+1)^2 kernel, ``ss`` x ``ss`` sub-samples per pixel (pixel-centred)."""
    n = 2 * half + 1
    offs = (np.arange(ss) + 0.5) / ss - 0.5
    c = (np.arange(n)[:, None] - half + offs[None, :]).reshape(-1)
    return np.meshgrid(c, c, indexing="ij")


def _bin(a: np.ndarray, ss: int) -> np.ndarray:
    n = a.shape[0] // ss
    return a.reshape(n, ss, n, ss).mean(axis=(1, 3))


def _normalised(k: np.ndarray) -> np.ndarray:
    s = k.sum()
    return k / s if s > 0 else _delta()


def disc_psf(radius: float) -> np.ndarray:
    """Anti-aliased uniform disc of ``radius`` px: ``(2*ceil(r)+1, 2*ceil(r)+1)`` float64, sums to 1."""
    if radius < MIN_RADIUS:
        return _delta()
    half = int(math.ceil(radius))
    y, x = _grid(half, _SS)
    inside = (x * x + y * y <= radius * radius).astype(np.float64)
    return _normalised(_bin(inside, _SS))


def gaussian_psf(radius: float) -> np.ndarray:
    """Gaussian with ``sigma = radius / 2`` (moment-matched to the disc), support +-3 sigma, sums to 1."""
    if radius < MIN_RADIUS:
        return _delta()
    sigma = radius / 2.0
    half = max(1, int(math.ceil(3.0 * sigma)))
    y, x = _grid(half)
    return _normalised(np.exp(-(x * x + y * y) / (2.0 * sigma * sigma)))


def butterworth_psf(radius: float, order: int = 3) -> np.ndarray:
    """Soft-rimmed disc ``1 / (1 + (rho / r)^(2*order))`` truncated at ``2r``; sums to 1."""
    if radius < MIN_RADIUS:
        return _delta()
    half = int(math.ceil(2.0 * radius))
    y, x = _grid(half, 4)
    rho = np.sqrt(x * x + y * y)
    k = 1.0 / (1.0 + (rho / radius) ** (2 * order))
    k[rho > 2.0 * radius] = 0.0
    return _normalised(_bin(k, 4))


def make_psf(kind: str, radius: float) -> np.ndarray:
    """The PSF of ``kind`` (``disc``, ``gaussian``, ``butterworth``) for a CoC ``radius`` in px.

    Raises:
        UsageError: unknown kind or a negative / non-finite radius.
    """
    if not math.isfinite(radius) or radius < 0:
        raise UsageError(f"blur radius must be a finite number >= 0 px, got {radius}")
    if kind == "disc":
        return disc_psf(radius)
    if kind == "gaussian":
        return gaussian_psf(radius)
    if kind == "butterworth":
        return butterworth_psf(radius)
    raise UsageError(f"unknown kernel {kind!r}; expected one of {', '.join(KERNELS)}")


def psf2otf(psf: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Real-FFT optical transfer function of ``psf`` for an image of ``shape`` (H, W), circular boundary.

    Returns the ``rfft2`` of the PSF zero-padded to ``shape`` with its centre moved to (0, 0):
    complex64 ``(H, W // 2 + 1)``.
    """
    kh, kw = psf.shape
    if kh > shape[0] or kw > shape[1]:
        raise ValueError(f"PSF {psf.shape} larger than the padded image {shape}")
    big = np.zeros(shape, dtype=np.float32)
    big[:kh, :kw] = psf
    big = np.roll(big, (-(kh // 2), -(kw // 2)), axis=(0, 1))
    return rfft2(big)
