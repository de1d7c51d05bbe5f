"""Repeated subject-grouped cross-validation: compare backbones when subjects are few.

One train/validation/test split of a small data set puts two or three subjects per class in
the test part, and which ones land there decides more than the backbone does. Cross-validation
deals the subjects into K folds (stratified by each subject's majority class, so every fold
holds both classes), tests on each fold in turn with the rest split by subject into training
and validation, and repeats that with R different shuffles. Every backbone sees exactly the
same folds, so its fold scores can be compared pairwise, and the spread across folds says how
much a single split's figure can be trusted.
"""

from __future__ import annotations

import math
import os
import statistics
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
from openpyxl import Workbook

from leukgui.core.atomic import atomic_write
from leukgui.core.formatting import percent
from leukgui.core.results import ALL, HEM, CancelToken
from leukgui.core.xlsx import (
    BOLD,
    BORDER,
    INT,
    ITALIC,
    PCT,
    PROB,
    header_row,
    number_cell,
    print_setup,
    set_widths,
    text_cell,
    title_cell,
)
from training.datasets import Record
from training.history import TrainingCallback, TrainingRun
from training.splits import (
    Split,
    SplitError,
    check_no_leakage,
    majority_class,
    split_by_subject,
)

__all__ = [
    "CV_METRICS",
    "CrossValidation",
    "FoldScore",
    "cross_validate",
    "subject_folds",
    "write_cross_validation",
]

# (key, header, number format): what each fold's test part is scored on.
CV_METRICS: tuple[tuple[str, str, str], ...] = (
    ("balanced_accuracy", "Balanced accuracy", PCT),
    ("roc_auc", "ROC AUC", PROB),
    ("weighted_f1", "Weighted F1", PCT),
    ("subject_accuracy", "Subject-level accuracy", PCT),
)


def subject_folds(records: Sequence[Record], k: int, seed: int) -> list[list[str]]:
    """Deal the subjects into `k` folds, stratified by majority class, seeded.

    Within each class the subjects are shuffled and dealt round-robin, the second class
    starting where the first stopped, so fold sizes differ by at most one subject. Raises
    SplitError when a class has fewer than `k` subjects (a fold would lack it).
    """
    if k < 2:
        raise ValueError("cross-validation needs at least 2 folds")
    per_subject: dict[str, Counter] = defaultdict(Counter)
    for r in records:
        per_subject[r.subject][r.label] += 1
    strata: dict[str, list[str]] = defaultdict(list)
    for subject in sorted(per_subject):
        strata[majority_class(per_subject[subject])].append(subject)
    short = [f"{c} has {len(strata.get(c, []))}" for c in (ALL, HEM) if len(strata.get(c, [])) < k]
    if short:
        raise SplitError(
            f"{' and '.join(short)} subject(s); {k}-fold cross-validation needs at least {k} "
            "subjects per class (one per fold)"
        )
    rng = np.random.default_rng(seed)
    folds: list[list[str]] = [[] for _ in range(k)]
    position = 0
    for stratum in (ALL, HEM):
        subjects = strata[stratum]
        for i in rng.permutation(len(subjects)):
            folds[position % k].append(subjects[i])
            position += 1
    return [sorted(f) for f in folds]


@dataclass(frozen=True)
class FoldScore:
    """One backbone's scores on one fold's test part."""

    backbone: str
    repeat: int  # 1-based
    fold: int  # 1-based
    cells: int
    subjects: int
    scores: dict[str, float]
    bundle: str = ""


