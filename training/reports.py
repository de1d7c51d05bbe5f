"""The files a training run or a model evaluation leaves behind: the epoch log CSV and the
training and evaluation workbooks.

A lab keeps these next to a trained model file to judge it: what data it saw, how training
went and how it scores on held-out subjects (with confidence intervals and per-subject
results). Every figure comes from the `Evaluation` objects of `training.scoring`, so a report
can never disagree with a manifest. The curves figure is in `training.curves`, the backbone
comparison in `training.comparison`.

Same rules as the analysis report: cells go through `leukgui.core.xlsx`, so a subject id or
path like `=HYPERLINK(...)` stays inert text and NaN shows as "n/a"; metrics go through the
one metric table (`leukgui.core.metric_table`); every file is written atomically so a failed
write leaves the previous one intact. No TensorFlow here.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from openpyxl import Workbook
from openpyxl.styles import Font
from openpyxl.utils import get_column_letter
from openpyxl.worksheet.pagebreak import Break
from openpyxl.worksheet.worksheet import Worksheet

from leukgui.core.atomic import atomic_write
from leukgui.core.exports import csv_safe, full_path
from leukgui.core.formatting import duration, edges_text, local_time, percent_range
from leukgui.core.metric_table import (
    METRIC_WIDTHS,
    MetricRow,
    binary_metric_rows,
    calibration_row,
    with_intervals,
    write_confusion_matrix,
    write_metric_notes,
    write_metric_table,
)
from leukgui.core.metrics import call_label
from leukgui.core.results import ALL, DEMO_NOTICE, HEM
from leukgui.core.xlsx import (
    BANNER_FILL,
    BANNER_FONT,
    BOLD,
    INT,
    ITALIC,
    LEFT_TOP,
    NOTE_FONT,
    PCT,
    PROB,
    SECTION_FONT,
    WRAP_TOP,
    KeyValues,
    border_row,
    header_row,
    label_fill,
    number_cell,
    page_header,
    picture_in_cell,
    print_setup,
    set_widths,
    text_cell,
    title_cell,
)
from training.comparison import DISAGREEMENT_CAP, PARENT_SHEET, ParentComparison, p_value_text
from training.curves import curves_sheet
from training.history import LOG_COLUMNS, EpochLog, TrainingRun
from training.scoring import Evaluation
from training.stats import few_subjects

__all__ = ["write_evaluation_report", "write_log_csv", "write_training_report"]

_WRONG_FONT = Font(bold=True, color="C00000")
_BLOCK_TITLE_FONT = Font(bold=True, size=14)


def _setting_value(value: Any) -> Any:
    """A settings value as a cell value: scalars as they are, anything else as JSON."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, Path):
        return str(value)
    return json.dumps(value, default=str, ensure_ascii=False, sort_keys=True)


# --------------------------------------------------------------------------- log CSV

_CSV_FORMATS = {"seconds": ".3f", "images_per_second": ".1f"}


def _csv_value(name: str, value: Any) -> str:
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return ""
        return format(value, _CSV_FORMATS.get(name, ".6g"))
    return csv_safe(value)


def write_log_csv(history: Sequence[EpochLog], path: Path) -> Path:
    """Write the epoch log (one row per epoch, columns `LOG_COLUMNS`) as CSV.

    A plain CSV is what people plot, diff and keep with a model file. Floats keep 6 significant
    digits (seconds 3 decimals, images/s 1), NaN is an empty field so pandas reads it back
    as NaN. Raises `ReportWriteError` (previous file untouched) when it cannot be written.
    """
    path = Path(path)

    def write(tmp: Path) -> None:
        with open(tmp, "w", encoding="utf-8", newline="") as fh:
            out = csv.writer(fh)
            out.writerow(LOG_COLUMNS)
            for log in history:
                out.writerow(
                    [_csv_value(n, v) for n, v in zip(LOG_COLUMNS, log.row(), strict=True)]
                )

    atomic_write(path, write)
    return path


# --------------------------------------------------------------------------- shared sheets


def _pct(value: float) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{100 * value:.1f}%"


def _ci_text(interval: Any) -> str:
    """ " (95% CI a – b)" for a (low, high) pair; "" when undefined."""
    text = percent_range(interval, missing="")
    return f" (95% CI {text})" if text else ""


def _boot(evaluation: Evaluation) -> dict[str, tuple[float, float]]:
    boot = getattr(evaluation, "intervals", None)
    return dict(getattr(boot, "intervals", {}) or {})


def _boot_note(evaluation: Evaluation) -> str:
    boot = getattr(evaluation, "intervals", None)
    if boot is None:
        return ""
    caution = few_subjects(getattr(evaluation, "subject_level", None))
    return (
        f"95% CI of cell-level scores: bootstrap over {boot.subjects} subjects "
        f"({boot.resamples:,} resamples, seed {boot.seed}), because cells of one subject are "
        "not independent; Wilson intervals (cells as independent) would be too narrow."
        + (f" Caution, {evaluation.part}: {caution}." if caution else "")
    )


