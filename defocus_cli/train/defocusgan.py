"""DefocusGAN trainer (Zhai et al., AAAI 2023): the generator with annealed defocus-map guidance and the
defocus-weighted WGAN-GP PatchGAN critic; ``defocus train defocusgan-map`` is dispatched to
:mod:`defocus_cli.train.defocusgan_map`.

Recipe (paper / official code → ours):

* **guidance**: the generator's four branches are masked by the defocus map's blur buckets while the
  curriculum counter is below 2·10⁴ (``w = exp(−(2·it/2e4)²)``), then plain sums (= inference). The map is the
  map network's output officially; we use the synthetic ground-truth |CoC| (same role, no map-net cost), and
  compress the curriculum so that it ends at ``anneal_steps`` of *our* steps: ``it = step · 2e4 / anneal_steps``.
  Every step after that trains the inference path.
* **losses**: ``0.5·L1 + w_perc·perceptual + w_adv·adversarial``. The paper's perceptual loss is the MSE of
  VGG19 conv3_3 features (weight 0.006); VGG19 weights are not available, so the AlexNet LPIPS distance of the
  shipped LPIPS weights is used (:class:`~defocus_cli.train.losses.PerceptualLoss`, weight ``w_perc``).
  Adversarial: WGAN-GP (λ = 10) with the critic scores weighted by ``1 + 0.1·|CoC|`` (defocus adversarial loss);
  the critic starts at ``critic_start`` and the generator's adversarial term (0.001) at ``adv_start`` — the
  official code starts them after epochs 6 and 10 of 91; on CPU we pretrain with L1 (+ perceptual) first and
  add the critic late.
* Adam ``lr`` (official 2·10⁻⁴) for G and D, patches ``patch`` px (multiple of 16).

The generator's output is a sigmoid (no residual), so a randomly initialised generator starts far from the
identity and spends its first thousands of steps learning to reproduce the photo. ``init="identity"``
(:func:`identity_init`, the default) instead sets a few weights so that the untrained network already
returns its input (≈50 dB) and training starts at the blurry input's PSNR; see that function.
Exports ``weights/defocusgan.safetensors`` (468 tensors, official layout) whenever the LFDOF
centre-crop PSNR improves and beats the blurry input's.

Devices: ``device`` (``--device cuda`` on the command line, ``defocus train defocusgan --device cuda``) puts the
generator, the critic, the perceptual net, the optimiser state and the batches (synthesised there) on that device;
``bf16`` adds bf16 autocast to the generator's forward pass and losses (the critic's WGAN-GP step stays float32).
``coc_px``, ``in_focus_prob``, ``highlight_prob``: the camera-true synthesis knobs of
:class:`~defocus_cli.data.SyntheticDP` (``--set coc_px=16`` as for SFT-net).
Checkpoints hold CPU tensors, so a GPU run resumes on a CPU.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from defocus_cli.metrics import psnr_from_mse

log = logging.getLogger(__name__)

__all__ = ["GANTrainConfig", "generator_loss", "identity_init", "pin_identity_grads", "tie_transposed_taps", "train",
           "train_config", "config_from_options"]

ANNEAL_REFERENCE = 2e4
"""The official curriculum length (iterations) that ``anneal_steps`` is mapped onto."""


@dataclass
class GANTrainConfig:
    """Knobs of a DefocusGAN generator run (defaults: the CPU recipe of the shipped weights)."""

    run: str = "runs/defocusgan"
    cache: list[str] = field(default_factory=list)
    photos: str | None = None
    paired: str | None = None
    patch: int = 96
    batch: int = 2
    lr: float = 3e-4
    lr_d: float = 1e-4
    anneal_steps: int = 300
    w_l1: float = 0.5
    w_perc: float = 0.05
    w_adv: float = 1e-3
    critic_start: int = 10**9
    adv_start: int = 10**9
    n_critic: int = 1
    steps: int = 10**9
    minutes: float = 60.0
    val_root: str | None = None
    val_every: int = 50
    val_crop: int = 256
    save_every_s: float = 240.0
    export: str | None = "weights/defocusgan.safetensors"
    export_margin_db: float = 0.0
    threads: int = 1
    seed: int = 0
    init: str | None = "identity"
    pin_identity: bool = True
    tie_taps: bool = False
    warmup: int = 200
    device: str = "cpu"
    bf16: bool = False
    coc_px: float = 0.0
    in_focus_prob: float = 0.0
    highlight_prob: float = 0.0


#: Knots of the piecewise-linear logit that :func:`identity_init` builds per colour channel (denser near 0 and 1).
IDENTITY_KNOTS: int = 8


def _logit_fit(knots: int) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Fit ``sigmoid(sum_j a_j * relu(x - t_j) + b) ≈ x`` on ``x`` in [0, 1].

    Returns ``(t (knots,), a (knots,), b)``; ``t_0 = 0`` and the knots follow a cosine spacing. The fit is a least
    squares fit of ``logit(x)`` (clipped at 1/1024) reweighted by the sigmoid's slope, so that the error is small in
    the output domain (max |error| 0.009, 50 dB for 8 knots).
    """
    x = torch.linspace(0.0, 1.0, 4097, dtype=torch.float64)
    u = torch.arange(knots, dtype=torch.float64) / knots
    t = 0.5 - 0.5 * torch.cos(math.pi * u)
    t[0] = 0.0
    xc = x.clamp(1.0 / 1024, 1.0 - 1.0 / 1024)
    target = torch.log(xc / (1.0 - xc))
    basis = torch.cat([torch.relu(x[:, None] - t[None, :]), torch.ones_like(x)[:, None]], dim=1)
    w = torch.ones_like(x)
    coef = torch.zeros(knots + 1, dtype=torch.float64)
    for _ in range(20):
        coef = torch.linalg.lstsq(basis * w[:, None], (target * w)[:, None]).solution[:, 0]
        s = torch.sigmoid(basis @ coef)
        w = torch.sqrt(s * (1.0 - s)) + 1e-3
    return t, coef[:-1], float(coef[-1])


