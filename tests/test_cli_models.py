"""`defocus models list|info|download|verify|convert`: exit codes, JSON, messages, against a loopback Hub.

Most tests run the Typer app in-process (the library reads the environment at call time); the
end-to-end ones run `python -m defocus_cli` in a subprocess so that huggingface_hub sees the
environment at import time too, as a user's shell would give it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest
from typer.testing import CliRunner

from defocus_cli import fetch, registry
from defocus_cli.cli import app
from hubserver import FakeHub, HubEnv, tiny_weight_bytes

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def hubenv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Two tiny registered models (alpha: deblur, default; beta: map) served on 127.0.0.1."""
    env = HubEnv(tmp_path)
    env.add_model("alpha", tiny_weight_bytes("ifan", seed=1), default=True)
    env.add_model("beta", tiny_weight_bytes("defocusgan-map", seed=2), arch="defocusgan-map", task="map")
    for k, v in env.env.items():
        monkeypatch.setenv(k, v)
    for k in ("HF_HUB_OFFLINE", "DEFOCUS_OFFLINE", "HF_HUB_CACHE"):
        monkeypatch.delenv(k, raising=False)
    models, defaults = registry.read_registry(env.registry_path)
    monkeypatch.setattr(registry, "MODELS", models)
    monkeypatch.setattr(registry, "DEFAULTS", defaults)
    yield env
    env.stop()


def invoke(*args: str):
    return CliRunner().invoke(app, ["models", *args])


def run_cli(env: dict[str, str], *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "DEFOCUS_"))}
    full.update(env)
    return subprocess.run([sys.executable, "-m", "defocus_cli", "models", *args], env=full,
                          capture_output=True, text=True, timeout=timeout, cwd=ROOT)


# ------------------------------------------------------------------------------------------------
# list / info


def test_list_json_shape_and_cached_flag(hubenv: HubEnv) -> None:
    r = invoke("list", "--json")
    assert r.exit_code == 0, r.stderr
    rows = {m["name"]: m for m in json.loads(r.stdout)["models"]}
    assert set(rows) == {"alpha", "beta"}
    for key in ("name", "task", "arch", "source", "sha256", "cached", "license", "size", "revision"):
        assert key in rows["alpha"]
    assert (rows["alpha"]["task"], rows["alpha"]["arch"], rows["beta"]["task"]) == ("deblur", "ifan", "map")
    assert rows["alpha"]["default"] is True and rows["beta"]["default"] is False
    assert rows["alpha"]["cached"] is False and rows["alpha"]["source"] == "hub"
    assert invoke("download", "alpha").exit_code == 0
    rows = {m["name"]: m for m in json.loads(invoke("list", "--json").stdout)["models"]}
    assert rows["alpha"]["cached"] is True and rows["alpha"]["source"] == "hf-cache"
    assert rows["beta"]["cached"] is False


def test_list_human_and_info(hubenv: HubEnv) -> None:
    r = invoke("list")
    assert r.exit_code == 0 and "alpha" in r.stdout and "MIT" in r.stdout
    r = invoke("info", "beta")
    assert r.exit_code == 0
    spec = registry.get_spec("beta")
    assert spec.sha256 in r.stdout and spec.revision in r.stdout and spec.repo_id in r.stdout
    info = json.loads(invoke("info", "alpha", "--json").stdout)
    assert info["sha256"] == registry.get_spec("alpha").sha256 and info["source"] == "hub"
    r = invoke("info", "nope")
    assert r.exit_code == 2 and "alpha" in r.stderr and "Traceback" not in r.output


def test_list_and_info_do_not_import_torch(hubenv: HubEnv) -> None:
    code = (
        "import sys\nfrom defocus_cli.cli import app\n"
        "for args in (['models','list','--json'], ['models','info','alpha'], ['models','verify']):\n"
        "    try:\n        app(args, standalone_mode=False)\n    except SystemExit:\n        pass\n"
        "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH', file=sys.stderr)\n"
    )
    env = {**os.environ, **hubenv.env}
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert "NO-TORCH" in r.stderr
    assert '"alpha"' in r.stdout


# ------------------------------------------------------------------------------------------------
# download / verify


