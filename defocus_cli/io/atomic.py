"""The one gate every file read and every file write of the library goes through.

Reading (:func:`read_regular_file`): only regular files are read. A FIFO, a device (``/dev/zero``), a socket
or a folder is refused with ``"not a regular file"`` *without blocking* (the file is opened with
``O_NONBLOCK`` and checked with ``fstat`` before any byte is read), so a batch never hangs on a pipe or reads
an endless device until memory runs out.

Writing (:func:`check_targets`, :func:`atomic_write`): every file a command writes — images, maps,
previews, CSV, JSON, HTML reports, converted weights — is

* checked, with all the other targets of the command, *before any work*: refused (:class:`UsageError`,
  exit 2) when it is one of the inputs, when two targets are the same file, when it is a folder or another
  non-regular file, when a folder on its way is a file, and when it exists unless ``overwrite``;
* written atomically: into a temporary file with a short name (``.defocus-<8 hex>.tmp``, 21 bytes, so an
  output name of up to 255 bytes still works) in the target's own folder, flushed and fsync'ed, then
  renamed over the target with ``os.replace``. On any failure (disk full, interrupt, SIGTERM) the temporary
  file is removed and the target is untouched: a reader sees the old file or the complete new one.

Temporary files alive at a given moment are recorded; :func:`remove_temporary_files` deletes them (the CLI
calls it from its SIGTERM handler, on top of the ``finally`` clean-up that also runs then).

Name parts that the user gives (``--suffix``) pass :func:`check_name_part`: no path separator, no ``..``.

This module imports nothing heavy (no numpy, no torch).
"""

from __future__ import annotations

import errno
import os
import secrets
import stat
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from defocus_cli.errors import InputError, OutputError, UsageError

TEMP_PREFIX = ".defocus-"
TEMP_SUFFIX = ".tmp"
#: Longest name a file may have on the file systems we write to (ext4, APFS, NTFS: 255 bytes/UTF-16 units).
NAME_MAX = 255

_live_temps: set[str] = set()


# ------------------------------------------------------------------------------------------------ messages


def describe_os_error(e: OSError, path: str | os.PathLike[str] | None = None) -> str:
    """One short clause for an :class:`OSError`, e.g. ``"file name too long (300 bytes; at most 255)"``."""
    if e.errno == errno.ENAMETOOLONG and path is not None:
        longest = max((len(os.fsencode(part)) for part in Path(path).parts), default=0)
        return f"file name too long ({longest} bytes in one name; at most {NAME_MAX})"
    if e.errno == errno.ELOOP:
        return "symbolic link loop"
    if e.errno == errno.ENOSPC:
        return "no space left on the device"
    if e.errno in (errno.EACCES, errno.EPERM):
        return "permission denied"
    return e.strerror or type(e).__name__


_FILE_KINDS: tuple[tuple[Callable[[int], bool], str], ...] = (
    (stat.S_ISREG, "regular file"), (stat.S_ISDIR, "folder"), (stat.S_ISFIFO, "named pipe"),
    (stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device"), (stat.S_ISSOCK, "socket"),
)


def file_kind(mode: int) -> str:
    """What a ``st_mode`` is, in words: ``"regular file"``, ``"folder"``, ``"named pipe"``..."""
    return next((name for test, name in _FILE_KINDS if test(mode)), "special file")


# ------------------------------------------------------------------------------------------------- reading


def read_regular_file(path: str | os.PathLike[str], limit: int | None = None) -> bytes:
    """All bytes (at most ``limit`` when given) of the regular file ``path``; never blocks on a FIFO and never
    reads a device.

    Raises:
        InputError: missing, a broken or looping link, a folder, not a regular file, or unreadable.
    """
    p = Path(path)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(p, flags)
    except FileNotFoundError:
        if p.is_symlink():
            raise InputError(f"{p}: broken symbolic link (its target does not exist)") from None
        raise InputError(f"{p}: no such file") from None
    except IsADirectoryError:
        raise InputError(f"{p}: is a folder, expected an image file") from None
    except OSError as e:
        raise InputError(f"{p}: cannot read ({describe_os_error(e, p)})") from None
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise InputError(f"{p}: is a folder, expected an image file")
        if not stat.S_ISREG(st.st_mode):
            raise InputError(f"{p}: not a regular file (a {file_kind(st.st_mode)}); expected an image file")
        if limit is not None:
            return os.read(fd, limit)
        chunks = []
        while True:
            chunk = os.read(fd, 1 << 24)
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)
    except OSError as e:
        raise InputError(f"{p}: cannot read ({describe_os_error(e, p)})") from None
    finally:
        os.close(fd)


