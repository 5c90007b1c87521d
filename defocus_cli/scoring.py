"""Scoring results against ground truth: pairing files, reading them under a protocol, computing metrics.

Pairing rule (PRED and GT both files: they form one pair, names are not compared; both folders: every
image below each folder, recursively, is keyed by its path relative to that folder without extension):

1. **exact**: ``sub/IMG_1.png`` in PRED pairs with ``sub/IMG_1.<any ext>`` in GT;
2. otherwise **normalised**: the key is lower-cased and known suffixes are stripped from the end of the
   file name, repeatedly, each with a ``_``, ``-`` or ``.`` before it: :data:`STRIP_SUFFIXES` (what
   ``defocus deblur`` and other tools append, and the DPDD view/role tags). So ``1P0A1225_sharp.png``,
   ``1P0A1225_output.png`` and ``1P0A1225_C_deblurred.png`` all pair with ``1P0A1225.png``; and with
   ``--input``, ``test_c/source/1P0A1225.png`` pairs by the same rule with the GT ``test_c/target/1P0A1225.png``.

A prediction with no GT, or with several candidates (e.g. ``x.jpg`` *and* ``x_sharp.jpg`` in the same
folder), is a per-item error; GT images with no prediction are reported as missing. Nothing is resized:
different sizes are a per-item error.

Protocols (how stored pixels become the [0, 1] floats that are scored):

* ``native``: the stored values as they are (``v / (2^bits − 1)``);
* ``dpdd16``: both sides on the 16-bit grid (8-bit files are exact on it): DPDNet / Restormer dual-pixel;
* ``dpdd8``: both sides on the 8-bit grid; 16-bit files are reduced like ``cv2.imread(path)`` (IMREAD_COLOR)
  does, ``v16 >> 8``, which is how the 8-bit reference scripts (IFAN, Restormer single-image) read them.
"""

from __future__ import annotations

import logging
import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from defocus_cli import metrics as M
from defocus_cli._version import __version__
from defocus_cli.errors import DefocusError, InputError, UsageError
from defocus_cli.io.atomic import atomic_write, is_regular_file
from defocus_cli.io.formats import scan_folder
from defocus_cli.io.read import read_photo

log = logging.getLogger(__name__)

_KINDS = "JPEG, PNG, TIFF, WebP, HEIC or camera RAW files"

STRIP_SUFFIXES: tuple[str, ...] = (
    "sharp", "deblurred", "deblur", "restored", "result", "output", "out", "pred", "prediction",
    "target", "gt", "groundtruth", "source", "input", "blurred", "blurry", "blur",
    "c", "l", "r",
)
"""File-name suffixes ignored when pairing (after ``_``, ``-`` or ``.``; case-insensitive)."""

PROTOCOLS: dict[str, str] = {
    "native": "stored values as they are (v / (2^bits - 1))",
    "dpdd16": "both images on the 16-bit grid (DPDNet, Restormer dual-pixel)",
    "dpdd8": "both images on the 8-bit grid; 16-bit files reduced as cv2.imread does (v >> 8) (IFAN, Restormer single-image)",
}


# ----------------------------------------------------------------------------------------------- pairing


@dataclass(frozen=True)
class Pair:
    """One scored item: ``name`` (GT key, for display), the prediction, its GT and optional blurry input."""

    name: str
    pred: Path | None
    gt: Path | None
    input: Path | None = None
    error: str | None = None  # set when the item cannot be scored (unpaired, ambiguous)


@dataclass
class Pairing:
    """The outcome of :func:`pair_paths`: items to score (some carrying an error) and GT with no prediction."""

    pairs: list[Pair]
    missing: list[Path] = field(default_factory=list)
    has_input: bool = False

    def files(self) -> list[Path]:
        """Every file this pairing reads or found (predictions, ground truths, inputs, unpaired ones): the
        files an output (CSV, report) must never replace."""
        out = [p for pair in self.pairs for p in (pair.pred, pair.gt, pair.input) if p is not None]
        return out + list(self.missing)


def normalise_key(rel_stem: str) -> str:
    """Pairing key of a relative path without extension: lower-cased, known suffixes stripped from the name."""
    parent, _, stem = rel_stem.replace("\\", "/").rpartition("/")
    s = stem.lower()
    changed = True
    while changed:
        changed = False
        for suf in STRIP_SUFFIXES:
            for sep in "_-.":
                tail = sep + suf
                if s.endswith(tail) and len(s) > len(tail):
                    s = s[: -len(tail)]
                    changed = True
                    break
            if changed:
                break
    return f"{parent.lower()}/{s}" if parent else s


