"""`defocus map` and its library: map formats, classical DP and single-image estimators, learned paths with
small stand-in networks, CLI exit codes and JSON."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from defocus_cli import weights
from defocus_cli.archs._dpkernels import dp_kernels
from defocus_cli.cli import app
from defocus_cli.defocus_map import estimate_dp_map, estimate_single_map, prepare_linear_dp, run_map
from defocus_cli.errors import UsageError
from defocus_cli.io import maps
from defocus_cli.map_classical import detect_baseline, disparity_to_radius, dp_disparity, dp_radius_map


def _texture(h: int = 96, w: int = 128, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return cv2.GaussianBlur(rng.random((h, w)).astype(np.float32), (0, 0), 1.0)


def _dp_pair(img: np.ndarray, coc: float) -> tuple[np.ndarray, np.ndarray]:
    """Blur ``img`` with the left/right DP kernels of ``coc`` (convolution = correlation with the flip)."""
    _c, lk, rk = dp_kernels(coc)
    flip = lambda k: np.ascontiguousarray(k[::-1, ::-1]).astype(np.float32)  # noqa: E731
    return cv2.filter2D(img, -1, flip(lk)), cv2.filter2D(img, -1, flip(rk))


def _write16(path: Path, a: np.ndarray) -> Path:
    cv2.imwrite(str(path), np.clip(np.round(a * 60000 + 1024), 0, 65535).astype(np.uint16))
    return path


# ---- map files ------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt,ext", [("npy", ".npy"), ("tif", ".tif"), ("png16", ".png")])
def test_map_formats_round_trip(tmp_path: Path, fmt: str, ext: str) -> None:
    rng = np.random.default_rng(1)
    radius = (rng.random((17, 23)).astype(np.float32) - 0.5) * 40  # signed, |r| <= 20
    signed = fmt != "png16"
    p = maps.write_map(tmp_path / f"m{ext}", radius, maps.map_format(tmp_path / f"m{ext}", None), signed=signed)
    back = maps.read_map(p)
    assert back.shape == radius.shape and back.dtype == np.float32
    if fmt == "png16":
        raw = cv2.imread(str(p), cv2.IMREAD_UNCHANGED)
        assert raw.dtype == np.uint16
        np.testing.assert_array_equal(raw, np.round(np.abs(radius) * 256).astype(np.uint16))
        np.testing.assert_allclose(back, np.abs(radius), atol=0.5 / 256 + 1e-6)
    else:
        np.testing.assert_array_equal(back, radius)


def test_unsigned_npy_drops_sign_and_png16_refuses_sign(tmp_path: Path) -> None:
    r = np.array([[-2.0, 3.0]], np.float32)
    back = maps.read_map(maps.write_map(tmp_path / "u.npy", r, "npy", signed=False))
    np.testing.assert_array_equal(back, [[2.0, 3.0]])
    with pytest.raises(UsageError):
        maps.encode_map(r, "png16", signed=True)
    with pytest.raises(UsageError):
        maps.map_format(tmp_path / "m.jpg", None)
    assert maps.map_format(tmp_path / "m.bin", "tiff") == "tif"


def test_preview_is_8bit_color_png(tmp_path: Path) -> None:
    r = np.linspace(-5, 5, 64, dtype=np.float32).reshape(8, 8)
    for signed in (False, True):
        p = maps.write_preview(tmp_path / f"p{signed}.png", r, signed=signed)
        img = cv2.imread(str(p), cv2.IMREAD_UNCHANGED)
        assert img.dtype == np.uint8 and img.shape == (8, 8, 3)
        assert len(np.unique(img.reshape(-1, 3), axis=0)) > 4


def test_dp_views_keep_stored_orientation_and_black_level(tmp_path: Path) -> None:
    from PIL import Image

    a = np.zeros((6, 10), np.uint16)
    a[0, :3] = 5000  # marks the top-left corner
    a[...] += 1000
    img = Image.fromarray(a)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° CW to display": must be ignored for DP views
    img.save(tmp_path / "l.png", exif=exif.tobytes())
    img.save(tmp_path / "r.png")
    left, right = maps.load_dp_pair(tmp_path / "l.png", tmp_path / "r.png", black_level=1000)
    assert left.pixels.shape == (6, 10, 1) and left.bit_depth == 16
    assert left.pixels[0, 0, 0] == pytest.approx(1.0) and left.pixels[5, 9, 0] == 0.0


# ---- classical estimators -------------------------------------------------------------------------


@pytest.mark.parametrize("shift", [-3, 2])
def test_block_matching_recovers_known_shift(shift: int) -> None:
    img = _texture()
    left = np.roll(img, shift, axis=1) * 1.15  # left(x) = right(x - shift), with a gain difference
    d, conf = dp_disparity(left, img, max_disparity=5, window=15)
    core = d[:, 12:-12]
    assert float(np.median(core)) == pytest.approx(shift, abs=0.1)
    assert float(conf.mean()) > 0.3


def test_subpixel_shift() -> None:
    img = _texture()
    m = np.float32([[1, 0, 1.5], [0, 1, 0]])
    left = cv2.warpAffine(img, m, (img.shape[1], img.shape[0]), borderMode=cv2.BORDER_REFLECT)
    d, _ = dp_disparity(left, img, max_disparity=4, window=15)
    assert float(np.median(d[:, 12:-12])) == pytest.approx(1.5, abs=0.15)


def test_disparity_to_radius_is_odd_and_monotonic() -> None:
    d = np.linspace(-10, 10, 41).astype(np.float32)
    r = disparity_to_radius(d)
    np.testing.assert_allclose(r, -r[::-1], atol=1e-5)
    assert np.all(np.diff(r) > 0)
    assert 1.4 < float(disparity_to_radius(np.array([6.0]))[0]) / 6.0 < 2.0


def test_classical_dp_recovers_kernel_model_sign_and_size() -> None:
    img = _texture(112, 144)
    for coc in (4.0, -4.0):
        left, right = _dp_pair(img, coc)
        r = dp_radius_map(left, right, max_disparity=6)
        med = float(np.median(r[16:-16, 16:-16]))
        assert np.sign(med) == np.sign(coc)
        assert 0.5 * abs(coc) < abs(med) < 1.6 * abs(coc)


def test_baseline_detection_and_vertical_pairs() -> None:
    img = _texture()
    left_v = np.roll(img, 2, axis=0)
    assert detect_baseline(np.roll(img, 2, axis=1), img) == "h"
    assert detect_baseline(left_v, img) == "v"
    res = estimate_dp_map(left_v, img, method="classical")
    assert res.baseline == "v" and res.radius.shape == img.shape and res.signed
    assert float(np.median(res.radius[12:-12])) > 1.0  # +2 px shift down → positive radius
    # a vertical-shading pair (as real DP vignetting) is read from the shading alone
    ramp = np.linspace(0.8, 1.25, img.shape[0], dtype=np.float32)[:, None]
    assert detect_baseline(img * ramp + 0.05, img + 0.05) == "v"


def test_single_image_classical_finds_blurred_half() -> None:
    # piecewise-constant blocks (step edges, the edge model's assumption); right half blurred with σ = 3,
    # i.e. a disc-equivalent radius of 6 px
    blocks = np.random.default_rng(3).random((6, 8)).astype(np.float32)
    img = cv2.resize(blocks, (128, 96), interpolation=cv2.INTER_NEAREST)
    blurred = img.copy()
    blurred[:, 64:] = cv2.GaussianBlur(img, (0, 0), 3.0)[:, 64:]
    res = estimate_single_map(np.dstack([blurred] * 3), method="classical")
    assert res.radius.shape == (96, 128) and not res.signed
    assert float(res.radius.min()) >= 0.0
    sharp_side, blurred_side = float(np.median(res.radius[:, :48])), float(np.median(res.radius[:, 80:]))
    assert blurred_side == pytest.approx(6.0, rel=0.3)
    assert sharp_side < 0.5 * blurred_side


# ---- learned paths with stand-ins ---------------------------------------------------------------


class _TinyMapNet(nn.Module):
    """Map contract stand-in: radius = 10 * (mean(left) - mean(right)) per pixel."""

    multiple_of = 1
    receptive_field = 0
    safe_precisions = ("fp32",)

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(10.0))

    def forward(self, left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
        assert left.shape[1] == 3 and right.shape[1] == 3
        return self.scale * (left.mean(1, keepdim=True) - right.mean(1, keepdim=True))


class _TinyDeblur(nn.Module):
    multiple_of = 1
    receptive_field = 0
    safe_precisions = ("fp32",)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def defocus_map(self, x: torch.Tensor) -> torch.Tensor:
        return 4.0 * x[:, :1]


class _NoMapDeblur(_TinyDeblur):
    defocus_map = None  # type: ignore[assignment]


def _fake_loader(monkeypatch: pytest.MonkeyPatch, module: nn.Module, calls: list[dict[str, Any]]) -> None:
    def load_model(name: Any = None, weights_file: Any = None, task: str = "deblur") -> weights.LoadedModel:
        calls.append({"name": name, "weights_file": weights_file, "task": task})
        return weights.LoadedModel(module=module.eval(), name=name or "tiny", arch="tiny", sha256="0" * 64,
                                   path=Path("tiny.safetensors"), spec=None)

    monkeypatch.setattr(weights, "load_model", load_model)


def test_learned_dp_map_through_run_map(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[dict[str, Any]] = []
    _fake_loader(monkeypatch, _TinyMapNet(), calls)
    a = np.full((20, 30), 0.5, np.float32)
    b = np.full((20, 30), 0.3, np.float32)
    a[:, 15:] = 0.2  # an edge the gain equalisation keeps (its low-pass is far wider than the frame)
    lp, rp = _write16(tmp_path / "L.png", a), _write16(tmp_path / "R.png", b)
    doc = run_map([lp, rp], tmp_path / "m.npy", model_name="tiny", signed=True, baseline="h",
                  black_level=1024, white_level=61024, device="cpu")
    assert calls == [{"name": "tiny", "weights_file": None, "task": "map"}]
    m = np.load(tmp_path / "m.npy")
    assert m.shape == (20, 30)
    # raw frames (a black level) are linear: the network sees prepare_linear_dp's views, not a and b
    pa, pb = prepare_linear_dp(a, b)
    np.testing.assert_allclose(m, 10 * (pa - pb), atol=2e-3)
    assert not np.allclose(m, 10 * (a - b), atol=0.05)
    assert doc["model"] == "tiny" and doc["items"][0]["signed"] is True and doc["items"][0]["baseline"] == "h"


def test_prepare_linear_dp_removes_vignetting_and_applies_the_tone_curve() -> None:
    rng = np.random.default_rng(0)
    scene = cv2.GaussianBlur(rng.random((96, 128)).astype(np.float32), (0, 0), 1.5) * 0.5 + 0.1
    x = np.linspace(0, 1, 128, dtype=np.float32)[None]
    left, right = scene * (1.0 + 0.4 * x), scene * (1.0 - 0.2 * x)  # opposite vignetting of the two views
    pl, pr = prepare_linear_dp(left, right)
    assert pl.shape == left.shape and pl.dtype == np.float32 and 0 <= pl.min() and pl.max() <= 1
    ratio = pl / pr
    assert abs(float(np.median(ratio[:, -16:])) - 1.0) < 0.03  # was (1.4 / 0.8) ** (1 / 2.2) ≈ 1.29
    raw = np.median(left[:, -16:] / right[:, -16:])
    assert raw > 1.6
    flat = np.full((8, 8), 0.25, np.float32)
    fl, _ = prepare_linear_dp(flat, flat)
    np.testing.assert_allclose(fl, 0.25 ** (1 / 2.2), rtol=1e-5)
    nl, _ = prepare_linear_dp(flat, flat * 0.5, equalize=False, gamma=1.0)
    np.testing.assert_allclose(nl, flat)


def test_learned_vertical_baseline_transposes_back(monkeypatch: pytest.MonkeyPatch) -> None:
    net = _TinyMapNet()
    left = np.zeros((8, 12), np.float32)
    left[:, :6] = 1.0
    res = estimate_dp_map(left, np.zeros_like(left), net, baseline="v", tile=0)
    assert res.radius.shape == (8, 12)
    np.testing.assert_allclose(res.radius[:, :6], 10.0)
    np.testing.assert_allclose(res.radius[:, 6:], 0.0)


def test_learned_work_factor_halves_to_the_working_side() -> None:
    from defocus_cli.defocus_map import learned_work_factor

    assert learned_work_factor((1008, 1344), 800) == 2  # a Pixel 4 DP frame runs at 672 px
    assert learned_work_factor((3024, 4032), 800) == 8
    assert learned_work_factor((600, 800), 800) == 1
    assert learned_work_factor((1008, 1344), 0) == learned_work_factor((1008, 1344), None) == 1
    with pytest.raises(UsageError, match="work_side"):
        learned_work_factor((8, 8), -1)


def test_learned_map_at_a_working_scale_is_in_input_px() -> None:
    """The network sees views reduced 4x (48 px → 12 ≤ 16); the map comes back at 40x48 and in input px: a
    uniform disparity signal of 1 gives radius 10 (the stand-in) x 4 (the factor), against 10 at full size."""
    net = _TinyMapNet()
    left = np.ones((40, 48), np.float32)
    res = estimate_dp_map(left, np.zeros_like(left), net, baseline="h", tile=0, work_side=16)
    assert res.radius.shape == (40, 48) and res.info["work_factor"] == 4
    np.testing.assert_allclose(res.radius, 40.0, rtol=1e-5)
    full = estimate_dp_map(left, np.zeros_like(left), net, baseline="h", tile=0, work_side=0)
    assert full.info["work_factor"] == 1
    np.testing.assert_allclose(full.radius, 10.0, rtol=1e-5)


def test_learned_single_image_uses_engine_defocus_map(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[dict[str, Any]] = []
    _fake_loader(monkeypatch, _TinyDeblur(), calls)
    img = np.zeros((10, 14, 3), np.uint8)
    img[..., 2] = 255  # red channel full (cv2 BGR order) → R = 1
    cv2.imwrite(str(tmp_path / "i.png"), img)
    run_map([tmp_path / "i.png"], tmp_path / "m.tif", model_name="ifan", device="cpu")
    assert calls[0]["task"] == "deblur"
    np.testing.assert_allclose(maps.read_map(tmp_path / "m.tif"), 4.0, atol=1e-5)
    with pytest.raises(UsageError):
        estimate_single_map(np.zeros((4, 4, 3), np.float32), _NoMapDeblur())


# ---- the command --------------------------------------------------------------------------------


runner = CliRunner()


@pytest.fixture
def dp_files(tmp_path: Path) -> tuple[Path, Path]:
    img = _texture(64, 80, seed=5)
    img = (img - img.min()) / (img.max() - img.min())
    return _write16(tmp_path / "left.png", np.roll(img, 2, axis=1)), _write16(tmp_path / "right.png", img)


def test_cli_classical_pair_json_and_preview(tmp_path: Path, dp_files: tuple[Path, Path]) -> None:
    out, prev = tmp_path / "map.npy", tmp_path / "view.png"
    r = runner.invoke(app, ["map", str(dp_files[0]), str(dp_files[1]), "-o", str(out), "--method", "classical",
                            "--black-level", "1024", "--signed", "--preview", str(prev), "--json"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    item = doc["items"][0]
    assert item["status"] == "ok" and item["baseline"] == "h" and item["format"] == "npy" and item["signed"]
    m = np.load(out)
    assert m.shape == (64, 80) and float(np.median(m[:, 10:-10])) > 1.5
    assert item["radius"]["median"] == pytest.approx(float(np.median(m)), abs=1e-3)
    assert cv2.imread(str(prev)).shape == (64, 80, 3)
    # png16 through the CLI
    r = runner.invoke(app, ["map", str(dp_files[0]), str(dp_files[1]), "-o", str(tmp_path / "m.png"),
                            "--method", "classical", "-q"])
    assert r.exit_code == 0, r.output
    assert cv2.imread(str(tmp_path / "m.png"), cv2.IMREAD_UNCHANGED).dtype == np.uint16


@pytest.mark.parametrize(
    "args,code",
    [
        (["{L}", "{R}", "-o", "{T}/m.png", "--method", "classical", "--signed"], 2),  # png16 cannot be signed
        (["{L}", "{R}", "{L}", "-o", "{T}/m.npy", "--method", "classical"], 2),  # three inputs
        (["{L}", "{R}", "-o", "{T}/m.npy", "--method", "magic"], 2),
        (["{L}", "{R}", "-o", "{T}/m.jpg", "--method", "classical"], 2),  # unknown map format
        (["{L}", "{R}", "-o", "{T}/m.npy", "--baseline", "diag", "--method", "classical"], 2),
        (["{T}/missing.png", "{R}", "-o", "{T}/m.npy", "--method", "classical"], 1),
        (["{L}", "{T}/small.png", "-o", "{T}/m.npy", "--method", "classical"], 1),  # size mismatch
        (["{L}", "{R}", "-o", "{L}", "--method", "classical", "--format", "npy"], 2),  # would replace input
        (["{L}", "{R}", "-o", "{T}/exists.npy", "--method", "classical"], 2),  # exists, no --overwrite
        (["{L}", "{R}", "-o", "{T}/nodir/m.npy", "--method", "classical"], 2),  # folder missing: checked first
    ],
)
def test_cli_error_exit_codes(tmp_path: Path, dp_files: tuple[Path, Path], args: list[str], code: int) -> None:
    _write16(tmp_path / "small.png", np.zeros((10, 10), np.float32))
    (tmp_path / "exists.npy").write_bytes(b"keep")
    argv = [a.format(L=dp_files[0], R=dp_files[1], T=tmp_path) for a in args]
    r = runner.invoke(app, ["map", *argv])
    assert r.exit_code == code, r.output
    assert "error:" in r.output
    assert (tmp_path / "exists.npy").read_bytes() == b"keep"


@pytest.mark.parametrize(("args", "line"), [
    (["--max-disparity", "0"], "error: --max-disparity must be >= 1, got 0"),
    (["--baseline", "diag"], "error: --baseline must be h, v or auto, got 'diag'"),
    (["--method", "magic"], "error: --method must be one of learned, classical, got 'magic'"),
])
def test_cli_names_the_option_of_a_bad_value(tmp_path: Path, dp_files: tuple[Path, Path], args: list[str],
                                             line: str) -> None:
    """run_map's errors name values (``max disparity must be ...``); the CLI's line names the option."""
    argv = [str(dp_files[0]), str(dp_files[1]), "-o", str(tmp_path / "m.npy"), "--method", "classical", *args]
    r = runner.invoke(app, ["map", *argv])
    assert r.exit_code == 2 and r.stderr.strip() == line, r.stderr


def test_cli_json_error_document(tmp_path: Path, dp_files: tuple[Path, Path]) -> None:
    r = runner.invoke(app, ["map", str(tmp_path / "nope.png"), str(dp_files[1]), "-o", str(tmp_path / "m.npy"),
                            "--method", "classical", "--json"])
    assert r.exit_code == 1
    doc = json.loads(r.stdout.splitlines()[0])
    assert doc["items"][0]["status"] == "error" and "no such file" in doc["items"][0]["error"]


def test_cli_overwrite(tmp_path: Path, dp_files: tuple[Path, Path]) -> None:
    out = tmp_path / "m.npy"
    out.write_bytes(b"old")
    r = runner.invoke(app, ["map", str(dp_files[0]), str(dp_files[1]), "-o", str(out), "--method", "classical",
                            "--overwrite", "-q"])
    assert r.exit_code == 0, r.output
    assert np.load(out).shape == (64, 80)
    with pytest.raises(UsageError):
        run_map([dp_files[0], dp_files[1]], out, method="classical")
