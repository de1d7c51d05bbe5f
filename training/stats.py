"""Uncertainty of the training scores, with the subject (the person) as the independent unit.

Cells of one person share a smear, a stain and a disease state, so they are not independent
draws: 40 cells of 2 people carry far less evidence than 40 people. Intervals here therefore
resample SUBJECTS (a cluster bootstrap), subject-level calls get exact binomial intervals over
subjects, and two models are compared on the same subjects (a paired bootstrap and McNemar's
exact test). Pure numpy, no TensorFlow, so every rule can be checked on numbers made by hand.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from leukgui.core.metrics import BinaryMetrics, binary_metrics
from leukgui.core.results import ALL, HEM
from training.predictions import Predictions

__all__ = [
    "FEW_SUBJECTS_PER_CLASS",
    "few_subjects",
    "BOOTSTRAP_METRICS",
    "MIN_BOOTSTRAP_SUBJECTS",
    "SUBJECT_INTERVAL_METHOD",
    "BootstrapIntervals",
    "PairedBootstrap",
    "PairedComparison",
    "SubjectLevel",
    "clopper_pearson",
    "mcnemar_exact",
    "paired_bootstrap",
    "paired_comparison",
    "subject_bootstrap",
    "subject_level",
]

BOOTSTRAP_METRICS = (
    "accuracy",
    "precision",
    "recall",
    "specificity",
    "f1",
    "weighted_f1",
    "balanced_accuracy",
    "misclassification_rate",
    "roc_auc",
)
# A class represented by fewer subjects than this gives no between-subject spread to resample,
# so every interval is NaN rather than a falsely narrow one.
MIN_BOOTSTRAP_SUBJECTS = 2
# Below this many subjects of a class a bootstrap cannot show variation the few subjects do not
# contain (with three subjects all right, the interval of sensitivity is 100% - 100%): reports
# say so, and a paired comparison is not called conclusive.
FEW_SUBJECTS_PER_CLASS = 5
SUBJECT_INTERVAL_METHOD = (
    "Clopper-Pearson exact binomial interval over subjects; balanced accuracy: the mean of the "
    "sensitivity and specificity bounds, each at the Bonferroni-adjusted level, so it holds "
    "at least the stated confidence"
)
SUBJECT_RULES = {
    "mean": "subject called ALL when its mean P(ALL) ≥ threshold, else HEM",
    "majority": (
        "subject called ALL when most of its cells are called ALL at the threshold, HEM when "
        "most are HEM; a tie goes by whether its mean P(ALL) ≥ threshold"
    ),
}


# ------------------------------------------------------------------------------ dataclasses


@dataclass(frozen=True)
class BootstrapIntervals:
    """Percentile intervals of the cell-level metrics under resampling of subjects."""

    unit: str  # always "subject": what was resampled
    resamples: int
    seed: int
    confidence: float
    subjects: int
    intervals: dict[str, tuple[float, float]]  # metric -> (low, high); NaN when undefined
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class SubjectLevel:
    """One call per subject and the metrics over subjects (n = number of subjects)."""

    rule: str  # in plain words
    threshold: float
    calls: dict[str, str]  # subject -> ALL / HEM
    truth: dict[str, str]  # subject -> majority true class (ties count as ALL)
    mean_p_all: dict[str, float]
    metrics: BinaryMetrics  # over subjects; roc_auc from the subjects' mean P(ALL)
    intervals: dict[str, tuple[float, float]]  # accuracy, sensitivity, specificity, balanced
    confidence: float = 0.95
    interval_method: str = SUBJECT_INTERVAL_METHOD

    @property
    def n(self) -> int:
        return len(self.calls)


@dataclass(frozen=True)
class PairedComparison:
    """Model a against model b on the same cells, with subjects as the resampled unit."""

    name_a: str
    name_b: str
    metric: str
    value_a: float
    value_b: float
    difference: float  # a - b
    interval: tuple[float, float]  # paired subject-bootstrap percentile interval of a - b
    resamples: int
    seed: int
    confidence: float
    subjects: int
    cells: int
    mcnemar_b: int  # cells a gets right and b gets wrong
    mcnemar_c: int  # cells a gets wrong and b gets right
    mcnemar_p: float
    verdict: str
    unit: str = "subject"  # what the bootstrap resampled


@dataclass(frozen=True)
class PairedBootstrap:
    """The paired bootstrap of a difference in balanced accuracy (a - b), draw by draw.

    `units` are what each resample draws with replacement (the subjects, never the cells);
    `differences` holds one a - b per resample, empty when too few subjects (`note` says why).
    """

    unit: str
    units: tuple[str, ...]
    differences: np.ndarray
    note: str | None = None


# ------------------------------------------------------------------------------ helpers


@dataclass(frozen=True)
class _Subjects:
    """Cells grouped by subject, with per-subject confusion counts at one threshold."""

    names: list[str]
    index: np.ndarray  # subject index of every cell
    is_all: np.ndarray  # cell truth
    scores: np.ndarray  # cell P(ALL)
    majority_all: np.ndarray  # subject's majority truth is ALL (ties count as ALL)


def _group(subjects: Sequence[str], truth: Sequence[str], p_all: Sequence[float]) -> _Subjects:
    names, index = np.unique(np.asarray(subjects, dtype=object).astype(str), return_inverse=True)
    is_all = np.fromiter((t == ALL for t in truth), dtype=bool, count=len(truth))
    bad = {t for t in truth if t not in (ALL, HEM)}
    if bad:
        raise ValueError(f"truth must be {ALL!r} or {HEM!r}, got {sorted(bad)[:5]}")
    scores = np.asarray(p_all, dtype=np.float64)
    k = len(names)
    n_all = np.bincount(index, weights=is_all, minlength=k)
    n_cells = np.bincount(index, minlength=k)
    return _Subjects(
        names=[str(v) for v in names],
        index=index,
        is_all=is_all,
        scores=scores,
        majority_all=n_all >= n_cells - n_all,
    )


def _confusion(group: _Subjects, called_all: np.ndarray) -> np.ndarray:
    """(subjects, 4) counts tp, fn, fp, tn of binary calls `called_all` per cell: a bootstrap
    resample's confusion matrix is then a weighted sum of these rows."""
    k = len(group.names)
    y = group.is_all
    cols = [y & called_all, y & ~called_all, ~y & called_all, ~y & ~called_all]
    return np.stack(
        [np.bincount(group.index, weights=c.astype(np.float64), minlength=k) for c in cols],
        axis=1,
    )


