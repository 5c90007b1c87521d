"""Defocus maps: per-pixel circle-of-confusion (CoC) radius in px, from a dual-pixel (DP) pair or one image.

Library side of ``defocus map`` (the CLI adapter is ``cli/map.py``):

* :func:`estimate_dp_map` — DP pair → signed radius. ``method="learned"`` runs a map network (task ``map``,
  e.g. the DefocusGAN map net) through :func:`defocus_cli.runtime.run_engine` (tiles, device, precision);
  ``method="classical"`` uses block matching (:mod:`defocus_cli.map_classical`). The baseline (split
  direction) is detected or given; a vertical pair is transposed so that the estimators see a horizontal one.
* :func:`estimate_single_map` — one image → radius: a deblurring engine's ``defocus_map`` (IFAN, SFT-net) or
  the classical edge re-blur method (unsigned).
* :func:`run_map` — the whole command: read inputs, estimate, write the map (npy / png16 / tif, atomic) and an
  optional preview, and return a JSON-ready summary.

Sign convention: negative = in front of the focal plane, positive = behind (Abuolaim's DP kernel model).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from defocus_cli.errors import UsageError, WeightsError
from defocus_cli.io.atomic import Target, check_targets

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from defocus_cli.weights import LoadedModel

log = logging.getLogger(__name__)

METHODS = ("learned", "classical")
BASELINES = ("auto", "h", "v")
LEARNED_WORK_SIDE = 800
"""The learned DP map runs on views halved until their long side is at most this many px; its map is resized back
and scaled to input px (:func:`learned_work_factor`). The network's receptive field covers the disparities of a
phone frame there: on held-out real Pixel 4 scenes (1344 px frames, 2-fold, ``bench/map_pixel4.py``) mean
|Spearman| 0.794 at 672 px against 0.700 at full size."""

__all__ = ["MapResult", "estimate_dp_map", "estimate_single_map", "run_map", "prepare_linear_dp", "METHODS",
           "BASELINES", "LEARNED_WORK_SIDE", "learned_work_factor"]


def learned_work_factor(shape: tuple[int, ...], work_side: int | None) -> int:
    """The power of two ``f`` the learned DP map divides the views by: the smallest with ``max(H, W) / f ≤
    work_side`` (1 when ``work_side`` is ``None`` or 0: full resolution).

    Raises:
        UsageError: a negative ``work_side``.
    """
    if work_side is None or work_side == 0:
        return 1
    if work_side < 0:
        raise UsageError(f"work_side must be 0 (full resolution) or a positive number of px, got {work_side}",
                         param="work_side")
    f = 1
    while max(shape[0], shape[1]) / f > work_side:
        f *= 2
    return f


@dataclass
class MapResult:
    """An estimated defocus map.

    Attributes:
        radius: float32 ``(H, W)`` CoC radius in px (signed for DP pairs: negative = in front of focus).
        method: ``"learned"`` or ``"classical"``.
        baseline: ``"h"``/``"v"`` for DP pairs (as used), ``None`` for one image.
        signed: whether ``radius`` carries a meaningful sign.
        model: model name (learned), else ``None``.
        info: runtime details (tile, device, precision) for learned methods.
        confidence: float32 ``(H, W)`` in [0, 1] per-pixel reliability (classical DP: ≈ 1 where the views
            matched well, towards 0 where the value was propagated from elsewhere), else ``None``.
    """

    radius: np.ndarray
    method: str
    baseline: str | None
    signed: bool
    model: str | None = None
    info: dict[str, Any] = field(default_factory=dict)
    confidence: np.ndarray | None = None


def _module(model: Any) -> "torch.nn.Module":
    return getattr(model, "module", model)


def _views_tensor(view: np.ndarray) -> "torch.Tensor":
    """``(H, W[, C])`` float [0, 1] → ``(1, 3, H, W)`` float32 tensor (gray replicated to RGB)."""
    import torch

    a = np.asarray(view, dtype=np.float32)
    if a.ndim == 2:
        a = a[:, :, None]
    if a.shape[2] == 1:
        a = np.repeat(a, 3, axis=2)
    return torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1)))[None]


def prepare_linear_dp(
    left: np.ndarray, right: np.ndarray, *, gamma: float = 2.2, equalize: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Make linear raw DP views (e.g. Pixel 4 frames after the black level) look like the tone-mapped views
    the map networks were trained on.

    1. **Gain equalisation** (``equalize``): DP views are vignetted differently (Pixel 4: the left/right ratio
       drifts from 1.0 to 1.4 across the frame). Each view is divided by its own heavily low-passed copy
       (Gaussian, σ = long side / 24) and multiplied by the geometric mean of the two, so the views share
       one smooth brightness field and differ only by the defocus disparity.
    2. **Tone curve**: ``x ** (1 / gamma)`` (sRGB-like), as the synthetic training views are tone-mapped.

    Args:
        left, right: float32 ``(H, W)``, ``(H, W, 1)`` or ``(H, W, 3)`` linear views in about [0, 1].
    Returns:
        the two views, same shapes, float32 in [0, 1].
    """
    import cv2

    a = np.asarray(left, np.float32)
    b = np.asarray(right, np.float32)
    if equalize:
        sigma = max(a.shape[:2]) / 24.0
        ga = np.maximum(cv2.GaussianBlur(a, (0, 0), sigma), 1e-4).reshape(a.shape)
        gb = np.maximum(cv2.GaussianBlur(b, (0, 0), sigma), 1e-4).reshape(b.shape)
        m = np.sqrt(ga * gb)
        a, b = a * (m / ga), b * (m / gb)
    inv = 1.0 / float(gamma)
    return (np.clip(a, 0.0, 1.0) ** inv).astype(np.float32), (np.clip(b, 0.0, 1.0) ** inv).astype(np.float32)


