"""Helpers shared by the bench scripts (not part of the package, not tests).

* engines with random weights (speed and memory do not depend on the values) or trained ones when present;
* a real photo resized to the bench size;
* MAC counting with forward hooks on Conv2d/ConvTranspose2d;
* timing that records how busy the *other* processes kept the CPU (the dev VM is shared), peak RSS;
* child processes (one configuration each, so peak RSS is clean) that print one JSON line;
* markdown tables and JSON results under ``bench/results/``.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
SHARED = Path(os.environ.get("DEFOCUS_SHARED", ROOT.parent / "shared"))
ENGINES = ("ifan", "defocusgan", "sftnet")
#: a DPDD test input (832x560, a downscaled 1680x1120 frame) resized back to the bench size
PHOTO = SHARED / "data" / "real_blurry" / "dpdd" / "input_1P0A2031.png"

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def read_rgb(path: str | Path) -> Any:
    """float32 ``(H, W, 3)`` RGB in [0, 1] on the 8-bit grid, the values ``cv2.imread(path)`` gives (16-bit
    files reduced ``v >> 8``, EXIF orientation applied), decoded by the package's one image reader
    (``defocus_cli.scoring.load_image``, protocol ``dpdd8``)."""
    import numpy as np

    from defocus_cli.scoring import load_image

    return load_image(Path(path), "dpdd8").pixels.astype(np.float32)


def read_rgb8(path: str | Path) -> Any:
    """uint8 ``(H, W, 3)`` RGB: :func:`read_rgb` as 8-bit samples."""
    import numpy as np

    return np.rint(read_rgb(path) * 255.0).astype(np.uint8)


def read_gray16(path: str | Path) -> Any:
    """float32 ``(H, W)``: the stored samples of a one-channel image (e.g. a 16-bit ground-truth map), in
    stored orientation, through the package's one image reader (``defocus_cli.io.read.read_samples``)."""
    import numpy as np

    from defocus_cli.io.read import read_samples

    return read_samples(path, upright=False)[0][..., 0].astype(np.float32)


def build_engine(name: str, trained: bool = False) -> tuple[Any, str]:
    """The engine ``name`` in eval mode on CPU and where its weights came from: ``"random"`` (seeded default
    init), or ``"<source>:<sha256 prefix>"`` for installed weights (registry, else ``weights/<name>.safetensors``)."""
    if trained:
        from defocus_cli.weights import load_model

        for kwargs in ({"name": name}, {"weights_file": ROOT / "weights" / f"{name}.safetensors"}):
            try:
                lm = load_model(**kwargs)  # type: ignore[arg-type]
                return lm.module.eval(), f"trained:{lm.sha256[:12]}"
            except Exception as e:  # noqa: BLE001 - fall back to random weights, say so
                err = f"{type(e).__name__}: {e}"
        print(f"# {name}: no trained weights ({err}); using random weights", file=sys.stderr)
    import torch

    from defocus_cli.registry import ARCHS, load_class

    torch.manual_seed(0)
    return load_class(ARCHS[name])().eval(), "random"


