"""Building blocks for every workbook LeukGUI writes: the analysis report, the training and
evaluation reports and the backbone comparison.

One place for cell styles and for the rules that keep a generated workbook safe and readable:
text from files, folders and users is untrusted, so `text_cell` always stores a literal string
(a file named `=HYPERLINK(...).png` never becomes a live formula) without the control
characters Excel's XML cannot hold; `number_cell` writes NaN as "n/a" (Excel has no NaN);
sheets print landscape, one page wide, with a page header naming the run and "Page n of m"
in the footer (`print_setup`, `page_header`).
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE, Cell
from openpyxl.drawing.image import Image as XlImage
from openpyxl.drawing.spreadsheet_drawing import AnchorMarker, TwoCellAnchor
from openpyxl.styles import Alignment, Border, Font, PatternFill, Side
from openpyxl.utils import get_column_letter
from openpyxl.utils.units import pixels_to_EMU
from openpyxl.worksheet.page import PageMargins
from openpyxl.worksheet.worksheet import Worksheet

from leukgui.core.results import ALL, HEM, UNCERTAIN, UNCLASSIFIABLE
from leukgui.core.text import display_text

__all__ = [
    "BANNER_FILL",
    "BANNER_FONT",
    "BEST_FILL",
    "BOLD",
    "BORDER",
    "CENTER",
    "HEADER_FILL",
    "INDENT",
    "INT",
    "ITALIC",
    "LEFT_TOP",
    "MAX_CELL_TEXT",
    "NOTE_FONT",
    "PCT",
    "PROB",
    "SECTION_FONT",
    "SMALL",
    "TITLE_FONT",
    "VCENTER",
    "WRAP_CENTER",
    "WRAP_TOP",
    "KeyValues",
    "PngImage",
    "banner_row",
    "border_row",
    "clean_text",
    "embed_png",
    "fit_width",
    "header_row",
    "header_text",
    "label_fill",
    "number_cell",
    "page_header",
    "picture_in_cell",
    "print_setup",
    "printed_scale",
    "row_height",
    "set_widths",
    "span_note",
    "text_cell",
    "title_cell",
    "wrap_columns",
]

MAX_CELL_TEXT = 32767  # Excel's limit for one cell

# Number formats
PCT = "0.0%"
PROB = "0.000"
INT = "#,##0"

# Fonts and fills
BOLD = Font(bold=True)
SMALL = Font(size=8)
ITALIC = Font(italic=True)
NOTE_FONT = Font(italic=True, color="595959")
TITLE_FONT = Font(bold=True, size=16)
SECTION_FONT = Font(bold=True, size=12)
BANNER_FONT = Font(bold=True, size=12, color="C00000")
BANNER_FILL = PatternFill("solid", fgColor="FDE9E7")
HEADER_FILL = PatternFill("solid", fgColor="D9E1F2")
BEST_FILL = PatternFill("solid", fgColor="C6EFCE")  # the best value in a table
_LABEL_FILLS = {
    ALL: PatternFill("solid", fgColor="F4B6B0"),  # red-ish
    HEM: PatternFill("solid", fgColor="C6EFCE"),  # green-ish
    UNCERTAIN: PatternFill("solid", fgColor="FFE699"),  # amber
    UNCLASSIFIABLE: PatternFill("solid", fgColor="D9D9D9"),  # grey
}

# Borders and alignments
_LIGHT = Side(style="thin", color="BFBFBF")
BORDER = Border(left=_LIGHT, right=_LIGHT, top=_LIGHT, bottom=_LIGHT)
_HEADER_BORDER = Border(left=_LIGHT, right=_LIGHT, top=_LIGHT, bottom=Side(style="medium"))
WRAP_TOP = Alignment(wrap_text=True, vertical="top")
WRAP_CENTER = Alignment(wrap_text=True, vertical="center")
_HEADER_ALIGN = Alignment(wrap_text=True, vertical="center", horizontal="center")
CENTER = Alignment(horizontal="center", vertical="center")
INDENT = Alignment(horizontal="left", indent=1)
VCENTER = Alignment(vertical="center")
LEFT_TOP = Alignment(horizontal="left", vertical="top")
_RIGHT = Alignment(horizontal="right")


def label_fill(label: str | None) -> PatternFill:
    """The fill of a label cell (ALL red, HEM green, UNCERTAIN amber, UNCLASSIFIABLE grey)."""
    return _LABEL_FILLS.get(label, PatternFill())


# --------------------------------------------------------------------------- cells


def clean_text(value: object) -> str:
    """A string Excel can store: no XML-illegal control characters and no undecodable bytes
    of a file name (both become U+FFFD, see `text.display_text`), within the length limit."""
    text = display_text(value)
    return text[:MAX_CELL_TEXT]


def text_cell(ws: Worksheet, row: int, col: int, value: object) -> Cell:
    """Write `value` as a plain string cell, never as a formula; None leaves the cell empty.

    openpyxl turns any str starting with '=' into a formula; forcing the data type back to
    's' stores it as literal text, so untrusted file and folder names stay inert.
    """
    cell = ws.cell(row=row, column=col)
    if value is None:
        return cell
    cell.value = clean_text(value)
    cell.data_type = "s"
    return cell


def number_cell(
    ws: Worksheet, row: int, col: int, value: float | None, fmt: str | None = None
) -> Cell:
    """Write a number; NaN/None becomes the text "n/a" (Excel has no NaN, openpyxl would
    write a value that corrupts the file)."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        cell = text_cell(ws, row, col, "n/a")
        cell.alignment = _RIGHT
        return cell
    cell = ws.cell(row=row, column=col)
    cell.value = value
    if fmt:
        cell.number_format = fmt
    return cell


