"""Temperature scaling: the fit recovers a known temperature, never worsens the validation
log-loss (scikit-learn's log_loss as the oracle) and never changes a ranking."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import log_loss

from leukgui.core.calibration import EPSILON, apply_temperature, fit_temperature, logit


def _simulated(seed: int, temperature: float, n: int = 20_000) -> tuple[np.ndarray, np.ndarray]:
    """Labels drawn from calibrated log-odds z, and scores sigmoid(z * temperature): a model
    whose log-odds are `temperature` times too large, so the right fit is `temperature`."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0.0, 2.0, n)
    y = rng.random(n) < 1.0 / (1.0 + np.exp(-z))
    return y, 1.0 / (1.0 + np.exp(-z * temperature))


@pytest.mark.parametrize(("seed", "temperature"), [(0, 2.5), (1, 0.6), (2, 1.0), (3, 4.0)])
def test_fit_recovers_a_known_temperature(seed: int, temperature: float) -> None:
    y, p = _simulated(seed, temperature)
    fitted = fit_temperature(y, p)
    assert fitted == pytest.approx(temperature, rel=0.08)


def test_fit_is_the_minimum_of_sklearn_log_loss() -> None:
    rng = np.random.default_rng(7)
    for _ in range(20):
        y, p = _simulated(int(rng.integers(0, 10_000)), float(rng.uniform(0.3, 5.0)), n=500)
        t = fit_temperature(y, p)
        best = log_loss(y, apply_temperature(p, t), labels=[False, True])
        raw = log_loss(y, p, labels=[False, True])
        assert best <= raw + 1e-9  # never worse than T = 1
        for factor in (1.05, 1 / 1.05, 1.5, 1 / 1.5):
            other = log_loss(y, apply_temperature(p, t * factor), labels=[False, True])
            assert best <= other + 1e-9


def test_temperature_one_is_the_identity_and_a_copy() -> None:
    p = np.array([0.0, 1e-9, 0.2, 0.5, 0.9, 1.0])
    out = apply_temperature(p, 1.0)
    assert np.array_equal(out, p)
    out[0] = 0.5
    assert p[0] == 0.0  # a copy, not the caller's array
    assert apply_temperature([0.3, 0.7], 1.0).tolist() == [0.3, 0.7]


def test_temperature_preserves_ranks() -> None:
    rng = np.random.default_rng(3)
    p = rng.random(500)
    for t in (0.1, 0.5, 2.0, 10.0):
        q = apply_temperature(p, t)
        assert (np.diff(q[np.argsort(p)]) >= 0).all()  # never reversed
        if t >= 0.5:  # no saturation to exactly 0 or 1: strictly the same order
            assert np.array_equal(np.argsort(p, kind="stable"), np.argsort(q, kind="stable"))
            assert (np.diff(q[np.argsort(p)]) > 0).all()
        assert apply_temperature([0.5], t)[0] == pytest.approx(0.5)
    # T > 1 pulls scores towards 0.5, T < 1 pushes them away.
    assert abs(apply_temperature([0.9], 2.0)[0] - 0.5) < 0.4
    assert abs(apply_temperature([0.9], 0.5)[0] - 0.5) > 0.4


def test_temperature_divides_the_log_odds() -> None:
    p = np.array([0.1, 0.3, 0.8])
    q = apply_temperature(p, 2.0)
    assert logit(q) == pytest.approx(logit(p) / 2.0)
    assert logit([0.0, 1.0]) == pytest.approx(
        [math.log(EPSILON / (1 - EPSILON)), math.log((1 - EPSILON) / EPSILON)]
    )


@pytest.mark.parametrize("bad", [0.0, -1.0, math.nan, math.inf, -math.inf])
def test_bad_temperatures_raise(bad: float) -> None:
    with pytest.raises(ValueError, match="temperature"):
        apply_temperature([0.2, 0.8], bad)


def test_fit_without_both_classes_is_one() -> None:
    assert fit_temperature([], []) == 1.0
    assert fit_temperature([True, True], [0.2, 0.9]) == 1.0
    assert fit_temperature([False] * 3, [0.2, 0.5, 0.9]) == 1.0


def test_fit_stays_in_bounds_and_is_deterministic() -> None:
    # Perfectly separated scores: the likelihood keeps improving as T shrinks.
    y = np.array([False] * 50 + [True] * 50)
    p = np.r_[np.full(50, 0.4), np.full(50, 0.6)]
    t = fit_temperature(y, p)
    assert 0.5 <= t <= 0.51  # the lower bound: sharper than 2x is never fitted
    assert fit_temperature(y, p) == t
    y2, p2 = _simulated(5, 2.0, n=2000)
    assert fit_temperature(y2, p2) == fit_temperature(y2, p2)


def test_temperatures_in_the_fitted_range_keep_the_auc() -> None:
    """Down to T = 0.5 (the lowest the fit returns) scores near 1 stay apart, so the AUC
    cannot move; far smaller temperatures would round them to exactly 1.0."""
    from leukgui.core.metrics import roc_auc

    truth = ["ALL", "HEM", "ALL", "HEM"]
    p = np.array([0.99999, 0.9999, 0.2, 0.1])
    assert roc_auc(truth, apply_temperature(p, 0.5)) == roc_auc(truth, p)
    assert len(set(apply_temperature(p, 0.5).tolist())) == 4
    assert apply_temperature(p, 0.1)[0] == apply_temperature(p, 0.1)[1] == 1.0  # why 0.5
