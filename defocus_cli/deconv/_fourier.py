"""Padding and FFT helpers shared by the deconvolution methods (numpy / scipy.fft, float64 inside)."""

from __future__ import annotations

import numpy as np

__all__ = ["Padded", "pad_for", "blur", "gradient_otfs"]


class Padded:
    """An ``(H, W, C)`` image symmetric-padded for circular (FFT) processing, and how to crop back.

    Margins are at least ``margin`` px per side (to hold the PSF's reach and let boundary ringing decay),
    and the padded size is FFT-friendly (``scipy.fft.next_fast_len``).
    """

    def __init__(self, image: np.ndarray, margin: int) -> None:
        from scipy import fft

        h, w = image.shape[:2]
        self.shape_in = (h, w)
        ph = fft.next_fast_len(h + 2 * margin, real=True)
        pw = fft.next_fast_len(w + 2 * margin, real=True)
        self.top, self.left = (ph - h) // 2, (pw - w) // 2
        bottom, right = ph - h - self.top, pw - w - self.left
        self.data = _pad_symmetric(image.astype(np.float64, copy=False), self.top, bottom, self.left, right)
        self.shape = (ph, pw)

    def crop(self, a: np.ndarray) -> np.ndarray:
        h, w = self.shape_in
        return a[self.top : self.top + h, self.left : self.left + w]


def _pad_symmetric(a: np.ndarray, top: int, bottom: int, left: int, right: int) -> np.ndarray:
    """Symmetric padding that also works when a margin exceeds the image size (repeats the mirror)."""
    h, w = a.shape[:2]
    rows = _mirror_index(np.arange(-top, h + bottom), h)
    cols = _mirror_index(np.arange(-left, w + right), w)
    return a[rows][:, cols]


def _mirror_index(i: np.ndarray, n: int) -> np.ndarray:
    period = 2 * n
    i = np.mod(i, period)
    return np.where(i < n, i, period - 1 - i)


def blur(image: np.ndarray, psf: np.ndarray) -> np.ndarray:
    """Convolve ``(H, W, C)`` (or ``(H, W)``) with ``psf`` using symmetric boundaries; same shape, float64."""
    from scipy import fft

    from defocus_cli.deconv.psf import psf2otf

    squeeze = image.ndim == 2
    img = image[..., None] if squeeze else image
    p = Padded(img, max(psf.shape))
    otf = psf2otf(psf, p.shape)
    out = fft.irfft2(fft.rfft2(p.data, axes=(0, 1), workers=-1) * otf[..., None], s=p.shape, axes=(0, 1), workers=-1)
    out = p.crop(out)
    return out[..., 0] if squeeze else out


def gradient_otfs(shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """OTFs of the forward differences ``[1, -1]`` along x and y for a padded ``shape``."""
    from defocus_cli.deconv.psf import psf2otf

    dx = np.array([[0.0, -1.0, 1.0]])
    dy = dx.T
    return psf2otf(dx, shape), psf2otf(dy, shape)
