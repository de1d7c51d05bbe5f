"""The inference runtimes against TensorFlow (issue 15): speed, agreement, start-up and memory.

    python benchmarks/bench_runtimes.py                      # everything (20-40 min on 2 cores)
    python benchmarks/bench_runtimes.py --quick              # a smoke run (a few minutes)
    python benchmarks/bench_runtimes.py --networks efficientnetb0 --skip-cli
    python benchmarks/bench_runtimes.py --cli-only --cli-cells 1000
    python benchmarks/bench_runtimes.py --json /tmp/bench_runtimes.json

Measures, and prints beside issue 15's targets:
  1. end-to-end analysis throughput (decode thread + P(ALL) + aligned heatmap for every
     cell, `analyze_paths`) of the default runtime ("auto", OpenVINO on a CPU that has it),
     TensorFlow and ONNX Runtime's CPU engine, for EfficientNetB0 (the trained demo bundle),
     ResNet50 and VGG16 (random-weight bundles at 224 px written to a temp folder: speed and
     agreement do not need trained weights), on synthetic 450x450 BMP cells. The runs
     alternate TF, auto, ONNX, TF, auto, ONNX, ... after one warm-up batch each; cells/s is
     the best of the rounds, and auto/TF is also given per round.
     Targets: auto/TF >= 1.8 for EfficientNetB0, >= 1.4 for ResNet50 and VGG16.
  2. agreement with TensorFlow, per runtime (auto, ONNX Runtime CPU, OpenVINO with
     precision="fp32"), on the benchmark cells and on the six real C-NMC cells in
     ../shared/data/cnmc-samples when present: labels identical for every cell whose
     TensorFlow P(ALL) is outside the uncertainty band, % identical labels overall,
     max |dP(ALL)| (target <= 1e-4 at fp32, <= 2e-2 at bf16/fp16), and the lowest per-cell
     heatmap correlation (target >= 0.99).
  3. `leukgui analyze` (the CLI, the demo bundle) in fresh processes, --runtime auto against
     --runtime tensorflow, alternated, 2 rounds each: time from process start to the first
     result (the whole run on a folder of 1 cell, report included) and peak RSS of a run
     on 1,000 cells (GNU time's %M of the child, else psutil polling). Medians; targets:
     first result <= 0.5x TF, peak RSS <= 0.6x TF.
Speeds are only ever compared as ratios of runs alternated in the same session, because the
machines are shared and noisy.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from leukgui.core.synthetic import write_dataset  # noqa: E402

DEMO_BUNDLE = REPO / "resources" / "models" / "efficientnetb0-demo.leukmodel"
REAL_CELLS = REPO.parent / "shared" / "data" / "cnmc-samples"
NETWORKS = ("efficientnetb0", "resnet50", "vgg16")
NAMES = {"efficientnetb0": "EfficientNetB0", "resnet50": "ResNet50", "vgg16": "VGG16"}
SPEED_TARGET = {"efficientnetb0": 1.8, "resnet50": 1.4, "vgg16": 1.4}
DEFAULT_CELLS = {"efficientnetb0": 256, "resnet50": 128, "vgg16": 64}
QUICK_CELLS = {"efficientnetb0": 64, "resnet50": 32, "vgg16": 32}
TIMED = ("tensorflow", "auto", "onnx")  # the throughput columns, in the order they alternate
HEADS = {"tensorflow": "TensorFlow", "auto": "auto", "onnx": "ONNX RT CPU"}
P_TARGET = {"fp32": 1e-4, "bf16": 2e-2, "fp16": 2e-2}
R_TARGET = 0.99
FIRST_RESULT_TARGET = 0.5
RSS_TARGET = 0.6
WARM_CELLS = 32  # one batch
TIME_BIN = Path("/usr/bin/time")
EXPECTED_ENGINE = {
    "tensorflow": "TensorFlowEngine",
    "onnx": "OnnxRuntimeEngine",
    "openvino": "OpenVinoEngine",
    "auto": "OpenVinoEngine",  # what issue 15 expects "auto" to pick on a CPU
}


def make_bundle(folder: Path, backbone: str) -> Path:
    """A random-weight bundle at 224 px (speed and agreement do not depend on the weights)."""
    from leukgui.core.backbones import build_classifier
    from leukgui.core.bundle import make_manifest, save_bundle

    model = build_classifier(backbone, weights=None, input_size=224, seed=0)
    manifest = make_manifest(
        name=f"bench-{backbone}", version="1", backbone=backbone, input_size=224
    )
    path = save_bundle(model, manifest, folder / f"{backbone}.leukmodel", overwrite=True)
    del model
    return path


def mixed(items: list) -> list:
    """ALL and HEM cells alternating, so any prefix holds both classes."""
    by_class: dict[str, list] = {}
    for item in items:
        by_class.setdefault(item.path.parent.name, []).append(item)
    columns = list(by_class.values())
    out = []
    for k in range(max(len(c) for c in columns)):
        out.extend(c[k] for c in columns if k < len(c))
    return out


def run_once(analyzer, data: Path, items: list) -> tuple[float, list]:
    """Seconds for one full analysis of `items` (decode thread + P(ALL) + heatmaps), outcomes."""
    from leukgui.core.engine import AnalysisOptions, analyze_paths

    start = time.perf_counter()
    outcomes = analyze_paths([data], analyzer, AnalysisOptions(), discovered=(items, [])).outcomes
    seconds = time.perf_counter() - start
    assert len(outcomes) == len(items), (len(outcomes), len(items))
    return seconds, outcomes


def rechecked(analyzer) -> int:
    """Cells a reduced-precision runtime recomputed in fp32 so far (near a decision edge)."""
    return int(getattr(analyzer, "rechecked", 0))


def decode_rate(items: list, size: int, stain) -> float:
    """Cells/s of decode + preprocessing alone, in one thread (what the decode thread can
    feed at most while the network is not competing for the cores)."""
    from leukgui.core.engine import AnalysisOptions, _decode_one  # the decode thread's own work

    options = AnalysisOptions()
    start = time.perf_counter()
    for item in items:
        _decode_one(item, size, options, stain)
    return len(items) / (time.perf_counter() - start)


def start_analyzer(bundle, runtime: str, precision: str = "auto") -> tuple[object, float]:
    from leukgui.core.engine import Analyzer

    start = time.perf_counter()
    analyzer = Analyzer(bundle, runtime, precision=precision)
    return analyzer, time.perf_counter() - start


def engine_of(analyzer) -> str:
    return type(analyzer.runtime).__name__


def agreement(reference: list, other: list, band: tuple[float, float], precision: str) -> dict:
    """Labels, P(ALL) and heatmaps of `other` against TensorFlow's `reference` outcomes."""
    from leukgui.core.runtimes import heatmap_correlation

    ref = {o.path: o for o in reference}
    low, high = band
    n = outside = same_outside = same_all = errors = 0
    worst_p, worst_r = 0.0, 1.0
    for o in other:
        r = ref.get(o.path)
        if not hasattr(o, "p_all") or r is None or not hasattr(r, "p_all"):
            errors += 1
            continue
        n += 1
        same = o.label == r.label
        same_all += same
        if not low <= r.p_all <= high:
            outside += 1
            same_outside += same
        worst_p = max(worst_p, abs(o.p_all - r.p_all))
        worst_r = min(worst_r, heatmap_correlation(o.heatmap, r.heatmap))
    p_target = P_TARGET.get(precision, P_TARGET["fp32"])
    return {
        "cells": n,
        "errors": errors,
        "precision": precision,
        "outside_band": outside,
        "labels_same_outside_band": same_outside,
        "labels_same_pct": 100.0 * same_all / n if n else float("nan"),
        "max_dp": worst_p,
        "p_target": p_target,
        "min_heatmap_r": worst_r,
        "ok": bool(
            n
            and not errors
            and same_outside == outside
            and worst_p <= p_target
            and worst_r >= R_TARGET
        ),
    }


