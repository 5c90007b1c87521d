"""Synthetic dual-pixel defocus data, patch cache and paired folders (defocus_cli.data)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from conftest import SHARED, needs_shared
from defocus_cli.archs._dpkernels import kernel_size
from defocus_cli.data import (
    PairedFolder,
    PatchCache,
    SynthParams,
    SyntheticDP,
    dp_kernels,
    lfdof_pairs,
    make_patch_cache,
    photo_split,
    synthesize,
)
from defocus_cli.data.synth import layered_dp_blur, margin_for
from defocus_cli.errors import InputError


def _texture(seed: int, h: int, w: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = cv2.GaussianBlur(rng.random((h, w, 3)).astype(np.float32), (0, 0), 1.0)
    return (img - img.min()) / (img.max() - img.min())


def _write(path: Path, rgb01: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), (rgb01[:, :, ::-1] * 255 + 0.5).astype(np.uint8))
    return path


@pytest.fixture()
def photos(tmp_path: Path) -> Path:
    for i in range(10):
        _write(tmp_path / "photos" / f"p{i}.png", _texture(i, 90, 120))
    return tmp_path / "photos"


@pytest.mark.parametrize("coc", [1, 3, 7, -5])
def test_kernels_normalised_sized_and_mirrored(coc: int) -> None:
    c, left, right = dp_kernels(coc, order=3, cutoff_factor=2.5, beta=0.1)
    assert c.shape == left.shape == right.shape == (kernel_size(coc),) * 2
    for k in (c, left, right):
        assert k.min() >= 0 and abs(k.sum() - 1) < 1e-9
    np.testing.assert_allclose(right, np.flip(left, (0, 1)), atol=1e-12)
    # the left kernel's mass sits right of centre behind the focus, left of it in front (views swap)
    cols = np.arange(c.shape[1]) - c.shape[1] // 2
    centroid = float((left.sum(0) * cols).sum())
    assert (centroid > 0) == (coc > 0)


def test_kernel_zero_is_identity() -> None:
    for k in dp_kernels(0):
        assert k.shape == (1, 1) and k[0, 0] == 1.0


def test_butterworth_rim_brighter_than_centre() -> None:
    c, _, _ = dp_kernels(9, order=6, cutoff_factor=2.5, beta=0.1)
    mid = c.shape[0] // 2
    assert c[mid, mid] < c[mid, mid + 7]


def test_layered_blur_identity_and_flat_field() -> None:
    img = torch.from_numpy(_texture(1, 48, 48)).permute(2, 0, 1).contiguous()
    views = layered_dp_blur(img, torch.zeros(48, 48), 3, 2.5, 0.1)
    for v in views:
        torch.testing.assert_close(v, img, atol=1e-5, rtol=0)
    flat = torch.full((3, 48, 48), 0.4)
    coc = torch.linspace(-4, 4, 48)[None].expand(48, 48).contiguous()
    torch.testing.assert_close(layered_dp_blur(flat, coc, 6, 2.0, 0.2), torch.full((3, 3, 48, 48), 0.4),
                               atol=1e-4, rtol=0)


def test_dual_pixel_views_shift_in_opposite_directions() -> None:
    img = torch.zeros(3, 64, 64)
    img[:, :, 32:] = 1.0  # vertical edge
    for coc_val in (5.0, -5.0):
        v = layered_dp_blur(img, torch.full((64, 64), coc_val), 3, 2.5, 0.1)
        row = v[:, 0, 32]  # (views, W)
        half = [int((r[16:48] < 0.5).sum()) for r in row]  # edge position per view (away from the wrap)
        assert half[1] != half[2]
        assert (half[1] > half[2]) == (coc_val > 0) or (half[1] < half[2]) == (coc_val < 0)
        assert min(half[1], half[2]) <= half[0] <= max(half[1], half[2])


def test_synthesize_shapes_ranges_and_sign(photos: Path) -> None:
    img = torch.from_numpy(_texture(3, 80, 80)).permute(2, 0, 1)
    m = margin_for(6.0)
    crop = torch.nn.functional.pad(img[None], (m, m, m, m), mode="reflect")[0][:, :64 + 2 * m, :64 + 2 * m]
    s = synthesize(crop, m, np.random.default_rng(0), SynthParams(max_coc=6.0))
    for k in ("blur", "left", "right", "sharp"):
        assert s[k].shape == (3, 64, 64) and s[k].dtype == torch.float32
        assert float(s[k].min()) >= 0 and float(s[k].max()) <= 1
    assert s["coc"].shape == (1, 64, 64)
    assert float(s["coc"].abs().max()) <= 6.0 + 1e-4


def _crop(seed: int, p: int, max_coc: float) -> tuple[torch.Tensor, int]:
    img = torch.from_numpy(_texture(seed, p + 40, p + 40)).permute(2, 0, 1)
    m = margin_for(max_coc)
    return img[:, :p + 2 * m, :p + 2 * m].contiguous(), m


@pytest.mark.parametrize("shared", [True, False])
def test_in_focus_capture_equals_target_with_shared_noise(shared: bool) -> None:
    # |CoC| < 0.5 everywhere: every pixel is in focus, so with the camera-true pairing the blurry capture
    # (noise and all) must equal the target exactly; with independent noise it must not
    crop, m = _crop(4, 48, 0.4)
    s = synthesize(crop, m, np.random.default_rng(3), SynthParams(max_coc=0.4, noise_in_target=shared))
    diff = float((s["blur"] - s["sharp"]).abs().max())
    assert (diff < 1e-6) == shared
    # the target carries the noise too: it is not the clean tone-mapped crop
    clean = synthesize(crop, m, np.random.default_rng(3), SynthParams(max_coc=0.4, noise=False))
    assert float((s["sharp"] - clean["sharp"]).abs().mean()) > (1e-4 if shared else -1)


def test_in_focus_prob_bounds_the_blur() -> None:
    crop, m = _crop(5, 48, 12.0)
    for seed in range(4):
        s = synthesize(crop, m, np.random.default_rng(seed), SynthParams(max_coc=12.0, in_focus_prob=1.0))
        assert float(s["coc"].abs().max()) <= 1.5 + 1e-5


def test_highlights_clip_into_saturated_discs() -> None:
    img = torch.full((3, 100, 100), 0.2)
    img[:, 48:52, 48:52] = 1.0  # a small white light source
    m = margin_for(8.0)
    crop = img[:, :64 + 2 * m, :64 + 2 * m].contiguous()
    kw = dict(max_coc=8.0, min_blur_fraction=1.0, noise=False, camera=False)
    gains, sat = [], []
    for seed in range(12):
        lit = synthesize(crop, m, np.random.default_rng(seed), SynthParams(highlight_prob=1.0, **kw))
        plain = synthesize(crop, m, np.random.default_rng(seed), SynthParams(highlight_prob=0.0, **kw))
        if float(lit["coc"][0, 48 - m + 1, 48 - m + 1].abs()) < 3:  # the source is (nearly) in focus
            continue
        gains.append(float(lit["blur"].sum() - plain["blur"].sum()))
        sat.append(float((lit["blur"] >= 0.999).float().sum() - (plain["blur"] >= 0.999).float().sum()))
        assert float(lit["sharp"].max()) <= 1.0
    # boosted sources spread more light than white-clipped ones, and saturate part of their discs
    assert len(gains) >= 3 and min(gains) >= 0 and max(gains) > 5.0
    assert max(sat) > 0


def test_scene_cuts_grid_patches_deterministically(photos: Path) -> None:
    ds = SyntheticDP(photos, patch=24, seed=2, split="all", coc_px=4.0, grid=2)
    a, b = ds.scene(3), ds.scene(3)
    assert len(a) == 4
    for pa, pb in zip(a, b):
        assert set(pa) == {"blur", "left", "right", "sharp", "coc"}
        assert pa["blur"].shape == (3, 24, 24) and pa["coc"].shape == (1, 24, 24)
        for k in pa:
            assert torch.equal(pa[k], pb[k])
    assert not torch.equal(a[0]["sharp"], a[1]["sharp"])  # different quarters of one scene
    assert float(max(p["coc"].abs().max() for p in a)) <= 4.0 + 1e-4  # coc_px is absolute


def test_synthetic_dataset_is_deterministic(photos: Path) -> None:
    ds = SyntheticDP(photos, patch=40, seed=5, split="all", coc_scale=2.0)
    a, b = ds[7], ds[7]
    for k in a:
        assert torch.equal(a[k], b[k])
    c = ds[8]
    assert not torch.equal(a["blur"], c["blur"])
    assert float((a["blur"] - a["sharp"]).abs().mean()) > 0


def test_photo_split_is_seeded_and_disjoint(photos: Path) -> None:
    train, test = photo_split(photos)
    assert len(test) == 1 and len(train) == 9
    assert not set(train) & set(test)
    assert photo_split(photos) == (train, test)


def test_patch_cache_round_trip_and_lr_swap(photos: Path, tmp_path: Path) -> None:
    out = make_patch_cache(tmp_path / "c.pt", 3, patch=32, seed=1, photos=photos, split="all", coc_scale=2.0)
    raw = torch.load(out, weights_only=True)
    assert raw["blur"].dtype == torch.uint8 and raw["blur"].shape == (3, 3, 32, 32)
    assert raw["coc"].dtype == torch.float16
    ref = SyntheticDP(photos, patch=32, seed=1, split="all", coc_scale=2.0)[1]
    plain = PatchCache(out, augment=False)[1]
    assert float((plain["blur"] - ref["blur"]).abs().max()) <= 1 / 255 + 1e-6
    ds = PatchCache(out, augment=True, seed=0)
    for _ in range(20):  # a horizontal flip must swap the views
        s = ds[0]
        if torch.allclose(s["sharp"], plain_0 := PatchCache(out, augment=False)[0]["sharp"]):
            continue
        if torch.allclose(s["sharp"], plain_0.flip(-1)):
            assert torch.allclose(s["left"], PatchCache(out, augment=False)[0]["right"].flip(-1))
            break
    assert PatchCache(out, crop=16).batch([0, 2])["blur"].shape == (2, 3, 16, 16)


def test_paired_folder_and_lfdof_pairs(tmp_path: Path) -> None:
    root = tmp_path / "pairs"
    for n in ("a", "b"):
        _write(root / "input" / f"{n}.png", _texture(1, 20, 30))
        _write(root / "target" / f"{n}.png", _texture(2, 20, 30))
        _write(root / "left" / f"{n}.png", _texture(3, 20, 30))
        _write(root / "right" / f"{n}.png", _texture(4, 20, 30))
    _write(root / "input" / "orphan.png", _texture(5, 20, 30))
    ds = PairedFolder(root)
    assert len(ds) == 2
    it = ds[0]
    assert it["name"] == "a" and set(it) == {"blur", "sharp", "left", "right", "name"}
    assert it["blur"].shape == (3, 20, 30)
    assert PairedFolder(root, patch=16)[1]["sharp"].shape == (3, 16, 16)
    pairs = lfdof_pairs(root)
    assert [p[0] for p in pairs] == ["a", "b"] and pairs[0][1].shape == (20, 30, 3)
    with pytest.raises(InputError):
        PairedFolder(tmp_path / "photos_missing")


@needs_shared
def test_shared_photos_hold_out_ten_percent() -> None:
    train, test = photo_split(SHARED / "data" / "sharp")
    assert len(test) == round(0.1 * (len(train) + len(test)))
    assert len(train) + len(test) >= 300


def test_noise_scale_scales_the_noise() -> None:
    crop, m = _crop(6, 48, 4.0)
    clean = synthesize(crop, m, np.random.default_rng(9), SynthParams(max_coc=4.0, noise=False))
    amp = []
    for k in (0.0, 0.5, 1.0):
        s = synthesize(crop, m, np.random.default_rng(9), SynthParams(max_coc=4.0, noise_scale=k))
        amp.append(float((s["blur"] - clean["blur"]).abs().mean()))
    assert amp[0] < 1e-6 < amp[1] < amp[2]
    assert 0.3 < amp[1] / amp[2] < 0.7  # roughly proportional (the tone curve bends it a little)


def test_subpixel_kernels_grow_continuously_from_a_delta() -> None:
    """Fractional CoC radii (the ``subpixel`` synthesis): each kernel sums to 1 and is centred, L and R mirror
    each other, a radius below 1/8 px is a delta, the spread grows monotonically with the radius (no jumps
    between the integer levels the plain model knows), and at integer radii it matches :func:`dp_kernels`'s."""
    from defocus_cli.archs._dpkernels import dp_kernels, dp_kernels_subpixel, kernel_size_subpixel

    def spread(k: np.ndarray) -> float:
        c = k.shape[0] // 2
        yy, xx = np.mgrid[: k.shape[0], : k.shape[1]] - c
        return float(np.sqrt((k * (yy**2 + xx**2)).sum()))

    assert dp_kernels_subpixel(0.1)[0].shape == (1, 1)
    radii = np.arange(0.25, 6.01, 0.25)
    spreads = []
    for r in radii:
        comb, left, right = dp_kernels_subpixel(r)
        assert comb.shape[0] == kernel_size_subpixel(r) and comb.shape[0] % 2 == 1
        for k in (comb, left, right):
            assert abs(k.sum() - 1) < 1e-9
        np.testing.assert_allclose(right, left[::-1, ::-1])
        np.testing.assert_allclose(comb, comb[::-1, ::-1], atol=1e-12)
        spreads.append(spread(comb))
    assert np.all(np.diff(spreads) > 0)
    for r in (2, 4, 6):
        assert abs(spreads[int(r / 0.25) - 1] - spread(dp_kernels(r)[0])) < 0.15 * r
    neg = dp_kernels_subpixel(-1.5)
    np.testing.assert_allclose(neg[1], dp_kernels_subpixel(1.5)[2])


