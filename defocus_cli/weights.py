"""Model building: a verified weight file (:mod:`defocus_cli.fetch`), or a user's own file, built into its
network and loaded (:func:`load_model`).

A registered model's file comes from :func:`defocus_cli.fetch.resolve` (``weights/``, the Hugging Face cache or
the Hub, sha256 checked). A user's own file (``weights_file``) is trusted explicitly: its architecture comes
from its ``"arch"`` safetensors metadata. The network is the arch table's row (:mod:`defocus_cli.archs.table`),
built on the meta device with its allowed constructor config, then the tensors are assigned.

This module imports torch only inside :func:`load_model`.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from defocus_cli import registry
from defocus_cli.errors import UsageError, WeightsError
from defocus_cli.fetch import resolve, sha256_file
from defocus_cli.registry import ModelSpec

if TYPE_CHECKING:  # pragma: no cover
    import torch

log = logging.getLogger(__name__)


@dataclass
class LoadedModel:
    """A network ready for inference.

    Attributes:
        module: the ``torch.nn.Module`` in eval mode, float32, on CPU, weights loaded (strict).
        name: registry name, or the file stem of a user's own file.
        arch: :data:`registry.ARCHS` key of the network.
        sha256: hex digest of the weight file that was loaded.
        path: the weight file.
        spec: the registry entry, ``None`` for a user's own file.
    """

    module: "torch.nn.Module"
    name: str
    arch: str
    sha256: str
    path: Path
    spec: ModelSpec | None


# ----------------------------------------------------------------------------------------------
# Reading files


def read_metadata(path: str | Path) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors file (``{}`` when it has none).

    Raises:
        WeightsError: the file is missing or not a safetensors file.
    """
    p = Path(path)
    if not p.is_file():
        if os.path.lexists(p):
            raise WeightsError(f"weights file {p} is not a regular file; expected an existing .safetensors file")
        raise WeightsError(f"weights file {p} not found; expected an existing .safetensors file")
    from safetensors import safe_open

    try:
        with safe_open(str(p), framework="np") as f:
            return dict(f.metadata() or {})
    except Exception as e:  # noqa: BLE001 - safetensors raises several types for a bad header
        raise WeightsError(
            f"{p} is not a safetensors file ({type(e).__name__}); convert a PyTorch checkpoint with "
            f"`defocus models convert SRC -o DST.safetensors --arch {'|'.join(registry.ARCHS)}`"
        ) from e


def arch_of_file(path: str | Path) -> str:
    """The :data:`registry.ARCHS` key stored as ``"arch"`` in a safetensors file's metadata.

    Raises:
        WeightsError: no ``"arch"`` entry or an unknown one.
    """
    meta = read_metadata(path)
    arch = meta.get("arch")
    if not arch:
        raise WeightsError(
            f"{path} has no 'arch' in its safetensors metadata; expected one of {', '.join(registry.ARCHS)} — "
            f"write it with `defocus models convert` or safetensors' save_file(..., metadata={{'arch': ...}})"
        )
    if arch not in registry.ARCHS:
        raise WeightsError(f"{path}: unknown arch {arch!r} in its metadata; expected one of {', '.join(registry.ARCHS)}")
    return arch


def state_dict_mismatch(
    module: "torch.nn.Module", state: Mapping[str, Any]
) -> tuple[list[str], list[str], list[str]]:
    """How the tensors ``state`` differ from ``module.state_dict()`` by name and shape.

    Returns:
        ``(missing, unexpected, wrong_shape)``: keys of the module that ``state`` lacks (in the module's order),
        keys of ``state`` the module does not have (in ``state``'s order), and ``"<key> <shape in state>≠<shape
        expected>"`` for the common keys whose shapes differ (module's order). All empty: a strict load fits.
    """
    expected = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [f"{k} {tuple(state[k].shape)}≠{shape}" for k, shape in expected.items()
             if k in state and tuple(state[k].shape) != shape]
    return missing, unexpected, wrong


def _state_dict_errors(module: "torch.nn.Module", state: dict[str, Any]) -> str | None:
    missing, unexpected, shapes = (sorted(keys) for keys in state_dict_mismatch(module, state))
    parts = []

    def few(keys: list[str]) -> str:
        return ", ".join(keys[:5]) + (f" (+{len(keys) - 5} more)" if len(keys) > 5 else "")

    if missing:
        parts.append(f"missing keys: {few(missing)}")
    if unexpected:
        parts.append(f"unexpected keys: {few(unexpected)}")
    if shapes:
        parts.append(f"shape mismatches: {few(shapes)}")
    return "; ".join(parts) or None


