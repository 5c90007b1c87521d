"""SFT-net trainer: the paper's three stages on synthetic dual-pixel defocus (or a paired folder).

Stages (fractions of ``opts.steps``; ``opts.extra["stages"]`` overrides ``(0.4, 0.3, 0.3)``):

1. the deblurring net is conditioned on the **ground-truth** |CoC| map (1/4 resolution, average-pooled),
   while the map net learns it: ``0.2·L1(map, |coc|) + 0.9·L1(out, sharp)``;
2. the deblurring net is conditioned on the **predicted** map, everything trained jointly, same loss;
3. fine-tuning: ``0.9·L1(out, sharp) + 0.1·L_wd`` with ``L_wd = RMS(W · (out − sharp))``,
   ``W = |coc| / mean(|coc|)`` (the paper's defocus-weighted L2 term), plus ``0.05·L1(map)`` so the
   exposed defocus map stays calibrated.

Paired folders have no CoC map: then stage 1 and the map terms are skipped (predicted map throughout).

Small-patches-first curriculum: patch ``min(96, P)`` → ``min(128, P)`` (30 %) → ``P`` (65 %), with the batch
scaled to keep ``batch × patch²`` (the cost per step) roughly constant. Adam, cosine LR (default peak 3e-4),
gradient clipping 1.0. Validation every ``val_every`` steps on the LFDOF pairs (``opts.val``) and on a small
fixed synthetic held-out set; the best LFDOF PSNR is kept in ``best.pt`` and exported (fp16) to ``opts.out``
as soon as it beats the blurry input.

``opts.device`` (``cpu``, ``cuda``, ``cuda:N``): model, losses, optimiser state and batches live there and synthetic
data is synthesised there; checkpoints hold CPU tensors (a GPU run resumes on a CPU). ``opts.extra["minutes"]``
stops the run after that many wall-clock minutes (with a checkpoint), whatever ``opts.steps`` says.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from defocus_cli.devices import autocast_context
from defocus_cli.train import TrainOptions
from defocus_cli.train.common import (
    JsonlLogger,
    RunDir,
    StopFlag,
    curriculum_patch,
    export_safetensors,
    psnr_t,
    setup_torch,
    train_device,
    validate_lfdof,
)

log = logging.getLogger(__name__)

LAMBDA_DME, LAMBDA_DF, LAMBDA_WD, LAMBDA_DME_FT = 0.2, 0.9, 0.1, 0.05


class _Source:
    """Per-step batches with a variable patch size; deterministic in (seed, step)."""

    def __init__(self, opts: TrainOptions, device: torch.device | str = "cpu") -> None:
        from defocus_cli.data import PairedFolder, PatchCache, SyntheticDP

        self.opts = opts
        self.device = device
        self.has_coc = True
        self._synth: dict[tuple[int, int], Any] = {}
        self._pool: Any = None
        if opts.cache:
            self.ds = PatchCache(opts.cache, crop=opts.patch, augment=True, seed=opts.seed)
            self.kind = "cache"
        elif opts.synthetic:
            if opts.data is None:
                from defocus_cli.errors import UsageError

                raise UsageError("--synthetic needs --data DIR with sharp photos")
            self.kind = "synthetic"
            self._synth_cls = SyntheticDP
        else:
            if opts.data is None:
                from defocus_cli.errors import UsageError

                raise UsageError("training needs --data DIR (a paired folder, or photos with --synthetic)")
            self.ds = PairedFolder(opts.data, patch=opts.patch, augment=True, seed=opts.seed)
            self.kind = "paired"
            self.has_coc = False

    def _synthetic(self, patch: int, grid: int) -> Any:
        ex = self.opts.extra
        key = (patch, grid)
        if key not in self._synth:
            coc_px = float(ex.get("coc_px", 0.0)) or None
            self._synth[key] = self._synth_cls(
                self.opts.data, patch=patch, seed=self.opts.seed, split="train",
                coc_scale=float(ex.get("coc_scale", 1.5)), coc_px=coc_px,
                in_focus_prob=float(ex.get("in_focus_prob", 0.0)),
                highlight_prob=float(ex.get("highlight_prob", 0.0)), grid=grid,
                min_blur_fraction=float(ex.get("min_blur_fraction", 0.15)),
                noise_scale=float(ex.get("noise_scale", 1.0)), subpixel=bool(ex.get("subpixel", False)),
                device=self.device)
        return self._synth[key]

    def batch(self, step: int, patch: int, batch: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng([self.opts.seed, step])
        ex = self.opts.extra
        if self.kind == "synthetic" and int(ex.get("pool", 0)) > 0:
            if self._pool is None:
                from defocus_cli.data.replay import ScenePool

                side = max(int(ex.get("pool_scene", 256)), int(self.opts.patch))
                scenes = self._synthetic(side, 1)
                self._pool = ScenePool(
                    lambda i: {k: v for k, v in scenes.scene(i)[0].items() if k in ("blur", "sharp", "coc")},
                    size=int(ex["pool"]), refresh=float(ex.get("pool_refresh", 0.5)), seed=self.opts.seed)
            return self._pool.batch(step, patch, batch)
        if self.kind == "synthetic":
            ds = self._synthetic(patch, int(ex.get("grid", 1)))
            if ds.grid > 1:  # several patches from each synthesised scene (cheaper per patch)
                n_scenes = -(-batch // ds.grid**2)
                samples = [smp for i in rng.integers(0, 2**31, size=n_scenes) for smp in ds.scene(int(i))]
                samples = [samples[int(k)] for k in rng.permutation(len(samples))[:batch]]
                return {k: torch.stack([smp[k] for smp in samples]) for k in samples[0]}
            idx = rng.integers(0, 2**31, size=batch)
        else:
            ds = self.ds
            ds.crop = patch if self.kind == "cache" else None
            if self.kind == "paired":
                ds.patch = patch
            idx = rng.integers(0, len(ds), size=batch)
        samples = [ds[int(i)] for i in idx]
        return {k: torch.stack([s[k] for s in samples]) for k in samples[0] if isinstance(samples[0][k], torch.Tensor)}


def _gt_map_lowres(coc: torch.Tensor) -> torch.Tensor:
    return F.avg_pool2d(coc.abs(), 4)


def _lr_at(step: int, total: int, peak: float, warmup: int = 50) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return peak * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, t))))


@torch.no_grad()
def evaluate_synthetic(model: torch.nn.Module, test: dict[str, torch.Tensor]) -> dict[str, float]:
    """PSNR of output and input vs sharp, and the map's mean absolute CoC error (px) on a synthetic set (``test``:
    CPU tensors; the model runs on its own device)."""
    from defocus_cli.train.common import forward_padded, module_device

    model.eval()
    device = module_device(model)
    outs, maps = [], []
    for i in range(test["blur"].shape[0]):
        x = test["blur"][i:i + 1].to(device)
        outs.append(forward_padded(model, x).float().cpu())
        maps.append(forward_padded(model, x, "defocus_map").float().cpu())
    out = torch.cat(outs)
    mp = torch.cat(maps)
    return {"syn_psnr": psnr_t(out, test["sharp"]), "syn_input_psnr": psnr_t(test["blur"], test["sharp"]),
            "syn_map_mae": float((mp - test["coc"].abs()).abs().mean())}


def fft_l1(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L1 distance of the 2-D real FFTs (real and imaginary parts) of two ``(N, C, H, W)`` images, as in
    MIMO-UNet / ConvIR (``norm="backward"``, mean over all coefficients)."""
    d = torch.fft.rfft2(out.float()) - torch.fft.rfft2(target.float())
    return torch.view_as_real(d).abs().mean()


