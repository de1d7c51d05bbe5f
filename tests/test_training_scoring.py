"""Threshold and band rules, per-subject results and scores, against hand-computed answers."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from leukgui.core.bundle import BundleInfo
from leukgui.core.metrics import call_label, expected_calibration_error
from leukgui.core.results import ALL, HEM, UNCERTAIN
from training.scoring import (
    Predictions,
    calibration_bins,
    choose_band,
    choose_threshold,
    evaluate_predictions,
    metrics_dict,
    subject_results,
)


def _youden(truth: list[str], p: list[float], cut: float) -> float:
    """Sensitivity + specificity of the calls p >= cut (independent of the module)."""
    pos = [v >= cut for t, v in zip(truth, p, strict=True) if t == ALL]
    neg = [v < cut for t, v in zip(truth, p, strict=True) if t == HEM]
    return sum(pos) / len(pos) + sum(neg) / len(neg)


def _random_set(rng: np.random.Generator, n: int) -> tuple[list[str], list[float]]:
    """A noisy, partly informative validation set with both classes and some tied scores."""
    y = rng.random(n) < rng.uniform(0.2, 0.8)
    y[0], y[1] = True, False
    p = np.where(y, rng.beta(4, 2, n), rng.beta(2, 4, n))
    if rng.random() < 0.5:
        p = np.round(p, 2)  # ties
    return [ALL if v else HEM for v in y], [float(v) for v in p]


def _split_errors(truth: list[str], p: list[float], edge: float, side: str) -> float:
    """Share of wrong calls among cells at or beyond `edge` on one side."""
    if side == HEM:
        called = [t for t, v in zip(truth, p, strict=True) if v <= edge]
        return sum(t == ALL for t in called) / len(called)
    called = [t for t, v in zip(truth, p, strict=True) if v >= edge]
    return sum(t == HEM for t in called) / len(called)


def _inside(p: list[float], band: tuple[float, float]) -> int:
    return sum(band[0] < v < band[1] for v in p)


# ------------------------------------------------------------------------------ threshold


def test_threshold_for_perfectly_separable_scores_has_balanced_accuracy_one() -> None:
    rng = np.random.default_rng(11)
    for _ in range(30):
        split = rng.uniform(0.05, 0.95)
        n_hem, n_all = rng.integers(1, 15, size=2)
        hem = rng.uniform(0.0, split - 0.01, n_hem)
        all_ = rng.uniform(split + 0.01, 1.0, n_all)
        truth = [HEM] * n_hem + [ALL] * n_all
        p = [float(v) for v in np.concatenate([hem, all_])]
        t = choose_threshold(truth, p)
        assert hem.max() < t <= all_.min()
        assert _youden(truth, p, t) == 2.0


def test_threshold_is_0_5_when_0_5_separates_as_well_as_the_midpoint() -> None:
    # The gap 0.45..0.7 holds both its midpoint 0.575 and 0.5; 0.5 is closer to 0.5.
    assert choose_threshold([HEM, HEM, ALL, ALL], [0.1, 0.45, 0.7, 0.9]) == 0.5


def test_threshold_in_a_gap_away_from_0_5_is_the_midpoint() -> None:
    # Separable, but 0.5 calls the HEM cell at 0.6 ALL: the only perfect cuts are 0.6..0.8.
    t = choose_threshold([HEM, HEM, ALL, ALL], [0.2, 0.6, 0.8, 0.9])
    assert t == pytest.approx(0.7)


@pytest.mark.parametrize(
    ("hem", "all_", "expected"),
    [
        # Cuts 0.2 and 0.825 both give J = 1/2 + 1 = 1.5 (0.525 gives 1.0); 0.2 is 0.3 from
        # 0.5, 0.825 is 0.325 away.
        ([0.1, 0.75], [0.3, 0.9], 0.2),
        # Cuts 0.15 and 0.8 both give J = 1.5 (0.475 and 0.5 give 1.0); 0.8 is the closer.
        ([0.05, 0.7], [0.25, 0.9], 0.8),
    ],
)
def test_threshold_tie_goes_to_the_cut_closest_to_0_5(
    hem: list[float], all_: list[float], expected: float
) -> None:
    truth = [HEM] * len(hem) + [ALL] * len(all_)
    assert choose_threshold(truth, hem + all_) == pytest.approx(expected)


def test_threshold_follows_balanced_accuracy_not_accuracy_on_imbalanced_data() -> None:
    # 2 ALL, 8 HEM. By hand (J = sensitivity + specificity):
    #   cut 0.275 (between 0.25 and 0.30): sens 2/2, spec 5/8 -> J 1.625, accuracy 7/10
    #   cut 0.75  (between 0.60 and 0.90): sens 1/2, spec 8/8 -> J 1.5,   accuracy 9/10
    #   cut 0.5:                           sens 1/2, spec 7/8 -> J 1.375
    # so Youden picks 0.275 where plain accuracy would pick 0.75.
    hem = [0.05, 0.1, 0.15, 0.2, 0.25, 0.35, 0.4, 0.6]
    all_ = [0.3, 0.9]
    truth = [HEM] * 8 + [ALL] * 2
    t = choose_threshold(truth, hem + all_)
    assert t == pytest.approx(0.275)
    assert _youden(truth, hem + all_, t) == pytest.approx(1.625)


@pytest.mark.parametrize(
    ("truth", "p"),
    [([], []), ([ALL, ALL, ALL], [0.1, 0.7, 0.9]), ([HEM, HEM], [0.8, 0.9])],
)
def test_threshold_is_0_5_without_both_classes(truth: list[str], p: list[float]) -> None:
    assert choose_threshold(truth, p) == 0.5


def test_threshold_is_as_good_as_any_cut_between_the_scores() -> None:
    rng = np.random.default_rng(5)
    for _ in range(40):
        truth, p = _random_set(rng, int(rng.integers(4, 50)))
        t = choose_threshold(truth, p)
        # Every cut strictly inside the score range is equivalent to "p >= v" for some
        # observed score v above the minimum.
        best = max(_youden(truth, p, v) for v in sorted(set(p))[1:])
        assert _youden(truth, p, t) >= best - 1e-12


# ------------------------------------------------------------------------------ band


# Hand example, threshold 0.5: HEM at 0.1 0.2 0.4 0.65, ALL at 0.3 0.75 0.8 0.9.
# With max_error 0: HEM side "p <= 0.4" holds the ALL cell at 0.3 (1/4 wrong), "p <= 0.3"
# 1/3 wrong, "p <= 0.2" none -> low 0.2. ALL side "p >= 0.65" 1/4 wrong, "p >= 0.75" none ->
# high 0.75. The band (0.2, 0.75) holds 0.3, 0.4, 0.65: 3 of 8 cells.
# Cap 2 cells: low is further from 0.5 (0.3 vs 0.25), pulled to 0.3 -> 2 inside.
# Cap 1 cell: then high is further (0.25 vs 0.2), pulled to 0.65 -> only 0.4 inside.
# Cap 0: low (0.2 away) again further than high (0.15) -> low 0.4, nothing inside.
_HAND_TRUTH = [HEM, HEM, HEM, HEM, ALL, ALL, ALL, ALL]
_HAND_P = [0.1, 0.2, 0.4, 0.65, 0.3, 0.75, 0.8, 0.9]


@pytest.mark.parametrize(
    ("max_error", "cap", "expected"),
    [
        (0.0, 1.0, (0.2, 0.75)),
        (0.0, 0.5, (0.2, 0.75)),
        (0.0, 0.25, (0.3, 0.75)),
        (0.0, 0.125, (0.3, 0.65)),
        (0.0, 0.0, (0.4, 0.65)),
        # 1/4 wrong is allowed: the edges stay at the scores next to the threshold.
        (0.25, 1.0, (0.4, 0.65)),
    ],
)
def test_band_hand_example(max_error: float, cap: float, expected: tuple[float, float]) -> None:
    band = choose_band(_HAND_TRUTH, _HAND_P, 0.5, max_error=max_error, max_uncertain=cap)
    assert band == pytest.approx(expected)
    assert _inside(_HAND_P, band) <= cap * len(_HAND_P)


def test_band_of_perfect_separation_holds_no_cell() -> None:
    truth = [HEM] * 5 + [ALL] * 4
    p = [0.05, 0.1, 0.2, 0.3, 0.35, 0.62, 0.7, 0.8, 0.95]
    t = choose_threshold(truth, p)
    low, high = choose_band(truth, p, t)
    assert (low, high) == (0.35, 0.62)  # the scores next to the threshold, nothing between
    assert _inside(p, (low, high)) == 0
    assert [call_label(v, t, (low, high)) for v in p] == truth


def test_band_of_empty_input_is_the_threshold() -> None:
    assert choose_band([], [], 0.42) == (0.42, 0.42)


def test_band_with_scores_on_one_side_only() -> None:
    # Nothing below the threshold: low stays at the threshold.
    low, high = choose_band([ALL, HEM, ALL], [0.6, 0.7, 0.9], 0.5, max_uncertain=1.0)
    assert low == 0.5
    assert high == 0.9  # "p >= 0.6" and "p >= 0.7" both hold the HEM cell


def test_band_properties_on_random_validation_sets() -> None:
    rng = np.random.default_rng(2024)
    for _ in range(150):
        truth, p = _random_set(rng, int(rng.integers(2, 60)))
        t = choose_threshold(truth, p) if rng.random() < 0.7 else float(rng.uniform(0.2, 0.8))
        max_error = float(rng.choice([0.0, 0.02, 0.1, 0.3]))
        cap = float(rng.choice([0.0, 0.05, 0.2, 0.5]))
        low, high = choose_band(truth, p, t, max_error=max_error, max_uncertain=cap)
        free_low, free_high = choose_band(truth, p, t, max_error=max_error, max_uncertain=1.0)

        assert low <= t <= high
        assert free_low <= low and high <= free_high  # the cap only pulls edges inwards
        assert _inside(p, (low, high)) <= cap * len(p)
        assert low in p or low == t
        assert high in p or high == t
        if _inside(p, (free_low, free_high)) <= cap * len(p):
            assert (low, high) == (free_low, free_high)

        # Without the cap: the narrowest band whose decided cells meet max_error.
        below = sorted({v for v in p if v < t})
        ok_low = [v for v in below if _split_errors(truth, p, v, HEM) <= max_error]
        if ok_low:
            assert _split_errors(truth, p, free_low, HEM) <= max_error
            assert free_low == max(ok_low)  # no narrower edge would do
        elif below:
            assert free_low == min(below)  # not achievable: the band spans the whole side
        else:
            assert free_low == t
        above = sorted({v for v in p if v >= t})
        ok_high = [v for v in above if _split_errors(truth, p, v, ALL) <= max_error]
        if ok_high:
            assert _split_errors(truth, p, free_high, ALL) <= max_error
            assert free_high == min(ok_high)
        elif above:
            assert free_high == max(above)
        else:
            assert free_high == t


def test_call_label_agrees_with_the_bundle_label() -> None:
    cases = [(0.5, (0.4, 0.6)), (0.5, (0.5, 0.5)), (0.3, (0.3, 0.7)), (0.62, (0.2, 0.62))]
    cases += [(0.5, (0.0, 1.0)), (0.45, (0.45, 0.45))]
    for threshold, band in cases:
        info = BundleInfo(
            path=Path("x.leukmodel"),
            manifest={"decision_threshold": threshold, "uncertainty_band": list(band)},
            source="file",
        )
        edges = [0.0, 1.0, threshold, *band]
        values = [*edges, *np.linspace(0.0, 1.0, 201).tolist()]
        values += [float(np.nextafter(e, d)) for e in edges for d in (-1.0, 2.0)]
        for p in values:
            assert call_label(p, threshold, band) == info.label(p), (threshold, band, p)
        # The documented rule itself: UNCERTAIN strictly inside the band.
        low, high = band
        assert call_label(low, threshold, band) != UNCERTAIN
        assert call_label(high, threshold, band) != UNCERTAIN
        assert call_label(threshold, threshold, band) in (ALL, UNCERTAIN)
        if low < (low + high) / 2 < high:
            assert call_label((low + high) / 2, threshold, band) == UNCERTAIN


# ------------------------------------------------------------------------------ subjects


def _hand_predictions() -> Predictions:
    rows = [
        ("b", ALL, 0.9),
        ("a", HEM, 0.1),
        ("c", ALL, 0.8),
        ("b", ALL, 0.55),
        ("a", HEM, 0.45),
        ("c", HEM, 0.3),
        ("a", HEM, 0.7),
        ("b", ALL, 0.2),
        ("c", HEM, 0.35),
        ("a", HEM, 0.05),
    ]
    return Predictions(
        paths=[f"/cells/{i}.png" for i in range(len(rows))],
        subjects=[r[0] for r in rows],
        truth=[r[1] for r in rows],
        p_all=[r[2] for r in rows],
    )


def test_subject_results_by_hand() -> None:
    # Threshold 0.5, band (0.4, 0.6):
    # a (HEM): 0.1 HEM, 0.45 UNC, 0.7 ALL, 0.05 HEM; thresholded right: 0.1 0.45 0.05.
    # b (ALL): 0.9 ALL, 0.55 UNC, 0.2 HEM; thresholded right: 0.9 0.55 -> call is a tie.
    # c (truths ALL HEM HEM -> HEM): 0.8 ALL, 0.3 HEM, 0.35 HEM; all thresholded right.
    results = subject_results(_hand_predictions(), 0.5, (0.4, 0.6))
    assert [r.subject for r in results] == ["a", "b", "c"]
    a, b, c = results

    assert (a.truth, a.cells, a.called_all, a.called_hem, a.uncertain) == (HEM, 4, 1, 2, 1)
    assert a.correct == 3
    assert a.accuracy == 0.75
    assert a.call == HEM
    assert a.fraction_all == pytest.approx(1 / 3)
    assert a.mean_p_all == pytest.approx((0.1 + 0.45 + 0.7 + 0.05) / 4)

    assert (b.truth, b.cells, b.called_all, b.called_hem, b.uncertain) == (ALL, 3, 1, 1, 1)
    assert b.correct == 2
    assert b.accuracy == pytest.approx(2 / 3)
    assert b.call == UNCERTAIN
    assert b.fraction_all == 0.5
    assert b.mean_p_all == pytest.approx(0.55)

    assert (c.truth, c.cells, c.called_all, c.called_hem, c.uncertain) == (HEM, 3, 1, 2, 0)
    assert c.correct == 3
    assert c.accuracy == 1.0
    assert c.call == HEM

    evaluation = evaluate_predictions(_hand_predictions(), 0.5, (0.4, 0.6), "validation")
    assert evaluation.subject_accuracy == pytest.approx(2 / 3)  # a and c right, b undecided


def test_subject_with_only_uncertain_cells() -> None:
    preds = Predictions(["x", "y"], ["s", "s"], [HEM, ALL], [0.45, 0.55])
    (result,) = subject_results(preds, 0.5, (0.4, 0.6))
    assert result.uncertain == 2
    assert result.call == UNCERTAIN
    assert math.isnan(result.fraction_all)
    assert result.truth == ALL  # a 1:1 truth tie counts as ALL
    assert result.correct == 2  # the threshold still resolves both, and rightly


# ------------------------------------------------------------------------------ evaluation


def _random_predictions(seed: int, n: int = 120) -> Predictions:
    rng = np.random.default_rng(seed)
    truth, p = _random_set(rng, n)
    p[0], p[1] = 0.0, 1.0  # the outermost calibration bins' edges
    subjects = [f"S{int(v)}" for v in rng.integers(0, 7, n)]
    return Predictions([f"/c/{i}.bmp" for i in range(n)], subjects, truth, p)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_evaluation_counts_are_consistent(seed: int) -> None:
    preds = _random_predictions(seed)
    t = choose_threshold(preds.truth, preds.p_all)
    band = choose_band(preds.truth, preds.p_all, t, max_error=0.05, max_uncertain=0.3)
    ev = evaluate_predictions(preds, t, band, "test")

    truth = np.array(preds.truth)
    p = np.array(preds.p_all)
    called = p >= t
    inside = (p > band[0]) & (p < band[1])
    m = ev.metrics
    assert m.n == len(preds) == 120
    assert m.tp + m.fn == int((truth == ALL).sum())
    assert m.tp == int(((truth == ALL) & called).sum())
    assert m.fp == int(((truth == HEM) & called).sum())
    assert ev.uncertain == int(inside.sum())

    d = ev.decided_metrics
    assert d.n == len(preds) - ev.uncertain
    assert d.tp == int(((truth == ALL) & called & ~inside).sum())
    assert d.fn == int(((truth == ALL) & ~called & ~inside).sum())
    assert d.fp == int(((truth == HEM) & called & ~inside).sum())
    assert d.tn == int(((truth == HEM) & ~called & ~inside).sum())

    assert ev.ece == expected_calibration_error(preds.truth, preds.p_all)
    assert sum(b.cells for b in ev.calibration) == len(preds)
    assert [len(ev.subjects), sum(s.cells for s in ev.subjects)] == [
        len(set(preds.subjects)),
        len(preds),
    ]
    assert (ev.threshold, ev.uncertainty_band, ev.part, ev.notes) == (t, band, "test", [])


def test_calibration_bins_against_a_direct_count() -> None:
    truth = [HEM, ALL, HEM, ALL, ALL, HEM, ALL]
    p = [0.0, 0.05, 0.15, 0.19, 0.95, 0.99, 1.0]
    bins = calibration_bins(truth, p, bins=5)  # edges 0, .2, .4, .6, .8, 1
    assert [b.lower for b in bins] == pytest.approx([0.0, 0.2, 0.4, 0.6, 0.8])
    assert [b.upper for b in bins] == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0])
    assert [b.cells for b in bins] == [4, 0, 0, 0, 3]  # 1.0 belongs to the last bin
    assert bins[0].mean_p_all == pytest.approx((0.0 + 0.05 + 0.15 + 0.19) / 4)
    assert bins[0].fraction_all == 0.5
    assert bins[4].mean_p_all == pytest.approx((0.95 + 0.99 + 1.0) / 3)
    assert bins[4].fraction_all == pytest.approx(2 / 3)
    assert math.isnan(bins[1].mean_p_all) and math.isnan(bins[1].fraction_all)
    # ECE is the cell-weighted gap of the same bins.
    ece = sum(b.cells / len(p) * abs(b.mean_p_all - b.fraction_all) for b in bins if b.cells)
    assert ece == pytest.approx(expected_calibration_error(truth, p, bins=5))


def test_metrics_dict_matches_the_metrics_and_is_strict_json() -> None:
    preds = _random_predictions(7)
    t = choose_threshold(preds.truth, preds.p_all)
    band = choose_band(preds.truth, preds.p_all, t)
    ev = evaluate_predictions(preds, t, band, "validation")
    d = json.loads(json.dumps(metrics_dict(ev), allow_nan=False))
    m = ev.metrics
    assert d["evaluated_on"] == "validation"
    assert d["n"] == m.n == 120
    assert d["subjects"] == len(set(preds.subjects))
    assert d["confusion_matrix"] == {"tp": m.tp, "fn": m.fn, "fp": m.fp, "tn": m.tn}
    for key in ("accuracy", "precision", "recall", "specificity", "f1"):
        assert d[key] == pytest.approx(getattr(m, key)), key
    assert d["misclassification_rate"] == pytest.approx(1 - m.accuracy)
    assert d["balanced_accuracy"] == pytest.approx((m.recall + m.specificity) / 2)
    assert d["roc_auc"] == pytest.approx(m.roc_auc)
    assert d["expected_calibration_error"] == pytest.approx(ev.ece)
    assert d["threshold"] == t
    assert d["uncertainty_band"] == list(band)
    assert d["uncertain_cells"] == ev.uncertain
    assert d["decided_accuracy"] == pytest.approx(ev.decided_metrics.accuracy)
    assert d["subject_accuracy"] == pytest.approx(ev.subject_accuracy)


def test_metrics_dict_turns_undefined_ratios_into_null() -> None:
    preds = Predictions(["x", "y", "z"], ["h1", "h1", "h2"], [HEM, HEM, HEM], [0.1, 0.2, 0.3])
    ev = evaluate_predictions(preds, 0.5, (0.5, 0.5), "healthy")
    assert ev.notes and "only one class" in ev.notes[0]
    d = json.loads(json.dumps(metrics_dict(ev), allow_nan=False))
    assert d["recall"] is None  # no ALL cell
    assert d["precision"] is None  # no ALL call
    assert d["f1"] is None
    assert d["balanced_accuracy"] is None
    assert d["roc_auc"] is None
    assert d["specificity"] == 1.0
    assert d["accuracy"] == 1.0


def test_empty_predictions_evaluate_to_null_scores() -> None:
    ev = evaluate_predictions(Predictions([], [], [], []), 0.5, (0.4, 0.6), "empty")
    assert ev.metrics.n == 0 and ev.uncertain == 0 and ev.subjects == []
    assert math.isnan(ev.ece) and math.isnan(ev.subject_accuracy)
    d = json.loads(json.dumps(metrics_dict(ev), allow_nan=False))
    assert d["n"] == 0
    assert d["accuracy"] is None and d["expected_calibration_error"] is None
    assert d["subject_accuracy"] is None


@pytest.mark.parametrize(
    "fields",
    [
        (["a", "b"], ["s"], [ALL, HEM], [0.1, 0.2]),
        (["a", "b"], ["s", "s"], [ALL], [0.1, 0.2]),
        (["a", "b"], ["s", "s"], [ALL, HEM], [0.1, 0.2, 0.3]),
        (["a"], ["s", "s"], [ALL, HEM], [0.1, 0.2]),
    ],
)
def test_predictions_of_unequal_lengths_are_refused(fields: tuple) -> None:
    with pytest.raises(ValueError, match="same length"):
        Predictions(*fields)
