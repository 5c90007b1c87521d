"""Shared test fixtures. Tests never need ../shared; those that use it skip with a reason when absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("DEFOCUS_SHARED", ROOT.parent / "shared"))

needs_shared = pytest.mark.skipif(
    not (SHARED / "vectors").is_dir(),
    reason=f"needs the development references at {SHARED} (not part of a user's clone; set DEFOCUS_SHARED)",
)


@pytest.fixture(autouse=True)
def _few_threads() -> None:
    """Keep torch to 2 threads: CI machines have 2 cores."""
    try:
        import torch
    except ImportError:  # pragma: no cover
        return
    torch.set_num_threads(min(2, os.cpu_count() or 1))
