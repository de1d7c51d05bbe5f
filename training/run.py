"""One training session: read the data, split it by subject, train each backbone, compare.

This is what `leukgui train` and the GUI's training page call. Every backbone of a
comparison is trained on the same split, so the comparison table compares models, not luck
of the draw.
"""

from __future__ import annotations

import csv
import os
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date
from pathlib import Path
from typing import Any

from leukgui.core.atomic import ReportWriteError
from leukgui.core.bundle import BundleError
from leukgui.core.results import ALL, HEM, CancelToken
from training.comparison import ParentComparison
from training.datasets import DatasetScan, Record, read_dataset
from training.history import TrainingCallback, TrainingRun
from training.splits import (
    Split,
    SplitError,
    check_duplicates,
    check_no_leakage,
    split_by_folds,
    split_by_subject,
    split_from_manifest,
    split_warnings,
    with_sources,
)
from training.trainer import TrainConfig, TrainingCancelled, train_backbone

__all__ = [
    "GUARD_MIN_CLASS_SHARE",
    "GUARD_MIN_SUBJECTS",
    "SPLIT_BY",
    "SplitOptions",
    "SubjectsUnknownError",
    "TrainingSession",
    "data_warnings",
    "make_split",
    "record_comparison",
    "reviewers_of",
    "score_parent",
    "subjects_unknown_message",
    "train_session",
]

SPLIT_BY = ("subject", "image")
# Guard rails on the whole data set, checked before it is split (warnings, not refusals).
# 5, not 3: a split by subject already refuses fewer than 3 subjects of a class (one each for
# train, validation and test), so a warning below 3 could never be seen.
GUARD_MIN_SUBJECTS = 5  # subjects per class
GUARD_MIN_CLASS_SHARE = 0.10  # share of the cells for each class


class SubjectsUnknownError(SplitError):
    """Some cells have no known subject and the user has not accepted a split by image."""


def subjects_unknown_message(unknown: int, total: int) -> str:
    """Why a split is refused when subjects are unknown, and the ways out, in plain words."""
    return (
        f"Subjects (patients) are unknown for {unknown:,} of {total:,} cells: each such image "
        "would count as its own subject, so a patient's cells could be in both training and "
        "test and the scores would be optimistic. Give subjects (a CSV 'subject' column, "
        "--subject-folder N for a folder level, or --subject-pattern REGEX for a file-name "
        "pattern), or accept a split by image with --split-by image."
    )


@dataclass(frozen=True)
class SplitOptions:
    """How to split: by subject with fractions and a seed, or along explicit folds."""

    validation: float = 0.15
    test: float = 0.15
    seed: int = 2019
    train_folds: tuple[str, ...] = ()
    validation_folds: tuple[str, ...] = ()
    test_folds: tuple[str, ...] = ()
    split_by: str = "subject"  # "image": accept a split by image when subjects are unknown
    split_from: Mapping | None = None  # a bundle's recorded split, rebuilt exactly
    duplicates: bool = True  # refuse identical images across parts, warn on near-copies

    def __post_init__(self) -> None:
        if self.split_by not in SPLIT_BY:
            raise ValueError(f"split_by must be one of {', '.join(SPLIT_BY)}")


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
    warnings: list[str] = field(default_factory=list)  # about the data and the split
    # a fine-tune (--init-from): the new model against its parent on the same test cells
    parent_comparison: ParentComparison | None = None


