"""Shared trainer utilities: run folders, resumable checkpoints, JSONL logs, LFDOF validation, export.

Typical loop (see :mod:`defocus_cli.train.sftnet`)::

    setup_torch(threads=1)
    run = RunDir("runs/sftnet")                       # runs/<name>/{last.pt, best.pt, log.jsonl}
    state = run.load_last()                           # None or the dict saved by run.save(...)
    stop = StopFlag()                                 # SIGTERM/SIGINT → stop.is_set; save and exit
    logger = JsonlLogger(run.log_path)
    for step in ...:
        ...
        logger.log(step=step, loss=..., lr=..., seconds=...)
        if step % K == 0: logger.log(step=step, **validate_lfdof(model, lfdof_root))
        if run.due(step) or stop.is_set: run.save({...})    # torch.save dict, loaded with weights_only=True
    export_safetensors(model, "weights/x.safetensors", arch="x", steps=step)

Checkpoints are plain dicts of tensors / numbers / strings (``model``, ``optim``, ``step`` ...), so
``torch.load(weights_only=True)`` reads them.

Devices: every trainer takes ``cpu``, ``cuda``, ``cuda:N`` (and ``auto`` / ``mps``), resolved by
:func:`train_device` (an unavailable device is a one-line :class:`~defocus_cli.errors.DeviceError`, exit 4).
Checkpoints are always written with CPU tensors (:func:`to_cpu`) and read onto the CPU, so a run started on a
GPU resumes on a CPU and the other way round; optimiser state follows its parameters' device on load.

The IFAN and DefocusGAN trainers also share the pieces at the end of this module: :class:`ValidatedRun`
(resume, checkpoints, LFDOF validation, best-weights export, summary), :func:`load_init` (warm start), the
``TrainOptions`` → config helpers (:func:`fresh_run_dir`, :func:`config_fields`, :func:`apply_options`) and the
``--set KEY=VALUE`` overrides of their command lines (:func:`set_fields`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import signal
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

from defocus_cli._version import __version__

log = logging.getLogger(__name__)

C = TypeVar("C")


def setup_torch(threads: int | None = None, seed: int | None = None) -> None:
    """Set the torch CPU thread count (``None`` keeps the default) and seed torch's global RNG."""
    if threads:
        torch.set_num_threads(int(threads))
        with contextlib.suppress(RuntimeError):
            torch.set_num_interop_threads(1)
    if seed is not None:
        torch.manual_seed(seed)
    with contextlib.suppress(Exception):
        from defocus_cli.runtime import tune_allocator

        tune_allocator()


def train_device(request: str | torch.device | None = "cpu") -> torch.device:
    """The :class:`torch.device` a trainer runs on, from a ``--device`` value (``cpu``, ``cuda``, ``cuda:N``,
    ``auto``, ``mps``; ``None`` = ``cpu``), via :func:`defocus_cli.devices.resolve_device`.

    Raises:
        UsageError: not a device name (exit 2).
        DeviceError: the device is not available here, e.g. ``cuda`` without a CUDA GPU (exit 4).
    """
    from defocus_cli.devices import resolve_device

    return resolve_device(str(request) if request is not None else "cpu")


def to_cpu(obj: Any) -> Any:
    """``obj`` with every tensor inside (nested dicts, lists, tuples) moved to the CPU (for checkpoints)."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_cpu(v) for v in obj)
    return obj


def forward_padded(module: Any, x: torch.Tensor, method: str | None = None) -> torch.Tensor:
    """``module(x)`` (or ``module.<method>(x)``) for ``x`` ``(N, C, H, W)`` of any size, on ``x``'s device:
    padded at the bottom/right to the module's ``multiple_of`` by the engine's padding rule
    (:func:`defocus_cli.tiling.padding_for`, applied to the tensor) and cropped back to ``(N, C_out, H, W)``; not
    clamped. For evaluations that call a network directly instead of through :class:`defocus_cli.restorer.Restorer`."""
    import torch.nn.functional as F

    from defocus_cli.runtime import engine_traits
    from defocus_cli.tiling import padding_for

    h, w = x.shape[-2:]
    ph, pw, mode = padding_for(h, w, engine_traits(module).multiple_of)
    fn = getattr(module, method) if method else module
    return fn(F.pad(x, (0, pw, 0, ph), mode=mode) if ph or pw else x)[..., :h, :w]


def module_device(module: Any) -> torch.device:
    """The device of ``module``'s first parameter or buffer (CPU for a plain callable or an empty module)."""
    if isinstance(module, torch.nn.Module):
        for t in module.parameters():
            return t.device
        for t in module.buffers():
            return t.device
    return torch.device("cpu")


