"""Convert official upstream checkpoints into the project's safetensors weight files.

Supported sources (layouts from the upstream save code, see the project's architecture notes):

* ``ifan``: IFAN ``IFAN.pytorch``: a flat state dict saved from ``DataParallel(DeblurNet)``; inference keys
  ``module.Network.<key>`` (kept, prefix stripped), training-only ``module.reblurNet.<key>`` (dropped).
* ``defocusgan``: DefocusGAN ``90_models.pth``: ``{'state_dict': <generator>, 'state_dict_D': ..., ...}``.
* ``defocusgan-map``: the DefocusGAN defocus-map network ``25_models.pth``: ``{'state_dict': <map net>, ...}``.

Checkpoints are read with ``torch.load(weights_only=True, map_location="cpu")`` only: a pickle that would run
code (``__reduce__`` to ``os.system`` and the like) is refused, never executed. The kept tensors must match the
architecture's state dict exactly (names and shapes; the arch table, :mod:`defocus_cli.archs.table`, gives the
class and the key prefixes to drop and to strip) and are
loaded into it strictly before the file is written. The output is written atomically (temporary file in the same
folder, then ``os.replace``) with the metadata convention ``{"arch", "producer", "source", ...}``.

This module imports torch only inside its functions.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from defocus_cli import registry
from defocus_cli._version import __version__
from defocus_cli.archs.table import ARCH_SPECS, Converter, convertible
from defocus_cli.errors import InputError, OutputError, UsageError
from defocus_cli.io.atomic import Target, atomic_write, check_targets, is_regular_file
from defocus_cli.fetch import sha256_file
from defocus_cli.weights import state_dict_mismatch

if TYPE_CHECKING:  # pragma: no cover
    import torch

log = logging.getLogger(__name__)

_NESTED = ("state_dict", "params", "params_ema", "model", "net")
_SHOW = 4


def _few(keys: list[str]) -> str:
    more = f" (+{len(keys) - _SHOW} more)" if len(keys) > _SHOW else ""
    return ", ".join(keys[:_SHOW]) + more


def load_checkpoint(src: str | Path) -> Any:
    """Load a torch checkpoint safely: ``torch.load(weights_only=True, map_location="cpu")``.

    Raises:
        InputError: missing/unreadable file, not a torch checkpoint, or a pickle that weights-only refuses.
    """
    import torch

    p = Path(src)
    if not is_regular_file(p):
        if os.path.lexists(p):
            raise InputError(f"checkpoint {p} is not a regular file (a folder, pipe, device or broken link); "
                             "pass the official file (e.g. IFAN.pytorch, 90_models.pth)")
        raise InputError(f"checkpoint {p} not found; pass the official file (e.g. IFAN.pytorch, 90_models.pth)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - every failure here means "not a usable checkpoint"
        text = str(e)
        if "Weights only load failed" in text or "WeightsUnpickler" in text:
            reason = _refusal_reason(text)
            raise InputError(
                f"{p.name} was refused by the safe (weights-only) loader ({reason}); "
                "only plain weight checkpoints can be converted, and nothing in it was executed"
            ) from None
        first = " ".join(text.split())[:160] or type(e).__name__
        raise InputError(f"{p.name} is not a torch checkpoint ({type(e).__name__}: {first})") from None


def _refusal_reason(text: str) -> str:
    """The informative sentence of torch's weights-only refusal (e.g. "unsupported GLOBAL posix.system ...")."""
    paras = [" ".join(p.split()) for p in text.split("\n\n") if p.strip()]
    for p in paras[1:]:
        if not p.startswith(("Check the documentation", "Please file an issue", "Weights only load failed")):
            return p.replace("WeightsUnpickler error: ", "")[:160]
    return "objects other than tensors"


