"""Run an engine on a photo of any size: device placement, precision, tiling, out-of-memory retry, CPU tuning.

* :func:`tune_allocator` fixes glibc malloc's habit of mmap-ing and unmapping every large tensor (measured
  on the dev VM: page faults made torch CPU inference up to 7x slower and erratic). Called by
  :func:`run_engine` and at the start of heavy CLI commands; opt out with ``DEFOCUS_MALLOC_TUNING=0``.
* :func:`run_tiles` is the one engine loop: the whole image stays on the host as a numpy float32 array
  (:func:`defocus_cli.tiling.run_tiled` pads, tiles, blends), each engine output is clamped there when asked
  (the one clamp), and ``tile="auto"`` is sized and retried here. A torch network is called through its
  per-tile adapter (:class:`TorchTiles`: numpy tile → ``torch.from_numpy`` → device, channels_last, autocast
  for bf16/fp16, ``torch.inference_mode`` → numpy); a *host engine* (any callable that is not a
  ``torch.nn.Module`` and has ``host_engine = True``, e.g. the OpenVINO backend's compiled model) is called
  on the numpy tile itself, on the CPU, in the precision it was compiled for. :func:`run_engine` is the torch
  form for engines that are not image → image (defocus maps). ``tile="auto"`` picks the whole
  image when it fits the memory budget, else the largest tile that does; a CUDA out-of-memory halves an
  automatic tile and retries (logged). An explicit tile is never overridden: an out-of-memory with it
  raises :class:`DeviceError` suggesting a smaller ``--tile``.

Memory budget for ``tile="auto"``: the engine's working memory is estimated as
``bytes_per_pixel`` (engine attribute, fp32 peak bytes per input pixel; default
:data:`DEFAULT_BYTES_PER_PIXEL`) × pixels × a precision factor. On CUDA the budget is 80% of the free device
memory; on CPU it is ``min(70% of MemAvailable, DEFOCUS_MAX_MEMORY_GB (default 6))`` minus the host buffers
of the image itself and a fixed allowance for the runtime, so that peak RSS stays bounded (≤ 6 GB for a
24 MP photo with IFAN).

Importing this module does not import torch (the OpenVINO path never does); the torch-only functions import it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import gc
import logging
import math
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from defocus_cli.devices import device_type
from defocus_cli.errors import DeviceError, UsageError
from defocus_cli.tiling import TilePlan, best_tile_for_area, plan_tiles, round_up, run_tiled

if TYPE_CHECKING:  # pragma: no cover
    import torch

log = logging.getLogger(__name__)

#: fp32 peak working bytes per input pixel assumed for an engine that does not declare ``bytes_per_pixel``.
DEFAULT_BYTES_PER_PIXEL = 3000
#: Working memory relative to fp32 when computing in reduced precision (activations halve; weights, glue stay).
PRECISION_MEMORY_FACTOR = {"fp32": 1.0, "bf16": 0.6, "fp16": 0.6}
#: Default cap of the CPU memory budget (bytes); override with env ``DEFOCUS_MAX_MEMORY_GB``.
DEFAULT_CPU_CAP_BYTES = 6 * 1024**3
#: Resident memory outside the engine's activations (torch runtime, weights, code), bytes.
RUNTIME_ALLOWANCE_BYTES = 700 * 1024**2
#: Smallest core (tile minus context) the automatic tile size goes down to, pixels.
MIN_CORE = 64

# glibc mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_NEVER_TRIM = -1  # glibc stores the threshold as size_t: -1 disables trimming (mallopt(3))
_MAX_TRIM_MB = (2**31 - 1) // 2**20  # mallopt takes a C int

_allocator_state: bool | None = None
_threads_configured = False


@functools.lru_cache(maxsize=1)
def _libc() -> Any | None:
    """glibc through ctypes (loaded once), or None off glibc (macOS, Windows, musl)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.gnu_get_libc_version.restype = ctypes.c_char_p  # only glibc has it
        libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        libc.mallopt.restype = ctypes.c_int
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
        libc.malloc_trim.restype = ctypes.c_int
    except (OSError, AttributeError):
        return None
    return libc