def _check_method(method: str) -> None:
    if method not in METHODS:
        raise UsageError(f"method must be one of {', '.join(METHODS)}, got {method!r}", param="method")


def estimate_dp_map(
    left: np.ndarray,
    right: np.ndarray,
    model: Any = None,
    *,
    method: str = "learned",
    baseline: str = "auto",
    device: "torch.device | str" = "cpu",
    precision: str = "fp32",
    tile: int | str = "auto",
    max_disparity: int = 12,
    window: int = 41,
    linear: bool = False,
    work_side: int | None = LEARNED_WORK_SIDE,
) -> MapResult:
    """Signed CoC radius map from a DP pair.

    Args:
        left, right: float32 ``(H, W)``, ``(H, W, 1)`` or ``(H, W, 3)`` RGB views in about [0, 1], stored
            orientation, same shape.
        model: for ``method="learned"``: a :class:`~defocus_cli.weights.LoadedModel` or an ``nn.Module`` of
            the map contract (``forward(left, right)`` → ``(N, 1, H, W)`` signed radius; horizontal baseline).
        method: ``"learned"`` or ``"classical"``.
        baseline: ``"h"``, ``"v"`` or ``"auto"`` (detected by block matching along both axes).
        device, precision, tile: passed to :func:`defocus_cli.runtime.run_engine` (learned only).
        max_disparity, window: block-matching search range and window, input px (classical only). The
            defaults suit phone DP sensors (Pixel 4 views shift by up to about 8 px; validation on 8 real
            Pixel 4 scenes: mean |Spearman| 0.86 vs ground truth, see bench/RESULTS.md); raise
            ``max_disparity`` for large-sensor DP (a disparity ``d`` px is a radius of ≈ 1.7 d px).
        linear: the views are linear raw sensor values (e.g. read with a black level): for ``"learned"``
            they go through :func:`prepare_linear_dp` (per-view gain equalisation, tone curve) first.
        work_side: learned only: the network sees the views reduced by :func:`learned_work_factor` (INTER_AREA)
            and its map is resized back (bilinear) and multiplied by that factor, so radii stay in input px;
            ``None`` or 0 = full resolution. See :data:`LEARNED_WORK_SIDE`.
    Returns:
        :class:`MapResult` with ``radius`` float32 ``(H, W)``; for learned maps ``info["work_factor"]``.
    """
    from defocus_cli import map_classical

    _check_method(method)
    if baseline not in BASELINES:
        raise UsageError(f"baseline must be h, v or auto, got {baseline!r}", param="baseline")
    lv, rv = np.asarray(left, np.float32), np.asarray(right, np.float32)
    if lv.shape[:2] != rv.shape[:2]:
        raise UsageError(f"views differ in size: {lv.shape[:2]} vs {rv.shape[:2]}")
    if baseline == "auto":
        baseline = map_classical.detect_baseline(map_classical.to_gray(lv), map_classical.to_gray(rv))
        log.info("detected %s baseline", "horizontal" if baseline == "h" else "vertical")
    if baseline == "v":  # estimators work along x: transpose the views, then the map back
        lv, rv = np.swapaxes(lv, 0, 1), np.swapaxes(rv, 0, 1)
    info: dict[str, Any] = {}
    name = None
    conf = None
    if method == "classical":
        radius, conf = map_classical.dp_radius_map_conf(lv, rv, max_disparity=max_disparity, window=window)
    else:
        if model is None:
            raise UsageError("method 'learned' needs a map model (or use method 'classical')")
        import torch

        from defocus_cli.runtime import run_engine

        name = getattr(model, "name", type(_module(model)).__name__)
        h, w = lv.shape[:2]
        f = learned_work_factor((h, w), work_side)
        if f > 1:
            import cv2

            size = (max(1, round(w / f)), max(1, round(h / f)))
            lv = cv2.resize(lv, size, interpolation=cv2.INTER_AREA)
            rv = cv2.resize(rv, size, interpolation=cv2.INTER_AREA)
        if linear:
            lv, rv = prepare_linear_dp(lv, rv)
        x = torch.cat([_views_tensor(lv), _views_tensor(rv)], dim=1)
        y = run_engine(
            _module(model), x, device=device, precision=precision, tile=tile,
            fn=lambda m, t: m(t[:, :3], t[:, 3:]), info=info,
        )
        radius = y[0, 0].numpy()
        if f > 1:
            import cv2

            radius = cv2.resize(radius, (w, h), interpolation=cv2.INTER_LINEAR) * np.float32(f)
        info["work_factor"] = f
    if baseline == "v":
        radius = radius.T
        conf = conf.T if conf is not None else None
    if conf is not None:
        conf = np.ascontiguousarray(conf, dtype=np.float32)
    return MapResult(np.ascontiguousarray(radius, dtype=np.float32), method, baseline, True, name, info, conf)