def _identity_rows(gen: torch.nn.Module) -> list[tuple[torch.nn.Parameter, int]]:
    """The parameters :func:`identity_init` pins, each with the dimension that indexes the ramp channels."""
    pinned: list[tuple[torch.nn.Parameter, int]] = [(gen.head[0].weight, 0), (gen.head[0].bias, 0)]
    for b_idx, stage in enumerate(gen.layer8):
        if gen.kernel_sizes[b_idx] <= 1:
            pinned += [(stage[0].weight, 0), (stage[0].bias, 0)]
            continue
        group = stage[0]
        for rcab in list(group.body)[:-1]:
            pinned += [(rcab.body[2].weight, 0), (rcab.body[2].bias, 0)]
        pinned += [(group.body[-1].weight, 0), (group.body[-1].bias, 0)]
    up_last = gen.unetup4.up[2]
    pinned += [(up_last.weight, 1), (up_last.bias, 0), (gen.tail_hard[0].weight, 1)]
    return pinned


@torch.no_grad()
def identity_init(gen: torch.nn.Module, knots: int = IDENTITY_KNOTS, gain: float = 16.0) -> list[int]:
    """Make a freshly built :class:`~defocus_cli.archs.defocusgan.DefocusGAN` return (approximately) its input.

    The layout is untouched (official checkpoints keep loading); only initial values change. With
    ``R = range(3 * knots)`` the "ramp" channels:

    * ``head``: channels ``R`` become ramps ``gain * relu(x_c - t_j)`` of each colour channel;
    * the last stage of the full-resolution path (``layer8``) outputs exactly 0 in ``R`` whatever its input
      (1x1 branch: zero rows; residual branches: the RCABs' second convs have zero rows in ``R``, so RCABs pass
      ``R`` through, and the group's last conv is −identity on ``R``, so ``body(x) + x`` is 0 there);
    * the last transposed conv of ``unetup4`` outputs 0 in ``R``;
    * ``tail_hard`` reads only ``R``, combined into a piecewise-linear logit of the same colour channel, so
      ``sigmoid(tail)`` ≈ the input (max |error| ≈ 0.009, 50 dB).

    Every other weight keeps its random initialisation; the other channels learn the correction. Adam's first
    steps move every weight by about ``lr``, and the rows above read activations in the hundreds, so the trainer
    keeps them pinned (:func:`pin_identity_grads`): the generator is then ``sigmoid(logit(x) + r(x))`` with a
    learned ``r``, in the unchanged official layout. Returns the ramp channel indices.
    """
    t, a, b = _logit_fit(knots)
    ramps = list(range(3 * knots))
    for p, dim in _identity_rows(gen):
        p.index_fill_(dim, torch.tensor(ramps, device=p.device), 0.0)
    head = gen.head[0]
    for c in range(3):
        for j in range(knots):
            r = c * knots + j
            head.weight[r, c, 1, 1] = gain
            head.bias[r] = -gain * float(t[j])
    for b_idx, stage in enumerate(gen.layer8):
        if gen.kernel_sizes[b_idx] > 1:
            last = stage[0].body[-1]
            for r in ramps:
                last.weight[r, r, 1, 1] = -1.0
    tail = gen.tail_hard[0]
    tail.weight.zero_()
    for c in range(3):
        for j in range(knots):
            tail.weight[c, c * knots + j, 1, 1] = float(a[j]) / gain
        tail.bias[c] = b
    return ramps