def validate_config(arch: str, config: Mapping[str, Any], source: str | Path) -> dict[str, Any]:
    """Check a weights file's ``config`` metadata against the settings the arch table allows for ``arch``
    (:attr:`defocus_cli.archs.table.ArchSpec.config`) and return it as a dict. Anything else is refused before
    a network is built, so a file cannot make us allocate an absurd network or call a constructor with
    arguments it does not take.

    Raises:
        WeightsError: a key the architecture does not take, a value of the wrong type or out of range.
    """
    row = registry.arch_spec(arch)
    rules = row.config if row is not None else {}
    out: dict[str, Any] = {}
    for key, value in config.items():
        if key not in rules:
            allowed = ", ".join(rules) or "none"
            raise WeightsError(f"{source}: its 'config' metadata has key {key!r}, which the {arch!r} network does "
                               f"not take (allowed: {allowed}); fix or remove the metadata")
        kind, lo, hi = rules[key].kind, rules[key].lo, rules[key].hi
        values = value if kind == "ints" and isinstance(value, list) else [value]
        if kind == "ints" and (not isinstance(value, list) or not 1 <= len(value) <= 16):
            raise WeightsError(f"{source}: config {key} must be a list of 1-16 integers, got {value!r}")
        for v in values:
            if kind == "float" and v is None:
                continue
            ok_type = isinstance(v, int) and not isinstance(v, bool) if kind in ("int", "ints") else (
                isinstance(v, (int, float)) and not isinstance(v, bool))
            if not ok_type or not lo <= v <= hi:
                want = "an integer" if kind in ("int", "ints") else "a number"
                raise WeightsError(f"{source}: config {key}={value!r} is out of range; expected {want} in "
                                   f"[{lo:g}, {hi:g}] (the file's metadata is damaged or not ours)")
        out[key] = list(value) if kind == "ints" else value
    return out


def _file_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Tensor name → shape from a safetensors header (no tensor is read)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="np") as f:
        return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}


def _meta_mismatch(build: Any, path: Path, keep: list[Any] | None = None) -> str | None:
    """Build the network on torch's ``meta`` device (no memory) and compare its tensor shapes with the
    file's header; the problem in words, or ``None`` when they fit (or the check cannot be made). The meta
    network is appended to ``keep`` when given (see :func:`_assign_state`)."""
    import torch

    try:
        with torch.device("meta"):
            module = build()
        shapes = _file_shapes(path)
    except Exception:  # noqa: BLE001 - a network that cannot be built on meta is checked after the real build
        return None
    if keep is not None:
        keep.append(module)

    class _Shape:
        def __init__(self, shape: tuple[int, ...]) -> None:
            self.shape = shape

    return _state_dict_errors(module, {k: _Shape(v) for k, v in shapes.items()})


def _assign_state(module: "torch.nn.Module", state: dict[str, Any]) -> "torch.nn.Module | None":
    """``module``, built on the meta device, with the file's tensors assigned as its parameters and buffers:
    no random initialisation of a real build and no second copy of every tensor (0.05-0.15 s per load on the
    dev VM). ``None`` when that cannot be done, e.g. a tensor the file does not hold (a non-persistent buffer,
    a plain tensor attribute) would stay on meta; the caller then builds the network for real."""
    import torch

    if _state_dict_errors(module, state):
        return None
    try:
        module.load_state_dict(state, strict=True, assign=True)
    except (RuntimeError, TypeError, ValueError):
        return None
    for sub in module.modules():
        tensors = [*sub._parameters.values(), *sub._buffers.values(), *vars(sub).values()]
        if any(isinstance(t, torch.Tensor) and t.is_meta for t in tensors):
            return None
    return module


