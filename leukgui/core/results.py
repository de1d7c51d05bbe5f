"""Result records shared by the engine, the reports, the CLI and the GUI.

Errors are values: every input yields exactly one `CellResult` or one `FileError`, in input
order, so one bad file never stops a run and nothing is silently dropped.
"""

from __future__ import annotations

import hashlib
import math
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # numpy loads with the engine, not with the window (start-up time)
    import numpy as np

ALL = "ALL"
HEM = "HEM"
UNCERTAIN = "UNCERTAIN"
UNCLASSIFIABLE = "UNCLASSIFIABLE"  # a reviewer's label only; the model never gives it
LABELS = (ALL, HEM, UNCERTAIN)
DEMO_NOTICE = "DEMO MODEL — trained on synthetic cells, not for diagnosis"


IMAGE_CHANGED = "image changed since analysis"  # the file is not the analyzed one


@dataclass(frozen=True)
class InputFile:
    """One image to analyze: where it is and which sample (folder) it belongs to."""

    path: Path
    sample: str


@dataclass(frozen=True)
class FileStamp:
    """What an input file was when it was analyzed: its size, modification time and the
    SHA-256 of its bytes, so a report can tell when the file on disk is no longer the image
    the call was made on, and always name the exact pixels (the hash) it reports on."""

    size: int
    mtime_ns: int
    sha256: str

    @classmethod
    def of(cls, path: str | os.PathLike[str]) -> FileStamp:
        """Stamp the file at `path` as it is now (OSError when it cannot be read)."""
        digest = hashlib.sha256()
        with open(path, "rb") as fh:  # in 1 MiB blocks (hashlib.file_digest is 3.11+)
            st = os.fstat(fh.fileno())
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
        return cls(int(st.st_size), int(st.st_mtime_ns), digest.hexdigest())

    def same_file_info(self, path: str | os.PathLike[str]) -> bool:
        """Whether size and modification time still match (cheap; no read)."""
        try:
            st = os.stat(path)
        except OSError:
            return False
        return (int(st.st_size), int(st.st_mtime_ns)) == (self.size, self.mtime_ns)


@dataclass
class CellResult:
    """The model's call on one cell, with the Grad-CAM heatmap that explains it.

    `heatmap` is the Grad-CAM map on a small pixel-aligned grid over the model input
    (input size / 8 a side, float32, 0..1); renderers resize it onto the image, so a result
    stays a few kilobytes however big the image is.
    """

    path: Path
    sample: str
    p_all: float
    label: str
    heatmap: np.ndarray
    width: int
    height: int
    truth: str | None = None
    subject: str | None = None
    # A cell found in a smear field: its box in the field image (x0, y0, x1, y1), its number
    # in that field (1-based), and its mask inside the box (np.packbits of a bool array).
    box: tuple[int, int, int, int] | None = None
    cell_index: int | None = None
    mask_bits: bytes | None = None
    note: str = ""  # e.g. "field capped at 200 candidates"
    # The file as it was analyzed (size, time, SHA-256); None for results made without one
    # (sessions saved by an older LeukGUI, hand-made results in tests).
    stamp: FileStamp | None = None
    # Measures of a smear-field cell (None / "" for single-cell images, so reports leave
    # them empty rather than claim a zero): its mask area in image px, whether the mask
    # reaches the image border (the cell may be cut off), and the field's scale in µm per
    # image pixel with where it came from ("red cells (n=23)", "set", "nucleus size (n=2)",
    # "default") and whether the measurement was plausible. The scale is per field (every
    # cell of a field carries the same), so a report can compare the fields of a sample.
    area_px: int | None = None
    touches_border: bool | None = None
    um_per_px: float | None = None
    scale_source: str = ""
    scale_plausible: bool | None = None

    @property
    def diameter_px(self) -> float | None:
        """Equivalent-circle diameter of the cell's mask in px, 2 sqrt(area / pi)."""
        return None if self.area_px is None else 2.0 * math.sqrt(self.area_px / math.pi)

    @property
    def diameter_um(self) -> float | None:
        """Equivalent-circle diameter in µm (None without an area or a scale)."""
        d = self.diameter_px
        return None if d is None or self.um_per_px is None else d * self.um_per_px

    @property
    def area_um2(self) -> float | None:
        """Mask area in µm² (None without an area or a scale)."""
        if self.area_px is None or self.um_per_px is None:
            return None
        return self.area_px * self.um_per_px**2

    @property
    def sha256(self) -> str | None:
        """The SHA-256 of the analyzed file's bytes, when known."""
        return self.stamp.sha256 if self.stamp is not None else None

    @property
    def key(self) -> str:
        """One name per cell: the absolute file path, plus `#n` for the n-th cell of a field."""
        text = str(Path(self.path).absolute())
        return text if self.cell_index is None else f"{text}#{self.cell_index}"

    @property
    def in_field(self) -> bool:
        return self.box is not None


