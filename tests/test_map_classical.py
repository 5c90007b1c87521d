"""Classical dual-pixel map (issue 15): synthetic DP pairs with known disparity fields, the confidence, the
bilateral-grid propagation and the `--json` range/confidence fields. Real-data numbers: bench/map_pixel4.py."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from defocus_cli.defocus_map import estimate_dp_map, run_map
from defocus_cli.map_classical import bilateral_grid_solve, disparity_to_radius, dp_radius_map_conf, work_scale


def _texture(h: int, w: int, seed: int = 0, sigma: float = 2.0) -> np.ndarray:
    """Blurred random texture in about [0.2, 0.8] (a defocused scene: energy at low frequencies)."""
    rng = np.random.default_rng(seed)
    t = cv2.GaussianBlur(rng.random((h, w)).astype(np.float32), (0, 0), sigma)
    return (0.2 + 0.6 * (t - t.min()) / (t.max() - t.min())).astype(np.float32)


def _warp_x(img: np.ndarray, disp: np.ndarray) -> np.ndarray:
    """``out(x, y) = img(x - disp(x, y), y)`` (the left view of a pair whose right view is ``img``)."""
    h, w = img.shape
    xx = np.tile(np.arange(w, dtype=np.float32), (h, 1))
    yy = np.tile(np.arange(h, dtype=np.float32)[:, None], (1, w))
    return cv2.remap(img, xx - disp.astype(np.float32), yy, cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)


def test_two_depth_layers_recover_sign_order_and_size_despite_vignetting() -> None:
    h, w = 192, 256
    right = _texture(h, w)
    disp = np.where(np.arange(w)[None, :] < w // 2, 3.0, -2.0) * np.ones((h, 1), np.float32)
    ramp = np.linspace(0.7, 1.3, w, dtype=np.float32)[None, :]  # opposite DP vignetting of the two views
    left = _warp_x(right, disp) * ramp
    radius, conf = dp_radius_map_conf(left, right)
    assert radius.shape == conf.shape == (h, w) and radius.dtype == np.float32
    a = float(np.median(radius[24:-24, 24 : w // 2 - 24]))
    b = float(np.median(radius[24:-24, w // 2 + 24 : -24]))
    assert a > 0 > b  # sign follows the shift direction
    ra, rb = (float(disparity_to_radius(np.array([v]))[0]) for v in (3.0, -2.0))
    assert a == pytest.approx(ra, rel=0.35) and b == pytest.approx(rb, rel=0.35)


def test_ordering_of_a_disparity_ramp_survives() -> None:
    # three vertical bands at -3, 0, +3 px: the map must be ordered band by band
    h, w = 160, 288
    right = _texture(h, w, seed=1)
    band = np.arange(w)[None, :] // (w // 3)
    disp = (band.astype(np.float32) - 1.0) * 3.0 * np.ones((h, 1), np.float32)
    radius, _ = dp_radius_map_conf(_warp_x(right, disp), right)
    med = [float(np.median(radius[20:-20, k * w // 3 + 20 : (k + 1) * w // 3 - 20])) for k in range(3)]
    assert med[0] < med[1] < med[2]
    assert abs(med[1]) < 0.5 * min(abs(med[0]), abs(med[2]))


def test_confidence_is_low_in_flat_areas_and_values_are_propagated() -> None:
    h, w = 160, 320
    rng = np.random.default_rng(2)
    right = _texture(h, w, seed=2)
    right[:, w // 2 :] = 0.5 + 1e-4 * rng.standard_normal((h, w - w // 2)).astype(np.float32)  # textureless
    left = _warp_x(right, np.full((h, w), 2.0, np.float32))
    radius, conf = dp_radius_map_conf(left, right)
    textured, flat = conf[:, : w // 2 - 30], conf[:, w // 2 + 40 :]
    assert float(np.median(textured)) > 0.5
    assert float(np.median(flat)) < 0.2
    assert np.isfinite(radius).all()
    # the flat half has no evidence of its own: it takes the textured half's value (same guide level nearby)
    assert float(np.median(radius[:, w // 2 + 10 : w // 2 + 40])) > 0.5 * float(np.median(radius[:, 30 : w // 2 - 30]))


def test_grid_solver_fills_within_regions_but_not_across_guide_edges() -> None:
    h, w = 96, 128
    guide = np.where(np.arange(w)[None, :] < w // 2, 0.2, 0.8) * np.ones((h, 1), np.float32)
    target = np.zeros((h, w), np.float32)
    conf = np.zeros((h, w), np.float32)
    target[40:50, 10:20], conf[40:50, 10:20] = 1.0, 1.0
    target[40:50, 100:110], conf[40:50, 100:110] = -1.0, 1.0
    out, support = bilateral_grid_solve(target, conf, guide.astype(np.float32), sigma_spatial=8.0)
    assert out.shape == (h, w) and support.shape == (h, w)
    np.testing.assert_allclose(out[:, : w // 2 - 8], 1.0, atol=0.2)
    np.testing.assert_allclose(out[:, w // 2 + 8 :], -1.0, atol=0.2)
    assert float(support[45, 15]) > float(support[5, 60])  # support: where the data was
    # without the edge in the guide the two estimates blend in the middle
    flat, _ = bilateral_grid_solve(target, conf, np.full((h, w), 0.5, np.float32), sigma_spatial=8.0)
    assert abs(float(flat[45, w // 2])) < 0.5


def test_vertical_baseline_pair_is_transposed_and_confidence_returned() -> None:
    h, w = 192, 160
    right = _texture(h, w, seed=3)
    left = _warp_x(right.T.copy(), np.full((w, h), 3.0, np.float32)).T.copy()  # shifted down by 3 px
    res = estimate_dp_map(left, right, method="classical", baseline="v")
    assert res.radius.shape == (h, w) and res.confidence is not None and res.confidence.shape == (h, w)
    assert float(np.median(res.radius[24:-24, 24:-24])) > 1.0


def test_work_scale_follows_window_and_caps_pixels() -> None:
    assert work_scale((1008, 1344), 41) == pytest.approx(2.05)
    assert work_scale((100, 100), 11) == 1.0
    s = work_scale((3000, 4000), 41)
    assert 3000 * 4000 / s**2 <= 1.6e6 + 1


def test_json_reports_signed_range_and_confidence(tmp_path: Path) -> None:
    h, w = 128, 192
    right = _texture(h, w, seed=4)
    left = _warp_x(right, np.full((h, w), -2.0, np.float32))
    paths = []
    for name, a in (("l.png", left), ("r.png", right)):
        p = tmp_path / name
        cv2.imwrite(str(p), np.clip(np.round(a * 60000), 0, 65535).astype(np.uint16))
        paths.append(p)
    doc = run_map(paths, tmp_path / "m.npy", method="classical", signed=True)
    item = doc["items"][0]
    assert item["range"]["p2"] <= item["range"]["p98"] < 0  # in front of focus everywhere
    assert item["range"]["span"] == pytest.approx(item["range"]["p98"] - item["range"]["p2"], abs=1e-3)
    assert 0.0 <= item["confidence"]["mean"] <= 1.0 and 0.0 <= item["confidence"]["fraction_above_0.5"] <= 1.0


def test_gain_normalisation_removes_smooth_vignetting_but_not_structure() -> None:
    from defocus_cli.map_classical import _gain_normalise

    h, w = 120, 160
    right = _texture(h, w, seed=5)
    x = np.linspace(-0.5, 0.5, w, dtype=np.float32)[None, :]
    y = np.linspace(-0.5, 0.5, h, dtype=np.float32)[:, None]
    vignette = np.exp(0.35 * x - 0.4 * x * x + 0.1 * y).astype(np.float32)  # left/right gain, DP-like
    left = _warp_x(right, np.full((h, w), 2.0, np.float32)) * vignette
    fixed = _gain_normalise(left, right)
    gain = fixed / right
    np.testing.assert_allclose(gain, vignette, rtol=0.03)
    # the field is smooth: it does not copy the scene's texture (which a local blur ratio would)
    assert float(np.abs(np.diff(gain, n=2, axis=1)).max()) < 1e-4


# ---- map-guided deconvolution (the map's consumer) -------------------------------------------------


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(1.0 / np.mean((a.astype(np.float64) - b) ** 2)))


def test_depth_edge_taper_removes_the_boundary_loss() -> None:
    """Two-region disc blur (r = 2 left, r = 6 right) with the exact map: untapered level blending loses PSNR
    at the depth edge (the r = 6 level rings on the r = 2 half); the taper gains there and overall."""
    from skimage import data

    from defocus_cli.deconv import deconvolve
    from defocus_cli.deconv._fourier import blur
    from defocus_cli.deconv.psf import make_psf

    sharp = (data.astronaut()[20:148, 120:376] / 255.0).astype(np.float32)  # 128x256 RGB
    h, w = sharp.shape[:2]
    left = np.arange(w)[None, :] < w // 2
    blurred = np.where(left[..., None], blur(sharp, make_psf("disc", 2.0)), blur(sharp, make_psf("disc", 6.0)))
    rng = np.random.default_rng(0)
    blurred = np.clip(blurred + rng.normal(0.0, 0.005, sharp.shape), 0, 1).astype(np.float32)
    radius = np.where(left, 2.0, 6.0).astype(np.float32) * np.ones((h, 1), np.float32)
    band = slice(w // 2 - 16, w // 2 + 16)
    base_all, base_edge = _psnr(blurred, sharp), _psnr(blurred[:, band], sharp[:, band])
    old = deconvolve(blurred, "wiener", defocus=radius, taper=None)
    new = deconvolve(blurred, "wiener", defocus=radius)
    assert _psnr(new[:, band], sharp[:, band]) > _psnr(old[:, band], sharp[:, band]) + 1.0
    assert _psnr(new[:, band], sharp[:, band]) > base_edge  # the edge band now gains too
    assert _psnr(new, sharp) > max(_psnr(old, sharp), base_all) + 0.5
