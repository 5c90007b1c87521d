"""Deblur a batch on a Ray cluster: Ray Data ``map_batches`` over an actor pool, one loaded model per actor.

Needs the optional extra ``pip install -e ".[ray]"`` (``ray[data]``). Importing this module imports neither
ray nor torch; the functions do. Runner: ``examples/ray_deblur.py``.

1. :func:`plan_inputs` (on the driver): files, folders and the paths of a listing file (:func:`read_listing`)
   go through :func:`defocus_cli.batch.plan_batch`, so output names and every safety check are those of
   ``defocus deblur`` (two inputs writing one output, an output replacing an input, existing outputs without
   ``overwrite``/``skip``, ``--shard``), all before any work. stdin and stdout (``-``) are refused.
2. :func:`run_distributed`: the pending items become a Ray dataset of rows ``(index, input, output, fmt)``
   (absolute paths, one row per block up to :data:`MAX_BLOCKS`) and ``map_batches(DeblurWorker, batch_size=1,
   compute=ActorPoolStrategy(size=workers))`` runs them, with ``num_gpus`` per actor when the cluster has
   GPUs. Each :class:`DeblurWorker` loads the model once (:func:`defocus_cli.weights.load_model`) and passes
   each row to :func:`defocus_cli.batch.run_item`: ``read_photo`` → ``api.deblur_array`` → ``encode_photo``
   (bit depth, EXIF, ICC, alpha) → ``io.atomic.atomic_write``. Outputs are the bytes ``defocus deblur`` writes,
   written atomically; a file that fails becomes that item's error record and the others go on.
3. The records go back into the plan's items (input order kept), as :func:`defocus_cli.batch.run_batch`
   leaves them, so ``json_document`` of ``cli/batch_output.py`` gives the ``--json`` document of the CLI.

Every node must see the inputs and the output folder at the same paths (a shared file system).
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from defocus_cli.batch import STDIO, BatchOptions, BatchResult, Item, log_item, plan_batch, run_item
from defocus_cli.errors import DefocusError, DeviceError, InputError, UsageError, WeightsError
from defocus_cli.io.atomic import read_regular_file

log = logging.getLogger(__name__)

__all__ = ["EngineSettings", "DeblurWorker", "read_listing", "plan_inputs", "run_distributed", "RAY_HINT"]

RAY_HINT = 'pip install -e ".[ray]" (or pip install "ray[data]")'
#: Largest listing file read (bytes): a listing is a text file of paths, not an image.
LISTING_MAX_BYTES = 64 << 20
#: Most dataset blocks: up to this many photos each get their own block (a Ray task each, so actors share the
#: work photo by photo); larger batches put several photos in a block.
MAX_BLOCKS = 10_000


@dataclass(frozen=True)
class EngineSettings:
    """What each worker loads and how it runs it (the ``defocus deblur`` options of the same names).

    Attributes:
        model: registry name; ``None`` = the default deblur model (or the file's own arch with ``weights_file``).
        weights_file: a ``.safetensors`` file of one's own; it must be readable at this path on every node.
        device: ``"auto"`` (CUDA when the actor has a GPU), ``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"mps"``.
        precision: ``"auto"``, ``"fp32"``, ``"bf16"`` or ``"fp16"``.
        tile: ``"auto"``, 0 (the whole image) or a tile side in pixels.
        overlap: context pixels per tile side; ``None`` = the model's receptive field.
        tta: flip self-ensemble (4× the time).
        strength: 0 (the input unchanged) to 1 (full restoration).
    """

    model: str | None = None
    weights_file: str | None = None
    device: str = "auto"
    precision: str = "auto"
    tile: str | int = "auto"
    overlap: int | None = None
    tta: bool = False
    strength: float = 1.0


def read_listing(path: str | os.PathLike[str]) -> list[str]:
    """The paths listed in a UTF-8 text file, one per line, in file order (blank lines and lines starting
    with ``#`` skipped; relative paths are taken from the current folder, as ``tar -T`` does).

    Raises:
        UsageError: the listing is missing, not a regular file, larger than :data:`LISTING_MAX_BYTES`, not
            UTF-8, or lists no path.
    """
    try:
        data = read_regular_file(path, limit=LISTING_MAX_BYTES + 1)
    except InputError as e:
        raise UsageError(f"listing {e}") from None
    if len(data) > LISTING_MAX_BYTES:
        raise UsageError(f"listing {path}: larger than {LISTING_MAX_BYTES >> 20} MiB; is it a text file of paths?")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise UsageError(f"listing {path}: not UTF-8 text; expected one image path per line") from None
    paths = [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    if not paths:
        raise UsageError(f"listing {path}: lists no path; expected one image path per line")
    return paths


def plan_inputs(
    inputs: Sequence[str], opts: BatchOptions, *, listing: str | os.PathLike[str] | None = None
) -> list[Item]:
    """Plan a distributed batch: ``inputs`` (files, folders) plus the paths of ``listing``, named and checked
    exactly as ``defocus deblur`` does (:func:`defocus_cli.batch.plan_batch`).

    Returns:
        The items in input order; missing inputs are ``"error"`` items, existing outputs with
        ``opts.existing == "skip"`` are ``"skipped"``.

    Raises:
        UsageError: no input; ``-`` (stdin/stdout) anywhere; any check of :func:`plan_batch`.
    """
    paths = [*inputs, *(read_listing(listing) if listing is not None else [])]
    if STDIO in paths or opts.output == STDIO:
        raise UsageError("the Ray runner reads and writes files only; for stdin/stdout (-) use defocus deblur")
    return plan_batch(paths, opts, stdin_is_tty=True, stdout_is_tty=True)


def _import_ray() -> Any:
    try:
        import ray
        import ray.data  # noqa: F401 - needs the [data] extra (pyarrow, pandas)
    except ImportError as e:
        raise UsageError(f"the Ray runner needs ray with Ray Data ({e}); install it: {RAY_HINT}") from None
    return ray


def check_engine(engine: EngineSettings) -> None:
    """Cheap checks on the driver, before any actor starts: option values, a known model name, a weights
    file with ``arch`` metadata.

    Raises:
        UsageError: bad option value or unknown model. WeightsError: unreadable weights file or no arch in it.
    """
    from defocus_cli import api, registry, runtime, weights
    from defocus_cli.devices import PRECISIONS

    api.parse_tile(engine.tile)
    api.check_strength(engine.strength)
    if engine.precision not in ("auto", *PRECISIONS):
        raise UsageError(f"precision must be auto or one of {', '.join(PRECISIONS)}, got {engine.precision!r}")
    runtime.parse_overlap(engine.overlap)
    if engine.weights_file is not None:
        weights.arch_of_file(engine.weights_file)
    elif engine.model is not None:
        registry.get_spec(engine.model)


def _no_stdio(*_: Any) -> Any:  # pragma: no cover - plan_inputs refuses '-'
    raise UsageError("the Ray runner reads and writes files only")


class DeblurWorker:
    """A Ray Data actor: loads the model once, then deblurs the rows it is given.

    ``__call__(batch)`` takes a batch of columns ``index`` (int), ``input``, ``output`` (absolute paths),
    ``fmt`` (output format, ``""`` = from the name) and returns, per row, ``index``, ``status`` (``"ok"``,
    ``"error"``, or ``"fatal"``), ``error`` (``""`` when none), ``seconds`` (NaN when no step ran), ``extra``
    (the item's JSON extras, e.g. notes) and ``engine`` (JSON: model, weights_sha256, device, precision, tile,
    overlap). ``"fatal"`` carries an engine-wide error (weights, device, usage: one that would fail every
    photo) as ``"ClassName: message"``; Ray would lose its type, so the driver raises it again
    (:func:`run_distributed`). A constructor that meets one keeps it and answers every row with it.
    """

    def __init__(self, engine: EngineSettings, opts: BatchOptions) -> None:
        self.opts = opts
        self.process: Any = None
        self.engine: dict[str, Any] = {}
        self.fatal: DefocusError | None = None
        try:
            self._load(engine)
        except (WeightsError, DeviceError, UsageError) as e:
            self.fatal = e

    def _load(self, engine: EngineSettings) -> None:
        from defocus_cli import api

        restorer = api.load_restorer(engine.model, weights=engine.weights_file, device=engine.device,
                                     precision=engine.precision, tile=engine.tile, overlap=engine.overlap)
        self.process = api.make_deblur_fn(restorer, tta=engine.tta, strength=engine.strength)
        o = restorer.options
        self.engine = {"model": o.name, "weights_sha256": o.weights_sha256, "device": str(o.device),
                       "precision": o.precision}
        log.info("worker %d: %s on %s (%s)", os.getpid(), o.name, o.device, o.precision)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out: dict[str, list[Any]] = {k: [] for k in ("index", "status", "error", "seconds", "extra", "engine")}
        for index, src, dst, fmt in zip(batch["index"], batch["input"], batch["output"], batch["fmt"]):
            item = Item(Path(str(src)), Path(str(dst)), str(fmt) or None)
            if self.fatal is None:
                try:
                    run_item(item, self.process, self.opts, read_stdin=_no_stdio, write_stdout=_no_stdio)
                except (WeightsError, DeviceError, UsageError) as e:
                    self.fatal = e
            if self.fatal is not None:
                item.status, item.error = "fatal", f"{type(self.fatal).__name__}: {self.fatal}"
            out["index"].append(int(index))
            out["status"].append(item.status)
            out["error"].append(item.error or "")
            out["seconds"].append(math.nan if item.seconds is None else float(item.seconds))
            out["extra"].append(json.dumps(item.extra))
            stats = self.process.last_stats if self.process is not None else None
            out["engine"].append(json.dumps({**self.engine, "tile": stats.tile if stats else None,
                                             "overlap": stats.overlap if stats else None}))
        return {"index": np.asarray(out["index"], dtype=np.int64), "seconds": np.asarray(out["seconds"], np.float64),
                **{k: np.asarray(out[k], dtype=object) for k in ("status", "error", "extra", "engine")}}


def _fatal_error(text: str) -> DefocusError:
    """A worker's ``"ClassName: message"`` (status ``"fatal"``) as the library error it was."""
    name, _, message = text.partition(": ")
    cls = {c.__name__: c for c in (WeightsError, DeviceError, UsageError)}.get(name, DefocusError)
    return cls(message)


def run_distributed(
    items: list[Item],
    opts: BatchOptions,
    engine: EngineSettings = EngineSettings(),
    *,
    workers: int | None = None,
    gpus_per_worker: float | None = None,
    cpus_per_worker: float = 1.0,
    on_item: Callable[[Item], None] | None = None,
) -> tuple[BatchResult, dict[str, Any]]:
    """Deblur the pending ``items`` of :func:`plan_inputs` on Ray (a local runtime is started when none is).

    Args:
        items: from :func:`plan_inputs` (with the same ``opts``); updated in place.
        opts: the options the plan was made with (format, quality, metadata, existing outputs).
        engine: the model and how to run it; checked on the driver first (:func:`check_engine`).
        workers: actors, each holding one loaded model; ``None`` = one per GPU (per ``gpus_per_worker``
            GPUs) when the cluster has GPUs, else 1. Never more than the pending items.
        gpus_per_worker: GPUs reserved per actor; ``None`` = 1 when the cluster has GPUs, else 0.
        cpus_per_worker: CPUs reserved per actor (Ray sets the actor's torch threads to it).
        on_item: called on the driver with each finished item, in completion order (after its log line).

    Returns:
        The :class:`~defocus_cli.batch.BatchResult` (items in input order) and the header of the ``--json``
        document: ``model``, ``weights_sha256``, ``device``, ``precision``, ``tile``, ``overlap`` (from the
        workers; several devices are joined with ``,``), ``workers``.

    Raises:
        UsageError: ray is not installed, bad options. WeightsError, DeviceError: what a worker met loading
            its model or on a photo that would fail every photo (the items finished before stay updated).
    """
    t0 = time.perf_counter()
    check_engine(engine)
    ray = _import_ray()
    if not ray.is_initialized():
        ray.init()
    todo = [(i, it) for i, it in enumerate(items) if it.status == "pending"]
    for it in items:  # planning errors and skipped outputs: the lines run_batch logs for them
        if it.status != "pending":
            log_item(it)
    header: dict[str, Any] = {"model": engine.model, "weights_sha256": None, "device": None, "precision": None,
                              "tile": engine.tile, "workers": 0}
    if not todo:
        return BatchResult(items, time.perf_counter() - t0), header
    cluster_gpus = float(ray.cluster_resources().get("GPU", 0.0))
    gpus = (1.0 if cluster_gpus > 0 else 0.0) if gpus_per_worker is None else float(gpus_per_worker)
    if workers is None:
        workers = max(1, int(cluster_gpus // gpus)) if gpus > 0 else 1
    if workers < 1:
        raise UsageError(f"workers must be >= 1, got {workers}")
    workers = min(workers, len(todo))
    header["workers"] = workers
    rows = [{"index": i, "input": os.path.abspath(str(it.input)), "output": os.path.abspath(str(it.output)),
             "fmt": it.fmt or ""} for i, it in todo]
    resources: dict[str, Any] = {"num_cpus": cpus_per_worker}
    if gpus > 0:
        resources["num_gpus"] = gpus
    ds = ray.data.from_items(rows, override_num_blocks=min(len(rows), MAX_BLOCKS)).map_batches(
        DeblurWorker, fn_constructor_kwargs={"engine": engine, "opts": opts}, batch_size=1,
        compute=ray.data.ActorPoolStrategy(size=workers), **resources)
    devices_seen: list[str] = []
    for row in ds.iter_rows():
        if row["status"] == "fatal":  # the items finished before it keep their records
            raise _fatal_error(str(row["error"]))
        it = items[int(row["index"])]
        it.status, it.error = str(row["status"]), (str(row["error"]) or None)
        seconds = float(row["seconds"])
        it.seconds = None if math.isnan(seconds) else seconds
        it.extra.update(json.loads(row["extra"]))
        eng = json.loads(row["engine"])
        if eng["device"] not in devices_seen:
            devices_seen.append(eng["device"])
        header.update({k: eng[k] for k in ("model", "weights_sha256", "precision")})
        header.update({k: eng[k] for k in ("tile", "overlap") if eng.get(k) is not None})
        header["device"] = ",".join(devices_seen)
        log_item(it)
        if on_item is not None:
            on_item(it)
    return BatchResult(items, time.perf_counter() - t0), header
