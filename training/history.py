"""What a training run produced, as plain data: the epoch log and the run summary.

The trainer fills these, the reports and the comparison table read them, and the GUI's
training page receives `TrainingProgress` through a callback. No TensorFlow here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from training.scoring import Evaluation

__all__ = [
    "LOG_COLUMNS",
    "PHASE_FINE_TUNE",
    "PHASE_FULL",
    "PHASE_HEAD",
    "EpochLog",
    "TrainingProgress",
    "TrainingRun",
]

# Phases of two-phase transfer learning; "full" = every layer trained (weights none).
PHASE_HEAD = "head"
PHASE_FINE_TUNE = "fine-tune"
PHASE_FULL = "full"

LOG_COLUMNS = (
    "phase",
    "epoch",
    "loss",
    "accuracy",
    "val_loss",
    "val_accuracy",
    "val_balanced_accuracy",
    "val_auc",
    "learning_rate",
    "seconds",
    "images_per_second",
)


@dataclass(frozen=True)
class EpochLog:
    """One row of the CSV training log (epochs are counted across both phases, from 1)."""

    phase: str
    epoch: int
    loss: float
    accuracy: float
    val_loss: float
    val_accuracy: float
    val_balanced_accuracy: float
    val_auc: float
    learning_rate: float
    seconds: float
    images_per_second: float

    def row(self) -> list[Any]:
        return [getattr(self, name) for name in LOG_COLUMNS]


@dataclass(frozen=True)
class TrainingProgress:
    """What the trainer reports after each batch and each epoch (for a progress bar and log).

    `kind` is "batch" or "epoch"; for "epoch" the `epoch_log` is filled.
    """

    kind: str
    backbone: str
    phase: str
    epoch: int  # 1-based, counted across phases
    epochs: int  # the most epochs this run can take
    batch: int  # 1-based within the epoch
    batches: int
    loss: float
    accuracy: float
    images_per_second: float
    epoch_log: EpochLog | None = None


TrainingCallback = Callable[[TrainingProgress], None]


@dataclass
class TrainingRun:
    """Everything one backbone's training produced, for the reports and the comparison."""

    backbone: str
    name: str  # bundle name in its manifest
    version: str
    settings: dict[str, Any]  # every option that shaped the run, JSON-ready
    data: dict[str, Any]  # Split.summary(): cells and subjects per class and part
    split: dict[str, Any]  # Split.to_manifest(): method, seed, subjects per part
    history: list[EpochLog]
    validation: Evaluation | None
    test: Evaluation | None
    threshold_rule: str
    band_rule: str
    parameters: int
    trainable_parameters: int  # in the fine-tuning phase
    training_seconds: float
    train_images_per_second: float
    inference_images_per_second: float
    best_epoch: int
    stopped_because: str  # "completed", "early stopping", "cancelled"
    cancelled: bool = False
    bundle_path: Path | None = None
    run_folder: Path | None = None
    log_csv: Path | None = None
    curves_png: Path | None = None
    report_xlsx: Path | None = None
    unreadable: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    device: str = "CPU"
    weight_arrays_sha256: str = ""  # of the weight arrays, identical on every worker
    warnings: list[str] = field(default_factory=list)  # about the data and split, shown first
