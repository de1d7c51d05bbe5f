"""Seeded generator of C-NMC-like single white-blood-cell images (ALL blast vs HEM normal).

Real C-NMC 2019 cells cannot be redistributed, yet the app needs bundled samples, the tests
need images and the demo CNN needs thousands of labelled cells. These synthetic cells imitate
the C-NMC format (450x450 RGB, one segmented cell on a pure black background) and the
morphology a haematologist looks at:

* ALL (lymphoblast): larger cell, nucleus ~80-90 % of the cell with a thin pale rim of
  cytoplasm, fine open lighter chromatin, 1-3 pale nucleoli, notched / lobulated contour.
* HEM (mature lymphocyte): smaller cell, round smooth nucleus ~60-75 % of the cell with a
  wider (often eccentric) cytoplasm, coarse clumped darker chromatin, no nucleoli.

Both classes get per-image stain (hue / saturation / brightness), illumination, blur and
noise jitter, and their sizes overlap, so a classifier has to combine several cues.
They are a stand-in for demos and tests only, never for validating a diagnostic model.

A `Shift` (opt-in; the named preset "lab-b") draws the same cells as another laboratory would
show them: a stain hue and density outside the default jitter and larger cells (another
magnification / scanner). `benchmarks/bench_learn.py` uses it to check that fine-tuning on
reviewed cells from such a lab helps. Without a shift the output is unchanged, byte for byte.

Run ``python -m leukgui.core.synthetic --help`` to write a data set from the command line.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from leukgui.core.results import ALL, HEM

REFERENCE_SIZE = 450  # C-NMC frame size; all pixel constants below are at this scale
FORMATS = ("bmp", "png", "jpg")
LAYOUTS = ("folders", "cnmc")
CELLS_PER_IMAGE = 2  # synthetic C-NMC names put up to this many cells on one "image" number

_CUBIC_STD_GAIN = 0.86  # std of bicubically upsampled unit white noise (measured)
_N_ANGLES = 360
_THETA = np.linspace(0.0, 2.0 * np.pi, _N_ANGLES, endpoint=False)
_COS = np.cos(_THETA)
_SIN = np.sin(_THETA)

# Optical density (Beer-Lambert, per RGB channel) of one unit of stain. Nuclear chromatin
# stains purple (absorbs green most); cytoplasm is a pale lavender-blue.
_OD_NUCLEUS = np.array([1.25, 2.25, 1.05], dtype=np.float32)  # density 1 -> RGB ~(73,27,89)
_OD_CYTOPLASM = np.array([0.78, 1.08, 0.60], dtype=np.float32)  # density 1 -> ~(117,87,140)


@dataclass(frozen=True)
class Shift:
    """A systematic difference between labs, applied on top of the per-image jitter.

    `hue_deg` is added to the stain hue rotation (default jitter +-14 deg), `density` scales
    the optical density of both stains (a heavier or lighter stain), and every cell's diameter
    is multiplied by a factor drawn from `size` (a scanner at another magnification). The
    preset "lab-b" puts hue and size entirely outside the default ranges.
    """

    hue_deg: float = 0.0
    density: float = 1.0
    size: tuple[float, float] = (1.0, 1.0)

    def __post_init__(self) -> None:
        if not 0.0 < self.density <= 3.0:
            raise ValueError(f"density must be within (0, 3], not {self.density}")
        lo, hi = self.size
        if not 0.3 <= lo <= hi <= 3.0:
            raise ValueError(f"size must be a range within [0.3, 3], not {self.size}")


# Another lab: the stain 60 deg further round the hue circle (46-74 deg against the default
# +-14 deg: purple nuclei turn magenta-red), a lighter stain (0.75x the optical density, as
# after a shorter staining: pale, blast-like chromatin in both classes) and cells 1.3-1.5x
# larger (another magnification: HEM cells then have ALL sizes). Measured: the demo model's
# balanced accuracy falls from 100 % to about 56 % on such cells (benchmarks/bench_learn.py).
SHIFTS: dict[str, Shift] = {"lab-b": Shift(hue_deg=60.0, density=0.75, size=(1.3, 1.5))}


def get_shift(shift: Shift | str | None) -> Shift | None:
    """A Shift from itself, a preset name (see SHIFTS) or None (no shift)."""
    if shift is None or isinstance(shift, Shift):
        return shift
    try:
        return SHIFTS[str(shift)]
    except KeyError:
        raise ValueError(f"unknown shift {shift!r}; presets: {', '.join(SHIFTS)}") from None


@dataclass(frozen=True)
class SyntheticCell:
    """One synthetic segmented cell, as C-NMC ships them: the cell on pure black."""

    image: np.ndarray  # HxWx3 RGB uint8, cell on pure black (0,0,0) background
    mask: np.ndarray  # HxW bool, True on the cell (cytoplasm + nucleus), False on background
    label: str  # "ALL" or "HEM"


@dataclass(frozen=True)
class _Morphology:
    """Per-class ranges; the ALL and HEM ranges overlap only partly (sizes) or not at all."""

    diameter: tuple[float, float]  # equivalent cell diameter, px at 450
    nucleus_fraction: tuple[float, float]  # nucleus area / cell area
    aspect: tuple[float, float]  # minor/major axis of the base ellipse
    harmonic_amp: float  # std of the low-order contour harmonics (lobulation)
    eccentricity: tuple[float, float]  # how one-sided the cytoplasm rim is
    nucleus_density: tuple[float, float]  # mean chromatin stain density
    clump_strength: tuple[float, float]  # coarse dark chromatin blotches
    fine_strength: tuple[float, float]  # fine-grained chromatin texture


_ALL_MORPH = _Morphology(
    diameter=(205.0, 320.0),
    nucleus_fraction=(0.80, 0.90),
    aspect=(0.82, 1.0),
    harmonic_amp=0.035,
    eccentricity=(0.0, 0.5),
    nucleus_density=(0.84, 1.04),
    clump_strength=(0.0, 0.04),
    fine_strength=(0.04, 0.08),
)
_HEM_MORPH = _Morphology(
    diameter=(150.0, 245.0),
    nucleus_fraction=(0.60, 0.75),
    aspect=(0.88, 1.0),
    harmonic_amp=0.010,
    eccentricity=(0.2, 0.7),
    nucleus_density=(1.04, 1.24),
    clump_strength=(0.22, 0.36),
    fine_strength=(0.03, 0.05),
)


def _wrap(angle: np.ndarray) -> np.ndarray:
    """Angle difference folded into [-pi, pi)."""
    return (angle + np.pi) % (2.0 * np.pi) - np.pi


def _bump(rng: np.random.Generator, width: tuple[float, float]) -> np.ndarray:
    """A Gaussian bump over the contour angles at a random position (unit height)."""
    centre = rng.uniform(0.0, 2.0 * np.pi)
    w = rng.uniform(*width)
    return np.exp(-0.5 * (_wrap(_THETA - centre) / w) ** 2)


def _smooth_circular(values: np.ndarray, half_width: int) -> np.ndarray:
    """Moving average of a closed contour, so the cytoplasm bridges narrow nuclear clefts."""
    k = 2 * half_width + 1
    padded = np.concatenate([values[-half_width:], values, values[:half_width]])
    return np.convolve(padded, np.ones(k) / k, mode="valid")


def _contours(
    label: str,
    morph: _Morphology,
    rng: np.random.Generator,
    scale: float,
    size_factor: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Polar radii (px) of the nucleus and of the whole cell, around the nucleus centre."""
    aspect = rng.uniform(*morph.aspect)
    phi = rng.uniform(0.0, np.pi)
    base = 1.0 / np.sqrt(np.cos(_THETA - phi) ** 2 + (np.sin(_THETA - phi) / aspect) ** 2)
    shape = np.ones(_N_ANGLES)
    for k in range(2, 7 if label == ALL else 5):
        amp = rng.normal(0.0, morph.harmonic_amp) / math.sqrt(k - 1)
        shape += amp * np.cos(k * _THETA + rng.uniform(0.0, 2.0 * np.pi))
    if label == ALL:
        # Irregular blast nucleus: one or two broad notches, sometimes a narrow deep cleft.
        for _ in range(rng.integers(1, 3)):
            shape *= 1.0 - rng.uniform(0.10, 0.26) * _bump(rng, (0.18, 0.45))
        if rng.random() < 0.4:
            shape *= 1.0 - rng.uniform(0.22, 0.40) * _bump(rng, (0.035, 0.07))
    nucleus_shape = base * shape

    fraction = rng.uniform(*morph.nucleus_fraction)
    diameter = rng.uniform(*morph.diameter) * scale * size_factor
    cell_r2 = (diameter / 2.0) ** 2  # mean squared radius of the cell contour
    r_n = nucleus_shape * math.sqrt(fraction * cell_r2 / np.mean(nucleus_shape**2))

    # Cytoplasm rim: thicker on one side (eccentric nucleus); solve its mean width so that
    # mean(r_cell^2) hits the target cell area, i.e. the nucleus fraction is what we drew.
    ecc = rng.uniform(*morph.eccentricity)
    rho = 1.0 + ecc * np.cos(_THETA - rng.uniform(0.0, 2.0 * np.pi))
    rho *= 1.0 + 0.15 * rng.standard_normal() * np.cos(3 * _THETA + rng.uniform(0, 2 * np.pi))
    rho = np.maximum(rho, 0.2)
    outer = _smooth_circular(r_n, 12)
    a = np.mean(rho**2)
    b = 2.0 * np.mean(outer * rho)
    c = np.mean(outer**2) - cell_r2
    rim = (-b + math.sqrt(max(b * b - 4.0 * a * c, 0.0))) / (2.0 * a)
    rim = max(rim, 2.5 * scale)
    r_c = np.maximum(outer + rim * rho, r_n + 0.4 * rim * rho)
    # Small cytoplasmic blebs / segmentation nicks, as C-NMC masks have, in both classes.
    if rng.random() < 0.35:
        for _ in range(rng.integers(1, 4)):
            r_c += rng.uniform(3.0, 7.0) * scale * _bump(rng, (0.025, 0.06))
    return r_n, r_c


