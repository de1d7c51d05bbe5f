"""The Preferences dialog: settings that have no menu item of their own.

For now the inference runtime (`Preferences.runtime`): which engine classifies the cells,
and its precision (`Preferences.precision`, the CLI's `--precision`). Runtimes whose package
is not installed here are listed but cannot be chosen, with a tooltip that says so; the
dialog only edits a copy of the choices, and the window stores them in the preferences when
the dialog is accepted.
"""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QLabel,
    QVBoxLayout,
    QWidget,
)

from leukgui.core.preferences import Preferences
from leukgui.core.runtimes import (
    AUTO,
    ENGINE_LABELS,
    ONNX,
    OPENVINO,
    RUNTIME_CHOICES,
    TENSORFLOW,
    installed_engines,
)
from leukgui.gui.theme import status_style

__all__ = ["PRECISION_TEXTS", "RUNTIME_TEXTS", "PreferencesDialog", "runtime_choice_text"]

RUNTIME_TEXTS = {
    AUTO: "Automatic (fastest checked: GPU, then OpenVINO)",
    OPENVINO: ENGINE_LABELS[OPENVINO],
    ONNX: ENGINE_LABELS[ONNX],
    TENSORFLOW: f"{ENGINE_LABELS[TENSORFLOW]} (reference)",
}
_RUNTIME_TIPS = {
    AUTO: "A GPU whose self-check passes, else the fastest CPU engine installed here",
    OPENVINO: "Intel's engine: the fastest on most CPUs (bf16 where the CPU supports it), "
    "and Intel GPUs",
    ONNX: "ONNX Runtime: the CPU, DirectML GPUs on Windows, CUDA on Linux",
    TENSORFLOW: "The engine the models were trained with: the reference, slower on a CPU",
}
PRECISION_TEXTS = {
    AUTO: "Automatic (bf16 where the CPU supports it; cells near a decision boundary are "
    "recomputed in fp32)",
    "fp32": "Full precision (fp32)",
}
_PRECISION_TIPS = {
    AUTO: "OpenVINO computes in bf16 on CPUs with native support (P(ALL) within 0.02 of "
    "fp32 on the model's probe cells); cells within 0.05 of the threshold or a band edge are "
    "computed again in fp32",
    "fp32": "Every runtime computes in fp32: slower on CPUs with bf16 (the CLI's --precision fp32)",
}
RUNTIME_HELP = (
    "Used from the next analysis. A runtime is used only after it reproduces the model's "
    "probe cells; if it cannot, the next one runs and the status bar says why."
)


def runtime_choice_text(name: str) -> str:
    """A runtime choice as the window names it ("Automatic", "OpenVINO", ...)."""
    return "Automatic" if name == AUTO else ENGINE_LABELS.get(name, name)


class PreferencesDialog(QDialog):
    """Edit the settings below; `chosen_runtime()` and `chosen_precision()` are the choices.

    `installed` lists the engines installed here (default: `installed_engines()`, which
    looks for the packages without importing them).
    """

    def __init__(
        self,
        prefs: Preferences,
        parent: QWidget | None = None,
        *,
        installed: list[str] | None = None,
    ) -> None:
        super().__init__(parent)
        self.setWindowTitle("Preferences")
        installed = installed_engines() if installed is None else list(installed)
        layout = QVBoxLayout(self)
        form = QFormLayout()
        self.runtime_combo = QComboBox()
        model = self.runtime_combo.model()
        for row, name in enumerate(RUNTIME_CHOICES):
            self.runtime_combo.addItem(RUNTIME_TEXTS[name], name)
            tip = _RUNTIME_TIPS[name]
            if name != AUTO and name not in installed:
                model.item(row).setEnabled(False)
                tip = f"{ENGINE_LABELS[name]} is not installed here"
            self.runtime_combo.setItemData(row, tip, Qt.ItemDataRole.ToolTipRole)
        self.runtime_combo.currentIndexChanged.connect(self._runtime_changed)
        form.addRow("Inference &runtime:", self.runtime_combo)
        self.precision_combo = QComboBox()
        for row, name in enumerate(PRECISION_TEXTS):
            self.precision_combo.addItem(PRECISION_TEXTS[name], name)
            self.precision_combo.setItemData(
                row, _PRECISION_TIPS[name], Qt.ItemDataRole.ToolTipRole
            )
        self.precision_combo.setCurrentIndex(max(self.precision_combo.findData(prefs.precision), 0))
        form.addRow("&Precision:", self.precision_combo)
        layout.addLayout(form)
        help_label = QLabel(RUNTIME_HELP)
        help_label.setWordWrap(True)
        layout.addWidget(help_label)
        # The saved choice may name an engine uninstalled since: shown, and said.
        self.runtime_warning = QLabel()
        self.runtime_warning.setWordWrap(True)
        self.runtime_warning.setStyleSheet(status_style("warning"))
        layout.addWidget(self.runtime_warning)
        self.buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel
        )
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)
        layout.addWidget(self.buttons)
        index = self.runtime_combo.findData(prefs.runtime)
        self.runtime_combo.setCurrentIndex(max(index, 0))
        self._runtime_changed()

    def runtime_enabled(self, name: str) -> bool:
        """Whether `name` can be chosen (its engine is installed, or it is "auto")."""
        row = self.runtime_combo.findData(name)
        return row >= 0 and self.runtime_combo.model().item(row).isEnabled()

    def chosen_runtime(self) -> str:
        return str(self.runtime_combo.currentData())

    def chosen_precision(self) -> str:
        return str(self.precision_combo.currentData())

    def _runtime_changed(self, *_: object) -> None:
        name = self.chosen_runtime()
        missing = not self.runtime_enabled(name)
        self.runtime_warning.setText(
            f"{ENGINE_LABELS.get(name, name)} is not installed here: the next analysis would "
            "stop with an error. Choose another runtime."
            if missing
            else ""
        )
        self.runtime_warning.setVisible(missing)
        self.buttons.button(QDialogButtonBox.StandardButton.Ok).setEnabled(not missing)
