"""Tiled vs whole-image agreement ("seam PSNR") and tiling overhead, per engine, on a real 1680x1120 photo.

For each engine: one whole-image forward (``tile=0``) is the reference; then tiled forwards through
``defocus_cli.runtime.run_engine`` with the engine's default overlap (``receptive_field``) and default blend,
plus a small sweep of blend widths and overlaps. Reports PSNR(tiled, whole) over the whole image and over a
band of +-8 px around the tile seams, the max abs difference, seconds, and the processed-pixel overhead.

Examples::

    python bench/bench_tiling.py                                  # all engines, tile 768, default settings
    python bench/bench_tiling.py --engines ifan --sweep           # blend/overlap sweep for IFAN
    python bench/bench_tiling.py --engines ifan --tiles 512,1024  # overhead vs tile size
    python bench/bench_tiling.py --engines ifan --trained --overlaps 16,32,64  # agreement vs overlap
    python bench/bench_tiling.py --synthetic                      # blend study on a known-RF stand-in

Random weights unless ``--trained``: the agreement then describes the architecture's sensitivity to
context, and must be re-measured once trained weights land.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402


def seam_mask(h: int, w: int, plan: Any, band: int = 8) -> Any:
    """Boolean (h, w) mask of pixels within ``band`` px of the middle of every overlap between windows."""
    import torch

    mask = torch.zeros(h, w, dtype=torch.bool)
    for origins, size, axis in ((plan.ys, plan.tile_h, 0), (plan.xs, plan.tile_w, 1)):
        for a, b in zip(origins, origins[1:]):
            mid = (b + a + size) // 2
            lo, hi = max(mid - band, 0), mid + band
            if axis == 0:
                mask[lo:hi, :] = True
            else:
                mask[:, lo:hi] = True
    return mask


def synthetic_blend_study(size: str) -> list[dict[str, Any]]:
    """Blend choice on a stand-in "engine" with a known, decaying receptive field: an unsharp mask
    ``x + 3 (x - G_sigma * x)`` (separable Gaussian truncated at 4 sigma, zero padding like a convnet).
    Its tiles disagree with the whole image exactly where context is missing, like a deblurring network
    whose receptive field exceeds the overlap. Cheap: seconds."""
    import torch
    import torch.nn.functional as F

    from defocus_cli.tiling import run_tiled

    w, h = (int(v) for v in size.lower().split("x"))
    x = C.load_photo(w, h)
    rows = []
    for sigma in (16, 32):
        r = 4 * sigma
        k = torch.exp(-0.5 * (torch.arange(-r, r + 1, dtype=torch.float32) / sigma) ** 2)
        k /= k.sum()
        kh, kv = k.view(1, 1, 1, -1).repeat(3, 1, 1, 1), k.view(1, 1, -1, 1).repeat(3, 1, 1, 1)

        def fn(t: Any, kh: Any = kh, kv: Any = kv, r: int = r) -> Any:
            blur = F.conv2d(F.conv2d(t, kh, padding=(0, r), groups=3), kv, padding=(r, 0), groups=3)
            return t + 3.0 * (t - blur)

        with torch.inference_mode():
            ref = fn(x)
            for ov in (32, 64, 96):
                for bl in (0, ov // 4, ov // 2, ov):
                    y = torch.from_numpy(run_tiled(lambda t: fn(torch.from_numpy(t)).numpy(), x.numpy(), 384, ov,
                                                   8, blend=bl))
                    rows.append({"sigma": sigma, "support": r, "tile": 384, "overlap": ov, "blend": bl,
                                 "min_context": ov - bl // 2, "psnr_db": C.psnr(y, ref)})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--engines", default=",".join(C.ENGINES))
    ap.add_argument("--size", default="1680x1120")
    ap.add_argument("--tiles", default="768", help="comma-separated tile sizes")
    ap.add_argument("--sweep", action="store_true", help="also sweep blend (0, default, 2*overlap) and overlap")
    ap.add_argument("--overlaps", default="", help="comma-separated overlaps to try (default blend) besides the default")
    ap.add_argument("--precision", default="fp32")
    ap.add_argument("--trained", action="store_true")
    ap.add_argument("--synthetic", action="store_true", help="only the blend study on a known-RF stand-in")
    ap.add_argument("--out", default="tiling")
    args = ap.parse_args()

    import torch

    from defocus_cli import runtime
    from defocus_cli.tiling import default_blend, plan_tiles

    tuned = runtime.tune_allocator()
    runtime.configure_threads()
    if args.synthetic:
        rows_s = synthetic_blend_study(args.size)
        print(f"\n### Blend study: unsharp-mask stand-in of known support, {args.size}, tile 384\n")
        print(C.table(rows_s, ["sigma", "support", "tile", "overlap", "blend", "min_context", "psnr_db"]))
        print(f"\nwrote {C.write_json(args.out + '_synthetic', {'machine': C.machine(), 'rows': rows_s})}")
        return
    w, h = (int(v) for v in args.size.lower().split("x"))
    x = C.load_photo(w, h)
    rows: list[dict[str, Any]] = []
    for name in args.engines.split(","):
        module, weights = C.build_engine(name, trained=args.trained)
        rf = int(getattr(module, "receptive_field", 0))
        m = int(getattr(module, "multiple_of", 1))
        runtime.run_engine(module, C.load_photo(128, 128), device="cpu", precision=args.precision, tile=0)
        ref_holder: dict[str, Any] = {}

        def whole() -> None:
            ref_holder["y"] = runtime.run_engine(module, x, device="cpu", precision=args.precision, tile=0)

        t_whole, o_whole = C.timed(whole)
        ref = ref_holder["y"]
        print(f"  {name}: whole image {t_whole:.2f} s (others {o_whole:.2f} cores)", flush=True)
        configs: list[tuple[int, int, int | None]] = [(int(t), rf, None) for t in args.tiles.split(",")]
        if args.sweep:
            t0 = int(args.tiles.split(",")[0])
            configs += [(t0, rf, 0), (t0, rf, 2 * rf), (t0, rf // 2, None), (t0, rf // 2, 0)]
        if args.overlaps:
            t0 = int(args.tiles.split(",")[0])
            configs += [(t0, int(ov), None) for ov in args.overlaps.split(",")]
        for tile, ov, blend in configs:
            holder: dict[str, Any] = {}

            def tiled(tile: int = tile, ov: int = ov, blend: int | None = blend) -> None:
                holder["y"] = runtime.run_engine(
                    module, x, device="cpu", precision=args.precision, tile=tile, overlap=ov, blend=blend
                )

            t_tiled, o_tiled = C.timed(tiled)
            y = holder["y"]
            plan = plan_tiles(h, w, tile, ov, m)
            mask = seam_mask(h, w, plan)
            diff = (y - ref).abs()
            row = {
                "engine": name, "weights": weights, "tile": tile, "overlap": ov,
                "blend": default_blend(ov) if blend is None else blend, "default": blend is None and ov == rf,
                "tiles": plan.count, "tile_hw": f"{plan.tile_h}x{plan.tile_w}",
                "psnr_db": C.psnr(y, ref), "seam_psnr_db": C.psnr(y[..., mask], ref[..., mask]),
                "max_abs": float(diff.max()), "whole_s": t_whole, "tiled_s": t_tiled,
                "time_ratio": t_tiled / t_whole, "pixel_overhead": plan.processed_fraction,
                "others": max(o_whole, o_tiled),
            }
            rows.append(row)
            print(f"  {name} tile {tile} overlap {ov} blend {row['blend']}: {row['psnr_db']:.2f} dB "
                  f"(seams {row['seam_psnr_db']:.2f} dB), {t_tiled:.2f} s", flush=True)
        del module, ref
    cols = ["engine", "tile", "overlap", "blend", "tiles", "tile_hw", "psnr_db", "seam_psnr_db", "max_abs",
            "whole_s", "tiled_s", "time_ratio", "pixel_overhead", "others"]
    print(f"\n### Tiled vs whole image, {args.size}, {args.precision}, malloc tuned={tuned}\n")
    print(C.table(rows, cols))
    out = {"machine": C.machine(), "when": time.strftime("%Y-%m-%d %H:%M:%S"), "argv": sys.argv[1:],
           "photo": str(C.PHOTO.name), "rows": rows}
    print(f"\nwrote {C.write_json(args.out, out)}")


if __name__ == "__main__":
    main()
