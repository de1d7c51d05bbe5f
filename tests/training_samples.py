"""Training runs and evaluations built by hand from `evaluate_predictions`, for the tests of
the training reports, curves and comparison: no TensorFlow, and every figure in a written file
can be checked against the Evaluation it came from."""

from __future__ import annotations

import errno
import math
from pathlib import Path

from leukgui.core.results import ALL, HEM
from leukgui.core.synthetic import write_dataset
from training.history import EpochLog, TrainingRun
from training.scoring import (
    BAND_RULE,
    THRESHOLD_RULE,
    Evaluation,
    Predictions,
    evaluate_predictions,
)

THRESHOLD = 0.5
BAND = (0.4, 0.6)
NAN = math.nan

# (subject, truth, P(ALL) of each cell): right and wrong calls, uncertain cells, a subject
# whose majority call is wrong (H2), and a subject id a spreadsheet would run as a formula.
TEST_CELLS = [
    ("P01", ALL, [0.95, 0.9, 0.55, 0.3]),
    ("P02", ALL, [0.8, 0.7, 0.45]),
    ("H01", HEM, [0.1, 0.2, 0.05, 0.62]),
    ("H02", HEM, [0.7, 0.8, 0.35]),
    ("=1+1", HEM, [0.15, 0.25]),
]
# Four ALL patients and four HEM donors, so both classes have the subjects a subject bootstrap
# needs (TEST_CELLS has 2 + 3, VALIDATION_CELLS 1 + 1: its intervals are undefined by design).
WIDE_TEST_CELLS = [
    ("P01", ALL, [0.95, 0.9, 0.55, 0.3]),
    ("P02", ALL, [0.8, 0.7, 0.45]),
    ("P03", ALL, [0.85, 0.35, 0.65]),
    ("P04", ALL, [0.6, 0.92]),
    ("H01", HEM, [0.1, 0.2, 0.05, 0.62]),
    ("H02", HEM, [0.7, 0.8, 0.35]),
    ("H03", HEM, [0.15, 0.25, 0.4]),
    ("H04", HEM, [0.3, 0.52, 0.1]),
]
VALIDATION_CELLS = [
    ("V1", ALL, [0.9, 0.8, 0.6]),
    ("V2", HEM, [0.1, 0.3, 0.52]),
]


def predictions(cells: list[tuple[str, str, list[float]]], folder: str) -> Predictions:
    paths, subjects, truth, p_all = [], [], [], []
    for subject, label, scores in cells:
        for i, p in enumerate(scores):
            paths.append(f"/data/{folder}/{subject}/cell_{i}.bmp")
            subjects.append(subject)
            truth.append(label)
            p_all.append(p)
    return Predictions(paths, subjects, truth, p_all)


def evaluation(cells: list[tuple[str, str, list[float]]], part: str, **kw: object) -> Evaluation:
    """`evaluate_predictions` at THRESHOLD and BAND; `kw` (temperature, uncalibrated_p_all,
    resamples, seed, band_error) goes through unchanged."""
    return evaluate_predictions(predictions(cells, part), THRESHOLD, BAND, part, **kw)


def history() -> list[EpochLog]:
    rows = [
        ("head", 1, 0.69, 0.55, 0.70, 0.5, 0.5, 0.61, 1e-3, 12.5, 80.0),
        ("head", 2, 0.52, 0.71, 0.58, 0.7, 0.68, NAN, 1e-3, 11.25, 88.8),
        ("fine-tune", 3, 0.41, 0.80, 0.47, 0.8, 0.79, 0.88, 1e-4, 20.0, 50.0),
        ("fine-tune", 4, 0.33, 0.86, 0.45, 0.82, 0.81, 0.9, 5e-5, 19.5, 51.3),
    ]
    return [EpochLog(*r) for r in rows]


