"""``defocus score``: compare results with ground truth (PSNR, SSIM, MAE, LPIPS), table / CSV / JSON / HTML.

Thin adapter over :mod:`defocus_cli.scoring`; imports no numpy/torch until the command runs.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from defocus_cli.cli._common import guarded, setup_logging, stderr_console

_ARROW = {"psnr": "↑", "ssim": "↑", "mae": "↓", "lpips": "↓"}
_FMT = {"psnr": "{:.2f}", "ssim": "{:.4f}", "mae": "{:.4f}", "lpips": "{:.4f}"}


def _fmt(metric: str, v: float | None, signed: bool = False) -> str:
    if v is None:
        return "–"
    s = _FMT[metric].format(v)
    return ("+" + s) if signed and v >= 0 else s


def _cell(result: Any, metric: str, scores: dict[str, float]) -> str:
    if metric not in scores:
        return "–"
    if not result.has_input or f"input_{metric}" not in scores:
        return _fmt(metric, scores[metric])
    gain = scores[f"gain_{metric}"]
    colour = "green" if gain > 0 else ("red" if gain < 0 else "white")
    return (
        f"[dim]{_fmt(metric, scores[f'input_{metric}'])}→[/dim]{_fmt(metric, scores[metric])} "
        f"[{colour}]{_fmt(metric, gain, signed=True)}[/{colour}]"
    )


def _table(result: Any) -> Any:
    from rich.markup import escape
    from rich.table import Table

    title = f"defocus score · protocol {result.protocol}"
    if result.has_input:
        title += " · input → result (gain)"
    t = Table(title=title, title_justify="left")
    t.add_column("image", overflow="fold")
    t.add_column("size", justify="right")
    t.add_column("bits", justify="right")
    for m in result.metrics:
        t.add_column(f"{m.upper()}{_ARROW[m]}", justify="right")
    for it in result.items:
        if it.status != "ok":
            t.add_row(escape(it.pair.name), "", "", *(["[red]error[/red]"] + [""] * (len(result.metrics) - 1)))
            continue
        t.add_row(escape(it.pair.name), f"{it.width}×{it.height}", str(it.bit_depth),
                  *[_cell(result, m, it.scores) for m in result.metrics])
    n = len(result.ok_items)
    if n:
        t.add_section()
        for how in ("mean", "median"):
            agg = result.aggregate(how)
            t.add_row(f"[bold]{how}[/bold] (n={n})", "", "", *[_cell(result, m, agg) for m in result.metrics])
    return t


def register(app: typer.Typer) -> None:
    """Add ``score`` to the app."""

    @app.command("score")
    @guarded
    def score(
        pred: Annotated[Path, typer.Argument(help="Result image or folder of results.", show_default=False)],
        gt: Annotated[Path, typer.Argument(help="Ground-truth image or folder (paired by name).", show_default=False)],
        blurred: Annotated[
            Optional[Path],
            typer.Option("--input", "-i", help="Blurry input image or folder: adds input_* scores and gain_*."),
        ] = None,
        protocol: Annotated[
            str,
            typer.Option(
                "--protocol",
                help="native: stored values; dpdd16: 16-bit grid (DPDNet); dpdd8: 8-bit grid, 16-bit files "
                "read as cv2.imread does (IFAN, Restormer).",
            ),
        ] = "native",
        metrics: Annotated[
            str, typer.Option("--metrics", "-m", help="Comma list of psnr,ssim,mae,lpips.")
        ] = "psnr,ssim,mae,lpips",
        csv_file: Annotated[Optional[Path], typer.Option("--csv", help="Write one row per image to this CSV.")] = None,
        as_json: Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")] = False,
        report: Annotated[
            Optional[Path], typer.Option("--report", help="Write a self-contained HTML report (images embedded).")
        ] = None,
        fail_under: Annotated[
            Optional[str],
            typer.Option(
                "--fail-under",
                help="Exit 1 when a mean misses its gate, e.g. psnr=25,ssim=0.8,lpips=0.3 (mae/lpips: fail above).",
            ),
        ] = None,
        allow_missing: Annotated[
            bool, typer.Option("--allow-missing", help="Ground truths without a result do not make the exit code 1.")
        ] = False,
        overwrite: Annotated[
            bool, typer.Option("--overwrite", help="Replace an existing --csv / --report file.")
        ] = False,
        device: Annotated[str, typer.Option("--device", help="Device for LPIPS: auto|cpu|cuda|cuda:N|mps.")] = "auto",
        quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Errors only on stderr.")] = False,
        verbose: Annotated[bool, typer.Option("--verbose", "-v", help="More detail on stderr.")] = False,
    ) -> None:
        """Score results against ground truth: PSNR, SSIM, MAE, LPIPS per image, mean and median.

        PRED and GT are two files, or two folders whose images pair by relative path and name; suffixes such
        as _sharp, _deblurred, _output, _pred, _gt, _target, _source and the DPDD view tags _c/_l/_r are
        ignored (so results/1P0A1225_sharp.png pairs with test_c/target/1P0A1225.png). Nothing is resized.

        Exit 1 when an image fails (unpaired, unreadable, other size), a ground truth has no result (unless
        --allow-missing) or a --fail-under gate is missed; 2 on a usage error (also: --csv/--report would replace
        an input, or exist without --overwrite).
        """
        setup_logging(verbose=verbose, quiet=quiet)
        from defocus_cli import scoring
        from defocus_cli.errors import UsageError

        err = stderr_console()
        if protocol not in scoring.PROTOCOLS:
            raise UsageError(f"unknown --protocol {protocol!r}; expected one of {', '.join(scoring.PROTOCOLS)}")
        wanted = scoring.parse_metrics(metrics)
        gates = scoring.parse_fail_under(fail_under)
        not_scored = [k for k in gates if k not in wanted]
        if not_scored:
            raise UsageError(
                f"--fail-under names {', '.join(not_scored)} but --metrics is {','.join(wanted)}; add it to --metrics"
            )
        dev = _lpips_device(device) if "lpips" in wanted else "cpu"
        pairing = scoring.pair_paths(pred, gt, blurred)
        from defocus_cli.io.atomic import Target, check_targets

        # CSV and report: never an input, never an existing file without --overwrite; checked before scoring
        check_targets([Target(p, what) for p, what in ((csv_file, "--csv"), (report, "--report")) if p is not None],
                      [pred, gt, *([blurred] if blurred is not None else []), *pairing.files()],
                      overwrite=overwrite, create_folders=False)
        total = len(pairing.pairs)

        done = 0

        def progress(item: Any) -> None:
            nonlocal done
            done += 1
            if not quiet and err.is_terminal:
                err.print(f"[{done}/{total}] {item.pair.name} {item.status}", highlight=False)

        result = scoring.evaluate(pairing, wanted, protocol=protocol, device=dev, on_item=progress)

        if csv_file is not None:
            scoring.write_csv(result, csv_file)
        if report is not None:
            from defocus_cli.report import write_report

            write_report(result, report)
        if as_json:
            sys.stdout.write(json.dumps(result.to_json(), indent=2) + "\n")
        else:
            from rich.console import Console

            out = Console(highlight=False)
            if not out.is_terminal:  # piped or redirected: do not wrap rows at 80 columns
                out = Console(highlight=False, width=240)
            out.print(_table(result))

        code = 0
        bad = [it for it in result.items if it.status != "ok"]
        for it in bad:
            err.print(f"error: {it.pair.name}: {it.error}", highlight=False, markup=False)
        if bad:
            code = 1
        if result.missing:
            names = ", ".join(p.name for p in result.missing[:10]) + (" …" if len(result.missing) > 10 else "")
            level = "warning" if allow_missing else "error"
            err.print(f"{level}: {len(result.missing)} ground truth image(s) have no result: {names}", markup=False)
            if not allow_missing:
                code = 1
        failed = scoring.check_thresholds(result.aggregate("mean"), gates)
        for f in failed:
            err.print(f"fail-under: {f}", markup=False)
        if failed:
            code = 1
        if not quiet:
            for path, what in ((csv_file, "CSV"), (report, "report")):
                if path is not None:
                    err.print(f"{what} written to {path}", markup=False)
        if code:
            raise typer.Exit(code)


def _lpips_device(request: str) -> str:
    """Resolve the LPIPS device via defocus_cli.devices when present; 'auto' falls back to CPU without it."""
    try:
        from defocus_cli.devices import resolve_device
    except ImportError:
        if request in ("auto", "cpu"):
            return "cpu"
        import torch

        from defocus_cli.errors import DeviceError

        if request.startswith("cuda") and torch.cuda.is_available():
            return request
        raise DeviceError(f"device {request!r} is not available; use --device cpu") from None
    return str(resolve_device(request))
