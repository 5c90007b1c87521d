"""The engine contract, once for every row of the arch table (replaces the per-arch copies of these checks).

Every deblurring architecture, built small, goes through the engine boundary (:class:`defocus_cli.restorer.Restorer`):
odd sizes keep their shape and stay in [0, 1], tiles agree with the whole image, and the precisions of its row are
honoured (the others refused). Map architectures get the map contract through the runtime. A new row fails here
until it has a tiny configuration below.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest
import torch

from defocus_cli import devices, registry
from defocus_cli.archs.table import ARCH_TABLE, PRECISIONS, ArchSpec
from defocus_cli.errors import ShapeError, UsageError
from defocus_cli.restorer import Restorer, RunStats

#: Small constructor settings per arch key (each row must have one; IFAN is only built at its released width).
TINY: dict[str, dict[str, Any]] = {
    "ifan": {"n_iters": 2, "res_num": 1},
    "defocusgan": {"channels": 4, "kernel_sizes": (1,)},
    "defocusgan-map": {"channels": 4, "kernel_sizes": (1,)},
    "sftnet": {"ch": 8, "n_blocks": 1, "cond_ch": 4, "map_ch": 4, "map_blocks": 1},
}
DEBLUR = [row for row in ARCH_TABLE if row.task == "deblur"]
MAPS = [row for row in ARCH_TABLE if row.task == "map"]
ODD = (37, 53)


def _build(row: ArchSpec, *, wild: bool = False) -> torch.nn.Module:
    """The row's network in a tiny configuration, eval mode; ``wild`` = its output stretched to [-1.5, 2.5], so
    that the raw network leaves [0, 1] and a missing clamp would show."""
    torch.manual_seed(0)
    net = registry.load_class(row.key)(**TINY[row.key]).eval()
    if wild:
        net.register_forward_hook(lambda mod, inp, out: out * 4 - 1.5)
    return net


def test_every_row_has_a_tiny_configuration() -> None:
    assert {row.key for row in ARCH_TABLE} == set(TINY)


@pytest.mark.parametrize("row", ARCH_TABLE, ids=lambda r: r.key)
def test_builds_with_the_rows_numbers(row: ArchSpec) -> None:
    net = _build(row)
    assert (net.multiple_of, net.receptive_field, tuple(net.safe_precisions)) == (
        row.multiple_of, row.receptive_field, row.safe_precisions)


@pytest.mark.parametrize("row", DEBLUR, ids=lambda r: r.key)
def test_odd_sizes_keep_shape_and_range(row: ArchSpec) -> None:
    net = _build(row, wild=True)
    x = torch.rand(2, 3, *ODD)
    restorer = Restorer.create(net, device="cpu", precision="fp32", tile=0)
    y, stats = restorer.run(x)
    assert y.shape == x.shape and y.dtype == torch.float32 and y.device.type == "cpu"
    assert torch.isfinite(y).all()
    assert float(y.min()) >= 0.0 and float(y.max()) <= 1.0
    assert not torch.allclose(y, x, atol=1e-3)  # the network ran
    assert stats == RunStats(tile=0, tile_hw=(-(-ODD[0] // row.multiple_of) * row.multiple_of,
                                              -(-ODD[1] // row.multiple_of) * row.multiple_of),
                             tiles=1, overlap=row.receptive_field, device="cpu", precision="fp32",
                             seconds=stats.seconds)
    tiny = restorer(torch.rand(1, 3, 1, 2))
    assert tiny.shape == (1, 3, 1, 2)
    if callable(getattr(net, "defocus_map", None)):  # networks that also estimate a map: same size, finite
        with torch.inference_mode():
            m = net.defocus_map(torch.nn.functional.pad(x, (0, 3, 0, 3), mode="reflect"))
        assert m.shape == (2, 1, ODD[0] + 3, ODD[1] + 3) and torch.isfinite(m).all()


@pytest.mark.parametrize("row", DEBLUR, ids=lambda r: r.key)
def test_tiled_equals_whole(row: ArchSpec) -> None:
    net = _build(row)
    m, rf = row.multiple_of, row.receptive_field
    tile = 2 * rf + 4 * m
    x = torch.rand(1, 3, tile + m + 3, tile + 2 * m + 5)  # odd: padded, then 2 x 2 tiles
    whole = Restorer.create(net, device="cpu", precision="fp32", tile=0)(x)
    tiled, stats = Restorer.create(net, device="cpu", precision="fp32", tile=tile).run(x)
    assert stats.tiles == 4 and stats.tile == tile and stats.overlap == rf
    assert tiled.shape == whole.shape == x.shape
    assert float((tiled - whole).abs().max()) < 1e-4


@pytest.mark.parametrize("row", DEBLUR, ids=lambda r: r.key)
@pytest.mark.parametrize("precision", PRECISIONS)
def test_precisions_of_the_row_are_honoured(row: ArchSpec, precision: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(devices, "cpu_has_native_bf16", lambda: True)
    net = _build(row)
    if precision not in row.safe_precisions or precision == "fp16":  # fp16 needs a GPU even when safe
        with pytest.raises(UsageError, match=f"--precision {precision}"):
            Restorer.create(net, device="cpu", precision=precision)
        return
    restorer = Restorer.create(net, device="cpu", precision=precision, tile=0)
    assert restorer.options.precision == precision
    x = torch.rand(1, 3, 24, 40)
    seen: list[torch.dtype] = []
    conv = next(mod for mod in net.modules() if isinstance(mod, torch.nn.Conv2d))
    hook = conv.register_forward_hook(lambda mod, inp, out: seen.append(out.dtype))
    try:
        y, stats = restorer.run(x)
    finally:
        hook.remove()
    assert stats.precision == precision and y.dtype == torch.float32
    assert seen and set(seen) == {devices.DTYPES[precision]}  # autocast on for the reduced precision
    ref = Restorer.create(net, device="cpu", precision="fp32", tile=0)(x)
    assert float((y - ref).abs().max()) < (1e-6 if precision == "fp32" else 0.1)


@pytest.mark.parametrize("row", MAPS, ids=lambda r: r.key)
def test_map_nets_keep_odd_sizes_through_the_runtime(row: ArchSpec) -> None:
    from defocus_cli import runtime

    net = _build(row)
    left, right = torch.rand(1, 3, *ODD), torch.rand(1, 3, *ODD)
    y = runtime.run_engine(net, torch.cat([left, right], 1), device="cpu", tile=0, fn=lambda m, t: m(t[:, :3], t[:, 3:]))
    assert y.shape == (1, 1, *ODD) and torch.isfinite(y).all()


def test_non_native_bf16_is_warned_once_at_load(monkeypatch: pytest.MonkeyPatch,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    row = next(r for r in DEBLUR if "bf16" in r.safe_precisions)
    monkeypatch.setattr(devices, "cpu_has_native_bf16", lambda: False)
    with caplog.at_level(logging.WARNING, logger="defocus_cli"):
        restorer = Restorer.create(_build(row), device="cpu", precision="bf16", tile=0)
        for _ in range(3):
            restorer(torch.rand(1, 3, 16, 16))
    assert sum("no native bf16" in r.getMessage() for r in caplog.records) == 1


@pytest.mark.parametrize(
    "shape,dtype,got",
    [((3, 37, 53), torch.float32, "(3, 37, 53) torch.float32"),
     ((1, 4, 37, 53), torch.float32, "(1, 4, 37, 53) torch.float32"),
     ((1, 3, 37, 53), torch.uint8, "(1, 3, 37, 53) torch.uint8")],
)
def test_shape_error_names_expected_and_actual(shape: tuple[int, ...], dtype: torch.dtype, got: str) -> None:
    restorer = Restorer.create(_build(DEBLUR[0]), device="cpu", precision="fp32", tile=0)
    with pytest.raises(ShapeError) as ei:
        restorer(torch.zeros(shape, dtype=dtype))
    assert str(ei.value) == f"expected (N, 3, H, W) float tensor on the CPU, got {got} on cpu"
    from defocus_cli.cli.exit_codes import exit_code

    assert isinstance(ei.value, UsageError) and exit_code(ei.value) == 2


@pytest.mark.parametrize(
    "kw,match",
    [({"tile": "big"}, "tile must be"), ({"tile": -3}, "tile must be"), ({"overlap": -1}, "overlap must be"),
     ({"precision": "fp8"}, "precision must be"), ({"device": "gpu"}, "device must be")],
)
def test_options_are_validated_once_at_load(kw: dict[str, Any], match: str) -> None:
    with pytest.raises(UsageError, match=match):
        Restorer.create(_build(DEBLUR[0]), **{"device": "cpu", **kw})


def test_options_are_frozen() -> None:
    import dataclasses

    restorer = Restorer.create(_build(DEBLUR[0]), device="cpu", precision="fp32", tile="512")
    assert restorer.options.tile == 512 and restorer.options.overlap == DEBLUR[0].receptive_field
    with pytest.raises(dataclasses.FrozenInstanceError):
        restorer.options.tile = 0  # type: ignore[misc]
