"""The analysis engine: image files in, one result or one error per file out, in order.

`iter_run` is the one way to analyze: the CLI, the window's worker, `leukgui evaluate` and
the tests all consume its events (`RunStarted`, then `Outcomes` and `Progress` per batch,
then `RunFinished`), so a run's bookkeeping (provenance, totals, cancel, finish time) exists
once. Decoding runs in a background thread that fills a bounded queue of ready-made batches
while the network works on the previous one, so memory stays flat however big the folder is
and the CPU never waits on disk. Every batch goes through one compiled call that returns
P(ALL) and the Grad-CAM heatmaps together. The cancel token is honoured between batches;
whatever finished before a cancel is kept.

What a bundle's manifest asks for is applied here, so every caller gets it: its stain
normalisation (`leukgui.core.stain`) on every cell image, single-cell file or smear-field
crop, before the network; its calibration temperature on every P(ALL) before the threshold
and the band. Heatmaps are computed on the network's input (the normalised pixels) and are
drawn by the GUI and the reports over the original file's pixels, which have the same
geometry: the normalisation changes colours only.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import queue
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from leukgui import __version__
from leukgui.core import fields
from leukgui.core.bundle import CALIBRATION_KEY, LoadedBundle
from leukgui.core.field_scale import DEFAULT_UM_PER_PX, check_um_per_px
from leukgui.core.fields import DetectorSettings
from leukgui.core.imaging import (
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_PIXELS,
    DecodedImage,
    ImageError,
    discover,
    read_image,
    thumbnail,
    to_model_input,
)
from leukgui.core.parallel import DEFAULT_THREADS, ordered_map
from leukgui.core.results import (
    MODEL_FAILURE,
    NO_WHITE_CELL,
    TOO_LARGE,
    UNEXPECTED,
    UNREADABLE,
    CancelToken,
    CellResult,
    FileError,
    FileStamp,
    InputFile,
    Outcome,
    Progress,
    ProgressCallback,
    RunInfo,
    RunResult,
)
from leukgui.core.runtimes import (
    AUTO,
    ENGINE_LABELS,
    TENSORFLOW,
    Engine,
    select,
    tensorflow_device,
)
from leukgui.core.stain import ReinhardStats, apply_reinhard
from leukgui.core.truth import truth_for
from leukgui.core.tta import TTA_DESCRIPTION, VIEWS, dihedral_view

__all__ = [
    "CALIBRATION_ROW",
    "DEFAULT_BATCH_SIZE",
    "UM_PER_PX_ROW",
    "IMAGE_KINDS",
    "AnalysisOptions",
    "Analyzer",
    "Outcomes",
    "RunEvent",
    "RunFinished",
    "RunStarted",
    "STAIN_ROW",
    "TTA_ROW",
    "analyze_paths",
    "device_description",
    "iter_run",
    "model_input",
    "model_provenance",
    "parse_um_per_px",
    "um_per_px_text",
]

DEFAULT_BATCH_SIZE = 32
IMAGE_KINDS = ("auto", "cells", "fields")  # per image: decide, all single cells, all fields
NEAR_BOUNDARY = 0.05  # bf16 cells this close to a decision boundary are recomputed in fp32
QUEUE_BATCHES = 3  # decoded batches waiting for the network: bounds memory
ERRORS_PER_FLUSH = 64  # unreadable files after which a partial batch is passed on
# Provenance rows (RunInfo.extra) that describe how the model's scores were made; the report
# shows them with the model.
CALIBRATION_ROW = "Calibration"
STAIN_ROW = "Stain normalisation"
TTA_ROW = "Test-time augmentation"
UM_PER_PX_ROW = "µm per pixel"  # the scale setting of smear fields, as the report names it
AUTOMATIC = "auto"  # --um-per-px auto: measured on every field


def parse_um_per_px(text: str | float | None) -> float | None:
    """The "µm per pixel" setting from what a person typed: "auto", "automatic" or empty
    for None (measured on every field), else a number in the range a light microscope can
    give (`field_scale.check_um_per_px`); ValueError with that check's message otherwise.
    The CLI and the window both read the setting through here, so they accept the same."""
    if text is None:
        return None
    if isinstance(text, str):
        word = text.strip().lower()
        if word in ("", AUTOMATIC, "automatic"):
            return None
        try:
            value: object = float(word.replace(",", "."))
        except ValueError:
            value = text
        return check_um_per_px(value)
    return check_um_per_px(text)


def um_per_px_text(settings: DetectorSettings) -> str:
    """The scale setting in the words of the report's provenance: the fixed value, or how
    each field's scale is measured when none was set."""
    fixed = settings.fixed_um_per_px
    if fixed is None:
        return (
            "automatic: measured on every field (red cells, else white-cell nucleus size, "
            f"else {DEFAULT_UM_PER_PX} µm per pixel assumed); see each field's scale source"
        )
    how = "set" if settings.um_per_px is not None else "set (from the old pixel_scale setting)"
    return f"{fixed:.4g} µm per pixel, {how}"


