"""``defocus models list | info | download | verify | convert``: the registry and its weight files.

A thin adapter over :mod:`defocus_cli.registry` and :mod:`defocus_cli.fetch`. ``list`` and ``info``
never import torch (only ``convert`` does, through :mod:`defocus_cli.convert`).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from defocus_cli.archs.table import convertible
from defocus_cli.cli._common import guarded, setup_logging, stderr_console
from defocus_cli.cli.exit_codes import error_line, exit_code

models_app = typer.Typer(
    name="models",
    help="List, inspect, download, verify and convert model weights.",
    no_args_is_help=True,
    add_completion=False,
)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")]
VerboseOpt = Annotated[bool, typer.Option("--verbose", "-v", help="More messages (and tracebacks) on stderr.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="Only errors on stderr.")]
NamesArg = Annotated[
    Optional[list[str]], typer.Argument(help="Model names (see `defocus models list`); none = all.", show_default=False)
]


def _emit_json(doc: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(doc, indent=2) + "\n")
    sys.stdout.flush()


def _model_row(spec: Any) -> dict[str, Any]:
    """Registry entry plus where it would be loaded from locally (no hashing, no network)."""
    from defocus_cli import fetch, registry

    copies = fetch.local_copies(spec)
    row = spec.to_dict()
    row.pop("config", None)
    row["experimental"] = spec.experimental
    row.update(
        {
            "source": copies[0][0] if copies else "hub",
            "cached": bool(copies),
            "path": str(copies[0][1]) if copies else None,
            "default": registry.DEFAULTS.get(spec.task) == spec.name and not spec.experimental,
        }
    )
    return row


def _fmt_size(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1e5 else f"{n / 1e3:.1f} kB"


@models_app.command("list")
@guarded
def list_models(json_out: JsonOpt = False, verbose: VerboseOpt = False, quiet: QuietOpt = False) -> None:
    """List the registered models, their licences and whether their weights are available offline."""
    setup_logging(verbose, quiet)
    from defocus_cli import registry

    rows = [_model_row(s) for s in registry.MODELS]
    if json_out:
        _emit_json({"models": rows})
        return
    if not rows:
        stderr_console().print("no models registered in this build (use --weights FILE.safetensors with deblur)")
        return
    from rich.console import Console
    from rich.table import Table

    # short columns that fit 80 terminal columns; names are never cut (the summary, arch, sha256 and the
    # experimental reason are in `models info NAME` and --json)
    table = Table(box=None, pad_edge=False)
    table.add_column("name", no_wrap=True, min_width=max(len(r["name"]) for r in rows))
    table.add_column("task", no_wrap=True)
    table.add_column("size", no_wrap=True, justify="right")
    table.add_column("available", no_wrap=True)
    table.add_column("licence", overflow="fold")
    table.add_column("status", overflow="fold")
    for r in rows:
        avail = {"weights-dir": "weights/", "hf-cache": "HF cache", "hub": "download"}[r["source"]]
        status = "experimental" if r["experimental"] else ("default" if r["default"] else "")
        table.add_row(r["name"], r["task"], _fmt_size(r["size"]), avail, r["license"], status)
    Console(highlight=False, soft_wrap=False).print(table)
    notes = ["details: defocus models info NAME"]
    if any(r["experimental"] for r in rows):
        notes.append("experimental = never a default, use by name (info says why)")
    stderr_console().print("; ".join(notes))


@models_app.command("info")
@guarded
def info(
    name: Annotated[str, typer.Argument(help="Model name.")],
    json_out: JsonOpt = False,
    verbose: VerboseOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Show one model's registry entry, where its weights are, and its model card."""
    setup_logging(verbose, quiet)
    from defocus_cli import fetch, registry

    spec = registry.get_spec(name)
    row = _model_row(spec)
    row["config"] = dict(spec.config)
    row["hub_url"] = f"{fetch._endpoint() or 'https://huggingface.co'}/{spec.repo_id}/blob/{spec.revision}/{spec.filename}"
    card = next((d / spec.card for d in fetch.weights_dirs() if spec.card and (d / spec.card).is_file()), None)
    row["card_path"] = str(card) if card else None
    if json_out:
        _emit_json(row)
        return
    out = typer.echo
    for key in ("name", "task", "arch", "default", "license", "summary", "repo_id", "filename", "revision",
                "sha256", "size", "hub_url", "source", "path", "card_path"):
        out(f"{key:>10}: {row[key]}")
    if spec.experimental:
        out(f"{'experimental':>10}: {spec.experimental}")
    if spec.config:
        out(f"{'config':>10}: {json.dumps(spec.config)}")
    if card is not None:
        out("")
        out(card.read_text(encoding="utf-8", errors="replace").rstrip())


