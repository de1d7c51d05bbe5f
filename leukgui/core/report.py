"""Excel, CSV and heatmap exports of a run, the documents a pathologist reviews and signs.

Reports state what the numbers mean (ALL % excludes UNCERTAIN cells, Wilson 95% intervals,
how UNCERTAIN cells enter the metrics), carry full provenance, flag demo models and
cancelled runs in bold, and never show a made-up image: if a file cannot be re-read at export
time its image cell says why. Every file is written atomically (see `atomic.py`).

Text from files and folders is untrusted: a file named `=HYPERLINK(...).png` must never become
a live formula, so every string goes through `_text` (xlsx) or `_csv_safe` (csv). Reviewer
names are typed by users and are treated the same way.

With a `ReviewState` (see `review.py`) the reports carry the human review: reviewed labels
beside the model's, counts on the final labels, sign-offs and the audit trail. Without one
they are exactly what they were before reviews existed.
"""

from __future__ import annotations

import contextlib
import csv
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path, PurePath
from typing import Any

import cv2
import numpy as np
from openpyxl import Workbook
from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE, Cell
from openpyxl.drawing.image import Image as XlImage
from openpyxl.drawing.spreadsheet_drawing import AnchorMarker, TwoCellAnchor
from openpyxl.styles import Alignment, Border, Font, PatternFill, Side
from openpyxl.utils import get_column_letter
from openpyxl.utils.units import pixels_to_EMU
from openpyxl.worksheet.worksheet import Worksheet

from leukgui.core.atomic import ReportWriteError, atomic_write
from leukgui.core.imaging import ImageError, decode_image, thumbnail
from leukgui.core.metrics import (
    BinaryMetrics,
    SampleSummary,
    binary_metrics,
    decided_label,
    expected_calibration_error,
    normalize_truth,
    sample_summary,
    wilson_interval,
)
from leukgui.core.overlay import overlay
from leukgui.core.results import (
    ALL,
    DEMO_NOTICE,
    HEM,
    UNCERTAIN,
    CellResult,
    FileError,
    RunResult,
)
from leukgui.core.review import (
    UNCLASSIFIABLE,
    AuditEntry,
    ReviewState,
)

__all__ = [
    "IMAGE_LIMIT",
    "HeatmapPaths",
    "ReportWriteError",
    "write_csv",
    "write_excel",
    "write_heatmaps",
]

IMAGE_LIMIT = 2000  # above this many cells, images=None leaves thumbnails out (size, speed)

_FORMULA_PREFIXES = ("=", "+", "-", "@")
_CSV_RISKY_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
_MAX_CELL_TEXT = 32767  # Excel's limit for one cell

_BOLD = Font(bold=True)
_SMALL = Font(size=8)
_TITLE_FONT = Font(bold=True, size=16)
_BANNER_FONT = Font(bold=True, size=12, color="C00000")
_BANNER_FILL = PatternFill("solid", fgColor="FDE9E7")
_HEADER_FILL = PatternFill("solid", fgColor="D9E1F2")
_OVERALL_FILL = PatternFill("solid", fgColor="F2F2F2")
_LABEL_FILLS = {
    ALL: PatternFill("solid", fgColor="F4B6B0"),  # red-ish
    HEM: PatternFill("solid", fgColor="C6EFCE"),  # green-ish
    UNCERTAIN: PatternFill("solid", fgColor="FFE699"),  # amber
    UNCLASSIFIABLE: PatternFill("solid", fgColor="D9D9D9"),  # grey
}
_LIGHT = Side(style="thin", color="BFBFBF")
_BORDER = Border(left=_LIGHT, right=_LIGHT, top=_LIGHT, bottom=_LIGHT)
_HEADER_BORDER = Border(left=_LIGHT, right=_LIGHT, top=_LIGHT, bottom=Side(style="medium"))
_WRAP_TOP = Alignment(wrap_text=True, vertical="top")
_WRAP_CENTER = Alignment(wrap_text=True, vertical="center")
_HEADER_ALIGN = Alignment(wrap_text=True, vertical="center", horizontal="center")
_CENTER = Alignment(horizontal="center", vertical="center")
_INDENT = Alignment(horizontal="left", indent=1)
_VCENTER = Alignment(vertical="center")
_PCT = "0.0%"
_PROB = "0.000"
_IMG_PAD_PX = 3


# --------------------------------------------------------------------------- cell helpers


def _clean(value: object) -> str:
    """A string Excel can store: no XML-illegal control characters, within the length limit."""
    text = ILLEGAL_CHARACTERS_RE.sub("\ufffd", str(value))
    return text[:_MAX_CELL_TEXT]


def _text(ws: Worksheet, row: int, col: int, value: object) -> Cell:
    """Write `value` as a plain string cell, never as a formula.

    openpyxl turns any str starting with '=' into a formula; forcing the data type back to
    's' stores it as literal text, so untrusted file and folder names stay inert.
    """
    cell = ws.cell(row=row, column=col)
    if value is None:
        return cell
    cell.value = _clean(value)
    cell.data_type = "s"
    return cell