def _trim_threshold() -> int:
    """``M_TRIM_THRESHOLD`` to set: env ``DEFOCUS_MALLOC_TRIM_MB`` (MiB, at most 2047), else never trim."""
    raw = os.environ.get("DEFOCUS_MALLOC_TRIM_MB", "").strip()
    if not raw:
        return _NEVER_TRIM
    try:
        mb = int(raw)
    except ValueError:
        log.warning("DEFOCUS_MALLOC_TRIM_MB=%r is not a whole number of MiB; not trimming", raw)
        return _NEVER_TRIM
    return min(max(mb, 0), _MAX_TRIM_MB) * 2**20


def tune_allocator() -> bool:
    """Tell glibc malloc to serve large blocks from the heap and keep freed memory (no mmap/munmap churn).

    Sets ``M_MMAP_MAX = 0`` (no per-block mmap: torch's multi-MB activations would otherwise be mapped and
    unmapped, and page-faulted in again, on every allocation) and ``M_TRIM_THRESHOLD = -1`` (freed memory stays
    in the heap: the next tile or photo reuses it instead of faulting it in again; on a 24 MP photo the 8 tiles
    otherwise re-fault ~3 GB each). The process keeps its peak heap until it exits or calls
    :func:`release_memory`. Env ``DEFOCUS_MALLOC_TRIM_MB=N`` trims above N MiB instead (at most 2047).
    Idempotent: the first call decides, later calls return the same answer. Affects allocations made after it.

    Returns:
        True if the allocator was tuned; False off glibc (macOS, Windows, musl), when mallopt fails, or
        when disabled with env ``DEFOCUS_MALLOC_TUNING=0``.
    """
    global _allocator_state
    if _allocator_state is not None:
        return _allocator_state
    _allocator_state = False
    if os.environ.get("DEFOCUS_MALLOC_TUNING", "1").strip().lower() in ("0", "false", "no", "off"):
        log.debug("malloc tuning disabled by DEFOCUS_MALLOC_TUNING")
        return False
    libc = _libc()
    if libc is None:
        log.debug("not glibc: malloc left as it is")
        return False
    trim = _trim_threshold()
    ok = bool(libc.mallopt(_M_MMAP_MAX, 0)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, trim))
    _allocator_state = ok
    log.debug("glibc %s malloc tuned (no mmap, trim threshold %s): %s", libc.gnu_get_libc_version().decode(),
              "never" if trim == _NEVER_TRIM else f"{trim // 2**20} MiB", ok)
    return ok


def release_memory() -> bool:
    """Hand the heap's free memory back to the system (glibc ``malloc_trim(0)``), e.g. when a long-running
    process that used :func:`tune_allocator` goes idle after a large photo. Returns True if memory was released;
    False off glibc or when there was nothing to release. The next large photo page-faults it in again."""
    libc = _libc()
    return bool(libc.malloc_trim(0)) if libc is not None else False


def allocator_tuned() -> bool | None:
    """State of :func:`tune_allocator`: None if never called, else its result."""
    return _allocator_state


