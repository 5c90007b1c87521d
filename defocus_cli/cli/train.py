"""``defocus train MODEL``: train or fine-tune an engine on synthetic DP defocus or a paired folder.

Thin adapter over :mod:`defocus_cli.train`; imports torch only inside the command body.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from defocus_cli.archs.table import trainable
from defocus_cli.cli._common import guarded, setup_logging, stderr_console

MODELS: tuple[str, ...] = trainable()
"""The architectures ``defocus train`` accepts: the arch table's rows with a trainer."""


def parse_settings(items: list[str]) -> dict[str, object]:
    """``["ema=0.999", "stages=[0,0.5,0.5]", "note=abc"]`` → ``{"ema": 0.999, "stages": [0, 0.5, 0.5],
    "note": "abc"}`` (JSON where it parses, else the string)."""
    import json

    from defocus_cli.errors import UsageError

    out: dict[str, object] = {}
    for it in items:
        key, sep, val = it.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--set expects KEY=VALUE; got {it!r}")
        try:
            out[key.strip()] = json.loads(val)
        except ValueError:
            out[key.strip()] = val
    return out


def register(app: typer.Typer) -> None:
    """Add the ``train`` command to ``app``."""

    @app.command("train")
    @guarded
    def train_cmd(
        model: Annotated[str, typer.Argument(help=f"Model to train: {' | '.join(MODELS)}.")],
        data: Annotated[Optional[Path], typer.Option("--data", help="Sharp photos (with --synthetic) or a paired "
                                                     "folder (blurred|input/ + sharp|target/ [+ left/ right/]).")] = None,
        synthetic: Annotated[bool, typer.Option("--synthetic", help="Make synthetic dual-pixel defocus from the "
                                                "sharp photos in --data.")] = False,
        steps: Annotated[int, typer.Option("--steps", min=1, help="Total optimiser steps.")] = 1000,
        patch: Annotated[int, typer.Option("--patch", min=32, help="Largest training patch (px).")] = 128,
        batch: Annotated[int, typer.Option("--batch", min=1, help="Batch size at 128 px patches.")] = 8,
        resume: Annotated[bool, typer.Option("--resume", help="Continue from RUN_DIR/last.pt.")] = False,
        out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Exported weights (fp16 safetensors); "
                                                    "default weights/MODEL.safetensors.")] = None,
        threads: Annotated[Optional[int], typer.Option("--threads", min=1, help="CPU threads for torch.")] = None,
        run_dir: Annotated[Optional[Path], typer.Option("--run-dir", help="Checkpoints and log.jsonl; default "
                                                        "runs/MODEL.")] = None,
        cache: Annotated[Optional[list[Path]], typer.Option("--cache", help="Pre-generated patch cache file(s) "
                                                            "(repeatable).")] = None,
        val: Annotated[Optional[Path], typer.Option("--val", help="Validation pairs folder (input/, target/).")] = None,
        val_every: Annotated[int, typer.Option("--val-every", min=1, help="Validate every N steps.")] = 200,
        lr: Annotated[Optional[float], typer.Option("--lr", help="Peak learning rate.")] = None,
        bf16: Annotated[bool, typer.Option("--bf16", help="bf16 autocast for forward passes.")] = False,
        device: Annotated[str, typer.Option("--device", help="cpu | cuda | cuda:N.")] = "cpu",
        seed: Annotated[int, typer.Option("--seed", help="Base seed.")] = 0,
        init: Annotated[Optional[Path], typer.Option("--init", help="Start from these weights (fine-tune).")] = None,
        settings: Annotated[Optional[list[str]], typer.Option(
            "--set", help="Trainer-specific KEY=VALUE (JSON values; repeatable), e.g. --set ema=0.999 "
            "--set coc_px=16; see the trainer's docstring.")] = None,
        verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log progress.")] = False,
        quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Errors only.")] = False,
    ) -> None:
        """Train or fine-tune MODEL; checkpoints every few minutes and on SIGTERM (resume with --resume)."""
        import json

        from defocus_cli.errors import UsageError
        from defocus_cli.train import TrainOptions, run

        setup_logging(verbose, quiet)
        if not quiet and not verbose:  # progress lines (step, loss, steps/s, ETA, last validation) on stderr
            import logging

            logging.getLogger("defocus_cli.train").setLevel(logging.INFO)
            for h in logging.getLogger("defocus_cli").handlers:
                h.setLevel(logging.INFO)
        if model not in MODELS:
            raise UsageError(f"unknown model {model!r}; expected one of: {', '.join(MODELS)}")
        if data is None and not cache:
            raise UsageError("no training data: pass --data DIR (photos with --synthetic, or a paired folder) "
                             "or --cache FILE")
        opts = TrainOptions(model=model, data=data, synthetic=synthetic or bool(cache), steps=steps, patch=patch,
                            batch=batch, resume=resume, out=out, threads=threads, run_dir=run_dir,
                            cache=list(cache or []), val=val, val_every=val_every, lr=lr, bf16=bf16,
                            device=device, seed=seed, init=init, extra=parse_settings(settings or []))
        summary = run(opts)
        if not quiet:
            stderr_console().print(f"trained {model}: {summary.get('steps')} steps; weights: {summary.get('out')}")
        typer.echo(json.dumps(summary, default=str))
