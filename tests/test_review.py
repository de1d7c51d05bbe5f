"""Cell review: state transitions, audit entries, sign-off locks and summaries on final labels.

Session files and the session lifecycle are tested in test_sessions.py."""

from __future__ import annotations

import itertools
import math
from dataclasses import fields
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from review_samples import T0, review_run
from review_samples import cell as _cell
from review_samples import info as _info

from leukgui.core.metrics import sample_summary, wilson_interval
from leukgui.core.results import (
    ALL,
    HEM,
    UNCERTAIN,
    CellResult,
    RunResult,
)
from leukgui.core.review import (
    REVIEW_LABELS,
    UNCLASSIFIABLE,
    AuditEntry,
    ReviewError,
    ReviewState,
    SampleLockedError,
    SignOff,
    cell_key,
)


def _clock():
    """A clock that ticks one second per call, so every entry has a distinct known time."""
    ticks = itertools.count()
    return lambda: T0 + timedelta(seconds=next(ticks))


@pytest.fixture
def run(tmp_path: Path) -> RunResult:
    return review_run(tmp_path / "images")


@pytest.fixture
def state(run: RunResult) -> ReviewState:
    return ReviewState(threshold=run.info.threshold, clock=_clock())


def _cells(run: RunResult) -> dict[str, CellResult]:
    return {c.path.stem: c for c in run.cells}


# ------------------------------------------------------------------------------ transitions


def test_one_spelling_for_review_labels() -> None:
    assert UNCLASSIFIABLE == "UNCLASSIFIABLE"
    assert REVIEW_LABELS == (ALL, HEM, UNCLASSIFIABLE)
    assert UNCERTAIN not in REVIEW_LABELS  # the model's label, never a reviewer's


def test_set_label_records_who_what_when(run: RunResult, state: ReviewState) -> None:
    a = _cells(run)["a"]
    assert not state.is_reviewed(a) and state.final_label(a) == ALL
    entry = state.set_label(a, HEM, "  Ann Lee ")
    assert entry == AuditEntry(
        path=str(a.path.absolute()),
        sample="S1",
        model_label=ALL,
        before=None,
        after=HEM,
        reviewer="Ann Lee",  # trimmed
        time="2024-05-06T09:30:00+00:00",
        action="label",
    )
    assert datetime.fromisoformat(entry.time).utcoffset() == timedelta(0)
    assert state.is_reviewed(a) and state.final_label(a) == HEM
    review = state.review_of(a)
    assert (review.label, review.reviewer, review.time) == (HEM, "Ann Lee", entry.time)

    second = state.set_label(a, UNCLASSIFIABLE, "Bo")
    assert (second.before, second.after, second.reviewer) == (HEM, UNCLASSIFIABLE, "Bo")
    assert second.time == "2024-05-06T09:30:01+00:00"
    assert state.set_label(a, UNCLASSIFIABLE, "Cy") is None  # no change, nothing recorded
    assert state.review_of(a).reviewer == "Bo"
    assert state.audit == [entry, second]


def test_confirm_takes_the_model_call_and_resolves_uncertain_by_threshold(
    run: RunResult,
) -> None:
    cells = _cells(run)
    state = ReviewState(threshold=0.5)
    assert state.confirm(cells["b"], "Ann").after == HEM
    entry = state.confirm(cells["c"], "Ann")  # UNCERTAIN at 0.55 >= 0.5
    assert (entry.action, entry.model_label, entry.after) == ("confirm", UNCERTAIN, ALL)
    assert state.confirm(cells["d"], "Ann").after == HEM  # UNCERTAIN at 0.45 < 0.5
    assert state.final_label(cells["c"]) == ALL

    strict = ReviewState(threshold=0.6)
    assert strict.suggestion(cells["c"]) == HEM  # same cell, the run's own threshold decides
    assert ReviewState.for_run(run).threshold == 0.5

    blind = ReviewState()
    assert blind.confirm(cells["a"], "Ann").after == ALL  # a decided call needs no threshold
    with pytest.raises(ReviewError, match="threshold"):
        blind.confirm(cells["c"], "Ann")
    assert not blind.is_reviewed(cells["c"])


def test_undo_returns_the_cell_to_the_model_label(run: RunResult, state: ReviewState) -> None:
    e = _cells(run)["e"]
    assert state.undo(e, "Ann") is None  # nothing to undo, nothing recorded
    state.set_label(e, ALL, "Ann")
    entry = state.undo(e, "Bo")
    assert (entry.action, entry.before, entry.after, entry.reviewer) == ("undo", ALL, None, "Bo")
    assert not state.is_reviewed(e) and state.review_of(e) is None
    assert state.final_label(e) == HEM
    assert [x.action for x in state.audit] == ["label", "undo"]  # the history stays


@pytest.mark.parametrize("reviewer", ["", "   ", None])
def test_reviewer_name_is_required(run: RunResult, state: ReviewState, reviewer) -> None:
    a = _cells(run)["a"]
    for change in (
        lambda: state.set_label(a, HEM, reviewer),
        lambda: state.confirm(a, reviewer),
        lambda: state.sign_off("S1", reviewer),
    ):
        with pytest.raises(ReviewError, match="reviewer's name"):
            change()
    assert state.audit == [] and not state.is_reviewed(a) and state.signed_off("S1") is None


