"""The engine: one outcome per input in order, errors as values, progress, cancel, and the
run as a stream of events (`iter_run`) with one options value (`AnalysisOptions`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from leukgui.core.engine import (
    AnalysisOptions,
    Analyzer,
    Outcomes,
    RunFinished,
    RunStarted,
    analyze_paths,
    iter_run,
)
from leukgui.core.fields import DetectorSettings
from leukgui.core.imaging import discover
from leukgui.core.results import (
    MODEL_FAILURE,
    NOT_AN_IMAGE,
    TOO_LARGE,
    UNEXPECTED,
    UNREADABLE,
    CancelToken,
    CellResult,
    FileError,
    InputFile,
    Progress,
)
from leukgui.core.synthetic import write_dataset


@pytest.fixture(scope="module")
def analyzer(tiny_bundle) -> Analyzer:
    return Analyzer(tiny_bundle)


def _outcomes(
    analyzer: Analyzer, items: list[InputFile], *, progress=None, cancel=None, **options
) -> list:
    """The outcomes of the files `items` as the engine gives them (no folders walked)."""
    run = analyze_paths(
        [],
        analyzer,
        AnalysisOptions(**options),
        progress=progress,
        cancel=cancel,
        discovered=(items, []),
    )
    return run.outcomes


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
    outcomes = _outcomes(analyzer, items, batch_size=4)
    assert [o.path for o in outcomes] == [i.path for i in items]
    cells = [o for o in outcomes if isinstance(o, CellResult)]
    errors = {o.path.name: (o.reason, o.kind) for o in outcomes if isinstance(o, FileError)}
    assert {c.path for c in cells} == set(good)
    assert errors == {
        "a_empty.png": ("empty file", UNREADABLE),
        "b_text.png": ("not an image", NOT_AN_IMAGE),
        "c_truncated.png": ("truncated PNG", UNREADABLE),
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
    one = _outcomes(analyzer, items, batch_size=1)
    many = _outcomes(analyzer, items, batch_size=32)
    np.testing.assert_allclose([c.p_all for c in one], [c.p_all for c in many], atol=1e-5)
    np.testing.assert_allclose(
        np.stack([c.heatmap for c in one]), np.stack([c.heatmap for c in many]), atol=1e-4
    )


def test_progress_reports_every_batch(analyzer, tmp_path: Path) -> None:
    write_dataset(tmp_path, n_per_class=5, seed=3, fmt="png")
    items, _ = discover([tmp_path])
    seen = []
    _outcomes(analyzer, items, batch_size=3, progress=seen.append)
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
        analyzer,
        AnalysisOptions(batch_size=2),
        cancel=cancel,
        progress=stop_after_two_batches,
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
    run = analyze_paths([tmp_path], analyzer, cancel=cancel, progress=lambda p: cancel.cancel())
    assert len(run.cells) == 2 and not run.info.cancelled
    assert run.info.finished is not None and run.info.model_name == "tiny-test"


def test_walk_errors_come_first_and_missing_inputs_are_errors(
    tiny_bundle, analyzer, tmp_path: Path
) -> None:
    write_dataset(tmp_path / "s", n_per_class=1, seed=6, fmt="png")
    run = analyze_paths([tmp_path / "nope", tmp_path / "s"], analyzer)
    assert isinstance(run.outcomes[0], FileError)
    assert run.outcomes[0].reason == "no such file or folder"
    assert run.outcomes[0].kind == UNREADABLE
    assert len(run.cells) == 2 and run.info.total_inputs == 3


def test_uncomputable_heatmap_is_an_error_not_a_picture(
    analyzer, tmp_path: Path, monkeypatch
) -> None:
    write_dataset(tmp_path, n_per_class=2, seed=7, fmt="png")
    items, _ = discover([tmp_path])
    import tensorflow as tf

    compiled = analyzer.runtime.gradcam._fn

    def second_image_fails(batch):
        p, cams, finite = compiled(batch)
        return p, cams, tf.tensor_scatter_nd_update(finite, [[1]], [False])

    monkeypatch.setattr(analyzer.runtime.gradcam, "_fn", second_image_fails)
    outcomes = _outcomes(analyzer, items, batch_size=4)
    assert isinstance(outcomes[1], FileError)
    assert "heatmap could not be computed" in outcomes[1].reason
    assert outcomes[1].kind == MODEL_FAILURE
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
        _outcomes(analyzer, items, batch_size=1)


def test_a_folder_of_broken_files_still_reports_progress_and_cancels(analyzer, tmp_path: Path):
    """Errors are passed on in chunks, so a run of unreadable files is not one silent block."""
    from leukgui.core.engine import ERRORS_PER_FLUSH

    n_bad = 3 * ERRORS_PER_FLUSH
    for i in range(n_bad):
        (tmp_path / f"broken{i:04d}.png").write_bytes(b"")
    write_dataset(tmp_path / "z", n_per_class=1, seed=9, fmt="png")
    items, _ = discover([tmp_path])
    seen = []
    outcomes = _outcomes(analyzer, items, batch_size=32, progress=seen.append)
    assert len(outcomes) == n_bad + 2
    assert [p.done for p in seen][:3] == [ERRORS_PER_FLUSH, 2 * ERRORS_PER_FLUSH, n_bad]

    cancel = CancelToken()
    partial = _outcomes(
        analyzer, items, batch_size=32, cancel=cancel, progress=lambda p: cancel.cancel()
    )
    assert len(partial) == ERRORS_PER_FLUSH


def test_a_run_is_one_stream_of_events(analyzer, tmp_path: Path) -> None:
    """RunStarted once, then Outcomes and Progress per batch, then RunFinished with it all."""
    write_dataset(tmp_path / "s", n_per_class=3, seed=10, fmt="png")
    (tmp_path / "s" / "notes.txt").write_text("not an image")
    inputs = [tmp_path / "missing", tmp_path / "s", tmp_path / "s" / "notes.txt"]
    events = list(iter_run(inputs, analyzer, AnalysisOptions(batch_size=4)))

    started, finished = events[0], events[-1]
    assert isinstance(started, RunStarted) and isinstance(finished, RunFinished)
    middle = events[1:-1]
    assert [type(e) for e in middle] == [Outcomes, Progress] * 2
    assert not any(isinstance(e, RunStarted | RunFinished) for e in middle)

    walk = started.run.outcomes
    assert [(Path(e.path).name, e.kind) for e in walk] == [
        ("missing", UNREADABLE),
        ("notes.txt", NOT_AN_IMAGE),
    ]
    assert started.total == 6
    assert started.run.info is finished.run.info
    assert started.run.outcomes is not finished.run.outcomes  # the receiver's own copy
    assert finished.run.info.total_inputs == 8
    assert finished.run.info.inputs == [str(p) for p in inputs]

    streamed = [o for e in middle if isinstance(e, Outcomes) for o in e.items]
    assert finished.run.outcomes == walk + streamed
    assert [p.done for p in middle if isinstance(p, Progress)] == [4, 6]
    assert finished.run.info.finished is not None and not finished.run.info.cancelled


def test_a_cancelled_stream_still_finishes_with_what_was_done(analyzer, tmp_path: Path) -> None:
    write_dataset(tmp_path, n_per_class=4, seed=11, fmt="png")
    cancel = CancelToken()
    events = []
    for event in iter_run([tmp_path], analyzer, AnalysisOptions(batch_size=2), cancel=cancel):
        events.append(event)
        if isinstance(event, Progress):
            cancel.cancel()
    assert [type(e) for e in events] == [RunStarted, Outcomes, Progress, RunFinished]
    run = events[-1].run
    assert run.info.cancelled and len(run.cells) == 2 and run.info.total_inputs == 8


def test_leaving_the_stream_early_stops_the_decoder(analyzer, tmp_path: Path) -> None:
    import threading

    write_dataset(tmp_path, n_per_class=10, seed=12, fmt="png", size=64)
    events = iter_run([tmp_path], analyzer, AnalysisOptions(batch_size=1))
    assert isinstance(next(events), RunStarted)
    assert isinstance(next(events), Outcomes)
    assert any(t.name == "leukgui-decoder" for t in threading.enumerate())
    events.close()
    assert not any(t.name == "leukgui-decoder" for t in threading.enumerate())


def test_options_are_checked_once_when_made() -> None:
    assert AnalysisOptions().detector == DetectorSettings()
    made = AnalysisOptions(detector={"max_candidates": 5})
    assert made.detector == DetectorSettings(max_candidates=5)
    assert AnalysisOptions(detector=made.detector) == made
    with pytest.raises(ValueError, match="image kind must be one of auto, cells, fields"):
        AnalysisOptions(image_kind="slides")
    with pytest.raises(ValueError, match="batch_size"):
        AnalysisOptions(batch_size=0)
    with pytest.raises(ValueError, match="max_pixels"):
        AnalysisOptions(max_pixels=-1)
    with pytest.raises(ValueError, match="unknown white-cell detector setting"):
        AnalysisOptions(detector={"max_cells": 5})
    with pytest.raises(ValueError, match="smooth must be a positive number"):
        AnalysisOptions(detector={"smooth": 0})


def test_the_options_reach_the_decoder_and_the_provenance(analyzer, tmp_path: Path) -> None:
    write_dataset(tmp_path, n_per_class=1, seed=13, fmt="png", size=64)
    options = AnalysisOptions(image_kind="cells", max_pixels=64 * 64 - 1, detector={"smooth": 2})
    run = analyze_paths([tmp_path], analyzer, options)
    assert [(e.reason, e.kind) for e in run.errors] == [("too large: 64 x 64 px", TOO_LARGE)] * 2
    assert run.info.extra["Image kind"] == "every image is a single-cell crop"
    assert '"smooth": 2' in run.info.extra["White-cell detector settings"]


@pytest.mark.parametrize(
    ("exception", "reason", "kind"),
    [
        (MemoryError(), "too large for memory", TOO_LARGE),
        (RuntimeError("boom"), "unexpected error: boom", UNEXPECTED),
    ],
)
def test_a_failing_decoder_call_becomes_an_error_of_its_kind(
    analyzer, tmp_path: Path, monkeypatch, exception, reason, kind
) -> None:
    import leukgui.core.engine as engine

    paths = write_dataset(tmp_path, n_per_class=1, seed=14, fmt="png", size=64)
    real = engine.read_image

    def decode(path, **kwargs):
        if Path(path) == paths[0]:
            raise exception
        return real(path, **kwargs)

    monkeypatch.setattr(engine, "read_image", decode)
    run = analyze_paths([tmp_path], analyzer)
    assert [(Path(e.path), e.reason, e.kind) for e in run.errors] == [(paths[0], reason, kind)]
    assert len(run.cells) == 1


# ------------------------------------------------ calibration and stain normalisation


def _spread_bundle(folder: Path, **manifest_extra):
    """A 64 px bundle whose P(ALL) spreads over 0.3..0.7 on synthetic cells: random weights
    leave EfficientNet's features near 1e-5, so the logits layer is scaled up to see them."""
    from leukgui.core.backbones import LOGITS_LAYER, build_classifier
    from leukgui.core.bundle import load_bundle, make_manifest, save_bundle

    model = build_classifier("efficientnetb0", weights=None, input_size=64, seed=7)
    layer = model.get_layer(LOGITS_LAYER)
    kernel, bias = layer.get_weights()
    rng = np.random.default_rng(0)
    layer.set_weights([rng.normal(0, 5e4, kernel.shape).astype(np.float32), bias])
    manifest = make_manifest(
        name="spread",
        version="1",
        backbone="efficientnetb0",
        input_size=64,
        threshold=0.5,
        uncertainty_band=(0.45, 0.55),
        **manifest_extra,
    )
    return load_bundle(save_bundle(model, manifest, folder))


