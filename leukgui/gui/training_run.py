"""Running a training session from the GUI: start and cancel, progress, live curves.

`RunControl` runs `training.run.train_session`, the same function `leukgui train` calls, in
a worker thread (TensorFlow is only imported there) and turns its progress callback into a
progress bar, a status line, a log and the live curves of `TrainingCurves`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, Signal, Slot
from PySide6.QtWidgets import (
    QCheckBox,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from leukgui.core.formatting import clock, duration, percent
from leukgui.gui.metrics_card import number
from leukgui.gui.plot import LinePlot
from leukgui.gui.theme import status_style
from leukgui.gui.training_form import display_name
from leukgui.gui.workers import Worker, WorkerGroup
from training.history import PHASE_FINE_TUNE, PHASE_FULL, PHASE_HEAD, TrainingProgress

__all__ = ["ProgressThrottle", "RunControl", "TrainingCurves"]

PHASE_NAMES = {
    PHASE_HEAD: "head only",
    PHASE_FINE_TUNE: "fine-tuning the top block",
    PHASE_FULL: "all layers",
}
LOSS_SERIES = ("loss", "val_loss")
METRIC_SERIES = ("val_accuracy", "val_balanced_accuracy", "val_auc")
START_TIP = "Train each chosen backbone on the same split by subject"


class ProgressThrottle:
    """Passes every epoch event but at most one batch event per `interval` seconds.

    A batch on a GPU can take milliseconds; a signal per batch would flood the event loop
    (Orange only reports progress that changed noticeably, for the same reason).
    """

    def __init__(self, send: Callable[[Any], None], interval: float = 0.1) -> None:
        self._send = send
        self._interval = interval
        self._last = -math.inf

    def __call__(self, progress: TrainingProgress) -> None:
        if progress.kind == "batch":
            now = time.monotonic()
            if now - self._last < self._interval:
                return
            self._last = now
        self._send(progress)


class TrainingCurves(QWidget):
    """Loss and validation scores per epoch, with a line where fine-tuning begins."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        column = QVBoxLayout(self)
        column.setContentsMargins(0, 0, 0, 0)
        plots = QHBoxLayout()
        self.loss_plot = LinePlot("Loss (class-weighted)", x_label="epoch", integer_x=True)
        self.metrics_plot = LinePlot("Validation scores", x_label="epoch", integer_x=True)
        self.metrics_plot.set_y_range(0.0, 1.0)
        for plot in (self.loss_plot, self.metrics_plot):
            plot.setMinimumHeight(200)
            plots.addWidget(plot, 1)
        column.addLayout(plots, 1)
        options = QHBoxLayout()
        self.log_y_check = QCheckBox("Log scale for the loss")
        options.addWidget(self.log_y_check)
        options.addStretch(1)
        column.addLayout(options)
        self.log_y_check.toggled.connect(self.loss_plot.set_log_y)
        self.reset("")

    def reset(self, backbone: str, epochs: int | None = None) -> None:
        """Empty curves titled for `backbone` ("" before any), x axis 1..`epochs` if known."""
        suffix = f" — {display_name(backbone)}" if backbone else ""
        self.loss_plot.clear()
        self.metrics_plot.clear()
        self.loss_plot.set_title("Loss (class-weighted)" + suffix)
        self.metrics_plot.set_title("Validation scores" + suffix)
        for plot, names in ((self.loss_plot, LOSS_SERIES), (self.metrics_plot, METRIC_SERIES)):
            if epochs:
                plot.set_x_range(1, max(epochs, 2))
            else:
                plot.set_x_range(None)
            plot.set_empty_text("waiting for the first epoch…" if backbone else "no data yet")
            for series in names:
                plot.set_series(series, [], [])

    def add_epoch(self, epoch: Any) -> None:
        """Append one training.history.EpochLog to every series."""
        for series in LOSS_SERIES:
            self.loss_plot.add_point(series, epoch.epoch, getattr(epoch, series))
        for series in METRIC_SERIES:
            self.metrics_plot.add_point(series, epoch.epoch, getattr(epoch, series))

    def mark_fine_tuning(self, first_epoch: int) -> None:
        """Draw the phase boundary once, just before `first_epoch`."""
        if self.loss_plot.marker() is None:
            for plot in (self.loss_plot, self.metrics_plot):
                plot.set_marker(first_epoch - 0.5, "fine-tune")

    def show_history(self, history: Sequence[Any], backbone: str = "") -> None:
        """Draw a finished run's epoch log (for "Show curves" and at the end of training)."""
        self.reset(backbone)
        for plot, names in ((self.loss_plot, LOSS_SERIES), (self.metrics_plot, METRIC_SERIES)):
            for series in names:
                plot.set_series(
                    series, [e.epoch for e in history], [getattr(e, series) for e in history]
                )
        tuned = [e.epoch for e in history if e.phase == PHASE_FINE_TUNE]
        if tuned:
            self.mark_fine_tuning(min(tuned))


