"""Model bundles: round trip, hash check, manifest/model match, safe_mode, discovery."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from leukgui.core.backbones import build_classifier
from leukgui.core.bundle import (
    CONFLICT,
    COPIED,
    IDENTICAL,
    MANIFEST_MEMBER,
    MODEL_MEMBER,
    BundleError,
    BundleInfo,
    choose_bundle,
    find_bundles,
    install_bundle,
    load_bundle,
    make_manifest,
    read_manifest,
    save_bundle,
)
from leukgui.core.results import ALL, HEM, UNCERTAIN


def _rewrite(src: Path, dst: Path, *, manifest=None, model_bytes=None) -> Path:
    with zipfile.ZipFile(src) as archive:
        m = json.loads(archive.read(MANIFEST_MEMBER))
        data = archive.read(MODEL_MEMBER)
    if manifest is not None:
        m = manifest(m)
    if model_bytes is not None:
        data = model_bytes(data)
    with zipfile.ZipFile(dst, "w") as archive:
        archive.writestr(MANIFEST_MEMBER, json.dumps(m))
        archive.writestr(MODEL_MEMBER, data)
    return dst


def test_round_trip_keeps_predictions_and_manifest(tiny_bundle_path: Path, tiny_bundle) -> None:
    manifest = read_manifest(tiny_bundle_path)
    assert manifest["name"] == "tiny-test"
    assert manifest["class_names"] == ["HEM", "ALL"]
    assert manifest["cam_layer"] == "top_activation"
    assert len(manifest["weights_sha256"]) == 64
    fresh = build_classifier("efficientnetb0", weights=None, input_size=64, seed=7)
    x = np.random.default_rng(1).uniform(0, 255, (3, 64, 64, 3)).astype(np.float32)
    np.testing.assert_allclose(
        tiny_bundle.model.predict(x, verbose=0), fresh.predict(x, verbose=0), atol=1e-6
    )


def test_bundle_is_small_without_optimizer_state(tmp_path: Path) -> None:
    import keras

    model = build_classifier("efficientnetb0", weights=None, input_size=64, seed=1)
    model.compile(optimizer=keras.optimizers.Adam(), loss="sparse_categorical_crossentropy")
    model.fit(np.zeros((2, 64, 64, 3)), np.array([0, 1]), verbose=0)
    manifest = make_manifest(name="m", version="1", backbone="efficientnetb0", input_size=64)
    path = save_bundle(model, manifest, tmp_path)
    assert path.stat().st_size < 20e6  # weights alone; Adam state would add ~2x
    loaded = load_bundle(path)
    x = np.ones((1, 64, 64, 3), np.float32) * 120
    np.testing.assert_allclose(
        loaded.model.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6
    )


def test_changed_weights_are_refused(tiny_bundle_path: Path, tmp_path: Path) -> None:
    def flip_a_byte(data: bytes) -> bytes:
        middle = len(data) // 2
        return data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1 :]

    bad = _rewrite(tiny_bundle_path, tmp_path / "bad.leukmodel", model_bytes=flip_a_byte)
    with pytest.raises(BundleError, match="changed or damaged"):
        load_bundle(bad)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("input_size", 128, "manifest says input 128"),
        ("cam_layer", "block6a_expand_activation", "Grad-CAM layer"),
        ("backbone", "resnet50", "backbone resnet50"),
    ],
)
def test_manifest_that_does_not_match_the_model_is_refused(
    tiny_bundle_path: Path, tmp_path: Path, field: str, value, message: str
) -> None:
    bad = _rewrite(
        tiny_bundle_path, tmp_path / f"{field}.leukmodel", manifest=lambda m: {**m, field: value}
    )
    with pytest.raises(BundleError, match=message):
        load_bundle(bad)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda m: {k: v for k, v in m.items() if k != "decision_threshold"}, "missing"),
        (lambda m: {**m, "format": "something-else"}, "not a LeukGUI model file"),
        (lambda m: {**m, "format_version": 99}, "newer than this LeukGUI"),
        (lambda m: {**m, "uncertainty_band": [0.6, 0.9]}, "must contain the threshold"),
        (lambda m: {**m, "class_names": ["ALL", "HEM"]}, "classes"),
    ],
)
def test_bad_manifests_are_refused(tiny_bundle_path: Path, tmp_path: Path, change, message):
    bad = _rewrite(tiny_bundle_path, tmp_path / "bad.leukmodel", manifest=change)
    with pytest.raises(BundleError, match=message):
        read_manifest(bad)


def test_not_a_bundle(tmp_path: Path) -> None:
    junk = tmp_path / "junk.leukmodel"
    junk.write_bytes(b"hello")
    with pytest.raises(BundleError, match="not a readable model file"):
        read_manifest(junk)


def test_safe_mode_refuses_code_inside_the_model(tmp_path: Path, tiny_bundle_path: Path) -> None:
    """A model carrying a Lambda layer (arbitrary code) must not be deserialised."""
    import hashlib

    import keras

    inputs = keras.Input((64, 64, 3))
    outputs = keras.layers.Lambda(lambda t: t * 2.0)(inputs)
    lam = keras.Model(inputs, outputs)
    path = tmp_path / "lam.keras"
    lam.save(path)
    data = path.read_bytes()
    bad = _rewrite(
        tiny_bundle_path,
        tmp_path / "lambda.leukmodel",
        manifest=lambda m: {**m, "weights_sha256": hashlib.sha256(data).hexdigest()},
        model_bytes=lambda _: data,
    )
    with pytest.raises(BundleError, match="cannot be loaded"):
        load_bundle(bad)


def test_bundles_are_never_overwritten(tiny_bundle_path: Path, tiny_bundle) -> None:
    with pytest.raises(FileExistsError):
        save_bundle(tiny_bundle.model, tiny_bundle.manifest, tiny_bundle_path)


def test_labels_follow_threshold_and_band(tiny_bundle) -> None:
    assert tiny_bundle.uncertainty_band == (0.4, 0.6)
    assert tiny_bundle.label(0.9) == ALL
    assert tiny_bundle.label(0.6) == ALL
    assert tiny_bundle.label(0.55) == UNCERTAIN
    assert tiny_bundle.label(0.41) == UNCERTAIN
    assert tiny_bundle.label(0.4) == HEM
    assert tiny_bundle.label(0.01) == HEM


def test_discovery_and_choice(tiny_bundle_path: Path, tmp_path: Path, monkeypatch) -> None:
    import shutil

    user = tmp_path / "user"
    (user / "models").mkdir(parents=True)
    monkeypatch.setenv("LEUKGUI_USER_DIR", str(user))
    resources = tmp_path / "resources"
    (resources / "models").mkdir(parents=True)
    monkeypatch.setenv("LEUKGUI_RESOURCES", str(resources))
    demo = _rewrite(
        tiny_bundle_path,
        resources / "models" / "demo.leukmodel",
        manifest=lambda m: {**m, "name": "demo", "demo": True},
    )
    with pytest.raises(BundleError, match="no model named 'lab'"):
        choose_bundle("lab")
    assert choose_bundle().path == demo  # only the demo is installed
    shutil.copy(tiny_bundle_path, user / "models" / "lab-v1.leukmodel")
    _rewrite(
        tiny_bundle_path,
        user / "models" / "lab-v2.leukmodel",
        manifest=lambda m: {**m, "name": "lab", "version": "2"},
    )
    _rewrite(
        tiny_bundle_path,
        user / "models" / "lab-v10.leukmodel",
        manifest=lambda m: {**m, "name": "lab", "version": "10"},
    )
    (user / "models" / "broken.leukmodel").write_bytes(b"not a zip")
    found, broken = find_bundles()
    assert {(b.name, b.version, b.source) for b in found} == {
        ("demo", "1", "bundled"),
        ("tiny-test", "1", "user"),
        ("lab", "2", "user"),
        ("lab", "10", "user"),
    }
    assert [p.name for p, _ in broken] == ["broken.leukmodel"]
    assert choose_bundle("lab").version == "10"  # numeric, not text, order
    assert choose_bundle("lab-v2").version == "2"
    assert choose_bundle().name != "demo"  # a real model wins over the demo
    assert choose_bundle(str(demo)).source == "file"
    with pytest.raises(BundleError, match="not found"):
        choose_bundle(str(tmp_path / "missing.leukmodel"))


# ---------------------------------------------------------------------------- installing


def test_install_copies_then_finds_the_identical_file(tiny_bundle_path: Path, tmp_path) -> None:
    models = tmp_path / "models"
    first = install_bundle(tiny_bundle_path, models)
    assert (first.status, first.installed) == (COPIED, True)
    assert first.target == models / tiny_bundle_path.name
    assert first.target.read_bytes() == tiny_bundle_path.read_bytes()
    again = install_bundle(tiny_bundle_path, models)
    assert (again.status, again.target) == (IDENTICAL, first.target)
    assert sorted(p.name for p in models.iterdir()) == [tiny_bundle_path.name]  # no leftovers


def test_install_never_overwrites_a_file_of_the_same_name(tiny_bundle_path: Path, tmp_path) -> None:
    models = tmp_path / "models"
    install_bundle(tiny_bundle_path, models)
    before = (models / tiny_bundle_path.name).read_bytes()
    other = tmp_path / "elsewhere" / tiny_bundle_path.name
    other.parent.mkdir()
    _rewrite(tiny_bundle_path, other, manifest=lambda m: {**m, "description": "edited"})
    outcome = install_bundle(other, models)
    assert (outcome.status, outcome.installed) == (CONFLICT, False)
    assert "rename the file" in outcome.reason
    assert (models / tiny_bundle_path.name).read_bytes() == before


def test_install_refuses_a_second_model_with_the_same_name_and_version(
    tiny_bundle_path: Path, tmp_path
) -> None:
    """Reports name a model by name and version: two sets of weights under one name would be
    indistinguishable in a signed report."""
    models = tmp_path / "models"
    install_bundle(tiny_bundle_path, models)
    twin = build_classifier("efficientnetb0", weights=None, input_size=64, seed=8)
    manifest = read_manifest(tiny_bundle_path)
    manifest = make_manifest(
        name=manifest["name"],
        version=manifest["version"],
        backbone="efficientnetb0",
        input_size=64,
        threshold=0.5,
        uncertainty_band=(0.4, 0.6),
    )
    (tmp_path / "other").mkdir()
    other = save_bundle(twin, manifest, tmp_path / "other" / "renamed.leukmodel")
    outcome = install_bundle(other, models)
    assert outcome.status == CONFLICT
    assert "already installed" in outcome.reason and "tiny-test" in outcome.reason
    assert not (models / "renamed.leukmodel").exists()


def test_install_rejects_a_damaged_file_and_leaves_nothing(
    tiny_bundle_path: Path, tmp_path
) -> None:
    models = tmp_path / "models"
    bad = _rewrite(
        tiny_bundle_path, tmp_path / "bad.leukmodel", model_bytes=lambda b: b[:-10] + b"0" * 10
    )
    with pytest.raises(BundleError):
        install_bundle(bad, models)
    assert not models.exists() or not any(models.iterdir())


def test_score_warning_flags_models_without_good_held_out_scores() -> None:
    def info(metrics: object) -> BundleInfo:
        return BundleInfo(Path("m.leukmodel"), {"metrics": metrics}, "user")

    assert "no held-out scores" in info({}).score_warning
    assert "no held-out scores" in info(None).score_warning
    assert "no held-out scores" in info({"balanced_accuracy": None}).score_warning
    weak = info({"evaluated_on": "test", "balanced_accuracy": 0.5}).score_warning
    assert "50.0%" in weak and "80%" in weak
    validation = {"evaluated_on": "validation", "balanced_accuracy": 0.95}
    assert "validation" in info(validation).score_warning
    assert info({"evaluated_on": "test", "balanced_accuracy": 0.91}).score_warning == ""
