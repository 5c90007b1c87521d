"""``defocus score``: pairing rules, protocols, JSON/CSV shape, gates and the HTML report."""

from __future__ import annotations

import csv
import json
import re
import statistics
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import SHARED

from defocus_cli import metrics as M
from defocus_cli import scoring as S
from defocus_cli.cli import app
from defocus_cli.errors import UsageError

H, W = 48, 64  # big enough for AlexNet's strides (LPIPS) and SSIM's 7×7 window


def _photo(seed: int, h: int = H, w: int = W) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = cv2.GaussianBlur(rng.random((h, w, 3)).astype(np.float32), (0, 0), 1.5)
    return (img - img.min()) / (img.max() - img.min())


def _write(path: Path, rgb01: np.ndarray, bits: int = 8) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    maxv = 65535 if bits == 16 else 255
    arr = np.rint(np.clip(rgb01, 0, 1) * maxv).astype(np.uint16 if bits == 16 else np.uint8)
    assert cv2.imwrite(str(path), np.ascontiguousarray(arr[:, :, ::-1]))
    return path


def _touch(root: Path, *names: str) -> None:
    for n in names:
        _write(root / n, _photo(len(n)))


def _run(*args: str) -> tuple[int, str, str]:
    r = CliRunner().invoke(app, ["score", *args])
    return r.exit_code, r.stdout, r.stderr


@pytest.fixture()
def dataset(tmp_path: Path) -> dict[str, Path]:
    """3 GT images, their blurry inputs (DPDD-style folders) and results named with suffixes."""
    gt_dir, in_dir, pred_dir = tmp_path / "test_c/target", tmp_path / "test_c/source", tmp_path / "results"
    for i, name in enumerate(("1P0A1225", "1P0A1226", "1P0A1227")):
        gt = _photo(i)
        blurry = cv2.GaussianBlur(gt, (0, 0), 2.0)
        _write(gt_dir / f"{name}.png", gt)
        _write(in_dir / f"{name}.png", blurry)
        _write(pred_dir / f"{name}_sharp.png", np.clip(0.5 * gt + 0.5 * blurry, 0, 1))
    return {"gt": gt_dir, "input": in_dir, "pred": pred_dir}


# --------------------------------------------------------------------------------------------- pairing


@pytest.mark.parametrize(
    "name,key",
    [
        ("1P0A1225_sharp", "1p0a1225"),
        ("1P0A1225_C_deblurred", "1p0a1225"),
        ("1P0A1225-output", "1p0a1225"),
        ("sub/IMG_1.gt", "sub/img_1"),
        ("IMG_0001", "img_0001"),
        ("sharp", "sharp"),  # never strips a whole name
        ("scene_l_sharp", "scene"),
    ],
)
def test_normalise_key(name: str, key: str) -> None:
    assert S.normalise_key(name) == key


def test_pairs_by_stem_with_suffixes_and_reports_missing(tmp_path: Path) -> None:
    _touch(tmp_path / "gt", "a.png", "b.png", "sub/c.png", "d.png")
    _touch(tmp_path / "pred", "a_sharp.png", "B_output.jpg", "sub/c.png", "zzz.png")
    p = S.pair_paths(tmp_path / "pred", tmp_path / "gt")
    by_name = {q.name: q for q in p.pairs}
    assert by_name["a"].gt == tmp_path / "gt/a.png" and by_name["a"].error is None
    assert by_name["b"].pred == tmp_path / "pred/B_output.jpg"
    assert by_name["sub/c"].gt == tmp_path / "gt/sub/c.png"
    assert "no ground truth" in (by_name["zzz"].error or "")
    assert p.missing == [tmp_path / "gt/d.png"]


def test_ambiguous_predictions_are_errors_not_guesses(tmp_path: Path) -> None:
    # `defocus deblur photos/` writes x_sharp.jpg next to x.jpg: scoring that folder must not pick one silently
    _touch(tmp_path / "gt", "x.png")
    _touch(tmp_path / "pred", "x.png", "x_sharp.png")
    p = S.pair_paths(tmp_path / "pred", tmp_path / "gt")
    assert len(p.pairs) == 2
    assert all("several predictions" in (q.error or "") for q in p.pairs)