def pin_identity_grads(gen: torch.nn.Module, knots: int = IDENTITY_KNOTS) -> None:
    """Zero the gradients of the rows :func:`identity_init` set (call after ``backward``, before the step)."""
    idx = torch.arange(3 * knots)
    for p, dim in _identity_rows(gen):
        if p.grad is not None:
            p.grad.index_fill_(dim, idx.to(p.grad.device), 0.0)


@torch.no_grad()
def tie_transposed_taps(gen: torch.nn.Module, grads: bool = False) -> None:
    """Give every tap of each transposed conv whose kernel equals its stride (``unetup4``'s two 2x2/2 upsamplers)
    the same weight.

    A 2x2/2 transposed conv writes each input pixel into a 2x2 block with four independent weights, so any
    difference between the taps is a period-2 pattern in the output (the "checkerboard" of Odena et al.,
    Distill 2016); two in a row (x4) add a period-4 grid. With equal taps the layer is exactly nearest-neighbour
    x2 upsampling followed by a 1x1 conv: no grid, the layout unchanged. Called on the weights after
    initialisation and on the gradients before every step (``grads=True``), the taps stay tied through Adam
    (equal gradients give equal moments and equal updates). Off by default (``tie_taps``): on our CPU run it
    removed the grid but the coarse branches then left visible 8-16 px blocks on real photos
    (``weights/defocusgan.md``).
    """
    for m in gen.modules():
        if not isinstance(m, torch.nn.ConvTranspose2d) or tuple(m.kernel_size) != tuple(m.stride):
            continue
        t = m.weight.grad if grads else m.weight
        if t is not None:
            t.copy_(t.mean(dim=(2, 3), keepdim=True).expand_as(t))


def curriculum_iter(step: int, anneal_steps: int) -> float:
    """The generator's ``iter_num`` for our ``step``: the official 2·10⁴-iteration anneal squeezed into
    ``anneal_steps`` steps (≥ 2·10⁴, i.e. the inference path, from then on)."""
    return step * ANNEAL_REFERENCE / max(anneal_steps, 1)


