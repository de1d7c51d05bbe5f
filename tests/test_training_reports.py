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
    Evaluation,
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


def _pct(value: float) -> str:
    return "n/a" if not math.isfinite(value) else f"{100 * value:.1f}%"


def _ci(interval: tuple[float, float]) -> str:
    """The " (95% CI a – b)" suffix of a headline; nothing when the interval is undefined."""
    low, high = interval
    if not (math.isfinite(low) and math.isfinite(high)):
        return ""
    return f" (95% CI {_pct(low)} – {_pct(high)})"


def _headline(ev: Evaluation, label: str) -> dict[str, str]:
    """The Summary rows of one evaluation, recomputed from it."""
    m, level, boot = ev.metrics, ev.subject_level, ev.intervals.intervals
    sm = level.metrics

    def key(name: str) -> str:
        return f"{label}: {name}" if label else name[:1].upper() + name[1:]

    return {
        key("cells / subjects"): f"{m.n:,} cells from {len(ev.subjects):,} subjects",
        key("subjects called right"): (
            f"{sm.tp + sm.tn} of {sm.n} ({_pct(sm.accuracy)}){_ci(level.intervals['accuracy'])}"
        ),
        key("subject-level sensitivity / specificity"): (
            f"{_pct(sm.recall)} of {sm.tp + sm.fn} ALL subjects / {_pct(sm.specificity)} of "
            f"{sm.tn + sm.fp} HEM subjects"
        ),
        key("balanced accuracy (cells)"): (
            f"{_pct(m.balanced_accuracy)}{_ci(boot['balanced_accuracy'])}"
        ),
        key("sensitivity (recall)"): f"{_pct(m.recall)}{_ci(boot['recall'])}",
        key("specificity"): f"{_pct(m.specificity)}{_ci(boot['specificity'])}",
        key("weighted F1 (C-NMC ranking)"): f"{_pct(m.weighted_f1)}{_ci(boot['weighted_f1'])}",
    }


def _check_headline(ws, ev: Evaluation, label: str) -> None:
    rows = samples.rows_by_first(ws)
    for key, text in _headline(ev, label).items():
        assert rows[key][1] == text, key
    auc_key = f"{label}: ROC AUC" if label else "ROC AUC"
    auc_ci = ev.intervals.intervals.get("roc_auc")
    if math.isfinite(ev.metrics.roc_auc) and auc_ci and all(map(math.isfinite, auc_ci)):
        assert rows[auc_key][1] == (
            f"{ev.metrics.roc_auc:.3f} (95% CI {auc_ci[0]:.3f} – {auc_ci[1]:.3f})"
        )
    elif math.isfinite(ev.metrics.roc_auc):
        assert rows[auc_key][1] == pytest.approx(ev.metrics.roc_auc)
    else:
        assert rows[auc_key][1] == "n/a"
    band = rows[f"{label}: uncertainty band" if label else "Uncertainty band"][1]
    bc = ev.band_check
    assert band.startswith(f"HEM side {_pct(bc.error_hem)} wrong of {bc.cells_hem:,}")
    assert f"ALL side {_pct(bc.error_all)} wrong of {bc.cells_all:,}" in band
    assert f"{bc.uncertain:,} uncertain, coverage {_pct(bc.coverage)}" in band
    for key in ("subjects called right", "balanced accuracy (cells)"):
        full = f"{label}: {key}" if label else key[:1].upper() + key[1:]
        assert ws.cell(row=_row_of(ws, full), column=2).font.b, full


def _row_of(ws, first: str) -> int:
    for row in ws.iter_rows(min_col=1, max_col=1):
        if row[0].value == first:
            return row[0].row
    raise AssertionError(f"{first!r} not found")


