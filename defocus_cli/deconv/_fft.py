"""Real 2-D FFTs over the first two axes of numpy arrays, computed by ``torch.fft`` (multi-threaded, float32 stays
float32), so that the deconvolution methods need no dependency beyond the project's own (torch, numpy)."""

from __future__ import annotations

import numpy as np

__all__ = ["rfft2", "irfft2", "next_fast_len"]


def rfft2(a: np.ndarray) -> np.ndarray:
    """``rfft2`` over axes (0, 1) of a real ``(H, W, ...)`` array -> complex ``(H, W // 2 + 1, ...)``."""
    import torch

    return torch.fft.rfft2(torch.from_numpy(np.ascontiguousarray(a)), dim=(0, 1)).numpy()


def irfft2(a: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Inverse of :func:`rfft2` for a real array whose first two axes are ``shape``."""
    import torch

    return torch.fft.irfft2(torch.from_numpy(np.ascontiguousarray(a)), s=shape, dim=(0, 1)).numpy()


def next_fast_len(n: int) -> int:
    """The smallest ``m >= n`` whose prime factors are all 2, 3 or 5 (fast FFT sizes)."""
    best = 2 * max(1, n)
    p5 = 1
    while p5 < best:
        p35 = p5
        while p35 < best:
            m = p35
            while m < n:
                m *= 2
            best = min(best, m)
            p35 *= 3
        p5 *= 5
    return best