def estimate_single_map(
    image: np.ndarray,
    model: Any = None,
    *,
    method: str = "learned",
    device: "torch.device | str" = "cpu",
    precision: str = "fp32",
    tile: int | str = "auto",
) -> MapResult:
    """CoC radius map from one image.

    Args:
        image: float32 ``(H, W, 3)`` RGB (or ``(H, W)`` gray) in [0, 1].
        model: ``method="learned"``: a deblurring engine with ``defocus_map(x) -> (N, 1, H, W)``
            (:class:`~defocus_cli.weights.LoadedModel` or ``nn.Module``).
        method: ``"learned"`` or ``"classical"`` (edge re-blur ratio; unsigned).
    Raises:
        UsageError: the model has no ``defocus_map``.
    """
    from defocus_cli import map_classical

    _check_method(method)
    img = np.asarray(image, np.float32)
    if method == "classical":
        return MapResult(map_classical.single_radius_map(img), method, None, False)
    if model is None:
        raise UsageError("method 'learned' needs a model with a defocus map (or use method 'classical')")
    module = _module(model)
    name = getattr(model, "name", type(module).__name__)
    if not callable(getattr(module, "defocus_map", None)):
        raise UsageError(
            f"model {name!r} does not estimate defocus maps; use a model that does (e.g. ifan) or --method classical"
        )
    from defocus_cli.runtime import run_engine

    info: dict[str, Any] = {}
    y = run_engine(
        module, _views_tensor(img), device=device, precision=precision, tile=tile,
        fn=lambda m, t: m.defocus_map(t), info=info,
    )
    radius = np.ascontiguousarray(y[0, 0].numpy(), dtype=np.float32)
    return MapResult(radius, method, None, bool(float(radius.min(initial=0.0)) < 0.0), name, info)


