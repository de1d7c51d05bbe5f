"""Classification metrics and per-sample counts for reports.

Every figure a report prints comes from here, so the Summary, Metrics and CLI outputs can never
disagree. Undefined ratios (e.g. precision with no positive calls) are NaN, never an exception:
a small or one-sided sample is normal in a lab and must still produce a report.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from leukgui.core.results import (
    ALL,
    HEM,
    LABELS,
    UNCERTAIN,
    UNCLASSIFIABLE,
    CellResult,
    FileError,
    Outcome,
    RunResult,
)

Z_95 = 1.959963984540054
OVERALL = "All samples"  # the summary row over every sample of a run

__all__ = [
    "OVERALL",
    "Z_95",
    "BinaryMetrics",
    "SampleSummary",
    "TruthSet",
    "binary_metrics",
    "call_label",
    "decided_label",
    "expected_calibration_error",
    "normalize_truth",
    "roc_auc",
    "sample_summary",
    "thresholded_call",
    "truth_set",
    "wilson_interval",
]


def _ratio(num: float, den: float) -> float:
    """num/den, or NaN when the ratio is undefined (den == 0)."""
    return num / den if den else math.nan


def wilson_interval(k: int, n: int, z: float = Z_95) -> tuple[float, float]:
    """Wilson score interval for a proportion k/n (default 95%).

    Used instead of the normal approximation because it stays inside 0..1 and behaves for the
    small counts and 0%/100% proportions that single samples often have. n == 0 gives NaNs.
    """
    if n < 0 or k < 0 or k > n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    if n == 0:
        return (math.nan, math.nan)
    p = k / n
    z2 = z * z
    denom = 1.0 + z2 / n
    centre = (p + z2 / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def thresholded_call(p_all: float, threshold: float) -> str:
    """The binary call for P(ALL) at the decision threshold (ALL when p_all >= threshold)."""
    return ALL if p_all >= threshold else HEM


def call_label(p_all: float, threshold: float, uncertainty_band: tuple[float, float]) -> str:
    """The label policy, the one rule every model call follows: UNCERTAIN strictly inside
    the uncertainty band, else ALL at or above the decision threshold, else HEM."""
    low, high = uncertainty_band
    if low < p_all < high:
        return UNCERTAIN
    return thresholded_call(p_all, threshold)


def decided_label(cell: CellResult, threshold: float) -> str:
    """The cell's label, with UNCERTAIN resolved by the decision threshold.

    Metrics need a binary call for every cell with a known truth; the uncertainty band is a
    display aid, so an UNCERTAIN cell counts as whatever the threshold alone says.
    """
    if cell.label in (ALL, HEM):
        return cell.label
    return thresholded_call(cell.p_all, threshold)


def normalize_truth(truth: str | None) -> str | None:
    """ALL/HEM for a usable ground-truth label (any case), else None (unknown)."""
    if truth is None:
        return None
    value = str(truth).strip().upper()
    return value if value in (ALL, HEM) else None


def _check_labels(name: str, values: Sequence[str]) -> None:
    bad = sorted({v for v in values if v not in (ALL, HEM)}, key=str)
    if bad:
        raise ValueError(
            f"{name} must contain only {ALL!r}/{HEM!r} (resolve {UNCERTAIN!r} with the "
            f"threshold first); got {bad[:5]}"
        )


def roc_auc(truth: Sequence[str], scores: Sequence[float], positive: str = ALL) -> float:
    """Area under the ROC curve via the Mann-Whitney U statistic, ties counted as 1/2.

    Equals the probability that a random positive cell scores higher than a random negative
    one. NaN when either class is absent or any score is NaN.
    """
    if len(truth) != len(scores):
        raise ValueError(f"truth has {len(truth)} items but scores has {len(scores)}")
    s = np.asarray(scores, dtype=np.float64)
    is_pos = np.fromiter((t == positive for t in truth), dtype=bool, count=len(truth))
    n_pos = int(is_pos.sum())
    n_neg = len(truth) - n_pos
    if n_pos == 0 or n_neg == 0 or np.isnan(s).any():
        return math.nan
    ranks = _average_ranks(s)
    u = float(ranks[is_pos].sum()) - n_pos * (n_pos + 1) / 2.0
    return u / (n_pos * n_neg)


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks, tied values sharing the mean of the ranks they span."""
    order = np.argsort(values, kind="mergesort")
    sorted_vals = values[order]
    # Start index of each run of equal values in the sorted array.
    starts = np.flatnonzero(np.r_[True, sorted_vals[1:] != sorted_vals[:-1]])
    ends = np.r_[starts[1:], len(values)]
    mean_rank = (starts + ends + 1) / 2.0  # mean of (start+1 .. end), 1-based
    run_lengths = ends - starts
    ranks = np.empty(len(values), dtype=np.float64)
    ranks[order] = np.repeat(mean_rank, run_lengths)
    return ranks


