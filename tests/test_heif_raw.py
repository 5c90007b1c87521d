"""HEIC/HEIF input and output (pillow-heif, extra [heif]) and camera RAW input (rawpy, extra [raw]).

The files are made here: HEIC by pillow-heif itself, a small DNG (RGGB mosaic, 16-bit samples, colour matrix,
as-shot white balance and an Exif IFD) by a minimal TIFF writer below. Tests that need a package skip, naming the
extra, when it is not installed; the missing-package messages and the format detection are tested always.
"""

from __future__ import annotations

import io
import json
import struct
import sys
from pathlib import Path

import cv2
import numpy as np
import piexif
import pytest
from PIL import Image
from typer.testing import CliRunner

from defocus_cli.cli import app
from defocus_cli.io import formats, heif_raw
from defocus_cli.io.formats import detect

try:
    import pillow_heif
except ImportError:  # pragma: no cover - the [heif] extra is optional
    pillow_heif = None
try:
    import rawpy
except ImportError:  # pragma: no cover - the [raw] extra is optional
    rawpy = None

needs_heif = pytest.mark.skipif(pillow_heif is None, reason="pillow-heif not installed (pip install -e '.[heif]')")
needs_raw = pytest.mark.skipif(rawpy is None, reason="rawpy not installed (pip install -e '.[raw]')")


def run(*args: str):  # noqa: ANN201
    return CliRunner().invoke(app, ["deblur", *args])


# ------------------------------------------------------------------------------------------- files


def tiff_bytes(ifd0: list, pixels: bytes, exif_ifd: list | None = None) -> bytes:
    """Little-endian TIFF: IFD0 (list of (tag, type, values)), optional Exif IFD, pixel strip at the end."""
    sizes = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 10: 8}
    codes = {1: "B", 2: "B", 3: "H", 4: "I", 5: "II", 10: "ii"}
    def pack_vals(typ, vals):
        if typ == 2:
            vals = list(vals.encode() + b"\0")
        if typ in (5, 10):
            flat = [x for v in vals for x in v]
            return struct.pack("<" + codes[typ][0] * len(flat), *flat), len(vals)
        return struct.pack("<" + codes[typ] * len(vals), *vals), len(vals)
    def layout(entries, start):
        # returns ifd bytes + data area, for an IFD placed at `start`
        entries = sorted(entries, key=lambda e: e[0])
        n = len(entries)
        data_off = start + 2 + 12 * n + 4
        body, data = b"", b""
        for tag, typ, vals in entries:
            raw, count = pack_vals(typ, vals)
            if len(raw) <= 4:
                body += struct.pack("<HHI", tag, typ, count) + raw.ljust(4, b"\0")
            else:
                off = data_off + len(data)
                body += struct.pack("<HHII", tag, typ, count, off)
                data += raw + (b"\0" if len(raw) % 2 else b"")
        return struct.pack("<H", n) + body + struct.pack("<I", 0) + data
    # two passes: sizes first, then real offsets
    def build(strip_off, exif_off):
        e0 = [e for e in ifd0] + [(273, 4, [strip_off]), (279, 4, [len(pixels)])]
        if exif_ifd is not None:
            e0.append((34665, 4, [exif_off]))
        i0 = layout(e0, 8)
        ie = layout(exif_ifd, 8 + len(i0)) if exif_ifd is not None else b""
        return i0, ie
    i0, ie = build(0, 0)
    i0, ie = build(8 + len(i0) + len(ie), 8 + len(i0))
    return b"II*\0" + struct.pack("<I", 8) + i0 + ie + pixels

