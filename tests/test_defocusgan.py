"""DefocusGAN generator, its defocus-map network, discriminator and the Abuolaim DP kernels: official
checkpoint layouts, equivalence with the official networks, engine contract, kernel properties."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import SHARED, layout_of, load_fp16, needs_shared, read_layout

from defocus_cli.archs._dpkernels import dp_kernels, kernel_size
from defocus_cli.archs.defocusgan import DefocusGAN, blur_masks, curriculum_weight
from defocus_cli.archs.defocusgan_disc import PatchDiscriminator
from defocus_cli.archs.defocusgan_map import BlurKernelBank, DefocusMapNet

DATA = Path(__file__).resolve().parent / "data" / "vectors"
VEC = SHARED / "vectors"


@pytest.fixture(scope="module")
def gen() -> DefocusGAN:
    torch.manual_seed(0)
    return DefocusGAN().eval()


# ---- layouts and sizes ------------------------------------------------------------------------------


def test_generator_layout_and_params(gen: DefocusGAN) -> None:
    assert sum(p.numel() for p in gen.parameters()) == 4_934_531
    got = layout_of(gen)
    assert len(got) == 468
    assert got == read_layout(DATA / "defocusgan_keys.txt")


def test_map_net_layout_and_params() -> None:
    m = DefocusMapNet()
    assert sum(p.numel() for p in m.parameters()) == 3_306_755
    got = layout_of(m)
    assert len(got) == 324
    assert got == read_layout(DATA / "defocusgan_map_keys.txt")


def test_discriminator_layout_and_params() -> None:
    d = PatchDiscriminator()
    assert sum(p.numel() for p in d.parameters()) == 2_764_737
    assert layout_of(d) == read_layout(DATA / "defocusgan_disc_keys.txt")
    assert d(torch.rand(1, 3, 64, 64)).shape == (1, 1, 11, 11)


# ---- equivalence with the official networks ---------------------------------------------------------


@needs_shared
def test_generator_matches_official() -> None:
    from safetensors.torch import load_file

    net = load_fp16(DefocusGAN(), VEC / "defocusgan_official_weights_fp16.safetensors")
    io = load_file(VEC / "defocusgan_io.safetensors")
    for case in ("a", "b"):  # 128x160 and 96x112, both multiples of 16 (no padding involved)
        with torch.inference_mode():
            y = net(io[f"input_{case}"])
        assert y.shape == io[f"output_{case}"].shape
        assert float((y - io[f"output_{case}"]).abs().max()) <= 1e-4, case


@needs_shared
def test_map_net_matches_official() -> None:
    from safetensors.torch import load_file

    net = load_fp16(DefocusMapNet(), VEC / "defocusgan_map_official_weights_fp16.safetensors")
    io = load_file(VEC / "defocusgan_map_io.safetensors")
    with torch.inference_mode():
        y = net.forward_official(io["left"], io["right"])
        # the contract path takes RGB views and returns the channel mean
        contract = net(io["left"].flip(1), io["right"].flip(1))
    assert float((y - io["output"]).abs().max()) <= 1e-4
    assert contract.shape == (1, 1, 96, 128)
    assert float((contract - io["output"].mean(1, keepdim=True)).abs().max()) <= 1e-4


# ---- engine contract ----------------------------------------------------------------------------------


def test_generator_rgb_contract_flips_channels(gen: DefocusGAN) -> None:
    x = torch.rand(1, 3, 32, 32)
    with torch.inference_mode():
        via_contract = gen(x)
        bgr = x.flip(1)
        via_core = gen.core(torch.cat([bgr, bgr], 1)).flip(1)
    assert torch.allclose(via_contract, via_core, atol=1e-6)
    assert gen.multiple_of == 16 and gen.receptive_field > 0 and "fp32" in gen.safe_precisions


def test_map_net_contract() -> None:
    """Odd sizes go through the runtime's padding: tests/test_engine_contract.py."""
    torch.manual_seed(1)
    m = DefocusMapNet().eval()
    left, right = torch.rand(1, 3, 32, 48), torch.rand(1, 3, 32, 48)
    with torch.inference_mode():
        y = m(left, right)
    assert y.shape == (1, 1, 32, 48)
    assert float(y.abs().max()) <= 24.0
    with pytest.raises(ValueError):
        m(left, right[..., :-1])


