"""The main window as a user drives it: drop, analyze, cancel, review, autosave, export."""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import shutil  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import textwrap  # noqa: E402
from pathlib import Path  # noqa: E402

import openpyxl  # noqa: E402
import pytest  # noqa: E402
from PySide6.QtCore import QMimeData, QPointF, Qt, QUrl  # noqa: E402
from PySide6.QtGui import QDropEvent  # noqa: E402

from leukgui.core.bundle import install_bundle  # noqa: E402
from leukgui.core.formatting import percent  # noqa: E402
from leukgui.core.metrics import sample_summary  # noqa: E402
from leukgui.core.paths import user_models_dir  # noqa: E402
from leukgui.core.preferences import Preferences  # noqa: E402
from leukgui.core.results import ALL, DEMO_NOTICE, HEM  # noqa: E402
from leukgui.core.review import UNCLASSIFIABLE  # noqa: E402
from leukgui.core.sessions import CLOSED_MARKER, sessions_root, unfinished_sessions  # noqa: E402
from leukgui.core.synthetic import write_dataset  # noqa: E402
from leukgui.gui.samples_panel import COLUMNS  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def installed_tiny(tiny_bundle_path: Path) -> Path:
    """The tiny 64 px bundle installed in the (temporary) user models folder."""
    target = user_models_dir() / tiny_bundle_path.name
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(tiny_bundle_path, target)
    return target


@pytest.fixture
def cells_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "patient7"
    write_dataset(folder, 6, 3, fmt="png", size=96)
    (folder / "all" / "broken.png").write_bytes(b"not an image")
    return folder


@pytest.fixture
def window(qtbot, installed_tiny: Path):
    from leukgui.gui.main_window import MainWindow

    prefs = Preferences(reviewer="Dr. Test", open_report_after_export=False, preload_model=False)
    win = MainWindow(prefs, restore_check=False)
    qtbot.addWidget(win)
    win.show()
    win.select_model(installed_tiny)
    assert win.current_bundle_path() == str(installed_tiny)
    return win


def _drop(win, paths: list[Path]) -> None:
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(p)) for p in paths])
    event = QDropEvent(
        QPointF(50, 50),
        Qt.DropAction.CopyAction,
        mime,
        Qt.MouseButton.LeftButton,
        Qt.KeyboardModifier.NoModifier,
    )
    win.dropEvent(event)


def _analyze(qtbot, win, paths: list[Path]):
    with qtbot.waitSignal(win.analysis_finished, timeout=180_000) as blocker:
        _drop(win, paths)
    return blocker.args[0]


def test_empty_window_shows_the_drop_target(window) -> None:
    assert window.stack.currentWidget() is window.drop_area
    assert not window.act_export.isEnabled()


def test_dropping_a_folder_fills_gallery_samples_and_errors(qtbot, window, cells_folder) -> None:
    run = _analyze(qtbot, window, [cells_folder])
    assert len(run.cells) == 12 and len(run.errors) == 1
    assert window.cells.rowCount() == 12
    errors = window.samples.errors
    assert errors.count() == 1 and "broken.png" in errors.item(0).text()
    assert errors.item(0).text().endswith(f"({run.errors[0].kind_text})")
    assert window.samples.tabs.tabText(1) == "Errors (1)"
    table = window.samples.table
    samples = [table.item(r, 0).text() for r in range(table.rowCount())]
    assert samples == ["patient7/all", "patient7/hem", "All samples"]
    headers = [table.horizontalHeaderItem(c).text() for c in range(table.columnCount())]
    assert [h.replace("\n", " ") for h in headers] == list(COLUMNS)
    overall = table.rowCount() - 1
    want = sample_summary(run, window.review)[-1]
    assert table.item(overall, COLUMNS.index("Cells")).text() == "12"
    assert table.item(overall, COLUMNS.index("ALL %")).text() == percent(
        want.all_fraction, missing=""
    )
    # The counts behind the key columns: in the row's tooltip and the details strip.
    tip = table.item(overall, 0).toolTip()
    assert f"{want.n_uncertain} UNCERTAIN" in tip and f"{want.n_all} ALL" in tip
    assert window.samples.details.text() == tip  # nothing selected: the strip shows all samples
    table.selectRow(0)
    assert window.samples.details.text().startswith("patient7/all: ")
    assert window.act_export.isEnabled()
    assert window.inspector.isVisible()


def test_cancel_keeps_the_finished_cells(qtbot, window, tmp_path: Path) -> None:
    folder = tmp_path / "many"
    write_dataset(folder, 150, 5, fmt="bmp", size=64)
    window.prefs.batch_size = 8
    from leukgui.gui.analysis import Outcomes

    def cancel_on_first_cells(event) -> None:
        if isinstance(event, Outcomes):
            window.cancel_analysis()

    with qtbot.waitSignal(window.analysis_finished, timeout=180_000) as blocker:
        window.open_paths([str(folder)])
        window.worker.progressed.connect(cancel_on_first_cells)
    run = blocker.args[0]
    assert run.info.cancelled
    assert 0 < len(run.cells) < 300
    assert window.cells.rowCount() == len(run.cells)
    assert "Cancelled" in window.progress_label.text()


