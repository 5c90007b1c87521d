"""Pieces shared by the CLI commands: the one place errors are caught (:func:`guarded`, exit codes from
:mod:`defocus_cli.cli.exit_codes`), console on stderr, logging setup.

Imports no torch. Commands import the library inside their bodies so that ``defocus --help`` stays fast.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import typer

from defocus_cli.cli.exit_codes import BROKEN_PIPE, DEFAULT, Terminated, rule_for

F = TypeVar("F", bound=Callable[..., Any])

log = logging.getLogger("defocus_cli")


def stderr_console() -> Any:
    """A rich console on stderr; colour off when NO_COLOR is set or stderr is not a TTY."""
    from rich.console import Console

    return Console(stderr=True, no_color=bool(os.environ.get("NO_COLOR")), highlight=False)


def setup_logging(verbose: bool = False, quiet: bool = False) -> None:
    """Route library logging to stderr: warnings by default, info with -v, errors only with -q.

    Third-party warnings go through the same logger, one line each and without source paths: Python
    ``warnings`` (Pillow's "Corrupt EXIF data", numpy's RuntimeWarnings) become ``WARNING: <text>``, and
    OpenCV's own log lines (``[ERROR:0@...] TIFF_Error ...``) are silenced (our error messages say what
    failed); with -v OpenCV keeps its warnings and errors."""
    level = logging.ERROR if quiet else (logging.DEBUG if verbose else logging.WARNING)
    root = logging.getLogger("defocus_cli")
    root.setLevel(level)
    ours = [h for h in root.handlers if getattr(h, "_defocus_cli", False)]
    if not root.handlers:
        h = logging.StreamHandler(sys.stderr)
        h.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
        h._defocus_cli = True  # type: ignore[attr-defined]
        root.addHandler(h)
        ours = [h]
    for h in ours:  # sys.stderr may have been replaced since (tests, embedding apps)
        h.stream = sys.stderr  # type: ignore[attr-defined]  # not setStream: it flushes the old one
    for h in root.handlers:
        h.setLevel(level)
    route_third_party_warnings(verbose)


def _show_warning(message: Any, category: type, filename: str, lineno: int, file: Any = None,
                  line: Any = None) -> None:
    """``warnings.showwarning`` replacement: one line through our logger, no file name or source line."""
    text = " ".join(str(message).split()) or category.__name__
    logging.getLogger("defocus_cli.warnings").warning("%s", text[:300])


def route_third_party_warnings(verbose: bool = False) -> None:
    """Send Python warnings through the ``defocus_cli`` logger (one line each) and quiet OpenCV's logger."""
    import warnings

    warnings.showwarning = _show_warning
    level = "WARNING" if verbose else "SILENT"
    os.environ["OPENCV_LOG_LEVEL"] = level  # read when cv2 is first imported
    cv2 = sys.modules.get("cv2")
    if cv2 is not None:  # already imported: set it directly
        try:
            cv2.setLogLevel(3 if verbose else 0)  # 0 = silent, 3 = warnings
        except Exception:  # noqa: BLE001 - an OpenCV build without the logging API
            pass


def _on_sigterm(signum: int, frame: Any) -> None:
    from defocus_cli.io.atomic import remove_temporary_files

    remove_temporary_files()
    raise Terminated()