def title_cell(ws: Worksheet, row: int, text: str) -> Cell:
    """A sheet or block title in column A, on a row tall enough for its large font."""
    cell = text_cell(ws, row, 1, text)
    cell.font = TITLE_FONT
    ws.row_dimensions[row].height = 24
    return cell


def header_row(ws: Worksheet, row: int, names: Sequence[str], first_col: int = 1) -> None:
    """Bold, shaded, wrapped column headers starting at `first_col`."""
    for i, name in enumerate(names):
        cell = text_cell(ws, row, first_col + i, name)
        cell.font = BOLD
        cell.fill = HEADER_FILL
        cell.border = _HEADER_BORDER
        cell.alignment = _HEADER_ALIGN


def border_row(ws: Worksheet, row: int, last_col: int, first_col: int = 1) -> None:
    """Thin borders on one table row, so a printed table stays readable."""
    for col in range(first_col, last_col + 1):
        ws.cell(row=row, column=col).border = BORDER


def banner_row(ws: Worksheet, row: int, text: str, last_col: int, width_chars: float = 0.0) -> None:
    """A red warning across columns 1..last_col (demo model, cancelled run)."""
    cell = text_cell(ws, row, 1, text)
    cell.font = BANNER_FONT
    cell.alignment = VCENTER
    for col in range(1, last_col + 1):
        ws.cell(row=row, column=col).fill = BANNER_FILL
    ws.merge_cells(start_row=row, start_column=1, end_row=row, end_column=last_col)
    ws.row_dimensions[row].height = 20
    if width_chars and len(str(text)) > width_chars:  # wrap inside the merged cells
        cell.alignment = WRAP_CENTER
        ws.row_dimensions[row].height = row_height(str(text), width_chars, 16.0) + 4


# --------------------------------------------------------------------------- layout


def set_widths(ws: Worksheet, widths: Sequence[float]) -> None:
    """Column widths (in characters) from column A on."""
    for i, width in enumerate(widths, 1):
        ws.column_dimensions[get_column_letter(i)].width = width


def fit_width(values: Sequence[str], minimum: float, maximum: float) -> float:
    """A column width that fits the longest of `values`, kept within minimum..maximum."""
    longest = max((len(v) for v in values), default=0)
    return float(min(maximum, max(minimum, longest + 2)))


def row_height(text: str, width_chars: float, line_pt: float = 15.0) -> float:
    """Row height that shows `text` wrapped in a column `width_chars` wide (Excel does not
    size wrapped rows of a generated file by itself)."""
    per_line = max(10, int(width_chars * 1.1))
    lines = sum(max(1, math.ceil(len(part) / per_line)) for part in str(text).split("\n"))
    return max(line_pt, lines * line_pt)


# Printing. A4 landscape, in inches as openpyxl stores them: 1 cm side margins leave the
# table as much width as possible; the header and footer sit inside the top/bottom margins.
_MARGINS = {"left": 0.4, "right": 0.4, "top": 0.75, "bottom": 0.6, "header": 0.3, "footer": 0.25}
_A4_LANDSCAPE_IN = (11.69, 8.27)
_PAGE_FOOTER = "Page &P of &N"  # Excel codes: this page, number of pages
_HEADER_PART_CHARS = 80  # Excel allows 255 characters for the whole header


