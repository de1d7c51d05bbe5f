"""A frozen app finds its bundled resources where a source checkout does, and keeps user
data in the per-user folder, never beside the program."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from leukgui.core import paths
from leukgui.core.backbones import WeightsMissingError, get_spec, resolve_imagenet_weights

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def no_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("LEUKGUI_RESOURCES", "LEUKGUI_USER_DIR"):
        monkeypatch.delenv(name, raising=False)


def test_source_checkout_uses_the_repository_resources(no_overrides) -> None:
    assert not hasattr(sys, "_MEIPASS")
    assert paths.resources_dir() == REPO / "resources"
    assert paths.bundled_models_dir() == REPO / "resources" / "models"
    assert any(paths.bundled_models_dir().glob("*.leukmodel"))
    assert paths.samples_dir().is_dir()


def test_frozen_app_uses_its_internal_resources_and_bundled_weights(
    no_overrides, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    frozen = tmp_path / "LeukGUI" / "_internal"
    weights = frozen / "resources" / "weights"
    weights.mkdir(parents=True)
    (frozen / "resources" / "models").mkdir()
    (frozen / "resources" / "samples").mkdir()
    monkeypatch.setattr(sys, "_MEIPASS", str(frozen), raising=False)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "empty-keras-home"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "home" / ".local" / "share"))

    assert paths.resources_dir() == frozen / "resources"
    assert paths.bundled_models_dir() == frozen / "resources" / "models"
    assert paths.samples_dir() == frozen / "resources" / "samples"

    spec = get_spec("efficientnetb0")
    with pytest.raises(WeightsMissingError) as missing:
        resolve_imagenet_weights("efficientnetb0", verify=False)
    assert spec.weights_file in str(missing.value) and str(weights) in str(missing.value)
    (weights / spec.weights_file).write_bytes(b"weights the installer bundled")
    assert resolve_imagenet_weights("efficientnetb0", verify=False) == weights / spec.weights_file

    # User data (models, settings, sessions) never lands inside the program folder.
    user = paths.user_dir()
    assert user.name == "LeukGUI"
    assert tmp_path / "LeukGUI" not in user.parents and user != tmp_path / "LeukGUI"
    assert paths.user_models_dir().parent == user


def test_resources_override_wins(no_overrides, monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setattr(sys, "_MEIPASS", str(tmp_path / "frozen"), raising=False)
    (tmp_path / "frozen" / "resources").mkdir(parents=True)
    monkeypatch.setenv("LEUKGUI_RESOURCES", str(tmp_path / "elsewhere"))
    assert paths.resources_dir() == tmp_path / "elsewhere"
