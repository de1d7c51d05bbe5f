"""Human review of the model's per-cell calls: labels, audit trail and sign-off.

A lab technician confirms or corrects each cell (ALL, HEM or UNCLASSIFIABLE); every change is
an `AuditEntry` saying who changed what, when, from what to what. A signed-off sample is
locked until it is reopened. Qt-free, so the GUI stays a thin layer over it and tests need
no display.

`ReviewState` hands each new entry to `on_change` *before* it changes its own state
(write-ahead): `leukgui.core.sessions.ReviewSession` wires it to a journal that fsyncs each
entry, so a failed save leaves the state unchanged and a killed process loses nothing the
user saw. Session folders, their format and their lifecycle live in `leukgui.core.sessions`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from leukgui.core.formatting import local_minute
from leukgui.core.metrics import thresholded_call
from leukgui.core.results import (
    ALL,
    HEM,
    UNCERTAIN,
    UNCLASSIFIABLE,
    CellResult,
    RunResult,
)

__all__ = [
    "ACTIONS",
    "REVIEW_LABELS",
    "UNCLASSIFIABLE",
    "AuditEntry",
    "CellReview",
    "ReviewError",
    "ReviewState",
    "SampleLockedError",
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
    `after` is None when a cell's review is cleared (it falls back to the model's label); an
    "undo" of the last change sets `after` to the label the cell had before that change.
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


def _locked(sample: str, signed: SignOff) -> SampleLockedError:
    """The plain message a person sees when a change hits a signed-off sample."""
    return SampleLockedError(
        f"Sample {sample} was signed off by {signed.reviewer} on {local_minute(signed.time)}. "
        "Reopen the sample (Review > Reopen sample) before changing its cells."
    )


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
        # This session's cell changes, newest last, for Undo and Redo (not kept across restores:
        # the audit trail is the record; these only say what Ctrl+Z / Ctrl+Shift+Z act on).
        self._undoable: list[AuditEntry] = []
        self._redoable: list[AuditEntry] = []

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

    @property
    def can_undo(self) -> bool:
        return bool(self._undoable)

    @property
    def can_redo(self) -> bool:
        return bool(self._redoable)

    def undo_last(self, reviewer: str) -> AuditEntry | None:
        """Undo the newest label or confirmation made in this session, wherever its cell is:
        the cell goes back to the label it had before (None: the model's call).

        Recorded as an "undo" entry, so the audit trail keeps both the change and its undo.
        Returns the entry (its `path` names the cell), or None when there is nothing to undo.
        A signed-off sample is not changed: SampleLockedError, and the history stays as it was.
        """
        reviewer = _check_reviewer(reviewer)
        if not self._undoable:
            return None
        done = self._undoable[-1]
        entry = self._cell_entry(done, done.before, reviewer, UNDO)
        self._record(entry)
        self._redoable.append(self._undoable.pop())
        return entry

    def redo(self, reviewer: str) -> AuditEntry | None:
        """Make the newest undone change again (recorded as that change's action)."""
        reviewer = _check_reviewer(reviewer)
        if not self._redoable:
            return None
        undone = self._redoable[-1]
        entry = self._cell_entry(undone, undone.after, reviewer, undone.action)
        self._record(entry)
        self._undoable.append(self._redoable.pop())
        return entry

    def _cell_entry(
        self, like: AuditEntry, after: str | None, reviewer: str, action: str
    ) -> AuditEntry:
        """A change to the cell `like` names, refused while its sample is signed off."""
        signed = self._signoffs.get(like.sample)
        if signed is not None:
            raise _locked(like.sample, signed)
        current = self._reviews.get(like.path)
        before = current.label if current is not None else None
        return AuditEntry(
            like.path, like.sample, like.model_label, before, after, reviewer, self._now(), action
        )

    def sign_off(self, sample: str, reviewer: str) -> AuditEntry:
        """Sign a sample off; its cells are locked until `reopen`."""
        reviewer = _check_reviewer(reviewer)
        current = self._signoffs.get(sample)
        if current is not None:
            raise ReviewError(
                f"Sample {sample} is already signed off by {current.reviewer} on "
                f"{local_minute(current.time)}."
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
            raise _locked(cell.sample, signed)
        key = cell_key(cell)
        current = self._reviews.get(key)
        before = current.label if current is not None else None
        if before == after:
            return None
        entry = AuditEntry(
            key, cell.sample, cell.label, before, after, reviewer, self._now(), action
        )
        self._record(entry)
        if action in (LABEL, CONFIRM):  # a new change: what was undone can no longer be redone
            self._undoable.append(entry)
            self._redoable.clear()
        return entry

    def _record(self, entry: AuditEntry) -> AuditEntry:
        if self.on_change is not None:
            self.on_change(entry)  # first: a failed save leaves the state unchanged
        self.apply(entry)
        return entry
