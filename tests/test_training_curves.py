"""The training curves: the figure PNG (size, NaN gaps, atomic writes) and the Curves sheet of a
training report (the figure above the epoch log)."""

from __future__ import annotations

from pathlib import Path

import openpyxl
import pytest
import training_samples as samples
from PIL import Image

from leukgui.core.atomic import ReportWriteError
from training.curves import plot_curves
from training.history import EpochLog, TrainingRun
from training.reports import write_training_report

NAN = samples.NAN


@pytest.fixture
def run() -> TrainingRun:
    return samples.training_run()


# --------------------------------------------------------------------------- curves PNG


@pytest.mark.parametrize("epochs", [4, 1, 0])
def test_curves_png_decodes_at_the_expected_size(tmp_path: Path, epochs: int) -> None:
    out = plot_curves(samples.history()[:epochs], tmp_path / "curves.png", title="cnmc-effnet 1.2")
    with Image.open(out) as im:
        im.load()
        width, height = im.size
    assert 1200 <= width <= 1800 and 350 <= height <= 600


def test_curves_handle_all_nan_validation(tmp_path: Path) -> None:
    history = [
        EpochLog(
            "full",
            e,
            0.5 / e,
            0.6,
            samples.NAN,
            samples.NAN,
            samples.NAN,
            samples.NAN,
            samples.NAN,
            1.0,
            10.0,
        )
        for e in (1, 2)
    ]
    out = plot_curves(history, tmp_path / "curves.png")
    with Image.open(out) as im:
        assert im.format == "PNG"


# --------------------------------------------------------------------------- Curves sheet


def test_curves_sheet_embeds_picture_and_log(run: TrainingRun, tmp_path: Path) -> None:
    out = write_training_report(run, tmp_path / "r.xlsx")
    ws = openpyxl.load_workbook(out)["Curves"]
    assert len(ws._images) == 1
    rows = samples.sheet_rows(ws)
    header = next(i for i, r in enumerate(rows) if r[0] == "Phase")
    body = [r for r in rows[header + 1 :] if r[0] is not None]
    assert [r[1] for r in body] == [log.epoch for log in run.history]
    assert body[0][2] == pytest.approx(run.history[0].loss)
    assert body[1][7] == "n/a"  # the NaN val_auc


def test_curves_sheet_uses_the_saved_png(tmp_path: Path) -> None:
    png = plot_curves(samples.history(), tmp_path / "curves.png", title="saved")
    out = write_training_report(samples.training_run(curves_png=png), tmp_path / "r.xlsx")
    ws = openpyxl.load_workbook(out)["Curves"]
    assert ws._images[0]._data() == png.read_bytes()


# --------------------------------------------------------------------------- failures


def test_failed_png_write_keeps_the_previous_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    png = plot_curves(samples.history(), tmp_path / "curves.png")
    before = png.read_bytes()

    def partial_write(self: Path, data: object, *args: object, **kw: object) -> None:
        with open(self, "wb") as fh:
            fh.write(b"partial")
        samples.fail_disk_full()

    monkeypatch.setattr(Path, "write_bytes", partial_write)
    with pytest.raises(ReportWriteError):
        plot_curves(samples.history()[:1], png)
    assert png.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["curves.png"]


def test_curves_parent_is_a_file(run: TrainingRun, tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    with pytest.raises(ReportWriteError):
        plot_curves(run.history, blocker / "curves.png")
    assert blocker.read_text() == "x"
