"""The picture of one analyzed cell, however it was found.

A single-cell crop is its own file; a cell found in a smear field is cut out of that field
again from the box and mask stored in its result, exactly as the engine cut it for the
model, so thumbnails, heatmap overlays and reports show what the model saw.
"""

from __future__ import annotations

import numpy as np

from leukgui.core.imaging import DEFAULT_MAX_PIXELS, ImageError, decode_image
from leukgui.core.results import IMAGE_CHANGED, CellResult

__all__ = ["cell_crop", "cell_image", "cell_mask"]


def cell_mask(cell: CellResult) -> np.ndarray | None:
    """The cell's box-local mask (bool, box-sized), or None for a single-cell image."""
    if cell.box is None or cell.mask_bits is None:
        return None
    x0, y0, x1, y1 = cell.box
    shape = (y1 - y0, x1 - x0)
    bits = np.unpackbits(np.frombuffer(cell.mask_bits, np.uint8), count=shape[0] * shape[1])
    return bits.reshape(shape).astype(bool)


def cell_image(cell: CellResult, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """RGB uint8 of the cell as the model saw it before resizing (raises ImageError, with
    `IMAGE_CHANGED` when the file's size or time differ from the analysis: a reviewer must
    never judge a call against other pixels than the model's; a cheap check, no hashing)."""
    if cell.stamp is not None and not cell.stamp.same_file_info(cell.path):
        raise ImageError(IMAGE_CHANGED)
    return cell_crop(cell, decode_image(cell.path, max_pixels=max_pixels))


def cell_crop(cell: CellResult, rgb: np.ndarray) -> np.ndarray:
    """What the model saw of `cell` in its decoded file `rgb`: the file itself for a
    single-cell image, else the cell cut out of the field again from its box and mask."""
    mask = cell_mask(cell)
    if mask is None:
        return rgb
    from leukgui.core.fields import DetectedCell, crop_cell

    x0, y0, x1, y1 = cell.box
    border = x0 == 0 or y0 == 0 or x1 >= rgb.shape[1] or y1 >= rgb.shape[0]
    found = DetectedCell(
        box=(x0, y0, x1, y1),
        mask=mask,
        area=int(mask.sum()),
        nucleus_area=0,
        touches_border=border,
        score=1.0,
    )
    return crop_cell(rgb, found)
