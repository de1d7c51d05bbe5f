"""Render a Grad-CAM grid as a coloured overlay on the original (unpadded) image.

The model saw each image padded to a centred square, so its heatmap grid covers that square.
Upsampling the grid straight to the image's own width and height would stretch it and shift
the hot spots off the cell; instead we upsample to the square and crop the image's region.
"""

from __future__ import annotations

import cv2
import numpy as np

__all__ = ["colorize", "heatmap_to_image", "overlay"]


def heatmap_to_image(heatmap: np.ndarray, width: int, height: int) -> np.ndarray:
    """Upsample a small 0..1 heatmap grid to a float32 (height, width) map aligned to the image.

    The grid is resized (bicubic) to the padded square side max(width, height), then the
    centred width x height window that held the real image is cropped out and clipped to 0..1
    (bicubic overshoots slightly). NaNs in the grid count as 0 (no evidence).
    """
    if width < 1 or height < 1:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    grid = np.asarray(heatmap, dtype=np.float32)
    if grid.ndim == 3 and grid.shape[-1] == 1:
        grid = grid[..., 0]
    if grid.ndim != 2 or grid.size == 0:
        raise ValueError(f"heatmap must be a non-empty 2-D grid, got shape {grid.shape}")
    grid = np.nan_to_num(grid, nan=0.0, posinf=1.0, neginf=0.0)
    side = max(width, height)
    square = cv2.resize(grid, (side, side), interpolation=cv2.INTER_CUBIC)
    if square.ndim == 1:  # cv2 may squeeze a 1-pixel result
        square = square.reshape(side, side)
    x0 = (side - width) // 2
    y0 = (side - height) // 2
    out = square[y0 : y0 + height, x0 : x0 + width]
    return np.clip(out, 0.0, 1.0).astype(np.float32, copy=False)


def colorize(heat: np.ndarray) -> np.ndarray:
    """Map a 0..1 float map to RGB uint8 with the jet colormap (blue = cold, red = hot)."""
    h = np.nan_to_num(np.asarray(heat, dtype=np.float32), nan=0.0)
    gray = np.round(np.clip(h, 0.0, 1.0) * 255.0).astype(np.uint8)
    bgr = cv2.applyColorMap(gray, cv2.COLORMAP_JET)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def overlay(rgb: np.ndarray, heatmap: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """Blend the coloured heatmap over an RGB uint8 image at the image's own resolution.

    The opacity grows with the heat (alpha * (0.2 + 0.8 * heat)), so cold regions keep
    the original cell visible with only a faint tint and hot regions show the colour clearly.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be within 0..1, got {alpha}")
    img = np.asarray(rgb)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 RGB image, got shape {img.shape}")
    if img.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got {img.dtype}")
    height, width = img.shape[:2]
    heat = heatmap_to_image(heatmap, width, height)
    colour = colorize(heat).astype(np.float32)
    weight = (alpha * (0.2 + 0.8 * heat))[..., None]
    blended = img.astype(np.float32) * (1.0 - weight) + colour * weight
    return np.clip(np.round(blended), 0, 255).astype(np.uint8)
