"""The training scene pool (defocus_cli.data.replay) and SFT-net growth from a smaller file (grow_init)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

from defocus_cli.archs.sftnet import SFTNet
from defocus_cli.data.replay import ScenePool
from defocus_cli.train import TrainOptions, run
from defocus_cli.train.common import export_safetensors
from defocus_cli.train.sftnet import grow_init


def _scene(i: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(i)
    left = torch.rand(3, 24, 24, generator=g) + torch.linspace(0, 10, 24)  # brighter to the right
    # the right view is the left one shifted right by 2 px, so a pair's geometry can be checked after flips
    return {"left": left, "right": torch.roll(left, 2, dims=-1), "coc": torch.full((1, 24, 24), float(i % 7))}


def test_pool_synthesises_refresh_scenes_per_step_and_crops_consistently() -> None:
    calls: list[int] = []

    def make(i: int) -> dict[str, torch.Tensor]:
        calls.append(i)
        return _scene(i)

    pool = ScenePool(make, size=4, refresh=0.5, seed=3)
    b = pool.batch(0, 16, 6)
    assert len(calls) == 4 and {k: tuple(v.shape) for k, v in b.items()} == {
        "left": (6, 3, 16, 16), "right": (6, 3, 16, 16), "coc": (6, 1, 16, 16)}
    for step in range(1, 9):
        pool.batch(step, 16, 2)
    assert len(calls) == 4 + 4  # half a scene per step over 8 steps
    flipped = 0
    for step in range(9, 40):
        b = pool.batch(step, 16, 4)
        for j in range(4):
            left, right = b["left"][j], b["right"][j]
            # a horizontal flip mirrors both views and swaps them: the right view is still the left one
            # shifted right (a flip without the swap would shift it left)
            assert torch.equal(right[..., 2:], left[..., :-2])
            flipped += bool(left[..., -1].mean() < left[..., 0].mean())
    assert 0 < flipped < 31 * 4  # both orientations occur


def test_pool_is_deterministic_and_rejects_oversized_patches() -> None:
    a, b = ScenePool(_scene, size=3, seed=1), ScenePool(_scene, size=3, seed=1)
    for step in range(5):
        x, y = a.batch(step, 8, 3), b.batch(step, 8, 3)
        assert all(torch.equal(x[k], y[k]) for k in x)
    with pytest.raises(ValueError, match="larger than"):
        a.batch(6, 32, 1)
    with pytest.raises(ValueError):
        ScenePool(_scene, size=0)


def test_grow_init_keeps_the_function_and_refuses_other_files(tmp_path: Path) -> None:
    torch.manual_seed(0)
    small = SFTNet(ch=16, n_blocks=2, cond_ch=8, map_ch=8, map_blocks=1)
    for p in small.parameters():  # non-zero output conv, so the check below can fail
        torch.nn.init.normal_(p, std=0.05)
    f = export_safetensors(small, tmp_path / "s.safetensors", arch="sftnet", steps=1, dtype=torch.float32)
    big = SFTNet(ch=16, n_blocks=5, cond_ch=8, map_ch=8, map_blocks=1)
    assert grow_init(big, f) == 3
    x = torch.rand(1, 3, 20, 28)
    with torch.no_grad():
        assert torch.allclose(small(x), big(x), atol=1e-6)
    with pytest.raises(ValueError, match="cannot start"):
        grow_init(SFTNet(ch=8, n_blocks=5, cond_ch=8, map_ch=8, map_blocks=1), f)


def test_sftnet_trainer_with_pool_and_more_blocks_exports_its_config(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    import cv2

    rng = np.random.default_rng(0)
    for i in range(3):
        cv2.imwrite(str(photos / f"p{i}.png"), (rng.random((96, 96, 3)) * 255).astype(np.uint8))
    init = export_safetensors(SFTNet(), tmp_path / "init.safetensors", arch="sftnet", steps=0)
    out = tmp_path / "grown.safetensors"
    opts = TrainOptions(model="sftnet", data=photos, synthetic=True, steps=3, patch=32, batch=2, out=out,
                        run_dir=tmp_path / "run", val_every=100, threads=1, init=init,
                        extra={"pool": 2, "pool_scene": 40, "coc_px": 4, "n_blocks": 9, "syn_val_n": 0,
                               "stages": [0, 0, 1]})
    assert run(opts)["steps"] == 3
    with safe_open(str(out), "pt") as fh:
        assert fh.metadata()["config"] == '{"n_blocks": 9}'
        assert "deblur.blocks.8.conv2.weight" in set(fh.keys())
    from defocus_cli.weights import load_model

    for name in (None, "sftnet"):  # a registry name with a file: the file's config still decides
        assert len(load_model(name, weights_file=out).module.deblur.blocks) == 9