@dataclass(frozen=True)
class AnalysisOptions:
    """How a run treats its inputs: the one value the CLI, the window and the engine share,
    instead of each threading batch size, image kind, detector and pixel limit separately.

    `image_kind` is "auto" (decided per image), "cells" (every image is a single-cell crop)
    or "fields" (every image is a smear field). `detector` may be given as DetectorSettings,
    as a mapping of overrides (what the preferences store) or None (defaults); it is always
    DetectorSettings afterwards, so a bad setting fails here, before any file is read.

    `tta` averages P(ALL) over the 8 flips and quarter turns of each cell (`leukgui.core.tta`)
    at about 8 times the network's cost; the heatmap stays that of the image as it is.

    `decode_threads` files are decoded (and their fields searched for white cells) at once
    (`leukgui.core.parallel`); results keep the input order whatever the number.
    """

    batch_size: int = DEFAULT_BATCH_SIZE
    image_kind: str = "auto"
    detector: DetectorSettings | Mapping[str, Any] | None = None
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_bytes: int = DEFAULT_MAX_BYTES
    tta: bool = False
    decode_threads: int = DEFAULT_THREADS  # files decoded (and fields searched) at once

    def __post_init__(self) -> None:
        if not isinstance(self.tta, bool):
            raise ValueError(f"tta must be true or false, not {self.tta!r}")
        if self.image_kind not in IMAGE_KINDS:
            raise ValueError(
                f"image kind must be one of {', '.join(IMAGE_KINDS)}, not {self.image_kind!r}"
            )
        for name in ("batch_size", "max_pixels", "max_bytes", "decode_threads"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a whole number of at least 1, not {value!r}")
        object.__setattr__(self, "detector", _detector_settings(self.detector))


def _detector_settings(value: DetectorSettings | Mapping[str, Any] | None) -> DetectorSettings:
    """DetectorSettings from what callers hold. A mapping is what the preferences store:
    new keys (`um_per_px`, the µm sizes) and the deprecated px keys of older versions
    (`pixel_scale`, `smooth`, ...) are DetectorSettings fields alike, so old preferences
    still load; an unknown key or a bad value (e.g. um_per_px = 0) raises ValueError."""
    if value is None:
        return DetectorSettings()
    if isinstance(value, DetectorSettings):
        return value
    if isinstance(value, Mapping):
        known = {f.name for f in dataclasses.fields(DetectorSettings)}
        unknown = sorted(str(k) for k in value if k not in known)
        if unknown:
            raise ValueError(f"unknown white-cell detector setting(s): {', '.join(unknown)}")
        try:
            return DetectorSettings(**value)
        except TypeError as exc:  # e.g. a value of a type no setting takes
            raise ValueError(f"white-cell detector settings: {exc}") from exc
    raise TypeError(f"detector must be DetectorSettings, a mapping or None, not {value!r}")


@dataclass(frozen=True)
class RunStarted:
    """Sent once, after the inputs were walked: provenance and what is to come.

    `run` holds the filled-in RunInfo and, as its outcomes, the errors found while walking
    (they come first in every run); it is the receiver's own copy to extend with `Outcomes`.
    `total` counts the files to classify (walk errors not included).
    """

    run: RunResult
    total: int


@dataclass(frozen=True)
class Outcomes:
    """The outcomes of one batch (or a chunk of batches), in input order."""

    items: list[Outcome]


@dataclass(frozen=True)
class RunFinished:
    """Sent last: the whole run (finish time set; `info.cancelled` when it stopped early)."""

    run: RunResult


RunEvent = RunStarted | Outcomes | Progress | RunFinished


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
    stamp: FileStamp | None = None
    measures: dict[str, Any] = dataclasses.field(default_factory=dict)


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
    measures: dict[str, Any] = dataclasses.field(default_factory=dict)


def _field_measures(cell: fields.DetectedCell, found: fields.FieldDetection) -> dict[str, Any]:
    """The `CellResult` fields that describe a field cell's size and its field's scale, so
    reports can give them as numbers (CellResult.area_px, touches_border, um_per_px, ...)."""
    scale = found.scale
    return {
        "area_px": int(cell.area),
        "touches_border": bool(cell.touches_border),
        "um_per_px": None if scale is None else float(scale.um_per_px),
        "scale_source": "" if scale is None else scale.description,
        "scale_plausible": None if scale is None else bool(scale.plausible),
    }


def _decode_stamped(
    item: InputFile, options: AnalysisOptions
) -> tuple[DecodedImage, FileStamp | None]:
    """The image and the stamp (size, time, SHA-256) of the very bytes it was decoded from
    (read once: `read_image` hashes what it read). A file whose size or time changed while it
    was read is read again, so a report's hash is always that of the analyzed pixels."""
    for _ in range(3):
        decoded = read_image(item.path, max_pixels=options.max_pixels, max_bytes=options.max_bytes)
        if decoded.stamp is None or decoded.stamp.same_file_info(item.path):
            return decoded, decoded.stamp
    raise ImageError("the file kept changing while it was being read", UNREADABLE)


def model_input(rgb: np.ndarray, size: int, stain: ReinhardStats | None = None) -> np.ndarray:
    """The network's input for one cell image: the padded square (`to_model_input`), stain-
    normalised on the square when the bundle asks for it (as `training.pipeline` does)."""
    if stain is None:
        return to_model_input(rgb, size)
    return apply_reinhard(thumbnail(rgb, size), stain).astype(np.float32)


def _decode_one(
    item: InputFile, size: int, options: AnalysisOptions, stain: ReinhardStats | None = None
) -> tuple[list[_Cell], int, int, FileStamp | None]:
    """The model inputs of one file: itself if it is a single-cell crop, else one C-NMC-like
    crop per white cell found in the smear field (ImageError when there is none), with the
    file's stamp. `stain` normalises every one of them."""
    decoded, stamp = _decode_stamped(item, options)
    rgb, file_note = decoded.rgb, "; ".join(decoded.notes)  # e.g. turned upright by EXIF
    height, width = rgb.shape[:2]
    kind = options.image_kind
    if kind == "cells" or (kind == "auto" and fields.looks_like_single_cell(rgb)):
        return [_Cell(model_input(rgb, size, stain), note=file_note)], width, height, stamp
    found = fields.detect_cells(rgb, options.detector)
    if not found.cells:
        hints = [n for n in found.notes if fields.NOTE_NO_CELL not in n]
        notes = f" ({'; '.join(hints)})" if hints else ""
        raise ImageError(f"no white cell found in this field{notes}", NO_WHITE_CELL)
    note = "; ".join(n for n in (file_note, *found.notes) if n and fields.NOTE_NO_CELL not in n)
    ordered = sorted(found.cells, key=lambda c: (c.box[1] + c.box[3], c.box[0] + c.box[2]))
    cells = []
    for index, cell in enumerate(ordered, 1):
        crop = fields.crop_cell(rgb, cell)
        cells.append(
            _Cell(
                model_input(crop, size, stain),
                tuple(int(v) for v in cell.box),
                index,
                np.packbits(cell.mask).tobytes(),
                "; ".join(
                    n for n in (note, "cut by the image border" if cell.touches_border else "") if n
                ),
                _field_measures(cell, found),
            )
        )
    return cells, width, height, stamp


def _file_error(item: InputFile, exc: BaseException) -> FileError:
    """The error row of a file that could not be decoded; the kind comes from the exception."""
    if isinstance(exc, ImageError):
        return FileError(item.path, item.sample, str(exc), exc.kind)
    if isinstance(exc, MemoryError):
        return FileError(item.path, item.sample, "too large for memory", TOO_LARGE)
    return FileError(item.path, item.sample, f"unexpected error: {exc}", UNEXPECTED)


def _producer(
    items: Sequence[InputFile],
    size: int,
    options: AnalysisOptions,
    out: queue.Queue,
    stop: threading.Event,
    stain: ReinhardStats | None = None,
) -> None:
    """Decode files into batches; a file that fails becomes a FileError entry in place."""
    try:
        entries: list[_Decoded | FileError] = []
        rows: list[np.ndarray] = []
        done_items = 0
        decoding = ordered_map(
            lambda it: _decode_one(it, size, options, stain),
            items,
            options.decode_threads,
            stop=stop,
        )
        with contextlib.closing(decoding) as decoded:  # stops the pool on any exit
            for item, result, error in decoded:
                if stop.is_set():
                    return
                done_items += 1
                if error is not None:  # one strange file must not end the run
                    entries.append(_file_error(item, error))
                else:
                    cells, width, height, stamp = result
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
                                stamp,
                                cell.measures,
                            )
                        )
                        rows.append(cell.pixels)
                # A full batch goes to the network; a run of unreadable files is passed on too,
                # so progress and cancel keep working through a folder of broken files. A field's
                # cells always travel together (a batch may run a little over its size).
                if len(rows) >= options.batch_size or len(entries) - len(rows) >= ERRORS_PER_FLUSH:
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
    """A loaded bundle on a checked runtime, ready to classify batches.

    `runtime` is "tensorflow" (the reference, and the default for callers that already
    hold the Keras model), "openvino", "onnx" or "auto" (`runtimes.candidates`); a runtime
    that cannot start or fails its probe gives way to the next, and `runtime_notes` says
    why. A GPU that fails during a run gives way to the CPU for the rest of it.
    """

    def __init__(
        self, bundle: LoadedBundle, runtime: str = TENSORFLOW, *, precision: str = AUTO
    ) -> None:
        self.bundle = bundle
        self.precision = precision
        self.requested = runtime if precision == AUTO else f"{runtime}, precision {precision}"
        selection = select(
            bundle.backbone,
            bundle.inference_graph,
            bundle.keras_model,
            runtime,
            precision=precision,
        )
        self.runtime: Engine = selection.engine
        self.runtime_notes: list[str] = list(selection.notes)
        self.graph_origin = selection.graph_origin
        self.input_size = self.runtime.input_size
        self.stain: ReinhardStats | None = bundle.stain
        self.rechecked = 0  # cells recomputed in fp32 because they lay near a boundary

    def _run_on(self, engine: Engine, call: str, images: np.ndarray) -> Any:
        """Call an engine; when the GPU in use fails mid-run, move to the CPU for good and
        retry (a CPU engine's failure is raised as before)."""
        try:
            return getattr(engine, call)(images)
        except Exception as exc:
            if not (engine is self.runtime and engine.gpu):
                raise
            failed = self.runtime.description
            selection = select(
                self.bundle.backbone,
                self.bundle.inference_graph,
                self.bundle.keras_model,
                AUTO,
                precision=self.precision,
                exclude_gpu=True,
            )
            self.runtime = selection.engine
            self.runtime_notes.append(
                f"{failed} failed during the run ({' '.join(str(exc).split())[:200]}); the "
                f"remaining cells were analysed on {self.runtime.description}"
            )
            return getattr(self.runtime, call)(images)

    def _batches(
        self,
        items: Sequence[InputFile],
        options: AnalysisOptions,
        cancel: CancelToken | None,
    ) -> Iterator[tuple[list[Outcome], int]]:
        """(outcomes in input order, input files they complete) per batch, until the items
        run out or `cancel` is set; the decoder thread stops when this generator is closed."""
        stop = threading.Event()
        out: queue.Queue = queue.Queue(maxsize=QUEUE_BATCHES)
        worker = threading.Thread(
            target=_producer,
            args=(items, self.input_size, options, out, stop, self.stain),
            name="leukgui-decoder",
            daemon=True,
        )
        worker.start()
        try:
            while cancel is None or not cancel.cancelled:
                batch = out.get()
                if batch is _DONE:
                    break
                if isinstance(batch, _Failure):
                    raise batch.exc
                yield self._classify(batch, tta=options.tta), batch.items
        finally:
            stop.set()
            worker.join(timeout=5)

    def _near_boundary(self, p_all: np.ndarray) -> np.ndarray:
        """Cells whose P(ALL) lies within NEAR_BOUNDARY of the threshold or a band edge."""
        low, high = self.bundle.uncertainty_band
        edges = np.array([self.bundle.threshold, low, high], np.float64)
        distance = np.abs(np.asarray(p_all, np.float64)[:, None] - edges[None, :]).min(axis=1)
        return distance < NEAR_BOUNDARY

    def scores(self, images: np.ndarray, *, tta: bool = False) -> tuple[Any, Any, Any]:
        """Calibrated P(ALL), aligned heatmaps and `ok` flags of a float32 batch.

        On a reduced-precision runtime (OpenVINO's bf16) the cells whose P(ALL) falls near
        the threshold or an edge of the uncertainty band are computed again in fp32, so a
        call never depends on the precision: bf16 moves P(ALL) by up to about 0.02.
        """
        p_all, cams, ok = self._scores_on(self.runtime, images, tta)
        if not self.runtime.reduced_precision:
            return p_all, cams, ok
        rows = np.flatnonzero(self._near_boundary(p_all) & ok)
        exact = self.runtime.exact() if len(rows) else None
        if exact is not None:
            p_exact, cams_exact, ok_exact = self._scores_on(exact, images[rows], tta)
            p_all = np.array(p_all, np.float64, copy=True)
            p_all[rows] = p_exact
            cams[rows] = cams_exact
            ok[rows] = ok_exact
            self.rechecked += len(rows)
        return p_all, cams, ok

    def _scores_on(self, engine: Engine, images: np.ndarray, tta: bool) -> tuple[Any, Any, Any]:
        """One engine's calibrated P(ALL), aligned heatmaps and `ok` flags of a batch.

        The heatmap is always that of the image as given (view 0, the batched Grad-CAM
        call). With `tta` the 7 other flips/quarter turns run forward-only, one compiled
        call per view, and P(ALL) is the mean over the 8 views of each view's calibrated
        score: the temperature was fitted on single-view scores, so it is applied to single
        views, and the mean of calibrated scores then meets the threshold and the band.
        """
        p_raw, cams, ok = self._run_on(engine, "__call__", images)
        cams = engine.align(cams)
        if not tta:
            return np.atleast_1d(self.bundle.calibrate(p_raw)), cams, ok
        total = np.asarray(self.bundle.calibrate(p_raw), np.float64).reshape(-1)
        for k in range(1, VIEWS):
            p_view = self._run_on(engine, "forward", dihedral_view(images, k))
            ok = ok & np.isfinite(p_view)
            total = total + np.asarray(self.bundle.calibrate(p_view), np.float64).reshape(-1)
        return total / VIEWS, cams, ok

    def _classify(self, batch: _Batch, *, tta: bool = False) -> list[Outcome]:
        if len(batch.images):
            p_all, cams, ok = self.scores(batch.images, tta=tta)
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
                        MODEL_FAILURE,
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
                    stamp=entry.stamp,
                    **entry.measures,
                )
            )
        return outcomes


