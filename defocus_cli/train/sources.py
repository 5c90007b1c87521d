"""Where training batches come from: a pre-generated patch cache, on-the-fly synthetic DP defocus, or a
user's paired folder. One function, :func:`batch_stream`, returns an endless iterator of batch dicts.

Batch dict: ``"blur"``, ``"sharp"`` ``(B, 3, P, P)`` float32 RGB [0, 1]; ``"left"``, ``"right"`` ``(B, 3, P, P)``
and ``"coc"`` ``(B, 1, P, P)`` (signed CoC radius, px) when the source has them (synthetic data always does;
paired folders only with DP view subfolders, never a CoC map).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
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
) -> Iterator[dict[str, torch.Tensor]]:
    """Endless, resumable stream of training batches.

    Exactly one source is used, in this order of preference: ``cache`` (patch-cache files from
    :func:`defocus_cli.data.make_patch_cache`, random ``patch`` sub-crops), ``photos`` (a folder of sharp
    photos → on-the-fly :class:`defocus_cli.data.SyntheticDP`, train split), ``paired`` (a DPDD-style folder,
    :class:`defocus_cli.data.PairedFolder`, random ``patch`` crops; images must be at least ``patch`` px).

    Args:
        start: number of batches already drawn (a resumed run continues the same sequence).
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
        ds = SyntheticDP(photos, patch=patch, seed=seed, split="train", coc_scale=coc_scale)
        log.info("training on synthetic DP defocus from %d photos under %s, %d px", len(ds.paths), photos, patch)
    elif paired is not None:
        ds = PairedFolder(paired, patch=patch, augment=True, seed=seed + start)
        log.info("training on %d pairs under %s, crops of %d px", len(ds), paired, patch)
    else:
        raise InputError("no training data: pass a patch cache, a folder of sharp photos, or a paired folder")
    return batches(ds, batch, seed=seed, start=start)
