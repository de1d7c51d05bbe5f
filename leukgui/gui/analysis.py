"""The analysis run as a worker function: core events in, chunks of results out.

Runs in a `Worker` thread. TensorFlow is imported here, on first use, so the window is on
screen before TensorFlow has loaded. Results reach the GUI in growing chunks and progress at
most ten times a second, so a 10,000-cell run never floods the event loop.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from leukgui.core.results import Outcome, Progress, RunResult
from leukgui.gui.workers import ChunkedEmitter, Worker

__all__ = ["AnalysisRequest", "Outcomes", "RunStarted", "run_analysis"]


@dataclass(frozen=True)
class AnalysisRequest:
    paths: list[str]
    model: str  # bundle path
    batch_size: int = 32
    image_kind: str = "auto"
    detector: dict | None = None  # DetectorSettings overrides from the preferences


@dataclass(frozen=True)
class RunStarted:
    """Sent once the model is loaded and the folders are walked (provenance, totals)."""

    run: RunResult  # info filled, outcomes holding the walk errors so far
    total: int


@dataclass(frozen=True)
class Outcomes:
    items: list[Outcome]


_loaded: dict[str, Any] = {}  # bundle path -> (LoadedBundle, Analyzer): load once per session
_loading = threading.Lock()  # a warm-up and an analysis may ask at the same time


def loaded_analyzer(path: str) -> tuple[Any, Any]:
    """Load and verify a bundle once per process (a reload takes seconds on a CPU)."""
    from leukgui.core.bundle import load_bundle
    from leukgui.core.engine import Analyzer

    key = str(Path(path).resolve())
    with _loading:
        if key not in _loaded:
            bundle = load_bundle(path)
            _loaded.clear()  # keep one model in memory
            _loaded[key] = (bundle, Analyzer(bundle))
        return _loaded[key]


def is_loaded(path: str) -> bool:
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
    """Walk, classify and stream results; returns the finished (or cancelled) run."""
    from leukgui.core.engine import field_provenance, run_info_for
    from leukgui.core.fields import DetectorSettings
    from leukgui.core.imaging import discover

    detector = DetectorSettings(**(request.detector or {}))

    bundle, analyzer = loaded_analyzer(request.model)
    items, walk_errors = discover(request.paths)
    info = run_info_for(bundle, request.paths)
    info.extra.update(field_provenance(request.image_kind, detector))
    info.total_inputs = len(items) + len(walk_errors)
    run = RunResult(info=info, outcomes=list(walk_errors))
    worker.report(RunStarted(RunResult(info=info, outcomes=list(walk_errors)), len(items)))
    emitter = ChunkedEmitter(lambda chunk: worker.report(Outcomes(chunk)))
    last = [0.0]

    def progress(p: Progress) -> None:
        now = time.monotonic()
        if now - last[0] >= 0.1 or p.done == p.total:
            last[0] = now
            worker.report(p)

    for outcome in analyzer.iter_outcomes(
        items,
        batch_size=request.batch_size,
        progress=progress,
        cancel=worker.cancel_token,
        image_kind=request.image_kind,
        detector=detector,
    ):
        run.outcomes.append(outcome)
        emitter.add(outcome)
    emitter.flush()
    done = len(run.outcomes)
    info.cancelled = worker.cancelled and done < info.total_inputs
    info.finished = datetime.now().astimezone()
    return run
