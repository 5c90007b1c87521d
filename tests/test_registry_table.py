"""The arch table (defocus_cli.archs.table): one row per architecture, read by the registry, the weight
loader, convert, train and the CLI; duplicates and malformed rows raise; every row agrees with its class."""

from __future__ import annotations

import importlib.util
import inspect
import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import save_file
from typer.testing import CliRunner

from defocus_cli import registry, weights
from defocus_cli.archs import table
from defocus_cli.errors import UsageError, WeightsError

ROWS = table.ARCH_TABLE
KEYS = [row.key for row in ROWS]


def test_keys_and_targets_are_unique_and_duplicates_raise() -> None:
    assert len(set(KEYS)) == len(KEYS) == len(table.ARCH_SPECS)
    ifan = table.ARCH_SPECS["ifan"]
    with pytest.raises(ValueError, match="'ifan' is listed twice"):
        table.index((ifan, replace(ifan, target="x.y:Z")))
    with pytest.raises(ValueError, match="both name defocus_cli.archs.ifan:IFAN"):
        table.index((ifan, replace(ifan, key="ifan2")))
    assert list(table.index(ROWS)) == KEYS


@pytest.mark.parametrize(
    ("change", "message"),
    [({"target": "defocus_cli.archs.ifan"}, "not 'module:Class'"), ({"task": "upscale"}, "task 'upscale'"),
     ({"multiple_of": 0}, "multiple_of 0"), ({"receptive_field": -1}, "receptive_field -1"),
     ({"safe_precisions": ("bf16",)}, "safe_precisions"), ({"safe_precisions": ("fp32", "int8")}, "safe_precisions")],
)
def test_a_malformed_row_raises(change: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        replace(table.ARCH_SPECS["sftnet"], **change)


def test_the_old_names_are_read_only_views_of_the_table() -> None:
    from defocus_cli import train
    from defocus_cli.cli import train as cli_train

    assert dict(registry.ARCHS) == {row.key: row.target for row in ROWS}
    assert dict(registry.ARCH_TASKS) == {row.key: row.task for row in ROWS}
    assert dict(train.TRAINERS) == {row.key: row.trainer for row in ROWS if row.trainer}
    assert cli_train.MODELS == table.trainable() == tuple(k for k in KEYS if table.ARCH_SPECS[k].trainer)
    assert table.convertible() == ("ifan", "defocusgan", "defocusgan-map")
    for view in (registry.ARCHS, registry.ARCH_TASKS, train.TRAINERS, table.ARCH_SPECS):
        with pytest.raises(TypeError):
            view["new"] = "x"  # type: ignore[index]
    with pytest.raises(KeyError):
        train.TRAINERS["nope"]


def test_a_new_row_reaches_every_reader(monkeypatch: pytest.MonkeyPatch) -> None:
    """One row added to the table shows up in the registry, the trainers, convert and the config rules."""
    from defocus_cli import train

    row = table.ArchSpec(key="newnet", target="defocus_cli.archs.sftnet:SFTNet", task="map", multiple_of=2,
                         receptive_field=3, safe_precisions=("fp32",), config={"ch": table.ConfigRule("int", 1, 4)},
                         trainer="defocus_cli.train.sftnet", converter=table.Converter(strip=("m.",)))
    assert "newnet" not in registry.ARCHS
    monkeypatch.setitem(table._BY_KEY, "newnet", row)
    assert registry.ARCHS["newnet"] == row.target and registry.ARCH_TASKS["newnet"] == "map"
    assert train.TRAINERS["newnet"] == "defocus_cli.train.sftnet" and "newnet" in table.trainable()
    assert "newnet" in table.convertible() and registry.arch_spec("newnet") is row
    assert weights.validate_config("newnet", {"ch": 4}, "f") == {"ch": 4}
    with pytest.raises(WeightsError, match=r"expected an integer in \[1, 4\]"):
        weights.validate_config("newnet", {"ch": 5}, "f")


@pytest.mark.parametrize("key", KEYS)
def test_each_row_agrees_with_its_class(key: str) -> None:
    """The class exists, its runtime attributes equal the row's, every allowed config key is a constructor
    argument, and the trainer module exists."""
    row = table.ARCH_SPECS[key]
    cls = registry.load_class(key)
    assert f"{cls.__module__}:{cls.__qualname__}" == row.target
    assert (cls.multiple_of, cls.receptive_field, tuple(cls.safe_precisions)) == (
        row.multiple_of, row.receptive_field, row.safe_precisions)
    params = inspect.signature(cls.__init__).parameters
    assert set(row.config) <= set(params), set(row.config) - set(params)
    if row.trainer is not None:
        assert importlib.util.find_spec(row.trainer) is not None, row.trainer


# ------------------------------------------------------------------------------------------------
# --model ARCH together with --weights FILE


def _small_defocusgan_file(path: Path) -> None:
    from defocus_cli.archs.defocusgan import DefocusGAN

    torch.manual_seed(0)
    net = DefocusGAN(channels=4, kernel_sizes=(1,))
    config = json.dumps({"channels": 4, "kernel_sizes": [1]})
    save_file(dict(net.state_dict()), str(path), metadata={"arch": "defocusgan", "config": config})


def test_load_model_accepts_the_files_own_arch_name(tmp_path: Path) -> None:
    f = tmp_path / "converted.safetensors"
    _small_defocusgan_file(f)
    assert "defocusgan" not in registry.names()  # an architecture, not a registered model
    m = weights.load_model("defocusgan", weights_file=f)
    assert (m.name, m.arch, m.spec) == ("converted", "defocusgan", None)
    assert m.module.head[0].out_channels == 4  # the file's config metadata was used
    with pytest.raises(UsageError, match="unknown model 'defocus-gan'"):
        weights.load_model("defocus-gan", weights_file=f)


def test_load_model_refuses_another_arch_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    f = tmp_path / "converted.safetensors"
    _small_defocusgan_file(f)
    monkeypatch.setattr(registry, "MODELS", ())  # no registered model shadows an architecture name
    with pytest.raises(UsageError, match="holds a 'defocusgan' network, not 'sftnet'"):
        weights.load_model("sftnet", weights_file=f)


def test_deblur_with_model_arch_and_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``defocus deblur --model defocusgan --weights converted.safetensors`` runs (it said "unknown model")."""
    from defocus_cli.cli import app

    monkeypatch.setenv("DEFOCUS_THREADS", "2")
    f = tmp_path / "converted.safetensors"
    _small_defocusgan_file(f)
    src = tmp_path / "a.png"
    Image.new("RGB", (20, 12), (120, 80, 40)).save(src)
    r = CliRunner().invoke(app, ["deblur", str(src), "-o", str(tmp_path / "out.png"), "--model", "defocusgan",
                                 "--weights", str(f), "--json"])
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["model"] == "converted"
    assert Image.open(tmp_path / "out.png").size == (20, 12)
    r = CliRunner().invoke(app, ["deblur", str(src), "-o", str(tmp_path / "o2.png"), "--model", "nosuchname",
                                 "--weights", str(f)])
    assert r.exit_code == 2 and "unknown model 'nosuchname'" in r.stderr
