"""Full-reference image metrics: PSNR, SSIM, MAE (NumPy float64; LPIPS lives in :mod:`defocus_cli.lpips`).

One convention everywhere: ``metric(pred, target)``, both ``H×W×C`` (or ``H×W``) arrays with values on the
[0, 1] scale (any float or integer dtype is accepted; values are used as they are, computation is float64).

Definitions (the ones the defocus-deblurring literature uses, see design ecosystem.md §3):

* PSNR = ``10·log10(1 / MSE)`` over all pixels and channels of one image; a set is summarised by the mean
  of the per-image values (never one PSNR of the pooled MSE). Identical images give :data:`PSNR_CAP`
  (100 dB, as the DPDNet/Restormer reference scripts do) so that means and JSON stay finite.
* SSIM = scikit-image's ``structural_similarity(pred, target, data_range=1, channel_axis=-1)`` with its
  defaults: 7×7 uniform window, sample covariance (N−1), K1=0.01, K2=0.03, the (7−1)/2 px border cropped
  from the SSIM map, per-channel means averaged. Implemented with OpenCV box filters (no scikit-image at
  run time); agrees with scikit-image to ~1e-12 on float64 input.
* MAE = mean absolute difference on [0, 1] (= sklearn's per-channel MAE averaged).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from defocus_cli.errors import InputError

PSNR_CAP = 100.0
"""PSNR reported for identical images (MSE = 0), in dB."""

SSIM_WIN = 7
SSIM_K1 = 0.01
SSIM_K2 = 0.03

SETTINGS: dict[str, Any] = {
    "data_range": 1.0,
    "color": "rgb",
    "psnr": {"formula": "10*log10(1/MSE) per image", "aggregation": "mean_of_per_image", "cap_db": PSNR_CAP},
    "ssim": {
        "impl": "skimage.metrics.structural_similarity(data_range=1, channel_axis=-1) equivalent",
        "win_size": SSIM_WIN,
        "gaussian": False,
        "sample_covariance": True,
        "K1": SSIM_K1,
        "K2": SSIM_K2,
        "channels": "mean over R,G,B",
    },
    "mae": {"formula": "mean |pred - gt| on [0,1]"},
}
"""The metric conventions, recorded in every score output."""


def _as_pair(pred: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Check shapes and return float64 views. Raises InputError naming the expected vs found shape."""
    p = np.asarray(pred)
    t = np.asarray(target)
    if p.shape != t.shape:
        raise InputError(
            f"prediction and ground truth differ in shape: expected {t.shape} (ground truth), found {p.shape}; "
            "score images of the same size (no resizing is done)"
        )
    if p.ndim not in (2, 3) or p.size == 0:
        raise InputError(f"expected an H×W or H×W×C image, found an array of shape {p.shape}")
    return p.astype(np.float64, copy=False), t.astype(np.float64, copy=False)


def mse(pred: np.ndarray, target: np.ndarray) -> float:
    """Mean squared error over all pixels and channels (float64)."""
    p, t = _as_pair(pred, target)
    d = p - t
    return float(np.mean(d * d))


def psnr_from_mse(m: float) -> float:
    """PSNR in dB for a mean squared error ``m`` on the [0, 1] scale: ``10·log10(1/m)``, at most
    :data:`PSNR_CAP` (also for ``m`` = 0). The one PSNR formula of the package (scores, training logs and
    validation, benchmarks)."""
    if m <= 0.0:
        return PSNR_CAP
    return min(PSNR_CAP, 10.0 * math.log10(1.0 / m))


def psnr(pred: np.ndarray, target: np.ndarray) -> float:
    """PSNR in dB of one image pair on the [0, 1] scale: ``10·log10(1/MSE)``; :data:`PSNR_CAP` if identical."""
    return psnr_from_mse(mse(pred, target))


def mae(pred: np.ndarray, target: np.ndarray) -> float:
    """Mean absolute error over all pixels and channels on the [0, 1] scale."""
    p, t = _as_pair(pred, target)
    return float(np.mean(np.abs(p - t)))


def _box(x: np.ndarray) -> np.ndarray:
    """7×7 mean filter of a 2-D float64 array (same size; borders are cropped later so their mode is moot)."""
    import cv2

    return cv2.blur(x, (SSIM_WIN, SSIM_WIN), borderType=cv2.BORDER_REFLECT)


def _ssim_channel(x: np.ndarray, y: np.ndarray) -> float:
    """Mean SSIM of one channel pair (2-D float64), scikit-image defaults, data range 1."""
    n = SSIM_WIN * SSIM_WIN
    cov_norm = n / (n - 1.0)
    ux, uy = _box(x), _box(y)
    uxx, uyy, uxy = _box(x * x), _box(y * y), _box(x * y)
    vx = cov_norm * (uxx - ux * ux)
    vy = cov_norm * (uyy - uy * uy)
    vxy = cov_norm * (uxy - ux * uy)
    c1 = (SSIM_K1 * 1.0) ** 2
    c2 = (SSIM_K2 * 1.0) ** 2
    a1 = 2.0 * ux * uy + c1
    a2 = 2.0 * vxy + c2
    b1 = ux * ux + uy * uy + c1
    b2 = vx + vy + c2
    s = (a1 * a2) / (b1 * b2)
    pad = (SSIM_WIN - 1) // 2
    return float(s[pad:-pad, pad:-pad].mean(dtype=np.float64))


def ssim(pred: np.ndarray, target: np.ndarray) -> float:
    """SSIM identical to ``skimage.metrics.structural_similarity(pred, target, data_range=1, channel_axis=-1)``.

    Args:
        pred, target: ``H×W×C`` (channels last) or ``H×W`` arrays on [0, 1]; H and W at least 7.
    Returns:
        The mean SSIM over channels, in [-1, 1].
    """
    p, t = _as_pair(pred, target)
    if min(p.shape[0], p.shape[1]) < SSIM_WIN:
        raise InputError(
            f"SSIM needs images of at least {SSIM_WIN}×{SSIM_WIN} px, found {p.shape[1]}×{p.shape[0]}"
        )
    if p.ndim == 2:
        return _ssim_channel(np.ascontiguousarray(p), np.ascontiguousarray(t))
    vals = [
        _ssim_channel(np.ascontiguousarray(p[..., c]), np.ascontiguousarray(t[..., c])) for c in range(p.shape[2])
    ]
    return float(np.mean(vals))


HIGHER_IS_BETTER: dict[str, bool] = {"psnr": True, "ssim": True, "mae": False, "lpips": False}
"""Direction of each metric name the score command knows."""

METRIC_NAMES: tuple[str, ...] = ("psnr", "ssim", "mae", "lpips")
