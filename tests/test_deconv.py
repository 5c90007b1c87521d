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
    """Blur that grows smoothly from 0.5 px (left) to 4 px (right), made by the forward model the method inverts:
    per pixel, the linear mix of the two nearest uniformly blurred images."""
    radius = np.broadcast_to(np.linspace(0.5, 4.0, sharp.shape[1], dtype=np.float32), sharp.shape[:2]).copy()
    rng = np.random.default_rng(3)
    blurred = deconvolve_varying(sharp, radius, lambda img, psf: blur(img, psf), max_levels=8)
    blurred = np.clip(blurred + rng.normal(0.0, 0.005, sharp.shape), 0.0, 1.0).astype(np.float32)
    with_map = deconvolve(blurred, "wiener", defocus=radius)
    single = deconvolve(blurred, "wiener", radius=2.25)
    assert _psnr(with_map, sharp) > _psnr(blurred, sharp) + 1.0
    assert _psnr(with_map, sharp) > _psnr(single, sharp) + 0.3


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


# ------------------------------------------------------------------------------------------------ CLI


def _cli(*args: str):  # noqa: ANN202
    from typer.testing import CliRunner

    from defocus_cli.cli import app

    return CliRunner().invoke(app, ["deconv", *args])


def _write_png(path, img: np.ndarray) -> None:  # noqa: ANN001
    import cv2

    cv2.imwrite(str(path), cv2.cvtColor((np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8), cv2.COLOR_RGB2BGR))


def _read_png(path) -> np.ndarray:  # noqa: ANN001
    import cv2

    return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB).astype(np.float32) / 255.0


def test_cli_radius_writes_sharper_image(sharp: np.ndarray, tmp_path) -> None:  # noqa: ANN001
    src = tmp_path / "shot.png"
    _write_png(src, _blurred(sharp, make_psf("disc", 3.0)))
    r = _cli(str(src), "--radius", "3", "--method", "hyperlaplacian")
    assert r.exit_code == 0, r.output
    out = tmp_path / "shot_deconv.png"
    res = _read_png(out)
    assert res.shape == sharp.shape
    assert _psnr(res, sharp) > _psnr(_read_png(src), sharp) + 1.0


def test_cli_map_folder_and_json(sharp: np.ndarray, tmp_path) -> None:  # noqa: ANN001
    import json

    ins, maps = tmp_path / "in", tmp_path / "maps"
    ins.mkdir(), maps.mkdir()
    for name, r in (("a", 2.0), ("b", 3.0)):
        _write_png(ins / f"{name}.png", _blurred(sharp, make_psf("gaussian", r)))
        np.save(maps / f"{name}.npy", np.full(sharp.shape[:2], r, np.float32))
    r = _cli(str(ins), "--map", str(maps), "--kernel", "gaussian", "-o", str(tmp_path / "out"), "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["method"] == "wiener" and [i["status"] for i in doc["items"]] == ["ok", "ok"]
    for name in ("a", "b"):
        res = _read_png(tmp_path / "out" / f"{name}.png")
        assert _psnr(res, sharp) > _psnr(_read_png(ins / f"{name}.png"), sharp) + 1.0


def test_cli_missing_map_is_a_per_file_error(sharp: np.ndarray, tmp_path) -> None:  # noqa: ANN001
    (tmp_path / "maps").mkdir()
    _write_png(tmp_path / "x.png", sharp)
    r = _cli(str(tmp_path / "x.png"), "--map", str(tmp_path / "maps"))
    assert r.exit_code == 1
    assert "no map for x.png" in r.output
    assert not (tmp_path / "x_deconv.png").exists()


@pytest.mark.parametrize(
    "args",
    [
        ["--radius", "2", "--map", "m.npy"],  # both
        [],  # neither
        ["--radius", "2", "--method", "blind"],
        ["--radius", "2", "--kernel", "box"],
        ["--map", "missing.npy"],
    ],
)
def test_cli_usage_errors_exit_2(sharp: np.ndarray, tmp_path, args: list[str], monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.chdir(tmp_path)
    np.save(tmp_path / "m.npy", np.ones((4, 4), np.float32))
    _write_png(tmp_path / "x.png", sharp)
    r = _cli("x.png", *args)
    assert r.exit_code == 2, r.output
    assert not (tmp_path / "x_deconv.png").exists()


def test_cli_one_map_file_for_two_inputs_is_refused(sharp: np.ndarray, tmp_path) -> None:  # noqa: ANN001
    np.save(tmp_path / "m.npy", np.ones(sharp.shape[:2], np.float32))
    _write_png(tmp_path / "x.png", sharp)
    _write_png(tmp_path / "y.png", sharp)
    r = _cli(str(tmp_path / "x.png"), str(tmp_path / "y.png"), "--map", str(tmp_path / "m.npy"))
    assert r.exit_code == 2 and "folder of maps" in r.output
