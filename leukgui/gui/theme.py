"""A clean light theme (and an optional dark one) on Qt's Fusion style.

Fusion looks the same on every Windows version and scales cleanly on high-DPI screens; the
palette is the only thing that changes between themes.
"""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtGui import QColor, QPalette
from PySide6.QtWidgets import QApplication, QLabel, QWidget

__all__ = ["apply_theme", "is_dark", "restyle_status", "status_colour", "status_style"]

_LIGHT = {
    QPalette.ColorRole.Window: "#f4f5f7",
    QPalette.ColorRole.WindowText: "#1f2328",
    QPalette.ColorRole.Base: "#ffffff",
    QPalette.ColorRole.AlternateBase: "#f0f2f5",
    QPalette.ColorRole.Text: "#1f2328",
    QPalette.ColorRole.Button: "#ffffff",
    QPalette.ColorRole.ButtonText: "#1f2328",
    QPalette.ColorRole.Highlight: "#2f6fde",
    QPalette.ColorRole.HighlightedText: "#ffffff",
    QPalette.ColorRole.ToolTipBase: "#ffffff",
    QPalette.ColorRole.ToolTipText: "#1f2328",
    QPalette.ColorRole.PlaceholderText: "#8b949e",
    QPalette.ColorRole.Link: "#1a5fd0",
    QPalette.ColorRole.LinkVisited: "#6f42c1",
}
_DARK = {
    QPalette.ColorRole.Window: "#1e2126",
    QPalette.ColorRole.WindowText: "#e6e8eb",
    # Base a step lighter than the window, so check boxes and fields stand out from it
    # (Fusion draws their outlines from the window colour, which vanish on a dark one).
    QPalette.ColorRole.Base: "#2a2e35",
    QPalette.ColorRole.AlternateBase: "#30353d",
    QPalette.ColorRole.Light: "#4a505a",
    QPalette.ColorRole.Midlight: "#3a3f47",
    QPalette.ColorRole.Mid: "#5b616b",
    QPalette.ColorRole.Dark: "#121417",
    QPalette.ColorRole.Shadow: "#000000",
    QPalette.ColorRole.Text: "#e6e8eb",
    QPalette.ColorRole.Button: "#353a42",
    QPalette.ColorRole.ButtonText: "#e6e8eb",
    QPalette.ColorRole.Highlight: "#4c8dff",
    QPalette.ColorRole.HighlightedText: "#ffffff",
    QPalette.ColorRole.ToolTipBase: "#2a2e35",
    QPalette.ColorRole.ToolTipText: "#e6e8eb",
    QPalette.ColorRole.PlaceholderText: "#8b949e",
    # Qt's default link blue is 1.9:1 on the dark window: links get a light blue instead.
    QPalette.ColorRole.Link: "#8ab4ff",
    QPalette.ColorRole.LinkVisited: "#b08cff",
}


def apply_theme(theme: str = "light") -> None:
    """Fusion style with the light (default) or dark palette."""
    app = QApplication.instance()
    if app is None:
        return
    app.setStyle("Fusion")
    palette = QPalette()
    for role, colour in (_DARK if theme == "dark" else _LIGHT).items():
        palette.setColor(role, QColor(colour))
        palette.setColor(
            QPalette.ColorGroup.Disabled,
            role,
            QColor(colour).darker(130) if theme == "light" else QColor(colour).lighter(60),
        )
    palette.setColor(QPalette.ColorGroup.Disabled, QPalette.ColorRole.Text, QColor("#9aa0a6"))
    palette.setColor(QPalette.ColorGroup.Disabled, QPalette.ColorRole.WindowText, QColor("#9aa0a6"))
    palette.setColor(QPalette.ColorGroup.Disabled, QPalette.ColorRole.ButtonText, QColor("#9aa0a6"))
    app.setPalette(palette)


# Text colours that carry a meaning, legible (contrast >= 4.5:1) on each theme's background.
_STATUS = {
    "light": {"error": "#B00020", "warning": "#8A4B00", "ok": "#1E7B34", "muted": "#5F6368"},
    "dark": {"error": "#FF8A80", "warning": "#F2B84B", "ok": "#7BD88F", "muted": "#A0A7B0"},
}


def is_dark(palette: QPalette | None = None) -> bool:
    """Whether `palette` (default: the application's) is a dark one: the base views paint on
    darker than their text. The one test every painter uses (gallery tiles, inspector chip,
    status colours)."""
    if palette is None:
        app = QApplication.instance()
        if app is None:
            return False
        palette = app.palette()
    base = palette.color(QPalette.ColorRole.Base).lightnessF()
    return base < palette.color(QPalette.ColorRole.Text).lightnessF()


def status_colour(kind: str) -> str:
    """The colour for "error", "warning", "ok" or "muted" text in the current theme, so a
    message keeps its meaning (and its contrast) when the user switches to the dark theme."""
    return _STATUS["dark" if is_dark() else "light"][kind]


def status_style(kind: str, extra: str = "") -> str:
    """A style sheet for a label in a status colour (looked up now: call it when showing)."""
    return f"color: {status_colour(kind)};{(' ' + extra) if extra else ''}"


def restyle_status(root: QWidget) -> None:
    """After a theme switch, move every status colour already on screen (a label's style
    sheet or rich text) to the new theme's shade, so an error written in dark red before the
    switch does not stay dark red on a dark window."""
    new = "dark" if is_dark() else "light"
    old = "light" if new == "dark" else "dark"
    swaps = {_STATUS[old][k].lower(): _STATUS[new][k] for k in _STATUS[old]}

    def swap(text: str) -> str:
        for before, after in swaps.items():
            text = text.replace(before, after).replace(before.upper(), after)
        return text

    for widget in [root, *root.findChildren(QWidget)]:
        sheet = widget.styleSheet()
        if sheet and swap(sheet) != sheet:
            widget.setStyleSheet(swap(sheet))
        if isinstance(widget, QLabel) and widget.textFormat() != Qt.TextFormat.PlainText:
            text = widget.text()
            if "color" in text and swap(text) != text:
                widget.setText(swap(text))