def test_a_file_name_that_is_not_utf8_can_be_reviewed_and_restored(
    qtbot, window, cells_folder
) -> None:
    """Latin-1 bytes in a name (a USB stick, a shared drive) must not block reviewing."""
    raw = os.fsencode(cells_folder / "all") + b"/Patient_M\xfcller.png"
    shutil.copyfile(next((cells_folder / "all").glob("*.png")), os.fsdecode(raw))
    run = _analyze(qtbot, window, [cells_folder])
    odd = next(c for c in run.cells if os.fsencode(c.path) == raw)
    window.select_cell(odd)
    window.gallery.setFocus()
    window.activateWindow()
    qtbot.keyClick(window.gallery, Qt.Key.Key_H)
    assert window.review.final_label(odd) == HEM
    folder = window.session.folder
    window._close_session()
    from leukgui.core.sessions import ReviewSession

    restored = ReviewSession.restore(folder)
    again = next(c for c in restored.run.cells if os.fsencode(c.path) == raw)
    assert restored.review.final_label(again) == HEM
    restored.close()


def test_review_keys_change_labels_summary_and_audit(qtbot, window, cells_folder) -> None:
    run = _analyze(qtbot, window, [cells_folder])
    window.gallery.setFocus()
    window.gallery.setCurrentIndex(window.proxy.index(0, 0))
    first = window.current_cell()
    window.activateWindow()
    qtbot.keyClick(window.gallery, Qt.Key.Key_H)  # a real key press through the shortcut
    assert window.review.final_label(first) == HEM
    second = window.current_cell()
    assert second is not first  # moved on to the next cell
    window.act_all.trigger()
    assert window.review.final_label(second) == ALL
    third = window.current_cell()
    window.act_unclassifiable.trigger()
    assert window.review.final_label(third) == UNCLASSIFIABLE
    window.refresh_summary()
    table = window.samples.table
    overall = table.rowCount() - 1
    assert table.item(overall, COLUMNS.index("Reviewed")).text() == f"3/{len(run.cells)}"
    assert "1 UNCLASSIFIABLE" in table.item(overall, 0).toolTip()
    audit = window.review.audit
    assert [e.after for e in audit] == [HEM, ALL, UNCLASSIFIABLE]
    assert {e.reviewer for e in audit} == {"Dr. Test"}
    # Undo takes back the newest change (the third cell's), wherever the selection is.
    window.gallery.setCurrentIndex(window.proxy.index(0, 0))
    window.act_undo.trigger()
    assert not window.review.is_reviewed(third) and window.current_cell() is third
    assert window.review.final_label(first) == HEM


def _focus_gallery(qtbot, window, row: int = 0):
    window.activateWindow()
    window.tabs.setCurrentIndex(0)
    window.gallery.setFocus()
    window.gallery.setCurrentIndex(window.proxy.index(row, 0))
    qtbot.waitUntil(window.gallery.hasFocus, timeout=5000)
    return window.current_cell()


