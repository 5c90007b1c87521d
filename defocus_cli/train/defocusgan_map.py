"""Trainer of DefocusGAN's dual-pixel defocus-map network with the learnable blur-kernel bank (Zhai et al.,
AAAI 2023, "learnable blur kernel"; notes §2.4).

What the paper does: the map net ``f(L, R)`` predicts a signed CoC map; a bank of blur kernels (one per
radius level and sign, initialised from Abuolaim's Butterworth DP kernels) re-blurs the sharp image with it,
``L1(reblur, blurred)`` + a small TV smoothness prior; map net and kernel bank are trained in alternating
windows (map first, bank frozen; then alternate).

What we do (documented in the model card):

* **reblur loss, sign-aware**: two :class:`~defocus_cli.archs.defocusgan_map.BlurKernelBank` s built from the
  left and right DP kernels (for a negative CoC the kernels mirror), applied to the sharp image with the predicted signed map and compared (L1) with the left and right views. The official bank
  reblurs towards the combined image and is sign-blind; with per-view banks the DP views tell the sign.
  To save CPU the loss runs on the luminance (mean of RGB) and the banks have ``levels`` radius levels
  (default 17: radii 0..16 px, larger predictions are clamped inside the bank).
* **TV prior** on the predicted map (weight ``w_tv``).
* **supervision** (our addition; we have ground truth): ``w_sup · L1(map, coc)`` with the synthetic signed CoC.
* **alternation**: ``map_first`` steps with the bank frozen, then windows of ``alt_steps`` steps switching
  between bank-only (map net frozen, no supervised term) and map-only updates. After each bank step every
  kernel is projected back to non-negative values summing to one (a blur kernel).

Exports ``weights/defocusgan-map.safetensors`` (the map net; 324 tensors in the official layout).
Metric: mean absolute CoC error (px) on the fixed synthetic test set.

``device`` (``cpu``, ``cuda``, ``cuda:N``) holds the map net, the kernel banks, their optimisers and the batches
(synthesised there); ``bf16`` adds bf16 autocast to the map net's forward pass. Checkpoints hold CPU tensors.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

log = logging.getLogger(__name__)

__all__ = ["MapTrainConfig", "map_loss", "project_bank", "coc_error", "train_config"]


@dataclass
class MapTrainConfig:
    """Knobs of a defocus-map run (defaults: the CPU recipe of the shipped weights)."""

    run: str = "runs/defocusgan-map"
    cache: list[str] = field(default_factory=list)
    photos: str | None = None
    patch: int = 96
    batch: int = 2
    lr: float = 2e-4
    lr_bank: float = 1e-5
    levels: int = 17
    w_reblur: float = 1.0
    w_tv: float = 1e-3
    w_sup: float = 0.02
    map_first: int = 200
    alt_steps: int = 50
    steps: int = 10**9
    minutes: float = 30.0
    save_every_s: float = 240.0
    export: str | None = "weights/defocusgan-map.safetensors"
    threads: int = 1
    seed: int = 0
    init: str | None = None
    device: str = "cpu"
    bf16: bool = False


def _grey(x: torch.Tensor) -> torch.Tensor:
    return x.mean(dim=1, keepdim=True)


def project_bank(bank: nn.Module) -> None:
    """Make every kernel of a :class:`BlurKernelBank` a blur kernel again: clamp ≥ 0, normalise to sum 1."""
    with torch.no_grad():
        for p in (bank.pos, bank.neg):
            p.clamp_(min=0)
            p.div_(p.sum(dim=(-2, -1), keepdim=True).clamp_min(1e-8))


def map_loss(pred: torch.Tensor, b: dict[str, torch.Tensor], bank_l: nn.Module, bank_r: nn.Module,
             cfg: MapTrainConfig, supervised: bool = True) -> tuple[torch.Tensor, dict[str, float]]:
    """Loss of a predicted signed map ``pred`` ``(N, 1, P, P)`` (px) on batch ``b`` (see module docstring)."""
    sharp = _grey(b["sharp"])
    l_rb = F.l1_loss(bank_l(sharp, pred), _grey(b["left"])) + F.l1_loss(bank_r(sharp, pred), _grey(b["right"]))
    l_tv = (pred[..., 1:, :] - pred[..., :-1, :]).abs().mean() + (pred[..., 1:] - pred[..., :-1]).abs().mean()
    total = cfg.w_reblur * l_rb + cfg.w_tv * l_tv
    logs = {"reblur": l_rb.item(), "tv": l_tv.item()}
    if "coc" in b:
        err = F.l1_loss(pred, b["coc"])
        logs["coc_mae_px"] = err.item()
        if supervised and cfg.w_sup > 0:
            total = total + cfg.w_sup * err
    return total, logs


@torch.no_grad()
def coc_error(model: nn.Module, test: dict[str, torch.Tensor], chunk: int = 4) -> dict[str, float]:
    """Mean absolute error (px) of the signed map ``model(left, right)`` against ``test["coc"]`` (and of its
    magnitude, and the sign agreement where ``|coc| ≥ 1``), over a stacked test set ``(n, C, P, P)``.
    Baselines: ``zero_map_mae_px`` (predicting 0 everywhere) and ``mean_abs_dev_px`` (predicting each chunk's
    true mean)."""
    model.eval()
    abs_err, mag_err, sign_ok, sign_n, base, zero = [], [], 0.0, 0.0, [], []
    for i in range(0, test["coc"].shape[0], chunk):
        pred = model(test["left"][i:i + chunk], test["right"][i:i + chunk])
        gt = test["coc"][i:i + chunk]
        abs_err.append((pred - gt).abs().mean().item())
        mag_err.append((pred.abs() - gt.abs()).abs().mean().item())
        base.append((gt - gt.mean()).abs().mean().item())
        zero.append(gt.abs().mean().item())
        m = gt.abs() >= 1
        sign_ok += ((pred.sign() == gt.sign()) & m).sum().item()
        sign_n += m.sum().item()
    return {"coc_mae_px": sum(abs_err) / len(abs_err), "coc_abs_mae_px": sum(mag_err) / len(mag_err),
            "sign_acc": sign_ok / max(sign_n, 1.0), "mean_abs_dev_px": sum(base) / len(base),
            "zero_map_mae_px": sum(zero) / len(zero)}


def train_config(cfg: MapTrainConfig) -> dict[str, Any]:
    """Run (or resume) a defocus-map training run; returns ``{"step", "seconds", "last_coc_mae_px"}``."""
    from defocus_cli.archs.defocusgan_map import BlurKernelBank, DefocusMapNet
    from defocus_cli.train.common import (
        JsonlLogger,
        RunDir,
        StopFlag,
        autocast,
        export_safetensors,
        setup_torch,
        train_device,
    )
    from defocus_cli.train.sources import batch_stream

    device = train_device(cfg.device)
    setup_torch(cfg.threads, cfg.seed)
    run = RunDir(cfg.run, save_every_s=cfg.save_every_s)
    logger = JsonlLogger(run.log_path)
    model = DefocusMapNet().to(device)
    bank_l = BlurKernelBank(cfg.levels, view="left").to(device)
    bank_r = BlurKernelBank(cfg.levels, view="right").to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    opt_bank = torch.optim.Adam(list(bank_l.parameters()) + list(bank_r.parameters()), lr=cfg.lr_bank)
    step = 0
    state = run.load_last()
    if state is not None:
        model.load_state_dict(state["model"])
        bank_l.load_state_dict(state["bank_l"])
        bank_r.load_state_dict(state["bank_r"])
        opt.load_state_dict(state["optim"])
        opt_bank.load_state_dict(state["optim_bank"])
        step = int(state["step"])
        log.info("resumed %s at step %d", cfg.run, step)
    elif cfg.init:
        from safetensors.torch import load_file

        model.load_state_dict({k: v.float() for k, v in load_file(cfg.init).items()})
    stream = batch_stream(cache=cfg.cache, photos=cfg.photos, patch=cfg.patch, batch=cfg.batch, seed=cfg.seed,
                          start=step, device=device)
    stop = StopFlag()
    t0 = time.monotonic()
    t_end = t0 + cfg.minutes * 60.0
    recent: list[float] = []

    def checkpoint() -> None:
        run.save({"model": model.state_dict(), "bank_l": bank_l.state_dict(), "bank_r": bank_r.state_dict(),
                  "optim": opt.state_dict(), "optim_bank": opt_bank.state_dict(), "step": step,
                  "config": str(asdict(cfg))})
        if cfg.export:
            export_safetensors(model, cfg.export, arch="defocusgan-map", steps=step,
                               notes="signed CoC radius (px); trained on synthetic DP defocus with the learnable "
                                     "blur-kernel bank + CoC supervision (see model card)")

    while step < cfg.steps and time.monotonic() < t_end and not stop.is_set:
        b = next(stream)
        if "left" not in b or "coc" not in b:
            from defocus_cli.errors import InputError

            raise InputError("the defocus-map network needs dual-pixel views: train on synthetic data")
        ts = time.monotonic()
        bank_phase = step >= cfg.map_first and ((step - cfg.map_first) // cfg.alt_steps) % 2 == 0
        model.train(not bank_phase)
        if bank_phase:
            with torch.no_grad(), autocast(cfg.bf16, device):
                pred = model(b["left"], b["right"]).float()
            loss, logs = map_loss(pred, b, bank_l, bank_r, cfg, supervised=False)
            opt_bank.zero_grad(set_to_none=True)
            loss.backward()
            opt_bank.step()
            project_bank(bank_l)
            project_bank(bank_r)
        else:
            with autocast(cfg.bf16, device):
                pred = model(b["left"], b["right"]).float()
            loss, logs = map_loss(pred, b, bank_l, bank_r, cfg, supervised=True)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
        step += 1
        recent = (recent + [logs.get("coc_mae_px", math.nan)])[-50:]
        logger.log(step=step, kind="train", phase="bank" if bank_phase else "map", loss=loss.item(),
                   seconds=round(time.monotonic() - ts, 3), **logs)
        if run.due():
            checkpoint()
    checkpoint()
    return {"step": step, "seconds": time.monotonic() - t0,
            "last_coc_mae_px": sum(recent) / len(recent) if recent else math.nan}