def device_description() -> str:
    """Which device TensorFlow computes on (training's report; analysis names its runtime)."""
    return tensorflow_device()[0]


_IMAGE_KIND_TEXT = {
    "auto": "decided per image (single-cell crop on black, or smear field)",
    "cells": "every image is a single-cell crop",
    "fields": "every image is a smear field",
}


RUNTIME_ASKED_ROW = "Runtime asked for"
RUNTIME_VERSION_ROW = "Runtime version"
PRECISION_CHECK_ROW = "Reduced-precision check"
RUNTIME_NOTES_ROW = "Runtime notes"
# Shown right after the Device row of a report's provenance.
RUNTIME_ROWS = (RUNTIME_ASKED_ROW, RUNTIME_VERSION_ROW, PRECISION_CHECK_ROW, RUNTIME_NOTES_ROW)
NOT_LOADED = "not loaded (analysis ran without TensorFlow)"


def _library_version(module: str) -> str:
    """A library's version if this process imported it, else NOT_LOADED (never imports)."""
    loaded = sys.modules.get(module)
    if loaded is None:
        return NOT_LOADED
    return str(getattr(loaded, "__version__", "")).split("-")[0]


def runtime_rows(analyzer: Analyzer) -> dict[str, str]:
    """Provenance rows of the runtime: what was asked for, the engine's version and where its
    graph came from, the fp32 re-check of a reduced-precision run, and every runtime passed
    over with the reason ("none" when none was: a report that says nothing proves nothing)."""
    engine = analyzer.runtime.engine
    module = {"openvino": "openvino", "onnx": "onnxruntime", "tensorflow": "tensorflow"}[engine]
    version = f"{ENGINE_LABELS[engine]} {_library_version(module)}"
    if analyzer.graph_origin:
        version += f" (inference graph from the {analyzer.graph_origin})"
    rows = {
        RUNTIME_ASKED_ROW: analyzer.requested,
        RUNTIME_VERSION_ROW: version,
    }
    if analyzer.runtime.reduced_precision:
        rows[PRECISION_CHECK_ROW] = (
            f"cells with a {analyzer.runtime.precision} P(ALL) within {NEAR_BOUNDARY} of the "
            f"threshold or a band edge are computed again in fp32: {analyzer.rechecked} cells"
        )
    rows[RUNTIME_NOTES_ROW] = "; ".join(analyzer.runtime_notes) or "none"
    return rows


