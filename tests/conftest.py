"""Shared fixtures. Tests never touch the real per-user folder or the Keras cache."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
CNMC_SAMPLES = SHARED_DATA / "cnmc-samples"
DEMO_BUNDLE = REPO / "resources" / "models" / "efficientnetb0-demo.leukmodel"


@pytest.fixture(autouse=True)
def _answered_window_dialogs(request: pytest.FixtureRequest, monkeypatch) -> dict:
    """The window's modal questions, answered so a test never blocks on one: review work is
    discarded when a test window closes, and a sign-off is confirmed. A test that is about
    a dialog sets the answers (and reads the questions) through this fixture's dict."""
    answers: dict = {"unsaved": "discard", "sign_off": True, "restore": "later", "asked": []}
    if "qtbot" not in request.fixturenames:
        return answers
    from leukgui.gui.main_window import MainWindow

    def unsaved(self, action: str, what: str, *, can_export: bool = True) -> str:
        answers["asked"].append(("unsaved", action, what))
        answers["can_export"] = can_export
        return answers["unsaved"]

    def sign_off(self, sample: str, text: str) -> bool:
        answers["asked"].append(("sign_off", sample, text))
        return answers["sign_off"]

    def restore(self, text: str) -> str:
        answers["asked"].append(("restore", text))
        return answers["restore"]

    monkeypatch.setattr(MainWindow, "_ask_unsaved", unsaved)
    monkeypatch.setattr(MainWindow, "_ask_restore", restore)
    monkeypatch.setattr(MainWindow, "_confirm_sign_off", sign_off)
    return answers


@pytest.fixture(autouse=True)
def _isolated_user_dirs(tmp_path_factory: pytest.TempPathFactory, monkeypatch) -> None:
    """Point the per-user folder and the Keras home at empty temporary folders."""
    monkeypatch.setenv("LEUKGUI_USER_DIR", str(tmp_path_factory.mktemp("user")))
    monkeypatch.setenv("KERAS_HOME", str(tmp_path_factory.mktemp("keras-home")))


@pytest.fixture(scope="session")
def tiny_bundle_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-weight EfficientNetB0 bundle at 64 px: fast to load, real in every other way."""
    from leukgui.core.backbones import build_classifier
    from leukgui.core.bundle import make_manifest, save_bundle

    model = build_classifier("efficientnetb0", weights=None, input_size=64, seed=7)
    manifest = make_manifest(
        name="tiny-test",
        version="1",
        backbone="efficientnetb0",
        input_size=64,
        threshold=0.5,
        uncertainty_band=(0.4, 0.6),
    )
    return save_bundle(model, manifest, tmp_path_factory.mktemp("bundles"))


@pytest.fixture(scope="session")
def tiny_bundle(tiny_bundle_path: Path):
    from leukgui.core.bundle import load_bundle

    return load_bundle(tiny_bundle_path)


@pytest.fixture(scope="session")
def demo_bundle():
    from leukgui.core.bundle import load_bundle

    assert DEMO_BUNDLE.is_file(), f"the bundled demo model is missing: {DEMO_BUNDLE}"
    return load_bundle(DEMO_BUNDLE, source="bundled")
