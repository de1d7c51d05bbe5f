"""Threshold and band rules, per-subject results and scores, against hand-computed answers."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest

from leukgui.core.bundle import BundleInfo
from leukgui.core.metrics import call_label, expected_calibration_error
from leukgui.core.results import ALL, HEM, UNCERTAIN
from training.scoring import (
    BAND_RULE,
    MIN_BAND_SIDE_CELLS,
    Predictions,
    band_check,
    calibration_bins,
    choose_band,
    choose_band_detail,
    choose_threshold,
    evaluate_predictions,
    metrics_dict,
    subject_results,
)
from training.stats import BOOTSTRAP_METRICS, subject_bootstrap, subject_level


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
# Low-edge candidates, from the threshold out: 0.5, then the midpoints 0.35, 0.25, 0.15.
#   beyond 0.5 ("p < 0.5"): 0.1 0.2 0.3 0.4, the ALL cell at 0.3 wrong -> 1/4
#   beyond 0.35: 0.1 0.2 0.3 -> 1/3;   beyond 0.25: 0.1 0.2 -> 0/2
# High-edge candidates: 0.5, then 0.7, 0.775, 0.85.
#   beyond 0.5 ("p >= 0.5"): 0.65 0.75 0.8 0.9, the HEM cell at 0.65 wrong -> 1/4
#   beyond 0.7: 0.75 0.8 0.9 -> 0/3
# max_error 0 (one cell per side is enough to judge): band (0.25, 0.7), holding 0.3 0.4 0.65.
# Cap 2 cells: low (0.25 from 0.5) is further than high (0.2) -> low back to 0.35: 0.4 0.65.
# Cap 1 cell: now high (0.2) is further than low (0.15) -> high back to 0.5: only 0.4 inside.
# Cap 0: low back to 0.5 -> (0.5, 0.5).
_HAND_TRUTH = [HEM, HEM, HEM, HEM, ALL, ALL, ALL, ALL]
_HAND_P = [0.1, 0.2, 0.4, 0.65, 0.3, 0.75, 0.8, 0.9]


@pytest.mark.parametrize(
    ("max_error", "cap", "expected", "binds"),
    [
        (0.0, 1.0, (0.25, 0.7), False),
        (0.0, 0.5, (0.25, 0.7), False),
        (0.0, 0.25, (0.35, 0.7), True),
        (0.0, 0.125, (0.35, 0.5), True),
        (0.0, 0.0, (0.5, 0.5), True),
        # 1/4 wrong is allowed: both edges stay at the threshold.
        (0.25, 1.0, (0.5, 0.5), False),
    ],
)
def test_band_hand_example(
    max_error: float, cap: float, expected: tuple[float, float], binds: bool
) -> None:
    kwargs = {"max_error": max_error, "max_uncertain": cap, "min_side_cells": 1}
    band = choose_band(_HAND_TRUTH, _HAND_P, 0.5, **kwargs)
    assert band == pytest.approx(expected)
    assert _inside(_HAND_P, band) <= cap * len(_HAND_P)
    detail = choose_band_detail(_HAND_TRUTH, _HAND_P, 0.5, **kwargs)
    assert (detail.low, detail.high) == band
    assert detail.cap_binds is binds
    assert (detail.target_error, detail.cap, detail.min_side_cells) == (max_error, cap, 1)
    assert any("cap" in n for n in detail.notes) is binds


def test_band_achieved_error_is_the_hand_count_when_the_cap_binds() -> None:
    # Cap 2 cells: band (0.35, 0.7). Beyond the low edge: 0.1 0.2 0.3, one ALL -> 1/3 wrong.
    # Beyond the high edge: 0.75 0.8 0.9, all ALL -> 0. Inside: 0.4 and 0.65.
    d = choose_band_detail(
        _HAND_TRUTH, _HAND_P, 0.5, max_error=0.0, max_uncertain=0.25, min_side_cells=1
    )
    assert d.cap_binds
    assert d.error_hem == pytest.approx(1 / 3) and d.error_hem > d.target_error
    assert d.error_all == 0.0
    assert (d.validation.cells_hem, d.validation.errors_hem) == (3, 1)
    assert (d.validation.cells_all, d.validation.errors_all) == (3, 0)
    assert d.validation.uncertain == 2
    assert d.coverage == pytest.approx(6 / 8)
    assert d.validation.meets_target_hem is False and d.validation.meets_target_all is True


def test_band_cap_binds_on_overlapping_scores_and_reports_the_missed_target() -> None:
    rng = np.random.default_rng(3)
    n = 2000
    y = rng.random(n) < 0.5
    p = np.where(y, rng.beta(3, 2, n), rng.beta(2, 3, n))  # heavy overlap
    truth = [ALL if v else HEM for v in y]
    t = choose_threshold(truth, p.tolist())
    free = choose_band_detail(truth, p.tolist(), t, max_uncertain=1.0)
    capped = choose_band_detail(truth, p.tolist(), t)  # 2% target, 20% cap
    assert not free.cap_binds
    assert _inside(p.tolist(), free.band) > 0.2 * n  # the target needs more than the cap
    assert capped.cap_binds
    assert _inside(p.tolist(), capped.band) <= 0.2 * n
    assert max(capped.error_hem, capped.error_all) > capped.target_error
    assert capped.coverage >= 0.8
    assert any("cap" in note and "target" in note for note in capped.notes)


def test_band_of_perfect_separation_is_narrow_around_the_threshold() -> None:
    # The audit's case: validation perfectly separated with an empty gap 0.1..0.9. The old rule
    # put the edges on the scores either side of the gap, so every test cell in it was
    # UNCERTAIN; the band must now sit at the threshold, with no validation score on an edge.
    rng = np.random.default_rng(8)
    hem = rng.uniform(0.0, 0.1, 60)
    all_ = rng.uniform(0.9, 1.0, 60)
    truth = [HEM] * 60 + [ALL] * 60
    p = [float(v) for v in np.concatenate([hem, all_])]
    t = choose_threshold(truth, p)
    d = choose_band_detail(truth, p, t)
    assert (d.low, d.high) == (t, t)
    assert d.high - d.low < 0.8 / 10  # narrow, not the gap
    assert not d.cap_binds and d.error_hem == 0.0 and d.error_all == 0.0
    assert d.coverage == 1.0
    test_cells = [0.2, 0.35, 0.45, 0.55, 0.65, 0.8]
    assert [call_label(v, t, d.band) for v in test_cells] == [HEM, HEM, HEM, ALL, ALL, ALL]
    assert [call_label(v, t, d.band) for v in p] == truth


def test_band_edges_never_lie_on_a_validation_score() -> None:
    truth = [HEM] * 40 + [ALL] * 40
    rng = np.random.default_rng(1)
    p = np.round(np.concatenate([rng.beta(2, 5, 40), rng.beta(5, 2, 40)]), 2).tolist()
    t = choose_threshold(truth, p)
    for err in (0.0, 0.05, 0.1):
        low, high = choose_band(truth, p, t, max_error=err, max_uncertain=1.0, min_side_cells=5)
        for edge in (low, high):
            assert edge == t or edge not in p
        # an edge off the threshold lies midway between two neighbouring scores
        scores = sorted(set(p))
        for edge in (low, high):
            if edge != t:
                i = int(np.searchsorted(scores, edge))
                assert edge == pytest.approx((scores[i - 1] + scores[i]) / 2)


def test_band_with_too_few_cells_beyond_an_edge_says_so() -> None:
    # min 3 cells: low candidates 0.5 (4 cells, 1/4 wrong), 0.35 (3 cells, 1/3), 0.25 (2 cells:
    # too few to judge) -> no judged edge meets 0%, so low goes to the outermost judged, 0.35.
    # High: 0.5 (4 cells, 1/4), 0.7 (3 cells, 0/3) -> 0.7.
    d = choose_band_detail(
        _HAND_TRUTH, _HAND_P, 0.5, max_error=0.0, max_uncertain=1.0, min_side_cells=3
    )
    assert d.band == pytest.approx((0.35, 0.7))
    assert len(d.notes) == 1 and "HEM" in d.notes[0] and "at least 3" in d.notes[0]
    # min 5: neither side has 5 cells, so no band, and both sides say so.
    d = choose_band_detail(
        _HAND_TRUTH, _HAND_P, 0.5, max_error=0.0, max_uncertain=1.0, min_side_cells=5
    )
    assert d.band == (0.5, 0.5)
    assert len(d.notes) == 2 and all("fewer than the 5" in n for n in d.notes)
    assert d.validation.meets_target_hem is None and d.validation.meets_target_all is None


def test_band_of_empty_input_is_the_threshold() -> None:
    assert choose_band([], [], 0.42) == (0.42, 0.42)
    d = choose_band_detail([], [], 0.42)
    assert not d.cap_binds and math.isnan(d.coverage) and math.isnan(d.error_hem)


def test_band_with_scores_on_one_side_only() -> None:
    # Nothing below the threshold: low stays at the threshold. High: "p >= 0.5" holds the HEM
    # cell at 0.7 (1/3), the midpoint 0.65 too (1/2), 0.8 only the ALL cell at 0.9 -> 0.8.
    low, high = choose_band(
        [ALL, HEM, ALL], [0.6, 0.7, 0.9], 0.5, max_uncertain=1.0, min_side_cells=1
    )
    assert low == 0.5
    assert high == pytest.approx(0.8)


def _brute_edge(
    truth: list[str], p: list[float], t: float, side: str, max_error: float, min_cells: int
) -> float:
    """The uncapped edge of one side, by the rule's words, by brute force."""
    if side == HEM:
        scores = sorted({v for v in p if v < t}, reverse=True)
    else:
        scores = sorted({v for v in p if v >= t})
    edges = [t] + [(a + b) / 2 for a, b in itertools.pairwise(scores)]
    judged = []
    for edge in edges:
        if side == HEM:
            beyond = [tr for tr, v in zip(truth, p, strict=True) if v < t and v <= edge]
            wrong = sum(tr == ALL for tr in beyond)
        else:
            beyond = [tr for tr, v in zip(truth, p, strict=True) if v >= t and v >= edge]
            wrong = sum(tr == HEM for tr in beyond)
        if len(beyond) >= max(min_cells, 1):
            judged.append(edge)
            if wrong / len(beyond) <= max_error:
                return edge
    return judged[-1] if judged else t


