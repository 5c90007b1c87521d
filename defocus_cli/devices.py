"""Device and precision resolution: ``--device auto|cpu|cuda|cuda:N|mps`` and ``--precision auto|fp32|fp16|bf16``.

Policy (documented in cli.md terms):

* ``auto`` device: CUDA if available, then Apple MPS, then CPU; the choice is logged at INFO.
  An explicit device that is not available raises :class:`DeviceError` (exit 4); we never fall back
  silently from an explicit request.
* ``auto`` precision: fp16 on CUDA when the engine lists ``"fp16"`` in ``safe_precisions`` (else bf16 when
  safe and supported by the GPU, else fp32); bf16 on a CPU with **native** bf16 dot products
  (AVX512_BF16 or AMX on x86, BF16 on Arm) when the engine lists it as safe; fp32 everywhere else
  (including MPS, which we have not validated).
* An explicit precision the engine does not list as safe, or one the device cannot run (fp16 on CPU),
  is refused with :class:`UsageError` (exit 2) naming the precisions that would work. We chose refusing
  over warning-and-ignoring: a user who types ``--precision fp16`` should never silently get fp32 numbers
  in a JSON report that claims fp16, and an unsafe engine in fp16 produces visibly broken output.
  An explicit bf16 on a CPU without native bf16 is allowed (it is correct, only slow) with a warning.

Importing this module does not import torch: :func:`cpu_has_native_bf16` reads ``/proc/cpuinfo`` and
:func:`surely_cpu` tells, from the files a GPU runtime needs, when ``--device auto`` can only be the CPU (the
OpenVINO path then never loads torch); the functions that need torch import it.
"""

from __future__ import annotations

import contextlib
import functools
import glob
import importlib.util
import logging
import platform
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from defocus_cli.errors import DeviceError, UsageError

if TYPE_CHECKING:  # pragma: no cover
    import torch

log = logging.getLogger(__name__)

PRECISIONS: tuple[str, ...] = ("fp32", "bf16", "fp16")


def __getattr__(name: str) -> Any:
    """``DTYPES`` (precision → ``torch.dtype``), made on first use so that importing this module loads no torch."""
    if name == "DTYPES":
        import torch

        return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def device_type(device: Any) -> str:
    """``"cpu"``, ``"cuda"``, ``"mps"`` of a ``torch.device`` or a device string (``"cuda:1"`` → ``"cuda"``)."""
    kind = getattr(device, "type", None)
    return str(kind) if kind is not None else str(device).split(":", 1)[0].strip().lower()


#: Files present wherever a GPU runtime torch could use is (NVIDIA driver, WSL's GPU bridge, ROCm).
GPU_NODES: tuple[str, ...] = ("/dev/nvidia*", "/proc/driver/nvidia", "/dev/dxg", "/dev/kfd")


def _torch_gpu_builds() -> tuple[str, ...] | None:
    """The GPU runtimes the installed torch was built for, read from its ``version.py`` without importing it
    (``("cuda",)``, ``()`` for a CPU build); ``None`` when that cannot be told (then torch must be asked)."""
    try:
        spec = importlib.util.find_spec("torch")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return ()  # no torch: no GPU device can be used either
    try:
        text = (Path(next(iter(spec.submodule_search_locations))) / "version.py").read_text(encoding="utf-8")
    except (OSError, StopIteration):
        return None
    builds = []
    for key in ("cuda", "hip"):
        m = re.search(rf"^{key}\s*(?::[^=\n]*)?=\s*(.+?)\s*$", text, re.M)
        if m is None:
            return None
        if m.group(1) != "None":
            builds.append(key)
    return tuple(builds)


def surely_cpu(request: str) -> bool:
    """True when ``--device request`` resolves to the CPU, decided without importing torch: ``"cpu"``, or
    ``"auto"`` on a machine where no GPU can be used (not macOS, and torch built without CUDA/ROCm or no GPU
    driver files, :data:`GPU_NODES`). False means "ask torch" (:func:`resolve_device`), not "not the CPU"."""
    req = (request or "auto").strip().lower()
    if req == "cpu":
        return True
    if req != "auto" or sys.platform == "darwin" or "torch" in sys.modules:
        return False
    builds = _torch_gpu_builds()
    if builds is None:
        return False
    return not builds or not any(glob.glob(pattern) for pattern in GPU_NODES)



def autocast_context(device: torch.device | str, precision: str) -> contextlib.AbstractContextManager[Any]:
    """Autocast to ``precision`` (``"bf16"``, ``"fp16"``) on ``device``; a no-op context for ``"fp32"``. The one
    autocast helper: the inference runtime and the trainers (``--bf16``) both enter it."""
    import torch

    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=torch.device(device).type, dtype=dtype)


_DEVICE_RE = re.compile(r"^(auto|cpu|mps|cuda)(?::(\d+))?$")


