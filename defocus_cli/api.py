"""The public Python API: load a model, deblur arrays and photos, read and write photos.

Example::

    from defocus_cli.api import load_model, deblur_photo

    model = load_model("ifan")                       # verified weights, eval mode, CPU float32
    sharp = deblur_photo("blurry.jpg", model, output="sharp.jpg", device="auto")
    # sharp: float32 (H, W, 3) RGB in [0, 1]; sharp.jpg keeps bit depth, orientation, EXIF and ICC.

For many images, load once and reuse::

    from defocus_cli.api import load_restorer, restore_array

    restorer = load_restorer("sftnet", device="auto", tile="auto")   # validated and resolved once
    sharp, stats = restore_array(pixels, restorer)                    # stats: tiles, device, precision, seconds

:func:`load_restorer` is the engine boundary (:class:`defocus_cli.restorer.Restorer`: weights, backend, device,
precision, tile, overlap resolved once; padding, tiling, autocast, clamp on every call). Everything here is a
thin layer over it and :mod:`defocus_cli.io.read` (files). The glue after the engine (``--tta`` flips, the tone
lock, ``--strength``) works on numpy arrays for every backend. Importing this module does not import torch, and
neither does a registered model that runs on the OpenVINO backend; the torch backend imports it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from defocus_cli.errors import ShapeError, UsageError
from defocus_cli.io.read import Photo, read_photo
from defocus_cli.io.write import encode_photo, write_photo

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from defocus_cli.restorer import Restorer, RunStats
    from defocus_cli.weights import LoadedModel

__all__ = [
    "Photo",
    "read_photo",
    "write_photo",
    "encode_photo",
    "load_model",
    "load_restorer",
    "parse_tile",
    "parse_backend",
    "restore_array",
    "deblur_array",
    "deblur_photo",
    "make_deblur_fn",
    "DeblurFn",
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
    for anything else (see :func:`defocus_cli.runtime.parse_tile`)."""
    from defocus_cli.runtime import parse_tile as parse

    return parse(value)


def parse_backend(value: str) -> str:
    """``--backend`` in lower case if it is ``auto``, ``torch`` or ``openvino``; else raise :class:`UsageError`
    (CLI exit 2), so that a command can refuse it before any work."""
    from defocus_cli.backends import BACKENDS

    v = (value or "auto").strip().lower()
    if v not in BACKENDS:
        raise UsageError(f"--backend must be auto, torch or openvino, got {value!r}")
    return v


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


