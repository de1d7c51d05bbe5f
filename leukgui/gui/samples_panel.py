"""The samples panel: one row per sample (and "All samples") on final labels, the inputs that
could not be analyzed, and the sign-off button.

Counts come from `leukgui.core.metrics.sample_summary(run, review)`, the one summary the
reports print too, so what the reviewer signs off here is what the report says.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QEvent, Qt, Signal
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QListWidget,
    QPushButton,
    QStyledItemDelegate,
    QStyleOptionViewItem,
    QTableWidget,
    QTableWidgetItem,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from leukgui.core.formatting import local_minute, percent
from leukgui.core.metrics import SampleSummary, sample_summary
from leukgui.core.results import UNCERTAIN, UNCLASSIFIABLE, FileError, RunResult
from leukgui.core.text import display_path, display_text

if TYPE_CHECKING:
    from leukgui.core.review import ReviewState

__all__ = ["COLUMNS", "SamplesPanel", "details_text"]

# The key columns fit a 1024 px window without a horizontal scroll bar; the counts they are
# made of (ALL, HEM, UNCERTAIN, UNCLASSIFIABLE) are in each row's tooltip and in the details
# strip under the table, for the selected sample (or all samples).
COLUMNS = ("Sample", "Cells", "ALL %", "95% CI", "Reviewed", "Signed off")
_STRETCH = ("Sample", "Signed off")  # the two columns whose text can be long
_SIGNED_HEADING = "Signed\noff"
_TOOLTIP = (
    "Counts of final labels: the reviewer's where a cell was reviewed, else the model's.\n"
    f"{UNCERTAIN}: the model's call lies in its uncertainty band and no one has reviewed it yet.\n"
    f"{UNCLASSIFIABLE}: a reviewer found the cell cannot be called.\n"
    "ALL % = ALL / (ALL + HEM), with a Wilson 95% interval."
)


def details_text(s: SampleSummary) -> str:
    """The counts behind a row, in words: the tooltip and the details strip."""
    text = (
        f"{display_path(s.sample)}: {s.n_all} ALL · {s.n_hem} HEM · {s.n_uncertain} {UNCERTAIN} · "
        f"{s.n_unclassifiable} {UNCLASSIFIABLE} · reviewed {s.reviewed} of {s.cells}"
    )
    if s.signed_off is not None:
        text += f" · signed off by {s.signed_off.reviewer} at {local_minute(s.signed_off.time)}"
    return text


class _ElideRight(QStyledItemDelegate):
    """A reviewer's name shortens at its end ("Dr. A. Exa…"), unlike sample paths."""

    def initStyleOption(self, option: QStyleOptionViewItem, index: Any) -> None:  # noqa: N802
        super().initStyleOption(option, index)
        option.textElideMode = Qt.TextElideMode.ElideRight