def _pair_wins(group: _Subjects) -> np.ndarray:
    """U[i, j] = pairs (ALL cell of subject i, HEM cell of subject j) ranked right, ties 1/2.

    With subject weights w, AUC = w·U·w / ((w·pos)(w·neg)), so the AUC of every resample is a
    matrix product instead of a re-ranking of all cells.
    """
    k = len(group.names)
    u = np.zeros((k, k))
    pos = group.is_all
    pos_scores, pos_subject = group.scores[pos], group.index[pos]
    if not len(pos_scores):
        return u
    for j in range(k):
        neg = np.sort(group.scores[(group.index == j) & ~pos])
        if not len(neg):
            continue
        below = np.searchsorted(neg, pos_scores, side="left")
        upto = np.searchsorted(neg, pos_scores, side="right")
        wins = below + 0.5 * (upto - below)
        u[:, j] = np.bincount(pos_subject, weights=wins, minlength=k)
    return u


def _resample_weights(
    majority_all: np.ndarray, resamples: int, rng: np.random.Generator
) -> np.ndarray:
    """(resamples, subjects) multiplicities of a bootstrap stratified by majority class."""
    k = len(majority_all)
    weights = np.zeros((resamples, k))
    rows = np.arange(resamples)[:, None]
    for stratum in (True, False):
        members = np.flatnonzero(majority_all == stratum)
        if not len(members):
            continue
        picks = members[rng.integers(0, len(members), size=(resamples, len(members)))]
        np.add.at(weights, (np.broadcast_to(rows, picks.shape), picks), 1.0)
    return weights


def _div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def _metric_arrays(c: np.ndarray, auc: np.ndarray) -> dict[str, np.ndarray]:
    """Every bootstrap metric from (resamples, 4) confusion counts, as BinaryMetrics has them."""
    tp, fn, fp, tn = c[:, 0], c[:, 1], c[:, 2], c[:, 3]
    n = tp + fn + fp + tn
    pos, neg = tp + fn, fp + tn
    recall = _div(tp, pos)
    specificity = _div(tn, neg)
    f1 = _div(2 * tp, 2 * tp + fp + fn)
    f1_hem = _div(2 * tn, 2 * tn + fn + fp)
    weighted = _div(
        np.where(pos > 0, pos * np.nan_to_num(f1), 0.0)
        + np.where(neg > 0, neg * np.nan_to_num(f1_hem), 0.0),
        n,
    )
    return {
        "accuracy": _div(tp + tn, n),
        "precision": _div(tp, tp + fp),
        "recall": recall,
        "specificity": specificity,
        "f1": f1,
        "weighted_f1": weighted,
        "balanced_accuracy": (recall + specificity) / 2.0,
        "misclassification_rate": _div(fp + fn, n),
        "roc_auc": auc,
    }


