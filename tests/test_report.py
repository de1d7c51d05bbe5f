"""The analysis workbook: content of every sheet, formula safety, atomic failure modes.

The CSV and heatmap exports are tested in test_exports.py (they share the atomic-write tests
below)."""

from __future__ import annotations

import errno
import math
import os
import sys
import tempfile
import zipfile
from datetime import datetime
from pathlib import Path

import cv2
import numpy as np
import openpyxl
import pytest
import report_samples as samples
from openpyxl.utils.units import pixels_to_EMU

from leukgui.core import atomic, report
from leukgui.core.atomic import ReportWriteError, atomic_write
from leukgui.core.exports import write_csv, write_heatmaps
from leukgui.core.metrics import binary_metrics, expected_calibration_error, wilson_interval
from leukgui.core.overlay import colorize, heatmap_to_image, overlay
from leukgui.core.report import write_excel
from leukgui.core.results import (
    ALL,
    DEMO_NOTICE,
    HEM,
    TOO_LARGE,
    UNCERTAIN,
    FileError,
    RunResult,
)
from leukgui.core.review import ReviewState
from leukgui.core.xlsx import printed_scale


@pytest.fixture
def run(tmp_path: Path) -> RunResult:
    """Two samples, every label, truth known for most cells, one missing file, one error."""
    return samples.mixed_run(tmp_path / "images")


def _rows(ws) -> list[tuple]:
    return [tuple(r) for r in ws.iter_rows(values_only=True)]


def _by_first(ws) -> dict[object, tuple]:
    return {r[0]: r for r in _rows(ws) if r and r[0] is not None}


def _row_of(ws, first: str) -> int:
    return next(r[0].row for r in ws.iter_rows(min_col=1, max_col=1) if r[0].value == first)


def _load(path: Path) -> openpyxl.Workbook:
    return openpyxl.load_workbook(path)


# ------------------------------------------------------------------------------ Summary


def test_summary_counts_and_all_percent(run: RunResult, tmp_path: Path) -> None:
    out = tmp_path / "r.xlsx"
    write_excel(run, out, images=False)
    wb = _load(out)
    assert wb.sheetnames == ["Summary", "Cells", "Errors", "Metrics", "Provenance"]
    ws = wb["Summary"]
    assert ws["A1"].value == "LeukGUI report — run of 2024-05-06 09:30, model cnmc-mobilenet v2.1"
    assert ws["A1"].font.b
    rows = _rows(ws)
    header = rows.index(
        (
            "Sample",
            "Cells",
            "ALL",
            "HEM",
            "UNCERTAIN",
            "ALL %",
            "95% CI low",
            "95% CI high",
            "Errors",
        )
    )
    table = rows[header + 1 : header + 4]
    assert [r[0] for r in table] == ["S1", "S2", "All samples"]
    s1, s2, overall = table
    assert s1[1:5] == (4, 2, 1, 1) and s1[8] == 0
    assert s1[5] == pytest.approx(2 / 3)  # UNCERTAIN excluded from the denominator
    assert s1[6:8] == pytest.approx(wilson_interval(2, 3))
    assert s2[1:5] == (3, 1, 2, 0) and s2[8] == 1
    assert s2[5] == pytest.approx(1 / 3)
    assert overall[1:5] == (7, 3, 3, 1) and overall[8] == 1
    assert overall[5] == pytest.approx(0.5)
    pct_cell = ws.cell(row=header + 2, column=6)
    assert pct_cell.number_format == "0.0%"
    assert ws.cell(row=header + 4, column=1).font.b  # the "All samples" row is bold
    assert ws.freeze_panes == f"A{header + 2}"
    text = " ".join(str(v) for r in rows for v in r if isinstance(v, str))
    assert "ALL % = ALL / (ALL + HEM)" in text and "excluded" in text
    assert "Wilson" in text
    assert f"SHA-256 {samples.SHA[:12]}" in text and "cnmc-mobilenet v2.1" in text
    assert DEMO_NOTICE not in text and "cancelled" not in text.lower()
    assert "not included" in text  # images=False is stated