def _mps_available() -> bool:
    import torch

    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def resolve_device(request: str = "auto") -> torch.device:
    """Turn a ``--device`` value into a :class:`torch.device`.

    Args:
        request: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"mps"`` (case-insensitive).

    Raises:
        UsageError: the value is not one of the forms above.
        DeviceError: the requested device is not available on this machine (exit 4).
    """
    import torch

    req = (request or "auto").strip().lower()
    mt = _DEVICE_RE.match(req)
    if mt is None or (mt.group(2) is not None and mt.group(1) != "cuda"):
        raise UsageError(f"device must be auto, cpu, cuda, cuda:N or mps, got {request!r}", param="device")
    kind, index = mt.group(1), mt.group(2)
    if kind == "auto":
        if torch.cuda.is_available():
            dev = torch.device("cuda", torch.cuda.current_device())
            log.info("device auto: using %s (%s)", dev, torch.cuda.get_device_name(dev))
        elif _mps_available():
            dev = torch.device("mps")
            log.info("device auto: using mps (Apple GPU)")
        else:
            dev = torch.device("cpu")
            log.info("device auto: no CUDA or MPS device found, using cpu")
        return dev
    if kind == "cpu":
        return torch.device("cpu")
    if kind == "mps":
        if not _mps_available():
            raise DeviceError(
                "--device mps requested but Apple MPS is not available in this torch build/machine; "
                "use --device cpu or --device auto"
            )
        return torch.device("mps")
    # cuda / cuda:N
    if not torch.cuda.is_available():
        build = "torch was built without CUDA" if torch.version.cuda is None else "no CUDA GPU is visible"
        raise DeviceError(
            f"--device {request} requested but CUDA is not available ({build}, torch {torch.__version__}); "
            "use --device cpu or --device auto"
        )
    n = torch.cuda.device_count()
    i = int(index) if index is not None else torch.cuda.current_device()
    if i >= n:
        raise DeviceError(f"--device {request} requested but only {n} CUDA device(s) exist (cuda:0..cuda:{n - 1})")
    return torch.device("cuda", i)


@functools.lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    """True when this CPU computes bf16 dot products natively (x86 AVX512_BF16/AMX-BF16, Arm BF16).

    Without native support oneDNN emulates bf16 and it is slower than fp32, so ``auto`` keeps fp32.
    Reads ``/proc/cpuinfo`` on Linux; elsewhere returns False (conservative).
    """
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return False
    flags: set[str] = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):
            flags.update(value.split())
    machine = platform.machine().lower()
    if machine in ("x86_64", "amd64", "i686", "i386"):
        return bool({"avx512_bf16", "amx_bf16"} & flags)
    return bool({"bf16", "asimdbf16"} & flags)


def _safe(module: Any) -> tuple[str, ...]:
    from defocus_cli.runtime import engine_traits

    return engine_traits(module).safe_precisions


def _engine_name(module: Any) -> str:
    return type(module).__name__


def resolve_precision(request: str, module: Any, device: torch.device | str) -> str:
    """Pick the compute precision for ``module`` on ``device``.

    Args:
        request: ``"auto"``, ``"fp32"``, ``"fp16"`` or ``"bf16"`` (case-insensitive).
        module: the engine; its ``safe_precisions`` attribute (default ``("fp32",)``) lists what it was
            validated in.
        device: the device it will run on.

    Returns:
        One of ``"fp32"``, ``"bf16"``, ``"fp16"``.

    Raises:
        UsageError: unknown value; an explicit precision the engine is not validated in; fp16 on CPU;
            bf16 on a CUDA GPU without bf16 support.
    """
    import torch

    dev = torch.device(device)
    req = (request or "auto").strip().lower()
    if req not in ("auto", *PRECISIONS):
        raise UsageError(f"precision must be auto, fp32, fp16 or bf16, got {request!r}", param="precision")
    safe = _safe(module)
    name = _engine_name(module)
    cuda_bf16 = dev.type == "cuda" and torch.cuda.is_available() and torch.cuda.is_bf16_supported()

    if req == "auto":
        if dev.type == "cuda":
            choice = "fp16" if "fp16" in safe else ("bf16" if "bf16" in safe and cuda_bf16 else "fp32")
        elif dev.type == "cpu":
            choice = "bf16" if ("bf16" in safe and cpu_has_native_bf16()) else "fp32"
        else:  # mps and anything else: not validated in reduced precision
            choice = "fp32"
        log.info("precision auto: %s for %s on %s (engine safe in: %s)", choice, name, dev, ", ".join(safe))
        return choice

    if req not in safe:
        raise UsageError(
            f"--precision {req} is not validated for engine {name} (safe: {', '.join(safe)}); "
            "use --precision auto or one of those"
        )
    if req == "fp16" and dev.type == "cpu":
        raise UsageError("--precision fp16 needs a GPU (cuda or mps); on cpu use --precision bf16, fp32 or auto")
    if req == "bf16" and dev.type == "cuda" and not cuda_bf16:
        raise UsageError(f"--precision bf16 is not supported by {dev}; use --precision fp16, fp32 or auto")
    if req == "bf16" and dev.type == "cpu" and not cpu_has_native_bf16():
        log.warning("this CPU has no native bf16 (AVX512_BF16/AMX); bf16 will be emulated and slower than fp32")
    return req
