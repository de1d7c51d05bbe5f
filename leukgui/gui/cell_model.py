"""Qt item models for the cell gallery: the list of results, its thumbnails, and its filters.

One `CellListModel` row per analyzed cell, in arrival order; the gallery paints rows with a
delegate, so 10,000 cells cost 10,000 small records and no widgets. Thumbnails are decoded on
a thread pool only when a row is actually painted, and kept in a bounded LRU. Filtering and
sorting read the model's plain Python lists directly (no QModelIndex round trips), which is
what keeps a 10k-cell proxy responsive.
"""

from __future__ import annotations

import contextlib
import threading
from collections import OrderedDict, deque
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from PySide6.QtCore import (
    QAbstractListModel,
    QModelIndex,
    QObject,
    QPersistentModelIndex,
    QRunnable,
    QSortFilterProxyModel,
    Qt,
    QThread,
    QThreadPool,
    Signal,
    Slot,
)
from PySide6.QtGui import QColor, QImage, QPainter, QPen, QPixmap

from leukgui.core.cells import cell_image
from leukgui.core.imaging import decode_image, thumbnail
from leukgui.core.metrics import decided_label
from leukgui.core.overlay import overlay
from leukgui.core.results import ALL, HEM, UNCERTAIN, UNCLASSIFIABLE, CellResult
from leukgui.core.text import display_path

__all__ = [
    "FINAL_LABELS",
    "SORT_MODES",
    "UNCLASSIFIABLE",
    "CellFilterProxy",
    "CellListModel",
    "CellRole",
    "ChangedRole",
    "LabelRole",
    "LockedRole",
    "ModelCallRole",
    "ModelLabelRole",
    "PAllRole",
    "ReviewLike",
    "ReviewedRole",
    "SampleRole",
    "ThumbnailCache",
    "UncertaintyRole",
    "display_name",
    "path_key",
    "rgb_to_qimage",
]

FINAL_LABELS = (ALL, HEM, UNCERTAIN, UNCLASSIFIABLE)
SORT_MODES = ("file", "p_all", "least_certain")

CellRole = Qt.ItemDataRole.UserRole + 1  # the CellResult itself
LabelRole = Qt.ItemDataRole.UserRole + 2  # final label: reviewed, else the model's
ModelLabelRole = Qt.ItemDataRole.UserRole + 3  # the model's label (ALL / HEM / UNCERTAIN)
PAllRole = Qt.ItemDataRole.UserRole + 4  # float P(ALL)
ReviewedRole = Qt.ItemDataRole.UserRole + 5  # bool
SampleRole = Qt.ItemDataRole.UserRole + 6  # sample (folder) name
UncertaintyRole = Qt.ItemDataRole.UserRole + 7  # |P(ALL) - threshold|: small = least certain
# The model's call as the review sees it: ALL / HEM, an UNCERTAIN label resolved by the
# decision threshold (`ReviewState.suggestion`, what Enter confirms).
ModelCallRole = Qt.ItemDataRole.UserRole + 8
ChangedRole = Qt.ItemDataRole.UserRole + 9  # bool: reviewed to a label other than the call
LockedRole = Qt.ItemDataRole.UserRole + 10  # bool: the cell's sample is signed off

_REVIEW_ROLES = [
    LabelRole,
    ReviewedRole,
    ChangedRole,
    ModelCallRole,
    LockedRole,
    Qt.ItemDataRole.ToolTipRole,
]
_DECORATION = [Qt.ItemDataRole.DecorationRole]


class ReviewLike(Protocol):
    """What the models need from `leukgui.core.review.ReviewState` (typed loosely on purpose,
    so this module works while the review module evolves). `suggestion(cell)` and
    `signed_off(sample)` are used when present: the model's call and the sample's lock."""

    def final_label(self, cell: CellResult) -> str: ...

    def is_reviewed(self, cell: CellResult) -> bool: ...


