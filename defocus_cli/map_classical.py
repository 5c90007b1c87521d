"""Classical (no network) defocus-map estimation: dual-pixel block matching and single-image edge re-blur.
numpy + OpenCV only; no weights needed.

Dual-pixel pair (:func:`dp_radius_map`, :func:`dp_radius_map_conf`)
    In a DP capture an out-of-focus point is imaged by the two half-apertures with opposite half-disc kernels,
    so the two views are shifted against each other along the split (baseline) by an amount that grows with
    the circle of confusion, and the shift changes sign across the focal plane. Per pair:

    1. the views are downscaled by :func:`work_scale` (``window / 20``, more for frames above 1.6 MP); the
       right view is gain-matched to the left by a smooth field (the half-apertures vignette in opposite
       directions); both are band-passed at the blur's scale (difference of Gaussians σ ``window/10`` −
       ``window/2.5``);
    2. zero-mean normalised cross-correlation (ZNCC, box window ``window``) of the left view with the right
       view shifted by each integer ``d`` in ``[-max_disparity, max_disparity]`` along the baseline; best
       ``d`` + parabola sub-pixel refinement; confidence = peak ZNCC² × local texture (0 at the bounds);
    3. the confident disparities are spread into textureless areas by an edge-aware bilateral-grid solver
       (:func:`bilateral_grid_solve`; the image is the guide), sliced at the input resolution;
    4. disparity → CoC radius with the Abuolaim DP kernel model (:mod:`defocus_cli.archs._dpkernels`, order 3,
       cut-off 2.5, β 0.1, smoothing 7): the left and right kernels of radius ``r`` have centroids
       ``δ(r)`` apart (δ ≈ r / 1.7 for r ≥ 3); the measured shift is mapped through the inverse of δ(r).

    Real Pixel 4 pairs (bench/map_pixel4.py): views shift by up to ~8 px; mean |Spearman| 0.86 against the
    ground truth over 8 scenes (bench/RESULTS.md). Sign: ``d > 0`` when the left view's content lies to the
    right of (below, for a vertical baseline) the right view's, which the kernel model produces for a
    positive CoC (behind the focal plane). Real sensors may be mirrored; check the sign on a known scene.

Single image (:func:`single_radius_map`)
    Edge re-blur gradient ratio (Zhuo & Sim 2011): at edges, re-blurring with a Gaussian of σ0 changes the
    gradient magnitude by ``R = |∇I| / |∇(I * G_σ0)|``, giving the edge's own blur ``σ = σ0 / sqrt(R² - 1)``;
    the sparse edge estimates are spread by :func:`propagate` (normalised convolution + guided filter). A disc
    of radius ``r`` has the same second moment as a Gaussian of ``σ = r / 2``, so radius = 2σ. Unsigned (one
    image carries no sign).
"""

from __future__ import annotations

import functools
import logging

import numpy as np

log = logging.getLogger(__name__)

__all__ = [
    "to_gray",
    "detect_baseline",
    "bandpass",
    "dp_disparity",
    "disparity_to_radius",
    "dp_radius_map",
    "dp_radius_map_conf",
    "bilateral_grid_solve",
    "work_scale",
    "single_radius_map",
    "propagate",
    "guided_filter",
]


def to_gray(img: np.ndarray) -> np.ndarray:
    """``(H, W)``, ``(H, W, 1)`` or ``(H, W, 3)`` RGB float → float32 ``(H, W)`` luma."""
    a = np.asarray(img, dtype=np.float32)
    if a.ndim == 2:
        return a
    if a.shape[2] == 1:
        return a[:, :, 0]
    return a @ np.array([0.299, 0.587, 0.114], np.float32)


def _box(a: np.ndarray, window: int) -> np.ndarray:
    import cv2

    return cv2.boxFilter(a, cv2.CV_32F, (window, window), normalize=True, borderType=cv2.BORDER_REFLECT)


def _shift_x(a: np.ndarray, d: int) -> np.ndarray:
    """``out[:, x] = a[:, x - d]`` with edge replication."""
    if d == 0:
        return a
    w = a.shape[1]
    idx = np.clip(np.arange(w) - d, 0, w - 1)
    return a[:, idx]


