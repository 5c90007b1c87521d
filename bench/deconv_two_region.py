"""Map-guided deconvolution on a two-region disc blur (issue 15): r = 2 px on the left half, r = 6 px on the
right, 0.5 % Gaussian noise, the exact map; PSNR gain over the blurry input overall, per half and in the
±24 px band around the depth edge; plus uniform references (the whole image blurred with r = 2, 5 or 6 and
deconvolved with that radius; for r = 2 and 6 also on the same half as in the two-region image).
`--options '{"taper": null}'` measures the untapered blending (before issue 15).

    python bench/deconv_two_region.py                  # 4 Kodak images from ../shared/data/sharp/kodak
    python bench/deconv_two_region.py --method rl --images 2

Writes bench/results/deconv_two_region_<method>.json. Not a test: needs ../shared (research data).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

from _common import ROOT, SHARED, read_rgb  # noqa: E402  (bench/_common.py puts the repository on sys.path)
from defocus_cli.metrics import psnr  # noqa: E402  (the one PSNR; numpy, [0, 1])

KODAK = SHARED / "data" / "sharp" / "kodak"


def main() -> None:
    from defocus_cli.deconv import deconvolve
    from defocus_cli.deconv._fourier import blur
    from defocus_cli.deconv.psf import make_psf

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--method", default="wiener", choices=["wiener", "rl", "hyperlaplacian"])
    ap.add_argument("--images", type=int, default=4)
    ap.add_argument("--band", type=int, default=24, help="half-width of the depth-edge band, px")
    ap.add_argument("--options", default="{}", help="JSON dict of extra deconvolve() keyword arguments")
    args = ap.parse_args()
    extra = json.loads(args.options)
    files = sorted(KODAK.glob("*.webp"))[: args.images]
    if not files:
        sys.exit(f"needs {KODAK} (development data, not part of a clone)")
    rows = []
    for f in files:
        sharp = read_rgb(f)
        h, w = sharp.shape[:2]
        rng = np.random.default_rng(0)
        b2, b6 = blur(sharp, make_psf("disc", 2.0)), blur(sharp, make_psf("disc", 6.0))
        left = np.arange(w)[None, :] < w // 2
        blurred = np.where(left[..., None], b2, b6)
        blurred = np.clip(blurred + rng.normal(0.0, 0.005, sharp.shape), 0, 1).astype(np.float32)
        radius = np.where(left, 2.0, 6.0).astype(np.float32) * np.ones((h, 1), np.float32)
        t = time.perf_counter()
        out = deconvolve(blurred, args.method, defocus=radius, **extra)
        secs = time.perf_counter() - t
        band = np.abs(np.arange(w) - w // 2) < args.band
        regions = {"all": np.ones(w, bool), "left": left[0] & ~band, "right": ~left[0] & ~band, "edge": band}
        row = {"image": f.stem, "seconds": round(secs, 2)}
        for name, cols in regions.items():
            row[f"gain_{name}"] = round(psnr(out[:, cols], sharp[:, cols]) - psnr(blurred[:, cols], sharp[:, cols]), 3)
        for ru in (2.0, 5.0, 6.0):  # uniform references (the whole image blurred with one radius)
            u = blur(sharp, make_psf("disc", ru)) + rng.normal(0.0, 0.005, sharp.shape)
            u = np.clip(u, 0, 1).astype(np.float32)
            du = deconvolve(u, args.method, radius=ru, **{k: v for k, v in extra.items() if k != "taper"})
            row[f"gain_uniform_r{ru:g}"] = round(psnr(du, sharp) - psnr(u, sharp), 3)
            if ru != 5.0:  # the same half as in the two-region image, for a like-for-like comparison
                cols = (left[0] if ru == 2.0 else ~left[0]) & ~band
                row[f"gain_uniform_r{ru:g}_{'left' if ru == 2.0 else 'right'}"] = round(
                    psnr(du[:, cols], sharp[:, cols]) - psnr(u[:, cols], sharp[:, cols]), 3)
        rows.append(row)
        print(" ".join(f"{k} {v}" for k, v in row.items()), flush=True)
    keys = [k for k in rows[0] if k.startswith("gain_")]
    mean = {k: round(float(np.mean([r[k] for r in rows])), 3) for k in keys}
    print("mean " + " ".join(f"{k} {v:+.2f}" for k, v in mean.items()))
    out = ROOT / "bench" / "results" / f"deconv_two_region_{args.method}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"method": args.method, "options": extra, "rows": rows, "mean": mean}, indent=2) + "\n")


if __name__ == "__main__":
    main()
