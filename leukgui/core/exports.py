"""The plain exports of a run: one CSV row per input and one Grad-CAM PNG per cell, plus the
file helpers the Excel report shares with them (display names, re-reading a cell's image).

Text from files and folders is untrusted: `csv_safe` keeps a file named `=HYPERLINK(...).png`
from running as a formula when the CSV is opened in a spreadsheet, and writes every text in its
display form (`text.display_text`: undecodable bytes of a file name and control characters as
U+FFFD), so the CSV is always valid UTF-8; the `path_exact` column keeps each path losslessly
(`text.exact_path`). Every file is written
atomically (see `atomic.py`) or, for heatmaps, removed again when its write fails.
"""

from __future__ import annotations

import contextlib
import csv
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import TYPE_CHECKING

import cv2
import numpy as np

from leukgui.core.atomic import ReportWriteError, atomic_write
from leukgui.core.field_scale import scale_outliers
from leukgui.core.imaging import ImageError, read_image
from leukgui.core.overlay import overlay
from leukgui.core.results import IMAGE_CHANGED, CellResult, RunResult
from leukgui.core.text import display_path, display_text, exact_path

if TYPE_CHECKING:
    from leukgui.core.review import ReviewState

__all__ = [
    "IMAGE_CHANGED",
    "FIELD_CSV_COLUMNS",
    "DisplayNames",
    "FieldScale",
    "HeatmapPaths",
    "csv_safe",
    "exact_full_path",
    "field_scales",
    "full_path",
    "png_bytes",
    "reread_cell",
    "write_csv",
    "write_heatmaps",
]

_CSV_RISKY_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def csv_safe(value: object) -> str:
    """OWASP CSV-injection rule: prefix texts a spreadsheet would run as a formula with '.

    The text is in its display form (`text.display_text`), so it always encodes as UTF-8."""
    if value is None:
        return ""
    text = display_text(value)
    if text.startswith(_CSV_RISKY_PREFIXES):
        return "'" + text
    return text


def full_path(path: str | Path) -> str:
    """The absolute path as a person reads it (`text.display_path`), so a signed report
    still names its image from any folder."""
    return display_path(Path(path).absolute())


def exact_full_path(path: str | Path) -> str:
    """The absolute path exactly, as printable text (`text.exact_path`; reversed by
    `text.path_from_exact`): what finds the file again when its name is not valid text."""
    return exact_path(Path(path).absolute())


class DisplayNames:
    """File names as the user thinks of them: relative to the input folder they came from,
    in display form (`text.display_path`: undecodable bytes and control characters as U+FFFD)."""

    def __init__(self, inputs: Sequence[str]) -> None:
        roots = [PurePath(str(i)) for i in inputs if str(i)]
        # Deepest first, so a nested input folder wins over its parent.
        self._roots = sorted(roots, key=lambda p: len(p.parts), reverse=True)

    def __call__(self, path: Path) -> str:
        p = PurePath(str(path))
        for root in self._roots:
            if p == root:
                return display_path(p.name)
            try:
                rel = p.relative_to(root)
            except ValueError:
                continue
            return display_path(rel.as_posix())
        return display_path(p.name)


def reread_cell(cell: CellResult) -> np.ndarray:
    """Re-read the image the model saw for `cell` (the crop, for a cell of a smear field);
    raises ImageError if the file is not the image that was analyzed: a different SHA-256
    than at analysis (`IMAGE_CHANGED`, even when size and time are the same), or a
    different size in pixels for results without a stamp."""
    decoded = read_image(cell.path)  # one read: the bytes decoded are the bytes hashed
    rgb = decoded.rgb
    if cell.stamp is not None and (
        decoded.stamp is None or decoded.stamp.sha256 != cell.stamp.sha256
    ):
        raise ImageError(IMAGE_CHANGED)
    h, w = rgb.shape[:2]
    if cell.width and cell.height and (w, h) != (cell.width, cell.height):
        raise ImageError(
            f"file changed since analysis (was {cell.width}x{cell.height}, now {w}x{h})"
        )
    from leukgui.core.cells import cell_crop

    return cell_crop(cell, rgb)  # a smear-field cell: cut from the field again


