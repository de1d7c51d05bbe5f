"""Review ▸ Add reviewed cells to the lab data set (issue 18, item 1), driven as a user would:
analyse a folder, review with the keys, open the dialog from the menu, say which samples are
one patient, add, add again; a missing drive, a read-only or busy folder and a lost image."""

from __future__ import annotations

import csv
import errno
import os
from pathlib import Path

import numpy as np
import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QApplication, QLineEdit

from leukgui.core.atomic import try_lock, unlock
from leukgui.core.lab_dataset import (
    DATASET_CSV,
    HISTORY_CSV,
    AddSummary,
    LabDataset,
    ReviewedCell,
    Skipped,
    candidates_by_sample,
    summary_lines,
)
from leukgui.core.preferences import Preferences
from leukgui.core.results import ALL, HEM, CellResult
from leukgui.core.review import UNCLASSIFIABLE
from leukgui.core.synthetic import write_dataset
from leukgui.gui.lab_dataset_dialog import SUBJECT_COLUMN, LabDatasetDialog

SAMPLES = ("patient7/all", "patient7/hem")


@pytest.fixture
def window(qtbot):
    """The window with the bundled demo model (loading it is quicker than building one)."""
    from leukgui.gui.main_window import MainWindow

    prefs = Preferences(reviewer="Dr. Test", open_report_after_export=False, preload_model=False)
    win = MainWindow(prefs, restore_check=False)
    qtbot.addWidget(win)
    win.show()
    assert win.current_bundle_path() is not None
    return win


def _analyze(qtbot, win, folder: Path):
    write_dataset(folder, 3, 3, fmt="png", size=64)
    with qtbot.waitSignal(win.analysis_finished, timeout=180_000) as blocker:
        win.open_paths([str(folder)])
    return blocker.args[0]


def _press(qtbot, window, key: Qt.Key) -> None:
    window.activateWindow()
    window.gallery.setFocus()
    qtbot.waitUntil(window.gallery.hasFocus, timeout=5000)
    qtbot.keyClick(window.gallery, key)


def _review(qtbot, window) -> dict:
    """Confirm the first cell, correct the second, judge the third UNCLASSIFIABLE (one per
    sample at least); the rest stay unreviewed. Returns {cell key: reviewed label}."""
    window.tabs.setCurrentIndex(0)
    window.gallery.setCurrentIndex(window.proxy.index(0, 0))
    first = window.current_cell()
    _press(qtbot, window, Qt.Key.Key_Return)
    second = window.current_cell()
    corrected = HEM if window.review.suggestion(second) == ALL else ALL
    _press(qtbot, window, Qt.Key.Key_A if corrected == ALL else Qt.Key.Key_H)
    third = window.current_cell()
    _press(qtbot, window, Qt.Key.Key_U)
    assert window.review.final_label(third) == UNCLASSIFIABLE
    assert window.review.review_of(second).label == corrected
    return {
        first.key: window.review.review_of(first).label,
        second.key: corrected,
    }


def _review_record(window) -> tuple:
    return (window.review.reviews, window.review.signoffs, window.review.audit)


def _open_dialog(qtbot, window) -> LabDatasetDialog:
    qtbot.waitUntil(window.act_lab_dataset.isEnabled, timeout=5000)
    window.act_lab_dataset.trigger()
    dialog = window.lab_dataset_dialog
    assert dialog is not None and dialog.isVisible()
    dialog.activateWindow()  # as on screen: keys typed now go to the dialog, not the cells
    qtbot.waitUntil(lambda: QApplication.activeWindow() is dialog, timeout=5000)
    return dialog


def _add(qtbot, dialog: LabDatasetDialog, *, ok: bool = True):
    signal = dialog.added if ok else dialog.add_failed
    with qtbot.waitSignal(signal, timeout=60_000) as blocker:
        qtbot.mouseClick(dialog.add_button, Qt.MouseButton.LeftButton)
    return blocker.args


def _rows(folder: Path) -> list[dict[str, str]]:
    with open(folder / DATASET_CSV, newline="", encoding="utf-8-sig") as fh:
        return list(csv.DictReader(fh))


def _type_subject(qtbot, dialog: LabDatasetDialog, row: int, text: str) -> None:
    """Double-click-and-type in the Patient / subject column, as a person does."""
    table = dialog.table
    item = table.item(row, SUBJECT_COLUMN)
    table.setCurrentItem(item)
    table.editItem(item)
    editor = table.viewport().findChild(QLineEdit)
    assert editor is not None and editor.isVisible()
    editor.setFocus()
    editor.selectAll()
    qtbot.keyClicks(editor, text)
    qtbot.keyClick(editor, Qt.Key.Key_Return)  # commits (queued), as Enter does
    qtbot.waitUntil(lambda: item.text() == text, timeout=5000)


