"""Readers for labelled cell-image data sets, all yielding the same `Record`s.

Training needs three things per cell: the file, its true class and whose cell it is. The
subject id matters as much as the label: cells of one person must never end up on both sides
of a train/test split, or the scores measure memorised patients instead of leukaemia. So
every record carries a non-empty subject id, normalised (`normalise_subject`: "h3" is "H3"),
and says where it came from (`Record.subject_from`). Where no subject is known (ALL-IDB2,
files lying directly in a class folder, CSV rows without one) the image is its own subject,
`subject_from` is "image" and `DatasetScan.subjects_known` is False, so a split of it can be
called what it is: by image. A `SubjectRule` (a folder level or a file-name pattern) lets a
user say where the subjects are.

Nothing is dropped silently: files that cannot be used (unparseable names, unknown labels,
missing or undecodable files, label conflicts) are listed in `DatasetScan.unreadable` with a
plain reason, so a user can see why a data set is smaller than expected.

`preview_dataset` is what a front end runs before training: the reader's scan, the counts
per subject, every image decoded, with a progress callback and a cancel token, so the same
function serves the Training page's worker thread and a plain test.
"""

from __future__ import annotations

import csv
import os
import re
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from leukgui.core.imaging import IMAGE_SUFFIXES, ImageError, decode_image, discover
from leukgui.core.lab_dataset import dataset_csv_in
from leukgui.core.results import ALL, HEM, CancelToken
from leukgui.core.truth import normalise_subject, parse_cnmc_name

__all__ = [
    "CNMC_FINAL_FOLDER",
    "CNMC_FINAL_LABELS",
    "CNMC_PRELIM_FOLDER",
    "CNMC_PRELIM_LABELS",
    "LAYOUT_NAMES",
    "SUBJECT_COLUMNS",
    "SUBJECT_FROM",
    "DatasetPreview",
    "DatasetScan",
    "Record",
    "SubjectRule",
    "normalise_subject",
    "parse_label",
    "parse_subject_rule",
    "preview_dataset",
    "read_all_idb2",
    "read_cnmc",
    "read_cnmc_final",
    "read_cnmc_prelim",
    "read_csv_list",
    "read_dataset",
    "read_imagefolder",
    "subject_rows",
]

CNMC_PRELIM_FOLDER = "C-NMC_test_prelim_phase_data"
CNMC_PRELIM_LABELS = "C-NMC_test_prelim_phase_data_labels.csv"
CNMC_FINAL_FOLDER = "C-NMC_test_final_phase_data"
CNMC_FINAL_LABELS = "C-NMC_test_final_phase_data_labels.csv"
LAYOUT_NAMES = {  # DatasetScan.source, in words a user recognizes
    "cnmc": "C-NMC 2019 training data (fold_N/all, fold_N/hem)",
    "cnmc-prelim": "C-NMC preliminary test set with its labels CSV",
    "cnmc-final": "C-NMC final test set with its labels CSV",
    "imagefolder": "class folders all/ and hem/",
    "all-idb2": "ALL-IDB2 file names (ImNNN_1 blast, ImNNN_0 normal)",
    "csv": "CSV list (path, label[, subject])",
}

_LABEL_WORDS = {"all": ALL, "1": ALL, "hem": HEM, "0": HEM}
_DEFAULT_CLASSES = {"all": ALL, "hem": HEM}
_FOLD = re.compile(r"^fold_?(\d+)$", re.IGNORECASE)
_ALL_IDB2 = re.compile(r"^im(?P<id>\d+)_(?P<label>[01])\.[a-z0-9]+$", re.IGNORECASE)
# Record.subject_from: where a subject id came from, in words for messages.
SUBJECT_FROM = {
    "name": "the C-NMC file name",
    "column": "the CSV's subject column",
    "folder": "a folder level",
    "pattern": "a file-name pattern",
    "image": "nowhere: the image is its own subject",
}
SUBJECT_COLUMNS = ("subject", "patient_id", "patient")  # CSV headers, first present wins


@dataclass(frozen=True)
class Record:
    """One labelled cell image: the unit every split and training loop works on."""

    path: Path
    label: str  # "ALL" or "HEM"
    subject: str  # never empty: a normalised subject id
    fold: str | None = None  # C-NMC training fold ("fold_0".."fold_2"), else None
    subject_from: str = "name"  # a SUBJECT_FROM key; "image" = no subject known


