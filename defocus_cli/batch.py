"""Batch machinery shared by the image-to-image commands (``deblur``, ``deconv``).

Three steps, each a function:

1. :func:`plan_batch` expands the inputs (files, folders, ``--recursive``, ``-`` for stdin) and decides every
   output name (see the naming rules below). The *whole* input → output mapping is checked before any work:
   two inputs writing one output, an output that would replace an input, or outputs that already exist
   (without ``--overwrite``/``--skip-existing``) are refused as :class:`UsageError` (exit 2), so a batch
   never stops half-way for a reason that was knowable up front.
2. :func:`run_batch` reads each photo, calls the command's ``process(photo) -> pixels`` function, and writes
   the result atomically (temporary file in the output's folder, then rename). A file that fails is
   reported (one line on stderr) and the batch goes on. Engine-wide failures (weights, device, usage)
   stop the batch. With several photos, the next one is decoded and the previous one encoded and written
   in two background threads while ``process`` runs on the current one (at most one photo ahead and one
   behind), so a batch runs at about the speed of the network; results, log lines and JSON records keep
   the input order.
   Progress is reported through plain callbacks (``on_start(total)``, ``on_item(item)``); the
   :class:`BatchResult` says what happened to every item.
3. The command line renders it (``cli/batch_output.py``): the summary line (stderr) or the
   ``--json`` document (stdout), and the exit code (0 when every item was written or skipped, 1 when any failed).
   This module prints nothing and draws no progress bar.

Naming rules (cli.md):

* no ``-o``: ``<stem><suffix><ext>`` next to each input (suffix ``_sharp`` by default); stdin goes to stdout.
* ``-o FILE`` (one input; the name has an image extension): that file.
* ``-o FOLDER`` (an existing folder, a name ending in ``/``, a name without extension, or several inputs):
  each output keeps its input's file name and its path relative to the INPUT folder it came from (a
  mirrored tree); ``--suffix`` is added only when given.
* ``-o -``: stdout, for exactly one input; needs ``--format``.
* ``--format same`` keeps each input's extension; ``jpg|png|tif|webp`` changes it.

Folders are scanned for ``.jpg .jpeg .jpe .png .tif .tiff .webp .heic .heif .hif`` files, and camera RAW
files when rawpy is installed (:mod:`defocus_cli.io.formats`) (case-insensitive), in natural
order; hidden files and folders are skipped. When writing next to the inputs, files whose stem already ends
with the suffix are taken as earlier outputs and skipped; an output folder inside a scanned folder is not
scanned.
"""

from __future__ import annotations

import errno
import logging
import os
import queue
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from dataclasses import replace as _replace
from pathlib import Path
from typing import Any

import numpy as np

from defocus_cli.errors import DefocusError, DeviceError, OutputError, UsageError, WeightsError
from defocus_cli.io.atomic import (
    Target,
    atomic_write,
    check_name_part,
    check_targets,
    describe_os_error,
    path_key,
    regular_file_problem,
    remove_temporary_files,
)
from defocus_cli.io.formats import (
    EXTENSIONS,
    default_output_format,
    format_from_path,
    normalize_format,
    scan_folder,
    sniff_format,
)
from defocus_cli.io.read import DEFAULT_MAX_PIXELS, Photo, read_photo
from defocus_cli.io.write import encode_photo

log = logging.getLogger(__name__)

STDIO = "-"
EXISTING_MODES = ("refuse", "overwrite", "skip")
#: Photos decoded ahead of the one in ``process`` and results waiting to be encoded and written (each at most;
#: :func:`run_batch`'s ``pipeline``).
PIPELINE_DEPTH = 1
#: After an interrupt, how long the pipeline waits for its threads (the file being written) before returning.
INTERRUPT_JOIN_S = 5.0

ProcessFn = Callable[[Photo], np.ndarray]
#: ``on_start(total)``: called once before any work with the number of items (pending or not).
StartFn = Callable[[int], None]
#: ``on_item(item)``: called once per item when it is finished (ok, skipped or error), in input order, after its
#: log line; from the writer thread in a pipelined batch.
ItemFn = Callable[["Item"], None]


