"""The lab's own training data: cells a person reviewed, collected into one managed folder.

Why: the model improves only on cells whose label a person vouched for. Every review session
and every reviewed report already holds such cells; this module copies each one, exactly as
the model saw it (the crop for a smear-field cell), into a folder the trainer reads as is:

    <folder>/cells/<sha256>.png   one PNG per cell, named by the SHA-256 of its pixels
    <folder>/dataset.csv          the current label of each cell (`path,label,subject,...`,
                                  paths relative to the folder: `training.datasets.read_csv_list`)
    <folder>/history.csv          every label version of every cell, oldest first (the record;
                                  dataset.csv is rebuilt from it on every add)
    <folder>/dataset.lock         held (OS lock) while a process adds cells

Rules, each for a reason:
- Only reviewed cells go in (a person set or confirmed the label): an unreviewed model call
  would teach the model its own mistakes. UNCLASSIFIABLE cells have no class to learn.
- A cell is identified by the SHA-256 of its pixels (`pixel_sha256`), not by its path: the
  same cell reached through two sessions, a copied folder or a report is one cell, never two
  (a duplicate would leak between the training and test parts).
- A new review that changes the label of a cell already in the set makes a new label version;
  the history keeps every version. A review older than the set's current one never
  overwrites it (re-adding an old report must not undo a later correction); review times
  have one-second resolution, and at an equal time the review being added wins.
- A cell whose image is gone or is no longer the analysed file (SHA-256 differs:
  `IMAGE_CHANGED`) is skipped with the reason; the others are added.
- Shared folders: an exclusive OS lock (`atomic.try_lock`, works on Windows and Linux and is
  released when the process dies) serialises writers; both CSVs are replaced atomically, so a
  reader never sees half a file. A missing or read-only folder raises `DatasetError` before
  anything is written.

Qt-free, like the rest of `leukgui.core`.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import hashlib
import io
import re
import tempfile
import time
import warnings
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from leukgui.core.atomic import ReportWriteError, atomic_write, try_lock, unlock
from leukgui.core.exports import csv_safe, png_bytes, reread_cell
from leukgui.core.imaging import ImageError
from leukgui.core.paths import user_dir
from leukgui.core.results import ALL, HEM, UNCLASSIFIABLE, CellResult, FileStamp, RunResult
from leukgui.core.text import path_from_exact

if TYPE_CHECKING:
    from leukgui.core.review import ReviewState

__all__ = [
    "CELLS_DIR",
    "COLUMNS",
    "DATASET_CSV",
    "HISTORY_CSV",
    "LOCK_FILE",
    "AddSummary",
    "DatasetBusyError",
    "DatasetEntry",
    "DatasetError",
    "LabDataset",
    "ReviewedCell",
    "SampleCandidates",
    "Skipped",
    "candidates_by_sample",
    "chosen_folder",
    "dataset_csv_in",
    "default_folder",
    "remembered_folder",
    "pixel_sha256",
    "read_report",
    "read_session",
    "read_source",
    "reviewed_cells",
    "source_images",
    "summary_lines",
]

CELLS_DIR = "cells"
DATASET_CSV = "dataset.csv"
HISTORY_CSV = "history.csv"
LOCK_FILE = "dataset.lock"
DEFAULT_LOCK_TIMEOUT_S = 30.0
_LOCK_POLL_S = 0.05
TRAINABLE = (ALL, HEM)
NOT_REVIEWED = "not reviewed (only the model's call)"
UNCLASSIFIABLE_REASON = "reviewed as UNCLASSIFIABLE"


class DatasetError(Exception):
    """The data set cannot be used as asked; str() is a message fit to show the user."""


class DatasetBusyError(DatasetError):
    """Another process held the data set's lock for longer than the timeout."""


# ------------------------------------------------------------------------------ records


