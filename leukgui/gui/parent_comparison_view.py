"""The Training tab's "Parent vs new": a fine-tuned model against the model it started from.

Shows a `training.comparison.ParentComparison` (made by `training.run.train_session`, the
same figures as the training report's "Parent vs new" sheet): both models' test scores side
by side, the paired difference in balanced accuracy with its 95% interval, McNemar's test,
the verdict sentence and the cells the two models label differently, with thumbnails. It
only reports: adopting the new model is a separate decision ("Use this model…" asks for it,
with the reviewer's name, in `model_card.AdoptionDialog`).
"""

from __future__ import annotations

import html
import math
from pathlib import Path
from typing import Any

from PySide6.QtCore import QSize, Qt, Signal
from PySide6.QtGui import QColor, QIcon, QPainter, QPixmap
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from leukgui.core.formatting import percent
from leukgui.gui.metrics_card import number
from leukgui.gui.theme import status_style

__all__ = ["THUMB_SIZE", "ParentComparisonView", "load_thumbnail"]

THUMB_SIZE = 64
SHOWN_CAP = 200  # disagreement rows shown (the report lists as many; the rest: see it)
NOT_ADOPTED = (
    "Not adopted: the model in use is unchanged. Using the new model is a separate "
    "decision, recorded with the reviewer's name."
)


def load_thumbnail(path: str | Path, size: int = THUMB_SIZE) -> QPixmap | None:
    """The cell image as the model sees it (padded square), or None when it cannot be read."""
    from leukgui.core.imaging import read_image, thumbnail
    from leukgui.gui.cell_model import rgb_to_qimage

    try:
        rgb = read_image(path).rgb
        return QPixmap.fromImage(rgb_to_qimage(thumbnail(rgb, size)))
    except Exception:  # noqa: BLE001 - a moved or broken file shows a placeholder, never a crash
        return None


def _placeholder(size: int = THUMB_SIZE) -> QPixmap:
    """A grey square with a cross: the image file is missing or unreadable."""
    pixmap = QPixmap(size, size)
    pixmap.fill(QColor("#d8d8d8"))
    painter = QPainter(pixmap)
    painter.setPen(QColor("#888888"))
    painter.drawLine(8, 8, size - 8, size - 8)
    painter.drawLine(size - 8, 8, 8, size - 8)
    painter.end()
    return pixmap


def _points(value: float) -> str:
    return "n/a" if not math.isfinite(value) else f"{100 * value:+.1f}"