# What went wrong with an input, for code to decide on (the reason is for people).
UNREADABLE = "unreadable"  # missing, no permission, I/O error, undecodable bytes
NOT_AN_IMAGE = "not_an_image"  # a file that is no image format we read
TOO_LARGE = "too_large"  # over the pixel limit, or too large for memory
NO_WHITE_CELL = "no_white_cell"  # a smear field in which the detector found no white cell
MODEL_FAILURE = "model_failure"  # the network returned non-finite values for this input
UNEXPECTED = "unexpected"  # a bug: an exception nobody anticipated
ERROR_KINDS = (UNREADABLE, NOT_AN_IMAGE, TOO_LARGE, NO_WHITE_CELL, MODEL_FAILURE, UNEXPECTED)
ERROR_KIND_TEXT = {  # each kind in the words the window, the CSV and the report all use
    UNREADABLE: "unreadable",
    NOT_AN_IMAGE: "not an image",
    TOO_LARGE: "too large",
    NO_WHITE_CELL: "no white cell",
    MODEL_FAILURE: "model failure",
    UNEXPECTED: "unexpected error",
}


@dataclass
class FileError:
    """An input that could not be analyzed: a plain-language `reason` for the person and a
    machine-readable `kind` (one of `ERROR_KINDS`) for the code that sorts or counts errors."""

    path: Path
    sample: str
    reason: str
    kind: str  # required: every place that gives up on an input says why, in code too

    def __post_init__(self) -> None:
        if self.kind not in ERROR_KINDS:
            raise ValueError(f"unknown error kind {self.kind!r}; expected one of {ERROR_KINDS}")

    @property
    def kind_text(self) -> str:
        """The kind in plain words ("not an image"), as every view and report shows it."""
        return ERROR_KIND_TEXT[self.kind]


Outcome = CellResult | FileError


@dataclass(frozen=True)
class Progress:
    """How far a run is: cells done of total, throughput and time left."""

    done: int
    total: int
    rate: float  # images per second since the start
    eta_s: float | None  # None until a rate is known

    @property
    def fraction(self) -> float:
        return self.done / self.total if self.total else 1.0


ProgressCallback = Callable[[Progress], None]


class CancelToken:
    """Thread-safe cancel flag that long-running core functions check between batches."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()


@dataclass
class RunInfo:
    """Provenance of one analysis run, written into every report."""

    app_version: str
    model_name: str
    model_version: str
    model_sha256: str
    backbone: str
    input_size: int
    threshold: float
    uncertainty_band: tuple[float, float]
    demo: bool
    inputs: list[str]
    started: datetime
    finished: datetime | None = None
    cancelled: bool = False
    device: str = "CPU"
    tensorflow_version: str = ""
    keras_version: str = ""
    total_inputs: int = 0
    extra: dict[str, str] = field(default_factory=dict)


@dataclass
class RunResult:
    """Everything a finished (or cancelled) run produced, in input order."""

    info: RunInfo
    outcomes: list[Outcome]

    @property
    def cells(self) -> list[CellResult]:
        return [o for o in self.outcomes if isinstance(o, CellResult)]

    @property
    def errors(self) -> list[FileError]:
        return [o for o in self.outcomes if isinstance(o, FileError)]