@pytest.fixture(scope="module")
def spread(tmp_path_factory):
    return _spread_bundle(tmp_path_factory.mktemp("spread"))


@pytest.fixture(scope="module")
def cell_items(tmp_path_factory) -> list[InputFile]:
    """8 synthetic cells at exactly the model size (so the network sees the file's pixels)."""
    folder = tmp_path_factory.mktemp("cells64")
    return [InputFile(p, "s") for p in write_dataset(folder, 4, seed=3, fmt="png", size=64)]


def _variant(bundle, **changes):
    """The same loaded weights under a changed manifest (no file written)."""
    import dataclasses

    return dataclasses.replace(bundle, manifest={**bundle.manifest, **changes})


def _cells(model, items: list[InputFile], **options) -> list[CellResult]:
    run = analyze_paths(
        [], model, AnalysisOptions(image_kind="cells", **options), discovered=(items, [])
    )
    assert all(isinstance(o, CellResult) for o in run.outcomes)
    return run.cells


def test_a_temperature_divides_the_log_odds_before_the_calls(
    spread, cell_items: list[InputFile], tmp_path: Path
) -> None:
    plain = _cells(spread, cell_items)
    p1 = np.array([c.p_all for c in plain])
    assert p1.max() - p1.min() > 0.05  # the scores differ from cell to cell
    hot = _spread_bundle(tmp_path, temperature=2.0)  # written and loaded: the real path
    assert hot.temperature == 2.0
    warm = _cells(hot, cell_items)
    p2 = np.array([c.p_all for c in warm])
    z = np.log(p1 / (1 - p1)) / 2.0
    np.testing.assert_allclose(p2, 1 / (1 + np.exp(-z)), rtol=1e-5, atol=1e-6)
    assert np.abs(p2 - p1).max() > 0.01
    for a, b in zip(plain, warm, strict=True):  # heatmaps are not calibrated
        np.testing.assert_allclose(a.heatmap, b.heatmap, atol=1e-5)
    # The calls follow the calibrated score: a threshold between a cell's raw and calibrated
    # P(ALL) gives the call of the calibrated side.
    i = int(np.argmax(np.abs(p2 - p1)))
    threshold = float((p1[i] + p2[i]) / 2)
    sharp = _variant(
        spread,
        decision_threshold=threshold,
        uncertainty_band=[threshold, threshold],
        calibration={"method": "temperature", "temperature": 2.0},
    )
    called = _cells(sharp, cell_items)[i]
    assert called.p_all == pytest.approx(p2[i], rel=1e-5)
    expected = "ALL" if p2[i] > threshold else "HEM"
    assert called.label == expected
    assert expected != ("ALL" if p1[i] > threshold else "HEM")
    run = analyze_paths([], hot, AnalysisOptions(), discovered=(cell_items[:1], []))
    assert run.info.extra["Calibration"] == "temperature scaling, T = 2 (fitted on validation)"
    assert run.info.extra["Stain normalisation"] == "none"