def _is_tensor_dict(obj: Any) -> bool:
    import torch

    return isinstance(obj, Mapping) and bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def extract_state_dict(obj: Any, arch: str, source_name: str = "checkpoint") -> dict[str, "torch.Tensor"]:
    """The inference state dict of ``arch`` inside a loaded checkpoint ``obj`` (keys as the arch class names them).

    Accepts the official layout of each arch, plus the same tensors flat or under ``state_dict``/``params``.
    Raises:
        InputError: ``obj`` holds no tensor dictionary at all.
    """
    if not isinstance(obj, Mapping):
        raise InputError(f"{source_name} holds a {type(obj).__name__}, expected a dictionary of tensors (a state dict)")
    state: Mapping[str, Any] | None = None
    if _is_tensor_dict(obj):
        state = obj
    else:
        for key in _NESTED:
            if _is_tensor_dict(obj.get(key)):
                state = obj[key]
                break
    if state is None:
        found = ", ".join(sorted(map(str, obj.keys()))[:8])
        raise InputError(f"{source_name} holds no state dict of tensors (top-level keys: {found or 'none'})")
    layout = _converter(arch)
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        key = str(key)
        if key.startswith(layout.drop):
            continue
        for prefix in layout.strip:
            if key.startswith(prefix):
                key = key[len(prefix) :]
                break
        out[key] = value
    return out


def check_state_dict(state: Mapping[str, "torch.Tensor"], module: "torch.nn.Module", arch: str, source_name: str) -> None:
    """Strict name + shape check of ``state`` against ``module.state_dict()``.

    Raises:
        UsageError: almost nothing matches (the checkpoint is of another architecture than ``arch``).
        InputError: it is ``arch``'s layout but some tensors are missing, unexpected or of the wrong shape.
    """
    missing, unexpected, wrong = state_dict_mismatch(module, state)
    if not (missing or unexpected or wrong):
        return
    n_expected = len(module.state_dict())
    matched = n_expected - len(missing)
    if matched < n_expected // 2:
        hint = guess_arch(state)
        tip = f"; it looks like --arch {hint}" if hint and hint != arch else ""
        raise UsageError(
            f"{source_name} does not match --arch {arch}: only {matched} of {n_expected} expected tensors found "
            f"(missing e.g. {_few(missing)}; unexpected e.g. {_few(unexpected) or 'none'}){tip}"
        )
    parts = []
    if missing:
        parts.append(f"missing {len(missing)}: {_few(missing)}")
    if unexpected:
        parts.append(f"unexpected {len(unexpected)}: {_few(unexpected)}")
    if wrong:
        parts.append(f"wrong shape {len(wrong)}: {_few(wrong)}")
    raise InputError(f"{source_name} does not match the {arch} layout ({'; '.join(parts)}); is it a different variant?")


def guess_arch(state: Mapping[str, Any]) -> str | None:
    """The convertible arch whose official key names best overlap ``state``'s (after prefix stripping), if any."""
    best, best_score = None, 0.0
    for arch in convertible():
        try:
            expected = set(_build(arch).state_dict())
        except Exception:  # noqa: BLE001 - an arch not installed cannot be the answer
            continue
        stripped = set(extract_state_dict(dict(state), arch))
        score = len(expected & stripped) / max(1, len(expected))
        if score > best_score:
            best, best_score = arch, score
    return best if best_score >= 0.5 else None


def _converter(arch: str) -> Converter:
    """The official checkpoint layout of ``arch`` (its arch table row's :attr:`~ArchSpec.converter`).

    Raises:
        UsageError: ``arch`` has none.
    """
    row = ARCH_SPECS.get(arch)
    if row is None or row.converter is None:
        raise UsageError(f"--arch {arch!r} cannot be converted; expected one of {', '.join(convertible())}")
    return row.converter


def _build(arch: str) -> "torch.nn.Module":
    return registry.load_class(arch)()


def write_safetensors_atomic(tensors: dict[str, "torch.Tensor"], dst: Path, metadata: dict[str, str]) -> None:
    """Write ``tensors`` to ``dst`` atomically (:func:`defocus_cli.io.atomic.atomic_write`: a short-named
    temporary file in the same folder, fsync, ``os.replace``; removed on any failure).

    Raises:
        OutputError: the folder does not exist or is not writable, or the disk is full.
    """
    from safetensors.torch import save_file

    folder = dst.parent if str(dst.parent) else Path(".")
    if not folder.is_dir():
        raise OutputError(f"output folder {folder} does not exist; create it first")
    atomic_write(dst, lambda tmp: save_file(tensors, str(tmp), metadata=metadata), make_parents=False)


