"""The training page: pick labelled cells, train one or more backbones, register the result.

The page is a thin front end to `training.run.train_session`, the same function
`leukgui train` calls: it scans the data set in a worker thread to show what would be
trained on, runs the session in another worker (TensorFlow is only imported there), turns its
progress callback into a progress bar and live curves, and shows one metrics card per trained
backbone. "Add to model list" copies a verified bundle into the per-user models folder and
emits `bundle_registered`, so the main window's model picker can refresh.
"""

from __future__ import annotations

import contextlib
import html
import math
import os
import shutil
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, QUrl, Signal, Slot
from PySide6.QtGui import QDesktopServices, QDragEnterEvent, QDropEvent, QShowEvent
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QFrame,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QListWidget,
    QMessageBox,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QSpinBox,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from leukgui.core.backbones import (
    BACKBONES,
    WeightsMissingError,
    get_spec,
    imagenet_search_dirs,
    keras_cache_dir,
    resolve_imagenet_weights,
)
from leukgui.core.bundle import read_manifest
from leukgui.core.paths import user_models_dir
from leukgui.core.results import ALL, HEM
from leukgui.gui.plot import LinePlot
from leukgui.gui.workers import Worker
from training.history import PHASE_FINE_TUNE, PHASE_FULL, PHASE_HEAD, TrainingProgress

__all__ = [
    "LAYOUT_NAMES",
    "MAIN_BACKBONES",
    "MORE_BACKBONES",
    "MetricsCard",
    "ProgressThrottle",
    "RegisterOutcome",
    "ScanOutcome",
    "TrainingPage",
    "register_bundle_file",
    "scan_dataset",
]

MAIN_BACKBONES = ("vgg16", "resnet50", "efficientnetb0")
MORE_BACKBONES = tuple(name for name in BACKBONES if name not in MAIN_BACKBONES)
DISPLAY_NAMES = {
    "vgg16": "VGG16",
    "resnet50": "ResNet50",
    "efficientnetb0": "EfficientNetB0",
    "efficientnetb1": "EfficientNetB1",
    "efficientnetb2": "EfficientNetB2",
    "efficientnetb3": "EfficientNetB3",
}
LAYOUT_NAMES = {
    "cnmc": "C-NMC 2019 training data (fold_N/all, fold_N/hem)",
    "cnmc-prelim": "C-NMC preliminary test set with its labels CSV",
    "imagefolder": "class folders all/ and hem/",
    "all-idb2": "ALL-IDB2 file names (ImNNN_1 blast, ImNNN_0 normal)",
    "csv": "CSV list (path, label[, subject])",
}
WEIGHTS_IMAGENET, WEIGHTS_NONE, WEIGHTS_FILE = "imagenet", "none", "file"
WEIGHT_CHOICES = (
    (WEIGHTS_IMAGENET, "ImageNet (Keras cache or bundled)"),
    (WEIGHTS_NONE, "None (from scratch)"),
    (WEIGHTS_FILE, "Weights file…"),
)
PHASE_NAMES = {
    PHASE_HEAD: "head only",
    PHASE_FINE_TUNE: "fine-tuning the top block",
    PHASE_FULL: "all layers",
}
AUTO_SIZE = 31  # the input-size spin box's "auto" value; real sizes start at 32
LOSS_SERIES = ("loss", "val_loss")
METRIC_SERIES = ("val_accuracy", "val_balanced_accuracy", "val_auc")
ERROR_STYLE = "color: #B00020;"


# --------------------------------------------------------------------------------------------
# Qt-free helpers (run in worker threads; testable without a window)
# --------------------------------------------------------------------------------------------


@dataclass
class ScanOutcome:
    """A data-set scan for the preview: the scan, or the reason there is none."""

    path: Path
    generation: int
    scan: Any = None  # training.datasets.DatasetScan
    error: str | None = None
    subjects: list[tuple[str, str, int]] = field(default_factory=list)  # subject, class, cells
    checked: bool = False  # every image decoded; undecodable ones moved to scan.unreadable


def _subject_rows(records: Sequence[Any]) -> list[tuple[str, str, int]]:
    per_subject: dict[str, Counter] = {}
    for record in records:
        per_subject.setdefault(record.subject, Counter())[record.label] += 1
    rows = []
    for subject in sorted(per_subject, key=lambda s: (s.casefold(), s)):
        counts = per_subject[subject]
        if counts.get(ALL, 0) and counts.get(HEM, 0):
            label = f"{ALL} + {HEM}"
        else:
            label = ALL if counts.get(ALL, 0) else HEM
        rows.append((subject, label, sum(counts.values())))
    return rows


def scan_dataset(
    path: Path,
    generation: int = 0,
    *,
    check_images: bool = True,
    report: Callable[[Any], None] | None = None,
    cancel: Any = None,
    interval: float = 0.25,
) -> ScanOutcome:
    """Read a data set as training would; an unknown layout is an outcome, not a crash.

    First the fast pass (names and folders), reported at once so the preview appears; then
    every image is decoded, so files that would fail in training are listed before it starts
    and the scan that is trained on holds only readable cells. `report` receives the first
    outcome, then (done, total) tuples; `cancel` (a CancelToken) stops the check early.
    """
    from leukgui.core.imaging import ImageError, decode_image
    from training.datasets import read_dataset

    send = report or (lambda _value: None)
    try:
        scan = read_dataset(path)
    except ValueError as exc:
        return ScanOutcome(path, generation, error=str(exc))
    first = ScanOutcome(path, generation, scan=scan, subjects=_subject_rows(scan.records))
    if not check_images or not scan.records:
        first.checked = not scan.records
        return first
    send(first)
    kept = []
    bad = []
    last = time.monotonic()
    total = len(scan.records)
    for i, record in enumerate(scan.records, 1):
        if cancel is not None and cancel.cancelled:
            return first
        try:
            decode_image(record.path)
        except ImageError as exc:
            bad.append((record.path, exc.reason))
        else:
            kept.append(record)
        if time.monotonic() - last >= interval:
            last = time.monotonic()
            send((i, total))
    from training.datasets import DatasetScan

    checked = DatasetScan(kept, list(scan.unreadable) + bad, scan.source)
    return ScanOutcome(path, generation, scan=checked, subjects=_subject_rows(kept), checked=True)


class ProgressThrottle:
    """Passes every epoch event but at most one batch event per `interval` seconds.

    A batch on a GPU can take milliseconds; a signal per batch would flood the event loop
    (Orange only reports progress that changed noticeably, for the same reason).
    """

    def __init__(self, send: Callable[[Any], None], interval: float = 0.1) -> None:
        self._send = send
        self._interval = interval
        self._last = -math.inf

    def __call__(self, progress: TrainingProgress) -> None:
        if progress.kind == "batch":
            now = time.monotonic()
            if now - self._last < self._interval:
                return
            self._last = now
        self._send(progress)


@dataclass(frozen=True)
class RegisterOutcome:
    """What "Add to model list" did: copied, found an identical copy, or kept a conflict."""

    source: Path
    target: Path
    status: str  # "copied", "identical", "conflict"