@dataclass(frozen=True)
class DatasetEntry:
    """One row of dataset.csv / history.csv: one label version of one cell.

    `path` is relative to the data set folder (`cells/<sha256>.png`), as the trainer reads it.
    `image` is the analysed file the cell came from and `image_sha256` that file's SHA-256 at
    analysis; `cell_index` is the cell's number in a smear field (empty for a single-cell
    image). `model_*` describe the original call that the reviewer judged.
    """

    path: str
    label: str
    subject: str
    sample: str
    reviewer: str
    reviewed_at: str
    model_name: str
    model_version: str
    model_sha256: str
    model_p_all: str
    model_label: str
    source: str
    image: str
    image_sha256: str
    cell_index: str
    sha256: str
    label_version: int
    added_at: str

    def to_row(self) -> dict[str, str]:
        """The CSV row; free text is made formula-safe (the CSV may be opened in Excel)."""
        row = {k: str(v) for k, v in asdict(self).items()}
        for key in ("subject", "sample", "reviewer", "model_name", "model_version", "source"):
            row[key] = csv_safe(row[key])
        return row

    @classmethod
    def from_row(cls, row: Mapping[str, str | None], where: str) -> DatasetEntry:
        """Rebuild an entry from a CSV row, refusing rows that could not be ours."""
        values: dict[str, Any] = {}
        for f in fields(cls):
            value = row.get(f.name)
            if value is None:
                raise DatasetError(f"{where}: column {f.name!r} is missing")
            values[f.name] = value
        try:
            values["label_version"] = int(values["label_version"])
        except ValueError:
            raise DatasetError(f"{where}: label_version {values['label_version']!r}") from None
        if values["label"] not in TRAINABLE or not re.fullmatch(r"[0-9a-f]{64}", values["sha256"]):
            raise DatasetError(f"{where}: not a lab data set row (label or sha256)")
        return cls(**values)

    @property
    def p_all(self) -> float | None:
        """The model's P(ALL) as a number (None when the source did not give one)."""
        try:
            return float(self.model_p_all)
        except ValueError:
            return None


COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(DatasetEntry))


@dataclass(frozen=True)
class ReviewedCell:
    """A cell from a source, with its review (or None when nobody reviewed it).

    Unreviewed and UNCLASSIFIABLE cells are passed in too, so the summary can say why they
    were left out instead of silently dropping them.
    """

    cell: CellResult
    label: str | None
    reviewer: str
    reviewed_at: str
    model_name: str
    model_version: str
    model_sha256: str
    source: str


@dataclass(frozen=True)
class Skipped:
    """A cell (or a whole row of a source) that was not added, and why in plain words.

    `problem` is False for cells left out by rule (not reviewed, UNCLASSIFIABLE), which need
    no action, and True for cells a person may want to fix (image gone or changed, ...).
    """

    image: str
    sample: str
    reason: str
    problem: bool = True


@dataclass
class AddSummary:
    """What one `add_reviewed` did: every candidate lands in exactly one list."""

    added: list[DatasetEntry] = field(default_factory=list)
    already_present: list[DatasetEntry] = field(default_factory=list)
    relabelled: list[tuple[DatasetEntry, DatasetEntry]] = field(default_factory=list)  # old, new
    skipped: list[Skipped] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.added or self.relabelled)

    def describe(self) -> str:
        """'3 added, 1 already present, 1 relabelled, 2 skipped'"""
        return (
            f"{len(self.added)} added, {len(self.already_present)} already present, "
            f"{len(self.relabelled)} relabelled, {len(self.skipped)} skipped"
        )


def pixel_sha256(rgb: np.ndarray) -> str:
    """SHA-256 of a cell image's pixels (shape header + RGB uint8 bytes).

    Pixels, not file bytes: the same cell saved by another encoder, or cut again from its
    field, is recognised as the same cell.
    """
    arr = np.ascontiguousarray(rgb, dtype=np.uint8)
    header = f"leukgui-cell-rgb:{'x'.join(str(n) for n in arr.shape)}\n".encode("ascii")
    return hashlib.sha256(header + arr.tobytes()).hexdigest()


def _now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _iso_utc(text: str) -> str:
    """A review time as ISO 8601 UTC (reports print 'YYYY-MM-DD HH:MM:SS' in UTC); unchanged
    when it does not parse."""
    try:
        moment = datetime.fromisoformat(str(text).strip())
    except ValueError:
        return str(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc).isoformat(timespec="seconds")


def _key_text(cell: CellResult) -> str:
    return cell.key


def default_folder() -> Path:
    """`<user data folder>/lab-dataset`: the data set's place when nobody chose another."""
    return user_dir() / "lab-dataset"


def chosen_folder(remembered: str = "") -> Path:
    """The data set in use: the folder a person chose (the `lab_dataset_folder` preference,
    e.g. on a shared drive), else `default_folder()`. The window and the command line both
    ask here, so they add to one data set."""
    return Path(remembered) if remembered else default_folder()


