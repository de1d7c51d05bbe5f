"""Metrics and per-sample counts against hand-computed and brute-force answers."""

from __future__ import annotations

import itertools
import math
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest

from leukgui.core.metrics import (
    OVERALL,
    BinaryMetrics,
    binary_metrics,
    decided_label,
    expected_calibration_error,
    normalize_truth,
    roc_auc,
    sample_summary,
    thresholded_call,
    truth_set,
    wilson_interval,
)
from leukgui.core.results import (
    ALL,
    HEM,
    UNCERTAIN,
    UNCLASSIFIABLE,
    UNREADABLE,
    CellResult,
    FileError,
    RunInfo,
    RunResult,
)


def _cell(sample: str, label: str, p: float = 0.5, truth: str | None = None) -> CellResult:
    return CellResult(
        Path(f"/x/{sample}/c.png"), sample, p, label, np.zeros((7, 7), np.float32), 10, 10, truth
    )


# ------------------------------------------------------------------------------ wilson


@pytest.mark.parametrize(
    ("k", "n", "low", "high"),
    [
        (8, 10, 0.4902, 0.9433),
        (0, 10, 0.0, 0.2775),
        (10, 10, 0.7225, 1.0),
        (5, 10, 0.2366, 0.7634),
        (1, 1, 0.2065, 1.0),
        (50, 100, 0.4038, 0.5962),
    ],
)
def test_wilson_known_values(k: int, n: int, low: float, high: float) -> None:
    lo, hi = wilson_interval(k, n)
    assert round(lo, 4) == low
    assert round(hi, 4) == high


def test_wilson_empty_is_nan_and_bad_input_raises() -> None:
    lo, hi = wilson_interval(0, 0)
    assert math.isnan(lo) and math.isnan(hi)
    with pytest.raises(ValueError):
        wilson_interval(3, 2)
    with pytest.raises(ValueError):
        wilson_interval(-1, 2)


def test_wilson_other_z_is_narrower() -> None:
    lo90, hi90 = wilson_interval(8, 10, z=1.6448536269514722)
    lo95, hi95 = wilson_interval(8, 10)
    assert lo95 < lo90 < 0.8 < hi90 < hi95


# ------------------------------------------------------------------------------ binary metrics


def test_confusion_matrix_and_ratios_by_hand() -> None:
    # TP=3, FN=1, FP=2, TN=4 (hand-counted).
    truth = [ALL, ALL, ALL, ALL, HEM, HEM, HEM, HEM, HEM, HEM]
    pred = [ALL, ALL, ALL, HEM, ALL, ALL, HEM, HEM, HEM, HEM]
    m = binary_metrics(truth, pred)
    assert (m.tp, m.fn, m.fp, m.tn, m.n) == (3, 1, 2, 4, 10)
    assert m.n_positive == 4 and m.n_negative == 6
    assert m.accuracy == pytest.approx(7 / 10)
    assert m.precision == pytest.approx(3 / 5)
    assert m.recall == pytest.approx(3 / 4)
    assert m.sensitivity == m.recall
    assert m.specificity == pytest.approx(4 / 6)
    assert m.f1 == pytest.approx(2 * 0.6 * 0.75 / (0.6 + 0.75))
    assert m.misclassification_rate == pytest.approx(3 / 10)
    assert m.accuracy + m.misclassification_rate == pytest.approx(1.0)
    assert m.balanced_accuracy == pytest.approx((3 / 4 + 4 / 6) / 2)
    assert math.isnan(m.roc_auc)  # no scores given


def test_positive_hem_swaps_the_matrix() -> None:
    truth = [ALL, ALL, HEM, HEM, HEM]
    pred = [ALL, HEM, HEM, ALL, HEM]
    p = [0.9, 0.4, 0.2, 0.7, 0.1]
    a = binary_metrics(truth, pred, p)
    h = binary_metrics(truth, pred, p, positive=HEM)
    assert (h.tp, h.fn, h.fp, h.tn) == (a.tn, a.fp, a.fn, a.tp)
    assert h.roc_auc == pytest.approx(a.roc_auc)