def test_reviewed_cells_go_in_once_with_their_labels_and_patient(qtbot, window, tmp_path) -> None:
    assert not window.act_lab_dataset.isEnabled()  # no analysis
    assert "Analyze" in window.act_lab_dataset.toolTip()
    run = _analyze(qtbot, window, tmp_path / "patient7")
    window.refresh_summary()
    assert not window.act_lab_dataset.isEnabled()  # nothing reviewed yet
    assert "No cell is reviewed" in window.act_lab_dataset.toolTip()
    review_menu = next(a.menu() for a in window.menuBar().actions() if a.text() == "&Review")
    assert window.act_lab_dataset in review_menu.actions()

    reviewed = _review(qtbot, window)
    before = _review_record(window)
    dialog = _open_dialog(qtbot, window)
    assert dialog.windowTitle() == "Add reviewed cells to the lab data set"
    assert dialog.folder_edit.text() == str(Path(os.environ["LEUKGUI_USER_DIR"]) / "lab-dataset")
    n = len(run.cells)
    assert dialog.count_label.text() == (
        f"2 reviewed cells will be added; {n - 3} not reviewed and 1 UNCLASSIFIABLE are left out."
    )
    shown = [dialog.table.item(r, 0).text() for r in range(dialog.table.rowCount())]
    assert sorted(shown) == list(SAMPLES)
    assert [dialog.table.item(r, SUBJECT_COLUMN).text() for r in range(2)] == shown  # default
    lab = tmp_path / "shared-drive" / "lab"
    lab.parent.mkdir()
    dialog.folder_edit.setText(str(lab))
    _type_subject(qtbot, dialog, 0, "P7")
    _type_subject(qtbot, dialog, 1, "P7")  # both samples are one patient
    folder, summary = _add(qtbot, dialog)

    assert folder == lab and len(summary.added) == 2 and not summary.relabelled
    rows = _rows(lab)
    assert {r["image"]: r["label"] for r in rows} == reviewed
    assert {r["subject"] for r in rows} == {"P7"}
    assert {r["reviewer"] for r in rows} == {"Dr. Test"}
    assert all(r["model_name"] == run.info.model_name and r["model_p_all"] for r in rows)
    assert all(r["model_sha256"] == run.info.model_sha256 for r in rows)
    assert all((lab / r["path"]).is_file() for r in rows)
    assert "2 added, 0 already present, 0 relabelled" in dialog.message.text()
    assert dialog.details.isVisible() and "left out   1 cell: reviewed as UNCLASSIFIABLE" in (
        dialog.details.toPlainText()
    )
    assert not dialog.add_button.isEnabled() and dialog.close_button.text() == "Close"
    assert _review_record(window) == before  # the add only read the review
    assert window.prefs.lab_dataset_folder == str(lab)  # remembered

    # Again, from the menu: the folder is remembered and nothing is added twice.
    dialog.reject()
    csv_bytes = (lab / DATASET_CSV).read_bytes()
    again = _open_dialog(qtbot, window)
    assert again is not dialog and again.folder_edit.text() == str(lab)
    _, summary = _add(qtbot, again)
    assert not summary.added and len(summary.already_present) == 2
    assert "0 added, 2 already present" in again.message.text()
    assert (lab / DATASET_CSV).read_bytes() == csv_bytes
    assert _review_record(window) == before
    again.reject()


