"""Real-photo quality of deblurring weights: what users judge us by (issue: real camera photos).

For each weight file, on ``../shared/data/dpdd_val`` (16 real Canon dual-pixel pairs, the selection set) and,
with ``--lfdof``, on LFDOF (7 light-field pairs, another domain), prints and writes as JSON:

* mean PSNR / SSIM of the output and of the blurry input against the target, and on how many photos the output
  beats the input (PSNR); the same PSNR after an exposure match (each image minus its mean colour difference to
  the target: ``psnr_matched``, ``gain_matched_db``);
* the tone shift: mean of (output − input) in 8-bit grey levels, its mean absolute value and worst photo;
* "do no harm": the all-in-focus targets fed as inputs, PSNR(output, that target).

Outputs are rounded to 8 bits as a saved result would be, whole image (no tiling). Usage::

    python bench/real_quality.py --weights weights/sftnet.safetensors [--weights other.safetensors]
        [--tone-lock auto|on|off] [--tta] [--lfdof] [--no-harm] [--max-images N] [--out NAME]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from _common import SHARED, machine, write_json  # (sys.path set by _common)


def _matched(x: np.ndarray, target: np.ndarray) -> np.ndarray:
    """``x`` minus its mean colour difference to ``target`` (per channel, whole image), clipped to [0, 1]: the
    f/4 DPDD inputs are on average 5 grey levels darker than their f/22 targets (up to 19), which alone costs
    1 dB of the input's PSNR and which the tone lock keeps as the photo has it; PSNR after this exposure match
    measures the deblurring itself."""
    return np.clip(x - (x - target).mean(axis=(0, 1), keepdims=True), 0.0, 1.0)


def evaluate(weights: Path, root: Path, tone_lock: bool | None, max_images: int | None,
             harm: bool = True, tta: bool = False) -> dict[str, Any]:
    """Scores of ``weights`` on the pairs under ``root`` (``input/``, ``target/``); see the module docstring."""
    from defocus_cli import metrics
    from defocus_cli.api import deblur_array
    from defocus_cli.data import lfdof_pairs
    from defocus_cli.weights import load_model

    lm = load_model(weights_file=weights)
    rows = []
    t0 = time.perf_counter()
    for name, inp, tgt in lfdof_pairs(root)[:max_images]:
        out = np.round(deblur_array(inp, lm, device="cpu", tile=0, tone_lock=tone_lock, tta=tta) * 255) / 255
        row = {"name": name, "psnr": metrics.psnr(out, tgt), "input_psnr": metrics.psnr(inp, tgt),
               "psnr_matched": metrics.psnr(_matched(out, tgt), tgt), "input_psnr_matched": metrics.psnr(_matched(inp, tgt), tgt),
               "ssim": metrics.ssim(out, tgt), "input_ssim": metrics.ssim(inp, tgt),
               "tone_shift": float((out - inp).mean() * 255)}
        if harm:
            back = np.round(deblur_array(tgt, lm, device="cpu", tile=0, tone_lock=tone_lock, tta=tta) * 255) / 255
            row["harm_psnr"] = metrics.psnr(back, tgt)
        rows.append(row)
    mean = {k: float(np.mean([r[k] for r in rows])) for k in rows[0] if k != "name"}
    shifts = [abs(r["tone_shift"]) for r in rows]
    return {
        "weights": str(weights), "sha256": lm.sha256, "tone_lock": tone_lock, "tta": tta, "n": len(rows),
        **mean, "gain_db": mean["psnr"] - mean["input_psnr"], "ssim_gain": mean["ssim"] - mean["input_ssim"],
        "gain_matched_db": mean["psnr_matched"] - mean["input_psnr_matched"],
        "better": sum(r["psnr"] > r["input_psnr"] for r in rows),
        "tone_shift_abs": float(np.mean(shifts)), "tone_shift_worst": float(max(shifts)),
        "seconds": time.perf_counter() - t0, "images": rows,
    }


def _fmt(r: dict[str, Any]) -> str:
    harm = f" | {r['harm_psnr']:.2f}" if "harm_psnr" in r else " | -"
    return (f"| {Path(r['weights']).name}{' +tta' if r['tta'] else ''} | {r['tone_lock']} | {r['psnr']:.3f} ({r['gain_db']:+.3f}) | "
            f"{r['psnr_matched']:.3f} ({r['gain_matched_db']:+.3f}) | "
            f"{r['ssim']:.4f} ({r['ssim_gain']:+.4f}) | {r['better']}/{r['n']} | {r['tone_shift']:+.2f} / "
            f"{r['tone_shift_abs']:.2f} / {r['tone_shift_worst']:.2f}{harm} |")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", type=Path, action="append", required=True)
    ap.add_argument("--tone-lock", choices=("auto", "on", "off"), default="auto")
    ap.add_argument("--lfdof", action="store_true", help="also score LFDOF (no do-no-harm pass)")
    ap.add_argument("--max-images", type=int, default=None)
    ap.add_argument("--tta", action="store_true", help="flip self-ensemble (deblur --tta)")
    ap.add_argument("--no-harm", action="store_true", help="skip the do-no-harm pass")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default="real_quality")
    args = ap.parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    lock = {"auto": None, "on": True, "off": False}[args.tone_lock]
    sets = [("dpdd_val", SHARED / "data" / "dpdd_val", True)]
    if args.lfdof:
        sets.append(("lfdof", SHARED / "data" / "lfdof", False))
    results: dict[str, Any] = {"machine": machine(), "tone_lock": args.tone_lock}
    for set_name, root, harm in sets:
        if not root.is_dir():
            print(f"# {root} not found: skipping {set_name}", file=sys.stderr)
            continue
        print(f"\n{set_name}: | weights | tone lock | PSNR (gain) | exposure-matched PSNR (gain) | SSIM (gain) | better | tone shift mean / "
              f"|mean| / worst (grey levels) | do-no-harm PSNR |")
        rows = []
        for w in args.weights:
            r = evaluate(w, root, lock, args.max_images, harm=harm and not args.no_harm, tta=args.tta)
            r["input"] = {"psnr": r["input_psnr"], "ssim": r["input_ssim"]}
            print(_fmt(r), flush=True)
            rows.append(r)
        if rows:
            print(f"input: PSNR {rows[0]['input_psnr']:.3f} dB (exposure-matched {rows[0]['input_psnr_matched']:.3f}), "
                  f"SSIM {rows[0]['input_ssim']:.4f}")
        results[set_name] = rows
    path = write_json(args.out, results)
    print(f"# wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