def load_model(
    name: str | None = None, weights_file: str | Path | None = None, task: str = "deblur"
) -> LoadedModel:
    """Build a network and load verified weights into it.

    Args:
        name: registry name; ``None`` → the task's default model (unless ``weights_file`` is given).
        weights_file: a user's own ``.safetensors`` file (trusted explicitly; arch from its metadata).
            When ``name`` is given too, that entry's constructor config is used if the archs agree; ``name`` may
            also be an architecture key (:data:`registry.ARCHS`), which must then be the file's own.
        task: ``"deblur"`` or ``"map"``; the model must be of this task.

    Returns:
        :class:`LoadedModel` with ``module`` in eval mode, float32, on CPU. A network with a
        ``configure_from_metadata(meta)`` method gets the file's safetensors metadata after loading (IFAN reads
        its defocus-map scale ``dme_to_coc`` from it).

    Raises:
        UsageError: unknown model name, a model of another task, or an architecture name not the file's.
        WeightsError: weights unavailable, corrupt, without arch metadata, not matching the network, or with
            metadata the network rejects.
    """
    if task not in registry.TASKS:
        raise UsageError(f"unknown task {task!r}; expected one of {', '.join(registry.TASKS)}")
    spec: ModelSpec | None = None
    if weights_file is not None:
        path = Path(weights_file).expanduser()
        arch = arch_of_file(path)
        if registry.ARCH_TASKS.get(arch, "deblur") != task:
            raise UsageError(f"{path} holds a {arch!r} network ({registry.ARCH_TASKS.get(arch)}), not a {task} model")
        config: dict[str, Any] = {}
        meta_config = read_metadata(path).get("config")
        if meta_config:
            try:
                parsed = json.loads(meta_config)
            except ValueError:
                parsed = None
            if not isinstance(parsed, dict):
                raise WeightsError(f"{path}: its 'config' metadata is not a JSON object") from None
            config = validate_config(arch, parsed, path)
        if name is not None and name not in registry.names() and name in registry.ARCHS:
            if name != arch:  # an architecture name: it must be the file's own
                raise UsageError(f"{path} holds a {arch!r} network, not {name!r}")
        elif name is not None:
            named = registry.get_spec(name)
            if named.arch_key == arch:  # the file's own config wins: it describes the tensors it holds
                spec, config = named, (config or dict(named.config))
        digest = sha256_file(path)
        model_name = spec.name if spec is not None else path.stem
        cls = registry.load_class(arch)
        build = lambda: cls(**config)  # noqa: E731
    else:
        spec = registry.task_spec(name, task)  # type: ignore[arg-type]
        model_name = spec.name
        found = resolve(spec)
        path, digest, arch = found.path, found.sha256, spec.arch_key
        build = lambda: registry.build(spec)  # noqa: E731

    import torch
    from safetensors.torch import load_file

    on_meta: list[Any] = []
    problem = _meta_mismatch(build, path, keep=on_meta)  # shapes first, on the meta device: nothing allocated yet
    if problem:
        raise WeightsError(f"{path} does not fit the {arch!r} network: {problem}")
    try:
        state = load_file(str(path), device="cpu")
    except Exception as e:  # noqa: BLE001
        raise WeightsError(f"cannot read tensors from {path}: {type(e).__name__}: {e}") from e
    assigned = _assign_state(on_meta[0], state) if on_meta else None
    if assigned is not None:
        module = assigned
    else:
        try:
            module = build()
        except (TypeError, ValueError, RuntimeError) as e:
            raise WeightsError(f"{path}: the {arch!r} network cannot be built from its metadata ({e})") from None
        problem = _state_dict_errors(module, state)
        if problem:
            raise WeightsError(f"{path} does not fit the {arch!r} network: {problem}")
        module.load_state_dict(state, strict=True)
    # settings a file records beside its tensors: the arch's own (e.g. IFAN's CoC-per-DME factor), and the
    # tone lock every arch may carry; the header is read once for both
    meta = read_metadata(path)
    configure = getattr(module, "configure_from_metadata", None)
    try:
        if callable(configure):
            configure(meta)
        sigma = tone_lock_sigma_from_metadata(meta)
    except ValueError as e:
        raise WeightsError(f"{path}: {e}") from None
    if sigma:
        module.tone_lock_sigma = sigma  # read by defocus_cli.api after the engine ran (see defocus_cli.tone)
    module = module.to(dtype=torch.float32).eval()
    log.info("loaded %s (%s) from %s", model_name, arch, path)
    return LoadedModel(module=module, name=model_name, arch=arch, sha256=digest, path=path, spec=spec)


TONE_LOCK_KEY = "tone_lock_sigma"
"""Metadata key of weights trained with :func:`defocus_cli.tone.lock_tone` (its σ in px)."""


def tone_lock_sigma_from_metadata(meta: dict[str, str]) -> float:
    """The tone-lock σ (px) a weight file asks for, 0.0 when it asks for none.

    Raises:
        ValueError: the value is not a number in [0, 4096]."""
    raw = meta.get(TONE_LOCK_KEY)
    if raw is None:
        return 0.0
    try:
        value = float(str(raw).strip())
    except ValueError:
        raise ValueError(f"{TONE_LOCK_KEY}={raw!r} in the weight metadata is not a number") from None
    if not (0.0 <= value <= 4096.0):
        raise ValueError(f"{TONE_LOCK_KEY}={raw!r} in the weight metadata: expected 0 to 4096 px")
    return value
