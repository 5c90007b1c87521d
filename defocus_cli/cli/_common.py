"""Pieces shared by the CLI commands: error → exit-code mapping, console on stderr, logging setup.

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

F = TypeVar("F", bound=Callable[..., Any])

log = logging.getLogger("defocus_cli")


def stderr_console() -> Any:
    """A rich console on stderr; colour off when NO_COLOR is set or stderr is not a TTY."""
    from rich.console import Console

    return Console(stderr=True, no_color=bool(os.environ.get("NO_COLOR")), highlight=False)


def setup_logging(verbose: bool = False, quiet: bool = False) -> None:
    """Route library logging to stderr: warnings by default, info with -v, errors only with -q."""
    level = logging.ERROR if quiet else (logging.DEBUG if verbose else logging.WARNING)
    root = logging.getLogger("defocus_cli")
    root.setLevel(level)
    if not root.handlers:
        h = logging.StreamHandler(sys.stderr)
        h.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
        root.addHandler(h)
    for h in root.handlers:
        h.setLevel(level)


def guarded(fn: F) -> F:
    """Decorate a command: a :class:`DefocusError` becomes a one-line ``error: ...`` on stderr and its
    exit code; any other exception becomes exit 1 with a one-line message (traceback only with -v).
    The wrapped command must take a ``verbose`` keyword argument."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from defocus_cli.errors import DefocusError

        verbose = bool(kwargs.get("verbose", False))
        try:
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort, SystemExit):
            raise
        except DefocusError as e:
            if verbose:
                log.exception("error")
            sys.stderr.write(f"error: {e}\n")
            raise typer.Exit(code=e.exit_code) from None
        except KeyboardInterrupt:
            sys.stderr.write("interrupted\n")
            raise typer.Exit(code=130) from None
        except Exception as e:  # noqa: BLE001 - last line of defence: no traceback without -v
            if verbose:
                log.exception("unexpected error")
            sys.stderr.write(f"error: {type(e).__name__}: {e} (run again with -v for details)\n")
            raise typer.Exit(code=1) from None

    return wrapper  # type: ignore[return-value]