@dataclass
class CrossValidation:
    """All fold scores of a cross-validation, and how the folds were made."""

    folds: int
    repeats: int
    seed: int
    validation: float
    backbones: list[str]
    scores: list[FoldScore] = field(default_factory=list)
    runs: list[TrainingRun] = field(default_factory=list)
    cancelled: bool = False
    xlsx: Path | None = None
    md: Path | None = None

    def values(self, backbone: str, key: str) -> list[float]:
        """The metric `key` of every fold of `backbone`, in (repeat, fold) order."""
        return [s.scores.get(key, math.nan) for s in self.scores if s.backbone == backbone]

    def summary(self, backbone: str, key: str) -> dict[str, float]:
        """Mean, standard deviation, min and max over the folds (NaN folds left out)."""
        values = [v for v in self.values(backbone, key) if math.isfinite(v)]
        if not values:
            return {"mean": math.nan, "sd": math.nan, "min": math.nan, "max": math.nan, "n": 0}
        return {
            "mean": statistics.fmean(values),
            "sd": statistics.stdev(values) if len(values) > 1 else math.nan,
            "min": min(values),
            "max": max(values),
            "n": len(values),
        }

    def paired(self, a: str, b: str, key: str = "balanced_accuracy") -> dict[str, float]:
        """Fold-by-fold difference a − b on the same folds: mean, SD, range and wins."""
        pairs = {
            (s.repeat, s.fold): s.scores.get(key, math.nan) for s in self.scores if s.backbone == a
        }
        diffs = [
            pairs[(s.repeat, s.fold)] - s.scores.get(key, math.nan)
            for s in self.scores
            if s.backbone == b and (s.repeat, s.fold) in pairs
        ]
        diffs = [d for d in diffs if math.isfinite(d)]
        if not diffs:
            return {
                "mean": math.nan,
                "sd": math.nan,
                "min": math.nan,
                "max": math.nan,
                "a_better": 0,
                "b_better": 0,
                "ties": 0,
                "n": 0,
            }
        return {
            "mean": statistics.fmean(diffs),
            "sd": statistics.stdev(diffs) if len(diffs) > 1 else math.nan,
            "min": min(diffs),
            "max": max(diffs),
            "a_better": sum(d > 1e-12 for d in diffs),
            "b_better": sum(d < -1e-12 for d in diffs),
            "ties": sum(abs(d) <= 1e-12 for d in diffs),
            "n": len(diffs),
        }


def _fold_scores(run: TrainingRun, repeat: int, fold: int) -> FoldScore:
    ev = run.test
    if ev is None:
        raise RuntimeError("a cross-validation fold was trained without its test part")
    m = ev.metrics
    level = getattr(ev, "subject_level", None)
    subject_accuracy = level.metrics.accuracy if level is not None else ev.subject_accuracy
    scores = {
        "balanced_accuracy": m.balanced_accuracy,
        "roc_auc": m.roc_auc,
        "weighted_f1": float(getattr(m, "weighted_f1", math.nan)),
        "subject_accuracy": subject_accuracy,
    }
    return FoldScore(
        backbone=run.backbone,
        repeat=repeat,
        fold=fold,
        cells=m.n,
        subjects=len(ev.subjects),
        scores=scores,
        bundle=run.bundle_path.name if run.bundle_path else "",
    )


