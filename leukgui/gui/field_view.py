"""A smear field with every white cell found in it, boxed, numbered and lettered by label.

Shown under the cell inspector when the selected cell came from a field: the reviewer sees
the cell in place, among its neighbours; clicking a box selects that cell. Each box carries
the cell's number in its field (the `#n` of its name in the gallery and the inspector) and a
letter (A, H, ?, U), so labels read without colour; a box's tooltip names its label in full.
The selected cell stands out: a thick box with a bright halo, while the others are thinner
and dimmed. Box lines and tags keep their screen size at any zoom, so they stay readable in
the small view. The view opens in a larger, resizable window (button or double-click; Esc
closes it) where the wheel zooms and the field can be dragged.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from PySide6.QtCore import QPointF, QRectF, Qt, Signal
from PySide6.QtGui import QBrush, QColor, QFont, QFontMetricsF, QPainter, QPen, QPixmap
from PySide6.QtWidgets import (
    QDialog,
    QGraphicsItem,
    QGraphicsRectItem,
    QGraphicsScene,
    QGraphicsView,
    QLabel,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from leukgui.core.results import ALL, HEM, UNCERTAIN, UNCLASSIFIABLE, CellResult
from leukgui.core.text import display_path
from leukgui.gui.cell_model import rgb_to_qimage
from leukgui.gui.gallery import LABEL_COLORS

__all__ = ["LETTERS", "FieldDialog", "FieldView"]

LETTERS = {ALL: "A", HEM: "H", UNCERTAIN: "?", UNCLASSIFIABLE: "U"}
HALO = "#FFD400"  # the selected box's halo: bright yellow reads on stained smears and on black
_PEN_SELECTED, _PEN_HALO, _PEN_OTHER = 3.5, 8.0, 2.0  # screen pixels (cosmetic pens)
_DIMMED = 0.6  # opacity of the cells that are not selected
_ZOOM_KEYS = ("zoom_in", "zoom_out", "zoom_fit")  # window actions a big field view answers itself


class _Box(QGraphicsRectItem):
    """One found cell's box; `selected` is True for the cell shown in the inspector."""

    def __init__(
        self,
        cell: CellResult,
        rect: QRectF,
        on_click: Callable[[CellResult], None],
        selected: bool = False,
    ) -> None:
        super().__init__(rect)
        self.cell = cell
        self.selected = selected
        self._on_click = on_click
        self.setAcceptedMouseButtons(Qt.MouseButton.LeftButton)
        self.setCursor(Qt.CursorShape.PointingHandCursor)

    def mousePressEvent(self, event: Any) -> None:  # noqa: N802 - Qt override
        self._on_click(self.cell)
        event.accept()


class _Tag(QGraphicsItem):
    """A box's number and letter on the label colour, the same size on screen at any zoom.

    Sits on the box's top-left corner, above the box when there is room, else inside it.
    """

    def __init__(
        self,
        text: str,
        colour: QColor,
        font: QFont,
        inside: bool,
        selected: bool,
        on_click: Callable[[], None],
    ) -> None:
        super().__init__()
        self.text = text
        self._colour = colour
        self._font = font
        self._selected = selected
        self._on_click = on_click
        metrics = QFontMetricsF(font)
        w, h = metrics.horizontalAdvance(text) + 8, metrics.height() + 2
        self._rect = QRectF(0, 0 if inside else -h, w, h)
        self.setFlag(QGraphicsItem.GraphicsItemFlag.ItemIgnoresTransformations)
        self.setAcceptedMouseButtons(Qt.MouseButton.LeftButton)
        self.setCursor(Qt.CursorShape.PointingHandCursor)

    def boundingRect(self) -> QRectF:  # noqa: N802 - Qt override
        return self._rect.adjusted(-2, -2, 2, 2)

    def paint(self, painter: QPainter, option: Any, widget: Any = None) -> None:
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        if self._selected:
            painter.setPen(QPen(QColor(HALO), 2.5))
        else:
            painter.setPen(Qt.PenStyle.NoPen)
        painter.setBrush(QBrush(self._colour))
        painter.drawRoundedRect(self._rect, 2, 2)
        painter.setFont(self._font)
        painter.setPen(QColor("white"))  # on the label colours (all dark enough for white)
        painter.drawText(self._rect, Qt.AlignmentFlag.AlignCenter, self.text)

    def mousePressEvent(self, event: Any) -> None:  # noqa: N802 - Qt override
        self._on_click()
        event.accept()