class ToneLocked(torch.nn.Module):
    """Engine-contract wrapper: ``lock_tone(model(x), x, sigma)`` (what the runtime does for weights that
    carry ``tone_lock_sigma``); ``(1, 3, H, W)`` [0, 1] in and out."""

    def __init__(self, model: torch.nn.Module, sigma: float) -> None:
        super().__init__()
        self.model = model
        self.sigma = float(sigma)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from defocus_cli.tone import lock_tone

        from defocus_cli.train.common import forward_padded

        y = forward_padded(self.model, x)
        return lock_tone(y, x, self.sigma) if self.sigma > 0 else y


def _export_meta(tone_sigma: float, arch_config: dict[str, Any]) -> dict[str, Any]:
    meta: dict[str, Any] = {"tone_lock_sigma": str(tone_sigma)} if tone_sigma > 0 else {}
    if arch_config:
        meta["config"] = arch_config
    return meta


def grow_init(model: torch.nn.Module, path: str | Path) -> int:
    """Load starting weights into an SFT-net that may have more conditioned blocks than the file.

    Blocks the file lacks start as the identity (their last convolution zeroed), so the grown network computes
    exactly what the file's network computes and training adds capacity from there. Any other missing or
    unexpected key, or a shape mismatch, raises. Returns the number of blocks added."""
    from safetensors.torch import load_file

    sd = {k: v.float() for k, v in load_file(str(path)).items()}
    try:
        missing, unexpected = model.load_state_dict(sd, strict=False)
    except RuntimeError as e:  # shape mismatches raise even when not strict
        raise ValueError(f"{path}: cannot start this SFT-net from it ({str(e).splitlines()[-1].strip()})") from None
    n_file = len({k.split(".")[2] for k in sd if k.startswith("deblur.blocks.")})
    new = [k for k in missing if k.startswith("deblur.blocks.") and int(k.split(".")[2]) >= n_file]
    if unexpected or set(missing) != set(new):
        raise ValueError(f"{path}: cannot start this SFT-net from it (missing {sorted(set(missing) - set(new))[:4]}, "
                         f"unexpected {sorted(unexpected)[:4]})")
    blocks = model.deblur.blocks  # type: ignore[union-attr]
    with torch.no_grad():
        for blk in list(blocks)[n_file:]:
            blk.conv2.weight.zero_()
            blk.conv2.bias.zero_()
    return len(blocks) - n_file


