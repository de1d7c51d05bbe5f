"""The workbook building blocks and the one metric table every report uses."""

from __future__ import annotations

import math
from pathlib import Path

import openpyxl
import pytest
from openpyxl import Workbook

from leukgui.core.metric_table import (
    METRIC_HEADERS,
    METRIC_WIDTHS,
    MetricRow,
    binary_metric_rows,
    calibration_row,
    write_confusion_matrix,
    write_metric_notes,
    write_metric_table,
)
from leukgui.core.metrics import BinaryMetrics, wilson_interval
from leukgui.core.results import ALL, UNCERTAIN
from leukgui.core.xlsx import (
    INT,
    MAX_CELL_TEXT,
    PCT,
    PROB,
    KeyValues,
    banner_row,
    fit_width,
    header_row,
    header_text,
    label_fill,
    number_cell,
    page_header,
    print_setup,
    printed_scale,
    set_widths,
    span_note,
    text_cell,
    wrap_columns,
)


def _saved(wb: Workbook, tmp_path: Path) -> openpyxl.Workbook:
    """Save and read back: what Excel would see, not openpyxl's in-memory objects."""
    path = tmp_path / "t.xlsx"
    wb.save(path)
    return openpyxl.load_workbook(path)


def test_text_cells_stay_text_and_storable(tmp_path: Path) -> None:
    wb = Workbook()
    ws = wb.active
    for row, value in enumerate(["=1+1", "+2", "-3", "@SUM(A1)", "bell\x07here"], 1):
        text_cell(ws, row, 1, value)
    text_cell(ws, 6, 1, "x" * (MAX_CELL_TEXT + 10))
    assert text_cell(ws, 7, 1, None).value is None
    back = _saved(wb, tmp_path).active
    assert [back.cell(row=r, column=1).value for r in range(1, 5)] == [
        "=1+1",
        "+2",
        "-3",
        "@SUM(A1)",
    ]
    assert all(back.cell(row=r, column=1).data_type == "s" for r in range(1, 5))
    assert back["A5"].value == "bell\ufffdhere"  # no XML-illegal control character
    assert len(back["A6"].value) == MAX_CELL_TEXT


def test_numbers_nan_is_na(tmp_path: Path) -> None:
    wb = Workbook()
    ws = wb.active
    number_cell(ws, 1, 1, 0.25, PCT)
    number_cell(ws, 2, 1, math.nan, PCT)
    number_cell(ws, 3, 1, None)
    number_cell(ws, 4, 1, math.inf)
    back = _saved(wb, tmp_path).active
    assert back["A1"].value == 0.25 and back["A1"].number_format == PCT
    assert [back[f"A{r}"].value for r in (2, 3, 4)] == ["n/a"] * 3


def test_key_values_banner_and_widths(tmp_path: Path) -> None:
    wb = Workbook()
    ws = wb.active
    kv = KeyValues(ws, 1, value_width=20)
    kv.banner("DEMO")
    kv.section("Settings")
    kv.add("flag", True)
    kv.add("count", 1234, INT)
    kv.add("nothing", None)
    kv.add("mapping", {"b": 1})
    kv.add("long", "word " * 40)
    kv.note("=not a formula")
    back = _saved(wb, tmp_path).active
    rows = {r[0]: r[1] for r in back.iter_rows(values_only=True) if r[0]}
    assert rows["flag"] == "yes" and rows["count"] == 1234 and rows["nothing"] == "(none)"
    assert rows["mapping"] == '{"b": 1}'
    assert "=not a formula" in rows and "Settings" in rows and "DEMO" in rows
    long_row = next(r for r in range(1, 20) if back.cell(row=r, column=1).value == "long")
    assert back.row_dimensions[long_row].height > 15  # grew to show the wrapped text
    assert "A1:B1" in {str(m) for m in back.merged_cells.ranges}
    banner_row(ws, 30, "x", 4)
    assert "A30:D30" in {str(m) for m in ws.merged_cells.ranges}
    assert fit_width(["abc", "abcdefgh"], 5, 9) == 9.0 and fit_width([], 5, 9) == 5.0
    assert label_fill(ALL).fgColor.rgb != label_fill(UNCERTAIN).fgColor.rgb
    assert label_fill("other").fill_type is None


def test_one_metric_table(tmp_path: Path) -> None:
    m = BinaryMetrics(tp=5, fn=2, fp=3, tn=6, roc_auc=0.8)
    rows = binary_metric_rows(m)
    assert [r.name for r in rows][-1] == "ROC AUC"
    assert "ROC AUC" not in [r.name for r in binary_metric_rows(m, auc=False)]
    extra = MetricRow("Uncertain cells", 4, "inside the band", fmt=INT, count=(4, 16))
    wb = Workbook()
    ws = wb.active
    last = write_confusion_matrix(ws, 1, m, called="Final")
    top = last + 2
    end = write_metric_table(ws, top, [*rows, calibration_row(0.05), extra])
    write_metric_notes(ws, end + 2)
    back = _saved(wb, tmp_path).active
    table = {r[0]: r for r in back.iter_rows(values_only=True) if r[0]}
    assert table["Truth ALL"][1:5] == (5, 2, 7, "TP = 5, FN = 2")
    assert table["Truth HEM"][1:4] == (3, 6, 9)
    assert table["Total"][1:4] == (8, 8, 16)
    assert back.cell(row=2, column=2).value == "Final ALL"
    assert tuple(back.cell(row=top, column=c).value for c in range(1, 7)) == METRIC_HEADERS
    assert table["Precision"][1] == pytest.approx(5 / 8)
    assert table["Precision"][2:4] == pytest.approx(wilson_interval(5, 8))
    assert table["Precision"][4] == "5 / 8"
    assert table["F1 score"][2:5] == (None, None, None)
    assert table["Uncertain cells"][1:5] == (4, None, None, "4 / 16")
    assert table["Expected calibration error"][1] == pytest.approx(0.05)
    row_of = {back.cell(row=r, column=1).value: r for r in range(1, end + 1)}
    assert back.cell(row=row_of["ROC AUC"], column=2).number_format == PROB
    assert back.cell(row=row_of["Accuracy"], column=2).number_format == PCT
    assert all(table[r.name][5] for r in rows)  # every metric says what it means
    notes = [back.cell(row=r, column=1).value for r in (end + 2, end + 3)]
    assert notes[0].startswith("n/a") and notes[1].startswith("95% CI")


