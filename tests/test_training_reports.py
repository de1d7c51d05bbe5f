"""Training/evaluation outputs: log CSV, curves PNG, Excel reports, comparison table.

Everything is built by hand from `evaluate_predictions`, so these tests need no TensorFlow and
check real values: each figure in a file must equal the figure of the Evaluation it came from.
"""

from __future__ import annotations

import csv
import errno
import math
from pathlib import Path

import openpyxl
import pytest
from openpyxl import Workbook
from PIL import Image

from leukgui.core.atomic import ReportWriteError
from leukgui.core.metrics import call_label, wilson_interval
from leukgui.core.results import ALL, DEMO_NOTICE, HEM, UNCERTAIN
from training import reports
from training.history import LOG_COLUMNS, EpochLog, TrainingRun
from training.reports import (
    plot_curves,
    write_comparison,
    write_evaluation_report,
    write_log_csv,
    write_training_report,
)
from training.scoring import (
    BAND_RULE,
    THRESHOLD_RULE,
    Evaluation,
    Predictions,
    evaluate_predictions,
)

THRESHOLD = 0.5
BAND = (0.4, 0.6)
NAN = math.nan

# (subject, truth, P(ALL) of each cell): right and wrong calls, uncertain cells, a subject
# whose majority call is wrong (H2), and a subject id a spreadsheet would run as a formula.
TEST_CELLS = [
    ("P01", ALL, [0.95, 0.9, 0.55, 0.3]),
    ("P02", ALL, [0.8, 0.7, 0.45]),
    ("H01", HEM, [0.1, 0.2, 0.05, 0.62]),
    ("H02", HEM, [0.7, 0.8, 0.35]),
    ("=1+1", HEM, [0.15, 0.25]),
]
VALIDATION_CELLS = [
    ("V1", ALL, [0.9, 0.8, 0.6]),
    ("V2", HEM, [0.1, 0.3, 0.52]),
]


def _predictions(cells: list[tuple[str, str, list[float]]], folder: str) -> Predictions:
    paths, subjects, truth, p_all = [], [], [], []
    for subject, label, scores in cells:
        for i, p in enumerate(scores):
            paths.append(f"/data/{folder}/{subject}/cell_{i}.bmp")
            subjects.append(subject)
            truth.append(label)
            p_all.append(p)
    return Predictions(paths, subjects, truth, p_all)


def _evaluation(cells: list[tuple[str, str, list[float]]], part: str) -> Evaluation:
    return evaluate_predictions(_predictions(cells, part), THRESHOLD, BAND, part)


def _history() -> list[EpochLog]:
    rows = [
        ("head", 1, 0.69, 0.55, 0.70, 0.5, 0.5, 0.61, 1e-3, 12.5, 80.0),
        ("head", 2, 0.52, 0.71, 0.58, 0.7, 0.68, NAN, 1e-3, 11.25, 88.8),
        ("fine-tune", 3, 0.41, 0.80, 0.47, 0.8, 0.79, 0.88, 1e-4, 20.0, 50.0),
        ("fine-tune", 4, 0.33, 0.86, 0.45, 0.82, 0.81, 0.9, 5e-5, 19.5, 51.3),
    ]
    return [EpochLog(*r) for r in rows]


def _split(test_subjects: list[str] | None = None) -> dict:
    return {
        "method": "grouped-stratified",
        "seed": 42,
        "subjects": {
            "train": ["T1", "T2", "T3"],
            "validation": ["V1", "V2"],
            "test": test_subjects if test_subjects is not None else [s for s, *_ in TEST_CELLS],
        },
    }


def _data() -> dict:
    def part(cells: int, subjects: int, all_cells: int, all_subjects: int) -> dict:
        return {
            "cells": cells,
            "subjects": subjects,
            "cells_per_class": {ALL: all_cells, HEM: cells - all_cells},
            "subjects_per_class": {ALL: all_subjects, HEM: subjects - all_subjects},
        }

    return {
        "train": part(30, 3, 20, 2),
        "validation": part(6, 2, 3, 1),
        "test": part(16, 5, 7, 2),
    }