@dataclass
class BatchOptions:
    """How inputs map to outputs and how outputs are written.

    Attributes:
        output: ``-o`` value: a file, a folder, ``"-"`` (stdout) or ``None`` (next to each input).
        recursive: descend into sub-folders of folder inputs.
        suffix: added to output stems; ``None`` = ``default_suffix`` next to inputs, nothing into a folder.
        fmt: ``"same"`` or an output format (``jpg``, ``png``, ``tif``, ``webp``).
        quality: JPEG/WebP quality 1-100.
        existing: what to do with outputs that exist: ``"refuse"`` (default: usage error before any work),
            ``"overwrite"`` or ``"skip"``.
        strip_metadata: write no EXIF/ICC.
        max_pixels: largest input accepted (pixels); ``None`` = no limit of ours.
        default_suffix: the command's suffix (``_sharp`` for deblur).
        shard: a :class:`defocus_cli.sharding.Shard` (``--shard I/N``): plan only the inputs of that shard
            (by a hash of each input's path relative to its input folder); the safety checks still see
            the whole mapping. ``None`` = every input.
        raw_linear: camera RAW inputs are demosaiced to linear-light sRGB instead of the sRGB tone curve.
    """

    output: str | None = None
    recursive: bool = False
    suffix: str | None = None
    fmt: str = "same"
    quality: int = 95
    existing: str = "refuse"
    strip_metadata: bool = False
    max_pixels: int | None = DEFAULT_MAX_PIXELS
    default_suffix: str = "_sharp"
    shard: Any = None
    raw_linear: bool = False


@dataclass
class Item:
    """One input and where its result goes. ``input`` ``None`` = stdin; ``stdout`` = the result goes to
    stdout; ``output`` ``None`` without ``stdout`` = no output (the item failed during planning)."""

    input: Path | None
    output: Path | None
    fmt: str | None = None
    status: str = "pending"  # pending | ok | skipped | error
    error: str | None = None
    seconds: float | None = None
    stdout: bool = False
    extra: dict[str, Any] = field(default_factory=dict)
    key: str | None = None  # the input's path relative to its input folder, "/"-separated (--shard)

    @property
    def input_label(self) -> str:
        return STDIO if self.input is None else str(self.input)

    @property
    def output_label(self) -> str | None:
        return STDIO if self.stdout else (None if self.output is None else str(self.output))

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "input": self.input_label,
            "output": self.output_label,
            "status": self.status,
            "error": self.error,
            "seconds": None if self.seconds is None else round(self.seconds, 4),
        }
        d.update(self.extra)
        return d


@dataclass
class BatchResult:
    """What :func:`run_batch` did."""

    items: list[Item]
    seconds: float = 0.0

    def count(self, status: str) -> int:
        """Number of items with this status (``"ok"``, ``"skipped"``, ``"error"``, ``"pending"``)."""
        return sum(1 for i in self.items if i.status == status)


# ------------------------------------------------------------------------------------------- planning


def _key(p: Path) -> str:
    return path_key(p)


def _is_folder_target(out: str, n_inputs: int, any_folder: bool) -> bool:
    if out.endswith(("/", os.sep)) or Path(out).is_dir():
        return True
    if format_from_path(out) is not None:
        return False
    if Path(out).suffix:
        raise UsageError(
            f"-o {out}: unknown image extension {Path(out).suffix!r}; expected .jpg, .png, .tif or .webp "
            "(or a folder: end it with /)"
        )
    return True


