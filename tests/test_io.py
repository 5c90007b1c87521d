"""io/ (read, write, metadata, encoders): formats, bit depth, gray/alpha/palette/CMYK, orientation, EXIF and ICC, limits."""

from __future__ import annotations

import io
from pathlib import Path

import cv2
import numpy as np
import piexif
import pytest
from PIL import Image, ImageOps

from conftest import make_exif, sample_icc, smooth_rgb
from defocus_cli.errors import InputError, OutputError
from defocus_cli.io.metadata import apply_orientation
from defocus_cli.io.read import read_photo
from defocus_cli.io.write import atomic_write_bytes, encode_photo, to_integer, write_photo


def _save(img: Image.Image, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def _png16(arr: np.ndarray) -> bytes:
    bgr = arr[:, :, ::-1] if arr.ndim == 3 and arr.shape[2] == 3 else arr
    ok, enc = cv2.imencode(".png", np.ascontiguousarray(bgr))
    assert ok
    return enc.tobytes()


@pytest.mark.parametrize("orientation", range(1, 9))
def test_orientation_applied_like_pillow(orientation: int) -> None:
    img = Image.fromarray(smooth_rgb(12, 20, seed=orientation))
    data = _save(img, "PNG", exif=make_exif(orientation))
    photo = read_photo(data)
    expected = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))))
    assert photo.orientation == orientation
    np.testing.assert_array_equal(to_integer(photo.pixels, 8), expected)
    # written back upright with Orientation 1: pixels identical after another read
    out = encode_photo(photo.pixels, photo, "png")
    assert Image.open(io.BytesIO(out)).getexif()[0x0112] == 1
    np.testing.assert_array_equal(to_integer(read_photo(out).pixels, 8), expected)


def test_apply_orientation_is_a_view_of_the_right_shape() -> None:
    a = np.zeros((3, 5))
    assert apply_orientation(a, 1).shape == (3, 5)
    assert apply_orientation(a, 6).shape == (5, 3)
    assert apply_orientation(a, 8).shape == (5, 3)


@pytest.mark.parametrize("fmt", ["jpg", "png", "tif", "webp"])
def test_exif_and_icc_carried_to_every_format(fmt: str) -> None:
    icc = sample_icc()
    data = _save(Image.fromarray(smooth_rgb(16, 24)), "JPEG", quality=95, exif=make_exif(6, thumbnail=True),
                 icc_profile=icc)
    photo = read_photo(data)
    out = encode_photo(photo.pixels, photo, fmt)
    im = Image.open(io.BytesIO(out))
    assert im.info.get("icc_profile") == icc
    exif = piexif.load(im.info["exif"] if fmt != "tif" else out)
    assert exif["0th"][piexif.ImageIFD.Make] == b"TestCam"
    assert exif["0th"][piexif.ImageIFD.Orientation] == 1
    assert exif["Exif"][piexif.ExifIFD.DateTimeOriginal] == b"2024:05:06 07:08:09"
    assert exif["Exif"][piexif.ExifIFD.ExposureTime] == (1, 125)
    assert not exif["1st"] and exif["thumbnail"] is None  # the (blurry) thumbnail is dropped
    assert im.size == (16, 24)  # upright: the stored 24x16 was rotated by orientation 6


def test_strip_metadata_writes_none() -> None:
    data = _save(Image.fromarray(smooth_rgb(8, 8)), "JPEG", exif=make_exif(1), icc_profile=sample_icc())
    photo = read_photo(data)
    im = Image.open(io.BytesIO(encode_photo(photo.pixels, photo, "jpg", strip_metadata=True)))
    assert "icc_profile" not in im.info and "exif" not in im.info


@pytest.mark.parametrize("fmt", ["png", "tif"])
def test_16bit_rgb_kept_exactly(fmt: str) -> None:
    arr = smooth_rgb(10, 14, dtype="uint16")
    photo = read_photo(_png16(arr))
    assert photo.bit_depth == 16 and not photo.gray
    out = encode_photo(photo.pixels, photo, fmt)
    back = cv2.imdecode(np.frombuffer(out, np.uint8), cv2.IMREAD_UNCHANGED)
    assert back.dtype == np.uint16
    np.testing.assert_array_equal(back[:, :, ::-1], arr)


