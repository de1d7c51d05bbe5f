"""Pictures of the real window, its review dialogs and the Excel report, for a person to look
at before a release (issue 12's "done when"): nothing here asserts, it only shows.

    python tools/screenshots.py --out shots [--fields ../shared/data/bccd/images] [--report]

Runs offscreen (no display needed). Writes, per theme (light, dark):
  window-<theme>-1024x700.png, window-<theme>-1600x1000.png  the Analysis tab after a review
  fields-<theme>-1600x1000.png                               a smear-field cell (with --fields)
and once: sign-off-dialog.png, restore-offer.png, training-1024x700.png, and with --report
report-<n>.png, the pages of the exported report as LibreOffice prints them.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("shots"))
    parser.add_argument("--folder", type=Path, help="single-cell images (default: the samples)")
    parser.add_argument("--fields", type=Path, help="a folder of smear fields (a few images)")
    parser.add_argument("--report", action="store_true", help="render the report's pages too")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    os.environ["LEUKGUI_USER_DIR"] = tempfile.mkdtemp(prefix="leukgui-shots-")

    from PySide6.QtCore import QEventLoop, QTimer
    from PySide6.QtWidgets import QApplication

    app = QApplication.instance() or QApplication(sys.argv[:1])

    from leukgui.core.paths import samples_dir
    from leukgui.core.preferences import Preferences
    from leukgui.core.results import ALL, HEM
    from leukgui.core.sessions import session_summary
    from leukgui.gui import review_dialogs
    from leukgui.gui.main_window import MainWindow
    from leukgui.gui.theme import apply_theme

    folder = args.folder or samples_dir()

    def settle(times: int = 30) -> None:
        for _ in range(times):
            app.processEvents()

    def analyze(window: MainWindow, paths: list[Path]) -> None:
        loop = QEventLoop()
        window.analysis_finished.connect(lambda *_: loop.quit())
        QTimer.singleShot(600_000, loop.quit)
        window.open_paths([str(p) for p in paths])
        loop.exec()
        settle()

    def grab_dialog(name: str, run: Callable[[], object]) -> None:
        """Show a real modal dialog, photograph it, then close it with Escape."""

        def shoot() -> None:
            box = app.activeModalWidget()
            if box is None:
                QTimer.singleShot(100, shoot)
                return
            settle(10)
            box.grab().save(str(args.out / name))
            box.reject()

        QTimer.singleShot(300, shoot)
        run()

    def shoot_window(window: MainWindow, stem: str, sizes: list[tuple[int, int]]) -> None:
        window.refresh_summary()  # not wait for the summary's timer
        window.cells.thumbnail_cache.wait_for_done()
        for width, height in sizes:
            window.resize(width, height)
            settle()
            window.grab().save(str(args.out / f"{stem}-{width}x{height}.png"))

    for theme in ("light", "dark"):
        apply_theme(theme)
        prefs = Preferences(reviewer="Dr. A. Example", theme=theme, preload_model=False)
        prefs.open_report_after_export = False
        window = MainWindow(prefs, restore_check=False)
        window.show()
        analyze(window, [folder])
        cells = window.cells.cells()
        hem = [c for c in cells if c.label == HEM]
        if hem:  # a reclassified cell, a confirmed one, and a signed-off sample
            window.select_cell(hem[0])
            window.review_current(ALL)
            window.confirm_current()
        sample = cells[-1].sample if cells else None
        if sample and theme == "light":
            for row in range(window.samples.table.rowCount()):
                if window.samples.table.item(row, 0).text() == sample:
                    window.samples.table.selectRow(row)
            grab_dialog("sign-off-dialog.png", window.sign_off_current_sample)
            window._confirm_sign_off = lambda *_: True  # the shots below show it locked
            window.sign_off_current_sample()
            window.samples.clear_selection()
        if cells:
            window.select_cell(hem[0] if hem else cells[0])
        shoot_window(window, f"window-{theme}", [(1024, 700), (1600, 1000)])
        if theme == "light" and window.session is not None:
            text = review_dialogs.restore_offer_text(session_summary(window.session.store.folder))
            grab_dialog(
                "restore-offer.png",
                lambda w=window, t=text: review_dialogs.ask_restore(w, t),
            )
            window.tabs.setCurrentWidget(window.training_page)
            shoot_window(window, "training", [(1024, 700)])
            window.tabs.setCurrentIndex(0)
        if args.report and theme == "light":
            render_report(window, args.out, app)
        if args.fields:
            window.close_discarding_review()
            window = MainWindow(prefs, restore_check=False)
            window.show()
            window.set_image_kind("fields")
            fields = sorted(p for p in args.fields.iterdir() if p.is_file())[:3]
            analyze(window, fields)
            field_cells = window.cells.cells()
            if len(field_cells) > 1:
                window.select_cell(field_cells[1])
            shoot_window(window, f"fields-{theme}", [(1600, 1000)])
        window.close_discarding_review()
        settle()
    print(f"screenshots in {args.out}")
    return 0


def render_report(window: object, out: Path, app: object) -> None:
    """Export the report and print it to PNG pages the way LibreOffice prints it."""
    from PySide6.QtCore import QEventLoop, QTimer

    office = shutil.which("libreoffice") or shutil.which("soffice")
    if office is None or shutil.which("pdftoppm") is None:
        print("report pages skipped: libreoffice or pdftoppm is not installed")
        return
    work = Path(tempfile.mkdtemp(prefix="leukgui-report-"))
    report = work / "report.xlsx"
    loop = QEventLoop()
    window.export_finished.connect(lambda *_: loop.quit())
    QTimer.singleShot(300_000, loop.quit)
    window.export_excel(report)
    loop.exec()
    subprocess.run(
        [office, "--headless", "--convert-to", "pdf", "--outdir", str(work), str(report)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    subprocess.run(
        ["pdftoppm", "-r", "70", "-png", str(work / "report.pdf"), str(out / "report")],
        check=True,
        timeout=300,
    )


if __name__ == "__main__":
    sys.exit(main())
