"""IFAN trainer (Lee et al., CVPR 2021), following the paper's three losses as far as our data allows.

Losses (all at the patch level; ``x`` the blurred combined view, ``y`` the sharp target, ``↓8`` an 8×8 area
average, i.e. the 1/8 scale of IAC and of the disparity-map estimator ``DME``):

* **deblur**: ``MSE(IFAN(x), y)`` on the unclipped output ``x + out_res(...)`` (the paper's MSE).
* **disparity** (paper): the DME output ``d`` (1/8 scale, from the filter encoder of ``x``) warps the right
  view ``R↓8`` horizontally (``grid_sample``, border padding); ``MSE(warp(R↓8, d), L↓8)``. Because our data is
  synthetic we also know the signed CoC, so ``d`` is additionally supervised (weight ``w_dme_sup``, L1) by the
  disparity our DP kernels produce: the left kernel of a CoC ``+r`` is the disc × a 0→1 ramp across the
  columns, whose centroid sits ``r/4`` right of centre (the right kernel ``r/4`` left), so left and right
  views differ by a shift of ``r/2`` px and the warp that maps ``R`` onto ``L`` samples ``R`` at ``x − r/2``:
  ``d* = −coc↓8 / 16`` in 1/8-scale px (:data:`COC_PER_DME` = −16 converts back).
* **reblur** (paper's auxiliary): a small reblurring net (:class:`ReblurNet`, ~0.1 M params instead of the
  official 19 M — it reads the 128-channel trunk features that the filter predictor's last 1×1 conv turns
  into the IAC filters, instead of the 15,232-channel filter tensor itself) predicts 17 iterations of per-pixel
  separable 3-tap filters + bias for the three colour channels and applies them to ``y↓8``; ``MSE(reblur,
  x↓8)``. This pushes the filter branch to encode the blur, as in the paper.

Start: IFAN's output is ``x + lrelu(out_res(f))``; :func:`init_identity` zeroes ``out_res`` so an untrained
model returns its input exactly, and training can only move from there (the weights stay in the official
layout). Optimiser Adam (the paper: RAdam 1e-4, batch 8, 256² patches, 600 k iterations, grad-clip 0.5 — we
keep the clip, use a higher rate and far fewer, smaller patches for CPU).

Run: ``defocus train ifan --run-dir runs/ifan --cache CACHE.pt --set minutes=90`` (``--resume`` continues
from ``runs/ifan/last.pt``; ``--device cuda`` trains on a GPU with the synthetic data made there, ``--bf16`` adds
bf16 autocast to the forward passes; checkpoints hold CPU tensors, so a GPU run resumes on a CPU); JSONL log in ``runs/ifan/log.jsonl`` (loss terms per step, LFDOF centre-crop PSNR
every ``val_every`` steps next to the input's); exports ``weights/ifan.safetensors`` (fp16) whenever the
validation PSNR beats the input's and the previous best.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from defocus_cli.metrics import psnr_from_mse

log = logging.getLogger(__name__)

__all__ = ["IFANTrainConfig", "ReblurNet", "warp_horizontal", "init_identity", "ifan_loss",
           "train", "train_config", "config_from_options", "COC_PER_DME"]

#: Signed CoC radius (px, full resolution) per unit of the trained DME output (1/8-scale disparity):
#: ``coc ≈ COC_PER_DME · d`` for weights trained by this module on the project's synthetic DP data.
COC_PER_DME: float = -16.0


@dataclass
class IFANTrainConfig:
    """Knobs of an IFAN training run (defaults: the CPU recipe used for the shipped weights)."""

    run: str = "runs/ifan"
    cache: list[str] = field(default_factory=list)
    photos: str | None = None
    paired: str | None = None
    patch: int = 128
    batch: int = 4
    lr: float = 2e-4
    grad_clip: float = 0.5
    steps: int = 10**9
    minutes: float = 60.0
    w_dme_warp: float = 1.0
    w_dme_sup: float = 0.01
    w_reblur: float = 1.0
    val_root: str | None = None
    val_every: int = 100
    val_crop: int = 256
    save_every_s: float = 240.0
    export: str | None = "weights/ifan.safetensors"
    export_margin_db: float = 0.0
    threads: int = 1
    seed: int = 0
    init: str | None = None
    """Optional starting weights (safetensors in the IFAN layout) for fine-tuning; default: identity start."""
    device: str = "cpu"
    """``cpu``, ``cuda``, ``cuda:N`` (see :func:`defocus_cli.train.common.train_device`)."""
    coc_px: float = 0.0
    """Synthetic data: largest |CoC| (px) of the crop itself (16 matches dpdd_val); 0 = photo-relative range."""
    in_focus_prob: float = 0.0
    """Synthetic data: fraction of nearly in-focus samples."""
    highlight_prob: float = 0.0
    """Synthetic data: fraction of samples whose highlights clip after the blur."""
    bf16: bool = False
    """bf16 autocast for the forward passes and losses (optimiser and weights stay float32)."""


class ReblurNet(nn.Module):
    """Small reblurring head for the auxiliary loss.

    ``forward(g, sharp8)``: ``g`` ``(N, 128, h, w)`` IFAN filter-trunk features; ``sharp8`` ``(N, 3, h, w)`` the
    sharp image at 1/8 scale in [0, 1] → ``(N, 3, h, w)`` re-blurred image: ``n_iters`` iterations of a per-pixel,
    per-channel separable 3-tap filter (vertical then horizontal, own taps each) plus a per-pixel bias. The last
    conv is zero-initialised with biases giving the identity filter, so it starts as ``sharp8``.
    """

    def __init__(self, in_ch: int = 128, mid: int = 64, n_iters: int = 17, channels: int = 3) -> None:
        super().__init__()
        self.n_iters, self.c = n_iters, channels
        per_iter = channels * 3 * 2 + channels
        self.body = nn.Sequential(
            nn.Conv2d(in_ch, mid, 3, padding=1), nn.LeakyReLU(0.1),
            nn.Conv2d(mid, mid, 3, padding=1), nn.LeakyReLU(0.1),
        )
        self.head = nn.Conv2d(mid, n_iters * per_iter, 1)
        with torch.no_grad():
            self.head.weight.zero_()
            b = torch.zeros(n_iters, per_iter)
            for j in range(2):  # centre tap of each pass = 1
                b[:, j * channels * 3 + channels : j * channels * 3 + 2 * channels] = 1.0
            self.head.bias.copy_(b.flatten())

    def forward(self, g: torch.Tensor, sharp8: torch.Tensor) -> torch.Tensor:
        c = self.c
        p = self.head(self.body(g))
        per_iter = c * 7
        x = sharp8
        for i in range(self.n_iters):
            q = p[:, i * per_iter : (i + 1) * per_iter]
            kv, kh, b = q[:, : 3 * c], q[:, 3 * c : 6 * c], q[:, 6 * c :]
            xp = F.pad(x, (0, 0, 1, 1), mode="replicate")
            x = kv[:, :c] * xp[:, :, :-2] + kv[:, c : 2 * c] * xp[:, :, 1:-1] + kv[:, 2 * c :] * xp[:, :, 2:]
            xp = F.pad(x, (1, 1, 0, 0), mode="replicate")
            x = kh[:, :c] * xp[..., :-2] + kh[:, c : 2 * c] * xp[..., 1:-1] + kh[:, 2 * c :] * xp[..., 2:] + b
        return x


def warp_horizontal(img: torch.Tensor, disp: torch.Tensor) -> torch.Tensor:
    """Sample ``img`` ``(N, C, h, w)`` at ``(x + disp, y)``; ``disp`` ``(N, 1, h, w)`` in pixels of ``img``.
    Bilinear, border padding → ``(N, C, h, w)``."""
    n, _, h, w = img.shape
    ys, xs = torch.meshgrid(torch.arange(h, dtype=img.dtype, device=img.device),
                            torch.arange(w, dtype=img.dtype, device=img.device), indexing="ij")
    gx = (xs[None] + disp[:, 0]) * (2.0 / max(w - 1, 1)) - 1.0
    gy = (ys[None].expand(n, -1, -1)) * (2.0 / max(h - 1, 1)) - 1.0
    grid = torch.stack([gx, gy], dim=-1)
    return F.grid_sample(img, grid, mode="bilinear", padding_mode="border", align_corners=True)


def init_identity(model: nn.Module) -> None:
    """Zero IFAN's last conv (``out_res``) so that the untrained model returns its input exactly."""
    conv = model.out_res[0]
    with torch.no_grad():
        conv.weight.zero_()
        conv.bias.zero_()


