"""Photo I/O that keeps what photographers care about: bit depth, alpha, orientation, EXIF and ICC.

One job: turn a JPEG / PNG / TIFF / WebP file (or its bytes) into a :class:`Photo` whose ``pixels`` are
float32 ``(H, W, 3)`` RGB in ``[0, 1]``, already upright, and turn processed pixels back into a file that
displays exactly like the input.

Which library does what, and why:

* **Pillow** reads every header (format, size, mode) *without decoding*, so the pixel-count limit is
  checked before any pixel is decoded. It decodes all 8-bit images: it raises on truncated files (cv2
  returns a half-grey image with a libjpeg warning instead), handles CMYK JPEG (Adobe inversion, and
  conversion through the embedded ICC profile with ``ImageCms``), palettes with transparency, LA, 1-bit.
  It reads the ICC profile and the EXIF block, and writes JPEG and WebP with ``exif=``/``icc_profile=``,
  which cv2 cannot.
* **OpenCV** decodes 16-bit PNG and TIFF, which Pillow cannot hold as RGB (Pillow#7723), and encodes PNG.
* **piexif** edits EXIF (Orientation set to 1, the embedded thumbnail dropped, pixel dimensions updated).
  When piexif cannot parse a camera's EXIF (hMatoba/Piexif#95), Pillow's own EXIF writer is tried; if
  that fails too the photo is written without EXIF and a warning is logged. Metadata never fails a photo.
* What none of them writes is done here: ``iCCP``/``eXIf`` chunks are inserted into PNGs after encoding,
  gray+alpha PNGs are encoded directly, and TIFFs are written as baseline uncompressed TIFF whose IFD0 is
  built by piexif (so the EXIF, GPS and ICC tags sit in the TIFF's own IFDs, 8 or 16 bits per sample).

Orientation: EXIF orientations 2-8 are applied on read (pixels become upright) and the output's
Orientation tag is written as 1, so viewers that honour the tag and viewers that ignore it both show the
output like the input. XMP is not carried over (it may hold a second orientation tag).

File paths are read and written as bytes by Python, so non-ASCII names work on every platform.
"""

from __future__ import annotations

import io
import logging
import os
import struct
import threading
import warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from defocus_cli.io import formats as _formats
from defocus_cli.errors import InputError, OutputError, UsageError
from defocus_cli.io.atomic import atomic_write, read_regular_file

log = logging.getLogger(__name__)

#: Default largest image accepted, in pixels (width × height); ``--max-pixels`` / ``DEFOCUS_MAX_PIXELS``.
DEFAULT_MAX_PIXELS = 200_000_000

#: Output format keys (as written after ``--format``) → canonical format name.
FORMAT_ALIASES: dict[str, str] = {
    "jpg": "jpeg",
    "jpeg": "jpeg",
    "png": "png",
    "tif": "tiff",
    "tiff": "tiff",
    "webp": "webp",
    "heic": "heif",  # needs pillow-heif (extra [heif]); see defocus_cli.io.formats
    "heif": "heif",
}
#: Canonical format → file extension used for new names.
EXTENSIONS: dict[str, str] = {"jpeg": ".jpg", "png": ".png", "tiff": ".tif", "webp": ".webp", "heif": ".heic"}
#: File extensions (lower case) taken as images when scanning folders: HEIC/HEIF always (each fails alone,
#: naming the extra, when pillow-heif is missing), camera RAW only when rawpy is installed (RAW+JPEG folders
#: keep working without it).
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".jpe", ".png", ".tif", ".tiff", ".webp"}
                             | _formats.HEIF_EXTENSIONS | (_formats.RAW_EXTENSIONS if _formats.has_rawpy() else set()))

_PIL_FORMATS = {"JPEG": "jpeg", "MPO": "jpeg", "PNG": "png", "TIFF": "tiff", "WEBP": "webp", "HEIF": "heif"}
_EIGHT_BIT_ONLY = {"jpeg", "webp", "heif"}
_ORIENTATION = 0x0112
# TIFF tags that describe a file's pixel layout: never carried from one file to another.
_STRUCTURAL_TAGS = frozenset(
    {254, 255, 256, 257, 258, 259, 262, 263, 266, 273, 277, 278, 279, 280, 281, 284, 317, 320, 322, 323,
     324, 325, 330, 338, 339, 340, 341, 347, 513, 514, 529, 530, 531, 532, 34675}
)
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


