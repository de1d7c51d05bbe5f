"""Reinhard stain normalisation in CIE-Lab: one lab's colours mapped onto the training set's.

Staining, microscopes and cameras shift a cell's colours from lab to lab; a network trained
on one set of colours reads another set as evidence. Reinhard's method moves each image's
mean and spread in CIE-Lab (L* 0..100, a*, b* about -128..127, as OpenCV computes them from
float RGB in 0..1) onto stored target values, channel by channel.

Only the cell is normalised. C-NMC cells are segmented onto a (near-)black background, whose
JPEG noise gives values 1..8 rather than exactly 0; those pixels are neither measured nor
changed, so the background stays what it was. An image with no black background (a crop
from a smear field) is all foreground.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "METHOD",
    "NEAR_BLACK",
    "ReinhardStats",
    "apply_reinhard",
    "fit_reinhard",
    "foreground_mask",
    "lab_statistics",
]

METHOD = "reinhard"
# A pixel whose brightest channel is at most this is background. JPEG noise on the black
# background of segmented cells stays below about 20 (see `fields.looks_like_single_cell`);
# a stained cell is far brighter than that everywhere.
NEAR_BLACK = 20
_MIN_STD = 1e-3  # a flat image has no spread to rescale; its channel is only shifted
_MIN_PIXELS = 16  # fewer foreground pixels than this: nothing to measure, image unchanged


@dataclass(frozen=True)
class ReinhardStats:
    """Target foreground statistics in CIE-Lab (L* 0..100): mean and standard deviation."""

    lab_mean: tuple[float, float, float]
    lab_std: tuple[float, float, float]
    fitted_on: str = ""

    def __post_init__(self) -> None:
        for name in ("lab_mean", "lab_std"):
            values = getattr(self, name)
            if (
                not isinstance(values, (list, tuple))
                or len(values) != 3
                or not all(_is_number(v) for v in values)
            ):
                raise ValueError(f"{name} must be three finite numbers, not {values!r}")
            object.__setattr__(self, name, tuple(float(v) for v in values))
        if not all(v > 0 for v in self.lab_std):
            raise ValueError(f"lab_std must be three positive numbers, not {self.lab_std!r}")

    def to_manifest(self) -> dict[str, Any]:
        """The bundle manifest's `stain_normalisation` object."""
        return {
            "method": METHOD,
            "lab_mean": [float(v) for v in self.lab_mean],
            "lab_std": [float(v) for v in self.lab_std],
            "fitted_on": self.fitted_on,
        }

    @classmethod
    def from_manifest(cls, value: Any) -> ReinhardStats:
        """Read the manifest object back; ValueError (saying what is wrong) when it is bad."""
        if not isinstance(value, Mapping):
            raise ValueError("stain_normalisation must be an object")
        method = value.get("method")
        if method != METHOD:
            raise ValueError(f"stain_normalisation method must be {METHOD!r}, not {method!r}")
        fitted_on = value.get("fitted_on", "")
        if not isinstance(fitted_on, str):
            raise ValueError("stain_normalisation fitted_on must be text")
        return cls(value.get("lab_mean"), value.get("lab_std"), fitted_on)  # type: ignore[arg-type]

    def describe(self) -> str:
        """One line for a report's provenance."""
        mean = ", ".join(f"{v:.1f}" for v in self.lab_mean)
        std = ", ".join(f"{v:.1f}" for v in self.lab_std)
        where = f", fitted on {self.fitted_on}" if self.fitted_on else ""
        return f"Reinhard in CIE-Lab: target L*a*b* mean ({mean}), std ({std}){where}"


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check(rgb: np.ndarray) -> None:
    if not isinstance(rgb, np.ndarray) or rgb.dtype != np.uint8 or rgb.ndim != 3:
        raise ValueError("expected an HxWx3 uint8 RGB image")
    if rgb.shape[2] != 3:
        raise ValueError(f"expected 3 colour channels, not {rgb.shape[2]}")


def foreground_mask(rgb: np.ndarray) -> np.ndarray:
    """True on the cell: brightest channel above NEAR_BLACK, specks of noise opened away.

    A 3x3 opening removes isolated bright background pixels (JPEG ringing) without eating
    into a cell, which is hundreds of pixels across.
    """
    import cv2

    _check(rgb)
    lit = (rgb.max(axis=2) > NEAR_BLACK).astype(np.uint8)
    kernel = np.ones((3, 3), np.uint8)
    return cv2.morphologyEx(lit, cv2.MORPH_OPEN, kernel).astype(bool)


def _to_lab(rgb: np.ndarray) -> np.ndarray:
    import cv2

    return cv2.cvtColor(rgb.astype(np.float32) / 255.0, cv2.COLOR_RGB2Lab)


def lab_statistics(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Foreground mean and std per Lab channel, or None when there is no foreground."""
    mask = foreground_mask(rgb)
    if int(mask.sum()) < _MIN_PIXELS:
        return None
    lab = _to_lab(rgb)[mask].astype(np.float64)
    return lab.mean(axis=0), lab.std(axis=0)


def fit_reinhard(images: Iterable[np.ndarray], fitted_on: str | None = None) -> ReinhardStats:
    """Target statistics from training cells: the average of each cell's foreground mean and
    std (not the pooled pixels, whose spread would include the differences between cells,
    which each image's normalisation then imposes on every cell).

    `fitted_on` defaults to "N training cells". ValueError when no image has a foreground.
    """
    means, stds = [], []
    for image in images:
        stats = lab_statistics(image)
        if stats is not None:
            means.append(stats[0])
            stds.append(stats[1])
    if not means:
        raise ValueError("no cell pixels to fit stain normalisation on (all images are black)")
    mean = np.mean(means, axis=0)
    std = np.maximum(np.mean(stds, axis=0), _MIN_STD)
    label = fitted_on if fitted_on is not None else f"{len(means)} training cells"
    return ReinhardStats(
        tuple(float(v) for v in mean),  # type: ignore[arg-type]
        tuple(float(v) for v in std),  # type: ignore[arg-type]
        label,
    )


def apply_reinhard(rgb: np.ndarray, stats: ReinhardStats) -> np.ndarray:
    """A copy of `rgb` (uint8) whose foreground Lab mean and std are those of `stats`.

    Background pixels (see `foreground_mask`) are returned exactly as they were; an image
    with too little foreground to measure comes back unchanged.
    """
    import cv2

    _check(rgb)
    mask = foreground_mask(rgb)
    if int(mask.sum()) < _MIN_PIXELS:
        return rgb.copy()
    lab = _to_lab(rgb)
    pixels = lab[mask].astype(np.float64)
    mean, std = pixels.mean(axis=0), pixels.std(axis=0)
    target_mean = np.asarray(stats.lab_mean)
    target_std = np.asarray(stats.lab_std)
    scale = np.where(std > _MIN_STD, target_std / np.maximum(std, _MIN_STD), 1.0)
    lab[mask] = ((pixels - mean) * scale + target_mean).astype(np.float32)
    back = cv2.cvtColor(lab, cv2.COLOR_Lab2RGB)
    mapped = np.clip(np.rint(back * 255.0), 0, 255).astype(np.uint8)
    out = rgb.copy()
    out[mask] = mapped[mask]
    return out
