"""The backbone comparison: one row per training run on the same split, as Excel and Markdown.

Every figure of a row comes from that run's `Evaluation` (test scores, or validation scores,
flagged, when a run has no test split), so the table can never disagree with a training
report or a manifest. The best balanced accuracy is bold (and green in Excel). No TensorFlow.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from openpyxl import Workbook

from leukgui.core.atomic import atomic_write
from leukgui.core.xlsx import (
    BANNER_FONT,
    BEST_FILL,
    BOLD,
    BORDER,
    INT,
    ITALIC,
    NOTE_FONT,
    PCT,
    PROB,
    header_row,
    number_cell,
    print_setup,
    set_widths,
    text_cell,
    title_cell,
)
from training.history import TrainingRun

__all__ = ["write_comparison"]

# (header, kind); kinds: text, pct, prob, int, sec, rate
_COMPARISON_COLUMNS: tuple[tuple[str, str], ...] = (
    ("Backbone", "text"),
    ("Model file", "text"),
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
_EXCEL_FORMATS = {"pct": PCT, "prob": PROB, "int": INT, "sec": "#,##0", "rate": "#,##0.0"}


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
    title_cell(ws, 1, "Backbone comparison")
    row = 2
    for note in notes:
        cell = text_cell(ws, row, 1, note)
        cell.font = BANNER_FONT if note.startswith(("WARNING", "No ")) else ITALIC
        row += 1
    row += 1
    head_row = row
    header_row(ws, row, [h for h, _ in _COMPARISON_COLUMNS])
    ws.row_dimensions[row].height = 45
    for i, values in enumerate(rows):
        row += 1
        for col, ((_, kind), value) in enumerate(zip(_COMPARISON_COLUMNS, values, strict=True), 1):
            if kind == "text":
                cell = text_cell(ws, row, col, value)
            else:
                cell = number_cell(ws, row, col, value, _EXCEL_FORMATS[kind])
            cell.border = BORDER
            if i in best:
                cell.font = BOLD
        if i in best:
            ws.cell(row=row, column=_BA_COLUMN + 1).fill = BEST_FILL
    row += 2
    text_cell(ws, row, 1, _BEST_NOTE.replace("Bold", "Bold, green")).font = NOTE_FONT
    ws.freeze_panes = ws.cell(row=head_row + 1, column=2)
    widths = [16, 26, 24] + [11] * (ncols - 4) + [16]
    widths[[h for h, _ in _COMPARISON_COLUMNS].index("Misclassification rate")] = 17
    longest = max((len(str(r[1])) for r in rows), default=0)
    widths[1] = min(50, max(16, longest + 2))
    widths[0] = min(30, max(14, max((len(str(r[0])) for r in rows), default=0) + 2))
    set_widths(ws, widths)
    print_setup(ws, f"{head_row}:{head_row}")
    wb.properties.creator = "LeukGUI training"
    wb.properties.title = "Backbone comparison"
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
