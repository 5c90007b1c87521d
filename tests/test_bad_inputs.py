"""The bad-input corpus: every case runs ``defocus deblur`` and asserts its documented outcome.

For each case: the exit code; the outputs that must (or must not) exist; a one-line message on stderr
where one is expected, never a traceback; the inputs byte-for-byte unchanged; no temporary file left.
Fixtures are generated in tmp_path (no binary files in the repository).
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image, ImageOps
from typer.testing import CliRunner

from conftest import make_exif, smooth_rgb
from defocus_cli.cli import app


@dataclass
class Case:
    args: list[str]
    code: int
    exists: list[Path] = field(default_factory=list)
    absent: list[Path] = field(default_factory=list)
    message: str | None = None  # regex that stderr must match
    check: Callable[[], None] | None = None
    stdin: bytes | None = None


def _png(path: Path, arr: np.ndarray, mode: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr, mode).save(path, "PNG")
    return path


def _jpg_bytes(arr: np.ndarray, **kw: object) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "JPEG", quality=95, **kw)
    return buf.getvalue()


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


# ------------------------------------------------------------------------------------------------ cases


def c_zero_byte(d: Path) -> Case:
    (d / "empty.jpg").write_bytes(b"")
    return Case([str(d / "empty.jpg")], 1, absent=[d / "empty_sharp.jpg"], message="empty file")


def c_truncated_jpeg(d: Path) -> Case:
    data = _jpg_bytes(smooth_rgb(64, 64))
    (d / "t.jpg").write_bytes(data[: len(data) // 2])
    return Case([str(d / "t.jpg")], 1, absent=[d / "t_sharp.jpg"], message="truncated|cannot decode")


def c_truncated_png(d: Path) -> Case:
    data = (_png(d / "full.png", smooth_rgb(64, 64))).read_bytes()
    (d / "full.png").unlink()
    (d / "t.png").write_bytes(data[: len(data) // 2])
    return Case([str(d / "t.png")], 1, absent=[d / "t_sharp.png"], message="truncated|cannot decode")


def c_truncated_png16(d: Path) -> Case:
    ok, enc = cv2.imencode(".png", smooth_rgb(64, 64, dtype="uint16"))
    (d / "t16.png").write_bytes(enc.tobytes()[: len(enc) // 2])
    return Case([str(d / "t16.png")], 1, absent=[d / "t16_sharp.png"], message="truncated|cannot decode")


def c_text_named_jpg(d: Path) -> Case:
    (d / "notes.jpg").write_text("this is not a photo\n")
    return Case([str(d / "notes.jpg")], 1, absent=[d / "notes_sharp.jpg"], message="not a readable image")


def c_dir_named_png(d: Path) -> Case:
    (d / "folder.png").mkdir()
    return Case([str(d / "folder.png")], 1, message="holds no .jpg")


def c_gif(d: Path) -> Case:
    Image.new("P", (4, 4)).save(d / "anim.gif")
    return Case([str(d / "anim.gif")], 1, message="not a JPEG, PNG, TIFF or WebP|not supported")


def c_one_by_one(d: Path) -> Case:
    _png(d / "dot.png", smooth_rgb(1, 1))
    return Case([str(d / "dot.png")], 0, exists=[d / "dot_sharp.png"],
                check=lambda: _assert_size(d / "dot_sharp.png", (1, 1)))


def c_one_by_5000(d: Path) -> Case:
    _png(d / "line.png", smooth_rgb(1, 5000))
    return Case([str(d / "line.png")], 0, check=lambda: _assert_size(d / "line_sharp.png", (5000, 1)))


def c_5000_by_one(d: Path) -> Case:
    _png(d / "col.png", smooth_rgb(5000, 1))
    return Case([str(d / "col.png")], 0, check=lambda: _assert_size(d / "col_sharp.png", (1, 5000)))


def c_huge_header(d: Path) -> Case:
    png = (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0))
           + _chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + _chunk(b"IEND", b""))
    (d / "bomb.png").write_bytes(png)
    return Case([str(d / "bomb.png")], 1, absent=[d / "bomb_sharp.png"], message="too large|above the limit")


def c_max_pixels(d: Path) -> Case:
    _png(d / "big.png", smooth_rgb(20, 20))
    return Case([str(d / "big.png"), "--max-pixels", "399"], 1, absent=[d / "big_sharp.png"],
                message="above the limit")


def c_cmyk_jpeg(d: Path) -> Case:
    buf = io.BytesIO()
    Image.fromarray(smooth_rgb(16, 16)).convert("CMYK").save(buf, "JPEG", quality=95)
    (d / "cmyk.jpg").write_bytes(buf.getvalue())

    def check() -> None:
        out = Image.open(d / "cmyk_sharp.jpg")
        assert out.mode == "RGB" and out.size == (16, 16)

    return Case([str(d / "cmyk.jpg")], 0, check=check)


def c_palette_transparency(d: Path) -> Case:
    img = Image.fromarray(smooth_rgb(8, 8)).convert("P", palette=Image.Palette.ADAPTIVE, colors=8)
    img.save(d / "pal.png", transparency=0)
    alpha = np.asarray(Image.open(d / "pal.png").convert("RGBA"))[:, :, 3].copy()

    def check() -> None:
        out = np.asarray(Image.open(d / "pal_sharp.png"))
        assert out.shape == (8, 8, 4)
        np.testing.assert_array_equal(out[:, :, 3], alpha)

    return Case([str(d / "pal.png")], 0, check=check)


def c_gray16(d: Path) -> Case:
    arr = smooth_rgb(12, 10, dtype="uint16")[:, :, 0]
    cv2.imwrite(str(d / "g16.png"), arr)

    def check() -> None:
        out = cv2.imread(str(d / "g16_sharp.png"), cv2.IMREAD_UNCHANGED)
        assert out.dtype == np.uint16 and out.shape == (12, 10)

    return Case([str(d / "g16.png")], 0, check=check)


def c_rgba(d: Path) -> Case:
    alpha = (np.arange(100).reshape(10, 10) * 2).astype(np.uint8)
    _png(d / "rgba.png", np.dstack([smooth_rgb(10, 10), alpha]), "RGBA")

    def check() -> None:
        out = np.asarray(Image.open(d / "rgba_sharp.png"))
        np.testing.assert_array_equal(out[:, :, 3], alpha)

    return Case([str(d / "rgba.png")], 0, check=check)


def c_gray_alpha(d: Path) -> Case:
    _png(d / "la.png", np.dstack([smooth_rgb(6, 7)[:, :, 0], np.full((6, 7), 9, np.uint8)]), "LA")
    return Case([str(d / "la.png")], 0, check=lambda: _assert_mode(d / "la_sharp.png", "LA"))


def c_tiff16(d: Path) -> Case:
    cv2.imwrite(str(d / "deep.tif"), smooth_rgb(9, 13, dtype="uint16"))

    def check() -> None:
        out = cv2.imread(str(d / "deep_sharp.tif"), cv2.IMREAD_UNCHANGED)
        assert out.dtype == np.uint16 and out.shape == (9, 13, 3)

    return Case([str(d / "deep.tif")], 0, check=check)


def _orientation_case(o: int) -> Callable[[Path], Case]:
    def make(d: Path) -> Case:
        (d / f"o{o}.jpg").write_bytes(_jpg_bytes(smooth_rgb(24, 40, seed=o), exif=make_exif(o)))
        shown = ImageOps.exif_transpose(Image.open(d / f"o{o}.jpg")).size

        def check() -> None:
            out = Image.open(d / f"o{o}_sharp.jpg")
            assert out.getexif().get(0x0112) == 1
            assert out.size == shown  # displays like the input, in viewers that honour the tag or not

        return Case([str(d / f"o{o}.jpg")], 0, check=check)

    make.__name__ = f"c_exif_orientation_{o}"
    return make


def c_exif_piexif_cannot_parse(d: Path) -> Case:
    bad = b"Exif\x00\x00II*\x00\x08\x00\x00\x00\x05\x00" + b"\x0f\x01\x02\x00\xff\xff\xff\x7f\x10\x00\x00\x00"
    (d / "badexif.jpg").write_bytes(_jpg_bytes(smooth_rgb(8, 8), exif=bad))
    return Case([str(d / "badexif.jpg")], 0, exists=[d / "badexif_sharp.jpg"], message="EXIF")


def c_non_ascii_names(d: Path) -> Case:
    _png(d / "fötö 写真.png", smooth_rgb(6, 6))
    return Case([str(d / "fötö 写真.png")], 0, exists=[d / "fötö 写真_sharp.png"])


def c_non_ascii_folders(d: Path) -> Case:
    _png(d / "вход" / "x.png", smooth_rgb(6, 6))
    return Case([str(d / "вход"), "-o", str(d / "выход")], 0, exists=[d / "выход" / "x.png"])


def c_read_only_output_folder(d: Path) -> Case:
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        pytest.skip("running as root: a read-only folder is still writable (see c_output_folder_uncreatable)")
    _png(d / "a.png", smooth_rgb(6, 6))
    ro = d / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    return Case([str(d / "a.png"), "-o", str(ro)], 1, absent=[ro / "a.png"], message="cannot write")


def c_output_folder_uncreatable(d: Path) -> Case:
    _png(d / "a.png", smooth_rgb(6, 6))
    (d / "plainfile").write_bytes(b"x")
    return Case([str(d / "a.png"), "-o", str(d / "plainfile" / "sub") + "/"], 2, message="cannot create folder")


def c_output_equals_input(d: Path) -> Case:
    _png(d / "a.png", smooth_rgb(6, 6))
    return Case([str(d / "a.png"), "-o", str(d / "a.png"), "--overwrite"], 2, message="replace input")


def c_suffix_empty_equals_input(d: Path) -> Case:
    _png(d / "a.png", smooth_rgb(6, 6))
    return Case([str(d / "a.png"), "--suffix", "", "--overwrite"], 2, message="replace input")


def c_two_inputs_one_output(d: Path) -> Case:
    _png(d / "a.png", smooth_rgb(6, 6))
    (d / "a.jpg").write_bytes(_jpg_bytes(smooth_rgb(6, 6)))
    return Case([str(d / "a.png"), str(d / "a.jpg"), "--format", "png"], 2,
                absent=[d / "a_sharp.png"], message="both be written")


def c_missing_input(d: Path) -> Case:
    return Case([str(d / "nope.jpg")], 1, message="no such file")


def c_missing_and_good_input(d: Path) -> Case:
    _png(d / "good.png", smooth_rgb(6, 6))
    return Case([str(d / "nope.jpg"), str(d / "good.png")], 1, exists=[d / "good_sharp.png"],
                message="no such file")


def c_existing_output_refused(d: Path) -> Case:
    _png(d / "a.png", smooth_rgb(6, 6))
    (d / "a_sharp.png").write_bytes(b"keep me")
    return Case([str(d / "a.png")], 2, message="already exist",
                check=lambda: _assert_bytes(d / "a_sharp.png", b"keep me"))


def c_output_unknown_extension(d: Path) -> Case:
    _png(d / "a.png", smooth_rgb(6, 6))
    return Case([str(d / "a.png"), "-o", str(d / "a.bmp")], 2, absent=[d / "a.bmp"], message="unknown image extension")


def c_stdin_garbage(d: Path) -> Case:
    return Case(["-", "-o", str(d / "out.png")], 1, absent=[d / "out.png"], message="not a readable image",
                stdin=b"garbage bytes")


def c_webp_alpha(d: Path) -> Case:
    rgba = np.dstack([smooth_rgb(8, 8), np.full((8, 8), 100, np.uint8)])
    Image.fromarray(rgba, "RGBA").save(d / "w.webp", lossless=True)
    return Case([str(d / "w.webp")], 0, check=lambda: _assert_mode(d / "w_sharp.webp", "RGBA"))


def _assert_size(p: Path, size: tuple[int, int]) -> None:
    assert Image.open(p).size == size


def _assert_mode(p: Path, mode: str) -> None:
    assert Image.open(p).mode == mode


def _assert_bytes(p: Path, data: bytes) -> None:
    assert p.read_bytes() == data


CASES: list[Callable[[Path], Case]] = [
    c_zero_byte, c_truncated_jpeg, c_truncated_png, c_truncated_png16, c_text_named_jpg, c_dir_named_png, c_gif,
    c_one_by_one, c_one_by_5000, c_5000_by_one, c_huge_header, c_max_pixels, c_cmyk_jpeg, c_palette_transparency,
    c_gray16, c_rgba, c_gray_alpha, c_tiff16, *[_orientation_case(o) for o in range(1, 9)],
    c_exif_piexif_cannot_parse, c_non_ascii_names, c_non_ascii_folders, c_read_only_output_folder,
    c_output_folder_uncreatable, c_output_equals_input, c_suffix_empty_equals_input, c_two_inputs_one_output,
    c_missing_input, c_missing_and_good_input, c_existing_output_refused, c_output_unknown_extension,
    c_stdin_garbage, c_webp_alpha,
]


def _snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in root.rglob("*") if p.is_file()}


def test_corpus_is_big_enough() -> None:
    assert len(CASES) >= 30


@pytest.mark.parametrize("make", CASES, ids=[c.__name__.removeprefix("c_") for c in CASES])
def test_bad_input(make: Callable[[Path], Case], tmp_path: Path, use_engine) -> None:  # noqa: ANN001
    use_engine("sharpen")
    case = make(tmp_path)
    before = _snapshot(tmp_path)
    r = CliRunner().invoke(app, ["deblur", *case.args], input=case.stdin)
    assert r.exit_code == case.code, f"exit {r.exit_code}, stderr: {r.stderr!r}"
    assert "Traceback" not in r.stderr
    if case.message:
        assert re.search(case.message, r.stderr), r.stderr
    for line in r.stderr.splitlines():  # messages are one line each, never a dump
        assert len(line) < 400
    after = _snapshot(tmp_path)
    for name, digest in before.items():  # every input (and pre-existing file) byte-for-byte unchanged
        assert after.get(name) == digest, f"{name} changed"
    assert not [n for n in after if n.endswith(".tmp")], "temporary file left behind"
    for p in case.exists:
        assert p.is_file(), f"{p} missing"
    for p in case.absent:
        assert not p.exists(), f"{p} should not exist"
    if case.code != 0:  # a failure leaves no output behind, only the listed good ones
        assert set(after) - set(before) == {str(p.relative_to(tmp_path)) for p in case.exists}
    if case.check:
        case.check()