def load_photo(width: int, height: int) -> Any:
    """``(1, 3, height, width)`` float32 RGB in [0, 1]: the DPDD photo resized (area/cubic), or a smooth
    synthetic pattern with edges when ``../shared`` is absent."""
    import numpy as np
    import torch

    if PHOTO.is_file():
        import cv2

        rgb8 = read_rgb8(PHOTO)
        interp = cv2.INTER_CUBIC if width > rgb8.shape[1] else cv2.INTER_AREA
        rgb = cv2.resize(rgb8, (width, height), interpolation=interp)
        arr = np.clip(rgb.astype(np.float32) / 255.0, 0, 1)
    else:
        yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
        arr = np.stack(
            [0.5 + 0.4 * np.sin(xx / 37.0), 0.5 + 0.4 * np.cos(yy / 23.0), ((xx // 64 + yy // 64) % 2) * 0.8 + 0.1],
            axis=-1,
        )
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))[None].contiguous()


def count_macs(module: Any, height: int = 256, width: int = 256) -> float:
    """Multiply-accumulates of Conv2d/ConvTranspose2d layers for one ``height`` x ``width`` forward (fp32, CPU)."""
    import torch
    import torch.nn as nn

    total = 0.0

    def hook(mod: nn.Module, inp: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        nonlocal total
        k = mod.kernel_size[0] * mod.kernel_size[1]
        if isinstance(mod, nn.ConvTranspose2d):
            total += inp[0].numel() * (mod.out_channels // mod.groups) * k
        else:
            total += out.numel() * (mod.in_channels // mod.groups) * k

    convs = [m for m in module.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    handles = [m.register_forward_hook(hook) for m in convs]
    try:
        with torch.inference_mode():
            module(torch.rand(1, 3, height, width))
    finally:
        for h in handles:
            h.remove()
    return total


def count_flop_macs(module: Any, height: int = 256, width: int = 256) -> float:
    """MACs of every convolution/matmul torch dispatches for one forward (``FlopCounterMode`` / 2): unlike the
    module hooks this also sees functional convolutions (e.g. IFAN's per-iteration filter prediction)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    with torch.inference_mode(), FlopCounterMode(display=False) as fc:
        module(torch.rand(1, 3, height, width))
    return fc.get_total_flops() / 2.0


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, MB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _cpu_busy_s() -> float:
    """Busy CPU seconds of the whole machine (all cores) from /proc/stat."""
    with open("/proc/stat", encoding="ascii") as f:
        parts = f.readline().split()[1:]
    vals = [int(v) for v in parts]
    idle = vals[3] + (vals[4] if len(vals) > 4 else 0)
    return (sum(vals[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def timed(fn: Callable[[], Any]) -> tuple[float, float]:
    """Run ``fn`` once; return (wall seconds, cores used by *other* processes meanwhile)."""
    t0, b0, own0 = time.perf_counter(), _cpu_busy_s(), time.process_time()
    fn()
    wall = time.perf_counter() - t0
    others = (_cpu_busy_s() - b0) - (time.process_time() - own0)
    return wall, max(others, 0.0) / max(wall, 1e-9)


def median(xs: Sequence[float]) -> float:
    return float(statistics.median(xs)) if xs else float("nan")


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    import torch

    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    from defocus_cli.devices import cpu_has_native_bf16

    return {
        "cpu": model or platform.processor(),
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "native_bf16": cpu_has_native_bf16(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "python": platform.python_version(),
    }


def run_child(script: Path, args: Sequence[str], env: dict[str, str] | None = None, timeout: float = 3600) -> dict:
    """Run ``python script args`` in a fresh process; return the JSON object it prints on its last line."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    full_env.setdefault("PYTHONPATH", str(ROOT))
    proc = subprocess.run(
        [sys.executable, str(script), *args], capture_output=True, text=True, env=full_env, timeout=timeout
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        return {"error": (proc.stderr.strip().splitlines() or ["(no output)"])[-1], "rc": proc.returncode}
    return json.loads(lines[-1])


def table(rows: Sequence[dict[str, Any]], cols: Sequence[str]) -> str:
    """A markdown table of ``rows`` restricted to ``cols``."""

    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.3g}" if abs(v) < 100 else f"{v:.0f}"
        return "" if v is None else str(v)

    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    out += ["| " + " | ".join(fmt(r.get(c)) for c in cols) + " |" for r in rows]
    return "\n".join(out)


def write_json(name: str, obj: Any) -> Path:
    """Write ``obj`` to ``bench/results/<name>.json``."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(obj, indent=2, default=str) + "\n")
    return path


def psnr(a: Any, b: Any) -> float:
    """PSNR in dB between two tensors of any shape, values clipped to [0, 1]: the mean squared error over all
    elements through :func:`defocus_cli.metrics.psnr_from_mse` (the one PSNR formula; identical tensors give
    its cap, 100 dB)."""
    import torch

    from defocus_cli.metrics import psnr_from_mse

    return psnr_from_mse(float(torch.mean((a.clamp(0, 1).double() - b.clamp(0, 1).double()) ** 2)))
