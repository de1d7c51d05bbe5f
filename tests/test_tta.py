"""Test-time augmentation: P(ALL) is the mean over the 8 flips/quarter turns of each cell,
the heatmap stays the unturned cell's, and the run, the report and `evaluate` say so."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from leukgui.core.engine import TTA_ROW, AnalysisOptions, Analyzer, analyze_paths
from leukgui.core.results import CellResult, InputFile
from leukgui.core.synthetic import write_dataset
from leukgui.core.tta import TTA_DESCRIPTION, VIEWS, dihedral_view, dihedral_views


def _spread_model():
    """A 64 px classifier whose P(ALL) varies from cell to cell and with orientation: random
    weights leave EfficientNet's features near 1e-5, so the logits layer is scaled up."""
    from leukgui.core.backbones import LOGITS_LAYER, build_classifier

    model = build_classifier("efficientnetb0", weights=None, input_size=64, seed=7)
    layer = model.get_layer(LOGITS_LAYER)
    kernel, bias = layer.get_weights()
    rng = np.random.default_rng(0)
    layer.set_weights([rng.normal(0, 5e4, kernel.shape).astype(np.float32), bias])
    return model


@pytest.fixture(scope="module")
def spread(tmp_path_factory):
    from leukgui.core.bundle import load_bundle, make_manifest, save_bundle

    manifest = make_manifest(
        name="spread",
        version="1",
        backbone="efficientnetb0",
        input_size=64,
        threshold=0.5,
        uncertainty_band=(0.45, 0.55),
    )
    return load_bundle(save_bundle(_spread_model(), manifest, tmp_path_factory.mktemp("b")))


@pytest.fixture(scope="module")
def analyzer(spread) -> Analyzer:
    return Analyzer(spread)


@pytest.fixture(scope="module")
def cell_items(tmp_path_factory) -> list[InputFile]:
    """6 synthetic cells at exactly the model size (the network sees the file's pixels)."""
    folder = tmp_path_factory.mktemp("cells64")
    return [InputFile(p, "s") for p in write_dataset(folder, 3, seed=5, fmt="png", size=64)]


def _run(analyzer, items: list[InputFile], **options):
    return analyze_paths(
        [], analyzer, AnalysisOptions(image_kind="cells", **options), discovered=(items, [])
    )


def _pixels(items: list[InputFile]) -> np.ndarray:
    from leukgui.core.imaging import decode_image, to_model_input

    return np.stack([to_model_input(decode_image(i.path), 64) for i in items])


def test_the_eight_views_are_the_flips_and_quarter_turns() -> None:
    batch = np.random.default_rng(0).uniform(0, 255, (2, 5, 5, 3)).astype(np.float32)
    views = dihedral_views(batch)
    assert len(views) == VIEWS == 8
    assert views[0] is batch
    np.testing.assert_array_equal(views[1][0], np.rot90(batch[0]))
    np.testing.assert_array_equal(views[4][1], np.fliplr(batch[1]))
    np.testing.assert_array_equal(views[6][0], np.fliplr(np.rot90(batch[0], 2)))
    keys = {v.tobytes() for v in views}
    assert len(keys) == 8  # all different on a generic image
    with pytest.raises(ValueError):
        dihedral_view(batch, 8)


def test_tta_is_the_mean_of_the_eight_views_by_hand(
    spread, analyzer, cell_items: list[InputFile]
) -> None:
    plain = _run(analyzer, cell_items)
    tta = _run(analyzer, cell_items, tta=True)
    assert len(tta.cells) == len(cell_items)
    x = _pixels(cell_items)
    by_hand = np.mean(
        [np.asarray(spread.model(v, training=False))[:, 1] for v in dihedral_views(x)], axis=0
    )
    got = np.array([c.p_all for c in tta.cells])
    np.testing.assert_allclose(got, by_hand, atol=2e-5)
    p_plain = np.array([c.p_all for c in plain.cells])
    assert np.abs(got - p_plain).max() > 1e-3  # the views really differ for these cells
    for a, b in zip(plain.cells, tta.cells, strict=True):
        np.testing.assert_allclose(a.heatmap, b.heatmap, atol=1e-6)  # identity view's map
        assert b.label == spread.label(b.p_all)  # the call is made on the mean
    assert tta.info.extra[TTA_ROW] == TTA_DESCRIPTION == "8 views (flips, 90° rotations)"
    assert plain.info.extra[TTA_ROW] == "off"


