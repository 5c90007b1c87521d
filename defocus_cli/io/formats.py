"""Image formats: their names, their file extensions, what a file is, and the one folder scanner.

* :data:`IMAGE_EXTENSIONS` is the one list of image file extensions of the package, and :func:`scan_folder`
  the one folder scanner: ``defocus deblur`` plans its batch, ``defocus score`` pairs its folders and the
  training data finds its photos with them.
* :data:`FORMAT_ALIASES` / :data:`EXTENSIONS`: output format names (``--format``) and the extension of each.
* :func:`detect` and :func:`sniff_format` tell a format from a file's first bytes; :func:`format_from_path`
  and :func:`default_output_format` from its name.

HEIC/HEIF (pillow-heif, extra ``[heif]``) and camera RAW (rawpy, extra ``[raw]``) are optional: their
extensions are listed here, their codecs live in :mod:`defocus_cli.io.heif_raw`, which imports neither
library until a file needs it. This module imports nothing heavy (no numpy).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import re
import struct
from pathlib import Path
from typing import Any

from defocus_cli.errors import UsageError
from defocus_cli.io.atomic import describe_os_error, path_key, read_head

log = logging.getLogger(__name__)

#: Output format keys (as written after ``--format``) → canonical format name.
FORMAT_ALIASES: dict[str, str] = {
    "jpg": "jpeg",
    "jpeg": "jpeg",
    "png": "png",
    "tif": "tiff",
    "tiff": "tiff",
    "webp": "webp",
    "heic": "heif",  # needs pillow-heif (extra [heif]); see defocus_cli.io.heif_raw
    "heif": "heif",
}
#: Canonical format → file extension used for new names.
EXTENSIONS: dict[str, str] = {"jpeg": ".jpg", "png": ".png", "tiff": ".tif", "webp": ".webp", "heif": ".heic"}

HEIF_EXTENSIONS = frozenset({".heic", ".heif", ".hif"})
RAW_EXTENSIONS = frozenset({".dng", ".cr2", ".cr3", ".nef", ".nrw", ".arw", ".srf", ".sr2", ".raf", ".orf",
                            ".rw2", ".pef", ".srw", ".3fr", ".iiq", ".erf", ".kdc", ".mrw", ".x3f"})
HEIF_BRANDS = frozenset({b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm", b"hevs", b"mif1",
                         b"msf1"})
HEIF_HINT = "pip install 'defocus-cli[heif]'"
RAW_HINT = "pip install 'defocus-cli[raw]'"


def has_rawpy() -> bool:
    """Whether rawpy is installed (checked without importing it)."""
    return importlib.util.find_spec("rawpy") is not None


#: File extensions (lower case) taken as images when scanning folders: HEIC/HEIF always (each fails alone,
#: naming the extra, when pillow-heif is missing), camera RAW only when rawpy is installed (RAW+JPEG folders
#: keep working without it).
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".jpe", ".png", ".tif", ".tiff", ".webp"}
                             | HEIF_EXTENSIONS | (RAW_EXTENSIONS if has_rawpy() else set()))


def detect(data: bytes, source: Path | None) -> str | None:
    """``"heif"``, ``"raw"`` or ``None`` (a format :mod:`defocus_cli.io.read` reads itself), from the first
    bytes and, for RAW types that are plain TIFFs (NEF, ARW), the file extension."""
    ext = source.suffix.lower() if source is not None else ""
    if len(data) >= 12 and data[4:8] == b"ftyp":
        brand = data[8:12]
        if brand in HEIF_BRANDS:
            return "heif"
        if brand == b"crx ":
            return "raw"  # Canon CR3
    if ext in RAW_EXTENSIONS:
        return "raw"
    if ext in HEIF_EXTENSIONS:
        return "heif"
    if data[:4] in (b"II*\x00", b"MM\x00*") and (data[8:10] == b"CR" or _is_dng(data)):
        return "raw"  # CR2 or DNG given without its extension (stdin)
    return None


def _is_dng(data: bytes) -> bool:
    e = "<" if data[:2] == b"II" else ">"
    try:
        (ifd,) = struct.unpack_from(e + "I", data, 4)
        (n,) = struct.unpack_from(e + "H", data, ifd)
        return any(struct.unpack_from(e + "H", data, ifd + 2 + 12 * i)[0] == 50706 for i in range(min(n, 512)))
    except struct.error:
        return False


def default_output_format(source: Path) -> str | None:
    """The format a result is written in with ``--format same`` when it differs from the input's own:
    ``"heif"`` (or ``"jpeg"`` when pillow-heif cannot encode HEIC) for a HEIC input, ``"tiff"`` for a RAW
    input; ``None`` for every other input."""
    ext = source.suffix.lower()
    if ext in HEIF_EXTENSIONS:
        from defocus_cli.io import heif_raw

        return "heif" if heif_raw.heif_writable() else "jpeg"
    if ext in RAW_EXTENSIONS:
        return "tiff"
    return None


def normalize_format(fmt: str) -> str:
    """``"jpg"`` → ``"jpeg"`` etc.; raise :class:`UsageError` for anything else."""
    key = fmt.lower().lstrip(".")
    if key not in FORMAT_ALIASES:
        raise UsageError(f"unknown image format {fmt!r}; expected one of jpg, png, tif, webp, heic")
    if FORMAT_ALIASES[key] == "heif":
        from defocus_cli.io import heif_raw

        heif_raw.require_heif_writer()
    return FORMAT_ALIASES[key]


def format_from_path(path: str | os.PathLike[str]) -> str | None:
    """Canonical format implied by a file name's extension, or ``None`` when it implies none."""
    return FORMAT_ALIASES.get(Path(path).suffix.lower().lstrip("."))


