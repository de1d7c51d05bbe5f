"""Two-phase training end to end on synthetic cells: bundle, scores, cancel, refusals.

ImageNet weights cannot be downloaded here, so the transfer-learning run starts from a no-top
weights file this test writes into the Keras cache, and loads it through the same path that
loads the real ImageNet file.
"""

from __future__ import annotations

import json
import zipfile
from datetime import date
from pathlib import Path

import h5py
import numpy as np
import pytest

from leukgui.core.backbones import WeightsMissingError, get_spec
from leukgui.core.results import CancelToken
from leukgui.core.synthetic import write_dataset
from training.datasets import DatasetScan, Record, read_dataset
from training.history import PHASE_FINE_TUNE, PHASE_HEAD
from training.pipeline import Augmentation
from training.splits import LeakageError, Split, split_by_subject
from training.trainer import (
    TrainConfig,
    TrainingCancelled,
    next_bundle_path,
    set_phase,
    train_backbone,
)

SIZE = 32


def _write_imagenet_file(path: Path, seed: int = 11) -> list[np.ndarray]:
    """A no-top EfficientNetB0 weights file in Keras's legacy ImageNet layout."""
    import keras
    from keras.src.legacy.saving import legacy_h5_format

    keras.utils.set_random_seed(seed)
    reference = keras.applications.EfficientNetB0(
        weights=None, include_top=False, input_shape=(SIZE, SIZE, 3)
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as handle:
        legacy_h5_format.save_weights_to_hdf5_group(handle, reference)
    return {w.path: w.numpy() for w in reference.weights}


@pytest.fixture(scope="module")
def cells(tmp_path_factory: pytest.TempPathFactory) -> DatasetScan:
    folder = tmp_path_factory.mktemp("cells")
    write_dataset(folder, 30, 41, fmt="png", layout="cnmc", subjects=6, size=96)
    return read_dataset(folder)


@pytest.fixture(scope="module")
def split(cells: DatasetScan) -> Split:
    return split_by_subject(cells.records, validation=0.25, test=0.25, seed=3)


def _config(**changes) -> TrainConfig:
    base = dict(
        backbone="efficientnetb0",
        weights="imagenet",
        input_size=SIZE,
        batch_size=16,
        epochs=3,
        head_epochs=1,
        seed=5,
        verify_weights=False,  # the test's file is not the official one
        augmentation=Augmentation.none(),
        inference_graph=False,  # the graph is tested in test_training_cli and test_runtimes
    )
    base.update(changes)
    return TrainConfig(**base)


@pytest.fixture(scope="module")
def transfer_run(split: Split, tmp_path_factory: pytest.TempPathFactory):
    """One transfer-learning run from a weights file placed in the Keras cache."""
    keras_home = tmp_path_factory.mktemp("keras-cache")
    weights_file = keras_home / "models" / get_spec("efficientnetb0").weights_file
    reference = _write_imagenet_file(weights_file)
    out = tmp_path_factory.mktemp("models")
    events = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("KERAS_HOME", str(keras_home))
        run = train_backbone(split, _config(), out, progress=events.append, source="synthetic")
    return run, reference, out, events


def test_two_phases_run_in_order_and_report_progress(transfer_run) -> None:
    run, _, _, events = transfer_run
    assert [e.phase for e in run.history] == [PHASE_HEAD, PHASE_FINE_TUNE, PHASE_FINE_TUNE]
    assert [e.epoch for e in run.history] == [1, 2, 3]
    assert run.history[1].learning_rate == pytest.approx(1e-4)  # the lower fine-tuning rate
    epochs = [e for e in events if e.kind == "epoch"]
    batches = [e for e in events if e.kind == "batch"]
    assert [e.epoch_log for e in epochs] == run.history
    assert len(batches) == 3 * epochs[0].batches
    assert all(1 <= b.batch <= b.batches for b in batches)


def test_bundle_is_versioned_loadable_and_carries_split_threshold_and_scores(
    transfer_run, split: Split
) -> None:
    from leukgui.core.bundle import load_bundle

    run, _, out, _ = transfer_run
    assert run.bundle_path == out / f"efficientnetb0-{date.today().isoformat()}.leukmodel"
    bundle = load_bundle(run.bundle_path)
    m = bundle.manifest
    assert m["decision_threshold"] == pytest.approx(run.validation.threshold)
    assert tuple(m["uncertainty_band"]) == pytest.approx(run.validation.uncertainty_band)
    assert m["training_data"]["split"]["subjects"]["test"] == sorted(split.subjects("test"))
    assert m["training_data"]["split"]["seed"] == 3
    assert m["metrics"]["n"] == len(split.test) == run.test.metrics.n
    assert m["metrics"]["validation"]["n"] == len(split.validation)
    assert m["metrics"]["balanced_accuracy"] == pytest.approx(run.test.metrics.balanced_accuracy)
    assert m["training_data"]["settings"]["weights"] == "imagenet"
    assert bundle.model.dtype_policy.name == "float32"
    # The run folder holds the log, curves and report; the checkpoint went into the bundle.
    folder = run.run_folder
    assert folder.name == run.bundle_path.stem + "-training"
    assert {p.name for p in folder.iterdir()} == {
        "training_log.csv",
        "curves.png",
        "training_report.xlsx",
    }
    assert len(run.log_csv.read_text().strip().splitlines()) == 1 + len(run.history)


def test_fine_tuning_freezes_batchnorm_and_the_lower_backbone(split: Split) -> None:
    import keras

    from leukgui.core.backbones import build_classifier

    model = build_classifier("efficientnetb0", weights=None, input_size=SIZE, seed=1)
    backbone = model.get_layer("backbone")
    set_phase(model, PHASE_HEAD, "block7")
    trainable = {v.path.split("/")[0] for v in model.trainable_variables}
    assert trainable == {"logits"}
    set_phase(model, PHASE_FINE_TUNE, "block7")
    names = [layer.name for layer in backbone.layers]
    start = next(i for i, n in enumerate(names) if n.startswith("block7"))
    for i, layer in enumerate(backbone.layers):
        if isinstance(layer, keras.layers.BatchNormalization):
            assert not layer.trainable, layer.name
        elif layer.weights:
            assert layer.trainable == (i >= start), layer.name
    assert any(layer.trainable and layer.weights for layer in backbone.layers)


def test_head_phase_leaves_the_loaded_imagenet_weights_untouched(
    split: Split, tmp_path: Path, monkeypatch
) -> None:
    """Proves both that the weights file was loaded and that the head phase froze it."""
    from leukgui.core.bundle import load_bundle
    from leukgui.core.paths import bundled_weights_dir

    named = tmp_path / "my-weights.h5"
    reference = _write_imagenet_file(named, seed=23)
    assert not (bundled_weights_dir() / get_spec("efficientnetb0").weights_file).exists()
    run = train_backbone(split, _config(weights=str(named), epochs=1), tmp_path / "out")
    assert [e.phase for e in run.history] == [PHASE_HEAD]
    backbone = load_bundle(run.bundle_path).model.get_layer("backbone")
    compared = 0
    for w in backbone.weights:
        if w.path in reference and "bn" not in w.path.split("/")[0]:
            np.testing.assert_array_equal(w.numpy(), reference[w.path])
            compared += 1
    assert compared > 50


def test_test_scores_equal_what_leukgui_evaluate_computes(transfer_run, split: Split) -> None:
    """The trainer's test predictions and the analysis engine agree on every cell."""
    from leukgui.core.bundle import load_bundle
    from training.evaluate import evaluate_bundle

    run, _, _, _ = transfer_run
    result = evaluate_bundle(load_bundle(run.bundle_path), DatasetScan(split.test, source="t"))
    assert result.evaluation.predictions.paths == run.test.predictions.paths
    np.testing.assert_allclose(
        result.evaluation.predictions.p_all, run.test.predictions.p_all, atol=1e-4
    )
    assert result.evaluation.metrics.tp == run.test.metrics.tp
    assert result.evaluation.metrics.tn == run.test.metrics.tn


def test_a_new_run_never_overwrites_an_existing_bundle(tmp_path: Path) -> None:
    day = date(2026, 11, 25)
    first, version = next_bundle_path(tmp_path, "vgg16", day)
    assert (first.name, version) == ("vgg16-2026-11-25.leukmodel", "2026-11-25")
    first.write_bytes(b"x")
    second, version = next_bundle_path(tmp_path, "vgg16", day)
    assert (second.name, version) == ("vgg16-2026-11-25.2.leukmodel", "2026-11-25.2")
    (tmp_path / "vgg16-2026-11-25.2-training").mkdir()
    third, _ = next_bundle_path(tmp_path, "vgg16", day)
    assert third.name == "vgg16-2026-11-25.3.leukmodel"


def test_cancel_keeps_the_best_epoch_as_a_marked_bundle(split: Split, tmp_path: Path) -> None:
    from leukgui.core.bundle import read_manifest

    cancel = CancelToken()

    def progress(p) -> None:
        if p.kind == "batch" and p.epoch == 2:
            cancel.cancel()

    run = train_backbone(
        split,
        _config(weights="none", epochs=5, batch_size=8),  # several batches per epoch
        tmp_path,
        progress=progress,
        cancel=cancel,
    )
    assert run.cancelled and run.stopped_because == "cancelled"
    assert len(run.history) == 1 and run.best_epoch == 1
    manifest = read_manifest(run.bundle_path)
    assert manifest["cancelled"] is True
    assert "CANCELLED" in manifest["description"]
    assert manifest["training_data"]["stopped_because"] == "cancelled"


def test_cancel_before_the_first_epoch_saves_nothing(split: Split, tmp_path: Path) -> None:
    cancel = CancelToken()
    cancel.cancel()
    with pytest.raises(TrainingCancelled, match="before the first epoch"):
        train_backbone(split, _config(weights="none"), tmp_path, cancel=cancel)
    assert not list(tmp_path.glob("*.leukmodel"))


def test_a_leaky_split_is_refused_before_training(split: Split, tmp_path: Path) -> None:
    leaked = split.test[0]
    twin = Record(leaked.path, leaked.label, leaked.subject)
    leaky = Split(
        train=[*split.train, twin],
        validation=split.validation,
        test=split.test,
        seed=None,
        method="hand-made",
    )
    with pytest.raises(LeakageError, match=leaked.subject):
        train_backbone(leaky, _config(weights="none"), tmp_path)
    assert not any(tmp_path.iterdir())


def test_missing_imagenet_weights_name_the_file(split: Split, tmp_path: Path) -> None:
    with pytest.raises(WeightsMissingError, match="efficientnetb0_notop.h5"):
        train_backbone(split, _config(verify_weights=True), tmp_path)


def test_mixed_precision_trains_and_ships_a_float32_model(split: Split, tmp_path: Path) -> None:
    import keras

    from leukgui.core.bundle import load_bundle

    run = train_backbone(split, _config(weights="none", epochs=1, mixed_precision=True), tmp_path)
    assert run.settings["precision_policy"] in ("mixed_bfloat16", "mixed_float16")
    assert keras.mixed_precision.dtype_policy().name == "float32"  # global policy restored
    model = load_bundle(run.bundle_path).model
    assert {layer.dtype_policy.name for layer in model.get_layer("backbone").layers} == {"float32"}
    with zipfile.ZipFile(run.bundle_path) as archive:
        manifest = json.loads(archive.read("manifest.json"))
    assert manifest["training_data"]["settings"]["mixed_precision"] is True


def test_a_one_class_validation_part_is_refused(split: Split, tmp_path: Path) -> None:
    only_all = [r for r in split.validation if r.label == "ALL"]
    bad = Split(split.train, only_all, split.test, seed=None, method="hand-made")
    with pytest.raises(ValueError, match="validation part holds only ALL"):
        train_backbone(bad, _config(weights="none"), tmp_path)


@pytest.mark.parametrize(
    ("tf_config", "chief"),
    [
        (None, True),
        ({"cluster": {"worker": ["a:1", "b:1"]}, "task": {"type": "worker", "index": 0}}, True),
        ({"cluster": {"worker": ["a:1", "b:1"]}, "task": {"type": "worker", "index": 1}}, False),
        (
            {
                "cluster": {"chief": ["c:1"], "worker": ["a:1"]},
                "task": {"type": "worker", "index": 0},
            },
            False,
        ),
        (
            {
                "cluster": {"chief": ["c:1"], "worker": ["a:1"]},
                "task": {"type": "chief", "index": 0},
            },
            True,
        ),
    ],
)
def test_only_the_chief_worker_writes(tf_config, chief, monkeypatch) -> None:
    from training.trainer import is_chief

    if tf_config is None:
        monkeypatch.delenv("TF_CONFIG", raising=False)
    else:
        monkeypatch.setenv("TF_CONFIG", json.dumps(tf_config))
    assert is_chief() is chief