def _rel_stem(p: Path, root: Path) -> str:
    return p.relative_to(root).with_suffix("").as_posix()


class _Index:
    """Images of one folder, findable by exact relative stem and by normalised key."""

    def __init__(self, root: Path) -> None:
        self.root = root
        # every image below root (the one folder scanner: hidden entries skipped, link loops end; entries
        # that are not regular files are kept and fail alone when read), in plain sorted order
        self.files = sorted(scan_folder(root, recursive=True))
        self.exact: dict[str, list[Path]] = {}
        self.norm: dict[str, list[Path]] = {}
        for f in self.files:
            rs = _rel_stem(f, root)
            self.exact.setdefault(rs, []).append(f)
            self.norm.setdefault(normalise_key(rs), []).append(f)

    def find(self, rel_stem: str) -> list[Path]:
        """Candidates for a relative stem from another folder: the exact match, else the normalised ones."""
        hit = self.exact.get(rel_stem)
        if hit:
            return hit
        return self.norm.get(normalise_key(rel_stem), [])


def _check_exists(path: Path, what: str) -> None:
    if not path.exists():
        raise UsageError(f"{what} not found: {path}; give an existing image file or folder")
    if not path.is_dir() and not is_regular_file(path):
        raise UsageError(f"{what} {path} is not a regular file (a pipe or device); give an image file or folder")


def pair_paths(pred: Path | str, gt: Path | str, input: Path | str | None = None) -> Pairing:
    """Pair predictions with ground truth (and blurry inputs) by the rule in the module docstring.

    Raises:
        UsageError: a path does not exist, one is a file and the other a folder, or a folder has no images.
    """
    pred, gt = Path(pred), Path(gt)
    inp = Path(input) if input is not None else None
    _check_exists(pred, "PRED")
    _check_exists(gt, "GT")
    if inp is not None:
        _check_exists(inp, "--input")
    if pred.is_file() != gt.is_file() or (inp is not None and inp.is_file() != gt.is_file()):
        raise UsageError(
            "PRED, GT (and --input) must all be files or all be folders; found "
            + ", ".join(f"{p} ({'file' if p.is_file() else 'folder'})" for p in (pred, gt, inp) if p is not None)
        )
    if pred.is_file():
        return Pairing([Pair(gt.stem, pred, gt, inp)], [], inp is not None)

    gidx = _Index(gt)
    if not gidx.files:
        raise UsageError(f"no images ({_KINDS}) found in GT folder {gt}")
    pidx = _Index(pred)
    if not pidx.files:
        raise UsageError(f"no images ({_KINDS}) found in PRED folder {pred}")
    iidx = _Index(inp) if inp is not None else None

    claims: dict[Path, list[Path]] = {}
    pending: list[tuple[Path, Path | None, str | None]] = []
    for p in pidx.files:
        cands = gidx.find(_rel_stem(p, pred))
        if len(cands) == 1:
            claims.setdefault(cands[0], []).append(p)
            pending.append((p, cands[0], None))
        elif not cands:
            pending.append((p, None, f"no ground truth in {gt} pairs with {p.name} (rule: same relative path and "
                                     "name, ignoring suffixes such as _sharp/_output)"))
        else:
            pending.append((p, None, "several ground truths pair with it: " + ", ".join(c.name for c in cands)))

    pairs: list[Pair] = []
    for p, g, err in pending:
        if g is None:
            pairs.append(Pair(_rel_stem(p, pred), p, None, None, err))
            continue
        name = _rel_stem(g, gt)
        if len(claims[g]) > 1:
            others = ", ".join(str(q.relative_to(pred)) for q in claims[g])
            pairs.append(Pair(name, p, g, None, f"several predictions pair with {g.name}: {others}; "
                                                 "point PRED at a folder holding only results"))
            continue
        ip: Path | None = None
        ierr: str | None = None
        if iidx is not None:
            icands = iidx.find(name)
            if len(icands) == 1:
                ip = icands[0]
            elif not icands:
                ierr = f"no blurry input in {inp} pairs with {g.name}"
            else:
                ierr = "several blurry inputs pair with it: " + ", ".join(c.name for c in icands)
        pairs.append(Pair(name, p, g, ip, ierr))
    missing = [g for g in gidx.files if g not in claims]
    pairs.sort(key=lambda q: q.name)
    return Pairing(pairs, missing, inp is not None)