def _run_info(
    analyzer: Analyzer, inputs: Sequence[str | Path], options: AnalysisOptions
) -> RunInfo:
    """The provenance every report carries: app, model, runtime and device, libraries, how
    fields were handled."""
    bundle = analyzer.bundle
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
        device=analyzer.runtime.description,
        tensorflow_version=_library_version("tensorflow"),
        keras_version=_library_version("keras"),
        extra={
            "Model file": str(bundle.path),
            "Image kind": _IMAGE_KIND_TEXT[options.image_kind],
            UM_PER_PX_ROW: um_per_px_text(options.detector),
            "White-cell detector settings": json.dumps(options.detector.to_dict(), sort_keys=True),
            **model_provenance(bundle, options),
            **runtime_rows(analyzer),
        },
    )


def model_provenance(bundle: LoadedBundle, options: AnalysisOptions) -> dict[str, str]:
    """How P(ALL) was made beyond the weights: calibration, stain normalisation, TTA."""
    temperature = bundle.temperature
    if CALIBRATION_KEY in bundle.manifest:
        where = bundle.calibration_fitted_on
        calibration = f"temperature scaling, T = {temperature:.4g}" + (
            f" (fitted on {where})" if where else ""
        )
    else:
        calibration = "none (P(ALL) as the network gives it)"
    stain = bundle.stain
    return {
        CALIBRATION_ROW: calibration,
        STAIN_ROW: stain.describe() if stain is not None else "none",
        TTA_ROW: TTA_DESCRIPTION if options.tta else "off",
    }


