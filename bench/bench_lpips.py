"""Time LPIPS (AlexNet v0.1, shipped weights) on one 1680×1120 pair (DPDD test size) on CPU.

    python bench/bench_lpips.py [--size 1680x1120] [--repeat 5] [--threads 2] [--device cpu]

Prints the median seconds on stderr and one JSON line on stdout. The pair is synthetic (smooth random
image and a noisy copy): LPIPS's cost depends only on the size, not the content.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time

import numpy as np
import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="1680x1120", help="WxH (default 1680x1120)")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    w, h = (int(v) for v in args.size.lower().split("x"))

    from defocus_cli.lpips import load_lpips, to_tensor

    rng = np.random.default_rng(0)
    import cv2

    gt = cv2.GaussianBlur(rng.random((h, w, 3), dtype=np.float32), (0, 0), 3)
    gt = (gt - gt.min()) / (gt.max() - gt.min())
    pred = np.clip(gt + rng.normal(0, 0.03, gt.shape).astype(np.float32), 0, 1)

    t0 = time.perf_counter()
    net = load_lpips(args.device)
    load_s = time.perf_counter() - t0
    a, b = to_tensor(pred).to(args.device), to_tensor(gt).to(args.device)

    def once() -> float:
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        t = time.perf_counter()
        with torch.inference_mode():
            d = float(net(a, b)[0])
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        once.value = d  # type: ignore[attr-defined]
        return time.perf_counter() - t

    once()  # warm-up
    times = [once() for _ in range(args.repeat)]
    med = statistics.median(times)
    print(f"LPIPS alex v0.1 {w}x{h} on {args.device} ({args.threads} threads): median {med:.3f} s "
          f"over {args.repeat} (min {min(times):.3f}, max {max(times):.3f}); load {load_s:.3f} s", file=sys.stderr)
    print(json.dumps({
        "bench": "lpips_alex_v0.1", "width": w, "height": h, "device": args.device, "threads": args.threads,
        "repeat": args.repeat, "seconds_median": round(med, 4), "seconds_min": round(min(times), 4),
        "seconds_max": round(max(times), 4), "load_seconds": round(load_s, 4),
        "lpips": round(once.value, 6),  # type: ignore[attr-defined]
        "torch": torch.__version__, "cpu": platform.processor() or platform.machine(),
    }))


if __name__ == "__main__":
    main()
