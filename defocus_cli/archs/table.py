"""The arch table: one typed row per network architecture, the only list of architectures in the code.

Everything that needs to know which architectures exist reads this table: the model registry
(:data:`defocus_cli.registry.ARCHS`, :data:`~defocus_cli.registry.ARCH_TASKS`), the weight loader (the
``"arch"`` and ``"config"`` metadata of a ``.safetensors`` file), ``defocus models convert``
(:mod:`defocus_cli.convert`), ``defocus train`` (:data:`defocus_cli.train.TRAINERS`) and the CLI's help
texts. Adding an architecture = its network file in this folder plus one :class:`ArchSpec` row in
:data:`ARCH_TABLE` (see ``ARCHITECTURE.md``).

A row is data: classes and trainers are ``"module:Class"`` / module strings, imported only when used, so
this module imports neither torch nor any other part of the package. ``multiple_of``, ``receptive_field``
and ``safe_precisions`` restate the class attributes that the runtime reads from a built network; a test
builds every row and checks that the two agree.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal, TypeVar

Task = Literal["deblur", "map"]
TASKS: tuple[str, ...] = ("deblur", "map")
PRECISIONS: tuple[str, ...] = ("fp32", "bf16", "fp16")

V = TypeVar("V")


@dataclass(frozen=True)
class ConfigRule:
    """The values one constructor setting in a weight file's ``config`` metadata may take.

    Attributes:
        kind: ``"int"``; ``"float"`` (a number, or ``None``); ``"ints"`` (a list of 1-16 integers).
        lo, hi: the inclusive range of the value (of each list item for ``"ints"``).
    """

    kind: Literal["int", "float", "ints"]
    lo: float
    hi: float


@dataclass(frozen=True)
class Converter:
    """How ``defocus models convert`` maps an official upstream checkpoint's keys onto the network's.

    Attributes:
        drop: key prefixes of training-only tensors (left out of the converted file).
        strip: prefixes removed from the remaining keys (the first that applies); unprefixed keys stay as they are.
    """

    drop: tuple[str, ...] = ()
    strip: tuple[str, ...] = ()


@dataclass(frozen=True)
class ArchSpec:
    """One architecture.

    Attributes:
        key: its name on the command line (``models convert --arch``, ``train``) and in the ``"arch"``
            safetensors metadata of every weight file.
        target: ``"module:Class"`` of the network, imported lazily by :func:`defocus_cli.registry.load_class`.
        task: ``"deblur"`` (image in, image out) or ``"map"`` (DP pair in, defocus map out).
        multiple_of: the size multiple the network needs; the engine pads inputs to it (reflect, replicate where
            the image is too small) and aligns tiles to it.
        receptive_field: context pixels per tile side for near-seamless tiles (the default ``--overlap``).
        safe_precisions: the precisions the network is validated in, among :data:`PRECISIONS`.
        config: constructor settings a weight file's ``config`` metadata may set, with their ranges;
            anything else is refused before a network is built.
        trainer: module of its trainer (``train(opts) -> dict``), or ``None`` when it cannot be trained here.
        converter: official checkpoint layout for ``defocus models convert``, or ``None`` when there is none.
    """

    key: str
    target: str
    task: Task
    multiple_of: int
    receptive_field: int
    safe_precisions: tuple[str, ...]
    config: Mapping[str, ConfigRule] = field(default_factory=dict)
    trainer: str | None = None
    converter: Converter | None = None

    def __post_init__(self) -> None:
        """Refuse a malformed row (a programming error, raised when this module is imported)."""
        module, sep, cls = self.target.partition(":")
        problems = [
            f"target {self.target!r} is not 'module:Class'" if not (module and sep and cls) else "",
            f"task {self.task!r} is not one of {TASKS}" if self.task not in TASKS else "",
            f"multiple_of {self.multiple_of} < 1" if self.multiple_of < 1 else "",
            f"receptive_field {self.receptive_field} < 0" if self.receptive_field < 0 else "",
            f"safe_precisions {self.safe_precisions} must start with 'fp32' and be among {PRECISIONS}"
            if not self.safe_precisions or self.safe_precisions[0] != "fp32"
            or not set(self.safe_precisions) <= set(PRECISIONS) else "",
        ]
        problems = [p for p in problems if p]
        if problems:
            raise ValueError(f"arch table row {self.key!r}: {'; '.join(problems)}")
        object.__setattr__(self, "config", MappingProxyType(dict(self.config)))


_GAN_CONFIG = {"channels": ConfigRule("int", 1, 256), "kernel_sizes": ConfigRule("ints", 1, 31)}

ARCH_TABLE: tuple[ArchSpec, ...] = (
    ArchSpec(
        key="ifan", target="defocus_cli.archs.ifan:IFAN", task="deblur",
        multiple_of=8, receptive_field=48, safe_precisions=("fp32", "bf16"),
        config={"ch": ConfigRule("int", 1, 256), "n_iters": ConfigRule("int", 1, 64),
                "filter_size": ConfigRule("int", 1, 15), "res_num": ConfigRule("int", 1, 16),
                "coc_per_dme": ConfigRule("float", -1e4, 1e4)},
        trainer="defocus_cli.train.ifan",
        converter=Converter(drop=("module.reblurNet.", "reblurNet."), strip=("module.Network.", "Network.", "module.")),
    ),
    ArchSpec(
        key="defocusgan", target="defocus_cli.archs.defocusgan:DefocusGAN", task="deblur",
        multiple_of=16, receptive_field=128, safe_precisions=("fp32", "bf16", "fp16"),
        config=_GAN_CONFIG, trainer="defocus_cli.train.defocusgan", converter=Converter(strip=("module.",)),
    ),
    ArchSpec(
        key="defocusgan-map", target="defocus_cli.archs.defocusgan_map:DefocusMapNet", task="map",
        multiple_of=16, receptive_field=96, safe_precisions=("fp32", "bf16", "fp16"),
        config=_GAN_CONFIG, trainer="defocus_cli.train.defocusgan", converter=Converter(strip=("module.",)),
    ),
    ArchSpec(
        key="sftnet", target="defocus_cli.archs.sftnet:SFTNet", task="deblur",
        multiple_of=4, receptive_field=48, safe_precisions=("fp32", "bf16", "fp16"),
        config={"ch": ConfigRule("int", 1, 256), "n_blocks": ConfigRule("int", 1, 64),
                "cond_ch": ConfigRule("int", 1, 256), "map_ch": ConfigRule("int", 1, 256),
                "map_blocks": ConfigRule("int", 1, 64)},
        trainer="defocus_cli.train.sftnet",
    ),
)
"""Every architecture, in the order the CLI lists them."""


def index(rows: tuple[ArchSpec, ...]) -> dict[str, ArchSpec]:
    """``key -> row`` of ``rows``.

    Raises:
        ValueError: two rows share a key or a target (a target must name one key, the ``"arch"`` of its files).
    """
    out: dict[str, ArchSpec] = {}
    targets: dict[str, str] = {}
    for row in rows:
        if row.key in out:
            raise ValueError(f"arch table: {row.key!r} is listed twice")
        if row.target in targets:
            raise ValueError(f"arch table: {row.key!r} and {targets[row.target]!r} both name {row.target}")
        out[row.key] = row
        targets[row.target] = row.key
    return out


_BY_KEY: dict[str, ArchSpec] = index(ARCH_TABLE)
"""The table by key. Every view below reads it live; tests add a stand-in arch here with ``monkeypatch.setitem``."""


class TableView(Mapping[str, V]):
    """A read-only, live ``key -> value`` view of the arch table: ``value = pick(row)`` for the rows ``keep``
    accepts. The registry's old dictionaries (``ARCHS``, ``ARCH_TASKS``, ``TRAINERS``) are such views."""

    def __init__(self, pick: Callable[[ArchSpec], V], keep: Callable[[ArchSpec], bool] = lambda row: True) -> None:
        self._pick = pick
        self._keep = keep

    def __getitem__(self, key: str) -> V:
        row = _BY_KEY.get(key)
        if row is None or not self._keep(row):
            raise KeyError(key)
        return self._pick(row)

    def __iter__(self) -> Iterator[str]:
        return iter([key for key, row in _BY_KEY.items() if self._keep(row)])

    def __len__(self) -> int:
        return sum(1 for row in _BY_KEY.values() if self._keep(row))

    def __repr__(self) -> str:
        return f"TableView({dict(self)!r})"


ARCH_SPECS: Mapping[str, ArchSpec] = TableView(lambda row: row)
"""Every row by key (read-only)."""


def key_of_target(target: str) -> str | None:
    """The key of the row whose :attr:`ArchSpec.target` is ``target``, or ``None``."""
    for key, row in _BY_KEY.items():
        if row.target == target:
            return key
    return None


def trainable() -> tuple[str, ...]:
    """Keys of the architectures that have a trainer, in table order."""
    return tuple(key for key, row in _BY_KEY.items() if row.trainer is not None)


def convertible() -> tuple[str, ...]:
    """Keys of the architectures with an official checkpoint layout (``defocus models convert``), in table order."""
    return tuple(key for key, row in _BY_KEY.items() if row.converter is not None)
