"""Reading photos: a JPEG / PNG / TIFF / WebP file (or its bytes) → an upright :class:`Photo`; also HEIC/HEIF
(with pillow-heif) and camera RAW (with rawpy), see :mod:`defocus_cli.io.heif_raw`.

The one image decoder of the package: :func:`read_photo` (float32 ``(H, W, 3)`` RGB in ``[0, 1]``, upright,
with what is needed to write the result back like the input) and :func:`read_samples` (the stored integer
samples, for readers with other conventions: dual-pixel views in stored orientation, training data) both
decode here.

Which library does what, and why:

* **Pillow** reads every header (format, size, mode) *without decoding*, so the pixel-count limit is
  checked before any pixel is decoded. It decodes all 8-bit images: it raises on truncated files (cv2
  returns a half-grey image with a libjpeg warning instead), handles CMYK JPEG (Adobe inversion, and
  conversion through the embedded ICC profile with ``ImageCms``), palettes with transparency, LA, 1-bit.
  It reads the ICC profile and the EXIF block (:mod:`defocus_cli.io.metadata`).
* **OpenCV** decodes 16-bit PNG and TIFF, which Pillow cannot hold as RGB (Pillow#7723).

File paths are read as bytes by Python (:func:`defocus_cli.io.atomic.read_regular_file`), so non-ASCII names
work on every platform.
"""

from __future__ import annotations

import io
import os
import struct
import threading
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from defocus_cli.errors import InputError
from defocus_cli.io import formats as _formats
from defocus_cli.io import heif_raw
from defocus_cli.io.atomic import read_regular_file
from defocus_cli.io.metadata import (
    apply_orientation,
    cmyk_to_rgb,
    prepare_exif,
    read_exif,
)

#: Default largest image accepted, in pixels (width × height); ``--max-pixels`` / ``DEFOCUS_MAX_PIXELS``.
DEFAULT_MAX_PIXELS = 200_000_000


_PIL_FORMATS = {"JPEG": "jpeg", "MPO": "jpeg", "PNG": "png", "TIFF": "tiff", "WEBP": "webp", "HEIF": "heif"}
_pil_limit_lock = threading.Lock()


@dataclass
class Photo:
    """A decoded photo, upright, with what is needed to write the result back like the original.

    Attributes:
        pixels: float32 ``(H, W, 3)`` RGB in ``[0, 1]``, EXIF orientation already applied. Gray inputs are
            replicated to three channels.
        alpha: ``(H, W)`` alpha in the source's own dtype (uint8 or uint16), upright, or ``None``.
            It is written back untouched.
        bit_depth: 8 or 16 bits per sample of the source.
        gray: the source had one colour channel (written back as gray where the format allows).
        format: source container: ``"jpeg"``, ``"png"``, ``"tiff"`` or ``"webp"``.
        exif: EXIF block ready to embed (``b"Exif\\0\\0"`` + TIFF structure), Orientation 1, no thumbnail;
            ``None`` when the source had none or it could not be parsed.
        icc: ICC profile bytes of the source, or ``None``.
        orientation: EXIF orientation (1-8) found in the source; 1 when absent.
        mode: how the source stored its pixels (Pillow mode, or e.g. ``"RGB;16"`` for 16-bit).
        source: the file it came from, ``None`` for bytes/stdin.
    """

    pixels: np.ndarray
    alpha: np.ndarray | None = None
    bit_depth: int = 8
    gray: bool = False
    format: str = "png"
    exif: bytes | None = None
    icc: bytes | None = None
    orientation: int = 1
    mode: str = "RGB"
    source: Path | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def height(self) -> int:
        return int(self.pixels.shape[0])

    @property
    def width(self) -> int:
        return int(self.pixels.shape[1])

    @property
    def name(self) -> str:
        return str(self.source) if self.source is not None else "<stdin>"


# --------------------------------------------------------------------------------------------- reading


def read_photo(
    src: str | os.PathLike[str] | bytes, *, max_pixels: int | None = DEFAULT_MAX_PIXELS, raw_linear: bool = False
) -> Photo:
    """Read a JPEG, PNG, TIFF or WebP file (or its bytes) into an upright :class:`Photo`; also HEIC/HEIF
    (with pillow-heif) and camera RAW (with rawpy), see :mod:`defocus_cli.io.heif_raw`.

    Args:
        src: a path, or the encoded file's bytes (e.g. from stdin).
        max_pixels: refuse images with more pixels than this (checked from the header, before decoding);
            ``None`` for no limit of ours (Pillow's and OpenCV's own limits still apply).
        raw_linear: camera RAW only: linear-light sRGB primaries instead of the sRGB tone curve.

    Raises:
        InputError: missing, empty, unreadable, truncated, unsupported or too large.
    """
    data, source, label, kind = _load(src)
    if kind == "raw":
        photo = heif_raw.decode_raw(data, label, max_pixels, linear=raw_linear)
    else:
        photo = _decode(data, label, max_pixels)
    photo.source = source
    return photo


