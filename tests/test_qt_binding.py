"""Guard against a broken Qt binding release: PySide6 6.12.0 on Python < 3.12 drops a
reference to None on every Qt call that returns nothing, and the app aborts with
"Fatal Python error: none_dealloc" after a few thousand repaints."""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import sys  # noqa: E402

from PySide6.QtCore import QSortFilterProxyModel  # noqa: E402
from PySide6.QtWidgets import QApplication, QWidget  # noqa: E402


def test_qt_calls_do_not_leak_references_to_none() -> None:
    app = QApplication.instance() or QApplication([])
    widget = QWidget()
    proxy = QSortFilterProxyModel()
    before = sys.getrefcount(None)
    for _ in range(2000):
        widget.update()
        proxy.invalidate()
    assert sys.getrefcount(None) - before > -100, "this PySide6 build leaks None references"
    assert app is not None