# --------------------------------------------------------------------------- printing


def test_header_text_escapes_codes_and_stays_short() -> None:
    assert header_text("R&D model") == "R&&D model"  # '&D' alone prints the date
    assert header_text('A&B & &P &"Arial" &12') == 'A&&B && &&P &&"Arial" &&12'
    assert header_text("line\nbreak\x07bell\t tab") == "line break bell tab"
    long = header_text("&" * 200, limit=11)
    assert long == "&&" * 10 + "…"  # cut before escaping: never half an '&&' pair
    assert header_text("Müller & Søn 血液") == "Müller && Søn 血液"


def test_print_setup_and_page_header_saved(tmp_path: Path) -> None:
    wb = Workbook()
    ws = wb.active
    header_row(ws, 2, ["a", "b"])
    print_setup(ws, "2:2")
    page_header(ws, "LeukGUI report — R&D v1", "Run started 2026-11-30 14:02 & more")
    back = _saved(wb, tmp_path).active
    assert back.page_setup.orientation == "landscape"
    assert (back.page_setup.fitToWidth, back.page_setup.fitToHeight) == (1, 0)
    assert back.sheet_properties.pageSetUpPr.fitToPage
    assert back.print_title_rows == "$2:$2"
    assert back.page_margins.left == back.page_margins.right == 0.4
    assert back.oddHeader.left.text == "LeukGUI report — R&&D v1"
    assert back.oddHeader.right.text == "Run started 2026-11-30 14:02 && more"
    assert back.oddHeader.center.text is None  # left free for a long left part
    assert back.oddFooter.center.text == "Page &P of &N"
    assert (back.oddFooter.left.text, back.oddFooter.right.text) == ("&A", "&F")
    bare = Workbook().active
    print_setup(bare)  # no title rows, no header: still landscape with page numbers
    assert bare.print_title_rows is None and bare.oddFooter.center.text == "Page &P of &N"


def test_wrap_columns_and_span_note(tmp_path: Path) -> None:
    wb = Workbook()
    ws = wb.active
    set_widths(ws, [10, 20, 10])
    text_cell(ws, 1, 2, "short")
    text_cell(ws, 2, 2, "word " * 30)  # 150 characters in a 20-wide column
    text_cell(ws, 2, 3, "beside")
    ws.row_dimensions[3].height = 80  # a picture row: never made lower
    text_cell(ws, 3, 2, "word " * 10)
    wrap_columns(ws, [2], 1, 3)
    assert all(ws.cell(row=r, column=2).alignment.wrap_text for r in (1, 2, 3))
    assert ws.row_dimensions[1].height is None
    assert ws.row_dimensions[2].height >= 15 * 7
    assert ws["C2"].alignment.vertical == "top"  # lines up with the wrapped text
    assert ws.row_dimensions[3].height == 80
    text_cell(ws, 5, 1, "note " * 40)
    span_note(ws, 5, 3)
    assert "A5:C5" in {str(m) for m in ws.merged_cells.ranges}
    assert ws["A5"].alignment.wrap_text and ws.row_dimensions[5].height >= 15 * 5


def test_printed_scale() -> None:
    ws = Workbook().active
    set_widths(ws, [20, 20])
    text_cell(ws, 1, 2, "x")
    assert printed_scale(ws) == 1.0  # fits the page: printed full size
    set_widths(ws, [100, 100, 100])  # 3 x 705 px
    text_cell(ws, 1, 3, "x")
    assert printed_scale(ws) == pytest.approx((11.69 - 1.5) * 96 / (3 * 705), rel=0.01)
    print_setup(ws)  # narrower margins: a little more of the page for the table
    assert printed_scale(ws) == pytest.approx((11.69 - 0.8) * 96 / (3 * 705), rel=0.01)


def test_metric_meanings_wrap_in_a_bounded_column() -> None:
    assert METRIC_WIDTHS[5] <= 70  # not one 100-wide column that shrinks the printed page
    wb = Workbook()
    ws = wb.active
    rows = binary_metric_rows(BinaryMetrics(tp=5, fn=2, fp=3, tn=6, roc_auc=0.8))
    end = write_metric_table(ws, 1, rows)
    row_of = {ws.cell(row=r, column=1).value: r for r in range(2, end + 1)}
    assert all(ws.cell(row=r, column=6).alignment.wrap_text for r in row_of.values())
    auc = row_of["ROC AUC"]  # its meaning is longer than the column: two lines
    assert ws.row_dimensions[auc].height >= 30
    assert ws.cell(row=auc, column=2).alignment.vertical == "center"
    assert ws.row_dimensions[row_of["Accuracy"]].height is None  # short: one line
