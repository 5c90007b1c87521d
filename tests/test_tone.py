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