def display_name(cell: CellResult) -> str:
    """The name a tile shows: the file name, plus " #n" for the n-th cell of a smear field.

    `n` is `CellResult.cell_index`, the same 1-based number as the cell's key (`...#n`), the
    report's "File" column and the field view's tags, so a person can match them by eye.
    """
    name = display_path(Path(cell.path).name)  # any bytes a file system holds, readable
    return name if cell.cell_index is None else f"{name} #{cell.cell_index}"


def path_key(path: Path | str | CellResult) -> str:
    """The key a cell is found by: its absolute path as text (plus `#n` for the n-th cell of a
    smear field), the same as the review's key."""
    if isinstance(path, CellResult):
        return path.key
    return str(Path(path).absolute())


def rgb_to_qimage(rgb: np.ndarray) -> QImage:
    """An HxWx3 uint8 array as a QImage that owns its pixels (safe to pass across threads)."""
    arr = np.ascontiguousarray(rgb, dtype=np.uint8)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 RGB image, got shape {arr.shape}")
    height, width = arr.shape[:2]
    image = QImage(arr.data, width, height, 3 * width, QImage.Format.Format_RGB888)
    return image.copy()  # detach from the numpy buffer, which the caller may free


# --------------------------------------------------------------------------------------------
# Thumbnails
# --------------------------------------------------------------------------------------------


_FAILED = object()  # LRU marker: the file could not be decoded; paint the unreadable tile


class _Relay(QObject):
    """Lives on the GUI thread; workers emit on it, so delivery is a queued connection."""

    done = Signal(object)


class _Job:
    __slots__ = ("generation", "heatmap", "key", "path", "size")

    def __init__(
        self, generation: int, key: tuple[str, bool], path: str, heatmap: Any, size: int
    ) -> None:
        self.generation = generation
        self.key = key
        self.path = path
        self.heatmap = heatmap
        self.size = size