def _noise(rng: np.random.Generator, h: int, w: int, grain: float) -> np.ndarray:
    """Smooth, roughly zero-mean unit-std noise field (h x w) with blobs ~`grain` px across."""
    grain = max(grain, 1.5)
    gh, gw = max(2, int(round(h / grain))) + 1, max(2, int(round(w / grain))) + 1
    small = rng.standard_normal((gh, gw), dtype=np.float32)
    field = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
    return field * np.float32(1.0 / _CUBIC_STD_GAIN)


def _stain_matrix(rng: np.random.Generator, hue_offset_deg: float = 0.0) -> np.ndarray:
    """Per-image stain jitter: hue rotation, saturation and brightness as one 3x3 matrix."""
    angle = math.radians(rng.uniform(-14.0, 14.0) + hue_offset_deg)
    cos_a, sin_a = math.cos(angle), math.sin(angle)
    skew = np.array([[0.0, -1.0, 1.0], [1.0, 0.0, -1.0], [-1.0, 1.0, 0.0]])
    hue = cos_a * np.eye(3) + (1.0 - cos_a) / 3.0 * np.ones((3, 3)) + sin_a / math.sqrt(3) * skew
    sat = rng.uniform(0.8, 1.2)
    luma = np.tile(np.array([0.299, 0.587, 0.114]), (3, 1))
    saturation = sat * np.eye(3) + (1.0 - sat) * luma
    brightness = rng.uniform(0.85, 1.15)
    return (brightness * saturation @ hue).astype(np.float32)


