"""Tiled inference as pure functions: plan overlapping tiles, run any array→array function per tile, blend.

The whole image stays on the host as a numpy float32 array ``(N, C, H, W)``. Only tiles (views of it) are
handed to ``fn``, which runs them wherever it likes (a torch network on its device: the adapter in
:mod:`defocus_cli.runtime`; the OpenVINO IR) and returns numpy. Nothing here knows about models, devices,
precisions or torch: this module imports numpy only.

Geometry (one axis; the other is the same):

* The image is first **reflect-padded** at the bottom/right to a multiple of ``multiple_of`` (replicate
  where it is too small to reflect) and the result is cropped back at the end: the user's image is never
  cropped or resized.
* Windows (``tile`` × ``tile`` pixels, ``tile`` a multiple of ``multiple_of``) lie **inside** the padded
  image (the last one is pushed back to end at the border), their origins are multiples of
  ``multiple_of`` (so stride-2 stages of a network sample the same grid as the whole image) and
  neighbouring windows overlap by at least ``2 * overlap`` pixels. Windows never reach past the image,
  so no tile ever sees zero padding: at the image border a tile sees exactly what the whole image sees.
* Merging: each window carries a separable weight that is 1 in its interior and falls to 0 towards an
  edge it shares with a neighbour (edges on the image border keep weight 1). The weight is 0 closer than
  ``overlap - blend // 2`` pixels to such an edge, rises as a raised cosine over ``blend`` pixels and is
  1 beyond ``overlap + blend // 2`` pixels (clamped so it never exceeds the space available). Outputs are
  accumulated as ``sum(w * out) / sum(w)`` in float32 on the host.
  ``blend = 0`` is pure overlap-crop (Real-ESRGAN/KAIR style): every output pixel comes from a tile in
  which it has at least ``overlap`` pixels of real context, which makes a function whose receptive
  field is ≤ ``overlap`` exactly tile-invariant. ``blend > 0`` trades ``blend // 2`` pixels of that
  context for a smooth transition between tiles (a raised-cosine cross-fade instead of a hard seam),
  which hides the residual disagreement of networks whose receptive field exceeds the overlap.
  The default blend (``overlap / 4``) is chosen by measurement, see ``DEFAULT_BLEND_FRACTION``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from defocus_cli.errors import UsageError

log = logging.getLogger(__name__)

#: Default raised-cosine band as a fraction of the overlap. Measured (bench/bench_tiling.py --synthetic,
#: bench/RESULTS.md): at equal overlap, pure crop has the best tiled-vs-whole PSNR and every pixel of blend
#: costs context (blend = overlap/4: -0.3..-0.5 dB, overlap/2: -1..-1.5 dB, overlap: -4 dB). A narrow
#: feather of overlap/4 keeps nearly all of crop's PSNR while turning the residual step into a smooth ramp.
DEFAULT_BLEND_FRACTION = 0.25


@dataclass(frozen=True)
class TilePlan:
    """Where the windows go on a (padded) image.

    Attributes:
        height, width: size of the padded image the plan is for (multiples of ``multiple_of``).
        tile: maximum window size (the request rounded down to ``multiple_of``).
        overlap: context in pixels per interior side.
        multiple_of: alignment of window origins and sizes.
        ys, xs: window origins along each axis (ascending; each window is ``[y, y + tile_h)`` × ``[x, x + tile_w)``).
        tile_h, tile_w: window size along each axis (≤ ``tile``; evened out so that the windows share the
            axis without a thin last tile).
    """

    height: int
    width: int
    tile: int
    overlap: int
    multiple_of: int
    ys: tuple[int, ...]
    xs: tuple[int, ...]
    tile_h: int
    tile_w: int

    @property
    def count(self) -> int:
        """Number of windows."""
        return len(self.ys) * len(self.xs)

    def windows(self) -> list[tuple[int, int, int, int]]:
        """``(y0, y1, x0, x1)`` of every window, row-major."""
        return [(y, y + self.tile_h, x, x + self.tile_w) for y in self.ys for x in self.xs]

    @property
    def processed_fraction(self) -> float:
        """Pixels pushed through ``fn`` divided by pixels of the image (≥ 1; the tiling overhead)."""
        return self.count * self.tile_h * self.tile_w / float(self.height * self.width)


def round_up(n: int, m: int) -> int:
    """Smallest multiple of ``m`` that is ≥ ``n``."""
    return -(-n // m) * m


def _axis_origins(length: int, tile: int, overlap: int, m: int) -> tuple[tuple[int, ...], int]:
    """Origins along one axis of ``length`` (a multiple of ``m``) and the window size used on it.

    Uses the fewest windows of at most ``tile`` pixels, then evens them out: the window is shrunk to the
    smallest aligned size for which that many windows still cover the axis with ``2 * overlap`` pixels
    between neighbours (no thin last tile, no wasted overlap).
    """
    if length <= tile:
        return (0,), length

    def fits(t: int, n: int) -> bool:
        step = (t - 2 * overlap) // m * m
        return step >= m and (n - 1) * step >= length - t

    step = (tile - 2 * overlap) // m * m
    n = -(-(length - tile) // step) + 1
    t = max(round_up(-(-(length + 2 * overlap * (n - 1)) // n), m), round_up(2 * overlap + m, m))
    while not fits(t, n):
        t += m
    t = min(t, tile)
    span = length - t  # multiple of m: the last origin
    # floor(i * span / (n-1)) rounded down to m: consecutive differences <= ceil(span/(n-1)) <= step.
    origins = tuple((i * span // (n - 1)) // m * m for i in range(n))
    return origins, t


def plan_tiles(
    height: int, width: int, tile: int | tuple[int, int], overlap: int, multiple_of: int = 1
) -> TilePlan:
    """Plan overlapping, aligned windows covering a ``height`` × ``width`` image.

    Args:
        height, width: image size in pixels (≥ 1). It is rounded up to ``multiple_of`` (the padding that
            :func:`run_tiled` applies); the plan is for that padded size.
        tile: maximum window size in pixels, square (``int``) or ``(tile_h, tile_w)``; rounded **down** to a
            multiple of ``multiple_of``. ``0`` means one window covering the whole image.
        overlap: context in pixels per side of a window that has a neighbour (≥ 0).
        multiple_of: alignment of window sizes and origins (≥ 1).

    Returns:
        A :class:`TilePlan`. Each pixel of the padded image lies in a window where it has at least
        ``overlap`` pixels on every side that has a neighbour window (or on the image border).

    Raises:
        UsageError: ``overlap`` negative, or the tile (after rounding) not larger than ``2 * overlap``
            (no room for a core), or other invalid sizes.
    """
    if height < 1 or width < 1:
        raise UsageError(f"image size must be at least 1x1, got {width}x{height}")
    if multiple_of < 1:
        raise UsageError(f"multiple_of must be >= 1, got {multiple_of}")
    if overlap < 0:
        raise UsageError(f"--overlap must be >= 0, got {overlap}")
    tile_h, tile_w = (tile, tile) if isinstance(tile, int) else (int(tile[0]), int(tile[1]))
    if tile_h < 0 or tile_w < 0 or (isinstance(tile, tuple) and 0 in (tile_h, tile_w)):
        raise UsageError(f"--tile must be 0 (whole image), 'auto' or a positive size, got {tile}")
    m = multiple_of
    hp, wp = round_up(height, m), round_up(width, m)
    if tile_h == 0 or (tile_h >= hp and tile_w >= wp):
        return TilePlan(hp, wp, max(hp, wp), overlap, m, (0,), (0,), hp, wp)
    for req, t in ((tile_h, tile_h // m * m), (tile_w, tile_w // m * m)):
        if t - 2 * overlap < m:
            raise UsageError(
                f"--tile {req} leaves no core with --overlap {overlap} (context per side) at size multiple {m}; "
                f"expected a tile of at least {round_up(2 * overlap + m, m)} or a smaller overlap"
            )
    ys, th = _axis_origins(hp, tile_h // m * m, overlap, m)
    xs, tw = _axis_origins(wp, tile_w // m * m, overlap, m)
    return TilePlan(hp, wp, max(tile_h, tile_w) // m * m, overlap, m, ys, xs, th, tw)


def best_tile_for_area(
    height: int, width: int, max_pixels: float, overlap: int, multiple_of: int = 1
) -> tuple[int, int]:
    """The ``(tile_h, tile_w)`` whose windows hold at most ``max_pixels`` pixels each and push the fewest pixels
    in total through the function (least overlap overhead). Tiles may be rectangular. Returns ``(0, 0)`` when
    the whole (padded) image fits in ``max_pixels``; the smallest viable square tile when nothing fits."""
    m = multiple_of
    hp, wp = round_up(height, m), round_up(width, m)
    if hp * wp <= max_pixels:
        return (0, 0)
    lo = round_up(2 * overlap + m, m)
    best: tuple[float, int, int] | None = None
    for n_y in range(1, hp // max(lo - 2 * overlap, m) + 2):
        th = _min_size_for(hp, n_y, overlap, m)
        if th is None:
            continue
        tw_max = int(max_pixels // th) // m * m
        if tw_max < lo:
            continue
        p = plan_tiles(hp, wp, (th, min(tw_max, wp)), overlap, m)
        if p.tile_h * p.tile_w > max_pixels:
            continue
        cost = p.count * p.tile_h * p.tile_w
        if best is None or cost < best[0]:
            best = (cost, p.tile_h, p.tile_w if len(p.xs) > 1 else tw_max)
        if n_y > 1 and th <= lo:
            break
    if best is None:
        return (lo, lo)
    return best[1], best[2]


def _min_size_for(length: int, n: int, overlap: int, m: int) -> int | None:
    """Smallest aligned window size for which ``n`` windows cover ``length`` (None if ``n`` is too many)."""
    if n == 1:
        return length
    t = max(round_up(-(-(length + 2 * overlap * (n - 1)) // n), m), round_up(2 * overlap + m, m))
    while t < length:
        step = (t - 2 * overlap) // m * m
        if step >= m and (n - 1) * step >= length - t:
            origins_n = len(_axis_origins(length, t, overlap, m)[0])
            return t if origins_n == n else None
        t += m
    return None


def _ramp_weights(length: int, lo_edge: bool, hi_edge: bool, overlap: int, blend: int) -> np.ndarray:
    """1-D window weight of a tile of ``length`` (float32 ``(length,)``): 1 inside, raised-cosine to 0 near
    shared edges.

    ``lo_edge``/``hi_edge`` say whether the low/high side is shared with a neighbour. Weight is 0 at
    distance ``d < overlap - blend//2`` from a shared edge, ``0.5 - 0.5*cos(pi * t)`` with
    ``t = (d - (overlap - blend//2) + 0.5) / blend`` in the band, and 1 beyond it (computed in float64).
    """
    d = np.arange(length, dtype=np.float64)
    w = np.ones(length, dtype=np.float64)
    half = blend // 2
    start = max(overlap - half, 0)
    for shared, dist in ((lo_edge, d), (hi_edge, (length - 1) - d)):
        if not shared:
            continue
        if blend <= 0:
            side = (dist >= overlap).astype(np.float64)
        else:
            t = np.clip((dist - start + 0.5) / blend, 0.0, 1.0)
            side = 0.5 - 0.5 * np.cos(math.pi * t)
        w = w * side
    return w.astype(np.float32)


def tile_weights(plan: TilePlan, y: int, x: int, blend: int) -> np.ndarray:
    """Blending weight ``(tile_h, tile_w)`` float32 of the window at origin ``(y, x)`` of ``plan``."""
    wy = _ramp_weights(plan.tile_h, y > 0, y + plan.tile_h < plan.height, plan.overlap, blend)
    wx = _ramp_weights(plan.tile_w, x > 0, x + plan.tile_w < plan.width, plan.overlap, blend)
    return wy[:, None] * wx[None, :]


def padding_for(height: int, width: int, multiple_of: int) -> tuple[int, int, str]:
    """``(pad_bottom, pad_right, mode)`` that brings ``height`` × ``width`` to multiples of ``multiple_of``:
    ``mode`` is ``"reflect"`` where the image is larger than the padding, else ``"replicate"``. The one rule;
    :func:`pad_to_multiple` applies it to arrays, the trainers (``train/common.py``) to tensors."""
    ph, pw = round_up(height, multiple_of) - height, round_up(width, multiple_of) - width
    return ph, pw, "reflect" if (ph < height and pw < width) else "replicate"


def channels_last(a: np.ndarray) -> bool:
    """Whether the ``(N, C, H, W)`` array ``a`` (C > 1) lies in memory as NHWC (e.g. an ``(H, W, C)`` photo seen
    as ``(1, C, H, W)``, or an NHWC engine's result)."""
    return a.ndim == 4 and a.shape[1] > 1 and a.strides[1] < a.strides[3]


def _crop(a: np.ndarray, h: int, w: int) -> np.ndarray:
    """``a[..., :h, :w]`` as a compact copy in ``a``'s own memory layout (NCHW or NHWC)."""
    if channels_last(a):
        return np.ascontiguousarray(a.transpose(0, 2, 3, 1)[:, :h, :w]).transpose(0, 3, 1, 2)
    return np.ascontiguousarray(a[..., :h, :w])


def pad_to_multiple(x: np.ndarray, multiple_of: int) -> np.ndarray:
    """Pad ``x`` ``(N, C, H, W)`` at the bottom/right to multiples of ``multiple_of`` (:func:`padding_for`:
    reflect, or replicate where the image is too small), keeping its memory layout (NCHW or NHWC). Returns
    ``x`` itself when no padding is needed."""
    ph, pw, mode = padding_for(x.shape[-2], x.shape[-1], multiple_of)
    if ph == 0 and pw == 0:
        return x
    np_mode = "reflect" if mode == "reflect" else "edge"
    if channels_last(x):
        return np.pad(x.transpose(0, 2, 3, 1), ((0, 0), (0, ph), (0, pw), (0, 0)), mode=np_mode).transpose(0, 3, 1, 2)
    return np.pad(x, ((0, 0), (0, 0), (0, ph), (0, pw)), mode=np_mode)


def default_blend(overlap: int) -> int:
    """The blend band used when the caller does not choose one (``DEFAULT_BLEND_FRACTION`` of the overlap)."""
    return int(round(overlap * DEFAULT_BLEND_FRACTION)) // 2 * 2


TileFn = Callable[[np.ndarray], np.ndarray]
"""A tile function: ``(N, C, h, w)`` float32 array (a view of the host image; not to be written to) →
``(N, C_out, h, w)`` array (any float dtype; brought to float32)."""


def run_tiled(
    fn: TileFn,
    x: np.ndarray,
    tile: int | tuple[int, int],
    overlap: int,
    multiple_of: int = 1,
    *,
    blend: int | None = None,
    on_tile: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """Apply ``fn`` to overlapping tiles of ``x`` and blend the results into one image.

    Args:
        fn: maps a tile ``(N, C, h, w)`` float32 array to ``(N, C_out, h, w)`` (see :data:`TileFn`).
            ``C_out`` may differ from ``C`` (e.g. 1 for maps).
        x: ``(N, C, H, W)`` float array on the host, any strides (e.g. an ``(H, W, C)`` photo seen as
            ``(1, C, H, W)``). Values are passed through unchanged.
        tile: maximum window size in pixels, square or ``(tile_h, tile_w)`` (rounded down to
            ``multiple_of``); ``0`` = whole image in one call.
        overlap: context in pixels per interior tile side (≥ the function's receptive field for exactness).
        multiple_of: size multiple the function needs; the image is reflect-padded to it and cropped back.
        blend: width of the raised-cosine cross-fade in pixels (0 = pure overlap-crop, ``None`` =
            :func:`default_blend`). Clamped to ``2 * overlap``.
        on_tile: optional progress callback ``(done, total)`` after each tile.

    Returns:
        ``(N, C_out, H, W)`` float32 array, laid out in memory as ``fn``'s results are (NHWC results give an
        NHWC image, so an ``(H, W, C)`` photo's result needs no transposing copy).

    Raises:
        UsageError: invalid tile/overlap (see :func:`plan_tiles`) or ``x`` not a 4-D array.
        ValueError: ``fn`` returned another batch or spatial size.
    """
    if not isinstance(x, np.ndarray) or x.ndim != 4:
        raise UsageError(f"expected an image array of shape (N, C, H, W), got {_describe(x)}")
    n, _, h, w = x.shape
    plan = plan_tiles(h, w, tile, overlap, multiple_of)
    xp = pad_to_multiple(x, multiple_of)
    if plan.count == 1:
        out = np.asarray(fn(xp), dtype=np.float32)
        _check_out(out, xp.shape, (plan.tile_h, plan.tile_w))
        if on_tile is not None:
            on_tile(1, 1)
        return out if out.shape[-2:] == (h, w) else _crop(out, h, w)
    b = default_blend(overlap) if blend is None else max(0, int(blend))
    b = min(b, 2 * overlap)
    log.debug(
        "tiling %dx%d (padded %dx%d) into %d tiles of %dx%d, overlap %d, blend %d (%.2fx pixels)",
        w, h, plan.width, plan.height, plan.count, plan.tile_w, plan.tile_h, overlap, b, plan.processed_fraction,
    )
    if plan.processed_fraction > 3.0:
        log.warning(
            "tile %d with overlap %d processes %.1fx the image's pixels (each tile keeps only a %dx%d core); "
            "a larger --tile or a smaller --overlap would be much faster",
            plan.tile, overlap, plan.processed_fraction,
            max(plan.tile_h - 2 * overlap, 0), max(plan.tile_w - 2 * overlap, 0),
        )
    acc: np.ndarray | None = None
    wsum = np.zeros((plan.height, plan.width), dtype=np.float32)
    for i, (y0, y1, x0, x1) in enumerate(plan.windows()):
        out = np.asarray(fn(xp[..., y0:y1, x0:x1]), dtype=np.float32)
        _check_out(out, xp.shape, (y1 - y0, x1 - x0))
        if acc is None:
            if channels_last(out):
                acc = np.zeros((n, plan.height, plan.width, out.shape[1]), dtype=np.float32).transpose(0, 3, 1, 2)
            else:
                acc = np.zeros((n, out.shape[1], plan.height, plan.width), dtype=np.float32)
        wt = tile_weights(plan, y0, x0, b)
        acc[..., y0:y1, x0:x1] += out * wt
        wsum[y0:y1, x0:x1] += wt
        del out
        if on_tile is not None:
            on_tile(i + 1, plan.count)
    assert acc is not None
    acc /= wsum
    if (plan.height, plan.width) != (h, w):
        acc = _crop(acc, h, w)
    return acc


def _describe(x: object) -> str:
    shape = getattr(x, "shape", None)
    return f"{type(x).__name__} of shape {tuple(shape)}" if shape is not None else type(x).__name__


def _check_out(out: np.ndarray, in_shape: Sequence[int], hw: tuple[int, int]) -> None:
    if out.ndim != 4 or out.shape[0] != in_shape[0] or tuple(out.shape[-2:]) != hw:
        raise ValueError(
            f"tile function must return (N, C_out, {hw[0]}, {hw[1]}) for a tile of that size, "
            f"got shape {tuple(out.shape)}"
        )
