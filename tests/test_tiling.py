"""Tiling: plans cover the image with aligned windows; tiled == whole for a function of known receptive field.

The glue is numpy (every backend's); torch networks are called through a numpy → tensor → numpy wrapper, as the
runtime's adapter does."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from defocus_cli.errors import UsageError
from defocus_cli.tiling import best_tile_for_area, pad_to_multiple, plan_tiles, run_tiled, tile_weights


def _np(net: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[np.ndarray], np.ndarray]:
    """A torch function as a numpy tile function."""
    return lambda t: net(torch.from_numpy(np.ascontiguousarray(t))).numpy()


def _rand(*shape: int) -> np.ndarray:
    return torch.rand(*shape).numpy()


def _conv_stack(in_ch: int = 3, out_ch: int = 3, seed: int = 0) -> tuple[nn.Module, int]:
    """3x3 convs with dilations 1, 2, 4 (zero padding): receptive field radius 1 + 2 + 4 = 7 px."""
    torch.manual_seed(seed)
    net = nn.Sequential(
        nn.Conv2d(in_ch, 8, 3, padding=1),
        nn.LeakyReLU(0.1),
        nn.Conv2d(8, 8, 3, padding=2, dilation=2),
        nn.LeakyReLU(0.1),
        nn.Conv2d(8, out_ch, 3, padding=4, dilation=4),
    ).eval()
    return net, 7


@pytest.mark.parametrize(
    "h,w,tile,overlap,m",
    [(37, 53, 16, 3, 1), (120, 200, 64, 8, 8), (1120, 1680, 512, 64, 8), (4000, 6000, 1300, 64, 16), (17, 9, 32, 4, 4)],
)
def test_plan_covers_image_with_aligned_windows(h: int, w: int, tile: int, overlap: int, m: int) -> None:
    plan = plan_tiles(h, w, tile, overlap, m)
    assert plan.height % m == 0 and plan.width % m == 0
    assert plan.height >= h and plan.width >= w and plan.height - h < m and plan.width - w < m
    covered = torch.zeros(plan.height, plan.width, dtype=torch.bool)
    for y0, y1, x0, x1 in plan.windows():
        assert y0 % m == 0 and x0 % m == 0, "origins must be aligned to the size multiple"
        assert (y1 - y0) % m == 0 and (x1 - x0) % m == 0
        assert y1 - y0 <= max(tile // m * m, 0) or len(plan.ys) == 1
        assert x1 - x0 <= max(tile // m * m, 0) or len(plan.xs) == 1
        assert 0 <= y0 < y1 <= plan.height and 0 <= x0 < x1 <= plan.width, "windows never leave the image"
        covered[y0:y1, x0:x1] = True
    assert bool(covered.all())
    for axis, size in ((plan.ys, plan.tile_h), (plan.xs, plan.tile_w)):
        assert list(axis) == sorted(set(axis))
        for a, b in itertools.pairwise(axis):
            assert a + size - b >= 2 * overlap, "neighbours must share at least 2*overlap pixels"


def test_plan_whole_image_when_tile_zero_or_large() -> None:
    assert plan_tiles(100, 150, 0, 32, 8).count == 1
    p = plan_tiles(100, 150, 256, 32, 8)
    assert p.count == 1 and (p.tile_h, p.tile_w) == (104, 152)


@pytest.mark.parametrize("tile,overlap", [(16, 20), (16, 8), (32, 16)])
def test_overlap_too_large_for_tile_is_rejected(tile: int, overlap: int) -> None:
    with pytest.raises(UsageError, match="overlap"):
        plan_tiles(100, 100, tile, overlap, 2)


def test_negative_values_rejected() -> None:
    with pytest.raises(UsageError):
        plan_tiles(100, 100, 64, -1)
    with pytest.raises(UsageError):
        plan_tiles(100, 100, -5, 4)
    with pytest.raises(UsageError):
        plan_tiles(0, 100, 64, 4)


@pytest.mark.parametrize("blend", [0, 4, 16])
def test_weights_partition_has_no_holes(blend: int) -> None:
    plan = plan_tiles(150, 210, 64, 12, 4)
    total = np.zeros((plan.height, plan.width), np.float32)
    for y0, y1, x0, x1 in plan.windows():
        wt = tile_weights(plan, y0, x0, blend)
        assert wt.shape == (y1 - y0, x1 - x0)
        assert float(wt.min()) >= 0.0 and float(wt.max()) <= 1.0
        total[y0:y1, x0:x1] += wt
    assert float(total.min()) > 0.2


def test_raised_cosine_ramp_is_monotone_and_smooth() -> None:
    plan = plan_tiles(64, 300, 128, 16, 1)
    wt = tile_weights(plan, 0, plan.xs[1], 16)[0]  # middle tile: both sides shared
    left = wt[: len(wt) // 2]
    assert float(left[0]) == 0.0 and float(left[-1]) == 1.0
    assert bool((left[1:] >= left[:-1]).all()) and wt.dtype == np.float32
    assert float((left[1:] - left[:-1]).max()) < 0.2  # no hard step


@pytest.mark.parametrize("h,w", [(37, 53), (64, 64), (101, 77)])
def test_identity_is_reproduced_exactly_on_odd_sizes(h: int, w: int) -> None:
    x = _rand(2, 3, h, w)
    seen: list[tuple[int, int]] = []

    def ident(t: np.ndarray) -> np.ndarray:
        seen.append(tuple(t.shape[-2:]))
        return t.copy()

    y = run_tiled(ident, x, 24, 4, 4, blend=4)
    assert y.shape == x.shape and y.dtype == np.float32
    np.testing.assert_allclose(y, x, atol=1e-6, rtol=0)
    assert len(seen) > 1 and all(a % 4 == 0 and b % 4 == 0 and a <= 24 and b <= 24 for a, b in seen)


@pytest.mark.parametrize("blend", [0, 6])
def test_conv_stack_tiled_equals_whole(blend: int) -> None:
    net, rf = _conv_stack()
    x = _rand(1, 3, 97, 131)
    with torch.inference_mode():
        whole = _np(net)(x)
        # context left after the cross-fade must still cover the receptive field
        tiled = run_tiled(_np(net), x, 40, rf + blend // 2, 1, blend=blend)
    assert tiled.shape == whole.shape
    assert float(np.abs(tiled - whole).max()) <= 1e-5


def test_too_little_context_is_detected() -> None:
    """The equality above is not vacuous: with less context than the receptive field, tiles differ."""
    net, rf = _conv_stack()
    x = _rand(1, 3, 97, 131)
    with torch.inference_mode():
        whole = _np(net)(x)
        tiled = run_tiled(_np(net), x, 40, rf - 4, 1, blend=0)
    assert float(np.abs(tiled - whole).max()) > 1e-4


def test_output_channel_count_may_change() -> None:
    net, rf = _conv_stack(3, 1, seed=1)
    x = _rand(1, 3, 70, 90)
    with torch.inference_mode():
        whole = _np(net)(x)
        tiled = run_tiled(_np(net), x, 32, rf, 1, blend=0)
    assert tiled.shape == (1, 1, 70, 90)
    assert float(np.abs(tiled - whole).max()) <= 1e-5


def test_strided_network_needs_aligned_origins() -> None:
    """A stride-4 encoder/decoder is tile-invariant (with enough context) when origins are multiples of 4."""
    torch.manual_seed(2)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.ConvTranspose2d(8, 8, 4, stride=2, padding=1),
        nn.ReLU(),
        nn.ConvTranspose2d(8, 3, 4, stride=2, padding=1),
    ).eval()
    x = _rand(1, 3, 96, 128)
    with torch.inference_mode():
        whole = _np(net)(x)
        tiled = run_tiled(_np(net), x, 48, 12, 4, blend=0)
    assert float(np.abs(tiled - whole).max()) <= 1e-5


def test_padding_to_multiple_is_reflect_and_cropped_back() -> None:
    x = _rand(1, 3, 21, 30)
    got: list[np.ndarray] = []

    def record(t: np.ndarray) -> np.ndarray:
        assert t.shape[-2] % 8 == 0 and t.shape[-1] % 8 == 0
        got.append(t.copy())
        return t * 2

    y = run_tiled(record, x, 0, 0, 8)
    assert y.shape == x.shape
    np.testing.assert_allclose(y, x * 2)
    # the same padding as torch's (the trainers pad tensors with it: tiling.padding_for)
    np.testing.assert_array_equal(got[0], F.pad(torch.from_numpy(x), (0, 2, 0, 3), mode="reflect").numpy())
    # too small to reflect: replicate instead of failing
    tiny = _rand(1, 3, 2, 3)
    padded = pad_to_multiple(tiny, 8)
    assert padded.shape == (1, 3, 8, 8)
    np.testing.assert_array_equal(padded, F.pad(torch.from_numpy(tiny), (0, 5, 0, 6), mode="replicate").numpy())
    assert run_tiled(lambda t: t, tiny, 0, 0, 8).shape == tiny.shape


def test_tiles_are_views_of_host_image_and_results_return_to_host() -> None:
    x = _rand(1, 3, 50, 50)
    views: list[bool] = []

    def plus_one(t: np.ndarray) -> np.ndarray:
        views.append(np.shares_memory(t, x))
        return t.astype(np.float64) + 1

    out = run_tiled(plus_one, x, 24, 4, 1)
    assert isinstance(out, np.ndarray) and out.dtype == np.float32
    np.testing.assert_allclose(out, x + 1, rtol=1e-6)
    assert len(views) > 1 and all(views)  # no copy of the image per tile


def test_bad_inputs_rejected() -> None:
    with pytest.raises(UsageError):
        run_tiled(lambda t: t, _rand(3, 10, 10), 0, 0)
    with pytest.raises(UsageError, match="Tensor"):  # the glue takes numpy; torch lives behind the adapter
        run_tiled(lambda t: t, torch.rand(1, 3, 10, 10), 0, 0)
    with pytest.raises(ValueError, match="must return"):
        run_tiled(lambda t: t[..., :-1, :], _rand(1, 3, 40, 40), 16, 2)


def test_progress_callback_counts_tiles() -> None:
    calls: list[tuple[int, int]] = []
    run_tiled(lambda t: t, _rand(1, 1, 64, 64), 32, 4, 1, on_tile=lambda d, n: calls.append((d, n)))
    assert calls[-1][0] == calls[-1][1] == len(calls) > 1


def test_rectangular_tiles() -> None:
    plan = plan_tiles(300, 1000, (320, 200), 16, 8)
    assert len(plan.ys) == 1 and plan.tile_h == 304 and len(plan.xs) > 1 and plan.tile_w <= 200
    x = _rand(1, 3, 300, 1000)
    np.testing.assert_allclose(run_tiled(lambda t: t, x, (320, 200), 16, 8), x, rtol=1e-6)
    with pytest.raises(UsageError):
        plan_tiles(300, 1000, (320, 0), 16, 8)


@pytest.mark.parametrize(
    "h,w,budget,overlap,m",
    [(4000, 6000, 3.5e6, 128, 8), (1120, 1680, 1.0e6, 128, 8), (300, 6000, 3e5, 32, 8), (777, 555, 2e5, 20, 16)],
)
def test_best_tile_for_area_fits_budget_and_beats_square(h: int, w: int, budget: float, overlap: int, m: int) -> None:
    th, tw = best_tile_for_area(h, w, budget, overlap, m)
    plan = plan_tiles(h, w, (th, tw), overlap, m)
    assert plan.tile_h * plan.tile_w <= budget
    assert plan.tile_h % m == 0 and plan.tile_w % m == 0
    side = int(budget**0.5) // m * m
    square = plan_tiles(h, w, side, overlap, m)
    assert plan.count * plan.tile_h * plan.tile_w <= square.count * square.tile_h * square.tile_w


def test_best_tile_for_area_whole_image_when_it_fits() -> None:
    assert best_tile_for_area(100, 200, 1e6, 16, 8) == (0, 0)


def test_wasteful_tiling_is_warned_about(caplog: pytest.LogCaptureFixture) -> None:
    import logging

    with caplog.at_level(logging.WARNING, logger="defocus_cli.tiling"):
        run_tiled(lambda t: t, _rand(1, 1, 64, 64), 64, 4, 1)
    assert "larger --tile" not in caplog.text
    with caplog.at_level(logging.WARNING, logger="defocus_cli.tiling"):
        run_tiled(lambda t: t, _rand(1, 1, 100, 100), 40, 16, 1)
    assert "larger --tile" in caplog.text


@pytest.mark.parametrize("tile,h,w", [(0, 37, 50), (24, 37, 50), (24, 40, 48)])
def test_channels_last_results_stay_channels_last(tile: int, h: int, w: int) -> None:
    """An engine that hands back NHWC memory (the OpenVINO backend) gets an NHWC image back, padded or not,
    whole or tiled, with the same values as the NCHW path; NCHW results stay NCHW."""
    from defocus_cli.tiling import channels_last

    rng = np.random.default_rng(0)
    photo = rng.random((h, w, 3), dtype=np.float32)
    x = photo.transpose(2, 0, 1)[None]  # (1, 3, H, W) seen over (H, W, 3) memory
    assert channels_last(x) and not channels_last(np.ascontiguousarray(x))

    def nchw(t: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(t) * 0.5 + 0.25

    def nhwc(t: np.ndarray) -> np.ndarray:
        return (np.ascontiguousarray(t.transpose(0, 2, 3, 1)) * 0.5 + 0.25).transpose(0, 3, 1, 2)

    a = run_tiled(nchw, x, tile, 4, multiple_of=8)
    b = run_tiled(nhwc, x, tile, 4, multiple_of=8)
    assert not channels_last(a) and channels_last(b)
    assert b.shape == (1, 3, h, w)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(b, x * 0.5 + 0.25, atol=1e-6)
    # the photo's (H, W, 3) result is then a view, no copy
    assert b[0].transpose(1, 2, 0).flags.c_contiguous


def test_padding_keeps_the_memory_layout() -> None:
    from defocus_cli.tiling import channels_last

    x = np.arange(2 * 3 * 5 * 6, dtype=np.float32).reshape(2, 5, 6, 3).transpose(0, 3, 1, 2)
    p = pad_to_multiple(x, 4)
    assert p.shape == (2, 3, 8, 8) and channels_last(p)
    np.testing.assert_array_equal(p, pad_to_multiple(np.ascontiguousarray(x), 4))
