"""Readers for labelled cell-image data sets, all yielding the same `Record`s.

Training needs three things per cell: the file, its true class and whose cell it is. The
subject id matters as much as the label: cells of one person must never end up on both sides
of a train/test split, or the scores measure memorised patients instead of leukaemia. So
every record carries a non-empty subject id, and every reader says where it came from.

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
from leukgui.core.results import ALL, HEM, CancelToken
from leukgui.core.truth import parse_cnmc_name

__all__ = [
    "CNMC_PRELIM_FOLDER",
    "CNMC_PRELIM_LABELS",
    "LAYOUT_NAMES",
    "DatasetPreview",
    "DatasetScan",
    "Record",
    "parse_label",
    "preview_dataset",
    "read_all_idb2",
    "read_cnmc",
    "read_cnmc_prelim",
    "read_csv_list",
    "read_dataset",
    "read_imagefolder",
    "subject_rows",
]

CNMC_PRELIM_FOLDER = "C-NMC_test_prelim_phase_data"
CNMC_PRELIM_LABELS = "C-NMC_test_prelim_phase_data_labels.csv"
LAYOUT_NAMES = {  # DatasetScan.source, in words a user recognizes
    "cnmc": "C-NMC 2019 training data (fold_N/all, fold_N/hem)",
    "cnmc-prelim": "C-NMC preliminary test set with its labels CSV",
    "imagefolder": "class folders all/ and hem/",
    "all-idb2": "ALL-IDB2 file names (ImNNN_1 blast, ImNNN_0 normal)",
    "csv": "CSV list (path, label[, subject])",
}

_LABEL_WORDS = {"all": ALL, "1": ALL, "hem": HEM, "0": HEM}
_DEFAULT_CLASSES = {"all": ALL, "hem": HEM}
_FOLD = re.compile(r"^fold_?(\d+)$", re.IGNORECASE)
_ALL_IDB2 = re.compile(r"^im(?P<id>\d+)_(?P<label>[01])\.[a-z0-9]+$", re.IGNORECASE)


@dataclass(frozen=True)
class Record:
    """One labelled cell image: the unit every split and training loop works on."""

    path: Path
    label: str  # "ALL" or "HEM"
    subject: str  # never empty: a normalised subject id
    fold: str | None = None  # C-NMC training fold ("fold_0".."fold_2"), else None


@dataclass
class DatasetScan:
    """What a reader found: usable records, plus every file it had to skip and why."""

    records: list[Record]
    unreadable: list[tuple[Path, str]] = field(default_factory=list)
    source: str = ""  # "cnmc", "cnmc-prelim", "imagefolder", "all-idb2", "csv"

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


def _folder_subject(rel_parts: Iterable[str], own: str) -> str:
    """Subject from the first folder level not named all/hem, else the file itself.

    With no patient folder at all every file becomes its own subject (`own`): the best that
    can be done, but cells of one patient may then leak across splits.
    """
    for part in rel_parts:
        if part.strip() and part.strip().lower() not in _DEFAULT_CLASSES:
            return part.strip()
    return own


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


def read_cnmc(root: str | os.PathLike[str], *, check_images: bool = False) -> DatasetScan:
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
                records.append(Record(path, label, truth.subject, fold))
    scan = DatasetScan(records, unreadable, "cnmc")
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
) -> DatasetScan:
    """Read the C-NMC preliminary test set: renamed images (1.bmp..) plus a labels CSV.

    The CSV (Patient_ID,new_names,labels; labels 1 = ALL, 0 = HEM) maps each file to its
    original UID_<subject>_... name, which gives the subject. Images in the folder that the
    CSV does not list, and rows whose file is missing, are listed in `unreadable`.
    """
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
            records.append(Record(path, label, truth.subject))
    for path in _images_under(folder, unreadable):
        if path.relative_to(folder).as_posix().casefold() not in listed:
            unreadable.append((path, f"not listed in {labels_csv.name}"))
    scan = DatasetScan(records, unreadable, "cnmc-prelim")
    return _check_images(scan) if check_images else scan


# --------------------------------------------------------------------------------------------
# ImageFolder, ALL-IDB2, CSV list
# --------------------------------------------------------------------------------------------


def read_imagefolder(
    root: str | os.PathLike[str],
    *,
    class_map: dict[str, str] | None = None,
    check_images: bool = False,
) -> DatasetScan:
    """Read root/<class>/...: class folders all/hem (any case) or user-named via `class_map`.

    `class_map` maps folder names to classes, e.g. {"blast": "ALL", "normal": "HEM"}.
    Subject, in order: the C-NMC file name's subject; else the first folder level below the
    class folder (root/all/patient7/x.png -> "patient7"); else, for files lying directly in
    the class folder, the file itself ("all/x"). That last case cannot keep one patient's cells
    together, so a split of such a data set may leak patients between train and test.
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
                subject = truth.subject
            else:
                own = f"{class_dir.name}/{rel.with_suffix('').as_posix()}"
                subject = (rel.parts[0].strip() if len(rel.parts) > 1 else "") or own
            records.append(Record(path, folder_label, subject))
    scan = DatasetScan(records, unreadable, "imagefolder")
    return _check_images(scan) if check_images else scan


def _validated_map(class_map: dict[str, str]) -> dict[str, str]:
    out = {}
    for folder, label in class_map.items():
        parsed = parse_label(label)
        if parsed is None:
            raise ValueError(f"class_map: {label!r} is not ALL or HEM (folder {folder!r})")
        out[folder] = parsed
    return out


