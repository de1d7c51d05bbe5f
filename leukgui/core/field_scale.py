"""How many micrometres one image pixel spans, set by the user or measured on the cells.

The white-cell detector (`leukgui.core.fields`) works in micrometres, so that one rule fits
every microscope. The scale (µm per image pixel) comes from, in order of preference:

1. **The user** (`DetectorSettings.um_per_px`), e.g. from `PRESETS` or `um_per_px_for`:
   a camera pixel of p µm behind an objective of magnification M and a camera coupler of
   magnification c spans p / (M x c) µm of the specimen.
2. **The red cells of the field.** Normal red cells are remarkably uniform discs of
   ~7.5 µm (7-8 µm; the mean corpuscular diameter of healthy adults), far more uniform than
   white cells, and a field holds dozens of them. `red_cell_diameter` finds round outlines
   with a circle Hough transform, drops those centred on basic-dye stain (white cells and
   their nuclei), measures each remaining cell's outer outline at half its rim's optical
   density, and takes the median: robust to overlapping, crenated or cut cells (they are
   not found as circles, or are outvoted), to stain strength and to lamp brightness. At
   least 5 cells are needed. On the 292 BCCD fields it gives 0.079 µm/px (5-95 %:
   0.072-0.087); BCCD's annotated red-cell boxes (98 px, median) say 0.077.
3. **The white cells' nucleus size**, when there are too few red cells (close-ups of one
   white cell, thick areas): the nuclear area of a leukocyte is ~40 µm² (a small
   lymphocyte's ~6.5 µm nucleus: 33 µm²; a neutrophil's lobes together 35-50 µm²). Much
   less precise (±30 %) than red cells, so it is a fallback only. It is the usual source
   for close-ups of one white cell (few whole red cells fit in them).
4. **A default** of 0.08 µm/px, when neither works: a 100x oil objective on a typical
   camera, the magnification at which smears are photographed for white-cell
   differentials (BCCD is at 0.077-0.079). The field's notes say so.

Estimates outside 0.02-5 µm/px (a red cell 1.5-375 px across; 0.02 is finer than a
light microscope resolves, 5 leaves nothing to detect) are implausible: the next
source is used and a note says why. `scale_outliers` flags fields of a sample whose
estimate disagrees with the rest (a wrong objective, or a field without usable cells).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

__all__ = [
    "DEFAULT_UM_PER_PX",
    "MAX_UM_PER_PX",
    "MIN_RED_CELLS",
    "MIN_UM_PER_PX",
    "NUCLEUS_AREA_UM2",
    "PRESETS",
    "RBC_DIAMETER_UM",
    "ScaleEstimate",
    "check_um_per_px",
    "nucleus_area_px",
    "nucleus_groups",
    "red_cell_diameter",
    "scale_outliers",
    "stain_excess",
    "um_per_px_for",
]

RBC_DIAMETER_UM = 7.5  # diameter of a normal red cell on a dried smear
NUCLEUS_AREA_UM2 = 40.0  # typical nuclear area of a white cell (see the module docstring)
DEFAULT_UM_PER_PX = 0.08  # 100x oil objective on a typical camera (BCCD: 0.077-0.079)
MIN_UM_PER_PX = 0.02  # a red cell 375 px across: finer than optics resolve (0.2 µm)
MAX_UM_PER_PX = 5.0  # a red cell 1.5 px across: nothing left to detect
MIN_RED_CELLS = 5  # fewer measured red cells than this: not trusted
WHITE_CELL_STAIN = 0.1  # basic-dye excess (see stain_excess) of white-cell cytoplasm
RED_CELL_SIDE = 160  # red cells are measured on a copy of about this many px a side


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _percentile(values: np.ndarray, pct: float) -> float:
    """np.percentile (linear interpolation) of all of `values`, by partial sorting: 2-3x
    faster on the few thousand values of a reduced field, and detection calls it per field."""
    flat = np.ravel(values)
    if flat.size == 0:
        raise ValueError("percentile of no values")
    pos = pct / 100.0 * (flat.size - 1)
    lo = int(math.floor(pos))
    hi = min(lo + 1, flat.size - 1)
    part = np.partition(flat, (lo, hi)) if hi > lo else np.partition(flat, lo)
    return float(part[lo]) + (pos - lo) * (float(part[hi]) - float(part[lo]))


def _row_nanmedian(rows: np.ndarray) -> np.ndarray:
    """np.nanmedian(rows, axis=1) for rows holding at least one number: sorting puts NaN
    last, so the median of the first `count` values is read off directly (20x faster than
    nanmedian, which goes through masked arrays)."""
    ordered = np.sort(rows, axis=1)
    count = np.count_nonzero(~np.isnan(rows), axis=1)
    index = np.arange(len(rows))
    return 0.5 * (ordered[index, (count - 1) // 2] + ordered[index, count // 2])


def um_per_px_for(objective_mag: float, camera_pixel_um: float, coupler: float = 1.0) -> float:
    """µm of specimen per image pixel: camera_pixel_um / (objective_mag x coupler).

    E.g. a 100x objective, a 0.5x C-mount coupler and 3.45 µm camera pixels give 0.069.
    Binning or a resized image multiplies the result by the binning / shrink factor.
    """
    for name, value in (
        ("objective_mag", objective_mag),
        ("camera_pixel_um", camera_pixel_um),
        ("coupler", coupler),
    ):
        if not _is_number(value) or value <= 0:
            raise ValueError(f"{name} must be a positive number, not {value!r}")
    return float(camera_pixel_um) / (float(objective_mag) * float(coupler))


# Named set-ups the GUI can offer (µm per image pixel at full camera resolution).
PRESETS: dict[str, float] = {
    "100x oil, 3.45 µm camera pixel, 0.5x coupler": um_per_px_for(100, 3.45, 0.5),
    "100x oil, 2.2 µm camera pixel, 1x coupler": um_per_px_for(100, 2.2, 1.0),
    "100x oil, 5.86 µm camera pixel, 0.63x coupler": um_per_px_for(100, 5.86, 0.63),
    "60x oil, 3.45 µm camera pixel, 0.5x coupler": um_per_px_for(60, 3.45, 0.5),
    "40x dry, 3.45 µm camera pixel, 0.5x coupler": um_per_px_for(40, 3.45, 0.5),
    "40x dry, 2.2 µm camera pixel, 1x coupler": um_per_px_for(40, 2.2, 1.0),
    "BCCD-like field (640 x 480, 100x oil)": 0.077,
}


def check_um_per_px(value: object) -> float | None:
    """The setting as a float (None stays None: automatic); ValueError with the reason."""
    if value is None:
        return None
    if not _is_number(value) or value <= 0:
        raise ValueError(
            f"µm per pixel (micrometres of specimen per image pixel) must be a positive number "
            f"(or auto: measured on every field), not {value!r}"
        )
    if not MIN_UM_PER_PX / 10 <= value <= MAX_UM_PER_PX * 10:
        raise ValueError(
            f"{value} µm per pixel is absurd (a red cell would be "
            f"{RBC_DIAMETER_UM / value:.3g} px across); it must lie within "
            f"{MIN_UM_PER_PX / 10:g}-{MAX_UM_PER_PX * 10:g} (light microscopes: about "
            f"{MIN_UM_PER_PX:g}-{MAX_UM_PER_PX:g})"
        )
    return float(value)


@dataclass(frozen=True)
class ScaleEstimate:
    """The scale a field was analysed at and where it came from.

    `source` is "set", "red cells", "nucleus size" or "default"; `n` the number of red
    cells or nuclei measured (0 for "set" / "default"); `plausible` is False when a
    measurement was out of range and replaced (the note says by what); `note` is '' or a
    sentence for the field's notes.
    """

    um_per_px: float
    source: str
    n: int = 0
    plausible: bool = True
    note: str = ""

    @property
    def description(self) -> str:
        """E.g. "red cells (n=23)", "set", "default": for reports and the GUI."""
        return f"{self.source} (n={self.n})" if self.n else self.source


def scale_outliers(
    estimates: Sequence[float | ScaleEstimate], tolerance: float = 0.25
) -> list[bool]:
    """True for each estimate more than `tolerance` (25 %) away from the sample's median.

    Fields of one sample share the microscope, so their scales should agree; a field that
    disagrees was probably measured on odd cells (or photographed at another objective)
    and deserves a look. Ratios are taken in log space, so 0.5x and 2x are equally far.
    """
    values = [e.um_per_px if isinstance(e, ScaleEstimate) else float(e) for e in estimates]
    if not values:
        return []
    if any(not _is_number(v) or v <= 0 for v in values):
        raise ValueError("scale estimates must be positive numbers")
    median = float(np.median(np.log(values)))
    limit = math.log1p(tolerance)
    return [abs(math.log(v) - median) > limit for v in values]


def _reduced(rgb: np.ndarray, side: int | None = 240) -> tuple[np.ndarray, float]:
    """A copy at most ~`side` px a side (None: full size), shrunk by a whole factor (fast
    pixel averaging), and the shrink factor."""
    h, w = rgb.shape[:2]
    k = 1 if side is None else max(1, math.ceil(max(h, w) / side))
    if k == 1:
        return rgb, 1.0
    crop = rgb[: h // k * k, : w // k * k]
    small = cv2.resize(crop, (w // k, h // k), interpolation=cv2.INTER_AREA)
    return small, 1.0 / k


def red_cell_diameter(rgb: np.ndarray, side: int = RED_CELL_SIDE) -> tuple[float | None, int]:
    """Median diameter (image px) of the round outlines in a field, and how many were found.

    Red cells are discs with a sharp rim, so a circle Hough transform (OpenCV's
    HOUGH_GRADIENT_ALT, which scores how well the edge gradients agree with a circle) finds
    each cell whose outline is mostly visible, alone or in a clump of overlapping cells;
    pale centres, crenation and cells cut by the border only remove candidates. The median
    of dozens of red cells is not moved by the odd white cell or nucleus lobe among them;
    circles centred on basic-dye stain are dropped, and each radius is moved to the cell's
    outer outline (`_outline_radii`). Runs on the green channel (haemoglobin and eosin
    absorb green) of a copy shrunk by a whole factor to about `side` px, so a field and
    its resized copies are measured alike;
    when fewer than 5 circles are found there or they are under 16 px across (a low
    magnification), again at 3x that size, then at full size.
    """
    best: tuple[float | None, int] = (None, 0)
    k_done = 0
    for limit in (side, 3 * side, None):  # finer only when red cells come out too small
        small, shrink = _reduced(rgb, limit)
        k = round(1.0 / shrink)
        if k == k_done:
            continue
        k_done = k
        found = _hough_diameter(small)
        if found[0] is not None:
            best = (found[0] / shrink, found[1])
            if found[1] >= MIN_RED_CELLS and found[0] >= 16.0:
                break
        if k == 1:
            break
    return best


def _hough_diameter(small: np.ndarray) -> tuple[float | None, int]:
    """Median diameter (px of `small`) of the circles found by HOUGH_GRADIENT_ALT."""
    green = cv2.GaussianBlur(small[:, :, 1], (0, 0), 1.2)
    h, w = green.shape
    if min(h, w) < 12:
        return None, 0
    circles = cv2.HoughCircles(
        green,
        cv2.HOUGH_GRADIENT_ALT,
        dp=1,
        minDist=4,
        param1=80,
        param2=0.65,
        minRadius=4,
        maxRadius=max(5, min(h, w) // 4),
    )
    if circles is None or circles.shape[1] == 0:
        return None, 0
    # Red cells do not take up the basic dye: circles centred on stained pixels are white
    # cells, their nuclei or lobes, not red cells.
    stain = cv2.GaussianBlur(stain_excess(small), (0, 0), 1.0)
    xs = np.clip(np.rint(circles[0, :, 0]).astype(int), 0, w - 1)
    ys = np.clip(np.rint(circles[0, :, 1]).astype(int), 0, h - 1)
    keep = stain[ys, xs] < WHITE_CELL_STAIN
    if not keep.any():
        return None, 0
    radii = _outline_radii(small[:, :, 1], circles[0, keep])
    radii = radii[np.isfinite(radii)]
    if radii.size == 0:
        return None, 0
    return 2.0 * float(np.median(radii)), int(len(radii))


def _outline_radii(green: np.ndarray, circles: np.ndarray) -> np.ndarray:
    """Radius of each circle's outer outline: where the optical density falls to half the
    rim's along 16 rays (median over the rays; NaN where too few rays cross).

    The Hough circle follows the steepest edge, which on a biconcave red cell is often the
    inner side of its thick rim; the cell's size is its outer outline (half maximum, as a
    microscopist measures it)."""
    g = green.astype(np.float32) + 1.0
    od = np.log(_percentile(g[::2, ::2], 97) / g)
    od = cv2.GaussianBlur(od, (0, 0), 0.7)
    n = len(circles)
    angles = np.linspace(0.0, 2.0 * np.pi, 16, endpoint=False, dtype=np.float32)
    t = np.linspace(0.5, 1.8, 27, dtype=np.float32)
    cx, cy, r0 = (circles[:, i, None, None] for i in range(3))
    xs = cx + r0 * t[None, None, :] * np.cos(angles)[None, :, None]
    ys = cy + r0 * t[None, None, :] * np.sin(angles)[None, :, None]
    prof = cv2.remap(
        od,
        xs.reshape(n * 16, -1).astype(np.float32),
        ys.reshape(n * 16, -1).astype(np.float32),
        cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=np.nan,
    ).reshape(n, 16, -1)
    peak = np.nanargmax(np.nan_to_num(prof, nan=-1.0)[:, :, : len(t) // 2 + 4], axis=2)
    top = np.take_along_axis(prof, peak[..., None], axis=2)[..., 0]
    after = np.arange(len(t))[None, None, :] > peak[..., None]
    below = after & (prof < 0.5 * top[..., None])
    crossed = below.any(axis=2) & (top > 0.02)
    first = np.argmax(below, axis=2)
    # Interpolate between the last sample above half and the first below.
    j0 = np.clip(first - 1, 0, len(t) - 1)
    v0 = np.take_along_axis(prof, j0[..., None], axis=2)[..., 0]
    v1 = np.take_along_axis(prof, first[..., None], axis=2)[..., 0]
    frac = np.clip((v0 - 0.5 * top) / np.maximum(v0 - v1, 1e-6), 0.0, 1.0)
    tt = t[j0] + frac * (t[1] - t[0])
    r = np.where(crossed, tt * circles[:, 2, None], np.nan)
    ok = np.count_nonzero(crossed, axis=1) >= 8
    if not ok.any():
        return np.full(n, np.nan)
    med = np.full(n, np.nan)
    med[ok] = _row_nanmedian(r[ok])
    return med


_LOG_LUT = np.log1p(np.arange(256, dtype=np.float32)).reshape(1, 256)


def stain_excess(rgb: np.ndarray, red_weight: float = 0.5) -> np.ndarray:
    """Basic-dye (nucleus) amount per pixel: OD of red/green minus OD of blue, over the
    level of the bright half of the image (glass and red cells), float32.

    The same one-channel colour deconvolution as `leukgui.core.fields` uses (see there).
    """
    blue = cv2.LUT(rgb[:, :, 2], _LOG_LUT)
    green = cv2.LUT(rgb[:, :, 1], _LOG_LUT)
    red = cv2.LUT(rgb[:, :, 0], _LOG_LUT)
    other = cv2.addWeighted(green, 1.0 - red_weight, red, red_weight, 0.0)
    excess = cv2.subtract(blue, other)
    step = 4 if min(rgb.shape[:2]) >= 64 else 1
    sample = excess[::step, ::step]
    light = cv2.add(blue[::step, ::step], other[::step, ::step])
    bright = sample[light >= np.median(light)]
    level = float(np.median(bright)) if bright.size else 0.0
    return cv2.subtract(excess, level)


def nucleus_groups(rgb: np.ndarray, nucleus_od: float = 0.2) -> list[tuple[float, bool]]:
    """The white-cell nuclei of a field as (area in image px², touches the image border).

    Scale-free: nucleus pixels are the stain map (`stain_excess`) above `nucleus_od`; lobes
    of one cell are grouped by a closing relative to the largest piece's size, and groups
    smaller than a third of the largest (platelets, specks) are ignored. Runs on a copy of
    about 240 px a side.
    """
    small, shrink = _reduced(rgb)
    stain = cv2.GaussianBlur(stain_excess(small), (0, 0), 0.7)
    nuc = (stain > nucleus_od).astype(np.uint8)
    n, _, stats, _ = cv2.connectedComponentsWithStats(nuc, connectivity=8)
    if n <= 1:
        return []
    biggest = float(stats[1:, cv2.CC_STAT_AREA].max())
    if biggest < 12:
        return []
    gap = max(1, int(round(0.25 * math.sqrt(biggest))))
    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * gap + 1, 2 * gap + 1))
    grouped = cv2.morphologyEx(nuc, cv2.MORPH_CLOSE, k)
    m, lab, gstats, _ = cv2.connectedComponentsWithStats(grouped, connectivity=8)
    areas = np.bincount(lab[nuc > 0], minlength=m).astype(float)
    h, w = nuc.shape
    out = []
    for i in range(1, m):
        if areas[i] < areas[1:].max() / 3.0:
            continue
        x, y, bw, bh = (int(v) for v in gstats[i, :4])
        border = x == 0 or y == 0 or x + bw == w or y + bh == h
        out.append((float(areas[i]) / (shrink * shrink), border))
    return out


def nucleus_area_px(rgb: np.ndarray, nucleus_od: float = 0.2) -> tuple[float | None, int]:
    """Median nuclear area (image px²) of the white cells of a field, and how many
    (`nucleus_groups`); (None, 0) without any."""
    groups = nucleus_groups(rgb, nucleus_od)
    if not groups:
        return None, 0
    return float(np.median([a for a, _ in groups])), len(groups)
