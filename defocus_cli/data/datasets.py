"""Datasets: synthetic DP defocus patches from sharp photos, a pre-generated patch cache, paired folders.

Every sample is a dict of float32 tensors: ``"blur"``, ``"sharp"`` ``(3, P, P)`` RGB in [0, 1], plus
``"left"``, ``"right"`` ``(3, P, P)`` and ``"coc"`` ``(1, P, P)`` (signed CoC radius, px) where available.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from defocus_cli.data.synth import SynthParams, margin_for, max_coc_for, synthesize
from defocus_cli.errors import InputError
from defocus_cli.io.formats import scan_folder
from defocus_cli.io.read import read_samples

log = logging.getLogger(__name__)

KEYS = ("blur", "left", "right", "sharp", "coc")


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file as ``H×W×3`` float32 RGB in [0, 1] (8- or 16-bit; grey is expanded, alpha dropped),
    in stored orientation (EXIF orientation not applied), decoded by :func:`defocus_cli.io.read.read_samples`."""
    im, depth = read_samples(path, upright=False)
    scale = 65535.0 if depth == 16 else 255.0
    if im.shape[2] == 1:
        im = np.repeat(im, 3, axis=2)
    return im.astype(np.float32) / scale


def list_images(root: str | Path) -> list[Path]:
    """Image files under ``root`` (recursive, :func:`defocus_cli.io.formats.scan_folder`), sorted."""
    root = Path(root)
    if root.is_file():
        return [root]
    return sorted(scan_folder(root, recursive=True))


def photo_split(root: str | Path, test_fraction: float = 0.1, seed: int = 0) -> tuple[list[Path], list[Path]]:
    """Deterministic (train, test) split of the photos under ``root``: a seeded ~``test_fraction`` held out."""
    photos = list_images(root)
    if not photos:
        raise InputError(f"no photos under {root}: expected PNG/JPEG/WebP files")
    perm = np.random.default_rng(seed).permutation(len(photos))
    n_test = max(1, int(round(len(photos) * test_fraction))) if len(photos) > 1 else 0
    test = sorted(photos[i] for i in perm[:n_test])
    train = sorted(photos[i] for i in perm[n_test:])
    return train, test


def _resolve_photos(photos: str | Path | Sequence[str | Path], split: str) -> list[Path]:
    if isinstance(photos, (str, Path)):
        if split == "all":
            return list_images(photos)
        train, test = photo_split(photos)
        return train if split == "train" else test
    return [Path(p) for p in photos]