def print_agreement_rows(network: str, which: str, rows: dict) -> None:
    for name, a in rows.items():
        verdict = "ok" if a["ok"] else "MISSED"
        if a.get("rechecked_fp32"):
            verdict += f" ({a['rechecked_fp32']} near-edge cells re-run in fp32)"
        print(
            f"  {NAMES[network]:14s} {which:9s} {name:42s} {a['precision']:5s} {a['cells']:5d}"
            f"   {a['labels_same_outside_band']:4d}/{a['outside_band']:<4d}"
            f"  {a['labels_same_pct']:6.1f}%  {a['max_dp']:9.2e} (<= {a['p_target']:.0e})"
            f"  {a['min_heatmap_r']:7.4f}  {verdict}"
            + (f"  [{a['errors']} errors]" if a["errors"] else "")
        )


def bench_network(
    network: str, path: Path, data: Path, items: list, real: list, rounds: int, figures: dict
) -> None:
    """Throughput and agreement of every runtime for one network."""
    import keras

    from leukgui.core.bundle import load_bundle

    n = len(items)
    print(f"\n=== {NAMES[network]}: {path.name}, {n} synthetic cells ===", flush=True)
    bundle = load_bundle(path)
    analyzers, fig = {}, {"cells": n, "runtimes": {}}
    for runtime in TIMED:
        analyzers[runtime], seconds = start_analyzer(bundle, runtime)
        a = analyzers[runtime]
        expected = EXPECTED_ENGINE.get(runtime)
        fell_back = expected is not None and engine_of(a) != expected
        fig["runtimes"][runtime] = {
            "description": a.runtime.description,
            "precision": getattr(a.runtime, "precision", "fp32"),
            "start_s": seconds,
            "notes": a.runtime_notes,
            "fell_back": fell_back,
        }
        flag = "  FELL BACK" if fell_back else ""
        print(f"  {runtime:10s} -> {a.runtime.description} (started in {seconds:.1f} s){flag}")
        for note in a.runtime_notes:
            print(f"               note: {note}")
    for runtime in TIMED:  # warm-up: trace / compile outside the timing
        run_once(analyzers[runtime], data, items[: min(WARM_CELLS, n)])

    times: dict[str, list[float]] = {r: [] for r in TIMED}
    outcomes: dict[str, list] = {}
    recheck_first: dict[str, int] = {}  # fp32 re-checks in the run kept for agreement
    for k in range(rounds):
        for runtime in TIMED:
            before = rechecked(analyzers[runtime])
            seconds, out = run_once(analyzers[runtime], data, items)
            if k == 0:
                recheck_first[runtime] = rechecked(analyzers[runtime]) - before
            times[runtime].append(seconds)
            outcomes.setdefault(runtime, out)
            print(f"  round {k + 1}: {runtime:10s} {n / seconds:7.2f} cells/s", flush=True)
    speed = {r: n / min(t) for r, t in times.items()}
    per_round = [t / a for t, a in zip(times["tensorflow"], times["auto"], strict=True)]
    ratio = speed["auto"] / speed["tensorflow"]
    fig["cells_per_s"] = speed
    fig["times_s"] = times
    fig["auto_over_tf"] = ratio
    fig["auto_over_tf_per_round"] = per_round
    fig["auto_over_tf_median_round"] = statistics.median(per_round)
    fig["onnx_over_tf"] = speed["onnx"] / speed["tensorflow"]
    fig["target"] = SPEED_TARGET[network]
    fig["met"] = ratio >= SPEED_TARGET[network]
    stain = getattr(analyzers["tensorflow"], "stain", None)
    fig["decode_only_cells_per_s"] = decode_rate(items[: min(64, n)], 224, stain)

    # one more runtime for agreement only: OpenVINO at fp32
    ov32, seconds = start_analyzer(bundle, "openvino", "fp32")
    print(f"  openvino fp32 -> {ov32.runtime.description} (started in {seconds:.1f} s)")
    for note in ov32.runtime_notes:
        print(f"               note: {note}")
    fig["runtimes"]["openvino-fp32"] = {
        "description": ov32.runtime.description,
        "precision": getattr(ov32.runtime, "precision", "fp32"),
        "start_s": seconds,
        "notes": ov32.runtime_notes,
        "fell_back": engine_of(ov32) != "OpenVinoEngine",
    }
    others = {
        "auto": analyzers["auto"],
        "onnx": analyzers["onnx"],
        "openvino-fp32": ov32,
    }
    band = bundle.uncertainty_band
    sets = {"synthetic": (data, items, outcomes)}
    if real:
        real_out = {"tensorflow": run_once(analyzers["tensorflow"], REAL_CELLS, real)[1]}
        sets["real"] = (REAL_CELLS, real, real_out)
    fig["agreement"] = {}
    for which, (folder, cells, got) in sets.items():
        rows = {}
        for name, analyzer in others.items():
            before = rechecked(analyzer)
            out = got[name] if name in got else run_once(analyzer, folder, cells)[1]
            label = f"{name} ({analyzer.runtime.description})"
            rows[label] = agreement(
                got["tensorflow"], out, band, fig["runtimes"][name]["precision"]
            )
            rows[label]["rechecked_fp32"] = (
                recheck_first.get(name, 0) if name in got else rechecked(analyzer) - before
            )
        fig["agreement"][which] = rows
    figures["networks"][network] = fig
    del analyzers, others, ov32, bundle, outcomes
    keras.backend.clear_session()
    gc.collect()


