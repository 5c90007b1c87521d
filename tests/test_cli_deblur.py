"""``defocus deblur`` end to end, with small engines defined in the tests (conftest.use_engine)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import cv2
import numpy as np
import piexif
import pytest
from PIL import Image, ImageOps
from typer.testing import CliRunner

from conftest import make_exif, sample_icc, smooth_rgb
from defocus_cli.cli import app
from defocus_cli.errors import WeightsError


def run(*args: str, input: bytes | None = None):  # noqa: A002, ANN201
    return CliRunner().invoke(app, ["deblur", *args], input=input)


def test_orientation6_jpeg_with_icc_keeps_icc_exif_and_display(tmp_path: Path, use_engine) -> None:  # noqa: ANN001
    use_engine("identity")
    icc = sample_icc()
    src = tmp_path / "portrait.jpg"
    Image.fromarray(smooth_rgb(48, 64)).save(src, "JPEG", quality=95, exif=make_exif(6, thumbnail=True),
                                             icc_profile=icc)
    before = src.read_bytes()
    r = run(str(src))
    assert r.exit_code == 0, r.stderr
    out = tmp_path / "portrait_sharp.jpg"
    im_in, im_out = Image.open(src), Image.open(out)
    assert im_out.info["icc_profile"] == icc
    ex_in, ex_out = piexif.load(im_in.info["exif"]), piexif.load(im_out.info["exif"])
    for ifd, tag in [("0th", piexif.ImageIFD.Make), ("0th", piexif.ImageIFD.Model),
                     ("Exif", piexif.ExifIFD.DateTimeOriginal), ("Exif", piexif.ExifIFD.ExposureTime),
                     ("Exif", piexif.ExifIFD.FNumber)]:
        assert ex_out[ifd][tag] == ex_in[ifd][tag]
    assert ex_out["0th"][piexif.ImageIFD.Orientation] == 1 and ex_out["thumbnail"] is None
    shown_in = np.asarray(ImageOps.exif_transpose(im_in)).astype(float)
    shown_out = np.asarray(ImageOps.exif_transpose(im_out)).astype(float)
    assert shown_in.shape == shown_out.shape == (64, 48, 3)  # displays as a portrait, like the input
    assert np.abs(shown_in - shown_out).mean() < 2.0  # identity engine: only JPEG re-encoding differs
    assert src.read_bytes() == before


def test_16bit_png_comes_out_16bit(tmp_path: Path, use_engine) -> None:  # noqa: ANN001
    use_engine("identity")
    arr = smooth_rgb(20, 30, dtype="uint16")
    src = tmp_path / "deep.png"
    cv2.imwrite(str(src), arr[:, :, ::-1])
    r = run(str(src), "-o", str(tmp_path / "out.png"))
    assert r.exit_code == 0, r.stderr
    back = cv2.imread(str(tmp_path / "out.png"), cv2.IMREAD_UNCHANGED)
    assert back.dtype == np.uint16
    np.testing.assert_array_equal(back[:, :, ::-1], arr)


def test_batch_with_one_bad_file_exits_1_writes_the_good_one_and_reports_json(tmp_path: Path, use_engine) -> None:  # noqa: ANN001,E501
    use_engine("sharpen")
    good = tmp_path / "in" / "good.png"
    good.parent.mkdir()
    Image.fromarray(smooth_rgb(16, 16)).save(good)
    (tmp_path / "in" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 garbage")
    r = run(str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--json")
    assert r.exit_code == 1
    doc = json.loads(r.stdout)
    status = {Path(i["input"]).name: i for i in doc["items"]}
    assert status["good.png"]["status"] == "ok" and status["good.png"]["error"] is None
    assert status["broken.jpg"]["status"] == "error" and status["broken.jpg"]["error"]
    assert doc["model"] == "test-sharpen" and doc["device"] == "cpu" and doc["precision"] == "fp32"
    assert set(doc) >= {"version", "model", "weights_sha256", "device", "precision", "tile", "items"}
    out = np.asarray(Image.open(tmp_path / "out" / "good.png")).astype(float)
    assert out.shape == (16, 16, 3) and not np.array_equal(out, smooth_rgb(16, 16))  # the engine ran
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["good.png"]
    assert "broken.jpg" in r.stderr and "Traceback" not in r.stderr


def test_sharpen_engine_increases_detail(tmp_path: Path, use_engine) -> None:  # noqa: ANN001
    use_engine("sharpen")
    src = tmp_path / "a.png"
    blurred = cv2.GaussianBlur(smooth_rgb(32, 32, seed=5), (5, 5), 1.5)
    Image.fromarray(blurred).save(src)
    assert run(str(src), "-q").exit_code == 0
    out = np.asarray(Image.open(tmp_path / "a_sharp.png")).astype(float)

    def detail(a: np.ndarray) -> float:
        return float(np.abs(np.diff(a, axis=1)).mean())

    assert detail(out) > detail(blurred.astype(float)) * 1.1


def test_stdin_to_stdout(use_engine) -> None:  # noqa: ANN001
    use_engine("identity")
    buf = io.BytesIO()
    Image.fromarray(smooth_rgb(8, 9)).save(buf, "PNG")
    r = run("-", "-o", "-", "--format", "png", input=buf.getvalue())
    assert r.exit_code == 0, r.stderr
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(r.stdout_bytes))), smooth_rgb(8, 9))


def test_weights_error_exits_3(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from defocus_cli import weights

    def fail(*a: object, **k: object) -> None:
        raise WeightsError("model 'ifan' is not cached and HF_HUB_OFFLINE=1; run `defocus models download ifan`")

    monkeypatch.setattr(weights, "load_model", fail)
    src = tmp_path / "a.png"
    Image.fromarray(smooth_rgb(4, 4)).save(src)
    r = run(str(src))
    assert r.exit_code == 3
    assert r.stderr.strip().splitlines()[-1].startswith("error: model 'ifan' is not cached")
    assert not (tmp_path / "a_sharp.png").exists()


def test_unavailable_device_exits_4(tmp_path: Path, use_engine) -> None:  # noqa: ANN001
    use_engine("identity")
    src = tmp_path / "a.png"
    Image.fromarray(smooth_rgb(4, 4)).save(src)
    r = run(str(src), "--device", "cuda:99")
    assert r.exit_code == 4 and "error:" in r.stderr


@pytest.mark.parametrize(
    "extra",
    [["--tile", "big"], ["--overwrite", "--skip-existing"], ["--format", "bmp"], ["--quality", "0"],
     ["--precision", "fp8"], ["--json", "-o", "-", "--format", "png"]],
)
def test_usage_errors_exit_2_before_loading_the_model(tmp_path: Path, use_engine, extra: list[str]) -> None:  # noqa: ANN001,E501
    calls = use_engine("identity")
    src = tmp_path / "a.png"
    Image.fromarray(smooth_rgb(4, 4)).save(src)
    r = run(str(src), *extra)
    assert r.exit_code == 2, (r.stdout, r.stderr)
    if extra[0] != "--precision":
        assert calls == []


def test_tile_error_names_the_option(tmp_path: Path, use_engine) -> None:  # noqa: ANN001
    use_engine("identity")
    src = tmp_path / "a.png"
    Image.fromarray(smooth_rgb(4, 4)).save(src)
    r = run(str(src), "-o", str(tmp_path / "out.png"), "--tile", "big")
    assert r.exit_code == 2 and "--tile must be auto, 0 or a positive number of pixels, got 'big'" in r.stderr, r.stderr
    assert not (tmp_path / "a_sharp.png").exists()


def test_engine_failure_is_one_line_and_traceback_only_with_verbose(tmp_path: Path, use_engine) -> None:  # noqa: ANN001,E501
    use_engine("fail")
    src = tmp_path / "a.png"
    Image.fromarray(smooth_rgb(4, 4)).save(src)
    r = run(str(src))
    assert r.exit_code == 1
    assert "engine exploded on purpose" in r.stderr and "Traceback" not in r.stderr
    r = run(str(src), "-v")
    assert r.exit_code == 1 and "Traceback" in r.stderr
    assert not (tmp_path / "a_sharp.png").exists()


def test_skip_existing_does_not_load_the_model(tmp_path: Path, use_engine) -> None:  # noqa: ANN001
    calls = use_engine("identity")
    src = tmp_path / "a.png"
    Image.fromarray(smooth_rgb(4, 4)).save(src)
    (tmp_path / "a_sharp.png").write_bytes(b"earlier result")
    r = run(str(src), "--skip-existing", "--json")
    assert r.exit_code == 0 and calls == []
    assert json.loads(r.stdout)["items"][0]["status"] == "skipped"
    assert (tmp_path / "a_sharp.png").read_bytes() == b"earlier result"
    r = run(str(src), "--overwrite", "--model", "somename", "--weights", "w.safetensors")
    assert r.exit_code == 0 and calls == [{"name": "somename", "weights_file": "w.safetensors", "task": "deblur"}]
    assert Image.open(tmp_path / "a_sharp.png").size == (4, 4)


def test_tiled_run_matches_whole_image(tmp_path: Path, use_engine) -> None:  # noqa: ANN001
    use_engine("sharpen")
    src = tmp_path / "a.png"
    Image.fromarray(smooth_rgb(40, 56, seed=2)).save(src)
    assert run(str(src), "-o", str(tmp_path / "whole.png"), "--tile", "0").exit_code == 0
    assert run(str(src), "-o", str(tmp_path / "tiled.png"), "--tile", "16", "--overlap", "4").exit_code == 0
    whole = np.asarray(Image.open(tmp_path / "whole.png")).astype(int)
    tiled = np.asarray(Image.open(tmp_path / "tiled.png")).astype(int)
    assert np.abs(whole - tiled).max() <= 1


def test_quiet_success_prints_nothing(tmp_path: Path, use_engine) -> None:  # noqa: ANN001
    use_engine("identity")
    for n in ("a", "b"):
        Image.fromarray(smooth_rgb(4, 4)).save(tmp_path / f"{n}.png")
    r = run(str(tmp_path / "a.png"), str(tmp_path / "b.png"), "-q")
    assert r.exit_code == 0 and r.stdout == "" and r.stderr == ""
    r = run(str(tmp_path / "a.png"), str(tmp_path / "b.png"), "--overwrite")
    assert r.exit_code == 0 and "2 written" in r.stderr


def test_python_api_deblur_photo(tmp_path: Path) -> None:
    from conftest import _make_engine
    from defocus_cli.api import deblur_photo, read_photo

    src = tmp_path / "in.png"
    Image.fromarray(smooth_rgb(12, 10)).save(src)
    out = deblur_photo(src, _make_engine("identity"), output=tmp_path / "out.jpg", device="cpu", tile=0)
    assert out.shape == (12, 10, 3) and out.dtype == np.float32
    np.testing.assert_allclose(out, read_photo(src).pixels, atol=1e-6)
    assert Image.open(tmp_path / "out.jpg").format == "JPEG"


# ------------------------------------------------------------------------------------------------
# the engine boundary: the command hands its options to api.load_restorer, once, unchanged


def test_cli_passes_its_options_to_load_restorer_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from conftest import _make_engine
    from defocus_cli import api
    from defocus_cli.restorer import Restorer

    calls: list[tuple[tuple[object, ...], dict[str, object]]] = []

    def fake(*args: object, **kwargs: object) -> Restorer:
        calls.append((args, kwargs))
        return Restorer.create(_make_engine("identity"), device="cpu", precision="fp32", tile=256, name="fake",
                               weights_sha256="f" * 64)

    monkeypatch.setattr(api, "load_restorer", fake)
    for name in ("a", "b"):
        Image.fromarray(smooth_rgb(20, 24, seed=3)).save(tmp_path / f"{name}.png")
    r = run(str(tmp_path / "a.png"), str(tmp_path / "b.png"), "--tile", "256", "--device", "cpu",
            "--precision", "fp32", "--json")
    assert r.exit_code == 0, r.output
    assert calls == [((None,), {"weights": None, "device": "cpu", "precision": "fp32", "tile": 256,
                                "overlap": None, "backend": "auto"})]
    doc = json.loads(r.stdout)
    assert (doc["model"], doc["weights_sha256"], doc["device"], doc["precision"], doc["backend"], doc["tile"],
            doc["overlap"]) == ("fake", "f" * 64, "cpu", "fp32", "torch", 0, 2)


def test_cli_deblur_reaches_the_engine_only_through_api() -> None:
    """``cli/deblur.py`` imports ``api`` and ``batch`` from the library's task layer, no engine module."""
    import ast

    import defocus_cli.cli.deblur as mod

    names: set[str] = set()
    for node in ast.walk(ast.parse(Path(mod.__file__).read_text())):
        if isinstance(node, ast.ImportFrom) and node.module == "defocus_cli":
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    assert {"api", "batch"} <= names
    engine = {"runtime", "devices", "weights", "backends", "restorer", "tiling", "defocus_cli.runtime",
              "defocus_cli.devices", "defocus_cli.weights", "defocus_cli.backends", "defocus_cli.restorer"}
    assert not names & engine, names & engine
