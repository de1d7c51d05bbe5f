"""The Excel report of an analysis run, the document a pathologist reviews and signs.

Reports state what the numbers mean (ALL % excludes UNCERTAIN cells, Wilson 95% intervals,
how UNCERTAIN cells enter the metrics), carry full provenance, flag demo models and
cancelled runs in bold, and never show a made-up image: if a file cannot be re-read at export
time its image cell says why. The file is written atomically (see `atomic.py`).

Text from files and folders is untrusted: every string goes through `xlsx.text_cell`, so a
file named `=HYPERLINK(...).png` never becomes a live formula, and a name that is not valid
text (Latin-1 bytes from a USB stick) or holds control characters shows U+FFFD instead of
corrupting the workbook; its "Full path" cell then also gives the exact path (`_path_text`).
Reviewer names are typed by users and are treated the same way. The CSV and heatmap exports
are in `exports.py`.

With a `ReviewState` (see `review.py`) the report carries the human review: reviewed labels
beside the model's, counts on the final labels, sign-offs and the audit trail. Without one
it is exactly what it was before reviews existed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from openpyxl import Workbook
from openpyxl.styles import Alignment, PatternFill
from openpyxl.utils import get_column_letter
from openpyxl.worksheet.pagebreak import Break
from openpyxl.worksheet.worksheet import Worksheet

from leukgui.core.atomic import ReportWriteError, atomic_write
from leukgui.core.engine import CALIBRATION_ROW, RUNTIME_ROWS, STAIN_ROW, TTA_ROW
from leukgui.core.exports import (
    IMAGE_CHANGED,
    DisplayNames,
    exact_full_path,
    field_scales,
    full_path,
    png_bytes,
    reread_cell,
)
from leukgui.core.formatting import duration, local_time, utc_time
from leukgui.core.imaging import ImageError, thumbnail
from leukgui.core.metric_table import (
    METRIC_WIDTHS,
    binary_metric_rows,
    calibration_row,
    write_confusion_matrix,
    write_metric_notes,
    write_metric_table,
)
from leukgui.core.metrics import (
    SampleSummary,
    TruthSet,
    decided_label,
    expected_calibration_error,
    normalize_truth,
    sample_summary,
    truth_set,
)
from leukgui.core.overlay import overlay
from leukgui.core.results import (
    ALL,
    DEMO_NOTICE,
    HEM,
    NO_WHITE_CELL,
    UNCERTAIN,
    CellResult,
    FileError,
    RunResult,
)
from leukgui.core.review import AuditEntry, ReviewState
from leukgui.core.xlsx import (
    BOLD,
    BORDER,
    CENTER,
    INDENT,
    INT,
    ITALIC,
    PCT,
    PROB,
    SECTION_FONT,
    SMALL,
    VCENTER,
    WRAP_CENTER,
    WRAP_TOP,
    banner_row,
    fit_width,
    header_row,
    label_fill,
    number_cell,
    page_header,
    picture_in_cell,
    print_setup,
    set_widths,
    span_note,
    text_cell,
    title_cell,
    wrap_columns,
)

__all__ = ["IMAGE_LIMIT", "ReportWriteError", "write_excel"]

IMAGE_LIMIT = 2000  # above this many cells, images=None leaves thumbnails out (size, speed)

_ALL_SAMPLES_FILL = PatternFill("solid", fgColor="F2F2F2")
_IMG_PAD_PX = 3
_CENTER_TOP = Alignment(horizontal="center", vertical="top")
_INDENTED = Alignment(horizontal="left", indent=1, wrap_text=True)
PROVENANCE_VALUE_WIDTH = 80  # characters; longer values wrap
MODEL_ROWS = (CALIBRATION_ROW, STAIN_ROW, TTA_ROW)  # provenance rows shown with the model


def band_text(lo: float, hi: float) -> str:
    """The uncertainty rule in words; a model whose band is empty (its validation found no
    band worth having) has no UNCERTAIN cells, and "0.553 < P < 0.553" would read as a bug."""
    if hi > lo:
        return f"UNCERTAIN when {lo:.3f} < P(ALL) < {hi:.3f}"
    return "no uncertainty band (no cell is UNCERTAIN)"


def _run_duration(started: datetime, finished: datetime | None) -> str:
    """How long the run took, or "" while it is unfinished or its times cannot be compared."""
    if finished is None:
        return ""
    try:
        return duration((finished - started).total_seconds())
    except TypeError:  # naive vs aware datetimes
        return ""


def _path_text(path: Path) -> str:
    """The "Full path" of a file: as a person reads it, plus the exact path (undecodable
    bytes and control characters as %XX, see `text.exact_path`) when the two differ, so the
    file can still be found from the report."""
    shown = full_path(path)
    exact = exact_full_path(path)
    if exact == shown or exact == shown.replace("%", "%25"):
        return shown
    return f"{shown}\n(exact path: {exact})"


def _short_sha(sha: str) -> str:
    return sha[:12] if sha else "unknown"


def _model_text(run: RunResult) -> str:
    """The model as the window and the CLI name it: "name vversion"."""
    return f"{run.info.model_name} v{run.info.model_version}"


def _sheet_title(ws: Worksheet, run: RunResult, name: str) -> None:
    """Row 1 of every sheet: which sheet of which run, so each printed page set is labelled
    even when it is separated from the rest ("Cells — run of 2026-11-30 14:02, model X v1")."""
    started = run.info.started
    when = started.strftime("%Y-%m-%d %H:%M") if started is not None else "unknown time"
    title_cell(ws, 1, f"{name} — run of {when}, model {_model_text(run)}")


def _page_headers(wb: Workbook, run: RunResult) -> None:
    """The same page header on every sheet: the model (with its hash) and the run's start."""
    info = run.info
    left = f"LeukGUI report — {_model_text(run)} (SHA-256 {_short_sha(info.model_sha256)})"
    if info.demo:
        left += " — DEMO MODEL"
    right = f"Run started {local_time(info.started) or 'unknown'}"
    if info.cancelled:
        right += " (cancelled)"
    for ws in wb.worksheets:
        page_header(ws, left, right)