def remembered_folder(folder: Path) -> str:
    """What the preference keeps for `folder` ("" for the default, which may move)."""
    return "" if Path(folder) == default_folder() else str(folder)


def dataset_csv_in(folder: Path | str) -> Path | None:
    """`folder/dataset.csv` when `folder` holds a lab data set (its current labels; the
    history beside it is the record, not training data), else None."""
    folder = Path(folder)
    if (folder / DATASET_CSV).is_file() and (folder / HISTORY_CSV).is_file():
        return folder / DATASET_CSV
    return None


# ------------------------------------------------------------------------------ sources


def read_session(folder: Path | str) -> tuple[list[ReviewedCell], list[Skipped]]:
    """Every cell of a review session folder with its current review (journal replayed).

    Read only: the session is not claimed and its journal is never written, so a session
    open in a window can be read too. Damaged journal lines are skipped by the session code;
    they are listed here as Skipped rows so the user learns of them.
    """
    from leukgui.core.sessions import SessionError, SessionStore

    folder = Path(folder)
    try:
        store = SessionStore(folder)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            run, review = store.load()
        review.on_change = None
    except SessionError as exc:
        raise DatasetError(f"cannot read the review session {folder}: {exc}") from exc
    skipped = [Skipped(str(folder), "", f"session: {w.message}") for w in caught]
    return reviewed_cells(run, review, str(folder.absolute())), skipped


def reviewed_cells(run: RunResult, review: ReviewState, source: str) -> list[ReviewedCell]:
    """Every cell of `run` with its current review in `review` (None when not reviewed).

    One place builds candidates from a run and its review, whether they come from a session
    on disk (`read_session`) or from the analysis shown in the window. Only reads `review`.
    """
    info = run.info
    cells = []
    for cell in run.cells:
        done = review.review_of(cell)
        cells.append(
            ReviewedCell(
                cell=cell,
                label=done.label if done is not None else None,
                reviewer=done.reviewer if done is not None else "",
                reviewed_at=done.time if done is not None else "",
                model_name=info.model_name,
                model_version=info.model_version,
                model_sha256=info.model_sha256,
                source=source,
            )
        )
    return cells


@dataclass(frozen=True)
class SampleCandidates:
    """One sample's candidates, for a person choosing subjects before an add.

    `subjects` are the subjects the analysis knew for its cells (from C-NMC file names),
    so a sample holding several patients is never silently merged into one subject.
    """

    sample: str
    addable: int  # reviewed ALL or HEM
    not_reviewed: int
    unclassifiable: int
    subjects: tuple[str, ...]


def candidates_by_sample(cells: Iterable[ReviewedCell]) -> list[SampleCandidates]:
    """What `add_reviewed` would add or leave out by rule, per sample in first-seen order
    (images are not read here: a cell whose image is gone is found out by the add)."""
    counts: dict[str, list[int]] = {}
    subjects: dict[str, dict[str, None]] = {}
    for item in cells:
        sample = item.cell.sample
        row = counts.setdefault(sample, [0, 0, 0])
        known = subjects.setdefault(sample, {})
        if item.label is None:
            row[1] += 1
        elif item.label == UNCLASSIFIABLE:
            row[2] += 1
        elif item.label in TRAINABLE:
            row[0] += 1
        if item.cell.subject:
            known[item.cell.subject] = None
    return [
        SampleCandidates(sample, *row, subjects=tuple(subjects[sample]))
        for sample, row in counts.items()
    ]


def summary_lines(summary: AddSummary, present: bool = True) -> list[str]:
    """An add's outcome cell by cell, for a person to read: what went in, (with `present`)
    what was there already, what was relabelled, how many were left out by rule, and each
    problem with its reason. The window's dialog and `leukgui dataset add` both print it."""
    lines = [f"added      {e.label:<3} {e.subject}  {e.image}" for e in summary.added]
    if present:
        lines += [
            f"present    {e.label:<3} {e.subject}  {e.image}" for e in summary.already_present
        ]
    lines += [
        f"relabelled {old.label} -> {new.label} (version {new.label_version}, "
        f"{new.reviewer})  {new.image}"
        for old, new in summary.relabelled
    ]
    by_rule: dict[str, int] = {}
    for item in summary.skipped:
        if not item.problem:
            by_rule[item.reason] = by_rule.get(item.reason, 0) + 1
    lines += [
        f"left out   {n} cell{'s' * (n != 1)}: {reason}" for reason, n in sorted(by_rule.items())
    ]
    lines += [f"skipped    {s.image}: {s.reason}" for s in summary.skipped if s.problem]
    return lines


