"""Hostile inputs: file names that are not valid text, files that change after analysis.

Every report opens, says the truth and loses nothing: a Latin-1 file name shows U+FFFD but
its exact path is kept; control characters never reach Excel's XML.
"""

from __future__ import annotations

import csv
import os
import sys
from pathlib import Path

import openpyxl
import pytest

from leukgui import cli
from leukgui.core.synthetic import write_dataset
from leukgui.core.text import (
    display_path,
    display_text,
    exact_path,
    is_exact_text,
    path_from_exact,
)

posix_only = pytest.mark.skipif(
    sys.platform == "win32", reason="file names are bytes only on POSIX file systems"
)

LATIN1_NAME = b"Patient_M\xfcller.bmp"
SHOWN_NAME = "Patient_M\ufffdller.bmp"


def _bmp_bytes(tmp_path: Path) -> bytes:
    source = tmp_path / "source"
    write_dataset(source, n_per_class=1, seed=3, fmt="bmp")
    return sorted(source.rglob("*.bmp"))[0].read_bytes()


def _folder_with(tmp_path: Path, names: list[bytes]) -> Path:
    data = _bmp_bytes(tmp_path)
    folder = tmp_path / "cells"
    folder.mkdir()
    for name in names:
        with open(os.fsencode(folder) + b"/" + name, "wb") as fh:
            fh.write(data)
    return folder


def _analyze(folder: Path, out: Path, bundle: Path, capsys, *extra: str) -> int:
    code = cli.main(
        ["analyze", str(folder), "--model", str(bundle), "--out", str(out), "--no-progress"]
        + list(extra)
    )
    capsys.readouterr()
    return code


def _cells_rows(path: Path) -> list[dict[str, object]]:
    ws = openpyxl.load_workbook(path)["Cells"]
    rows = list(ws.iter_rows(values_only=True))
    head = next(i for i, r in enumerate(rows) if r and r[0] == "#")
    names = rows[head]
    return [dict(zip(names, r, strict=False)) for r in rows[head + 1 :] if r and r[0] is not None]


# --------------------------------------------------------------------------- the text rules


def test_display_and_exact_forms() -> None:
    bad = os.fsdecode(b"/data/" + LATIN1_NAME)
    assert display_path(bad) == "/data/" + SHOWN_NAME
    assert display_text(bad).encode("utf-8")  # always encodable
    assert display_path("a\x07b\tc.png") == "a\ufffdb\ufffdc.png"
    assert display_text("line one\nline two\x00") == "line one\nline two\ufffd"
    assert display_path("\ud83d\ude00.png") == "\U0001f600.png"  # a surrogate pair joins
    assert display_path("Müller 100%.png") == "Müller 100%.png"
    assert is_exact_text("Müller.png") and not is_exact_text(bad)
    for name in (bad, "/x/a\x07b.png", "/x/100% sure.png", "/x/Müller.png", "/x/%FC.png"):
        assert path_from_exact(exact_path(name)) == name
    assert exact_path(bad) == "/data/Patient_M%FCller.bmp"
    assert exact_path("/x/Müller.png") == "/x/Müller.png"


# --------------------------------------------------------------------------- bug 1: names


@posix_only
def test_latin1_file_name_gives_valid_reports_and_keeps_the_exact_path(
    tiny_bundle_path: Path, tmp_path: Path, capsys
) -> None:
    folder = _folder_with(tmp_path, [LATIN1_NAME, b"plain.bmp"])
    out = tmp_path / "report.xlsx"
    code = _analyze(folder, out, tiny_bundle_path, capsys, "--csv")
    assert code == cli.EXIT_OK

    rows = _cells_rows(out)  # openpyxl opens it: no invalid character in the XML
    assert {r["File"] for r in rows} == {SHOWN_NAME, "plain.bmp"}
    bad_row = next(r for r in rows if r["File"] == SHOWN_NAME)
    exact = exact_path(os.fsdecode(os.fsencode(folder) + b"/" + LATIN1_NAME))
    assert f"(exact path: {exact})" in bad_row["Full path"]

    raw = out.with_suffix(".csv").read_bytes()
    text = raw.decode("utf-8-sig")  # strict UTF-8
    by_file = {r["file"]: r for r in csv.DictReader(text.splitlines())}
    assert set(by_file) == {SHOWN_NAME, "plain.bmp"}
    original = os.fsencode(folder) + b"/" + LATIN1_NAME
    assert os.fsencode(path_from_exact(by_file[SHOWN_NAME]["path_exact"])) == original
    assert Path(path_from_exact(by_file[SHOWN_NAME]["path_exact"])).is_file()
    assert by_file["plain.bmp"]["path_exact"] == by_file["plain.bmp"]["path"]