def _run(**kw: object) -> TrainingRun:
    values: dict = dict(
        backbone="efficientnetb0",
        name="cnmc-effnet",
        version="1.2",
        settings={
            "epochs": 4,
            "learning_rate": 1e-4,
            "augment": True,
            "class_weights": {ALL: 1.0, HEM: 2.0},
            "note": "=cmd|' /C calc'!A0",
        },
        data=_data(),
        split=_split(),
        history=_history(),
        validation=_evaluation(VALIDATION_CELLS, "validation"),
        test=_evaluation(TEST_CELLS, "test"),
        threshold_rule=THRESHOLD_RULE,
        band_rule=BAND_RULE.format(error=0.02, cap=0.2),
        parameters=4_049_571,
        trainable_parameters=3_500_000,
        training_seconds=125.0,
        train_images_per_second=210.5,
        inference_images_per_second=900.25,
        best_epoch=3,
        stopped_because="early stopping",
        bundle_path=Path("/models/cnmc-effnet-1.2.leukmodel"),
        unreadable=[("/data/broken.bmp", "truncated file"), ("=evil.bmp", "not an image")],
        device="CPU (8 cores)",
    )
    values.update(kw)
    return TrainingRun(**values)


def _rows(ws) -> list[tuple]:
    return [tuple(r) for r in ws.iter_rows(values_only=True)]


def _by_first(ws) -> dict[object, tuple]:
    """Rows keyed by their first cell (first occurrence wins)."""
    out: dict[object, tuple] = {}
    for r in _rows(ws):
        if r and r[0] is not None and r[0] not in out:
            out[r[0]] = r
    return out


def _texts(ws) -> list[str]:
    return [str(v) for r in _rows(ws) for v in r if v is not None]


def _block(ws, title_prefix: str) -> dict[object, tuple]:
    """Rows of one evaluation block on the Metrics sheet, keyed by their first cell."""
    rows = _rows(ws)
    start = next(i for i, r in enumerate(rows) if str(r[0]).startswith(title_prefix))
    out: dict[object, tuple] = {}
    for r in rows[start + 1 :]:
        if r[0] is not None and str(r[0]).startswith(("Validation", "Test", "Evaluation")):
            break
        if r[0] is not None and r[0] not in out:
            out[r[0]] = r
    return out


@pytest.fixture
def run() -> TrainingRun:
    return _run()


# --------------------------------------------------------------------------- log CSV


def test_log_csv_one_row_per_epoch(tmp_path: Path) -> None:
    history = _history()
    out = write_log_csv(history, tmp_path / "log.csv")
    assert out == tmp_path / "log.csv"
    with open(out, encoding="utf-8", newline="") as fh:
        rows = list(csv.reader(fh))
    assert tuple(rows[0]) == LOG_COLUMNS
    assert len(rows) == 1 + len(history)
    for log, row in zip(history, rows[1:], strict=True):
        values = dict(zip(LOG_COLUMNS, row, strict=True))
        assert values["phase"] == log.phase
        assert int(values["epoch"]) == log.epoch
        assert float(values["loss"]) == pytest.approx(log.loss)
        assert float(values["learning_rate"]) == pytest.approx(log.learning_rate)
        assert float(values["seconds"]) == pytest.approx(log.seconds, abs=1e-3)
        if math.isnan(log.val_auc):
            assert values["val_auc"] == ""  # NaN is an empty field
        else:
            assert float(values["val_auc"]) == pytest.approx(log.val_auc)


# --------------------------------------------------------------------------- curves PNG


@pytest.mark.parametrize("epochs", [4, 1, 0])
def test_curves_png_decodes_at_the_expected_size(tmp_path: Path, epochs: int) -> None:
    out = plot_curves(_history()[:epochs], tmp_path / "curves.png", title="cnmc-effnet 1.2")
    with Image.open(out) as im:
        im.load()
        width, height = im.size
    assert 1200 <= width <= 1800 and 350 <= height <= 600


def test_curves_handle_all_nan_validation(tmp_path: Path) -> None:
    history = [
        EpochLog("full", e, 0.5 / e, 0.6, NAN, NAN, NAN, NAN, NAN, 1.0, 10.0) for e in (1, 2)
    ]
    out = plot_curves(history, tmp_path / "curves.png")
    with Image.open(out) as im:
        assert im.format == "PNG"


# --------------------------------------------------------------------------- training report


