"""Torch vs OpenVINO on the CPU: seconds per 1680x1120 photo and peak memory per pixel, one process per config.

Configurations: torch fp32, torch bf16 (autocast), OpenVINO fp32 (f32 hint), OpenVINO bf16 (the fp32 IR with
the bf16 inference hint) and OpenVINO int8 (the NNCF IR), all through the product's path
(:func:`defocus_cli.api.deblur_array`: padding, ``tile="auto"``, tone lock, clamp) with the installed
weights of ``--model`` (default sftnet). Rounds run the configurations in turn (A B C D E, A B C D E, ...),
each a fresh process with a small warm-up and one full-size warm-up, then ``--reps`` timed runs; the
median over all rounds is reported, with min/max and how busy other processes kept the CPU.

Sections (``--sections``):

* ``speed``  seconds per photo per configuration (the table in the README);
* ``bpp``    peak RSS growth per input pixel of a whole-image OpenVINO forward (768² vs 1448²), the
             ``bytes_per_pixel`` that ``--tile auto`` uses on the OpenVINO path, beside torch fp32's.

``--record`` writes what was measured into the model's registry row (``defocus_cli/models.json``):
``openvino.auto[<cpu class>]`` (the fastest configuration whose precision passed the quality gate; among
those within 10% of the fastest, the one with the smallest gate loss) and ``openvino.bytes_per_pixel``. ``--isa avx2`` runs every child with oneDNN limited to AVX2
(``ONEDNN_MAX_CPU_ISA=AVX2``, ``ATEN_CPU_CAPABILITY=avx2``): an emulation of an AVX2-only CPU on a newer one,
recorded as class ``no-bf16`` with ``"emulated": true``.

Examples::

    python bench/bench_backends.py                          # speed + bpp, prints tables, bench/results/backends.json
    python bench/bench_backends.py --sections speed --rounds 3 --reps 3 --record
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

HERE = Path(__file__).resolve()
TIE = 0.10
"""Configurations within this fraction of the fastest count as equally fast; the most accurate of them is recorded."""
CONFIGS = ("torch-fp32", "torch-bf16", "openvino-fp32", "openvino-bf16", "openvino-int8")


def _engine(model: str, config: str) -> tuple[Any, str]:
    from defocus_cli.weights import load_model

    backend, prec = config.split("-")
    loaded = load_model(model)
    if backend == "torch":
        return loaded.module, prec
    from defocus_cli.backends.openvino import load_engine

    return load_engine(loaded, prec), prec


def child_speed(args: argparse.Namespace) -> dict[str, Any]:
    import numpy as np

    from defocus_cli import runtime
    from defocus_cli.api import deblur_array, load_restorer, restore_array

    runtime.tune_allocator()
    w, h = (int(v) for v in args.size.lower().split("x"))
    engine, prec = _engine(args.model, args.config)
    px = np.ascontiguousarray(C.load_photo(w, h)[0].permute(1, 2, 0).numpy())
    small = np.ascontiguousarray(px[:128, :128])
    deblur_array(small, engine, device="cpu", precision=prec, tile=0)
    runs: list[Any] = []
    first, _ = C.timed(
        lambda: runs.append(restore_array(px, load_restorer(engine, device="cpu", precision=prec, tile="auto"))))
    stats = runs[0][1]
    times, others = [], []
    for _ in range(args.reps):
        t, o = C.timed(lambda: deblur_array(px, engine, device="cpu", precision=prec, tile="auto"))
        times.append(t)
        others.append(o)
    return {"config": args.config, "size": f"{w}x{h}", "first_s": first, "times": times, "others": others,
            "tile": stats.tile, "peak_rss_mb": C.peak_rss_mb()}


def child_bpp(args: argparse.Namespace) -> dict[str, Any]:
    import numpy as np

    from defocus_cli import runtime
    from defocus_cli.api import deblur_array

    runtime.tune_allocator()
    engine, prec = _engine(args.model, args.config)
    w, h = (int(v) for v in args.size.lower().split("x"))
    px = np.ascontiguousarray(C.load_photo(w, h)[0].permute(1, 2, 0).numpy())
    deblur_array(px, engine, device="cpu", precision=prec, tile=0, tone_lock=False)
    return {"config": args.config, "size": args.size, "peak_rss_mb": C.peak_rss_mb()}


def isa_env(isa: str) -> dict[str, str]:
    return {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"} if isa == "avx2" else {}


def section_speed(args: argparse.Namespace) -> list[dict[str, Any]]:
    runs: dict[str, list[dict[str, Any]]] = {c: [] for c in args.configs}
    for rnd in range(args.rounds):
        for config in args.configs:
            r = C.run_child(HERE, ["--child", "speed", "--config", config, "--model", args.model, "--size",
                                   args.size, "--reps", str(args.reps)], env=isa_env(args.isa))
            runs[config].append(r)
            t = r.get("times") or [float("nan")]
            print(f"  round {rnd + 1} {config}: {' '.join(f'{v:.2f}' for v in t)} s"
                  + (f"  ERROR {r['error']}" if "error" in r else ""), flush=True)
    rows = []
    for config, rs in runs.items():
        times = [t for r in rs for t in r.get("times", [])]
        others = [o for r in rs for o in r.get("others", [])]
        rows.append({"config": config, "median_s": C.median(times), "min_s": min(times, default=float("nan")),
                     "max_s": max(times, default=float("nan")), "runs": len(times),
                     "first_s": C.median([r["first_s"] for r in rs if "first_s" in r]),
                     "others_cores": C.median(others), "peak_rss_mb": max((r.get("peak_rss_mb", 0) for r in rs),
                                                                         default=None),
                     "tile": rs[0].get("tile") if rs else None,
                     "error": next((r["error"] for r in rs if "error" in r), None)})
    base = next((r["median_s"] for r in rows if r["config"] == "torch-fp32"), float("nan"))
    for r in rows:
        r["vs_torch_fp32"] = base / r["median_s"] if r["median_s"] else float("nan")
    print(f"\n### One {args.size} photo, sftnet, seconds (median of {args.rounds} rounds x {args.reps} runs)\n")
    print(C.table(rows, ["config", "median_s", "min_s", "max_s", "runs", "first_s", "vs_torch_fp32", "others_cores",
                         "peak_rss_mb", "tile"]))
    return rows


def section_bpp(args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = []
    for config in args.configs:
        pts = []
        for side in (768, 1448):
            r = C.run_child(HERE, ["--child", "bpp", "--config", config, "--model", args.model,
                                   "--size", f"{side}x{side}"], env=isa_env(args.isa))
            pts.append((side * side, r.get("peak_rss_mb", float("nan"))))
        (p1, m1), (p2, m2) = pts
        bpp = (m2 - m1) * 1024 * 1024 / (p2 - p1)
        rows.append({"config": config, "rss_768_mb": m1, "rss_1448_mb": m2, "bytes_per_pixel": bpp})
        print(f"  {config}: {bpp:.0f} bytes/pixel", flush=True)
    print("\n### Peak RSS growth per input pixel, whole image (768² → 1448²)\n")
    print(C.table(rows, ["config", "rss_768_mb", "rss_1448_mb", "bytes_per_pixel"]))
    return rows


def record(args: argparse.Namespace, speed: list[dict[str, Any]], bpp: list[dict[str, Any]]) -> None:
    """Write the measured auto rule and bytes/pixel into the model's registry row."""
    from defocus_cli import registry
    from defocus_cli.backends import cpu_class, validated_precisions

    path = registry.REGISTRY_FILE
    doc = json.loads(path.read_text())
    row = next(m for m in doc["models"] if m["name"] == args.model)
    ov = row.get("openvino")
    if not ov:
        raise SystemExit(f"{args.model} has no OpenVINO IR registered; run tools/export_openvino.py first")
    if speed:
        valid = validated_precisions(ov)
        ok = [r for r in speed if r["median_s"] == r["median_s"] and not r.get("error")
              and (r["config"].startswith("torch") or r["config"].split("-")[1] in valid)]
        fastest = min(r["median_s"] for r in ok)

        def loss(r: dict[str, Any]) -> float:  # quality loss vs torch fp32 on the gate data (torch: the reference)
            b, p = r["config"].split("-")
            return 0.0 if b == "torch" else float((ov.get("gate") or {}).get(p, {}).get("psnr_loss_db", 1.0))

        # speed ties go to accuracy: within TIE of the fastest, the configuration with the smallest gate loss wins
        near = [r for r in ok if r["median_s"] <= fastest * (1 + TIE)]
        best = min(near, key=lambda r: (round(loss(r), 3), r["median_s"]))
        torch_best = min((r for r in ok if r["config"].startswith("torch")), key=lambda r: r["median_s"])
        backend, prec = best["config"].split("-")
        cls = "no-bf16" if args.isa == "avx2" else cpu_class()
        rule = {"backend": backend, "precision": prec if backend == "openvino" else "auto",
                "seconds": {r["config"]: round(r["median_s"], 3) for r in speed if r["median_s"] == r["median_s"]},
                "speedup_vs_best_torch": round(torch_best["median_s"] / best["median_s"], 2),
                "size": args.size, "cpu": C.machine()["cpu"], "cores": os.cpu_count(),
                "measured_with": "bench/bench_backends.py"}
        if args.isa == "avx2":
            rule["emulated"] = "ONEDNN_MAX_CPU_ISA=AVX2 on a native-bf16 CPU"
        ov.setdefault("auto", {})[cls] = rule
        print(f"recorded auto rule for {cls}: {backend} {rule['precision']}")
    if bpp and args.isa == "native":
        ov["bytes_per_pixel"] = {r["config"].split("-")[1]: int(round(r["bytes_per_pixel"] * 1.1, -1))
                                 for r in bpp if r["config"].startswith("openvino") and r["bytes_per_pixel"] > 0}
        print(f"recorded bytes_per_pixel (+10%): {ov['bytes_per_pixel']}")
    path.write_text(json.dumps(doc, indent=2) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sections", default="speed,bpp")
    ap.add_argument("--model", default="sftnet")
    ap.add_argument("--configs", default=",".join(CONFIGS))
    ap.add_argument("--size", default="1680x1120")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--isa", choices=("native", "avx2"), default="native")
    ap.add_argument("--record", action="store_true", help="write the results into defocus_cli/models.json")
    ap.add_argument("--out", default="backends")
    ap.add_argument("--child", choices=("speed", "bpp"))
    ap.add_argument("--config")
    args = ap.parse_args()
    if args.child:
        fn = child_speed if args.child == "speed" else child_bpp
        print(json.dumps(fn(args)))
        return
    args.configs = [c for c in args.configs.split(",") if c]
    sections = args.sections.split(",")
    out: dict[str, Any] = {"machine": C.machine(), "isa": args.isa, "model": args.model}
    print(f"# {out['machine']['cpu']}, {out['machine']['cores']} cores, native bf16: "
          f"{out['machine']['native_bf16']}, isa {args.isa}")
    speed = section_speed(args) if "speed" in sections else []
    bpp = section_bpp(args) if "bpp" in sections else []
    out.update(speed=speed, bpp=bpp)
    path = C.write_json(args.out if args.isa == "native" else f"{args.out}_{args.isa}", out)
    print(f"\nwrote {path}")
    if args.record:
        record(args, speed, bpp)


if __name__ == "__main__":
    main()