@posix_only
def test_control_characters_in_a_name_give_a_valid_workbook(
    tiny_bundle_path: Path, tmp_path: Path, capsys
) -> None:
    folder = _folder_with(tmp_path, [b"a\x07b.bmp", b"c\x1bd.bmp"])
    out = tmp_path / "report.xlsx"
    assert _analyze(folder, out, tiny_bundle_path, capsys, "--csv") == cli.EXIT_OK
    rows = _cells_rows(out)
    assert {r["File"] for r in rows} == {"a\ufffdb.bmp", "c\ufffdd.bmp"}
    rows = list(csv.DictReader(out.with_suffix(".csv").read_text("utf-8-sig").splitlines()))
    assert {r["file"] for r in rows} == {"a\ufffdb.bmp", "c\ufffdd.bmp"}
    assert all("%07" in r["path_exact"] or "%1B" in r["path_exact"] for r in rows)


@posix_only
def test_a_session_keeps_a_latin1_path_exactly(tiny_bundle, tmp_path: Path) -> None:
    from leukgui.core.engine import analyze_paths
    from leukgui.core.sessions import ReviewSession

    folder = _folder_with(tmp_path, [LATIN1_NAME])
    run = analyze_paths([folder], tiny_bundle)
    (cell,) = run.cells
    assert os.fsencode(cell.path).endswith(LATIN1_NAME)
    session = ReviewSession.create(tmp_path / "sessions", run)
    session.review.set_label(cell, "HEM", "Dr. Ä")
    session.store.close()  # as if the window was killed: no clean close

    restored = ReviewSession.restore(session.folder)
    try:
        (back,) = restored.run.cells
        assert os.fsencode(back.path) == os.fsencode(cell.path)
        assert back.path.is_file()
        assert restored.review.review_of(back).label == "HEM"
    finally:
        restored.close()
    assert sorted(p.name for p in session.folder.glob("heatmaps-*.npz")) == ["heatmaps-1.npz"]


def test_a_failed_session_create_leaves_no_files(tmp_path: Path, monkeypatch) -> None:
    from datetime import datetime

    import numpy as np

    from leukgui.core import sessions
    from leukgui.core.results import CellResult, RunInfo, RunResult
    from leukgui.core.sessions import SessionError, SessionStore

    info = RunInfo("1", "m", "1", "0" * 64, "b", 64, 0.5, (0.4, 0.6), False, ["x"], datetime.now())
    run = RunResult(info, [CellResult(Path("x/a.png"), "x", 0.7, "ALL", np.zeros((8, 8)), 9, 9)])

    def broken(*args, **kwargs):
        raise OSError(28, "No space left on device")

    real_write = sessions.atomic_write
    calls = []

    def second_write_fails(path, write):
        calls.append(path)
        if len(calls) == 2:  # heatmaps written, run.json fails
            broken()
        real_write(path, write)

    monkeypatch.setattr(sessions, "atomic_write", second_write_fails)
    target = tmp_path / "new-session"
    with pytest.raises(SessionError):
        SessionStore.create(target, run)
    assert not target.exists()
    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "keep.txt").write_text("mine")
    calls.clear()
    with pytest.raises(SessionError):
        SessionStore.create(existing, run)
    assert sorted(os.listdir(existing)) == ["keep.txt"]


# --------------------------------------------------------------------------- bug 4: changed files


def _changed_same_size(path: Path) -> None:
    """Rewrite `path` with different pixels, the same byte size and the same mtime."""
    import cv2
    import numpy as np

    from leukgui.core.imaging import decode_image

    before = path.stat()
    rgb = decode_image(path)
    ok, buf = cv2.imencode(".bmp", cv2.cvtColor(255 - rgb, cv2.COLOR_RGB2BGR))
    assert ok
    data = buf.tobytes()
    assert len(data) == before.st_size and data != path.read_bytes()
    path.write_bytes(data)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert np.any(decode_image(path) != rgb)


