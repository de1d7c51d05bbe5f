"""The cell gallery: a QListView in icon mode painted by one delegate, so 10k cells stay cheap.

Each tile shows the thumbnail, a label badge that reads without colour (its text and its
shape differ per label, for colour-blind users and grey-scale printouts), P(ALL), the file
name (with "#n" for the n-th cell of a smear field), a check mark once a person has reviewed
the cell and a padlock once its sample is signed off. A cell the reviewer re-labelled reads
"HEM → ALL": the model's call struck through and dim, then the reviewed label's badge, so a
second reader sees at a glance what a person overruled. The short badges ("?" for
UNCERTAIN, "U" for UNCLASSIFIABLE) are spelled out in the tile's tooltip.

Colours come from the view's palette (light or dark theme); only the label colours are
fixed, with a lighter variant for dark backgrounds so they stay legible on both.
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
    QGuiApplication,
    QPainter,
    QPainterPath,
    QPalette,
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
    ChangedRole,
    LabelRole,
    LockedRole,
    ModelCallRole,
    PAllRole,
    ReviewedRole,
)
from leukgui.gui.theme import is_dark  # re-exported: painters import it from here

__all__ = [
    "LABEL_COLORS",
    "LABEL_COLORS_DARK",
    "MAX_THUMB",
    "MIN_THUMB",
    "BadgeSpec",
    "CellDelegate",
    "GalleryView",
    "badge_spec",
    "badge_text",
    "is_dark",
    "label_color",
    "paint_badge",
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
# Dark theme: the same hues, light enough for AA contrast on the dark base (#15171b). ALL
# keeps its colour: it is a filled badge with white text, which reads on either background.
LABEL_COLORS_DARK: dict[str, str] = {
    ALL: "#C2185B",
    HEM: "#4DB6AC",
    UNCERTAIN: "#F2C14E",
    UNCLASSIFIABLE: "#BDC1C6",
}
_UNCERTAIN_FILL = "#FFF0C2"
_UNCERTAIN_FILL_DARK = "#3A2E10"
_REVIEWED = "#1E7B34"
_LOCK = "#3C4043"
_ARROW = " → "

_PAD = 7  # inner margin of a tile (clear of the 3 px selection frame)
_GAP = 3  # between thumbnail and text rows


@dataclass(frozen=True)
class BadgeSpec:
    """How a label is drawn: text and shape carry the meaning, colour only reinforces it."""

    text: str
    shape: str  # "filled_square" | "outlined_circle" | "dashed_outline" | "cross"
    color: str
    dark_color: str = ""  # the colour on a dark background ("" = `color`)


_BADGES = {
    label: BadgeSpec(text, shape, LABEL_COLORS[label], LABEL_COLORS_DARK[label])
    for label, text, shape in (
        (ALL, "ALL", "filled_square"),
        (HEM, "HEM", "outlined_circle"),
        (UNCERTAIN, "?", "dashed_outline"),
        (UNCLASSIFIABLE, "U", "cross"),
    )
}


def badge_spec(label: str) -> BadgeSpec:
    """The badge for a final label; an unknown label gets a plain grey outline with its text."""
    spec = _BADGES.get(label)
    if spec is not None:
        return spec
    return BadgeSpec(
        label[:3] or "-",
        "dashed_outline",
        LABEL_COLORS[UNCLASSIFIABLE],
        LABEL_COLORS_DARK[UNCLASSIFIABLE],
    )


def badge_text(label: str, model_call: str | None = None, changed: bool = False) -> str:
    """What a tile's badge reads: "ALL", or "HEM → ALL" when the reviewer changed the
    model's call HEM to ALL (the short forms "?" and "U" as on the badges)."""
    text = badge_spec(label).text
    if changed and model_call:
        return f"{badge_spec(model_call).text}{_ARROW}{text}"
    return text


def label_color(label: str, dark: bool = False) -> QColor:
    """A label's colour, legible on the light or the dark base."""
    spec = badge_spec(label)
    return QColor(spec.dark_color or spec.color if dark else spec.color)


def _blend(a: QColor, b: QColor, t: float) -> QColor:
    """`a` moved a fraction `t` towards `b` (palette-derived muted and border colours)."""
    return QColor(
        round(a.red() + (b.red() - a.red()) * t),
        round(a.green() + (b.green() - a.green()) * t),
        round(a.blue() + (b.blue() - a.blue()) * t),
    )


