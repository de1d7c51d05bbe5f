"""Files a training run or a model evaluation leaves behind: log CSV, curves, Excel, comparison.

A lab keeps these next to a trained bundle to judge it: what data it saw, how training went,
how it scores on held-out subjects (with confidence intervals and per-subject results) and
how it compares with other backbones trained on the same split. Every figure comes from the
`Evaluation` objects of `training.scoring`, so a report can never disagree with a manifest.

Same rules as the analysis report (`leukgui.core.report`): every user-controlled string goes
through `_text` so a subject id or path like `=HYPERLINK(...)` stays inert text, NaN shows as
"n/a", and every file is written atomically so a failed write leaves the previous one intact.
No TensorFlow here.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from openpyxl import Workbook
from openpyxl.styles import Alignment, Font, PatternFill
from openpyxl.utils import get_column_letter
from openpyxl.worksheet.pagebreak import Break
from openpyxl.worksheet.worksheet import Worksheet

from leukgui.core.atomic import ReportWriteError, atomic_write
from leukgui.core.metrics import BinaryMetrics, call_label, wilson_interval
from leukgui.core.report import (
    _BANNER_FILL,
    _BANNER_FONT,
    _BOLD,
    _BORDER,
    _LABEL_FILLS,
    _PCT,
    _PROB,
    _TITLE_FONT,
    _banner,
    _csv_safe,
    _header,
    _num,
    _PngImage,
    _print_setup,
    _text,
    _widths,
)
from leukgui.core.results import ALL, DEMO_NOTICE, HEM
from training.history import LOG_COLUMNS, EpochLog, TrainingRun
from training.scoring import Evaluation

__all__ = [
    "ReportWriteError",
    "plot_curves",
    "write_comparison",
    "write_evaluation_report",
    "write_log_csv",
    "write_training_report",
]

CURVES_SIZE_PX = (1500, 450)  # width, height of the curves PNG
_CURVES_DPI = 100
_CURVES_SHOWN_WIDTH_PX = 1200  # width of the curves picture on the Curves sheet

_ITALIC = Font(italic=True)
_NOTE_FONT = Font(italic=True, color="595959")
_BEST_FILL = PatternFill("solid", fgColor="C6EFCE")
_WRONG_FONT = Font(bold=True, color="C00000")
_INT = "#,##0"
_AUC = "0.000"
_WRAP = Alignment(wrap_text=True, vertical="top")
_LEFT = Alignment(horizontal="left", vertical="top")

# --------------------------------------------------------------------------- small helpers


def _fmt_seconds(seconds: float) -> str:
    """h:mm:ss plus the raw seconds, e.g. '0:02:05 (125.0 s)'."""
    if not math.isfinite(seconds):
        return "n/a"
    whole = int(round(seconds))
    h, rest = divmod(whole, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d} ({seconds:.1f} s)"


def _full_path(path: str | Path) -> str:
    """The absolute path, so a report still locates its image when opened elsewhere."""
    return str(Path(path).absolute())


def _row_height(text: str, width_chars: float, line_pt: float = 15.0) -> float:
    """Row height that shows `text` wrapped in a column `width_chars` wide (Excel does not
    size wrapped rows of a generated file by itself)."""
    per_line = max(10, int(width_chars * 1.1))
    lines = sum(max(1, math.ceil(len(part) / per_line)) for part in str(text).split("\n"))
    return max(line_pt, lines * line_pt)


class _KeyValues:
    """Writes 'key | value' rows down columns A and B of a sheet, tracking the row."""

    def __init__(self, ws: Worksheet, row: int, value_width: float) -> None:
        self.ws = ws
        self.row = row
        self.value_width = value_width

    def section(self, title: str) -> None:
        self.row += 1
        cell = _text(self.ws, self.row, 1, title)
        cell.font = Font(bold=True, size=12)
        self.row += 1

    def add(self, key: str, value: Any, fmt: str | None = None, *, bold: bool = False) -> None:
        ws, row = self.ws, self.row
        key_cell = _text(ws, row, 1, key)
        key_cell.font = _BOLD
        key_cell.alignment = _LEFT
        if isinstance(value, bool):
            cell = _text(ws, row, 2, "yes" if value else "no")
        elif isinstance(value, (int, float)):
            cell = _num(ws, row, 2, value, fmt)
        elif value is None:
            cell = _text(ws, row, 2, "(none)")
        elif isinstance(value, str):
            cell = _text(ws, row, 2, value)
        else:
            cell = _text(ws, row, 2, json.dumps(value, default=str, ensure_ascii=False))
        cell.alignment = _WRAP if isinstance(cell.value, str) else _LEFT
        if bold:
            cell.font = _BOLD
        if isinstance(cell.value, str) and len(cell.value) > self.value_width:
            ws.row_dimensions[row].height = _row_height(cell.value, self.value_width)
        self.row += 1

    def note(self, text: str, font: Font = _NOTE_FONT) -> None:
        cell = _text(self.ws, self.row, 1, text)
        cell.font = font
        self.row += 1

    def banner(self, text: str, last_col: int = 2) -> None:
        _banner(self.ws, self.row, text, last_col)
        self.row += 1


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
    return _csv_safe(value)


def write_log_csv(history: Sequence[EpochLog], path: Path) -> Path:
    """Write the epoch log (one row per epoch, columns `LOG_COLUMNS`) as CSV.

    A plain CSV is what people plot, diff and keep with a bundle. Floats keep 6 significant
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


# --------------------------------------------------------------------------- curves PNG


