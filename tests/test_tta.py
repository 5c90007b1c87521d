"""Flip self-ensemble (``deblur --tta``): the result commutes with flips, whatever the engine."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from defocus_cli.api import deblur_array


class _Skewed(nn.Module):
    """A deliberately direction-dependent engine: adds 0.3 × (right neighbour − pixel) and a vertical ramp."""

    multiple_of = 1
    receptive_field = 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.shape[-2]
        ramp = torch.linspace(0, 0.05, h, dtype=x.dtype).view(1, 1, h, 1)
        return (x + 0.3 * (x.roll(-1, -1) - x) + ramp).clamp(0, 1)


def _px(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0.2, 0.8, (24, 40, 3)).astype(np.float32)


def test_tta_result_commutes_with_flips() -> None:
    px, eng = _px(), _Skewed()
    for axis in (0, 1):
        plain = deblur_array(px, eng, device="cpu", tile=0)
        plain_f = deblur_array(np.flip(px, axis).copy(), eng, device="cpu", tile=0)
        assert not np.allclose(np.flip(plain, axis), plain_f, atol=1e-3)  # the engine alone does not commute
        tta = deblur_array(px, eng, device="cpu", tile=0, tta=True)
        tta_f = deblur_array(np.flip(px, axis).copy(), eng, device="cpu", tile=0, tta=True)
        np.testing.assert_allclose(np.flip(tta, axis), tta_f, atol=1e-5)


def test_tta_of_a_flip_equivariant_engine_changes_nothing() -> None:
    class Symmetric(nn.Module):
        multiple_of = 1
        receptive_field = 1

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * 0.9 + 0.05

    px = _px(1)
    np.testing.assert_allclose(deblur_array(px, Symmetric(), device="cpu", tile=0, tta=True),
                               deblur_array(px, Symmetric(), device="cpu", tile=0), atol=1e-6)


def test_cli_tta_runs_the_engine_on_four_flips(tmp_path, use_engine, monkeypatch) -> None:  # noqa: ANN001
    from PIL import Image
    from typer.testing import CliRunner

    from conftest import smooth_rgb
    from defocus_cli import runtime
    from defocus_cli.cli import app

    use_engine("sharpen")
    calls: list[tuple[int, ...]] = []
    real = runtime.run_tiles

    def counting(module, x, **kw):  # noqa: ANN001, ANN003, ANN202
        calls.append(tuple(x.shape))
        return real(module, x, **kw)

    monkeypatch.setattr(runtime, "run_tiles", counting)
    src = tmp_path / "a.png"
    Image.fromarray(smooth_rgb(32, 48, seed=2)).save(src)
    counts = []
    for n, extra in (("plain", []), ("tta", ["--tta"])):
        calls.clear()
        r = CliRunner().invoke(app, ["deblur", str(src), "-o", str(tmp_path / f"{n}.png"), "-q", *extra])
        assert r.exit_code == 0, r.output
        counts.append(len(calls))
    assert counts == [1, 4]
    plain, tta = (np.asarray(Image.open(tmp_path / f"{n}.png")).astype(int) for n in ("plain", "tta"))
    # the sharpen test engine is flip-symmetric: its ensemble equals its plain result (up to rounding)
    assert plain.shape == tta.shape == (32, 48, 3) and np.abs(plain - tta).max() <= 1
