"""Page faults and time of repeated same-size forwards under each glibc trim setting (why tuning never trims).

Each setting runs in its own child process: one engine on one ``HxW`` input, ``--reps`` forwards in a row
(``tile=0``), reporting seconds and minor page faults (``ru_minflt``) per forward and the peak RSS. With a trim
threshold below the working set, every forward re-faults the memory the previous one freed.

Example (the 24 MP IFAN tile)::

    python bench/bench_allocator.py --engine ifan --size 1576x2048 --reps 3 --malloc trim2047,on
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402
from bench_engines import malloc_env  # noqa: E402


def child(engine: str, size: str, reps: int) -> dict[str, Any]:
    """Run in the child: ``reps`` whole-image forwards, seconds and minor faults of each."""
    import torch

    from defocus_cli import runtime

    tuned = runtime.tune_allocator()
    runtime.configure_threads()
    module, weights = C.build_engine(engine)
    w, h = (int(v) for v in size.lower().split("x"))
    x = torch.rand(1, 3, h, w)
    runs = []
    for _ in range(reps):
        f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        t0 = time.perf_counter()
        y = runtime.run_engine(module, x, device="cpu", precision="fp32", tile=0)
        runs.append({"seconds": time.perf_counter() - t0,
                     "minor_faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0})
        del y
    return {"tuned": tuned, "weights": weights, "runs": runs, "peak_rss_mb": C.peak_rss_mb()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--child", action="store_true")
    ap.add_argument("--engine", default="ifan")
    ap.add_argument("--size", default="1576x2048", help="WxH of the input")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--malloc", default="trim2047,on", help="settings as in bench_engines.py --malloc")
    ap.add_argument("--out", default="allocator")
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.engine, args.size, args.reps)))
        return
    rows = []
    for malloc in args.malloc.split(","):
        r = C.run_child(Path(__file__), ["--child", "--engine", args.engine, "--size", args.size,
                                         "--reps", str(args.reps)], env=malloc_env(malloc))
        for i, run in enumerate(r.get("runs", [])):
            rows.append({"malloc": malloc, "run": i + 1, "seconds": run["seconds"],
                         "minor_faults": run["minor_faults"], "peak_rss_mb": r["peak_rss_mb"]})
        print(f"  {malloc}: {[round(run['seconds'], 2) for run in r.get('runs', [])]} s"
              + (f" ERROR {r['error']}" if "error" in r else ""), flush=True)
    print(f"\n### {args.engine} {args.size}: {args.reps} forwards per process\n")
    print(C.table(rows, ["malloc", "run", "seconds", "minor_faults", "peak_rss_mb"]))
    print(f"\nwrote {C.write_json(args.out, {'machine': C.machine(), 'argv': sys.argv[1:], 'rows': rows})}")


if __name__ == "__main__":
    main()