@dataclass(frozen=True)
class SubjectRule:
    """Where to read the subject id when the layout does not say: a folder level or a pattern.

    `folder` is 1-based and counts the folders of a file's path below the data root (the
    folder given to the reader; for a CSV list, the CSV's folder; for the C-NMC test sets, the
    image folder): for root/all/patient7/x.png level 1 is "all" and level 2 is "patient7".
    `pattern` is a regular expression searched in the file name, ignoring letter case like
    subject ids do; the subject is its named group `subject`, else its group 1. A rule, when
    given, wins over what the layout infers (C-NMC names, CSV columns, patient folders),
    because the user said so explicitly.
    """

    folder: int | None = None
    pattern: str | None = None

    def __post_init__(self) -> None:
        if (self.folder is None) == (self.pattern is None):
            raise ValueError("a subject rule needs exactly one of a folder level or a pattern")
        if self.folder is not None and (isinstance(self.folder, bool) or self.folder < 1):
            raise ValueError(f"subject folder level must be 1 or more, not {self.folder!r}")
        if self.pattern is not None:
            try:
                compiled = re.compile(self.pattern, re.IGNORECASE)
            except re.error as exc:
                raise ValueError(f"subject pattern '{self.pattern}' is not valid: {exc}") from None
            if "subject" not in compiled.groupindex and compiled.groups < 1:
                raise ValueError(
                    f"subject pattern '{self.pattern}' has no group: mark the subject part "
                    "with (?P<subject>...) or (...)"
                )

    @property
    def kind(self) -> str:
        """The Record.subject_from value of subjects this rule gives: "folder" or "pattern"."""
        return "folder" if self.folder is not None else "pattern"

    def describe(self) -> str:
        """The rule in words, for logs, reports and the GUI."""
        if self.folder is not None:
            return f"subject = folder level {self.folder} below the data root"
        return f"subject = the part of the file name matched by the pattern '{self.pattern}'"

    def to_manifest(self) -> dict:
        """JSON-ready form, saved with a split so it can be read the same way again (the
        description is for reports; `from_manifest` ignores it)."""
        kind = {"folder": self.folder} if self.folder is not None else {"pattern": self.pattern}
        return {**kind, "description": self.describe()}

    @classmethod
    def from_manifest(cls, data: dict | None) -> SubjectRule | None:
        """The rule `to_manifest` wrote (None stays None)."""
        if not data:
            return None
        return cls(folder=data.get("folder"), pattern=data.get("pattern"))

    def subject_of(self, path: Path, root: Path) -> str:
        """The normalised subject of `path`; ValueError with a plain reason when there is none."""
        if self.pattern is not None:
            match = re.search(self.pattern, path.name, re.IGNORECASE)
            if match is not None:
                text = match["subject"] if "subject" in match.re.groupindex else match[1]
                if text and normalise_subject(text):
                    return normalise_subject(text)
            raise ValueError(f"file name does not match the subject pattern '{self.pattern}'")
        try:
            folders = path.relative_to(root).parts[:-1]
        except ValueError:
            raise ValueError(f"not below the data root {root}, so no folder level") from None
        if len(folders) < self.folder or not normalise_subject(folders[self.folder - 1]):
            raise ValueError(f"no folder at level {self.folder} below the data root")
        return normalise_subject(folders[self.folder - 1])


def parse_subject_rule(folder: int | None, pattern: str | None) -> SubjectRule | None:
    """The rule a CLI or form gave (None when neither), ValueError with a plain message if bad."""
    if pattern is not None and not pattern.strip():
        pattern = None
    if folder is None and pattern is None:
        return None
    if folder is not None and pattern is not None:
        raise ValueError("give the subject either by folder level or by pattern, not both")
    return SubjectRule(folder=folder, pattern=pattern)


