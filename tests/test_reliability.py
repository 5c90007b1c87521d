"""The guarantees of docs/reliability.md that need a real process or a failing disk: SIGTERM/SIGINT while a
temporary file is open, a closed stdout pipe, OpenCV's own log lines, third-party warnings, disk full.

Each subprocess runs ``defocus`` through :func:`defocus_cli.cli.main` with the tiny test engine of conftest
(no weights), from a short driver script written into tmp_path.
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from conftest import smooth_rgb
from defocus_cli.cli import app
from defocus_cli.errors import OutputError
from defocus_cli.io import atomic

TESTS = Path(__file__).resolve().parent

DRIVER = """
import os, sys, time
from pathlib import Path
sys.path.insert(0, {tests!r})
mark = {mark!r}
if mark:
    def slow_fsync(fd):  # hold the temporary file open until the test signals us
        Path(mark).write_text("writing")
        time.sleep(60)
    os.fsync = slow_fsync
from conftest import _make_engine
import defocus_cli.weights as w
w.load_model = lambda name=None, weights_file=None, task="deblur": w.LoadedModel(
    module=_make_engine("identity"), name="test", arch="test", sha256="0" * 64, path=Path("test"), spec=None)
sys.argv = ["defocus", *{argv!r}]
from defocus_cli.cli import main
main()
"""


def _driver(tmp_path: Path, argv: list[str], mark: Path | None = None) -> list[str]:
    script = tmp_path / "driver.py"
    script.write_text(DRIVER.format(tests=str(TESTS), mark=str(mark) if mark else "", argv=argv))
    return [sys.executable, str(script)]


def _fresh_signals() -> None:
    """Child set-up: default SIGINT/SIGTERM, unblocked. A child inherits its parent's ignored signals and signal
    mask, and this pytest process may hold either from another test's library (seen in the full suite: the
    SIGINT variants hung while each passed alone); the product must be tested as a shell would start it."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})


def _wait_for(p: Path, proc: subprocess.Popen, seconds: float = 120.0) -> None:
    t0 = time.monotonic()
    while not p.exists():
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"driver exited early ({proc.returncode}): {err.decode(errors='replace')}")
        if time.monotonic() - t0 > seconds:
            proc.kill()
            pytest.fail("driver never reached the temporary-file write")
        time.sleep(0.05)


needs_posix_signals = pytest.mark.skipif(os.name != "posix", reason="sends POSIX signals to a child process")


@needs_posix_signals
@pytest.mark.parametrize("sig,code,word", [(signal.SIGTERM, 143, "terminated"), (signal.SIGINT, 130, "interrupted")])
def test_signal_during_temp_write_leaves_nothing(tmp_path: Path, sig: int, code: int, word: str) -> None:
    src = tmp_path / "img1.tif"
    cv2.imwrite(str(src), smooth_rgb(32, 32, dtype="uint16"))
    before = src.read_bytes()
    out = tmp_path / "out"
    mark = tmp_path / "mark"
    proc = subprocess.Popen(_driver(tmp_path, ["deblur", str(src), "-o", str(out) + "/"], mark),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=_fresh_signals)
    _wait_for(mark, proc)
    temps = [p.name for p in out.iterdir()]
    assert temps and all(n.startswith(".defocus-") and n.endswith(".tmp") for n in temps), temps
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    assert word in err.decode()
    assert "Traceback" not in err.decode()
    assert list(out.iterdir()) == []  # no temporary file, no half-written image
    assert src.read_bytes() == before


@needs_posix_signals
@pytest.mark.parametrize("sig,code,word", [(signal.SIGTERM, 143, "terminated"), (signal.SIGINT, 130, "interrupted")])
def test_signal_while_the_pipeline_writes_in_the_background_leaves_nothing(
    tmp_path: Path, sig: int, code: int, word: str
) -> None:
    """A folder of photos (decoded and written in background threads): a signal while the writer thread holds
    the first result's temporary file open (its fsync hangs) ends the process promptly with no temp file."""
    src = tmp_path / "in"
    src.mkdir()
    for i in range(3):
        cv2.imwrite(str(src / f"img{i}.tif"), smooth_rgb(32, 32, seed=i, dtype="uint16"))
    out = tmp_path / "out"
    mark = tmp_path / "mark"
    proc = subprocess.Popen(_driver(tmp_path, ["deblur", str(src), "-o", str(out) + "/"], mark),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=_fresh_signals)
    _wait_for(mark, proc)
    assert [p.name for p in out.iterdir()][0].startswith(".defocus-")
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=50)  # the hung fsync sleeps 60 s: the process must not wait for it
    assert proc.returncode == code, err
    assert word in err.decode() and "Traceback" not in err.decode()
    assert list(out.iterdir()) == []


