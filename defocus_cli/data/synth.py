"""Synthetic dual-pixel defocus from one sharp photo crop (torch; CPU or GPU).

Pipeline for one sample (all in linear light, then a tone curve):

1. **Scene depth** (inverse depth, arbitrary units): a slanted background plane plus 0–3 occluding
   layers (hard-edged blobs from thresholded low-frequency noise, or ellipses), each a slanted plane
   nearer than the layers behind it.
2. **Thin-lens CoC**: ``coc = s · (invd_focus − invd)`` — positive behind the focal plane, negative in
   front of it; the focus is put on a random scene point (80 %) or anywhere in the depth range; ``s`` is
   drawn so that ``max |coc| ≤ max_coc`` (≈ 25 px at 1680×1120, scaled with the photo size).
3. **Layered blur**: the CoC map is quantised to integer radii; each radius level is one layer, filtered
   with the Abuolaim DP kernels (:mod:`defocus_cli.archs._dpkernels`; one random (order, cut-off, β) per
   sample) for the combined, left and right views at once by batched FFT, and composited from far to
   near (``acc ← acc·(1−α) + colour·α`` with the blurred layer mask α, then normalised by the total
   coverage), so nearer blur spills over farther content and never the other way round.
4. **Camera** (what happens after the lens, identical for the sharp and the blurred capture): random
   exposure and white balance; optional highlight boost before the blur (bright pixels pushed above 1 so
   saturated bokeh discs form) and clipping to [0, 1] after it; Poisson–Gaussian sensor noise with **one
   noise realisation shared by the target and the blurred views** (``noise_in_target``: an in-focus pixel's
   blurry capture equals its sharp capture, so a network trained on it removes blur and leaves noise and
   texture alone); a random tone curve (sRGB-like gamma + mild S-curve).

``in_focus_prob`` of the samples are nearly in focus everywhere (max |CoC| ≤ 1.5 px), so the networks see
plenty of sharp content that must come back unchanged.

Values: every image output is ``(3, P, P)`` float32 in ``[0, 1]`` RGB; ``coc`` is ``(1, P, P)`` float32 signed
CoC radius in pixels of the output image.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from defocus_cli.archs._dpkernels import (BETAS, CUTOFF_FACTORS, ORDERS, SMOOTH, dp_kernels, dp_kernels_subpixel,
                                         kernel_size)

REFERENCE_LONG_SIDE = 1680
REFERENCE_MAX_COC = 25.0


def max_coc_for(long_side: int, scale: float = 1.0) -> float:
    """Largest CoC radius (px) for a photo whose long side is ``long_side`` px: 25 px at 1680 px × ``scale``."""
    return REFERENCE_MAX_COC * long_side / REFERENCE_LONG_SIDE * scale


def srgb_to_linear(x: torch.Tensor) -> torch.Tensor:
    """sRGB-encoded [0, 1] → linear [0, 1]."""
    return torch.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055).clamp_min(0) ** 2.4)


@dataclass
class SynthParams:
    """Knobs of the generator (defaults are those used to train the shipped weights)."""

    max_coc: float = 8.0
    """Largest |CoC| radius in px at the scale of the photo crop."""
    min_blur_fraction: float = 0.15
    """The per-sample maximum |CoC| is drawn in ``[min_blur_fraction, 1] × max_coc``."""
    noise: bool = True
    camera: bool = True
    """Random exposure, white balance and tone curve (off: plain sRGB round trip)."""
    noise_in_target: bool = True
    """Give the target the same noise realisation as the blurred views (the camera-true pairing)."""
    in_focus_prob: float = 0.0
    """Probability that a sample is nearly in focus everywhere (max |CoC| drawn in [0, 1.5] px)."""
    highlight_prob: float = 0.0
    """Probability of boosting highlights above 1 (linear) before the blur; clipped after it."""
    noise_scale: float = 1.0
    """Multiplies the noise standard deviation (0.5: a quarter of the variance, like a 2x-downscaled photo)."""
    subpixel: bool = False
    """Fractional CoC radii (:func:`quantise_coc`, anti-aliased kernels) instead of integer ones."""


def _low_freq_noise(size: int, cells: int, gen: torch.Generator, device: torch.device) -> torch.Tensor:
    n = torch.rand((1, 1, cells, cells), generator=gen).to(device)
    return F.interpolate(n, size=(size, size), mode="bicubic", align_corners=False)[0, 0]


def random_inverse_depth(size: int, rng: np.random.Generator, gen: torch.Generator,
                         device: torch.device) -> torch.Tensor:
    """``(size, size)`` inverse-depth map (larger = nearer) of slanted, occluding layers."""
    yy, xx = torch.meshgrid(
        torch.linspace(-0.5, 0.5, size, device=device), torch.linspace(-0.5, 0.5, size, device=device),
        indexing="ij",
    )

    def plane(offset: float, slope: float) -> torch.Tensor:
        gx, gy = rng.normal(0.0, slope, size=2)
        return offset + float(gx) * xx + float(gy) * yy

    invd = plane(float(rng.uniform(0.0, 0.5)), 0.6)
    level = float(invd.max())
    for _ in range(int(rng.integers(0, 4))):
        if rng.random() < 0.6:
            field = _low_freq_noise(size, int(rng.integers(2, 6)), gen, device)
            mask = field > torch.quantile(field.flatten()[::7], float(rng.uniform(0.45, 0.85)))
        else:
            cy, cx = rng.uniform(-0.5, 0.5, size=2)
            ry, rx = rng.uniform(0.1, 0.5, size=2)
            mask = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0
        level = level + float(rng.uniform(0.05, 0.5))
        invd = torch.where(mask, plane(level, 0.3), invd)
        level = max(level, float(invd[mask].max()) if bool(mask.any()) else level)
    return invd


def signed_coc(invd: torch.Tensor, max_coc: float, rng: np.random.Generator, min_fraction: float,
               in_focus_prob: float = 0.0) -> torch.Tensor:
    """Thin-lens signed CoC (px) from inverse depth: positive behind the focus, negative in front.

    The largest |CoC| of the sample is drawn in ``[min_fraction, 1] × max_coc``, or in ``[0, 1.5]`` px with
    probability ``in_focus_prob`` (a nearly in-focus sample)."""
    flat = invd.flatten()
    if rng.random() < 0.8:
        focus = float(flat[int(rng.integers(0, flat.numel()))])
    else:
        focus = float(rng.uniform(float(flat.min()), float(flat.max())))
    diff = focus - invd
    span = float(diff.abs().max())
    if in_focus_prob > 0 and rng.random() < in_focus_prob:
        target = float(rng.uniform(0.0, min(1.5, max_coc)))
    else:
        target = max_coc * float(rng.uniform(min_fraction, 1.0))
    s = target / max(span, 1e-6)
    return diff * s


def quantise_coc(coc: torch.Tensor, subpixel: bool = False) -> torch.Tensor:
    """The blur levels of a signed CoC map: integer radii, or with ``subpixel`` steps of 0.25 px below 1.5 px,
    0.5 px below 4 px and 1 px above (fine where blur is small and common, coarse where a step is invisible;
    each level costs one FFT layer, so no finer)."""
    if not subpixel:
        return torch.round(coc)
    a = coc.abs()
    step = torch.full_like(a, 1.0)
    step[a < 3.75] = 0.5
    step[a < 1.375] = 0.25
    return torch.round(coc / step) * step


def _kernel_bank(levels: list[float], order: int, cutoff: float, beta: float, size: int,
                 device: torch.device, subpixel: bool = False) -> torch.Tensor:
    """``(L, 3, size, size)`` kernels (combined, left, right) centred at pixel (0, 0) for circular FFT conv."""
    bank = np.zeros((len(levels), 3, size, size), dtype=np.float32)
    make = dp_kernels_subpixel if subpixel else dp_kernels
    for i, lv in enumerate(levels):
        for j, k in enumerate(make(lv, order, cutoff, beta, SMOOTH)):
            h = k.shape[0] // 2
            bank[i, j, :k.shape[0], :k.shape[1]] = k
            bank[i, j] = np.roll(bank[i, j], (-h, -h), axis=(0, 1))
    return torch.from_numpy(bank).to(device)


def layered_dp_blur(img_lin: torch.Tensor, coc: torch.Tensor, order: int, cutoff: float,
                    beta: float, clamp: bool = True, subpixel: bool = False) -> torch.Tensor:
    """Blur a linear image ``(3, S, S)`` (≥ 0; values above 1 are highlights) by the signed CoC map
    ``(S, S)``; returns ``(3 views, 3, S, S)`` (combined, left, right), clamped to [0, 1] unless ``clamp`` is
    False. Borders wrap (circular FFT): callers crop a margin ≥ the largest kernel radius. ``subpixel``:
    fractional blur levels (:func:`quantise_coc`)."""
    device = img_lin.device
    s = img_lin.shape[-1]
    q = quantise_coc(coc, subpixel)
    levels = sorted({float(v) for v in torch.unique(q).tolist()}, reverse=True)  # far (large +) → near
    masks = torch.stack([(q == lv).to(img_lin.dtype) for lv in levels])  # (L, S, S)
    layers = torch.cat([masks[:, None] * img_lin[None], masks[:, None]], 1)  # (L, 4, S, S)
    bank = _kernel_bank(levels, order, cutoff, beta, s, device, subpixel)  # (L, 3, S, S)
    fl = torch.fft.rfft2(layers)  # (L, 4, S, S/2+1)
    fk = torch.fft.rfft2(bank)  # (L, 3, ...)
    out = torch.fft.irfft2(fl[:, None] * fk[:, :, None], s=(s, s))  # (L, 3 views, 4, S, S)
    acc = torch.zeros((3, 3, s, s), device=device, dtype=img_lin.dtype)
    cov = torch.zeros((3, 1, s, s), device=device, dtype=img_lin.dtype)
    for i in range(len(levels)):
        alpha = out[i, :, 3:4].clamp(0, 1)
        colour = out[i, :, :3] / out[i, :, 3:4].clamp_min(1e-4)
        acc = acc * (1 - alpha) + colour * alpha
        cov = cov * (1 - alpha) + alpha
    out = acc / cov.clamp_min(1e-4)
    return out.clamp(0, 1) if clamp else out.clamp_min(0)


def _tone(x: torch.Tensor, gamma: float, contrast: float) -> torch.Tensor:
    y = x.clamp(0, 1) ** (1.0 / gamma)
    s = y * y * (3 - 2 * y)  # smoothstep S-curve
    return (1 - contrast) * y + contrast * s


def synthesize(crop: torch.Tensor, margin: int, rng: np.random.Generator, params: SynthParams) -> dict[str, torch.Tensor]:
    """One sample from an sRGB crop ``(3, P + 2·margin, P + 2·margin)`` in [0, 1] (any device).

    Returns ``{"blur", "left", "right", "sharp"}`` each ``(3, P, P)`` float32 [0, 1] and ``"coc"``
    ``(1, P, P)`` signed CoC radius (px)."""
    device = crop.device
    gen = torch.Generator().manual_seed(int(rng.integers(0, 2**62)))
    s = crop.shape[-1]
    p = s - 2 * margin
    lin = srgb_to_linear(crop.float())
    if params.camera:
        exposure = float(np.exp(rng.uniform(math.log(0.6), math.log(1.5))))
        wb = torch.tensor(np.exp(rng.normal(0.0, 0.08, size=3)), dtype=torch.float32, device=device)
        lin = (lin * exposure * wb[:, None, None] / float(wb.mean()))
        gamma = float(rng.uniform(2.0, 2.6))
        contrast = float(rng.uniform(0.0, 0.35))
    else:
        gamma, contrast = 2.4, 0.0
    invd = random_inverse_depth(s, rng, gen, device)
    coc = signed_coc(invd, params.max_coc, rng, params.min_blur_fraction, params.in_focus_prob)
    order = int(rng.choice(ORDERS))
    cutoff = float(rng.choice(CUTOFF_FACTORS))
    beta = float(rng.choice(BETAS))
    if params.highlight_prob > 0 and rng.random() < params.highlight_prob:
        # push the brightest content above white (×1..×4 at full brightness) so that it clips after the blur
        gain = float(rng.uniform(1.0, 4.0))
        w = ((lin.max(dim=0, keepdim=True).values - 0.75) / 0.25).clamp(0, 1) ** 2
        lin = lin.clamp_min(0) * (1 + (gain - 1) * w)
    else:
        lin = lin.clamp(0, 1)
    views = layered_dp_blur(lin, coc, order, cutoff, beta, clamp=False, subpixel=params.subpixel)  # (3, 3, S, S)
    sl = (slice(None), slice(margin, margin + p), slice(margin, margin + p))
    views = views[(slice(None),) + sl].clamp(0, 1)
    sharp = lin[sl].clamp(0, 1)
    if params.noise:
        a = float(np.exp(rng.uniform(math.log(2e-4), math.log(8e-3))))
        b = float(np.exp(rng.uniform(math.log(1e-6), math.log(2e-4))))
        z = torch.randn(views.shape, generator=gen).to(device)  # independent per view (L and R photons)
        k = float(params.noise_scale)
        views = views + k * (views * a + b).sqrt() * z
        if params.noise_in_target:  # the combined capture's realisation, so in-focus pixels match exactly
            sharp = sharp + k * (sharp * a + b).sqrt() * z[0]
    views = _tone(views, gamma, contrast)
    sharp = _tone(sharp, gamma, contrast)
    return {
        "blur": views[0].contiguous(),
        "left": views[1].contiguous(),
        "right": views[2].contiguous(),
        "sharp": sharp.contiguous(),
        "coc": coc[margin:margin + p, margin:margin + p][None].float().contiguous(),
    }


def margin_for(max_coc: float) -> int:
    """Context (px per side) a crop needs so the largest kernel does not wrap into the patch."""
    return kernel_size(int(math.ceil(max_coc)) + 1) // 2 + 1
