"""The cell gallery: a QListView in icon mode painted by one delegate, so 10k cells stay cheap.

Each tile shows the thumbnail, a label badge that reads without colour (its text and its
shape differ per label, for colour-blind users and grey-scale printouts), P(ALL), the file
name, and a check mark once a person has reviewed the cell. The short badges ("?" for
UNCERTAIN, "U" for UNCLASSIFIABLE) are spelled out in the tile's tooltip.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from PySide6.QtCore import (
    QAbstractItemModel,
    QAbstractProxyModel,
    QItemSelectionModel,
    QModelIndex,
    QPersistentModelIndex,
    QPointF,
    QRect,
    QRectF,
    QSize,
    Qt,
    Signal,
    Slot,
)
from PySide6.QtGui import (
    QColor,
    QFont,
    QFontMetrics,
    QPainter,
    QPainterPath,
    QPen,
    QPixmap,
    QWheelEvent,
)
from PySide6.QtWidgets import (
    QAbstractItemView,
    QListView,
    QStyle,
    QStyledItemDelegate,
    QStyleOptionViewItem,
    QWidget,
)

from leukgui.core.results import ALL, HEM, UNCERTAIN, CellResult
from leukgui.gui.cell_model import (
    UNCLASSIFIABLE,
    CellListModel,
    CellRole,
    LabelRole,
    PAllRole,
    ReviewedRole,
)

__all__ = [
    "LABEL_COLORS",
    "MAX_THUMB",
    "MIN_THUMB",
    "BadgeSpec",
    "CellDelegate",
    "GalleryView",
    "badge_spec",
]

MIN_THUMB, MAX_THUMB = 64, 256

# Light theme. Text on these colours (white on ALL, the colour itself on white for the
# others) stays above WCAG AA contrast (4.5:1).
LABEL_COLORS: dict[str, str] = {
    ALL: "#C2185B",  # magenta-red
    HEM: "#00796B",  # teal
    UNCERTAIN: "#8A5A00",  # dark amber (text / outline); tile fill is a pale amber
    UNCLASSIFIABLE: "#5F6368",  # grey
}
_UNCERTAIN_FILL = "#FFF0C2"
_ACCENT = "#1A56C4"  # selection frame
_SELECTED_FILL = "#E3ECFB"
_HOVER_FILL = "#F1F3F6"
_TEXT = "#202124"
_MUTED = "#5F6368"
_REVIEWED = "#1E7B34"

_PAD = 7  # inner margin of a tile (clear of the 3 px selection frame)
_GAP = 3  # between thumbnail and text rows


@dataclass(frozen=True)
class BadgeSpec:
    """How a label is drawn: text and shape carry the meaning, colour only reinforces it."""

    text: str
    shape: str  # "filled_square" | "outlined_circle" | "dashed_outline" | "cross"
    color: str


_BADGES = {
    ALL: BadgeSpec("ALL", "filled_square", LABEL_COLORS[ALL]),
    HEM: BadgeSpec("HEM", "outlined_circle", LABEL_COLORS[HEM]),
    UNCERTAIN: BadgeSpec("?", "dashed_outline", LABEL_COLORS[UNCERTAIN]),
    UNCLASSIFIABLE: BadgeSpec("U", "cross", LABEL_COLORS[UNCLASSIFIABLE]),
}


def badge_spec(label: str) -> BadgeSpec:
    """The badge for a final label; an unknown label gets a plain grey outline with its text."""
    spec = _BADGES.get(label)
    if spec is not None:
        return spec
    return BadgeSpec(label[:3] or "-", "dashed_outline", LABEL_COLORS[UNCLASSIFIABLE])


def paint_badge(painter: QPainter, rect: QRectF, spec: BadgeSpec, font: QFont) -> None:
    """Draw one badge into `rect` (used by the delegate and by the inspector's header)."""
    color = QColor(spec.color)
    painter.save()
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    painter.setFont(font)
    text_rect = QRectF(rect)
    if spec.shape == "filled_square":
        painter.setPen(Qt.PenStyle.NoPen)
        painter.setBrush(color)
        painter.drawRoundedRect(rect, 2, 2)
        painter.setPen(QColor("white"))
    elif spec.shape == "outlined_circle":
        painter.setPen(QPen(color, 1.6))
        painter.setBrush(QColor("white"))
        r = rect.height() / 2
        painter.drawRoundedRect(rect.adjusted(0.8, 0.8, -0.8, -0.8), r, r)
        painter.setPen(color)
    elif spec.shape == "dashed_outline":
        pen = QPen(color, 1.4, Qt.PenStyle.DashLine)
        pen.setDashPattern([2.5, 2.0])
        painter.setPen(pen)
        painter.setBrush(QColor(_UNCERTAIN_FILL))
        painter.drawRect(rect.adjusted(0.7, 0.7, -0.7, -0.7))
        painter.setPen(color)
    else:  # "cross": a crossed box in front of the text
        painter.setPen(QPen(color, 1.2))
        painter.setBrush(QColor("white"))
        painter.drawRect(rect.adjusted(0.6, 0.6, -0.6, -0.6))
        side = rect.height() - 8
        box = QRectF(rect.left() + 4, rect.top() + 4, side, side)
        painter.setPen(QPen(color, 1.6))
        painter.drawLine(box.topLeft(), box.bottomRight())
        painter.drawLine(box.topRight(), box.bottomLeft())
        text_rect = rect.adjusted(side + 2, 0, 0, 0)
        painter.setPen(color)
    painter.drawText(text_rect, Qt.AlignmentFlag.AlignCenter, spec.text)
    painter.restore()


def badge_width(spec: BadgeSpec, metrics: QFontMetrics, height: int) -> int:
    """Width that fits the badge's text (and its cross glyph) with some air."""
    width = metrics.horizontalAdvance(spec.text) + 12
    if spec.shape == "cross":
        width += height - 6
    return max(width, int(height * 1.5))


def _check_mark(painter: QPainter, centre: QPointF, radius: float) -> None:
    """A white disc with a green check: "a person has reviewed this cell"."""
    painter.save()
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    painter.setPen(QPen(QColor(_REVIEWED), 1.2))
    painter.setBrush(QColor("white"))
    painter.drawEllipse(centre, radius, radius)
    path = QPainterPath(QPointF(centre.x() - radius * 0.5, centre.y() + radius * 0.02))
    path.lineTo(centre.x() - radius * 0.12, centre.y() + radius * 0.42)
    path.lineTo(centre.x() + radius * 0.55, centre.y() - radius * 0.4)
    pen = QPen(QColor(_REVIEWED), max(1.6, radius * 0.28))
    pen.setCapStyle(Qt.PenCapStyle.RoundCap)
    pen.setJoinStyle(Qt.PenJoinStyle.RoundJoin)
    painter.setPen(pen)
    painter.setBrush(Qt.BrushStyle.NoBrush)
    painter.drawPath(path)
    painter.restore()


class CellDelegate(QStyledItemDelegate):
    """Paints one gallery tile; every tile has the same size, so the view lays out in O(1)."""

    def __init__(self, parent: QWidget | None = None, thumb_size: int = 128) -> None:
        super().__init__(parent)
        self._thumb = int(thumb_size)

    def thumb_size(self) -> int:
        return self._thumb

    def set_thumb_size(self, px: int) -> None:
        self._thumb = int(px)

    def _fonts(self, option: QStyleOptionViewItem) -> tuple[QFont, QFont, QFont]:
        base = QFont(option.font)
        px = 11 if self._thumb < 112 else 12
        badge = QFont(base)
        badge.setPixelSize(px)
        badge.setBold(True)
        value = QFont(base)
        value.setPixelSize(px)
        name = QFont(base)
        name.setPixelSize(px - 1)
        return badge, value, name

    def _row_height(self) -> int:
        return 18 if self._thumb < 112 else 20

    def sizeHint(  # noqa: N802
        self, option: QStyleOptionViewItem, index: QModelIndex | QPersistentModelIndex
    ) -> QSize:
        name_height = 15 if self._thumb < 112 else 16
        return QSize(
            self._thumb + 2 * _PAD,
            _PAD + self._thumb + _GAP + self._row_height() + 1 + name_height + _PAD,
        )

    def paint(
        self,
        painter: QPainter,
        option: QStyleOptionViewItem,
        index: QModelIndex | QPersistentModelIndex,
    ) -> None:
        painter.save()
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        rect = QRect(option.rect)
        state = option.state
        selected = bool(state & QStyle.StateFlag.State_Selected)
        frame = QRectF(rect).adjusted(1.5, 1.5, -1.5, -1.5)
        if selected:
            painter.setPen(QPen(QColor(_ACCENT), 3))
            painter.setBrush(QColor(_SELECTED_FILL))
            painter.drawRoundedRect(frame, 5, 5)
        elif state & QStyle.StateFlag.State_MouseOver:
            painter.setPen(QPen(QColor("#C5CAD3"), 1))
            painter.setBrush(QColor(_HOVER_FILL))
            painter.drawRoundedRect(frame, 5, 5)
        if state & QStyle.StateFlag.State_HasFocus:
            pen = QPen(QColor(_ACCENT), 1, Qt.PenStyle.DotLine)
            painter.setPen(pen)
            painter.setBrush(Qt.BrushStyle.NoBrush)
            painter.drawRoundedRect(frame.adjusted(3, 3, -3, -3), 3, 3)

        thumb = self._thumb
        x = rect.left() + (rect.width() - thumb) // 2
        y = rect.top() + _PAD
        thumb_rect = QRect(x, y, thumb, thumb)
        pix = index.data(Qt.ItemDataRole.DecorationRole)
        if isinstance(pix, QPixmap) and not pix.isNull():
            painter.drawPixmap(thumb_rect, pix)
        painter.setPen(QPen(QColor("#D0D4DA"), 1))
        painter.setBrush(Qt.BrushStyle.NoBrush)
        painter.drawRect(QRectF(thumb_rect).adjusted(0.5, 0.5, -0.5, -0.5))

        if index.data(ReviewedRole):
            radius = max(7.0, thumb / 14)
            centre = QPointF(thumb_rect.right() - radius - 2, thumb_rect.top() + radius + 2)
            _check_mark(painter, centre, radius)

        badge_font, value_font, name_font = self._fonts(option)
        row_h = self._row_height()
        row_top = thumb_rect.bottom() + 1 + _GAP
        label = index.data(LabelRole) or ""
        spec = badge_spec(str(label))
        # One badge width for every label, so P(ALL) lines up down the columns.
        metrics = QFontMetrics(badge_font)
        width = max(badge_width(s, metrics, row_h) for s in _BADGES.values())
        badge_rect = QRectF(x, row_top + 1, width, row_h - 2)
        paint_badge(painter, badge_rect, spec, badge_font)

        p_all = index.data(PAllRole)
        text_color = QColor(_TEXT)
        painter.setFont(value_font)
        painter.setPen(text_color)
        value_rect = QRect(int(badge_rect.right()) + 4, row_top, thumb - width - 4, row_h)
        if p_all is not None:
            number = f"{float(p_all):.2f}"
            full = f"P(ALL) {number}"
            # Decided on the widest value, so every tile of one size reads the same way.
            fits = QFontMetrics(value_font).horizontalAdvance("P(ALL) 0.00") <= value_rect.width()
            text = full if fits else number
            painter.drawText(
                value_rect, Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter, text
            )

        name = index.data(Qt.ItemDataRole.DisplayRole) or ""
        painter.setFont(name_font)
        painter.setPen(QColor(_MUTED))
        name_rect = QRect(x, row_top + row_h + 1, thumb, rect.bottom() - _PAD - row_top - row_h)
        elided = QFontMetrics(name_font).elidedText(str(name), Qt.TextElideMode.ElideMiddle, thumb)
        painter.drawText(
            name_rect, Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter, elided
        )
        painter.restore()


def source_cell_model(model: QAbstractItemModel | None) -> CellListModel | None:
    """The CellListModel under any stack of proxies, or None."""
    while isinstance(model, QAbstractProxyModel):
        model = model.sourceModel()
    return model if isinstance(model, CellListModel) else None


class GalleryView(QListView):
    """Thumbnail grid over a CellListModel (directly or through a CellFilterProxy).

    Ctrl + mouse wheel changes the tile size, like the file managers users know.
    """

    current_cell_changed = Signal(object)  # CellResult | None
    thumb_size_changed = Signal(int)

    def __init__(self, parent: QWidget | None = None, thumb_size: int = 128) -> None:
        super().__init__(parent)
        self._thumb = _clamp(thumb_size)
        self._delegate = CellDelegate(self, self._thumb)
        self.setItemDelegate(self._delegate)
        self.setViewMode(QListView.ViewMode.IconMode)
        self.setFlow(QListView.Flow.LeftToRight)
        self.setWrapping(True)
        self.setResizeMode(QListView.ResizeMode.Adjust)
        self.setMovement(QListView.Movement.Static)
        self.setDragEnabled(False)
        self.setDragDropMode(QAbstractItemView.DragDropMode.NoDragDrop)
        self.setUniformItemSizes(True)
        self.setLayoutMode(QListView.LayoutMode.Batched)
        self.setBatchSize(256)
        self.setSpacing(2)
        self.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.setVerticalScrollMode(QAbstractItemView.ScrollMode.ScrollPerPixel)
        self.setMouseTracking(True)  # hover highlight
        self.setStyleSheet("QListView { background: #FFFFFF; border: 1px solid #D0D4DA; }")
        self._apply_grid()

    # ------------------------------------------------------------------ model

    def setModel(self, model: QAbstractItemModel | None) -> None:  # noqa: N802
        old = self.selectionModel()
        if old is not None:
            old.currentChanged.disconnect(self._on_current_changed)
        super().setModel(model)
        selection = self.selectionModel()
        if selection is not None:
            selection.currentChanged.connect(self._on_current_changed)
        self._sync_cache_size()
        self.current_cell_changed.emit(self.current_cell())

    def current_cell(self) -> CellResult | None:
        index = self.currentIndex()
        return index.data(CellRole) if index.isValid() else None

    def select_path(self, path: Any) -> bool:
        """Make the cell at `path` (a path, or a CellResult for a cell of a smear field)
        current and visible; False if it is not shown."""
        model = self.model()
        src = source_cell_model(model)
        if model is None or src is None:
            return False
        row = src.row_of(path)
        if row is None:
            return False
        index = src.index(row)
        chain = []
        m = model
        while isinstance(m, QAbstractProxyModel):
            chain.append(m)
            m = m.sourceModel()
        for proxy in reversed(chain):
            index = proxy.mapFromSource(index)
        if not index.isValid():
            return False
        self.selectionModel().setCurrentIndex(
            index, QItemSelectionModel.SelectionFlag.ClearAndSelect
        )
        self.scrollTo(index)
        return True

    @Slot(QModelIndex, QModelIndex)
    def _on_current_changed(self, current: QModelIndex, _previous: QModelIndex) -> None:
        self.current_cell_changed.emit(current.data(CellRole) if current.isValid() else None)

    # ------------------------------------------------------------------ tile size

    def thumb_size(self) -> int:
        return self._thumb

    def set_thumb_size(self, px: int) -> None:
        """Tile thumbnail side in logical pixels, clamped to 64..256."""
        px = _clamp(px)
        if px == self._thumb:
            return
        self._thumb = px
        self._delegate.set_thumb_size(px)
        self._apply_grid()
        self._sync_cache_size()
        self.thumb_size_changed.emit(px)

    def _apply_grid(self) -> None:
        hint = self._delegate.sizeHint(QStyleOptionViewItem(), QModelIndex())
        self.setGridSize(hint + QSize(2 * self.spacing(), 2 * self.spacing()))
        self.scheduleDelayedItemsLayout()
        self.viewport().update()

    def _sync_cache_size(self) -> None:
        src = source_cell_model(self.model())
        if src is not None:
            src.set_thumb_size(self._thumb, self.devicePixelRatioF())

    def wheelEvent(self, event: QWheelEvent) -> None:  # noqa: N802
        if event.modifiers() & Qt.KeyboardModifier.ControlModifier:
            steps = event.angleDelta().y() / 120
            if steps:
                self.set_thumb_size(self._thumb + int(round(steps * 16)))
            event.accept()
            return
        super().wheelEvent(event)


def _clamp(px: int) -> int:
    return max(MIN_THUMB, min(MAX_THUMB, int(px)))