def plan_batch(
    inputs: Sequence[str],
    opts: BatchOptions,
    *,
    stdin_is_tty: bool | None = None,
    stdout_is_tty: bool | None = None,
) -> list[Item]:
    """Expand ``inputs`` and decide every output; check the whole mapping before any work.

    Inputs that are missing, or folders holding no image, become items with status ``"error"`` (the rest
    of the batch still runs; the exit code will be 1).

    Raises:
        UsageError: no input; ``-`` twice; ``-o`` naming one file for several inputs; stdout without
            ``--format`` or onto a terminal; two inputs writing one output; an output that would replace an
            input; outputs that exist while ``existing == "refuse"``; bad option values.
    """
    if not inputs:
        raise UsageError("no INPUT given; expected image files, folders, or - for stdin")
    if opts.existing not in EXISTING_MODES:
        raise UsageError(f"existing must be one of {EXISTING_MODES}, got {opts.existing!r}")
    if not 1 <= int(opts.quality) <= 100:
        raise UsageError(f"quality must be 1-100, got {opts.quality}", param="quality")
    if opts.max_pixels is not None and opts.max_pixels < 1:
        raise UsageError(f"max pixels must be >= 1, got {opts.max_pixels}", param="max_pixels")
    check_name_part(opts.suffix, "--suffix")
    check_name_part(opts.default_suffix, "default suffix")
    fmt = None if opts.fmt.lower() == "same" else normalize_format(opts.fmt)
    if list(inputs).count(STDIO) > 1:
        raise UsageError("'-' (stdin) may be given only once")
    out = opts.output
    to_stdout = out == STDIO

    # 1. expand inputs: (file or None for stdin, root folder or None) plus early errors
    sources: list[tuple[Path | None, Path | None]] = []
    early: list[Item] = []
    any_folder = False
    folder_out = Path(out) if out not in (None, STDIO) else None
    for raw in inputs:
        if raw == STDIO:
            if stdin_is_tty if stdin_is_tty is not None else sys.stdin.isatty():
                raise UsageError("'-' reads an image from stdin, but stdin is a terminal; pipe an image in")
            if opts.shard is not None:
                raise UsageError("--shard splits files and folders; stdin (-) cannot be sharded")
            sources.append((None, None))
            continue
        p = Path(raw)
        if p.is_dir():
            any_folder = True
            files = scan_folder(p, opts.recursive, exclude=folder_out)
            if out is None and (opts.suffix if opts.suffix is not None else opts.default_suffix):
                sfx = opts.suffix if opts.suffix is not None else opts.default_suffix
                earlier = [f for f in files if f.stem.endswith(sfx)]
                if earlier:
                    log.info("%s: %d earlier outputs (*%s.*) not taken as inputs", p, len(earlier), sfx)
                files = [f for f in files if not f.stem.endswith(sfx)]
            if not files:
                early.append(Item(p, None, status="error", error=(
                    "folder holds no .jpg/.png/.tif/.webp images"
                    + ("" if opts.recursive else " (use --recursive to look in sub-folders)")), key=p.name))
            sources.extend((f, p) for f in files)
        elif os.path.lexists(p):  # a file, or a link/FIFO/device: reading it says what is wrong with it
            sources.append((p, None))
        else:
            early.append(Item(p, None, status="error", error="no such file or folder", key=p.name))

    # 2. outputs
    if to_stdout:
        if len(sources) != 1 or any_folder:
            raise UsageError(f"-o - (stdout) takes exactly one input image, got {len(sources)}")
    folder_mode = False
    if out not in (None, STDIO):
        folder_mode = _is_folder_target(out, len(sources) + len(early), any_folder)
        if not folder_mode and (len(sources) + len(early) > 1 or any_folder):
            raise UsageError(f"-o {out} names one file but several inputs were given; give a folder instead")
        if not folder_mode and fmt is not None and format_from_path(out) != fmt:
            raise UsageError(f"-o {out} has a {Path(out).suffix} extension but --format {opts.fmt} was given")
    suffix = opts.suffix if opts.suffix is not None else ("" if folder_mode else opts.default_suffix)

    items: list[Item] = []
    for src, root in sources:
        item_fmt = fmt
        if src is None:  # stdin
            if out is None or to_stdout:
                if fmt is None:
                    raise UsageError("writing to stdout needs --format jpg|png|tif|webp")
                items.append(Item(None, None, fmt, stdout=True))
                continue
            if folder_mode:
                raise UsageError("stdin (-) has no file name; give -o FILE.ext or -o - with --format")
            target: Path = Path(out)  # type: ignore[arg-type]
            items.append(Item(None, target, fmt or format_from_path(target)))
            continue
        if to_stdout:
            if fmt is None:
                raise UsageError("writing to stdout needs --format jpg|png|tif|webp")
            items.append(Item(src, None, fmt, stdout=True))
            continue
        if out is not None and not folder_mode:
            target = Path(out)
            item_fmt = fmt or format_from_path(target)
            items.append(Item(src, target, item_fmt))
            continue
        ext = src.suffix if fmt is None else EXTENSIONS[fmt]
        item_fmt = fmt or format_from_path(src) or sniff_format(src)
        if fmt is None and (special := default_output_format(src)) is not None:  # HEIC -> HEIC or JPEG, RAW -> TIFF
            item_fmt, ext = special, EXTENSIONS[special]
        if fmt is None and format_from_path(src) is None:
            if item_fmt is None:
                items.append(Item(src, None, None, status="error", error=regular_file_problem(src) or
                                  "not a JPEG, PNG, TIFF or WebP file (unknown extension and content)"))
                continue
            ext = EXTENSIONS[item_fmt]
        if folder_mode:
            rel = src.relative_to(root) if root is not None else Path(src.name)
            target = Path(out) / rel.parent / f"{rel.stem}{suffix}{ext}"  # type: ignore[arg-type]
        else:
            target = src.with_name(f"{src.stem}{suffix}{ext}")
        items.append(Item(src, target, item_fmt))

    for it, (src, root) in zip(items, sources):  # exactly one item per source, in order
        if src is not None:
            it.key = (src.relative_to(root) if root is not None else Path(src.name)).as_posix()
    if opts.shard is not None:
        # the whole mapping first (collisions, output == input, targets), then this shard's existing outputs:
        # other shards' finished outputs never stop this one
        _check_mapping(items, opts if opts.existing != "refuse" else _replace(opts, existing="overwrite"))
        early = [it for it in early if opts.shard.holds(it.key or "")]
        items = [it for it in items if opts.shard.holds(it.key or "")]
    _check_mapping(items, opts)
    if any(i.stdout and i.status == "pending" for i in items):
        if stdout_is_tty if stdout_is_tty is not None else sys.stdout.isatty():
            raise UsageError("refusing to write image bytes to a terminal; redirect stdout or use -o FILE")
    return early + items


