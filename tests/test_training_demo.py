"""The demo-model trainer: its background-evidence penalty and a tiny end-to-end run."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from leukgui.core.backbones import build_classifier
from leukgui.core.bundle import load_bundle
from leukgui.core.results import DEMO_NOTICE
from training.demo import background_evidence_model, train_demo


def test_background_share_follows_the_foreground() -> None:
    model = build_classifier("efficientnetb0", weights=None, input_size=96, seed=2)
    trainer = background_evidence_model(model)
    rng = np.random.default_rng(0)
    full = rng.uniform(1, 255, (1, 96, 96, 3)).astype(np.float32)  # no black pixel at all
    half = full.copy()
    half[:, :, :48] = 0  # left half black
    corner = np.zeros_like(full)
    corner[:, 64:, 64:] = full[:, 64:, 64:]  # a small cell in one corner, the rest black
    batch = np.concatenate([full, half, corner])
    probabilities, share = trainer.predict(batch, verbose=0)
    np.testing.assert_allclose(probabilities, model.predict(batch, verbose=0), atol=1e-5)
    assert share[0] < 1e-6
    assert 0.2 < share[1] < 0.8
    assert share[2] > share[1]


def test_tiny_training_run_writes_a_demo_bundle(tmp_path: Path) -> None:
    path = train_demo(
        tmp_path / "demo.leukmodel",
        n_train=16,
        n_val=8,
        n_test=8,
        epochs=1,
        batch=8,
        input_size=64,
        log=lambda *_: None,
    )
    bundle = load_bundle(path)
    assert bundle.demo and bundle.manifest["notice"] == DEMO_NOTICE
    assert bundle.manifest["input_size"] == 64
    assert bundle.manifest["training_data"]["train_cells"] == {"ALL": 8, "HEM": 8}
    assert 0.0 <= bundle.manifest["metrics"]["balanced_accuracy"] <= 1.0
    assert bundle.manifest["metrics"]["n"] == 8
