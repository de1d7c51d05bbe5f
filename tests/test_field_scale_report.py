"""The scale of smear fields (µm per pixel) as a user meets it: set or measured, carried by
every field cell into the CSV and the Excel report, kept by sessions, refused when absurd
on the command line and in the window, and saved with the preferences."""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import csv  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
from pathlib import Path  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import openpyxl  # noqa: E402
import pytest  # noqa: E402

from leukgui import cli  # noqa: E402
from leukgui.core.exports import (  # noqa: E402
    FIELD_CSV_COLUMNS,
    SCALE_OUTLIER,
    SCALE_SIZES,
    field_scales,
    write_csv,
)
from leukgui.core.fields import DetectorSettings, detect_cells, make_synthetic_field  # noqa: E402
from leukgui.core.results import NO_WHITE_CELL, CellResult  # noqa: E402
from leukgui.core.synthetic import write_dataset  # noqa: E402

# Sample A: two fields at 0.1 µm/px and one at 0.2 (photographed at another objective: its
# scale disagrees with the sample's). Sample B: a field without red cells (scale from the
# nucleus size, which its note says) and a blank field (no red cells, no white cell: the
# default scale, which its error says). Single-cell crops: no box, size or scale at all.
FIELDS = {"A/f3.png": (3, 0.1), "A/f4.png": (4, 0.1), "A/f5_wide.png": (5, 0.2)}


def _write_rgb(path: Path, rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), rgb[..., ::-1])


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("scales")
    for name, (seed, um) in FIELDS.items():
        rgb, _ = make_synthetic_field(seed, um_per_px=um)
        _write_rgb(root / name, rgb)
    _write_rgb(root / "B" / "no_red.png", make_synthetic_field(6, n_rbc=0)[0])
    _write_rgb(root / "B" / "blank.png", np.full((480, 640, 3), (236, 228, 230), np.uint8))
    write_dataset(root / "crops", n_per_class=1, seed=2, fmt="png", size=96)
    return root


def _analyze(folder: Path, out: Path, tiny_bundle_path: Path, *extra: str) -> int:
    return cli.main(
        [
            "analyze",
            str(folder),
            "--model",
            str(tiny_bundle_path),
            "--out",
            str(out),
            "--csv",
            "--no-progress",
            "-q",
            *extra,
        ]
    )


@pytest.fixture(scope="module")
def measured(folder: Path, tiny_bundle_path: Path, tmp_path_factory) -> Path:
    """The report of `leukgui analyze --um-per-px auto` (CSV beside it)."""
    out = tmp_path_factory.mktemp("auto") / "auto.xlsx"
    code = _analyze(folder, out, tiny_bundle_path, "--um-per-px", "auto")
    assert code == cli.EXIT_SOME_ERRORS  # the blank field is an error row
    return out


def _csv_rows(report: Path) -> list[dict[str, str]]:
    with report.with_suffix(".csv").open(encoding="utf-8-sig", newline="") as fh:
        return list(csv.DictReader(fh))


def _sheet(report: Path, name: str) -> list[dict[str, object]]:
    ws = openpyxl.load_workbook(report)[name]
    rows = list(ws.iter_rows(min_row=2, values_only=True))
    header = [str(h) for h in rows[0]]
    return [dict(zip(header, r, strict=True)) for r in rows[1:]]


def _detected(folder: Path, name: str, settings: DetectorSettings):
    """What the detector itself finds in a field, for comparing with the reports."""
    bgr = cv2.imread(str(folder / name))
    return detect_cells(np.ascontiguousarray(bgr[..., ::-1]), settings)