def convert_checkpoint(
    src: str | Path,
    dst: str | Path,
    arch: str,
    *,
    dtype: Literal["fp32", "fp16"] = "fp32",
    overwrite: bool = True,
) -> dict[str, Any]:
    """Convert an official checkpoint ``src`` into a safetensors file ``dst`` for ``arch``.

    Args:
        src: the upstream file (``IFAN.pytorch``, ``90_models.pth``, ``25_models.pth``).
        dst: the ``.safetensors`` file to write (replaced atomically if it exists and ``overwrite``).
        arch: an arch table key with a converter (:func:`defocus_cli.archs.table.convertible`: ``"ifan"``,
            ``"defocusgan"``, ``"defocusgan-map"``).
        dtype: floating-point storage of the output, ``"fp32"`` (default) or ``"fp16"``.
        overwrite: replace an existing ``dst``; if False an existing ``dst`` is a :class:`UsageError`.

    Returns:
        ``{"source", "output", "arch", "dtype", "tensors", "params", "dropped", "bytes", "sha256",
        "source_sha256"}`` (paths as strings; ``dropped`` = number of training-only tensors left out).

    Raises:
        UsageError: unknown ``arch``/``dtype``, or the checkpoint is of another architecture.
        InputError: ``src`` is missing, not a checkpoint, refused by the weights-only loader, or incomplete.
        UsageError: ``dst`` is ``src`` itself, exists and ``overwrite`` is False, or its folder is missing.
        OutputError: ``dst`` cannot be written.
    """
    import torch

    _converter(arch)  # an arch without an official checkpoint layout is refused here
    if dtype not in ("fp32", "fp16"):
        raise UsageError(f"dtype {dtype!r}; expected fp32 or fp16")
    src_p, dst_p = Path(src), Path(dst)
    if dst_p.suffix != ".safetensors":
        raise UsageError(f"output {dst_p.name} must end in .safetensors")
    # the rules every written file follows: not the input, not existing unless overwrite, folder exists
    check_targets([Target(dst_p, "output")], [src_p], overwrite=overwrite, create_folders=False)

    obj = load_checkpoint(src_p)
    raw_count = _count_tensors(obj)
    state = extract_state_dict(obj, arch, src_p.name)
    module = _build(arch)
    check_state_dict(state, module, arch, src_p.name)

    target = torch.float16 if dtype == "fp16" else torch.float32
    out: dict[str, torch.Tensor] = {}
    for key, ref in module.state_dict().items():
        t = state[key].detach()
        if t.is_floating_point():
            t = t.to(target)
        elif t.dtype != ref.dtype:
            t = t.to(ref.dtype)
        out[key] = t.contiguous().clone()
    # Prove the file will load: strict load into the architecture (float32 copy).
    module.load_state_dict({k: (v.float() if v.is_floating_point() else v) for k, v in out.items()}, strict=True)
    nonfinite = [k for k, v in out.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if nonfinite:
        raise InputError(f"{src_p.name} has non-finite values in {_few(nonfinite)} (after {dtype} conversion)")

    source_sha = sha256_file(src_p, use_memo=False)
    metadata = {
        "arch": arch,
        "producer": f"defocus_cli {__version__}",
        "source": src_p.name,
        "source_sha256": source_sha,
        "dtype": dtype,
        "notes": f"converted from the official {arch} checkpoint by defocus_cli.convert",
    }
    write_safetensors_atomic(out, dst_p, metadata)
    info = {
        "source": str(src_p),
        "output": str(dst_p),
        "arch": arch,
        "dtype": dtype,
        "tensors": len(out),
        "params": int(sum(v.numel() for v in out.values())),
        "dropped": max(0, raw_count - len(out)),
        "bytes": dst_p.stat().st_size,
        "sha256": sha256_file(dst_p, use_memo=False),
        "source_sha256": source_sha,
    }
    log.info("converted %s -> %s (%s, %d tensors)", src_p, dst_p, arch, len(out))
    return info


def _count_tensors(obj: Any) -> int:
    """Tensors in the state dict that :func:`extract_state_dict` reads (before dropping training-only ones)."""
    if _is_tensor_dict(obj):
        return len(obj)
    if isinstance(obj, Mapping):
        for key in _NESTED:
            if _is_tensor_dict(obj.get(key)):
                return len(obj[key])
    return 0
