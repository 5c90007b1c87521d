"""Metadata: EXIF orientation, the EXIF block a result carries, ICC (CMYK through its profile).

* EXIF orientations 2-8 are applied on read (:func:`apply_orientation`: pixels become upright) and the
  output's Orientation tag is written as 1, so viewers that honour the tag and viewers that ignore it both
  show the output like the input. XMP is not carried over (it may hold a second orientation tag).
* **piexif** edits EXIF (Orientation set to 1, the embedded thumbnail dropped, pixel dimensions updated).
  When piexif cannot parse a camera's EXIF (hMatoba/Piexif#95), Pillow's own EXIF writer is tried; if
  that fails too the photo is written without EXIF and a warning is logged. Metadata never fails a photo.
* Pixel-layout TIFF tags (:data:`STRUCTURAL_TAGS`) are never carried from one file to another.
"""

from __future__ import annotations

import io
import logging
import warnings
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

#: EXIF/TIFF Orientation tag.
ORIENTATION = 0x0112
#: TIFF tags that describe a file's pixel layout: never carried from one file to another.
STRUCTURAL_TAGS = frozenset(
    {254, 255, 256, 257, 258, 259, 262, 263, 266, 273, 277, 278, 279, 280, 281, 284, 317, 320, 322, 323,
     324, 325, 330, 338, 339, 340, 341, 347, 513, 514, 529, 530, 531, 532, 34675}
)

_EXIF_0TH_KEEP = frozenset({270, 271, 272, 282, 283, 296, 305, 306, 315, 33432})  # description, make, model,
# resolution, software, date, artist, copyright; everything else in a RAW's IFD0 describes the raw data
_MAKER_NOTE = 37500


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


def read_exif(img: Any, fmt: str, data: bytes, label: str) -> tuple[int, bytes | None]:
    """Orientation (1 when unknown) and the raw EXIF block (for TIFF: the file itself)."""
    raw: bytes | None = data if fmt == "tiff" else (img.info.get("exif") or None)
    orientation = 1
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow warns on corrupt EXIF; we log once below
            o = img.getexif().get(ORIENTATION, 1)
        orientation = int(o[0] if isinstance(o, tuple) else o)
    except Exception as e:  # noqa: BLE001 - metadata trouble never fails a photo
        if raw is not None and fmt != "tiff":
            log.warning("%s: EXIF unreadable (%s); orientation taken as 1", label, e)
    if orientation not in range(1, 9):
        log.warning("%s: EXIF orientation %r is invalid; taken as 1", label, orientation)
        orientation = 1
    return orientation, raw


def prepare_exif(raw: bytes, img: Any, width: int, height: int, label: str) -> bytes | None:
    """EXIF to write: Orientation 1, thumbnail (IFD1) dropped, pixel dimensions of the upright image,
    pixel-layout tags removed. piexif first, Pillow's EXIF writer second, nothing (with a warning) last."""
    try:
        import piexif

        d = piexif.load(raw)
        d["0th"] = {k: v for k, v in d["0th"].items() if k not in STRUCTURAL_TAGS}
        if d["0th"] or d["Exif"] or d["GPS"]:
            d["0th"][ORIENTATION] = 1
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
                if tag in STRUCTURAL_TAGS or tag == ORIENTATION:
                    del ex[tag]
            if not ex:
                raise ValueError("no readable tags")
            ex[ORIENTATION] = 1
            out = ex.tobytes()
        return out if out.startswith(b"Exif") else b"Exif\x00\x00" + out
    except Exception as e:  # noqa: BLE001
        log.warning("%s: EXIF could not be parsed (%s); the output is written without EXIF", label, e)
        return None


def cmyk_to_rgb(img: Any, icc: bytes | None, label: str) -> tuple[Any, bytes | None]:
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


def raw_exif(data: bytes, width: int, height: int, label: str) -> bytes | None:
    """The EXIF block to write for a TIFF-based RAW file: IFD0's descriptive tags (make, model, date, ...),
    the Exif IFD without the maker note, GPS; Orientation 1 (LibRaw has rotated the pixels); ``None`` when
    the file holds no readable EXIF (e.g. CR3)."""
    if data[:4] not in (b"II*\x00", b"MM\x00*"):
        return None
    try:
        import piexif

        d = piexif.load(data)
        zeroth = {k: v for k, v in d.get("0th", {}).items() if k in _EXIF_0TH_KEEP}
        ex = {k: v for k, v in d.get("Exif", {}).items() if k != _MAKER_NOTE}
        gps = d.get("GPS", {})
        if not (zeroth or ex or gps):
            return None
        zeroth[piexif.ImageIFD.Orientation] = 1
        ex[piexif.ExifIFD.PixelXDimension] = width
        ex[piexif.ExifIFD.PixelYDimension] = height
        return bytes(piexif.dump({"0th": zeroth, "Exif": ex, "GPS": gps, "Interop": {}, "1st": {},
                                  "thumbnail": None}))
    except Exception as e:  # noqa: BLE001 - metadata never fails a photo
        log.warning("%s: RAW EXIF could not be read (%s); the output is written without EXIF", label, e)
        return None