def _headline(kv: KeyValues, evaluation: Evaluation, label: str = "") -> None:
    """Subjects first (the unit a clinician reasons in), then the cell-level figures with
    their subject-bootstrap intervals."""
    m = evaluation.metrics
    boot = _boot(evaluation)

    def key(name: str) -> str:
        return f"{label}: {name}" if label else name[:1].upper() + name[1:]

    kv.add(key("cells / subjects"), f"{m.n:,} cells from {len(evaluation.subjects):,} subjects")
    level = getattr(evaluation, "subject_level", None)
    if level is not None:
        sm = level.metrics
        right = sm.tp + sm.tn
        kv.add(
            key("subjects called right"),
            f"{right} of {sm.n} ({_pct(sm.accuracy)}){_ci_text(level.intervals.get('accuracy'))}",
            bold=True,
        )
        kv.add(
            key("subject-level sensitivity / specificity"),
            f"{_pct(sm.recall)} of {sm.tp + sm.fn} ALL subjects / {_pct(sm.specificity)} of "
            f"{sm.tn + sm.fp} HEM subjects",
        )
    kv.add(
        key("balanced accuracy (cells)"),
        f"{_pct(m.balanced_accuracy)}{_ci_text(boot.get('balanced_accuracy'))}",
        bold=True,
    )
    kv.add(key("sensitivity (recall)"), f"{_pct(m.recall)}{_ci_text(boot.get('recall'))}")
    kv.add(key("specificity"), f"{_pct(m.specificity)}{_ci_text(boot.get('specificity'))}")
    weighted = getattr(m, "weighted_f1", None)
    if weighted is not None:
        kv.add(
            key("weighted F1 (C-NMC ranking)"),
            f"{_pct(weighted)}{_ci_text(boot.get('weighted_f1'))}",
        )
    auc_ci = boot.get("roc_auc")
    if auc_ci and all(math.isfinite(v) for v in auc_ci) and math.isfinite(m.roc_auc):
        kv.add(key("ROC AUC"), f"{m.roc_auc:.3f} (95% CI {auc_ci[0]:.3f} – {auc_ci[1]:.3f})")
    else:
        kv.add(key("ROC AUC"), m.roc_auc, PROB)
    check = getattr(evaluation, "band_check", None)
    if check is not None:
        kv.add(key("uncertainty band"), _band_check_text(check))
    for note in evaluation.notes:
        kv.note(note)


def _band_text(evaluation: Evaluation) -> str:
    lo, hi = evaluation.uncertainty_band
    return f"UNCERTAIN when {edges_text(lo, hi, sep=' < P(ALL) < ')}"


def _side_text(error: float, cells: int, target: float, meets: bool | None) -> str:
    if not cells:
        return "no cells"
    if meets is None:
        mark = " — too few cells to judge the target"
    else:
        mark = "" if meets else " — above the target"
    return f"{_pct(error)} wrong of {cells:,}{mark}"


def _band_check_text(check: Any) -> str:
    target = check.target_error
    hem = _side_text(check.error_hem, check.cells_hem, target, check.meets_target_hem)
    all_side = _side_text(check.error_all, check.cells_all, target, check.meets_target_all)
    return (
        f"HEM side {hem}; ALL side {all_side}; "
        f"{check.uncertain:,} uncertain, coverage {_pct(check.coverage)} "
        f"(target ≤ {_pct(check.target_error)} wrong per side)"
    )


def _extra_rows(evaluation: Evaluation) -> list[MetricRow]:
    """What a training or evaluation report shows below the standard metrics: calibration,
    the uncertain cells and accuracy outside the band."""
    m = evaluation.metrics
    d = evaluation.decided_metrics
    rows = [calibration_row(evaluation.ece)]
    before = getattr(evaluation, "ece_uncalibrated", None)
    temperature = getattr(evaluation, "temperature", 1.0)
    if before is not None and temperature != 1.0:
        rows.append(
            MetricRow(
                "ECE before calibration",
                before,
                f"the same on the raw P(ALL), before temperature scaling (T = {temperature:.3f})",
                fmt=PROB,
            )
        )
    rows += [
        MetricRow(
            "Uncertain cells",
            evaluation.uncertain,
            "cells inside the band; the ratios above count them by the threshold alone",
            fmt=INT,
            count=(evaluation.uncertain, m.n),
        ),
        MetricRow(
            "Accuracy on decided cells",
            d.accuracy,
            f"accuracy on the {d.n:,} cells outside the uncertainty band",
            count=(d.tp + d.tn, d.n),
            wilson=True,
        ),
    ]
    return rows


def _subject_level_rows(evaluation: Evaluation) -> list[MetricRow]:
    level = getattr(evaluation, "subject_level", None)
    if level is None:
        return []
    sm = level.metrics
    iv = level.intervals

    def row(name: str, key: str, value: float, k: int, n: int, meaning: str) -> MetricRow:
        interval = iv.get(key)
        return MetricRow(name, value, meaning, count=(k, n), interval=interval)

    return [
        row(
            "Subject-level accuracy",
            "accuracy",
            sm.accuracy,
            sm.tp + sm.tn,
            sm.n,
            "subjects whose call equals their true class",
        ),
        row(
            "Subject-level sensitivity",
            "sensitivity",
            sm.recall,
            sm.tp,
            sm.tp + sm.fn,
            "ALL subjects called ALL",
        ),
        row(
            "Subject-level specificity",
            "specificity",
            sm.specificity,
            sm.tn,
            sm.tn + sm.fp,
            "HEM subjects called HEM",
        ),
        MetricRow(
            "Subject-level balanced accuracy",
            sm.balanced_accuracy,
            "(subject sensitivity + subject specificity) / 2",
            interval=iv.get("balanced_accuracy"),
        ),
    ]