def _same_bytes(a: Path, b: Path) -> bool:
    if a.stat().st_size != b.stat().st_size:
        return False
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            ca, cb = fa.read(1 << 20), fb.read(1 << 20)
            if ca != cb:
                return False
            if not ca:
                return True


def register_bundle_file(bundle: Path, folder: Path | None = None) -> RegisterOutcome:
    """Verify a bundle (hash, model loads) and copy it into the models folder.

    An existing file of the same name is never replaced: it may be a model a report already
    names by its hash.
    """
    from leukgui.core.bundle import load_bundle

    bundle = Path(bundle)
    folder = Path(folder) if folder is not None else user_models_dir()
    read_manifest(bundle)  # the cheap checks first, with the clearest messages
    load_bundle(bundle)
    target = folder / bundle.name
    if target.exists():
        status = "identical" if _same_bytes(bundle, target) else "conflict"
        return RegisterOutcome(bundle, target, status)
    folder.mkdir(parents=True, exist_ok=True)
    partial = folder / f".{bundle.name}.{os.getpid()}.partial"
    try:
        shutil.copyfile(bundle, partial)
        try:
            os.link(partial, target)  # fails if the name appeared meanwhile: never overwrite
        except FileExistsError:
            return RegisterOutcome(bundle, target, "conflict")
        except OSError:  # file systems without hard links
            if target.exists():
                return RegisterOutcome(bundle, target, "conflict")
            os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    return RegisterOutcome(bundle, target, "copied")


def _is_inside(path: Path, folder: Path) -> bool:
    try:
        return Path(path).resolve().parent == Path(folder).resolve()
    except OSError:
        return False