def test_demo_and_cancelled_banners(run: RunResult, tmp_path: Path) -> None:
    run.info.demo = True
    run.info.cancelled = True
    run.info.total_inputs = 20
    out = tmp_path / "r.xlsx"
    write_excel(run, out, images=False)
    ws = _load(out)["Summary"]
    assert ws["A2"].value == DEMO_NOTICE
    assert ws["A2"].font.b and ws["A2"].font.color.rgb.endswith("C00000")
    assert ws["A3"].value == "Run cancelled — 8 of 20 inputs analyzed"
    assert ws["A3"].font.b
    prov = _by_first(_load(out)["Provenance"])
    assert prov["Demo model"][1] == DEMO_NOTICE
    assert prov["Cancelled"][1] == "yes"


# ------------------------------------------------------------------------------ Cells


def test_cells_rows_and_labels(run: RunResult, tmp_path: Path) -> None:
    out = tmp_path / "r.xlsx"
    write_excel(run, out, images=False)
    ws = _load(out)["Cells"]
    rows = _rows(ws)
    assert rows[0][0] == "Cells — run of 2024-05-06 09:30, model cnmc-mobilenet v2.1"
    assert "not included" in rows[1][0]  # said above the table, not beside it
    rows = rows[2:]  # from the header row on
    assert rows[0][:9] == (
        "#",
        "File",
        "Sample",
        "Subject",
        "Label",
        "P(ALL)",
        "Truth",
        "Correct?",
        "Full path",
    )
    assert len(rows[0]) == 9  # nothing beside the table to widen the printed page
    body = [r[:9] for r in rows[1:]]
    assert len(body) == len(run.cells) == 7
    assert [r[0] for r in body] == list(range(1, 8))
    assert [r[1] for r in body] == [
        "S1/a.png",
        "S1/b.png",
        "S1/c.png",
        "S1/d.png",
        "S2/e.png",
        "S2/f.png",
        "S2/missing.png",
    ]
    assert [r[4] for r in body] == [ALL, HEM, UNCERTAIN, ALL, HEM, ALL, HEM]
    assert [r[5] for r in body] == pytest.approx([0.9, 0.1, 0.55, 0.8, 0.2, 0.7, 0.3])
    assert [r[6] for r in body] == [ALL, HEM, HEM, HEM, ALL, None, None]
    assert [r[7] for r in body] == ["yes", "yes", "no (by threshold)", "no", "no", None, None]
    assert body[0][8] == str(run.cells[0].path)
    assert body[0][3] == "P1"
    assert ws["F4"].number_format == "0.000"
    fills = {
        ws.cell(row=i, column=5).value: ws.cell(row=i, column=5).fill.fgColor.rgb for i in (4, 5, 6)
    }
    assert len(set(fills.values())) == 3  # colour differs per label, and so does the text
    assert ws.auto_filter.ref == "A3:I10"
    assert ws.freeze_panes == "C4"
    assert ws.print_title_rows == "$3:$3"
    assert len(ws._images) == 0


def test_images_embedded_and_unavailable_is_said(run: RunResult, tmp_path: Path) -> None:
    out = tmp_path / "r.xlsx"
    write_excel(run, out, images=True, thumb_px=48)
    ws = _load(out)["Cells"]
    assert ws["J2"].value == "Thumbnail" and ws["K2"].value == "Heatmap"
    assert len(ws._images) == 2 * 6  # six readable cells, thumbnail + heatmap each
    anchored = sorted((img.anchor._from.row, img.anchor._from.col) for img in ws._images)
    assert anchored == sorted([(r, c) for r in range(2, 8) for c in (9, 10)])  # 0-based
    for img in ws._images:  # each picture stays inside its own cell
        assert img.anchor.to.row == img.anchor._from.row
        assert img.anchor.to.col == img.anchor._from.col
    assert ws.row_dimensions[3].height >= 48 * 0.75
    assert ws["J9"].value.startswith("image unavailable: ")
    assert ws["K9"].value.startswith("image unavailable: ")
    with zipfile.ZipFile(out) as z:
        media = [n for n in z.namelist() if n.startswith("xl/media/")]
        assert len(media) == 12
        png = np.frombuffer(z.read(media[0]), np.uint8)
        assert cv2.imdecode(png, cv2.IMREAD_COLOR).shape == (48, 48, 3)


def test_image_changed_since_analysis_is_not_shown(run: RunResult, tmp_path: Path) -> None:
    run.cells[0].width = 999  # the file on disk is 40x30 now
    out = tmp_path / "r.xlsx"
    write_excel(run, out, images=True)
    ws = _load(out)["Cells"]
    assert "file changed since analysis" in ws["J3"].value
    assert len(ws._images) == 2 * 5