def test_unusable_folders_say_why_and_change_nothing(qtbot, window, tmp_path, monkeypatch) -> None:
    _analyze(qtbot, window, tmp_path / "patient7")
    _review(qtbot, window)
    before = _review_record(window)
    dialog = _open_dialog(qtbot, window)

    # A named folder on a drive that is not connected: an error, no new folder anywhere.
    gone = tmp_path / "unplugged-drive" / "lab"
    dialog.folder_edit.setText(str(gone))
    (message,) = _add(qtbot, dialog, ok=False)
    assert "does not exist" in message and "connected" in message
    assert dialog.message.text().startswith("Nothing was added.")
    assert not gone.parent.exists()
    assert dialog.add_button.isEnabled() and dialog.close_button.isEnabled()  # try again

    # A read-only folder (injected: root ignores permissions).
    lab = LabDataset.create(tmp_path / "lab").folder
    real_open = os.open

    def read_only_fs(path, flags, *args, **kw):
        writes = flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT)
        if writes and os.fspath(path).startswith(str(lab)):
            raise OSError(errno.EROFS, "Read-only file system", os.fspath(path))
        return real_open(path, flags, *args, **kw)

    dialog.folder_edit.setText(str(lab))
    with monkeypatch.context() as patch:  # not .undo(): that drops conftest's answers too
        patch.setattr(os, "open", read_only_fs)
        (message,) = _add(qtbot, dialog, ok=False)
    assert "read-only" in message and "nothing was changed" in message
    assert "read-only" in dialog.message.text()
    assert list(lab.iterdir()) == []

    # An image deleted since the analysis: the other reviewed cell goes in, the lost one is
    # listed with its reason.
    lost = next(
        c
        for c in window.run.cells
        if (done := window.review.review_of(c)) is not None and done.label in (ALL, HEM)
    )
    lost.path.unlink()
    _, summary = _add(qtbot, dialog)
    assert len(summary.added) == 1 and [s.image for s in summary.skipped if s.problem] == [lost.key]
    assert "1 skipped (reviewed, but not added: see below)" in dialog.message.text()
    assert f"skipped    {lost.key}:" in dialog.details.toPlainText()
    assert (lab / HISTORY_CSV).is_file()

    # Busy: another LeukGUI holds the lock for longer than the wait.
    csv_bytes = (lab / DATASET_CSV).read_bytes()
    busy = LabDatasetDialog(window.lab_dataset_cells(), lab, lab, window, timeout_s=0.3)
    qtbot.addWidget(busy)
    fd = try_lock(lab / "dataset.lock")
    try:
        (message,) = _add(qtbot, busy, ok=False)
    finally:
        unlock(fd)
    assert "busy" in message and "nothing was changed" in message
    assert "busy" in busy.message.text()
    assert (lab / DATASET_CSV).read_bytes() == csv_bytes
    assert _review_record(window) == before
    dialog.reject()


@pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() == 0,
    reason="root ignores folder permissions (the injected case above covers it)",
)
def test_a_folder_without_write_permission(qtbot, window, tmp_path) -> None:
    _analyze(qtbot, window, tmp_path / "patient7")
    _review(qtbot, window)
    lab = LabDataset.create(tmp_path / "lab").folder
    lab.chmod(0o555)
    try:
        dialog = _open_dialog(qtbot, window)
        dialog.folder_edit.setText(str(lab))
        (message,) = _add(qtbot, dialog, ok=False)
    finally:
        lab.chmod(0o755)
    assert "read-only" in message and list(lab.iterdir()) == []
    dialog.reject()


def _candidate(sample: str, label: str | None, subject: str | None = None) -> ReviewedCell:
    cell = CellResult(
        Path(f"/x/{sample}/{label}-{subject}.png"),
        sample,
        0.5,
        ALL,
        np.zeros((1, 1), np.float32),
        1,
        1,
        subject=subject,
    )
    return ReviewedCell(cell, label, "Ada", "2026-11-30T10:00:00+00:00", "m", "1", "ab", "s")


def test_counts_per_sample_and_a_sample_of_several_patients(qtbot, tmp_path) -> None:
    """The core helpers behind the dialog's table and count line; a sample whose file names
    name several patients keeps each cell's own subject unless the user types one."""
    cells = [
        _candidate("S1", ALL),
        _candidate("S1", None),
        _candidate("S2", HEM, "H1"),
        _candidate("S2", HEM, "H2"),
        _candidate("S2", UNCLASSIFIABLE, "H1"),
    ]
    s1, s2 = candidates_by_sample(cells)
    assert (s1.sample, s1.addable, s1.not_reviewed, s1.unclassifiable, s1.subjects) == (
        "S1",
        1,
        1,
        0,
        (),
    )
    assert (s2.addable, s2.unclassifiable, s2.subjects) == (2, 1, ("H1", "H2"))
    dialog = LabDatasetDialog(cells, tmp_path / "lab", tmp_path / "lab")
    qtbot.addWidget(dialog)
    assert dialog.count_label.text() == (
        "3 reviewed cells will be added; 1 not reviewed and 1 UNCLASSIFIABLE are left out."
    )
    assert dialog.subjects() == {"S1": "S1"}  # S2's cells keep H1 and H2
    assert "2 subjects" in dialog.table.item(1, SUBJECT_COLUMN).toolTip()
    # shown, not blank: the user sees which patients the file names carry
    assert dialog.table.item(1, SUBJECT_COLUMN).text() == "(from file names: H1, H2)"
    dialog.set_subject("S2", "donor pool")
    assert dialog.subjects() == {"S1": "S1", "S2": "donor pool"}
    lines = summary_lines(AddSummary(skipped=[Skipped("a.png", "S1", "gone", True)]))
    assert lines == ["skipped    a.png: gone"]
