"""Training curves: the loss, accuracy/AUC and learning-rate figure of a run, and the Curves
sheet of its training report (the figure above the epoch log).

matplotlib's object API only (no pyplot global state), so a figure can be drawn in a worker
thread next to the Qt GUI. No TensorFlow here.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from openpyxl.worksheet.worksheet import Worksheet

from leukgui.core.atomic import atomic_write
from leukgui.core.xlsx import (
    BEST_FILL,
    BOLD,
    BORDER,
    ITALIC,
    NOTE_FONT,
    PCT,
    PROB,
    SECTION_FONT,
    embed_png,
    header_row,
    number_cell,
    print_setup,
    set_widths,
    text_cell,
    title_cell,
)
from training.history import LOG_COLUMNS, EpochLog, TrainingRun

__all__ = ["CURVES_SIZE_PX", "curves_sheet", "plot_curves", "render_curves"]

CURVES_SIZE_PX = (1500, 450)  # width, height of the curves PNG
_CURVES_DPI = 100
_CURVES_SHOWN_WIDTH_PX = 1200  # width of the curves picture on the Curves sheet

# --------------------------------------------------------------------------- figure


def _finite(values: Sequence[float]) -> list[float]:
    return [v for v in values if isinstance(v, (int, float)) and math.isfinite(v)]


def _centre_text(ax: Any, text: str) -> None:
    ax.text(
        0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, fontsize=12, color="gray"
    )


def render_curves(history: Sequence[EpochLog], title: str = "") -> bytes:
    """The curves figure as PNG bytes (matplotlib's object API: no pyplot global state, so
    it is safe in a worker thread next to the Qt GUI)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    width, height = CURVES_SIZE_PX
    fig = Figure(figsize=(width / _CURVES_DPI, height / _CURVES_DPI), dpi=_CURVES_DPI)
    canvas = FigureCanvasAgg(fig)
    fig.set_layout_engine("constrained")
    axes = fig.subplots(1, 3)
    if title:
        fig.suptitle(title, fontsize=14, fontweight="bold")

    epochs = [log.epoch for log in history]
    panels: list[tuple[str, list[tuple[str, str, str]]]] = [
        ("Loss", [("loss", "loss (train)", "C0"), ("val_loss", "val_loss", "C1")]),
        (
            "Accuracy and AUC",
            [
                ("accuracy", "accuracy (train)", "C0"),
                ("val_accuracy", "val_accuracy", "C1"),
                ("val_balanced_accuracy", "val_balanced_accuracy", "C2"),
                ("val_auc", "val_auc", "C3"),
            ],
        ),
        ("Learning rate", [("learning_rate", "learning rate", "C4")]),
    ]
    # Phase boundaries: between the last epoch of one phase and the first of the next.
    boundaries = [
        ((history[i - 1].epoch + history[i].epoch) / 2.0, history[i - 1].phase, history[i].phase)
        for i in range(1, len(history))
        if history[i].phase != history[i - 1].phase
    ]
    marker = "o" if len(history) <= 30 else None
    for ax, (panel_title, series) in zip(axes, panels, strict=True):
        ax.set_title(panel_title, fontsize=12)
        ax.set_xlabel("epoch", fontsize=11)
        ax.tick_params(labelsize=10)
        ax.grid(True, alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        plotted = False
        for name, label, color in series:
            values = [float(getattr(log, name)) for log in history]
            if not _finite(values):
                continue
            ax.plot(epochs, values, label=label, color=color, marker=marker, markersize=4)
            plotted = True
        if not history:
            _centre_text(ax, "no epochs logged")
        elif not plotted:
            _centre_text(ax, "no values")
        if panel_title == "Learning rate":
            rates = _finite([log.learning_rate for log in history])
            if rates and min(rates) > 0:
                ax.set_yscale("log")
        elif plotted:
            ax.legend(fontsize=9, loc="best", framealpha=0.8)
        if len(history) == 1:
            ax.set_xlim(epochs[0] - 0.5, epochs[0] + 0.5)
        for x, before, after in boundaries:
            ax.axvline(x, color="0.35", linestyle="--", linewidth=1.2)
            ax.text(
                x,
                0.97,
                f"{before} → {after}",
                transform=ax.get_xaxis_transform(),
                fontsize=9,
                color="0.2",
                ha="center",
                va="top",
                rotation=90,
                bbox={
                    "boxstyle": "round,pad=0.2",
                    "facecolor": "white",
                    "edgecolor": "none",
                    "alpha": 0.85,
                },
            )
    buf = io.BytesIO()
    canvas.print_png(buf)
    return buf.getvalue()


def plot_curves(history: Sequence[EpochLog], path: Path, title: str = "") -> Path:
    """Save loss, accuracy/AUC and learning-rate curves (x = epoch) side by side as a PNG.

    One look shows over- or under-fitting and what the phase switch (dashed line) did.
    About 1500 x 450 px; NaN values leave gaps, a one-epoch history shows single points.
    Raises `ReportWriteError` (previous file untouched) when it cannot be written.
    """
    path = Path(path)
    png = render_curves(list(history), title)
    atomic_write(path, lambda tmp: tmp.write_bytes(png))
    return path


# --------------------------------------------------------------------------- Curves sheet


def _curves_png(run: TrainingRun) -> bytes:
    """The run's saved curves PNG if it can be read, else a fresh rendering."""
    if run.curves_png is not None:
        try:
            from PIL import Image

            data = Path(run.curves_png).read_bytes()
            with Image.open(io.BytesIO(data)) as im:
                im.verify()
            return data
        except (OSError, ValueError, SyntaxError):
            pass
    return render_curves(run.history, f"{run.name} {run.version} ({run.backbone})")


_LOG_HEADERS = {
    "phase": ("Phase", None),
    "epoch": ("Epoch", "0"),
    "loss": ("Loss", "0.0000"),
    "accuracy": ("Accuracy", PCT),
    "val_loss": ("Val loss", "0.0000"),
    "val_accuracy": ("Val accuracy", PCT),
    "val_balanced_accuracy": ("Val balanced accuracy", PCT),
    "val_auc": ("Val AUC", PROB),
    "learning_rate": ("Learning rate", "0.00E+00"),
    "seconds": ("Seconds", "0.0"),
    "images_per_second": ("Images/s", "0.0"),
}


def curves_sheet(ws: Worksheet, run: TrainingRun) -> None:
    """The Curves sheet of a training report: the figure, then the epoch log with the best
    epoch (whose weights were kept) highlighted."""
    title_cell(ws, 1, "Training curves")
    rows = embed_png(ws, _curves_png(run), "A2", _CURVES_SHOWN_WIDTH_PX)
    row = 2 + rows + 1
    text_cell(ws, row, 1, "Epoch log").font = SECTION_FONT
    text_cell(ws, row, 4, f"best epoch (highlighted): {run.best_epoch}").font = NOTE_FONT
    row += 1
    head_row = row
    header_row(ws, row, [_LOG_HEADERS[c][0] for c in LOG_COLUMNS])
    ws.row_dimensions[row].height = 30
    for log in run.history:
        row += 1
        best = log.epoch == run.best_epoch
        for col, name in enumerate(LOG_COLUMNS, 1):
            value = getattr(log, name)
            if isinstance(value, str):
                cell = text_cell(ws, row, col, value)
            else:
                cell = number_cell(ws, row, col, value, _LOG_HEADERS[name][1])
            cell.border = BORDER
            if best:
                cell.font = BOLD
                cell.fill = BEST_FILL
    if not run.history:
        text_cell(ws, row + 1, 1, "No epochs were logged.").font = ITALIC
    set_widths(ws, [11, 8, 10, 11, 10, 12, 14, 10, 13, 10, 11])
    print_setup(ws, f"{head_row}:{head_row}")