_FIELD_NAME = re.compile(r"^(.*) #(\d+) at \((\d+),(\d+)\)-\((\d+),(\d+)\)$", re.S)


def read_report(path: Path | str) -> tuple[list[ReviewedCell], list[Skipped]]:
    """The reviewed cells of an Excel report written by `report.write_excel` with a review.

    A report carries, per cell, the reviewed label, reviewer and time, the model's label and
    P(ALL), the full path and the file's SHA-256 (Cells sheet), and the model's name and hash
    (Provenance sheet). That identifies a single-cell image exactly: its file is re-read and
    must still have that SHA-256. A cell found in a smear field cannot be rebuilt from a
    report (the report has its box but not its mask, and the crop depends on the mask): such
    cells are listed as skipped; add them from the review session instead.
    """
    from openpyxl import load_workbook

    path = Path(path)
    try:
        wb = load_workbook(path, read_only=True, data_only=True)
    except Exception as exc:  # openpyxl raises many kinds for a file that is no workbook
        raise DatasetError(f"cannot read the report {path}: {exc}") from exc
    try:
        if "Cells" not in wb.sheetnames:
            raise DatasetError(f"{path} is not a LeukGUI report (no Cells sheet)")
        provenance: dict[str, str] = {}
        if "Provenance" in wb.sheetnames:
            for row in wb["Provenance"].iter_rows(values_only=True):
                if row and row[0] is not None and len(row) > 1:
                    provenance[str(row[0])] = "" if row[1] is None else str(row[1])
        rows = list(wb["Cells"].iter_rows(values_only=True))
    finally:
        wb.close()
    head = next(
        (i for i, r in enumerate(rows) if r and r[0] == "#" and "Full path" in r),
        None,
    )
    if head is None:
        raise DatasetError(f"{path} is not a LeukGUI report (no table on the Cells sheet)")
    header = [str(h) if h is not None else "" for h in rows[head]]
    if "Reviewed label" not in header:
        raise DatasetError(
            f"{path} carries no review (no 'Reviewed label' column): export the report after "
            "reviewing, or add the review session instead"
        )
    if "SHA-256 of the file" not in header:
        raise DatasetError(
            f"{path} has no SHA-256 of each file, so its images cannot be checked: add the "
            "review session instead"
        )
    col = {name: header.index(name) for name in header if name}
    source = str(path.absolute())
    cells: list[ReviewedCell] = []
    skipped: list[Skipped] = []
    for number, row in enumerate(rows[head + 1 :], head + 2):
        values = list(row) + [None] * (len(header) - len(row))

        def get(name: str, values: list[Any] = values) -> str:
            value = values[col[name]]
            return "" if value is None else str(value)

        if not get("Full path"):
            continue
        shown, _, exact = get("Full path").partition("\n(exact path: ")
        image = path_from_exact(exact[:-1]) if exact.endswith(")") else shown
        sample = get("Sample")
        if _FIELD_NAME.match(get("File")):
            skipped.append(
                Skipped(
                    image,
                    sample,
                    "a cell found in a smear field: the report lacks its mask, so its crop "
                    "cannot be rebuilt (add the review session instead)",
                )
            )
            continue
        try:
            p_all = float(values[col["P(ALL)"]])
        except (TypeError, ValueError):
            p_all = float("nan")
        sha = get("SHA-256 of the file").strip()
        cell = CellResult(
            path=Path(image),
            sample=sample,
            p_all=p_all,
            label=get("Model label"),
            heatmap=np.zeros((1, 1), np.float32),
            width=0,
            height=0,
            subject=get("Subject") or None,
            # Only the hash is known: reread_cell compares it with the file's bytes.
            stamp=FileStamp(0, 0, sha) if sha else None,
        )
        if not sha:
            skipped.append(Skipped(image, sample, f"report row {number} has no SHA-256"))
            continue
        label = get("Reviewed label") or None
        cells.append(
            ReviewedCell(
                cell=cell,
                label=label,
                reviewer=get("Reviewer"),
                reviewed_at=_iso_utc(get("Reviewed at (UTC)")) if label else "",
                model_name=provenance.get("Model name", ""),
                model_version=provenance.get("Model version", ""),
                model_sha256=provenance.get("Model SHA-256", ""),
                source=source,
            )
        )
    return cells, skipped