@dataclass
class DatasetScan:
    """What a reader found: usable records, plus every file it had to skip and why."""

    records: list[Record]
    unreadable: list[tuple[Path, str]] = field(default_factory=list)
    source: str = ""  # "cnmc", "cnmc-prelim", "cnmc-final", "imagefolder", "all-idb2", "csv"
    root: Path | None = None  # the data root: subject folder levels and manifest paths
    subject_rule: SubjectRule | None = None  # the rule the records were read with

    @property
    def image_subjects(self) -> int:
        """Cells whose subject is only the image itself (no patient known)."""
        return sum(1 for r in self.records if r.subject_from == "image")

    @property
    def subjects_known(self) -> bool:
        """True when every cell has a real subject, so a split by subject is one."""
        return self.image_subjects == 0

    def summary(self) -> dict:
        """Counts a user checks before training: class balance, subjects, skipped files."""
        per_class = Counter(r.label for r in self.records)
        per_subject = Counter(r.subject for r in self.records)
        subjects_per_class: dict[str, set[str]] = defaultdict(set)
        for r in self.records:
            subjects_per_class[r.label].add(r.subject)
        out: dict = {
            "source": self.source,
            "cells": len(self.records),
            "cells_per_class": {label: per_class.get(label, 0) for label in (ALL, HEM)},
            "subjects": len(per_subject),
            "subjects_per_class": {
                label: len(subjects_per_class.get(label, ())) for label in (ALL, HEM)
            },
            "cells_per_subject": dict(sorted(per_subject.items())),
            "unreadable": len(self.unreadable),
            "image_subjects": self.image_subjects,
        }
        folds = Counter(r.fold for r in self.records if r.fold is not None)
        if folds:
            out["cells_per_fold"] = dict(sorted(folds.items()))
        return out


def parse_label(text: str) -> str | None:
    """ALL/HEM from the spellings data sets use (ALL, hem, 1, 0), or None if unknown."""
    return _LABEL_WORDS.get(str(text).strip().lower())


# --------------------------------------------------------------------------------------------
# Shared helpers
# --------------------------------------------------------------------------------------------


def _images_under(folder: Path, unreadable: list[tuple[Path, str]]) -> list[Path]:
    """Image files below `folder` in deterministic order (via `discover`), errors listed."""
    files, errors = discover([folder])
    unreadable.extend((e.path, e.reason) for e in errors)
    return [f.path for f in files]


def _subdirs(folder: Path) -> list[Path]:
    """Visible subfolders, sorted by name, so readers behave the same on every OS."""
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name.casefold())
    except OSError:
        return []
    return [Path(e.path) for e in entries if not e.name.startswith(".") and e.is_dir()]


def _decode_all(
    records: Sequence[Record],
    progress: Callable[[int, int], None] | None = None,
    cancel: CancelToken | None = None,
    interval: float = 0.25,
) -> tuple[list[Record], list[tuple[Path, str]]] | None:
    """Decode every record: (readable, [(path, reason)]), or None when `cancel` stopped it.

    `progress(done, total)` is called at most every `interval` seconds and once at the end,
    so a GUI thread is not flooded by a fast disk.
    """
    kept: list[Record] = []
    bad: list[tuple[Path, str]] = []
    total = len(records)
    last = time.monotonic()
    for done, record in enumerate(records, 1):
        if cancel is not None and cancel.cancelled:
            return None
        try:
            decode_image(record.path)
        except ImageError as exc:
            bad.append((record.path, exc.reason))
        else:
            kept.append(record)
        if progress is not None and (done == total or time.monotonic() - last >= interval):
            last = time.monotonic()
            progress(done, total)
    return kept, bad


def _check_images(scan: DatasetScan) -> DatasetScan:
    """Decode every record; failures move to `unreadable` with the decoder's plain reason."""
    kept, bad = _decode_all(scan.records)
    scan.records = kept
    scan.unreadable.extend(bad)
    return scan


def _folder_subject(rel_parts: Iterable[str]) -> str | None:
    """The first folder level not named all/hem (a patient folder, presumably), else None."""
    for part in rel_parts:
        if part.strip() and part.strip().lower() not in _DEFAULT_CLASSES:
            return part.strip()
    return None


def _subject(
    path: Path,
    root: Path,
    rule: SubjectRule | None,
    inferred: tuple[str | None, str] | None,
    own: str,
) -> tuple[str, str]:
    """(normalised subject, subject_from) by the user's rule, the layout's guess, or the image.

    The rule wins when given (its ValueError says why a file has no subject). Without one, the
    layout's `inferred` (subject, source) is used when non-empty; else the image is its own
    subject (`own`, source "image"), which `DatasetScan.subjects_known` then reports.
    """
    if rule is not None:
        return rule.subject_of(path, root), rule.kind
    if inferred is not None and inferred[0] and normalise_subject(inferred[0]):
        return normalise_subject(inferred[0]), inferred[1]
    return normalise_subject(own), "image"


