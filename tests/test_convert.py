"""Official checkpoint conversion: strict layouts, reproduced outputs, refusal of unsafe or wrong files."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import SHARED, needs_shared
from safetensors import safe_open
from safetensors.torch import load_file

from defocus_cli.cli.exit_codes import exit_code
from defocus_cli.convert import convert_checkpoint
from defocus_cli.errors import InputError, UsageError

MAKER = SHARED / "tools" / "make_official_checkpoint.py"
VEC = SHARED / "vectors"
DATA = Path(__file__).resolve().parent / "data"

needs_maker = pytest.mark.skipif(not MAKER.is_file(), reason=f"needs {MAKER} (development references, not in a clone)")


def _needs_class(module: str, cls: str) -> pytest.MarkDecorator:
    try:
        ok = hasattr(importlib.import_module(module), cls)
    except ImportError:
        ok = False
    return pytest.mark.skipif(not ok, reason=f"{module}:{cls} is not available in this tree yet")


def _official(tmp_path: Path, kind: str, name: str) -> Path:
    dst = tmp_path / name
    subprocess.run([sys.executable, str(MAKER), kind, str(dst)], check=True, capture_output=True, timeout=300)
    return dst


@pytest.fixture(scope="module")
def ifan_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not MAKER.is_file():
        pytest.skip(f"needs the development checkpoint maker {MAKER} (../shared is not part of a user's clone)")
    return _official(tmp_path_factory.mktemp("ifan"), "ifan", "IFAN.pytorch")


@needs_shared
@needs_maker
def test_ifan_convert_strict_and_reproduces_vectors(ifan_ckpt: Path, tmp_path: Path) -> None:
    from defocus_cli.archs.ifan import IFAN

    dst = tmp_path / "ifan.safetensors"
    info = convert_checkpoint(ifan_ckpt, dst, "ifan")
    assert info["tensors"] == 158 and info["params"] == 10_476_996
    assert info["dropped"] == 20  # the training-only reblurNet tensors
    with safe_open(str(dst), "pt") as f:
        meta = f.metadata()
        keys = list(f.keys())
    assert meta["arch"] == "ifan" and meta["source"] == "IFAN.pytorch" and meta["producer"].startswith("defocus_cli ")
    assert not any(k.startswith(("module.", "reblurNet")) for k in keys)
    state = load_file(dst)
    assert all(v.dtype == torch.float32 for v in state.values())
    net = IFAN().eval()
    net.load_state_dict(state, strict=True)
    io = load_file(DATA / "vectors" / "ifan_io.safetensors")
    with torch.inference_mode():
        y, d, _ = net.forward_train(io["input_b"])
        y = y.clamp(0, 1)  # the official script clips; here the engine does
    assert (y - io["output_b"].float()).abs().max() <= 1e-4
    assert (d - io["dme_b"].float()).abs().max() <= 1e-4


@needs_shared
@needs_maker
def test_fp16_option_and_atomic_replace(ifan_ckpt: Path, tmp_path: Path) -> None:
    dst = tmp_path / "ifan16.safetensors"
    dst.write_bytes(b"old")
    info = convert_checkpoint(ifan_ckpt, dst, "ifan", dtype="fp16")
    assert info["dtype"] == "fp16"
    state = load_file(dst)
    assert all(v.dtype == torch.float16 for v in state.values())
    # fp16 of fp16-rounded test weights is lossless
    ref = load_file(VEC / "ifan_official_weights_fp16.safetensors")
    assert all(torch.equal(state[k], ref[k]) for k in ref)
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    with pytest.raises(UsageError):  # an existing DST is refused before any work, like every command's outputs
        convert_checkpoint(ifan_ckpt, dst, "ifan", overwrite=False)


@needs_shared
@needs_maker
@_needs_class("defocus_cli.archs.defocusgan", "DefocusGAN")
def test_wrong_arch_is_a_usage_error(ifan_ckpt: Path, tmp_path: Path) -> None:
    dst = tmp_path / "x.safetensors"
    with pytest.raises(UsageError) as e:
        convert_checkpoint(ifan_ckpt, dst, "defocusgan")
    assert exit_code(e.value) == 2
    assert "does not match --arch defocusgan" in str(e.value) and "--arch ifan" in str(e.value)
    assert not dst.exists()


@needs_shared
@needs_maker
def test_incomplete_checkpoint_names_missing_keys(ifan_ckpt: Path, tmp_path: Path) -> None:
    sd = torch.load(ifan_ckpt, weights_only=True)
    del sd["module.Network.F.3.bias"]
    sd["module.Network.extra.weight"] = torch.zeros(2)
    bad = tmp_path / "partial.pytorch"
    torch.save(sd, bad)
    with pytest.raises(InputError) as e:
        convert_checkpoint(bad, tmp_path / "x.safetensors", "ifan")
    msg = str(e.value)
    assert "F.3.bias" in msg and "extra.weight" in msg and "\n" not in msg


class _Evil:
    """Pickles as a call to ``os.system`` that would create a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (os.system, (f"touch '{self.marker}'",))