def make_split(
    scan: DatasetScan,
    options: SplitOptions,
    test_scan: DatasetScan | None = None,
    *,
    test_source: str | None = None,
) -> Split:
    """The split a session trains on; `test_scan` (a separate labelled set) becomes the test
    part. Always checked for subjects in two parts.

    Refused (SubjectsUnknownError) when some cells have no known subject, unless the options
    accept a split by image; `options.split_from` rebuilds a bundle's recorded split exactly.
    """
    total = len(scan.records) + (len(test_scan.records) if test_scan else 0)
    unknown = scan.image_subjects + (test_scan.image_subjects if test_scan else 0)
    if unknown and options.split_by != "image":
        raise SubjectsUnknownError(subjects_unknown_message(unknown, total))
    if options.split_from is not None:
        split = split_from_manifest(
            options.split_from, scan.records, test_scan.records if test_scan else ()
        )
    elif options.train_folds or options.validation_folds:
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
    if test_scan is not None and options.split_from is None:
        if split.test:
            raise ValueError("give either test folds or a separate test set, not both")
        split = replace(split, test=list(test_scan.records))
    split = with_sources(split, scan, test_scan)
    if test_source is not None:  # what the user named (a CSV, not only its folder)
        split = replace(split, test_source=test_source)
    check_no_leakage(split)
    return split


def reviewers_of(data: str | os.PathLike[str], records: Sequence[Record]) -> Counter[str] | None:
    """Cells per reviewer when `data` is a CSV list (or a folder holding exactly one) with a
    `reviewer` column, as the lab data set's dataset.csv has; None when there is no such
    column. Only rows of `records` (the cells actually read) count; a blank name is "".
    """
    from leukgui.core.lab_dataset import dataset_csv_in

    path = Path(data)
    if path.is_dir():
        path = dataset_csv_in(path) or path
    if path.is_dir():
        lists = sorted(path.glob("*.csv"))
        if len(lists) != 1:
            return None
        path = lists[0]
    if not path.is_file() or path.suffix.lower() != ".csv":
        return None
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh)
            header = [h.strip().lower() for h in next(reader, [])]
            if "reviewer" not in header or "path" not in header:
                return None
            at_path, at_reviewer = header.index("path"), header.index("reviewer")
            by_path: dict[Path, str] = {}
            for row in reader:
                if len(row) <= max(at_path, at_reviewer) or not row[at_path].strip():
                    continue
                given = Path(row[at_path].strip())
                full = given if given.is_absolute() else path.parent / given
                by_path[full.resolve()] = row[at_reviewer].strip()
    except (OSError, UnicodeDecodeError, csv.Error):
        return None
    return Counter(by_path.get(Path(r.path).resolve(), "") for r in records)


def data_warnings(records: Sequence[Record], reviewers: Counter[str] | None = None) -> list[str]:
    """Guard rails on a data set before training, each sentence stating its rule: too few
    subjects of a class, an extreme class balance, cells labelled by one reviewer only."""
    out = []
    cells = Counter(r.label for r in records)
    subjects: dict[str, set[str]] = defaultdict(set)
    for r in records:
        subjects[r.label].add(r.subject)
    total = sum(cells.values())
    for label in (ALL, HEM):
        n = len(subjects.get(label, ()))
        if n < GUARD_MIN_SUBJECTS:
            out.append(
                f"{label} has {n} subject(s) in the data set (rule: warn below "
                f"{GUARD_MIN_SUBJECTS} subjects per class): the model and its scores rest on "
                "very few patients and may not carry over to new ones"
            )
    for label in (ALL, HEM):
        share = cells.get(label, 0) / total if total else 0.0
        if share < GUARD_MIN_CLASS_SHARE:
            out.append(
                f"{label} is {100 * share:.1f}% of the cells ({cells.get(label, 0)} of {total}; "
                f"rule: warn below {100 * GUARD_MIN_CLASS_SHARE:.0f}% per class): an extreme "
                "class balance; class weights correct the loss, but the rare class is learned "
                "from few examples"
            )
    if reviewers is not None:
        named = sorted(name for name in reviewers if name)
        if len(named) == 1:
            out.append(
                f"every reviewed cell was labelled by one reviewer ({named[0]}; rule: warn when "
                "the data set's reviewer column names fewer than 2 people): one person's label "
                "errors are learned as truth and the scores cannot show them"
            )
    return out


