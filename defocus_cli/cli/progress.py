"""The progress bar of the batch commands (``deblur``, ``deconv``): drawn on stderr, only on a terminal.

The library reports progress through plain callbacks (:func:`defocus_cli.batch.run_batch`'s ``on_start`` and
``on_item``); :class:`BatchProgress` turns them into a rich bar. Imports rich only when a bar is drawn.
"""

from __future__ import annotations

import sys
from types import TracebackType
from typing import Any

from defocus_cli.cli._common import stderr_console


class BatchProgress:
    """A transient ``description [bar] done/total elapsed`` line on stderr, fed by ``run_batch``'s callbacks.

    Use as a context manager around the batch, passing :meth:`start` and :meth:`advance` as ``on_start`` and
    ``on_item``; the bar is removed when the block ends (also on an error or an interrupt). Disabled (every
    method does nothing) when ``quiet`` or when stderr is not a terminal, unless ``enabled`` says otherwise.
    """

    def __init__(self, description: str, *, quiet: bool = False, enabled: bool | None = None) -> None:
        self.description = description
        self.enabled = (not quiet) and sys.stderr.isatty() if enabled is None else enabled
        self._bar: Any = None

    def start(self, total: int) -> None:
        """``on_start``: draw the bar for ``total`` items."""
        if not self.enabled or self._bar is not None:
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                       console=stderr_console(), transient=True)
        bar.start()
        bar.add_task(self.description, total=total)
        self._bar = bar

    def advance(self, item: object = None) -> None:
        """``on_item``: one more item finished (called from the batch's writer thread; rich is thread-safe)."""
        if self._bar is not None:
            self._bar.advance(self._bar.task_ids[0])

    def stop(self) -> None:
        """Remove the bar (idempotent)."""
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

    def __enter__(self) -> BatchProgress:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