# ---- training path --------------------------------------------------------------------------------


def test_curriculum_weight_and_masks() -> None:
    assert curriculum_weight(0) == pytest.approx(1.0)
    assert curriculum_weight(1e4) == pytest.approx(np.exp(-1.0))
    dm = torch.tensor([0.5, 2.0, -5.0, 10.0]).reshape(1, 1, 1, 4)
    masks = blur_masks(dm)
    assert [m.flatten().tolist() for m in masks] == [
        [1, 0, 0, 0],
        [0, 1, 0, 0],
        [0, 0, 1, 0],
        [0, 0, 0, 1],
    ]


def test_forward_train_curriculum(gen: DefocusGAN) -> None:
    x = torch.rand(1, 3, 32, 32)
    dm = torch.full((1, 1, 32, 32), 0.5)  # every pixel in branch 0's bucket
    with torch.no_grad():
        late = gen.forward_train(x, dm, iter_num=1e6)
        early = gen.forward_train(x, dm, iter_num=0)
        plain = gen(x)
    # past the annealing window the training path is the inference path
    assert torch.allclose(late, plain, atol=1e-6)
    # at the start, the branches 1-3 are masked out, which changes the output
    assert float((early - plain).abs().max()) > 1e-4
    with pytest.raises(ValueError):
        gen.forward_train(torch.rand(1, 3, 30, 32), dm[..., :30, :], 0)


def test_forward_train_has_gradients() -> None:
    torch.manual_seed(2)
    g = DefocusGAN()
    out = g.forward_train(torch.rand(1, 3, 16, 16), torch.rand(1, 1, 16, 16) * 8, iter_num=100)
    out.mean().backward()
    assert g.head[0].weight.grad is not None and float(g.head[0].weight.grad.abs().sum()) > 0
    assert g.connect.weight.grad is None  # unused conv stays unused


# ---- DP kernels and the kernel bank ------------------------------------------------------------------


@pytest.mark.parametrize("coc", [1, 2, 3.4, 7, 12, 24])
def test_dp_kernels_properties(coc: float) -> None:
    c, l, r = dp_kernels(coc, order=3, cutoff_factor=2.5, beta=0.1, smooth=7)
    assert c.shape == l.shape == r.shape == (kernel_size(coc, 7),) * 2
    for k in (c, l, r):
        assert k.sum() == pytest.approx(1.0, abs=1e-9)
        assert float(k.min()) >= 0.0
    np.testing.assert_allclose(r, l[::-1, ::-1], atol=1e-12)
    # the left kernel leans right (ramp rises left to right), the combined is centred
    cols = np.arange(c.shape[1]) - c.shape[1] // 2
    assert float((l.sum(0) * cols).sum()) > 0 > float((r.sum(0) * cols).sum())
    assert float((c.sum(0) * cols).sum()) == pytest.approx(0.0, abs=1e-9)
    # centre dimmer than the rim (Butterworth high-pass) for kernels large enough to show it
    if coc >= 7:
        mid = c.shape[0] // 2
        assert c[mid, mid] < c[mid, mid + int(round(coc)) - 2]


def test_dp_kernels_sign_swaps_views() -> None:
    c, l, r = dp_kernels(5)
    cn, ln, rn = dp_kernels(-5)
    np.testing.assert_allclose(c, cn)
    np.testing.assert_allclose(ln, r)
    np.testing.assert_allclose(rn, l)
    d = dp_kernels(0.2)
    assert all(k.shape == (1, 1) and k[0, 0] == 1.0 for k in d)


