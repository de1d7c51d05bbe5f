"""The one metric table of every report: a confusion matrix and metrics with Wilson 95% CIs.

The analysis report (model calls and reviewed labels vs truth) and the training and evaluation
reports all show a `BinaryMetrics` the same way, with the same names, formulas and intervals,
so a figure reads the same in every workbook. A report adds its own rows (calibration error,
uncertain cells, ...) as `MetricRow`s through the same writer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from openpyxl.styles import Alignment
from openpyxl.worksheet.worksheet import Worksheet

from leukgui.core.metrics import BinaryMetrics, wilson_interval
from leukgui.core.xlsx import (
    BOLD,
    INDENT,
    INT,
    ITALIC,
    NOTE_FONT,
    PCT,
    PROB,
    border_row,
    header_row,
    number_cell,
    row_height,
    text_cell,
)

__all__ = [
    "METRIC_HEADERS",
    "METRIC_NOTES",
    "METRIC_WIDTHS",
    "MetricRow",
    "METRIC_KEYS",
    "binary_metric_rows",
    "with_intervals",
    "calibration_row",
    "write_confusion_matrix",
    "write_metric_notes",
    "write_metric_table",
]

METRIC_HEADERS = ("Metric", "Value", "95% CI low", "95% CI high", "Count", "Meaning")
# Columns A..F of a sheet holding the table. "Meaning" wraps rather than being 100 wide, so
# a printed metrics page is not shrunk to fit one long sentence.
METRIC_WIDTHS = (38, 12, 12, 12, 14, 64)
METRIC_NOTES = (
    "n/a: the ratio is undefined (its denominator is zero).",
    "95% CI: Wilson score interval for the proportion (Count = numerator / denominator).",
)
_RIGHT = Alignment(horizontal="right")
_WRAP_INDENT = Alignment(horizontal="left", indent=1, wrap_text=True, vertical="center")


@dataclass(frozen=True)
class MetricRow:
    """One row of the metric table.

    `count` (k, n) is shown as "k / n"; with `wilson` the row also gets the Wilson 95%
    interval of k/n. `fmt` is the value's number format (ratios as percentages).
    """

    name: str
    value: float | None
    meaning: str
    fmt: str = PCT
    count: tuple[int, int] | None = None
    wilson: bool = False
    interval: tuple[float, float] | None = None  # given 95% CI (e.g. a bootstrap); beats wilson


def binary_metric_rows(m: BinaryMetrics, *, auc: bool = True) -> list[MetricRow]:
    """The standard rows for a confusion matrix: accuracy to balanced accuracy, plus the ROC
    AUC (leave it out with `auc=False` where the scores behind the calls are not P(ALL))."""
    rows = [
        MetricRow(
            "Accuracy",
            m.accuracy,
            "(TP + TN) / all cells with truth",
            count=(m.tp + m.tn, m.n),
            wilson=True,
        ),
        MetricRow(
            "Precision",
            m.precision,
            "TP / (TP + FP): of cells called ALL, the share that are truly ALL",
            count=(m.tp, m.tp + m.fp),
            wilson=True,
        ),
        MetricRow(
            "Recall (sensitivity)",
            m.recall,
            "TP / (TP + FN): of truly ALL cells, the share called ALL",
            count=(m.tp, m.tp + m.fn),
            wilson=True,
        ),
        MetricRow(
            "Specificity",
            m.specificity,
            "TN / (TN + FP): of truly HEM cells, the share called HEM",
            count=(m.tn, m.tn + m.fp),
            wilson=True,
        ),
        MetricRow(
            "F1 score",
            m.f1,
            "2·TP / (2·TP + FP + FN): harmonic mean of precision and recall",
        ),
        MetricRow(
            "Misclassification rate",
            m.misclassification_rate,
            "(FP + FN) / all cells with truth = 1 − accuracy",
            count=(m.fp + m.fn, m.n),
            wilson=True,
        ),
        MetricRow(
            "Balanced accuracy",
            m.balanced_accuracy,
            "(sensitivity + specificity) / 2: accuracy that ignores class imbalance",
        ),
    ]
    weighted = getattr(m, "weighted_f1", None)
    if weighted is not None:
        rows.append(
            MetricRow(
                "Weighted F1",
                weighted,
                "F1 of ALL and F1 of HEM averaged, weighted by each class's cells "
                "(what the C-NMC 2019 challenge ranks by)",
            )
        )
    if auc:
        rows.append(
            MetricRow(
                "ROC AUC",
                m.roc_auc,
                "chance that a random ALL cell has a higher P(ALL) than a random HEM cell "
                "(ties count ½); threshold-free",
                fmt=PROB,
            )
        )
    return rows


# Row name -> the key of the same figure in a manifest's metrics and in bootstrap intervals.
METRIC_KEYS = {
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


def with_intervals(
    rows: Sequence[MetricRow], intervals: dict[str, tuple[float, float]]
) -> list[MetricRow]:
    """`rows` with each standard metric's interval taken from `intervals` (keyed as in
    METRIC_KEYS) instead of Wilson's: cells of one subject are not independent, so a training
    report's intervals come from a bootstrap over subjects."""
    out = []
    for row in rows:
        key = METRIC_KEYS.get(row.name)
        if key is not None and key in intervals:
            low, high = intervals[key]
            row = MetricRow(
                row.name, row.value, row.meaning, row.fmt, row.count, False, (low, high)
            )
        out.append(row)
    return out