def load_restorer(
    model: Any = None,
    *,
    weights: str | Path | None = None,
    device: str | torch.device = "auto",
    precision: str = "auto",
    tile: str | int = "auto",
    overlap: int | None = None,
    backend: str = "torch",
) -> Restorer:
    """Load a deblurring model and resolve how it runs, once: the engine boundary.

    Args:
        model: a registered model name (``None`` = the default deblurring model, or the arch of ``weights``),
            a :class:`~defocus_cli.weights.LoadedModel`, an engine ``nn.Module`` or a host engine
            (e.g. :class:`defocus_cli.backends.openvino.OpenVINOEngine`).
        weights: a ``.safetensors`` file of one's own (``--weights``), with ``model`` naming its arch or ``None``.
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"mps"`` or a ``torch.device``.
        precision: ``"auto"``, ``"fp32"``, ``"bf16"``, ``"fp16"``, or ``"int8"`` (OpenVINO backend only).
        tile: ``"auto"``, 0 (whole image) or a tile size in pixels.
        overlap: context pixels per tile side; ``None`` = the network's receptive field.
        backend: ``"torch"``, ``"openvino"`` or ``"auto"`` (see :mod:`defocus_cli.backends`); for a loaded
            model or name only.

    Returns:
        A :class:`~defocus_cli.restorer.Restorer`: ``restorer(x)`` maps ``(N, 3, H, W)`` RGB in [0, 1] to the same
        shape in [0, 1]; ``restorer.options`` holds the resolved device, precision, tile, overlap and backend.

    Raises:
        UsageError: a bad option value or model name (CLI exit 2).
        WeightsError: weights unavailable or corrupt (exit 3).
        DeviceError: the device is not available (exit 4).
    """
    from defocus_cli import backends, devices, registry, runtime, weights as weights_mod
    from defocus_cli.restorer import Restorer

    runtime.parse_tile(tile)  # option values before the (slow) load; Restorer.create resolves them
    runtime.parse_overlap(overlap)
    runtime.tune_allocator()  # before the weights are read, so that they are allocated with it
    loads = model is None or isinstance(model, str) or weights is not None
    if loads and weights is None and isinstance(device, str) and devices.surely_cpu(device):
        # a registered model on the CPU: the backend is chosen from its registry row, and OpenVINO's IR, pins and
        # traits all come from there: this path imports no torch (the weights file is for the torch network)
        spec = registry.task_spec(model, "deblur")
        engine, choice = backends.select_host_engine(spec, spec.name, spec.sha256, backend, precision, "cpu")
        if engine is not None:
            return Restorer.create(engine, device="cpu", tile=tile, overlap=overlap, name=spec.name,
                                   weights_sha256=spec.sha256, backend=choice.backend)
        loaded = weights_mod.load_model(model, task="deblur")
        return Restorer.create(loaded.module, device="cpu", precision=choice.precision, tile=tile, overlap=overlap,
                               name=loaded.name, weights_sha256=loaded.sha256, backend=choice.backend)
    dev = devices.resolve_device(device) if isinstance(device, str) else device
    loaded = weights_mod.load_model(model, weights_file=weights, task="deblur") if loads else model
    if isinstance(loaded, weights_mod.LoadedModel):
        engine, choice = backends.select_engine(loaded, backend, precision, dev)
        return Restorer.create(engine, device=dev, precision=choice.precision, tile=tile, overlap=overlap,
                               name=loaded.name, weights_sha256=loaded.sha256, backend=choice.backend)
    backend_name = "torch" if runtime.is_torch_module(loaded) else type(loaded).__name__
    return Restorer.create(loaded, device=dev, precision=precision, tile=tile, overlap=overlap, backend=backend_name)


def restore_array(
    pixels: np.ndarray,
    restorer: Restorer,
    *,
    tone_lock: bool | None = None,
    tta: bool = False,
    strength: float = 1.0,
) -> tuple[np.ndarray, RunStats]:
    """Deblur one image held in memory with a :class:`~defocus_cli.restorer.Restorer`; say how.

    Args:
        pixels: float ``(H, W, 3)`` RGB in ``[0, 1]`` (e.g. ``Photo.pixels``).
        restorer: from :func:`load_restorer`.
        tone_lock: keep the input's low frequencies (:func:`defocus_cli.tone.lock_tone`, on the whole image
            after tiling); ``None`` = when the weights ask for it (``tone_lock_sigma`` metadata), ``False`` =
            never, ``True`` = always (σ from the weights, else :data:`defocus_cli.tone.DEFAULT_SIGMA`).
        tta: flip self-ensemble: the mean of the network's results on the image and its horizontal, vertical
            and double flips (each flipped back); 4× the time, same memory.
        strength: how much of the restored detail to keep, from 0 (the input unchanged) to 1 (the full
            result): ``input + strength * (result - input)`` on the whole image, after tiling, TTA and the
            tone lock.

    Returns:
        float32 ``(H, W, 3)`` RGB in ``[0, 1]``, and the :class:`~defocus_cli.restorer.RunStats` of the run
        (``seconds`` summed over the TTA passes, ``tone_lock_sigma`` set when the tone lock was applied).

    Raises:
        ShapeError: ``pixels`` is not ``(H, W, 3)``.
        UsageError: a bad ``strength``.
    """
    import dataclasses

    strength = check_strength(strength)
    px = np.asarray(pixels, dtype=np.float32)
    if px.ndim != 3 or px.shape[2] != 3:
        raise ShapeError("(H, W, 3) RGB pixels", f"shape {px.shape}")
    # the HWC pixels seen as (1, 3, H, W): channels_last, no copy (the runtime never writes into its input,
    # and a torch network gets its own copy of each tile from its adapter)
    x = px.transpose(2, 0, 1)[None]
    y, stats = restorer.run(x)
    seconds = stats.seconds
    if tta:
        for axes in ((1,), (0,), (0, 1)):  # of (H, W, 3): horizontal, vertical, both
            xf = np.ascontiguousarray(np.flip(px, axes)).transpose(2, 0, 1)[None]
            yf, s = restorer.run(xf)
            y = y + np.flip(yf, tuple(a + 2 for a in axes))
            seconds += s.seconds
        y = y / 4
    # the result, (H, W, 3) float32: the one full-size copy after the engine; the rest is done in place in it
    out = np.ascontiguousarray(y[0].transpose(1, 2, 0))
    del y
    sigma = restorer.options.traits.tone_lock_sigma
    locked: float | None = None
    if tone_lock or (tone_lock is None and sigma > 0):
        from defocus_cli.tone import DEFAULT_SIGMA, lock_tone_np

        locked = sigma or DEFAULT_SIGMA
        lock_tone_np(out, px, locked, in_place=True)
    if strength != 1.0:  # px + strength * (out - px)
        out -= px
        out *= np.float32(strength)
        out += px
    np.clip(out, 0.0, 1.0, out=out)
    return out, dataclasses.replace(stats, seconds=seconds, passes=4 if tta else 1, tone_lock_sigma=locked)