@dataclass(frozen=True)
class BinaryMetrics:
    """Confusion matrix for ALL (positive) vs HEM, and every ratio derived from it.

    Only the four counts (and the AUC, which needs scores) are stored; every other figure is a
    property of them, so no two numbers in a report can contradict each other.
    """

    tp: int
    fn: int
    fp: int
    tn: int
    roc_auc: float = math.nan

    @property
    def n(self) -> int:
        return self.tp + self.fn + self.fp + self.tn

    @property
    def n_positive(self) -> int:
        """Cells whose truth is the positive class."""
        return self.tp + self.fn

    @property
    def n_negative(self) -> int:
        return self.fp + self.tn

    @property
    def accuracy(self) -> float:
        return _ratio(self.tp + self.tn, self.n)

    @property
    def precision(self) -> float:
        return _ratio(self.tp, self.tp + self.fp)

    @property
    def recall(self) -> float:
        return _ratio(self.tp, self.tp + self.fn)

    @property
    def sensitivity(self) -> float:
        return self.recall

    @property
    def specificity(self) -> float:
        return _ratio(self.tn, self.tn + self.fp)

    @property
    def f1(self) -> float:
        return _ratio(2 * self.tp, 2 * self.tp + self.fp + self.fn)

    @property
    def misclassification_rate(self) -> float:
        return _ratio(self.fp + self.fn, self.n)

    @property
    def balanced_accuracy(self) -> float:
        """Mean of sensitivity and specificity; NaN if either is undefined."""
        return (self.recall + self.specificity) / 2.0

    @property
    def f1_hem(self) -> float:
        """F1 of the HEM class (HEM taken as the positive class)."""
        return _ratio(2 * self.tn, 2 * self.tn + self.fn + self.fp)

    @property
    def weighted_f1(self) -> float:
        """Support-weighted mean of the F1 of ALL and of HEM: the C-NMC challenge's ranking
        score, so our figures compare with the published ones. A class with no true cells
        weighs nothing (as in scikit-learn's average="weighted"); NaN with no cells."""
        if self.n == 0:
            return math.nan
        total = 0.0
        if self.n_positive:
            total += self.n_positive * self.f1
        if self.n_negative:
            total += self.n_negative * self.f1_hem
        return total / self.n


def binary_metrics(
    truth: Sequence[str],
    predicted: Sequence[str],
    p_all: Sequence[float] | None = None,
    positive: str = ALL,
) -> BinaryMetrics:
    """Confusion matrix and ROC AUC for ALL/HEM calls against ground truth.

    `predicted` must already be binary: callers resolve UNCERTAIN cells with the decision
    threshold (see `decided_label`) so every cell with a truth is counted once. `p_all` is
    P(ALL) per cell, used only for the AUC; with `positive="HEM"` it is flipped to P(HEM).
    """
    if positive not in (ALL, HEM):
        raise ValueError(f"positive must be {ALL!r} or {HEM!r}, got {positive!r}")
    if len(truth) != len(predicted):
        raise ValueError(f"truth has {len(truth)} items but predicted has {len(predicted)}")
    _check_labels("truth", truth)
    _check_labels("predicted", predicted)
    tp = fn = fp = tn = 0
    for t, p in zip(truth, predicted, strict=True):
        if t == positive:
            if p == positive:
                tp += 1
            else:
                fn += 1
        elif p == positive:
            fp += 1
        else:
            tn += 1
    auc = math.nan
    if p_all is not None:
        if len(p_all) != len(truth):
            raise ValueError(f"truth has {len(truth)} items but p_all has {len(p_all)}")
        scores = np.asarray(p_all, dtype=np.float64)
        if positive == HEM:
            scores = 1.0 - scores
        auc = roc_auc(truth, scores, positive=positive)
    return BinaryMetrics(tp=tp, fn=fn, fp=fp, tn=tn, roc_auc=auc)