def generator_loss(out: torch.Tensor, b: dict[str, torch.Tensor], cfg: GANTrainConfig, perc: torch.nn.Module | None,
                   critic: torch.nn.Module | None) -> tuple[torch.Tensor, dict[str, float]]:
    """``w_l1·L1 + w_perc·perceptual + w_adv·defocus-weighted adversarial`` of ``out`` vs ``b["sharp"]``."""
    from defocus_cli.train.losses import generator_adv_loss

    y = b["sharp"]
    l1 = F.l1_loss(out, y)
    total = cfg.w_l1 * l1
    logs = {"l1": l1.item()}
    if perc is not None and cfg.w_perc > 0:
        lp = perc(out, y)
        total = total + cfg.w_perc * lp
        logs["perc"] = lp.item()
    if critic is not None and cfg.w_adv > 0:
        la = generator_adv_loss(critic, out, b.get("coc"))
        total = total + cfg.w_adv * la
        logs["adv"] = la.item()
    logs["psnr"] = psnr_from_mse(F.mse_loss(out.detach(), y).item())
    logs["psnr_in"] = psnr_from_mse(F.mse_loss(b["blur"], y).item())
    return total, logs


def train(opts: Any) -> dict[str, Any]:
    """Entry point of ``defocus train defocusgan`` / ``defocus train defocusgan-map`` (``opts``: a
    :class:`defocus_cli.train.TrainOptions`, or a :class:`GANTrainConfig`)."""
    if isinstance(opts, GANTrainConfig):
        return train_config(opts)
    if getattr(opts, "model", "") == "defocusgan-map":
        from defocus_cli.train import defocusgan_map

        summary = defocusgan_map.train_config(defocusgan_map_config(opts))
        summary["steps"] = summary.pop("step")
        summary["out"] = str(opts.resolved_out())
        return summary
    summary = train_config(config_from_options(opts))
    summary["steps"] = summary.pop("step")
    summary["out"] = str(opts.resolved_out()) if summary.get("exported") else None
    return summary


def defocusgan_map_config(opts: Any) -> Any:
    """:class:`~defocus_cli.train.defocusgan_map.MapTrainConfig` from generic ``TrainOptions`` (synthetic only)."""
    from defocus_cli.errors import UsageError
    from defocus_cli.train.common import apply_options, fresh_run_dir, train_device
    from defocus_cli.train.defocusgan_map import MapTrainConfig

    run_dir = fresh_run_dir(opts)
    if not opts.cache and not opts.synthetic:
        raise UsageError("the defocus-map network trains on synthetic DP data only: pass --synthetic or --cache")
    cfg = MapTrainConfig(run=str(run_dir), cache=[str(c) for c in opts.cache],
                         photos=None if opts.cache else str(opts.data), patch=opts.patch - opts.patch % 16,
                         batch=opts.batch, steps=opts.steps, minutes=1e9, export=str(opts.resolved_out()),
                         threads=opts.threads or 0, seed=opts.seed, init=str(opts.init) if opts.init else None,
                         device=str(train_device(opts.device)), bf16=bool(opts.bf16))
    return apply_options(cfg, opts)