def cross_validate(
    records: Sequence[Record],
    backbones: Sequence[str],
    config: Any,
    out: str | os.PathLike[str],
    *,
    folds: int = 5,
    repeats: int = 1,
    seed: int = 2019,
    validation: float = 0.2,
    progress: TrainingCallback | None = None,
    cancel: CancelToken | None = None,
    log: Callable[[str], None] | None = None,
    source: str = "",
) -> CrossValidation:
    """Train every backbone on every fold of `repeats` shuffles of `folds` subject folds.

    Each fold's model is written under `out/cv-<date>/r<R>-f<K>/` (not the model list: these
    models each saw only part of the data), and the summary workbook and Markdown beside them.
    """
    from training.trainer import TrainingCancelled, train_backbone

    say = log or (lambda _msg: None)
    result = CrossValidation(
        folds=folds, repeats=repeats, seed=seed, validation=validation, backbones=list(backbones)
    )
    base = Path(out)
    folder = base / f"cv-{date.today().isoformat()}"
    k = 2
    while folder.exists():
        folder = base / f"cv-{date.today().isoformat()}-{k}"
        k += 1
    plans: list[tuple[int, int, Split]] = []
    for repeat in range(1, repeats + 1):
        fold_subjects = subject_folds(records, folds, seed + repeat - 1)
        for index, subjects in enumerate(fold_subjects, 1):
            held = set(subjects)
            test = [r for r in records if r.subject in held]
            rest = [r for r in records if r.subject not in held]
            inner = split_by_subject(rest, validation=validation, test=0.0, seed=seed + repeat - 1)
            split = Split(
                train=inner.train,
                validation=inner.validation,
                test=test,
                seed=seed + repeat - 1,
                method=f"cross-validation fold {index} of {folds}, repeat {repeat} of {repeats}",
            )
            check_no_leakage(split)
            plans.append((repeat, index, split))
    say(
        f"cross-validation: {folds} folds x {repeats} repeat(s) x {len(backbones)} backbone(s) = "
        f"{len(plans) * len(backbones)} trainings"
    )
    for repeat, index, split in plans:
        for backbone in backbones:
            if cancel is not None and cancel.cancelled:
                result.cancelled = True
                break
            run_config = replace(config, backbone=backbone, name=f"{backbone}-r{repeat}-f{index}")
            try:
                run = train_backbone(
                    split,
                    run_config,
                    folder / f"r{repeat}-f{index}",
                    progress=progress,
                    cancel=cancel,
                    save_on_cancel=False,
                    source=source,
                    log=say,
                )
            except TrainingCancelled:
                result.cancelled = True
                break
            result.runs.append(run)
            score = _fold_scores(run, repeat, index)
            result.scores.append(score)
            say(
                f"repeat {repeat} fold {index} {backbone}: test balanced accuracy "
                f"{_fmt(score.scores['balanced_accuracy'], PCT)} on {score.subjects} subjects"
            )
        if result.cancelled:
            break
    if result.scores:
        result.xlsx, result.md = write_cross_validation(
            result, folder / "cross_validation.xlsx", folder / "cross_validation.md"
        )
    return result


def _fmt(value: float, fmt: str) -> str:
    if fmt == PCT:
        return percent(value)
    return f"{value:.3f}" if value is not None and math.isfinite(value) else "n/a"


def _notes(cv: CrossValidation) -> list[str]:
    return [
        f"{cv.folds}-fold cross-validation, {cv.repeats} repeat(s), seed {cv.seed}: subjects "
        "dealt into folds stratified by their majority class; each fold is the test part once, "
        f"the other subjects are split by subject into training and validation "
        f"({cv.validation:.0%}). No subject is in two parts of any fold.",
        "Every backbone was trained and tested on exactly the same folds, so the differences "
        "below are paired fold by fold. The spread (SD, min – max) shows how much one "
        "split's figure could move by chance.",
    ] + (["CANCELLED: not every fold was trained."] if cv.cancelled else [])