def test_subpixel_synthesis_makes_blur_between_the_integer_levels() -> None:
    from defocus_cli.data.synth import quantise_coc

    q = quantise_coc(torch.tensor([0.1, 0.4, 1.3, 2.2, 3.9, -5.4]), subpixel=True)
    assert q.tolist() == [0.0, 0.5, 1.25, 2.0, 4.0, -5.0]
    assert quantise_coc(torch.tensor([0.4, 1.3]), subpixel=False).tolist() == [0.0, 1.0]
    img = torch.zeros(3, 48, 48)
    img[:, :, 24:] = 1.0  # a vertical step edge
    blurred = {c: layered_dp_blur(img, torch.full((48, 48), c), 3, 2.5, 0.1, subpixel=True)[0, 0, 24]
               for c in (0.0, 0.5, 1.0)}
    edge = {c: float((v[20:28] - img[0, 24, 20:28]).abs().sum()) for c, v in blurred.items()}
    assert edge[0.0] < 1e-6 < edge[0.5] < edge[1.0]
    integer = layered_dp_blur(img, torch.full((48, 48), 0.5), 3, 2.5, 0.1)[0, 0, 24]
    assert float((integer[20:28] - img[0, 24, 20:28]).abs().sum()) < 1e-6  # the integer model rounds 0.5 to 0