def normalize_format(fmt: str) -> str:
    """``"jpg"`` → ``"jpeg"`` etc.; raise :class:`UsageError` for anything else."""
    key = fmt.lower().lstrip(".")
    if key not in FORMAT_ALIASES:
        raise UsageError(f"unknown image format {fmt!r}; expected one of jpg, png, tif, webp, heic")
    if FORMAT_ALIASES[key] == "heif":
        _formats.require_heif_writer()
    return FORMAT_ALIASES[key]


def format_from_path(path: str | os.PathLike[str]) -> str | None:
    """Canonical format implied by a file name's extension, or ``None`` when it implies none."""
    return FORMAT_ALIASES.get(Path(path).suffix.lower().lstrip("."))


def read_photo(
    src: str | os.PathLike[str] | bytes, *, max_pixels: int | None = DEFAULT_MAX_PIXELS, raw_linear: bool = False
) -> Photo:
    """Read a JPEG, PNG, TIFF or WebP file (or its bytes) into an upright :class:`Photo`; also HEIC/HEIF
    (with pillow-heif) and camera RAW (with rawpy), see :mod:`defocus_cli.io.formats`.

    Args:
        src: a path, or the encoded file's bytes (e.g. from stdin).
        max_pixels: refuse images with more pixels than this (checked from the header, before decoding);
            ``None`` for no limit of ours (Pillow's and OpenCV's own limits still apply).
        raw_linear: camera RAW only: linear-light sRGB primaries instead of the sRGB tone curve.

    Raises:
        InputError: missing, empty, unreadable, truncated, unsupported or too large.
    """
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
    if kind == "raw":
        photo = _formats.decode_raw(data, label, max_pixels, linear=raw_linear)
    else:
        if kind == "heif":
            _formats.require_heif_reader(label)
        photo = _decode(data, label, max_pixels)
    photo.source = source
    return photo


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


def _decode(data: bytes, label: str, max_pixels: int | None) -> Photo:
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

    orientation, exif_raw = _read_exif(img, fmt, data, label)
    pixels = arr.astype(np.float32)
    pixels *= np.float32(1.0 / (65535.0 if depth == 16 else 255.0))
    if pixels.ndim == 2:
        pixels = np.repeat(pixels[:, :, None], 3, axis=2)
    pixels = np.ascontiguousarray(apply_orientation(pixels, orientation))
    if alpha is not None:
        alpha = np.ascontiguousarray(apply_orientation(alpha, orientation))
    exif = _prepare_exif(exif_raw, img, pixels.shape[1], pixels.shape[0], label) if exif_raw else None
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
        img, icc = _cmyk_to_rgb(img, icc, label)
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


def _cmyk_to_rgb(img: Any, icc: bytes | None, label: str) -> tuple[Any, bytes | None]:
    """CMYK → sRGB through the embedded profile when there is one (then the output carries no ICC:
    it is sRGB), else Pillow's naive conversion."""
    if icc:
        try:
            from PIL import ImageCms

            src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            dst = ImageCms.createProfile("sRGB")
            return ImageCms.profileToProfile(img, src, dst, outputMode="RGB"), None
        except Exception as e:  # noqa: BLE001 - metadata trouble never fails a photo
            log.warning("%s: CMYK ICC profile unusable (%s); converting CMYK to RGB without it", label, e)
    return img.convert("RGB"), None


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


def apply_orientation(arr: np.ndarray, orientation: int) -> np.ndarray:
    """Make an ``(H, W[, C])`` array stored with EXIF ``orientation`` (1-8) upright (a view, not a copy)."""
    if orientation == 2:
        return arr[:, ::-1]
    if orientation == 3:
        return arr[::-1, ::-1]
    if orientation == 4:
        return arr[::-1]
    if orientation == 5:
        return arr.swapaxes(0, 1)
    if orientation == 6:
        return np.rot90(arr, -1)
    if orientation == 7:
        return arr[::-1, ::-1].swapaxes(0, 1)
    if orientation == 8:
        return np.rot90(arr, 1)
    return arr