def test_csv_gives_each_field_cell_its_box_size_and_measured_scale(measured, folder) -> None:
    rows = _csv_rows(measured)
    assert list(rows[0])[-len(FIELD_CSV_COLUMNS) :] == list(FIELD_CSV_COLUMNS)
    for name in FIELDS:
        found = _detected(folder, name, DetectorSettings())
        mine = [r for r in rows if r["file"] == name]
        assert len(mine) == len(found.cells) >= 1, name
        assert [int(r["cell_number"]) for r in mine] == list(range(1, len(mine) + 1))
        boxes = {tuple(int(r[k]) for k in ("x0", "y0", "x1", "y1")): r for r in mine}
        assert set(boxes) == {tuple(c.box) for c in found.cells}, name
        for cell in found.cells:
            r = boxes[tuple(cell.box)]
            assert int(r["area_px"]) == cell.area
            assert float(r["diameter_px"]) == pytest.approx(cell.diameter, abs=0.006)
            scale = float(r["um_per_px"])
            assert scale == pytest.approx(found.um_per_px, rel=1e-5)
            assert float(r["diameter_um"]) == pytest.approx(cell.diameter * scale, abs=0.002)
            assert float(r["area_um2"]) == pytest.approx(cell.area * scale**2, abs=0.006)
            assert r["scale_source"] == found.scale_source
            assert r["scale_source"].startswith("red cells (n=")
            assert r["cut_by_border"] == ("yes" if cell.touches_border else "no")
    # The field photographed at twice the scale is flagged; the other two are not.
    flags = {r["file"]: r["scale_flag"] for r in rows if r["cell_number"]}
    assert flags["A/f5_wide.png"] == SCALE_OUTLIER
    assert flags["A/f3.png"] == flags["A/f4.png"] == ""


def test_single_cell_rows_and_errors_leave_the_field_columns_empty(measured) -> None:
    rows = _csv_rows(measured)
    crops = [r for r in rows if r["file"].startswith("crops/")]
    assert len(crops) == 2 and all(r["status"] == "ok" for r in crops)
    blank = next(r for r in rows if r["file"] == "B/blank.png")
    for r in (*crops, blank):
        assert [r[c] for c in FIELD_CSV_COLUMNS] == [""] * len(FIELD_CSV_COLUMNS), r["file"]
    # A field with no usable red cells and no scale set says it assumed the default.
    assert blank["status"] == "error" and "scale unknown: assumed 0.08" in blank["reason"]


def test_excel_field_cells_sheet_matches_the_csv_and_the_cells_sheet(measured) -> None:
    csv_rows = {(r["file"], r["cell_number"]): r for r in _csv_rows(measured) if r["cell_number"]}
    sheet = _sheet(measured, "Field cells")
    assert len(sheet) == len(csv_rows) >= 7
    cells_sheet = {r["#"]: r for r in _sheet(measured, "Cells")}
    for r in sheet:
        c = csv_rows[(r["Field"], str(r["Cell no."]))]
        box = (r["x0"], r["y0"], r["x1"], r["y1"])
        assert all(isinstance(v, int) for v in box)
        assert box == tuple(int(c[k]) for k in ("x0", "y0", "x1", "y1"))
        assert r["Area (px)"] == int(c["area_px"])
        assert r["Diameter (px)"] == pytest.approx(2 * math.sqrt(r["Area (px)"] / math.pi))
        assert r["Diameter (µm)"] == pytest.approx(r["Diameter (px)"] * r["µm per pixel"])
        assert r["Area (µm²)"] == pytest.approx(r["Area (px)"] * r["µm per pixel"] ** 2)
        assert r["µm per pixel"] == pytest.approx(float(c["um_per_px"]), rel=1e-5)
        assert r["Scale source"] == c["scale_source"]
        assert r["Cut by border"] == c["cut_by_border"]
        # "#" is the cell's row on the Cells sheet, whose name text gives the same box.
        named = cells_sheet[r["#"]]["File"]
        x0, y0, x1, y1 = box
        assert named == f"{r['Field']} #{r['Cell no.']} at ({x0},{y0})-({x1},{y1})"
    ws = openpyxl.load_workbook(measured)["Field cells"]
    formats = {
        ws.cell(row=2, column=i).value: ws.cell(row=3, column=i).number_format
        for i in range(1, ws.max_column + 1)
    }
    assert formats["Diameter (µm)"] == "0.00" and formats["µm per pixel"] == "0.0000"