def test_input_folder_pairs_with_gt(dataset: dict[str, Path]) -> None:
    p = S.pair_paths(dataset["pred"], dataset["gt"], dataset["input"])
    assert p.has_input and len(p.pairs) == 3
    for q in p.pairs:
        assert q.input == dataset["input"] / f"{q.name}.png" and q.error is None


def test_usage_errors(tmp_path: Path) -> None:
    _touch(tmp_path / "gt", "a.png")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match="not found"):
        S.pair_paths(tmp_path / "nope", tmp_path / "gt")
    with pytest.raises(UsageError, match="files or all be folders"):
        S.pair_paths(tmp_path / "gt/a.png", tmp_path / "gt")
    with pytest.raises(UsageError, match="no images"):
        S.pair_paths(tmp_path / "empty", tmp_path / "gt")


# --------------------------------------------------------------------------------------------- protocols


def test_dpdd8_reads_16bit_like_cv2_imread(tmp_path: Path) -> None:
    """The 8-bit protocol scripts read 16-bit PNGs with cv2.imread(path) (IMREAD_COLOR): v >> 8."""
    img16 = _photo(5)
    path = _write(tmp_path / "x16.png", img16, bits=16)
    ref = cv2.imread(str(path))[:, :, ::-1].astype(np.float64) / 255.0
    got = S.load_image(path, "dpdd8")
    assert got.bit_depth == 16
    np.testing.assert_array_equal(got.pixels, ref)
    native = S.load_image(path, "native").pixels
    np.testing.assert_array_equal(native, cv2.imread(str(path), -1)[:, :, ::-1] / 65535.0)
    np.testing.assert_array_equal(S.load_image(path, "dpdd16").pixels, native)


def test_8bit_file_is_exact_on_16bit_grid(tmp_path: Path) -> None:
    path = _write(tmp_path / "x8.png", _photo(6))
    exact = cv2.imread(str(path))[:, :, ::-1] / 255.0
    for proto in ("native", "dpdd8", "dpdd16"):
        np.testing.assert_allclose(S.load_image(path, proto).pixels, exact, atol=1e-15)


def test_fail_under_parsing_and_direction() -> None:
    gates = S.parse_fail_under("psnr=25, ssim=0.8,lpips=0.3")
    assert gates == {"psnr": 25.0, "ssim": 0.8, "lpips": 0.3}
    assert S.check_thresholds({"psnr": 26, "ssim": 0.9, "lpips": 0.2}, gates) == []
    failed = S.check_thresholds({"psnr": 24, "ssim": 0.9, "lpips": 0.4}, gates)
    assert len(failed) == 2 and any("psnr" in f for f in failed) and any("lpips" in f for f in failed)
    for bad in ("psnr", "psnr=abc", "fid=3"):
        with pytest.raises(UsageError):
            S.parse_fail_under(bad)


# --------------------------------------------------------------------------------------------- CLI


def test_json_shape_and_values(dataset: dict[str, Path]) -> None:
    code, out, _ = _run(str(dataset["pred"]), str(dataset["gt"]), "--metrics", "psnr,ssim", "--json")
    assert code == 0
    doc = json.loads(out)
    assert {"version", "protocol", "settings", "items", "mean", "median"} <= set(doc)
    assert doc["protocol"] == "native" and doc["settings"]["ssim"]["win_size"] == 7
    assert doc["settings"]["versions"]["defocus"] == doc["version"]
    assert len(doc["items"]) == 3
    for it in doc["items"]:
        assert {"pred", "gt", "psnr", "ssim"} <= set(it) and "mae" not in it and "lpips" not in it
        pred = S.load_image(Path(it["pred"]), "native").pixels
        gt = S.load_image(Path(it["gt"]), "native").pixels
        assert it["psnr"] == pytest.approx(M.psnr(pred, gt), abs=1e-9)
    assert set(doc["mean"]) == {"psnr", "ssim"}
    assert doc["mean"]["psnr"] == pytest.approx(statistics.fmean(i["psnr"] for i in doc["items"]))
    assert doc["median"]["ssim"] == pytest.approx(statistics.median(i["ssim"] for i in doc["items"]))


