"""Batch machinery: input expansion, output naming, mapping checks, error isolation, atomic writes, JSON."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import smooth_rgb
from defocus_cli.batch import (
    BatchOptions,
    plan_batch,
    run_batch,
    scan_folder,
)
from defocus_cli.cli.batch_output import batch_exit_code, finish, json_document, summary_line
from defocus_cli.errors import DeviceError, UsageError
from defocus_cli.io.read import Photo


def _img(path: Path, h: int = 6, w: int = 8, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".tif": "TIFF", ".webp": "WEBP"}[path.suffix.lower()]
    Image.fromarray(smooth_rgb(h, w, seed)).save(path, fmt)
    return path


def _plan(inputs: list[Path | str], **kw: object) -> list:
    return plan_batch([str(i) for i in inputs], BatchOptions(**kw), stdin_is_tty=False, stdout_is_tty=False)


def _invert(photo: Photo) -> np.ndarray:
    return 1.0 - photo.pixels


def test_default_names_next_to_inputs_keep_extension(tmp_path: Path) -> None:
    a, b = _img(tmp_path / "a.JPG"), _img(tmp_path / "sub" / "b.png")
    items = _plan([a, b])
    assert [i.output for i in items] == [tmp_path / "a_sharp.JPG", tmp_path / "sub" / "b_sharp.png"]
    assert [i.fmt for i in items] == ["jpeg", "png"]


def test_suffix_and_format_change_names(tmp_path: Path) -> None:
    a = _img(tmp_path / "a.jpg")
    (item,) = _plan([a], suffix="-x", fmt="tif")
    assert item.output == tmp_path / "a-x.tif" and item.fmt == "tiff"


def test_folder_output_mirrors_tree_without_suffix(tmp_path: Path) -> None:
    src = tmp_path / "in"
    _img(src / "x.png"), _img(src / "d" / "y.jpg"), _img(src / "d" / "e" / "z.webp")
    items = _plan([src], output=str(tmp_path / "out"), recursive=True)
    assert sorted(str(i.output.relative_to(tmp_path / "out")) for i in items) == ["d/e/z.webp", "d/y.jpg", "x.png"]
    flat = _plan([src], output=str(tmp_path / "out2"))
    assert [i.output.name for i in flat] == ["x.png"]


def test_output_file_for_one_input_and_format_from_extension(tmp_path: Path) -> None:
    (item,) = _plan([_img(tmp_path / "a.jpg")], output=str(tmp_path / "r.png"))
    assert item.output == tmp_path / "r.png" and item.fmt == "png"


def test_output_file_with_several_inputs_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="names one file"):
        _plan([_img(tmp_path / "a.jpg"), _img(tmp_path / "b.jpg")], output=str(tmp_path / "r.png"))


def test_conflicting_format_and_extension(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="--format"):
        _plan([_img(tmp_path / "a.jpg")], output=str(tmp_path / "r.png"), fmt="jpg")


def test_stdout_needs_format_and_no_terminal(tmp_path: Path) -> None:
    a = _img(tmp_path / "a.jpg")
    with pytest.raises(UsageError, match="--format"):
        _plan([a], output="-")
    (item,) = _plan([a], output="-", fmt="png")
    assert item.stdout and item.output_label == "-"
    with pytest.raises(UsageError, match="terminal"):
        plan_batch([str(a)], BatchOptions(output="-", fmt="png"), stdout_is_tty=True)


def test_stdin_rules() -> None:
    (item,) = _plan(["-"], fmt="png")
    assert item.input is None and item.stdout
    with pytest.raises(UsageError, match="only once"):
        _plan(["-", "-"], fmt="png")
    with pytest.raises(UsageError, match="terminal"):
        plan_batch(["-"], BatchOptions(fmt="png"), stdin_is_tty=True, stdout_is_tty=False)


def test_collisions_are_refused_before_any_work(tmp_path: Path) -> None:
    a, b = _img(tmp_path / "a.jpg"), _img(tmp_path / "a.png")
    with pytest.raises(UsageError, match="both be written"):
        _plan([a, b], fmt="png")
    with pytest.raises(UsageError, match="both be written"):  # same name in two input folders, flat output
        _img(tmp_path / "f1" / "p.jpg"), _img(tmp_path / "f2" / "p.jpg")
        _plan([tmp_path / "f1", tmp_path / "f2"], output=str(tmp_path / "out"))


def test_output_replacing_an_input_is_refused(tmp_path: Path) -> None:
    a = _img(tmp_path / "a.jpg")
    with pytest.raises(UsageError, match="replace input"):
        _plan([a], output=str(a))
    with pytest.raises(UsageError, match="replace input"):
        _plan([a], suffix="")
    b = _img(tmp_path / "b.jpg")
    with pytest.raises(UsageError, match="replace input"):
        _plan([b, _img(tmp_path / "b_sharp.jpg")])


def test_existing_outputs_refused_skipped_or_overwritten(tmp_path: Path) -> None:
    a = _img(tmp_path / "a.jpg")
    (tmp_path / "a_sharp.jpg").write_bytes(b"old")
    with pytest.raises(UsageError, match="--overwrite"):
        _plan([a])
    (item,) = _plan([a], existing="skip")
    assert item.status == "skipped"
    (item,) = _plan([a], existing="overwrite")
    assert item.status == "pending"


def test_missing_input_and_empty_folder_are_item_errors(tmp_path: Path) -> None:
    (tmp_path / "empty.png").mkdir()
    items = _plan([tmp_path / "nope.jpg", tmp_path / "empty.png", _img(tmp_path / "ok.jpg")])
    assert [(i.status, i.error is not None) for i in items] == [("error", True), ("error", True), ("pending", False)]
    assert "no such file" in items[0].error and "no .jpg" in items[1].error


def test_scan_is_natural_order_and_skips_hidden_and_earlier_outputs(tmp_path: Path) -> None:
    for n in ("img10.jpg", "img2.jpg", "img1.jpg", ".hidden.jpg", "notes.txt", "img1_sharp.jpg"):
        (tmp_path / n).write_bytes(b"x")
    assert [p.name for p in scan_folder(tmp_path, False)] == ["img1.jpg", "img1_sharp.jpg", "img2.jpg", "img10.jpg"]
    items = _plan([tmp_path], existing="skip")
    assert [i.input.name for i in items] == ["img1.jpg", "img2.jpg", "img10.jpg"]
    assert [i.status for i in items] == ["skipped", "pending", "pending"]


def test_output_folder_inside_input_is_not_scanned(tmp_path: Path) -> None:
    _img(tmp_path / "a.jpg"), _img(tmp_path / "out" / "a.jpg")
    items = _plan([tmp_path], output=str(tmp_path / "out"), recursive=True, existing="overwrite")
    assert [i.input.name for i in items] == ["a.jpg"]


def test_run_batch_isolates_a_bad_file_and_writes_the_good_one(tmp_path: Path) -> None:
    good = _img(tmp_path / "good.png")
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    opts = BatchOptions(output=str(tmp_path / "out"))
    items = plan_batch([str(good), str(bad)], opts, stdin_is_tty=False, stdout_is_tty=False)
    result = run_batch(items, _invert, opts)
    assert batch_exit_code(result) == 1
    assert [i.status for i in result.items] == ["ok", "error"]
    out = np.asarray(Image.open(tmp_path / "out" / "good.png"))
    np.testing.assert_array_equal(out, 255 - smooth_rgb(6, 8))
    assert not (tmp_path / "out" / "bad.png").exists()
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["good.png"]  # no temp files left
    doc = json_document(result, {"model": "m"})
    assert doc["model"] == "m" and doc["summary"] == {"ok": 1, "skipped": 0, "error": 1,
                                                      "seconds": doc["summary"]["seconds"]}
    assert doc["items"][1]["status"] == "error" and "not a readable image" in doc["items"][1]["error"]
    assert "1 written, 1 failed" in summary_line(result)


def test_run_batch_process_exception_is_reported_not_raised(tmp_path: Path) -> None:
    a, b = _img(tmp_path / "a.png"), _img(tmp_path / "b.png", seed=3)
    opts = BatchOptions()
    calls: list[str] = []

    def process(photo: Photo) -> np.ndarray:
        calls.append(photo.name)
        if photo.source == a:
            raise ValueError("boom")
        return photo.pixels

    result = run_batch(plan_batch([str(a), str(b)], opts, stdout_is_tty=False), process, opts)
    assert [i.status for i in result.items] == ["error", "ok"] and result.items[0].error == "ValueError: boom"
    assert len(calls) == 2 and (tmp_path / "b_sharp.png").exists() and not (tmp_path / "a_sharp.png").exists()


def test_engine_wide_errors_stop_the_batch(tmp_path: Path) -> None:
    a = _img(tmp_path / "a.png")
    opts = BatchOptions()

    def process(photo: Photo) -> np.ndarray:
        raise DeviceError("cuda:3 is not available")

    with pytest.raises(DeviceError):
        run_batch(plan_batch([str(a)], opts, stdout_is_tty=False), process, opts)


def test_stdin_to_stdout_bytes(tmp_path: Path) -> None:
    buf = io.BytesIO()
    Image.fromarray(smooth_rgb(5, 5)).save(buf, "PNG")
    out: list[bytes] = []
    opts = BatchOptions(output="-", fmt="png")
    items = plan_batch(["-"], opts, stdin_is_tty=False, stdout_is_tty=False)
    result = run_batch(items, _invert, opts, read_stdin=lambda: buf.getvalue(), write_stdout=out.append)
    assert batch_exit_code(result) == 0
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(out[0]))), 255 - smooth_rgb(5, 5))


def test_finish_prints_json_on_stdout(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = _img(tmp_path / "a.png")
    opts = BatchOptions()
    result = run_batch(plan_batch([str(a)], opts, stdout_is_tty=False), _invert, opts)
    assert finish(result, header={"device": "cpu"}, as_json=True) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["device"] == "cpu" and doc["items"][0]["output"] == str(tmp_path / "a_sharp.png")
    assert doc["items"][0]["status"] == "ok" and doc["items"][0]["seconds"] >= 0


@pytest.mark.parametrize("pipeline", [0, 1])
def test_run_batch_reports_progress_through_callbacks(tmp_path: Path, pipeline: int) -> None:
    files = [_img(tmp_path / "in" / f"p{i}.png", seed=i) for i in range(3)]
    (tmp_path / "in" / "p3.png").write_bytes(b"not a png")
    opts = BatchOptions(output=str(tmp_path / "out"))
    items = plan_batch([str(tmp_path / "in")], opts, stdout_is_tty=False)
    started: list[int] = []
    finished: list[tuple[str, str]] = []
    result = run_batch(items, _invert, opts, pipeline=pipeline, on_start=started.append,
                       on_item=lambda it: finished.append((it.input_label, it.status)))
    assert started == [4]
    assert finished == [(str(f), "ok") for f in files] + [(str(tmp_path / "in" / "p3.png"), "error")]
    assert batch_exit_code(result) == 1 and "3 written, 1 failed" in summary_line(result)


def test_batch_progress_is_off_unless_stderr_is_a_terminal() -> None:
    from defocus_cli.cli.progress import BatchProgress

    with BatchProgress("x") as bar:  # pytest's stderr is no terminal
        assert not bar.enabled
        bar.start(3)
        bar.advance()
    assert not BatchProgress("x", quiet=True, enabled=None).enabled
    with BatchProgress("x", enabled=True) as bar:
        bar.start(2)
        bar.advance()
        assert bar._bar is not None
    assert bar._bar is None


# ------------------------------------------------------------------------------------------- pipelined batches


def _folder(tmp_path: Path, n: int) -> list[Path]:
    return [_img(tmp_path / "in" / f"p{i}.png", seed=i) for i in range(n)]


def _temps(folder: Path) -> list[str]:
    return [p.name for p in folder.rglob("*") if p.name.endswith(".tmp")]


def test_pipeline_reads_the_next_photo_and_writes_the_previous_one_while_process_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While ``process`` runs on photo k, photo k+1 is decoded and photo k-1 written (proved with events: a
    one-photo-at-a-time loop would wait in vain), and the wall time is below the sum of the items' own times."""
    import threading
    import time

    import defocus_cli.batch as batch

    n = 4
    files = _folder(tmp_path, n)
    read_started = [threading.Event() for _ in range(n)]
    write_started = [threading.Event() for _ in range(n)]
    real_read, real_write = batch.read_photo, batch.atomic_write

    def slow_read(src: object, **kw: object) -> Photo:
        read_started[files.index(Path(str(src)))].set()
        time.sleep(0.15)
        return real_read(src, **kw)  # type: ignore[arg-type]

    def slow_write(path: Path, data: bytes) -> Path:
        write_started[[f.name for f in files].index(Path(path).name)].set()
        time.sleep(0.15)
        return real_write(path, data)

    monkeypatch.setattr(batch, "read_photo", slow_read)
    monkeypatch.setattr(batch, "atomic_write", slow_write)
    threads: set[str] = set()
    seen: list[tuple[bool, bool]] = []

    def process(photo: Photo) -> np.ndarray:
        k = files.index(photo.source)  # type: ignore[arg-type]
        threads.add(threading.current_thread().name)
        next_read = read_started[k + 1].wait(10) if k + 1 < n else True
        prev_write = write_started[k - 1].wait(10) if k > 0 else True
        seen.append((next_read, prev_write))
        time.sleep(0.15)
        return 1.0 - photo.pixels

    opts = BatchOptions(output=str(tmp_path / "out"))
    result = run_batch(plan_batch([str(tmp_path / "in")], opts, stdout_is_tty=False), process, opts)
    assert [i.status for i in result.items] == ["ok"] * n
    assert seen == [(True, True)] * n
    assert threads == {threading.current_thread().name}  # process always runs in the calling thread
    assert result.seconds < sum(i.seconds for i in result.items)  # stages overlapped
    for i, f in enumerate(files):
        np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "out" / f.name)), 255 - smooth_rgb(6, 8, i))


