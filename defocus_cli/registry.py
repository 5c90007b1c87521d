"""The model registry: every model the product offers, described as data. Imports no torch.

The entries live in ``defocus_cli/models.json`` (shipped as package data), written by
``tools/register_weights.py`` from the files in ``weights/``. Nothing else in the code knows where
weights live: :mod:`defocus_cli.fetch` resolves a :class:`ModelSpec` to a verified local file, and
:func:`build` instantiates its architecture lazily from the ``"module:Class"`` string.

``DEFOCUS_REGISTRY=/path/to/models.json`` replaces the shipped registry (a private mirror's own
entries, or tests).

Registry file format (JSON)::

    {"defaults": {"deblur": "ifan", "map": "defocusgan-map"},
     "models": [{"name": "ifan", "task": "deblur", "arch": "ifan", "repo_id": "defocus-cli/ifan",
                 "filename": "ifan.safetensors", "revision": "<40 hex>", "sha256": "<64 hex>",
                 "size": 123, "license": "...", "summary": "...", "card": "ifan.md", "config": {}}]}

``arch`` is a key of :data:`ARCHS` (the same value as the ``"arch"`` safetensors metadata) or a
full ``"module:Class"`` string. The architectures themselves are rows of the arch table
(:mod:`defocus_cli.archs.table`); :data:`ARCHS` and :data:`ARCH_TASKS` are read-only views of it.
"""

from __future__ import annotations

import importlib
import json
import os
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from defocus_cli.archs.table import ARCH_SPECS, TASKS, ArchSpec, TableView, Task, key_of_target
from defocus_cli.errors import UsageError, WeightsError

if TYPE_CHECKING:  # pragma: no cover
    import torch

REGISTRY_FILE = Path(__file__).with_name("models.json")
"""The shipped registry data file."""

ARCHS: Mapping[str, str] = TableView(lambda row: row.target)
"""``"module:Class"`` of each architecture by key (the names used on the command line, ``models convert
--arch`` and ``train``, and in the ``"arch"`` safetensors metadata of every weight file). A read-only view of
:data:`defocus_cli.archs.table.ARCH_TABLE`."""

ARCH_TASKS: Mapping[str, Task] = TableView(lambda row: row.task)
"""Task of each architecture key (what kind of model a user's own weight file is); a view of the arch table."""