@pytest.mark.parametrize("label", [UNCERTAIN, "all", "Blast", "", None])
def test_labels_are_validated(run: RunResult, state: ReviewState, label) -> None:
    a = _cells(run)["a"]
    with pytest.raises(ReviewError, match="must be one of ALL, HEM, UNCLASSIFIABLE"):
        state.set_label(a, label, "Ann")
    assert state.audit == [] and not state.is_reviewed(a)


def test_sign_off_locks_the_sample_until_reopened(run: RunResult, state: ReviewState) -> None:
    cells = _cells(run)
    state.set_label(cells["a"], HEM, "Ann")
    signed = state.sign_off("S1", "Dr Bo")
    assert signed == AuditEntry("", "S1", "", None, None, "Dr Bo", signed.time, "sign-off")
    assert state.signed_off("S1") == SignOff("Dr Bo", signed.time) and state.is_locked("S1")

    for change in (
        lambda: state.set_label(cells["b"], ALL, "Ann"),
        lambda: state.confirm(cells["c"], "Ann"),
        lambda: state.undo(cells["a"], "Ann"),
        lambda: state.set_label(cells["a"], HEM, "Ann"),  # even a no-op is refused
    ):
        with pytest.raises(
            SampleLockedError,
            match=r"signed off by Dr Bo on \d{4}-\d\d-\d\d \d\d:\d\d\. Reopen the sample",
        ):
            change()
    assert state.final_label(cells["a"]) == HEM and not state.is_reviewed(cells["b"])
    assert state.set_label(cells["e"], ALL, "Ann") is not None  # other samples stay open
    with pytest.raises(ReviewError, match="already signed off by Dr Bo"):
        state.sign_off("S1", "Cy")
    with pytest.raises(ReviewError, match="not signed off"):
        state.reopen("S2", "Cy")

    reopened = state.reopen("S1", "Cy")
    assert (reopened.action, reopened.sample, reopened.reviewer) == ("reopen", "S1", "Cy")
    assert state.signed_off("S1") is None and not state.is_locked("S1")
    assert state.set_label(cells["b"], ALL, "Ann").after == ALL
    assert [x.action for x in state.audit] == ["label", "sign-off", "label", "reopen", "label"]


def test_on_change_runs_before_the_state_changes(run: RunResult) -> None:
    a = _cells(run)["a"]
    seen: list[tuple[AuditEntry, bool]] = []
    state = ReviewState(threshold=0.5)
    state.on_change = lambda entry: seen.append((entry, state.is_reviewed(a)))
    entry = state.set_label(a, HEM, "Ann")
    assert seen == [(entry, False)]  # journaled first (write-ahead), then applied

    def broken(entry: AuditEntry) -> None:
        raise OSError("disk full")

    state.on_change = broken
    with pytest.raises(OSError, match="disk full"):
        state.set_label(a, UNCLASSIFIABLE, "Ann")
    with pytest.raises(OSError):
        state.sign_off("S1", "Ann")
    assert state.final_label(a) == HEM and state.audit == [entry]  # nothing half-applied
    assert state.signed_off("S1") is None


