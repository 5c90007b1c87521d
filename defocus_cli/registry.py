"""The model registry: every model the product offers, described as data. Imports no torch.

Nothing else in the code knows where weights live: :mod:`defocus_cli.weights` resolves a
:class:`ModelSpec` to a verified local file, and :func:`build` instantiates its architecture lazily
from the ``"module:Class"`` string.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from defocus_cli.errors import UsageError

if TYPE_CHECKING:  # pragma: no cover
    import torch

Task = Literal["deblur", "map"]


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


# Filled in as trained weights land (sha256/size/revision are of the files in weights/).
MODELS: tuple[ModelSpec, ...] = ()


def names(task: Task | None = None) -> list[str]:
    """Names of the registered models, optionally only those of one task."""
    return [m.name for m in MODELS if task is None or m.task == task]


def get_spec(name: str) -> ModelSpec:
    """Return the spec called ``name``; raise :class:`UsageError` listing the valid names."""
    for m in MODELS:
        if m.name == name:
            return m
    raise UsageError(f"unknown model {name!r}; expected one of: {', '.join(names()) or '(none registered)'}")


def load_class(arch: str) -> type:
    """Import ``"package.module:Class"`` and return the class."""
    module_name, _, cls_name = arch.partition(":")
    return getattr(importlib.import_module(module_name), cls_name)


def build(spec: ModelSpec) -> "torch.nn.Module":
    """Instantiate the (untrained) network of ``spec``; weights are loaded by :mod:`defocus_cli.weights`."""
    return load_class(spec.arch)(**spec.config)


# Architectures by the names used on the command line (``models convert --arch``, ``train``).
ARCHS: dict[str, str] = {
    "ifan": "defocus_cli.archs.ifan:IFAN",
    "defocusgan": "defocus_cli.archs.defocusgan:DefocusGAN",
    "defocusgan-map": "defocus_cli.archs.defocusgan_map:DefocusMapNet",
    "sftnet": "defocus_cli.archs.sftnet:SFTNet",
}
