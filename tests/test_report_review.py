"""Reports with a review attached: reviewed columns, Summary on final labels with sign-offs,
the Audit trail sheet, reviewed-vs-truth metrics, formula safety and the CSV columns."""

from __future__ import annotations

import csv
import itertools
import zipfile
from datetime import datetime, timedelta, timezone
from pathlib import Path

import cv2
import numpy as np
import openpyxl
import pytest

from leukgui.core.exports import FIELD_CSV_COLUMNS, write_csv
from leukgui.core.metrics import binary_metrics, sample_summary, wilson_interval
from leukgui.core.report import write_excel
from leukgui.core.results import (
    ALL,
    HEM,
    UNCERTAIN,
    UNREADABLE,
    CellResult,
    FileError,
    RunInfo,
    RunResult,
)
from leukgui.core.review import UNCLASSIFIABLE, ReviewState

T0 = datetime(2024, 5, 6, 9, 30, 0, tzinfo=timezone.utc)

CELL_HEADERS = (
    "#",
    "File",
    "Sample",
    "Subject",
    "Model label",
    "Reviewed label",
    "Reviewer",
    "Reviewed at (UTC)",
    "P(ALL)",
    "Truth",
    "Model correct?",
    "Full path",
)
SUMMARY_HEADERS = (
    "Sample",
    "Cells",
    "ALL",
    "HEM",
    "UNCERTAIN",
    "UNCLASSIFIABLE",
    "Reviewed",
    "ALL %",
    "95% CI low",
    "95% CI high",
    "Errors",
    "Signed off by",
    "Signed off at (UTC)",
)


def _clock():
    ticks = itertools.count()
    return lambda: T0 + timedelta(minutes=next(ticks))


def _stamp(minutes: int) -> str:
    """How the report prints the time of the clock's `minutes`-th tick."""
    return (T0 + timedelta(minutes=minutes)).strftime("%Y-%m-%d %H:%M:%S")