def test_download_all_then_verify(hubenv: HubEnv) -> None:
    r = invoke("download", "--json")
    assert r.exit_code == 0, r.stderr
    items = json.loads(r.stdout)["items"]
    assert [i["status"] for i in items] == ["ok", "ok"]
    for item in items:
        assert Path(item["path"]).read_bytes() == hubenv.data[item["name"]]
        assert Path(item["path"]).is_relative_to(hubenv.cache)
    r = invoke("verify", "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["ok"] is True
    r = invoke("download", "alpha")  # a second download is a cache hit
    assert r.exit_code == 0 and "already cached" in r.stderr


def test_verify_catches_a_corrupted_cached_byte(hubenv: HubEnv) -> None:
    assert invoke("download").exit_code == 0
    blob = fetch.cached_file(registry.get_spec("beta")).resolve()
    raw = bytearray(blob.read_bytes())
    raw[-1] ^= 0x01
    blob.write_bytes(bytes(raw))
    r = invoke("verify")
    assert r.exit_code == 3
    assert "beta" in r.stderr and "corrupt" in r.stderr and "Traceback" not in r.output
    assert not blob.exists()  # the bad file is not used again
    assert invoke("verify", "alpha").exit_code == 0


def test_verify_named_but_missing_fails(hubenv: HubEnv) -> None:
    r = invoke("verify", "alpha")
    assert r.exit_code == 3 and "defocus models download alpha" in r.stderr
    r = invoke("verify")  # nothing named: never-downloaded models are only reported
    assert r.exit_code == 0 and "not downloaded" in r.stderr


@pytest.mark.parametrize("fault", ["500", "tampered", "404", "truncated"])
def test_download_fault_exit_3_nothing_usable_left(hubenv: HubEnv, fault: str) -> None:
    hubenv.hub.fault(fault, "alpha.safetensors")
    r = invoke("download")
    assert r.exit_code == 3
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "'alpha'" in errors[0]
    assert "Traceback" not in r.output
    assert fetch.cached_file(registry.get_spec("alpha")) is None
    assert fetch.cached_file(registry.get_spec("beta")) is not None  # the other model still came
    assert invoke("verify", "alpha").exit_code == 3


def test_unknown_name_is_a_usage_error(hubenv: HubEnv) -> None:
    r = invoke("download", "alpha", "nope")
    assert r.exit_code == 2 and "nope" in r.stderr
    assert hubenv.blobs() == []


# ------------------------------------------------------------------------------------------------
# End to end in subprocesses (environment seen at import time, as from a shell)


def test_end_to_end_download_offline_verify(hubenv: HubEnv) -> None:
    r = run_cli(hubenv.env, "download")
    assert r.returncode == 0, r.stderr
    assert len(hubenv.blobs()) == 2
    hubenv.stop()  # no network from here on
    offline = {**hubenv.env, "HF_HUB_OFFLINE": "1"}
    r = run_cli(offline, "verify", "alpha", "beta")
    assert r.returncode == 0, r.stderr
    r = run_cli(offline, "list", "--json")
    assert all(m["cached"] for m in json.loads(r.stdout)["models"])


def test_offline_empty_cache_exit_3_with_the_command(hubenv: HubEnv) -> None:
    hubenv.stop()
    r = run_cli({**hubenv.env, "HF_HUB_OFFLINE": "1"}, "download", "alpha")
    assert r.returncode == 3
    assert "defocus models download alpha" in r.stderr
    assert "Traceback" not in r.stderr + r.stdout


def test_registered_project_weights_download_from_loopback_hub(tmp_path: Path) -> None:
    """Every model of the shipped registry, served from weights/, downloads into HF_HOME."""
    models, _ = registry.read_registry(registry.REGISTRY_FILE)
    present = [(m, ROOT / "weights" / m.filename) for m in models if (ROOT / "weights" / m.filename).is_file()]
    assert models, "the shipped registry lists no models"
    assert len(present) == len(models), f"registered files missing from weights/: {[m.filename for m in models]}"
    with FakeHub() as hub:
        for spec, path in present:
            hub.add_spec(spec, path.read_bytes())
        env = {"HF_HOME": str(tmp_path / "hf"), "HF_ENDPOINT": hub.url, "HF_HUB_ETAG_TIMEOUT": "2",
               "HF_HUB_DISABLE_PROGRESS_BARS": "1", "NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1"}
        r = run_cli(env, "download", "--json", timeout=300)
    assert r.returncode == 0, r.stderr
    items = json.loads(r.stdout)["items"]
    assert {i["name"] for i in items} == {m.name for m in models}
    assert all(i["sha256"] == registry.get_spec(i["name"]).sha256 for i in items)


# ------------------------------------------------------------------------------------------------
# convert


def test_convert_calls_the_converter(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def fake_convert(src, dst, arch, *, dtype="fp32", overwrite=True):  # noqa: ANN001, ANN202
        calls.append((Path(src), Path(dst), arch, dtype, overwrite))
        Path(dst).write_bytes(b"x")
        return {"sha256": f"feed{len(calls):060d}", "dtype": dtype}  # not the file's hash: must be reported as is

    monkeypatch.setitem(sys.modules, "defocus_cli.convert", types.SimpleNamespace(convert_checkpoint=fake_convert))
    src = tmp_path / "IFAN.pytorch"
    src.write_bytes(b"pickle")
    dst = tmp_path / "ifan.safetensors"
    r = invoke("convert", str(src), "-o", str(dst), "--arch", "ifan")
    assert r.exit_code == 0, r.stderr
    assert calls == [(src, dst, "ifan", "fp32", False)]
    assert f"feed{1:060d}" in r.stderr.replace("\n", "")
    r = invoke("convert", str(src), "-o", str(dst), "--arch", "ifan", "--overwrite", "--fp16")
    assert r.exit_code == 0, r.stderr
    assert calls[-1] == (src, dst, "ifan", "fp16", True)
    assert f"feed{2:060d}" in r.stderr.replace("\n", "") and "fp16" in r.stderr
    assert invoke("convert", str(src), "-o", str(tmp_path / "o.safetensors"), "--arch", "vgg").exit_code == 2
    assert invoke("convert", str(src), "-o", str(tmp_path / "o.pth"), "--arch", "ifan").exit_code == 2
    assert invoke("convert", str(tmp_path / "none.pth"), "-o", str(tmp_path / "o.safetensors"),
                  "--arch", "ifan").exit_code == 1
    assert len(calls) == 2


def test_convert_existing_output_and_bad_checkpoint_exit_1(tmp_path: Path) -> None:
    """The real converter: DST exists without --overwrite → 2 (a safety rule, checked first) and DST untouched;
    not a checkpoint → 1."""
    src = tmp_path / "IFAN.pytorch"
    src.write_bytes(b"not a pickle at all")
    dst = tmp_path / "ifan.safetensors"
    dst.write_bytes(b"old")
    r = invoke("convert", str(src), "-o", str(dst), "--arch", "ifan")
    assert r.exit_code == 2 and "--overwrite" in r.stderr
    assert dst.read_bytes() == b"old"
    r = invoke("convert", str(src), "-o", str(dst), "--arch", "ifan", "--overwrite")
    assert r.exit_code == 1 and r.stderr.startswith("error: IFAN.pytorch")
    assert dst.read_bytes() == b"old"
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_experimental_model_is_never_the_default_and_list_says_why(hubenv: HubEnv,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import dataclasses

    reason = "makes real photos worse on average (dpdd_val -0.4 dB)"
    models = tuple(dataclasses.replace(m, experimental=reason) if m.name == "alpha" else m for m in registry.MODELS)
    monkeypatch.setattr(registry, "MODELS", models)
    # alpha is the registry's deblur default, but experimental: no deblur model is offered by default
    with pytest.raises(Exception, match="no trained deblur model"):
        registry.default_model("deblur")
    assert registry.default_model("map") == "beta"
    r = invoke("list", "--json")
    assert r.exit_code == 0
    rows = {m["name"]: m for m in json.loads(r.stdout)["models"]}
    assert rows["alpha"]["experimental"] == reason and rows["alpha"]["default"] is False
    assert rows["beta"]["experimental"] == ""
    table = invoke("list")
    assert table.exit_code == 0 and "experimental" in table.output
    # round trip through the registry file format keeps the reason
    assert registry.spec_from_dict(models[0].to_dict() if models[0].name == "alpha" else models[1].to_dict()
                                   ).experimental == reason


def test_list_fits_80_columns_and_never_cuts_a_name(hubenv: HubEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    import dataclasses

    monkeypatch.setenv("COLUMNS", "80")
    long_name = "defocusgan-map-finetuned-v2"  # 27 characters
    models = tuple(dataclasses.replace(m, name=long_name, experimental="worse on real photos") if m.name == "beta"
                   else m for m in registry.MODELS)
    monkeypatch.setattr(registry, "MODELS", models)
    r = invoke("list")
    assert r.exit_code == 0, r.stderr
    lines = r.stdout.splitlines()
    assert max(len(ln) for ln in lines) <= 80, r.stdout
    assert lines[0].split() == ["name", "task", "size", "available", "licence", "status"]
    rows = {ln.split()[0]: ln.split() for ln in lines[1:]}
    assert set(rows) == {"alpha", long_name}  # whole names, one row each (no wrapping, no "…")
    assert rows["alpha"][-1] == "default" and rows[long_name][-1] == "experimental"
    assert "…" not in r.stdout
    assert "models info" in r.stderr


def test_shipped_registry_list_at_80_columns(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    r = invoke("list")
    assert r.exit_code == 0, r.stderr
    assert max(len(ln) for ln in r.stdout.splitlines()) <= 80
    names = [ln.split()[0] for ln in r.stdout.splitlines()[1:]]
    assert names == [m.name for m in registry.MODELS]
    assert "LFDOF" not in r.stdout and "…" not in r.stdout  # training notes stay in `models info`