def test_stain_normalisation_changes_only_the_networks_input(
    spread, cell_items: list[InputFile], tmp_path: Path
) -> None:
    import cv2

    from leukgui.core.imaging import decode_image
    from leukgui.core.stain import ReinhardStats, apply_reinhard, lab_statistics

    plain = _cells(spread, cell_items)
    target = ReinhardStats((55.0, 25.0, -25.0), (12.0, 7.0, 9.0), "3 training cells")
    stained = _cells(_variant(spread, stain_normalisation=target.to_manifest()), cell_items)
    p_plain = np.array([c.p_all for c in plain])
    p_stain = np.array([c.p_all for c in stained])
    assert np.abs(p_stain - p_plain).max() > 1e-3  # the input changed, so did the score
    # ... and only the input: the unnormalised bundle on pre-normalised files gives the same.
    pre = []
    for item in cell_items:
        out = tmp_path / item.path.name
        cv2.imwrite(str(out), apply_reinhard(decode_image(item.path), target)[..., ::-1])
        pre.append(InputFile(out, "s"))
    np.testing.assert_allclose([c.p_all for c in _cells(spread, pre)], p_stain, atol=1e-6)
    # A target equal to the cell's own statistics leaves the score where it was.
    rgb = decode_image(cell_items[0].path)
    mean, std = lab_statistics(rgb)
    own = ReinhardStats(tuple(mean), tuple(std))
    same = _cells(_variant(spread, stain_normalisation=own.to_manifest()), cell_items[:1])
    assert same[0].p_all == pytest.approx(p_plain[0], abs=2e-3)
    run = analyze_paths(
        [],
        _variant(spread, stain_normalisation=target.to_manifest()),
        AnalysisOptions(),
        discovered=(cell_items[:1], []),
    )
    assert "Reinhard" in run.info.extra["Stain normalisation"]


