"""The engine: one outcome per input in order, errors as values, progress, cancel."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from leukgui.core.engine import Analyzer, analyze_paths
from leukgui.core.imaging import discover
from leukgui.core.results import CancelToken, CellResult, FileError
from leukgui.core.synthetic import write_dataset


@pytest.fixture(scope="module")
def analyzer(tiny_bundle) -> Analyzer:
    return Analyzer(tiny_bundle)


def _mixed_folder(root: Path) -> tuple[list[Path], list[Path]]:
    good = write_dataset(root / "patient 7", n_per_class=3, seed=1, fmt="png")
    bad_dir = root / "patient 7" / "all"
    (bad_dir / "a_empty.png").write_bytes(b"")
    (bad_dir / "b_text.png").write_text("not an image at all")
    truncated = bad_dir / "c_truncated.png"
    truncated.write_bytes(good[0].read_bytes()[:400])
    return good, [bad_dir / "a_empty.png", bad_dir / "b_text.png", truncated]


def test_every_input_gets_one_outcome_in_order(tiny_bundle, analyzer, tmp_path: Path) -> None:
    good, bad = _mixed_folder(tmp_path)
    items, walk_errors = discover([tmp_path])
    assert not walk_errors
    outcomes = list(analyzer.iter_outcomes(items, batch_size=4))
    assert [o.path for o in outcomes] == [i.path for i in items]
    cells = [o for o in outcomes if isinstance(o, CellResult)]
    errors = {o.path.name: o.reason for o in outcomes if isinstance(o, FileError)}
    assert {c.path for c in cells} == set(good)
    assert errors == {
        "a_empty.png": "empty file",
        "b_text.png": "not an image",
        "c_truncated.png": "truncated PNG",
    }
    for cell in cells:
        assert 0.0 <= cell.p_all <= 1.0
        assert cell.label == tiny_bundle.label(cell.p_all)
        assert cell.heatmap.shape == (8, 8) and cell.heatmap.dtype == np.float32
        assert (cell.width, cell.height) == (450, 450)
        assert cell.truth == cell.path.parent.name.upper()
        assert cell.sample == f"{tmp_path.name}/patient 7/{cell.path.parent.name}"


def test_batching_does_not_change_the_answers(analyzer, tmp_path: Path) -> None:
    write_dataset(tmp_path, n_per_class=3, seed=2, fmt="bmp")
    items, _ = discover([tmp_path])
    one = list(analyzer.iter_outcomes(items, batch_size=1))
    many = list(analyzer.iter_outcomes(items, batch_size=32))
    np.testing.assert_allclose([c.p_all for c in one], [c.p_all for c in many], atol=1e-5)
    np.testing.assert_allclose(
        np.stack([c.heatmap for c in one]), np.stack([c.heatmap for c in many]), atol=1e-4
    )


def test_progress_reports_every_batch(analyzer, tmp_path: Path) -> None:
    write_dataset(tmp_path, n_per_class=5, seed=3, fmt="png")
    items, _ = discover([tmp_path])
    seen = []
    list(analyzer.iter_outcomes(items, batch_size=3, progress=seen.append))
    assert [p.done for p in seen] == [3, 6, 9, 10]
    assert all(p.total == 10 for p in seen)
    assert seen[-1].eta_s == 0 and seen[-1].fraction == 1.0
    assert all(p.rate > 0 for p in seen)


def test_cancel_keeps_finished_cells(tiny_bundle, analyzer, tmp_path: Path) -> None:
    write_dataset(tmp_path, n_per_class=6, seed=4, fmt="png")
    cancel = CancelToken()

    def stop_after_two_batches(p) -> None:
        if p.done >= 4:
            cancel.cancel()

    run = analyze_paths(
        [tmp_path],
        tiny_bundle,
        batch_size=2,
        cancel=cancel,
        progress=stop_after_two_batches,
        analyzer=analyzer,
    )
    assert len(run.cells) == 4
    assert run.info.cancelled
    assert run.info.total_inputs == 12
    items, _ = discover([tmp_path])
    assert [c.path for c in run.cells] == [i.path for i in items[:4]]

    import openpyxl

    from leukgui.core.report import write_excel

    write_excel(run, tmp_path / "cancelled.xlsx")
    book = openpyxl.load_workbook(tmp_path / "cancelled.xlsx")
    summary = [c.value for row in book["Summary"].iter_rows() for c in row if c.value]
    assert "Run cancelled — 4 of 12 inputs analyzed" in summary
    provenance = {r[0].value: r[1].value for r in book["Provenance"].iter_rows() if r[0].value}
    assert provenance["Cancelled"] == "yes"


def test_a_run_that_finishes_is_not_marked_cancelled(tiny_bundle, analyzer, tmp_path: Path):
    write_dataset(tmp_path, n_per_class=1, seed=5, fmt="png")
    cancel = CancelToken()
    run = analyze_paths(
        [tmp_path],
        tiny_bundle,
        cancel=cancel,
        analyzer=analyzer,
        progress=lambda p: cancel.cancel(),
    )
    assert len(run.cells) == 2 and not run.info.cancelled
    assert run.info.finished is not None and run.info.model_name == "tiny-test"


def test_walk_errors_come_first_and_missing_inputs_are_errors(
    tiny_bundle, analyzer, tmp_path: Path
) -> None:
    write_dataset(tmp_path / "s", n_per_class=1, seed=6, fmt="png")
    run = analyze_paths([tmp_path / "nope", tmp_path / "s"], tiny_bundle, analyzer=analyzer)
    assert isinstance(run.outcomes[0], FileError)
    assert run.outcomes[0].reason == "no such file or folder"
    assert len(run.cells) == 2 and run.info.total_inputs == 3


def test_uncomputable_heatmap_is_an_error_not_a_picture(
    analyzer, tmp_path: Path, monkeypatch
) -> None:
    write_dataset(tmp_path, n_per_class=2, seed=7, fmt="png")
    items, _ = discover([tmp_path])
    import tensorflow as tf

    compiled = analyzer.gradcam._fn

    def second_image_fails(batch):
        p, cams, finite = compiled(batch)
        return p, cams, tf.tensor_scatter_nd_update(finite, [[1]], [False])

    monkeypatch.setattr(analyzer.gradcam, "_fn", second_image_fails)
    outcomes = list(analyzer.iter_outcomes(items, batch_size=4))
    assert isinstance(outcomes[1], FileError)
    assert "heatmap could not be computed" in outcomes[1].reason
    assert sum(isinstance(o, CellResult) for o in outcomes) == 3


def test_a_crash_in_the_decoder_thread_reaches_the_caller(
    analyzer, tmp_path: Path, monkeypatch
) -> None:
    write_dataset(tmp_path, n_per_class=1, seed=8, fmt="png")
    items, _ = discover([tmp_path])
    import leukgui.core.engine as engine

    def broken_stack(*args, **kwargs):
        raise RuntimeError("decoder exploded")

    monkeypatch.setattr(engine.np, "stack", broken_stack)
    with pytest.raises(RuntimeError, match="decoder exploded"):
        list(analyzer.iter_outcomes(items, batch_size=1))


def test_a_folder_of_broken_files_still_reports_progress_and_cancels(analyzer, tmp_path: Path):
    """Errors are passed on in chunks, so a run of unreadable files is not one silent block."""
    from leukgui.core.engine import ERRORS_PER_FLUSH

    n_bad = 3 * ERRORS_PER_FLUSH
    for i in range(n_bad):
        (tmp_path / f"broken{i:04d}.png").write_bytes(b"")
    write_dataset(tmp_path / "z", n_per_class=1, seed=9, fmt="png")
    items, _ = discover([tmp_path])
    seen = []
    outcomes = list(analyzer.iter_outcomes(items, batch_size=32, progress=seen.append))
    assert len(outcomes) == n_bad + 2
    assert [p.done for p in seen][:3] == [ERRORS_PER_FLUSH, 2 * ERRORS_PER_FLUSH, n_bad]

    cancel = CancelToken()
    partial = list(
        analyzer.iter_outcomes(
            items, batch_size=32, cancel=cancel, progress=lambda p: cancel.cancel()
        )
    )
    assert len(partial) == ERRORS_PER_FLUSH