_VALIDATION_TITLE = "Validation scores (chose the epoch, threshold and band: not held-out)"
_TEST_TITLE = "Test scores (held-out subjects)"


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
    assert rows["Uncertainty band (P(ALL))"][1].startswith(
        f"{samples.BAND[0]:.3f} – {samples.BAND[1]:.3f}"
    )
    assert rows["Calibration"][1] == "none (P(ALL) as the network gives it)"
    # Held-out scores first, then the validation scores, labelled as not held-out.
    texts = samples.sheet_texts(ws)
    assert texts.index(_TEST_TITLE) < texts.index(_VALIDATION_TITLE)
    _check_headline(ws, run.test, "Test")
    _check_headline(ws, run.validation, "Validation")
    assert _row_of(ws, _TEST_TITLE) < _row_of(ws, "Test: cells / subjects")
    assert _row_of(ws, "Test: uncertainty band") < _row_of(ws, _VALIDATION_TITLE)
    assert _row_of(ws, _VALIDATION_TITLE) < _row_of(ws, "Validation: cells / subjects")
    # The test part has 2 + 3 subjects: intervals; validation 1 + 1: none, and a note says why.
    assert "(95% CI " in rows["Test: balanced accuracy (cells)"][1]
    assert "(95% CI " not in rows["Validation: balanced accuracy (cells)"][1]
    assert any(t.startswith("validation: intervals undefined") for t in texts)
    boot = run.test.intervals
    assert any(
        t.startswith(f"95% CI of cell-level scores: bootstrap over {boot.subjects} subjects")
        for t in texts
    )
    assert "No test part" not in " ".join(texts)
    # Settings: scalars as they are, the rest as JSON.
    assert rows["epochs"][1] == 4
    assert rows["learning_rate"][1] == pytest.approx(1e-4)
    assert rows["augment"][1] == "yes"
    assert rows["class_weights"][1] == '{"ALL": 1.0, "HEM": 2.0}'
    assert not any("CANCELLED" in t for t in texts)
    assert not any("SPLIT BY IMAGE" in t for t in texts)
    assert not any(t.startswith("Warning:") for t in texts)
    assert ws.page_setup.orientation == "landscape"


def test_summary_shows_undefined_scores_as_na(tmp_path: Path) -> None:
    test = samples.evaluation([("P01", ALL, [0.9, 0.3, 0.7])], "test")
    out = write_training_report(samples.training_run(test=test), tmp_path / "r.xlsx")
    ws = openpyxl.load_workbook(out)["Summary"]
    _check_headline(ws, test, "Test")
    rows = samples.rows_by_first(ws)
    assert rows["Test: specificity"][1] == "n/a"
    assert rows["Test: balanced accuracy (cells)"][1] == "n/a"
    assert rows["Test: ROC AUC"][1] == "n/a"


def test_cancelled_run_says_so(tmp_path: Path) -> None:
    out = write_training_report(
        samples.training_run(cancelled=True, stopped_because="cancelled"), tmp_path / "r.xlsx"
    )
    ws = openpyxl.load_workbook(out)["Summary"]
    assert any(t.startswith("CANCELLED") for t in samples.sheet_texts(ws))
    assert samples.rows_by_first(ws)["Stopped because"][1] == "CANCELLED"


def test_split_by_image_and_warnings_are_shown_first(tmp_path: Path) -> None:
    split = {**samples.split(), "split_by": "image"}
    warnings = ["only 3 HEM subjects in training", '=HYPERLINK("x")']
    out = write_training_report(
        samples.training_run(split=split, warnings=warnings), tmp_path / "r.xlsx"
    )
    wb = openpyxl.load_workbook(out)
    summary = samples.sheet_texts(wb["Summary"])
    assert any(t.startswith("SPLIT BY IMAGE") for t in summary)
    banner = next(i for i, t in enumerate(summary) if t.startswith("SPLIT BY IMAGE"))
    assert banner < summary.index("Model")  # above every figure
    for warning in warnings:
        assert f"Warning: {warning}" in summary
        assert summary.index(f"Warning: {warning}") < summary.index("Model")
    data = samples.sheet_texts(wb["Data"])
    assert any(t.startswith("SPLIT BY IMAGE") for t in data)
    assert not any(t.startswith("Split by subject") for t in data)
    for warning in warnings:
        assert f"Warning: {warning}" in data


def test_data_sheet_says_the_split_is_by_subject(run: TrainingRun, tmp_path: Path) -> None:
    out = write_training_report(run, tmp_path / "r.xlsx")
    data = samples.sheet_texts(openpyxl.load_workbook(out)["Data"])
    assert any(t.startswith("Split by subject (grouped-stratified, seed 42)") for t in data)
    assert not any("SPLIT BY IMAGE" in t for t in data)


def _metric_value(cell: object, value: float) -> None:
    if math.isfinite(value):
        assert cell == pytest.approx(value)
    else:
        assert cell == "n/a"


