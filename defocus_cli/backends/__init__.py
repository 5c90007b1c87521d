"""Inference backends: which runtime runs a deblurring network (``--backend auto|torch|openvino``).

* ``torch``: the PyTorch network itself (:mod:`defocus_cli.runtime`), every device and precision it is
  validated in.
* ``openvino``: the model's exported OpenVINO IR on the CPU (:mod:`defocus_cli.backends.openvino`), in
  ``fp32``, ``bf16`` (the fp32 IR with OpenVINO's bf16 inference hint) or ``int8`` (the NNCF-quantised IR),
  each only where its quality gate held when the IR was exported.

The rule of ``--backend auto`` (:func:`choose`), written down so that it can be checked:

1. Not on the CPU, a ``--weights`` file of the user's, or ``--precision fp32|bf16`` given explicitly →
   torch (the behaviour before this backend existed).
2. ``openvino`` is not installed, the model has no IR, the IR was exported from other weights than the ones
   loaded (its ``source_sha256``), or the IR's files are missing → torch, logged at INFO (never an error).
3. Otherwise the model's registry row says, per **CPU class** (:func:`cpu_class`: ``native-bf16`` = x86
   with AVX512_BF16/AMX or Arm with BF16, where torch's own ``auto`` already computes in bf16; ``no-bf16`` =
   everything else, e.g. AVX2-only), which backend and precision was *measured* faster
   (``bench/bench_backends.py --record``). OpenVINO is picked only when that record names it and that
   precision passed its quality gate; a CPU class without a record keeps torch.

``--precision int8`` exists only on the OpenVINO backend: with ``--backend auto`` it selects OpenVINO (and
fails with the install hint when it is missing). This module imports no torch and no openvino.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Literal

from defocus_cli.errors import DeviceError, UsageError

log = logging.getLogger(__name__)

Backend = Literal["torch", "openvino"]
BACKENDS: tuple[str, ...] = ("auto", "torch", "openvino")
OPENVINO_PRECISIONS: tuple[str, ...] = ("fp32", "bf16", "int8")
"""Precisions of the OpenVINO backend (``bf16`` = the fp32 IR with the bf16 inference hint)."""
INSTALL_HINT = 'pip install -e ".[openvino]"'


@dataclass(frozen=True)
class Choice:
    """What :func:`choose` decided.

    Attributes:
        backend: ``"torch"`` or ``"openvino"``.
        precision: the precision request to pass on: for torch the user's request (``"auto"`` stays ``"auto"``
            and :func:`defocus_cli.devices.resolve_precision` resolves it); for openvino a resolved precision
            of :data:`OPENVINO_PRECISIONS`.
        reason: one line on why (logged; ``--json`` records the backend).
    """

    backend: Backend
    precision: str
    reason: str


def openvino_available() -> bool:
    """True when the ``openvino`` package can be imported (checked without importing it)."""
    import importlib.util

    try:
        return importlib.util.find_spec("openvino") is not None
    except (ImportError, ValueError):
        return False


def missing_openvino_error() -> DeviceError:
    """The one-line error of an explicit OpenVINO request without the package (exit 4, like a missing device)."""
    return DeviceError(f"--backend openvino needs the OpenVINO runtime, which is not installed; run {INSTALL_HINT} "
                       "or use --backend torch")


def cpu_class() -> str:
    """``"native-bf16"`` on a CPU with native bf16 dot products, else ``"no-bf16"`` (see the module docstring);
    read from the CPU's flags (:func:`defocus_cli.devices.cpu_has_native_bf16`), without torch."""
    from defocus_cli.devices import cpu_has_native_bf16

    return "native-bf16" if cpu_has_native_bf16() else "no-bf16"


def validated_precisions(row: dict[str, Any]) -> list[str]:
    """OpenVINO precisions of a registry ``openvino`` row whose quality gate passed and whose IR is shipped."""
    gate = row.get("gate") or {}
    files = row.get("files") or {}
    out = []
    for prec in OPENVINO_PRECISIONS:
        ir = "int8" if prec == "int8" else "fp32"
        if (gate.get(prec) or {}).get("passed") and ir in files:
            out.append(prec)
    return out