_HEX40 = re.compile(r"[0-9a-f]{40}")
_HEX64 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class ModelSpec:
    """One shipped model.

    Attributes:
        name: CLI name (``ifan``, ``defocusgan``, ``sftnet``, ``defocusgan-map``).
        task: ``"deblur"`` (image in, image out) or ``"map"`` (DP pair in, CoC map out).
        arch: ``"module:Class"`` of the network, resolved lazily by :func:`build`.
        repo_id: Hugging Face Hub repository holding the weights.
        filename: file name in that repository and in the project's ``weights/`` folder.
        revision: pinned 40-hex commit of the Hub repository (never a branch name).
        sha256: hex digest of the safetensors file; checked before every load.
        size: file size in bytes.
        license: licence of the weights.
        summary: one line on what it was trained on and how well it does.
        card: model card file name in ``weights/``.
        config: constructor keyword arguments for the arch.
        experimental: empty for a model we stand behind; otherwise why it is not (e.g. it makes real photos
            worse on average). An experimental model is never a task's default and ``models list`` says why.
        openvino: the model's exported OpenVINO IR, empty when it has none (see
            :mod:`defocus_cli.backends.openvino`): ``source_sha256`` (the safetensors file it was exported
            from), ``files`` (per IR precision: ``xml``/``bin`` file names in ``weights/`` with their ``*_sha256``),
            ``gate`` (per backend precision: the quality gate's numbers and ``passed``), and the measured
            ``bytes_per_pixel`` and ``auto`` rule (per CPU class) that ``--backend auto`` reads.
    """

    name: str
    task: Task
    arch: str
    repo_id: str
    filename: str
    revision: str
    sha256: str
    size: int
    license: str
    summary: str
    card: str
    config: dict[str, Any] = field(default_factory=dict)
    experimental: str = ""
    openvino: dict[str, Any] = field(default_factory=dict)

    @property
    def arch_key(self) -> str:
        """The :data:`ARCHS` key of :attr:`arch` (e.g. ``"ifan"``), or :attr:`arch` itself if unlisted."""
        return key_of_target(self.arch) or self.arch

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict in the registry file format (``arch`` as an :data:`ARCHS` key where possible)."""
        d = asdict(self)
        d["arch"] = self.arch_key
        if not d["experimental"]:
            del d["experimental"]
        if not d["openvino"]:
            del d["openvino"]
        return d


def spec_from_dict(d: dict[str, Any]) -> ModelSpec:
    """Validate one registry entry and return its :class:`ModelSpec`.

    Raises:
        WeightsError: a field is missing or malformed (the registry file is broken).
    """
    required = ("name", "task", "arch", "repo_id", "filename", "revision", "sha256", "size")
    missing = [k for k in required if k not in d]
    name = d.get("name", "?")
    if missing:
        raise WeightsError(f"registry entry {name!r} lacks {', '.join(missing)}; re-run tools/register_weights.py")
    arch = str(d["arch"])
    if ":" not in arch:
        if arch not in ARCHS:
            raise WeightsError(f"registry entry {name!r}: unknown arch {arch!r}; expected one of {', '.join(ARCHS)}")
        arch = ARCHS[arch]
    if d["task"] not in TASKS:
        raise WeightsError(f"registry entry {name!r}: task {d['task']!r}, expected one of {', '.join(TASKS)}")
    if not _HEX40.fullmatch(str(d["revision"])):
        raise WeightsError(f"registry entry {name!r}: revision must be a 40-hex commit, found {d['revision']!r}")
    if not _HEX64.fullmatch(str(d["sha256"])):
        raise WeightsError(f"registry entry {name!r}: sha256 must be 64 hex digits, found {d['sha256']!r}")
    return ModelSpec(
        name=str(d["name"]),
        task=d["task"],
        arch=arch,
        repo_id=str(d["repo_id"]),
        filename=str(d["filename"]),
        revision=str(d["revision"]),
        sha256=str(d["sha256"]),
        size=int(d["size"]),
        license=str(d.get("license", "")),
        summary=str(d.get("summary", "")),
        card=str(d.get("card", "")),
        config=dict(d.get("config") or {}),
        experimental=str(d.get("experimental", "") or ""),
        openvino=_openvino_entry(name, d.get("openvino")),
    )


def _openvino_entry(name: str, value: Any) -> dict[str, Any]:
    """The ``openvino`` field of a registry entry, checked for shape (empty when absent)."""
    if not value:
        return {}
    if not isinstance(value, dict) or not _HEX64.fullmatch(str(value.get("source_sha256", ""))):
        raise WeightsError(f"registry entry {name!r}: malformed 'openvino' field; re-run tools/export_openvino.py")
    for prec, files in (value.get("files") or {}).items():
        ok = isinstance(files, dict) and all(
            isinstance(files.get(k), str) for k in ("xml", "bin")) and all(
            _HEX64.fullmatch(str(files.get(k, ""))) for k in ("xml_sha256", "bin_sha256"))
        if not ok:
            raise WeightsError(f"registry entry {name!r}: OpenVINO IR {prec!r} lacks file names or sha256 pins; "
                               "re-run tools/export_openvino.py")
    return dict(value)


def read_registry(path: str | Path | None = None) -> tuple[tuple[ModelSpec, ...], dict[str, str]]:
    """Read a registry JSON file; return ``(models, defaults)``. A missing file is an empty registry.

    Args:
        path: the file; default ``$DEFOCUS_REGISTRY`` or the shipped :data:`REGISTRY_FILE`.
    """
    p = Path(path) if path is not None else Path(os.environ.get("DEFOCUS_REGISTRY") or REGISTRY_FILE)
    if not p.is_file():
        if path is not None or os.environ.get("DEFOCUS_REGISTRY"):
            raise WeightsError(f"registry file {p} not found; check DEFOCUS_REGISTRY")
        return (), {}
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise WeightsError(f"registry file {p} is not valid JSON ({e}); re-run tools/register_weights.py") from None
    models = tuple(spec_from_dict(d) for d in data.get("models", []))
    seen: set[str] = set()
    for m in models:
        if m.name in seen:
            raise WeightsError(f"registry file {p}: model {m.name!r} is listed twice")
        seen.add(m.name)
    return models, {str(k): str(v) for k, v in (data.get("defaults") or {}).items()}


MODELS: tuple[ModelSpec, ...]
"""Every registered model (empty until trained weights are registered)."""
DEFAULTS: dict[str, str]
"""Default model name per task (e.g. ``{"deblur": "ifan"}``)."""
MODELS, DEFAULTS = read_registry()


def names(task: Task | None = None) -> list[str]:
    """Names of the registered models, optionally only those of one task."""
    return [m.name for m in MODELS if task is None or m.task == task]


def get_spec(name: str) -> ModelSpec:
    """Return the spec called ``name``; raise :class:`UsageError` listing the valid names."""
    for m in MODELS:
        if m.name == name:
            return m
    raise UsageError(f"unknown model {name!r}; expected one of: {', '.join(names()) or '(none registered)'}")


def task_spec(name: str | None, task: Task) -> ModelSpec:
    """The registered model ``name`` (``None`` = :func:`default_model` of ``task``), which must be a ``task``
    model; raise :class:`UsageError` naming the valid names otherwise."""
    spec = get_spec(name if name is not None else default_model(task))
    if spec.task != task:
        raise UsageError(
            f"model {spec.name!r} is a {spec.task} model, not {task}; expected one of: "
            f"{', '.join(names(task)) or '(none registered)'}"
        )
    return spec


def default_model(task: Task = "deblur") -> str:
    """Name of the default model of ``task``: the registry's ``defaults`` entry, else the first of that task;
    experimental models (:attr:`ModelSpec.experimental`) are never picked.

    Raises:
        WeightsError: no model of that task is registered (pass ``--weights FILE`` instead).
    """
    candidates = [m.name for m in MODELS if m.task == task and not m.experimental]
    name = DEFAULTS.get(task)
    if name is not None and name in candidates:
        return name
    if not candidates:
        raise WeightsError(
            f"no trained {task} model is registered in this build; pass your own file with --weights FILE.safetensors"
        )
    return candidates[0]


def arch_spec(key: str) -> ArchSpec | None:
    """The arch table row of ``key`` (an :data:`ARCHS` key), or ``None`` for a key the table lacks."""
    return ARCH_SPECS.get(key)


def load_class(arch: str) -> type:
    """Import ``"package.module:Class"`` (or an :data:`ARCHS` key) and return the class.

    Raises:
        WeightsError: the module or class does not exist in this installation.
    """
    target = ARCHS.get(arch, arch)
    module_name, _, cls_name = target.partition(":")
    try:
        return getattr(importlib.import_module(module_name), cls_name)
    except (ImportError, AttributeError) as e:
        raise WeightsError(f"architecture {target!r} is not available in this installation ({e})") from e


def build(spec: ModelSpec) -> "torch.nn.Module":
    """Instantiate the (untrained) network of ``spec``; weights are loaded by :mod:`defocus_cli.weights`."""
    return load_class(spec.arch)(**spec.config)