def test_a_file_changed_after_analysis_is_not_pictured(
    tiny_bundle_path: Path, tmp_path: Path, capsys
) -> None:
    import hashlib

    folder = _folder_with(tmp_path, [b"changed.bmp", b"kept.bmp"])
    originals = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir()}
    out = tmp_path / "report.xlsx"

    from leukgui.core.bundle import load_bundle
    from leukgui.core.engine import analyze_paths
    from leukgui.core.exports import write_csv, write_heatmaps
    from leukgui.core.report import write_excel

    run = analyze_paths([folder], load_bundle(tiny_bundle_path))
    assert {Path(c.path).name: c.sha256 for c in run.cells} == originals
    _changed_same_size(folder / "changed.bmp")
    write_excel(run, out, images=True)
    write_csv(run, out.with_suffix(".csv"))

    ws = openpyxl.load_workbook(out)["Cells"]
    rows = _cells_rows(out)
    by_file = {r["File"]: r for r in rows}
    assert by_file["changed.bmp"]["Thumbnail"] == "image changed since analysis"
    assert by_file["changed.bmp"]["Heatmap"] == "image changed since analysis"
    assert by_file["kept.bmp"]["Thumbnail"] is None  # a picture, not a text
    assert {r["SHA-256 of the file"] for r in rows} == set(originals.values())
    assert by_file["changed.bmp"]["SHA-256 of the file"] == originals["changed.bmp"]
    pictured_rows = {img.anchor._from.row for img in ws._images}
    changed_row = next(
        i for i, r in enumerate(ws.iter_rows(values_only=True)) if r[1] == "changed.bmp"
    )
    kept_row = next(i for i, r in enumerate(ws.iter_rows(values_only=True)) if r[1] == "kept.bmp")
    assert changed_row not in pictured_rows and kept_row in pictured_rows

    rows = list(csv.DictReader(out.with_suffix(".csv").read_text("utf-8-sig").splitlines()))
    assert {r["file"]: r["sha256"] for r in rows} == originals

    maps = write_heatmaps(run, tmp_path / "maps")
    assert [Path(p).name for p in maps] == ["kept_gradcam.png"]
    assert [(Path(p).name, why) for p, why in maps.skipped] == [
        ("changed.bmp", "image changed since analysis")
    ]


def test_sessions_keep_the_file_stamp_and_old_sessions_open(tiny_bundle, tmp_path: Path) -> None:
    import json

    from leukgui.core.engine import analyze_paths
    from leukgui.core.sessions import SessionStore

    folder = _folder_with(tmp_path, [b"a.bmp"])
    run = analyze_paths([folder], tiny_bundle)
    (cell,) = run.cells
    assert cell.stamp is not None and cell.stamp.size == (folder / "a.bmp").stat().st_size
    store = SessionStore.create(tmp_path / "s", run)
    (back,) = store.read_run().cells
    assert back.stamp == cell.stamp
    store.close()

    data = json.loads((tmp_path / "s" / "run.json").read_text("utf-8"))
    for o in data["outcomes"]:
        o.pop("stamp")  # as an older LeukGUI wrote it
    (tmp_path / "s" / "run.json").write_text(json.dumps(data), "utf-8")
    (old,) = SessionStore(tmp_path / "s").read_run().cells
    assert old.stamp is None and old.sha256 is None


# --------------------------------------------------------------------------- bug 9: leftovers


def test_stale_temp_files_of_a_killed_export_are_removed_on_the_next_write(
    tmp_path: Path,
) -> None:
    import time

    from leukgui.core.atomic import STALE_TEMP_AGE_S, atomic_write

    target = tmp_path / "report.xlsx"
    old = time.time() - STALE_TEMP_AGE_S - 60
    stale = [tmp_path / ".report.ab12_xyz.xlsx", tmp_path / ".report.zz9q8w7e.xlsx"]
    fresh = tmp_path / ".report.k3j4h5g6.xlsx"  # an export running right now
    others = [
        tmp_path / ".report.ab12_xyz.csv",  # another target's leftover (report.csv)
        tmp_path / ".other.ab12_xyz.xlsx",
        tmp_path / "report.ab12_xyz.xlsx",  # not hidden: a user's file
        tmp_path / ".report.toolongname.xlsx",
    ]
    for path in [*stale, fresh, *others]:
        path.write_bytes(b"partial")
        if path is not fresh:
            os.utime(path, (old, old))
    atomic_write(target, lambda tmp: tmp.write_bytes(b"new report"))
    assert target.read_bytes() == b"new report"
    assert not any(p.exists() for p in stale)
    assert fresh.exists() and all(p.exists() for p in others)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".report.")) == sorted(
        p.name for p in [fresh, others[0], others[3]]
    )