def read_all_idb2(root: str | os.PathLike[str], *, check_images: bool = False) -> DatasetScan:
    """Read ALL-IDB2: ImNNN_L.tif, L = 1 blast (ALL), 0 normal (HEM), in any subfolder.

    ALL-IDB2 gives no patient ids, so the subject is the image id ("Im001"): a subject-level
    split of it is only an image-level split, and cannot rule out patient leakage.
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
        records.append(Record(path, label, f"Im{match['id']}"))
    scan = DatasetScan(records, unreadable, "all-idb2")
    return _check_images(scan) if check_images else scan


def read_csv_list(csv_path: str | os.PathLike[str], *, check_images: bool = False) -> DatasetScan:
    """Read a CSV list with header path,label[,subject]; paths relative to the CSV's folder.

    Labels may be ALL/HEM/all/hem/1/0. Without a subject column (or with an empty cell) the
    subject is the C-NMC name's subject, else the first folder level of the path that is not
    a class name, else the file itself (leakage caveat as in `read_imagefolder`). Bad rows go
    to `unreadable` with a reason naming the row number (the header is row 1).
    """
    csv_path = Path(csv_path)
    base = csv_path.parent
    header, rows = _read_csv_rows(csv_path)
    if not {"path", "label"} <= set(header):
        raise ValueError(f"{csv_path} needs a header with the columns path,label[,subject]")
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
            seen[path.resolve()] = number
            records.append(Record(path, label, _csv_subject(row.get("subject", ""), given)))
    scan = DatasetScan(records, unreadable, "csv")
    return _check_images(scan) if check_images else scan


def _csv_subject(column: str, given: Path) -> str:
    if column:
        return column
    truth = parse_cnmc_name(given.name)
    if truth is not None and truth.subject:
        return truth.subject
    folders = given.parts[:-1] if not given.is_absolute() else given.parts[-2:-1]
    return _folder_subject(folders, given.with_suffix("").as_posix())


# --------------------------------------------------------------------------------------------
# Auto-detection
# --------------------------------------------------------------------------------------------


def _csv_header(path: Path) -> set[str]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            return {h.strip().lower() for h in next(csv.reader(fh), [])}
    except (OSError, UnicodeDecodeError):
        return set()


def _prelim_csv_in(folder: Path) -> Path | None:
    candidates = [folder / CNMC_PRELIM_LABELS, folder.parent / CNMC_PRELIM_LABELS]
    return next((c for c in candidates if c.is_file()), None)


def read_dataset(
    path: str | os.PathLike[str],
    *,
    class_map: dict[str, str] | None = None,
    check_images: bool = False,
) -> DatasetScan:
    """Pick the right reader for `path`, so users can point the trainer at any known layout.

    In order: a CSV file (C-NMC prelim labels if it has Patient_ID,new_names,labels, else a
    path,label list); C-NMC training data (training_data/ or fold_N folders); the C-NMC
    prelim folder (labels CSV inside, beside it, or in the parent); an ImageFolder (class_map
    given, or all/hem folders); ALL-IDB2 names (ImNNN_L); a single path,label CSV inside.
    """
    path = Path(path)
    if path.is_file():
        if path.suffix.lower() != ".csv":
            raise ValueError(f"{path} is a file but not a CSV list")
        if {"patient_id", "new_names", "labels"} <= _csv_header(path):
            folder = path.parent / CNMC_PRELIM_FOLDER
            return read_cnmc_prelim(
                folder if folder.is_dir() else path.parent, path, check_images=check_images
            )
        return read_csv_list(path, check_images=check_images)
    if not path.is_dir():
        raise ValueError(f"{path}: no such file or folder")
    subdirs = _subdirs(path)
    if (path / "training_data").is_dir() or any(_FOLD.match(d.name) for d in subdirs):
        return read_cnmc(path, check_images=check_images)
    if (path / CNMC_PRELIM_FOLDER).is_dir() and (path / CNMC_PRELIM_LABELS).is_file():
        return read_cnmc_prelim(
            path / CNMC_PRELIM_FOLDER, path / CNMC_PRELIM_LABELS, check_images=check_images
        )
    prelim_csv = _prelim_csv_in(path)
    if path.name == CNMC_PRELIM_FOLDER and prelim_csv is not None:
        return read_cnmc_prelim(path, prelim_csv, check_images=check_images)
    if class_map is not None or _class_folders(path, _DEFAULT_CLASSES):
        return read_imagefolder(path, class_map=class_map, check_images=check_images)
    probe: list[tuple[Path, str]] = []
    images = _images_under(path, probe)
    if images and any(_ALL_IDB2.match(p.name) for p in images):
        return read_all_idb2(path, check_images=check_images)
    lists = [p for p in sorted(path.glob("*.csv")) if {"path", "label"} <= _csv_header(p)]
    if len(lists) == 1:
        return read_csv_list(lists[0], check_images=check_images)
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
        if cells and s["subjects"] == cells:
            warnings.append(
                "Every cell is its own subject (no patient folders or C-NMC names): cells of "
                "one patient may land in both training and test."
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
) -> DatasetPreview:
    """Read a data set as training would; an unknown layout is an outcome, not a crash.

    First the fast pass (names and folders), handed to `listed` at once so a preview can
    appear; then every image is decoded (`progress(done, total)` along the way), so files that
    would fail in training are listed before it starts and the scan that is trained on holds
    only readable cells. A `cancel` token stops the decoding early: the fast pass comes back,
    with `checked` False.
    """
    path = Path(path)
    try:
        scan = read_dataset(path)
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
    checked = DatasetScan(kept, list(scan.unreadable) + bad, scan.source)
    return DatasetPreview(path, scan=checked, subjects=subject_rows(kept), checked=True)
