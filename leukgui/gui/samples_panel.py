"""The samples panel: one row per sample (and "All samples") on final labels, the inputs that
could not be analyzed, and the sign-off button.

Counts come from `leukgui.core.metrics.sample_summary(run, review)`, the one summary the
reports print too, so what the reviewer signs off here is what the report says.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import TYPE_CHECKING

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QListWidget,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from leukgui.core.formatting import percent
from leukgui.core.metrics import sample_summary
from leukgui.core.results import UNCERTAIN, UNCLASSIFIABLE, FileError, RunResult

if TYPE_CHECKING:
    from leukgui.core.review import ReviewState

__all__ = ["COLUMNS", "SamplesPanel"]

# ALL % and its interval come right after the counts they are made of, so they stay in view
# in a narrow panel; the wide UNCERTAIN / UNCLASSIFIABLE headings follow.
COLUMNS = (
    "Sample",
    "Cells",
    "ALL",
    "HEM",
    "ALL %",
    "95% CI",
    UNCERTAIN,
    UNCLASSIFIABLE,
    "Reviewed",
    "Signed off",
)
_TOOLTIP = (
    "Counts of final labels: the reviewer's where a cell was reviewed, else the model's.\n"
    "UNCERTAIN: the model's call lies in its uncertainty band and no one has reviewed it yet.\n"
    "UNCLASSIFIABLE: a reviewer found the cell cannot be called.\n"
    "ALL % = ALL / (ALL + HEM), with a Wilson 95% interval."
)


class SamplesPanel(QWidget):
    """Samples and Errors tabs over the reviewer's name and the "Sign off sample" button."""

    sample_selected = Signal(object)  # the sample's name, or None for every sample
    sign_off_requested = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(list(COLUMNS))
        self.table.verticalHeader().setVisible(False)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.table.setToolTip(_TOOLTIP)
        self.table.itemSelectionChanged.connect(
            lambda: self.sample_selected.emit(self.selected_sample())
        )
        self.errors = QListWidget()
        self.tabs = QTabWidget()
        self.tabs.addTab(self.table, "Samples")
        self.tabs.addTab(self.errors, "Errors")

        self.sign_button = QPushButton("Sign off sample")
        self.sign_button.clicked.connect(self.sign_off_requested)
        self.reviewer_label = QLabel()
        sign_row = QHBoxLayout()
        sign_row.addWidget(self.reviewer_label, 1)
        sign_row.addWidget(self.sign_button)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.tabs, 1)
        layout.addLayout(sign_row)

    # ------------------------------------------------------------------ samples

    def refresh(self, run: RunResult | None, review: ReviewState | None = None) -> None:
        """Per-sample counts on final labels, with the ALL % interval; keeps the selection."""
        table = self.table
        if run is None:
            table.setRowCount(0)
            return
        rows = sample_summary(run, review)
        selected = self.selected_sample()
        table.blockSignals(True)
        table.setRowCount(len(rows))
        for r, s in enumerate(rows):
            ci = "" if math.isnan(s.ci_low) else f"{100 * s.ci_low:.1f}–{100 * s.ci_high:.1f}"
            values = (
                s.sample,  # "All samples" on the last row
                s.cells,
                s.n_all,
                s.n_hem,
                percent(s.all_fraction, missing=""),
                ci,
                s.n_uncertain,
                s.n_unclassifiable,
                f"{s.reviewed}/{s.cells}",
                s.signed_off.reviewer if s.signed_off else "",
            )
            for c, value in enumerate(values):
                item = QTableWidgetItem(str(value))
                if c == 0:
                    item.setData(Qt.ItemDataRole.UserRole, None if s.is_overall else s.sample)
                else:
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
            self.errors.addItem(f"{error.path}: {error.reason} ({error.kind_text})")
        self._count_errors()

    def _count_errors(self) -> None:
        n = self.errors.count()
        self.tabs.setTabText(1, f"Errors ({n})" if n else "Errors")
        self.errors.setToolTip(f"{n} inputs could not be analyzed" if n else "")

    # ------------------------------------------------------------------ reviewer

    def set_reviewer(self, name: str) -> None:
        who = name or "not set (asked at the first review)"
        self.reviewer_label.setText(f"Reviewer: {who}")