def _progress(step: int, total: int, loss: float, rate: float, last_val: float | None) -> str:
    eta = (total - step) / max(rate, 1e-9)
    val = f", last val {last_val:.3f} dB" if last_val is not None else ""
    return (f"step {step}/{total}  loss {loss:.4f}  {rate:.2f} steps/s  "
            f"ETA {int(eta // 3600)}h{int(eta % 3600 // 60):02d}m{val}")


def train(opts: TrainOptions) -> dict[str, Any]:
    """Train SFT-net per ``opts``; returns ``{"steps", "best", "out", "run_dir"}``.

    ``opts.extra`` (``defocus train --set KEY=VALUE``): ``coc_px``, ``in_focus_prob``, ``highlight_prob``,
    ``grid``, ``min_blur_fraction``, ``noise_scale``, ``subpixel`` (synthesis, see :class:`~defocus_cli.data.SyntheticDP`);
    ``pool`` (scenes in a :class:`~defocus_cli.data.replay.ScenePool`, 0 = every crop freshly synthesised),
    ``pool_refresh`` (new scenes per step, default 0.5), ``pool_scene`` (scene side, default 256 px);
    ``n_blocks`` (conditioned blocks; more than ``--init``'s file grows it, see :func:`grow_init`); ``fft_weight`` (frequency loss, 0.1 ×
    L1 of the FFT), ``ema`` (decay of the exported weight average; 0 = off), ``weight_decay`` (AdamW),
    ``tone_sigma`` (px; train and export with :func:`defocus_cli.tone.lock_tone`), ``stages``,
    ``curriculum`` (``[[fraction, patch], ...]`` of the patch-size schedule; default ``[[0, 96], [0.3, 128], [0.65,
    P]]`` capped at ``--patch`` P), ``warmup``, ``progress_every`` (steps between progress lines on stderr), ``syn_val_n`` (synthetic held-out
    patches validated beside ``opts.val``; 0 = none), ``minutes`` (wall-clock limit of
    this invocation; 0 = none), ``save_every_s``."""
    from defocus_cli.archs.sftnet import SFTNet

    device = train_device(opts.device)
    setup_torch(opts.threads, opts.seed)
    run = RunDir(opts.resolved_run_dir(), save_every_s=float(opts.extra.get("save_every_s", 240)))
    logger = JsonlLogger(run.log_path)
    stop = StopFlag()
    out_path = opts.resolved_out()
    n_blocks = int(opts.extra.get("n_blocks", 8))
    arch_config = {"n_blocks": n_blocks} if n_blocks != 8 else {}
    model = SFTNet(**arch_config).to(device)
    if opts.init:
        grow_init(model, opts.init)
    peak = opts.lr or 3e-4
    ex = opts.extra
    fft_w = float(ex.get("fft_weight", 0.0))
    ema_decay = float(ex.get("ema", 0.0))
    tone_sigma = float(ex.get("tone_sigma", 0.0))
    optim = torch.optim.AdamW(model.parameters(), lr=peak, betas=(0.9, 0.999),
                              weight_decay=float(ex.get("weight_decay", 0.0)))
    ema = torch.optim.swa_utils.AveragedModel(
        model, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(ema_decay)) if ema_decay > 0 else None
    step, best = 0, {"val_psnr": -1.0}
    if opts.resume:
        state = run.load_last()
        if state is not None:
            model.load_state_dict(state["model"])
            optim.load_state_dict(state["optim"])
            if ema is not None and "ema" in state:
                ema.load_state_dict(state["ema"])
            step = int(state["step"])
            best = dict(state.get("best", best))
            log.info("resumed from %s at step %d", run.last, step)
    src = _Source(opts, device)
    s1, s2, _ = opts.extra.get("stages", (0.4, 0.3, 0.3))
    if not src.has_coc:
        s1 = 0.0
    total = int(opts.steps)
    p = int(opts.patch)
    schedule = [(0.0, min(96, p)), (0.3, min(128, p)), (0.65, p)]
    if "curriculum" in opts.extra:  # [[fraction, patch], ...]; e.g. [[0, 192]] = the full patch from the start
        schedule = [(float(f), min(int(q), p)) for f, q in opts.extra["curriculum"]]
        if not schedule or schedule[0][0] != 0.0:
            raise ValueError(f"curriculum must start at fraction 0, got {opts.extra['curriculum']!r}")
    syn_test = None
    if opts.data is not None and opts.synthetic and int(opts.extra.get("syn_val_n", 12)) > 0:
        from defocus_cli.data import synthetic_test_set

        syn_test = synthetic_test_set(n=int(opts.extra.get("syn_val_n", 12)), seed=1234, patch=192,
                                      photos=opts.data, coc_scale=float(opts.extra.get("coc_scale", 1.5)))

    def checkpoint(is_best: bool = False) -> None:
        state = {"model": model.state_dict(), "optim": optim.state_dict(), "step": step, "best": best,
                 "arch": "sftnet"}
        if ema is not None:
            state["ema"] = ema.state_dict()
        run.save(state, best=is_best)

    def export_model() -> torch.nn.Module:
        return ema.module if ema is not None else model

    last_val: list[float] = []

    def validate() -> None:
        nonlocal best
        rec: dict[str, Any] = {"step": step, "kind": "val"}
        net = export_model()
        if syn_test is not None:
            rec.update(evaluate_synthetic(net, syn_test))
        if opts.val is not None:
            rec.update(validate_lfdof(ToneLocked(net, tone_sigma), opts.val))
        model.train()
        logger.log(**rec)
        log.info("validation at step %d: %s", step, rec)
        if "val_psnr" in rec:
            last_val[:] = [float(rec["val_psnr"])]
        score = rec.get("val_psnr", rec.get("syn_psnr", -1.0))
        if score > best.get("val_psnr", -1.0):
            best = {"val_psnr": score, **{k: v for k, v in rec.items() if k not in ("kind", "val_psnr")}}
            checkpoint(is_best=True)
            if "input_psnr" not in rec or score > rec["input_psnr"]:
                meta = _export_meta(tone_sigma, arch_config)
                export_safetensors(export_model(), out_path, arch="sftnet", steps=step,
                                   notes="synthetic dual-pixel defocus (defocus_cli.data), 3-stage SFT-net recipe",
                                   val=json_safe(rec), **meta)
                log.info("exported %s (step %d, %.3f dB)", out_path, step, score)

    model.train()
    t_last = time.time()
    t_prog, step_prog = t_last, step
    every = int(ex.get("progress_every", 20))
    warmup = int(ex.get("warmup", 50))
    minutes = float(ex.get("minutes", 0) or 0)
    t_end = time.monotonic() + minutes * 60.0 if minutes > 0 else math.inf
    while step < total and not stop.is_set and time.monotonic() < t_end:
        frac = step / max(total, 1)
        patch = curriculum_patch(step, total, schedule)
        bsz = max(2, round(opts.batch * (128 / patch) ** 2))
        b = src.batch(step, patch, bsz)
        x, y = b["blur"].to(device), b["sharp"].to(device)
        stage = 1 if frac < s1 else (2 if frac < s1 + s2 else 3)
        lr = _lr_at(step, total, peak, warmup)
        for g in optim.param_groups:
            g["lr"] = lr
        with autocast_context(device, "bf16" if opts.bf16 else "fp32"):
            m_pred = model.map_lowres(x)
            terms: dict[str, torch.Tensor] = {}
            if src.has_coc:
                m_gt = _gt_map_lowres(b["coc"].to(device))
                terms["dme"] = F.l1_loss(m_pred.float(), m_gt)
            cond_map = m_gt if stage == 1 else m_pred
            out = model.restore(x, cond_map).float()
            if tone_sigma > 0:
                from defocus_cli.tone import lock_tone

                out = lock_tone(out, x.float(), tone_sigma)
            terms["df"] = F.l1_loss(out, y)
            if fft_w > 0:
                terms["fft"] = fft_l1(out, y)
            if stage < 3:
                loss = LAMBDA_DF * terms["df"] + (LAMBDA_DME * terms["dme"] if "dme" in terms else 0.0)
            else:
                if src.has_coc:
                    a = b["coc"].to(device).abs()
                    w = a / a.mean(dim=(1, 2, 3), keepdim=True).clamp_min(1e-3)
                    terms["wd"] = ((w * (out - y)) ** 2).mean().clamp_min(1e-12).sqrt()
                    loss = LAMBDA_DF * terms["df"] + LAMBDA_WD * terms["wd"] + LAMBDA_DME_FT * terms["dme"]
                else:
                    loss = LAMBDA_DF * terms["df"]
        if "fft" in terms:
            loss = loss + fft_w * terms["fft"]
        optim.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optim.step()
        if ema is not None:
            ema.update_parameters(model)
        step += 1
        if every > 0 and step % every == 0:
            now_p = time.time()
            log.info(_progress(step, total, loss.item(), (step - step_prog) / max(now_p - t_prog, 1e-9),
                               last_val[0] if last_val else None))
            t_prog, step_prog = now_p, step
        now = time.time()
        logger.log(step=step, stage=stage, patch=patch, batch=bsz, loss=loss.item(), lr=lr,
                   seconds=round(now - t_last, 3), **{k: v.item() for k, v in terms.items()})
        t_last = now
        if step % max(1, opts.val_every) == 0:
            validate()
            t_last = time.time()
        if run.due():
            checkpoint()
    checkpoint()
    if step >= total and step % max(1, opts.val_every) != 0:
        validate()
    if not out_path.exists() and opts.val is None:
        export_safetensors(export_model(), out_path, arch="sftnet", steps=step,
                           **_export_meta(tone_sigma, arch_config))
    return {"steps": step, "best": best, "out": str(out_path), "run_dir": str(run.path),
            "stopped": stop.is_set}


def json_safe(rec: dict[str, Any]) -> dict[str, Any]:
    """Round floats for metadata."""
    return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in rec.items()}


__all__ = ["train", "evaluate_synthetic", "fft_l1", "grow_init", "ToneLocked"]