def paint_badge(
    painter: QPainter,
    rect: QRectF,
    spec: BadgeSpec,
    font: QFont,
    palette: QPalette | None = None,
) -> None:
    """Draw one badge into `rect` (used by the delegate and by the inspector's header).

    `palette` (default: the application's) picks the light or dark colours and the fill."""
    if palette is None:
        palette = QGuiApplication.palette()
    dark = is_dark(palette)
    color = QColor(spec.dark_color or spec.color) if dark else QColor(spec.color)
    base = palette.color(QPalette.ColorRole.Base)
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
        painter.setBrush(base)
        r = rect.height() / 2
        painter.drawRoundedRect(rect.adjusted(0.8, 0.8, -0.8, -0.8), r, r)
        painter.setPen(color)
    elif spec.shape == "dashed_outline":
        pen = QPen(color, 1.4, Qt.PenStyle.DashLine)
        pen.setDashPattern([2.5, 2.0])
        painter.setPen(pen)
        painter.setBrush(QColor(_UNCERTAIN_FILL_DARK if dark else _UNCERTAIN_FILL))
        painter.drawRect(rect.adjusted(0.7, 0.7, -0.7, -0.7))
        painter.setPen(color)
    else:  # "cross": a crossed box in front of the text
        painter.setPen(QPen(color, 1.2))
        painter.setBrush(base)
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


def badge_width(spec: BadgeSpec, metrics: QFontMetrics, height: int, air: int = 12) -> int:
    """Width that fits the badge's text (and its cross glyph) with `air` pixels to spare."""
    width = metrics.horizontalAdvance(spec.text) + air
    if spec.shape == "cross":
        width += height - 6
    return max(width, int(height * 1.5))


def _disc(painter: QPainter, centre: QPointF, radius: float, rim: QColor) -> None:
    """A white disc with a thin rim: the ground of the marks drawn over a thumbnail (fixed
    colours, since they sit on the image, not on the themed background)."""
    painter.setPen(QPen(rim, 1.2))
    painter.setBrush(QColor("white"))
    painter.drawEllipse(centre, radius, radius)


def _check_mark(painter: QPainter, centre: QPointF, radius: float) -> None:
    """A white disc with a green check: "a person has reviewed this cell"."""
    painter.save()
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    _disc(painter, centre, radius, QColor(_REVIEWED))
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