def _read_exif(img: Any, fmt: str, data: bytes, label: str) -> tuple[int, bytes | None]:
    """Orientation (1 when unknown) and the raw EXIF block (for TIFF: the file itself)."""
    raw: bytes | None = data if fmt == "tiff" else (img.info.get("exif") or None)
    orientation = 1
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow warns on corrupt EXIF; we log once below
            o = img.getexif().get(_ORIENTATION, 1)
        orientation = int(o[0] if isinstance(o, tuple) else o)
    except Exception as e:  # noqa: BLE001 - metadata trouble never fails a photo
        if raw is not None and fmt != "tiff":
            log.warning("%s: EXIF unreadable (%s); orientation taken as 1", label, e)
    if orientation not in range(1, 9):
        log.warning("%s: EXIF orientation %r is invalid; taken as 1", label, orientation)
        orientation = 1
    return orientation, raw


def _prepare_exif(raw: bytes, img: Any, width: int, height: int, label: str) -> bytes | None:
    """EXIF to write: Orientation 1, thumbnail (IFD1) dropped, pixel dimensions of the upright image,
    pixel-layout tags removed. piexif first, Pillow's EXIF writer second, nothing (with a warning) last."""
    try:
        import piexif

        d = piexif.load(raw)
        d["0th"] = {k: v for k, v in d["0th"].items() if k not in _STRUCTURAL_TAGS}
        if d["0th"] or d["Exif"] or d["GPS"]:
            d["0th"][_ORIENTATION] = 1
        else:
            return None  # a TIFF without any EXIF-ish tags
        if piexif.ExifIFD.PixelXDimension in d["Exif"]:
            d["Exif"][piexif.ExifIFD.PixelXDimension] = width
            d["Exif"][piexif.ExifIFD.PixelYDimension] = height
        d["1st"] = {}
        d["thumbnail"] = None
        return bytes(piexif.dump(d))
    except Exception as e:  # noqa: BLE001
        log.debug("%s: piexif could not rewrite EXIF (%s); trying Pillow", label, e)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ex = img.getexif()
            for tag in list(ex.keys()):
                if tag in _STRUCTURAL_TAGS or tag == _ORIENTATION:
                    del ex[tag]
            if not ex:
                raise ValueError("no readable tags")
            ex[_ORIENTATION] = 1
            out = ex.tobytes()
        return out if out.startswith(b"Exif") else b"Exif\x00\x00" + out
    except Exception as e:  # noqa: BLE001
        log.warning("%s: EXIF could not be parsed (%s); the output is written without EXIF", label, e)
        return None


# --------------------------------------------------------------------------------------------- writing


def to_integer(pixels: np.ndarray, bit_depth: int) -> np.ndarray:
    """Float ``[0, 1]`` → uint8 (``bit_depth`` 8) or uint16 (16), clipped and rounded."""
    maxv = np.float32(65535.0 if bit_depth == 16 else 255.0)
    out = np.multiply(np.asarray(pixels), maxv, dtype=np.float32)  # one float32 buffer, reused below
    np.nan_to_num(out, copy=False, nan=0.0)
    np.clip(out, 0.0, maxv, out=out)
    out += np.float32(0.5)
    return out.astype(np.uint16 if bit_depth == 16 else np.uint8)