def make_cell(
    label: str, rng: np.random.Generator, size: int = 450, shift: Shift | str | None = None
) -> SyntheticCell:
    """Draw one ALL-like or HEM-like cell, centred in a `size` x `size` black frame.

    All randomness comes from `rng`, so a seeded generator reproduces the cell exactly.
    `shift` (a Shift or a preset name) draws the cell as another lab would show it; without
    one no extra random number is drawn, so unshifted cells are exactly as before.
    """
    shift = get_shift(shift)
    if label not in (ALL, HEM):
        raise ValueError(f"label must be {ALL!r} or {HEM!r}, not {label!r}")
    if size < 32:
        raise ValueError(f"size must be at least 32 px, not {size}")
    scale = size / REFERENCE_SIZE
    morph = _ALL_MORPH if label == ALL else _HEM_MORPH

    # --- geometry: nucleus and cell outlines, centred with a small random offset ---------
    size_factor = 1.0 if shift is None else float(rng.uniform(*shift.size))
    r_n, r_c = _contours(label, morph, rng, scale, size_factor)
    cell_pts = np.stack([r_c * _COS, r_c * _SIN], axis=1)
    nuc_pts = np.stack([r_n * _COS, r_n * _SIN], axis=1)
    # Place the cell's area centroid (not the nucleus) at the jittered frame centre, and
    # shrink the rare cell that would otherwise reach the frame edge.
    cx = size / 2.0 + float(np.clip(rng.normal(0.0, 0.02 * size), -0.05 * size, 0.05 * size))
    cy = size / 2.0 + float(np.clip(rng.normal(0.0, 0.02 * size), -0.05 * size, 0.05 * size))
    centroid = _polygon_centroid(cell_pts)
    cell_pts -= centroid
    nuc_pts -= centroid
    room = min(cx, cy, size - cx, size - cy) - 3.0
    factor = min(1.0, room / float(np.abs(cell_pts).max()))
    cell_pts = cell_pts * factor + (cx, cy)
    nuc_pts = nuc_pts * factor + (cx, cy)
    r_n = r_n * factor
    nucleus_centre = (cx - centroid[0] * factor, cy - centroid[1] * factor)
    # Render only the cell's bounding box (plus a margin for blur); the rest stays black.
    lo = np.floor(np.minimum(cell_pts.min(axis=0), nuc_pts.min(axis=0))).astype(int) - 4
    hi = np.ceil(cell_pts.max(axis=0)).astype(int) + 5
    x0, y0 = max(int(lo[0]), 0), max(int(lo[1]), 0)
    x1, y1 = min(int(hi[0]), size), min(int(hi[1]), size)
    h, w = y1 - y0, x1 - x0
    origin = np.array([x0, y0], dtype=np.float64)
    cell_u8 = np.zeros((h, w), np.uint8)
    cv2.fillPoly(cell_u8, [np.round((cell_pts - origin) * 16).astype(np.int32)], 255, 8, 4)
    nuc_u8 = np.zeros((h, w), np.uint8)
    cv2.fillPoly(nuc_u8, [np.round((nuc_pts - origin) * 16).astype(np.int32)], 255, 8, 4)
    nucleus = cv2.GaussianBlur(
        nuc_u8.astype(np.float32) * (1.0 / 255.0), (0, 0), rng.uniform(1.0, 2.2) * scale
    )

    # --- chromatin density map -------------------------------------------------------
    density = _noise(rng, h, w, rng.uniform(3.5, 5.5) * scale)
    density *= rng.uniform(*morph.fine_strength)
    density += rng.uniform(*morph.nucleus_density)
    coarse = _noise(rng, h, w, rng.uniform(11.0, 18.0) * scale)
    medium = _noise(rng, h, w, rng.uniform(6.0, 9.0) * scale)
    if label == HEM:
        # Coarse, clumped heterochromatin: dark blotches plus a dark nuclear membrane band.
        blotch = coarse + 0.6 * medium - rng.uniform(0.0, 0.6)
        clumps = 0.5 + 0.5 * np.tanh(1.2 * blotch)
        density += rng.uniform(*morph.clump_strength) * clumps
        inside = cv2.distanceTransform(nuc_u8, cv2.DIST_L2, 3)
        density += rng.uniform(0.08, 0.18) * np.exp(inside * (-1.0 / (6.0 * scale)))
    else:
        # Open, even chromatin: only a faint lacy variation, plus pale nucleoli.
        density += rng.uniform(0.03, 0.06) * medium
        density += rng.uniform(*morph.clump_strength) * coarse
        centre = (nucleus_centre[0] - x0, nucleus_centre[1] - y0)
        density -= _nucleoli(rng, (h, w), centre, r_n, scale)
    density += 0.04 * _noise(rng, h, w, 45.0 * scale)  # slow variation across the nucleus

    cyto_density = rng.uniform(0.8, 1.25) + 0.06 * coarse
    # Beer-Lambert: optical densities of nucleus and cytoplasm add, transmitted light is exp(-OD).
    nuc_part = cv2.merge([nucleus * density] * 3) * _OD_NUCLEUS
    cyto_part = cv2.merge([(1.0 - nucleus) * cyto_density] * 3) * _OD_CYTOPLASM
    if shift is not None and shift.density != 1.0:
        nuc_part *= np.float32(shift.density)
        cyto_part *= np.float32(shift.density)
    rgb = cv2.exp(-(nuc_part + cyto_part)) * 255.0

    # --- stain, illumination, optics, sensor -------------------------------------------
    rgb = cv2.transform(rgb, _stain_matrix(rng, 0.0 if shift is None else shift.hue_deg))
    alpha = rng.uniform(0.0, 2.0 * np.pi)
    gain = rng.uniform(0.02, 0.10) / (0.35 * size)
    xs = (np.arange(x0, x1, dtype=np.float32) - cx) * (gain * math.cos(alpha))
    ys = (np.arange(y0, y1, dtype=np.float32) - cy) * (gain * math.sin(alpha))
    rgb *= (1.0 + ys[:, None] + xs[None, :])[..., None]
    rgb = cv2.GaussianBlur(rgb, (0, 0), rng.uniform(0.8, 1.6) * max(scale, 0.5))
    rgb += rng.standard_normal((h, w, 3), dtype=np.float32) * np.float32(rng.uniform(1.0, 3.0))
    crop_mask = cell_u8 > 0
    crop = np.clip(rgb, 1.0, 255.0).astype(np.uint8)  # never pure black inside the cell
    crop[~crop_mask] = 0
    image = np.zeros((size, size, 3), np.uint8)
    image[y0:y1, x0:x1] = crop
    mask = np.zeros((size, size), bool)
    mask[y0:y1, x0:x1] = crop_mask
    return SyntheticCell(image=image, mask=mask, label=label)


