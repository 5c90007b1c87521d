"""``defocus score --report``: one self-contained HTML page (images embedded as base64, no external links).

The page holds the settings, the score table (per image, mean, median) and, per image, the blurry input,
the result and the ground truth side by side, plus zoomed crops of the windows where the result changed the
most from the input (without ``--input``: where it differs most from the ground truth).
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from defocus_cli.errors import OutputError
from defocus_cli.io.atomic import atomic_write
from defocus_cli.scoring import ItemScore, ScoreResult, load_image

log = logging.getLogger(__name__)

THUMB_SIDE = 560
"""Longest side of the side-by-side previews, px."""
N_CROPS = 2
CROP_COLOURS = ((255, 196, 0), (0, 200, 255))  # RGB of the crop frames (amber, cyan)
_ARROW = {"psnr": "↑", "ssim": "↑", "mae": "↓", "lpips": "↓"}
_FMT = {"psnr": "{:.2f}", "ssim": "{:.4f}", "mae": "{:.4f}", "lpips": "{:.4f}"}


@dataclass(frozen=True)
class Window:
    """A square crop ``[y, y+size) × [x, x+size)`` in image pixels and its mean absolute change."""

    y: int
    x: int
    size: int
    change: float


def crop_size(h: int, w: int) -> int:
    """Side of the zoom windows: a sixth of the shorter side, between 32 and 256 px (never above the image)."""
    return int(min(min(h, w), max(32, min(256, round(min(h, w) / 6)))))


def find_windows(a: np.ndarray, b: np.ndarray, size: int, count: int = N_CROPS) -> list[Window]:
    """The ``count`` non-overlapping ``size``² windows with the largest mean |a − b| (H×W×C float arrays)."""
    import cv2

    diff = np.abs(a.astype(np.float32) - b.astype(np.float32)).mean(axis=2)
    h, w = diff.shape
    size = min(size, h, w)
    # mean over each window with its top-left corner at (y, x), y ≤ h − size, x ≤ w − size
    ii = cv2.integral(diff.astype(np.float64))
    sums = ii[size:, size:] - ii[:-size, size:] - ii[size:, :-size] + ii[:-size, :-size]
    score = sums / float(size * size)
    out: list[Window] = []
    for _ in range(count):
        y, x = np.unravel_index(int(np.argmax(score)), score.shape)
        v = float(score[y, x])
        if not np.isfinite(v):  # no room left for another window
            break
        out.append(Window(int(y), int(x), size, v))
        # the next window must not overlap this one, and keeps half a window of distance (a different place)
        gap = size + size // 2
        score[max(0, y - gap + 1) : y + gap, max(0, x - gap + 1) : x + gap] = -np.inf
    return out


def _to_u8(img: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(np.asarray(img, dtype=np.float64) * 255.0), 0, 255).astype(np.uint8)


def _data_uri(rgb_u8: np.ndarray, fmt: str = "jpg", quality: int = 88) -> str:
    import cv2

    bgr = cv2.cvtColor(rgb_u8, cv2.COLOR_RGB2BGR)
    if fmt == "png":
        ok, buf = cv2.imencode(".png", bgr)
        mime = "image/png"
    else:
        ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])
        mime = "image/jpeg"
    if not ok:  # pragma: no cover - OpenCV always encodes uint8 RGB
        raise OutputError("could not encode a preview image for the report")
    return f"data:{mime};base64,{base64.b64encode(buf.tobytes()).decode('ascii')}"


def _thumb(img_u8: np.ndarray, windows: list[Window]) -> tuple[str, int, int]:
    """Downscaled preview with the crop windows framed; returns (data URI, width, height)."""
    import cv2

    h, w = img_u8.shape[:2]
    s = min(1.0, THUMB_SIDE / max(h, w))
    tw, th = max(1, round(w * s)), max(1, round(h * s))
    small = cv2.resize(img_u8, (tw, th), interpolation=cv2.INTER_AREA) if s < 1 else img_u8.copy()
    small = np.ascontiguousarray(small)
    for k, win in enumerate(windows):
        c = CROP_COLOURS[k % len(CROP_COLOURS)]
        p0 = (int(win.x * s), int(win.y * s))
        p1 = (int((win.x + win.size) * s) - 1, int((win.y + win.size) * s) - 1)
        cv2.rectangle(small, p0, p1, (0, 0, 0), 4)
        cv2.rectangle(small, p0, p1, c, 2)
    return _data_uri(small), tw, th


def _fmt(metric: str, v: float | None, signed: bool = False) -> str:
    if v is None:
        return "–"
    s = _FMT[metric].format(v)
    return ("+" + s) if signed and v >= 0 else s


def _score_cells(result: ScoreResult, scores: dict[str, float]) -> str:
    cells = []
    for m in result.metrics:
        if m not in scores:
            cells.append("<td>–</td>")
            continue
        if result.has_input and f"gain_{m}" in scores:
            g = scores[f"gain_{m}"]
            cls = "up" if g > 0 else ("down" if g < 0 else "")
            cells.append(
                f"<td><span class=in>{_fmt(m, scores[f'input_{m}'])} →</span> <b>{_fmt(m, scores[m])}</b> "
                f"<span class='gain {cls}'>{_fmt(m, g, signed=True)}</span></td>"
            )
        else:
            cells.append(f"<td><b>{_fmt(m, scores[m])}</b></td>")
    return "".join(cells)


def _anchor(i: int) -> str:
    return f"img{i}"


def _table(result: ScoreResult) -> str:
    e = html.escape
    head = "".join(f"<th>{e(m.upper())}{_ARROW[m]}</th>" for m in result.metrics)
    rows = []
    for i, it in enumerate(result.items):
        name = f"<a href='#{_anchor(i)}'>{e(it.pair.name)}</a>" if it.status == "ok" else e(it.pair.name)
        if it.status != "ok":
            rows.append(
                f"<tr class=err><td>{name}</td><td></td><td colspan={len(result.metrics) + 1}>"
                f"error: {e(it.error or '')}</td></tr>"
            )
            continue
        rows.append(
            f"<tr><td>{name}</td><td>{it.width}×{it.height}</td><td>{it.bit_depth}</td>"
            f"{_score_cells(result, it.scores)}</tr>"
        )
    n = len(result.ok_items)
    foot = ""
    if n:
        foot = "".join(
            f"<tr class=agg><td>{how} (n={n})</td><td></td><td></td>{_score_cells(result, result.aggregate(how))}</tr>"
            for how in ("mean", "median")
        )
    return (
        f"<table class=scores><thead><tr><th>image</th><th>size</th><th>bits</th>{head}</tr></thead>"
        f"<tbody>{''.join(rows)}</tbody><tfoot>{foot}</tfoot></table>"
    )


def _figure(uri: str, caption: str, w: int, h: int, cls: str = "") -> str:
    return (
        f"<figure class='{cls}'><img src='{uri}' width={w} height={h} alt='{html.escape(caption)}'"
        f" style='aspect-ratio:{w}/{h}'>"
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
    )


def _item_section(result: ScoreResult, i: int, it: ItemScore) -> str:
    e = html.escape
    pair = it.pair
    assert pair.pred is not None and pair.gt is not None
    # pixels as scored (protocol applied), shown as 8-bit
    pred = load_image(pair.pred, result.protocol).pixels
    gt = load_image(pair.gt, result.protocol).pixels
    blurry = load_image(pair.input, result.protocol).pixels if pair.input is not None else None
    ref, ref_name = (blurry, "input") if blurry is not None else (gt, "ground truth")
    size = crop_size(*gt.shape[:2])
    wins = find_windows(pred, ref, size)
    panels = [("input", blurry, pair.input)] if blurry is not None else []
    panels += [("result", pred, pair.pred), ("ground truth", gt, pair.gt)]
    u8 = [(label, _to_u8(img), path) for label, img, path in panels]

    figs = []
    for label, img, path in u8:
        uri, tw, th = _thumb(img, wins)
        figs.append(_figure(uri, f"{label}: {Path(str(path)).name}", tw, th))
    cols = f"grid-template-columns:repeat({len(u8)},minmax(0,520px))"
    ccols = f"grid-template-columns:repeat({len(u8)},minmax(0,400px))"
    crops = []
    for k, win in enumerate(wins):
        c = CROP_COLOURS[k % len(CROP_COLOURS)]
        cells = []
        for label, img, _ in u8:
            patch = img[win.y : win.y + win.size, win.x : win.x + win.size]
            uri = _data_uri(np.ascontiguousarray(patch), quality=95)
            cells.append(_figure(uri, label, win.size, win.size, "crop"))
        crops.append(
            f"<div class=croprow style='border-left:6px solid rgb{c}'>"
            f"<div class=cropinfo>crop {k + 1}: x={win.x}, y={win.y}, {win.size}×{win.size} px "
            f"· mean |result − {ref_name}| = {win.change:.4f}</div>"
            f"<div class=grid style='{ccols}'>{''.join(cells)}</div></div>"
        )
    why = "changed most from the input" if blurry is not None else "differs most from the ground truth"
    scores = "".join(
        f"<span class=chip>{m.upper()}{_ARROW[m]} "
        + (f"{_fmt(m, it.scores[f'input_{m}'])} → " if f"input_{m}" in it.scores else "")
        + f"<b>{_fmt(m, it.scores[m])}</b>"
        + (f" ({_fmt(m, it.scores[f'gain_{m}'], signed=True)})" if f"gain_{m}" in it.scores else "")
        + "</span>"
        for m in result.metrics
        if m in it.scores
    )
    return (
        f"<section id='{_anchor(i)}'><h2>{e(pair.name)}</h2><div class=chips>{scores}</div>"
        f"<div class=grid style='{cols}'>{''.join(figs)}</div>"
        f"<p class=note>Zoomed crops where the result {why} (nearest-neighbour enlargement):</p>"
        f"{''.join(crops)}</section>"
    )


_CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#1d2330;background:#f6f7f9}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:0 0 8px}
.meta{color:#5b6475;margin-bottom:16px}
table.scores{border-collapse:collapse;background:#fff;box-shadow:0 1px 3px #0002;margin:12px 0 24px}
table.scores th,table.scores td{padding:5px 12px;border-bottom:1px solid #e6e8ec;text-align:right;white-space:nowrap}
table.scores th:first-child,table.scores td:first-child{text-align:left}
table.scores thead th{background:#eef1f5}
tr.agg td{font-weight:600;background:#f3f6fa}tr.err td{color:#b42318}
.in{color:#7a8191}.gain{font-size:12px;margin-left:4px}.up{color:#067647}.down{color:#b42318}
section{background:#fff;padding:16px;margin:0 0 24px;box-shadow:0 1px 3px #0002;border-radius:6px}
.grid{display:grid;gap:10px;align-items:start;max-width:1700px}
figure{margin:0;min-width:0}figure img{display:block;width:100%;height:auto;border:1px solid #d0d5dd}
figcaption{font-size:12px;color:#5b6475;margin-top:2px;white-space:nowrap;overflow:hidden;text-overflow:ellipsis}
figure.crop img{image-rendering:pixelated}
.croprow{margin:12px 0 0;padding-left:10px}.cropinfo{font-size:12px;color:#5b6475;margin-bottom:4px}
.chips{margin-bottom:10px}.chip{display:inline-block;background:#eef1f5;border-radius:12px;padding:2px 10px;margin:0 6px 4px 0}
.note{color:#5b6475;font-size:13px;margin:10px 0 0}
details{margin:8px 0 20px}pre{background:#fff;padding:10px;overflow:auto;font-size:12px}
.warn{color:#b42318}
"""


