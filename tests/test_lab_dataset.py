"""The lab data set (issue 18, item 1): reviewed cells from sessions and reports collected into
a folder the trainer reads, driven as a user would: analyse (by hand, no model), review in a
session, add, re-add, correct, break files, lock the folder, add from two processes at once."""

from __future__ import annotations

import argparse
import csv
import errno
import io
import multiprocessing
import os
import time
from pathlib import Path

import numpy as np
import pytest
from review_samples import info as _info

from leukgui.cli import dataset as dataset_cli
from leukgui.core.atomic import try_lock, unlock
from leukgui.core.cells import cell_image
from leukgui.core.exports import png_bytes
from leukgui.core.imaging import decode_image
from leukgui.core.lab_dataset import (
    COLUMNS,
    DATASET_CSV,
    HISTORY_CSV,
    DatasetBusyError,
    DatasetError,
    LabDataset,
    pixel_sha256,
    read_report,
    read_session,
)
from leukgui.core.report import write_excel
from leukgui.core.results import (
    ALL,
    HEM,
    IMAGE_CHANGED,
    UNCERTAIN,
    CellResult,
    FileStamp,
    RunResult,
)
from leukgui.core.review import UNCLASSIFIABLE
from leukgui.core.sessions import ReviewSession
from leukgui.core.synthetic import make_cell

MODEL_SHA = "ab" * 32  # review_samples.info's model


def _write_png(path: Path, rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png_bytes(rgb))


def _analysed(path: Path, sample: str, p: float, label: str, **kw: object) -> CellResult:
    """What the engine records for a cell: its call and the file's stamp (SHA-256)."""
    rgb = decode_image(path)
    heat = np.zeros((8, 8), np.float32)
    return CellResult(
        path, sample, p, label, heat, rgb.shape[1], rgb.shape[0], stamp=FileStamp.of(path), **kw
    )


def _field_cell(root: Path, rng: np.random.Generator) -> CellResult:
    """A white cell found in a smear field: box and mask in a bigger image."""
    synthetic = make_cell(HEM, rng, size=96)
    field = np.full((160, 200, 3), 230, np.uint8)
    field[30:126, 60:156] = np.where(synthetic.mask[..., None], synthetic.image, 230)
    path = root / "S2" / "field.png"
    _write_png(path, field)
    return _analysed(
        path,
        "S2",
        0.1,
        HEM,
        box=(60, 30, 156, 126),
        cell_index=1,
        mask_bits=np.packbits(synthetic.mask).tobytes(),
    )


def _run(root: Path, seed: int = 0, n_extra: int = 0) -> RunResult:
    """a: ALL, b: HEM-looking called ALL, c: HEM (left unreviewed), d: UNCERTAIN (judged
    UNCLASSIFIABLE), field #1 in S2; plus `n_extra` more ALL cells e0.. in S3."""
    rng = np.random.default_rng(seed)
    cells = []
    for name, sample, look, p, label in (
        ("a", "S1", ALL, 0.9, ALL),
        ("b", "S1", HEM, 0.7, ALL),
        ("c", "S1", HEM, 0.2, HEM),
        ("d", "S2", ALL, 0.5, UNCERTAIN),
    ):
        path = root / sample / f"{name}.png"
        _write_png(path, make_cell(look, rng, size=64).image)
        cells.append(_analysed(path, sample, p, label))
    cells.append(_field_cell(root, rng))
    for i in range(n_extra):
        path = root / "S3" / f"e{i}.png"
        _write_png(path, make_cell(ALL, rng, size=48).image)
        cells.append(_analysed(path, "S3", 0.8, ALL))
    return RunResult(_info(inputs=[str(root)]), cells)


def _reviewed_session(tmp_path: Path, root: Path, **kw: object) -> tuple[Path, RunResult]:
    """A closed session in which Ada confirmed a, Bob corrected b to HEM, c stayed
    unreviewed, Ada judged d UNCLASSIFIABLE and confirmed the field cell (and every extra)."""
    run = _run(root, **kw)
    session = ReviewSession.create(tmp_path / "sessions", run)
    by = {c.path.stem: c for c in run.cells}
    review = session.review
    review.confirm(by["a"], "Ada")
    review.set_label(by["b"], HEM, "Bob")
    review.set_label(by["d"], UNCLASSIFIABLE, "Ada")
    review.confirm(by["field"], "Ada")
    for name, c in by.items():
        if name.startswith("e"):
            review.confirm(c, "Eve")
    session.close()
    return session.folder, run


