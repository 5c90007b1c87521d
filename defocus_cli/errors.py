"""Error types of the library.

Messages are one line, say what was expected and what was found (naming the values), and what to do next.
The command line turns each type into its exit code and one stderr line: the table in
``cli/exit_codes.py`` (usage 2, weights 3, device 4, the others 1); the library knows nothing of
exit codes. This module imports nothing heavy (no torch, no numpy).
"""

from __future__ import annotations


class DefocusError(Exception):
    """Base class of every error the library raises on purpose.

    Attributes:
        param: the name of the library argument whose value is wrong (``"quality"``, ``"max_pixels"``), when the
            message is about one; the message then begins with it in words (``"quality must be 1-100, got 0"``),
            so that the command line can put its own option name in its place (``--quality must be ...``).
    """

    def __init__(self, *args: object, param: str | None = None) -> None:
        super().__init__(*args)
        self.param = param


class InputError(DefocusError):
    """An input (image, map, pair) cannot be used: unreadable, too large, wrong shape."""


class OutputError(DefocusError):
    """An output cannot be written (read-only folder, would replace an input, exists)."""


class UsageError(DefocusError):
    """The request itself is wrong (bad option value, colliding outputs, unknown model)."""


class ShapeError(UsageError):
    """A tensor handed to an engine does not have the shape or type it needs (a usage error).

    The message names both: ``expected (N, 3, H, W) float tensor on the CPU, got (3, 64, 64) torch.float32 on
    cpu``. Raised by :meth:`defocus_cli.restorer.Restorer.run` before any work.
    """

    def __init__(self, expected: str, got: str) -> None:
        super().__init__(f"expected {expected}, got {got}")
        self.expected = expected
        self.got = got


class WeightsError(DefocusError):
    """Weights unavailable: offline and not cached, download failed, sha256 mismatch, bad file."""


class DeviceError(DefocusError):
    """The requested device (cuda, cuda:N, mps) is not available."""