def write_cross_validation(
    cv: CrossValidation, xlsx_path: Path, md_path: Path
) -> tuple[Path, Path]:
    """The cross-validation summary as an Excel workbook and a Markdown table."""
    xlsx_path, md_path = Path(xlsx_path), Path(md_path)
    wb = Workbook()
    ws = wb.active
    ws.title = "Cross-validation"
    title_cell(ws, 1, "Cross-validation of backbones")
    row = 2
    for note in _notes(cv):
        text_cell(ws, row, 1, note).font = ITALIC
        row += 1
    row += 1
    headers = ["Backbone", "Folds"]
    for _, name, _ in CV_METRICS:
        headers += [f"{name} mean", "SD", "min", "max"]
    header_row(ws, row, headers)
    ws.row_dimensions[row].height = 45
    for backbone in cv.backbones:
        row += 1
        text_cell(ws, row, 1, backbone).font = BOLD
        col = 2
        first = cv.summary(backbone, CV_METRICS[0][0])
        number_cell(ws, row, col, first["n"], INT)
        for key, _, fmt in CV_METRICS:
            s = cv.summary(backbone, key)
            for value in (s["mean"], s["sd"], s["min"], s["max"]):
                col += 1
                number_cell(ws, row, col, value, fmt)
        for c in range(1, col + 1):
            ws.cell(row=row, column=c).border = BORDER
    row += 2
    pairs = [(a, b) for i, a in enumerate(cv.backbones) for b in cv.backbones[i + 1 :]]
    if pairs:
        text_cell(
            ws, row, 1, "Paired differences in balanced accuracy (A − B), fold by fold"
        ).font = BOLD
        row += 1
        header_row(
            ws, row, ["A", "B", "Folds", "Mean", "SD", "min", "max", "A better", "B better", "Ties"]
        )
        for a, b in pairs:
            d = cv.paired(a, b)
            row += 1
            text_cell(ws, row, 1, a)
            text_cell(ws, row, 2, b)
            number_cell(ws, row, 3, d["n"], INT)
            for col, key in enumerate(("mean", "sd", "min", "max"), 4):
                number_cell(ws, row, col, d[key], PCT)
            for col, key in enumerate(("a_better", "b_better", "ties"), 8):
                number_cell(ws, row, col, d[key], INT)
        row += 2
    text_cell(ws, row, 1, "Every fold").font = BOLD
    row += 1
    header_row(
        ws,
        row,
        [
            "Backbone",
            "Repeat",
            "Fold",
            "Test cells",
            "Test subjects",
            *[name for _, name, _ in CV_METRICS],
            "Model file",
        ],
    )
    for s in cv.scores:
        row += 1
        text_cell(ws, row, 1, s.backbone)
        for col, value in enumerate((s.repeat, s.fold, s.cells, s.subjects), 2):
            number_cell(ws, row, col, value, INT)
        for col, (key, _, fmt) in enumerate(CV_METRICS, 6):
            number_cell(ws, row, col, s.scores.get(key, math.nan), fmt)
        text_cell(ws, row, 6 + len(CV_METRICS), s.bundle)
    set_widths(ws, [18, 12] + [11] * (len(headers) - 2))
    print_setup(ws)
    wb.properties.creator = "LeukGUI training"
    wb.properties.title = "Cross-validation of backbones"
    atomic_write(xlsx_path, wb.save)

    lines = ["# Cross-validation of backbones", "", *[f"{n}  " for n in _notes(cv)], ""]
    lines.append(
        "| Backbone | Folds | "
        + " | ".join(f"Test {n.lower()} (mean ± SD, min – max)" for _, n, _ in CV_METRICS)
        + " |"
    )
    lines.append("|---|---:|" + "---:|" * len(CV_METRICS))
    for backbone in cv.backbones:
        cells = []
        for key, _, fmt in CV_METRICS:
            s = cv.summary(backbone, key)
            cells.append(
                f"{_fmt(s['mean'], fmt)} ± {_fmt(s['sd'], fmt)} "
                f"({_fmt(s['min'], fmt)} – {_fmt(s['max'], fmt)})"
            )
        lines.append(
            f"| {backbone} | {cv.summary(backbone, CV_METRICS[0][0])['n']} | "
            + " | ".join(cells)
            + " |"
        )
    if pairs:
        lines += [
            "",
            "| A − B | Folds | Mean | SD | min – max | A better / B better / ties |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for a, b in pairs:
            d = cv.paired(a, b)
            lines.append(
                f"| {a} − {b} | {d['n']} | {_fmt(d['mean'], PCT)} | {_fmt(d['sd'], PCT)} | "
                f"{_fmt(d['min'], PCT)} – {_fmt(d['max'], PCT)} | "
                f"{d['a_better']} / {d['b_better']} / {d['ties']} |"
            )
    text = "\n".join(lines) + "\n"
    atomic_write(md_path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    return xlsx_path, md_path
