"""Scores and figures for the model cards of trained weights (IFAN, DefocusGAN, the DP defocus-map net).

:func:`evaluate`, run by ``python tools/evaluate_weights.py --arch ifan --weights weights/ifan.safetensors
--json out.json [--lfdof DIR] [--synthetic PHOTOS] [--figure weights/figures/ifan.png --real IMAGES...]``

* LFDOF (real pairs): PSNR / SSIM / LPIPS (AlexNet v0.1) of the output, next to the blurry input's; whole
  images, the output rounded to 8 bits as if saved (:mod:`defocus_cli.metrics`, :mod:`defocus_cli.lpips`).
* Synthetic test set: :func:`defocus_cli.data.synthetic_test_set` (seeded, held-out photos): the same three
  metrics for deblurring models; for the map network the mean absolute signed-CoC error (px), the error of
  the magnitude, and the sign accuracy where ``|CoC| ≥ 1`` px.
* Figure: before/after pairs of real defocused photos without ground truth (input left, output right).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from defocus_cli.train.common import forward_padded

log = logging.getLogger(__name__)

__all__ = ["load_trained", "score_lfdof", "score_synthetic", "score_map", "before_after_figure", "map_figure", "evaluate"]


def load_trained(arch: str, path: str | Path) -> torch.nn.Module:
    """Instantiate ``arch`` (a :data:`defocus_cli.registry.ARCHS` key) and load a safetensors file (float32, eval)."""
    from safetensors.torch import load_file

    from defocus_cli.registry import load_class

    model = load_class(arch)()
    model.load_state_dict({k: v.float() for k, v in load_file(str(path)).items()}, strict=True)
    return model.eval()


def _to_t(img: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))[None].float()


def _to_np(t: torch.Tensor) -> np.ndarray:
    return t[0].clamp(0, 1).permute(1, 2, 0).numpy()


@torch.inference_mode()
def score_lfdof(model: torch.nn.Module, root: str | Path) -> dict[str, Any]:
    """Whole-image scores on the LFDOF pairs: means of per-image PSNR/SSIM/LPIPS for output and input."""
    from defocus_cli import metrics
    from defocus_cli.data import lfdof_pairs
    from defocus_cli.lpips import load_lpips

    lp = load_lpips()
    rows = []
    for name, inp, tgt in lfdof_pairs(root):
        out = np.round(_to_np(forward_padded(model, _to_t(inp))) * 255) / 255
        rows.append({"name": name, "psnr": metrics.psnr(out, tgt), "ssim": metrics.ssim(out, tgt),
                     "lpips": float(lp(_to_t(out), _to_t(tgt))[0]), "input_psnr": metrics.psnr(inp, tgt),
                     "input_ssim": metrics.ssim(inp, tgt), "input_lpips": float(lp(_to_t(inp), _to_t(tgt))[0])})
    keys = ("psnr", "ssim", "lpips", "input_psnr", "input_ssim", "input_lpips")
    return {"mean": {k: float(np.mean([r[k] for r in rows])) for k in keys}, "images": rows}


@torch.inference_mode()
def score_synthetic(model: torch.nn.Module, test: dict[str, torch.Tensor]) -> dict[str, float]:
    """Mean PSNR/SSIM/LPIPS of ``model(test["blur"])`` vs ``test["sharp"]`` (and of the blurred input)."""
    from defocus_cli import metrics
    from defocus_cli.lpips import load_lpips

    lp = load_lpips()
    acc: dict[str, list[float]] = {k: [] for k in ("psnr", "ssim", "lpips", "input_psnr", "input_ssim",
                                                  "input_lpips")}
    for i in range(test["blur"].shape[0]):
        x, y = test["blur"][i:i + 1], test["sharp"][i:i + 1]
        out = torch.from_numpy(np.round(_to_np(forward_padded(model, x)) * 255) / 255).permute(2, 0, 1)[None].float()
        for pre, im in (("", out), ("input_", x)):
            acc[pre + "psnr"].append(metrics.psnr(_to_np(im), _to_np(y)))
            acc[pre + "ssim"].append(metrics.ssim(_to_np(im), _to_np(y)))
            acc[pre + "lpips"].append(float(lp(im, y)[0]))
    return {k: float(np.mean(v)) for k, v in acc.items()} | {"n": int(test["blur"].shape[0])}


def score_map(model: torch.nn.Module, test: dict[str, torch.Tensor]) -> dict[str, float]:
    """CoC errors of a map network on the synthetic test set (see :func:`defocus_cli.train.defocusgan_map.coc_error`)."""
    from defocus_cli.train.defocusgan_map import coc_error

    return coc_error(model, test, chunk=2) | {"n": int(test["coc"].shape[0])}


@torch.inference_mode()
def before_after_figure(model: torch.nn.Module, images: Sequence[str | Path], out: str | Path,
                        crop: int = 320) -> Path:
    """Write a PNG with one row per image: a centre ``crop`` of the input (left) and of the output (right),
    computed on the whole image."""
    import cv2

    from defocus_cli.data import read_image

    rows = []
    for p in images:
        img = read_image(p)
        res = _to_np(forward_padded(model, _to_t(img)))
        h, w = img.shape[:2]
        c = min(crop, h, w)
        y, x = (h - c) // 2, (w - c) // 2
        pair = np.concatenate([img[y:y + c, x:x + c], np.ones((c, 8, 3), np.float32), res[y:y + c, x:x + c]], 1)
        rows.append(pair)
        rows.append(np.ones((8, pair.shape[1], 3), np.float32))
    fig = np.concatenate(rows[:-1], 0)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(out), (np.clip(fig[:, :, ::-1], 0, 1) * 255 + 0.5).astype(np.uint8))
    return out


@torch.inference_mode()
def map_figure(model: torch.nn.Module, test: dict[str, torch.Tensor], out: str | Path, count: int = 3,
               limit: float = 8.0) -> Path:
    """PNG with one row per synthetic test sample: blurred image | true signed CoC | predicted signed CoC
    (colour map: blue = in front of the focal plane, red = behind, white = in focus; saturates at ±``limit`` px)."""
    import cv2

    def colour(m: np.ndarray) -> np.ndarray:
        t = np.clip(m / limit, -1, 1)
        rgb = np.stack([np.where(t > 0, 1, 1 + t), 1 - np.abs(t), np.where(t < 0, 1, 1 - t)], -1)
        return rgb.astype(np.float32)

    rows = []
    for i in range(min(count, test["coc"].shape[0])):
        pred = model(test["left"][i:i + 1], test["right"][i:i + 1])[0, 0].numpy()
        img = test["blur"][i].permute(1, 2, 0).numpy()
        gap = np.ones((img.shape[0], 8, 3), np.float32)
        row = np.concatenate([img, gap, colour(test["coc"][i, 0].numpy()), gap, colour(pred)], 1)
        rows += [row, np.ones((8, row.shape[1], 3), np.float32)]
    fig = np.concatenate(rows[:-1], 0)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(out), (np.clip(fig[:, :, ::-1], 0, 1) * 255 + 0.5).astype(np.uint8))
    return out


def evaluate(
    arch: str,
    weights: str | Path,
    *,
    lfdof: str | Path | None = None,
    synthetic: str | Path | None = None,
    syn_n: int = 32,
    syn_patch: int = 256,
    figure: str | Path | None = None,
    real: Sequence[str | Path] = (),
    threads: int = 1,
) -> dict[str, Any]:
    """Score the weights file ``weights`` of architecture ``arch`` for its model card (``tools/evaluate_weights.py``).

    Args:
        arch: a :data:`defocus_cli.registry.ARCHS` key.
        weights: a safetensors file of ``arch``'s state dict.
        lfdof: LFDOF folder (real pairs; deblurring models only): :func:`score_lfdof`.
        synthetic: folder of sharp photos; its held-out split makes the synthetic test set
            (``syn_n`` patches of ``syn_patch`` px, seed 1234): :func:`score_synthetic`, or :func:`score_map` for
            the map network.
        figure: a PNG to write: :func:`map_figure` of the synthetic set for the map network, else
            :func:`before_after_figure` of the ``real`` photos.
        threads: torch CPU threads.

    Returns:
        ``{"arch", "weights", "synthetic"?, "lfdof"?, "seconds"}``, JSON-ready.
    """
    from defocus_cli.train.common import setup_torch

    torch.set_num_threads(threads)
    setup_torch(threads)
    model = load_trained(arch, weights)
    res: dict[str, Any] = {"arch": arch, "weights": str(weights)}
    t0 = time.time()
    if synthetic:
        from defocus_cli.data import synthetic_test_set

        test = synthetic_test_set(n=syn_n, seed=1234, patch=syn_patch, photos=synthetic)
        res["synthetic"] = score_map(model, test) if arch == "defocusgan-map" else score_synthetic(model, test)
        if arch == "defocusgan-map" and figure:
            map_figure(model, test, figure)
        res["synthetic"].update({"seed": 1234, "patch": syn_patch})
        log.info("synthetic: %s", res["synthetic"])
    if lfdof and arch != "defocusgan-map":
        res["lfdof"] = score_lfdof(model, lfdof)
        log.info("lfdof: %s", res["lfdof"]["mean"])
    if figure and real and arch != "defocusgan-map":
        before_after_figure(model, real, figure)
    res["seconds"] = round(time.time() - t0, 1)
    return res