class FieldView(QGraphicsView):
    """The field image with one numbered box per found cell; the current cell stands out.

    `enlargeable` views carry an Enlarge button (and answer a double-click) that opens the
    same field in a `FieldDialog`; the dialog's clicks come back through `cell_clicked`.
    """

    cell_clicked = Signal(object)  # CellResult

    def __init__(self, parent: Any = None, *, enlargeable: bool = True) -> None:
        super().__init__(parent)
        self.setScene(QGraphicsScene(self))
        self.setRenderHint(QPainter.RenderHint.Antialiasing)
        self.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform)
        self.setMinimumHeight(160)
        self.boxes: list[_Box] = []
        self.tags: list[_Tag] = []
        self._shown: tuple[Any, Sequence[CellResult], CellResult | None, Callable] | None = None
        self._fitted = True
        self._big = not enlargeable
        self.dialog: FieldDialog | None = None
        self.enlarge_button: QToolButton | None = None
        if enlargeable:
            self.enlarge_button = QToolButton(self)
            self.enlarge_button.setText("⤢ Enlarge")
            self.enlarge_button.setToolTip(
                "Open the field in a larger window (or double-click the field); Esc closes it"
            )
            self.enlarge_button.setCursor(Qt.CursorShape.PointingHandCursor)
            self.enlarge_button.clicked.connect(self.enlarge)
        else:
            self.setDragMode(QGraphicsView.DragMode.ScrollHandDrag)
            self.setTransformationAnchor(QGraphicsView.ViewportAnchor.AnchorUnderMouse)

    # ------------------------------------------------------------------ public API

    def show_field(
        self,
        rgb: Any,
        cells: Sequence[CellResult],
        current: CellResult | None,
        final_label: Callable[[CellResult], str],
    ) -> None:
        """Draw `rgb` (the field) with a numbered box per cell, coloured and lettered by
        final label; `current` drawn thick with a halo, the others thin and dimmed."""
        before = self._shown[1] if self._shown is not None else ()
        same_field = bool(before and cells) and before[0].path == cells[0].path
        self._shown = (rgb, cells, current, final_label)
        scene = self.scene()
        scene.clear()
        self.boxes = []
        self.tags = []
        scene.addPixmap(QPixmap.fromImage(rgb_to_qimage(rgb)))
        font = QFont(self.font())
        font.setBold(True)
        font.setPointSizeF(font.pointSizeF() * (1.1 if self._big else 0.95))
        for cell in cells:
            x0, y0, x1, y1 = cell.box
            label = final_label(cell)
            colour = QColor(LABEL_COLORS.get(label, LABEL_COLORS[UNCLASSIFIABLE]))
            selected = current is not None and cell.key == current.key
            rect = QRectF(x0, y0, x1 - x0, y1 - y0)
            box = _Box(cell, rect, self.cell_clicked.emit, selected)
            pen = QPen(colour, _PEN_SELECTED if selected else _PEN_OTHER)
            pen.setCosmetic(True)  # screen pixels: as visible in the small view as in the big
            if label == UNCERTAIN:
                pen.setStyle(Qt.PenStyle.DashLine)
            box.setPen(pen)
            box.setBrush(QBrush(Qt.BrushStyle.NoBrush))
            box.setToolTip(f"Cell #{cell.cell_index}: {label}")  # the word the letter stands for
            box.setZValue(4 if selected else 1)
            if selected:
                halo_pen = QPen(QColor(HALO), _PEN_HALO)
                halo_pen.setCosmetic(True)
                halo = scene.addRect(rect, halo_pen, QBrush(Qt.BrushStyle.NoBrush))
                halo.setZValue(3)
            else:
                box.setOpacity(_DIMMED)
            scene.addItem(box)
            self.boxes.append(box)
            tag = _Tag(
                f"#{cell.cell_index} {LETTERS.get(label, '?')}",
                colour,
                font,
                inside=y0 < 24,
                selected=selected,
                on_click=lambda c=cell: self.cell_clicked.emit(c),
            )
            tag.setPos(QPointF(x0, y0))
            tag.setZValue(6 if selected else 2)
            if not selected:
                tag.setOpacity(0.8)
            tag.setToolTip(box.toolTip())
            scene.addItem(tag)
            self.tags.append(tag)
        scene.setSceneRect(QRectF(0, 0, rgb.shape[1], rgb.shape[0]))
        if not (same_field and self._big and not self._fitted):
            self.fit()  # a big view keeps its zoom while the person moves between its cells
        if self.dialog is not None and self.dialog.isVisible():
            self.dialog.show_field(rgb, cells, current, final_label)

    def selected_box(self) -> _Box | None:
        """The box of the cell shown in the inspector, if it is in this field."""
        return next((b for b in self.boxes if b.selected), None)

    def fit(self) -> None:
        """The whole field in view."""
        self._fitted = True
        if not self.scene().sceneRect().isEmpty():
            self.fitInView(self.scene().sceneRect(), Qt.AspectRatioMode.KeepAspectRatio)

    def enlarge(self) -> FieldDialog | None:
        """Open (or raise) the larger window on the same field; None when nothing is shown."""
        if self._shown is None or self._big:
            return None
        if self.dialog is None:
            self.dialog = FieldDialog(self.window())
            self.dialog.view.cell_clicked.connect(self.cell_clicked.emit)
            # The review keys (A, H, Enter, arrows...) work in the big window too; +, - and 0
            # zoom the field there instead of the inspector.
            self.dialog.addActions([a for a in self.actions() if a.objectName() not in _ZOOM_KEYS])
        self.dialog.show_field(*self._shown)
        self.dialog.show()
        self.dialog.raise_()
        self.dialog.activateWindow()
        return self.dialog

    # ------------------------------------------------------------------ Qt overrides

    def mouseDoubleClickEvent(self, event: Any) -> None:  # noqa: N802 - Qt override
        if self._big:
            self.fit()
        else:
            self.enlarge()
        event.accept()

    def wheelEvent(self, event: Any) -> None:  # noqa: N802 - Qt override
        if not self._big:  # the small view always shows the whole field
            event.ignore()
            return
        steps = event.angleDelta().y() / 120
        if steps:
            self._zoom_by(1.25**steps)
        event.accept()

    def keyPressEvent(self, event: Any) -> None:  # noqa: N802 - Qt override
        key = event.key()
        if self._big and key in (Qt.Key.Key_Plus, Qt.Key.Key_Equal):
            self._zoom_by(1.25, centred=True)
        elif self._big and key == Qt.Key.Key_Minus:
            self._zoom_by(1 / 1.25, centred=True)
        elif self._big and key == Qt.Key.Key_0:
            self.fit()
        else:
            super().keyPressEvent(event)

    def resizeEvent(self, event: Any) -> None:  # noqa: N802 - Qt override
        super().resizeEvent(event)
        if self._fitted:
            self.fit()
        if self.enlarge_button is not None:
            hint = self.enlarge_button.sizeHint()
            self.enlarge_button.setGeometry(
                self.viewport().width() - hint.width() - 6, 6, hint.width(), hint.height()
            )

    def _zoom_by(self, factor: float, centred: bool = False) -> None:
        scale = self.transform().m11() * factor
        fitted = self.scene().sceneRect()
        view = self.viewport().rect()
        if fitted.isEmpty() or view.isEmpty():
            return
        fit_scale = min(view.width() / fitted.width(), view.height() / fitted.height())
        if scale <= fit_scale * 1.001:  # never smaller than the whole field
            self.fit()
            return
        self._fitted = False
        anchor = self.transformationAnchor()
        if centred:
            self.setTransformationAnchor(QGraphicsView.ViewportAnchor.AnchorViewCenter)
        self.scale(factor, factor)
        self.setTransformationAnchor(anchor)