def cpu_count() -> int:
    """CPU cores this process may run on (affinity-aware)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def configure_threads() -> int:
    """Use one intra-op thread per available core, once per process, unless the user chose.

    The user's choice wins: env ``DEFOCUS_THREADS=N`` sets N; ``OMP_NUM_THREADS``/``MKL_NUM_THREADS`` leave
    torch's own setting alone. Returns the thread count in effect.
    """
    import torch

    global _threads_configured
    if not _threads_configured:
        _threads_configured = True
        env = os.environ.get("DEFOCUS_THREADS", "").strip()
        if env.isdigit() and int(env) > 0:
            torch.set_num_threads(int(env))
        elif not (os.environ.get("OMP_NUM_THREADS") or os.environ.get("MKL_NUM_THREADS")):
            torch.set_num_threads(cpu_count())
    return torch.get_num_threads()


def mem_available_bytes() -> int | None:
    """``MemAvailable`` from /proc/meminfo in bytes (None where unknown)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def memory_budget(device: torch.device | str, image_pixels: int, channels: int = 3) -> int:
    """Bytes available to one forward pass of the engine on ``device`` (a ``torch.device``, or ``"cpu"`` for a
    host engine; see the module docstring)."""
    kind = device_type(device)
    if kind == "cuda":
        import torch

        free, _total = torch.cuda.mem_get_info(device)
        return int(free * 0.8)
    cap_env = os.environ.get("DEFOCUS_MAX_MEMORY_GB", "").strip()
    try:
        cap = int(float(cap_env) * 1024**3) if cap_env else DEFAULT_CPU_CAP_BYTES
    except ValueError:
        raise UsageError(f"DEFOCUS_MAX_MEMORY_GB must be a number of GB, got {cap_env!r}") from None
    avail = mem_available_bytes()
    if avail is not None:
        cap = min(cap, int(avail * 0.7))
    if kind == "mps":
        return cap // 2  # unified memory shared with the host copy; no reliable free-memory query
    # Host buffers of run_tiled: input (+ padded copy), float32 accumulator, weight map.
    host = image_pixels * (channels * 4 * 3 + 4)
    return max(cap - host - RUNTIME_ALLOWANCE_BYTES, 0)


def engine_bytes_per_pixel(module: Any, precision: str) -> float:
    """Estimated peak working bytes per input pixel of ``module`` at ``precision``."""
    traits = engine_traits(module)
    if traits.host_engine:  # measured for the precision it was compiled in
        return traits.bytes_per_pixel
    return traits.bytes_per_pixel * PRECISION_MEMORY_FACTOR.get(precision, 1.0)


def min_tile(overlap: int, multiple_of: int) -> int:
    """Smallest tile the automatic sizing uses: ``2 * overlap`` of context plus a core of :data:`MIN_CORE`."""
    return round_up(2 * overlap + max(MIN_CORE, multiple_of), multiple_of)


def auto_tile(
    module: Any, height: int, width: int, device: torch.device | str, precision: str, overlap: int, channels: int = 3
) -> int | tuple[int, int]:
    """Tile for ``tile="auto"``: 0 (whole image) when it fits the memory budget, else the ``(tile_h, tile_w)``
    (multiples of the engine's ``multiple_of``, at least :func:`min_tile`) whose working memory fits and that
    wastes the least work on overlaps (see :func:`defocus_cli.tiling.best_tile_for_area`)."""
    m = engine_traits(module).multiple_of
    hp, wp = round_up(height, m), round_up(width, m)
    budget = memory_budget(device, height * width, channels)
    bpp = engine_bytes_per_pixel(module, precision)
    max_pixels = budget / bpp
    if hp * wp <= max_pixels:
        log.info(
            "tile auto: whole image %dx%d fits (%.1f GB estimated of %.1f GB budget on %s)",
            width, height, hp * wp * bpp / 1e9, budget / 1e9, device,
        )
        return 0
    lo = min_tile(overlap, m)
    if max_pixels < lo * lo:
        t: int | tuple[int, int] = lo
    else:
        t = best_tile_for_area(height, width, max_pixels, overlap, m)
        t = t if t != (0, 0) else 0
    log.info(
        "tile auto: tiles of at most %s px for %dx%d on %s (budget %.1f GB, ~%.0f bytes/pixel at %s)",
        "x".join(map(str, t)) if isinstance(t, tuple) else t, width, height, device, budget / 1e9, bpp, precision,
    )
    return t


def parse_tile(value: str | int) -> str | int:
    """A ``--tile`` value: ``"auto"`` → ``"auto"``; ``"0"``/``0`` → 0 (whole image); ``"512"``/``512`` → 512.

    Raises:
        UsageError: anything else (negative, not a number).
    """
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 0:
            raise UsageError(f"tile must be auto, 0 or a positive number of pixels, got {value}", param="tile")
        return value
    v = str(value).strip().lower()
    if v == "auto":
        return "auto"
    if v.isdigit():
        return int(v)
    raise UsageError(f"tile must be auto, 0 or a positive number of pixels, got {value!r}", param="tile")


