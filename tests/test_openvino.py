"""The OpenVINO CPU backend (``--backend openvino``, ``defocus_cli/backends/``): same results as the torch path
(padding, tone lock, tiling, clamp), IR pinned to the weights it was exported from, auto's rule, missing package.

Tests that run the IR need ``openvino`` (in the ``[test]`` extra) and skip with that reason without it; the
rule and the missing-package message are tested without it.
"""

from __future__ import annotations

import json
import shutil
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from defocus_cli import backends, registry
from defocus_cli.errors import DeviceError, UsageError, WeightsError

ROOT = Path(__file__).resolve().parent.parent
HAVE_OV = backends.openvino_available()
needs_ov = pytest.mark.skipif(not HAVE_OV, reason='openvino is not installed (pip install -e ".[openvino]")')
SHA = "a" * 64


def _row(auto: dict[str, Any] | None = None, passed: tuple[str, ...] = ("fp32", "bf16", "int8")) -> dict[str, Any]:
    pin = {"xml": "m.xml", "bin": "m.bin", "xml_sha256": "b" * 64, "bin_sha256": "c" * 64}
    return {"source_sha256": SHA, "files": {"fp32": pin, "int8": pin},
            "gate": {p: {"passed": p in passed} for p in ("fp32", "bf16", "int8")}, "auto": auto or {}}


def _choose(backend: str = "auto", precision: str = "auto", **kw: Any) -> backends.Choice:
    args: dict[str, Any] = dict(device_type="cpu", model="m", weights_sha256=SHA, row=_row(), cpu="native-bf16",
                                have_openvino=True)
    args.update(kw)
    return backends.choose(backend, precision, **args)


# ---------------------------------------------------------------------------------------------- auto's rule


def test_auto_follows_the_measured_rule_per_cpu_class() -> None:
    auto = {"native-bf16": {"backend": "torch", "precision": "auto"},
            "no-bf16": {"backend": "openvino", "precision": "int8"}}
    assert _choose(row=_row(auto), cpu="native-bf16").backend == "torch"
    c = _choose(row=_row(auto), cpu="no-bf16")
    assert (c.backend, c.precision) == ("openvino", "int8")
    # a CPU class nobody measured keeps torch
    assert _choose(row=_row({"no-bf16": auto["no-bf16"]}), cpu="native-bf16").backend == "torch"


def test_auto_never_picks_an_unvalidated_precision_or_stale_ir() -> None:
    auto = {"native-bf16": {"backend": "openvino", "precision": "int8"}}
    assert _choose(row=_row(auto)).backend == "openvino"
    assert _choose(row=_row(auto, passed=("fp32",))).backend == "torch"  # int8 failed its gate
    stale = _choose(row=_row(auto), weights_sha256="d" * 64)
    assert stale.backend == "torch" and "export_openvino" in stale.reason
    assert _choose(row=None).backend == "torch"
    assert _choose(row=_row(auto), have_openvino=False).backend == "torch"  # silently
    assert _choose(row=_row(auto), device_type="cuda").backend == "torch"
    assert _choose(row=_row(auto), own_file=True).backend == "torch"
    assert _choose("auto", "fp32", row=_row(auto)).backend == "torch"  # an explicit torch precision


def test_explicit_requests_are_refused_with_one_line() -> None:
    with pytest.raises(UsageError, match="OpenVINO backend only"):
        _choose("torch", "int8")
    with pytest.raises(DeviceError, match=r'pip install -e "\.\[openvino\]"'):
        _choose("openvino", have_openvino=False)
    with pytest.raises(DeviceError, match=r'pip install -e "\.\[openvino\]"'):
        _choose("auto", "int8", have_openvino=False)
    with pytest.raises(WeightsError, match="export_openvino"):
        _choose("openvino", weights_sha256="d" * 64)
    with pytest.raises(UsageError, match="not validated"):
        _choose("openvino", "int8", row=_row(passed=("fp32",)))
    with pytest.raises(DeviceError, match="CPU only"):
        _choose("openvino", device_type="cuda")
    with pytest.raises(UsageError, match="--weights"):
        _choose("openvino", own_file=True)
    with pytest.raises(UsageError, match="--backend"):
        _choose("tensorrt")
    c = _choose("openvino", "bf16")
    assert (c.backend, c.precision) == ("openvino", "bf16")
    assert _choose("openvino").backend == "openvino"  # precision auto: a validated one