def _band_rows(ws: Worksheet, row: int, evaluation: Evaluation) -> int:
    check = getattr(evaluation, "band_check", None)
    if check is None:
        return row
    text_cell(ws, row, 1, "Uncertainty band: achieved error and coverage").font = BOLD
    row += 1
    header_row(ws, row, ["Side", "Edge (P(ALL))", "Cells", "Wrong", "Error", "Target", "Met?"])
    ws.row_dimensions[row].height = 30
    lo, hi = evaluation.uncertainty_band
    for side, edge, cells, wrong, error, meets in (
        (
            "Called HEM (P(ALL) ≤ low edge)",
            lo,
            check.cells_hem,
            check.errors_hem,
            check.error_hem,
            check.meets_target_hem,
        ),
        (
            "Called ALL (P(ALL) ≥ high edge)",
            hi,
            check.cells_all,
            check.errors_all,
            check.error_all,
            check.meets_target_all,
        ),
    ):
        row += 1
        text_cell(ws, row, 1, side)
        number_cell(ws, row, 2, edge, PROB)
        number_cell(ws, row, 3, cells, INT)
        number_cell(ws, row, 4, wrong, INT)
        cell = number_cell(ws, row, 5, error, PCT)
        if meets is False:
            cell.font = _WRONG_FONT
        number_cell(ws, row, 6, check.target_error, PCT)
        met = {True: "yes", False: "no"}.get(meets, f"too few cells (< {check.min_side_cells})")
        text_cell(ws, row, 7, met if cells else "no cells")
        border_row(ws, row, 7)
    row += 1
    text_cell(
        ws,
        row,
        1,
        f"Uncertain: {check.uncertain:,} cells; coverage (decided share) {_pct(check.coverage)}.",
    ).font = NOTE_FONT
    return row + 2


def _reliability_table(ws: Worksheet, row: int, bins: Sequence[Any], title: str) -> int:
    text_cell(ws, row, 1, title).font = BOLD
    row += 1
    header_row(ws, row, ["P(ALL) bin", "Cells", "Mean P(ALL)", "Observed ALL share", "Gap"])
    ws.row_dimensions[row].height = 30
    for b in bins:
        row += 1
        text_cell(ws, row, 1, f"{b.lower:.1f} – {b.upper:.1f}")
        number_cell(ws, row, 2, b.cells, INT)
        number_cell(ws, row, 3, b.mean_p_all, PROB)
        number_cell(ws, row, 4, b.fraction_all, PCT)
        number_cell(ws, row, 5, abs(b.mean_p_all - b.fraction_all), PROB)
        border_row(ws, row, 5)
    return row + 1


def _evaluation_block(ws: Worksheet, row: int, evaluation: Evaluation, title: str) -> int:
    """Subject-level results, the confusion matrix, cell metrics with subject-bootstrap 95%
    CIs, the band's achieved error and the calibration of one evaluation; returns the next
    free row."""
    m = evaluation.metrics
    text_cell(ws, row, 1, title).font = _BLOCK_TITLE_FONT
    ws.row_dimensions[row].height = 22
    row += 1
    text_cell(
        ws,
        row,
        1,
        f"{m.n:,} cells from {len(evaluation.subjects):,} subjects; ALL when P(ALL) ≥ "
        f"{evaluation.threshold:.3f}, else HEM; {_band_text(evaluation)}.",
    ).font = ITALIC
    row += 2
    subject_rows = _subject_level_rows(evaluation)
    if subject_rows:
        level = evaluation.subject_level
        text_cell(ws, row, 1, "Subjects (primary outcome)").font = BOLD
        row += 1
        text_cell(
            ws, row, 1, f"Rule: {level.rule}. 95% CI: {level.interval_method}."
        ).font = NOTE_FONT
        row += 1
        row = write_metric_table(ws, row, subject_rows)
        row += 2
    text_cell(ws, row, 1, "Cells").font = BOLD
    row += 1
    row = write_confusion_matrix(ws, row, m, called="Predicted")
    row += 2
    rows = with_intervals([*binary_metric_rows(m), *_extra_rows(evaluation)], _boot(evaluation))
    row = write_metric_table(ws, row, rows)
    row += 1
    note = _boot_note(evaluation)
    if note:
        text_cell(ws, row, 1, note).font = NOTE_FONT
        row += 1
    row += 1
    row = _band_rows(ws, row, evaluation)
    temperature = getattr(evaluation, "temperature", 1.0)
    before = getattr(evaluation, "calibration_uncalibrated", None)
    if before and temperature != 1.0:
        row = _reliability_table(
            ws,
            row,
            before,
            f"Calibration before temperature scaling (raw P(ALL)), ECE "
            f"{getattr(evaluation, 'ece_uncalibrated', math.nan):.3f}",
        )
        row += 1
        title = (
            f"Calibration after temperature scaling (T = {temperature:.3f}), "
            f"ECE {evaluation.ece:.3f}"
        )
    else:
        title = f"Calibration (reliability table), ECE {evaluation.ece:.3f}"
    row = _reliability_table(ws, row, evaluation.calibration, title)
    for note in evaluation.notes:
        row += 1
        text_cell(ws, row, 1, note).font = NOTE_FONT
    return row + 2


def _metrics_sheet(ws: Worksheet, blocks: Sequence[tuple[Evaluation, str]]) -> None:
    row = 1
    if not blocks:
        text_cell(ws, row, 1, "No labelled cells were scored.").font = ITALIC
    for i, (evaluation, title) in enumerate(blocks):
        if i:
            ws.row_breaks.append(Break(id=row - 1))  # each block starts a printed page
        row = _evaluation_block(ws, row, evaluation, title)
    write_metric_notes(
        ws,
        row,
        (
            "n/a: the ratio is undefined (its denominator is zero).",
            "95% CI: cell-level rows, a bootstrap over subjects (see the note under each "
            "table); subject-level rows, an exact interval over subjects; rows marked with a "
            "Count and no bootstrap, the Wilson score interval.",
        ),
    )
    set_widths(ws, METRIC_WIDTHS)
    print_setup(ws)


_SUBJECT_HEADERS = (
    "Subject",
    "True class",
    "Cells",
    "Called ALL",
    "Called HEM",
    "Uncertain",
    "Correct",
    "Accuracy",
    "Mean P(ALL)",
    "Subject call",
    "Subject call right",
)


