"""Smear fields through the whole tool: engine, review keys, sessions, reports and the window."""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import shutil  # noqa: E402
from pathlib import Path  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import openpyxl  # noqa: E402
import pytest  # noqa: E402

from leukgui.core.fields import (  # noqa: E402
    box_iou,
    crop_cell,
    detect_cells,
    make_synthetic_field,
)
from leukgui.core.results import NO_WHITE_CELL, CellResult, FileError  # noqa: E402
from leukgui.core.synthetic import write_dataset  # noqa: E402


def _iou(a, b) -> float:
    return box_iou(a, b)


@pytest.fixture(scope="module")
def mixed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, list]]:
    """Two smear fields, a blank field and two single-cell crops in one folder tree."""
    root = tmp_path_factory.mktemp("mixed")
    truth = {}
    (root / "fields").mkdir()
    for seed in (3, 8):
        rgb, boxes = make_synthetic_field(seed)
        path = root / "fields" / f"field_{seed}.png"
        cv2.imwrite(str(path), rgb[..., ::-1])
        truth[path.name] = boxes
    blank = np.full((480, 640, 3), (236, 228, 230), np.uint8)
    cv2.imwrite(str(root / "fields" / "blank.png"), blank)
    write_dataset(root / "crops", 1, 4, fmt="png", size=128)
    return root, truth


@pytest.fixture(scope="module")
def run(mixed, tiny_bundle):
    from leukgui.core.engine import AnalysisOptions, analyze_paths

    root, _ = mixed
    progress = []
    result = analyze_paths(
        [root], tiny_bundle, AnalysisOptions(batch_size=4), progress=progress.append
    )
    return result, progress


def test_fields_give_one_result_per_white_cell_and_crops_stay_single(run, mixed) -> None:
    result, progress = run
    _, truth = mixed
    field_cells = [c for c in result.cells if c.in_field]
    crops = [c for c in result.cells if not c.in_field]
    assert len(crops) == 2 and all(c.cell_index is None for c in crops)
    for name, boxes in truth.items():
        found = [c for c in field_cells if c.path.name == name]
        assert [c.cell_index for c in found] == list(range(1, len(found) + 1))
        for box in boxes:
            assert max(_iou(box, c.box) for c in found) >= 0.5
        assert len({c.key for c in found}) == len(found)  # one name per cell
    # Progress counts files, not cells: 5 files in all.
    assert progress[-1].done == progress[-1].total == 5


def test_a_field_without_white_cells_is_one_clear_row(run) -> None:
    result, _ = run
    blank = [o for o in result.outcomes if o.path.name == "blank.png"]
    assert len(blank) == 1 and isinstance(blank[0], FileError)
    assert blank[0].reason.startswith("no white cell found")
    assert blank[0].kind == NO_WHITE_CELL


def test_the_crop_is_what_the_model_saw_and_comes_back_from_the_stored_mask(run) -> None:
    from leukgui.core.cells import cell_image, cell_mask
    from leukgui.core.imaging import decode_image

    result, _ = run
    cell = next(c for c in result.cells if c.in_field)
    rgb = decode_image(cell.path)
    detected = next(d for d in detect_cells(rgb).cells if tuple(d.box) == cell.box)
    np.testing.assert_array_equal(cell_mask(cell), detected.mask)
    np.testing.assert_array_equal(cell_image(cell), crop_cell(rgb, detected))


def test_provenance_records_the_detector_settings(run) -> None:
    result, _ = run
    assert "decided per image" in result.info.extra["Image kind"]
    assert "max_candidates" in result.info.extra["White-cell detector settings"]


def test_forcing_single_cells_analyses_every_file_whole(mixed, tiny_bundle) -> None:
    from leukgui.core.engine import AnalysisOptions, analyze_paths

    root, _ = mixed
    result = analyze_paths([root], tiny_bundle, AnalysisOptions(image_kind="cells"))
    assert len(result.cells) == 5 and not any(c.in_field for c in result.cells)


def test_reviews_sessions_and_reports_keep_field_cells_apart(run, tmp_path) -> None:
    from leukgui.core.report import write_excel
    from leukgui.core.review import ReviewState
    from leukgui.core.sessions import SessionStore

    result, _ = run
    a, b = [c for c in result.cells if c.in_field][:2]
    store = SessionStore.create(tmp_path / "session", result)
    review = ReviewState.for_run(result, on_change=store.append)
    review.set_label(a, "ALL", "Dr. F")
    review.set_label(b, "HEM", "Dr. F")
    store.close()
    restored, state = SessionStore.open(tmp_path / "session")
    again = {c.key: c for c in restored.cells}
    assert again[a.key].box == a.box and again[a.key].mask_bits == a.mask_bits
    assert state.final_label(again[a.key]) == "ALL"
    assert state.final_label(again[b.key]) == "HEM"

    report = tmp_path / "fields.xlsx"
    write_excel(result, report, review=state)
    wb = openpyxl.load_workbook(report)
    rows = list(wb["Fields"].iter_rows(min_row=3, values_only=True))  # after title, header
    by_field = {r[0]: r for r in rows}
    assert any("blank.png" in k and r[2] == 0 for k, r in by_field.items())
    n_field_cells = sum(1 for c in result.cells if c.in_field)
    assert sum(r[2] for r in rows) == n_field_cells
    names = [r[1] for r in wb["Cells"].iter_rows(min_row=3, values_only=True)]
    assert sum(" #1 at (" in str(n) for n in names) == 2  # one first cell per field
    assert len(wb["Cells"]._images) == 2 * len(result.cells)  # a picture per cell, crops too


def test_the_window_shows_the_field_with_its_boxes(qtbot, mixed, tiny_bundle_path) -> None:
    from leukgui.core.paths import user_models_dir
    from leukgui.core.preferences import Preferences
    from leukgui.gui.main_window import MainWindow

    target = user_models_dir() / tiny_bundle_path.name
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(tiny_bundle_path, target)
    root, _ = mixed
    win = MainWindow(Preferences(reviewer="Dr. F", preload_model=False), restore_check=False)
    qtbot.addWidget(win)
    win.show()
    win.select_model(target)
    with qtbot.waitSignal(win.analysis_finished, timeout=180_000) as blocker:
        win.open_paths([str(root / "fields")])
    result = blocker.args[0]
    first = result.cells[0]
    win.select_cell(first)
    assert win.field_view.isVisible()
    siblings = [c for c in result.cells if c.path == first.path]
    assert len(win.field_view.boxes) == len(siblings)
    other = (
        next(b for b in win.field_view.boxes if b.cell.key != first.key)
        if len(siblings) > 1
        else None
    )
    if other is not None:
        win.field_view.cell_clicked.emit(other.cell)
        assert win.current_cell().key == other.cell.key
    assert isinstance(win.current_cell(), CellResult)
    # The Analysis > Images are menu overrides the per-image decision.
    win.image_kind_actions["cells"].trigger()
    assert win.prefs.image_kind == "cells"
    with qtbot.waitSignal(win.analysis_finished, timeout=180_000) as blocker:
        win.start_analysis()
    whole = blocker.args[0]
    assert len(whole.cells) == 3 and not any(c.in_field for c in whole.cells)
