"""Tone lock (defocus_cli.tone): low frequencies from the input, detail from the network."""

from __future__ import annotations

import pytest
import torch

from defocus_cli.tone import lock_tone, lowpass


def _detail(seed: int, h: int = 96, w: int = 128) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand((1, 3, h, w), generator=g) * 0.4 + 0.3


def test_lowpass_keeps_constants_and_shape() -> None:
    x = torch.full((2, 3, 50, 70), 0.37)
    y = lowpass(x, 16.0)
    assert y.shape == x.shape
    torch.testing.assert_close(y, x, atol=1e-6, rtol=0)


def test_lowpass_removes_fine_detail() -> None:
    x = _detail(1)
    assert float((lowpass(x, 24.0) - x.mean()).abs().max()) < 0.05 < float((x - x.mean()).abs().max())


def test_lock_is_identity_when_output_equals_input() -> None:
    x = _detail(2)
    torch.testing.assert_close(lock_tone(x, x, 32.0), x, atol=1e-6, rtol=0)


def test_lock_removes_a_brightness_shift_and_keeps_detail() -> None:
    inp = _detail(3)
    sharp_detail = _detail(4) - 0.5  # zero-mean-ish high-frequency content the network adds
    sharp_detail = sharp_detail - lowpass(sharp_detail, 32.0)
    out = (inp + 0.1 * sharp_detail - 2.4 / 255).clamp(0, 1)  # a darker output with added detail
    locked = lock_tone(out, inp, 32.0)
    assert abs(float((out - inp).mean()) * 255) > 2.0
    assert abs(float((locked - inp).mean()) * 255) < 0.2
    # the detail survives: the correlation with the added detail stays high
    d = (locked - inp).flatten()
    assert float(torch.corrcoef(torch.stack([d, sharp_detail.flatten()]))[0, 1]) > 0.95


def test_lock_shape_mismatch_is_an_error() -> None:
    with pytest.raises(ValueError, match="one shape"):
        lock_tone(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 9), 4.0)


def _sftnet_file(path, darken: float, **meta: str):  # noqa: ANN001, ANN202
    """A small SFT-net file whose output is its input darkened by ``darken`` (the last conv's bias)."""
    from safetensors.torch import save_file

    from defocus_cli.archs.sftnet import SFTNet

    torch.manual_seed(0)
    net = SFTNet()
    with torch.no_grad():
        net.deblur.out.bias.fill_(-darken)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path),
              metadata={"arch": "sftnet", "producer": "tests", **meta})
    return path


@pytest.mark.parametrize("meta,locked", [({}, False), ({"tone_lock_sigma": "24"}, True)])
def test_weights_that_ask_for_the_lock_keep_the_input_tone(tmp_path, meta, locked) -> None:  # noqa: ANN001
    import numpy as np

    from defocus_cli.api import deblur_array, load_restorer, restore_array
    from defocus_cli.weights import load_model

    lm = load_model(weights_file=_sftnet_file(tmp_path / "w.safetensors", 3 / 255, **meta))
    assert getattr(lm.module, "tone_lock_sigma", 0.0) == (24.0 if locked else 0.0)
    px = _detail(5, 64, 96)[0].permute(1, 2, 0).numpy()
    out, stats = restore_array(px, load_restorer(lm, device="cpu", tile=0))
    shift = float((out - px).mean() * 255)
    assert (abs(shift) < 0.2) == locked and (shift < -2.5) != locked
    assert stats.tone_lock_sigma == (24.0 if locked else None)
    # an explicit False always runs the network as it is; True locks even weights that do not ask
    off = deblur_array(px, lm, device="cpu", tile=0, tone_lock=False)
    on = deblur_array(px, lm, device="cpu", tile=0, tone_lock=True)
    assert float((off - px).mean() * 255) < -2.5 and abs(float((on - px).mean() * 255)) < 0.2
    assert np.isfinite(out).all()


@pytest.mark.parametrize("bad", ["fast", "-1", "1e9", "nan"])
def test_bad_tone_lock_metadata_is_a_weights_error(tmp_path, bad: str) -> None:  # noqa: ANN001
    from defocus_cli.errors import WeightsError
    from defocus_cli.weights import load_model

    with pytest.raises(WeightsError, match="tone_lock_sigma"):
        load_model(weights_file=_sftnet_file(tmp_path / "w.safetensors", 0.0, tone_lock_sigma=bad))


@pytest.mark.parametrize("h,w", [(1, 1), (7, 13), (37, 53), (101, 66), (129, 257)])
@pytest.mark.parametrize("sigma", [3.0, 8.0, 32.0, 45.5])
def test_numpy_lowpass_and_lock_equal_torchs(h: int, w: int, sigma: float) -> None:
    """Inference's numpy tone lock (every backend, no torch) and training's torch one are one definition."""
    import numpy as np

    from defocus_cli.tone import lock_tone_np, lowpass_np

    rng = np.random.default_rng(h * 1000 + w)
    x = rng.random((h, w, 3), dtype=np.float32)
    y = np.clip(x + rng.normal(0, 0.2, x.shape).astype(np.float32), 0, 1)
    t = lambda a: torch.from_numpy(a).permute(2, 0, 1)[None]  # noqa: E731
    back = lambda a: a[0].permute(1, 2, 0).numpy()  # noqa: E731
    low = lowpass_np(x, sigma)
    assert low.shape == x.shape and low.dtype == np.float32
    np.testing.assert_allclose(low, back(lowpass(t(x), sigma)), atol=1e-5, rtol=0)
    np.testing.assert_allclose(lock_tone_np(y, x, sigma), back(lock_tone(t(y), t(x), sigma)), atol=1e-5, rtol=0)
    if h * w > 1:  # not the identity (a single pixel is its own mean): the comparison is not vacuous
        assert float(np.abs(low - x).max()) > 1e-3