# --------------------------------------------------------------------------- images


@dataclass
class _Pictures:
    """Thumbnail and overlay PNGs for one cell, or the reason they are unavailable."""

    thumb: bytes | None = None
    heat: bytes | None = None
    thumb_reason: str = ""
    heat_reason: str = ""


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
        rgb = reread_cell(cell)
    except (ImageError, OSError, ValueError) as exc:
        reason = IMAGE_CHANGED if str(exc) == IMAGE_CHANGED else f"image unavailable: {exc}"
        return _Pictures(thumb_reason=reason, heat_reason=reason)
    small = _fit(rgb, px)
    pics = _Pictures(thumb=png_bytes(thumbnail(rgb, px)))
    try:
        # Overlay on the resized, unpadded image: same alignment, a fraction of the work.
        pics.heat = png_bytes(thumbnail(overlay(small, cell.heatmap), px))
    except ValueError as exc:
        pics.heat_reason = f"heatmap unavailable: {exc}"
    return pics


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
    _sheet_title(ws, run, "LeukGUI report")
    row += 1
    if info.demo:
        banner_row(ws, row, DEMO_NOTICE, last_col)
        row += 1
    if info.cancelled:
        done = len(run.outcomes)
        total = info.total_inputs or done
        banner_row(ws, row, f"Run cancelled — {done} of {total} inputs analyzed", last_col)
        row += 1
    text_cell(ws, row, 1, "Model")
    text_cell(ws, row, 2, f"{_model_text(run)} (SHA-256 {_short_sha(info.model_sha256)})")
    row += 1
    text_cell(ws, row, 1, "Run")
    run_text = f"started {local_time(info.started)}"
    if info.finished is not None:
        run_text += f", finished {local_time(info.finished)}"
    text_cell(ws, row, 2, run_text)
    row += 1
    text_cell(ws, row, 1, "Threshold")
    lo, hi = info.uncertainty_band
    text_cell(
        ws,
        row,
        2,
        f"ALL when P(ALL) ≥ {info.threshold:.3f}, else HEM; " + band_text(lo, hi),
    )
    row += 1
    if review is None:
        head_row, row, names = _model_summary_table(ws, run, row + 1)
    else:
        reviewed_rows = sample_summary(run, review)
        head_row, row, signers = _review_summary_table(ws, reviewed_rows, row)
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
            "sheet counts the cells of every field and gives its scale (µm per pixel) and "
            "where that came from; the Field cells sheet gives each cell's box, size in px "
            "and µm, and whether the image border cuts it."
        )
    if review is not None:
        notes.append(
            "Every review action (who, when, label before and after) is listed on the Audit "
            "trail sheet; times are UTC."
        )
    if image_note:
        notes.append(image_note)
    text_cell(ws, row, 1, "Notes").font = BOLD
    note_rows = []
    for note in notes:
        row += 1
        text_cell(ws, row, 1, note)
        note_rows.append(row)
    row += 2
    text_cell(ws, row, 1, "Reviewed by:").font = BOLD
    text_cell(ws, row, 5, "Date:").font = BOLD
    row += 1
    text_cell(ws, row, 1, "Signature:").font = BOLD

    names = names + ["Reviewed by:"]
    if review is None:
        set_widths(ws, [fit_width(names, 14, 40), 10, 9, 9, 12, 9, 11, 11, 9])
    else:
        set_widths(
            ws,
            [
                fit_width(names, 14, 40),
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
                fit_width(signers + ["Signed off by"], 14, 30),
                22,
            ],
        )
    for note_row in note_rows:
        span_note(ws, note_row, last_col)
    print_setup(ws, f"{head_row}:{head_row}")


