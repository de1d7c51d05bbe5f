"""Review sessions on disk: the folder format (snapshot, journal, heatmaps, OS lock) and the
lifecycle a window drives (create, journal, snapshot, close; after a crash: find, restore,
decline or mark damaged), including a process killed with SIGKILL while it is saving."""

from __future__ import annotations

import errno
import gc
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import warnings
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from review_samples import T0, review_run
from review_samples import cell as _cell
from review_samples import info as _info

from leukgui.core.metrics import sample_summary
from leukgui.core.paths import user_dir
from leukgui.core.results import (
    ALL,
    HEM,
    NO_WHITE_CELL,
    NOT_AN_IMAGE,
    TOO_LARGE,
    UNREADABLE,
    CellResult,
    FileError,
    RunResult,
)
from leukgui.core.review import UNCLASSIFIABLE, AuditEntry, ReviewState, cell_key
from leukgui.core.sessions import (
    CLOSED_MARKER,
    SESSION_VERSION,
    ReviewSession,
    SessionError,
    SessionInUseError,
    SessionRecoveryWarning,
    SessionStore,
    decline,
    mark_damaged,
    sessions_root,
    unfinished_sessions,
)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def run(tmp_path: Path) -> RunResult:
    return review_run(tmp_path / "images")


def _cells(run: RunResult) -> dict[str, CellResult]:
    return {c.path.stem: c for c in run.cells}


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
        "from leukgui.core.sessions import SessionStore\n"
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


def test_damage_before_the_last_line_skips_only_that_line(run: RunResult, tmp_path: Path) -> None:
    folder = tmp_path / "session"
    SessionStore.create(folder, run)
    good = json.dumps(AuditEntry("/x", "S1", ALL, None, HEM, "Ann", "t", "label").__dict__)
    later = good.replace('"Ann"', '"Bo"')
    (folder / "review.jsonl").write_text(f"{good}\nnot json\n{later}\n", encoding="utf-8")
    store = SessionStore(folder)
    with pytest.warns(SessionRecoveryWarning, match="line 2"):
        _, state = store.load()
    assert [e.reviewer for e in state.audit] == ["Ann", "Bo"]  # the later entry is kept
    assert [n for n, _ in store.damaged_lines] == [2]
    bad_action = good.replace('"label"', '"delete"')
    (folder / "review.jsonl").write_text(f"{bad_action}\n{later}\n", encoding="utf-8")
    store = SessionStore(folder)
    with pytest.warns(SessionRecoveryWarning, match="line 1: unknown action"):
        _, state = store.load()
    assert [e.reviewer for e in state.audit] == ["Bo"]


def test_journal_lines_carry_a_checksum_that_is_enforced(run: RunResult, tmp_path: Path) -> None:
    folder = tmp_path / "session"
    store = SessionStore.create(folder, run)
    state = ReviewState(threshold=0.5, on_change=store.append)
    cells = _cells(run)
    state.set_label(cells["a"], HEM, "Ann")
    state.set_label(cells["b"], ALL, "Ann")
    state.set_label(cells["c"], HEM, "Ann")
    store.close()
    journal = folder / "review.jsonl"
    lines = journal.read_bytes().splitlines(keepends=True)
    assert all(b'"crc32": "' in line for line in lines)
    # A flipped label that is still valid JSON and a valid entry: only the checksum knows.
    lines[1] = lines[1].replace(b'"after": "ALL"', b'"after": "HEM"')
    journal.write_bytes(b"".join(lines))
    store2 = SessionStore(folder)
    with pytest.warns(SessionRecoveryWarning, match="line 2: checksum does not match"):
        _, restored = store2.load()
    assert [e.path for e in restored.audit] == [state.audit[0].path, state.audit[2].path]
    assert restored.final_label(cells["b"]) == cells["b"].label  # the forged change is ignored
    # After a checksummed line, a line without a checksum is not accepted either.
    plain = json.dumps(state.audit[1].to_json()).encode() + b"\n"
    journal.write_bytes(lines[0] + plain + lines[2])
    with pytest.warns(SessionRecoveryWarning, match="line 2: no checksum"):
        _, restored = SessionStore(folder).load()
    assert len(restored.audit) == 2


