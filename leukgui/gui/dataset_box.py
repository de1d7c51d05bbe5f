"""The Training page's "Labelled cells" box: choose a folder, see what training would read.

The reading itself is `training.datasets.preview_dataset`, run in a worker thread; this box
only shows its outcome: the layout, counts per class and subject, a table of subjects and
the files that cannot be used, each with its reason.
"""

from __future__ import annotations

import html
import os
from pathlib import Path

from PySide6.QtCore import Qt, Signal, Slot
from PySide6.QtWidgets import (
    QAbstractItemView,
    QFileDialog,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QListWidget,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from leukgui.core.results import ALL, HEM
from leukgui.gui.theme import status_style
from leukgui.gui.workers import Worker, WorkerGroup
from training.datasets import DatasetPreview, SubjectRule, preview_dataset

__all__ = ["DatasetBox", "hint_label"]


def hint_label(text: str) -> QLabel:
    """A wrapped, greyed explanation under a setting."""
    label = QLabel(text)
    label.setWordWrap(True)
    label.setStyleSheet("color: palette(placeholder-text);")
    return label


class DatasetBox(QGroupBox):
    """Folder field plus preview; scans in the background whenever the folder changes."""

    changed = Signal()  # the folder or what is known about it changed
    scan_finished = Signal(object)  # DatasetPreview of the folder now shown
    error = Signal(str, str, str)  # title, message, details: for the page's error dialog

    def __init__(self, title: str = "Labelled cells", parent: QWidget | None = None) -> None:
        super().__init__(title, parent)
        self._preview: DatasetPreview | None = None
        self._subjects: SubjectRule | None = None  # where subjects come from, when given
        self._failure = ""  # why the last scan crashed: Start must say so, not "Reading…"
        self._worker: Worker | None = None  # the scan whose result is still wanted
        self._workers = WorkerGroup(self)
        layout = QVBoxLayout(self)
        layout.setSpacing(6)
        row = QHBoxLayout()
        self.folder_edit = QLineEdit()
        self.folder_edit.setPlaceholderText("Folder of labelled cells — or drop one here")
        self.folder_edit.setClearButtonEnabled(True)
        self.browse_button = QPushButton("Browse…")
        row.addWidget(self.folder_edit, 1)
        row.addWidget(self.browse_button)
        layout.addLayout(row)
        layout.addWidget(
            hint_label(
                "Your lab data set folder (Review ▸ Add reviewed cells…), C-NMC training_data "
                "(fold_N/all|hem), class folders all/ and hem/, ALL-IDB2, or a CSV with "
                "path,label[,subject]."
            )
        )
        self.preview_label = QLabel("")
        self.preview_label.setWordWrap(True)
        self.preview_label.setTextInteractionFlags(Qt.TextSelectableByMouse)
        self.preview_label.setVisible(False)
        layout.addWidget(self.preview_label)
        self.scan_status = QLabel("")
        self.scan_status.setStyleSheet("color: palette(placeholder-text);")
        self.scan_status.setVisible(False)
        layout.addWidget(self.scan_status)
        self.subject_table = QTableWidget(0, 3)
        self.subject_table.setHorizontalHeaderLabels(["Subject", "Class", "Cells"])
        self.subject_table.verticalHeader().setVisible(False)
        self.subject_table.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.subject_table.setSelectionMode(QAbstractItemView.NoSelection)
        header = self.subject_table.horizontalHeader()
        header.setSectionResizeMode(0, QHeaderView.Stretch)
        header.setSectionResizeMode(1, QHeaderView.ResizeToContents)
        header.setSectionResizeMode(2, QHeaderView.ResizeToContents)
        self.subject_table.verticalHeader().setDefaultSectionSize(20)
        self.subject_table.setMaximumHeight(160)
        self.subject_table.setVisible(False)
        layout.addWidget(self.subject_table)
        self.unreadable_toggle = QToolButton()
        self.unreadable_toggle.setCheckable(True)
        self.unreadable_toggle.setToolButtonStyle(Qt.ToolButtonTextBesideIcon)
        self.unreadable_toggle.setArrowType(Qt.RightArrow)
        self.unreadable_toggle.setAutoRaise(True)
        self.unreadable_toggle.setVisible(False)
        layout.addWidget(self.unreadable_toggle)
        self.unreadable_list = QListWidget()
        self.unreadable_list.setMaximumHeight(140)
        self.unreadable_list.setVisible(False)
        layout.addWidget(self.unreadable_list)

        self.browse_button.clicked.connect(self._browse)
        self.folder_edit.editingFinished.connect(self._edited)
        self.unreadable_toggle.toggled.connect(self._toggle_unreadable)

    # ------------------------------------------------------------------ state
    def folder(self) -> Path | None:
        text = self.folder_edit.text().strip()
        return Path(text) if text else None

    def preview(self) -> DatasetPreview | None:
        """The finished scan of the folder shown, or None while there is none."""
        return self._preview

    def problem(self) -> str:
        """Why training cannot start on the chosen data yet, or "" when it can."""
        if self.folder() is None:
            return "Choose a folder of labelled cells."
        if self._failure:
            return f"Could not read the data set: {self._failure}"
        if self._preview is None:
            return "Reading the data set…"
        return self._preview.problem()

    def set_folder(self, path: str | os.PathLike[str]) -> None:
        """Show `path` as the data set and scan it in the background."""
        self.folder_edit.setText(str(path))
        self._start_scan(Path(path))

    def set_subject_rule(self, rule: SubjectRule | None) -> None:
        """Read subjects by `rule` from now on (None: as the layout says); rescans if changed."""
        if rule == self._subjects:
            return
        self._subjects = rule
        folder = self.folder()
        if folder is not None:
            self._start_scan(folder)

    def subject_rule(self) -> SubjectRule | None:
        return self._subjects

    def shutdown(self, wait_ms: int) -> bool:
        """Stop reading and wait for the scan threads; True when none is left."""
        self._worker = None
        self._workers.cancel_all()
        return self._workers.wait(wait_ms)

    # ------------------------------------------------------------------ scanning
    def _browse(self) -> None:
        start = self.folder_edit.text().strip() or str(Path.home())
        folder = QFileDialog.getExistingDirectory(self, "Folder of labelled cells", start)
        if folder:
            self.set_folder(folder)

    def _edited(self) -> None:
        path = self.folder()
        current = self._preview.path if self._preview else None
        if path is None:
            if self._worker is not None:
                self._worker.cancel()  # whatever is still being read is no longer wanted
                self._worker = None
            self._preview = None
            self._failure = ""
            self._show(None)
            self.scan_status.setVisible(False)
            self.changed.emit()
        elif path != current:
            self._start_scan(path)

    def _start_scan(self, path: Path) -> None:
        self._preview = None
        self._failure = ""
        self.preview_label.setVisible(True)
        self.preview_label.setStyleSheet("")
        self.preview_label.setText(f"Reading {html.escape(str(path))}…")
        self.subject_table.setVisible(False)
        self.unreadable_toggle.setVisible(False)
        self.unreadable_list.setVisible(False)
        if self._worker is not None:
            self._worker.cancel()  # its result would be stale anyway

        subjects = self._subjects

        def scan(worker: Worker) -> DatasetPreview:
            return preview_dataset(
                path,
                subjects=subjects,
                listed=worker.report,
                progress=lambda done, total: worker.report((done, total)),
                cancel=worker.cancel_token,
            )

        worker = Worker(scan, self)
        worker.progressed.connect(self._on_progress)
        worker.succeeded.connect(self._on_done)
        worker.failed.connect(self._on_failed)
        self._worker = worker
        self._workers.start(worker)
        self.changed.emit()

    @Slot(object)
    def _on_progress(self, value: object) -> None:
        if self.sender() is not self._worker:
            return  # a scan the user has moved on from
        if isinstance(value, DatasetPreview):
            self._show(value)
            self.scan_status.setText(f"Checking {len(value.scan.records)} images…")
            self.scan_status.setVisible(True)
        elif isinstance(value, tuple):
            done, total = value
            self.scan_status.setText(f"Checking images: {done:,} of {total:,}…")

    @Slot(object)
    def _on_done(self, preview: DatasetPreview) -> None:
        if self.sender() is not self._worker:
            return  # the user has chosen another folder meanwhile
        self._worker = None
        self.scan_status.setVisible(False)
        self._preview = preview
        self._show(preview)
        self.changed.emit()
        self.scan_finished.emit(preview)

    @Slot(str, str)
    def _on_failed(self, message: str, details: str) -> None:
        if self.sender() is not self._worker:
            return
        self._worker = None
        self._failure = message
        self.scan_status.setVisible(False)
        self.preview_label.setText(f"Could not read the data set: {html.escape(message)}")
        self.preview_label.setStyleSheet(status_style("error"))
        self.changed.emit()
        self.error.emit("Could not read the data set", message, details)

    # ------------------------------------------------------------------ showing
    def _toggle_unreadable(self, on: bool) -> None:
        self.unreadable_list.setVisible(on)
        self.unreadable_toggle.setArrowType(Qt.DownArrow if on else Qt.RightArrow)

    def _show(self, preview: DatasetPreview | None) -> None:
        table = self.subject_table
        if preview is None or preview.error is not None:
            self.preview_label.setVisible(preview is not None)
            if preview is not None:
                self.preview_label.setStyleSheet(status_style("error"))
                self.preview_label.setText(
                    "<b>This is not a labelled data set LeukGUI recognizes.</b><br>"
                    + html.escape(preview.error)
                )
            table.setVisible(False)
            self.unreadable_toggle.setVisible(False)
            self.unreadable_list.setVisible(False)
            return
        scan = preview.scan
        s = scan.summary()
        cpc, spc = s["cells_per_class"], s["subjects_per_class"]
        lines = [
            f"<b>Layout:</b> {html.escape(preview.layout)}",
            f"<b>{s['cells']} cells</b>: ALL {cpc[ALL]} · HEM {cpc[HEM]}",
            f"<b>{s['subjects']} subjects</b>: ALL {spc[ALL]} · HEM {spc[HEM]}"
            if not scan.image_subjects
            else f"<b>Subjects unknown</b> for {scan.image_subjects} cells (each image counts "
            "as its own)",
        ]
        if s.get("cells_per_fold"):
            folds = " · ".join(f"{k} {v}" for k, v in s["cells_per_fold"].items())
            lines.append(f"<b>Folds:</b> {html.escape(folds)}")
        lines += [
            f"<span style='{status_style('error')}'>{html.escape(w)}</span>"
            for w in preview.warnings()
        ]
        self.preview_label.setVisible(True)
        self.preview_label.setStyleSheet("")
        self.preview_label.setText("<br>".join(lines))

        table.setRowCount(len(preview.subjects))
        for row, (subject, label, cells) in enumerate(preview.subjects):
            table.setItem(row, 0, QTableWidgetItem(subject))
            table.setItem(row, 1, QTableWidgetItem(label))
            count = QTableWidgetItem(str(cells))
            count.setTextAlignment(Qt.AlignRight | Qt.AlignVCenter)
            table.setItem(row, 2, count)
        table.setVisible(bool(preview.subjects))

        self.unreadable_list.clear()
        for path, reason in scan.unreadable:
            self.unreadable_list.addItem(f"{Path(path).name} — {reason}  ({path})")
        n_bad = len(scan.unreadable)
        self.unreadable_toggle.setText(
            f"{n_bad} file{'s' if n_bad != 1 else ''} cannot be used (show reasons)"
        )
        self.unreadable_toggle.setVisible(n_bad > 0)
        self.unreadable_list.setVisible(n_bad > 0 and self.unreadable_toggle.isChecked())