def test_blur_kernel_bank_blends_levels() -> None:
    bank = BlurKernelBank(levels=6)
    assert bank.pos.shape == (6, 1, kernel_size(5), kernel_size(5))
    torch.testing.assert_close(bank.pos.sum(dim=(1, 2, 3)), torch.ones(6))
    sharp = torch.zeros(1, 1, 33, 33)
    sharp[..., 16, 16] = 1.0
    with torch.no_grad():
        at0 = bank(sharp, torch.zeros(1, 1, 33, 33))
        at2 = bank(sharp, torch.full((1, 1, 33, 33), 2.0))
        at25 = bank(sharp, torch.full((1, 1, 33, 33), 2.5))
        at3 = bank(sharp, torch.full((1, 1, 33, 33), 3.0))
    assert torch.equal(at0, sharp)  # level 0 is the identity
    torch.testing.assert_close(at25, 0.5 * (at2 + at3))
    assert float(at3.sum()) == pytest.approx(1.0, abs=1e-5)
    # the impulse response at radius 3 is the level-3 kernel (a convolution; the conv2d weight is it rotated)
    k = bank.kernel(3)
    s = k.shape[-1] // 2
    torch.testing.assert_close(at3[0, 0, 16 - s : 16 + s + 1, 16 - s : 16 + s + 1], k)
    torch.testing.assert_close(k, bank.pos[3, 0].flip(0, 1))
    kl = BlurKernelBank(levels=6, view="left").kernel(3, negative=True)  # asymmetric: orientation matters
    o = (kl.shape[-1] - kernel_size(3)) // 2
    torch.testing.assert_close(kl[o:-o, o:-o].double(), torch.from_numpy(dp_kernels(-3)[1]), atol=1e-7, rtol=0)
    with pytest.raises(ValueError):
        BlurKernelBank(view="up")


def _x_centroid(img: torch.Tensor) -> float:
    w = img.double().sum(dim=tuple(range(img.ndim - 1)))
    return float((w * torch.arange(w.shape[0], dtype=torch.float64)).sum() / w.sum())


@pytest.mark.parametrize("coc", [4.0, -4.0, 7.0, -7.0])
def test_blur_kernel_bank_views_match_the_data_generator(coc: float) -> None:
    """``view="left"`` re-blurs towards the *left* view of the synthetic DP generator (defocus_cli.data), not the
    right one: the bank filters by convolution with the DP kernel, like the generator (point source + texture,
    both signs of the CoC, direction of the shift)."""
    from defocus_cli.data.synth import layered_dp_blur

    s, c = 64, 32
    torch.manual_seed(0)
    point = torch.zeros(1, 1, s, s, dtype=torch.float32)
    point[..., c, c] = 1.0
    texture = torch.zeros(1, 1, s, s)
    texture[..., 16:48, 16:48] = torch.rand(1, 1, 32, 32)  # zero border: no wrap / replicate-pad effects
    coc_map = torch.full((1, 1, s, s), coc)
    banks = {v: BlurKernelBank(levels=9, view=v) for v in ("combined", "left", "right")}
    for img in (point, texture):
        # generator: (combined, left, right) views of a constant-CoC image (circular FFT convolution)
        views = layered_dp_blur(img[0].expand(3, s, s).contiguous(), coc_map[0, 0], 3, 2.5, 0.1)[:, 0]
        with torch.no_grad():
            out = {v: bank(img, coc_map)[0, 0] for v, bank in banks.items()}
        for j, v in enumerate(("combined", "left", "right")):
            torch.testing.assert_close(out[v], views[j], atol=1e-5, rtol=0)
    # the point source's left and right images shift in opposite directions, and flip with the CoC's sign:
    # the left kernel leans towards +x (ramp 0 → 1 across columns) for coc > 0
    with torch.no_grad():
        dl = _x_centroid(banks["left"](point, coc_map)[0, 0]) - c
        dr = _x_centroid(banks["right"](point, coc_map)[0, 0]) - c
    _k, lk, _rk = dp_kernels(coc)
    expect = float((lk.sum(0) * (np.arange(lk.shape[1]) - lk.shape[1] // 2)).sum())
    assert dl == pytest.approx(expect, abs=1e-4) and dr == pytest.approx(-expect, abs=1e-4)
    assert np.sign(dl) == np.sign(coc) == -np.sign(dr) and abs(dl) > 0.5
