"""Cell review: state transitions, audit entries, sign-off locks, summaries and crash-safe
sessions (including a process killed with SIGKILL while it is saving)."""

from __future__ import annotations

import errno
import itertools
import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
import warnings
from dataclasses import fields
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest

from leukgui.core.metrics import sample_summary, wilson_interval
from leukgui.core.results import ALL, HEM, UNCERTAIN, CellResult, FileError, RunInfo, RunResult
from leukgui.core.review import (
    REVIEW_LABELS,
    SESSION_VERSION,
    UNCLASSIFIABLE,
    AuditEntry,
    ReviewError,
    ReviewState,
    SampleLockedError,
    SessionError,
    SessionInUseError,
    SessionRecoveryWarning,
    SessionStore,
    SignOff,
)

REPO = Path(__file__).resolve().parents[1]
T0 = datetime(2024, 5, 6, 9, 30, 0, tzinfo=timezone.utc)


def _clock():
    """A clock that ticks one second per call, so every entry has a distinct known time."""
    ticks = itertools.count()
    return lambda: T0 + timedelta(seconds=next(ticks))


def _cell(
    path: Path, sample: str, p: float, label: str, truth: str | None = None, heat: int = 0
) -> CellResult:
    heatmap = np.zeros((28, 28), np.float32)
    heatmap[heat % 28, heat % 28] = 1.0  # distinct per cell, to prove heatmaps round-trip
    return CellResult(path, sample, p, label, heatmap, 40, 30, truth, subject="P1")


def _info(**kw: object) -> RunInfo:
    values: dict = dict(
        app_version="0.1.0",
        model_name="cnmc",
        model_version="2.1",
        model_sha256="ab" * 32,
        backbone="EfficientNetB0",
        input_size=224,
        threshold=0.5,
        uncertainty_band=(0.4, 0.6),
        demo=False,
        inputs=["/data/images"],
        started=T0,
        finished=T0 + timedelta(seconds=75, microseconds=123456),
        total_inputs=8,
        extra={"model file": "/models/cnmc.leukmodel"},
    )
    values.update(kw)
    return RunInfo(**values)


@pytest.fixture
def run(tmp_path: Path) -> RunResult:
    root = tmp_path / "images"
    outcomes = [
        _cell(root / "S1" / "a.png", "S1", 0.9, ALL, ALL, 1),
        _cell(root / "S1" / "b.png", "S1", 0.1, HEM, HEM, 2),
        _cell(root / "S1" / "c.png", "S1", 0.55, UNCERTAIN, HEM, 3),
        _cell(root / "S1" / "d.png", "S1", 0.45, UNCERTAIN, None, 4),
        _cell(root / "S2" / "e.png", "S2", 0.2, HEM, ALL, 5),
        _cell(root / "S2" / "f.png", "S2", 0.7, ALL, None, 6),
        FileError(root / "S2" / "bad.png", "S2", "truncated PNG"),
        FileError(root / "S3" / "only-error.png", "S3", "not an image"),
    ]
    return RunResult(_info(inputs=[str(root)]), outcomes)


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
        with pytest.raises(SampleLockedError, match=r"signed off by Dr Bo .*reopen it"):
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
        raise SessionError("disk full")

    state.on_change = broken
    with pytest.raises(SessionError, match="disk full"):
        state.set_label(a, UNCLASSIFIABLE, "Ann")
    with pytest.raises(SessionError):
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


# ------------------------------------------------------------------------------ session files


def test_session_round_trip_with_heatmaps_and_datetimes(run: RunResult, tmp_path: Path) -> None:
    run.info.cancelled = True
    rng = np.random.default_rng(0)
    for cell in run.cells:
        cell.heatmap = rng.random((28, 28)).astype(np.float32)
    run.cells[0].heatmap = rng.random((7, 7)).astype(np.float32)  # another size is kept too
    folder = tmp_path / "session"
    store = SessionStore.create(folder, run)
    assert store.folder == folder
    assert sorted(p.name for p in folder.iterdir()) == [
        "heatmaps-1.npz",
        "review.jsonl",
        "run.json",
    ]
    meta = json.loads((folder / "run.json").read_text(encoding="utf-8"))
    assert (meta["format"], meta["version"]) == ("leukgui-session", SESSION_VERSION)

    loaded, state = SessionStore.open(folder)
    assert loaded.info == run.info  # every field, datetimes included
    assert loaded.info.finished.microsecond == 123456
    assert loaded.info.started.tzinfo is not None
    assert loaded.info.uncertainty_band == (0.4, 0.6)
    assert len(loaded.outcomes) == len(run.outcomes)
    for got, want in zip(loaded.outcomes, run.outcomes, strict=True):
        assert type(got) is type(want)
        assert isinstance(got.path, Path) and got.path == want.path
        if isinstance(want, CellResult):
            assert got.heatmap.dtype == np.float32 and got.heatmap.shape == want.heatmap.shape
            np.testing.assert_array_equal(got.heatmap, want.heatmap)
            for name in ("sample", "p_all", "label", "width", "height", "truth", "subject"):
                assert getattr(got, name) == getattr(want, name), name
        else:
            assert got == want
    assert state.audit == [] and state.threshold == run.info.threshold


