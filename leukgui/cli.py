"""Command line: `leukgui analyze`, `leukgui models`, `leukgui train`, `leukgui evaluate`.

TensorFlow is imported only when a command needs the network, so `leukgui models` and
`--help` answer at once.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

from leukgui import __version__
from leukgui.core.imaging import DEFAULT_MAX_PIXELS, IMAGE_SUFFIXES
from leukgui.core.results import ALL, DEMO_NOTICE, HEM, UNCERTAIN, CancelToken, Progress

EXIT_OK = 0
EXIT_SOME_ERRORS = 1
EXIT_USAGE = 2
EXIT_NO_IMAGES = 3
EXIT_MODEL = 4
EXIT_REPORT = 5
EXIT_INTERRUPTED = 130

EXIT_CODES_HELP = f"""\
exit codes:
  {EXIT_OK}    every input was analyzed
  {EXIT_SOME_ERRORS}    finished, but some inputs could not be analyzed (listed in the report)
  {EXIT_USAGE}    the command line was wrong
  {EXIT_NO_IMAGES}    no images were found in the inputs
  {EXIT_MODEL}    the model bundle could not be found or failed its checks
  {EXIT_REPORT}    the report could not be written (an older report is left intact)
  {EXIT_INTERRUPTED}  interrupted with Ctrl-C; the cells finished so far are still reported
"""

ANALYZE_EXAMPLES = """\
examples:
  leukgui analyze resources/samples --out report.xlsx
  leukgui analyze D:\\cells\\patient7 E:\\more --model efficientnetb0-demo --out p7.xlsx \\
      --csv --heatmaps p7-heatmaps
