"""Time LPIPS (AlexNet v0.1, shipped weights) on one 1680×1120 pair (DPDD test size), as `defocus score` runs it.

    python bench/bench_lpips.py [--size 1680x1120] [--reps 5] [--threads 2] [--device cpu] [--compare-nchw]

The pair is the bench photo (a real DPDD input, see _common.load_photo) and a Gaussian-blurred copy. Prints a
markdown table and one JSON line on stdout (median seconds, CPU seconds, cores used by other processes while
timing); writes bench/results/lpips.json. ``--compare-nchw`` also times the plain NCHW layout that the
module does not use (it converts to channels-last), to show why.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

from _common import load_photo, machine, table, timed, write_json  # noqa: E402


def _measure(net: torch.nn.Module, a: torch.Tensor, b: torch.Tensor, reps: int, device: str) -> dict[str, float]:
    def once() -> None:
        with torch.inference_mode():
            d = net(a, b)
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            once.value = float(d[0])  # type: ignore[attr-defined]

    once()  # warm-up (oneDNN primitive creation)
    walls, others, cpus = [], [], []
    for _ in range(reps):
        c0 = time.process_time()
        w, o = timed(once)
        cpus.append(time.process_time() - c0)
        walls.append(w)
        others.append(o)
    return {
        "seconds_median": round(statistics.median(walls), 4),
        "seconds_min": round(min(walls), 4),
        "cpu_seconds_median": round(statistics.median(cpus), 4),
        "others_cores": round(statistics.median(others), 2),
        "lpips": round(once.value, 6),  # type: ignore[attr-defined]
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="1680x1120", help="WxH (default 1680x1120)")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--compare-nchw", action="store_true", help="also time the NCHW memory layout")
    ap.add_argument("--out", default="lpips", help="results name under bench/results/ ('' = do not write)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    w, h = (int(v) for v in args.size.lower().split("x"))

    import cv2
    import numpy as np

    from defocus_cli.lpips import LPIPSAlex, load_lpips

    gt = load_photo(w, h)
    blurred = cv2.GaussianBlur(np.ascontiguousarray(gt[0].numpy().transpose(1, 2, 0)), (0, 0), 2.0)
    pred = torch.from_numpy(np.ascontiguousarray(blurred.transpose(2, 0, 1)))[None]
    t0 = time.perf_counter()
    net = load_lpips(args.device)
    load_s = time.perf_counter() - t0
    a, b = pred.to(args.device), gt.to(args.device)

    rows = [{"layout": "channels_last (used)", **_measure(net, a, b, args.reps, args.device)}]
    if args.compare_nchw:
        plain = LPIPSAlex()
        plain.load_state_dict(net.state_dict())
        plain = plain.eval().to(args.device)  # NCHW weights; features() still converts the input
        orig = LPIPSAlex.features

        def nchw_features(self: LPIPSAlex, x: torch.Tensor) -> list[torch.Tensor]:
            import torch.nn.functional as F

            from defocus_cli.lpips import EPS

            hh = ((x * 2.0 - 1.0) - self.shift) / self.scale
            out = []
            for conv, pool in zip(self.convs, self.pool_before):
                if pool:
                    hh = F.max_pool2d(hh, kernel_size=3, stride=2)
                hh = F.relu(conv(hh), inplace=True)
                out.append(hh / torch.linalg.vector_norm(hh, dim=1, keepdim=True).add_(EPS))
            return out

        LPIPSAlex.features = nchw_features  # type: ignore[method-assign]
        try:
            rows.append({"layout": "NCHW", **_measure(plain, a, b, args.reps, args.device)})
        finally:
            LPIPSAlex.features = orig  # type: ignore[method-assign]

    cols = ["layout", "seconds_median", "seconds_min", "cpu_seconds_median", "others_cores", "lpips"]
    print(f"LPIPS alex v0.1, {w}x{h} pair, {args.device}, {args.threads} threads, {args.reps} reps "
          f"(weights load {load_s:.3f} s)\n")
    print(table(rows, cols) + "\n")
    result = {"bench": "lpips_alex_v0.1", "width": w, "height": h, "device": args.device, "threads": args.threads,
              "reps": args.reps, "load_seconds": round(load_s, 4), "rows": rows, "machine": machine()}
    if args.out:
        print(f"# written to {write_json(args.out, result)}", file=sys.stderr)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