def test_metrics_sheet_matches_the_evaluations(run: TrainingRun, tmp_path: Path) -> None:
    out = write_training_report(run, tmp_path / "r.xlsx")
    ws = openpyxl.load_workbook(out)["Metrics"]
    texts = samples.sheet_texts(ws)
    assert "Validation (chose the best epoch, the threshold and the band: not held-out)" in texts
    assert "Test (held-out subjects)" in texts
    for prefix, ev in (("Validation", run.validation), ("Test", run.test)):
        block = samples.metrics_block(ws, prefix)
        m = ev.metrics
        # Subjects first: one call per subject, exact intervals over subjects.
        assert "Subjects (primary outcome)" in block
        level, sm = ev.subject_level, ev.subject_level.metrics
        for name, key, value, count in (
            ("Subject-level accuracy", "accuracy", sm.accuracy, (sm.tp + sm.tn, sm.n)),
            ("Subject-level sensitivity", "sensitivity", sm.recall, (sm.tp, sm.tp + sm.fn)),
            ("Subject-level specificity", "specificity", sm.specificity, (sm.tn, sm.tn + sm.fp)),
            ("Subject-level balanced accuracy", "balanced_accuracy", sm.balanced_accuracy, None),
        ):
            r = block[name]
            _metric_value(r[1], value)
            assert r[2:4] == pytest.approx(level.intervals[key]), name
            assert r[4] == (f"{count[0]:,} / {count[1]:,}" if count else None)
        # Cells: the confusion matrix.
        assert "Cells" in block
        assert block["Truth ALL"][1:3] == (m.tp, m.fn)
        assert block["Truth HEM"][1:3] == (m.fp, m.tn)
        assert block["Total"][3] == m.n
        assert block["Balanced accuracy"][1] == pytest.approx(m.balanced_accuracy)
        assert block["ROC AUC"][1] == pytest.approx(m.roc_auc)
        assert block["F1 score"][1] == pytest.approx(m.f1)
        assert block["Weighted F1"][1] == pytest.approx(m.weighted_f1)
        assert block["Expected calibration error"][1] == pytest.approx(ev.ece)
        assert block["Uncertain cells"][1] == ev.uncertain
        d = ev.decided_metrics
        assert block["Accuracy on decided cells"][1] == pytest.approx(d.accuracy)
        # Not a bootstrap figure: its interval stays Wilson's.
        low, high = wilson_interval(d.tp + d.tn, d.n)
        assert block["Accuracy on decided cells"][2:4] == pytest.approx((low, high))
        assert block["Accuracy"][1] == pytest.approx(m.accuracy)
        assert block["Precision"][4] == f"{m.tp} / {m.tp + m.fp}"
        # Band: achieved error beyond each edge and the coverage, from the band check.
        bc = ev.band_check
        lo, hi = ev.uncertainty_band
        for side, edge, cells, wrong, error in (
            ("Called HEM (P(ALL) ≤ low edge)", lo, bc.cells_hem, bc.errors_hem, bc.error_hem),
            ("Called ALL (P(ALL) ≥ high edge)", hi, bc.cells_all, bc.errors_all, bc.error_all),
        ):
            r = block[side]
            assert r[1] == pytest.approx(edge)
            assert r[2:4] == (cells, wrong)
            _metric_value(r[4], error)
            assert r[5] == pytest.approx(bc.target_error)
        assert (
            f"Uncertain: {bc.uncertain:,} cells; coverage (decided share) "
            + _pct(bc.coverage)
            + "."
            in block
        )
        # Calibration table (no temperature): one row per bin, cells add up to all cells.
        assert f"Calibration (reliability table), ECE {ev.ece:.3f}" in block
        bins = [r for k, r in block.items() if isinstance(k, str) and " – " in k]
        assert len(bins) == len(ev.calibration)
        assert sum(r[1] for r in bins) == m.n
        assert not any("temperature scaling" in str(k) for k in block)
    # The test block: known counts for the hand-made cells.
    m = run.test.metrics
    assert (m.tp, m.fn, m.fp, m.tn) == (5, 2, 3, 6)


_BOOTSTRAPPED = {
    "Accuracy": "accuracy",
    "Precision": "precision",
    "Recall (sensitivity)": "recall",
    "Specificity": "specificity",
    "F1 score": "f1",
    "Weighted F1": "weighted_f1",
    "Misclassification rate": "misclassification_rate",
    "Balanced accuracy": "balanced_accuracy",
    "ROC AUC": "roc_auc",
}