def split(test_subjects: list[str] | None = None) -> dict:
    return {
        "method": "grouped-stratified",
        "seed": 42,
        "subjects": {
            "train": ["T1", "T2", "T3"],
            "validation": ["V1", "V2"],
            "test": test_subjects if test_subjects is not None else [s for s, *_ in TEST_CELLS],
        },
    }


def data() -> dict:
    def part(cells: int, subjects: int, all_cells: int, all_subjects: int) -> dict:
        return {
            "cells": cells,
            "subjects": subjects,
            "cells_per_class": {ALL: all_cells, HEM: cells - all_cells},
            "subjects_per_class": {ALL: all_subjects, HEM: subjects - all_subjects},
        }

    return {
        "train": part(30, 3, 20, 2),
        "validation": part(6, 2, 3, 1),
        "test": part(16, 5, 7, 2),
    }


def training_run(**kw: object) -> TrainingRun:
    values: dict = dict(
        backbone="efficientnetb0",
        name="cnmc-effnet",
        version="1.2",
        settings={
            "epochs": 4,
            "learning_rate": 1e-4,
            "augment": True,
            "class_weights": {ALL: 1.0, HEM: 2.0},
            "note": "=cmd|' /C calc'!A0",
        },
        data=data(),
        split=split(),
        history=history(),
        validation=evaluation(VALIDATION_CELLS, "validation"),
        test=evaluation(TEST_CELLS, "test"),
        threshold_rule=THRESHOLD_RULE,
        band_rule=BAND_RULE.format(error=0.02, cap=0.2),
        parameters=4_049_571,
        trainable_parameters=3_500_000,
        training_seconds=125.0,
        train_images_per_second=210.5,
        inference_images_per_second=900.25,
        best_epoch=3,
        stopped_because="early stopping",
        bundle_path=Path("/models/cnmc-effnet-1.2.leukmodel"),
        unreadable=[("/data/broken.bmp", "truncated file"), ("=evil.bmp", "not an image")],
        device="CPU (8 cores)",
    )
    values.update(kw)
    return TrainingRun(**values)


def sheet_rows(ws) -> list[tuple]:
    return [tuple(r) for r in ws.iter_rows(values_only=True)]


def rows_by_first(ws) -> dict[object, tuple]:
    """Rows keyed by their first cell (first occurrence wins)."""
    out: dict[object, tuple] = {}
    for r in sheet_rows(ws):
        if r and r[0] is not None and r[0] not in out:
            out[r[0]] = r
    return out


def sheet_texts(ws) -> list[str]:
    return [str(v) for r in sheet_rows(ws) for v in r if v is not None]


def metrics_block(ws, title_prefix: str) -> dict[object, tuple]:
    """Rows of one evaluation block on the Metrics sheet, keyed by their first cell."""
    rows = sheet_rows(ws)
    start = next(i for i, r in enumerate(rows) if str(r[0]).startswith(title_prefix))
    out: dict[object, tuple] = {}
    for r in rows[start + 1 :]:
        if r[0] is not None and str(r[0]).startswith(("Validation", "Test", "Evaluation")):
            break
        if r[0] is not None and r[0] not in out:
            out[r[0]] = r
    return out


def fail_disk_full(*_args: object, **_kw: object) -> None:
    raise OSError(errno.ENOSPC, "No space left on device")


def write_subjects(folder: Path, n_all: int, n_hem: int, cells: int = 3, size: int = 64) -> Path:
    """A C-NMC-named all/hem folder with `n_all` ALL patients P1.. and `n_hem` HEM donors H..,
    `cells` cells each: uneven subject counts, for the too-few-subjects-to-split checks."""
    most = max(n_all, n_hem, 1)
    write_dataset(folder, cells * most, 23, fmt="png", layout="cnmc", subjects=most, size=size)
    keep = {f"P{i}" for i in range(1, n_all + 1)} | {f"H{i}" for i in range(1, n_hem + 1)}
    for path in sorted(folder.glob("*/UID_*")):
        if path.name.split("_")[1] not in keep:
            path.unlink()
    return folder
