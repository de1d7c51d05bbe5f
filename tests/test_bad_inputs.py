"""A whole run over a folder of broken and odd files: each gets the right error or the right
result, and every good file in the same run is still classified."""

from __future__ import annotations

import io
import os
import struct
from pathlib import Path

import cv2
import numpy as np
import openpyxl
import pytest
import tifffile
from PIL import Image

from leukgui.core.engine import AnalysisOptions, analyze_paths
from leukgui.core.imaging import discover
from leukgui.core.results import (
    NOT_AN_IMAGE,
    TOO_LARGE,
    UNREADABLE,
    CellResult,
    FileError,
)
from leukgui.core.synthetic import make_cell


def _png(rgb: np.ndarray) -> bytes:
    return cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))[1].tobytes()


def _huge_png_header(width: int, height: int) -> bytes:
    import zlib

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return (
        b"\x89PNG\r\n\x1a\n"
        + struct.pack(">I", len(ihdr))
        + chunk
        + struct.pack(">I", zlib.crc32(chunk))
    )


@pytest.fixture
def corpus(tmp_path: Path) -> tuple[Path, dict[str, str], set[str]]:
    """Write the corpus; return root, expected (reason, kind) per file name, good names."""
    root = tmp_path / "run"
    nested = root / "Zellen Ü" / "tief 細胞"
    nested.mkdir(parents=True)
    rng = np.random.default_rng(0)
    cell = make_cell("ALL", rng, size=96).image
    bgr = cv2.cvtColor(cell, cv2.COLOR_RGB2BGR)
    good: dict[str, bytes] = {
        "good.bmp": cv2.imencode(".bmp", bgr)[1].tobytes(),
        "good space name.PNG": _png(cell),
        "grey.png": cv2.imencode(".png", cell[..., 1])[1].tobytes(),
        "rgba.png": cv2.imencode(".png", np.dstack([bgr, np.full(cell.shape[:2], 255, np.uint8)]))[
            1
        ].tobytes(),
    }
    buf = io.BytesIO()
    Image.fromarray(cell).convert("P", palette=Image.Palette.ADAPTIVE).save(buf, "PNG")
    good["palette.png"] = buf.getvalue()
    buf = io.BytesIO()
    tifffile.imwrite(buf, (cell.astype(np.uint16) * 257))
    good["sixteen.tif"] = buf.getvalue()
    good["=cmd().png"] = _png(cell)
    for name, data in good.items():
        (root / name).write_bytes(data)
    (nested / "deep.jpg").write_bytes(cv2.imencode(".jpg", bgr)[1].tobytes())

    jpeg = cv2.imencode(".jpg", bgr)[1].tobytes()
    bmp = good["good.bmp"]
    bad = {
        "empty.png": (b"", "empty file", UNREADABLE),
        "truncated.bmp": (bmp[: len(bmp) // 2], "truncated BMP", UNREADABLE),
        "truncated.jpg": (jpeg[: len(jpeg) // 2], "truncated JPEG", UNREADABLE),
        "text.png": (b"this is a text file, renamed", "not an image", NOT_AN_IMAGE),
        "random.tif": (rng.bytes(5000), "not an image", NOT_AN_IMAGE),
        "tiny.png": (_png(np.zeros((1, 1, 3), np.uint8)), "too small: 1 x 1 px", NOT_AN_IMAGE),
        "giant.png": (_huge_png_header(40000, 40000), "too large: 40000 x 40000 px", TOO_LARGE),
    }
    for name, (data, _, _) in bad.items():
        (root / name).write_bytes(data)
    os.symlink(root, nested / "loop")  # a folder link back up the tree
    (root / "notes.txt").write_text("ignored: not an image extension")
    expected_errors = {name: (reason, kind) for name, (_, reason, kind) in bad.items()}
    return root, expected_errors, {*good, "deep.jpg"}


def test_bad_inputs_are_errors_and_good_files_are_classified(tiny_bundle, corpus) -> None:
    root, expected_errors, expected_good = corpus
    run = analyze_paths([root], tiny_bundle, AnalysisOptions(batch_size=3))
    errors = {Path(e.path).name: (e.reason, e.kind) for e in run.errors}
    loop = [e for e in run.errors if "loop" in e.reason]
    assert len(loop) == 1 and loop[0].kind == UNREADABLE
    del errors[Path(loop[0].path).name]
    assert errors == expected_errors
    cells = {Path(c.path).name: c for c in run.cells}
    assert set(cells) == expected_good
    assert all(isinstance(o, CellResult | FileError) for o in run.outcomes)
    assert cells["deep.jpg"].sample == "run/Zellen Ü/tief 細胞"
    # same pixels through different containers give (nearly) the same call
    p = {name: cell.p_all for name, cell in cells.items()}
    assert abs(p["good.bmp"] - p["good space name.PNG"]) < 1e-6
    assert abs(p["good.bmp"] - p["sixteen.tif"]) < 1e-4
    assert abs(p["good.bmp"] - p["rgba.png"]) < 1e-6


def test_unreadable_file_is_an_error_row(tiny_bundle, tmp_path: Path, monkeypatch) -> None:
    """Root ignores chmod, so the permission error is injected where the file is read."""
    import leukgui.core.imaging as imaging

    cell = make_cell("HEM", np.random.default_rng(1), size=64).image
    for name in ("a.png", "locked.png", "c.png"):
        (tmp_path / name).write_bytes(_png(cell))
    real = os.open

    def open_(path, *args, **kwargs):
        if str(path).endswith("locked.png"):
            raise PermissionError(13, "Permission denied")
        return real(path, *args, **kwargs)

    monkeypatch.setattr(imaging.os, "open", open_)
    run = analyze_paths([tmp_path], tiny_bundle)
    assert [Path(o.path).name for o in run.outcomes] == ["a.png", "c.png", "locked.png"]
    assert run.errors[0].reason == "cannot be read (permission denied)"
    assert run.errors[0].kind == UNREADABLE
    assert len(run.cells) == 2


def test_inputs_that_are_no_images_or_cannot_be_reached_get_their_kind(
    tmp_path: Path, monkeypatch
) -> None:
    """Walk errors carry a kind too: code sorts them by kind, never by their wording."""
    cell = make_cell("HEM", np.random.default_rng(2), size=64).image
    folder = tmp_path / "cells"
    locked = folder / "locked"
    locked.mkdir(parents=True)
    (folder / "a.png").write_bytes(_png(cell))
    os.symlink(tmp_path / "gone.png", folder / "dangling.png")
    notes = tmp_path / "notes.txt"
    notes.write_text("a note")
    bare = tmp_path / "README"
    bare.write_text("no extension")
    pipe = tmp_path / "pipe.png"
    os.mkfifo(pipe)
    real_scandir = os.scandir

    def scandir(path):  # root ignores chmod, so the denial is injected
        if Path(path) == locked:
            raise PermissionError(13, "Permission denied")
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    items, errors = discover([folder, notes, bare, pipe, tmp_path / "missing"])
    assert [i.path.name for i in items] == ["a.png"]
    assert [(Path(e.path).name, e.reason, e.kind) for e in errors] == [
        ("dangling.png", "broken symbolic link", UNREADABLE),
        ("locked", "folder cannot be read (permission denied)", UNREADABLE),
        ("notes.txt", "not a supported image type (.txt)", NOT_AN_IMAGE),
        ("README", "not a supported image type (no file extension)", NOT_AN_IMAGE),
        ("pipe.png", "not a regular file (a pipe), skipped", NOT_AN_IMAGE),
        ("missing", "no such file or folder", UNREADABLE),
    ]


def _within(seconds: float, fn):
    """fn() in a daemon thread; fail instead of hanging when it blocks (e.g. on a FIFO)."""
    import threading

    box: dict = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - re-raised below
            box["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), "blocked: a special file was opened"
    if "error" in box:
        raise box["error"]
    return box["value"]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this OS")
def test_fifo_inside_a_folder_is_one_error_row_and_never_opened(tiny_bundle, tmp_path: Path):
    cell = make_cell("HEM", np.random.default_rng(3), size=64).image
    folder = tmp_path / "cells"
    folder.mkdir()
    (folder / "a.png").write_bytes(_png(cell))
    os.mkfifo(folder / "b.png")
    os.mkfifo(folder / "notes.fifo")  # no image name: ignored like any other non-image
    (folder / "c.png").write_bytes(_png(cell))
    items, errors = _within(20, lambda: discover([folder]))
    assert [i.path.name for i in items] == ["a.png", "c.png"]
    assert [(Path(e.path).name, e.reason, e.kind, e.sample) for e in errors] == [
        ("b.png", "not a regular file (a pipe), skipped", NOT_AN_IMAGE, "cells"),
    ]
    run = _within(120, lambda: analyze_paths([folder], tiny_bundle))
    assert [Path(o.path).name for o in run.outcomes] == ["b.png", "a.png", "c.png"]
    assert [e.reason for e in run.errors] == ["not a regular file (a pipe), skipped"]
    assert len(run.cells) == 2


def test_valid_files_with_appended_data_are_classified(tiny_bundle, tmp_path: Path) -> None:
    """Cameras append metadata after the end marker: such files are no errors."""
    cell = make_cell("ALL", np.random.default_rng(4), size=96).image
    bgr = cv2.cvtColor(cell, cv2.COLOR_RGB2BGR)
    tail = np.random.default_rng(5).integers(0, 256, 2048, np.uint8).tobytes()
    (tmp_path / "tail.jpg").write_bytes(cv2.imencode(".jpg", bgr)[1].tobytes() + tail)
    (tmp_path / "tail.png").write_bytes(_png(cell) + tail)
    jpeg = cv2.imencode(".jpg", bgr)[1].tobytes()
    (tmp_path / "cut.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    run = analyze_paths([tmp_path], tiny_bundle)
    assert sorted(Path(c.path).name for c in run.cells) == ["tail.jpg", "tail.png"]
    # The skipped tail is said on the cell, in the report's Cells sheet and the CSV.
    assert all("after the end of the image ignored" in c.note for c in run.cells)
    from leukgui.core.exports import write_csv
    from leukgui.core.report import write_excel

    write_excel(run, tmp_path / "r.xlsx")
    write_csv(run, tmp_path / "r.csv")
    cells_sheet = openpyxl.load_workbook(tmp_path / "r.xlsx")["Cells"]
    texts = [str(c.value) for row in cells_sheet.iter_rows() for c in row if c.value]
    assert sum("after the end of the image ignored" in t for t in texts) == 2
    csv_text = (tmp_path / "r.csv").read_text(encoding="utf-8-sig")
    assert csv_text.count("after the end of the image ignored") == 2
    assert [(Path(e.path).name, e.reason, e.kind) for e in run.errors] == [
        ("cut.jpg", "truncated JPEG", UNREADABLE)
    ]


def test_file_over_the_byte_limit_is_a_too_large_row(tiny_bundle, tmp_path: Path) -> None:
    """A sparse 2 GiB file with a valid TIFF header: refused by size, unread, in the run."""
    buf = io.BytesIO()
    tifffile.imwrite(buf, np.zeros((64, 64), np.uint8))
    with open(tmp_path / "sparse.tif", "wb") as f:
        f.write(buf.getvalue())
        f.truncate(2**31)
    run = analyze_paths([tmp_path], tiny_bundle)
    assert [(e.reason, e.kind) for e in run.errors] == [
        ("too large: 2 GiB file (limit 512 MiB)", TOO_LARGE)
    ]
    # The limit is a setting of the run.
    (tmp_path / "sparse.tif").unlink()
    cv2.imwrite(str(tmp_path / "small.png"), np.zeros((64, 64, 3), np.uint8))
    run = analyze_paths([tmp_path], tiny_bundle, AnalysisOptions(max_bytes=100))
    assert [e.kind for e in run.errors] == [TOO_LARGE] and "limit 100 B" in run.errors[0].reason
    with pytest.raises(ValueError, match="max_bytes"):
        AnalysisOptions(max_bytes=0)
