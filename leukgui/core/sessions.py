"""Review sessions on disk: crash-safe autosave of a run and its review, and their lifecycle.

A session folder holds a snapshot of the run and the append-only review journal:

    run.json            format/version, RunInfo, every outcome (heatmaps by reference)
    heatmaps-<n>.npz    the Grad-CAM heatmaps, one float32 stack per heatmap shape
    review.jsonl        append-only journal, one AuditEntry per line with its CRC-32
    in-use.lock         OS file lock held while a window reviews the session
    closed              marker: ended cleanly, declined or damaged (never offered again)

`run.json` names the heatmap file it belongs to, and a new snapshot writes a new
`heatmaps-<n+1>.npz` before atomically replacing `run.json`, so a crash at any moment leaves
a `run.json` that points at a complete heatmap file.

Crash safety is write-ahead: `ReviewState` hands each new entry to `on_change` (wired to
`ReviewSession.journal`, which fsyncs one JSON line per entry) *before* it changes its own
state. If journaling fails, the state is unchanged and the error reaches the caller; if the
process is killed, every change the user saw is already on disk and replays on restore.

`SessionStore` is the folder format; `ReviewSession` is the lifecycle a window drives
(create, journal, snapshot, close; restore, decline or mark damaged after a crash), so the
GUI only calls it and shows what happened. Qt-free: tests drive it without a display.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import sys
import warnings
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, fields, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from leukgui.core.atomic import ReportWriteError, atomic_write, try_lock, unlock
from leukgui.core.paths import user_dir
from leukgui.core.results import (
    NO_WHITE_CELL,
    UNREADABLE,
    CellResult,
    FileError,
    FileStamp,
    Outcome,
    RunInfo,
    RunResult,
)
from leukgui.core.review import AuditEntry, ReviewState
from leukgui.core.text import display_path

__all__ = [
    "CLOSED_MARKER",
    "SESSION_VERSION",
    "ReviewSession",
    "SessionError",
    "SessionInUseError",
    "SessionRecoveryWarning",
    "SessionStore",
    "decline",
    "mark_damaged",
    "sessions_root",
    "unfinished_sessions",
]


SESSION_FORMAT = "leukgui-session"
SESSION_VERSION = 1
RUN_FILE = "run.json"
JOURNAL_FILE = "review.jsonl"
LOCK_FILE = "in-use.lock"
CLOSED_MARKER = "closed"  # the session ended cleanly, was declined, or is damaged
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
            **({"note": o.note} if o.note else {}),
            **_stamp_json(o.stamp),
        }
    if isinstance(o, FileError):
        return {
            "kind": "error",
            "path": str(o.path),
            "sample": o.sample,
            "reason": o.reason,
            "error_kind": o.kind,
        }
    raise TypeError(f"expected CellResult or FileError, got {type(o).__name__}")


def _outcome_from_json(data: dict[str, Any], heatmaps: dict[str, np.ndarray]) -> Outcome:
    if data["kind"] == "error":
        reason = data["reason"]
        return FileError(Path(data["path"]), data["sample"], reason, _error_kind(data, reason))
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
        note=str(data.get("note") or ""),
        stamp=_stamp_from_json(data.get("stamp")),
        **_measures_from_json(data),
    )


def _stamp_json(stamp: FileStamp | None) -> dict[str, Any]:
    """The analyzed file's size, time and SHA-256 (absent for results without a stamp)."""
    if stamp is None:
        return {}
    return {"stamp": {"size": stamp.size, "mtime_ns": stamp.mtime_ns, "sha256": stamp.sha256}}


def _stamp_from_json(data: object) -> FileStamp | None:
    """A stamp back from a session; None for sessions saved before stamps existed."""
    if data is None:
        return None
    if not isinstance(data, dict):
        raise ValueError(f"invalid file stamp {data!r}")
    return FileStamp(int(data["size"]), int(data["mtime_ns"]), str(data["sha256"]))


