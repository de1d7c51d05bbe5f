"""Human review of the model's per-cell calls: labels, audit trail, sign-off and autosave.

A lab technician confirms or corrects each cell (ALL, HEM or UNCLASSIFIABLE); every change is
an `AuditEntry` saying who changed what, when, from what to what. A signed-off sample is
locked until it is reopened. Qt-free, so the GUI stays a thin layer over it and tests need
no display.

Crash safety is write-ahead: `ReviewState` hands each new entry to `on_change` (wired to
`SessionStore.append`, which fsyncs one JSON line per entry) *before* it changes its own
state. If journaling fails, the state is unchanged and the error reaches the GUI; if the
process is killed, every change the user saw is already on disk and replays on open.

Session folder (see `SessionStore`):

    run.json            format/version, RunInfo, every outcome (heatmaps by reference)
    heatmaps-<n>.npz    the Grad-CAM heatmaps, one float32 stack per heatmap shape
    review.jsonl        append-only journal, one AuditEntry per line

`run.json` names the heatmap file it belongs to, and a new snapshot writes a new
`heatmaps-<n+1>.npz` before atomically replacing `run.json`, so a crash at any moment leaves
a `run.json` that points at a complete heatmap file.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import sys
import warnings
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from leukgui.core.atomic import ReportWriteError, atomic_write
from leukgui.core.metrics import thresholded_call
from leukgui.core.results import (
    ALL,
    HEM,
    UNCERTAIN,
    UNCLASSIFIABLE,
    CellResult,
    FileError,
    Outcome,
    RunInfo,
    RunResult,
)

__all__ = [
    "ACTIONS",
    "REVIEW_LABELS",
    "SESSION_VERSION",
    "UNCLASSIFIABLE",
    "AuditEntry",
    "CellReview",
    "ReviewError",
    "ReviewState",
    "SampleLockedError",
    "SessionError",
    "SessionInUseError",
    "SessionRecoveryWarning",
    "SessionStore",
    "SignOff",
    "cell_key",
]

REVIEW_LABELS = (ALL, HEM, UNCLASSIFIABLE)

LABEL = "label"
CONFIRM = "confirm"
UNDO = "undo"
SIGN_OFF = "sign-off"
REOPEN = "reopen"
ACTIONS = (LABEL, CONFIRM, UNDO, SIGN_OFF, REOPEN)
_CELL_ACTIONS = (LABEL, CONFIRM, UNDO)


class ReviewError(ValueError):
    """A review action that is not allowed; str() is a message fit to show the user."""


class SampleLockedError(ReviewError):
    """The cell belongs to a signed-off sample: reopen the sample before changing it."""


def cell_key(cell: CellResult | Path | str) -> str:
    """The key a review is stored under: the cell's absolute path as a string (plus `#n` for
    the n-th cell found in a smear field; see `CellResult.key`).

    Absolute (not resolved) to match the "Full path" the reports print, so a reviewer can find
    a journal line's cell in the report by plain text search.
    """
    if isinstance(cell, CellResult):
        return cell.key
    return str(Path(cell).absolute())


def _utc_now() -> datetime:
    return datetime.now(timezone.utc)


def _iso_utc(moment: datetime) -> str:
    """ISO 8601 in UTC, seconds precision (a naive datetime is taken as UTC)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc).isoformat(timespec="seconds")


def _check_reviewer(reviewer: str) -> str:
    name = reviewer.strip() if isinstance(reviewer, str) else ""
    if not name:
        raise ReviewError("enter the reviewer's name before reviewing (it goes in the audit trail)")
    return name


def _check_label(label: str) -> str:
    if label not in REVIEW_LABELS:
        raise ReviewError(f"review label must be one of {', '.join(REVIEW_LABELS)}; got {label!r}")
    return label


