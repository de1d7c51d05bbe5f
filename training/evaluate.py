"""Score any model bundle on any labelled set, exactly as the app would analyze those cells.

`leukgui evaluate` runs the cells through the analysis engine (the same decoding, the same
compiled model call, the bundle's own threshold and uncertainty band), so its figures are the
figures a lab gets in daily use, not those of a separate evaluation path.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from leukgui.core.bundle import LoadedBundle
from leukgui.core.results import CancelToken, CellResult, FileError, InputFile, Progress
from training.datasets import DatasetScan, read_dataset
from training.scoring import Evaluation, Predictions, evaluate_predictions

__all__ = ["EvaluationResult", "evaluate_bundle", "evaluate_folder"]


@dataclass
class EvaluationResult:
    """An evaluation plus what could not be scored (so no file disappears silently)."""

    evaluation: Evaluation
    scan: DatasetScan
    errors: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    cancelled: bool = False

    @property
    def unreadable(self) -> list[tuple[str, str]]:
        """Files the reader skipped and files the engine could not decode."""
        return [(str(p), r) for p, r in self.scan.unreadable] + self.errors


def evaluate_bundle(
    bundle: LoadedBundle,
    scan: DatasetScan,
    *,
    part: str = "",
    batch_size: int = 32,
    progress: Callable[[Progress], None] | None = None,
    cancel: CancelToken | None = None,
) -> EvaluationResult:
    """P(ALL) for every record through the analysis engine, scored with the bundle's
    threshold and band. Records are grouped by subject in the report.

    Every record is one labelled cell, so each image is analyzed whole (image kind "cells"),
    exactly as the trainer scored it: one outcome per record, in record order.
    """
    from leukgui.core.engine import AnalysisOptions, analyze_paths

    if not scan.records:
        raise ValueError("no labelled cells to evaluate")
    items = [InputFile(path=Path(r.path), sample=r.subject) for r in scan.records]
    run = analyze_paths(
        [item.path for item in items],
        bundle,
        AnalysisOptions(batch_size=batch_size, image_kind="cells"),
        progress=progress,
        cancel=cancel,
        discovered=(items, []),
    )
    predictions = Predictions([], [], [], [])
    errors: list[tuple[str, str]] = []
    done = 0
    for record, outcome in zip(scan.records, run.outcomes, strict=False):
        done += 1
        if isinstance(outcome, FileError):
            errors.append((str(outcome.path), outcome.reason))
            continue
        assert isinstance(outcome, CellResult)
        predictions.paths.append(str(Path(record.path).absolute()))
        predictions.subjects.append(record.subject)
        predictions.truth.append(record.label)
        predictions.p_all.append(float(outcome.p_all))
    cancelled = run.info.cancelled
    name = part or scan.source or "evaluation"
    evaluation = evaluate_predictions(predictions, bundle.threshold, bundle.uncertainty_band, name)
    if cancelled:
        evaluation.notes.append(
            f"CANCELLED: {done} of {len(scan.records)} cells were scored before cancel"
        )
    return EvaluationResult(evaluation, scan, errors, cancelled)


def evaluate_folder(
    bundle: LoadedBundle,
    data: str | os.PathLike[str],
    *,
    class_map: dict[str, str] | None = None,
    batch_size: int = 32,
    progress: Callable[[Progress], None] | None = None,
    cancel: CancelToken | None = None,
) -> EvaluationResult:
    """Read a labelled folder or CSV (any layout `read_dataset` knows) and score the bundle."""
    scan = read_dataset(data, class_map=class_map)
    return evaluate_bundle(
        bundle,
        scan,
        part=Path(data).name,
        batch_size=batch_size,
        progress=progress,
        cancel=cancel,
    )