def _csv_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8-sig") as fh:
        return list(csv.DictReader(fh))


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


@pytest.fixture
def reviewed(tmp_path: Path) -> tuple[Path, RunResult]:
    return _reviewed_session(tmp_path, tmp_path / "images")


# ------------------------------------------------------------------------------ adding


def test_adds_exactly_the_reviewed_cells_with_their_review(reviewed, tmp_path: Path) -> None:
    folder, run = reviewed
    by = {c.path.stem: c for c in run.cells}
    dataset = LabDataset.create(tmp_path / "lab")
    cells, problems = read_session(folder)
    assert problems == []
    summary = dataset.add_reviewed(cells, {"S1": "patient7"})

    assert [e.image for e in summary.added] == [by["a"].key, by["b"].key, by["field"].key]
    reasons = {s.image: s.reason for s in summary.skipped}
    assert reasons == {
        by["c"].key: "not reviewed (only the model's call)",
        by["d"].key: "reviewed as UNCLASSIFIABLE",
    }
    rows = {r["image"]: r for r in _csv_rows(dataset.csv_path)}
    assert set(rows) == {by["a"].key, by["b"].key, by["field"].key}
    a, b, f = rows[by["a"].key], rows[by["b"].key], rows[by["field"].key]
    assert (a["label"], a["subject"], a["reviewer"], a["model_label"]) == (
        ALL,
        "patient7",
        "Ada",
        ALL,
    )
    assert (b["label"], b["subject"], b["reviewer"], b["model_label"]) == (
        HEM,
        "patient7",
        "Bob",
        ALL,
    )
    assert (f["label"], f["subject"], f["cell_index"]) == (HEM, "S2", "1")  # sample by default
    assert float(a["model_p_all"]) == pytest.approx(0.9)
    assert float(b["model_p_all"]) == pytest.approx(0.7)
    for row in rows.values():
        assert row["model_name"] == "cnmc" and row["model_sha256"] == MODEL_SHA
        assert row["source"] == str(folder.absolute())
        assert row["label_version"] == "1"
        assert row["reviewed_at"].endswith("+00:00")
    assert list(_csv_rows(dataset.csv_path)[0]) == list(COLUMNS)
    # Each PNG is the cell as the model saw it (the crop for the field cell), named by hash.
    for stem in ("a", "b", "field"):
        row = rows[by[stem].key]
        seen = cell_image(by[stem])
        assert row["path"] == f"cells/{pixel_sha256(seen)}.png" == f"cells/{row['sha256']}.png"
        assert np.array_equal(decode_image(dataset.folder / row["path"]), seen)
    assert decode_image(dataset.folder / f["path"]).shape == cell_image(by["field"]).shape
    assert decode_image(dataset.folder / f["path"]).shape != decode_image(by["field"].path).shape
    assert len(list((dataset.folder / "cells").iterdir())) == 3


def test_re_adding_the_same_session_adds_nothing(reviewed, tmp_path: Path) -> None:
    folder, _ = reviewed
    dataset = LabDataset.create(tmp_path / "lab")
    dataset.add_reviewed(read_session(folder)[0])
    before = _snapshot(dataset.folder)
    again = dataset.add_reviewed(read_session(folder)[0])
    assert again.added == [] and again.relabelled == []
    assert len(again.already_present) == 3
    files = _snapshot(dataset.folder)
    files.pop("dataset.lock", None), before.pop("dataset.lock", None)
    assert files == before  # not even rewritten


