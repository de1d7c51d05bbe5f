"""The tf.data input pipeline for training: parallel decode, cache, augmentation, batching.

Cells are decoded and resized by `leukgui.core.imaging`, the very code the analysis engine
uses, so a trained model sees exactly the pixels it will see in the app. Decoding runs in
parallel (OpenCV releases the GIL), the resized cells are cached (in memory, or in a file for
large data sets), and augmentation runs per batch on the cached tensors, so from the second
epoch on the pipeline costs a fraction of a training step.

Augmentation suited to stained single cells: flips and 90-degree rotations (a cell has no
up), a small affine jitter (rotation, scale, shift), and brightness / contrast / hue /
saturation jitter that imitates stain and scanner variation. The black background of
segmented C-NMC cells stays as it was: it is found on each image before the colour jitter
(brightest channel at most `stain.NEAR_BLACK`, so JPEG noise of 1..8 counts as black, not
as cell) and left untouched. Files that fail to decode are dropped from the stream and
listed in `FailedFiles`, never silently.

A bundle's stain normalisation (`leukgui.core.stain`) is applied in the decode step, on the
same padded square the analysis engine normalises, so training, validation, test and
analysis all see the same pixels.
"""

from __future__ import annotations

import hashlib
import math
import threading
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from leukgui.core.imaging import ImageError, decode_image, thumbnail
from leukgui.core.results import ALL, HEM
from leukgui.core.stain import NEAR_BLACK, ReinhardStats, apply_reinhard, fit_reinhard
from training.datasets import Record

__all__ = [
    "Augmentation",
    "FailedFiles",
    "class_weights",
    "fit_stain",
    "label_index",
    "load_cell",
    "make_dataset",
]


@dataclass(frozen=True)
class Augmentation:
    """Random changes applied to every training batch (all off = `Augmentation.none()`)."""

    flips: bool = True  # horizontal + vertical flips and 90-degree rotations
    rotation_deg: float = 15.0  # extra rotation, +-degrees
    scale: float = 0.10  # zoom, +-fraction
    shift: float = 0.05  # translation, +-fraction of the frame
    brightness: float = 0.10  # +-fraction of full scale
    contrast: float = 0.15  # +-fraction
    hue: float = 0.03  # +-fraction of the hue circle
    saturation: float = 0.15  # +-fraction

    @classmethod
    def none(cls) -> Augmentation:
        return cls(False, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)

    def describe(self) -> str:
        if self == Augmentation.none():
            return "none"
        return (
            f"flips and 90-degree rotations: {'on' if self.flips else 'off'}; "
            f"rotation +-{self.rotation_deg:g} deg, scale +-{self.scale:.0%}, "
            f"shift +-{self.shift:.0%}; brightness +-{self.brightness:.0%}, "
            f"contrast +-{self.contrast:.0%}, hue +-{self.hue:.0%}, "
            f"saturation +-{self.saturation:.0%} (black background kept black)"
        )