def read_source(path: Path | str) -> tuple[list[ReviewedCell], list[Skipped]]:
    """A review session folder or an Excel report (.xlsx), whichever `path` is."""
    path = Path(path)
    if path.is_dir():
        return read_session(path)
    if path.suffix.lower() == ".xlsx" and path.is_file():
        return read_report(path)
    if not path.exists():
        raise DatasetError(f"{path} does not exist")
    raise DatasetError(f"{path} is neither a review session folder nor an Excel report (.xlsx)")


# ------------------------------------------------------------------------------ the data set


@dataclass
class _Prepared:
    """A candidate after its image was re-read and hashed (done before taking the lock),
    with its PNG staged in a temporary folder unless the data set already had the cell."""

    item: ReviewedCell
    sha: str
    staged: Path | None


class LabDataset:
    """A lab data set folder (see the module notes for the layout and the rules).

    `LabDataset(folder)` opens an existing one; `LabDataset.create(folder)` makes a new one.
    Neither writes anything until `add_reviewed`.
    """

    def __init__(self, folder: Path | str) -> None:
        self.folder = Path(folder)
        self.csv_path = self.folder / DATASET_CSV
        self.history_path = self.folder / HISTORY_CSV
        self.cells_dir = self.folder / CELLS_DIR
        self.lock_path = self.folder / LOCK_FILE

    @classmethod
    def create(cls, folder: Path | str) -> LabDataset:
        """Make an empty data set in `folder` (its parent must exist), or open the one there.

        The parent must exist so that a disconnected drive or share gives an error instead
        of a new, empty data set somewhere unexpected. A folder that holds other files and
        no data set is refused: the data set is never mixed into someone's documents.
        """
        folder = Path(folder)
        if not folder.parent.is_dir():
            raise DatasetError(
                f"cannot create the lab data set {folder}: {folder.parent} does not exist "
                "(is the drive or network share connected?)"
            )
        if folder.is_dir():
            dataset = cls(folder)
            # Its own lock file and cells/ folder are left by a first add that another
            # process is making now, or that failed: they are not "other files".
            own = {LOCK_FILE, CELLS_DIR}
            if not dataset.exists() and any(p.name not in own for p in folder.iterdir()):
                raise DatasetError(
                    f"{folder} holds other files and no lab data set: choose an empty folder"
                )
            return dataset
        try:
            folder.mkdir()
        except OSError as exc:
            raise DatasetError(f"cannot create the lab data set {folder}: {_why(exc)}") from exc
        return cls(folder)

    def exists(self) -> bool:
        """Whether the folder holds a data set (or an empty one just created)."""
        return self.history_path.is_file() or self.csv_path.is_file()

    # ------------------------------------------------------------------ reading

    def history(self) -> list[DatasetEntry]:
        """Every label version, oldest first (read without the lock: the files are replaced
        atomically, so a read never sees half a file)."""
        self._check_folder()
        if self.history_path.is_file():
            return _read_entries(self.history_path)
        if self.csv_path.is_file():  # history lost: the current labels are the history
            return _read_entries(self.csv_path)
        return []

    def entries(self) -> list[DatasetEntry]:
        """The current label version of each cell, in the order cells were first added."""
        return _current(self.history())

    # ------------------------------------------------------------------ adding

    def add_reviewed(
        self,
        cells: Iterable[ReviewedCell],
        subjects: Mapping[str, str] | None = None,
        *,
        timeout_s: float = DEFAULT_LOCK_TIMEOUT_S,
    ) -> AddSummary:
        """Add every reviewed ALL/HEM cell of `cells`; list the others in `skipped`.

        Subject: `subjects[sample]` when given, else the subject the analysis knew for the
        cell (e.g. from a C-NMC file name), else the sample. Images are re-read and hashed
        before the lock is taken, so a slow source never blocks other writers for long.
        Raises `DatasetError` (nothing written) when the folder is missing or read-only,
        `DatasetBusyError` when another process holds the lock past `timeout_s`.

        Memory stays flat however many cells come: each new cell's PNG is staged in a
        temporary folder outside the data set (which stays untouched until the lock is held)
        and only copied in under the lock; cells the set already has are hashed, not encoded.
        """
        self._check_folder()
        with tempfile.TemporaryDirectory(prefix="leukgui-lab-") as staging:
            return self._add(cells, dict(subjects or {}), timeout_s, Path(staging))

    def _add(
        self,
        cells: Iterable[ReviewedCell],
        subjects: Mapping[str, str],
        timeout_s: float,
        staging: Path,
    ) -> AddSummary:
        summary = AddSummary()
        prepared: list[_Prepared] = []
        known = {e.sha256 for e in self.history()}  # a hint only; decided again under the lock
        for item in cells:
            cell = item.cell
            if item.label is None:
                summary.skipped.append(_skip(item, NOT_REVIEWED, problem=False))
                continue
            if item.label == UNCLASSIFIABLE:
                summary.skipped.append(_skip(item, UNCLASSIFIABLE_REASON, problem=False))
                continue
            if item.label not in TRAINABLE:
                summary.skipped.append(_skip(item, f"unknown reviewed label {item.label!r}"))
                continue
            try:
                rgb = reread_cell(cell)
            except ImageError as exc:
                summary.skipped.append(_skip(item, f"image not added: {exc}"))
                continue
            except (OSError, ValueError) as exc:
                summary.skipped.append(_skip(item, f"image not added: {_why(exc)}"))
                continue
            sha = pixel_sha256(rgb)
            staged = staging / f"{sha}.png"
            if sha not in known and not staged.exists():
                try:
                    staged.write_bytes(png_bytes(rgb))
                except OSError as exc:
                    raise DatasetError(
                        f"cannot stage cell images in {staging}: {_why(exc)}; nothing was changed"
                    ) from exc
            prepared.append(_Prepared(item, sha, staged if staged.exists() else None))
            del rgb
        with self._locked(timeout_s):
            history = self.history()
            current = {e.sha256: e for e in _current(history)}
            new_rows: list[DatasetEntry] = []
            pictures: dict[str, _Prepared] = {}
            now = _now_iso()
            for p in prepared:
                entry = self._entry(p, subjects, now)
                old = current.get(p.sha)
                if old is None:
                    summary.added.append(entry)
                    pictures[p.sha] = p
                elif old.label == entry.label:
                    summary.already_present.append(old)
                    continue
                elif _iso_utc(entry.reviewed_at) < _iso_utc(old.reviewed_at):
                    summary.skipped.append(
                        _skip(
                            p.item,
                            f"the data set has a newer review of this cell ({old.label} by "
                            f"{old.reviewer} at {old.reviewed_at}, version {old.label_version})",
                        )
                    )
                    continue
                else:
                    # The cell keeps its first subject and file name; only the label moves on.
                    entry = replace(
                        entry,
                        subject=old.subject,
                        label_version=old.label_version + 1,
                    )
                    summary.relabelled.append((old, entry))
                current[p.sha] = entry
                new_rows.append(entry)
            if new_rows:
                self._write(history, new_rows, pictures)
        return summary

    def _entry(self, p: _Prepared, subjects: Mapping[str, str], now: str) -> DatasetEntry:
        item, cell = p.item, p.item.cell
        subject = subjects.get(cell.sample) or cell.subject or cell.sample or "unknown"
        p_all = float(cell.p_all)
        return DatasetEntry(
            path=f"{CELLS_DIR}/{p.sha}.png",
            label=str(item.label),
            subject=subject,
            sample=cell.sample,
            reviewer=item.reviewer,
            reviewed_at=_iso_utc(item.reviewed_at),
            model_name=item.model_name,
            model_version=item.model_version,
            model_sha256=item.model_sha256,
            model_p_all=f"{p_all:.6f}" if np.isfinite(p_all) else "",
            model_label=cell.label,
            source=item.source,
            image=_key_text(cell),
            image_sha256=cell.sha256 or "",
            cell_index="" if cell.cell_index is None else str(cell.cell_index),
            sha256=p.sha,
            label_version=1,
            added_at=now,
        )

    def _write(
        self,
        history: list[DatasetEntry],
        new_rows: list[DatasetEntry],
        pictures: dict[str, _Prepared],
    ) -> None:
        """Pictures first, then history.csv, then dataset.csv: a crash part-way leaves at
        worst unreferenced pictures, or a dataset.csv the next add rebuilds from history."""
        try:
            self.cells_dir.mkdir(exist_ok=True)
            for sha, p in pictures.items():
                target = self.cells_dir / f"{sha}.png"
                if target.is_file():
                    continue
                if p.staged is not None:
                    data = p.staged.read_bytes()
                else:  # the set had the cell when the images were read, then lost it
                    rgb = reread_cell(p.item.cell)
                    if pixel_sha256(rgb) != sha:
                        raise DatasetError(f"{p.item.cell.path} changed while being added")
                    data = png_bytes(rgb)
                atomic_write(target, lambda tmp, data=data: tmp.write_bytes(data))
            everything = history + new_rows
            _write_entries(self.history_path, everything)
            _write_entries(self.csv_path, _current(everything))
        except (OSError, ReportWriteError, ImageError) as exc:
            raise DatasetError(f"cannot write the lab data set {self.folder}: {exc}") from exc

    # ------------------------------------------------------------------ safety

    def _check_folder(self) -> None:
        if not self.folder.is_dir():
            raise DatasetError(
                f"the lab data set folder {self.folder} is missing (is the drive or network "
                "share connected?); nothing was changed"
            )

    @contextlib.contextmanager
    def _locked(self, timeout_s: float) -> Iterator[None]:
        """Hold the data set's OS lock (waiting up to `timeout_s`), or raise DatasetError."""
        self._check_folder()
        deadline = time.monotonic() + max(0.0, timeout_s)
        while True:
            try:
                fd = try_lock(self.lock_path)
            except OSError as exc:
                raise DatasetError(
                    f"cannot write to the lab data set {self.folder}: {_why(exc)}; "
                    "nothing was changed"
                ) from exc
            if fd is not None:
                break
            if time.monotonic() >= deadline:
                raise DatasetBusyError(
                    f"the lab data set {self.folder} is busy: another LeukGUI is adding cells "
                    f"to it (waited {timeout_s:g} s). Try again in a moment; nothing was changed"
                )
            time.sleep(_LOCK_POLL_S)
        try:
            yield
        finally:
            unlock(fd)


