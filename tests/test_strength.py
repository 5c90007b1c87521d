"""``--strength`` / ``deblur_array(strength=...)``: blend the restored detail with the input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from conftest import _make_engine
from defocus_cli.api import check_strength, deblur_array, load_restorer, make_deblur_fn
from defocus_cli.cli import app
from defocus_cli.errors import UsageError


@pytest.fixture(scope="module")
def pixels() -> np.ndarray:
    rng = np.random.default_rng(3)
    return rng.uniform(0.2, 0.8, (24, 20, 3)).astype(np.float32)


def test_strength_0_is_the_input_1_the_full_result_and_half_is_halfway(pixels: np.ndarray) -> None:
    engine = _make_engine("sharpen")
    full = deblur_array(pixels, engine, tile=0)
    assert np.abs(full - pixels).mean() > 0.05  # the engine changes the image (else the test proves nothing)
    assert np.array_equal(deblur_array(pixels, engine, tile=0, strength=1.0), full)
    assert np.array_equal(deblur_array(pixels, engine, tile=0, strength=0.0), pixels)
    half = deblur_array(pixels, engine, tile=0, strength=0.5)
    np.testing.assert_allclose(half, (pixels + full) / 2, atol=1e-6)
    quarter = deblur_array(pixels, engine, tile=0, strength=0.25)
    np.testing.assert_allclose(quarter, pixels + 0.25 * (full - pixels), atol=1e-6)


def test_strength_is_applied_after_tiling_on_the_whole_image(pixels: np.ndarray) -> None:
    engine = _make_engine("sharpen")
    tiled = deblur_array(pixels, engine, tile=8, overlap=2, strength=0.5)
    whole = deblur_array(pixels, engine, tile=0, strength=0.5)
    np.testing.assert_allclose(tiled, whole, atol=1e-6)


@pytest.mark.parametrize("bad", [-0.1, 1.01, float("nan"), "abc"])
def test_bad_strength_is_a_usage_error(pixels: np.ndarray, bad: object) -> None:
    with pytest.raises(UsageError, match="--strength"):
        check_strength(bad)  # type: ignore[arg-type]
    with pytest.raises(UsageError):
        make_deblur_fn(load_restorer(_make_engine("identity"), device="cpu"), strength=bad)  # type: ignore[arg-type]


def test_cli_strength_0_writes_the_input_pixels_and_records_it(tmp_path: Path, use_engine) -> None:  # noqa: ANN001
    use_engine("sharpen")
    rng = np.random.default_rng(1)
    img = rng.integers(40, 220, (16, 12, 3), dtype=np.uint8)
    Image.fromarray(img).save(tmp_path / "a.png")
    r = CliRunner().invoke(app, ["deblur", str(tmp_path / "a.png"), "--strength", "0", "--json"])
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["strength"] == 0.0
    assert np.array_equal(np.asarray(Image.open(tmp_path / "a_sharp.png")), img)
    r = CliRunner().invoke(app, ["deblur", str(tmp_path / "a.png"), "--strength", "1", "--overwrite"])
    assert r.exit_code == 0, r.stderr
    assert not np.array_equal(np.asarray(Image.open(tmp_path / "a_sharp.png")), img)


def test_cli_bad_strength_exits_2_in_one_line_before_loading(tmp_path: Path, use_engine) -> None:  # noqa: ANN001
    calls = use_engine("sharpen")
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "a.png")
    r = CliRunner().invoke(app, ["deblur", str(tmp_path / "a.png"), "--strength", "1.5"])
    assert r.exit_code == 2
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: --strength"), r.stderr
    assert calls == [] and not (tmp_path / "a_sharp.png").exists()


def test_deblur_array_gives_the_engine_one_private_channels_last_copy(monkeypatch: pytest.MonkeyPatch) -> None:
    """The runtime gets the image as a channels_last view of the pixels (an ``(H, W, 3)`` array seen as NCHW: no
    copy), and the torch network gets its own channels_last copy from its adapter: an engine writing into its
    input leaves ``pixels`` alone."""
    import torch

    from defocus_cli import runtime

    seen: list[bool] = []
    given: list[bool] = []
    real = runtime.run_tiles

    def spy(module: torch.nn.Module, x: np.ndarray, **kw: object) -> tuple[np.ndarray, object]:
        given.append(torch.from_numpy(x).is_contiguous(memory_format=torch.channels_last))
        return real(module, x, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(runtime, "run_tiles", spy)

    class Scribbler(torch.nn.Module):
        multiple_of, receptive_field, safe_precisions = 1, 0, ("fp32",)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            seen.append(x.is_contiguous(memory_format=torch.channels_last))
            out = x.clone()
            x.mul_(0.0)  # misbehaves on purpose
            return out

    rng = np.random.default_rng(0)
    pixels = rng.random((12, 20, 3), dtype=np.float32)
    before = pixels.copy()
    out = deblur_array(pixels, Scribbler().eval(), tile=0)
    assert given == [True] and seen == [True]
    np.testing.assert_array_equal(pixels, before)
    np.testing.assert_array_equal(out, before)
