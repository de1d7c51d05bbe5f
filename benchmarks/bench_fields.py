"""Score white-cell detection in whole smear fields against the BCCD boxes, and time it.

Not a test: run `python benchmarks/bench_fields.py [--limit N] [--pictures OUT.png]` and read
the printed tables (BCCD; BCCD resized; Jiangxi masks; a table whose data is absent is
skipped with a message). It compares `leukgui.core.fields.detect_cells` (+ `crop_cell` on every
cell) with a BASELINE in the same process: a hue/saturation threshold for nuclei and a box
grown around each nucleus, the ~15-line recipe such tools usually start from.

Metrics, per method, over all WBC boxes of the fields:
* recall / precision at IoU >= 0.5, one-to-one greedy matching (highest IoU first);
* recall / precision with the "centre inside" rule: a detection matches a true box when its
  centre lies inside it (one-to-one, nearest centres first);
* mean IoU of the IoU-matched pairs;
* fields per second for detection + cropping (best of --passes; decoding excluded and
  reported separately).

Resized BCCD: every field resized by 0.5, 0.75, 1.5 and 2 (boxes scaled alike): recall and
precision at IoU >= 0.5 and the ratio (estimated um_per_px x factor) / (estimate at 1x),
median and 10-90 % range (1.0 = the scale followed the resize exactly).

Jiangxi (300 images of one white cell with surroundings, expert masks): "found mask" = a
reported cell has MASK IoU >= 0.5 with the true cell (mask 128 or 255; the target's rule),
"found box" = box IoU >= 0.5; extra = reported cells that are neither, per image; mean mask
IoU over all images (0 when missed) and over found ones. The baseline has no mask: its
filled box stands for it.

The data (../shared/data/{bccd,wbc-masks-jiangxi} from the repository root, or --data /
--jiangxi) is read in place and never copied.
"""

from __future__ import annotations

import argparse
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from leukgui.core.fields import (  # noqa: E402
    DetectorSettings,
    box_iou,
    crop_cell,
    detect_cells,
)
from leukgui.core.imaging import decode_image, thumbnail  # noqa: E402
from leukgui.core.parallel import default_threads, ordered_map  # noqa: E402

DEFAULT_DATA = REPO.parent / "shared" / "data" / "bccd"
DEFAULT_JIANGXI = REPO.parent / "shared" / "data" / "wbc-masks-jiangxi"
RESIZE_FACTORS = (0.5, 0.75, 1.5, 2.0)
MONTAGE_FIELDS = ("BloodImage_00000", "BloodImage_00176", "BloodImage_00344")

Box = tuple[int, int, int, int]


@dataclass
class Field:
    name: str
    rgb: np.ndarray
    truth: list[Box]


def load_fields(folder: Path, limit: int | None) -> tuple[list[Field], float]:
    """Decode the JPEGs and read the WBC boxes; returns the fields and the decode time."""
    images = sorted((folder / "JPEGImages").glob("*.jpg"))
    if limit:
        images = images[:limit]
    fields, decode_s = [], 0.0
    for path in images:
        start = time.perf_counter()
        rgb = decode_image(path)
        decode_s += time.perf_counter() - start
        fields.append(
            Field(path.stem, rgb, read_wbc_boxes(folder / "Annotations" / f"{path.stem}.xml"))
        )
    return fields, decode_s


def read_wbc_boxes(xml_path: Path) -> list[Box]:
    """WBC boxes of a Pascal VOC file as (x0, y0, x1, y1); VOC's max is used as exclusive."""
    boxes = []
    for obj in ET.parse(xml_path).getroot().iter("object"):
        if (obj.findtext("name") or "").strip() != "WBC":
            continue
        bb = obj.find("bndbox")
        x0, y0, x1, y1 = (int(float(bb.findtext(k))) for k in ("xmin", "ymin", "xmax", "ymax"))
        boxes.append((x0, y0, x1, y1))
    return boxes


# --------------------------------------------------------------------------------------------
# The two methods
# --------------------------------------------------------------------------------------------