def _error_kind(data: dict[str, Any], reason: str) -> str:
    """The error's kind; sessions saved before kinds existed have none.

    Backward compatibility only: such a session names "no white cell" solely in its reason
    text (the engine's wording at the time), so that wording is read here and nowhere else.
    Every other old error counts as UNREADABLE.
    """
    kind = data.get("error_kind")
    if kind is not None:
        return str(kind)
    return NO_WHITE_CELL if str(reason).startswith("no white cell found") else UNREADABLE


def _field_json(o: CellResult) -> dict[str, Any]:
    """Where a cell found in a smear field sits (absent for single-cell images)."""
    if o.box is None:
        return {}
    out: dict[str, Any] = {"box": [int(v) for v in o.box], "cell_index": o.cell_index}
    if o.mask_bits is not None:
        out["mask"] = base64.b64encode(o.mask_bits).decode("ascii")
    # Size and scale (absent from sessions saved before they existed; see _measures_from_json)
    if o.area_px is not None:
        out["area_px"] = int(o.area_px)
    if o.touches_border is not None:
        out["touches_border"] = bool(o.touches_border)
    if o.um_per_px is not None:
        out["um_per_px"] = float(o.um_per_px)
    if o.scale_source:
        out["scale_source"] = o.scale_source
    if o.scale_plausible is not None:
        out["scale_plausible"] = bool(o.scale_plausible)
    return out


def _measures_from_json(data: dict[str, Any]) -> dict[str, Any]:
    """A field cell's size and scale back from a session. Sessions saved before these
    existed have none: the values stay unknown (None / ""), never zero, so a report of an
    old session leaves the columns empty instead of inventing a size."""

    def optional(key: str, kind: type) -> Any:
        value = data.get(key)
        return None if value is None else kind(value)

    return {
        "area_px": optional("area_px", int),
        "touches_border": optional("touches_border", bool),
        "um_per_px": optional("um_per_px", float),
        "scale_source": str(data.get("scale_source") or ""),
        "scale_plausible": optional("scale_plausible", bool),
    }


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
        # (line number, reason) of each journal line the last read skipped as damaged.
        self.damaged_lines: list[tuple[int, str]] = []
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
        made = not folder.exists()
        before = set(os.listdir(folder)) if not made and folder.is_dir() else set()
        try:
            folder.mkdir(parents=True, exist_ok=True)
            _write_snapshot(folder, run, generation=1)
            fd = os.open(folder / JOURNAL_FILE, os.O_WRONLY | os.O_CREAT | _O_BINARY, 0o666)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            _fsync_dir(folder)
        except BaseException as exc:
            _remove_new_files(folder, before, made)  # a failed create leaves nothing behind
            if isinstance(exc, (OSError, ReportWriteError, ValueError, TypeError)):
                raise SessionError(f"cannot create a session in {folder}: {exc}") from exc
            raise
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
        `SessionRecoveryWarning`; a damaged line elsewhere (bad JSON, a failed checksum) is
        skipped with a `SessionRecoveryWarning` naming it, and listed in `damaged_lines`,
        while every valid entry before and after it is replayed.
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
            fd = try_lock(self.folder / LOCK_FILE)
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
            fd = try_lock(path)
        except OSError:
            return False
        if fd is None:
            return True
        unlock(fd)
        return False

    def close(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)
        if self._lock_fd is not None:
            lock, self._lock_fd = self._lock_fd, None
            unlock(lock)

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
        # ASCII with \u escapes: a path whose name is not valid UTF-8 (Latin-1 bytes from a USB
        # stick) round-trips exactly instead of failing to encode.
        line = _journal_line(entry)
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
        entries, torn, damaged = _parse_journal(raw, self.journal_path)
        self.damaged_lines = damaged
        if damaged:
            where = "; ".join(f"line {number}: {why}" for number, why in damaged)
            warnings.warn(
                f"{self.journal_path}: skipped {len(damaged)} damaged "
                f"entr{'ies' if len(damaged) > 1 else 'y'} ({where}); every other change, "
                "before and after, was restored. Keep a copy of the session folder and check "
                "the review of the cells concerned.",
                SessionRecoveryWarning,
                stacklevel=2,
            )
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
                _, torn, _ = _parse_journal(raw, self.journal_path)
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