@dataclass(frozen=True)
class AuditEntry:
    """One change to the review, as shown in the report's Audit trail and kept in the journal.

    Cell actions ("label", "confirm", "undo") name the cell by absolute `path`; sample actions
    ("sign-off", "reopen") have `path` and `model_label` empty and `before`/`after` None.
    `after` is None when a review is undone (the cell falls back to the model's label).
    """

    path: str
    sample: str
    model_label: str
    before: str | None
    after: str | None
    reviewer: str
    time: str
    action: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> AuditEntry:
        """Rebuild an entry from a journal line, refusing anything that could not be ours."""
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        values: dict[str, Any] = {}
        for f in fields(cls):
            if f.name not in data:
                raise ValueError(f"missing {f.name!r}")
            values[f.name] = data[f.name]
        for name in ("path", "sample", "model_label", "reviewer", "time", "action"):
            if not isinstance(values[name], str):
                raise ValueError(f"{name!r} must be a string")
        if values["action"] not in ACTIONS:
            raise ValueError(f"unknown action {values['action']!r}")
        for name in ("before", "after"):
            if values[name] is not None and values[name] not in REVIEW_LABELS:
                raise ValueError(f"{name!r} has unknown label {values[name]!r}")
        return cls(**values)


@dataclass(frozen=True)
class CellReview:
    """The current reviewed label of one cell, who set it and when (ISO 8601 UTC)."""

    label: str
    reviewer: str
    time: str
    action: str


@dataclass(frozen=True)
class SignOff:
    """Who signed a sample off and when (ISO 8601 UTC)."""

    reviewer: str
    time: str


