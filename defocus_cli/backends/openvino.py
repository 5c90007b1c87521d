"""The OpenVINO CPU backend: a registered model's exported IR as a host engine for :mod:`defocus_cli.runtime`.

No torch here: the IR, its pins, the sha256 of the weights it was exported from and the network's traits
(:data:`TRAIT_KEYS`) all come from the model's registry row, so ``defocus deblur`` on this backend never
imports torch (``tests/test_openvino.py`` pins the row's traits to the torch network's).

The IR is exported from our own PyTorch network and weights by ``tools/export_openvino.py`` (dynamic H×W,
an fp32 IR and an NNCF int8 IR) and shipped in ``weights/`` as ``<name>.openvino-<fp32|int8>.xml/.bin``. The
model's registry row (:attr:`defocus_cli.registry.ModelSpec.openvino`) pins both files by sha256 and names
the sha256 of the safetensors file they were exported from; the IR's own ``rt_info`` carries the same
``defocus/source_sha256``. :func:`load_engine` refuses an IR whose source is not the loaded weights.

:class:`OpenVINOEngine` follows the runtime's host-engine contract: ``engine(x)`` with ``x`` a float32 numpy
array ``(N, 3, h, w)``, RGB in [0, 1], ``h`` and ``w`` multiples of :attr:`~OpenVINOEngine.multiple_of`
(the runtime pads to it, as for the torch network) → float32 numpy array of the same shape in [0, 1]
(the network's own clamp is inside the IR). Tiling, padding, ``--tta``, the tone lock and ``--strength`` are
applied by the same code as on the torch path (:class:`defocus_cli.restorer.Restorer`,
:func:`defocus_cli.api.restore_array`).

Only this module imports ``openvino``, and only inside functions.
"""

from __future__ import annotations

import functools
import logging
import os
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from defocus_cli.backends import OPENVINO_PRECISIONS, ir_problem, missing_openvino_error
from defocus_cli.errors import UsageError, WeightsError
from defocus_cli.registry import ModelSpec

if TYPE_CHECKING:  # pragma: no cover
    from defocus_cli.weights import LoadedModel

log = logging.getLogger(__name__)

RT_INFO_SOURCE = ["defocus", "source_sha256"]
"""``rt_info`` path of the sha256 of the safetensors file an IR was exported from."""
HINTS = {"fp32": "f32", "bf16": "bf16", "int8": "f32"}
"""OpenVINO ``INFERENCE_PRECISION_HINT`` per backend precision (int8: the layers left unquantised run in f32)."""

TRAIT_KEYS = ("multiple_of", "receptive_field", "bytes_per_pixel", "tone_lock_sigma")
"""The network's traits an ``openvino`` registry row carries under ``"traits"`` (written by
``tools/register_weights.py`` from the arch class and the weights' metadata): what
:func:`defocus_cli.runtime.engine_traits` reads from the torch network, without building it."""

STATIC_SHAPES = 2
"""Input shapes an engine compiles the IR for (static shapes); further shapes run the dynamic-shape compile.
Measured on sftnet, 1680x1120, 1 thread, bf16: static = compile 0.41 s + first call 0.65 s, then 0.51 s a call;
dynamic = compile 0.35 s + first call 1.0 s, then 0.62 s a call (the same outputs: 0 of 1.9 M 8-bit values
differ in bf16). A photo's tiles all share one window size, so one photo (any ``--tta``) is one shape."""
MAX_COMPILED = 8
"""Compiled models kept for the life of the process (per file, precision, threads and shape), least recent out."""

_COMPILED: OrderedDict[tuple[str, str, int, tuple[int, ...] | None], Any] = OrderedDict()
_MODELS: dict[str, tuple[Any, str]] = {}


def ir_file_for(precision: str) -> str:
    """The IR (``"fp32"`` or ``"int8"``) a backend precision runs: bf16 is the fp32 IR with a bf16 hint."""
    return "int8" if precision == "int8" else "fp32"


def ir_filenames(name: str, ir: str) -> tuple[str, str]:
    """``(xml, bin)`` file names of model ``name``'s ``ir`` (``"fp32"``/``"int8"``) IR in ``weights/``."""
    return f"{name}.openvino-{ir}.xml", f"{name}.openvino-{ir}.bin"


def _threads() -> int:
    from defocus_cli.runtime import cpu_count

    env = os.environ.get("DEFOCUS_THREADS", "").strip() or os.environ.get("OMP_NUM_THREADS", "").strip()
    return int(env) if env.isdigit() and int(env) > 0 else cpu_count()