def _polygon_centroid(points: np.ndarray) -> np.ndarray:
    """Area centroid of a closed polygon (shoelace formula)."""
    x, y = points[:, 0], points[:, 1]
    x1, y1 = np.roll(x, -1), np.roll(y, -1)
    cross = x * y1 - x1 * y
    area = cross.sum() / 2.0
    return np.array([((x + x1) * cross).sum(), ((y + y1) * cross).sum()]) / (6.0 * area)


def _nucleoli(
    rng: np.random.Generator,
    shape: tuple[int, int],
    centre: tuple[float, float],
    r_n: np.ndarray,
    scale: float,
) -> np.ndarray:
    """Paleness map of 1-3 nucleoli: pale round spots with a thin darker chromatin ring."""
    layer = np.zeros(shape, np.float32)
    cx, cy = centre
    r_min = float(r_n.min())
    for _ in range(rng.integers(1, 4)):
        dist = rng.uniform(0.0, 0.5) * r_min
        ang = rng.uniform(0.0, 2.0 * np.pi)
        spot = (int(round(cx + dist * math.cos(ang))), int(round(cy + dist * math.sin(ang))))
        ra = max(2, int(round(rng.uniform(0.06, 0.11) * r_min)))
        rb = max(2, int(round(ra * rng.uniform(0.75, 1.0))))
        tilt = float(rng.uniform(0.0, 180.0))
        ring = max(1, int(round(2 * scale)))
        cv2.ellipse(layer, spot, (ra + ring, rb + ring), tilt, 0, 360, -0.45, ring)
        cv2.ellipse(layer, spot, (ra, rb), tilt, 0, 360, 1.0, -1)
    blur = max(0.8, rng.uniform(1.2, 2.2) * scale)
    return rng.uniform(0.30, 0.42) * cv2.GaussianBlur(layer, (0, 0), blur)