class ReviewState:
    """Reviewed labels (keyed by `cell_key`), per-sample sign-offs and the audit trail.

    `threshold` is the run's decision threshold (`RunInfo.threshold`); `confirm` needs it to
    turn an UNCERTAIN call into the suggestion ALL/HEM, exactly as the metrics do. Use
    `ReviewState.for_run(run)` to take it from the run. `on_change(entry)` is called with each
    new entry before the state changes (write-ahead; see the module docstring). `clock`
    returns the time to record (tests pass a fixed one).
    """

    def __init__(
        self,
        *,
        threshold: float | None = None,
        on_change: Callable[[AuditEntry], None] | None = None,
        clock: Callable[[], datetime] = _utc_now,
    ) -> None:
        if threshold is not None and not (0.0 <= threshold <= 1.0):
            raise ValueError(f"threshold must be within 0..1, got {threshold}")
        self.threshold = threshold
        self.on_change = on_change
        self._clock = clock
        self._reviews: dict[str, CellReview] = {}
        self._signoffs: dict[str, SignOff] = {}
        self._audit: list[AuditEntry] = []

    @classmethod
    def for_run(
        cls, run: RunResult, *, on_change: Callable[[AuditEntry], None] | None = None
    ) -> ReviewState:
        """A fresh state using the run's decision threshold for confirmations."""
        return cls(threshold=run.info.threshold, on_change=on_change)

    # ------------------------------------------------------------------ queries

    @property
    def audit(self) -> list[AuditEntry]:
        """Every change so far, oldest first (a copy)."""
        return list(self._audit)

    @property
    def reviews(self) -> dict[str, CellReview]:
        """Current reviewed labels by `cell_key` (a copy)."""
        return dict(self._reviews)

    @property
    def signoffs(self) -> dict[str, SignOff]:
        """Current sign-offs by sample (a copy)."""
        return dict(self._signoffs)

    def review_of(self, cell: CellResult) -> CellReview | None:
        return self._reviews.get(cell_key(cell))

    def is_reviewed(self, cell: CellResult) -> bool:
        return cell_key(cell) in self._reviews

    def final_label(self, cell: CellResult) -> str:
        """The reviewed label if there is one, else the model's label (may be UNCERTAIN)."""
        review = self._reviews.get(cell_key(cell))
        return review.label if review is not None else cell.label

    def suggestion(self, cell: CellResult) -> str:
        """What Enter confirms: the model's call, with UNCERTAIN resolved by the threshold."""
        if cell.label in (ALL, HEM):
            return cell.label
        if cell.label != UNCERTAIN:
            raise ReviewError(f"unknown model label {cell.label!r} for {cell.path}")
        if self.threshold is None:
            raise ReviewError(
                "cannot confirm an UNCERTAIN cell without the run's decision threshold "
                "(create the review with ReviewState.for_run(run))"
            )
        return thresholded_call(float(cell.p_all), self.threshold)

    def signed_off(self, sample: str) -> SignOff | None:
        return self._signoffs.get(sample)

    def is_locked(self, sample: str) -> bool:
        return sample in self._signoffs

    # ------------------------------------------------------------------ changes

    def set_label(self, cell: CellResult, label: str, reviewer: str) -> AuditEntry | None:
        """Set the reviewed label (ALL, HEM or UNCLASSIFIABLE).

        Returns the recorded entry, or None when the cell already has that label (nothing
        changes, nothing is recorded, the original reviewer stays).
        """
        return self._change(cell, _check_label(label), reviewer, LABEL)

    def confirm(self, cell: CellResult, reviewer: str) -> AuditEntry | None:
        """Accept the model's suggestion (see `suggestion`) as the reviewed label."""
        reviewer = _check_reviewer(reviewer)
        return self._change(cell, self.suggestion(cell), reviewer, CONFIRM)

    def undo(self, cell: CellResult, reviewer: str) -> AuditEntry | None:
        """Clear the cell's review, so it counts as the model's label again.

        The audit trail keeps the history. Returns None when the cell was not reviewed.
        """
        return self._change(cell, None, reviewer, UNDO)

    def sign_off(self, sample: str, reviewer: str) -> AuditEntry:
        """Sign a sample off; its cells are locked until `reopen`."""
        reviewer = _check_reviewer(reviewer)
        current = self._signoffs.get(sample)
        if current is not None:
            raise ReviewError(
                f"sample {sample!r} is already signed off by {current.reviewer} at {current.time}"
            )
        return self._record(AuditEntry("", sample, "", None, None, reviewer, self._now(), SIGN_OFF))

    def reopen(self, sample: str, reviewer: str) -> AuditEntry:
        """Withdraw a sign-off so the sample's cells can be changed again (recorded)."""
        reviewer = _check_reviewer(reviewer)
        if sample not in self._signoffs:
            raise ReviewError(f"sample {sample!r} is not signed off, so there is nothing to reopen")
        return self._record(AuditEntry("", sample, "", None, None, reviewer, self._now(), REOPEN))

    def apply(self, entry: AuditEntry) -> None:
        """Apply a recorded entry without journaling it: how a session is replayed on open.

        The journal is the record of what happened, so entries are applied as written
        (no lock or no-op checks); `on_change` is not called.
        """
        if entry.action in _CELL_ACTIONS:
            if entry.after is None:
                self._reviews.pop(entry.path, None)
            else:
                self._reviews[entry.path] = CellReview(
                    entry.after, entry.reviewer, entry.time, entry.action
                )
        elif entry.action == SIGN_OFF:
            self._signoffs[entry.sample] = SignOff(entry.reviewer, entry.time)
        elif entry.action == REOPEN:
            self._signoffs.pop(entry.sample, None)
        else:
            raise ValueError(f"unknown action {entry.action!r}")
        self._audit.append(entry)

    def _now(self) -> str:
        return _iso_utc(self._clock())

    def _change(
        self, cell: CellResult, after: str | None, reviewer: str, action: str
    ) -> AuditEntry | None:
        reviewer = _check_reviewer(reviewer)
        signed = self._signoffs.get(cell.sample)
        if signed is not None:
            raise SampleLockedError(
                f"sample {cell.sample!r} was signed off by {signed.reviewer} at {signed.time}; "
                "reopen it before changing its cells"
            )
        key = cell_key(cell)
        current = self._reviews.get(key)
        before = current.label if current is not None else None
        if before == after:
            return None
        entry = AuditEntry(
            key, cell.sample, cell.label, before, after, reviewer, self._now(), action
        )
        return self._record(entry)

    def _record(self, entry: AuditEntry) -> AuditEntry:
        if self.on_change is not None:
            self.on_change(entry)  # first: a failed save leaves the state unchanged
        self.apply(entry)
        return entry