def test_metrics_is_frozen_and_derived() -> None:
    m = BinaryMetrics(tp=1, fn=0, fp=0, tn=1)
    with pytest.raises(AttributeError):
        m.tp = 5  # type: ignore[misc]
    assert m.n == 2 and m.accuracy == 1.0


@pytest.mark.parametrize("seed", range(6))
def test_weighted_f1_matches_sklearn_on_random_cases(seed: int) -> None:
    from sklearn.metrics import f1_score  # test-only oracle

    rng = np.random.default_rng(seed)
    for _ in range(40):
        n = int(rng.integers(1, 60))
        truth = [ALL if v else HEM for v in rng.random(n) < rng.uniform(0.0, 1.0)]
        pred = [ALL if v else HEM for v in rng.random(n) < rng.uniform(0.0, 1.0)]
        m = binary_metrics(truth, pred)
        expected = f1_score(truth, pred, average="weighted", zero_division=0.0)
        assert m.weighted_f1 == pytest.approx(expected, abs=1e-12), (truth, pred)
        hem_f1 = f1_score(truth, pred, pos_label=HEM, average="binary", zero_division=0.0)
        if m.tn + m.fn + m.fp:
            assert m.f1_hem == pytest.approx(hem_f1)


def test_weighted_f1_by_hand_and_when_empty() -> None:
    # TP=3, FN=1, FP=2, TN=4: F1(ALL) = 6/9, F1(HEM) = 8/11, supports 4 and 6.
    m = BinaryMetrics(tp=3, fn=1, fp=2, tn=4)
    assert m.f1_hem == pytest.approx(8 / 11)
    assert m.weighted_f1 == pytest.approx((4 * 6 / 9 + 6 * 8 / 11) / 10)
    assert math.isnan(BinaryMetrics(0, 0, 0, 0).weighted_f1)
    # Only HEM cells, some called ALL: ALL has no support and weighs nothing.
    assert BinaryMetrics(tp=0, fn=0, fp=1, tn=3).weighted_f1 == pytest.approx(6 / 7)


def test_undefined_ratios_are_nan_not_errors() -> None:
    empty = binary_metrics([], [])
    for name in (
        "accuracy",
        "precision",
        "recall",
        "specificity",
        "f1",
        "misclassification_rate",
        "balanced_accuracy",
        "roc_auc",
    ):
        assert math.isnan(getattr(empty, name)), name

    only_hem = binary_metrics([HEM, HEM], [HEM, HEM], [0.1, 0.2])
    assert math.isnan(only_hem.precision)  # nothing called ALL
    assert math.isnan(only_hem.recall)  # nothing truly ALL
    assert math.isnan(only_hem.f1)
    assert math.isnan(only_hem.balanced_accuracy)
    assert math.isnan(only_hem.roc_auc)  # one class absent
    assert only_hem.specificity == 1.0
    assert only_hem.accuracy == 1.0


def test_uncertain_must_be_resolved_first() -> None:
    with pytest.raises(ValueError, match="threshold"):
        binary_metrics([ALL], [UNCERTAIN])
    with pytest.raises(ValueError):
        binary_metrics([ALL, HEM], [ALL])
    with pytest.raises(ValueError):
        binary_metrics([ALL], [ALL], [0.1, 0.2])


def _brute_auc(truth: list[str], scores: list[float]) -> float:
    pos = [s for t, s in zip(truth, scores, strict=True) if t == ALL]
    neg = [s for t, s in zip(truth, scores, strict=True) if t == HEM]
    total = 0.0
    for a, b in itertools.product(pos, neg):
        total += 1.0 if a > b else 0.5 if a == b else 0.0
    return total / (len(pos) * len(neg))