# --------------------------------------------------------------------------------------------
# C-NMC 2019
# --------------------------------------------------------------------------------------------


def _class_folders(folder: Path, class_map: dict[str, str]) -> list[tuple[Path, str]]:
    """(folder, label) for the subfolders named like a class (any letter case)."""
    folded = {k.strip().casefold(): v for k, v in class_map.items()}
    return [(d, folded[d.name.casefold()]) for d in _subdirs(folder) if d.name.casefold() in folded]


def _cnmc_fold_dirs(root: Path) -> list[tuple[Path, str | None]]:
    """The C-NMC folders holding all/hem, with their fold names, for any accepted root."""
    if (root / "training_data").is_dir():
        root = root / "training_data"
    folds = [d for d in _subdirs(root) if _FOLD.match(d.name)]
    if folds:
        return [(d, f"fold_{int(_FOLD.match(d.name)[1])}") for d in folds]
    if _class_folders(root, _DEFAULT_CLASSES):
        match = _FOLD.match(root.name)
        return [(root, f"fold_{int(match[1])}" if match else None)]
    return []


def read_cnmc(
    root: str | os.PathLike[str],
    *,
    check_images: bool = False,
    subjects: SubjectRule | None = None,
) -> DatasetScan:
    """Read the C-NMC 2019 training data: root/training_data/fold_{0,1,2}/{all,hem}/*.bmp.

    `root` may also be training_data itself, one fold, or a folder holding all/hem directly.
    Label and subject come from the file name (UID_<subject>_<image>_<cell>_<all|hem>.bmp);
    "H3" and "h3" are one healthy donor. A name whose label contradicts its folder is skipped
    and listed rather than guessed, because a wrong training label is worse than one cell less.
    """
    root = Path(root)
    fold_dirs = _cnmc_fold_dirs(root)
    if not fold_dirs:
        raise ValueError(
            f"{root} is not a C-NMC folder: expected training_data/fold_N/all|hem, "
            "fold_N folders, or all/hem folders"
        )
    records: list[Record] = []
    unreadable: list[tuple[Path, str]] = []
    for fold_dir, fold in fold_dirs:
        for class_dir, folder_label in _class_folders(fold_dir, _DEFAULT_CLASSES):
            for path in _images_under(class_dir, unreadable):
                truth = parse_cnmc_name(path.name)
                if truth is None or not truth.subject:
                    unreadable.append(
                        (path, "not a C-NMC file name (UID_<subject>_<image>_<cell>_<all|hem>)")
                    )
                    continue
                label = truth.label or folder_label
                if label != folder_label:
                    reason = f"name says {label} but folder {class_dir.name!r} says {folder_label}"
                    unreadable.append((path, reason))
                    continue
                try:
                    subject, origin = _subject(path, root, subjects, (truth.subject, "name"), "")
                except ValueError as exc:
                    unreadable.append((path, str(exc)))
                    continue
                records.append(Record(path, label, subject, fold, origin))
    scan = DatasetScan(records, unreadable, "cnmc", root, subjects)
    return _check_images(scan) if check_images else scan