def header_text(value: object, limit: int = _HEADER_PART_CHARS) -> str:
    """`value` as literal text for a page header or footer.

    In a header '&' starts a code (&D date, &P page, &"font", &12 size), so a model named
    "R&D" would print "R" and a date; '&&' is Excel's escape for one '&'. Line breaks and
    control characters become spaces, and long text is shortened (before escaping, so an
    '&&' pair is never cut in half).
    """
    text = " ".join(display_text(ILLEGAL_CHARACTERS_RE.sub(" ", str(value))).split())
    if len(text) > limit:
        text = text[: limit - 1].rstrip() + "…"
    return text.replace("&", "&&")


def page_header(ws: Worksheet, left: str, right: str = "") -> None:
    """Print `left` and `right` (plain text, escaped here) in the page header, so a loose
    printed page still says which run it belongs to. The middle stays empty: a long `left`
    runs into it (the sheet's name is in the footer)."""
    header = ws.oddHeader  # every page: no different first or even pages are set
    header.left.text = header_text(left) or None
    header.right.text = header_text(right) or None
    header.left.size = header.right.size = 9


def wrap_columns(ws: Worksheet, columns: Sequence[int], first_row: int, last_row: int) -> None:
    """Wrap the text of `columns` in rows first_row..last_row and make each row tall enough
    for its longest wrapped text (never lower than it is), so a long path or setting takes a
    few lines in a column of reasonable width instead of a column that makes fit-to-width
    print the whole sheet tiny. Call it after the column widths are set."""
    widths = {col: ws.column_dimensions[get_column_letter(col)].width or 8.43 for col in columns}
    for row in range(first_row, last_row + 1):
        needed = 0.0
        for col in columns:
            cell = ws.cell(row=row, column=col)
            old = cell.alignment
            cell.alignment = Alignment(
                wrap_text=True, horizontal=old.horizontal, vertical=old.vertical or "top"
            )
            if isinstance(cell.value, str) and cell.value:
                # 0.9: lines break at spaces and slashes, so they run a little short.
                needed = max(needed, row_height(cell.value, widths[col] * 0.9))
        current = ws.row_dimensions[row].height
        if needed > 15.0 and (current is None or current < needed):
            ws.row_dimensions[row].height = needed
            for cell in ws[row]:  # the row's other cells line up with the wrapped text's top
                if cell.alignment.vertical is None:
                    old = cell.alignment
                    cell.alignment = Alignment(
                        horizontal=old.horizontal, indent=old.indent, vertical="top"
                    )


def span_note(ws: Worksheet, row: int, last_col: int) -> None:
    """Let the text in column A of `row` wrap across columns A..last_col (merged), with the
    row as tall as it needs. A long note left in one cell runs past the table's right edge,
    and fit-to-width then shrinks the whole printed page to include it."""
    cell = ws.cell(row=row, column=1)
    width = sum(
        ws.column_dimensions[get_column_letter(c)].width or 8.43 for c in range(1, last_col + 1)
    )
    ws.merge_cells(start_row=row, start_column=1, end_row=row, end_column=last_col)
    cell.alignment = WRAP_TOP
    ws.row_dimensions[row].height = row_height(str(cell.value or ""), width)


def print_setup(ws: Worksheet, title_rows: str | None = None) -> None:
    """Landscape A4, one page wide and as many pages long as needed, narrow margins,
    `title_rows` (e.g. "2:2", the table header) repeated on every page, and the sheet's name,
    "Page n of m" and the file's name in the footer: what a reviewer prints to sign.
    `page_header` adds the run to the header."""
    ws.page_setup.orientation = "landscape"
    ws.page_setup.paperSize = ws.PAPERSIZE_A4
    ws.sheet_properties.pageSetUpPr.fitToPage = True
    ws.page_setup.fitToWidth = 1
    ws.page_setup.fitToHeight = 0  # 0: no limit on the number of pages down
    ws.page_margins = PageMargins(**_MARGINS)
    footer = ws.oddFooter
    footer.left.text = "&A"  # Excel code: the sheet's name
    footer.center.text = _PAGE_FOOTER
    footer.right.text = "&F"  # Excel code: the workbook's file name
    footer.left.size = footer.center.size = footer.right.size = 9
    if title_rows:
        ws.print_title_rows = title_rows


def _column_px(width: float) -> int:
    """Excel's on-screen pixel width of a column `width` characters wide (Calibri 11)."""
    return int(width * 7 + 5)