def test_a_corrected_label_becomes_version_2_with_history(reviewed, tmp_path: Path) -> None:
    folder, run = reviewed
    by = {c.path.stem: c for c in run.cells}
    dataset = LabDataset.create(tmp_path / "lab")
    dataset.add_reviewed(read_session(folder)[0], {"S1": "patient7"})
    session = ReviewSession.restore(folder)
    cell_a = next(c for c in session.run.cells if c.key == by["a"].key)
    session.review.set_label(cell_a, HEM, "Carol")
    session.close()

    summary = dataset.add_reviewed(read_session(folder)[0])  # no mapping this time
    assert summary.added == [] and len(summary.already_present) == 2
    [(old, new)] = summary.relabelled
    assert (old.label, old.label_version, new.label, new.label_version) == (ALL, 1, HEM, 2)
    assert new.reviewer == "Carol" and new.subject == "patient7"  # the cell keeps its subject
    rows = _csv_rows(dataset.csv_path)
    assert len(rows) == 3  # one row per cell: the current label
    a = next(r for r in rows if r["image"] == by["a"].key)
    assert (a["label"], a["label_version"], a["reviewer"]) == (HEM, "2", "Carol")
    history = [r for r in _csv_rows(dataset.history_path) if r["image"] == by["a"].key]
    assert [(h["label"], h["label_version"], h["reviewer"]) for h in history] == [
        (ALL, "1", "Ada"),
        (HEM, "2", "Carol"),
    ]
    # The CLI shows that history.
    out = io.StringIO()
    assert _cli(["show", "--dataset", str(dataset.folder)], out) == 0
    text = out.getvalue()
    assert "v1 ALL (Ada" in text and "v2 HEM (Carol" in text
    assert "patient7: 0 / 2" in text and "S2: 0 / 1" in text and "Carol: 1" in text


def test_changed_or_missing_images_are_listed_and_the_others_added(
    reviewed, tmp_path: Path
) -> None:
    folder, run = reviewed
    by = {c.path.stem: c for c in run.cells}
    other = make_cell(ALL, np.random.default_rng(99), size=64).image
    _write_png(by["b"].path, other)  # b replaced by another picture under the same name
    os.utime(by["b"].path, ns=(by["b"].stamp.mtime_ns, by["b"].stamp.mtime_ns))
    by["a"].path.unlink()  # a gone
    dataset = LabDataset.create(tmp_path / "lab")
    summary = dataset.add_reviewed(read_session(folder)[0])
    assert [e.image for e in summary.added] == [by["field"].key]
    reasons = {s.image: s.reason for s in summary.skipped}
    assert IMAGE_CHANGED in reasons[by["b"].key]
    assert reasons[by["a"].key].startswith("image not added:")
    assert [r["image"] for r in _csv_rows(dataset.csv_path)] == [by["field"].key]
    assert all(s.problem for s in summary.skipped if s.image in (by["a"].key, by["b"].key))
    out = io.StringIO()  # the command says which and why, and exits 1
    assert _cli(["add", str(folder), "--dataset", str(dataset.folder)], out) == 1
    assert f"skipped    {by['b'].key}: image not added: {IMAGE_CHANGED}" in out.getvalue()


def test_an_older_review_never_overwrites_a_newer_one(reviewed, tmp_path: Path) -> None:
    """Re-adding an old report after a later correction keeps the correction."""
    folder, run = reviewed
    by = {c.path.stem: c for c in run.cells}
    dataset = LabDataset.create(tmp_path / "lab")
    session = ReviewSession.restore(folder)
    old_report = tmp_path / "before.xlsx"
    write_excel(session.run, old_report, review=session.review, images=False)
    time.sleep(1.1)  # review times have one-second resolution: Carol's must be later
    cell_a = next(c for c in session.run.cells if c.key == by["a"].key)
    session.review.set_label(cell_a, HEM, "Carol")
    session.close()
    dataset.add_reviewed(read_session(folder)[0])
    summary = dataset.add_reviewed(read_report(old_report)[0])
    assert summary.relabelled == [] and summary.added == []
    [stale] = [s for s in summary.skipped if s.image == by["a"].key]
    assert "newer review" in stale.reason and "Carol" in stale.reason
    a = next(e for e in dataset.entries() if e.image == by["a"].key)
    assert (a.label, a.label_version) == (HEM, 1)


# ------------------------------------------------------------------------------ reports


