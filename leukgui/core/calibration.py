"""Temperature scaling of P(ALL): one number, fitted on validation, applied everywhere.

Class weights in training push P(ALL) away from the observed share of blasts, so a cell shown
as "P(ALL) 0.95" is not right 95% of the time. Temperature scaling divides the log-odds by
one fitted number T: it changes no ranking (ROC AUC and every heatmap stay the same) but makes
the scores mean what they say. The trainer fits T on the validation subjects and stores it in
the bundle; analysis and evaluation apply it before the threshold and the band, which were
chosen on the calibrated scores.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = [
    "EPSILON",
    "TEMPERATURE_BOUNDS",
    "apply_temperature",
    "at_bound",
    "fit_temperature",
    "logit",
]

EPSILON = 1e-7  # keeps log-odds finite for scores of exactly 0 or 1 (float32 P(ALL) is
# quantised near 1 at about 6e-8 anyway, so clipping there merges no scores a network tells apart)
# Sharpening by more than 2x would push log-odds of up to 16 past what float64 can tell apart
# from 1.0 (ties that would move the ROC AUC), and a fit that wants it has no information.
_BOUNDS = (0.5, 20.0)
TEMPERATURE_BOUNDS = _BOUNDS


def logit(p_all: Sequence[float] | np.ndarray) -> np.ndarray:
    """Log-odds of P(ALL), clipped so that 0 and 1 stay finite."""
    p = np.clip(np.asarray(p_all, dtype=np.float64), EPSILON, 1.0 - EPSILON)
    return np.log(p) - np.log1p(-p)


def apply_temperature(p_all: Sequence[float] | np.ndarray, temperature: float) -> np.ndarray:
    """P(ALL) with its log-odds divided by `temperature` (1.0 returns the scores unchanged).

    Ranks are kept for every temperature of at least 0.5 (the fitted range), so the ROC AUC
    and every call order are unchanged; far smaller temperatures can round scores near 1 to
    exactly 1.0.
    """
    p = np.asarray(p_all, dtype=np.float64)
    if not math.isfinite(temperature) or temperature <= 0:
        raise ValueError(f"temperature must be a positive number, not {temperature!r}")
    if temperature == 1.0:
        return p.copy()
    z = logit(p) / temperature
    return 1.0 / (1.0 + np.exp(-z))


def at_bound(temperature: float, bounds: tuple[float, float] = _BOUNDS) -> bool:
    """True when a fitted temperature stopped at a limit of the search: the fit then says more
    about the scores (no information, or far too timid) than about a calibration."""
    low, high = bounds
    return temperature <= low * (1 + 1e-6) or temperature >= high * (1 - 1e-6)


def _nll(z: np.ndarray, y: np.ndarray, temperature: float) -> float:
    """Mean negative log-likelihood of labels `y` under log-odds `z / temperature`."""
    s = z / temperature
    # log(1 + exp(-s)) for y = 1 and log(1 + exp(s)) for y = 0, computed stably.
    return float(np.mean(np.logaddexp(0.0, np.where(y, -s, s))))


def fit_temperature(
    truth_is_all: Sequence[bool] | np.ndarray,
    p_all: Sequence[float] | np.ndarray,
    bounds: tuple[float, float] = _BOUNDS,
) -> float:
    """The temperature that minimises the negative log-likelihood of the labels.

    A one-dimensional convex problem in log T, solved by a coarse grid and then a golden-
    section search, so it needs no optimiser library and gives the same answer every time.
    With one class only (nothing to calibrate against) it returns 1.0.
    """
    y = np.asarray(truth_is_all, dtype=bool)
    z = logit(p_all)
    if len(z) == 0 or y.all() or not y.any():
        return 1.0
    lo, hi = math.log(bounds[0]), math.log(bounds[1])
    grid = np.linspace(lo, hi, 61)
    losses = [_nll(z, y, math.exp(t)) for t in grid]
    k = int(np.argmin(losses))
    a, b = grid[max(k - 1, 0)], grid[min(k + 1, len(grid) - 1)]
    ratio = (math.sqrt(5.0) - 1.0) / 2.0
    c, d = b - ratio * (b - a), a + ratio * (b - a)
    fc, fd = _nll(z, y, math.exp(c)), _nll(z, y, math.exp(d))
    for _ in range(60):
        if fc < fd:
            b, d, fd = d, c, fc
            c = b - ratio * (b - a)
            fc = _nll(z, y, math.exp(c))
        else:
            a, c, fc = c, d, fd
            d = a + ratio * (b - a)
            fd = _nll(z, y, math.exp(d))
    return float(math.exp((a + b) / 2.0))