def _free_name(folder: Path, stem: str, suffixes: Sequence[str]) -> Path:
    """`stem` (or `stem-2`, `-3`...) such that no file with any of `suffixes` exists."""
    k = 1
    while True:
        name = stem if k == 1 else f"{stem}-{k}"
        if not any((folder / (name + s)).exists() for s in suffixes):
            return folder / name
        k += 1


def score_parent(
    parent: str | os.PathLike[str], records: Sequence[Record], config: TrainConfig
) -> Any:
    """The parent bundle's `Evaluation` on `records` (the new split's test cells), through
    the path the new model's test scores take: the same decoding and resizing
    (`predict_records`), the parent's own stain normalisation, calibration temperature,
    threshold and band. The bundle is verified and loaded as evaluation loads bundles."""
    from dataclasses import replace as dc_replace

    from leukgui.core.bundle import load_bundle
    from leukgui.core.calibration import apply_temperature
    from training.pipeline import FailedFiles
    from training.scoring import evaluate_predictions
    from training.trainer import compiled_predict, predict_records

    bundle = load_bundle(parent)
    raw, _ = predict_records(
        compiled_predict(bundle.keras_model()),
        list(records),
        input_size=int(bundle.manifest["input_size"]),
        batch_size=config.batch_size,
        failed=FailedFiles(),
        stain=bundle.stain,
    )
    calibrated = dc_replace(raw, p_all=apply_temperature(raw.p_all, bundle.temperature).tolist())
    return evaluate_predictions(
        calibrated,
        bundle.threshold,
        bundle.uncertainty_band,
        "test (parent)",
        temperature=bundle.temperature,
        uncalibrated_p_all=raw.p_all,
        resamples=config.bootstrap_resamples,
        seed=config.seed,
    )


def record_comparison(bundle_path: Path, record: Mapping[str, Any]) -> None:
    """Add `record` as the `comparison` field of a bundle's manifest and sign it again; the
    model bytes and inference graph are kept as they are (their hashes are re-checked)."""
    import hashlib

    from leukgui.core.bundle import _read_archive, _write_bundle

    manifest, data, graph = _read_archive(Path(bundle_path), model=True)
    assert data is not None
    if hashlib.sha256(data).hexdigest() != manifest["weights_sha256"]:
        raise ValueError(f"{Path(bundle_path).name}: the weights do not match the manifest")
    manifest = dict(manifest, comparison=dict(record))
    _write_bundle(Path(bundle_path), manifest, data, graph)


def compare_run_with_parent(
    run: TrainingRun, split: Split, config: TrainConfig, say: Callable[[str], None]
) -> ParentComparison | None:
    """Score the parent on the run's test cells, compare, and record the comparison in the
    training report (the "Parent vs new" sheet) and the bundle's manifest. None when the run
    has no test part."""
    from leukgui.core.bundle import read_manifest
    from training.comparison import compare_with_parent
    from training.reports import write_training_report

    if config.init_from is None or run.test is None or not split.test:
        return None
    say("scoring the parent model on the same test cells…")
    parent_eval = score_parent(config.init_from, split.test, config)
    comparison = compare_with_parent(
        run.test,
        parent_eval,
        read_manifest(config.init_from),
        resamples=config.bootstrap_resamples,
        seed=config.seed,
    )
    if run.bundle_path is not None:
        record_comparison(run.bundle_path, comparison.manifest_record())
    if run.report_xlsx is not None:
        write_training_report(run, run.report_xlsx, parent_comparison=comparison)
    say(f"parent vs new: {comparison.verdict}")
    return comparison