def _subjects_sheet(ws: Worksheet, evaluation: Evaluation | None, title: str) -> None:
    if evaluation is None:
        text_cell(ws, 1, 1, "No validation or test scores.").font = ITALIC
        return
    text_cell(ws, 1, 1, title).font = BOLD
    header_row(ws, 2, _SUBJECT_HEADERS)
    ws.row_dimensions[2].height = 30
    row = 2
    level = getattr(evaluation, "subject_level", None)
    calls = dict(level.calls) if level is not None else {}
    for s in evaluation.subjects:
        row += 1
        text_cell(ws, row, 1, s.subject)
        text_cell(ws, row, 2, s.truth).fill = label_fill(s.truth)
        number_cell(ws, row, 3, s.cells, INT)
        number_cell(ws, row, 4, s.called_all, INT)
        number_cell(ws, row, 5, s.called_hem, INT)
        number_cell(ws, row, 6, s.uncertain, INT)
        number_cell(ws, row, 7, s.correct, INT)
        number_cell(ws, row, 8, s.accuracy, PCT)
        number_cell(ws, row, 9, s.mean_p_all, PROB)
        call = calls.get(s.subject, s.call)
        text_cell(ws, row, 10, call).fill = label_fill(call)
        right = call == s.truth
        cell = text_cell(ws, row, 11, "yes" if right else "no")
        if not right:
            cell.font = _WRONG_FONT
        border_row(ws, row, len(_SUBJECT_HEADERS))
    ws.freeze_panes = "B3"
    ws.auto_filter.ref = f"A2:{get_column_letter(len(_SUBJECT_HEADERS))}{max(row, 3)}"
    row += 2
    text_cell(
        ws,
        row,
        1,
        "Correct: cells whose call by the threshold alone equals the truth. Subject call: "
        + (
            f"{level.rule} (as in the subject-level results)."
            if level is not None
            else "the majority of the subject's decided cells (UNCERTAIN on a tie)."
        ),
    ).font = NOTE_FONT
    longest = max((len(s.subject) for s in evaluation.subjects), default=8)
    set_widths(ws, [min(40, max(14, longest + 3)), 11, 9, 11, 11, 11, 9, 10, 12, 12, 12])
    print_setup(ws, "2:2")


def _predictions_sheet(ws: Worksheet, evaluation: Evaluation | None, title: str) -> None:
    if evaluation is None:
        text_cell(ws, 1, 1, "No validation or test scores.").font = ITALIC
        return
    p = evaluation.predictions
    t = evaluation.threshold
    headers = [
        "Path",
        "Subject",
        "Truth",
        "P(ALL)",
        f"Call (ALL if P(ALL) ≥ {t:.3f})",
        "Band call",
        "Correct",
    ]
    text_cell(ws, 1, 1, title).font = BOLD
    header_row(ws, 2, headers)
    ws.row_dimensions[2].height = 30
    row = 2
    longest_path = 20
    for path, subject, truth, p_all in zip(p.paths, p.subjects, p.truth, p.p_all, strict=True):
        row += 1
        full = full_path(path)
        longest_path = max(longest_path, len(full))
        text_cell(ws, row, 1, full)
        text_cell(ws, row, 2, subject)
        text_cell(ws, row, 3, truth)
        number_cell(ws, row, 4, float(p_all), PROB)
        call = ALL if p_all >= t else HEM
        text_cell(ws, row, 5, call)
        banded = call_label(float(p_all), t, evaluation.uncertainty_band)
        text_cell(ws, row, 6, banded).fill = label_fill(banded)
        right = call == truth
        cell = text_cell(ws, row, 7, "yes" if right else "no")
        if not right:
            cell.font = _WRONG_FONT
    ws.freeze_panes = "B3"
    ws.auto_filter.ref = f"A2:G{max(row, 3)}"
    set_widths(ws, [min(90, longest_path + 2), 16, 8, 9, 16, 12, 9])
    print_setup(ws, "2:2")


def _errors_rows(ws: Worksheet, row: int, unreadable: Sequence[tuple[Any, Any]]) -> int:
    header_row(ws, row, ["Unreadable file", "Reason"])
    if not unreadable:
        row += 1
        text_cell(ws, row, 1, "(none: every file could be read)").font = ITALIC
        return row + 1
    for path, reason in unreadable:
        row += 1
        text_cell(ws, row, 1, full_path(path))
        text_cell(ws, row, 2, reason)
    return row + 1


def _primary(
    test: Evaluation | None, validation: Evaluation | None
) -> tuple[Evaluation | None, str]:
    """The evaluation to show per subject and per cell: test if there is one."""
    if test is not None:
        return test, "test"
    if validation is not None:
        return validation, "validation (no test split)"
    return None, ""