def test_keys_in_training_fields_never_touch_a_review(qtbot, window, cells_folder) -> None:
    """Bug: Enter in the Training tab's folder field or Seed box confirmed the hidden current
    cell on the Analysis tab. Review keys now belong to the gallery and the inspector."""
    _analyze(qtbot, window, [cells_folder])
    cell = _focus_gallery(qtbot, window)
    page = window.training_page
    window.tabs.setCurrentWidget(page)
    folder_edit = page.form.dataset.folder_edit
    folder_edit.setFocus()
    qtbot.waitUntil(folder_edit.hasFocus, timeout=5000)
    folder_edit.setText(str(cells_folder))
    with qtbot.waitSignal(page.scan_finished, timeout=60_000):  # the field's own action
        qtbot.keyClick(folder_edit, Qt.Key.Key_Return)
    seed = page.form.seed_spin
    seed.setFocus()
    qtbot.waitUntil(seed.hasFocus, timeout=5000)
    for key in (Qt.Key.Key_Return, Qt.Key.Key_Enter, Qt.Key.Key_Backspace):
        qtbot.keyClick(seed, key)
    qtbot.keyClick(seed, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    assert window.review.audit == [] and window.current_cell() is cell
    # A menu click while the Analysis tab is hidden changes nothing either.
    window.act_hem.trigger()
    window.act_confirm.trigger()
    assert window.review.audit == []
    assert "Analysis tab" in window.statusBar().currentMessage()
    # On the Analysis tab, a combo box with the focus keeps its letters and Enter too.
    window.tabs.setCurrentIndex(0)
    window.label_filter.setFocus()
    qtbot.waitUntil(window.label_filter.hasFocus, timeout=5000)
    for key in (Qt.Key.Key_A, Qt.Key.Key_H, Qt.Key.Key_U, Qt.Key.Key_Return):
        qtbot.keyClick(window.label_filter, key)
    assert window.review.audit == []
    # The same keys in the gallery do review.
    window.label_filter.setCurrentIndex(0)  # the letters above searched the filter list
    _focus_gallery(qtbot, window)
    qtbot.keyClick(window.gallery, Qt.Key.Key_Return)
    assert [e.action for e in window.review.audit] == ["confirm"]


def test_ctrl_z_undoes_the_last_mark_and_ctrl_shift_z_redoes(qtbot, window, cells_folder) -> None:
    """Bug: each mark moves to the next cell, so Backspace right after a wrong key undid
    nothing. Undo now acts on the newest change and goes back to its cell."""
    _analyze(qtbot, window, [cells_folder])
    first = _focus_gallery(qtbot, window)
    qtbot.keyClick(window.gallery, Qt.Key.Key_A)  # first -> ALL, then on to the second
    qtbot.keyClick(window.gallery, Qt.Key.Key_H)  # second -> HEM, then on to the third
    assert window.current_cell() is not first
    second = window.review.audit[-1]
    qtbot.keyClick(window.gallery, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    assert window.current_cell().key == second.path  # back on the cell that was changed
    assert not window.review.is_reviewed(window.current_cell())
    assert "Undid" in window.statusBar().currentMessage()
    qtbot.keyClick(window.gallery, Qt.Key.Key_Backspace)  # Backspace undoes too
    assert not window.review.is_reviewed(first) and window.current_cell() is first
    qtbot.keyClick(
        window.gallery,
        Qt.Key.Key_Z,
        Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.ShiftModifier,
    )
    assert window.review.final_label(first) == ALL
    assert "Redid" in window.statusBar().currentMessage()
    qtbot.keyClick(window.gallery, Qt.Key.Key_Backspace)
    qtbot.keyClick(window.gallery, Qt.Key.Key_Backspace)
    assert "Nothing to undo" in window.statusBar().currentMessage()
    assert [e.action for e in window.review.audit] == ["label", "label"] + ["undo"] * 2 + [
        "label",
        "undo",
    ]


def test_sign_off_locks_a_sample(qtbot, window, cells_folder, monkeypatch) -> None:
    _analyze(qtbot, window, [cells_folder])
    messages = []
    monkeypatch.setattr(window, "_show_message", lambda *a, **k: messages.append(a))
    window.gallery.setCurrentIndex(window.proxy.index(0, 0))
    sample = window.current_cell().sample
    window.samples.table.selectRow(0)
    assert window.proxy.sample() == window.samples.selected_sample() == sample
    window.samples.sign_button.click()
    assert window.review.is_locked(sample)
    assert window.samples.table.item(0, COLUMNS.index("Signed off")).text() == "Dr. Test"
    window.proxy.set_sample(None)
    window.gallery.setCurrentIndex(window.proxy.index(0, 0))
    window.act_hem.trigger()
    assert messages and "signed off" in messages[-1][2].lower()


def test_export_writes_reviewed_labels_and_the_audit_trail(qtbot, window, cells_folder, tmp_path):
    _analyze(qtbot, window, [cells_folder])
    window.gallery.setCurrentIndex(window.proxy.index(0, 0))
    reviewed = window.current_cell()
    window.act_hem.trigger()
    report = tmp_path / "report.xlsx"
    with qtbot.waitSignal(window.export_finished, timeout=60_000) as blocker:
        window.export_excel(report)
    assert blocker.args[0] == report
    wb = openpyxl.load_workbook(report)
    cells = wb["Cells"]
    header = [c.value for c in next(cells.iter_rows(min_row=1, max_row=8))]
    header_row = 1
    for r in range(1, 10):
        values = [c.value for c in cells[r]]
        if "Reviewed label" in values:
            header, header_row = values, r
            break
    col = header.index("Reviewed label")
    found = [
        row
        for row in cells.iter_rows(min_row=header_row + 1, values_only=True)
        if row[col] is not None
    ]
    assert len(found) == 1 and found[0][col] == HEM
    assert any(reviewed.path.name in str(v) for v in found[0])
    audit = [r for r in wb["Audit trail"].iter_rows(values_only=True) if "Dr. Test" in r]
    assert len(audit) == 1


def test_a_failed_export_keeps_the_old_report(qtbot, window, cells_folder, tmp_path, monkeypatch):
    _analyze(qtbot, window, [cells_folder])
    report = tmp_path / "report.xlsx"
    report.write_bytes(b"the previous report")
    messages = []
    monkeypatch.setattr(window, "_show_message", lambda *a, **k: messages.append(a))
    import leukgui.core.report as report_module

    def broken(*args, **kwargs):
        raise report_module.ReportWriteError(f"{report} is open in another program")

    monkeypatch.setattr(report_module, "write_excel", broken)
    with qtbot.waitSignal(window.export_finished, timeout=60_000) as blocker:
        window.export_excel(report)
    assert blocker.args[0] is None
    assert report.read_bytes() == b"the previous report"
    assert messages and "open in another program" in messages[-1][2]


SCRIPT = textwrap.dedent(
    """
    import os, sys
    os.environ["QT_QPA_PLATFORM"] = "offscreen"
    from PySide6.QtWidgets import QApplication
    app = QApplication([])
    from leukgui.core.preferences import Preferences
    from leukgui.gui.main_window import MainWindow
    win = MainWindow(Preferences(reviewer="Night shift"), restore_check=False)
    win.select_model(sys.argv[2])
    done = []
    win.analysis_finished.connect(done.append)
    win.open_paths([sys.argv[1]])
    while not done:
        app.processEvents()
    win.gallery.setCurrentIndex(win.proxy.index(0, 0))
    for i in range(5):
        win.act_hem.trigger() if i % 2 else win.act_all.trigger()
        print("reviewed", i + 1, flush=True)
    print("waiting", flush=True)
    sys.stdin.readline()  # killed here, mid-session, without closing anything
    """
)


def test_review_survives_a_killed_process(qtbot, installed_tiny, cells_folder, tmp_path) -> None:
    from leukgui.gui.main_window import MainWindow

    script = tmp_path / "review_then_die.py"
    script.write_text(SCRIPT)
    proc = subprocess.Popen(
        [sys.executable, str(script), str(cells_folder), str(installed_tiny)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=REPO,
    )
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if line.startswith("waiting"):
            break
    # While that window is still open, a second one (a double-clicked model file, say) must
    # not offer its session for restore: it is busy, not unfinished.
    second = MainWindow(Preferences(reviewer="Second window"), restore_check=False)
    qtbot.addWidget(second)
    asked = []
    second._ask_restore = lambda text: asked.append(text) or "restore"
    second.check_unfinished_session()
    assert unfinished_sessions(sessions_root()) == [] and asked == [] and second.run is None
    second.close()

    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    assert sum(line.startswith("reviewed") for line in lines) == 5, "".join(lines[-20:])

    win = MainWindow(Preferences(reviewer="Day shift"), restore_check=False)
    qtbot.addWidget(win)
    sessions = unfinished_sessions(sessions_root())
    assert len(sessions) == 1
    answers = []
    win._ask_restore = lambda text: answers.append(text) or "restore"
    win.check_unfinished_session()
    # The offer says what comes back (folders, cells, changes, who), not a path.
    assert answers and str(sessions[0]) not in answers[0]
    assert "12 cells" in answers[0] and "5 review changes by Night shift" in answers[0]
    assert len(win.run.cells) == 12
    audit = win.review.audit
    assert [e.after for e in audit] == [ALL, HEM, ALL, HEM, ALL]
    assert {e.reviewer for e in audit} == {"Night shift"}
    assert sum(win.review.is_reviewed(c) for c in win.run.cells) == 5
    assert win.cells.rowCount() == 12
    assert win.samples.errors.count() == 1  # broken.png
    win.close()
    assert unfinished_sessions(sessions_root()) == []  # closed cleanly now
    assert (sessions[0] / CLOSED_MARKER).is_file()


def _import_through_the_menu(qtbot, window, path: Path, monkeypatch) -> None:
    """Model > Import model… with the file dialog answered; wait for the worker to end."""
    from leukgui.gui import main_window

    monkeypatch.setattr(main_window.QFileDialog, "getOpenFileName", lambda *a, **k: (str(path), ""))
    before = set(window._workers)
    window.act_import_model.trigger()
    (worker,) = set(window._workers) - before
    # Gone from the set once `finished` is delivered, which is queued after its result.
    qtbot.waitUntil(lambda: worker not in window._workers, timeout=60_000)


def _restored_zip(source: Path, target: Path) -> Path:
    """The same model re-packed without compression: valid, but other bytes."""
    import zipfile

    with zipfile.ZipFile(source) as old, zipfile.ZipFile(target, "w") as new:
        for item in old.infolist():
            new.writestr(item.filename, old.read(item.filename), zipfile.ZIP_STORED)
    return target


def test_import_model_installs_selects_and_refuses_conflicts(
    qtbot, window, tiny_bundle_path, tmp_path, monkeypatch
):
    messages = []
    monkeypatch.setattr(window, "_show_message", lambda *a, **k: messages.append(a))
    copy = tmp_path / "lab-model-v2.leukmodel"
    shutil.copy2(tiny_bundle_path, copy)
    installed = user_models_dir() / copy.name

    _import_through_the_menu(qtbot, window, copy, monkeypatch)  # COPIED
    assert installed.read_bytes() == copy.read_bytes()
    assert window.current_bundle_path() == str(installed) and messages == []
    assert "added" in window.statusBar().currentMessage()

    window.select_model(user_models_dir() / tiny_bundle_path.name)  # something else
    _import_through_the_menu(qtbot, window, copy, monkeypatch)  # IDENTICAL: select it
    assert window.current_bundle_path() == str(installed) and messages == []
    assert "already installed" in window.statusBar().currentMessage()

    (tmp_path / "other").mkdir()
    other = _restored_zip(copy, tmp_path / "other" / copy.name)
    expected = install_bundle(other, tmp_path / "dry-run-models")  # the same rule, no window
    assert expected.status == "copied"
    window.select_model(user_models_dir() / tiny_bundle_path.name)
    _import_through_the_menu(qtbot, window, other, monkeypatch)  # CONFLICT: same name
    assert installed.read_bytes() == copy.read_bytes()  # nothing overwritten
    assert messages[-1][:2] == ("warning", "Model not imported")
    assert "already exists" in messages[-1][2] and "rename the file" in messages[-1][2]
    assert window.current_bundle_path() == str(user_models_dir() / tiny_bundle_path.name)

    damaged = tmp_path / "damaged.leukmodel"  # refused, and not copied
    damaged.write_bytes(copy.read_bytes()[:-2000])
    _import_through_the_menu(qtbot, window, damaged, monkeypatch)
    qtbot.waitUntil(lambda: messages[-1][0] == "critical", timeout=5_000)
    assert not (user_models_dir() / damaged.name).exists()


def test_a_damaged_session_is_reported_once_not_at_every_start(qtbot, window, monkeypatch):
    folder = sessions_root() / "20240101-000000-000000"
    folder.mkdir(parents=True)
    (folder / "run.json").write_text("{ this is not json", encoding="utf-8")
    messages = []
    monkeypatch.setattr(window, "_show_message", lambda *a, **k: messages.append(a))
    window._ask_restore = lambda text: "restore"
    assert unfinished_sessions(sessions_root()) == [folder]
    window.check_unfinished_session()
    assert messages and messages[-1][1] == "Cannot restore the review"
    assert "cannot read" in messages[-1][2]
    assert unfinished_sessions(sessions_root()) == []  # not offered again at the next start
    assert (folder / CLOSED_MARKER).read_text(encoding="utf-8").startswith("damaged: ")


def test_a_declined_session_is_not_offered_again(qtbot, window) -> None:
    folder = sessions_root() / "20240101-000000-000000"
    folder.mkdir(parents=True)
    asked = []
    answer = ["later"]
    window._ask_restore = lambda text: asked.append(text) or answer[0]
    window.check_unfinished_session()  # Later: nothing marked, offered again
    assert asked and "could not be read" in asked[0] and window.run is None
    assert not (folder / CLOSED_MARKER).exists()
    answer[0] = "discard"
    window.check_unfinished_session()
    assert len(asked) == 2
    assert (folder / CLOSED_MARKER).read_text(encoding="utf-8") == "declined"
    window.check_unfinished_session()
    assert len(asked) == 2


def test_double_clicked_model_file_is_imported(qtbot, tiny_bundle_path, tmp_path) -> None:
    """What the installer's .leukmodel association runs: `LeukGUI.exe "<file>"`."""
    from leukgui.gui.app import open_window

    copy = tmp_path / "from-the-lab.leukmodel"
    shutil.copy2(tiny_bundle_path, copy)
    target = user_models_dir() / copy.name
    assert not target.exists()
    win = open_window([str(copy)])
    qtbot.addWidget(win)
    qtbot.waitUntil(target.is_file, timeout=60_000)
    qtbot.waitUntil(lambda: win.current_bundle_path() == str(target), timeout=10_000)


def test_about_names_versions_and_the_demo_notice(window) -> None:
    from leukgui.core.bundle import find_bundles
    from leukgui.gui.model_card import about_html, model_card_html

    demo = next(b for b in find_bundles()[0] if b.demo)
    assert DEMO_NOTICE in about_html(demo)
    assert "PySide6" in about_html(demo) and "Python" in about_html(demo)
    assert DEMO_NOTICE not in about_html(window.current_bundle())
    card = model_card_html(demo)
    assert demo.sha256 in card and "Balanced accuracy" in card
    assert "Scores on 400 held-out synthetic cells" in card  # the demo says what it was scored on


def test_window_layout_is_remembered_and_stale_layouts_dropped(qtbot, installed_tiny) -> None:
    from leukgui.gui import main_window as mw

    first = mw.MainWindow(Preferences(), restore_check=False)
    qtbot.addWidget(first)
    first.resize(1300, 800)
    first.show()
    first._show_content()  # the samples | gallery | inspector page
    first.splitter.setSizes([700, 300, 300])
    first.splitter.splitterMoved.emit(700, 1)  # what a drag of the handle sends
    wanted = first.splitter.sizes()
    first.close()
    second = mw.MainWindow(Preferences(), restore_check=False)
    qtbot.addWidget(second)
    second.resize(first.size())  # the offscreen screen may be smaller than a real one
    second.show()
    second._show_content()
    assert second.splitter.sizes() == wanted
    second.close()
    settings = second._settings()
    settings.setValue("layout_version", mw.LAYOUT_VERSION - 1)  # written by an older LeukGUI
    settings.sync()
    third = mw.MainWindow(Preferences(), restore_check=False)
    qtbot.addWidget(third)
    third.resize(first.size())
    third.show()
    third._show_content()
    assert third.splitter.sizes() != wanted


def test_self_test_exits_0(tmp_path: Path) -> None:
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", LEUKGUI_USER_DIR=str(tmp_path / "u"))
    result = subprocess.run(
        [sys.executable, "-m", "leukgui", "--self-test"],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "OK" in result.stdout and "Audit trail" in result.stdout


def test_the_window_opens_without_loading_tensorflow(tmp_path: Path) -> None:
    code = textwrap.dedent(
        """
        import sys
        from PySide6.QtWidgets import QApplication
        app = QApplication([])
        from leukgui.gui.main_window import MainWindow
        w = MainWindow(restore_check=False)
        w.show()
        app.processEvents()
        print("tensorflow loaded:", "tensorflow" in sys.modules)
        """
    )
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", LEUKGUI_USER_DIR=str(tmp_path))
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=REPO
    )
    assert "tensorflow loaded: False" in result.stdout, result.stdout + result.stderr


def test_the_model_preloads_in_the_background(qtbot, installed_tiny) -> None:
    from leukgui.gui import analysis
    from leukgui.gui.main_window import MainWindow

    analysis._loaded.clear()
    win = MainWindow(Preferences(preload_model=True), restore_check=False)
    qtbot.addWidget(win)
    win.select_model(installed_tiny)
    with qtbot.waitSignal(win.warmed_up, timeout=120_000) as blocker:
        win.show()
    assert blocker.args[0] == str(installed_tiny)
    assert analysis.is_loaded(str(installed_tiny))
    assert win.warm_up() is None  # already loaded: nothing more to do


def test_review_work_is_never_dropped_without_asking(
    qtbot, window, cells_folder, tmp_path, _answered_window_dialogs
) -> None:
    """Bug: Ctrl+Q and a new analysis discarded unexported review changes without a word."""
    answers = _answered_window_dialogs
    _analyze(qtbot, window, [cells_folder])
    assert window.unsaved_review() == ""  # nothing reviewed yet: closing would not ask
    cell = _focus_gallery(qtbot, window)
    qtbot.keyClick(window.gallery, Qt.Key.Key_H)
    answers["unsaved"] = "cancel"
    window.close()
    assert window.isVisible()  # Cancel keeps the window and the work
    kind, action, what = answers["asked"][-1]
    assert action == "quit" and "1 review change not yet exported" in what
    assert cell.sample in what  # reviewed, not signed off
    assert window.start_analysis() is None  # F5 asks too, and Cancel keeps the results
    assert answers["asked"][-1][1] == "analyze new images"
    assert window.review.final_label(cell) == HEM and window.run is not None
    # "Export report..." starts the export and stops the action.
    exported = []
    window.choose_export_excel = lambda: exported.append(True)
    answers["unsaved"] = "export"
    window.close()
    assert exported == [True] and window.isVisible()
    # Once signed off and exported (the report carries the sign-off), closing asks nothing.
    window.select_cell(cell)
    window.samples.clear_selection()
    window.sign_off_current_sample()
    assert window.unsaved_review() == "2 review changes not yet exported"  # mark + sign-off
    with qtbot.waitSignal(window.export_finished, timeout=120_000):
        window.export_excel(tmp_path / "r.xlsx")
    asked = len(answers["asked"])
    assert window.unsaved_review() == ""
    window.close()
    assert not window.isVisible() and len(answers["asked"]) == asked


def test_sign_off_names_the_sample_and_what_is_unreviewed(
    qtbot, window, cells_folder, _answered_window_dialogs
) -> None:
    answers = _answered_window_dialogs
    run = _analyze(qtbot, window, [cells_folder])
    cell = _focus_gallery(qtbot, window)
    qtbot.keyClick(window.gallery, Qt.Key.Key_A)
    sample = cell.sample
    cells = sum(1 for c in run.cells if c.sample == sample)
    window.samples.clear_selection()
    window.select_cell(cell)
    answers["sign_off"] = False
    window.act_sign_off.trigger()
    kind, asked_sample, text = answers["asked"][-1]
    assert (kind, asked_sample) == ("sign_off", sample)
    assert f"Reviewed: 1 of {cells} cells." in text
    assert f"Warning: {cells - 1} cells not reviewed" in text
    assert not window.review.is_locked(sample)  # declined: nothing locked
    answers["sign_off"] = True
    window.act_sign_off.trigger()
    assert window.review.is_locked(sample)
    assert window.statusBar().currentMessage() == f"Signed off {sample} under Dr. Test"


def test_a_new_model_never_takes_over_the_shown_results(
    qtbot, window, cells_folder, installed_tiny, monkeypatch
) -> None:
    """Bug: a model trained on the Training page became the picker's choice by itself."""
    from leukgui.core.backbones import build_classifier
    from leukgui.core.bundle import make_manifest, save_bundle

    messages, questions = [], []
    monkeypatch.setattr(window, "_show_message", lambda *a, **k: messages.append(a))
    monkeypatch.setattr(window, "_ask_yes_no", lambda *a: questions.append(a) or False)
    run = _analyze(qtbot, window, [cells_folder])
    model = build_classifier("efficientnetb0", weights=None, input_size=64, seed=11)
    manifest = make_manifest(
        name="lab-model", version="2", backbone="efficientnetb0", input_size=64
    )
    new = save_bundle(model, manifest, user_models_dir())
    window.training_page.bundle_registered.emit(str(new))  # what "Add to model list" sends
    assert window.current_bundle_path() == str(installed_tiny)  # the picker did not move
    assert "added to the model list" in window.statusBar().currentMessage()
    index = window.model_combo.findData(str(new))
    assert "weak scores" in window.model_combo.itemText(index)  # no held-out scores
    # The person chooses it: a warning, and an offer to analyze again (declined here).
    window.model_combo.setCurrentIndex(index)
    window.model_combo.activated.emit(index)
    assert messages[-1][1] == "Model with weak scores" and "no held-out scores" in messages[-1][2]
    assert questions[-1][0] == "Analyze again?" and "tiny-test" in questions[-1][1]
    assert window.run.info.model_sha256 == run.info.model_sha256  # declined: results stay
    assert window.worker is None
    # The banner describes the results on screen, not the picker: the demo model chosen
    # while the tiny model's results are shown does not make them look like a demo's.
    demo = window.model_combo.findText("DEMO", Qt.MatchFlag.MatchContains)
    window.model_combo.setCurrentIndex(demo)
    window.model_combo.activated.emit(demo)
    assert not run.info.demo and window.demo_banner.isHidden()


def test_a_past_session_reopens_from_the_file_menu(
    qtbot, window, cells_folder, _answered_window_dialogs
) -> None:
    """Bug: nothing in the window reopened a session once it was replaced or closed."""
    _analyze(qtbot, window, [cells_folder])
    cell = _focus_gallery(qtbot, window)
    qtbot.keyClick(window.gallery, Qt.Key.Key_U)
    first = window.session.folder
    _analyze(qtbot, window, [cells_folder / "hem"])  # replaces it ("discard", answered)
    assert window.session.folder != first and window.review.audit == []
    window.sessions_menu.aboutToShow.emit()
    actions = window.sessions_menu.actions()
    assert "(shown now)" in actions[0].text() and not actions[0].isEnabled()
    older = next(a for a in actions if a.toolTip() == str(first))
    assert "1 review change" in older.text() and older.isEnabled()
    older.trigger()
    assert window.session.folder == first
    restored = next(c for c in window.run.cells if c.key == cell.key)
    assert window.review.final_label(restored) == UNCLASSIFIABLE


def test_shortcut_sheet_title_and_export_folder(
    qtbot, window, cells_folder, tmp_path, monkeypatch
) -> None:
    from PySide6.QtWidgets import QFileDialog

    shown = []
    monkeypatch.setattr(window, "_show_message", lambda *a, **k: shown.append(a))
    run = _analyze(qtbot, window, [cells_folder])
    # The title names the results on screen.
    assert window.windowTitle().startswith(f"patient7 · {len(run.cells)} cells · ")
    # "?" from the gallery opens the shortcut sheet, made from the actions themselves.
    _focus_gallery(qtbot, window)
    qtbot.keyClicks(window.gallery, "?")
    kind, title, text = shown[-1][:3]
    assert title == "Keyboard shortcuts"
    assert "Ctrl+Z" in text and "Backspace" in text and "Mark ALL" in text and "F5" in text
    inspector_keys = (window.act_zoom_in, window.act_zoom_out, window.act_zoom_fit)
    for action in (*inspector_keys, window.act_overlay):
        assert action.text().replace("&", "") in text  # the inspector's keys are listed too
    # The save dialog starts in the input's folder, then where the last report went.
    starts = []

    def save_dialog(parent, caption, start, filters):
        starts.append(Path(start))
        return str(tmp_path / "out" / "mine"), filters

    (tmp_path / "out").mkdir()
    monkeypatch.setattr(QFileDialog, "getSaveFileName", save_dialog)
    assert window._ask_save_path("Export", "*.xlsx", ".xlsx") == tmp_path / "out" / "mine.xlsx"
    assert starts[0].parent == cells_folder and starts[0].name.startswith("patient7-report-")
    window._ask_save_path("Export", "*.xlsx", ".xlsx")
    assert starts[1].parent == tmp_path / "out"


def test_samples_table_key_columns_fit_a_1024_px_window(qtbot, window, cells_folder) -> None:
    """At 1024 px wide every key column is in view with no horizontal scrolling, and new
    results start at the top of the table."""
    _analyze(qtbot, window, [cells_folder])
    window.resize(1024, 700)
    window.show()
    qtbot.waitExposed(window)
    assert window.width() <= 1024  # nothing in the window forces it wider
    table = window.samples.table
    table.scrollToBottom()
    header = table.horizontalHeader()
    visible = table.viewport().width()
    right = max(header.sectionViewportPosition(c) + header.sectionSize(c) for c in range(6))
    assert right <= visible + 1, f"columns need {right}px, {visible}px shown"
    for name in COLUMNS:  # each key column is wide enough to show its heading
        c = COLUMNS.index(name)
        needed = header.fontMetrics().horizontalAdvance(name)
        assert name in ("Sample", "Signed off") or header.sectionSize(c) >= needed
    assert not table.horizontalScrollBar().isVisible()
    sample_width = header.sectionSize(COLUMNS.index("Sample"))
    assert sample_width >= header.fontMetrics().horizontalAdvance("patient7/all") // 2
    _analyze(qtbot, window, [cells_folder])
    assert table.verticalScrollBar().value() == 0


def test_open_after_export_says_when_no_program_can_open_the_report(
    qtbot, window, cells_folder, tmp_path, monkeypatch
) -> None:
    from leukgui.gui import main_window as main_window_module

    _analyze(qtbot, window, [cells_folder])
    opened: list[str] = []

    def no_program(url):  # what QDesktopServices answers on a PC without a spreadsheet program
        opened.append(url.toLocalFile())
        return False

    monkeypatch.setattr(main_window_module.QDesktopServices, "openUrl", no_program)
    messages = []
    monkeypatch.setattr(window, "_show_message", lambda *a, **k: messages.append(a))
    window.act_open_after.setChecked(False)
    window.act_open_after.trigger()  # the user turns "Open report after export" on
    assert window.prefs.open_report_after_export
    report = tmp_path / "report.xlsx"
    with qtbot.waitSignal(window.export_finished, timeout=60_000) as blocker:
        window.export_excel(report)
    assert blocker.args[0] == report and report.is_file()
    assert opened == [str(report)]
    assert len(messages) == 1
    kind, title, text = messages[0][:3]
    assert "not opened" in title and str(report) in text and "no program" in text
    assert "no program" in window.statusBar().currentMessage()


def test_reviewer_name_is_kept_at_once_not_only_at_a_clean_quit(
    qtbot, window, cells_folder, monkeypatch
) -> None:
    from leukgui.core.preferences import load_preferences
    from leukgui.gui import main_window as main_window_module

    _analyze(qtbot, window, [cells_folder])
    window.prefs.reviewer = ""
    monkeypatch.setattr(
        main_window_module.QInputDialog, "getText", lambda *a, **k: ("Dr. Night", True)
    )
    window.gallery.setFocus()
    qtbot.keyClick(window.gallery, Qt.Key.Key_H)  # the first review asks for the name
    assert {e.reviewer for e in window.review.audit} == {"Dr. Night"}
    saved, _ = load_preferences()  # as a crash would leave it: the window never closed
    assert saved.reviewer == "Dr. Night"


def test_review_keys_keep_working_after_the_reviewer_name_is_asked(
    qtbot, window, cells_folder, monkeypatch
) -> None:
    """The name dialog takes the keyboard; when it closes, focus goes back to the gallery,
    so the next review keys review cells instead of going nowhere."""
    from leukgui.gui import main_window as main_window_module

    _analyze(qtbot, window, [cells_folder])
    window.prefs.reviewer = ""

    def dialog(*args, **kwargs):
        window.model_combo.setFocus()  # as the modal dialog does: focus leaves the gallery
        return "Dr. Focus", True

    monkeypatch.setattr(main_window_module.QInputDialog, "getText", dialog)
    _focus_gallery(qtbot, window)
    if not window.gallery.hasFocus():
        pytest.skip("this Qt platform gives no keyboard focus to the window")
    qtbot.keyClick(window.gallery, Qt.Key.Key_H)
    assert window.gallery.hasFocus()
    assert {e.reviewer for e in window.review.audit} == {"Dr. Focus"}


def test_the_quit_question_counts_what_a_report_lacks_not_keystrokes(
    qtbot, window, cells_folder, tmp_path, _answered_window_dialogs
) -> None:
    """A mark undone is nothing to lose; after an export only the missing sign-off is
    asked about, without offering an export that cannot fix it."""
    answers = _answered_window_dialogs
    _analyze(qtbot, window, [cells_folder])
    cell = _focus_gallery(qtbot, window)
    qtbot.keyClick(window.gallery, Qt.Key.Key_A)
    qtbot.keyClick(window.gallery, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    assert window.review.audit and not window.review.is_reviewed(cell)
    assert window.unsaved_review() == ""  # marked and undone: the results are as analyzed
    window.select_cell(cell)
    qtbot.keyClick(window.gallery, Qt.Key.Key_H)
    assert window.unsaved_review().startswith("1 review change not yet exported")
    with qtbot.waitSignal(window.export_finished, timeout=120_000):
        window.export_excel(tmp_path / "r.xlsx")
    assert window.unsaved_review() == f"reviewed samples not signed off: {cell.sample}"
    answers["unsaved"] = "cancel"
    window.close()
    assert window.isVisible() and answers["asked"][-1][1] == "quit"
    assert answers["can_export"] is False  # an export would not sign anything off
    window.select_cell(cell)
    qtbot.keyClick(window.gallery, Qt.Key.Key_U)  # a change after the export counts again
    assert window.unsaved_review().startswith("1 review change not yet exported")
    window.close()
    assert answers["can_export"] is True


def test_unsaved_dialog_texts(qapp) -> None:
    from PySide6.QtCore import QTimer
    from PySide6.QtWidgets import QApplication, QMessageBox

    from leukgui.gui import review_dialogs

    seen = []

    def read_and_cancel() -> None:
        box = QApplication.activeModalWidget()
        if box is None:
            QTimer.singleShot(20, read_and_cancel)
            return
        seen.append((box.windowTitle(), box.text(), [b.text() for b in box.buttons()]))
        box.button(QMessageBox.StandardButton.Cancel).click()

    QTimer.singleShot(20, read_and_cancel)
    assert review_dialogs.ask_unsaved(None, "quit", "1 review change not yet exported") == "cancel"
    QTimer.singleShot(20, read_and_cancel)
    answer = review_dialogs.ask_unsaved(
        None, "quit", "reviewed samples not signed off: S1", can_export=False
    )
    assert answer == "cancel"
    (title1, text1, buttons1), (title2, text2, buttons2) = seen
    assert "Export report…" in buttons1 and "Discard" in buttons1
    assert "no report holds these changes" in text1
    assert "Export report…" not in buttons2 and "Quit anyway" in buttons2
    assert title2 == "Samples not signed off" and "Recent sessions" in text2
    assert "report you sign has not been written" not in text2


def test_panes_not_dragged_fit_each_new_window(qtbot, installed_tiny) -> None:
    """Sizes the user never chose are not carried from a wide window to a narrow one: the
    samples table keeps its room at 1024 px after a session at 1600 px."""
    from leukgui.gui import main_window as mw

    first = mw.MainWindow(Preferences(), restore_check=False)
    first._settings().remove("splitter")  # no sizes dragged by an earlier test's user
    first._pending_splitter = None
    qtbot.addWidget(first)
    first.resize(1600, 1000)
    first.show()
    first._show_content()
    first.close()
    second = mw.MainWindow(Preferences(), restore_check=False)
    qtbot.addWidget(second)
    second.show()
    second.resize(1024, 700)
    second._show_content()
    qtbot.wait(20)
    assert second.splitter.sizes()[0] >= 360
    handles = second.splitter.handleWidth() * 2
    assert second.splitter.sizes() == mw.default_split(second.splitter.width() - handles)


def test_an_unusable_model_file_is_listed_with_its_reason_and_hides_nothing(
    qtbot, installed_tiny
) -> None:
    import json
    import zipfile

    from leukgui.gui.main_window import MainWindow

    bad = user_models_dir() / "typo.leukmodel"
    with zipfile.ZipFile(installed_tiny) as src, zipfile.ZipFile(bad, "w") as dst:
        for item in src.infolist():
            data = src.read(item)
            if item.filename == "manifest.json":
                manifest = json.loads(data)
                manifest["decision_threshold"] = "0.5"  # a typo a lab could make by hand
                data = json.dumps(manifest).encode()
            dst.writestr(item, data)
    try:
        win = MainWindow(Preferences(preload_model=False), restore_check=False)
        qtbot.addWidget(win)
        win.show()
        combo = win.model_combo
        texts = [combo.itemText(i) for i in range(combo.count())]
        assert any("typo.leukmodel" in t and "unusable" in t for t in texts)
        row = next(i for i, t in enumerate(texts) if "typo.leukmodel" in t)
        assert not combo.model().item(row).isEnabled()
        assert "decision_threshold" in combo.itemData(row, Qt.ItemDataRole.ToolTipRole)
        assert win.current_bundle_path() is not None  # the good model is still chosen
        assert combo.currentIndex() != row
    finally:
        bad.unlink()


def test_test_time_augmentation_is_a_kept_choice_the_run_records(qtbot, window, tmp_path) -> None:
    from leukgui.core.engine import TTA_ROW
    from leukgui.core.preferences import load_preferences

    folder = tmp_path / "p"
    write_dataset(folder, 2, 3, fmt="png", size=96)
    plain = _analyze(qtbot, window, [folder])
    assert plain.info.extra[TTA_ROW] == "off"
    window.act_tta.trigger()  # Analysis ▸ Test-time augmentation
    assert window.prefs.tta is True
    assert load_preferences()[0].tta is True  # kept for the next start at once
    augmented = _analyze(qtbot, window, [folder])
    assert augmented.info.extra[TTA_ROW].startswith("8 views")
    assert [c.path for c in augmented.cells] == [c.path for c in plain.cells]
