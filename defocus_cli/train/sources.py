"""Where training batches come from: a pre-generated patch cache, on-the-fly synthetic DP defocus, or a
user's paired folder. One function, :func:`batch_stream`, returns an endless iterator of batch dicts.

Batch dict: ``"blur"``, ``"sharp"`` ``(B, 3, P, P)`` float32 RGB [0, 1]; ``"left"``, ``"right"`` ``(B, 3, P, P)``
and ``"coc"`` ``(B, 1, P, P)`` (signed CoC radius, px) when the source has them (synthetic data always does;
paired folders only with DP view subfolders, never a CoC map). Every tensor is on ``device``: synthetic data is
synthesised there (:class:`defocus_cli.data.SyntheticDP` with ``device``), cached and paired patches are moved.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import torch

from defocus_cli.errors import InputError

log = logging.getLogger(__name__)

__all__ = ["batch_stream"]


def batch_stream(
    *,
    cache: Sequence[str | Path] = (),
    photos: str | Path | None = None,
    paired: str | Path | None = None,
    patch: int = 128,
    batch: int = 4,
    seed: int = 0,
    start: int = 0,
    coc_scale: float = 1.0,
    device: str | torch.device = "cpu",
    coc_px: float = 0.0,
    in_focus_prob: float = 0.0,
    highlight_prob: float = 0.0,
) -> Iterator[dict[str, torch.Tensor]]:
    """Endless, resumable stream of training batches.

    Exactly one source is used, in this order of preference: ``cache`` (patch-cache files from
    :func:`defocus_cli.data.make_patch_cache`, random ``patch`` sub-crops), ``photos`` (a folder of sharp
    photos → on-the-fly :class:`defocus_cli.data.SyntheticDP`, train split), ``paired`` (a DPDD-style folder,
    :class:`defocus_cli.data.PairedFolder`, random ``patch`` crops; images must be at least ``patch`` px).

    Args:
        start: number of batches already drawn (a resumed run continues the same sequence).
        device: where the batches are delivered (and synthetic samples are made): ``"cpu"``, ``"cuda:0"`` ...
        coc_px, in_focus_prob, highlight_prob: camera-true synthesis knobs of :class:`~defocus_cli.data.SyntheticDP`
            (``coc_px`` 0 = the photo-relative ``coc_scale`` range); used with ``photos`` only.
    """
    from defocus_cli.data import PairedFolder, PatchCache, SyntheticDP
    from defocus_cli.train.common import batches

    if cache:
        files = [Path(p) for p in cache]
        missing = [str(p) for p in files if not p.is_file()]
        if missing:
            raise InputError(f"patch cache file(s) not found: {', '.join(missing)}; create them with make_patch_cache")
        ds = PatchCache(files, crop=patch, augment=True, seed=seed + start)
        log.info("training on %d cached patches (%s), crops of %d px", len(ds), ", ".join(map(str, files)), patch)
    elif photos is not None:
        ds = SyntheticDP(photos, patch=patch, seed=seed, split="train", coc_scale=coc_scale, device=device,
                         coc_px=float(coc_px) or None, in_focus_prob=float(in_focus_prob),
                         highlight_prob=float(highlight_prob))
        log.info("training on synthetic DP defocus from %d photos under %s, %d px", len(ds.paths), photos, patch)
    elif paired is not None:
        ds = PairedFolder(paired, patch=patch, augment=True, seed=seed + start)
        log.info("training on %d pairs under %s, crops of %d px", len(ds), paired, patch)
    else:
        raise InputError("no training data: pass a patch cache, a folder of sharp photos, or a paired folder")
    stream = batches(ds, batch, seed=seed, start=start)
    return stream if torch.device(device).type == "cpu" else _on_device(stream, torch.device(device))


def _on_device(stream: Iterable[dict[str, torch.Tensor]], device: torch.device) -> Iterator[dict[str, torch.Tensor]]:
    """``stream``'s batches with every tensor on ``device`` (a no-op for tensors already there)."""
    for b in stream:
        yield {k: v.to(device, non_blocking=True) for k, v in b.items()}