def _read_csv_rows(csv_path: Path) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    """Header (lower-cased, stripped) and (row number, row) pairs; the header is row 1."""
    with open(csv_path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.reader(fh)
        try:
            header = [h.strip().lower() for h in next(reader)]
        except StopIteration:
            raise ValueError(f"{csv_path} is empty") from None
        rows = []
        for number, row in enumerate(reader, start=2):
            if not any(cell.strip() for cell in row):
                continue  # blank lines are not data
            cells = [c.strip() for c in row] + [""] * (len(header) - len(row))
            rows.append((number, dict(zip(header, cells, strict=False))))
    return header, rows


def read_cnmc_prelim(
    folder: str | os.PathLike[str],
    labels_csv: str | os.PathLike[str],
    *,
    check_images: bool = False,
    subjects: SubjectRule | None = None,
) -> DatasetScan:
    """Read the C-NMC preliminary test set: renamed images (1.bmp..) plus a labels CSV.

    The CSV (Patient_ID,new_names,labels; labels 1 = ALL, 0 = HEM) maps each file to its
    original UID_<subject>_... name, which gives the subject. Images in the folder that the
    CSV does not list, and rows whose file is missing, are listed in `unreadable`.
    """
    return _read_cnmc_test(folder, labels_csv, "cnmc-prelim", check_images, subjects)


def read_cnmc_final(
    folder: str | os.PathLike[str],
    labels_csv: str | os.PathLike[str],
    *,
    check_images: bool = False,
    subjects: SubjectRule | None = None,
) -> DatasetScan:
    """Read the C-NMC final test set (C-NMC_test_final_phase_data + its labels CSV).

    Its exact published format could not be checked here, so it is read exactly like the
    preliminary set: renamed images plus a CSV with the columns Patient_ID,new_names,labels,
    the subject taken from the original C-NMC name in Patient_ID. Scores on it are then
    comparable with the challenge's final-phase results.
    """
    return _read_cnmc_test(folder, labels_csv, "cnmc-final", check_images, subjects)


def _read_cnmc_test(
    folder: str | os.PathLike[str],
    labels_csv: str | os.PathLike[str],
    source: str,
    check_images: bool,
    rule: SubjectRule | None,
) -> DatasetScan:
    """The C-NMC test sets' shared format: renamed images listed in a labels CSV."""
    folder, labels_csv = Path(folder), Path(labels_csv)
    header, rows = _read_csv_rows(labels_csv)
    needed = {"patient_id", "new_names", "labels"}
    if not needed <= set(header):
        raise ValueError(f"{labels_csv} lacks the columns Patient_ID, new_names, labels")
    records: list[Record] = []
    unreadable: list[tuple[Path, str]] = []
    listed: set[str] = set()
    for number, row in rows:
        path = folder / row["new_names"]
        listed.add(row["new_names"].casefold())
        label = parse_label(row["labels"])
        truth = parse_cnmc_name(row["patient_id"])
        if not row["new_names"]:
            unreadable.append((labels_csv, f"row {number}: no file name"))
        elif label is None:
            unreadable.append((path, f"row {number}: unknown label {row['labels']!r}"))
        elif truth is None or not truth.subject:
            reason = f"row {number}: Patient_ID {row['patient_id']!r} is not a C-NMC name"
            unreadable.append((path, reason))
        elif not path.is_file():
            unreadable.append((path, f"row {number}: file not found"))
        else:
            try:
                subject, origin = _subject(path, folder, rule, (truth.subject, "name"), "")
            except ValueError as exc:
                unreadable.append((path, f"row {number}: {exc}"))
                continue
            records.append(Record(path, label, subject, None, origin))
    for path in _images_under(folder, unreadable):
        if path.relative_to(folder).as_posix().casefold() not in listed:
            unreadable.append((path, f"not listed in {labels_csv.name}"))
    scan = DatasetScan(records, unreadable, source, folder, rule)
    return _check_images(scan) if check_images else scan


# --------------------------------------------------------------------------------------------
# ImageFolder, ALL-IDB2, CSV list
# --------------------------------------------------------------------------------------------


def read_imagefolder(
    root: str | os.PathLike[str],
    *,
    class_map: dict[str, str] | None = None,
    check_images: bool = False,
    subjects: SubjectRule | None = None,
) -> DatasetScan:
    """Read root/<class>/...: class folders all/hem (any case) or user-named via `class_map`.

    `class_map` maps folder names to classes, e.g. {"blast": "ALL", "normal": "HEM"}.
    Subject, in order: the `subjects` rule when given; the C-NMC file name's subject; else the
    first folder level below the class folder (root/all/patient7/x.png -> "PATIENT7"); else,
    for files lying directly in the class folder, the image itself ("ALL/X", subject_from
    "image"). That last case cannot keep one patient's cells together: the scan says so
    (`subjects_known` False) and a split of it is by image, not by subject.
    Other top-level folders are listed in `unreadable`, not silently ignored.
    """
    root = Path(root)
    mapping = _DEFAULT_CLASSES if class_map is None else _validated_map(class_map)
    classes = _class_folders(root, mapping)
    if not classes:
        names = ", ".join(sorted(mapping))
        raise ValueError(f"{root} has no class folders (expected {names})")
    records: list[Record] = []
    unreadable: list[tuple[Path, str]] = []
    class_names = {d.name for d, _ in classes}
    for folder in _subdirs(root):
        if folder.name not in class_names:
            unreadable.append((folder, "folder is not a class folder, skipped"))
    for class_dir, folder_label in classes:
        for path in _images_under(class_dir, unreadable):
            truth = parse_cnmc_name(path.name)
            if truth is not None and truth.label is not None and truth.label != folder_label:
                said = f"folder {class_dir.name!r} says {folder_label}"
                unreadable.append((path, f"name says {truth.label} but {said}"))
                continue
            rel = path.relative_to(class_dir)
            if truth is not None and truth.subject:
                inferred: tuple[str | None, str] = (truth.subject, "name")
            else:
                inferred = (rel.parts[0] if len(rel.parts) > 1 else None, "folder")
            own = f"{class_dir.name}/{rel.with_suffix('').as_posix()}"
            try:
                subject, origin = _subject(path, root, subjects, inferred, own)
            except ValueError as exc:
                unreadable.append((path, str(exc)))
                continue
            records.append(Record(path, folder_label, subject, None, origin))
    scan = DatasetScan(records, unreadable, "imagefolder", root, subjects)
    return _check_images(scan) if check_images else scan


def _validated_map(class_map: dict[str, str]) -> dict[str, str]:
    out = {}
    for folder, label in class_map.items():
        parsed = parse_label(label)
        if parsed is None:
            raise ValueError(f"class_map: {label!r} is not ALL or HEM (folder {folder!r})")
        out[folder] = parsed
    return out


def read_all_idb2(
    root: str | os.PathLike[str],
    *,
    check_images: bool = False,
    subjects: SubjectRule | None = None,
) -> DatasetScan:
    """Read ALL-IDB2: ImNNN_L.tif, L = 1 blast (ALL), 0 normal (HEM), in any subfolder.

    ALL-IDB2 gives no patient ids, so unless a `subjects` rule says otherwise the subject is
    the image id ("IM001", subject_from "image"): a split of it is only an image-level split,
    and cannot rule out patient leakage.
    """
    root = Path(root)
    records: list[Record] = []
    unreadable: list[tuple[Path, str]] = []
    for path in _images_under(root, unreadable):
        match = _ALL_IDB2.match(path.name)
        if match is None:
            unreadable.append((path, "not an ALL-IDB2 file name (ImNNN_1 or ImNNN_0)"))
            continue
        label = ALL if match["label"] == "1" else HEM
        try:
            subject, origin = _subject(path, root, subjects, None, f"Im{match['id']}")
        except ValueError as exc:
            unreadable.append((path, str(exc)))
            continue
        records.append(Record(path, label, subject, None, origin))
    scan = DatasetScan(records, unreadable, "all-idb2", root, subjects)
    return _check_images(scan) if check_images else scan


def read_csv_list(
    csv_path: str | os.PathLike[str],
    *,
    check_images: bool = False,
    subjects: SubjectRule | None = None,
) -> DatasetScan:
    """Read a CSV list with header path,label[,subject]; paths relative to the CSV's folder.

    Labels may be ALL/HEM/all/hem/1/0. The subject column may also be called patient_id or
    patient. Subject, in order: the `subjects` rule when given; the subject column; the C-NMC
    name's subject; the first folder level of the path that is not a class name; else the
    image itself (subject_from "image", leakage caveat as in `read_imagefolder`). Bad rows go
    to `unreadable` with a reason naming the row number (the header is row 1).
    """
    csv_path = Path(csv_path)
    base = csv_path.parent
    header, rows = _read_csv_rows(csv_path)
    if not {"path", "label"} <= set(header):
        raise ValueError(f"{csv_path} needs a header with the columns path,label[,subject]")
    column = next((c for c in SUBJECT_COLUMNS if c in header), None)
    records: list[Record] = []
    unreadable: list[tuple[Path, str]] = []
    seen: dict[Path, int] = {}
    for number, row in rows:
        text = row["path"]
        if not text:
            unreadable.append((csv_path, f"row {number}: no path"))
            continue
        given = Path(text)
        path = given if given.is_absolute() else base / given
        label = parse_label(row["label"])
        if label is None:
            unreadable.append((path, f"row {number}: unknown label {row['label']!r}"))
        elif not path.name.lower().endswith(IMAGE_SUFFIXES):
            unreadable.append((path, f"row {number}: not a supported image type"))
        elif not path.is_file():
            unreadable.append((path, f"row {number}: file not found"))
        elif path.resolve() in seen:
            unreadable.append((path, f"row {number}: duplicate of row {seen[path.resolve()]}"))
        else:
            inferred = _csv_subject(row.get(column, "") if column else "", given)
            own = given.with_suffix("").as_posix()
            try:
                subject, origin = _subject(path, base, subjects, inferred, own)
            except ValueError as exc:
                unreadable.append((path, f"row {number}: {exc}"))
                continue
            seen[path.resolve()] = number
            records.append(Record(path, label, subject, None, origin))
    scan = DatasetScan(records, unreadable, "csv", base, subjects)
    return _check_images(scan) if check_images else scan


def _csv_subject(column: str, given: Path) -> tuple[str | None, str] | None:
    """The subject a CSV row gives or implies, with its source; None when only the image."""
    if normalise_subject(column):
        return column, "column"
    truth = parse_cnmc_name(given.name)
    if truth is not None and truth.subject:
        return truth.subject, "name"
    folders = given.parts[:-1] if not given.is_absolute() else given.parts[-2:-1]
    folder = _folder_subject(folders)
    return (folder, "folder") if folder else None


# --------------------------------------------------------------------------------------------
# Auto-detection
# --------------------------------------------------------------------------------------------


def _csv_header(path: Path) -> set[str]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            return {h.strip().lower() for h in next(csv.reader(fh), [])}
    except (OSError, UnicodeDecodeError):
        return set()


_CNMC_TESTS = (  # (folder, labels CSV, reader) of the C-NMC test sets
    (CNMC_PRELIM_FOLDER, CNMC_PRELIM_LABELS, read_cnmc_prelim),
    (CNMC_FINAL_FOLDER, CNMC_FINAL_LABELS, read_cnmc_final),
)


def _labels_csv_for(folder: Path, labels_name: str) -> Path | None:
    candidates = [folder / labels_name, folder.parent / labels_name]
    return next((c for c in candidates if c.is_file()), None)


def read_dataset(
    path: str | os.PathLike[str],
    *,
    class_map: dict[str, str] | None = None,
    check_images: bool = False,
    subjects: SubjectRule | None = None,
) -> DatasetScan:
    """Pick the right reader for `path`, so users can point the trainer at any known layout.

    In order: a CSV file (a C-NMC test set's labels if it has Patient_ID,new_names,labels --
    the final set when its name says "final", else the preliminary one -- else a path,label
    list); C-NMC training data (training_data/ or fold_N folders); a C-NMC test-set folder
    (labels CSV inside, beside it, or in the parent); an ImageFolder (class_map given, or
    all/hem folders); ALL-IDB2 names (ImNNN_L); a lab data set folder (its dataset.csv); a
    single path,label CSV inside. `subjects`
    (a folder level or file-name pattern) is handed to whichever reader is chosen.
    """
    path = Path(path)
    opts = {"check_images": check_images, "subjects": subjects}
    if path.is_file():
        if path.suffix.lower() != ".csv":
            raise ValueError(f"{path} is a file but not a CSV list")
        if {"patient_id", "new_names", "labels"} <= _csv_header(path):
            final = "final" in path.name.lower()
            name, _, reader = _CNMC_TESTS[1 if final else 0]
            folder = path.parent / name
            return reader(folder if folder.is_dir() else path.parent, path, **opts)
        return read_csv_list(path, **opts)
    if not path.is_dir():
        raise ValueError(f"{path}: no such file or folder")
    subdirs = _subdirs(path)
    if (path / "training_data").is_dir() or any(_FOLD.match(d.name) for d in subdirs):
        return read_cnmc(path, **opts)
    for folder_name, labels_name, reader in _CNMC_TESTS:
        if (path / folder_name).is_dir() and (path / labels_name).is_file():
            return reader(path / folder_name, path / labels_name, **opts)
        labels = _labels_csv_for(path, labels_name)
        if path.name == folder_name and labels is not None:
            return reader(path, labels, **opts)
    if class_map is not None or _class_folders(path, _DEFAULT_CLASSES):
        return read_imagefolder(path, class_map=class_map, **opts)
    probe: list[tuple[Path, str]] = []
    images = _images_under(path, probe)
    if images and any(_ALL_IDB2.match(p.name) for p in images):
        return read_all_idb2(path, **opts)
    lab_csv = dataset_csv_in(path)  # a lab data set (`leukgui dataset add`)
    if lab_csv is not None:
        return read_csv_list(lab_csv, **opts)
    lists = [p for p in sorted(path.glob("*.csv")) if {"path", "label"} <= _csv_header(p)]
    if len(lists) == 1:
        return read_csv_list(lists[0], **opts)
    raise ValueError(
        f"{path}: layout not recognized (expected C-NMC training_data/fold_N, all/hem class "
        "folders, ALL-IDB2 ImNNN_L files, or a path,label CSV)"
    )


# --------------------------------------------------------------------------------------------
# Preview before training
# --------------------------------------------------------------------------------------------


def subject_rows(records: Sequence[Record]) -> list[tuple[str, str, int]]:
    """(subject, class, cells) per subject, by name; class "ALL + HEM" if a subject has both."""
    per_subject: dict[str, Counter] = {}
    for record in records:
        per_subject.setdefault(record.subject, Counter())[record.label] += 1
    rows = []
    for subject in sorted(per_subject, key=lambda s: (s.casefold(), s)):
        counts = per_subject[subject]
        if counts.get(ALL, 0) and counts.get(HEM, 0):
            label = f"{ALL} + {HEM}"
        else:
            label = ALL if counts.get(ALL, 0) else HEM
        rows.append((subject, label, sum(counts.values())))
    return rows


@dataclass
class DatasetPreview:
    """A labelled folder as training would read it, or the reason it cannot be read."""

    path: Path
    scan: DatasetScan | None = None
    error: str | None = None  # the layout was not recognized (read_dataset's ValueError)
    subjects: list[tuple[str, str, int]] = field(default_factory=list)  # subject_rows
    checked: bool = False  # every image decoded; undecodable ones moved to scan.unreadable

    @property
    def layout(self) -> str:
        """The recognized layout in words ("" when none was)."""
        source = self.scan.source if self.scan is not None else ""
        return LAYOUT_NAMES.get(source, source)

    def warnings(self) -> list[str]:
        """What a user should know before training on this data (empty when all is well)."""
        if self.scan is None:
            return []
        s = self.scan.summary()
        cells, per_class = s["cells"], s["cells_per_class"]
        warnings = []
        if not cells:
            warnings.append("No labelled cells found.")
        elif not per_class[ALL] or not per_class[HEM]:
            warnings.append("Training needs cells of both classes, ALL and HEM.")
        unknown = self.scan.image_subjects
        if unknown:
            warnings.append(
                f"Subjects unknown for {unknown} cell{'s' if unknown != 1 else ''}: the split "
                "would be by image, so scores are optimistic (cells of one patient can land in "
                "training and test). Give subjects by a subject (or patient_id) column in a "
                "CSV list, by patient folders, or by a folder level or file-name pattern."
            )
        return warnings

    def problem(self) -> str:
        """Why training cannot start on this data yet, or "" when it can."""
        if not self.checked and self.error is None:
            return "Checking the images…"
        if self.error is not None or self.scan is None or not self.scan.records:
            return "The data folder holds no usable labelled cells."
        if {r.label for r in self.scan.records} != {ALL, HEM}:
            return "Training needs cells of both classes."
        return ""


def preview_dataset(
    path: str | os.PathLike[str],
    *,
    check_images: bool = True,
    listed: Callable[[DatasetPreview], None] | None = None,
    progress: Callable[[int, int], None] | None = None,
    cancel: CancelToken | None = None,
    interval: float = 0.25,
    subjects: SubjectRule | None = None,
) -> DatasetPreview:
    """Read a data set as training would; an unknown layout is an outcome, not a crash.

    First the fast pass (names and folders), handed to `listed` at once so a preview can
    appear; then every image is decoded (`progress(done, total)` along the way), so files that
    would fail in training are listed before it starts and the scan that is trained on holds
    only readable cells. A `cancel` token stops the decoding early: the fast pass comes back,
    with `checked` False. `subjects` is the user's subject rule, as for `read_dataset`.
    """
    path = Path(path)
    try:
        scan = read_dataset(path, subjects=subjects)
    except ValueError as exc:
        return DatasetPreview(path, error=str(exc))
    first = DatasetPreview(path, scan=scan, subjects=subject_rows(scan.records))
    if not check_images or not scan.records:
        first.checked = not scan.records
        return first
    if listed is not None:
        listed(first)
    decoded = _decode_all(scan.records, progress, cancel, interval)
    if decoded is None:
        return first
    kept, bad = decoded
    checked = DatasetScan(
        kept, list(scan.unreadable) + bad, scan.source, scan.root, scan.subject_rule
    )
    return DatasetPreview(path, scan=checked, subjects=subject_rows(kept), checked=True)