def test_16bit_gray_png_stays_16bit_gray() -> None:
    arr = smooth_rgb(9, 11, dtype="uint16")[:, :, 0]
    photo = read_photo(_png16(arr))
    assert photo.gray and photo.bit_depth == 16
    back = cv2.imdecode(np.frombuffer(encode_photo(photo.pixels, photo), np.uint8), cv2.IMREAD_UNCHANGED)
    assert back.dtype == np.uint16 and back.ndim == 2
    np.testing.assert_array_equal(back, arr)


def test_16bit_gray_alpha_png_roundtrip() -> None:
    from defocus_cli.io.encoders import encode_png_raw

    la = np.dstack([np.arange(12, dtype=np.uint16).reshape(3, 4) * 5000, np.full((3, 4), 40000, np.uint16)])
    photo = read_photo(encode_png_raw(la, color_type=4))
    assert photo.gray and photo.bit_depth == 16 and photo.mode == "LA;16"
    np.testing.assert_array_equal(photo.alpha, la[:, :, 1])
    out = encode_photo(photo.pixels, photo, "png")
    assert out[25] == 4 and out[24] == 16  # IHDR: gray+alpha, 16 bits
    back = read_photo(out)
    np.testing.assert_array_equal(to_integer(back.pixels[:, :, 0], 16), la[:, :, 0])


def test_16bit_to_jpeg_is_reduced_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    photo = read_photo(_png16(smooth_rgb(6, 6, dtype="uint16")))
    out = encode_photo(photo.pixels, photo, "jpg")
    assert Image.open(io.BytesIO(out)).mode == "RGB"
    assert "8-bit" in caplog.text


def test_rgba_alpha_untouched_and_rgb_processed() -> None:
    rgb = smooth_rgb(10, 12)
    alpha = (np.arange(120).reshape(10, 12) * 2).astype(np.uint8)
    data = _save(Image.fromarray(np.dstack([rgb, alpha]), "RGBA"), "PNG")
    photo = read_photo(data)
    np.testing.assert_array_equal(photo.alpha, alpha)
    out = np.asarray(Image.open(io.BytesIO(encode_photo(1.0 - photo.pixels, photo, "png"))))
    np.testing.assert_array_equal(out[:, :, 3], alpha)
    np.testing.assert_array_equal(out[:, :, :3], 255 - rgb)


def test_gray_alpha_png_stays_gray_alpha() -> None:
    la = np.dstack([smooth_rgb(7, 9)[:, :, 0], np.full((7, 9), 77, np.uint8)])
    photo = read_photo(_save(Image.fromarray(la, "LA"), "PNG"))
    assert photo.gray and photo.alpha is not None
    im = Image.open(io.BytesIO(encode_photo(photo.pixels, photo, "png")))
    assert im.mode == "LA"
    np.testing.assert_array_equal(np.asarray(im), la)


def test_palette_with_transparency_becomes_rgba() -> None:
    img = Image.fromarray(smooth_rgb(8, 8)).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    img.info["transparency"] = 0
    data = _save(img, "PNG", transparency=0)
    photo = read_photo(data)
    expected = np.asarray(Image.open(io.BytesIO(data)).convert("RGBA"))
    assert photo.alpha is not None
    np.testing.assert_array_equal(photo.alpha, expected[:, :, 3])
    np.testing.assert_array_equal(to_integer(photo.pixels, 8), expected[:, :, :3])


def test_cmyk_jpeg_is_converted_to_rgb() -> None:
    rgb = Image.fromarray(smooth_rgb(8, 10))
    data = _save(rgb.convert("CMYK"), "JPEG", quality=95)
    photo = read_photo(data)
    assert photo.mode == "CMYK" and photo.pixels.shape == (8, 10, 3) and "CMYK converted to RGB" in photo.notes
    ref = np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).astype(int)
    assert np.abs(to_integer(photo.pixels, 8).astype(int) - ref).max() <= 1
    assert Image.open(io.BytesIO(encode_photo(photo.pixels, photo, "jpg"))).mode == "RGB"