def test_cells_are_keyed_by_absolute_path(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    relative = _cell(Path("S1/a.png"), "S1", 0.9, ALL)
    state = ReviewState(threshold=0.5)
    entry = state.set_label(relative, HEM, "Ann")
    assert entry.path == str(tmp_path / "S1" / "a.png")
    assert Path(entry.path).is_absolute()
    same_file = _cell(tmp_path / "S1" / "a.png", "S1", 0.9, ALL)
    assert state.final_label(same_file) == HEM


# ------------------------------------------------------------------------------ summary


def test_summary_equals_sample_summary_when_nothing_is_reviewed(run: RunResult) -> None:
    model = sample_summary(run)
    reviewed = sample_summary(run, ReviewState(threshold=0.5))
    assert [r.sample for r in reviewed] == ["S1", "S2", "S3", "All samples"]
    assert len(model) == len(reviewed)
    for m, r in zip(model, reviewed, strict=True):
        for f in fields(m):
            a, b = getattr(m, f.name), getattr(r, f.name)
            assert a == b or (math.isnan(a) and math.isnan(b)), (m.sample, f.name)
        assert r.n_unclassifiable == 0 and r.reviewed == 0 and r.signed_off is None
    s3 = reviewed[2]
    assert (s3.cells, s3.errors) == (0, 1) and math.isnan(s3.all_fraction)


def test_summary_counts_final_labels(run: RunResult, state: ReviewState) -> None:
    cells = _cells(run)
    state.set_label(cells["a"], HEM, "Ann")  # S1: ALL -> HEM
    state.confirm(cells["c"], "Ann")  # S1: UNCERTAIN -> ALL (0.55 >= 0.5)
    state.set_label(cells["d"], UNCLASSIFIABLE, "Ann")  # S1: UNCERTAIN -> UNCLASSIFIABLE
    state.set_label(cells["f"], HEM, "Ann")
    state.undo(cells["f"], "Ann")  # S2 back to the model's labels
    elsewhere = _cell(Path("/not/in/run.png"), "S1", 0.9, ALL)
    state.set_label(elsewhere, HEM, "Ann")  # a review for a cell not in the run is ignored
    state.sign_off("S1", "Dr Bo")

    s1, s2, s3, overall = sample_summary(run, state)
    assert (s1.cells, s1.n_all, s1.n_hem, s1.n_uncertain, s1.n_unclassifiable) == (4, 1, 2, 0, 1)
    assert s1.reviewed == 3 and s1.decided == 3
    assert s1.all_fraction == pytest.approx(1 / 3)
    assert (s1.ci_low, s1.ci_high) == pytest.approx(wilson_interval(1, 3))
    assert s1.signed_off == state.signed_off("S1") and s1.signed_off.reviewer == "Dr Bo"
    assert (s2.n_all, s2.n_hem, s2.reviewed, s2.errors, s2.signed_off) == (1, 1, 0, 1, None)
    assert s3.cells == 0 and s3.errors == 1
    assert overall.is_overall and overall.sample == "All samples"
    assert (overall.cells, overall.n_all, overall.n_hem, overall.n_unclassifiable) == (6, 2, 3, 1)
    assert (overall.n_uncertain, overall.reviewed, overall.errors) == (0, 3, 2)
    assert overall.all_fraction == pytest.approx(2 / 5)
    assert (overall.ci_low, overall.ci_high) == pytest.approx(wilson_interval(2, 5))


def test_summary_all_unclassifiable_has_no_all_percent(tmp_path: Path) -> None:
    cells = [_cell(tmp_path / f"{i}.png", "S", 0.9, ALL) for i in range(3)]
    run = RunResult(_info(), list(cells))
    state = ReviewState(threshold=0.5)
    for c in cells:
        state.set_label(c, UNCLASSIFIABLE, "Ann")
    row = sample_summary(run, state)[0]
    assert (row.cells, row.n_unclassifiable, row.decided) == (3, 3, 0)
    assert math.isnan(row.all_fraction) and math.isnan(row.ci_low)


# ------------------------------------------------------------------------------ undo / redo


def test_undo_last_goes_back_to_the_label_before_wherever_the_cell_is(
    run: RunResult, state: ReviewState
) -> None:
    c = _cells(run)
    state.set_label(c["a"], HEM, "Ann")
    state.set_label(c["a"], UNCLASSIFIABLE, "Ann")  # a second change to the same cell
    state.confirm(c["b"], "Ann")  # then another cell
    assert state.can_undo and not state.can_redo
    first = state.undo_last("Bo")  # the newest change, on b, although b is not "current"
    assert (first.path, first.action, first.before, first.after) == (
        cell_key(c["b"]),
        "undo",
        HEM,
        None,
    )
    assert not state.is_reviewed(c["b"])
    second = state.undo_last("Bo")  # then a goes back to HEM, not to the model's label
    assert (second.before, second.after) == (UNCLASSIFIABLE, HEM)
    assert state.final_label(c["a"]) == HEM
    assert state.undo_last("Bo").after is None and not state.is_reviewed(c["a"])
    assert state.undo_last("Bo") is None and not state.can_undo
    # Redo replays them in order, recorded as the original actions.
    assert [state.redo("Cy").action for _ in range(3)] == ["label", "label", "confirm"]
    assert state.final_label(c["a"]) == UNCLASSIFIABLE and state.final_label(c["b"]) == HEM
    assert state.redo("Cy") is None
    # The audit trail keeps every change, its undo and its redo.
    assert [e.action for e in state.audit] == ["label"] * 2 + ["confirm"] + ["undo"] * 3 + [
        "label",
        "label",
        "confirm",
    ]


def test_a_new_change_clears_redo_and_a_lock_stops_undo(run: RunResult, state: ReviewState) -> None:
    c = _cells(run)
    state.set_label(c["a"], HEM, "Ann")
    state.undo_last("Ann")
    state.set_label(c["b"], ALL, "Ann")
    assert not state.can_redo  # the undone change cannot come back over a newer one
    state.sign_off("S1", "Dr Cy")
    before = state.audit
    with pytest.raises(SampleLockedError):
        state.undo_last("Ann")
    assert state.audit == before and state.can_undo  # nothing changed, still undoable
    state.reopen("S1", "Dr Cy")
    assert state.undo_last("Ann").after is None


def test_undo_and_redo_replay_from_the_journal(run: RunResult, state: ReviewState) -> None:
    c = _cells(run)
    state.set_label(c["a"], HEM, "Ann")
    state.set_label(c["a"], ALL, "Ann")
    state.undo_last("Ann")
    state.redo("Ann")
    state.undo_last("Ann")
    replayed = ReviewState(threshold=0.5)
    for entry in state.audit:
        replayed.apply(entry)
    assert replayed.reviews == state.reviews and replayed.final_label(c["a"]) == HEM