def test_training_report_sheets_and_summary(run: TrainingRun, tmp_path: Path) -> None:
    out = write_training_report(run, tmp_path / "report.xlsx")
    wb = openpyxl.load_workbook(out)
    assert wb.sheetnames == ["Summary", "Data", "Curves", "Metrics", "Subjects", "Predictions"]
    ws = wb["Summary"]
    rows = _by_first(ws)
    assert "cnmc-effnet 1.2" in ws["A1"].value
    assert rows["Backbone"][1] == "efficientnetb0"
    assert rows["Bundle"][1] == "/models/cnmc-effnet-1.2.leukmodel"
    assert rows["Stopped because"][1] == "early stopping"
    assert rows["Best epoch (weights kept)"][1] == 3
    assert rows["Parameters (total)"][1] == 4_049_571
    assert rows["Parameters (trainable, fine-tuning)"][1] == 3_500_000
    assert rows["Inference speed (images/s)"][1] == pytest.approx(900.25)
    assert rows["Training time"][1] == "0:02:05 (125.0 s)"
    assert rows["Device"][1] == "CPU (8 cores)"
    assert rows["Threshold rule"][1] == THRESHOLD_RULE
    assert rows["Band rule"][1] == BAND_RULE.format(error=0.02, cap=0.2)
    assert rows["Decision threshold (P(ALL))"][1] == pytest.approx(THRESHOLD)
    m = run.test.metrics
    assert rows["Test: balanced accuracy"][1] == pytest.approx(m.balanced_accuracy)
    assert rows["Test: sensitivity (recall)"][1] == pytest.approx(m.recall)
    assert rows["Test: specificity"][1] == pytest.approx(m.specificity)
    assert rows["Test: ROC AUC"][1] == pytest.approx(m.roc_auc)
    assert ws.cell(row=_row_of(ws, "Test: balanced accuracy"), column=2).number_format == "0.0%"
    # Settings: scalars as they are, the rest as JSON.
    assert rows["epochs"][1] == 4
    assert rows["learning_rate"][1] == pytest.approx(1e-4)
    assert rows["augment"][1] == "yes"
    assert rows["class_weights"][1] == '{"ALL": 1.0, "HEM": 2.0}'
    assert not any("CANCELLED" in t for t in _texts(ws))
    assert ws.page_setup.orientation == "landscape"


def _row_of(ws, first: str) -> int:
    for row in ws.iter_rows(min_col=1, max_col=1):
        if row[0].value == first:
            return row[0].row
    raise AssertionError(f"{first!r} not found")


def test_cancelled_run_says_so(tmp_path: Path) -> None:
    out = write_training_report(
        _run(cancelled=True, stopped_because="cancelled"), tmp_path / "r.xlsx"
    )
    ws = openpyxl.load_workbook(out)["Summary"]
    assert any(t.startswith("CANCELLED") for t in _texts(ws))
    assert _by_first(ws)["Stopped because"][1] == "CANCELLED"


def test_metrics_sheet_matches_the_evaluations(run: TrainingRun, tmp_path: Path) -> None:
    out = write_training_report(run, tmp_path / "r.xlsx")
    ws = openpyxl.load_workbook(out)["Metrics"]
    for prefix, ev in (("Validation", run.validation), ("Test", run.test)):
        block = _block(ws, prefix)
        m = ev.metrics
        assert block["true ALL"][1:3] == (m.tp, m.fn)
        assert block["true HEM"][1:3] == (m.fp, m.tn)
        assert block["Total"][3] == m.n
        assert block["Balanced accuracy"][1] == pytest.approx(m.balanced_accuracy)
        assert block["ROC AUC"][1] == pytest.approx(m.roc_auc)
        assert block["F1 score"][1] == pytest.approx(m.f1)
        assert block["Expected calibration error"][1] == pytest.approx(ev.ece)
        assert block["Uncertain cells"][1] == ev.uncertain
        assert block["Accuracy on decided cells"][1] == pytest.approx(ev.decided_metrics.accuracy)
        assert block["Subject-level accuracy"][1] == pytest.approx(ev.subject_accuracy)
        low, high = wilson_interval(m.tp + m.tn, m.n)
        assert block["Accuracy"][1:4] == pytest.approx((m.accuracy, low, high))
        low, high = wilson_interval(m.tp, m.tp + m.fn)
        assert block["Recall (sensitivity)"][2:4] == pytest.approx((low, high))
        low, high = wilson_interval(m.fp + m.fn, m.n)
        assert block["Misclassification rate"][2:4] == pytest.approx((low, high))
        assert block["Precision"][4] == f"{m.tp} / {m.tp + m.fp}"
        # Calibration table: one row per bin, cells add up to all cells.
        bins = [r for k, r in block.items() if isinstance(k, str) and " – " in k]
        assert len(bins) == len(ev.calibration)
        assert sum(r[1] for r in bins) == m.n
    # The test block: known counts for the hand-made cells.
    m = run.test.metrics
    assert (m.tp, m.fn, m.fp, m.tn) == (5, 2, 3, 6)


