"""What the batch commands (``deblur``, ``deconv``) print when a batch is done: the summary line on stderr or
the ``--json`` document on stdout, and the exit code (0 all written or skipped, 1 some failed).

The library (:func:`defocus_cli.batch.run_batch`) returns a :class:`~defocus_cli.batch.BatchResult` and prints
nothing; this module renders it. The ``--json`` document is also what ``examples/ray_deblur.py`` prints.
"""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any

from defocus_cli._version import __version__

if TYPE_CHECKING:  # the batch module imports numpy; the CLI imports it only inside commands
    from defocus_cli.batch import BatchResult


def batch_exit_code(result: BatchResult) -> int:
    """The exit code of a finished batch (a :class:`~defocus_cli.batch.BatchResult`): 1 when any item
    failed, else 0."""
    return 1 if result.count("error") else 0


def summary_line(result: BatchResult) -> str:
    """E.g. ``"3 written, 1 skipped, 1 failed in 4.2 s"``."""
    parts = [f"{result.count('ok')} written"]
    if result.count("skipped"):
        parts.append(f"{result.count('skipped')} skipped")
    if result.count("error"):
        parts.append(f"{result.count('error')} failed")
    return ", ".join(parts) + f" in {result.seconds:.1f} s"


def json_document(result: BatchResult, header: dict[str, Any] | None = None) -> dict[str, Any]:
    """The ``--json`` document: ``{"version", **header, "items": [...], "summary": {...}}``."""
    doc: dict[str, Any] = {"version": __version__}
    doc.update(header or {})
    doc["items"] = [i.to_json() for i in result.items]
    doc["summary"] = {
        "ok": result.count("ok"),
        "skipped": result.count("skipped"),
        "error": result.count("error"),
        "seconds": round(result.seconds, 3),
    }
    return doc


def finish(
    result: BatchResult, *, header: dict[str, Any] | None = None, as_json: bool = False, quiet: bool = False
) -> int:
    """Print the ``--json`` document on stdout, or the summary line on stderr (unless quiet, or a
    single item went fine); return the exit code (:func:`batch_exit_code`)."""
    code = batch_exit_code(result)
    if as_json:
        sys.stdout.write(json.dumps(json_document(result, header), indent=2) + "\n")
        sys.stdout.flush()
    if not quiet and not as_json and (len(result.items) > 1 or code):
        sys.stderr.write(summary_line(result) + "\n")
    return code