class RunControl(QWidget):
    """Start and Cancel, the progress bar and the status line of one training session."""

    started = Signal()
    finished = Signal(object)  # TrainingSession, or None when training failed
    error = Signal(str, str, str)  # title, message, details: for the page's error dialog
    start_clicked = Signal()

    def __init__(
        self, curves: TrainingCurves, log_view: QPlainTextEdit, parent: QWidget | None = None
    ) -> None:
        super().__init__(parent)
        self._curves = curves
        self._log = log_view
        self._worker: Worker | None = None
        self._workers = WorkerGroup(self)
        self._backbones: list[str] = []
        self._batch_size = 32
        self._backbone: str | None = None
        self._backbone_index = -1
        self._out: Path | None = None
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        controls = QHBoxLayout()
        self.start_button = QPushButton("Start training")
        self.start_button.setDefault(True)
        self.start_button.setMinimumWidth(140)
        self.start_button.setToolTip(START_TIP)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.cancel_button.setToolTip(
            "Stop after the current batch; the best epoch so far is still scored and saved, "
            "marked CANCELLED."
        )
        controls.addWidget(self.start_button)
        controls.addWidget(self.cancel_button)
        self.start_reason = QLabel("")
        self.start_reason.setWordWrap(True)
        self.start_reason.setStyleSheet("color: palette(placeholder-text);")
        controls.addWidget(self.start_reason, 1)
        layout.addLayout(controls)
        self.progress_bar = QProgressBar()
        self.progress_bar.setRange(0, 1000)
        self.progress_bar.setValue(0)
        self.progress_bar.setTextVisible(True)
        self.progress_bar.setFormat("idle")
        layout.addWidget(self.progress_bar)
        self.status_label = QLabel("Choose a folder of labelled cells to begin.")
        self.status_label.setWordWrap(True)
        self.status_label.setTextInteractionFlags(Qt.TextSelectableByMouse)
        layout.addWidget(self.status_label)
        self.start_button.clicked.connect(self.start_clicked)
        self.cancel_button.clicked.connect(self.cancel)

    # ------------------------------------------------------------------ state
    def is_running(self) -> bool:
        return self._worker is not None

    def set_problem(self, problem: str) -> None:
        """Enable Start unless training runs or `problem` says why it cannot."""
        running = self._worker is not None
        self.start_button.setEnabled(not running and not problem)
        self.cancel_button.setEnabled(running and not self._worker.cancelled)
        reason = "" if running else problem
        self.start_reason.setText(reason)
        # A disabled button shows its tooltip too: say there why it cannot be pressed.
        self.start_button.setToolTip(f"Cannot start: {reason}" if reason else START_TIP)

    def set_status(self, text: str, error: bool = False) -> None:
        self.status_label.setStyleSheet(status_style("error") if error else "")
        self.status_label.setText(text)

    # ------------------------------------------------------------------ start / cancel
    def start(
        self,
        scan: Any,
        backbones: list[str],
        config: Any,
        out: Path,
        split_options: Any,
        source: str,
        stains: list[str] | None = None,
    ) -> None:
        """Train every backbone on `scan` with `config` into `out`, in a worker thread."""
        if self._worker is not None:
            return

        def run(worker: Worker) -> Any:
            from training.run import train_session

            return train_session(
                scan,
                backbones,
                config,
                out,
                split_options=split_options,
                progress=ProgressThrottle(worker.report),
                cancel=worker.cancel_token,
                log=worker.report,
                source=source,
                stains=stains,
            )

        self._out = out
        self.begin([b for b in backbones for _ in (stains or [None])], config.batch_size)
        self._curves.reset("")
        self._log.clear()
        self.progress_bar.setValue(0)
        self.progress_bar.setFormat("starting…")
        self.set_status(f"Starting: loading TensorFlow and reading {len(scan.records)} cells…")
        worker = Worker(run, self)
        worker.progressed.connect(self.on_progress)
        worker.succeeded.connect(self._on_done)
        worker.failed.connect(self._on_failed)
        self._worker = worker
        self.set_problem("")
        self._workers.start(worker)
        self.started.emit()

    def begin(self, backbones: Sequence[str], batch_size: int) -> None:
        """Expect progress of these backbones, in order (the bar splits between them)."""
        self._backbones = list(backbones)
        self._batch_size = batch_size
        self._backbone = None
        self._backbone_index = -1
        self._last_epoch = 0

    @Slot()
    def cancel(self) -> None:
        """Stop after the current batch; the trainer still saves the best epoch so far."""
        worker = self._worker
        if worker is None or worker.cancelled:
            return
        worker.cancel()
        self.cancel_button.setEnabled(False)
        self.status_label.setText(
            "Cancelling after the current batch… the best epoch so far will still be scored "
            "and saved, marked CANCELLED."
        )

    def shutdown(self, wait_ms: int) -> bool:
        """Cancel training and wait for its thread; True when it has ended."""
        self.cancel()
        return self._workers.wait(wait_ms)

    # ------------------------------------------------------------------ progress
    @Slot(object)
    def on_progress(self, value: object) -> None:
        """A log line (str) or a TrainingProgress from the trainer."""
        if isinstance(value, str):
            self._log.appendPlainText(value)
            return
        if not isinstance(value, TrainingProgress):
            return
        p = value
        if p.backbone != self._backbone or p.epoch < self._last_epoch:  # the next run
            self._backbone = p.backbone
            self._backbone_index += 1
            self._curves.reset(p.backbone, p.epochs)
        self._last_epoch = p.epoch
        if p.phase == PHASE_FINE_TUNE:
            self._curves.mark_fine_tuning(p.epoch)
        n = max(len(self._backbones), 1)
        done = (p.epoch - 1 + p.batch / max(p.batches, 1)) / max(p.epochs, 1)
        self.progress_bar.setValue(int(1000 * (self._backbone_index + min(done, 1.0)) / n))
        which = f" ({self._backbone_index + 1} of {n})" if n > 1 else ""
        self.progress_bar.setFormat(
            f"{display_name(p.backbone)}{which} · epoch {p.epoch} of {p.epochs} · "
            f"batch {p.batch} of {p.batches} · {p.images_per_second:.1f} img/s"
        )
        cancelling = self._worker is not None and self._worker.cancelled
        if p.kind == "batch":
            left = (p.batches - p.batch) * self._batch_size / max(p.images_per_second, 1e-9)
            if not cancelling:  # keep the "cancelling" message up
                self.status_label.setText(
                    f"{PHASE_NAMES.get(p.phase, p.phase)} · training loss {p.loss:.4f}, "
                    f"accuracy {percent(p.accuracy)} · epoch ends in about {clock(left)}"
                )
            return
        e = p.epoch_log
        if e is None:
            return
        self._curves.add_epoch(e)
        text = (
            f"Epoch {e.epoch} ({PHASE_NAMES.get(e.phase, e.phase)}): loss {e.loss:.4f} · "
            f"validation loss {e.val_loss:.4f}, balanced accuracy "
            f"{percent(e.val_balanced_accuracy)}, AUC {number(e.val_auc)} · {duration(e.seconds)}"
        )
        if not cancelling:
            self.status_label.setText(text)
        self._log.appendPlainText(f"{p.backbone}: {text}")

    # ------------------------------------------------------------------ the end
    def _end_worker(self) -> None:
        worker, self._worker = self._worker, None
        if worker is not None:
            worker.wait(5000)  # run() has emitted its result; let the thread end cleanly

    @Slot(object)
    def _on_done(self, session: Any) -> None:
        self._end_worker()
        runs = list(session.runs)
        if not session.cancelled:
            self.progress_bar.setValue(1000)
        self.progress_bar.setFormat("cancelled" if session.cancelled else "done")
        saved = ", ".join(Path(r.bundle_path).name for r in runs if r.bundle_path)
        if session.cancelled and runs:
            status = (
                f"Cancelled. The best epoch so far was scored and saved, marked CANCELLED: {saved}."
            )
        elif session.cancelled:
            status = "Cancelled before the first epoch finished: nothing was saved."
        else:
            plural = "s" if len(runs) != 1 else ""
            status = f"Finished: {len(runs)} model{plural} saved in {self._out}."
        for backbone, reason in session.failures:
            if "first epoch" not in reason or runs:
                status += f" {backbone}: {reason}."
        self.set_status(status)
        self._log.appendPlainText(status)
        if runs:
            self._curves.show_history(runs[-1].history, runs[-1].backbone)
        self.finished.emit(session)

    @Slot(str, str)
    def _on_failed(self, message: str, details: str) -> None:
        self._end_worker()
        self.progress_bar.setFormat("failed")
        self.set_status(f"Training failed: {message}", error=True)
        self._log.appendPlainText(f"Training failed: {message}")
        self.error.emit("Training failed", message, details)
        self.finished.emit(None)