def dp_disparity(
    left: np.ndarray, right: np.ndarray, *, max_disparity: int = 4, window: int = 21
) -> tuple[np.ndarray, np.ndarray]:
    """Horizontal disparity ``d`` with ``left(x) ≈ right(x - d)`` by ZNCC block matching.

    Args:
        left, right: float32 ``(H, W)`` gray views (any scale; gains may differ).
        max_disparity: largest |d| searched, px.
        window: ZNCC box window side, px (odd).
    Returns:
        (disparity ``(H, W)`` float32 px, confidence ``(H, W)`` float32 in [0, 1]).
    """
    lf = np.asarray(left, np.float32)
    rt = np.asarray(right, np.float32)
    window = max(3, int(window) | 1)
    ml, mr = _box(lf, window), _box(rt, window)
    vl = np.maximum(_box(lf * lf, window) - ml * ml, 0.0)
    vr = np.maximum(_box(rt * rt, window) - mr * mr, 0.0)
    eps = 1e-12 + 1e-6 * float(np.median(vl) + np.median(vr))
    shifts = list(range(-max_disparity, max_disparity + 1))
    scores = np.empty((len(shifts),) + lf.shape, np.float32)
    for i, d in enumerate(shifts):
        rs = _shift_x(rt, d)
        cov = _box(lf * rs, window) - ml * _shift_x(mr, d)
        scores[i] = cov / np.sqrt(vl * _shift_x(vr, d) + eps)
    best = scores.argmax(axis=0)
    peak = np.take_along_axis(scores, best[None], 0)[0]
    lo = np.take_along_axis(scores, np.clip(best - 1, 0, len(shifts) - 1)[None], 0)[0]
    hi = np.take_along_axis(scores, np.clip(best + 1, 0, len(shifts) - 1)[None], 0)[0]
    denom = lo - 2 * peak + hi
    inner = (best > 0) & (best < len(shifts) - 1) & (denom < -1e-9)
    sub = np.where(inner, 0.5 * (lo - hi) / np.where(inner, denom, -1.0), 0.0)
    disp = (best - max_disparity).astype(np.float32) + np.clip(sub, -0.5, 0.5).astype(np.float32)
    texture = vl / (vl + 0.2 * float(np.median(vl)) + 1e-12)
    conf = np.clip(peak, 0, 1) ** 2 * texture * inner
    return disp, conf.astype(np.float32)


@functools.lru_cache(maxsize=None)
def _kernel_disparity_table(max_radius: int = 40) -> tuple[np.ndarray, np.ndarray]:
    """(δ(r), r) for r = 0..max_radius: centroid distance of the Abuolaim left/right kernels of radius r."""
    from defocus_cli.archs._dpkernels import dp_kernels

    deltas, radii = [0.0], [0.0]
    for r in range(1, max_radius + 1):
        _c, lk, rk = dp_kernels(r, 3, 2.5, 0.1, 7)
        x = np.arange(lk.shape[1]) - lk.shape[1] // 2
        deltas.append(float((lk.sum(0) * x).sum() - (rk.sum(0) * x).sum()))
        radii.append(float(r))
    return np.array(deltas), np.array(radii)


def disparity_to_radius(disparity: np.ndarray) -> np.ndarray:
    """Signed DP disparity (px) → signed CoC radius (px) through the kernel model's δ(r) (monotonic);
    beyond the table (r > 40 px) extrapolated linearly. Same shape as ``disparity``, float32."""
    deltas, radii = _kernel_disparity_table()
    slope = (radii[-1] - radii[-2]) / (deltas[-1] - deltas[-2])
    far = deltas[-1] + 1e6  # one table point far out = the linear extrapolation, in a single interp call
    xp = np.append(deltas, far).astype(np.float32)
    fp = np.append(radii, radii[-1] + (far - deltas[-1]) * slope).astype(np.float32)
    d = np.asarray(disparity, np.float32)
    r = np.interp(np.abs(d), xp, fp).astype(np.float32)
    return np.copysign(r, d).astype(np.float32)


