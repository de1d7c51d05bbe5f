"""Run core functions off the GUI thread and turn their callbacks into Qt signals.

Like Orange's task state and superqt's thread workers: the function itself knows nothing
about Qt; it gets a `Worker` it can report to (`worker.report(value)`) and whose
`cancel_token` it passes on to the core. Every exception raised inside reaches the window
through `failed` with a plain message: a worker never stops silently. A `WorkerGroup` keeps
the threads one widget started, so it can stop and wait for them all before it closes (Qt
aborts when a running QThread is destroyed).
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable, Iterable
from typing import Any

from PySide6.QtCore import QObject, QThread, Signal, Slot

from leukgui.core.results import CancelToken

__all__ = ["ChunkedEmitter", "Worker", "WorkerGroup"]


class Worker(QThread):
    """Runs `fn(worker)` in its own thread; results and errors come back as signals."""

    progressed = Signal(object)
    succeeded = Signal(object)
    failed = Signal(str, str)  # plain message, traceback for the details box

    def __init__(self, fn: Callable[[Worker], Any], parent: Any = None) -> None:
        super().__init__(parent)
        self._fn = fn
        self.cancel_token = CancelToken()

    def run(self) -> None:  # noqa: D102 - QThread entry point
        try:
            result = self._fn(self)
        except BaseException as exc:  # noqa: BLE001 - everything must reach the user
            message = str(exc) or exc.__class__.__name__
            self.failed.emit(message, traceback.format_exc())
            return
        self.succeeded.emit(result)

    def report(self, value: object) -> None:
        """Send a value to the GUI thread (queued; safe from the worker thread)."""
        self.progressed.emit(value)

    def cancel(self) -> None:
        """Ask the function to stop at its next check; what finished is kept."""
        self.cancel_token.cancel()

    @property
    def cancelled(self) -> bool:
        return self.cancel_token.cancelled


class ChunkedEmitter:
    """Collects items and hands them on in growing chunks, at most every `interval` s.

    A signal per cell would flood the event loop with 10,000 events (Spyder's search sends
    results in growing batches for the same reason); small first chunks make the first cells
    appear at once, larger later ones keep the GUI thread's share of work small.
    """

    def __init__(
        self,
        emit: Callable[[list[Any]], None],
        first: int = 16,
        largest: int = 512,
        interval: float = 0.1,
    ) -> None:
        self._emit = emit
        self._size = first
        self._largest = largest
        self._interval = interval
        self._items: list[Any] = []
        self._last = 0.0

    def extend(self, items: Iterable[Any]) -> None:
        """Collect `items`; hand on a chunk when enough have gathered and time has passed."""
        self._items.extend(items)
        now = time.monotonic()
        if len(self._items) >= self._size and now - self._last >= self._interval:
            self.flush()

    def flush(self) -> None:
        if self._items:
            items, self._items = self._items, []
            self._emit(items)
            self._last = time.monotonic()
            self._size = min(self._size * 2, self._largest)


class WorkerGroup(QObject):
    """Starts workers, forgets each one when its thread ends, and waits for the rest."""

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._running: set[Worker] = set()

    def start(self, worker: Worker) -> Worker:
        """Run `worker`; it is deleted (later, on the GUI thread) once its thread has ended."""
        self._running.add(worker)
        worker.finished.connect(self._on_finished)
        worker.start()
        return worker

    def cancel_all(self) -> None:
        for worker in list(self._running):
            worker.cancel()

    def wait(self, wait_ms: int) -> bool:
        """Wait up to `wait_ms` for each thread; True when none is left running."""
        return all(worker.wait(wait_ms) for worker in list(self._running))

    @Slot()
    def _on_finished(self) -> None:
        worker = self.sender()
        if isinstance(worker, Worker):
            self._running.discard(worker)
            worker.deleteLater()
