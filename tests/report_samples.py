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


UGLY_FOLDER = "Patient Ä&B — Müller & Søn (ünïcødé 血液) 2026-11-30 smear & cells, a long folder"
UGLY_MODEL = "R&D cnmc-efficientnet"


def print_run(root: Path, folder: str = UGLY_FOLDER, cells: int = 24) -> RunResult:
    """A run that exercises every printed sheet: `cells` cells in two samples under a folder
    with an ugly name ('&', non-ASCII, long), smear-field cells with boxes, a field without a
    white cell, an unreadable file, truth for most cells, long provenance values and a model
    name with '&'. Pictures are C-NMC-like synthetic cells, so thumbnails look like cells."""
    from leukgui.core.synthetic import make_cell  # only the print tests need real-looking cells

    base = root / folder
    rng = np.random.default_rng(7)
    outcomes: list = []
    for i in range(cells):
        sample = "S1 — Ärztin & Co" if i < cells // 2 else "S2"
        truth = ALL if i % 2 else HEM
        p = float(rng.uniform(0.6, 1.0) if truth == ALL else rng.uniform(0.0, 0.4))
        if i % 7 == 3:
            p = 0.5  # inside the band
        label = UNCERTAIN if 0.4 < p < 0.6 else (ALL if p >= 0.5 else HEM)
        path = base / sample / f"cell {i:03d} — {truth.lower()} & ñ.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        rgb = make_cell(truth, np.random.default_rng(i), size=160).image
        assert cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        c = CellResult(path, sample, p, label, heat(i), 160, 160, truth, subject=f"P{i % 3}")
        if i >= cells - 3:  # the last three: white cells found in one smear field
            c.box = (10 * i, 20, 10 * i + 60, 80)
            c.cell_index = i - (cells - 3) + 1
        outcomes.append(c)
    outcomes.append(field_error(base))
    outcomes.append(FileError(base / "S2" / "broken & bad.png", "S2", "truncated PNG", UNREADABLE))
    settings = {f"setting_{k}": ("x" * (k % 5 + 1)) + f" value {k}" for k in range(25)}
    extra = {
        "model file": str(base / "models" / "R&D cnmc-efficientnet v3.leukmodel"),
        "Analysis and detector settings": str(settings),
    }
    run_info = info([str(base)], model_name=UGLY_MODEL, model_version="3", extra=extra)
    run_info.total_inputs = len(outcomes)
    return RunResult(run_info, outcomes)