def test_subjects_sheet(run: TrainingRun, tmp_path: Path) -> None:
    out = write_training_report(run, tmp_path / "r.xlsx")
    ws = openpyxl.load_workbook(out)["Subjects"]
    rows = _rows(ws)
    assert rows[1][0] == "Subject" and rows[1][-1] == "Subject call right"
    by_subject = {r[0]: r for r in rows[2:] if r[0] in {s.subject for s in run.test.subjects}}
    assert len(by_subject) == len(run.test.subjects)
    for s in run.test.subjects:
        r = by_subject[s.subject]
        assert r[1:7] == (s.truth, s.cells, s.called_all, s.called_hem, s.uncertain, s.correct)
        assert r[7] == pytest.approx(s.accuracy)
        assert r[8] == pytest.approx(s.mean_p_all)
        assert r[9] == s.call
        assert r[10] == ("yes" if s.call == s.truth else "no")
    assert by_subject["H02"][9] == ALL and by_subject["H02"][10] == "no"
    assert ws.freeze_panes == "B3"


def test_predictions_sheet(run: TrainingRun, tmp_path: Path) -> None:
    out = write_training_report(run, tmp_path / "r.xlsx")
    ws = openpyxl.load_workbook(out)["Predictions"]
    rows = _rows(ws)
    header, body = rows[1], rows[2:]
    assert header[:4] == ("Path", "Subject", "Truth", "P(ALL)")
    p = run.test.predictions
    assert len(body) == len(p)
    for i, r in enumerate(body):
        assert r[0] == str(Path(p.paths[i]).absolute())
        assert r[1] == p.subjects[i]
        assert r[2] == p.truth[i]
        assert r[3] == pytest.approx(p.p_all[i])
        call = ALL if p.p_all[i] >= THRESHOLD else HEM
        assert r[4] == call
        assert r[5] == call_label(p.p_all[i], THRESHOLD, BAND)
        assert r[6] == ("yes" if call == p.truth[i] else "no")
    assert UNCERTAIN in {r[5] for r in body}
    assert ws["D3"].number_format == "0.000"
    assert ws.freeze_panes == "B3"
    assert ws.auto_filter.ref == f"A2:G{len(body) + 2}"


def test_data_sheet(run: TrainingRun, tmp_path: Path) -> None:
    out = write_training_report(run, tmp_path / "r.xlsx")
    ws = openpyxl.load_workbook(out)["Data"]
    rows = _by_first(ws)
    assert rows["train"][1:7] == (30, 20, 10, 3, 2, 1)
    assert rows["test"][1:7] == (16, 7, 9, 5, 2, 3)
    assert rows["Total"][1] == 52
    texts = _texts(ws)
    assert "test (5)" in texts and "validation (2)" in texts
    for subject in ("T1", "V2", "H02"):
        assert subject in texts
    assert "/data/broken.bmp" in texts and "truncated file" in texts


def test_curves_sheet_embeds_picture_and_log(run: TrainingRun, tmp_path: Path) -> None:
    out = write_training_report(run, tmp_path / "r.xlsx")
    ws = openpyxl.load_workbook(out)["Curves"]
    assert len(ws._images) == 1
    rows = _rows(ws)
    header = next(i for i, r in enumerate(rows) if r[0] == "Phase")
    body = [r for r in rows[header + 1 :] if r[0] is not None]
    assert [r[1] for r in body] == [log.epoch for log in run.history]
    assert body[0][2] == pytest.approx(run.history[0].loss)
    assert body[1][7] == "n/a"  # the NaN val_auc


def test_curves_sheet_uses_the_saved_png(tmp_path: Path) -> None:
    png = plot_curves(_history(), tmp_path / "curves.png", title="saved")
    out = write_training_report(_run(curves_png=png), tmp_path / "r.xlsx")
    ws = openpyxl.load_workbook(out)["Curves"]
    assert ws._images[0]._data() == png.read_bytes()


