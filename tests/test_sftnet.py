"""SFT-net engine: contract (shape, range, odd sizes), documented size, decomposed SFT shapes."""

from __future__ import annotations

import re

import pytest
import torch

from defocus_cli.archs import sftnet as S
from defocus_cli.archs.sftnet import CondResBlock, DecomposedSFT, SFTNet


def _documented(pattern: str) -> int:
    m = re.search(pattern, S.__doc__ or "")
    assert m, f"module docstring lacks {pattern!r}"
    return int(m.group(1).replace(",", ""))


def test_parameter_count_matches_docstring() -> None:
    net = SFTNet()
    n = sum(p.numel() for p in net.parameters())
    assert n == _documented(r"\*\*([\d,]+) parameters\*\*")
    assert len(net.state_dict()) == _documented(r"parameters\*\* \((\d+) tensors\)")
    assert n < 2_000_000


def test_macs_per_megapixel_matches_docstring() -> None:
    net = SFTNet().eval()
    macs = [0]

    def hook(mod: torch.nn.Conv2d, inp: tuple, out: torch.Tensor) -> None:
        macs[0] += out[0].numel() * mod.in_channels // mod.groups * mod.kernel_size[0] * mod.kernel_size[1]

    for m in net.modules():
        if isinstance(m, torch.nn.Conv2d):
            m.register_forward_hook(hook)
    with torch.no_grad():
        net(torch.rand(1, 3, 128, 128))
    gmac_mp = macs[0] / (128 * 128) / 1e3
    doc = float(re.search(r"\*\*([\d.]+) GMAC per megapixel\*\*", S.__doc__ or "").group(1))  # type: ignore[union-attr]
    assert abs(gmac_mp - doc) < 0.1
    assert gmac_mp < 150


@pytest.mark.parametrize("hw", [(37, 53), (5, 7), (64, 48)])
def test_defocus_map_keeps_odd_sizes(hw: tuple[int, int]) -> None:
    """The deblurring contract (shape, range, tiles, precisions) is tests/test_engine_contract.py's; here the map
    (through the runtime, which pads odd sizes to the multiple)."""
    from defocus_cli import runtime

    torch.manual_seed(0)
    net = SFTNet().eval()
    x = torch.rand(2, 3, *hw)
    m = runtime.run_engine(net, x, device="cpu", tile=0, fn=lambda mod, t: mod.defocus_map(t))
    assert m.shape == (2, 1, *hw) and float(m.min()) >= 0


def test_untrained_net_starts_as_identity() -> None:
    x = torch.rand(1, 3, 32, 44)  # H, W multiples of 4: the engine pads other sizes
    with torch.no_grad():
        torch.testing.assert_close(SFTNet().eval()(x), x)


def test_decomposed_sft_gamma_factor_shapes() -> None:
    sft = DecomposedSFT(ch=64, cond_ch=32)
    cond = torch.randn(2, 32, 9, 11)
    gc, gs = sft.gammas(cond)
    assert gc.shape == (2, 64, 1, 1)
    assert gs.shape == (2, 1, 9, 11)
    feats = torch.randn(2, 64, 9, 11)
    out = sft(feats, cond)
    beta = sft.b2(torch.nn.functional.leaky_relu(sft.b1(cond), 0.1))
    assert beta.shape == (2, 64, 9, 11)
    torch.testing.assert_close(out, feats * (1 + gc * gs) + beta)


def test_condition_modulates_features() -> None:
    torch.manual_seed(1)
    blk = CondResBlock(16, 8)
    x = torch.randn(1, 16, 8, 8)
    a = blk(x, torch.zeros(1, 8, 8, 8))
    b = blk(x, torch.randn(1, 8, 8, 8))
    assert not torch.allclose(a, b)


def test_contract_attributes_and_gradients() -> None:
    net = SFTNet()
    assert net.multiple_of == 4 and net.receptive_field > 0
    assert "fp32" in net.safe_precisions
    x = torch.rand(1, 3, 32, 32)
    net.restore(x, net.map_lowres(x)).mean().backward()
    assert net.dme.head.weight.grad is not None and net.deblur.out.weight.grad is not None


def test_local_pooling_matches_global_on_small_inputs_and_localises_on_large() -> None:
    from defocus_cli.archs.sftnet import DecomposedSFT, SFTNet

    torch.manual_seed(3)
    sft = DecomposedSFT(16, 32).eval()
    with torch.no_grad():
        small = torch.randn(1, 32, 8, 8)
        ref = sft.gammas(small)[0]
        sft.pool_window = 8  # the window covers the whole input: local == global
        torch.testing.assert_close(sft.gammas(small)[0].expand(-1, -1, 8, 8), ref.expand(-1, -1, 8, 8),
                                   atol=1e-6, rtol=0)
        big = torch.randn(1, 32, 8, 64)
        edit = big.clone()
        edit[..., :16] += 3.0  # change the left quarter only
        local = (sft.gammas(big)[0] - sft.gammas(edit)[0])[..., 40:].abs().max()
        sft.pool_window = None
        glob = (sft.gammas(big)[0] - sft.gammas(edit)[0]).abs().max()
    assert float(local) == 0.0 < float(glob)  # local: the far right's channel factor is untouched
    net = SFTNet()
    net.set_pool_window(32)
    assert all(m.pool_window == 32 for m in net.modules() if isinstance(m, DecomposedSFT))