# --------------------------------------------------------------------------------------------- the command


def _single_map_model_name() -> str:
    """Default model for a single-image learned map: the default deblurring model if it has a defocus map,
    else the first registered deblurring model that has one."""
    from defocus_cli import registry

    candidates = registry.names("deblur")
    try:
        first = registry.default_model("deblur")
        candidates = [first] + [c for c in candidates if c != first]
    except WeightsError:
        pass
    for name in candidates:
        cls = registry.load_class(registry.get_spec(name).arch)
        if callable(getattr(cls, "defocus_map", None)):
            return name
    raise WeightsError(
        "no registered deblurring model estimates defocus maps; pass --weights FILE.safetensors "
        "(ifan or sftnet) or use --method classical"
    )


def _range(r: np.ndarray) -> dict[str, float]:
    """The scene's robust radius range: 2nd and 98th percentiles of the map (signed when the method is)."""
    lo, hi = np.percentile(r, [2, 98])
    return {"p2": round(float(lo), 4), "p98": round(float(hi), 4), "span": round(float(hi - lo), 4)}


def _confidence(c: np.ndarray | None) -> dict[str, float] | None:
    """Summary of a per-pixel confidence map in [0, 1]: mean and the fraction of pixels above 0.5."""
    if c is None:
        return None
    return {"mean": round(float(np.mean(c)), 4), "fraction_above_0.5": round(float(np.mean(c > 0.5)), 4)}


def _stats(r: np.ndarray) -> dict[str, float]:
    return {k: round(float(f(r)), 4) for k, f in (("min", np.min), ("max", np.max), ("mean", np.mean), ("median", np.median))}


