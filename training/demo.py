"""Train the bundled demo model: EfficientNetB0 from scratch on synthetic cells.

    python -m training.demo --out resources/models

ImageNet weights cannot be downloaded on the build machines, and real C-NMC cells cannot be
redistributed, so the demo model learns the synthetic ALL/HEM cues of
`leukgui.core.synthetic` from random initialisation. It exists to show the whole tool working
end to end; its manifest and every report carry the DEMO notice. It is scored on held-out
synthetic cells generated from a different seed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from leukgui.core.imaging import to_model_input
from leukgui.core.results import ALL, HEM
from leukgui.core.synthetic import generate_cells

DEMO_NAME = "efficientnetb0-demo"


def synthetic_arrays(n: int, seed: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """n synthetic cells at the model's input size (uint8) and labels (1 = ALL)."""
    images = np.empty((n, size, size, 3), np.uint8)
    labels = np.empty(n, np.int32)
    for i, cell in enumerate(generate_cells(n, seed=seed)):
        images[i] = to_model_input(cell.image, size).astype(np.uint8)
        labels[i] = 1 if cell.label == ALL else 0
    return images, labels


def _dataset(images: np.ndarray, labels: np.ndarray, batch: int, train: bool, seed: int) -> Any:
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices((images, labels))
    if train:
        ds = ds.shuffle(len(images), seed=seed, reshuffle_each_iteration=True)

    size = images.shape[1]
    shift = size // 5  # cells land anywhere within +-20% of the frame

    def augment(image: Any, label: Any) -> tuple[Any, Any]:
        image = tf.cast(image, tf.float32)
        if train:
            image = tf.image.random_flip_left_right(image, seed=seed)
            image = tf.image.random_flip_up_down(image, seed=seed)
            k = tf.random.uniform([], 0, 4, dtype=tf.int32, seed=seed)
            image = tf.image.rot90(image, k)
            # Random translation on black: a network that only ever sees centred cells can
            # score "the middle of the frame" instead of the cell, and its Grad-CAM spreads.
            padded = tf.pad(image, [[shift, shift], [shift, shift], [0, 0]])
            image = tf.image.random_crop(padded, [size, size, 3], seed=seed)
        return image, label

    def targets(image: Any, label: Any) -> tuple[Any, Any]:
        return image, (label, tf.zeros([], tf.float32))

    ds = ds.map(augment, num_parallel_calls=tf.data.AUTOTUNE).map(targets)
    return ds.batch(batch).prefetch(2)


def background_evidence_model(model: Any) -> Any:
    """A training-only twin of `model` that also outputs each image's share of evidence that
    sits on the black background.

    With a global-average-pooling head, the log-odds of ALL is a sum of per-position
    contributions (the class activation map). In a segmented cell image the background holds
    no specimen, so evidence placed there (for example, cell size read off the empty margin)
    is evidence a reviewer cannot check. Penalising that share ("right for the right reasons",
    Ross et al. 2017) trains a model whose heatmaps are honest maps of where it looks; the
    penalty shapes training only and the bundle holds the plain classifier.
    """
    import keras
    import tensorflow as tf

    from leukgui.core.backbones import cam_grid_geometry, split_classifier

    parts = split_classifier(model)
    dense = model.get_layer("logits")
    stride, offset = cam_grid_geometry(parts.backbone)
    stride_i = int(stride)
    start = int(round(offset - stride / 2 + 0.5))  # window [s*i + start, s*i + start + s)

    class BackgroundShare(keras.layers.Layer):
        def call(self, features: Any, image: Any) -> Any:
            delta = dense.kernel[:, 1] - dense.kernel[:, 0]
            contribution = tf.abs(tf.tensordot(tf.cast(features, tf.float32), delta, 1))
            foreground = tf.cast(tf.reduce_max(image, axis=-1, keepdims=True) > 0, tf.float32)
            size = image.shape[1]
            grid = features.shape[1]
            pad = grid * stride_i - (size - start)

            def pooled(mask: Any) -> Any:  # mean over each grid cell's window of pixels
                mask = tf.pad(mask[:, start:, start:, :], [[0, 0], [0, pad], [0, pad], [0, 0]])
                return tf.nn.avg_pool2d(mask, stride_i, stride_i, "VALID")[..., 0]

            inside = pooled(tf.ones_like(foreground))  # windows hanging over the image edge
            background = 1.0 - pooled(foreground) / tf.maximum(inside, 1e-6)
            total = tf.reduce_sum(contribution, axis=(1, 2)) + 1e-6
            return tf.reduce_sum(background * contribution, axis=(1, 2)) / total

    image = keras.Input(model.inputs[0].shape[1:], name="image")
    x = image
    for layer in parts.preprocess:
        x = layer(x)
    features = parts.backbone(x)
    h = features
    for layer in parts.head:
        h = layer(h)
    probabilities = model.get_layer("probabilities")(h)
    share = BackgroundShare(name="background_share")(features, image)
    return keras.Model(image, [probabilities, share])