def _model_summary_table(ws: Worksheet, run: RunResult, row: int) -> tuple[int, int, list[str]]:
    """The per-sample table on the model's labels; returns (header row, last row, sample
    names)."""
    head_row = row
    header_row(ws, row, _SUMMARY_HEADERS)
    ws.row_dimensions[row].height = 30
    rows = sample_summary(run)
    for s in rows:
        row += 1
        text_cell(ws, row, 1, s.sample)
        number_cell(ws, row, 2, s.cells)
        number_cell(ws, row, 3, s.n_all)
        number_cell(ws, row, 4, s.n_hem)
        number_cell(ws, row, 5, s.n_uncertain)
        number_cell(ws, row, 6, s.all_fraction, PCT)
        number_cell(ws, row, 7, s.ci_low, PCT)
        number_cell(ws, row, 8, s.ci_high, PCT)
        number_cell(ws, row, 9, s.errors)
        _table_row_style(ws, row, len(_SUMMARY_HEADERS), s.is_overall)
    ws.freeze_panes = ws.cell(row=head_row + 1, column=1)
    return head_row, row, [s.sample for s in rows]


def _table_row_style(ws: Worksheet, row: int, last_col: int, is_overall: bool) -> None:
    for col in range(1, last_col + 1):
        cell = ws.cell(row=row, column=col)
        cell.border = BORDER
        if is_overall:
            cell.font = BOLD
            cell.fill = _ALL_SAMPLES_FILL


def _review_summary_table(
    ws: Worksheet, rows: list[SampleSummary], row: int
) -> tuple[int, int, list[str]]:
    """Review status line and the per-sample table on FINAL labels, with sign-offs.

    Returns (header row, last row, the texts written in the "Signed off by" column, for its
    width).
    """
    all_samples = rows[-1]
    samples = rows[:-1]
    signed = sum(s.signed_off is not None for s in samples)
    text_cell(ws, row, 1, "Review").font = BOLD
    status = text_cell(
        ws,
        row,
        2,
        f"Reviewed labels override the model's. {all_samples.reviewed} of "
        f"{all_samples.cells} cells reviewed; {signed} of {len(samples)} samples signed off.",
    )
    status.font = BOLD
    row += 2
    head_row = row
    header_row(ws, row, _REVIEW_SUMMARY_HEADERS)
    ws.row_dimensions[row].height = 30
    signers: list[str] = []
    for s in rows:
        row += 1
        text_cell(ws, row, 1, s.sample)
        for col, value in enumerate(
            (s.cells, s.n_all, s.n_hem, s.n_uncertain, s.n_unclassifiable, s.reviewed), 2
        ):
            number_cell(ws, row, col, value)
        number_cell(ws, row, 8, s.all_fraction, PCT)
        number_cell(ws, row, 9, s.ci_low, PCT)
        number_cell(ws, row, 10, s.ci_high, PCT)
        number_cell(ws, row, 11, s.errors)
        if s.is_overall:
            signer = f"{signed} of {len(samples)} samples"
        elif s.signed_off is not None:
            signer = s.signed_off.reviewer
            text_cell(ws, row, 13, utc_time(s.signed_off.time))
        else:
            signer = "not signed off"
        signers.append(signer)
        cell = text_cell(ws, row, 12, signer)
        if s.signed_off is None and not s.is_overall:
            cell.font = ITALIC
        for col in (12, 13):
            ws.cell(row=row, column=col).alignment = INDENT
        _table_row_style(ws, row, len(_REVIEW_SUMMARY_HEADERS), s.is_overall)
    ws.freeze_panes = ws.cell(row=head_row + 1, column=1)
    return head_row, row, signers


