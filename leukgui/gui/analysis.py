"""The analysis run as a worker function: the core's run events in, Qt-sized reports out.

Runs in a `Worker` thread. TensorFlow is imported here, on first use, so the window is on
screen before TensorFlow has loaded. The run itself (walking, batches, provenance, cancel,
finish time) is `leukgui.core.engine.iter_run`; this adapter only paces its events for the
GUI thread: results in growing chunks and progress at most ten times a second, so a
10,000-cell run never floods the event loop.
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
from leukgui.gui.workers import ChunkedEmitter, Worker

# RunStarted, Outcomes and Progress are the events `run_analysis` reports to the window.
__all__ = [
    "AnalysisRequest",
    "Outcomes",
    "RunStarted",
    "is_loaded",
    "loaded_analyzer",
    "run_analysis",
    "warm_up",
]

PROGRESS_INTERVAL = 0.1  # seconds between progress reports (the last one always goes)


@dataclass(frozen=True)
class AnalysisRequest:
    """What the window asks for: these inputs, this model file, these options."""

    paths: list[str]
    model: str  # model file path
    options: AnalysisOptions = field(default_factory=AnalysisOptions)


_loaded: dict[str, tuple[LoadedBundle, Analyzer]] = {}  # by model path: load once per session
_loading = threading.Lock()  # a warm-up and an analysis may ask at the same time


def loaded_analyzer(path: str) -> tuple[LoadedBundle, Analyzer]:
    """Load and verify a model file once per process (a reload takes seconds on a CPU)."""
    key = str(Path(path).resolve())
    with _loading:
        if key not in _loaded:
            bundle = load_bundle(path)
            _loaded.clear()  # keep one model in memory
            _loaded[key] = (bundle, Analyzer(bundle))
        return _loaded[key]


def is_loaded(path: str) -> bool:
    """Whether `run_analysis` on this model file would start without loading it."""
    return str(Path(path).resolve()) in _loaded


def warm_up(worker: Worker, path: str) -> str:
    """Import TensorFlow and load the model while the user is still choosing images.

    Importing TensorFlow holds the GIL for a few hundred milliseconds at a time (it loads
    its shared libraries); done here, right after start-up, that pause falls in idle time
    instead of in the middle of an analysis, and the first analysis starts at once.
    """
    loaded_analyzer(path)
    return path


def run_analysis(worker: Worker, request: AnalysisRequest) -> RunResult:
    """Forward one run's events to the window; returns the finished (or cancelled) run.

    `RunStarted` goes on as it is, `Outcomes` are re-chunked by a `ChunkedEmitter`, and
    `Progress` is passed at most every PROGRESS_INTERVAL seconds (and always when done).
    """
    _, analyzer = loaded_analyzer(request.model)
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
        elif isinstance(event, RunFinished):
            emitter.flush()
            return event.run
    raise RuntimeError("the analysis stream ended without its RunFinished event")
