"""White cells found in smear fields and cut out like C-NMC cells (leukgui.core.fields)."""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET

import cv2
import numpy as np
import pytest
from conftest import CNMC_SAMPLES, SHARED_DATA

from leukgui.core.fields import (
    NOTE_NO_CELL,
    DetectedCell,
    DetectorSettings,
    FieldDetection,
    box_iou,
    crop_cell,
    detect_cells,
    looks_like_single_cell,
    make_synthetic_field,
)
from leukgui.core.imaging import decode_image
from leukgui.core.synthetic import generate_cells

BCCD = SHARED_DATA / "bccd"
SEEDS = range(6)


def _iou(a, b) -> float:
    return box_iou(a, b)


def _matched(truth, found, threshold: float = 0.5) -> int:
    """One-to-one greedy matches (best IoU first) at or above the threshold."""
    pairs = sorted(
        ((_iou(t, f), i, j) for i, t in enumerate(truth) for j, f in enumerate(found)),
        reverse=True,
    )
    used_t, used_f = set(), set()
    for value, i, j in pairs:
        if value >= threshold and i not in used_t and j not in used_f:
            used_t.add(i)
            used_f.add(j)
    return len(used_t)


@pytest.fixture(scope="module")
def fields() -> list[tuple[np.ndarray, list, FieldDetection]]:
    """Six synthetic fields with three white cells each, and what the detector found."""
    out = []
    for seed in SEEDS:
        rgb, boxes = make_synthetic_field(seed, n_wbc=3)
        out.append((rgb, boxes, detect_cells(rgb)))
    return out


# --------------------------------------------------------------------------------------------
# Synthetic fields
# --------------------------------------------------------------------------------------------


def test_synthetic_field_is_reproducible_and_well_formed() -> None:
    a, boxes_a = make_synthetic_field(3, size=(240, 320), n_wbc=2)
    b, boxes_b = make_synthetic_field(3, size=(240, 320), n_wbc=2)
    c, _ = make_synthetic_field(4, size=(240, 320), n_wbc=2)
    assert a.shape == (240, 320, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b) and boxes_a == boxes_b
    assert not np.array_equal(a, c)
    assert 1 <= len(boxes_a) <= 2
    for x0, y0, x1, y1 in boxes_a:
        assert 0 <= x0 < x1 <= 320 and 0 <= y0 < y1 <= 240
    assert make_synthetic_field(0, n_wbc=0)[1] == []
    with pytest.raises(ValueError):
        make_synthetic_field(0, n_wbc=-1)


def test_every_white_cell_is_found_with_a_tight_box(fields) -> None:
    for _rgb, truth, found in fields:
        boxes = [c.box for c in found.cells]
        assert _matched(truth, boxes) == len(truth), (truth, boxes)
        assert len(boxes) == len(truth), "red cells or platelets taken for white cells"
        assert all(max(_iou(t, b) for b in boxes) >= 0.75 for t in truth)
        assert NOTE_NO_CELL not in found.notes


def test_masks_fit_their_boxes(fields) -> None:
    for rgb, _, found in fields:
        assert found.shape == rgb.shape[:2]
        scores = [c.score for c in found.cells]
        assert scores == sorted(scores, reverse=True)
        for cell in found.cells:
            x0, y0, x1, y1 = cell.box
            assert 0 <= x0 < x1 <= rgb.shape[1] and 0 <= y0 < y1 <= rgb.shape[0]
            assert cell.mask.dtype == bool and cell.mask.shape == (y1 - y0, x1 - x0)
            # The box is the mask's tight box: every side of it holds mask pixels.
            m = cell.mask
            assert m[0].any() and m[-1].any() and m[:, 0].any() and m[:, -1].any()
            assert cell.area == int(m.sum())
            assert 0 < cell.nucleus_area <= 1.1 * cell.area
            assert 0.0 <= cell.score <= 1.0
            h, w = rgb.shape[:2]
            assert cell.touches_border == (x0 == 0 or y0 == 0 or x1 == w or y1 == h)
            full = cell.full_mask(rgb.shape)
            assert full.shape == rgb.shape[:2] and int(full.sum()) == cell.area


def test_cell_cut_by_the_image_edge_is_flagged() -> None:
    rgb, truth = make_synthetic_field(2, n_wbc=3)
    first = min(truth)  # the leftmost cell
    cut_x = (first[0] + first[2]) // 2
    cut = np.ascontiguousarray(rgb[:, cut_x:])  # the field now starts mid-cell
    found = detect_cells(cut)
    edge = [c for c in found.cells if c.box[0] == 0]
    assert len(edge) == 1 and edge[0].touches_border
    inner = [(x0 - cut_x, y0, x1 - cut_x, y1) for x0, y0, x1, y1 in truth if x0 > cut_x + 5]
    inner = [b for b in inner if b[1] > 0 and b[3] < cut.shape[0] and b[2] < cut.shape[1]]
    assert inner, "the field should keep a cell clear of the edges"
    for box in inner:
        (cell,) = [c for c in found.cells if _iou(c.box, box) >= 0.5]
        assert not cell.touches_border