def test_pipeline_a_bad_photo_in_the_middle_is_its_own_error_and_order_is_kept(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file that cannot be decoded (and one whose process fails) in the middle of a batch is that file's
    error; the others are written; items, log lines and JSON records keep the input order even when the writer
    is slow on the first photo."""
    import logging
    import time

    import defocus_cli.batch as batch

    files = _folder(tmp_path, 6)
    files[2].write_bytes(b"not a png at all")
    real_write = batch.atomic_write

    def write(path: Path, data: bytes) -> Path:
        if Path(path).name == "p0.png":
            time.sleep(0.3)  # the first result is written last, in time
        return real_write(path, data)

    monkeypatch.setattr(batch, "atomic_write", write)

    def process(photo: Photo) -> np.ndarray:
        if photo.source == files[4]:
            raise ValueError("engine hiccup")
        return 1.0 - photo.pixels

    opts = BatchOptions(output=str(tmp_path / "out"))
    with caplog.at_level(logging.INFO, logger="defocus_cli"):
        result = run_batch(plan_batch([str(tmp_path / "in")], opts, stdout_is_tty=False), process, opts)
    assert [i.input for i in result.items] == files
    assert [i.status for i in result.items] == ["ok", "ok", "error", "ok", "error", "ok"]
    assert "not a readable image" in result.items[2].error and result.items[4].error == "ValueError: engine hiccup"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["p0.png", "p1.png", "p3.png", "p5.png"]
    lines = [r.getMessage() for r in caplog.records if r.name == "defocus_cli.batch"]
    assert [ln.split(":")[0].split(" ->")[0] for ln in lines] == [str(f) for f in files]
    doc = json_document(result)
    assert [d["input"] for d in doc["items"]] == [str(f) for f in files]
    assert all(d["seconds"] is not None and d["seconds"] >= 0 for d in doc["items"])


def test_pipeline_engine_wide_error_writes_the_photos_before_it_then_stops(tmp_path: Path) -> None:
    files = _folder(tmp_path, 5)
    calls: list[Path] = []

    def process(photo: Photo) -> np.ndarray:
        calls.append(photo.source)  # type: ignore[arg-type]
        if photo.source == files[2]:
            raise DeviceError("cuda:0 fell off the bus")
        return photo.pixels

    opts = BatchOptions(output=str(tmp_path / "out"))
    items = plan_batch([str(tmp_path / "in")], opts, stdout_is_tty=False)
    with pytest.raises(DeviceError, match="fell off"):
        run_batch(items, process, opts)
    assert calls == files[:3]
    assert [i.status for i in items] == ["ok", "ok", "pending", "pending", "pending"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["p0.png", "p1.png"]


def test_pipeline_interrupt_leaves_no_temporary_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C in ``process`` while the writer is inside the atomic write of the previous photo: the interrupt
    propagates, nothing more is written, no temporary file stays, and what was written is complete."""
    import os
    import threading
    import time

    files = _folder(tmp_path, 4)
    writing = threading.Event()
    real_fsync = os.fsync

    def slow_fsync(fd: int) -> None:
        writing.set()
        time.sleep(0.3)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", slow_fsync)

    def process(photo: Photo) -> np.ndarray:
        if photo.source == files[1]:
            assert writing.wait(10), "the first photo was not being written"
            raise KeyboardInterrupt
        return 1.0 - photo.pixels

    opts = BatchOptions(output=str(tmp_path / "out"))
    items = plan_batch([str(tmp_path / "in")], opts, stdout_is_tty=False)
    with pytest.raises(KeyboardInterrupt):
        run_batch(items, process, opts)
    out = tmp_path / "out"
    assert _temps(out) == []
    assert sorted(p.name for p in out.iterdir()) == ["p0.png"]
    np.testing.assert_array_equal(np.asarray(Image.open(out / "p0.png")), 255 - smooth_rgb(6, 8, 0))


def test_pipeline_zero_runs_one_photo_at_a_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``pipeline=0``: every step in the calling thread, strictly read → process → write per photo."""
    import threading

    import defocus_cli.batch as batch

    files = _folder(tmp_path, 3)
    events: list[str] = []
    real_read, real_write = batch.read_photo, batch.atomic_write

    def read(src: object, **kw: object) -> Photo:
        events.append(f"read {Path(str(src)).name} {threading.current_thread().name}")
        return real_read(src, **kw)  # type: ignore[arg-type]

    def write(path: Path, data: bytes) -> Path:
        events.append(f"write {Path(path).name} {threading.current_thread().name}")
        return real_write(path, data)

    monkeypatch.setattr(batch, "read_photo", read)
    monkeypatch.setattr(batch, "atomic_write", write)
    opts = BatchOptions(output=str(tmp_path / "out"))
    result = run_batch(plan_batch([str(tmp_path / "in")], opts, stdout_is_tty=False), _invert, opts, pipeline=0)
    assert batch_exit_code(result) == 0
    me = threading.current_thread().name
    assert events == [f"{op} p{i}.png {me}" for i in range(3) for op in ("read", "write")]
