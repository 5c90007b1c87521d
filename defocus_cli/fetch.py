"""Weight files: find a registered model's file, download it, verify its sha256.

Resolution order for a registered model (:func:`resolve`):

1. the project's ``weights/`` folder (a clone's ``weights/``, or ``<prefix>/share/defocus-cli/weights``
   where an installed wheel puts it, or ``$DEFOCUS_WEIGHTS_DIR``);
2. the Hugging Face cache (``HF_HUB_CACHE``, else ``HF_HOME/hub``) at the pinned revision;
3. ``hf_hub_download`` from ``HF_ENDPOINT`` at the pinned revision, unless offline
   (``HF_HUB_OFFLINE=1`` or ``DEFOCUS_OFFLINE=1`` → cache only, no HTTP at all).

The sha256 of every file is checked against the registry before it is used. A mismatch raises
:class:`WeightsError` (exit 3); a bad file in the HF cache is deleted so it is never used again,
a bad file in ``weights/`` is refused but left alone (it is the project's, not ours to delete).

Building the network from the verified file is :mod:`defocus_cli.weights`' job. Environment variables are
read at call time (not import time), so a long-lived process honours changes. This module imports no torch.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from defocus_cli import registry
from defocus_cli._version import __version__
from defocus_cli.errors import WeightsError
from defocus_cli.registry import ModelSpec

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



def iter_specs(names: list[str] | None) -> Iterator[ModelSpec]:
    """Specs for ``names`` (all registered models when empty/None); unknown names raise UsageError first."""
    specs = [registry.get_spec(n) for n in names] if names else list(registry.MODELS)
    yield from specs
