"""Figures for model cards: a grid of synthetic samples and before/after strips (uint8 RGB arrays / PNG)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch


def label(tile: np.ndarray, text: str) -> np.ndarray:
    """``tile`` (H, W, 3) uint8 RGB with an 18 px white caption bar above it holding ``text``."""
    import cv2

    bar = np.full((18, tile.shape[1], 3), 255, np.uint8)
    cv2.putText(bar, text, (4, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (0, 0, 0), 1, cv2.LINE_AA)
    return np.concatenate([bar, tile], 0)


def _u8(x: torch.Tensor | np.ndarray) -> np.ndarray:
    a = x.permute(1, 2, 0).cpu().numpy() if isinstance(x, torch.Tensor) else x
    return (np.clip(a, 0, 1) * 255 + 0.5).astype(np.uint8)


def coc_colour(coc: torch.Tensor, max_abs: float) -> np.ndarray:
    """Signed CoC ``(1, H, W)`` → RGB uint8: white in focus, red behind the focus, blue in front."""
    c = (coc[0].cpu().numpy() / max(max_abs, 1e-6)).clip(-1, 1)
    pos, neg = c.clip(0, 1), (-c).clip(0, 1)
    rgb = np.stack([1 - neg, 1 - pos - neg, 1 - pos], -1).clip(0, 1)
    return (rgb * 255 + 0.5).astype(np.uint8)


def sample_grid(samples: Sequence[dict[str, torch.Tensor]]) -> np.ndarray:
    """Rows of ``blurred | left | right | sharp | signed CoC`` → ``H×W×3`` uint8 RGB."""
    rows = []
    for s in samples:
        m = float(s["coc"].abs().max())
        tiles = [_u8(s["blur"]), _u8(s["left"]), _u8(s["right"]), _u8(s["sharp"]), coc_colour(s["coc"], m)]
        names = ["blurred (combined)", "left view", "right view", "sharp target", f"CoC, max |r| {m:.1f} px"]
        rows.append(np.concatenate([label(t, n) for t, n in zip(tiles, names)], 1))
    return np.concatenate(rows, 0)


def before_after(pairs: Sequence[tuple[str, np.ndarray, np.ndarray]], crop: int = 320) -> np.ndarray:
    """Rows ``before | after`` (centre crops of side ``crop``) for ``(name, before, after)`` H×W×3 [0,1]."""
    rows = []
    for name, a, b in pairs:
        h, w = a.shape[:2]
        y, x = max(0, (h - crop) // 2), max(0, (w - crop) // 2)
        ta, tb = _u8(a[y:y + crop, x:x + crop]), _u8(b[y:y + crop, x:x + crop])
        rows.append(np.concatenate([label(ta, f"{name}: input"), label(tb, "output")], 1))
    wmax = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 0), (0, wmax - r.shape[1]), (0, 0)), constant_values=255) for r in rows]
    return np.concatenate(rows, 0)


def save_png(path: str | Path, rgb: np.ndarray) -> Path:
    """Write an RGB uint8 array as PNG."""
    import cv2

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), rgb[:, :, ::-1])
    return path


@torch.no_grad()
def before_after_folder(module: torch.nn.Module, folder: str | Path, out: str | Path, crop: int = 320,
                        max_images: int = 6, max_side: int = 1024) -> Path:
    """Run ``module`` (engine contract) on up to ``max_images`` photos under ``folder`` (downscaled to
    ``max_side``) and save a before/after PNG of centre crops."""
    import cv2

    from defocus_cli.data.datasets import list_images, read_image
    from defocus_cli.train.common import forward_padded

    pairs = []
    for p in list_images(folder)[:max_images]:
        a = read_image(p)
        s = max_side / max(a.shape[:2])
        if s < 1:
            a = cv2.resize(a, (round(a.shape[1] * s), round(a.shape[0] * s)), interpolation=cv2.INTER_AREA)
        x = torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1)))[None]
        b = forward_padded(module, x)[0].clamp(0, 1).permute(1, 2, 0).numpy()
        pairs.append((p.stem, a, b))
    return save_png(out, before_after(pairs, crop))