class FailedFiles:
    """Thread-safe list of (path, reason) for cells that could not be decoded while training."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: dict[str, str] = {}

    def add(self, path: str, reason: str) -> None:
        with self._lock:
            self._items.setdefault(path, reason)

    def items(self) -> list[tuple[str, str]]:
        with self._lock:
            return sorted(self._items.items())

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)


def label_index(label: str) -> int:
    """Output index of a class (the model's softmax order is HEM, ALL)."""
    if label == ALL:
        return 1
    if label == HEM:
        return 0
    raise ValueError(f"unknown label {label!r}")


def class_weights(records: Sequence[Record]) -> dict[int, float]:
    """Per-class loss weights that make both classes count equally (n / (2 * n_class)).

    C-NMC holds about twice as many ALL cells as HEM; unweighted, a network can buy accuracy
    by leaning towards ALL, which costs specificity.
    """
    counts = Counter(label_index(r.label) for r in records)
    n = sum(counts.values())
    return {k: (n / (2.0 * counts[k]) if counts.get(k) else 0.0) for k in (0, 1)}


def load_cell(path: str, size: int, stain: ReinhardStats | None = None) -> np.ndarray:
    """One cell as the model sees it: size x size x 3 uint8, stain-normalised when `stain`
    is given (raises ImageError)."""
    cell = thumbnail(decode_image(path), size)
    return cell if stain is None else apply_reinhard(cell, stain)


def fit_stain(
    records: Sequence[Record],
    input_size: int,
    *,
    max_cells: int = 1000,
    seed: int = 0,
    failed: FailedFiles | None = None,
) -> ReinhardStats:
    """Reinhard target statistics from (up to `max_cells`, drawn at random) training cells,
    measured on the very squares the network is fed. Pass only the training part's records:
    fitting on validation or test cells would leak them into the model."""
    if not records:
        raise ValueError("no records to fit stain normalisation on")
    rng = np.random.default_rng(seed)
    chosen = rng.permutation(len(records))[:max_cells]
    images = []
    for i in sorted(chosen):
        name = str(records[i].path)
        try:
            images.append(load_cell(name, int(input_size)))
        except Exception as exc:  # noqa: BLE001 - a bad file is listed, not fatal
            if failed is not None:
                failed.add(name, str(exc))
    stats = fit_reinhard(images)
    return stats


def _affine_matrices(tf: Any, n: Any, size: int, aug: Augmentation, seeds: Any) -> Any:
    """Per-image 8-parameter projective transforms (output -> input coordinates)."""

    def uniform(i: int, low: float, high: float) -> Any:
        return tf.random.stateless_uniform([n], seed=seeds[i], minval=low, maxval=high)

    angle = tf.zeros([n])
    flip = tf.ones([n])
    if aug.flips:
        quarter = tf.random.stateless_uniform(
            [n], seed=seeds[0], minval=0, maxval=4, dtype=tf.int32
        )
        angle += tf.cast(quarter, tf.float32) * (math.pi / 2)
        flip = tf.where(uniform(1, 0.0, 1.0) < 0.5, -1.0, 1.0)
    if aug.rotation_deg:
        r = aug.rotation_deg * math.pi / 180
        angle += uniform(2, -r, r)
    zoom = uniform(3, 1 - aug.scale, 1 + aug.scale) if aug.scale else tf.ones([n])
    shift = aug.shift * size
    dx = uniform(4, -shift, shift) if shift else tf.zeros([n])
    dy = uniform(5, -shift, shift) if shift else tf.zeros([n])
    c = (size - 1) / 2.0
    cos, sin = tf.cos(angle) / zoom, tf.sin(angle) / zoom
    # input = R(angle)/zoom * F * (output - centre - shift) + centre, F = diag(flip, 1)
    a0, a1 = cos * flip, -sin
    b0, b1 = sin * flip, cos
    ox, oy = c + dx, c + dy
    a2 = c - a0 * ox - a1 * oy
    b2 = c - b0 * ox - b1 * oy
    zeros = tf.zeros([n])
    return tf.stack([a0, a1, a2, b0, b1, b2, zeros, zeros], axis=1)


# RGB <-> YIQ: hue is an angle and saturation a radius in the IQ plane, so both become one
# 3x3 matrix per image (an RGB->HSV->RGB round trip costs several times a training step's
# input work on a 2-core CPU).
_RGB_TO_YIQ = np.array(
    [[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]], np.float32
)
_YIQ_TO_RGB = np.linalg.inv(_RGB_TO_YIQ).astype(np.float32)


def _colour_matrices(tf: Any, n: Any, aug: Augmentation, seeds: Any) -> tuple[Any, Any]:
    """Per-image RGB matrix (hue rotation, saturation, contrast) and contrast gain."""

    def uniform(i: int, amount: float) -> Any:
        return tf.random.stateless_uniform([n], seed=seeds[6 + i], minval=-amount, maxval=amount)

    angle = uniform(0, aug.hue * 2 * math.pi) if aug.hue else tf.zeros([n])
    sat = 1.0 + uniform(1, aug.saturation) if aug.saturation else tf.ones([n])
    gain = 1.0 + uniform(2, aug.contrast) if aug.contrast else tf.ones([n])
    cos, sin = tf.cos(angle) * sat, tf.sin(angle) * sat
    ones, zeros = tf.ones([n]), tf.zeros([n])
    rotate = tf.reshape(
        tf.stack([ones, zeros, zeros, zeros, cos, -sin, zeros, sin, cos], axis=1), [-1, 3, 3]
    )
    matrix = tf.einsum("ij,njk,kl->nil", _YIQ_TO_RGB, rotate, _RGB_TO_YIQ)
    return matrix * gain[:, None, None], gain


def _augment_batch(tf: Any, images: Any, aug: Augmentation, seed_pair: Any) -> Any:
    """Augment a float32 batch (0..255) with per-image random parameters."""
    n = tf.shape(images)[0]
    size = images.shape[1]
    seeds = [tf.stack([seed_pair[0], seed_pair[1] + k]) for k in range(12)]
    if aug.flips or aug.rotation_deg or aug.scale or aug.shift:
        images = tf.raw_ops.ImageProjectiveTransformV3(
            images=images,
            transforms=_affine_matrices(tf, n, size, aug, seeds),
            output_shape=tf.constant([size, size]),
            fill_value=0.0,
            interpolation="BILINEAR",
            fill_mode="CONSTANT",
        )
    if not (aug.hue or aug.saturation or aug.contrast or aug.brightness):
        return images
    # The background is found on the image itself, before any colour change: near-black,
    # not exactly 0, since JPEG leaves noise of a few grey levels on a segmented background.
    background = tf.reduce_max(images, axis=-1, keepdims=True) <= float(NEAR_BLACK)
    foreground = 1.0 - tf.cast(background, tf.float32)
    matrix, gain = _colour_matrices(tf, n, aug, seeds)
    # Contrast pivots on the cell's own mean grey level (the black background left out).
    count = tf.maximum(tf.reduce_sum(foreground, axis=[1, 2, 3]), 1.0)
    mean = tf.reduce_sum(images * foreground, axis=[1, 2, 3]) / (3.0 * count)
    offset = (1.0 - gain) * mean
    if aug.brightness:
        offset += 255.0 * tf.random.stateless_uniform(
            [n], seed=seeds[9], minval=-aug.brightness, maxval=aug.brightness
        )
    x = tf.einsum("nhwc,ndc->nhwd", images, matrix) + offset[:, None, None, None]
    # The background keeps its own pixels exactly; only the cell is jittered.
    return tf.where(background, images, tf.clip_by_value(x, 0.0, 255.0))


def make_dataset(
    records: Sequence[Record],
    *,
    input_size: int,
    batch_size: int,
    training: bool,
    seed: int = 0,
    augmentation: Augmentation | None = None,
    weights: dict[int, float] | None = None,
    cache: bool | str | Path = True,
    failed: FailedFiles | None = None,
    drop_remainder: bool = False,
    stain: ReinhardStats | None = None,
) -> Any:
    """A `tf.data.Dataset` of (images float32 0..255, labels int32, sample weights float32).

    `training=True` shuffles (seeded, anew each epoch) and applies `augmentation` (None: no
    augmentation); otherwise the order is the records' order, so predictions line up with
    them. `cache` is True (memory), a file path prefix (for data sets larger than memory) or
    False; a file cache is named after a fingerprint of the records, size and order, so a
    cache left by another data set or split is never read back. Cells that fail to decode are
    dropped and recorded in `failed`. `stain` (the bundle's `ReinhardStats`, fitted on the
    training part by `fit_stain`) normalises every cell as it is decoded: pass the same
    value for every part, as analysis applies it to every cell.
    """
    import tensorflow as tf

    if not records:
        raise ValueError("no records to make a data set from")
    paths = [str(r.path) for r in records]
    labels = np.array([label_index(r.label) for r in records], np.int32)
    order = np.arange(len(records))
    if training:  # a random cache order, so a bounded shuffle buffer still mixes the classes
        order = np.random.default_rng(seed).permutation(len(records))
    size = int(input_size)
    sink = failed if failed is not None else FailedFiles()

    def load(path: bytes) -> tuple[np.ndarray, bool]:
        name = path.decode("utf-8")
        try:
            return load_cell(name, size, stain), True
        except ImageError as exc:
            sink.add(name, str(exc))
        except Exception as exc:  # noqa: BLE001 - one bad file must not end training
            sink.add(name, f"cannot be decoded ({exc})")
        return np.zeros((size, size, 3), np.uint8), False

    # The dataset functions below have no tensor-dependent Python control flow, so AutoGraph
    # is left out: a frozen app has no source for it to read (it would warn and run them as
    # they are), and the source install then traces them the same way.
    plain_graph = tf.autograph.experimental.do_not_convert

    @plain_graph
    def decode(path: Any, label: Any) -> tuple[Any, Any, Any]:
        image, ok = tf.numpy_function(load, [path], [tf.uint8, tf.bool], stateful=False)
        image.set_shape((size, size, 3))
        ok.set_shape(())
        return image, label, ok

    ds = tf.data.Dataset.from_tensor_slices(([paths[i] for i in order], labels[order]))
    ds = ds.map(decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)

    @plain_graph
    def decoded_ok(image: Any, label: Any, ok: Any) -> Any:
        return ok

    @plain_graph
    def drop_flag(image: Any, label: Any, ok: Any) -> tuple[Any, Any]:
        return image, label

    ds = ds.filter(decoded_ok).map(drop_flag)
    if cache is True:
        ds = ds.cache()
    elif cache:
        fingerprint = hashlib.sha256(f"{size}".encode())
        if stain is not None:  # normalised pixels are other pixels: never share a cache
            fingerprint.update(repr(stain.to_manifest()).encode())
        for i in order:
            fingerprint.update(f"\0{paths[i]}\0{labels[i]}".encode())
        target = Path(f"{cache}-{size}px-{fingerprint.hexdigest()[:16]}")
        target.parent.mkdir(parents=True, exist_ok=True)
        ds = ds.cache(str(target))
    if training:
        ds = ds.shuffle(min(len(records), 4096), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    table = weights or {0: 1.0, 1: 1.0}
    weight_of = tf.constant([table.get(0, 1.0), table.get(1, 1.0)], tf.float32)
    aug = augmentation if training else None
    if aug is not None and aug != Augmentation.none():
        seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)

        @plain_graph
        def augmented(batch: tuple[Any, Any], seed_pair: Any) -> tuple[Any, Any, Any]:
            images, labels_ = batch
            images = _augment_batch(tf, tf.cast(images, tf.float32), aug, seed_pair)
            return images, labels_, tf.gather(weight_of, labels_)

        ds = tf.data.Dataset.zip((ds, seeds)).map(augmented, num_parallel_calls=tf.data.AUTOTUNE)
    else:

        @plain_graph
        def plain(images: Any, labels_: Any) -> tuple[Any, Any, Any]:
            return tf.cast(images, tf.float32), labels_, tf.gather(weight_of, labels_)

        ds = ds.map(plain, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)
