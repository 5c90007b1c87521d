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

import logging
import os
from dataclasses import dataclass
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

_COMPILED: dict[tuple[str, str, int], Any] = {}


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
    """A compiled IR, callable like an engine (see the module docstring for shapes and ranges).

    Attributes:
        compiled: the ``openvino.CompiledModel``.
        precision: ``"fp32"``, ``"bf16"`` or ``"int8"``.
        multiple_of, receptive_field: the architecture's (the torch network's attributes).
        bytes_per_pixel: peak working bytes per input pixel at this precision (registry, measured by
            ``bench/bench_backends.py``; the torch network's when unmeasured); ``tile="auto"`` reads it.
        tone_lock_sigma: the weights' tone-lock σ (px), 0 for none; applied after the engine by the caller.
        source_sha256: sha256 of the safetensors file the IR was exported from.
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

    def __post_init__(self) -> None:
        self._request = self.compiled.create_infer_request()

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Run the IR on ``x`` ``(N, 3, h, w)`` float32 array (h, w multiples of :attr:`multiple_of`; any strides)
        → ``(N, 3, h, w)`` float32 array in [0, 1] (the engine's own)."""
        m = self.multiple_of
        if x.ndim != 4 or x.shape[-2] % m or x.shape[-1] % m:
            raise UsageError(f"OpenVINO engine expects (N, 3, H, W) with H, W multiples of {m}, got {tuple(x.shape)}")
        self._request.infer({0: np.ascontiguousarray(x, dtype=np.float32)})
        return np.array(self._request.get_output_tensor(0).data, dtype=np.float32, copy=True)


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


def compile_ir(xml: Path, bin_: Path, precision: str, threads: int | None = None) -> tuple[Any, str]:
    """Read and compile an IR for the CPU at ``precision``; return ``(compiled model, rt_info source sha256)``.
    Compiled models are kept per (file, precision, threads) for the life of the process."""
    try:
        import openvino as ov
    except ImportError:
        raise missing_openvino_error() from None
    n = threads or _threads()
    key = (str(xml.resolve()), precision, n)
    if key not in _COMPILED:
        core = ov.Core()
        model = core.read_model(str(xml), str(bin_))
        config = {"INFERENCE_PRECISION_HINT": HINTS[precision], "PERFORMANCE_HINT": "LATENCY",
                  "INFERENCE_NUM_THREADS": n}
        _COMPILED[key] = (core.compile_model(model, "CPU", config), read_source_sha256(model))
        log.debug("compiled %s for CPU (%s, %d threads)", xml.name, precision, n)
    return _COMPILED[key]


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
    compiled, source = compile_ir(xml, bin_, precision)
    if source != sha:
        raise WeightsError(f"{xml} was exported from weights sha256 {source[:12] or '(unknown)'}…, not the loaded "
                           f"{sha[:12]}…; regenerate it with `python tools/export_openvino.py --model "
                           f"{spec.name}`")
    bpp = (row.get("bytes_per_pixel") or {}).get(precision) or traits["bytes_per_pixel"]
    return OpenVINOEngine(
        compiled=compiled,
        precision=precision,
        multiple_of=int(traits["multiple_of"]),
        receptive_field=int(traits["receptive_field"]),
        bytes_per_pixel=float(bpp),
        tone_lock_sigma=traits["tone_lock_sigma"],
        source_sha256=source,
    )


__all__ = ["OpenVINOEngine", "load_engine", "row_traits", "TRAIT_KEYS", "compile_ir", "ir_paths", "ir_filenames", "ir_file_for",
           "read_source_sha256", "RT_INFO_SOURCE", "HINTS"]
