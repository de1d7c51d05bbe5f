"""The dark theme reaches every part of the window a person looks at for hours: the gallery,
the inspector, the samples table, the training page and the status texts."""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import re  # noqa: E402
import shutil  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PySide6.QtGui import QColor, QImage  # noqa: E402
from PySide6.QtWidgets import QApplication, QLabel, QWidget  # noqa: E402

from leukgui.core.paths import user_models_dir  # noqa: E402
from leukgui.core.preferences import Preferences  # noqa: E402
from leukgui.core.synthetic import write_dataset  # noqa: E402
from leukgui.gui.theme import apply_theme, is_dark, status_colour, status_style  # noqa: E402


def _bright_share(widget: QWidget) -> float:
    """The share of a widget's pixels that are near white (a light surface left behind)."""
    image = widget.grab().toImage().convertToFormat(QImage.Format.Format_RGB888)
    width, height = image.width(), image.height()
    data = np.frombuffer(image.constBits(), np.uint8, image.bytesPerLine() * height)
    rgb = data.reshape(height, image.bytesPerLine())[:, : width * 3].reshape(height, width, 3)
    return float((rgb.min(axis=2) > 215).mean())


def _contrast(a: str, b: QColor) -> float:
    def lum(c: QColor) -> float:
        parts = [c.redF(), c.greenF(), c.blueF()]
        lin = [p / 12.92 if p <= 0.03928 else ((p + 0.055) / 1.055) ** 2.4 for p in parts]
        return 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]

    hi, lo = sorted((lum(QColor(a)), lum(b)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


@pytest.fixture
def window(qtbot, tiny_bundle_path: Path, tmp_path: Path):
    from leukgui.gui.main_window import MainWindow

    target = user_models_dir() / tiny_bundle_path.name
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(tiny_bundle_path, target)
    apply_theme("light")
    prefs = Preferences(reviewer="Dr. Test", open_report_after_export=False, preload_model=False)
    win = MainWindow(prefs, restore_check=False)
    qtbot.addWidget(win)
    win.show()
    win.select_model(target)
    folder = tmp_path / "patient3"
    write_dataset(folder, 3, 3, fmt="png", size=96)
    with qtbot.waitSignal(win.analysis_finished, timeout=180_000):
        win.open_paths([str(folder)])
    win.resize(1400, 860)
    win.gallery.setCurrentIndex(win.proxy.index(0, 0))
    yield win
    apply_theme("light")


def test_switching_to_dark_darkens_gallery_inspector_table_and_training(qtbot, window) -> None:
    parts = {
        "gallery": window.gallery.viewport(),
        "inspector": window.inspector,
        "samples table": window.samples.table.viewport(),
    }
    qtbot.wait(50)
    light = {name: _bright_share(w) for name, w in parts.items()}
    assert max(light.values()) > 0.3  # the light theme really is light (the check can fail)
    # Messages already on screen in a status colour (a sheet, or rich text) follow the switch.
    styled = QLabel("Could not read the data set", window.training_page)
    styled.setStyleSheet(status_style("error"))
    rich = QLabel(f"<span style='{status_style('error')}'>✗ not found</span>", window)
    light_error = status_colour("error")
    window.act_dark.trigger()  # View ▸ Dark theme, as a user switches
    QApplication.processEvents()
    qtbot.wait(50)
    assert is_dark() and window.prefs.theme == "dark"
    assert status_colour("error") != light_error
    assert status_colour("error") in styled.styleSheet() and light_error not in rich.text()
    assert status_colour("error") in rich.text()
    banner = window.demo_banner.styleSheet().lower()
    assert QColor(re.search(r"background:\s*([^;]+);", banner).group(1)).lightnessF() < 0.5
    dark = {name: _bright_share(w) for name, w in parts.items()}
    assert all(share < 0.1 for share in dark.values()), dark
    window.tabs.setCurrentWidget(window.training_page)
    qtbot.wait(50)
    assert _bright_share(window.training_page) < 0.1
    for widget in window.findChildren(QWidget):  # no style sheet pins a light surface
        sheet = widget.styleSheet().lower().replace(" ", "")
        for colour in re.findall(r"background(?:-color)?:([^;}]+)", sheet):
            assert colour.startswith("palette(") or QColor(colour).lightnessF() < 0.5, (
                widget,
                sheet,
            )


@pytest.mark.parametrize("theme", ["light", "dark"])
def test_status_colours_keep_their_contrast_on_each_theme(qapp, theme) -> None:
    apply_theme(theme)
    try:
        background = qapp.palette().color(qapp.palette().ColorRole.Window)
        for kind in ("error", "warning", "ok", "muted"):
            assert _contrast(status_colour(kind), background) >= 4.5, kind
        assert is_dark() == (theme == "dark")
    finally:
        apply_theme("light")
