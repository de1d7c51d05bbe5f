"""Subject bootstrap, subject-level calls, exact intervals and paired comparison, checked
against scikit-learn and statsmodels (test-only oracles) and against counts made by hand."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, recall_score, roc_auc_score
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.proportion import proportion_confint

from leukgui.core.metrics import binary_metrics, wilson_interval
from leukgui.core.results import ALL, HEM
from training import stats
from training.scoring import Predictions
from training.stats import (
    BOOTSTRAP_METRICS,
    clopper_pearson,
    mcnemar_exact,
    paired_comparison,
    subject_bootstrap,
    subject_level,
)


def _cohort(
    seed: int,
    subjects: int = 40,
    cells: tuple[int, int] = (10, 60),
    spread: float = 0.15,
    noise: float = 0.05,
) -> Predictions:
    """Subjects of one class each (a few mislabelled cells), with a per-subject score shift
    so cells of one person are correlated, as in a real smear."""
    rng = np.random.default_rng(seed)
    paths, subj, truth, p_all = [], [], [], []
    for s in range(subjects):
        is_all = s % 2 == 0
        shift = rng.normal(0.0, spread)
        for c in range(int(rng.integers(*cells))):
            y = is_all ^ (rng.random() < noise)
            p = np.clip((0.7 if y else 0.3) + shift + rng.normal(0.0, 0.15), 0.0, 1.0)
            paths.append(f"/d/S{s:03d}/c{c}.bmp")
            subj.append(f"S{s:03d}")
            truth.append(ALL if y else HEM)
            p_all.append(float(p))
    return Predictions(paths, subj, truth, p_all)


def _metrics_at(preds: Predictions, threshold: float) -> dict[str, float]:
    calls = [ALL if p >= threshold else HEM for p in preds.p_all]
    m = binary_metrics(preds.truth, calls, preds.p_all)
    return {name: getattr(m, name) for name in BOOTSTRAP_METRICS}


# ------------------------------------------------------------------------------ bootstrap


def test_weighted_pooling_matches_sklearn_with_sample_weights() -> None:
    # A resample is the cells of each subject counted w times: the confusion counts and the
    # AUC of the weighted pool must equal sklearn's with sample_weight = w of the cell's subject.
    rng = np.random.default_rng(0)
    for trial in range(20):
        preds = _cohort(trial, subjects=int(rng.integers(3, 12)), cells=(1, 15))
        group = stats._group(preds.subjects, preds.truth, preds.p_all)
        w = rng.integers(0, 4, len(group.names)).astype(float)
        if trial % 3 == 0:
            p = np.round(group.scores, 1)  # ties
            group = stats._Subjects(group.names, group.index, group.is_all, p, group.majority_all)
        cell_w = w[group.index]
        if cell_w[group.is_all].sum() == 0 or cell_w[~group.is_all].sum() == 0:
            continue
        u = stats._pair_wins(group)
        pos = np.bincount(group.index, weights=group.is_all, minlength=len(w))
        neg = np.bincount(group.index, weights=~group.is_all, minlength=len(w))
        auc = (w @ u @ w) / ((w @ pos) * (w @ neg))
        expected = roc_auc_score(group.is_all, group.scores, sample_weight=cell_w)
        assert auc == pytest.approx(expected, abs=1e-12)

        called = group.scores >= 0.5
        counts = w @ stats._confusion(group, called)
        y = group.is_all
        assert counts == pytest.approx(
            [
                cell_w[y & called].sum(),
                cell_w[y & ~called].sum(),
                cell_w[~y & called].sum(),
                cell_w[~y & ~called].sum(),
            ]
        )


def test_stratified_resamples_keep_the_class_counts_of_subjects() -> None:
    majority = np.array([True, False, True, True, False, False, False])
    w = stats._resample_weights(majority, 500, np.random.default_rng(4))
    assert w.shape == (500, 7)
    assert (w[:, majority].sum(axis=1) == 3).all()
    assert (w[:, ~majority].sum(axis=1) == 4).all()
    assert len({tuple(r) for r in w}) > 100  # really resampled


def test_bootstrap_with_many_subjects_covers_the_point_estimate() -> None:
    preds = _cohort(1, subjects=60)
    result = subject_bootstrap(preds, 0.5, resamples=1000, seed=3)
    point = _metrics_at(preds, 0.5)
    assert set(result.intervals) == set(BOOTSTRAP_METRICS)
    for name, (low, high) in result.intervals.items():
        assert low <= point[name] <= high, name
        assert high - low > 0.0, name
        assert high - low < 0.5, name
    assert result.notes == []


def test_bootstrap_records_its_settings_and_is_reproducible() -> None:
    preds = _cohort(2, subjects=20)
    a = subject_bootstrap(preds, 0.45, resamples=300, seed=11, confidence=0.9)
    b = subject_bootstrap(preds, 0.45, resamples=300, seed=11, confidence=0.9)
    c = subject_bootstrap(preds, 0.45, resamples=300, seed=12, confidence=0.9)
    assert (a.unit, a.resamples, a.seed, a.confidence, a.subjects) == ("subject", 300, 11, 0.9, 20)
    assert a.intervals == b.intervals
    assert a.intervals != c.intervals
    wider = subject_bootstrap(preds, 0.45, resamples=300, seed=11, confidence=0.99)
    for name in BOOTSTRAP_METRICS:
        assert wider.intervals[name][0] <= a.intervals[name][0] + 1e-12
        assert wider.intervals[name][1] >= a.intervals[name][1] - 1e-12


def test_two_subjects_of_20_cells_are_not_40_independent_cells() -> None:
    # The audit's case: 40 cells of 2 people. One subject per class: no spread between
    # subjects can be estimated, so the intervals are undefined, while Wilson on 40 cells
    # would claim a narrow one.
    truth = [ALL] * 20 + [HEM] * 20
    p = [0.9] * 18 + [0.2] * 2 + [0.1] * 19 + [0.8]
    preds = Predictions([f"c{i}" for i in range(40)], ["A"] * 20 + ["H"] * 20, truth, p)
    result = subject_bootstrap(preds, 0.5)
    assert result.subjects == 2
    assert all(math.isnan(lo) and math.isnan(hi) for lo, hi in result.intervals.values())
    assert result.notes and "fewer than 2 subjects" in result.notes[0]
    low, high = wilson_interval(37, 40)
    assert high - low < 0.2  # what a cell-level interval would claim

    # Two HEM subjects of 20 cells, one read perfectly and one at chance: the subject
    # interval spans both people, far wider than Wilson's on the pooled 30/40.
    preds = Predictions(
        [f"c{i}" for i in range(40)],
        ["H1"] * 20 + ["H2"] * 20,
        [HEM] * 40,
        [0.1] * 20 + [0.1] * 10 + [0.9] * 10,
    )
    acc_low, acc_high = subject_bootstrap(preds, 0.5).intervals["accuracy"]
    w_low, w_high = wilson_interval(30, 40)
    assert (acc_low, acc_high) == pytest.approx((0.5, 1.0))
    assert acc_high - acc_low > 1.8 * (w_high - w_low)
    assert math.isnan(subject_bootstrap(preds, 0.5).intervals["recall"][0])  # no ALL cell


def test_bootstrap_is_wider_than_wilson_when_subjects_differ() -> None:
    preds = _cohort(5, subjects=10, cells=(20, 21), spread=0.3)
    result = subject_bootstrap(preds, 0.5, resamples=2000)
    calls = [p >= 0.5 for p in preds.p_all]
    right = sum(c == (t == ALL) for c, t in zip(calls, preds.truth, strict=True))
    w_low, w_high = wilson_interval(right, len(preds))
    low, high = result.intervals["accuracy"]
    assert high - low > 1.3 * (w_high - w_low)


def test_bootstrap_is_fast_enough() -> None:
    rng = np.random.default_rng(9)
    n, k = 10_000, 100
    subject = rng.integers(0, k, n)
    is_all = (subject % 2 == 0) ^ (rng.random(n) < 0.05)
    p = np.clip(np.where(is_all, 0.7, 0.3) + rng.normal(0, 0.2, n), 0, 1)
    preds = Predictions(
        [f"c{i}" for i in range(n)],
        [f"S{s}" for s in subject],
        [ALL if v else HEM for v in is_all],
        p.tolist(),
    )
    start = time.perf_counter()
    result = subject_bootstrap(preds, 0.5, resamples=2000)
    assert time.perf_counter() - start < 1.0
    assert result.subjects == k and not math.isnan(result.intervals["roc_auc"][0])


def test_bootstrap_refuses_bad_settings() -> None:
    preds = _cohort(0, subjects=4)
    with pytest.raises(ValueError, match="resamples"):
        subject_bootstrap(preds, 0.5, resamples=0)
    with pytest.raises(ValueError, match="confidence"):
        subject_bootstrap(preds, 0.5, confidence=1.0)


def test_bootstrap_of_no_cells_is_nan() -> None:
    result = subject_bootstrap(Predictions([], [], [], []), 0.5)
    assert result.subjects == 0
    assert all(math.isnan(v[0]) for v in result.intervals.values())


# ------------------------------------------------------------------------------ subject level


def _hand() -> Predictions:
    rows = [
        ("a", HEM, 0.1),
        ("a", HEM, 0.7),
        ("a", HEM, 0.6),  # a: mean 0.4667 -> HEM by mean; cells 2 ALL vs 1 HEM -> ALL
        ("b", ALL, 0.9),
        ("b", ALL, 0.3),  # b: mean 0.6 -> ALL; cells 1:1 tie -> by mean -> ALL
        ("c", ALL, 0.45),
        ("c", HEM, 0.2),
        ("c", ALL, 0.55),  # c: truth ALL (2:1); mean 0.4 -> HEM; cells 1 ALL vs 2 HEM -> HEM
        ("d", HEM, 0.05),  # d: mean 0.05 -> HEM either way
    ]
    return Predictions(
        [f"/x/{i}" for i in range(len(rows))],
        [r[0] for r in rows],
        [r[1] for r in rows],
        [r[2] for r in rows],
    )


def test_subject_level_by_hand_mean_and_majority() -> None:
    mean = subject_level(_hand(), 0.5)
    assert mean.truth == {"a": HEM, "b": ALL, "c": ALL, "d": HEM}
    assert mean.calls == {"a": HEM, "b": ALL, "c": HEM, "d": HEM}
    assert mean.mean_p_all["a"] == pytest.approx(1.4 / 3)
    assert mean.mean_p_all["c"] == pytest.approx(0.4)
    assert "mean P(ALL)" in mean.rule and mean.n == 4
    m = mean.metrics
    assert (m.tp, m.fn, m.fp, m.tn) == (1, 1, 0, 2)
    # AUC from the means: ALL subjects 0.6, 0.4 vs HEM 0.4667, 0.05 -> 3 of 4 pairs.
    assert m.roc_auc == pytest.approx(0.75)

    majority = subject_level(_hand(), 0.5, rule="majority")
    assert majority.calls == {"a": ALL, "b": ALL, "c": HEM, "d": HEM}
    assert "tie" in majority.rule
    assert (majority.metrics.tp, majority.metrics.fp) == (1, 1)


def test_subject_level_matches_sklearn_and_exact_intervals() -> None:
    for seed in range(5):
        preds = _cohort(seed, subjects=int(3 + 7 * seed))
        level = subject_level(preds, 0.5, rule="mean" if seed % 2 else "majority")
        names = sorted(level.calls)
        y = [level.truth[s] for s in names]
        called = [level.calls[s] for s in names]
        m = level.metrics
        assert m.n == len(set(preds.subjects))
        assert m.accuracy == pytest.approx(accuracy_score(y, called))
        assert m.recall == pytest.approx(recall_score(y, called, pos_label=ALL))
        assert m.roc_auc == pytest.approx(
            roc_auc_score([t == ALL for t in y], [level.mean_p_all[s] for s in names])
        )
        for key, (k, n) in {
            "accuracy": (m.tp + m.tn, m.n),
            "sensitivity": (m.tp, m.tp + m.fn),
            "specificity": (m.tn, m.tn + m.fp),
        }.items():
            expected = proportion_confint(k, n, alpha=0.05, method="beta")
            assert level.intervals[key] == pytest.approx(expected, abs=1e-9), key
        low, high = level.intervals["balanced_accuracy"]
        assert low <= m.balanced_accuracy <= high
        s_lo, s_hi = proportion_confint(m.tp, m.tp + m.fn, alpha=0.025, method="beta")
        c_lo, c_hi = proportion_confint(m.tn, m.tn + m.fp, alpha=0.025, method="beta")
        assert (low, high) == pytest.approx(((s_lo + c_lo) / 2, (s_hi + c_hi) / 2), abs=1e-9)
        assert "Clopper-Pearson" in level.interval_method


def test_subject_level_refuses_an_unknown_rule() -> None:
    with pytest.raises(ValueError, match="rule"):
        subject_level(_hand(), 0.5, rule="median")


def test_clopper_pearson_matches_statsmodels() -> None:
    rng = np.random.default_rng(1)
    cases = [(0, 1), (1, 1), (0, 10), (10, 10), (3, 7)]
    cases += [(int(k), int(n)) for n in rng.integers(1, 300, 40) for k in [rng.integers(0, n + 1)]]
    for k, n in cases:
        for confidence in (0.9, 0.95, 0.99):
            expected = proportion_confint(k, n, alpha=1 - confidence, method="beta")
            assert clopper_pearson(k, n, confidence) == pytest.approx(expected, abs=1e-9)
    assert all(math.isnan(v) for v in clopper_pearson(0, 0))
    with pytest.raises(ValueError):
        clopper_pearson(3, 2)


# ------------------------------------------------------------------------------ McNemar


def test_mcnemar_exact_matches_statsmodels() -> None:
    rng = np.random.default_rng(2)
    pairs = [(0, 0), (0, 1), (5, 5), (0, 20), (30, 12)]
    pairs += [(int(b), int(c)) for b, c in rng.integers(0, 80, size=(40, 2))]
    for b, c in pairs:
        expected = mcnemar([[17, b], [c, 9]], exact=True).pvalue
        assert mcnemar_exact(b, c) == pytest.approx(expected, rel=1e-9, abs=1e-15), (b, c)
    with pytest.raises(ValueError):
        mcnemar_exact(-1, 2)


# ------------------------------------------------------------------------------ paired


def _rescored(preds: Predictions, seed: int, noise: float) -> Predictions:
    rng = np.random.default_rng(seed)
    p = np.clip(np.asarray(preds.p_all) + rng.normal(0.0, noise, len(preds)), 0.0, 1.0)
    return Predictions(list(preds.paths), list(preds.subjects), list(preds.truth), p.tolist())


def test_identical_models_show_no_difference() -> None:
    preds = _cohort(3, subjects=30)
    c = paired_comparison(preds, preds, 0.5, 0.5, name_a="A", name_b="B", resamples=500)
    assert c.difference == 0.0 and c.value_a == c.value_b
    assert c.interval == (0.0, 0.0)
    assert (c.mcnemar_b, c.mcnemar_c, c.mcnemar_p) == (0, 0, 1.0)
    assert c.verdict == "no detectable difference"
    assert (c.metric, c.name_a, c.name_b, c.resamples, c.seed) == (
        "balanced accuracy",
        "A",
        "B",
        500,
        0,
    )
    assert (c.subjects, c.cells, c.confidence) == (30, len(preds), 0.95)


def test_a_clearly_better_model_is_named() -> None:
    good = _cohort(4, subjects=60, spread=0.05, noise=0.0)
    bad = _rescored(good, 1, 0.45)
    c = paired_comparison(good, bad, 0.5, 0.5, name_a="effnet", name_b="resnet")
    assert c.verdict == "effnet better"
    assert c.difference > 0 and c.interval[0] > 0
    assert c.interval[0] <= c.difference <= c.interval[1]
    assert c.mcnemar_b > c.mcnemar_c and c.mcnemar_p < 0.001
    swapped = paired_comparison(bad, good, 0.5, 0.5, name_a="resnet", name_b="effnet")
    assert swapped.verdict == "effnet better"
    assert swapped.difference == pytest.approx(-c.difference)
    assert (swapped.mcnemar_b, swapped.mcnemar_c) == (c.mcnemar_c, c.mcnemar_b)


def test_paired_values_and_mcnemar_counts_by_hand() -> None:
    truth = [ALL, ALL, ALL, HEM, HEM, HEM]
    subjects = ["s1", "s1", "s2", "s3", "s3", "s4"]
    paths = [f"p{i}" for i in range(6)]
    pa = [0.9, 0.8, 0.3, 0.1, 0.6, 0.2]  # right: y y n y n y
    pb = [0.9, 0.2, 0.7, 0.7, 0.6, 0.1]  # right: y n y n n y
    a = Predictions(paths, subjects, truth, pa)
    # b listed in another order: cells are matched by path.
    order = [5, 2, 0, 4, 1, 3]
    b = Predictions(
        [paths[i] for i in order],
        [subjects[i] for i in order],
        [truth[i] for i in order],
        [pb[i] for i in order],
    )
    c = paired_comparison(a, b, 0.5, 0.5, name_a="a", name_b="b", resamples=200)
    # a right, b wrong: cells 1 and 3; a wrong, b right: cell 2; both wrong: cell 4.
    assert (c.mcnemar_b, c.mcnemar_c) == (2, 1)
    assert c.value_a == pytest.approx((2 / 3 + 2 / 3) / 2)
    assert c.value_b == pytest.approx((2 / 3 + 1 / 3) / 2)
    assert c.difference == pytest.approx(c.value_a - c.value_b)
    assert c.mcnemar_p == pytest.approx(mcnemar([[2, 2], [1, 1]], exact=True).pvalue)


def test_paired_comparison_refuses_different_cells() -> None:
    a = Predictions(["x", "y", "z"], ["s", "s", "t"], [ALL, HEM, HEM], [0.9, 0.1, 0.2])
    b = Predictions(["x", "y", "w"], ["s", "s", "t"], [ALL, HEM, HEM], [0.9, 0.1, 0.2])
    with pytest.raises(ValueError, match="'z'.*'w'|only in a.*'z'"):
        paired_comparison(a, b, 0.5, 0.5, name_a="a", name_b="b")
    c = Predictions(["x", "y", "z"], ["s", "s", "t"], [ALL, ALL, HEM], [0.9, 0.1, 0.2])
    with pytest.raises(ValueError, match="'y'"):
        paired_comparison(a, c, 0.5, 0.5, name_a="a", name_b="c")
    d = Predictions(["x", "x", "z"], ["s", "s", "t"], [ALL, HEM, HEM], [0.9, 0.1, 0.2])
    with pytest.raises(ValueError, match="more than once"):
        paired_comparison(a, d, 0.5, 0.5, name_a="a", name_b="d")


def test_paired_comparison_is_reproducible_by_seed() -> None:
    a = _cohort(6, subjects=20)
    b = _rescored(a, 2, 0.2)
    one = paired_comparison(a, b, 0.5, 0.5, name_a="a", name_b="b", resamples=300, seed=5)
    two = paired_comparison(a, b, 0.5, 0.5, name_a="a", name_b="b", resamples=300, seed=5)
    other = paired_comparison(a, b, 0.5, 0.5, name_a="a", name_b="b", resamples=300, seed=6)
    assert one == two
    assert one.interval != other.interval


def test_few_subjects_are_cautioned_and_enough_are_not() -> None:
    from training.stats import FEW_SUBJECTS_PER_CLASS, few_subjects, subject_level

    def level(n: int):
        subjects = [f"P{i}" for i in range(n)] + [f"H{i}" for i in range(n)]
        cells = [(s, "ALL" if s[0] == "P" else "HEM") for s in subjects for _ in range(4)]
        p = [0.9 if t == "ALL" else 0.1 for _, t in cells]
        return subject_level(
            Predictions(
                [f"{s}_{i}" for i, (s, _) in enumerate(cells)],
                [s for s, _ in cells],
                [t for _, t in cells],
                p,
            ),
            0.5,
        )

    few = few_subjects(level(FEW_SUBJECTS_PER_CLASS - 1))
    assert few.startswith(f"only {FEW_SUBJECTS_PER_CLASS - 1} ALL and ") and "zero width" in few
    assert few_subjects(level(FEW_SUBJECTS_PER_CLASS)) == ""
    assert few_subjects(None) == ""