def read_samples(
    path: str | os.PathLike[str], *, upright: bool = True, max_pixels: int | None = None
) -> tuple[np.ndarray, int]:
    """The stored samples of an image file, decoded by the same code as :func:`read_photo`, for readers with
    other conventions (dual-pixel views, training data).

    Args:
        path: the image file.
        upright: apply the EXIF orientation; ``False`` keeps the stored orientation (dual-pixel views,
            whose left/right split follows the sensor).
        max_pixels: refuse larger images (checked from the header); ``None`` for no limit of ours.

    Returns:
        ``(H, W, C)`` uint8 or uint16 samples, ``C`` = 1 (gray) or 3 (RGB), alpha dropped; the bit depth
        (8 or 16). Camera RAW comes demosaiced, 16-bit RGB.

    Raises:
        InputError: missing, empty, unreadable, truncated, unsupported or too large.
    """
    data, _source, label, kind = _load(Path(path))
    if kind == "raw":
        photo = heif_raw.decode_raw(data, label, max_pixels)
        return np.rint(photo.pixels * np.float32(65535.0)).astype(np.uint16), 16
    img, fmt, arr, _alpha, _gray, depth, _mode, _icc, _notes = _decode_stored(data, label, max_pixels)
    if upright:
        orientation, _ = read_exif(img, fmt, data, label)
        arr = apply_orientation(arr, orientation)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    arr = np.ascontiguousarray(arr)
    return (arr if arr.flags.writeable else arr.copy()), depth


def _load(src: str | os.PathLike[str] | bytes) -> tuple[bytes, Path | None, str, str | None]:
    """The encoded bytes of ``src`` (a path, or the bytes themselves), its path, its label for messages and
    the optional codec it needs (``"heif"``, ``"raw"`` or ``None``, see :func:`defocus_cli.io.formats.detect`);
    pillow-heif's opener is registered for HEIF."""
    if isinstance(src, (bytes, bytearray, memoryview)):
        data, source = bytes(src), None
        label = "<stdin>"
    else:
        source = Path(src)
        label = str(source)
        data = read_input_bytes(source)
    if not data:
        raise InputError(f"{label}: empty file (0 bytes), expected a JPEG, PNG, TIFF or WebP image")
    kind = _formats.detect(data, source)
    if kind == "heif":
        heif_raw.require_heif_reader(label)
    return data, source, label, kind


def read_input_bytes(path: Path) -> bytes:
    """All bytes of the input image file ``path`` (``b""`` for an empty file: callers name the formats they expect).
    Only regular files are read (see :func:`defocus_cli.io.atomic.read_regular_file`): a FIFO or a device is
    refused at once, never waited on.

    Raises:
        InputError: ``path`` is a folder, not a regular file, does not exist, or cannot be read.
    """
    return read_regular_file(path)


def _open_header(data: bytes, label: str, max_pixels: int | None) -> Any:
    from PIL import Image, UnidentifiedImageError

    with _pil_limit_lock:
        old = Image.MAX_IMAGE_PIXELS
        if max_pixels is not None:
            # Pillow's own bomb check fires at 2 × MAX_IMAGE_PIXELS; ours (below) is the real limit.
            Image.MAX_IMAGE_PIXELS = max(int(max_pixels), 1)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # bomb warnings (our limit is checked below), corrupt EXIF
                img = Image.open(io.BytesIO(data))
        except Image.DecompressionBombError as e:
            raise InputError(f"{label}: image too large ({e}); raise --max-pixels to accept it") from None
        except UnidentifiedImageError:
            raise InputError(
                f"{label}: not a readable image; expected JPEG, PNG, TIFF or WebP ({len(data)} bytes, "
                f"starts with {data[:8]!r})"
            ) from None
        except Exception as e:  # noqa: BLE001 - any parser failure means "unreadable"
            raise InputError(f"{label}: unreadable image header ({type(e).__name__}: {e})") from None
        finally:
            Image.MAX_IMAGE_PIXELS = old
    fmt = _PIL_FORMATS.get(img.format or "")
    if fmt is None:
        raise InputError(f"{label}: {img.format} images are not supported; expected JPEG, PNG, TIFF or WebP")
    w, h = img.size
    if max_pixels is not None and w * h > max_pixels:
        raise InputError(
            f"{label}: {w}x{h} = {w * h / 1e6:.1f} MP is above the limit of {max_pixels / 1e6:.1f} MP; "
            "raise --max-pixels (or DEFOCUS_MAX_PIXELS) to accept it"
        )
    if w < 1 or h < 1:
        raise InputError(f"{label}: image has no pixels ({w}x{h})")
    return img


