"""Scoring a trained model on held-out subjects: metrics, threshold, band, per-subject results.

Everything here works on plain predictions (truth, P(ALL), subject per cell) and imports no
TensorFlow, so the rules that decide a bundle's threshold and uncertainty band can be tested
on numbers made by hand. Every figure comes from `leukgui.core.metrics`, the same code the
analysis reports use, so training, evaluation and analysis can never disagree.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from leukgui.core.metrics import (
    BinaryMetrics,
    binary_metrics,
    call_label,
    expected_calibration_error,
    thresholded_call,
)
from leukgui.core.results import ALL, HEM, UNCERTAIN

__all__ = [
    "BAND_RULE",
    "THRESHOLD_RULE",
    "CalibrationBin",
    "Evaluation",
    "Predictions",
    "SubjectResult",
    "calibration_bins",
    "choose_band",
    "choose_threshold",
    "evaluate_predictions",
    "metrics_dict",
    "subject_results",
]

THRESHOLD_RULE = (
    "decision threshold = the P(ALL) cut that maximises balanced accuracy (Youden's J) on the "
    "validation subjects; among equally good cuts the one closest to 0.5"
)
BAND_RULE = (
    "uncertainty band = from the threshold outwards, the narrowest band such that validation "
    "cells called HEM below it and called ALL above it are each wrong at most {error:.0%} of "
    "the time, limited to hold at most {cap:.0%} of validation cells"
)
DEFAULT_BAND_ERROR = 0.02
DEFAULT_BAND_CAP = 0.20


@dataclass
class Predictions:
    """Per-cell model outputs on one labelled set, in a stable order."""

    paths: list[str]
    subjects: list[str]
    truth: list[str]  # ALL / HEM
    p_all: list[float]

    def __post_init__(self) -> None:
        n = len(self.paths)
        if not (len(self.subjects) == len(self.truth) == len(self.p_all) == n):
            raise ValueError("paths, subjects, truth and p_all must have the same length")

    def __len__(self) -> int:
        return len(self.paths)


@dataclass(frozen=True)
class SubjectResult:
    """How the model did on one person's cells (the unit a clinician reasons in)."""

    subject: str
    truth: str  # the subject's majority true class
    cells: int
    called_all: int
    called_hem: int
    uncertain: int
    correct: int  # thresholded calls equal to truth (uncertain cells resolved by threshold)
    mean_p_all: float

    @property
    def accuracy(self) -> float:
        return self.correct / self.cells if self.cells else math.nan

    @property
    def fraction_all(self) -> float:
        """Share of this subject's decided cells called ALL (the blast percentage)."""
        decided = self.called_all + self.called_hem
        return self.called_all / decided if decided else math.nan

    @property
    def call(self) -> str:
        """Subject-level call: the majority of decided cells (UNCERTAIN on a tie)."""
        if self.called_all > self.called_hem:
            return ALL
        if self.called_hem > self.called_all:
            return HEM
        return UNCERTAIN


@dataclass(frozen=True)
class CalibrationBin:
    """One bin of a reliability diagram: predicted P(ALL) against the observed ALL share."""

    lower: float
    upper: float
    cells: int
    mean_p_all: float
    fraction_all: float


@dataclass
class Evaluation:
    """All scores of one model on one labelled set, derived from one set of predictions."""

    part: str  # "validation", "test", or the evaluated folder's name
    threshold: float
    uncertainty_band: tuple[float, float]
    metrics: BinaryMetrics  # thresholded calls on every cell
    decided_metrics: BinaryMetrics  # only cells outside the uncertainty band
    uncertain: int
    ece: float
    calibration: list[CalibrationBin]
    subjects: list[SubjectResult]
    predictions: Predictions
    notes: list[str] = field(default_factory=list)

    @property
    def subject_accuracy(self) -> float:
        """Share of subjects whose majority call equals their true class."""
        if not self.subjects:
            return math.nan
        return sum(s.call == s.truth for s in self.subjects) / len(self.subjects)


