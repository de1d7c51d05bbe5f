"""Reinhard stain normalisation: the cell's Lab statistics move, the background does not."""

from __future__ import annotations

import numpy as np
import pytest

from leukgui.core.results import ALL, HEM
from leukgui.core.stain import (
    NEAR_BLACK,
    ReinhardStats,
    apply_reinhard,
    fit_reinhard,
    foreground_mask,
    lab_statistics,
)
from leukgui.core.synthetic import make_cell


def _noisy_cell(seed: int, size: int = 128, label: str = ALL) -> tuple[np.ndarray, np.ndarray]:
    """A synthetic segmented cell on a JPEG-like background of values 1..8; and its mask."""
    rng = np.random.default_rng(seed)
    cell = make_cell(label, rng, size=size)
    image = cell.image.copy()
    background = ~cell.mask.astype(bool)
    noise = rng.integers(1, 9, size=image.shape, dtype=np.uint8)
    image[background] = noise[background]
    return image, background


TARGET = ReinhardStats((62.0, 18.0, -22.0), (14.0, 6.0, 9.0), "3 training cells")


def test_foreground_statistics_match_the_target_and_the_background_is_untouched() -> None:
    image, background = _noisy_cell(1)
    before = lab_statistics(image)
    assert before is not None
    out = apply_reinhard(image, TARGET)
    assert out.dtype == np.uint8 and out.shape == image.shape
    np.testing.assert_array_equal(out[background], image[background])
    after = lab_statistics(out)
    assert after is not None
    mean, std = after
    np.testing.assert_allclose(mean, TARGET.lab_mean, atol=1.0)
    np.testing.assert_allclose(std, TARGET.lab_std, rtol=0.08, atol=0.3)
    # It really moved: the cell's own statistics were far from the target.
    assert np.abs(before[0] - np.asarray(TARGET.lab_mean)).max() > 5.0
    assert np.abs(out.astype(int) - image.astype(int))[~background].mean() > 5.0


def test_noise_on_the_background_is_not_the_cell() -> None:
    image, background = _noisy_cell(2)
    mask = foreground_mask(image)
    assert image[background].max() <= 8 < NEAR_BLACK
    assert not mask[background].any()
    # The mask covers the cell except its darkest rim (at most a sliver of pixels).
    assert mask[~background].mean() > 0.97


def test_an_image_without_a_black_background_is_all_foreground() -> None:
    rng = np.random.default_rng(3)
    smear = np.clip(rng.normal((200, 150, 190), 18, size=(96, 96, 3)), 30, 255).astype(np.uint8)
    assert foreground_mask(smear).all()
    out = apply_reinhard(smear, TARGET)
    mean, std = lab_statistics(out)
    np.testing.assert_allclose(mean, TARGET.lab_mean, atol=1.0)
    np.testing.assert_allclose(std, TARGET.lab_std, rtol=0.08, atol=0.3)


def test_own_statistics_leave_the_image_as_it_was() -> None:
    image, _ = _noisy_cell(4)
    mean, std = lab_statistics(image)
    same = ReinhardStats(tuple(mean), tuple(std))
    out = apply_reinhard(image, same)
    assert np.abs(out.astype(int) - image.astype(int)).max() <= 1  # only rounding


def test_a_black_image_comes_back_unchanged() -> None:
    black = np.zeros((40, 40, 3), np.uint8)
    np.testing.assert_array_equal(apply_reinhard(black, TARGET), black)
    with pytest.raises(ValueError, match="no cell pixels"):
        fit_reinhard([black, black])


def test_fit_averages_each_cells_statistics() -> None:
    cells = [_noisy_cell(10 + i, label=ALL if i % 2 else HEM)[0] for i in range(4)]
    stats = fit_reinhard(cells)
    per_cell = [lab_statistics(c) for c in cells]
    np.testing.assert_allclose(stats.lab_mean, np.mean([m for m, _ in per_cell], axis=0))
    np.testing.assert_allclose(stats.lab_std, np.mean([s for _, s in per_cell], axis=0))
    assert stats.fitted_on == "4 training cells"
    # Normalising a cell onto the fitted target lands on it.
    mean, _ = lab_statistics(apply_reinhard(cells[0], stats))
    np.testing.assert_allclose(mean, stats.lab_mean, atol=1.0)


def test_manifest_round_trip_and_refusals() -> None:
    value = TARGET.to_manifest()
    assert value == {
        "method": "reinhard",
        "lab_mean": [62.0, 18.0, -22.0],
        "lab_std": [14.0, 6.0, 9.0],
        "fitted_on": "3 training cells",
    }
    assert ReinhardStats.from_manifest(value) == TARGET
    bad = [
        [],
        dict(value, method="macenko"),
        dict(value, lab_mean=[1.0, 2.0]),
        dict(value, lab_std=[1.0, 0.0, 2.0]),
        dict(value, lab_std=[1.0, -3.0, 2.0]),
        dict(value, lab_mean=[1.0, "2", 3.0]),
        dict(value, lab_mean=[1.0, float("inf"), 3.0]),
        dict(value, fitted_on=7),
    ]
    for item in bad:
        with pytest.raises(ValueError):
            ReinhardStats.from_manifest(item)
    assert "Reinhard" in TARGET.describe() and "3 training cells" in TARGET.describe()


def test_wrong_arrays_are_refused() -> None:
    with pytest.raises(ValueError):
        apply_reinhard(np.zeros((8, 8), np.uint8), TARGET)
    with pytest.raises(ValueError):
        apply_reinhard(np.zeros((8, 8, 3), np.float32), TARGET)
