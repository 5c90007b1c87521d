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
* **real DP pairs, unsupervised (issue 15)**: with ``real_dir`` and ``w_cross > 0`` every map step also draws
  ``real_batch`` crops of real raw DP pairs (``real_dir/left/*.png``, ``real_dir/right/*.png``, uint16, black
  level ``real_black``; put through :func:`defocus_cli.defocus_map.prepare_linear_dp`, at the scales
  ``real_scales``) and adds ``w_cross · L_cross + w_real_tv · TV``. There is no sharp image for a real pair, but
  in the DP model both views blur one sharp scene ``S``: ``L = S ∗ K_L(c)``, ``R = S ∗ K_R(c)``, so (blur locally
  constant, convolution commutes) ``L ∗ K_R(c) = S ∗ K_L(c) ∗ K_R(c) = R ∗ K_L(c)``: **cross re-blur**, each view
  re-blurred with the *other* view's kernel at the predicted signed CoC must give the same image
  (:func:`cross_reblur_loss`). At c = 0 the residual is ``|L − R|``; at the true c it vanishes; the sign of c
  matters because ``K_L(−c) = K_R(c)``. A second pair of kernel banks (``real_levels`` levels) serves these
  pairs and is trained in the bank phases with the same projection, so the real camera's kernels are learned
  as in the paper, apart from the synthetic generator's.
* **classical pseudo-labels on the real pairs** (``w_pseudo > 0``, needs ``real_dir``): the training-free DP
  matcher (:func:`defocus_cli.map_classical.dp_radius_map_conf`: sub-pixel matching, confidence, edge-aware
  propagation) is run once on every real pair at every scale; map steps add
  ``w_pseudo · Σ conf·|ĉ − c_classical| / Σ conf`` on the same crops. No ground truth is used: it distils
  the matcher's depth ordering (which holds across scenes) into the network, where the cross re-blur alone
  leaves texture-following maps.
* ``grey``: the synthetic views (and sharp image) are replaced by their green channel replicated to RGB, like a
  phone's green DP views.
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

__all__ = ["MapTrainConfig", "map_loss", "cross_reblur_loss", "pseudo_label_loss", "RealDPCrops", "project_bank", "coc_error",
           "train_config"]


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
    grey: bool = False
    real_dir: str | None = None
    real_scenes: str = ""
    real_black: float = 1024.0
    real_scales: str = "0.5,1.0"
    real_batch: int = 2
    real_levels: int = 13
    w_cross: float = 0.0
    w_real_tv: float = 1e-3
    w_pseudo: float = 0.0


def _grey(x: torch.Tensor) -> torch.Tensor:
    return x.mean(dim=1, keepdim=True)


def _tv(x: torch.Tensor) -> torch.Tensor:
    return (x[..., 1:, :] - x[..., :-1, :]).abs().mean() + (x[..., 1:] - x[..., :-1]).abs().mean()


def cross_reblur_loss(pred: torch.Tensor, left: torch.Tensor, right: torch.Tensor, bank_l: nn.Module,
                      bank_r: nn.Module) -> torch.Tensor:
    """Cross re-blur loss of a signed CoC map on a DP pair without a sharp image (see module docstring).

    Args:
        pred: ``(N, 1, P, P)`` signed CoC radius (px).
        left, right: ``(N, C, P, P)`` DP views in [0, 1] (the loss uses their channel mean).
        bank_l, bank_r: :class:`~defocus_cli.archs.defocusgan_map.BlurKernelBank` of the left and right view.
    Returns:
        scalar ``L1(left ∗ K_R(pred), right ∗ K_L(pred))``.
    """
    return F.l1_loss(bank_r(_grey(left), pred), bank_l(_grey(right), pred))


def pseudo_label_loss(pred: torch.Tensor, pseudo: torch.Tensor, conf: torch.Tensor) -> torch.Tensor:
    """Confidence-weighted L1 of a predicted signed map to the classical matcher's map.

    Args:
        pred, pseudo: ``(N, 1, P, P)`` signed CoC radius (px).
        conf: ``(N, 1, P, P)`` confidence of ``pseudo`` in [0, 1].
    Returns:
        scalar ``Σ conf·|pred − pseudo| / Σ conf`` (0 where no pixel is confident).
    """
    return (conf * (pred - pseudo).abs()).sum() / conf.sum().clamp_min(1e-6)


class RealDPCrops:
    """Random crops of real raw DP pairs held in memory (for :func:`cross_reblur_loss`).

    ``root/left/NAME.png`` and ``root/right/NAME.png`` (uint16 or 8-bit, one or three channels), black level
    ``black``; each pair is scaled to [0, 1], put through :func:`defocus_cli.defocus_map.prepare_linear_dp`
    (gain equalisation, tone curve) and kept at every factor of ``scales`` (INTER_AREA).
    :meth:`sample` → ``{"left", "right"}`` ``(B, 3, P, P)`` float32 [0, 1] (grey replicated to RGB), random
    position, scene and scale, random vertical flip (a horizontal flip would swap the views' roles).
    With ``pseudo`` the classical matcher's signed radius (px at that scale) and confidence in [0, 1] of every
    pair are computed once and cropped alongside: ``"pseudo"`` and ``"conf"``, each ``(B, 1, P, P)``.
    """

    def __init__(self, root: str, scenes: str | list[str] = "", black: float = 1024.0,
                 scales: str | list[float] = "0.5,1.0", patch: int = 96, seed: int = 0,
                 pseudo: bool = False) -> None:
        import cv2
        import numpy as np

        from defocus_cli.defocus_map import prepare_linear_dp
        from defocus_cli.errors import InputError
        from defocus_cli.io.maps import load_dp_pair

        base = __import__("pathlib").Path(root)
        names = [x.strip() for x in scenes.split(",") if x.strip()] if isinstance(scenes, str) else list(scenes)
        names = names or sorted(p.stem for p in (base / "left").glob("*.png"))
        facs = [float(x) for x in scales.split(",")] if isinstance(scales, str) else [float(x) for x in scales]
        self.patch = patch
        self.rng = np.random.default_rng(seed)
        self.views: list[tuple[np.ndarray, ...]] = []
        for nm in names:
            lv, rv = load_dp_pair(base / "left" / f"{nm}.png", base / "right" / f"{nm}.png", black_level=black)
            a, b = lv.pixels.mean(axis=2), rv.pixels.mean(axis=2)
            a, b = prepare_linear_dp(a, b)
            for f in facs:
                if f != 1.0:
                    size = (round(a.shape[1] * f), round(a.shape[0] * f))
                    sa = cv2.resize(a, size, interpolation=cv2.INTER_AREA)
                    sb = cv2.resize(b, size, interpolation=cv2.INTER_AREA)
                else:
                    sa, sb = a, b
                if min(sa.shape) >= patch:
                    if pseudo:
                        from defocus_cli.map_classical import dp_radius_map_conf

                        self.views.append((sa, sb) + dp_radius_map_conf(sa, sb))
                    else:
                        self.views.append((sa, sb))
        if not self.views:
            raise InputError(f"no real DP pair of at least {patch} px under {root} (scenes {names})")
        self.names = names

    def sample(self, batch: int) -> dict[str, torch.Tensor]:
        """``batch`` random crops: ``{"left", "right"}`` each ``(batch, 3, P, P)`` float32 [0, 1] (and
        ``"pseudo"``, ``"conf"`` ``(batch, 1, P, P)`` when built with ``pseudo``)."""
        import numpy as np

        crops: list[list[np.ndarray]] = [[] for _ in self.views[0]]
        p = self.patch
        for _ in range(batch):
            arrays = self.views[int(self.rng.integers(len(self.views)))]
            y = int(self.rng.integers(0, arrays[0].shape[0] - p + 1))
            x = int(self.rng.integers(0, arrays[0].shape[1] - p + 1))
            flip = self.rng.random() < 0.5
            for dst, a in zip(crops, arrays):
                c = a[y:y + p, x:x + p]
                dst.append(np.ascontiguousarray(c[::-1] if flip else c, dtype=np.float32))
        out = {k: torch.from_numpy(np.stack(v))[:, None].expand(-1, 3, -1, -1).contiguous()
               for k, v in zip(("left", "right"), crops)}
        out.update({k: torch.from_numpy(np.stack(v))[:, None] for k, v in zip(("pseudo", "conf"), crops[2:])})
        return out


def _to_grey_batch(b: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Synthetic batch with every image replaced by its green channel replicated to RGB (phone DP views)."""
    return {k: (v[:, 1:2].expand_as(v).contiguous() if k in ("left", "right", "sharp", "blur") and v.shape[1] == 3
                else v) for k, v in b.items()}


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
    l_tv = _tv(pred)
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
    from defocus_cli.devices import autocast_context
    from defocus_cli.train.common import (
        JsonlLogger,
        RunDir,
        StopFlag,
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
    real = None
    real_l = real_r = None
    bank_params = list(bank_l.parameters()) + list(bank_r.parameters())
    if cfg.real_dir and cfg.w_cross > 0:
        real = RealDPCrops(cfg.real_dir, cfg.real_scenes, cfg.real_black, cfg.real_scales, cfg.patch, cfg.seed,
                           pseudo=cfg.w_pseudo > 0)
        log.info("cross re-blur on %d real DP pairs (%s)", len(real.names), ",".join(real.names))
        real_l = BlurKernelBank(cfg.real_levels, view="left").to(device)
        real_r = BlurKernelBank(cfg.real_levels, view="right").to(device)
        bank_params += list(real_l.parameters()) + list(real_r.parameters())
    opt_bank = torch.optim.Adam(bank_params, lr=cfg.lr_bank)
    step = 0
    state = run.load_last()
    if state is not None:
        model.load_state_dict(state["model"])
        bank_l.load_state_dict(state["bank_l"])
        bank_r.load_state_dict(state["bank_r"])
        opt.load_state_dict(state["optim"])
        if real_l is not None and "real_l" in state:
            real_l.load_state_dict(state["real_l"])
            real_r.load_state_dict(state["real_r"])
        try:
            opt_bank.load_state_dict(state["optim_bank"])
        except ValueError:  # the run gained (real) banks since: their optimiser state starts afresh
            log.info("kernel-bank optimiser state does not match; starting it afresh")
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
        state = {"model": model.state_dict(), "bank_l": bank_l.state_dict(), "bank_r": bank_r.state_dict(),
                 "optim": opt.state_dict(), "optim_bank": opt_bank.state_dict(), "step": step,
                 "config": str(asdict(cfg))}
        if real_l is not None:
            state.update(real_l=real_l.state_dict(), real_r=real_r.state_dict())
        run.save(state)
        if cfg.export:
            export_safetensors(model, cfg.export, arch="defocusgan-map", steps=step,
                               notes="signed CoC radius (px); trained on synthetic DP defocus with the learnable "
                                     "blur-kernel bank + CoC supervision (see model card)")

    while step < cfg.steps and time.monotonic() < t_end and not stop.is_set:
        b = next(stream)
        if "left" not in b or "coc" not in b:
            from defocus_cli.errors import InputError

            raise InputError("the defocus-map network needs dual-pixel views: train on synthetic data")
        if cfg.grey:
            b = _to_grey_batch(b)
        rb = {k: v.to(device) for k, v in real.sample(cfg.real_batch).items()} if real is not None else None
        ts = time.monotonic()
        bank_phase = step >= cfg.map_first and ((step - cfg.map_first) // cfg.alt_steps) % 2 == 0
        model.train(not bank_phase)
        if bank_phase:
            with torch.no_grad(), autocast_context(device, "bf16" if cfg.bf16 else "fp32"):
                pred = model(b["left"], b["right"]).float()
            loss, logs = map_loss(pred, b, bank_l, bank_r, cfg, supervised=False)
            if rb is not None:
                with torch.no_grad(), autocast_context(device, "bf16" if cfg.bf16 else "fp32"):
                    pr = model(rb["left"], rb["right"]).float()
                l_cross = cross_reblur_loss(pr, rb["left"], rb["right"], real_l, real_r)
                loss = loss + cfg.w_cross * l_cross
                logs["cross"] = l_cross.item()
            opt_bank.zero_grad(set_to_none=True)
            loss.backward()
            opt_bank.step()
            for bk in (bank_l, bank_r) + ((real_l, real_r) if real_l is not None else ()):
                project_bank(bk)
        else:
            with autocast_context(device, "bf16" if cfg.bf16 else "fp32"):
                pred = model(b["left"], b["right"]).float()
            loss, logs = map_loss(pred, b, bank_l, bank_r, cfg, supervised=True)
            if rb is not None:
                with autocast_context(device, "bf16" if cfg.bf16 else "fp32"):
                    pr = model(rb["left"], rb["right"]).float()
                l_cross = cross_reblur_loss(pr, rb["left"], rb["right"], real_l, real_r)
                loss = loss + cfg.w_cross * l_cross + cfg.w_real_tv * _tv(pr)
                logs.update(cross=l_cross.item(), real_abs_coc=pr.abs().mean().item())
                if "pseudo" in rb:
                    l_ps = pseudo_label_loss(pr, rb["pseudo"], rb["conf"])
                    loss = loss + cfg.w_pseudo * l_ps
                    logs["pseudo"] = l_ps.item()
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
