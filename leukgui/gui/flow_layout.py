"""A layout that lines its widgets up like words in a paragraph: as many per row as fit, the
rest on the next row. The gallery's filter row uses it so a 1024 px window needs no wider
middle pane than two thumbnail columns (a box layout would demand the whole row's width)."""

from __future__ import annotations

from PySide6.QtCore import QMargins, QPoint, QRect, QSize, Qt
from PySide6.QtWidgets import QLayout, QLayoutItem, QWidget

__all__ = ["FlowLayout"]


class FlowLayout(QLayout):
    """Left-to-right rows that wrap; each row's items are vertically centred."""

    def __init__(self, parent: QWidget | None = None, spacing: int = 6) -> None:
        super().__init__(parent)
        self._items: list[QLayoutItem] = []
        self._spacing = spacing
        self.setContentsMargins(QMargins(0, 0, 0, 0))

    # QLayout's item protocol
    def addItem(self, item: QLayoutItem) -> None:  # noqa: N802 - Qt override
        self._items.append(item)

    def count(self) -> int:
        return len(self._items)

    def itemAt(self, index: int) -> QLayoutItem | None:  # noqa: N802 - Qt override
        return self._items[index] if 0 <= index < len(self._items) else None

    def takeAt(self, index: int) -> QLayoutItem | None:  # noqa: N802 - Qt override
        return self._items.pop(index) if 0 <= index < len(self._items) else None

    def expandingDirections(self) -> Qt.Orientation:  # noqa: N802 - Qt override
        return Qt.Orientation(0)

    def hasHeightForWidth(self) -> bool:  # noqa: N802 - Qt override
        return True

    def heightForWidth(self, width: int) -> int:  # noqa: N802 - Qt override
        return self._arrange(QRect(0, 0, width, 0), move=False)

    def setGeometry(self, rect: QRect) -> None:  # noqa: N802 - Qt override
        super().setGeometry(rect)
        self._arrange(rect, move=True)

    def sizeHint(self) -> QSize:  # noqa: N802 - Qt override
        """One row holding everything: what the layout would like."""
        width = sum(i.sizeHint().width() for i in self._items if not i.isEmpty())
        width += self._spacing * max(0, len(self._items) - 1)
        height = max((i.sizeHint().height() for i in self._items), default=0)
        return QSize(width, height)

    def minimumSize(self) -> QSize:  # noqa: N802 - Qt override
        """The widest single item: the layout can always wrap the rest below it."""
        size = QSize()
        for item in self._items:
            size = size.expandedTo(item.minimumSize())
        return size

    def _arrange(self, rect: QRect, *, move: bool) -> int:
        """Place items row by row within rect's width; the height used."""
        x, y, row_height = rect.x(), rect.y(), 0
        row: list[tuple[QLayoutItem, QSize]] = []

        def flush() -> None:
            for item, size in row:
                if move:
                    pos = item.geometry().topLeft()
                    top = y + (row_height - size.height()) // 2
                    item.setGeometry(QRect(QPoint(pos.x(), top), size))

        for item in self._items:
            if item.isEmpty():
                continue
            size = item.sizeHint().boundedTo(item.maximumSize()).expandedTo(item.minimumSize())
            size.setWidth(min(size.width(), rect.width()))
            if row and x + size.width() > rect.right() + 1:
                flush()
                x, y = rect.x(), y + row_height + self._spacing
                row, row_height = [], 0
            if move:
                item.setGeometry(QRect(QPoint(x, y), size))
            row.append((item, size))
            row_height = max(row_height, size.height())
            x += size.width() + self._spacing
        flush()
        return y + row_height - rect.y()