def png_bytes(rgb: np.ndarray) -> bytes:
    """An RGB image as PNG file bytes."""
    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError("PNG encoding failed")
    return buf.tobytes()


# --------------------------------------------------------------------------- field scales

SCALE_IMPLAUSIBLE = "implausible measurement, replaced"
SCALE_OUTLIER = "differs from the other fields of this sample"
# White cells on a smear are 5-30 µm across (a small lymphocyte ~7 µm, a neutrophil 12-15, a
# large monocyte or blast ~20), and the median of a sample's white cells lies within 7-18 µm.
# Sizes outside that at the field's scale say the scale is wrong, most often a µm-per-pixel
# setting that does not fit this microscope (a set value is not measured, so only this
# cross-check can catch it).
CELL_DIAMETER_UM = (5.0, 30.0)
SAMPLE_MEDIAN_UM = (7.0, 18.0)
SCALE_SIZES = "cell sizes implausible at this scale: check µm per pixel"
SCALE_DEFAULT = "not measured: default assumed"


@dataclass(frozen=True)
class FieldScale:
    """The scale one smear field was analysed at (µm per pixel, where it came from) and
    whether it deserves a look: an implausible measurement, a default because nothing
    could be measured, or a value that disagrees with the rest of its sample
    (`field_scale.scale_outliers`: the fields of one sample share the microscope)."""

    um_per_px: float | None
    source: str
    plausible: bool | None
    outlier: bool
    odd_sizes: bool = False  # a cell's diameter outside CELL_DIAMETER_UM at this scale

    @property
    def flag(self) -> str:
        """'' for a scale that needs no look, else why it does (the report's and CSV's text)."""
        reasons = []
        if self.plausible is False:
            reasons.append(SCALE_IMPLAUSIBLE)
        if self.source.startswith("default"):
            reasons.append(SCALE_DEFAULT)
        if self.outlier:
            reasons.append(SCALE_OUTLIER)
        if self.odd_sizes:
            reasons.append(SCALE_SIZES)
        return "; ".join(reasons)


def field_scales(run: RunResult) -> dict[str, FieldScale]:
    """Each smear field's scale, keyed by `str(path)`, with outliers found per sample.

    Computed from the cells (every cell of a field carries its field's scale), so a run
    restored from a session gets the same flags as the live one. Fields without a known
    scale (sessions saved before scales existed) are left out of the comparison."""
    first: dict[str, CellResult] = {}
    for c in run.cells:
        if c.in_field:
            first.setdefault(str(c.path), c)
    by_sample: dict[str, list[str]] = {}
    for key, c in first.items():
        if c.um_per_px is not None and c.um_per_px > 0:
            by_sample.setdefault(c.sample, []).append(key)
    outlier: dict[str, bool] = {}
    for keys in by_sample.values():
        flags = scale_outliers([float(first[k].um_per_px or 0.0) for k in keys])
        outlier.update(zip(keys, flags, strict=True))
    low, high = CELL_DIAMETER_UM
    sized = [c for c in run.cells if c.in_field and c.diameter_um is not None]
    odd = {str(c.path) for c in sized if not low <= c.diameter_um <= high}
    per_sample: dict[str, list[float]] = {}
    for c in sized:
        per_sample.setdefault(c.sample, []).append(float(c.diameter_um))
    low, high = SAMPLE_MEDIAN_UM
    odd_samples = {k for k, v in per_sample.items() if not low <= float(np.median(v)) <= high}
    odd |= {str(c.path) for c in sized if c.sample in odd_samples}
    return {
        key: FieldScale(
            c.um_per_px, c.scale_source, c.scale_plausible, outlier.get(key, False), key in odd
        )
        for key, c in first.items()
    }


