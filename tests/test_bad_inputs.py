r"""The bad-input corpus: every case runs one ``defocus`` command and asserts its documented outcome.

Commands: ``deblur`` (most cases), ``deconv``, ``map``, ``score``, ``models`` and ``train``. For each case: the
exit code; a one-line message on stderr where one is expected (matched on a single line), never a traceback,
a source path or a raw OpenCV log line; the inputs (every file that existed before) byte-for-byte unchanged;
no file written outside the outputs the case lists (``exists``); no temporary file left. Fixtures are
generated in tmp_path (no binary files in the repository).

Classes of the hostile run of issue 13 each have several cases: outputs equal to an input or existing
(every command), name parts with separators, FIFOs and devices as inputs, link loops and broken links in
scanned folders, 249-255-byte names, targets checked before any write (map), weights metadata.
Count the corpus: ``python -m pytest -q tests/test_bad_inputs.py --collect-only | grep -c 'test_bad_input\['``.
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
    """One run: ``defocus <cmd> <args>``. ``exists``: the outputs that must appear (the only new files
    allowed); ``message``: a regex one stderr line must match; ``engine``: the test engine ``deblur`` uses
    (``None`` = the real weights loader, for weights cases)."""

    args: list[str]
    code: int
    exists: list[Path] = field(default_factory=list)
    absent: list[Path] = field(default_factory=list)
    message: str | None = None  # regex that one stderr line must match
    check: Callable[[], None] | None = None
    stdin: bytes | None = None
    cmd: str = "deblur"
    engine: str | None = "sharpen"
    replaced: list[Path] = field(default_factory=list)  # existing files the case replaces on purpose (--overwrite)


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
    return Case([str(d / "line.png")], 0, exists=[d / "line_sharp.png"], check=lambda: _assert_size(d / "line_sharp.png", (5000, 1)))


def c_5000_by_one(d: Path) -> Case:
    _png(d / "col.png", smooth_rgb(5000, 1))
    return Case([str(d / "col.png")], 0, exists=[d / "col_sharp.png"], check=lambda: _assert_size(d / "col_sharp.png", (1, 5000)))


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

    return Case([str(d / "cmyk.jpg")], 0, exists=[d / "cmyk_sharp.jpg"], check=check)


def c_palette_transparency(d: Path) -> Case:
    img = Image.fromarray(smooth_rgb(8, 8)).convert("P", palette=Image.Palette.ADAPTIVE, colors=8)
    img.save(d / "pal.png", transparency=0)
    alpha = np.asarray(Image.open(d / "pal.png").convert("RGBA"))[:, :, 3].copy()

    def check() -> None:
        out = np.asarray(Image.open(d / "pal_sharp.png"))
        assert out.shape == (8, 8, 4)
        np.testing.assert_array_equal(out[:, :, 3], alpha)

    return Case([str(d / "pal.png")], 0, exists=[d / "pal_sharp.png"], check=check)


def c_gray16(d: Path) -> Case:
    arr = smooth_rgb(12, 10, dtype="uint16")[:, :, 0]
    cv2.imwrite(str(d / "g16.png"), arr)

    def check() -> None:
        out = cv2.imread(str(d / "g16_sharp.png"), cv2.IMREAD_UNCHANGED)
        assert out.dtype == np.uint16 and out.shape == (12, 10)

    return Case([str(d / "g16.png")], 0, exists=[d / "g16_sharp.png"], check=check)


def c_rgba(d: Path) -> Case:
    alpha = (np.arange(100).reshape(10, 10) * 2).astype(np.uint8)
    _png(d / "rgba.png", np.dstack([smooth_rgb(10, 10), alpha]), "RGBA")

    def check() -> None:
        out = np.asarray(Image.open(d / "rgba_sharp.png"))
        np.testing.assert_array_equal(out[:, :, 3], alpha)

    return Case([str(d / "rgba.png")], 0, exists=[d / "rgba_sharp.png"], check=check)


def c_gray_alpha(d: Path) -> Case:
    _png(d / "la.png", np.dstack([smooth_rgb(6, 7)[:, :, 0], np.full((6, 7), 9, np.uint8)]), "LA")
    return Case([str(d / "la.png")], 0, exists=[d / "la_sharp.png"], check=lambda: _assert_mode(d / "la_sharp.png", "LA"))


def c_tiff16(d: Path) -> Case:
    cv2.imwrite(str(d / "deep.tif"), smooth_rgb(9, 13, dtype="uint16"))

    def check() -> None:
        out = cv2.imread(str(d / "deep_sharp.tif"), cv2.IMREAD_UNCHANGED)
        assert out.dtype == np.uint16 and out.shape == (9, 13, 3)

    return Case([str(d / "deep.tif")], 0, exists=[d / "deep_sharp.tif"], check=check)


def _orientation_case(o: int) -> Callable[[Path], Case]:
    def make(d: Path) -> Case:
        (d / f"o{o}.jpg").write_bytes(_jpg_bytes(smooth_rgb(24, 40, seed=o), exif=make_exif(o)))
        shown = ImageOps.exif_transpose(Image.open(d / f"o{o}.jpg")).size

        def check() -> None:
            out = Image.open(d / f"o{o}_sharp.jpg")
            assert out.getexif().get(0x0112) == 1
            assert out.size == shown  # displays like the input, in viewers that honour the tag or not

        return Case([str(d / f"o{o}.jpg")], 0, exists=[d / f"o{o}_sharp.jpg"], check=check)

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
    return Case([str(d / "w.webp")], 0, exists=[d / "w_sharp.webp"], check=lambda: _assert_mode(d / "w_sharp.webp", "RGBA"))


def _assert_size(p: Path, size: tuple[int, int]) -> None:
    assert Image.open(p).size == size


def _assert_mode(p: Path, mode: str) -> None:
    assert Image.open(p).mode == mode


def _assert_bytes(p: Path, data: bytes) -> None:
    assert p.read_bytes() == data



# ------------------------------------------------------------------------------- issue 13: hostile run

needs_fifo = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="this platform has no named pipes (os.mkfifo)")
needs_symlinks = pytest.mark.skipif(os.name == "nt", reason="symbolic links need privileges on Windows")
DEV_ZERO = Path("/dev/zero")


def _fifo(p: Path) -> Path:
    if not hasattr(os, "mkfifo"):
        pytest.skip("this platform has no named pipes (os.mkfifo)")
    p.parent.mkdir(parents=True, exist_ok=True)
    os.mkfifo(p)
    return p


def _link(target: str, p: Path) -> Path:
    if os.name == "nt":
        pytest.skip("symbolic links need privileges on Windows")
    p.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(target, p)
    return p


def _dev_zero() -> str:
    if not DEV_ZERO.exists():
        pytest.skip("this platform has no /dev/zero")
    return str(DEV_ZERO)


def _tiff(path: Path, arr: np.ndarray, photometric: int, sample_format: int = 1) -> Path:
    """A baseline uncompressed little-endian TIFF, one strip, any sample type (for layouts we refuse)."""
    h, w = arr.shape[:2]
    c = 1 if arr.ndim == 2 else arr.shape[2]
    pix = np.ascontiguousarray(arr).astype(arr.dtype.newbyteorder("<")).tobytes()
    bits = arr.dtype.itemsize * 8
    n = 10
    ifd_size = 2 + 12 * n + 4
    bits_off = 8 + ifd_size
    fmt_off = bits_off + 2 * c
    data_off = fmt_off + 2 * c
    entries = [
        (256, 4, 1, w), (257, 4, 1, h),
        (258, 3, c, bits_off if c > 2 else bits | (bits << 16 if c == 2 else 0)),
        (259, 3, 1, 1), (262, 3, 1, photometric), (273, 4, 1, data_off), (277, 3, 1, c), (278, 4, 1, h),
        (279, 4, 1, len(pix)),
        (339, 3, c, fmt_off if c > 2 else sample_format | (sample_format << 16 if c == 2 else 0)),
    ]
    ifd = struct.pack("<H", n) + b"".join(struct.pack("<HHII", *e) for e in entries) + struct.pack("<I", 0)
    extra = struct.pack("<" + "H" * c, *[bits] * c) + struct.pack("<" + "H" * c, *[sample_format] * c)
    path.write_bytes(b"II*\x00" + struct.pack("<I", 8) + ifd + extra + pix)
    return path


def _long_stem(n_bytes: int) -> str:
    return ("é" * (n_bytes // 2)) + ("x" * (n_bytes % 2))  # 2-byte UTF-8 characters: bytes, not characters, count


# deblur: name parts, special files, links, long names, outputs that are special


def c_suffix_escapes_output_folder(d: Path) -> Case:
    _png(d / "a.png", smooth_rgb(6, 6))
    return Case([str(d / "a.png"), "-o", str(d / "out") + "/", "--suffix", "/../../escaped"], 2,
                absent=[d / "escaped.png", d.parent / "escaped.png"], message="--suffix .*no path separator")


def c_suffix_dotdot(d: Path) -> Case:
    _png(d / "a.png", smooth_rgb(6, 6))
    return Case([str(d / "a.png"), "--suffix", "_..x"], 2, message="--suffix .*'\\.\\.'")


def c_suffix_separator_next_to_input(d: Path) -> Case:
    _png(d / "a.png", smooth_rgb(6, 6))
    (d / "sub").mkdir()
    return Case([str(d / "a.png"), "--suffix", "x/sub"], 2, message="--suffix")


def c_fifo_named_on_command_line(d: Path) -> Case:
    _fifo(d / "pipe.png")
    return Case([str(d / "pipe.png")], 1, message="pipe.png: not a regular file")


def c_fifo_in_folder_batch_goes_on(d: Path) -> Case:
    _png(d / "in" / "a.png", smooth_rgb(6, 6))
    _fifo(d / "in" / "b.png")
    return Case([str(d / "in"), "-o", str(d / "out")], 1, exists=[d / "out" / "a.png"],
                message="b.png: not a regular file")


def c_dev_zero_input(d: Path) -> Case:
    _png(d / "a.png", smooth_rgb(6, 6))
    return Case([_dev_zero(), str(d / "a.png"), "-o", str(d / "out") + "/"], 1, exists=[d / "out" / "a.png"],
                message="/dev/zero: not a regular file")


def c_dev_zero_with_format(d: Path) -> Case:
    return Case([_dev_zero(), "-o", str(d / "z.png")], 1, absent=[d / "z.png"], message="not a regular file")


def c_link_loop_folder_recursive(d: Path) -> Case:
    _png(d / "in" / "a.png", smooth_rgb(6, 6))
    _link(".", d / "in" / "loop")
    return Case([str(d / "in"), "-r", "-o", str(d / "out")], 0, exists=[d / "out" / "a.png"])


def c_link_loop_to_parent_recursive(d: Path) -> Case:
    _png(d / "in" / "sub" / "a.png", smooth_rgb(6, 6))
    _link("..", d / "in" / "sub" / "up")
    return Case([str(d / "in"), "-r", "-o", str(d / "out")], 0, exists=[d / "out" / "sub" / "a.png"])


def c_self_looping_image_link(d: Path) -> Case:
    _png(d / "in" / "a.png", smooth_rgb(6, 6))
    _link("x.png", d / "in" / "x.png")
    return Case([str(d / "in"), "-o", str(d / "out")], 1, exists=[d / "out" / "a.png"],
                message="x.png: .*symbolic link loop")


def c_broken_link_in_folder(d: Path) -> Case:
    _png(d / "in" / "a.png", smooth_rgb(6, 6))
    _link("gone.png", d / "in" / "b.png")
    return Case([str(d / "in"), "-o", str(d / "out")], 1, exists=[d / "out" / "a.png"],
                message="b.png: broken symbolic link")


def c_broken_link_named(d: Path) -> Case:
    _link("gone.png", d / "b.png")
    return Case([str(d / "b.png")], 1, absent=[d / "b_sharp.png"], message="broken symbolic link")


def c_name_255_bytes_into_folder(d: Path) -> Case:
    name = _long_stem(251) + ".png"
    _png(d / name, smooth_rgb(6, 6))
    return Case([str(d / name), "-o", str(d / "out") + "/"], 0, exists=[d / "out" / name])


def c_name_255_bytes_with_suffix(d: Path) -> Case:
    stem = _long_stem(245)
    _png(d / f"{stem}.png", smooth_rgb(6, 6))
    return Case([str(d / f"{stem}.png")], 0, exists=[d / f"{stem}_sharp.png"])


def c_name_249_bytes(d: Path) -> Case:
    stem = _long_stem(239)
    _png(d / f"{stem}.png", smooth_rgb(6, 6))
    return Case([str(d / f"{stem}.png")], 0, exists=[d / f"{stem}_sharp.png"])


def c_output_name_too_long(d: Path) -> Case:
    stem = _long_stem(248)  # 252-byte input name; with _sharp the output would be 258 bytes
    _png(d / f"{stem}.png", smooth_rgb(6, 6))
    return Case([str(d / f"{stem}.png")], 2, message="file name too long")


def c_output_is_fifo(d: Path) -> Case:
    _png(d / "a.png", smooth_rgb(6, 6))
    _fifo(d / "out.png")
    return Case([str(d / "a.png"), "-o", str(d / "out.png"), "--overwrite"], 2, message="not a regular file")


def c_output_is_folder(d: Path) -> Case:
    _png(d / "in" / "a.png", smooth_rgb(6, 6))
    (d / "out" / "a.png").mkdir(parents=True)
    return Case([str(d / "in"), "-o", str(d / "out"), "--overwrite"], 2, message="is a folder")


def c_output_hard_link_to_input(d: Path) -> Case:
    _png(d / "a.png", smooth_rgb(6, 6))
    os.link(d / "a.png", d / "same.png")
    return Case([str(d / "a.png"), "-o", str(d / "same.png"), "--overwrite"], 2, message="input file itself")


def c_output_symlink_to_input(d: Path) -> Case:
    _png(d / "a.png", smooth_rgb(6, 6))
    _link("a.png", d / "alias.png")
    return Case([str(d / "a.png"), "-o", str(d / "alias.png"), "--overwrite"], 2, message="replace input")


def c_same_name_two_folders_one_output(d: Path) -> Case:
    _png(d / "x" / "a.png", smooth_rgb(6, 6))
    _png(d / "y" / "a.png", smooth_rgb(6, 6, seed=1))
    return Case([str(d / "x" / "a.png"), str(d / "y" / "a.png"), "-o", str(d / "out") + "/"], 2,
                message="both be written")


def c_overwrite_and_skip_existing(d: Path) -> Case:
    _png(d / "a.png", smooth_rgb(6, 6))
    return Case([str(d / "a.png"), "--overwrite", "--skip-existing"], 2, message="exclude each other")


def c_unknown_format(d: Path) -> Case:
    _png(d / "a.png", smooth_rgb(6, 6))
    return Case([str(d / "a.png"), "--format", "bmp"], 2, message="unknown image format")


def c_stdin_empty(d: Path) -> Case:
    return Case(["-", "-o", str(d / "out.png")], 1, absent=[d / "out.png"], message="empty", stdin=b"")


def c_empty_folder(d: Path) -> Case:
    (d / "empty").mkdir()
    return Case([str(d / "empty")], 1, message="holds no .jpg")


def c_tiff_16bit_cmyk(d: Path) -> Case:
    _tiff(d / "cmyk16.tif", (np.arange(8 * 8 * 4).reshape(8, 8, 4) * 50).astype(np.uint16), photometric=5)
    return Case([str(d / "cmyk16.tif")], 1, message="16-bit CMYK TIFF is not supported")


def c_tiff_float(d: Path) -> Case:
    _tiff(d / "f.tif", np.random.default_rng(0).random((8, 8, 3)).astype(np.float32), photometric=2, sample_format=3)
    return Case([str(d / "f.tif")], 1, message="32-bit floating-point TIFF samples are not supported")


def c_tiff_float_gray(d: Path) -> Case:
    _tiff(d / "fg.tif", np.random.default_rng(0).random((8, 8)).astype(np.float32), photometric=1, sample_format=3)
    return Case([str(d / "fg.tif")], 1, message="floating-point TIFF samples are not supported")


def c_tiff_signed(d: Path) -> Case:
    _tiff(d / "s.tif", np.full((8, 8, 3), -5, np.int16), photometric=2, sample_format=2)
    return Case([str(d / "s.tif")], 1, message="16-bit signed integer TIFF samples are not supported")


def c_tiff16_truncated(d: Path) -> Case:
    ok, enc = cv2.imencode(".tif", smooth_rgb(32, 32, dtype="uint16"))
    (d / "t16.tif").write_bytes(enc.tobytes()[: len(enc) // 3])
    return Case([str(d / "t16.tif")], 1, message="t16.tif: ")


# deblur --weights: the file's metadata is checked before a network is built


def _weights(d: Path, name: str, config: object | None, arch: str = "sftnet") -> Path:
    import json

    from safetensors.torch import save_file

    from defocus_cli import registry

    sd = {k: v.contiguous() for k, v in registry.load_class("sftnet")().state_dict().items()}
    meta = {"arch": arch}
    if config is not None:
        meta["config"] = config if isinstance(config, str) else json.dumps(config)
    save_file(sd, str(d / name), metadata=meta)
    return d / name


def _weights_case(config: object, message: str, name: str) -> Callable[[Path], Case]:
    def make(d: Path) -> Case:
        _png(d / "a.png", smooth_rgb(6, 6))
        w = _weights(d, "w.safetensors", config)
        return Case([str(d / "a.png"), "--weights", str(w)], 3, absent=[d / "a_sharp.png"], message=message,
                    engine=None)

    make.__name__ = f"c_weights_{name}"
    return make


def c_weights_fifo(d: Path) -> Case:
    _png(d / "a.png", smooth_rgb(6, 6))
    _fifo(d / "w.safetensors")
    return Case([str(d / "a.png"), "--weights", str(d / "w.safetensors")], 3, message="not a regular file",
                engine=None)


def c_weights_not_safetensors(d: Path) -> Case:
    _png(d / "a.png", smooth_rgb(6, 6))
    (d / "w.safetensors").write_bytes(b"\x00" * 64)
    return Case([str(d / "a.png"), "--weights", str(d / "w.safetensors")], 3, message="not a safetensors file",
                engine=None)


# deconv


def c_deconv_suffix_escape(d: Path) -> Case:
    _png(d / "a.png", smooth_rgb(8, 8))
    return Case([str(d / "a.png"), "--radius", "2", "--suffix", "/../x"], 2, message="--suffix", cmd="deconv")


def c_deconv_all_nan_map(d: Path) -> Case:
    _png(d / "a.png", smooth_rgb(8, 8))
    np.save(d / "nan.npy", np.full((8, 8), np.nan, np.float32))
    return Case([str(d / "a.png"), "--map", str(d / "nan.npy")], 1, absent=[d / "a_deconv.png"],
                message="no finite radius", cmd="deconv")


def c_deconv_map_is_fifo(d: Path) -> Case:
    _png(d / "a.png", smooth_rgb(8, 8))
    _fifo(d / "m.npy")
    return Case([str(d / "a.png"), "--map", str(d / "m.npy")], 1, absent=[d / "a_deconv.png"],
                message="not a regular file", cmd="deconv")


def c_deconv_fifo_input_batch_goes_on(d: Path) -> Case:
    _png(d / "a.png", smooth_rgb(8, 8))
    _fifo(d / "p.png")
    return Case([str(d / "p.png"), str(d / "a.png"), "--radius", "1"], 1, exists=[d / "a_deconv.png"],
                message="p.png: not a regular file", cmd="deconv")


def c_deconv_existing_output(d: Path) -> Case:
    _png(d / "a.png", smooth_rgb(8, 8))
    (d / "a_deconv.png").write_bytes(b"keep")
    return Case([str(d / "a.png"), "--radius", "1"], 2, message="already exist", cmd="deconv")


def c_deconv_output_equals_input(d: Path) -> Case:
    _png(d / "a.png", smooth_rgb(8, 8))
    return Case([str(d / "a.png"), "--radius", "1", "-o", str(d / "a.png"), "--overwrite"], 2,
                message="replace input", cmd="deconv")


def c_deconv_radius_and_map(d: Path) -> Case:
    _png(d / "a.png", smooth_rgb(8, 8))
    np.save(d / "m.npy", np.ones((8, 8), np.float32))
    return Case([str(d / "a.png"), "--radius", "1", "--map", str(d / "m.npy")], 2, message="exactly one",
                cmd="deconv")


def c_deconv_long_name(d: Path) -> Case:
    stem = _long_stem(244)  # + _deconv.png = 255 bytes
    _png(d / f"{stem}.png", smooth_rgb(8, 8))
    return Case([str(d / f"{stem}.png"), "--radius", "1"], 0, exists=[d / f"{stem}_deconv.png"], cmd="deconv")


# map (classical, one image: no weights)


def _map_input(d: Path) -> Path:
    return _png(d / "img.png", smooth_rgb(24, 24))


def c_map_preview_folder_is_a_file(d: Path) -> Case:
    _map_input(d)
    (d / "plain").write_bytes(b"x")
    return Case([str(d / "img.png"), "-o", str(d / "m.npy"), "--method", "classical", "--preview",
                 str(d / "plain" / "p.png")], 2, absent=[d / "m.npy"], message="cannot create folder", cmd="map")


def c_map_preview_folder_missing(d: Path) -> Case:
    _map_input(d)
    return Case([str(d / "img.png"), "-o", str(d / "m.npy"), "--method", "classical", "--preview",
                 str(d / "missing" / "dir" / "p.png")], 2, absent=[d / "m.npy"], message="does not exist",
                cmd="map")


def c_map_preview_exists(d: Path) -> Case:
    _map_input(d)
    (d / "p.png").write_bytes(b"keep")
    return Case([str(d / "img.png"), "-o", str(d / "m.npy"), "--method", "classical", "--preview",
                 str(d / "p.png")], 2, absent=[d / "m.npy"], message="already exists", cmd="map")


def c_map_output_equals_input(d: Path) -> Case:
    _map_input(d)
    return Case([str(d / "img.png"), "-o", str(d / "img.png"), "--method", "classical", "--overwrite"], 2,
                message="would replace the input", cmd="map")


def c_map_output_exists(d: Path) -> Case:
    _map_input(d)
    (d / "m.npy").write_bytes(b"keep")
    return Case([str(d / "img.png"), "-o", str(d / "m.npy"), "--method", "classical"], 2,
                message="already exists", cmd="map")


def c_map_preview_equals_output(d: Path) -> Case:
    _map_input(d)
    return Case([str(d / "img.png"), "-o", str(d / "m.png"), "--method", "classical", "--preview",
                 str(d / "m.png")], 2, message="both name", cmd="map")


def c_map_output_is_folder(d: Path) -> Case:
    _map_input(d)
    (d / "m.npy").mkdir()
    return Case([str(d / "img.png"), "-o", str(d / "m.npy"), "--method", "classical", "--overwrite"], 2,
                message="is a folder", cmd="map")


def c_map_fifo_input(d: Path) -> Case:
    _fifo(d / "img.png")
    return Case([str(d / "img.png"), "-o", str(d / "m.npy"), "--method", "classical"], 1, absent=[d / "m.npy"],
                message="not a regular file", cmd="map")


def c_map_dev_zero_pair(d: Path) -> Case:
    _map_input(d)
    return Case([_dev_zero(), str(d / "img.png"), "-o", str(d / "m.npy"), "--method", "classical"], 1,
                absent=[d / "m.npy"], message="not a regular file", cmd="map")


def c_map_ok_with_preview(d: Path) -> Case:
    _map_input(d)
    return Case([str(d / "img.png"), "-o", str(d / "m.npy"), "--method", "classical", "--preview",
                 str(d / "p.png"), "-q"], 0, exists=[d / "m.npy", d / "p.png"], cmd="map")


def c_map_long_name(d: Path) -> Case:
    _map_input(d)
    name = _long_stem(251) + ".npy"
    return Case([str(d / "img.png"), "-o", str(d / name), "--method", "classical", "-q"], 0,
                exists=[d / name], cmd="map")


# score (psnr/ssim only: fast, no LPIPS)


def _score_pair(d: Path) -> tuple[Path, Path]:
    return _png(d / "p.png", smooth_rgb(16, 16)), _png(d / "g.png", smooth_rgb(16, 16, seed=3))


def c_score_csv_is_ground_truth(d: Path) -> Case:
    p, g = _score_pair(d)
    return Case([str(p), str(g), "-m", "psnr", "--csv", str(g)], 2, message="would replace the input", cmd="score")


def c_score_report_is_prediction(d: Path) -> Case:
    p, g = _score_pair(d)
    return Case([str(p), str(g), "-m", "psnr", "--report", str(p), "--overwrite"], 2,
                message="would replace the input", cmd="score")


def c_score_csv_is_blurry_input(d: Path) -> Case:
    p, g = _score_pair(d)
    b = _png(d / "b.png", smooth_rgb(16, 16, seed=4))
    return Case([str(p), str(g), "-i", str(b), "-m", "psnr", "--csv", str(b), "--overwrite"], 2,
                message="would replace the input", cmd="score")


def c_score_csv_is_file_in_gt_folder(d: Path) -> Case:
    _png(d / "pred" / "x.png", smooth_rgb(16, 16))
    _png(d / "gt" / "x.png", smooth_rgb(16, 16, seed=2))
    return Case([str(d / "pred"), str(d / "gt"), "-m", "psnr", "--csv", str(d / "gt" / "x.png"), "--overwrite"],
                2, message="would replace the input", cmd="score")


def c_score_csv_exists(d: Path) -> Case:
    p, g = _score_pair(d)
    (d / "s.csv").write_text("keep\n")
    return Case([str(p), str(g), "-m", "psnr", "--csv", str(d / "s.csv")], 2, message="already exists",
                cmd="score")


def c_score_report_exists(d: Path) -> Case:
    p, g = _score_pair(d)
    (d / "r.html").write_text("keep\n")
    return Case([str(p), str(g), "-m", "psnr", "--report", str(d / "r.html")], 2, message="already exists",
                cmd="score")


def c_score_csv_folder_missing(d: Path) -> Case:
    p, g = _score_pair(d)
    return Case([str(p), str(g), "-m", "psnr", "--csv", str(d / "nodir" / "s.csv")], 2, message="does not exist",
                cmd="score")


def c_score_csv_equals_report(d: Path) -> Case:
    p, g = _score_pair(d)
    return Case([str(p), str(g), "-m", "psnr", "--csv", str(d / "x.out"), "--report", str(d / "x.out")], 2,
                message="both name", cmd="score")


def c_score_csv_is_folder(d: Path) -> Case:
    p, g = _score_pair(d)
    (d / "s.csv").mkdir()
    return Case([str(p), str(g), "-m", "psnr", "--csv", str(d / "s.csv"), "--overwrite"], 2,
                message="is a folder", cmd="score")


def c_score_fifo_prediction(d: Path) -> Case:
    _, g = _score_pair(d)
    _fifo(d / "fifo.png")
    return Case([str(d / "fifo.png"), str(g), "-m", "psnr"], 2, message="not a regular file", cmd="score")


def c_score_fifo_in_folder_goes_on(d: Path) -> Case:
    _png(d / "pred" / "x.png", smooth_rgb(16, 16))
    _png(d / "gt" / "x.png", smooth_rgb(16, 16, seed=2))
    _png(d / "gt" / "y.png", smooth_rgb(16, 16, seed=2))
    _fifo(d / "pred" / "y.png")
    return Case([str(d / "pred"), str(d / "gt"), "-m", "psnr", "--csv", str(d / "s.csv")], 1,
                exists=[d / "s.csv"], message="not a regular file", cmd="score")


def c_score_dev_zero(d: Path) -> Case:
    _, g = _score_pair(d)
    return Case([_dev_zero(), str(g), "-m", "psnr"], 2, message="not a regular file", cmd="score")


def c_score_csv_overwrite_ok(d: Path) -> Case:
    p, g = _score_pair(d)
    (d / "s.csv").write_text("old\n")

    def check() -> None:
        assert (d / "s.csv").read_text().startswith("name,")

    return Case([str(p), str(g), "-m", "psnr", "--csv", str(d / "s.csv"), "--overwrite"], 0,
                exists=[d / "s.csv"], replaced=[d / "s.csv"], cmd="score", check=check)


def c_score_report_and_csv_ok(d: Path) -> Case:
    p, g = _score_pair(d)
    return Case([str(p), str(g), "-m", "psnr,ssim", "--csv", str(d / "s.csv"), "--report", str(d / "r.html")], 0,
                exists=[d / "s.csv", d / "r.html"], cmd="score")


# models


def c_models_info_unknown(d: Path) -> Case:
    return Case(["info", "no-such-model"], 2, message="no-such-model", cmd="models")


def c_models_verify_unknown(d: Path) -> Case:
    return Case(["verify", "no-such-model"], 2, message="no-such-model", cmd="models")


def c_models_convert_dst_is_src(d: Path) -> Case:
    (d / "ck.safetensors").write_bytes(b"not a checkpoint")
    return Case(["convert", str(d / "ck.safetensors"), "-o", str(d / "ck.safetensors"), "--arch", "ifan",
                 "--overwrite"], 2, message="would replace the input", cmd="models")


def c_models_convert_dst_exists(d: Path) -> Case:
    (d / "IFAN.pytorch").write_bytes(b"not a checkpoint")
    (d / "o.safetensors").write_bytes(b"keep")
    return Case(["convert", str(d / "IFAN.pytorch"), "-o", str(d / "o.safetensors"), "--arch", "ifan"], 2,
                message="already exists", cmd="models")


def c_models_convert_dst_folder_missing(d: Path) -> Case:
    (d / "IFAN.pytorch").write_bytes(b"not a checkpoint")
    return Case(["convert", str(d / "IFAN.pytorch"), "-o", str(d / "no" / "o.safetensors"), "--arch", "ifan"], 2,
                message="does not exist", cmd="models")


def c_models_convert_src_fifo(d: Path) -> Case:
    _fifo(d / "IFAN.pytorch")
    return Case(["convert", str(d / "IFAN.pytorch"), "-o", str(d / "o.safetensors"), "--arch", "ifan"], 1,
                absent=[d / "o.safetensors"], message="not a regular file", cmd="models")


def c_models_convert_src_not_checkpoint(d: Path) -> Case:
    (d / "IFAN.pytorch").write_bytes(b"garbage" * 10)
    return Case(["convert", str(d / "IFAN.pytorch"), "-o", str(d / "o.safetensors"), "--arch", "ifan"], 1,
                absent=[d / "o.safetensors"], message="not a torch checkpoint|refused by the safe", cmd="models")


def c_models_convert_dst_wrong_suffix(d: Path) -> Case:
    (d / "IFAN.pytorch").write_bytes(b"garbage")
    return Case(["convert", str(d / "IFAN.pytorch"), "-o", str(d / "o.pth"), "--arch", "ifan"], 2,
                message="safetensors", cmd="models")


# train


def c_train_unknown_model(d: Path) -> Case:
    return Case(["nosuchnet", "--run-dir", str(d / "run"), "-o", str(d / "w.safetensors")], 2, cmd="train")


CASES: list[Callable[[Path], Case]] = [
    c_zero_byte, c_truncated_jpeg, c_truncated_png, c_truncated_png16, c_text_named_jpg, c_dir_named_png, c_gif,
    c_one_by_one, c_one_by_5000, c_5000_by_one, c_huge_header, c_max_pixels, c_cmyk_jpeg, c_palette_transparency,
    c_gray16, c_rgba, c_gray_alpha, c_tiff16, *[_orientation_case(o) for o in range(1, 9)],
    c_exif_piexif_cannot_parse, c_non_ascii_names, c_non_ascii_folders, c_read_only_output_folder,
    c_output_folder_uncreatable, c_output_equals_input, c_suffix_empty_equals_input, c_two_inputs_one_output,
    c_missing_input, c_missing_and_good_input, c_existing_output_refused, c_output_unknown_extension,
    c_stdin_garbage, c_webp_alpha,
    # issue 13: deblur
    c_suffix_escapes_output_folder, c_suffix_dotdot, c_suffix_separator_next_to_input, c_fifo_named_on_command_line,
    c_fifo_in_folder_batch_goes_on, c_dev_zero_input, c_dev_zero_with_format, c_link_loop_folder_recursive,
    c_link_loop_to_parent_recursive, c_self_looping_image_link, c_broken_link_in_folder, c_broken_link_named,
    c_name_255_bytes_into_folder, c_name_255_bytes_with_suffix, c_name_249_bytes, c_output_name_too_long,
    c_output_is_fifo, c_output_is_folder, c_output_hard_link_to_input, c_output_symlink_to_input,
    c_same_name_two_folders_one_output, c_overwrite_and_skip_existing, c_unknown_format, c_stdin_empty,
    c_empty_folder, c_tiff_16bit_cmyk, c_tiff_float, c_tiff_float_gray, c_tiff_signed, c_tiff16_truncated,
    # weights metadata
    _weights_case({"foo": 1}, "has key 'foo'", "unknown_config_key"),
    _weights_case({"ch": 40000}, "ch=40000 is out of range", "huge_channels"),
    _weights_case({"ch": "64"}, "out of range; expected an integer", "string_channels"),
    _weights_case({"ch": True}, "out of range", "bool_channels"),
    _weights_case("[1, 2]", "not a JSON object", "config_not_object"),
    _weights_case("{not json", "not a JSON object", "config_not_json"),
    _weights_case({"ch": 32}, "does not fit the 'sftnet' network", "config_shape_mismatch"),
    c_weights_fifo, c_weights_not_safetensors,
    # deconv
    c_deconv_suffix_escape, c_deconv_all_nan_map, c_deconv_map_is_fifo, c_deconv_fifo_input_batch_goes_on,
    c_deconv_existing_output, c_deconv_output_equals_input, c_deconv_radius_and_map, c_deconv_long_name,
    # map
    c_map_preview_folder_is_a_file, c_map_preview_folder_missing, c_map_preview_exists, c_map_output_equals_input,
    c_map_output_exists, c_map_preview_equals_output, c_map_output_is_folder, c_map_fifo_input, c_map_dev_zero_pair,
    c_map_ok_with_preview, c_map_long_name,
    # score
    c_score_csv_is_ground_truth, c_score_report_is_prediction, c_score_csv_is_blurry_input,
    c_score_csv_is_file_in_gt_folder, c_score_csv_exists, c_score_report_exists, c_score_csv_folder_missing,
    c_score_csv_equals_report, c_score_csv_is_folder, c_score_fifo_prediction, c_score_fifo_in_folder_goes_on,
    c_score_dev_zero, c_score_csv_overwrite_ok, c_score_report_and_csv_ok,
    # models, train
    c_models_info_unknown, c_models_verify_unknown, c_models_convert_dst_is_src, c_models_convert_dst_exists,
    c_models_convert_dst_folder_missing, c_models_convert_src_fifo, c_models_convert_src_not_checkpoint,
    c_models_convert_dst_wrong_suffix, c_train_unknown_model,
]


def _snapshot(root: Path) -> dict[str, str]:
    """Every regular file under ``root`` (links not followed) → sha256; special files by their kind."""
    out: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for n in filenames + [x for x in dirnames if os.path.islink(os.path.join(dirpath, x))]:
            p = Path(dirpath) / n
            rel = str(p.relative_to(root))
            if p.is_symlink():
                out[rel] = "link:" + os.readlink(p)
            elif p.is_file():
                out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
            else:
                out[rel] = "special"
    return out


def test_corpus_is_big_enough() -> None:
    """At least 80 cases, and every command has several (train: its argument checks)."""
    assert len(CASES) >= 80
    per_command = {cmd: sum(1 for c in CASES if _cmd_of(c) == cmd) for cmd in ("deblur", "deconv", "map", "score",
                                                                              "models", "train")}
    assert min(n for cmd, n in per_command.items() if cmd != "train") >= 5, per_command
    assert per_command["train"] >= 1, per_command


def _cmd_of(make: Callable[[Path], Case]) -> str:
    name = make.__name__.removeprefix("c_")
    for cmd in ("deconv", "map", "score", "models", "train"):
        if name.startswith(cmd + "_"):
            return cmd
    return "deblur"


_NOISE = re.compile(r"Traceback|\.py:\d+|\[ ?(ERROR|WARN):\d|UserWarning|RuntimeWarning")


@pytest.mark.parametrize("make", CASES, ids=[c.__name__.removeprefix("c_") for c in CASES])
def test_bad_input(make: Callable[[Path], Case], tmp_path: Path, use_engine) -> None:  # noqa: ANN001
    d = tmp_path / "case"  # the case works in here; tmp_path around it catches writes that escape it
    d.mkdir()
    case = make(d)
    assert _cmd_of(make) == case.cmd, "name the case after its command (c_<cmd>_...)"
    if case.engine is not None:
        use_engine(case.engine)
    before = _snapshot(tmp_path)
    r = CliRunner().invoke(app, [case.cmd, *case.args], input=case.stdin)
    assert r.exit_code == case.code, f"exit {r.exit_code}, stderr: {r.stderr!r}"
    assert not _NOISE.search(r.stderr), r.stderr
    lines = r.stderr.splitlines()
    if case.message:
        assert any(re.search(case.message, line) for line in lines), r.stderr
    for line in lines:  # messages are one line each, never a dump
        assert len(line) < 400
    if case.code != 0:
        assert any(line.startswith(("error:", "ERROR:")) for line in lines), r.stderr
    after = _snapshot(tmp_path)
    replaced = {str(p.relative_to(tmp_path)) for p in case.replaced}
    for name, digest in before.items():  # every input (and pre-existing file) byte-for-byte unchanged
        if name not in replaced:
            assert after.get(name) == digest, f"{name} changed"
    assert not [n for n in after if n.endswith(".tmp")], "temporary file left behind"
    expected_new = {str(p.relative_to(tmp_path)) for p in case.exists}
    assert set(after) - set(before) <= expected_new, f"unexpected files: {set(after) - set(before) - expected_new}"
    for p in case.exists:
        assert p.is_file(), f"{p} missing"
    for p in case.absent:
        assert not p.exists(), f"{p} should not exist"
    if case.check:
        case.check()