def train_demo(
    out: Path,
    *,
    n_train: int = 1600,
    n_val: int = 240,
    n_test: int = 400,
    epochs: int = 10,
    batch: int = 32,
    seed: int = 2019,
    input_size: int = 224,
    background_weight: float = 1.0,
    log: Any = print,
) -> Path:
    """Train, score on held-out synthetic cells, and write the demo bundle."""
    import keras

    from leukgui.core.backbones import build_classifier
    from leukgui.core.bundle import DEMO_WEIGHTS_SHA256, make_manifest, read_manifest, save_bundle
    from leukgui.core.metrics import binary_metrics

    started = time.time()
    log(f"generating {n_train} + {n_val} + {n_test} synthetic cells ...")
    x_train, y_train = synthetic_arrays(n_train, seed, input_size)
    x_val, y_val = synthetic_arrays(n_val, seed + 1, input_size)
    x_test, y_test = synthetic_arrays(n_test, seed + 2, input_size)

    model = build_classifier("efficientnetb0", weights=None, input_size=input_size, seed=seed)
    # From random initialisation the default BatchNorm momentum (0.99) leaves the moving
    # statistics far from the batch statistics after a few hundred steps, and held-out
    # accuracy collapses to chance; 0.9 lets them catch up within the first epoch.
    for layer in model.get_layer("backbone").layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = 0.9
    trainer = background_evidence_model(model)
    trainer.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=["sparse_categorical_crossentropy", lambda _, share: share],
        loss_weights=[1.0, background_weight],
        metrics=[["accuracy"], []],
    )
    callbacks = [
        keras.callbacks.EarlyStopping(
            monitor="val_loss", patience=3, restore_best_weights=True, verbose=1
        ),
        keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.3, patience=1, verbose=1),
    ]
    history = trainer.fit(
        _dataset(x_train, y_train, batch, True, seed),
        validation_data=_dataset(x_val, y_val, batch, False, seed),
        epochs=epochs,
        callbacks=callbacks,
        shuffle=False,  # the training dataset shuffles itself each epoch
        verbose=2,
    )
    p_test = model.predict(x_test.astype(np.float32), batch_size=batch, verbose=0)[:, 1]
    truth = [ALL if y else HEM for y in y_test]
    predicted = [ALL if p >= 0.5 else HEM for p in p_test]
    m = binary_metrics(truth, predicted, p_test.tolist())
    metrics = {
        "evaluated_on": f"{n_test} held-out synthetic cells (seed {seed + 2})",
        "n": m.n,
        "confusion_matrix": {"tp": m.tp, "fn": m.fn, "fp": m.fp, "tn": m.tn},
        "accuracy": m.accuracy,
        "precision": m.precision,
        "recall": m.recall,
        "specificity": m.specificity,
        "f1": m.f1,
        "balanced_accuracy": m.balanced_accuracy,
        "roc_auc": m.roc_auc,
    }
    log(f"held-out balanced accuracy {m.balanced_accuracy:.4f}, ROC AUC {m.roc_auc:.4f}")
    manifest = make_manifest(
        name=DEMO_NAME,
        version="1",
        backbone="efficientnetb0",
        input_size=input_size,
        threshold=0.5,
        uncertainty_band=(0.35, 0.65),
        demo=True,
        description=(
            "EfficientNetB0 trained from random initialisation on synthetic C-NMC-like cells "
            "by `python -m training.demo`. Shows the tool working; says nothing about real "
            "blood cells."
        ),
        training_data={
            "source": "leukgui.core.synthetic (generated, no patient data)",
            "train_cells": {"ALL": int(y_train.sum()), "HEM": int(len(y_train) - y_train.sum())},
            "validation_cells": {"ALL": int(y_val.sum()), "HEM": int(len(y_val) - y_val.sum())},
            "split_seeds": {"train": seed, "validation": seed + 1, "test": seed + 2},
            "epochs_run": len(history.history["loss"]),
            "training_seconds": round(time.time() - started, 1),
            "threshold_rule": "0.5 (two balanced classes); uncertainty band 0.35-0.65",
            "augmentation": "flips, 90-degree rotations, translation up to 20% of the frame",
            "background_evidence_penalty": (
                f"weight {background_weight}: share of |class-activation| on black background "
                "added to the loss (right-for-the-right-reasons training)"
            ),
        },
        metrics=metrics,
    )
    path = save_bundle(model, manifest, out, overwrite=True)
    log(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")
    weights = read_manifest(path)["weights_sha256"]
    if weights not in DEMO_WEIGHTS_SHA256:
        # Only weights listed there can never be relabelled as a real model (demo: false).
        log(f"new demo weights: add {weights} to DEMO_WEIGHTS_SHA256 in leukgui/core/bundle.py")
    log(json.dumps(metrics, indent=2))
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m training.demo",
        description="Train the bundled EfficientNetB0 demo model on synthetic cells.",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("resources/models"),
        help="folder or .leukmodel file to write (default: resources/models)",
    )
    parser.add_argument("--train", type=int, default=1600, help="training cells (default 1600)")
    parser.add_argument("--epochs", type=int, default=10, help="maximum epochs (default 10)")
    parser.add_argument("--seed", type=int, default=2019, help="random seed (default 2019)")
    parser.add_argument("--input-size", type=int, default=224, help="input size in px")
    parser.add_argument(
        "--background-weight",
        type=float,
        default=1.0,
        help="weight of the background-evidence penalty (0 turns it off)",
    )
    args = parser.parse_args(argv)
    out = args.out
    if out.suffix != ".leukmodel":
        out = out / f"{DEMO_NAME}.leukmodel"
    train_demo(
        out,
        n_train=args.train,
        epochs=args.epochs,
        seed=args.seed,
        input_size=args.input_size,
        background_weight=args.background_weight,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