def _data_sheet(ws: Worksheet, run: TrainingRun) -> None:
    parts = list(run.data) or ["train", "validation", "test"]
    split = run.split or {}
    title_cell(ws, 1, "Data and split")
    method = split.get("method", "unknown")
    seed = split.get("seed")
    seed_text = seed if seed is not None else "n/a"
    if split.get("split_by") == "image":
        line = (
            f"SPLIT BY IMAGE ({method}, seed {seed_text}): subjects are unknown, so each image "
            "counts as its own subject and cells of one patient may be in several parts. Scores "
            "are optimistic."
        )
    else:
        line = (
            f"Split by subject ({method}, seed {seed_text}): every subject's cells are in "
            "exactly one part."
        )
    text_cell(ws, 2, 1, line).font = BANNER_FONT if split.get("split_by") == "image" else ITALIC
    row = 3
    rule = split.get("subject_rule")
    if rule:
        described = rule.get("description") if isinstance(rule, dict) else rule
        text_cell(ws, row, 1, f"Subjects from: {described}").font = NOTE_FONT
        row += 1
    if split.get("test_source"):
        text_cell(
            ws, row, 1, f"Test part: a separate data set, {split['test_source']}"
        ).font = NOTE_FONT
        row += 1
    parent = (run.settings or {}).get("parent")
    if parent:  # `leukgui train --init-from`: the model this one started from
        text_cell(ws, row, 1, f"Fine-tuned from {parent}").font = NOTE_FONT
        row += 1
    for warning in run.warnings:
        text_cell(ws, row, 1, f"Warning: {warning}").font = BANNER_FONT
        row += 1
    row += 1
    headers = [
        "Part",
        "Cells",
        "ALL cells",
        "HEM cells",
        "Subjects",
        "ALL subjects",
        "HEM subjects",
    ]
    header_row(ws, row, headers)
    ws.row_dimensions[row].height = 30
    totals = [0] * 6
    for part in parts:
        info = run.data.get(part, {}) or {}
        cells = info.get("cells_per_class", {}) or {}
        subjects = info.get("subjects_per_class", {}) or {}
        values = [
            info.get("cells", 0),
            cells.get(ALL, 0),
            cells.get(HEM, 0),
            info.get("subjects", 0),
            subjects.get(ALL, 0),
            subjects.get(HEM, 0),
        ]
        row += 1
        text_cell(ws, row, 1, part).font = BOLD
        for col, value in enumerate(values, 2):
            number_cell(ws, row, col, value, INT)
        totals = [t + (v or 0) for t, v in zip(totals, values, strict=True)]
        border_row(ws, row, 7)
    row += 1
    text_cell(ws, row, 1, "Total").font = BOLD
    for col, value in enumerate(totals, 2):
        number_cell(ws, row, col, value, INT).font = BOLD
    border_row(ws, row, 7)
    row += 1
    text_cell(
        ws,
        row,
        1,
        "Subjects per class: a subject with cells of both classes counts once in each.",
    ).font = NOTE_FONT
    row += 2

    lists = split.get("subjects", {}) or {}
    text_cell(ws, row, 1, "Subjects per part").font = SECTION_FONT
    row += 1
    names = list(lists) or parts
    header_row(ws, row, [f"{n} ({len(lists.get(n, []))})" for n in names])
    longest = 12
    for col, name in enumerate(names, 1):
        for i, subject in enumerate(lists.get(name, []) or [], 1):
            text_cell(ws, row + i, col, subject)
            longest = max(longest, len(str(subject)))
    row += max((len(lists.get(n, []) or []) for n in names), default=0) + 2

    if run.unreadable:
        # The path spans the part table's columns A:F so column A stays narrow.
        text_cell(ws, row, 1, f"Unreadable files ({len(run.unreadable)})").font = SECTION_FONT
        row += 1
        header_row(ws, row, ["Unreadable file", "", "", "", "", "", "Reason"])
        ws.merge_cells(start_row=row, start_column=1, end_row=row, end_column=6)
        for path, reason in run.unreadable:
            row += 1
            text_cell(ws, row, 1, full_path(path)).alignment = LEFT_TOP
            ws.merge_cells(start_row=row, start_column=1, end_row=row, end_column=6)
            text_cell(ws, row, 7, reason)
    else:
        text_cell(ws, row, 1, "Unreadable files: none").font = ITALIC
    widths = [16, 12, 12, 12, 12, 13, 13]
    for col, width in enumerate(widths, 1):
        letter = get_column_letter(col)
        current = ws.column_dimensions[letter].width or 0
        wanted = max(width, min(40, longest + 3)) if col <= len(names) else width
        ws.column_dimensions[letter].width = max(current, wanted)
    print_setup(ws)


def _bundle_identity(run: TrainingRun) -> tuple[str, str] | None:
    """(bundle SHA-256, model.keras SHA-256) of the saved model file, as the app shows them."""
    if run.bundle_path is None:
        return None
    try:
        from leukgui.core.bundle import bundle_identity, read_manifest

        manifest = read_manifest(run.bundle_path)
        return bundle_identity(manifest), str(manifest.get("weights_sha256", ""))
    except Exception:  # noqa: BLE001 - a report is still written without the identity rows
        return None


def _model_identity(manifest: dict) -> str:
    """The model file's identity as every analysis report shows it (checked when the file
    was loaded); "unknown" for a manifest without one."""
    return str(manifest.get("bundle_sha256") or "unknown")


