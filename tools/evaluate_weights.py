#!/usr/bin/env python3
"""Score trained weights for a model card (the numbers and figures in ``weights/<name>.md``).

    python tools/evaluate_weights.py --arch ifan --weights weights/ifan.safetensors --json runs/eval/ifan.json \\
        [--lfdof DIR] [--synthetic PHOTOS] [--figure weights/figures/ifan_real.png --real IMAGES...]

A thin command line over :func:`defocus_cli.train.evaluate.evaluate` (it replaces the former
``python -m defocus_cli.train.evaluate``, same arguments): writes the JSON document to ``--json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path


def main(argv: Sequence[str] | None = None) -> int:
    from defocus_cli.archs.table import ARCH_SPECS

    p = argparse.ArgumentParser(description="Score trained weights for a model card.")
    p.add_argument("--arch", required=True, choices=tuple(ARCH_SPECS))
    p.add_argument("--weights", required=True)
    p.add_argument("--json", required=True)
    p.add_argument("--lfdof", default=None)
    p.add_argument("--synthetic", default=None, help="folder of sharp photos (held-out split is used)")
    p.add_argument("--syn-n", type=int, default=32)
    p.add_argument("--syn-patch", type=int, default=256)
    p.add_argument("--figure", default=None)
    p.add_argument("--real", nargs="*", default=[])
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    from defocus_cli.train.evaluate import evaluate

    res = evaluate(a.arch, a.weights, lfdof=a.lfdof, synthetic=a.synthetic, syn_n=a.syn_n, syn_patch=a.syn_patch,
                   figure=a.figure, real=a.real, threads=a.threads)
    Path(a.json).parent.mkdir(parents=True, exist_ok=True)
    Path(a.json).write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