# ----------------------------------------------------------------------------------------------- reading


@dataclass
class Loaded:
    """An image ready to score: ``pixels`` float64 H×W×3 RGB on [0, 1] (protocol applied), stored ``bit_depth``."""

    pixels: np.ndarray
    bit_depth: int


def _read_raw(path: Path) -> tuple[np.ndarray, int]:
    """Read an image as float32 H×W×3 RGB on [0, 1] (EXIF-upright) and its stored bit depth (8 or 16)."""
    photo = read_photo(path)
    return photo.pixels, int(photo.bit_depth)


def apply_protocol(pixels: np.ndarray, bit_depth: int, protocol: str) -> np.ndarray:
    """Stored pixels (float on [0, 1], from a ``bit_depth`` file) → float64 values scored under ``protocol``."""
    stored_max = 65535.0 if bit_depth == 16 else 255.0
    v = np.rint(np.asarray(pixels, dtype=np.float64) * stored_max)  # exact stored integers
    if protocol == "native":
        return v / stored_max
    if protocol == "dpdd16":
        return np.rint(v / stored_max * 65535.0) / 65535.0
    if protocol == "dpdd8":
        if bit_depth == 16:
            return np.floor(v / 256.0) / 255.0
        return v / 255.0
    raise UsageError(f"unknown protocol {protocol!r}; expected one of {', '.join(PROTOCOLS)}")


def load_image(path: Path, protocol: str) -> Loaded:
    """Read ``path`` and apply ``protocol``. Raises InputError when unreadable."""
    try:
        pixels, bits = _read_raw(path)
    except DefocusError:
        raise
    except Exception as e:  # noqa: BLE001 - any decoder failure is a per-item input error
        raise InputError(f"cannot read {path}: {e}") from None
    return Loaded(apply_protocol(pixels, bits, protocol), bits)


# ----------------------------------------------------------------------------------------------- scoring


@dataclass
class ItemScore:
    """Scores of one item. ``scores`` holds ``psnr``…, and with an input ``input_*`` and ``gain_*``."""

    pair: Pair
    status: str = "ok"  # "ok" | "error"
    error: str | None = None
    height: int | None = None
    width: int | None = None
    bit_depth: int | None = None
    seconds: float = 0.0
    scores: dict[str, float] = field(default_factory=dict)


@dataclass
class ScoreResult:
    """Everything ``defocus score`` reports."""

    protocol: str
    metrics: list[str]
    settings: dict[str, Any]
    items: list[ItemScore]
    missing: list[Path]
    has_input: bool

    @property
    def ok_items(self) -> list[ItemScore]:
        return [it for it in self.items if it.status == "ok"]

    def columns(self) -> list[str]:
        """Score keys in display order: metrics, then input_* and gain_* when an input was given."""
        cols = list(self.metrics)
        if self.has_input:
            cols += [f"input_{m}" for m in self.metrics] + [f"gain_{m}" for m in self.metrics]
        return cols

    def aggregate(self, how: str) -> dict[str, float]:
        """``mean`` or ``median`` of each score over the items scored without error."""
        fn: Callable[[Sequence[float]], float] = statistics.fmean if how == "mean" else statistics.median
        out: dict[str, float] = {}
        for c in self.columns():
            vals = [it.scores[c] for it in self.ok_items if c in it.scores]
            if vals:
                out[c] = float(fn(vals))
        return out

    def to_json(self) -> dict[str, Any]:
        """The ``score --json`` document (see design cli.md)."""
        items: list[dict[str, Any]] = []
        for it in self.items:
            d: dict[str, Any] = {
                "name": it.pair.name,
                "pred": str(it.pair.pred) if it.pair.pred else None,
                "gt": str(it.pair.gt) if it.pair.gt else None,
            }
            if self.has_input:
                d["input"] = str(it.pair.input) if it.pair.input else None
            d.update(height=it.height, width=it.width, bit_depth=it.bit_depth, status=it.status)
            if it.error:
                d["error"] = it.error
            d.update({k: it.scores[k] for k in self.columns() if k in it.scores})
            d["seconds"] = round(it.seconds, 3)
            items.append(d)
        return {
            "version": __version__,
            "protocol": self.protocol,
            "settings": self.settings,
            "items": items,
            "mean": self.aggregate("mean"),
            "median": self.aggregate("median"),
            "count": len(self.ok_items),
            "errors": sum(1 for it in self.items if it.status != "ok"),
            "missing": [str(p) for p in self.missing],
        }