# --------------------------------------------------------------------------- CSV

_CSV_COLUMNS = (
    "file",
    "sample",
    "subject",
    "status",
    "label",
    "p_all",
    "truth",
    "kind",
    "reason",
    "path",
    "path_exact",
    "sha256",
    "note",
)
# A smear-field cell's number, box (x0, y0, x1, y1: image px, exclusive ends), size and its
# field's scale; empty for single-cell images and errors (unknown, not zero).
FIELD_CSV_COLUMNS = (
    "cell_number",
    "x0",
    "y0",
    "x1",
    "y1",
    "area_px",
    "diameter_px",
    "area_um2",
    "diameter_um",
    "um_per_px",
    "scale_source",
    "scale_flag",
    "cut_by_border",
)


def _number(value: float | None, fmt: str) -> str:
    """A number in the CSV's fixed format; '' for unknown (never a made-up zero)."""
    if value is None or not math.isfinite(float(value)):
        return ""
    return format(float(value), fmt)


def _field_csv_values(o: CellResult, scales: dict[str, FieldScale]) -> list[str]:
    """The FIELD_CSV_COLUMNS of one cell ('' everywhere for a single-cell image)."""
    if not o.in_field or o.box is None:
        return [""] * len(FIELD_CSV_COLUMNS)
    scale = scales.get(str(o.path))
    border = "" if o.touches_border is None else ("yes" if o.touches_border else "no")
    return [
        str(o.cell_index) if o.cell_index is not None else "",
        *(str(int(v)) for v in o.box),
        "" if o.area_px is None else str(int(o.area_px)),
        _number(o.diameter_px, ".2f"),
        _number(o.area_um2, ".2f"),
        _number(o.diameter_um, ".3f"),
        _number(o.um_per_px, ".6g"),
        o.scale_source,
        scale.flag if scale is not None else "",
        border,
    ]


_CSV_REVIEW_COLUMNS = ("reviewed_label", "reviewer", "reviewed_at")


def write_csv(run: RunResult, path: Path, review: ReviewState | None = None) -> None:
    """One row per input in input order, UTF-8 with BOM so Excel shows accents correctly.

    `path` is the absolute path as a person reads it (a name that is not valid text shows
    U+FFFD); `path_exact` is the same path losslessly (`text.exact_path`: '%', control
    characters and undecodable bytes as %XX; `text.path_from_exact` gives the path back).
    `sha256` is the hash of the file's bytes when it was analyzed (empty for errors and for
    results made without one), which ties each row to the exact pixels. `note` says what
    was done to read the file (EXIF orientation applied, data after the end ignored, first
    page of several used; for a smear-field cell, what the detector noticed).

    Errors are rows too (status "error" with their kind and reason), so nothing silently disappears.
    With a `review`, columns reviewed_label, reviewer and reviewed_at (ISO 8601 UTC) follow
    the model's `label` (empty for unreviewed cells and errors); without one the columns are
    exactly the plain export's.

    The FIELD_CSV_COLUMNS follow: for a cell found in a smear field, its number in the
    field, its box as four numbers, its area and equivalent-circle diameter in px and, with
    the field's scale, in µm² and µm, the scale (µm per pixel), how it was obtained, a flag
    when it deserves a look (`FieldScale.flag`) and whether the cell is cut by the image
    border ("yes"/"no"). They are empty for single-cell images and errors.
    """
    path = Path(path)
    names = DisplayNames(run.info.inputs)
    scales = field_scales(run)
    columns = list(_CSV_COLUMNS) + list(FIELD_CSV_COLUMNS)
    at = _CSV_COLUMNS.index("label") + 1
    if review is not None:
        columns[at:at] = _CSV_REVIEW_COLUMNS

    def reviewed(o: object) -> list[str]:
        done = review.review_of(o) if review is not None and isinstance(o, CellResult) else None
        if done is None:
            return ["", "", ""]
        return [done.label, done.reviewer, done.time]

    def write(tmp: Path) -> None:
        with open(tmp, "w", encoding="utf-8-sig", newline="") as fh:
            out = csv.writer(fh)
            out.writerow(columns)
            for o in run.outcomes:
                if isinstance(o, CellResult):
                    p = float(o.p_all)
                    row = [
                        names(o.path),
                        o.sample,
                        o.subject,
                        "ok",
                        o.label,
                        f"{p:.6f}" if math.isfinite(p) else "",
                        o.truth,
                        "",
                        "",
                        full_path(o.path),
                        exact_full_path(o.path),
                        o.sha256 or "",
                        display_text(o.note),
                        *_field_csv_values(o, scales),
                    ]
                else:
                    row = [names(o.path), o.sample, "", "error", "", "", "", o.kind_text, o.reason]
                    row += [full_path(o.path), exact_full_path(o.path), "", ""]
                    row += [""] * len(FIELD_CSV_COLUMNS)
                if review is not None:
                    row[at:at] = reviewed(o)
                out.writerow([csv_safe(v) for v in row])

    atomic_write(path, write)