def baseline_detect(
    rgb: np.ndarray, grow: float = 0.25, min_sat: int = 70, min_area: int = 4000
) -> list[Box]:
    """Hue/saturation nuclei, lobes merged by dilation, box grown by `grow` around each."""
    hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)
    hue, sat = hsv[:, :, 0], hsv[:, :, 1]
    nuclei = ((hue >= 115) & (hue <= 165) & (sat >= min_sat)).astype(np.uint8)  # purple-blue
    nuclei = cv2.morphologyEx(nuclei, cv2.MORPH_OPEN, np.ones((5, 5), np.uint8))
    grouped = cv2.dilate(nuclei, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (21, 21)))
    n, _, stats, _ = cv2.connectedComponentsWithStats(grouped)
    height, width = rgb.shape[:2]
    boxes = []
    for x, y, w, h, area in stats[1:]:
        if area < min_area:  # platelets and specks
            continue
        g = int(grow * max(w, h)) - 10  # the dilation already added 10 px per side
        boxes.append((max(0, x - g), max(0, y - g), min(width, x + w + g), min(height, y + h + g)))
    return boxes


# The same recipe with grow / min_sat / min_area picked by a grid search on all 292 BCCD
# fields (grow 0.10-0.25, sat 50-90, area 4000-6000): an optimistic, test-set-tuned bound.
TUNED = {"grow": 0.15, "min_sat": 70, "min_area": 6000}


def baseline_run(rgb: np.ndarray, **params: float) -> list[Box]:
    """Baseline detection plus its crops (the box padded square and resized to 450)."""
    boxes = baseline_detect(rgb, **params)
    for x0, y0, x1, y1 in boxes:
        thumbnail(rgb[y0:y1, x0:x1], 450)
    return boxes


def detector_run(rgb: np.ndarray, settings: DetectorSettings | None = None) -> list[Box]:
    """detect_cells plus crop_cell of every cell (what the app does per field)."""
    found = detect_cells(rgb, settings)
    for cell in found.cells:
        crop_cell(rgb, cell)
    return [cell.box for cell in found.cells]


# --------------------------------------------------------------------------------------------
# Scoring
# --------------------------------------------------------------------------------------------


def iou(a: Box, b: Box) -> float:
    return box_iou(a, b)


def match_iou(truth: Sequence[Box], found: Sequence[Box], threshold: float = 0.5) -> list[float]:
    """IoUs of the one-to-one pairs (greedy, best IoU first) reaching the threshold."""
    pairs = sorted(
        ((iou(t, f), i, j) for i, t in enumerate(truth) for j, f in enumerate(found)),
        reverse=True,
    )
    used_t, used_f, matched = set(), set(), []
    for value, i, j in pairs:
        if value < threshold:
            break
        if i in used_t or j in used_f:
            continue
        used_t.add(i)
        used_f.add(j)
        matched.append(value)
    return matched


def match_centre(truth: Sequence[Box], found: Sequence[Box]) -> int:
    """Pairs where the detection's centre lies inside the true box (one-to-one, nearest first)."""
    pairs = []
    for i, t in enumerate(truth):
        tcx, tcy = (t[0] + t[2]) / 2, (t[1] + t[3]) / 2
        for j, f in enumerate(found):
            cx, cy = (f[0] + f[2]) / 2, (f[1] + f[3]) / 2
            if t[0] <= cx <= t[2] and t[1] <= cy <= t[3]:
                pairs.append((np.hypot(cx - tcx, cy - tcy), i, j))
    pairs.sort()
    used_t, used_f = set(), set()
    for _, i, j in pairs:
        if i not in used_t and j not in used_f:
            used_t.add(i)
            used_f.add(j)
    return len(used_t)


@dataclass
class Score:
    recall: float
    precision: float
    recall_centre: float
    precision_centre: float
    mean_iou: float
    fields_per_s: float
    misses: list[str]


def evaluate(fields: Sequence[Field], run: Callable[[np.ndarray], list[Box]], passes: int) -> Score:
    n_truth = sum(len(f.truth) for f in fields)
    n_found = tp = tp_centre = 0
    ious: list[float] = []
    misses = []
    for f in fields:
        found = run(f.rgb)
        matched = match_iou(f.truth, found)
        centre = match_centre(f.truth, found)
        n_found += len(found)
        tp += len(matched)
        tp_centre += centre
        ious += matched
        if len(matched) < len(f.truth) or len(matched) < len(found):
            misses.append(
                f"{f.name}: {len(f.truth)} true, {len(found)} found, {len(matched)} matched"
            )
    best = float("inf")
    for _ in range(passes):
        start = time.perf_counter()
        for f in fields:
            run(f.rgb)
        best = min(best, time.perf_counter() - start)
    return Score(
        recall=tp / max(n_truth, 1),
        precision=tp / max(n_found, 1),
        recall_centre=tp_centre / max(n_truth, 1),
        precision_centre=tp_centre / max(n_found, 1),
        mean_iou=float(np.mean(ious)) if ious else 0.0,
        fields_per_s=len(fields) / best,
        misses=misses,
    )


