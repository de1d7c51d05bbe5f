"""The `leukgui` command: `analyze`, `models`, `runtimes`, `train`, `evaluate`; without a
command, the window.

Built from three modules that never import each other back: `console` (exit codes, Ctrl-C,
the progress line), `analyze` (analyze, models, --self-test) and `train` (train, evaluate).
TensorFlow is imported only when a command needs the network, so `leukgui models` and
`--help` answer at once.
"""

from __future__ import annotations

import argparse
import difflib
import os
import sys
from collections.abc import Sequence
from typing import TextIO

from leukgui import __version__
from leukgui.cli import analyze, dataset, train
from leukgui.cli.console import (
    EXIT_INTERRUPTED,
    EXIT_MODEL,
    EXIT_NO_DATA,
    EXIT_NO_IMAGES,
    EXIT_OK,
    EXIT_REPORT,
    EXIT_SOME_ERRORS,
    EXIT_USAGE,
    CleanStream,
    clean,
)
from leukgui.core.running import announce_running

# The exit codes are part of the command's documented interface (see `--help`).
__all__ = [
    "EXIT_INTERRUPTED",
    "EXIT_MODEL",
    "EXIT_NO_DATA",
    "EXIT_NO_IMAGES",
    "EXIT_OK",
    "EXIT_REPORT",
    "EXIT_SOME_ERRORS",
    "EXIT_USAGE",
    "build_parser",
    "main",
]

_COMMANDS = ("analyze", "models", "runtimes", "train", "evaluate", "dataset")


def build_parser() -> argparse.ArgumentParser:
    """The whole command line: the main options and every command's parser."""
    parser = argparse.ArgumentParser(
        prog="leukgui",
        description=(
            "LeukGUI classifies white blood cells in microscopy images as ALL (leukemic blast) "
            "or HEM (normal), shows why with Grad-CAM heatmaps, and writes Excel reports."
        ),
        epilog="Run 'leukgui COMMAND --help' for the options of a command.",
    )
    parser.add_argument("--version", action="version", version=f"LeukGUI {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    analyze.add_parsers(parser, sub)
    train.add_parsers(sub)
    dataset.add_parsers(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `leukgui` command (and of `python -m leukgui`)."""
    # 3: TensorFlow's C++ errors too, e.g. "failed call to cuInit" on every PC without an
    # NVIDIA GPU, which reads like a failure; real failures still raise Python exceptions.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    # Held while this process runs: the Windows installer will not replace files under it.
    announce_running()
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or (argv[0] not in _COMMANDS and not argv[0].startswith("-")):
        if argv and not os.path.exists(argv[0]):
            return _unknown_command(argv[0], sys.stderr)
        # No command: the desktop app (folders given on the command line are opened).
        from leukgui.gui.app import main as gui_main

        return gui_main(argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.self_test:
        return analyze.cmd_self_test(args, CleanStream(sys.stdout), CleanStream(sys.stderr))
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    if getattr(args, "batch_size", 1) < 1:
        parser.error("--batch-size must be at least 1")
    if getattr(args, "max_pixels", 1) < 1:
        parser.error("--max-pixels must be at least 1")
    if getattr(args, "max_file_mib", 1) < 1:
        parser.error("--max-file-mib must be at least 1")
    # Everything a command prints passes through `clean`: no escape codes from file or model
    # names reach the terminal.
    return int(args.func(args, CleanStream(sys.stdout), CleanStream(sys.stderr)))


def _unknown_command(word: str, err: TextIO) -> int:
    """`leukgui WORD` where WORD is neither a command nor an existing file or folder: say so
    (with the nearest command) instead of opening an empty window."""
    near = difflib.get_close_matches(word.lower(), _COMMANDS, n=1, cutoff=0.6)
    hint = f" Did you mean 'leukgui {near[0]}'?" if near else ""
    err.write(
        clean(
            f"leukgui: '{word}' is neither a command nor an existing file or folder.{hint}\n"
            f"Commands: {', '.join(_COMMANDS)}; 'leukgui FOLDER' opens the window with a "
            "folder; 'leukgui --help' explains them.\n"
        )
    )
    return EXIT_USAGE
