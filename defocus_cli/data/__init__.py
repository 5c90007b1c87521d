"""Training data: synthetic dual-pixel (DP) defocus from sharp photos, and paired folders.

Stable API (used by the trainers in :mod:`defocus_cli.train`)::

    from defocus_cli.data import (SyntheticDP, PatchCache, PairedFolder, make_patch_cache,
                                  synthetic_test_set, lfdof_pairs, photo_split, read_image, dp_kernels)

* ``SyntheticDP(photos, patch=128, seed=0, split="train", coc_scale=1.0, length=10**6, device="cpu",
  noise=True)`` — map-style ``Dataset``; item ``i`` (deterministic in ``(seed, i)``) is a dict
  ``{"blur", "left", "right", "sharp": (3, P, P) float32 RGB [0, 1], "coc": (1, P, P) float32 signed CoC
  radius in px (+ behind the focal plane, − in front)}``. ``photos``: a folder (split into train / held-out
  test by ``photo_split``, seeded ~10 % held out) or a list of files. Max |CoC| = 25 px at 1680 px long side,
  scaled to each photo's size × ``coc_scale``.
* ``make_patch_cache(out, n, patch=128, seed=0, photos=DIR, split="train", coc_scale=1.0, start=0) -> Path``
  — pre-generates ``n`` patches once into a ``torch.save`` file (uint8 images, float16 CoC).
* ``PatchCache(paths, crop=None, augment=True, seed=0)`` — ``Dataset`` over one or more cache files (memory
  mapped; random sub-crop ``crop``; flips, a horizontal flip swaps L/R); ``.batch(idx)`` stacks
  ``(B, C, P, P)`` tensors.
* ``synthetic_test_set(n=32, seed=1234, patch=256, photos=DIR) -> dict[str, Tensor (n, C, P, P)]`` — the fixed
  held-out synthetic test set (test-split photos only).
* ``PairedFolder(root, patch=None, augment=False, seed=0)`` — DPDD-style folders
  ``{inputC|input|blurred|blur|source}/`` + ``{target|sharp|gt}/`` (+ ``inputL|left``, ``inputR|right``);
  items ``{"blur", "sharp"[, "left", "right"]: (3, H, W) float32, "name": str}``.
* ``lfdof_pairs(root) -> list[(name, input H×W×3 float32, target H×W×3 float32)]``.
* ``dp_kernels(coc, order=3, cutoff_factor=2.5, beta=0.1, smooth=7) -> (combined, left, right)`` float64
  kernels of Abuolaim et al. (ICCV 2021).
* ``synthesize(crop, margin, rng, SynthParams)`` — the generator for one crop (see :mod:`.synth`).
"""

from defocus_cli.archs._dpkernels import dp_kernels
from defocus_cli.data.datasets import (
    PairedFolder,
    PatchCache,
    SyntheticDP,
    lfdof_pairs,
    list_images,
    make_patch_cache,
    photo_split,
    read_image,
    synthetic_test_set,
)
from defocus_cli.data.synth import SynthParams, max_coc_for, synthesize

__all__ = [
    "SyntheticDP", "PatchCache", "PairedFolder", "make_patch_cache", "synthetic_test_set", "lfdof_pairs",
    "photo_split", "list_images", "read_image", "dp_kernels", "SynthParams", "synthesize", "max_coc_for",
]