def _summary_training(ws: Worksheet, run: TrainingRun) -> None:
    value_width = 100
    title_cell(ws, 1, f"Training report — {run.name} {run.version}".strip())
    kv = KeyValues(ws, 2, value_width)
    if run.cancelled:
        kv.banner(
            f"CANCELLED — training was stopped by the user after {len(run.history)} "
            f"epoch(s); this model is not fully trained."
        )
    split = run.split or {}
    if split.get("split_by") == "image":
        kv.banner(
            "SPLIT BY IMAGE: the subjects (patients) of these cells are unknown, so cells of one "
            "patient may be in both training and test. Every score here is optimistic."
        )
    for warning in run.warnings:
        kv.note(f"Warning: {warning}", BANNER_FONT)
    kv.row += 1
    kv.add("Model", f"{run.name} {run.version}".strip(), bold=True)
    kv.add("Backbone", run.backbone)
    kv.add("Model file", full_path(run.bundle_path) if run.bundle_path else "(not saved)")
    identity = _bundle_identity(run)
    if identity:
        kv.add("Model SHA-256 (manifest and weights)", identity[0])
        kv.add("model.keras SHA-256", identity[1])
    if run.weight_arrays_sha256:
        kv.add("Weight arrays SHA-256", run.weight_arrays_sha256)
    if run.run_folder is not None:
        kv.add("Run folder", full_path(run.run_folder))
    kv.add("Stopped because", "CANCELLED" if run.cancelled else run.stopped_because)
    kv.add("Epochs run", len(run.history))
    kv.add("Best epoch (weights kept)", run.best_epoch)
    kv.add("Training time", duration(run.training_seconds))
    kv.add("Training speed (images/s)", run.train_images_per_second, "#,##0.0")
    kv.add("Inference speed (images/s)", run.inference_images_per_second, "#,##0.0")
    kv.add("Parameters (total)", run.parameters, INT)
    kv.add("Parameters (trainable, fine-tuning)", run.trainable_parameters, INT)
    kv.add("Device", run.device)

    reference = run.validation if run.validation is not None else run.test
    kv.section("Decision rule (chosen on the validation part)")
    if reference is not None:
        kv.add("Decision threshold (P(ALL))", reference.threshold, PROB)
        lo, hi = reference.uncertainty_band
        kv.add(
            "Uncertainty band (P(ALL))",
            f"{edges_text(lo, hi, sep=' – ')} (UNCERTAIN strictly inside)",
        )
        temperature = getattr(reference, "temperature", 1.0)
        before = getattr(reference, "ece_uncalibrated", math.nan)
        if temperature != 1.0:
            kv.add(
                "Calibration",
                f"temperature scaling, T = {temperature:.3f} fitted on validation; validation "
                f"ECE {before:.3f} before, {reference.ece:.3f} after",
            )
        else:
            kv.add("Calibration", "none (P(ALL) as the network gives it)")
    stain = (run.settings or {}).get("stain")
    if stain:
        kv.add("Stain normalisation", str(stain))
    kv.add("Threshold rule", run.threshold_rule)
    kv.add("Band rule", run.band_rule)

    kv.section("Test scores (held-out subjects)")
    if run.test is not None:
        _headline(kv, run.test, "Test")
    else:
        kv.note(
            "No test part: there are no held-out scores. The validation scores below chose the "
            "best epoch, the threshold and the band, so they are optimistic.",
            BANNER_FONT,
        )
        ws.cell(row=kv.row - 1, column=1).fill = BANNER_FILL
    if run.validation is not None:
        kv.section("Validation scores (chose the epoch, threshold and band: not held-out)")
        _headline(kv, run.validation, "Validation")
    kv.row += 1
    note = _boot_note(run.test or run.validation) if (run.test or run.validation) else ""
    if note:
        kv.note(note)
    if run.test is not None and run.validation is not None:
        caution = few_subjects(getattr(run.validation, "subject_level", None))
        if caution:
            kv.note(f"Caution, validation: {caution}.")
    kv.note(
        "Full metrics with 95% confidence intervals: Metrics sheet; per subject: Subjects; "
        "per cell: Predictions."
    )

    kv.section("Settings")
    if not run.settings:
        kv.note("(no settings recorded)")
    for key, value in run.settings.items():
        kv.add(str(key), _setting_value(value))
    kv.row += 1
    kv.add("Report generated", local_time(datetime.now().astimezone()))
    set_widths(ws, [46, value_width])
    print_setup(ws)


def _finish(wb: Workbook, title: str) -> None:
    """Workbook properties, and `title` in every sheet's page header so a printed page says
    which report it belongs to."""
    wb.properties.creator = "LeukGUI training"
    wb.properties.title = title
    generated = f"Generated {local_time(datetime.now().astimezone())}"
    for ws in wb.worksheets:
        page_header(ws, f"LeukGUI — {title}", generated)


def write_training_report(
    run: TrainingRun, path: Path, *, parent_comparison: ParentComparison | None = None
) -> Path:
    """Write the Excel report of one training run: Summary, Data, Curves, Metrics,
    Subjects and Predictions sheets, and for a fine-tune with its comparison the
    "Parent vs new" sheet.

    This is what a lab files with a trained model file: what it was trained on, how training
    went, and how it scores on held-out subjects. Raises `ReportWriteError` (previous file
    untouched) when it cannot be written.
    """
    path = Path(path)
    wb = Workbook()
    summary = wb.active
    summary.title = "Summary"
    _summary_training(summary, run)
    _data_sheet(wb.create_sheet("Data"), run)
    curves_sheet(wb.create_sheet("Curves"), run)
    blocks = [
        (ev, title)
        for ev, title in (
            (run.test, "Test (held-out subjects)"),
            (
                run.validation,
                "Validation (chose the best epoch, the threshold and the band: not held-out)",
            ),
        )
        if ev is not None
    ]
    _metrics_sheet(wb.create_sheet("Metrics"), blocks)
    primary, part = _primary(run.test, run.validation)
    _subjects_sheet(wb.create_sheet("Subjects"), primary, f"Per subject — {part}")
    _predictions_sheet(wb.create_sheet("Predictions"), primary, f"Every cell — {part}")
    if parent_comparison is not None:
        parent_sheet(wb.create_sheet(PARENT_SHEET), parent_comparison)
    _finish(wb, f"Training report {run.name} {run.version}")
    atomic_write(path, wb.save)
    return path


# --------------------------------------------------------------------------- parent vs new

PARENT_METRIC_ROWS = (
    ("Balanced accuracy", "balanced_accuracy"),
    ("Sensitivity (recall, ALL)", "recall"),
    ("Specificity (HEM)", "specificity"),
    ("ROC AUC", "roc_auc"),
)
PARENT_DISAGREEMENT_HEADERS = (
    "Thumbnail",
    "Path",
    "Subject",
    "Truth",
    "Parent P(ALL)",
    "Parent label",
    "New P(ALL)",
    "New label",
)
_PARENT_THUMB_PX = 64


def _cell_png(path: str, px: int) -> bytes | None:
    """A px-square thumbnail of a cell image as the model saw it, or None if unreadable."""
    from leukgui.core.exports import png_bytes
    from leukgui.core.imaging import ImageError, decode_image, thumbnail

    try:
        return png_bytes(thumbnail(decode_image(path), px))
    except (ImageError, OSError, ValueError):
        return None


