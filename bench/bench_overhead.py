"""Where the seconds of one ``defocus deblur photo.png -o out.png`` go, per engine (issue 17).

Each engine runs in a fresh child process that calls the console script's entry point in-process
(``defocus_cli.cli.main``) with timers wrapped around the library functions it goes through, so the breakdown is
the product's own path:

* ``start``: interpreter start-up until the child's first line (the parent's clock before the spawn, the
  child's at its first line; ``exit`` likewise after its last line until it is reaped);
* ``import_cli`` (typer and the command modules), ``import_lib`` (the library modules the command imports in
  its body), ``import_torch``: the time spent importing torch wherever the command does it (a weights load, the
  torch backend), 0 when it never does (the OpenVINO backend);
* ``plan`` (inputs, outputs and their checks), ``load_model`` (``api.load_restorer``: the backend chosen, the
  engine found, verified and built: the torch network, or the OpenVINO IR compiled) with ``sha256`` (hashing
  weight or IR files) inside it;
* ``decode``, then ``process`` = ``api.restore_array``: ``Restorer.run`` (``auto_tile``, the forward and the
  tiling glue: the engine the command chose, in its backend and precision) + ``tone_lock`` + the rest (flips,
  strength, clamp, layout), then ``encode`` and ``write`` (atomic);
* after the command: ``--warm`` more forwards of the same photo through the command's own ``Restorer`` (same
  backend, precision, tile) in the same process: their median is ``forward_warm`` (the engine alone, warm), and
  ``first_call`` = the command's forward − ``forward_warm`` (oneDNN / OpenVINO primitive creation,
  page-faulting fresh buffers); minor page faults (``ru_minflt``) of both are recorded.

The parent also times the whole command from outside (``--reps`` runs of the console script, median) and
``python -c pass``, and checks issue 17's target: wall ≤ 1.25 × ``forward_warm`` + 1.0 s.

Examples::

    python bench/bench_overhead.py                         # sftnet and ifan on a 1680x1120 photo
    python bench/bench_overhead.py --engines sftnet --reps 5 --out overhead_sftnet
    DEFOCUS_THREADS=1 python bench/bench_overhead.py --engines sftnet --reps 1 --warm 1   # a quick look

Writes ``bench/results/<out>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

T_FIRST = time.time()  # the child's first line: the end of interpreter start-up

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

PHASES = ("start", "import_cli", "import_lib", "import_torch", "plan", "load_model", "sha256", "decode", "auto_tile",
          "forward", "tone_lock", "process_rest", "encode", "write", "other", "exit")


def _minflt() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def _time_torch_import(t: dict[str, float]) -> None:
    """Add to ``t["import_torch"]`` the time of the import (``import x``, ``importlib.import_module``) that
    first loads torch, wherever it happens; nothing when torch is never imported."""
    import builtins
    import importlib

    def timing(fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*a: Any, **k: Any) -> Any:
            if "torch" in sys.modules:
                return fn(*a, **k)
            s = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                if "torch" in sys.modules and "import_torch" not in t:
                    t["import_torch"] = time.perf_counter() - s
                    t["_import_torch_at"] = s

        return timed

    builtins.__import__ = timing(builtins.__import__)
    importlib.import_module = timing(importlib.import_module)


def child(engine: str, photo: str, out: str, warm: int) -> dict[str, Any]:
    """In the child: run ``defocus deblur photo -o out --overwrite --model engine`` in-process with timers."""
    t: dict[str, float] = {}
    faults: dict[str, int] = {}
    captured: dict[str, Any] = {}
    t0 = time.perf_counter()
    from defocus_cli.cli import main

    t["import_cli"] = time.perf_counter() - t0
    _time_torch_import(t)
    t0 = time.perf_counter()
    from defocus_cli import api, batch, fetch, restorer, runtime, tone, weights  # noqa: F401 - the command's

    t["import_lib"] = time.perf_counter() - t0

    def wrap(mod: Any, name: str, key: str, keep: Callable[[Any], None] | None = None) -> None:
        fn = getattr(mod, name)

        def timed(*a: Any, **k: Any) -> Any:
            s, f = time.perf_counter(), _minflt()
            try:
                r = fn(*a, **k)
            finally:
                t[key] = t.get(key, 0.0) + time.perf_counter() - s
                faults[key] = faults.get(key, 0) + _minflt() - f
            if keep is not None:
                keep(r)
            return r

        setattr(mod, name, timed)

    wrap(batch, "plan_batch", "plan")
    wrap(api, "load_restorer", "load_model", keep=lambda r: captured.setdefault("restorer", r))
    wrap(fetch, "sha256_file", "sha256")
    wrap(weights, "sha256_file", "sha256")
    wrap(batch, "read_photo", "decode")
    wrap(batch, "encode_photo", "encode")
    wrap(batch, "atomic_write", "write")
    wrap(api, "restore_array", "process")
    wrap(restorer.Restorer, "run", "run")
    first_run: list[float] = []  # start of the command's (first) Restorer.run: a torch import inside it is not the forward
    run_timed = restorer.Restorer.run

    def run_marked(*a: Any, **k: Any) -> Any:
        if not first_run:
            first_run.append(time.perf_counter())
        return run_timed(*a, **k)

    restorer.Restorer.run = run_marked  # type: ignore[method-assign]
    wrap(runtime, "auto_tile", "auto_tile")
    wrap(tone, "lock_tone_np", "tone_lock")
    s = time.perf_counter()
    sys.argv = ["defocus", "deblur", photo, "-o", out, "--overwrite", "--model", engine]
    code: Any = None
    try:
        main()  # the console script's entry point, as a user runs it
    except SystemExit as e:
        code = e.code
    t["command"] = time.perf_counter() - s
    t.setdefault("import_torch", 0.0)
    t["run_command"] = t.get("run", 0.0)
    t["forward"] = t["run_command"] - t.get("auto_tile", 0.0)
    at = t.pop("_import_torch_at", None)
    if at is not None and first_run and at >= first_run[0]:  # torch was imported inside the forward's call
        t["forward"] -= t["import_torch"]
    t["process_rest"] = t.get("process", 0.0) - t["run_command"] - t.get("tone_lock", 0.0)
    t["other"] = t["command"] - sum(t.get(k, 0.0) for k in ("plan", "load_model", "decode", "process", "encode",
                                                              "write"))
    cold_faults = faults.get("run", 0)
    torch_in_command = "torch" in sys.modules
    # the same photo again in this warm process, through the restorer the command used (its backend, precision)
    from defocus_cli.io.read import read_photo

    rs = captured["restorer"]
    x = read_photo(photo).pixels.transpose(2, 0, 1)[None]
    warm_s, warm_faults = [], []
    for _ in range(warm):
        f, s = _minflt(), time.perf_counter()
        rs.run(x)
        warm_s.append(time.perf_counter() - s)
        warm_faults.append(_minflt() - f)
    fw = C.median(warm_s)
    o = rs.options
    return {
        "engine": engine, "exit_code": code, "seconds": t, "forward_warm": fw, "forward_warm_runs": warm_s,
        "backend": o.backend, "precision": o.precision, "tile": o.tile, "torch_imported": torch_in_command,
        "first_call": t["forward"] - fw, "minor_faults": {"forward_cold": cold_faults, "forward_warm": warm_faults,
                                                          **{k: v for k, v in faults.items() if k != "run"}},
        "threads": int(os.environ.get("DEFOCUS_THREADS") or runtime.cpu_count()), "peak_rss_mb": C.peak_rss_mb(),
        "t_first": T_FIRST, "t_last": time.time(),
    }


def _defocus_cmd() -> list[str]:
    script = Path(sys.executable).parent / "defocus"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "defocus_cli"]


def _wall(cmd: list[str], reps: int) -> list[float]:
    """Wall seconds of ``reps`` runs of ``cmd`` (this checkout's package first on the path)."""
    env = dict(os.environ, PYTHONPATH=str(C.ROOT))
    out = []
    for _ in range(reps):
        s = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True, env=env)
        out.append(time.perf_counter() - s)
    return out