def print_speed_table(figures: dict, rounds: int) -> None:
    nets = figures["networks"]
    if not nets:
        return
    print(
        f"\nThroughput, decode + P(ALL) + heatmap per cell, cells/s (best of {rounds} "
        f"alternated rounds; {os.cpu_count()} CPU cores). auto/TF and its verdict are from the "
        "best runs; median is that of the per-round ratios (TF and auto run back to back)"
    )
    print(
        f"  {'network':14s} {'cells':>5s} {'TensorFlow':>10s} {'auto':>8s} {'ONNX RT':>8s}"
        f"  {'auto/TF':>7s} {'target':>7s}  {'verdict':12s} {'ONNX/TF':>7s}  "
        f"{'median':>6s}  {'auto/TF per round':18s} {'decode-only':>11s}"
    )
    for network, f in nets.items():
        s = f["cells_per_s"]
        rounds_text = " ".join(f"{r:.2f}" for r in f["auto_over_tf_per_round"])
        print(
            f"  {NAMES[network]:14s} {f['cells']:5d} {s['tensorflow']:10.2f} {s['auto']:8.2f}"
            f" {s['onnx']:8.2f}  {f['auto_over_tf']:6.2f}x {'>= ' + str(f['target']) + 'x':>7s}"
            f"  {'ok' if f['met'] else 'BELOW TARGET':12s} {f['onnx_over_tf']:6.2f}x  "
            f"{f['auto_over_tf_median_round']:5.2f}x  {rounds_text:18s} "
            f"{f['decode_only_cells_per_s']:11.1f}"
        )
    for network, f in nets.items():
        rt = f["runtimes"]
        print(
            f"  {NAMES[network]}: auto = {rt['auto']['description']}; "
            f"onnx = {rt['onnx']['description']}; tensorflow = {rt['tensorflow']['description']}"
        )
        if f["cells_per_s"]["auto"] > 0.8 * f["decode_only_cells_per_s"]:
            print(
                f"  {NAMES[network]}: auto reaches {f['cells_per_s']['auto']:.1f} cells/s "
                f"against {f['decode_only_cells_per_s']:.1f} cells/s for decoding alone: "
                "the decode thread is (near) the limit"
            )