def test_band_properties_on_random_validation_sets() -> None:
    rng = np.random.default_rng(2024)
    for _ in range(150):
        truth, p = _random_set(rng, int(rng.integers(2, 80)))
        t = choose_threshold(truth, p) if rng.random() < 0.7 else float(rng.uniform(0.2, 0.8))
        max_error = float(rng.choice([0.0, 0.02, 0.1, 0.3]))
        cap = float(rng.choice([0.0, 0.05, 0.2, 0.5]))
        min_cells = int(rng.choice([1, 3, 10]))
        kw = {"max_error": max_error, "min_side_cells": min_cells}
        d = choose_band_detail(truth, p, t, max_uncertain=cap, **kw)
        free = choose_band_detail(truth, p, t, max_uncertain=1.0, **kw)
        low, high = d.band

        assert low <= t <= high
        assert free.low <= low and high <= free.high  # the cap only pulls edges inwards
        assert _inside(p, (low, high)) <= cap * len(p)
        assert low == t or low not in p
        assert high == t or high not in p
        assert d.cap_binds == ((low, high) != (free.low, free.high))
        if _inside(p, free.band) <= cap * len(p):
            assert not d.cap_binds

        assert free.low == pytest.approx(_brute_edge(truth, p, t, HEM, max_error, min_cells))
        assert free.high == pytest.approx(_brute_edge(truth, p, t, ALL, max_error, min_cells))

        # The reported validation figures are a direct count under call_label.
        labels = [call_label(v, t, (low, high)) for v in p]
        hem = [tr for tr, lab in zip(truth, labels, strict=True) if lab == HEM]
        all_ = [tr for tr, lab in zip(truth, labels, strict=True) if lab == ALL]
        check = d.validation
        assert (check.cells_hem, check.cells_all) == (len(hem), len(all_))
        assert check.uncertain == labels.count(UNCERTAIN)
        assert check.errors_hem == hem.count(ALL) and check.errors_all == all_.count(HEM)
        assert check.coverage == pytest.approx((len(hem) + len(all_)) / len(p))