def _check_mapping(items: list[Item], opts: BatchOptions) -> None:
    inputs = {_key(i.input): i.input for i in items if i.input is not None}
    seen: dict[str, Item] = {}
    for it in items:
        if it.output is None or it.status != "pending":
            continue
        k = _key(it.output)
        if k in inputs:
            raise UsageError(
                f"output {it.output} would replace input {inputs[k]}; choose another -o, --suffix or --format"
            )
        if it.input is not None and os.path.exists(it.output):
            try:
                if os.path.samefile(it.output, it.input):
                    raise UsageError(f"output {it.output} is the input file itself; choose another -o")
            except OSError:
                pass
        if k in seen:
            raise UsageError(
                f"{seen[k].input_label} and {it.input_label} would both be written to {it.output}; "
                "use --format, --suffix or separate runs"
            )
        seen[k] = it
    # the rules every written file follows (io.atomic): no folder or special file as target, no file on the way
    # to it, legal name length; existence is handled below (refuse / overwrite / skip)
    check_targets([Target(it.output, "output") for it in items if it.output is not None and it.status == "pending"
                   and not (opts.existing == "skip" and os.path.exists(it.output))],
                  [], overwrite=True)
    existing = [it for it in items if it.status == "pending" and it.output is not None and os.path.exists(it.output)]
    if not existing:
        return
    if opts.existing == "skip":
        for it in existing:
            it.status = "skipped"
            it.error = None
        return
    if opts.existing == "refuse":
        folders = [it.output for it in existing if it.output is not None and it.output.is_dir()]
        if folders:
            raise UsageError(f"output {folders[0]} is a folder; choose another -o")
        shown = ", ".join(str(it.output) for it in existing[:3]) + (" ..." if len(existing) > 3 else "")
        raise UsageError(
            f"{len(existing)} output(s) already exist ({shown}); pass --overwrite to replace them or "
            "--skip-existing to keep them"
        )


def pending(items: Iterable[Item]) -> int:
    """Number of items still to process."""
    return sum(1 for i in items if i.status == "pending")


# ------------------------------------------------------------------------------------------- running


def _short(msg: str, item: Item) -> str:
    for label in {item.input_label, "<stdin>"}:
        if msg.startswith(label + ": "):
            return msg[len(label) + 2:]
    return msg