def _num(ws: Worksheet, row: int, col: int, value: float | None, fmt: str | None = None) -> Cell:
    """Write a number; NaN/None becomes the text "n/a" (Excel has no NaN, openpyxl would
    write a value that corrupts the file)."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        cell = _text(ws, row, col, "n/a")
        cell.alignment = Alignment(horizontal="right")
        return cell
    cell = ws.cell(row=row, column=col)
    cell.value = value
    if fmt:
        cell.number_format = fmt
    return cell


def _header(ws: Worksheet, row: int, names: Sequence[str], first_col: int = 1) -> None:
    for i, name in enumerate(names):
        cell = _text(ws, row, first_col + i, name)
        cell.font = _BOLD
        cell.fill = _HEADER_FILL
        cell.border = _HEADER_BORDER
        cell.alignment = _HEADER_ALIGN


def _widths(ws: Worksheet, widths: Sequence[float]) -> None:
    for i, width in enumerate(widths, 1):
        ws.column_dimensions[get_column_letter(i)].width = width


def _fit_width(values: Sequence[str], minimum: float, maximum: float) -> float:
    longest = max((len(v) for v in values), default=0)
    return float(min(maximum, max(minimum, longest + 2)))


def _banner(ws: Worksheet, row: int, text: str, last_col: int) -> None:
    cell = _text(ws, row, 1, text)
    cell.font = _BANNER_FONT
    cell.alignment = _VCENTER
    for col in range(1, last_col + 1):
        ws.cell(row=row, column=col).fill = _BANNER_FILL
    ws.merge_cells(start_row=row, start_column=1, end_row=row, end_column=last_col)
    ws.row_dimensions[row].height = 20


def _print_setup(ws: Worksheet, title_rows: str | None = None) -> None:
    """Landscape, one page wide: what a reviewer prints to sign."""
    ws.page_setup.orientation = "landscape"
    ws.page_setup.paperSize = ws.PAPERSIZE_A4
    ws.sheet_properties.pageSetUpPr.fitToPage = True
    ws.page_setup.fitToWidth = 1
    ws.page_setup.fitToHeight = 0
    if title_rows:
        ws.print_title_rows = title_rows


def _fmt_dt(value: datetime | None) -> str:
    if value is None:
        return ""
    return value.isoformat(sep=" ", timespec="seconds")


def _fmt_duration(info_started: datetime, info_finished: datetime | None) -> str:
    if info_finished is None:
        return ""
    try:
        seconds = (info_finished - info_started).total_seconds()
    except TypeError:  # naive vs aware datetimes
        return ""
    whole = int(round(seconds))
    h, rest = divmod(whole, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d} ({seconds:.1f} s)"


def _full_path(path: Path) -> str:
    """The absolute path, so a signed report still locates its image from any folder."""
    return str(Path(path).absolute())


def _short_sha(sha: str) -> str:
    return sha[:12] if sha else "unknown"


# --------------------------------------------------------------------------- names


class _DisplayNames:
    """File names as the user thinks of them: relative to the input folder they came from."""

    def __init__(self, inputs: Sequence[str]) -> None:
        roots = [PurePath(str(i)) for i in inputs if str(i)]
        # Deepest first, so a nested input folder wins over its parent.
        self._roots = sorted(roots, key=lambda p: len(p.parts), reverse=True)

    def __call__(self, path: Path) -> str:
        p = PurePath(str(path))
        for root in self._roots:
            if p == root:
                return p.name
            try:
                rel = p.relative_to(root)
            except ValueError:
                continue
            return rel.as_posix()
        return p.name


# --------------------------------------------------------------------------- images


@dataclass
class _Pictures:
    """Thumbnail and overlay PNGs for one cell, or the reason they are unavailable."""

    thumb: bytes | None = None
    heat: bytes | None = None
    thumb_reason: str = ""
    heat_reason: str = ""


def _read_checked(cell: CellResult) -> np.ndarray:
    """Re-read the cell's image; refuse it if it is not the image that was analyzed."""
    rgb = decode_image(cell.path)
    h, w = rgb.shape[:2]
    if cell.width and cell.height and (w, h) != (cell.width, cell.height):
        raise ImageError(
            f"file changed since analysis (was {cell.width}x{cell.height}, now {w}x{h})"
        )
    if cell.in_field:  # the crop the model saw, cut from the field again
        from leukgui.core.cells import cell_image

        return cell_image(cell)
    return rgb


