"""The Training page's settings: data, backbones and weights, split, where to save.

Everything a training run is configured from, plus the check that each chosen backbone's
ImageNet weights are on disk before anything starts (file existence only, so TensorFlow
stays unloaded in the GUI thread). "Start from" fine-tunes an installed model instead
(`TrainConfig.init_from`, as `leukgui train --init-from`): the parent then fixes the
backbone, input size, weights and stain normalisation, so those controls are locked and say
why. `state`/`restore_state` are what the main window keeps between sessions.
"""

from __future__ import annotations

import contextlib
import html
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PySide6.QtCore import QCoreApplication, QEvent, QObject, Qt, Signal
from PySide6.QtWidgets import (
    QAbstractScrollArea,
    QAbstractSpinBox,
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
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
from leukgui.core.bundle import BundleError, BundleInfo, find_bundles, read_manifest
from leukgui.core.paths import user_models_dir
from leukgui.gui.dataset_box import DatasetBox, hint_label
from leukgui.gui.theme import status_style
from training.datasets import SubjectRule, parse_subject_rule
from training.splits import split_check

__all__ = [
    "AUTO_SIZE",
    "DISPLAY_NAMES",
    "START_IMAGENET",
    "START_OTHER",
    "MAIN_BACKBONES",
    "MORE_BACKBONES",
    "WEIGHTS_FILE",
    "WEIGHTS_IMAGENET",
    "WEIGHTS_NONE",
    "TrainingForm",
    "display_name",
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
WEIGHTS_IMAGENET, WEIGHTS_NONE, WEIGHTS_FILE = "imagenet", "none", "file"
WEIGHT_CHOICES = (
    (WEIGHTS_IMAGENET, "ImageNet (Keras cache or bundled)"),
    (WEIGHTS_NONE, "None (from scratch)"),
    (WEIGHTS_FILE, "Weights file…"),
)
AUTO_SIZE = 31  # the input-size spin box's "auto" value; real sizes start at 32
# "Start from" item data: ImageNet transfer learning, or "pick a model file"; a model's item
# holds its file path.
START_IMAGENET, START_OTHER = "imagenet", "other-file"
# What the form shows before a model is chosen, so choosing ImageNet again gives it back.
_IMAGENET_SCHEDULE = {"epochs": 30, "head_epochs": 5}


def display_name(backbone: str) -> str:
    """A backbone as users know it ("EfficientNetB0"); unknown names as given."""
    return DISPLAY_NAMES.get(backbone, backbone)


def _group(title: str) -> tuple[QGroupBox, QVBoxLayout]:
    box = QGroupBox(title)
    layout = QVBoxLayout(box)
    layout.setSpacing(6)
    return box, layout


def _same_folder(a: Path, b: Path) -> bool:
    """Whether two paths name the same file or folder."""
    try:
        return Path(a).resolve() == Path(b).resolve()
    except OSError:
        return False


def _file_label(path: Path) -> str:
    """A hand-picked model file in the "Start from" list: its name and version when readable."""
    try:
        manifest = read_manifest(path)
        return f"{manifest['name']} v{manifest['version']} · {path.name}"
    except Exception:  # noqa: BLE001 - the problem line says why; the label stays plain
        return path.name


def _rate(value: float) -> str:
    """A learning rate as people write it: 1e-4, not 1e-04."""
    return f"{value:.0e}".replace("e-0", "e-")


def _narrow(combo: QComboBox) -> None:
    """Let a combo box with long item texts shrink with the panel instead of widening it."""
    combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
    combo.setMinimumContentsLength(12)


STAIN_CHOICES = (
    ("none", "None (colour jitter)"),
    ("reinhard", "Reinhard"),
    ("both", "Both, compared"),
)
STAIN_TIP = (
    "Reinhard stain normalisation maps each cell's colours onto the training cells' "
    "(fitted on training cells only, stored in the model file, applied in analysis "
    "too). 'Both' trains each backbone twice and compares them on the same split."
)
SUBJECT_CHOICES = (
    ("auto", "As the data says"),
    ("folder", "A folder level below the data folder"),
    ("pattern", "A file-name pattern"),
)


class _WheelOnlyWhenFocused(QObject):
    """Scrolling the long form over a spin box or a list must scroll the form, not change
    epochs or the model unnoticed: the wheel acts on such a field only once it is clicked."""

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # noqa: N802 - Qt API
        if (
            event.type() != QEvent.Type.Wheel
            or not isinstance(watched, QWidget)
            or watched.hasFocus()
        ):
            return False
        area = watched.parentWidget()
        while area is not None and not isinstance(area, QAbstractScrollArea):
            area = area.parentWidget()
        if area is not None:  # the form scrolls as if the field were not there
            QCoreApplication.sendEvent(area.viewport(), event)
        return True


class TrainingForm(QWidget):
    """The four numbered setting groups; `changed` whenever whether Start may run can change."""

    changed = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._weights_problem = ""
        self._parent_info: BundleInfo | None = None  # the model a fine-tune starts from
        self._start_index = 0  # the "Start from" item before the current one
        # the ImageNet settings a model choice replaced, given back when ImageNet is chosen
        self._imagenet_settings: dict[str, Any] = {
            **_IMAGENET_SCHEDULE,
            "backbones": ["efficientnetb0"],
            "input_size": None,
            "stain": "none",
        }
        self._checked_split: tuple[Any, tuple, tuple[str, list[str]]] | None = None
        self._checked_data: tuple[Any, list[str]] | None = None  # (scan, its guard rails)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 8, 4)
        self.dataset = DatasetBox("1  Labelled cells")
        layout.addWidget(self.dataset)
        layout.addWidget(self._build_model_group())
        layout.addWidget(self._build_split_group())
        layout.addWidget(self._build_output_group())
        layout.addStretch(1)
        self.dataset.changed.connect(self.changed)
        self._wheel_guard = _WheelOnlyWhenFocused(self)
        for field in self.findChildren(QAbstractSpinBox) + self.findChildren(QComboBox):
            field.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
            field.installEventFilter(self._wheel_guard)
        self.check_weights()

    # ------------------------------------------------------------------ layout
    def _build_model_group(self) -> QGroupBox:
        box, layout = _group("2  Model")
        start = QFormLayout()
        start.setFieldGrowthPolicy(QFormLayout.AllNonFixedFieldsGrow)
        self.start_combo = QComboBox()
        _narrow(self.start_combo)
        self.start_combo.setToolTip(
            "ImageNet: a new model by transfer learning. An installed model: fine-tune it on "
            "these cells (its weights, backbone, input size and stain normalisation), ending "
            "with the parent against the new model on the same test subjects."
        )
        start.addRow("Start from:", self.start_combo)
        layout.addLayout(start)
        self.start_status = QLabel("")
        self.start_status.setWordWrap(True)
        self.start_status.setTextInteractionFlags(Qt.TextSelectableByMouse)
        self.start_status.setTextFormat(Qt.RichText)
        self.start_status.setVisible(False)
        layout.addWidget(self.start_status)
        layout.addWidget(QLabel("Backbones (each trains on the same split):"))
        self.backbone_checks: dict[str, QCheckBox] = {}
        main = QHBoxLayout()
        for name in MAIN_BACKBONES:
            check = QCheckBox(display_name(name))
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
            check = QCheckBox(display_name(name))
            check.setToolTip(f"{name}, {get_spec(name).input_size} px by default")
            self.backbone_checks[name] = check
            more.addWidget(check)
        more.addStretch(1)
        self.more_widget.setVisible(False)
        layout.addWidget(self.more_widget)

        form = QFormLayout()
        form.setFieldGrowthPolicy(QFormLayout.AllNonFixedFieldsGrow)
        self.weights_combo = QComboBox()
        _narrow(self.weights_combo)
        for key, text in WEIGHT_CHOICES:
            self.weights_combo.addItem(text, key)
        form.addRow("Weights:", self.weights_combo)
        self._weights_form = form  # the Weights row is hidden while fine-tuning a model
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
        self.stain_combo = QComboBox()
        for key, text in STAIN_CHOICES:
            self.stain_combo.addItem(text, key)
        self.stain_combo.setToolTip(STAIN_TIP)
        _narrow(self.stain_combo)
        form.addRow("Stain:", self.stain_combo)
        layout.addLayout(form)

        for check in self.backbone_checks.values():
            check.toggled.connect(self.check_weights)
        self.more_toggle.toggled.connect(self._toggle_more)
        self.weights_combo.currentIndexChanged.connect(self.check_weights)
        self.weights_file_edit.textChanged.connect(self.check_weights)
        self.weights_file_browse.clicked.connect(self._browse_weights)
        self.weights_recheck.clicked.connect(self.check_weights)
        self.seed_spin.valueChanged.connect(self.changed)  # the split depends on the seed
        self.refresh_models()
        self.start_combo.currentIndexChanged.connect(self._on_start_changed)
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
        self.subject_combo = QComboBox()
        for key, text in SUBJECT_CHOICES:
            self.subject_combo.addItem(text, key)
        self.subject_combo.setToolTip(
            "Where each cell's subject (patient) comes from. 'As the data says': C-NMC file "
            "names, a patient folder below all/ or hem/, or a CSV subject column."
        )
        _narrow(self.subject_combo)
        form.addRow("Subjects from:", self.subject_combo)
        self.subject_folder_spin = QSpinBox()
        self.subject_folder_spin.setRange(1, 9)
        self.subject_folder_spin.setValue(2)
        self.subject_folder_spin.setToolTip(
            "1 = the first folder below the data folder (e.g. all/), 2 = the one below it "
            "(e.g. all/patient7/)"
        )
        form.addRow("Folder level:", self.subject_folder_spin)
        self.subject_pattern_edit = QLineEdit()
        self.subject_pattern_edit.setPlaceholderText(r"e.g. ^(P\d+)_ — the group is the subject")
        form.addRow("File-name pattern:", self.subject_pattern_edit)
        layout.addLayout(form)
        self.split_by_image_check = QCheckBox("Allow a split by image")
        self.split_by_image_check.setToolTip(
            "Where subjects are unknown each image counts as its own subject, so cells of one "
            "patient can be in training and test: scores are optimistic, and every report says so."
        )
        layout.addWidget(self.split_by_image_check)
        layout.addWidget(
            hint_label(
                "Only where subjects are unknown: each image then counts as its own subject and "
                "the scores are optimistic."
            )
        )
        layout.addWidget(
            hint_label(
                "All cells of one subject stay in one part, so scores measure new patients. "
                "The threshold and uncertainty band are chosen on validation; the scores shown "
                "are on test, with subject-level results first."
            )
        )
        self.split_warnings_label = QLabel("")
        self.split_warnings_label.setWordWrap(True)
        self.split_warnings_label.setTextInteractionFlags(Qt.TextSelectableByMouse)
        self.split_warnings_label.setVisible(False)
        layout.addWidget(self.split_warnings_label)
        self.validation_spin.valueChanged.connect(self.changed)
        self.test_spin.valueChanged.connect(self.changed)
        self.test_spin.valueChanged.connect(self.check_weights)  # no test: no comparison
        self.split_by_image_check.toggled.connect(self.changed)
        self.subject_combo.currentIndexChanged.connect(self._on_subject_rule_changed)
        self.subject_folder_spin.valueChanged.connect(self._on_subject_rule_changed)
        self.subject_pattern_edit.editingFinished.connect(self._on_subject_rule_changed)
        self.changed.connect(self._show_split_warnings)
        self._show_subject_fields()
        return box

    def _build_output_group(self) -> QGroupBox:
        box, layout = _group("4  Save to")
        row = QHBoxLayout()
        self.output_edit = QLineEdit(str(user_models_dir()))
        self.output_browse = QPushButton("Browse…")
        row.addWidget(self.output_edit, 1)
        row.addWidget(self.output_browse)
        layout.addLayout(row)
        self.output_hint = hint_label("")
        layout.addWidget(self.output_hint)
        self.output_browse.clicked.connect(self._browse_output)
        self.output_edit.textChanged.connect(self._on_output_changed)
        self._on_output_changed()
        return box

    # ------------------------------------------------------------------ values
    def selected_backbones(self) -> list[str]:
        return [name for name, check in self.backbone_checks.items() if check.isChecked()]

    def set_backbones(self, names: Sequence[str]) -> None:
        """Tick exactly these backbones (ValueError for an unknown name)."""
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

    # ------------------------------------------------------------------ start from
    def refresh_models(self) -> None:
        """List every installed model as a possible parent (the main window's model list:
        `find_bundles`), keeping the current choice and any model file picked by hand."""
        from leukgui.core.model_registry import current_bundle_path

        current = self.start_combo.currentData()
        picked = [
            (self.start_combo.itemText(i), self.start_combo.itemData(i))
            for i in range(self.start_combo.count())
            if self.start_combo.itemData(i, Qt.ItemDataRole.UserRole + 1) == "picked"
        ]
        found, broken = find_bundles()
        in_use = current_bundle_path()
        combo = self.start_combo
        combo.blockSignals(True)
        combo.clear()
        combo.addItem("ImageNet (transfer learning)", START_IMAGENET)
        combo.setItemData(0, "A new model from ImageNet weights (or from scratch)", Qt.ToolTipRole)
        for info in found:
            adopted = in_use is not None and _same_folder(info.path, in_use)
            text = f"{info.name} v{info.version}"
            text += " · DEMO" if info.demo else " · adopted (in use)" if adopted else ""
            combo.addItem(text, str(info.path))
            row = combo.count() - 1
            combo.setItemData(row, f"{display_name(info.backbone)}, {info.path}", Qt.ToolTipRole)
            if info.demo:
                combo.setItemData(
                    row,
                    "The demo model (synthetic cells): a fine-tune of it keeps the DEMO notice",
                    Qt.ToolTipRole,
                )
        for path, reason in broken:
            combo.addItem(f"⚠ {path.name} — unusable", None)
            row = combo.count() - 1
            combo.model().item(row).setEnabled(False)
            combo.setItemData(row, reason, Qt.ToolTipRole)
        for text, data in picked:
            if combo.findData(data) < 0:
                self._add_picked(text, data)
        if current not in (None, START_IMAGENET, START_OTHER) and combo.findData(current) < 0:
            # a chosen model that is gone stays chosen, so the form says so (never a switch
            # back to ImageNet behind the user's back)
            self._add_picked(_file_label(Path(str(current))), str(current))
        combo.addItem("Other model file…", START_OTHER)
        index = combo.findData(current) if current is not None else 0
        combo.setCurrentIndex(max(index, 0))
        self._start_index = combo.currentIndex()
        combo.blockSignals(False)

    def _add_picked(self, text: str, data: str) -> int:
        """A model file chosen by hand, listed just above "Other model file…"."""
        combo = self.start_combo
        other = combo.findData(START_OTHER)
        row = other if other >= 0 else combo.count()
        combo.insertItem(row, text, data)
        combo.setItemData(row, data, Qt.ToolTipRole)
        combo.setItemData(row, "picked", Qt.ItemDataRole.UserRole + 1)
        return row

    def init_from(self) -> Path | None:
        """The model file a fine-tune starts from, or None for ImageNet."""
        data = self.start_combo.currentData()
        return None if data in (None, START_IMAGENET, START_OTHER) else Path(str(data))

    def set_init_from(self, path: str | Path | None, *, schedule: bool = True) -> None:
        """Start from this model file (None: ImageNet); a file not in the list is added.

        `schedule` applies the fine-tune schedule (`INIT_FROM_DEFAULTS`) as the command line
        does; restoring saved settings keeps the saved numbers instead."""
        combo = self.start_combo
        combo.blockSignals(True)  # inserting a row moves the current one: no reaction yet
        if path is None or str(path) == "":
            index = 0
        else:
            index = combo.findData(str(path))
            if index < 0:
                index = self._add_picked(_file_label(Path(path)), str(path))
        combo.setCurrentIndex(index)
        combo.blockSignals(False)
        self._parent_info = None  # read and lock again, whatever was restored meanwhile
        self._apply_start(schedule=schedule)

    def parent_info(self) -> BundleInfo | None:
        """The chosen parent model's manifest (None for ImageNet or an unreadable file)."""
        return self._parent_info

    def _on_start_changed(self, index: int) -> None:
        if self.start_combo.itemData(index) == START_OTHER:
            path = self._pick_model_file()
            if not path:  # cancelled: back to what was chosen before
                self.start_combo.blockSignals(True)
                self.start_combo.setCurrentIndex(self._start_index)
                self.start_combo.blockSignals(False)
                return
            self.set_init_from(path)
            return
        self._apply_start(schedule=True)

    def _pick_model_file(self) -> str:
        """Ask for a model file (tests replace this)."""
        path, _ = QFileDialog.getOpenFileName(
            self,
            "Fine-tune from a model file",
            str(user_models_dir()),
            "LeukGUI models (*.leukmodel);;All (*)",
        )
        return path

    def _apply_start(self, schedule: bool) -> None:
        """Lock the settings the parent fixes (or unlock them for ImageNet) and, when
        `schedule`, fill in the fine-tune schedule or give back the ImageNet settings."""
        was_parent = self.start_combo.itemData(self._start_index) not in (
            START_IMAGENET,
            START_OTHER,
            None,
        )
        self._start_index = self.start_combo.currentIndex()
        path = self.init_from()
        if path is None:
            if schedule and was_parent:
                self._give_back_imagenet_settings()
            self._parent_info = None
            self._lock_for_parent(None)
            self.check_weights()
            return
        if schedule and not was_parent:
            self._imagenet_settings = {
                "epochs": self.epochs_spin.value(),
                "head_epochs": self.head_epochs_spin.value(),
                "backbones": self.selected_backbones(),
                "input_size": self.input_size(),
                "stain": self.stain_combo.currentData(),
            }
        self.check_weights()  # reads the parent's manifest, or says why it cannot
        if self._parent_info is not None and schedule:
            from training.trainer import INIT_FROM_DEFAULTS

            self.epochs_spin.setValue(int(INIT_FROM_DEFAULTS["epochs"]))
            self.head_epochs_spin.setValue(int(INIT_FROM_DEFAULTS["head_epochs"]))

    def _give_back_imagenet_settings(self) -> None:
        saved = self._imagenet_settings
        self.epochs_spin.setValue(int(saved["epochs"]))
        self.head_epochs_spin.setValue(int(saved["head_epochs"]))
        with contextlib.suppress(ValueError):
            self.set_backbones(saved["backbones"] or ["efficientnetb0"])
        size = saved["input_size"]
        self.size_spin.setValue(AUTO_SIZE if size is None else int(size))
        index = self.stain_combo.findData(saved["stain"])
        self.stain_combo.setCurrentIndex(max(index, 0))

    def _lock_for_parent(self, info: BundleInfo | None) -> None:
        """A fine-tune keeps the parent's backbone, input size, weights and stain: tick and
        lock those, each control's tooltip saying why (None: unlock everything)."""
        why = (
            f"Fine-tuning {info.name} v{info.version} keeps its backbone "
            f"({display_name(info.backbone)}); choose “ImageNet” under Start from for another."
            if info is not None
            else ""
        )
        for name, check in self.backbone_checks.items():
            check.blockSignals(True)
            if info is not None:
                check.setChecked(name == info.backbone)
            check.blockSignals(False)
            check.setEnabled(info is None)
            check.setToolTip(why or f"{name}, {get_spec(name).input_size} px by default")
        if info is not None and info.backbone in MORE_BACKBONES:
            self.more_toggle.setChecked(True)
        size = int(info.manifest.get("input_size", 0)) if info is not None else 0
        if info is not None and size:
            self.size_spin.setValue(size)
        self.size_spin.setEnabled(info is None)
        self.size_spin.setToolTip(f"The parent model takes {size} px" if info else "")
        self.weights_combo.setEnabled(info is None)
        self.weights_combo.setToolTip(
            "A fine-tune starts from the parent model's own weights" if info else ""
        )
        # "ImageNet", greyed, would still read as the starting point: hide the row instead.
        self._weights_form.setRowVisible(self.weights_combo, info is None)
        stain = (info.manifest.get("stain_normalisation") or {}) if info is not None else {}
        method = stain.get("method", "none") if isinstance(stain, dict) else "none"
        if info is not None:
            self.stain_combo.setCurrentIndex(max(self.stain_combo.findData("none"), 0))
        self.stain_combo.setEnabled(info is None)
        self.stain_combo.setToolTip(
            f"A fine-tune keeps the parent model's own stain normalisation ({method})"
            if info is not None
            else STAIN_TIP
        )

    def _parent_problem(self, path: Path) -> tuple[BundleInfo | None, str]:
        """The parent's manifest, or why it cannot be fine-tuned (file gone, unreadable,
        the demo model, a backbone this version does not know)."""
        if not path.is_file():
            return None, f"The model file to start from is gone: {path}. Choose another."
        try:
            info = BundleInfo(path=path, manifest=read_manifest(path), source="file")
            get_spec(info.backbone)
            int(info.manifest["input_size"])
        except (BundleError, OSError, ValueError, KeyError, TypeError) as exc:
            return None, f"The model file to start from cannot be read: {exc}"
        return info, ""

    def _show_parent(self, path: Path) -> str:
        """Read the chosen parent, lock the form to it, say what a fine-tune does; the
        problem that keeps Start disabled, or ""."""
        info, problem = self._parent_problem(path)
        if info is None or self._parent_info is None or info.sha256 != self._parent_info.sha256:
            self._lock_for_parent(info)
        self._parent_info = info
        error = status_style("error")
        if info is None:
            self.start_status.setText(f"<span style='{error}'>✗ {html.escape(problem)}</span>")
            self.start_status.setVisible(True)
            return problem
        from training.trainer import INIT_FROM_DEFAULTS

        d = INIT_FROM_DEFAULTS
        lines = [
            f"Fine-tune <b>{html.escape(info.name)} v{html.escape(info.version)}</b> "
            f"({html.escape(display_name(info.backbone))}, {int(info.manifest['input_size'])} "
            "px): its weights, preprocessing and stain normalisation. The head first, then "
            f"the top layers: learning rates {_rate(d['head_lr'])} and "
            f"{_rate(d['fine_tune_lr'])}, at most {int(d['epochs'])} epochs, stopping early "
            "when the validation cells stop improving.",
            "Ends with the parent against the new model on the same test subjects. The model "
            "in use does not change until someone adopts the new one.",
        ]
        if info.demo:
            warn = status_style("warning")
            lines.append(
                f"<span style='{warn}'>⚠ This is the DEMO model (synthetic cells): the new "
                "model keeps the DEMO notice on every report. For a model to use on real "
                "cells, start from ImageNet or from a real model.</span>"
            )
        if self.test_spin.value() == 0:
            warn = status_style("warning")
            lines.append(
                f"<span style='{warn}'>⚠ Test is 0 %: without a test part the parent and the "
                "new model cannot be compared.</span>"
            )
        self.start_status.setText("<br>".join(lines))
        self.start_status.setVisible(True)
        return ""

    def input_size(self) -> int | None:
        value = self.size_spin.value()
        return None if value == AUTO_SIZE else value

    def output_folder(self) -> Path:
        text = self.output_edit.text().strip()
        return Path(text) if text else user_models_dir()

    def problem(self) -> str:
        """Why Start cannot run with these settings, or "" when it can."""
        data = self.dataset.problem() or self.split_problem()
        if data:
            return data
        if not self.selected_backbones() and self.init_from() is None:
            return "Choose at least one backbone."
        if self._weights_problem:
            return self._weights_problem
        if not self.output_edit.text().strip():
            return "Choose where to save the model."
        return ""

    def subject_rule(self) -> SubjectRule | None:
        """Where the form says subjects come from (None: as the data says); ValueError for a
        bad pattern."""
        mode = self.subject_combo.currentData()
        if mode == "folder":
            return parse_subject_rule(self.subject_folder_spin.value(), None)
        if mode == "pattern":
            text = self.subject_pattern_edit.text().strip()
            if not text:
                raise ValueError("type the file-name pattern that holds the subject")
            return parse_subject_rule(None, text)
        return None

    def _split_check(self) -> tuple[str, list[str]]:
        """(why the scanned cells cannot be split with these settings or "", warnings).

        The rule is `training.splits.split_check`, which runs the very splitter training
        uses, so Start is never enabled for a split that would then be refused.
        """
        try:
            self.subject_rule()
        except ValueError as exc:
            return f"Subjects: {exc}.", []
        preview = self.dataset.preview()
        if preview is None or preview.scan is None or not preview.scan.records:
            return "", []
        scan = preview.scan
        if scan.image_subjects and not self.split_by_image_check.isChecked():
            return (
                f"Subjects (patients) are unknown for {scan.image_subjects:,} of "
                f"{len(scan.records):,} cells, so a split would be by image and its scores "
                "optimistic. Under Split, say where subjects come from (a folder level or a "
                "file-name pattern), or tick “Allow a split by image”.",
                [],
            )
        options = self.split_options()
        # Start, the status line and the warnings all ask after every change: split once.
        key = (options.validation, options.test, options.seed)
        cached = self._checked_split
        if cached is None or cached[0] is not scan or cached[1] != key:
            result = split_check(
                scan.records, validation=options.validation, test=options.test, seed=options.seed
            )
            cached = self._checked_split = (scan, key, result)
        return cached[2]

    def split_problem(self) -> str:
        """Why the scanned cells cannot be split with these settings, or ""."""
        return self._split_check()[0]

    def split_warnings(self) -> list[str]:
        """What a user should know before Start: the data set's guard rails (few subjects
        of a class, an extreme class balance, one reviewer; `training.run.data_warnings`,
        as the trainer logs them) and the split's (few subjects in a part, by image...)."""
        return self._data_warnings() + self._split_check()[1]

    def _data_warnings(self) -> list[str]:
        preview = self.dataset.preview()
        if preview is None or preview.scan is None or not preview.scan.records:
            return []
        scan = preview.scan
        if self._checked_data is None or self._checked_data[0] is not scan:
            from training.run import data_warnings, reviewers_of

            reviewers = reviewers_of(preview.path, scan.records)
            self._checked_data = (scan, data_warnings(scan.records, reviewers))
        return self._checked_data[1]

    def _show_split_warnings(self) -> None:
        warnings = self.split_warnings()
        style = status_style("warning")
        self.split_warnings_label.setText(
            "<br>".join(f"<span style='{style}'>⚠ {html.escape(w)}</span>" for w in warnings)
        )
        self.split_warnings_label.setVisible(bool(warnings))

    def _show_subject_fields(self) -> None:
        mode = self.subject_combo.currentData()
        for widget, wanted in (
            (self.subject_folder_spin, mode == "folder"),
            (self.subject_pattern_edit, mode == "pattern"),
        ):
            widget.setVisible(wanted)
            label = self._form_label(widget)
            if label is not None:
                label.setVisible(wanted)

    def _form_label(self, widget: QWidget) -> QWidget | None:
        parent = widget.parentWidget()
        for layout in parent.findChildren(QFormLayout) if parent is not None else []:
            label = layout.labelForField(widget)
            if label is not None:
                return label
        return None

    def _on_subject_rule_changed(self) -> None:
        self._show_subject_fields()
        try:
            rule = self.subject_rule()
        except ValueError:
            self.changed.emit()  # the problem line says what is wrong with the pattern
            return
        self.dataset.set_subject_rule(rule)
        self.changed.emit()

    def make_config(self) -> Any:
        """The trainer's TrainConfig for the first chosen backbone (ValueError if invalid)."""
        from training.trainer import INIT_FROM_DEFAULTS, TrainConfig

        path, info = self.init_from(), self._parent_info
        if path is not None:
            if info is None or not _same_folder(info.path, path):
                raise ValueError(self._weights_problem or f"cannot read {path}")
            # as `leukgui train --init-from`: the parent fixes backbone, size, weights, stain
            return TrainConfig(
                backbone=info.backbone,
                input_size=int(info.manifest["input_size"]),
                batch_size=self.batch_spin.value(),
                epochs=self.epochs_spin.value(),
                head_epochs=self.head_epochs_spin.value(),
                head_lr=float(INIT_FROM_DEFAULTS["head_lr"]),
                fine_tune_lr=float(INIT_FROM_DEFAULTS["fine_tune_lr"]),
                seed=self.seed_spin.value(),
                init_from=str(path),
            )
        weights = {
            WEIGHTS_IMAGENET: "imagenet",
            WEIGHTS_NONE: "none",
            WEIGHTS_FILE: self.weights_file_edit.text().strip(),
        }[self.weights_mode()]
        return TrainConfig(
            backbone=self.selected_backbones()[0],
            weights=weights,
            input_size=self.input_size(),
            batch_size=self.batch_spin.value(),
            epochs=self.epochs_spin.value(),
            head_epochs=self.head_epochs_spin.value(),
            seed=self.seed_spin.value(),
            stain="none" if self.stains() else str(self.stain_combo.currentData()),
        )

    def stains(self) -> list[str] | None:
        """Stain settings to train each backbone with, when more than one ("both")."""
        if self.init_from() is not None:
            return None  # the parent's own stain normalisation
        return ["none", "reinhard"] if self.stain_combo.currentData() == "both" else None

    def split_options(self) -> Any:
        """The subject-level split the form asks for (training.run.SplitOptions)."""
        from training.run import SplitOptions

        return SplitOptions(
            validation=self.validation_spin.value() / 100,
            test=self.test_spin.value() / 100,
            seed=self.seed_spin.value(),
            split_by="image" if self.split_by_image_check.isChecked() else "subject",
        )

    # ------------------------------------------------------------------ persisted state
    def state(self) -> dict[str, Any]:
        """The settings worth keeping between sessions."""
        return {
            "data_folder": self.dataset.folder_edit.text().strip(),
            "backbones": self.selected_backbones(),
            "epochs": self.epochs_spin.value(),
            "head_epochs": self.head_epochs_spin.value(),
            "batch_size": self.batch_spin.value(),
            "input_size": self.input_size(),
            "seed": self.seed_spin.value(),
            "validation_percent": self.validation_spin.value(),
            "test_percent": self.test_spin.value(),
            "subjects_from": self.subject_combo.currentData(),
            "stain": self.stain_combo.currentData(),
            "subject_folder": self.subject_folder_spin.value(),
            "subject_pattern": self.subject_pattern_edit.text(),
            "weights": self.weights_mode(),
            "weights_file": self.weights_file_edit.text().strip(),
            "output_folder": self.output_edit.text().strip(),
            "start_from": str(self.init_from() or ""),
        }

    def restore_state(self, state: dict[str, Any]) -> None:
        """Apply saved settings; values of the wrong type or range are ignored, not fatal."""

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
        number("subject_folder", self.subject_folder_spin)
        pattern = state.get("subject_pattern")
        if isinstance(pattern, str):
            self.subject_pattern_edit.setText(pattern)
        stain = state.get("stain")
        if isinstance(stain, str) and self.stain_combo.findData(stain) >= 0:
            self.stain_combo.setCurrentIndex(self.stain_combo.findData(stain))
        mode = state.get("subjects_from")
        if isinstance(mode, str) and self.subject_combo.findData(mode) >= 0:
            self.subject_combo.setCurrentIndex(self.subject_combo.findData(mode))
        if "input_size" in state:
            if state["input_size"] is None:
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
        start = state.get("start_from")
        if isinstance(start, str):  # last: the parent locks what it fixes, keeps the numbers
            self.set_init_from(start.strip() or None, schedule=False)
        output = state.get("output_folder")
        if isinstance(output, str) and output.strip():
            self.output_edit.setText(output.strip())
        folder = state.get("data_folder")
        if isinstance(folder, str) and folder.strip():
            self.dataset.set_folder(folder.strip())

    # ------------------------------------------------------------------ reactions
    def _browse_weights(self) -> None:
        start = self.weights_file_edit.text().strip() or str(keras_cache_dir())
        path, _ = QFileDialog.getOpenFileName(
            self, "No-top ImageNet weights file", start, "Keras weights (*.h5 *.keras);;All (*)"
        )
        if path:
            self.weights_file_edit.setText(path)

    def _browse_output(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Save models to", str(self.output_folder()))
        if folder:
            self.output_edit.setText(folder)

    def _toggle_more(self, on: bool) -> None:
        self.more_widget.setVisible(on)
        self.more_toggle.setArrowType(Qt.DownArrow if on else Qt.RightArrow)

    def _on_output_changed(self) -> None:
        if _same_folder(self.output_folder(), user_models_dir()):
            text = "Your models folder: new models appear in the model list at once."
        else:
            text = (
                "Not your models folder: use “Add to model list” after training to make a "
                "model available for analysis."
            )
        self.output_hint.setText(text)
        self.changed.emit()

    def check_weights(self) -> None:
        """Show, before anything starts, whether each chosen backbone's weights are here.

        Only file existence is checked (verify=False), so TensorFlow stays unloaded; the
        trainer verifies the file's hash when it loads it.
        """
        parent = self.init_from()
        if parent is not None:  # the parent's own weights: nothing to look for
            self.weights_file_widget.setVisible(False)
            self.weights_recheck.setVisible(False)
            self.weights_status.setVisible(False)
            self.head_epochs_spin.setEnabled(True)
            self._weights_problem = self._show_parent(parent)
            self.changed.emit()
            return
        self._parent_info = None
        self.start_status.setVisible(False)
        mode = self.weights_mode()
        self.weights_file_widget.setVisible(mode == WEIGHTS_FILE)
        self.weights_recheck.setVisible(mode == WEIGHTS_IMAGENET)
        self.head_epochs_spin.setEnabled(mode != WEIGHTS_NONE)
        lines: list[str] = []
        problem = ""
        error = status_style("error")
        backbones = self.selected_backbones()
        if mode == WEIGHTS_IMAGENET:
            for name in backbones:
                try:
                    path = resolve_imagenet_weights(name, verify=False)
                except WeightsMissingError:
                    spec = get_spec(name)
                    others = [d for d in imagenet_search_dirs() if d != keras_cache_dir()]
                    lines.append(
                        f"<span style='{error}'>✗ {html.escape(display_name(name))}: "
                        f"missing. Place <b>{html.escape(spec.weights_file)}</b> in "
                        f"<b>{html.escape(str(keras_cache_dir()))}</b>"
                        + "".join(f" or {html.escape(str(d))}" for d in others)
                        + ".</span>"
                    )
                    problem = problem or f"ImageNet weights for {name} are missing (see Model)."
                else:
                    lines.append(
                        f"✓ {html.escape(display_name(name))}: {html.escape(path.name)} "
                        f"in {html.escape(str(path.parent))}"
                    )
        elif mode == WEIGHTS_FILE:
            text = self.weights_file_edit.text().strip()
            if len(backbones) > 1:
                problem = "A weights file fits one backbone: choose only one."
                lines.append(f"<span style='{error}'>{html.escape(problem)}</span>")
            if not text:
                problem = problem or "Choose the weights file."
            elif not Path(text).is_file():
                problem = problem or "The weights file does not exist."
                lines.append(f"<span style='{error}'>✗ not found: {html.escape(text)}</span>")
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
        self.changed.emit()
