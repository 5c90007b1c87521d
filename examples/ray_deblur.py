#!/usr/bin/env python3
"""Deblur a folder (or a listing of paths) on a Ray cluster, one loaded model per worker (GPU per worker
when the cluster has GPUs). Needs ``pip install -e ".[ray]"``.

    python examples/ray_deblur.py /data/shots/ -r -o /data/sharp/ --skip-existing
    python examples/ray_deblur.py --list paths.txt -o /data/sharp/ --address auto --json > report.json

Output names, safety checks, outputs (bit depth, EXIF, ICC) and per-file error records are those of
``defocus deblur`` (the same library functions, :mod:`defocus_cli.distributed`). Every node must see the
inputs and the output folder at the same paths. A thin driver: the work is in the library.
Exit codes as ``defocus deblur``: 0 all done, 1 some inputs failed, 2 usage error, 3 weights, 4 device
(or no Ray cluster at ``--address``).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence

from defocus_cli.batch import BatchOptions, BatchResult
from defocus_cli.cli.batch_output import batch_exit_code, json_document
from defocus_cli.cli.exit_codes import DEVICE, USAGE, error_line, exit_code
from defocus_cli.distributed import EngineSettings, plan_inputs, run_distributed
from defocus_cli.errors import DefocusError, UsageError
from defocus_cli.sharding import parse_shard


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="*", help="image files and folders (-r to descend)")
    p.add_argument("--list", dest="listing", metavar="FILE", help="a text file of image paths, one per line")
    p.add_argument("-o", "--output", help="output folder (default: <stem>_sharp.<ext> next to each input)")
    p.add_argument("-r", "--recursive", action="store_true")
    p.add_argument("--model"), p.add_argument("--weights", metavar="FILE.safetensors")
    p.add_argument("--device", default="auto"), p.add_argument("--precision", default="auto")
    p.add_argument("--tile", default="auto"), p.add_argument("--overlap", type=int)
    p.add_argument("--tta", action="store_true"), p.add_argument("--strength", type=float, default=1.0)
    p.add_argument("--suffix"), p.add_argument("--format", dest="fmt", default="same")
    p.add_argument("--quality", type=int, default=95)
    existing = p.add_mutually_exclusive_group()
    existing.add_argument("--overwrite", action="store_true")
    existing.add_argument("--skip-existing", action="store_true")
    p.add_argument("--strip-metadata", action="store_true")
    p.add_argument("--shard", metavar="I/N", help="only this shard of the inputs (as defocus deblur --shard)")
    p.add_argument("--workers", type=int, help="actors, one model each (default: one per GPU, else 1)")
    p.add_argument("--gpus-per-worker", type=float), p.add_argument("--cpus-per-worker", type=float, default=1.0)
    p.add_argument("--address", help="Ray cluster to join (e.g. auto); default: the running one, else a local one")
    p.add_argument("--json", action="store_true", help="the defocus deblur --json document on stdout")
    p.add_argument("-q", "--quiet", action="store_true"), p.add_argument("-v", "--verbose", action="store_true")
    return p.parse_args(argv)


def summary_table(result: BatchResult) -> str:
    """The ok / skipped / error counts as a small table, then the failed files (the first 20)."""
    rows = [("ok", result.count("ok")), ("skipped", result.count("skipped")), ("error", result.count("error"))]
    lines = ["status    photos", *(f"{name:<9} {n:>6}" for name, n in rows), f"{'total':<9} {len(result.items):>6}"]
    failed = [it for it in result.items if it.status == "error"]
    lines += [f"error: {it.input_label}: {it.error}" for it in failed[:20]]
    lines += [f"... and {len(failed) - 20} more (see --json)"] if len(failed) > 20 else []
    return "\n".join(lines + [f"{result.seconds:.1f} s"])


def main(argv: Sequence[str] | None = None) -> int:
    a = parse_args(argv)
    logging.basicConfig(format="%(levelname)s: %(message)s")
    level = logging.ERROR if a.quiet else (logging.INFO if a.verbose else logging.WARNING)
    logging.getLogger("defocus_cli").setLevel(level)
    try:
        if not a.inputs and a.listing is None:
            raise UsageError("no INPUT given; give image files, folders or --list FILE")
        opts = BatchOptions(output=a.output, recursive=a.recursive, suffix=a.suffix, fmt=a.fmt, quality=a.quality,
                            existing="overwrite" if a.overwrite else ("skip" if a.skip_existing else "refuse"),
                            strip_metadata=a.strip_metadata, shard=parse_shard(a.shard))
        items = plan_inputs(a.inputs, opts, listing=a.listing)  # every usage error before Ray starts
        engine = EngineSettings(model=a.model, weights_file=a.weights, device=a.device, precision=a.precision,
                                tile=a.tile, overlap=a.overlap, tta=a.tta, strength=a.strength)
        import ray

        if not ray.is_initialized():
            try:
                ray.init(address=a.address, log_to_driver=a.verbose)
            except ConnectionError as e:
                print(f"error: cannot join the Ray cluster ({e}); start it (ray start --head) or leave out --address "
                      "for a local one", file=sys.stderr)
                return DEVICE
        ray.data.DataContext.get_current().enable_progress_bars = not a.quiet and sys.stderr.isatty()
        result, header = run_distributed(items, opts, engine, workers=a.workers, gpus_per_worker=a.gpus_per_worker,
                                         cpus_per_worker=a.cpus_per_worker)
    except DefocusError as e:
        print(error_line(e), file=sys.stderr)
        return exit_code(e)
    except ImportError as e:
        print(f"error: {e}; install the Ray extra: pip install -e \".[ray]\"", file=sys.stderr)
        return USAGE
    if a.json:
        print(json.dumps(json_document(result, header), indent=2))
    if not a.quiet:
        print(summary_table(result), file=sys.stderr)
    return batch_exit_code(result)


if __name__ == "__main__":
    sys.exit(main())
