"""The application icon, drawn at several sizes so it stays sharp on high-DPI screens."""

from __future__ import annotations

from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import (
    QBrush,
    QColor,
    QIcon,
    QPainter,
    QPen,
    QPixmap,
    QPolygonF,
    QRadialGradient,
)

__all__ = ["app_icon", "icon_pixmap", "shape_icon"]


def icon_pixmap(size: int) -> QPixmap:
    """A stained white cell: lavender cytoplasm, a large purple nucleus, a pale nucleolus."""
    pixmap = QPixmap(size, size)
    pixmap.fill(Qt.GlobalColor.transparent)
    p = QPainter(pixmap)
    p.setRenderHint(QPainter.RenderHint.Antialiasing)
    s = float(size)
    p.setPen(QPen(QColor("#5b3f8c"), max(1.0, s / 32)))
    gradient = QRadialGradient(QPointF(s * 0.45, s * 0.4), s * 0.5)
    gradient.setColorAt(0.0, QColor("#d9cdf0"))
    gradient.setColorAt(1.0, QColor("#a48cd1"))
    p.setBrush(QBrush(gradient))
    p.drawEllipse(QPointF(s / 2, s / 2), s * 0.45, s * 0.45)
    p.setPen(Qt.PenStyle.NoPen)
    p.setBrush(QColor("#4b1d6e"))
    p.drawEllipse(QPointF(s * 0.54, s * 0.5), s * 0.30, s * 0.28)
    p.setBrush(QColor("#9d7cc4"))
    p.drawEllipse(QPointF(s * 0.6, s * 0.44), s * 0.06, s * 0.06)
    p.end()
    return pixmap


def app_icon() -> QIcon:
    icon = QIcon()
    for size in (16, 24, 32, 48, 64, 128, 256):
        icon.addPixmap(icon_pixmap(size))
    return icon


def write_icon(path: str) -> None:
    """Write the icon as .ico (Windows executable and installer) or .png, for packaging."""
    from PySide6.QtWidgets import QApplication

    # A widgets application, not a bare QGuiApplication: Qt allows one application object per
    # process, and a later window (a test, the spec's build) needs the widgets kind.
    app = QApplication.instance() or QApplication([])
    if not icon_pixmap(256).save(path):
        raise OSError(f"could not write {path}")
    del app


if __name__ == "__main__":
    import os
    import sys

    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    write_icon(sys.argv[1])


def shape_icon(shape: str) -> QIcon:
    """Toolbar icons in mid colours with a dark rim, visible on the light and the dark theme
    alike (the style's own play/stop icons are black, lost on a dark toolbar): "play" is a
    green triangle, "stop" a red square."""
    icon = QIcon()
    fill, rim = {"play": ("#2E9E4F", "#14532d"), "stop": ("#C8473A", "#6b1d16")}[shape]
    for size in (16, 24, 32, 48):
        pixmap = QPixmap(size, size)
        pixmap.fill(Qt.GlobalColor.transparent)
        p = QPainter(pixmap)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        p.setPen(QPen(QColor(rim), max(1.0, size / 16)))
        p.setBrush(QColor(fill))
        s = float(size)
        if shape == "play":
            p.drawPolygon(
                QPolygonF(
                    [
                        QPointF(s * 0.25, s * 0.15),
                        QPointF(s * 0.85, s * 0.5),
                        QPointF(s * 0.25, s * 0.85),
                    ]
                )
            )
        else:
            p.drawRoundedRect(QRectF(s * 0.2, s * 0.2, s * 0.6, s * 0.6), s * 0.08, s * 0.08)
        p.end()
        icon.addPixmap(pixmap)
    return icon