class FieldDialog(QDialog):
    """The field in a larger, resizable window: wheel zooms, drag pans, Esc closes."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Smear field")
        self.setSizeGripEnabled(True)
        self.caption = QLabel()
        self.caption.setWordWrap(True)
        self.view = FieldView(self, enlargeable=False)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 6, 6, 6)
        layout.addWidget(self.caption)
        layout.addWidget(self.view, 1)
        screen = (parent.screen() if parent is not None else self.screen()).availableGeometry()
        self.resize(
            max(640, min(1400, int(screen.width() * 0.8))),
            max(480, min(1000, int(screen.height() * 0.8))),
        )

    def show_field(
        self,
        rgb: Any,
        cells: Sequence[CellResult],
        current: CellResult | None,
        final_label: Callable[[CellResult], str],
    ) -> None:
        name = display_path(cells[0].path.name) if cells else "field"
        self.setWindowTitle(f"Smear field — {name}")
        height, width = rgb.shape[:2]
        chosen = f"; selected #{current.cell_index}" if current is not None else ""
        count = f"{len(cells)} white cell{'s' * (len(cells) != 1)}"
        self.caption.setText(
            f"{name}: {width} × {height} px, {count}{chosen}. "
            "Click a box to select its cell; the wheel zooms, + / − / 0 too; Esc closes."
        )
        self.view.show_field(rgb, cells, current, final_label)