def test_band_check_on_a_test_set_by_hand() -> None:
    # Band (0.3, 0.7), threshold 0.5. HEM side (p <= 0.3): 0.1 HEM, 0.2 ALL, 0.3 HEM -> 1/3.
    # ALL side (p >= 0.7): 0.7 ALL, 0.95 ALL -> 0. Uncertain: 0.4, 0.6.
    truth = [HEM, ALL, HEM, HEM, ALL, ALL, ALL]
    p = [0.1, 0.2, 0.3, 0.4, 0.6, 0.7, 0.95]
    c = band_check(truth, p, (0.3, 0.7), 0.5, "test", 0.02, min_side_cells=2)
    assert (c.part, c.band, c.threshold, c.target_error) == ("test", (0.3, 0.7), 0.5, 0.02)
    assert (c.cells, c.cells_hem, c.errors_hem, c.cells_all, c.errors_all) == (7, 3, 1, 2, 0)
    assert c.uncertain == 2
    assert c.error_hem == pytest.approx(1 / 3) and c.error_all == 0.0
    assert c.coverage == pytest.approx(5 / 7)
    assert c.meets_target_hem is False and c.meets_target_all is True
    # Too few cells beyond an edge to judge it; none at all gives NaN.
    c = band_check(truth, p, (0.0, 0.7), 0.5, "test", 0.02, min_side_cells=3)
    assert c.cells_hem == 0 and math.isnan(c.error_hem) and c.meets_target_hem is None
    assert c.meets_target_all is None  # 2 cells < 3


