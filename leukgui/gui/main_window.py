"""The main window: bring images in, choose a model, analyze, review, export, train.

Thin by design: the engine, review state, summaries, sessions and reports all live in
`leukgui.core`; this module wires them to widgets and turns worker events into model
updates. The samples panel (`samples_panel`) and the model card (`model_card`) are their
own modules. Dialogs go through small `_ask_*` / `_show_*` methods so tests can answer them.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QEvent, QSettings, Qt, QTimer, QUrl, Signal
from PySide6.QtGui import QAction, QDesktopServices, QKeySequence
from PySide6.QtWidgets import (
    QApplication,
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFrame,
    QHBoxLayout,
    QInputDialog,
    QLabel,
    QMainWindow,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QSlider,
    QSplitter,
    QStackedWidget,
    QTabWidget,
    QToolBar,
    QVBoxLayout,
    QWidget,
)

from leukgui import APP_NAME
from leukgui.core.bundle import (
    BUNDLE_SUFFIX,
    CONFLICT,
    IDENTICAL,
    BundleError,
    BundleInfo,
    InstallOutcome,
    choose_bundle,
    find_bundles,
)
from leukgui.core.formatting import clock
from leukgui.core.paths import samples_dir, user_dir
from leukgui.core.preferences import Preferences, load_preferences, save_preferences
from leukgui.core.results import (
    ALL,
    DEMO_NOTICE,
    HEM,
    UNCERTAIN,
    UNCLASSIFIABLE,
    CellResult,
    FileError,
    Progress,
    RunResult,
)
from leukgui.core.text import display_path, display_text
from leukgui.gui import review_dialogs
from leukgui.gui.model_card import AdoptionDialog, about_html, model_card_dialog
from leukgui.gui.window_menus import build_actions, build_menus
from leukgui.gui.workers import Worker

if TYPE_CHECKING:
    from leukgui.core.lab_dataset import AddSummary, ReviewedCell
    from leukgui.core.review import ReviewState
    from leukgui.core.sessions import ReviewSession
    from leukgui.gui.analysis import RuntimeInUse
    from leukgui.gui.lab_dataset_dialog import LabDatasetDialog
    from leukgui.gui.preferences_dialog import PreferencesDialog

# The gallery, the inspector, the review core and the training page pull in numpy, OpenCV and
# the training module; they are imported by `ensure_content`, right after the window is on
# screen, so it appears about as fast as a bare Qt window.

__all__ = ["LAYOUT_VERSION", "MainWindow"]

LAYOUT_VERSION = 2  # bump when the dock/splitter layout changes: stale layouts are dropped
# Where a model file in the picker comes from (BundleInfo.source), for its tooltip.
_SOURCE_TEXTS = {
    "bundled": "bundled with LeukGUI",
    "user": "your models folder (imported or trained here)",
    "file": "a model file opened directly",
}


def default_split(width: int) -> list[int]:
    """Samples | gallery | inspector widths for a first layout: the samples table keeps its
    key columns and the inspector its cell at 1024 px; a wider window goes to the gallery."""
    samples = int(min(440, max(370, 0.28 * width)))
    inspector = int(min(520, max(285, 0.29 * width)))
    return [samples, max(200, width - samples - inspector), inspector]


class DropArea(QFrame):
    """What an empty window shows: a large, obvious drop target with the two main buttons."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("dropArea")
        self.setFrameShape(QFrame.Shape.StyledPanel)
        layout = QVBoxLayout(self)
        layout.addStretch(1)
        title = QLabel("Drop folders or images here")
        title.setAlignment(Qt.AlignmentFlag.AlignCenter)
        font = title.font()
        font.setPointSizeF(font.pointSizeF() * 1.8)
        title.setFont(font)
        hint = QLabel(
            "Each folder of cell images becomes one sample. BMP, PNG, JPEG and TIFF are read;\n"
            "files that cannot be read are listed, never lost."
        )
        hint.setAlignment(Qt.AlignmentFlag.AlignCenter)
        hint.setEnabled(False)
        buttons = QHBoxLayout()
        buttons.addStretch(1)
        self.open_button = QPushButton("Open Folder…")
        self.samples_button = QPushButton("Try the bundled samples")
        buttons.addWidget(self.open_button)
        buttons.addWidget(self.samples_button)
        buttons.addStretch(1)
        layout.addWidget(title)
        layout.addWidget(hint)
        layout.addSpacing(16)
        layout.addLayout(buttons)
        layout.addStretch(1)


