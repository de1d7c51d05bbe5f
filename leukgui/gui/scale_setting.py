"""The "µm per pixel" setting of smear fields: Automatic, a microscope preset or a number.

A thin view: the presets come from `leukgui.core.field_scale.PRESETS` and every typed value
is read by `leukgui.core.engine.parse_um_per_px`, the same check the command line's
--um-per-px uses, so the window and the CLI accept and refuse the same values with the same
words. Both are imported when the dialog opens, not when the window starts (they load
numpy and OpenCV).
"""

from __future__ import annotations

from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QLabel,
    QVBoxLayout,
    QWidget,
)

__all__ = ["AUTOMATIC_TEXT", "UmPerPxDialog", "um_per_px_label"]

AUTOMATIC_TEXT = "Automatic (measured from the red cells of each field)"


def um_per_px_label(value: float | None) -> str:
    """The setting as the menu shows it: "Automatic" or "0.0770"."""
    return "Automatic" if value is None else f"{value:.4g}"


class UmPerPxDialog(QDialog):
    """Choose µm per pixel: an editable list holding Automatic and the presets.

    A typed value is checked as it is typed: an invalid one shows the reason under the
    field and OK stays disabled, so a bad value is never used or saved.
    """

    def __init__(self, value: float | None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        from leukgui.core.field_scale import PRESETS

        self.setWindowTitle("µm per pixel")
        self.combo = QComboBox()
        self.combo.setEditable(True)
        self.combo.setInsertPolicy(QComboBox.InsertPolicy.NoInsert)
        # No completion: typing "0.05" must mean 0.05, not the first preset starting so.
        self.combo.setCompleter(None)
        self.combo.setMinimumContentsLength(40)
        self.combo.addItem(AUTOMATIC_TEXT, None)
        for name, um in PRESETS.items():
            self.combo.addItem(f"{um:.4g} — {name}", float(um))
        self.combo.lineEdit().setPlaceholderText("e.g. 0.077, or empty for automatic")
        self.combo.setToolTip(
            "Micrometres of the specimen per image pixel: camera pixel size / (objective x "
            "coupler). Automatic measures it on every field from its red cells (7.5 µm)."
        )
        self.error = QLabel()
        self.error.setWordWrap(True)
        self.error.setStyleSheet("color: #b00020;")
        self.buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel
        )
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        intro = QLabel(
            "How many micrometres one image pixel spans, for finding white cells in smear "
            "fields and measuring them in µm. Leave it on Automatic unless you know your "
            "microscope's value."
        )
        intro.setWordWrap(True)
        layout.addWidget(intro)
        layout.addWidget(self.combo)
        layout.addWidget(self.error)
        layout.addWidget(self.buttons)
        # Wide enough for the longest preset and a refusal message without clipping.
        self.setMinimumWidth(max(560, self.combo.sizeHint().width() + 40))
        self._value: float | None = value
        self.combo.editTextChanged.connect(self._check)
        if value is None:
            self.combo.setCurrentIndex(0)
        else:
            found = self.combo.findData(float(value))
            if found >= 0:
                self.combo.setCurrentIndex(found)
            else:
                self.combo.setEditText(f"{value:.6g}")
        self._check()

    def value(self) -> float | None:
        """The chosen µm per pixel (None: automatic); valid whenever OK is enabled."""
        return self._value

    def _check(self, *_: object) -> bool:
        """Read the text; show why it is refused and disable OK, or clear the message."""
        from leukgui.core.engine import parse_um_per_px

        text = self.combo.currentText().strip()
        index = self.combo.findText(text)
        ok_button = self.buttons.button(QDialogButtonBox.StandardButton.Ok)
        try:
            if index >= 0:
                value = self.combo.itemData(index)
            else:  # "0.07 — 100x ..." edited to "0.07", or a number typed
                value = parse_um_per_px(text.split("—")[0])
        except ValueError as exc:
            self.error.setText(str(exc))
            self.error.setVisible(True)
            ok_button.setEnabled(False)
            self.adjustSize()  # the wrapped message gets its lines
            return False
        self._value = None if value is None else float(value)
        self.error.setText("")
        self.error.setVisible(False)
        ok_button.setEnabled(True)
        return True
