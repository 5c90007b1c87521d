"""``bench/gpu_train.sh``: the prepared command for a short GPU lend, dry-run on the CPU.

The dry run is the script itself with ``DEVICE=cpu`` and tiny settings (2 steps, 32 px, generated photos and a
generated validation folder): all three trainers start from the same command lines a GPU run uses, run at the
same time, write their checkpoints and logs under OUTDIR, and a second run on the same OUTDIR resumes them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "bench" / "gpu_train.sh"
MODELS = ("sftnet", "ifan", "defocusgan")

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="bench/gpu_train.sh needs bash")


def _texture(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    img = cv2.resize(rng.random((h // 8, w // 8, 3)).astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
    for _ in range(8):  # hard edges, so that the blur matters
        x, y = (int(v) for v in rng.integers(4, min(h, w) - 4, size=2))
        cv2.circle(img, (x, y), int(rng.integers(3, 12)), tuple(float(c) for c in rng.random(3)), -1)
    return (np.clip(img, 0, 1) * 255).astype(np.uint8)


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(4 sharp photos of 96×128 px, a paired validation folder of two 64 px pairs)."""
    d = tmp_path_factory.mktemp("gpu_script")
    rng = np.random.default_rng(0)
    photos = d / "photos"
    photos.mkdir()
    for i in range(4):
        cv2.imwrite(str(photos / f"p{i}.png"), _texture(rng, 96, 128))
    val = d / "val"
    for n in ("a", "b"):
        t = _texture(rng, 64, 64)
        for sub, img in (("target", t), ("input", cv2.GaussianBlur(t, (0, 0), 2.0))):
            (val / sub).mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(val / sub / f"{n}.png"), img)
    return photos, val


def _run(args: list[str], photos: Path | None = None, val: Path | None = None, models: str = "sftnet ifan defocusgan",
         python: str = sys.executable, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """``bench/gpu_train.sh ARGS`` with the dry-run settings (CPU, 2 steps, 32 px, batch 1, one thread each)."""
    env = dict(os.environ, DEVICE="cpu", STEPS="2", PATCH="32", SFT_BATCH="1", BATCH="1", THREADS="1",
               SYN_VAL_N="0", VAL_EVERY="250", PYTHON=python, MODELS=models)
    if photos is not None:
        env["DATA"] = str(photos)
    if val is not None:
        env["VAL"] = str(val)
    return subprocess.run(["bash", str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=timeout,
                          cwd=ROOT)


def _weights_state() -> dict[str, tuple[int, int]]:
    return {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in (ROOT / "weights").glob("*.safetensors")}


def test_dry_run_trains_all_three_and_resumes(tiny_data: tuple[Path, Path], tmp_path: Path) -> None:
    from defocus_cli.train.common import load_checkpoint, read_log

    photos, val = tiny_data
    out = tmp_path / "out"
    shipped = _weights_state()
    r = _run([str(out), "1"], photos, val)
    assert r.returncode == 0, r.stderr + "".join((out / m / "train.log").read_text()[-2000:]
                                                 for m in MODELS if (out / m / "train.log").exists())
    assert (out / "status.txt").read_text().split() == ["sftnet", "0", "ifan", "0", "defocusgan", "0"]
    for m in MODELS:
        ck = load_checkpoint(out / m / "last.pt")
        assert ck["step"] == 2, m
        tensors = [v for v in ck["model"].values()]
        assert tensors and all(t.device.type == "cpu" for t in tensors), m
        steps = [rec["step"] for rec in read_log(out / m / "log.jsonl") if rec.get("kind", "train") == "train"]
        assert steps == [1, 2], m
        head = (out / m / "train.log").read_text().splitlines()[0]
        assert f"train {m} " in head and "--device cpu" in head and "save_every_s=60" in head and "minutes=1" in head
        assert "--resume" not in head
    sft_head = (out / "sftnet" / "train.log").read_text()
    assert "--init weights/sftnet.safetensors" in sft_head and "coc_px=20" in sft_head and "tone_sigma=32" in sft_head
    assert "--init weights/ifan.safetensors" in (out / "ifan" / "train.log").read_text()
    assert _weights_state() == shipped  # exports go to OUTDIR, never to weights/

    # cut off and started again: the model resumes from its checkpoint (without --resume, DefocusGAN would
    # refuse the existing run folder with exit 2); one model only, to keep the test short
    r2 = _run([str(out), "1"], photos, val, models="defocusgan")
    assert r2.returncode == 0, r2.stderr
    assert (out / "status.txt").read_text().split() == ["defocusgan", "0"]
    log = (out / "defocusgan" / "train.log").read_text()
    assert "--resume" in log.split("\n# ")[-1].splitlines()[0]
    assert load_checkpoint(out / "defocusgan" / "last.pt")["step"] == 2
    assert "resumed" in log.split("\n# ")[-1]


def test_usage_errors_exit_2_before_training(tiny_data: tuple[Path, Path], tmp_path: Path) -> None:
    photos, val = tiny_data
    r = _run([], photos, val)
    assert r.returncode == 2 and "usage: bench/gpu_train.sh OUTDIR [MINUTES]" in r.stderr
    r = _run([str(tmp_path / "o"), "soon"], photos, val)
    assert r.returncode == 2 and "MINUTES must be a number" in r.stderr
    r = _run([str(tmp_path / "o")], tmp_path / "no_photos", val)
    assert r.returncode == 2 and "no_photos is not a folder" in r.stderr
    r = _run([str(tmp_path / "o")], photos, val, models="sftnet gan")
    assert r.returncode == 2 and "unknown model 'gan'" in r.stderr
    env_python = _run([str(tmp_path / "o")], photos, val, python="/nonexistent/python")
    assert env_python.returncode == 2 and "cannot import defocus_cli" in env_python.stderr
    assert not (tmp_path / "o").exists()