def test_excel_fields_sheet_gives_each_fields_scale_source_and_check(measured) -> None:
    fields = {r["Field"]: r for r in _sheet(measured, "Fields")}
    assert set(fields) == {*FIELDS, "B/no_red.png", "B/blank.png"}
    for name, (_, um) in FIELDS.items():
        assert fields[name]["µm per pixel"] == pytest.approx(um, rel=0.1), name
        assert str(fields[name]["Scale source"]).startswith("red cells (n=")
    assert fields["A/f5_wide.png"]["Scale check"] == SCALE_OUTLIER
    assert fields["A/f3.png"]["Scale check"] is None
    assert fields["B/blank.png"]["µm per pixel"] is None
    assert "scale unknown" in str(fields["B/blank.png"]["Note"])
    provenance = {r["Item"]: r["Value"] for r in _sheet(measured, "Provenance")}
    assert str(provenance["µm per pixel"]).startswith("automatic: measured on every field")


def test_a_set_scale_is_used_for_every_field_and_said_in_the_report(
    folder, tiny_bundle_path, tmp_path
) -> None:
    out = tmp_path / "set.xlsx"
    assert _analyze(folder, out, tiny_bundle_path, "--um-per-px", "0.1") == cli.EXIT_SOME_ERRORS
    rows = [r for r in _csv_rows(out) if r["cell_number"]]
    assert rows and {r["um_per_px"] for r in rows} == {"0.1"}
    assert {r["scale_source"] for r in rows} == {"set"}
    assert {r["scale_flag"] for r in rows} == {""}  # one microscope: no field disagrees
    for r in rows:
        d_px = 2 * math.sqrt(int(r["area_px"]) / math.pi)
        assert float(r["diameter_um"]) == pytest.approx(d_px * 0.1, abs=0.002)
    provenance = {r["Item"]: r["Value"] for r in _sheet(out, "Provenance")}
    assert provenance["µm per pixel"] == "0.1 µm per pixel, set"
    assert '"um_per_px": 0.1' in provenance["White-cell detector settings"]


def test_a_wrong_set_scale_is_caught_by_the_cell_sizes(folder, tiny_bundle_path, tmp_path) -> None:
    """A set value is not measured; white cells 3x too large say it does not fit."""
    out = tmp_path / "wrong.xlsx"
    code = _analyze(folder / "A", out, tiny_bundle_path, "--um-per-px", "0.3")
    assert code in (cli.EXIT_OK, cli.EXIT_SOME_ERRORS)  # a field may lose its cells
    rows = [r for r in _csv_rows(out) if r["cell_number"]]
    assert rows and all(float(r["diameter_um"]) > 18 for r in rows)
    assert {r["scale_flag"] for r in rows} == {SCALE_SIZES}
    fields = _sheet(out, "Fields")
    with_cells = [r for r in fields if r["White cells"]]
    assert with_cells and all(SCALE_SIZES in str(r["Scale check"]) for r in with_cells)
    # A field whose cells all vanish at the wrong scale says why it might be.
    for r in fields:
        if not r["White cells"]:
            assert "at the set 0.3 µm per pixel" in str(r["Note"]), r


@pytest.mark.parametrize(("value", "words"), [("0", "positive number"), ("500", "absurd")])
def test_an_absurd_scale_is_refused_with_the_reason(value, words, tmp_path, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["analyze", str(tmp_path), "--um-per-px", value])
    assert exit_info.value.code == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert "--um-per-px" in err and words in err and "µm per pixel" in err
    assert "um_per_px" not in err and "None" not in err  # the user's words, not the code's


# ------------------------------------------------------------------------ engine, sessions


