"""A run built by hand for the review and session tests: known labels, truths and heatmaps
(distinct per cell, so a heatmap that did not round-trip is seen), two errors."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np

from leukgui.core.results import (
    ALL,
    HEM,
    NOT_AN_IMAGE,
    UNCERTAIN,
    UNREADABLE,
    CellResult,
    FileError,
    RunInfo,
    RunResult,
)

T0 = datetime(2024, 5, 6, 9, 30, 0, tzinfo=timezone.utc)


def cell(
    path: Path, sample: str, p: float, label: str, truth: str | None = None, heat: int = 0
) -> CellResult:
    heatmap = np.zeros((28, 28), np.float32)
    heatmap[heat % 28, heat % 28] = 1.0  # distinct per cell, to prove heatmaps round-trip
    return CellResult(path, sample, p, label, heatmap, 40, 30, truth, subject="P1")


def info(**kw: object) -> RunInfo:
    values: dict = dict(
        app_version="0.1.0",
        model_name="cnmc",
        model_version="2.1",
        model_sha256="ab" * 32,
        backbone="EfficientNetB0",
        input_size=224,
        threshold=0.5,
        uncertainty_band=(0.4, 0.6),
        demo=False,
        inputs=["/data/images"],
        started=T0,
        finished=T0 + timedelta(seconds=75, microseconds=123456),
        total_inputs=8,
        extra={"model file": "/models/cnmc.leukmodel"},
    )
    values.update(kw)
    return RunInfo(**values)


def review_run(root: Path) -> RunResult:
    """Three samples: S1 with every model label, S2 with an error, S3 with only an error."""
    outcomes = [
        cell(root / "S1" / "a.png", "S1", 0.9, ALL, ALL, 1),
        cell(root / "S1" / "b.png", "S1", 0.1, HEM, HEM, 2),
        cell(root / "S1" / "c.png", "S1", 0.55, UNCERTAIN, HEM, 3),
        cell(root / "S1" / "d.png", "S1", 0.45, UNCERTAIN, None, 4),
        cell(root / "S2" / "e.png", "S2", 0.2, HEM, ALL, 5),
        cell(root / "S2" / "f.png", "S2", 0.7, ALL, None, 6),
        FileError(root / "S2" / "bad.png", "S2", "truncated PNG", UNREADABLE),
        FileError(root / "S3" / "only-error.png", "S3", "not an image", NOT_AN_IMAGE),
    ]
    return RunResult(info(inputs=[str(root)]), outcomes)