def test_malicious_pickle_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    bad = tmp_path / "evil.pth"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "payload": _Evil(marker)}, bad)
    with pytest.raises(InputError) as e:
        convert_checkpoint(bad, tmp_path / "out.safetensors", "ifan")
    assert exit_code(e.value) == 1 and "\n" not in str(e.value)
    assert "weights-only" in str(e.value)
    assert not marker.exists()
    assert not (tmp_path / "out.safetensors").exists()


def test_not_a_checkpoint(tmp_path: Path) -> None:
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"this is not a pickle at all")
    with pytest.raises(InputError, match="not a torch checkpoint"):
        convert_checkpoint(junk, tmp_path / "o.safetensors", "ifan")
    plain = tmp_path / "list.pth"
    torch.save([1, 2, 3], plain)
    with pytest.raises(InputError, match="expected a dictionary"):
        convert_checkpoint(plain, tmp_path / "o.safetensors", "ifan")
    with pytest.raises(InputError, match="not found"):
        convert_checkpoint(tmp_path / "missing.pth", tmp_path / "o.safetensors", "ifan")


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(UsageError):
        convert_checkpoint(tmp_path / "a.pth", tmp_path / "o.safetensors", "sftnet")
    with pytest.raises(UsageError):
        convert_checkpoint(tmp_path / "a.pth", tmp_path / "o.bin", "ifan")


def _assert_same_tensors(converted: Path, reference: Path) -> None:
    """Converted tensors are the reference (fp16 test) weights exactly, upcast to float32. The forward pass of
    these weights against the vectors is the arch's own test (tests/test_defocusgan*.py)."""
    got, ref = load_file(converted), load_file(reference)
    assert list(got) == list(ref)
    for k, v in ref.items():
        assert got[k].dtype == torch.float32 and torch.equal(got[k], v.float()), k


@needs_shared
@needs_maker
@pytest.mark.parametrize(
    ("arch", "module", "cls", "checkpoint", "reference", "expected"),
    [
        pytest.param("defocusgan", "defocus_cli.archs.defocusgan", "DefocusGAN", "90_models.pth",
                     "defocusgan_official_weights_fp16.safetensors", {"tensors": 468, "params": 4_934_531},
                     marks=_needs_class("defocus_cli.archs.defocusgan", "DefocusGAN"), id="defocusgan"),
        pytest.param("defocusgan-map", "defocus_cli.archs.defocusgan_map", "DefocusMapNet", "25_models.pth",
                     "defocusgan_map_official_weights_fp16.safetensors", {"tensors": 324, "dropped": 0},
                     marks=_needs_class("defocus_cli.archs.defocusgan_map", "DefocusMapNet"), id="defocusgan-map"),
    ],
)
def test_defocusgan_convert_strict(tmp_path: Path, arch: str, module: str, cls: str, checkpoint: str,
                                   reference: str, expected: dict[str, int]) -> None:
    """The official DefocusGAN generator / map-network checkpoints convert strictly to the reference weights."""
    net_class = getattr(importlib.import_module(module), cls)
    src = _official(tmp_path, arch, checkpoint)
    dst = tmp_path / f"{arch}.safetensors"
    info = convert_checkpoint(src, dst, arch)
    assert {k: info[k] for k in expected} == expected
    with safe_open(str(dst), "pt") as f:
        assert f.metadata()["arch"] == arch and f.metadata()["source"] == checkpoint
    _assert_same_tensors(dst, VEC / reference)
    net_class().load_state_dict(load_file(dst), strict=True)


def test_self_made_official_layout_roundtrip(tmp_path: Path) -> None:
    """No shared references needed: an IFAN-layout checkpoint (``module.Network.*`` + training-only
    ``module.reblurNet.*``) from a randomly initialised net converts strictly and reproduces that net."""
    from defocus_cli.archs.ifan import IFAN

    torch.manual_seed(1)
    net = IFAN().eval()
    ckpt = {f"module.Network.{k}": v for k, v in net.state_dict().items()}
    ckpt["module.reblurNet.conv1.0.weight"] = torch.zeros(4, 4, 3, 3)
    src = tmp_path / "IFAN.pytorch"
    torch.save(ckpt, src)
    dst = tmp_path / "ifan.safetensors"
    info = convert_checkpoint(src, dst, "ifan")
    assert info["tensors"] == 158 and info["dropped"] == 1
    other = IFAN().eval()
    other.load_state_dict(load_file(dst), strict=True)
    x = torch.rand(1, 3, 24, 40)
    with torch.inference_mode():
        assert torch.equal(other(x), net(x))
    # the same file under the wrong prefix is refused, naming what it found
    torch.save({f"module.Other.{k}": v for k, v in net.state_dict().items()}, src)
    with pytest.raises(UsageError, match="does not match --arch ifan"):
        convert_checkpoint(src, tmp_path / "bad.safetensors", "ifan")