def run_map(
    inputs: list[str | Path],
    output: str | Path,
    *,
    method: str | None = None,
    model_name: str | None = None,
    weights_file: str | Path | None = None,
    fmt: str | None = None,
    signed: bool = False,
    black_level: float = 0.0,
    white_level: float | None = None,
    baseline: str = "auto",
    preview: str | Path | None = None,
    device: str = "auto",
    precision: str = "auto",
    tile: int | str = "auto",
    overwrite: bool = False,
    max_disparity: int = 12,
) -> dict[str, Any]:
    """Estimate and write one defocus map (the ``defocus map`` command). Returns a JSON-ready summary.

    Args:
        inputs: ``[LEFT, RIGHT]`` (DP pair, stored orientation) or ``[IMAGE]`` (read upright, like ``deblur``).
        output: map file; format from ``fmt`` or the extension (.npy, .png → png16, .tif).
        method: ``"learned"``/``"classical"``; ``None`` = learned (classical when nothing else is possible is
            *not* chosen silently).
        model_name, weights_file: which learned model (task ``map`` for pairs; a deblurring model with a
            defocus map for one image).
        signed: keep the sign in npy/tif (DP pairs); png16 cannot.
        black_level, white_level: integer levels of the input files (raw DP frames: e.g. 1024 for Pixel 4).
        baseline: ``"auto"``, ``"h"`` or ``"v"`` (DP pairs).
        preview: optional colour-mapped PNG.
        overwrite: replace existing output/preview files (else :class:`UsageError`).
        max_disparity: classical DP search range, px (see :func:`estimate_dp_map`).
    Raises:
        UsageError (exit 2: also for a target that is an input, exists without ``overwrite``, or whose folder
        is missing), InputError/OutputError (exit 1), WeightsError (exit 3), DeviceError (exit 4).
    """
    from defocus_cli.io import maps as map_io

    t0 = time.perf_counter()
    if len(inputs) not in (1, 2):
        raise UsageError(f"expected LEFT RIGHT (a dual-pixel pair) or one IMAGE, got {len(inputs)} inputs")
    method = method or "learned"
    _check_method(method)
    if baseline not in BASELINES:
        raise UsageError(f"baseline must be h, v or auto, got {baseline!r}", param="baseline")
    if max_disparity < 1:
        raise UsageError(f"max disparity must be >= 1, got {max_disparity}", param="max_disparity")
    out = Path(output)
    fmt = map_io.map_format(out, fmt)
    if signed and fmt == "png16":
        raise UsageError("--signed needs --format npy or tif; png16 stores the unsigned radius only")
    if preview is not None and Path(preview).suffix.lower() != ".png":
        raise UsageError(f"preview must name a .png file, got {str(preview)!r}", param="preview")
    in_paths = [Path(p) for p in inputs]
    # every target is checked before anything is computed or written (exit 2, like deblur's safety rules)
    targets = [Target(out, "-o")] + ([Target(Path(preview), "--preview")] if preview is not None else [])
    check_targets(targets, in_paths, overwrite=overwrite, create_folders=False)
    if method == "classical" and (model_name or weights_file):
        raise UsageError("--model/--weights and --method classical exclude each other")

    loaded = None
    dev_name, prec = None, None
    if method == "learned":
        from defocus_cli.devices import resolve_device, resolve_precision
        from defocus_cli.weights import load_model

        dev = resolve_device(device)
        if len(inputs) == 2:
            try:
                loaded = load_model(model_name, weights_file, task="map")
            except WeightsError as e:
                raise WeightsError(f"{e} (or use --method classical, which needs no weights)") from None
        else:
            name = model_name if (model_name or weights_file) else _single_map_model_name()
            loaded = load_model(name, weights_file, task="deblur")
        prec = resolve_precision(precision, loaded.module, dev)
        dev_name = str(dev)
    else:
        dev = None

    if len(inputs) == 2:
        left, right = map_io.load_dp_pair(in_paths[0], in_paths[1], black_level=black_level, white_level=white_level)
        res = estimate_dp_map(
            left.pixels, right.pixels, loaded, method=method, baseline=baseline,
            device=dev if dev is not None else "cpu", precision=prec or "fp32", tile=tile,
            max_disparity=max_disparity, linear=bool(black_level),
        )
    else:
        from defocus_cli.io.read import read_photo

        photo = read_photo(in_paths[0])
        img = photo.pixels
        if black_level:
            full = 65535.0 if photo.bit_depth == 16 else 255.0
            b = black_level / full
            white = (white_level / full) if white_level is not None else 1.0
            if white <= b:
                raise UsageError(f"white level {white_level:g} must be above the black level {black_level:g}",
                                 param="white_level")
            img = np.clip((img - b) / (white - b), 0.0, 1.0).astype(np.float32)
        res = estimate_single_map(
            img, loaded, method=method, device=dev if dev is not None else "cpu", precision=prec or "fp32", tile=tile
        )
    keep_sign = signed and res.signed
    if signed and not res.signed:
        log.warning("this method gives an unsigned map; --signed has no effect")
    map_io.write_map(out, res.radius, fmt, signed=keep_sign)
    if preview is not None:
        map_io.write_preview(preview, res.radius, signed=keep_sign)
    from defocus_cli._version import __version__

    stored = res.radius if keep_sign else np.abs(res.radius)
    h, w = res.radius.shape
    item = {
        "input": [str(p) for p in in_paths] if len(in_paths) == 2 else str(in_paths[0]),
        "output": str(out),
        "preview": str(preview) if preview is not None else None,
        "status": "ok",
        "kind": "dual-pixel" if len(in_paths) == 2 else "single",
        "format": fmt,
        "signed": keep_sign,
        "baseline": res.baseline,
        "width": w,
        "height": h,
        "radius": _stats(stored),
        "range": _range(res.radius if res.signed else stored),
        "confidence": _confidence(res.confidence),
        "seconds": round(time.perf_counter() - t0, 3),
    }
    return {
        "version": __version__,
        "method": method,
        "model": loaded.name if loaded is not None else None,
        "weights_sha256": loaded.sha256 if loaded is not None else None,
        "device": dev_name,
        "precision": prec,
        "tile": res.info.get("tile") if res.info else None,
        "items": [item],
    }