def _finite(values: Sequence[float]) -> list[float]:
    return [v for v in values if isinstance(v, (int, float)) and math.isfinite(v)]


def _centre_text(ax: Any, text: str) -> None:
    ax.text(
        0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, fontsize=12, color="gray"
    )


def _render_curves(history: Sequence[EpochLog], title: str = "") -> bytes:
    """The curves figure as PNG bytes (matplotlib's object API: no pyplot global state, so
    it is safe in a worker thread next to the Qt GUI)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    width, height = CURVES_SIZE_PX
    fig = Figure(figsize=(width / _CURVES_DPI, height / _CURVES_DPI), dpi=_CURVES_DPI)
    canvas = FigureCanvasAgg(fig)
    fig.set_layout_engine("constrained")
    axes = fig.subplots(1, 3)
    if title:
        fig.suptitle(title, fontsize=14, fontweight="bold")

    epochs = [log.epoch for log in history]
    panels: list[tuple[str, list[tuple[str, str, str]]]] = [
        ("Loss", [("loss", "loss (train)", "C0"), ("val_loss", "val_loss", "C1")]),
        (
            "Accuracy and AUC",
            [
                ("accuracy", "accuracy (train)", "C0"),
                ("val_accuracy", "val_accuracy", "C1"),
                ("val_balanced_accuracy", "val_balanced_accuracy", "C2"),
                ("val_auc", "val_auc", "C3"),
            ],
        ),
        ("Learning rate", [("learning_rate", "learning rate", "C4")]),
    ]
    # Phase boundaries: between the last epoch of one phase and the first of the next.
    boundaries = [
        ((history[i - 1].epoch + history[i].epoch) / 2.0, history[i - 1].phase, history[i].phase)
        for i in range(1, len(history))
        if history[i].phase != history[i - 1].phase
    ]
    marker = "o" if len(history) <= 30 else None
    for ax, (panel_title, series) in zip(axes, panels, strict=True):
        ax.set_title(panel_title, fontsize=12)
        ax.set_xlabel("epoch", fontsize=11)
        ax.tick_params(labelsize=10)
        ax.grid(True, alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        plotted = False
        for name, label, color in series:
            values = [float(getattr(log, name)) for log in history]
            if not _finite(values):
                continue
            ax.plot(epochs, values, label=label, color=color, marker=marker, markersize=4)
            plotted = True
        if not history:
            _centre_text(ax, "no epochs logged")
        elif not plotted:
            _centre_text(ax, "no values")
        if panel_title == "Learning rate":
            rates = _finite([log.learning_rate for log in history])
            if rates and min(rates) > 0:
                ax.set_yscale("log")
        elif plotted:
            ax.legend(fontsize=9, loc="best", framealpha=0.8)
        if len(history) == 1:
            ax.set_xlim(epochs[0] - 0.5, epochs[0] + 0.5)
        for x, before, after in boundaries:
            ax.axvline(x, color="0.35", linestyle="--", linewidth=1.2)
            ax.text(
                x,
                0.97,
                f"{before} → {after}",
                transform=ax.get_xaxis_transform(),
                fontsize=9,
                color="0.2",
                ha="center",
                va="top",
                rotation=90,
                bbox={
                    "boxstyle": "round,pad=0.2",
                    "facecolor": "white",
                    "edgecolor": "none",
                    "alpha": 0.85,
                },
            )
    buf = io.BytesIO()
    canvas.print_png(buf)
    return buf.getvalue()


def plot_curves(history: Sequence[EpochLog], path: Path, title: str = "") -> Path:
    """Save loss, accuracy/AUC and learning-rate curves (x = epoch) side by side as a PNG.

    One look shows over- or under-fitting and what the phase switch (dashed line) did.
    About 1500 x 450 px; NaN values leave gaps, a one-epoch history shows single points.
    Raises `ReportWriteError` (previous file untouched) when it cannot be written.
    """
    path = Path(path)
    png = _render_curves(list(history), title)
    atomic_write(path, lambda tmp: tmp.write_bytes(png))
    return path


# --------------------------------------------------------------------------- shared sheets


def _headline(kv: _KeyValues, evaluation: Evaluation, label: str = "") -> None:
    """Cells, subjects and the four figures a reader looks at first."""
    m = evaluation.metrics

    def key(name: str) -> str:
        return f"{label}: {name}" if label else name[:1].upper() + name[1:]

    kv.add(key("cells / subjects"), f"{m.n:,} cells from {len(evaluation.subjects):,} subjects")
    kv.add(key("balanced accuracy"), m.balanced_accuracy, _PCT, bold=True)
    kv.add(key("sensitivity (recall)"), m.recall, _PCT)
    kv.add(key("specificity"), m.specificity, _PCT)
    kv.add(key("ROC AUC"), m.roc_auc, _AUC)
    for note in evaluation.notes:
        kv.note(note)


def _band_text(evaluation: Evaluation) -> str:
    lo, hi = evaluation.uncertainty_band
    return f"UNCERTAIN when {lo:.3f} < P(ALL) < {hi:.3f}"


def _metric_rows(
    evaluation: Evaluation,
) -> list[tuple[str, float, str, tuple[int, int] | None, str]]:
    """(name, value, number format, (k, n) for a Wilson CI or None, meaning)."""
    m: BinaryMetrics = evaluation.metrics
    d: BinaryMetrics = evaluation.decided_metrics
    subjects = evaluation.subjects
    right = sum(s.call == s.truth for s in subjects)
    return [
        ("Accuracy", m.accuracy, _PCT, (m.tp + m.tn, m.n), "(TP + TN) / all cells"),
        ("Precision", m.precision, _PCT, (m.tp, m.tp + m.fp), "TP / (TP + FP)"),
        ("Recall (sensitivity)", m.recall, _PCT, (m.tp, m.tp + m.fn), "TP / (TP + FN)"),
        ("Specificity", m.specificity, _PCT, (m.tn, m.tn + m.fp), "TN / (TN + FP)"),
        ("F1 score", m.f1, _PCT, None, "2·TP / (2·TP + FP + FN)"),
        (
            "Misclassification rate",
            m.misclassification_rate,
            _PCT,
            (m.fp + m.fn, m.n),
            "(FP + FN) / all cells",
        ),
        (
            "Balanced accuracy",
            m.balanced_accuracy,
            _PCT,
            None,
            "(sensitivity + specificity) / 2",
        ),
        ("ROC AUC", m.roc_auc, _AUC, None, "P(a random ALL cell scores above a HEM cell)"),
        (
            "Expected calibration error",
            evaluation.ece,
            _AUC,
            None,
            "|mean P(ALL) − ALL share| over 10 bins, weighted by cells; 0 = perfect",
        ),
        (
            "Uncertain cells",
            evaluation.uncertain,
            _INT,
            None,
            "cells inside the band; the ratios above count them by the threshold alone",
        ),
        (
            "Accuracy on decided cells",
            d.accuracy,
            _PCT,
            (d.tp + d.tn, d.n),
            f"accuracy on the {d.n:,} cells outside the uncertainty band",
        ),
        (
            "Subject-level accuracy",
            evaluation.subject_accuracy,
            _PCT,
            (right, len(subjects)),
            "share of subjects whose majority call equals their true class",
        ),
    ]


def _evaluation_block(ws: Worksheet, row: int, evaluation: Evaluation, title: str) -> int:
    """Confusion matrix, metrics with 95% CIs and calibration of one evaluation; returns the
    next free row."""
    m = evaluation.metrics
    _text(ws, row, 1, title).font = Font(bold=True, size=14)
    ws.row_dimensions[row].height = 22
    row += 1
    _text(
        ws,
        row,
        1,
        f"{m.n:,} cells from {len(evaluation.subjects):,} subjects; ALL when P(ALL) ≥ "
        f"{evaluation.threshold:.3f}, else HEM; {_band_text(evaluation)}.",
    ).font = _ITALIC
    row += 2

    _text(ws, row, 1, "Confusion matrix").font = _BOLD
    row += 1
    _header(ws, row, ["", "called ALL", "called HEM", "Total"])
    for name, a, b, tags in (
        ("true ALL", m.tp, m.fn, "TP, FN"),
        ("true HEM", m.fp, m.tn, "FP, TN"),
    ):
        row += 1
        _text(ws, row, 1, name).font = _BOLD
        _num(ws, row, 2, a, _INT)
        _num(ws, row, 3, b, _INT)
        _num(ws, row, 4, a + b, _INT)
        _text(ws, row, 5, tags).font = _NOTE_FONT
        for col in range(1, 5):
            ws.cell(row=row, column=col).border = _BORDER
    row += 1
    _text(ws, row, 1, "Total").font = _BOLD
    _num(ws, row, 2, m.tp + m.fp, _INT)
    _num(ws, row, 3, m.fn + m.tn, _INT)
    _num(ws, row, 4, m.n, _INT)
    for col in range(1, 5):
        ws.cell(row=row, column=col).border = _BORDER
    row += 2

    _header(ws, row, ["Metric", "Value", "95% CI low", "95% CI high", "Count", "Meaning"])
    ws.row_dimensions[row].height = 30
    for name, value, fmt, kn, meaning in _metric_rows(evaluation):
        row += 1
        _text(ws, row, 1, name)
        _num(ws, row, 2, value, fmt)
        if kn is not None:
            low, high = wilson_interval(*kn)
            _num(ws, row, 3, low, _PCT)
            _num(ws, row, 4, high, _PCT)
        if kn is not None or name == "Uncertain cells":
            k, n = kn if kn is not None else (evaluation.uncertain, m.n)
            _text(ws, row, 5, f"{k:,} / {n:,}").alignment = Alignment(horizontal="right")
        _text(ws, row, 6, meaning).alignment = Alignment(horizontal="left", indent=1)
        for col in range(1, 7):
            ws.cell(row=row, column=col).border = _BORDER
    row += 2

    _text(ws, row, 1, "Calibration (reliability table)").font = _BOLD
    row += 1
    _header(ws, row, ["P(ALL) bin", "Cells", "Mean P(ALL)", "Observed ALL share", "Gap"])
    ws.row_dimensions[row].height = 30
    for b in evaluation.calibration:
        row += 1
        _text(ws, row, 1, f"{b.lower:.1f} – {b.upper:.1f}")
        _num(ws, row, 2, b.cells, _INT)
        _num(ws, row, 3, b.mean_p_all, _PROB)
        _num(ws, row, 4, b.fraction_all, _PCT)
        _num(ws, row, 5, abs(b.mean_p_all - b.fraction_all), _PROB)
        for col in range(1, 6):
            ws.cell(row=row, column=col).border = _BORDER
    row += 1
    for note in evaluation.notes:
        row += 1
        _text(ws, row, 1, note).font = _NOTE_FONT
    return row + 2


def _metrics_sheet(ws: Worksheet, blocks: Sequence[tuple[Evaluation, str]]) -> None:
    row = 1
    if not blocks:
        _text(ws, row, 1, "No labelled cells were scored.").font = _ITALIC
    for i, (evaluation, title) in enumerate(blocks):
        if i:
            ws.row_breaks.append(Break(id=row - 1))  # each block starts a printed page
        row = _evaluation_block(ws, row, evaluation, title)
    _text(ws, row, 1, "n/a: the ratio is undefined (its denominator is zero).").font = _ITALIC
    row += 1
    _text(
        ws,
        row,
        1,
        "95% CI: Wilson score interval for the proportion (Count = numerator / denominator).",
    ).font = _ITALIC
    _widths(ws, [30, 12, 12, 14, 14, 72])
    _print_setup(ws)


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
        _text(ws, 1, 1, "No validation or test scores.").font = _ITALIC
        return
    _text(ws, 1, 1, title).font = _BOLD
    _header(ws, 2, _SUBJECT_HEADERS)
    ws.row_dimensions[2].height = 30
    row = 2
    for s in evaluation.subjects:
        row += 1
        _text(ws, row, 1, s.subject)
        _text(ws, row, 2, s.truth).fill = _LABEL_FILLS.get(s.truth, PatternFill())
        _num(ws, row, 3, s.cells, _INT)
        _num(ws, row, 4, s.called_all, _INT)
        _num(ws, row, 5, s.called_hem, _INT)
        _num(ws, row, 6, s.uncertain, _INT)
        _num(ws, row, 7, s.correct, _INT)
        _num(ws, row, 8, s.accuracy, _PCT)
        _num(ws, row, 9, s.mean_p_all, _PROB)
        _text(ws, row, 10, s.call).fill = _LABEL_FILLS.get(s.call, PatternFill())
        right = s.call == s.truth
        cell = _text(ws, row, 11, "yes" if right else "no")
        if not right:
            cell.font = _WRONG_FONT
        for col in range(1, len(_SUBJECT_HEADERS) + 1):
            ws.cell(row=row, column=col).border = _BORDER
    ws.freeze_panes = "B3"
    ws.auto_filter.ref = f"A2:{get_column_letter(len(_SUBJECT_HEADERS))}{max(row, 3)}"
    row += 2
    _text(
        ws,
        row,
        1,
        "Correct: cells whose call by the threshold alone equals the truth. Subject call: the "
        "majority of the subject's decided cells (UNCERTAIN on a tie).",
    ).font = _NOTE_FONT
    longest = max((len(s.subject) for s in evaluation.subjects), default=8)
    _widths(ws, [min(40, max(14, longest + 3)), 11, 9, 11, 11, 11, 9, 10, 12, 12, 12])
    _print_setup(ws, "2:2")


def _predictions_sheet(ws: Worksheet, evaluation: Evaluation | None, title: str) -> None:
    if evaluation is None:
        _text(ws, 1, 1, "No validation or test scores.").font = _ITALIC
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
    _text(ws, 1, 1, title).font = _BOLD
    _header(ws, 2, headers)
    ws.row_dimensions[2].height = 30
    row = 2
    longest_path = 20
    for path, subject, truth, p_all in zip(p.paths, p.subjects, p.truth, p.p_all, strict=True):
        row += 1
        full = _full_path(path)
        longest_path = max(longest_path, len(full))
        _text(ws, row, 1, full)
        _text(ws, row, 2, subject)
        _text(ws, row, 3, truth)
        _num(ws, row, 4, float(p_all), _PROB)
        call = ALL if p_all >= t else HEM
        _text(ws, row, 5, call)
        banded = call_label(float(p_all), t, evaluation.uncertainty_band)
        _text(ws, row, 6, banded).fill = _LABEL_FILLS.get(banded, PatternFill())
        right = call == truth
        cell = _text(ws, row, 7, "yes" if right else "no")
        if not right:
            cell.font = _WRONG_FONT
    ws.freeze_panes = "B3"
    ws.auto_filter.ref = f"A2:G{max(row, 3)}"
    _widths(ws, [min(90, longest_path + 2), 16, 8, 9, 16, 12, 9])
    _print_setup(ws, "2:2")


def _errors_rows(ws: Worksheet, row: int, unreadable: Sequence[tuple[Any, Any]]) -> int:
    _header(ws, row, ["Unreadable file", "Reason"])
    if not unreadable:
        row += 1
        _text(ws, row, 1, "(none: every file could be read)").font = _ITALIC
        return row + 1
    for path, reason in unreadable:
        row += 1
        _text(ws, row, 1, _full_path(path))
        _text(ws, row, 2, reason)
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


def _embed_png(ws: Worksheet, png: bytes, anchor: str, shown_width: int) -> int:
    """Place a PNG at `anchor` scaled to `shown_width` px; returns the rows it covers."""
    from PIL import Image

    with Image.open(io.BytesIO(png)) as im:
        width, height = im.size
    shown_height = round(height * shown_width / width)
    ws.add_image(_PngImage(png, shown_width, shown_height), anchor)
    return math.ceil(shown_height / 20) + 1  # default rows are 20 px high


def _curves_png(run: TrainingRun) -> bytes:
    """The run's saved curves PNG if it can be read, else a fresh rendering."""
    if run.curves_png is not None:
        try:
            from PIL import Image

            data = Path(run.curves_png).read_bytes()
            with Image.open(io.BytesIO(data)) as im:
                im.verify()
            return data
        except (OSError, ValueError, SyntaxError):
            pass
    return _render_curves(run.history, f"{run.name} {run.version} ({run.backbone})")