# ---------------------------------------------------------------------------- session files

SESSION_FORMAT = "leukgui-session"
SESSION_VERSION = 1
RUN_FILE = "run.json"
JOURNAL_FILE = "review.jsonl"
LOCK_FILE = "in-use.lock"
_HEATMAP_PREFIX = "heatmaps-"
_DATETIME_FIELDS = ("started", "finished")


class SessionError(Exception):
    """A session folder cannot be created, read or written; str() is fit to show the user."""


class SessionInUseError(SessionError):
    """Another running LeukGUI has this session open (a second window, say)."""


class SessionRecoveryWarning(UserWarning):
    """Something was repaired while opening a session (e.g. a line torn by a crash)."""


def _info_to_json(info: RunInfo) -> dict[str, Any]:
    data: dict[str, Any] = {}
    for f in fields(RunInfo):
        value = getattr(info, f.name)
        if f.name in _DATETIME_FIELDS:
            value = value.isoformat() if value is not None else None
        elif f.name == "uncertainty_band":
            value = [float(v) for v in value]
        elif f.name == "inputs":
            value = [str(v) for v in value]
        elif f.name == "extra":
            value = {str(k): str(v) for k, v in value.items()}
        elif isinstance(value, (np.floating, np.integer, np.bool_)):
            value = value.item()
        data[f.name] = value
    return data


def _info_from_json(data: dict[str, Any]) -> RunInfo:
    known = {f.name for f in fields(RunInfo)}
    values = {k: v for k, v in data.items() if k in known}
    for name in _DATETIME_FIELDS:
        if values.get(name) is not None:
            values[name] = datetime.fromisoformat(values[name])
    if "uncertainty_band" in values:
        lo, hi = values["uncertainty_band"]
        values["uncertainty_band"] = (float(lo), float(hi))
    return RunInfo(**values)


def _optional_str(value: object) -> str | None:
    return None if value is None else str(value)


class _HeatmapPacker:
    """Collects heatmaps into one float32 stack per shape, so 10,000 cells are a few arrays."""

    def __init__(self) -> None:
        self.stacks: dict[str, list[np.ndarray]] = {}

    def add(self, heatmap: np.ndarray) -> list[Any]:
        arr = np.asarray(heatmap, dtype=np.float32)
        key = "h" + "x".join(str(n) for n in arr.shape)
        stack = self.stacks.setdefault(key, [])
        stack.append(arr)
        return [key, len(stack) - 1]

    def arrays(self) -> dict[str, np.ndarray]:
        return {k: np.stack(v) for k, v in self.stacks.items()}


def _outcome_to_json(o: Outcome, packer: _HeatmapPacker) -> dict[str, Any]:
    if isinstance(o, CellResult):
        return {
            "kind": "cell",
            "path": str(o.path),
            "sample": o.sample,
            "p_all": float(o.p_all),
            "label": o.label,
            "width": int(o.width),
            "height": int(o.height),
            "truth": _optional_str(o.truth),
            "subject": _optional_str(o.subject),
            "heatmap": packer.add(o.heatmap),
            **_field_json(o),
        }
    if isinstance(o, FileError):
        return {"kind": "error", "path": str(o.path), "sample": o.sample, "reason": o.reason}
    raise TypeError(f"expected CellResult or FileError, got {type(o).__name__}")


def _outcome_from_json(data: dict[str, Any], heatmaps: dict[str, np.ndarray]) -> Outcome:
    if data["kind"] == "error":
        return FileError(Path(data["path"]), data["sample"], data["reason"])
    if data["kind"] != "cell":
        raise ValueError(f"unknown outcome kind {data['kind']!r}")
    key, index = data["heatmap"]
    return CellResult(
        path=Path(data["path"]),
        sample=data["sample"],
        p_all=float(data["p_all"]),
        label=data["label"],
        heatmap=np.array(heatmaps[key][index], dtype=np.float32),
        width=int(data["width"]),
        height=int(data["height"]),
        truth=data.get("truth"),
        subject=data.get("subject"),
        box=tuple(int(v) for v in data["box"]) if data.get("box") else None,
        cell_index=data.get("cell_index"),
        mask_bits=base64.b64decode(data["mask"]) if data.get("mask") else None,
    )


