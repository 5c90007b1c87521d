"""Look at results with your own eyes: 3× crops of real camera photos, before / after, for model cards.

For each chosen dpdd_val pair, a ``--crop`` px window (the most textured window of the target, so that
detail is visible) is shown at 3× (nearest neighbour) in columns: blurry input | each weight file's result
(with its run-time settings, tone lock included) | all-in-focus target. Also one in-focus check row per
pair when ``--harm``: the target fed as input, and what each model returns for it.

Usage: ``python bench/real_crops.py --weights A.safetensors [--weights B.safetensors] --out FIG.png
[--images 1P0A1655,1P0A2350,1P0A1046] [--crop 96] [--harm]``
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from _common import SHARED


def _busiest(img: np.ndarray, crop: int) -> tuple[int, int]:
    g = img.mean(2)
    e = np.abs(np.diff(g, axis=0))[:, :-1] + np.abs(np.diff(g, axis=1))[:-1, :]
    best, at = -1.0, (0, 0)
    for y in range(0, e.shape[0] - crop, crop // 2):
        for x in range(0, e.shape[1] - crop, crop // 2):
            v = float(e[y:y + crop, x:x + crop].mean())
            if v > best:
                best, at = v, (y, x)
    return at


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", type=Path, action="append", required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--images", default="1P0A1655,1P0A2350,1P0A1696,1P0A1046")
    ap.add_argument("--crop", type=int, default=96)
    ap.add_argument("--harm", action="store_true")
    a = ap.parse_args(argv)
    import torch

    from defocus_cli.api import deblur_array
    from defocus_cli.data import lfdof_pairs
    from defocus_cli.data.figures import save_png
    from defocus_cli.weights import load_model

    torch.set_num_threads(1)
    models = [load_model(weights_file=w) for w in a.weights]
    pairs = {n: (i, t) for n, i, t in lfdof_pairs(SHARED / "data" / "dpdd_val")}
    rows = []
    for name in a.images.split(","):
        inp, tgt = pairs[name]
        y, x = _busiest(tgt, a.crop)
        sl = (slice(y, y + a.crop), slice(x, x + a.crop))
        cols = [inp[sl]] + [deblur_array(inp, m, device="cpu", tile=0)[sl] for m in models] + [tgt[sl]]
        rows.append(cols)
        if a.harm:
            rows.append([tgt[sl]] + [deblur_array(tgt, m, device="cpu", tile=0)[sl] for m in models] + [tgt[sl]])
    gap = 6
    tiles = []
    for cols in rows:
        big = [np.kron(c, np.ones((3, 3, 1), np.float32)) for c in cols]
        line = []
        for b in big:
            line += [b, np.ones((b.shape[0], gap, 3), np.float32)]
        tiles += [np.concatenate(line[:-1], 1), np.ones((gap, sum(t.shape[1] for t in line[:-1]), 3), np.float32)]
    fig = np.concatenate(tiles[:-1], 0)
    save_png(a.out, (np.clip(fig, 0, 1) * 255 + 0.5).astype(np.uint8))
    names = " | ".join(["input"] + [w.name for w in a.weights] + ["target"])
    print(f"# {a.out}: columns {names}; rows {a.images}{' (+ in-focus check rows)' if a.harm else ''}",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