def test_shipped_registry_row_pins_the_ir_of_the_shipped_weights() -> None:
    from defocus_cli.fetch import sha256_file

    spec = registry.get_spec("sftnet")
    row = spec.openvino
    assert row["source_sha256"] == spec.sha256 == sha256_file(ROOT / "weights" / "sftnet.safetensors")
    for ir in ("fp32", "int8"):
        files = row["files"][ir]
        for kind in ("xml", "bin"):
            assert sha256_file(ROOT / "weights" / files[kind]) == files[f"{kind}_sha256"]
        assert f'value="{spec.sha256}"' in (ROOT / "weights" / files["xml"]).read_text()
    assert not registry.get_spec("ifan").openvino  # experimental: no IR shipped
    assert set(backends.validated_precisions(row)) >= {"fp32"}


# ---------------------------------------------------------------------------------------------- the IR itself


@pytest.fixture(scope="module")
def loaded() -> Any:
    from defocus_cli.weights import load_model

    return load_model("sftnet")


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    from defocus_cli.io.read import read_photo

    return read_photo(ROOT / "examples" / "coffee_blurry.jpg").pixels


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
    return 200.0 if mse == 0 else 10 * np.log10(1 / mse)


#: the shipped IR's precisions that passed their quality gate (an unvalidated one is refused: see
#: test_cli_backend_openvino_int8_follows_its_gate); fp32 must always be among them
VALIDATED = backends.validated_precisions(registry.get_spec("sftnet").openvino or {})
MIN_DB = {"fp32": 60.0, "bf16": 40.0, "int8": 30.0}


def test_the_shipped_fp32_ir_passed_its_gate() -> None:
    assert "fp32" in VALIDATED, VALIDATED


@needs_ov
@pytest.mark.parametrize("precision", VALIDATED)
def test_openvino_matches_torch_fp32(loaded: Any, photo: np.ndarray, precision: str) -> None:
    from defocus_cli.api import deblur_array
    from defocus_cli.backends.openvino import load_engine

    min_db = MIN_DB[precision]
    x = photo[:200, :264]
    ref = deblur_array(x, loaded.module, device="cpu", precision="fp32", tile=0)
    out = deblur_array(x, load_engine(loaded, precision), device="cpu", tile=0)
    assert out.shape == ref.shape and out.dtype == np.float32
    assert 0.0 <= out.min() and out.max() <= 1.0
    assert _psnr(out, ref) >= min_db
    if precision != "int8":  # closer to torch than to the input: the network's change itself is reproduced
        assert _psnr(out, x) < _psnr(out, ref)
    # int8 on this crop: 31.4 dB from torch fp32, while torch's change to the input is ~33 dB: its error is of
    # the size of the restoration here (dpdd_val mean 43.5 dB; its gate passed with 0.045 of 0.05 dB)


@needs_ov
def test_tone_lock_is_applied_on_the_openvino_path(loaded: Any, photo: np.ndarray) -> None:
    import torch

    from defocus_cli.api import deblur_array, load_restorer, restore_array
    from defocus_cli.backends.openvino import load_engine
    from defocus_cli.tone import lock_tone

    eng = load_engine(loaded, "fp32")
    assert eng.tone_lock_sigma == loaded.module.tone_lock_sigma > 0
    x = photo[:160, :200]
    locked, stats = restore_array(x, load_restorer(eng, device="cpu", tile=0))
    raw = deblur_array(x, eng, device="cpu", tile=0, tone_lock=False)
    assert stats.tone_lock_sigma == eng.tone_lock_sigma
    t = lambda a: torch.from_numpy(a).permute(2, 0, 1)[None]  # noqa: E731
    expect = lock_tone(t(raw), t(x), eng.tone_lock_sigma)[0].permute(1, 2, 0).numpy()
    assert np.abs(locked - expect).max() < 1e-5
    assert np.abs(locked - raw).max() > 1e-3