def _field_json(o: CellResult) -> dict[str, Any]:
    """Where a cell found in a smear field sits (absent for single-cell images)."""
    if o.box is None:
        return {}
    out: dict[str, Any] = {"box": [int(v) for v in o.box], "cell_index": o.cell_index}
    if o.mask_bits is not None:
        out["mask"] = base64.b64encode(o.mask_bits).decode("ascii")
    return out


def _fsync_dir(folder: Path) -> None:
    """Persist a new directory entry (POSIX; best effort, Windows has no directory fsync)."""
    if sys.platform == "win32":
        return
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _try_lock(path: Path) -> int | None:
    """An open descriptor holding an exclusive OS lock on `path`, or None if another holds it.

    The operating system drops the lock when its process ends, crash or kill included, so a
    lock never outlives the window that took it and needs no clean-up.
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT | _O_BINARY, 0o666)
    try:
        if sys.platform == "win32":
            import msvcrt

            os.lseek(fd, 0, os.SEEK_SET)
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        else:
            import fcntl

            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def _unlock(fd: int) -> None:
    with contextlib.suppress(OSError):
        if sys.platform == "win32":
            import msvcrt

            os.lseek(fd, 0, os.SEEK_SET)
            msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
        else:
            import fcntl

            fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)


class SessionStore:
    """A session folder: a snapshot of the run plus the append-only review journal.

    `SessionStore(folder)` attaches to an existing session (raises `SessionError` if the
    folder holds none); `SessionStore.create` starts one. Appends open the journal lazily and
    keep it open; call `close()` (or use `with`) when done. One process should review a
    session at a time, since two writers would each replay only their own changes: the app
    calls `claim()` before reviewing, and `in_use()` tells whether another process has.
    """

    def __init__(self, folder: Path | str) -> None:
        self.folder = Path(folder)
        self.run_path = self.folder / RUN_FILE
        self.journal_path = self.folder / JOURNAL_FILE
        self._fd: int | None = None
        self._lock_fd: int | None = None
        if not self.run_path.is_file():
            raise SessionError(f"{self.folder} is not a LeukGUI session folder (no {RUN_FILE})")

    # ------------------------------------------------------------------ lifecycle

    @classmethod
    def create(cls, folder: Path | str, run: RunResult) -> SessionStore:
        """Start a session in `folder` (created if needed) with a snapshot of `run`.

        Refuses a folder that already holds a session, so a review is never overwritten.
        """
        folder = Path(folder)
        if (folder / RUN_FILE).exists():
            raise SessionError(
                f"{folder} already holds a review session; open it, or choose an empty folder"
            )
        try:
            folder.mkdir(parents=True, exist_ok=True)
            _write_snapshot(folder, run, generation=1)
            fd = os.open(folder / JOURNAL_FILE, os.O_WRONLY | os.O_CREAT | _O_BINARY, 0o666)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            _fsync_dir(folder)
        except (OSError, ReportWriteError) as exc:
            raise SessionError(f"cannot create a session in {folder}: {exc}") from exc
        return cls(folder)

    @classmethod
    def open(cls, folder: Path | str) -> tuple[RunResult, ReviewState]:
        """Load the run and replay the journal; further changes are journaled to this folder.

        The returned state's `on_change` is already wired to this session's journal. Use
        `SessionStore(folder).load()` instead when the store itself is needed (`save_run`,
        `close`).
        """
        return cls(folder).load()

    def load(self) -> tuple[RunResult, ReviewState]:
        """The run snapshot and a ReviewState replayed from the journal, wired to `append`.

        A torn last journal line (a crash mid-write) is dropped with a
        `SessionRecoveryWarning`; damage anywhere else raises `SessionError`.
        """
        run = self.read_run()
        state = ReviewState(threshold=run.info.threshold)
        for entry in self.read_journal():
            state.apply(entry)
        state.on_change = self.append
        return run, state

    def claim(self) -> None:
        """Mark the session as open in this process until `close()`.

        Raises `SessionInUseError` when another process (or another store in this one) has
        claimed it, so two windows never write one journal.
        """
        if self._lock_fd is not None:
            return
        try:
            fd = _try_lock(self.folder / LOCK_FILE)
        except OSError as exc:
            raise SessionError(f"cannot open the session in {self.folder}: {exc}") from exc
        if fd is None:
            raise SessionInUseError(
                f"the session in {self.folder} is open in another LeukGUI window; "
                "review it there, or close that window first"
            )
        self._lock_fd = fd

    @staticmethod
    def in_use(folder: Path | str) -> bool:
        """Whether a running process has claimed the session in `folder`."""
        path = Path(folder) / LOCK_FILE
        if not path.exists():
            return False
        try:
            fd = _try_lock(path)
        except OSError:
            return False
        if fd is None:
            return True
        _unlock(fd)
        return False

    def close(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)
        if self._lock_fd is not None:
            lock, self._lock_fd = self._lock_fd, None
            _unlock(lock)

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()

    def __enter__(self) -> SessionStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ run snapshot

    def save_run(self, run: RunResult) -> None:
        """Replace the run snapshot (e.g. after more cells were analyzed), crash-safely."""
        generation = int(self._read_run_json().get("generation", 0)) + 1
        try:
            _write_snapshot(self.folder, run, generation)
        except (OSError, ReportWriteError) as exc:
            raise SessionError(f"cannot save the session in {self.folder}: {exc}") from exc

    def read_run(self) -> RunResult:
        data = self._read_run_json()
        name = data.get("heatmaps")
        if name is not None and (not isinstance(name, str) or Path(name).name != name):
            raise SessionError(f"{self.run_path} names an invalid heatmap file {name!r}")
        try:
            heatmaps = _read_heatmaps(self.folder / name) if name else {}
            info = _info_from_json(data["info"])
            outcomes = [_outcome_from_json(o, heatmaps) for o in data["outcomes"]]
        except (KeyError, IndexError, TypeError, ValueError, OSError) as exc:
            raise SessionError(f"the session in {self.folder} is damaged: {exc!r}") from exc
        return RunResult(info, outcomes)

    def _read_run_json(self) -> dict[str, Any]:
        try:
            data = json.loads(self.run_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise SessionError(f"cannot read {self.run_path}: {exc}") from exc
        if not isinstance(data, dict) or data.get("format") != SESSION_FORMAT:
            raise SessionError(f"{self.run_path} is not a LeukGUI session file")
        version = data.get("version")
        if not isinstance(version, int) or version < 1:
            raise SessionError(f"{self.run_path} has an invalid format version {version!r}")
        if version > SESSION_VERSION:
            raise SessionError(
                f"this session was saved by a newer LeukGUI (session format {version}; this "
                f"version reads up to {SESSION_VERSION}). Update LeukGUI to open it."
            )
        return data

    # ------------------------------------------------------------------ journal

    def append(self, entry: AuditEntry) -> None:
        """Write one entry as a JSON line and fsync it before returning.

        When this returns, the entry survives a killed process or a power cut (as far as the
        disk honours fsync). Raises `SessionError` when it cannot be written.
        """
        line = (json.dumps(entry.to_json(), ensure_ascii=False) + "\n").encode("utf-8")
        start: int | None = None
        try:
            if self._fd is None:
                self._fd = self._open_journal()
            start = os.lseek(self._fd, 0, os.SEEK_END)
            view = memoryview(line)
            while view:
                written = os.write(self._fd, view)
                view = view[written:]
            os.fsync(self._fd)
        except OSError as exc:
            if self._fd is not None and start is not None:
                # The caller will not apply this entry, so it must not replay on open either.
                with contextlib.suppress(OSError):
                    os.ftruncate(self._fd, start)
            self.close()
            raise SessionError(
                f"cannot save the review to {self.journal_path}: {exc.strerror or exc}"
            ) from exc

    def read_journal(self) -> list[AuditEntry]:
        """Every complete entry in order (see `load` for how damage is handled)."""
        try:
            raw = self.journal_path.read_bytes()
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise SessionError(f"cannot read {self.journal_path}: {exc}") from exc
        entries, torn = _parse_journal(raw, self.journal_path)
        if torn:
            warnings.warn(
                f"{self.journal_path}: ignored an incomplete last line ({torn} bytes), "
                "most likely from a crash while saving; every earlier change was restored",
                SessionRecoveryWarning,
                stacklevel=2,
            )
        return entries

    def _open_journal(self) -> int:
        """Open for appending, first cutting off a torn tail so the next line starts clean."""
        fd = os.open(self.journal_path, os.O_RDWR | os.O_CREAT | _O_BINARY, 0o666)
        try:
            size = os.lseek(fd, 0, os.SEEK_END)
            if size:
                raw = self.journal_path.read_bytes()
                _, torn = _parse_journal(raw, self.journal_path)
                if torn:
                    os.ftruncate(fd, size - torn)
                    os.fsync(fd)
                elif not raw.endswith(b"\n"):  # complete last entry, newline lost
                    os.write(fd, b"\n")
            os.close(fd)
            return os.open(self.journal_path, os.O_WRONLY | os.O_APPEND | _O_BINARY)
        except BaseException:
            with contextlib.suppress(OSError):
                os.close(fd)
            raise


_O_BINARY = getattr(os, "O_BINARY", 0)


def _parse_journal(raw: bytes, where: Path) -> tuple[list[AuditEntry], int]:
    """(entries, length of a torn tail to drop, 0 if none). Raises on damage elsewhere.

    Only the bytes after the last newline can be torn: each entry is written as one line
    ending in a newline, so a crash mid-write leaves a prefix of a line. If that tail parses,
    it is a complete entry that lost only its newline and is kept.
    """
    *lines, tail = raw.split(b"\n")
    entries: list[AuditEntry] = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            entries.append(_parse_line(line))
        except (ValueError, TypeError) as exc:
            raise SessionError(
                f"{where} line {number} is damaged ({exc}); the review cannot be restored "
                "safely. Keep a copy of the session folder and report the problem."
            ) from exc
    if tail.strip():
        try:
            entries.append(_parse_line(tail))
        except (ValueError, TypeError):
            return entries, len(tail)
    return entries, 0


def _parse_line(line: bytes) -> AuditEntry:
    return AuditEntry.from_json(json.loads(line.decode("utf-8")))


def _read_heatmaps(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as npz:
        return {k: npz[k] for k in npz.files}


def _write_snapshot(folder: Path, run: RunResult, generation: int) -> None:
    """Write heatmaps-<generation>.npz, then point run.json at it, then drop older npz files."""
    packer = _HeatmapPacker()
    outcomes = [_outcome_to_json(o, packer) for o in run.outcomes]
    heat_name = f"{_HEATMAP_PREFIX}{generation}.npz"
    arrays = packer.arrays()

    def write_npz(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)

    atomic_write(folder / heat_name, write_npz)
    data = {
        "format": SESSION_FORMAT,
        "version": SESSION_VERSION,
        "generation": generation,
        "saved": _iso_utc(_utc_now()),
        "heatmaps": heat_name,
        "info": _info_to_json(run.info),
        "outcomes": outcomes,
    }
    text = json.dumps(data, ensure_ascii=False, indent=1)
    atomic_write(folder / RUN_FILE, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    for old in _stale_heatmaps(folder, keep=heat_name):
        with contextlib.suppress(OSError):
            old.unlink()


def _stale_heatmaps(folder: Path, keep: str) -> Iterable[Path]:
    return [
        p
        for p in folder.glob(f"{_HEATMAP_PREFIX}*.npz")
        if p.name != keep and p.name[len(_HEATMAP_PREFIX) : -4].isdigit()
    ]
