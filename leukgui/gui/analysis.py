"""The analysis run as a worker function: the core's run events in, Qt-sized reports out.

Runs in a `Worker` thread. The model and its inference runtime (Preferences.runtime, at
Preferences.precision) load here, on first use, so the window is on screen before any engine
has loaded; TensorFlow is imported only when the TensorFlow runtime is chosen or another one
falls back to it. The run itself (walking, batches, provenance, cancel, finish time) is
`leukgui.core.engine.iter_run`; this adapter only paces its events for the GUI thread:
results in growing chunks and progress at most ten times a second, so a 10,000-cell run never
floods the event loop.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from leukgui.core.bundle import LoadedBundle, load_bundle
from leukgui.core.engine import (
    AnalysisOptions,
    Analyzer,
    Outcomes,
    RunFinished,
    RunStarted,
    iter_run,
)
from leukgui.core.results import Progress, RunResult
from leukgui.core.runtimes import AUTO, TENSORFLOW, NoRuntime, RuntimeUnavailable
from leukgui.gui.workers import ChunkedEmitter, Worker

# RuntimeInUse, RunStarted, Outcomes and Progress are the events `run_analysis` reports.
__all__ = [
    "AnalysisRequest",
    "Outcomes",
    "RunStarted",
    "RuntimeInUse",
    "fallback_details",
    "fallback_summary",
    "is_loaded",
    "loaded_analyzer",
    "run_analysis",
    "runtime_in_use",
    "warm_up",
]

PROGRESS_INTERVAL = 0.1  # seconds between progress reports (the last one always goes)


@dataclass(frozen=True)
class AnalysisRequest:
    """What the window asks for: these inputs, this model file, these options."""

    paths: list[str]
    model: str  # model file path
    options: AnalysisOptions = field(default_factory=AnalysisOptions)
    runtime: str = AUTO  # Preferences.runtime: "auto", "openvino", "onnx" or "tensorflow"
    precision: str = AUTO  # Preferences.precision: "auto" (bf16 where supported) or "fp32"


@dataclass(frozen=True)
class RuntimeInUse:
    """The runtime a model file runs on, for the status bar: its description (e.g.
    "OpenVINO · CPU · bf16") and why other runtimes were passed over (a fallback)."""

    model: str  # model file path
    runtime: str  # the runtime asked for (Preferences.runtime)
    description: str
    notes: tuple[str, ...] = ()
    precision: str = AUTO  # the precision asked for (Preferences.precision)

    @property
    def passed_over(self) -> list[str]:
        """The notes about runtimes tried before this one and not used ("X not used: why")."""
        return [note for note in self.notes if " not used" in note]


def fallback_summary(in_use: RuntimeInUse) -> str:
    """One line for the status bar's message area: how many runtimes were passed over and
    the first reason (the rest are behind the runtime label's "see details")."""
    passed = in_use.passed_over
    if not passed:
        return f"Runtime changed: {in_use.notes[-1]}" if in_use.notes else ""
    # Short, so the reason fits beside the runtime label: that one names the runtime in use.
    count = f"{len(passed)} runtime{'s' * (len(passed) != 1)} passed over"
    return f"Runtime fallback: {count}. {'First: ' * (len(passed) > 1)}{passed[0]}"


def fallback_details(in_use: RuntimeInUse) -> str:
    """Every reason, one a line, for the box the runtime label's link opens."""
    reasons = "\n".join(f"• {note}" for note in in_use.notes)
    return (
        f"The analysis runs on {in_use.description}. Why the runtimes before it were not "
        f"used:\n\n{reasons}\n\nThe report's provenance lists the same reasons. Choose "
        "the runtime in File › Preferences…"
    )


# By (model path, runtime and precision asked for): a model loads once per session and
# runtime, and a runtime or precision changed in Preferences is used from the next run on,
# without a restart.
_loaded: dict[tuple[str, str, str], tuple[LoadedBundle, Analyzer]] = {}
_loading = threading.Lock()  # a warm-up and an analysis may ask at the same time


def _key(path: str, runtime: str, precision: str = AUTO) -> tuple[str, str, str]:
    return str(Path(path).resolve()), runtime, precision


def loaded_analyzer(
    path: str, runtime: str = AUTO, precision: str = AUTO
) -> tuple[LoadedBundle, Analyzer]:
    """Load and verify a model file on `runtime` at `precision` once per process (a reload
    takes seconds).

    Only the TensorFlow runtime deserialises the Keras model up front; the others run the
    bundle's inference graph, and the Keras model loads only if one falls back to TensorFlow.
    A runtime that is not installed, or a model no runtime can run, raises a RuntimeError
    whose message says so and where to choose another runtime.
    """
    key = _key(path, runtime, precision)
    with _loading:
        if key not in _loaded:
            same_file = [bundle for (p, *_), (bundle, _) in _loaded.items() if p == key[0]]
            try:
                if same_file:  # the same file on another runtime: verified already
                    bundle = same_file[0]
                else:
                    bundle = load_bundle(path, keras=runtime == TENSORFLOW)
                analyzer = Analyzer(bundle, runtime, precision=precision)
            except (RuntimeUnavailable, NoRuntime) as exc:
                raise RuntimeError(
                    f"Inference runtime: {exc}. Choose another runtime in File › Preferences…"
                ) from exc
            _loaded.clear()  # keep one model and runtime in memory
            _loaded[key] = (bundle, analyzer)
        return _loaded[key]


def is_loaded(path: str, runtime: str = AUTO, precision: str = AUTO) -> bool:
    """Whether `run_analysis` on this model file, runtime and precision would start without
    loading."""
    return _key(path, runtime, precision) in _loaded


def runtime_in_use(path: str, runtime: str = AUTO, precision: str = AUTO) -> RuntimeInUse | None:
    """The runtime this model file runs on once loaded (None before it is loaded)."""
    loaded = _loaded.get(_key(path, runtime, precision))
    if loaded is None:
        return None
    return _describe(path, runtime, precision, loaded[1])


def _describe(path: str, runtime: str, precision: str, analyzer: Analyzer) -> RuntimeInUse:
    return RuntimeInUse(
        path, runtime, analyzer.runtime.description, tuple(analyzer.runtime_notes), precision
    )


def warm_up(worker: Worker, path: str, runtime: str = AUTO, precision: str = AUTO) -> str:
    """Load the model on its runtime while the user is still choosing images.

    Loading an engine (TensorFlow above all) holds the GIL for a few hundred milliseconds at
    a time; done here, right after start-up, that pause falls in idle time instead of in the
    middle of an analysis, and the first analysis starts at once. Only the TensorFlow
    runtime (or a fallback to it) imports TensorFlow.
    """
    loaded_analyzer(path, runtime, precision)
    return path


def run_analysis(worker: Worker, request: AnalysisRequest) -> RunResult:
    """Forward one run's events to the window; returns the finished (or cancelled) run.

    `RunStarted` goes on as it is, `Outcomes` are re-chunked by a `ChunkedEmitter`, and
    `Progress` is passed at most every PROGRESS_INTERVAL seconds (and always when done).
    A `RuntimeInUse` follows `RunStarted`, and goes again at the end when the runtime
    changed during the run (a GPU that failed, the rest on the CPU).
    """
    _, analyzer = loaded_analyzer(request.model, request.runtime, request.precision)
    in_use = _describe(request.model, request.runtime, request.precision, analyzer)
    emitter = ChunkedEmitter(lambda chunk: worker.report(Outcomes(chunk)))
    last_progress = float("-inf")
    events = iter_run(request.paths, analyzer, request.options, cancel=worker.cancel_token)
    for event in events:
        if isinstance(event, Outcomes):
            emitter.extend(event.items)
        elif isinstance(event, Progress):
            now = time.monotonic()
            if now - last_progress >= PROGRESS_INTERVAL or event.done == event.total:
                last_progress = now
                worker.report(event)
        elif isinstance(event, RunStarted):
            worker.report(event)
            worker.report(in_use)
        elif isinstance(event, RunFinished):
            emitter.flush()
            after = _describe(request.model, request.runtime, request.precision, analyzer)
            if after != in_use:
                worker.report(after)
            return event.run
    raise RuntimeError("the analysis stream ended without its RunFinished event")
