"""Batched, compiled Grad-CAM must equal the per-image keras.io recipe."""

from __future__ import annotations

import numpy as np
import pytest

from leukgui.core.backbones import build_classifier
from leukgui.core.gradcam import BatchedGradCAM, gradcam_reference


def _split_head(model, images: np.ndarray) -> None:
    """Set logit(ALL) = -logit(HEM), centred on the batch median, so that the batch splits
    between both predicted classes and both branches of the class gather are exercised."""
    import keras

    pooled = keras.Model(model.inputs, model.get_layer("head_gap").output)
    features = pooled.predict(images, verbose=0)
    dense = model.get_layer("logits")
    kernel, bias = dense.get_weights()
    kernel[:, 1] = -kernel[:, 0]
    middle = float(np.median(features @ kernel[:, 0]))
    dense.set_weights([kernel, np.array([-middle, middle], dtype=bias.dtype)])


@pytest.mark.parametrize(
    ("backbone", "size"), [("vgg16", 64), ("resnet50", 96), ("efficientnetb0", 96)]
)
def test_batched_gradcam_matches_per_image_reference(backbone: str, size: int) -> None:
    model = build_classifier(backbone, weights=None, input_size=size, seed=3)
    rng = np.random.default_rng(11)
    images = rng.uniform(0, 255, (8, size, size, 3)).astype(np.float32)
    images[:4] *= np.linspace(0.1, 1.0, size, dtype=np.float32)[None, :, None, None]
    _split_head(model, images)

    p_all, cams, ok = BatchedGradCAM(model)(images)

    assert ok.all()
    expected_p = model.predict(images, verbose=0)[:, 1]
    np.testing.assert_allclose(p_all, expected_p, atol=1e-5)
    assert {bool(p >= 0.5) for p in p_all} == {True, False}, "both classes must be explained"
    reference = np.stack([gradcam_reference(model, image) for image in images])
    assert cams.shape == reference.shape and cams.shape[1] >= 2
    np.testing.assert_allclose(cams, reference, atol=1e-4)
    assert cams.min() >= 0.0 and cams.max() <= 1.0 + 1e-6


def test_heatmap_depends_on_the_image() -> None:
    """Different cells get different maps (a constant 'fake blob' would pass a range check)."""
    model = build_classifier("efficientnetb0", weights=None, input_size=96, seed=5)
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (2, 96, 96, 3)).astype(np.float32)
    images[1, :, :48] = 0
    _, cams, _ = BatchedGradCAM(model)(images)
    assert np.abs(cams[0] - cams[1]).max() > 1e-3


def test_non_finite_network_output_is_flagged() -> None:
    model = build_classifier("efficientnetb0", weights=None, input_size=64, seed=5)
    dense = model.get_layer("logits")
    kernel, bias = dense.get_weights()
    dense.set_weights([np.full_like(kernel, np.nan), bias])
    images = np.zeros((2, 64, 64, 3), np.float32)
    _, _, ok = BatchedGradCAM(model)(images)
    assert not ok.any()


@pytest.mark.parametrize(
    ("backbone", "stride", "offset"),
    [("vgg16", 16, 7.5), ("resnet50", 32, 0.0), ("efficientnetb0", 32, 31.0)],
)
def test_cam_grid_geometry_matches_the_receptive_field(backbone, stride, offset) -> None:
    """The computed cell centres agree with where the gradient of a feature actually comes
    from, better than the naive 'cell i is centred at stride * (i + 0.5)' assumption."""
    import tensorflow as tf

    from leukgui.core.backbones import cam_grid_geometry, split_classifier

    model = build_classifier(backbone, weights=None, input_size=224, seed=1)
    parts = split_classifier(model)
    assert cam_grid_geometry(parts.backbone) == (stride, offset)
    x = tf.Variable(np.random.default_rng(0).uniform(0, 255, (1, 224, 224, 3)).astype("f4"))
    with tf.GradientTape() as tape:
        h = x
        for layer in parts.preprocess:
            h = layer(h)
        features = parts.backbone(h)
        i = features.shape[1] // 2
        score = tf.reduce_sum(features[0, i, i])
    weight = tf.reduce_sum(tf.abs(tape.gradient(score, x)), axis=-1)[0].numpy()
    centroid = (weight * np.arange(224)[None, :]).sum() / weight.sum()
    computed = stride * i + offset
    naive = stride * i + (stride - 1) / 2
    assert abs(computed - centroid) <= abs(naive - centroid) + 0.5
    assert abs(computed - centroid) < 6


def test_aligned_map_puts_each_cell_where_it_belongs() -> None:
    model = build_classifier("efficientnetb0", weights=None, input_size=224, seed=1)
    gradcam = BatchedGradCAM(model)
    raw = np.zeros((1, 7, 7), np.float32)
    raw[0, 3, 1] = 1.0
    aligned = gradcam.align(raw)[0]
    assert aligned.shape == (28, 28)
    row, col = np.unravel_index(np.argmax(aligned), aligned.shape)
    pixel = 224 / 28
    # cell (3, 1) is centred at 32 * i + 31 px: rows 127, columns 63 of the 224 px input
    assert abs((row + 0.5) * pixel - 0.5 - 127) <= pixel
    assert abs((col + 0.5) * pixel - 0.5 - 63) <= pixel


def test_the_forward_only_call_gives_the_same_p_all() -> None:
    """TTA's extra views go through `forward`; it must be the same network as the heatmap
    call, or the views would be averaged with scores of another model."""
    model = build_classifier("vgg16", weights=None, input_size=64, seed=3)
    rng = np.random.default_rng(4)
    images = rng.uniform(0, 255, (6, 64, 64, 3)).astype(np.float32)
    _split_head(model, images)
    cam = BatchedGradCAM(model)
    p_all, _, _ = cam(images)
    forward = cam.forward(images)
    assert forward.shape == (6,)
    np.testing.assert_allclose(forward, p_all, atol=1e-6)
    np.testing.assert_allclose(forward, model.predict(images, verbose=0)[:, 1], atol=1e-5)
    assert {bool(p >= 0.5) for p in forward} == {True, False}