def atomic_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` to ``path`` through :func:`defocus_cli.io.atomic.atomic_write` (short temporary name,
    fsync, rename; the temporary file is removed on any failure): never a half-written checkpoint."""
    from defocus_cli.io.atomic import atomic_write

    atomic_write(path, lambda tmp: torch.save(obj, tmp))


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a training checkpoint with ``weights_only=True`` onto the CPU."""
    return torch.load(str(path), map_location="cpu", weights_only=True)


class RunDir:
    """A training run folder ``runs/<name>/`` with ``last.pt``, ``best.pt`` and ``log.jsonl``.

    ``save_every_s``: :meth:`due` turns true once that many seconds passed since the last save."""

    def __init__(self, path: str | Path, save_every_s: float = 300.0) -> None:
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self.save_every_s = save_every_s
        self._last_save = time.monotonic()

    @property
    def last(self) -> Path:
        return self.path / "last.pt"

    @property
    def best(self) -> Path:
        return self.path / "best.pt"

    @property
    def log_path(self) -> Path:
        return self.path / "log.jsonl"

    def load_last(self) -> dict[str, Any] | None:
        """The last checkpoint dict, or ``None`` when there is none."""
        return load_checkpoint(self.last) if self.last.exists() else None

    def due(self) -> bool:
        return time.monotonic() - self._last_save >= self.save_every_s

    def save(self, state: dict[str, Any], best: bool = False) -> None:
        """Write ``last.pt`` (and ``best.pt`` when ``best``), with every tensor on the CPU."""
        state = to_cpu(state)
        atomic_save(state, self.last)
        if best:
            atomic_save(state, self.best)
        self._last_save = time.monotonic()
        log.info("checkpoint saved at step %s", state.get("step"))


class StopFlag:
    """Set by SIGTERM / SIGINT so the loop can checkpoint and exit cleanly."""

    def __init__(self) -> None:
        self.is_set = False
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(ValueError):  # not in the main thread
                signal.signal(sig, self._handler)

    def _handler(self, signum: int, frame: Any) -> None:  # noqa: ARG002
        self.is_set = True


class JsonlLogger:
    """Append one JSON object per line (``time`` added); floats are rounded for readability."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def log(self, **fields: Any) -> None:
        rec = {"time": round(time.time(), 1)}
        for k, v in fields.items():
            if isinstance(v, torch.Tensor):
                v = v.item()
            if isinstance(v, float):
                v = round(v, 6) if math.isfinite(v) else None
            rec[k] = v
        with self.path.open("a") as f:
            f.write(json.dumps(rec) + "\n")


def read_log(path: str | Path) -> list[dict[str, Any]]:
    """All records of a JSONL log."""
    p = Path(path)
    if not p.exists():
        return []
    return [json.loads(line) for line in p.read_text().splitlines() if line.strip()]


def curriculum_patch(step: int, total: int, schedule: Sequence[tuple[float, int]] = ((0.0, 128),)) -> int:
    """Small-patches-first curriculum: ``schedule`` is ``[(fraction_of_total, patch), ...]`` sorted by
    fraction; returns the patch of the last entry whose fraction ≤ ``step / total``."""
    frac = step / max(total, 1)
    patch = schedule[0][1]
    for f, p in schedule:
        if frac >= f:
            patch = p
    return patch


def batches(dataset: Any, batch: int, seed: int = 0, start: int = 0) -> Iterator[dict[str, torch.Tensor]]:
    """Endless random batches from a map-style dataset of sample dicts (``(B, C, P, P)`` tensors).

    Deterministic in ``(seed, batch index)`` so a resumed run continues the sequence (``start`` = number
    of batches already drawn)."""
    n = len(dataset)
    k = start
    while True:
        rng = np.random.default_rng([seed, k])
        idx = rng.integers(0, n, size=batch)
        samples = [dataset[int(i)] for i in idx]
        yield {key: torch.stack([s[key] for s in samples]) for key in samples[0] if isinstance(samples[0][key],
                                                                                                 torch.Tensor)}
        k += 1


@torch.no_grad()
def validate_lfdof(module: torch.nn.Module | Callable[[torch.Tensor], torch.Tensor], root: str | Path,
                   max_images: int | None = None, crop: int | None = None) -> dict[str, float]:
    """Mean PSNR/SSIM of ``module`` on the LFDOF pairs under ``root`` (``input/``, ``target/``), next to the
    blurry input's. ``module`` follows the engine contract: ``(1, 3, H, W)`` RGB [0, 1] in and out.
    ``crop``: evaluate a centre crop of that side only (faster). Runs on the module's device
    (:func:`module_device`). Returns ``{"val_psnr", "val_ssim", "input_psnr", "input_ssim", "n"}``."""
    from defocus_cli import metrics
    from defocus_cli.data import lfdof_pairs

    was_training = getattr(module, "training", False)
    if isinstance(module, torch.nn.Module):
        module.eval()
    device = module_device(module)
    ps, ss, ips, iss = [], [], [], []
    for _, inp, tgt in lfdof_pairs(root)[:max_images]:
        if crop:
            h, w = inp.shape[:2]
            y, x = max(0, (h - crop) // 2), max(0, (w - crop) // 2)
            inp, tgt = inp[y:y + crop, x:x + crop], tgt[y:y + crop, x:x + crop]
        x_t = torch.from_numpy(inp).permute(2, 0, 1)[None].contiguous().to(device)
        out = forward_padded(module, x_t)[0].permute(1, 2, 0).clamp(0, 1).float().cpu().numpy()
        out = np.round(out * 255) / 255  # as a saved 8-bit result
        ps.append(metrics.psnr(out, tgt))
        ss.append(metrics.ssim(out, tgt))
        ips.append(metrics.psnr(inp, tgt))
        iss.append(metrics.ssim(inp, tgt))
    if isinstance(module, torch.nn.Module) and was_training:
        module.train()
    return {"val_psnr": float(np.mean(ps)), "val_ssim": float(np.mean(ss)),
            "input_psnr": float(np.mean(ips)), "input_ssim": float(np.mean(iss)), "n": len(ps)}


def export_safetensors(module: torch.nn.Module | dict[str, torch.Tensor], out: str | Path, arch: str,
                       steps: int, dtype: torch.dtype = torch.float16, **meta: Any) -> Path:
    """Write the module's state dict as safetensors (``dtype``, default fp16) with metadata
    ``{"arch", "producer", "source": "trained", "steps", ...meta}`` (values stringified). Atomic."""
    from safetensors.torch import save_file

    sd = module.state_dict() if isinstance(module, torch.nn.Module) else module
    tensors = {k: (v.detach().to(dtype) if v.is_floating_point() else v.detach()).contiguous().cpu()
               for k, v in sd.items()}
    md = {"arch": arch, "producer": f"defocus_cli {__version__}", "source": "trained", "steps": str(steps)}
    md.update({k: (v if isinstance(v, str) else json.dumps(v)) for k, v in meta.items()})
    from defocus_cli.io.atomic import atomic_write

    def write(tmp: Path) -> None:
        save_file(tensors, str(tmp), metadata=md)
        os.chmod(tmp, 0o644)

    return atomic_write(out, write)


def psnr_t(pred: torch.Tensor, target: torch.Tensor) -> float:
    """Mean per-image PSNR (dB, :func:`defocus_cli.metrics.psnr_from_mse`) of two ``(N, C, H, W)`` [0, 1]
    tensors (``pred`` clipped to [0, 1]); the squared errors are averaged on the tensors' device."""
    from defocus_cli.metrics import psnr_from_mse

    mse = ((pred.float().clamp(0, 1) - target.float()) ** 2).flatten(1).mean(1)
    return float(np.mean([psnr_from_mse(m) for m in mse.tolist()]))


SYN_TEST: dict[str, Any] = {"n": 32, "seed": 1234, "patch": 256, "coc_scale": 1.5}
"""The fixed synthetic test set every model card reports: 32 patches of 256 px from the held-out photos."""


@torch.no_grad()
def evaluate_for_card(module: torch.nn.Module | Callable[[torch.Tensor], torch.Tensor],
                      lfdof_root: str | Path | None, photos_root: str | Path | None,
                      use_lpips: bool = True, syn_params: dict[str, Any] | None = None) -> dict[str, Any]:
    """Scores for a model card: LFDOF (full images, 8-bit rounded output) and the :data:`SYN_TEST` synthetic
    set (``syn_params`` overrides it) — mean PSNR / SSIM / LPIPS of the output and of the blurry input, and
    the map MAE (px) when ``module`` has ``defocus_map``. ``module``: engine contract."""
    from defocus_cli import metrics
    from defocus_cli.data import lfdof_pairs, synthetic_test_set

    lp: Callable[[np.ndarray, np.ndarray], float] | None = None
    if use_lpips:
        from defocus_cli.lpips import lpips as lp

    if isinstance(module, torch.nn.Module):
        module.eval()

    def score(pairs: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> dict[str, float]:
        res: dict[str, list[float]] = {}
        for inp, out, tgt in pairs:
            for tag, img in (("", out), ("input_", inp)):
                res.setdefault(tag + "psnr", []).append(metrics.psnr(img, tgt))
                res.setdefault(tag + "ssim", []).append(metrics.ssim(img, tgt))
                if lp is not None:
                    res.setdefault(tag + "lpips", []).append(lp(img, tgt))
        return {k: float(np.mean(v)) for k, v in res.items()}

    device = module_device(module)

    def run_one(inp: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(inp.transpose(2, 0, 1)))[None].float().to(device)
        y = forward_padded(module, x)[0].clamp(0, 1).permute(1, 2, 0).float().cpu().numpy()
        return np.round(y * 255) / 255

    out: dict[str, Any] = {}
    if lfdof_root is not None:
        pairs = [(inp, run_one(inp), tgt) for _, inp, tgt in lfdof_pairs(lfdof_root)]
        out["lfdof"] = {**score(pairs), "n": len(pairs)}
    if photos_root is not None:
        sp = dict(syn_params or SYN_TEST)
        syn = synthetic_test_set(photos=photos_root, **sp)
        pairs = []
        for i in range(syn["blur"].shape[0]):
            inp = syn["blur"][i].permute(1, 2, 0).numpy()
            pairs.append((inp, run_one(inp), syn["sharp"][i].permute(1, 2, 0).numpy()))
        out["synthetic"] = {**score(pairs), **sp}
        if hasattr(module, "defocus_map"):
            maes = [float((forward_padded(module, syn["blur"][i:i + 1].to(device), "defocus_map").abs().cpu()
                           - syn["coc"][i:i + 1].abs()).abs().mean())
                    for i in range(syn["blur"].shape[0])]
            out["synthetic"]["map_mae_px"] = float(np.mean(maes))
    return out


# ---------------------------------------------------------------------------------------------------------
# Pieces of the IFAN and DefocusGAN trainers: TrainOptions → config, --set overrides, warm start, the run.


def fresh_run_dir(opts: Any) -> Path:
    """``opts.resolved_run_dir()`` (``opts``: a :class:`defocus_cli.train.TrainOptions`); a folder that already
    holds a run (``last.pt``) is refused with :class:`UsageError` unless ``opts.resume``, so that a run is never
    silently continued or mixed. ``opts.device`` is checked first (:func:`train_device`: an unavailable device is a
    :class:`~defocus_cli.errors.DeviceError`), before anything is created."""
    from defocus_cli.errors import UsageError

    train_device(getattr(opts, "device", "cpu"))
    run_dir = Path(opts.resolved_run_dir())
    if (run_dir / "last.pt").exists() and not opts.resume:
        raise UsageError(f"{run_dir} already holds a run; pass --resume to continue it or --run-dir NEW_DIR")
    return run_dir


def config_fields(opts: Any, multiple_of: int) -> dict[str, Any]:
    """The fields of a trainer config (IFAN, DefocusGAN) that come from ``TrainOptions`` the same way for every
    trainer: ``run`` (checked by :func:`fresh_run_dir`), ``cache``, ``photos`` / ``paired`` (``opts.data`` is sharp
    photos with ``synthetic``, a paired folder without; neither with a patch cache), ``patch`` (rounded down to a
    multiple of ``multiple_of``), ``batch``, ``steps``, ``minutes`` (no time limit), ``val_root``, ``val_every``,
    ``export``, ``threads`` (0: torch's default), ``seed``, ``device`` (resolved, e.g. ``"cuda:0"``) and ``bf16``."""
    run_dir = fresh_run_dir(opts)
    photos = paired = None
    if not opts.cache and opts.data is not None:
        photos, paired = (str(opts.data), None) if opts.synthetic else (None, str(opts.data))
    return dict(
        run=str(run_dir), cache=[str(c) for c in opts.cache], photos=photos, paired=paired,
        patch=opts.patch - opts.patch % multiple_of, batch=opts.batch, steps=opts.steps, minutes=1e9,
        val_root=str(opts.val) if opts.val else None, val_every=opts.val_every, export=str(opts.resolved_out()),
        threads=opts.threads or 0, seed=opts.seed, device=str(train_device(opts.device)), bf16=bool(opts.bf16),
    )


def apply_options(cfg: C, opts: Any) -> C:
    """Put ``opts.lr`` (when given) and every ``opts.extra`` item (config field → value) onto ``cfg``; returns it."""
    if opts.lr:
        cfg.lr = opts.lr  # type: ignore[attr-defined]
    for k, v in (opts.extra or {}).items():
        setattr(cfg, k, v)
    return cfg


def load_init(module: torch.nn.Module, path: str | Path) -> None:
    """Load starting weights (a safetensors file of ``module``'s state dict, any float dtype) into ``module``,
    strictly, as float32."""
    from safetensors.torch import load_file

    module.load_state_dict({k: v.float() for k, v in load_file(str(path)).items()})


class ValidatedRun:
    """Checkpoints, LFDOF validation and best-weights export of one run of a trainer (IFAN, DefocusGAN).

    ``cfg``: the trainer's config dataclass, with ``run``, ``save_every_s``, ``val_root``, ``val_crop``,
    ``export`` and ``export_margin_db``. ``parts``: what a checkpoint holds, by key — modules and optimisers
    (anything with ``state_dict``/``load_state_dict``); ``parts["model"]`` is the network that is validated and
    exported (as ``arch``, with ``export_meta`` added to its metadata, e.g. IFAN's ``dme_to_coc``). A checkpoint is
    ``{<part key>: state dict, ..., "step", "best" (best validation PSNR, dB), "config": str(asdict(cfg))}``.

    Usage: ``step = run.resume() or 0``; per step ``run.logger.log(...)`` and ``run.after_step(step, validate)``;
    finally ``return run.finish(step, t0)``.
    """

    def __init__(self, cfg: Any, parts: dict[str, Any], arch: str, export_meta: dict[str, str] | None = None) -> None:
        self.cfg = cfg
        self.export_meta = dict(export_meta or {})
        self.parts = parts
        self.model: torch.nn.Module = parts["model"]
        self.arch = arch
        self.run = RunDir(cfg.run, save_every_s=cfg.save_every_s)
        self.logger = JsonlLogger(self.run.log_path)
        self.best = -math.inf

    def resume(self) -> int | None:
        """Load ``last.pt`` into the parts and :attr:`best`; returns its step, or ``None`` for a new run."""
        state = self.run.load_last()
        if state is None:
            return None
        for key, part in self.parts.items():
            part.load_state_dict(state[key])
        step, self.best = int(state["step"]), float(state.get("best", -math.inf))
        log.info("resumed %s at step %d (best val %.3f dB)", self.cfg.run, step, self.best)
        return step

    def checkpoint(self, step: int, is_best: bool = False) -> None:
        """Save ``last.pt`` (and ``best.pt`` when ``is_best``)."""
        state = {key: part.state_dict() for key, part in self.parts.items()}
        state.update(step=step, best=self.best, config=str(dataclasses.asdict(self.cfg)))
        self.run.save(state, best=is_best)

    def validate(self, step: int) -> None:
        """Score the model on LFDOF centre crops (nothing without ``val_root``) and checkpoint; when the PSNR
        improved, ``best.pt`` too, and when it also beats the blurry input's by ``export_margin_db``, export."""
        cfg = self.cfg
        if not cfg.val_root:
            return
        v = validate_lfdof(self.model, cfg.val_root, crop=cfg.val_crop)
        self.logger.log(step=step, kind="val", **v)
        log.info("step %d: LFDOF crop %.3f dB (input %.3f)", step, v["val_psnr"], v["input_psnr"])
        improved = v["val_psnr"] > self.best
        if improved:
            self.best = v["val_psnr"]
        self.checkpoint(step, is_best=improved)
        if improved and cfg.export and v["val_psnr"] > v["input_psnr"] + cfg.export_margin_db:
            export_safetensors(self.model, cfg.export, arch=self.arch, steps=step,
                               notes=f"LFDOF centre-crop {cfg.val_crop}px val {v['val_psnr']:.3f} dB "
                                     f"(input {v['input_psnr']:.3f})", **self.export_meta)
            log.info("exported %s at step %d", cfg.export, step)

    def after_step(self, step: int, validate: bool) -> None:
        """After optimiser step ``step``: :meth:`validate` when ``validate``, else checkpoint when one is due."""
        if validate:
            self.validate(step)
        elif self.run.due():
            self.checkpoint(step)

    def finish(self, step: int, t0: float) -> dict[str, Any]:
        """Final checkpoint; without validation (nothing to select by) export the final weights. Returns the
        summary ``{"step", "best_val_psnr" (dB or None), "seconds" (since ``t0``, monotonic), "exported"}``."""
        cfg = self.cfg
        self.checkpoint(step)
        exported = bool(cfg.export) and self.best > -math.inf and Path(cfg.export).exists()
        if cfg.export and not cfg.val_root:
            export_safetensors(self.model, cfg.export, arch=self.arch, steps=step,
                               notes="final weights (no validation)", **self.export_meta)
            exported = True
        return {"step": step, "best_val_psnr": self.best if math.isfinite(self.best) else None,
                "seconds": time.monotonic() - t0, "exported": exported}
