"""Split one batch into N stable shards (``--shard I/N``), for Slurm arrays, Kubernetes indexed jobs or
several machines sharing a folder.

Each input belongs to shard ``sha256(key) mod N``, where ``key`` is the input's path relative to the folder
it was found in (``a/b.jpg`` for ``shots/a/b.jpg`` given as ``shots/``), written with ``/`` separators, or the
file's name for a file given on the command line. The choice depends on that key alone, so adding or
removing other files never moves an input to another shard, and every machine computes the same split
whatever its OS, Python version or hash seed. ``I`` is 0-based (``0 <= I < N``), like
``$SLURM_ARRAY_TASK_ID`` with ``--array=0-(N-1)`` and Kubernetes' ``$JOB_COMPLETION_INDEX``.

Imports nothing heavy: the CLI parses ``--shard`` before loading anything.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from defocus_cli.errors import UsageError

__all__ = ["Shard", "parse_shard", "shard_index"]


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` (0-based) of ``count``."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise UsageError(f"shard {self.index}/{self.count}: expected I/N with N >= 1 and 0 <= I < N "
                             "(I is 0-based)", param="shard")

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def holds(self, key: str) -> bool:
        """Whether the input with this key (relative path, ``/``-separated) belongs to this shard."""
        return shard_index(key, self.count) == self.index


def shard_index(key: str, count: int) -> int:
    """The shard (0-based, of ``count``) of an input key: the first 8 bytes of ``sha256(key)`` mod ``count``.

    Stable across machines, platforms and runs (no Python ``hash()``, which is salted per process)."""
    digest = hashlib.sha256(key.replace("\\", "/").encode("utf-8", "surrogateescape")).digest()
    return int.from_bytes(digest[:8], "big") % count


def parse_shard(value: str | None) -> Shard | None:
    """``"I/N"`` → :class:`Shard` (I 0-based); ``None`` → ``None``.

    Raises:
        UsageError: anything else (one line naming the expected form; an empty I or N hints at an unset
            variable such as ``$SLURM_ARRAY_TASK_ID``).
    """
    if value is None:
        return None
    text = str(value).strip()
    i_text, sep, n_text = text.partition("/")
    i_text, n_text = i_text.strip(), n_text.strip()
    if not sep or not i_text or not n_text:
        hint = " (is the variable holding I or N, e.g. $SLURM_ARRAY_TASK_ID, set?)" if sep or not text else ""
        raise UsageError(f"shard {value!r}: expected I/N, e.g. 0/4 (I is 0-based, 0 <= I < N){hint}", param="shard")
    if not (i_text.isdigit() and n_text.isdigit()):
        raise UsageError(f"shard {value!r}: expected I/N with whole numbers, e.g. 0/4 (I is 0-based, 0 <= I < N)",
                         param="shard")
    index, count = int(i_text), int(n_text)
    if count < 1:
        raise UsageError(f"shard {value!r}: N must be at least 1", param="shard")
    if index >= count:
        raise UsageError(f"shard {value!r}: I must be below N (I is 0-based: shards 0 to {count - 1}); "
                         "for a 1-based array index use $((SLURM_ARRAY_TASK_ID - 1))", param="shard")
    return Shard(index, count)
