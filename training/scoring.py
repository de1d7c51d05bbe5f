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
from training.predictions import Predictions
from training.stats import BootstrapIntervals, SubjectLevel, subject_bootstrap, subject_level

__all__ = [
    "BAND_RULE",
    "MIN_BAND_SIDE_CELLS",
    "THRESHOLD_RULE",
    "BandCheck",
    "BandChoice",
    "CalibrationBin",
    "Evaluation",
    "Predictions",
    "SubjectResult",
    "band_check",
    "calibration_bins",
    "choose_band",
    "choose_band_detail",
    "choose_threshold",
    "evaluate_predictions",
    "metrics_dict",
    "subject_results",
]

THRESHOLD_RULE = (
    "decision threshold = the P(ALL) cut that maximises balanced accuracy (Youden's J) on the "
    "validation subjects; among equally good cuts the one closest to 0.5"
)
MIN_BAND_SIDE_CELLS = 30  # validation cells needed beyond an edge to judge its error rate
BAND_RULE = (
    "uncertainty band = each edge moves outwards from the threshold over the midpoints "
    "between neighbouring validation scores (never onto a score) and stops at the first "
    "position where the validation cells beyond it (called HEM at or below the low edge, ALL "
    "at or above the high edge) are wrong at most {error:.0%} of the time; a position counts "
    "only with at least " + str(MIN_BAND_SIDE_CELLS) + " validation cells beyond it (a side "
    "with fewer gets no band; where no such position meets the target the edge goes as far "
    "out as can still be judged); then, while the band holds more than {cap:.0%} of "
    "validation cells, the edge further from the threshold is pulled back one position, and "
    "the report says that the cap stopped the edges before the error target was met"
)
DEFAULT_BAND_ERROR = 0.02
DEFAULT_BAND_CAP = 0.20


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


@dataclass(frozen=True)
class BandCheck:
    """What a band achieved on one labelled set: the error rate of the calls beyond each edge
    (the promise the band makes) and the share of cells it left decided."""

    part: str
    threshold: float
    band: tuple[float, float]
    target_error: float
    cells: int
    cells_hem: int  # decided HEM: at or below the low edge (and below the threshold)
    errors_hem: int  # of those, truly ALL
    cells_all: int  # decided ALL: at or above the high edge (and the threshold)
    errors_all: int  # of those, truly HEM
    uncertain: int  # strictly inside the band
    min_side_cells: int = MIN_BAND_SIDE_CELLS

    @property
    def error_hem(self) -> float:
        """Share of HEM calls beyond the low edge that are wrong (NaN when there are none)."""
        return self.errors_hem / self.cells_hem if self.cells_hem else math.nan

    @property
    def error_all(self) -> float:
        return self.errors_all / self.cells_all if self.cells_all else math.nan

    @property
    def coverage(self) -> float:
        """Share of cells decided (outside the band); NaN with no cells."""
        return (self.cells_hem + self.cells_all) / self.cells if self.cells else math.nan

    def _meets(self, cells: int, error: float) -> bool | None:
        return None if cells < max(self.min_side_cells, 1) else error <= self.target_error + 1e-12

    @property
    def meets_target_hem(self) -> bool | None:
        """Error beyond the low edge within the target; None: too few cells to judge."""
        return self._meets(self.cells_hem, self.error_hem)

    @property
    def meets_target_all(self) -> bool | None:
        return self._meets(self.cells_all, self.error_all)


@dataclass(frozen=True)
class BandChoice:
    """The band the rule chose on validation, and whether it kept its promise there."""

    low: float
    high: float
    threshold: float
    target_error: float
    cap: float  # most validation cells the band may hold, as a share
    min_side_cells: int
    cap_binds: bool  # the cap stopped the edges before the error target was met
    validation: BandCheck  # achieved error per side and coverage on the validation cells
    notes: list[str] = field(default_factory=list)

    @property
    def band(self) -> tuple[float, float]:
        return (self.low, self.high)

    @property
    def error_hem(self) -> float:
        return self.validation.error_hem

    @property
    def error_all(self) -> float:
        return self.validation.error_all

    @property
    def coverage(self) -> float:
        return self.validation.coverage


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
    subject_level: SubjectLevel  # one call per subject, metrics over subjects
    intervals: BootstrapIntervals  # subject-bootstrap intervals of the cell-level metrics
    band_check: BandCheck  # error beyond each band edge on this set
    temperature: float  # applied to P(ALL) before these scores (1.0: none)
    ece_uncalibrated: float  # ECE before the temperature (NaN when unknown)
    calibration_uncalibrated: list[CalibrationBin]
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


