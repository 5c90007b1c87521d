"""Validate `defocus map` on real dual-pixel data: the 8 Google Pixel 4 scenes of Xin et al. (ICCV 2021)
in ../shared/data/pixel4_dp (green DP views, 14-bit, black level 1024; gt_defocus affine to inverse depth,
0 = no ground truth).

Score per scene: Spearman rank correlation between the signed map and the ground truth on pixels with gt > 0
(an affine-invariant measure, as the ground truth is only known up to an affine map; its sign tells which
side of the focal plane our positive sign corresponds to). Also records the baseline that was detected.

    python bench/map_pixel4.py                      # classical method, baseline auto
    python bench/map_pixel4.py --method learned --weights FILE.safetensors
    python bench/map_pixel4.py --scale 0.5          # faster: downscale the views first

Writes bench/results/map_pixel4_<method>.json. Not a test: needs ../shared (research data, not shipped).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("DEFOCUS_SHARED", ROOT.parent / "shared"))
DATA = SHARED / "data" / "pixel4_dp"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation (average ranks for ties)."""

    def ranks(x: np.ndarray) -> np.ndarray:
        order = np.argsort(x, kind="mergesort")
        r = np.empty(len(x), np.float64)
        r[order] = np.arange(len(x))
        xs = x[order]
        # average ties
        uniq, start, counts = np.unique(xs, return_index=True, return_counts=True)
        for s, c in zip(start[counts > 1], counts[counts > 1]):
            r[order[s : s + c]] = s + (c - 1) / 2
        return r

    ra, rb = ranks(a), ranks(b)
    return float(np.corrcoef(ra, rb)[0, 1])


def main() -> None:
    import cv2

    from defocus_cli.defocus_map import LEARNED_WORK_SIDE, estimate_dp_map
    from defocus_cli.io.maps import load_dp_pair
    from defocus_cli.io.read import read_samples

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--method", default="classical", choices=["classical", "learned"])
    ap.add_argument("--weights", default=None, help="map-network safetensors for --method learned")
    ap.add_argument("--baseline", default="auto", choices=["auto", "h", "v"])
    ap.add_argument("--scale", type=float, default=1.0, help="downscale factor applied to views and gt")
    ap.add_argument("--max-disparity", type=int, default=12, help="classical: search range, px")
    ap.add_argument("--window", type=int, default=41, help="classical: ZNCC window, px")
    ap.add_argument("--scenes", default="", help="comma-separated scene ids (default: all)")
    ap.add_argument("--no-linear", action="store_true",
                    help="learned: feed the linear views as they are (as before issue 15), not through "
                         "prepare_linear_dp (gain equalisation + tone curve, what `defocus map --black-level` does)")
    ap.add_argument("--work-side", type=int, default=None,
                    help="learned: long side (px) the network works at (default: the product's "
                         "defocus_map.LEARNED_WORK_SIDE; 0 = full resolution)")
    ap.add_argument("--tag", default="", help="suffix of the results file name")
    args = ap.parse_args()
    if not DATA.is_dir():
        sys.exit(f"needs {DATA} (development data, not part of a clone)")
    work_side = LEARNED_WORK_SIDE if args.work_side is None else args.work_side
    model = None
    if args.method == "learned":
        from defocus_cli.weights import load_model

        model = load_model(None, args.weights, task="map")
    scenes = [s.strip() for s in args.scenes.split(",") if s.strip()] or sorted(
        p.stem for p in (DATA / "left").glob("*.png")
    )
    rows = []
    for sid in scenes:
        left, right = load_dp_pair(DATA / "left" / f"{sid}.png", DATA / "right" / f"{sid}.png", black_level=1024)
        gt = read_samples(DATA / "gt_defocus" / f"{sid}.png", upright=False)[0][..., 0].astype(np.float32)
        lp, rp = left.pixels, right.pixels
        if args.scale != 1.0:
            size = (round(lp.shape[1] * args.scale), round(lp.shape[0] * args.scale))
            lp = cv2.resize(lp, size, interpolation=cv2.INTER_AREA)
            rp = cv2.resize(rp, size, interpolation=cv2.INTER_AREA)
            gt = cv2.resize(gt, size, interpolation=cv2.INTER_NEAREST)
        t = time.perf_counter()
        res = estimate_dp_map(
            lp, rp, model=model, method=args.method, baseline=args.baseline,
            max_disparity=args.max_disparity, window=args.window, linear=not args.no_linear, work_side=work_side,
        )
        secs = time.perf_counter() - t
        valid = gt > 0
        rho = spearman(res.radius[valid], gt[valid])
        rows.append({"scene": sid, "spearman": rho, "baseline": res.baseline, "seconds": round(secs, 2)})
        print(f"{sid}: spearman {rho:+.3f}  baseline {res.baseline}  {secs:.1f} s", flush=True)
    mean = float(np.mean([r["spearman"] for r in rows]))
    mean_abs = float(np.mean([abs(r["spearman"]) for r in rows]))
    print(f"mean spearman {mean:+.3f} (mean |rho| {mean_abs:.3f}) over {len(rows)} scenes")
    out = ROOT / "bench" / "results" / f"map_pixel4_{args.method}{'_' + args.tag if args.tag else ''}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps({"method": args.method, "weights": args.weights, "linear": not args.no_linear, "scale": args.scale,
                    "work_side": work_side if args.method == "learned" else None, "max_disparity": args.max_disparity,
                    "window": args.window, "rows": rows, "mean_spearman": mean,
                    "mean_abs_spearman": mean_abs, "min_abs_spearman": float(min(abs(r["spearman"]) for r in rows)),
                    "mean_seconds": float(np.mean([r["seconds"] for r in rows]))}, indent=2) + "\n"
    )


if __name__ == "__main__":
    main()
