"""Defocus-map files and dual-pixel view files: reading DP views in stored orientation, writing and reading
CoC-radius maps (npy / png16 / tif) and colour-mapped previews. numpy + OpenCV only; writes are atomic.

Map formats (see ``cli.md``, ``defocus map``), all the same H×W as the input:

* ``npy``: float32 ``(H, W)`` radius in px (signed only when asked for).
* ``tif``: single-channel float32 TIFF, same values as ``npy``.
* ``png16``: uint16 ``round(|radius| * 256)``, so 1/256-px steps up to 255.99 px; never signed.
"""

from __future__ import annotations

import io
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from defocus_cli.errors import InputError, OutputError, UsageError
from defocus_cli.io.read import read_input_bytes, read_samples
from defocus_cli.io.write import atomic_write_bytes

log = logging.getLogger(__name__)

MAP_FORMATS: tuple[str, ...] = ("npy", "png16", "tif")
_EXT_FORMAT = {".npy": "npy", ".png": "png16", ".tif": "tif", ".tiff": "tif"}
#: png16 stores ``round(radius * PNG16_SCALE)``.
PNG16_SCALE = 256.0


@dataclass
class DPView:
    """One dual-pixel view as stored on disk (never EXIF-rotated).

    Attributes:
        pixels: float32 ``(H, W, C)``, ``C`` = 1 (gray, e.g. raw green DP frames) or 3 (RGB), black level
            subtracted and scaled to about [0, 1].
        bit_depth: 8 or 16 bits per sample in the file.
        path: the file.
    """

    pixels: np.ndarray
    bit_depth: int
    path: Path


def _read_bytes(path: Path) -> bytes:
    data = read_input_bytes(path)
    if not data:
        raise InputError(f"{path}: empty file (0 bytes), expected a PNG, TIFF, JPEG or WebP image")
    return data


def read_raw_view(path: str | os.PathLike[str]) -> tuple[np.ndarray, int]:
    """Decode an image file without applying EXIF orientation (:func:`defocus_cli.io.read.read_samples`).

    Returns:
        (``(H, W, C)`` array in the file's integer dtype, C = 1 or 3, RGB order, alpha dropped; bit depth 8/16).
    Raises:
        InputError: missing, unreadable, or not 8/16-bit.
    """
    return read_samples(path, upright=False)


def load_dp_pair(
    left: str | os.PathLike[str],
    right: str | os.PathLike[str],
    *,
    black_level: float = 0.0,
    white_level: float | None = None,
) -> tuple[DPView, DPView]:
    """Read a DP pair in stored orientation and scale it to about [0, 1].

    Args:
        black_level: subtracted from the integer samples first (e.g. 1024 for Pixel 4 DP frames); values
            below it become 0.
        white_level: integer value that maps to 1. Default: the container maximum (255 / 65535) without a
            black level; with a black level, the largest sample of the two views (raw frames rarely use the
            full 16-bit range).
    Raises:
        InputError: unreadable views, or views of different size / channel count.
        UsageError: negative black level, white level not above the black level.
    """
    if black_level < 0:
        raise UsageError(f"--black-level must be >= 0, got {black_level:g}")
    a, bda = read_raw_view(left)
    b, bdb = read_raw_view(right)
    if a.shape[:2] != b.shape[:2]:
        raise InputError(
            f"views differ in size: {left} is {a.shape[1]}x{a.shape[0]}, {right} is {b.shape[1]}x{b.shape[0]}; "
            "expected the two halves of one dual-pixel capture"
        )
    if a.shape[2] != b.shape[2]:
        a, b = _to_gray_int(a), _to_gray_int(b)
    fa, fb = a.astype(np.float32), b.astype(np.float32)
    if black_level:
        fa = np.maximum(fa - black_level, 0.0)
        fb = np.maximum(fb - black_level, 0.0)
    if white_level is None:
        if black_level:
            white = float(max(fa.max(), fb.max(), 1.0))
        else:
            white = float(65535 if max(bda, bdb) == 16 else 255)
    else:
        white = float(white_level) - black_level
        if white <= 0:
            raise UsageError(f"--white-level ({white_level:g}) must be above --black-level ({black_level:g})")
    fa /= white
    fb /= white
    return DPView(fa, bda, Path(left)), DPView(fb, bdb, Path(right))


def _to_gray_int(a: np.ndarray) -> np.ndarray:
    if a.shape[2] == 1:
        return a
    g = a.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    return np.round(g).astype(a.dtype)[:, :, None]


# --------------------------------------------------------------------------------------------- map files


def map_format(path: str | os.PathLike[str], fmt: str | None) -> str:
    """The map format to write: ``fmt`` when given (npy, png16, tif), else from the extension of ``path``.

    Raises:
        UsageError: unknown format, or none given and the extension implies none.
    """
    if fmt is not None:
        key = fmt.lower().lstrip(".")
        key = {"tiff": "tif", "png": "png16"}.get(key, key)
        if key not in MAP_FORMATS:
            raise UsageError(f"unknown map format {fmt!r}; expected one of {', '.join(MAP_FORMATS)}")
        return key
    ext = Path(path).suffix.lower()
    if ext not in _EXT_FORMAT:
        raise UsageError(
            f"cannot tell the map format from {Path(path).name!r}; use a .npy, .png or .tif name or --format"
        )
    return _EXT_FORMAT[ext]