# --------------------------------------------------------------------------------------------
# Pictures
# --------------------------------------------------------------------------------------------


def montage(fields: Sequence[Field], names: Sequence[str], out: Path) -> Path:
    """Three fields side by side: true boxes green, detections red with the mask in magenta,
    baseline boxes thin yellow."""
    by_name = {f.name: f for f in fields}
    chosen = [by_name[n] for n in names if n in by_name]
    for f in fields:  # fill up from the start when the named fields are not loaded
        if len(chosen) >= 3:
            break
        if f not in chosen:
            chosen.append(f)
    tiles = []
    for f in chosen[:3]:
        bgr = cv2.cvtColor(f.rgb, cv2.COLOR_RGB2BGR)
        for x0, y0, x1, y1 in baseline_detect(f.rgb):
            cv2.rectangle(bgr, (x0, y0), (x1 - 1, y1 - 1), (0, 220, 255), 1)
        for x0, y0, x1, y1 in f.truth:
            cv2.rectangle(bgr, (x0, y0), (x1 - 1, y1 - 1), (0, 170, 0), 3)
        for cell in detect_cells(f.rgb).cells:
            full = cell.full_mask(f.rgb.shape).astype(np.uint8)
            contours, _ = cv2.findContours(full, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
            cv2.drawContours(bgr, contours, -1, (255, 0, 255), 2)
            x0, y0, x1, y1 = cell.box
            cv2.rectangle(bgr, (x0, y0), (x1 - 1, y1 - 1), (0, 0, 230), 2)
            cv2.putText(bgr, f"{cell.score:.2f}", (x0 + 3, y0 + 18), 0, 0.6, (0, 0, 230), 2)
        cv2.putText(bgr, f.name, (8, bgr.shape[0] - 10), 0, 0.7, (20, 20, 20), 2)
        tiles.append(bgr)
    height = max(t.shape[0] for t in tiles)
    tiles = [
        cv2.copyMakeBorder(t, 0, height - t.shape[0], 0, 6, cv2.BORDER_CONSTANT) for t in tiles
    ]
    legend = np.full((34, sum(t.shape[1] for t in tiles), 3), 255, np.uint8)
    text = "green: true WBC box   red + magenta: detector box + mask   yellow: baseline box"
    cv2.putText(legend, text, (8, 23), 0, 0.6, (20, 20, 20), 1)
    picture = np.vstack([np.hstack(tiles), legend])
    ok, buf = cv2.imencode(".png", picture)
    if not ok:
        raise OSError("could not encode the montage")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(buf.tobytes())
    return out


# --------------------------------------------------------------------------------------------
# Resized BCCD and Jiangxi masks
# --------------------------------------------------------------------------------------------


def resized(rgb: np.ndarray, factor: float) -> np.ndarray:
    interp = cv2.INTER_AREA if factor < 1 else cv2.INTER_LINEAR
    return cv2.resize(rgb, None, fx=factor, fy=factor, interpolation=interp)


def resize_table(fields: Sequence[Field]) -> None:
    """Item 3 of issue 17: the same fields at other resolutions give the same cells."""
    base = {f.name: detect_cells(f.rgb).um_per_px for f in fields}
    print(
        f"\nResized BCCD ({len(fields)} fields; scale ratio = estimate x factor / estimate at 1x)"
    )
    print(
        f"{'factor':>7s} {'method':>9s} {'recall':>7s} {'prec':>7s}"
        f" {'ratio med':>10s} {'p10-p90':>12s}"
    )
    for factor in (1.0, *RESIZE_FACTORS):
        n_truth = tp = n_found = tp_bl = n_bl = 0
        ratios = []
        for f in fields:
            rgb = resized(f.rgb, factor) if factor != 1.0 else f.rgb
            truth = [tuple(int(round(v * factor)) for v in b) for b in f.truth]
            found = detect_cells(rgb)
            boxes = [c.box for c in found.cells]
            bl = baseline_detect(rgb)
            n_truth += len(truth)
            tp += len(match_iou(truth, boxes))
            n_found += len(boxes)
            tp_bl += len(match_iou(truth, bl))
            n_bl += len(bl)
            ratios.append(found.um_per_px * factor / base[f.name])
        lo, hi = np.percentile(ratios, [10, 90])
        print(
            f"{factor:7.2f} {'detector':>9s}"
            f" {tp / max(n_truth, 1):7.3f} {tp / max(n_found, 1):7.3f}"
            f" {np.median(ratios):10.3f} {lo:6.3f}-{hi:5.3f}"
        )
        print(
            f"{'':7s} {'baseline':>9s} {tp_bl / max(n_truth, 1):7.3f} {tp_bl / max(n_bl, 1):7.3f}"
        )


def speed_table(fields: Sequence[Field], passes: int) -> None:
    """Detection + cropping in fields/s: scale measured on every field (the default) or set,
    on one thread and on the decoding threads the app uses (`leukgui.core.parallel`), each
    against the one-thread baseline of the same run (noisy machines: read the ratios)."""
    rgbs = [f.rgb for f in fields]
    threads = default_threads()
    set_scale = DetectorSettings(um_per_px=0.077)

    def rate(run: Callable[[np.ndarray], object], n_threads: int) -> float:
        best = float("inf")
        for _ in range(passes):
            start = time.perf_counter()
            for _item, _result, error in ordered_map(run, rgbs, n_threads):
                if error is not None:
                    raise error
            best = min(best, time.perf_counter() - start)
        return len(rgbs) / best

    base = rate(baseline_run, 1)
    print(f"\nSpeed, {len(rgbs)} fields of 640x480 (fields/s; ratio to the 1-thread baseline)")
    print(f"{'':34s} {'1 thread':>9s} {f'{threads} threads':>10s}")
    rows = [
        ("detector, scale measured (auto)", detector_run),
        ("detector, scale set (0.077 µm/px)", lambda rgb: detector_run(rgb, set_scale)),
        ("baseline", baseline_run),
    ]
    for label, run in rows:
        one, many = rate(run, 1), rate(run, threads)
        print(f"{label:34s} {one:9.1f} {many:10.1f}   ({one / base:.2f} / {many / base:.2f})")
    print(
        f"The app decodes files on {threads} threads (one per core, at most 4): the "
        f"'{threads} threads' column is its detection rate on this machine."
    )


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.count_nonzero(a | b)
    return np.count_nonzero(a & b) / union if union else 0.0


def jiangxi_table(folder: Path) -> None:
    """Issue 17's Jiangxi targets: true cell found, extra cells, mask IoU."""
    paths = sorted(folder.glob("*.bmp"))
    # per method: found by mask IoU, found by box IoU, extra cells, mask IoUs, IoUs if found
    rows: dict[str, list] = {"detector": [0, 0, 0, [], []], "baseline": [0, 0, 0, [], []]}
    sources: dict[str, int] = {}
    det_s = 0.0
    for path in paths:
        rgb = decode_image(path)
        truth = cv2.imread(str(path.with_suffix(".png")), cv2.IMREAD_GRAYSCALE) > 0
        ys, xs = np.nonzero(truth)
        tbox = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
        t0 = time.perf_counter()
        found = detect_cells(rgb)
        det_s += time.perf_counter() - t0
        key = found.scale.source if found.scale else "?"
        sources[key] = sources.get(key, 0) + 1
        candidates = {
            "detector": [(c.box, c.full_mask(rgb.shape)) for c in found.cells],
            "baseline": [],
        }
        for x0, y0, x1, y1 in baseline_detect(rgb):
            m = np.zeros(truth.shape, bool)
            m[y0:y1, x0:x1] = True  # no mask: the box stands for it
            candidates["baseline"].append(((x0, y0, x1, y1), m))
        for name, cells in candidates.items():
            row = rows[name]
            best_mask = max((mask_iou(m, truth) for _, m in cells), default=0.0)
            best_box = max((box_iou(b, tbox) for b, _ in cells), default=0.0)
            row[0] += best_mask >= 0.5
            row[1] += best_box >= 0.5
            row[2] += len(cells) - (1 if max(best_mask, best_box) >= 0.5 else 0)
            row[3].append(best_mask)
            if best_mask >= 0.5:
                row[4].append(best_mask)
    n = len(paths)
    print(f"\nJiangxi masks ({n} images of one white cell; true cell = mask 128 + 255)")
    print("found mask: a reported cell has mask IoU >= 0.5 with the true cell (the target's")
    print("rule); found box: box IoU >= 0.5; extra: reported cells that are not it, per image;")
    print("mIoU: best mask IoU per image (0 if none; the baseline's box is its mask)")
    print(
        f"{'':10s}{'found mask':>11s}{'found box':>10s}{'extra/img':>10s}"
        f"{'mIoU all':>10s}{'mIoU found':>11s}"
    )
    for name, (hits, box_hits, extra, all_iou, hit_iou) in rows.items():
        print(
            f"{name:10s}{hits / n:11.3f}{box_hits / n:10.3f}{extra / n:10.3f}"
            f"{np.mean(all_iou):10.3f}{(np.mean(hit_iou) if hit_iou else 0.0):11.3f}"
        )
    print(f"scale sources: {sources}; detector {n / det_s:.0f} images/s")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="BCCD folder")
    parser.add_argument("--limit", type=int, default=None, metavar="N", help="first N fields")
    parser.add_argument("--passes", type=int, default=3, help="timing passes (best is kept)")
    parser.add_argument("--pictures", type=Path, metavar="OUT", help="write a PNG montage")
    parser.add_argument("--verbose", action="store_true", help="list fields with errors")
    parser.add_argument("--jiangxi", type=Path, default=DEFAULT_JIANGXI, help="Jiangxi folder")
    parser.add_argument("--no-resize", action="store_true", help="skip the resized-BCCD table")
    args = parser.parse_args(argv)
    if not any(args.jiangxi.glob("*.bmp")) if args.jiangxi.is_dir() else True:
        print(f"Jiangxi table skipped: no images at {args.jiangxi}")
    else:
        jiangxi_table(args.jiangxi)
    if not (args.data / "JPEGImages").is_dir():
        print(f"BCCD tables skipped: no BCCD data at {args.data} (JPEGImages/, Annotations/)")
        return 0

    fields, decode_s = load_fields(args.data, args.limit)
    n_truth = sum(len(f.truth) for f in fields)
    print(
        f"{len(fields)} fields, {n_truth} WBC boxes; decoding {len(fields) / decode_s:.0f} fields/s"
    )
    methods = {
        "detector": detector_run,
        "baseline": baseline_run,
        "tuned-bl": lambda rgb: baseline_run(rgb, **TUNED),
    }
    scores = {name: evaluate(fields, run, args.passes) for name, run in methods.items()}

    print(f"{'':22s}" + "".join(f"{name:>10s}" for name in scores) + "  ratio/bl  ratio/tuned")
    rows = [
        ("recall @IoU0.5", "recall"),
        ("precision @IoU0.5", "precision"),
        ("recall (centre)", "recall_centre"),
        ("precision (centre)", "precision_centre"),
        ("mean IoU (matched)", "mean_iou"),
        ("fields/s (det+crop)", "fields_per_s"),
    ]
    for label, key in rows:
        fmt = "{:10.1f}" if key == "fields_per_s" else "{:10.3f}"
        values = [getattr(score, key) for score in scores.values()]
        ratios = [values[0] / v if v else float("inf") for v in values[1:]]
        line = f"{label:22s}" + "".join(fmt.format(v) for v in values)
        print(line + "".join(f"{r:10.2f}" for r in ratios))
    print("tuned-bl: the baseline with its parameters tuned on these same fields (optimistic)")
    if args.verbose:
        for title, score in scores.items():
            print(f"\n{title}: {len(score.misses)} fields with a miss or a false detection")
            for line in score.misses:
                print("  " + line)
    speed_table(fields, args.passes)
    if args.pictures:
        print(f"montage: {montage(fields, MONTAGE_FIELDS, args.pictures)}")
    if not args.no_resize:
        resize_table(fields)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