def ifan_loss(model: nn.Module, reblur: ReblurNet, b: dict[str, torch.Tensor],
              cfg: IFANTrainConfig) -> tuple[torch.Tensor, dict[str, float]]:
    """Total loss and its terms for one batch ``b`` (see the module docstring)."""
    x, y = b["blur"], b["sharp"]
    out, d, g = model.forward_train(x)
    l_deblur = F.mse_loss(out, y)
    total = l_deblur
    logs: dict[str, float] = {"deblur": l_deblur.item()}
    if "left" in b and "right" in b and cfg.w_dme_warp > 0:
        l8, r8 = F.avg_pool2d(b["left"], 8), F.avg_pool2d(b["right"], 8)
        l_warp = F.mse_loss(warp_horizontal(r8, d), l8)
        total = total + cfg.w_dme_warp * l_warp
        logs["dme_warp"] = l_warp.item()
    if "coc" in b and cfg.w_dme_sup > 0:
        target = F.avg_pool2d(b["coc"], 8) / COC_PER_DME
        l_sup = F.l1_loss(d, target)
        total = total + cfg.w_dme_sup * l_sup
        logs["dme_sup"] = l_sup.item()
        logs["coc_mae_px"] = l_sup.item() * abs(COC_PER_DME)
    if cfg.w_reblur > 0:
        l_rb = F.mse_loss(reblur(g, F.avg_pool2d(y, 8)), F.avg_pool2d(x, 8))
        total = total + cfg.w_reblur * l_rb
        logs["reblur"] = l_rb.item()
    logs["psnr"] = psnr_from_mse(F.mse_loss(out.detach().clamp(0, 1), y).item())
    logs["psnr_in"] = psnr_from_mse(F.mse_loss(x, y).item())
    return total, logs