def _balanced(c: np.ndarray) -> np.ndarray:
    """Balanced accuracy of each row of (rows, 4) confusion counts."""
    return (_div(c[:, 0], c[:, 0] + c[:, 1]) + _div(c[:, 3], c[:, 2] + c[:, 3])) / 2.0


def _percentile(values: np.ndarray, confidence: float) -> tuple[float, float]:
    """Percentile interval; NaN when the metric is undefined in any resample."""
    if not len(values) or np.isnan(values).any():
        return (math.nan, math.nan)
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(values, [alpha, 1.0 - alpha])
    return (float(low), float(high))


def few_subjects(level: SubjectLevel | None) -> str:
    """A caution when a part holds fewer than FEW_SUBJECTS_PER_CLASS subjects of a class
    ("" otherwise): its bootstrap intervals are then narrower than the truth."""
    if level is None:
        return ""
    m = level.metrics
    n_all, n_hem = m.tp + m.fn, m.tn + m.fp
    if min(n_all, n_hem) >= FEW_SUBJECTS_PER_CLASS:
        return ""
    return (
        f"only {n_all} ALL and {n_hem} HEM subjects: a bootstrap over so few subjects cannot "
        "show variation they do not contain (an interval can even have zero width), so read "
        "the subject-level exact intervals as the safer guide"
    )


def _check_settings(resamples: int, confidence: float) -> None:
    if resamples < 1:
        raise ValueError(f"resamples must be >= 1, got {resamples}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be between 0 and 1, got {confidence}")


def _too_few(group: _Subjects) -> str | None:
    """Why a subject bootstrap cannot give intervals, or None when it can."""
    strata = {ALL: int(group.majority_all.sum()), HEM: int((~group.majority_all).sum())}
    thin = [f"{c} ({n})" for c, n in strata.items() if 0 < n < MIN_BOOTSTRAP_SUBJECTS]
    if not group.names:
        return "no cells, so no intervals"
    if thin:
        return (
            f"intervals undefined: fewer than {MIN_BOOTSTRAP_SUBJECTS} subjects of class "
            + ", ".join(thin)
            + ", so the spread between subjects cannot be estimated"
        )
    return None


# ------------------------------------------------------------------------------ bootstrap


def subject_bootstrap(
    predictions: Predictions,
    threshold: float,
    *,
    resamples: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
) -> BootstrapIntervals:
    """Cluster-bootstrap percentile intervals of every cell-level metric.

    Subjects are drawn with replacement within their majority true class (so every resample
    keeps both classes), their cells pooled and the thresholded calls scored again. This is
    the honest spread when cells of one person are correlated; a Wilson interval on the cell
    count would pretend every cell were a new person.
    """
    _check_settings(resamples, confidence)
    group = _group(predictions.subjects, predictions.truth, predictions.p_all)
    problem = _too_few(group)
    if problem is not None:
        nan = (math.nan, math.nan)
        return BootstrapIntervals(
            unit="subject",
            resamples=resamples,
            seed=seed,
            confidence=confidence,
            subjects=len(group.names),
            intervals=dict.fromkeys(BOOTSTRAP_METRICS, nan),
            notes=[problem],
        )
    counts = _confusion(group, group.scores >= threshold)
    weights = _resample_weights(group.majority_all, resamples, np.random.default_rng(seed))
    pooled = weights @ counts
    u = _pair_wins(group)
    pos = counts[:, 0] + counts[:, 1]
    neg = counts[:, 2] + counts[:, 3]
    if np.isnan(group.scores).any():
        auc = np.full(resamples, np.nan)
    else:
        auc = _div(np.einsum("ri,ij,rj->r", weights, u, weights), (weights @ pos) * (weights @ neg))
    arrays = _metric_arrays(pooled, auc)
    return BootstrapIntervals(
        unit="subject",
        resamples=resamples,
        seed=seed,
        confidence=confidence,
        subjects=len(group.names),
        intervals={name: _percentile(arrays[name], confidence) for name in BOOTSTRAP_METRICS},
    )


# ------------------------------------------------------------------------------ subject level


def _binom_cdf(k: int, n: int, p: float) -> float:
    """P(X <= k) for X ~ Binomial(n, p), summed in log space (exact for the n we see)."""
    if k < 0:
        return 0.0
    if k >= n:
        return 1.0
    if p <= 0.0:
        return 1.0
    if p >= 1.0:
        return 0.0
    lp, lq = math.log(p), math.log1p(-p)
    terms = [
        math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * lp + (n - i) * lq
        for i in range(k + 1)
    ]
    top = max(terms)
    return min(1.0, math.exp(top) * sum(math.exp(t - top) for t in terms))