def ir_problem(row: dict[str, Any] | None, weights_sha256: str, model: str) -> str | None:
    """Why the IR of ``row`` cannot stand in for the weights ``weights_sha256`` (None when it can)."""
    if not row:
        return f"model {model!r} has no OpenVINO IR (one is shipped for the default model only)"
    src = str(row.get("source_sha256", ""))
    if src != weights_sha256:
        return (f"the OpenVINO IR of {model!r} was exported from weights sha256 {src[:12]}…, but the loaded weights "
                f"are {weights_sha256[:12]}…; regenerate it with `python tools/export_openvino.py --model {model}`")
    return None


def choose(
    backend: str,
    precision: str,
    *,
    device_type: str,
    model: str,
    weights_sha256: str,
    row: dict[str, Any] | None,
    own_file: bool = False,
    cpu: str | None = None,
    have_openvino: bool | None = None,
) -> Choice:
    """Pick the backend (and, for OpenVINO, the precision) for one run; see the rule in the module docstring.

    Args:
        backend: ``--backend``: ``"auto"``, ``"torch"`` or ``"openvino"``.
        precision: ``--precision``: ``"auto"``, ``"fp32"``, ``"bf16"``, ``"fp16"`` or ``"int8"``.
        device_type: the resolved device's type (``"cpu"``, ``"cuda"``, ``"mps"``).
        model: the model's name (for messages).
        weights_sha256: sha256 of the safetensors file that was loaded.
        row: the model's registry ``openvino`` field (``None``/empty: no IR).
        own_file: the weights came from ``--weights FILE`` (never a registered IR).
        cpu: CPU class (default :func:`cpu_class`).
        have_openvino: whether openvino is installed (default :func:`openvino_available`).

    Raises:
        UsageError: unknown backend or precision; int8 with ``--backend torch``; an OpenVINO precision that was
            not validated; ``--backend openvino`` with a user's own weights file or a model without IR.
        DeviceError: ``--backend openvino`` (or ``--precision int8``) without openvino installed, or not on the CPU.
        WeightsError: ``--backend openvino`` with an IR exported from other weights.
    """
    from defocus_cli.errors import WeightsError

    b = (backend or "auto").strip().lower()
    p = (precision or "auto").strip().lower()
    if b not in BACKENDS:
        raise UsageError(f"--backend must be auto, torch or openvino, got {backend!r}")
    if b == "torch":
        if p == "int8":
            raise UsageError("--precision int8 runs on the OpenVINO backend only; use --backend openvino or auto")
        return Choice("torch", p, "asked for")
    explicit = b == "openvino" or p == "int8"
    if not explicit:
        if device_type != "cpu":
            return Choice("torch", p, f"OpenVINO backend runs on the CPU only, device is {device_type}")
        if own_file:
            return Choice("torch", p, "a --weights file has no exported OpenVINO IR")
        if p != "auto":
            return Choice("torch", p, f"--precision {p} given: torch")
    have = openvino_available() if have_openvino is None else have_openvino
    if not have:
        if explicit:
            raise missing_openvino_error()
        return Choice("torch", p, f"openvino is not installed ({INSTALL_HINT})")
    if device_type != "cpu":
        raise DeviceError(f"the OpenVINO backend runs on the CPU only, not {device_type}; add --device cpu")
    if own_file:
        raise UsageError("the OpenVINO backend runs the registered models' exported IR only, not a --weights file; "
                         "use --backend torch")
    problem = ir_problem(row, weights_sha256, model)
    if problem is not None:
        if not explicit:
            return Choice("torch", p, problem)
        if row:
            raise WeightsError(f"{problem}, or use --backend torch")
        raise UsageError(f"{problem}; use --backend torch")
    assert row is not None
    valid = validated_precisions(row)
    if p == "fp16":
        raise UsageError("--precision fp16 is not offered by the OpenVINO CPU backend; use auto, fp32, bf16 or int8")
    if p != "auto":
        if p not in valid:
            raise UsageError(f"--precision {p} is not validated for {model!r} on the OpenVINO backend "
                             f"(validated: {', '.join(valid) or 'none'}); use --precision auto or --backend torch")
        return Choice("openvino", p, "asked for")
    cls = cpu or cpu_class()
    rule = (row.get("auto") or {}).get(cls) or {}
    rule_prec = str(rule.get("precision", ""))
    if b == "auto":
        if rule.get("backend") != "openvino":
            why = "measured faster" if rule else "no measurement for this CPU class"
            return Choice("torch", p, f"torch on a {cls} CPU ({why})")
        if rule_prec not in valid:
            return Choice("torch", p, f"OpenVINO {rule_prec or '?'} is not validated for {model!r}")
        return Choice("openvino", rule_prec, f"OpenVINO {rule_prec} measured faster than torch on a {cls} CPU")
    # --backend openvino --precision auto: the measured precision for this CPU class, else the first validated
    if rule_prec in valid:
        return Choice("openvino", rule_prec, f"measured fastest OpenVINO precision on a {cls} CPU")
    for pref in ("int8", "fp32", "bf16"):
        if pref in valid:
            return Choice("openvino", pref, "first validated OpenVINO precision")
    raise UsageError(f"no OpenVINO precision of {model!r} passed its quality gate; use --backend torch")