def _cells_sheet(
    ws: Worksheet,
    run: RunResult,
    names: DisplayNames,
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
    # Last: the exact pixels each row reports on (results saved without hashes have none).
    sha_col = len(headers) + 1 if any(c.sha256 for c in run.cells) else 0
    if sha_col:
        headers += ["SHA-256 of the file"]
    _sheet_title(ws, run, "Cells")
    head = 2
    if image_note:  # said above the table, where a reader of the Cells sheet looks
        text_cell(ws, head, 1, image_note).font = ITALIC
        head += 1
    header_row(ws, head, headers)
    ws.row_dimensions[head].height = 30
    threshold = run.info.threshold
    # Wide enough for the picture and for an "image unavailable: <reason>" text instead.
    img_width = max(15.0, (thumb_px + 2 * _IMG_PAD_PX) / 7.0 + 1.5)
    img_left = max(_IMG_PAD_PX, (int(img_width * 7 + 5) - thumb_px) // 2)  # centred
    img_row_pt = (thumb_px + 2 * _IMG_PAD_PX) * 0.75 + 1
    file_names: list[str] = []
    samples: list[str] = []
    paths: list[str] = []
    reviewers: list[str] = []
    for i, cell in enumerate(run.cells, 1):
        row = i + head
        name = names(cell.path)
        if cell.in_field:  # the n-th white cell found in a smear field, and where
            x0, y0, x1, y1 = cell.box
            name = f"{name} #{cell.cell_index} at ({x0},{y0})-({x1},{y1})"
        elif cell.note:  # how the file was read: EXIF orientation, an ignored tail, ...
            name = f"{name}\n[{cell.note}]"
        file_names.append(name)
        samples.append(cell.sample)
        paths.append(full_path(cell.path))
        path_text = _path_text(cell.path)
        number_cell(ws, row, 1, i)
        text_cell(ws, row, 2, name)
        text_cell(ws, row, 3, cell.sample)
        text_cell(ws, row, 4, cell.subject)
        label = text_cell(ws, row, 5, cell.label)
        label.fill = label_fill(cell.label)
        label.font = BOLD
        label.alignment = CENTER
        if review is not None:
            done = review.review_of(cell)
            if done is not None:
                reviewers.append(done.reviewer)
                mark = text_cell(ws, row, 6, done.label)
                mark.fill = label_fill(done.label)
                mark.font = BOLD
                mark.alignment = CENTER
                text_cell(ws, row, 7, done.reviewer)
                text_cell(ws, row, 8, utc_time(done.time))
        number_cell(ws, row, 6 + o, float(cell.p_all), PROB)
        truth = normalize_truth(cell.truth)
        if cell.truth is not None:
            text_cell(ws, row, 7 + o, truth or cell.truth).alignment = CENTER
        if truth is not None:
            called = decided_label(cell, threshold)
            verdict = "yes" if called == truth else "no"
            if cell.label == UNCERTAIN:
                verdict += " (by threshold)"
            text_cell(ws, row, 8 + o, verdict).alignment = CENTER
        text_cell(ws, row, 9 + o, path_text)
        if sha_col:
            sha = text_cell(ws, row, sha_col, cell.sha256)
            sha.font = SMALL  # 64 hex digits: one line in small type, a few in a picture row
            sha.alignment = WRAP_CENTER if include_images else VCENTER
        if include_images:
            ws.row_dimensions[row].height = img_row_pt
            middle = (1, 2, 3, 4, 6, 9) if review is None else (1, 2, 3, 4, 7, 8, 9, 12)
            for col in middle:
                ws.cell(row=row, column=col).alignment = VCENTER
            pics = _pictures(cell, thumb_px)
            for col, png, reason in (
                (10 + o, pics.thumb, pics.thumb_reason),
                (11 + o, pics.heat, pics.heat_reason),
            ):
                if png is not None:
                    picture_in_cell(ws, png, row, col, thumb_px, img_left, _IMG_PAD_PX)
                else:
                    note = text_cell(ws, row, col, reason)
                    note.alignment = WRAP_CENTER
                    note.font = SMALL
    n = len(file_names)
    last = get_column_letter(len(headers))
    ws.auto_filter.ref = f"A{head}:{last}{n + head}"
    ws.freeze_panes = f"C{head + 1}"
    # Long texts (names, paths) wrap in bounded columns: the sheet must stay near one page
    # wide, or fit-to-width prints every thumbnail and figure too small to read. With
    # pictures the rows are tall anyway, so the columns can be narrower (more lines).
    file_max, sample_max, path_max = (24, 16, 32) if include_images else (45, 30, 60)
    widths = [
        max(5.0, len(str(n)) + 3),
        fit_width(file_names + ["File"], 12, file_max),
        fit_width(samples + ["Sample"], 10, sample_max),
        10,
        12,
    ]
    if review is not None:
        reviewer_width = fit_width(reviewers + ["Reviewer"], 12, 16 if include_images else 30)
        # "2026-11-30 13:52:21" takes two lines in a tall row
        widths += [17, reviewer_width, 11 if include_images else 20]
    correct_width = 16 if any(c.label == UNCERTAIN for c in run.cells) else 10
    if review is not None:
        correct_width = max(correct_width, 16)
    if include_images:  # "no (by threshold)" may take two lines
        correct_width = min(correct_width, 11)
    widths += [9, 9, correct_width, fit_width(paths + ["Full path"], 12, path_max)]
    if include_images:
        widths += [img_width, img_width]
    if sha_col:
        widths += [17 if include_images else 46]
    set_widths(ws, widths)
    wrapped = [2, 3, 8 + o, 9 + o] + ([7, 8] if review is not None else [])
    wrap_columns(ws, wrapped, head + 1, n + head)
    print_setup(ws, f"{head}:{head}")


_FIELD_HEADERS = (
    "Field",
    "Sample",
    "White cells",
    "ALL",
    "HEM",
    "UNCERTAIN",
    "µm per pixel",
    "Scale source",
    "Scale check",
    "Cells and boxes",
    "Note",
)
UM_PER_PX_FORMAT = "0.0000"  # µm per pixel: 0.0770 (BCCD) to a few µm
UM_FORMAT = "0.00"  # diameters (µm, px)
AREA_FORMAT = "0.0"  # µm²


def _optional_number(ws: Worksheet, row: int, col: int, value: float | None, fmt: str) -> None:
    """A number, or an empty cell when it is unknown (a single-cell image has no box, a
    field without a scale no µm): never a zero or an "n/a" that reads like a measurement."""
    if value is not None:
        number_cell(ws, row, col, value, fmt)


def _fields_sheet(ws: Worksheet, run: RunResult, names: DisplayNames) -> None:
    """One row per smear field: how many white cells were found, their calls and boxes, and
    the field's scale (µm per pixel), where it came from and whether it needs a look (an
    implausible or default scale, or one that disagrees with the sample's other fields)."""
    scales = field_scales(run)
    fields: dict[str, dict] = {}
    for o in run.outcomes:
        if isinstance(o, CellResult) and o.in_field:
            field_note = "; ".join(p for p in o.note.split("; ") if "image border" not in p)
            f = fields.setdefault(str(o.path), {"o": o, "cells": [], "note": field_note})
            f["cells"].append(o)
        elif isinstance(o, FileError) and o.kind == NO_WHITE_CELL:
            fields.setdefault(str(o.path), {"o": o, "cells": [], "note": o.reason})
    _sheet_title(ws, run, "Fields")
    header_row(ws, 2, _FIELD_HEADERS)
    ws.row_dimensions[2].height = 30
    for row, f in enumerate(fields.values(), 3):
        cells = f["cells"]
        text_cell(ws, row, 1, names(f["o"].path))
        text_cell(ws, row, 2, f["o"].sample)
        number_cell(ws, row, 3, len(cells))
        for col, label in ((4, ALL), (5, HEM), (6, UNCERTAIN)):
            number_cell(ws, row, col, sum(c.label == label for c in cells))
        scale = scales.get(str(f["o"].path))
        if scale is not None:
            _optional_number(ws, row, 7, scale.um_per_px, UM_PER_PX_FORMAT)
            text_cell(ws, row, 8, scale.source or None)
            if scale.flag:
                check = text_cell(ws, row, 9, scale.flag)
                check.font = BOLD
        boxes = "; ".join(
            f"#{c.cell_index} {c.label} ({c.box[0]},{c.box[1]})-({c.box[2]},{c.box[3]})"
            + (" [cut by the image border]" if "image border" in c.note else "")
            for c in cells
        )
        text_cell(ws, row, 10, boxes)
        text_cell(ws, row, 11, f["note"])
    ws.freeze_panes = "B3"
    set_widths(ws, [26, 14, 8, 6, 6, 13, 9, 16, 18, 40, 34])
    for row in range(3, len(fields) + 3):
        ws.cell(row=row, column=7).alignment = _CENTER_TOP
    wrap_columns(ws, [1, 2, 8, 9, 10, 11], 3, len(fields) + 2)
    print_setup(ws, "2:2")


_FIELD_CELL_HEADERS = (
    "#",
    "Field",
    "Sample",
    "Cell no.",
    "x0",
    "y0",
    "x1",
    "y1",
    "Area (px)",
    "Diameter (px)",
    "Area (µm²)",
    "Diameter (µm)",
    "µm per pixel",
    "Scale source",
    "Cut by border",
    "Label",
)


def _field_cells_sheet(ws: Worksheet, run: RunResult, names: DisplayNames) -> None:
    """One row per white cell found in a smear field, as numbers a spreadsheet can use: its
    row on the Cells sheet ("#"), its number in the field, its box (x0, y0, x1, y1: image
    px, exclusive ends), its area and equivalent-circle diameter in px and in µm² / µm at
    the field's scale, the scale and its source, and whether the image border cuts it.
    µm values stay empty when the scale is unknown (sessions saved before scales)."""
    _sheet_title(ws, run, "Field cells")
    header_row(ws, 2, _FIELD_CELL_HEADERS)
    ws.row_dimensions[2].height = 30
    file_names: list[str] = []
    sources: list[str] = []
    row = 2
    for i, c in enumerate(run.cells, 1):  # i: the cell's "#" on the Cells sheet
        if not c.in_field or c.box is None:
            continue
        row += 1
        name = names(c.path)
        file_names.append(name)
        sources.append(c.scale_source)
        number_cell(ws, row, 1, i)
        text_cell(ws, row, 2, name)
        text_cell(ws, row, 3, c.sample)
        _optional_number(ws, row, 4, c.cell_index, INT)
        for col, value in enumerate(c.box, 5):
            number_cell(ws, row, col, int(value), INT)
        _optional_number(ws, row, 9, c.area_px, INT)
        _optional_number(ws, row, 10, c.diameter_px, UM_FORMAT)
        _optional_number(ws, row, 11, c.area_um2, AREA_FORMAT)
        _optional_number(ws, row, 12, c.diameter_um, UM_FORMAT)
        _optional_number(ws, row, 13, c.um_per_px, UM_PER_PX_FORMAT)
        ws.cell(row=row, column=13).alignment = CENTER  # apart from the source beside it
        text_cell(ws, row, 14, c.scale_source or None).alignment = _INDENTED
        if c.touches_border is not None:
            text_cell(ws, row, 15, "yes" if c.touches_border else "no").alignment = CENTER
        label = text_cell(ws, row, 16, c.label)
        label.fill = label_fill(c.label)
        label.alignment = CENTER
    ws.auto_filter.ref = f"A2:{get_column_letter(len(_FIELD_CELL_HEADERS))}{row}"
    ws.freeze_panes = "C3"
    set_widths(
        ws,
        [
            5,
            fit_width(file_names + ["Field"], 12, 30),
            fit_width([c.sample for c in run.cells if c.in_field] + ["Sample"], 9, 16),
            6,
            6,
            6,
            6,
            6,
            9,
            9,
            9,
            9,
            9,
            fit_width(sources + ["Scale source"], 12, 20),
            8,
            12,
        ],
    )
    wrap_columns(ws, [2, 3, 14], 3, row)
    print_setup(ws, "2:2")


def _audit_sheet(ws: Worksheet, run: RunResult, review: ReviewState, names: DisplayNames) -> None:
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
    _sheet_title(ws, run, "Audit trail")
    header_row(ws, 2, headers)
    ws.row_dimensions[2].height = 30
    entries = review.audit
    if not entries:
        text_cell(ws, 3, 1, "No review actions recorded")
    for row, e in enumerate(entries, 3):
        number_cell(ws, row, 1, row - 2)
        for col, value in enumerate(_audit_values(e, names), 2):
            text_cell(ws, row, col, value)
        ws.cell(row=row, column=2).alignment = INDENT
        for col in (7, 8, 9):  # top, like the wrapped file and path beside them
            ws.cell(row=row, column=col).alignment = _CENTER_TOP
    if entries:
        ws.auto_filter.ref = f"A2:{get_column_letter(len(headers))}{len(entries) + 2}"
    ws.freeze_panes = "A3"
    set_widths(
        ws,
        [
            max(5.0, len(str(len(entries))) + 3),
            20,
            fit_width([e.reviewer for e in entries] + ["Reviewer"], 12, 20),
            10,
            fit_width([e.sample for e in entries] + ["Sample"], 10, 20),
            fit_width([names(Path(e.path)) for e in entries if e.path] + ["File"], 12, 30),
            12,
            16,
            16,
            fit_width([e.path for e in entries] + ["Full path"], 12, 40),
        ],
    )
    wrap_columns(ws, [3, 5, 6, 10], 3, len(entries) + 2)
    print_setup(ws, "2:2")


def _audit_values(e: AuditEntry, names: DisplayNames) -> tuple[str | None, ...]:
    """One Audit trail row after the running number; None leaves the cell empty (no label
    before a first review, none after an undo, no cell for a sign-off)."""
    return (
        utc_time(e.time),
        e.reviewer,
        e.action,
        e.sample,
        names(Path(e.path)) if e.path else None,
        e.model_label or None,
        e.before,
        e.after,
        e.path or None,
    )


def _errors_sheet(ws: Worksheet, run: RunResult, names: DisplayNames) -> None:
    """One row per input that could not be analyzed: what kind of failure, and why."""
    headers = ["File", "Sample", "Kind", "Reason", "Full path"]
    _sheet_title(ws, run, "Errors")
    header_row(ws, 2, headers)
    errors = run.errors
    if not errors:
        text_cell(ws, 3, 1, "No errors")
    file_names: list[str] = []
    kinds: list[str] = []
    paths: list[str] = []
    for row, err in enumerate(errors, 3):
        name = names(err.path)
        kind = err.kind_text
        file_names.append(name)
        kinds.append(kind)
        paths.append(full_path(err.path))
        text_cell(ws, row, 1, name)
        text_cell(ws, row, 2, err.sample)
        text_cell(ws, row, 3, kind)
        text_cell(ws, row, 4, err.reason).alignment = WRAP_TOP
        text_cell(ws, row, 5, _path_text(err.path))
    if errors:
        ws.auto_filter.ref = f"A2:{get_column_letter(len(headers))}{len(errors) + 2}"
    ws.freeze_panes = "A3"
    set_widths(
        ws,
        [
            fit_width(file_names + ["No errors"], 12, 30),
            fit_width([e.sample for e in errors] + ["Sample"], 10, 20),
            fit_width(kinds + ["Kind"], 8, 20),
            fit_width([e.reason for e in errors] + ["Reason"], 20, 50),
            fit_width(paths + ["Full path"], 12, 45),
        ],
    )
    wrap_columns(ws, [1, 2, 4, 5], 3, len(errors) + 2)
    print_setup(ws, "2:2")


def _metrics_sheet(ws: Worksheet, run: RunResult, review: ReviewState | None) -> None:
    """The model's calls against truth; with a review that labelled a cell with truth, the
    final labels against truth below them."""
    model = truth_set(run)
    m = model.metrics()
    _sheet_title(ws, run, "Metrics")
    set_widths(ws, METRIC_WIDTHS)  # first: long notes are wrapped to these widths
    row = 2
    text_cell(ws, row, 1, "Classification metrics (ALL = positive class)").font = SECTION_FONT
    row += 2
    counts = [
        ("Cells with truth", m.n),
        ("  truly ALL", m.n_positive),
        ("  truly HEM", m.n_negative),
        ("Cells without truth (not in metrics)", model.without_truth),
        ("UNCERTAIN cells among cells with truth", model.uncertain),
    ]
    for name, value in counts:
        text_cell(ws, row, 1, name)
        number_cell(ws, row, 2, value)
        row += 1
    text_cell(
        ws,
        row,
        1,
        f"UNCERTAIN cells are counted by the decision threshold alone: ALL when "
        f"P(ALL) ≥ {run.info.threshold:.3f}, otherwise HEM ({model.uncertain} "
        f"{'cell' if model.uncertain == 1 else 'cells'}).",
    ).font = ITALIC
    row += 2
    row = write_confusion_matrix(ws, row, m, called="Predicted")
    row += 2
    ece = expected_calibration_error(model.truth, model.p_all)
    row = write_metric_table(ws, row, [*binary_metric_rows(m), calibration_row(ece)])
    row = write_metric_notes(ws, row + 2)
    if review is not None:
        reviewed = truth_set(run, review)
        if reviewed.any_reviewed:
            ws.row_breaks.append(Break(id=row + 2))  # the second block starts a printed page
            _reviewed_metrics_block(ws, row + 3, reviewed)
    print_setup(ws, "1:1")  # several tables: the sheet's title heads every page


def _reviewed_metrics_block(ws: Worksheet, row: int, reviewed: TruthSet) -> None:
    """Second block: the final (reviewed) labels against truth, below the model's."""
    m = reviewed.metrics()
    title_cell(ws, row, "Reviewed labels vs truth")
    row += 1
    text_cell(
        ws,
        row,
        1,
        "The metrics above are the model's own calls. Here each cell counts with its reviewed "
        "label where a reviewer set one, otherwise with the model's call (UNCERTAIN resolved by "
        "the threshold, as above). Cells reviewed UNCLASSIFIABLE are excluded.",
    ).font = ITALIC
    span_note(ws, row, len(METRIC_WIDTHS))
    row += 2
    for name, value in [
        ("Cells with truth in this block", m.n),
        ("  of them with a reviewed label", reviewed.reviewed),
        ("  truly ALL", m.n_positive),
        ("  truly HEM", m.n_negative),
        ("Reviewed UNCLASSIFIABLE (excluded)", reviewed.unclassifiable),
    ]:
        text_cell(ws, row, 1, name)
        number_cell(ws, row, 2, value)
        row += 1
    row += 1
    row = write_confusion_matrix(ws, row, m, called="Final")
    row += 2
    row = write_metric_table(ws, row, binary_metric_rows(m, auc=False))
    row += 2
    text_cell(
        ws,
        row,
        1,
        "ROC AUC and calibration measure P(ALL), which a review does not change: see the "
        "model's block above.",
    ).font = ITALIC


def _provenance_sheet(ws: Worksheet, run: RunResult) -> None:
    info = run.info
    _sheet_title(ws, run, "Provenance")
    header_row(ws, 2, ["Item", "Value"])
    lo, hi = info.uncertainty_band
    items: list[tuple[str, Any]] = [
        ("App version", info.app_version),
        ("Model name", info.model_name),
        ("Model version", info.model_version),
        ("Model SHA-256", info.model_sha256),
        ("Backbone", info.backbone),
        ("Input size (px)", info.input_size),
        ("Decision threshold (P(ALL))", info.threshold),
        (
            "Uncertainty band (P(ALL))",
            f"{lo:.3f} – {hi:.3f} (UNCERTAIN strictly inside)" if hi > lo else "none",
        ),
    ]
    # How the scores were made (calibration, stain normalisation, test-time augmentation)
    # belongs with the model, not among the run's other settings.
    items += [(key, info.extra[key]) for key in MODEL_ROWS if key in info.extra]
    if info.demo:
        items.append(("Demo model", DEMO_NOTICE))
    if info.inputs:
        items += [(f"Input {i}", str(p)) for i, p in enumerate(info.inputs, 1)]
    else:
        items.append(("Inputs", "(none recorded)"))
    items += [
        ("Started", local_time(info.started)),
        ("Finished", local_time(info.finished) or "(not finished)"),
        ("Duration", _run_duration(info.started, info.finished)),
        ("Cancelled", "yes" if info.cancelled else "no"),
        ("Total inputs", info.total_inputs),
        ("Inputs analyzed", len(run.outcomes)),
        ("Cells", len(run.cells)),
        ("Errors", len(run.errors)),
        ("Device", info.device),
        *[(key, info.extra[key]) for key in RUNTIME_ROWS if key in info.extra],
        ("TensorFlow version", info.tensorflow_version),
        ("Keras version", info.keras_version),
        ("Report generated", local_time(datetime.now().astimezone())),
    ]
    items += [
        (str(k), v) for k, v in info.extra.items() if k not in MODEL_ROWS and k not in RUNTIME_ROWS
    ]
    for row, (key, value) in enumerate(items, 3):
        key_cell = text_cell(ws, row, 1, key)
        key_cell.font = BOLD
        key_cell.alignment = WRAP_TOP
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            cell = number_cell(ws, row, 2, value)
            cell.alignment = Alignment(horizontal="left", vertical="top")
        else:
            text_cell(ws, row, 2, value).alignment = WRAP_TOP
    ws.freeze_panes = "A3"
    values = [str(v) for _, v in items]
    # Long values (paths, SHA-256, settings) wrap in a bounded column: one very wide column
    # would make fit-to-width print the whole sheet unreadably small.
    set_widths(
        ws,
        [fit_width([k for k, _ in items], 20, 32), fit_width(values, 30, PROVENANCE_VALUE_WIDTH)],
    )
    wrap_columns(ws, [1, 2], 3, len(items) + 2)
    print_setup(ws, "2:2")


# --------------------------------------------------------------------------- public API


def write_excel(
    run: RunResult,
    path: Path,
    *,
    images: bool | None = None,
    thumb_px: int = 96,
    review: ReviewState | None = None,
) -> None:
    """Write the signed-off report: Summary, Cells, Fields and Field cells (with smear
    fields), Errors, Metrics (with truth), Provenance.

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
    names = DisplayNames(run.info.inputs)

    wb = Workbook()
    summary = wb.active
    summary.title = "Summary"
    _summary_sheet(summary, run, image_note, review)
    cells = wb.create_sheet("Cells")
    _cells_sheet(cells, run, names, include_images, image_note, thumb_px, review)
    if any(c.in_field for c in run.cells) or any(e.kind == NO_WHITE_CELL for e in run.errors):
        _fields_sheet(wb.create_sheet("Fields"), run, names)
    if any(c.in_field for c in run.cells):
        _field_cells_sheet(wb.create_sheet("Field cells"), run, names)
    _errors_sheet(wb.create_sheet("Errors"), run, names)
    if any(normalize_truth(c.truth) is not None for c in run.cells):
        _metrics_sheet(wb.create_sheet("Metrics"), run, review)
    if review is not None:
        _audit_sheet(wb.create_sheet("Audit trail"), run, review, names)
    _provenance_sheet(wb.create_sheet("Provenance"), run)
    _page_headers(wb, run)
    wb.properties.creator = f"LeukGUI {run.info.app_version}"
    wb.properties.title = "LeukGUI report"

    atomic_write(path, wb.save)
