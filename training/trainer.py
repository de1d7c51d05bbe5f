"""Two-phase transfer learning of one backbone, scored on held-out subjects, saved as a bundle.

The recipe (keras-io's EfficientNet fine-tuning example, and the seed paper):

1. **head** - the ImageNet backbone frozen, only the new head trains (Adam, 1e-3);
2. **fine-tune** - the top block of the backbone unfrozen with its BatchNorm layers kept
   frozen (their ImageNet statistics would be wrecked by small batches), lower learning rate.

Both phases use early stopping and reduce-on-plateau on the class-weighted validation loss
and end on the best epoch's weights. With `weights="none"` there is nothing to transfer, so
one "full" phase trains every layer from random initialisation.

One custom training step serves every `tf.distribute` strategy. Keras 3 `model.fit` fails
under MultiWorkerMirroredStrategy (keras-team/keras#20585), and a separate loop for the
cluster case would be a code path nobody runs on a desk; here the single-machine run and the
cluster run are the same code.

The GUI drives `train_backbone` through `progress` (a TrainingProgress per batch and epoch)
and `cancel` (checked between batches). On cancel the best epoch so far is still scored and
saved, marked as cancelled.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np

from leukgui.core.backbones import BACKBONE_LAYER, get_spec
from leukgui.core.bundle import (
    BUNDLE_SUFFIX,
    DATASET_KEY,
    IDENTITY_KEY,
    PARENT_KEY,
    make_manifest,
    save_bundle,
)
from leukgui.core.metrics import binary_metrics, roc_auc
from leukgui.core.results import ALL, HEM, CancelToken
from training.datasets import Record
from training.history import (
    PHASE_FINE_TUNE,
    PHASE_FULL,
    PHASE_HEAD,
    EpochLog,
    TrainingCallback,
    TrainingProgress,
    TrainingRun,
)
from training.pipeline import (
    Augmentation,
    FailedFiles,
    class_weights,
    fit_stain,
    make_dataset,
)
from training.scoring import (
    BAND_RULE,
    DEFAULT_BAND_CAP,
    DEFAULT_BAND_ERROR,
    THRESHOLD_RULE,
    Evaluation,
    Predictions,
    choose_band_detail,
    choose_threshold,
    evaluate_predictions,
    metrics_dict,
)
from training.splits import PARTS, LeakageError, Split, check_no_leakage

__all__ = [
    "INIT_FROM_DEFAULTS",
    "STRATEGIES",
    "TrainConfig",
    "TrainingCancelled",
    "dataset_fingerprint",
    "make_strategy",
    "next_bundle_path",
    "train_backbone",
]

STRATEGIES = ("default", "mirrored", "multiworker")
STAIN_METHODS = ("none", "reinhard")
STAIN_FIT_CELLS = 400  # training cells the stain statistics are fitted on (seeded sample)
INIT_FROM_WEIGHTS = "parent model"  # TrainConfig.weights of a run started from a bundle
# The schedule of a fine-tune from a current model (`--init-from`), for a few hundred cells:
# the head first, then the top layers, at the usual transfer-learning rates, 20 epochs at most
# (early stopping on the lab's validation cells). Measured (benchmarks/bench_learn.py, a lab
# whose stain and magnification the parent never saw): these rates gained 31.5 points of
# balanced accuracy on held-out cells and lost 0.5 on the parent's own kind of cells; a
# tenth of them (1e-4 / 1e-5, 8 epochs) gained only 3.5: too timid to follow a new stain.
INIT_FROM_DEFAULTS = {"epochs": 20, "head_epochs": 5, "head_lr": 1e-3, "fine_tune_lr": 1e-4}


class TrainingCancelled(RuntimeError):
    """Cancelled before any epoch finished, so there is no validated model to save."""


@dataclass
class TrainConfig:
    """Every setting of one training run (saved in the bundle and the training report)."""

    backbone: str = "efficientnetb0"
    weights: str = "imagenet"  # "imagenet", "none" or a path to a no-top weights file
    input_size: int | None = None  # None: the backbone's native size
    batch_size: int = 32
    epochs: int = 30  # most epochs in total, over both phases
    head_epochs: int = 5  # most epochs of the head phase (transfer learning only)
    head_lr: float = 1e-3
    fine_tune_lr: float = 1e-4
    full_lr: float | None = None  # weights "none": every layer from scratch (see lr_full)
    patience: int = 4  # early stopping: epochs without improvement
    lr_patience: int = 2  # reduce-on-plateau: epochs without improvement
    lr_factor: float = 0.3
    min_lr: float = 1e-7
    dropout: float = 0.3
    seed: int = 2019
    mixed_precision: bool = False
    strategy: str = "default"
    class_balance: str = "weights"  # "weights" (loss weights n / 2 n_class) or "none"
    augmentation: Augmentation = field(default_factory=Augmentation)
    cache: bool | str = True  # True: memory; a path prefix: cache file; False: none
    band_error: float = DEFAULT_BAND_ERROR
    band_cap: float = DEFAULT_BAND_CAP
    name: str | None = None  # bundle name; default the backbone's name
    verify_weights: bool = True  # check a cached ImageNet file against Keras's hash
    calibrate: bool = True  # temperature scaling fitted on validation (see core.calibration)
    stain: str = "none"  # "none" or "reinhard": stain normalisation fitted on training cells
    bootstrap_resamples: int = 2000  # subject bootstrap for every score's 95% interval
    inference_graph: bool = True  # write model.onnx (OpenVINO / ONNX Runtime) into the bundle
    # A bundle file to start from (its weights, backbone, input size, preprocessing and stain
    # normalisation) instead of ImageNet; `weights` then reads INIT_FROM_WEIGHTS.
    init_from: str | None = None

    def __post_init__(self) -> None:
        self.backbone = get_spec(self.backbone).name
        if self.init_from is not None:
            self.init_from = str(self.init_from)
            if str(self.weights).lower() not in ("imagenet", INIT_FROM_WEIGHTS):
                raise ValueError("init_from starts from the parent's weights; leave weights alone")
            self.weights = INIT_FROM_WEIGHTS
            if self.mixed_precision:
                raise ValueError("mixed precision cannot be combined with init_from")
            if self.stain != "none":
                raise ValueError(
                    "init_from keeps the parent model's own stain normalisation; leave stain "
                    "at 'none'"
                )
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}")
        if self.class_balance not in ("weights", "none"):
            raise ValueError("class_balance must be 'weights' or 'none'")
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError("epochs and batch size must be at least 1")
        if self.stain not in STAIN_METHODS:
            raise ValueError(f"stain must be one of {', '.join(STAIN_METHODS)}")
        if self.bootstrap_resamples < 100:
            raise ValueError("bootstrap_resamples must be at least 100")

    @property
    def transfer(self) -> bool:
        return self.init_from is not None or str(self.weights).lower() != "none"

    @property
    def lr_full(self) -> float:
        """From-scratch learning rate: 1e-4 for VGG16 (no BatchNorm; 1e-3 diverged in our
        runs), 1e-3 for the BatchNorm networks."""
        if self.full_lr is not None:
            return self.full_lr
        return 1e-4 if self.backbone == "vgg16" else 1e-3

    @property
    def size(self) -> int:
        return int(self.input_size or get_spec(self.backbone).input_size)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["augmentation"] = self.augmentation.describe()
        out["input_size"] = self.size
        out["weights"] = str(self.weights)
        out["full_lr"] = self.lr_full if not self.transfer else None
        return out


# --------------------------------------------------------------------------------------------
# Strategy, precision, model
# --------------------------------------------------------------------------------------------


def make_strategy(name: str) -> Any:
    """The tf.distribute strategy for `name` (multiworker reads the cluster from TF_CONFIG)."""
    import tensorflow as tf

    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multiworker":
        if not os.environ.get("TF_CONFIG"):
            raise ValueError(
                "--strategy multiworker needs TF_CONFIG describing the cluster and this "
                "worker's index (see the README, 'Training on several machines')"
            )
        options = tf.distribute.experimental.CommunicationOptions(
            implementation=tf.distribute.experimental.CommunicationImplementation.RING
        )
        return tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
    raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}")


def is_chief() -> bool:
    """True on the worker that writes outputs (always true outside a cluster)."""
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        return True
    config = json.loads(raw)
    task = config.get("task", {})
    if task.get("type") == "chief":
        return True
    has_chief = bool(config.get("cluster", {}).get("chief"))
    return not has_chief and task.get("type", "worker") == "worker" and task.get("index", 0) == 0


def _precision_policy(mixed: bool) -> str:
    if not mixed:
        return "float32"
    import tensorflow as tf

    # float16 needs a GPU's tensor cores; on CPUs bfloat16 is the type that speeds up matmuls.
    return "mixed_float16" if tf.config.list_physical_devices("GPU") else "mixed_bfloat16"


def _build(config: TrainConfig, policy: str) -> Any:
    import keras

    from leukgui.core.backbones import build_classifier

    if config.init_from is not None:
        # The parent's own network, loaded and hash-checked like any model file: the same
        # architecture, preprocessing layers and weights (mixed precision is refused here).
        from leukgui.core.bundle import load_bundle

        return load_bundle(config.init_from).keras_model()
    previous = keras.mixed_precision.dtype_policy()
    keras.mixed_precision.set_dtype_policy(policy)
    try:
        weights = None if not config.transfer else config.weights
        model = build_classifier(
            config.backbone,
            weights=weights,
            input_size=config.size,
            dropout=config.dropout,
            seed=config.seed,
            verify_weights=config.verify_weights,
        )
    finally:
        keras.mixed_precision.set_dtype_policy(previous)
    if not config.transfer:
        # From random initialisation the default BatchNorm momentum (0.99) leaves the moving
        # statistics far behind the batch statistics for hundreds of steps (measured with the
        # demo model); 0.9 catches up within an epoch.
        for layer in model.get_layer(BACKBONE_LAYER).layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.momentum = 0.9
    return model


def set_phase(model: Any, phase: str, unfreeze_prefix: str) -> None:
    """Freeze and unfreeze layers for a phase (BatchNorm stays frozen when fine-tuning)."""
    import keras

    backbone = model.get_layer(BACKBONE_LAYER)
    if phase == PHASE_HEAD:
        backbone.trainable = False
        return
    backbone.trainable = True
    if phase == PHASE_FULL:
        return
    names = [layer.name for layer in backbone.layers]
    start = next((i for i, n in enumerate(names) if n.startswith(unfreeze_prefix)), None)
    if start is None:
        raise ValueError(f"no layer starting with {unfreeze_prefix!r} in the backbone")
    for i, layer in enumerate(backbone.layers):
        frozen_bn = isinstance(layer, keras.layers.BatchNormalization)
        layer.trainable = i >= start and not frozen_bn


def _count(variables: list[Any]) -> int:
    return int(sum(np.prod(v.shape) for v in variables))


# --------------------------------------------------------------------------------------------
# Output names
# --------------------------------------------------------------------------------------------


def next_bundle_path(folder: Path, name: str, day: date | None = None) -> tuple[Path, str]:
    """`<name>-<date>.leukmodel`, or `-<date>.2`, `.3`... : never an existing file."""
    day = day or date.today()
    base = day.isoformat()
    k = 1
    while True:
        version = base if k == 1 else f"{base}.{k}"
        path = Path(folder) / f"{name}-{version}{BUNDLE_SUFFIX}"
        run_dir = Path(folder) / f"{name}-{version}-training"
        if not path.exists() and not run_dir.exists():
            return path, version
        k += 1


# --------------------------------------------------------------------------------------------
# The loop
# --------------------------------------------------------------------------------------------


@dataclass
class _Best:
    loss: float = math.inf
    epoch: int = 0
    weights: list[np.ndarray] | None = None


class _Loop:
    """Training state shared by the phases: model, strategy, data, best weights, log."""

    def __init__(
        self,
        config: TrainConfig,
        split: Split,
        progress: TrainingCallback | None,
        cancel: CancelToken | None,
        run_dir: Path | None,
        failed: FailedFiles,
        stain: Any = None,
    ) -> None:
        import tensorflow as tf

        self.tf = tf
        self.stain = stain
        self.config = config
        self.split = split
        self.progress = progress
        self.cancel = cancel
        self.run_dir = run_dir
        self.failed = failed
        self.strategy = make_strategy(config.strategy)
        self.replicas = self.strategy.num_replicas_in_sync
        self.policy = _precision_policy(config.mixed_precision)
        self.history: list[EpochLog] = []
        self.best = _Best()
        self.cancelled = False
        self.epoch = 0
        spec = get_spec(config.backbone)
        self.unfreeze_prefix = spec.unfreeze_prefix
        with self.strategy.scope():
            self.model = _build(config, self.policy)
        self.weights = (
            class_weights(split.train) if config.class_balance == "weights" else {0: 1.0, 1: 1.0}
        )
        n_train = len(split.train)
        self.global_batch = min(config.batch_size, n_train)
        self.steps = max(1, n_train // self.global_batch)
        train = make_dataset(
            split.train,
            input_size=config.size,
            batch_size=self.global_batch,
            training=True,
            seed=config.seed,
            augmentation=config.augmentation,
            weights=self.weights,
            cache=self._cache("train"),
            failed=failed,
            drop_remainder=True,
            stain=stain,
        ).repeat()
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = (
            tf.data.experimental.AutoShardPolicy.DATA
        )
        self.train_iter = iter(
            self.strategy.experimental_distribute_dataset(train.with_options(options))
        )
        self.validation = make_dataset(
            split.validation,
            input_size=config.size,
            batch_size=config.batch_size,
            training=False,
            weights=self.weights,
            cache=self._cache("validation"),
            failed=failed,
            stain=stain,
        )

    def _cache(self, part: str) -> bool | str:
        cache = self.config.cache
        if isinstance(cache, str) and cache not in ("", "memory"):
            return str(Path(cache) / f"{self.config.backbone}-{part}")
        return bool(cache)

    # -- compiled steps (rebuilt per phase, since the trainable variables change) ------------

    def _make_steps(self, learning_rate: float) -> tuple[Any, Any]:
        import keras

        tf = self.tf
        model = self.model
        with self.strategy.scope():
            optimizer = keras.optimizers.Adam(learning_rate)
            if self.policy == "mixed_float16":
                optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
        variables = model.trainable_variables
        global_batch = self.global_batch

        def replica_step(images: Any, labels: Any, weights: Any) -> tuple[Any, Any]:
            with tf.GradientTape() as tape:
                probs = tf.cast(model(images, training=True), tf.float32)
                per_cell = keras.losses.sparse_categorical_crossentropy(labels, probs) * weights
                loss = tf.nn.compute_average_loss(per_cell, global_batch_size=global_batch)
                scaled = optimizer.scale_loss(loss)
            grads = tape.gradient(scaled, variables)
            optimizer.apply_gradients(zip(grads, variables, strict=True))
            predicted = tf.cast(tf.argmax(probs, axis=-1), labels.dtype)
            correct = tf.reduce_sum(tf.cast(tf.equal(predicted, labels), tf.float32))
            return loss, correct

        # autograph=False throughout: no tensor-dependent Python control flow here, and the
        # frozen app has no source for AutoGraph, so source and frozen runs trace alike.
        @tf.function(autograph=False)
        def train_step(iterator: Any) -> tuple[Any, Any]:
            images, labels, weights = next(iterator)
            loss, correct = self.strategy.run(replica_step, args=(images, labels, weights))
            reduce = tf.distribute.ReduceOp.SUM
            return (
                self.strategy.reduce(reduce, loss, axis=None),
                self.strategy.reduce(reduce, correct, axis=None),
            )

        return optimizer, train_step

    def _predict_fn(self) -> Any:
        tf = self.tf
        model = self.model

        @tf.function(reduce_retracing=True, autograph=False)
        def predict(images: Any) -> Any:
            return tf.cast(model(images, training=False), tf.float32)

        return predict

    def _agree(self, value: float) -> float:
        """Under multiworker, the mean over workers, so every worker takes the same
        early-stopping and learning-rate decisions (rounding may differ between machines)."""
        if self.config.strategy != "multiworker":
            return value
        tf = self.tf

        def mean(v: Any) -> Any:
            ctx = tf.distribute.get_replica_context()
            return ctx.all_reduce(tf.distribute.ReduceOp.MEAN, v)

        out = self.strategy.run(mean, args=(tf.constant(value, tf.float32),))
        return float(self.strategy.experimental_local_results(out)[0].numpy())

    def _make_sync(self) -> Any:
        """Average BatchNorm moving statistics over replicas (None on one replica).

        Gradients are all-reduced, but each replica updates its BatchNorm moving mean and
        variance from its own batches, so without this the workers of a cluster end with the
        same trainable weights and different statistics (measured: 2 workers, 94 BN layers).
        """
        if self.replicas == 1:
            return None
        import keras

        tf = self.tf
        stats = []
        for layer in self.model._flatten_layers():
            if isinstance(layer, keras.layers.BatchNormalization):
                stats += [layer.moving_mean, layer.moving_variance]

        def replica_mean() -> list[Any]:
            ctx = tf.distribute.get_replica_context()
            return ctx.all_reduce(
                tf.distribute.ReduceOp.MEAN, [tf.identity(v.value) for v in stats]
            )

        @tf.function(autograph=False)
        def sync() -> None:
            means = self.strategy.run(replica_mean)
            for v, m in zip(stats, means, strict=True):
                v.assign(self.strategy.experimental_local_results(m)[0])

        return sync

    def validate(self, predict: Any) -> tuple[float, float, float, float]:
        """Class-weighted loss, accuracy, balanced accuracy and AUC on the validation cells."""
        probs, labels, weights = [], [], []
        for images, y, w in self.validation:
            probs.append(predict(images).numpy())
            labels.append(y.numpy())
            weights.append(w.numpy())
        p = np.concatenate(probs)
        y = np.concatenate(labels)
        w = np.concatenate(weights)
        eps = 1e-7
        picked = np.clip(p[np.arange(len(y)), y], eps, 1.0)
        loss = float(np.sum(-np.log(picked) * w) / max(np.sum(w), eps))
        truth = [ALL if v == 1 else HEM for v in y]
        called = [ALL if v >= 0.5 else HEM for v in p[:, 1]]
        m = binary_metrics(truth, called)
        auc = roc_auc(truth, p[:, 1].tolist()) if len(set(truth)) == 2 else math.nan
        return self._agree(loss), m.accuracy, m.balanced_accuracy, auc

    def run_phase(self, phase: str, epochs: int, learning_rate: float, total: int) -> None:
        """Train one phase with early stopping, reduce-on-plateau and best-weights tracking."""
        if epochs <= 0 or self.cancelled:
            return
        if phase != PHASE_HEAD and self.best.weights is not None:
            self.model.set_weights(self.best.weights)  # fine-tune from the best head
        set_phase(self.model, phase, self.unfreeze_prefix)
        optimizer, train_step = self._make_steps(learning_rate)
        predict = self._predict_fn()
        sync = self._make_sync()
        lr = learning_rate
        since_best = since_lr = 0
        phase_best = math.inf
        for _ in range(epochs):
            self.epoch += 1
            started = time.perf_counter()
            loss_sum = correct_sum = 0.0
            for step in range(1, self.steps + 1):
                if self.cancel is not None and self.cancel.cancelled:
                    self.cancelled = True
                    return
                loss, correct = train_step(self.train_iter)
                loss_sum += float(loss)
                correct_sum += float(correct)
                seen = step * self.global_batch
                rate = seen / max(time.perf_counter() - started, 1e-9)
                if self.progress is not None:
                    self.progress(
                        TrainingProgress(
                            "batch",
                            self.config.backbone,
                            phase,
                            self.epoch,
                            total,
                            step,
                            self.steps,
                            loss_sum / step,
                            correct_sum / seen,
                            rate,
                        )
                    )
            train_seconds = time.perf_counter() - started
            if sync is not None:
                sync()
            val_loss, val_acc, val_bacc, val_auc = self.validate(predict)
            log = EpochLog(
                phase=phase,
                epoch=self.epoch,
                loss=loss_sum / self.steps,
                accuracy=correct_sum / (self.steps * self.global_batch),
                val_loss=val_loss,
                val_accuracy=val_acc,
                val_balanced_accuracy=val_bacc,
                val_auc=val_auc,
                learning_rate=lr,
                seconds=time.perf_counter() - started,
                images_per_second=self.steps * self.global_batch / train_seconds,
            )
            self.history.append(log)
            if val_loss < self.best.loss:
                self.best = _Best(val_loss, self.epoch, self.model.get_weights())
                self._checkpoint()
            if val_loss < phase_best - 1e-6:
                phase_best = val_loss
                since_best = since_lr = 0
            else:
                since_best += 1
                since_lr += 1
            if self.progress is not None:
                self.progress(
                    TrainingProgress(
                        "epoch",
                        self.config.backbone,
                        phase,
                        self.epoch,
                        total,
                        self.steps,
                        self.steps,
                        log.loss,
                        log.accuracy,
                        log.images_per_second,
                        epoch_log=log,
                    )
                )
            if since_best >= self.config.patience:
                break
            if since_lr >= self.config.lr_patience and lr > self.config.min_lr:
                lr = max(lr * self.config.lr_factor, self.config.min_lr)
                optimizer.learning_rate.assign(lr)
                since_lr = 0

    def _checkpoint(self) -> None:
        """Keep the best weights on disk too, so a crash does not lose a long run."""
        if self.run_dir is None or (self.config.strategy == "multiworker" and not is_chief()):
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        target = self.run_dir / "best.weights.h5"
        tmp = self.run_dir / "best-partial.weights.h5"
        self.model.save_weights(tmp)
        os.replace(tmp, target)


# --------------------------------------------------------------------------------------------
# Scoring and saving
# --------------------------------------------------------------------------------------------


def compiled_predict(model: Any) -> Any:
    """One compiled P(ALL) function per model (shapes vary only in the last batch)."""
    import tensorflow as tf

    @tf.function(reduce_retracing=True, autograph=False)
    def predict(images: Any) -> Any:
        return model(images, training=False)[:, 1]

    return predict


def predict_records(
    predict: Any,
    records: list[Record],
    *,
    input_size: int,
    batch_size: int,
    failed: FailedFiles,
    stain: Any = None,
) -> tuple[Predictions, float]:
    """P(ALL) for every decodable record (in order) and the images/s of the pass.

    `predict` comes from `compiled_predict(model)`; `stain` is the run's stain normalisation
    (None: none), applied exactly as in training and in analysis.
    """
    if not records:
        return Predictions([], [], [], []), math.nan

    ds = make_dataset(
        records,
        input_size=input_size,
        batch_size=batch_size,
        training=False,
        failed=failed,
        stain=stain,
    )
    started = time.perf_counter()
    p = [predict(images).numpy() for images, _, _ in ds]
    seconds = time.perf_counter() - started
    p_all = np.concatenate(p).astype(float).tolist() if p else []
    bad = {path for path, _ in failed.items()}
    kept = [r for r in records if str(r.path) not in bad]
    if len(kept) != len(p_all):
        raise RuntimeError(f"{len(p_all)} predictions for {len(kept)} readable records")
    return (
        Predictions(
            paths=[str(Path(r.path).absolute()) for r in kept],
            subjects=[r.subject for r in kept],
            truth=[r.label for r in kept],
            p_all=p_all,
        ),
        len(p_all) / seconds if seconds > 0 else math.nan,
    )


def _export_model(config: TrainConfig, weights: list[np.ndarray]) -> Any:
    """A plain float32 copy outside any strategy: what the bundle ships and the app runs."""
    import tensorflow as tf

    with tf.distribute.get_strategy().scope():
        model = _build(config, "float32")
    model.set_weights(weights)
    return model


def _weights_digest(weights: list[np.ndarray]) -> str:
    """SHA-256 of the weight arrays themselves ("weight arrays SHA-256"): equal on every
    worker of a cluster. Not the hash of the bundle's model.keras file, which the manifest
    calls weights_sha256 and reports call "model.keras SHA-256"."""
    import hashlib

    digest = hashlib.sha256()
    for w in weights:
        digest.update(np.ascontiguousarray(w).tobytes())
    return digest.hexdigest()


def score_parts(
    predict: Any, split: Split, config: TrainConfig, failed: FailedFiles, stain: Any = None
) -> tuple[Evaluation, Evaluation | None, float, float]:
    """Validation and test scores of a trained model, and its calibration.

    The temperature is fitted on the validation cells' raw P(ALL); the threshold and the band
    are then chosen on the calibrated validation scores, and both parts are scored on
    calibrated scores (what the app will show), with the raw ones kept for the before/after
    calibration table. Returns (validation, test or None, temperature, inference images/s).
    """
    from dataclasses import replace as dc_replace

    from leukgui.core.calibration import (
        TEMPERATURE_BOUNDS,
        apply_temperature,
        at_bound,
        fit_temperature,
    )

    def run(records: list[Record]) -> tuple[Predictions, float]:
        return predict_records(
            predict,
            records,
            input_size=config.size,
            batch_size=config.batch_size,
            failed=failed,
            stain=stain,
        )

    raw_val, _ = run(split.validation)
    temperature = 1.0
    if config.calibrate:
        temperature = fit_temperature([t == ALL for t in raw_val.truth], raw_val.p_all)

    def calibrated(raw: Predictions) -> Predictions:
        p = apply_temperature(raw.p_all, temperature).tolist()
        return dc_replace(raw, p_all=p)

    val = calibrated(raw_val)
    threshold = choose_threshold(val.truth, val.p_all)
    choice = choose_band_detail(
        val.truth,
        val.p_all,
        threshold,
        max_error=config.band_error,
        max_uncertain=config.band_cap,
    )
    band = choice.band
    common = dict(
        temperature=temperature,
        resamples=config.bootstrap_resamples,
        seed=config.seed,
        band_error=config.band_error,
    )
    val_eval = evaluate_predictions(
        val, threshold, band, "validation", uncalibrated_p_all=raw_val.p_all, **common
    )
    val_eval.notes += [f"uncertainty band: {note}" for note in choice.notes]
    if config.calibrate and at_bound(temperature):
        val_eval.notes.append(
            f"calibration: the temperature stopped at its limit ({temperature:.2f}, allowed "
            f"{TEMPERATURE_BOUNDS[0]}-{TEMPERATURE_BOUNDS[1]}): "
            + (
                "the validation scores carry almost no information, so calibration squeezes "
                "every P(ALL) towards the same value"
                if temperature > 1
                else "the network's scores are far too timid on validation"
            )
        )
    if config.calibrate and val_eval.ece > val_eval.ece_uncalibrated + 1e-9:
        val_eval.notes.append(
            f"calibration: the validation ECE rose from {val_eval.ece_uncalibrated:.3f} to "
            f"{val_eval.ece:.3f} (temperature scaling fits the likelihood, not the binned ECE; "
            "with few validation cells the two can disagree)"
        )
    # Inference speed on cached validation cells (a second pass, so decoding is excluded).
    _, inference_rate = run(split.validation)
    test_eval = None
    if split.test:
        raw_test, _ = run(split.test)
        test_eval = evaluate_predictions(
            calibrated(raw_test),
            threshold,
            band,
            "test",
            uncalibrated_p_all=raw_test.p_all,
            **common,
        )
    return val_eval, test_eval, temperature, inference_rate


def manifest_metrics(validation: Evaluation, test: Evaluation | None) -> dict[str, Any]:
    """A bundle's scores, each under the part it came from.

    "test" and "validation" hold their parts' scores; the top level repeats the test scores
    (what older readers and the model picker's warning look at) and says which part they are
    from. Without a test part the top level holds the validation scores, marked as such and
    with a note, so nothing can present them as held-out.
    """
    out = dict(metrics_dict(test)) if test is not None else dict(metrics_dict(validation))
    out["evaluated_on"] = "test" if test is not None else "validation"
    if test is not None:
        out["test"] = metrics_dict(test)
    out["validation"] = metrics_dict(validation)
    if validation.notes:  # e.g. the cap on uncertain cells stopped the band short
        out["validation"]["notes"] = list(validation.notes)
    if test is None:
        out["note"] = (
            "No test part: there are no held-out scores. These are validation scores: the "
            "validation cells chose the best epoch, the threshold and the band, so they are "
            "optimistic."
        )
    return out


def dataset_fingerprint(split: Split) -> dict[str, Any]:
    """The data set a model was trained on, for its manifest (`training_data.dataset`).

    `sha256` is a SHA-256 over the sorted rows "<file content SHA-256> TAB <label> TAB
    <subject>" (one per cell of the train, validation and test parts, joined by newlines):
    content hashes, not paths, so the same cells give the same hash wherever the folder
    lies. File hashes come from `split.file_hashes` where the duplicate check computed them.
    """
    import hashlib
    from collections import Counter, defaultdict

    known = split.file_hashes or {}
    rows = []
    cells: Counter[str] = Counter()
    subjects: dict[str, set[str]] = defaultdict(set)
    for part in PARTS:
        for r in split.part(part):
            digest = known.get(r.path)
            if digest is None:
                digest = hashlib.sha256(Path(r.path).read_bytes()).hexdigest()
            rows.append(f"{digest}\t{r.label}\t{r.subject}")
            cells[r.label] += 1
            subjects[r.label].add(r.subject)
    body = "\n".join(sorted(rows)).encode("utf-8")
    return {
        "sha256": hashlib.sha256(body).hexdigest(),
        "hash_of": "sorted rows (file content SHA-256, label, subject), one per cell of the "
        "train, validation and test parts",
        "cells": len(rows),
        "cells_per_class": {c: cells.get(c, 0) for c in (ALL, HEM)},
        "subjects": len(set().union(*subjects.values())) if subjects else 0,
        "subjects_per_class": {c: len(subjects.get(c, ())) for c in (ALL, HEM)},
    }


def _parent_manifest(config: TrainConfig, split: Split) -> dict[str, Any]:
    """The checked manifest of `config.init_from`; ValueError when it does not fit the run,
    LeakageError when the new test part holds subjects the parent trained or validated on
    (the parent's knowledge of them would flow into the new model's held-out scores)."""
    from leukgui.core.bundle import read_manifest

    manifest = read_manifest(config.init_from)
    label = f"{manifest['name']} v{manifest['version']}"
    if get_spec(manifest["backbone"]).name != config.backbone:
        raise ValueError(
            f"the parent model {label} is a {manifest['backbone']}, not a {config.backbone}"
        )
    if int(manifest["input_size"]) != config.size:
        raise ValueError(
            f"the parent model {label} takes {manifest['input_size']} px cells, not {config.size}"
        )
    recorded = ((manifest.get("training_data") or {}).get("split") or {}).get("subjects") or {}
    seen = {str(s) for part in ("train", "validation") for s in recorded.get(part) or ()}
    leaked = sorted(split.subjects("test") & seen)
    if leaked:
        shown = ", ".join(repr(s) for s in leaked[:5]) + (" ..." if len(leaked) > 5 else "")
        raise LeakageError(
            f"{len(leaked)} test subject(s) were in the training or validation part of the "
            f"parent model {label}: {shown}; its test scores would not be held-out. Give "
            "another test set or split (--seed, --test-data) without those subjects",
            {s: ["test", f"parent {label}"] for s in leaked},
        )
    return manifest


def train_backbone(
    split: Split,
    config: TrainConfig,
    out: str | os.PathLike[str],
    *,
    progress: TrainingCallback | None = None,
    cancel: CancelToken | None = None,
    save_on_cancel: bool = True,
    source: str = "",
    log: Any = None,
    warnings: Sequence[str] = (),
) -> TrainingRun:
    """Train `config.backbone` on `split`, score it, and write its bundle and training files.

    Outputs in `out`: `<name>-<date>.leukmodel` (never overwriting) and a folder
    `<name>-<date>-training/` with the CSV log, the curves and the training report. Under
    multiworker only the chief writes; the other workers keep their files in a temporary
    folder. Raises TrainingCancelled when cancelled before the first epoch ended.
    """
    import keras

    from training.curves import plot_curves
    from training.reports import write_log_csv, write_training_report

    check_no_leakage(split)
    if not split.train or not split.validation:
        raise ValueError("training needs cells in both the train and the validation part")
    for part in ("train", "validation"):
        labels = {r.label for r in split.part(part)}
        if labels != {ALL, HEM}:
            raise ValueError(f"the {part} part holds only {', '.join(sorted(labels))} cells")
    parent = _parent_manifest(config, split) if config.init_from is not None else None
    say = log or (lambda _msg: None)
    if parent is not None and parent.get("demo"):
        say(
            "note: fine-tuning the DEMO model (trained on synthetic cells): the new model "
            "keeps the DEMO notice on every report; train a lab model from ImageNet or from "
            "a real model"
        )
    chief = config.strategy != "multiworker" or is_chief()
    out_dir = Path(out) if chief else Path(tempfile.mkdtemp(prefix="leukgui-worker-"))
    out_dir.mkdir(parents=True, exist_ok=True)
    name = config.name or config.backbone
    bundle_path, version = next_bundle_path(out_dir, name)
    run_dir = out_dir / f"{name}-{version}-training"

    keras.utils.set_random_seed(config.seed)
    failed = FailedFiles()
    started = time.time()
    stain = None
    if parent is not None and parent.get("stain_normalisation") is not None:
        from leukgui.core.bundle import check_stain_normalisation

        stain = check_stain_normalisation(parent["stain_normalisation"])  # the parent's pixels
    elif config.stain != "none":  # fitted on training cells only: no score sees its own data
        stain = fit_stain(
            split.train, config.size, max_cells=STAIN_FIT_CELLS, seed=config.seed, failed=failed
        )
    loop = _Loop(config, split, progress, cancel, run_dir, failed, stain)
    say(
        f"{config.backbone}: {len(split.train)} training and {len(split.validation)} "
        f"validation cells, {loop.steps} steps of {loop.global_batch} per epoch, "
        f"{loop.replicas} replica(s), precision {loop.policy}"
    )
    total = config.epochs
    if config.transfer:
        head = min(config.head_epochs, max(total - 1, 1))
        loop.run_phase(PHASE_HEAD, head, config.head_lr, total)
        loop.run_phase(PHASE_FINE_TUNE, total - loop.epoch, config.fine_tune_lr, total)
    else:
        loop.run_phase(PHASE_FULL, total, config.lr_full, total)
    training_seconds = time.time() - started
    if loop.best.weights is None:
        raise TrainingCancelled("cancelled before the first epoch finished; nothing to save")
    if loop.cancelled and not save_on_cancel:
        raise TrainingCancelled(f"cancelled after epoch {loop.epoch}; not saved")

    set_phase(loop.model, PHASE_FINE_TUNE if config.transfer else PHASE_FULL, loop.unfreeze_prefix)
    trainable = _count(loop.model.trainable_variables)
    parameters = loop.model.count_params()
    model = _export_model(config, loop.best.weights)
    digest = _weights_digest(model.get_weights())
    say(f"{config.backbone}: weight arrays sha256 {digest}")

    predict = compiled_predict(model)
    scored = score_parts(predict, split, config, failed, stain)
    val_eval, test_eval, temperature, inference_rate = scored
    threshold, band = val_eval.threshold, val_eval.uncertainty_band

    band_rule = BAND_RULE.format(error=config.band_error, cap=config.band_cap)
    if config.calibrate:
        band_rule += "; threshold and band chosen on the calibrated P(ALL)"
    rates = [e.images_per_second for e in loop.history]
    stopped = "cancelled" if loop.cancelled else "completed"
    if not loop.cancelled and loop.epoch < total:
        stopped = "early stopping"
    settings = config.to_dict()
    settings.update(
        {
            "replicas": loop.replicas,
            "precision_policy": loop.policy,
            "class_weights": {"HEM": loop.weights[0], "ALL": loop.weights[1]},
            "global_batch_size": loop.global_batch,
            "steps_per_epoch": loop.steps,
            "unfreeze_from": loop.unfreeze_prefix if config.transfer else "all layers",
            "monitor": "class-weighted validation loss",
            "temperature": temperature,
        }
    )
    if parent is not None:
        settings["stain_from"] = "parent model" if stain is not None else "none"
        settings["parent"] = (
            f"{parent['name']} v{parent['version']} (SHA-256 {parent[IDENTITY_KEY]})"
        )
    metrics = manifest_metrics(val_eval, test_eval)
    extra: dict[str, Any] = {"cancelled": loop.cancelled}
    if parent is not None:
        extra[PARENT_KEY] = {
            "name": parent["name"],
            "version": parent["version"],
            IDENTITY_KEY: parent[IDENTITY_KEY],
            "weights_sha256": parent["weights_sha256"],
            "backbone": parent["backbone"],
            "file": Path(config.init_from or "").name,
        }
    if config.calibrate:
        extra["calibration"] = {
            "method": "temperature",
            "temperature": temperature,
            "fitted_on": "validation",
        }
    if stain is not None:
        extra["stain_normalisation"] = stain.to_manifest()
    from leukgui.core.engine import device_description

    manifest = make_manifest(
        name=name,
        version=version,
        backbone=config.backbone,
        input_size=config.size,
        threshold=threshold,
        uncertainty_band=band,
        # A model fine-tuned from the demo model keeps its DEMO notice: its weights began as
        # the demo's (synthetic cells), so every report it makes says so. A lab trains its
        # real model from ImageNet, or from a real model.
        demo=bool(parent is not None and parent.get("demo")),
        description=(
            f"{config.backbone} fine-tuned by `leukgui train` on {source or 'a labelled set'}"
            + (
                f" from {parent['name']} v{parent['version']} ({str(parent[IDENTITY_KEY])[:8]})"
                + (
                    " — the DEMO model: a demonstration, not for real cells"
                    if parent.get("demo")
                    else ""
                )
                if parent is not None
                else ""
            )
            + (" (CANCELLED early: best epoch so far)" if loop.cancelled else "")
        ),
        training_data={
            "source": source,
            "split": split.to_manifest(),
            "summary": split.summary(),
            "threshold_rule": THRESHOLD_RULE,
            "band_rule": band_rule,
            "settings": settings,
            "epochs_run": loop.epoch,
            "best_epoch": loop.best.epoch,
            "stopped_because": stopped,
            "training_seconds": round(training_seconds, 1),
            "unreadable_files": len(failed),
            "warnings": list(warnings),
            DATASET_KEY: dataset_fingerprint(split),
        },
        metrics=metrics,
        extra=extra,
    )
    run = TrainingRun(
        backbone=config.backbone,
        name=name,
        version=version,
        settings=settings,
        data=split.summary(),
        split=split.to_manifest(),
        history=loop.history,
        validation=val_eval,
        test=test_eval,
        threshold_rule=THRESHOLD_RULE,
        band_rule=band_rule,
        parameters=int(parameters),
        trainable_parameters=trainable,
        training_seconds=training_seconds,
        train_images_per_second=float(np.median(rates)) if rates else math.nan,
        inference_images_per_second=inference_rate,
        best_epoch=loop.best.epoch,
        stopped_because=stopped,
        cancelled=loop.cancelled,
        unreadable=failed.items(),
        device=device_description(),
        weight_arrays_sha256=digest,
        warnings=list(warnings),
    )
    run.run_folder = run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    run.bundle_path = save_bundle(
        model, manifest, bundle_path, inference_graph=config.inference_graph
    )
    run.log_csv = write_log_csv(loop.history, run_dir / "training_log.csv")
    run.curves_png = plot_curves(loop.history, run_dir / "curves.png", title=f"{name} {version}")
    run.report_xlsx = write_training_report(run, run_dir / "training_report.xlsx")
    checkpoint = run_dir / "best.weights.h5"
    if checkpoint.exists():
        checkpoint.unlink()  # the bundle now holds these weights, hash-checked
    loop._agree(0.0)  # a cluster's workers leave together, or the last one sees a dead peer
    return run
