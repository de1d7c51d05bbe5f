"""Training/evaluation outputs: the log CSV and the training and evaluation workbooks.

The curves are tested in test_training_curves.py, the comparison in
test_training_comparison.py.

Everything is built by hand from `evaluate_predictions`, so these tests need no TensorFlow and
check real values: each figure in a file must equal the figure of the Evaluation it came from.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import openpyxl
import pytest
import training_samples as samples
from openpyxl import Workbook

from leukgui.core.atomic import ReportWriteError
from leukgui.core.metrics import call_label, wilson_interval
from leukgui.core.results import ALL, DEMO_NOTICE, HEM, UNCERTAIN
from training import comparison, curves, reports
from training.history import LOG_COLUMNS, TrainingRun
from training.reports import (
    write_evaluation_report,
    write_log_csv,
    write_training_report,
)
from training.scoring import (
    BAND_RULE,
    THRESHOLD_RULE,
)


@pytest.fixture
def run() -> TrainingRun:
    return samples.training_run()


# --------------------------------------------------------------------------- log CSV


def test_log_csv_one_row_per_epoch(tmp_path: Path) -> None:
    history = samples.history()
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


# --------------------------------------------------------------------------- training report


def test_training_report_sheets_and_summary(run: TrainingRun, tmp_path: Path) -> None:
    out = write_training_report(run, tmp_path / "report.xlsx")
    wb = openpyxl.load_workbook(out)
    assert wb.sheetnames == ["Summary", "Data", "Curves", "Metrics", "Subjects", "Predictions"]
    ws = wb["Summary"]
    rows = samples.rows_by_first(ws)
    assert "cnmc-effnet 1.2" in ws["A1"].value
    assert rows["Backbone"][1] == "efficientnetb0"
    assert rows["Model file"][1] == "/models/cnmc-effnet-1.2.leukmodel"
    assert rows["Stopped because"][1] == "early stopping"
    assert rows["Best epoch (weights kept)"][1] == 3
    assert rows["Parameters (total)"][1] == 4_049_571
    assert rows["Parameters (trainable, fine-tuning)"][1] == 3_500_000
    assert rows["Inference speed (images/s)"][1] == pytest.approx(900.25)
    assert rows["Training time"][1] == "0:02:05 (125.0 s)"
    assert rows["Device"][1] == "CPU (8 cores)"
    assert rows["Threshold rule"][1] == THRESHOLD_RULE
    assert rows["Band rule"][1] == BAND_RULE.format(error=0.02, cap=0.2)
    assert rows["Decision threshold (P(ALL))"][1] == pytest.approx(samples.THRESHOLD)
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
    assert not any("CANCELLED" in t for t in samples.sheet_texts(ws))
    assert ws.page_setup.orientation == "landscape"


def _row_of(ws, first: str) -> int:
    for row in ws.iter_rows(min_col=1, max_col=1):
        if row[0].value == first:
            return row[0].row
    raise AssertionError(f"{first!r} not found")


def test_cancelled_run_says_so(tmp_path: Path) -> None:
    out = write_training_report(
        samples.training_run(cancelled=True, stopped_because="cancelled"), tmp_path / "r.xlsx"
    )
    ws = openpyxl.load_workbook(out)["Summary"]
    assert any(t.startswith("CANCELLED") for t in samples.sheet_texts(ws))
    assert samples.rows_by_first(ws)["Stopped because"][1] == "CANCELLED"


def test_metrics_sheet_matches_the_evaluations(run: TrainingRun, tmp_path: Path) -> None:
    out = write_training_report(run, tmp_path / "r.xlsx")
    ws = openpyxl.load_workbook(out)["Metrics"]
    for prefix, ev in (("Validation", run.validation), ("Test", run.test)):
        block = samples.metrics_block(ws, prefix)
        m = ev.metrics
        assert block["Truth ALL"][1:3] == (m.tp, m.fn)
        assert block["Truth HEM"][1:3] == (m.fp, m.tn)
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
    rows = samples.sheet_rows(ws)
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
    rows = samples.sheet_rows(ws)
    header, body = rows[1], rows[2:]
    assert header[:4] == ("Path", "Subject", "Truth", "P(ALL)")
    p = run.test.predictions
    assert len(body) == len(p)
    for i, r in enumerate(body):
        assert r[0] == str(Path(p.paths[i]).absolute())
        assert r[1] == p.subjects[i]
        assert r[2] == p.truth[i]
        assert r[3] == pytest.approx(p.p_all[i])
        call = ALL if p.p_all[i] >= samples.THRESHOLD else HEM
        assert r[4] == call
        assert r[5] == call_label(p.p_all[i], samples.THRESHOLD, samples.BAND)
        assert r[6] == ("yes" if call == p.truth[i] else "no")
    assert UNCERTAIN in {r[5] for r in body}
    assert ws["D3"].number_format == "0.000"
    assert ws.freeze_panes == "B3"
    assert ws.auto_filter.ref == f"A2:G{len(body) + 2}"


def test_data_sheet(run: TrainingRun, tmp_path: Path) -> None:
    out = write_training_report(run, tmp_path / "r.xlsx")
    ws = openpyxl.load_workbook(out)["Data"]
    rows = samples.rows_by_first(ws)
    assert rows["train"][1:7] == (30, 20, 10, 3, 2, 1)
    assert rows["test"][1:7] == (16, 7, 9, 5, 2, 3)
    assert rows["Total"][1] == 52
    texts = samples.sheet_texts(ws)
    assert "test (5)" in texts and "validation (2)" in texts
    for subject in ("T1", "V2", "H02"):
        assert subject in texts
    assert "/data/broken.bmp" in texts and "truncated file" in texts


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
    run = samples.training_run(test=None)
    out = write_training_report(run, tmp_path / "r.xlsx")
    wb = openpyxl.load_workbook(out)
    assert any("No test split" in t for t in samples.sheet_texts(wb["Summary"]))
    metrics = samples.sheet_texts(wb["Metrics"])
    assert not any(t.startswith("Test") for t in metrics)
    subjects = {r[0] for r in samples.sheet_rows(wb["Subjects"])[2:]}
    assert {"V1", "V2"} <= subjects
    assert "validation" in wb["Predictions"]["A1"].value


def test_one_class_test_set_shows_na(tmp_path: Path) -> None:
    test = samples.evaluation([("P01", ALL, [0.9, 0.3, 0.7])], "test")
    assert math.isnan(test.metrics.specificity)
    out = write_training_report(samples.training_run(test=test), tmp_path / "r.xlsx")
    wb = openpyxl.load_workbook(out)
    block = samples.metrics_block(wb["Metrics"], "Test")
    assert block["Specificity"][1] == "n/a"
    assert block["Balanced accuracy"][1] == "n/a"
    assert block["ROC AUC"][1] == "n/a"
    assert block["Accuracy"][1] == pytest.approx(2 / 3)
    assert samples.rows_by_first(wb["Summary"])["Test: specificity"][1] == "n/a"


# --------------------------------------------------------------------------- evaluation


def _manifest(**kw: object) -> dict:
    model = {
        "name": "cnmc-effnet",
        "version": "1.2",
        "backbone": "efficientnetb0",
        "weights_sha256": "ab" * 32,
        "decision_threshold": samples.THRESHOLD,
        "uncertainty_band": list(samples.BAND),
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
    ev = samples.evaluation(samples.TEST_CELLS, "holdout")
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
    rows = samples.rows_by_first(ws)
    assert rows["Model"][1] == "cnmc-effnet 1.2"
    assert rows["Weights SHA-256"][1] == "ab" * 32
    assert rows["Source format"][1] == "imagefolder"
    assert rows["Cells"][1] == 16
    assert rows["Unreadable files"][1] == 2
    assert rows["Balanced accuracy"][1] == pytest.approx(ev.metrics.balanced_accuracy)
    assert DEMO_NOTICE not in samples.sheet_texts(ws)
    block = samples.metrics_block(wb["Metrics"], "Evaluation")
    assert block["Truth ALL"][1:3] == (ev.metrics.tp, ev.metrics.fn)
    assert len(samples.sheet_rows(wb["Predictions"])) == 2 + len(ev.predictions)
    errors = samples.sheet_rows(wb["Errors"])
    assert errors[0] == ("Unreadable file", "Reason")
    assert errors[1] == ("/data/holdout/bad.png", "cannot decode")
    assert errors[2][1] == "empty file"
    assert wb["Errors"]["A3"].data_type == "s"


def test_evaluation_report_demo_notice(tmp_path: Path) -> None:
    out = write_evaluation_report(
        samples.evaluation(samples.TEST_CELLS, "holdout"),
        tmp_path / "eval.xlsx",
        model=_manifest(demo=True, notice=DEMO_NOTICE),
        data=_scan_summary(),
    )
    wb = openpyxl.load_workbook(out)
    assert DEMO_NOTICE in samples.sheet_texts(wb["Summary"])
    assert "none" in samples.sheet_texts(wb["Errors"])[2]


def test_cancelled_evaluation_shows_a_banner(tmp_path: Path) -> None:
    ev = samples.evaluation(samples.TEST_CELLS, "holdout")
    ev.notes.append("CANCELLED: 16 of 40 cells were scored before cancel")
    out = write_evaluation_report(
        ev,
        tmp_path / "eval.xlsx",
        model=_manifest(path="/models/=odd.leukmodel"),
        data=_scan_summary(),
    )
    ws = openpyxl.load_workbook(out)["Summary"]
    assert ws["A2"].value.startswith("CANCELLED")
    assert samples.rows_by_first(ws)["Model file"][1] == "/models/=odd.leukmodel"


# --------------------------------------------------------------------------- failures


def test_failed_xlsx_write_keeps_the_previous_file(
    run: TrainingRun, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "r.xlsx"
    write_training_report(run, target)
    before = target.read_bytes()

    def partial_save(self: Workbook, filename: str) -> None:
        Path(filename).write_bytes(b"PK\x03\x04 half a zip")
        samples.fail_disk_full()

    monkeypatch.setattr(Workbook, "save", partial_save)
    with pytest.raises(ReportWriteError, match="disk is full"):
        write_training_report(samples.training_run(cancelled=True), target)
    with pytest.raises(ReportWriteError):
        write_evaluation_report(run.test, target, model=_manifest(), data=_scan_summary())
    with pytest.raises(ReportWriteError):
        comparison.write_comparison([run], target, tmp_path / "c.md")
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.xlsx"]  # no temp files left


def test_failed_csv_write_keeps_the_previous_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "log.csv"
    write_log_csv(samples.history(), target)
    before = target.read_bytes()
    monkeypatch.setattr(reports, "_csv_value", samples.fail_disk_full)  # after the header row
    with pytest.raises(ReportWriteError):
        write_log_csv(samples.history()[:1], target)
    assert target.read_bytes() == before


def test_parent_is_a_file(run: TrainingRun, tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    with pytest.raises(ReportWriteError):
        write_training_report(run, blocker / "r.xlsx")
    with pytest.raises(ReportWriteError):
        write_log_csv(run.history, blocker / "log.csv")
    assert blocker.read_text() == "x"


@pytest.mark.parametrize("module", [reports, curves, comparison])
def test_reports_do_not_import_tensorflow(module: object) -> None:
    source = Path(module.__file__).read_text(encoding="utf-8")
    assert "import tensorflow" not in source and "import keras" not in source
    # matplotlib's object API only: no global figure state
    assert "import matplotlib.pyplot" not in source