def train(opts: Any) -> dict[str, Any]:
    """Entry point of ``defocus train ifan``: ``opts`` is a :class:`defocus_cli.train.TrainOptions` (or an
    :class:`IFANTrainConfig`). Returns ``{"steps", "best_val_psnr", "seconds", "out"}``."""
    cfg = opts if isinstance(opts, IFANTrainConfig) else config_from_options(opts)
    summary = train_config(cfg)
    summary["steps"] = summary.pop("step")
    summary["out"] = cfg.export if summary.get("exported") else None
    return summary


def config_from_options(opts: Any) -> IFANTrainConfig:
    """Map the generic :class:`defocus_cli.train.TrainOptions` onto an :class:`IFANTrainConfig`.

    Without ``resume`` an existing run folder is refused (so a run is never silently continued or mixed)."""
    from defocus_cli.train.common import apply_options, config_fields

    cfg = IFANTrainConfig(**config_fields(opts, multiple_of=8), init=str(opts.init) if opts.init else None)
    return apply_options(cfg, opts)


def train_config(cfg: IFANTrainConfig) -> dict[str, Any]:
    """Run (or resume) an IFAN training run; returns a summary dict. Stops after ``cfg.minutes`` wall
    minutes of this invocation, ``cfg.steps`` total steps, or SIGTERM/SIGINT — always with a checkpoint."""
    from defocus_cli.archs.ifan import IFAN
    from defocus_cli.devices import autocast_context
    from defocus_cli.train.common import StopFlag, ValidatedRun, load_init, setup_torch, train_device
    from defocus_cli.train.sources import batch_stream

    device = train_device(cfg.device)
    setup_torch(cfg.threads, cfg.seed)
    model, reblur = IFAN(coc_per_dme=COC_PER_DME).to(device), ReblurNet().to(device)
    params = list(model.parameters()) + list(reblur.parameters())
    opt = torch.optim.Adam(params, lr=cfg.lr)
    run = ValidatedRun(cfg, {"model": model, "reblur": reblur, "optim": opt}, arch="ifan",
                       export_meta={"dme_to_coc": str(COC_PER_DME)})
    step = 0
    resumed = run.resume()  # the checkpoint's step; None for a new run
    if resumed is not None:
        step = resumed
    elif cfg.init:
        load_init(model, cfg.init)
    else:
        init_identity(model)
    for group in opt.param_groups:
        group["lr"] = cfg.lr
    stream = batch_stream(cache=cfg.cache, photos=cfg.photos, paired=cfg.paired, patch=cfg.patch,
                          batch=cfg.batch, seed=cfg.seed, start=step, device=device, coc_px=cfg.coc_px,
                          in_focus_prob=cfg.in_focus_prob, highlight_prob=cfg.highlight_prob)
    stop = StopFlag()
    t_end = time.monotonic() + cfg.minutes * 60.0
    model.train()
    reblur.train()
    if step == 0:
        run.validate(step)
    t0 = time.monotonic()
    while step < cfg.steps and time.monotonic() < t_end and not stop.is_set:
        b = next(stream)
        ts = time.monotonic()
        with autocast_context(device, "bf16" if cfg.bf16 else "fp32"):
            loss, logs = ifan_loss(model, reblur, b, cfg)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        gnorm = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        opt.step()
        step += 1
        run.logger.log(step=step, kind="train", loss=loss.item(), grad_norm=gnorm.item(), lr=cfg.lr,
                       seconds=round(time.monotonic() - ts, 3), **logs)
        run.after_step(step, validate=step % cfg.val_every == 0)
    return run.finish(step, t0)