def run_batch(
    items: list[Item],
    process: ProcessFn,
    opts: BatchOptions,
    *,
    on_start: StartFn | None = None,
    on_item: ItemFn | None = None,
    read_stdin: Callable[[], bytes] | None = None,
    write_stdout: Callable[[bytes], None] | None = None,
    pipeline: int = PIPELINE_DEPTH,
) -> BatchResult:
    """Process every pending item: read → ``process(photo)`` → encode → atomic write.

    With more than one pending file (stdin is always alone) and ``pipeline > 0``, photos are read in one
    background thread and results encoded and written in another while ``process`` runs in the calling thread
    on the current photo. At most ``pipeline`` photos are decoded (or being decoded) ahead of ``process`` and
    at most ``pipeline`` results wait for, or are in, the writer, so memory stays bounded (with the default 1:
    two decoded photos and two results at a time, the one in ``process`` included; the input pixels of a
    processed photo are dropped before it goes to the writer). Whatever the threads do, items are finished (status, log line, progress) in input order, and
    ``Item.seconds`` is the item's own reading + processing + writing time, waiting not counted. Outputs are
    still written through :func:`defocus_cli.io.atomic.atomic_write`; when the calling thread is interrupted
    (Ctrl-C, SIGTERM) nothing more is written, and this returns once the writer has finished or undone the
    file it was writing (after at most :data:`INTERRUPT_JOIN_S`, its temporary file removed), so no temporary
    file stays behind.

    Args:
        items: from :func:`plan_batch` (items already ``error``/``skipped`` are reported, not processed).
        process: ``process(photo) -> pixels``: float32 ``(H, W, 3)`` RGB in ``[0, 1]``, same ``H, W`` as
            ``photo.pixels``. It may set entries of ``photo.notes``. Always called in the calling thread,
            one photo at a time, in input order.
        opts: the options the plan was made with.
        on_start: called once, before any work, with ``len(items)`` (e.g. to size a progress bar).
        on_item: called with each item once it is finished (also items that were already ``error`` or
            ``skipped``), in input order, after its log line; in a pipelined batch from the writer thread.
        read_stdin, write_stdout: how ``-`` is read and written (tests replace them).
        pipeline: photos read ahead and results queued for writing, each at most; 0 = one photo at a time,
            everything in the calling thread.

    Raises:
        WeightsError, DeviceError, UsageError: problems that would fail every item stop the batch, once the
            items before the one that met it are written.
    """
    t_start = time.perf_counter()
    if on_start is not None:
        on_start(len(items))
    read_stdin = read_stdin or (lambda: sys.stdin.buffer.read())
    write_stdout = write_stdout or _write_stdout
    todo = [it for it in items if it.status == "pending"]
    if pipeline > 0 and len(todo) > 1 and all(it.input is not None and not it.stdout for it in todo):
        _Pipeline(items, process, opts, write_stdout, on_item, pipeline).run()
    else:
        for it in items:
            _finish_item(_run_job(it, process, opts, read_stdin, write_stdout), on_item)
    return BatchResult(items, time.perf_counter() - t_start)


def run_item(
    item: Item,
    process: ProcessFn,
    opts: BatchOptions,
    *,
    read_stdin: Callable[[], bytes] | None = None,
    write_stdout: Callable[[bytes], None] | None = None,
) -> Item:
    """Read, process and write one planned item in the calling thread, exactly as :func:`run_batch` does:
    :func:`~defocus_cli.io.read.read_photo` → ``process(photo)`` → :func:`~defocus_cli.io.write.encode_photo`
    (bit depth, EXIF, ICC, alpha) → :func:`~defocus_cli.io.atomic.atomic_write`. Logs nothing.

    Sets ``item.status`` (``"ok"``, or ``"error"`` with ``item.error``: a failure of this file), ``item.seconds``
    and ``item.extra`` (``notes``); an item that is not ``"pending"`` is left as it is. Used by the distributed
    runner (:mod:`defocus_cli.distributed`), one item at a time per worker.

    Raises:
        WeightsError, DeviceError, UsageError: problems that would fail every item (as :func:`run_batch`).
    """
    job = _run_job(item, process, opts, read_stdin or (lambda: sys.stdin.buffer.read()),
                   write_stdout or _write_stdout)
    if job.ran:
        item.seconds = job.seconds
    return item


def _run_job(item: Item, process: ProcessFn, opts: BatchOptions, read_stdin: Callable[[], bytes],
             write_stdout: Callable[[bytes], None]) -> _Job:
    """The three steps of one item in the calling thread; an engine-wide error is raised once met."""
    job = _Job(item)
    for step in (lambda: _read(job, opts, read_stdin), lambda: _process(job, process),
                 lambda: _write(job, opts, write_stdout)):
        step()
        if job.fatal is not None:
            raise job.fatal
    return job


