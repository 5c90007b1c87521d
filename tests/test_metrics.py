"""PSNR / SSIM / MAE against scikit-image (the reference the literature uses) on synthetic and real photos."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import SHARED
from defocus_cli import metrics as M
from defocus_cli.errors import InputError

skm = pytest.importorskip("skimage.metrics", reason="scikit-image (test extra) is the reference implementation")

LFDOF = SHARED / "data" / "lfdof"
needs_lfdof = pytest.mark.skipif(
    not (LFDOF / "input").is_dir(),
    reason=f"real photo pairs not found at {LFDOF} (development data, not part of a user's clone)",
)


def _smooth_pair(rng: np.random.Generator, h: int, w: int, c: int | None) -> tuple[np.ndarray, np.ndarray]:
    shape = (h, w) if c is None else (h, w, c)
    base = cv2.GaussianBlur(rng.random(shape), (0, 0), 2.0).reshape(shape)  # cv2 drops a 1-channel axis
    base = (base - base.min()) / (base.max() - base.min())
    other = np.clip(base + rng.normal(0, 0.05, shape), 0, 1)
    return other, base


@pytest.mark.parametrize("h,w,c", [(64, 80, 3), (7, 7, 3), (33, 50, None), (40, 41, 1)])
def test_ssim_psnr_mae_match_skimage_on_synthetic(h: int, w: int, c: int | None) -> None:
    pred, gt = _smooth_pair(np.random.default_rng(h * w), h, w, c)
    ref_ssim = skm.structural_similarity(pred, gt, data_range=1.0, channel_axis=None if c is None else -1)
    assert M.ssim(pred, gt) == pytest.approx(ref_ssim, abs=1e-9)
    assert M.psnr(pred, gt) == pytest.approx(skm.peak_signal_noise_ratio(gt, pred, data_range=1.0), abs=1e-9)
    per_channel = np.abs(pred - gt).reshape(-1, 1 if c is None else c).mean(axis=0).mean()
    assert M.mae(pred, gt) == pytest.approx(per_channel, abs=1e-12)


def test_uint8_input_is_used_as_given_values() -> None:
    rng = np.random.default_rng(1)
    a = rng.integers(0, 256, (20, 30, 3)).astype(np.float64) / 255
    b = rng.integers(0, 256, (20, 30, 3)).astype(np.float64) / 255
    assert M.ssim(a.astype(np.float32), b.astype(np.float32)) == pytest.approx(M.ssim(a, b), abs=1e-6)


def test_identical_images() -> None:
    x = np.random.default_rng(2).random((16, 16, 3))
    assert M.psnr(x, x) == M.PSNR_CAP
    assert M.ssim(x, x) == pytest.approx(1.0, abs=1e-12)
    assert M.mae(x, x) == 0.0


def test_psnr_known_value() -> None:
    gt = np.zeros((10, 10, 3))
    pred = np.full((10, 10, 3), 0.1)  # MSE = 0.01 → 20 dB
    assert M.psnr(pred, gt) == pytest.approx(20.0, abs=1e-9)
    assert M.mae(pred, gt) == pytest.approx(0.1)


def test_shape_mismatch_names_expected_and_found() -> None:
    with pytest.raises(InputError, match=r"expected \(8, 9, 3\).*found \(8, 10, 3\)"):
        M.psnr(np.zeros((8, 10, 3)), np.zeros((8, 9, 3)))
    with pytest.raises(InputError, match="at least 7"):
        M.ssim(np.zeros((6, 10, 3)), np.zeros((6, 10, 3)))


def _rgb01(path: Path) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    scale = 65535.0 if img.dtype == np.uint16 else 255.0
    return img[:, :, ::-1].astype(np.float64) / scale


@needs_lfdof
def test_match_skimage_on_real_photos() -> None:
    """Blurry input vs sharp target of real light-field defocus pairs (688×1008): the numbers papers report."""
    pairs = sorted((LFDOF / "input").glob("*.png"))[:4]
    assert pairs, f"no PNGs in {LFDOF / 'input'}"
    dev_psnr = dev_ssim = 0.0
    for p in pairs:
        pred, gt = _rgb01(p), _rgb01(LFDOF / "target" / p.name)
        ref_ssim = skm.structural_similarity(pred, gt, data_range=1.0, channel_axis=-1)
        ref_psnr = skm.peak_signal_noise_ratio(gt, pred, data_range=1.0)
        dev_ssim = max(dev_ssim, abs(M.ssim(pred, gt) - ref_ssim))
        dev_psnr = max(dev_psnr, abs(M.psnr(pred, gt) - ref_psnr))
    assert dev_psnr < 0.01
    assert dev_ssim < 1e-6
