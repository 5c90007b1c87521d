"""``defocus deconv``: classical non-blind deconvolution (Wiener, Richardson–Lucy, hyper-Laplacian).

A thin adapter: options → :mod:`defocus_cli.batch` (inputs, outputs, errors, JSON) around
:func:`defocus_cli.deconv.deconvolve`. numpy/scipy/OpenCV are imported inside the command body only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from defocus_cli.cli._common import (
    DEFAULT_MAX_PIXELS,
    FormatOpt,
    InputsArg,
    JsonOpt,
    MaxPixelsOpt,
    OverwriteOpt,
    QualityOpt,
    QuietOpt,
    RecursiveOpt,
    ShardOpt,
    SkipExistingOpt,
    StripMetadataOpt,
    VerboseOpt,
    batch_options,
    guarded,
    output_option,
    refuse_json_with_stdout,
    setup_logging,
    suffix_option,
)
from defocus_cli.cli.batch_output import finish
from defocus_cli.cli.progress import BatchProgress

METHOD_NAMES = ("wiener", "rl", "hyperlaplacian")
KERNEL_NAMES = ("disc", "gaussian", "butterworth")
MAP_EXTENSIONS = (".npy", ".tif", ".tiff", ".png")
DEFAULT_SUFFIX = "_deconv"
DeconvOutputOpt = output_option(DEFAULT_SUFFIX)
DeconvSuffixOpt = suffix_option(DEFAULT_SUFFIX)

EPILOG = (
    "Examples:  defocus deconv photo.jpg --method wiener --radius 3  (writes photo_deconv.jpg)  ·  "
    "defocus map photo.jpg -o photo.npy && defocus deconv photo.jpg --map photo.npy --method hyperlaplacian  ·  "
    "defocus deconv shots/ --map maps/ -o out/  (maps/<stem>.npy|.tif|.png per photo)"
)


def find_map(map_arg: Path, image: Optional[Path]) -> Path:
    """The map file for ``image``: ``map_arg`` itself if it is a file, else ``<stem>{,_map}.{npy,tif,tiff,png}``
    inside the folder ``map_arg``. Raises :class:`InputError` when none exists."""
    from defocus_cli.errors import InputError

    if not map_arg.is_dir():
        return map_arg
    if image is None:
        raise InputError(f"--map {map_arg} is a folder, but stdin has no file name to look a map up by")
    for stem in (image.stem, f"{image.stem}_map"):
        for ext in MAP_EXTENSIONS:
            cand = map_arg / f"{stem}{ext}"
            if cand.is_file():
                return cand
    raise InputError(f"no map for {image.name} in {map_arg} (looked for {image.stem}.npy/.tif/.png)")


def deconv(
    inputs: InputsArg,
    output: DeconvOutputOpt = None,
    method: Annotated[
        str, typer.Option("--method", help="wiener, rl (Richardson–Lucy) or hyperlaplacian (Krishnan–Fergus).")
    ] = "wiener",
    map_path: Annotated[
        Optional[str],
        typer.Option("--map", help="Defocus map (CoC radius in px; any format `defocus map` writes), or a folder "
                     "of maps named like the inputs. Spatially varying deconvolution.", show_default=False),
    ] = None,
    radius: Annotated[
        Optional[float],
        typer.Option("--radius", min=0.0, help="One blur (CoC) radius in px for the whole image.", show_default=False),
    ] = None,
    kernel: Annotated[str, typer.Option("--kernel", help="PSF shape: disc, gaussian or butterworth.")] = "disc",
    iterations: Annotated[
        Optional[int],
        typer.Option("--iterations", min=1, help="rl: iterations (default 10); hyperlaplacian: inner iterations per "
                     "continuation step (default 1); ignored by wiener.", show_default=False),
    ] = None,
    levels: Annotated[
        int, typer.Option("--levels", min=1, max=64, help="Radius levels a --map is split into.")
    ] = 16,
    recursive: RecursiveOpt = False,
    suffix: DeconvSuffixOpt = None,
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
    """Classical non-blind deconvolution with a known blur radius or a defocus map.

    Default output: <stem>_deconv.<ext> next to each input; outputs keep size, bit depth, orientation, alpha, EXIF and ICC.

    The map must be in the photo's upright orientation (as `defocus map IMAGE` writes it); a map of another size with the same aspect ratio is resized.

    Exit codes: 0 all done, 1 some inputs failed, 2 usage error.
    """
    setup_logging(verbose=verbose, quiet=quiet)
    from defocus_cli import batch
    from defocus_cli.errors import UsageError

    if method not in METHOD_NAMES:
        raise UsageError(f"--method {method!r}; expected one of {', '.join(METHOD_NAMES)}")
    if kernel not in KERNEL_NAMES:
        raise UsageError(f"--kernel {kernel!r}; expected one of {', '.join(KERNEL_NAMES)}")
    if (map_path is None) == (radius is None):
        raise UsageError("give exactly one of --radius R (uniform blur) or --map MAP (spatially varying)")
    map_arg = Path(map_path) if map_path is not None else None
    if map_arg is not None and not map_arg.exists():
        raise UsageError(f"--map {map_arg}: no such file or folder")
    refuse_json_with_stdout(json_out, output)
    opts = batch_options(
        output=output, recursive=recursive, suffix=suffix, fmt=fmt, quality=quality, overwrite=overwrite,
        skip_existing=skip_existing, strip_metadata=strip_metadata, max_pixels=max_pixels,
        default_suffix=DEFAULT_SUFFIX,
    )
    from defocus_cli.sharding import parse_shard

    opts.shard = parse_shard(shard)
    items = batch.plan_batch(inputs, opts)
    if map_arg is not None and map_arg.is_file() and sum(1 for i in items if i.status == "pending") > 1:
        raise UsageError("--map FILE fits one input; for several inputs give a folder of maps named like them")

    from defocus_cli.deconv import deconvolve
    from defocus_cli.io.maps import read_map

    def process(photo: Any) -> Any:
        defocus = None
        if map_arg is not None:
            mp = find_map(map_arg, photo.source)
            defocus = read_map(mp)
            photo.notes.append(f"map {mp}")
        return deconvolve(photo.pixels, method, radius=radius, defocus=defocus, kernel=kernel,
                          iterations=iterations, max_levels=levels)

    with BatchProgress("deconvolving", quiet=quiet) as bar:
        result = batch.run_batch(items, process, opts, on_start=bar.start, on_item=bar.advance)
    header: dict[str, Any] = {"method": method, "kernel": kernel, "radius": radius,
                              "map": None if map_arg is None else str(map_arg), "iterations": iterations}
    if opts.shard is not None:
        header["shard"] = str(opts.shard)
    code = finish(result, header=header, as_json=json_out, quiet=quiet)
    raise typer.Exit(code)


def register(app: typer.Typer) -> None:
    """Add ``defocus deconv`` to the root app."""
    app.command("deconv", epilog=EPILOG, no_args_is_help=True)(guarded(deconv))