def _solve(f: Callable[[float], float], target: float) -> float:
    """p in [0, 1] with decreasing f(p) == target, by bisection."""
    lo, hi = 0.0, 1.0
    for _ in range(100):
        mid = (lo + hi) / 2.0
        if f(mid) > target:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2.0


def clopper_pearson(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Exact (Clopper-Pearson) interval for k successes in n: never narrower than stated,
    which matters for the few subjects a validation split has. n == 0 gives NaNs."""
    if n < 0 or k < 0 or k > n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be between 0 and 1, got {confidence}")
    if n == 0:
        return (math.nan, math.nan)
    alpha = 1.0 - confidence
    # low: P(X >= k | p) = alpha/2; high: P(X <= k | p) = alpha/2.
    low = 0.0 if k == 0 else _solve(lambda p: _binom_cdf(k - 1, n, p), 1.0 - alpha / 2.0)
    high = 1.0 if k == n else _solve(lambda p: _binom_cdf(k, n, p), alpha / 2.0)
    return (low, high)


def subject_level(
    predictions: Predictions,
    threshold: float,
    *,
    rule: str = "mean",
    confidence: float = 0.95,
) -> SubjectLevel:
    """One call per subject and metrics over subjects, the independent unit.

    A clinician decides per person, and people are what the study sampled, so these figures
    (with exact intervals over the number of subjects) are the ones a claim can rest on.
    """
    if rule not in SUBJECT_RULES:
        raise ValueError(f"rule must be one of {sorted(SUBJECT_RULES)}, got {rule!r}")
    group = _group(predictions.subjects, predictions.truth, predictions.p_all)
    k = len(group.names)
    cells = np.bincount(group.index, minlength=k)
    mean = np.bincount(group.index, weights=group.scores, minlength=k) / np.maximum(cells, 1)
    by_mean = mean >= threshold
    if rule == "mean":
        called = by_mean
    else:
        n_all = np.bincount(group.index, weights=group.scores >= threshold, minlength=k)
        n_hem = cells - n_all
        called = np.where(n_all == n_hem, by_mean, n_all > n_hem)
    truth = [ALL if v else HEM for v in group.majority_all]
    calls = [ALL if v else HEM for v in called]
    metrics = binary_metrics(truth, calls, mean.tolist())
    sens = clopper_pearson(metrics.tp, metrics.n_positive, confidence)
    spec = clopper_pearson(metrics.tn, metrics.n_negative, confidence)
    adjusted = 1.0 - (1.0 - confidence) / 2.0  # Bonferroni over the two halves
    sens_adj = clopper_pearson(metrics.tp, metrics.n_positive, adjusted)
    spec_adj = clopper_pearson(metrics.tn, metrics.n_negative, adjusted)
    intervals = {
        "accuracy": clopper_pearson(metrics.tp + metrics.tn, metrics.n, confidence),
        "sensitivity": sens,
        "specificity": spec,
        "balanced_accuracy": (
            (sens_adj[0] + spec_adj[0]) / 2.0,
            (sens_adj[1] + spec_adj[1]) / 2.0,
        ),
    }
    return SubjectLevel(
        rule=SUBJECT_RULES[rule],
        threshold=float(threshold),
        calls=dict(zip(group.names, calls, strict=True)),
        truth=dict(zip(group.names, truth, strict=True)),
        mean_p_all={s: float(v) for s, v in zip(group.names, mean, strict=True)},
        metrics=metrics,
        intervals=intervals,
        confidence=confidence,
    )


# ------------------------------------------------------------------------------ comparison


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value: the discordant cells b and c against Binomial(b+c,
    1/2). Exact because discordant counts between two good models are often small."""
    if b < 0 or c < 0:
        raise ValueError(f"counts must be >= 0, got b={b}, c={c}")
    n = b + c
    if n == 0:
        return 1.0
    return min(1.0, 2.0 * _binom_cdf(min(b, c), n, 0.5))


def _aligned(a: Predictions, b: Predictions) -> np.ndarray:
    """Index into b of each of a's cells, matched by path; ValueError naming any mismatch."""
    for name, preds in (("a", a), ("b", b)):
        dup = [p for p, n in Counter(preds.paths).items() if n > 1]
        if dup:
            raise ValueError(f"predictions {name} list cell(s) {dup[:3]} more than once")
    where = {p: i for i, p in enumerate(b.paths)}
    only_a = [p for p in a.paths if p not in where]
    only_b = sorted(set(b.paths) - set(a.paths))
    if only_a or only_b:
        parts = []
        if only_a:
            parts.append(f"{len(only_a)} cell(s) only in a, e.g. {only_a[:3]}")
        if only_b:
            parts.append(f"{len(only_b)} cell(s) only in b, e.g. {only_b[:3]}")
        raise ValueError("the two prediction sets hold different cells: " + "; ".join(parts))
    order = np.array([where[p] for p in a.paths], dtype=np.int64)
    for i, j in enumerate(order):
        if a.truth[i] != b.truth[j] or a.subjects[i] != b.subjects[j]:
            raise ValueError(
                f"cell {a.paths[i]!r} has truth/subject {a.truth[i]}/{a.subjects[i]} in a but "
                f"{b.truth[j]}/{b.subjects[j]} in b"
            )
    return order


def paired_comparison(
    a: Predictions,
    b: Predictions,
    threshold_a: float,
    threshold_b: float,
    *,
    name_a: str,
    name_b: str,
    resamples: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
) -> PairedComparison:
    """Balanced accuracy of a minus b on the same cells, with a paired subject bootstrap.

    Both models are scored on the very same resampled subjects, so the spread between people
    cancels out of the difference; McNemar's exact test on the discordant cells is reported
    beside it. The verdict names a winner only when the interval excludes 0.
    """
    _check_settings(resamples, confidence)
    order = _aligned(a, b)
    group = _group(a.subjects, a.truth, a.p_all)
    p_b = np.asarray(b.p_all, dtype=np.float64)[order]
    call_a, call_b = group.scores >= threshold_a, p_b >= threshold_b
    counts_a, counts_b = _confusion(group, call_a), _confusion(group, call_b)
    value_a = float(_balanced(counts_a.sum(0)[None])[0])
    value_b = float(_balanced(counts_b.sum(0)[None])[0])
    right_a, right_b = call_a == group.is_all, call_b == group.is_all
    mb, mc = int((right_a & ~right_b).sum()), int((~right_a & right_b).sum())
    boot = _paired_draws(group, counts_a, counts_b, resamples, seed)
    interval = (
        (math.nan, math.nan) if boot.note is not None else _percentile(boot.differences, confidence)
    )
    low, high = interval
    if math.isnan(low) or low <= 0.0 <= high:
        verdict = "no detectable difference"
    elif low > 0.0:
        verdict = f"{name_a} better"
    else:
        verdict = f"{name_b} better"
    return PairedComparison(
        name_a=name_a,
        name_b=name_b,
        metric="balanced accuracy",
        value_a=value_a,
        value_b=value_b,
        difference=value_a - value_b,
        interval=interval,
        resamples=resamples,
        seed=seed,
        confidence=confidence,
        subjects=len(group.names),
        cells=len(order),
        mcnemar_b=mb,
        mcnemar_c=mc,
        mcnemar_p=mcnemar_exact(mb, mc),
        verdict=verdict,
        unit=boot.unit,
    )


def _paired_draws(
    group: _Subjects, counts_a: np.ndarray, counts_b: np.ndarray, resamples: int, seed: int
) -> PairedBootstrap:
    """Draw subjects (stratified by majority class) and score both models on each draw."""
    problem = _too_few(group)
    if problem is not None:
        return PairedBootstrap("subject", tuple(group.names), np.empty(0), problem)
    weights = _resample_weights(group.majority_all, resamples, np.random.default_rng(seed))
    diff = _balanced(weights @ counts_a) - _balanced(weights @ counts_b)
    return PairedBootstrap("subject", tuple(group.names), diff)


def paired_bootstrap(
    a: Predictions,
    b: Predictions,
    threshold_a: float,
    threshold_b: float,
    *,
    resamples: int = 2000,
    seed: int = 0,
) -> PairedBootstrap:
    """The draws behind `paired_comparison`'s interval (same seed, same draws): each resample
    takes the SUBJECTS with replacement within their majority class and scores both models on
    the pooled cells of the drawn subjects, so the returned `units` are the test subjects."""
    _check_settings(resamples, 0.95)
    order = _aligned(a, b)
    group = _group(a.subjects, a.truth, a.p_all)
    p_b = np.asarray(b.p_all, dtype=np.float64)[order]
    counts_a = _confusion(group, group.scores >= threshold_a)
    counts_b = _confusion(group, p_b >= threshold_b)
    return _paired_draws(group, counts_a, counts_b, resamples, seed)