@dataclass
class OpenVINOEngine:
    """An IR, callable like an engine (see the module docstring for shapes and ranges).

    Attributes:
        compiled: an ``openvino.CompiledModel`` run for every input shape, or ``None``: then ``model`` is compiled
            for each of the first :data:`STATIC_SHAPES` input shapes (static shapes) and, for any other, once with
            dynamic shapes (:func:`compile_ir`, cached for the process).
        precision: ``"fp32"``, ``"bf16"`` or ``"int8"``.
        multiple_of, receptive_field: the architecture's (the torch network's attributes).
        bytes_per_pixel: peak working bytes per input pixel at this precision (registry, measured by
            ``bench/bench_backends.py``; the torch network's when unmeasured); ``tile="auto"`` reads it.
        tone_lock_sigma: the weights' tone-lock σ (px), 0 for none; applied after the engine by the caller.
        source_sha256: sha256 of the safetensors file the IR was exported from.
        model: the ``openvino.Model`` read from the IR (dynamic N, H, W), when ``compiled`` is ``None``.
        model_key: the IR file ``model`` was read from (the compile cache's key).
        threads: CPU inference threads (0 = ``DEFOCUS_THREADS``, else ``OMP_NUM_THREADS``, else every core).
    """

    compiled: Any
    precision: str
    multiple_of: int
    receptive_field: int
    bytes_per_pixel: float
    tone_lock_sigma: float
    source_sha256: str
    host_engine: bool = True
    safe_precisions: tuple[str, ...] = OPENVINO_PRECISIONS
    model: Any = None
    model_key: str = ""
    threads: int = 0
    _requests: dict[tuple[int, ...] | None, Any] = field(default_factory=dict, init=False, repr=False)

    def _request(self, shape: tuple[int, ...]) -> Any:
        """The infer request for inputs of ``shape``: its static compile, else the dynamic-shape one."""
        if shape in self._requests:
            return self._requests[shape]
        static = self.model is not None and sum(k is not None for k in self._requests) < STATIC_SHAPES
        key = shape if static else None
        if key is None and None in self._requests:
            return self._requests[None]
        compiled = self.compiled if self.model is None else compile_ir(
            self.model_key, self.model, self.precision, key, self.threads)
        self._requests[key] = req = compiled.create_infer_request()
        return req

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Run the IR on ``x`` ``(N, 3, h, w)`` float32 array (h, w multiples of :attr:`multiple_of`; any strides)
        → ``(N, 3, h, w)`` float32 array in [0, 1] (the engine's own)."""
        m = self.multiple_of
        if x.ndim != 4 or x.shape[-2] % m or x.shape[-1] % m:
            raise UsageError(f"OpenVINO engine expects (N, 3, H, W) with H, W multiples of {m}, got {tuple(x.shape)}")
        request = self._request(tuple(int(v) for v in x.shape))
        # the array is ours (a contiguous copy of the tile or image, or the caller's contiguous array, only read):
        # OpenVINO reads it in place instead of copying it first
        request.infer({0: np.ascontiguousarray(x, dtype=np.float32)}, share_inputs=True)
        return np.array(request.get_output_tensor(0).data, dtype=np.float32, copy=True)


def _find(filename: str) -> Path | None:
    from defocus_cli.fetch import weights_dirs

    for d in weights_dirs():
        p = d / filename
        if p.is_file():
            return p
    return None


def _check_pin(path: Path, expected: str, model: str) -> None:
    from defocus_cli.fetch import sha256_file

    digest = sha256_file(path)
    if digest != expected:
        raise WeightsError(f"{path} does not match the registry entry of {model!r} (sha256 {digest[:12]}…, expected "
                           f"{expected[:12]}…); regenerate the IR with `python tools/export_openvino.py --model {model}`")


def ir_paths(name: str, row: dict[str, Any], ir: str) -> tuple[Path, Path]:
    """Verified ``(xml, bin)`` paths of ``name``'s ``ir`` IR (sha256 checked against ``row``'s pins).

    Raises:
        WeightsError: the IR is not registered, a file is missing, or a file does not match its pin.
    """
    files = (row.get("files") or {}).get(ir)
    if not files:
        raise WeightsError(f"model {name!r} has no {ir} OpenVINO IR registered; run `python tools/export_openvino.py "
                           f"--model {name}`")
    out = []
    for kind in ("xml", "bin"):
        p = _find(files[kind])
        if p is None:
            raise WeightsError(f"the OpenVINO IR file {files[kind]} of {name!r} is not in weights/; run "
                               f"`python tools/export_openvino.py --model {name}` or use --backend torch")
        _check_pin(p, files[f"{kind}_sha256"], name)
        out.append(p)
    return out[0], out[1]


def read_source_sha256(model: Any) -> str:
    """The ``defocus/source_sha256`` rt_info of an ``openvino.Model`` ('' when absent)."""
    try:
        return str(model.get_rt_info(RT_INFO_SOURCE).astype(str))
    except Exception:  # noqa: BLE001 - absent key raises a runtime error in openvino
        return ""


@functools.lru_cache(maxsize=1)
def _core() -> Any:
    """The process's ``openvino.Core``."""
    try:
        import openvino as ov
    except ImportError:
        raise missing_openvino_error() from None
    return ov.Core()


def read_ir(xml: Path, bin_: Path) -> tuple[Any, str]:
    """Read an IR (kept for the life of the process); return ``(openvino.Model, rt_info source sha256)``."""
    key = str(xml.resolve())
    if key not in _MODELS:
        model = _core().read_model(str(xml), str(bin_))
        _MODELS[key] = (model, read_source_sha256(model))
    return _MODELS[key]


def compile_ir(
    key: str, model: Any, precision: str, shape: tuple[int, ...] | None = None, threads: int | None = None
) -> Any:
    """``model`` (read from the IR file ``key``) compiled for the CPU at ``precision``: for inputs of ``shape``
    only (static shapes), or any (``None``: the IR's dynamic N, H, W). The last :data:`MAX_COMPILED` compiles
    are kept for the life of the process."""
    n = threads or _threads()
    ck = (key, precision, n, shape)
    if ck in _COMPILED:
        _COMPILED.move_to_end(ck)
        return _COMPILED[ck]
    if shape is not None:
        model = model.clone()
        model.reshape(list(shape))
    config = {"INFERENCE_PRECISION_HINT": HINTS[precision], "PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": n}
    _COMPILED[ck] = compiled = _core().compile_model(model, "CPU", config)
    while len(_COMPILED) > MAX_COMPILED:
        _COMPILED.popitem(last=False)
    log.debug("compiled %s for CPU (%s, %d threads, input %s)", Path(key).name, precision, n,
              "x".join(map(str, shape)) if shape else "any shape")
    return compiled


def row_traits(name: str, row: dict[str, Any]) -> dict[str, float]:
    """The network's traits (:data:`TRAIT_KEYS`) from an ``openvino`` registry row.

    Raises:
        WeightsError: the row carries none or not all of them (an entry written before they were recorded).
    """
    traits = row.get("traits") or {}
    missing = [k for k in TRAIT_KEYS if not isinstance(traits.get(k), (int, float))]
    if missing:
        raise WeightsError(f"the OpenVINO entry of {name!r} lacks the network's {', '.join(missing)}; re-run "
                           "`python tools/register_weights.py`")
    return {k: float(traits[k]) for k in TRAIT_KEYS}


def load_engine(
    model: ModelSpec | LoadedModel, precision: str, *, weights_sha256: str | None = None
) -> OpenVINOEngine:
    """The OpenVINO engine of a registered model at ``precision`` (resolved, see
    :func:`defocus_cli.backends.choose`), without torch.

    Args:
        model: the model's :class:`~defocus_cli.registry.ModelSpec`, or a loaded registered model
            (:class:`~defocus_cli.weights.LoadedModel`, whose spec and file sha256 are used).
        precision: ``"fp32"``, ``"bf16"`` or ``"int8"``.
        weights_sha256: the weights the IR must come from; default the loaded file's, else the registry's pin
            (the file ``fetch`` verifies for this name).

    Raises:
        UsageError: not a registered model, or an unknown precision.
        WeightsError: no IR, IR files missing or not matching their pins, the IR exported from other weights
            (registry row or the IR's own rt_info), or the row without the network's traits.
        DeviceError: openvino is not installed.
    """
    if precision not in OPENVINO_PRECISIONS:
        raise UsageError(f"OpenVINO precision must be one of {', '.join(OPENVINO_PRECISIONS)}, got {precision!r}")
    spec = model if isinstance(model, ModelSpec) else getattr(model, "spec", None)
    if spec is None:
        raise UsageError("the OpenVINO backend runs the registered models' exported IR only, not a --weights file; "
                         "use --backend torch")
    sha = weights_sha256 or (spec.sha256 if isinstance(model, ModelSpec) else model.sha256)
    row = spec.openvino
    problem = ir_problem(row, sha, spec.name)
    if problem:
        raise WeightsError(problem)
    traits = row_traits(spec.name, row)
    xml, bin_ = ir_paths(spec.name, row, ir_file_for(precision))
    model, source = read_ir(xml, bin_)  # compiled on first use, for the input's shape (OpenVINOEngine)
    if source != sha:
        raise WeightsError(f"{xml} was exported from weights sha256 {source[:12] or '(unknown)'}…, not the loaded "
                           f"{sha[:12]}…; regenerate it with `python tools/export_openvino.py --model "
                           f"{spec.name}`")
    bpp = (row.get("bytes_per_pixel") or {}).get(precision) or traits["bytes_per_pixel"]
    return OpenVINOEngine(
        compiled=None,
        model=model,
        model_key=str(xml.resolve()),
        precision=precision,
        multiple_of=int(traits["multiple_of"]),
        receptive_field=int(traits["receptive_field"]),
        bytes_per_pixel=float(bpp),
        tone_lock_sigma=traits["tone_lock_sigma"],
        source_sha256=source,
    )


__all__ = ["OpenVINOEngine", "load_engine", "row_traits", "TRAIT_KEYS", "compile_ir", "read_ir", "STATIC_SHAPES", "ir_paths", "ir_filenames", "ir_file_for",
           "read_source_sha256", "RT_INFO_SOURCE", "HINTS"]