def make_dng(h: int = 32, w: int = 48) -> bytes:
    # a smooth scene, RGGB mosaic, 12-bit values in 16-bit samples
    yy, xx = np.mgrid[0:h, 0:w]
    scene = np.stack([0.2 + 0.6 * xx / w, 0.3 + 0.4 * yy / h, 0.5 + 0 * xx], -1)
    cfa = np.empty((h, w))
    cfa[0::2, 0::2] = scene[0::2, 0::2, 0]
    cfa[0::2, 1::2] = scene[0::2, 1::2, 1]
    cfa[1::2, 0::2] = scene[1::2, 0::2, 1]
    cfa[1::2, 1::2] = scene[1::2, 1::2, 2]
    raw = (256 + cfa * 3500).astype("<u2")
    ifd0 = [
        (254, 4, [0]), (256, 4, [w]), (257, 4, [h]), (258, 3, [16]), (259, 3, [1]), (262, 3, [32803]),
        (271, 2, "TestMake"), (272, 2, "TestModel"), (274, 3, [1]), (277, 3, [1]), (278, 4, [h]), (284, 3, [1]),
        (33421, 3, [2, 2]), (33422, 1, [0, 1, 1, 2]),
        (50706, 1, [1, 4, 0, 0]), (50707, 1, [1, 1, 0, 0]), (50708, 2, "TestMake TestModel"),
        (50714, 4, [256]), (50717, 4, [4095]),
        (50721, 10, [(1, 1), (0, 1), (0, 1), (0, 1), (1, 1), (0, 1), (0, 1), (0, 1), (1, 1)]),
        (50728, 5, [(1, 2), (1, 1), (2, 3)]), (50778, 3, [21]),
    ]
    exif = [(36867, 2, "2024:05:06 07:08:09")]
    return tiff_bytes(ifd0, raw.tobytes(), exif)



def make_heic(path: Path, *, exif: bool = True, icc: bool = True) -> np.ndarray:
    """A 40x60 HEIC with EXIF (make, date) and an sRGB ICC profile; returns its pixels as decoded."""
    from PIL import ImageCms

    pillow_heif.register_heif_opener()
    yy, xx = np.mgrid[0:40, 0:60]
    arr = np.stack([xx * 4, yy * 6, 255 - xx * 4], -1).astype(np.uint8)
    kw: dict = {"quality": 95}
    if exif:
        kw["exif"] = piexif.dump({"0th": {piexif.ImageIFD.Make: b"PhoneCo"},
                                  "Exif": {piexif.ExifIFD.DateTimeOriginal: b"2024:01:02 03:04:05"}})
    if icc:
        kw["icc_profile"] = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    Image.fromarray(arr).save(path, "HEIF", **kw)
    return np.asarray(Image.open(path).convert("RGB"))


# ------------------------------------------------------------------------------------------- detection


def test_detection_from_bytes_and_extension() -> None:
    heic = b"\x00\x00\x00\x18ftypheic" + bytes(12)
    assert detect(heic, None) == "heif" and detect(b"\x00\x00\x00\x18ftypmif1" + bytes(12), None) == "heif"
    assert detect(b"\x00\x00\x00\x18ftypcrx " + bytes(12), None) == "raw"  # Canon CR3
    assert detect(b"II*\x00\x10\x00\x00\x00CR\x02\x00", None) == "raw"  # Canon CR2
    assert detect(make_dng(4, 4), None) == "raw"  # DNG from stdin: the DNGVersion tag
    assert detect(b"II*\x00" + bytes(12), Path("x.NEF")) == "raw" and detect(b"II*\x00" + bytes(12), None) is None
    assert detect(b"\xff\xd8\xff\xe0" + bytes(12), Path("a.jpg")) is None
    assert detect(b"\x00\x00\x00\x18ftypavif" + bytes(12), None) is None  # AVIF: not ours
    assert formats.default_output_format(Path("a.CR3")) == "tiff"
    assert formats.default_output_format(Path("a.jpg")) is None