def _labels(p: np.ndarray, threshold: float) -> list[str]:
    return [thresholded_call(float(v), threshold) for v in p]


def choose_threshold(truth: Sequence[str], p_all: Sequence[float]) -> float:
    """The threshold rule (see THRESHOLD_RULE). 0.5 when one class is missing."""
    y = np.array([t == ALL for t in truth], dtype=bool)
    p = np.asarray(p_all, dtype=np.float64)
    if len(p) == 0 or y.all() or not y.any():
        return 0.5
    # Candidate cuts: midpoints between consecutive distinct scores, plus 0.5 itself.
    values = np.unique(p)
    cuts = np.concatenate([(values[:-1] + values[1:]) / 2.0, [0.5]])
    best, best_j = 0.5, -np.inf
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    for cut in cuts:
        called = p >= cut
        j = (called & y).sum() / n_pos + (~called & ~y).sum() / n_neg
        if j > best_j + 1e-12 or (abs(j - best_j) <= 1e-12 and abs(cut - 0.5) < abs(best - 0.5)):
            best, best_j = float(cut), j
    return best


def choose_band(
    truth: Sequence[str],
    p_all: Sequence[float],
    threshold: float,
    *,
    max_error: float = DEFAULT_BAND_ERROR,
    max_uncertain: float = DEFAULT_BAND_CAP,
) -> tuple[float, float]:
    """The band rule (see BAND_RULE). Returns (low, high) with low <= threshold <= high.

    Below `low` cells are called HEM, above `high` ALL, in between UNCERTAIN. Each edge is
    moved outwards from the threshold, over the validation scores, until the calls beyond it
    are wrong at most `max_error` of the time; then, if the band would hold more than
    `max_uncertain` of the cells, both edges are pulled back towards the threshold in turn.
    """
    y = np.array([t == ALL for t in truth], dtype=bool)
    p = np.asarray(p_all, dtype=np.float64)
    if len(p) == 0:
        return threshold, threshold

    # HEM side: candidate low edges are the scores below the threshold, highest first.
    below = np.sort(p[p < threshold])[::-1]
    low = float(below[-1]) if len(below) else threshold
    for edge in below:
        called = p <= edge
        if (y & called).sum() / called.sum() <= max_error:
            low = float(edge)
            break
    else:
        low = float(below[-1]) if len(below) else threshold
    above = np.sort(p[p >= threshold])
    high = float(above[-1]) if len(above) else threshold
    for edge in above:
        called = p >= edge
        if (~y & called).sum() / called.sum() <= max_error:
            high = float(edge)
            break
    low = min(low, threshold)
    high = max(high, threshold)

    def inside(lo: float, hi: float) -> int:
        return int(((p > lo) & (p < hi)).sum())

    cap = max_uncertain * len(p)
    lows = sorted({v for v in p if low <= v < threshold}) + [threshold]
    highs = sorted({v for v in p if threshold <= v <= high}, reverse=True) + [threshold]
    li = hi_i = 0
    while inside(low, high) > cap and (li < len(lows) - 1 or hi_i < len(highs) - 1):
        # Pull back whichever edge is further from the threshold.
        if li < len(lows) - 1 and (threshold - low >= high - threshold or hi_i >= len(highs) - 1):
            li += 1
            low = float(lows[li])
        else:
            hi_i += 1
            high = float(highs[hi_i])
    return float(low), float(high)


