"""Trainers for the engines: one module per model, ``defocus_cli.train.<module>.train(opts) -> dict``.

``defocus train MODEL`` builds a :class:`TrainOptions` and calls :func:`run`, which imports the trainer of
``MODEL`` named by the arch table (:data:`TRAINERS`: ``sftnet`` → :mod:`.sftnet`, ``ifan`` → :mod:`.ifan`,
``defocusgan`` / ``defocusgan-map`` → :mod:`.defocusgan`) and returns its summary dict (``steps``, ``best`` validation scores, ``out`` path).

Shared pieces: :mod:`.common` (run folders, checkpoints, logs, LFDOF validation, export),
:mod:`.sources` (batch streams), :mod:`.losses`.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from defocus_cli.archs.table import TableView
from defocus_cli.errors import UsageError

TRAINERS: Mapping[str, str] = TableView(lambda row: str(row.trainer), keep=lambda row: row.trainer is not None)
"""Trainer module of each trainable architecture key: a read-only view of the arch table
(:attr:`defocus_cli.archs.table.ArchSpec.trainer`)."""


@dataclass
class TrainOptions:
    """What ``defocus train`` passes to a trainer.

    Attributes:
        model: key of :data:`TRAINERS`.
        data: sharp photos (``synthetic``) or a paired folder (blurred/sharp[/left/right]).
        synthetic: make synthetic DP defocus from the photos in ``data``.
        steps: total optimiser steps (all stages together).
        patch: training patch side (px); trainers may use a small-patches-first curriculum up to it.
        batch: batch size.
        resume: continue from ``run_dir/last.pt``.
        out: exported weights (fp16 safetensors); default ``weights/<model>.safetensors``.
        threads: torch CPU threads (None: torch default).
        run_dir: checkpoints and log; default ``runs/<model>``.
        cache: patch-cache files (``make_patch_cache``) used instead of on-the-fly synthesis.
        val: LFDOF-style validation folder (``input/``, ``target/``) or None.
        val_every: validate every this many steps.
        lr: peak learning rate (None: the trainer's default).
        bf16: bf16 autocast for forward passes.
        device: ``"cpu"`` or ``"cuda"``.
        seed: base seed.
        init: weights (safetensors) to start from (fine-tuning).
        extra: trainer-specific options.
    """

    model: str
    data: Path | None = None
    synthetic: bool = True
    steps: int = 1000
    patch: int = 128
    batch: int = 8
    resume: bool = False
    out: Path | None = None
    threads: int | None = None
    run_dir: Path | None = None
    cache: list[Path] = field(default_factory=list)
    val: Path | None = None
    val_every: int = 200
    lr: float | None = None
    bf16: bool = False
    device: str = "cpu"
    seed: int = 0
    init: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def resolved_out(self) -> Path:
        return Path(self.out) if self.out else Path("weights") / f"{self.model}.safetensors"

    def resolved_run_dir(self) -> Path:
        return Path(self.run_dir) if self.run_dir else Path("runs") / self.model


def run(opts: TrainOptions) -> dict[str, Any]:
    """Dispatch to the trainer of ``opts.model``; raise :class:`UsageError` for an unknown model."""
    if opts.model not in TRAINERS:
        raise UsageError(f"unknown model {opts.model!r} for training; expected one of: {', '.join(TRAINERS)}")
    try:
        mod = importlib.import_module(TRAINERS[opts.model])
    except ModuleNotFoundError as e:
        if e.name == TRAINERS[opts.model]:
            raise UsageError(f"no trainer for {opts.model!r} in this version") from None
        raise
    return mod.train(opts)


__all__ = ["TrainOptions", "TRAINERS", "run"]
