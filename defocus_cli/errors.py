"""Error types of the library. Each carries the CLI exit code it maps to (see design cli.md).

Messages are one line, say what was expected and what was found, and what to do next.
This module imports nothing heavy (no torch, no numpy).
"""

from __future__ import annotations


class DefocusError(Exception):
    """Base class of every error the library raises on purpose. ``exit_code`` follows cli.md."""

    exit_code: int = 1


class InputError(DefocusError):
    """An input (image, map, pair) cannot be used: unreadable, too large, wrong shape. Exit 1."""

    exit_code = 1


class OutputError(DefocusError):
    """An output cannot be written (read-only folder, would replace an input, exists). Exit 1."""

    exit_code = 1


class UsageError(DefocusError):
    """The request itself is wrong (bad option value, colliding outputs, unknown model). Exit 2."""

    exit_code = 2


class WeightsError(DefocusError):
    """Weights unavailable: offline and not cached, download failed, sha256 mismatch, bad file. Exit 3."""

    exit_code = 3


class DeviceError(DefocusError):
    """The requested device (cuda, cuda:N, mps) is not available. Exit 4."""

    exit_code = 4
