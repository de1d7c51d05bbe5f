"""A small line chart painted with QPainter, for live training curves.

PySide6-Essentials ships no QtCharts, and a training page needs little: a few series, axes
with ticks, a legend, log-y for losses and a marker at the phase boundary. Every series gets
its own colour (Okabe-Ito, safe for colour-blind readers) *and* its own line style and point
marker, so the chart stays readable in grey-scale print-outs. NaN and, on a log axis,
non-positive values leave a gap instead of a misleading line.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

from PySide6.QtCore import QPointF, QRectF, QSize, Qt
from PySide6.QtGui import QColor, QFont, QFontMetrics, QPainter, QPainterPath, QPen, QPolygonF
from PySide6.QtWidgets import QSizePolicy, QWidget

__all__ = ["LinePlot", "nice_ticks"]

# Okabe-Ito: distinguishable with every common colour-vision deficiency.
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000")
LINE_STYLES = (Qt.SolidLine, Qt.DashLine, Qt.DotLine, Qt.DashDotLine)
MARKERS = ("circle", "square", "triangle", "diamond")
MAX_MARKED_POINTS = 60  # beyond this, markers clutter the line; isolated points keep theirs


@dataclass
class _Series:
    name: str
    color: QColor
    style: Qt.PenStyle
    marker: str
    xs: list[float] = field(default_factory=list)
    ys: list[float] = field(default_factory=list)


def _finite(v: float) -> bool:
    return v is not None and isinstance(v, (int, float)) and math.isfinite(v)


def nice_ticks(lo: float, hi: float, target: int = 5, *, integer: bool = False) -> list[float]:
    """Round tick positions (1, 2, 5 x 10^k steps) covering lo..hi, about `target` of them."""
    if not (_finite(lo) and _finite(hi)):
        return []
    if hi < lo:
        lo, hi = hi, lo
    if hi == lo:
        return [lo]
    raw = (hi - lo) / max(target, 1)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = magnitude
    for m in (1, 2, 2.5, 5, 10):
        step = m * magnitude
        if (hi - lo) / step <= target:
            break
    if integer:
        step = max(1.0, round(step))
    start = math.ceil(lo / step - 1e-9) * step
    ticks = []
    v = start
    while v <= hi + step * 1e-9:
        ticks.append(0.0 if abs(v) < step * 1e-9 else v)
        v += step
    return ticks


def _log_ticks(lo: float, hi: float) -> list[float]:
    """Ticks for a log axis with data in 10^lo..10^hi (lo, hi in decades)."""
    first, last = math.floor(lo), math.ceil(hi)
    decades = [10.0**k for k in range(first, last + 1) if lo - 1e-9 <= k <= hi + 1e-9]
    if len(decades) >= 2:
        return decades
    ticks = []
    for k in range(first, last + 1):
        for m in (1, 2, 5):
            v = m * 10.0**k
            if lo - 1e-9 <= math.log10(v) <= hi + 1e-9:
                ticks.append(v)
    if len(ticks) >= 2:
        return ticks
    return [v for v in nice_ticks(10**lo, 10**hi, 4) if v > 0]


def _label(v: float) -> str:
    if v == 0:
        return "0"
    if abs(v) >= 1e4 or abs(v) < 1e-3:
        return f"{v:.0e}".replace("e-0", "e-").replace("e+0", "e")
    return f"{v:.3g}"


class LinePlot(QWidget):
    """Named line series over a shared x axis, with legend, ticks and an optional marker."""

    def __init__(
        self,
        title: str = "",
        *,
        x_label: str = "",
        log_y: bool = False,
        integer_x: bool = False,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self._title = title
        self._x_label = x_label
        self._log_y = log_y
        self._integer_x = integer_x
        self._series: dict[str, _Series] = {}
        self._x_range: tuple[float, float] | None = None
        self._y_range: tuple[float, float] | None = None
        self._marker: tuple[float, str] | None = None
        self._empty_text = "no data yet"
        self.setSizePolicy(QSizePolicy.Expanding, QSizePolicy.Expanding)
        self.setAccessibleName(title or "line plot")

    # ---------------------------------------------------------------- data
    def _get(self, name: str) -> _Series:
        series = self._series.get(name)
        if series is None:
            i = len(self._series)
            series = _Series(
                name,
                QColor(PALETTE[i % len(PALETTE)]),
                LINE_STYLES[i % len(LINE_STYLES)],
                MARKERS[i % len(MARKERS)],
            )
            self._series[name] = series
        return series

    def set_series(self, name: str, xs: Iterable[float], ys: Iterable[float]) -> None:
        """Replace a series' points (creating it, with the next colour and style, if new)."""
        xs, ys = [float(x) for x in xs], [float(y) for y in ys]
        if len(xs) != len(ys):
            raise ValueError(f"{name}: {len(xs)} x values but {len(ys)} y values")
        series = self._get(name)
        series.xs, series.ys = xs, ys
        self.update()

    def add_point(self, name: str, x: float, y: float) -> None:
        """Append one point; a NaN y leaves a gap in the line."""
        series = self._get(name)
        series.xs.append(float(x))
        series.ys.append(float("nan") if y is None else float(y))
        self.update()

    def clear(self) -> None:
        """Drop every series and the marker (styles restart with the next series)."""
        self._series.clear()
        self._marker = None
        self.update()

    def points(self, name: str) -> list[tuple[float, float]]:
        series = self._series.get(name)
        return list(zip(series.xs, series.ys, strict=True)) if series else []

    def legend_names(self) -> list[str]:
        """The names the legend shows, in drawing order."""
        return [s.name for s in self._series.values()]

    def series_style(self, name: str) -> tuple[str, Qt.PenStyle, str]:
        """(colour, line style, marker) of a series, so tests can check they all differ."""
        s = self._series[name]
        return s.color.name(), s.style, s.marker

    # ---------------------------------------------------------------- options
    def set_title(self, title: str) -> None:
        self._title = title
        self.setAccessibleName(title or "line plot")
        self.update()

    def set_log_y(self, on: bool) -> None:
        self._log_y = bool(on)
        self.update()

    def set_x_range(self, lo: float | None, hi: float | None = None) -> None:
        """Fix the x axis (e.g. 1..planned epochs) so it does not jump as points arrive."""
        self._x_range = None if lo is None or hi is None else (float(lo), float(hi))
        self.update()

    def set_y_range(self, lo: float | None, hi: float | None = None) -> None:
        """Fix the y axis (e.g. 0..1 for accuracies); data outside still widens it."""
        self._y_range = None if lo is None or hi is None else (float(lo), float(hi))
        self.update()

    def set_marker(self, x: float, label: str = "") -> None:
        """A labelled vertical line, e.g. where fine-tuning starts."""
        self._marker = (float(x), label)
        self.update()

    def marker(self) -> tuple[float, str] | None:
        return self._marker

    def set_empty_text(self, text: str) -> None:
        self._empty_text = text
        self.update()

    # ---------------------------------------------------------------- geometry
    def sizeHint(self) -> QSize:  # noqa: N802 - Qt API
        return QSize(420, 260)

    def minimumSizeHint(self) -> QSize:  # noqa: N802 - Qt API
        return QSize(220, 150)

    def _usable(self, y: float) -> bool:
        return _finite(y) and (not self._log_y or y > 0)

    def _ranges(self) -> tuple[tuple[float, float], tuple[float, float]] | None:
        xs = [x for s in self._series.values() for x in s.xs if _finite(x)]
        ys = [
            y
            for s in self._series.values()
            for x, y in zip(s.xs, s.ys, strict=True)
            if _finite(x) and self._usable(y)
        ]
        if self._x_range is not None:
            xs += list(self._x_range)
        if not xs:
            return None
        x_lo, x_hi = min(xs), max(xs)
        if x_hi == x_lo:
            x_lo, x_hi = x_lo - 1, x_hi + 1
        x_pad = 0.03 * (x_hi - x_lo)  # keep edge markers off the frame
        x_lo, x_hi = x_lo - x_pad, x_hi + x_pad
        if self._y_range is not None:
            ys += [y for y in self._y_range if self._usable(y)]
        if not ys:
            return (x_lo, x_hi), ((-1.0, 1.0) if not self._log_y else (-1.0, 0.0))
        if self._log_y:
            y_lo, y_hi = math.log10(min(ys)), math.log10(max(ys))
            if y_hi - y_lo < 1e-9:
                y_lo, y_hi = y_lo - 0.5, y_hi + 0.5
            else:
                pad = 0.05 * (y_hi - y_lo)
                y_lo, y_hi = y_lo - pad, y_hi + pad
            return (x_lo, x_hi), (y_lo, y_hi)
        y_lo, y_hi = min(ys), max(ys)
        if y_hi == y_lo:
            pad = abs(y_lo) * 0.1 or 1.0
            return (x_lo, x_hi), (y_lo - pad, y_hi + pad)
        if self._y_range is None:
            ticks = nice_ticks(y_lo, y_hi, 4)
            step = ticks[1] - ticks[0] if len(ticks) > 1 else (y_hi - y_lo)
            y_lo = min(y_lo, math.floor(y_lo / step) * step)
            y_hi = max(y_hi, math.ceil(y_hi / step) * step)
        return (x_lo, x_hi), (y_lo, y_hi)

    # ---------------------------------------------------------------- painting
    def _legend_layout(self, fm: QFontMetrics, width: float) -> list[tuple[_Series, QRectF]]:
        """Legend entries flowed into rows that fit `width`."""
        out = []
        x, y = 0.0, 0.0
        row_h = fm.height() + 4
        for s in self._series.values():
            w = 28 + fm.horizontalAdvance(s.name) + 14
            if x > 0 and x + w > width:
                x, y = 0.0, y + row_h
            out.append((s, QRectF(x, y, w, row_h)))
            x += w
        return out

    def _draw_marker_shape(self, p: QPainter, shape: str, c: QPointF, r: float = 3.5) -> None:
        if shape == "circle":
            p.drawEllipse(c, r, r)
        elif shape == "square":
            p.drawRect(QRectF(c.x() - r, c.y() - r, 2 * r, 2 * r))
        elif shape == "triangle":
            p.drawPolygon(
                QPolygonF(
                    [
                        QPointF(c.x(), c.y() - r * 1.2),
                        QPointF(c.x() - r * 1.1, c.y() + r * 0.9),
                        QPointF(c.x() + r * 1.1, c.y() + r * 0.9),
                    ]
                )
            )
        else:
            p.drawPolygon(
                QPolygonF(
                    [
                        QPointF(c.x(), c.y() - r * 1.3),
                        QPointF(c.x() + r * 1.3, c.y()),
                        QPointF(c.x(), c.y() + r * 1.3),
                        QPointF(c.x() - r * 1.3, c.y()),
                    ]
                )
            )

    def paintEvent(self, event: object) -> None:  # noqa: N802 - Qt API
        p = QPainter(self)
        try:
            self._paint(p)
        finally:
            p.end()

    def _paint(self, p: QPainter) -> None:
        p.setRenderHint(QPainter.Antialiasing, True)
        pal = self.palette()
        text_color = pal.color(pal.ColorRole.WindowText)
        grid_color = QColor(text_color)
        grid_color.setAlpha(40)
        p.fillRect(self.rect(), pal.color(pal.ColorRole.Base))
        font = QFont(self.font())
        fm = QFontMetrics(font)
        w, h = float(self.width()), float(self.height())
        top = 6.0
        if self._title:
            bold = QFont(font)
            bold.setBold(True)
            p.setFont(bold)
            p.setPen(text_color)
            p.drawText(
                QRectF(8, top, w - 16, fm.height()),
                Qt.AlignLeft | Qt.AlignVCenter,
                self._title + ("  (log scale)" if self._log_y else ""),
            )
            p.setFont(font)
            top += fm.height() + 4
        legend = self._legend_layout(fm, w - 16)
        legend_h = (legend[-1][1].bottom() if legend else 0.0) + (4 if legend else 0)
        for s, rect in legend:
            r = rect.translated(8, top)
            mid = r.center().y()
            pen = QPen(s.color, 2.0, s.style)
            p.setPen(pen)
            p.drawLine(QPointF(r.left() + 2, mid), QPointF(r.left() + 24, mid))
            p.setPen(QPen(s.color, 1.5))
            p.setBrush(s.color)
            self._draw_marker_shape(p, s.marker, QPointF(r.left() + 13, mid), 3.0)
            p.setBrush(Qt.NoBrush)
            p.setPen(text_color)
            p.drawText(
                QRectF(r.left() + 28, r.top(), r.width() - 28, r.height()),
                Qt.AlignLeft | Qt.AlignVCenter,
                s.name,
            )
        top += legend_h

        ranges = self._ranges()
        y_ticks: list[float] = []
        if ranges is not None:
            (x_lo, x_hi), (y_lo, y_hi) = ranges
            y_ticks = _log_ticks(y_lo, y_hi) if self._log_y else nice_ticks(y_lo, y_hi, 4)
        label_w = max(
            [fm.horizontalAdvance(_label(t)) for t in y_ticks] + [fm.horizontalAdvance("0.0")]
        )
        bottom_space = fm.height() + 6 + (fm.height() + 2 if self._x_label else 0)
        area = QRectF(label_w + 14, top + 4, w - label_w - 14 - 12, h - top - 4 - bottom_space - 4)
        if area.width() < 20 or area.height() < 20:
            return
        p.setPen(QPen(grid_color, 1))
        p.drawRect(area)
        if ranges is None or not any(self._usable(y) for s in self._series.values() for y in s.ys):
            p.setPen(text_color)
            p.drawText(area, Qt.AlignCenter, self._empty_text)
            if ranges is None:
                return

        def fx(x: float) -> float:
            return area.left() + (x - x_lo) / (x_hi - x_lo) * area.width()

        def fy(y: float) -> float:
            v = math.log10(y) if self._log_y else y
            return area.bottom() - (v - y_lo) / (y_hi - y_lo) * area.height()

        # Grid and tick labels.
        for t in y_ticks:
            y = fy(t)
            if area.top() - 0.5 <= y <= area.bottom() + 0.5:
                p.setPen(QPen(grid_color, 1))
                p.drawLine(QPointF(area.left(), y), QPointF(area.right(), y))
                p.setPen(text_color)
                p.drawText(
                    QRectF(0, y - fm.height() / 2, label_w + 8, fm.height()),
                    Qt.AlignRight | Qt.AlignVCenter,
                    _label(t),
                )
        x_ticks = nice_ticks(x_lo, x_hi, max(2, int(area.width() // 60)), integer=self._integer_x)
        for t in x_ticks:
            x = fx(t)
            if area.left() - 0.5 <= x <= area.right() + 0.5:
                p.setPen(QPen(grid_color, 1))
                p.drawLine(QPointF(x, area.top()), QPointF(x, area.bottom()))
                p.setPen(text_color)
                text = _label(t) if not self._integer_x else str(int(round(t)))
                tw = fm.horizontalAdvance(text)
                p.drawText(
                    QRectF(x - tw / 2 - 2, area.bottom() + 3, tw + 4, fm.height()),
                    Qt.AlignCenter,
                    text,
                )
        if self._x_label:
            p.setPen(text_color)
            p.drawText(
                QRectF(area.left(), h - fm.height() - 4, area.width(), fm.height()),
                Qt.AlignCenter,
                self._x_label,
            )

        # Phase marker.
        if self._marker is not None and x_lo <= self._marker[0] <= x_hi:
            mx = fx(self._marker[0])
            pen = QPen(text_color, 1.2, Qt.DashLine)
            p.setPen(pen)
            p.drawLine(QPointF(mx, area.top()), QPointF(mx, area.bottom()))
            if self._marker[1]:
                tw = fm.horizontalAdvance(self._marker[1])
                tx = mx + 4 if mx + 4 + tw < area.right() else mx - 4 - tw
                bg = QColor(pal.color(pal.ColorRole.Base))
                bg.setAlpha(210)
                box = QRectF(tx - 2, area.top() + 2, tw + 4, fm.height())
                p.fillRect(box, bg)
                p.drawText(box, Qt.AlignCenter, self._marker[1])

        # Series.
        p.setClipRect(area.adjusted(-4, -4, 4, 4))
        n = len(self._series)
        for i, s in enumerate(self._series.values()):
            # Earlier series are drawn wider and with bigger markers, so a later series that
            # coincides with them (accuracy = balanced accuracy) leaves them visible around it.
            width = 2.0 + 1.2 * (n - 1 - i) / max(n - 1, 1)
            radius = 3.2 + 1.6 * (n - 1 - i) / max(n - 1, 1)
            segments: list[list[QPointF]] = [[]]
            for x, y in zip(s.xs, s.ys, strict=True):
                if _finite(x) and self._usable(y):
                    segments[-1].append(QPointF(fx(x), fy(y)))
                elif segments[-1]:
                    segments.append([])
            p.setBrush(Qt.NoBrush)
            p.setPen(QPen(s.color, width, s.style, Qt.RoundCap, Qt.RoundJoin))
            for seg in segments:
                if len(seg) >= 2:
                    path = QPainterPath(seg[0])
                    for pt in seg[1:]:
                        path.lineTo(pt)
                    p.drawPath(path)
            total = sum(len(seg) for seg in segments)
            p.setPen(QPen(s.color, 1.5))
            p.setBrush(s.color)
            for seg in segments:
                if total <= MAX_MARKED_POINTS or len(seg) == 1:
                    for pt in seg:
                        self._draw_marker_shape(p, s.marker, pt, radius)
        p.setClipping(False)