def test_user_strings_stay_text(run: TrainingRun, tmp_path: Path) -> None:
    out = write_training_report(run, tmp_path / "r.xlsx")
    wb = openpyxl.load_workbook(out)
    found = []
    for ws in wb.worksheets:
        for row in ws.iter_rows():
            for cell in row:
                if isinstance(cell.value, str) and cell.value.startswith("="):
                    assert cell.data_type == "s", (ws.title, cell.coordinate, cell.value)
                    found.append((ws.title, cell.value))
    values = {v for _, v in found}
    assert "=1+1" in values  # subject id
    assert "=cmd|' /C calc'!A0" in values  # a settings value
    assert {"Data", "Subjects", "Predictions", "Summary"} <= {t for t, _ in found}
    assert any(t == "Data" and v.startswith("=1+1") for t, v in found)


def test_no_test_split_uses_validation(tmp_path: Path) -> None:
    run = _run(test=None)
    out = write_training_report(run, tmp_path / "r.xlsx")
    wb = openpyxl.load_workbook(out)
    assert any("No test split" in t for t in _texts(wb["Summary"]))
    metrics = _texts(wb["Metrics"])
    assert not any(t.startswith("Test") for t in metrics)
    subjects = {r[0] for r in _rows(wb["Subjects"])[2:]}
    assert {"V1", "V2"} <= subjects
    assert "validation" in wb["Predictions"]["A1"].value


def test_one_class_test_set_shows_na(tmp_path: Path) -> None:
    test = _evaluation([("P01", ALL, [0.9, 0.3, 0.7])], "test")
    assert math.isnan(test.metrics.specificity)
    out = write_training_report(_run(test=test), tmp_path / "r.xlsx")
    wb = openpyxl.load_workbook(out)
    block = _block(wb["Metrics"], "Test")
    assert block["Specificity"][1] == "n/a"
    assert block["Balanced accuracy"][1] == "n/a"
    assert block["ROC AUC"][1] == "n/a"
    assert block["Accuracy"][1] == pytest.approx(2 / 3)
    assert _by_first(wb["Summary"])["Test: specificity"][1] == "n/a"


# --------------------------------------------------------------------------- evaluation


def _manifest(**kw: object) -> dict:
    model = {
        "name": "cnmc-effnet",
        "version": "1.2",
        "backbone": "efficientnetb0",
        "weights_sha256": "ab" * 32,
        "decision_threshold": THRESHOLD,
        "uncertainty_band": list(BAND),
        "demo": False,
        "notice": "",
    }
    model.update(kw)
    return model


def _scan_summary() -> dict:
    return {
        "source": "imagefolder",
        "cells": 16,
        "cells_per_class": {ALL: 7, HEM: 9},
        "subjects": 5,
        "subjects_per_class": {ALL: 2, HEM: 3},
        "cells_per_subject": {},
        "unreadable": 2,
    }


def test_evaluation_report(tmp_path: Path) -> None:
    ev = _evaluation(TEST_CELLS, "holdout")
    unreadable = [("/data/holdout/bad.png", "cannot decode"), ("=x.png", "empty file")]
    out = write_evaluation_report(
        ev,
        tmp_path / "eval.xlsx",
        model=_manifest(),
        data=_scan_summary(),
        unreadable=unreadable,
        title="Evaluation of cnmc-effnet",
    )
    wb = openpyxl.load_workbook(out)
    assert wb.sheetnames == ["Summary", "Metrics", "Subjects", "Predictions", "Errors"]
    ws = wb["Summary"]
    assert ws["A1"].value == "Evaluation of cnmc-effnet"
    rows = _by_first(ws)
    assert rows["Model"][1] == "cnmc-effnet 1.2"
    assert rows["Weights SHA-256"][1] == "ab" * 32
    assert rows["Source format"][1] == "imagefolder"
    assert rows["Cells"][1] == 16
    assert rows["Unreadable files"][1] == 2
    assert rows["Balanced accuracy"][1] == pytest.approx(ev.metrics.balanced_accuracy)
    assert DEMO_NOTICE not in _texts(ws)
    block = _block(wb["Metrics"], "Evaluation")
    assert block["true ALL"][1:3] == (ev.metrics.tp, ev.metrics.fn)
    assert len(_rows(wb["Predictions"])) == 2 + len(ev.predictions)
    errors = _rows(wb["Errors"])
    assert errors[0] == ("Unreadable file", "Reason")
    assert errors[1] == ("/data/holdout/bad.png", "cannot decode")
    assert errors[2][1] == "empty file"
    assert wb["Errors"]["A3"].data_type == "s"


