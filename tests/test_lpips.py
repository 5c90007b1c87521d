"""LPIPS AlexNet v0.1 with the shipped weights reproduces the LPIPS authors' reference distances, offline."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from defocus_cli import lpips as L
from defocus_cli.errors import InputError, WeightsError
from defocus_cli.fetch import sha256_file

DATA = Path(__file__).parent / "data" / "lpips"
# Reference distances published with the LPIPS example images (lpips package, net='alex', version 0.1).
REFERENCE = {"ex_p0": 0.721881, "ex_p1": 0.137566}


def _img(name: str) -> np.ndarray:
    bgr = cv2.imread(str(DATA / f"{name}.png"), cv2.IMREAD_COLOR)
    assert bgr is not None, f"missing test image {name}.png"
    return bgr[:, :, ::-1].astype(np.float64) / 255.0


@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_reference_distances(name: str) -> None:
    d = L.lpips(_img(name), _img("ex_ref"))
    assert d == pytest.approx(REFERENCE[name], abs=5e-4)


def test_identical_is_zero_and_symmetric() -> None:
    a, b = _img("ex_p0"), _img("ex_ref")
    assert L.lpips(a, a) == pytest.approx(0.0, abs=1e-7)
    assert L.lpips(a, b) == pytest.approx(L.lpips(b, a), abs=1e-6)


def test_features_and_distance_equal_forward() -> None:
    net = L.load_lpips()
    a, b = L.to_tensor(_img("ex_p1")), L.to_tensor(_img("ex_ref"))
    with torch.inference_mode():
        whole = float(net(a, b)[0])
        split = float(net.distance(net.features(a), net.features(b))[0])
    assert split == pytest.approx(whole, abs=1e-6)


def test_shipped_weights_have_lpips_names_and_checksum() -> None:
    from safetensors import safe_open

    with safe_open(str(L.weights_path()), "pt") as f:
        keys = set(f.keys())
    assert "lin0.model.1.weight" in keys and "net.slice1.0.weight" in keys
    assert len(keys) == 15  # 5 convs × (weight, bias) + 5 lin heads
    assert sha256_file(L.weights_path(), use_memo=False) == L.WEIGHTS_SHA256


def test_corrupt_weights_raise_weights_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bad = tmp_path / L.WEIGHTS_NAME
    bad.write_bytes(L.weights_path().read_bytes()[:-10] + b"0123456789")
    monkeypatch.setattr(L, "weights_path", lambda: bad)
    L.load_lpips.cache_clear()
    try:
        with pytest.raises(WeightsError, match="sha256"):
            L.load_lpips("cpu")
        monkeypatch.setattr(L, "weights_path", lambda: tmp_path / "nope.safetensors")
        with pytest.raises(WeightsError, match="not found"):
            L.load_lpips("cpu")
    finally:
        L.load_lpips.cache_clear()


def test_shape_errors() -> None:
    with pytest.raises(InputError, match="equal shapes"):
        L.lpips(np.zeros((64, 64, 3)), np.zeros((64, 65, 3)))
    with pytest.raises(InputError, match="at least 31"):
        L.lpips(np.zeros((30, 64, 3)), np.zeros((30, 64, 3)))
    assert L.lpips(np.zeros((31, 31, 3)), np.ones((31, 31, 3))) > 0  # the smallest size works
    with pytest.raises(InputError, match="RGB"):
        L.lpips(np.zeros((64, 64)), np.zeros((64, 64)))


def test_distance_is_differentiable_wrt_input() -> None:
    """Backward through features() + distance() works and gradients reach the input (no in-place op on a
    tensor autograd saved), and the autograd-enabled value equals the inference-mode value."""
    net = L.load_lpips()
    ref = L.to_tensor(_img("ex_ref"))
    x = L.to_tensor(_img("ex_p1")).requires_grad_(True)
    d = net.distance(net.features(x), net.features(ref))
    d.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and float(x.grad.abs().sum()) > 0
    assert float(d.detach()[0]) == pytest.approx(REFERENCE["ex_p1"], abs=5e-4)
    # the batched forward (pred and target concatenated) is differentiable too
    y = L.to_tensor(_img("ex_p0")).requires_grad_(True)
    net(y, ref).sum().backward()
    assert y.grad is not None and float(y.grad.abs().sum()) > 0
    # a gradient step along −∇ lowers the distance (the gradient points the right way)
    with torch.no_grad():
        before = float(net(y, ref)[0])
        after = float(net((y - 1e-3 * y.grad.sign()).clamp(0, 1), ref)[0])
    assert after < before
