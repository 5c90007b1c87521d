"""Where on real camera photos a deblurring model gains, by blur size (issue: real camera photos).

Every 64-px patch of each ``dpdd_val`` pair gets the disc radius (px, 0-24) whose blur of the target best matches
the input (:func:`camera_true_figures.patch_radii`'s fit; flat patches, whose radius cannot be seen, count as 0).
Per radius bin, over all 16 photos: how many patches, what share of the input's squared error (vs the target)
lies there, the model's gain there (10·log10 of input error / output error, 8-bit rounded outputs as a saved
result, whole image) and what share of all the error the model removed comes from there. It shows which blur
sizes hold the lost PSNR and which the model recovers. Also per bin: the share of all the input's error that is
each patch's mean colour difference (input − target averaged over the patch, per channel): tone, exposure and
vignetting differences of the two captures (f/4 vs f/22) rather than blur, which the product's tone lock
keeps as the input has them.

Usage: ``python bench/real_bins.py --weights weights/sftnet.safetensors [--weights other.safetensors] [--out NAME]``
(prints a table per weight file, writes ``bench/results/<out>.json``).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from _common import SHARED, write_json
from camera_true_figures import BINS, RADII, _lin

PATCH = 64


def patch_bins(inp: np.ndarray, tgt: np.ndarray, patch: int = PATCH) -> list[tuple[int, int, slice, slice]]:
    """``(bin index, radius, rows, cols)`` of every ``patch``² block of an ``(H, W, 3)`` [0, 1] pair."""
    import cv2

    from defocus_cli.archs._dpkernels import dp_kernels

    ga, gb = _lin(inp).mean(2).astype(np.float32), _lin(tgt).mean(2).astype(np.float32)
    blurred = [cv2.filter2D(gb, -1, dp_kernels(r, 3, 2.5, 0.1)[0].astype(np.float32), borderType=cv2.BORDER_REFLECT)
               for r in RADII]
    out = []
    h, w = ga.shape
    for y in range(0, h - patch + 1, patch):
        for x in range(0, w - patch + 1, patch):
            ys, xs = slice(y, y + patch), slice(x, x + patch)
            r = 0
            if gb[ys, xs].std() >= 0.01:
                r = RADII[int(np.argmin([float(((b[ys, xs] - ga[ys, xs]) ** 2).mean()) for b in blurred]))]
            out.append((next(i for i, (a, b) in enumerate(BINS) if a <= r <= b), r, ys, xs))
    return out


def evaluate(weights: Path, root: Path) -> dict[str, Any]:
    """The per-bin table of ``weights`` on the pairs under ``root``."""
    from defocus_cli.api import deblur_array
    from defocus_cli.data import lfdof_pairs
    from defocus_cli.weights import load_model

    lm = load_model(weights_file=weights)
    err = np.zeros((len(BINS), 3))  # input, output, input without each patch's mean colour difference
    count = np.zeros(len(BINS), dtype=int)
    for _, inp, tgt in lfdof_pairs(root):
        out = np.round(deblur_array(inp, lm, device="cpu", tile=0) * 255) / 255
        for i, _, ys, xs in patch_bins(inp, tgt):
            err[i, 0] += float(((inp[ys, xs] - tgt[ys, xs]) ** 2).sum())
            err[i, 1] += float(((out[ys, xs] - tgt[ys, xs]) ** 2).sum())
            d = inp[ys, xs] - tgt[ys, xs]
            err[i, 2] += float(((d - d.mean(axis=(0, 1), keepdims=True)) ** 2).sum())
            count[i] += 1
    removed = err[:, 0].sum() - err[:, 1].sum()
    rows = [{"radius_px": f"{a}-{b}", "patches": int(count[i]), "input_error_share": float(err[i, 0] / err[:, 0].sum()),
             "gain_db": float(10 * np.log10(err[i, 0] / max(err[i, 1], 1e-12))),
             "share_of_removed_error": float((err[i, 0] - err[i, 1]) / removed) if removed else 0.0,
             "offset_share_of_input_error": float((err[i, 0] - err[i, 2]) / err[:, 0].sum())}
            for i, (a, b) in enumerate(BINS)]
    return {"weights": str(weights), "sha256": lm.sha256, "patch": PATCH,
            "gain_db": float(10 * np.log10(err[:, 0].sum() / err[:, 1].sum())),
            "offset_share_of_input_error": float(1 - err[:, 2].sum() / err[:, 0].sum()),
            "offset_gain_db": float(10 * np.log10(err[:, 0].sum() / err[:, 2].sum())), "bins": rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", type=Path, action="append", required=True)
    ap.add_argument("--data", type=Path, default=SHARED / "data" / "dpdd_val")
    ap.add_argument("--out", default="real_bins")
    args = ap.parse_args()
    results = []
    for w in args.weights:
        r = evaluate(w, args.data)
        results.append(r)
        print(f"\n{w}: gain over all patches {r['gain_db']:+.3f} dB (patch-summed squared error); each patch's mean "
              f"colour difference is {r['offset_share_of_input_error']:.3f} of the input's error "
              f"({r['offset_gain_db']:+.2f} dB)\n")
        print("| radius (px) | patches | share of the input's error | gain | share of the error removed | "
              "mean-colour share |")
        print("|---|---|---|---|---|---|")
        for b in r["bins"]:
            print(f"| {b['radius_px']} | {b['patches']} | {b['input_error_share']:.3f} | {b['gain_db']:+.3f} dB | "
                  f"{b['share_of_removed_error']:+.3f} | {b['offset_share_of_input_error']:.3f} |")
    print(f"\nwrote {write_json(args.out, {'data': str(args.data), 'results': results})}")


if __name__ == "__main__":
    main()