def test_gray_jpeg_written_back_gray() -> None:
    photo = read_photo(_save(Image.fromarray(smooth_rgb(8, 8)[:, :, 1], "L"), "JPEG"))
    assert photo.gray and photo.pixels.shape == (8, 8, 3)
    assert Image.open(io.BytesIO(encode_photo(photo.pixels, photo))).mode == "L"


def test_webp_roundtrip_with_alpha() -> None:
    rgba = np.dstack([smooth_rgb(8, 8), np.full((8, 8), 128, np.uint8)])
    photo = read_photo(_save(Image.fromarray(rgba, "RGBA"), "WEBP", lossless=True))
    assert photo.format == "webp"
    out = Image.open(io.BytesIO(encode_photo(photo.pixels, photo, "webp", quality=100)))
    np.testing.assert_array_equal(np.asarray(out), rgba)


def test_non_ascii_path_roundtrip(tmp_path: Path) -> None:
    src = tmp_path / "фото ü 写真.png"
    src.write_bytes(_save(Image.fromarray(smooth_rgb(5, 7)), "PNG"))
    photo = read_photo(src)
    dst = write_photo(tmp_path / "résultat 写真.png", photo.pixels, photo)
    np.testing.assert_array_equal(np.asarray(Image.open(dst)), smooth_rgb(5, 7))


def test_pixel_limit_checked_from_header_before_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    import defocus_cli.io.read as pio

    data = _save(Image.fromarray(smooth_rgb(20, 30)), "PNG")
    decoded: list[str] = []
    monkeypatch.setattr(pio, "_decode_pil", lambda *a, **k: decoded.append("pil"))
    with pytest.raises(InputError, match="above the limit"):
        read_photo(data, max_pixels=599)
    assert decoded == []


def test_header_claiming_huge_image_is_refused() -> None:
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0))
           + chunk(b"IDAT", zlib.compress(b"\x00" * 10)) + chunk(b"IEND", b""))
    with pytest.raises(InputError, match="too large|above the limit"):
        read_photo(png)


def test_unparseable_exif_never_fails(caplog: pytest.LogCaptureFixture) -> None:
    """A broken EXIF block: the photo is read and written, without EXIF, with a warning."""
    bad_exif = b"Exif\x00\x00MM\x00\x2a\x00\x00\xff\xff" + b"\x00" * 10  # IFD0 offset far past the end
    data = _save(Image.fromarray(smooth_rgb(6, 6)), "JPEG", exif=bad_exif)
    photo = read_photo(data)
    assert photo.orientation == 1 and photo.exif is None
    assert "EXIF could not be parsed" in caplog.text
    out = encode_photo(photo.pixels, photo, "jpg")
    assert Image.open(io.BytesIO(out)).size == (6, 6)


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"", "empty file"),
        (b"hello, I am text", "not a readable image"),
        (b"GIF89a" + b"\x00" * 40, "not a readable image|not supported"),
    ],
)
def test_unreadable_bytes_raise_input_error(data: bytes, match: str) -> None:
    with pytest.raises(InputError, match=match):
        read_photo(data)


