"""The Training page's settings: data, backbones and weights, split, where to save.

Everything a training run is configured from, plus the check that each chosen backbone's
ImageNet weights are on disk before anything starts (file existence only, so TensorFlow
stays unloaded in the GUI thread). `state`/`restore_state` are what the main window keeps
between sessions.
"""

from __future__ import annotations

import contextlib
import html
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
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
from leukgui.core.paths import user_models_dir
from leukgui.gui.dataset_box import DatasetBox, hint_label
from leukgui.gui.theme import status_style
from training.datasets import SubjectRule, parse_subject_rule
from training.splits import split_check

__all__ = [
    "AUTO_SIZE",
    "DISPLAY_NAMES",
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


def display_name(backbone: str) -> str:
    """A backbone as users know it ("EfficientNetB0"); unknown names as given."""
    return DISPLAY_NAMES.get(backbone, backbone)


def _group(title: str) -> tuple[QGroupBox, QVBoxLayout]:
    box = QGroupBox(title)
    layout = QVBoxLayout(box)
    layout.setSpacing(6)
    return box, layout


def _same_folder(a: Path, b: Path) -> bool:
    try:
        return Path(a).resolve() == Path(b).resolve()
    except OSError:
        return False


def _narrow(combo: QComboBox) -> None:
    """Let a combo box with long item texts shrink with the panel instead of widening it."""
    combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
    combo.setMinimumContentsLength(12)


STAIN_CHOICES = (
    ("none", "None (colour jitter)"),
    ("reinhard", "Reinhard"),
    ("both", "Both, compared"),
)
SUBJECT_CHOICES = (
    ("auto", "As the data says"),
    ("folder", "A folder level below the data folder"),
    ("pattern", "A file-name pattern"),
)


class TrainingForm(QWidget):
    """The four numbered setting groups; `changed` whenever whether Start may run can change."""

    changed = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._weights_problem = ""
        self._checked_split: tuple[Any, tuple, tuple[str, list[str]]] | None = None
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 8, 4)
        self.dataset = DatasetBox("1  Labelled cells")
        layout.addWidget(self.dataset)
        layout.addWidget(self._build_model_group())
        layout.addWidget(self._build_split_group())
        layout.addWidget(self._build_output_group())
        layout.addStretch(1)
        self.dataset.changed.connect(self.changed)
        self.check_weights()

    # ------------------------------------------------------------------ layout
    def _build_model_group(self) -> QGroupBox:
        box, layout = _group("2  Model")
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
        self.stain_combo = QComboBox()
        for key, text in STAIN_CHOICES:
            self.stain_combo.addItem(text, key)
        self.stain_combo.setToolTip(
            "Reinhard stain normalisation maps each cell's colours onto the training cells' "
            "(fitted on training cells only, stored in the model file, applied in analysis "
            "too). 'Both' trains each backbone twice and compares them on the same split."
        )
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
        if not self.selected_backbones():
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
        """What a user should know about the split before Start (few subjects, by image...)."""
        return self._split_check()[1]

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
        from training.trainer import TrainConfig

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
