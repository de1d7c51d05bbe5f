"""Runs built by hand for the report and export tests: real image files, known labels and
truths, so every figure in a written file can be checked against what it came from."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import cv2
import numpy as np

from leukgui.core.results import (
    ALL,
    HEM,
    NO_WHITE_CELL,
    UNCERTAIN,
    UNREADABLE,
    CellResult,
    FileError,
    RunInfo,
    RunResult,
)

SHA = "0123456789abcdef" * 4
STARTED = datetime(2024, 5, 6, 9, 30, 0, tzinfo=timezone.utc)
HOSTILE_NAMES = ['=HYPERLINK("x").png', "+1.png", "@x.png", "-x.png"]


def image(path: Path, width: int = 40, height: int = 30, seed: int = 0) -> Path:
    """A random RGB image file at `path` (folders created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    assert cv2.imwrite(str(path), img)
    return path


def heat(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((7, 7)).astype(np.float32)


def cell(path: Path, sample: str, p: float, label: str, truth: str | None = None) -> CellResult:
    return CellResult(path, sample, p, label, heat(), 40, 30, truth, subject="P1")


def info(inputs: list[str], **kw: object) -> RunInfo:
    values: dict = dict(
        app_version="0.1.0",
        model_name="cnmc-mobilenet",
        model_version="2.1",
        model_sha256=SHA,
        backbone="MobileNetV3Small",
        input_size=224,
        threshold=0.5,
        uncertainty_band=(0.4, 0.6),
        demo=False,
        inputs=inputs,
        started=STARTED,
        finished=STARTED + timedelta(seconds=75),
        device="CPU (8 logical cores)",
        tensorflow_version="2.19.0",
        keras_version="3.10.0",
        total_inputs=8,
        extra={"model file": "/models/cnmc.keras"},
    )
    values.update(kw)
    return RunInfo(**values)


def mixed_run(root: Path) -> RunResult:
    """Two samples under `root`, every label, truth known for most cells, one missing file,
    one error."""
    s1, s2 = root / "S1", root / "S2"
    outcomes = [
        cell(image(s1 / "a.png", seed=1), "S1", 0.9, ALL, ALL),  # TP
        cell(image(s1 / "b.png", seed=2), "S1", 0.1, HEM, HEM),  # TN
        cell(image(s1 / "c.png", seed=3), "S1", 0.55, UNCERTAIN, HEM),  # FP by threshold
        cell(image(s1 / "d.png", seed=4), "S1", 0.8, ALL, HEM),  # FP
        cell(image(s2 / "e.png", seed=5), "S2", 0.2, HEM, ALL),  # FN
        cell(image(s2 / "f.png", seed=6), "S2", 0.7, ALL),  # no truth
        cell(s2 / "missing.png", "S2", 0.3, HEM),  # file gone before export
        FileError(s2 / "bad.png", "S2", "truncated PNG", UNREADABLE),
    ]
    return RunResult(info([str(root)]), outcomes)


def hostile_run(root: Path) -> RunResult:
    """Files, a folder, an error reason and a provenance entry that look like formulas."""
    folder = root / "=1+1"
    outcomes: list = [
        cell(image(folder / name, seed=i), "=1+1", 0.9, ALL) for i, name in enumerate(HOSTILE_NAMES)
    ]
    outcomes.append(FileError(folder / "=2.png", "=1+1", "=cmd|' /C calc'!A0", UNREADABLE))
    return RunResult(info([str(folder)], extra={"=key": "@value"}), outcomes)


def field_error(root: Path) -> FileError:
    """A smear field in which no white cell was found."""
    return FileError(root / "S3" / "blank.png", "S3", "no white cell found", NO_WHITE_CELL)
