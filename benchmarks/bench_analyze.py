"""Throughput and memory of the analysis path against its baselines, in one process.

    python benchmarks/bench_analyze.py              # N = 1000 (about 10 minutes on 2 cores)
    python benchmarks/bench_analyze.py --n 200 --skip-memory   # a quick look
    python benchmarks/bench_analyze.py --n 200 --tta-only \
        --bundle resources/models/efficientnetb0-demo.leukmodel   # TTA cost, demo model

Prints images/s for
  (a) batched forward pass on preloaded tensors (the runtime's ceiling),
  (b) the full `leukgui analyze` path without the report: decode + preprocess + P(ALL) +
      label + Grad-CAM for every cell,
  (c) the keras.io Grad-CAM recipe (per image, GradientTape, eager),
  (d) per-image `model.predict`,
  (e) `keras.utils.image_dataset_from_directory` + `model.predict` (labels only),
  (t) the full analysis path with test-time augmentation (8 views per cell),
the ratios b/a, b/c, b/d, b/e, t/b, and the peak RSS of fresh processes analyzing N and 10*N
files.
All on N synthetic 450x450 BMP cells and EfficientNetB0 at 224 px. Speeds are compared as
ratios measured in the same process because the machines are noisy.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from leukgui.core.synthetic import write_dataset  # noqa: E402


def make_bundle(folder: Path) -> Path:
    """A random-weight EfficientNetB0 bundle at 224 px (speed does not depend on weights)."""
    from leukgui.core.backbones import build_classifier
    from leukgui.core.bundle import make_manifest, save_bundle

    model = build_classifier("efficientnetb0", weights=None, input_size=224, seed=0)
    manifest = make_manifest(name="bench", version="1", backbone="efficientnetb0", input_size=224)
    return save_bundle(model, manifest, folder / "bench.leukmodel", overwrite=True)


def best_of(fn, repeats: int) -> float:
    """Fastest of `repeats` timed runs (seconds): the least disturbed by other processes."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def memory_child(bundle: Path, data: Path, repeat: int) -> None:
    """Run in a fresh process: analyze the files `repeat` times over, print peak RSS in MB."""
    import resource

    from leukgui.core.bundle import load_bundle
    from leukgui.core.engine import analyze_paths
    from leukgui.core.imaging import discover

    items, _ = discover([data])
    run = analyze_paths([data], load_bundle(bundle), discovered=(items * repeat, []))
    outcomes = run.outcomes  # kept, as the CLI keeps them
    assert len(outcomes) == len(items) * repeat
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    current_kb = next(
        int(line.split()[1])
        for line in Path("/proc/self/status").read_text().splitlines()
        if line.startswith("VmRSS:")
    )
    print(
        json.dumps(
            {
                "cells": len(outcomes),
                "peak_rss_mb": peak_kb / 1024,
                "rss_after_mb": current_kb / 1024,
            }
        )
    )


