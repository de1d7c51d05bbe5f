"""The analysis engine: image files in, one result or one error per file out, in order.

Decoding runs in a background thread that fills a bounded queue of ready-made batches while
the network works on the previous one, so memory stays flat however big the folder is and
the CPU never waits on disk. Every batch goes through one compiled call that returns P(ALL)
and the Grad-CAM heatmaps together. Progress is reported after each batch and the cancel
token is honoured between batches; whatever finished before a cancel is kept.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from leukgui import __version__
from leukgui.core.bundle import LoadedBundle
from leukgui.core.imaging import (
    DEFAULT_MAX_PIXELS,
    ImageError,
    decode_image,
    discover,
    to_model_input,
)
from leukgui.core.results import (
    CancelToken,
    CellResult,
    FileError,
    InputFile,
    Outcome,
    Progress,
    ProgressCallback,
    RunInfo,
    RunResult,
)
from leukgui.core.truth import truth_for

DEFAULT_BATCH_SIZE = 32
QUEUE_BATCHES = 3  # decoded batches waiting for the network: bounds memory
ERRORS_PER_FLUSH = 64  # unreadable files after which a partial batch is passed on


@dataclass
class _Decoded:
    item: InputFile
    width: int
    height: int
    truth: str | None
    subject: str | None
    row: int  # row in the batch array


@dataclass
class _Batch:
    entries: list[_Decoded | FileError]
    images: np.ndarray  # (n_good, S, S, 3) float32


class _Failure:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


_DONE = object()


def _decode_one(item: InputFile, size: int, max_pixels: int) -> tuple[np.ndarray, int, int]:
    rgb = decode_image(item.path, max_pixels=max_pixels)
    height, width = rgb.shape[:2]
    return to_model_input(rgb, size), width, height


def _producer(
    items: Sequence[InputFile],
    size: int,
    batch_size: int,
    max_pixels: int,
    out: queue.Queue,
    stop: threading.Event,
) -> None:
    """Decode files into batches; a file that fails becomes a FileError entry in place."""
    try:
        entries: list[_Decoded | FileError] = []
        rows: list[np.ndarray] = []
        for item in items:
            if stop.is_set():
                return
            try:
                pixels, width, height = _decode_one(item, size, max_pixels)
            except ImageError as exc:
                entries.append(FileError(item.path, item.sample, str(exc)))
            except MemoryError:
                entries.append(FileError(item.path, item.sample, "too large for memory"))
            except Exception as exc:  # one strange file must not end the run
                entries.append(FileError(item.path, item.sample, f"unexpected error: {exc}"))
            else:
                truth = truth_for(item.path)
                entries.append(_Decoded(item, width, height, truth.label, truth.subject, len(rows)))
                rows.append(pixels)
            # A full batch goes to the network; a run of unreadable files is passed on too,
            # so progress and cancel keep working through a folder of broken files.
            if len(rows) == batch_size or len(entries) - len(rows) >= ERRORS_PER_FLUSH:
                _put(out, _batch(entries, rows, size), stop)
                entries, rows = [], []
        if entries:
            _put(out, _batch(entries, rows, size), stop)
    except BaseException as exc:  # surfaced in the consumer, never lost in a thread
        _put(out, _Failure(exc), stop)
    finally:
        _put(out, _DONE, stop)


def _batch(entries: list[_Decoded | FileError], rows: list[np.ndarray], size: int) -> _Batch:
    images = np.stack(rows) if rows else np.zeros((0, size, size, 3), np.float32)
    return _Batch(entries, images)


def _put(out: queue.Queue, value: object, stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            out.put(value, timeout=0.1)
            return
        except queue.Full:
            continue


class Analyzer:
    """A loaded bundle ready to classify batches (the compiled call is built once)."""

    def __init__(self, bundle: LoadedBundle) -> None:
        from leukgui.core.gradcam import BatchedGradCAM

        self.bundle = bundle
        self.gradcam = BatchedGradCAM(bundle.model)
        self.input_size = self.gradcam.input_size

    def iter_outcomes(
        self,
        items: Sequence[InputFile],
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        progress: ProgressCallback | None = None,
        cancel: CancelToken | None = None,
        max_pixels: int = DEFAULT_MAX_PIXELS,
    ) -> Iterator[Outcome]:
        """Yield one CellResult or FileError per item, in input order.

        Stops between batches when `cancel` is set; everything yielded so far stands.
        """
        total = len(items)
        started = time.perf_counter()
        done = 0
        stop = threading.Event()
        out: queue.Queue = queue.Queue(maxsize=QUEUE_BATCHES)
        worker = threading.Thread(
            target=_producer,
            args=(items, self.input_size, batch_size, max_pixels, out, stop),
            name="leukgui-decoder",
            daemon=True,
        )
        worker.start()
        try:
            while True:
                if cancel is not None and cancel.cancelled:
                    break
                batch = out.get()
                if batch is _DONE:
                    break
                if isinstance(batch, _Failure):
                    raise batch.exc
                outcomes = self._classify(batch)
                yield from outcomes
                done += len(outcomes)
                if progress is not None:
                    elapsed = max(time.perf_counter() - started, 1e-9)
                    rate = done / elapsed
                    eta = (total - done) / rate if rate > 0 else None
                    progress(Progress(done=done, total=total, rate=rate, eta_s=eta))
        finally:
            stop.set()
            worker.join(timeout=5)

    def _classify(self, batch: _Batch) -> list[Outcome]:
        if len(batch.images):
            p_all, cams, ok = self.gradcam(batch.images)
            cams = self.gradcam.align(cams)
        outcomes: list[Outcome] = []
        for entry in batch.entries:
            if isinstance(entry, FileError):
                outcomes.append(entry)
                continue
            row = entry.row
            item = entry.item
            if not ok[row]:
                outcomes.append(
                    FileError(
                        item.path,
                        item.sample,
                        "heatmap could not be computed (the network returned non-finite values)",
                    )
                )
                continue
            p = float(p_all[row])
            outcomes.append(
                CellResult(
                    path=item.path,
                    sample=item.sample,
                    p_all=p,
                    label=self.bundle.label(p),
                    heatmap=cams[row].astype(np.float32, copy=True),
                    width=entry.width,
                    height=entry.height,
                    truth=entry.truth,
                    subject=entry.subject,
                )
            )
        return outcomes


def device_description() -> str:
    """Which device TensorFlow computes on, for the report's provenance."""
    import os

    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        names = []
        for gpu in gpus:
            details = tf.config.experimental.get_device_details(gpu)
            names.append(details.get("device_name", gpu.name))
        return "GPU: " + ", ".join(names)
    return f"CPU ({os.cpu_count()} logical cores)"


