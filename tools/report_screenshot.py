#!/usr/bin/env python3
"""Render a real ``defocus deblur --report`` page in headless Chromium and keep a screenshot of it.

    python tools/report_screenshot.py                      # → docs/report_screenshot.png
    python tools/report_screenshot.py --photo examples/rocket_blurry.jpg --size 1280,1060 -o shot.png

Deblurs a bundled example photo with the default model (the shipped weights), writes the before/after page,
opens it with ``chromium --headless --screenshot`` (Debian: ``apt-get install chromium``) and stores the
screenshot as a 256-colour PNG (octree palette, dithered: about 120 KB at 1280×1060) so that it can live in
the repository. Look at the result: both photos side by side with the crop frames, the zoomed crops below.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_browser(given: str | None) -> str:
    for name in ([given] if given else BROWSERS):
        path = shutil.which(name) if name else None
        if path:
            return path
    sys.exit("error: no Chromium found; install it (Debian/Ubuntu: apt-get install -y chromium) or pass --browser PATH")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--photo", default=str(ROOT / "examples" / "coffee_blurry.jpg"))
    p.add_argument("--size", default="1280,1060", help="browser window W,H in CSS pixels (default 1280,1060)")
    p.add_argument("-o", "--output", default=str(ROOT / "docs" / "report_screenshot.png"))
    p.add_argument("--browser", help="Chromium executable (default: the first of %s on PATH)" % ", ".join(BROWSERS))
    p.add_argument("--colors", type=int, default=256, help="palette size of the stored PNG (default 256)")
    a = p.parse_args(argv)
    browser = find_browser(a.browser)
    with tempfile.TemporaryDirectory(prefix="defocus-shot-") as tmp:
        t = Path(tmp)
        photo = Path(a.photo)
        sharp, page, raw = t / f"{photo.stem}_sharp{photo.suffix}", t / "compare.html", t / "raw.png"
        subprocess.run([sys.executable, "-m", "defocus_cli", "deblur", a.photo, "-o", str(sharp),
                        "--report", str(page)], check=True)
        cmd = [browser, "--headless", "--disable-gpu", "--hide-scrollbars", "--force-device-scale-factor=1",
               f"--window-size={a.size}", f"--screenshot={raw}", page.as_uri()]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            cmd.insert(1, "--no-sandbox")  # Chromium refuses to run as root with its sandbox
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120)
        from PIL import Image

        from defocus_cli.io.atomic import atomic_write

        with Image.open(raw) as im:
            small = im.convert("RGB").quantize(a.colors, method=Image.Quantize.FASTOCTREE,
                                               dither=Image.Dither.FLOYDSTEINBERG)
        buf = io.BytesIO()
        small.save(buf, "PNG", optimize=True)
        atomic_write(Path(a.output), buf.getvalue())
    print(f"{a.output}: {small.width}x{small.height}, {len(buf.getvalue()) // 1024} KB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
