"""Score any model bundle on any labelled set, exactly as the app would analyze those cells.

`leukgui evaluate` runs the cells through the analysis engine (the same decoding, the same
compiled model call, the bundle's own stain normalisation, calibration temperature, threshold
and uncertainty band), so its figures are the figures a lab gets in daily use, not those of a
separate evaluation path. With `tta` it scores the cells twice, plainly and with test-time
augmentation, and times both, so a report can weigh what TTA gains against what it costs.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from leukgui.core.bundle import LoadedBundle
from leukgui.core.results import CancelToken, CellResult, FileError, InputFile, Progress
from training.datasets import DatasetScan, read_dataset
from training.scoring import Evaluation, Predictions, evaluate_predictions

__all__ = ["seen_in_training", "EvaluationResult", "evaluate_bundle", "evaluate_folder"]


@dataclass
class EvaluationResult:
    """An evaluation plus what could not be scored (so no file disappears silently).

    `evaluation` is always the plain one (each cell as it is). When TTA was asked for,
    `tta_evaluation` holds the same cells scored as the mean over 8 flips/quarter turns, and
    `tta_images_per_second` its speed; `images_per_second` is the plain run's speed (decode,
    network, Grad-CAM, labels: the whole analysis path, wall clock). `tta_errors` lists
    files that failed only in the TTA pass (normally none).
    """

    evaluation: Evaluation
    scan: DatasetScan
    errors: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    cancelled: bool = False
    images_per_second: float = 0.0
    tta_evaluation: Evaluation | None = None
    tta_images_per_second: float | None = None
    tta_errors: list[tuple[str, str]] = field(default_factory=list)
    runtime: dict[str, str] = field(default_factory=dict)  # Device and the runtime rows

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
    tta: bool = False,
    analyzer: Any = None,
) -> EvaluationResult:
    """P(ALL) for every record through the analysis engine (`analyzer`, or the bundle on
    TensorFlow, the reference, when None), scored with the bundle's
    threshold and band (on calibrated scores). Records are grouped by subject in the report.

    Every record is one labelled cell, so each image is analyzed whole (image kind "cells"),
    exactly as the trainer scored it: one outcome per record, in record order. With `tta`
    a second pass scores the same cells with test-time augmentation (`tta_evaluation`);
    both passes are timed (`images_per_second`, `tta_images_per_second`). A cancel during
    the plain pass skips the TTA pass.
    """
    from leukgui.core.engine import AnalysisOptions, Analyzer

    if not scan.records:
        raise ValueError("no labelled cells to evaluate")
    if analyzer is None:
        analyzer = Analyzer(bundle)  # compiled once, shared by both passes
    name = part or scan.source or "evaluation"
    evaluation, errors, cancelled, rate = _score(
        analyzer,
        scan,
        name,
        AnalysisOptions(batch_size=batch_size, image_kind="cells"),
        progress,
        cancel,
    )
    result = EvaluationResult(evaluation, scan, errors, cancelled, rate)
    if tta and not cancelled:
        tta_eval, tta_errors, tta_cancelled, tta_rate = _score(
            analyzer,
            scan,
            f"{name} (TTA)",
            AnalysisOptions(batch_size=batch_size, image_kind="cells", tta=True),
            progress,
            cancel,
        )
        result.tta_evaluation = tta_eval
        result.tta_errors = tta_errors
        result.tta_images_per_second = tta_rate
        result.cancelled = tta_cancelled
    from leukgui.core.engine import runtime_rows

    result.runtime = {"Device": analyzer.runtime.description, **runtime_rows(analyzer)}
    return result


def _score(
    analyzer: Any,
    scan: DatasetScan,
    name: str,
    options: Any,
    progress: Callable[[Progress], None] | None,
    cancel: CancelToken | None,
) -> tuple[Evaluation, list[tuple[str, str]], bool, float]:
    """One pass of the engine over the records: evaluation, errors, cancelled, images/s."""
    from leukgui.core.engine import analyze_paths

    bundle = analyzer.bundle
    items = [InputFile(path=Path(r.path), sample=r.subject) for r in scan.records]
    started = time.perf_counter()
    run = analyze_paths(
        [item.path for item in items],
        analyzer,
        options,
        progress=progress,
        cancel=cancel,
        discovered=(items, []),
    )
    elapsed = max(time.perf_counter() - started, 1e-9)
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
    evaluation = evaluate_predictions(predictions, bundle.threshold, bundle.uncertainty_band, name)
    if cancelled:
        evaluation.notes.append(
            f"CANCELLED: {done} of {len(scan.records)} cells were scored before cancel"
        )
    if bundle.temperature != 1.0:
        evaluation.notes.append(
            f"P(ALL) calibrated with the bundle's temperature T = {bundle.temperature:.4g}"
        )
    if options.tta:
        evaluation.notes.append("P(ALL) is the mean over 8 views (flips, 90° rotations)")
    return evaluation, errors, cancelled, done / elapsed


def evaluate_folder(
    bundle: LoadedBundle,
    data: str | os.PathLike[str],
    *,
    class_map: dict[str, str] | None = None,
    batch_size: int = 32,
    progress: Callable[[Progress], None] | None = None,
    cancel: CancelToken | None = None,
    tta: bool = False,
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
        tta=tta,
    )


def seen_in_training(manifest: dict, scan: DatasetScan) -> dict[str, int]:
    """How many of the evaluated subjects the model already saw, per part ("train",
    "validation"), from the split its model file records; empty when none (or no record).

    Scores on such subjects are not held-out: the model learnt from them, or chose its
    epoch, threshold and band on them.
    """
    from leukgui.core.truth import normalise_subject

    split = (manifest.get("training_data") or {}).get("split") or {}
    recorded = split.get("subjects") if isinstance(split, dict) else None
    if not isinstance(recorded, dict):
        return {}
    evaluated = {normalise_subject(r.subject) for r in scan.records}
    out = {}
    for part in ("train", "validation"):
        known = {normalise_subject(str(s)) for s in recorded.get(part) or []}
        overlap = len(evaluated & known)
        if overlap:
            out[part] = overlap
    return out


def seen_text(seen: dict[str, int]) -> str:
    """`seen_in_training` in words, for the CLI and the evaluation report alike."""
    parts = " and ".join(
        f"{n} in its {'training' if part == 'train' else 'validation'} part"
        for part, n in seen.items()
    )
    return f"the model already saw some of these subjects ({parts})"