def test_images_auto_limit(run: RunResult, tmp_path: Path, monkeypatch) -> None:
    out = tmp_path / "r.xlsx"
    write_excel(run, out)  # 7 cells: images included automatically
    assert len(_load(out)["Cells"]._images) == 12
    monkeypatch.setattr(report, "IMAGE_LIMIT", 3)
    write_excel(run, out)
    wb = _load(out)
    assert len(wb["Cells"]._images) == 0
    assert wb["Cells"]["J3"].value is None
    summary = " ".join(str(v) for r in _rows(wb["Summary"]) for v in r if v)
    assert "omitted" in summary and "more than the 3" in summary
    assert "omitted" in wb["Cells"]["A2"].value


# ------------------------------------------------------------------------------ Errors


def test_errors_sheet(run: RunResult, tmp_path: Path) -> None:
    out = tmp_path / "r.xlsx"
    write_excel(run, out, images=False)
    rows = _rows(_load(out)["Errors"])[1:]  # below the title row
    assert rows[0] == ("File", "Sample", "Kind", "Reason", "Full path")
    path = str(run.errors[0].path)
    assert rows[1:] == [("S2/bad.png", "S2", "unreadable", "truncated PNG", path)]

    run.outcomes = [o for o in run.outcomes if not isinstance(o, FileError)]
    write_excel(run, out, images=False)
    rows = _rows(_load(out)["Errors"])
    assert rows[2][0] == "No errors" and len(rows) == 3


def test_errors_by_kind_and_empty_fields(run: RunResult, tmp_path: Path) -> None:
    """The Kind column and the Fields sheet come from `FileError.kind`, never the reason."""
    run.outcomes.append(samples.field_error(tmp_path))
    run.outcomes.append(FileError(tmp_path / "x.png", "S3", "no white cell found", TOO_LARGE))
    out = tmp_path / "r.xlsx"
    write_excel(run, out, images=False)
    wb = _load(out)
    kinds = [r[2] for r in _rows(wb["Errors"])[2:]]
    assert kinds == ["unreadable", "no white cell", "too large"]
    assert _rows(wb["Fields"])[1][0] == "Field"
    fields = _rows(wb["Fields"])[2:]
    assert [(r[0], r[2]) for r in fields] == [("blank.png", 0)]


# ------------------------------------------------------------------------------ Metrics


def test_metrics_sheet_matches_binary_metrics(run: RunResult, tmp_path: Path) -> None:
    out = tmp_path / "r.xlsx"
    write_excel(run, out, images=False)
    ws = _load(out)["Metrics"]
    rows = _by_first(ws)
    expected = binary_metrics(
        [ALL, HEM, HEM, HEM, ALL],
        [ALL, HEM, ALL, ALL, HEM],  # the UNCERTAIN cell (0.55) counts as ALL
        [0.9, 0.1, 0.55, 0.8, 0.2],
    )
    assert (expected.tp, expected.fn, expected.fp, expected.tn) == (1, 1, 2, 1)
    assert rows["Cells with truth"][1] == 5
    assert rows["Cells without truth (not in metrics)"][1] == 2
    assert rows["UNCERTAIN cells among cells with truth"][1] == 1
    assert rows["Truth ALL"][1:4] == (1, 1, 2)
    assert rows["Truth HEM"][1:4] == (2, 1, 3)
    assert rows["Total"][1:4] == (3, 2, 5)
    header = _rows(ws)[[r[0] for r in _rows(ws)].index("Truth ALL") - 1]
    assert header[1:3] == ("Predicted ALL", "Predicted HEM")
    for name, value in [
        ("Accuracy", expected.accuracy),
        ("Precision", expected.precision),
        ("Recall (sensitivity)", expected.recall),
        ("Specificity", expected.specificity),
        ("F1 score", expected.f1),
        ("Misclassification rate", expected.misclassification_rate),
        ("Balanced accuracy", expected.balanced_accuracy),
        ("ROC AUC", expected.roc_auc),
    ]:
        assert rows[name][1] == pytest.approx(value), name
        assert rows[name][5], f"{name} has no formula in words"
    assert rows["Accuracy"][2:4] == pytest.approx(wilson_interval(2, 5))
    assert rows["Accuracy"][4] == "2 / 5"
    assert rows["Precision"][4] == "1 / 3" and rows["F1 score"][2:5] == (None, None, None)
    assert rows["Expected calibration error"][1] == pytest.approx(
        expected_calibration_error([ALL, HEM, HEM, HEM, ALL], [0.9, 0.1, 0.55, 0.8, 0.2])
    )
    assert ws.cell(row=_row_of(ws, "Accuracy"), column=2).number_format == "0.0%"
    notes = " ".join(str(r[0]) for r in _rows(ws) if r[0])
    assert "counted by the decision threshold" in notes and "(1 cell)" in notes


