"""Find white blood cells in a stained smear field and cut each out like a C-NMC cell.

Labs photograph whole Giemsa/Wright-stained fields, but the classifier expects C-NMC crops:
one segmented cell on pure black, centred, 450 x 450. This module bridges the two with
classical image analysis (OpenCV + numpy, no learning, no Qt), fast enough to run on every
field of a folder on a laptop CPU.

Method, in the order `detect_cells` runs it:

1. **Stain map.** White-cell nuclei take up the basic dye (azure / methylene blue) and look
   purple-blue; red cells take up eosin and look pink; the background is near white. In
   optical density (OD = -log(I / I0), Beer-Lambert) the basic dye absorbs red and green
   far more than blue, while eosin absorbs green and some blue but little red. So
   ``stain = log B - (log R + log G) / 2`` (mean OD of red and green minus OD of blue) is
   a cheap one-channel colour deconvolution: high on nuclei, moderate on white-cell
   cytoplasm, about zero or below on red cells and background. It does not depend on the
   lamp brightness, and the median over the brighter half of the field (background and
   red cells) is subtracted, so a colour cast cancels too, even in a close-up of one cell.
2. **Nuclei.** The smoothed map above `nucleus_od`; specks below `min_fragment_um2` go.
3. **Cell bodies.** The cytoplasm is paler but still bluish: the map above `cytoplasm_od`,
   opened (`rim_open_um`) to cut off the thin dark rims of neighbouring red cells, joined with
   the nuclei closed over `lobe_gap_um` (neutrophil nuclei are 2-5 separate lobes), limited to
   `max_rim_um` around a nucleus, holes filled. Each connected body holding enough nucleus
   is a cluster of one or more touching cells. In a one-cell image (below) the body also
   takes every pixel whose mean optical density exceeds `body_od` (raised above the red
   cells when they are well stained, `_absorbing_body`) when the basic-dye body is under
   `min_body_ratio` x the nucleus (granular cytoplasm that took up eosin more than the
   basic dye, or a blast's thin rim), and the parts holding nucleus are one cell (lobes).
4. **Splitting.** Touching cells meet at a neck. Peaks of the cluster's distance transform
   are joined when the straight path between them never narrows below `waist` x the smaller
   peak (one round cell, e.g. an eosinophil with two distant lobes), otherwise each is a cell
   of its own; the power diagram of the peaks' inscribed discs cuts the cluster between
   them (for two overlapping discs its border is the chord through their neck). A part
   without nucleus is a leak into a red cell and is dropped; a part with too little nucleus
   is merged back into its neighbour. Each cell's outline is then smoothed: opened
   (`outline_open_um`) against spurs, closed against notches where pale cytoplasm fell below
   the threshold, holes filled.
5. **Score.** A 0..1 confidence from nucleus size and stain strength; cells below
   `min_score` are dropped, at most `max_candidates` are kept (with a note).

Detection runs on a reduced copy (`work_um_per_px`, never enlarged); each mask is brought
back to full resolution with bilinear interpolation, which keeps the outline smooth.

Sizes are physical: micrometres (areas µm²), converted to pixels with the field's scale
(µm per image pixel). The scale is `DetectorSettings.um_per_px` when set; otherwise it is
measured on the field's own red cells (normal red cells are ~7.5 µm discs), else on its
white cells' nuclei, else a default: see `leukgui.core.field_scale`. So a field of any
microscope, and the same field at any resolution, is analysed at the same physical scale;
the image size says nothing about the magnification. The scale used and where it came from
are on every `FieldDetection` (`scale`).

Calibration: BCCD fields (640 x 480, 100x oil) are ~0.077 µm/px (its annotated red-cell
boxes are 98 px across, median; 7.5 µm / 98 px; the red-cell estimate says 0.079); the
thresholds below were tuned there in px and are given in µm at 0.077 µm/px.

An image that spans less than `ONE_CELL_MAX_UM` (two white-cell diameters) on its short
side is a close-up of one white cell with its surroundings (an analyser's cell image):
only the cell at its centre is reported (`is_one_cell_image`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import cv2
import numpy as np

from leukgui.core.field_scale import (
    _LOG_LUT,
    DEFAULT_UM_PER_PX,
    MAX_UM_PER_PX,
    MIN_RED_CELLS,
    MIN_UM_PER_PX,
    NUCLEUS_AREA_UM2,
    RBC_DIAMETER_UM,
    ScaleEstimate,
    _is_number,
    _percentile,
    check_um_per_px,
    nucleus_area_px,
    nucleus_groups,
    red_cell_diameter,
)
from leukgui.core.results import ALL, HEM
from leukgui.core.synthetic import make_cell

__all__ = [
    "CROP_FILL",
    "NOTE_NO_CELL",
    "NOTE_ONE_CELL",
    "ONE_CELL_MAX_UM",
    "REFERENCE_SHAPE",
    "REFERENCE_UM_PER_PX",
    "SYNTHETIC_UM_PER_PX",
    "DetectedCell",
    "DetectorSettings",
    "FieldDetection",
    "box_iou",
    "crop_cell",
    "detect_cells",
    "estimate_scale",
    "is_one_cell_image",
    "looks_like_single_cell",
    "make_synthetic_field",
]


def box_iou(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    """Intersection over union of two (x0, y0, x1, y1) boxes with exclusive ends: how
    detections are matched to annotated boxes (the PASCAL VOC criterion is IoU >= 0.5)."""
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


REFERENCE_SHAPE = (480, 640)  # (height, width) of a BCCD field, the synthetic default
REFERENCE_UM_PER_PX = 0.077  # BCCD's scale (see the module docstring); legacy px settings
# make_synthetic_field at 640 x 480: red cells of 74 px stand for 7.5 µm.
SYNTHETIC_UM_PER_PX = RBC_DIAMETER_UM / 74.0
NOTE_NO_CELL = "no white cell found"
NOTE_ONE_CELL = "one-cell image: only the central white cell is reported"
# A short side below this (µm) holds one white cell (7-20 µm) with its surroundings.
ONE_CELL_MAX_UM = 30.0
# Crops: the mask's bounding circle spans this fraction of the frame. On the six C-NMC
# samples it spans 44-64 % (mean 54 %), so 0.55 makes crops look like C-NMC cells.
CROP_FILL = 0.55


# Settings of the px era (sizes in px of a 640 x 480 BCCD field), their µm successors and
# the power of the length in each (1: a length, 2: an area).
_LEGACY_PX = {
    "smooth": ("smooth_um", 1),
    "min_fragment_area": ("min_fragment_um2", 2),
    "lobe_gap": ("lobe_gap_um", 1),
    "min_nucleus_area": ("min_nucleus_um2", 2),
    "max_nucleus_area": ("max_nucleus_um2", 2),
    "rim_open": ("rim_open_um", 1),
    "max_rim": ("max_rim_um", 1),
    "outline_open": ("outline_open_um", 1),
    "min_cell_radius": ("min_cell_radius_um", 1),
}
_MAY_BE_ZERO = {"min_fragment_um2", "rim_open_um", "outline_open_um"}


@dataclass(frozen=True)
class DetectorSettings:
    """Tuning of `detect_cells`; sizes in µm (areas µm²) of the specimen.

    `um_per_px` is the scale (µm per image pixel, e.g. from `field_scale.PRESETS`); None
    measures it on every field (`estimate_scale`). `pixel_scale` and the other px-era
    settings at the end are kept only so that old preferences load: pixel_scale is image
    px per BCCD px, i.e. um_per_px = 0.077 / pixel_scale (ignored when `um_per_px` is set).
    Stored with every report (`to_dict`).
    """

    um_per_px: float | None = None  # µm per image pixel; None: measured on the field
    pixel_scale: float | None = None  # deprecated: um_per_px = REFERENCE_UM_PER_PX / this
    work_um_per_px: float = 0.154  # detect on a copy at this many µm per pixel (or finer)
    smooth_um: float = 0.23  # Gaussian sigma applied to the stain map
    red_weight: float = 0.5  # share of red in the "red and green" OD of the stain map
    nucleus_od: float = 0.2  # stain above the background level: nucleus
    cytoplasm_od: float = 0.05  # stain above the background level: white-cell cytoplasm
    body_od: float = 0.1  # one-cell images: absorbance (mean OD) of the cell body
    min_body_ratio: float = 1.5  # one-cell images: cell area / nucleus area at least
    min_fragment_um2: float = 0.35  # nucleus specks smaller than this are noise
    lobe_gap_um: float = 1.1  # nucleus lobes closer than this are bridged
    min_nucleus_um2: float = 18.0  # less nucleus (< ~4.8 µm across): platelets (2-3 µm)
    max_nucleus_um2: float = 360.0  # more stained area than this is not one cell
    rim_open_um: float = 0.55  # opening that cuts red-cell rims off the cytoplasm map
    max_rim_um: float = 3.5  # the cytoplasm extends at most this far beyond the nucleus
    outline_open_um: float = 0.9  # opening that smooths each cell's outline (cuts spurs)
    min_cell_radius_um: float = 0.9  # smallest body (inscribed radius) split off a cluster
    waist: float = 0.75  # split where a cluster narrows below this x the smaller body
    min_score: float = 0.35  # cells below this confidence are dropped
    max_candidates: int = 200  # keep at most this many cells per field (best scores)
    # Deprecated px-era settings (px of a 640 x 480 BCCD field), kept so that old saved
    # preferences still load: when set, each overrides its µm successor, converted at
    # BCCD's 0.077 µm/px (e.g. smooth=3 -> smooth_um=0.231; work_scale w ->
    # work_um_per_px = 0.077 / w). New code should leave them None.
    work_scale: float | None = None
    smooth: float | None = None
    min_fragment_area: float | None = None
    lobe_gap: float | None = None
    min_nucleus_area: float | None = None
    max_nucleus_area: float | None = None
    rim_open: float | None = None
    max_rim: float | None = None
    outline_open: float | None = None
    min_cell_radius: float | None = None

    def __post_init__(self) -> None:
        check_um_per_px(self.um_per_px)
        for old, (new, power) in _LEGACY_PX.items():
            value = getattr(self, old)
            if value is None:
                continue
            if not _is_number(value) or value < 0 or (value == 0 and new not in _MAY_BE_ZERO):
                kind = "a number >= 0" if new in _MAY_BE_ZERO else "a positive number"
                raise ValueError(
                    f"{old} must be {kind} (a deprecated px setting: use {new}), not {value!r}"
                )
            object.__setattr__(self, new, float(value) * REFERENCE_UM_PER_PX**power)
        if self.work_scale is not None:
            if not _is_number(self.work_scale) or not 0 < self.work_scale <= 4:
                raise ValueError(f"work_scale must be within (0, 4], not {self.work_scale!r}")
            object.__setattr__(self, "work_um_per_px", REFERENCE_UM_PER_PX / self.work_scale)
        positive = (
            "work_um_per_px",
            "smooth_um",
            "nucleus_od",
            "lobe_gap_um",
            "min_nucleus_um2",
            "max_nucleus_um2",
            "max_rim_um",
            "min_cell_radius_um",
        )
        for name in positive:
            value = getattr(self, name)
            if not _is_number(value) or value <= 0:
                raise ValueError(f"{name} must be a positive number, not {value!r}")
        for name in ("cytoplasm_od", "min_fragment_um2", "rim_open_um", "outline_open_um"):
            value = getattr(self, name)
            if not _is_number(value) or value < 0:
                raise ValueError(f"{name} must be a number >= 0, not {value!r}")
        if self.pixel_scale is not None and (
            not _is_number(self.pixel_scale) or self.pixel_scale <= 0
        ):
            raise ValueError(f"pixel_scale must be positive or None, not {self.pixel_scale!r}")
        for name in ("red_weight", "waist", "min_score"):
            value = getattr(self, name)
            if not _is_number(value) or not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be within [0, 1], not {value!r}")
        if not _is_number(self.body_od) or self.body_od <= 0:
            raise ValueError(f"body_od must be a positive number, not {self.body_od!r}")
        if not _is_number(self.min_body_ratio) or self.min_body_ratio < 1:
            raise ValueError(f"min_body_ratio must be a number >= 1, not {self.min_body_ratio!r}")
        if self.cytoplasm_od >= self.nucleus_od:
            raise ValueError("cytoplasm_od must be lower than nucleus_od")
        if self.min_nucleus_um2 >= self.max_nucleus_um2:
            raise ValueError("min_nucleus_um2 must be lower than max_nucleus_um2")
        count = self.max_candidates
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise ValueError(f"max_candidates must be an integer >= 1, not {count!r}")

    @property
    def fixed_um_per_px(self) -> float | None:
        """The scale the user fixed (um_per_px, else the legacy pixel_scale), or None."""
        if self.um_per_px is not None:
            return float(self.um_per_px)
        if self.pixel_scale is not None:
            return check_um_per_px(REFERENCE_UM_PER_PX / self.pixel_scale)
        return None

    def to_dict(self) -> dict[str, float | int | None]:
        """Plain values for report provenance (JSON / Excel friendly); deprecated px-era
        settings appear only when they were given."""
        legacy = {*_LEGACY_PX, "work_scale", "pixel_scale"}
        return {k: v for k, v in asdict(self).items() if v is not None or k not in legacy}


@dataclass(frozen=True)
class DetectedCell:
    """One white cell found in a field, in full-resolution image coordinates.

    `box` is (x0, y0, x1, y1) with exclusive ends: the tight box of the mask. `mask` is
    box-local, shape (y1 - y0, x1 - x0), True on the cell (nucleus and cytoplasm); use
    `full_mask` for an image-sized one. `nucleus_mask` (box-local too, or None for cells
    made elsewhere) is the nucleus. `um_per_px` is the field's scale, None when unknown;
    it turns the px measures into µm (`diameter_um`, `area_um2`, `nucleus_area_um2`).
    """

    box: tuple[int, int, int, int]
    mask: np.ndarray = field(repr=False)
    area: int  # mask pixels
    nucleus_area: int  # nucleus pixels (measured at the detection resolution, rescaled)
    touches_border: bool  # the mask reaches the image edge: the cell may be cut off
    score: float  # 0..1 confidence that this is a white cell
    nucleus_mask: np.ndarray | None = field(default=None, repr=False, compare=False)
    um_per_px: float | None = None  # the field's scale (µm per image pixel)

    @property
    def centre(self) -> tuple[float, float]:
        """Centre (x, y) of the box."""
        x0, y0, x1, y1 = self.box
        return ((x0 + x1) / 2.0, (y0 + y1) / 2.0)

    @property
    def diameter(self) -> float:
        """Equivalent-circle diameter of the mask in px: 2 sqrt(area / pi)."""
        return 2.0 * math.sqrt(self.area / math.pi)

    @property
    def diameter_um(self) -> float | None:
        """Equivalent-circle diameter in µm (None without a scale)."""
        return None if self.um_per_px is None else self.diameter * self.um_per_px

    @property
    def area_um2(self) -> float | None:
        """Cell area in µm² (None without a scale)."""
        return None if self.um_per_px is None else self.area * self.um_per_px**2

    @property
    def nucleus_area_um2(self) -> float | None:
        """Nucleus area in µm² (None without a scale)."""
        return None if self.um_per_px is None else self.nucleus_area * self.um_per_px**2

    def full_mask(self, shape: tuple[int, ...]) -> np.ndarray:
        """The mask pasted into an all-False image of `shape` (H, W[, ...])."""
        out = np.zeros(shape[:2], bool)
        x0, y0, x1, y1 = self.box
        out[y0:y1, x0:x1] = self.mask
        return out


@dataclass(frozen=True)
class FieldDetection:
    """All cells found in one field, best score first, plus plain-language notes.

    `scale` says at how many µm per pixel the field was analysed and where that came from
    ("set", "red cells", "nucleus size", "default"); `one_cell_image` is True for a close-up
    of one white cell (only the central cell is then reported).
    """

    cells: list[DetectedCell]
    notes: list[str]
    shape: tuple[int, int]  # (height, width) of the analyzed image
    settings: dict[str, float | int | None]
    scale: ScaleEstimate | None = None
    one_cell_image: bool = False

    @property
    def um_per_px(self) -> float | None:
        """The scale used (µm per image pixel)."""
        return None if self.scale is None else self.scale.um_per_px

    @property
    def scale_source(self) -> str:
        """Where the scale came from, e.g. "red cells (n=23)"."""
        return "" if self.scale is None else self.scale.description


# --------------------------------------------------------------------------------------------
# Detection
# --------------------------------------------------------------------------------------------


def _disk(radius: float) -> np.ndarray:
    """Elliptic structuring element of about this radius (at least 1 px across, odd)."""
    d = max(1, int(round(2 * radius)) | 1)
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (d, d))


def _check_rgb(rgb: np.ndarray) -> None:
    if not isinstance(rgb, np.ndarray) or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 RGB image, got shape {getattr(rgb, 'shape', None)}")
    if rgb.dtype != np.uint8:
        raise ValueError(f"expected uint8 pixels, got {rgb.dtype}")


def _stain_map(small: np.ndarray, red_weight: float) -> np.ndarray:
    """Mean OD of red and green minus OD of blue (basic-dye amount) over background, float32."""
    blue = cv2.LUT(small[:, :, 2], _LOG_LUT)
    green = cv2.LUT(small[:, :, 1], _LOG_LUT)
    red = cv2.LUT(small[:, :, 0], _LOG_LUT)
    other = cv2.addWeighted(green, 1.0 - red_weight, red, red_weight, 0.0)
    excess = cv2.subtract(blue, other)
    # Baseline: the median over the brighter half of the field (background and red cells),
    # so the level holds even when white cells fill most of the picture.
    sample = excess[::4, ::4]
    light = cv2.add(blue[::4, ::4], other[::4, ::4])
    bright = sample[light >= np.median(light)]
    level = float(np.median(bright)) if bright.size else 0.0
    return cv2.subtract(excess, level)


def _field_notes(small: np.ndarray) -> list[str]:
    """Warnings about image quality that explain an empty or doubtful result."""
    grey = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY)
    mean, std = (float(v[0, 0]) for v in cv2.meanStdDev(grey))
    if std < 3.0:
        return ["image looks blank (almost no contrast)"]
    notes = []
    if np.count_nonzero(grey >= 250) > 0.5 * grey.size:
        notes.append("image looks overexposed")
    elif mean < 40.0:
        notes.append("image looks underexposed")
    # Focus: on the strongest 10 % of edges, |Laplacian| / |gradient| is about 1 / edge
    # width in px, whatever the contrast. BCCD fields at the work scale: 0.058-0.091; the
    # same blurred by a 2 px Gaussian: 0.033-0.054.
    g = grey.astype(np.float32)
    grad = cv2.magnitude(cv2.Sobel(g, cv2.CV_32F, 1, 0), cv2.Sobel(g, cv2.CV_32F, 0, 1))
    lap = np.abs(cv2.Laplacian(g, cv2.CV_32F, ksize=1))
    strong = grad >= _percentile(grad[::2, ::2], 90)
    if float(lap[strong].mean()) < 0.045 * max(float(grad[strong].mean()), 1e-6):
        notes.append("image looks out of focus")
    return notes


def estimate_scale(rgb: np.ndarray, settings: DetectorSettings | None = None) -> ScaleEstimate:
    """The field's scale (µm per image pixel) and its source; see `leukgui.core.field_scale`.

    Set by the user > measured on >= 5 red cells > white-cell nucleus size > default. A
    measurement outside 0.02-5 µm/px is not used: the next source is, with a note.
    """
    s = settings if settings is not None else DetectorSettings()
    _check_rgb(rgb)
    fixed = s.fixed_um_per_px
    if fixed is not None:
        return ScaleEstimate(fixed, "set")
    notes = []
    if min(rgb.shape[:2]) >= 16:
        diameter, n = red_cell_diameter(rgb)
        if diameter is not None and n >= MIN_RED_CELLS:
            value = RBC_DIAMETER_UM / diameter
            if MIN_UM_PER_PX <= value <= MAX_UM_PER_PX:
                return ScaleEstimate(value, "red cells", n)
            notes.append(f"red cells gave an implausible scale ({value:.3g} µm/px)")
        area, k = nucleus_area_px(rgb, s.nucleus_od)
        if area is not None:
            value = math.sqrt(NUCLEUS_AREA_UM2 / area)
            if MIN_UM_PER_PX <= value <= MAX_UM_PER_PX:
                note = "; ".join([*notes, "too few red cells: scale from nucleus size (±30 %)"])
                return ScaleEstimate(value, "nucleus size", k, not notes, note)
            notes.append(f"nuclei gave an implausible scale ({value:.3g} µm/px)")
    notes.append(
        f"scale unknown: assumed {DEFAULT_UM_PER_PX} µm/px (100x oil objective); "
        "set µm per pixel for this microscope"
    )
    return ScaleEstimate(DEFAULT_UM_PER_PX, "default", 0, len(notes) == 1, "; ".join(notes))


def is_one_cell_image(
    shape: tuple[int, ...], um_per_px: float, whole_nuclei: int | None = None
) -> bool:
    """True when the image is a close-up of one white cell with its surroundings.

    Its short side spans less than `ONE_CELL_MAX_UM` (30 µm: two large white cells), so it
    cannot show more than one whole white cell: an analyser's cell image, as opposed to a
    smear field (BCCD: 37 x 49 µm) or a C-NMC crop on black (`looks_like_single_cell`).
    `whole_nuclei` (nuclei clear of the border, `field_scale.nucleus_groups`) guards
    against a scale underestimate: an image holding two whole white cells is a field.
    """
    small = min(shape[:2]) * um_per_px < ONE_CELL_MAX_UM
    return small and (whole_nuclei is None or whole_nuclei <= 1)


def detect_cells(rgb: np.ndarray, settings: DetectorSettings | None = None) -> FieldDetection:
    """Find the white cells in an RGB smear field (HxWx3 uint8).

    Returns every cell with a full-resolution mask and box (see `DetectedCell`), best score
    first, the scale used (`FieldDetection.scale`) and notes such as "no white cell found"
    that the GUI shows next to the field. In a one-cell image (`is_one_cell_image`) only
    the cell at the centre is kept. Blank, black or odd images give notes, not exceptions;
    only a wrong array raises.
    """
    s = settings if settings is not None else DetectorSettings()
    _check_rgb(rgb)
    height, width = rgb.shape[:2]
    scale = estimate_scale(rgb, s)
    um = scale.um_per_px
    factor = min(1.0, um / s.work_um_per_px)  # detection resolution; never upsampled
    wh, ww = max(1, round(height * factor)), max(1, round(width * factor))
    if (wh, ww) == (height, width):
        factor, small = 1.0, rgb
    else:
        small = _shrink(rgb, (ww, wh))
    unit = factor / um  # work px per µm
    notes = _field_notes(small)
    if scale.note:
        notes.append(scale.note)
    one = is_one_cell_image((height, width), um)
    if one:  # small enough for one cell: does it show several whole ones?
        whole = sum(not border for _, border in nucleus_groups(rgb, s.nucleus_od))
        one = is_one_cell_image((height, width), um, whole)
    cells: list[DetectedCell] = []
    if min(wh, ww) >= 8:
        stain = cv2.GaussianBlur(_stain_map(small, s.red_weight), (0, 0), s.smooth_um * unit)
        work = _find(stain, unit, s, notes, one_cell=one)
        if one and _needs_absorbance(work, small.shape[:2], s):
            # Granular cytoplasm that took up eosin rather than the basic dye: in a
            # close-up the body is then everything that absorbs light around the nucleus.
            body = _absorbing_body(small, stain, unit, s)
            work = _find(stain, unit, s, [], body, one_cell=True)
        cells = [_to_full(c, factor, (height, width), um) for c in work]
        cells.sort(key=lambda c: -c.score)
    if one and cells:
        cells = [_central(cells, (height, width))]
        notes.append(NOTE_ONE_CELL)
    if not cells:
        notes.append(NOTE_NO_CELL)
        if scale.source == "set":
            # A set scale is not measured: a wrong one hides every cell (sizes in µm).
            notes.append(
                f"at the set {um:.4g} µm per pixel: if white cells are visible, that setting "
                "may not fit this microscope"
            )
    return FieldDetection(cells, notes, (height, width), s.to_dict(), scale, one)


def _shrink(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize down to size (w, h): pixel averaging by the whole factor, then bilinear.

    OpenCV's INTER_AREA is 4-6x slower at a fractional factor than at a whole one; the
    bilinear step after it shrinks by less than 2, and the stain map is blurred anyway.
    """
    k = int(min(rgb.shape[1] / size[0], rgb.shape[0] / size[1]))
    if k >= 2:
        h, w = rgb.shape[:2]
        crop = rgb[: h // k * k, : w // k * k]
        rgb = cv2.resize(crop, (w // k, h // k), interpolation=cv2.INTER_AREA)
        if (rgb.shape[1], rgb.shape[0]) == size:
            return rgb
    return cv2.resize(rgb, size, interpolation=cv2.INTER_LINEAR)


def _central(cells: list[DetectedCell], shape: tuple[int, int]) -> DetectedCell:
    """The cell covering the image centre, else the one whose mask comes nearest to it."""
    cy, cx = (shape[0] - 1) / 2.0, (shape[1] - 1) / 2.0

    def distance(c: DetectedCell) -> float:
        ys, xs = np.nonzero(c.mask)
        d2 = (xs + c.box[0] - cx) ** 2 + (ys + c.box[1] - cy) ** 2
        return float(np.sqrt(d2.min()))

    return min(cells, key=lambda c: (distance(c), -c.score))


@dataclass
class _Work:
    """A cell at the detection resolution."""

    box: tuple[int, int, int, int]  # work px, exclusive ends
    mask: np.ndarray  # uint8 0/1, box-local
    nucleus: np.ndarray  # uint8 0/1, box-local (same box)
    nucleus_area: float  # work px
    score: float


def _needs_absorbance(work: list[_Work], shape: tuple[int, int], s: DetectorSettings) -> bool:
    """True when the central cell's basic-dye body is hardly more than its nucleus.

    A white cell is at least `min_body_ratio` times its nucleus in area (a small
    lymphocyte's thin rim: ~1.5x; a neutrophil: 3-4x); less means its cytoplasm did not
    take up the basic dye (neutrophil / eosinophil granules stain with eosin).
    """
    if not work:
        return True
    cy, cx = (shape[0] - 1) / 2.0, (shape[1] - 1) / 2.0

    def distance(c: _Work) -> float:
        ys, xs = np.nonzero(c.mask)
        return float(((xs + c.box[0] - cx) ** 2 + (ys + c.box[1] - cy) ** 2).min())

    central = min(work, key=distance)
    return float(np.count_nonzero(central.mask)) < s.min_body_ratio * central.nucleus_area


RED_SHARE = 0.2  # share of the surroundings covered by well-stained red cells (see below)


def _absorbing_body(
    small: np.ndarray, stain: np.ndarray, unit: float, s: DetectorSettings
) -> np.ndarray:
    """Pixels that absorb like white-cell cytoplasm, not like the red cells around (0/1).

    The threshold is `body_od`; when well-stained red cells (absorbing above `body_od`,
    not taking the basic dye) cover at least `RED_SHARE` of the surroundings (farther than
    `max_rim_um` from any nucleus), it is raised above them: 1.25 x the 75th percentile of
    their absorbance, so red cells touching the white cell stay out of its body. Pale
    red-cell ghosts (as in the Jiangxi images) leave it at `body_od`.
    """
    absorb = cv2.GaussianBlur(_absorbance(small), (0, 0), s.smooth_um * unit)
    nucleus = (stain > s.nucleus_od).astype(np.uint8)
    far = cv2.distanceTransform(1 - nucleus, cv2.DIST_L2, 3) > s.max_rim_um * unit
    unstained = far & (stain <= s.cytoplasm_od)
    around = absorb[unstained & (absorb > s.body_od)]
    level = s.body_od
    if around.size >= max(20, RED_SHARE * np.count_nonzero(unstained)):
        level = max(level, 1.25 * float(np.percentile(around, 75)))
    return (absorb > level).astype(np.uint8)


def _absorbance(small: np.ndarray) -> np.ndarray:
    """Mean optical density of the three channels over the glass (float32)."""
    od = -np.log((small.astype(np.float32) + 1.0) / 256.0)
    glass = np.percentile(od.reshape(-1, 3)[::3], 5, axis=0)
    return (od - glass.astype(np.float32)).mean(axis=2)


def _find(
    stain: np.ndarray,
    unit: float,
    s: DetectorSettings,
    notes: list[str],
    extra_body: np.ndarray | None = None,
    one_cell: bool = False,
) -> list[_Work]:
    """Nuclei -> cell-body clusters -> split cells (all at the detection resolution).

    `extra_body` (one-cell images, 0/1, `_absorbing_body`): more cell body. `one_cell`: the
    parts of a cluster that hold nucleus are one cell (its lobes); parts without nucleus
    (red cells joined to it) are still cut off."""
    a2 = unit * unit
    nucleus = (stain > s.nucleus_od).astype(np.uint8)
    n, frag, stats, _ = cv2.connectedComponentsWithStats(nucleus, connectivity=8)
    keep = stats[:, cv2.CC_STAT_AREA] >= max(s.min_fragment_um2 * a2, 1.0)
    keep[0] = False
    if not keep.any():
        return []
    nucleus = keep[frag].astype(np.uint8)

    # Bodies: cytoplasm map without red-cell rims, plus nuclei with their lobes bridged,
    # no farther from a nucleus than max_rim.
    cyto = (stain > s.cytoplasm_od).astype(np.uint8)
    if extra_body is not None:
        cyto |= extra_body
    if s.rim_open_um > 0:
        cyto = cv2.morphologyEx(cyto, cv2.MORPH_OPEN, _disk(s.rim_open_um * unit / 2.0))
    bridged = cv2.morphologyEx(nucleus, cv2.MORPH_CLOSE, _disk(s.lobe_gap_um * unit / 2.0))
    # Distance to the nearest nucleus (cost independent of max_rim, unlike a dilation).
    gap = cv2.distanceTransform(1 - nucleus, cv2.DIST_L2, 3)
    near = (gap <= s.max_rim_um * unit).astype(np.uint8)
    body = cv2.bitwise_and(cv2.bitwise_or(cyto, bridged), near)
    m, clusters, cstats, _ = cv2.connectedComponentsWithStats(body, connectivity=8)
    nuc_area = np.bincount(clusters[nucleus > 0], minlength=m).astype(np.float64)
    nuc_area[0] = 0.0
    ids = np.flatnonzero(nuc_area >= s.min_nucleus_um2 * a2)
    found = len(ids)
    if found > s.max_candidates:  # a field full of stain debris: keep the largest
        ids = ids[np.argsort(-nuc_area[ids], kind="stable")[: s.max_candidates]]
    out: list[_Work] = []
    for k in ids:
        x, y, w, h = (int(v) for v in cstats[k, :4])
        roi = (slice(y, y + h), slice(x, x + w))
        mask = _fill_holes((clusters[roi] == k).astype(np.uint8))
        nuc = nucleus[roi] & mask
        edges = (y == 0, y + h == stain.shape[0], x == 0, x + w == stain.shape[1])
        parts = _split(mask, nuc, edges, unit, s)
        if one_cell and len(parts) > 1:
            # One cell: the parts holding nucleus are its lobes; the rest (red cells that
            # the absorbance map joined to it) were already dropped by the split.
            whole = np.zeros_like(mask)
            for part, _ in parts:
                whole |= part
            parts = [(whole, nuc & whole)]
        for part, part_nuc in parts:
            area = float(np.count_nonzero(part_nuc))
            if not s.min_nucleus_um2 * a2 <= area <= s.max_nucleus_um2 * a2:
                continue
            od = float(stain[roi][part_nuc > 0].mean())
            score = _score(area / a2, od, s)
            if score < s.min_score:
                continue
            part = _smooth_outline(part, part_nuc, s.outline_open_um * unit / 2.0)
            ys, xs = np.nonzero(part)
            x0, y0, x1, y1 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
            box = (x + int(x0), y + int(y0), x + int(x1), y + int(y1))
            nuc_box = part_nuc[y0:y1, x0:x1] & part[y0:y1, x0:x1]
            out.append(_Work(box, part[y0:y1, x0:x1], nuc_box, area, score))
    found = max(found, len(out))
    if found > s.max_candidates:
        notes.append(f"capped at {s.max_candidates} candidates (the field had {found})")
        out.sort(key=lambda c: -c.score)
        del out[s.max_candidates :]
    return out


def _split(
    mask: np.ndarray,
    nuc: np.ndarray,
    edges: tuple[bool, bool, bool, bool],
    unit: float,
    s: DetectorSettings,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Cut a body cluster into cells at its necks; returns (cell mask, its nucleus) pairs.

    Parts without nucleus (leaks into red cells) are dropped; parts with too little
    nucleus to be a cell are merged into their neighbours. `edges` (top, bottom, left,
    right) says where the cluster reaches the image edge: there the cell goes on beyond
    the picture, so the edge is not treated as the cell's outline.
    """
    top, bottom, left, right = (0 if edge else 1 for edge in edges)
    padded = cv2.copyMakeBorder(mask, top, bottom, left, right, cv2.BORDER_CONSTANT, value=0)
    # OpenCV treats pixels beyond the array as far from any zero: unpadded sides are open.
    dist = cv2.distanceTransform(padded, cv2.DIST_L2, 5)[
        top : top + mask.shape[0], left : left + mask.shape[1]
    ]
    r_min = s.min_cell_radius_um * unit
    peaks = _peaks(dist, r_min, s.waist)
    if len(peaks) <= 1:
        return [(mask, nuc)]
    a2 = unit * unit
    frag_min = max(s.min_fragment_um2 * a2, 1.0)
    h, w = mask.shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    while True:
        # Power diagram of the bodies (each a set of peaks with their inscribed radius):
        # between two overlapping discs its boundary is the chord through their neck.
        power = np.empty((len(peaks), h, w), np.float32)
        for i, points in enumerate(peaks):
            best = None
            for py, px in points:
                r = float(dist[py, px])
                d2 = (yy - py) ** 2 + (xx - px) ** 2 - r * r
                best = d2 if best is None else np.minimum(best, d2)
            power[i] = best
        owner = np.argmin(power, axis=0)
        counts = np.bincount(owner[nuc > 0], minlength=len(peaks))
        small = [i for i, c in enumerate(counts) if frag_min <= c < s.min_nucleus_um2 * a2]
        if not small or len(peaks) == 1:
            break
        weakest = min(small, key=lambda i: counts[i])
        del peaks[weakest]  # merge that part into its neighbours and cut again
    out = []
    for i in range(len(peaks)):
        if counts[i] < frag_min:
            continue  # no nucleus: a leak into a red cell, not a cell
        part = ((owner == i) & (mask > 0)).astype(np.uint8)
        n, lab, st, _ = cv2.connectedComponentsWithStats(part, connectivity=8)
        if n > 2:  # keep the main piece; slivers cut off by the chord are dropped
            part = (lab == 1 + int(np.argmax(st[1:, cv2.CC_STAT_AREA]))).astype(np.uint8)
        out.append((part, nuc & part))
    return out


def _peaks(dist: np.ndarray, r_min: float, waist: float) -> list[list[tuple[int, int]]]:
    """Bodies of a cluster: groups of distance-transform maxima not separated by a neck."""
    local = cv2.dilate(dist, _disk(max(1.5, r_min / 2.0)))
    cand = ((dist >= local) & (dist >= r_min)).astype(np.uint8)
    n, lab, _, _ = cv2.connectedComponentsWithStats(cand, connectivity=8)
    if n <= 2:
        return [[tuple(p)] for p in np.argwhere(cand)[:1]]
    pts = []
    for i in range(1, n):
        ys, xs = np.nonzero(lab == i)
        j = int(np.argmax(dist[ys, xs]))
        pts.append((int(ys[j]), int(xs[j])))
    pts.sort(key=lambda p: -dist[p])
    pts = pts[:32]  # plenty for any real cluster; bounds the pairwise checks
    parent = list(range(len(pts)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    # Merge bodies from the widest connection down (a merge tree): two groups join when the
    # path between them never narrows below `waist` x the smaller group's widest point, so
    # a small maximum sitting in a neck joins one side without bridging both.
    top = [float(dist[p]) for p in pts]
    links = []
    for i in range(len(pts)):
        for j in range(i + 1, len(pts)):
            (y0, x0), (y1, x1) = pts[i], pts[j]
            steps = max(2, int(math.hypot(y1 - y0, x1 - x0)))
            ys = np.rint(np.linspace(y0, y1, steps)).astype(int)
            xs = np.rint(np.linspace(x0, x1, steps)).astype(int)
            links.append((float(dist[ys, xs].min()), i, j))
    links.sort(reverse=True)
    for saddle, i, j in links:
        ri, rj = root(i), root(j)
        if ri != rj and saddle >= waist * min(top[ri], top[rj]):
            parent[rj] = ri
            top[ri] = max(top[ri], top[rj])
    groups: dict[int, list[tuple[int, int]]] = {}
    for i, p in enumerate(pts):
        groups.setdefault(root(i), []).append(p)
    return list(groups.values())


def _score(nucleus_area_um2: float, mean_od: float, s: DetectorSettings) -> float:
    """Confidence from nucleus size (vs the minimum) and stain strength (vs the threshold)."""
    size = 1.0 - math.exp(-2.0 * max(nucleus_area_um2 / s.min_nucleus_um2 - 0.5, 0.0))
    stain = 1.0 - math.exp(-4.0 * max(mean_od / s.nucleus_od - 1.0, 0.0))
    return float(np.clip(size * (0.4 + 0.6 * stain), 0.0, 1.0))


def _smooth_outline(part: np.ndarray, nuc: np.ndarray, radius: float) -> np.ndarray:
    """Open away spurs along red-cell rims; keep the piece holding most nucleus, filled."""
    if radius >= 0.5:
        opened = cv2.morphologyEx(part, cv2.MORPH_OPEN, _disk(radius))
        n, lab = cv2.connectedComponents(opened, connectivity=8)
        if n > 2:
            votes = np.bincount(lab[nuc > 0], minlength=n)
            votes[0] = 0
            opened = (lab == int(np.argmax(votes))).astype(np.uint8)
        if n > 1:
            part = opened | nuc
    # Close notches where pale cytoplasm fell below the threshold (cells are near-convex).
    area = float(np.count_nonzero(part))
    close_r = 0.25 * math.sqrt(area / math.pi)
    if close_r >= 1.0:
        pad = int(close_r) + 2
        big = cv2.copyMakeBorder(part, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=0)
        big = cv2.morphologyEx(big, cv2.MORPH_CLOSE, _disk(close_r))
        part = big[pad:-pad, pad:-pad]
    return _fill_holes(part)


def _fill_holes(mask: np.ndarray) -> np.ndarray:
    """Fill enclosed holes of a 0/1 mask (pale granules, vacuoles, the nucleus-cytoplasm gap)."""
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    out = np.zeros_like(mask)
    cv2.drawContours(out, contours, -1, 1, thickness=cv2.FILLED)
    return out


def _upsample(
    m: np.ndarray, box: tuple[int, int, int, int], factor: float, shape: tuple[int, int]
) -> tuple[np.ndarray, int, int]:
    """A box-local work mask at full resolution (bilinear, >= 0.5), with its (x, y) origin."""
    height, width = shape
    x0, y0, x1, y1 = box
    local = cv2.copyMakeBorder(m.astype(np.float32), 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0.0)
    lx0, ly0 = x0 - 1, y0 - 1  # work coordinates of local[0, 0]
    inv = 1.0 / factor
    fx0, fy0 = max(0, int(math.floor(lx0 * inv))), max(0, int(math.floor(ly0 * inv)))
    fx1 = min(width, int(math.ceil((x1 + 1) * inv)))
    fy1 = min(height, int(math.ceil((y1 + 1) * inv)))
    # Full-res pixel centre X maps to work coordinate (X + 0.5) * factor - 0.5.
    mat = np.array(
        [
            [factor, 0.0, (fx0 + 0.5) * factor - 0.5 - lx0],
            [0.0, factor, (fy0 + 0.5) * factor - 0.5 - ly0],
        ],
        np.float32,
    )
    big = cv2.warpAffine(
        local,
        mat,
        (fx1 - fx0, fy1 - fy0),
        flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=0.0,
    )
    out = big >= 0.5
    if not out.any():  # a one-pixel sliver can vanish; keep its nearest pixel
        out = cv2.resize(m, (fx1 - fx0, fy1 - fy0), interpolation=cv2.INTER_NEAREST).astype(bool)
    return out, fx0, fy0


def _to_full(
    c: _Work, factor: float, shape: tuple[int, int], um_per_px: float | None = None
) -> DetectedCell:
    """Bring a work-resolution cell to full resolution (bilinear masks, tight box)."""
    height, width = shape
    x0, y0 = c.box[:2]
    if factor == 1.0:
        mask, nuc = c.mask.astype(bool), c.nucleus.astype(bool)
        fx0, fy0 = x0, y0
    else:
        mask, fx0, fy0 = _upsample(c.mask, c.box, factor, shape)
        nuc, _, _ = (
            _upsample(c.nucleus, c.box, factor, shape)
            if c.nucleus.any()
            else (np.zeros_like(mask), 0, 0)
        )
    ys, xs = np.nonzero(mask)
    bx0, by0, bx1, by1 = int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1
    mask = np.ascontiguousarray(mask[by0:by1, bx0:bx1])
    nuc = np.ascontiguousarray(nuc[by0:by1, bx0:bx1] & mask)
    box = (fx0 + bx0, fy0 + by0, fx0 + bx1, fy0 + by1)
    border = bool(
        (box[0] == 0 and mask[:, 0].any())
        or (box[1] == 0 and mask[0, :].any())
        or (box[2] == width and mask[:, -1].any())
        or (box[3] == height and mask[-1, :].any())
    )
    nucleus_area = int(round(c.nucleus_area / (factor * factor)))
    return DetectedCell(
        box, mask, int(mask.sum()), nucleus_area, border, round(c.score, 4), nuc, um_per_px
    )


# --------------------------------------------------------------------------------------------
# Cropping and format check
# --------------------------------------------------------------------------------------------


def crop_cell(
    rgb: np.ndarray, cell: DetectedCell, size: int = 450, fill: float = CROP_FILL
) -> np.ndarray:
    """The cell alone on pure black, centred in a size x size frame, as C-NMC ships cells.

    Scale rule: the mask's smallest enclosing circle is centred and scaled to span `fill` of
    the frame (0.55 by default, the C-NMC average), so every crop shows its cell at the same
    apparent size whatever the camera resolution; absolute size is kept in `cell.area`.
    Pixels inside the mask are at least 1, so only the background is exactly black.
    """
    _check_rgb(rgb)
    if not isinstance(size, int) or isinstance(size, bool) or size < 8:
        raise ValueError(f"size must be an integer >= 8, not {size!r}")
    if not _is_number(fill) or not 0.0 < fill <= 1.0:
        raise ValueError(f"fill must be within (0, 1], not {fill!r}")
    x0, y0, x1, y1 = cell.box
    if not (0 <= x0 < x1 <= rgb.shape[1] and 0 <= y0 < y1 <= rgb.shape[0]):
        raise ValueError(f"the cell's box {cell.box} lies outside the {rgb.shape[:2]} image")
    mask = cell.mask.astype(np.uint8)
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    (cx, cy), radius = cv2.minEnclosingCircle(np.concatenate(contours))
    scale = fill * size / max(2.0 * radius, 1.0)
    w, h = x1 - x0, y1 - y0
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    shrink = scale < 1.0
    patch = cv2.resize(
        rgb[y0:y1, x0:x1], (nw, nh), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
    )
    pmask = cv2.resize(mask * 255, (nw, nh), interpolation=cv2.INTER_LINEAR) >= 128
    # Paste so that the circle centre lands on the frame centre; clip what falls outside.
    ox = int(round(size / 2.0 - (cx + 0.5) * scale))
    oy = int(round(size / 2.0 - (cy + 0.5) * scale))
    out = np.zeros((size, size, 3), np.uint8)
    sx0, sy0 = max(0, -ox), max(0, -oy)
    dx0, dy0 = max(0, ox), max(0, oy)
    cw, ch = min(nw - sx0, size - dx0), min(nh - sy0, size - dy0)
    if cw > 0 and ch > 0:
        src = patch[sy0 : sy0 + ch, sx0 : sx0 + cw]
        keep = pmask[sy0 : sy0 + ch, sx0 : sx0 + cw]
        lifted = cv2.max(src, (1, 1, 1, 0))
        out[dy0 : dy0 + ch, dx0 : dx0 + cw] = cv2.bitwise_and(
            lifted, lifted, mask=keep.astype(np.uint8)
        )
    return out


def looks_like_single_cell(rgb: np.ndarray) -> bool:
    """True for a C-NMC-style crop (one central object on black), False for a smear field.

    Lets the app route an image: crops go straight to the classifier, fields go through
    `detect_cells` first. Criteria, on every k-th pixel (<= 128 px a side): at least 25 %
    near-black pixels (C-NMC: 76-86 %), a frame edge that is mostly black, and one object
    (>= 80 % of the non-black pixels) whose centre lies in the middle half of the frame.
    """
    _check_rgb(rgb)
    h, w = rgb.shape[:2]
    # Every k-th pixel (a strided view, no copy): this runs on every analyzed image in the
    # decoder thread, where an INTER_AREA resize alone cost half a millisecond.
    step = max(1, int(np.ceil(max(h, w) / 128.0)))
    small = rgb[::step, ::step]
    sh, sw = small.shape[:2]
    if min(sh, sw) < 4:
        return False
    lit = (small.max(axis=2) > 24).astype(np.uint8)  # JPEG noise on black stays below ~20
    n_lit = int(lit.sum())
    if n_lit > 0.75 * lit.size or n_lit < 0.01 * lit.size:
        return False
    edge = np.concatenate([lit[0], lit[-1], lit[:, 0], lit[:, -1]])
    if edge.mean() > 0.2:
        return False
    n, _, stats, centroids = cv2.connectedComponentsWithStats(lit, connectivity=8)
    biggest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    if stats[biggest, cv2.CC_STAT_AREA] < 0.8 * n_lit:
        return False
    cx, cy = centroids[biggest]
    return bool(abs(cx - sw / 2.0) <= 0.25 * sw and abs(cy - sh / 2.0) <= 0.25 * sh)


# --------------------------------------------------------------------------------------------
# Synthetic smear fields (tests and demos without real data)
# --------------------------------------------------------------------------------------------

# Optical density of red cells (eosin-stained haemoglobin: absorbs green, some blue) and
# platelets (purple granulomere), per RGB channel.
_OD_RBC = np.array([0.09, 0.32, 0.22], np.float32)
_OD_PLATELET = np.array([0.45, 0.75, 0.25], np.float32)


def make_synthetic_field(
    seed: int,
    size: tuple[int, int] = REFERENCE_SHAPE,
    n_wbc: int = 2,
    n_rbc: int = 60,
    n_platelets: int = 8,
    um_per_px: float | None = None,
) -> tuple[np.ndarray, list[tuple[int, int, int, int]]]:
    """A stained smear field with known white cells: (RGB image, true WBC boxes).

    White cells are `leukgui.core.synthetic` cells (lymphocyte- / blast-like) 7-18 µm
    across, never overlapping each other; red cells are pale pink 6.4-8.6 µm discs with a
    central pallor that may overlap; platelets are small purple dots. Mild blur and noise
    follow. `um_per_px` sets the magnification (red cells 7.5 µm / um_per_px px across);
    None keeps the field of view of a 640 x 480 field at `SYNTHETIC_UM_PER_PX` whatever
    `size` is, with red cells placed freely (they may pile up); with `um_per_px` they
    barely overlap, as in the monolayer where smears are read. Boxes are (x0, y0, x1, y1),
    exclusive ends, clipped to the image. Lets every test run without the real data set.
    """
    height, width = size
    if height < 64 or width < 64:
        raise ValueError(f"size must be at least 64 x 64, not {size}")
    for name, value in (("n_wbc", n_wbc), ("n_rbc", n_rbc), ("n_platelets", n_platelets)):
        if not isinstance(value, int) or value < 0:
            raise ValueError(f"{name} must be an integer >= 0, not {value!r}")
    rng = np.random.default_rng(seed)
    if um_per_px is None:
        scale = math.sqrt(height * width / (REFERENCE_SHAPE[0] * REFERENCE_SHAPE[1]))
    else:
        scale = SYNTHETIC_UM_PER_PX / check_um_per_px(um_per_px)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)

    # Background: near-white light with a slow illumination gradient (optical density 0).
    od = np.zeros((height, width, 3), np.float32)
    rbc_r = 37.0 * scale
    centres: list[tuple[float, float]] = []
    for _ in range(n_rbc):
        cx, cy = rng.uniform(-rbc_r, width + rbc_r), rng.uniform(-rbc_r, height + rbc_r)
        if um_per_px is not None:  # the monolayer: red cells touch but barely overlap
            for _try in range(30):
                if all((cx - a) ** 2 + (cy - b) ** 2 >= (1.7 * rbc_r) ** 2 for a, b in centres):
                    break
                cx = rng.uniform(-rbc_r, width + rbc_r)
                cy = rng.uniform(-rbc_r, height + rbc_r)
            else:
                continue
            centres.append((cx, cy))
        r = rbc_r * rng.uniform(0.85, 1.15)
        x0, x1 = max(0, int(cx - r - 2)), min(width, int(cx + r + 3))
        y0, y1 = max(0, int(cy - r - 2)), min(height, int(cy + r + 3))
        if x0 >= x1 or y0 >= y1:
            continue
        d = np.sqrt((xx[y0:y1, x0:x1] - cx) ** 2 + (yy[y0:y1, x0:x1] - cy) ** 2) / r
        disc = np.clip((1.0 - d) * r / 1.5, 0.0, 1.0)  # ~1.5 px soft edge
        pallor = 1.0 - rng.uniform(0.35, 0.6) * np.exp(-((d / 0.45) ** 2))
        amount = disc * pallor * rng.uniform(0.8, 1.2)
        od[y0:y1, x0:x1] += amount[..., None] * _OD_RBC
    for _ in range(n_platelets):
        cx, cy = rng.uniform(0, width), rng.uniform(0, height)
        r = rng.uniform(3.0, 6.0) * scale
        blob = np.exp(-((((xx - cx) ** 2 + (yy - cy) ** 2) / (r * r)) ** 2))
        od += blob[..., None] * _OD_PLATELET * rng.uniform(0.6, 1.0)
    light = np.array([rng.uniform(222, 240), rng.uniform(220, 236), rng.uniform(215, 232)])
    tilt = (
        1.0
        + rng.uniform(-0.04, 0.04) * (xx / width - 0.5)
        + rng.uniform(-0.04, 0.04) * (yy / height - 0.5)
    )
    field = np.exp(-od) * light.astype(np.float32) * tilt[..., None]

    boxes: list[tuple[int, int, int, int]] = []
    placed: list[tuple[float, float, float]] = []
    for _ in range(n_wbc):
        frame = int(round(rng.uniform(200, 260) * scale)) // 2 * 2
        cell = make_cell(ALL if rng.random() < 0.5 else HEM, rng, max(frame, 32))
        ys, xs = np.nonzero(cell.mask)
        cy0, cy1, cx0, cx1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
        ch, cw = cy1 - cy0, cx1 - cx0
        radius = max(ch, cw) / 2.0
        for _attempt in range(200):  # rejection sampling: white cells never overlap
            px = float(rng.uniform(0, max(1, width - cw)))
            py = float(rng.uniform(0, max(1, height - ch)))
            ccx, ccy = px + cw / 2.0, py + ch / 2.0
            if all(math.hypot(ccx - a, ccy - b) > radius + r + 4 for a, b, r in placed):
                break
        else:
            continue  # no room left for another white cell
        placed.append((ccx, ccy, radius))
        X0, Y0 = int(px), int(py)
        X1, Y1 = min(width, X0 + cw), min(height, Y0 + ch)
        m = cell.mask[cy0 : cy0 + (Y1 - Y0), cx0 : cx0 + (X1 - X0)]
        pix = cell.image[cy0 : cy0 + (Y1 - Y0), cx0 : cx0 + (X1 - X0)].astype(np.float32)
        region = field[Y0:Y1, X0:X1]
        # The cell lies on top: its transmittance times the local light (red cells hidden).
        lamp = light.astype(np.float32) * tilt[Y0:Y1, X0:X1, None]
        region[m] = (pix / 255.0 * lamp)[m]
        my, mx = np.nonzero(m)
        boxes.append(
            (X0 + int(mx.min()), Y0 + int(my.min()), X0 + int(mx.max()) + 1, Y0 + int(my.max()) + 1)
        )

    field = cv2.GaussianBlur(field, (0, 0), 0.8 * scale)
    field += rng.standard_normal(field.shape, dtype=np.float32) * 2.0
    return np.clip(field, 0, 255).astype(np.uint8), boxes