def test_a_reviewed_report_adds_its_single_cell_images(reviewed, tmp_path: Path) -> None:
    folder, run = reviewed
    by = {c.path.stem: c for c in run.cells}
    session = ReviewSession.restore(folder)
    report = tmp_path / "report.xlsx"
    write_excel(session.run, report, review=session.review)  # with thumbnails, as by default
    session.close()

    cells, problems = read_report(report)
    assert [p.image for p in problems] == [str(by["field"].path.absolute())]
    assert "mask" in problems[0].reason  # a smear-field cell cannot be rebuilt from a report
    dataset = LabDataset.create(tmp_path / "lab")
    summary = dataset.add_reviewed(cells)
    assert sorted(e.image for e in summary.added) == sorted([by["a"].key, by["b"].key])
    assert {s.image: s.reason for s in summary.skipped} == {
        by["c"].key: "not reviewed (only the model's call)",
        by["d"].key: "reviewed as UNCLASSIFIABLE",
    }
    rows = {r["image"]: r for r in _csv_rows(dataset.csv_path)}
    b = rows[by["b"].key]
    assert (b["label"], b["reviewer"], b["model_label"], b["subject"]) == (HEM, "Bob", ALL, "S1")
    assert float(b["model_p_all"]) == pytest.approx(0.7)
    assert b["model_sha256"] == MODEL_SHA and b["source"] == str(report.absolute())
    assert b["image_sha256"] == by["b"].sha256
    # The same cells through the session are the same cells: nothing new.
    again = dataset.add_reviewed(read_session(folder)[0])
    assert [e.image for e in again.added] == [by["field"].key]
    assert len(again.already_present) == 2


def test_a_report_without_a_review_is_refused_clearly(tmp_path: Path) -> None:
    run = _run(tmp_path / "images")
    report = tmp_path / "plain.xlsx"
    write_excel(run, report, images=False)
    with pytest.raises(DatasetError, match="carries no review"):
        read_report(report)


# ------------------------------------------------------------------------------ safety


def test_read_only_folder_gives_a_clear_error_and_changes_nothing(
    reviewed, tmp_path: Path, monkeypatch
) -> None:
    folder, _ = reviewed
    dataset = LabDataset.create(tmp_path / "lab")
    dataset.add_reviewed(read_session(folder)[0][:1])
    before = _snapshot(dataset.folder)
    real_open = os.open
    lab = str(dataset.folder)

    def read_only_fs(path, flags, *args, **kw):  # root ignores chmod: inject EROFS instead
        writes = flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT)
        if writes and os.fspath(path).startswith(lab):
            raise OSError(errno.EROFS, "Read-only file system", os.fspath(path))
        return real_open(path, flags, *args, **kw)

    monkeypatch.setattr(os, "open", read_only_fs)
    with pytest.raises(DatasetError, match="read-only.*nothing was changed"):
        dataset.add_reviewed(read_session(folder)[0])
    monkeypatch.undo()
    assert _snapshot(dataset.folder) == before


@pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() == 0,
    reason="root ignores folder permissions (the injected test above covers it)",
)
def test_read_only_folder_by_permissions(reviewed, tmp_path: Path) -> None:
    folder, _ = reviewed
    dataset = LabDataset.create(tmp_path / "lab")
    dataset.folder.chmod(0o555)
    try:
        with pytest.raises(DatasetError, match="read-only"):
            dataset.add_reviewed(read_session(folder)[0])
    finally:
        dataset.folder.chmod(0o755)
    assert list(dataset.folder.iterdir()) == []


def test_missing_folder_is_an_error_not_a_new_data_set(reviewed, tmp_path: Path) -> None:
    folder, _ = reviewed
    gone = tmp_path / "unplugged-drive" / "lab"
    with pytest.raises(DatasetError, match="missing.*connected"):
        LabDataset(gone).add_reviewed(read_session(folder)[0])
    with pytest.raises(DatasetError, match="does not exist"):
        LabDataset.create(gone)
    assert not gone.parent.exists()
    out, err = io.StringIO(), io.StringIO()
    code = _cli(["add", str(folder), "--dataset", str(gone)], out, err)
    assert code == 5 and "is missing" in err.getvalue()
    assert not gone.parent.exists()


def test_a_busy_data_set_says_so_after_the_timeout(reviewed, tmp_path: Path) -> None:
    folder, _ = reviewed
    dataset = LabDataset.create(tmp_path / "lab")
    fd = try_lock(dataset.lock_path)  # another writer holds it
    assert fd is not None
    try:
        with pytest.raises(DatasetBusyError, match="busy"):
            dataset.add_reviewed(read_session(folder)[0], timeout_s=0.3)
    finally:
        unlock(fd)
    assert not dataset.csv_path.exists()