def train_session(
    data: str | os.PathLike[str] | DatasetScan,
    backbones: Sequence[str],
    config: TrainConfig,
    out: str | os.PathLike[str],
    *,
    split_options: SplitOptions | None = None,
    test_data: str | os.PathLike[str] | None = None,
    class_map: dict[str, str] | None = None,
    subjects: Any = None,
    progress: TrainingCallback | None = None,
    cancel: CancelToken | None = None,
    log: Callable[[str], None] | None = None,
    source: str = "",
    stains: Sequence[str] | None = None,
) -> TrainingSession:
    """Train every backbone in `backbones` on one split; write bundles, reports, comparison.

    `stains` ("none", "reinhard") trains each backbone once per stain setting, so the
    comparison shows stain normalisation against colour jitter alone on the same split
    (default: the config's own setting only).
    """
    from training.comparison import write_comparison

    say = log or (lambda _msg: None)
    scan = (
        data
        if isinstance(data, DatasetScan)
        else read_dataset(data, class_map=class_map, subjects=subjects)
    )
    if not scan.records:
        raise ValueError("no labelled cells found")
    where = data if not isinstance(data, DatasetScan) else source
    guard = data_warnings(scan.records, reviewers_of(where, scan.records) if where else None)
    for warning in guard:  # said before the split, which may still refuse the data
        say(f"warning: {warning}")
    test_scan = (
        read_dataset(test_data, class_map=class_map, subjects=subjects) if test_data else None
    )
    options = split_options or SplitOptions()
    split = make_split(
        scan, options, test_scan, test_source=str(Path(test_data).absolute()) if test_data else None
    )
    if options.split_from is not None:
        say(
            "split rebuilt from the recorded one: "
            + ", ".join(f"{p} {len(split.part(p))} cells" for p in ("train", "validation", "test"))
        )
    warnings = guard + split_warnings(split)
    if options.duplicates:
        say("checking for the same image in two parts…")
        duplicates = check_duplicates(split)
        duplicates.raise_if_exact()
        split.file_hashes = dict(duplicates.sha256)
        if duplicates.message():
            warnings.append(duplicates.message())
    source = source or str(data if not isinstance(data, DatasetScan) else scan.source)
    session = TrainingSession(scan=scan, split=split, warnings=warnings)
    for name, part in split.summary().items():
        say(
            f"{name}: {part['cells']} cells of {part['subjects']} subjects "
            f"(ALL {part['cells_per_class']['ALL']}, HEM {part['cells_per_class']['HEM']})"
        )
    if scan.unreadable:
        say(f"{len(scan.unreadable)} file(s) skipped while reading the data set")
    for warning in warnings[len(guard) :]:
        say(f"warning: {warning}")
    out = Path(out)
    variants = [(b, stain) for b in backbones for stain in (stains or [config.stain])]
    for backbone, stain in variants:
        if cancel is not None and cancel.cancelled:
            session.cancelled = True
            break
        if len(variants) == 1:
            name = config.name
        else:
            name = backbone + (f"-{stain}" if stain != "none" and len(stains or ()) > 1 else "")
        run_config = replace(config, backbone=backbone, stain=stain, name=name)
        try:
            run = train_backbone(
                split,
                run_config,
                out,
                progress=progress,
                cancel=cancel,
                source=source,
                log=say,
                warnings=warnings,
            )
        except TrainingCancelled as exc:
            session.cancelled = True
            session.failures.append((backbone, str(exc)))
            break
        run.unreadable = [(str(p), r) for p, r in scan.unreadable] + run.unreadable
        session.runs.append(run)
        say(f"{backbone}: wrote {run.bundle_path}")
        if run_config.init_from is not None and session.parent_comparison is None:
            try:
                session.parent_comparison = compare_run_with_parent(run, split, run_config, say)
            except (BundleError, ReportWriteError, OSError, ValueError, RuntimeError) as exc:
                # the new model is saved and sound; say loudly that its comparison is missing
                problem = f"the comparison with the parent model could not be made: {exc}"
                session.warnings.append(problem)
                say(f"warning: {problem}")
        if run.cancelled:
            session.cancelled = True
            break
    if len(session.runs) > 1:
        stem = _free_name(out, f"comparison-{date.today().isoformat()}", (".xlsx", ".md"))
        session.comparison_xlsx, session.comparison_md = write_comparison(
            session.runs, stem.with_suffix(".xlsx"), stem.with_suffix(".md")
        )
    return session