def deblur_array(
    pixels: np.ndarray,
    model: Any,
    *,
    device: str | torch.device = "cpu",
    precision: str = "fp32",
    tile: str | int = "auto",
    overlap: int | None = None,
    tone_lock: bool | None = None,
    tta: bool = False,
    strength: float = 1.0,
) -> np.ndarray:
    """Deblur one image held in memory: :func:`load_restorer` then :func:`restore_array` (for many images,
    load the restorer once and call :func:`restore_array` or :func:`make_deblur_fn`).

    Args:
        pixels: float ``(H, W, 3)`` RGB in ``[0, 1]`` (e.g. ``Photo.pixels``).
        model: a :class:`~defocus_cli.weights.LoadedModel`, an engine ``nn.Module`` (engine contract) or a host
            engine such as :class:`defocus_cli.backends.openvino.OpenVINOEngine` (then ``precision`` is its own).
        device, precision, tile, overlap: see :func:`load_restorer`.
        tone_lock, tta, strength: see :func:`restore_array`.

    Returns:
        float32 ``(H, W, 3)`` RGB in ``[0, 1]``.
    """
    strength = check_strength(strength)
    restorer = load_restorer(model, device=device, precision=precision, tile=tile, overlap=overlap)
    return restore_array(pixels, restorer, tone_lock=tone_lock, tta=tta, strength=strength)[0]


class DeblurFn:
    """``process(photo) -> pixels`` for :func:`defocus_cli.batch.run_batch`, made by :func:`make_deblur_fn`.

    Attributes:
        restorer: the :class:`~defocus_cli.restorer.Restorer` it runs.
        last_stats: the :class:`~defocus_cli.restorer.RunStats` of the latest photo, ``None`` before the first.
    """

    def __init__(self, restorer: Restorer, *, tta: bool, strength: float, tone_lock: bool | None) -> None:
        self.restorer = restorer
        self.tta = tta
        self.strength = strength
        self.tone_lock = tone_lock
        self.last_stats: RunStats | None = None

    def __call__(self, photo: Photo) -> np.ndarray:
        """``photo.pixels`` ``(H, W, 3)`` RGB in [0, 1] → the deblurred float32 ``(H, W, 3)`` in [0, 1]."""
        out, self.last_stats = restore_array(photo.pixels, self.restorer, tone_lock=self.tone_lock, tta=self.tta,
                                             strength=self.strength)
        return out


def make_deblur_fn(
    restorer: Restorer, *, tta: bool = False, strength: float = 1.0, tone_lock: bool | None = None
) -> DeblurFn:
    """A ``process(photo) -> pixels`` function for :func:`defocus_cli.batch.run_batch` (arguments as in
    :func:`restore_array`); a bad ``strength`` is refused here, before any photo."""
    return DeblurFn(restorer, tta=tta, strength=check_strength(strength), tone_lock=tone_lock)


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
    strength = check_strength(strength)
    photo = src if isinstance(src, Photo) else read_photo(src)
    restorer = load_restorer(model, device=device, precision=precision, tile=tile, overlap=overlap)
    result, _ = restore_array(photo.pixels, restorer, strength=strength)
    if output is not None:
        write_photo(output, result, photo, fmt=fmt, quality=quality, strip_metadata=strip_metadata)
    return result