def _remove_new_files(folder: Path, before: set[str], made: bool) -> None:
    """Undo a session create that failed part-way: the files it added to `folder` (and the
    folder itself when it made it) go; anything that was there before stays."""
    with contextlib.suppress(OSError):
        for name in set(os.listdir(folder)) - before:
            with contextlib.suppress(OSError):
                (folder / name).unlink()
        if made:
            folder.rmdir()


_CHECKSUM_KEY = "crc32"


def _checksum(record: dict[str, Any]) -> str:
    """CRC-32 of the record's canonical JSON (sorted keys, ASCII, no spaces)."""
    body = json.dumps(record, ensure_ascii=True, sort_keys=True, separators=(",", ":"))
    return f"{zlib.crc32(body.encode('ascii')):08x}"


def _journal_line(entry: AuditEntry) -> bytes:
    """One journal line: the entry as JSON with its checksum, ASCII with \\u escapes (a path
    whose name is not valid UTF-8, Latin-1 bytes from a USB stick, round-trips exactly)."""
    record = entry.to_json()
    record[_CHECKSUM_KEY] = _checksum(record)
    return (json.dumps(record, ensure_ascii=True) + "\n").encode("ascii")


def _parse_journal(raw: bytes, where: Path) -> tuple[list[AuditEntry], int, list[tuple[int, str]]]:
    """(entries, length of a torn tail to drop (0 if none), damaged lines skipped).

    Only the bytes after the last newline can be torn: each entry is written as one line
    ending in a newline, so a crash mid-write leaves a prefix of a line. If that tail parses,
    it is a complete entry that lost only its newline and is kept.

    A damaged line elsewhere (bad JSON, an unknown action, a failed checksum) is skipped and
    listed as (line number, reason); the entries after it are kept. Every line carries a
    checksum since this format; lines without one are accepted only before the first line
    that has one (a journal begun by an older LeukGUI), never after it.
    """
    *lines, tail = raw.split(b"\n")
    entries: list[AuditEntry] = []
    damaged: list[tuple[int, str]] = []
    checked = False
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            entry, has_sum = _parse_line(line, require_sum=checked)
        except (ValueError, TypeError) as exc:
            damaged.append((number, str(exc) or type(exc).__name__))
            continue
        checked = checked or has_sum
        entries.append(entry)
    if tail.strip():
        try:
            entry, _ = _parse_line(tail, require_sum=checked)
        except (ValueError, TypeError):
            return entries, len(tail), damaged
        entries.append(entry)
    return entries, 0, damaged


def _parse_line(line: bytes, require_sum: bool = False) -> tuple[AuditEntry, bool]:
    """The entry on one journal line, and whether it carried a checksum."""
    data = json.loads(line.decode("utf-8"))
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    stored = data.pop(_CHECKSUM_KEY, None)
    if stored is None:
        if require_sum:
            raise ValueError("no checksum")
    elif stored != _checksum(data):
        raise ValueError("checksum does not match")
    return AuditEntry.from_json(data), stored is not None


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
        "saved": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "heatmaps": heat_name,
        "info": _info_to_json(run.info),
        "outcomes": outcomes,
    }
    text = json.dumps(data, ensure_ascii=True, indent=1)  # any file name round-trips
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


# ---------------------------------------------------------------------------- lifecycle


def sessions_root() -> Path:
    """Where the window keeps its sessions: `<user dir>/sessions`, one folder per run."""
    return user_dir() / "sessions"