@pytest.mark.parametrize("seed", range(6))
def test_auc_matches_brute_force_with_ties(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 60))
    truth = [ALL if x else HEM for x in rng.random(n) < 0.4]
    truth[0], truth[1] = ALL, HEM  # both classes present
    scores = [round(float(s), 1) for s in rng.random(n)]  # heavy ties
    pred = [thresholded_call(s, 0.5) for s in scores]
    m = binary_metrics(truth, pred, scores)
    assert m.roc_auc == pytest.approx(_brute_auc(truth, scores))


def test_auc_extremes() -> None:
    assert roc_auc([ALL, ALL, HEM], [0.9, 0.8, 0.1]) == 1.0
    assert roc_auc([ALL, HEM], [0.1, 0.9]) == 0.0
    assert roc_auc([ALL, HEM], [0.5, 0.5]) == 0.5
    assert math.isnan(roc_auc([ALL, HEM], [float("nan"), 0.5]))


# ------------------------------------------------------------------------------ calibration


def test_ece_by_hand() -> None:
    # Bin [0.8, 0.9): mean p 0.8, 1 of 2 truly ALL -> gap 0.3; bin [0.2, 0.3): mean 0.2,
    # 0 of 2 ALL -> gap 0.2. Weighted: 0.5 * 0.3 + 0.5 * 0.2 = 0.25.
    truth = [ALL, HEM, HEM, HEM]
    p = [0.8, 0.8, 0.2, 0.2]
    assert expected_calibration_error(truth, p) == pytest.approx(0.25)


def test_ece_perfect_and_edges() -> None:
    truth = [ALL] * 3 + [HEM] * 7
    assert expected_calibration_error(truth, [0.3] * 10) == pytest.approx(0.0)
    assert expected_calibration_error([ALL], [1.0]) == pytest.approx(0.0)  # p == 1 in last bin
    assert math.isnan(expected_calibration_error([], []))
    with pytest.raises(ValueError):
        expected_calibration_error([ALL], [0.5], bins=0)


# ------------------------------------------------------------------------------ calls & truth


def test_thresholded_and_decided_labels() -> None:
    assert thresholded_call(0.5, 0.5) == ALL
    assert thresholded_call(0.4999, 0.5) == HEM
    assert decided_label(_cell("s", UNCERTAIN, 0.55), 0.5) == ALL
    assert decided_label(_cell("s", UNCERTAIN, 0.45), 0.5) == HEM
    assert decided_label(_cell("s", HEM, 0.9), 0.5) == HEM  # a decided label is kept


def test_normalize_truth() -> None:
    assert normalize_truth("all") == ALL
    assert normalize_truth(" Hem ") == HEM
    assert normalize_truth(None) is None
    assert normalize_truth("maybe") is None


# ------------------------------------------------------------------------------ sample summary


def test_sample_summary_counts_and_overall_last() -> None:
    outcomes = [
        _cell("B", ALL),
        _cell("B", ALL),
        _cell("B", HEM),
        _cell("B", UNCERTAIN),
        _cell("A", HEM),
        FileError(Path("/x/A/bad.png"), "A", "truncated PNG", UNREADABLE),
        FileError(Path("/x/C/bad.png"), "C", "empty file", UNREADABLE),
    ]
    rows = sample_summary(outcomes)
    assert [r.sample for r in rows] == ["B", "A", "C", OVERALL]
    b, a, c, overall = rows
    assert (b.cells, b.n_all, b.n_hem, b.n_uncertain, b.errors) == (4, 2, 1, 1, 0)
    assert b.decided == 3
    assert b.all_fraction == pytest.approx(2 / 3)  # UNCERTAIN not in the denominator
    assert (b.ci_low, b.ci_high) == pytest.approx(wilson_interval(2, 3))
    assert (a.cells, a.errors, a.all_fraction) == (1, 1, 0.0)
    assert c.cells == 0 and c.errors == 1
    assert math.isnan(c.all_fraction) and math.isnan(c.ci_low)
    assert overall.is_overall and not b.is_overall
    assert (overall.cells, overall.n_all, overall.n_hem, overall.n_uncertain) == (5, 2, 2, 1)
    assert overall.errors == 2
    assert overall.all_fraction == pytest.approx(0.5)