def test_evaluation_report_demo_notice(tmp_path: Path) -> None:
    out = write_evaluation_report(
        _evaluation(TEST_CELLS, "holdout"),
        tmp_path / "eval.xlsx",
        model=_manifest(demo=True, notice=DEMO_NOTICE),
        data=_scan_summary(),
    )
    wb = openpyxl.load_workbook(out)
    assert DEMO_NOTICE in _texts(wb["Summary"])
    assert "none" in _texts(wb["Errors"])[2]


def test_cancelled_evaluation_shows_a_banner(tmp_path: Path) -> None:
    ev = _evaluation(TEST_CELLS, "holdout")
    ev.notes.append("CANCELLED: 16 of 40 cells were scored before cancel")
    out = write_evaluation_report(
        ev,
        tmp_path / "eval.xlsx",
        model=_manifest(path="/models/=odd.leukmodel"),
        data=_scan_summary(),
    )
    ws = openpyxl.load_workbook(out)["Summary"]
    assert ws["A2"].value.startswith("CANCELLED")
    assert _by_first(ws)["Bundle file"][1] == "/models/=odd.leukmodel"


# --------------------------------------------------------------------------- comparison


def _comparison_runs() -> list[TrainingRun]:
    weaker = _evaluation(
        [("P01", ALL, [0.9, 0.4, 0.3]), ("H01", HEM, [0.1, 0.6, 0.2])], "test"
    )  # balanced accuracy 50%
    return [
        _run(),
        _run(backbone="mobilenetv3small", test=weaker, bundle_path=Path("/m/mnv3.leukmodel")),
        _run(backbone="=resnet50", test=None, bundle_path=None),
    ]


def test_comparison_markdown(tmp_path: Path) -> None:
    runs = _comparison_runs()
    xlsx, md = write_comparison(runs, tmp_path / "cmp.xlsx", tmp_path / "cmp.md")
    text = md.read_text(encoding="utf-8")
    assert text.startswith("# ")
    assert "grouped-stratified" in text and "seed 42" in text and "5 test subjects" in text
    table = [line for line in text.splitlines() if line.startswith("|")]
    header = [c.strip() for c in table[0].strip("|").split("|")]
    body = [[c.strip() for c in line.strip("|").split("|")] for line in table[2:]]
    assert len(body) == len(runs)
    col = {name: i for i, name in enumerate(header)}
    best = runs[0].test.metrics
    first = body[0]
    assert first[col["Backbone"]] == "efficientnetb0"
    assert first[col["Bundle"]] == "cnmc-effnet-1.2.leukmodel"
    assert first[col["Balanced accuracy"]] == f"**{best.balanced_accuracy:.1%}**"
    assert first[col["Accuracy"]] == f"{best.accuracy:.1%}"
    assert first[col["Recall (sensitivity)"]] == f"{best.recall:.1%}"
    assert first[col["Test cells"]] == str(best.n)
    assert body[1][col["Balanced accuracy"]] == "50.0%"
    # No test split: validation scores, said so in the row and in a note line.
    assert body[2][col["Scored on"]].startswith("validation")
    assert body[2][col["Test cells"]] == str(runs[2].validation.metrics.n)
    assert "No test split for =resnet50" in text


def test_comparison_markdown_na(tmp_path: Path) -> None:
    one_class = _evaluation([("P01", ALL, [0.9, 0.3])], "test")
    _, md = write_comparison([_run(test=one_class)], tmp_path / "c.xlsx", tmp_path / "c.md")
    row = [line for line in md.read_text(encoding="utf-8").splitlines() if "| effic" in line]
    assert len(row) == 1 and "n/a" in row[0] and "50.0%" in row[0]