def _add_in_process(session: str, lab: str, start, result) -> None:
    """A second LeukGUI: read its session, wait for the go, then add the cells. (Without the
    lock, both read the empty CSVs and the second writer drops the first's rows: measured
    8 of 8 trials lost rows with the lock disabled.)"""
    cells = read_session(session)[0]
    start.wait(30)
    summary = LabDataset(lab).add_reviewed(cells, timeout_s=60)
    result.put(len(summary.added))


def test_two_processes_adding_at_once_never_lose_or_corrupt(tmp_path: Path) -> None:
    folders = []
    for i in (1, 2):
        folder, _ = _reviewed_session(
            tmp_path / f"lab{i}", tmp_path / f"images{i}", seed=i, n_extra=8
        )
        folders.append(str(folder))
    lab = LabDataset.create(tmp_path / "shared-lab")
    ctx = multiprocessing.get_context("spawn")  # as on Windows
    start, result = ctx.Event(), ctx.Queue()
    procs = [
        ctx.Process(target=_add_in_process, args=(f, str(lab.folder), start, result))
        for f in folders
    ]
    for p in procs:
        p.start()
    time.sleep(1.5)  # both children started and read their sessions (spawn imports numpy)
    start.set()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    assert sorted(result.get(timeout=5) for _ in procs) == [11, 11]
    rows = _csv_rows(lab.csv_path)
    assert len(rows) == 22 and len({r["sha256"] for r in rows}) == 22
    assert {r["source"] for r in rows} == {str(Path(f).absolute()) for f in folders}
    assert len(_csv_rows(lab.history_path)) == 22
    assert len(list((lab.folder / "cells").iterdir())) == 22


# ------------------------------------------------------------------------------ trainer, CLI


def test_the_trainer_reads_the_data_set(reviewed, tmp_path: Path) -> None:
    from training.datasets import read_csv_list

    folder, run = reviewed
    dataset = LabDataset.create(tmp_path / "lab")
    dataset.add_reviewed(read_session(folder)[0], {"S1": "patient7"})
    scan = read_csv_list(dataset.folder / DATASET_CSV, check_images=True)
    assert scan.unreadable == []
    got = sorted((r.label, r.subject) for r in scan.records)
    # The trainer normalises subject names (upper case); the grouping is what counts.
    assert got == [(ALL, "PATIENT7"), (HEM, "PATIENT7"), (HEM, "S2")]
    assert all(r.subject_from == "column" for r in scan.records)
    assert all(r.path.parent == dataset.folder / "cells" for r in scan.records)
    # The folder itself is a layout the trainer (and the Training tab's folder picker) knows.
    from training.datasets import read_dataset

    by_folder = read_dataset(dataset.folder)
    assert sorted((r.label, r.subject) for r in by_folder.records) == got


def _cli(argv: list[str], out: io.StringIO, err: io.StringIO | None = None) -> int:
    """Parse as `leukgui dataset ...` would, before the command is registered in __init__."""
    parser = argparse.ArgumentParser(prog="leukgui")
    sub = parser.add_subparsers(dest="command")
    dataset_cli.add_parsers(sub)
    args = parser.parse_args(["dataset", *argv])
    return int(args.func(args, out, err or io.StringIO()))


def test_cli_add_to_the_default_folder_then_show(reviewed) -> None:
    folder, _ = reviewed
    home = dataset_cli.default_dataset_dir()
    empty = io.StringIO()
    assert _cli(["show"], empty) == 0 and "0 cells" in empty.getvalue()  # nothing added yet
    err = io.StringIO()
    assert _cli(["add", str(folder.parent / "no-such-session")], io.StringIO(), err) == 5
    assert "does not exist" in err.getvalue() and not home.exists()  # no folder made for it
    out = io.StringIO()
    code = _cli(["add", str(folder), "--subject", "S1=patient7"], out)
    assert code == 0  # unreviewed and UNCLASSIFIABLE cells are left out by rule, not errors
    text = out.getvalue()
    assert "3 added, 0 already present, 0 relabelled, 2 skipped" in text
    assert "left out   1 cell: reviewed as UNCLASSIFIABLE" in text
    assert "left out   1 cell: not reviewed (only the model's call)" in text
    assert f"leukgui train {home / DATASET_CSV}" in text
    assert (home / DATASET_CSV).is_file() and (home / HISTORY_CSV).is_file()
    assert home.parent == Path(os.environ["LEUKGUI_USER_DIR"])
    show = io.StringIO()
    assert _cli(["show"], show) == 0
    assert "3 cells" in show.getvalue() and "ALL 1, HEM 2" in show.getvalue()
    assert "Ada: 2" in show.getvalue() and "Bob: 1" in show.getvalue()
    with pytest.raises(SystemExit):
        _cli(["add", str(folder), "--subject", "no-equals"], io.StringIO())


