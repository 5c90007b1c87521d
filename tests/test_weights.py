"""Weights delivery (defocus_cli.fetch, defocus_cli.weights + registry) against a loopback fake Hub: resolution order,
pinned revisions, sha256 integrity, offline use, faults, and load_model."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from defocus_cli import fetch, registry, weights
from defocus_cli.archs import table
from defocus_cli.errors import UsageError, WeightsError
from hubserver import HubEnv, tiny_weight_bytes

ROOT = Path(__file__).resolve().parent.parent


class TinyNet(torch.nn.Module):
    """A 1×1 convolution standing in for a real architecture: (N,3,H,W) → (N,3,H,W)."""

    def __init__(self, channels: int = 3) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def _tiny_file(path: Path, *, arch: str | None = "tiny", extra_key: bool = False, seed: int = 0) -> bytes:
    g = torch.Generator().manual_seed(seed)
    state = {"conv.weight": torch.randn(3, 3, 1, 1, generator=g), "conv.bias": torch.randn(3, generator=g)}
    if extra_key:
        state["head.weight"] = torch.zeros(2)
    save_file(state, str(path), metadata={"arch": arch} if arch else None)
    return path.read_bytes()


def _add_arch(monkeypatch: pytest.MonkeyPatch, key: str = "tiny", cls: str = "TinyNet") -> None:
    """Add a stand-in deblur architecture ``key`` (this module's ``cls``) to the arch table for one test."""
    row = table.ArchSpec(key=key, target=f"{__name__}:{cls}", task="deblur", multiple_of=1, receptive_field=0,
                         safe_precisions=("fp32",))
    monkeypatch.setitem(table._BY_KEY, key, row)


def _sync(env: HubEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    models, defaults = registry.read_registry(env.registry_path)
    monkeypatch.setattr(registry, "MODELS", models)
    monkeypatch.setattr(registry, "DEFAULTS", defaults)


@pytest.fixture
def hubenv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Two tiny registered models (alpha: deblur, default; beta: map) served on 127.0.0.1."""
    _add_arch(monkeypatch)
    env = HubEnv(tmp_path)
    env.add_model("alpha", tiny_weight_bytes("ifan", seed=1), default=True)
    env.add_model("beta", tiny_weight_bytes("defocusgan-map", seed=2), arch="defocusgan-map", task="map")
    for k, v in env.env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("DEFOCUS_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    _sync(env, monkeypatch)
    yield env
    env.stop()


# ------------------------------------------------------------------------------------------------
# Download, cache, offline


def test_download_pins_revision_and_verifies(hubenv: HubEnv) -> None:
    spec = registry.get_spec("alpha")
    got = fetch.download(spec)
    assert got.source == "hub"
    assert got.sha256 == spec.sha256
    assert got.path.read_bytes() == hubenv.data["alpha"]
    assert spec.revision in got.path.parts  # snapshots/<pinned commit>/file
    assert got.path.is_relative_to(hubenv.cache)
    assert any(m == "GET" and spec.revision in p for m, p, _ in hubenv.hub.requests)


def test_cache_hit_needs_no_server(hubenv: HubEnv) -> None:
    spec = registry.get_spec("alpha")
    fetch.download(spec)
    n = len(hubenv.hub.requests)
    hubenv.stop()
    got = fetch.resolve(spec)
    assert got.source == "hf-cache"
    assert got.sha256 == spec.sha256
    assert len(hubenv.hub.requests) == n


def test_offline_uses_cache_and_fails_cleanly_without_it(hubenv: HubEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    alpha, beta = registry.get_spec("alpha"), registry.get_spec("beta")
    fetch.download(alpha)
    n = len(hubenv.hub.requests)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert fetch.resolve(alpha).source == "hf-cache"
    with pytest.raises(WeightsError, match="defocus models download beta"):
        fetch.resolve(beta)
    assert len(hubenv.hub.requests) == n  # offline: no HTTP at all


@pytest.mark.parametrize("fault", ["404", "500", "timeout", "truncated", "tampered"])
def test_faults_raise_weights_error_and_leave_nothing(hubenv: HubEnv, fault: str) -> None:
    spec = registry.get_spec("alpha")
    hubenv.hub.fault(fault)
    t0 = time.monotonic()
    with pytest.raises(WeightsError) as info:
        fetch.download(spec)
    assert time.monotonic() - t0 < 10, "a failing Hub must fail fast"
    assert "\n" not in str(info.value)
    assert fetch.cached_file(spec) is None
    assert hubenv.blobs() == []
    assert not list(hubenv.cache.rglob("*.incomplete"))
    hubenv.hub.fault(None)  # the fault is gone: the next call works
    assert fetch.download(spec).sha256 == spec.sha256


@pytest.mark.slow
def test_dropped_connection_is_retried_then_fails(hubenv: HubEnv) -> None:
    spec = registry.get_spec("alpha")
    hubenv.hub.fault("dropped")
    with pytest.raises(WeightsError):
        fetch.download(spec)
    assert fetch.cached_file(spec) is None and hubenv.blobs() == []


def test_hub_serving_a_different_file_is_refused_before_download(hubenv: HubEnv) -> None:
    spec = registry.get_spec("alpha")
    hubenv.hub.add(spec.repo_id, spec.revision, spec.filename, tiny_weight_bytes("ifan", seed=99))
    with pytest.raises(WeightsError, match="different file"):
        fetch.download(spec)
    assert not any(m == "GET" and "resolve" in p for m, p, _ in hubenv.hub.requests)


def test_corrupt_cache_is_deleted_and_fetched_again(hubenv: HubEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = registry.get_spec("alpha")
    path = fetch.download(spec).path
    blob = path.resolve()
    raw = bytearray(blob.read_bytes())
    raw[len(raw) // 2] ^= 1
    blob.write_bytes(bytes(raw))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsError, match="corrupt"):
        fetch.resolve(spec)
    assert not blob.exists() and not path.exists()  # never used again
    monkeypatch.delenv("HF_HUB_OFFLINE")
    again = fetch.resolve(spec)
    assert again.source == "hub" and again.sha256 == spec.sha256


def test_verify_reports_each_copy(hubenv: HubEnv) -> None:
    spec = registry.get_spec("alpha")
    assert fetch.verify(spec) == []
    path = fetch.download(spec).path
    assert fetch.verify(spec) == [("hf-cache", path, None)]
    path.resolve().write_bytes(hubenv.data["beta"])
    [(source, _, err)] = fetch.verify(spec)
    assert source == "hf-cache" and err is not None and "corrupt" in err
    assert fetch.cached_file(spec) is None


# ------------------------------------------------------------------------------------------------
# The project's weights/ folder


def test_weights_dir_comes_first_and_is_never_deleted(hubenv: HubEnv) -> None:
    spec = registry.get_spec("alpha")
    own = Path(hubenv.env["DEFOCUS_WEIGHTS_DIR"]) / spec.filename
    own.write_bytes(hubenv.data["alpha"])
    got = fetch.resolve(spec)
    assert (got.source, got.path) == ("weights-dir", own)
    assert not [p for _, p, _ in hubenv.hub.requests if "resolve" in p]  # no Hub traffic
    own.write_bytes(hubenv.data["beta"])  # someone replaced it without re-registering
    with pytest.raises(WeightsError, match="refusing"):
        fetch.resolve(spec)
    assert own.read_bytes() == hubenv.data["beta"]  # refused, not deleted


def test_git_lfs_pointer_in_weights_dir_is_skipped(hubenv: HubEnv) -> None:
    spec = registry.get_spec("alpha")
    own = Path(hubenv.env["DEFOCUS_WEIGHTS_DIR"]) / spec.filename
    own.write_text(f"version https://git-lfs.github.com/spec/v1\noid sha256:{spec.sha256}\nsize {spec.size}\n")
    got = fetch.resolve(spec)
    assert got.source == "hub" and got.sha256 == spec.sha256


def test_clone_and_installed_weights_dirs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DEFOCUS_WEIGHTS_DIR", raising=False)
    dirs = fetch.weights_dirs()
    assert dirs[0] == ROOT / "weights"
    assert Path(sys.prefix) / fetch.INSTALLED_WEIGHTS_SUBDIR in dirs
    import tomllib

    data_files = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["data-files"]
    assert "weights/*.safetensors" in data_files[fetch.INSTALLED_WEIGHTS_SUBDIR]


# ------------------------------------------------------------------------------------------------
# load_model


def test_load_registered_model(hubenv: HubEnv, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = _tiny_file(tmp_path / "t.safetensors", seed=3)
    hubenv.add_model("tinynet", data, arch="tiny")
    _sync(hubenv, monkeypatch)
    m = weights.load_model("tinynet")
    assert (m.name, m.arch, m.sha256) == ("tinynet", "tiny", registry.get_spec("tinynet").sha256)
    assert m.spec == registry.get_spec("tinynet") and m.path == fetch.cached_file(m.spec)
    assert not m.module.training
    assert all(p.dtype == torch.float32 for p in m.module.parameters())
    g = torch.Generator().manual_seed(3)
    assert torch.equal(m.module.conv.weight, torch.randn(3, 3, 1, 1, generator=g))


def test_default_model_and_task_checks(hubenv: HubEnv, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    hubenv.add_model("tinynet", _tiny_file(tmp_path / "t.safetensors"), arch="tiny", default=True)
    _sync(hubenv, monkeypatch)
    assert registry.default_model("deblur") == "tinynet"
    assert weights.load_model().name == "tinynet"
    with pytest.raises(UsageError, match="map model"):
        weights.load_model("beta", task="deblur")
    with pytest.raises(UsageError, match="unknown model"):
        weights.load_model("nope")
    monkeypatch.setattr(registry, "MODELS", ())
    with pytest.raises(WeightsError, match="--weights"):
        weights.load_model()


def test_load_users_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _add_arch(monkeypatch)
    f = tmp_path / "mine.safetensors"
    _tiny_file(f, seed=5)
    m = weights.load_model(weights_file=f)
    assert (m.name, m.arch, m.spec, m.path) == ("mine", "tiny", None, f)
    assert m.sha256 == fetch.sha256_file(f)
    with pytest.raises(UsageError, match="not a map model"):
        weights.load_model(weights_file=f, task="map")


class BufferNet(TinyNet):
    """TinyNet with a tensor the weight file does not hold (a non-persistent buffer)."""

    def __init__(self, channels: int = 3) -> None:
        super().__init__(channels)
        self.register_buffer("scale", torch.full((channels,), 2.0), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x) * self.scale.view(1, -1, 1, 1)


def test_load_takes_the_files_tensors_and_builds_for_real_when_the_file_lacks_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The network is built on the meta device and given the file's tensors (fp16 files become float32);
    a network holding a tensor the file has not (here a non-persistent buffer) is built for real instead."""
    from safetensors.torch import load_file

    for arch, cls in (("tiny", "TinyNet"), ("tinybuf", "BufferNet")):
        _add_arch(monkeypatch, arch, cls)
    f = tmp_path / "half.safetensors"
    g = torch.Generator().manual_seed(7)
    state = {"conv.weight": torch.randn(3, 3, 1, 1, generator=g), "conv.bias": torch.randn(3, generator=g)}
    save_file({k: v.half() for k, v in state.items()}, str(f), metadata={"arch": "tiny"})
    m = weights.load_model(weights_file=f).module
    for k, v in load_file(str(f)).items():
        got = m.state_dict()[k]
        assert got.device.type == "cpu" and got.dtype == torch.float32 and torch.equal(got, v.float()), k
    b_file = tmp_path / "buf.safetensors"
    _tiny_file(b_file, arch="tinybuf", seed=5)
    b = weights.load_model(weights_file=b_file).module
    assert b.scale.device.type == "cpu" and torch.equal(b.scale, torch.full((3,), 2.0))
    assert torch.equal(b.conv.weight, load_file(str(b_file))["conv.weight"])
    x = torch.rand(1, 3, 4, 4)
    with torch.inference_mode():
        torch.testing.assert_close(b(x), torch.nn.functional.conv2d(x, b.conv.weight, b.conv.bias) * 2)


@pytest.mark.parametrize(
    ("kind", "message"),
    [("no-arch", "no 'arch'"), ("bad-arch", "unknown arch"), ("pickle", "not a safetensors"),
     ("extra-key", "unexpected keys: head.weight"), ("missing", "not found")],
)
def test_users_file_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str, message: str) -> None:
    _add_arch(monkeypatch)
    f = tmp_path / "mine.safetensors"
    if kind == "no-arch":
        _tiny_file(f, arch=None)
    elif kind == "bad-arch":
        _tiny_file(f, arch="resnet")
    elif kind == "pickle":
        torch.save({"conv.weight": torch.zeros(1)}, f)
    elif kind == "extra-key":
        _tiny_file(f, extra_key=True)
    with pytest.raises(WeightsError, match=message):
        weights.load_model(weights_file=f)
    if f.exists():
        assert f.is_file()  # the user's file is never touched


# ------------------------------------------------------------------------------------------------
# Registry data and its maintenance tool


def test_registry_validation(tmp_path: Path) -> None:
    good = {"name": "x", "task": "deblur", "arch": "ifan", "repo_id": "o/x", "filename": "x.safetensors",
            "revision": "a" * 40, "sha256": "b" * 64, "size": 1}
    spec = registry.spec_from_dict(good)
    assert spec.arch == registry.ARCHS["ifan"] and spec.arch_key == "ifan"
    assert spec.to_dict()["arch"] == "ifan"
    for bad in ({"revision": "main"}, {"sha256": "xyz"}, {"task": "upscale"}, {"arch": "resnet"}):
        with pytest.raises(WeightsError):
            registry.spec_from_dict({**good, **bad})
    p = tmp_path / "r.json"
    p.write_text(json.dumps({"models": [good, good]}))
    with pytest.raises(WeightsError, match="twice"):
        registry.read_registry(p)


def test_shipped_registry_is_valid() -> None:
    models, defaults = registry.read_registry(registry.REGISTRY_FILE)
    assert set(defaults) <= set(registry.TASKS)
    for task, name in defaults.items():
        assert name in [m.name for m in models if m.task == task]
    for m in models:
        assert m.arch in registry.ARCHS.values()


def test_register_weights_tool(tmp_path: Path) -> None:
    wdir = tmp_path / "weights"
    wdir.mkdir()
    (wdir / "ifan.safetensors").write_bytes(tiny_weight_bytes("ifan", seed=7))
    (wdir / "ifan.md").write_text("# card\n")
    reg = tmp_path / "models.json"
    tool = [sys.executable, str(ROOT / "tools" / "register_weights.py"), "--weights-dir", str(wdir),
            "--registry", str(reg)]
    run = subprocess.run([*tool, "--default", "deblur=ifan"], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    doc = json.loads(reg.read_text())
    [entry] = doc["models"]
    spec = registry.spec_from_dict(entry)
    assert spec.sha256 == fetch.sha256_file(wdir / "ifan.safetensors")
    assert spec.size == (wdir / "ifan.safetensors").stat().st_size
    assert (spec.task, spec.arch_key, spec.card, doc["defaults"]) == ("deblur", "ifan", "ifan.md", {"deblur": "ifan"})
    # deterministic: same bytes → same revision, --check passes; new bytes → new revision, --check fails
    assert subprocess.run([*tool, "--check"], capture_output=True, timeout=60).returncode == 0
    (wdir / "ifan.safetensors").write_bytes(tiny_weight_bytes("ifan", seed=8))
    assert subprocess.run([*tool, "--check"], capture_output=True, timeout=60).returncode == 1
    assert subprocess.run(tool, capture_output=True, timeout=60).returncode == 0
    assert json.loads(reg.read_text())["models"][0]["revision"] != entry["revision"]


@pytest.mark.slow
def test_wheel_ships_weights_as_data_files(tmp_path: Path) -> None:
    """A wheel built from the tree carries weights/*.safetensors where weights_dirs() looks."""
    pytest.importorskip("setuptools")
    pytest.importorskip("wheel")
    import shutil
    import zipfile

    src = tmp_path / "src"
    shutil.copytree(ROOT / "defocus_cli", src / "defocus_cli", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        if (ROOT / name).is_file():
            shutil.copy(ROOT / name, src / name)
    (src / "weights").mkdir()
    (src / "weights" / "probe.safetensors").write_bytes(tiny_weight_bytes("ifan"))
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-build-isolation", "--no-deps", "-q", "-w",
                        str(tmp_path / "dist"), str(src)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    [whl] = (tmp_path / "dist").glob("*.whl")
    names = zipfile.ZipFile(whl).namelist()
    assert any(n.endswith(f".data/data/{fetch.INSTALLED_WEIGHTS_SUBDIR}/probe.safetensors") for n in names)
    assert "defocus_cli/models.json" in names