def test_sample_summary_accepts_run_result() -> None:
    info = RunInfo("0", "m", "1", "0" * 64, "b", 224, 0.5, (0.4, 0.6), False, [], datetime.now())
    run = RunResult(info, [_cell("S", ALL)])
    rows = sample_summary(run)
    assert [r.sample for r in rows] == ["S", OVERALL]
    assert sample_summary([])[0].sample == OVERALL


def test_sample_summary_rejects_unknown_label() -> None:
    with pytest.raises(ValueError, match="unknown label"):
        sample_summary([_cell("S", "MAYBE")])


# --------------------------------------------------------------------------- truth_set


class _Review:
    """The review a truth set needs: reviewed labels by file stem."""

    def __init__(self, labels: dict[str, str]) -> None:
        self.labels = labels

    def final_label(self, cell: CellResult) -> str:
        return self.labels.get(cell.path.stem, cell.label)

    def is_reviewed(self, cell: CellResult) -> bool:
        return cell.path.stem in self.labels

    def signed_off(self, sample: str) -> None:
        return None


def _truth_run() -> RunResult:
    def cell(name: str, label: str, p: float, truth: str | None) -> CellResult:
        heat = np.zeros((7, 7), np.float32)
        return CellResult(Path(f"/x/S/{name}.png"), "S", p, label, heat, 10, 10, truth)

    info = RunInfo("0", "m", "1", "", "b", 64, 0.5, (0.4, 0.6), False, [], datetime(2024, 1, 1))
    return RunResult(
        info,
        [
            cell("a", ALL, 0.9, "all"),  # truth in any case
            cell("b", HEM, 0.1, HEM),
            cell("c", UNCERTAIN, 0.55, HEM),  # ALL by the threshold
            cell("d", UNCERTAIN, 0.45, ALL),  # HEM by the threshold
            cell("e", ALL, 0.8, None),  # no truth
            cell("f", HEM, 0.2, "unknown"),  # no usable truth
            FileError(Path("/x/S/bad.png"), "S", "truncated", UNREADABLE),
        ],
    )


def test_truth_set_of_the_model_calls() -> None:
    ts = truth_set(_truth_run())
    assert ts.truth == [ALL, HEM, HEM, ALL]
    assert ts.predicted == [ALL, HEM, ALL, HEM]
    assert ts.p_all == [0.9, 0.1, 0.55, 0.45]
    assert (ts.uncertain, ts.without_truth, ts.reviewed, ts.unclassifiable) == (2, 2, 0, 0)
    assert not ts.any_reviewed
    m = ts.metrics()
    assert (m.tp, m.fn, m.fp, m.tn) == (1, 1, 1, 1)
    assert m.roc_auc == pytest.approx(roc_auc(ts.truth, ts.p_all))


def test_truth_set_with_reviewed_labels() -> None:
    run = _truth_run()
    review = _Review({"c": HEM, "b": UNCLASSIFIABLE, "e": ALL})
    ts = truth_set(run, review)
    # b is left out (UNCLASSIFIABLE); c counts as the reviewer's HEM; d stays the model's
    # UNCERTAIN resolved by the threshold; e has no truth whatever its review.
    assert ts.truth == [ALL, HEM, ALL]
    assert ts.predicted == [ALL, HEM, HEM]
    assert (ts.uncertain, ts.without_truth, ts.reviewed, ts.unclassifiable) == (1, 2, 1, 1)
    assert ts.any_reviewed
    m = ts.metrics()
    assert (m.tp, m.fn, m.fp, m.tn) == (1, 1, 0, 1)
    # An empty review gives the model's truth set.
    assert truth_set(run, _Review({})) == truth_set(run)
