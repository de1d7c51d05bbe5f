"""The plain exports of a run: the CSV (one row per input, formula-safe) and the heatmap PNGs,
plus the helpers the Excel report shares with them. Failure modes of the atomic writes are in
test_report.py, for the workbook and the CSV together."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import report_samples as samples

from leukgui.core.exports import (
    FIELD_CSV_COLUMNS,
    DisplayNames,
    csv_safe,
    full_path,
    reread_cell,
    write_csv,
    write_heatmaps,
)
from leukgui.core.imaging import ImageError, decode_image
from leukgui.core.results import ALL, CellResult, RunResult

HOSTILE = samples.HOSTILE_NAMES


@pytest.fixture
def run(tmp_path: Path) -> RunResult:
    return samples.mixed_run(tmp_path / "images")


@pytest.fixture
def hostile_run(tmp_path: Path) -> RunResult:
    return samples.hostile_run(tmp_path)


# ------------------------------------------------------------------------------ helpers


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("=1+1", "'=1+1"),
        ("+1", "'+1"),
        ("-2", "'-2"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\tx", "'\tx"),
        ("a=b", "a=b"),
        (None, ""),
        (3, "3"),
    ],
)
def test_csv_safe(value: object, expected: str) -> None:
    assert csv_safe(value) == expected


def test_display_names_are_relative_to_the_deepest_input(tmp_path: Path) -> None:
    outer = tmp_path / "data"
    inner = outer / "S1"
    names = DisplayNames([str(outer), str(inner)])
    assert names(inner / "a.png") == "a.png"
    assert names(outer / "S2" / "b.png") == "S2/b.png"
    assert names(inner) == "S1"
    assert names(tmp_path / "elsewhere" / "c.png") == "c.png"
    assert full_path(Path("rel.png")) == str(Path("rel.png").absolute())


def test_reread_cell_refuses_a_changed_file(run: RunResult) -> None:
    first = run.cells[0]
    assert reread_cell(first).shape == (30, 40, 3)
    samples.image(first.path, width=41, height=30)
    with pytest.raises(ImageError, match="changed since analysis"):
        reread_cell(first)


# ------------------------------------------------------------------------------ CSV


def test_csv_escapes_formula_like_text(hostile_run: RunResult, tmp_path: Path) -> None:
    out = tmp_path / "r.csv"
    write_csv(hostile_run, out)
    rows = list(csv.reader(out.read_text(encoding="utf-8-sig").splitlines()))
    assert [r[0] for r in rows[1:]] == ["'" + n for n in HOSTILE] + ["'=2.png"]
    assert {r[1] for r in rows[1:]} == {"'=1+1"}
    assert rows[-1][8] == "'=cmd|' /C calc'!A0"


# ------------------------------------------------------------------------------ CSV


def test_csv_content(run: RunResult, tmp_path: Path) -> None:
    out = tmp_path / "r.csv"
    write_csv(run, out)
    raw = out.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf")
    rows = list(csv.reader(raw.decode("utf-8-sig").splitlines()))
    assert rows[0] == [
        "file",
        "sample",
        "subject",
        "status",
        "label",
        "p_all",
        "truth",
        "kind",
        "reason",
        "path",
        "path_exact",
        "sha256",
        "note",
        *FIELD_CSV_COLUMNS,
    ]
    body = rows[1:]
    assert len(body) == len(run.outcomes)
    assert [r[0] for r in body] == [
        "S1/a.png",
        "S1/b.png",
        "S1/c.png",
        "S1/d.png",
        "S2/e.png",
        "S2/f.png",
        "S2/missing.png",
        "S2/bad.png",
    ]
    assert body[0] == [
        "S1/a.png",
        "S1",
        "P1",
        "ok",
        ALL,
        "0.900000",
        ALL,
        "",
        "",
        str(run.cells[0].path),
        str(run.cells[0].path),  # path_exact: an ordinary path reads the same
        "",  # sha256: this hand-made result has no stamp
        "",  # note: read as it is
        *[""] * len(FIELD_CSV_COLUMNS),  # a single-cell image: no box, size or scale
    ]
    assert body[5][6] == ""  # unknown truth is blank
    assert body[-1][3:9] == ["error", "", "", "", "unreadable", "truncated PNG"]


# ------------------------------------------------------------------------------ heatmap PNGs


def test_write_heatmaps(run: RunResult, tmp_path: Path) -> None:
    dup = samples.image(tmp_path / "images" / "S1" / "a.bmp", width=25, height=50, seed=9)
    run.outcomes.append(CellResult(dup, "S1", 0.6, ALL, samples.heat(3), 25, 50))
    out = tmp_path / "heat"
    written = write_heatmaps(run, out)
    assert isinstance(written, list)
    names = sorted(p.relative_to(out).as_posix() for p in written)
    assert names == [
        "S1/a_2_gradcam.png",
        "S1/a_gradcam.png",
        "S1/b_gradcam.png",
        "S1/c_gradcam.png",
        "S1/d_gradcam.png",
        "S2/e_gradcam.png",
        "S2/f_gradcam.png",
    ]
    for path in written:
        img = decode_image(path)
        expected = (50, 25) if path.name == "a_2_gradcam.png" else (30, 40)
        assert img.shape == (*expected, 3)
    assert [(p.name, r) for p, r in written.skipped] == [
        ("missing.png", "cannot be read (No such file or directory)")
    ]


def test_write_heatmaps_non_ascii_sample(tmp_path: Path) -> None:
    folder = tmp_path / "Probe Müller ä"
    cell = CellResult(
        samples.image(folder / "zelle.png"), "Probe Müller ä", 0.7, ALL, samples.heat(), 40, 30
    )
    run = RunResult(samples.info([str(folder)]), [cell])
    written = write_heatmaps(run, tmp_path / "out")
    assert written[0].parent.name == "Probe Müller ä"
    assert decode_image(written[0]).shape == (30, 40, 3)