def test_comparison_xlsx(tmp_path: Path) -> None:
    runs = _comparison_runs()
    xlsx, _ = write_comparison(runs, tmp_path / "cmp.xlsx", tmp_path / "cmp.md")
    wb = openpyxl.load_workbook(xlsx)
    assert wb.sheetnames == ["Comparison"]
    ws = wb["Comparison"]
    rows = _rows(ws)
    assert any("seed 42" in str(r[0]) and "5 test subjects" in str(r[0]) for r in rows)
    assert any("one confusion matrix per model" in str(r[0]) for r in rows)
    header_at = next(i for i, r in enumerate(rows) if r[0] == "Backbone")
    header = rows[header_at]
    ba = header.index("Balanced accuracy")
    body = rows[header_at + 1 : header_at + 1 + len(runs)]
    assert [r[0] for r in body] == ["efficientnetb0", "mobilenetv3small", "=resnet50"]
    assert body[0][ba] == pytest.approx(runs[0].test.metrics.balanced_accuracy)
    assert body[1][ba] == pytest.approx(0.5)
    assert body[2][ba] == pytest.approx(runs[2].validation.metrics.balanced_accuracy)
    assert body[0][header.index("Parameters")] == 4_049_571
    best_cell = ws.cell(row=header_at + 2, column=ba + 1)
    other_cell = ws.cell(row=header_at + 3, column=ba + 1)
    assert best_cell.font.b and not other_cell.font.b
    assert best_cell.fill.fgColor.rgb != other_cell.fill.fgColor.rgb
    assert ws.cell(row=header_at + 4, column=1).data_type == "s"


def test_comparison_warns_about_different_splits(tmp_path: Path) -> None:
    runs = [_run(), _run(backbone="resnet50", split=_split(["P01", "H01"]))]
    _, md = write_comparison(runs, tmp_path / "c.xlsx", tmp_path / "c.md")
    text = md.read_text(encoding="utf-8")
    assert "WARNING: these runs do not share one split" in text
    assert "same held-out subjects" not in text


def test_comparison_needs_runs(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        write_comparison([], tmp_path / "c.xlsx", tmp_path / "c.md")


# --------------------------------------------------------------------------- failures


def _fail_disk_full(*_args: object, **_kw: object) -> None:
    raise OSError(errno.ENOSPC, "No space left on device")


def test_failed_xlsx_write_keeps_the_previous_file(
    run: TrainingRun, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "r.xlsx"
    write_training_report(run, target)
    before = target.read_bytes()

    def partial_save(self: Workbook, filename: str) -> None:
        Path(filename).write_bytes(b"PK\x03\x04 half a zip")
        _fail_disk_full()

    monkeypatch.setattr(Workbook, "save", partial_save)
    with pytest.raises(ReportWriteError, match="disk is full"):
        write_training_report(_run(cancelled=True), target)
    with pytest.raises(ReportWriteError):
        write_evaluation_report(run.test, target, model=_manifest(), data=_scan_summary())
    with pytest.raises(ReportWriteError):
        write_comparison([run], target, tmp_path / "c.md")
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.xlsx"]  # no temp files left


def test_failed_csv_write_keeps_the_previous_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "log.csv"
    write_log_csv(_history(), target)
    before = target.read_bytes()
    monkeypatch.setattr(reports, "_csv_value", _fail_disk_full)  # after the header row
    with pytest.raises(ReportWriteError):
        write_log_csv(_history()[:1], target)
    assert target.read_bytes() == before


def test_failed_png_and_md_writes_keep_previous_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    png = plot_curves(_history(), tmp_path / "curves.png")
    _, md = write_comparison([_run()], tmp_path / "c.xlsx", tmp_path / "c.md")
    png_before, md_before = png.read_bytes(), md.read_bytes()

    def partial_write(self: Path, data: object, *args: object, **kw: object) -> None:
        with open(self, "wb") as fh:
            fh.write(b"partial")
        _fail_disk_full()

    monkeypatch.setattr(Path, "write_bytes", partial_write)
    monkeypatch.setattr(Path, "write_text", partial_write)
    with pytest.raises(ReportWriteError):
        plot_curves(_history()[:1], png)
    with pytest.raises(ReportWriteError):
        write_comparison([_run(backbone="other")], tmp_path / "c.xlsx", md)
    assert png.read_bytes() == png_before
    assert md.read_bytes() == md_before


def test_parent_is_a_file(run: TrainingRun, tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    with pytest.raises(ReportWriteError):
        write_training_report(run, blocker / "r.xlsx")
    with pytest.raises(ReportWriteError):
        write_log_csv(run.history, blocker / "log.csv")
    with pytest.raises(ReportWriteError):
        plot_curves(run.history, blocker / "curves.png")
    assert blocker.read_text() == "x"


def test_reports_do_not_import_tensorflow() -> None:
    assert reports.__name__ == "training.reports"
    source = Path(reports.__file__).read_text(encoding="utf-8")
    assert "import tensorflow" not in source and "import keras" not in source
    assert (
        "import matplotlib.pyplot" not in source
    )  # matplotlib's object API only: no global figure state