class ReviewSession:
    """The autosaved review of one run: its snapshot, its journal and the claim on its folder.

    `create` starts one for a run that is being analyzed, `restore` reopens one left behind
    by a crash; either way `review` is wired to `journal`, so every change is on disk before
    the state changes. `run` is the caller's run object: the caller may append outcomes to
    it as they arrive, and the session writes a new snapshot whenever a journal entry could
    refer to a cell the last snapshot lacks. `close` ends the session cleanly; a session
    that is dropped without `close` (the process killed) is what `unfinished_sessions` finds.
    """

    def __init__(self, store: SessionStore, run: RunResult, review: ReviewState) -> None:
        self.store = store
        self.run = run
        self.review = review
        self._saved = len(run.outcomes)  # outcomes in the snapshot on disk
        self._closed = False
        review.on_change = self.journal

    @classmethod
    def create(cls, root: Path | str, run: RunResult) -> ReviewSession:
        """Start a session for `run` in a new, time-named folder under `root`, and claim it.

        Raises `SessionError` when the folder or its first snapshot cannot be written.
        """
        folder = Path(root) / datetime.now().strftime("%Y%m%d-%H%M%S-%f")
        store = SessionStore.create(folder, run)
        try:
            store.claim()
        except SessionError:
            store.close()
            raise
        return cls(store, run, ReviewState.for_run(run))

    @classmethod
    def restore(cls, folder: Path | str) -> ReviewSession:
        """Reopen a session: the run as last saved, with every journaled change replayed.

        Raises `SessionInUseError` when another window has it open, and `SessionError` when
        it is no session or is damaged (a torn last journal line is repaired with a
        `SessionRecoveryWarning` instead).
        """
        store = SessionStore(folder)
        store.claim()
        try:
            run, review = store.load()
        except BaseException:
            store.close()
            raise
        return cls(store, run, review)

    @property
    def folder(self) -> Path:
        return self.store.folder

    @property
    def unsaved(self) -> int:
        """Outcomes in `run` that the snapshot on disk does not have yet."""
        return max(0, len(self.run.outcomes) - self._saved)

    def snapshot(self) -> None:
        """Write the run as it is now (more cells analyzed, the run finished), crash-safely."""
        self.store.save_run(self.run)
        self._saved = len(self.run.outcomes)

    def journal(self, entry: AuditEntry) -> None:
        """Write one review change ahead of the state (`ReviewState.on_change`).

        Snapshot first when cells arrived since the last one: the journal never refers to a
        cell the snapshot lacks. Raises `SessionError` when either cannot be written, and the
        review state then stays unchanged.
        """
        if self.unsaved:
            self.snapshot()
        self.store.append(entry)

    def close(self) -> None:
        """End the session cleanly: a last snapshot, the claim released, the folder marked
        closed so it is never offered for restore.

        Raises `SessionError` when the last snapshot or the marker could not be written; the
        claim is released and the review detached from the journal either way.
        """
        if self._closed:
            return
        self._closed = True
        self.review.on_change = None
        problem: SessionError | None = None
        try:
            if self.unsaved:
                self.snapshot()
        except SessionError as exc:
            problem = exc
        finally:
            self.store.close()
        try:
            _mark(self.folder, datetime.now().isoformat())
        except SessionError as exc:
            problem = problem or exc
        if problem is not None:
            raise problem


@dataclass(frozen=True)
class SessionSummary:
    """One past session as File > Recent sessions lists it (read without loading it)."""

    folder: Path
    started: datetime | None
    inputs: list[str]
    model: str
    cells: int
    errors: int
    changes: int  # review changes in its journal
    in_use: bool  # another window has it open
    reviewers: tuple[str, ...] = ()  # who changed its review, in order of first change

    def describe(self) -> str:
        """'2026-11-30 12:03 · patient7 · 12 cells · 3 review changes · efficientnetb0-demo v1'"""
        when = self.started.strftime("%Y-%m-%d %H:%M") if self.started else self.folder.name
        names = ", ".join(display_path(Path(p).name or p) for p in self.inputs[:2])
        names = names or "(no inputs)"
        if len(self.inputs) > 2:
            names += f" +{len(self.inputs) - 2}"
        changes = f"{self.changes} review change{'s' * (self.changes != 1)}"
        return f"{when} · {names} · {self.cells} cells · {changes} · {self.model}"


_summaries: dict[Path, tuple[tuple[int, ...], SessionSummary]] = {}  # by folder, see below


