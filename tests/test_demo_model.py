"""The bundled demo model: its notice, its held-out score, and heatmaps that sit on the cell."""

from __future__ import annotations

import numpy as np
import pytest

from leukgui.core.imaging import to_model_input
from leukgui.core.overlay import heatmap_to_image
from leukgui.core.results import ALL, DEMO_NOTICE
from leukgui.core.synthetic import generate_cells

pytestmark = pytest.mark.slow


def test_manifest_says_demo_and_records_a_held_out_score(demo_bundle) -> None:
    manifest = demo_bundle.manifest
    assert demo_bundle.demo and manifest["notice"] == DEMO_NOTICE
    assert manifest["backbone"] == "efficientnetb0" and manifest["input_size"] == 224
    assert manifest["metrics"]["balanced_accuracy"] >= 0.95
    # The Keras weights plus the same weights in the ONNX graph (issue 15): about 30 MB.
    assert demo_bundle.path.stat().st_size <= 35e6
    assert demo_bundle.graph is not None and demo_bundle.graph.origin == "bundle"


def test_the_demo_file_is_signed_and_its_weights_are_known_as_the_demo(demo_bundle) -> None:
    """The shipped file records the identity that covers its manifest (format 2), and its
    weights are the ones `DEMO_WEIGHTS_SHA256` lists, so no edited copy can drop `demo`.
    Regenerating the demo (`python -m training.demo`) means adding its new weights' hash."""
    from leukgui.core.bundle import DEMO_WEIGHTS_SHA256, FORMAT_VERSION, bundle_identity

    manifest = demo_bundle.manifest
    assert manifest["format_version"] == FORMAT_VERSION == 2
    assert demo_bundle.sha256 == manifest["bundle_sha256"] == bundle_identity(manifest)
    assert demo_bundle.weights_sha256 in DEMO_WEIGHTS_SHA256


def test_demo_model_separates_fresh_synthetic_cells(demo_bundle) -> None:
    """Cells from a seed the training never saw, scored again here (not read from the file)."""
    from leukgui.core.engine import Analyzer

    cells = list(generate_cells(64, seed=90210))
    batch = np.stack([to_model_input(c.image, 224) for c in cells])
    p_all, _, ok = Analyzer(demo_bundle).runtime(batch)
    assert ok.all()
    truth = np.array([c.label == ALL for c in cells])
    called = p_all >= demo_bundle.threshold
    sensitivity = (called & truth).sum() / truth.sum()
    specificity = (~called & ~truth).sum() / (~truth).sum()
    assert (sensitivity + specificity) / 2 >= 0.95


def test_heatmap_mass_lies_on_the_cell(demo_bundle) -> None:
    """At least 80% of each ALL cell's Grad-CAM mass must fall inside the cell, not on black."""
    from leukgui.core.engine import Analyzer

    cells = [c for c in generate_cells(40, seed=4242) if c.label == ALL]
    batch = np.stack([to_model_input(c.image, 224) for c in cells])
    gradcam = Analyzer(demo_bundle).runtime
    _, raw, ok = gradcam(batch)
    assert ok.all()
    cams = gradcam.align(raw)
    fractions = []
    for cell, cam in zip(cells, cams, strict=True):
        heat = heatmap_to_image(cam, cell.image.shape[1], cell.image.shape[0])
        assert heat.sum() > 0, "an empty heatmap explains nothing"
        fractions.append(float(heat[cell.mask].sum() / heat.sum()))
    assert min(fractions) >= 0.80, f"heatmap mass inside the cell: {sorted(fractions)[:5]}"