class _JobStack:
    """Newest request first: what was painted last is what is on screen now."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._jobs: deque[_Job] = deque()

    def push(self, job: _Job, limit: int) -> list[_Job]:
        """Add a job; return the oldest ones dropped to stay within `limit`."""
        with self._lock:
            self._jobs.append(job)
            dropped = []
            while len(self._jobs) > limit:
                dropped.append(self._jobs.popleft())
            return dropped

    def pop(self) -> _Job | None:
        with self._lock:
            return self._jobs.pop() if self._jobs else None

    def clear(self) -> None:
        with self._lock:
            self._jobs.clear()


class _ThumbRunner(QRunnable):
    """Takes the newest pending job, decodes and renders it, and sends back a QImage."""

    def __init__(self, jobs: _JobStack, relay: _Relay) -> None:
        super().__init__()
        self._jobs = jobs
        self._relay = relay

    def run(self) -> None:  # noqa: D102 - QRunnable entry point
        job = self._jobs.pop()
        if job is None:
            return
        image: QImage | None = None
        reason = ""
        try:
            source = job.path
            rgb = cell_image(source) if isinstance(source, CellResult) else decode_image(source)
            rgb = thumbnail(rgb, job.size)
            if job.heatmap is not None:
                # The thumbnail is the padded square the model saw, so the heatmap grid
                # covers it exactly.
                rgb = overlay(rgb, job.heatmap)
            image = rgb_to_qimage(rgb)
        except Exception as exc:  # noqa: BLE001 - one bad file must never crash the gallery
            reason = str(exc) or exc.__class__.__name__
        with contextlib.suppress(RuntimeError):  # the cache was deleted while this ran
            self._relay.done.emit((job, image, reason))


class ThumbnailCache(QObject):
    """Square thumbnails (plain or with the Grad-CAM overlay), rendered off the GUI thread.

    `pixmap()` answers from memory or queues a load and answers None; `ready` fires when the
    load lands. Memory is bounded by entry count and by bytes; changing the size drops
    everything (and any late results of the old size).
    """

    ready = Signal(str, bool)  # path key, heatmap overlay?

    def __init__(
        self,
        size: int = 128,
        *,
        max_entries: int = 3000,
        max_bytes: int = 192 * 1024 * 1024,
        max_threads: int | None = None,
        max_queued: int = 1024,
        parent: QObject | None = None,
    ) -> None:
        super().__init__(parent)
        if size < 1:
            raise ValueError(f"thumbnail size must be positive, got {size}")
        self._size = int(size)
        self._dpr = 1.0
        self._max_entries = max(1, int(max_entries))
        self._max_bytes = max(1, int(max_bytes))
        self._max_queued = max(1, int(max_queued))
        self._lru: OrderedDict[tuple[str, bool], Any] = OrderedDict()
        self._bytes = 0
        self._pending: set[tuple[str, bool]] = set()
        self._reasons: dict[str, str] = {}
        self._generation = 0
        self._jobs = _JobStack()
        # The pool is created before the relay so that, as children are destroyed in
        # creation order, the pool waits for its workers before the relay they emit on goes.
        self._pool = QThreadPool(self)
        if max_threads is None:  # leave a core to the analysis engine on small machines
            max_threads = min(2, QThread.idealThreadCount() - 1)
        self._pool.setMaxThreadCount(max(1, int(max_threads)))
        self._relay = _Relay(self)
        self._relay.done.connect(self._on_done)
        self._placeholders: dict[tuple[str, int], QPixmap] = {}

    # ------------------------------------------------------------------ configuration

    def size(self) -> int:
        """Thumbnail side in device pixels."""
        return self._size

    def set_size(self, size: int, device_pixel_ratio: float = 1.0) -> None:
        """Render at `size` logical px (times the screen's pixel ratio); drops cached tiles."""
        dpr = max(1.0, float(device_pixel_ratio))
        side = max(1, round(int(size) * dpr))
        if side == self._size and dpr == self._dpr:
            return
        self._size, self._dpr = side, dpr
        self.clear()

    def clear(self) -> None:
        """Forget every tile and every queued load; loads already running are ignored."""
        self._generation += 1
        self._jobs.clear()
        self._lru.clear()
        self._pending.clear()
        self._reasons.clear()
        self._bytes = 0

    # ------------------------------------------------------------------ queries

    def pixmap(self, path: Path | str, heatmap: np.ndarray | None = None) -> QPixmap | None:
        """The tile if loaded (the unreadable tile for a bad file), else None and a queued load.

        Pass the cell's heatmap to get the overlaid tile; None gives the plain thumbnail.
        """
        key = (path_key(path), heatmap is not None)
        entry = self._lru.get(key)
        if entry is not None:
            self._lru.move_to_end(key)
            return self.unreadable() if entry is _FAILED else entry
        if key not in self._pending:
            self._pending.add(key)
            source = path if isinstance(path, CellResult) else key[0]
            job = _Job(self._generation, key, source, heatmap, self._size)
            for old in self._jobs.push(job, self._max_queued):
                self._pending.discard(old.key)  # asked for again if it is painted again
            self._pool.start(_ThumbRunner(self._jobs, self._relay))
        return None

    def contains(self, path: Path | str, heatmap: bool = False) -> bool:
        return (path_key(path), heatmap) in self._lru

    def failed(self, path: Path | str, heatmap: bool = False) -> bool:
        return self._lru.get((path_key(path), heatmap)) is _FAILED

    def failure_reason(self, path: Path | str) -> str | None:
        """Why the file could not be shown (plain language), or None."""
        return self._reasons.get(path_key(path))

    def pending_count(self) -> int:
        return len(self._pending)

    def __len__(self) -> int:
        return len(self._lru)

    def wait_for_done(self, msecs: int = 30_000) -> bool:
        """Block until the worker threads are idle (shutdown and tests)."""
        return self._pool.waitForDone(msecs)

    def shutdown(self) -> None:
        """Drop queued loads and wait for the running ones; call before the app quits."""
        self._jobs.clear()
        self._pool.waitForDone(5_000)

    # ------------------------------------------------------------------ placeholder tiles

    def placeholder(self) -> QPixmap:
        """The neutral tile shown while a thumbnail loads."""
        return self._tile("loading")

    def unreadable(self) -> QPixmap:
        """The tile shown for a file that cannot be decoded: a crossed-out frame."""
        return self._tile("unreadable")

    def _tile(self, kind: str) -> QPixmap:
        cached = self._placeholders.get((kind, self._size))
        if cached is not None:
            return cached
        side = self._size
        pix = QPixmap(side, side)
        pix.fill(QColor("#EEF0F3") if kind == "loading" else QColor("#F7F7F7"))
        if kind == "unreadable":
            painter = QPainter(pix)
            painter.setRenderHint(QPainter.RenderHint.Antialiasing)
            pen = QPen(QColor("#9AA0A6"), max(1.0, side / 48))
            painter.setPen(pen)
            m = side * 0.3
            painter.drawLine(int(m), int(m), int(side - m), int(side - m))
            painter.drawLine(int(side - m), int(m), int(m), int(side - m))
            painter.drawRect(0, 0, side - 1, side - 1)
            font = painter.font()
            font.setPixelSize(max(8, side // 10))
            painter.setFont(font)
            painter.setPen(QColor("#5F6368"))
            painter.drawText(
                0,
                int(side - m),
                side,
                int(m),
                Qt.AlignmentFlag.AlignCenter,
                "unreadable",
            )
            painter.end()
        pix.setDevicePixelRatio(self._dpr)
        self._placeholders[(kind, self._size)] = pix
        return pix

    # ------------------------------------------------------------------ results

    @Slot(object)
    def _on_done(self, payload: tuple[_Job, QImage | None, str]) -> None:
        job, image, reason = payload
        if job.generation != self._generation:
            return  # rendered for a size or a cache that no longer exists
        self._pending.discard(job.key)
        if image is None:
            self._reasons[job.key[0]] = reason
            self._store(job.key, _FAILED, 0)
        else:
            pix = QPixmap.fromImage(image)
            pix.setDevicePixelRatio(self._dpr)
            self._store(job.key, pix, pix.width() * pix.height() * 4)
        self.ready.emit(job.key[0], job.key[1])

    def _store(self, key: tuple[str, bool], entry: Any, nbytes: int) -> None:
        old = self._lru.pop(key, None)
        if isinstance(old, QPixmap):
            self._bytes -= old.width() * old.height() * 4
        self._lru[key] = entry
        self._bytes += nbytes
        while len(self._lru) > self._max_entries or (
            self._bytes > self._max_bytes and len(self._lru) > 1
        ):
            _, evicted = self._lru.popitem(last=False)
            if isinstance(evicted, QPixmap):
                self._bytes -= evicted.width() * evicted.height() * 4


# --------------------------------------------------------------------------------------------
# The list model
# --------------------------------------------------------------------------------------------


class CellListModel(QAbstractListModel):
    """Every analyzed cell in arrival order, with its final (reviewed) label and thumbnail.

    Final labels and reviewed flags are cached per row so that filters over 10k cells are
    list lookups; after changing the review, call `cell_changed(path)` (one cell) or
    `refresh_review()` (many) so the cache and the views follow.
    """

    threshold_changed = Signal(float)

    def __init__(
        self, parent: QObject | None = None, *, cache: ThumbnailCache | None = None
    ) -> None:
        super().__init__(parent)
        self._cells: list[CellResult] = []
        self._p_all: list[float] = []
        self._keys: list[str] = []
        self._rows: dict[str, int] = {}
        self._final: list[str] = []
        self._reviewed: list[bool] = []
        self._calls: list[str] = []  # the model's call (ALL / HEM) per row
        self._changed: list[bool] = []  # reviewed to a label other than the call
        self._review: ReviewLike | None = None
        self._threshold = 0.5
        self._show_heatmaps = False
        self._cache = cache if cache is not None else ThumbnailCache(parent=self)
        self._cache.ready.connect(self._on_thumbnail_ready)

    # ------------------------------------------------------------------ Qt interface

    def rowCount(self, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> int:  # noqa: B008, N802
        return 0 if parent.isValid() else len(self._cells)

    def roleNames(self) -> dict[int, bytes]:  # noqa: N802
        names = dict(super().roleNames())
        names.update(
            {
                CellRole: b"cell",
                ChangedRole: b"changed",
                LabelRole: b"label",
                LockedRole: b"locked",
                ModelCallRole: b"modelCall",
                ModelLabelRole: b"modelLabel",
                PAllRole: b"pAll",
                ReviewedRole: b"reviewed",
                SampleRole: b"sample",
                UncertaintyRole: b"uncertainty",
            }
        )
        return names

    def flags(self, index: QModelIndex | QPersistentModelIndex) -> Qt.ItemFlag:
        if not index.isValid():
            return Qt.ItemFlag.NoItemFlags
        return (
            Qt.ItemFlag.ItemIsEnabled
            | Qt.ItemFlag.ItemIsSelectable
            | Qt.ItemFlag.ItemNeverHasChildren
        )

    def data(
        self, index: QModelIndex | QPersistentModelIndex, role: int = Qt.ItemDataRole.DisplayRole
    ) -> Any:
        row = index.row()
        if not index.isValid() or not 0 <= row < len(self._cells):
            return None
        cell = self._cells[row]
        if role == Qt.ItemDataRole.DecorationRole:
            heat = cell.heatmap if self._show_heatmaps else None
            pix = self._cache.pixmap(cell if cell.in_field else self._keys[row], heat)
            return pix if pix is not None else self._cache.placeholder()
        if role == LabelRole:
            return self._final[row]
        if role == PAllRole:
            return float(cell.p_all)
        if role == ReviewedRole:
            return self._reviewed[row]
        if role == ChangedRole:
            return self._changed[row]
        if role == LockedRole:
            return self._signed_off(cell.sample) is not None
        if role == CellRole:
            return cell
        if role == Qt.ItemDataRole.DisplayRole:
            return display_name(cell)
        if role == ModelCallRole:
            return self._calls[row]
        if role == ModelLabelRole:
            return cell.label
        if role == SampleRole:
            return cell.sample
        if role == UncertaintyRole:
            return abs(float(cell.p_all) - self._threshold)
        if role == Qt.ItemDataRole.ToolTipRole:
            return self._tooltip(row)
        return None

    # ------------------------------------------------------------------ contents

    def append_cells(self, cells: Sequence[CellResult]) -> None:
        """Add one chunk of results at the end (one insert notification per chunk)."""
        new: dict[str, CellResult] = {}
        for cell in cells:  # a path already listed (or repeated in the chunk) is kept once
            key = path_key(cell)
            if key not in self._rows and key not in new:
                new[key] = cell
        if not new:
            return
        first = len(self._cells)
        self.beginInsertRows(QModelIndex(), first, first + len(new) - 1)
        for offset, (key, cell) in enumerate(new.items()):
            self._rows[key] = first + offset
            self._keys.append(key)
            self._cells.append(cell)
            self._p_all.append(float(cell.p_all))
            self._final.append(self._final_label(cell))
            self._reviewed.append(self._is_reviewed(cell))
            self._calls.append(self._model_call(cell))
            self._changed.append(self._is_changed(first + offset))
        self.endInsertRows()

    def clear(self) -> None:
        """Remove every cell (a new run); cached thumbnails are dropped too."""
        self.beginResetModel()
        self._cells.clear()
        self._p_all.clear()
        self._keys.clear()
        self._rows.clear()
        self._final.clear()
        self._reviewed.clear()
        self._calls.clear()
        self._changed.clear()
        self._cache.clear()
        self.endResetModel()

    def cell(self, row: int) -> CellResult:
        return self._cells[row]

    def cells(self) -> list[CellResult]:
        """All cells in arrival order (a copy)."""
        return list(self._cells)

    def row_of(self, path: Path | str) -> int | None:
        return self._rows.get(path_key(path))

    def final_label(self, row: int) -> str:
        return self._final[row]

    def is_reviewed(self, row: int) -> bool:
        return self._reviewed[row]

    def is_changed(self, row: int) -> bool:
        """Whether the reviewer gave this cell a label other than the model's call."""
        return self._changed[row]

    def model_call(self, row: int) -> str:
        """The model's call on this cell (ALL / HEM; see `ModelCallRole`)."""
        return self._calls[row]

    def samples(self) -> list[str]:
        """Distinct sample names in order of first appearance (for a sample chooser)."""
        return list(dict.fromkeys(c.sample for c in self._cells))

    # ------------------------------------------------------------------ review

    def set_review(self, review: ReviewLike | None) -> None:
        """Use `review` for final labels (None: the model's labels stand)."""
        self._review = review
        self.refresh_review()

    def review(self) -> ReviewLike | None:
        return self._review

    def refresh_review(self) -> None:
        """Re-read every cell's review (after an undo of many, a sign-off or a reopened
        sample, a load), so labels, changed flags and lock marks follow."""
        self._final = [self._final_label(c) for c in self._cells]
        self._reviewed = [self._is_reviewed(c) for c in self._cells]
        self._calls = [self._model_call(c) for c in self._cells]
        self._changed = [self._is_changed(row) for row in range(len(self._cells))]
        if self._cells:
            last = self.index(len(self._cells) - 1)
            self.dataChanged.emit(self.index(0), last, _REVIEW_ROLES)

    def cell_changed(self, path: Path | str) -> None:
        """One cell's review changed: re-read it and tell the views (no-op if not listed)."""
        row = self.row_of(path)
        if row is None:
            return
        cell = self._cells[row]
        self._final[row] = self._final_label(cell)
        self._reviewed[row] = self._is_reviewed(cell)
        self._calls[row] = self._model_call(cell)
        self._changed[row] = self._is_changed(row)
        index = self.index(row)
        self.dataChanged.emit(index, index, _REVIEW_ROLES)

    def _final_label(self, cell: CellResult) -> str:
        return cell.label if self._review is None else self._review.final_label(cell)

    def _is_reviewed(self, cell: CellResult) -> bool:
        return False if self._review is None else bool(self._review.is_reviewed(cell))

    def _model_call(self, cell: CellResult) -> str:
        """What the review counts as the model's call: `ReviewState.suggestion` (UNCERTAIN
        resolved by the run's threshold), else the same rule at this model's threshold."""
        suggestion = getattr(self._review, "suggestion", None)
        if suggestion is not None:
            try:
                return str(suggestion(cell))
            except ValueError:  # ReviewError: no threshold in the review, an odd label
                pass
        return decided_label(cell, self._threshold)

    def _is_changed(self, row: int) -> bool:
        return self._reviewed[row] and self._final[row] != self._calls[row]

    def _signed_off(self, sample: str) -> Any:
        """The review's sign-off of `sample` (with a `reviewer`), or None. Read live, so a
        lock is never shown stale; the views repaint on `refresh_review()`."""
        signed_off = getattr(self._review, "signed_off", None)
        return None if signed_off is None else signed_off(sample)

    # ------------------------------------------------------------------ display settings

    @property
    def thumbnail_cache(self) -> ThumbnailCache:
        return self._cache

    def set_show_heatmaps(self, show: bool) -> None:
        """Paint thumbnails with the Grad-CAM overlay (True) or plain (False)."""
        show = bool(show)
        if show != self._show_heatmaps:
            self._show_heatmaps = show
            self._all_decorations_changed()

    def set_thumb_size(self, px: int, device_pixel_ratio: float = 1.0) -> None:
        """Render thumbnails at `px` logical pixels (the gallery's tile size)."""
        before = self._cache.size()
        self._cache.set_size(px, device_pixel_ratio)
        if self._cache.size() != before:
            self._all_decorations_changed()

    def threshold(self) -> float:
        return self._threshold

    def set_threshold(self, threshold: float) -> None:
        """The decision threshold that "least certain" is measured from."""
        t = float(threshold)
        if not 0.0 <= t <= 1.0:
            raise ValueError(f"threshold must be within 0..1, got {threshold}")
        if t == self._threshold:
            return
        self._threshold = t
        if self._cells:
            # Without a review threshold, an UNCERTAIN cell's call follows this one.
            self._calls = [self._model_call(c) for c in self._cells]
            self._changed = [self._is_changed(row) for row in range(len(self._cells))]
            last = self.index(len(self._cells) - 1)
            roles = [UncertaintyRole, ModelCallRole, ChangedRole]
            self.dataChanged.emit(self.index(0), last, roles)
        self.threshold_changed.emit(t)

    def _all_decorations_changed(self) -> None:
        if self._cells:
            self.dataChanged.emit(self.index(0), self.index(len(self._cells) - 1), _DECORATION)

    @Slot(str, bool)
    def _on_thumbnail_ready(self, key: str, heatmap: bool) -> None:
        if heatmap != self._show_heatmaps:
            return
        row = self._rows.get(key)
        if row is not None:
            index = self.index(row)
            self.dataChanged.emit(index, index, _DECORATION)

    def _tooltip(self, row: int) -> str:
        cell = self._cells[row]
        lines = [display_path(cell.path)]
        if cell.cell_index is not None:
            lines.append(f"Cell #{cell.cell_index} of this smear field")
        lines += [f"P(ALL) = {float(cell.p_all):.3f}", f"Model: {cell.label}"]
        if self._reviewed[row]:
            if self._changed[row]:
                lines.append(f"Reviewed: {self._final[row]} (changed from {self._calls[row]})")
            else:
                lines.append(f"Reviewed: {self._final[row]}")
        signed = self._signed_off(cell.sample)
        if signed is not None:
            lines.append(f"Signed off by {signed.reviewer} — locked")
        if cell.truth:
            lines.append(f"Truth: {cell.truth}")
        reason = self._cache.failure_reason(self._keys[row])
        if reason:
            lines.append(f"Image cannot be read: {reason}")
        return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Filtering and sorting
# --------------------------------------------------------------------------------------------


class CellFilterProxy(QSortFilterProxyModel):
    """The gallery's view of the cells: filtered by final label, sample, review state and
    "changed by review", ordered by arrival, by P(ALL) (highest first) or least certain first.

    Filters and comparisons read the source model's lists by row number, so one pass over
    10k cells stays in the tens of milliseconds. Ties keep arrival order.
    """

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._labels: frozenset[str] | None = None
        self._sample: str | None = None
        self._reviewed: bool | None = None
        self._changed: bool | None = None
        self._mode = "file"
        self._src: CellListModel | None = None
        self.setDynamicSortFilter(True)
        self.setFilterRole(LabelRole)  # review changes carry this role: re-filter the row
        self.setSortRole(PAllRole)  # never changes, so data updates never trigger re-sorts

    def setSourceModel(self, model: QAbstractListModel | None) -> None:  # noqa: N802
        if model is not None and not isinstance(model, CellListModel):
            raise TypeError("CellFilterProxy needs a CellListModel as its source")
        if self._src is not None:
            self._src.threshold_changed.disconnect(self._on_threshold_changed)
        self._src = model
        super().setSourceModel(model)
        if model is not None:
            model.threshold_changed.connect(self._on_threshold_changed)

    # ------------------------------------------------------------------ filters

    def set_labels(self, labels: Iterable[str] | None) -> None:
        """Show only cells whose final label is in `labels` (None: any label)."""
        new = None if labels is None else frozenset(labels)
        if new is not None and not new <= set(FINAL_LABELS):
            raise ValueError(f"unknown labels {sorted(new - set(FINAL_LABELS))}")
        self._change_filter("_labels", new)

    def labels(self) -> frozenset[str] | None:
        return self._labels

    def set_sample(self, sample: str | None) -> None:
        """Show only one sample's cells (None: all samples)."""
        self._change_filter("_sample", sample)

    def sample(self) -> str | None:
        return self._sample

    def set_reviewed(self, reviewed: bool | None) -> None:
        """True: reviewed cells only; False: not yet reviewed only; None: both."""
        self._change_filter("_reviewed", None if reviewed is None else bool(reviewed))

    def reviewed(self) -> bool | None:
        return self._reviewed

    def set_changed(self, changed: bool | None) -> None:
        """True: only cells the reviewer gave a label other than the model's call (what a
        second reader checks); False: all other cells; None: both.

        Follows review changes live: they carry the filter role (LabelRole), so the proxy
        re-filters the row when a cell is re-labelled or undone."""
        self._change_filter("_changed", None if changed is None else bool(changed))

    def changed(self) -> bool | None:
        return self._changed

    def _change_filter(self, name: str, value: Any) -> None:
        if getattr(self, name) == value:
            return
        self.beginFilterChange()
        setattr(self, name, value)
        self.endFilterChange(QSortFilterProxyModel.Direction.Rows)

    def filterAcceptsRow(  # noqa: N802
        self, source_row: int, source_parent: QModelIndex | QPersistentModelIndex
    ) -> bool:
        src = self._src
        if src is None:
            return False
        if self._labels is not None and src._final[source_row] not in self._labels:
            return False
        if self._sample is not None and src._cells[source_row].sample != self._sample:
            return False
        if self._changed is not None and src._changed[source_row] != self._changed:
            return False
        return self._reviewed is None or src._reviewed[source_row] == self._reviewed

    # ------------------------------------------------------------------ order

    def set_sort(self, mode: str) -> None:
        """ "file" (arrival order), "p_all" (highest P(ALL) first) or "least_certain"."""
        if mode not in SORT_MODES:
            raise ValueError(f"sort mode must be one of {SORT_MODES}, got {mode!r}")
        changed = mode != self._mode
        self._mode = mode
        if mode == "file":
            self.sort(-1)  # back to the source (arrival) order
        elif self.sortColumn() != 0:
            self.sort(0, Qt.SortOrder.AscendingOrder)
        elif changed:
            self.invalidate()  # same column, different comparison

    def lessThan(  # noqa: N802
        self,
        source_left: QModelIndex | QPersistentModelIndex,
        source_right: QModelIndex | QPersistentModelIndex,
    ) -> bool:
        # Called ~130k times to sort 10k cells: keep it to list lookups and float compares.
        a = source_left.row()
        b = source_right.row()
        src = self._src
        if src is None or self._mode == "file":
            return a < b
        p = src._p_all
        if self._mode == "p_all":
            ka, kb = p[b], p[a]  # descending P(ALL)
        else:
            t = src._threshold
            ka, kb = abs(p[a] - t), abs(p[b] - t)
        return ka < kb or (ka == kb and a < b)

    @Slot(float)
    def _on_threshold_changed(self, _threshold: float) -> None:
        if self._changed is not None:  # an UNCERTAIN cell's call may have moved
            self.beginFilterChange()
            self.endFilterChange(QSortFilterProxyModel.Direction.Rows)
        if self._mode == "least_certain":
            self.invalidate()

    # ------------------------------------------------------------------ convenience

    def cell(self, row: int) -> CellResult:
        """The cell at a proxy row."""
        return self.index(row, 0).data(CellRole)

    def row_of(self, path: Path | str) -> int | None:
        """The proxy row of a cell, or None when it is filtered out or unknown."""
        if self._src is None:
            return None
        source_row = self._src.row_of(path)
        if source_row is None:
            return None
        index = self.mapFromSource(self._src.index(source_row))
        return index.row() if index.isValid() else None

    def source_rows(self) -> list[int]:
        """Source rows in proxy order (what the gallery shows, top to bottom)."""
        return [self.mapToSource(self.index(r, 0)).row() for r in range(self.rowCount())]
