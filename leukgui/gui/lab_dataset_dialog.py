"""Review ▸ Add reviewed cells to the lab data set: the dialog that adds this window's reviews.

The window hands over the cells of its analysis with their reviews
(`lab_dataset.reviewed_cells`); the person picks the data set folder (a shared drive works)
and says which samples belong to one patient, and the add runs in a worker thread (it re-reads
and hashes every image). Everything that decides what goes in lives in
`leukgui.core.lab_dataset`; this dialog only collects the choices and shows the outcome. It
never touches the review: the cells it holds are read-only copies of what was reviewed.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QCloseEvent, QFontDatabase
from PySide6.QtWidgets import (
    QAbstractItemView,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from leukgui.core.lab_dataset import (
    DATASET_CSV,
    DEFAULT_LOCK_TIMEOUT_S,
    AddSummary,
    DatasetError,
    LabDataset,
    ReviewedCell,
    candidates_by_sample,
    summary_lines,
)
from leukgui.core.text import display_path, display_text
from leukgui.gui.theme import status_style
from leukgui.gui.workers import Worker

__all__ = ["SUBJECT_COLUMN", "LabDatasetDialog", "count_text", "open_for_adding"]

SAMPLE_COLUMN, CELLS_COLUMN, SUBJECT_COLUMN = 0, 1, 2
INTRO = (
    "Copies every cell you reviewed or confirmed as ALL or HEM, as the model saw it, into the "
    "lab data set that training reads, with its label, subject, reviewer, time and the "
    "model's original call. Cells not reviewed and UNCLASSIFIABLE cells are left out; a cell "
    "already in the set is not added twice. Your review is not changed."
)
SUBJECT_HELP = (
    "Give samples from the same patient the same subject: training then never puts one "
    "patient's cells in both its training and its test part."
)


KEEP_PREFIX = "(from file names: "  # a sample whose cells keep the subjects their names carry
KEEP_ROLE = Qt.ItemDataRole.UserRole + 1


def _cells(n: int) -> str:
    return f"{n} reviewed cell{'s' * (n != 1)}"


def count_text(addable: int, not_reviewed: int, unclassifiable: int) -> str:
    """'3 reviewed cells will be added; 9 not reviewed and 1 UNCLASSIFIABLE are left out.'"""
    return (
        f"{_cells(addable)} will be added; {not_reviewed} not reviewed and {unclassifiable} "
        "UNCLASSIFIABLE are left out."
    )


def open_for_adding(folder: Path, default: Path) -> LabDataset:
    """The data set in `folder`, made there if it is new. Only the default folder's parent
    (the user folder) is created: a named folder on a disconnected drive must fail, not
    start an empty data set elsewhere (`LabDataset.create` says so)."""
    if folder == default:
        try:
            default.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DatasetError(
                f"cannot create {default.parent}: {exc}; nothing was changed"
            ) from exc
    return LabDataset.create(folder)


class LabDatasetDialog(QDialog):
    """Choose the data set folder and the subjects, add in the background, show the outcome.

    `added(folder, summary)` is emitted after a successful add (the window remembers the
    folder); `add_failed(message)` when the data set could not be used (nothing changed).
    """

    added = Signal(object, object)  # Path, AddSummary
    add_failed = Signal(str)

    def __init__(
        self,
        cells: list[ReviewedCell],
        folder: Path,
        default_folder: Path,
        parent: QWidget | None = None,
        *,
        timeout_s: float = DEFAULT_LOCK_TIMEOUT_S,
    ) -> None:
        super().__init__(parent)
        self.setWindowTitle("Add reviewed cells to the lab data set")
        self._cells = list(cells)
        self._default = default_folder
        self._timeout_s = timeout_s
        self.worker: Worker | None = None
        self.summary: AddSummary | None = None
        samples = candidates_by_sample(self._cells)
        layout = QVBoxLayout(self)

        intro = QLabel(INTRO)
        intro.setWordWrap(True)
        layout.addWidget(intro)

        layout.addSpacing(6)
        layout.addWidget(QLabel("<b>Data set folder</b>"))
        row = QHBoxLayout()
        self.folder_edit = QLineEdit(str(folder))
        self.folder_edit.setToolTip("The folder that holds dataset.csv, history.csv and cells/")
        self.browse_button = QPushButton("&Browse…")
        self.browse_button.clicked.connect(self.choose_folder)
        self.default_button = QPushButton("&Default")
        self.default_button.setToolTip(f"Use {default_folder}")
        self.default_button.clicked.connect(lambda: self.folder_edit.setText(str(self._default)))
        row.addWidget(self.folder_edit, 1)
        row.addWidget(self.browse_button)
        row.addWidget(self.default_button)
        layout.addLayout(row)
        folder_help = QLabel(
            "A folder on a shared drive works: people adding at the same time wait for each "
            "other. A new folder is made only where its parent folder exists."
        )
        folder_help.setWordWrap(True)
        folder_help.setStyleSheet(status_style("muted"))
        layout.addWidget(folder_help)

        layout.addSpacing(6)
        layout.addWidget(QLabel("<b>Samples and patients</b>"))
        self.table = QTableWidget(len(samples), 3)
        self.table.setHorizontalHeaderLabels(["Sample", "Cells to add", "Patient / subject"])
        self.table.verticalHeader().setVisible(False)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setEditTriggers(
            QAbstractItemView.EditTrigger.DoubleClicked
            | QAbstractItemView.EditTrigger.SelectedClicked
            | QAbstractItemView.EditTrigger.EditKeyPressed
            | QAbstractItemView.EditTrigger.AnyKeyPressed
        )
        fixed = Qt.ItemFlag.ItemIsSelectable | Qt.ItemFlag.ItemIsEnabled
        for r, s in enumerate(samples):
            name = QTableWidgetItem(display_text(s.sample))
            name.setFlags(fixed)
            name.setData(Qt.ItemDataRole.UserRole, s.sample)
            name.setToolTip(display_text(s.sample))
            count = QTableWidgetItem(str(s.addable))
            count.setFlags(fixed)
            count.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
            count.setToolTip(
                f"{s.addable} reviewed ALL/HEM, {s.not_reviewed} not reviewed, "
                f"{s.unclassifiable} UNCLASSIFIABLE"
            )
            if len(s.subjects) > 1:  # C-NMC names: several patients in one sample
                # Shown, not blank: a blank cell reads as "no patient", and typing one name
                # over it would merge these patients (ALL and HEM alike) into one.
                names = f"{', '.join(s.subjects[:3])}{', …' * (len(s.subjects) > 3)}"
                subject = QTableWidgetItem(f"{KEEP_PREFIX}{names})")
                subject.setData(KEEP_ROLE, subject.text())
                subject.setForeground(self.palette().placeholderText())
                subject.setToolTip(
                    f"The file names name {len(s.subjects)} subjects "
                    f"({', '.join(s.subjects[:5])}{', …' * (len(s.subjects) > 5)}); each cell "
                    "keeps its own. Type a name to put every cell of this sample under it."
                )
            else:
                subject = QTableWidgetItem(s.subjects[0] if s.subjects else s.sample)
                subject.setToolTip("Double-click or type to change")
            self.table.setItem(r, SAMPLE_COLUMN, name)
            self.table.setItem(r, CELLS_COLUMN, count)
            self.table.setItem(r, SUBJECT_COLUMN, subject)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(SAMPLE_COLUMN, QHeaderView.ResizeMode.Stretch)
        header.setSectionResizeMode(CELLS_COLUMN, QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(SUBJECT_COLUMN, QHeaderView.ResizeMode.Stretch)
        rows_shown = min(max(len(samples), 3), 8)
        self.table.setMinimumHeight(
            header.sizeHint().height()
            + rows_shown * self.table.verticalHeader().defaultSectionSize()
            + 2 * self.table.frameWidth()
        )
        layout.addWidget(self.table, 1)
        subject_help = QLabel(SUBJECT_HELP)
        subject_help.setWordWrap(True)
        subject_help.setStyleSheet(status_style("muted"))
        layout.addWidget(subject_help)

        layout.addSpacing(6)
        totals = [sum(getattr(s, k) for s in samples) for k in ("addable", "not_reviewed")]
        unclassifiable = sum(s.unclassifiable for s in samples)
        self.addable = totals[0]
        self.count_label = QLabel(count_text(totals[0], totals[1], unclassifiable))
        self.count_label.setWordWrap(True)
        layout.addWidget(self.count_label)
        self.progress = QProgressBar()
        self.progress.setRange(0, 0)  # busy: the add reports no steps
        self.progress.setTextVisible(False)
        self.progress.setVisible(False)
        layout.addWidget(self.progress)
        self.message = QLabel()
        self.message.setWordWrap(True)
        self.message.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.message.setVisible(False)
        layout.addWidget(self.message)
        self.details = QPlainTextEdit()
        self.details.setReadOnly(True)
        self.details.setLineWrapMode(QPlainTextEdit.LineWrapMode.WidgetWidth)  # whole reasons
        self.details.setFont(QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont))
        self.details.setMinimumHeight(8 * self.details.fontMetrics().lineSpacing())
        self.details.setVisible(False)
        layout.addWidget(self.details, 1)

        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Cancel)
        self.add_button = self.buttons.addButton("&Add", QDialogButtonBox.ButtonRole.ActionRole)
        self.add_button.setDefault(True)
        self.add_button.setEnabled(self.addable > 0)
        self.add_button.clicked.connect(self.start_add)
        self.close_button = self.buttons.button(QDialogButtonBox.StandardButton.Cancel)
        self.buttons.rejected.connect(self.reject)
        layout.addWidget(self.buttons)
        self.resize(680, self.sizeHint().height())

    # ------------------------------------------------------------------ choices

    def folder(self) -> Path | None:
        """The data set folder typed or chosen (None when the field is empty)."""
        text = self.folder_edit.text().strip()
        return Path(text).expanduser() if text else None

    def subjects(self) -> dict[str, str]:
        """Sample -> subject for every sample given one (an empty cell: the cells keep the
        subject the analysis knew, else their sample)."""
        chosen = {}
        for r in range(self.table.rowCount()):
            sample = self.table.item(r, SAMPLE_COLUMN).data(Qt.ItemDataRole.UserRole)
            item = self.table.item(r, SUBJECT_COLUMN)
            text = item.text().strip()
            if text and text != item.data(KEEP_ROLE):  # the shown file-name subjects: keep
                chosen[sample] = text
        return chosen

    def set_subject(self, sample: str, subject: str) -> None:
        """Type a subject for `sample` (what a person does in the table)."""
        for r in range(self.table.rowCount()):
            if self.table.item(r, SAMPLE_COLUMN).data(Qt.ItemDataRole.UserRole) == sample:
                self.table.item(r, SUBJECT_COLUMN).setText(subject)
                return
        raise KeyError(sample)

    def choose_folder(self) -> None:
        start = self.folder() or self._default
        while not start.is_dir() and start != start.parent:
            start = start.parent
        chosen = QFileDialog.getExistingDirectory(self, "Lab data set folder", str(start))
        if chosen:
            self.folder_edit.setText(chosen)

    # ------------------------------------------------------------------ the add

    def running(self) -> bool:
        return self.worker is not None and self.worker.isRunning()

    def start_add(self) -> Worker | None:
        """Add the reviewed cells in a worker thread; the outcome is shown when it ends."""
        if self.running():
            return None
        folder = self.folder()
        if folder is None:
            self._show("error", "Choose the data set folder first.")
            return None
        cells, subjects, default, timeout_s = (
            self._cells,
            self.subjects(),
            self._default,
            self._timeout_s,
        )

        def add(worker: Worker) -> AddSummary:
            return open_for_adding(folder, default).add_reviewed(
                cells, subjects, timeout_s=timeout_s
            )

        self._set_busy(True)
        self._show(
            "info",
            f"Adding to {display_path(folder)}: reading each reviewed image and checking it is "
            "the one analysed…",
        )
        self.details.setVisible(False)
        worker = Worker(add, self)
        worker.succeeded.connect(lambda summary: self._added(folder, summary))
        worker.failed.connect(self._failed)
        self.worker = worker
        worker.start()
        return worker

    def _set_busy(self, busy: bool) -> None:
        for widget in (self.folder_edit, self.browse_button, self.default_button, self.table):
            widget.setEnabled(not busy)
        self.add_button.setEnabled(not busy and self.addable > 0)
        self.close_button.setEnabled(not busy)
        self.progress.setVisible(busy)

    def _added(self, folder: Path, summary: AddSummary) -> None:
        self.worker = None
        self._set_busy(False)
        self.summary = summary
        problems = sum(1 for s in summary.skipped if s.problem)
        by_rule = len(summary.skipped) - problems
        text = (
            f"Lab data set {display_path(folder)}: {len(summary.added)} added, "
            f"{len(summary.already_present)} already present, {len(summary.relabelled)} "
            f"relabelled, {problems} skipped"
        )
        text += " (reviewed, but not added: see below)" if problems else ""
        text += f"; {by_rule} left out (not reviewed or UNCLASSIFIABLE)." if by_rule else "."
        if summary.changed:
            text += f" Training reads {display_path(folder / DATASET_CSV)}."
        self._show("warning" if problems else "ok", text)
        self.details.setPlainText("\n".join(display_text(line) for line in summary_lines(summary)))
        self.details.setVisible(True)
        self.count_label.setVisible(False)  # said before the add; the outcome replaces it
        self.resize(self.width(), max(self.height(), self.sizeHint().height()))
        self.add_button.setEnabled(False)  # done: adding again would only say "already present"
        self.close_button.setText("Close")
        self.added.emit(folder, summary)

    def _failed(self, message: str, details: str) -> None:
        self.worker = None
        self._set_busy(False)
        self._show("error", f"Nothing was added. {message[:1].upper()}{message[1:]}")
        self.add_failed.emit(message)

    def _show(self, kind: str, text: str) -> None:
        colour = {"error": "error", "warning": "warning", "ok": "ok"}.get(kind)
        self.message.setStyleSheet(status_style(colour) if colour else "")
        self.message.setText(text)
        self.message.setVisible(True)

    # ------------------------------------------------------------------ closing

    def wait_idle(self, wait_ms: int = 60000) -> bool:
        """Wait for a running add (Qt aborts if a running thread is destroyed)."""
        return self.worker is None or self.worker.wait(wait_ms)

    def done(self, result: int) -> None:  # noqa: D102 - QDialog override
        if self.running():  # an add in flight finishes first: it takes seconds, not minutes
            return
        super().done(result)

    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802 - Qt override
        if self.running():
            event.ignore()
            return
        super().closeEvent(event)
