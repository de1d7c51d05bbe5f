"""The training page: pick labelled cells, train one or more backbones, add the result.

The page only composes its parts and routes between them:
- `training_form.TrainingForm`: the settings, with `dataset_box.DatasetBox`, which previews
  the data set through `training.datasets.preview_dataset` in a worker thread;
- `training_run.RunControl` and `TrainingCurves`: start and cancel `training.run.
  train_session` (the function `leukgui train` calls), its progress and live curves;
- `metrics_card.ResultsBox`: one card of held-out scores per trained backbone;
- `parent_comparison_view.ParentComparisonView`: after a fine-tune ("Start from" a model),
  the parent against the new model on the same test cells. "Use this model…" there opens
  the adoption dialog; only its OK adopts (`model_registry.adopt`), never training itself.
"Add to model list" installs a model file with `leukgui.core.bundle.install_bundle` (one
conflict rule for the whole app) and emits `bundle_registered`, so the main window's model
picker can refresh.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, QUrl, Signal, Slot
from PySide6.QtGui import QDesktopServices, QDragEnterEvent, QDropEvent, QShowEvent
from PySide6.QtWidgets import (
    QFrame,
    QHBoxLayout,
    QMessageBox,
    QPlainTextEdit,
    QScrollArea,
    QSplitter,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from leukgui.core.bundle import CONFLICT, COPIED, InstallOutcome, install_bundle
from leukgui.core.paths import user_models_dir
from leukgui.gui.metrics_card import ResultsBox
from leukgui.gui.parent_comparison_view import ParentComparisonView
from leukgui.gui.training_form import TrainingForm
from leukgui.gui.training_run import RunControl, TrainingCurves
from leukgui.gui.workers import Worker, WorkerGroup
from training.datasets import DatasetPreview

__all__ = ["TrainingPage"]


def _is_inside(path: Path, folder: Path) -> bool:
    try:
        return Path(path).resolve().parent == Path(folder).resolve()
    except OSError:
        return False


class TrainingPage(QWidget):
    """Drives `training.run.train_session` from the GUI (see the module docstring)."""

    training_started = Signal()
    training_finished = Signal(object)  # TrainingSession, or None when training failed
    bundle_registered = Signal(object)  # Path of a model file now in the user models folder
    scan_finished = Signal(object)  # DatasetPreview of the data folder now shown
    model_adopted = Signal(object)  # Path of a model someone adopted from "Parent vs new"

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setAcceptDrops(True)
        self.session: Any = None  # the last TrainingSession
        self._started_since_scan = False  # a run's own messages then own the status line
        self._workers = WorkerGroup(self)  # model files being added to the model list
        self.form = TrainingForm()
        self.curves = TrainingCurves()
        self.log_view = QPlainTextEdit()
        self.log_view.setReadOnly(True)
        self.log_view.setMaximumBlockCount(2000)
        self.log_view.setPlaceholderText("Training log")
        self.log_view.setMinimumHeight(50)
        self.run_control = RunControl(self.curves, self.log_view)
        self.results = ResultsBox()
        self.parent_view = ParentComparisonView()
        self._parent_label = ""  # the model the running or last fine-tune started from
        self.adopt_dialog: Any = None
        self._build_ui()

        self.form.changed.connect(self._refresh_start)
        self.form.changed.connect(self._on_form_changed)
        self.form.dataset.scan_finished.connect(self._on_scan_finished)
        self.form.dataset.error.connect(self._on_error)
        self.run_control.start_clicked.connect(self.start_training)
        self.run_control.started.connect(self._on_started)
        self.run_control.finished.connect(self._on_finished)
        self.run_control.error.connect(self._on_error)
        self.results.open_requested.connect(self._on_open_requested)
        self.results.curves_requested.connect(
            lambda run: self.curves.show_history(run.history, run.backbone)
        )
        self.results.register_requested.connect(self.add_to_model_list)
        self.parent_view.adopt_requested.connect(self.open_adoption)
        self._refresh_start()

    def _build_ui(self) -> None:
        splitter = QSplitter(Qt.Horizontal, self)
        outer = QHBoxLayout(self)
        outer.setContentsMargins(6, 6, 6, 6)
        outer.addWidget(splitter)

        # Left: settings, in a scroll area so small screens still reach everything.
        scroll = QScrollArea()
        scroll.setWidget(self.form)
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QFrame.NoFrame)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarAlwaysOff)
        scroll.setMinimumWidth(400)
        splitter.addWidget(scroll)

        # Right: run control; curves, results and log share the height through a splitter.
        right_widget = QWidget()
        right = QVBoxLayout(right_widget)
        right.setContentsMargins(8, 4, 4, 4)
        right.addWidget(self.run_control)
        panes = QSplitter(Qt.Vertical)
        panes.setChildrenCollapsible(False)
        self.result_tabs = QTabWidget()
        self.result_tabs.setDocumentMode(True)
        self.result_tabs.addTab(self.curves, "Training curves")
        self.result_tabs.addTab(self.parent_view, "Parent vs new")
        self.result_tabs.setTabVisible(1, False)  # after a fine-tune only
        panes.addWidget(self.result_tabs)
        panes.addWidget(self.results)
        panes.addWidget(self.log_view)
        panes.setStretchFactor(0, 3)
        panes.setStretchFactor(1, 2)
        panes.setStretchFactor(2, 0)
        panes.setSizes([420, 230, 90])
        right.addWidget(panes, 1)
        splitter.addWidget(right_widget)
        splitter.setStretchFactor(0, 0)
        splitter.setStretchFactor(1, 1)
        splitter.setSizes([430, 800])

    # ------------------------------------------------------------------ settings
    def state(self) -> dict[str, Any]:
        """The settings worth keeping between sessions (the main window stores them)."""
        return {**self.form.state(), "log_y": self.curves.log_y_check.isChecked()}

    def restore_state(self, state: dict[str, Any]) -> None:
        """Apply saved settings; values of the wrong type or range are ignored, not fatal."""
        if not isinstance(state, dict):
            return
        if isinstance(state.get("log_y"), bool):
            self.curves.log_y_check.setChecked(state["log_y"])
        self.form.restore_state(state)

    def set_data_folder(self, path: str | os.PathLike[str]) -> None:
        """Show `path` as the data set and scan it in the background."""
        self.form.dataset.set_folder(path)

    # ------------------------------------------------------------------ data
    @Slot(object)
    def _on_scan_finished(self, preview: DatasetPreview) -> None:
        if not self.run_control.is_running():
            self._started_since_scan = False
            self.run_control.set_status(self._data_status(preview))
        self.scan_finished.emit(preview)

    @Slot()
    def _on_form_changed(self) -> None:
        """A setting changed before any run: the data line follows (e.g. ready after the
        split by image was allowed). A finished or failed run's message is left alone."""
        preview = self.form.dataset.preview()
        if preview is not None and not self._started_since_scan:
            self.run_control.set_status(self._data_status(preview))

    def _data_status(self, preview: DatasetPreview | None) -> str:
        """The status line about the data: ready, or read but not usable yet (and why)."""
        if preview is None or preview.scan is None or not preview.scan.records:
            return "Choose a folder of labelled cells to begin."
        scan = preview.scan
        s = scan.summary()
        subjects = (
            f"{s['subjects']} subjects"
            if not scan.image_subjects
            else f"{scan.image_subjects} images without a known subject"
        )
        counts = f"{s['cells']} cells of {subjects}"
        if self.form.split_problem():  # "ready" only if it can be split
            return f"Data set read: {counts}. Training cannot use it yet (see by Start)."
        return f"Data set ready: {counts}."

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:  # noqa: N802 - Qt API
        if self._dropped_path(event) is not None and not self.run_control.is_running():
            event.acceptProposedAction()
        else:
            event.ignore()

    def dropEvent(self, event: QDropEvent) -> None:  # noqa: N802 - Qt API
        path = self._dropped_path(event)
        if path is not None and not self.run_control.is_running():
            event.acceptProposedAction()
            self.set_data_folder(path)

    @staticmethod
    def _dropped_path(event: QDragEnterEvent | QDropEvent) -> Path | None:
        mime = event.mimeData()
        if not mime.hasUrls():
            return None
        for url in mime.urls():
            if url.isLocalFile():
                path = Path(url.toLocalFile())
                if path.is_dir() or path.suffix.lower() == ".csv":
                    return path
        return None

    # ------------------------------------------------------------------ training
    def _refresh_start(self) -> None:
        running = self.run_control.is_running()
        self.run_control.set_problem("" if running else self.form.problem())
        self.form.setEnabled(not running)

    @Slot()
    def start_training(self) -> None:
        """Train every chosen backbone on the scanned data (in a worker thread)."""
        if self.run_control.is_running():
            return
        self.form.check_weights()  # a weights file may have appeared or gone
        problem = self.form.problem()
        if problem:
            self.run_control.set_status(problem)
            return
        try:
            config = self.form.make_config()
        except ValueError as exc:
            self.run_control.set_status(f"Cannot start: {exc}", error=True)
            return
        preview = self.form.dataset.preview()
        self.session = None
        self._started_since_scan = True
        self.results.clear()
        parent = self.form.parent_info() if config.init_from else None
        self._parent_label = f"{parent.name} v{parent.version}" if parent is not None else ""
        self.parent_view.clear()
        self.result_tabs.setTabVisible(1, False)
        self.result_tabs.setCurrentIndex(0)
        self.run_control.start(
            preview.scan,
            self.form.selected_backbones(),
            config,
            self.form.output_folder(),
            self.form.split_options(),
            source=str(Path(preview.path).absolute()),
            stains=self.form.stains(),
        )

    @Slot()
    def _on_started(self) -> None:
        self._refresh_start()
        self.training_started.emit()

    @Slot(object)
    def _on_finished(self, session: Any) -> None:
        registered = []
        if session is not None:
            self.session = session
            self.results.show_session(session)
            for card in self.results.cards:
                model_file = card.model_file()
                if model_file is not None and _is_inside(model_file, user_models_dir()):
                    card.set_registered(
                        model_file, "Saved in your models folder: in the model list."
                    )
                    registered.append(model_file)
        if session is not None and self._parent_label:
            self._show_parent_comparison(session)
        self._refresh_start()
        for path in registered:
            self.bundle_registered.emit(path)
        if registered:
            self.form.refresh_models()  # a new model can be the next one to start from
        self.training_finished.emit(session)

    def _show_parent_comparison(self, session: Any) -> None:
        """A fine-tune's end: the parent against the new model, or why there is none."""
        comparison = getattr(session, "parent_comparison", None)
        runs = list(session.runs)
        if comparison is not None:
            bundle = next((r.bundle_path for r in runs if r.bundle_path), None)
            self.parent_view.show_comparison(comparison, bundle)
            self._offer_adoption(Path(bundle) if bundle else None)
        elif not runs:
            return  # nothing was saved: the status line says why
        else:
            failed = [w for w in session.warnings if "comparison with the parent" in w]
            if failed:
                reason = failed[-1]
            elif not session.split.test:
                reason = (
                    "there is no test part (Test 0 %), so the two models could not be scored "
                    "on the same held-out cells. Train again with a test part."
                )
            else:
                reason = "it was not made (see the training log)."
            self.parent_view.show_missing(self._parent_label, reason)
        self.result_tabs.setTabVisible(1, True)
        self.result_tabs.setCurrentIndex(1)
        status = self.run_control.status_label.text()
        self.run_control.set_status(
            f"{status} The parent and the new model are compared under “Parent vs new”; the "
            "model in use is unchanged."
        )

    def _offer_adoption(self, bundle: Path | None) -> None:
        """Offer "Use this model…" for a new model in the model list; elsewhere it must be
        added first (the picker only lists the models folder)."""
        why = ""
        if bundle is not None and not _is_inside(bundle, user_models_dir()):
            why = "Add the new model to the model list first (“Add to model list” below)."
        self.parent_view.set_new_bundle(bundle, why)

    @Slot(object)
    def open_adoption(self, path: Path) -> Any:
        """ "Use this model…": the adoption dialog for the new model (its lineage and the
        comparison); only its OK records the adoption, with the reviewer's name."""
        from leukgui.core.bundle import BundleError, BundleInfo, read_manifest
        from leukgui.gui.model_card import AdoptionDialog

        try:
            info = BundleInfo(path=Path(path), manifest=read_manifest(path), source="user")
        except (BundleError, OSError) as exc:
            self.run_control.set_status(f"Cannot offer {Path(path).name}: {exc}", error=True)
            return None
        prefs = getattr(self.window(), "prefs", None)
        dialog = AdoptionDialog(info, str(getattr(prefs, "reviewer", "") or ""), self)
        dialog.accepted.connect(lambda: self._adopt(dialog))
        self.adopt_dialog = dialog
        dialog.open()
        return dialog

    def _adopt(self, dialog: Any) -> None:
        from leukgui.core.model_registry import RegistryError, adopt

        try:
            adoption = adopt(dialog.info, dialog.reviewer())
        except RegistryError as exc:
            self.run_control.set_status(f"Model not adopted: {exc}", error=True)
            return
        text = f"{adoption.label} adopted by {adoption.who}: the model in use for new analyses."
        self.run_control.set_status(text)
        self.parent_view.adoption_label.setText(text)
        self.form.refresh_models()
        self.model_adopted.emit(Path(adoption.path))

    def shutdown(self, wait_ms: int = 30000) -> bool:
        """Cancel training and scans and wait for every thread (call before the window closes)."""
        stopped = [
            self.run_control.shutdown(wait_ms),
            self.form.dataset.shutdown(wait_ms),
            self._workers.wait(wait_ms),
        ]
        return all(stopped)

    # ------------------------------------------------------------------ model list
    def add_to_model_list(self, model_file: Path) -> None:
        """Make a trained model available for analysis: verify it, copy it to the models folder."""
        model_file = Path(model_file)
        card = self.results.card_for_file(model_file)
        folder = user_models_dir()
        if _is_inside(model_file, folder):
            if card is not None:
                card.set_registered(model_file, "Already in your models folder.")
            self.bundle_registered.emit(model_file)
            return
        if card is not None:
            card.register_button.setEnabled(False)
            card.set_message("Checking the model file and copying it to your models folder…")
        worker = Worker(lambda _worker: install_bundle(model_file, folder), self)
        worker.succeeded.connect(self._on_installed)
        worker.failed.connect(self._on_install_failed)
        worker.setObjectName(str(model_file))
        self._workers.start(worker)

    @Slot(object)
    def _on_installed(self, outcome: InstallOutcome) -> None:
        card = self.results.card_for_file(outcome.source)
        if outcome.status == CONFLICT:
            text = f"Not added to the model list: {outcome.reason}."
            if card is not None:
                card.register_button.setEnabled(True)
                card.set_message(text, error=True)
            self.run_control.set_status(text)
            return
        if outcome.status == COPIED:
            text = f"Added to the model list: {outcome.target}"
        else:
            text = f"Already in the model list: {outcome.target}"
        if card is not None:
            card.set_registered(outcome.target, text)
        self.run_control.set_status(text)
        view = self.parent_view
        if view.comparison is not None and view.new_bundle == Path(outcome.source):
            self._offer_adoption(Path(outcome.target))  # now in the list: it can be adopted
        self.form.refresh_models()
        self.bundle_registered.emit(outcome.target)

    @Slot(str, str)
    def _on_install_failed(self, message: str, details: str) -> None:
        sender = self.sender()
        card = self.results.card_for_file(Path(sender.objectName()) if sender else None)
        text = f"Not added to the model list: {message}"
        if card is not None:
            card.register_button.setEnabled(True)
            card.set_message(text, error=True)
        self.run_control.set_status(text)
        self.show_error_dialog("The model could not be added", message, details)

    # ------------------------------------------------------------------ plumbing
    @Slot(object)
    def _on_open_requested(self, path: Path) -> None:
        self.open_path(path)

    @Slot(str, str, str)
    def _on_error(self, title: str, message: str, details: str) -> None:
        self.show_error_dialog(title, message, details)

    def open_path(self, path: Path) -> bool:
        """Open a file or folder with the system's application (tests replace this)."""
        ok = QDesktopServices.openUrl(QUrl.fromLocalFile(str(path)))
        if not ok:
            self.run_control.set_status(f"Could not open {path}; open it from the file manager.")
        return bool(ok)

    def show_error_dialog(self, title: str, message: str, details: str = "") -> None:
        """A modal message with the traceback under "Show Details" (tests replace this)."""
        box = QMessageBox(QMessageBox.Warning, title, message, QMessageBox.Ok, self)
        if details:
            box.setDetailedText(details)
        box.exec()

    def showEvent(self, event: QShowEvent) -> None:  # noqa: N802 - Qt API
        super().showEvent(event)
        if not self.run_control.is_running():
            self.form.refresh_models()  # models may have been added or adopted meanwhile
            self.form.check_weights()  # weight files may have been placed meanwhile
