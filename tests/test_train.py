"""Trainer plumbing: checkpoints, logs, export, validation, the SFT-net trainer end to end, `defocus train`."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from safetensors import safe_open
from typer.testing import CliRunner

from defocus_cli.cli import app
from defocus_cli.data import make_patch_cache
from defocus_cli.train import TrainOptions, run
from defocus_cli.train.common import (
    JsonlLogger,
    RunDir,
    atomic_save,
    batches,
    curriculum_patch,
    export_safetensors,
    load_checkpoint,
    read_log,
    validate_lfdof,
)


def _texture(seed: int, h: int, w: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = cv2.GaussianBlur(rng.random((h, w, 3)).astype(np.float32), (0, 0), 1.0)
    return (img - img.min()) / (img.max() - img.min())


def _write(path: Path, rgb01: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), (rgb01[:, :, ::-1] * 255 + 0.5).astype(np.uint8))


@pytest.fixture(scope="module")
def tiny_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("photos")
    for i in range(4):
        _write(d / f"p{i}.png", _texture(i, 70, 90))
    return make_patch_cache(d / "cache.pt", 6, patch=40, seed=0, photos=d, split="all", coc_scale=2.0)


def test_checkpoint_round_trip_weights_only(tmp_path: Path) -> None:
    net = torch.nn.Conv2d(3, 4, 3)
    opt = torch.optim.Adam(net.parameters())
    net(torch.rand(1, 3, 8, 8)).mean().backward()
    opt.step()
    state = {"model": net.state_dict(), "optim": opt.state_dict(), "step": 7, "best": {"val_psnr": 25.5}}
    atomic_save(state, tmp_path / "x.pt")
    back = load_checkpoint(tmp_path / "x.pt")
    assert back["step"] == 7 and back["best"]["val_psnr"] == 25.5
    torch.testing.assert_close(back["model"]["weight"], net.weight.detach())
    assert not (tmp_path / "x.pt.tmp").exists()


def test_run_dir_and_jsonl_log(tmp_path: Path) -> None:
    rd = RunDir(tmp_path / "run", save_every_s=0)
    assert rd.load_last() is None and rd.due()
    rd.save({"step": 3}, best=True)
    assert rd.load_last()["step"] == 3 and rd.best.exists()
    lg = JsonlLogger(rd.log_path)
    lg.log(step=1, loss=torch.tensor(0.5), lr=1e-4)
    lg.log(step=2, loss=float("nan"))
    recs = read_log(rd.log_path)
    assert [r["step"] for r in recs] == [1, 2]
    assert recs[0]["loss"] == 0.5 and recs[1]["loss"] is None


def test_curriculum_small_patches_first() -> None:
    sched = [(0.0, 64), (0.5, 128)]
    assert curriculum_patch(0, 100, sched) == 64
    assert curriculum_patch(49, 100, sched) == 64
    assert curriculum_patch(50, 100, sched) == 128


def test_batches_are_resumable(tiny_cache: Path) -> None:
    from defocus_cli.data import PatchCache

    ds = PatchCache(tiny_cache, augment=False)
    it = batches(ds, 2, seed=3)
    next(it)
    second = next(it)
    again = next(batches(ds, 2, seed=3, start=1))
    assert torch.equal(second["blur"], again["blur"])


def test_export_is_fp16_with_metadata(tmp_path: Path) -> None:
    net = torch.nn.Conv2d(3, 3, 1)
    out = export_safetensors(net, tmp_path / "w.safetensors", arch="sftnet", steps=12, notes="x")
    with safe_open(str(out), "pt") as f:
        md = f.metadata()
        assert f.get_tensor("weight").dtype == torch.float16
    assert md["arch"] == "sftnet" and md["source"] == "trained" and md["steps"] == "12"
    assert md["producer"].startswith("defocus_cli ")


def test_validate_lfdof_identity_equals_input(tmp_path: Path) -> None:
    for n in ("a", "b"):
        _write(tmp_path / "v" / "input" / f"{n}.png", _texture(1, 24, 32))
        _write(tmp_path / "v" / "target" / f"{n}.png", _texture(2, 24, 32))
    r = validate_lfdof(torch.nn.Identity(), tmp_path / "v")
    assert r["n"] == 2
    assert abs(r["val_psnr"] - r["input_psnr"]) < 1e-9 and abs(r["val_ssim"] - r["input_ssim"]) < 1e-9
    r2 = validate_lfdof(lambda x: torch.zeros_like(x), tmp_path / "v")
    assert r2["val_psnr"] < r["val_psnr"]


def test_sftnet_trainer_runs_resumes_and_exports(tiny_cache: Path, tmp_path: Path) -> None:
    out = tmp_path / "sftnet.safetensors"
    opts = TrainOptions(model="sftnet", cache=[tiny_cache], steps=10, patch=32, batch=2, out=out,
                        run_dir=tmp_path / "run", val_every=100, threads=1)
    s = run(opts)
    assert s["steps"] == 10 and out.exists()
    recs = [r for r in read_log(tmp_path / "run" / "log.jsonl") if "loss" in r]
    stages = [r["stage"] for r in recs]
    assert stages == sorted(stages) and set(stages) == {1, 2, 3}
    assert all(np.isfinite(r["loss"]) for r in recs) and "wd" in recs[-1]
    opts.steps, opts.resume = 11, True
    assert run(opts)["steps"] == 11
    recs = [r for r in read_log(tmp_path / "run" / "log.jsonl") if "loss" in r]
    assert [r["step"] for r in recs] == list(range(1, 12))
    with safe_open(str(out), "pt") as f:
        assert f.metadata()["arch"] == "sftnet"
        from defocus_cli.archs.sftnet import SFTNet

        assert set(f.keys()) == set(SFTNet().state_dict())


def test_sftnet_curriculum_override(tiny_cache: Path, tmp_path: Path) -> None:
    opts = TrainOptions(model="sftnet", cache=[tiny_cache], steps=4, patch=32, batch=2, out=tmp_path / "w.safetensors",
                        run_dir=tmp_path / "run", val_every=100, threads=1,
                        extra={"curriculum": [[0, 24], [0.5, 40]]})
    run(opts)
    recs = [r for r in read_log(tmp_path / "run" / "log.jsonl") if "loss" in r]
    assert [r["patch"] for r in recs] == [24, 24, 32, 32]  # capped at --patch
    opts.extra = {"curriculum": [[0.2, 24]]}
    with pytest.raises(ValueError, match="fraction 0"):
        run(opts)


def test_cli_train_rejects_bad_requests() -> None:
    runner = CliRunner()
    r = runner.invoke(app, ["train", "nosuchnet", "--data", "."])
    assert r.exit_code == 2 and "nosuchnet" in r.output
    r = runner.invoke(app, ["train", "sftnet"])
    assert r.exit_code == 2 and "--data" in r.output


def test_cli_train_sftnet_tiny(tiny_cache: Path, tmp_path: Path) -> None:
    out = tmp_path / "w.safetensors"
    r = CliRunner().invoke(app, ["train", "sftnet", "--cache", str(tiny_cache), "--steps", "2", "--patch", "32",
                                 "--batch", "2", "--out", str(out), "--run-dir", str(tmp_path / "r"),
                                 "--threads", "1", "-q"])
    assert r.exit_code == 0, r.output
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert summary["steps"] == 2 and Path(summary["out"]).exists()


def test_evaluate_for_card_reports_input_and_output(tmp_path: Path) -> None:
    from defocus_cli.archs.sftnet import SFTNet
    from defocus_cli.train.common import evaluate_for_card

    for n in ("a", "b"):
        _write(tmp_path / "v" / "input" / f"{n}.png", _texture(1, 40, 48))
        _write(tmp_path / "v" / "target" / f"{n}.png", _texture(2, 40, 48))
    for i in range(4):
        _write(tmp_path / "ph" / f"p{i}.png", _texture(10 + i, 80, 80))
    res = evaluate_for_card(SFTNet(), tmp_path / "v", tmp_path / "ph", use_lpips=True,
                            syn_params={"n": 2, "seed": 1, "patch": 48, "coc_scale": 3.0})
    lf, syn = res["lfdof"], res["synthetic"]
    assert lf["n"] == 2 and syn["n"] == 2
    # the untrained SFT-net is the identity, so output and input scores agree
    assert abs(lf["psnr"] - lf["input_psnr"]) < 0.2 and abs(syn["lpips"] - syn["input_lpips"]) < 0.02
    assert syn["map_mae_px"] >= 0


def test_exports_and_checkpoints_take_any_legal_name_and_leave_no_temp(tmp_path) -> None:  # noqa: ANN001
    import torch

    from defocus_cli.train.common import atomic_save, export_safetensors

    name = "w" * 240 + ".safetensors"  # 252 bytes: legal, but '<name>.tmp' would not be
    out = export_safetensors(torch.nn.Linear(2, 2), tmp_path / name, arch="sftnet", steps=3)
    assert out.is_file() and out.name == name
    atomic_save({"step": 1}, tmp_path / ("c" * 250 + ".pt"))
    assert sorted(p.name[:1] for p in tmp_path.iterdir()) == ["c", "w"]  # nothing else, no temporary file

    class Boom:
        def __reduce__(self):  # noqa: ANN204
            raise RuntimeError("cannot pickle")

    with pytest.raises(RuntimeError, match="cannot pickle"):
        atomic_save({"x": Boom()}, tmp_path / "bad.pt")
    assert not (tmp_path / "bad.pt").exists() and len(list(tmp_path.iterdir())) == 2
