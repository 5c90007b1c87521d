"""The Ray Data runner (defocus_cli.distributed, examples/ray_deblur.py) writes what `defocus deblur` writes.

A local Ray runtime (2 CPUs) deblurs a small folder with a tiny SFT-net weight file through the real weight
loader, in 2 actors; outputs must equal the CLI's byte for byte, and a bad file must give the same error
record while the others succeed. ray[data] is part of the [test] extra, so CI runs these tests.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from conftest import ROOT, make_exif, sample_icc, smooth_rgb
from defocus_cli.batch import BatchOptions
from defocus_cli.errors import UsageError

# Ray Data reads its own deprecated settings when it copies its context; not ours to fix
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.data.context")

TINY_CONFIG = {"ch": 4, "n_blocks": 1, "cond_ch": 4, "map_ch": 4, "map_blocks": 1}


def _runner():  # noqa: ANN202
    spec = importlib.util.spec_from_file_location("ray_deblur", ROOT / "examples" / "ray_deblur.py")
    mod = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod


@pytest.fixture(scope="module")
def ray_runtime():  # noqa: ANN201
    pytest.importorskip("ray.data", reason='needs ray[data]: pip install -e ".[test]" (or ".[ray]") installs it')
    import ray

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no network
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=80 << 20, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small, randomly initialised SFT-net file (the real loader and network, seconds on a CPU)."""
    import torch
    from safetensors.torch import save_file

    from defocus_cli.archs.sftnet import SFTNet

    torch.manual_seed(0)
    net = SFTNet(**TINY_CONFIG)
    path = tmp_path_factory.mktemp("w") / "tiny.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path),
              metadata={"arch": "sftnet", "config": json.dumps(TINY_CONFIG)})
    return path


def _photos(src: Path) -> None:
    """A JPEG with EXIF orientation 6, thumbnail and ICC; a 16-bit PNG; an RGBA PNG in a sub-folder; a bad file."""
    (src / "sub").mkdir(parents=True)
    Image.fromarray(smooth_rgb(40, 56, seed=1)).save(src / "cam.jpg", quality=92,
                                                     exif=make_exif(orientation=6, thumbnail=True),
                                                     icc_profile=sample_icc())
    Image.fromarray(smooth_rgb(36, 48, seed=2, dtype="uint16")[:, :, 0]).save(src / "deep.png")  # 16-bit gray
    import numpy as np

    rgba = np.dstack([smooth_rgb(32, 40, seed=3), np.full((32, 40), 200, np.uint8)])
    Image.fromarray(rgba, "RGBA").save(src / "sub" / "alpha.png")
    (src / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)