def parse_metrics(text: str | None) -> list[str]:
    """``"psnr,ssim"`` → ``["psnr", "ssim"]`` in canonical order; None/empty = all. UsageError if unknown."""
    if not text:
        return list(M.METRIC_NAMES)
    asked = [t.strip().lower() for t in text.split(",") if t.strip()]
    bad = [t for t in asked if t not in M.METRIC_NAMES]
    if bad or not asked:
        raise UsageError(f"unknown metric {', '.join(bad) or text!r}; expected a comma list of {', '.join(M.METRIC_NAMES)}")
    return [m for m in M.METRIC_NAMES if m in asked]


def parse_fail_under(text: str | None) -> dict[str, float]:
    """``"psnr=25,ssim=0.8,lpips=0.3"`` → thresholds. UsageError on a bad entry."""
    out: dict[str, float] = {}
    if not text:
        return out
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        key, sep, val = part.partition("=")
        key = key.strip().lower()
        try:
            if not sep or key not in M.METRIC_NAMES:
                raise ValueError
            out[key] = float(val)
        except ValueError:
            raise UsageError(
                f"bad --fail-under entry {part!r}; expected NAME=NUMBER with NAME in {', '.join(M.METRIC_NAMES)}, "
                "e.g. psnr=25,ssim=0.8,lpips=0.3"
            ) from None
    return out


def check_thresholds(mean: dict[str, float], thresholds: dict[str, float]) -> list[str]:
    """Failed gates as messages (empty = all passed). Higher-better metrics fail below the threshold,
    lower-better ones (mae, lpips) fail above it; a metric with no mean (nothing scored) fails."""
    failed: list[str] = []
    for k, t in thresholds.items():
        v = mean.get(k)
        if v is None or not math.isfinite(v):
            failed.append(f"{k}: no score to compare with {t}")
        elif M.HIGHER_IS_BETTER[k] and v < t:
            failed.append(f"mean {k} {v:.4f} < {t}")
        elif not M.HIGHER_IS_BETTER[k] and v > t:
            failed.append(f"mean {k} {v:.4f} > {t} (lower is better)")
    return failed


def settings_for(protocol: str, metrics: Sequence[str], device: str | None = None) -> dict[str, Any]:
    """The settings block recorded in every output (protocol, metric conventions, versions)."""
    import platform

    s: dict[str, Any] = {
        "protocol": protocol,
        "protocol_description": PROTOCOLS[protocol],
        "bit_depth": {"native": "native", "dpdd8": 8, "dpdd16": 16}[protocol],
        "metrics": list(metrics),
        "pairing": "relative path and name; suffixes " + "/".join(STRIP_SUFFIXES) + " ignored",
        "gain": "improvement over the blurry input, positive = better (psnr, ssim: result - input; "
                "mae, lpips: input - result)",
        "crop": None,
        **{k: v for k, v in M.SETTINGS.items() if k in ("data_range", "color")},
    }
    for m in metrics:
        if m in M.SETTINGS:
            s[m] = M.SETTINGS[m]
    versions: dict[str, str] = {"defocus": __version__, "numpy": np.__version__, "python": platform.python_version()}
    try:
        import cv2

        versions["opencv"] = cv2.__version__
    except ImportError:  # pragma: no cover
        pass
    if "lpips" in metrics:
        import torch

        from defocus_cli.lpips import SETTINGS as LS

        s["lpips"] = dict(LS, device=device or "cpu")
        versions["torch"] = torch.__version__
    s["versions"] = versions
    return s


def _gain(metric: str, result: float, blurry: float) -> float:
    return result - blurry if M.HIGHER_IS_BETTER[metric] else blurry - result


def score_item(pair: Pair, metrics: Sequence[str], protocol: str, device: str = "cpu") -> ItemScore:
    """Score one pair. Errors (unreadable, unpaired, size mismatch) are returned in the item, not raised."""
    item = ItemScore(pair)
    t0 = time.perf_counter()
    try:
        if pair.error is not None or pair.pred is None or pair.gt is None:
            raise InputError(pair.error or "unpaired")
        gt = load_image(pair.gt, protocol)
        pred = load_image(pair.pred, protocol)
        item.height, item.width = gt.pixels.shape[:2]
        item.bit_depth = gt.bit_depth
        _check_size(pred.pixels, gt.pixels, pair.pred, pair.gt)
        blurry = None
        if pair.input is not None:
            blurry = load_image(pair.input, protocol)
            _check_size(blurry.pixels, gt.pixels, pair.input, pair.gt)
        item.scores = _compute(pred.pixels, gt.pixels, blurry.pixels if blurry else None, metrics, device)
    except DefocusError as e:
        item.status, item.error = "error", str(e)
    except (MemoryError, RuntimeError, ValueError, OSError) as e:  # one bad item must not stop the others
        log.debug("scoring %s failed", pair.name, exc_info=True)
        item.status, item.error = "error", f"{type(e).__name__}: {e}"
    item.seconds = time.perf_counter() - t0
    return item