class SyntheticDP(Dataset):
    """Synthetic dual-pixel defocus patches generated on the fly from sharp photos.

    Map-style and deterministic: item ``i`` depends only on ``(seed, i)``; ``len`` is ``length``.

    Args:
        photos: a folder (split by :func:`photo_split` according to ``split``) or a list of files.
        patch: output patch side ``P`` (px).
        seed: base seed.
        split: ``"train"`` | ``"test"`` | ``"all"`` (only used when ``photos`` is a folder).
        coc_scale: multiplies the maximum CoC radius (25 px at 1680 px long side, scaled to each photo).
        length: nominal number of items.
        device: where the blur is computed (``"cpu"`` or a CUDA device); outputs stay there.
        noise: add Poisson–Gaussian sensor noise (one realisation shared by target and views).
        coc_px: largest |CoC| radius in px of the crop itself, whatever the photo's size (overrides
            ``coc_scale``); 16 px matches the real DPDD pairs at 840×560 (``weights/sftnet.md``).
        in_focus_prob: fraction of nearly in-focus samples (see :class:`SynthParams`).
        highlight_prob: fraction of samples whose highlights clip after the blur.
        min_blur_fraction: the per-sample largest |CoC| is drawn in ``[min_blur_fraction, 1] × max``.
        noise_scale: multiplies the sensor noise's standard deviation.
        subpixel: fractional blur radii with anti-aliased kernels (see :class:`SynthParams`).
        grid: :meth:`scene` synthesises one ``grid·P`` scene and cuts ``grid²`` patches from it (one blur
            of a larger scene is several times cheaper per patch than ``grid²`` small ones).
    """

    def __init__(self, photos: str | Path | Sequence[str | Path], patch: int = 128, seed: int = 0,
                 split: str = "train", coc_scale: float = 1.0, length: int = 10**6,
                 device: str | torch.device = "cpu", noise: bool = True, coc_px: float | None = None,
                 in_focus_prob: float = 0.0, highlight_prob: float = 0.0, grid: int = 1,
                 min_blur_fraction: float = 0.15, noise_scale: float = 1.0, subpixel: bool = False) -> None:
        self.paths = _resolve_photos(photos, split)
        if not self.paths:
            raise InputError(f"no photos for split {split!r}: expected image files")
        self.patch = int(patch)
        self.seed = int(seed)
        self.coc_scale = float(coc_scale)
        self.length = int(length)
        self.device = torch.device(device)
        self.noise = noise
        self.coc_px = coc_px
        self.in_focus_prob = float(in_focus_prob)
        self.highlight_prob = float(highlight_prob)
        self.grid = max(1, int(grid))
        self.min_blur_fraction = float(min_blur_fraction)
        self.noise_scale = float(noise_scale)
        self.subpixel = bool(subpixel)
        self._cache: dict[int, torch.Tensor] = {}

    def __len__(self) -> int:
        return self.length

    def _photo(self, j: int) -> torch.Tensor:
        if j not in self._cache:
            self._cache[j] = torch.from_numpy(read_image(self.paths[j])).permute(2, 0, 1).contiguous()
        return self._cache[j]

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return self._synth(np.random.default_rng([self.seed, int(i)]), self.patch)

    def scene(self, i: int) -> list[dict[str, torch.Tensor]]:
        """``grid²`` patches ``(3, P, P)`` cut from one synthesised ``grid·P`` scene (deterministic in i)."""
        g = self.grid
        big = self._synth(np.random.default_rng([self.seed, 7, int(i)]), self.patch * g)
        p = self.patch
        return [{k: v[:, y * p:(y + 1) * p, x * p:(x + 1) * p].contiguous() for k, v in big.items()}
                for y in range(g) for x in range(g)]

    def _synth(self, rng: np.random.Generator, patch: int) -> dict[str, torch.Tensor]:
        j = int(rng.integers(0, len(self.paths)))
        photo = self._photo(j)
        h, w = photo.shape[-2:]
        max_coc = float(self.coc_px) if self.coc_px else max_coc_for(max(h, w), self.coc_scale)
        m = margin_for(max_coc)
        s = patch + 2 * m
        if h < s or w < s:
            pad_w, pad_h = max(0, s - w), max(0, s - h)
            mode = "reflect" if pad_w < w and pad_h < h else "replicate"
            photo = torch.nn.functional.pad(photo[None], (0, pad_w, 0, pad_h), mode=mode)[0]
            h, w = photo.shape[-2:]
        y = int(rng.integers(0, h - s + 1))
        x = int(rng.integers(0, w - s + 1))
        crop = photo[:, y:y + s, x:x + s]
        if rng.random() < 0.5:
            crop = crop.flip(-2)
        if rng.random() < 0.5:
            crop = crop.flip(-1)
        if rng.random() < 0.5:  # transposing the scene keeps DP disparity horizontal (applied before blur)
            crop = crop.transpose(-1, -2)
        params = SynthParams(max_coc=max_coc, noise=self.noise, in_focus_prob=self.in_focus_prob,
                             highlight_prob=self.highlight_prob, min_blur_fraction=self.min_blur_fraction,
                             noise_scale=self.noise_scale, subpixel=self.subpixel)
        return synthesize(crop.to(self.device), m, rng, params)


