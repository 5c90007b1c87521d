"""Classical deconvolution: PSFs, each method raises PSNR on a known blur, spatially varying blending."""

from __future__ import annotations

import numpy as np
import pytest

from defocus_cli.deconv import METHODS, deconvolve, fit_map, make_psf
from defocus_cli.deconv._fourier import blur
from defocus_cli.deconv.hyper_laplacian import shrink_lut
from defocus_cli.deconv.spatial import deconvolve_varying, radius_levels
from defocus_cli.errors import InputError, UsageError


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(1.0 / np.mean((a.astype(np.float64) - b) ** 2)))


@pytest.fixture(scope="module")
def sharp() -> np.ndarray:
    from skimage import data

    return (data.astronaut()[40:168:, 150:278] / 255.0).astype(np.float32)  # 128x128 RGB, face and texture


def _blurred(img: np.ndarray, psf: np.ndarray, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(blur(img, psf) + rng.normal(0.0, 0.005, img.shape), 0.0, 1.0).astype(np.float32)


@pytest.mark.parametrize("kind", ["disc", "gaussian", "butterworth"])
@pytest.mark.parametrize("r", [0.0, 1.3, 4.0])
def test_psf_normalised_centred_symmetric(kind: str, r: float) -> None:
    k = make_psf(kind, r)
    assert k.ndim == 2 and k.shape[0] % 2 == 1 and k.shape[0] == k.shape[1]
    assert abs(k.sum() - 1.0) < 1e-9 and (k >= 0).all()
    assert np.allclose(k, k[::-1, ::-1]) and np.allclose(k, k.T)
    if r == 0.0:
        assert k.shape == (1, 1)


def test_gaussian_is_moment_matched_to_disc() -> None:
    def var(k: np.ndarray) -> float:
        c = np.arange(k.shape[0]) - k.shape[0] // 2
        return float((k.sum(axis=0) * c**2).sum())

    for r in (3.0, 6.0):
        assert var(make_psf("disc", r)) == pytest.approx(r * r / 4, rel=0.1)
        assert var(make_psf("gaussian", r)) == pytest.approx(r * r / 4, rel=0.1)


def test_bad_kernel_and_radius() -> None:
    with pytest.raises(UsageError):
        make_psf("square", 2.0)
    with pytest.raises(UsageError):
        make_psf("disc", -1.0)


@pytest.mark.parametrize("method", sorted(METHODS))
def test_each_method_raises_psnr_on_known_disc_blur(sharp: np.ndarray, method: str) -> None:
    blurred = _blurred(sharp, make_psf("disc", 3.0))
    out = deconvolve(blurred, method, radius=3.0, kernel="disc")
    assert out.shape == sharp.shape and out.dtype == np.float32
    assert out.min() >= 0.0 and out.max() <= 1.0
    gain = _psnr(out, sharp) - _psnr(blurred, sharp)
    assert gain > 1.0, f"{method}: PSNR gain {gain:.2f} dB"


@pytest.mark.parametrize("kind", ["gaussian", "butterworth"])
def test_other_kernels_raise_psnr(sharp: np.ndarray, kind: str) -> None:
    blurred = _blurred(sharp, make_psf(kind, 3.0))
    out = deconvolve(blurred, "wiener", radius=3.0, kernel=kind)
    assert _psnr(out, sharp) - _psnr(blurred, sharp) > 1.0


def test_rl_iterations_matter(sharp: np.ndarray) -> None:
    blurred = _blurred(sharp, make_psf("disc", 3.0))
    one = deconvolve(blurred, "rl", radius=3.0, iterations=1)
    ten = deconvolve(blurred, "rl", radius=3.0, iterations=10)
    assert _psnr(ten, sharp) > _psnr(one, sharp)


def test_zero_radius_is_identity(sharp: np.ndarray) -> None:
    for method in METHODS:
        assert np.array_equal(deconvolve(sharp, method, radius=0.0), sharp)


def test_grayscale_2d_input(sharp: np.ndarray) -> None:
    gray = sharp.mean(axis=2)
    blurred = _blurred(gray, make_psf("disc", 2.0))
    out = deconvolve(blurred[..., None], "wiener", radius=2.0)[..., 0]
    assert _psnr(out, gray) > _psnr(blurred, gray) + 1.0


def test_shrink_lut_minimises() -> None:
    v, w = shrink_lut(2 / 3, 8.0)
    for i in (100, 700, 2000):
        u = np.linspace(0, v[i], 20001)
        best = u[np.argmin(u ** (2 / 3) + 4.0 * (u - v[i]) ** 2)]
        assert abs(w[i] - best) <= v[i] / 500 + 1e-9


def test_radius_levels() -> None:
    assert list(radius_levels(np.full((4, 4), 2.0))) == [2.0]
    lv = radius_levels(np.array([[0.0, 10.0]]), max_levels=6)
    assert len(lv) == 6 and lv[0] == 0.0 and lv[-1] == 10.0
    assert len(radius_levels(np.array([[1.0, 1.4]]), min_step=0.5)) == 2


def test_constant_map_equals_uniform(sharp: np.ndarray) -> None:
    blurred = _blurred(sharp, make_psf("disc", 2.0))
    a = deconvolve(blurred, "wiener", defocus=np.full(sharp.shape[:2], -2.0, np.float32))  # sign ignored
    b = deconvolve(blurred, "wiener", radius=2.0)
    assert np.allclose(a, b, atol=1e-6)


def test_map_blends_between_nearest_levels(sharp: np.ndarray) -> None:
    """A pixel whose radius lies between two levels gets the linear mix of those two levels' results."""
    calls: list[float] = []

    def fake(img: np.ndarray, psf: np.ndarray) -> np.ndarray:
        calls.append(psf.shape[0])
        return np.full_like(img, 0.1 * psf.shape[0])  # disc of radius r has width 2*ceil(r)+1

    radius = np.zeros(sharp.shape[:2])
    radius[:, 64:] = 4.0
    radius[:10, :10] = 1.0  # a quarter of the way from 0 to 4
    out = deconvolve_varying(sharp, radius, fake, max_levels=2)
    assert calls == [1, 9]
    assert out[50, 70, 0] == pytest.approx(0.9)  # radius 4 -> level 4 only
    assert out[50, 10, 0] == pytest.approx(0.1)  # radius 0 -> level 0 only
    assert out[5, 5, 0] == pytest.approx(0.75 * 0.1 + 0.25 * 0.9)


def test_spatially_varying_map_beats_a_single_radius(sharp: np.ndarray) -> None:
    near = _blurred(sharp, make_psf("disc", 1.0), seed=1)
    far = _blurred(sharp, make_psf("disc", 4.0), seed=2)
    radius = np.ones(sharp.shape[:2], np.float32)
    radius[:, 64:] = 4.0
    blurred = np.where(radius[..., None] > 2, far, near)
    with_map = deconvolve(blurred, "wiener", defocus=radius)
    single = deconvolve(blurred, "wiener", radius=2.5)
    assert _psnr(with_map, sharp) > _psnr(blurred, sharp) + 1.0
    assert _psnr(with_map, sharp) > _psnr(single, sharp)


def test_fit_map_resizes_and_scales_radii() -> None:
    m = np.full((32, 48), 2.0, np.float32)
    out = fit_map(m, (64, 96))
    assert out.shape == (64, 96) and np.allclose(out, 4.0)
    with pytest.raises(InputError):
        fit_map(m, (64, 64))
    with pytest.raises(InputError):
        fit_map(np.zeros((4, 4, 3)), (4, 4))


def test_usage_errors(sharp: np.ndarray) -> None:
    with pytest.raises(UsageError):
        deconvolve(sharp, "blind", radius=2.0)
    with pytest.raises(UsageError):
        deconvolve(sharp, "wiener")
    with pytest.raises(UsageError):
        deconvolve(sharp, "wiener", radius=2.0, defocus=np.ones(sharp.shape[:2]))
    with pytest.raises(UsageError):
        deconvolve(sharp, "rl", radius=2.0, iterations=0)
    with pytest.raises(UsageError):
        deconvolve(sharp, "wiener", radius=2.0, kernel="box")
    with pytest.raises(UsageError):
        deconvolve(sharp, "wiener", radius=1000.0)