_LOG_HEADERS = {
    "phase": ("Phase", None),
    "epoch": ("Epoch", "0"),
    "loss": ("Loss", "0.0000"),
    "accuracy": ("Accuracy", _PCT),
    "val_loss": ("Val loss", "0.0000"),
    "val_accuracy": ("Val accuracy", _PCT),
    "val_balanced_accuracy": ("Val balanced accuracy", _PCT),
    "val_auc": ("Val AUC", _AUC),
    "learning_rate": ("Learning rate", "0.00E+00"),
    "seconds": ("Seconds", "0.0"),
    "images_per_second": ("Images/s", "0.0"),
}


def _curves_sheet(ws: Worksheet, run: TrainingRun) -> None:
    _text(ws, 1, 1, "Training curves").font = _TITLE_FONT
    ws.row_dimensions[1].height = 24
    rows = _embed_png(ws, _curves_png(run), "A2", _CURVES_SHOWN_WIDTH_PX)
    row = 2 + rows + 1
    _text(ws, row, 1, "Epoch log").font = Font(bold=True, size=12)
    _text(ws, row, 4, f"best epoch (highlighted): {run.best_epoch}").font = _NOTE_FONT
    row += 1
    header_row = row
    _header(ws, row, [_LOG_HEADERS[c][0] for c in LOG_COLUMNS])
    ws.row_dimensions[row].height = 30
    for log in run.history:
        row += 1
        best = log.epoch == run.best_epoch
        for col, name in enumerate(LOG_COLUMNS, 1):
            value = getattr(log, name)
            if isinstance(value, str):
                cell = _text(ws, row, col, value)
            else:
                cell = _num(ws, row, col, value, _LOG_HEADERS[name][1])
            cell.border = _BORDER
            if best:
                cell.font = _BOLD
                cell.fill = _BEST_FILL
    if not run.history:
        _text(ws, row + 1, 1, "No epochs were logged.").font = _ITALIC
    _widths(ws, [11, 8, 10, 11, 10, 12, 14, 10, 13, 10, 11])
    _print_setup(ws, f"{header_row}:{header_row}")


