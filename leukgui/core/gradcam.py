"""Grad-CAM computed in the same compiled call as the prediction, for a whole batch.

The gradient of a class logit with respect to the CAM feature map only flows through the
small classification head, so one `tf.function` returns probabilities and heatmaps for a
batch at about the cost of the forward pass alone. Each image's score depends only on its
own features (inference mode: no batch statistics), so summing the scores of a batch and
taking one gradient gives every image its own gradient.

The score explained is the log-odds of the predicted class, logit(predicted) - logit(other):
the one quantity that sets P(ALL) in a two-class softmax (and exactly the single logit of
the equivalent sigmoid classifier). A lone softmax logit also carries a part shared by both
classes; that part moves neither probability, yet it paints the black background around a
segmented cell, so it is left out.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from leukgui.core.backbones import CLASS_NAMES, ModelParts, cam_grid_geometry, split_classifier
from leukgui.core.results import ALL

_EPS = 1e-7
ALIGNED_DIVISOR = 8  # aligned maps have input_size / 8 cells a side (28 x 28 at 224 px)


class BatchedGradCAM:
    """Callable that maps a float32 batch (B, S, S, 3) of raw RGB to (P(ALL), heatmaps).

    Each map explains the predicted class of its image (what a reviewer asks: "why did it
    call this cell ALL?").
    """

    def __init__(self, model: Any) -> None:
        import tensorflow as tf

        self.model = model
        self.parts: ModelParts = split_classifier(model)
        parts = self.parts
        all_index = CLASS_NAMES.index(ALL)

        def run(images: Any) -> tuple[Any, Any, Any]:
            features = parts.features(images)
            with tf.GradientTape() as tape:
                tape.watch(features)
                logits = tf.cast(parts.logits(features), tf.float32)
                predicted = tf.argmax(logits, axis=-1, output_type=tf.int32)
                chosen = tf.gather(logits, predicted, axis=1, batch_dims=1)
                other = tf.gather(logits, 1 - predicted, axis=1, batch_dims=1)
                score = tf.reduce_sum(chosen - other)
            grads = tf.cast(tape.gradient(score, features), tf.float32)
            feats = tf.cast(features, tf.float32)
            weights = tf.reduce_mean(grads, axis=(1, 2), keepdims=True)
            cam = tf.nn.relu(tf.reduce_sum(feats * weights, axis=-1))
            peak = tf.reduce_max(cam, axis=(1, 2), keepdims=True)
            cam = cam / (peak + _EPS)
            probabilities = tf.nn.softmax(logits, axis=-1)
            finite = tf.reduce_all(tf.math.is_finite(grads), axis=(1, 2, 3))
            return probabilities[:, all_index], cam, finite

        size = int(model.inputs[0].shape[1])
        spec = tf.TensorSpec([None, size, size, 3], tf.float32)
        # No AutoGraph: the loops run over Python lists of layers, and a frozen app has no
        # source for AutoGraph to read (it would warn and run the function as is anyway).
        self._fn = tf.function(run, input_signature=[spec], jit_compile=False, autograph=False)

        def forward(images: Any) -> Any:
            logits = parts.logits(parts.features(images))
            return tf.nn.softmax(tf.cast(logits, tf.float32), axis=-1)[:, all_index]

        # Forward only, for the extra views of test-time augmentation: the same layers as
        # `run`, compiled once, without the gradient.
        self._forward = tf.function(
            forward, input_signature=[spec], jit_compile=False, autograph=False
        )
        self.input_size = size
        self.grid_stride, self.grid_offset = cam_grid_geometry(parts.backbone)
        self._aligner = CamAligner(size, self.grid_stride, self.grid_offset)

    def __call__(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Return P(ALL) (B,), heatmaps (B, h, w) in 0..1, and a per-image `ok` flag.

        `ok` is False where the gradient or probability was not finite: the caller turns
        that image into an error instead of showing its map.
        """
        p_all, cams, finite = self._fn(batch)
        p_all = p_all.numpy()
        cams = cams.numpy()
        ok = finite.numpy() & np.isfinite(p_all) & np.isfinite(cams).all(axis=(1, 2))
        return p_all, cams, ok

    def forward(self, batch: np.ndarray) -> np.ndarray:
        """P(ALL) (B,) of a float32 batch without heatmaps: one compiled call per batch."""
        return self._forward(np.ascontiguousarray(batch, dtype=np.float32)).numpy()

    def align(self, cams: np.ndarray) -> np.ndarray:
        return self._aligner(cams)


class CamAligner:
    """Resample raw CAM grids onto a pixel-aligned grid over the model input.

    Cell i of the raw grid is centred at `grid_stride * i + grid_offset` input pixels
    (see `cam_grid_geometry`); the aligned map has the ordinary pixel-centre convention,
    so any renderer can simply resize it onto the image. Every runtime uses this one.
    """

    def __init__(self, input_size: int, grid_stride: float, grid_offset: float) -> None:
        self.input_size = input_size
        self.grid_stride = grid_stride
        self.grid_offset = grid_offset
        self._maps: tuple[np.ndarray, np.ndarray] | None = None

    def __call__(self, cams: np.ndarray) -> np.ndarray:
        import cv2

        out = self.input_size // ALIGNED_DIVISOR
        if self._maps is None:
            centres = (np.arange(out, dtype=np.float32) + 0.5) * self.input_size / out - 0.5
            grid = (centres - self.grid_offset) / self.grid_stride
            map_x, map_y = np.meshgrid(grid, grid)
            self._maps = (map_x.astype(np.float32), map_y.astype(np.float32))
        map_x, map_y = self._maps
        aligned = np.empty((len(cams), out, out), np.float32)
        for i, cam in enumerate(cams):
            aligned[i] = cv2.remap(
                np.ascontiguousarray(cam, dtype=np.float32),
                map_x,
                map_y,
                interpolation=cv2.INTER_LINEAR,
                borderMode=cv2.BORDER_REPLICATE,
            )
        return aligned


def gradcam_reference(model: Any, image: np.ndarray, class_index: int | None = None) -> np.ndarray:
    """The keras.io recipe, one image at a time in eager mode; the slow yardstick for tests
    and benchmarks.

    One GradientTape records the whole network for a single image and the map is pooled
    from that image's own gradient, as the published example does; the batched version must
    give the same map without recording the backbone.
    """
    import tensorflow as tf

    parts = split_classifier(model)
    x = tf.convert_to_tensor(image[None].astype(np.float32))
    with tf.GradientTape() as tape:
        h = x
        for layer in parts.preprocess:
            h = layer(h, training=False)
        features = parts.backbone(h, training=False)
        h = features
        for layer in parts.head:
            h = layer(h, training=False)
        logits = h
        index = int(tf.argmax(logits[0])) if class_index is None else class_index
        score = logits[:, index] - logits[:, 1 - index]
    grads = tape.gradient(score, features)
    pooled = tf.reduce_mean(grads, axis=(0, 1, 2))
    heatmap = features[0] @ pooled[..., tf.newaxis]
    heatmap = tf.squeeze(heatmap)
    heatmap = tf.maximum(heatmap, 0) / (tf.math.reduce_max(heatmap) + _EPS)
    return np.asarray(heatmap.numpy(), dtype=np.float32)