def config_from_options(opts: Any) -> GANTrainConfig:
    """:class:`GANTrainConfig` from generic ``TrainOptions``; the critic joins at 60 % of the steps and the
    adversarial term at 70 % (L1 + perceptual before)."""
    from defocus_cli.train.common import apply_options, config_fields

    cfg = GANTrainConfig(
        **config_fields(opts, multiple_of=16), anneal_steps=max(1, opts.steps // 5),
        critic_start=int(opts.steps * 0.6), adv_start=int(opts.steps * 0.7),
        init=str(opts.init) if opts.init else "identity",
    )
    return apply_options(cfg, opts)


def train_config(cfg: GANTrainConfig) -> dict[str, Any]:
    """Run (or resume) a DefocusGAN generator run; returns ``{"step", "best_val_psnr", "seconds"}``."""
    from defocus_cli.archs.defocusgan import DefocusGAN
    from defocus_cli.archs.defocusgan_disc import PatchDiscriminator
    from defocus_cli.devices import autocast_context
    from defocus_cli.train.common import StopFlag, ValidatedRun, load_init, setup_torch, train_device
    from defocus_cli.train.losses import PerceptualLoss, critic_loss_wgan_gp
    from defocus_cli.train.sources import batch_stream

    device = train_device(cfg.device)
    setup_torch(cfg.threads, cfg.seed)
    gen, critic = DefocusGAN().to(device), PatchDiscriminator().to(device)
    opt_g = torch.optim.Adam(gen.parameters(), lr=cfg.lr)
    opt_d = torch.optim.Adam(critic.parameters(), lr=cfg.lr_d, betas=(0.5, 0.9))
    perc = PerceptualLoss("lpips").to(device) if cfg.w_perc > 0 else None
    run = ValidatedRun(cfg, {"model": gen, "critic": critic, "optim": opt_g, "optim_d": opt_d}, arch="defocusgan")
    step = 0
    resumed = run.resume()  # the checkpoint's step; None for a new run
    if resumed is not None:
        step = resumed
    elif cfg.init == "identity":
        identity_init(gen)
    elif cfg.init:
        load_init(gen, cfg.init)
    if cfg.tie_taps:
        tie_transposed_taps(gen)
    stream = batch_stream(cache=cfg.cache, photos=cfg.photos, paired=cfg.paired, patch=cfg.patch,
                          batch=cfg.batch, seed=cfg.seed, start=step, device=device, coc_px=cfg.coc_px,
                          in_focus_prob=cfg.in_focus_prob, highlight_prob=cfg.highlight_prob)
    stop = StopFlag()
    t0 = time.monotonic()
    t_end = t0 + cfg.minutes * 60.0
    gen.train()
    while step < cfg.steps and time.monotonic() < t_end and not stop.is_set:
        b = next(stream)
        ts = time.monotonic()
        for g in opt_g.param_groups:  # linear warm-up: Adam's first steps move every weight by ~lr
            g["lr"] = cfg.lr * min(1.0, (step + 1) / max(cfg.warmup, 1))
        guide = b["coc"].abs() if "coc" in b else torch.zeros_like(b["blur"][:, :1])
        it = curriculum_iter(step, cfg.anneal_steps) if "coc" in b else ANNEAL_REFERENCE
        with autocast_context(device, "bf16" if cfg.bf16 else "fp32"):
            out = gen.forward_train(b["blur"], guide, iter_num=it).float()
        logs: dict[str, float] = {}
        if step >= cfg.critic_start:
            for _ in range(cfg.n_critic):
                ld, dlogs = critic_loss_wgan_gp(critic, b["sharp"], out.detach(), b.get("coc"))
                opt_d.zero_grad(set_to_none=True)
                ld.backward()
                opt_d.step()
            logs.update({"critic": ld.item(), **dlogs})
        use_adv = step >= cfg.adv_start
        if use_adv:
            critic.requires_grad_(False)
        with autocast_context(device, "bf16" if cfg.bf16 else "fp32"):
            loss, glogs = generator_loss(out, b, cfg, perc, critic if use_adv else None)
        opt_g.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.pin_identity and cfg.init == "identity":
            pin_identity_grads(gen)
        if cfg.tie_taps:
            tie_transposed_taps(gen, grads=True)
        torch.nn.utils.clip_grad_norm_(gen.parameters(), 1.0)
        opt_g.step()
        if use_adv:
            critic.requires_grad_(True)
        step += 1
        run.logger.log(step=step, kind="train", loss=loss.item(), iter_num=it,
                       seconds=round(time.monotonic() - ts, 3), **glogs, **logs)
        run.after_step(step, validate=step % cfg.val_every == 0 and it >= ANNEAL_REFERENCE)
    return run.finish(step, t0)