def _data_sheet(ws: Worksheet, run: TrainingRun) -> None:
    parts = list(run.data) or ["train", "validation", "test"]
    split = run.split or {}
    _text(ws, 1, 1, "Data and split").font = _TITLE_FONT
    ws.row_dimensions[1].height = 24
    method = split.get("method", "unknown")
    seed = split.get("seed")
    _text(
        ws,
        2,
        1,
        f"Split by subject ({method}, seed {seed if seed is not None else 'n/a'}): every "
        "subject's cells are in exactly one part.",
    ).font = _ITALIC
    row = 4
    headers = [
        "Part",
        "Cells",
        "ALL cells",
        "HEM cells",
        "Subjects",
        "ALL subjects",
        "HEM subjects",
    ]
    _header(ws, row, headers)
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
        _text(ws, row, 1, part).font = _BOLD
        for col, value in enumerate(values, 2):
            _num(ws, row, col, value, _INT)
        totals = [t + (v or 0) for t, v in zip(totals, values, strict=True)]
        for col in range(1, 8):
            ws.cell(row=row, column=col).border = _BORDER
    row += 1
    _text(ws, row, 1, "Total").font = _BOLD
    for col, value in enumerate(totals, 2):
        _num(ws, row, col, value, _INT).font = _BOLD
    for col in range(1, 8):
        ws.cell(row=row, column=col).border = _BORDER
    row += 1
    _text(
        ws,
        row,
        1,
        "Subjects per class: a subject with cells of both classes counts once in each.",
    ).font = _NOTE_FONT
    row += 2

    lists = split.get("subjects", {}) or {}
    _text(ws, row, 1, "Subjects per part").font = Font(bold=True, size=12)
    row += 1
    names = list(lists) or parts
    _header(ws, row, [f"{n} ({len(lists.get(n, []))})" for n in names])
    longest = 12
    for col, name in enumerate(names, 1):
        for i, subject in enumerate(lists.get(name, []) or [], 1):
            _text(ws, row + i, col, subject)
            longest = max(longest, len(str(subject)))
    row += max((len(lists.get(n, []) or []) for n in names), default=0) + 2

    if run.unreadable:
        # The path spans the part table's columns A:F so column A stays narrow.
        _text(ws, row, 1, f"Unreadable files ({len(run.unreadable)})").font = Font(
            bold=True, size=12
        )
        row += 1
        _header(ws, row, ["Unreadable file", "", "", "", "", "", "Reason"])
        ws.merge_cells(start_row=row, start_column=1, end_row=row, end_column=6)
        for path, reason in run.unreadable:
            row += 1
            _text(ws, row, 1, _full_path(path)).alignment = _LEFT
            ws.merge_cells(start_row=row, start_column=1, end_row=row, end_column=6)
            _text(ws, row, 7, reason)
    else:
        _text(ws, row, 1, "Unreadable files: none").font = _ITALIC
    widths = [16, 12, 12, 12, 12, 13, 13]
    for col, width in enumerate(widths, 1):
        letter = get_column_letter(col)
        current = ws.column_dimensions[letter].width or 0
        wanted = max(width, min(40, longest + 3)) if col <= len(names) else width
        ws.column_dimensions[letter].width = max(current, wanted)
    _print_setup(ws)