def subject_results(
    predictions: Predictions, threshold: float, band: tuple[float, float]
) -> list[SubjectResult]:
    """Per-subject counts, sorted by subject id."""
    groups: dict[str, list[int]] = defaultdict(list)
    for i, subject in enumerate(predictions.subjects):
        groups[subject].append(i)
    out = []
    for subject in sorted(groups):
        idx = groups[subject]
        calls = Counter(call_label(predictions.p_all[i], threshold, band) for i in idx)
        truths = Counter(predictions.truth[i] for i in idx)
        truth = ALL if truths.get(ALL, 0) >= truths.get(HEM, 0) else HEM
        correct = sum(
            thresholded_call(predictions.p_all[i], threshold) == predictions.truth[i] for i in idx
        )
        out.append(
            SubjectResult(
                subject=subject,
                truth=truth,
                cells=len(idx),
                called_all=calls.get(ALL, 0),
                called_hem=calls.get(HEM, 0),
                uncertain=calls.get(UNCERTAIN, 0),
                correct=int(correct),
                mean_p_all=float(np.mean([predictions.p_all[i] for i in idx])),
            )
        )
    return out


def calibration_bins(
    truth: Sequence[str], p_all: Sequence[float], bins: int = 10
) -> list[CalibrationBin]:
    """Reliability table over equal-width bins (the bins `expected_calibration_error` uses)."""
    p = np.asarray(p_all, dtype=np.float64)
    y = np.array([t == ALL for t in truth], dtype=np.float64)
    idx = np.clip((p * bins).astype(np.int64), 0, bins - 1)
    out = []
    for b in range(bins):
        mask = idx == b
        n = int(mask.sum())
        out.append(
            CalibrationBin(
                lower=b / bins,
                upper=(b + 1) / bins,
                cells=n,
                mean_p_all=float(p[mask].mean()) if n else math.nan,
                fraction_all=float(y[mask].mean()) if n else math.nan,
            )
        )
    return out


def evaluate_predictions(
    predictions: Predictions, threshold: float, band: tuple[float, float], part: str
) -> Evaluation:
    """Every score of one prediction set under one threshold and band."""
    p = np.asarray(predictions.p_all, dtype=np.float64)
    truth = predictions.truth
    calls = _labels(p, threshold)
    metrics = binary_metrics(truth, calls, p.tolist())
    outside = [i for i, v in enumerate(p) if call_label(float(v), threshold, band) != UNCERTAIN]
    decided = binary_metrics(
        [truth[i] for i in outside], [calls[i] for i in outside], [float(p[i]) for i in outside]
    )
    notes = []
    if metrics.n_positive == 0 or metrics.n_negative == 0:
        notes.append(f"{part}: only one class present, so several ratios are undefined")
    return Evaluation(
        part=part,
        threshold=float(threshold),
        uncertainty_band=(float(band[0]), float(band[1])),
        metrics=metrics,
        decided_metrics=decided,
        uncertain=len(p) - len(outside),
        ece=expected_calibration_error(truth, p.tolist()) if len(p) else math.nan,
        calibration=calibration_bins(truth, p.tolist()),
        subjects=subject_results(predictions, threshold, band),
        predictions=predictions,
        notes=notes,
    )


def _num(value: float) -> float | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else value


def metrics_dict(evaluation: Evaluation) -> dict:
    """JSON-ready scores for a bundle manifest (NaN becomes null)."""
    m = evaluation.metrics
    d = evaluation.decided_metrics
    return {
        "evaluated_on": evaluation.part,
        "n": m.n,
        "subjects": len(evaluation.subjects),
        "confusion_matrix": {"tp": m.tp, "fn": m.fn, "fp": m.fp, "tn": m.tn},
        "accuracy": _num(m.accuracy),
        "precision": _num(m.precision),
        "recall": _num(m.recall),
        "specificity": _num(m.specificity),
        "f1": _num(m.f1),
        "misclassification_rate": _num(m.misclassification_rate),
        "balanced_accuracy": _num(m.balanced_accuracy),
        "roc_auc": _num(m.roc_auc),
        "expected_calibration_error": _num(evaluation.ece),
        "threshold": evaluation.threshold,
        "uncertainty_band": list(evaluation.uncertainty_band),
        "uncertain_cells": evaluation.uncertain,
        "decided_accuracy": _num(d.accuracy),
        "subject_accuracy": _num(evaluation.subject_accuracy),
    }