def test_undefined_metrics_are_na_and_no_truth_means_no_sheet(
    run: RunResult, tmp_path: Path
) -> None:
    for cell in run.cells:
        cell.truth = HEM if cell.truth else None  # no true ALL: recall undefined
    out = tmp_path / "r.xlsx"
    write_excel(run, out, images=False)
    rows = _by_first(_load(out)["Metrics"])
    assert rows["Recall (sensitivity)"][1] == "n/a"
    assert rows["ROC AUC"][1] == "n/a"
    assert rows["Specificity"][1] == pytest.approx(2 / 5)  # b and e called HEM

    for cell in run.cells:
        cell.truth = None
    write_excel(run, out, images=False)
    assert "Metrics" not in _load(out).sheetnames


# ------------------------------------------------------------------------------ Provenance


def test_provenance(run: RunResult, tmp_path: Path) -> None:
    out = tmp_path / "r.xlsx"
    write_excel(run, out, images=False)
    rows = _by_first(_load(out)["Provenance"])
    assert rows["Model SHA-256"][1] == samples.SHA
    assert rows["Model name"][1] == "cnmc-mobilenet"
    assert rows["Model version"][1] == "2.1"
    assert rows["App version"][1] == "0.1.0"
    assert rows["Backbone"][1] == "MobileNetV3Small"
    assert rows["Input size (px)"][1] == 224
    assert rows["Decision threshold (P(ALL))"][1] == 0.5
    assert rows["Uncertainty band (P(ALL))"][1].startswith("0.400 – 0.600")
    assert rows["TensorFlow version"][1] == "2.19.0"
    assert rows["Keras version"][1] == "3.10.0"
    assert rows["Device"][1] == "CPU (8 logical cores)"
    assert rows["Input 1"][1] == run.info.inputs[0]
    assert rows["Started"][1].startswith("2024-05-06 09:30:00")
    assert rows["Duration"][1].startswith("0:01:15")
    assert rows["Cancelled"][1] == "no"
    assert (rows["Total inputs"][1], rows["Cells"][1], rows["Errors"][1]) == (8, 7, 1)
    assert rows["model file"][1] == "/models/cnmc.keras"
    assert "Demo model" not in rows


# ------------------------------------------------------------------------------ printing

PRINT_SHEETS = [
    "Summary",
    "Cells",
    "Fields",
    "Field cells",
    "Errors",
    "Metrics",
    "Audit trail",
    "Provenance",
]


@pytest.fixture
def print_book(tmp_path: Path) -> tuple[openpyxl.Workbook, Path]:
    """Every sheet, pictures at the default size, a review, an ugly folder and a model
    named "R&D ..."."""
    run = samples.print_run(tmp_path / "images", cells=8)
    state = ReviewState(threshold=run.info.threshold)
    state.set_label(run.cells[3], HEM, "Dr. Ånne & Co")
    state.sign_off(run.cells[0].sample, "Dr. Bo")
    out = tmp_path / "print.xlsx"
    write_excel(run, out, review=state)
    return _load(out), out


def _emu_to_cm(emu: int) -> float:
    return emu / 360000