def _summary_training(ws: Worksheet, run: TrainingRun) -> None:
    value_width = 100
    _text(ws, 1, 1, f"Training report — {run.name} {run.version}".strip()).font = _TITLE_FONT
    ws.row_dimensions[1].height = 24
    kv = _KeyValues(ws, 2, value_width)
    if run.cancelled:
        kv.banner(
            f"CANCELLED — training was stopped by the user after {len(run.history)} "
            f"epoch(s); this model is not fully trained."
        )
    kv.row += 1
    kv.add("Model", f"{run.name} {run.version}".strip(), bold=True)
    kv.add("Backbone", run.backbone)
    kv.add("Bundle", _full_path(run.bundle_path) if run.bundle_path else "(not saved)")
    if getattr(run, "weights_sha256", ""):
        kv.add("Weights SHA-256", run.weights_sha256)
    if run.run_folder is not None:
        kv.add("Run folder", _full_path(run.run_folder))
    kv.add("Stopped because", "CANCELLED" if run.cancelled else run.stopped_because)
    kv.add("Epochs run", len(run.history))
    kv.add("Best epoch (weights kept)", run.best_epoch)
    kv.add("Training time", _fmt_seconds(run.training_seconds))
    kv.add("Training speed (images/s)", run.train_images_per_second, "#,##0.0")
    kv.add("Inference speed (images/s)", run.inference_images_per_second, "#,##0.0")
    kv.add("Parameters (total)", run.parameters, _INT)
    kv.add("Parameters (trainable, fine-tuning)", run.trainable_parameters, _INT)
    kv.add("Device", run.device)

    reference = run.validation if run.validation is not None else run.test
    kv.section("Decision rule")
    if reference is not None:
        kv.add("Decision threshold (P(ALL))", reference.threshold, _PROB)
        lo, hi = reference.uncertainty_band
        kv.add("Uncertainty band (P(ALL))", f"{lo:.3f} – {hi:.3f} (UNCERTAIN strictly inside)")
    kv.add("Threshold rule", run.threshold_rule)
    kv.add("Band rule", run.band_rule)

    kv.section("Held-out test scores")
    if run.test is not None:
        _headline(kv, run.test, "Test")
    else:
        kv.note(
            "No test split: there are no held-out test scores. The validation scores on the "
            "Metrics sheet chose the threshold and band, so they are optimistic.",
            _BANNER_FONT,
        )
        ws.cell(row=kv.row - 1, column=1).fill = _BANNER_FILL
    kv.row += 1
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
    kv.add("Report generated", datetime.now().astimezone().isoformat(sep=" ", timespec="seconds"))
    _widths(ws, [38, value_width])
    _print_setup(ws)


