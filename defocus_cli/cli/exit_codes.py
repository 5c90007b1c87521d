"""The one table from exception to exit code and stderr line (README "Exit codes", docs/reliability.md).

:func:`defocus_cli.cli._common.guarded`, the one place a command's errors are caught, looks each escaping
exception up here (:func:`rule_for`): the first row whose type matches wins, so rows go from the most specific
type to the most general, and :data:`DEFAULT` takes anything else. The library raises typed errors
(:mod:`defocus_cli.errors`) and knows nothing of exit codes.

Exit codes of a run that ends normally: :data:`OK`, or :data:`SOME_FAILED` when some inputs of a batch failed
(:func:`defocus_cli.cli.batch_output.batch_exit_code`).

Imports no torch and no numpy (``defocus --help`` stays fast).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from defocus_cli.errors import DefocusError, DeviceError, UsageError, WeightsError

OK = 0
#: Some inputs failed (the rest were processed), or an input or output file could not be used.
SOME_FAILED = 1
USAGE = 2
WEIGHTS = 3
DEVICE = 4
INTERRUPTED = 130
BROKEN_PIPE = 141
TERMINATED = 143


class Terminated(BaseException):
    """Raised in the main thread on SIGTERM, so that ``finally`` clauses (temporary-file clean-up) run."""


#: Library argument (:attr:`defocus_cli.errors.DefocusError.param`) → the option that sets it, where that is not
#: ``--`` + the argument with ``-`` for ``_`` (``max_pixels`` → ``--max-pixels``).
OPTION_NAMES: dict[str, str] = {"fmt": "--format", "output": "-o", "model_name": "--model", "weights_file": "--weights"}


def option_for(param: str) -> str:
    """The command-line option that sets the library argument ``param``."""
    return OPTION_NAMES.get(param, "--" + param.replace("_", "-"))


def with_option(e: BaseException) -> str:
    """The message of ``e`` as the command line says it: when the error names the library argument it is about
    (``param``), the option that sets it takes the argument's place at the start (``quality must be 1-100, got 0``
    → ``--quality must be 1-100, got 0``), or goes in front of a message that does not start with it."""
    message = str(e)
    param = getattr(e, "param", None)
    if not param:
        return message
    option, words = option_for(param), param.replace("_", " ")
    if message.startswith(words + " "):
        return option + message[len(words):]
    return f"{option}: {message}"


def _error_line(e: BaseException) -> str:
    return f"error: {with_option(e)}"


def _os_error_line(e: BaseException) -> str:
    """An OS error not caught deeper down (e.g. a name too long for the file system): its file and the reason."""
    from defocus_cli.io.atomic import describe_os_error

    filename = getattr(e, "filename", None)
    where = f"{filename}: " if filename else ""
    return f"error: {where}{describe_os_error(e, filename)}"  # type: ignore[arg-type]


def _unexpected_line(e: BaseException) -> str:
    first = " ".join(str(e).split())[:300]
    return f"error: {type(e).__name__}: {first} (run again with -v for details)"


@dataclass(frozen=True)
class ExitRule:
    """One row: an exception type, its exit code, and the one line written to stderr (``None``: nothing)."""

    error: type[BaseException]
    code: int
    message: Callable[[BaseException], str | None]


EXIT_CODES: tuple[ExitRule, ...] = (
    ExitRule(UsageError, USAGE, _error_line),
    ExitRule(WeightsError, WEIGHTS, _error_line),
    ExitRule(DeviceError, DEVICE, _error_line),
    ExitRule(DefocusError, SOME_FAILED, _error_line),  # InputError, OutputError and the base class
    ExitRule(BrokenPipeError, BROKEN_PIPE, lambda e: None),  # stdout's reader went away (| head): quiet
    ExitRule(KeyboardInterrupt, INTERRUPTED, lambda e: "interrupted"),
    ExitRule(Terminated, TERMINATED, lambda e: "terminated"),
    ExitRule(OSError, SOME_FAILED, _os_error_line),
)
"""The table, most specific type first (a row must come before the rows of its base classes)."""

DEFAULT = ExitRule(BaseException, SOME_FAILED, _unexpected_line)
"""Anything the table does not name: exit 1, the exception's type and first 300 characters (traceback with -v)."""


def rule_for(error: BaseException | type[BaseException]) -> ExitRule:
    """The row of :data:`EXIT_CODES` for ``error`` (an exception or its type), else :data:`DEFAULT`."""
    cls = error if isinstance(error, type) else type(error)
    for rule in EXIT_CODES:
        if issubclass(cls, rule.error):
            return rule
    return DEFAULT


def exit_code(error: BaseException | type[BaseException]) -> int:
    """The exit code of ``error`` (an exception or its type), e.g. ``exit_code(WeightsError) == 3``."""
    return rule_for(error).code


def error_line(error: BaseException) -> str | None:
    """The one line written to stderr for ``error`` (``None``: nothing is written)."""
    return rule_for(error).message(error)