def test_input_adds_input_scores_and_gain_with_lpips(dataset: dict[str, Path]) -> None:
    code, out, _ = _run(str(dataset["pred"]), str(dataset["gt"]), "--input", str(dataset["input"]),
                        "--metrics", "psnr,lpips", "--json", "--device", "cpu")
    assert code == 0
    doc = json.loads(out)
    for it in doc["items"]:
        assert it["gain_psnr"] == pytest.approx(it["psnr"] - it["input_psnr"])
        assert it["gain_lpips"] == pytest.approx(it["input_lpips"] - it["lpips"])  # lower-better: positive = better
        assert it["gain_psnr"] > 0  # the fake result is half-way back to the GT
    assert {"input_psnr", "gain_psnr", "input_lpips", "gain_lpips"} <= set(doc["mean"])


def test_fail_under_exit_code(dataset: dict[str, Path]) -> None:
    args = [str(dataset["pred"]), str(dataset["gt"]), "--metrics", "psnr,mae", "--json"]
    mean_psnr = json.loads(_run(*args)[1])["mean"]["psnr"]
    assert _run(*args, "--fail-under", f"psnr={mean_psnr - 1:.3f}")[0] == 0
    code, _, err = _run(*args, "--fail-under", f"psnr={mean_psnr + 1:.3f}")
    assert code == 1 and "fail-under" in err
    assert _run(*args, "--fail-under", "mae=0.000001")[0] == 1  # lower-better: fails above the threshold
    assert _run(*args, "--fail-under", "lpips=0.5")[0] == 2  # not in --metrics: usage error


def test_usage_errors_exit_2(dataset: dict[str, Path]) -> None:
    base = [str(dataset["pred"]), str(dataset["gt"])]
    assert _run(*base, "--protocol", "dpdd12")[0] == 2
    assert _run(*base, "--metrics", "psnr,fid")[0] == 2
    assert _run(str(dataset["pred"] / "missing"), str(dataset["gt"]))[0] == 2


def test_size_mismatch_and_missing_exit_1(tmp_path: Path) -> None:
    _write(tmp_path / "gt/a.png", _photo(1))
    _write(tmp_path / "gt/b.png", _photo(2))
    _write(tmp_path / "gt/c.png", _photo(3))
    _write(tmp_path / "pred/a.png", _photo(1, H, W + 8))
    _write(tmp_path / "pred/b.png", _photo(2))
    code, out, err = _run(str(tmp_path / "pred"), str(tmp_path / "gt"), "-m", "psnr", "--json")
    assert code == 1
    doc = json.loads(out)
    a = next(i for i in doc["items"] if i["name"] == "a")
    assert a["status"] == "error" and "size differs" in a["error"] and "psnr" not in a
    assert doc["missing"] == [str(tmp_path / "gt/c.png")] and doc["mean"]["psnr"] > 0
    assert "size differs" in err and "no result" in err
    # missing GT alone may be allowed; the size error still fails
    assert _run(str(tmp_path / "pred"), str(tmp_path / "gt"), "-m", "psnr", "--allow-missing")[0] == 1


def test_single_files_and_table(dataset: dict[str, Path]) -> None:
    code, out, _ = _run(str(dataset["pred"] / "1P0A1225_sharp.png"), str(dataset["gt"] / "1P0A1226.png"),
                        "-m", "ssim,mae", "--protocol", "dpdd8")
    assert code == 0  # two files are paired whatever their names
    assert "SSIM" in out and "MAE" in out and "mean" in out and "PSNR" not in out and "dpdd8" in out