def select_host_engine(
    spec: Any, name: str, weights_sha256: str, backend: str, precision: str, device_type: str
) -> tuple[Any | None, Choice]:
    """Choose the backend (:func:`choose`) and, when it is OpenVINO, load its engine: ``(engine, choice)``, with
    ``engine`` ``None`` when the torch network is to run. Needs no torch: a registered model's IR, its traits and
    its pins all come from the registry row (:func:`defocus_cli.backends.openvino.load_engine`).

    Args:
        spec: the model's :class:`defocus_cli.registry.ModelSpec`; ``None`` for a user's own ``--weights`` file.
        name: the model's name (messages).
        weights_sha256: sha256 of the weights the IR must have been exported from (the registry's pin for a
            registered model, the loaded file's otherwise).
        backend, precision: ``--backend`` and ``--precision`` as given.
        device_type: the resolved device's type (``"cpu"``, ``"cuda"``, ``"mps"``).

    Returns:
        ``(None, choice)`` for torch (``choice.precision`` the user's request, resolved later by
        :meth:`defocus_cli.restorer.Restorer.create`), or ``(OpenVINOEngine, choice)`` (its resolved precision).
        When ``auto`` chose OpenVINO but its IR cannot be loaded (files missing or not matching their pins):
        ``(None, torch choice)``, with a warning.

    Raises:
        the errors of :func:`choose` and, for an explicit OpenVINO request,
        :func:`defocus_cli.backends.openvino.load_engine`.
    """
    from defocus_cli.errors import WeightsError

    choice = choose(backend, precision, device_type=device_type, model=name, weights_sha256=weights_sha256,
                    row=spec.openvino if spec is not None else None, own_file=spec is None)
    log.info("backend: %s (%s)", choice.backend, choice.reason)
    if choice.backend == "openvino":
        from defocus_cli.backends.openvino import load_engine

        try:
            return load_engine(spec, choice.precision, weights_sha256=weights_sha256), choice
        except WeightsError as e:
            if (backend or "auto").strip().lower() != "auto" or (precision or "").strip().lower() == "int8":
                raise
            log.warning("%s; running the torch backend instead", e)
            choice = Choice("torch", "auto", str(e))
    return None, choice


def select_engine(loaded: Any, backend: str, precision: str, device: Any) -> tuple[Any, Choice]:
    """The engine to run for a loaded model: ``(engine, choice)`` (:func:`select_host_engine`, else the torch
    network ``loaded.module``).

    Args:
        loaded: a :class:`defocus_cli.weights.LoadedModel`.
        backend, precision: ``--backend`` and ``--precision`` as given.
        device: the resolved device (``torch.device`` or ``"cpu"``).
    """
    from defocus_cli.devices import device_type

    engine, choice = select_host_engine(getattr(loaded, "spec", None), loaded.name, loaded.sha256, backend,
                                        precision, device_type(device))
    return (loaded.module if engine is None else engine), choice


__all__ = ["select_engine", "select_host_engine", "BACKENDS", "OPENVINO_PRECISIONS", "INSTALL_HINT", "Choice", "choose", "cpu_class",
           "openvino_available", "validated_precisions", "ir_problem", "missing_openvino_error"]