def parse_overlap(value: int | None) -> int | None:
    """An ``--overlap`` value: ``None`` (the engine's receptive field) or context pixels ≥ 0 per tile side.

    Raises:
        UsageError: a negative number.
    """
    if value is not None and int(value) < 0:
        raise UsageError(f"overlap must be >= 0, got {value}", param="overlap")
    return None if value is None else int(value)


def is_oom(exc: BaseException) -> bool:
    """True if ``exc`` is an out-of-memory error of any backend (CUDA, MPS, CPU allocator). Torch's own
    out-of-memory class is looked up only when torch is already imported (else no torch call can have raised)."""
    torch = sys.modules.get("torch")
    oom_cls = getattr(getattr(torch, "cuda", None), "OutOfMemoryError", None)
    if oom_cls is not None and isinstance(exc, oom_cls):
        return True
    if isinstance(exc, MemoryError):
        return True
    if isinstance(exc, RuntimeError):
        msg = str(exc).lower()
        return "out of memory" in msg or "can't allocate memory" in msg or "not enough memory" in msg
    return False


def _free_device_memory(device: torch.device | str) -> None:
    gc.collect()
    kind = device_type(device)
    if kind in ("cuda", "mps"):
        import torch

        if kind == "cuda":
            torch.cuda.empty_cache()
        elif hasattr(torch, "mps"):
            torch.mps.empty_cache()