def _needs_cv2(img: Any, fmt: str, data: bytes) -> bool:
    """True for sources with more than 8 bits per sample (Pillow would reduce them to 8)."""
    if fmt == "png":
        return len(data) > 24 and data[24] == 16  # IHDR bit depth
    if fmt == "tiff":
        bits = img.tag_v2.get(258, (8,)) if hasattr(img, "tag_v2") else (8,)
        bits = bits if isinstance(bits, tuple) else (bits,)
        return max(int(b) for b in bits) > 8
    return False


_TIFF_SAMPLE_FORMATS = {1: "unsigned integer", 2: "signed integer", 3: "floating-point", 4: "undefined",
                        5: "complex integer", 6: "complex floating-point"}


def _tiff_layout(data: bytes) -> dict[int, tuple[int, ...]] | None:
    """Tags 258 (BitsPerSample), 262 (Photometric), 277 (SamplesPerPixel), 339 (SampleFormat) of a classic
    TIFF's first IFD, read from the bytes (no decoder involved); ``None`` when it is not a parsable TIFF."""
    if len(data) < 8 or data[:4] not in (b"II*\x00", b"MM\x00*"):
        return None
    e = "<" if data[:2] == b"II" else ">"
    try:
        (ifd,) = struct.unpack_from(e + "I", data, 4)
        (n,) = struct.unpack_from(e + "H", data, ifd)
        sizes = {1: 1, 3: 2, 4: 4}
        out: dict[int, tuple[int, ...]] = {}
        for i in range(min(n, 512)):
            tag, typ, count = struct.unpack_from(e + "HHI", data, ifd + 2 + 12 * i)
            if tag not in (258, 262, 277, 339) or typ not in sizes or count > 64:
                continue
            size = sizes[typ] * count
            off = ifd + 2 + 12 * i + 8
            if size > 4:
                (off,) = struct.unpack_from(e + "I", data, off)
            code = {1: "B", 3: "H", 4: "I"}[typ]
            out[tag] = struct.unpack_from(e + code * count, data, off)
        return out
    except struct.error:
        return None


def _check_tiff_layout(data: bytes, label: str) -> None:
    """Refuse, with a message that names it, a TIFF sample layout we do not decode (float, signed, 16-bit CMYK)."""
    tags = _tiff_layout(data)
    if not tags:
        return
    bits = max(tags.get(258, (1,)) or (1,))
    fmt = (tags.get(339) or (1,))[0]
    if fmt != 1:
        kind = _TIFF_SAMPLE_FORMATS.get(fmt, f"sample format {fmt}")
        raise InputError(
            f"{label}: {bits}-bit {kind} TIFF samples are not supported; expected 8- or 16-bit unsigned "
            "integer samples (save it as a 16-bit TIFF or PNG)"
        )
    if (tags.get(262) or (0,))[0] == 5 and bits > 8:
        raise InputError(
            f"{label}: {bits}-bit CMYK TIFF is not supported; expected 8-bit CMYK or 8/16-bit RGB "
            "(convert it to 16-bit RGB with its ICC profile first)"
        )


def _decode_stored(
    data: bytes, label: str, max_pixels: int | None
) -> tuple[Any, str, np.ndarray, np.ndarray | None, bool, int, str, bytes | None, list[str]]:
    """Decode the stored samples (no orientation applied): Pillow's header, format, samples ``(H, W)`` or
    ``(H, W, 3)`` RGB, alpha or ``None``, gray, bit depth, mode, ICC, notes."""
    _check_tiff_layout(data, label)
    img = _open_header(data, label, max_pixels)
    fmt = _PIL_FORMATS[img.format]
    icc = img.info.get("icc_profile") or None
    mode = img.mode
    notes: list[str] = []
    try:
        if _needs_cv2(img, fmt, data):
            arr, alpha, gray, depth, mode = _decode_cv2(data, label, _stored_gray(img, fmt, data))
        else:
            arr, alpha, gray, depth, mode, icc = _decode_pil(img, label, icc, notes)
    except InputError:
        raise
    except Exception as e:  # noqa: BLE001 - truncated, corrupt: one message, no traceback
        raise InputError(f"{label}: cannot decode ({type(e).__name__}: {e})") from None
    return img, fmt, arr, alpha, gray, depth, mode, icc, notes


