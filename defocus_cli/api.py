"""The public Python API: load a model, deblur arrays and photos, read and write photos.

Example::

    from defocus_cli.api import load_model, deblur_photo

    model = load_model("ifan")                       # verified weights, eval mode, CPU float32
    sharp = deblur_photo("blurry.jpg", model, output="sharp.jpg", device="auto")
    # sharp: float32 (H, W, 3) RGB in [0, 1]; sharp.jpg keeps bit depth, orientation, EXIF and ICC.

Everything here is a thin layer over :mod:`defocus_cli.weights` (model files), :mod:`defocus_cli.devices`
(device and precision), :mod:`defocus_cli.runtime` (tiling, out-of-memory retry) and
:mod:`defocus_cli.io.read` (files). Importing this module does not import torch; the functions do.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from defocus_cli.errors import UsageError
from defocus_cli.io.read import Photo, read_photo
from defocus_cli.io.write import encode_photo, write_photo

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from defocus_cli.weights import LoadedModel

__all__ = [
    "Photo",
    "read_photo",
    "write_photo",
    "encode_photo",
    "load_model",
    "parse_tile",
    "deblur_array",
    "deblur_photo",
    "make_deblur_fn",
    "check_strength",
]


def load_model(name: str | None = None, weights_file: str | Path | None = None, task: str = "deblur") -> LoadedModel:
    """Load a registered model (``name``; ``None`` = the task's default) or a user's own ``.safetensors``
    file (``weights_file``). See :func:`defocus_cli.weights.load_model`.

    Raises:
        WeightsError: weights unavailable or corrupt (CLI exit 3).
        UsageError: unknown model name.
    """
    from defocus_cli import weights

    return weights.load_model(name, weights_file=weights_file, task=task)


def parse_tile(value: str | int) -> str | int:
    """``"auto"`` → ``"auto"``; ``"0"``/``0`` → 0 (whole image); ``"512"`` → 512. Raise :class:`UsageError`
    for anything else."""
    if isinstance(value, int):
        if value < 0:
            raise UsageError(f"--tile must be auto, 0 or a positive number of pixels, got {value}")
        return value
    v = str(value).strip().lower()
    if v == "auto":
        return "auto"
    if v.isdigit():
        return int(v)
    raise UsageError(f"--tile must be auto, 0 or a positive number of pixels, got {value!r}")


def check_strength(value: float) -> float:
    """``value`` as a float if it is a valid restoration strength (``0 <= value <= 1``); else raise
    :class:`UsageError` (CLI exit 2)."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise UsageError(f"--strength must be a number from 0 to 1, got {value!r}") from None
    if not 0.0 <= v <= 1.0:  # also refuses NaN
        raise UsageError(f"--strength must be from 0 (the input unchanged) to 1 (full restoration), got {value}")
    return v


def _module_of(model: Any) -> torch.nn.Module:
    return getattr(model, "module", model)


def deblur_array(
    pixels: np.ndarray,
    model: Any,
    *,
    device: str | torch.device = "cpu",
    precision: str = "fp32",
    tile: str | int = "auto",
    overlap: int | None = None,
    info: dict[str, Any] | None = None,
    tone_lock: bool | None = None,
    tta: bool = False,
    strength: float = 1.0,
) -> np.ndarray:
    """Deblur one image held in memory.

    Args:
        pixels: float ``(H, W, 3)`` RGB in ``[0, 1]`` (e.g. ``Photo.pixels``).
        model: a :class:`~defocus_cli.weights.LoadedModel`, an engine ``nn.Module`` (engine contract) or a host
            engine such as :class:`defocus_cli.backends.openvino.OpenVINOEngine` (then ``precision`` is its own).
        device: a resolved ``torch.device`` or a request (``"auto"``, ``"cpu"``, ``"cuda:0"``, ``"mps"``).
        precision: ``"fp32"``, ``"bf16"``, ``"fp16"`` or ``"auto"`` (resolved for the model and device).
        tile: ``"auto"``, 0 (whole image) or a tile size in pixels.
        overlap: context pixels per tile side; ``None`` = the engine's receptive field.
        info: filled with what the runtime did (tile, overlap, device, precision).
        tone_lock: keep the input's low frequencies (:func:`defocus_cli.tone.lock_tone`, on the whole image
            after tiling); ``None`` = when the weights ask for it (``tone_lock_sigma`` metadata), ``False`` =
            never, ``True`` = always (σ from the weights, else :data:`defocus_cli.tone.DEFAULT_SIGMA`).
        tta: flip self-ensemble: the mean of the network's results on the image and its horizontal, vertical
            and double flips (each flipped back); 4× the time, same memory.
        strength: how much of the restored detail to keep, from 0 (the input unchanged) to 1 (the full
            result): ``input + strength * (result - input)`` on the whole image, after tiling, TTA and the
            tone lock.

    Returns:
        float32 ``(H, W, 3)`` RGB in ``[0, 1]``.
    """
    import torch

    from defocus_cli import devices, runtime

    strength = check_strength(strength)
    px = np.asarray(pixels, dtype=np.float32)
    if px.ndim != 3 or px.shape[2] != 3:
        raise UsageError(f"pixels must be (H, W, 3) RGB, got shape {px.shape}")
    module = _module_of(model)
    dev = device if isinstance(device, torch.device) else devices.resolve_device(str(device))
    if runtime.is_host_engine(module):  # compiled for one precision (e.g. the OpenVINO backend)
        prec = str(getattr(module, "precision", "fp32"))
    else:
        prec = devices.resolve_precision(precision, module, dev)
    # one private copy, already in the channels_last layout the runtime feeds the engine (an HWC array is
    # channels_last NCHW): no CHW copy first and no second copy back to channels_last for the whole image
    x = torch.from_numpy(px).permute(2, 0, 1)[None].clone(memory_format=torch.channels_last)
    t = parse_tile(tile)
    y = runtime.run_engine(module, x, device=dev, precision=prec, tile=t, overlap=overlap, info=info)
    if tta:
        for dims in ((-1,), (-2,), (-2, -1)):
            y = y + runtime.run_engine(module, x.flip(dims), device=dev, precision=prec, tile=t,
                                       overlap=overlap).flip(dims)
        y = y / 4
    sigma = float(getattr(module, "tone_lock_sigma", 0.0) or 0.0)
    if tone_lock or (tone_lock is None and sigma > 0):
        from defocus_cli.tone import DEFAULT_SIGMA, lock_tone

        y = lock_tone(y, x, sigma or DEFAULT_SIGMA)
        if info is not None:
            info["tone_lock_sigma"] = sigma or DEFAULT_SIGMA
    if strength != 1.0:
        y = x + strength * (y.to(x.dtype) - x)
    return np.ascontiguousarray(y[0].clamp(0.0, 1.0).permute(1, 2, 0).numpy(), dtype=np.float32)


def make_deblur_fn(
    model: Any,
    *,
    device: str | torch.device = "cpu",
    precision: str = "fp32",
    tile: str | int = "auto",
    overlap: int | None = None,
    info: dict[str, Any] | None = None,
    tta: bool = False,
    strength: float = 1.0,
) -> Callable[[Photo], np.ndarray]:
    """A ``process(photo) -> pixels`` function for :func:`defocus_cli.batch.run_batch` (arguments as in
    :func:`deblur_array`); a bad ``strength`` is refused here, before any photo."""
    strength = check_strength(strength)

    def process(photo: Photo) -> np.ndarray:
        return deblur_array(photo.pixels, model, device=device, precision=precision, tile=tile, overlap=overlap,
                            info=info, tta=tta, strength=strength)

    return process


def deblur_photo(
    src: str | os.PathLike[str] | bytes | Photo,
    model: Any = None,
    *,
    output: str | os.PathLike[str] | None = None,
    device: str | torch.device = "auto",
    precision: str = "auto",
    tile: str | int = "auto",
    overlap: int | None = None,
    fmt: str | None = None,
    quality: int = 95,
    strip_metadata: bool = False,
    strength: float = 1.0,
) -> np.ndarray:
    """Deblur a photo file (or its bytes, or a :class:`Photo`) and optionally write the result.

    Args:
        src: path, encoded bytes or a :class:`Photo`.
        model: a :class:`~defocus_cli.weights.LoadedModel`, an engine ``nn.Module``, a registered model
            name, or ``None`` (the default deblurring model).
        output: where to write the result (atomically), keeping bit depth, orientation, EXIF, ICC and
            alpha; ``None`` = do not write.
        fmt: output format (``jpg``, ``png``, ``tif``, ``webp``); ``None`` = from ``output``'s extension.
        strength: 0 (the input unchanged) to 1 (full restoration); see :func:`deblur_array`.

    Returns:
        float32 ``(H, W, 3)`` RGB in ``[0, 1]``, upright.
    """
    photo = src if isinstance(src, Photo) else read_photo(src)
    if model is None or isinstance(model, str):
        model = load_model(model)
    result = deblur_array(photo.pixels, model, device=device, precision=precision, tile=tile, overlap=overlap,
                          strength=strength)
    if output is not None:
        write_photo(output, result, photo, fmt=fmt, quality=quality, strip_metadata=strip_metadata)
    return result