def test_truncated_files_raise_input_error() -> None:
    jpg = _save(Image.fromarray(smooth_rgb(64, 64)), "JPEG")
    png = _save(Image.fromarray(smooth_rgb(64, 64)), "PNG")
    png16 = _png16(smooth_rgb(64, 64, dtype="uint16"))
    for data in (jpg[: len(jpg) // 2], png[: len(png) // 2], png16[: len(png16) // 2]):
        with pytest.raises(InputError, match="cannot decode|truncated"):
            read_photo(data)


def test_encode_refuses_wrong_size() -> None:
    photo = read_photo(_save(Image.fromarray(smooth_rgb(6, 6)), "PNG"))
    with pytest.raises(OutputError, match="5x6"):
        encode_photo(np.zeros((6, 5, 3), np.float32), photo)


def test_atomic_write_leaves_nothing_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "missing_folder" / "x.png"
    with pytest.raises(OutputError, match="cannot write"):
        atomic_write_bytes(target, b"data")
    atomic_write_bytes(tmp_path / "ok.bin", b"abc")
    assert (tmp_path / "ok.bin").read_bytes() == b"abc"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ok.bin"]


# ---------------------------------------------------------------------------------- one reader, one scanner


def test_read_samples_is_the_photo_decoder_in_stored_or_upright_orientation(tmp_path: Path) -> None:
    """read_samples decodes with read_photo's decoder: upright by default, stored orientation on request
    (dual-pixel views, training data); gray stays one channel; 16-bit stays 16-bit."""
    from defocus_cli.io.read import read_samples

    rgb = smooth_rgb(12, 20, seed=3)
    path = tmp_path / "o6.png"
    path.write_bytes(_save(Image.fromarray(rgb), "PNG", exif=make_exif(orientation=6)))
    stored, depth = read_samples(path, upright=False)
    assert depth == 8 and stored.dtype == np.uint8
    np.testing.assert_array_equal(stored, rgb)
    upright, _ = read_samples(path)
    np.testing.assert_array_equal(upright, apply_orientation(rgb, 6))
    np.testing.assert_array_equal(to_integer(read_photo(path).pixels, 8), upright)

    gray16 = smooth_rgb(6, 9, dtype="uint16")[:, :, 0]
    cv2.imwrite(str(tmp_path / "g16.png"), gray16)
    g, depth = read_samples(tmp_path / "g16.png")
    assert depth == 16 and g.shape == (6, 9, 1)
    np.testing.assert_array_equal(g[:, :, 0], gray16)


def test_one_folder_scanner_for_batch_scoring_and_training_data(tmp_path: Path) -> None:
    """deblur planning, score pairing and the training data find the same images: hidden files skipped,
    one extension list (JPEG, PNG, TIFF, WebP, HEIC; not BMP)."""
    from defocus_cli.data import list_images
    from defocus_cli.io.formats import IMAGE_EXTENSIONS, scan_folder
    from defocus_cli.scoring import pair_paths

    for name in ("b/img2.png", "b/img10.png", "a.JPG", ".hidden.png", "notes.txt", "x.bmp", "c.heic"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    found = scan_folder(tmp_path, recursive=True)
    assert {".jpg", ".png", ".tif", ".webp", ".heic"} <= IMAGE_EXTENSIONS and ".bmp" not in IMAGE_EXTENSIONS
    assert sorted(found) == list_images(tmp_path)
    assert sorted(p.relative_to(tmp_path).as_posix() for p in found) == ["a.JPG", "b/img10.png", "b/img2.png",
                                                                          "c.heic"]
    assert sorted(p.pred.name for p in pair_paths(tmp_path, tmp_path).pairs) == ["a.JPG", "c.heic", "img10.png",
                                                                                  "img2.png"]


def test_one_psnr_formula_and_one_autocast_helper() -> None:
    import torch

    from defocus_cli.devices import autocast_context
    from defocus_cli.metrics import PSNR_CAP, mse, psnr, psnr_from_mse
    from defocus_cli.train.common import psnr_t

    assert psnr_from_mse(0.0) == psnr_from_mse(1e-30) == PSNR_CAP and psnr_from_mse(0.01) == pytest.approx(20.0)
    a = np.linspace(0, 1, 48, dtype=np.float32).reshape(4, 4, 3)
    assert psnr(a * 0.9, a) == psnr_from_mse(mse(a * 0.9, a))
    t = torch.from_numpy(a).permute(2, 0, 1)[None]
    assert psnr_t(t * 0.9, t) == pytest.approx(psnr(a * 0.9, a), abs=1e-4)
    with autocast_context("cpu", "fp32"):
        assert not torch.is_autocast_enabled("cpu")
    with autocast_context(torch.device("cpu"), "bf16"):
        assert torch.is_autocast_enabled("cpu")
