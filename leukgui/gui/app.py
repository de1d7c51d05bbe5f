"""Start the desktop app, or run its self-test (`leukgui --self-test`).

PySide6 is imported here, TensorFlow is not: it loads in the analysis worker, so the window
is on screen about as fast as a bare Qt window.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from leukgui import APP_NAME, __version__

if TYPE_CHECKING:
    from leukgui.gui.main_window import MainWindow

__all__ = ["cpu_runtimes_passed_over", "main", "open_window", "self_test"]


def _application(argv: Sequence[str]) -> object:
    from PySide6.QtCore import Qt
    from PySide6.QtGui import QGuiApplication
    from PySide6.QtWidgets import QApplication

    app = QApplication.instance()
    if app is None:
        QGuiApplication.setHighDpiScaleFactorRoundingPolicy(
            Qt.HighDpiScaleFactorRoundingPolicy.PassThrough
        )
        app = QApplication(list(argv) or [APP_NAME])
        app.setApplicationName(APP_NAME)
        app.setApplicationVersion(__version__)
        app.setOrganizationName(APP_NAME)
    from leukgui.gui.icons import app_icon

    app.setWindowIcon(app_icon())
    return app


def open_window(argv: Sequence[str]) -> MainWindow:
    """Show the main window and act on the command line: a `.leukmodel` file (what
    double-clicking one runs, through the installer's file association) is imported, and
    folders or images are analyzed."""
    from leukgui.gui.main_window import MainWindow
    from leukgui.gui.theme import apply_theme

    window = MainWindow()
    apply_theme(window.prefs.theme)
    window.restyle()  # the window was built before its preferences named the theme
    window.show()
    bundles = [a for a in argv if a.lower().endswith(".leukmodel") and Path(a).is_file()]
    folders = [a for a in argv if not a.startswith("-") and Path(a).exists() and a not in bundles]
    for bundle in bundles:
        window.import_model(Path(bundle))
    if folders:
        window.open_paths(folders)
    return window


def main(argv: Sequence[str] | None = None) -> int:
    """Open the main window (and the given folders or model files, if any)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    app = _application([sys.argv[0], *argv])
    _window = open_window(argv)  # the reference keeps the window alive during the loop
    return int(app.exec())


def cpu_runtimes_passed_over(notes: Iterable[str]) -> list[str]:
    """The runtime notes that fail the self-test: a CPU engine that was passed over
    ("OpenVINO · CPU not used: …") or is missing ("OpenVINO not used: it is not installed"),
    which on an installed copy means a packaging or model problem (a missing library, a
    damaged graph). A GPU that was not used (DirectML, CUDA, an Intel GPU: no device or no
    driver here) is a fact about this machine, not a failure; those notes are only printed."""
    return [note for note in notes if "· CPU not used" in note or note.endswith("is not installed")]


def self_test(out: object = None) -> int:
    """Open the window offscreen, analyze the bundled samples, export and check a report.

    The installer runs this after installing; it exits 0 only when every step worked, and
    the analysis ran on the runtime that should come first among the CPU engines (see
    `cpu_runtimes_passed_over`).
    """
    import tempfile

    stream = out or sys.stdout
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    started = time.perf_counter()

    def say(text: str) -> None:
        stream.write(f"[self-test {time.perf_counter() - started:5.1f} s] {text}\n")
        stream.flush()

    app = _application([APP_NAME, "--self-test"])
    from leukgui.gui.main_window import MainWindow

    with tempfile.TemporaryDirectory(prefix="leukgui-selftest-") as tmp:
        os.environ["LEUKGUI_USER_DIR"] = os.environ.get("LEUKGUI_USER_DIR") or str(
            Path(tmp) / "user"
        )
        window = MainWindow(restore_check=False)
        try:
            return _self_test_steps(app, window, say, Path(tmp))
        finally:
            if window.isVisible():  # a failed step: nothing may be left open
                window.close_discarding_review()
                app.processEvents()


def _self_test_steps(app: Any, window: MainWindow, say: Callable[[str], None], tmp: Path) -> int:
    """The self-test's steps on its window (`self_test`): 0 when every one worked."""
    from PySide6.QtCore import QEventLoop, QTimer

    from leukgui.core.imaging import discover
    from leukgui.core.paths import samples_dir

    problems: list[str] = []

    def report_problem(kind: str, title: str, text: str, details: str = "") -> None:
        problems.append(f"{title}: {text}")
        say(f"{kind.upper()}: {title}: {text}")
        if details:
            say(details.strip().splitlines()[-1])

    window._show_message = report_problem  # no dialogs in a self-test: print and fail
    window.prefs.reviewer = "self-test"
    window.prefs.open_report_after_export = False
    window.show()
    say(f"window shown; model {window.current_bundle_path()}")
    expected, _ = discover([str(samples_dir())])
    if not expected or window.current_bundle_path() is None:
        say("FAILED: no bundled samples or no model found")
        return 1

    def wait(signal: object, seconds: float) -> list[object]:
        box: list[object] = []
        loop = QEventLoop()
        signal.connect(lambda value: (box.append(value), loop.quit()))
        QTimer.singleShot(int(seconds * 1000), loop.quit)
        poll = QTimer()
        poll.timeout.connect(lambda: problems and loop.quit())  # a failure ends the wait
        poll.start(200)
        loop.exec()
        poll.stop()
        return box

    window.open_paths([str(samples_dir())])
    result = wait(window.analysis_finished, 300)
    if not result:
        say("FAILED: " + (problems[0] if problems else "no result within 5 minutes"))
        return 1
    shot = os.environ.get("LEUKGUI_SELFTEST_SCREENSHOT")
    if shot:  # how the build scripts look at the frozen window
        window.resize(1400, 860)
        window.move_selection(0)
        app.processEvents()
        window.grab().save(shot)
        say(f"screenshot {shot}")
    run = result[0]
    say(f"analyzed {len(run.cells)} cells, {len(run.errors)} errors")
    in_use = window.runtime_status()
    if in_use is None:
        say("FAILED: the window does not say which inference runtime ran the analysis")
        return 1
    say(f"runtime {in_use.description}")
    for note in in_use.notes:
        say(f"runtime note: {note}")
    passed_over = cpu_runtimes_passed_over(in_use.notes)
    if passed_over:
        say(
            f"FAILED: the analysis ran on {in_use.description} because a CPU runtime could "
            "not be used (a packaging or model problem; the notes above say why): "
            + "; ".join(passed_over)
        )
        return 1
    if len(run.cells) != len(expected):
        say(f"FAILED: expected {len(expected)} cells")
        return 1
    window.move_selection(0)
    window.review_current("HEM")
    report = Path(tmp) / "self-test.xlsx"
    window.export_excel(report)
    exported = wait(window.export_finished, 120)
    if not exported or exported[0] is None:
        say("FAILED: the report could not be written")
        return 1
    import openpyxl

    workbook = openpyxl.load_workbook(report, read_only=True)
    rows = workbook["Cells"].max_row
    sheets = set(workbook.sheetnames)
    workbook.close()
    if not {"Summary", "Cells", "Audit trail"} <= sheets:
        say(f"FAILED: report sheets are {sorted(sheets)}")
        return 1
    say(f"report {report.name}: sheets {', '.join(sorted(sheets))}; {rows} rows on Cells")
    window.close_discarding_review()
    app.processEvents()
    say("OK")
    return 0