def _quiet_stdout() -> None:
    """stdout's reader went away (``| head``): point stdout at /dev/null so the exit flush stays quiet."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # a replaced stdout (tests): nothing to redirect
        pass


def _flush_stdout() -> None:
    """Flush stdout now, while a closed pipe can still be handled (exit 141 quietly), not at interpreter exit."""
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        _quiet_stdout()
        raise typer.Exit(code=BROKEN_PIPE) from None
    except (OSError, ValueError):
        pass


def report_error(e: BaseException, verbose: bool = False) -> int:
    """Report ``e``, an exception that ends a command, and return its exit code: the row of
    :data:`defocus_cli.cli.exit_codes.EXIT_CODES` for its type gives the code and the one stderr line.

    Side effects by kind: a closed stdout (``BrokenPipeError``) is pointed at /dev/null so the exit flush stays
    quiet; on SIGINT temporary files are removed; with ``verbose`` a library or unexpected error also logs its
    traceback."""
    rule = rule_for(e)
    if isinstance(e, BrokenPipeError):
        _quiet_stdout()
    elif isinstance(e, KeyboardInterrupt):
        from defocus_cli.io.atomic import remove_temporary_files

        remove_temporary_files()
    elif verbose and not isinstance(e, Terminated):
        log.exception("unexpected error" if rule is DEFAULT else "error")
    line = rule.message(e)
    if line is not None:
        sys.stderr.write(line + "\n")
    return rule.code


def guarded(fn: F) -> F:
    """Decorate a command: an exception becomes its exit code and one line on stderr
    (:func:`report_error`, :mod:`defocus_cli.cli.exit_codes`): a :class:`DefocusError` ``error: ...`` and its
    code (2 usage, 3 weights, 4 device, 1 otherwise); any other exception exit 1 with a one-line message
    (traceback only with -v). SIGINT exits 130 and SIGTERM 143, both after removing temporary files; a closed
    stdout (``| head``) exits 141 quietly. The wrapped command must take a ``verbose`` keyword argument."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        import signal

        verbose = bool(kwargs.get("verbose", False))
        previous = None
        try:
            previous = signal.signal(signal.SIGTERM, _on_sigterm)
        except (ValueError, OSError):  # not the main thread: the caller owns signals
            previous = None
        try:
            result = fn(*args, **kwargs)
            _flush_stdout()
            return result
        except (typer.Exit, typer.Abort, SystemExit):
            _flush_stdout()
            raise
        except (Exception, KeyboardInterrupt, Terminated) as e:  # noqa: BLE001 - last line of defence
            raise typer.Exit(code=report_error(e, verbose)) from None
        finally:
            if previous is not None:
                try:
                    signal.signal(signal.SIGTERM, previous)
                except (ValueError, OSError):
                    pass

    return wrapper  # type: ignore[return-value]


# ---------------------------------------------------------------------------------------------------------
# Options shared by the image-to-image commands (deblur, deconv) and the network options shared with `map`:
# one definition, one help text. Use them as parameter annotations; build the library's options with
# ``batch_options(...)``. (Typer builds a command from its signature and has no way to splice a group of
# parameters into it, so each command still lists these parameters, each with its shared annotation.)

from typing import Annotated, Optional  # noqa: E402

InputsArg = Annotated[
    list[str],
    typer.Argument(help="Image files, folders (see --recursive), or - for one image on stdin.", show_default=False,
                   metavar="INPUT..."),
]
DEBLUR_SUFFIX = "_sharp"  # default output-name suffix of `deblur` (keep equal to batch_options' default)


def output_option(default_suffix: str = DEBLUR_SUFFIX) -> Any:
    """The shared ``--output/-o`` option, its help naming the command's default output name
    (``<stem><default_suffix>.<ext>``). Use as a type alias: ``OutOpt = output_option("_deconv")``."""
    return Annotated[
        Optional[str],
        typer.Option(
            "--output", "-o",
            help="A file (one input), a folder (outputs keep their names and sub-folders), or - for stdout "
            f"(needs --format). Default: <stem>{default_suffix}.<ext> next to each input.",
            show_default=False,
        ),
    ]


def suffix_option(default_suffix: str = DEBLUR_SUFFIX) -> Any:
    """The shared ``--suffix`` option, its help naming the command's default suffix."""
    return Annotated[
        Optional[str],
        typer.Option("--suffix", help=f"Added to output file stems (default {default_suffix} next to inputs, "
                     "none into -o FOLDER).", show_default=False),
    ]