"""


def _fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return "--:--"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class ProgressPrinter:
    """A one-line progress bar on a terminal; occasional plain lines when piped to a file."""

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
            f"ETA {_fmt_duration(p.eta_s)}"
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
        if self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False


def _default_report_name() -> Path:
    return Path(f"leukgui-report-{datetime.now():%Y%m%d-%H%M%S}.xlsx")


def _install_interrupt(
    cancel: CancelToken,
    err: TextIO,
    message: str = "Cancelling after the current batch (Ctrl-C again to abort)...",
) -> Any:
    """First Ctrl-C cancels between batches (keeping finished work); a second one aborts."""

    def handler(signum: int, frame: Any) -> None:
        if cancel.cancelled:
            raise KeyboardInterrupt
        cancel.cancel()
        err.write(f"\n{message}\n")
        err.flush()

    try:
        return signal.signal(signal.SIGINT, handler)
    except ValueError:  # not the main thread (e.g. called from a test runner thread)
        return None


def cmd_analyze(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from leukgui.core.atomic import ReportWriteError
    from leukgui.core.bundle import BundleError, choose_bundle, load_bundle
    from leukgui.core.imaging import discover

    report_path = Path(args.out) if args.out else _default_report_name()
    if report_path.suffix.lower() != ".xlsx":
        err.write(f"leukgui: error: --out must name an .xlsx file, not {report_path}\n")
        return EXIT_USAGE

    items, walk_errors = discover(args.inputs)
    if not items:
        for e in walk_errors:
            err.write(f"  {e.path}: {e.reason}\n")
        kinds = " ".join(IMAGE_SUFFIXES)
        err.write(f"leukgui: no images found in {', '.join(args.inputs)} (looked for {kinds})\n")
        return EXIT_NO_IMAGES

    try:
        info = choose_bundle(args.model)
        if not args.quiet:
            err.write(f"Loading model {info.name} v{info.version} ({info.backbone}) ...\n")
        bundle = load_bundle(info.path, source=info.source)
    except (BundleError, ValueError) as exc:
        err.write(f"leukgui: model error: {exc}\n")
        return EXIT_MODEL
    if bundle.demo:
        err.write(f"*** {DEMO_NOTICE} ***\n")

    from leukgui.core.engine import analyze_paths

    cancel = CancelToken()
    previous = _install_interrupt(cancel, err)
    printer = ProgressPrinter(err, enabled=not args.quiet and not args.no_progress)
    started = time.perf_counter()
    try:
        run = analyze_paths(
            args.inputs,
            bundle,
            batch_size=args.batch_size,
            progress=printer,
            cancel=cancel,
            max_pixels=args.max_pixels,
            image_kind=args.image_kind,
            discovered=(items, walk_errors),
        )
    except KeyboardInterrupt:
        printer.close()
        err.write("leukgui: aborted; no report written\n")
        return EXIT_INTERRUPTED
    finally:
        printer.close()
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
    elapsed = time.perf_counter() - started

    from leukgui.core.report import write_csv, write_excel, write_heatmaps

    images = {"auto": None, "yes": True, "no": False}[args.images]
    try:
        write_excel(run, report_path, images=images)
        if args.csv:
            write_csv(run, report_path.with_suffix(".csv"))
    except ReportWriteError as exc:
        err.write(f"leukgui: {exc}\n")
        return EXIT_REPORT
    if args.heatmaps:
        try:
            heatmap_paths = write_heatmaps(run, Path(args.heatmaps))
        except (ReportWriteError, OSError) as exc:
            err.write(f"leukgui: heatmaps could not be written: {exc}\n")
            return EXIT_REPORT
        if not args.quiet:
            err.write(f"Wrote {len(heatmap_paths)} heatmap overlays to {args.heatmaps}\n")

    cells = run.cells
    n_all = sum(c.label == ALL for c in cells)
    n_hem = sum(c.label == HEM for c in cells)
    n_unc = sum(c.label == UNCERTAIN for c in cells)
    decided = n_all + n_hem
    pct = f"{100 * n_all / decided:.1f}%" if decided else "n/a"
    state = "CANCELLED: " if run.info.cancelled else ""
    out.write(
        f"{state}{len(cells)} cells: ALL {n_all} ({pct} of ALL+HEM), HEM {n_hem}, "
        f"uncertain {n_unc}; {len(run.errors)} errors; {elapsed:.1f} s; "
        f"report {report_path}\n"
    )
    if run.errors and not args.quiet:
        for e in run.errors[:10]:
            err.write(f"  error: {e.path}: {e.reason}\n")
        if len(run.errors) > 10:
            err.write(f"  ... and {len(run.errors) - 10} more (see the Errors sheet)\n")
    if run.info.cancelled:
        return EXIT_INTERRUPTED
    return EXIT_SOME_ERRORS if run.errors else EXIT_OK


def cmd_models(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from leukgui.core.bundle import find_bundles
    from leukgui.core.paths import bundled_models_dir, user_models_dir

    found, broken = find_bundles()
    if args.json:
        rows = [
            {
                "name": b.name,
                "version": b.version,
                "backbone": b.backbone,
                "input_size": b.manifest["input_size"],
                "demo": b.demo,
                "source": b.source,
                "sha256": b.sha256,
                "path": str(b.path),
            }
            for b in found
        ]
        out.write(json.dumps(rows, indent=2) + "\n")
    elif not found:
        out.write(f"No model bundles in {bundled_models_dir()} or {user_models_dir()}\n")
    else:
        header = ("NAME", "VERSION", "BACKBONE", "INPUT", "SOURCE", "SHA-256")
        rows = [
            (
                b.name + (" [DEMO]" if b.demo else ""),
                b.version,
                b.backbone,
                f"{b.manifest['input_size']} px",
                b.source,
                b.sha256,
            )
            for b in found
        ]
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
        for row in [header, *rows]:
            cells = (value.ljust(width) for value, width in zip(row, widths, strict=True))
            out.write("  ".join(cells).rstrip() + "\n")
        if any(b.demo for b in found):
            out.write(f"\n[DEMO] {DEMO_NOTICE}\n")
    for path, reason in broken:
        err.write(f"unreadable bundle {path}: {reason}\n")
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="leukgui",
        description=(
            "LeukGUI classifies white blood cells in microscopy images as ALL (leukemic blast) "
            "or HEM (normal), shows why with Grad-CAM heatmaps, and writes Excel reports."
        ),
        epilog="Run 'leukgui COMMAND --help' for the options of a command.",
    )
    parser.add_argument("--version", action="version", version=f"LeukGUI {__version__}")
    parser.add_argument(
        "--self-test",
        action="store_true",
        help="open the window offscreen, analyze the bundled samples, export and check a "
        "report; exit 0 when all worked",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    analyze = sub.add_parser(
        "analyze",
        help="classify the cells in image files or folders and write an Excel report",
        description=(
            "Classify every cell image in the given files and folders (searched recursively "
            f"for {' '.join(IMAGE_SUFFIXES)}, any letter case). Each folder of images is one "
            "sample in the report. Files that cannot be read are listed in the report's Errors "
            "sheet; they never stop the run. A cell's true label, when the file or folder name "
            "carries one (all/hem folders, C-NMC names), adds a Metrics sheet."
        ),
        epilog=ANALYZE_EXAMPLES + "\n" + EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    analyze.add_argument("inputs", nargs="+", metavar="PATH", help="image files or folders")
    analyze.add_argument(
        "--model",
        metavar="NAME|FILE",
        help="model bundle name (see 'leukgui models') or a .leukmodel file; "
        "default: the newest non-demo model, else the demo model",
    )
    analyze.add_argument(
        "--out",
        metavar="REPORT.xlsx",
        help="Excel report to write (default: leukgui-report-<date>-<time>.xlsx here)",
    )
    analyze.add_argument(
        "--csv",
        action="store_true",
        help="also write a CSV with one row per image next to the report",
    )
    analyze.add_argument(
        "--heatmaps", metavar="DIR", help="also write a Grad-CAM overlay PNG per cell into DIR"
    )
    analyze.add_argument(
        "--images",
        choices=("auto", "yes", "no"),
        default="auto",
        help="thumbnails and heatmaps inside the Excel file (auto: up to 2000 cells)",
    )
    analyze.add_argument(
        "--batch-size",
        type=int,
        default=32,
        metavar="N",
        help="images per network call (default 32)",
    )
    analyze.add_argument(
        "--max-pixels",
        type=int,
        default=DEFAULT_MAX_PIXELS,
        metavar="N",
        help=f"refuse images larger than N pixels before decoding (default {DEFAULT_MAX_PIXELS})",
    )
    analyze.add_argument(
        "--image-kind",
        "--fields",  # its first name, kept so existing scripts still run
        dest="image_kind",
        choices=("auto", "cells", "fields"),
        default="auto",
        help="auto: decide per image whether it is a single-cell crop on black or a whole "
        "smear field whose white cells are found and cropped; cells / fields: treat every "
        "image as one (default auto)",
    )
    analyze.add_argument("--no-progress", action="store_true", help="no progress bar")
    analyze.add_argument(
        "-q", "--quiet", action="store_true", help="print only the one-line summary and errors"
    )
    analyze.set_defaults(func=cmd_analyze)

    models = sub.add_parser(
        "models",
        help="list the installed model bundles",
        description="List model bundles in the bundled models folder and your own models "
        "folder, with name, version, backbone, input size and the SHA-256 of the weights.",
    )
    models.add_argument("--json", action="store_true", help="machine-readable output")
    models.set_defaults(func=cmd_models)

    from leukgui.cli_training import add_parsers

    add_parsers(sub)
    return parser


_COMMANDS = ("analyze", "models", "train", "evaluate")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `leukgui` command."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if not argv or (argv[0] not in _COMMANDS and not argv[0].startswith("-")):
        # No command: the desktop app (folders given on the command line are opened).
        from leukgui.gui.app import main as gui_main

        return gui_main(argv)
    args = parser.parse_args(argv)
    if args.self_test:
        from leukgui.gui.app import self_test

        return self_test()
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    if getattr(args, "batch_size", 1) < 1:
        parser.error("--batch-size must be at least 1")
    return int(args.func(args, sys.stdout, sys.stderr))


if __name__ == "__main__":
    sys.exit(main())