def next_smaller_tile(
    current: int | tuple[int, int], height: int, width: int, overlap: int, multiple_of: int
) -> int | tuple[int, int] | None:
    """The tile to retry with after an out-of-memory at ``current`` (0 = whole image): each side halved,
    rounded down to ``multiple_of``, not below :func:`min_tile`. None when already at the minimum."""
    m = multiple_of
    lo = min_tile(overlap, m)
    if current == 0:
        side = max(round_up(height, m), round_up(width, m))
        return None if side <= lo else max((side // 2) // m * m, lo)
    if isinstance(current, tuple):
        th, tw = current
        if max(th, tw) <= lo:
            return None
        return (max((th // 2) // m * m, lo), max((tw // 2) // m * m, lo))
    if current <= lo:
        return None
    return max((current // 2) // m * m, lo)


def _tile_str(t: int | tuple[int, int]) -> str:
    return "x".join(map(str, t)) if isinstance(t, tuple) else str(t)


def is_torch_module(module: Any) -> bool:
    """True for a ``torch.nn.Module``; answered without importing torch (no module can be one before it is)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(module, torch.nn.Module)


def is_torch_tensor(x: Any) -> bool:
    """True for a ``torch.Tensor``; answered without importing torch."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


def is_host_engine(module: Any) -> bool:
    """True for an engine that is not a ``torch.nn.Module`` but a callable ``(N, C, h, w)`` float32 numpy array →
    ``(N, C_out, h, w)`` float32 numpy array with ``host_engine = True`` (its own runtime, e.g. OpenVINO): the
    runtime tiles for it but neither moves it nor wraps it in autocast."""
    return bool(getattr(module, "host_engine", False)) and not is_torch_module(module)


def prepare_module(module: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """Put ``module`` in eval mode on ``device`` with channels_last weights (in place; idempotent)."""
    import torch

    first = next(iter(module.parameters()), None)
    moved = first is not None and first.device != device and not (
        device.index is None and first.device.type == device.type
    )
    if moved or getattr(module, "_defocus_prepared_for", None) != str(device):
        module.eval()
        module.to(device=device, memory_format=torch.channels_last)
        module._defocus_prepared_for = str(device)  # type: ignore[assignment]
    return module


EngineFn = Callable[[Any, Any], Any]
"""``fn(module, tile) -> tile`` on torch tensors, called instead of ``module(tile)`` (e.g. a defocus map)."""


class TorchTiles:
    """A torch network as a tile function of :func:`defocus_cli.tiling.run_tiled`: the torch half of the runtime.

    ``tiles(t)``: ``t`` a ``(N, C, h, w)`` float32 numpy array (a view of the host image) → ``torch.from_numpy``
    (no copy) → ``device``, channels_last → ``module`` (or ``fn(module, tile)``) under ``torch.inference_mode``
    and autocast for bf16/fp16 → float32 CPU → ``(N, C_out, h, w)`` numpy array. The module is prepared
    (:func:`prepare_module`) and the CPU threads configured (:func:`configure_threads`) once, at construction.
    """

    def __init__(self, module: torch.nn.Module, device: torch.device, precision: str,
                 fn: EngineFn | None = None) -> None:
        if device_type(device) == "cpu":
            configure_threads()
        self.module = prepare_module(module, device)
        self.device = device
        self.precision = precision
        self.fn = fn

    def __call__(self, tile: np.ndarray) -> np.ndarray:
        """``(N, C, h, w)`` float32 array → ``(N, C_out, h, w)`` float32 array (see the class docstring)."""
        import torch

        from defocus_cli.devices import autocast_context

        if not tile.flags.writeable or min(tile.strides, default=0) < 0:  # what torch.from_numpy cannot share
            tile = np.array(tile)
        with torch.inference_mode():
            xt = torch.from_numpy(tile)
            xd = xt.to(self.device, non_blocking=True).contiguous(memory_format=torch.channels_last)
            if xd.data_ptr() == xt.data_ptr():  # the network's own copy: it may write into its input
                xd = xd.clone(memory_format=torch.channels_last)
            with autocast_context(self.device, self.precision):
                y = self.module(xd) if self.fn is None else self.fn(self.module, xd)
            return y.to(device="cpu", dtype=torch.float32).numpy()


@dataclass(frozen=True)
class EngineTraits:
    """What the runtime reads from an engine, read once (:func:`engine_traits`), never again by ``getattr``.

    Attributes:
        multiple_of: size multiple the engine needs; inputs are padded to it and tiles aligned to it (≥ 1).
        receptive_field: context pixels per tile side for near-seamless tiles (the default overlap, ≥ 0).
        safe_precisions: precisions the engine is validated in (always starts with ``"fp32"``).
        bytes_per_pixel: fp32 peak working bytes per input pixel (a host engine: at its own precision).
        host_engine: not a ``torch.nn.Module`` but a CPU callable with its own runtime (e.g. OpenVINO).
        precision: a host engine's compiled precision (``None`` for a torch network).
        tone_lock_sigma: the weights' tone-lock σ in pixels (0 = none).
    """

    multiple_of: int = 1
    receptive_field: int = 0
    safe_precisions: tuple[str, ...] = ("fp32",)
    bytes_per_pixel: float = DEFAULT_BYTES_PER_PIXEL
    host_engine: bool = False
    precision: str | None = None
    tone_lock_sigma: float = 0.0


def engine_traits(module: Any) -> EngineTraits:
    """The :class:`EngineTraits` of ``module`` (an engine ``nn.Module`` following the contract in
    :mod:`defocus_cli.archs`, or a host engine): the one place that reads engine attributes, with their
    defaults for engines that do not declare them."""
    safe = tuple(getattr(module, "safe_precisions", ("fp32",)) or ("fp32",))
    host = is_host_engine(module)
    return EngineTraits(
        multiple_of=max(1, int(getattr(module, "multiple_of", 1) or 1)),
        receptive_field=max(0, int(getattr(module, "receptive_field", 0) or 0)),
        safe_precisions=safe if "fp32" in safe else ("fp32", *safe),
        bytes_per_pixel=float(getattr(module, "bytes_per_pixel", DEFAULT_BYTES_PER_PIXEL) or DEFAULT_BYTES_PER_PIXEL),
        host_engine=host,
        precision=str(getattr(module, "precision", "fp32")) if host else None,
        tone_lock_sigma=float(getattr(module, "tone_lock_sigma", 0.0) or 0.0),
    )


@dataclass(frozen=True)
class TiledRun:
    """What :func:`run_tiles` did: the window size it ended with (0 = whole image; an automatic tile may have
    shrunk after out-of-memory), how many out-of-memory retries that took, and the plan of the last pass."""

    tile: int | tuple[int, int]
    oom_retries: int
    plan: TilePlan


def run_tiles(
    module: Any,
    x: np.ndarray,
    *,
    device: torch.device | str,
    precision: str,
    tile: int | str,
    overlap: int,
    traits: EngineTraits,
    fn: EngineFn | None = None,
    clamp: bool = False,
    blend: int | None = None,
    on_tile: Callable[[int, int], None] | None = None,
) -> tuple[np.ndarray, TiledRun]:
    """The one engine loop, arguments already validated (by :func:`run_engine` or
    :class:`defocus_cli.restorer.Restorer`): tiles of ``x`` through the engine (a torch network through
    :class:`TorchTiles`, a host engine as it is), results blended on the host, out-of-memory retry for
    ``tile="auto"``.

    Args:
        module: the engine (a torch network is moved to ``device``, eval, channels_last, in place; a host
            engine is only called, on numpy tiles).
        x: ``(N, C, H, W)`` float32 numpy array (any strides; an ``(H, W, C)`` photo seen as NCHW is
            channels_last already); stays on the host and is never written to.
        device, precision: resolved (precision ``"fp32"``/``"bf16"``/``"fp16"``; a host engine's own is ignored).
        tile: ``"auto"``, 0 (whole image) or a tile size in pixels (explicit: never changed).
        overlap: context pixels per tile side (≥ 0).
        traits: ``module``'s :class:`EngineTraits`.
        fn: ``fn(module, tile) -> tile`` on torch tensors instead of ``module(tile)`` (torch networks only).
        clamp: clamp every engine output to ``[0, 1]`` (images) before blending.
        blend, on_tile: see :func:`defocus_cli.tiling.run_tiled`.

    Returns:
        ``(N, C_out, H, W)`` float32 numpy array and a :class:`TiledRun`.

    Raises:
        DeviceError: out of memory with an explicit tile, or even at the smallest automatic tile.
    """
    tune_allocator()
    m, ov = traits.multiple_of, overlap
    _, c, h, w = x.shape
    explicit = not isinstance(tile, str)
    t: int | tuple[int, int] = int(tile) if explicit else 0
    engine: Callable[[np.ndarray], np.ndarray] = module if traits.host_engine else TorchTiles(
        module, device, precision, fn)  # type: ignore[assignment]
    if not explicit:
        t = auto_tile(module, h, w, device, precision, ov, c)

    def tile_fn(xt: np.ndarray) -> np.ndarray:
        y = engine(xt)
        if not clamp:
            return y
        # in place when the engine handed over an array of its own (OpenVINO's copy), else into a new one
        base = y if isinstance(y, np.ndarray) and y.flags.owndata else getattr(y, "base", None)
        own = (isinstance(y, np.ndarray) and isinstance(base, np.ndarray) and base.flags.owndata  # or a view of one
               and y.flags.writeable and y.dtype == np.float32)
        return np.clip(y, 0.0, 1.0, out=y if own and not np.may_share_memory(y, xt) else None)

    retries = 0
    while True:
        try:
            out = run_tiled(tile_fn, x, t, ov, m, blend=blend, on_tile=on_tile)
            break
        except Exception as e:  # noqa: BLE001 - only out-of-memory is handled, the rest re-raised
            if not is_oom(e):
                raise
            _free_device_memory(device)
            what = "the whole image" if t == 0 else f"tile {_tile_str(t)}"
            smaller = next_smaller_tile(t, h, w, ov, m)
            if explicit:
                hint = f"--tile {smaller}" if smaller else "--device cpu"
                raise DeviceError(
                    f"out of memory on {device} with {what} ({w}x{h} image, --tile {t}); "
                    f"try a smaller tile such as {hint}, or --tile auto"
                ) from None
            if smaller is None:
                raise DeviceError(
                    f"out of memory on {device} even with the smallest tile {_tile_str(t)} (overlap {ov}); "
                    "free device memory, lower --overlap, or use --device cpu"
                ) from None
            retries += 1
            log.warning("out of memory on %s with %s; retrying with tile %s", device, what, _tile_str(smaller))
            t = smaller
    return out, TiledRun(t, retries, plan_tiles(h, w, t, ov, m))


def run_engine(
    module: torch.nn.Module,
    x: torch.Tensor,
    *,
    device: torch.device | str,
    precision: str = "fp32",
    tile: int | str = "auto",
    overlap: int | None = None,
    fn: EngineFn | None = None,
    blend: int | None = None,
    info: dict[str, Any] | None = None,
    on_tile: Callable[[int, int], None] | None = None,
) -> torch.Tensor:
    """Run ``module`` over ``x`` tile by tile on ``device``: the general form for engines that are not
    image → image (defocus maps: ``fn``, other channel counts, no clamp). Deblurring goes through
    :class:`defocus_cli.restorer.Restorer`.

    Args:
        module: the engine (``nn.Module`` following the engine contract in :mod:`defocus_cli.archs`); it is
            moved to ``device`` in eval mode and channels_last (in place). Its traits (:func:`engine_traits`)
            steer the tiling.
        x: ``(N, C, H, W)`` float32 **CPU** tensor (images: RGB in [0, 1]). It stays on the host.
        device: where the tiles run (see :func:`defocus_cli.devices.resolve_device`).
        precision: ``"fp32"``, ``"bf16"`` or ``"fp16"`` (already resolved, see
            :func:`defocus_cli.devices.resolve_precision`); reduced precisions run under autocast.
        tile: ``"auto"`` (whole image if it fits the memory budget, else the largest tile that does;
            halved and retried on out-of-memory), ``0`` (whole image) or a tile size in pixels (explicit:
            never changed).
        overlap: context pixels per tile side; default ``module.receptive_field`` (0 if absent).
        fn: ``fn(module, tile) -> tile`` to call instead of ``module(tile)`` (e.g. ``defocus_map``).
        blend: raised-cosine band in pixels (see :func:`defocus_cli.tiling.run_tiled`); None = default.
        info: if given, filled with what was done: ``tile`` (largest window side; 0 = whole image),
            ``tile_hw`` ([h, w] of the windows), ``overlap``, ``tiles``, ``oom_retries``, ``precision``, ``device``.
        on_tile: progress callback ``(done, total)``.

    Returns:
        ``(N, C_out, H, W)`` float32 CPU tensor (``C_out`` is whatever ``fn`` returns).

    Raises:
        UsageError: bad ``tile``/``overlap`` or input tensor.
        DeviceError: out of memory with an explicit tile, or even at the smallest automatic tile.
    """
    import torch

    dev = torch.device(device)
    if x.dim() != 4 or x.device.type != "cpu" or not x.is_floating_point():
        raise UsageError(
            f"run_engine expects a float (N, C, H, W) CPU tensor, got {tuple(x.shape)} {x.dtype} on {x.device}"
        )
    traits = engine_traits(module)
    if precision not in PRECISION_MEMORY_FACTOR and not traits.host_engine:
        raise UsageError(f"precision must be fp32, bf16 or fp16, got {precision!r}")
    if traits.host_engine and dev.type != "cpu":
        raise DeviceError(f"{type(module).__name__} runs on the CPU only, not {dev}; use --device cpu")
    ov = parse_overlap(overlap)
    ov = traits.receptive_field if ov is None else ov
    out, run = run_tiles(module, x.detach().float().numpy(), device=dev, precision=precision, tile=parse_tile(tile),
                         overlap=ov, traits=traits, fn=fn, blend=blend, on_tile=on_tile)
    if info is not None:
        plan = run.plan
        info.update(
            tile=0 if plan.count == 1 else max(plan.tile_h, plan.tile_w),
            tile_hw=[plan.tile_h, plan.tile_w], overlap=ov, tiles=plan.count, oom_retries=run.oom_retries,
            precision=precision, device=str(dev),
        )
    return torch.from_numpy(out)