@needs_ov
@pytest.mark.parametrize("h,w", [(1, 1), (7, 13), (37, 53), (101, 66)])
def test_odd_sizes_keep_their_shape_and_match_torch(loaded: Any, photo: np.ndarray, h: int, w: int) -> None:
    from defocus_cli.api import deblur_array
    from defocus_cli.backends.openvino import load_engine

    x = np.ascontiguousarray(photo[50:50 + h, 80:80 + w])
    ref = deblur_array(x, loaded.module, device="cpu", precision="fp32", tile=0)
    out = deblur_array(x, load_engine(loaded, "fp32"), device="cpu", tile=0)
    assert out.shape == (h, w, 3)
    assert _psnr(out, ref) >= 60.0


@needs_ov
def test_tiled_equals_whole(loaded: Any, photo: np.ndarray) -> None:
    from defocus_cli.api import deblur_array, load_restorer, restore_array
    from defocus_cli.backends.openvino import load_engine

    eng = load_engine(loaded, "fp32")
    x = photo[:300, :400]
    tiled, stats = restore_array(x, load_restorer(eng, device="cpu", tile=192))
    whole = deblur_array(x, eng, device="cpu", tile=0)
    assert stats.tiles > 1 and stats.precision == "fp32"
    assert _psnr(tiled, whole) >= 45.0