class ParentComparisonView(QWidget):
    """Parent against new on the same test cells; `show_comparison` or `show_missing`."""

    adopt_requested = Signal(object)  # Path of the new model file ("Use this model…")

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.comparison: Any = None
        self.new_bundle: Path | None = None
        self.missing_images: list[str] = []
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 4, 0, 0)
        self.title = QLabel("")
        self.title.setWordWrap(True)
        self.title.setTextFormat(Qt.RichText)
        self.title.setTextInteractionFlags(Qt.TextSelectableByMouse)
        layout.addWidget(self.title)
        self.reason_label = QLabel("")
        self.reason_label.setWordWrap(True)
        self.reason_label.setTextInteractionFlags(Qt.TextSelectableByMouse)
        self.reason_label.setAlignment(Qt.AlignTop | Qt.AlignLeft)
        layout.addWidget(self.reason_label, 1)

        top = QHBoxLayout()
        self.metrics_table = QTableWidget(0, 3)
        self.metrics_table.setHorizontalHeaderLabels(["", "Parent", "New"])
        self.metrics_table.verticalHeader().setVisible(False)
        self.metrics_table.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.metrics_table.setSelectionMode(QAbstractItemView.NoSelection)
        self.metrics_table.setFocusPolicy(Qt.NoFocus)
        self.metrics_table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeToContents)
        self.metrics_table.setVerticalScrollBarPolicy(Qt.ScrollBarAlwaysOff)
        self.metrics_table.setHorizontalScrollBarPolicy(Qt.ScrollBarAlwaysOff)
        top.addWidget(self.metrics_table, 0, Qt.AlignTop)
        side = QVBoxLayout()
        self.difference_label = QLabel("")
        self.difference_label.setWordWrap(True)
        self.difference_label.setTextFormat(Qt.RichText)
        self.difference_label.setTextInteractionFlags(Qt.TextSelectableByMouse)
        side.addWidget(self.difference_label)
        self.verdict_label = QLabel("")
        self.verdict_label.setWordWrap(True)
        self.verdict_label.setTextInteractionFlags(Qt.TextSelectableByMouse)
        side.addWidget(self.verdict_label)
        self.adoption_label = QLabel(NOT_ADOPTED)
        self.adoption_label.setWordWrap(True)
        self.adoption_label.setStyleSheet("color: palette(placeholder-text);")
        side.addWidget(self.adoption_label)
        buttons = QHBoxLayout()
        self.adopt_button = QPushButton("Use this model…")
        self.adopt_button.setToolTip(
            "Shows the new model's evidence and asks whether to use it for the next analyses"
        )
        buttons.addWidget(self.adopt_button)
        buttons.addStretch(1)
        side.addLayout(buttons)
        side.addStretch(1)
        top.addLayout(side, 1)
        layout.addLayout(top)

        self.disagreements_label = QLabel("")
        self.disagreements_label.setWordWrap(True)
        layout.addWidget(self.disagreements_label)
        self.cells_table = QTableWidget(0, 5)
        self.cells_table.setHorizontalHeaderLabels(
            ["Cell", "Subject", "Truth", "Parent: call, P(ALL)", "New: call, P(ALL)"]
        )
        self.cells_table.setIconSize(QSize(THUMB_SIZE, THUMB_SIZE))
        self.cells_table.verticalHeader().setVisible(False)
        self.cells_table.verticalHeader().setDefaultSectionSize(THUMB_SIZE + 6)
        self.cells_table.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.cells_table.setSelectionBehavior(QAbstractItemView.SelectRows)
        self.cells_table.setWordWrap(False)
        self.cells_table.setTextElideMode(Qt.ElideMiddle)
        header = self.cells_table.horizontalHeader()
        header.setSectionResizeMode(0, QHeaderView.Stretch)
        for column in range(1, 5):
            header.setSectionResizeMode(column, QHeaderView.ResizeToContents)
        layout.addWidget(self.cells_table, 1)
        self.adopt_button.clicked.connect(self._on_adopt)
        self.clear()

    # ------------------------------------------------------------------ content
    def clear(self) -> None:
        """Nothing to show (before a fine-tune has finished)."""
        self.comparison = None
        self.new_bundle = None
        self._show_parts(False)
        self.title.setText("")
        self.reason_label.setText("")

    def _show_parts(self, on: bool) -> None:
        for widget in (
            self.metrics_table,
            self.difference_label,
            self.verdict_label,
            self.adoption_label,
            self.adopt_button,
            self.disagreements_label,
            self.cells_table,
        ):
            widget.setVisible(on)
        self.reason_label.setVisible(not on)

    def show_missing(self, parent_label: str, reason: str) -> None:
        """A fine-tune whose comparison could not be made: say why, show no numbers."""
        self.clear()
        self.title.setText(f"<b>Parent vs new model</b> — started from {html.escape(parent_label)}")
        self.reason_label.setStyleSheet(status_style("warning"))
        self.reason_label.setText(f"⚠ No comparison with the parent model: {reason}")

    def show_comparison(self, comparison: Any, new_bundle: str | Path | None = None) -> None:
        """Show a `training.comparison.ParentComparison`; `new_bundle` is the new model file
        ("Use this model…" is offered only when it exists)."""
        self.comparison = comparison
        self.new_bundle = Path(new_bundle) if new_bundle else None
        self._show_parts(True)
        c, p = comparison, comparison.paired
        new_name = self.new_bundle.name if self.new_bundle else "the new model"
        self.title.setText(
            f"<b>Parent vs new model, on the same {p.cells:,} test cells of {p.subjects} "
            f"subject{'s' if p.subjects != 1 else ''}</b><br>"
            f"Parent: {html.escape(c.parent_label)} · New: {html.escape(new_name)}"
        )
        self._fill_metrics(c.parent, c.new)
        low, high = p.interval
        interval = (
            f"{100 * p.confidence:.0f}% CI {_points(low)} to {_points(high)}"
            if math.isfinite(low) and math.isfinite(high)
            else f"{100 * p.confidence:.0f}% CI n/a (fewer than 2 test subjects of a class)"
        )
        from training.comparison import p_value_text

        self.difference_label.setText(
            f"Balanced accuracy, new − parent: <b>{_points(p.difference)} points</b> "
            f"({interval}; paired bootstrap over subjects)<br>"
            f"McNemar p = <b>{p_value_text(p.mcnemar_p)}</b> (exact): only the new model "
            f"right on {p.mcnemar_b} cells, only the parent on {p.mcnemar_c}"
        )
        self.verdict_label.setText(c.verdict)
        self.set_new_bundle(self.new_bundle)
        self._fill_cells(c.disagreements)

    def set_new_bundle(self, path: str | Path | None, why_not: str = "") -> None:
        """The new model file "Use this model…" offers; disabled with `why_not` when it
        cannot be offered yet (e.g. it is not in the model list)."""
        self.new_bundle = Path(path) if path else None
        exists = self.new_bundle is not None and self.new_bundle.is_file()
        self.adopt_button.setEnabled(exists and not why_not)
        self.adoption_label.setText(NOT_ADOPTED + (f" {why_not}" if why_not else ""))
        self.adopt_button.setToolTip(
            why_not
            or "Shows the new model's evidence and asks whether to use it for the next analyses"
        )

    def _fill_metrics(self, parent: Any, new: Any) -> None:
        def ba(ev: Any) -> str:
            boot = getattr(getattr(ev, "intervals", None), "intervals", {}) or {}
            low, high = boot.get("balanced_accuracy", (math.nan, math.nan))
            text = percent(ev.metrics.balanced_accuracy)
            if math.isfinite(low) and math.isfinite(high):
                text += f" ({percent(low)}–{percent(high)})"
            return text

        rows = (
            ("Balanced accuracy (95% CI)", ba),
            ("Sensitivity", lambda ev: percent(ev.metrics.recall)),
            ("Specificity", lambda ev: percent(ev.metrics.specificity)),
            ("ROC AUC", lambda ev: number(ev.metrics.roc_auc)),
            ("Threshold", lambda ev: number(ev.threshold)),
            ("Cells", lambda ev: f"{ev.metrics.n:,}"),
            ("Subjects", lambda ev: f"{len(ev.subjects):,}"),
        )
        table = self.metrics_table
        table.setRowCount(len(rows))
        for row, (name, value) in enumerate(rows):
            table.setItem(row, 0, QTableWidgetItem(name))
            for column, ev in ((1, parent), (2, new)):
                item = QTableWidgetItem(value(ev))
                item.setTextAlignment(Qt.AlignRight | Qt.AlignVCenter)
                table.setItem(row, column, item)
        table.resizeColumnsToContents()
        table.resizeRowsToContents()
        height = table.horizontalHeader().height() + sum(
            table.rowHeight(r) for r in range(table.rowCount())
        )
        width = table.verticalHeader().width() + sum(
            table.columnWidth(c) for c in range(table.columnCount())
        )
        table.setFixedSize(width + 2 * table.frameWidth(), height + 2 * table.frameWidth())

    def _fill_cells(self, disagreements: list[Any]) -> None:
        shown = disagreements[:SHOWN_CAP]
        n = len(disagreements)
        if n == 0:
            text = "The two models label every test cell the same."
        else:
            text = f"{n:,} test cell{'s' if n != 1 else ''} the two models label differently"
            text += (
                f" (the first {SHOWN_CAP} shown; all in the training report)"
                if n > SHOWN_CAP
                else ":"
            )
        self.disagreements_label.setText(text)
        self.cells_table.setVisible(n > 0)
        self.missing_images = []
        table = self.cells_table
        table.setRowCount(len(shown))
        from leukgui.core.lab_dataset import source_images

        origins = source_images(d.path for d in shown)  # lab data set cells: their image
        for row, d in enumerate(shown):
            pixmap = load_thumbnail(d.path)
            if pixmap is None:
                self.missing_images.append(d.path)
                pixmap = _placeholder()
            origin = origins.get(d.path)
            cell = QTableWidgetItem(QIcon(pixmap), origin or d.path)  # elided in the middle
            missing = "\n(the image file is missing or cannot be read)"
            tip = f"{origin}\n(lab data set cell {d.path})" if origin else d.path
            cell.setToolTip(tip + (missing if d.path in self.missing_images else ""))
            cell.setData(Qt.UserRole, d.path)
            table.setItem(row, 0, cell)
            table.setItem(row, 1, QTableWidgetItem(d.subject))
            table.setItem(row, 2, QTableWidgetItem(d.truth))
            for column, (label, p_all) in (
                (3, (d.parent_label, d.parent_p_all)),
                (4, (d.new_label, d.new_p_all)),
            ):
                mark = "✓" if label == d.truth else "✗"
                item = QTableWidgetItem(f"{mark} {label}, {number(p_all)}")
                table.setItem(row, column, item)

    def thumbnail_count(self) -> int:
        """How many disagreement cells are shown with a thumbnail (or its placeholder)."""
        return self.cells_table.rowCount()

    def text(self) -> str:
        """Everything shown, as plain text (for tests and accessibility)."""
        parts = [
            self.title.text(),
            self.difference_label.text(),
            self.verdict_label.text(),
            self.disagreements_label.text(),
            self.reason_label.text(),
        ]
        for table in (self.metrics_table, self.cells_table):
            for row in range(table.rowCount()):
                parts.append(
                    " | ".join(
                        table.item(row, c).text() if table.item(row, c) else ""
                        for c in range(table.columnCount())
                    )
                )
        return "\n".join(p for p in parts if p)

    def _on_adopt(self) -> None:
        if self.new_bundle is not None:
            self.adopt_requested.emit(self.new_bundle)