def _pct(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "n/a"
    return f"{100 * value:.1f}%"


def _num(value: float | None, digits: int = 3) -> str:
    if value is None or not math.isfinite(value):
        return "n/a"
    return f"{value:.{digits}f}"


def _duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "n/a"
    if seconds < 9.95:
        return f"{seconds:.1f} s"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


# --------------------------------------------------------------------------------------------
# Widgets
# --------------------------------------------------------------------------------------------


class MetricsCard(QFrame):
    """The scores of one trained backbone, with links to its report and its bundle."""

    def __init__(self, run: Any, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.run = run
        self.setFrameShape(QFrame.StyledPanel)
        self.setObjectName("metricsCard")
        layout = QVBoxLayout(self)
        layout.setContentsMargins(10, 8, 10, 8)
        bundle = Path(run.bundle_path) if run.bundle_path else None
        self.title = QLabel(f"<b>{html.escape(bundle.name if bundle else run.name)}</b>")
        self.title.setTextInteractionFlags(Qt.TextSelectableByMouse)
        layout.addWidget(self.title)
        self.cancelled_label = QLabel(
            f"CANCELLED — best epoch so far (epoch {run.best_epoch} of {len(run.history)} run)"
        )
        self.cancelled_label.setStyleSheet(ERROR_STYLE + " font-weight: bold;")
        self.cancelled_label.setVisible(bool(run.cancelled))
        layout.addWidget(self.cancelled_label)

        ev = run.test or run.validation
        where = (
            "test subjects"
            if run.test is not None
            else "validation subjects (no test split, so these scores are optimistic)"
        )
        n = ev.metrics.n if ev else 0
        subjects = len(ev.subjects) if ev else 0
        self.subtitle = QLabel(
            f"{DISPLAY_NAMES.get(run.backbone, run.backbone)} · scored on {n} cells of "
            f"{subjects} {where}"
        )
        self.subtitle.setWordWrap(True)
        layout.addWidget(self.subtitle)

        grid = QGridLayout()
        grid.setHorizontalSpacing(16)
        grid.setVerticalSpacing(2)
        m = ev.metrics if ev else None
        items = [
            ("Balanced accuracy", _pct(m.balanced_accuracy) if m else "n/a"),
            ("Sensitivity (ALL)", _pct(m.recall) if m else "n/a"),
            ("Specificity (HEM)", _pct(m.specificity) if m else "n/a"),
            ("ROC AUC", _num(m.roc_auc) if m else "n/a"),
            ("Threshold", _num(ev.threshold) if ev else "n/a"),
            (
                "Uncertainty band",
                f"{_num(ev.uncertainty_band[0])}–{_num(ev.uncertainty_band[1])}" if ev else "n/a",
            ),
            ("Uncertain cells", f"{ev.uncertain} of {n}" if ev else "n/a"),
            ("Training time", _duration(run.training_seconds)),
            ("Best epoch", f"{run.best_epoch} of {len(run.history)} ({run.stopped_because})"),
        ]
        self.values: dict[str, str] = {}
        for i, (name, value) in enumerate(items):
            row, col = divmod(i, 2)
            key = QLabel(name + ":")
            val = QLabel(f"<b>{html.escape(value)}</b>")
            grid.addWidget(key, row, col * 2)
            grid.addWidget(val, row, col * 2 + 1)
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

    def set_message(self, text: str, error: bool = False) -> None:
        self.message.setText(text)
        self.message.setStyleSheet(ERROR_STYLE if error else "")
        self.message.setVisible(bool(text))

    def set_registered(self, target: Path, text: str) -> None:
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
            *(f"{k}: {v}" for k, v in self.values.items()),
            self.message.text(),
        ]
        plain = " | ".join(p for p in parts if p)
        return html.unescape(plain.replace("<b>", "").replace("</b>", ""))


def _group(title: str) -> tuple[QGroupBox, QVBoxLayout]:
    box = QGroupBox(title)
    layout = QVBoxLayout(box)
    layout.setSpacing(6)
    return box, layout


def _hint(text: str) -> QLabel:
    label = QLabel(text)
    label.setWordWrap(True)
    label.setStyleSheet("color: palette(placeholder-text);")
    return label


class TrainingPage(QWidget):
    """Drives `training.run.train_session` from the GUI (see the module docstring)."""

    training_started = Signal()
    training_finished = Signal(object)  # TrainingSession, or None when training failed
    bundle_registered = Signal(object)  # Path of a bundle now in the user models folder
    scan_finished = Signal(object)  # ScanOutcome of the data folder now shown

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setAcceptDrops(True)
        self._scan_outcome: ScanOutcome | None = None
        self._scan_generation = 0
        self._workers: set[Worker] = set()
        self._train_worker: Worker | None = None
        self._scan_worker: Worker | None = None
        self._train_out: Path | None = None
        self._train_backbones: list[str] = []
        self._train_batch = 32
        self._backbone: str | None = None
        self._backbone_index = -1
        self._weights_problem = ""
        self.session: Any = None  # the last TrainingSession
        self.cards: list[MetricsCard] = []
        self._build_ui()
        self._reset_plots("")
        self._on_weights_mode_changed()
        self._refresh_start()

    # ------------------------------------------------------------------ layout
    def _build_ui(self) -> None:
        splitter = QSplitter(Qt.Horizontal, self)
        outer = QHBoxLayout(self)
        outer.setContentsMargins(6, 6, 6, 6)
        outer.addWidget(splitter)

        # Left: settings, in a scroll area so small screens still reach everything.
        settings = QWidget()
        left = QVBoxLayout(settings)
        left.setContentsMargins(4, 4, 8, 4)
        left.addWidget(self._build_data_group())
        left.addWidget(self._build_model_group())
        left.addWidget(self._build_split_group())
        left.addWidget(self._build_output_group())
        left.addStretch(1)
        scroll = QScrollArea()
        scroll.setWidget(settings)
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QFrame.NoFrame)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarAlwaysOff)
        scroll.setMinimumWidth(400)
        self._settings = settings
        splitter.addWidget(scroll)

        # Right: run control, live curves, results.
        right_widget = QWidget()
        right = QVBoxLayout(right_widget)
        right.setContentsMargins(8, 4, 4, 4)
        controls = QHBoxLayout()
        self.start_button = QPushButton("Start training")
        self.start_button.setDefault(True)
        self.start_button.setMinimumWidth(140)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.cancel_button.setToolTip(
            "Stop after the current batch; the best epoch so far is still scored and saved, "
            "marked CANCELLED."
        )
        controls.addWidget(self.start_button)
        controls.addWidget(self.cancel_button)
        self.start_reason = QLabel("")
        self.start_reason.setWordWrap(True)
        controls.addWidget(self.start_reason, 1)
        right.addLayout(controls)
        self.progress_bar = QProgressBar()
        self.progress_bar.setRange(0, 1000)
        self.progress_bar.setValue(0)
        self.progress_bar.setTextVisible(True)
        self.progress_bar.setFormat("idle")
        right.addWidget(self.progress_bar)
        self.status_label = QLabel("Choose a folder of labelled cells to begin.")
        self.status_label.setWordWrap(True)
        self.status_label.setTextInteractionFlags(Qt.TextSelectableByMouse)
        right.addWidget(self.status_label)

        # Curves, results and log share the height through a splitter the user can drag.
        panes = QSplitter(Qt.Vertical)
        panes.setChildrenCollapsible(False)
        plots_widget = QWidget()
        plots_column = QVBoxLayout(plots_widget)
        plots_column.setContentsMargins(0, 0, 0, 0)
        plots = QHBoxLayout()
        self.loss_plot = LinePlot("Loss (class-weighted)", x_label="epoch", integer_x=True)
        self.metrics_plot = LinePlot("Validation scores", x_label="epoch", integer_x=True)
        self.metrics_plot.set_y_range(0.0, 1.0)
        for plot in (self.loss_plot, self.metrics_plot):
            plot.setMinimumHeight(200)
            plots.addWidget(plot, 1)
        plots_column.addLayout(plots, 1)
        plot_options = QHBoxLayout()
        self.log_y_check = QCheckBox("Log scale for the loss")
        plot_options.addWidget(self.log_y_check)
        plot_options.addStretch(1)
        plots_column.addLayout(plot_options)
        panes.addWidget(plots_widget)

        self.results_box = QGroupBox("Results")
        results_layout = QVBoxLayout(self.results_box)
        self.cards_widget = QWidget()
        self.cards_layout = QVBoxLayout(self.cards_widget)
        self.cards_layout.setContentsMargins(0, 0, 0, 0)
        self.cards_layout.addStretch(1)
        cards_scroll = QScrollArea()
        cards_scroll.setWidget(self.cards_widget)
        cards_scroll.setWidgetResizable(True)
        cards_scroll.setFrameShape(QFrame.NoFrame)
        cards_scroll.setMinimumHeight(150)
        results_layout.addWidget(cards_scroll, 1)
        comparison = QHBoxLayout()
        self.comparison_xlsx_button = QPushButton("Open comparison (Excel)")
        self.comparison_md_button = QPushButton("Open comparison (Markdown)")
        comparison.addWidget(self.comparison_xlsx_button)
        comparison.addWidget(self.comparison_md_button)
        comparison.addStretch(1)
        results_layout.addLayout(comparison)
        self.comparison_xlsx_button.setVisible(False)
        self.comparison_md_button.setVisible(False)
        self.results_box.setVisible(False)
        panes.addWidget(self.results_box)

        self.log_view = QPlainTextEdit()
        self.log_view.setReadOnly(True)
        self.log_view.setMaximumBlockCount(2000)
        self.log_view.setPlaceholderText("Training log")
        self.log_view.setMinimumHeight(50)
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

        self.start_button.clicked.connect(self.start_training)
        self.cancel_button.clicked.connect(self.cancel_training)
        self.log_y_check.toggled.connect(self.loss_plot.set_log_y)
        self.comparison_xlsx_button.clicked.connect(self._open_comparison_xlsx)
        self.comparison_md_button.clicked.connect(self._open_comparison_md)

    def _build_data_group(self) -> QGroupBox:
        box, layout = _group("1  Labelled cells")
        row = QHBoxLayout()
        self.data_edit = QLineEdit()
        self.data_edit.setPlaceholderText("Folder of labelled cells — or drop one here")
        self.data_edit.setClearButtonEnabled(True)
        self.data_browse = QPushButton("Browse…")
        row.addWidget(self.data_edit, 1)
        row.addWidget(self.data_browse)
        layout.addLayout(row)
        layout.addWidget(
            _hint(
                "C-NMC training_data (fold_N/all|hem), class folders all/ and hem/, ALL-IDB2, "
                "or a CSV with path,label[,subject]."
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

        self.data_browse.clicked.connect(self._browse_data)
        self.data_edit.editingFinished.connect(self._data_edited)
        self.unreadable_toggle.toggled.connect(self._toggle_unreadable)
        return box

    def _build_model_group(self) -> QGroupBox:
        box, layout = _group("2  Model")
        layout.addWidget(QLabel("Backbones (each trains on the same split):"))
        self.backbone_checks: dict[str, QCheckBox] = {}
        main = QHBoxLayout()
        for name in MAIN_BACKBONES:
            check = QCheckBox(DISPLAY_NAMES.get(name, name))
            check.setToolTip(f"{name}, {get_spec(name).input_size} px by default")
            check.setChecked(name == "efficientnetb0")
            self.backbone_checks[name] = check
            main.addWidget(check)
        main.addStretch(1)
        layout.addLayout(main)
        self.more_toggle = QToolButton()
        self.more_toggle.setText("More backbones")
        self.more_toggle.setCheckable(True)
        self.more_toggle.setToolButtonStyle(Qt.ToolButtonTextBesideIcon)
        self.more_toggle.setArrowType(Qt.RightArrow)
        self.more_toggle.setAutoRaise(True)
        layout.addWidget(self.more_toggle)
        self.more_widget = QWidget()
        more = QHBoxLayout(self.more_widget)
        more.setContentsMargins(16, 0, 0, 0)
        for name in MORE_BACKBONES:
            check = QCheckBox(DISPLAY_NAMES.get(name, name))
            check.setToolTip(f"{name}, {get_spec(name).input_size} px by default")
            self.backbone_checks[name] = check
            more.addWidget(check)
        more.addStretch(1)
        self.more_widget.setVisible(False)
        layout.addWidget(self.more_widget)

        form = QFormLayout()
        form.setFieldGrowthPolicy(QFormLayout.AllNonFixedFieldsGrow)
        self.weights_combo = QComboBox()
        for key, text in WEIGHT_CHOICES:
            self.weights_combo.addItem(text, key)
        form.addRow("Start from:", self.weights_combo)
        file_row = QHBoxLayout()
        self.weights_file_edit = QLineEdit()
        self.weights_file_edit.setPlaceholderText("no-top ImageNet weights (.h5)")
        self.weights_file_browse = QPushButton("Browse…")
        file_row.addWidget(self.weights_file_edit, 1)
        file_row.addWidget(self.weights_file_browse)
        self.weights_file_widget = QWidget()
        self.weights_file_widget.setLayout(file_row)
        file_row.setContentsMargins(0, 0, 0, 0)
        form.addRow("", self.weights_file_widget)
        self.weights_status = QLabel("")
        self.weights_status.setWordWrap(True)
        self.weights_status.setTextInteractionFlags(Qt.TextSelectableByMouse)
        self.weights_status.setTextFormat(Qt.RichText)
        form.addRow("", self.weights_status)
        self.weights_recheck = QPushButton("Check again")
        self.weights_recheck.setToolTip("Look for the ImageNet weight files again")
        recheck_row = QHBoxLayout()
        recheck_row.setContentsMargins(0, 0, 0, 0)
        recheck_row.addWidget(self.weights_recheck)
        recheck_row.addStretch(1)
        form.addRow("", recheck_row)

        self.epochs_spin = QSpinBox()
        self.epochs_spin.setRange(1, 1000)
        self.epochs_spin.setValue(30)
        self.epochs_spin.setToolTip("Most epochs in total; early stopping may end sooner")
        form.addRow("Epochs (at most):", self.epochs_spin)
        self.head_epochs_spin = QSpinBox()
        self.head_epochs_spin.setRange(0, 1000)
        self.head_epochs_spin.setValue(5)
        self.head_epochs_spin.setToolTip(
            "Epochs that train only the new head before the top block is fine-tuned"
        )
        form.addRow("Head epochs:", self.head_epochs_spin)
        self.batch_spin = QSpinBox()
        self.batch_spin.setRange(1, 4096)
        self.batch_spin.setValue(32)
        form.addRow("Batch size:", self.batch_spin)
        self.size_spin = QSpinBox()
        self.size_spin.setRange(AUTO_SIZE, 1024)
        self.size_spin.setSpecialValueText("auto (backbone default)")
        self.size_spin.setSuffix(" px")
        self.size_spin.setValue(AUTO_SIZE)
        form.addRow("Input size:", self.size_spin)
        self.seed_spin = QSpinBox()
        self.seed_spin.setRange(0, 2**31 - 1)
        self.seed_spin.setValue(2019)
        self.seed_spin.setToolTip("Seeds the split and the training, so a run can be repeated")
        form.addRow("Seed:", self.seed_spin)
        layout.addLayout(form)

        for check in self.backbone_checks.values():
            check.toggled.connect(self._on_backbones_changed)
        self.more_toggle.toggled.connect(self._toggle_more)
        self.weights_combo.currentIndexChanged.connect(self._on_weights_mode_changed)
        self.weights_file_edit.textChanged.connect(self._on_weights_mode_changed)
        self.weights_file_browse.clicked.connect(self._browse_weights)
        self.weights_recheck.clicked.connect(self._on_weights_mode_changed)
        return box

    def _build_split_group(self) -> QGroupBox:
        box, layout = _group("3  Split by subject")
        form = QFormLayout()
        self.validation_spin = QSpinBox()
        self.validation_spin.setRange(1, 45)
        self.validation_spin.setValue(15)
        self.validation_spin.setSuffix(" %")
        form.addRow("Validation:", self.validation_spin)
        self.test_spin = QSpinBox()
        self.test_spin.setRange(0, 45)
        self.test_spin.setValue(15)
        self.test_spin.setSuffix(" %")
        form.addRow("Test:", self.test_spin)
        layout.addLayout(form)
        layout.addWidget(
            _hint(
                "All cells of one subject stay in one part, so scores measure new patients. "
                "The threshold and uncertainty band are chosen on validation; the scores shown "
                "are on test."
            )
        )
        return box

    def _build_output_group(self) -> QGroupBox:
        box, layout = _group("4  Save to")
        row = QHBoxLayout()
        self.output_edit = QLineEdit(str(user_models_dir()))
        self.output_browse = QPushButton("Browse…")
        row.addWidget(self.output_edit, 1)
        row.addWidget(self.output_browse)
        layout.addLayout(row)
        self.output_hint = _hint("")
        layout.addWidget(self.output_hint)
        self.output_browse.clicked.connect(self._browse_output)
        self.output_edit.textChanged.connect(self._on_output_changed)
        self._on_output_changed()
        return box

    # ------------------------------------------------------------------ settings
    def selected_backbones(self) -> list[str]:
        return [name for name, check in self.backbone_checks.items() if check.isChecked()]

    def set_backbones(self, names: Sequence[str]) -> None:
        wanted = {get_spec(n).name for n in names}
        for name, check in self.backbone_checks.items():
            check.setChecked(name in wanted)
        if wanted & set(MORE_BACKBONES):
            self.more_toggle.setChecked(True)

    def weights_mode(self) -> str:
        return str(self.weights_combo.currentData())

    def set_weights_mode(self, mode: str, path: str = "") -> None:
        index = self.weights_combo.findData(mode)
        if index < 0:
            raise ValueError(f"weights must be one of {[k for k, _ in WEIGHT_CHOICES]}")
        if path:
            self.weights_file_edit.setText(path)
        self.weights_combo.setCurrentIndex(index)

    def input_size(self) -> int | None:
        value = self.size_spin.value()
        return None if value == AUTO_SIZE else value

    def output_folder(self) -> Path:
        text = self.output_edit.text().strip()
        return Path(text) if text else user_models_dir()

    def data_folder(self) -> Path | None:
        text = self.data_edit.text().strip()
        return Path(text) if text else None

    def _browse_weights(self) -> None:
        start = self.weights_file_edit.text().strip() or str(keras_cache_dir())
        path, _ = QFileDialog.getOpenFileName(
            self, "No-top ImageNet weights file", start, "Keras weights (*.h5 *.keras);;All (*)"
        )
        if path:
            self.weights_file_edit.setText(path)

    def _browse_output(self) -> None:
        start = str(self.output_folder())
        folder = QFileDialog.getExistingDirectory(self, "Save models to", start)
        if folder:
            self.output_edit.setText(folder)

    def _toggle_more(self, on: bool) -> None:
        self.more_widget.setVisible(on)
        self.more_toggle.setArrowType(Qt.DownArrow if on else Qt.RightArrow)

    def _toggle_unreadable(self, on: bool) -> None:
        self.unreadable_list.setVisible(on)
        self.unreadable_toggle.setArrowType(Qt.DownArrow if on else Qt.RightArrow)

    def _on_output_changed(self) -> None:
        if _same_folder(self.output_folder(), user_models_dir()):
            text = "Your models folder: new models appear in the model list at once."
        else:
            text = (
                "Not your models folder: use “Add to model list” after training to make a "
                "model available for analysis."
            )
        self.output_hint.setText(text)

    def _on_backbones_changed(self) -> None:
        self._on_weights_mode_changed()

    def _on_weights_mode_changed(self) -> None:
        """Show, before anything starts, whether each chosen backbone's weights are here.

        Only file existence is checked (verify=False), so TensorFlow stays unloaded; the
        trainer verifies the file's hash when it loads it.
        """
        mode = self.weights_mode()
        transfer = mode != WEIGHTS_NONE
        self.weights_file_widget.setVisible(mode == WEIGHTS_FILE)
        self.weights_recheck.setVisible(mode == WEIGHTS_IMAGENET)
        self.head_epochs_spin.setEnabled(transfer)
        lines: list[str] = []
        problem = ""
        backbones = self.selected_backbones()
        if mode == WEIGHTS_IMAGENET:
            for name in backbones:
                try:
                    path = resolve_imagenet_weights(name, verify=False)
                except WeightsMissingError:
                    spec = get_spec(name)
                    others = [d for d in imagenet_search_dirs() if d != keras_cache_dir()]
                    lines.append(
                        f"<span style='{ERROR_STYLE}'>✗ {html.escape(DISPLAY_NAMES[name])}: "
                        f"missing. Place <b>{html.escape(spec.weights_file)}</b> in "
                        f"<b>{html.escape(str(keras_cache_dir()))}</b>"
                        + "".join(f" or {html.escape(str(d))}" for d in others)
                        + ".</span>"
                    )
                    problem = problem or f"ImageNet weights for {name} are missing (see Model)."
                else:
                    lines.append(
                        f"✓ {html.escape(DISPLAY_NAMES[name])}: {html.escape(path.name)} "
                        f"in {html.escape(str(path.parent))}"
                    )
        elif mode == WEIGHTS_FILE:
            text = self.weights_file_edit.text().strip()
            if len(backbones) > 1:
                problem = "A weights file fits one backbone: choose only one."
                lines.append(f"<span style='{ERROR_STYLE}'>{html.escape(problem)}</span>")
            if not text:
                problem = problem or "Choose the weights file."
            elif not Path(text).is_file():
                problem = problem or "The weights file does not exist."
                lines.append(f"<span style='{ERROR_STYLE}'>✗ not found: {html.escape(text)}</span>")
            else:
                lines.append(f"✓ {html.escape(Path(text).name)}")
        else:
            lines.append(
                "Every layer trains from random initialisation: this needs far more cells and "
                "epochs than starting from ImageNet."
            )
        self.weights_status.setText("<br>".join(lines))
        self.weights_status.setVisible(bool(lines))
        self._weights_problem = problem
        self._refresh_start()

    def _make_config(self) -> Any:
        from training.trainer import TrainConfig

        mode = self.weights_mode()
        weights = {
            WEIGHTS_IMAGENET: "imagenet",
            WEIGHTS_NONE: "none",
            WEIGHTS_FILE: self.weights_file_edit.text().strip(),
        }[mode]
        backbones = self.selected_backbones()
        return TrainConfig(
            backbone=backbones[0],
            weights=weights,
            input_size=self.input_size(),
            batch_size=self.batch_spin.value(),
            epochs=self.epochs_spin.value(),
            head_epochs=self.head_epochs_spin.value(),
            seed=self.seed_spin.value(),
        )

    # ------------------------------------------------------------------ persisted state
    def state(self) -> dict[str, Any]:
        """The settings worth keeping between sessions (the main window stores them)."""
        return {
            "data_folder": self.data_edit.text().strip(),
            "backbones": self.selected_backbones(),
            "epochs": self.epochs_spin.value(),
            "head_epochs": self.head_epochs_spin.value(),
            "batch_size": self.batch_spin.value(),
            "input_size": self.input_size(),
            "seed": self.seed_spin.value(),
            "validation_percent": self.validation_spin.value(),
            "test_percent": self.test_spin.value(),
            "weights": self.weights_mode(),
            "weights_file": self.weights_file_edit.text().strip(),
            "output_folder": self.output_edit.text().strip(),
            "log_y": self.log_y_check.isChecked(),
        }

    def restore_state(self, state: dict[str, Any]) -> None:
        """Apply saved settings; values of the wrong type or range are ignored, not fatal."""
        if not isinstance(state, dict):
            return

        def number(key: str, spin: QSpinBox) -> None:
            value = state.get(key)
            ok = isinstance(value, int) and not isinstance(value, bool)
            if ok and spin.minimum() <= value <= spin.maximum():
                spin.setValue(value)

        number("epochs", self.epochs_spin)
        number("head_epochs", self.head_epochs_spin)
        number("batch_size", self.batch_spin)
        number("seed", self.seed_spin)
        number("validation_percent", self.validation_spin)
        number("test_percent", self.test_spin)
        if "input_size" in state:
            size = state["input_size"]
            if size is None:
                self.size_spin.setValue(AUTO_SIZE)
            else:
                number("input_size", self.size_spin)
        backbones = state.get("backbones")
        if isinstance(backbones, list) and backbones:
            with contextlib.suppress(ValueError):  # a backbone this version does not know
                self.set_backbones([str(b) for b in backbones])
        weights_file = state.get("weights_file")
        if isinstance(weights_file, str):
            self.weights_file_edit.setText(weights_file)
        weights = state.get("weights")
        if isinstance(weights, str) and self.weights_combo.findData(weights) >= 0:
            self.set_weights_mode(weights)
        output = state.get("output_folder")
        if isinstance(output, str) and output.strip():
            self.output_edit.setText(output.strip())
        if isinstance(state.get("log_y"), bool):
            self.log_y_check.setChecked(state["log_y"])
        folder = state.get("data_folder")
        if isinstance(folder, str) and folder.strip():
            self.set_data_folder(folder.strip())

    # ------------------------------------------------------------------ data scan
    def set_data_folder(self, path: str | os.PathLike[str]) -> None:
        """Show `path` as the data set and scan it in the background."""
        self.data_edit.setText(str(path))
        self._start_scan(Path(path))

    def _browse_data(self) -> None:
        start = self.data_edit.text().strip() or str(Path.home())
        folder = QFileDialog.getExistingDirectory(self, "Folder of labelled cells", start)
        if folder:
            self.set_data_folder(folder)

    def _data_edited(self) -> None:
        path = self.data_folder()
        current = self._scan_outcome.path if self._scan_outcome else None
        if path is None:
            self._scan_generation += 1  # whatever is still being read is no longer wanted
            if self._scan_worker is not None:
                self._scan_worker.cancel()
                self._scan_worker = None
            self._scan_outcome = None
            self._show_preview(None)
            self.scan_status.setVisible(False)
            self._refresh_start()
        elif path != current:
            self._start_scan(path)

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:  # noqa: N802 - Qt API
        if self._dropped_path(event) is not None and self._train_worker is None:
            event.acceptProposedAction()
        else:
            event.ignore()

    def dropEvent(self, event: QDropEvent) -> None:  # noqa: N802 - Qt API
        path = self._dropped_path(event)
        if path is not None and self._train_worker is None:
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

    def _start_scan(self, path: Path) -> None:
        self._scan_generation += 1
        generation = self._scan_generation
        self._scan_outcome = None
        self.preview_label.setVisible(True)
        self.preview_label.setStyleSheet("")
        self.preview_label.setText(f"Reading {html.escape(str(path))}…")
        self.subject_table.setVisible(False)
        self.unreadable_toggle.setVisible(False)
        self.unreadable_list.setVisible(False)
        self._refresh_start()
        if self._scan_worker is not None:
            self._scan_worker.cancel()  # its result would be stale anyway

        def scan(worker: Worker) -> ScanOutcome:
            return scan_dataset(path, generation, report=worker.report, cancel=worker.cancel_token)

        worker = Worker(scan, self)
        worker.progressed.connect(self._on_scan_progress)
        worker.succeeded.connect(self._on_scan_done)
        worker.failed.connect(self._on_scan_failed)
        self._scan_worker = worker
        self._run_worker(worker)

    @Slot(object)
    def _on_scan_progress(self, value: object) -> None:
        if isinstance(value, ScanOutcome):
            if value.generation == self._scan_generation:
                self._show_preview(value)
                self.scan_status.setText(f"Checking {len(value.scan.records)} images…")
                self.scan_status.setVisible(True)
        elif isinstance(value, tuple) and self.sender() is self._scan_worker:
            done, total = value
            self.scan_status.setText(f"Checking images: {done:,} of {total:,}…")

    @Slot(object)
    def _on_scan_done(self, outcome: ScanOutcome) -> None:
        if outcome.generation != self._scan_generation:
            return  # the user has chosen another folder meanwhile
        self._scan_worker = None
        self.scan_status.setVisible(False)
        self._scan_outcome = outcome
        self._show_preview(outcome)
        self._refresh_start()
        if self._train_worker is None:
            self.status_label.setStyleSheet("")
            if outcome.scan is not None and outcome.scan.records:
                s = outcome.scan.summary()
                self.status_label.setText(
                    f"Data set ready: {s['cells']} cells of {s['subjects']} subjects."
                )
            else:
                self.status_label.setText("Choose a folder of labelled cells to begin.")
        self.scan_finished.emit(outcome)

    @Slot(str, str)
    def _on_scan_failed(self, message: str, details: str) -> None:
        if self.sender() is not self._scan_worker:
            return
        self._scan_worker = None
        self.scan_status.setVisible(False)
        self.preview_label.setText(f"Could not read the data set: {html.escape(message)}")
        self.preview_label.setStyleSheet(ERROR_STYLE)
        self.show_error_dialog("Could not read the data set", message, details)

    def scan_outcome(self) -> ScanOutcome | None:
        return self._scan_outcome

    def _show_preview(self, outcome: ScanOutcome | None) -> None:
        table = self.subject_table
        if outcome is None:
            self.preview_label.setVisible(False)
            table.setVisible(False)
            self.unreadable_toggle.setVisible(False)
            self.unreadable_list.setVisible(False)
            return
        self.preview_label.setVisible(True)
        if outcome.error is not None:
            self.preview_label.setStyleSheet(ERROR_STYLE)
            self.preview_label.setText(
                "<b>This is not a labelled data set LeukGUI recognises.</b><br>"
                + html.escape(outcome.error)
            )
            table.setVisible(False)
            self.unreadable_toggle.setVisible(False)
            self.unreadable_list.setVisible(False)
            return
        scan = outcome.scan
        s = scan.summary()
        cpc, spc = s["cells_per_class"], s["subjects_per_class"]
        lines = [
            f"<b>Layout:</b> {html.escape(LAYOUT_NAMES.get(s['source'], s['source']))}",
            f"<b>{s['cells']} cells</b>: ALL {cpc[ALL]} · HEM {cpc[HEM]}",
            f"<b>{s['subjects']} subjects</b>: ALL {spc[ALL]} · HEM {spc[HEM]}",
        ]
        if s.get("cells_per_fold"):
            folds = " · ".join(f"{k} {v}" for k, v in s["cells_per_fold"].items())
            lines.append(f"<b>Folds:</b> {html.escape(folds)}")
        warnings = []
        if not s["cells"]:
            warnings.append("No labelled cells found.")
        elif not cpc[ALL] or not cpc[HEM]:
            warnings.append("Training needs cells of both classes, ALL and HEM.")
        elif min(spc.values()) < 3:
            warnings.append(
                "Fewer than 3 subjects in a class: the validation or test part may lack it."
            )
        if s["cells"] and s["subjects"] == s["cells"]:
            warnings.append(
                "Every cell is its own subject (no patient folders or C-NMC names): cells of "
                "one patient may land in both training and test."
            )
        self.preview_label.setStyleSheet("")
        text = "<br>".join(lines)
        if warnings:
            text += "".join(
                f"<br><span style='{ERROR_STYLE}'>{html.escape(w)}</span>" for w in warnings
            )
        self.preview_label.setText(text)

        table.setRowCount(len(outcome.subjects))
        for row, (subject, label, cells) in enumerate(outcome.subjects):
            table.setItem(row, 0, QTableWidgetItem(subject))
            table.setItem(row, 1, QTableWidgetItem(label))
            count = QTableWidgetItem(str(cells))
            count.setTextAlignment(Qt.AlignRight | Qt.AlignVCenter)
            table.setItem(row, 2, count)
        table.setVisible(bool(outcome.subjects))

        self.unreadable_list.clear()
        for path, reason in scan.unreadable:
            self.unreadable_list.addItem(f"{Path(path).name} — {reason}  ({path})")
        n_bad = len(scan.unreadable)
        self.unreadable_toggle.setText(
            f"{n_bad} file{'s' if n_bad != 1 else ''} cannot be used (show reasons)"
        )
        self.unreadable_toggle.setVisible(n_bad > 0)
        self.unreadable_list.setVisible(n_bad > 0 and self.unreadable_toggle.isChecked())

    # ------------------------------------------------------------------ start / cancel
    def _start_problem(self) -> str:
        """Why Start is disabled, or "" when training can start."""
        if self._train_worker is not None:
            return ""
        outcome = self._scan_outcome
        if self.data_folder() is None:
            return "Choose a folder of labelled cells."
        if outcome is None:
            return "Reading the data set…"
        if not outcome.checked and outcome.error is None:
            return "Checking the images…"
        if outcome.error is not None or not outcome.scan.records:
            return "The data folder holds no usable labelled cells."
        labels = {r.label for r in outcome.scan.records}
        if labels != {ALL, HEM}:
            return "Training needs cells of both classes."
        if not self.selected_backbones():
            return "Choose at least one backbone."
        if self._weights_problem:
            return self._weights_problem
        if not self.output_edit.text().strip():
            return "Choose where to save the model."
        return ""

    def _refresh_start(self) -> None:
        running = self._train_worker is not None
        problem = self._start_problem()
        self.start_button.setEnabled(not running and not problem)
        self.cancel_button.setEnabled(running and not self._train_worker.cancelled)
        self.start_reason.setText(problem)
        self.start_reason.setStyleSheet("color: palette(placeholder-text);")
        self._settings.setEnabled(not running)

    @Slot()
    def start_training(self) -> None:
        """Train every chosen backbone on the scanned data (in a worker thread)."""
        if self._train_worker is not None:
            return
        self._on_weights_mode_changed()  # a weights file may have appeared or gone
        problem = self._start_problem()
        if problem:
            self.status_label.setText(problem)
            return
        try:
            config = self._make_config()
        except ValueError as exc:
            self.status_label.setText(f"Cannot start: {exc}")
            self.status_label.setStyleSheet(ERROR_STYLE)
            return
        from training.run import SplitOptions

        scan = self._scan_outcome.scan
        source = str(Path(self._scan_outcome.path).absolute())
        backbones = self.selected_backbones()
        out = self.output_folder()
        options = SplitOptions(
            validation=self.validation_spin.value() / 100,
            test=self.test_spin.value() / 100,
            seed=self.seed_spin.value(),
        )

        def run(worker: Worker) -> Any:
            from training.run import train_session

            return train_session(
                scan,
                backbones,
                config,
                out,
                split_options=options,
                progress=ProgressThrottle(worker.report),
                cancel=worker.cancel_token,
                log=worker.report,
                source=source,
            )

        self._train_out = out
        self._train_backbones = backbones
        self._train_batch = config.batch_size
        self._backbone = None
        self._backbone_index = -1
        self.session = None
        self._clear_results()
        self._reset_plots("")
        self.log_view.clear()
        self.progress_bar.setValue(0)
        self.progress_bar.setFormat("starting…")
        self.status_label.setStyleSheet("")
        self.status_label.setText(
            f"Starting: loading TensorFlow and reading {len(scan.records)} cells…"
        )
        worker = Worker(run, self)
        worker.progressed.connect(self._on_train_progress)
        worker.succeeded.connect(self._on_train_done)
        worker.failed.connect(self._on_train_failed)
        self._train_worker = worker
        self._refresh_start()
        self._run_worker(worker)
        self.training_started.emit()

    @Slot()
    def cancel_training(self) -> None:
        """Stop after the current batch; the trainer still saves the best epoch so far."""
        worker = self._train_worker
        if worker is None or worker.cancelled:
            return
        worker.cancel()
        self.cancel_button.setEnabled(False)
        self.status_label.setText(
            "Cancelling after the current batch… the best epoch so far will still be scored "
            "and saved, marked CANCELLED."
        )

    def is_training(self) -> bool:
        return self._train_worker is not None

    def is_busy(self) -> bool:
        """True while any background work (scan, training, registration) runs."""
        return any(w.isRunning() for w in self._workers)

    def shutdown(self, wait_ms: int = 30000) -> bool:
        """Cancel training and wait for the threads (call before the window closes)."""
        for worker in (self._train_worker, self._scan_worker):
            if worker is not None:
                worker.cancel()
        return all(w.wait(wait_ms) for w in list(self._workers))

    # ------------------------------------------------------------------ progress
    def _reset_plots(self, backbone: str) -> None:
        name = DISPLAY_NAMES.get(backbone, backbone)
        suffix = f" — {name}" if name else ""
        self.loss_plot.clear()
        self.metrics_plot.clear()
        self.loss_plot.set_title("Loss (class-weighted)" + suffix)
        self.metrics_plot.set_title("Validation scores" + suffix)
        for plot in (self.loss_plot, self.metrics_plot):
            plot.set_x_range(None)
            plot.set_empty_text("waiting for the first epoch…" if backbone else "no data yet")
        for plot, names in ((self.loss_plot, LOSS_SERIES), (self.metrics_plot, METRIC_SERIES)):
            for series in names:
                plot.set_series(series, [], [])

    def show_history(self, history: Sequence[Any], backbone: str = "") -> None:
        """Draw a finished run's epoch log (for "Show curves" and at the end of training)."""
        self._reset_plots(backbone)
        for plot, names in ((self.loss_plot, LOSS_SERIES), (self.metrics_plot, METRIC_SERIES)):
            for series in names:
                plot.set_series(
                    series, [e.epoch for e in history], [getattr(e, series) for e in history]
                )
        tuned = [e.epoch for e in history if e.phase == PHASE_FINE_TUNE]
        if tuned:
            for plot in (self.loss_plot, self.metrics_plot):
                plot.set_marker(min(tuned) - 0.5, "fine-tune")

    @Slot(object)
    def _on_train_progress(self, value: object) -> None:
        if isinstance(value, str):
            self.log_view.appendPlainText(value)
            return
        if not isinstance(value, TrainingProgress):
            return
        p = value
        if p.backbone != self._backbone:
            self._backbone = p.backbone
            self._backbone_index += 1
            self._reset_plots(p.backbone)
            for plot in (self.loss_plot, self.metrics_plot):
                plot.set_x_range(1, max(p.epochs, 2))
        if p.phase == PHASE_FINE_TUNE and self.loss_plot.marker() is None:
            for plot in (self.loss_plot, self.metrics_plot):
                plot.set_marker(p.epoch - 0.5, "fine-tune")
        n = max(len(self._train_backbones), 1)
        done = (p.epoch - 1 + p.batch / max(p.batches, 1)) / max(p.epochs, 1)
        self.progress_bar.setValue(int(1000 * (self._backbone_index + min(done, 1.0)) / n))
        which = f" ({self._backbone_index + 1} of {n})" if n > 1 else ""
        self.progress_bar.setFormat(
            f"{DISPLAY_NAMES.get(p.backbone, p.backbone)}{which} · epoch {p.epoch} of "
            f"{p.epochs} · batch {p.batch} of {p.batches} · {p.images_per_second:.1f} img/s"
        )
        cancelling = self._train_worker is not None and self._train_worker.cancelled
        if p.kind == "batch":
            left = (p.batches - p.batch) * self._train_batch / max(p.images_per_second, 1e-9)
            if not cancelling:  # keep the "cancelling" message up
                self.status_label.setText(
                    f"{PHASE_NAMES.get(p.phase, p.phase)} · training loss {p.loss:.4f}, "
                    f"accuracy {_pct(p.accuracy)} · epoch ends in about {_duration(left)}"
                )
            return
        e = p.epoch_log
        if e is None:
            return
        for series in LOSS_SERIES:
            self.loss_plot.add_point(series, e.epoch, getattr(e, series))
        for series in METRIC_SERIES:
            self.metrics_plot.add_point(series, e.epoch, getattr(e, series))
        text = (
            f"Epoch {e.epoch} ({PHASE_NAMES.get(e.phase, e.phase)}): loss {e.loss:.4f} · "
            f"validation loss {e.val_loss:.4f}, balanced accuracy {_pct(e.val_balanced_accuracy)}, "
            f"AUC {_num(e.val_auc)} · {_duration(e.seconds)}"
        )
        if not cancelling:
            self.status_label.setText(text)
        self.log_view.appendPlainText(f"{p.backbone}: {text}")

    # ------------------------------------------------------------------ results
    @Slot(object)
    def _on_train_done(self, session: Any) -> None:
        self._finish_worker()
        self.session = session
        runs = list(session.runs)
        out = self._train_out or self.output_folder()
        self.progress_bar.setValue(1000 if not session.cancelled else self.progress_bar.value())
        self.progress_bar.setFormat("cancelled" if session.cancelled else "done")
        saved = ", ".join(Path(r.bundle_path).name for r in runs if r.bundle_path)
        if session.cancelled and runs:
            status = (
                f"Cancelled. The best epoch so far was scored and saved, marked CANCELLED: {saved}."
            )
        elif session.cancelled:
            status = "Cancelled before the first epoch finished: nothing was saved."
        else:
            status = f"Finished: {len(runs)} model{'s' if len(runs) != 1 else ''} saved in {out}."
        for backbone, reason in session.failures:
            if "first epoch" not in reason or runs:
                status += f" {backbone}: {reason}."
        self.status_label.setStyleSheet("")
        self.status_label.setText(status)
        self.log_view.appendPlainText(status)
        self._show_results(session)
        if runs:
            last = runs[-1]
            self.show_history(last.history, last.backbone)
        registered = []
        for card in self.cards:
            bundle = card.run.bundle_path
            if bundle and _is_inside(bundle, user_models_dir()):
                card.set_registered(Path(bundle), "Saved in your models folder: in the model list.")
                registered.append(Path(bundle))
        self._refresh_start()
        for path in registered:
            self.bundle_registered.emit(path)
        self.training_finished.emit(session)

    @Slot(str, str)
    def _on_train_failed(self, message: str, details: str) -> None:
        self._finish_worker()
        self.progress_bar.setFormat("failed")
        self.status_label.setStyleSheet(ERROR_STYLE)
        self.status_label.setText(f"Training failed: {message}")
        self.log_view.appendPlainText(f"Training failed: {message}")
        self._refresh_start()
        self.show_error_dialog("Training failed", message, details)
        self.training_finished.emit(None)

    def _finish_worker(self) -> None:
        worker = self._train_worker
        self._train_worker = None
        if worker is not None:
            worker.wait(5000)  # run() has emitted its result; let the thread end cleanly

    def _clear_results(self) -> None:
        for card in self.cards:
            self.cards_layout.removeWidget(card)
            card.deleteLater()
        self.cards = []
        self.results_box.setVisible(False)
        self.comparison_xlsx_button.setVisible(False)
        self.comparison_md_button.setVisible(False)

    def _show_results(self, session: Any) -> None:
        self._clear_results()
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
        self.results_box.setVisible(bool(self.cards))

    def _card_for(self, widget: object) -> MetricsCard | None:
        for card in self.cards:
            if widget in (
                card.report_button,
                card.folder_button,
                card.curves_button,
                card.register_button,
            ):
                return card
        return None

    @Slot()
    def _card_open_report(self) -> None:
        card = self._card_for(self.sender())
        if card is not None and card.run.report_xlsx:
            self.open_path(Path(card.run.report_xlsx))

    @Slot()
    def _card_open_folder(self) -> None:
        card = self._card_for(self.sender())
        if card is not None:
            folder = card.run.run_folder or Path(card.run.bundle_path).parent
            self.open_path(Path(folder))

    @Slot()
    def _card_show_curves(self) -> None:
        card = self._card_for(self.sender())
        if card is not None:
            self.show_history(card.run.history, card.run.backbone)

    @Slot()
    def _card_register(self) -> None:
        card = self._card_for(self.sender())
        if card is not None and card.run.bundle_path:
            self.register_bundle(Path(card.run.bundle_path))

    def _open_comparison_xlsx(self) -> None:
        if self.session is not None and self.session.comparison_xlsx:
            self.open_path(Path(self.session.comparison_xlsx))

    def _open_comparison_md(self) -> None:
        if self.session is not None and self.session.comparison_md:
            self.open_path(Path(self.session.comparison_md))

    def open_path(self, path: Path) -> bool:
        """Open a file or folder with the system's application (tests replace this)."""
        ok = QDesktopServices.openUrl(QUrl.fromLocalFile(str(path)))
        if not ok:
            self.status_label.setText(f"Could not open {path}; open it from the file manager.")
        return bool(ok)

    # ------------------------------------------------------------------ registration
    def register_bundle(self, bundle: Path) -> None:
        """Make `bundle` available for analysis: verify it and copy it to the models folder."""
        bundle = Path(bundle)
        card = next((c for c in self.cards if Path(c.run.bundle_path or "") == bundle), None)
        folder = user_models_dir()
        if _is_inside(bundle, folder):
            if card is not None:
                card.set_registered(bundle, "Already in your models folder.")
            self.bundle_registered.emit(bundle)
            return
        if card is not None:
            card.register_button.setEnabled(False)
            card.set_message("Checking the bundle and copying it to your models folder…")
        worker = Worker(lambda _w: register_bundle_file(bundle, folder), self)
        worker.succeeded.connect(self._on_registered)
        worker.failed.connect(self._on_register_failed)
        worker.setObjectName(str(bundle))
        self._run_worker(worker)

    @Slot(object)
    def _on_registered(self, outcome: RegisterOutcome) -> None:
        card = next(
            (c for c in self.cards if Path(c.run.bundle_path or "") == outcome.source), None
        )
        if outcome.status == "conflict":
            text = (
                f"Not added: a different file named {outcome.target.name} already exists in "
                f"{outcome.target.parent}; it was kept. Rename this bundle file and add it again."
            )
            if card is not None:
                card.register_button.setEnabled(True)
                card.set_message(text, error=True)
            self.status_label.setText(text)
            return
        text = (
            f"Added to the model list: {outcome.target}"
            if outcome.status == "copied"
            else f"Already in the model list: {outcome.target}"
        )
        if card is not None:
            card.set_registered(outcome.target, text)
        self.status_label.setText(text)
        self.bundle_registered.emit(outcome.target)

    @Slot(str, str)
    def _on_register_failed(self, message: str, details: str) -> None:
        source = Path(self.sender().objectName()) if self.sender() is not None else None
        card = next((c for c in self.cards if Path(c.run.bundle_path or "") == source), None)
        text = f"Not added to the model list: {message}"
        if card is not None:
            card.register_button.setEnabled(True)
            card.set_message(text, error=True)
        self.status_label.setText(text)
        self.show_error_dialog("The model could not be added", message, details)

    # ------------------------------------------------------------------ plumbing
    def _run_worker(self, worker: Worker) -> None:
        self._workers.add(worker)
        worker.finished.connect(self._on_worker_finished)
        worker.start()

    @Slot()
    def _on_worker_finished(self) -> None:
        worker = self.sender()
        if isinstance(worker, Worker):
            self._workers.discard(worker)
            worker.deleteLater()

    def show_error_dialog(self, title: str, message: str, details: str = "") -> None:
        """A modal message with the traceback under "Show Details" (tests replace this)."""
        box = QMessageBox(QMessageBox.Warning, title, message, QMessageBox.Ok, self)
        if details:
            box.setDetailedText(details)
        box.exec()

    def showEvent(self, event: QShowEvent) -> None:  # noqa: N802 - Qt API
        super().showEvent(event)
        if self._train_worker is None:
            self._on_weights_mode_changed()  # weight files may have been placed meanwhile


def _same_folder(a: Path, b: Path) -> bool:
    try:
        return Path(a).resolve() == Path(b).resolve()
    except OSError:
        return False