def test_crops_look_like_cnmc_cells(fields) -> None:
    rgb, _, found = fields[0]
    for cell in found.cells:
        crop = crop_cell(rgb, cell)
        assert crop.shape == (450, 450, 3) and crop.dtype == np.uint8
        lit = crop.max(axis=2) > 0
        assert not lit[0].any() and not lit[-1].any()
        assert not lit[:, 0].any() and not lit[:, -1].any()
        # Centred, and the bounding circle spans the documented fraction of the frame.
        pts = cv2.findNonZero(lit.astype(np.uint8))
        (cx, cy), r = cv2.minEnclosingCircle(pts)
        assert abs(cx - 225) < 8 and abs(cy - 225) < 8
        assert abs(2 * r / 450 - 0.55) < 0.03
        assert looks_like_single_cell(crop)
        # Inside the cell nothing is pure black, so only the background is (0, 0, 0).
        contours, _ = cv2.findContours(
            lit.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE
        )
        assert len(contours) == 1
        filled = np.zeros(lit.shape, np.uint8)
        cv2.drawContours(filled, contours, -1, 1, thickness=cv2.FILLED)
        assert np.array_equal(filled > 0, lit)
    small = crop_cell(rgb, found.cells[0], size=224, fill=0.7)
    assert small.shape == (224, 224, 3)
    with pytest.raises(ValueError):
        crop_cell(rgb, found.cells[0], fill=0.0)
    with pytest.raises(ValueError):
        crop_cell(rgb[:50, :50], found.cells[0])


def test_candidate_cap_is_noted() -> None:
    rgb, truth = make_synthetic_field(5, n_wbc=5)
    assert len(truth) >= 3
    found = detect_cells(rgb, DetectorSettings(max_candidates=2))
    assert len(found.cells) == 2
    assert any(note.startswith("capped at 2 candidates") for note in found.notes)
    assert not any(n.startswith("capped") for n in detect_cells(rgb).notes)


@pytest.mark.parametrize(
    "kind", ["black", "white", "grey", "noise", "tiny", "red cells only", "blurred"]
)
def test_fields_without_white_cells_say_so(kind: str) -> None:
    rng = np.random.default_rng(0)
    if kind == "black":
        rgb = np.zeros((480, 640, 3), np.uint8)
    elif kind == "white":
        rgb = np.full((480, 640, 3), 255, np.uint8)
    elif kind == "grey":
        rgb = np.full((300, 400, 3), 128, np.uint8)
    elif kind == "noise":
        rgb = rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)
    elif kind == "tiny":
        rgb = np.full((4, 5, 3), 200, np.uint8)
    else:
        rgb, _ = make_synthetic_field(7, n_wbc=0, n_rbc=80)
        if kind == "blurred":
            rgb = cv2.GaussianBlur(rgb, (0, 0), 6)
    found = detect_cells(rgb)
    assert found.cells == []
    assert NOTE_NO_CELL in found.notes
    if kind in ("black", "white", "grey"):
        assert any("blank" in note for note in found.notes)
    if kind == "blurred":
        assert "image looks out of focus" in found.notes


def test_blurred_white_cells_still_found_with_a_focus_note() -> None:
    rgb, truth = make_synthetic_field(1, n_wbc=2)
    found = detect_cells(cv2.GaussianBlur(rgb, (0, 0), 5))
    assert "image looks out of focus" in found.notes
    assert _matched(truth, [c.box for c in found.cells]) == len(truth)


def test_detection_is_scale_aware() -> None:
    rgb, truth = make_synthetic_field(0, n_wbc=3)
    big = cv2.resize(rgb, None, fx=2, fy=2, interpolation=cv2.INTER_LINEAR)
    found = detect_cells(big)
    scaled = [tuple(2 * v for v in b) for b in truth]
    assert _matched(scaled, [c.box for c in found.cells], 0.75) == len(truth)
    # The scale comes from the cells, not the image size: half of the enlarged field shows
    # cells as large as the whole enlarged field does.
    half = np.ascontiguousarray(big[:480, :640])
    found_half = detect_cells(half)
    assert found_half.um_per_px == pytest.approx(found.um_per_px, rel=0.15)
    assert found_half.cells and all(c.area > 4 * 1500 for c in found_half.cells)
    # A set scale (or the legacy pixel_scale: 2x a BCCD field) is used as given.
    for settings in (DetectorSettings(um_per_px=0.0385), DetectorSettings(pixel_scale=2.0)):
        told = detect_cells(half, settings)
        assert told.scale_source == "set" and told.um_per_px == pytest.approx(0.0385)
        assert told.cells and all(c.area > 4 * 1500 for c in told.cells)