def test_cell_intervals_are_the_subject_bootstrap(tmp_path: Path) -> None:
    test = samples.evaluation(samples.WIDE_TEST_CELLS, "test")
    assert test.intervals.unit == "subject" and test.intervals.subjects == 8
    assert not test.intervals.notes
    run = samples.training_run(
        test=test, split=samples.split([s for s, *_ in samples.WIDE_TEST_CELLS])
    )
    out = write_training_report(run, tmp_path / "r.xlsx")
    ws = openpyxl.load_workbook(out)["Metrics"]
    block = samples.metrics_block(ws, "Test")
    m = test.metrics
    for name, key in _BOOTSTRAPPED.items():
        low, high = test.intervals.intervals[key]
        assert math.isfinite(low) and math.isfinite(high), key
        assert block[name][2:4] == pytest.approx((low, high)), name
    # Never Wilson's (cells as independent), which is narrower here.
    wilson = wilson_interval(m.tp + m.tn, m.n)
    assert block["Accuracy"][2:4] != pytest.approx(wilson)
    assert (
        f"95% CI of cell-level scores: bootstrap over 8 subjects "
        f"({test.intervals.resamples:,} resamples, seed {test.intervals.seed})"
    ) in " ".join(samples.sheet_texts(ws))
    # The Summary shows the same intervals.
    rows = samples.rows_by_first(openpyxl.load_workbook(out)["Summary"])
    ba = test.intervals.intervals["balanced_accuracy"]
    assert rows["Test: balanced accuracy (cells)"][1] == f"{_pct(m.balanced_accuracy)}{_ci(ba)}"


def test_too_few_subjects_leave_the_intervals_undefined(run: TrainingRun, tmp_path: Path) -> None:
    """One subject per class (the validation sample): no between-subject spread, so every
    bootstrap interval is n/a, by design, rather than a falsely narrow Wilson interval."""
    out = write_training_report(run, tmp_path / "r.xlsx")
    block = samples.metrics_block(openpyxl.load_workbook(out)["Metrics"], "Validation")
    assert run.validation.intervals.notes
    for name in _BOOTSTRAPPED:
        assert block[name][2:4] == ("n/a", "n/a"), name
    assert any(str(k).startswith("validation: intervals undefined") for k in block)


def test_temperature_scaling_shows_calibration_before_and_after(tmp_path: Path) -> None:
    def calibrated(cells: list, part: str) -> Evaluation:
        raw = [p for *_, scores in cells for p in scores]
        sharp = [
            (s, t, [1 / (1 + math.exp(-2 * math.log(p / (1 - p)))) for p in ps])
            for s, t, ps in cells
        ]
        return samples.evaluation(sharp, part, temperature=0.5, uncalibrated_p_all=raw)

    validation = calibrated(samples.VALIDATION_CELLS, "validation")
    test = calibrated(samples.TEST_CELLS, "test")
    out = write_training_report(
        samples.training_run(validation=validation, test=test), tmp_path / "r.xlsx"
    )
    wb = openpyxl.load_workbook(out)
    rows = samples.rows_by_first(wb["Summary"])
    assert rows["Calibration"][1] == (
        f"temperature scaling, T = 0.500 fitted on validation; validation ECE "
        f"{validation.ece_uncalibrated:.3f} before, {validation.ece:.3f} after"
    )
    block = samples.metrics_block(wb["Metrics"], "Test")
    before = f"Calibration before temperature scaling (raw P(ALL)), ECE {test.ece_uncalibrated:.3f}"
    after = f"Calibration after temperature scaling (T = 0.500), ECE {test.ece:.3f}"
    assert before in block and after in block
    assert block["ECE before calibration"][1] == pytest.approx(test.ece_uncalibrated)
    assert block["Expected calibration error"][1] == pytest.approx(test.ece)
    texts = samples.sheet_texts(wb["Metrics"])
    assert texts.index(before) < texts.index(after)


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