# --------------------------------------------------------------------------- heatmap PNGs


class HeatmapPaths(list):
    """The PNG paths written by `write_heatmaps` (a plain list of Path), plus `skipped`:
    (image path, reason) for every cell whose image could not be re-read or rendered.

    Skipping is reported, not raised, so one moved file does not cost the other heatmaps;
    callers should show `skipped` to the user.
    """

    def __init__(self) -> None:
        super().__init__()
        self.skipped: list[tuple[Path, str]] = []


_UNSAFE_NAME = re.compile(r'[<>:"/\\|?*\x00-\x1f]')
_RESERVED_NAMES = {"CON", "PRN", "AUX", "NUL"} | {
    f"{device}{i}" for device in ("COM", "LPT") for i in range(1, 10)
}


def _safe_part(name: str, fallback: str) -> str:
    """A folder/file name component valid on Windows, macOS and Linux."""
    cleaned = _UNSAFE_NAME.sub("_", name).strip().rstrip(". ")
    if not cleaned or cleaned in (".", ".."):
        return fallback
    if cleaned.split(".")[0].upper() in _RESERVED_NAMES:
        cleaned = "_" + cleaned
    return cleaned[:150]


def write_heatmaps(run: RunResult, folder: Path) -> HeatmapPaths:
    """Write one Grad-CAM overlay PNG per cell at the image's own resolution.

    Files go to `folder/<sample>/<file stem>_gradcam.png`; a second file with the same stem
    in the same sample gets `_2`, `_3`... (compared case-insensitively, for Windows/macOS).
    Unreadable images are skipped and listed in the result's `skipped`; a failure to write
    (read-only folder, full disk) raises `ReportWriteError` after removing the partial file.
    """
    folder = Path(folder)
    written = HeatmapPaths()
    taken: set[tuple[str, str]] = set()
    for cell in run.cells:
        try:
            png = png_bytes(overlay(reread_cell(cell), cell.heatmap))
        except (ImageError, OSError, ValueError) as exc:
            written.skipped.append((cell.path, str(exc)))
            continue
        sample_dir = _safe_part(cell.sample, "sample")
        stem = _safe_part(Path(cell.path).stem, "image")
        name = f"{stem}_gradcam.png"
        n = 1
        while (sample_dir.lower(), name.lower()) in taken:
            n += 1
            name = f"{stem}_{n}_gradcam.png"
        taken.add((sample_dir.lower(), name.lower()))
        target = folder / sample_dir / name
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(png)
        except OSError as exc:
            with contextlib.suppress(OSError):
                target.unlink()
            reason = exc.strerror or str(exc)
            raise ReportWriteError(f"cannot write heatmap to {target}: {reason}") from exc
        written.append(target)
    return written
