"""A smear field with every white cell found in it, boxed and lettered by its label.

Shown under the cell inspector when the selected cell came from a field: the reviewer sees
the cell in place, among its neighbours; clicking a box selects that cell. Letters (A, H, ?,
U) make the labels readable without colour; a box's tooltip names its label in full.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from PySide6.QtCore import QRectF, Qt, Signal
from PySide6.QtGui import QBrush, QColor, QFont, QPainter, QPen, QPixmap
from PySide6.QtWidgets import (
    QGraphicsRectItem,
    QGraphicsScene,
    QGraphicsSimpleTextItem,
    QGraphicsView,
)

from leukgui.core.results import ALL, HEM, UNCERTAIN, UNCLASSIFIABLE, CellResult
from leukgui.gui.cell_model import rgb_to_qimage
from leukgui.gui.gallery import LABEL_COLORS

__all__ = ["LETTERS", "FieldView"]

LETTERS = {ALL: "A", HEM: "H", UNCERTAIN: "?", UNCLASSIFIABLE: "U"}


class _Box(QGraphicsRectItem):
    def __init__(self, cell: CellResult, rect: QRectF, on_click: Callable[[CellResult], None]):
        super().__init__(rect)
        self.cell = cell
        self._on_click = on_click
        self.setAcceptedMouseButtons(Qt.MouseButton.LeftButton)
        self.setCursor(Qt.CursorShape.PointingHandCursor)

    def mousePressEvent(self, event: Any) -> None:  # noqa: N802 - Qt override
        self._on_click(self.cell)
        event.accept()


class FieldView(QGraphicsView):
    """The field image with one box per found cell; the current cell drawn thicker."""

    cell_clicked = Signal(object)  # CellResult

    def __init__(self, parent: Any = None) -> None:
        super().__init__(parent)
        self.setScene(QGraphicsScene(self))
        self.setRenderHint(QPainter.RenderHint.Antialiasing)
        self.setMinimumHeight(160)
        self.boxes: list[_Box] = []
        self._field: str | None = None

    def show_field(
        self,
        rgb: Any,
        cells: Sequence[CellResult],
        current: CellResult | None,
        final_label: Callable[[CellResult], str],
    ) -> None:
        """Draw `rgb` (the field) with a box per cell, coloured and lettered by final label."""
        scene = self.scene()
        scene.clear()
        self.boxes = []
        scene.addPixmap(QPixmap.fromImage(rgb_to_qimage(rgb)))
        font = QFont()
        font.setBold(True)
        font.setPixelSize(max(12, rgb.shape[0] // 28))
        for cell in cells:
            x0, y0, x1, y1 = cell.box
            label = final_label(cell)
            colour = QColor(LABEL_COLORS.get(label, "#555555"))
            is_current = current is not None and cell.key == current.key
            box = _Box(cell, QRectF(x0, y0, x1 - x0, y1 - y0), self.cell_clicked.emit)
            pen = QPen(colour, 5 if is_current else 2.5)
            if label == UNCERTAIN:
                pen.setStyle(Qt.PenStyle.DashLine)
            box.setPen(pen)
            box.setBrush(QBrush(Qt.BrushStyle.NoBrush))
            box.setToolTip(f"Cell #{cell.cell_index}: {label}")  # the word the letter stands for
            scene.addItem(box)
            self.boxes.append(box)
            tag = QGraphicsSimpleTextItem(f"{cell.cell_index} {LETTERS.get(label, '?')}")
            tag.setFont(font)
            tag.setBrush(QBrush(QColor("white")))
            tag.setPen(QPen(colour, 1))
            back = scene.addRect(
                QRectF(
                    x0,
                    max(0, y0 - font.pixelSize() - 6),
                    tag.boundingRect().width() + 8,
                    font.pixelSize() + 6,
                ),
                QPen(Qt.PenStyle.NoPen),
                QBrush(colour),
            )
            tag.setPos(x0 + 4, max(0, y0 - font.pixelSize() - 5))
            scene.addItem(tag)
            back.setZValue(1)
            tag.setZValue(2)
        scene.setSceneRect(QRectF(0, 0, rgb.shape[1], rgb.shape[0]))
        self.fitInView(scene.sceneRect(), Qt.AspectRatioMode.KeepAspectRatio)

    def resizeEvent(self, event: Any) -> None:  # noqa: N802 - Qt override
        super().resizeEvent(event)
        if self.scene() is not None and not self.scene().sceneRect().isEmpty():
            self.fitInView(self.scene().sceneRect(), Qt.AspectRatioMode.KeepAspectRatio)