def measure_memory(bundle_path: Path, data: Path, n: int, figures: dict) -> None:
    """Peak and final RSS of fresh processes analyzing N and 10*N files."""
    rss, after = {}, {}
    for repeat in (1, 10):
        out = subprocess.run(
            [
                sys.executable,
                __file__,
                "--memory-child",
                str(bundle_path),
                str(data),
                str(repeat),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        child = json.loads(out.stdout.strip().splitlines()[-1])
        rss[repeat] = child["peak_rss_mb"]
        after[repeat] = child["rss_after_mb"]
    figures["rss_n_mb"] = rss[1]
    figures["rss_10n_mb"] = rss[10]
    growth = rss[10] - rss[1]
    figures["rss_growth_mb"] = growth
    verdict = "ok" if growth <= 150 else "ABOVE TARGET"
    print(
        f"peak RSS: N={n}: {rss[1]:.0f} MB, 10N={10 * n}: {rss[10]:.0f} MB, "
        f"growth {growth:.0f} MB (target <= 150)  {verdict}"
    )
    figures["rss_after_growth_mb"] = after[10] - after[1]
    print(
        f"RSS after the run, results still held: N: {after[1]:.0f} MB, "
        f"10N: {after[10]:.0f} MB, growth {after[10] - after[1]:.0f} MB"
    )


def measure_tta(analyzer, data: Path, items: list, repeats: int, figures: dict) -> None:
    """(b) and (t): the full analysis path without and with test-time augmentation, timed
    alternately in this process so machine load hits both alike; the ratio is the cost."""
    from leukgui.core.engine import AnalysisOptions, analyze_paths

    n = len(items)

    def run(tta: bool) -> None:
        options = AnalysisOptions(tta=tta)
        outcomes = analyze_paths([data], analyzer, options, discovered=(items, [])).outcomes
        assert len(outcomes) == n

    run(True)  # compile the forward-only function outside the timing
    plain, tta = [], []
    for _ in range(repeats):
        plain.append(best_of(lambda: run(False), 1))
        tta.append(best_of(lambda: run(True), 1))
    figures["b_tta_plain"] = n / min(plain)
    figures["t"] = n / min(tta)
    figures["t/b"] = figures["t"] / figures["b_tta_plain"]
    print(
        f"(t) TTA, 8 views: {figures['t']:.1f} img/s against {figures['b_tta_plain']:.1f} "
        f"img/s without; t/b = {figures['t/b']:.3f} (7 extra forward passes per cell: "
        "expect about 1/8)"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1000, help="synthetic BMP files (default 1000)")
    parser.add_argument(
        "--per-image",
        type=int,
        default=40,
        help="images timed for the slow per-image baselines (c) and (d)",
    )
    parser.add_argument("--repeats", type=int, default=2, help="timed repeats of (a) (b) (e)")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--memory-only", action="store_true", help="only the RSS figures")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument(
        "--bundle", type=Path, help="time this model file instead of a random EfficientNetB0"
    )
    parser.add_argument(
        "--tta-only", action="store_true", help="only (b) and (t): analysis with and without TTA"
    )
    parser.add_argument("--memory-child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        memory_child(
            Path(args.memory_child[0]), Path(args.memory_child[1]), int(args.memory_child[2])
        )
        return 0

    import keras
    import tensorflow as tf

    from leukgui.core.bundle import load_bundle
    from leukgui.core.engine import Analyzer, analyze_paths
    from leukgui.core.gradcam import gradcam_reference
    from leukgui.core.imaging import decode_image, discover, to_model_input

    tmp = Path(tempfile.mkdtemp(prefix="leukgui-bench-"))
    data = tmp / "cells"
    print(f"writing {args.n} synthetic 450x450 BMP files to {data} ...", flush=True)
    write_dataset(data, n_per_class=args.n // 2, seed=1, fmt="bmp")
    items, _ = discover([data])
    n = len(items)
    bundle_path = args.bundle if args.bundle else make_bundle(tmp)
    figures: dict[str, float] = {"n": n, "cpu_count": os.cpu_count() or 0}
    if args.memory_only:
        measure_memory(bundle_path, data, n, figures)
        return 0
    bundle = load_bundle(bundle_path)
    model = bundle.model
    analyzer = Analyzer(bundle)
    size = analyzer.input_size
    if args.tta_only:
        measure_tta(analyzer, data, items, args.repeats, figures)
        if args.json:
            args.json.write_text(json.dumps(figures, indent=2))
        return 0

    # (a) forward pass only, on tensors already in memory
    batches = [
        tf.constant(
            np.stack([to_model_input(decode_image(i.path), size) for i in items[k : k + 32]])
        )
        for k in range(0, n, 32)
    ]
    forward = tf.function(lambda x: model(x, training=False))
    forward(batches[0])

    def run_a() -> None:
        for batch in batches:
            forward(batch).numpy()

    analyzer.runtime(batches[0].numpy())  # compile outside the timing

    # (b) the full analysis path (the run `leukgui analyze` makes, without the report)
    def run_b() -> None:
        outcomes = analyze_paths([data], analyzer, discovered=(items, [])).outcomes
        assert len(outcomes) == n and all(hasattr(o, "heatmap") for o in outcomes)

    # (e) image_dataset_from_directory + predict
    def run_e() -> None:
        ds = keras.utils.image_dataset_from_directory(
            data,
            labels=None,
            image_size=(size, size),
            batch_size=32,
            shuffle=False,
            verbose=False,
        )
        out = model.predict(ds, verbose=0)
        assert len(out) == n

    # interleave the repeats so drift in machine load hits every method alike
    timings: dict[str, list[float]] = {"a": [], "b": [], "e": []}
    run_e()  # warm the predict function
    for _ in range(args.repeats):
        timings["a"].append(best_of(run_a, 1))
        timings["b"].append(best_of(run_b, 1))
        timings["e"].append(best_of(run_e, 1))
    for key, values in timings.items():
        figures[key] = n / min(values)

    subset = items[: args.per_image]

    def run_c() -> None:
        for item in subset:
            x = to_model_input(decode_image(item.path), size)
            gradcam_reference(model, x)
            model(x[None], training=False)

    def run_d() -> None:
        for item in subset:
            x = to_model_input(decode_image(item.path), size)
            model.predict(x[None], verbose=0)

    gradcam_reference(model, to_model_input(decode_image(subset[0].path), size))
    model.predict(batches[0][:1], verbose=0)
    figures["c"] = len(subset) / best_of(run_c, 1)
    figures["d"] = len(subset) / best_of(run_d, 1)

    print()
    print(
        f"EfficientNetB0 at {size} px, {n} synthetic 450x450 BMP cells, "
        f"{os.cpu_count()} CPU cores, TensorFlow {tf.__version__}"
    )
    print(f"(a) batched forward, preloaded tensors      {figures['a']:8.1f} img/s")
    print(f"(b) full analyze path incl. Grad-CAM         {figures['b']:8.1f} img/s")
    print(f"(c) keras.io Grad-CAM, per image, eager      {figures['c']:8.1f} img/s")
    print(f"(d) per-image model.predict                  {figures['d']:8.1f} img/s")
    print(f"(e) image_dataset_from_directory + predict   {figures['e']:8.1f} img/s")
    targets = {"b/a": 0.90, "b/c": 30, "b/d": 5, "b/e": 0.92}
    for ratio, target in targets.items():
        top, bottom = ratio.split("/")
        value = figures[top] / figures[bottom]
        figures[ratio] = value
        verdict = "ok" if value >= target else "BELOW TARGET"
        print(f"{ratio:4s} = {value:7.2f}   (target >= {target})  {verdict}")

    measure_tta(analyzer, data, items, args.repeats, figures)
    if not args.skip_memory:
        measure_memory(bundle_path, data, n, figures)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