@needs_ov
def test_tile_auto_uses_the_measured_openvino_bytes_per_pixel(loaded: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from defocus_cli import runtime
    from defocus_cli.backends.openvino import load_engine

    eng = load_engine(loaded, "int8")
    measured = (loaded.spec.openvino.get("bytes_per_pixel") or {}).get("int8")
    if measured:
        assert eng.bytes_per_pixel == measured
    assert runtime.engine_bytes_per_pixel(eng, "int8") == eng.bytes_per_pixel  # no torch precision factor
    monkeypatch.setenv("DEFOCUS_MAX_MEMORY_GB", "0.9")
    t = runtime.auto_tile(eng, 3000, 4000, torch.device("cpu"), "int8", 48)
    assert t != 0  # a 12 MP photo is tiled under a 0.9 GB budget


@needs_ov
def test_ir_exported_from_other_weights_is_refused(loaded: Any, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from defocus_cli import api
    from defocus_cli.backends import openvino as ovb
    from defocus_cli.fetch import sha256_file

    spec = loaded.spec
    # 1. the registry row names other weights: explicit openvino fails with the regeneration command, auto uses torch
    stale = replace(spec, openvino={**spec.openvino, "source_sha256": "e" * 64})
    monkeypatch.setattr(loaded, "spec", stale)
    with pytest.raises(WeightsError, match="tools/export_openvino.py --model sftnet"):
        ovb.load_engine(loaded, "fp32")
    engine, choice = backends.select_engine(loaded, "auto", "auto", __import__("torch").device("cpu"))
    assert choice.backend == "torch" and engine is loaded.module
    # 2. the IR file's own rt_info names other weights (registry pins refreshed for the edited file)
    files = spec.openvino["files"]["fp32"]
    for kind in ("xml", "bin"):
        shutil.copy(ROOT / "weights" / files[kind], tmp_path / files[kind])
    xml = tmp_path / files["xml"]
    xml.write_text(xml.read_text().replace(spec.sha256, "f" * 64))
    pins = {**files, "xml_sha256": sha256_file(xml)}
    edited = replace(spec, openvino={**spec.openvino, "files": {"fp32": pins}})
    monkeypatch.setattr(loaded, "spec", edited)
    monkeypatch.setenv("DEFOCUS_WEIGHTS_DIR", str(tmp_path))
    with pytest.raises(WeightsError, match="exported from weights sha256 ffff"):
        ovb.load_engine(loaded, "fp32")
    # 3. a pin that does not match the file
    xml.write_text(xml.read_text() + " ")
    with pytest.raises(WeightsError, match="does not match the registry"):
        ovb.load_engine(loaded, "fp32")
    assert api  # the API module imports without openvino being touched


# ---------------------------------------------------------------------------------------------- the command


def _run(args: list[str]) -> Any:
    from typer.testing import CliRunner

    from defocus_cli.cli import app

    return CliRunner().invoke(app, args)


@needs_ov
def test_cli_backend_openvino_int8_follows_its_gate(tmp_path: Path) -> None:
    """int8 runs when the shipped IR passed its quality gate; otherwise it is refused up front (exit 2), naming the
    precisions that did pass, and nothing is written."""
    valid = VALIDATED
    out = tmp_path / "o.png"
    r = _run(["deblur", str(ROOT / "examples" / "chelsea_blurry.jpg"), "-o", str(out), "--backend", "openvino",
              "--precision", "int8", "--json", "-q"])
    if "int8" in valid:
        assert r.exit_code == 0, r.output
        doc = json.loads(r.stdout)
        assert doc["backend"] == "openvino" and doc["precision"] == "int8" and out.is_file()
    else:
        assert r.exit_code == 2 and "int8 is not validated" in r.output and ", ".join(valid) in r.output
        assert not out.exists()


def test_cli_without_openvino(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino now fails, find_spec says absent
    src = ROOT / "examples" / "chelsea_blurry.jpg"
    r = _run(["deblur", str(src), "-o", str(tmp_path / "a.png"), "--backend", "openvino"])
    assert r.exit_code == 4
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and 'pip install -e ".[openvino]"' in lines[0], r.output
    r = _run(["deblur", str(src), "-o", str(tmp_path / "b.png"), "--json", "-q"])  # auto: torch, silently
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["backend"] == "torch"


# ---------------------------------------------------------------------------------------------- no torch on this path


#: runs the command line in a fresh interpreter, then says on stderr whether torch was ever imported
_PROBE = (
    "import atexit, sys\n"
    "atexit.register(lambda: print('TORCH=' + str('torch' in sys.modules), file=sys.stderr))\n"
    "sys.argv[0] = 'defocus'\n"
    "from defocus_cli.cli import main\n"
    "main()\n"
)


def _probe_torch(args: list[str], tmp: Path, stdin: bytes | None = None) -> tuple[bool, bytes]:
    """Run ``defocus ARGS`` through :data:`_PROBE`; return (torch was imported, stdout)."""
    import os
    import subprocess

    env = {**os.environ, "DEFOCUS_THREADS": "1", "NO_COLOR": "1"}
    r = subprocess.run([sys.executable, "-c", _PROBE, *args], input=stdin, capture_output=True, env=env, cwd=tmp,
                       timeout=300)
    err = r.stderr.decode(errors="replace")
    assert r.returncode == 0, err
    line = [ln for ln in err.splitlines() if ln.startswith("TORCH=")]
    assert line, err
    return line[-1] == "TORCH=True", r.stdout


def _small_png(path: Path, seed: int) -> Path:
    from PIL import Image

    rng = np.random.default_rng(seed)
    Image.fromarray((rng.random((40, 56, 3)) * 255).astype(np.uint8)).save(path)
    return path


@needs_ov
def test_the_openvino_command_path_never_imports_torch(tmp_path: Path) -> None:
    """``defocus deblur`` on the OpenVINO backend: one file, a folder of two, stdin to stdout, none loads torch;
    the same probe with ``--backend torch`` sees torch (so the probe can fail)."""
    ov = ["--backend", "openvino", "--precision", "fp32"]
    one = _small_png(tmp_path / "one.png", 0)
    torch_seen, _ = _probe_torch(["deblur", str(one), "-o", str(tmp_path / "one_out.png"), *ov], tmp_path)
    assert not torch_seen and (tmp_path / "one_out.png").is_file()

    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(2):
        _small_png(folder / f"p{i}.png", i + 1)
    torch_seen, _ = _probe_torch(["deblur", str(folder), "-o", f"{tmp_path / 'out'}/", *ov, "--tile", "32", "--overlap", "8"], tmp_path)
    assert not torch_seen and sorted(p.name for p in (tmp_path / "out").iterdir()) == ["p0.png", "p1.png"]

    torch_seen, out = _probe_torch(["deblur", "-", "-o", "-", "--format", "png", *ov, "--tta", "--strength", "0.5"],
                                   tmp_path, stdin=one.read_bytes())
    assert not torch_seen and out.startswith(b"\x89PNG")

    torch_seen, _ = _probe_torch(["deblur", str(one), "-o", str(tmp_path / "t.png"), "--backend", "torch"], tmp_path)
    assert torch_seen


@needs_ov
def test_the_engine_traits_come_from_the_registry_row_and_equal_the_torch_networks(loaded: Any) -> None:
    """The OpenVINO engine is built without the torch network: its traits (registry row) must be the network's."""
    from defocus_cli.backends.openvino import TRAIT_KEYS, load_engine, row_traits
    from defocus_cli.runtime import engine_traits

    spec = registry.get_spec("sftnet")
    torch_traits = engine_traits(loaded.module)
    assert row_traits(spec.name, spec.openvino) == {k: float(getattr(torch_traits, k)) for k in TRAIT_KEYS}
    eng = engine_traits(load_engine(spec, "fp32"))
    assert (eng.multiple_of, eng.receptive_field, eng.tone_lock_sigma) == (
        torch_traits.multiple_of, torch_traits.receptive_field, torch_traits.tone_lock_sigma)
    assert eng.host_engine and eng.precision == "fp32"
    assert eng.bytes_per_pixel == float(spec.openvino["bytes_per_pixel"]["fp32"])  # measured for the IR
    with pytest.raises(WeightsError, match="register_weights"):
        row_traits(spec.name, {k: v for k, v in spec.openvino.items() if k != "traits"})


@needs_ov
def test_the_ir_is_pinned_to_the_registered_weights_without_reading_them() -> None:
    """By name, the IR's source is checked against the registry's pinned safetensors sha256 (row and rt_info)."""
    from defocus_cli.backends.openvino import load_engine

    spec = registry.get_spec("sftnet")
    assert load_engine(spec, "fp32").source_sha256 == spec.sha256
    with pytest.raises(WeightsError, match="export_openvino"):
        load_engine(spec, "fp32", weights_sha256="d" * 64)
    with pytest.raises(WeightsError, match="export_openvino"):
        load_engine(replace(spec, sha256="d" * 64), "fp32")


@needs_ov
def test_static_shape_compiles_then_the_dynamic_one_give_the_same_result(photo: np.ndarray) -> None:
    """The engine compiles the IR for its first input shapes (faster) and runs others on the dynamic compile."""
    from defocus_cli.backends import openvino as ovb

    eng = ovb.load_engine(registry.get_spec("sftnet"), "fp32")
    crops = [np.ascontiguousarray(photo[:h, :w].transpose(2, 0, 1)[None]) for h, w in ((64, 96), (96, 64), (80, 80))]
    outs = [eng(c) for c in crops]
    assert list(eng._requests) == [(1, 3, 64, 96), (1, 3, 96, 64), None][: len(eng._requests)]
    assert len(eng._requests) == ovb.STATIC_SHAPES + 1
    dynamic = ovb.OpenVINOEngine(compiled=ovb.compile_ir(eng.model_key, eng.model, "fp32"), precision="fp32",
                                 multiple_of=eng.multiple_of, receptive_field=eng.receptive_field,
                                 bytes_per_pixel=eng.bytes_per_pixel, tone_lock_sigma=eng.tone_lock_sigma,
                                 source_sha256=eng.source_sha256)
    for c, o in zip(crops, outs):
        assert o.shape == c.shape and o.dtype == np.float32
        assert float(np.abs(dynamic(c) - o).max()) < 1e-4
