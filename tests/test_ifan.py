"""IFAN engine: official checkpoint layout, equivalence with the official network, engine contract."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import SHARED, layout_of, load_fp16, needs_shared, read_layout

from defocus_cli.archs.ifan import IFAN, iac_iteration

DATA = Path(__file__).resolve().parent / "data"
IFAN_WEIGHTS = SHARED / "vectors" / "ifan_official_weights_fp16.safetensors"


@pytest.fixture(scope="module")
def net() -> IFAN:
    torch.manual_seed(0)
    return IFAN().eval()


@pytest.fixture(scope="module")
def official() -> IFAN:
    return load_fp16(IFAN(), IFAN_WEIGHTS)


def test_param_count(net: IFAN) -> None:
    assert sum(p.numel() for p in net.parameters()) == 10_476_996


def test_state_dict_layout_matches_official(net: IFAN) -> None:
    expected = read_layout(DATA / "keys_ifan.txt")
    got = layout_of(net)
    assert len(got) == 158
    assert got == expected


def test_defocus_map_and_dme_keep_odd_sizes(net: IFAN) -> None:
    """The deblurring contract (shape, range, tiles, precisions) is tests/test_engine_contract.py's; here IFAN's
    own map outputs, at odd sizes through the runtime (which pads to the multiple), at a multiple directly."""
    from defocus_cli import runtime

    x = torch.rand(2, 3, 37, 53)
    d = runtime.run_engine(net, x, device="cpu", tile=0, fn=lambda m, t: m.defocus_map(t))
    assert d.shape == (2, 1, 37, 53)
    assert torch.isfinite(d).all()
    with torch.inference_mode():
        assert net.dme(torch.rand(1, 3, 40, 56)).shape == (1, 1, 5, 7)


def test_channels_last_same_result(net: IFAN) -> None:
    x = torch.rand(1, 3, 32, 40)
    with torch.inference_mode():
        a = net(x)
        b = net.to(memory_format=torch.channels_last)(x.contiguous(memory_format=torch.channels_last))
    net.to(memory_format=torch.contiguous_format)
    assert (a - b).abs().max() < 1e-5


def test_iac_matches_full_filter_tensor_reference(net: IFAN) -> None:
    """The per-iteration sliced filter computation equals the naive official-layout IAC on the whole tensor."""
    g = torch.randn(1, 128, 6, 7)
    f0 = torch.randn(1, 128, 6, 7)
    with torch.inference_mode():
        fast = net._iac(f0, g)
        filt = net.F[3](g)  # (1, 15232, h, w), official channel layout
        n, c, h, w = 17, 128, 6, 7
        kernels = filt[:, : n * 6 * c].view(1, n, 2, c, 3, h, w)  # iteration, kernel1/2, channel, tap
        biases = filt[:, n * 6 * c :].view(1, n, c, h, w)
        f = f0
        for i in range(n):
            k1 = kernels[:, i, 0]
            # vertical pass via unfold over rows, then horizontal; kernel1 both times (released quirk)
            p = F.pad(f, (0, 0, 1, 1), mode="replicate")
            rows = torch.stack([p[:, :, t : t + h] for t in range(3)], dim=2)
            v = (rows * k1).sum(2)
            p = F.pad(v, (1, 1, 0, 0), mode="replicate")
            cols = torch.stack([p[..., t : t + w] for t in range(3)], dim=2)
            f = F.leaky_relu((cols * k1).sum(2) + biases[:, i], 0.1)
    assert (fast - f).abs().max() < 1e-4 * max(1.0, float(f.abs().max()))


def test_iac_iteration_identity_taps() -> None:
    f = torch.rand(1, 4, 5, 6)
    zero, one = torch.zeros_like(f), torch.ones_like(f)
    out = iac_iteration(f, zero, one, zero, zero)
    assert torch.allclose(out, f)
    # a shift tap reads the row above (replicate at the border)
    out = iac_iteration(f, one, zero, zero, zero)
    expect = F.pad(f, (1, 0, 1, 0), mode="replicate")[..., :-1, :-1]
    assert torch.allclose(out, expect)


@needs_shared
@pytest.mark.parametrize("case", ["a", "b"])
def test_equivalence_with_official_vectors(official: IFAN, case: str) -> None:
    from safetensors.torch import load_file

    io = load_file(DATA / "vectors" / "ifan_io.safetensors")
    with torch.inference_mode():
        y, d, _ = official.forward_train(io[f"input_{case}"].float())
        y = y.clamp(0, 1)  # the official script clips; here the engine does
    assert y.shape == io[f"output_{case}"].shape
    assert (y - io[f"output_{case}"].float()).abs().max() <= 1e-4
    assert (d - io[f"dme_{case}"].float()).abs().max() <= 1e-4
    with torch.inference_mode():
        assert (official.dme(io[f"input_{case}"].float()) - io[f"dme_{case}"].float()).abs().max() <= 1e-4


# ---- defocus map scale (CoC px per DME unit) from the weight metadata ------------------------------------


@pytest.fixture(scope="module")
def ifan_state(net: IFAN) -> dict[str, torch.Tensor]:
    return {k: v.detach().to(torch.float16).contiguous() for k, v in net.state_dict().items()}


def _ifan_file(path: Path, state: dict[str, torch.Tensor], **meta: str) -> Path:
    from safetensors.torch import save_file

    save_file(state, str(path), metadata={"arch": "ifan", "producer": "tests", **meta})
    return path


def _scaled_dme(m: IFAN, x: torch.Tensor, scale: float) -> torch.Tensor:
    d = F.interpolate(m.dme(x), scale_factor=8.0, mode="bilinear", align_corners=False)
    return d[..., : x.shape[-2], : x.shape[-1]] * scale


@pytest.mark.parametrize(
    "meta,scale",
    [
        # how train/ifan.py records it (weights/ifan.safetensors): its own metadata key
        ({"source": "trained", "dme_to_coc": "-16.0"}, -16.0),
        ({"dme_to_coc": "-12.5", "notes": "free text is not parsed: dme_to_coc=-16.0"}, -12.5),
        ({"source": "trained", "notes": "dme_to_coc=-16.0"}, 3.0 * math.pi),
        # official weights converted by defocus_cli.convert: no scale recorded -> the documented 8 * 3*pi/8
        ({"source": "IFAN.pytorch", "notes": "converted from the official ifan checkpoint by defocus_cli.convert"},
         3.0 * math.pi),
    ],
)
def test_defocus_map_uses_metadata_scale(tmp_path: Path, ifan_state: dict[str, torch.Tensor],
                                         meta: dict[str, str], scale: float) -> None:
    from defocus_cli import weights

    loaded = weights.load_model(weights_file=_ifan_file(tmp_path / "w.safetensors", ifan_state, **meta))
    m = loaded.module
    x = torch.rand(1, 3, 29, 43)
    with torch.inference_mode():
        got, ref = m.defocus_map(x), _scaled_dme(m, x, scale)
    assert float(ref.abs().max()) > 0
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)


def test_defocus_map_command_uses_trained_scale(tmp_path: Path, ifan_state: dict[str, torch.Tensor]) -> None:
    """``defocus map IMAGE --weights ours.safetensors`` (run_map) gives -16 x DME for our trained weights."""
    import cv2
    import numpy as np

    from defocus_cli import weights
    from defocus_cli.defocus_map import run_map
    from defocus_cli.io import maps

    w = _ifan_file(tmp_path / "ours.safetensors", ifan_state, source="trained", dme_to_coc="-16.0")
    rng = np.random.default_rng(0)
    img = (rng.random((24, 40, 3)) * 255).astype(np.uint8)
    cv2.imwrite(str(tmp_path / "i.png"), img)
    run_map([tmp_path / "i.png"], tmp_path / "m.npy", weights_file=w, signed=True, device="cpu", precision="fp32",
            tile=0)
    got = maps.read_map(tmp_path / "m.npy")
    m = weights.load_model(weights_file=w).module
    x = torch.from_numpy(np.ascontiguousarray(img[:, :, ::-1].transpose(2, 0, 1))).float().div(255)[None]
    with torch.inference_mode():
        ref = _scaled_dme(m, x, -16.0)[0, 0].numpy()
    np.testing.assert_allclose(got, ref, atol=2e-3 * max(1.0, float(np.abs(ref).max())))


@pytest.mark.parametrize("bad", ["abc", "nan", "0", "inf"])
def test_bad_metadata_scale_is_a_weights_error(tmp_path: Path, ifan_state: dict[str, torch.Tensor], bad: str) -> None:
    from defocus_cli import weights
    from defocus_cli.errors import WeightsError

    with pytest.raises(WeightsError, match="dme_to_coc"):
        weights.load_model(weights_file=_ifan_file(tmp_path / "w.safetensors", ifan_state, dme_to_coc=bad))


def test_shipped_trained_weights_record_minus_16() -> None:
    from defocus_cli import weights

    path = Path(__file__).resolve().parents[1] / "weights" / "ifan.safetensors"
    assert path.is_file() and path.stat().st_size > 1 << 20, f"{path} ships with the repository"
    assert IFAN.coc_per_dme_from_metadata(weights.read_metadata(path)) == -16.0
