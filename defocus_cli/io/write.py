"""Writing photos: processed pixels → a file that displays exactly like the input, written atomically.

:func:`encode_photo` matches the source :class:`~defocus_cli.io.read.Photo` (bit depth, gray, alpha, EXIF,
ICC) and picks the encoder (:mod:`defocus_cli.io.encoders`, HEIC in :mod:`defocus_cli.io.heif_raw`);
:func:`write_photo` writes the bytes through :func:`defocus_cli.io.atomic.atomic_write`.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from defocus_cli.errors import OutputError, UsageError
from defocus_cli.io import heif_raw
from defocus_cli.io.atomic import atomic_write
from defocus_cli.io.encoders import encode_pil, encode_png, encode_tiff
from defocus_cli.io.formats import format_from_path, normalize_format
from defocus_cli.io.read import Photo

log = logging.getLogger(__name__)

_EIGHT_BIT_ONLY = {"jpeg", "webp", "heif"}


def to_integer(pixels: np.ndarray, bit_depth: int) -> np.ndarray:
    """Float ``[0, 1]`` → uint8 (``bit_depth`` 8) or uint16 (16), clipped and rounded (NaN → 0, ±inf clipped)."""
    maxv = np.float32(65535.0 if bit_depth == 16 else 255.0)
    out = np.multiply(np.asarray(pixels), maxv, dtype=np.float32)  # one float32 buffer, reused below
    np.fmax(out, np.float32(0.0), out=out)  # NaN and -inf → 0 (fmax ignores NaN): nan_to_num + clip in two passes
    np.fmin(out, maxv, out=out)  # +inf → maxv
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
            return encode_png(arr, exif, icc)
        if fmt == "tiff":
            return encode_tiff(arr, exif, icc, label)
        if fmt == "heif":
            return heif_raw.encode_heif(arr, quality, exif, icc, label)
        return encode_pil(arr, fmt, quality, exif, icc, label)
    except (OutputError, UsageError):
        raise
    except Exception as e:  # noqa: BLE001
        raise OutputError(f"{label}: cannot encode {fmt.upper()} ({type(e).__name__}: {e})") from None


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