def parent_sheet(ws: Worksheet, c: ParentComparison, *, thumbnails: bool = True) -> None:
    """The "Parent vs new" sheet: the verdict (A2), both models' metrics side by side (a
    table headed "Metric" in column A), the paired difference and McNemar's test (keys in
    column A, values in B), then every cell the two label differently (capped)."""
    p = c.paired
    title_cell(ws, 1, "Parent vs new model on the same held-out test cells")
    verdict = text_cell(ws, 2, 1, c.verdict)
    verdict.font = BOLD
    verdict.alignment = WRAP_TOP
    ws.merge_cells(start_row=2, start_column=1, end_row=2, end_column=8)
    ws.row_dimensions[2].height = 48
    row = 4
    header_row(ws, row, ["Metric", f"Parent ({c.parent_label})", "New model", "New − parent"])
    rows: list[tuple[str, Any, Any, str | None]] = [
        ("Test cells", c.parent.metrics.n, c.new.metrics.n, INT),
        ("Test subjects", len(c.parent.subjects), len(c.new.subjects), INT),
        ("Threshold (each model's own)", c.parent.threshold, c.new.threshold, PROB),
    ]
    for label, key in PARENT_METRIC_ROWS:
        fmt = PROB if key == "roc_auc" else PCT
        rows.append((label, getattr(c.parent.metrics, key), getattr(c.new.metrics, key), fmt))
    for label, old, new, fmt in rows:
        row += 1
        text_cell(ws, row, 1, label)
        number_cell(ws, row, 2, old, fmt)
        number_cell(ws, row, 3, new, fmt)
        if fmt in (PCT, PROB) and label.startswith(("Balanced", "Sens", "Spec", "ROC")):
            diff = float(new) - float(old)
            if fmt == PCT:
                number_cell(ws, row, 4, 100 * diff, "+0.0;-0.0;0.0")
            else:
                number_cell(ws, row, 4, diff, "+0.000;-0.000;0.000")
    row += 1
    text_cell(
        ws, row, 1, "Difference: percentage points for rates, plain for ROC AUC."
    ).font = NOTE_FONT
    row += 2
    kv = KeyValues(ws, row, 60)
    kv.section("Paired difference in balanced accuracy (new − parent)")
    kv.add("Difference (percentage points)", 100 * p.difference, "+0.0;-0.0;0.0", bold=True)
    low, high = p.interval
    kv.add(
        f"{100 * p.confidence:.0f}% CI (percentage points)",
        f"{100 * low:+.1f} to {100 * high:+.1f}"
        if math.isfinite(low) and math.isfinite(high)
        else "n/a (fewer than 2 test subjects of a class)",
    )
    kv.add(
        "Bootstrap",
        f"paired, resampling {p.subjects} {p.unit}s (not cells) within their class, "
        f"{p.resamples:,} resamples, seed {p.seed}",
    )
    kv.add("McNemar p (exact)", p_value_text(p.mcnemar_p))
    kv.add("Only the new model right (cells)", p.mcnemar_b, INT)
    kv.add("Only the parent right (cells)", p.mcnemar_c, INT)
    kv.add("Cells labelled differently", len(c.disagreements), INT)
    kv.add("Parent model", c.parent_label)
    kv.add("Parent SHA-256", c.parent_sha256)
    kv.note(
        "Both models scored the same test cells through the same preprocessing, each at its "
        "own threshold on its own calibrated P(ALL). McNemar: exact binomial test on the cells "
        "where exactly one model is right. "
        + (
            "The parent's recorded training and validation subjects were refused from this test "
            "part before training (matched by subject name), so the parent never saw them."
            if c.parent_split_known
            else "The parent's model file records no training subjects: it may have seen some "
            "of these subjects, which would favour it."
        )
    )
    for note in c.notes:
        kv.note(note)
    row = kv.row + 1
    shown = c.disagreements[:DISAGREEMENT_CAP]
    text_cell(ws, row, 1, f"Cells the two models label differently ({len(c.disagreements)})")
    ws.cell(row=row, column=1).font = SECTION_FONT
    if len(c.disagreements) > len(shown):
        row += 1
        text_cell(
            ws,
            row,
            1,
            f"Only the first {len(shown)} of {len(c.disagreements)} are listed "
            f"(cap {DISAGREEMENT_CAP}).",
        ).font = NOTE_FONT
    row += 1
    header_row(ws, row, list(PARENT_DISAGREEMENT_HEADERS))
    for d in shown:
        row += 1
        text_cell(ws, row, 2, d.path)
        text_cell(ws, row, 3, d.subject)
        text_cell(ws, row, 4, d.truth).fill = label_fill(d.truth)
        number_cell(ws, row, 5, d.parent_p_all, PROB)
        text_cell(ws, row, 6, d.parent_label).fill = label_fill(d.parent_label)
        number_cell(ws, row, 7, d.new_p_all, PROB)
        text_cell(ws, row, 8, d.new_label).fill = label_fill(d.new_label)
        png = _cell_png(d.path, _PARENT_THUMB_PX) if thumbnails else None
        if png is not None:
            ws.row_dimensions[row].height = (_PARENT_THUMB_PX + 8) * 0.75
            picture_in_cell(ws, png, row, 1, _PARENT_THUMB_PX, 4, 4)
        elif thumbnails:
            text_cell(ws, row, 1, "unreadable").font = NOTE_FONT
    if not shown:
        text_cell(ws, row + 1, 1, "(none: the two models give every cell the same label)")
    set_widths(ws, [max(34, _PARENT_THUMB_PX / 7 + 2), 60, 14, 8, 13, 12, 13, 12])
    print_setup(ws)


# --------------------------------------------------------------------------- evaluation