def test_missing_rawpy_is_one_line_naming_the_extra(tmp_path: Path, use_engine,  # noqa: ANN001
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    use_engine("identity")
    monkeypatch.setitem(sys.modules, "rawpy", None)  # import rawpy -> ImportError
    (tmp_path / "a.dng").write_bytes(make_dng(8, 8))
    r = run(str(tmp_path / "a.dng"), "--json")
    assert r.exit_code == 1
    item = json.loads(r.stdout)["items"][0]
    assert item["output"].endswith("a_sharp.tif")  # a RAW input's default output: 16-bit TIFF
    assert "needs rawpy" in item["error"] and "pip install 'defocus-cli[raw]'" in item["error"]
    errors = [ln for ln in r.stderr.splitlines() if "a.dng" in ln]
    assert len(errors) == 1 and "defocus-cli[raw]" in errors[0]


def test_folder_scan_skips_raw_with_a_warning_without_rawpy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(formats, "IMAGE_EXTENSIONS", frozenset({".jpg", ".png"}))
    (tmp_path / "IMG_1.CR2").write_bytes(b"II*\x00")
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "IMG_1.jpg")
    with caplog.at_level("WARNING", logger="defocus_cli"):
        found = formats.scan_folder(tmp_path, recursive=False)
    assert [p.name for p in found] == ["IMG_1.jpg"]
    assert "1 camera RAW file(s) not taken" in caplog.text and "defocus-cli[raw]" in caplog.text


def test_missing_pillow_heif_is_one_line_naming_the_extra(tmp_path: Path, use_engine,  # noqa: ANN001
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    use_engine("identity")
    monkeypatch.setattr(heif_raw, "_heif_module", lambda: None)
    (tmp_path / "a.heic").write_bytes(b"\x00\x00\x00\x18ftypheic" + bytes(64))
    r = run(str(tmp_path / "a.heic"), "--json")
    assert r.exit_code == 1
    item = json.loads(r.stdout)["items"][0]
    assert item["output"].endswith("a_sharp.jpg")  # no HEIC encoder: JPEG
    assert "needs pillow-heif" in item["error"] and "pip install 'defocus-cli[heif]'" in item["error"]
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "b.png")
    r = run(str(tmp_path / "b.png"), "--format", "heic")
    assert r.exit_code == 2 and r.stderr.count("\n") == 1 and "defocus-cli[heif]" in r.stderr


# ------------------------------------------------------------------------------------------- HEIC


@needs_heif
def test_heic_deblurs_to_heic_with_exif_and_icc(tmp_path: Path, use_engine) -> None:  # noqa: ANN001
    use_engine("identity")
    src = tmp_path / "IMG_0001.HEIC"
    pixels = make_heic(src)
    icc = Image.open(src).info["icc_profile"]
    r = run(str(src))
    assert r.exit_code == 0, r.stderr
    out = tmp_path / "IMG_0001_sharp.heic"
    assert heif_raw.heif_writable() and out.is_file()
    img = Image.open(out)
    assert img.format == "HEIF" and img.size == (60, 40)
    ex = piexif.load(img.info["exif"])
    assert ex["0th"][piexif.ImageIFD.Make] == b"PhoneCo"
    assert ex["Exif"][piexif.ExifIFD.DateTimeOriginal] == b"2024:01:02 03:04:05"
    assert img.info["icc_profile"] == icc
    diff = np.abs(np.asarray(img.convert("RGB")).astype(int) - pixels.astype(int))
    assert diff.mean() < 3  # identity engine: the same picture, up to HEVC re-encoding