def _check_size(a: np.ndarray, gt: np.ndarray, pa: Path, pg: Path) -> None:
    if a.shape[:2] != gt.shape[:2]:
        raise InputError(
            f"size differs: {pg.name} is {gt.shape[1]}×{gt.shape[0]}, {pa.name} is {a.shape[1]}×{a.shape[0]}; "
            "images are never resized, score same-size results"
        )


def _compute(
    pred: np.ndarray, gt: np.ndarray, blurry: np.ndarray | None, metrics: Sequence[str], device: str
) -> dict[str, float]:
    out: dict[str, float] = {}
    fns = {"psnr": M.psnr, "ssim": M.ssim, "mae": M.mae}
    for m in metrics:
        if m in fns:
            out[m] = fns[m](pred, gt)
            if blurry is not None:
                out[f"input_{m}"] = fns[m](blurry, gt)
    if "lpips" in metrics:
        import torch

        from defocus_cli.lpips import load_lpips, to_tensor

        net = load_lpips(device)
        with torch.inference_mode():
            fg = net.features(to_tensor(gt).to(device))
            out["lpips"] = float(net.distance(net.features(to_tensor(pred).to(device)), fg)[0])
            if blurry is not None:
                out["input_lpips"] = float(net.distance(net.features(to_tensor(blurry).to(device)), fg)[0])
    if blurry is not None:
        for m in metrics:
            out[f"gain_{m}"] = _gain(m, out[m], out[f"input_{m}"])
    return out


def evaluate(
    pairing: Pairing,
    metrics: Sequence[str],
    protocol: str = "native",
    device: str = "cpu",
    on_item: Callable[[ItemScore], None] | None = None,
) -> ScoreResult:
    """Score every pair of ``pairing``; ``on_item`` is called after each item (progress)."""
    if protocol not in PROTOCOLS:
        raise UsageError(f"unknown protocol {protocol!r}; expected one of {', '.join(PROTOCOLS)}")
    items: list[ItemScore] = []
    for pair in pairing.pairs:
        it = score_item(pair, metrics, protocol, device)
        if it.status != "ok":
            log.warning("%s: %s", pair.name, it.error)
        items.append(it)
        if on_item is not None:
            on_item(it)
    return ScoreResult(protocol, list(metrics), settings_for(protocol, metrics, device), items,
                       list(pairing.missing), pairing.has_input)


CSV_BASE = ("name", "pred", "gt", "height", "width", "bit_depth")


def write_csv(result: ScoreResult, path: Path | str) -> None:
    """One row per item: ``name,pred,gt,[input,]height,width,bit_depth,<metrics>,[input_*,gain_*,]status,error,
    protocol,version`` (the protocol and version repeat on each row so the file stays tidy).

    Written atomically (:func:`defocus_cli.io.atomic.atomic_write`); check the target first with
    :func:`defocus_cli.io.atomic.check_targets`.

    Raises:
        OutputError: the file cannot be written.
    """
    import csv
    import io

    cols = list(CSV_BASE)
    if result.has_input:
        cols.insert(3, "input")
    cols += result.columns() + ["status", "error", "protocol", "version"]
    fh = io.StringIO(newline="")
    w = csv.DictWriter(fh, fieldnames=cols)
    w.writeheader()
    for it in result.items:
        row: dict[str, Any] = {
            "name": it.pair.name,
            "pred": it.pair.pred or "",
            "gt": it.pair.gt or "",
            "input": it.pair.input or "",
            "height": it.height if it.height is not None else "",
            "width": it.width if it.width is not None else "",
            "bit_depth": it.bit_depth if it.bit_depth is not None else "",
            "status": it.status,
            "error": it.error or "",
            "protocol": result.protocol,
            "version": __version__,
        }
        for c in result.columns():
            row[c] = repr(it.scores[c]) if c in it.scores else ""
        w.writerow({k: row.get(k, "") for k in cols})
    atomic_write(path, fh.getvalue().encode("utf-8"), make_parents=False)
