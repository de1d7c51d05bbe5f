"""What every command shares with the terminal: exit codes, Ctrl-C, the progress line.

Kept apart from the commands so `analyze` and `train` both use it without importing each
other.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from typing import Any, TextIO

from leukgui.core.formatting import clock
from leukgui.core.results import CancelToken, Progress

__all__ = [
    "EXIT_INTERRUPTED",
    "EXIT_MODEL",
    "EXIT_NO_DATA",
    "EXIT_NO_IMAGES",
    "EXIT_OK",
    "EXIT_REPORT",
    "EXIT_SOME_ERRORS",
    "EXIT_USAGE",
    "ProgressPrinter",
    "ctrl_c_cancels",
    "load_model",
]

EXIT_OK = 0
EXIT_SOME_ERRORS = 1
EXIT_USAGE = 2
EXIT_NO_IMAGES = 3
EXIT_NO_DATA = EXIT_NO_IMAGES  # `train` / `evaluate`: no labelled cells (same code, same idea)
EXIT_MODEL = 4
EXIT_REPORT = 5
EXIT_INTERRUPTED = 130

CANCEL_MESSAGE = "Cancelling after the current batch (Ctrl-C again to abort)..."


@contextlib.contextmanager
def ctrl_c_cancels(
    cancel: CancelToken, err: TextIO, message: str = CANCEL_MESSAGE
) -> Iterator[None]:
    """While inside: the first Ctrl-C cancels between batches (finished work is kept), a
    second one raises KeyboardInterrupt (abort). The previous handler is restored on exit."""

    def handler(signum: int, frame: Any) -> None:
        if cancel.cancelled:
            raise KeyboardInterrupt
        cancel.cancel()
        err.write(f"\n{message}\n")
        err.flush()

    try:
        previous = signal.signal(signal.SIGINT, handler)
    except ValueError:  # not the main thread (e.g. called from a test runner thread)
        previous = None
    try:
        yield
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)


class ProgressPrinter:
    """A one-line progress bar on a terminal; occasional plain lines when piped to a file.

    A context manager: leaving it ends a drawn bar's line, so what follows starts clean.
    """

    def __init__(self, stream: TextIO, enabled: bool = True) -> None:
        self.stream = stream
        self.enabled = enabled
        self.tty = hasattr(stream, "isatty") and stream.isatty()
        self._last_decile = -1
        self._drawn = False

    def __call__(self, p: Progress) -> None:
        if not self.enabled:
            return
        text = (
            f"{p.done}/{p.total} images  {p.fraction:4.0%}  {p.rate:6.1f} img/s  "
            f"ETA {clock(p.eta_s)}"
        )
        if self.tty:
            width = 28
            filled = int(round(width * p.fraction))
            bar = "#" * filled + "-" * (width - filled)
            self.stream.write(f"\r[{bar}] {text}")
            self.stream.flush()
            self._drawn = True
        else:
            decile = int(p.fraction * 10)
            if decile != self._last_decile:
                self._last_decile = decile
                self.stream.write(text + "\n")
                self.stream.flush()

    def close(self) -> None:
        """End the bar's line (if one was drawn)."""
        if self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False

    def __enter__(self) -> ProgressPrinter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def load_model(name: str | None, err: TextIO, command: str, *, announce: bool = False) -> Any:
    """The verified model a command runs with (a name, `name-vVERSION`, a path, or the
    default), or None after saying why on `err`; the demo model is announced as such."""
    from leukgui.core.bundle import BundleError, choose_bundle, load_bundle
    from leukgui.core.results import DEMO_NOTICE

    try:
        info = choose_bundle(name)
        if announce:
            err.write(f"Loading model {info.name} v{info.version} ({info.backbone}) ...\n")
        bundle = load_bundle(info.path, source=info.source)
    except (BundleError, ValueError) as exc:
        err.write(f"{command}: model error: {exc}\n")
        return None
    if bundle.demo:
        err.write(f"*** {DEMO_NOTICE} ***\n")
    return bundle