@needs_heif
def test_heic_without_encoder_goes_to_jpeg_with_metadata(tmp_path: Path, use_engine,  # noqa: ANN001
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    use_engine("identity")
    monkeypatch.setattr(heif_raw, "heif_writable", lambda: False)
    src = tmp_path / "a.heic"
    make_heic(src)
    r = run(str(src), "-o", str(tmp_path / "out") + "/")
    assert r.exit_code == 0, r.stderr
    img = Image.open(tmp_path / "out" / "a.jpg")
    assert img.format == "JPEG" and img.size == (60, 40) and "icc_profile" in img.info
    assert piexif.load(img.info["exif"])["0th"][piexif.ImageIFD.Make] == b"PhoneCo"


@needs_heif
def test_png_to_heic_on_request(tmp_path: Path, use_engine) -> None:  # noqa: ANN001
    use_engine("identity")
    Image.fromarray(np.full((8, 10, 3), 120, np.uint8)).save(tmp_path / "a.png")
    r = run(str(tmp_path / "a.png"), "--format", "heic")
    assert r.exit_code == 0, r.stderr
    assert Image.open(tmp_path / "a_sharp.heic").format == "HEIF"


# ------------------------------------------------------------------------------------------- RAW


@needs_raw
def test_dng_deblurs_to_16bit_tiff_with_exif(tmp_path: Path, use_engine) -> None:  # noqa: ANN001
    use_engine("identity")
    src = tmp_path / "IMG_0002.DNG"
    src.write_bytes(make_dng())
    r = run(str(src), "--json")
    assert r.exit_code == 0, r.stderr
    item = json.loads(r.stdout)["items"][0]
    assert any("LibRaw" in n and "camera white balance" in n for n in item["notes"])
    out = tmp_path / "IMG_0002_sharp.tif"
    arr = cv2.imread(str(out), cv2.IMREAD_UNCHANGED)
    assert arr.dtype == np.uint16 and arr.shape == (32, 48, 3)
    assert len(np.unique(arr)) > 256  # really 16-bit, not 8-bit scaled up
    data = out.read_bytes()
    ex = piexif.load(data)
    assert ex["Exif"][piexif.ExifIFD.DateTimeOriginal] == b"2024:05:06 07:08:09"
    assert ex["0th"][piexif.ImageIFD.Make] == b"TestMake"
    assert 50706 not in ex["0th"] and 33422 not in ex["0th"]  # no DNG/CFA tags on an RGB TIFF
    # the scene is red-to-magenta left to right over green: white balance and demosaic kept the colours apart
    rgb = arr[:, :, ::-1].astype(float) / 65535
    assert rgb[:, -8:, 0].mean() > rgb[:, :8, 0].mean() + 0.1


@needs_raw
def test_raw_linear_is_darker_than_srgb_and_refuses_nothing_else(tmp_path: Path, use_engine) -> None:  # noqa: ANN001
    use_engine("identity")
    (tmp_path / "a.dng").write_bytes(make_dng())
    assert run(str(tmp_path / "a.dng"), "-o", str(tmp_path / "srgb.tif")).exit_code == 0
    r = run(str(tmp_path / "a.dng"), "-o", str(tmp_path / "lin.png"), "--raw-linear", "--json")
    assert r.exit_code == 0, r.stderr
    assert "linear sRGB" in " ".join(json.loads(r.stdout)["items"][0]["notes"])
    srgb = cv2.imread(str(tmp_path / "srgb.tif"), cv2.IMREAD_UNCHANGED).astype(float)
    lin = cv2.imread(str(tmp_path / "lin.png"), cv2.IMREAD_UNCHANGED)
    assert lin.dtype == np.uint16  # 16-bit PNG on request
    assert lin.astype(float).mean() < 0.9 * srgb.mean()


@needs_raw
def test_raw_in_folders_and_bad_raw_fails_alone(tmp_path: Path, use_engine) -> None:  # noqa: ANN001
    use_engine("identity")
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "good.dng").write_bytes(make_dng(24, 24))  # LibRaw refuses frames under 22 px
    (tmp_path / "in" / "bad.nef").write_bytes(b"II*\x00" + bytes(60))
    r = run(str(tmp_path / "in"), "-o", str(tmp_path / "out") + "/", "--json")
    assert r.exit_code == 1
    items = {Path(i["input"]).name: i for i in json.loads(r.stdout)["items"]}
    assert items["good.dng"]["status"] == "ok" and (tmp_path / "out" / "good.tif").is_file()
    assert items["bad.nef"]["status"] == "error" and "RAW" in items["bad.nef"]["error"]


@needs_raw
def test_raw_pixel_limit_is_checked_before_demosaic(tmp_path: Path) -> None:
    from defocus_cli.errors import InputError
    from defocus_cli.io.read import read_photo

    with pytest.raises(InputError, match="above the limit"):
        read_photo(make_dng(32, 48), max_pixels=1000)
