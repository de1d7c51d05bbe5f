"""What every command shares with the terminal: exit codes, Ctrl-C, the progress line.

Kept apart from the commands so `analyze` and `train` both use it without importing each
other.
"""

from __future__ import annotations

import contextlib
import re
import signal
from collections.abc import Iterator
from typing import Any, TextIO

from leukgui.core import runtimes
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
    "CleanStream",
    "CtrlC",
    "ProgressPrinter",
    "clean",
    "ctrl_c_cancels",
    "add_runtime_options",
    "load_model",
    "start_runtime",
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


# C0 and C1 control characters (ESC, BEL, backspace, CSI...), DEL, and the Unicode line and
# paragraph separators: a name in a model manifest or a file name must never be able to move
# the cursor, retitle the terminal or hide text. Newline and tab stay.
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029]")


# Lone surrogates (undecodable bytes of a file name) cannot be printed: shown as U+FFFD.
_SURROGATE = re.compile("[\ud800-\udfff]")


def clean(text: str) -> str:
    """`text` without terminal control characters (newline and tab kept; a leading carriage
    return, the progress bar's redraw, too) and with lone surrogates shown as U+FFFD."""
    text = _SURROGATE.sub("\ufffd", text)
    if text.startswith("\r"):
        return "\r" + _CONTROL.sub("", text[1:])
    return _CONTROL.sub("", text)


class CleanStream:
    """A text stream that passes everything written through `clean`: every command writes
    to the terminal through one of these, so nothing it prints can carry escape codes."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        return self._stream.write(clean(text))

    def flush(self) -> None:
        self._stream.flush()

    def isatty(self) -> bool:
        return hasattr(self._stream, "isatty") and self._stream.isatty()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


class CtrlC:
    """What the Ctrl-C handler of `ctrl_c_cancels` does now; a command changes it by phase.

    `message` is said on the first Ctrl-C. While `abortable` is False (e.g. while finished
    report files are being moved into place) a second Ctrl-C only repeats that the command is
    finishing, so an abort can never leave half of a run's files swapped.
    """

    def __init__(self, message: str) -> None:
        self.message = message
        self.abortable = True
        self.pressed = 0


@contextlib.contextmanager
def ctrl_c_cancels(
    cancel: CancelToken, err: TextIO, message: str = CANCEL_MESSAGE
) -> Iterator[CtrlC]:
    """While inside: the first Ctrl-C cancels between batches (finished work is kept), a
    second one raises KeyboardInterrupt (abort). The previous handler is restored on exit.

    Yields a `CtrlC` whose `message` and `abortable` the command may change per phase (the
    export phase says that the report is being finished instead of "after the current
    batch")."""
    state = CtrlC(message)

    def handler(signum: int, frame: Any) -> None:
        state.pressed += 1
        if cancel.cancelled:
            if state.abortable:
                raise KeyboardInterrupt
            err.write("\nFinishing the report files; they are almost in place...\n")
            err.flush()
            return
        cancel.cancel()
        err.write(f"\n{state.message}\n")
        err.flush()

    try:
        previous = signal.signal(signal.SIGINT, handler)
    except ValueError:  # not the main thread (e.g. called from a test runner thread)
        previous = None
    try:
        yield state
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


def load_model(
    name: str | None, err: TextIO, command: str, *, announce: bool = False, keras: bool = True
) -> Any:
    """The verified model a command runs with (a name, `name-vVERSION`, a path, or the
    default), or None after saying why on `err`; the demo model is announced as such.
    `keras=False` leaves the Keras model (and TensorFlow) unloaded until a runtime asks."""
    from leukgui.core.bundle import BundleError, choose_bundle, load_bundle
    from leukgui.core.results import DEMO_NOTICE

    try:
        info = choose_bundle(name)
        if announce:
            err.write(f"Loading model {info.name} v{info.version} ({info.backbone}) ...\n")
        bundle = load_bundle(info.path, source=info.source, keras=keras)
    except (BundleError, ValueError) as exc:
        err.write(f"{command}: model error: {exc}\n")
        return None
    if bundle.demo:
        err.write(f"*** {DEMO_NOTICE} ***\n")
    return bundle


def start_runtime(bundle: Any, runtime: str, precision: str, err: TextIO, command: str) -> Any:
    """The bundle on its checked runtime, said on `err` with every runtime passed over; None
    (after saying why) when none could run it."""
    from leukgui.core.engine import Analyzer
    from leukgui.core.runtimes import NoRuntime

    try:
        analyzer = Analyzer(bundle, runtime, precision=precision)
    except NoRuntime as exc:
        err.write(f"{command}: model error: {exc}\n")
        return None
    err.write(f"Runtime: {analyzer.runtime.description}\n")
    for note in analyzer.runtime_notes:
        err.write(f"  runtime note: {note}\n")
    return analyzer


def add_runtime_options(parser: Any) -> None:
    """--runtime and --precision, shared by the commands that run a model."""
    parser.add_argument(
        "--runtime",
        choices=runtimes.RUNTIME_CHOICES,
        default=runtimes.AUTO,
        help="inference engine: auto picks a GPU that passes its self-check, else the fastest "
        "CPU engine (OpenVINO); tensorflow is the reference (default auto; see 'leukgui "
        "runtimes')",
    )
    parser.add_argument(
        "--precision",
        choices=(runtimes.AUTO, "fp32"),
        default=runtimes.AUTO,
        help="auto lets OpenVINO compute in bf16 on CPUs that support it (P(ALL) within 0.02 "
        "of fp32, checked on probe cells at load); fp32 forces full precision",
    )