def session_summary(folder: Path | str) -> SessionSummary | None:
    """What a session folder holds, read without loading it; None when it is unreadable.

    A run.json of a large run is megabytes of JSON: a summary is kept until that file or the
    journal changes, so opening File > Recent sessions again does not parse ten of them again.
    """
    folder = Path(folder)
    try:
        run_stat = (folder / RUN_FILE).stat()
        journal_stat = (folder / JOURNAL_FILE).stat() if (folder / JOURNAL_FILE).exists() else None
        stamp = (
            run_stat.st_mtime_ns,
            run_stat.st_size,
            journal_stat.st_size if journal_stat else -1,
        )
    except OSError:
        return None
    cached = _summaries.get(folder)
    if cached is not None and cached[0] == stamp:
        return replace(cached[1], in_use=SessionStore.in_use(folder))
    summary = _read_summary(folder)
    if summary is not None:
        _summaries[folder] = (stamp, summary)
    return summary


def _read_summary(folder: Path) -> SessionSummary | None:
    try:
        data = SessionStore(folder)._read_run_json()
        info = data["info"]
        outcomes = data["outcomes"]
        journal = folder / JOURNAL_FILE
        raw = journal.read_bytes() if journal.is_file() else b""
        reviewers: list[str] = []
        for line in raw.splitlines():
            with contextlib.suppress(ValueError, TypeError, AttributeError):
                name = json.loads(line).get("reviewer")
                if isinstance(name, str) and name not in reviewers:
                    reviewers.append(name)
        started = info.get("started")
        return SessionSummary(
            folder=folder,
            started=datetime.fromisoformat(started) if started else None,
            inputs=[str(p) for p in info.get("inputs", [])],
            model=f"{info.get('model_name', '?')} v{info.get('model_version', '?')}",
            cells=sum(1 for o in outcomes if o.get("kind") == "cell"),
            errors=sum(1 for o in outcomes if o.get("kind") == "error"),
            changes=raw.count(b"\n"),
            in_use=SessionStore.in_use(folder),
            reviewers=tuple(reviewers),
        )
    except (SessionError, OSError, KeyError, TypeError, ValueError, AttributeError):
        return None


def recent_sessions(root: Path | str, limit: int = 10) -> list[SessionSummary]:
    """The newest readable sessions under `root`, newest first; damaged ones are left out.

    Closed sessions are included: reopening one brings back its results and every review
    change (the journal is never deleted).
    """
    root = Path(root)
    if not root.is_dir():
        return []
    found: list[SessionSummary] = []
    for folder in sorted((p for p in root.iterdir() if p.is_dir()), reverse=True):
        if len(found) >= limit:
            break
        marker = folder / CLOSED_MARKER
        with contextlib.suppress(OSError):
            if marker.is_file() and marker.read_text(errors="replace").startswith("damaged"):
                continue
        summary = session_summary(folder)
        if summary is not None:
            found.append(summary)
    return found


def unfinished_sessions(root: Path | str) -> list[Path]:
    """Session folders under `root` left behind by a crash, newest first.

    Closed, declined and damaged sessions are marked and skipped; so is a session another
    running LeukGUI has claimed, which is busy, not unfinished.
    """
    root = Path(root)
    if not root.is_dir():
        return []
    found = [
        p
        for p in root.iterdir()
        if p.is_dir() and not (p / CLOSED_MARKER).exists() and not SessionStore.in_use(p)
    ]
    return sorted(found, reverse=True)


def decline(folder: Path | str) -> None:
    """The user chose not to restore this session: never offer it again."""
    _mark(Path(folder), "declined")


def mark_damaged(folder: Path | str, reason: str) -> None:
    """The session cannot be restored: say why in its marker, and never offer it again."""
    _mark(Path(folder), f"damaged: {reason}")


def _mark(folder: Path, text: str) -> None:
    try:
        (folder / CLOSED_MARKER).write_text(text, encoding="utf-8", errors="backslashreplace")
    except OSError as exc:
        raise SessionError(f"cannot mark the session in {folder} as closed: {exc}") from exc
