"""The window's analysis adapter: the core's run, forwarded unchanged and paced for Qt.

The window (through `run_analysis`) and `leukgui analyze` must give the very same results
for the same folder, because both are thin consumers of `leukgui.core.engine.iter_run`.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from leukgui.core.engine import AnalysisOptions
from leukgui.core.fields import make_synthetic_field
from leukgui.core.results import (
    NO_WHITE_CELL,
    NOT_AN_IMAGE,
    UNREADABLE,
    CancelToken,
    CellResult,
    FileError,
    Progress,
    RunResult,
)
from leukgui.core.synthetic import write_dataset
from leukgui.gui.analysis import AnalysisRequest, Outcomes, RunStarted, run_analysis


class FakeWorker:
    """What `run_analysis` needs of a `Worker`: report(), cancel_token, cancelled."""

    def __init__(self, cancel_on_progress: bool = False) -> None:
        self.cancel_token = CancelToken()
        self.reports: list[object] = []
        self._cancel_on_progress = cancel_on_progress

    def report(self, value: object) -> None:
        self.reports.append(value)
        if self._cancel_on_progress and isinstance(value, Progress):
            self.cancel_token.cancel()

    @property
    def cancelled(self) -> bool:
        return self.cancel_token.cancelled


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """Single cells, broken files, a smear field, a blank field and a file that is no image."""
    root = tmp_path_factory.mktemp("mixed")
    write_dataset(root / "crops", n_per_class=20, seed=21, fmt="png", size=64)
    (root / "crops" / "all" / "empty.png").write_bytes(b"")
    (root / "crops" / "hem" / "text.png").write_text("renamed text file")
    (root / "fields").mkdir()
    rgb, _ = make_synthetic_field(5)
    cv2.imwrite(str(root / "fields" / "field_5.png"), rgb[..., ::-1])
    blank = np.full((480, 640, 3), (236, 228, 230), np.uint8)
    cv2.imwrite(str(root / "fields" / "blank.png"), blank)
    notes = root.parent / f"{root.name}-notes.txt"
    notes.write_text("not an image")
    return [str(root), str(notes)]


def _row(o: CellResult | FileError) -> tuple:
    if isinstance(o, FileError):
        return ("error", str(o.path), o.sample, o.reason, o.kind)
    return (
        "cell",
        str(o.path),
        o.sample,
        o.label,
        o.p_all,
        o.box,
        o.cell_index,
        o.mask_bits,
        o.note,
        o.truth,
        (o.width, o.height),
    )


def test_the_window_and_the_command_line_give_the_same_run(
    inputs: list[str], tiny_bundle_path: Path, tmp_path: Path, monkeypatch
) -> None:
    import leukgui.core.report as report
    from leukgui import cli

    written: list[RunResult] = []
    real_write_excel = report.write_excel

    def write_excel(run: RunResult, path: Path, **kwargs):
        written.append(run)
        return real_write_excel(run, path, **kwargs)

    monkeypatch.setattr(report, "write_excel", write_excel)
    args = ["analyze", *inputs, "--model", str(tiny_bundle_path), "--no-progress", "-q"]
    code = cli.main([*args, "--out", str(tmp_path / "r.xlsx")])
    assert code == cli.EXIT_SOME_ERRORS
    (from_cli,) = written

    worker = FakeWorker()
    from_gui = run_analysis(worker, AnalysisRequest(inputs, str(tiny_bundle_path)))

    assert [_row(o) for o in from_gui.outcomes] == [_row(o) for o in from_cli.outcomes]
    cli_maps = [o.heatmap for o in from_cli.cells]
    gui_maps = [o.heatmap for o in from_gui.cells]
    np.testing.assert_array_equal(np.stack(gui_maps), np.stack(cli_maps))
    assert from_gui.info.total_inputs == from_cli.info.total_inputs == 45
    assert from_gui.info.extra == from_cli.info.extra
    assert not from_gui.info.cancelled and not from_cli.info.cancelled

    # The run holds every kind of outcome this folder asks for.
    kinds = {Path(e.path).name: e.kind for e in from_gui.errors}
    assert kinds == {
        Path(inputs[1]).name: NOT_AN_IMAGE,
        "empty.png": UNREADABLE,
        "text.png": NOT_AN_IMAGE,
        "blank.png": NO_WHITE_CELL,
    }
    assert sum(c.in_field for c in from_gui.cells) >= 2
    assert sum(not c.in_field for c in from_gui.cells) == 40


def test_the_reports_rebuild_the_returned_run(inputs: list[str], tiny_bundle_path: Path) -> None:
    """What the window builds from the reports equals the run it is handed at the end."""
    worker = FakeWorker()
    options = AnalysisOptions(batch_size=4)
    run = run_analysis(worker, AnalysisRequest(inputs, str(tiny_bundle_path), options))

    started = worker.reports[0]
    assert isinstance(started, RunStarted)
    assert [type(r) for r in worker.reports].count(RunStarted) == 1
    assert started.total == 44
    assert [_row(o) for o in started.run.outcomes] == [_row(run.errors[0])]
    rebuilt = list(started.run.outcomes)
    for r in worker.reports[1:]:
        if isinstance(r, Outcomes):
            rebuilt.extend(r.items)
    assert rebuilt == run.outcomes

    progress = [r for r in worker.reports if isinstance(r, Progress)]
    assert progress and len(progress) <= -(-44 // 4)  # at most one per batch
    assert (progress[-1].done, progress[-1].total) == (44, 44)  # the last one always goes
    assert run.info.finished is not None and not run.info.cancelled


def test_cancel_through_the_worker_keeps_what_finished(
    inputs: list[str], tiny_bundle_path: Path
) -> None:
    worker = FakeWorker(cancel_on_progress=True)
    request = AnalysisRequest(inputs, str(tiny_bundle_path), AnalysisOptions(batch_size=8))
    run = run_analysis(worker, request)
    assert run.info.cancelled
    assert 0 < len(run.outcomes) < run.info.total_inputs
    rebuilt = list(worker.reports[0].run.outcomes)
    for r in worker.reports:
        if isinstance(r, Outcomes):
            rebuilt.extend(r.items)
    assert rebuilt == run.outcomes
