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
IMAGE_KINDS = ("auto", "cells", "fields")  # per image: decide, all single cells, all fields
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
    box: tuple[int, int, int, int] | None = None
    cell_index: int | None = None
    mask_bits: bytes | None = None
    note: str = ""


@dataclass
class _Batch:
    entries: list[_Decoded | FileError]
    images: np.ndarray  # (n_good, S, S, 3) float32
    items: int = 0  # input files completed by this batch (a field gives several entries)


class _Failure:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


_DONE = object()


@dataclass
class _Cell:
    pixels: np.ndarray
    box: tuple[int, int, int, int] | None = None
    cell_index: int | None = None
    mask_bits: bytes | None = None
    note: str = ""


def _decode_one(
    item: InputFile, size: int, max_pixels: int, image_kind: str, detector: Any
) -> tuple[list[_Cell], int, int]:
    """The model inputs of one file: itself if it is a single-cell crop, else one C-NMC-like
    crop per white cell found in the smear field (ImageError when there is none)."""
    rgb = decode_image(item.path, max_pixels=max_pixels)
    height, width = rgb.shape[:2]
    from leukgui.core import fields

    if image_kind == "cells" or (image_kind == "auto" and fields.looks_like_single_cell(rgb)):
        return [_Cell(to_model_input(rgb, size))], width, height
    found = fields.detect_cells(rgb, detector)
    if not found.cells:
        hints = [n for n in found.notes if fields.NOTE_NO_CELL not in n]
        notes = f" ({'; '.join(hints)})" if hints else ""
        raise ImageError(f"no white cell found in this field{notes}")
    note = "; ".join(n for n in found.notes if "no white cell" not in n)
    ordered = sorted(found.cells, key=lambda c: (c.box[1] + c.box[3], c.box[0] + c.box[2]))
    cells = []
    for index, cell in enumerate(ordered, 1):
        crop = fields.crop_cell(rgb, cell)
        cells.append(
            _Cell(
                to_model_input(crop, size),
                tuple(int(v) for v in cell.box),
                index,
                np.packbits(cell.mask).tobytes(),
                "; ".join(
                    n for n in (note, "cut by the image border" if cell.touches_border else "") if n
                ),
            )
        )
    return cells, width, height


def _producer(
    items: Sequence[InputFile],
    size: int,
    batch_size: int,
    max_pixels: int,
    out: queue.Queue,
    stop: threading.Event,
    image_kind: str = "auto",
    detector: Any = None,
) -> None:
    """Decode files into batches; a file that fails becomes a FileError entry in place."""
    try:
        entries: list[_Decoded | FileError] = []
        rows: list[np.ndarray] = []
        done_items = 0
        for item in items:
            if stop.is_set():
                return
            done_items += 1
            try:
                cells, width, height = _decode_one(item, size, max_pixels, image_kind, detector)
            except ImageError as exc:
                entries.append(FileError(item.path, item.sample, str(exc)))
            except MemoryError:
                entries.append(FileError(item.path, item.sample, "too large for memory"))
            except Exception as exc:  # one strange file must not end the run
                entries.append(FileError(item.path, item.sample, f"unexpected error: {exc}"))
            else:
                truth = truth_for(item.path)
                for cell in cells:
                    entries.append(
                        _Decoded(
                            item,
                            width,
                            height,
                            truth.label,
                            truth.subject,
                            len(rows),
                            cell.box,
                            cell.cell_index,
                            cell.mask_bits,
                            cell.note,
                        )
                    )
                    rows.append(cell.pixels)
            # A full batch goes to the network; a run of unreadable files is passed on too,
            # so progress and cancel keep working through a folder of broken files. A field's
            # cells always travel together (a batch may run a little over its size).
            if len(rows) >= batch_size or len(entries) - len(rows) >= ERRORS_PER_FLUSH:
                _put(out, _batch(entries, rows, size, done_items), stop)
                entries, rows, done_items = [], [], 0
        if entries:
            _put(out, _batch(entries, rows, size, done_items), stop)
    except BaseException as exc:  # surfaced in the consumer, never lost in a thread
        _put(out, _Failure(exc), stop)
    finally:
        _put(out, _DONE, stop)


def _batch(
    entries: list[_Decoded | FileError], rows: list[np.ndarray], size: int, items: int
) -> _Batch:
    images = np.stack(rows) if rows else np.zeros((0, size, size, 3), np.float32)
    return _Batch(entries, images, items)


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
        image_kind: str = "auto",
        detector: Any = None,
    ) -> Iterator[Outcome]:
        """Yield, in input order, a CellResult or FileError per single-cell image and one
        CellResult per white cell found in a smear field (or a FileError when none is).

        `image_kind` is "auto" (decided per image), "cells" or "fields"; `detector` holds
        `leukgui.core.fields.DetectorSettings` (None: defaults). Progress counts files.
        Stops between batches when `cancel` is set; everything yielded so far stands.
        """
        if image_kind not in IMAGE_KINDS:
            raise ValueError(f"image_kind must be one of {', '.join(IMAGE_KINDS)}")
        total = len(items)
        started = time.perf_counter()
        done = 0
        stop = threading.Event()
        out: queue.Queue = queue.Queue(maxsize=QUEUE_BATCHES)
        worker = threading.Thread(
            target=_producer,
            args=(items, self.input_size, batch_size, max_pixels, out, stop, image_kind, detector),
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
                done += batch.items
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
                    box=entry.box,
                    cell_index=entry.cell_index,
                    mask_bits=entry.mask_bits,
                    note=entry.note,
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


def field_provenance(image_kind: str, detector: Any) -> dict[str, str]:
    """How smear fields were handled, for the report's provenance."""
    import json

    from leukgui.core.fields import DetectorSettings

    settings = detector if detector is not None else DetectorSettings()
    return {
        "Image kind": {
            "auto": "decided per image (single-cell crop on black, or smear field)",
            "cells": "every image is a single-cell crop",
            "fields": "every image is a smear field",
        }[image_kind],
        "White-cell detector settings": json.dumps(settings.to_dict(), sort_keys=True),
    }


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
        uncertainty_band=bundle.uncertainty_band,
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
    image_kind: str = "auto",
    detector: Any = None,
    analyzer: Analyzer | None = None,
    discovered: tuple[list[InputFile], list[FileError]] | None = None,
) -> RunResult:
    """Discover, classify and collect: the one call the CLI and the GUI worker make.

    Errors found while walking folders come first, then every discovered file in order.
    `discovered` passes on the result of an earlier `discover(paths)` so folders are walked
    once.
    """
    info = run_info_for(bundle, paths)
    info.extra.update(field_provenance(image_kind, detector))
    items, walk_errors = discovered if discovered is not None else discover(paths)
    info.total_inputs = len(items) + len(walk_errors)
    outcomes: list[Any] = list(walk_errors)
    analyzer = analyzer or Analyzer(bundle)
    outcomes.extend(
        analyzer.iter_outcomes(
            items,
            batch_size=batch_size,
            progress=progress,
            cancel=cancel,
            max_pixels=max_pixels,
            image_kind=image_kind,
            detector=detector,
        )
    )
    info.cancelled = bool(cancel and cancel.cancelled and len(outcomes) < info.total_inputs)
    info.finished = datetime.now().astimezone()
    return RunResult(info=info, outcomes=outcomes)