def _collate(samples: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    return {k: torch.stack([s[k] for s in samples]) for k in samples[0]}


def make_patch_cache(out: str | Path, n: int, patch: int = 128, seed: int = 0,
                     photos: str | Path | Sequence[str | Path] = "", split: str = "train",
                     coc_scale: float = 1.0, start: int = 0) -> Path:
    """Pre-generate ``n`` synthetic patches once and save them with ``torch.save`` (loadable with
    ``weights_only=True``): images as uint8 ``(n, 3, P, P)``, ``coc`` as float16 ``(n, 1, P, P)``.
    Returns the path. Items are ``SyntheticDP(...)[start:start + n]``."""
    ds = SyntheticDP(photos, patch=patch, seed=seed, split=split, coc_scale=coc_scale)
    bank: dict[str, torch.Tensor] = {
        k: torch.empty((n, 3, patch, patch), dtype=torch.uint8) for k in ("blur", "left", "right", "sharp")
    }
    bank["coc"] = torch.empty((n, 1, patch, patch), dtype=torch.float16)
    for i in range(n):
        smp = ds[start + i]
        for k in ("blur", "left", "right", "sharp"):
            bank[k][i] = (smp[k].cpu() * 255 + 0.5).clamp(0, 255).to(torch.uint8)
        bank["coc"][i] = smp["coc"].cpu().half()
        if (i + 1) % 200 == 0:
            log.info("patch cache: %d/%d", i + 1, n)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(out.suffix + ".tmp")
    torch.save({**bank, "patch": torch.tensor(patch), "seed": torch.tensor(seed),
                "coc_scale": torch.tensor(coc_scale)}, tmp)
    tmp.replace(out)
    return out


class PatchCache(Dataset):
    """A bank written by :func:`make_patch_cache` (or a list of such files), with random flips.

    Augmentation keeps DP geometry: a vertical flip keeps L/R; a horizontal flip swaps L and R.
    Item ``i`` → float32 sample dict (``crop`` < P takes a random sub-crop)."""

    def __init__(self, paths: str | Path | Sequence[str | Path], crop: int | None = None,
                 augment: bool = True, seed: int = 0) -> None:
        if isinstance(paths, (str, Path)):
            paths = [paths]
        banks = [torch.load(str(p), weights_only=True, mmap=True) for p in paths]
        self.bank = {k: torch.cat([b[k] for b in banks]) for k in KEYS}
        self.patch = int(self.bank["blur"].shape[-1])
        self.crop = crop
        self.augment = augment
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return int(self.bank["blur"].shape[0])

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        s = {k: (self.bank[k][i].float() / 255.0 if k != "coc" else self.bank[k][i].float()) for k in KEYS}
        if self.crop and self.crop < self.patch:
            y, x = (int(v) for v in self.rng.integers(0, self.patch - self.crop + 1, size=2))
            s = {k: v[:, y:y + self.crop, x:x + self.crop] for k, v in s.items()}
        if self.augment:
            if self.rng.random() < 0.5:
                s = {k: v.flip(-2) for k, v in s.items()}
            if self.rng.random() < 0.5:
                s = {k: v.flip(-1) for k, v in s.items()}
                s["left"], s["right"] = s["right"], s["left"]
        return {k: v.contiguous() for k, v in s.items()}

    def batch(self, idx: Sequence[int]) -> dict[str, torch.Tensor]:
        """Stack the samples ``idx`` into ``(B, C, P, P)`` tensors."""
        return _collate([self[int(i)] for i in idx])


def synthetic_test_set(n: int = 32, seed: int = 1234, patch: int = 256,
                       photos: str | Path = "", coc_scale: float = 1.0) -> dict[str, torch.Tensor]:
    """The fixed seeded synthetic test set: ``n`` patches from the held-out photos of ``photos``
    (``photo_split`` test part), stacked to ``(n, C, P, P)`` float32 tensors."""
    ds = SyntheticDP(photos, patch=patch, seed=seed, split="test", coc_scale=coc_scale)
    return _collate([ds[i] for i in range(n)])


_PAIR_DIRS = {
    "blur": ("inputC", "input", "blurred", "blur", "source"),
    "sharp": ("target", "sharp", "gt", "targetC"),
    "left": ("inputL", "left"),
    "right": ("inputR", "right"),
}


class PairedFolder(Dataset):
    """DPDD-style paired folders: ``root/{inputC|input|blurred|blur|source}/NAME`` and
    ``root/{target|sharp|gt}/NAME`` (+ optional ``{inputL|left}``, ``{inputR|right}``), matched by file stem.

    Item → ``{"blur", "sharp"[, "left", "right"], "name"}``: float32 ``(3, H, W)`` in [0, 1] (a random
    ``patch``×``patch`` crop when ``patch`` is set; flips when ``augment``)."""

    def __init__(self, root: str | Path, patch: int | None = None, augment: bool = False, seed: int = 0) -> None:
        root = Path(root)
        self.dirs: dict[str, Path] = {}
        for key, names in _PAIR_DIRS.items():
            for nm in names:
                if (root / nm).is_dir():
                    self.dirs[key] = root / nm
                    break
        if "blur" not in self.dirs or "sharp" not in self.dirs:
            raise InputError(
                f"{root} is not a paired folder: expected subfolders input|blurred|inputC and target|sharp|gt")
        sharp = {p.stem: p for p in list_images(self.dirs["sharp"])}
        self.items: list[dict[str, Path]] = []
        extra = {k: {p.stem: p for p in list_images(d)} for k, d in self.dirs.items() if k in ("left", "right")}
        for p in list_images(self.dirs["blur"]):
            if p.stem in sharp:
                it = {"blur": p, "sharp": sharp[p.stem]}
                for k, m in extra.items():
                    if p.stem in m:
                        it[k] = m[p.stem]
                self.items.append(it)
        if not self.items:
            raise InputError(f"no matching blurred/sharp file names in {root}")
        self.patch = patch
        self.augment = augment
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        it = self.items[i]
        s = {k: torch.from_numpy(read_image(p)).permute(2, 0, 1).contiguous() for k, p in it.items()}
        if self.patch:
            h, w = s["blur"].shape[-2:]
            ph, pw = min(self.patch, h), min(self.patch, w)
            y = int(self.rng.integers(0, h - ph + 1))
            x = int(self.rng.integers(0, w - pw + 1))
            s = {k: v[:, y:y + ph, x:x + pw] for k, v in s.items()}
        if self.augment:
            if self.rng.random() < 0.5:
                s = {k: v.flip(-2) for k, v in s.items()}
            if self.rng.random() < 0.5:
                s = {k: v.flip(-1) for k, v in s.items()}
                if "left" in s and "right" in s:
                    s["left"], s["right"] = s["right"], s["left"]
        out: dict = {k: v.contiguous() for k, v in s.items()}
        out["name"] = it["blur"].stem
        return out


def lfdof_pairs(root: str | Path) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """The LFDOF-style validation pairs ``root/input/*.png`` ↔ ``root/target/*.png`` as
    ``(name, input H×W×3 float32 [0,1] RGB, target H×W×3)``, sorted by name."""
    ds = PairedFolder(root)
    out = []
    for it in ds.items:
        out.append((it["blur"].stem, read_image(it["blur"]), read_image(it["sharp"])))
    return out


def seed_for(name: str) -> int:
    """A stable 32-bit seed from a string (for per-run seeding)."""
    return zlib.crc32(name.encode()) & 0xFFFFFFFF


__all__ = [
    "SyntheticDP", "PatchCache", "PairedFolder", "make_patch_cache", "synthetic_test_set", "lfdof_pairs",
    "photo_split", "list_images", "read_image", "seed_for",
]