def render_report(result: ScoreResult) -> str:
    """The whole HTML page as a string."""
    e = html.escape
    n_ok, n_all = len(result.ok_items), len(result.items)
    now = _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    parts = [
        "<!doctype html><html lang=en><head><meta charset=utf-8>",
        "<meta name=viewport content='width=device-width,initial-scale=1'>",
        f"<title>defocus score · {e(result.protocol)} · {n_ok} image(s)</title><style>{_CSS}</style></head><body>",
        "<h1>defocus score</h1>",
        f"<div class=meta>protocol <b>{e(result.protocol)}</b> · {e(result.settings.get('protocol_description', ''))}"
        f"<br>{n_ok} of {n_all} item(s) scored · defocus {e(str(result.settings.get('versions', {}).get('defocus')))}"
        f" · {e(now)}</div>",
    ]
    errs = [it for it in result.items if it.status != "ok"]
    if errs:
        parts.append(f"<p class=warn>{len(errs)} item(s) could not be scored (see the table).</p>")
    if result.missing:
        more = " …" if len(result.missing) > 20 else ""
        parts.append(
            f"<p class=warn>{len(result.missing)} ground truth image(s) without a result: "
            + e(", ".join(p.name for p in result.missing[:20]))
            + more
            + "</p>"
        )
    parts.append(_table(result))
    parts.append(
        "<details><summary>Settings (metric conventions, versions)</summary><pre>"
        + e(json.dumps(result.settings, indent=2))
        + "</pre></details>"
    )
    for i, it in enumerate(result.items):
        if it.status != "ok":
            continue
        try:
            parts.append(_item_section(result, i, it))
        except Exception as ex:  # noqa: BLE001 - one bad preview must not lose the whole report
            log.warning("report: no preview for %s: %s", it.pair.name, ex)
            parts.append(f"<section><h2>{e(it.pair.name)}</h2><p class=warn>no preview: {e(str(ex))}</p></section>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(result: ScoreResult, path: Path | str) -> Path:
    """Write :func:`render_report` to ``path`` (UTF-8) atomically. Raises OutputError when it cannot be written."""
    p = Path(path)
    text = render_report(result)
    atomic_write(p, text.encode("utf-8"), make_parents=False)  # a full disk never leaves half a report
    log.info("report written to %s (%.1f MB)", p, len(text) / 1e6)
    return p


# ------------------------------------------------------------------------------------------------------
# Before/after page for results without ground truth (`defocus deblur --report`): the same page layout,
# input and result side by side, zoomed crops where the result changed the most.

COMPARE_MAX_ITEMS = 100
"""At most this many photos get a section in a compare page (the page embeds every image)."""


def _compare_section(i: int, name: str, before: np.ndarray, after: np.ndarray, labels: tuple[str, str]) -> str:
    e = html.escape
    size = crop_size(*before.shape[:2])
    wins = find_windows(after, before, size)
    u8 = [(labels[0], _to_u8(before)), (labels[1], _to_u8(after))]
    figs = []
    for label, img in u8:
        uri, tw, th = _thumb(img, wins)
        figs.append(_figure(uri, label, tw, th))
    crops = []
    for k, win in enumerate(wins):
        c = CROP_COLOURS[k % len(CROP_COLOURS)]
        cells = [_figure(_data_uri(np.ascontiguousarray(img[win.y : win.y + win.size, win.x : win.x + win.size]),
                                   quality=95), label, win.size, win.size, "crop") for label, img in u8]
        crops.append(
            f"<div class=croprow style='border-left:6px solid rgb{c}'>"
            f"<div class=cropinfo>crop {k + 1}: x={win.x}, y={win.y}, {win.size}×{win.size} px "
            f"· mean |result − input| = {win.change:.4f}</div>"
            f"<div class=grid style='grid-template-columns:repeat(2,minmax(0,400px))'>{''.join(cells)}</div></div>"
        )
    return (
        f"<section id='{_anchor(i)}'><h2>{e(name)}</h2>"
        f"<div class=grid style='grid-template-columns:repeat(2,minmax(0,520px))'>{''.join(figs)}</div>"
        "<p class=note>Zoomed crops where the result changed most from the input (nearest-neighbour "
        f"enlargement):</p>{''.join(crops)}</section>"
    )


def render_compare(pairs: list[tuple[Path, Path]], *, title: str = "defocus deblur",
                   settings: dict[str, object] | None = None, max_items: int = COMPARE_MAX_ITEMS) -> str:
    """A before/after HTML page (images embedded) for ``(input, output)`` file pairs: per photo the input and
    the result side by side and zoomed crops of the windows that changed most. Only the first ``max_items``
    pairs get a section; a pair that cannot be read gets a one-line note instead."""
    from defocus_cli.io.read import read_photo

    e = html.escape
    now = _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    parts = [
        "<!doctype html><html lang=en><head><meta charset=utf-8>",
        "<meta name=viewport content='width=device-width,initial-scale=1'>",
        f"<title>{e(title)} · {len(pairs)} photo(s)</title><style>{_CSS}</style></head><body>",
        f"<h1>{e(title)}: before / after</h1>",
        f"<div class=meta>{len(pairs)} photo(s) · {e(now)}</div>",
    ]
    if len(pairs) > max_items:
        parts.append(f"<p class=warn>only the first {max_items} of {len(pairs)} photos are shown</p>")
    if settings:
        parts.append("<details><summary>Settings</summary><pre>" + e(json.dumps(settings, indent=2, default=str))
                     + "</pre></details>")
    for i, (src, out) in enumerate(pairs[:max_items]):
        try:
            before = read_photo(src, max_pixels=None).pixels
            after = read_photo(out, max_pixels=None).pixels
            if before.shape != after.shape:
                raise ValueError(f"result is {after.shape[1]}x{after.shape[0]}, input {before.shape[1]}x{before.shape[0]}")
            parts.append(_compare_section(i, Path(src).name, before, after,
                                          (f"input: {Path(src).name}", f"result: {Path(out).name}")))
        except Exception as ex:  # noqa: BLE001 - one bad preview must not lose the whole page
            log.warning("report: no preview for %s: %s", src, ex)
            parts.append(f"<section><h2>{e(Path(src).name)}</h2><p class=warn>no preview: {e(str(ex))}</p></section>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_compare(pairs: list[tuple[Path, Path]], path: Path | str, **kw: object) -> Path:
    """Write :func:`render_compare` to ``path`` atomically (UTF-8). Raises OutputError when it cannot be written."""
    p = Path(path)
    text = render_compare(pairs, **kw)  # type: ignore[arg-type]
    atomic_write(p, text.encode("utf-8"), make_parents=False)
    log.info("report written to %s (%.1f MB)", p, len(text) / 1e6)
    return p