def test_every_sheet_prints_landscape_one_page_wide_titled_with_header_and_footer(
    print_book: tuple[openpyxl.Workbook, Path],
) -> None:
    wb, _ = print_book
    assert wb.sheetnames == PRINT_SHEETS
    for ws in wb.worksheets:
        name = ws.title
        assert ws.page_setup.orientation == "landscape", name
        assert int(ws.page_setup.paperSize) == int(ws.PAPERSIZE_A4), name  # A4
        assert ws.sheet_properties.pageSetUpPr.fitToPage, name
        assert (ws.page_setup.fitToWidth, ws.page_setup.fitToHeight) == (1, 0), name
        assert ws.page_margins.left <= 0.5 and ws.page_margins.right <= 0.5, name
        # Row 1: the sheet and the run, in bold.
        title = ws["A1"].value
        assert ws["A1"].font.b, name
        assert title.startswith("LeukGUI report" if name == "Summary" else name), title
        assert "run of 2024-05-06 09:30" in title and f"model {samples.UGLY_MODEL} v3" in title
        # The table header repeats on every printed page.
        assert ws.print_title_rows, name
        first, last = (int(r.strip("$")) for r in ws.print_title_rows.split(":"))
        assert first == last, name
        if name != "Metrics":  # Metrics repeats its title row above several tables
            assert ws.cell(row=first, column=1).fill.fgColor.rgb.endswith("D9E1F2"), name
            assert ws.cell(row=first, column=2).font.b, name
        # Header: the model (its '&' escaped as '&&') and the run; footer: page n of m.
        header = ws.oddHeader
        assert "R&&D cnmc-efficientnet v3" in header.left.text, name
        assert "0123456789ab" in header.left.text  # the short SHA-256
        assert "2024-05-06 09:30:00" in header.right.text
        footer = ws.oddFooter
        assert "&P" in footer.center.text and "&N" in footer.center.text, name
        assert footer.left.text == "&A"  # the sheet's name


def test_header_escapes_ampersands_in_the_saved_file(
    print_book: tuple[openpyxl.Workbook, Path],
) -> None:
    _, out = print_book
    with zipfile.ZipFile(out) as z:
        sheets = [n for n in z.namelist() if n.startswith("xl/worksheets/sheet")]
        assert len(sheets) == len(PRINT_SHEETS)
        for name in sheets:
            xml = z.read(name).decode("utf-8")
            header = xml[xml.index("<oddHeader>") : xml.index("</oddHeader>")]
            assert "R&amp;&amp;D cnmc" in header  # '&D' alone would print the date
            assert "R&amp;D" not in header.replace("&amp;&amp;", "")
            assert "Page &amp;P of &amp;N" in xml


def test_sheets_stay_near_full_size_when_fitted_to_the_page_width(
    print_book: tuple[openpyxl.Workbook, Path],
) -> None:
    wb, _ = print_book
    scales = {ws.title: printed_scale(ws) for ws in wb.worksheets}
    assert min(scales.values()) >= 0.6, scales
    assert scales["Provenance"] == 1.0 and scales["Errors"] == 1.0, scales


def test_thumbnails_print_at_least_1_5_cm(
    print_book: tuple[openpyxl.Workbook, Path], run: RunResult, tmp_path: Path
) -> None:
    wb, _ = print_book
    plain = tmp_path / "plain.xlsx"
    write_excel(run, plain)
    for ws in (wb["Cells"], _load(plain)["Cells"]):  # with and without review columns
        assert ws._images
        scale = printed_scale(ws)
        for img in ws._images:
            shown = img.anchor.to.colOff - img.anchor._from.colOff
            assert shown >= pixels_to_EMU(90)  # on screen
            assert _emu_to_cm(shown) * scale >= 1.5, (ws.title, scale)  # on paper


def test_provenance_wraps_long_values_in_a_bounded_column(
    print_book: tuple[openpyxl.Workbook, Path],
) -> None:
    ws = print_book[0]["Provenance"]
    assert ws["A2"].value == "Item" and ws.freeze_panes == "A3"
    width = ws.column_dimensions["B"].width
    assert 30 <= width <= report.PROVENANCE_VALUE_WIDTH
    assert ws.column_dimensions["A"].width <= 40
    row = _row_of(ws, "Analysis and detector settings")
    value = ws.cell(row=row, column=2)
    assert len(value.value) > 3 * width  # really long: it must wrap
    assert value.alignment.wrap_text and value.alignment.vertical == "top"
    lines = math.ceil(len(value.value) / (width * 1.1))
    assert ws.row_dimensions[row].height >= 15 * lines  # tall enough to show it all
    sha = ws.cell(row=_row_of(ws, "Model SHA-256"), column=2)
    assert sha.value == samples.SHA and sha.alignment.wrap_text


def test_long_summary_and_metrics_notes_wrap_inside_the_table_width(
    print_book: tuple[openpyxl.Workbook, Path],
) -> None:
    wb, _ = print_book
    for name in ("Summary", "Metrics"):
        ws = wb[name]
        merged = [r for r in ws.merged_cells.ranges if r.min_col == 1 and r.max_col > 1]
        assert merged, name
        for cells in merged:
            assert ws.cell(row=cells.min_row, column=1).alignment.wrap_text, name
    breaks = [b.id for b in wb["Metrics"].row_breaks.brk]
    assert breaks == [_row_of(wb["Metrics"], "Reviewed labels vs truth") - 1]


