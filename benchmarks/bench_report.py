"""Time `write_excel` (and the CSV/heatmap exports) on a large synthetic run.

Not a test: run `python benchmarks/bench_report.py [--cells 10000] [--size 32]` and read the
printed figures. Images are small random PNGs written to a temporary folder, so the timings
are dominated by the report code, not by decoding big microscope images.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from leukgui.core.exports import write_csv, write_heatmaps  # noqa: E402
from leukgui.core.report import write_excel  # noqa: E402
from leukgui.core.results import (  # noqa: E402
    ALL,
    HEM,
    UNCERTAIN,
    UNREADABLE,
    CellResult,
    FileError,
    RunInfo,
    RunResult,
)


def cell_image(rng: np.random.Generator, size: int, noise: bool) -> np.ndarray:
    """A stained-cell-like blob on black (compresses like real cells), or pure noise."""
    if noise:
        return rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    img = np.zeros((size, size, 3), np.uint8)
    centre = (size // 2 + int(rng.integers(-2, 3)), size // 2 + int(rng.integers(-2, 3)))
    axes = (size // 3, size // 4 + int(rng.integers(0, max(1, size // 8))))
    cv2.ellipse(img, centre, axes, float(rng.integers(0, 180)), 0, 360, (170, 90, 150), -1)
    cv2.circle(img, centre, size // 6, (120, 40, 110), -1)
    grain = rng.integers(0, 16, img.shape, dtype=np.uint8)
    return cv2.add(img, grain, mask=(img[..., 0] > 0).astype(np.uint8))


def make_run(root: Path, cells: int, size: int, noise: bool = False, seed: int = 0) -> RunResult:
    """A run of `cells` results over 10 samples with real image files, plus a few errors."""
    rng = np.random.default_rng(seed)
    outcomes = []
    for i in range(cells):
        sample = f"patient{i % 10:02d}"
        folder = root / sample
        folder.mkdir(exist_ok=True)
        path = folder / f"cell{i:05d}.png"
        img = cell_image(rng, size, noise)
        cv2.imwrite(str(path), img)
        p = float(rng.random())
        label = UNCERTAIN if 0.35 < p < 0.65 else (ALL if p >= 0.5 else HEM)
        truth = ALL if rng.random() < p else HEM
        heat = rng.random((7, 7)).astype(np.float32)
        outcomes.append(
            CellResult(path, sample, p, label, heat, size, size, truth=truth, subject=sample)
        )
    for j in range(cells // 1000):
        outcomes.append(
            FileError(root / f"broken{j}.bmp", "patient00", "truncated BMP", UNREADABLE)
        )
    started = datetime.now().astimezone()
    info = RunInfo(
        app_version="bench",
        model_name="bench-model",
        model_version="1",
        model_sha256="0" * 64,
        backbone="MobileNetV3Small",
        input_size=224,
        threshold=0.5,
        uncertainty_band=(0.35, 0.65),
        demo=True,
        inputs=[str(root)],
        started=started,
        finished=started + timedelta(minutes=3),
        total_inputs=len(outcomes),
    )
    return RunResult(info, outcomes)


def timed(label: str, fn) -> float:
    start = time.perf_counter()
    fn()
    elapsed = time.perf_counter() - start
    print(f"{label:<40} {elapsed:7.2f} s")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cells", type=int, default=10_000)
    parser.add_argument("--size", type=int, default=32, help="image side in pixels")
    parser.add_argument(
        "--noise", action="store_true", help="random-noise images (worst case for file size)"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "images"
        root.mkdir()
        t0 = time.perf_counter()
        run = make_run(root, args.cells, args.size, noise=args.noise)
        print(
            f"{args.cells} cells of {args.size}x{args.size} px "
            f"({'noise' if args.noise else 'cell-like'}), made in "
            f"{time.perf_counter() - t0:.1f} s"
        )
        out = Path(tmp)
        timed(
            "write_excel(images=False)", lambda: write_excel(run, out / "no_img.xlsx", images=False)
        )
        timed("write_excel(images=True)", lambda: write_excel(run, out / "img.xlsx", images=True))
        timed("write_csv", lambda: write_csv(run, out / "cells.csv"))
        timed("write_heatmaps", lambda: write_heatmaps(run, out / "heatmaps"))
        for name in ("no_img.xlsx", "img.xlsx", "cells.csv"):
            print(f"{name:<40} {(out / name).stat().st_size / 1e6:7.1f} MB")


if __name__ == "__main__":
    main()