class MainWindow(QMainWindow):
    """LeukGUI's main window."""

    analysis_finished = Signal(object)  # RunResult
    export_finished = Signal(object)  # Path or None on failure
    models_changed = Signal()
    warmed_up = Signal(str)  # bundle path loaded in the background

    def __init__(self, prefs: Preferences | None = None, *, restore_check: bool = True) -> None:
        super().__init__()
        if prefs is None:
            prefs, self.preference_notes = load_preferences()
        else:
            self.preference_notes = []
        self.prefs = prefs
        self.setWindowTitle(APP_NAME)
        self.setAcceptDrops(True)
        self.inputs: list[str] = []
        self.run: RunResult | None = None
        self.review: ReviewState | None = None
        self.session: ReviewSession | None = None  # the autosave of the review, when on
        self.worker: Worker | None = None
        self._workers: set[Worker] = set()
        self.bundles: list[BundleInfo] = []

        self._content_built = False
        self._review_actions: list[QAction] = []  # keys scoped to the gallery and inspector
        # The review as the last export of these results wrote it (cell reviews, sign-offs):
        # what closing would lose is the difference, so a mark undone is nothing to lose.
        self._exported_state: tuple[dict, dict] = ({}, {})
        self._discard_ok = False  # close_discarding_review: the caller already decided
        self._warming: Worker | None = None
        self._runtime_shown: RuntimeInUse | None = None  # what the status bar says runs
        self._runtime_chosen = False  # the runtime was changed in Preferences this session
        self.preferences_dialog: PreferencesDialog | None = None
        self.lab_dataset_dialog: LabDatasetDialog | None = None
        self._closing = False
        self._pending_splitter = None
        # Until the user drags a splitter handle, the panes follow default_split as the
        # window is resized (a restored layout counts as the user's).
        self._split_sized = False
        self._summary_timer = QTimer(self, singleShot=True, interval=150)
        self._summary_timer.timeout.connect(self.refresh_summary)

        build_actions(self)
        self._build_shell()
        build_menus(self)
        self.refresh_models()
        self._restore_layout()
        self._update_actions()
        if restore_check:
            QTimer.singleShot(0, self.check_unfinished_session)

    # ------------------------------------------------------------------ construction

    def _action(
        self, text: str, slot: Any, shortcut: Any = None, tip: str = "", *, review: bool = False
    ) -> QAction:
        """A window action; `review` ones answer their keys only where cells are reviewed."""
        action = QAction(text, self)
        if shortcut is not None:
            action.setShortcut(QKeySequence(shortcut))
        if tip:
            action.setToolTip(tip)
            action.setStatusTip(tip)
        action.triggered.connect(slot)
        if review:
            # Keys like Enter, A or Backspace belong to whatever widget has the focus: a review
            # key acts only while the gallery or the inspector has it (they are added there in
            # `ensure_content`), never from a text field, spin box or another tab.
            action.setShortcutContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)
            self._review_actions.append(action)
        else:
            self.addAction(action)
        return action

    def _build_shell(self) -> None:
        """What the first paint needs: toolbar, banner, drop target, tabs, status bar."""
        toolbar = QToolBar("Main", self)
        toolbar.setObjectName("mainToolbar")
        toolbar.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        toolbar.addAction(self.act_open_folder)
        toolbar.addSeparator()
        toolbar.addWidget(QLabel(" Model: "))
        self.model_combo = QComboBox()
        self.model_combo.setMinimumContentsLength(28)
        self.model_combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToContents)
        self.model_combo.setToolTip("Model used for the next analysis")
        self.model_combo.currentIndexChanged.connect(self._model_chosen)
        self.model_combo.activated.connect(self._model_picked)  # only a person's choice
        toolbar.addWidget(self.model_combo)
        card = QPushButton("Model card")
        card.clicked.connect(self.show_model_card)
        toolbar.addWidget(card)
        self.use_model_button = QPushButton("Use this model…")
        self.use_model_button.setToolTip(self.act_use_model.toolTip())
        self.use_model_button.clicked.connect(self.show_adopt_dialog)
        toolbar.addWidget(self.use_model_button)
        # Names the model in use and whether (and by whom) it was adopted.
        self.model_use_label = QLabel()
        self.model_use_label.setObjectName("modelUseLabel")
        toolbar.addWidget(self.model_use_label)
        toolbar.addSeparator()
        toolbar.addAction(self.act_analyze)
        toolbar.addAction(self.act_cancel)
        toolbar.addSeparator()
        toolbar.addAction(self.act_export)
        self.addToolBar(toolbar)

        self.demo_banner = QLabel(f"  {DEMO_NOTICE}  ")
        self.demo_banner.setObjectName("demoBanner")
        self.demo_banner.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self._style_banner()

        # Analysis page: drop target when empty, else samples | gallery | inspector.
        self.stack = QStackedWidget()
        self.drop_area = DropArea()
        self.drop_area.open_button.clicked.connect(self.choose_folder)
        self.drop_area.samples_button.clicked.connect(self.open_samples)
        self.stack.addWidget(self.drop_area)

        analysis_page = QWidget()
        page_layout = QVBoxLayout(analysis_page)
        page_layout.setContentsMargins(4, 4, 4, 4)
        page_layout.addWidget(self.demo_banner)
        page_layout.addWidget(self.stack, 1)
        self.tabs = QTabWidget()
        self.tabs.setDocumentMode(True)
        self.tabs.addTab(analysis_page, "Analysis")
        self.setCentralWidget(self.tabs)

        self.progress = QProgressBar()
        self.progress.setMaximumWidth(260)
        self.progress.setVisible(False)
        self.progress_label = QLabel()
        # The inference runtime in use, once a model is loaded; a fallback is marked and
        # its reasons are a click (and a tooltip) away.
        self.runtime_label = QLabel()
        self.runtime_label.setObjectName("runtimeStatus")
        self.runtime_label.setTextFormat(Qt.TextFormat.RichText)
        self.runtime_label.linkActivated.connect(self.show_runtime_details)
        self.runtime_label.setVisible(False)
        self.statusBar().addPermanentWidget(self.runtime_label)
        self.statusBar().addPermanentWidget(self.progress_label)
        self.statusBar().addPermanentWidget(self.progress)

    def ensure_content(self) -> None:
        """Build the gallery, inspector, samples list and training page (once).

        Runs right after the first paint (or at the first action that needs it), so the
        imports of numpy, OpenCV and the training module do not delay the window.
        """
        if self._content_built:
            return
        self._content_built = True
        from leukgui.gui.cell_model import CellFilterProxy, CellListModel
        from leukgui.gui.cell_view import CellInspector
        from leukgui.gui.flow_layout import FlowLayout
        from leukgui.gui.gallery import GalleryView
        from leukgui.gui.samples_panel import SamplesPanel
        from leukgui.gui.training_page import TrainingPage

        self.cells = CellListModel(self)
        self.proxy = CellFilterProxy(self)
        self.proxy.setSourceModel(self.cells)
        self.samples = SamplesPanel()
        self.samples.sample_selected.connect(self.proxy.set_sample)
        self.samples.sign_off_requested.connect(self.sign_off_current_sample)

        middle = QWidget()
        mid_layout = QVBoxLayout(middle)
        mid_layout.setContentsMargins(0, 0, 0, 0)
        filters = FlowLayout()  # wraps onto a second row in a narrow pane
        self.label_filter = QComboBox()
        for text, labels in (
            ("All cells", None),
            ("ALL", {ALL}),
            ("HEM", {HEM}),
            (UNCERTAIN, {UNCERTAIN}),
            (UNCLASSIFIABLE, {UNCLASSIFIABLE}),
        ):
            self.label_filter.addItem(text, labels)
        self.label_filter.addItem("Not reviewed", "unreviewed")
        self.label_filter.addItem("Changed by review", "changed")
        self.label_filter.currentIndexChanged.connect(self._filter_changed)
        self.sort_combo = QComboBox()
        for text, mode in (
            ("File order", "file"),
            ("P(ALL), high first", "p_all"),
            ("Least certain first", "least_certain"),
        ):
            self.sort_combo.addItem(text, mode)
        self.sort_combo.currentIndexChanged.connect(self._sort_changed)
        self.heatmap_check = QCheckBox("Heatmaps")
        self.heatmap_check.toggled.connect(self.act_heatmaps.setChecked)
        self.heatmap_check.toggled.connect(self._set_heatmaps)
        self.size_slider = QSlider(Qt.Orientation.Horizontal)
        self.size_slider.setRange(64, 256)
        self.size_slider.setValue(
            self.prefs.thumb_size if 64 <= self.prefs.thumb_size <= 256 else 128
        )
        self.size_slider.setFixedWidth(110)
        self.size_slider.setToolTip("Thumbnail size (also Ctrl+wheel over the gallery)")
        for label, combo in (("Show", self.label_filter), ("Sort", self.sort_combo)):
            combo.setSizeAdjustPolicy(
                QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon
            )
            combo.setMinimumContentsLength(9)  # two boxes share a row in a narrow pane
            pair = QWidget()  # a label stays on the row of its box
            pair_layout = QHBoxLayout(pair)
            pair_layout.setContentsMargins(0, 0, 0, 0)
            pair_layout.addWidget(QLabel(label))
            pair_layout.addWidget(combo)
            filters.addWidget(pair)
        filters.addWidget(self.heatmap_check)
        size_pair = QWidget()
        size_layout = QHBoxLayout(size_pair)
        size_layout.setContentsMargins(0, 0, 0, 0)
        size_layout.addWidget(QLabel("Size"))
        size_layout.addWidget(self.size_slider)
        filters.addWidget(size_pair)
        self.gallery = GalleryView()
        self.gallery.setModel(self.proxy)
        self.gallery.set_thumb_size(self.size_slider.value())
        self.size_slider.valueChanged.connect(self.gallery.set_thumb_size)
        self.gallery.current_cell_changed.connect(self._cell_selected)
        mid_layout.addLayout(filters)
        mid_layout.addWidget(self.gallery, 1)

        self.inspector = CellInspector(layout=self.prefs.inspector_layout)
        # Kept in the preferences (saved with them on close): the next start opens the same.
        self.inspector.layout_changed.connect(
            lambda mode: setattr(self.prefs, "inspector_layout", mode)
        )
        from leukgui.gui.field_view import FieldView

        self.field_view = FieldView()
        self.field_view.setVisible(False)
        self.field_view.setToolTip("The smear field this cell was found in; click a box")
        self.field_view.cell_clicked.connect(self.select_cell)
        right = QSplitter(Qt.Orientation.Vertical)
        right.addWidget(self.inspector)
        right.addWidget(self.field_view)
        right.setStretchFactor(0, 3)
        right.setStretchFactor(1, 2)
        self.splitter = QSplitter(Qt.Orientation.Horizontal)
        self.splitter.setObjectName("analysisSplitter")
        self.splitter.addWidget(self.samples)
        self.splitter.addWidget(middle)
        self.splitter.addWidget(right)
        # A narrower window takes its pixels from the gallery (fewer tile columns) first, so
        # the samples table keeps its key columns and the inspector its cell at 1024 px.
        self.splitter.setStretchFactor(0, 1)
        self.splitter.setStretchFactor(1, 4)
        self.splitter.setStretchFactor(2, 1)
        self.splitter.setSizes(default_split(1400))  # four gallery columns at 1400 px
        self.splitter.splitterMoved.connect(lambda *_: setattr(self, "_split_sized", True))
        self.splitter.installEventFilter(self)
        self.stack.addWidget(self.splitter)

        self.training_page = TrainingPage()
        self.training_page.bundle_registered.connect(self._bundle_registered)
        self.training_page.model_adopted.connect(self._adopted_elsewhere)
        if self.prefs.training:
            with contextlib.suppress(Exception):  # stale training preferences: not worth a crash
                self.training_page.restore_state(self.prefs.training)
        self.tabs.addTab(self.training_page, "Training")
        for view in (self.gallery, self.inspector, self.field_view):
            view.addActions(self._review_actions)
        self._update_reviewer_label()
        if self.prefs.preload_model:
            QTimer.singleShot(200, self.warm_up)

    # ------------------------------------------------------------------ layout, settings

    def _settings(self) -> QSettings:
        return QSettings(str(user_dir() / "window.ini"), QSettings.Format.IniFormat)

    def _restore_layout(self) -> None:
        settings = self._settings()
        if settings.value("layout_version", 0, int) != LAYOUT_VERSION:
            self.resize(1400, 860)
            return
        geometry = settings.value("geometry")
        if geometry is not None:
            self.restoreGeometry(geometry)
        state = settings.value("state")
        if state is not None:
            self.restoreState(state, LAYOUT_VERSION)
        # The splitter lives on a page that is hidden until results arrive; a state restored
        # into a hidden splitter is lost at the first layout, so it is applied on first show.
        self._pending_splitter = settings.value("splitter")

    def showEvent(self, event: Any) -> None:  # noqa: N802 - Qt override
        super().showEvent(event)
        if not self._content_built:
            # After the first paint: the window is up before numpy, OpenCV and the training
            # module load (about 0.2 s on a 2-core machine).
            QTimer.singleShot(50, self.ensure_content)

    def eventFilter(self, watched: Any, event: Any) -> bool:  # noqa: N802 - Qt override
        if (
            watched is getattr(self, "splitter", None)
            and event.type() == QEvent.Type.Resize
            and not self._split_sized
        ):
            QTimer.singleShot(0, self._fit_split)  # after the splitter has its new width
        return super().eventFilter(watched, event)

    def _fit_split(self) -> None:
        if not self._split_sized and self.splitter.isVisible():
            handles = self.splitter.handleWidth() * (self.splitter.count() - 1)
            self.splitter.setSizes(default_split(self.splitter.width() - handles))

    def _show_content(self) -> None:
        """Switch from the drop target to samples | gallery | inspector."""
        self.ensure_content()
        self.stack.setCurrentIndex(1)
        pending = getattr(self, "_pending_splitter", None)
        if pending is not None:
            self._pending_splitter = None
            self.splitter.restoreState(pending)
            self._split_sized = True  # the user's own sizes, kept as they were
        elif not self._split_sized:
            QTimer.singleShot(0, self._fit_split)

    def save_layout(self) -> None:
        settings = self._settings()
        settings.setValue("layout_version", LAYOUT_VERSION)
        settings.setValue("geometry", self.saveGeometry())
        settings.setValue("state", self.saveState(LAYOUT_VERSION))
        # Only sizes the user chose (dragged, or restored from a drag) are kept; otherwise
        # the next start fits the panes to its own window again (default_split).
        if self._content_built and self._pending_splitter is None and self._split_sized:
            settings.setValue("splitter", self.splitter.saveState())
        settings.sync()

    def save_preferences(self) -> None:
        if self._content_built:
            self.prefs.thumb_size = self.size_slider.value()
        with contextlib.suppress(Exception):  # a page that cannot report its state: keep old
            self.prefs.training = self.training_page.state()
        try:
            save_preferences(self.prefs)
        except Exception as exc:  # noqa: BLE001 - a read-only profile must not block closing
            self.statusBar().showMessage(f"Preferences not saved: {exc}", 5000)

    def closeEvent(self, event: Any) -> None:  # noqa: N802 - Qt override
        if not self._closing and not self._discard_ok and not self.may_discard_review("quit"):
            event.ignore()
            return
        if self.worker is not None and self.worker.isRunning():
            self.worker.cancel()
            self.worker.wait(10000)
        self._closing = True
        if self.lab_dataset_dialog is not None:  # an add in flight finishes first
            self.lab_dataset_dialog.wait_idle()
        for worker in list(self._workers):  # never leave a running thread behind
            worker.cancel()
            worker.wait(60000)
        if self._content_built:
            self.training_page.shutdown()  # cancels a running training and waits for its thread
        self.save_layout()
        self.save_preferences()
        self._close_session()
        super().closeEvent(event)

    # ------------------------------------------------------------------ models

    def refresh_models(self, select: str | Path | None = None) -> None:
        """Fill the picker with every installed model; keep or set the selection."""
        from leukgui.core.model_registry import RegistryError, current_bundle_path, history

        found, broken = find_bundles()
        current = select or (self.current_bundle_path() if self.bundles else None)
        self.bundles = found
        try:
            self._adoptions = history()
        except RegistryError as exc:
            self._adoptions = []
            self.statusBar().showMessage(display_text(str(exc)), 8000)
        adopted = {a.sha256 for a in self._adoptions}
        self.model_combo.blockSignals(True)
        self.model_combo.clear()
        # Two files with one name and version (a model imported twice under other file names,
        # or a copy of a bundled one) would read the same: those entries name their file.
        names = Counter((info.name, str(info.version)) for info in found)
        for info in found:
            warning = "" if info.demo else info.score_warning
            text = f"{info.name} v{info.version} · {info.backbone}" + (
                " · DEMO" if info.demo else " · ⚠ weak scores" if warning else ""
            )
            if info.source == "user" and info.sha256 not in adopted:
                text += " · new — not adopted"
            if names[(info.name, str(info.version))] > 1:
                text += f" · {display_path(info.path.name)} ({info.source})"
            self.model_combo.addItem(text, str(info.path))
            self.model_combo.setItemData(
                self.model_combo.count() - 1,
                f"{display_path(info.path)}\n"
                f"From: {_SOURCE_TEXTS.get(info.source, info.source)}\n"
                f"Model SHA-256 (manifest and weights) {info.sha256}"
                + (f"\nCaution: {warning}" if warning else ""),
                Qt.ItemDataRole.ToolTipRole,
            )
        for path, reason in broken:  # listed, never chosen: one bad file hides nothing
            self.model_combo.addItem(f"⚠ {display_path(path.name)} — unusable", None)
            row = self.model_combo.count() - 1
            self.model_combo.model().item(row).setEnabled(False)
            self.model_combo.setItemData(row, display_text(reason), Qt.ItemDataRole.ToolTipRole)
        index = -1
        if current is not None:
            index = self.model_combo.findData(str(current))
        # The lab's adopted model comes before the last one picked and the newest one: a
        # model is in use by an adoption, never by being newer (see model_registry).
        adopted_path = current_bundle_path() if index < 0 else None
        if adopted_path is not None:
            index = self.model_combo.findData(str(adopted_path))
        if index < 0 and self.prefs.model:
            index = self.model_combo.findData(self.prefs.model)
        if index < 0 and found:
            try:
                index = self.model_combo.findData(str(choose_bundle().path))
            except BundleError:
                index = 0
        self.model_combo.setCurrentIndex(max(index, 0) if found else -1)
        self.model_combo.blockSignals(False)
        for path, reason in broken:
            self.statusBar().showMessage(
                f"Unusable model {display_path(path.name)}: {display_text(reason)}", 8000
            )
        self._model_chosen()
        self.models_changed.emit()

    def current_bundle(self) -> BundleInfo | None:
        path = self.current_bundle_path()
        return next((b for b in self.bundles if str(b.path) == path), None)

    def current_bundle_path(self) -> str | None:
        data = self.model_combo.currentData()
        return str(data) if data else None

    def select_model(self, path: str | Path) -> None:
        index = self.model_combo.findData(str(path))
        if index >= 0:
            self.model_combo.setCurrentIndex(index)

    def warm_up(self) -> Worker | None:
        """Load the chosen model on the chosen runtime in the background (see
        analysis.warm_up); TensorFlow loads only for the TensorFlow runtime or a fallback."""
        from leukgui.gui.analysis import is_loaded, runtime_in_use, warm_up

        path = self.current_bundle_path()
        runtime, precision = self.prefs.runtime, self.prefs.precision
        busy = self.worker is not None and self.worker.isRunning()
        loaded = path is not None and is_loaded(path, runtime, precision)
        if path is None or busy or loaded or self._warming is not None:
            return None
        if self._closing or not self.isVisible():  # a timer firing after close starts nothing
            return None
        worker = Worker(lambda w: warm_up(w, path, runtime, precision), self)
        self._warming = worker
        self._workers.add(worker)

        def done(*_: Any) -> None:
            self._warming = None
            in_use = runtime_in_use(path, runtime, precision)
            if in_use is not None:
                self.show_runtime(in_use)
            self.warmed_up.emit(path)
            now = (self.current_bundle_path(), self.prefs.runtime, self.prefs.precision)
            if (path, runtime, precision) != now:
                QTimer.singleShot(200, self.warm_up)  # the choice changed while it loaded

        worker.finished.connect(lambda: self._workers.discard(worker))  # thread really ended

        worker.succeeded.connect(done)
        worker.failed.connect(
            lambda message, _details: self.statusBar().showMessage(
                f"Model not preloaded: {message}", 8000
            )
        )
        worker.failed.connect(done)
        worker.start()
        return worker

    def _update_title(self) -> None:
        """The title names the results on screen: their folders, cells and start time."""
        if self.run is None:
            self.setWindowTitle(APP_NAME)
            return
        info = self.run.info
        names = ", ".join(display_path(Path(p).name or p) for p in info.inputs[:2])
        if len(info.inputs) > 2:
            names += f" +{len(info.inputs) - 2}"
        cells = len(self.run.cells)
        self.setWindowTitle(
            f"{names} · {cells} cell{'s' * (cells != 1)} · {info.started:%Y-%m-%d %H:%M}"
            f" — {APP_NAME}"
        )

    def _update_banner(self) -> None:
        """The DEMO banner describes the results on screen, else the model that would run."""
        if self.run is not None:
            demo = self.run.info.demo
        else:
            info = self.current_bundle()
            demo = bool(info and info.demo)
        self.demo_banner.setVisible(demo)

    def _model_picked(self, *_: Any) -> None:
        """The person chose a model in the picker: warn about weak scores, and offer to
        analyze the shown images again when they were analyzed with another model."""
        info = self.current_bundle()
        if info is None:
            return
        if not info.demo and info.score_warning:
            self._show_message(
                "warning",
                "Model with weak scores",
                f"{info.name} v{info.version}: {info.score_warning}. Its calls may be wrong "
                "more often than the model card suggests; see Model > Model card.",
            )
        shown = self.run.info if self.run is not None else None
        # A session saved before bundles had an identity hash names the weights' hash.
        if shown is not None and shown.model_sha256 not in (info.sha256, info.weights_sha256):
            busy = self.worker is not None and self.worker.isRunning()
            if not busy and self._ask_yes_no(
                "Analyze again?",
                f"The results shown were made by {shown.model_name} v{shown.model_version}. "
                f"Analyze the same images again with {info.name} v{info.version}?",
            ):
                self.start_analysis()

    def _update_model_use_label(self) -> None:
        """Name the model in use and its adoption: by whom and when, or not adopted."""
        info = self.current_bundle()
        adoptions = getattr(self, "_adoptions", [])
        if info is None:
            self.model_use_label.setText(" No model ")
            self.model_use_label.setToolTip("")
            return
        mine = [a for a in adoptions if a.sha256 == info.sha256]
        lab = adoptions[-1] if adoptions else None
        # Short beside the picker (which already names the model), so the toolbar keeps its
        # Analyze button in view; the whole statement is in the tooltip.
        full = f"In use: {info.name} v{info.version}"
        if mine:
            short = f"adopted by {mine[-1].who}, {mine[-1].when_text}"
            full += f" — {short}"
            if lab is not None and lab.sha256 != info.sha256:
                full += f" (the lab's latest adoption is {lab.label})"
                short += " (not the lab's latest)"
        else:
            short = "not adopted"
            full += " — not adopted (Model > Use this model…)"
        self.model_use_label.setText(display_text(f" {short} "))
        self.model_use_label.setToolTip(f"{display_text(full)}\nModel SHA-256 {info.sha256}")

    def show_adopt_dialog(self) -> AdoptionDialog | None:
        """ "Use this model…": the chosen model's lineage and parent comparison, and the
        question; OK records the adoption (who, when) and makes it the model in use."""
        info = self.current_bundle()
        if info is None:
            self._show_message("warning", "No model", "No model is installed.")
            return None
        dialog = AdoptionDialog(info, self.prefs.reviewer, self)
        dialog.accepted.connect(lambda: self._adopt(dialog))
        self.adopt_dialog = dialog
        dialog.open()
        return dialog

    def _adopt(self, dialog: AdoptionDialog) -> None:
        from leukgui.core.model_registry import RegistryError, adopt

        info = dialog.info
        try:
            adoption = adopt(info, dialog.reviewer())
        except RegistryError as exc:
            self._show_message("warning", "Model not adopted", display_text(str(exc)))
            self.refresh_models()
            return
        self.refresh_models(select=info.path)
        self.select_model(info.path)
        self.save_preferences()
        self.statusBar().showMessage(
            f"{adoption.label} adopted by {adoption.who}; it is the model in use for the next "
            "analyses",
            10000,
        )

    def _adopted_elsewhere(self, path: Any) -> None:
        """A model adopted on the Training tab becomes the one the picker shows and uses."""
        self.refresh_models(select=Path(path))
        self.select_model(Path(path))
        self._update_model_use_label()
        self.save_preferences()
        self.statusBar().showMessage(
            f"Model {Path(path).name} adopted; it is the model in use for the next analyses",
            10000,
        )

    def _model_chosen(self, *_: Any) -> None:
        info = self.current_bundle()
        self._update_banner()
        self._update_model_use_label()
        if info is not None:
            self.prefs.model = str(info.path)
        self._update_actions()
        self._update_runtime_label()
        if self._content_built and self.prefs.preload_model:
            QTimer.singleShot(200, self.warm_up)

    # ------------------------------------------------------------------ preferences, runtime

    def show_preferences(self) -> PreferencesDialog:
        """The Preferences dialog (window-modal, not blocking); accepted, its choices are
        saved and used from the next analysis."""
        from leukgui.gui.preferences_dialog import PreferencesDialog

        dialog = PreferencesDialog(self.prefs, self)
        dialog.accepted.connect(lambda: self._apply_preferences(dialog))
        self.preferences_dialog = dialog
        dialog.open()
        return dialog

    def _apply_preferences(self, dialog: PreferencesDialog) -> None:
        runtime, precision = dialog.chosen_runtime(), dialog.chosen_precision()
        if (runtime, precision) == (self.prefs.runtime, self.prefs.precision):
            return
        self.prefs.runtime, self.prefs.precision = runtime, precision
        self._runtime_chosen = True
        self.save_preferences()
        self._update_runtime_label()
        if self._content_built and self.prefs.preload_model:
            QTimer.singleShot(200, self.warm_up)

    def show_runtime(self, in_use: RuntimeInUse) -> None:
        """Say in the status bar which runtime the model runs on; a fallback is marked, and
        its reasons go in the tooltip, the details (a click) and, once, the message area."""
        before = self._runtime_shown
        self._runtime_shown = in_use
        self._update_runtime_label()
        if in_use.notes and (before is None or before.notes != in_use.notes):
            from leukgui.gui.analysis import fallback_summary

            self.statusBar().showMessage(fallback_summary(in_use), 20000)

    def runtime_status(self) -> RuntimeInUse | None:
        """The runtime the status bar names, when it is that of the current model and choice."""
        shown = self._runtime_shown
        if shown is None or shown.model != self.current_bundle_path():
            return None
        chosen = (shown.runtime, shown.precision) == (self.prefs.runtime, self.prefs.precision)
        return shown if chosen else None

    def _update_runtime_label(self) -> None:
        import html

        label = self.runtime_label
        in_use = self.runtime_status()
        if in_use is None:
            if self._runtime_shown is None and not self._runtime_chosen:
                # Nothing loaded or chosen yet: nothing to say (and the runtimes module, with
                # numpy, stays unimported while the window starts).
                label.setVisible(False)
                return
            from leukgui.gui.preferences_dialog import runtime_choice_text

            label.setStyleSheet("")
            choice = runtime_choice_text(self.prefs.runtime)
            if self.prefs.precision != "auto":
                choice += f" ({self.prefs.precision})"
            label.setText(html.escape(f"Runtime: {choice} — loads with") + " the next analysis")
            label.setToolTip("Choose the inference runtime in File › Preferences…")
            label.setVisible(True)
            return
        text = html.escape(f"Runtime: {in_use.description}")
        if in_use.notes:
            from leukgui.gui.theme import status_colour, status_style

            # The link in the theme's warning colour, not the palette's link blue: that one is
            # dark blue on the dark theme's near-black status bar. A theme switch moves it to
            # the other theme's shade (theme.restyle_status).
            text += (
                f" <a href='#runtime-notes' style='color: {status_colour('warning')};'>"
                "⚠ fallback — see details</a>"
            )
            label.setStyleSheet(status_style("warning"))
            tip = "<br>".join(f"• {html.escape(note)}" for note in in_use.notes)
            label.setToolTip(f"<p>Running on {html.escape(in_use.description)}.</p><p>{tip}</p>")
        else:
            label.setStyleSheet("")
            label.setToolTip(
                f"Inference runtime in use: {in_use.description} (File › Preferences… to change)"
            )
        label.setText(text)
        label.setVisible(True)

    def show_runtime_details(self, *_: Any) -> None:
        """Why the runtime in use is not the one that would have come first."""
        in_use = self.runtime_status()
        if in_use is None:
            return
        if in_use.notes:
            from leukgui.gui.analysis import fallback_details

            self._show_message("warning", "Inference runtime", fallback_details(in_use))
        else:
            self._show_message(
                "information", "Inference runtime", f"The analysis runs on {in_use.description}."
            )

    def show_model_card(self) -> None:
        info = self.current_bundle()
        if info is None:
            self._show_message("warning", "No model", "No model is installed.")
            return
        self._model_card = model_card_dialog(info, self)
        self._model_card.open()

    def choose_import_model(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self, "Import model", "", f"LeukGUI model (*{BUNDLE_SUFFIX})"
        )
        if path:
            self.import_model(Path(path))

    def import_model(self, path: Path) -> Worker:
        """Install a model file in a worker (verified first), with the one conflict rule of
        `leukgui.core.bundle.install_bundle` that the Training page uses too. A model whose
        inference graph cannot be used is installed (TensorFlow runs it) and said so."""

        def install(worker: Worker) -> tuple[InstallOutcome, str]:
            from leukgui.core.bundle import install_bundle, load_bundle

            outcome = install_bundle(path)
            if outcome.status == CONFLICT:
                return outcome, ""
            # Reads the archive and checks the graph; no TensorFlow (keras=False).
            return outcome, load_bundle(outcome.target, keras=False).graph_problem

        def done(result: tuple[InstallOutcome, str]) -> None:
            outcome, graph_problem = result
            if outcome.status == CONFLICT:
                self._show_message("warning", "Model not imported", outcome.reason)
                return
            self.refresh_models(select=outcome.target)
            name = outcome.target.name
            if outcome.status == IDENTICAL:
                text = f"Model {name} is already installed; selected it"
            else:
                text = f"Model {name} added"
            if not graph_problem:
                self.statusBar().showMessage(text, 5000)
                return
            self.statusBar().showMessage(
                f"{text} — it will run on TensorFlow only (its inference graph cannot be used)",
                15000,
            )
            self._show_message(
                "warning",
                "Model runs on TensorFlow only",
                f"{text}, but this model file's inference graph cannot be used: "
                f"{display_text(graph_problem).rstrip('.')}.\n\nOpenVINO and ONNX Runtime cannot "
                "run it, so it will run on TensorFlow only (slower). Its weights passed their "
                "check; for the faster runtimes, import an undamaged copy of the model file.",
            )

        return self._start_worker(install, done, "Model not imported")

    def _bundle_registered(self, path: Any) -> None:
        """A model trained here joins the picker; it is never chosen for the person."""
        self.refresh_models()
        self.statusBar().showMessage(
            f"Model {Path(path).name} added to the model list (new — not adopted); to use it, "
            "choose it and Model > Use this model…",
            10000,
        )

    # ------------------------------------------------------------------ inputs

    def choose_folder(self) -> None:
        start = self.prefs.recent_folders[0] if self.prefs.recent_folders else ""
        folder = QFileDialog.getExistingDirectory(self, "Open folder of cell images", start)
        if folder:
            self.open_paths([folder])

    def choose_files(self) -> None:
        files, _ = QFileDialog.getOpenFileNames(
            self, "Open cell images", "", "Images (*.bmp *.png *.jpg *.jpeg *.tif *.tiff)"
        )
        if files:
            self.open_paths(files)

    def open_samples(self) -> None:
        self.open_paths([str(samples_dir())])

    def _fill_recent(self) -> None:
        self.recent_menu.clear()
        for folder in self.prefs.recent_folders:
            action = self.recent_menu.addAction(folder)
            action.triggered.connect(lambda _=False, f=folder: self.open_paths([f]))
        self.recent_menu.setEnabled(bool(self.prefs.recent_folders))

    def _fill_sessions(self) -> None:
        """Past sessions, newest first: each reopens with its results and every review."""
        from leukgui.core.sessions import recent_sessions, sessions_root

        self.sessions_menu.clear()
        current = self.session.folder if self.session is not None else None
        found = recent_sessions(sessions_root())
        for summary in found:
            text = summary.describe()
            action = self.sessions_menu.addAction(text)
            action.setToolTip(str(summary.folder))
            if summary.folder == current:
                action.setText(text + " (shown now)")
                action.setEnabled(False)
            elif summary.in_use:
                action.setText(text + " (open in another window)")
                action.setEnabled(False)
            else:
                action.triggered.connect(lambda _=False, f=summary.folder: self.open_session(f))
        if not found:
            self.sessions_menu.addAction("No sessions yet").setEnabled(False)

    def open_session(self, folder: Path) -> bool:
        """Reopen a past session (results and reviews), after asking about the shown work."""
        from leukgui.core.sessions import SessionError

        if self.worker is not None and self.worker.isRunning():
            self._show_message("information", "Busy", "Wait for the running analysis or cancel it.")
            return False
        if not self.may_discard_review("open another session"):
            return False
        try:
            self.restore_session(Path(folder))
        except SessionError as exc:  # in use elsewhere, or damaged
            self._show_message("warning", "Cannot open the session", str(exc))
            return False
        return True

    def open_paths(self, paths: list[str]) -> None:
        """New inputs replace the current ones and are analyzed at once."""
        if self.worker is not None and self.worker.isRunning():
            self._show_message("information", "Busy", "Wait for the running analysis or cancel it.")
            return
        self.inputs = [str(p) for p in paths]
        for p in paths:
            if Path(p).is_dir():
                self.prefs.add_recent(p)
        self._fill_recent()
        self.start_analysis()

    def dragEnterEvent(self, event: Any) -> None:  # noqa: N802 - Qt override
        if event.mimeData().hasUrls() and any(u.isLocalFile() for u in event.mimeData().urls()):
            event.acceptProposedAction()

    def dropEvent(self, event: Any) -> None:  # noqa: N802 - Qt override
        paths = [u.toLocalFile() for u in event.mimeData().urls() if u.isLocalFile()]
        if paths:
            event.acceptProposedAction()
            self.tabs.setCurrentIndex(0)
            self.open_paths(paths)

    # ------------------------------------------------------------------ analysis

    def start_analysis(self) -> Worker | None:
        from leukgui.core.engine import AnalysisOptions
        from leukgui.gui.analysis import AnalysisRequest, run_analysis

        self.ensure_content()
        if not self.inputs:
            self.choose_folder()
            return None
        bundle = self.current_bundle_path()
        if bundle is None:
            self._show_message("warning", "No model", "Choose or import a model first.")
            return None
        try:
            options = AnalysisOptions(
                batch_size=self.prefs.batch_size,
                image_kind=self.prefs.image_kind,
                detector=dict(self.prefs.detector),
                tta=self.prefs.tta,
            )
        except ValueError as exc:  # a hand-edited preferences file
            self._show_message("warning", "Analysis settings", str(exc))
            return None
        if not self.may_discard_review("analyze new images"):
            return None
        self._close_session()
        self._exported_state = ({}, {})
        self.cells.clear()
        self.samples.clear()
        self.run = None
        self.review = None
        self.cells.set_review(None)
        self.inspector.show_cell(None, final_label="", reviewed=False, model_text="")
        self._show_content()
        self.progress.setRange(0, 0)
        self.progress.setVisible(True)
        self.progress_label.setText("Loading the model…")
        request = AnalysisRequest(
            list(self.inputs), bundle, options, self.prefs.runtime, self.prefs.precision
        )
        worker = self._start_worker(
            lambda w: run_analysis(w, request), self._analysis_done, "Analysis failed"
        )
        worker.progressed.connect(self._analysis_event)
        self.worker = worker
        self._update_actions()
        return worker

    def cancel_analysis(self) -> None:
        if self.worker is not None and self.worker.isRunning():
            self.worker.cancel()
            self.progress_label.setText("Cancelling after the current batch…")

    def _analysis_event(self, event: object) -> None:
        from leukgui.gui.analysis import Outcomes, RunStarted, RuntimeInUse

        if isinstance(event, RuntimeInUse):
            self.show_runtime(event)
        elif isinstance(event, RunStarted):
            self.run = event.run
            self._update_banner()
            self._update_title()
            self.review = self._start_session(self.run)
            self.cells.set_threshold(self.run.info.threshold)
            self.cells.set_review(self.review)
            self.progress.setRange(0, max(event.total, 1))
            self.progress.setValue(0)
            self.samples.add_errors(self.run.errors)
            self._summary_timer.start()
        elif isinstance(event, Outcomes):
            if self.run is None:
                return
            self.run.outcomes.extend(event.items)
            cells = [o for o in event.items if isinstance(o, CellResult)]
            if cells:
                self.cells.append_cells(cells)
                if self.gallery.currentIndex().row() < 0:
                    self.gallery.setCurrentIndex(self.proxy.index(0, 0))
            self.samples.add_errors(o for o in event.items if isinstance(o, FileError))
            self._summary_timer.start()
        elif isinstance(event, Progress):
            self.progress.setRange(0, max(event.total, 1))
            self.progress.setValue(event.done)
            self.progress_label.setText(
                f"{event.done}/{event.total} images · {event.rate:.1f} img/s · "
                f"ETA {clock(event.eta_s)}"
            )

    def _analysis_done(self, run: RunResult) -> None:
        # The worker's RunResult holds the same outcomes in the same order as ours.
        if self.run is not None:
            self.run.info = run.info
            self.run.outcomes = run.outcomes
        else:
            self.run = run
        self.progress.setVisible(False)
        self._update_title()
        cells = len(run.cells)
        state = "Cancelled" if run.info.cancelled else "Finished"
        self.progress_label.setText(f"{state}: {cells} cells, {len(run.errors)} errors")
        self._save_snapshot()
        self.refresh_summary()
        self.worker = None
        self._update_actions()
        self.analysis_finished.emit(run)

    # ------------------------------------------------------------------ sessions

    def _start_session(self, run: RunResult) -> ReviewState:
        """The review of a new run, autosaved in a new session when the disk allows."""
        from leukgui.core.review import ReviewState
        from leukgui.core.sessions import ReviewSession, SessionError, sessions_root

        try:
            self.session = ReviewSession.create(sessions_root(), run)
        except SessionError as exc:  # the review still works; the user is told
            self.session = None
            self.statusBar().showMessage(f"Review autosave is off: {exc}", 10000)
            return ReviewState.for_run(run)
        return self.session.review

    def _save_snapshot(self) -> None:
        if self.session is None:
            return
        from leukgui.core.sessions import SessionError

        try:
            self.session.snapshot()
        except SessionError as exc:
            self.statusBar().showMessage(f"Autosave failed: {exc}", 10000)

    def _close_session(self) -> None:
        session, self.session = self.session, None
        if session is None:
            return
        from leukgui.core.sessions import SessionError

        try:
            session.close()
        except SessionError as exc:
            self.statusBar().showMessage(f"Autosave failed: {exc}", 10000)

    def check_unfinished_session(self) -> None:
        """Offer the newest session a crash left behind; declined or damaged ones are marked
        so they are not offered again."""
        from leukgui.core.sessions import (
            SessionError,
            SessionInUseError,
            decline,
            mark_damaged,
            session_summary,
            sessions_root,
            unfinished_sessions,
        )

        sessions = unfinished_sessions(sessions_root())
        if not sessions:
            return
        latest = sessions[0]
        answer = self._ask_restore(review_dialogs.restore_offer_text(session_summary(latest)))
        try:
            if answer == "later":  # offered again at the next start
                return
            if answer != "restore":
                decline(latest)
                return
            try:
                self.restore_session(latest)
            except SessionInUseError as exc:  # another window opened it meanwhile
                self._show_message("warning", "Cannot restore the review", str(exc))
            except SessionError as exc:  # damaged: say so once, not at every start
                self._show_message("warning", "Cannot restore the review", str(exc))
                mark_damaged(latest, str(exc))
        except SessionError as exc:  # the marker itself could not be written
            self.statusBar().showMessage(str(exc), 10000)

    def restore_session(self, folder: Path) -> None:
        """Reopen a session: the analyzed cells and every review change come back."""
        import warnings

        from leukgui.core.sessions import ReviewSession, SessionRecoveryWarning

        self.ensure_content()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", SessionRecoveryWarning)
            session = ReviewSession.restore(folder)  # SessionInUseError, SessionError
        gaps = [str(w.message) for w in caught if issubclass(w.category, SessionRecoveryWarning)]
        self._close_session()
        self.session = session
        run, review = session.run, session.review
        self.run = run
        self.review = review
        self._exported_state = ({}, {})  # nothing says the restored changes were exported
        self._update_banner()
        self._update_title()
        self.inputs = list(run.info.inputs)
        self.cells.clear()
        self.samples.clear()
        self.cells.set_threshold(run.info.threshold)
        self.cells.set_review(review)
        self.cells.append_cells(run.cells)
        self.samples.add_errors(run.errors)
        self._show_content()
        if run.cells:
            self.gallery.setCurrentIndex(self.proxy.index(0, 0))
        self.refresh_summary()
        self.progress_label.setText(
            f"Restored session: {len(run.cells)} cells, {len(review.audit)} review changes"
        )
        self._update_actions()
        if gaps:  # a damaged journal line is never applied silently, nor dropped silently
            self._show_message("warning", "Review restored with gaps", "\n\n".join(gaps))

    # ------------------------------------------------------------------ review

    def current_cell(self) -> CellResult | None:
        if not self._content_built:
            return None
        index = self.gallery.currentIndex()
        if not index.isValid():
            return None
        return self.cells.cell(self.proxy.mapToSource(index).row())

    def reviewer(self) -> str | None:
        if not self.prefs.reviewer:
            self.ask_reviewer()
        return self.prefs.reviewer or None

    def ask_reviewer(self) -> None:
        had_focus = QApplication.focusWidget()  # e.g. the gallery a review key came from
        name, ok = QInputDialog.getText(
            self,
            "Reviewer",
            "Your name (recorded with every review change):",
            text=self.prefs.reviewer,
        )
        if had_focus is not None and had_focus.isVisible():
            had_focus.setFocus()  # the next review keys go where the last one went
        if ok and name.strip():
            self.prefs.reviewer = name.strip()
            self._update_reviewer_label()
            self.save_preferences()  # kept even if the app or the computer stops uncleanly

    def _update_reviewer_label(self) -> None:
        if self._content_built:
            self.samples.set_reviewer(self.prefs.reviewer)

    def reviewing(self) -> bool:
        """Whether the person can see the cells a review key would change: the Analysis tab
        with its gallery showing (a menu click from elsewhere must not change a hidden cell)."""
        return (
            self._content_built
            and self.review is not None
            and self.tabs.currentIndex() == 0
            and self.stack.currentWidget() is self.splitter
        )

    def _review_refused(self) -> bool:
        if self.reviewing():
            return False
        if self.review is not None:
            self.statusBar().showMessage("Review cells on the Analysis tab", 5000)
        return True

    def _apply_review(self, change: Any) -> bool:
        """Apply `change(cell, reviewer)` to the current cell; False when nothing changed."""
        from leukgui.core.review import ReviewError
        from leukgui.core.sessions import SessionError

        if self._review_refused():
            return False
        cell = self.current_cell()
        if cell is None or self.review is None:
            return False
        reviewer = self.reviewer()
        if reviewer is None:
            return False
        try:
            change(cell, reviewer)
        except ReviewError as exc:
            self._show_message("warning", "Review", str(exc))
            return False
        except SessionError as exc:  # not on disk, so not applied either (write-ahead)
            self._show_message("critical", "Review not saved", str(exc))
            return False
        self.cells.cell_changed(cell.key)  # a filter may hide the cell now
        self._cell_selected()  # the inspector shows the gallery's current cell, always
        self._summary_timer.start()
        return True

    def review_current(self, label: str) -> None:
        """A / H / U: set the reviewed label and move on to the next cell."""
        if self.review is not None:
            self._mark_and_advance(lambda cell, who: self.review.set_label(cell, label, who))

    def confirm_current(self) -> None:
        if self.review is not None:
            self._mark_and_advance(lambda cell, who: self.review.confirm(cell, who))

    def _mark_and_advance(self, change: Any) -> None:
        """Mark the current cell, then select the cell that followed it in the gallery.

        The next cell is chosen before the mark: under a filter such as "Changed by review"
        the marked cell may leave the list, and the row after it is then a different cell;
        the next key must act on the cell the inspector shows, never on another."""
        row = self.gallery.currentIndex().row()
        following = self.proxy.cell(row + 1) if 0 <= row < self.proxy.rowCount() - 1 else None
        marked = self.current_cell()
        if not self._apply_review(change):
            return
        if following is not None and self.gallery.select_path(following):
            pass
        elif marked is not None and self.gallery.select_path(marked):
            pass  # the last cell, still listed: stay on it
        elif self.proxy.rowCount():  # the last cell left the list: the one before it
            self.gallery.setCurrentIndex(self.proxy.index(self.proxy.rowCount() - 1, 0))
        self._cell_selected()

    def undo_last_review(self) -> None:
        """Ctrl+Z / Backspace: undo the newest review change, wherever its cell is, go back to
        that cell and say what was undone."""
        self._history_step(undo=True)

    def redo_review(self) -> None:
        """Ctrl+Shift+Z: make the undone change again."""
        self._history_step(undo=False)

    def _history_step(self, *, undo: bool) -> None:
        from leukgui.core.review import ReviewError
        from leukgui.core.sessions import SessionError

        if self._review_refused() or self.review is None:
            return
        if not (self.review.can_undo if undo else self.review.can_redo):
            self.statusBar().showMessage("Nothing to undo" if undo else "Nothing to redo", 5000)
            return
        reviewer = self.reviewer()
        if reviewer is None:
            return
        try:
            entry = self.review.undo_last(reviewer) if undo else self.review.redo(reviewer)
        except ReviewError as exc:
            self._show_message("warning", "Undo" if undo else "Redo", str(exc))
            return
        except SessionError as exc:
            self._show_message("critical", "Review not saved", str(exc))
            return
        row = self.cells.row_of(entry.path)  # the gallery model's own index of cells by key
        cell = self.cells.cell(row) if row is not None else None
        cleared = False
        if cell is not None:
            self.cells.cell_changed(cell.key)
            cleared = self.select_cell(cell)
            self._cell_selected(cell)
        self._summary_timer.start()
        name = Path(entry.path).name
        unreviewed = f"not reviewed (model: {entry.model_label})"
        before, after = entry.before or unreviewed, entry.after or unreviewed
        verb = "Undid" if undo else "Redid"
        shown = "; filters cleared to show the cell" if cleared else ""
        self.statusBar().showMessage(f"{verb}: {name} {before} → {after}{shown}", 8000)

    def move_selection(self, step: int) -> None:
        if not self._content_built:
            return
        rows = self.proxy.rowCount()
        if rows == 0:
            return
        row = self.gallery.currentIndex().row()
        row = min(max(row + step, 0), rows - 1) if row >= 0 else 0
        self.gallery.setCurrentIndex(self.proxy.index(row, 0))

    def current_sample(self) -> str | None:
        """The sample selected in the samples panel, else the current cell's."""
        if not self._content_built:
            return None
        sample = self.samples.selected_sample()
        if sample is not None:
            return sample
        cell = self.current_cell()
        return cell.sample if cell is not None else None

    def _sample_action(self, action: str) -> None:
        """Sign off or reopen the selected sample under the reviewer's name."""
        from leukgui.core.review import ReviewError
        from leukgui.core.sessions import SessionError

        sample = self.current_sample()
        if sample is None or self.review is None:
            return
        reviewer = self.reviewer()
        if reviewer is None:
            return
        change = self.review.sign_off if action == "sign-off" else self.review.reopen
        try:
            change(sample, reviewer)
        except ReviewError as exc:
            self._show_message(
                "warning", "Sign-off" if action == "sign-off" else "Reopen", str(exc)
            )
            return
        except SessionError as exc:
            self._show_message("critical", "Review not saved", str(exc))
            return
        self.refresh_summary()
        self.cells.refresh_review()  # the padlocks on the tiles
        self._cell_selected()  # and in the inspector

    def close_discarding_review(self) -> None:
        """Close without asking about review work (the self-test; the session stays on disk)."""
        self._discard_ok = True
        self.close()

    def _review_state(self) -> tuple[dict, dict]:
        """The review's cell reviews and sign-offs as they stand (copies)."""
        if self.review is None:
            return ({}, {})
        return (dict(self.review.reviews), dict(self.review.signoffs))

    def unexported_changes(self) -> int:
        """Cells whose review, and samples whose sign-off, differ from what the last Excel
        report of these results holds (all of them before any export)."""
        changed = 0
        for current, exported in zip(self._review_state(), self._exported_state, strict=True):
            keys = current.keys() | exported.keys()
            changed += sum(1 for key in keys if current.get(key) != exported.get(key))
        return changed

    def unsaved_review(self) -> str:
        """What would be lost by replacing or closing these results, in words ("" if nothing):
        review changes no report holds yet, and reviewed samples not signed off."""
        if self.review is None or self.run is None or not self.review.audit:
            return ""
        parts = []
        changes = self.unexported_changes()
        if changes > 0:
            parts.append(f"{changes} review change{'s' * (changes != 1)} not yet exported")
        reviewed = {c.sample for c in self.run.cells if self.review.is_reviewed(c)}
        open_samples = sorted(s for s in reviewed if self.review.signed_off(s) is None)
        if open_samples:
            shown = ", ".join(display_path(s) for s in open_samples)
            parts.append("reviewed samples not signed off: " + shown)
        return "; ".join(parts)

    def may_discard_review(self, action: str) -> bool:
        """Ask before `action` replaces or closes results holding review work. Export starts
        the export and stops the action (do it again once the report is written); it is
        offered only when a report is missing changes (it cannot sign a sample off)."""
        what = self.unsaved_review()
        if not what:
            return True
        answer = self._ask_unsaved(action, what, can_export=self.unexported_changes() > 0)
        if answer == "export":
            self.choose_export_excel()
            return False
        return answer == "discard"

    def _ask_unsaved(self, action: str, what: str, *, can_export: bool = True) -> str:
        return review_dialogs.ask_unsaved(self, action, what, can_export=can_export)

    def _ask_restore(self, text: str) -> str:
        return review_dialogs.ask_restore(self, text)

    def _confirm_sign_off(self, sample: str, text: str) -> bool:
        return review_dialogs.confirm_sign_off(self, text)

    def sign_off_text(self, sample: str) -> str:
        """What the sign-off dialog says about `sample` (see review_dialogs.sign_off_text)."""
        from leukgui.core.metrics import sample_summary

        row = next(r for r in sample_summary(self.run, self.review) if r.sample == sample)
        return review_dialogs.sign_off_text(sample, self.prefs.reviewer, row)

    def sign_off_current_sample(self) -> None:
        """Sign off the sample the person sees selected, after saying which and how far its
        review got."""
        sample = self.current_sample()
        if sample is None or self.review is None or self.run is None:
            return
        if self.review.signed_off(sample) is None:
            if self.reviewer() is None:
                return
            if not self._confirm_sign_off(sample, self.sign_off_text(sample)):
                return
        self._sample_action("sign-off")
        if self.review.signed_off(sample) is not None:
            self.statusBar().showMessage(
                f"Signed off {sample} under {self.review.signed_off(sample).reviewer}", 8000
            )

    def reopen_current_sample(self) -> None:
        self._sample_action("reopen")

    def refresh_summary(self) -> None:
        """Per-sample counts on final labels, with the ALL % interval (live)."""
        if self._content_built:
            self.samples.refresh(self.run, self.review)
        self._update_lab_dataset_action()

    # ------------------------------------------------------------------ lab data set

    def _update_lab_dataset_action(self) -> None:
        """Enabled once a cell is reviewed as ALL or HEM; the tooltip says why not."""
        action = self.act_lab_dataset
        if self.run is None or self.review is None:
            why = "Analyze images and review cells first"
        elif not any(r.label in (ALL, HEM) for r in self.review.reviews.values()):
            why = "No cell is reviewed as ALL or HEM yet (A, H, or Enter to confirm)"
        else:
            why = ""
        action.setEnabled(not why)
        tip = why or (
            "Copy the cells you reviewed or confirmed as ALL or HEM into the lab data set "
            "that training reads (the review itself is not changed)"
        )
        action.setToolTip(tip)
        action.setStatusTip(tip)

    def lab_dataset_cells(self) -> list[ReviewedCell]:
        """The cells of the shown analysis with their current reviews (read, never changed)."""
        from leukgui.core.lab_dataset import reviewed_cells

        if self.run is None or self.review is None:
            return []
        source = (
            str(self.session.folder.absolute())
            if self.session is not None
            else "LeukGUI window (review not autosaved)"
        )
        return reviewed_cells(self.run, self.review, source)

    def show_lab_dataset_dialog(self) -> LabDatasetDialog | None:
        """Review ▸ Add reviewed cells to the lab data set: choose folder and subjects, add."""
        from leukgui.core.lab_dataset import chosen_folder, default_folder
        from leukgui.gui.lab_dataset_dialog import LabDatasetDialog

        self._update_lab_dataset_action()
        if not self.act_lab_dataset.isEnabled():
            self.statusBar().showMessage(self.act_lab_dataset.toolTip(), 8000)
            return None
        dialog = LabDatasetDialog(
            self.lab_dataset_cells(),
            chosen_folder(self.prefs.lab_dataset_folder),
            default_folder(),
            self,
        )
        dialog.added.connect(self._lab_dataset_added)
        self.lab_dataset_dialog = dialog
        dialog.open()
        return dialog

    def _lab_dataset_added(self, folder: Path, summary: AddSummary) -> None:
        """Remember the folder for next time and say what the add did."""
        from leukgui.core.lab_dataset import remembered_folder

        self.prefs.lab_dataset_folder = remembered_folder(folder)
        self.save_preferences()
        self.statusBar().showMessage(f"Lab data set {folder}: {summary.describe()}", 10000)

    def _filter_changed(self) -> None:
        """One Show choice at a time: a label, not yet reviewed, or changed by review (the
        cells whose reviewed label differs from the model's call)."""
        data = self.label_filter.currentData()
        self.proxy.set_reviewed(False if data == "unreviewed" else None)
        self.proxy.set_changed(True if data == "changed" else None)
        self.proxy.set_labels(None if data in ("unreviewed", "changed") else data)

    def _sort_changed(self) -> None:
        self.proxy.set_sort(self.sort_combo.currentData())

    def _toggle_heatmaps(self) -> None:
        self.ensure_content()
        self.heatmap_check.setChecked(self.act_heatmaps.isChecked())

    def _set_heatmaps(self, on: bool) -> None:
        self.cells.set_show_heatmaps(on)

    def set_image_kind(self, mode: str) -> None:
        """How the next analysis treats images: decided per image, all cells, all fields."""
        self.prefs.image_kind = mode
        self.image_kind_actions[mode].setChecked(True)

    def um_per_px(self) -> float | None:
        """The smear fields' scale setting (µm per pixel; None: automatic), as the next
        analysis will use it: preferences of older versions may hold the px-era
        `pixel_scale` instead, which the detector still honours, so it is shown too."""
        detector = self.prefs.detector
        value = detector.get("um_per_px")
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if detector.get("pixel_scale") is not None:  # rare: only then load the detector
            from leukgui.core.fields import DetectorSettings

            with contextlib.suppress(ValueError, TypeError):
                return DetectorSettings(pixel_scale=detector["pixel_scale"]).fixed_um_per_px
        return None

    def choose_um_per_px(self) -> None:
        """Ask for µm per pixel (Automatic, a preset or a number); a valid choice is used
        for the next analysis and saved with the preferences."""
        from leukgui.gui.scale_setting import UmPerPxDialog

        dialog = UmPerPxDialog(self.um_per_px(), self)
        dialog.accepted.connect(lambda: self.set_um_per_px(dialog.value()))
        self.um_per_px_dialog = dialog
        dialog.open()

    def set_um_per_px(self, value: float | str | None) -> bool:
        """Set µm per pixel (None or "auto": measured on every field). A refused value shows
        the reason and changes nothing; returns whether it was taken."""
        from leukgui.core.engine import parse_um_per_px
        from leukgui.gui.scale_setting import um_per_px_label

        try:
            um = parse_um_per_px(value)
        except ValueError as exc:
            self._show_message("warning", "µm per pixel", str(exc))
            return False
        detector = dict(self.prefs.detector)
        detector.pop("pixel_scale", None)  # the old px-era scale gives way to the new one
        if um is None:
            detector.pop("um_per_px", None)
        else:
            detector["um_per_px"] = um
        self.prefs.detector = detector
        self.act_um_per_px.setText(f"µm per &pixel: {um_per_px_label(um)}…")
        self.save_preferences()
        # Results already shown keep the scale they were analysed at: say when this applies.
        self.statusBar().showMessage(
            f"µm per pixel: {um_per_px_label(um)}. Applies to the next analysis; the cells "
            "shown keep the scale they were analysed at.",
            15000,
        )
        return True

    def _toggle_tta(self) -> None:
        """Test-time augmentation for the next analysis (kept in the preferences)."""
        self.prefs.tta = self.act_tta.isChecked()
        self.save_preferences()

    def _toggle_open_after(self) -> None:
        self.prefs.open_report_after_export = self.act_open_after.isChecked()
        self.save_preferences()

    def restyle(self) -> None:
        """Fit what carries its own colours to the theme now applied (banner, messages)."""
        from leukgui.gui.theme import restyle_status

        self._style_banner()
        restyle_status(self)

    def _style_banner(self) -> None:
        """The DEMO banner: amber on either theme, never a light strip on a dark window."""
        from leukgui.gui.theme import is_dark

        background, text = ("#4a3b0a", "#ffe08a") if is_dark() else ("#fff3cd", "#664d03")
        self.demo_banner.setStyleSheet(
            f"#demoBanner {{ background: {background}; color: {text}; padding: 4px;"
            " font-weight: bold; }"
        )

    def _toggle_theme(self) -> None:
        from leukgui.gui.theme import apply_theme

        self.prefs.theme = "dark" if self.act_dark.isChecked() else "light"
        apply_theme(self.prefs.theme)
        self.restyle()
        self.save_preferences()

    def _cell_selected(self, cell: CellResult | None = None) -> None:
        cell = self.current_cell() if cell is None or not isinstance(cell, CellResult) else cell
        if cell is None:
            self.inspector.show_cell(None, final_label="", reviewed=False, model_text="")
            return
        final = self.review.final_label(cell) if self.review else cell.label
        reviewed = bool(self.review and self.review.is_reviewed(cell))
        model_text = ""
        if self.run is not None:
            info = self.run.info
            model_text = (
                f"{info.model_name} v{info.model_version} (SHA-256 {info.model_sha256[:12]}…)"
            )
        locked = None
        signed = self.review.signed_off(cell.sample) if self.review else None
        if signed is not None:
            from leukgui.core.formatting import local_minute

            locked = f"Signed off by {signed.reviewer} at {local_minute(signed.time)} — locked"
        row = self.cells.row_of(cell.key)  # the gallery's notion of the model's call
        self.inspector.show_cell(
            cell,
            final_label=final,
            reviewed=reviewed,
            model_text=model_text,
            locked=locked,
            model_call=self.cells.model_call(row) if row is not None else None,
        )
        self._show_field(cell)

    def _show_field(self, cell: CellResult) -> None:
        """The field a cell was found in, with every cell of that field boxed and lettered."""
        if not cell.in_field or self.run is None:
            self.field_view.setVisible(False)
            if self.field_view.dialog is not None:  # the enlarged field: no field to show
                self.field_view.dialog.hide()
            return
        from leukgui.core.imaging import decode_image

        try:
            if cell.stamp is not None and not cell.stamp.same_file_info(cell.path):
                raise ValueError("image changed since analysis")  # said by the inspector
            rgb = decode_image(cell.path)
        except Exception:  # noqa: BLE001 - the inspector already says the file is unreadable
            self.field_view.setVisible(False)
            if self.field_view.dialog is not None:
                self.field_view.dialog.hide()
            return
        siblings = [c for c in self.run.cells if c.in_field and c.path == cell.path]
        final = self.review.final_label if self.review else (lambda c: c.label)
        self.field_view.show_field(rgb, siblings, cell, final)
        self.field_view.setVisible(True)

    def select_cell(self, cell: CellResult) -> bool:
        """Select a cell in the gallery, clearing filters that would hide it; whether any
        filter had to be cleared (the caller says so: a filter never changes unseen)."""
        if self.cells.row_of(cell.key) is None or self.gallery.select_path(cell):
            return False
        self.label_filter.setCurrentIndex(0)
        self.samples.clear_selection()
        self.proxy.set_sample(None)
        self.gallery.select_path(cell)
        return True

    # ------------------------------------------------------------------ export

    def choose_export_excel(self) -> None:
        path = self._ask_save_path("Export Excel report", "Excel report (*.xlsx)", ".xlsx")
        if path is not None:
            self.export_excel(path)

    def choose_export_csv(self) -> None:
        path = self._ask_save_path("Export CSV", "CSV (*.csv)", ".csv")
        if path is not None:
            self.export_csv(path)

    def export_excel(self, path: Path) -> Worker | None:
        return self._export(path, "write_excel")

    def export_csv(self, path: Path) -> Worker | None:
        return self._export(path, "write_csv")

    def _export(self, path: Path, writer: str) -> Worker | None:
        """Write a report in a worker (big exports take seconds); the old file stays on failure."""
        if self.run is None:
            return None
        run, review = self.run, self.review
        state = self._review_state()  # what this report will hold

        def written(done: Path) -> None:
            if self.run is run and writer == "write_excel":  # the report of these results
                self._exported_state = state
            self._exported(done)

        def write(worker: Worker) -> Path:
            from leukgui.core import exports, report

            # Looked up at call time, so tests can replace a writer to simulate a failure.
            module = report if writer == "write_excel" else exports
            getattr(module, writer)(run, path, review=review)
            return path

        return self._start_worker(write, written, "Export failed", on_fail=self._export_failed)

    def _exported(self, path: Path) -> None:
        self.statusBar().showMessage(f"Wrote {path}", 8000)
        if self.prefs.open_report_after_export and not self._open_file(path):
            kind = "Excel" if path.suffix.lower() == ".xlsx" else "CSV"
            self.statusBar().showMessage(f"Wrote {path}; no program here opens it", 15000)
            self._show_message(
                "information",
                "Report written, not opened",
                f"The report was written to {path}, but no program on this computer opens "
                f"{path.suffix} files, so it could not be opened for you.\n\n"
                f"Install a program that reads {kind} files (Microsoft Excel or LibreOffice "
                "Calc), or turn off File ▸ Open report after export.",
            )
        self.export_finished.emit(path)

    def _export_failed(self, message: str) -> None:
        self.export_finished.emit(None)

    def _open_file(self, path: Path) -> bool:
        """Open a written file with its program; False when the system has none for it."""
        return bool(QDesktopServices.openUrl(QUrl.fromLocalFile(str(path))))

    # ------------------------------------------------------------------ about

    def shortcuts_html(self) -> str:
        """The shortcut sheet, made from the actions themselves so it can never be stale."""
        groups = [
            (
                "Review (the gallery or the inspector has the focus)",
                [
                    self.act_all,
                    self.act_hem,
                    self.act_unclassifiable,
                    self.act_confirm,
                    self.act_undo,
                    self.act_redo,
                    self.act_next,
                    self.act_previous,
                ],
            ),
            ("Samples", [self.act_sign_off]),
            (
                "Files and analysis",
                [
                    self.act_open_folder,
                    self.act_open_files,
                    self.act_analyze,
                    self.act_cancel,
                    self.act_export,
                    self.act_export_csv,
                    self.act_quit,
                ],
            ),
            (
                "Inspector (the gallery, the inspector or the field has the focus)",
                [self.act_zoom_in, self.act_zoom_out, self.act_zoom_fit, self.act_overlay],
            ),
            ("View and models", [self.act_heatmaps, self.act_model_card, self.act_shortcuts]),
        ]
        return review_dialogs.shortcuts_html(groups)

    def show_shortcuts(self) -> None:
        self._show_message("information", "Keyboard shortcuts", self.shortcuts_html())

    def show_about(self) -> None:
        self._show_message("about", f"About {APP_NAME}", about_html(self.current_bundle()))

    # ------------------------------------------------------------------ plumbing

    def _start_worker(
        self, fn: Any, on_success: Any, failure_title: str, on_fail: Any = None
    ) -> Worker:
        worker = Worker(fn, self)
        self._workers.add(worker)

        def failed(message: str, details: str) -> None:
            if worker is self.worker:
                self.worker = None
                self.progress.setVisible(False)
                self.progress_label.setText(f"{failure_title}: {message}")
                self._update_actions()
            self._show_message("critical", failure_title, message, details)
            if on_fail is not None:
                on_fail(message)

        worker.succeeded.connect(on_success)
        worker.failed.connect(failed)
        worker.finished.connect(lambda: self._workers.discard(worker))
        worker.start()
        return worker

    def _update_actions(self) -> None:
        running = self.worker is not None and self.worker.isRunning()
        has_run = self.run is not None
        self.act_analyze.setEnabled(not running and bool(self.bundles))
        self.act_cancel.setEnabled(running)
        self.act_export.setEnabled(has_run and not running)
        self.act_export_csv.setEnabled(has_run and not running)
        self.model_combo.setEnabled(not running)
        for action in (
            self.act_all,
            self.act_hem,
            self.act_unclassifiable,
            self.act_confirm,
            self.act_undo,
            self.act_sign_off,
            self.act_reopen,
        ):
            action.setEnabled(has_run)
        self._update_lab_dataset_action()

    def export_start_path(self, suffix: str) -> Path:
        """Where the save dialog starts: the last export folder, else the first input's
        folder, else home; the name says what was analyzed and when."""
        folder = Path(self.prefs.last_export_folder) if self.prefs.last_export_folder else None
        first = Path(self.inputs[0]) if self.inputs else None
        if folder is None or not folder.is_dir():
            folder = None
            if first is not None:
                folder = first if first.is_dir() else first.parent
            if folder is None or not folder.is_dir():
                folder = Path.home()
        stem = first.stem if first is not None and first.stem else "leukgui"
        return folder / f"{stem}-report-{datetime.now():%Y%m%d-%H%M}{suffix}"

    def _ask_save_path(self, title: str, filters: str, suffix: str) -> Path | None:
        start = str(self.export_start_path(suffix))
        path, _ = QFileDialog.getSaveFileName(self, title, start, filters)
        if not path:
            return None
        path = Path(path)
        self.prefs.last_export_folder = str(path.parent)
        return path if path.suffix.lower() == suffix else path.with_suffix(suffix)

    def _ask_yes_no(self, title: str, text: str) -> bool:
        answer = QMessageBox.question(self, title, text)
        return answer == QMessageBox.StandardButton.Yes

    def _show_message(self, kind: str, title: str, text: str, details: str = "") -> None:
        if kind == "about":
            QMessageBox.about(self, title, text)
            return
        icon = {
            "critical": QMessageBox.Icon.Critical,
            "warning": QMessageBox.Icon.Warning,
        }.get(kind, QMessageBox.Icon.Information)
        box = QMessageBox(icon, title, text, QMessageBox.StandardButton.Ok, self)
        if details:
            box.setDetailedText(details)
        box.open()
        self._message_box = box
