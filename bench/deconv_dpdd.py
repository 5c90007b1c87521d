"""`deconv --map` with estimated maps on real defocus (issue 15): the 16 DPDD validation pairs in
../shared/data/dpdd_val (Canon DP camera, 840x560; input = f/4 defocused, target = f/22 all in focus).
Each input's map is estimated from the input alone (`defocus map IMAGE --method classical`, the edge
re-blur method) and the input is deconvolved with it; PSNR (8-bit sRGB in [0, 1], whole image) against the
target, next to the input's and a uniform deconvolution at the map's median radius.

    python bench/deconv_dpdd.py                         # wiener, tapered (default)
    python bench/deconv_dpdd.py --options '{"taper": null}'   # untapered level blending (before issue 15)

Writes bench/results/deconv_dpdd_<method>.json. Not a test: needs ../shared (research data).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

from _common import ROOT, SHARED, read_rgb  # noqa: E402  (bench/_common.py puts the repository on sys.path)
from defocus_cli.metrics import psnr  # noqa: E402  (the one PSNR; numpy, [0, 1])

DATA = SHARED / "data" / "dpdd_val"


def main() -> None:
    from defocus_cli.deconv import deconvolve
    from defocus_cli.defocus_map import estimate_single_map

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--method", default="wiener", choices=["wiener", "rl", "hyperlaplacian"])
    ap.add_argument("--images", type=int, default=16)
    ap.add_argument("--options", default="{}", help="JSON dict of extra deconvolve() keyword arguments")
    args = ap.parse_args()
    extra = json.loads(args.options)
    files = sorted((DATA / "input").glob("*.png"))[: args.images]
    if not files:
        sys.exit(f"needs {DATA} (development data, not part of a clone)")
    rows = []
    for f in files:
        x, y = read_rgb(f), read_rgb(DATA / "target" / f.name)
        t = time.perf_counter()
        radius = estimate_single_map(x, method="classical").radius
        out = deconvolve(x, args.method, defocus=radius, **extra)
        secs = time.perf_counter() - t
        med = float(np.median(radius))
        uni = deconvolve(x, args.method, radius=med, **{k: v for k, v in extra.items() if k != "taper"})
        row = {"image": f.stem, "psnr_input": round(psnr(x, y), 3), "psnr_map": round(psnr(out, y), 3),
               "psnr_uniform_median": round(psnr(uni, y), 3), "median_radius": round(med, 2),
               "p95_radius": round(float(np.percentile(radius, 95)), 2), "seconds": round(secs, 2)}
        rows.append(row)
        print(" ".join(f"{k} {v}" for k, v in row.items()), flush=True)
    keys = ("psnr_input", "psnr_map", "psnr_uniform_median")
    mean = {k: round(float(np.mean([r[k] for r in rows])), 3) for k in keys}
    mean["gain_map"] = round(mean["psnr_map"] - mean["psnr_input"], 3)
    mean["gain_uniform_median"] = round(mean["psnr_uniform_median"] - mean["psnr_input"], 3)
    print("mean " + " ".join(f"{k} {v:.3f}" for k, v in mean.items()))
    out = ROOT / "bench" / "results" / f"deconv_dpdd_{args.method}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"method": args.method, "options": extra, "rows": rows, "mean": mean}, indent=2) + "\n")


if __name__ == "__main__":
    main()