def _finish(wb: Workbook, title: str) -> None:
    wb.properties.creator = "LeukGUI training"
    wb.properties.title = title


def write_training_report(run: TrainingRun, path: Path) -> Path:
    """Write the Excel report of one training run: Summary, Data, Curves, Metrics,
    Subjects and Predictions sheets.

    This is what a lab files with a trained bundle: what it was trained on, how training
    went, and how it scores on held-out subjects. Raises `ReportWriteError` (previous file
    untouched) when it cannot be written.
    """
    path = Path(path)
    wb = Workbook()
    summary = wb.active
    summary.title = "Summary"
    _summary_training(summary, run)
    _data_sheet(wb.create_sheet("Data"), run)
    _curves_sheet(wb.create_sheet("Curves"), run)
    blocks = [
        (ev, title)
        for ev, title in (
            (run.validation, "Validation (chose the threshold and band: optimistic)"),
            (run.test, "Test (held-out subjects)"),
        )
        if ev is not None
    ]
    _metrics_sheet(wb.create_sheet("Metrics"), blocks)
    primary, part = _primary(run.test, run.validation)
    _subjects_sheet(wb.create_sheet("Subjects"), primary, f"Per subject — {part}")
    _predictions_sheet(wb.create_sheet("Predictions"), primary, f"Every cell — {part}")
    _finish(wb, f"Training report {run.name} {run.version}")
    atomic_write(path, wb.save)
    return path


# --------------------------------------------------------------------------- evaluation