class SamplesPanel(QWidget):
    """Samples and Errors tabs over the reviewer's name and the "Sign off sample" button."""

    sample_selected = Signal(object)  # the sample's name, or None for every sample
    sign_off_requested = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.table = QTableWidget(0, len(COLUMNS))
        # "Signed off" on two lines: its names are elided anyway; the sample's name gets room
        headings = [_SIGNED_HEADING if c == "Signed off" else c for c in COLUMNS]
        self.table.setHorizontalHeaderLabels(headings)
        self.table.verticalHeader().setVisible(False)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        for name in _STRETCH:  # sized by _fit_columns: the sample's name comes first
            header.setSectionResizeMode(COLUMNS.index(name), QHeaderView.ResizeMode.Fixed)
        self.table.viewport().installEventFilter(self)
        header.setMinimumSectionSize(24)
        # The end of a sample's path tells samples apart (patient7/all, patient7/hem)
        self.table.setTextElideMode(Qt.TextElideMode.ElideLeft)
        self._elide_right = _ElideRight(self.table)
        self.table.setItemDelegateForColumn(COLUMNS.index("Signed off"), self._elide_right)
        self.table.setWordWrap(False)
        self.table.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.table.horizontalHeaderItem(COLUMNS.index("Signed off")).setToolTip(
            "Who signed the sample off (hover a row for when)"
        )
        self.table.setToolTip(_TOOLTIP)
        self.table.itemSelectionChanged.connect(self._selection_changed)
        self.details = QLabel()
        self.details.setWordWrap(True)
        self.details.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.details.setObjectName("sampleDetails")
        self.details.setMinimumWidth(1)  # wraps to the panel, never widens it
        self._summaries: list[SampleSummary] = []
        self._run: RunResult | None = None
        self.errors = QListWidget()
        self.tabs = QTabWidget()
        self.tabs.addTab(self.table, "Samples")
        self.tabs.addTab(self.errors, "Errors")

        self.sign_button = QPushButton("Sign off sample")
        self.sign_button.clicked.connect(self.sign_off_requested)
        self.reviewer_label = QLabel()
        self.reviewer_label.setWordWrap(True)
        self.reviewer_label.setMinimumWidth(1)
        sign_row = QHBoxLayout()
        sign_row.addWidget(self.reviewer_label, 1)
        sign_row.addWidget(self.sign_button)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.tabs, 1)
        layout.addWidget(self.details)
        layout.addLayout(sign_row)

    # ------------------------------------------------------------------ samples

    def refresh(self, run: RunResult | None, review: ReviewState | None = None) -> None:
        """Per-sample counts on final labels, with the ALL % interval; keeps the selection,
        and goes back to the top when the results are new ones."""
        table = self.table
        if run is not self._run:
            self._run = run
            table.scrollToTop()
            table.horizontalScrollBar().setValue(0)
        if run is None:
            table.setRowCount(0)
            self._summaries = []
            self._show_details()
            return
        rows = sample_summary(run, review)
        self._summaries = rows
        selected = self.selected_sample()
        table.blockSignals(True)
        table.setRowCount(len(rows))
        for r, s in enumerate(rows):
            # Whole percent: a Wilson interval over a few hundred cells is not known to a
            # tenth of a percent (the report keeps one decimal in its own columns).
            ci = "" if math.isnan(s.ci_low) else f"{100 * s.ci_low:.0f}–{100 * s.ci_high:.0f}%"
            values = (
                display_path(s.sample),  # "All samples" on the last row
                s.cells,
                percent(s.all_fraction, missing=""),
                ci,
                f"{s.reviewed}/{s.cells}",
                s.signed_off.reviewer if s.signed_off else "",
            )
            tip = details_text(s)
            for c, value in enumerate(values):
                item = QTableWidgetItem(str(value))
                item.setToolTip(tip)
                if c == 0:
                    item.setData(Qt.ItemDataRole.UserRole, None if s.is_overall else s.sample)
                elif COLUMNS[c] != "Signed off":
                    item.setTextAlignment(
                        Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter
                    )
                if s.is_overall:
                    font = item.font()
                    font.setBold(True)
                    item.setFont(font)
                table.setItem(r, c, item)
            if selected is not None and s.sample == selected and not s.is_overall:
                table.selectRow(r)
        table.blockSignals(False)
        table.resizeColumnsToContents()
        self._fit_columns()
        self._show_details()

    def eventFilter(self, watched: Any, event: Any) -> bool:  # noqa: N802 - Qt override
        if watched is self.table.viewport() and event.type() == QEvent.Type.Resize:
            self._fit_columns()
        return super().eventFilter(watched, event)

    def _fit_columns(self) -> None:
        """Share what the count columns leave between Sample and Signed off: the sample's
        name whole first, the reviewer's name with what remains (at least its heading)."""
        table, header = self.table, self.table.horizontalHeader()
        sample_col, signed_col = COLUMNS.index("Sample"), COLUMNS.index("Signed off")
        fixed = sum(header.sectionSize(c) for c in range(len(COLUMNS)) if c not in (0, signed_col))
        room = max(0, table.viewport().width() - fixed)
        pad = 2 * table.style().pixelMetric(table.style().PixelMetric.PM_FocusFrameHMargin) + 8
        lines = _SIGNED_HEADING.splitlines()
        heading = max(header.fontMetrics().horizontalAdvance(line) for line in lines) + pad
        wanted_sample = max(table.sizeHintForColumn(sample_col) + 8, heading)
        wanted_signed = max(table.sizeHintForColumn(signed_col), heading)
        signed = min(wanted_signed, max(heading, room - wanted_sample))
        signed = min(signed, room // 2) if room - signed < heading else signed
        header.resizeSection(signed_col, signed)
        header.resizeSection(sample_col, max(0, room - signed))

    def _selection_changed(self) -> None:
        self._show_details()
        self.sample_selected.emit(self.selected_sample())

    def _show_details(self) -> None:
        """The details strip describes the selected sample, else all samples."""
        selected = self.selected_sample()
        chosen = [
            s
            for s in self._summaries
            if (not s.is_overall and s.sample == selected) or (s.is_overall and not selected)
        ]
        self.details.setText(details_text(chosen[0]) if chosen else "")
        self.details.setVisible(bool(chosen))

    def selected_sample(self) -> str | None:
        """The sample whose row is selected (None for none, or for the "All samples" row)."""
        rows = self.table.selectionModel().selectedRows()
        if not rows:
            return None
        item = self.table.item(rows[0].row(), 0)
        sample = item.data(Qt.ItemDataRole.UserRole) if item else None
        return str(sample) if sample else None

    def clear_selection(self) -> None:
        self.table.clearSelection()

    # ------------------------------------------------------------------ errors

    def clear(self) -> None:
        """A new run: no samples, no errors."""
        self.table.setRowCount(0)
        self.errors.clear()
        self._count_errors()

    def add_errors(self, errors: Iterable[FileError]) -> None:
        """List inputs that could not be analyzed (one line each: path, reason and kind)."""
        for error in errors:
            self.errors.addItem(
                f"{display_path(error.path)}: {display_text(error.reason)} ({error.kind_text})"
            )
        self._count_errors()

    def _count_errors(self) -> None:
        n = self.errors.count()
        self.tabs.setTabText(1, f"Errors ({n})" if n else "Errors")
        self.errors.setToolTip(f"{n} inputs could not be analyzed" if n else "")

    # ------------------------------------------------------------------ reviewer

    def set_reviewer(self, name: str) -> None:
        who = name or "not set (asked at the first review)"
        self.reviewer_label.setText(f"Reviewer: {who}")
