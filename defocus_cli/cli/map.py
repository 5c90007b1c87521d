"""``defocus map``: estimate a defocus (circle-of-confusion radius) map from a dual-pixel pair or one image.

A thin adapter over :func:`defocus_cli.defocus_map.run_map`; torch, numpy and OpenCV are imported inside the
command body only.
"""

from __future__ import annotations

import json
import sys
from typing import Annotated, Optional

import typer

from defocus_cli.cli._common import (
    JsonOpt,
    PrecisionOpt,
    QuietOpt,
    TileOpt,
    VerboseOpt,
    WeightsOpt,
    device_option,
    guarded,
    model_option,
    setup_logging,
    stderr_console,
)

EPILOG = (
    "Examples:  defocus map left.png right.png -o map.npy --signed  ·  "
    "defocus map L.png R.png -o map.png --method classical --black-level 1024 --preview map_view.png  ·  "
    "defocus map photo.jpg -o map.tif --method classical"
)
ModelOpt = model_option("Model name: a map model for pairs, a deblur model with a defocus map (e.g. ifan) for one "
                        "image.")
DeviceOpt = device_option(" (learned method)")


def map_command(
    inputs: Annotated[
        list[str],
        typer.Argument(help="LEFT RIGHT (the two views of a dual-pixel capture) or one IMAGE.", show_default=False,
                       metavar="LEFT RIGHT | IMAGE"),
    ],
    output: Annotated[
        str, typer.Option("--output", "-o", help="Map file: .npy, .png (png16) or .tif (or give --format).",
                          show_default=False)
    ],
    method: Annotated[
        Optional[str],
        typer.Option("--method", help="learned (a trained network; default) or classical (no weights needed).",
                     show_default=False),
    ] = None,
    model: ModelOpt = None,
    weights: WeightsOpt = None,
    fmt: Annotated[
        Optional[str],
        typer.Option("--format", "-f", help="npy | png16 | tif (default: from the output's extension).",
                     show_default=False),
    ] = None,
    signed: Annotated[
        bool, typer.Option("--signed", help="Keep the dual-pixel sign (negative = in front of focus) in npy/tif.")
    ] = False,
    black_level: Annotated[
        float, typer.Option("--black-level", min=0, help="Subtract this sensor black level first (e.g. 1024 for "
                            "Pixel 4 DP frames). The views are then taken as linear raw values: the learned "
                            "method gain-matches them (DP vignetting) and applies a tone curve first.")
    ] = 0.0,
    white_level: Annotated[
        Optional[float],
        typer.Option("--white-level", help="Sample value of full white (default: the container maximum; with "
                     "--black-level, the brightest sample of the views).", show_default=False),
    ] = None,
    baseline: Annotated[
        str, typer.Option("--baseline", help="Dual-pixel split direction: auto, h (left/right) or v (top/bottom).")
    ] = "auto",
    max_disparity: Annotated[
        int, typer.Option("--max-disparity", help="Classical DP: largest view shift searched, px (a shift of d px "
                          "is a radius of about 1.7 d px; raise it for large-sensor cameras).")
    ] = 12,
    preview: Annotated[
        Optional[str],
        typer.Option("--preview", help="Also write a colour-mapped 8-bit PNG to look at.", show_default=False),
    ] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing map / preview file.")] = False,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = "auto",
    tile: TileOpt = "auto",
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Estimate a defocus map: the circle-of-confusion radius in pixels at every pixel.

    Two inputs are a dual-pixel pair (8/16-bit, gray or RGB, used in stored orientation, never EXIF-rotated);
    one input is a single photo. png16 stores round(radius x 256) as uint16.
    Exit codes: 0 done, 1 input/output failed, 2 usage error, 3 weights unavailable, 4 device unavailable.
    """
    setup_logging(verbose=verbose, quiet=quiet)
    from defocus_cli.errors import DefocusError, UsageError

    try:
        from defocus_cli import api

        tile_value = api.parse_tile(tile)
        if method != "classical":
            from defocus_cli import runtime

            runtime.tune_allocator()
        from defocus_cli.defocus_map import run_map

        doc = run_map(
            inputs, output, method=method, model_name=model, weights_file=weights, fmt=fmt, signed=signed,
            black_level=black_level, white_level=white_level, baseline=baseline, preview=preview,
            device=device, precision=precision, tile=tile_value, overwrite=overwrite,
            max_disparity=max_disparity,
        )
    except DefocusError as e:
        if json_out and not isinstance(e, UsageError):
            item = {"input": inputs if len(inputs) != 1 else inputs[0], "output": output, "status": "error",
                    "error": str(e)}
            sys.stdout.write(json.dumps({"version": _version(), "items": [item]}) + "\n")
        raise
    if json_out:
        sys.stdout.write(json.dumps(doc) + "\n")
    elif not quiet:
        it = doc["items"][0]
        r = it["radius"]
        base = f", {it['baseline']} baseline" if it["baseline"] else ""
        stderr_console().print(
            f"wrote {it['output']} ({it['format']}, {it['width']}x{it['height']}, {doc['method']}{base}); "
            f"radius px min {r['min']:.2f} median {r['median']:.2f} max {r['max']:.2f}"
        )


def _version() -> str:
    from defocus_cli._version import __version__

    return __version__


def register(app: typer.Typer) -> None:
    """Add ``defocus map`` to the root app."""
    app.command("map", epilog=EPILOG, no_args_is_help=True)(guarded(map_command))
