"""``defocus deblur``: remove defocus blur from photos with a trained network.

A thin adapter: options → :mod:`defocus_cli.batch` (inputs, outputs, errors, JSON) around one
:func:`defocus_cli.api.load_restorer` (model, backend, device, precision, tile, overlap resolved once) and
:func:`defocus_cli.api.make_deblur_fn`.
Torch, numpy and OpenCV are imported inside the command body only.
"""

from __future__ import annotations

from typing import Annotated, Any, Optional

import typer

from defocus_cli.cli._common import (
    DEFAULT_MAX_PIXELS,
    DeviceOpt,
    FormatOpt,
    InputsArg,
    JsonOpt,
    MaxPixelsOpt,
    OutputOpt,
    OverwriteOpt,
    QualityOpt,
    QuietOpt,
    RecursiveOpt,
    ShardOpt,
    SkipExistingOpt,
    StripMetadataOpt,
    SuffixOpt,
    TileOpt,
    VerboseOpt,
    WeightsOpt,
    batch_options,
    guarded,
    model_option,
    refuse_json_with_stdout,
    setup_logging,
)
from defocus_cli.cli.batch_output import finish
from defocus_cli.cli.progress import BatchProgress

EPILOG = (
    "Examples:  defocus deblur photo.jpg  (writes photo_sharp.jpg)  ·  "
    "defocus deblur shots/ -r -o sharp/ --skip-existing  ·  "
    "cat a.png | defocus deblur - -o - --format png > b.png"
)
ModelOpt = model_option("Model name (see `defocus models list`); default: the best deblur model.")


def deblur(
    inputs: InputsArg,
    output: OutputOpt = None,
    model: ModelOpt = None,
    weights: WeightsOpt = None,
    device: DeviceOpt = "auto",
    backend: Annotated[
        str, typer.Option("--backend", help="auto, torch or openvino (the exported IR on the CPU; needs the "
                          "[openvino] extra). auto = OpenVINO only where it was measured faster on this CPU class "
                          "and passed its quality gate.")
    ] = "auto",
    precision: Annotated[
        str, typer.Option("--precision", help="auto, fp32, fp16, bf16, or int8 (OpenVINO backend only).")
    ] = "auto",
    tile: TileOpt = "auto",
    overlap: Annotated[
        Optional[int],
        typer.Option("--overlap", min=0, help="Context pixels per tile side (default: the model's receptive field).",
                     show_default=False),
    ] = None,
    tta: Annotated[
        bool, typer.Option("--tta", help="Flip self-ensemble: average the results on 4 flips of each photo "
                           "(slightly sharper and cleaner, 4x the time).")
    ] = False,
    strength: Annotated[
        float, typer.Option("--strength", help="How much of the restored detail to keep: 1 = all, 0 = the input "
                            "unchanged, 0.5 = halfway (blended on the whole image after the network).")
    ] = 1.0,
    raw_linear: Annotated[
        bool, typer.Option("--raw-linear", help="Camera RAW inputs (needs the [raw] extra): demosaic to linear-light "
                           "sRGB instead of the sRGB tone curve.")
    ] = False,
    report: Annotated[
        Optional[str],
        typer.Option("--report", metavar="FILE.html", show_default=False,
                     help="Also write a before/after HTML page (input and result side by side, zoomed crops; "
                     "images embedded; the first 100 photos)."),
    ] = None,
    recursive: RecursiveOpt = False,
    suffix: SuffixOpt = None,
    fmt: FormatOpt = "same",
    quality: QualityOpt = 95,
    overwrite: OverwriteOpt = False,
    skip_existing: SkipExistingOpt = False,
    shard: ShardOpt = None,
    strip_metadata: StripMetadataOpt = False,
    max_pixels: MaxPixelsOpt = DEFAULT_MAX_PIXELS,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Remove defocus blur from photos.

    Outputs keep size, bit depth (16-bit stays 16-bit), orientation, alpha, EXIF (thumbnail dropped) and
    ICC profile. Existing outputs are refused unless --overwrite or --skip-existing is given.
    Exit codes: 0 all done, 1 some inputs failed, 2 usage error, 3 weights unavailable, 4 device unavailable.
    """
    setup_logging(verbose=verbose, quiet=quiet)
    from defocus_cli import api, batch

    opts = batch_options(
        output=output, recursive=recursive, suffix=suffix, fmt=fmt, quality=quality, overwrite=overwrite,
        skip_existing=skip_existing, strip_metadata=strip_metadata, max_pixels=max_pixels,
    )
    from defocus_cli.sharding import parse_shard

    opts.shard = parse_shard(shard)
    opts.raw_linear = raw_linear
    tile_value = api.parse_tile(tile)
    strength = api.check_strength(strength)
    refuse_json_with_stdout(json_out, output)
    items = batch.plan_batch(inputs, opts)  # every usage error before the (slow) model load
    if report is not None:
        from pathlib import Path

        from defocus_cli.io.atomic import Target, check_targets

        check_targets([Target(Path(report), "--report")],
                      [*(i for i in inputs if i != "-"), *(it.input for it in items if it.input is not None),
                       *(it.output for it in items if it.output is not None)],
                      overwrite=overwrite, create_folders=False)

    backend = api.parse_backend(backend)  # a usage error before any work
    header: dict[str, Any] = {"model": model, "weights_sha256": None, "device": None, "precision": None,
                              "backend": None, "tile": tile_value}
    if opts.shard is not None:
        header["shard"] = str(opts.shard)
    header["strength"] = strength
    process: api.DeblurFn | None = None
    if batch.pending(items):
        restorer = api.load_restorer(model, weights=weights, device=device, precision=precision, tile=tile_value,
                                     overlap=overlap, backend=backend)
        o = restorer.options
        header.update(model=o.name, weights_sha256=o.weights_sha256, device=str(o.device), precision=o.precision,
                      backend=o.backend)
        process = api.make_deblur_fn(restorer, tta=tta, strength=strength)
    with BatchProgress("deblurring", quiet=quiet) as bar:
        result = batch.run_batch(items, process or _nothing, opts, on_start=bar.start, on_item=bar.advance)
    if process is not None and process.last_stats is not None:
        header["tile"] = process.last_stats.tile
        header["overlap"] = process.last_stats.overlap
    if report is not None:
        from defocus_cli.report import write_compare

        pairs = [(it.input, it.output) for it in result.items
                 if it.status == "ok" and it.input is not None and it.output is not None]
        write_compare(pairs, report, settings={k: v for k, v in header.items() if v is not None})
        header["report"] = report
    code = finish(result, header=header, as_json=json_out, quiet=quiet)
    raise typer.Exit(code)


def _nothing(photo: Any) -> Any:  # pragma: no cover - never called: no pending items
    raise RuntimeError("no engine loaded")


def register(app: typer.Typer) -> None:
    """Add ``defocus deblur`` to the root app."""
    app.command("deblur", epilog=EPILOG, no_args_is_help=True)(guarded(deblur))