def _decode(data: bytes, label: str, max_pixels: int | None) -> Photo:
    img, fmt, arr, alpha, gray, depth, mode, icc, notes = _decode_stored(data, label, max_pixels)
    orientation, exif_raw = read_exif(img, fmt, data, label)
    pixels = arr.astype(np.float32)
    pixels *= np.float32(1.0 / (65535.0 if depth == 16 else 255.0))
    if pixels.ndim == 2:
        pixels = np.repeat(pixels[:, :, None], 3, axis=2)
    pixels = np.ascontiguousarray(apply_orientation(pixels, orientation))
    if alpha is not None:
        alpha = np.ascontiguousarray(apply_orientation(alpha, orientation))
    exif = prepare_exif(exif_raw, img, pixels.shape[1], pixels.shape[0], label) if exif_raw else None
    return Photo(
        pixels=pixels, alpha=alpha, bit_depth=depth, gray=gray, format=fmt, exif=exif, icc=icc,
        orientation=orientation, mode=mode, notes=notes,
    )


def _decode_pil(
    img: Any, label: str, icc: bytes | None, notes: list[str]
) -> tuple[np.ndarray, np.ndarray | None, bool, int, str, bytes | None]:
    mode = img.mode
    img.load()  # raises on truncated / corrupt data (LOAD_TRUNCATED_IMAGES is left off on purpose)
    if mode == "CMYK":
        img, icc = cmyk_to_rgb(img, icc, label)
        notes.append("CMYK converted to RGB")
    elif mode in ("P", "PA"):
        has_alpha = mode == "PA" or "transparency" in img.info
        img = img.convert("RGBA" if has_alpha else "RGB")
    elif mode == "1":
        img = img.convert("L")
    elif mode in ("I;16", "I;16B", "I;16L", "I"):
        arr16 = np.asarray(img).astype(np.uint16)
        return arr16, None, True, 16, mode, icc
    elif mode not in ("L", "LA", "RGB", "RGBA"):
        try:
            img = img.convert("RGBA" if "A" in mode else "RGB")
        except Exception as e:  # noqa: BLE001
            raise InputError(f"{label}: unsupported pixel mode {mode!r} ({e})") from None
        if icc is not None and mode in ("LAB", "YCbCr", "HSV"):
            icc = None
    arr = np.asarray(img)
    m = img.mode
    if m == "L":
        return arr, None, True, 8, mode, icc
    if m == "LA":
        return arr[:, :, 0], arr[:, :, 1].copy(), True, 8, mode, icc
    if m == "RGBA":
        return arr[:, :, :3], arr[:, :, 3].copy(), False, 8, mode, icc
    if m == "RGB":
        return arr, None, False, 8, mode, icc
    raise InputError(f"{label}: unsupported pixel mode {mode!r}")  # pragma: no cover - converted above


def _stored_gray(img: Any, fmt: str, data: bytes) -> bool:
    """The file stores one colour channel (OpenCV expands gray+alpha to BGRA; this undoes that)."""
    if fmt == "png":
        return len(data) > 25 and data[25] in (0, 4)  # IHDR colour type: gray, gray+alpha
    if fmt == "tiff" and hasattr(img, "tag_v2"):
        return img.tag_v2.get(262) in (0, 1)  # PhotometricInterpretation: WhiteIsZero / BlackIsZero
    return False


def _decode_cv2(
    data: bytes, label: str, stored_gray: bool = False
) -> tuple[np.ndarray, np.ndarray | None, bool, int, str]:
    import cv2

    arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if arr is None:
        raise InputError(f"{label}: cannot decode (truncated or corrupt file)")
    if arr.dtype == np.uint8:
        depth = 8
    elif arr.dtype == np.uint16:
        depth = 16
    else:
        raise InputError(
            f"{label}: {arr.dtype} samples are not supported; expected 8- or 16-bit integers "
            "(convert to a 16-bit TIFF or PNG first)"
        )
    suffix = ";16" if depth == 16 else ""
    if arr.ndim == 2:
        return arr, None, True, depth, "L" + suffix
    c = arr.shape[2]
    if c == 1:
        return arr[:, :, 0], None, True, depth, "L" + suffix
    if c == 2:
        return arr[:, :, 0], arr[:, :, 1].copy(), True, depth, "LA" + suffix
    if c == 3:
        if stored_gray:
            return arr[:, :, 0], None, True, depth, "L" + suffix
        return arr[:, :, ::-1], None, False, depth, "RGB" + suffix
    if c == 4:
        if stored_gray:
            return arr[:, :, 0], arr[:, :, 3].copy(), True, depth, "LA" + suffix
        return arr[:, :, 2::-1], arr[:, :, 3].copy(), False, depth, "RGBA" + suffix
    raise InputError(f"{label}: {c} channels are not supported; expected 1-4")