def nucleus_fraction(image: np.ndarray, mask: np.ndarray) -> float:
    """Estimate nucleus area / cell area from the pixels, as a microscopist would by eye.

    The nucleus is the dark-stained region inside the mask (Otsu threshold on grey level
    within the cell), holes such as pale nucleoli filled. Used by tests and benchmarks to
    check that the classes really differ in nucleus-to-cytoplasm ratio.
    """
    cell = mask.astype(bool)
    if not cell.any():
        return 0.0
    grey = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY)
    values = grey[cell].reshape(1, -1)
    threshold, _ = cv2.threshold(values, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    dark = ((grey <= threshold) & cell).astype(np.uint8)
    contours, _ = cv2.findContours(dark, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    filled = np.zeros_like(dark)
    cv2.drawContours(filled, contours, -1, 1, thickness=cv2.FILLED)
    return float((filled.astype(bool) & cell).sum() / cell.sum())


def generate_cells(
    n: int,
    seed: int,
    all_fraction: float = 0.5,
    size: int = 450,
    shift: Shift | str | None = None,
) -> Iterator[SyntheticCell]:
    """Yield `n` cells, exactly round(n * all_fraction) of them ALL, in a seeded shuffled order.

    Each cell has its own child random stream, so the output is identical for a given seed
    however the caller consumes it. `shift` (a Shift or a preset name such as "lab-b") draws
    the cells as another lab would show them; None keeps the default distribution.
    """
    shift = get_shift(shift)
    if n < 0:
        raise ValueError(f"n must be >= 0, not {n}")
    if not 0.0 <= all_fraction <= 1.0:
        raise ValueError(f"all_fraction must be within [0, 1], not {all_fraction}")
    n_all = int(round(n * all_fraction))
    labels = np.array([ALL] * n_all + [HEM] * (n - n_all))
    root = np.random.SeedSequence(seed)
    order_seq, cells_seq = root.spawn(2)
    np.random.default_rng(order_seq).shuffle(labels)
    for label, child in zip(labels, cells_seq.spawn(n), strict=True):
        yield make_cell(str(label), np.random.default_rng(child), size, shift)


def _encode(image: np.ndarray, fmt: str) -> bytes:
    """Encode an RGB image in memory (cv2.imwrite cannot write non-ASCII paths on Windows)."""
    params = [cv2.IMWRITE_JPEG_QUALITY, 95] if fmt == "jpg" else []
    ok, buf = cv2.imencode(f".{fmt}", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), params)
    if not ok:
        raise OSError(f"OpenCV could not encode a {fmt} image")
    return buf.tobytes()


def write_dataset(
    folder: Path,
    n_per_class: int,
    seed: int,
    *,
    fmt: str = "bmp",
    layout: str = "folders",
    subjects: int = 2,
    size: int = 450,
    shift: Shift | str | None = None,
    first_subject: int = 1,
) -> list[Path]:
    """Write `n_per_class` ALL and HEM cells under folder/all and folder/hem.

    layout "folders": plain names (syn_all_0001.png); truth comes from the folder name.
    layout "cnmc": C-NMC style names UID_<subject>_<image>_<cell>_<all|hem>.<ext> with
    synthetic subjects P1..Pn (ALL patients) and H1..Hn (healthy donors), spread round-robin;
    purely numeric subject ids are left to real C-NMC data. `first_subject` numbers them from
    another start (P9.., H9..), so two sets can hold different people. `shift` draws the
    cells as another lab would show them (see `Shift`). Returns the paths written.
    """
    fmt = fmt.lower().lstrip(".")
    if fmt == "jpeg":
        fmt = "jpg"
    if fmt not in FORMATS:
        raise ValueError(f"fmt must be one of {FORMATS}, not {fmt!r}")
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, not {layout!r}")
    if subjects < 1:
        raise ValueError(f"subjects must be >= 1, not {subjects}")
    if n_per_class < 0:
        raise ValueError(f"n_per_class must be >= 0, not {n_per_class}")
    if first_subject < 1:
        raise ValueError(f"first_subject must be >= 1, not {first_subject}")
    folder = Path(folder)
    for sub in ("all", "hem"):
        (folder / sub).mkdir(parents=True, exist_ok=True)

    width = max(4, len(str(n_per_class)))
    counters = {ALL: 0, HEM: 0}
    written: list[Path] = []
    for cell in generate_cells(2 * n_per_class, seed, 0.5, size, shift):
        index = counters[cell.label]
        counters[cell.label] += 1
        tag = cell.label.lower()
        if layout == "folders":
            name = f"syn_{tag}_{index + 1:0{width}d}.{fmt}"
        else:
            prefix = "P" if cell.label == ALL else "H"
            subject = f"{prefix}{index % subjects + first_subject}"
            k = index // subjects  # k-th cell of this subject
            image_no, cell_no = k // CELLS_PER_IMAGE + 1, k % CELLS_PER_IMAGE + 1
            name = f"UID_{subject}_{image_no}_{cell_no}_{tag}.{fmt}"
        path = folder / tag / name
        path.write_bytes(_encode(cell.image, fmt))
        written.append(path)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point: write a synthetic data set to OUT_DIR."""
    parser = argparse.ArgumentParser(
        prog="python -m leukgui.core.synthetic",
        description=(
            "Write synthetic C-NMC-like single-cell images (ALL blasts and HEM normal cells "
            "on a black background) for demos, tests and demo-model training. "
            "Not real patient data and not for validating a diagnostic model."
        ),
    )
    parser.add_argument("out_dir", metavar="OUT_DIR", type=Path, help="output folder")
    parser.add_argument(
        "--per-class", type=int, default=50, metavar="N", help="cells per class (default 50)"
    )
    parser.add_argument("--seed", type=int, default=0, metavar="S", help="random seed")
    parser.add_argument(
        "--format", choices=FORMATS, default="bmp", help="image format (default bmp, as C-NMC)"
    )
    parser.add_argument(
        "--layout",
        choices=LAYOUTS,
        default="folders",
        help="'folders': OUT_DIR/all, OUT_DIR/hem with plain names; "
        "'cnmc': C-NMC names UID_P1_1_1_all.bmp / UID_H1_1_1_hem.bmp (default folders)",
    )
    parser.add_argument(
        "--subjects",
        type=int,
        default=2,
        metavar="K",
        help="synthetic subjects per class for --layout cnmc (default 2)",
    )
    parser.add_argument(
        "--first-subject",
        type=int,
        default=1,
        metavar="K",
        help="number of the first synthetic subject for --layout cnmc (default 1)",
    )
    parser.add_argument(
        "--size", type=int, default=REFERENCE_SIZE, help="frame size in px (default 450)"
    )
    parser.add_argument(
        "--shift",
        choices=sorted(SHIFTS),
        default=None,
        help="draw the cells as another lab would show them ('lab-b': stain hue +60 deg, "
        "0.75x stain density, cells 1.3-1.5x larger); default: no shift",
    )
    args = parser.parse_args(argv)
    try:
        paths = write_dataset(
            args.out_dir,
            args.per_class,
            args.seed,
            fmt=args.format,
            layout=args.layout,
            subjects=args.subjects,
            size=args.size,
            shift=args.shift,
            first_subject=args.first_subject,
        )
    except (ValueError, OSError) as exc:
        parser.error(str(exc))
    print(f"wrote {len(paths)} images to {args.out_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