def calibration_row(ece: float) -> MetricRow:
    """The expected calibration error of P(ALL), as a table row."""
    return MetricRow(
        "Expected calibration error",
        ece,
        "gap between P(ALL) and the observed ALL share, averaged over 10 P(ALL) bins "
        "weighted by cells; 0 = perfect",
        fmt=PROB,
    )


def write_confusion_matrix(ws: Worksheet, row: int, m: BinaryMetrics, called: str) -> int:
    """The 2x2 confusion matrix with totals from `row` on; columns are "{called} ALL" and
    "{called} HEM" (e.g. Predicted, Final). Returns its last row."""
    text_cell(ws, row, 1, "Confusion matrix").font = BOLD
    row += 1
    header_row(ws, row, ["", f"{called} ALL", f"{called} HEM", "Total"])
    ws.row_dimensions[row].height = 30
    for name, a, b, a_tag, b_tag in (
        ("Truth ALL", m.tp, m.fn, "TP", "FN"),
        ("Truth HEM", m.fp, m.tn, "FP", "TN"),
    ):
        row += 1
        text_cell(ws, row, 1, name).font = BOLD
        number_cell(ws, row, 2, a, INT)
        number_cell(ws, row, 3, b, INT)
        number_cell(ws, row, 4, a + b, INT)
        tag = text_cell(ws, row, 5, f"{a_tag} = {a:,}, {b_tag} = {b:,}")
        tag.alignment = INDENT
        tag.font = NOTE_FONT
        border_row(ws, row, 4)
    row += 1
    text_cell(ws, row, 1, "Total").font = BOLD
    number_cell(ws, row, 2, m.tp + m.fp, INT)
    number_cell(ws, row, 3, m.fn + m.tn, INT)
    number_cell(ws, row, 4, m.n, INT)
    border_row(ws, row, 4)
    return row


def write_metric_table(ws: Worksheet, row: int, rows: Sequence[MetricRow]) -> int:
    """Header and one bordered row per metric from `row` on (columns A..F, see
    `METRIC_HEADERS`); returns the last row written."""
    header_row(ws, row, METRIC_HEADERS)
    ws.row_dimensions[row].height = 30
    for metric in rows:
        row += 1
        text_cell(ws, row, 1, metric.name)
        number_cell(ws, row, 2, metric.value, metric.fmt)
        if metric.interval is not None:
            number_cell(ws, row, 3, metric.interval[0], metric.fmt)
            number_cell(ws, row, 4, metric.interval[1], metric.fmt)
        if metric.count is not None:
            k, n = metric.count
            if metric.wilson and metric.interval is None:
                low, high = wilson_interval(k, n)
                number_cell(ws, row, 3, low, PCT)
                number_cell(ws, row, 4, high, PCT)
            text_cell(ws, row, 5, f"{k:,} / {n:,}").alignment = _RIGHT
        text_cell(ws, row, 6, metric.meaning).alignment = _WRAP_INDENT
        height = row_height(metric.meaning, METRIC_WIDTHS[5])
        if height > (ws.row_dimensions[row].height or 15.0):  # two lines or more: centre
            ws.row_dimensions[row].height = height
            for col in range(1, len(METRIC_HEADERS)):
                cell = ws.cell(row=row, column=col)
                cell.alignment = Alignment(horizontal=cell.alignment.horizontal, vertical="center")
        border_row(ws, row, len(METRIC_HEADERS))
    return row


def write_metric_notes(ws: Worksheet, row: int, notes: Sequence[str] = METRIC_NOTES) -> int:
    """The notes that explain "n/a" and the intervals, one per row from `row` on; returns the
    last row written."""
    for i, note in enumerate(notes):
        text_cell(ws, row + i, 1, note).font = ITALIC
    return row + len(notes) - 1
