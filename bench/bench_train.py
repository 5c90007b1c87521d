"""Training throughput of SFT-net on this CPU (issue 12): the data generator and the trainer, measured apart.

* **generator**: training samples per second that the synthetic dual-pixel source delivers, per mode:
  ``fresh`` (every crop from its own synthesised scene), ``grid2`` (one 256 px scene cut into four 128 px
  patches, the previous campaign's setting) and ``pool`` (a :class:`~defocus_cli.data.replay.ScenePool` of 64
  scenes of 256 px, half a new scene per step: the current campaign's setting);
* **trainer**: samples per second of one SFT-net optimiser step (forward, loss, backward, AdamW) on a batch
  of 8 patches of 128 px, float32 and with bf16 autocast (fast only where the CPU has native bf16:
  AVX512_BF16/AMX, see ``lscpu``).

Configurations are interleaved round by round (``--rounds``) and each is reported as the median over rounds,
so a busy neighbour slows all of them alike; ``others`` is the CPU the rest of the machine used meanwhile.

    python bench/bench_train.py                  # -> bench/results/train_throughput.json
    python bench/bench_train.py --rounds 5 --threads 2
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path
from typing import Any

from _common import SHARED, timed, write_json  # noqa: I001 - bench/ is on sys.path when run as a script

SYNTH = {"coc_px": 20, "in_focus_prob": 0.1, "min_blur_fraction": 0.3, "noise_scale": 0.5, "highlight_prob": 0.3}


def _source(mode: str) -> Any:
    from defocus_cli.train import TrainOptions
    from defocus_cli.train.sftnet import _Source

    extra: dict[str, Any] = dict(SYNTH)
    extra.update({"fresh": {}, "grid2": {"grid": 2}, "pool": {"pool": 64, "pool_refresh": 0.5}}[mode])
    opts = TrainOptions(model="sftnet", data=SHARED / "data" / "sharp", synthetic=True, patch=128, batch=8,
                        extra=extra)
    return _Source(opts)


def main() -> None:
    import torch
    import torch.nn.functional as F

    from defocus_cli.archs.sftnet import SFTNet
    from defocus_cli.devices import autocast_context, cpu_has_native_bf16

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=8, help="batches per configuration and round")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="train_throughput")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    batch, patch = 8, 128

    sources = {m: _source(m) for m in ("fresh", "grid2", "pool")}
    sources["pool"].batch(0, patch, batch)  # fill the pool once (64 scenes), as a run does at its start
    net = SFTNet()
    opt = torch.optim.AdamW(net.parameters(), 1e-4)
    x, y = torch.rand(batch, 3, patch, patch), torch.rand(batch, 3, patch, patch)

    def train_step(bf16: bool) -> None:
        with autocast_context("cpu", "bf16" if bf16 else "fp32"):
            out = net.restore(x, net.map_lowres(x)).float()
            loss = F.l1_loss(out, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    jobs = {f"generator {m}": (lambda s, m=m: sources[m].batch(s, patch, batch)) for m in sources}
    jobs["trainer fp32"] = lambda s: train_step(False)
    jobs["trainer bf16"] = lambda s: train_step(True)
    for f in jobs.values():  # warm-up (oneDNN primitives, photo cache)
        f(10**6)
    rates: dict[str, list[float]] = {k: [] for k in jobs}
    busy: list[float] = []
    step = 1
    for _ in range(args.rounds):
        for name, f in jobs.items():
            first = step

            def run(f=f, first=first) -> None:  # noqa: ANN001
                for s in range(first, first + args.steps):
                    f(s)

            dt, others = timed(run)
            step += args.steps
            busy.append(others)
            rates[name].append(batch * args.steps / dt)
    rows = {k: round(statistics.median(v), 2) for k, v in rates.items()}
    print(f"| {'configuration':<20} | samples/s |")
    print(f"|{'-' * 22}|-----------|")
    for k, v in rows.items():
        print(f"| {k:<20} | {v:9.2f} |")
    pairs = {"pool vs grid2": rows["generator pool"] / rows["generator grid2"],
             "bf16 vs fp32": rows["trainer bf16"] / rows["trainer fp32"]}
    for k, v in pairs.items():
        print(f"{k}: {v:.2f}x")
    print(f"native bf16: {cpu_has_native_bf16()}; threads {args.threads}; others (median cores) "
          f"{statistics.median(busy):.2f}")
    write_json(args.out, {"samples_per_s": rows, "ratios": {k: round(v, 3) for k, v in pairs.items()},
                          "native_bf16": cpu_has_native_bf16(), "threads": args.threads, "rounds": args.rounds,
                          "steps": args.steps, "batch": batch, "patch": patch,
                          "others_median": round(statistics.median(busy), 2), "synth": SYNTH,
                          "data": str(Path(SHARED / "data" / "sharp"))})


if __name__ == "__main__":
    main()