def write_evaluation_report(
    evaluation: Evaluation,
    path: Path,
    *,
    model: dict,
    data: dict,
    unreadable: Sequence[tuple[str, str]] = (),
    title: str = "Model evaluation",
) -> Path:
    """Write the Excel report of `leukgui evaluate BUNDLE FOLDER`: Summary, Metrics,
    Subjects, Predictions and Errors sheets.

    `model` is the bundle manifest, `data` is `DatasetScan.summary()` (optionally with a
    "folder" key). It documents how a given bundle scores on a given labelled data set, with
    the same sheets as a training report. Raises `ReportWriteError` (previous file
    untouched) when it cannot be written.
    """
    path = Path(path)
    wb = Workbook()
    ws = wb.active
    ws.title = "Summary"
    value_width = 90
    _text(ws, 1, 1, title).font = _TITLE_FONT
    ws.row_dimensions[1].height = 24
    kv = _KeyValues(ws, 2, value_width)
    if model.get("demo"):
        kv.banner(str(model.get("notice") or DEMO_NOTICE))
    for note in evaluation.notes:
        if note.upper().startswith("CANCELLED"):
            kv.banner(note)
    kv.section("Model bundle")
    kv.add("Model", f"{model.get('name', '')} {model.get('version', '')}".strip(), bold=True)
    if model.get("path"):
        kv.add("Bundle file", _full_path(model["path"]))
    kv.add("Backbone", model.get("backbone", "unknown"))
    kv.add("Weights SHA-256", model.get("weights_sha256") or "unknown")
    kv.add("Decision threshold (P(ALL))", evaluation.threshold, _PROB)
    lo, hi = evaluation.uncertainty_band
    kv.add("Uncertainty band (P(ALL))", f"{lo:.3f} – {hi:.3f} (UNCERTAIN strictly inside)")
    manifest_threshold = model.get("decision_threshold")
    if isinstance(manifest_threshold, (int, float)) and not math.isclose(
        float(manifest_threshold), evaluation.threshold, abs_tol=1e-9
    ):
        kv.note(f"Note: the bundle's own threshold is {float(manifest_threshold):.3f}.")

    kv.section("Data set")
    for key in ("folder", "path"):
        if data.get(key):
            kv.add("Folder", _full_path(data[key]))
            break
    kv.add("Source format", data.get("source") or "unknown")
    cells = data.get("cells_per_class", {}) or {}
    subjects = data.get("subjects_per_class", {}) or {}
    kv.add("Cells", data.get("cells", evaluation.metrics.n), _INT)
    kv.add("Cells ALL / HEM", f"{cells.get(ALL, 0):,} / {cells.get(HEM, 0):,}")
    kv.add("Subjects", data.get("subjects", len(evaluation.subjects)), _INT)
    kv.add("Subjects ALL / HEM", f"{subjects.get(ALL, 0):,} / {subjects.get(HEM, 0):,}")
    if data.get("cells_per_fold"):
        kv.add("Cells per fold", data["cells_per_fold"])
    kv.add("Unreadable files", max(len(unreadable), int(data.get("unreadable", 0) or 0)), _INT)

    kv.section("Scores")
    _headline(kv, evaluation)
    kv.add("Accuracy", evaluation.metrics.accuracy, _PCT)
    kv.add("Subject-level accuracy", evaluation.subject_accuracy, _PCT)
    kv.row += 1
    kv.note(
        "Full metrics with 95% confidence intervals: Metrics sheet; per subject: Subjects; "
        "per cell: Predictions; files that could not be read: Errors."
    )
    kv.row += 1
    kv.add("Report generated", datetime.now().astimezone().isoformat(sep=" ", timespec="seconds"))
    _widths(ws, [34, value_width])
    _print_setup(ws)

    part = evaluation.part or "evaluated set"
    _metrics_sheet(wb.create_sheet("Metrics"), [(evaluation, f"Evaluation — {part}")])
    _subjects_sheet(wb.create_sheet("Subjects"), evaluation, f"Per subject — {part}")
    _predictions_sheet(wb.create_sheet("Predictions"), evaluation, f"Every cell — {part}")
    errors = wb.create_sheet("Errors")
    _errors_rows(errors, 1, unreadable)
    longest = max((len(_full_path(p)) for p, _ in unreadable), default=30)
    _widths(errors, [min(100, max(24, longest + 2)), 50])
    errors.freeze_panes = "A2"
    _print_setup(errors, "1:1")
    _finish(wb, title)
    atomic_write(path, wb.save)
    return path


# --------------------------------------------------------------------------- comparison

# (header, kind); kinds: text, pct, prob, int, sec, rate
_COMPARISON_COLUMNS: tuple[tuple[str, str], ...] = (
    ("Backbone", "text"),
    ("Bundle", "text"),
    ("Scored on", "text"),
    ("Test cells", "int"),
    ("Test subjects", "int"),
    ("Accuracy", "pct"),
    ("Precision", "pct"),
    ("F1", "pct"),
    ("Misclassification rate", "pct"),
    ("Specificity", "pct"),
    ("Recall (sensitivity)", "pct"),
    ("Balanced accuracy", "pct"),
    ("ROC AUC", "prob"),
    ("ECE", "prob"),
    ("Threshold", "prob"),
    ("Parameters", "int"),
    ("Training time (s)", "sec"),
    ("Training images/s", "rate"),
    ("Inference images/s", "rate"),
    ("Best epoch", "int"),
    ("Stop reason", "text"),
)
_BA_COLUMN = [h for h, _ in _COMPARISON_COLUMNS].index("Balanced accuracy")
_BEST_NOTE = (
    "Bold: the best balanced accuracy (test scores; validation-only rows compete only when no "
    "run has a test split). n/a: undefined ratio."
)
_EXCEL_FORMATS = {"pct": _PCT, "prob": _AUC, "int": _INT, "sec": "#,##0", "rate": "#,##0.0"}


def _comparison_row(run: TrainingRun) -> list[Any]:
    ev = run.test if run.test is not None else run.validation
    scored_on = "test" if run.test is not None else ("validation (no test split)" if ev else "—")
    stop = "cancelled" if run.cancelled else run.stopped_because
    if ev is None:
        metrics: list[Any] = [math.nan] * 12
    else:
        m = ev.metrics
        metrics = [
            m.n,
            len(ev.subjects),
            m.accuracy,
            m.precision,
            m.f1,
            m.misclassification_rate,
            m.specificity,
            m.recall,
            m.balanced_accuracy,
            m.roc_auc,
            ev.ece,
            ev.threshold,
        ]
    return [
        run.backbone,
        run.bundle_path.name if run.bundle_path else "",
        scored_on,
        *metrics,
        run.parameters,
        run.training_seconds,
        run.train_images_per_second,
        run.inference_images_per_second,
        run.best_epoch,
        stop,
    ]


def _md_cell(value: Any, kind: str) -> str:
    if kind == "text":
        return str(value).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    if kind == "pct":
        return f"{value:.1%}"
    if kind == "prob":
        return f"{value:.3f}"
    if kind in ("int", "sec"):
        return f"{value:,.0f}"
    return f"{value:,.1f}"