def write_evaluation_report(
    evaluation: Evaluation,
    path: Path,
    *,
    model: dict,
    data: dict,
    unreadable: Sequence[tuple[str, str]] = (),
    title: str = "Model evaluation",
    tta: Evaluation | None = None,
    images_per_second: float | None = None,
    tta_images_per_second: float | None = None,
    seen: dict[str, int] | None = None,
    runtime: dict[str, str] | None = None,
) -> Path:
    """Write the Excel report of `leukgui evaluate` (a model file scored on a labelled
    folder): Summary, Metrics, Subjects, Predictions and Errors sheets.

    `model` is the model file's manifest, `data` is `DatasetScan.summary()` (optionally with
    a "folder" key). It documents how a given model scores on a given labelled data set, with
    the same sheets as a training report. Raises `ReportWriteError` (previous file
    untouched) when it cannot be written.
    """
    path = Path(path)
    wb = Workbook()
    ws = wb.active
    ws.title = "Summary"
    value_width = 90
    title_cell(ws, 1, title)
    kv = KeyValues(ws, 2, value_width)
    if model.get("demo"):
        kv.banner(str(model.get("notice") or DEMO_NOTICE))
    for note in evaluation.notes:
        if note.upper().startswith("CANCELLED"):
            kv.banner(note)
    if seen:
        from training.evaluate import seen_text

        kv.banner(f"NOT HELD-OUT: {seen_text(seen)}; the scores below are optimistic.")
    kv.section("Model under evaluation")
    kv.add("Model", f"{model.get('name', '')} {model.get('version', '')}".strip(), bold=True)
    if model.get("path"):
        kv.add("Model file", full_path(model["path"]))
    kv.add("Backbone", model.get("backbone", "unknown"))
    kv.add("Model SHA-256 (manifest and weights)", _model_identity(model))
    kv.add("model.keras SHA-256", model.get("weights_sha256") or "unknown")
    kv.add("Decision threshold (P(ALL))", evaluation.threshold, PROB)
    lo, hi = evaluation.uncertainty_band
    kv.add(
        "Uncertainty band (P(ALL))", f"{edges_text(lo, hi, sep=' – ')} (UNCERTAIN strictly inside)"
    )
    manifest_threshold = model.get("decision_threshold")
    if isinstance(manifest_threshold, (int, float)) and not math.isclose(
        float(manifest_threshold), evaluation.threshold, abs_tol=1e-9
    ):
        kv.note(f"Note: the model file's own threshold is {float(manifest_threshold):.3f}.")
    if runtime:
        kv.section("Runtime (what computed P(ALL) and the heatmaps)")
        for key, value in runtime.items():
            kv.add(key, value)

    kv.section("Data set")
    for key in ("folder", "path"):
        if data.get(key):
            kv.add("Folder", full_path(data[key]))
            break
    kv.add("Source format", data.get("source") or "unknown")
    cells = data.get("cells_per_class", {}) or {}
    subjects = data.get("subjects_per_class", {}) or {}
    kv.add("Cells", data.get("cells", evaluation.metrics.n), INT)
    kv.add("Cells ALL / HEM", f"{cells.get(ALL, 0):,} / {cells.get(HEM, 0):,}")
    kv.add("Subjects", data.get("subjects", len(evaluation.subjects)), INT)
    kv.add("Subjects ALL / HEM", f"{subjects.get(ALL, 0):,} / {subjects.get(HEM, 0):,}")
    if data.get("cells_per_fold"):
        kv.add("Cells per fold", data["cells_per_fold"])
    kv.add("Unreadable files", max(len(unreadable), int(data.get("unreadable", 0) or 0)), INT)

    if int(data.get("image_subjects", 0) or 0):
        kv.note(
            f"Warning: subjects unknown for {int(data['image_subjects']):,} cells: each counts "
            "as its own subject, so the subject-level results and intervals are by image.",
            BANNER_FONT,
        )

    kv.section("Scores" + (" (not held-out: see above)" if seen else ""))
    _headline(kv, evaluation)
    kv.add("Accuracy", evaluation.metrics.accuracy, PCT)
    if images_per_second:
        kv.add("Speed (images/s, whole analysis path)", images_per_second, "#,##0.0")
    if tta is not None:
        kv.section("With test-time augmentation (mean of 8 flips and quarter turns)")
        _headline(kv, tta, "TTA")
        if tta_images_per_second:
            kv.add("TTA speed (images/s)", tta_images_per_second, "#,##0.0")
            if images_per_second:
                kv.add(
                    "TTA cost",
                    f"{images_per_second / tta_images_per_second:.1f}x the time per cell",
                )
        kv.note("Reported separately: the plain scores above are what analysis gives by default.")
    note = _boot_note(evaluation)
    if note:
        kv.note(note)
    kv.row += 1
    kv.note(
        "Full metrics with 95% confidence intervals: Metrics sheet; per subject: Subjects; "
        "per cell: Predictions; files that could not be read: Errors."
    )
    kv.row += 1
    kv.add("Report generated", local_time(datetime.now().astimezone()))
    set_widths(ws, [34, value_width])
    print_setup(ws)

    part = evaluation.part or "evaluated set"
    blocks = [(evaluation, f"Evaluation — {part}")]
    if tta is not None:
        blocks.append((tta, f"Evaluation with test-time augmentation (8 views) — {part}"))
    _metrics_sheet(wb.create_sheet("Metrics"), blocks)
    _subjects_sheet(wb.create_sheet("Subjects"), evaluation, f"Per subject — {part}")
    _predictions_sheet(wb.create_sheet("Predictions"), evaluation, f"Every cell — {part}")
    errors = wb.create_sheet("Errors")
    _errors_rows(errors, 1, unreadable)
    longest = max((len(full_path(p)) for p, _ in unreadable), default=30)
    set_widths(errors, [min(100, max(24, longest + 2)), 50])
    errors.freeze_panes = "A2"
    print_setup(errors, "1:1")
    _finish(wb, title)
    atomic_write(path, wb.save)
    return path