def encode_photo(
    pixels: np.ndarray,
    like: Photo,
    fmt: str | None = None,
    *,
    quality: int = 95,
    strip_metadata: bool = False,
) -> bytes:
    """Encode processed pixels as a file that matches ``like`` (bit depth, gray, alpha, EXIF, ICC).

    Args:
        pixels: float ``(H, W, 3)`` RGB in ``[0, 1]`` (values outside are clipped), same ``H, W`` as ``like``.
            ``(H, W)`` is accepted for gray.
        like: the photo it was computed from.
        fmt: output format (``jpg``, ``png``, ``tif``, ``webp`` or canonical names); ``None`` = ``like.format``.
        quality: 1-100 for JPEG and WebP (100 = lossless WebP).
        strip_metadata: write no EXIF and no ICC profile.

    Raises:
        OutputError: the pixels do not fit ``like`` or encoding failed.
    """
    fmt = normalize_format(fmt) if fmt else like.format
    if not 1 <= int(quality) <= 100:
        raise UsageError(f"--quality must be 1-100, got {quality}")
    px = np.asarray(pixels)
    if px.ndim == 2:
        px = px[:, :, None]
    if px.ndim != 3 or px.shape[2] not in (1, 3):
        raise OutputError(f"pixels must be (H, W, 3) RGB, got shape {tuple(np.shape(pixels))}")
    h, w = px.shape[:2]
    if (h, w) != (like.height, like.width):
        raise OutputError(f"processed image is {w}x{h} but the input was {like.width}x{like.height}")
    label = like.name
    depth = like.bit_depth
    if fmt in _EIGHT_BIT_ONLY and depth == 16:
        log.warning("%s: %s holds 8 bits per sample; the 16-bit result is written as 8-bit", label, fmt.upper())
        depth = 8
    if like.gray:
        gray = px.mean(axis=2) if px.shape[2] == 3 else px[:, :, 0]
        color = to_integer(gray, depth)[:, :, None]
    else:
        color = to_integer(px if px.shape[2] == 3 else np.repeat(px, 3, axis=2), depth)
    alpha = like.alpha
    if alpha is not None:
        if alpha.dtype == np.uint16 and depth == 8:
            alpha = ((alpha.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
        if fmt == "jpeg":
            log.warning("%s: JPEG has no alpha channel; the alpha channel is dropped", label)
            alpha = None
    arr = color if alpha is None else np.concatenate([color, alpha[:, :, None]], axis=2)
    exif = None if strip_metadata else like.exif
    icc = None if strip_metadata else like.icc
    try:
        if fmt == "png":
            return _encode_png(arr, exif, icc)
        if fmt == "tiff":
            return _encode_tiff(arr, exif, icc, label)
        if fmt == "heif":
            return _formats.encode_heif(arr, quality, exif, icc, label)
        return _encode_pil(arr, fmt, quality, exif, icc, label)
    except (OutputError, UsageError):
        raise
    except Exception as e:  # noqa: BLE001
        raise OutputError(f"{label}: cannot encode {fmt.upper()} ({type(e).__name__}: {e})") from None


def _encode_pil(arr: np.ndarray, fmt: str, quality: int, exif: bytes | None, icc: bytes | None, label: str) -> bytes:
    """JPEG / WebP (8-bit) through Pillow, which writes EXIF and ICC for both."""
    from PIL import Image

    c = arr.shape[2]
    if c == 1:
        img = Image.fromarray(arr[:, :, 0], "L")
    elif c == 2:  # gray + alpha: WebP has no gray, store RGBA
        img = Image.fromarray(np.concatenate([np.repeat(arr[:, :, :1], 3, axis=2), arr[:, :, 1:]], axis=2), "RGBA")
    else:
        img = Image.fromarray(np.ascontiguousarray(arr), "RGB" if c == 3 else "RGBA")
    if fmt == "webp" and img.mode == "L":
        img = img.convert("RGB")
    kw: dict[str, Any] = {"quality": int(quality)}
    if fmt == "jpeg":
        kw["subsampling"] = 0 if quality >= 90 else 2
        kw["optimize"] = False
    else:
        kw["lossless"] = quality >= 100
        kw["method"] = 4
    if icc:
        kw["icc_profile"] = icc
    pil_fmt = "JPEG" if fmt == "jpeg" else "WEBP"
    buf = io.BytesIO()
    try:
        img.save(buf, pil_fmt, exif=exif or b"", **kw)
    except Exception as e:  # noqa: BLE001 - e.g. EXIF longer than one JPEG APP1 segment
        if not exif:
            raise
        log.warning("%s: EXIF could not be written (%s); the output is written without EXIF", label, e)
        buf = io.BytesIO()
        img.save(buf, pil_fmt, **kw)
    return buf.getvalue()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _encode_png(arr: np.ndarray, exif: bytes | None, icc: bytes | None) -> bytes:
    """PNG (8/16-bit gray, gray+alpha, RGB, RGBA) with ``iCCP`` and ``eXIf`` chunks after IHDR."""
    c = arr.shape[2]
    if c == 2:
        png = _encode_png_raw(arr, color_type=4)
    else:
        import cv2

        bgr = arr if c == 1 else (arr[:, :, ::-1] if c == 3 else arr[:, :, [2, 1, 0, 3]])
        ok, enc = cv2.imencode(".png", np.ascontiguousarray(bgr), [cv2.IMWRITE_PNG_COMPRESSION, 3])
        if not ok:
            raise OutputError("OpenCV could not encode the PNG")
        png = enc.tobytes()
    extra = b""
    if icc:
        extra += _png_chunk(b"iCCP", b"ICC Profile\x00\x00" + zlib.compress(icc))
    if exif:
        extra += _png_chunk(b"eXIf", exif[6:] if exif.startswith(b"Exif\x00\x00") else exif)
    ihdr_end = 8 + 8 + 13 + 4
    return png[:ihdr_end] + extra + png[ihdr_end:]


def _encode_png_raw(arr: np.ndarray, color_type: int) -> bytes:
    """Minimal PNG encoder (filter 0) for layouts OpenCV cannot write, e.g. gray+alpha."""
    h, w, _ = arr.shape
    depth = 16 if arr.dtype == np.uint16 else 8
    rows = arr.astype(">u2" if depth == 16 else np.uint8).reshape(h, -1).view(np.uint8)
    raw = np.concatenate([np.zeros((h, 1), np.uint8), rows], axis=1).tobytes()
    ihdr = struct.pack(">IIBBBBB", w, h, depth, color_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", zlib.compress(raw, 6))
        + _png_chunk(b"IEND", b"")
    )


def _encode_tiff(arr: np.ndarray, exif: bytes | None, icc: bytes | None, label: str) -> bytes:
    """Baseline uncompressed TIFF, one strip, 8 or 16 bits per sample; IFD0 (with the EXIF, GPS and
    ICC tags) is laid out by piexif, the pixels follow it."""
    import piexif

    h, w, c = arr.shape
    depth = 16 if arr.dtype == np.uint16 else 8
    pix = arr.astype(">u2" if depth == 16 else np.uint8).tobytes()
    base: dict[str, Any] = {"0th": {}, "Exif": {}, "GPS": {}, "Interop": {}, "1st": {}, "thumbnail": None}
    if exif:
        try:
            d = piexif.load(exif)
            base.update({k: d.get(k, {}) for k in ("Exif", "GPS", "Interop")})
            base["0th"] = {k: v for k, v in d["0th"].items() if k not in _STRUCTURAL_TAGS}
        except Exception as e:  # noqa: BLE001
            log.warning("%s: EXIF could not be parsed for TIFF (%s); written without EXIF", label, e)
    layout = {
        256: w, 257: h, 258: tuple([depth] * c), 259: 1, 262: 2 if c >= 3 else 1, 273: 0, 277: c,
        278: h, 279: len(pix), 284: 1,
    }
    if c in (2, 4):
        layout[338] = (2,)  # unassociated alpha
    if icc:
        layout[34675] = icc

    def dump(d: dict[str, Any]) -> bytes:
        head = bytes(piexif.dump(d))[6:]  # drop b"Exif\0\0": the rest is a TIFF header + IFDs
        head += b"\x00" * (len(head) % 2)
        d["0th"][273] = len(head)
        head2 = bytes(piexif.dump(d))[6:]
        head2 += b"\x00" * (len(head2) % 2)
        assert len(head2) == len(head)
        return head2

    try:
        d = dict(base)
        d["0th"] = {**base["0th"], **layout}
        head = dump(d)
    except Exception as e:  # noqa: BLE001 - odd camera tags: keep the pixels and the ICC
        if base["0th"] or base["Exif"] or base["GPS"]:
            log.warning("%s: EXIF could not be written to TIFF (%s); written without EXIF", label, e)
        head = dump({"0th": dict(layout), "Exif": {}, "GPS": {}, "Interop": {}, "1st": {}, "thumbnail": None})
    return head + pix


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`defocus_cli.io.atomic.atomic_write`: a short-named
    temporary file in the same folder, fsync, then ``os.replace``; nothing left behind on failure).

    Raises:
        OutputError: the folder is missing, read-only, full, or the path is a folder.
    """
    atomic_write(path, data, make_parents=False)


def write_photo(
    path: str | os.PathLike[str],
    pixels: np.ndarray,
    like: Photo,
    *,
    fmt: str | None = None,
    quality: int = 95,
    strip_metadata: bool = False,
) -> Path:
    """Encode (see :func:`encode_photo`) and write atomically to ``path``. ``fmt=None`` takes the format
    from the extension of ``path``, else ``like.format``. Returns ``path``."""
    path = Path(path)
    fmt = fmt or format_from_path(path) or like.format
    atomic_write_bytes(path, encode_photo(pixels, like, fmt, quality=quality, strip_metadata=strip_metadata))
    return path
