"""``defocus deblur``: remove defocus blur from photos with a trained network.

A thin adapter: options → :mod:`defocus_cli.batch` (inputs, outputs, errors, JSON) around
:func:`defocus_cli.api.make_deblur_fn` (device, precision, tiling through :mod:`defocus_cli.runtime`).
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

    from defocus_cli.backends import BACKENDS

    if backend.strip().lower() not in BACKENDS:  # a usage error before any work
        from defocus_cli.errors import UsageError

        raise UsageError(f"--backend must be auto, torch or openvino, got {backend!r}")
    header: dict[str, Any] = {"model": model, "weights_sha256": None, "device": None, "precision": None,
                              "backend": None, "tile": tile_value}
    if opts.shard is not None:
        header["shard"] = str(opts.shard)
    header["strength"] = strength
    info: dict[str, Any] = {}
    process = None
    if batch.pending(items):
        from defocus_cli import backends, devices, runtime, weights as weights_mod

        runtime.tune_allocator()
        dev = devices.resolve_device(device)
        loaded = weights_mod.load_model(model, weights_file=weights, task="deblur")
        engine, prec, choice = backends.select_engine(loaded, backend, precision, dev)
        header.update(model=loaded.name, weights_sha256=loaded.sha256, device=str(dev), precision=prec,
                      backend=choice.backend)
        process = api.make_deblur_fn(engine, device=dev, precision=prec, tile=tile_value, overlap=overlap,
                                     info=info, tta=tta, strength=strength)
    with BatchProgress("deblurring", quiet=quiet) as bar:
        result = batch.run_batch(items, process or _nothing, opts, on_start=bar.start, on_item=bar.advance)
    if info:
        header["tile"] = info.get("tile", header["tile"])
        header["overlap"] = info.get("overlap")
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