def test_csv(dataset: dict[str, Path], tmp_path: Path) -> None:
    out_csv = tmp_path / "s.csv"
    code, _, _ = _run(str(dataset["pred"]), str(dataset["gt"]), "--input", str(dataset["input"]),
                      "-m", "psnr,ssim", "--csv", str(out_csv), "--protocol", "dpdd16", "--json")
    assert code == 0
    rows = list(csv.DictReader(out_csv.open(encoding="utf-8")))
    assert len(rows) == 3
    assert list(rows[0])[:7] == ["name", "pred", "gt", "input", "height", "width", "bit_depth"]
    assert {"psnr", "ssim", "input_psnr", "gain_ssim", "status", "protocol", "version"} <= set(rows[0])
    assert all(r["protocol"] == "dpdd16" and r["status"] == "ok" for r in rows)
    assert float(rows[0]["gain_psnr"]) == pytest.approx(float(rows[0]["psnr"]) - float(rows[0]["input_psnr"]))


def test_report_is_self_contained(dataset: dict[str, Path], tmp_path: Path) -> None:
    report = tmp_path / "r.html"
    code, _, _ = _run(str(dataset["pred"]), str(dataset["gt"]), "--input", str(dataset["input"]),
                      "-m", "psnr,ssim", "--report", str(report), "--json")
    assert code == 0
    page = report.read_text(encoding="utf-8")
    srcs = re.findall(r"""\bsrc\s*=\s*['"]?([^'" >]+)""", page)
    hrefs = re.findall(r"""\bhref\s*=\s*['"]?([^'" >]+)""", page)
    assert srcs and all(s.startswith("data:image/") for s in srcs)
    assert all(h.startswith("#") for h in hrefs)
    assert "url(" not in page and "@import" not in page and "<script" not in page
    # per image: input / result / ground truth previews + at least one zoomed crop × 3 panels
    assert len(srcs) % 3 == 0 and 3 * (3 + 3) <= len(srcs) <= 3 * (3 + 3 * 2)
    assert page.count("<section id=") == 3 and "median" in page and "protocol <b>native</b>" in page


def test_find_windows_locates_the_change() -> None:
    from defocus_cli.report import find_windows

    a = np.zeros((120, 160, 3))
    b = a.copy()
    b[70:90, 100:120] = 1.0  # the only change
    wins = find_windows(a, b, 20, count=2)
    assert (wins[0].y, wins[0].x) == (70, 100) and wins[0].change == pytest.approx(1.0)
    assert len(wins) == 2 and abs(wins[1].y - 70) + abs(wins[1].x - 100) >= 20  # second is elsewhere


LFDOF = SHARED / "data" / "lfdof"


@pytest.mark.skipif(not (LFDOF / "input").is_dir(), reason=f"real photo pairs not found at {LFDOF} (development data)")
def test_folder_scores_match_skimage_on_real_photos() -> None:
    """End to end (pairing, photo reading, protocol) on 7 real defocus pairs vs scikit-image on cv2-read pixels."""
    skm = pytest.importorskip("skimage.metrics", reason="scikit-image (test extra) is the reference")
    result = S.evaluate(S.pair_paths(LFDOF / "input", LFDOF / "target"), ["psnr", "ssim"], protocol="native")
    assert len(result.ok_items) == len(list((LFDOF / "target").glob("*.png"))) > 0
    for it in result.items:
        assert it.pair.pred is not None and it.pair.gt is not None
        pred = cv2.imread(str(it.pair.pred))[:, :, ::-1] / 255.0
        gt = cv2.imread(str(it.pair.gt))[:, :, ::-1] / 255.0
        assert it.scores["psnr"] == pytest.approx(skm.peak_signal_noise_ratio(gt, pred, data_range=1.0), abs=0.01)
        assert it.scores["ssim"] == pytest.approx(
            skm.structural_similarity(pred, gt, data_range=1.0, channel_axis=-1), abs=1e-6
        )