def sniff_format(path: Path) -> str | None:
    """Format from the first bytes of a regular file (``jpeg``, ``png``, ``tiff``, ``webp``) or ``None``
    (never blocks: a FIFO or device gives ``None``)."""
    head = read_head(path, 16)
    if head is None:
        return None
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "tiff"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    return None


# ------------------------------------------------------------------------------------------- scanning


def _natural_key(p: Path) -> list[Any]:
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", str(p))]


def _is_hidden(name: str) -> bool:
    return name.startswith(".") or name.lower() in {"thumbs.db", "desktop.ini"}


def scan_folder(folder: Path, recursive: bool, exclude: Path | None = None) -> list[Path]:
    """Image files in ``folder`` (natural order), descending when ``recursive``; hidden entries and the
    ``exclude`` folder (an output folder inside the input) are skipped.

    Each real folder is visited once (a link back to a folder already seen, e.g. ``ln -s . loop``, is
    skipped), so link loops end. Entries with an image extension that are broken links, link loops, FIFOs or
    devices are returned like files: reading them fails for that item alone ("not a regular file", "broken
    symbolic link"), and the rest of the batch goes on.

    The one scanner of the package: ``defocus deblur``'s plan (:func:`defocus_cli.batch.plan_batch`), ``defocus
    score``'s pairing (:func:`defocus_cli.scoring.pair_paths`) and the training data
    (:func:`defocus_cli.data.list_images`; those two sort the result by path).
    """
    found: list[Path] = []
    excl = path_key(exclude) if exclude is not None else None
    seen: set[tuple[int, int]] = set()

    def walk(d: Path) -> None:
        try:
            st = os.stat(d)
        except OSError as e:
            log.warning("%s: cannot list folder (%s)", d, describe_os_error(e, d))
            return
        if (st.st_dev, st.st_ino) in seen:
            log.info("%s: folder already scanned (a link back to it); not scanned again", d)
            return
        seen.add((st.st_dev, st.st_ino))
        try:
            with os.scandir(d) as it:
                entries = sorted(it, key=lambda e: _natural_key(Path(e.name)))
        except OSError as e:
            log.warning("%s: cannot list folder (%s)", d, describe_os_error(e, d))
            return
        for e in entries:
            if _is_hidden(e.name):
                continue
            p = Path(e.path)
            try:
                is_dir = e.is_dir(follow_symlinks=True)
            except OSError:  # a link loop: not a folder we can enter
                is_dir = False
            if is_dir:
                if recursive and (excl is None or path_key(p) != excl):
                    walk(p)
            elif p.suffix.lower() in IMAGE_EXTENSIONS:
                found.append(p)
            elif p.suffix.lower() in RAW_EXTENSIONS:
                raw_skipped.append(p)

    raw_skipped: list[Path] = []  # camera RAW files, when rawpy is not installed (IMAGE_EXTENSIONS lacks them)
    walk(folder)
    if raw_skipped:
        log.warning("%s: %d camera RAW file(s) not taken (e.g. %s); to read them: %s", folder, len(raw_skipped),
                    raw_skipped[0].name, RAW_HINT)
    return found