def _side_candidates(
    p: np.ndarray, y: np.ndarray, threshold: float, side: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Candidate edges of one side, from the threshold outwards, with the validation cells
    beyond each edge and how many of them are wrong.

    Beyond the low edge means called HEM (p < threshold and p <= edge); beyond the high edge
    called ALL (p >= threshold and p >= edge), exactly as `call_label` applies a band. Every
    candidate but the threshold itself lies midway between two neighbouring scores.
    """
    order = np.argsort(p, kind="mergesort")
    ps, ys = p[order], y[order]
    n = len(ps)
    cum_all = np.concatenate([[0], np.cumsum(ys)])  # ALL cells among the first k
    if side == HEM:
        scores = np.unique(p[p < threshold])[::-1]
        edges = np.concatenate([[threshold], (scores[:-1] + scores[1:]) / 2.0])
        k = np.searchsorted(ps, edges, side="right")
        k[0] = np.searchsorted(ps, threshold, side="left")
        cells = k
        wrong = cum_all[k]
    else:
        scores = np.unique(p[p >= threshold])
        edges = np.concatenate([[threshold], (scores[:-1] + scores[1:]) / 2.0])
        k = np.searchsorted(ps, edges, side="left")
        cells = n - k
        wrong = cells - (cum_all[n] - cum_all[k])
    return edges.astype(np.float64), cells.astype(np.int64), wrong.astype(np.int64)


def _pick_edge(
    cells: np.ndarray, wrong: np.ndarray, max_error: float, min_side_cells: int, side: str
) -> tuple[int, str | None]:
    """Index of the chosen candidate on one side, and a note when the target is not shown."""
    judged = cells >= max(min_side_cells, 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        error = wrong / np.maximum(cells, 1)
    ok = judged & (error <= max_error + 1e-12)
    name = "HEM (below the threshold)" if side == HEM else "ALL (at or above the threshold)"
    if ok.any():
        return int(np.argmax(ok)), None
    if judged.any():
        i = int(np.flatnonzero(judged)[-1])
        return i, (
            f"{name} side: no edge with at least {min_side_cells} validation cells beyond it "
            f"meets the {max_error:.0%} error target; the edge goes as far out as can still be "
            f"judged ({cells[i]} cells beyond it, {error[i]:.1%} wrong)"
        )
    return 0, (
        f"{name} side: only {int(cells[0])} validation cells, fewer than the {min_side_cells} "
        "needed to judge an error rate, so this side has no band"
    )


def choose_band_detail(
    truth: Sequence[str],
    p_all: Sequence[float],
    threshold: float,
    *,
    max_error: float = DEFAULT_BAND_ERROR,
    max_uncertain: float = DEFAULT_BAND_CAP,
    min_side_cells: int = MIN_BAND_SIDE_CELLS,
) -> BandChoice:
    """The band rule (see BAND_RULE) with what it achieved on the validation cells.

    Edges sit midway between neighbouring validation scores, so no validation cell lies on an
    edge and a test cell in an empty gap is not made UNCERTAIN by an edge snapped to the far
    side of the gap. When the cap pulls the edges in before the error target is met, the
    result says so (`cap_binds`) instead of silently missing the target.
    """
    y = np.array([t == ALL for t in truth], dtype=bool)
    p = np.asarray(p_all, dtype=np.float64)
    if len(y) != len(p):
        raise ValueError(f"truth has {len(y)} items but p_all has {len(p)}")
    notes: list[str] = []
    if len(p) == 0:
        notes.append("no validation cells: the band is the threshold")
        low_edges = high_edges = np.array([float(threshold)])
        li = hi = 0
    else:
        low_edges, low_cells, low_wrong = _side_candidates(p, y, threshold, HEM)
        high_edges, high_cells, high_wrong = _side_candidates(p, y, threshold, ALL)
        li, note_low = _pick_edge(low_cells, low_wrong, max_error, min_side_cells, HEM)
        hi, note_high = _pick_edge(high_cells, high_wrong, max_error, min_side_cells, ALL)
        notes += [n for n in (note_low, note_high) if n]
    ps = np.sort(p)

    def inside(lo: float, hi_: float) -> int:
        if hi_ <= lo:
            return 0
        return int(np.searchsorted(ps, hi_, "left") - np.searchsorted(ps, lo, "right"))

    cap_cells = max_uncertain * len(p)
    pulled = False
    while inside(low_edges[li], high_edges[hi]) > cap_cells and (li > 0 or hi > 0):
        # Pull back whichever edge is further from the threshold, one candidate at a time.
        if li > 0 and (threshold - low_edges[li] >= high_edges[hi] - threshold or hi == 0):
            li -= 1
        else:
            hi -= 1
        pulled = True
    low, high = float(low_edges[li]), float(high_edges[hi])
    check = band_check(
        list(truth),
        p.tolist(),
        (low, high),
        threshold,
        "validation",
        max_error,
        min_side_cells=min_side_cells,
    )
    if pulled:
        notes.append(
            f"the {max_uncertain:.0%} cap on uncertain validation cells stopped the edges "
            f"before the {max_error:.0%} error target: errors beyond the edges are "
            f"{check.error_hem:.1%} (HEM side) and {check.error_all:.1%} (ALL side)"
        )
    return BandChoice(
        low=low,
        high=high,
        threshold=float(threshold),
        target_error=float(max_error),
        cap=float(max_uncertain),
        min_side_cells=int(min_side_cells),
        cap_binds=pulled,
        validation=check,
        notes=notes,
    )


def choose_band(
    truth: Sequence[str],
    p_all: Sequence[float],
    threshold: float,
    *,
    max_error: float = DEFAULT_BAND_ERROR,
    max_uncertain: float = DEFAULT_BAND_CAP,
    min_side_cells: int = MIN_BAND_SIDE_CELLS,
) -> tuple[float, float]:
    """The band rule (see BAND_RULE) as (low, high), low <= threshold <= high.

    Cells at or below `low` are called HEM, at or above `high` ALL, strictly between them
    UNCERTAIN (`call_label`). `choose_band_detail` also says what the band achieved.
    """
    choice = choose_band_detail(
        truth,
        p_all,
        threshold,
        max_error=max_error,
        max_uncertain=max_uncertain,
        min_side_cells=min_side_cells,
    )
    return choice.low, choice.high


def band_check(
    truth: Sequence[str],
    p_all: Sequence[float],
    band: tuple[float, float],
    threshold: float,
    part: str,
    target: float = DEFAULT_BAND_ERROR,
    *,
    min_side_cells: int = MIN_BAND_SIDE_CELLS,
) -> BandCheck:
    """How often the cells decided outside the band are wrong on each side, on any set.

    The band promises an error rate beyond each edge; this measures it (on validation, where
    it was chosen, and on test, where the promise is actually tested).
    """
    if len(truth) != len(p_all):
        raise ValueError(f"truth has {len(truth)} items but p_all has {len(p_all)}")
    y = np.array([t == ALL for t in truth], dtype=bool)
    p = np.asarray(p_all, dtype=np.float64)
    low, high = float(band[0]), float(band[1])
    uncertain = (p > low) & (p < high)
    hem = ~uncertain & (p < threshold)
    all_ = ~uncertain & (p >= threshold)
    return BandCheck(
        part=part,
        threshold=float(threshold),
        band=(low, high),
        target_error=float(target),
        cells=len(p),
        cells_hem=int(hem.sum()),
        errors_hem=int((hem & y).sum()),
        cells_all=int(all_.sum()),
        errors_all=int((all_ & ~y).sum()),
        uncertain=int(uncertain.sum()),
        min_side_cells=int(min_side_cells),
    )


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
    predictions: Predictions,
    threshold: float,
    band: tuple[float, float],
    part: str,
    *,
    temperature: float = 1.0,
    uncalibrated_p_all: Sequence[float] | None = None,
    resamples: int = 2000,
    seed: int = 0,
    band_error: float = DEFAULT_BAND_ERROR,
) -> Evaluation:
    """Every score of one prediction set under one threshold and band.

    `predictions` hold the scores the threshold and band apply to (calibrated, when a
    temperature is used); `uncalibrated_p_all` are the raw scores, only for the ECE before
    calibration. Intervals resample subjects (`resamples`, `seed`), not cells.
    """
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
    raw: list[float] | None = None
    if uncalibrated_p_all is not None:
        raw = [float(v) for v in uncalibrated_p_all]
        if len(raw) != len(p):
            raise ValueError(
                f"uncalibrated_p_all has {len(raw)} items but there are {len(p)} cells"
            )
    elif temperature == 1.0:
        raw = p.tolist()  # no temperature: the scores are the uncalibrated ones
    intervals = subject_bootstrap(predictions, threshold, resamples=resamples, seed=seed)
    notes += [f"{part}: {n}" for n in intervals.notes]
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
        subject_level=subject_level(predictions, threshold),
        intervals=intervals,
        band_check=band_check(truth, p.tolist(), band, threshold, part, band_error),
        temperature=float(temperature),
        ece_uncalibrated=(
            expected_calibration_error(truth, raw) if raw is not None and len(raw) else math.nan
        ),
        calibration_uncalibrated=calibration_bins(truth, raw) if raw is not None else [],
        notes=notes,
    )


def _num(value: float) -> float | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else value


def _pair(interval: tuple[float, float]) -> list[float | None]:
    return [_num(float(interval[0])), _num(float(interval[1]))]


def metrics_dict(evaluation: Evaluation) -> dict:
    """JSON-ready scores for a bundle manifest (NaN becomes null)."""
    m = evaluation.metrics
    d = evaluation.decided_metrics
    sl = evaluation.subject_level
    s = sl.metrics
    iv = evaluation.intervals
    bc = evaluation.band_check
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
        "weighted_f1": _num(m.weighted_f1),
        "subject_level": {
            "rule": sl.rule,
            "n": sl.n,
            "confusion_matrix": {"tp": s.tp, "fn": s.fn, "fp": s.fp, "tn": s.tn},
            "accuracy": _num(s.accuracy),
            "sensitivity": _num(s.sensitivity),
            "specificity": _num(s.specificity),
            "balanced_accuracy": _num(s.balanced_accuracy),
            "roc_auc": _num(s.roc_auc),
            "intervals": {k: _pair(v) for k, v in sl.intervals.items()},
            "confidence": sl.confidence,
            "interval_method": sl.interval_method,
        },
        "intervals": {k: _pair(v) for k, v in iv.intervals.items()},
        "bootstrap": {
            "unit": iv.unit,
            "resamples": iv.resamples,
            "seed": iv.seed,
            "confidence": iv.confidence,
            "subjects": iv.subjects,
            "notes": list(iv.notes),
        },
        "band_check": {
            "target_error": bc.target_error,
            "cells_hem": bc.cells_hem,
            "error_hem": _num(bc.error_hem),
            "meets_target_hem": bc.meets_target_hem,
            "cells_all": bc.cells_all,
            "error_all": _num(bc.error_all),
            "meets_target_all": bc.meets_target_all,
            "uncertain": bc.uncertain,
            "coverage": _num(bc.coverage),
            "min_side_cells": bc.min_side_cells,
        },
        "temperature": evaluation.temperature,
        "expected_calibration_error_before": _num(evaluation.ece_uncalibrated),
    }