def printed_scale(ws: Worksheet, default_width: float = 8.43) -> float:
    """The zoom that fit-to-width prints `ws` at (1.0 = full size): the printable width of
    an A4 landscape page over the width of the used columns. A table much wider than the
    page prints tiny; this says by how much, so a report can be kept readable."""
    last = ws.max_column
    total = 0
    for col in range(1, last + 1):
        width = ws.column_dimensions[get_column_letter(col)].width
        total += _column_px(width if width else default_width)
    margins = ws.page_margins
    printable_px = (_A4_LANDSCAPE_IN[0] - margins.left - margins.right) * 96
    return min(1.0, printable_px / max(1, total))


# --------------------------------------------------------------------------- pictures


class PngImage(XlImage):
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


def picture_in_cell(
    ws: Worksheet, png: bytes, row: int, col: int, px: int, left_px: int, top_px: int
) -> None:
    """Anchor a px-square picture inside one cell, `left_px`/`top_px` from its corner; it
    moves, sizes and hides with the row (so filtering does not pile up hidden rows' pictures)."""
    img = PngImage(png, px, px)
    left = pixels_to_EMU(left_px)
    top = pixels_to_EMU(top_px)
    size = pixels_to_EMU(px)
    start = AnchorMarker(col=col - 1, colOff=left, row=row - 1, rowOff=top)
    end = AnchorMarker(col=col - 1, colOff=left + size, row=row - 1, rowOff=top + size)
    img.anchor = TwoCellAnchor(editAs="twoCell", _from=start, to=end)
    ws.add_image(img)


def embed_png(ws: Worksheet, png: bytes, anchor: str, shown_width: int) -> int:
    """Place a PNG at `anchor` (e.g. "A2") scaled to `shown_width` px; returns the number of
    default-height rows it covers, so the caller can write below it."""
    from PIL import Image

    with Image.open(io.BytesIO(png)) as im:
        width, height = im.size
    shown_height = round(height * shown_width / width)
    ws.add_image(PngImage(png, shown_width, shown_height), anchor)
    return math.ceil(shown_height / 20) + 1  # default rows are 20 px high


# --------------------------------------------------------------------------- key/value blocks


NOTE_KEY_WIDTH = 34  # the key column's usual width, for wrapping notes across both columns


class KeyValues:
    """Writes 'key | value' rows down columns A and B of a sheet, tracking the row.

    Values are written by type: bool as yes/no, numbers with a format, None as "(none)",
    other objects as JSON; a long value wraps and its row grows to show it.
    """

    def __init__(self, ws: Worksheet, row: int, value_width: float) -> None:
        self.ws = ws
        self.row = row
        self.value_width = value_width

    def section(self, title: str) -> None:
        """A blank row, then a section title."""
        self.row += 1
        text_cell(self.ws, self.row, 1, title).font = SECTION_FONT
        self.row += 1

    def add(self, key: str, value: Any, fmt: str | None = None, *, bold: bool = False) -> None:
        ws, row = self.ws, self.row
        key_cell = text_cell(ws, row, 1, key)
        key_cell.font = BOLD
        key_cell.alignment = LEFT_TOP
        if isinstance(value, bool):
            cell = text_cell(ws, row, 2, "yes" if value else "no")
        elif isinstance(value, (int, float)):
            cell = number_cell(ws, row, 2, value, fmt)
        elif value is None:
            cell = text_cell(ws, row, 2, "(none)")
        elif isinstance(value, str):
            cell = text_cell(ws, row, 2, value)
        elif isinstance(value, Path):
            cell = text_cell(ws, row, 2, str(value))
        else:
            cell = text_cell(ws, row, 2, json.dumps(value, default=str, ensure_ascii=False))
        cell.alignment = WRAP_TOP if isinstance(cell.value, str) else LEFT_TOP
        if bold:
            cell.font = BOLD
        if isinstance(cell.value, str) and len(cell.value) > self.value_width:
            ws.row_dimensions[row].height = row_height(cell.value, self.value_width)
        self.row += 1

    def note(self, text: str, font: Font = NOTE_FONT) -> None:
        """A line across the key and value columns; a long one wraps there (merged A:B)
        instead of running off to the right, which would shrink every printed page."""
        cell = text_cell(self.ws, self.row, 1, text)
        cell.font = font
        width = self.value_width + NOTE_KEY_WIDTH
        if len(str(text)) > width:
            self.ws.merge_cells(start_row=self.row, start_column=1, end_row=self.row, end_column=2)
            cell.alignment = WRAP_TOP
            self.ws.row_dimensions[self.row].height = row_height(str(text), width)
        self.row += 1

    def banner(self, text: str, last_col: int = 2) -> None:
        width = self.value_width + NOTE_KEY_WIDTH if last_col == 2 else 0.0
        banner_row(self.ws, self.row, text, last_col, width)
        self.row += 1