def print_agreement_table(figures: dict) -> None:
    nets = figures["networks"]
    if not nets:
        return
    print(
        "\nAgreement with TensorFlow (labels: same / cells whose TF P(ALL) is outside the "
        f"uncertainty band; heatmap r target >= {R_TARGET})"
    )
    print(
        f"  {'network':14s} {'cells':9s} {'runtime':42s} {'prec':5s} {'n':>5s}"
        f"   {'outside':9s}  {'same':>7s}  {'max|dP|':>9s} {'target':10s}  {'min r':>7s}"
    )
    for network, f in nets.items():
        for which, rows in f["agreement"].items():
            print_agreement_rows(network, which, rows)
    if not figures.get("real_cells"):
        print(f"  (real C-NMC cells: {figures.get('real_reason', 'not run')})")


def cli_run(runtime: str, folder: Path, report: Path, logs: Path) -> dict:
    """One `leukgui analyze` in a fresh process: wall seconds, peak RSS (MB), exit code."""
    report.unlink(missing_ok=True)
    cmd = [
        sys.executable,
        "-m",
        "leukgui",
        "analyze",
        str(folder),
        "--model",
        str(DEMO_BUNDLE),
        "--out",
        str(report),
        "--runtime",
        runtime,
        "--no-progress",
        "-q",
    ]
    log = logs / f"{runtime}-{folder.name}-{time.monotonic_ns()}.log"
    peak_kb = 0
    with log.open("w") as out:
        if TIME_BIN.exists():
            # /usr/bin/time reports its own child's peak RSS. os.wait4 on a child of this
            # process would not do: Linux carries the parent's RSS at fork into the child's
            # ru_maxrss, and this process holds TensorFlow and several models.
            rss_file = log.with_suffix(".rss")
            cmd = [str(TIME_BIN), "-f", "%M", "-o", str(rss_file), *cmd]
        start = time.perf_counter()
        child = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=REPO)
        if not TIME_BIN.exists():
            import psutil

            proc = psutil.Process(child.pid)
            while child.poll() is None:
                with contextlib.suppress(psutil.Error):
                    peak_kb = max(peak_kb, proc.memory_info().rss // 1024)
                time.sleep(0.05)
        child.wait()
        seconds = time.perf_counter() - start
    if TIME_BIN.exists():
        peak_kb = int(rss_file.read_text().split()[-1])
    if child.returncode != 0 or not report.exists():
        print(f"  leukgui analyze --runtime {runtime} exited {child.returncode}; log:")
        print("    " + log.read_text()[-2000:].replace("\n", "\n    "))
    return {
        "seconds": seconds,
        "peak_rss_mb": peak_kb / 1024,
        "rc": child.returncode,
        "summary": [line.split("; report")[0] for line in log.read_text().splitlines()[-1:]]
        or [""],
    }


def bench_cli(tmp: Path, big: Path, n_big: int, rounds: int, figures: dict) -> None:
    """Start-up (1 cell) and peak RSS (n_big cells) of the CLI, auto against tensorflow."""
    one = tmp / "one-cell"
    (one / "all").mkdir(parents=True, exist_ok=True)
    first = sorted((big / "all").iterdir())[0]
    shutil.copy(first, one / "all" / first.name)
    logs = tmp / "cli-logs"
    logs.mkdir(exist_ok=True)
    report = tmp / "cli-report.xlsx"
    print(
        f"\n=== leukgui analyze (CLI, demo bundle), fresh processes, {rounds} alternated "
        f"rounds: 1 cell for the first result, {n_big} cells for peak RSS ===",
        flush=True,
    )
    got: dict[str, dict[str, list]] = {
        r: {"first_s": [], "rss_mb": [], "big_s": []} for r in ("tensorflow", "auto")
    }
    for k in range(rounds):
        for runtime in ("tensorflow", "auto"):
            a = cli_run(runtime, one, report, logs)
            b = cli_run(runtime, big, report, logs)
            if a["rc"] == 0:  # a failed run is shown, never counted
                got[runtime]["first_s"].append(a["seconds"])
            if b["rc"] == 0:
                got[runtime]["rss_mb"].append(b["peak_rss_mb"])
                got[runtime]["big_s"].append(b["seconds"])
            print(
                f"  round {k + 1}: {runtime:10s} 1 cell {a['seconds']:6.1f} s (rc {a['rc']}); "
                f"{n_big} cells {b['seconds']:6.1f} s, peak RSS {b['peak_rss_mb']:6.0f} MB "
                f"(rc {b['rc']}): {b['summary'][0]}",
                flush=True,
            )
    med = {
        r: {k: statistics.median(v) if v else float("nan") for k, v in d.items()}
        for r, d in got.items()
    }
    failed = sum(2 * rounds - len(d["first_s"]) - len(d["rss_mb"]) for d in got.values())
    first_ratio = med["auto"]["first_s"] / med["tensorflow"]["first_s"]
    rss_ratio = med["auto"]["rss_mb"] / med["tensorflow"]["rss_mb"]
    figures["cli"] = {
        "cells": n_big,
        "rounds": rounds,
        "raw": got,
        "median": med,
        "first_result_ratio": first_ratio,
        "first_result_target": FIRST_RESULT_TARGET,
        "first_result_met": first_ratio <= FIRST_RESULT_TARGET,
        "failed_runs": failed,
        "peak_rss_ratio": rss_ratio,
        "peak_rss_target": RSS_TARGET,
        "peak_rss_met": rss_ratio <= RSS_TARGET,
    }


def print_cli_table(figures: dict) -> None:
    c = figures.get("cli")
    if not c:
        return
    m = c["median"]
    print(
        f"\nleukgui analyze in fresh processes, demo bundle (medians of {c['rounds']} rounds"
        + (f"; {c['failed_runs']} failed runs left out, see above)" if c["failed_runs"] else ")")
    )
    print(f"  {'':34s} {'tensorflow':>10s} {'auto':>10s} {'auto/TF':>8s} {'target':>8s}")
    rows = (
        ("start to first result (1 cell), s", "first_s", "first_result"),
        (f"peak RSS, {c['cells']} cells, MB", "rss_mb", "peak_rss"),
        (f"whole run, {c['cells']} cells, s", "big_s", None),
    )
    for title, key, target in rows:
        t, a = m["tensorflow"][key], m["auto"][key]
        line = f"  {title:34s} {t:10.1f} {a:10.1f} {a / t:7.2f}x"
        if target:
            verdict = "ok" if c[f"{target}_met"] else "ABOVE TARGET"
            line += f" {'<= ' + str(c[f'{target}_target']) + 'x':>8s}  {verdict}"
        print(line)


def parse_cells(text: str | None, quick: bool) -> dict[str, int]:
    """--cells N (EfficientNetB0; ResNet50 gets N/2, VGG16 N/4) or net=N,net=N."""
    cells = dict(QUICK_CELLS if quick else DEFAULT_CELLS)
    if not text:
        return cells
    if "=" not in text:
        n = int(text)
        return {"efficientnetb0": n, "resnet50": max(8, n // 2), "vgg16": max(8, n // 4)}
    for part in text.split(","):
        name, value = part.split("=")
        if name.strip() not in NETWORKS:
            raise SystemExit(f"--cells: unknown network {name!r}")
        cells[name.strip()] = int(value)
    return cells


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small N, 1 round: a smoke run")
    parser.add_argument(
        "--networks",
        default=",".join(NETWORKS),
        help="comma-separated, from efficientnetb0,resnet50,vgg16 (default all)",
    )
    parser.add_argument(
        "--cells",
        help="synthetic cells per network: N (EfficientNetB0; ResNet50 N/2, VGG16 N/4) or "
        "efficientnetb0=256,resnet50=128,vgg16=64 (the default)",
    )
    parser.add_argument("--rounds", type=int, help="timed rounds per runtime (default 2)")
    parser.add_argument(
        "--cli-cells", type=int, help="cells for the CLI peak-RSS runs (default 1000)"
    )
    parser.add_argument("--skip-cli", action="store_true", help="no CLI start-up/RSS part")
    parser.add_argument("--cli-only", action="store_true", help="only the CLI part")
    parser.add_argument("--json", type=Path, help="also write every figure here")
    parser.add_argument("--keep", action="store_true", help="keep the temp folder")
    args = parser.parse_args()

    networks = [n.strip() for n in args.networks.split(",") if n.strip()]
    for n in networks:
        if n not in NETWORKS:
            parser.error(f"unknown network {n!r} (choose from {', '.join(NETWORKS)})")
    cells = parse_cells(args.cells, args.quick)
    rounds = args.rounds or (1 if args.quick else 2)
    cli_cells = args.cli_cells or (100 if args.quick else 1000)
    if args.cli_only:
        networks = []

    tmp = Path(tempfile.mkdtemp(prefix="leukgui-bench-runtimes-"))
    figures: dict = {
        "cpu_count": os.cpu_count() or 0,
        "rounds": rounds,
        "quick": args.quick,
        "networks": {},
    }
    try:
        from leukgui.core.imaging import discover

        n_write = max([cells[n] for n in networks] + ([0] if args.skip_cli else [cli_cells]))
        data = tmp / "cells"
        print(f"writing {n_write} synthetic 450x450 BMP cells to {data} ...", flush=True)
        start = time.perf_counter()
        write_dataset(data, n_per_class=(n_write + 1) // 2, seed=1, fmt="bmp")
        print(f"  ({time.perf_counter() - start:.0f} s)", flush=True)
        items = mixed(discover([data])[0])

        real: list = []
        if REAL_CELLS.is_dir():
            real = discover([REAL_CELLS])[0]
        if real:
            figures["real_cells"] = len(real)
        else:
            figures["real_reason"] = (
                f"skipped: {REAL_CELLS} is absent (real reference data lives outside the "
                "project and a fresh clone has none)"
            )
            print(figures["real_reason"])

        for network in networks:
            if network == "efficientnetb0":
                path = DEMO_BUNDLE
            else:
                print(f"\nwriting a random-weight {NAMES[network]} bundle ...", flush=True)
                start = time.perf_counter()
                path = make_bundle(tmp, network)
                print(f"  ({time.perf_counter() - start:.0f} s, with the ONNX export)")
            bench_network(network, path, data, items[: cells[network]], real, rounds, figures)
            if args.json:
                args.json.write_text(json.dumps(figures, indent=2, default=str))

        if not args.skip_cli:
            big = data
            if len(items) != cli_cells:
                big = tmp / "cli-cells"
                print(f"\nwriting {cli_cells} cells for the CLI runs to {big} ...", flush=True)
                write_dataset(big, n_per_class=cli_cells // 2, seed=2, fmt="bmp")
            bench_cli(tmp, big, cli_cells, 1 if args.quick else 2, figures)

        print("\n" + "=" * 100)
        print_speed_table(figures, rounds)
        print_agreement_table(figures)
        print_cli_table(figures)
        if args.json:
            args.json.write_text(json.dumps(figures, indent=2, default=str))
            print(f"\nfigures written to {args.json}")
    finally:
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
