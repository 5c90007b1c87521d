"""Richardson–Lucy deconvolution (maximum-likelihood under Poisson noise), FFT convolutions.

``x <- x * (k^T * (y / (k * x)))``, starting from the blurred image. Unregularised: noise grows with the
iteration count, so the default is a modest :data:`DEFAULT_ITERATIONS` (30 iterations on a noisy image can end
below the input's PSNR). Inputs are floored at a small positive value (RL needs positive data).
"""

from __future__ import annotations

import numpy as np

from defocus_cli.deconv._fft import irfft2, rfft2
from defocus_cli.deconv._fourier import Padded, unblurred
from defocus_cli.deconv.psf import psf2otf

__all__ = ["richardson_lucy", "DEFAULT_ITERATIONS"]

DEFAULT_ITERATIONS: int = 10
_FLOOR = 1e-3


def richardson_lucy(image: np.ndarray, psf: np.ndarray, *, iterations: int = DEFAULT_ITERATIONS) -> np.ndarray:
    """Deconvolve ``image`` (H, W, C) float in [0, 1] by ``psf`` with ``iterations`` RL steps (>= 1).

    Returns float32 (H, W, C) in [0, 1].
    """
    if iterations < 1:
        raise ValueError(f"iterations must be >= 1, got {iterations}")
    if psf.size == 1:
        return unblurred(image)
    p = Padded(np.clip(image, _FLOOR, 1.0), 2 * max(psf.shape))
    k = psf2otf(psf, p.shape)[..., None]
    kc = np.conj(k)
    y = p.data
    x = y.copy()

    def conv(a: np.ndarray, otf: np.ndarray) -> np.ndarray:
        return irfft2(rfft2(a) * otf, p.shape)

    for _ in range(iterations):
        est = np.maximum(conv(x, k), 1e-6)
        x = x * conv(y / est, kc)
        np.clip(x, 0.0, None, out=x)
    return p.result(x)