def _skip(item: ReviewedCell, reason: str, problem: bool = True) -> Skipped:
    return Skipped(_key_text(item.cell), item.cell.sample, reason, problem)


def _why(exc: BaseException) -> str:
    """An OS error in words a user can act on."""
    if isinstance(exc, OSError):
        if exc.errno == errno.EROFS:
            return "the folder is read-only"
        if isinstance(exc, PermissionError) or exc.errno in (errno.EACCES, errno.EPERM):
            return "the folder is read-only or you may not write there"
        if isinstance(exc, FileNotFoundError):
            return "the folder does not exist"
        if exc.strerror:
            return exc.strerror
    return str(exc) or type(exc).__name__


def _current(history: list[DatasetEntry]) -> list[DatasetEntry]:
    """The newest version of each cell, in the order cells first appeared."""
    latest: dict[str, DatasetEntry] = {}
    for entry in history:
        old = latest.get(entry.sha256)
        if old is None or entry.label_version >= old.label_version:
            latest[entry.sha256] = entry
    return list(latest.values())


def source_images(paths: Iterable[str | Path]) -> dict[str, str]:
    """For cell files of a lab data set (`<set>/cells/<sha>.png`), the image each came from
    (its `image` entry: the analysed file, with "#n" for the n-th cell of a field), keyed by the
    path as given. Other paths, and sets that cannot be read, are left out: a person reads
    "UID_P3_1_2_all.bmp", not a content hash, when the models disagree about it."""
    wanted: dict[Path, list[str]] = {}
    for given in paths:
        path = Path(given)
        if path.parent.name == CELLS_DIR and (path.parent.parent / DATASET_CSV).is_file():
            wanted.setdefault(path.parent.parent, []).append(str(given))
    out: dict[str, str] = {}
    for folder, names in wanted.items():
        try:
            entries = _read_entries(folder / DATASET_CSV)
        except DatasetError:
            continue
        by_file = {Path(e.path).name: e.image for e in entries if e.image}
        for name in names:
            image = by_file.get(Path(name).name)
            if image:
                out[name] = image
    return out


def _read_entries(path: Path) -> list[DatasetEntry]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            return [
                DatasetEntry.from_row(row, f"{path}, row {number}")
                for number, row in enumerate(reader, 2)
            ]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DatasetError(f"cannot read {path}: {exc}") from exc


def _write_entries(path: Path, entries: list[DatasetEntry]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\r\n")
    writer.writeheader()
    for entry in entries:
        writer.writerow(entry.to_row())
    data = buffer.getvalue().encode("utf-8-sig")  # the BOM: Excel then reads UTF-8
    atomic_write(path, lambda tmp: tmp.write_bytes(data))