OutputOpt = output_option(DEBLUR_SUFFIX)  # deblur's; other commands call output_option(<their suffix>)
RecursiveOpt = Annotated[bool, typer.Option("--recursive", "-r", help="Descend into sub-folders of folder inputs.")]
SuffixOpt = suffix_option(DEBLUR_SUFFIX)
FormatOpt = Annotated[
    str, typer.Option("--format", "-f", help="Output format: same (as each input; a HEIC input gives HEIC, or JPEG "
                      "without an HEIC encoder; a camera RAW input a 16-bit TIFF), jpg, png, tif, webp or heic.")
]
QualityOpt = Annotated[int, typer.Option("--quality", min=1, max=100, help="JPEG/WebP quality (100 = lossless WebP).")]
OverwriteOpt = Annotated[bool, typer.Option("--overwrite", help="Replace outputs that already exist.")]
SkipExistingOpt = Annotated[
    bool, typer.Option("--skip-existing", help="Leave outputs that already exist alone (resume a batch).")
]
ShardOpt = Annotated[
    Optional[str],
    typer.Option("--shard", metavar="I/N", show_default=False,
                 help="Process only shard I of N (I from 0, e.g. --shard $SLURM_ARRAY_TASK_ID/8), chosen by a "
                 "hash of each input's relative path: stable when files are added."),
]
StripMetadataOpt = Annotated[
    bool, typer.Option("--strip-metadata", help="Write no EXIF and no ICC profile (default: carry them over).")
]
MaxPixelsOpt = Annotated[
    int,
    typer.Option("--max-pixels", envvar="DEFOCUS_MAX_PIXELS", min=1,
                 help="Refuse images larger than this many pixels (checked before decoding)."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document (per-file status) on stdout.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="Only errors on stderr; no progress, no summary.")]
VerboseOpt = Annotated[bool, typer.Option("--verbose", "-v", help="More messages (and tracebacks) on stderr.")]


def model_option(help_text: str) -> Any:
    """The ``--model/-m`` option (a registered model name; ``None`` = the command's default), with the command's
    own help text. Use as a type alias: ``ModelOpt = model_option("...")``."""
    return Annotated[Optional[str], typer.Option("--model", "-m", help=help_text, show_default=False)]


def device_option(note: str = "") -> Any:
    """The ``--device`` option; ``note`` (e.g. ``" (learned method)"``) ends its help before the full stop."""
    return Annotated[str, typer.Option("--device", help=f"auto, cpu, cuda, cuda:N or mps{note}.")]


WeightsOpt = Annotated[
    Optional[str],
    typer.Option("--weights", help="Your own FILE.safetensors (its metadata names the architecture).",
                 show_default=False),
]
DeviceOpt = device_option()
PrecisionOpt = Annotated[str, typer.Option("--precision", help="auto, fp32, fp16 or bf16.")]
TileOpt = Annotated[
    str, typer.Option("--tile", help="auto (largest that fits memory), 0 (whole image) or a size in pixels.")
]
DEFAULT_MAX_PIXELS = 200_000_000  # keep equal to defocus_cli.io.read.DEFAULT_MAX_PIXELS (no numpy import here)


def refuse_json_with_stdout(json_out: bool, output: Optional[str]) -> None:
    """``--json`` and ``-o -`` both need stdout: raise :class:`UsageError` when both are given."""
    if json_out and output == "-":
        from defocus_cli.errors import UsageError

        raise UsageError("--json and -o - both need stdout; write the image to a file or drop --json")


def batch_options(
    *,
    output: Optional[str],
    recursive: bool,
    suffix: Optional[str],
    fmt: str,
    quality: int,
    overwrite: bool,
    skip_existing: bool,
    strip_metadata: bool,
    max_pixels: Optional[int],
    default_suffix: str = DEBLUR_SUFFIX,
) -> Any:
    """Build :class:`defocus_cli.batch.BatchOptions` from the shared CLI options (imports the library)."""
    from defocus_cli.batch import BatchOptions
    from defocus_cli.errors import UsageError

    if overwrite and skip_existing:
        raise UsageError("--overwrite and --skip-existing exclude each other; give one")
    return BatchOptions(
        output=output,
        recursive=recursive,
        suffix=suffix,
        fmt=fmt,
        quality=quality,
        existing="overwrite" if overwrite else ("skip" if skip_existing else "refuse"),
        strip_metadata=strip_metadata,
        max_pixels=max_pixels,
        default_suffix=default_suffix,
    )