def is_regular_file(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` (links followed) is a regular file; False for anything else or any error."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except (OSError, ValueError):
        return False


def regular_file_problem(path: str | os.PathLike[str]) -> str | None:
    """Why ``path`` cannot be read as a regular file (``"not a regular file (a named pipe)"``...), or ``None``
    when it can. Never blocks."""
    try:
        read_regular_file(path, limit=0)
    except InputError as e:
        text = str(e)
        prefix = f"{Path(path)}: "
        return text[len(prefix):] if text.startswith(prefix) else text
    return None


def read_head(path: str | os.PathLike[str], n: int = 16) -> bytes | None:
    """The first ``n`` bytes of a regular file, or ``None`` (not a regular file, unreadable)."""
    try:
        return read_regular_file(path, limit=n)
    except InputError:
        return None


# ------------------------------------------------------------------------------------------------- checks


def check_name_part(value: str | None, what: str) -> None:
    """Refuse a user-given part of a file name (``--suffix``) that could leave the output folder.

    Raises:
        UsageError: ``value`` holds a path separator, a NUL byte or ``..``.
    """
    if value is None:
        return
    seps = {"/", os.sep} | ({os.altsep} if os.altsep else set())
    if any(s in value for s in seps) or "\x00" in value or ".." in value:
        raise UsageError(
            f"{what} {value!r} must be part of a file name: no path separator (/) and no '..' "
            "(to write elsewhere, use -o FOLDER)"
        )


@dataclass(frozen=True)
class Target:
    """One file a command will write: ``path`` and the option that named it (``"-o"``, ``"--csv"``...)."""

    path: Path
    what: str = "output"


def path_key(p: str | os.PathLike[str]) -> str:
    """A comparable spelling of ``p``: resolved (links followed), case-folded where the OS folds case; the
    absolute spelling when a link loop stops resolution."""
    p = Path(p)
    try:
        return os.path.normcase(str(p.resolve()))
    except (OSError, RuntimeError):  # a link loop on the way: compare the absolute spelling
        return os.path.normcase(os.path.abspath(p))


def _same_file(a: Path, b: Path) -> bool:
    if path_key(a) == path_key(b):
        return True
    try:
        return os.path.samefile(a, b)
    except (OSError, ValueError):
        return False


def check_targets(
    targets: Sequence[Target],
    inputs: Iterable[str | os.PathLike[str]],
    *,
    overwrite: bool,
    create_folders: bool = True,
) -> None:
    """Check every file a command will write before it does any work.

    Args:
        targets: every output of the command.
        inputs: every file it reads (a target equal to one of them is refused even with ``overwrite``).
        overwrite: existing regular files may be replaced.
        create_folders: missing folders on the way will be created when writing (batch outputs); when
            False the target's folder must exist (single files named by the user: map, CSV, report, weights).

    Raises:
        UsageError: a target is an input, two targets are one file, a target is a folder or not a regular
            file, a folder on the way to it is a file (or missing, without ``create_folders``), the name is
            longer than 255 bytes, or it exists and ``overwrite`` is false.
    """
    ins = [Path(i) for i in inputs]
    seen: dict[str, Target] = {}
    for t in targets:
        p = t.path
        name_len = len(os.fsencode(p.name))
        if name_len > NAME_MAX:
            raise UsageError(f"{t.what} {p}: file name too long ({name_len} bytes; at most {NAME_MAX})")
        for i in ins:
            if _same_file(p, i):
                raise UsageError(f"{t.what} {p} would replace the input {i}; choose another output name")
        k = path_key(p)
        if k in seen:
            raise UsageError(f"{seen[k].what} and {t.what} both name {p}; give each output its own file")
        seen[k] = t
        try:
            st = os.stat(p)
        except (FileNotFoundError, NotADirectoryError):  # missing, or a file on the way (said below)
            st = None
        except OSError as e:
            raise UsageError(f"{t.what} {p}: cannot be written ({describe_os_error(e, p)})") from None
        if st is not None:
            if stat.S_ISDIR(st.st_mode):
                raise UsageError(f"{t.what} {p} is a folder; expected a file name")
            if not stat.S_ISREG(st.st_mode):
                raise UsageError(f"{t.what} {p} is a {file_kind(st.st_mode)}, not a regular file; "
                                 "choose another output name")
            if not overwrite:
                raise UsageError(f"{t.what} {p} already exists; pass --overwrite to replace it")
        elif p.is_symlink():
            raise UsageError(f"{t.what} {p} is a broken symbolic link; remove it or choose another name")
        _check_parents(p, t.what, create_folders)


def _check_parents(p: Path, what: str, create: bool) -> None:
    """The nearest existing ancestor of ``p`` must be a folder (the rest is created when writing); without
    ``create`` the parent itself must be an existing folder."""
    parent = p.parent
    while True:
        try:
            st = os.stat(parent)
        except (FileNotFoundError, NotADirectoryError):
            if not create:
                raise UsageError(f"{what} {p}: folder {parent} does not exist; create it first or choose "
                                 "another path") from None
            if parent == parent.parent:
                return
            parent = parent.parent
            continue
        except OSError as e:
            raise UsageError(f"{what} {p}: cannot use folder {parent} ({describe_os_error(e, parent)})") from None
        if not stat.S_ISDIR(st.st_mode):
            raise UsageError(f"{what} {p}: cannot create folder {parent}: it is a {file_kind(st.st_mode)}")
        return


# ------------------------------------------------------------------------------------------------- writing


def temp_path_for(path: Path) -> Path:
    """A fresh temporary name in ``path``'s folder: ``.defocus-<8 hex>.tmp`` (short, so any legal target
    name works)."""
    return path.with_name(f"{TEMP_PREFIX}{secrets.token_hex(4)}{TEMP_SUFFIX}")


def atomic_write(
    path: str | os.PathLike[str],
    data: bytes | Callable[[Path], None],
    *,
    make_parents: bool = True,
) -> Path:
    """Write ``data`` (bytes, or a function that writes the file it is given) to ``path`` atomically.

    The temporary file lives in ``path``'s folder (same file system, so the rename is atomic), is fsync'ed
    before ``os.replace``, and is removed on any failure, ``KeyboardInterrupt`` and ``SystemExit`` included.

    Raises:
        OutputError: the folder cannot be created, is read-only or full, or ``path`` is a folder.
    """
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{path}: is a folder, expected an output file name")
    folder = path.parent
    if make_parents and str(folder) not in ("", "."):
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise OutputError(f"cannot create folder {folder} ({describe_os_error(e, folder)})") from None
    tmp = temp_path_for(path)
    _live_temps.add(str(tmp))
    try:
        if callable(data):
            data(tmp)
            fd = os.open(tmp, os.O_RDONLY | getattr(os, "O_BINARY", 0))
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        else:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        _unlink_quietly(tmp)
        if isinstance(e, OSError):
            raise OutputError(f"{path}: cannot write ({describe_os_error(e, path)})") from None
        raise
    finally:
        _live_temps.discard(str(tmp))
    return path


def _unlink_quietly(p: str | os.PathLike[str]) -> None:
    try:
        os.unlink(p)
    except OSError:
        pass


def remove_temporary_files() -> int:
    """Delete every temporary file :func:`atomic_write` has open right now (signal handlers call this).
    Returns how many were removed."""
    n = 0
    for t in list(_live_temps):
        if os.path.lexists(t):
            _unlink_quietly(t)
            n += 1
        _live_temps.discard(t)
    return n
