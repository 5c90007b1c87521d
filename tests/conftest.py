"""Shared test fixtures. Tests never need ../shared; those that use it skip with a reason when absent."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TypeVar

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("DEFOCUS_SHARED", ROOT.parent / "shared"))

needs_shared = pytest.mark.skipif(
    not (SHARED / "vectors").is_dir(),
    reason=f"needs the development references at {SHARED} (not part of a user's clone; set DEFOCUS_SHARED)",
)


@pytest.fixture(autouse=True)
def _few_threads() -> None:
    """Keep torch to 2 threads: CI machines have 2 cores."""
    try:
        import torch
    except ImportError:  # pragma: no cover
        return
    torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(autouse=True)
def _reset_library_logging() -> "object":
    """CLI tests call setup_logging(), which sets the ``defocus_cli`` logger level (e.g. ERROR for -q) and
    attaches a handler to the then-current stderr; undo that so later tests see default logging."""
    yield
    lg = logging.getLogger("defocus_cli")
    lg.setLevel(logging.NOTSET)
    for h in list(lg.handlers):
        lg.removeHandler(h)


# ------------------------------------------------------------------------------------------------------
# Small engines for pipeline tests (the product never offers a fake or untrained engine; these live here).


def _make_engine(kind: str) -> "object":
    """A tiny engine following the engine contract (defocus_cli/archs/__init__.py):
    ``forward(x)``: (N, 3, H, W) RGB [0, 1] → same shape, values in [0, 1].

    ``kind``: ``"identity"`` (returns the input), ``"sharpen"`` (fixed 3x3 unsharp kernel, replicate
    padding), ``"fail"`` (raises RuntimeError, to test per-file error handling)."""
    import torch
    from torch import nn

    class TestEngine(nn.Module):
        multiple_of = 1
        receptive_field = 2
        safe_precisions = ("fp32",)

        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 3, padding=1, padding_mode="replicate", groups=3, bias=False)
            k = torch.tensor([[0.0, -1.0, 0.0], [-1.0, 5.0, -1.0], [0.0, -1.0, 0.0]])
            if kind == "identity":
                k = torch.tensor([[0.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
            with torch.no_grad():
                self.conv.weight.copy_(k.expand(3, 1, 3, 3))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if kind == "fail":
                raise RuntimeError("engine exploded on purpose")
            return self.conv(x).clamp(0.0, 1.0)

    return TestEngine().eval()


@pytest.fixture
def use_engine(monkeypatch: pytest.MonkeyPatch):  # noqa: ANN201
    """``use_engine("sharpen"|"identity"|"fail")`` makes ``defocus_cli.weights.load_model`` return that
    engine (name ``test-<kind>``), so ``defocus deblur`` runs without weight files. Returns a list that
    records each load_model call's arguments."""
    import importlib
    import sys
    import types

    monkeypatch.setenv("DEFOCUS_THREADS", "2")
    calls: list[dict[str, object]] = []

    def install(kind: str = "sharpen") -> list[dict[str, object]]:
        try:
            weights = importlib.import_module("defocus_cli.weights")
        except ModuleNotFoundError:  # pragma: no cover - before weights.py existed
            weights = types.ModuleType("defocus_cli.weights")
            monkeypatch.setitem(sys.modules, "defocus_cli.weights", weights)
        LoadedModel = getattr(weights, "LoadedModel", None)

        def load_model(name=None, weights_file=None, task="deblur"):  # noqa: ANN001, ANN202
            calls.append({"name": name, "weights_file": weights_file, "task": task})
            module = _make_engine(kind)
            fields = dict(module=module, name=f"test-{kind}", arch="test", sha256="0" * 64, path=Path("test"),
                          spec=None)
            return LoadedModel(**fields) if LoadedModel is not None else types.SimpleNamespace(**fields)

        monkeypatch.setattr(weights, "load_model", load_model, raising=False)
        return calls

    return install


# ------------------------------------------------------------------------------------------------------
# Network layouts and official weights (architecture tests).

M = TypeVar("M")


def read_layout(path: Path) -> list[tuple[str, list[int]]]:
    """A state-dict layout file (one ``key [d0,d1,...]`` line per tensor) as ``[(key, shape), ...]``."""
    out = []
    for line in path.read_text().splitlines():
        key, shape = line.split(" ", 1)
        out.append((key, [int(s) for s in shape.strip("[]").split(",") if s]))
    return out


def layout_of(module: "object") -> list[tuple[str, list[int]]]:
    """The state-dict layout ``[(key, shape), ...]`` of a torch module, in state-dict order."""
    return [(k, list(v.shape)) for k, v in module.state_dict().items()]  # type: ignore[attr-defined]


def load_fp16(module: M, path: Path) -> M:
    """``module`` (a torch module) with the (fp16) safetensors weights at ``path`` loaded strictly as float32, in
    eval mode."""
    from safetensors.torch import load_file

    module.load_state_dict({k: v.float() for k, v in load_file(path).items()}, strict=True)  # type: ignore[attr-defined]
    return module.eval()  # type: ignore[attr-defined]


# ------------------------------------------------------------------------------------------------------
# Photo fixtures made on the fly (no binary fixtures in the repository).


def smooth_rgb(h: int, w: int, seed: int = 0, dtype: str = "uint8") -> "object":
    """A smooth (JPEG-friendly) but asymmetric RGB test image, ``(h, w, 3)`` uint8 or uint16."""
    import numpy as np

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    base = np.stack([xx / max(w - 1, 1), yy / max(h - 1, 1), 0.5 + 0.4 * np.sin(xx / 5.0 + yy / 7.0)], axis=2)
    img = np.clip(base * 0.9 + rng.random((h, w, 3)) * 0.1, 0, 1)
    if dtype == "uint16":
        return (img * 65535).astype(np.uint16)
    return (img * 255).astype(np.uint8)


def make_exif(orientation: int = 1, thumbnail: bool = False) -> bytes:
    """An EXIF block (``Exif\\0\\0`` + TIFF) with camera tags, optionally an IFD1 thumbnail."""
    import io

    import piexif
    from PIL import Image

    d = {
        "0th": {piexif.ImageIFD.Make: b"TestCam", piexif.ImageIFD.Model: b"Model X",
                piexif.ImageIFD.Orientation: orientation},
        "Exif": {piexif.ExifIFD.DateTimeOriginal: b"2024:05:06 07:08:09", piexif.ExifIFD.ExposureTime: (1, 125),
                 piexif.ExifIFD.FNumber: (28, 10)},
        "GPS": {}, "1st": {}, "thumbnail": None,
    }
    if thumbnail:
        buf = io.BytesIO()
        Image.new("RGB", (16, 12), (200, 10, 10)).save(buf, "JPEG")
        d["1st"] = {piexif.ImageIFD.JPEGInterchangeFormat: 0, piexif.ImageIFD.JPEGInterchangeFormatLength: 0}
        d["thumbnail"] = buf.getvalue()
    return piexif.dump(d)


def sample_icc() -> bytes:
    """ICC profile bytes (an sRGB profile made by LittleCMS) to embed in fixtures."""
    from PIL import ImageCms

    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()

