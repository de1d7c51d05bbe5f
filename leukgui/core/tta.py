"""Test-time augmentation: the 8 dihedral views of a cell (flips and quarter turns).

A blood cell under the microscope has no up and no left, so the network should call a cell
the same whichever way it lies; averaging its P(ALL) over the 8 flips and 90-degree turns
removes the part of a score that depends on the orientation, at about 8 times the cost.
"""

from __future__ import annotations

import numpy as np

__all__ = ["TTA_DESCRIPTION", "VIEWS", "dihedral_view", "dihedral_views"]

VIEWS = 8  # identity, 3 quarter turns, and the 4 mirrored versions
TTA_DESCRIPTION = "8 views (flips, 90° rotations)"


def dihedral_view(batch: np.ndarray, k: int) -> np.ndarray:
    """View `k` (0..7) of a (B, H, W, C) batch: k % 4 quarter turns, mirrored when k >= 4.

    View 0 is the batch itself (not copied), whose heatmap is the one shown.
    """
    if not 0 <= k < VIEWS:
        raise ValueError(f"view must be 0..{VIEWS - 1}, not {k}")
    if k == 0:
        return batch
    out = np.rot90(batch, k % 4, axes=(1, 2))
    if k >= 4:
        out = np.flip(out, axis=2)
    return np.ascontiguousarray(out)


def dihedral_views(batch: np.ndarray) -> list[np.ndarray]:
    """All 8 views of a (B, H, W, C) batch, identity first."""
    return [dihedral_view(batch, k) for k in range(VIEWS)]