def test_no_test_part_shows_no_test_scores(tmp_path: Path) -> None:
    run = samples.training_run(test=None)
    out = write_training_report(run, tmp_path / "r.xlsx")
    wb = openpyxl.load_workbook(out)
    ws = wb["Summary"]
    summary = samples.sheet_texts(ws)
    # No held-out scores anywhere, and a note that says so (in the place they would be).
    assert not any(t.startswith("Test:") for t in summary)
    note = next(t for t in summary if t.startswith("No test part"))
    assert note.startswith("No test part: there are no held-out scores")
    assert summary.index(_TEST_TITLE) < summary.index(note) < summary.index(_VALIDATION_TITLE)
    assert "not held-out" in _VALIDATION_TITLE
    _check_headline(ws, run.validation, "Validation")
    metrics = samples.sheet_texts(wb["Metrics"])
    assert not any(t.startswith("Test") for t in metrics)
    titles = [t for t in metrics if t.startswith("Validation")]
    assert titles == ["Validation (chose the best epoch, the threshold and the band: not held-out)"]
    subjects = {r[0] for r in samples.sheet_rows(wb["Subjects"])[2:]}
    assert {"V1", "V2"} <= subjects
    assert "validation" in wb["Predictions"]["A1"].value
    assert "validation" in wb["Subjects"]["A1"].value


def test_one_class_test_set_shows_na(tmp_path: Path) -> None:
    test = samples.evaluation([("P01", ALL, [0.9, 0.3, 0.7])], "test")
    assert math.isnan(test.metrics.specificity)
    out = write_training_report(samples.training_run(test=test), tmp_path / "r.xlsx")
    wb = openpyxl.load_workbook(out)
    block = samples.metrics_block(wb["Metrics"], "Test")
    assert block["Specificity"][1] == "n/a"
    assert block["Balanced accuracy"][1] == "n/a"
    assert block["ROC AUC"][1] == "n/a"
    assert block["Subject-level specificity"][1] == "n/a"
    assert block["Accuracy"][1] == pytest.approx(2 / 3)
    assert samples.rows_by_first(wb["Summary"])["Test: specificity"][1] == "n/a"


# --------------------------------------------------------------------------- hashes


_OLD_HASH_KEY = "Weights SHA-256"


def _all_texts(wb) -> list[str]:
    return [t for ws in wb.worksheets for t in samples.sheet_texts(ws)]