def expected_calibration_error(
    truth: Sequence[str], p_all: Sequence[float], bins: int = 10
) -> float:
    """Expected calibration error of P(ALL) over equal-width bins.

    For each bin of P(ALL) the gap |mean P(ALL) - fraction truly ALL| is weighted by the bin's
    share of cells. This measures whether "P(ALL) = 0.8" really means 80% blasts, independent
    of the decision threshold. NaN when there are no cells.
    """
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    if len(truth) != len(p_all):
        raise ValueError(f"truth has {len(truth)} items but p_all has {len(p_all)}")
    _check_labels("truth", truth)
    n = len(truth)
    if n == 0:
        return math.nan
    p = np.asarray(p_all, dtype=np.float64)
    if np.isnan(p).any():
        return math.nan
    y = np.fromiter((t == ALL for t in truth), dtype=np.float64, count=n)
    idx = np.clip((p * bins).astype(np.int64), 0, bins - 1)  # p == 1.0 goes in the last bin
    ece = 0.0
    for b in range(bins):
        mask = idx == b
        count = int(mask.sum())
        if count:
            ece += count / n * abs(float(p[mask].mean()) - float(y[mask].mean()))
    return ece


class Reviewed(Protocol):
    """What a summary needs of a review (`leukgui.core.review.ReviewState` provides it)."""

    def final_label(self, cell: CellResult) -> str: ...

    def is_reviewed(self, cell: CellResult) -> bool: ...

    def signed_off(self, sample: str) -> Any: ...


@dataclass(frozen=True)
class SampleSummary:
    """Counts for one sample (or the "All samples" row, last) and its ALL fraction with a
    Wilson 95% CI.

    Counts are of final labels: the reviewer's where a cell was reviewed, else the model's.
    `all_fraction` = ALL / (ALL + HEM): UNCERTAIN cells (unreviewed model calls inside the
    band) and UNCLASSIFIABLE cells (a reviewer's verdict) carry no call and stay out of the
    denominator; fractions are 0..1 (NaN when no cell was decided).
    """

    sample: str
    cells: int
    n_all: int
    n_hem: int
    n_uncertain: int
    errors: int
    all_fraction: float
    ci_low: float
    ci_high: float
    is_overall: bool = False
    n_unclassifiable: int = 0
    reviewed: int = 0
    signed_off: Any = None  # the sample's SignOff when a review locked it

    @property
    def decided(self) -> int:
        """Cells called ALL or HEM (the denominator of the ALL fraction)."""
        return self.n_all + self.n_hem


_FINAL_LABELS = (ALL, HEM, UNCERTAIN, UNCLASSIFIABLE)


def _summary_row(
    sample: str,
    counts: dict[str, int],
    errors: int,
    reviewed: int = 0,
    signed_off: Any = None,
    is_overall: bool = False,
) -> SampleSummary:
    n_all, n_hem = counts[ALL], counts[HEM]
    decided = n_all + n_hem
    low, high = wilson_interval(n_all, decided)
    return SampleSummary(
        sample=sample,
        cells=sum(counts.values()),
        n_all=n_all,
        n_hem=n_hem,
        n_uncertain=counts[UNCERTAIN],
        errors=errors,
        all_fraction=_ratio(n_all, decided),
        ci_low=low,
        ci_high=high,
        is_overall=is_overall,
        n_unclassifiable=counts[UNCLASSIFIABLE],
        reviewed=reviewed,
        signed_off=signed_off,
    )


