"""Photos per minute of a folder batch against the rate the network's forward alone allows (issue 17).

A folder of ``--count`` photos (default 20 PNGs of 840x560: the DPDD inputs of ``../shared`` resized, cycled and
flipped, or the synthetic bench pattern without ``../shared``) is deblurred per engine, each in a fresh child
process that loads the model once and then, after one warm-up photo:

* ``forward``: ``--reps`` warm passes of one photo through the restorer the command builds
  (``api.load_restorer(ENGINE, backend="auto")``: the backend, device and precision ``auto`` picks; tone lock and the rest of
  ``process`` not included): the engine's own rate, ``60 / forward`` photos per minute;
* ``process``: the median of the same photo through the deblur ``process`` function (forward + tone lock +
  strength/clamp/layout);
* ``batch`` with ``pipeline=0`` (one photo at a time: read, process, encode, write) and with the default
  pipeline (the next photo decoded and the previous one written in background threads), each over the whole
  folder into a fresh output folder: ``BatchResult.seconds`` and photos per minute.

The parent also times the whole command from outside once per engine,
``defocus deblur FOLDER -o OUT/ --overwrite --model ENGINE -q`` (process start, imports and model load included).
The issue's target: batch ≥ 0.9 × the forward's photos per minute.

Examples::

    python bench/bench_batch.py                                 # sftnet and ifan, 20 photos of 840x560
    python bench/bench_batch.py --engines sftnet --count 20 --size 840x560 --out batch_sftnet

Writes ``bench/results/<out>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402


def make_folder(folder: Path, count: int, width: int, height: int) -> list[Path]:
    """``count`` 8-bit PNGs of ``width`` x ``height`` in ``folder``."""
    import cv2
    import numpy as np

    folder.mkdir(parents=True, exist_ok=True)
    sources = sorted((C.SHARED / "data" / "real_blurry" / "dpdd").glob("*.png"))
    out = []
    for i in range(count):
        if sources:
            rgb8 = C.read_rgb8(sources[i % len(sources)])
            bgr = cv2.resize(np.ascontiguousarray(rgb8[..., ::-1]), (width, height), interpolation=cv2.INTER_AREA)
        else:
            rgb = C.load_photo(width, height)[0].permute(1, 2, 0).numpy()
            bgr = (rgb[..., ::-1] * 255 + 0.5).astype(np.uint8)
        if (i // max(len(sources), 1)) % 2:
            bgr = bgr[:, ::-1]
        p = folder / f"photo_{i:02d}.png"
        cv2.imwrite(str(p), np.ascontiguousarray(bgr))
        out.append(p)
    return out


def _niced(fn: Any, nice: int) -> Any:
    """``fn`` run in a thread whose nice value is raised by ``nice`` first (Linux: per thread)."""

    def run(*a: Any, **k: Any) -> Any:
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)
        except (AttributeError, OSError):
            pass
        return fn(*a, **k)

    return run


def child(engine: str, folder: str, reps: int, io_nice: int = 0) -> dict[str, Any]:
    """In the child: the forward, ``process`` and both batch modes, model loaded once; ``io_nice`` > 0 adds a
    pipelined run whose reader and writer threads are niced (an experiment: does a lower priority of the I/O
    threads keep them from stalling the network's threads?)."""
    import numpy as np

    from defocus_cli import api, batch, runtime
    from defocus_cli.io.read import read_photo

    runtime.tune_allocator()
    # the restorer exactly as `defocus deblur FOLDER --model ENGINE` builds it (backend, device and precision auto)
    restorer = api.load_restorer(engine, backend="auto")
    process = api.make_deblur_fn(restorer)
    files = sorted(Path(folder).glob("*.png"))
    photo = read_photo(files[0])
    x = np.ascontiguousarray(photo.pixels.transpose(2, 0, 1))[None]
    process(photo)  # warm-up: first-call costs out of every figure below
    fw, fw_cpu, pr = [], [], []
    for _ in range(reps):
        s, c = time.perf_counter(), time.process_time()
        restorer.run(x)
        fw.append(time.perf_counter() - s)
        fw_cpu.append(time.process_time() - c)  # every thread of the process: the engine's own CPU seconds
        s = time.perf_counter()
        process(photo)
        pr.append(time.perf_counter() - s)
    opts_ = restorer.options
    out: dict[str, Any] = {"engine": engine, "photos": len(files), "forward_s": C.median(fw),
                           "forward_cpu_s": C.median(fw_cpu),
                           "process_s": C.median(pr), "threads": int(os.environ.get("DEFOCUS_THREADS") or runtime.cpu_count()),
                           "backend": opts_.backend, "precision": opts_.precision}
    modes = [("sequential", 0), ("pipelined", batch.PIPELINE_DEPTH)]
    if io_nice:
        modes.append(("pipelined_nice", batch.PIPELINE_DEPTH))
    for label, depth in modes:
        if label == "pipelined_nice":
            batch._Pipeline._reader = _niced(batch._Pipeline._reader, io_nice)  # type: ignore[method-assign]
            batch._Pipeline._writer = _niced(batch._Pipeline._writer, io_nice)  # type: ignore[method-assign]
        target = Path(tempfile.mkdtemp(prefix=f"bench-batch-{label}-"))
        opts = batch.BatchOptions(output=str(target) + "/", existing="overwrite")
        items = batch.plan_batch([folder], opts, stdin_is_tty=False, stdout_is_tty=False)
        s, b0 = time.perf_counter(), C._cpu_busy_s()
        own0 = time.process_time()
        result = batch.run_batch(items, process, opts, pipeline=depth)
        wall = time.perf_counter() - s
        others = max((C._cpu_busy_s() - b0) - (time.process_time() - own0), 0.0) / max(wall, 1e-9)
        assert result.count("ok") == len(files), [i.error for i in result.items if i.error]
        cpu = (time.process_time() - own0) / len(files)
        out[label] = {"seconds": wall, "per_photo_s": wall / len(files), "photos_per_min": 60 * len(files) / wall,
                      "cpu_per_photo_s": cpu, "others": others}
        shutil.rmtree(target, ignore_errors=True)
    # the best a batch can do on these cores: all its CPU work (forward + decode, tone lock, encode, write: the
    # sequential run's CPU seconds per photo) packed perfectly onto them; against the forward alone's rate
    cores = os.cpu_count() or 1
    seq_cpu = out["sequential"]["cpu_per_photo_s"]
    out["io_cpu_per_photo_s"] = max(seq_cpu - out["forward_cpu_s"], 0.0)
    out["cpu_bound_of_forward_rate"] = min(1.0, out["forward_s"] / max(seq_cpu / cores, 1e-9))
    out["peak_rss_mb"] = C.peak_rss_mb()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--child")
    ap.add_argument("--folder", help="input folder (default: generated)")
    ap.add_argument("--engines", default="sftnet,ifan")
    ap.add_argument("--count", type=int, default=20)
    ap.add_argument("--size", default="840x560", help="WxH of the generated photos")
    ap.add_argument("--reps", type=int, default=3, help="warm forwards / process calls (median)")
    ap.add_argument("--no-cli", action="store_true", help="skip the whole-command timing")
    ap.add_argument("--io-nice", type=int, default=0, help="also a pipelined run with the I/O threads niced by N")
    ap.add_argument("--out", default="batch")
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.folder, args.reps, args.io_nice)))
        return
    tmp = Path(tempfile.mkdtemp(prefix="bench-batch-"))
    folder = Path(args.folder) if args.folder else tmp / "in"
    if not args.folder:
        w, h = (int(v) for v in args.size.lower().split("x"))
        make_folder(folder, args.count, w, h)
    n = len(list(folder.glob("*.png")))
    rows, results = [], []
    for engine in [e for e in args.engines.split(",") if e]:
        r = C.run_child(Path(__file__), ["--child", engine, "--folder", str(folder), "--reps", str(args.reps),
                                         "--io-nice", str(args.io_nice)])
        if "error" in r:
            print(f"# {engine}: {r['error']}", file=sys.stderr)
            continue
        if not args.no_cli:
            script = Path(sys.executable).parent / "defocus"
            cmd = [str(script)] if script.is_file() else [sys.executable, "-m", "defocus_cli"]
            out = tmp / f"out_{engine}"
            s = time.perf_counter()
            subprocess.run([*cmd, "deblur", str(folder), "-o", f"{out}/", "--overwrite", "--model", engine, "-q"],
                           check=True, env=dict(os.environ, PYTHONPATH=str(C.ROOT)))
            r["cli_s"] = time.perf_counter() - s
            r["cli_photos_per_min"] = 60 * n / r["cli_s"]
        fw_rate = 60 / r["forward_s"]
        r["forward_photos_per_min"] = fw_rate
        for label in ("sequential", "pipelined", "pipelined_nice"):
            if label in r:
                r[label]["of_forward_rate"] = r[label]["photos_per_min"] / fw_rate
        results.append(r)
        rows.append({"engine": engine, "backend": f"{r['backend']} {r['precision']}", "photos": n, "forward_s": r["forward_s"], "process_s": r["process_s"],
                     "forward_per_min": fw_rate,
                     "seq_per_min": r["sequential"]["photos_per_min"],
                     "seq_of_fw": r["sequential"]["of_forward_rate"],
                     "pipe_per_min": r["pipelined"]["photos_per_min"],
                     "pipe_of_fw": r["pipelined"]["of_forward_rate"],
                     "nice_of_fw": r.get("pipelined_nice", {}).get("of_forward_rate"),
                     "fw_cpu_s": r["forward_cpu_s"], "io_cpu_s": r["io_cpu_per_photo_s"],
                     "cpu_bound_of_fw": r["cpu_bound_of_forward_rate"],
                     "cli_s": r.get("cli_s"), "cli_per_min": r.get("cli_photos_per_min"),
                     "others": max(r["sequential"]["others"], r["pipelined"]["others"])})
    print(f"# {n} photos of {args.size} in one folder; threads {results[0]['threads'] if results else '?'}; "
          "per_min = photos per minute, *_of_fw = share of the forward-only rate (target >= 0.9); fw_cpu_s / "
          "io_cpu_s = CPU seconds per photo of the forward / of everything else; cpu_bound_of_fw = the share a "
          "perfect overlap could reach on these cores\n")
    print(C.table(rows, ["engine", "backend", "photos", "forward_s", "process_s", "forward_per_min", "seq_per_min", "seq_of_fw",
                         "pipe_per_min", "pipe_of_fw", *(["nice_of_fw"] if args.io_nice else []), "fw_cpu_s",
                         "io_cpu_s", "cpu_bound_of_fw", "cli_s",
                         "cli_per_min", "others"]))
    path = C.write_json(args.out, {"machine": C.machine(), "size": args.size, "results": results})
    print(f"\nwrote {path}")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