def test_names_never_become_formulas_and_foreign_folders_are_refused(tmp_path: Path) -> None:
    run = _run(tmp_path / "images")
    session = ReviewSession.create(tmp_path / "sessions", run)
    session.review.confirm(run.cells[0], '=HYPERLINK("http://x")')
    session.close()
    dataset = LabDataset.create(tmp_path / "lab")
    dataset.add_reviewed(read_session(session.folder)[0])
    [row] = _csv_rows(dataset.csv_path)
    assert row["reviewer"] == '\'=HYPERLINK("http://x")'  # text in Excel, not a formula
    again = dataset.add_reviewed(read_session(session.folder)[0])  # the row reads back
    assert len(again.already_present) == 1
    documents = tmp_path / "documents"
    documents.mkdir()
    (documents / "letter.txt").write_text("hello")
    with pytest.raises(DatasetError, match="holds other files"):
        LabDataset.create(documents)
    assert sorted(p.name for p in documents.iterdir()) == ["letter.txt"]


def test_a_new_folder_holding_only_its_own_lock_and_cells_is_a_data_set(
    reviewed, tmp_path: Path
) -> None:
    """What a first add in progress elsewhere (or one that failed) leaves behind is not
    "other files": a second person's add waits for the lock instead of being refused."""
    folder = tmp_path / "shared"
    (folder / "cells").mkdir(parents=True)
    (folder / "dataset.lock").write_bytes(b"")
    dataset = LabDataset.create(folder)
    summary = dataset.add_reviewed(read_session(reviewed[0])[0])
    assert len(summary.added) == 3
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "letter.txt").write_text("not a data set")
    with pytest.raises(DatasetError, match="holds other files"):
        LabDataset.create(tmp_path / "docs")


def test_cli_uses_the_folder_the_window_adds_to_and_says_what_it_did_not_do(
    reviewed, tmp_path: Path
) -> None:
    """One data set for window and command line; a new folder without --create says how;
    subjects given for cells already in the set are said not to apply to them."""
    from leukgui.core.preferences import Preferences, save_preferences

    folder, _ = reviewed
    shared = tmp_path / "share" / "lab-set"
    err = io.StringIO()
    assert _cli(["add", str(folder), "--dataset", str(shared)], io.StringIO(), err) == 5
    assert "add --create" in err.getvalue() and not shared.exists()
    shared.parent.mkdir()
    assert _cli(["add", str(folder), "--dataset", str(shared), "--create"], io.StringIO()) == 0
    save_preferences(Preferences(lab_dataset_folder=str(shared)))
    out = io.StringIO()
    assert _cli(["add", str(folder), "--subject", "S1=patient9"], out) == 0  # no --dataset
    text = out.getvalue()
    assert f"Lab data set {shared}:" in text and "0 added, 3 already present" in text
    assert "2 cell(s) already in the set keep the subject they were added with" in text
    assert not dataset_cli.default_dataset_dir().exists()


def test_cell_files_lead_back_to_the_images_they_came_from(reviewed, tmp_path: Path) -> None:
    from leukgui.core.lab_dataset import source_images

    folder, _ = reviewed
    dataset = LabDataset.create(tmp_path / "lab")
    dataset.add_reviewed(read_session(folder)[0])
    entries = dataset.entries()
    files = [str(dataset.folder / e.path) for e in entries] + [str(tmp_path / "other.png")]
    found = source_images(files)
    assert found == {str(dataset.folder / e.path): e.image for e in entries}
    assert any(image.endswith("field.png#1") for image in found.values())  # field cell #1