@needs_posix_signals
def test_closed_stdout_exits_quietly(tmp_path: Path) -> None:
    src = tmp_path / "noise.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (1400, 1400, 3), dtype=np.uint8)).save(src)  # > the pipe buffer
    proc = subprocess.Popen(_driver(tmp_path, ["deblur", str(src), "-o", "-", "--format", "png"]),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=_fresh_signals)
    assert proc.stdout is not None and proc.stderr is not None
    assert proc.stdout.read(1)  # like `| head -c1`: read one byte, then close the pipe
    proc.stdout.close()
    err = proc.stderr.read().decode()
    proc.wait(timeout=60)
    assert proc.returncode == 141, err
    assert err == "", err  # no BrokenPipeError, no "Exception ignored"


def test_opencv_log_lines_stay_off_stderr(tmp_path: Path) -> None:
    ok, enc = cv2.imencode(".tif", smooth_rgb(64, 64, dtype="uint16"))
    bad = tmp_path / "t16.tif"
    bad.write_bytes(enc.tobytes()[: len(enc) // 3])
    r = subprocess.run(_driver(tmp_path, ["deblur", str(bad), "-o", str(tmp_path / "o.tif")]),
                       capture_output=True, timeout=120)
    err = r.stderr.decode()
    assert r.returncode == 1, err
    assert "[ERROR" not in err and "[ WARN" not in err and "grfmt_" not in err, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert lines[0].startswith("ERROR: ") and "t16.tif" in lines[0], err
    assert not (tmp_path / "o.tif").exists()


def test_third_party_warnings_are_one_line_without_source(capsys: pytest.CaptureFixture[str]) -> None:
    from defocus_cli.cli._common import setup_logging

    with warnings.catch_warnings():  # restores warnings.showwarning afterwards
        warnings.simplefilter("always")
        setup_logging()
        warnings.warn("Corrupt EXIF data.  Expecting to read 12 bytes\nbut only got 4.", UserWarning)
        np.nanmax(np.array([np.nan, np.nan]))
    err = capsys.readouterr().err
    assert err.splitlines() == ["WARNING: Corrupt EXIF data. Expecting to read 12 bytes but only got 4.",
                                "WARNING: All-NaN slice encountered"], err


def test_disk_full_leaves_the_old_report(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p, g = tmp_path / "p.png", tmp_path / "g.png"
    Image.fromarray(smooth_rgb(16, 16)).save(p)
    Image.fromarray(smooth_rgb(16, 16, seed=1)).save(g)
    report = tmp_path / "r.html"
    report.write_text("old report")

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic.os, "fsync", full)
    r = CliRunner().invoke(app, ["score", str(p), str(g), "-m", "psnr", "--report", str(report), "--overwrite"])
    assert r.exit_code == 1, r.stderr
    assert "no space left" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert report.read_text() == "old report"
    assert sorted(x.name for x in tmp_path.iterdir()) == ["g.png", "p.png", "r.html"]


def test_atomic_write_failure_keeps_target_and_removes_temp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "x.bin"
    target.write_bytes(b"old")

    def boom(tmp: Path) -> None:
        tmp.write_bytes(b"half")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OutputError, match="no space left"):
        atomic.atomic_write(target, boom)
    assert target.read_bytes() == b"old"
    assert [q.name for q in tmp_path.iterdir()] == ["x.bin"]
    assert not atomic._live_temps


def test_temporary_names_are_short(tmp_path: Path) -> None:
    name = "é" * 127 + ".p"  # 256 bytes would be illegal; 254 is legal and its temp name must be too
    t = atomic.temp_path_for(tmp_path / name)
    assert t.parent == tmp_path and len(os.fsencode(t.name)) <= 21


def test_remove_temporary_files_cleans_live_temps(tmp_path: Path) -> None:
    t = atomic.temp_path_for(tmp_path / "a.png")
    t.write_bytes(b"x")
    atomic._live_temps.add(str(t))
    assert atomic.remove_temporary_files() == 1
    assert not t.exists() and not atomic._live_temps


@pytest.mark.parametrize("value", ["/x", "a/b", "..", "_..", "a\x00b"] + (["a\\b"] if os.sep == "\\" else []))
def test_name_parts_with_separators_are_refused(value: str) -> None:
    from defocus_cli.errors import UsageError

    with pytest.raises(UsageError, match="--suffix"):
        atomic.check_name_part(value, "--suffix")


def test_plain_name_parts_pass() -> None:
    for value in ("_sharp", "", "-v2", ".final", "写真"):
        atomic.check_name_part(value, "--suffix")