def test_band_rule_text_names_the_new_rule() -> None:
    text = BAND_RULE.format(error=0.02, cap=0.2)
    assert "2%" in text and "20%" in text
    assert "midpoints" in text and str(MIN_BAND_SIDE_CELLS) in text
    assert "cap stopped the edges" in text


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
    assert (ev.threshold, ev.uncertainty_band, ev.part) == (t, band, "test")
    assert ev.notes == [f"test: {note}" for note in ev.intervals.notes]


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


# ------------------------------------------------------------------------------ new scores


def _cohort(seed: int, n: int = 200, subjects: int = 12) -> Predictions:
    """Subjects of one class each (ALL for even ids), a few cells of the other class."""
    rng = np.random.default_rng(seed)
    subject = rng.integers(0, subjects, n)
    y = (subject % 2 == 0) ^ (rng.random(n) < 0.1)
    p = np.clip(np.where(y, 0.65, 0.35) + rng.normal(0.0, 0.2, n), 0.0, 1.0)
    return Predictions(
        [f"/c/{i}.bmp" for i in range(n)],
        [f"S{v}" for v in subject],
        [ALL if v else HEM for v in y],
        p.tolist(),
    )


def test_evaluation_carries_subject_level_intervals_and_band_check() -> None:
    from sklearn.metrics import f1_score  # test-only oracle

    preds = _cohort(3, n=300)
    t = choose_threshold(preds.truth, preds.p_all)
    band = choose_band(preds.truth, preds.p_all, t, min_side_cells=5)
    ev = evaluate_predictions(preds, t, band, "test", resamples=400, seed=9, band_error=0.1)

    calls = [ALL if v >= t else HEM for v in preds.p_all]
    assert ev.metrics.weighted_f1 == pytest.approx(f1_score(preds.truth, calls, average="weighted"))
    assert ev.subject_level.n == len(set(preds.subjects))
    assert ev.subject_level.calls == subject_level(preds, t).calls
    assert (ev.intervals.resamples, ev.intervals.seed, ev.intervals.unit) == (400, 9, "subject")
    assert ev.intervals == subject_bootstrap(preds, t, resamples=400, seed=9)
    expected = band_check(preds.truth, preds.p_all, band, t, "test", 0.1)
    assert ev.band_check == expected
    assert ev.band_check.cells_hem + ev.band_check.cells_all == len(preds) - ev.uncertain
    # No temperature and no raw scores: the scores are the uncalibrated ones.
    assert ev.temperature == 1.0 and ev.ece_uncalibrated == ev.ece
    assert ev.calibration_uncalibrated == ev.calibration