def _write_stdout(data: bytes) -> None:
    """Write all of ``data`` to stdout: a pipe may take it in parts (a short write is never taken as done)."""
    sys.stdout.flush()
    out = sys.stdout.buffer
    view = memoryview(data)
    while view:
        n = out.write(view)
        if not n:
            raise BrokenPipeError(errno.EPIPE, "stdout accepts no more data")
        view = view[n:]
    out.flush()


_FATAL = (WeightsError, DeviceError, UsageError, BrokenPipeError)


@dataclass
class _Job:
    """One item on its way through :func:`run_batch`: its photo and result, its own seconds, whether a step ran,
    an engine-wide error met on the way (raised in the calling thread), and the pipeline slots it holds."""

    item: Item
    photo: Photo | None = None
    result: np.ndarray | None = None
    seconds: float = 0.0
    ran: bool = False
    fatal: BaseException | None = None
    read_slot: bool = False
    write_slot: bool = False


def _stage(job: _Job, fn: Callable[[], None]) -> None:
    """Run one step of ``job`` unless its item is no longer pending: a failure of this file becomes the item's
    error, an engine-wide one is kept in ``job.fatal``; the step's time is added to the job's."""
    it = job.item
    if it.status != "pending" or job.fatal is not None:
        return
    job.ran = True
    t0 = time.perf_counter()
    try:
        fn()
    except _FATAL as e:
        job.fatal = e
    except DefocusError as e:
        it.status, it.error = "error", _short(str(e), it)
    except MemoryError:
        it.status, it.error = "error", "out of memory (try a smaller --tile or a smaller image)"
    except Exception as e:  # noqa: BLE001 - one bad file never stops the batch
        log.debug("%s: unexpected error", it.input_label, exc_info=True)
        if isinstance(e, OSError):
            it.status, it.error = "error", describe_os_error(e, it.output or it.input)
        else:
            it.status, it.error = "error", f"{type(e).__name__}: {e}"
    finally:
        job.seconds += time.perf_counter() - t0
    if it.status == "error":
        job.photo = job.result = None


def _read(job: _Job, opts: BatchOptions, read_stdin: Callable[[], bytes]) -> None:
    """Step 1: decode the item's photo into ``job.photo``."""

    def step() -> None:
        src: Any = job.item.input if job.item.input is not None else read_stdin()
        job.photo = read_photo(src, max_pixels=opts.max_pixels, raw_linear=opts.raw_linear)

    _stage(job, step)


def _process(job: _Job, process: ProcessFn) -> None:
    """Step 2: ``job.result = process(job.photo)``."""

    def step() -> None:
        job.result = process(job.photo)  # type: ignore[arg-type]

    _stage(job, step)


def _write(job: _Job, opts: BatchOptions, write_stdout: Callable[[bytes], None]) -> None:
    """Step 3: encode ``job.result`` like its photo and write it atomically (or to stdout); the item is ok."""
    it = job.item

    def step() -> None:
        photo = job.photo
        data = encode_photo(job.result, photo, it.fmt, quality=opts.quality,  # type: ignore[arg-type]
                            strip_metadata=opts.strip_metadata)
        job.result = None
        if it.stdout or it.output is None:
            write_stdout(data)
        else:
            if opts.existing == "refuse" and os.path.exists(it.output):
                raise OutputError(f"{it.output} appeared while the batch ran; not replaced (use --overwrite)")
            atomic_write(it.output, data)  # creates the output's folder, short temp name, fsync, rename
        it.status = "ok"
        if photo is not None and photo.notes:
            it.extra["notes"] = list(photo.notes)

    _stage(job, step)
    job.photo = None


def _finish_item(job: _Job, on_item: ItemFn | None) -> None:
    """The item is done: record its seconds, log its line, tell ``on_item``."""
    if job.ran:
        job.item.seconds = job.seconds
    log_item(job.item)
    if on_item is not None:
        on_item(job.item)


def log_item(it: Item) -> None:
    """Log the line :func:`run_batch` logs for a finished item (error, skipped, or written with its seconds)."""
    if it.status == "error":
        log.error("%s: %s", it.input_label, it.error)
    elif it.status == "skipped":
        log.info("%s: skipped (%s exists)", it.input_label, it.output_label)
    else:
        log.info("%s -> %s (%.2f s)", it.input_label, it.output_label, it.seconds or 0.0)