def test_old_journals_without_checksums_still_load_and_grow(run: RunResult, tmp_path: Path) -> None:
    folder = tmp_path / "session"
    SessionStore.create(folder, run)
    cells = _cells(run)
    old = [
        AuditEntry(cell_key(cells[name]), "S1", cells[name].label, None, HEM, "Ann", "t", "label")
        for name in ("a", "b")
    ]
    journal = folder / "review.jsonl"
    journal.write_text("".join(json.dumps(e.to_json()) + "\n" for e in old), encoding="utf-8")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        store = SessionStore(folder)
        loaded, state = store.load()
    assert state.audit == old
    state.set_label(_cells(loaded)["c"], ALL, "Bo")  # appended with a checksum
    store.close()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _, again = SessionStore.open(folder)
    assert [e.reviewer for e in again.audit] == ["Ann", "Ann", "Bo"]


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
    from leukgui.core.review import ReviewState
    from leukgui.core.sessions import SessionStore

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


# ------------------------------------------------------------------------------ error kinds


def test_error_kinds_and_cell_notes_round_trip(run: RunResult, tmp_path: Path) -> None:
    run.outcomes.append(FileError(tmp_path / "huge.tif", "S3", "over the pixel limit", TOO_LARGE))
    run.cells[0].note = "field capped at 200 candidates"
    SessionStore.create(tmp_path / "s", run).close()
    meta = json.loads((tmp_path / "s" / "run.json").read_text(encoding="utf-8"))
    assert [o["error_kind"] for o in meta["outcomes"] if o["kind"] == "error"] == [
        UNREADABLE,
        NOT_AN_IMAGE,
        TOO_LARGE,
    ]
    loaded, _ = SessionStore.open(tmp_path / "s")
    assert [e.kind for e in loaded.errors] == [UNREADABLE, NOT_AN_IMAGE, TOO_LARGE]
    assert loaded.cells[0].note == "field capped at 200 candidates"
    assert loaded.cells[1].note == ""


def test_a_session_saved_before_error_kinds_still_opens(run: RunResult, tmp_path: Path) -> None:
    run.outcomes.append(
        FileError(tmp_path / "f.png", "S3", "no white cell found in this field", NO_WHITE_CELL)
    )
    SessionStore.create(tmp_path / "s", run).close()
    meta_path = tmp_path / "s" / "run.json"
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    for outcome in meta["outcomes"]:  # what an older LeukGUI wrote
        outcome.pop("error_kind", None)
    meta_path.write_text(json.dumps(meta), encoding="utf-8")
    loaded, _ = SessionStore.open(tmp_path / "s")
    assert [(e.reason, e.kind) for e in loaded.errors] == [
        ("truncated PNG", UNREADABLE),
        ("not an image", UNREADABLE),
        ("no white cell found in this field", NO_WHITE_CELL),
    ]


# ------------------------------------------------------------------------------ lifecycle


def _review_some(session: ReviewSession) -> None:
    cells = _cells(session.run)
    session.review.set_label(cells["a"], HEM, "Ann")
    session.review.confirm(cells["c"], "Ann")
    session.review.set_label(cells["e"], UNCLASSIFIABLE, "Bo")
    session.review.sign_off("S1", "Dr Cy")


def test_sessions_live_under_the_user_folder() -> None:
    assert sessions_root() == user_dir() / "sessions"