def test_engine_options_take_the_new_scale_and_old_px_preferences() -> None:
    from leukgui.core.engine import AnalysisOptions, parse_um_per_px, um_per_px_text

    new = AnalysisOptions(detector={"um_per_px": 0.077}).detector
    assert new.fixed_um_per_px == 0.077
    old = AnalysisOptions(detector={"pixel_scale": 2.0, "smooth": 3.0, "lobe_gap": 14.0})
    assert old.detector.fixed_um_per_px == pytest.approx(0.0385)
    assert old.detector.smooth_um == pytest.approx(0.231)
    assert "pixel_scale" in um_per_px_text(old.detector)
    assert um_per_px_text(AnalysisOptions().detector).startswith("automatic")
    with pytest.raises(ValueError, match="absurd"):
        AnalysisOptions(detector={"um_per_px": 500})
    with pytest.raises(ValueError, match="unknown white-cell detector setting"):
        AnalysisOptions(detector={"microns": 0.1})
    assert parse_um_per_px(" Auto ") is None and parse_um_per_px("") is None
    assert parse_um_per_px("0,077") == 0.077  # a decimal comma is read too


def test_sessions_keep_the_sizes_and_old_sessions_still_open(engine_run, tmp_path) -> None:
    from leukgui.core.sessions import SessionStore

    run = engine_run
    SessionStore.create(tmp_path / "s", run).close()
    again, _ = SessionStore.open(tmp_path / "s")
    fields_before = [c for c in run.cells if c.in_field]
    fields_after = [c for c in again.cells if c.in_field]
    assert [_measures(c) for c in fields_after] == [_measures(c) for c in fields_before]
    assert all(c.area_px is None and c.um_per_px is None for c in again.cells if not c.in_field)

    meta_path = tmp_path / "s" / "run.json"  # as a LeukGUI before scales wrote it
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    for outcome in meta["outcomes"]:
        for key in ("area_px", "touches_border", "um_per_px", "scale_source", "scale_plausible"):
            outcome.pop(key, None)
    meta_path.write_text(json.dumps(meta), encoding="utf-8")
    old, _ = SessionStore.open(tmp_path / "s")
    cell = next(c for c in old.cells if c.in_field)
    assert cell.box is not None and cell.area_px is None and cell.diameter_um is None
    assert field_scales(old)[str(cell.path)].flag == ""
    write_csv(old, tmp_path / "old.csv")
    with (tmp_path / "old.csv").open(encoding="utf-8-sig", newline="") as fh:
        row = next(r for r in csv.DictReader(fh) if r["cell_number"])
    assert row["x0"] == str(cell.box[0]) and row["area_px"] == row["um_per_px"] == ""


@pytest.fixture(scope="module")
def engine_run(folder: Path, tiny_bundle):
    """The same folder through the engine directly (what the CLI and the window run)."""
    from leukgui.core.engine import AnalysisOptions, analyze_paths

    return analyze_paths([folder], tiny_bundle, AnalysisOptions(batch_size=8))


def _measures(c: CellResult) -> tuple:
    return (c.box, c.cell_index, c.area_px, c.touches_border, c.um_per_px, c.scale_source)


def test_the_engine_puts_the_detector_notes_and_scale_on_each_cell(engine_run) -> None:
    run = engine_run
    blank = next(e for e in run.errors if e.path.name == "blank.png")
    assert blank.kind == NO_WHITE_CELL and "scale unknown" in blank.reason
    for c in run.cells:
        if c.in_field:
            assert c.area_px and c.area_px > 0 and c.touches_border is not None
            assert c.diameter_um == pytest.approx(c.diameter_px * c.um_per_px)
            assert c.scale_plausible is True
            if c.path.name == "no_red.png":  # too few red cells: the nucleus size, said so
                assert c.scale_source.startswith("nucleus size (n=")
                assert "too few red cells: scale from nucleus size" in c.note
            else:
                assert c.scale_source.startswith("red cells (n=")
        else:
            assert (c.area_px, c.um_per_px, c.scale_source, c.touches_border) == (
                None,
                None,
                "",
                None,
            )


