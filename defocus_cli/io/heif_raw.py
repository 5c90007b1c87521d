"""Optional codecs: HEIC/HEIF (pillow-heif, extra ``[heif]``) and camera RAW (rawpy, extra ``[raw]``).

Both are well-kept libraries wrapped here; :mod:`defocus_cli.io.read` and :mod:`defocus_cli.io.write` call
into this module, which imports neither library until a file needs it. Without the package, such a file
fails alone with one line naming the extra to install.

* **HEIC/HEIF** is decoded through Pillow once pillow-heif's opener is registered, so it takes the same
  path as every other 8-bit photo (pixel limit from the header, EXIF, ICC). libheif applies the HEIF
  rotation itself and pillow-heif then reports EXIF orientation 1. The result is written as HEIC by default
  when pillow-heif can encode it (its wheels include an HEVC encoder), else as JPEG.
* **Camera RAW** (DNG, CR2, CR3, NEF, ARW, and the other raw types LibRaw reads) is demosaiced by LibRaw
  (rawpy) to 16 bits with the camera's white balance, into sRGB (sRGB tone curve) or, with
  ``linear=True``, linear-light sRGB primaries. The result is written as a 16-bit TIFF by default. For
  TIFF-based RAW files (DNG, CR2, NEF, ARW) the EXIF and GPS tags are carried over
  (:func:`defocus_cli.io.metadata.raw_exif`; maker notes and the raw-layout tags are not); CR3 files carry none.
"""

from __future__ import annotations

import io
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import numpy as np

from defocus_cli.errors import InputError, UsageError
from defocus_cli.io.formats import HEIF_HINT, RAW_HINT
from defocus_cli.io.metadata import raw_exif

if TYPE_CHECKING:  # pragma: no cover
    from defocus_cli.io.read import Photo

# ------------------------------------------------------------------------------------------------ HEIF


@lru_cache(maxsize=1)
def _heif_module() -> Any:
    """pillow_heif with its Pillow opener registered, or ``None`` when it is not installed."""
    try:
        import pillow_heif
    except ImportError:
        return None
    pillow_heif.register_heif_opener()
    return pillow_heif


def require_heif_reader(label: str) -> None:
    """Register pillow-heif's Pillow opener. Raises :class:`InputError` naming the extra when it is missing."""
    if _heif_module() is None:
        raise InputError(f"{label}: HEIC/HEIF input needs pillow-heif, which is not installed; {HEIF_HINT}")


def heif_writable() -> bool:
    """Whether pillow-heif is installed with an HEVC (HEIC) encoder."""
    mod = _heif_module()
    if mod is None:
        return False
    try:
        return bool(mod.libheif_info().get("HEIF"))
    except Exception:  # noqa: BLE001 - an old pillow-heif without libheif_info: try writing
        return True


def require_heif_writer() -> None:
    """Raise :class:`UsageError` (exit 2) when HEIC output cannot be written here."""
    if _heif_module() is None:
        raise UsageError(f"--format heic needs pillow-heif, which is not installed; {HEIF_HINT} "
                         "(or choose --format jpg)")
    if not heif_writable():
        raise UsageError("--format heic: this pillow-heif has no HEVC encoder; choose --format jpg")


def encode_heif(arr: np.ndarray, quality: int, exif: bytes | None, icc: bytes | None, label: str) -> bytes:
    """8-bit gray, RGB or RGBA ``arr`` ``(H, W, C)`` as HEIC, with EXIF and ICC (quality 100 = lossless)."""
    from PIL import Image

    if _heif_module() is None:
        raise UsageError(f"HEIC output needs pillow-heif, which is not installed; {HEIF_HINT}")
    c = arr.shape[2]
    if c == 1:
        img = Image.fromarray(np.repeat(arr, 3, axis=2), "RGB")
    elif c == 2:
        img = Image.fromarray(np.concatenate([np.repeat(arr[:, :, :1], 3, axis=2), arr[:, :, 1:]], axis=2), "RGBA")
    else:
        img = Image.fromarray(np.ascontiguousarray(arr), "RGB" if c == 3 else "RGBA")
    kw: dict[str, Any] = {"quality": -1 if quality >= 100 else int(quality)}
    if exif:
        kw["exif"] = exif
    if icc:
        kw["icc_profile"] = icc
    buf = io.BytesIO()
    img.save(buf, "HEIF", **kw)
    return buf.getvalue()


# ------------------------------------------------------------------------------------------------- RAW


def decode_raw(data: bytes, label: str, max_pixels: int | None, *, linear: bool = False) -> Photo:
    """Demosaic a camera RAW file's bytes into an upright 16-bit :class:`~defocus_cli.io.read.Photo`.

    LibRaw's defaults otherwise (AHD demosaic, automatic brightness for sRGB; none for linear).
    Format ``"tiff"``: the result is written as a 16-bit TIFF unless another format is asked for.

    Raises:
        InputError: rawpy missing (names the extra), not a RAW file LibRaw reads, too large.
    """
    from defocus_cli.io.read import Photo

    try:
        import rawpy
    except ImportError:
        raise InputError(f"{label}: camera RAW input needs rawpy, which is not installed; {RAW_HINT}") from None
    raw = rawpy.RawPy()
    try:
        try:
            raw.open_buffer(io.BytesIO(data))
        except Exception as e:  # noqa: BLE001 - LibRaw's own error types
            raise InputError(f"{label}: not a camera RAW file LibRaw can read ({type(e).__name__}: {e})") from None
        s = raw.sizes
        w, h = int(s.width), int(s.height)
        if max_pixels is not None and w * h > max_pixels:
            raise InputError(f"{label}: {w}x{h} = {w * h / 1e6:.1f} MP is above the limit of "
                             f"{max_pixels / 1e6:.1f} MP; raise --max-pixels (or DEFOCUS_MAX_PIXELS) to accept it")
        try:
            raw.unpack()
            rgb = raw.postprocess(
                use_camera_wb=True, output_bps=16, output_color=rawpy.ColorSpace.sRGB,
                gamma=(1.0, 1.0) if linear else (2.4, 12.92), no_auto_bright=linear,
            )
        except InputError:
            raise
        except Exception as e:  # noqa: BLE001
            raise InputError(f"{label}: cannot demosaic RAW ({type(e).__name__}: {e})") from None
    finally:
        raw.close()
    pixels = rgb.astype(np.float32)
    pixels *= np.float32(1.0 / 65535.0)
    exif = raw_exif(data, pixels.shape[1], pixels.shape[0], label)
    curve = "linear sRGB" if linear else "sRGB"
    return Photo(pixels=np.ascontiguousarray(pixels), bit_depth=16, format="tiff", exif=exif, icc=None,
                 mode="RAW;16", notes=[f"camera RAW demosaiced by LibRaw ({curve}, camera white balance)"])