# ------------------------------------------------------------------------------ formula safety

HOSTILE = samples.HOSTILE_NAMES


@pytest.fixture
def hostile_run(tmp_path: Path) -> RunResult:
    return samples.hostile_run(tmp_path)


def test_formula_like_text_stays_text_in_xlsx(hostile_run: RunResult, tmp_path: Path) -> None:
    out = tmp_path / "r.xlsx"
    write_excel(hostile_run, out, images=True)
    wb = _load(out)
    cells = wb["Cells"]
    for row, name in enumerate(HOSTILE, 3):
        for col, value in ((2, name), (3, "=1+1"), (9, str(hostile_run.cells[row - 3].path))):
            cell = cells.cell(row=row, column=col)
            assert cell.value == value
            assert cell.data_type == "s"
    err = wb["Errors"]
    assert err["A3"].value == "=2.png" and err["A3"].data_type == "s"
    assert err["D3"].value == "=cmd|' /C calc'!A0" and err["D3"].data_type == "s"
    summary = _by_first(wb["Summary"])
    assert "=1+1" in summary
    prov = _by_first(wb["Provenance"])
    assert prov["=key"][1] == "@value"
    with zipfile.ZipFile(out) as z:  # no formula element anywhere in the workbook
        for name in z.namelist():
            if name.startswith("xl/worksheets/"):
                assert b"<f>" not in z.read(name) and b"<f " not in z.read(name)


# ------------------------------------------------------------------------------ atomic writes


def _previous(run: RunResult, tmp_path: Path, name: str) -> tuple[Path, bytes]:
    folder = tmp_path / "out"
    folder.mkdir(exist_ok=True)
    path = folder / name
    if name.endswith(".csv"):
        write_csv(run, path)
    else:
        write_excel(run, path, images=False)
    return path, path.read_bytes()


def _export(run: RunResult, path: Path) -> None:
    if path.suffix == ".csv":
        write_csv(run, path)
    else:
        write_excel(run, path, images=False)