def test_bad_arrays_and_settings_raise() -> None:
    with pytest.raises(ValueError):
        detect_cells(np.zeros((10, 10), np.uint8))
    with pytest.raises(ValueError):
        detect_cells(np.zeros((10, 10, 3), np.float32))
    for bad in (
        {"nucleus_od": -1},
        {"cytoplasm_od": 0.5},
        {"max_candidates": 0},
        {"max_candidates": 2.5},
        {"min_score": 2},
        {"work_scale": math.nan},
        {"work_um_per_px": 0},
        {"pixel_scale": 0},
        {"um_per_px": 0},
        {"min_nucleus_area": 1e6},
        {"min_nucleus_um2": 1e6},
    ):
        with pytest.raises(ValueError):
            DetectorSettings(**bad)
    settings = DetectorSettings(lobe_gap_um=1.5)
    assert DetectorSettings(**settings.to_dict()) == settings
    assert detect_cells(np.zeros((64, 64, 3), np.uint8), settings).settings["lobe_gap_um"] == 1.5


def test_single_cell_crops_and_fields_are_told_apart(fields) -> None:
    cells = list(generate_cells(10, seed=3))
    cells += list(generate_cells(4, seed=4, size=96))
    assert all(looks_like_single_cell(c.image) for c in cells)
    assert not any(looks_like_single_cell(rgb) for rgb, _, _ in fields)
    assert not looks_like_single_cell(np.zeros((450, 450, 3), np.uint8))
    assert not looks_like_single_cell(np.full((450, 450, 3), 255, np.uint8))
    two = np.zeros((450, 450, 3), np.uint8)  # two cells side by side: not one central object
    cv2.circle(two, (110, 225), 90, (120, 60, 160), -1)
    cv2.circle(two, (340, 225), 90, (120, 60, 160), -1)
    assert not looks_like_single_cell(two)


def test_detected_cell_centre() -> None:
    cell = DetectedCell((10, 20, 30, 60), np.ones((40, 20), bool), 800, 400, False, 0.9)
    assert cell.centre == (20.0, 40.0)


# --------------------------------------------------------------------------------------------
# Real data, when ../shared/data is present
# --------------------------------------------------------------------------------------------

needs_cnmc = pytest.mark.skipif(
    not CNMC_SAMPLES.is_dir(),
    reason=f"real C-NMC samples not present at {CNMC_SAMPLES} (only in the team's workspace)",
)
needs_bccd = pytest.mark.skipif(
    not (BCCD / "JPEGImages").is_dir(),
    reason=f"real BCCD smear fields not present at {BCCD} (only in the team's workspace)",
)


def _bccd(paths) -> list[tuple[str, np.ndarray, list]]:
    """(name, RGB, WBC boxes) of BCCD fields, read in place."""
    out = []
    for path in paths:
        root = ET.parse(BCCD / "Annotations" / f"{path.stem}.xml").getroot()
        boxes = []
        for obj in root.iter("object"):
            if obj.findtext("name") == "WBC":
                bb = obj.find("bndbox")
                boxes.append(
                    tuple(int(float(bb.findtext(k))) for k in ("xmin", "ymin", "xmax", "ymax"))
                )
        out.append((path.stem, decode_image(path), boxes))
    return out


@needs_cnmc
def test_real_cnmc_samples_are_single_cells() -> None:
    paths = sorted(CNMC_SAMPLES.rglob("*.bmp"))
    assert len(paths) == 6
    assert all(looks_like_single_cell(decode_image(p)) for p in paths)


@needs_bccd
def test_real_bccd_fields_reach_the_recall_target() -> None:
    data = _bccd(sorted((BCCD / "JPEGImages").glob("*.jpg"))[:40])
    n_truth = sum(len(t) for _, _, t in data)
    hits = found_total = 0
    for _, rgb, truth in data:
        assert not looks_like_single_cell(rgb)
        found = detect_cells(rgb)
        boxes = [c.box for c in found.cells]
        hits += _matched(truth, boxes)
        found_total += len(boxes)
        for cell in found.cells:
            assert looks_like_single_cell(crop_cell(rgb, cell))
    assert hits / n_truth >= 0.95, (hits, n_truth)
    assert hits / found_total >= 0.9, (hits, found_total)


@needs_bccd
def test_real_touching_white_cells_are_split() -> None:
    path = BCCD / "JPEGImages" / "BloodImage_00176.jpg"
    if not path.is_file():
        pytest.skip("BloodImage_00176 not in this copy of BCCD")
    ((_, rgb, truth),) = _bccd([path])
    found = detect_cells(rgb)
    assert len(truth) == 2 and _matched(truth, [c.box for c in found.cells]) == 2
