"""Padding and FFT helpers shared by the deconvolution methods (numpy + torch.fft; float32 / complex64 inside)."""

from __future__ import annotations

import numpy as np

from defocus_cli.deconv._fft import irfft2, next_fast_len, rfft2

__all__ = ["Padded", "unblurred", "blur", "gradient_otfs", "grad", "grad_adjoint"]


class Padded:
    """An ``(H, W, C)`` or ``(H, W)`` image symmetric-padded for circular (FFT) processing, and how to go back.

    ``data`` is the padded image, float32 ``(H', W', C)`` (``C = 1`` for a 2-D image) and ``shape`` its
    ``(H', W')``. Margins are at least ``margin`` px per side (to hold the PSF's reach and let boundary ringing
    decay), and the padded size is FFT-friendly (:func:`~defocus_cli.deconv._fft.next_fast_len`).
    """

    def __init__(self, image: np.ndarray, margin: int) -> None:
        self.squeeze = image.ndim == 2
        if self.squeeze:
            image = image[..., None]
        h, w = image.shape[:2]
        self.shape_in = (h, w)
        ph = next_fast_len(h + 2 * margin)
        pw = next_fast_len(w + 2 * margin)
        self.top, self.left = (ph - h) // 2, (pw - w) // 2
        bottom, right = ph - h - self.top, pw - w - self.left
        self.data = _pad_symmetric(image.astype(np.float32, copy=False), self.top, bottom, self.left, right)
        self.shape = (ph, pw)

    def crop(self, a: np.ndarray) -> np.ndarray:
        """The input's region of a padded-size ``(H', W', C)`` array, in the input's layout (``(H, W)`` again
        for a 2-D input)."""
        h, w = self.shape_in
        out = a[self.top : self.top + h, self.left : self.left + w]
        return out[..., 0] if self.squeeze else out

    def result(self, a: np.ndarray) -> np.ndarray:
        """A deconvolution's output from its padded-size estimate ``a``: :meth:`crop`, clipped to [0, 1], float32."""
        return np.clip(self.crop(a), 0.0, 1.0).astype(np.float32)


def unblurred(image: np.ndarray) -> np.ndarray:
    """A deconvolution's output for a one-pixel PSF (no blur): ``image`` clipped to [0, 1], float32."""
    return np.clip(image, 0.0, 1.0).astype(np.float32)


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
    """Convolve ``(H, W, C)`` (or ``(H, W)``) with ``psf`` using symmetric boundaries; same shape, float32."""
    from defocus_cli.deconv.psf import psf2otf

    p = Padded(image, max(psf.shape))
    otf = psf2otf(psf, p.shape)
    return p.crop(irfft2(rfft2(p.data) * otf[..., None], p.shape))


def gradient_otfs(shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """OTFs of the circular differences :func:`grad` computes, along x and y, for a padded ``shape``."""
    from defocus_cli.deconv.psf import psf2otf

    dx = np.array([[0.0, -1.0, 1.0]])
    dy = dx.T
    return psf2otf(dx, shape), psf2otf(dy, shape)


def grad(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Circular differences ``x[i, j-1] - x[i, j]`` and ``x[i-1, j] - x[i, j]`` (the operators of
    :func:`gradient_otfs`) of an ``(H, W, ...)`` array."""
    return np.roll(x, 1, axis=1) - x, np.roll(x, 1, axis=0) - x


def grad_adjoint(wx: np.ndarray, wy: np.ndarray) -> np.ndarray:
    """Adjoint of :func:`grad`: ``Dx^T wx + Dy^T wy``."""
    return (np.roll(wx, -1, axis=1) - wx) + (np.roll(wy, -1, axis=0) - wy)