def bandpass(a: np.ndarray, fine: float = 0.7, coarse: float = 3.0) -> np.ndarray:
    """Difference of Gaussians (σ ``fine`` − σ ``coarse``): removes sensor noise and the views' different
    low-frequency shading (DP vignetting) before matching."""
    import cv2

    a = np.asarray(a, np.float32)
    return cv2.GaussianBlur(a, (0, 0), fine) - cv2.GaussianBlur(a, (0, 0), coarse)


def _shading_slopes(left: np.ndarray, right: np.ndarray) -> tuple[float, float]:
    """Change of log(left / right) brightness across the image along x and along y (least-squares plane fit
    on a heavily smoothed, downscaled ratio). DP half-apertures vignette in opposite directions along the
    split, so real captures show a strong ratio gradient along the baseline."""
    import cv2

    h, w = left.shape
    f = max(1, max(h, w) // 64)
    small = (max(2, w // f), max(2, h // f))
    lo = cv2.resize(left, small, interpolation=cv2.INTER_AREA)
    ro = cv2.resize(right, small, interpolation=cv2.INTER_AREA)
    floor = 1e-3 * max(float(lo.mean()), float(ro.mean()), 1e-6)
    ok = (lo > floor) & (ro > floor)
    if ok.sum() < 16:
        return 0.0, 0.0
    ratio = np.log(np.maximum(lo, floor)) - np.log(np.maximum(ro, floor))
    yy, xx = np.mgrid[0 : small[1], 0 : small[0]].astype(np.float64)
    a = np.stack([xx[ok] / small[0], yy[ok] / small[1], np.ones(int(ok.sum()))], 1)
    coef, *_ = np.linalg.lstsq(a, ratio[ok].astype(np.float64), rcond=None)
    return float(coef[0]), float(coef[1])


def detect_baseline(left: np.ndarray, right: np.ndarray, *, max_disparity: int = 4, window: int = 15) -> str:
    """``"h"`` or ``"v"``: the DP split direction of a pair of gray ``(H, W)`` views.

    1. Shading: when log(left/right) changes across the image by more than 0.05 along one axis and at least
       twice as much as along the other, that axis is the baseline (real DP captures; robust to noise).
    2. Otherwise block matching: the axis along which shifting the right view explains the band-passed left
       view with the higher mean confidence.
    """
    sx, sy = _shading_slopes(left, right)
    if max(abs(sx), abs(sy)) > 0.05 and max(abs(sx), abs(sy)) >= 2 * min(abs(sx), abs(sy)):
        axis = "h" if abs(sx) > abs(sy) else "v"
        log.info("baseline from DP shading: %s (log-ratio slope x %.3f, y %.3f)", axis, sx, sy)
        return axis
    step = max(1, int(max(left.shape) // 768))  # decimate large views: the answer is global
    lf, rt = bandpass(left[::step, ::step]), bandpass(right[::step, ::step])
    gains = {}
    for axis, (a, b) in {"h": (lf, rt), "v": (lf.T.copy(), rt.T.copy())}.items():
        _d, conf = dp_disparity(a, b, max_disparity=max_disparity, window=window)
        gains[axis] = float(conf.mean())
    log.info("baseline from matching (mean confidence): h=%.4f v=%.4f", gains["h"], gains["v"])
    return "h" if gains["h"] >= gains["v"] else "v"


def guided_filter(guide: np.ndarray, src: np.ndarray, radius: int, eps: float) -> np.ndarray:
    """He et al.'s guided filter (gray guide): edge-aware smoothing of ``src`` following ``guide``."""
    w = 2 * radius + 1
    mi, ms = _box(guide, w), _box(src, w)
    cov = _box(guide * src, w) - mi * ms
    var = _box(guide * guide, w) - mi * mi
    a = cov / (var + eps)
    b = ms - a * mi
    return _box(a, w) * guide + _box(b, w)


def _blur_at_scale(a: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of σ = ``sigma`` px, computed on a downscaled copy when σ is large (cost independent of σ)."""
    import cv2

    h, w = a.shape
    f = max(1, int(sigma // 8))
    if f == 1:
        return cv2.GaussianBlur(a, (0, 0), sigma, borderType=cv2.BORDER_REFLECT)
    small = cv2.resize(a, (max(1, round(w / f)), max(1, round(h / f))), interpolation=cv2.INTER_AREA)
    small = cv2.GaussianBlur(small, (0, 0), sigma / f, borderType=cv2.BORDER_REFLECT)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def propagate(values: np.ndarray, weight: np.ndarray, guide: np.ndarray, *, scale: float = 15.0) -> np.ndarray:
    """Dense map from sparse/weighted estimates: multi-scale normalised convolution (Gaussian σ = scale·4^k up
    to the image size; the finest scale with enough weight wins), then a guided filter on ``guide``
    (radius ≈ scale). Cost is linear in the pixel count."""
    v = np.asarray(values, np.float32)
    w = np.asarray(weight, np.float32)
    h, wd = v.shape
    mean_w = float(w.mean()) + 1e-12
    out = np.full_like(v, float((v * w).sum() / (w.sum() + 1e-12)))
    vw = v * w
    sigmas = [scale]
    while sigmas[-1] < max(h, wd) / 4 and len(sigmas) < 6:
        sigmas.append(sigmas[-1] * 4)
    for sigma in reversed(sigmas):  # coarse → fine: finer estimates overwrite where well supported
        num, den = _blur_at_scale(vw, sigma), _blur_at_scale(w, sigma)
        ok = den > 0.25 * mean_w
        out = np.where(ok, num / np.maximum(den, 1e-12), out)
    # keep confident pixels' own values, blend the rest
    blend = np.clip(w / (w + 0.5 * mean_w), 0, 1)
    out = blend * v + (1 - blend) * out
    g = np.asarray(guide, np.float32)
    gs = float(g.std()) or 1.0
    return guided_filter(g / gs, out, max(1, int(round(scale))), 1e-2).astype(np.float32)


def _gain_normalise(left: np.ndarray, right: np.ndarray, degree: int = 2) -> np.ndarray:
    """``right`` multiplied by a smooth gain field so that both views have the same brightness: DP
    half-apertures vignette in opposite directions (real Pixel 4 pairs differ by 0-40 % across the frame).
    The field is ``exp(P(x, y))`` with ``P`` a polynomial of total degree ``degree`` least-squares fitted to
    ``log(left / right)`` on 64-px-scale downscaled views (well-exposed cells only), so that image structure
    (which the disparity shifts) never leaks into it. ``(H, W)`` float32 in, ``(H, W)`` float32 out."""
    import cv2

    h, w = left.shape
    f = max(1, max(h, w) // 64)
    small = (max(2, w // f), max(2, h // f))
    lo = cv2.resize(left, small, interpolation=cv2.INTER_AREA)
    ro = cv2.resize(right, small, interpolation=cv2.INTER_AREA)
    floor = 1e-3 * max(float(lo.mean()), float(ro.mean()), 1e-9)
    ok = (lo > floor) & (ro > floor)
    ratio = np.log(np.maximum(lo, floor)) - np.log(np.maximum(ro, floor))
    powers = [(i, j) for i in range(degree + 1) for j in range(degree + 1 - i)]
    if ok.sum() < 4 * len(powers):
        gain = float(np.exp(np.median(ratio[ok]))) if ok.any() else 1.0
        return (right * gain).astype(np.float32)
    yy, xx = np.mgrid[0 : small[1], 0 : small[0]].astype(np.float64)
    x, y = (xx + 0.5) / small[0] - 0.5, (yy + 0.5) / small[1] - 0.5
    a = np.stack([(x**i * y**j)[ok] for i, j in powers], 1)
    coef, *_ = np.linalg.lstsq(a, ratio[ok].astype(np.float64), rcond=None)
    gx = ((np.arange(w) + 0.5) / w - 0.5).astype(np.float32)[None, :]
    gy = ((np.arange(h) + 0.5) / h - 0.5).astype(np.float32)[:, None]
    log_gain = np.zeros((h, w), np.float32)
    for (i, j), c in zip(powers, coef):
        log_gain += np.float32(c) * (gx**i) * (gy**j)
    return (right * np.exp(log_gain)).astype(np.float32)


def _guide(image: np.ndarray) -> np.ndarray:
    """Edge guide for propagation: sqrt of a linear-light ``(H, W)`` view (evens out shadows and highlights),
    stretched so that its 1st-99th percentiles span [0, 1]; float32 ``(H, W)`` in [0, 1]."""
    g = np.sqrt(np.maximum(np.asarray(image, np.float32), 0.0))
    lo, hi = (float(v) for v in np.percentile(g[:: max(1, g.shape[0] // 256), :: max(1, g.shape[1] // 256)], [1, 99]))
    return np.clip((g - lo) / max(hi - lo, 1e-6), 0.0, 1.0).astype(np.float32)


def _grid_links(occupied: np.ndarray, z_weight: float, leak: float) -> list[np.ndarray]:
    """Link weights of the 6-neighbour grid graph, one array per axis (shape of ``np.diff`` along it):
    1 (``z_weight`` along the guide axis) between two occupied cells, ``leak`` times that otherwise, so that
    guide levels with no pixels between them cut the graph (objects of different brightness do not mix)
    while a faint link keeps every cell tied to the rest."""
    links = []
    for ax, wt in ((0, z_weight), (1, 1.0), (2, 1.0)):
        lo = [slice(None)] * 3
        hi = [slice(None)] * 3
        lo[ax], hi[ax] = slice(0, -1), slice(1, None)
        both = occupied[tuple(lo)] & occupied[tuple(hi)]
        links.append((wt * np.where(both, 1.0, leak)).astype(np.float32))
    return links


def _grid_laplacian(y: np.ndarray, links: list[np.ndarray]) -> np.ndarray:
    """Weighted graph Laplacian ``L y`` on a ``(K, Gh, Gw)`` grid with per-axis link weights ``links``."""
    out = np.zeros_like(y)
    for ax in range(3):
        if y.shape[ax] < 2:
            continue
        d = np.diff(y, axis=ax) * links[ax]
        lo = [slice(None)] * 3
        hi = [slice(None)] * 3
        lo[ax], hi[ax] = slice(0, -1), slice(1, None)
        out[tuple(lo)] -= d
        out[tuple(hi)] += d
    return out


def _grid_degree(shape: tuple[int, int, int], links: list[np.ndarray]) -> np.ndarray:
    """Diagonal of the weighted Laplacian (sum of each cell's link weights)."""
    deg = np.zeros(shape, np.float32)
    for ax in range(3):
        if shape[ax] < 2:
            continue
        lo = [slice(None)] * 3
        hi = [slice(None)] * 3
        lo[ax], hi[ax] = slice(0, -1), slice(1, None)
        deg[tuple(lo)] += links[ax]
        deg[tuple(hi)] += links[ax]
    return deg


def bilateral_grid_solve(
    target: np.ndarray,
    confidence: np.ndarray,
    guide: np.ndarray,
    *,
    sigma_spatial: float,
    sigma_range: float = 0.1,
    smoothness: float = 100.0,
    z_weight: float = 1.0,
    leak: float = 0.01,
    out_guide: np.ndarray | None = None,
    iterations: int = 400,
    tol: float = 1e-5,
) -> tuple[np.ndarray, np.ndarray]:
    """Edge-aware, confidence-weighted propagation in a bilateral grid (a fast bilateral solver).

    The pixels are splatted (tent weights) into a grid of cells ``sigma_spatial`` px wide and ``sigma_range``
    guide units deep; on the grid we minimise ``Σ_g C_g (y_g - T_g)² + smoothness · Σ_{g~g'} a_gg' (y_g - y_g')²``
    (``C_g`` = summed confidence, normalised to mean 1; ``T_g`` = its confidence-weighted mean target;
    ``a`` = 1 between cells that hold pixels, ``leak`` otherwise) by Jacobi-preconditioned conjugate
    gradients, and slice the solution back with the guide (occupancy-weighted, so a pixel never reads an
    empty cell). Pixels that differ in guide value sit in different cells, so estimates spread freely within
    objects and hardly across their edges; regions without confident pixels take the smooth interpolation of
    their neighbours.

    Args:
        target: float32 ``(H, W)`` values (e.g. disparity, px).
        confidence: float32 ``(H, W)`` ≥ 0 weights of ``target``.
        guide: float32 ``(H, W)`` in [0, 1] (e.g. :func:`_guide` of the image).
        sigma_spatial: grid cell size, px of ``target``.
        sigma_range: grid cell depth in guide units.
        smoothness: weight of the grid Laplacian relative to a cell of average confidence.
        z_weight: weight of the links between neighbouring guide levels (relative to spatial links).
        leak: relative weight of links that touch an empty cell (0 = cut).
        out_guide: optional finer ``(H2, W2)`` guide (same picture, larger) to slice at: the output is then
            ``(H2, W2)``, edge-aligned at that resolution.
    Returns:
        (dense values, support): float32 arrays of the sliced shape; ``support`` is the local mean of
        ``confidence`` around each pixel (over its grid cells, same units: in [0, 1] for confidences in
        [0, 1]; 0 where the value was interpolated from elsewhere).
    """
    import cv2

    h, w = target.shape
    k_levels = int(np.ceil(1.0 / sigma_range)) + 2
    gh = max(2, int(np.ceil(h / sigma_spatial)) + 1)
    gw = max(2, int(np.ceil(w / sigma_spatial)) + 1)
    gz = np.clip(np.asarray(guide, np.float32), 0.0, 1.0) / sigma_range + 0.5
    c = np.maximum(np.asarray(confidence, np.float32), 0.0)
    ct = c * np.asarray(target, np.float32)
    splat_c = np.zeros((k_levels, gh, gw), np.float32)
    splat_t = np.zeros_like(splat_c)
    splat_n = np.zeros_like(splat_c)
    for k in range(k_levels):
        wk = np.maximum(0.0, 1.0 - np.abs(gz - k))
        if not wk.any():
            continue
        splat_n[k] = cv2.resize(wk, (gw, gh), interpolation=cv2.INTER_AREA)
        splat_c[k] = cv2.resize(wk * c, (gw, gh), interpolation=cv2.INTER_AREA)
        splat_t[k] = cv2.resize(wk * ct, (gw, gh), interpolation=cv2.INTER_AREA)
    shape = out_guide.shape if out_guide is not None else (h, w)
    scale = float(splat_c.mean())
    if scale <= 0:
        return np.full(shape, float(np.mean(target)), np.float32), np.zeros(shape, np.float32)
    splat_c_raw = splat_c.copy()
    splat_c /= scale
    splat_t /= scale
    occupied = splat_n > 1e-3 * float(splat_n.max())
    links = _grid_links(occupied, float(z_weight), float(leak))
    eps = 1e-4
    mean = float(splat_t.sum() / splat_c.sum())
    b = splat_t + eps * mean
    precond = 1.0 / (splat_c + smoothness * _grid_degree(splat_c.shape, links) + eps)

    def apply(v: np.ndarray) -> np.ndarray:
        return splat_c * v + smoothness * _grid_laplacian(v, links) + eps * v

    y = np.full_like(splat_c, mean)
    r = b - apply(y)
    z = precond * r
    p = z.copy()
    rz = float((r * z).sum())
    bnorm = float(np.sqrt((b * b).sum())) + 1e-12
    for _ in range(iterations):
        ap = apply(p)
        alpha = rz / max(float((p * ap).sum()), 1e-30)
        y += alpha * p
        r -= alpha * ap
        if float(np.sqrt((r * r).sum())) / bnorm < tol:
            break
        z = precond * r
        rz_new = float((r * z).sum())
        p = z + (rz_new / max(rz, 1e-30)) * p
        rz = rz_new
    og = np.asarray(out_guide if out_guide is not None else guide, np.float32)
    occ = splat_n + 1e-6 * float(splat_n.max())
    num, den, conf_sum = _slice(np.stack([y * occ, occ, splat_c_raw]), og, sigma_range)
    den = np.maximum(den, 1e-12)
    return num / den, np.maximum(conf_sum / den, 0.0)


def _slice(grids: np.ndarray, guide: np.ndarray, sigma_range: float) -> tuple[np.ndarray, ...]:
    """Trilinear read-out of ``(C, K, Gh, Gw)`` grids at every pixel of an ``(H, W)`` guide in [0, 1] (the
    grids span the same picture as the guide, cell centres as :func:`cv2.resize` places them). Each channel is
    laid out as one ``(K·Gh, Gw, C)`` image read with two bilinear :func:`cv2.remap` calls (the two guide
    levels around the pixel's), so the cost is a few passes over the pixels whatever K is. C ≤ 4."""
    import cv2

    _c, k_levels, gh, gw = grids.shape
    h, w = guide.shape
    gx = ((np.arange(w, dtype=np.float32) + 0.5) * (gw / w) - 0.5).clip(0, gw - 1)
    gy = ((np.arange(h, dtype=np.float32) + 0.5) * (gh / h) - 0.5).clip(0, gh - 1)
    gz = np.clip(guide, 0.0, 1.0) / sigma_range + 0.5
    k0 = np.clip(np.floor(gz), 0, k_levels - 2)
    frac = (gz - k0).astype(np.float32)
    mapx = np.broadcast_to(gx[None, :], (h, w)).astype(np.float32)
    flat = np.ascontiguousarray(np.moveaxis(grids, 0, -1).reshape(k_levels * gh, gw, -1), dtype=np.float32)
    ylo = gy[:, None] + (k0 * gh).astype(np.float32)
    lo = cv2.remap(flat, mapx, ylo, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    hi = cv2.remap(flat, mapx, ylo + np.float32(gh), cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    if lo.ndim == 2:
        lo, hi = lo[:, :, None], hi[:, :, None]
    f = frac[:, :, None]
    both = lo + f * (hi - lo)
    outs = [both[:, :, i] for i in range(both.shape[2])]
    return tuple(outs)


def _resize(a: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    import cv2

    return cv2.resize(a, size, interpolation=cv2.INTER_AREA)


def work_scale(shape: tuple[int, int], window: int, max_work_pixels: float = 1.6e6) -> float:
    """Downscale factor (≥ 1) of the views for DP matching: ``window / 20`` (the band-pass and window are
    blur-sized, so matching at that scale loses nothing), and at least ``sqrt(H·W / max_work_pixels)`` so that a
    12 MP frame costs about what a 1.6 MP one does."""
    h, w = shape
    return float(max(1.0, window / 20.0, np.sqrt(h * w / max_work_pixels)))


def dp_radius_map_conf(
    left: np.ndarray, right: np.ndarray, *, max_disparity: int = 12, window: int = 41
) -> tuple[np.ndarray, np.ndarray]:
    """Signed CoC radius (px) and its confidence from a DP pair with a **horizontal** baseline.

    1. Views → gray, matched at a reduced working scale ``s`` (:func:`work_scale`); the right view is
       gain-normalised to the left by a smooth (quadratic in log) field (:func:`_gain_normalise`, DP
       vignetting), both are band-passed with a
       difference of Gaussians σ ``window/10`` − ``window/2.5`` input px (defocused DP views carry their
       disparity in the low frequencies; the fine band is mostly sensor noise).
    2. ZNCC block matching (:func:`dp_disparity`, window ``window`` input px) over ``±max_disparity`` input px,
       parabola sub-pixel peak; confidence = peak ZNCC² × local texture (0 at the search bounds).
    3. Edge-aware propagation of the confident disparities into textureless areas with
       :func:`bilateral_grid_solve` (guide: the mean view), sliced at the input resolution.
    4. Disparity (input px) → CoC radius with :func:`disparity_to_radius`.

    Args:
        left, right: float ``(H, W[, C])`` views, any scale, same shape.
        max_disparity: largest |view shift| searched, input px (Pixel 4: shifts reach about 8 px).
        window: matching window, input px; also sets the band-pass and the working scale.
    Returns:
        (radius, confidence): float32 ``(H, W)``; radius signed (negative = in front of focus), confidence in
        [0, 1]: the local mean of the matching confidence (peak ZNCC² × texture) around each pixel, high where
        the views matched well, towards 0 where the value was propagated from elsewhere.
    """
    lg, rg = to_gray(left), to_gray(right)
    h, w = lg.shape
    window = max(3, int(window))
    s = work_scale((h, w), window)
    size = (max(8, round(w / s)), max(8, round(h / s)))
    ls, rs = (_resize(lg, size), _resize(rg, size)) if s > 1 else (lg, rg)
    sx = w / ls.shape[1]  # exact x scale actually used (disparity is along x)
    rs_n = _gain_normalise(ls, rs)
    fine, coarse = 0.1 * window / s, 0.4 * window / s
    d_work = max(1, int(np.ceil(max_disparity / sx)))
    win = max(3, int(round(window / s)) | 1)
    disp, conf = dp_disparity(
        bandpass(ls, fine, coarse), bandpass(rs_n, fine, coarse), max_disparity=d_work, window=win
    )
    sigma_s = max(8.0, max(h, w) / 84.0) / s  # grid cell: a fixed fraction of the frame, ≥ 8 input px
    full_guide = _guide(0.5 * (lg + rg))
    small_guide = _guide(0.5 * (ls + rs)) if s > 1 else full_guide
    dense, support = bilateral_grid_solve(
        disp * sx, conf, small_guide, sigma_spatial=sigma_s, out_guide=full_guide
    )
    return disparity_to_radius(dense), np.clip(support, 0.0, 1.0).astype(np.float32)


def dp_radius_map(
    left: np.ndarray, right: np.ndarray, *, max_disparity: int = 12, window: int = 41
) -> np.ndarray:
    """Signed CoC radius (px) ``(H, W)`` float32 from a DP pair with a **horizontal** baseline (transpose
    both views for a vertical one). Views: float ``(H, W[, C])``, any scale. See :func:`dp_radius_map_conf`."""
    return dp_radius_map_conf(left, right, max_disparity=max_disparity, window=window)[0]


def single_radius_map(image: np.ndarray, *, sigma0: float = 1.0, max_radius: float = 24.0) -> np.ndarray:
    """Unsigned CoC radius (px) ``(H, W)`` float32 of one image by the edge re-blur gradient ratio.
    Image: float ``(H, W[, C])`` in [0, 1]."""
    import cv2

    g = to_gray(image)
    g8 = np.clip(np.round(g * 255), 0, 255).astype(np.uint8)
    med = float(np.median(g8))
    edges = cv2.Canny(g8, max(5.0, 0.33 * med), max(15.0, 0.66 * med + 10)) > 0

    def grad(a: np.ndarray) -> np.ndarray:
        gx = cv2.Sobel(a, cv2.CV_32F, 1, 0, ksize=3)
        gy = cv2.Sobel(a, cv2.CV_32F, 0, 1, ksize=3)
        return np.sqrt(gx * gx + gy * gy)

    g0 = grad(g)
    sig = np.zeros_like(g)
    wsum = np.zeros_like(g)
    for s0 in (sigma0, 2 * sigma0):  # two re-blur scales, averaged
        g1 = grad(cv2.GaussianBlur(g, (0, 0), s0))
        ratio = g0 / np.maximum(g1, 1e-6)
        valid = edges & (ratio > 1.01)
        s = np.where(valid, s0 / np.sqrt(np.maximum(ratio * ratio - 1.0, 1e-6)), 0.0)
        s = np.clip(s, 0, max_radius / 2)
        sig += s * valid
        wsum += valid
    valid = wsum > 0
    sig = np.where(valid, sig / np.maximum(wsum, 1), 0.0).astype(np.float32)
    weight = (valid * np.clip(g0 / (g0[valid].mean() if valid.any() else 1.0), 0, 1)).astype(np.float32)
    if not valid.any():
        log.warning("no edges found: the single-image map is flat (0 px)")
        return np.zeros_like(g)
    dense = propagate(sig, weight, g, scale=8.0)
    return np.clip(2.0 * dense, 0.0, max_radius).astype(np.float32)