def test_a_claimed_session_is_in_use_until_closed(run: RunResult, tmp_path: Path) -> None:
    folder = tmp_path / "session"
    first = SessionStore.create(folder, run)
    assert not SessionStore.in_use(folder)
    first.claim()
    first.claim()  # claiming twice in one store is harmless
    assert SessionStore.in_use(folder)
    second = SessionStore(folder)
    with pytest.raises(SessionInUseError, match="open in another LeukGUI window"):
        second.claim()
    first.close()
    assert not SessionStore.in_use(folder)
    second.claim()
    assert SessionStore.in_use(folder)
    second.close()


def test_a_killed_process_leaves_no_claim_behind(run: RunResult, tmp_path: Path) -> None:
    folder = tmp_path / "session"
    SessionStore.create(folder, run).close()
    code = (
        "import sys, time\n"
        "from leukgui.core.review import SessionStore\n"
        "store = SessionStore(sys.argv[1]); store.claim()\n"
        "print('claimed', flush=True); time.sleep(60)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(folder)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout.readline().strip() == "claimed"
        assert SessionStore.in_use(folder)
        with pytest.raises(SessionInUseError):
            SessionStore(folder).claim()
    finally:
        proc.kill()
        proc.wait(30)
    assert not SessionStore.in_use(folder)  # the OS dropped the lock with the process
    store = SessionStore(folder)
    store.claim()
    store.close()


def test_naive_datetimes_round_trip(tmp_path: Path) -> None:
    naive = datetime(2024, 1, 2, 3, 4, 5, 678)
    run = RunResult(_info(started=naive, finished=None, inputs=[]), [])
    SessionStore.create(tmp_path / "s", run)
    loaded, _ = SessionStore.open(tmp_path / "s")
    assert loaded.info.started == naive and loaded.info.started.tzinfo is None
    assert loaded.info.finished is None and loaded.outcomes == []


def test_journal_replay_equals_live_state(run: RunResult, tmp_path: Path) -> None:
    folder = tmp_path / "session"
    store = SessionStore.create(folder, run)
    live = ReviewState(threshold=0.5, on_change=store.append)
    cells = _cells(run)
    live.confirm(cells["c"], "Ann")
    live.set_label(cells["a"], HEM, "Ann")
    live.set_label(cells["a"], UNCLASSIFIABLE, "Bo")
    live.set_label(cells["e"], ALL, "Ann")
    live.undo(cells["e"], "Ann")
    live.sign_off("S1", "Dr Bo")
    live.reopen("S1", "Dr Bo")
    live.set_label(cells["b"], ALL, "Zoë ✓")  # non-ASCII names survive the journal
    live.sign_off("S1", "Dr Bo")
    store.close()

    lines = (folder / "review.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(lines) == len(live.audit) == 9
    assert json.loads(lines[0])["action"] == "confirm"

    loaded, replayed = SessionStore.open(folder)
    assert replayed.audit == live.audit
    assert replayed.reviews == live.reviews
    assert replayed.signoffs == live.signoffs
    assert sample_summary(loaded, replayed) == sample_summary(run, live)

    # The reopened state journals further work to the same folder.
    replayed.reopen("S1", "Cy")
    replayed.set_label(_cells(loaded)["d"], HEM, "Cy")
    _, again = SessionStore.open(folder)
    assert again.audit == replayed.audit and len(again.audit) == 11
    assert again.final_label(_cells(loaded)["d"]) == HEM


def test_torn_last_line_is_dropped_with_a_warning(run: RunResult, tmp_path: Path) -> None:
    folder = tmp_path / "session"
    store = SessionStore.create(folder, run)
    state = ReviewState(threshold=0.5, on_change=store.append)
    cells = _cells(run)
    state.set_label(cells["a"], HEM, "Ann")
    state.set_label(cells["b"], ALL, "Ann")
    store.close()
    journal = folder / "review.jsonl"
    whole = journal.read_bytes()
    with open(journal, "ab") as fh:  # what a crash halfway through a write leaves
        fh.write(b'{"path": "/x/c.png", "sample": "S1", "model_la')

    store2 = SessionStore(folder)
    with pytest.warns(SessionRecoveryWarning, match="incomplete last line"):
        loaded, restored = store2.load()
    assert restored.audit == state.audit

    restored.set_label(_cells(loaded)["c"], HEM, "Bo")  # appending cuts the torn tail first
    store2.close()
    assert journal.read_bytes().startswith(whole)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # clean now: no warning on the next open
        _, final = SessionStore.open(folder)
    assert [e.reviewer for e in final.audit] == ["Ann", "Ann", "Bo"]


def test_complete_last_entry_without_newline_is_kept(run: RunResult, tmp_path: Path) -> None:
    folder = tmp_path / "session"
    store = SessionStore.create(folder, run)
    state = ReviewState(threshold=0.5, on_change=store.append)
    state.set_label(_cells(run)["a"], HEM, "Ann")
    store.close()
    journal = folder / "review.jsonl"
    journal.write_bytes(journal.read_bytes().rstrip(b"\n"))  # crash just before the newline
    store2 = SessionStore(folder)
    _, restored = store2.load()
    assert restored.audit == state.audit
    restored.set_label(_cells(run)["b"], ALL, "Ann")
    store2.close()
    assert len(journal.read_text(encoding="utf-8").splitlines()) == 2
    assert len(SessionStore.open(folder)[1].audit) == 2


def test_damage_before_the_last_line_is_an_error(run: RunResult, tmp_path: Path) -> None:
    folder = tmp_path / "session"
    SessionStore.create(folder, run)
    good = json.dumps(AuditEntry("/x", "S1", ALL, None, HEM, "Ann", "t", "label").__dict__)
    (folder / "review.jsonl").write_text(f"{good}\nnot json\n{good}\n", encoding="utf-8")
    with pytest.raises(SessionError, match="line 2 is damaged"):
        SessionStore.open(folder)
    bad_action = good.replace('"label"', '"delete"')
    (folder / "review.jsonl").write_text(f"{bad_action}\n{good}\n", encoding="utf-8")
    with pytest.raises(SessionError, match="line 1 is damaged.*unknown action"):
        SessionStore.open(folder)


def test_a_failed_save_leaves_the_review_unchanged(run: RunResult, tmp_path: Path) -> None:
    folder = tmp_path / "session"
    store = SessionStore.create(folder, run)
    (folder / "review.jsonl").unlink()
    (folder / "review.jsonl").mkdir()  # the journal cannot be opened for writing
    state = ReviewState(threshold=0.5, on_change=store.append)
    with pytest.raises(SessionError, match="cannot save the review"):
        state.set_label(_cells(run)["a"], HEM, "Ann")
    assert state.audit == [] and not state.is_reviewed(_cells(run)["a"])


def test_a_failed_fsync_is_rolled_back(run: RunResult, tmp_path: Path, monkeypatch) -> None:
    folder = tmp_path / "session"
    store = SessionStore.create(folder, run)
    state = ReviewState(threshold=0.5, on_change=store.append)
    a, b = run.cells[:2]
    state.set_label(a, HEM, "Ann")
    before = (folder / "review.jsonl").read_bytes()

    def no_space(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(SessionError, match="No space left"):
        state.set_label(b, ALL, "Ann")
    monkeypatch.undo()
    # The line was written but never confirmed: it is cut again, so it cannot replay later.
    assert (folder / "review.jsonl").read_bytes() == before
    assert not state.is_reviewed(b) and len(state.audit) == 1
    state.set_label(b, UNCLASSIFIABLE, "Ann")  # the next save works again
    assert [e.after for e in SessionStore.open(folder)[1].audit] == [HEM, UNCLASSIFIABLE]


def test_create_reports_an_unusable_folder(run: RunResult, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder", encoding="utf-8")
    with pytest.raises(SessionError, match="cannot create a session in"):
        SessionStore.create(blocker / "session", run)


def test_newer_session_format_is_refused(run: RunResult, tmp_path: Path) -> None:
    folder = tmp_path / "session"
    SessionStore.create(folder, run)
    meta_path = folder / "run.json"
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    meta["version"] = SESSION_VERSION + 1
    meta_path.write_text(json.dumps(meta), encoding="utf-8")
    with pytest.raises(SessionError, match=r"newer LeukGUI \(session format 2; .*Update LeukGUI"):
        SessionStore.open(folder)


def test_create_never_overwrites_and_open_needs_a_session(run: RunResult, tmp_path: Path) -> None:
    folder = tmp_path / "session"
    store = SessionStore.create(folder, run)
    ReviewState(threshold=0.5, on_change=store.append).set_label(run.cells[0], HEM, "Ann")
    with pytest.raises(SessionError, match="already holds a review session"):
        SessionStore.create(folder, run)
    assert len(SessionStore.open(folder)[1].audit) == 1  # the review is still there
    with pytest.raises(SessionError, match="not a LeukGUI session folder"):
        SessionStore.open(tmp_path)
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "run.json").write_text("{}", encoding="utf-8")
    with pytest.raises(SessionError, match="not a LeukGUI session file"):
        SessionStore.open(tmp_path / "junk")


def test_save_run_replaces_the_snapshot_and_keeps_the_journal(
    run: RunResult, tmp_path: Path
) -> None:
    folder = tmp_path / "session"
    first = RunResult(run.info, run.outcomes[:2])
    store = SessionStore.create(folder, first)
    state = ReviewState(threshold=0.5, on_change=store.append)
    state.set_label(run.cells[0], HEM, "Ann")
    run.info.finished = T0 + timedelta(hours=1)
    store.save_run(run)  # more cells were analyzed since
    assert sorted(p.name for p in folder.glob("heatmaps-*.npz")) == ["heatmaps-2.npz"]
    loaded, restored = SessionStore.open(folder)
    assert len(loaded.outcomes) == len(run.outcomes) == 8
    assert loaded.info.finished == T0 + timedelta(hours=1)
    np.testing.assert_array_equal(loaded.cells[5].heatmap, run.cells[5].heatmap)
    assert restored.final_label(loaded.cells[0]) == HEM


# ------------------------------------------------------------------------------ real crash

_WRITER = textwrap.dedent(
    """
    import sys
    from datetime import datetime, timezone
    from pathlib import Path

    import numpy as np

    from leukgui.core.results import ALL, CellResult, RunInfo, RunResult
    from leukgui.core.review import ReviewState, SessionStore

    folder = Path(sys.argv[1])
    heat = np.zeros((28, 28), np.float32)
    cells = [
        CellResult(folder.parent / f"c{i}.png", "S1", 0.9, ALL, heat, 40, 30) for i in range(4)
    ]
    info = RunInfo("0.1.0", "m", "1", "0" * 64, "b", 224, 0.5, (0.4, 0.6), False, [],
                   datetime(2024, 1, 1, tzinfo=timezone.utc))
    run = RunResult(info, cells)
    store = SessionStore.create(folder, run)
    state = ReviewState.for_run(run, on_change=store.append)
    labels = ["HEM", "UNCLASSIFIABLE", "ALL"]
    for n in range(1, 100_000):
        entry = state.set_label(cells[n % 4], labels[n % 3], "tech")
        assert entry is not None
        print(n, flush=True)
        if not sys.stdin.readline():  # lockstep: the test decides when to go on
            break
    """
)


def test_killed_process_loses_nothing_it_reported(tmp_path: Path) -> None:
    folder = tmp_path / "session"
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(folder)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    target = 40
    last = 0
    deadline = time.monotonic() + 60
    try:
        while last < target and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break  # the writer died on its own
            last = int(line)
            if last < target:
                proc.stdin.write("\n")
                proc.stdin.flush()
        # The writer now waits right after its last append: SIGKILL (POSIX) gives it no
        # chance to flush or clean up, so anything held in a user-space buffer would be lost.
        proc.kill()
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        stderr = proc.stderr.read()
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            stream.close()
    assert last >= target, f"writer stopped after {last} entries: {stderr}"
    if sys.platform != "win32":
        assert proc.returncode == -signal.SIGKILL

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SessionRecoveryWarning)  # a torn last line is fine
        run, state = SessionStore.open(folder)
    audit = state.audit
    assert len(audit) >= last  # lockstep makes it exactly `last`; more would still be fine
    labels = [HEM, UNCLASSIFIABLE, ALL]
    for n, entry in enumerate(audit, 1):  # exactly what was written, in order
        assert entry.after == labels[n % 3]
        assert entry.path == str((tmp_path / f"c{n % 4}.png").absolute())
    assert len(run.cells) == 4
