"""Classical non-blind defocus deconvolution: Wiener, Richardson–Lucy, Krishnan–Fergus hyper-Laplacian.

Uniform blur (one radius) or spatially varying blur (a CoC-radius map, see :mod:`.spatial`). numpy + torch.fft (no SciPy needed);
images are ``(H, W, C)`` float in [0, 1] (RGB or any channel count), radii in pixels of that image.

Example:
    >>> import numpy as np
    >>> from defocus_cli.deconv import deconvolve
    >>> img = np.random.default_rng(0).random((32, 32, 3)).astype(np.float32)
    >>> deconvolve(img, "wiener", radius=2.0).shape
    (32, 32, 3)
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

import numpy as np

from defocus_cli.deconv.hyper_laplacian import hyper_laplacian
from defocus_cli.deconv.psf import KERNELS, make_psf
from defocus_cli.deconv.richardson_lucy import richardson_lucy
from defocus_cli.deconv.spatial import deconvolve_varying
from defocus_cli.deconv.wiener import wiener
from defocus_cli.errors import InputError, UsageError

__all__ = ["METHODS", "KERNELS", "deconvolve", "fit_map", "wiener", "richardson_lucy", "hyper_laplacian", "make_psf"]

log = logging.getLogger(__name__)

#: CLI method name -> uniform deconvolution function ``f(image, psf, **params)``.
METHODS: dict[str, Callable[..., np.ndarray]] = {
    "wiener": wiener,
    "rl": richardson_lucy,
    "hyperlaplacian": hyper_laplacian,
}

#: Largest radius (px) a map or --radius may ask for (beyond it FFT padding dominates and nothing is recoverable).
MAX_RADIUS: float = 64.0


def fit_map(radius: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A defocus map resized to the image ``shape`` (H, W): bilinear, radii scaled by the width ratio.

    Raises:
        InputError: the map is not 2-D or its aspect ratio differs from the image's by more than 2%.
    """
    if radius.ndim == 3 and radius.shape[2] == 1:
        radius = radius[..., 0]
    if radius.ndim != 2:
        raise InputError(f"defocus map has shape {radius.shape}; expected a single-channel H x W map")
    if radius.shape == shape:
        return radius.astype(np.float32)
    mh, mw = radius.shape
    h, w = shape
    if abs(mh / mw - h / w) > 0.02 * (h / w):
        raise InputError(f"defocus map is {mw}x{mh} but the image is {w}x{h}; give the map made for this image")
    import cv2

    log.warning("resizing the %dx%d defocus map to the %dx%d image (radii scaled by %.3f)", mw, mh, w, h, w / mw)
    return cv2.resize(radius.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR) * (w / mw)


def deconvolve(
    image: np.ndarray,
    method: str,
    *,
    radius: float | None = None,
    defocus: np.ndarray | None = None,
    kernel: str = "disc",
    iterations: int | None = None,
    max_levels: int = 16,
    progress: Callable[[int, int], None] | None = None,
    taper: float | None = 0.0,
    **params: Any,
) -> np.ndarray:
    """Deconvolve ``image`` (H, W, C) float [0, 1] with a uniform ``radius`` or a per-pixel ``defocus`` map.

    Args:
        method: ``"wiener"``, ``"rl"`` or ``"hyperlaplacian"``.
        radius: CoC radius in px for the whole image (exclusive with ``defocus``).
        defocus: (H, W) CoC radius map in px (signed maps: the magnitude is used); resized if needed.
        kernel: ``"disc"``, ``"gaussian"`` or ``"butterworth"``.
        iterations: RL iterations (default 10) or hyper-Laplacian inner iterations per beta (default 1);
            ignored by Wiener.
        max_levels: radius levels for a map.
        taper: depth-edge taper of a map's levels (see :func:`~defocus_cli.deconv.spatial.deconvolve_varying`;
            ``None`` = off).
        **params: method parameters (``balance`` for Wiener, ``lam``/``alpha`` for hyper-Laplacian).
    Returns:
        float32 (H, W, C) in [0, 1].
    Raises:
        UsageError: unknown method/kernel, both or neither of radius/defocus, bad iterations or radius.
    """
    if method not in METHODS:
        raise UsageError(f"unknown method {method!r}; expected one of {', '.join(METHODS)}")
    if kernel not in KERNELS:
        raise UsageError(f"unknown kernel {kernel!r}; expected one of {', '.join(KERNELS)}")
    if (radius is None) == (defocus is None):
        raise UsageError("give exactly one of a blur radius (--radius R) or a defocus map (--map MAP)")
    kwargs = dict(params)
    if iterations is not None:
        if iterations < 1:
            raise UsageError(f"iterations must be >= 1, got {iterations}", param="iterations")
        if method == "wiener":
            log.info("--iterations is ignored by the Wiener method")
        else:
            kwargs["iterations"] = int(iterations)
    fn = functools.partial(METHODS[method], **kwargs)
    img = np.asarray(image, dtype=np.float32)
    if radius is not None:
        if not (0.0 <= radius <= MAX_RADIUS):
            raise UsageError(f"radius must be between 0 and {MAX_RADIUS:g} px, got {radius}", param="radius")
        return fn(img, make_psf(kernel, float(radius)))
    r = fit_map(np.asarray(defocus), img.shape[:2])
    peak = float(np.nanmax(np.abs(r))) if r.size else 0.0
    if peak > MAX_RADIUS:
        log.warning("defocus map reaches %.1f px; radii are capped at %g px", peak, MAX_RADIUS)
        r = np.clip(r, -MAX_RADIUS, MAX_RADIUS)
    return deconvolve_varying(img, r, fn, kernel=kernel, max_levels=max_levels, progress=progress, taper=taper)
