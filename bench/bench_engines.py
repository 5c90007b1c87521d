"""Engine speed and memory through the real runtime (``defocus_cli.runtime.run_engine``), one process per config.

Prints markdown tables and writes ``bench/results/<out>.json``. Sections (choose with ``--sections``):

* ``conv``   3x3 conv 64->64 on 1x64x512x512: GFLOP/s fp32 NCHW / fp32 channels_last / bf16 channels_last,
             with the tuned and the default glibc allocator (the roofline the engines are compared with);
* ``macs``   MACs per megapixel of each engine (forward hooks on Conv2d/ConvTranspose2d) and params;
* ``bpp``    peak-RSS growth per pixel of a whole-image forward (fp32), the ``bytes_per_pixel`` that
             ``tile=auto`` needs;
* ``bf16``   bf16 autocast vs fp32 on LFDOF centre crops (installed weights where present): PSNR to the
             target and output agreement (dB);
* ``speed``  seconds (median after one full-size warm-up, and the cold first run) and peak RSS per engine,
             precision, size, allocator on/off, at default settings (``tile=auto``, default overlap);
             with the lower bound MACs x 2 / measured conv rate.

Examples::

    python bench/bench_engines.py                                   # conv, macs, bpp, 1680x1120 speed
    python bench/bench_engines.py --sections speed --engines ifan --sizes 6000x4000 --reps 1 --out engines_24mp
    python bench/bench_engines.py --sections speed --malloc on,off --engines ifan

The CPU of the dev VM is shared: every timing carries ``others`` (cores used by other processes during the
run); compare configurations side by side, not across runs made at different times.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

HERE = Path(__file__).resolve()


# ----------------------------------------------------------------------------------------- children


def child_conv(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from defocus_cli import runtime

    tuned = runtime.tune_allocator()
    torch.set_num_threads(runtime.cpu_count())
    dtype = torch.bfloat16 if args.precision == "bf16" else torch.float32
    fmt = torch.channels_last if args.layout == "cl" else torch.contiguous_format
    conv = torch.nn.Conv2d(64, 64, 3, padding=1, bias=False).to(dtype=dtype, memory_format=fmt).eval()
    x = torch.rand(1, 64, 512, 512).to(dtype=dtype).contiguous(memory_format=fmt)
    flop = 2.0 * 64 * 64 * 9 * 512 * 512
    times, others = [], []
    with torch.inference_mode():
        for _ in range(2):
            conv(x)
        for _ in range(args.reps):
            t, o = C.timed(lambda: conv(x))
            times.append(t)
            others.append(o)
    med = C.median(times)
    return {
        "precision": args.precision, "layout": args.layout, "malloc_tuned": tuned, "threads": torch.get_num_threads(),
        "times": times, "others": others, "median_s": med, "gflops": flop / med / 1e9,
        "best_gflops": flop / min(times) / 1e9,
    }


def child_engine(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from defocus_cli import runtime

    tuned = runtime.tune_allocator()
    w, h = (int(v) for v in args.size.lower().split("x"))
    module, weights = C.build_engine(args.engine, trained=args.trained)
    x = C.load_photo(w, h)
    tile: int | str = args.tile if args.tile == "auto" else int(args.tile)
    overlap = None if args.overlap is None else int(args.overlap)
    info: dict[str, Any] = {}
    rss0 = C.peak_rss_mb()

    def once() -> None:
        runtime.run_engine(module, x, device="cpu", precision=args.precision, tile=tile, overlap=overlap, info=info)

    # small warm-up: oneDNN primitive creation, thread pool
    runtime.run_engine(module, C.load_photo(128, 128), device="cpu", precision=args.precision, tile=0)
    first, first_others = C.timed(once)
    times, others = [], []
    for _ in range(args.reps):
        t, o = C.timed(once)
        times.append(t)
        others.append(o)
    med = C.median(times) if times else first
    mp = w * h / 1e6
    return {
        "engine": args.engine, "precision": args.precision, "size": f"{w}x{h}", "mp": mp,
        "malloc_tuned": tuned, "threads": torch.get_num_threads(), "weights": weights,
        "tile_request": args.tile, "tile": info.get("tile"), "tiles": info.get("tiles"), "overlap": info.get("overlap"),
        "first_s": first, "first_others": first_others, "times": times, "others": others,
        "median_s": med, "s_per_mp": med / mp, "peak_rss_mb": C.peak_rss_mb(), "rss_before_mb": rss0,
    }


# ----------------------------------------------------------------------------------------- sections


def section_conv(args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = []
    for malloc in args.malloc:
        for prec, layout in (("fp32", "nchw"), ("fp32", "cl"), ("bf16", "cl")):
            r = C.run_child(
                HERE, ["--child", "conv", "--precision", prec, "--layout", layout, "--reps", "5"],
                env=malloc_env(malloc),
            )
            r.setdefault("precision", prec)
            r.setdefault("layout", layout)
            r["malloc"] = malloc
            rows.append(r)
            print(f"  conv {prec} {layout} malloc={malloc}: {r.get('gflops', float('nan')):.0f} GFLOP/s", flush=True)
    print("\n### 3x3 conv 64->64, 1x64x512x512 (median of 5)\n")
    print(C.table(rows, ["precision", "layout", "malloc", "gflops", "best_gflops", "median_s", "threads"]))
    return rows


def section_macs(args: argparse.Namespace) -> list[dict[str, Any]]:
    import torch

    torch.set_num_threads(2)
    rows = []
    for name in args.engines:
        module, _ = C.build_engine(name)
        hooked = C.count_macs(module, 256, 256)
        macs = C.count_flop_macs(module, 256, 256)
        params = sum(p.numel() for p in module.parameters())
        rows.append({
            "engine": name, "params_M": params / 1e6, "gmac_per_mp": macs / (256 * 256) * 1e6 / 1e9,
            "gmac_per_mp_hooks": hooked / (256 * 256) * 1e6 / 1e9,
            "multiple_of": getattr(module, "multiple_of", None),
            "receptive_field": getattr(module, "receptive_field", None),
            "bytes_per_pixel": getattr(module, "bytes_per_pixel", None),
            "safe_precisions": ",".join(getattr(module, "safe_precisions", ())),
        })
    print("\n### MACs per megapixel at 256x256: all conv/matmul ops (FlopCounterMode), Conv2d/ConvTranspose2d hooks\n")
    print(C.table(rows, ["engine", "params_M", "gmac_per_mp", "gmac_per_mp_hooks", "multiple_of", "receptive_field",
                         "bytes_per_pixel", "safe_precisions"]))
    return rows


def section_bpp(args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = []
    for name in args.engines:
        pts = []
        for side in (768, 1448):
            r = C.run_child(HERE, ["--child", "engine", "--engine", name, "--precision", "fp32",
                                   "--size", f"{side}x{side}", "--reps", "0", "--tile", "0"])
            pts.append((side * side, r.get("peak_rss_mb", float("nan")), r))
        (p1, m1, _), (p2, m2, _) = pts
        bpp = (m2 - m1) * 1024 * 1024 / (p2 - p1)
        rows.append({"engine": name, "rss_768_mb": m1, "rss_1448_mb": m2, "bytes_per_pixel": bpp,
                     "gb_per_mp": bpp * 1e6 / 1e9})
        print(f"  {name}: {bpp:.0f} bytes/pixel", flush=True)
    print("\n### Peak RSS growth per pixel, whole image, fp32, tuned malloc\n")
    print(C.table(rows, ["engine", "rss_768_mb", "rss_1448_mb", "bytes_per_pixel", "gb_per_mp"]))
    return rows


def section_bf16(args: argparse.Namespace) -> list[dict[str, Any]]:
    """bf16 (autocast, CPU) vs fp32 on LFDOF pairs (centre crops): PSNR to the target and output agreement."""
    import numpy as np
    import torch

    from defocus_cli import runtime

    runtime.tune_allocator()
    runtime.configure_threads()
    inputs = sorted((C.SHARED / "data" / "lfdof" / "input").glob("*.png"))[: args.bf16_images]
    if not inputs:
        print("  bf16: ../shared/data/lfdof not found; skipped")
        return []

    def load(path: Path) -> Any:
        a = C.read_rgb(path)
        hh, ww = a.shape[:2]
        cs = args.bf16_crop
        y0, x0 = max((hh - cs) // 2, 0), max((ww - cs) // 2, 0)
        a = np.ascontiguousarray(a[y0:y0 + cs, x0:x0 + cs].transpose(2, 0, 1))
        return torch.from_numpy(a)[None]

    rows = []
    for name in args.engines:
        module, weights = C.build_engine(name, trained=True)
        acc: dict[str, list[float]] = {"fp32": [], "bf16": [], "agree": [], "input": []}
        times: dict[str, list[float]] = {"fp32": [], "bf16": []}
        for path in inputs:
            x, tgt = load(path), load(path.parent.parent / "target" / path.name)
            outs = {}
            for prec in ("fp32", "bf16"):
                t0 = time.perf_counter()
                outs[prec] = runtime.run_engine(module, x, device="cpu", precision=prec, tile=0).clamp(0, 1)
                times[prec].append(time.perf_counter() - t0)
                acc[prec].append(C.psnr(outs[prec], tgt))
            acc["agree"].append(C.psnr(outs["bf16"], outs["fp32"]))
            acc["input"].append(C.psnr(x, tgt))
        row = {"engine": name, "weights": weights, "images": len(inputs), "crop": args.bf16_crop,
               "input_psnr": float(np.mean(acc["input"])), "fp32_psnr": float(np.mean(acc["fp32"])),
               "bf16_psnr": float(np.mean(acc["bf16"])), "agreement_db": float(np.mean(acc["agree"])),
               "fp32_s": C.median(times["fp32"]), "bf16_s": C.median(times["bf16"])}
        row["delta_db"] = row["bf16_psnr"] - row["fp32_psnr"]
        rows.append(row)
        print(f"  {name}: fp32 {row['fp32_psnr']:.3f} dB, bf16 {row['bf16_psnr']:.3f} dB, "
              f"agreement {row['agreement_db']:.1f} dB", flush=True)
    print("\n### bf16 (autocast) vs fp32 on LFDOF centre crops\n")
    print(C.table(rows, ["engine", "weights", "images", "crop", "input_psnr", "fp32_psnr", "bf16_psnr", "delta_db",
                         "agreement_db", "fp32_s", "bf16_s"]))
    return rows


def section_speed(args: argparse.Namespace, conv_rows: list[dict], mac_rows: list[dict]) -> list[dict[str, Any]]:
    rate = {(r["precision"], r.get("malloc")): r.get("gflops") for r in conv_rows if r.get("layout") == "cl"}
    macs = {r["engine"]: r["gmac_per_mp"] for r in mac_rows}
    rows = []
    for name in args.engines:
        for prec in args.precisions:
            for size in args.sizes:
                for malloc in args.malloc:
                    cargs = ["--child", "engine", "--engine", name, "--precision", prec, "--size", size,
                             "--reps", str(args.reps), "--tile", args.tile]
                    if args.trained:
                        cargs.append("--trained")
                    if args.overlap is not None:
                        cargs += ["--overlap", str(args.overlap)]
                    t0 = time.time()
                    r = C.run_child(HERE, cargs, env=malloc_env(malloc))
                    r.update(engine=name, precision=prec, size=size, malloc=malloc)
                    g = rate.get((prec, "on"))
                    if name in macs and g and "mp" in r:
                        r["lower_bound_s"] = macs[name] * 1e9 * 2 * r["mp"] / (g * 1e9)
                        r["of_bound"] = r["lower_bound_s"] / r["median_s"]
                    r["others_median"] = C.median(r.get("others", []) or [r.get("first_others", float("nan"))])
                    rows.append(r)
                    print(f"  {name} {prec} {size} malloc={malloc}: {r.get('median_s', float('nan')):.2f} s, "
                          f"peak {r.get('peak_rss_mb', float('nan')):.0f} MB ({time.time() - t0:.0f} s wall)"
                          + (f" ERROR {r['error']}" if "error" in r else ""), flush=True)
    print("\n### Engines through run_engine (tile=auto), median after one full-size warm-up\n")
    print(C.table(rows, ["engine", "precision", "size", "malloc", "median_s", "first_s", "s_per_mp", "lower_bound_s",
                         "of_bound", "peak_rss_mb", "tile", "tiles", "others_median"]))
    return rows


def malloc_env(malloc: str) -> dict[str, str]:
    """Environment of a child for allocator setting ``malloc``: ``on`` (the product's tuning: no mmap, never
    trim), ``off`` (glibc defaults), or ``trimN`` (tuned, but trim above N MiB; ``trim2047`` = the old setting)."""
    if malloc.startswith("trim"):
        return {"DEFOCUS_MALLOC_TUNING": "1", "DEFOCUS_MALLOC_TRIM_MB": malloc[4:]}
    return {"DEFOCUS_MALLOC_TUNING": "1" if malloc == "on" else "0", "DEFOCUS_MALLOC_TRIM_MB": ""}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--child", choices=["conv", "engine"])
    ap.add_argument("--engine")
    ap.add_argument("--layout", default="cl")
    ap.add_argument("--size", default="1680x1120")
    ap.add_argument("--sections", default="conv,macs,bpp,speed")
    ap.add_argument("--engines", default=",".join(C.ENGINES))
    ap.add_argument("--precisions", default="fp32")
    ap.add_argument("--precision", default="fp32")
    ap.add_argument("--sizes", default="1680x1120")
    ap.add_argument("--malloc", default="on", help="on,off,trimN: tuned, default glibc, tuned but trimming above N MiB")
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--tile", default="auto")
    ap.add_argument("--overlap", default=None)
    ap.add_argument("--trained", action="store_true", help="use trained weights when installed")
    ap.add_argument("--bf16-images", type=int, default=2, help="LFDOF images for the bf16 section")
    ap.add_argument("--bf16-crop", type=int, default=512, help="centre crop side for the bf16 section")
    ap.add_argument("--out", default="engines")
    args = ap.parse_args()

    if args.child:
        res = child_conv(args) if args.child == "conv" else child_engine(args)
        print(json.dumps(res))
        return

    args.engines = [e for e in args.engines.split(",") if e]
    args.precisions = [p for p in args.precisions.split(",") if p]
    args.sizes = [s for s in args.sizes.split(",") if s]
    args.malloc = [m for m in args.malloc.split(",") if m]
    sections = set(args.sections.split(","))
    out: dict[str, Any] = {"machine": C.machine(), "when": time.strftime("%Y-%m-%d %H:%M:%S"), "argv": sys.argv[1:]}
    print(f"# machine: {out['machine']}")
    prev = C.RESULTS / "conv.json"
    if "conv" in sections:
        conv_rows = section_conv(args)
        C.write_json("conv", {"machine": out["machine"], "when": out["when"], "conv": conv_rows})
    else:  # the lower bounds use the conv rate measured by the last conv run
        conv_rows = json.loads(prev.read_text()).get("conv", []) if prev.is_file() else []
    mac_rows = section_macs(args) if "macs" in sections or "speed" in sections else []
    if "conv" in sections:
        out["conv"] = conv_rows
    out["macs"] = mac_rows
    if "bpp" in sections:
        out["bpp"] = section_bpp(args)
    if "bf16" in sections:
        out["bf16"] = section_bf16(args)
    if "speed" in sections:
        out["speed"] = section_speed(args, conv_rows, mac_rows)
    print(f"\nwrote {C.write_json(args.out, out)}")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONPATH", str(C.ROOT))
    main()