def test_a_dropped_session_is_found_and_restored_with_its_reviews(
    run: RunResult, tmp_path: Path
) -> None:
    root = tmp_path / "sessions"
    session = ReviewSession.create(root, run)
    assert session.folder.parent == root and session.review.threshold == 0.5
    _review_some(session)
    live = session.review
    audit, reviews, signoffs = live.audit, live.reviews, live.signoffs
    summary = sample_summary(run, live)
    assert unfinished_sessions(root) == []  # claimed by this live session: busy, not unfinished
    folder = session.folder
    del session, live  # the window was killed: no close, no marker, the lock dropped
    gc.collect()

    assert unfinished_sessions(root) == [folder]
    restored = ReviewSession.restore(folder)
    assert restored.folder == folder
    assert restored.review.audit == audit and len(audit) == 4
    assert restored.review.reviews == reviews
    assert restored.review.signoffs == signoffs
    assert sample_summary(restored.run, restored.review) == summary
    assert unfinished_sessions(root) == []  # claimed again
    # The restored session journals further work to the same folder.
    restored.review.reopen("S1", "Dr Cy")
    restored.close()
    assert len(SessionStore.open(folder)[1].audit) == 5
    assert unfinished_sessions(root) == []  # closed cleanly now


def test_journal_snapshots_cells_that_arrived_after_the_last_snapshot(
    run: RunResult, tmp_path: Path
) -> None:
    streamed = RunResult(run.info, run.outcomes[:2])  # the first chunk of a running analysis
    session = ReviewSession.create(tmp_path, streamed)
    assert len(SessionStore(session.folder).read_run().outcomes) == 2
    streamed.outcomes.extend(run.outcomes[2:])  # more cells arrive
    assert session.unsaved == 6
    late = _cells(streamed)["f"]
    session.review.set_label(late, HEM, "Ann")  # a review of a cell the snapshot lacks
    assert session.unsaved == 0
    on_disk, replayed = SessionStore.open(session.folder)
    assert len(on_disk.outcomes) == 8
    assert replayed.final_label(_cells(on_disk)["f"]) == HEM
    session.close()


def test_a_failed_snapshot_stops_the_change_before_it_is_journaled(
    run: RunResult, tmp_path: Path, monkeypatch
) -> None:
    streamed = RunResult(run.info, run.outcomes[:2])
    session = ReviewSession.create(tmp_path, streamed)
    streamed.outcomes.extend(run.outcomes[2:])

    def disk_full(_run: RunResult) -> None:
        raise SessionError("cannot save the session: disk full")

    monkeypatch.setattr(session.store, "save_run", disk_full)
    late = _cells(streamed)["f"]
    with pytest.raises(SessionError, match="disk full"):
        session.review.set_label(late, HEM, "Ann")
    assert not session.review.is_reviewed(late) and session.review.audit == []
    assert (session.folder / "review.jsonl").read_bytes() == b""
    with pytest.raises(SessionError, match="disk full"):  # close reports it too ...
        session.close()
    assert not SessionStore.in_use(session.folder)  # ... and still lets the session go


def test_close_saves_releases_and_marks_the_session(run: RunResult, tmp_path: Path) -> None:
    streamed = RunResult(run.info, run.outcomes[:5])
    session = ReviewSession.create(tmp_path, streamed)
    _review_some(session)
    streamed.outcomes.extend(run.outcomes[5:])
    assert SessionStore.in_use(session.folder)
    session.close()
    session.close()  # twice is harmless
    assert not SessionStore.in_use(session.folder)
    assert (session.folder / CLOSED_MARKER).is_file()
    assert len(SessionStore(session.folder).read_run().outcomes) == 8  # the last snapshot
    assert unfinished_sessions(tmp_path) == []
    assert session.review.on_change is None  # later changes no longer go to a closed journal