def _png(rgb: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError("PNG encoding failed")
    return buf.tobytes()


def _fit(rgb: np.ndarray, px: int) -> np.ndarray:
    """Resize to fit px x px keeping the aspect ratio (no padding), so the overlay is drawn
    at display resolution: cheap for big images, not pixelated for tiny ones."""
    h, w = rgb.shape[:2]
    scale = px / max(h, w)
    if scale == 1.0:
        return rgb
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    interpolation = cv2.INTER_AREA if scale < 1.0 else cv2.INTER_LINEAR
    return cv2.resize(rgb, size, interpolation=interpolation)


def _pictures(cell: CellResult, px: int) -> _Pictures:
    try:
        rgb = _read_checked(cell)
    except (ImageError, OSError, ValueError) as exc:
        reason = f"image unavailable: {exc}"
        return _Pictures(thumb_reason=reason, heat_reason=reason)
    small = _fit(rgb, px)
    pics = _Pictures(thumb=_png(thumbnail(rgb, px)))
    try:
        # Overlay on the resized, unpadded image: same alignment, a fraction of the work.
        pics.heat = _png(thumbnail(overlay(small, cell.heatmap), px))
    except ValueError as exc:
        pics.heat_reason = f"heatmap unavailable: {exc}"
    return pics


class _PngImage(XlImage):
    """An openpyxl picture from PNG bytes of known size.

    The stock Image re-opens the bytes with Pillow twice (size at creation, data at save);
    for thousands of thumbnails that is a noticeable share of the export time.
    """

    def __init__(self, png: bytes, width: int, height: int) -> None:
        self.ref = png
        self.width = width
        self.height = height
        self.format = "png"

    def _data(self) -> bytes:
        return self.ref


def _add_picture(ws: Worksheet, png: bytes, row: int, col: int, px: int, left_px: int) -> None:
    """Anchor a px-square picture inside one cell, `left_px` from its left edge; it moves,
    sizes and hides with the row (so filtering does not pile up hidden rows' pictures)."""
    img = _PngImage(png, px, px)
    left = pixels_to_EMU(left_px)
    top = pixels_to_EMU(_IMG_PAD_PX)
    size = pixels_to_EMU(px)
    start = AnchorMarker(col=col - 1, colOff=left, row=row - 1, rowOff=top)
    end = AnchorMarker(col=col - 1, colOff=left + size, row=row - 1, rowOff=top + size)
    img.anchor = TwoCellAnchor(editAs="twoCell", _from=start, to=end)
    ws.add_image(img)


# --------------------------------------------------------------------------- sheets


def _images_decision(n_cells: int, images: bool | None) -> tuple[bool, str]:
    """Whether to embed pictures, and a sentence saying why not when they are left out."""
    if images is None:
        if n_cells > IMAGE_LIMIT:
            return False, (
                f"Thumbnails and heatmaps omitted: {n_cells:,} cells is more than the "
                f"{IMAGE_LIMIT:,} that are embedded automatically. Export the heatmap "
                "PNGs separately to review them."
            )
        return True, ""
    if images:
        return True, ""
    return False, "Thumbnails and heatmaps not included (turned off for this export)."


_SUMMARY_HEADERS = (
    "Sample",
    "Cells",
    "ALL",
    "HEM",
    "UNCERTAIN",
    "ALL %",
    "95% CI low",
    "95% CI high",
    "Errors",
)


_REVIEW_SUMMARY_HEADERS = (
    "Sample",
    "Cells",
    "ALL",
    "HEM",
    "UNCERTAIN",
    "UNCLASSIFIABLE",
    "Reviewed",
    "ALL %",
    "95% CI low",
    "95% CI high",
    "Errors",
    "Signed off by",
    "Signed off at (UTC)",
)


def _summary_sheet(
    ws: Worksheet, run: RunResult, image_note: str, review: ReviewState | None = None
) -> None:
    info = run.info
    headers = _SUMMARY_HEADERS if review is None else _REVIEW_SUMMARY_HEADERS
    last_col = len(headers)
    row = 1
    _text(ws, row, 1, "LeukGUI report").font = _TITLE_FONT
    ws.row_dimensions[row].height = 24
    row += 1
    if info.demo:
        _banner(ws, row, DEMO_NOTICE, last_col)
        row += 1
    if info.cancelled:
        done = len(run.outcomes)
        total = info.total_inputs or done
        _banner(ws, row, f"Run cancelled — {done} of {total} inputs analyzed", last_col)
        row += 1
    model = f"{info.model_name} {info.model_version}".strip()
    _text(ws, row, 1, "Model")
    _text(ws, row, 2, f"{model} (SHA-256 {_short_sha(info.model_sha256)})")
    row += 1
    _text(ws, row, 1, "Run")
    run_text = f"started {_fmt_dt(info.started)}"
    if info.finished is not None:
        run_text += f", finished {_fmt_dt(info.finished)}"
    _text(ws, row, 2, run_text)
    row += 1
    _text(ws, row, 1, "Threshold")
    lo, hi = info.uncertainty_band
    _text(
        ws,
        row,
        2,
        f"ALL when P(ALL) ≥ {info.threshold:.3f}, else HEM; "
        f"UNCERTAIN when {lo:.3f} < P(ALL) < {hi:.3f}",
    )
    row += 1
    if review is None:
        row, names = _model_summary_table(ws, run, row + 1)
    else:
        reviewed_rows = sample_summary(run, review)
        row, signers = _review_summary_table(ws, reviewed_rows, row)
        names = [s.sample for s in reviewed_rows]

    row += 2
    if review is None:
        notes = [
            "ALL % = ALL / (ALL + HEM). UNCERTAIN cells are counted but excluded from the "
            "denominator.",
        ]
    else:
        notes = [
            "Reviewed labels override the model's labels: every count and ALL % above uses "
            "each cell's reviewed label where a reviewer set one, otherwise the model's label. "
            "The Cells sheet shows both.",
            "ALL % = ALL / (ALL + HEM). UNCERTAIN (unreviewed cells the model left uncertain) "
            "and UNCLASSIFIABLE (cells a reviewer marked unclassifiable) are counted but "
            "excluded from the denominator.",
        ]
    notes += [
        "95% CI: Wilson score interval for the ALL proportion of each sample.",
        "Errors: inputs that could not be analyzed (listed on the Errors sheet); they are not "
        "counted as cells.",
    ]
    field_cells = [c for c in run.cells if c.in_field]
    if field_cells:
        n_fields = len({str(c.path) for c in field_cells})
        notes.append(
            f"Smear fields: {len(field_cells)} white cells were found in {n_fields} field "
            "image(s); each was cut out onto black like a C-NMC cell and classified. The Fields "
            "sheet counts the cells of every field and gives their boxes."
        )
    if review is not None:
        notes.append(
            "Every review action (who, when, label before and after) is listed on the Audit "
            "trail sheet; times are UTC."
        )
    if image_note:
        notes.append(image_note)
    _text(ws, row, 1, "Notes").font = _BOLD
    for note in notes:
        row += 1
        _text(ws, row, 1, note)
    row += 2
    _text(ws, row, 1, "Reviewed by:").font = _BOLD
    _text(ws, row, 5, "Date:").font = _BOLD
    row += 1
    _text(ws, row, 1, "Signature:").font = _BOLD

    names = names + ["Reviewed by:"]
    if review is None:
        _widths(ws, [_fit_width(names, 14, 40), 10, 9, 9, 12, 9, 11, 11, 9])
    else:
        _widths(
            ws,
            [
                _fit_width(names, 14, 40),
                10,
                9,
                9,
                12,
                17,
                10,
                9,
                11,
                11,
                9,
                _fit_width(signers + ["Signed off by"], 14, 30),
                22,
            ],
        )
    _print_setup(ws)


def _model_summary_table(ws: Worksheet, run: RunResult, row: int) -> tuple[int, list[str]]:
    """The per-sample table on the model's labels; returns (last row, sample names)."""
    header_row = row
    _header(ws, row, _SUMMARY_HEADERS)
    ws.row_dimensions[row].height = 30
    rows = sample_summary(run)
    for s in rows:
        row += 1
        _text(ws, row, 1, s.sample)
        _num(ws, row, 2, s.cells)
        _num(ws, row, 3, s.n_all)
        _num(ws, row, 4, s.n_hem)
        _num(ws, row, 5, s.n_uncertain)
        _num(ws, row, 6, s.all_fraction, _PCT)
        _num(ws, row, 7, s.ci_low, _PCT)
        _num(ws, row, 8, s.ci_high, _PCT)
        _num(ws, row, 9, s.errors)
        _table_row_style(ws, row, len(_SUMMARY_HEADERS), s.is_overall)
    ws.freeze_panes = ws.cell(row=header_row + 1, column=1)
    return row, [s.sample for s in rows]


def _table_row_style(ws: Worksheet, row: int, last_col: int, is_overall: bool) -> None:
    for col in range(1, last_col + 1):
        cell = ws.cell(row=row, column=col)
        cell.border = _BORDER
        if is_overall:
            cell.font = _BOLD
            cell.fill = _OVERALL_FILL


def _review_summary_table(
    ws: Worksheet, rows: list[SampleSummary], row: int
) -> tuple[int, list[str]]:
    """Review status line and the per-sample table on FINAL labels, with sign-offs.

    Returns (last row, the texts written in the "Signed off by" column, for its width).
    """
    overall = rows[-1]
    samples = rows[:-1]
    signed = sum(s.signed_off is not None for s in samples)
    _text(ws, row, 1, "Review").font = _BOLD
    status = _text(
        ws,
        row,
        2,
        f"Reviewed labels override the model's. {overall.reviewed} of {overall.cells} cells "
        f"reviewed; {signed} of {len(samples)} samples signed off.",
    )
    status.font = _BOLD
    row += 2
    header_row = row
    _header(ws, row, _REVIEW_SUMMARY_HEADERS)
    ws.row_dimensions[row].height = 30
    signers: list[str] = []
    for s in rows:
        row += 1
        _text(ws, row, 1, s.sample)
        for col, value in enumerate(
            (s.cells, s.n_all, s.n_hem, s.n_uncertain, s.n_unclassifiable, s.reviewed), 2
        ):
            _num(ws, row, col, value)
        _num(ws, row, 8, s.all_fraction, _PCT)
        _num(ws, row, 9, s.ci_low, _PCT)
        _num(ws, row, 10, s.ci_high, _PCT)
        _num(ws, row, 11, s.errors)
        if s.is_overall:
            signer = f"{signed} of {len(samples)} samples"
        elif s.signed_off is not None:
            signer = s.signed_off.reviewer
            _text(ws, row, 13, _fmt_review_time(s.signed_off.time))
        else:
            signer = "not signed off"
        signers.append(signer)
        cell = _text(ws, row, 12, signer)
        if s.signed_off is None and not s.is_overall:
            cell.font = Font(italic=True)
        for col in (12, 13):
            ws.cell(row=row, column=col).alignment = _INDENT
        _table_row_style(ws, row, len(_REVIEW_SUMMARY_HEADERS), s.is_overall)
    ws.freeze_panes = ws.cell(row=header_row + 1, column=1)
    return row, signers


def _fmt_review_time(iso: str) -> str:
    """An audit time (ISO 8601 UTC) as a reader-friendly UTC timestamp; unparsable as is."""
    try:
        moment = datetime.fromisoformat(iso)
    except (TypeError, ValueError):
        return iso
    if moment.utcoffset() is not None and moment.utcoffset().total_seconds() == 0:
        return moment.strftime("%Y-%m-%d %H:%M:%S")
    return iso


def _cells_sheet(
    ws: Worksheet,
    run: RunResult,
    names: _DisplayNames,
    include_images: bool,
    image_note: str,
    thumb_px: int,
    review: ReviewState | None = None,
) -> None:
    headers = ["#", "File", "Sample", "Subject", "Label"]
    if review is not None:
        # The review columns sit right beside the model's label, which is renamed so the
        # two can never be confused; everything after them moves right by `o` columns.
        headers[4] = "Model label"
        headers += ["Reviewed label", "Reviewer", "Reviewed at (UTC)"]
    o = 0 if review is None else 3
    headers += ["P(ALL)", "Truth", "Correct?" if review is None else "Model correct?"]
    headers += ["Full path"]
    if include_images:
        headers += ["Thumbnail", "Heatmap"]
    _header(ws, 1, headers)
    ws.row_dimensions[1].height = 30
    threshold = run.info.threshold
    # Wide enough for the picture and for an "image unavailable: <reason>" text instead.
    img_width = max(15.0, (thumb_px + 2 * _IMG_PAD_PX) / 7.0 + 1.5)
    img_left = max(_IMG_PAD_PX, (int(img_width * 7 + 5) - thumb_px) // 2)  # centred
    row_height = (thumb_px + 2 * _IMG_PAD_PX) * 0.75 + 1
    file_names: list[str] = []
    samples: list[str] = []
    paths: list[str] = []
    reviewers: list[str] = []
    for i, cell in enumerate(run.cells, 1):
        row = i + 1
        name = names(cell.path)
        if cell.in_field:  # the n-th white cell found in a smear field, and where
            x0, y0, x1, y1 = cell.box
            name = f"{name} #{cell.cell_index} at ({x0},{y0})-({x1},{y1})"
        file_names.append(name)
        samples.append(cell.sample)
        paths.append(_full_path(cell.path))
        _num(ws, row, 1, i)
        _text(ws, row, 2, name)
        _text(ws, row, 3, cell.sample)
        _text(ws, row, 4, cell.subject)
        label = _text(ws, row, 5, cell.label)
        label.fill = _LABEL_FILLS.get(cell.label, PatternFill())
        label.font = _BOLD
        label.alignment = _CENTER
        if review is not None:
            done = review.review_of(cell)
            if done is not None:
                reviewers.append(done.reviewer)
                mark = _text(ws, row, 6, done.label)
                mark.fill = _LABEL_FILLS.get(done.label, PatternFill())
                mark.font = _BOLD
                mark.alignment = _CENTER
                _text(ws, row, 7, done.reviewer)
                _text(ws, row, 8, _fmt_review_time(done.time))
        _num(ws, row, 6 + o, float(cell.p_all), _PROB)
        truth = normalize_truth(cell.truth)
        if cell.truth is not None:
            _text(ws, row, 7 + o, truth or cell.truth).alignment = _CENTER
        if truth is not None:
            called = decided_label(cell, threshold)
            verdict = "yes" if called == truth else "no"
            if cell.label == UNCERTAIN:
                verdict += " (by threshold)"
            _text(ws, row, 8 + o, verdict).alignment = _CENTER
        _text(ws, row, 9 + o, _full_path(cell.path))
        if include_images:
            ws.row_dimensions[row].height = row_height
            middle = (1, 2, 3, 4, 6, 9) if review is None else (1, 2, 3, 4, 7, 8, 9, 12)
            for col in middle:
                ws.cell(row=row, column=col).alignment = _VCENTER
            pics = _pictures(cell, thumb_px)
            for col, png, reason in (
                (10 + o, pics.thumb, pics.thumb_reason),
                (11 + o, pics.heat, pics.heat_reason),
            ):
                if png is not None:
                    _add_picture(ws, png, row, col, thumb_px, img_left)
                else:
                    note = _text(ws, row, col, reason)
                    note.alignment = _WRAP_CENTER
                    note.font = _SMALL
    n = len(file_names)
    last = get_column_letter(len(headers))
    ws.auto_filter.ref = f"A1:{last}{n + 1}"
    ws.freeze_panes = "C2"
    if image_note:
        note = _text(ws, 1, len(headers) + 2, image_note)
        note.font = Font(italic=True)
    widths = [
        max(5.0, len(str(n)) + 3),
        _fit_width(file_names + ["File"], 12, 45),
        _fit_width(samples + ["Sample"], 10, 30),
        10,
        12,
    ]
    if review is not None:
        widths += [18, _fit_width(reviewers + ["Reviewer"], 12, 30), 20]
    correct_width = 16 if any(c.label == UNCERTAIN for c in run.cells) else 10
    widths += [
        9,
        9,
        correct_width if review is None else max(correct_width, 16),
        _fit_width(paths + ["Full path"], 12, 70),
    ]
    if include_images:
        widths += [img_width, img_width]
    _widths(ws, widths)
    _print_setup(ws, "1:1")


_FIELD_HEADERS = (
    "Field",
    "Sample",
    "White cells",
    "ALL",
    "HEM",
    "UNCERTAIN",
    "Cells and boxes",
    "Note",
)


def _fields_sheet(ws: Worksheet, run: RunResult, names: _DisplayNames) -> None:
    """One row per smear field: how many white cells were found, their calls and boxes."""
    fields: dict[str, dict] = {}
    for o in run.outcomes:
        if isinstance(o, CellResult) and o.in_field:
            field_note = "; ".join(p for p in o.note.split("; ") if "image border" not in p)
            f = fields.setdefault(str(o.path), {"o": o, "cells": [], "note": field_note})
            f["cells"].append(o)
        elif isinstance(o, FileError) and o.reason.startswith("no white cell found"):
            fields.setdefault(str(o.path), {"o": o, "cells": [], "note": o.reason})
    _header(ws, 1, _FIELD_HEADERS)
    ws.row_dimensions[1].height = 30
    for row, f in enumerate(fields.values(), 2):
        cells = f["cells"]
        _text(ws, row, 1, names(f["o"].path))
        _text(ws, row, 2, f["o"].sample)
        _num(ws, row, 3, len(cells))
        for col, label in ((4, ALL), (5, HEM), (6, UNCERTAIN)):
            _num(ws, row, col, sum(c.label == label for c in cells))
        boxes = "; ".join(
            f"#{c.cell_index} {c.label} ({c.box[0]},{c.box[1]})-({c.box[2]},{c.box[3]})"
            + (" [cut by the image border]" if "image border" in c.note else "")
            for c in cells
        )
        _text(ws, row, 7, boxes)
        _text(ws, row, 8, f["note"])
    ws.freeze_panes = "B2"
    _widths(ws, [34, 16, 11, 7, 7, 13, 70, 50])
    _print_setup(ws, "1:1")


def _audit_sheet(ws: Worksheet, review: ReviewState, names: _DisplayNames) -> None:
    """Every review action in order: the record behind each reviewed label and sign-off."""
    headers = [
        "#",
        "Time (UTC)",
        "Reviewer",
        "Action",
        "Sample",
        "File",
        "Model label",
        "Before",
        "After",
        "Full path",
    ]
    _header(ws, 1, headers)
    ws.row_dimensions[1].height = 30
    entries = review.audit
    if not entries:
        _text(ws, 2, 1, "No review actions recorded")
    for row, e in enumerate(entries, 2):
        _num(ws, row, 1, row - 1)
        for col, value in enumerate(_audit_values(e, names), 2):
            _text(ws, row, col, value)
        ws.cell(row=row, column=2).alignment = _INDENT
        for col in (7, 8, 9):
            ws.cell(row=row, column=col).alignment = _CENTER
    if entries:
        ws.auto_filter.ref = f"A1:{get_column_letter(len(headers))}{len(entries) + 1}"
    ws.freeze_panes = "A2"
    _widths(
        ws,
        [
            max(5.0, len(str(len(entries))) + 3),
            20,
            _fit_width([e.reviewer for e in entries] + ["Reviewer"], 12, 30),
            10,
            _fit_width([e.sample for e in entries] + ["Sample"], 10, 30),
            _fit_width([names(Path(e.path)) for e in entries if e.path] + ["File"], 12, 45),
            12,
            17,
            17,
            _fit_width([e.path for e in entries] + ["Full path"], 12, 70),
        ],
    )
    _print_setup(ws, "1:1")


def _audit_values(e: AuditEntry, names: _DisplayNames) -> tuple[str | None, ...]:
    """One Audit trail row after the running number; None leaves the cell empty (no label
    before a first review, none after an undo, no cell for a sign-off)."""
    return (
        _fmt_review_time(e.time),
        e.reviewer,
        e.action,
        e.sample,
        names(Path(e.path)) if e.path else None,
        e.model_label or None,
        e.before,
        e.after,
        e.path or None,
    )


def _errors_sheet(ws: Worksheet, run: RunResult, names: _DisplayNames) -> None:
    headers = ["File", "Sample", "Reason", "Full path"]
    _header(ws, 1, headers)
    errors = run.errors
    if not errors:
        _text(ws, 2, 1, "No errors")
    file_names: list[str] = []
    reasons: list[str] = []
    paths: list[str] = []
    for row, err in enumerate(errors, 2):
        name = names(err.path)
        file_names.append(name)
        reasons.append(err.reason)
        paths.append(_full_path(err.path))
        _text(ws, row, 1, name)
        _text(ws, row, 2, err.sample)
        _text(ws, row, 3, err.reason).alignment = _WRAP_TOP
        _text(ws, row, 4, _full_path(err.path))
    if errors:
        ws.auto_filter.ref = f"A1:D{len(errors) + 1}"
    ws.freeze_panes = "A2"
    _widths(
        ws,
        [
            _fit_width(file_names + ["No errors"], 12, 45),
            _fit_width([e.sample for e in errors] + ["Sample"], 10, 30),
            _fit_width(reasons + ["Reason"], 20, 70),
            _fit_width(paths + ["Full path"], 12, 70),
        ],
    )
    _print_setup(ws, "1:1")


@dataclass(frozen=True)
class _TruthSet:
    """Cells with a usable truth, their binary calls and P(ALL), ready for the metrics."""

    truth: list[str]
    predicted: list[str]
    p_all: list[float]
    uncertain: int
    without_truth: int


def _truth_set(run: RunResult) -> _TruthSet:
    truth: list[str] = []
    predicted: list[str] = []
    p_all: list[float] = []
    uncertain = without = 0
    for cell in run.cells:
        t = normalize_truth(cell.truth)
        if t is None:
            without += 1
            continue
        truth.append(t)
        predicted.append(decided_label(cell, run.info.threshold))
        p_all.append(float(cell.p_all))
        uncertain += cell.label == UNCERTAIN
    return _TruthSet(truth, predicted, p_all, uncertain, without)


def _metric_rows(m: BinaryMetrics) -> list[tuple[str, float, tuple[int, int] | None, str]]:
    """(name, value, (k, n) for a Wilson CI or None, formula in words)."""
    return [
        ("Accuracy", m.accuracy, (m.tp + m.tn, m.n), "(TP + TN) / all cells with truth"),
        (
            "Precision",
            m.precision,
            (m.tp, m.tp + m.fp),
            "TP / (TP + FP): of cells called ALL, the share that are truly ALL",
        ),
        (
            "Recall (sensitivity)",
            m.recall,
            (m.tp, m.tp + m.fn),
            "TP / (TP + FN): of truly ALL cells, the share called ALL",
        ),
        (
            "Specificity",
            m.specificity,
            (m.tn, m.tn + m.fp),
            "TN / (TN + FP): of truly HEM cells, the share called HEM",
        ),
        (
            "F1 score",
            m.f1,
            None,
            "2·TP / (2·TP + FP + FN): harmonic mean of precision and recall",
        ),
        (
            "Misclassification rate",
            m.misclassification_rate,
            (m.fp + m.fn, m.n),
            "(FP + FN) / all cells with truth = 1 − accuracy",
        ),
        (
            "Balanced accuracy",
            m.balanced_accuracy,
            None,
            "(sensitivity + specificity) / 2: accuracy that ignores class imbalance",
        ),
        (
            "ROC AUC",
            m.roc_auc,
            None,
            "chance that a random ALL cell has a higher P(ALL) than a random HEM cell "
            "(ties count ½); threshold-free",
        ),
    ]


@dataclass(frozen=True)
class _ReviewedTruthSet:
    """Cells with truth on their FINAL labels (reviewed, else the model's call)."""

    truth: list[str]
    predicted: list[str]
    reviewed: int
    unclassifiable: int


def _reviewed_truth_set(run: RunResult, review: ReviewState) -> _ReviewedTruthSet | None:
    """Final labels vs truth, or None when no cell with a truth was reviewed (the block
    would repeat the model's figures)."""
    truth: list[str] = []
    predicted: list[str] = []
    reviewed = unclassifiable = 0
    any_reviewed = False
    for cell in run.cells:
        t = normalize_truth(cell.truth)
        if t is None:
            continue
        done = review.review_of(cell)
        any_reviewed |= done is not None
        if done is None:
            predicted.append(decided_label(cell, run.info.threshold))
        elif done.label == UNCLASSIFIABLE:
            unclassifiable += 1
            continue
        else:
            predicted.append(done.label)
            reviewed += 1
        truth.append(t)
    if not any_reviewed:
        return None
    return _ReviewedTruthSet(truth, predicted, reviewed, unclassifiable)


def _confusion_block(ws: Worksheet, row: int, m: BinaryMetrics, what: str = "Predicted") -> int:
    """The 2x2 confusion matrix with totals, starting at `row`; returns its last row."""
    _text(ws, row, 1, "Confusion matrix").font = _BOLD
    row += 1
    _header(ws, row, ["", f"{what} ALL", f"{what} HEM", "Total"])
    ws.row_dimensions[row].height = 30
    grid = [
        ("Truth ALL", m.tp, m.fn, "TP", "FN"),
        ("Truth HEM", m.fp, m.tn, "FP", "TN"),
    ]
    for name, a, b, a_tag, b_tag in grid:
        row += 1
        _text(ws, row, 1, name).font = _BOLD
        _num(ws, row, 2, a)
        _num(ws, row, 3, b)
        _num(ws, row, 4, a + b)
        tag = _text(ws, row, 5, f"{a_tag} = {a}, {b_tag} = {b}")
        tag.alignment = _INDENT
        tag.font = Font(italic=True)
        for col in range(1, 5):
            ws.cell(row=row, column=col).border = _BORDER
    row += 1
    _text(ws, row, 1, "Total").font = _BOLD
    _num(ws, row, 2, m.tp + m.fp)
    _num(ws, row, 3, m.fn + m.tn)
    _num(ws, row, 4, m.n)
    for col in range(1, 5):
        ws.cell(row=row, column=col).border = _BORDER
    return row


def _metric_table(ws: Worksheet, row: int, m: BinaryMetrics, with_auc: bool = True) -> int:
    """Metric / value / Wilson CI / formula rows starting at `row`; returns the last row."""
    _header(ws, row, ["Metric", "Value", "95% CI low", "95% CI high", "Formula"])
    ws.row_dimensions[row].height = 30
    for name, value, kn, formula in _metric_rows(m):
        if name == "ROC AUC" and not with_auc:
            continue
        row += 1
        _text(ws, row, 1, name)
        _num(ws, row, 2, value, _PROB)
        if kn is not None:
            low, high = wilson_interval(*kn)
            _num(ws, row, 3, low, _PROB)
            _num(ws, row, 4, high, _PROB)
        _text(ws, row, 5, formula).alignment = _INDENT
        for col in range(1, 6):
            ws.cell(row=row, column=col).border = _BORDER
    return row


def _metrics_sheet(
    ws: Worksheet, run: RunResult, ts: _TruthSet, reviewed: _ReviewedTruthSet | None = None
) -> None:
    m = binary_metrics(ts.truth, ts.predicted, ts.p_all)
    row = 1
    _text(ws, row, 1, "Classification metrics (ALL = positive class)").font = _TITLE_FONT
    ws.row_dimensions[row].height = 24
    row += 2
    counts = [
        ("Cells with truth", m.n),
        ("  truly ALL", m.n_positive),
        ("  truly HEM", m.n_negative),
        ("Cells without truth (not in metrics)", ts.without_truth),
        ("UNCERTAIN cells among cells with truth", ts.uncertain),
    ]
    for name, value in counts:
        _text(ws, row, 1, name)
        _num(ws, row, 2, value)
        row += 1
    _text(
        ws,
        row,
        1,
        f"UNCERTAIN cells are counted by the decision threshold alone: ALL when "
        f"P(ALL) ≥ {run.info.threshold:.3f}, otherwise HEM ({ts.uncertain} "
        f"{'cell' if ts.uncertain == 1 else 'cells'}).",
    ).font = Font(italic=True)
    row += 2

    row = _confusion_block(ws, row, m)
    row += 2

    row = _metric_table(ws, row, m)
    row += 1
    ece = expected_calibration_error(ts.truth, ts.p_all)
    _text(ws, row, 1, "Calibration error (ECE)")
    _num(ws, row, 2, ece, _PROB)
    _text(
        ws,
        row,
        5,
        "gap between P(ALL) and the observed ALL fraction, averaged over 10 P(ALL) bins "
        "weighted by cells; 0 = perfect",
    ).alignment = _INDENT
    for col in range(1, 6):
        ws.cell(row=row, column=col).border = _BORDER
    row += 2
    _text(ws, row, 1, "n/a: the ratio is undefined (its denominator is zero).").font = Font(
        italic=True
    )
    if reviewed is not None:
        _reviewed_metrics_block(ws, row + 3, reviewed)
    _widths(ws, [38, 12, 12, 12, 100])
    _print_setup(ws)


def _reviewed_metrics_block(ws: Worksheet, row: int, rts: _ReviewedTruthSet) -> None:
    """Second block: the final (reviewed) labels against truth, below the model's."""
    m = binary_metrics(rts.truth, rts.predicted)
    _text(ws, row, 1, "Reviewed labels vs truth").font = _TITLE_FONT
    ws.row_dimensions[row].height = 24
    row += 1
    _text(
        ws,
        row,
        1,
        "The metrics above are the model's own calls. Here each cell counts with its reviewed "
        "label where a reviewer set one, otherwise with the model's call (UNCERTAIN resolved by "
        "the threshold, as above). Cells reviewed UNCLASSIFIABLE are excluded.",
    ).font = Font(italic=True)
    row += 2
    for name, value in [
        ("Cells with truth in this block", m.n),
        ("  of them with a reviewed label", rts.reviewed),
        ("  truly ALL", m.n_positive),
        ("  truly HEM", m.n_negative),
        ("Reviewed UNCLASSIFIABLE (excluded)", rts.unclassifiable),
    ]:
        _text(ws, row, 1, name)
        _num(ws, row, 2, value)
        row += 1
    row += 1
    row = _confusion_block(ws, row, m, what="Final")
    row += 2
    row = _metric_table(ws, row, m, with_auc=False)
    row += 2
    _text(
        ws,
        row,
        1,
        "ROC AUC and calibration measure P(ALL), which a review does not change: see the "
        "model's block above.",
    ).font = Font(italic=True)


def _provenance_sheet(ws: Worksheet, run: RunResult) -> None:
    info = run.info
    _header(ws, 1, ["Item", "Value"])
    lo, hi = info.uncertainty_band
    items: list[tuple[str, Any]] = [
        ("App version", info.app_version),
        ("Model name", info.model_name),
        ("Model version", info.model_version),
        ("Model SHA-256", info.model_sha256),
        ("Backbone", info.backbone),
        ("Input size (px)", info.input_size),
        ("Decision threshold (P(ALL))", info.threshold),
        ("Uncertainty band (P(ALL))", f"{lo:.3f} – {hi:.3f} (UNCERTAIN strictly inside)"),
    ]
    if info.demo:
        items.append(("Demo model", DEMO_NOTICE))
    if info.inputs:
        items += [(f"Input {i}", str(p)) for i, p in enumerate(info.inputs, 1)]
    else:
        items.append(("Inputs", "(none recorded)"))
    items += [
        ("Started", _fmt_dt(info.started)),
        ("Finished", _fmt_dt(info.finished) or "(not finished)"),
        ("Duration", _fmt_duration(info.started, info.finished)),
        ("Cancelled", "yes" if info.cancelled else "no"),
        ("Total inputs", info.total_inputs),
        ("Inputs analyzed", len(run.outcomes)),
        ("Cells", len(run.cells)),
        ("Errors", len(run.errors)),
        ("Device", info.device),
        ("TensorFlow version", info.tensorflow_version),
        ("Keras version", info.keras_version),
        ("Report generated", _fmt_dt(datetime.now().astimezone())),
    ]
    items += [(str(k), v) for k, v in info.extra.items()]
    for row, (key, value) in enumerate(items, 2):
        _text(ws, row, 1, key).font = _BOLD
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            cell = _num(ws, row, 2, value)
            cell.alignment = Alignment(horizontal="left")
        else:
            _text(ws, row, 2, value)
    ws.freeze_panes = "A2"
    values = [str(v) for _, v in items]
    _widths(ws, [_fit_width([k for k, _ in items], 20, 40), _fit_width(values, 30, 90)])
    _print_setup(ws, "1:1")


# --------------------------------------------------------------------------- public API


def write_excel(
    run: RunResult,
    path: Path,
    *,
    images: bool | None = None,
    thumb_px: int = 64,
    review: ReviewState | None = None,
) -> None:
    """Write the signed-off report: Summary, Cells, Errors, Metrics (with truth), Provenance.

    `images=None` embeds a thumbnail and heatmap per cell only up to `IMAGE_LIMIT` cells, to
    keep big exports fast and small; the Summary says when they were left out. Raises
    `ReportWriteError` (previous file untouched) when the file cannot be written.

    With a `review`, the Summary counts FINAL labels (reviewed, else the model's) and shows
    sign-offs, the Cells sheet puts the reviewed label, reviewer and time beside the model's
    label, an "Audit trail" sheet lists every review action, and the Metrics sheet adds
    "Reviewed labels vs truth" below the model's metrics. Without one, nothing changes.
    """
    if thumb_px < 8:
        raise ValueError(f"thumb_px must be at least 8, got {thumb_px}")
    path = Path(path)
    include_images, image_note = _images_decision(len(run.cells), images)
    names = _DisplayNames(run.info.inputs)

    wb = Workbook()
    summary = wb.active
    summary.title = "Summary"
    _summary_sheet(summary, run, image_note, review)
    cells = wb.create_sheet("Cells")
    _cells_sheet(cells, run, names, include_images, image_note, thumb_px, review)
    if any(c.in_field for c in run.cells) or any(
        isinstance(o, FileError) and o.reason.startswith("no white cell found")
        for o in run.outcomes
    ):
        _fields_sheet(wb.create_sheet("Fields"), run, names)
    _errors_sheet(wb.create_sheet("Errors"), run, names)
    ts = _truth_set(run)
    if ts.truth:
        reviewed = _reviewed_truth_set(run, review) if review is not None else None
        _metrics_sheet(wb.create_sheet("Metrics"), run, ts, reviewed)
    if review is not None:
        _audit_sheet(wb.create_sheet("Audit trail"), review, names)
    _provenance_sheet(wb.create_sheet("Provenance"), run)
    wb.properties.creator = f"LeukGUI {run.info.app_version}"
    wb.properties.title = "LeukGUI report"

    atomic_write(path, wb.save)


def _csv_safe(value: object) -> str:
    """OWASP CSV-injection rule: prefix texts a spreadsheet would run as a formula with '."""
    if value is None:
        return ""
    text = str(value)
    if text.startswith(_CSV_RISKY_PREFIXES):
        return "'" + text
    return text


_CSV_COLUMNS = ("file", "sample", "subject", "status", "label", "p_all", "truth", "reason", "path")


_CSV_REVIEW_COLUMNS = ("reviewed_label", "reviewer", "reviewed_at")


def write_csv(run: RunResult, path: Path, review: ReviewState | None = None) -> None:
    """One row per input in input order, UTF-8 with BOM so Excel shows accents correctly.

    Errors are rows too (status "error" with the reason), so nothing silently disappears.
    With a `review`, columns reviewed_label, reviewer and reviewed_at (ISO 8601 UTC) follow
    the model's `label` (empty for unreviewed cells and errors); without one the columns are
    exactly the plain export's.
    """
    path = Path(path)
    names = _DisplayNames(run.info.inputs)
    columns = list(_CSV_COLUMNS)
    if review is not None:
        at = columns.index("label") + 1
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
                        _full_path(o.path),
                    ]
                else:
                    row = [
                        names(o.path),
                        o.sample,
                        "",
                        "error",
                        "",
                        "",
                        "",
                        o.reason,
                        _full_path(o.path),
                    ]
                if review is not None:
                    at = _CSV_COLUMNS.index("label") + 1
                    row[at:at] = reviewed(o)
                out.writerow([_csv_safe(v) for v in row])

    atomic_write(path, write)


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


def _safe_part(name: str, fallback: str) -> str:
    """A folder/file name component valid on Windows, macOS and Linux."""
    cleaned = _UNSAFE_NAME.sub("_", name).strip().rstrip(". ")
    if not cleaned or cleaned in (".", ".."):
        return fallback
    stem = cleaned.split(".")[0].upper()
    reserved = {"CON", "PRN", "AUX", "NUL"} | {f"COM{i}" for i in range(1, 10)}
    reserved |= {f"LPT{i}" for i in range(1, 10)}
    if stem in reserved:
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
            rgb = _read_checked(cell)
            png = _png(overlay(rgb, cell.heatmap))
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
