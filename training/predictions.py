"""Per-cell model outputs on one labelled set: what scoring and the statistics both read.

Its own module so that `training.scoring` (which uses `training.stats`) and `training.stats`
(which resamples these) do not import each other.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Predictions"]


@dataclass
class Predictions:
    """Per-cell model outputs on one labelled set, in a stable order."""

    paths: list[str]
    subjects: list[str]
    truth: list[str]  # ALL / HEM
    p_all: list[float]

    def __post_init__(self) -> None:
        n = len(self.paths)
        if not (len(self.subjects) == len(self.truth) == len(self.p_all) == n):
            raise ValueError("paths, subjects, truth and p_all must have the same length")

    def __len__(self) -> int:
        return len(self.paths)