def _no_stdin() -> bytes:  # pragma: no cover - the pipeline never takes stdin (see run_batch)
    raise UsageError("stdin (-) cannot be read in a pipelined batch")


class _Pipeline:
    """:func:`run_batch` for several files: a reader thread decodes the next photos, the calling thread runs
    ``process``, a writer thread encodes, writes and finishes items, all in input order (two FIFO queues);
    ``depth`` slots on each side bound the photos in flight."""

    def __init__(self, items: list[Item], process: ProcessFn, opts: BatchOptions,
                 write_stdout: Callable[[bytes], None], on_item: ItemFn | None, depth: int) -> None:
        self.items, self.process, self.opts, self.write_stdout = items, process, opts, write_stdout
        self.on_item = on_item
        self.ahead: queue.Queue[_Job | None] = queue.Queue()  # reader -> calling thread; None ends it
        self.behind: queue.Queue[_Job | None] = queue.Queue()  # calling thread -> writer; None ends it
        self.read_slots = threading.Semaphore(depth)  # photos decoded or being decoded, not yet in process
        self.write_slots = threading.Semaphore(depth)  # results handed to the writer, not yet written
        self.stop_reading = threading.Event()
        self.abort = threading.Event()  # the calling thread was interrupted: write nothing more
        self.failed: list[BaseException] = []  # engine-wide errors of the threads, for the calling thread

    def run(self) -> None:
        """Run the batch; raise the engine-wide error that stopped it, once the items before it are written."""
        reader = threading.Thread(target=self._reader, name="defocus-read", daemon=True)
        writer = threading.Thread(target=self._writer, name="defocus-write", daemon=True)
        reader.start()
        writer.start()
        fatal: BaseException | None = None
        interrupted = True
        try:
            fatal = self._loop()
            interrupted = False
        finally:
            self.stop_reading.set()
            if interrupted:  # Ctrl-C, SIGTERM: the writer finishes or undoes its current file, then stops
                self.abort.set()
            self.behind.put(None)
            wait = INTERRUPT_JOIN_S if interrupted else None
            writer.join(wait)
            reader.join(wait)
            if writer.is_alive():  # stuck in a write (a hung disk): its temporary file must not stay behind
                remove_temporary_files()
        fatal = fatal or (self.failed[0] if self.failed else None)
        if fatal is not None:
            raise fatal

    def _loop(self) -> BaseException | None:
        """The calling thread's part: ``process`` each decoded photo in order and hand it to the writer."""
        while True:
            job = self.ahead.get()
            if job is None:
                return None
            if job.read_slot:
                self.read_slots.release()
            if job.fatal is not None or self.failed:
                return job.fatal or self.failed[0]
            _process(job, self.process)
            if job.fatal is not None:
                return job.fatal
            if job.photo is not None:  # the writer needs the photo's metadata and size, not its pixels
                job.photo.pixels = np.broadcast_to(np.zeros((), np.float32), job.photo.pixels.shape)
            if job.item.status == "pending":
                while not self.write_slots.acquire(timeout=0.1):
                    if self.failed:
                        return self.failed[0]
                job.write_slot = True
            self.behind.put(job)

    def _reader(self) -> None:
        try:
            for it in self.items:
                job = _Job(it)
                if it.status == "pending":
                    while not self.read_slots.acquire(timeout=0.1):
                        if self.stop_reading.is_set():
                            return
                    job.read_slot = True
                    if self.stop_reading.is_set():
                        return
                    _read(job, self.opts, _no_stdin)
                self.ahead.put(job)
        except BaseException as e:  # noqa: BLE001 - handed to the calling thread
            self.failed.append(e)
        finally:
            self.ahead.put(None)

    def _writer(self) -> None:
        while True:
            job = self.behind.get()
            if job is None:
                return
            try:
                if self.abort.is_set() or self.failed:
                    continue
                _write(job, self.opts, self.write_stdout)
                if job.fatal is not None:
                    self.failed.append(job.fatal)
                    continue
                if self.abort.is_set():  # interrupted while writing (SIGTERM may have removed its temp file)
                    continue
                _finish_item(job, self.on_item)
            except BaseException as e:  # noqa: BLE001 - handed to the calling thread
                self.failed.append(e)
            finally:
                if job.write_slot:
                    self.write_slots.release()