@models_app.command("download")
@guarded
def download(
    names: NamesArg = None,
    force: Annotated[bool, typer.Option("--force", help="Download again even if a valid copy is cached.")] = False,
    json_out: JsonOpt = False,
    verbose: VerboseOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Fetch weights from the Hub (pinned revisions, HF_ENDPOINT honoured) into the HF cache and verify them."""
    setup_logging(verbose, quiet)
    from defocus_cli import fetch
    from defocus_cli.errors import WeightsError

    specs = list(fetch.iter_specs(names))
    con = stderr_console()
    if quiet:
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()
    items: list[dict[str, Any]] = []
    for spec in specs:
        try:
            got = fetch.download(spec, force=force)
            items.append({"name": spec.name, "status": "ok", "source": got.source, "path": str(got.path),
                          "sha256": got.sha256, "error": None})
            if not quiet:
                how = "downloaded" if got.source == "hub" else "already cached"
                con.print(f"{spec.name}: {how}, sha256 ok → {got.path}", soft_wrap=True)
        except WeightsError as e:
            items.append({"name": spec.name, "status": "error", "source": None, "path": None, "sha256": None,
                          "error": str(e)})
            sys.stderr.write(error_line(e) + "\n")
    if json_out:
        _emit_json({"cache": str(fetch.hub_cache_dir()), "items": items})
    if not specs and not quiet:
        con.print("no models registered; nothing to download")
    if any(i["status"] == "error" for i in items):
        raise typer.Exit(code=exit_code(WeightsError))


@models_app.command("verify")
@guarded
def verify(
    names: NamesArg = None,
    json_out: JsonOpt = False,
    verbose: VerboseOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Check the sha256 of every local copy (weights/ and HF cache) against the registry; no network.

    A corrupt HF-cache copy is deleted. Named models must have a local copy; with no names, models
    never downloaded are reported and skipped.
    """
    setup_logging(verbose, quiet)
    from defocus_cli import fetch
    from defocus_cli.errors import WeightsError

    explicit = bool(names)
    con = stderr_console()
    items: list[dict[str, Any]] = []
    failed = False
    for spec in fetch.iter_specs(names):
        results = fetch.verify(spec)
        if not results:
            msg = f"no local copy; run `defocus models download {spec.name}`"
            items.append({"name": spec.name, "status": "missing", "source": None, "path": None, "error": msg})
            failed |= explicit
            if explicit:
                sys.stderr.write(f"error: {spec.name}: {msg}\n")
            elif not quiet:
                con.print(f"{spec.name}: not downloaded (skipped)")
        for source, path, err in results:
            items.append({"name": spec.name, "status": "ok" if err is None else "mismatch", "source": source,
                          "path": str(path), "error": err})
            if err is None:
                if not quiet:
                    con.print(f"{spec.name}: ok ({source}) {path}", soft_wrap=True)
            else:
                failed = True
                sys.stderr.write(f"error: {err}\n")
    if json_out:
        _emit_json({"items": items, "ok": not failed})
    if failed:
        raise typer.Exit(code=exit_code(WeightsError))


@models_app.command("convert")
@guarded
def convert(
    src: Annotated[Path, typer.Argument(help="Upstream checkpoint (.pth/.pytorch), read with weights_only=True.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Destination .safetensors file.")],
    arch: Annotated[str, typer.Option("--arch", help=f"Architecture: {' | '.join(convertible())}.")],
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace DST if it exists.")] = False,
    fp16: Annotated[
        bool, typer.Option("--fp16", help="Store floating-point tensors as float16 (half the size).")
    ] = False,
    verbose: VerboseOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Convert an official upstream checkpoint into a safetensors file with our key names and metadata.

    Exit codes: 0 written, 1 SRC missing/unreadable/incomplete or DST cannot be written, 2 unknown --arch,
    SRC is another architecture's checkpoint, DST is SRC, DST exists (without --overwrite) or its folder is
    missing.
    """
    setup_logging(verbose, quiet)
    from defocus_cli import registry
    from defocus_cli.errors import InputError, UsageError

    # Cheap checks before torch is imported; convert_checkpoint repeats them and does the rest.
    if arch not in registry.ARCHS:
        raise UsageError(f"--arch {arch!r} is not known; expected one of {', '.join(registry.ARCHS)}")
    if output.suffix != ".safetensors":
        raise UsageError(f"-o {output}: expected a .safetensors file name")
    from defocus_cli.io.atomic import is_regular_file

    if not is_regular_file(src):
        what = "is not a regular file" if os.path.lexists(src) else "not found"
        raise InputError(f"checkpoint {src} {what}; expected an upstream .pth/.pytorch file")
    from defocus_cli.convert import convert_checkpoint

    info = convert_checkpoint(src, output, arch, dtype="fp16" if fp16 else "fp32", overwrite=overwrite)
    if not quiet:
        stderr_console().print(
            f"wrote {output} (arch {arch}, {info.get('dtype', 'fp32')}, sha256 {info['sha256']})", soft_wrap=True
        )


def register(app: typer.Typer) -> None:
    """Add the ``models`` command group to ``app``."""
    app.add_typer(models_app, name="models")