def test_ray_outputs_equal_the_cli_outputs(ray_runtime, tiny_weights: Path, tmp_path: Path,  # noqa: ANN001
                                           capsys) -> None:  # noqa: ANN001
    from typer.testing import CliRunner

    from defocus_cli.cli import app

    src = tmp_path / "in"
    _photos(src)
    common = [str(src), "-r", "--weights", str(tiny_weights), "--device", "cpu", "--json"]
    r = CliRunner().invoke(app, ["deblur", *common, "-o", str(tmp_path / "cli") + "/"])
    assert r.exit_code == 1, r.stderr  # the broken file fails, the rest are written
    cli_doc = json.loads(r.stdout)

    code = _runner().main([*common, "-o", str(tmp_path / "ray") + "/", "--workers", "2"])
    out, err = capsys.readouterr()
    assert code == 1, err
    ray_doc = json.loads(out)

    def records(doc: dict, root: Path) -> list[tuple]:  # noqa: ANN202
        return [(Path(i["input"]).relative_to(src).as_posix(),
                 None if i["output"] is None else Path(i["output"]).relative_to(root).as_posix(),
                 i["status"], i["error"]) for i in doc["items"]]

    assert records(ray_doc, tmp_path / "ray") == records(cli_doc, tmp_path / "cli")
    assert [s for *_, s, _ in records(ray_doc, tmp_path / "ray")] == ["error", "ok", "ok", "ok"]
    assert ray_doc["summary"] | {"seconds": 0} == {"ok": 3, "skipped": 0, "error": 1, "seconds": 0}
    for key in ("model", "weights_sha256", "device", "precision"):
        assert ray_doc[key] == cli_doc[key], key
    assert ray_doc["workers"] == 2
    for rel in ("cam.jpg", "deep.png", "sub/alpha.png"):
        assert (tmp_path / "ray" / rel).read_bytes() == (tmp_path / "cli" / rel).read_bytes(), rel
    # metadata came through the shared writer: EXIF kept (orientation applied, written as 1), ICC, 16 bits, alpha
    with Image.open(tmp_path / "ray" / "cam.jpg") as im:
        with Image.open(src / "cam.jpg") as im_in:
            icc = im_in.info["icc_profile"]
        assert im.size == (40, 56) and im.info["icc_profile"] == icc and im.getexif()[0x0112] == 1
    with Image.open(tmp_path / "ray" / "deep.png") as im:
        assert im.mode == "I;16"
    with Image.open(tmp_path / "ray" / "sub" / "alpha.png") as im:
        assert im.mode == "RGBA" and im.getchannel("A").getextrema() == (200, 200)
    assert not [p for p in (tmp_path / "ray").rglob(".defocus-*")]  # no temporary file left
    # the runner's table (stderr)
    assert "ok             3" in err and "error          1" in err and "broken.png:" in err

    # a second run refuses existing outputs before Ray starts any work; --skip-existing skips them
    assert _runner().main([*common, "-o", str(tmp_path / "ray") + "/"]) == 2
    assert "--skip-existing" in capsys.readouterr().err
    assert _runner().main([*common, "-o", str(tmp_path / "ray") + "/", "--skip-existing"]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert [i["status"] for i in doc["items"]] == ["error", "skipped", "skipped", "skipped"]


def test_weights_that_fail_in_the_workers_stop_the_run_with_exit_3(ray_runtime, tmp_path: Path,  # noqa: ANN001
                                                                   capsys) -> None:  # noqa: ANN001
    """An engine-wide error met in a worker (here: tensors that do not fit the file's config) comes back with
    its type, so the exit code is the CLI's, and nothing is written."""
    from safetensors.torch import save_file

    from defocus_cli.archs.sftnet import SFTNet

    bad = tmp_path / "bad.safetensors"
    save_file({k: v.contiguous() for k, v in SFTNet(**TINY_CONFIG).state_dict().items()}, str(bad),
              metadata={"arch": "sftnet", "config": json.dumps({**TINY_CONFIG, "ch": 8})})
    Image.fromarray(smooth_rgb(16, 16)).save(tmp_path / "a.png")
    code = _runner().main([str(tmp_path / "a.png"), "-o", str(tmp_path / "out") + "/", "--weights", str(bad)])
    assert code == 3, capsys.readouterr().err
    assert not (tmp_path / "out" / "a.png").exists()


# --------------------------------------------------------------------------------------- planning (no Ray)


def test_listing_is_planned_like_command_line_inputs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from defocus_cli.distributed import plan_inputs, read_listing

    for n in ("a", "b"):
        Image.fromarray(smooth_rgb(8, 8)).save(tmp_path / f"{n}.png")
    listing = tmp_path / "list.txt"
    listing.write_text("# photos\na.png\n\n" + str(tmp_path / "b.png") + "\nmissing.png\n")
    monkeypatch.chdir(tmp_path)  # relative paths are taken from the current folder
    assert read_listing(listing) == ["a.png", str(tmp_path / "b.png"), "missing.png"]
    items = plan_inputs([], BatchOptions(output="out/"), listing=listing)
    assert [(i.input.name, i.status) for i in items] == [("missing.png", "error"), ("a.png", "pending"),
                                                        ("b.png", "pending")]
    assert items[1].output == Path("out/a.png")

    (tmp_path / "sub").mkdir()
    Image.fromarray(smooth_rgb(8, 8)).save(tmp_path / "sub" / "a.png")
    listing.write_text("a.png\nsub/a.png\n")
    with pytest.raises(UsageError, match="would both be written"):  # the CLI's collision check
        plan_inputs([], BatchOptions(output="out/"), listing=listing)
    with pytest.raises(UsageError, match="stdin/stdout"):
        plan_inputs(["-"], BatchOptions())
    with pytest.raises(UsageError, match="stdin/stdout"):
        plan_inputs(["a.png"], BatchOptions(output="-", fmt="png"))
    with pytest.raises(UsageError, match="no such file"):
        read_listing(tmp_path / "nope.txt")
    (tmp_path / "empty.txt").write_text("# nothing\n\n")
    with pytest.raises(UsageError, match="lists no path"):
        read_listing(tmp_path / "empty.txt")
    (tmp_path / "bin.txt").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(UsageError, match="not UTF-8"):
        read_listing(tmp_path / "bin.txt")


def test_importing_the_module_imports_neither_ray_nor_torch() -> None:
    code = "import sys, defocus_cli.distributed; print([m for m in ('ray', 'torch') if m in sys.modules])"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == "[]", r.stderr


def test_bad_engine_options_are_refused_on_the_driver(tmp_path: Path) -> None:
    from defocus_cli.distributed import EngineSettings, check_engine
    from defocus_cli.errors import WeightsError

    with pytest.raises(UsageError, match="precision"):
        check_engine(EngineSettings(precision="fp8"))
    with pytest.raises(UsageError, match="unknown model"):
        check_engine(EngineSettings(model="nope"))
    with pytest.raises(UsageError, match="strength"):
        check_engine(EngineSettings(strength=2.0))
    (tmp_path / "x.safetensors").write_bytes(b"junk")
    with pytest.raises(WeightsError):
        check_engine(EngineSettings(weights_file=str(tmp_path / "x.safetensors")))