def test_declined_and_damaged_sessions_are_not_offered_again(
    run: RunResult, tmp_path: Path
) -> None:
    folders = []
    for _ in range(3):
        session = ReviewSession.create(tmp_path, run)
        folders.append(session.folder)
        session.store.close()  # as if killed: claim gone, no marker
    assert unfinished_sessions(tmp_path) == sorted(folders, reverse=True)
    decline(folders[0])
    mark_damaged(folders[1], "run.json is not JSON")
    assert unfinished_sessions(tmp_path) == [folders[2]]
    assert (folders[0] / CLOSED_MARKER).read_text(encoding="utf-8") == "declined"
    marker = (folders[1] / CLOSED_MARKER).read_text(encoding="utf-8")
    assert marker == "damaged: run.json is not JSON"
    assert unfinished_sessions(tmp_path / "nothing-here") == []


def test_restore_refuses_a_session_in_use_and_a_damaged_one(run: RunResult, tmp_path: Path) -> None:
    first = ReviewSession.create(tmp_path, run)
    with pytest.raises(SessionInUseError, match="open in another LeukGUI window"):
        ReviewSession.restore(first.folder)
    assert SessionStore.in_use(first.folder)  # the first window keeps it
    first.store.close()

    damaged = tmp_path / "20240101-000000-000000"
    damaged.mkdir()
    (damaged / "run.json").write_text("{ this is not json", encoding="utf-8")
    with pytest.raises(SessionError, match="cannot read"):
        ReviewSession.restore(damaged)
    assert not SessionStore.in_use(damaged)  # the failed restore let go of it
    with pytest.raises(SessionError, match="not a LeukGUI session folder"):
        ReviewSession.restore(tmp_path / "empty")


def test_a_file_name_that_is_not_utf8_round_trips(run: RunResult, tmp_path: Path) -> None:
    """Latin-1 bytes in a name (a shared drive, a USB stick) must neither block reviewing nor
    change the name: the session stores it exactly and reopens the same file."""
    raw = os.fsencode(tmp_path) + b"/images/S9/Patient_M\xfcller.bmp"
    odd = Path(os.fsdecode(raw))  # holds a lone surrogate, as os.listdir gives it
    run.outcomes.append(_cell(odd, "S9", 0.8, ALL, None, 9))
    session = ReviewSession.create(tmp_path / "sessions", run)
    session.review.set_label(run.cells[-1], HEM, "Ann")  # journaled: must not raise
    folder = session.folder
    session.close()
    restored = ReviewSession.restore(folder)
    assert os.fsencode(restored.run.cells[-1].path) == raw
    assert restored.review.final_label(restored.run.cells[-1]) == HEM
    restored.close()


def test_recent_sessions_lists_closed_and_open_ones_newest_first(
    run: RunResult, tmp_path: Path
) -> None:
    from leukgui.core.sessions import recent_sessions

    root = tmp_path / "sessions"
    older = ReviewSession.create(root, run)
    _review_some(older)
    older.close()
    newer = ReviewSession.create(root, run)
    (root / "20000101-000000-000000").mkdir()  # not a session: left out
    damaged = root / "20000102-000000-000000"
    damaged.mkdir()
    mark_damaged(damaged, "torn")
    found = recent_sessions(root)
    assert [s.folder for s in found] == [newer.folder, older.folder]
    assert [s.in_use for s in found] == [True, False]
    assert (found[1].cells, found[1].errors, found[1].changes) == (6, 2, 4)
    text = found[1].describe()
    assert "6 cells" in text and "4 review changes" in text and "cnmc v2.1" in text
    assert recent_sessions(root, limit=1) == found[:1]
    newer.close()


def test_a_session_summary_is_read_again_only_when_the_session_changed(
    run: RunResult, tmp_path: Path, monkeypatch
) -> None:
    from leukgui.core import sessions

    session = ReviewSession.create(tmp_path, run)
    reads = []
    real = sessions._read_summary
    monkeypatch.setattr(sessions, "_read_summary", lambda f: reads.append(f) or real(f))
    first = sessions.session_summary(session.folder)
    assert sessions.session_summary(session.folder) == first and len(reads) == 1
    _review_some(session)  # the journal grows: read again
    assert sessions.session_summary(session.folder).changes == 4 and len(reads) == 2
    session.close()