@pytest.mark.parametrize("name", ["report.xlsx", "cells.csv"])
def test_read_only_folder_keeps_previous_report(
    run: RunResult, tmp_path: Path, monkeypatch, name: str
) -> None:
    path, before = _previous(run, tmp_path, name)

    def refuse(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(atomic.tempfile, "mkstemp", refuse)
    run.info.model_name = "changed"
    with pytest.raises(ReportWriteError) as info:
        _export(run, path)
    message = str(info.value)
    assert message.startswith(f"cannot write report to {path}: ")
    assert "read-only" in message
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == [name]


def test_read_only_file_system_message(run: RunResult, tmp_path: Path, monkeypatch) -> None:
    def refuse(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(atomic.tempfile, "mkstemp", refuse)
    with pytest.raises(ReportWriteError, match="folder is read-only"):
        write_excel(run, tmp_path / "r.xlsx", images=False)


@pytest.mark.parametrize("name", ["report.xlsx", "cells.csv"])
def test_locked_file_keeps_previous_report(
    run: RunResult, tmp_path: Path, monkeypatch, name: str
) -> None:
    path, before = _previous(run, tmp_path, name)

    def locked(src, dst):  # what Windows does while Excel has the file open
        raise PermissionError(errno.EACCES, "The process cannot access the file")

    monkeypatch.setattr(atomic.os, "replace", locked)
    run.info.model_name = "changed"
    with pytest.raises(ReportWriteError) as info:
        _export(run, path)
    assert "open in another program (close it in Excel and try again)" in str(info.value)
    assert str(path) in str(info.value)
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == [name]  # temp file removed


@pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() == 0,
    reason="needs a non-root POSIX user: root ignores folder permissions (chmod cannot block "
    "writes), so this case is covered by the monkeypatched tests above",
)
def test_real_read_only_folder(run: RunResult, tmp_path: Path) -> None:
    path, before = _previous(run, tmp_path, "report.xlsx")
    path.parent.chmod(0o555)
    try:
        with pytest.raises(ReportWriteError, match="read-only"):
            write_excel(run, path, images=False)
        assert path.read_bytes() == before
    finally:
        path.parent.chmod(0o755)


def test_atomic_write_failures_clean_up(tmp_path: Path) -> None:
    target = tmp_path / "x.txt"
    target.write_text("old")

    def broken(tmp: Path) -> None:
        tmp.write_text("partial")
        raise ValueError("disk exploded")

    with pytest.raises(ReportWriteError, match="disk exploded"):
        atomic_write(target, broken)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["x.txt"]

    def interrupted(tmp: Path) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, interrupted)
    assert [p.name for p in tmp_path.iterdir()] == ["x.txt"]

    seen: list[str] = []
    atomic_write(target, lambda tmp: (seen.append(tmp.suffix), tmp.write_text("new")))
    assert seen == [".txt"] and target.read_text() == "new"


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX permission bits")
def test_atomic_write_gives_normal_permissions(tmp_path: Path) -> None:
    target = tmp_path / "fresh.csv"
    atomic_write(target, lambda tmp: tmp.write_text("x"))
    mask = os.umask(0)
    os.umask(mask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~mask  # not mkstemp's private 0600


def test_no_temp_files_left_after_success(run: RunResult, tmp_path: Path) -> None:
    folder = tmp_path / "out"
    folder.mkdir()
    write_excel(run, folder / "r.xlsx")
    write_csv(run, folder / "r.csv")
    assert sorted(p.name for p in folder.iterdir()) == ["r.csv", "r.xlsx"]
    assert not list(Path(tempfile.gettempdir()).glob(".r.*.xlsx"))


# ------------------------------------------------------------------------------ overlay


def test_heatmap_aligns_with_unpadded_image() -> None:
    centre = np.zeros((7, 7), np.float32)
    centre[3, 3] = 1.0
    for width, height in [(100, 40), (40, 100), (99, 51), (64, 64)]:
        heat = heatmap_to_image(centre, width, height)
        assert heat.shape == (height, width) and heat.dtype == np.float32
        y, x = np.unravel_index(int(heat.argmax()), heat.shape)
        assert abs(y - height / 2) <= 2 and abs(x - width / 2) <= 2
        assert heat.min() >= 0.0 and heat.max() <= 1.0
    corner = np.zeros((7, 7), np.float32)
    corner[0, 0] = 1.0  # lies in the padding of a wide image: must not show on it
    assert heatmap_to_image(corner, 100, 40).max() < 0.05
    assert heatmap_to_image(corner, 64, 64)[0, 0] == pytest.approx(1.0)
    with pytest.raises(ValueError):
        heatmap_to_image(np.zeros((0, 0)), 10, 10)


def test_colorize_and_overlay() -> None:
    ramp = np.array([[0.0, 1.0]], np.float32)
    rgb = colorize(ramp)
    assert rgb.dtype == np.uint8 and rgb.shape == (1, 2, 3)
    assert rgb[0, 0, 2] > rgb[0, 0, 0]  # cold is blue
    assert rgb[0, 1, 0] > rgb[0, 1, 2]  # hot is red

    image = np.full((30, 50, 3), 128, np.uint8)
    cold = overlay(image, np.zeros((7, 7), np.float32))
    hot = overlay(image, np.ones((7, 7), np.float32))
    assert cold.shape == image.shape and cold.dtype == np.uint8
    cold_diff = np.abs(cold.astype(int) - 128).max()
    hot_diff = np.abs(hot.astype(int) - 128).max()
    assert cold_diff <= math.ceil(0.45 * 0.2 * 255)  # cold areas stay mostly original
    assert hot_diff > 2 * cold_diff
    with pytest.raises(ValueError):
        overlay(image.astype(np.float32), np.zeros((7, 7)))


def test_empty_unfinished_run(tmp_path: Path) -> None:
    run = RunResult(samples.info([], finished=None, started=datetime(2024, 1, 1, 8, 0)), [])
    out = tmp_path / "r.xlsx"
    write_excel(run, out)
    wb = _load(out)
    assert wb.sheetnames == ["Summary", "Cells", "Errors", "Provenance"]
    overall = _by_first(wb["Summary"])["All samples"]
    assert overall[1:6] == (0, 0, 0, 0, "n/a")  # no decided cell: ALL % undefined, not 0%
    prov = _by_first(wb["Provenance"])
    assert prov["Finished"][1] == "(not finished)"
    assert prov["Inputs"][1] == "(none recorded)"
    write_csv(run, tmp_path / "r.csv")
    assert write_heatmaps(run, tmp_path / "h") == []
