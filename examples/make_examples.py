"""Make the bundled example photos: public-domain / CC0 scikit-image photos blurred with a defocus PSF.

Run from the repository root (needs scikit-image, from ``pip install -e ".[test]"``)::

    python examples/make_examples.py

The blur is a real defocus point-spread function: a uniform disc (the thin-lens circle of confusion) of
radius ``r`` pixels, anti-aliased by 8x8 supersampling at its rim, applied in *linear* light (sRGB decoded
first, re-encoded after), followed by mild sensor-like noise (sigma 0.8/255, fixed seed) and JPEG
encoding at quality 92. The files carry an sRGB ICC profile and EXIF naming their source and licence, so
they also show that ``defocus deblur`` keeps metadata. Output is deterministic for given library versions.
"""

from __future__ import annotations

import io
from pathlib import Path

import cv2
import numpy as np
import piexif
from PIL import Image, ImageCms

HERE = Path(__file__).resolve().parent

#: name → (skimage.data function, disc radius in px, licence note from the skimage docstring)
EXAMPLES: dict[str, tuple[str, float, str]] = {
    "coffee": ("coffee", 4.0, "CC0 by the photographer (Rachel Michetti), via scikit-image"),
    "chelsea": ("chelsea", 3.0, "CC0 by the photographer (Stefan van der Walt), via scikit-image"),
    "rocket": ("rocket", 5.0, "Public domain (SpaceX launch photo of DSCOVR), via scikit-image"),
}


def disc_psf(radius: float, supersample: int = 8) -> np.ndarray:
    """Anti-aliased uniform disc of ``radius`` px, normalised to sum 1: ``(2k+1, 2k+1)`` float32."""
    k = int(np.ceil(radius))
    n = (2 * k + 1) * supersample
    c = (np.arange(n) + 0.5) / supersample - (k + 0.5)
    yy, xx = np.meshgrid(c, c, indexing="ij")
    fine = (xx**2 + yy**2 <= radius**2).astype(np.float64)
    psf = fine.reshape(2 * k + 1, supersample, 2 * k + 1, supersample).mean(axis=(1, 3))
    return (psf / psf.sum()).astype(np.float32)


def srgb_to_linear(x: np.ndarray) -> np.ndarray:
    return np.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return np.where(x <= 0.0031308, x * 12.92, 1.055 * np.power(x, 1 / 2.4) - 0.055)


def defocus(rgb: np.ndarray, radius: float, seed: int = 0) -> np.ndarray:
    """Blur an 8-bit sRGB image ``(H, W, 3)`` with a disc PSF in linear light; return 8-bit sRGB."""
    lin = srgb_to_linear(rgb.astype(np.float32) / 255.0).astype(np.float32)
    blurred = cv2.filter2D(lin, -1, disc_psf(radius), borderType=cv2.BORDER_REFLECT)
    out = linear_to_srgb(blurred) + np.random.default_rng(seed).normal(0.0, 0.8 / 255.0, rgb.shape)
    return np.clip(np.round(out * 255.0), 0, 255).astype(np.uint8)


def main() -> None:
    import skimage.data

    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    for seed, (name, (loader, radius, licence)) in enumerate(EXAMPLES.items()):
        sharp = getattr(skimage.data, loader)()
        blurry = defocus(sharp, radius, seed=seed)
        exif = piexif.dump({
            "0th": {piexif.ImageIFD.ImageDescription: f"{name}: defocus-blurred (disc PSF r={radius} px)".encode(),
                    piexif.ImageIFD.Copyright: licence.encode(),
                    piexif.ImageIFD.Software: b"defocus examples/make_examples.py",
                    piexif.ImageIFD.Orientation: 1},
            "Exif": {}, "GPS": {}, "1st": {}, "thumbnail": None,
        })
        buf = io.BytesIO()
        Image.fromarray(blurry).save(buf, "JPEG", quality=92, subsampling=0, exif=exif, icc_profile=icc)
        (HERE / f"{name}_blurry.jpg").write_bytes(buf.getvalue())
        print(f"examples/{name}_blurry.jpg  {blurry.shape[1]}x{blurry.shape[0]}  disc r={radius}")


if __name__ == "__main__":
    main()