def test_a_rotation_symmetric_cell_gets_its_plain_score(
    analyzer, cell_items: list[InputFile], tmp_path: Path
) -> None:
    import cv2

    x = _pixels(cell_items[:1])[0]
    symmetric = np.rint(np.mean(dihedral_views(x[None]), axis=0)[0]).astype(np.uint8)
    for view in dihedral_views(symmetric[None]):
        np.testing.assert_array_equal(view[0], symmetric)  # truly invariant
    path = tmp_path / "symmetric.png"
    cv2.imwrite(str(path), symmetric[..., ::-1])
    items = [InputFile(path, "s")]
    plain = _run(analyzer, items).cells[0]
    tta = _run(analyzer, items, tta=True).cells[0]
    assert tta.p_all == pytest.approx(plain.p_all, abs=1e-5)


def test_tta_applies_the_temperature_to_each_view(spread, cell_items: list[InputFile]) -> None:
    import dataclasses

    hot = dataclasses.replace(
        spread,
        manifest={**spread.manifest, "calibration": {"method": "temperature", "temperature": 0.5}},
    )
    got = np.array([c.p_all for c in _run(hot, cell_items, tta=True).cells])
    views = [
        np.asarray(spread.model(v, training=False))[:, 1]
        for v in dihedral_views(_pixels(cell_items))
    ]
    calibrated = [1 / (1 + np.exp(-np.log(p / (1 - p)) / 0.5)) for p in views]
    np.testing.assert_allclose(got, np.mean(calibrated, axis=0), atol=5e-5)


def test_tta_must_be_true_or_false() -> None:
    with pytest.raises(ValueError, match="tta must be true or false"):
        AnalysisOptions(tta="yes")  # type: ignore[arg-type]
    assert AnalysisOptions().tta is False


def test_the_report_names_tta_with_the_model(
    analyzer, cell_items: list[InputFile], tmp_path: Path
) -> None:
    from openpyxl import load_workbook

    from leukgui.core.report import write_excel

    out = tmp_path / "r.xlsx"
    write_excel(_run(analyzer, cell_items[:2], tta=True), out, images=False)
    ws = load_workbook(out)["Provenance"]
    rows = [(r[0].value, r[1].value) for r in ws.iter_rows(min_row=3) if r[0].value]
    keys = [k for k, _ in rows]
    assert ("Test-time augmentation", "8 views (flips, 90° rotations)") in rows
    assert keys.count("Test-time augmentation") == 1
    # Shown with the model, right after its band, with calibration and stain.
    band = keys.index("Uncertainty band (P(ALL))")
    assert keys[band + 1 : band + 4] == [
        "Calibration",
        "Stain normalisation",
        "Test-time augmentation",
    ]


def test_evaluate_gives_the_plain_and_the_tta_scores_and_their_speeds(
    spread, cell_items: list[InputFile]
) -> None:
    from leukgui.core.results import ALL
    from training.datasets import DatasetScan, Record
    from training.evaluate import evaluate_bundle

    records = [
        Record(i.path, ALL if i.path.parent.name == "all" else "HEM", f"S{k % 2}")
        for k, i in enumerate(cell_items)
    ]
    scan = DatasetScan(records, source="cells")
    plain_only = evaluate_bundle(spread, scan)
    assert plain_only.tta_evaluation is None and plain_only.tta_images_per_second is None
    assert plain_only.images_per_second > 0
    both = evaluate_bundle(spread, scan, tta=True)
    assert both.tta_evaluation is not None
    assert both.images_per_second > 0 and both.tta_images_per_second > 0
    plain_p = both.evaluation.predictions.p_all
    tta_p = both.tta_evaluation.predictions.p_all
    np.testing.assert_allclose(plain_p, plain_only.evaluation.predictions.p_all, atol=1e-6)
    expected = [c.p_all for c in _run(spread, cell_items, tta=True).cells]
    np.testing.assert_allclose(tta_p, expected, atol=1e-6)
    assert not np.allclose(plain_p, tta_p, atol=1e-4)
    assert any("8 views" in n for n in both.tta_evaluation.notes)


def test_the_cli_has_a_tta_switch() -> None:
    import argparse

    from leukgui.cli.analyze import add_parsers

    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    add_parsers(parser, sub)
    assert parser.parse_args(["analyze", "x.png", "--tta"]).tta is True
    assert parser.parse_args(["analyze", "x.png"]).tta is False


def test_outcomes_are_cell_results(analyzer, cell_items: list[InputFile]) -> None:
    run = _run(analyzer, cell_items[:2], tta=True, batch_size=1)
    assert [type(o) for o in run.outcomes] == [CellResult, CellResult]
