"""Is the training input pipeline the bottleneck? And how fast does each backbone train?

    python benchmarks/bench_training.py                       # EfficientNetB0 at 224 px
    python benchmarks/bench_training.py --size 96 --backbones vgg16,resnet50,efficientnetb0

For each backbone, in one process, on synthetic 450x450 BMP cells (C-NMC's format):
  (r) training steps/s through the real pipeline - cached decoded cells, per-batch
      augmentation (flips, rotations, affine, colour jitter), class weights, prefetch;
  (m) training steps/s on the very same batches held in memory (no pipeline work at all);
and the ratio r/m (target >= 0.8) and training images/s. The first epoch, which decodes the
files and fills the cache, is timed separately. Speeds are ratios in one process because the
machines are noisy.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from leukgui.core.synthetic import write_dataset  # noqa: E402


def measure(backbone: str, data: Path, size: int, batch: int, steps: int) -> dict:
    import tensorflow as tf

    from training.datasets import read_dataset
    from training.history import PHASE_FINE_TUNE
    from training.pipeline import Augmentation, FailedFiles
    from training.splits import split_by_subject
    from training.trainer import TrainConfig, _Loop, set_phase

    scan = read_dataset(data)
    split = split_by_subject(scan.records, validation=0.1, test=0.0, seed=1)
    config = TrainConfig(
        backbone=backbone,
        weights="none",
        input_size=size,
        batch_size=batch,
        augmentation=Augmentation(),
    )
    loop = _Loop(config, split, None, None, None, FailedFiles())
    # Time the fine-tuning phase: the top block trains, the rest only runs forward, which is
    # the lightest step of a real run and so the hardest case for the pipeline to keep up.
    set_phase(loop.model, PHASE_FINE_TUNE, loop.unfreeze_prefix)
    _, train_step = loop._make_steps(1e-4)

    started = time.perf_counter()
    for _ in range(loop.steps):  # first epoch: decode every file, fill the cache, trace
        train_step(loop.train_iter)
    first_epoch = time.perf_counter() - started

    def timed(iterator) -> float:
        for _ in range(3):
            train_step(iterator)  # warm-up
        best = float("inf")
        for _ in range(2):
            start = time.perf_counter()
            for _ in range(steps):
                loss, _ = train_step(iterator)
            float(loss)
            best = min(best, time.perf_counter() - start)
        return steps / best

    real = timed(loop.train_iter)
    batches = [next(loop.train_iter) for _ in range(steps)]
    images = tf.stack([b[0] for b in batches])
    labels = tf.stack([b[1] for b in batches])
    weights = tf.stack([b[2] for b in batches])
    memory = tf.data.Dataset.from_tensor_slices((images, labels, weights)).repeat()
    memory_rate = timed(iter(memory))
    return {
        "backbone": backbone,
        "input_size": size,
        "batch_size": loop.global_batch,
        "train_cells": len(split.train),
        "first_epoch_s": round(first_epoch, 1),
        "pipeline_steps_per_s": round(real, 3),
        "memory_steps_per_s": round(memory_rate, 3),
        "ratio": round(real / memory_rate, 3),
        "train_images_per_s": round(real * loop.global_batch, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbones", default="efficientnetb0")
    parser.add_argument("--size", type=int, default=224, help="input size in px (default 224)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--cells", type=int, default=320, help="cells per class (default 320)")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per measurement")
    parser.add_argument("--json", action="store_true", help="print one JSON object per backbone")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="leukgui-bench-") as tmp:
        data = Path(tmp) / "cells"
        write_dataset(data, args.cells, 7, fmt="bmp", layout="cnmc", subjects=8)
        for backbone in args.backbones.split(","):
            row = measure(backbone.strip(), data, args.size, args.batch, args.steps)
            if args.json:
                print(json.dumps(row))
            else:
                print(
                    f"{row['backbone']:>15} {row['input_size']} px batch {row['batch_size']}: "
                    f"pipeline {row['pipeline_steps_per_s']:.3f} steps/s, in memory "
                    f"{row['memory_steps_per_s']:.3f} steps/s, ratio {row['ratio']:.2f} "
                    f"(target >= 0.8); training {row['train_images_per_s']:.1f} images/s; "
                    f"first epoch (decode + cache) {row['first_epoch_s']:.0f} s for "
                    f"{row['train_cells']} cells",
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