def _comparison_notes(runs: Sequence[TrainingRun]) -> list[str]:
    split = runs[0].split or {}
    subjects = (split.get("subjects") or {}).get("test") or []
    seed = split.get("seed")
    shared = all((r.split or {}) == split for r in runs[1:])
    notes = [
        f"Split: {split.get('method', 'unknown')}, seed {seed if seed is not None else 'n/a'}, "
        f"{len(subjects)} test subjects"
        + ("; every backbone was scored on the same held-out subjects." if shared else "."),
        "All numbers in a row come from one confusion matrix per model (its test cells at its "
        "own decision threshold); ROC AUC and ECE from its P(ALL).",
    ]
    if not shared:
        notes.append("WARNING: these runs do not share one split, so rows are not comparable.")
    fallback = [r.backbone for r in runs if r.test is None and r.validation is not None]
    unscored = [r.backbone for r in runs if r.test is None and r.validation is None]
    if unscored:
        notes.append(f"No scores at all for {', '.join(unscored)} (no validation or test split).")
    if fallback:
        notes.append(
            f"No test split for {', '.join(fallback)}: those rows show validation scores, "
            "which chose the threshold and are optimistic."
        )
    return notes


def _best_rows(runs: Sequence[TrainingRun], rows: Sequence[Sequence[Any]]) -> set[int]:
    """Rows with the highest balanced accuracy. Validation scores (no test split) chose the
    threshold and are optimistic, so they compete only when no run has test scores."""
    with_test = {i for i, r in enumerate(runs) if r.test is not None}
    candidates = with_test or set(range(len(rows)))
    values = {i: rows[i][_BA_COLUMN] for i in candidates}
    finite = {i: v for i, v in values.items() if isinstance(v, (int, float)) and math.isfinite(v)}
    if not finite:
        return set()
    best = max(finite.values())
    return {i for i, v in finite.items() if v == best}


def _write_comparison_xlsx(
    rows: Sequence[Sequence[Any]], notes: Sequence[str], best: set[int], path: Path
) -> None:
    wb = Workbook()
    ws = wb.active
    ws.title = "Comparison"
    ncols = len(_COMPARISON_COLUMNS)
    _text(ws, 1, 1, "Backbone comparison").font = _TITLE_FONT
    ws.row_dimensions[1].height = 24
    row = 2
    for note in notes:
        cell = _text(ws, row, 1, note)
        cell.font = _BANNER_FONT if note.startswith(("WARNING", "No ")) else _ITALIC
        row += 1
    row += 1
    header_row = row
    _header(ws, row, [h for h, _ in _COMPARISON_COLUMNS])
    ws.row_dimensions[row].height = 45
    for i, values in enumerate(rows):
        row += 1
        for col, ((_, kind), value) in enumerate(zip(_COMPARISON_COLUMNS, values, strict=True), 1):
            if kind == "text":
                cell = _text(ws, row, col, value)
            else:
                cell = _num(ws, row, col, value, _EXCEL_FORMATS[kind])
            cell.border = _BORDER
            if i in best:
                cell.font = _BOLD
        if i in best:
            ws.cell(row=row, column=_BA_COLUMN + 1).fill = _BEST_FILL
    row += 2
    _text(ws, row, 1, _BEST_NOTE.replace("Bold", "Bold, green")).font = _NOTE_FONT
    ws.freeze_panes = ws.cell(row=header_row + 1, column=2)
    widths = [16, 26, 24] + [11] * (ncols - 4) + [16]
    widths[[h for h, _ in _COMPARISON_COLUMNS].index("Misclassification rate")] = 17
    longest = max((len(str(r[1])) for r in rows), default=0)
    widths[1] = min(50, max(16, longest + 2))
    widths[0] = min(30, max(14, max((len(str(r[0])) for r in rows), default=0) + 2))
    _widths(ws, widths)
    _print_setup(ws, f"{header_row}:{header_row}")
    _finish(wb, "Backbone comparison")
    atomic_write(path, wb.save)


def _write_comparison_md(
    rows: Sequence[Sequence[Any]], notes: Sequence[str], best: set[int], path: Path
) -> None:
    lines = ["# Backbone comparison", ""]
    lines += [f"{note}  " if i < len(notes) - 1 else note for i, note in enumerate(notes)]
    lines.append("")
    lines.append("| " + " | ".join(h for h, _ in _COMPARISON_COLUMNS) + " |")
    aligns = ["---" if kind == "text" else "---:" for _, kind in _COMPARISON_COLUMNS]
    lines.append("| " + " | ".join(aligns) + " |")
    for i, values in enumerate(rows):
        cells = [
            _md_cell(v, kind) for (_, kind), v in zip(_COMPARISON_COLUMNS, values, strict=True)
        ]
        if i in best:
            cells[_BA_COLUMN] = f"**{cells[_BA_COLUMN]}**"
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", _BEST_NOTE, ""]
    text = "\n".join(lines)
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_comparison(
    runs: Sequence[TrainingRun], xlsx_path: Path, md_path: Path
) -> tuple[Path, Path]:
    """Write the table comparing backbones trained on one split, as Excel and Markdown.

    One row per run: test metrics (validation, flagged, when a run has no test split),
    threshold, size and speed. The best balanced accuracy is bold (and green in Excel).
    Raises ValueError for no runs and `ReportWriteError` when a file cannot be written.
    """
    if not runs:
        raise ValueError("no training runs to compare")
    xlsx_path, md_path = Path(xlsx_path), Path(md_path)
    rows = [_comparison_row(r) for r in runs]
    notes = _comparison_notes(runs)
    best = _best_rows(runs, rows)
    _write_comparison_xlsx(rows, notes, best, xlsx_path)
    _write_comparison_md(rows, notes, best, md_path)
    return xlsx_path, md_path