# ------------------------------------------------------------------------ preferences, GUI


def test_preferences_keep_a_good_scale_and_old_keys_and_drop_an_absurd_one(tmp_path) -> None:
    from leukgui.core.preferences import load_preferences

    path = tmp_path / "settings.json"
    path.write_text(json.dumps({"detector": {"um_per_px": 0.069, "pixel_scale": 1.5}}))
    prefs, notes = load_preferences(path)
    assert prefs.detector == {"um_per_px": 0.069, "pixel_scale": 1.5} and notes == []
    path.write_text(json.dumps({"detector": {"um_per_px": 0, "smooth": 3.0}}))
    prefs, notes = load_preferences(path)
    assert prefs.detector == {"smooth": 3.0}
    assert len(notes) == 1 and "um_per_px" in notes[0] and "positive number" in notes[0]


def test_the_dialog_validates_as_the_user_types(qtbot) -> None:
    from PySide6.QtWidgets import QDialogButtonBox

    from leukgui.core.field_scale import PRESETS
    from leukgui.gui.scale_setting import UmPerPxDialog

    dialog = UmPerPxDialog(None)
    qtbot.addWidget(dialog)
    ok = dialog.buttons.button(QDialogButtonBox.StandardButton.Ok)
    assert dialog.value() is None and ok.isEnabled()
    assert dialog.combo.count() == 1 + len(PRESETS)
    dialog.combo.setEditText("500")
    assert not ok.isEnabled() and "absurd" in dialog.error.text()
    dialog.combo.setEditText("0")
    assert not ok.isEnabled() and "positive number" in dialog.error.text()
    assert dialog.value() is None  # a refused value is never taken
    dialog.combo.setEditText("0.069")
    assert ok.isEnabled() and dialog.value() == 0.069 and dialog.error.text() == ""
    name = "BCCD-like field (640 x 480, 100x oil)"
    dialog.combo.setCurrentIndex(dialog.combo.findData(PRESETS[name]))
    assert dialog.value() == PRESETS[name]
    dialog.combo.setEditText("")
    assert ok.isEnabled() and dialog.value() is None  # empty: automatic
    # No completion: with Qt's default one, typing "0.05" then Return took the 0.055 preset
    # under a real window (seen in a new-user trial; offscreen typing does not show it).
    assert dialog.combo.completer() is None
    again = UmPerPxDialog(0.0123)
    qtbot.addWidget(again)
    assert again.value() == 0.0123 and again.combo.currentText() == "0.0123"


def test_the_window_saves_a_valid_scale_and_refuses_a_bad_one(qtbot, monkeypatch) -> None:
    from leukgui.core.engine import AnalysisOptions
    from leukgui.core.preferences import Preferences, load_preferences
    from leukgui.gui.main_window import MainWindow

    win = MainWindow(
        Preferences(preload_model=False, detector={"pixel_scale": 2.0}), restore_check=False
    )
    qtbot.addWidget(win)
    messages: list[tuple[str, str, str]] = []
    monkeypatch.setattr(
        win, "_show_message", lambda kind, t, text, d="": messages.append((kind, t, text))
    )
    assert "0.0385" in win.act_um_per_px.text()  # the old px-era scale, as µm per pixel
    assert not win.set_um_per_px("500")
    assert messages and "absurd" in messages[-1][2]
    assert load_preferences()[0].detector == {}  # nothing saved
    # Through the dialog, as a user does it: the menu entry, a typed value, OK.
    win.act_um_per_px.trigger()
    dialog = win.um_per_px_dialog
    dialog.combo.setEditText("0.077")
    dialog.accept()
    assert win.um_per_px() == 0.077 and "0.077" in win.act_um_per_px.text()
    saved, _ = load_preferences()
    assert saved.detector == {"um_per_px": 0.077}  # the old px scale gave way
    assert AnalysisOptions(detector=dict(saved.detector)).detector.fixed_um_per_px == 0.077
    other = MainWindow(saved, restore_check=False)
    qtbot.addWidget(other)
    assert "0.077" in other.act_um_per_px.text()
    assert other.set_um_per_px(None) and load_preferences()[0].detector == {}
    assert "Automatic" in other.act_um_per_px.text()