def test_one_name_per_hash_in_a_training_report(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from leukgui.core import bundle

    manifest = {"name": "cnmc-effnet", "version": "1.2", "weights_sha256": "cd" * 32}
    bundle_file = tmp_path / "m.leukmodel"
    bundle_file.write_bytes(b"stand-in")
    seen: list[Path] = []

    def fake_read_manifest(path: object) -> dict:
        seen.append(Path(path))
        return dict(manifest)

    monkeypatch.setattr(bundle, "read_manifest", fake_read_manifest)
    run = samples.training_run(bundle_path=bundle_file, weight_arrays_sha256="ef" * 32)
    out = write_training_report(run, tmp_path / "r.xlsx")
    assert seen == [bundle_file]
    wb = openpyxl.load_workbook(out)
    rows = samples.rows_by_first(wb["Summary"])
    assert rows["Model SHA-256 (manifest and weights)"][1] == bundle.bundle_identity(manifest)
    assert rows["model.keras SHA-256"][1] == "cd" * 32
    assert rows["Weight arrays SHA-256"][1] == "ef" * 32
    texts = _all_texts(wb)
    assert _OLD_HASH_KEY not in texts
    for key in ("Model SHA-256 (manifest and weights)", "model.keras SHA-256"):
        assert texts.count(key) == 1
    assert texts.count("Weight arrays SHA-256") == 1


def test_hash_rows_need_a_readable_model_file(run: TrainingRun, tmp_path: Path) -> None:
    # The sample's model file does not exist: no identity rows, and no weight-array hash
    # when the run has none.
    assert not run.bundle_path.exists() and not run.weight_arrays_sha256
    out = write_training_report(run, tmp_path / "r.xlsx")
    texts = _all_texts(openpyxl.load_workbook(out))
    for key in (
        _OLD_HASH_KEY,
        "Model SHA-256 (manifest and weights)",
        "model.keras SHA-256",
        "Weight arrays SHA-256",
    ):
        assert key not in texts


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
    assert rows["model.keras SHA-256"][1] == "ab" * 32
    assert _OLD_HASH_KEY not in _all_texts(wb)
    assert rows["Source format"][1] == "imagefolder"
    assert rows["Cells"][1] == 16
    assert rows["Unreadable files"][1] == 2
    assert rows["Decision threshold (P(ALL))"][1] == pytest.approx(samples.THRESHOLD)
    _check_headline(ws, ev, "")
    assert rows["Accuracy"][1] == pytest.approx(ev.metrics.accuracy)
    # One subject-level figure (the subject_level calls of the headline), not a second one.
    assert "Subject-level accuracy" not in rows
    assert DEMO_NOTICE not in samples.sheet_texts(ws)
    block = samples.metrics_block(wb["Metrics"], "Evaluation")
    assert block["Truth ALL"][1:3] == (ev.metrics.tp, ev.metrics.fn)
    level = ev.subject_level
    assert block["Subject-level accuracy"][2:4] == pytest.approx(level.intervals["accuracy"])
    for name, key in _BOOTSTRAPPED.items():
        assert block[name][2:4] == pytest.approx(ev.intervals.intervals[key]), name
    assert len(samples.sheet_rows(wb["Predictions"])) == 2 + len(ev.predictions)
    errors = samples.sheet_rows(wb["Errors"])
    assert errors[0] == ("Unreadable file", "Reason")
    assert errors[1] == ("/data/holdout/bad.png", "cannot decode")
    assert errors[2][1] == "empty file"
    assert wb["Errors"]["A3"].data_type == "s"


def test_evaluation_report_with_tta(tmp_path: Path) -> None:
    ev = samples.evaluation(samples.TEST_CELLS, "holdout")
    tta = samples.evaluation(
        [(s, t, [min(1.0, p + 0.05) for p in ps]) for s, t, ps in samples.TEST_CELLS], "holdout"
    )
    out = write_evaluation_report(
        ev,
        tmp_path / "eval.xlsx",
        model=_manifest(),
        data=_scan_summary(),
        tta=tta,
        images_per_second=100.0,
        tta_images_per_second=25.0,
    )
    wb = openpyxl.load_workbook(out)
    ws = wb["Summary"]
    _check_headline(ws, ev, "")  # the plain scores stay the headline
    _check_headline(ws, tta, "TTA")  # reported beside them, never instead
    rows = samples.rows_by_first(ws)
    assert rows["TTA cost"][1] == "4.0x the time per cell"
    plain = samples.metrics_block(wb["Metrics"], "Evaluation — holdout")
    flips = samples.metrics_block(wb["Metrics"], "Evaluation with test-time augmentation")
    assert plain["Truth ALL"][1:3] == (ev.metrics.tp, ev.metrics.fn)
    assert flips["Truth ALL"][1:3] == (tta.metrics.tp, tta.metrics.fn)
    assert flips["Balanced accuracy"][1] == pytest.approx(tta.metrics.balanced_accuracy)
    # Per subject and per cell: the plain evaluation.
    assert len(samples.sheet_rows(wb["Predictions"])) == 2 + len(ev.predictions)


def test_evaluation_report_warns_about_cells_without_subjects(tmp_path: Path) -> None:
    out = write_evaluation_report(
        samples.evaluation(samples.TEST_CELLS, "holdout"),
        tmp_path / "eval.xlsx",
        model=_manifest(),
        data={**_scan_summary(), "image_subjects": 4},
    )
    texts = samples.sheet_texts(openpyxl.load_workbook(out)["Summary"])
    assert any(t.startswith("Warning: subjects unknown for 4 cells") for t in texts)


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


def test_the_subjects_sheet_calls_subjects_by_the_subject_level_rule(tmp_path: Path) -> None:
    """P1's mean P(ALL) is 0.53 (ALL) though most of its decided cells are HEM: the Subjects
    sheet must agree with the Summary's subject-level results, not contradict them."""
    ev = samples.evaluation([("P1", ALL, [0.95, 0.3, 0.35]), ("H1", HEM, [0.1, 0.2])], "test")
    assert ev.subject_level.calls["P1"] == ALL
    run = samples.training_run(test=ev)
    wb = openpyxl.load_workbook(write_training_report(run, tmp_path / "r.xlsx"))
    rows = samples.rows_by_first(wb["Subjects"])
    header = next(r for r in samples.sheet_rows(wb["Subjects"]) if r[0] == "Subject")
    call = header.index("Subject call")
    assert rows["P1"][call] == ALL and rows["P1"][call + 1] == "yes"
    summary = samples.rows_by_first(wb["Summary"])
    assert summary["Test: subjects called right"][1].startswith("2 of 2")
    notes = " ".join(samples.sheet_texts(wb["Subjects"]))
    assert ev.subject_level.rule in notes
