"""`leukgui analyze`, `leukgui models` and `leukgui --self-test`: using models.

TensorFlow is imported only when a command needs the network, so `leukgui models` and
`--help` answer at once.
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

from leukgui.cli.console import (
    EXIT_INTERRUPTED,
    EXIT_MODEL,
    EXIT_NO_IMAGES,
    EXIT_OK,
    EXIT_REPORT,
    EXIT_SOME_ERRORS,
    EXIT_USAGE,
    ProgressPrinter,
    ctrl_c_cancels,
    load_model,
)
from leukgui.core.engine import IMAGE_KINDS, AnalysisOptions, analyze_paths
from leukgui.core.formatting import percent
from leukgui.core.imaging import DEFAULT_MAX_PIXELS, IMAGE_SUFFIXES
from leukgui.core.results import DEMO_NOTICE, CancelToken

__all__ = ["add_parsers", "cmd_analyze", "cmd_models", "cmd_self_test"]

EXIT_CODES_HELP = f"""\
exit codes:
  {EXIT_OK}    every input was analyzed
  {EXIT_SOME_ERRORS}    finished, but some inputs could not be analyzed (listed in the report)
  {EXIT_USAGE}    the command line was wrong
  {EXIT_NO_IMAGES}    no images were found in the inputs
  {EXIT_MODEL}    the model could not be found or failed its checks
  {EXIT_REPORT}    the report could not be written (an older report is left intact)
  {EXIT_INTERRUPTED}  interrupted with Ctrl-C; the cells finished so far are still reported
"""

ANALYZE_EXAMPLES = """\
examples:
  leukgui analyze resources/samples --out report.xlsx
  leukgui analyze D:\\cells\\patient7 E:\\more --model efficientnetb0-demo --out p7.xlsx \\
      --csv --heatmaps p7-heatmaps
"""


def _default_report_name() -> Path:
    return Path(f"leukgui-report-{datetime.now():%Y%m%d-%H%M%S}.xlsx")


def cmd_analyze(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """Classify the inputs with one model, write the report(s), print a one-line summary."""
    from leukgui.core.atomic import ReportWriteError
    from leukgui.core.imaging import discover

    report_path = Path(args.out) if args.out else _default_report_name()
    if report_path.suffix.lower() != ".xlsx":
        err.write(f"leukgui: error: --out must name an .xlsx file, not {report_path}\n")
        return EXIT_USAGE
    options = AnalysisOptions(
        batch_size=args.batch_size, image_kind=args.image_kind, max_pixels=args.max_pixels
    )

    items, walk_errors = discover(args.inputs)
    if not items:
        for e in walk_errors:
            err.write(f"  {e.path}: {e.reason}\n")
        kinds = " ".join(IMAGE_SUFFIXES)
        err.write(f"leukgui: no images found in {', '.join(args.inputs)} (looked for {kinds})\n")
        return EXIT_NO_IMAGES

    bundle = load_model(args.model, err, "leukgui", announce=not args.quiet)
    if bundle is None:
        return EXIT_MODEL

    cancel = CancelToken()
    started = time.perf_counter()
    try:
        with (
            ctrl_c_cancels(cancel, err),
            ProgressPrinter(err, enabled=not args.quiet and not args.no_progress) as printer,
        ):
            run = analyze_paths(
                args.inputs,
                bundle,
                options,
                progress=printer,
                cancel=cancel,
                discovered=(items, walk_errors),
            )
    except KeyboardInterrupt:
        err.write("leukgui: aborted; no report written\n")
        return EXIT_INTERRUPTED
    elapsed = time.perf_counter() - started

    from leukgui.core.exports import write_csv, write_heatmaps
    from leukgui.core.metrics import sample_summary
    from leukgui.core.report import write_excel

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

    every = sample_summary(run)[-1]  # the "All samples" row
    state = "CANCELLED: " if run.info.cancelled else ""
    out.write(
        f"{state}{every.cells} cells: ALL {every.n_all} ({percent(every.all_fraction)} of "
        f"ALL+HEM), HEM {every.n_hem}, uncertain {every.n_uncertain}; {every.errors} errors; "
        f"{elapsed:.1f} s; report {report_path}\n"
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
    """List the installed models (a table, or JSON with --json)."""
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
        out.write(f"No models in {bundled_models_dir()} or {user_models_dir()}\n")
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
        err.write(f"unreadable model file {path}: {reason}\n")
    return EXIT_OK


def cmd_self_test(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """The installation check: the window, offscreen, analyzes the bundled samples."""
    from leukgui.gui.app import self_test  # the entry point dispatches up to the GUI

    return self_test(out)


def add_parsers(parser: argparse.ArgumentParser, sub: Any) -> None:
    """Register `--self-test` on the main parser and `analyze` / `models` on its commands."""
    parser.add_argument(
        "--self-test",
        action="store_true",
        help="open the window offscreen, analyze the bundled samples, export and check a "
        "report; exit 0 when all worked",
    )
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
        help="model name (see 'leukgui models') or a .leukmodel file; "
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
        dest="image_kind",
        choices=IMAGE_KINDS,
        default="auto",
        help="auto: decide per image whether it is a single-cell crop on black or a whole "
        "smear field whose white cells are found and cropped; cells / fields: treat every "
        "image as one (default auto)",
    )
    # The option's first name, kept (out of --help) so existing scripts still run.
    analyze.add_argument("--fields", dest="image_kind", choices=IMAGE_KINDS, help=argparse.SUPPRESS)
    analyze.add_argument("--no-progress", action="store_true", help="no progress bar")
    analyze.add_argument(
        "-q", "--quiet", action="store_true", help="print only the one-line summary and errors"
    )
    analyze.set_defaults(func=cmd_analyze)

    models = sub.add_parser(
        "models",
        help="list the installed models",
        description="List the models in the bundled models folder and your own models "
        "folder, with name, version, backbone, input size and the SHA-256 of the weights.",
    )
    models.add_argument("--json", action="store_true", help="machine-readable output")
    models.set_defaults(func=cmd_models)
