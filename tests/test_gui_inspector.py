"""The cell inspector and the smear-field view as a reviewer uses them: one large view with a
heatmap toggle (or side by side, kept as a preference), a colour scale and the class the
heatmap explains, zoom keys from wherever the review focus is, the sign-off lock, and a
field's size, numbered boxes and enlarged view. No model runs: the window is fed results."""

from __future__ import annotations

import os
import shutil

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from pathlib import Path  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PySide6.QtCore import QPoint, QPointF, Qt  # noqa: E402
from PySide6.QtGui import QImage  # noqa: E402
from review_samples import info  # noqa: E402

from leukgui.core.cells import cell_image  # noqa: E402
from leukgui.core.engine import Outcomes, RunStarted  # noqa: E402
from leukgui.core.fields import make_synthetic_field  # noqa: E402
from leukgui.core.formatting import local_minute  # noqa: E402
from leukgui.core.preferences import Preferences, load_preferences  # noqa: E402
from leukgui.core.results import ALL, HEM, UNCERTAIN, CellResult, RunResult  # noqa: E402
from leukgui.gui.cell_view import OVERLAY, SIDE_BY_SIDE, CellInspector  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "resources" / "samples"


def _blob(cx: float = 14, cy: float = 14, size: int = 28) -> np.ndarray:
    """A heatmap grid with one hot spot (a visible overlay, unlike an all-zero map)."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    return np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / 40.0).astype(np.float32)


def _single(path: Path, sample: str, p: float, label: str) -> CellResult:
    image = cv2.imread(str(path))
    h, w = image.shape[:2]
    return CellResult(path, sample, p, label, _blob(), w, h, subject="P1")


def _single_cells() -> list[CellResult]:
    all_files = sorted((SAMPLES / "all").glob("*.png"))[:2]
    hem_files = sorted((SAMPLES / "hem").glob("*.png"))[:2]
    return [_single(f, "S1", 0.91, ALL) for f in all_files] + [
        _single(f, "S2", 0.12, HEM) for f in hem_files
    ]


def _field_cells(tmp_path: Path) -> tuple[list[CellResult], tuple[int, int]]:
    """Cells found in one synthetic smear field, numbered as the engine numbers them."""
    rgb, boxes = make_synthetic_field(5, n_wbc=3)
    path = tmp_path / "field.png"
    cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    height, width = rgb.shape[:2]
    ordered = sorted(boxes, key=lambda b: (b[1] + b[3], b[0] + b[2]))
    cells = []
    for n, box in enumerate(ordered, 1):
        x0, y0, x1, y1 = box
        mask = np.ones((y1 - y0, x1 - x0), bool)
        p, label = ((0.85, ALL), (0.2, HEM), (0.5, UNCERTAIN))[(n - 1) % 3]
        cells.append(
            CellResult(
                path,
                "F1",
                p,
                label,
                _blob(),
                width,
                height,
                box=box,
                cell_index=n,
                mask_bits=np.packbits(mask).tobytes(),
            )
        )
    return cells, (width, height)


def _window(qtbot, cells: list[CellResult], prefs: Preferences | None = None, size=(1400, 860)):
    """A main window showing `cells` as a finished run (the analysis events, no model)."""
    from leukgui.gui.main_window import MainWindow

    prefs = prefs or Preferences(
        reviewer="Dr. Test", open_report_after_export=False, preload_model=False
    )
    win = MainWindow(prefs, restore_check=False)
    qtbot.addWidget(win)
    win.resize(*size)
    win.show()
    win.ensure_content()
    win._show_content()
    run = RunResult(info(inputs=[str(cells[0].path.parent)], total_inputs=len(cells)), [])
    win._analysis_event(RunStarted(run, len(cells)))
    win._analysis_event(Outcomes(list(cells)))
    win._analysis_done(RunResult(run.info, list(cells)))
    qtbot.waitExposed(win)
    return win


def _shown(view) -> QImage:
    return view.grab().toImage().convertToFormat(QImage.Format.Format_RGB888)


def _inspector(qtbot, **kw) -> CellInspector:
    inspector = CellInspector(**kw)
    qtbot.addWidget(inspector)
    inspector.resize(700, 700)
    inspector.show()
    qtbot.waitExposed(inspector)
    return inspector


# ----------------------------------------------------------------------------- inspector


def test_one_large_view_with_a_heatmap_toggle(qtbot) -> None:
    inspector = _inspector(qtbot)
    cell = _single_cells()[0]
    inspector.show_cell(cell, final_label=ALL, reviewed=False, model_text="m")
    assert inspector.view_layout() == OVERLAY
    assert not inspector.original_view.isVisible() and inspector.overlay_view.isVisible()
    # The one view gets (nearly) the whole width of the panel.
    assert inspector.overlay_view.width() > 0.9 * (inspector.width() - 16)
    with_heat = _shown(inspector.overlay_view)
    assert inspector.overlay_shown() and inspector.overlay_item.isVisible()

    inspector.toggle_overlay()  # what O does
    assert not inspector.overlay_shown() and not inspector.overlay_item.isVisible()
    assert not inspector.heatmap_button.isChecked()
    original = _shown(inspector.overlay_view)
    assert original != with_heat
    # Without the heatmap the view shows the cell's own pixels (centre pixel, fitted view).
    rgb = cv2.cvtColor(cv2.imread(str(cell.path)), cv2.COLOR_BGR2RGB)
    centre = original.pixelColor(original.width() // 2, original.height() // 2)
    expected = rgb[rgb.shape[0] // 2, rgb.shape[1] // 2]
    assert abs(centre.red() - int(expected[0])) < 25 and abs(centre.blue() - int(expected[2])) < 25

    inspector.heatmap_button.click()  # the button does the same
    assert inspector.overlay_shown() and _shown(inspector.overlay_view) == with_heat
    inspector.opacity_slider.setValue(30)
    assert inspector.overlay_item.opacity() == pytest.approx(0.3)


def test_side_by_side_layout_shows_both_views(qtbot) -> None:
    inspector = _inspector(qtbot, layout=SIDE_BY_SIDE)
    inspector.show_cell(_single_cells()[0], final_label=ALL, reviewed=False, model_text="m")
    assert inspector.original_view.isVisible() and inspector.overlay_view.isVisible()
    assert inspector.layout_button.isChecked()
    seen: list[str] = []
    inspector.layout_changed.connect(seen.append)
    inspector.layout_button.click()
    assert seen == [OVERLAY] and not inspector.original_view.isVisible()
    with pytest.raises(ValueError):
        inspector.set_view_layout("mosaic")


def test_the_heatmap_says_which_class_it_explains_with_a_colour_scale(qtbot) -> None:
    inspector = _inspector(qtbot)
    cells = _single_cells()
    inspector.show_cell(cells[0], final_label=ALL, reviewed=False, model_text="m")
    assert inspector.explanation().startswith("Heatmap: where the model saw evidence for ALL")
    scale = inspector.colour_scale
    assert scale.isVisible() and scale.height() > 0
    low, high = scale.colour_at(0.0), scale.colour_at(1.0)
    assert low.blue() > low.red() and high.red() > high.blue()  # blue = less, red = more
    assert (scale.LOW, scale.HIGH) == ("less", "more evidence")
    inspector.toggle_overlay()  # O: the original alone; no scale for a heatmap not shown
    assert not scale.isVisible() and not inspector.class_label.isVisible()
    inspector.set_view_layout(SIDE_BY_SIDE)  # the overlay is on screen beside it again
    assert scale.isVisible() and inspector.class_label.isVisible()
    inspector.set_view_layout(OVERLAY)
    inspector.toggle_overlay()
    assert scale.isVisible()

    inspector.show_cell(cells[-1], final_label=HEM, reviewed=False, model_text="m")
    assert "evidence for HEM" in inspector.explanation()
    # Grad-CAM explains the arg-max class, not the thresholded call: P(ALL) 0.45 called ALL
    # (threshold 0.4) has a heatmap for HEM, and the line says so.
    odd = CellResult(**{**cells[0].__dict__, "p_all": 0.45, "label": ALL})
    inspector.show_cell(odd, final_label=ALL, reviewed=False, model_text="m")
    assert "evidence for HEM, its more likely class" in inspector.explanation()
    assert "called ALL" in inspector.explanation()

    broken = CellResult(**{**cells[0].__dict__, "heatmap": np.zeros((0,), np.float32)})
    inspector.show_cell(broken, final_label=ALL, reviewed=False, model_text="m")
    assert inspector.explanation() == "" and not inspector.colour_scale.isVisible()


def test_zoom_buttons_keep_the_cell_centred(qtbot) -> None:
    inspector = _inspector(qtbot)
    cell = _single_cells()[0]
    inspector.show_cell(cell, final_label=ALL, reviewed=False, model_text="m")
    centre = QPointF(cell.width / 2, cell.height / 2)
    fitted = inspector.zoom()
    view = inspector.overlay_view
    # The mouse sits in a corner of the view: keys and buttons still zoom about the centre.
    qtbot.mouseMove(view.viewport(), QPoint(5, 5))
    for _ in range(4):
        inspector.zoom_in_button.click()
    assert inspector.zoom() == pytest.approx(fitted * 1.25**4)
    got = inspector.view_centre()
    assert abs(got.x() - centre.x()) < 2 and abs(got.y() - centre.y()) < 2
    # Panned to another point, zooming keeps that point in the middle.
    view.centerOn(QPointF(150, 160))
    before = inspector.view_centre()
    inspector.zoom_in()
    inspector.zoom_out()
    inspector.zoom_in()
    after = inspector.view_centre()
    assert abs(after.x() - before.x()) < 2 and abs(after.y() - before.y()) < 2
    inspector.zoom_fit()
    assert inspector.zoom() == pytest.approx(fitted)


# ----------------------------------------------------------------------------- window


def test_plus_minus_zero_and_o_work_from_the_gallery(qtbot) -> None:
    win = _window(qtbot, _single_cells())
    win.activateWindow()
    win.gallery.setFocus()
    win.gallery.setCurrentIndex(win.proxy.index(0, 0))
    qtbot.waitUntil(win.gallery.hasFocus, timeout=5000)
    inspector = win.inspector
    cell = win.current_cell()
    assert inspector.cell() is cell
    fitted = inspector.zoom()

    qtbot.keyClick(win.gallery, Qt.Key.Key_Plus)
    assert inspector.zoom() == pytest.approx(fitted * 1.25)
    qtbot.keyClick(win.gallery, Qt.Key.Key_Plus)
    got = inspector.view_centre()
    assert abs(got.x() - cell.width / 2) < 2 and abs(got.y() - cell.height / 2) < 2
    qtbot.keyClick(win.gallery, Qt.Key.Key_Minus)
    assert inspector.zoom() == pytest.approx(fitted * 1.25)
    qtbot.keyClick(win.gallery, Qt.Key.Key_0)
    assert inspector.zoom() == pytest.approx(fitted)
    assert win.current_cell() is cell  # zoom keys never move the selection

    qtbot.keyClick(win.gallery, Qt.Key.Key_O)
    assert not inspector.overlay_shown()
    qtbot.keyClick(win.gallery, Qt.Key.Key_O)
    assert inspector.overlay_shown()

    # From the inspector itself too, and through the View menu's actions.
    inspector.overlay_view.setFocus()
    qtbot.waitUntil(inspector.overlay_view.hasFocus, timeout=5000)
    qtbot.keyClick(inspector.overlay_view, Qt.Key.Key_Plus)
    assert inspector.zoom() == pytest.approx(fitted * 1.25)
    win.act_zoom_fit.trigger()
    assert inspector.zoom() == pytest.approx(fitted)
    view_menu = next(a.menu() for a in win.menuBar().actions() if a.text() == "&View")
    assert {win.act_zoom_in, win.act_zoom_out, win.act_zoom_fit, win.act_overlay} <= set(
        view_menu.actions()
    )


def test_the_layout_choice_is_kept_in_the_preferences(qtbot) -> None:
    win = _window(qtbot, _single_cells())
    assert win.prefs.inspector_layout == OVERLAY
    assert win.inspector.view_layout() == OVERLAY
    win.inspector.layout_button.click()
    assert win.inspector.view_layout() == SIDE_BY_SIDE
    assert win.inspector.original_view.isVisible()
    assert win.prefs.inspector_layout == SIDE_BY_SIDE
    win.save_preferences()
    prefs, notes = load_preferences()
    assert prefs.inspector_layout == SIDE_BY_SIDE and not notes

    again = _window(qtbot, _single_cells(), prefs=prefs)
    assert again.inspector.view_layout() == SIDE_BY_SIDE
    assert again.inspector.original_view.isVisible()


def test_a_bad_layout_in_the_preferences_file_falls_back(tmp_path: Path) -> None:
    path = tmp_path / "settings.json"
    path.write_text('{"inspector_layout": "mosaic"}', encoding="utf-8")
    prefs, notes = load_preferences(path)
    assert prefs.inspector_layout == OVERLAY and any("inspector_layout" in n for n in notes)


def test_a_signed_off_cell_shows_the_lock(qtbot) -> None:
    cells = _single_cells()
    win = _window(qtbot, cells)
    win.select_cell(cells[0])
    assert win.inspector.lock_text() == ""
    win.review.sign_off("S1", "Dr. Lock")
    signed = win.review.signed_off("S1")
    win.select_cell(cells[1])  # same sample, now signed off
    text = win.inspector.lock_text()
    assert text == f"Signed off by Dr. Lock at {local_minute(signed.time)} — locked"
    assert win.inspector.lock_banner.isVisible()
    win.select_cell(cells[2])  # another sample: open
    assert win.inspector.lock_text() == "" and not win.inspector.lock_banner.isVisible()


def test_a_field_cell_shows_the_field_size_and_stands_out(qtbot, tmp_path: Path) -> None:
    cells, (width, height) = _field_cells(tmp_path)
    assert len(cells) >= 2
    win = _window(qtbot, cells)
    target = cells[1]
    win.select_cell(target)
    assert win.inspector.cell().key == target.key and target.key.endswith("#2")
    details = win.inspector.details_text()
    x0, y0, x1, y1 = target.box
    assert f"Field: {width} × {height} px" in details
    assert f"Cell box: #2: x {x0}–{x1}, y {y0}–{y1} ({x1 - x0} × {y1 - y0} px)" in details
    crop = cell_image(target)  # the crop the model saw (padded around the box)
    assert f"Crop: {crop.shape[1]} × {crop.shape[0]} px" in details

    view = win.field_view
    assert view.isVisible() and len(view.boxes) == len(cells)
    chosen = view.selected_box()
    assert chosen is not None and chosen.cell.key == target.key
    others = [b for b in view.boxes if b is not chosen]
    assert all(chosen.pen().widthF() > b.pen().widthF() for b in others)
    assert all(b.opacity() < chosen.opacity() for b in others)
    assert all(b.pen().isCosmetic() for b in view.boxes)  # readable in the small view
    # Numbered as the gallery names them: "#n" is the cell's number in its field.
    assert sorted(t.text.split()[0] for t in view.tags) == sorted(f"#{c.cell_index}" for c in cells)
    # The selected box is visibly different on screen: its halo colour is drawn there.
    shot = view.grab().toImage()
    top_left = view.mapFromScene(QPointF(x0, y0 + (y1 - y0) / 2))
    halo = [shot.pixelColor(top_left.x() + dx, top_left.y()) for dx in range(-4, 5)]
    assert any(c.red() > 200 and c.green() > 170 and c.blue() < 90 for c in halo)


def test_the_field_view_enlarges_and_selects_from_there(qtbot, tmp_path: Path) -> None:
    cells, _ = _field_cells(tmp_path)
    win = _window(qtbot, cells)
    win.select_cell(cells[0])
    view = win.field_view
    assert view.enlarge_button is not None and view.enlarge_button.isVisible()
    view.enlarge_button.click()
    dialog = view.dialog
    assert dialog is not None and dialog.isVisible()
    qtbot.waitExposed(dialog)
    assert dialog.view.width() > view.width() and dialog.view.height() > view.height()
    assert len(dialog.view.boxes) == len(cells)
    assert dialog.view.selected_box().cell.key == cells[0].key

    # A click on a box in the big window selects that cell everywhere.
    other = next(b for b in dialog.view.boxes if b.cell.key == cells[-1].key)
    qtbot.mouseClick(
        dialog.view.viewport(),
        Qt.MouseButton.LeftButton,
        pos=dialog.view.mapFromScene(other.rect().center()),
    )
    assert win.current_cell().key == cells[-1].key
    assert win.inspector.cell().key == cells[-1].key
    assert dialog.view.selected_box().cell.key == cells[-1].key

    qtbot.keyClick(dialog.view, Qt.Key.Key_Escape)
    assert not dialog.isVisible()

    # A double-click on the small view opens it again.
    qtbot.mouseDClick(view.viewport(), Qt.MouseButton.LeftButton, pos=QPoint(3, 3))
    assert dialog.isVisible()
    dialog.close()


def test_a_long_title_shortens_in_the_middle_and_a_change_reads_model_then_reviewed(
    qtbot, tmp_path: Path
) -> None:
    inspector = _inspector(qtbot)
    inspector.resize(280, 700)
    cell = _single_cells()[0]
    long_name = tmp_path / "a_very_long_cell_image_name_from_the_scanner_0001.png"
    shutil.copy(cell.path, long_name)
    cell = CellResult(**{**cell.__dict__, "path": long_name})
    inspector.show_cell(cell, final_label=ALL, reviewed=True, model_text="m", model_call=HEM)
    qtbot.wait(20)
    title = inspector._title
    assert title.full_text() == long_name.name
    assert "…" in title.text() and title.text().endswith(".png")  # the extension stays
    chip = inspector._label_chip
    assert chip.text() == "HEM → ALL  ✓" and "the model's call was HEM" in chip.toolTip()
    inspector.show_cell(cell, final_label=HEM, reviewed=True, model_text="m", model_call=HEM)
    assert chip.text() == "HEM  ✓ reviewed"


def test_a_file_changed_since_analysis_is_not_shown_as_the_analyzed_cell(
    qtbot, tmp_path: Path
) -> None:
    """The reviewer never judges a call against pixels the model did not see."""
    import dataclasses

    from leukgui.core.results import IMAGE_CHANGED, FileStamp

    source = _single_cells()[0]
    path = tmp_path / "cell.png"
    shutil.copy(source.path, path)
    cell = dataclasses.replace(source, path=path, stamp=FileStamp.of(path))
    inspector = _inspector(qtbot)
    inspector.show_cell(cell, final_label=ALL, reviewed=False, model_text="m")
    assert not inspector.original_item.pixmap().isNull()
    os.utime(path, ns=(1, 1))  # rewritten since (same bytes would still be "changed" by time)
    inspector.show_cell(cell, final_label=ALL, reviewed=False, model_text="m")
    assert inspector.original_item.pixmap().isNull()
    assert IMAGE_CHANGED in inspector._overlay_note.toPlainText()