def test_the_details_panel_gives_a_field_cells_size_and_scale() -> None:
    from leukgui.gui.cell_view import field_cell_rows

    cell = CellResult(
        Path("f.png"), "S", 0.3, "HEM", np.zeros((2, 2), np.float32), 640, 480,
        box=(0, 10, 100, 110), cell_index=1, area_px=7854, touches_border=True,
        um_per_px=0.1, scale_source="red cells (n=23)",
    )  # fmt: skip
    rows = dict(field_cell_rows(cell))
    assert rows["Cell size"].startswith("10.0 µm across, 79 µm² (100.0 px across")
    assert rows["µm per pixel"] == "0.1 (red cells (n=23))"
    assert "cut by the image border" in rows["Border"]
    cell.area_px = cell.um_per_px = None  # an old session: nothing made up
    assert field_cell_rows(cell)[:1] == [("Border", rows["Border"])]


def test_implausible_and_default_scales_are_flagged_in_csv_and_report(tmp_path) -> None:
    """Scales the engine can give but the synthetic fields do not: a measurement that was
    implausible (replaced by the next source) and a default (nothing to measure)."""
    import report_samples as samples

    from leukgui.core.exports import SCALE_DEFAULT, SCALE_IMPLAUSIBLE
    from leukgui.core.report import write_excel
    from leukgui.core.results import RunResult

    def field_cell(name: str, um: float, source: str, plausible: bool) -> CellResult:
        c = samples.cell(samples.image(tmp_path / "S" / name), "S", 0.7, "ALL")
        # 12,000 px at 0.08 µm/px: a white cell 9.9 µm across (sizes raise no flag here)
        c.box, c.cell_index, c.area_px, c.touches_border = (1, 2, 125, 126), 1, 12000, False
        c.um_per_px, c.scale_source, c.scale_plausible = um, source, plausible
        return c

    cells = [
        field_cell("odd.png", 0.08, "nucleus size (n=1)", False),
        field_cell("none.png", 0.08, "default", True),
        field_cell("good.png", 0.08, "red cells (n=30)", True),
        samples.cell(samples.image(tmp_path / "S" / "crop.png"), "S", 0.2, "HEM"),
    ]
    run = RunResult(samples.info([str(tmp_path)]), list(cells))
    write_csv(run, tmp_path / "r.csv")
    with (tmp_path / "r.csv").open(encoding="utf-8-sig", newline="") as fh:
        flags = {r["file"]: r["scale_flag"] for r in csv.DictReader(fh)}
    assert flags == {
        "S/odd.png": SCALE_IMPLAUSIBLE,
        "S/none.png": SCALE_DEFAULT,
        "S/good.png": "",
        "S/crop.png": "",
    }
    write_excel(run, tmp_path / "r.xlsx", images=False)
    checks = {r["Field"]: r["Scale check"] for r in _sheet(tmp_path / "r.xlsx", "Fields")}
    assert checks == {
        "S/odd.png": SCALE_IMPLAUSIBLE,
        "S/none.png": SCALE_DEFAULT,
        "S/good.png": None,
    }
    sheet = _sheet(tmp_path / "r.xlsx", "Field cells")
    assert [r["Field"] for r in sheet] == ["S/odd.png", "S/none.png", "S/good.png"]
    assert [r["#"] for r in sheet] == [1, 2, 3]  # rows of the Cells sheet; the crop is #4
    assert sheet[0]["Diameter (µm)"] == pytest.approx(2 * math.sqrt(12000 / math.pi) * 0.08)