def make_photo(path: Path, width: int, height: int) -> None:
    """Write the bench photo (:func:`_common.load_photo`) as an 8-bit PNG."""
    import cv2
    import numpy as np

    arr = C.load_photo(width, height)[0].permute(1, 2, 0).numpy()
    cv2.imwrite(str(path), np.ascontiguousarray((arr[..., ::-1] * 255 + 0.5).astype(np.uint8)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--child")
    ap.add_argument("--photo", help="input photo (default: the bench photo at --size)")
    ap.add_argument("--output")
    ap.add_argument("--engines", default="sftnet,ifan")
    ap.add_argument("--size", default="1680x1120", help="WxH of the generated photo")
    ap.add_argument("--reps", type=int, default=3, help="whole-command runs timed from outside (median)")
    ap.add_argument("--warm", type=int, default=2, help="warm forwards after the command (median)")
    ap.add_argument("--out", default="overhead")
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.photo, args.output, args.warm)))
        return

    tmp = Path(tempfile.mkdtemp(prefix="bench-overhead-"))
    photo = Path(args.photo) if args.photo else tmp / "photo.png"
    if not args.photo:
        w, h = (int(v) for v in args.size.lower().split("x"))
        make_photo(photo, w, h)
    out = tmp / "out.png"
    env = dict(os.environ, PYTHONPATH=str(C.ROOT))
    floor = C.median(_wall([sys.executable, "-c", "pass"], 3))
    rows, results = [], []
    for engine in [e for e in args.engines.split(",") if e]:
        spawn = time.time()
        proc = subprocess.run([sys.executable, __file__, "--child", engine, "--photo", str(photo), "--output",
                               str(out), "--warm", str(args.warm)], capture_output=True, text=True, env=env)
        reaped = time.time()
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
        if proc.returncode != 0 or not lines:
            print(f"# {engine}: child failed: {(proc.stderr.strip().splitlines() or ['?'])[-1]}", file=sys.stderr)
            continue
        r = json.loads(lines[-1])
        r["seconds"]["start"] = r["t_first"] - spawn
        r["seconds"]["exit"] = reaped - r["t_last"]
        walls = _wall([*_defocus_cmd(), "deblur", str(photo), "-o", str(out), "--overwrite", "--model", engine],
                      args.reps)
        r["wall_runs"] = walls
        r["wall"] = C.median(walls)
        fw = r["forward_warm"]
        r["overhead"] = r["wall"] - fw
        r["target_s"] = 1.25 * fw + 1.0
        r["meets_target"] = r["wall"] <= r["target_s"]
        results.append(r)
        s = r["seconds"]
        rows.append({"engine": engine, "backend": f"{r['backend']} {r['precision']}", "wall": r["wall"], "forward_warm": fw, "overhead": r["overhead"],
                     "target": r["target_s"], "ok": "yes" if r["meets_target"] else "no",
                     **{k: s.get(k) for k in PHASES}, "first_call": r["first_call"], "rss_mb": r["peak_rss_mb"]})
    print(f"# one {args.size} photo, `defocus deblur photo.png -o out.png`; `python -c pass` {floor:.2f} s; "
          f"threads {results[0]['threads'] if results else '?'}\n")
    print(C.table(rows, ["engine", "backend", "wall", "forward_warm", "overhead", "target", "ok", "first_call", "rss_mb"]))
    print()
    print(C.table(rows, ["engine", *PHASES]))
    path = C.write_json(args.out, {"machine": C.machine(), "size": args.size, "python_floor_s": floor,
                                   "results": results})
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