def sample_summary(
    outcomes: RunResult | Iterable[Outcome], review: Reviewed | None = None
) -> list[SampleSummary]:
    """Per-sample counts in order of first appearance, with an "All samples" row last.

    Without `review` the counts are the model's calls; with it they are final labels
    (reviewed, else the model's), and each row also counts reviewed cells and carries its
    sign-off. With nothing reviewed both give the same numbers, so a report does not move
    when an empty review is attached. Errors are inputs that could not be analyzed; they
    count towards their sample's `errors`, never towards `cells`.
    """
    items = outcomes.outcomes if isinstance(outcomes, RunResult) else list(outcomes)
    per_sample: dict[str, dict[str, int]] = {}
    errors: dict[str, int] = {}
    reviewed: dict[str, int] = {}
    for o in items:
        counts = per_sample.setdefault(o.sample, dict.fromkeys(_FINAL_LABELS, 0))
        errors.setdefault(o.sample, 0)
        reviewed.setdefault(o.sample, 0)
        if isinstance(o, FileError):
            errors[o.sample] += 1
        elif isinstance(o, CellResult):
            label = review.final_label(o) if review is not None else o.label
            allowed = _FINAL_LABELS if review is not None else LABELS
            if label not in allowed:
                raise ValueError(f"unknown label {label!r} for {o.path}")
            counts[label] += 1
            if review is not None:
                reviewed[o.sample] += review.is_reviewed(o)
        else:
            raise TypeError(f"expected CellResult or FileError, got {type(o).__name__}")
    rows = [
        _summary_row(
            s,
            c,
            errors[s],
            reviewed[s],
            review.signed_off(s) if review is not None else None,
        )
        for s, c in per_sample.items()
    ]
    total = {label: sum(c[label] for c in per_sample.values()) for label in _FINAL_LABELS}
    rows.append(
        _summary_row(OVERALL, total, sum(errors.values()), sum(reviewed.values()), None, True)
    )
    return rows


@dataclass(frozen=True)
class TruthSet:
    """The cells of a run with a usable truth, their binary calls and P(ALL), ready for
    `binary_metrics`; `metrics` computes them.

    `uncertain`: counted cells whose call is the model's UNCERTAIN resolved by the threshold.
    `reviewed`: counted cells whose call is a reviewer's label. `unclassifiable`: cells with
    truth a reviewer marked UNCLASSIFIABLE, left out (they have no call). `without_truth`:
    cells with no usable truth, not in the metrics.
    """

    truth: list[str]
    predicted: list[str]
    p_all: list[float]
    uncertain: int = 0
    without_truth: int = 0
    reviewed: int = 0
    unclassifiable: int = 0

    @property
    def any_reviewed(self) -> bool:
        """Whether a reviewer labelled any cell with truth (counted or UNCLASSIFIABLE)."""
        return bool(self.reviewed or self.unclassifiable)

    def metrics(self) -> BinaryMetrics:
        return binary_metrics(self.truth, self.predicted, self.p_all)


def truth_set(run: RunResult, review: Reviewed | None = None) -> TruthSet:
    """Every cell with a known truth and its call, for metrics against the truth.

    Without `review` the call is the model's, UNCERTAIN resolved by the run's decision
    threshold (see `decided_label`). With it, a reviewed cell counts with the reviewer's label
    and an unreviewed one with the model's call as above; cells reviewed UNCLASSIFIABLE are
    left out and counted in `unclassifiable`.
    """
    threshold = run.info.threshold
    truth: list[str] = []
    predicted: list[str] = []
    p_all: list[float] = []
    uncertain = without = reviewed = unclassifiable = 0
    for cell in run.cells:
        known = normalize_truth(cell.truth)
        if known is None:
            without += 1
            continue
        by_reviewer = review is not None and review.is_reviewed(cell)
        label = review.final_label(cell) if by_reviewer else cell.label
        if label == UNCLASSIFIABLE:
            unclassifiable += 1
            continue
        truth.append(known)
        p_all.append(float(cell.p_all))
        if label in (ALL, HEM):
            predicted.append(label)
        else:
            predicted.append(thresholded_call(cell.p_all, threshold))
            uncertain += 1
        reviewed += by_reviewer
    return TruthSet(truth, predicted, p_all, uncertain, without, reviewed, unclassifiable)
