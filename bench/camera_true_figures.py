"""How well the synthetic training data matches real camera photos (issue: real camera photos).

1. **Blur sizes of the real pairs**: for every 64-px patch with texture of each ``dpdd_val`` pair, the disc
   radius r ∈ [0, 24] px (the combined Abuolaim kernel, order 3) whose blur of the target (linear light, grey)
   best matches the input — a histogram per image and overall; the same estimate on synthetic samples of the
   training generator, so the two histograms can be compared.
2. **A figure**: synthetic samples (blurred | sharp) beside real dpdd_val crops (input | target) at the same
   scale, ``weights/figures/camera_true_samples.png``.

Usage: ``python bench/camera_true_figures.py [--samples 48] [--out camera_true] [--coc-px 20]
[--in-focus-prob 0.1] [--min-blur-fraction 0.3] [--noise-scale 0.5]`` (defaults: the c2 campaign's data) (prints the histograms and
writes JSON under bench/results/).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

from _common import ROOT, SHARED, write_json

RADII = tuple(range(0, 25))
BINS = ((0, 1), (2, 3), (4, 6), (7, 10), (11, 15), (16, 24))


def _lin(x: np.ndarray) -> np.ndarray:
    return np.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4)


def patch_radii(blurry: np.ndarray, sharp: np.ndarray, patch: int = 64) -> list[int]:
    """Best-fitting disc radius (px) per textured ``patch``² block of an ``(H, W, 3)`` [0, 1] sRGB pair."""
    import cv2

    from defocus_cli.archs._dpkernels import dp_kernels

    ga, gb = _lin(blurry).mean(2).astype(np.float32), _lin(sharp).mean(2).astype(np.float32)
    blurred = [cv2.filter2D(gb, -1, dp_kernels(r, 3, 2.5, 0.1)[0].astype(np.float32),
                            borderType=cv2.BORDER_REFLECT) for r in RADII]
    h, w = ga.shape
    out = []
    for y in range(0, h - patch + 1, patch):
        for x in range(0, w - patch + 1, patch):
            ref = ga[y:y + patch, x:x + patch]
            if gb[y:y + patch, x:x + patch].std() < 0.01:  # flat: the radius is unobservable
                continue
            errs = [float(((b[y:y + patch, x:x + patch] - ref) ** 2).mean()) for b in blurred]
            out.append(int(np.argmin(errs)))
    return out


def binned(radii: list[int]) -> dict[str, float]:
    """Fractions of patches per radius bin (keys like ``"0-1"``)."""
    r = np.asarray(radii)
    return {f"{a}-{b}": float(np.mean((r >= a) & (r <= b))) if r.size else 0.0 for a, b in BINS}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=48, help="synthetic samples (192 px) to measure")
    ap.add_argument("--out", default="camera_true")
    ap.add_argument("--coc-px", type=float, default=20.0)
    ap.add_argument("--in-focus-prob", type=float, default=0.1)
    ap.add_argument("--min-blur-fraction", type=float, default=0.3)
    ap.add_argument("--noise-scale", type=float, default=0.5)
    ap.add_argument("--figure", type=Path, default=ROOT / "weights" / "figures" / "camera_true_samples.png")
    a = ap.parse_args(argv)
    import torch

    from defocus_cli.data import SyntheticDP, lfdof_pairs
    from defocus_cli.data.figures import save_png

    torch.set_num_threads(1)
    real = lfdof_pairs(SHARED / "data" / "dpdd_val")
    per_image: dict[str, Any] = {}
    all_real: list[int] = []
    for name, inp, tgt in real:
        r = patch_radii(inp, tgt)
        all_real += r
        per_image[name] = {"median": float(np.median(r)) if r else None, **binned(r)}
    ds = SyntheticDP(SHARED / "data" / "sharp", patch=192, seed=5, split="test", coc_px=a.coc_px,
                     in_focus_prob=a.in_focus_prob, highlight_prob=0.3, min_blur_fraction=a.min_blur_fraction,
                     noise_scale=a.noise_scale)
    synth = [ds[i] for i in range(a.samples)]
    all_syn: list[int] = []
    for s in synth:
        all_syn += patch_radii(s["blur"].permute(1, 2, 0).numpy(), s["sharp"].permute(1, 2, 0).numpy())
    res = {"settings": {"coc_px": a.coc_px, "in_focus_prob": a.in_focus_prob,
                        "min_blur_fraction": a.min_blur_fraction, "noise_scale": a.noise_scale},
           "dpdd_val": binned(all_real), "synthetic": binned(all_syn), "per_image": per_image,
           "patches": {"dpdd_val": len(all_real), "synthetic": len(all_syn)},
           "median": {"dpdd_val": float(np.median(all_real)), "synthetic": float(np.median(all_syn))}}
    print("| radius (px) | " + " | ".join(res["dpdd_val"]) + " | median |")
    print("|---|" + "---|" * (len(BINS) + 1))
    for k in ("dpdd_val", "synthetic"):
        print(f"| {k} ({res['patches'][k]} patches) | " + " | ".join(f"{v:.2f}" for v in res[k].values())
              + f" | {res['median'][k]:.0f} |")
    # figure: 4 synthetic (blur | sharp) rows beside 4 real (input | target) crops of 192 px
    tiles = []
    for i in range(4):
        s = synth[i]
        syn = np.concatenate([s["blur"].permute(1, 2, 0).numpy(), s["sharp"].permute(1, 2, 0).numpy()], 1)
        _, inp, tgt = real[(5 * i + 1) % len(real)]
        y, x = (inp.shape[0] - 192) // 2, (inp.shape[1] - 192) // 2 + 96 * (i - 1)
        rl = np.concatenate([inp[y:y + 192, x:x + 192], tgt[y:y + 192, x:x + 192]], 1)
        tiles.append(np.concatenate([syn, np.ones((192, 8, 3), np.float32), rl], 1))
    grid = np.concatenate([np.concatenate([t, np.ones((8, t.shape[1], 3), np.float32)], 0) for t in tiles], 0)
    save_png(a.figure, (np.clip(grid, 0, 1) * 255 + 0.5).astype(np.uint8))
    print(f"# figure: {a.figure} (columns: synthetic blurred | sharp || real dpdd_val input | target)",
          file=sys.stderr)
    write_json(a.out, res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