def encode_map(radius: np.ndarray, fmt: str, *, signed: bool = False) -> bytes:
    """Encode an ``(H, W)`` radius map (px) as ``fmt`` bytes. Unsigned output stores ``|radius|``.

    Raises:
        UsageError: ``signed`` with png16 (which cannot hold a sign), or an unknown format.
    """
    import cv2

    r = np.asarray(radius, dtype=np.float32)
    if r.ndim != 2:
        raise ValueError(f"radius map must be (H, W), got {r.shape}")
    if not signed:
        r = np.abs(r)
    if fmt == "npy":
        buf = io.BytesIO()
        np.save(buf, r, allow_pickle=False)
        return buf.getvalue()
    if fmt == "tif":
        ok, enc = cv2.imencode(".tif", r)
    elif fmt == "png16":
        if signed:
            raise UsageError("--signed needs --format npy or tif; png16 stores the unsigned radius only")
        q = np.clip(np.round(r * PNG16_SCALE), 0, 65535).astype(np.uint16)
        if float(r.max(initial=0.0)) * PNG16_SCALE > 65535:
            log.warning("radius above %.2f px clipped in png16", 65535 / PNG16_SCALE)
        ok, enc = cv2.imencode(".png", q)
    else:
        raise UsageError(f"unknown map format {fmt!r}; expected one of {', '.join(MAP_FORMATS)}")
    if not ok:  # pragma: no cover - cv2 encoders do not fail on valid arrays
        raise OutputError(f"could not encode the map as {fmt}")
    return enc.tobytes()


def write_map(path: str | os.PathLike[str], radius: np.ndarray, fmt: str, *, signed: bool = False) -> Path:
    """Encode (see :func:`encode_map`) and write atomically. Returns the path."""
    p = Path(path)
    atomic_write_bytes(p, encode_map(radius, fmt, signed=signed))
    return p


def read_map(path: str | os.PathLike[str]) -> np.ndarray:
    """Read a map written by :func:`write_map` (or any 1-channel image) as float32 ``(H, W)`` radius in px.

    ``.npy`` and float TIFFs are taken as radius; 16-bit PNG/TIFF as ``value / 256`` (png16); 8-bit images
    as ``value`` px (a plain gray map). Raises :class:`InputError` for anything else.
    """
    import cv2

    p = Path(path)
    data = _read_bytes(p)
    if p.suffix.lower() == ".npy" or data[:6] == b"\x93NUMPY":
        try:
            arr = np.load(io.BytesIO(data), allow_pickle=False)
        except ValueError as e:
            raise InputError(f"{p}: not a readable .npy map ({e})") from None
        arr = np.asarray(arr, dtype=np.float32)
    else:
        img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        if img is None:
            raise InputError(f"{p}: not a readable map (expected .npy, 16-bit PNG or float TIFF)")
        if img.ndim == 3:
            img = img[:, :, 0]
        if img.dtype == np.uint16:
            arr = img.astype(np.float32) / PNG16_SCALE
        else:
            arr = img.astype(np.float32)
    if arr.ndim == 3 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 2:
        raise InputError(f"{p}: map has shape {arr.shape}, expected (H, W)")
    if arr.size == 0 or not np.isfinite(arr).any():
        raise InputError(f"{p}: map holds no finite radius (all NaN or infinite); expected CoC radii in px, "
                         "as `defocus map` writes them")
    return arr


def encode_preview(radius: np.ndarray, *, signed: bool = False) -> bytes:
    """Colour-mapped 8-bit PNG for people: unsigned → 'turbo' from 0 to the 99th percentile of |radius|;
    signed → blue (negative, in front of the focal plane) / white (in focus) / red (behind), symmetric scale."""
    import cv2

    r = np.asarray(radius, dtype=np.float32)
    if signed:
        scale = float(np.percentile(np.abs(r), 99)) or 1.0
        t = np.clip(r / scale, -1.0, 1.0)[..., None]
        white = np.ones(3, np.float32)
        red, blue = np.array([0.0, 0.1, 0.85], np.float32), np.array([0.85, 0.35, 0.05], np.float32)  # BGR
        rgb = np.where(t >= 0, white + t * (red - white), white - t * (blue - white))
        img = np.round(rgb * 255).astype(np.uint8)
    else:
        a = np.abs(r)
        scale = float(np.percentile(a, 99)) or 1.0
        g = np.round(np.clip(a / scale, 0, 1) * 255).astype(np.uint8)
        img = cv2.applyColorMap(g, cv2.COLORMAP_TURBO)
    ok, enc = cv2.imencode(".png", img)
    if not ok:  # pragma: no cover
        raise OutputError("could not encode the preview PNG")
    return enc.tobytes()


def write_preview(path: str | os.PathLike[str], radius: np.ndarray, *, signed: bool = False) -> Path:
    """Write :func:`encode_preview` atomically to ``path``."""
    p = Path(path)
    atomic_write_bytes(p, encode_preview(radius, signed=signed))
    return p