def _image(path: Path, seed: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = np.random.default_rng(seed).integers(0, 256, (30, 40, 3), dtype=np.uint8)
    assert cv2.imwrite(str(path), img)
    return path


def _cell(path: Path, sample: str, p: float, label: str, truth: str | None = None) -> CellResult:
    return CellResult(path, sample, p, label, np.zeros((28, 28), np.float32), 40, 30, truth, "P1")


@pytest.fixture
def run(tmp_path: Path) -> RunResult:
    root = tmp_path / "images"
    outcomes = [
        _cell(_image(root / "S1" / "a.png", 1), "S1", 0.9, ALL, ALL),
        _cell(_image(root / "S1" / "b.png", 2), "S1", 0.1, HEM, HEM),
        _cell(_image(root / "S1" / "c.png", 3), "S1", 0.55, UNCERTAIN, HEM),
        _cell(_image(root / "S1" / "d.png", 4), "S1", 0.8, ALL, HEM),
        _cell(_image(root / "S2" / "e.png", 5), "S2", 0.2, HEM, ALL),
        _cell(_image(root / "S2" / "f.png", 6), "S2", 0.7, ALL),
        FileError(root / "S2" / "bad.png", "S2", "truncated PNG", UNREADABLE),
    ]
    info = RunInfo(
        app_version="0.1.0",
        model_name="cnmc",
        model_version="2.1",
        model_sha256="ab" * 32,
        backbone="EfficientNetB0",
        input_size=224,
        threshold=0.5,
        uncertainty_band=(0.4, 0.6),
        demo=False,
        inputs=[str(root)],
        started=T0,
        finished=T0 + timedelta(seconds=75),
    )
    return RunResult(info, outcomes)


@pytest.fixture
def review(run: RunResult) -> ReviewState:
    """Ticks 0-6: c, d relabelled; e unclassifiable; a confirmed; f labelled then undone;
    S1 signed off by Dr Bo."""
    a, b, c, d, e, f = run.cells
    state = ReviewState(threshold=run.info.threshold, clock=_clock())
    state.set_label(c, HEM, "Ann")  # 0
    state.set_label(d, HEM, "Ann")  # 1
    state.set_label(e, UNCLASSIFIABLE, "Ann")  # 2
    state.confirm(a, "Cy")  # 3
    state.set_label(f, HEM, "Ann")  # 4
    state.undo(f, "Ann")  # 5
    state.sign_off("S1", "Dr Bo")  # 6
    return state


def _rows(ws) -> list[tuple]:
    return [tuple(r) for r in ws.iter_rows(values_only=True)]


def _text_of(ws) -> str:
    return " ".join(str(v) for r in _rows(ws) for v in r if isinstance(v, str))


def _write(run: RunResult, review: ReviewState | None, tmp_path: Path, **kw) -> openpyxl.Workbook:
    out = tmp_path / "r.xlsx"
    write_excel(run, out, images=kw.pop("images", False), review=review, **kw)
    return openpyxl.load_workbook(out)


# ------------------------------------------------------------------------------ Cells


def test_cells_sheet_has_reviewed_columns_beside_the_model_label(
    run: RunResult, review: ReviewState, tmp_path: Path
) -> None:
    wb = _write(run, review, tmp_path)
    assert wb.sheetnames == ["Summary", "Cells", "Errors", "Metrics", "Audit trail", "Provenance"]
    ws = wb["Cells"]
    rows = _rows(ws)[2:]  # below the title and the "not included" note
    assert rows[0][:12] == CELL_HEADERS
    body = [r[:12] for r in rows[1:]]
    assert [r[1] for r in body] == [
        "S1/a.png",
        "S1/b.png",
        "S1/c.png",
        "S1/d.png",
        "S2/e.png",
        "S2/f.png",
    ]
    assert [r[4] for r in body] == [ALL, HEM, UNCERTAIN, ALL, HEM, ALL]  # the model's, as is
    assert [r[5] for r in body] == [ALL, None, HEM, HEM, UNCLASSIFIABLE, None]
    assert [r[6] for r in body] == ["Cy", None, "Ann", "Ann", "Ann", None]
    assert [r[7] for r in body] == [_stamp(3), None, _stamp(0), _stamp(1), _stamp(2), None]
    assert [r[8] for r in body] == pytest.approx([0.9, 0.1, 0.55, 0.8, 0.2, 0.7])
    assert [r[9] for r in body] == [ALL, HEM, HEM, HEM, ALL, None]
    # "Model correct?" still judges the model, not the reviewer.
    assert [r[10] for r in body] == ["yes", "yes", "no (by threshold)", "no", "no", None]
    assert body[0][11] == str(run.cells[0].path)
    assert ws["I4"].number_format == "0.000"
    fills = {ws.cell(row=r, column=6).fill.fgColor.rgb for r in (4, 6, 8)}
    assert len(fills) == 3  # ALL, HEM and UNCLASSIFIABLE are coloured differently
    assert ws.auto_filter.ref == "A3:L9"
    assert ws.freeze_panes == "C4"


def test_images_move_right_of_the_review_columns(
    run: RunResult, review: ReviewState, tmp_path: Path
) -> None:
    ws = _write(run, review, tmp_path, images=True, thumb_px=32)["Cells"]
    assert (ws["M2"].value, ws["N2"].value) == ("Thumbnail", "Heatmap")
    assert len(ws._images) == 2 * 6
    assert {img.anchor._from.col for img in ws._images} == {12, 13}  # 0-based M and N


# ------------------------------------------------------------------------------ Audit trail


def test_audit_trail_sheet_rows_equal_the_audit_list(
    run: RunResult, review: ReviewState, tmp_path: Path
) -> None:
    ws = _write(run, review, tmp_path)["Audit trail"]
    rows = _rows(ws)[1:]  # below the title row
    assert rows[0] == (
        "#",
        "Time (UTC)",
        "Reviewer",
        "Action",
        "Sample",
        "File",
        "Model label",
        "Before",
        "After",
        "Full path",
    )
    names = {str(c.path): f"{c.sample}/{c.path.name}" for c in run.cells}
    expected = [
        (
            i,
            _stamp(i - 1),
            e.reviewer,
            e.action,
            e.sample,
            names.get(e.path),
            e.model_label or None,
            e.before,
            e.after,
            e.path or None,
        )
        for i, e in enumerate(review.audit, 1)
    ]
    assert rows[1:] == expected
    assert [r[3] for r in rows[1:]] == [
        "label",
        "label",
        "label",
        "confirm",
        "label",
        "undo",
        "sign-off",
    ]
    assert rows[6][7:9] == (HEM, None)  # the undo: HEM before, nothing after
    assert rows[7][1:6] == (_stamp(6), "Dr Bo", "sign-off", "S1", None)
    assert ws.auto_filter.ref == "A2:J9"


def test_empty_review_says_so_and_keeps_the_model_numbers(run: RunResult, tmp_path: Path) -> None:
    wb = _write(run, ReviewState(threshold=0.5), tmp_path)
    assert _rows(wb["Audit trail"])[2][0] == "No review actions recorded"
    assert "Reviewed labels vs truth" not in _text_of(wb["Metrics"])
    rows = _rows(wb["Summary"])
    table = rows[rows.index(SUMMARY_HEADERS) + 1 :][:3]
    plain = _rows(_write(run, None, tmp_path)["Summary"])
    plain_table = plain[[r[0] for r in plain].index("Sample") + 1 :][:3]
    for got, want in zip(table, plain_table, strict=True):  # same counts, ALL %, CI, errors
        assert got[:5] == want[:5] and got[7:11] == want[5:9]
        assert got[5:7] == (0, 0)
    assert "0 of 6 cells reviewed; 0 of 2 samples signed off" in _text_of(wb["Summary"])


# ------------------------------------------------------------------------------ Summary


def test_summary_uses_final_labels_and_shows_sign_offs(
    run: RunResult, review: ReviewState, tmp_path: Path
) -> None:
    ws = _write(run, review, tmp_path)["Summary"]
    rows = _rows(ws)
    header = rows.index(SUMMARY_HEADERS)
    s1, s2, overall = rows[header + 1 : header + 4]
    # S1 final: a ALL (confirmed), b HEM (model), c HEM, d HEM -> ALL 1 of 4 decided.
    assert s1[:7] == ("S1", 4, 1, 3, 0, 0, 3)
    assert s1[7] == pytest.approx(1 / 4)
    assert s1[8:10] == pytest.approx(wilson_interval(1, 4))
    assert s1[10:13] == (0, "Dr Bo", _stamp(6))
    # S2 final: e UNCLASSIFIABLE (excluded), f ALL (review undone) -> 100 %.
    assert s2[:7] == ("S2", 2, 1, 0, 0, 1, 1)
    assert s2[7] == pytest.approx(1.0) and s2[10:12] == (1, "not signed off")
    assert overall[:7] == ("All samples", 6, 2, 3, 0, 1, 4)
    assert overall[7] == pytest.approx(2 / 5)
    assert overall[8:10] == pytest.approx(wilson_interval(2, 5))
    assert overall[11] == "1 of 2 samples"
    assert ws.cell(row=header + 4, column=1).font.b
    summary = sample_summary(run, review)
    assert [r[1:7] for r in (s1, s2, overall)] == [
        (s.cells, s.n_all, s.n_hem, s.n_uncertain, s.n_unclassifiable, s.reviewed) for s in summary
    ]
    text = _text_of(ws)
    assert "Reviewed labels override the model's labels" in text
    assert "4 of 6 cells reviewed; 1 of 2 samples signed off" in text
    assert "UNCLASSIFIABLE" in text and "Audit trail" in text
    assert "Reviewed by:" in text and "Signature:" in text


# ------------------------------------------------------------------------------ Metrics


def test_metrics_add_reviewed_labels_vs_truth(
    run: RunResult, review: ReviewState, tmp_path: Path
) -> None:
    ws = _write(run, review, tmp_path)["Metrics"]
    rows = _rows(ws)
    firsts = [r[0] for r in rows]
    start = firsts.index("Reviewed labels vs truth")
    model = {r[0]: r for r in rows[:start] if r[0] is not None}
    mine = {r[0]: r for r in rows[start:] if r[0] is not None}
    # The model's block is unchanged: c (0.55) counts as ALL, d ALL, e HEM.
    assert model["Truth ALL"][1:4] == (1, 1, 2)
    assert model["Truth HEM"][1:4] == (2, 1, 3)
    # Final labels: a ALL, b HEM, c HEM, d HEM; e (UNCLASSIFIABLE) excluded; f has no truth.
    expected = binary_metrics([ALL, HEM, HEM, HEM], [ALL, HEM, HEM, HEM])
    assert mine["Cells with truth in this block"][1] == 4
    assert mine["  of them with a reviewed label"][1] == 3
    assert mine["Reviewed UNCLASSIFIABLE (excluded)"][1] == 1
    assert mine["Truth ALL"][1:4] == (1, 0, 1)
    assert mine["Truth HEM"][1:4] == (0, 3, 3)
    assert mine["Accuracy"][1] == pytest.approx(expected.accuracy) == 1.0
    assert mine["Specificity"][1] == pytest.approx(1.0)
    assert "ROC AUC" not in mine  # P(ALL) does not change with a review
    assert rows[firsts.index("Truth ALL", start) - 1][1:3] == ("Final ALL", "Final HEM")
    assert "excluded" in str(rows[start + 1][0])


# ------------------------------------------------------------------------------ formula safety

HOSTILE = ['=HYPERLINK("http://x","y")', "@SUM(A1)", "+1", "-2"]


def test_formula_looking_reviewer_names_stay_text(run: RunResult, tmp_path: Path) -> None:
    state = ReviewState(threshold=0.5, clock=_clock())
    for cell, name in zip(run.cells, HOSTILE, strict=False):
        state.set_label(cell, HEM if cell.label != HEM else ALL, name)
    state.sign_off("S1", HOSTILE[0])
    out = tmp_path / "r.xlsx"
    write_excel(run, out, images=False, review=state)
    wb = openpyxl.load_workbook(out)
    cells = wb["Cells"]
    for row, name in enumerate(HOSTILE, 4):
        assert cells.cell(row=row, column=7).value == name
        assert cells.cell(row=row, column=7).data_type == "s"
    audit = wb["Audit trail"]
    assert [audit.cell(row=r, column=3).value for r in range(3, 8)] == HOSTILE + [HOSTILE[0]]
    assert all(audit.cell(row=r, column=3).data_type == "s" for r in range(3, 8))
    summary = {r[0]: r for r in _rows(wb["Summary"])}
    assert summary["S1"][11] == HOSTILE[0]
    with zipfile.ZipFile(out) as z:
        for name in z.namelist():
            if name.startswith("xl/worksheets/"):
                assert b"<f>" not in z.read(name) and b"<f " not in z.read(name)

    csv_out = tmp_path / "r.csv"
    write_csv(run, csv_out, review=state)
    body = list(csv.reader(csv_out.read_text(encoding="utf-8-sig").splitlines()))[1:]
    assert [r[6] for r in body[:4]] == ["'" + n for n in HOSTILE]


# ------------------------------------------------------------------------------ CSV


def test_csv_gets_review_columns(run: RunResult, review: ReviewState, tmp_path: Path) -> None:
    out = tmp_path / "r.csv"
    write_csv(run, out, review=review)
    rows = list(csv.reader(out.read_text(encoding="utf-8-sig").splitlines()))
    assert rows[0] == [
        "file",
        "sample",
        "subject",
        "status",
        "label",
        "reviewed_label",
        "reviewer",
        "reviewed_at",
        "p_all",
        "truth",
        "kind",
        "reason",
        "path",
        "path_exact",
        "sha256",
        "note",
        *FIELD_CSV_COLUMNS,  # a smear-field cell's number, box, size and scale
    ]
    body = rows[1:]
    assert len(body) == len(run.outcomes)
    by_file = {r[0]: r for r in body}
    assert by_file["S1/a.png"][4:9] == [
        ALL,
        ALL,
        "Cy",
        review.review_of(run.cells[0]).time,
        "0.900000",
    ]
    assert by_file["S1/a.png"][7] == "2024-05-06T09:33:00+00:00"  # ISO 8601 UTC
    assert by_file["S1/c.png"][4:7] == [UNCERTAIN, HEM, "Ann"]
    assert by_file["S2/e.png"][5] == UNCLASSIFIABLE
    assert by_file["S2/f.png"][5:8] == ["", "", ""]  # undone: not reviewed
    assert by_file["S2/bad.png"][3:8] == ["error", "", "", "", ""]
    assert by_file["S2/bad.png"][10:12] == ["unreadable", "truncated PNG"]


def test_without_review_the_csv_is_unchanged(run: RunResult, tmp_path: Path) -> None:
    write_csv(run, tmp_path / "plain.csv")
    write_csv(run, tmp_path / "none.csv", review=None)
    plain = (tmp_path / "plain.csv").read_bytes()
    assert plain == (tmp_path / "none.csv").read_bytes()
    header = plain.decode("utf-8-sig").splitlines()[0]
    assert header == (
        "file,sample,subject,status,label,p_all,truth,kind,reason,path,path_exact,sha256,note,"
        + ",".join(FIELD_CSV_COLUMNS)
    )
