"""Time the classical `defocus map` on a dual-pixel pair (issue 15: "seconds per 12 MP frame").

A synthetic DP pair (no data needed): a blurred random texture, the left view shifted by a smooth disparity
field of ±4 px along x and given a 0.8-1.2 brightness ramp (DP vignetting). Times
:func:`defocus_cli.defocus_map.estimate_dp_map` (``method="classical"``, baseline ``auto``, default options)
and its stages, with OpenCV and torch held to ``--threads`` threads.

    python bench/map_speed.py                       # 12 MP (4000x3000), 1 thread
    python bench/map_speed.py --width 1344 --height 1008 --threads 2

Prints one line per size and writes bench/results/map_speed.json (also printed with --json).
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
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def synthetic_pair(h: int, w: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(left, right, disparity)``: float32 ``(h, w)`` views in about [0, 1] and the known disparity field
    along x (px, ``left(x) = right(x - disparity)``)."""
    import cv2

    rng = np.random.default_rng(seed)
    small = rng.random((h // 8 + 2, w // 8 + 2)).astype(np.float32)
    base = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
    base = cv2.GaussianBlur(base + 0.3 * rng.random((h, w)).astype(np.float32), (0, 0), 2.0)
    xx = np.arange(w, dtype=np.float32)[None, :]
    yy = np.arange(h, dtype=np.float32)[:, None]
    disp = 4.0 * np.sin(2 * np.pi * xx / w) * np.cos(np.pi * yy / h)
    left = cv2.remap(base, (xx - disp).astype(np.float32), np.broadcast_to(yy, (h, w)).astype(np.float32),
                     cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    ramp = np.linspace(0.8, 1.2, w, dtype=np.float32)[None, :]
    return np.ascontiguousarray(left * ramp), base, disp.astype(np.float32)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--width", type=int, default=4000)
    ap.add_argument("--height", type=int, default=3000)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--json", action="store_true", help="also print the JSON document")
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    import cv2

    cv2.setNumThreads(args.threads)
    from defocus_cli import map_classical as mc
    from defocus_cli.defocus_map import estimate_dp_map

    left, right, truth = synthetic_pair(args.height, args.width)
    times, stages = [], {}
    for _ in range(args.reps):
        t = time.perf_counter()
        res = estimate_dp_map(left, right, method="classical")
        times.append(time.perf_counter() - t)
    t = time.perf_counter()
    base = mc.detect_baseline(mc.to_gray(left), mc.to_gray(right))
    stages["detect_baseline_s"] = round(time.perf_counter() - t, 3)
    t = time.perf_counter()
    mc.dp_radius_map_conf(left, right)
    stages["dp_radius_map_s"] = round(time.perf_counter() - t, 3)
    mp = args.width * args.height / 1e6
    step = max(1, int(np.sqrt(args.width * args.height / 2e5)))
    a, b = res.radius[::step, ::step].ravel(), truth[::step, ::step].ravel()
    rank = lambda x: np.argsort(np.argsort(x)).astype(np.float64)  # noqa: E731  (no ties in float maps)
    stages["spearman_vs_truth"] = round(float(np.corrcoef(rank(a), rank(b))[0, 1]), 4)
    doc = {
        "width": args.width, "height": args.height, "megapixels": round(mp, 2), "threads": args.threads,
        "seconds": [round(s, 3) for s in times], "best_s": round(min(times), 3),
        "s_per_mp": round(min(times) / mp, 3), "baseline": res.baseline, "baseline_again": base, **stages,
        "work_scale": round(mc.work_scale((args.height, args.width), 41), 3),
        "cpu_count": os.cpu_count(), "loadavg_1min": round(os.getloadavg()[0], 2),
    }
    print(f"{args.width}x{args.height} ({mp:.1f} MP), {args.threads} thread(s): best {min(times):.2f} s "
          f"({doc['s_per_mp']:.3f} s/MP; baseline {res.baseline}; detect {stages['detect_baseline_s']:.2f} s, "
          f"map {stages['dp_radius_map_s']:.2f} s; Spearman vs the true disparity "
          f"{stages['spearman_vs_truth']:+.3f}; load average {doc['loadavg_1min']:.1f} on {os.cpu_count()} cores)")
    out = ROOT / "bench" / "results" / "map_speed.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2) + "\n")
    if args.json:
        print(json.dumps(doc))


if __name__ == "__main__":
    main()
