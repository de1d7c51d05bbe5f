"""The Training page's results: one card of scores per trained backbone, labelled by part.

A card says on which subjects its scores were measured (test, or validation when there was
no test split, which is optimistic), with the threshold and uncertainty band the model file
carries, and offers the report, the folder, the curves and "Add to model list".
"""

from __future__ import annotations

import html
import math
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, Signal, Slot
from PySide6.QtWidgets import (
    QFrame,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QScrollArea,
    QVBoxLayout,
    QWidget,
)

from leukgui.core.formatting import duration, edges_text, percent
from leukgui.gui.theme import status_style
from leukgui.gui.training_form import display_name

__all__ = ["MetricsCard", "ResultsBox", "number"]


def number(value: float | None, digits: int = 3) -> str:
    """A score such as an AUC or a threshold to `digits` places; "n/a" when undefined."""
    if value is None or not math.isfinite(value):
        return "n/a"
    return f"{value:.{digits}f}"


class MetricsCard(QFrame):
    """The scores of one trained backbone, with links to its report and its model file."""

    def __init__(self, run: Any, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.run = run
        self.setFrameShape(QFrame.StyledPanel)
        self.setObjectName("metricsCard")
        layout = QVBoxLayout(self)
        layout.setContentsMargins(10, 8, 10, 8)
        model_file = Path(run.bundle_path) if run.bundle_path else None
        self.title = QLabel(f"<b>{html.escape(model_file.name if model_file else run.name)}</b>")
        self.title.setTextInteractionFlags(Qt.TextSelectableByMouse)
        layout.addWidget(self.title)
        self.cancelled_label = QLabel(
            f"CANCELLED — best epoch so far (epoch {run.best_epoch} of {len(run.history)} run)"
        )
        self.cancelled_label.setStyleSheet(status_style("error", "font-weight: bold;"))
        self.cancelled_label.setVisible(bool(run.cancelled))
        layout.addWidget(self.cancelled_label)

        ev = run.test or run.validation
        where = (
            "test subjects (held out)"
            if run.test is not None
            else "validation subjects — not held out: there is no test part, and these cells "
            "chose the threshold, so the scores are optimistic"
        )
        n = ev.metrics.n if ev else 0
        subjects = len(ev.subjects) if ev else 0
        self.subtitle = QLabel(
            f"{display_name(run.backbone)} · scored on {n} cells of {subjects} {where}"
        )
        self.subtitle.setWordWrap(True)
        layout.addWidget(self.subtitle)
        self.warning_label = QLabel("")
        self.warning_label.setWordWrap(True)
        self.warning_label.setStyleSheet(status_style("warning"))
        by_image = (run.split or {}).get("split_by") == "image"
        self.warning_label.setText(
            "Split by image (subjects unknown): scores are optimistic." if by_image else ""
        )
        self.warning_label.setVisible(by_image)
        layout.addWidget(self.warning_label)

        m = ev.metrics if ev else None
        level = getattr(ev, "subject_level", None) if ev else None
        boot = getattr(getattr(ev, "intervals", None), "intervals", {}) or {}

        def with_ci(value: float, key: str) -> str:
            low, high = boot.get(key, (math.nan, math.nan))
            if not (math.isfinite(low) and math.isfinite(high)):
                return percent(value)
            return f"{percent(value)} ({percent(low)}–{percent(high)})"

        items = [
            (
                "Subjects right",
                f"{level.metrics.tp + level.metrics.tn} of {level.metrics.n}"
                if level is not None
                else "n/a",
            ),
            (
                "Balanced accuracy",
                with_ci(m.balanced_accuracy, "balanced_accuracy") if m else "n/a",
            ),
            ("Sensitivity (ALL)", with_ci(m.recall, "recall") if m else "n/a"),
            ("Specificity (HEM)", with_ci(m.specificity, "specificity") if m else "n/a"),
            ("Weighted F1", percent(getattr(m, "weighted_f1", math.nan)) if m else "n/a"),
            ("ROC AUC", number(m.roc_auc) if m else "n/a"),
            ("Threshold", number(ev.threshold) if ev else "n/a"),
            (
                "Uncertainty band",
                edges_text(*ev.uncertainty_band) if ev else "n/a",
            ),
            ("UNCERTAIN cells", f"{ev.uncertain} of {n}" if ev else "n/a"),
            ("Training time", duration(run.training_seconds)),
            ("Best epoch", f"{run.best_epoch} of {len(run.history)} ({run.stopped_because})"),
        ]
        grid = QGridLayout()
        grid.setHorizontalSpacing(16)
        grid.setVerticalSpacing(2)
        self.values: dict[str, str] = {}
        for i, (name, value) in enumerate(items):
            row, col = divmod(i, 2)
            grid.addWidget(QLabel(name + ":"), row, col * 2)
            grid.addWidget(QLabel(f"<b>{html.escape(value)}</b>"), row, col * 2 + 1)
            self.values[name] = value
        grid.setColumnStretch(1, 1)
        grid.setColumnStretch(3, 1)
        layout.addLayout(grid)

        buttons = QHBoxLayout()
        self.report_button = QPushButton("Open training report")
        self.report_button.setEnabled(bool(run.report_xlsx))
        self.folder_button = QPushButton("Open folder")
        self.curves_button = QPushButton("Show curves")
        self.register_button = QPushButton("Add to model list")
        for b in (self.report_button, self.folder_button, self.curves_button):
            buttons.addWidget(b)
        buttons.addStretch(1)
        buttons.addWidget(self.register_button)
        layout.addLayout(buttons)
        self.message = QLabel("")
        self.message.setWordWrap(True)
        self.message.setVisible(False)
        layout.addWidget(self.message)

    def model_file(self) -> Path | None:
        return Path(self.run.bundle_path) if self.run.bundle_path else None

    def set_message(self, text: str, error: bool = False) -> None:
        self.message.setText(text)
        self.message.setStyleSheet(status_style("error") if error else "")
        self.message.setVisible(bool(text))

    def set_registered(self, target: Path, text: str) -> None:
        """The model is in the model list: the button says so and cannot add it twice."""
        self.register_button.setEnabled(False)
        self.register_button.setText("In model list ✓")
        self.register_button.setToolTip(str(target))
        self.set_message(text)

    def text(self) -> str:
        """Everything the card says, as plain text (for tests and accessibility)."""
        parts = [
            self.title.text(),
            self.cancelled_label.text() if self.cancelled_label.isVisibleTo(self) else "",
            self.subtitle.text(),
            self.warning_label.text(),
            *(f"{k}: {v}" for k, v in self.values.items()),
            self.message.text(),
        ]
        plain = " | ".join(p for p in parts if p)
        return html.unescape(plain.replace("<b>", "").replace("</b>", ""))


class ResultsBox(QGroupBox):
    """The cards of the last training session and its comparison files.

    The box only asks; the page opens files, draws curves and adds models to the list.
    """

    open_requested = Signal(object)  # Path of a file or folder to open
    curves_requested = Signal(object)  # the BackboneRun whose curves to draw
    register_requested = Signal(object)  # Path of a model file to add to the model list

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("Results", parent)
        self.cards: list[MetricsCard] = []
        self._session: Any = None
        layout = QVBoxLayout(self)
        self.cards_widget = QWidget()
        self.cards_layout = QVBoxLayout(self.cards_widget)
        self.cards_layout.setContentsMargins(0, 0, 0, 0)
        self.cards_layout.addStretch(1)
        scroll = QScrollArea()
        scroll.setWidget(self.cards_widget)
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QFrame.NoFrame)
        scroll.setMinimumHeight(150)
        layout.addWidget(scroll, 1)
        comparison = QHBoxLayout()
        self.comparison_xlsx_button = QPushButton("Open comparison (Excel)")
        self.comparison_md_button = QPushButton("Open comparison (Markdown)")
        comparison.addWidget(self.comparison_xlsx_button)
        comparison.addWidget(self.comparison_md_button)
        comparison.addStretch(1)
        layout.addLayout(comparison)
        self.comparison_xlsx_button.clicked.connect(
            lambda: self._open_session_file("comparison_xlsx")
        )
        self.comparison_md_button.clicked.connect(lambda: self._open_session_file("comparison_md"))
        self.clear()

    def clear(self) -> None:
        for card in self.cards:
            self.cards_layout.removeWidget(card)
            card.deleteLater()
        self.cards = []
        self._session = None
        self.comparison_xlsx_button.setVisible(False)
        self.comparison_md_button.setVisible(False)
        self.setVisible(False)

    def show_session(self, session: Any) -> None:
        """One card per trained backbone of `session` (a training.run.TrainingSession)."""
        self.clear()
        self._session = session
        for run in session.runs:
            card = MetricsCard(run, self.cards_widget)
            card.report_button.clicked.connect(self._card_open_report)
            card.folder_button.clicked.connect(self._card_open_folder)
            card.curves_button.clicked.connect(self._card_show_curves)
            card.register_button.clicked.connect(self._card_register)
            self.cards_layout.insertWidget(self.cards_layout.count() - 1, card)
            self.cards.append(card)
        self.comparison_xlsx_button.setVisible(session.comparison_xlsx is not None)
        self.comparison_md_button.setVisible(session.comparison_md is not None)
        self.setVisible(bool(self.cards))

    def card_for_file(self, model_file: Path | None) -> MetricsCard | None:
        """The card of the run that saved `model_file`, if one is shown."""
        if model_file is None:
            return None
        return next((c for c in self.cards if c.model_file() == Path(model_file)), None)

    def _open_session_file(self, attribute: str) -> None:
        path = getattr(self._session, attribute, None) if self._session is not None else None
        if path:
            self.open_requested.emit(Path(path))

    def _card_of_sender(self) -> MetricsCard | None:
        sender = self.sender()
        for card in self.cards:
            buttons = (
                card.report_button,
                card.folder_button,
                card.curves_button,
                card.register_button,
            )
            if sender in buttons:
                return card
        return None

    @Slot()
    def _card_open_report(self) -> None:
        card = self._card_of_sender()
        if card is not None and card.run.report_xlsx:
            self.open_requested.emit(Path(card.run.report_xlsx))

    @Slot()
    def _card_open_folder(self) -> None:
        card = self._card_of_sender()
        if card is not None:
            self.open_requested.emit(Path(card.run.run_folder or Path(card.run.bundle_path).parent))

    @Slot()
    def _card_show_curves(self) -> None:
        card = self._card_of_sender()
        if card is not None:
            self.curves_requested.emit(card.run)

    @Slot()
    def _card_register(self) -> None:
        card = self._card_of_sender()
        if card is not None and card.model_file() is not None:
            self.register_requested.emit(card.model_file())