def iter_run(
    paths: Sequence[str | Path],
    model: LoadedBundle | Analyzer,
    options: AnalysisOptions | None = None,
    *,
    cancel: CancelToken | None = None,
    discovered: tuple[list[InputFile], list[FileError]] | None = None,
) -> Iterator[RunEvent]:
    """Analyze files and folders, as a stream of events: the one analysis loop there is.

    Yields `RunStarted` once (provenance, walk errors, number of files), then per batch
    `Outcomes` (a CellResult or FileError per single-cell image, one CellResult per white
    cell of a smear field or a FileError when it has none) followed by `Progress` (counting
    files), and finally `RunFinished` with the whole run: walk errors first, then every
    file's outcomes in input order. Stops between batches when `cancel` is set; what finished
    stands and the run is marked cancelled. `model` may be an `Analyzer` to reuse its
    compiled call; `discovered` passes on an earlier `discover(paths)` so folders are walked
    once (its files are analyzed as given, e.g. with subjects as samples).
    """
    options = options if options is not None else AnalysisOptions()
    analyzer = model if isinstance(model, Analyzer) else Analyzer(model)
    items, walk_errors = discovered if discovered is not None else discover(paths)
    info = _run_info(analyzer, paths, options)
    info.total_inputs = len(items) + len(walk_errors)
    run = RunResult(info=info, outcomes=list(walk_errors))
    yield RunStarted(RunResult(info=info, outcomes=list(walk_errors)), len(items))

    total, done = len(items), 0
    started = time.perf_counter()
    with contextlib.closing(analyzer._batches(items, options, cancel)) as batches:
        for outcomes, files in batches:
            run.outcomes.extend(outcomes)
            done += files
            yield Outcomes(outcomes)
            rate = done / max(time.perf_counter() - started, 1e-9)
            eta = (total - done) / rate if rate > 0 else None
            yield Progress(done=done, total=total, rate=rate, eta_s=eta)
    info.cancelled = done < total  # only a cancel ends the stream early; errors raise
    info.finished = datetime.now().astimezone()
    info.extra.update(runtime_rows(analyzer))  # a GPU that failed mid-run is said here
    if analyzer.runtime.description != info.device:
        info.device = (
            f"{info.device}, then {analyzer.runtime.description} (see {RUNTIME_NOTES_ROW})"
        )
    yield RunFinished(run)


def analyze_paths(
    paths: Sequence[str | Path],
    model: LoadedBundle | Analyzer,
    options: AnalysisOptions | None = None,
    *,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
    discovered: tuple[list[InputFile], list[FileError]] | None = None,
) -> RunResult:
    """`iter_run` to the end: the finished (or cancelled) run, with `progress` called after
    every batch. For callers that want the result, not the stream."""
    for event in iter_run(paths, model, options, cancel=cancel, discovered=discovered):
        if isinstance(event, Progress):
            if progress is not None:
                progress(event)
        elif isinstance(event, RunFinished):
            return event.run
    raise RuntimeError("the analysis stream ended without its RunFinished event")
