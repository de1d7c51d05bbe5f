"""One training session: read the data, split it by subject, train each backbone, compare.

This is what `leukgui train` and the GUI's training page call. Every backbone of a
comparison is trained on the same split, so the comparison table compares models, not luck
of the draw.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import date
from pathlib import Path

from leukgui.core.results import CancelToken
from training.datasets import DatasetScan, read_dataset
from training.history import TrainingCallback, TrainingRun
from training.splits import Split, check_no_leakage, split_by_folds, split_by_subject
from training.trainer import TrainConfig, TrainingCancelled, train_backbone

__all__ = ["SplitOptions", "TrainingSession", "make_split", "train_session"]


@dataclass(frozen=True)
class SplitOptions:
    """How to split: by subject with fractions and a seed, or along explicit folds."""

    validation: float = 0.15
    test: float = 0.15
    seed: int = 2019
    train_folds: tuple[str, ...] = ()
    validation_folds: tuple[str, ...] = ()
    test_folds: tuple[str, ...] = ()


@dataclass
class TrainingSession:
    """What a session produced: one run per backbone and, for several, the comparison."""

    scan: DatasetScan
    split: Split
    runs: list[TrainingRun] = field(default_factory=list)
    comparison_xlsx: Path | None = None
    comparison_md: Path | None = None
    cancelled: bool = False
    failures: list[tuple[str, str]] = field(default_factory=list)  # (backbone, reason)


def make_split(
    scan: DatasetScan, options: SplitOptions, test_scan: DatasetScan | None = None
) -> Split:
    """The split a session trains on; `test_scan` (a separate labelled set) becomes the test
    part. Always checked for subjects in two parts."""
    if options.train_folds or options.validation_folds:
        split = split_by_folds(
            scan.records,
            train_folds=options.train_folds,
            validation_folds=options.validation_folds,
            test_folds=options.test_folds,
        )
    else:
        test_fraction = 0.0 if test_scan is not None else options.test
        split = split_by_subject(
            scan.records, validation=options.validation, test=test_fraction, seed=options.seed
        )
    if test_scan is not None:
        if split.test:
            raise ValueError("give either test folds or a separate test set, not both")
        split = replace(split, test=list(test_scan.records))
    check_no_leakage(split)
    return split


def _free_name(folder: Path, stem: str, suffixes: Sequence[str]) -> Path:
    """`stem` (or `stem-2`, `-3`...) such that no file with any of `suffixes` exists."""
    k = 1
    while True:
        name = stem if k == 1 else f"{stem}-{k}"
        if not any((folder / (name + s)).exists() for s in suffixes):
            return folder / name
        k += 1


def train_session(
    data: str | os.PathLike[str] | DatasetScan,
    backbones: Sequence[str],
    config: TrainConfig,
    out: str | os.PathLike[str],
    *,
    split_options: SplitOptions | None = None,
    test_data: str | os.PathLike[str] | None = None,
    class_map: dict[str, str] | None = None,
    progress: TrainingCallback | None = None,
    cancel: CancelToken | None = None,
    log: Callable[[str], None] | None = None,
    source: str = "",
) -> TrainingSession:
    """Train every backbone in `backbones` on one split; write bundles, reports, comparison."""
    from training.comparison import write_comparison

    say = log or (lambda _msg: None)
    scan = data if isinstance(data, DatasetScan) else read_dataset(data, class_map=class_map)
    if not scan.records:
        raise ValueError("no labelled cells found")
    test_scan = read_dataset(test_data, class_map=class_map) if test_data else None
    split = make_split(scan, split_options or SplitOptions(), test_scan)
    source = source or str(data if not isinstance(data, DatasetScan) else scan.source)
    session = TrainingSession(scan=scan, split=split)
    for name, part in split.summary().items():
        say(
            f"{name}: {part['cells']} cells of {part['subjects']} subjects "
            f"(ALL {part['cells_per_class']['ALL']}, HEM {part['cells_per_class']['HEM']})"
        )
    if scan.unreadable:
        say(f"{len(scan.unreadable)} file(s) skipped while reading the data set")
    out = Path(out)
    for backbone in backbones:
        if cancel is not None and cancel.cancelled:
            session.cancelled = True
            break
        run_config = replace(
            config, backbone=backbone, name=config.name if len(backbones) == 1 else None
        )
        try:
            run = train_backbone(
                split, run_config, out, progress=progress, cancel=cancel, source=source, log=say
            )
        except TrainingCancelled as exc:
            session.cancelled = True
            session.failures.append((backbone, str(exc)))
            break
        run.unreadable = [(str(p), r) for p, r in scan.unreadable] + run.unreadable
        session.runs.append(run)
        say(f"{backbone}: wrote {run.bundle_path}")
        if run.cancelled:
            session.cancelled = True
            break
    if len(session.runs) > 1:
        stem = _free_name(out, f"comparison-{date.today().isoformat()}", (".xlsx", ".md"))
        session.comparison_xlsx, session.comparison_md = write_comparison(
            session.runs, stem.with_suffix(".xlsx"), stem.with_suffix(".md")
        )
    return session
