"""Weights delivery: turn a registry entry (or a user's file) into a verified local safetensors file
and a loaded network.

Resolution order for a registered model (:func:`resolve`):

1. the project's ``weights/`` folder (a clone's ``weights/``, or ``<prefix>/share/defocus-cli/weights``
   where an installed wheel puts it, or ``$DEFOCUS_WEIGHTS_DIR``);
2. the Hugging Face cache (``HF_HUB_CACHE``, else ``HF_HOME/hub``) at the pinned revision;
3. ``hf_hub_download`` from ``HF_ENDPOINT`` at the pinned revision, unless offline
   (``HF_HUB_OFFLINE=1`` or ``DEFOCUS_OFFLINE=1`` → cache only, no HTTP at all).

The sha256 of every file is checked against the registry before it is used. A mismatch raises
:class:`WeightsError` (exit 3); a bad file in the HF cache is deleted so it is never used again,
a bad file in ``weights/`` is refused but left alone (it is the project's, not ours to delete).
A user's own file (``weights_file``) is trusted explicitly: its architecture comes from its
``"arch"`` safetensors metadata.

Environment variables are read at call time (not import time), so a long-lived process honours
changes. This module imports torch only inside :func:`load_model`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from defocus_cli import registry
from defocus_cli._version import __version__
from defocus_cli.errors import UsageError, WeightsError
from defocus_cli.registry import ModelSpec

if TYPE_CHECKING:  # pragma: no cover
    import torch

log = logging.getLogger(__name__)

Source = Literal["weights-dir", "hf-cache", "hub", "file"]

_TRUE = {"1", "true", "yes", "on"}
_LFS_POINTER_PREFIX = b"version https://git-lfs"
_HASH_MEMO: dict[tuple[str, int, int], str] = {}


@dataclass(frozen=True)
class Resolved:
    """A verified local weight file.

    Attributes:
        path: the file (for the HF cache: the snapshot path, a symlink into ``blobs/``).
        source: where it was found: ``"weights-dir"``, ``"hf-cache"``, ``"hub"`` (just downloaded)
            or ``"file"`` (the user's own).
        sha256: hex digest of the file's bytes.
    """

    path: Path
    source: Source
    sha256: str


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
# Environment


def is_offline() -> bool:
    """True when ``HF_HUB_OFFLINE`` or ``DEFOCUS_OFFLINE`` asks for no network access."""
    return any(os.environ.get(k, "").strip().lower() in _TRUE for k in ("HF_HUB_OFFLINE", "DEFOCUS_OFFLINE"))


def hub_cache_dir() -> Path:
    """The Hugging Face hub cache folder: ``HF_HUB_CACHE``, else ``HF_HOME/hub``, else the library default."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def _endpoint() -> str | None:
    return os.environ.get("HF_ENDPOINT") or None


def _etag_timeout() -> float:
    try:
        return float(os.environ.get("HF_HUB_ETAG_TIMEOUT") or 10)
    except ValueError:
        return 10.0


INSTALLED_WEIGHTS_SUBDIR = "share/defocus-cli/weights"
"""Where an installed wheel puts ``weights/`` (pyproject ``[tool.setuptools.data-files]``), under its data prefix."""


def weights_dirs() -> list[Path]:
    """Folders searched for the project's own weight files, in order.

    ``$DEFOCUS_WEIGHTS_DIR`` if set (only that); else the clone's ``weights/`` (next to the package,
    when a ``pyproject.toml`` marks a source tree) and the installed copy
    ``<prefix>/share/defocus-cli/weights`` (environment prefix, then the user base).
    """
    env = os.environ.get("DEFOCUS_WEIGHTS_DIR")
    if env:
        return [Path(env).expanduser()]
    import site
    import sys
    import sysconfig

    root = Path(__file__).resolve().parent.parent
    dirs = [root / "weights"] if (root / "pyproject.toml").is_file() else []
    prefixes = [sysconfig.get_path("data"), sys.prefix, getattr(site, "USER_BASE", None)]
    for prefix in prefixes:
        if prefix:
            d = Path(prefix) / INSTALLED_WEIGHTS_SUBDIR
            if d not in dirs:
                dirs.append(d)
    return dirs


# ----------------------------------------------------------------------------------------------
# Hashing


def sha256_file(path: str | Path, *, use_memo: bool = True) -> str:
    """Hex sha256 of a file's bytes. Results are memoised per process by (real path, size, mtime)."""
    p = Path(path)
    st = p.stat()
    key = (str(p.resolve()), st.st_size, st.st_mtime_ns)
    if use_memo and key in _HASH_MEMO:
        return _HASH_MEMO[key]
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    digest = h.hexdigest()
    _HASH_MEMO[key] = digest
    return digest


def _is_lfs_pointer(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(len(_LFS_POINTER_PREFIX)) == _LFS_POINTER_PREFIX
    except OSError:
        return False


# ----------------------------------------------------------------------------------------------
# Local copies


def weights_dir_file(spec: ModelSpec) -> Path | None:
    """The project's copy of ``spec`` (``weights/<filename>``) if present and not a git-lfs pointer."""
    for d in weights_dirs():
        p = d / spec.filename
        if p.is_file():
            if _is_lfs_pointer(p):
                log.info("%s is a git-lfs pointer, not the weights (run `git lfs pull`); skipping it", p)
                continue
            return p
    return None


def cached_file(spec: ModelSpec) -> Path | None:
    """The HF cache's copy of ``spec`` at its pinned revision, or ``None``. No network."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(
        spec.repo_id, spec.filename, cache_dir=str(hub_cache_dir()), revision=spec.revision
    )
    return Path(found) if isinstance(found, str) else None


def local_copies(spec: ModelSpec) -> list[tuple[Source, Path]]:
    """Every local copy of ``spec``: the ``weights/`` one, then the HF cache one (unverified). No network."""
    out: list[tuple[Source, Path]] = []
    w = weights_dir_file(spec)
    if w is not None:
        out.append(("weights-dir", w))
    c = cached_file(spec)
    if c is not None:
        out.append(("hf-cache", c))
    return out


def evict_cached(path: Path) -> None:
    """Delete an HF-cache snapshot file and the blob it points to (never anything outside the cache)."""
    cache = hub_cache_dir().resolve()
    for t in (Path(path), Path(os.path.realpath(path))):
        parent = Path(os.path.realpath(t.parent))
        if parent != cache and cache not in parent.parents:
            log.warning("not deleting %s: outside the HF cache %s", t, cache)
            continue
        try:
            t.unlink(missing_ok=True)
        except OSError as e:  # pragma: no cover - permissions
            log.warning("could not delete %s: %s", t, e)


def check_file(spec: ModelSpec, path: Path, source: Source, *, use_memo: bool = True) -> str:
    """Check ``path`` against ``spec.sha256``; return the digest.

    Raises:
        WeightsError: mismatch. An HF-cache file is deleted first; a ``weights/`` file is left alone.
    """
    digest = sha256_file(path, use_memo=use_memo)
    if digest == spec.sha256:
        return digest
    size = path.stat().st_size
    found = f"sha256 {digest[:12]}…, {size} bytes; expected {spec.sha256[:12]}…, {spec.size} bytes"
    if source == "weights-dir":
        raise WeightsError(
            f"{path} does not match the registry entry of {spec.name!r} ({found}); refusing to load it — "
            f"restore the file, re-register it with tools/register_weights.py, or move it away to use the Hub copy"
        )
    evict_cached(path)
    if source == "hub":
        raise WeightsError(
            f"the file downloaded for {spec.name!r} does not match the registry ({found}); deleted it — "
            f"the Hub or a proxy served wrong bytes, retry later or check HF_ENDPOINT"
        )
    raise WeightsError(
        f"cached weights of {spec.name!r} at {path} are corrupt ({found}); deleted them — "
        f"run `defocus models download {spec.name}` to fetch them again"
    )


# ----------------------------------------------------------------------------------------------
# The Hub


def _describe_hub_error(e: BaseException) -> str:
    response = getattr(e, "response", None)
    status = getattr(response, "status_code", None)
    if status == 404:
        return "not found on the Hub (HTTP 404)"
    if status is not None:
        return f"the Hub answered HTTP {status}"
    name = type(e).__name__
    if "Timeout" in name:
        return "the Hub did not answer in time (HF_HUB_ETAG_TIMEOUT / HF_HUB_DOWNLOAD_TIMEOUT)"
    if "Connect" in name:
        return "cannot connect to the Hub"
    msg = str(e).splitlines()[0] if str(e) else name
    return f"{name}: {msg}"


def download(spec: ModelSpec, *, force: bool = False) -> Resolved:
    """Fetch ``spec``'s file from the Hub into the HF cache (pinned revision) and verify it.

    A valid cached copy is a cache hit (no network: the revision is a commit). A corrupt cached copy
    is deleted and fetched again. Offline, only the cache is consulted.

    Raises:
        WeightsError: offline and not cached; the Hub failed (404, 5xx, timeout, truncated body);
            the downloaded bytes do not match the registry (the file is deleted).
    """
    cached = cached_file(spec)
    if cached is not None and not force:
        try:
            return Resolved(cached, "hf-cache", check_file(spec, cached, "hf-cache"))
        except WeightsError as e:
            if is_offline():
                raise
            log.warning("%s; downloading again", e)
    if is_offline():
        raise WeightsError(
            f"weights of {spec.name!r} are not in the HF cache ({hub_cache_dir()}) and offline mode is on "
            f"(HF_HUB_OFFLINE/DEFOCUS_OFFLINE); run `defocus models download {spec.name}` with network access first"
        )
    from huggingface_hub import get_hf_file_metadata, hf_hub_download, hf_hub_url

    where = f"{spec.repo_id}@{spec.revision[:8]}/{spec.filename}"
    endpoint = _endpoint()
    # One bounded metadata request without retries first, so that a down Hub fails in seconds
    # (hf_hub_download itself retries 5xx/timeouts with backoff for up to minutes).
    try:
        meta = get_hf_file_metadata(
            hf_hub_url(spec.repo_id, spec.filename, revision=spec.revision, endpoint=endpoint),
            timeout=_etag_timeout(),
            endpoint=endpoint,
            library_name="defocus_cli",
            library_version=__version__,
        )
    except Exception as e:  # noqa: BLE001 - any failure of the Hub is "weights unavailable"
        raise WeightsError(
            f"cannot download {spec.name!r} ({where}) from {endpoint or 'https://huggingface.co'}: "
            f"{_describe_hub_error(e)}; check the connection or HF_ENDPOINT and retry"
        ) from e
    if meta.etag and len(meta.etag) == 64 and meta.etag != spec.sha256:
        raise WeightsError(
            f"the Hub serves a different file for {spec.name!r} ({where}: sha256 {meta.etag[:12]}…, "
            f"expected {spec.sha256[:12]}…); not downloading it — update defocus_cli or report this"
        )
    try:
        path = Path(
            hf_hub_download(
                spec.repo_id,
                spec.filename,
                revision=spec.revision,
                cache_dir=str(hub_cache_dir()),
                endpoint=endpoint,
                etag_timeout=_etag_timeout(),
                force_download=force or cached is not None,
                library_name="defocus_cli",
                library_version=__version__,
            )
        )
    except Exception as e:  # noqa: BLE001
        raise WeightsError(
            f"cannot download {spec.name!r} ({where}): {_describe_hub_error(e)}; nothing was kept, retry later"
        ) from e
    digest = check_file(spec, path, "hub", use_memo=False)
    log.info("downloaded %s to %s", spec.name, path)
    return Resolved(path, "hub", digest)


def resolve(spec: ModelSpec, *, allow_download: bool = True) -> Resolved:
    """Find a verified local file for ``spec``: ``weights/`` → HF cache → Hub (see module docstring).

    Raises:
        WeightsError: not available (offline and not cached, download failed) or integrity check failed.
    """
    w = weights_dir_file(spec)
    if w is not None:
        return Resolved(w, "weights-dir", check_file(spec, w, "weights-dir"))
    c = cached_file(spec)
    if c is not None:
        try:
            return Resolved(c, "hf-cache", check_file(spec, c, "hf-cache"))
        except WeightsError:
            if not allow_download or is_offline():
                raise
    if not allow_download:
        raise WeightsError(
            f"weights of {spec.name!r} are not available locally; run `defocus models download {spec.name}`"
        )
    return download(spec)


def verify(spec: ModelSpec) -> list[tuple[Source, Path, str | None]]:
    """Hash every local copy of ``spec`` (no memo, no network).

    Returns:
        ``(source, path, error)`` per copy; ``error`` is ``None`` when the sha256 matches. A corrupt
        HF-cache copy is deleted. An empty list means no local copy exists.
    """
    out: list[tuple[Source, Path, str | None]] = []
    for source, path in local_copies(spec):
        try:
            check_file(spec, path, source, use_memo=False)
            out.append((source, path, None))
        except WeightsError as e:
            out.append((source, path, str(e)))
    return out


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
        model_name = name if name is not None else registry.default_model(task)  # type: ignore[arg-type]
        spec = registry.get_spec(model_name)
        if spec.task != task:
            raise UsageError(
                f"model {spec.name!r} is a {spec.task} model, not {task}; expected one of: "
                f"{', '.join(registry.names(task)) or '(none registered)'}"  # type: ignore[arg-type]
            )
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


def iter_specs(names: list[str] | None) -> Iterator[ModelSpec]:
    """Specs for ``names`` (all registered models when empty/None); unknown names raise UsageError first."""
    specs = [registry.get_spec(n) for n in names] if names else list(registry.MODELS)
    yield from specs
