"""The engine boundary: a network (or host engine) plus its run options, validated once, called on tensors.

After spandrel's ``ImageModelDescriptor``: :func:`defocus_cli.api.load_restorer` (or :meth:`Restorer.create`
for an engine already in hand) resolves the device, the precision, the tile size and the overlap **once**
into a frozen :class:`RestorerOptions`, reads the engine's traits once (:func:`defocus_cli.runtime.engine_traits`)
and logs what it chose (including the non-native-bf16 warning) once. Calling the :class:`Restorer` on a
``(N, 3, H, W)`` float32 numpy array (or a CPU torch tensor, for torch callers) then

1. checks it (:class:`~defocus_cli.errors.ShapeError` naming expected and actual),
2. pads it to the engine's ``multiple_of`` (:func:`defocus_cli.tiling.pad_to_multiple`, the one padding),
3. runs it tile by tile (:func:`defocus_cli.runtime.run_tiles`: a torch network through its per-tile adapter
   under ``torch.inference_mode`` and autocast, a host engine on the numpy tiles; out-of-memory retry for
   ``tile="auto"``),
4. clamps every engine output to ``[0, 1]`` before blending (the one clamp; a blend of values in ``[0, 1]``
   stays in it) and crops back to ``H × W``,

and :meth:`Restorer.run` returns a frozen :class:`RunStats` with the result instead of filling a dict.
Importing this module, and running a host engine, imports no torch.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from defocus_cli import runtime
from defocus_cli.errors import DeviceError, ShapeError

if TYPE_CHECKING:  # pragma: no cover
    import torch

log = logging.getLogger(__name__)

__all__ = ["Restorer", "RestorerOptions", "RunStats"]


@dataclass(frozen=True)
class RestorerOptions:
    """Everything a :class:`Restorer` runs with, resolved and validated by :meth:`Restorer.create`.

    Attributes:
        device: the resolved device the tiles run on: a ``torch.device`` for a torch network, ``"cpu"`` for a
            host engine (which never needs torch).
        precision: the resolved compute precision: ``"fp32"``, ``"bf16"`` or ``"fp16"`` for a torch network;
            a host engine's own (e.g. OpenVINO ``"int8"``).
        tile: ``"auto"``, 0 (whole image) or the tile size in pixels.
        overlap: context pixels per tile side (≥ 0; default the engine's receptive field).
        traits: the engine's :class:`~defocus_cli.runtime.EngineTraits` (multiple, receptive field, ...).
        name: the model's name (registry name, or the engine's class name).
        weights_sha256: sha256 of the weights file, ``None`` for an engine built in memory.
        backend: ``"torch"`` or ``"openvino"``.
    """

    device: torch.device | str
    precision: str
    tile: int | str
    overlap: int
    traits: runtime.EngineTraits
    name: str
    weights_sha256: str | None = None
    backend: str = "torch"


@dataclass(frozen=True)
class RunStats:
    """What one :meth:`Restorer.run` (or :func:`defocus_cli.api.restore_array`) did.

    Attributes:
        tile: largest window side used, 0 = the whole image in one pass.
        tile_hw: ``(h, w)`` of the windows (the padded image when whole).
        tiles: windows per pass.
        overlap: context pixels per tile side.
        device: the device the tiles ran on (``"cpu"``, ``"cuda:0"``).
        precision: the precision they ran in.
        oom_retries: automatic tiles halved after out-of-memory (the fallbacks taken).
        seconds: wall time of the engine passes.
        passes: engine passes (4 with ``--tta``).
        tone_lock_sigma: σ of the tone lock applied afterwards, ``None`` when none was.
    """

    tile: int
    tile_hw: tuple[int, int]
    tiles: int
    overlap: int
    device: str
    precision: str
    oom_retries: int = 0
    seconds: float = 0.0
    passes: int = 1
    tone_lock_sigma: float | None = None


class Restorer:
    """A deblurring engine with its options: ``restorer(x)`` maps ``(N, 3, H, W)`` RGB in ``[0, 1]`` to the
    same shape in ``[0, 1]``. Build it with :meth:`create` (or :func:`defocus_cli.api.load_restorer`).

    Attributes:
        engine: the torch network or host engine (e.g. :class:`defocus_cli.backends.openvino.OpenVINOEngine`).
        options: the frozen :class:`RestorerOptions`.
    """

    def __init__(self, engine: Any, options: RestorerOptions) -> None:
        self.engine = engine
        self.options = options

    @classmethod
    def create(
        cls,
        engine: Any,
        *,
        device: str | torch.device = "auto",
        precision: str = "auto",
        tile: str | int = "auto",
        overlap: int | None = None,
        name: str | None = None,
        weights_sha256: str | None = None,
        backend: str = "torch",
    ) -> Restorer:
        """Validate and resolve every option once.

        Args:
            engine: an engine ``nn.Module`` (contract in :mod:`defocus_cli.archs`) or a host engine.
            device: a ``torch.device`` or a request (``"auto"``, ``"cpu"``, ``"cuda:N"``, ``"mps"``).
            precision: ``"auto"``, ``"fp32"``, ``"bf16"`` or ``"fp16"``, resolved for the engine and device
                (:func:`defocus_cli.devices.resolve_precision`); ignored by a host engine, which runs in the
                precision it was compiled for.
            tile: ``"auto"``, 0 (whole image) or a tile size in pixels (an ``int`` or its text).
            overlap: context pixels per tile side, ``None`` = the engine's receptive field.
            name, weights_sha256, backend: recorded in the options (``--json``).

        Raises:
            UsageError: a bad tile, overlap, device string or precision.
            DeviceError: the device is not available, or a host engine asked to run off the CPU.
        """
        from defocus_cli import devices

        t, ov = runtime.parse_tile(tile), runtime.parse_overlap(overlap)
        traits = runtime.engine_traits(engine)
        dev: Any = device
        if isinstance(device, str):
            dev = "cpu" if traits.host_engine and devices.surely_cpu(device) else devices.resolve_device(device)
        if traits.host_engine:
            if devices.device_type(dev) != "cpu":
                raise DeviceError(f"{type(engine).__name__} runs on the CPU only, not {dev}; use --device cpu")
            dev = "cpu"
            prec = traits.precision or "fp32"
        else:
            prec = devices.resolve_precision(precision, engine, dev)
        options = RestorerOptions(
            device=dev, precision=prec, tile=t, overlap=traits.receptive_field if ov is None else ov,
            traits=traits, name=name or type(engine).__name__, weights_sha256=weights_sha256, backend=backend,
        )
        log.debug("restorer: %s", options)
        return cls(engine, options)

    def __call__(self, x: Any) -> Any:
        """``(N, 3, H, W)`` float array (or CPU tensor), RGB in ``[0, 1]`` → ``(N, 3, H, W)`` float32 array (or CPU
        tensor) in ``[0, 1]``."""
        return self.run(x)[0]

    def run(self, x: Any, *, on_tile: Callable[[int, int], None] | None = None) -> tuple[Any, RunStats]:
        """Restore ``x`` and say how.

        Args:
            x: ``(N, 3, H, W)`` float numpy array, RGB in ``[0, 1]``, any ``H, W ≥ 1`` and any strides (an
                ``(H, W, 3)`` photo seen as NCHW); or the same as a float CPU torch tensor. It stays on the host
                and is never written to; only tiles go to the device.
            on_tile: progress callback ``(done, total)`` after each tile.

        Returns:
            ``(N, 3, H, W)`` float32 in ``[0, 1]`` of the input's kind (numpy array, or CPU tensor for a tensor)
            and the :class:`RunStats` of the run.

        Raises:
            ShapeError: ``x`` is not a float ``(N, 3, H, W)`` array or CPU tensor (before any work).
            UsageError: the tile leaves no core inside the overlap for this image size.
            DeviceError: out of memory with an explicit tile, or even at the smallest automatic tile.
        """
        tensor = runtime.is_torch_tensor(x)
        if tensor:
            if x.dim() != 4 or x.shape[1] != 3 or not x.is_floating_point() or x.device.type != "cpu" or 0 in x.shape:
                raise ShapeError("(N, 3, H, W) float tensor on the CPU", f"{tuple(x.shape)} {x.dtype} on {x.device}")
            arr = x.detach().float().numpy()
        else:
            if (not isinstance(x, np.ndarray) or x.ndim != 4 or x.shape[1] != 3 or x.dtype.kind != "f"
                    or 0 in x.shape):
                got = f"{tuple(x.shape)} {x.dtype}" if isinstance(x, np.ndarray) else type(x).__name__
                raise ShapeError("(N, 3, H, W) float numpy array", got)
            arr = x if x.dtype == np.float32 else x.astype(np.float32)
        o = self.options
        start = time.perf_counter()
        out, run = runtime.run_tiles(self.engine, arr, device=o.device, precision=o.precision, tile=o.tile,
                                     overlap=o.overlap, traits=o.traits, clamp=True, on_tile=on_tile)
        plan = run.plan
        stats = RunStats(
            tile=0 if plan.count == 1 else max(plan.tile_h, plan.tile_w), tile_hw=(plan.tile_h, plan.tile_w),
            tiles=plan.count, overlap=o.overlap, device=str(o.device), precision=o.precision,
            oom_retries=run.oom_retries, seconds=time.perf_counter() - start,
        )
        if tensor:
            import torch

            return torch.from_numpy(out), stats
        return out, stats