def test_field_cells_are_normalised_and_calibrated_too(spread, tmp_path: Path) -> None:
    import cv2

    from leukgui.core.engine import _decode_one
    from leukgui.core.fields import make_synthetic_field
    from leukgui.core.stain import ReinhardStats

    rgb, boxes = make_synthetic_field(3)
    path = tmp_path / "field.png"
    cv2.imwrite(str(path), rgb[..., ::-1])
    items = [InputFile(path, "s")]
    target = ReinhardStats((55.0, 25.0, -25.0), (12.0, 7.0, 9.0))
    options = AnalysisOptions(image_kind="fields")
    plain_cells, *_ = _decode_one(items[0], 64, options)
    stained_cells, *_ = _decode_one(items[0], 64, options, target)
    assert len(plain_cells) == len(stained_cells) >= 1
    for a, b in zip(plain_cells, stained_cells, strict=True):
        assert a.box == b.box
        background = a.pixels.max(axis=-1) <= 8
        np.testing.assert_array_equal(a.pixels[background], b.pixels[background])
        assert np.abs(a.pixels - b.pixels)[~background].mean() > 3.0

    def p_all(bundle) -> np.ndarray:
        run = analyze_paths([], bundle, options, discovered=(items, []))
        assert run.cells and not run.errors
        return np.array([c.p_all for c in run.cells])

    stain = {"stain_normalisation": target.to_manifest()}
    p_plain = p_all(spread)
    p_stain = p_all(_variant(spread, **stain))
    calibration = {"method": "temperature", "temperature": 2.0}
    p_both = p_all(_variant(spread, **stain, calibration=calibration))
    assert np.abs(p_stain - p_plain).max() > 1e-3
    z = np.log(p_stain / (1 - p_stain)) / 2.0
    np.testing.assert_allclose(p_both, 1 / (1 + np.exp(-z)), rtol=1e-5, atol=1e-6)
