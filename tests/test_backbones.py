"""Backbones: sizes, preprocessing inside the model, and the offline ImageNet weights rules."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from leukgui.core.backbones import (
    BACKBONES,
    WeightsMissingError,
    build_classifier,
    get_spec,
    keras_cache_dir,
    resolve_imagenet_weights,
    split_classifier,
)


def _write_legacy_weights(model, path: Path) -> None:
    """Write weights in the legacy HDF5 layout Keras uses for its ImageNet files."""
    from keras.src.legacy.saving import legacy_h5_format

    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as handle:
        legacy_h5_format.save_weights_to_hdf5_group(handle, model)


def _reference_backbone(name: str, size: int, seed: int):
    import keras

    spec = get_spec(name)
    keras.utils.set_random_seed(seed)
    return getattr(keras.applications, spec.keras_name)(
        include_top=False, weights=None, input_shape=(size, size, 3)
    )


def test_specs_cover_the_three_families() -> None:
    assert {"vgg16", "resnet50", "efficientnetb0", "efficientnetb3"} <= set(BACKBONES)
    assert get_spec("EfficientNet").name == "efficientnetb0"
    assert get_spec("ResNet-50").name == "resnet50"
    assert get_spec("efficientnetb1").input_size == 240
    with pytest.raises(ValueError, match="unknown backbone 'alexnet'"):
        get_spec("alexnet")


def test_vgg_preprocessing_is_inside_the_model() -> None:
    """Raw RGB goes in: the caffe layer flips to BGR and subtracts the ImageNet mean."""
    model = build_classifier("vgg16", weights=None, input_size=32, seed=0)
    parts = split_classifier(model)
    assert [layer.name for layer in parts.preprocess] == ["preprocess"]
    pixel = np.array([[[[10.0, 20.0, 30.0]]]], np.float32)
    out = parts.preprocess[0](pixel).numpy()
    np.testing.assert_allclose(out[0, 0, 0], [30 - 103.939, 20 - 116.779, 10 - 123.68], atol=1e-4)
    assert parts.backbone.layers[-1].name == "block5_conv3"
    assert parts.head[0].name == "head_pool"


def test_missing_imagenet_weights_name_the_file_and_folder() -> None:
    with pytest.raises(WeightsMissingError) as info:
        resolve_imagenet_weights("efficientnetb0")
    message = str(info.value)
    assert "efficientnetb0_notop.h5" in message
    assert str(keras_cache_dir()) in message
    assert "never downloads" in message
    with pytest.raises(WeightsMissingError):
        build_classifier("resnet50", weights="imagenet", input_size=32)


def test_damaged_cached_file_is_refused(tmp_path: Path) -> None:
    bad = keras_cache_dir() / "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"
    bad.parent.mkdir(parents=True, exist_ok=True)
    bad.write_bytes(b"half a download")
    with pytest.raises(WeightsMissingError, match="checksum does not match"):
        resolve_imagenet_weights("resnet50")


def test_weights_from_the_keras_cache_are_loaded_without_network() -> None:
    """VGG16 has no published checksum, so a cached file is used as is."""
    reference = _reference_backbone("vgg16", 32, seed=21)
    _write_legacy_weights(reference, keras_cache_dir() / get_spec("vgg16").weights_file)
    model = build_classifier("vgg16", weights="imagenet", input_size=32)
    backbone = split_classifier(model).backbone
    for name in ("block1_conv1", "block5_conv3"):
        for got, want in zip(
            backbone.get_layer(name).get_weights(),
            reference.get_layer(name).get_weights(),
            strict=False,
        ):
            np.testing.assert_array_equal(got, want)


def test_efficientnet_weights_from_a_named_file_keep_the_imagenet_rescaling(tmp_path: Path):
    """Built as weights='imagenet', EfficientNet gains a rescaling layer that a plain
    load_weights would miss; the named-file path must produce that exact architecture."""
    reference = _reference_backbone("efficientnetb0", 32, seed=4)
    path = tmp_path / "my weights" / "efficientnetb0_notop.h5"
    _write_legacy_weights(reference, path)
    model = build_classifier("efficientnetb0", weights=path, input_size=32)
    backbone = split_classifier(model).backbone
    rescalings = [layer for layer in backbone.layers if layer.__class__.__name__ == "Rescaling"]
    assert len(rescalings) == 2  # 1/255 and the ImageNet stddev correction
    got = backbone.get_layer("stem_conv").get_weights()[0]
    np.testing.assert_array_equal(got, reference.get_layer("stem_conv").get_weights()[0])


def test_bundled_weights_folder_is_searched(tmp_path: Path, monkeypatch) -> None:
    resources = tmp_path / "resources"
    monkeypatch.setenv("LEUKGUI_RESOURCES", str(resources))
    reference = _reference_backbone("resnet50", 32, seed=8)
    target = resources / "weights" / get_spec("resnet50").weights_file
    _write_legacy_weights(reference, target)
    assert resolve_imagenet_weights("resnet50", verify=False) == target
    with pytest.raises(WeightsMissingError, match="checksum"):
        resolve_imagenet_weights("resnet50")  # not the official file: refused by default
    model = build_classifier("resnet50", weights="imagenet", input_size=32, verify_weights=False)
    got = split_classifier(model).backbone.get_layer("conv1_conv").get_weights()[0]
    np.testing.assert_array_equal(got, reference.get_layer("conv1_conv").get_weights()[0])


def test_named_file_that_does_not_exist(tmp_path: Path) -> None:
    with pytest.raises(WeightsMissingError, match="not found"):
        build_classifier("vgg16", weights=tmp_path / "nope.h5", input_size=32)