def run_info_for(bundle: LoadedBundle, inputs: Sequence[str | Path]) -> RunInfo:
    import keras
    import tensorflow as tf

    return RunInfo(
        app_version=__version__,
        model_name=bundle.name,
        model_version=bundle.version,
        model_sha256=bundle.sha256,
        backbone=bundle.backbone,
        input_size=int(bundle.manifest["input_size"]),
        threshold=bundle.threshold,
        uncertainty_band=bundle.band,
        demo=bundle.demo,
        inputs=[str(p) for p in inputs],
        started=datetime.now().astimezone(),
        device=device_description(),
        tensorflow_version=tf.__version__,
        keras_version=keras.__version__,
        extra={"Model file": str(bundle.path)},
    )


def analyze_paths(
    paths: Sequence[str | Path],
    bundle: LoadedBundle,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    analyzer: Analyzer | None = None,
    discovered: tuple[list[InputFile], list[FileError]] | None = None,
) -> RunResult:
    """Discover, classify and collect: the one call the CLI and the GUI worker make.

    Errors found while walking folders come first, then every discovered file in order.
    `discovered` passes on the result of an earlier `discover(paths)` so folders are walked
    once.
    """
    info = run_info_for(bundle, paths)
    items, walk_errors = discovered if discovered is not None else discover(paths)
    info.total_inputs = len(items) + len(walk_errors)
    outcomes: list[Any] = list(walk_errors)
    analyzer = analyzer or Analyzer(bundle)
    outcomes.extend(
        analyzer.iter_outcomes(
            items, batch_size=batch_size, progress=progress, cancel=cancel, max_pixels=max_pixels
        )
    )
    info.cancelled = bool(cancel and cancel.cancelled and len(outcomes) < info.total_inputs)
    info.finished = datetime.now().astimezone()
    return RunResult(info=info, outcomes=outcomes)
