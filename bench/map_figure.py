"""A figure of `defocus map` on real dual-pixel photos: for each Google Pixel 4 scene in ../shared/data/pixel4_dp,
the left view, the classical map, the learned map (``defocusgan-map``, views prepared as `defocus map --black-level`
does) and the ground truth, side by side. The shipped learned map was fine-tuned on scenes 002, 006, 010, 014
(weights/defocusgan-map.md): only the other four are held out.

Each map is shown with its sign aligned to the ground truth (the ground truth is affine to inverse depth, so
only the order of values is comparable) and stretched between its own 2nd and 98th percentiles (turbo colour
map); pixels without ground truth are grey in the ground-truth column. The |Spearman| of each map is printed
under it.

    python bench/map_figure.py                       # -> docs/figures/map_pixel4.jpg
    python bench/map_figure.py --scenes 002,008 --width 200 --out /tmp/maps.png

The scenes are research data without a licence file (Xin et al., ICCV 2021): the figure holds only small
previews; the data itself is never copied into the project.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from _common import ROOT, SHARED, read_gray16  # noqa: I001 - bench/ is on sys.path when run as a script
from map_pixel4 import spearman

DATA = SHARED / "data" / "pixel4_dp"


def _colour(v: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    import cv2

    sel = v[valid] if valid is not None else v.ravel()
    lo, hi = np.percentile(sel, [2, 98])
    u8 = (np.clip((v - lo) / max(hi - lo, 1e-6), 0, 1) * 255).astype(np.uint8)
    rgb = cv2.applyColorMap(u8, cv2.COLORMAP_TURBO)[..., ::-1]
    if valid is not None:
        rgb = np.where(valid[..., None], rgb, np.uint8(128))
    return rgb


def main() -> None:
    import cv2

    from defocus_cli.data.figures import label
    from defocus_cli.defocus_map import estimate_dp_map
    from defocus_cli.io.maps import load_dp_pair
    from defocus_cli.io.atomic import atomic_write
    from defocus_cli.weights import load_model

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenes", default="", help="comma-separated scene ids (default: all)")
    ap.add_argument("--width", type=int, default=224, help="width of each preview, px")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "figures" / "map_pixel4.jpg")
    args = ap.parse_args()
    if not DATA.is_dir():
        sys.exit(f"needs {DATA} (development data, not part of a clone)")
    learned = load_model(None, task="map")
    scenes = [s.strip() for s in args.scenes.split(",") if s.strip()] or sorted(p.stem for p in (DATA / "left").glob("*.png"))
    rows = []
    for sid in scenes:
        left, right = load_dp_pair(DATA / "left" / f"{sid}.png", DATA / "right" / f"{sid}.png", black_level=1024)
        gt = read_gray16(DATA / "gt_defocus" / f"{sid}.png")
        valid = gt > 0
        h, w = gt.shape
        size = (args.width, round(h * args.width / w))
        view = np.clip(left.pixels.reshape(h, w, -1)[..., 0], 0, 1) ** (1 / 2.2)
        tiles = [label(cv2.resize((np.repeat(view[..., None], 3, 2) * 255).astype(np.uint8), size,
                                   interpolation=cv2.INTER_AREA), f"{sid} left view")]
        for name, kw in (("classical", {"method": "classical"}), ("learned", {"method": "learned", "model": learned})):
            r = estimate_dp_map(left.pixels, right.pixels, linear=True, **kw).radius
            rho = spearman(r[valid], gt[valid])
            aligned = r if rho >= 0 else -r
            tiles.append(label(cv2.resize(_colour(aligned), size, interpolation=cv2.INTER_AREA),
                                f"{name} |rho| {abs(rho):.2f}"))
            print(f"{sid} {name}: |spearman| {abs(rho):.3f}", flush=True)
        tiles.append(label(cv2.resize(_colour(gt, valid), size, interpolation=cv2.INTER_NEAREST), "ground truth"))
        gap = np.full((tiles[0].shape[0], 4, 3), 255, np.uint8)
        rows.append(np.concatenate([t for tile in tiles for t in (tile, gap)][:-1], axis=1))
    fig = np.concatenate(rows, axis=0)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    ext = args.out.suffix.lower() or ".png"
    ok, buf = cv2.imencode(ext, fig[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 85] if ext in (".jpg", ".jpeg") else [])
    atomic_write(args.out, lambda tmp: tmp.write_bytes(buf.tobytes()))
    print(f"wrote {args.out} ({fig.shape[1]}x{fig.shape[0]})")


if __name__ == "__main__":
    main()
