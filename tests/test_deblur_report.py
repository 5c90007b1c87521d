"""``defocus deblur --report FILE.html``: a before/after page (defocus_cli.report.render_compare)."""

from __future__ import annotations

import base64
import io
import re
from pathlib import Path

import numpy as np
from PIL import Image
from typer.testing import CliRunner

from conftest import smooth_rgb
from defocus_cli.cli import app


def run(*args: str):  # noqa: ANN201
    return CliRunner().invoke(app, ["deblur", *args])


def test_report_shows_input_and_result_side_by_side_with_crops(tmp_path: Path, use_engine) -> None:  # noqa: ANN001
    use_engine("sharpen")
    for n in ("a", "b"):
        Image.fromarray(smooth_rgb(96, 128)).save(tmp_path / f"{n}.png")
    page = tmp_path / "compare.html"
    r = run(str(tmp_path / "a.png"), str(tmp_path / "b.png"), "--report", str(page))
    assert r.exit_code == 0, r.stderr
    text = page.read_text()
    assert text.count("<section") == 2 and "input: a.png" in text and "result: a_sharp.png" in text
    assert "crop 1:" in text and "http" not in text.replace("http-equiv", "")  # self-contained
    uris = re.findall(r"src='data:image/jpeg;base64,([^']+)'", text)
    assert len(uris) >= 4
    first = np.asarray(Image.open(io.BytesIO(base64.b64decode(uris[0]))))
    assert first.shape[:2] == (96, 128)  # small photos are shown at full size


def test_report_target_is_checked_before_any_work(tmp_path: Path, use_engine) -> None:  # noqa: ANN001
    calls = use_engine("sharpen")
    Image.fromarray(smooth_rgb(8, 8)).save(tmp_path / "a.png")
    (tmp_path / "old.html").write_text("keep")
    r = run(str(tmp_path / "a.png"), "--report", str(tmp_path / "old.html"))
    assert r.exit_code == 2 and "--overwrite" in r.stderr and calls == []
    assert (tmp_path / "old.html").read_text() == "keep" and not (tmp_path / "a_sharp.png").exists()
    r = run(str(tmp_path / "a.png"), "--report", str(tmp_path / "a.png"))
    assert r.exit_code == 2 and calls == []