def test_evaluation_reports_calibration_before_the_temperature() -> None:
    from leukgui.core.calibration import apply_temperature

    raw = _cohort(4)
    p = apply_temperature(raw.p_all, 1.7).tolist()
    calibrated = Predictions(raw.paths, raw.subjects, raw.truth, p)
    ev = evaluate_predictions(
        calibrated, 0.5, (0.5, 0.5), "test", temperature=1.7, uncalibrated_p_all=raw.p_all
    )
    assert ev.temperature == 1.7
    assert ev.ece == expected_calibration_error(raw.truth, p)
    assert ev.ece_uncalibrated == expected_calibration_error(raw.truth, raw.p_all)
    assert ev.ece_uncalibrated != ev.ece
    assert ev.calibration_uncalibrated == calibration_bins(raw.truth, raw.p_all)
    d = json.loads(json.dumps(metrics_dict(ev), allow_nan=False))
    assert d["temperature"] == 1.7
    assert d["expected_calibration_error_before"] == pytest.approx(ev.ece_uncalibrated)
    # A temperature without the raw scores: the "before" figure is unknown, not invented.
    ev = evaluate_predictions(calibrated, 0.5, (0.5, 0.5), "test", temperature=1.7)
    assert math.isnan(ev.ece_uncalibrated) and ev.calibration_uncalibrated == []
    with pytest.raises(ValueError, match="uncalibrated_p_all"):
        evaluate_predictions(calibrated, 0.5, (0.5, 0.5), "t", uncalibrated_p_all=[0.1])


def test_metrics_dict_new_keys() -> None:
    preds = _cohort(5)
    t = choose_threshold(preds.truth, preds.p_all)
    band = choose_band(preds.truth, preds.p_all, t, min_side_cells=5)
    ev = evaluate_predictions(preds, t, band, "validation", resamples=300, seed=2)
    d = json.loads(json.dumps(metrics_dict(ev), allow_nan=False))

    assert d["weighted_f1"] == pytest.approx(ev.metrics.weighted_f1)
    sl, sm = d["subject_level"], ev.subject_level.metrics
    assert sl["rule"] == ev.subject_level.rule and sl["n"] == ev.subject_level.n
    for key, value in (
        ("accuracy", sm.accuracy),
        ("sensitivity", sm.recall),
        ("specificity", sm.specificity),
        ("balanced_accuracy", sm.balanced_accuracy),
    ):
        assert sl[key] == pytest.approx(value), key
        low, high = ev.subject_level.intervals[key]
        assert sl["intervals"][key] == pytest.approx([low, high]), key
    assert set(d["intervals"]) == set(BOOTSTRAP_METRICS)
    assert None not in d["intervals"]["balanced_accuracy"]  # 6 subjects of each class
    for key, pair in d["intervals"].items():
        expected = ev.intervals.intervals[key]
        if math.isnan(expected[0]):
            assert pair == [None, None]
        else:
            assert pair == pytest.approx(list(expected))
    assert {k: d["bootstrap"][k] for k in ("unit", "resamples", "seed", "confidence")} == {
        "unit": "subject",
        "resamples": 300,
        "seed": 2,
        "confidence": 0.95,
    }
    bc = d["band_check"]
    assert bc["cells_hem"] == ev.band_check.cells_hem
    assert bc["cells_all"] == ev.band_check.cells_all
    assert bc["error_hem"] == pytest.approx(ev.band_check.error_hem)
    assert bc["coverage"] == pytest.approx(ev.band_check.coverage)
    assert bc["meets_target_hem"] == ev.band_check.meets_target_hem
    assert bc["uncertain"] == ev.uncertain
    assert d["temperature"] == 1.0
    assert d["expected_calibration_error_before"] == pytest.approx(ev.ece)


def test_metrics_dict_new_keys_are_null_when_undefined() -> None:
    preds = Predictions(["x", "y", "z"], ["h1", "h1", "h2"], [HEM, HEM, HEM], [0.1, 0.2, 0.3])
    ev = evaluate_predictions(preds, 0.5, (0.5, 0.5), "healthy")
    d = json.loads(json.dumps(metrics_dict(ev), allow_nan=False))
    assert d["subject_level"]["sensitivity"] is None
    assert d["subject_level"]["intervals"]["sensitivity"] == [None, None]
    assert d["intervals"]["recall"] == [None, None]
    assert d["band_check"]["error_all"] is None and d["band_check"]["cells_all"] == 0
    assert d["band_check"]["meets_target_hem"] is None  # 3 cells are too few to judge