def _lock_mark(painter: QPainter, centre: QPointF, radius: float) -> None:
    """A white disc with a padlock: "the sample is signed off; this cell is locked"."""
    painter.save()
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    ink = QColor(_LOCK)
    _disc(painter, centre, radius, ink)
    w, h = radius * 0.95, radius * 0.7  # the lock's body
    body = QRectF(centre.x() - w / 2, centre.y() - h * 0.15, w, h)
    shackle = QRectF(body.left() + w * 0.18, body.top() - h * 0.75, w * 0.64, h * 1.3)
    pen = QPen(ink, max(1.3, radius * 0.17))
    pen.setCapStyle(Qt.PenCapStyle.FlatCap)
    painter.setPen(pen)
    painter.setBrush(Qt.BrushStyle.NoBrush)
    painter.drawArc(shackle, 0, 180 * 16)
    painter.drawLine(
        QPointF(shackle.left(), shackle.center().y()), QPointF(shackle.left(), body.top())
    )
    painter.drawLine(
        QPointF(shackle.right(), shackle.center().y()), QPointF(shackle.right(), body.top())
    )
    painter.setPen(Qt.PenStyle.NoPen)
    painter.setBrush(ink)
    painter.drawRoundedRect(body, 1.2, 1.2)
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

    @staticmethod
    def badge_text(index: QModelIndex | QPersistentModelIndex) -> str:
        """The tile's badge as text ("ALL", or "HEM → ALL" for a re-labelled cell)."""
        return badge_text(
            str(index.data(LabelRole) or ""),
            index.data(ModelCallRole),
            bool(index.data(ChangedRole)),
        )

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
        palette = option.palette
        text_color = palette.color(QPalette.ColorRole.Text)
        base = palette.color(QPalette.ColorRole.Base)
        accent = palette.color(QPalette.ColorRole.Highlight)
        muted = _blend(text_color, base, 0.3)
        painter.save()
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        rect = QRect(option.rect)
        state = option.state
        selected = bool(state & QStyle.StateFlag.State_Selected)
        frame = QRectF(rect).adjusted(1.5, 1.5, -1.5, -1.5)
        if selected:
            painter.setPen(QPen(accent, 3))
            painter.setBrush(_blend(base, accent, 0.16))
            painter.drawRoundedRect(frame, 5, 5)
        elif state & QStyle.StateFlag.State_MouseOver:
            painter.setPen(QPen(_blend(base, text_color, 0.22), 1))
            painter.setBrush(_blend(base, text_color, 0.05))
            painter.drawRoundedRect(frame, 5, 5)
        if state & QStyle.StateFlag.State_HasFocus:
            pen = QPen(accent, 1, Qt.PenStyle.DotLine)
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
        painter.setPen(QPen(_blend(base, text_color, 0.2), 1))
        painter.setBrush(Qt.BrushStyle.NoBrush)
        painter.drawRect(QRectF(thumb_rect).adjusted(0.5, 0.5, -0.5, -0.5))

        radius = max(7.0, thumb / 14)
        if index.data(ReviewedRole):
            centre = QPointF(thumb_rect.right() - radius - 2, thumb_rect.top() + radius + 2)
            _check_mark(painter, centre, radius)
        if index.data(LockedRole):
            centre = QPointF(thumb_rect.left() + radius + 3, thumb_rect.top() + radius + 2)
            _lock_mark(painter, centre, radius)

        badge_font, value_font, name_font = self._fonts(option)
        row_h = self._row_height()
        row_top = thumb_rect.bottom() + 1 + _GAP
        label = str(index.data(LabelRole) or "")
        spec = badge_spec(label)
        metrics = QFontMetrics(badge_font)
        # One badge width for every label, so P(ALL) lines up down the columns; on small
        # tiles narrowed (never below the badge's own text) to leave the number its room.
        width = max(badge_width(s, metrics, row_h) for s in _BADGES.values())
        number_room = thumb - QFontMetrics(value_font).horizontalAdvance("0.00") - 4
        width = max(min(width, number_room), badge_width(spec, metrics, row_h, 6))
        left = float(x)
        call = index.data(ModelCallRole)
        changed = bool(index.data(ChangedRole) and call)
        if changed:
            left = self._paint_overruled(
                painter, QRectF(x, row_top, thumb, row_h), str(call), muted, value_font
            )
            # The reviewed badge at its own width, so P(ALL) may still fit after it.
            own = badge_width(spec, metrics, row_h, 8)
            width = max(min(own, x + thumb - left), badge_width(spec, metrics, row_h, 4))
        badge_rect = QRectF(left, row_top + 1, width, row_h - 2)
        paint_badge(painter, badge_rect, spec, badge_font, palette)

        p_all = index.data(PAllRole)
        painter.setFont(value_font)
        painter.setPen(text_color)
        room = x + thumb - int(badge_rect.right()) - 4
        value_rect = QRect(int(badge_rect.right()) + 4, row_top, room, row_h)
        if p_all is not None:
            number = f"{float(p_all):.2f}"
            value_metrics = QFontMetrics(value_font)
            # Decided on the widest value, so every tile of one size reads the same way
            # (a re-labelled cell's longer badge may leave room for the number only, or
            # at the smallest size for nothing: its tooltip has it).
            if value_metrics.horizontalAdvance("P(ALL) 0.00") <= room:
                text = f"P(ALL) {number}"
            elif not changed or value_metrics.horizontalAdvance("0.00") <= room:
                text = number
            else:
                text = ""
            painter.drawText(
                value_rect, Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter, text
            )

        name = index.data(Qt.ItemDataRole.DisplayRole) or ""
        painter.setFont(name_font)
        painter.setPen(muted)
        name_rect = QRect(x, row_top + row_h + 1, thumb, rect.bottom() - _PAD - row_top - row_h)
        elided = QFontMetrics(name_font).elidedText(str(name), Qt.TextElideMode.ElideMiddle, thumb)
        painter.drawText(
            name_rect, Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter, elided
        )
        painter.restore()

    @staticmethod
    def _paint_overruled(
        painter: QPainter, row: QRectF, call: str, muted: QColor, font: QFont
    ) -> float:
        """Draw the model's overruled call, struck through and dim, and the arrow after it
        ("HEM →"); returns where the reviewed badge starts."""
        struck = QFont(font)
        struck.setStrikeOut(True)
        text = badge_spec(call).text
        painter.save()
        painter.setPen(muted)
        painter.setFont(struck)
        left = row.left()
        width = QFontMetrics(struck).horizontalAdvance(text)
        painter.drawText(
            QRectF(left, row.top(), width + 1, row.height()), Qt.AlignmentFlag.AlignVCenter, text
        )
        left += width
        painter.setFont(font)
        arrow = _ARROW.rstrip()
        arrow_w = QFontMetrics(font).horizontalAdvance(arrow + " ")
        painter.drawText(
            QRectF(left, row.top(), arrow_w, row.height()),
            Qt.AlignmentFlag.AlignHCenter | Qt.AlignmentFlag.AlignVCenter,
            arrow,
        )
        painter.restore()
        return left + arrow_w


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
        # No style sheet: the background is the palette's Base, so the theme applies.
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
