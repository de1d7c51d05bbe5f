"""`leukgui analyze`, `leukgui models` and `leukgui --self-test`: using models.

TensorFlow is imported only when a command needs the network, so `leukgui models` and
`--help` answer at once.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
import tempfile
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
    add_runtime_options,
    clean,
    ctrl_c_cancels,
    load_model,
    start_runtime,
)
from leukgui.core.atomic import try_lock, unlock
from leukgui.core.engine import IMAGE_KINDS, AnalysisOptions, analyze_paths, parse_um_per_px
from leukgui.core.formatting import percent
from leukgui.core.imaging import DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS, IMAGE_SUFFIXES
from leukgui.core.results import DEMO_NOTICE, CancelToken
from leukgui.core.runtimes import AUTO, TENSORFLOW, RuntimeUnavailable, check_choice
from leukgui.core.text import display_path

__all__ = [
    "add_parsers",
    "cmd_analyze",
    "cmd_models",
    "cmd_runtimes",
    "cmd_self_test",
]

EXIT_CODES_HELP = f"""\
exit codes:
  {EXIT_OK}    every input was analyzed
  {EXIT_SOME_ERRORS}    finished, but some inputs could not be analyzed (listed in the report)
  {EXIT_USAGE}    the command line was wrong
  {EXIT_NO_IMAGES}    no images were found in the inputs
  {EXIT_MODEL}    the model could not be found or failed its checks
  {EXIT_REPORT}    the report could not be written: every earlier report, CSV and heatmap is
       left intact, unless the message names the files that are new; also when another
       run is writing the same --out
  {EXIT_INTERRUPTED}  cancelled with Ctrl-C; the cells finished so far are still reported (a
       Ctrl-C while the report is being written lets it finish; a second one aborts
       and leaves the earlier report intact)
"""

ANALYZE_EXAMPLES = """\
examples:
  leukgui analyze resources/samples --out report.xlsx
  leukgui analyze D:\\cells\\patient7 E:\\more --model efficientnetb0-demo --out p7.xlsx \\
      --csv --heatmaps p7-heatmaps
"""


def _um_per_px_arg(text: str) -> float | None:
    """--um-per-px: "auto" (measured on every field) or µm per image pixel; an absurd value
    is a usage error with the reason (`field_scale.check_um_per_px`)."""
    try:
        return parse_um_per_px(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _default_report_name() -> Path:
    return Path(f"leukgui-report-{datetime.now():%Y%m%d-%H%M%S}.xlsx")


EXPORT_CANCEL_MESSAGE = (
    "Finishing the report first (Ctrl-C again to abort; the previous report files are then "
    "left as they were)..."
)


def _new_file_mode() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def _os_reason(exc: OSError) -> str:
    if isinstance(exc, PermissionError):
        return "the file is open in another program or you do not have permission to replace it"
    text = exc.strerror or str(exc) or type(exc).__name__
    return text[:1].lower() + text[1:]


class _ReportLock:
    """An OS lock on `<report>.lock`, held while one run writes a report, so that a second
    run aimed at the same file stops at once with a clear message instead of silently
    overwriting the first one's report. The operating system drops the lock when the process
    ends (crash or kill included), so a leftover lock file never blocks a later run; the file
    is removed on release."""

    def __init__(self, report: Path) -> None:
        self.path = report.with_name(report.name + ".lock")
        self._fd: int | None = None

    def acquire(self) -> bool:
        """True when this run holds the lock, False when another run does; OSError when the
        lock file cannot be created (missing or read-only folder)."""
        for _ in range(20):
            fd = try_lock(self.path)
            if fd is None:
                return False
            if sys.platform != "win32":
                # The run that held it may have removed the file after we opened it: then we
                # locked a deleted file and must lock the one now at the path instead.
                try:
                    same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
                except OSError:
                    same = False
                if not same:
                    unlock(fd)
                    continue
            self._fd = fd
            return True
        return False

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        if sys.platform == "win32":
            unlock(fd)
            with contextlib.suppress(OSError):  # another run may have it open: it stays
                self.path.unlink()
        else:
            with contextlib.suppress(OSError):  # removed while locked; see acquire()
                self.path.unlink()
            unlock(fd)


class _Outputs:
    """All files of one run, written to temporary names beside their targets and swapped in
    together at the end, so the xlsx, the CSV and the heatmaps always come from one run."""

    def __init__(self, report: Path, csv: bool, heatmaps: str | None) -> None:
        # (what, the path the user named, the real file written: through a symlink)
        self.targets: list[tuple[str, Path, Path]] = [
            ("report", report, Path(os.path.realpath(report)))
        ]
        if csv:
            named = report.with_suffix(".csv")
            self.targets.append(("CSV", named, Path(os.path.realpath(named))))
        if heatmaps:
            self.targets.append(("heatmaps", Path(heatmaps), Path(os.path.realpath(heatmaps))))
        self.temps: dict[str, Path] = {}
        self.new: list[str] = []  # descriptions of the outputs now in place
        self.heatmap_count = 0

    def temp_for(self, what: str, named: Path, real: Path) -> Path:
        if what == "heatmaps":
            real.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(dir=real.parent, prefix=f".{real.name}.new-"))
        else:
            fd, name = tempfile.mkstemp(
                dir=real.parent, prefix=f".{real.stem}.new-", suffix=named.suffix
            )
            os.close(fd)
            tmp = Path(name)
        self.temps[what] = tmp
        return tmp

    def discard(self) -> None:
        """Remove every temporary file not (yet) moved into place."""
        for tmp in self.temps.values():
            if tmp.is_dir():
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    tmp.unlink()
        self.temps.clear()

    def check_replaceable(self) -> None:
        """On Windows a file open in Excel cannot be replaced: find out before replacing any
        file, so that a locked CSV does not leave a new report beside an old CSV."""
        if sys.platform != "win32":
            return
        for what, named, real in self.targets:
            if what != "heatmaps" and real.is_file():
                try:
                    with open(real, "r+b"):
                        pass
                except OSError as exc:
                    raise ReportSwapError(f"cannot replace {named}: {_os_reason(exc)}") from exc

    def swap(self) -> None:
        """Move every temporary output onto its target (report first, heatmaps last)."""
        for what, named, real in self.targets:
            tmp = self.temps[what]
            if what == "heatmaps":
                self._move_heatmaps(tmp, named, real)
            else:
                try:
                    mode = real.stat().st_mode & 0o777 if real.exists() else _new_file_mode()
                    os.chmod(tmp, mode)
                except OSError:
                    pass  # permissions are a nicety
                try:
                    _replace(tmp, real)
                except OSError as exc:
                    raise ReportSwapError(f"cannot replace {named}: {_os_reason(exc)}") from exc
                self.new.append(f"{what} {named}")
            del self.temps[what]

    def _move_heatmaps(self, tmp: Path, named: Path, real: Path) -> None:
        files = sorted(p for p in tmp.rglob("*") if p.is_file())
        moved = 0
        try:
            for source in files:
                target = real / source.relative_to(tmp)
                target.parent.mkdir(parents=True, exist_ok=True)
                _replace(source, target)
                moved += 1
        except OSError as exc:
            if moved:
                self.new.append(f"{moved} of {len(files)} heatmaps in {named}")
            raise ReportSwapError(
                f"cannot move the heatmaps into {named}: {_os_reason(exc)}"
            ) from exc
        shutil.rmtree(tmp, ignore_errors=True)
        self.heatmap_count = len(files)
        self.new.append(f"heatmaps {named}")


class ReportSwapError(Exception):
    """A finished output could not be moved onto its target; str() is the reason."""


def _replace(src: Path, dst: Path) -> None:
    # Windows (antivirus, search indexer) can hold a fresh file for a moment: retry.
    tries = 5 if sys.platform == "win32" else 1
    for attempt in range(tries):
        try:
            os.replace(src, dst)
            return
        except PermissionError:
            if attempt == tries - 1:
                raise
            time.sleep(0.2)


def cmd_analyze(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """Classify the inputs with one model, write the report(s), print a one-line summary."""
    from leukgui.core.imaging import discover

    report_path = Path(args.out) if args.out else _default_report_name()
    if report_path.suffix.lower() != ".xlsx":
        err.write(f"leukgui: error: --out must name an .xlsx file, not {report_path}\n")
        return EXIT_USAGE
    try:
        check_choice(args.runtime)
    except RuntimeUnavailable as exc:
        err.write(f"leukgui: error: {exc}\n")
        return EXIT_USAGE
    options = AnalysisOptions(
        batch_size=args.batch_size,
        image_kind=args.image_kind,
        max_pixels=args.max_pixels,
        max_bytes=args.max_file_mib * 2**20,
        tta=bool(getattr(args, "tta", False)),
        detector={"um_per_px": getattr(args, "um_per_px", None)},
    )

    items, walk_errors = discover(args.inputs)
    if not items:
        for e in walk_errors:
            err.write(f"  {e.path}: {e.reason}\n")
        kinds = " ".join(IMAGE_SUFFIXES)
        err.write(f"leukgui: no images found in {', '.join(args.inputs)} (looked for {kinds})\n")
        return EXIT_NO_IMAGES

    # Claimed before the model loads: a second run aimed at the same report stops at once.
    lock = _ReportLock(Path(os.path.realpath(report_path)))
    try:
        claimed = lock.acquire()
    except OSError as exc:
        err.write(f"leukgui: cannot write report to {report_path}: {_os_reason(exc)}\n")
        return EXIT_REPORT
    if not claimed:
        err.write(
            f"leukgui: another leukgui run is writing {report_path} right now (lock file "
            f"{lock.path}); wait for it to finish or choose another --out\n"
        )
        return EXIT_REPORT
    try:
        return _analyze_and_report(args, report_path, options, (items, walk_errors), out, err)
    finally:
        lock.release()


def _analyze_and_report(
    args: argparse.Namespace,
    report_path: Path,
    options: AnalysisOptions,
    discovered: Any,
    out: TextIO,
    err: TextIO,
) -> int:
    model = args.model
    if model is None:  # the adopted model, when there is one and its file is there
        from leukgui.core.model_registry import current_bundle_path

        adopted = current_bundle_path()
        model = str(adopted) if adopted is not None else None
    bundle = load_model(
        model, err, "leukgui", announce=not args.quiet, keras=args.runtime == TENSORFLOW
    )
    if bundle is None:
        return EXIT_MODEL
    analyzer = start_runtime(bundle, args.runtime, args.precision, err, "leukgui")
    if analyzer is None:
        return EXIT_MODEL

    cancel = CancelToken()
    started = time.perf_counter()
    outputs = _Outputs(report_path, args.csv, args.heatmaps)
    try:
        with ctrl_c_cancels(cancel, err) as ctrl_c:
            with ProgressPrinter(err, enabled=not args.quiet and not args.no_progress) as printer:
                run = analyze_paths(
                    args.inputs,
                    analyzer,
                    options,
                    progress=printer,
                    cancel=cancel,
                    discovered=discovered,
                )
            elapsed = time.perf_counter() - started
            # From here the first Ctrl-C finishes the report (of what is done); a second one
            # aborts and leaves every previous file as it was.
            ctrl_c.message = EXPORT_CANCEL_MESSAGE
            if not args.quiet:
                err.write(f"Writing report {report_path} ...\n")
                err.flush()
            failure = _write_outputs(run, outputs, args, ctrl_c)
    except KeyboardInterrupt:
        outputs.discard()
        err.write("leukgui: aborted; no report written (any previous report is left as it was)\n")
        return EXIT_INTERRUPTED
    except BaseException:
        outputs.discard()
        raise

    from leukgui.core.metrics import sample_summary

    every = sample_summary(run)[-1]  # the "All samples" row
    state = "CANCELLED: " if run.info.cancelled else ""
    where = f"report {report_path}" if failure is None else "report NOT written"
    out.write(
        f"{state}{every.cells} cells: ALL {every.n_all} ({percent(every.all_fraction)} of "
        f"ALL+HEM), HEM {every.n_hem}, uncertain {every.n_uncertain}; {every.errors} errors; "
        f"{elapsed:.1f} s; {where}\n"
    )
    if failure is None and args.heatmaps and not args.quiet:
        err.write(f"Wrote {outputs.heatmap_count} heatmap overlays to {args.heatmaps}\n")
    if run.errors and not args.quiet:
        for e in run.errors[:10]:
            err.write(f"  error: {e.path}: {e.reason}\n")
        if len(run.errors) > 10:
            err.write(f"  ... and {len(run.errors) - 10} more (see the Errors sheet)\n")
    if failure is not None:
        err.write(failure)
        return EXIT_REPORT
    if run.info.cancelled:
        return EXIT_INTERRUPTED
    return EXIT_SOME_ERRORS if run.errors else EXIT_OK


def _write_outputs(
    run: Any, outputs: _Outputs, args: argparse.Namespace, ctrl_c: Any
) -> str | None:
    """Write every output of the run to temporary files, then swap them all in. None when all
    are in place, else the message that says what failed and exactly which files are new."""
    from leukgui.core.atomic import ReportWriteError
    from leukgui.core.exports import write_csv, write_heatmaps
    from leukgui.core.report import write_excel

    images = {"auto": None, "yes": True, "no": False}[args.images]
    kept = "nothing was replaced; every previous file is left as it was"
    current = outputs.targets[0]
    try:
        for current in outputs.targets:
            what, named, real = current
            tmp = outputs.temp_for(what, named, real)
            if what == "report":
                write_excel(run, tmp, images=images)
            elif what == "CSV":
                write_csv(run, tmp)
            else:
                write_heatmaps(run, tmp)
        outputs.check_replaceable()
    except (ReportWriteError, ReportSwapError, OSError) as exc:
        text = str(exc)
        for what, named, _real in outputs.targets:  # name the user's files, not temp files
            tmp = outputs.temps.get(what)
            if tmp is not None:
                text = text.replace(str(tmp), str(named))
        if isinstance(exc, OSError):  # a temporary file could not be created
            text = f"cannot write {current[0]} to {current[1]}: {_os_reason(exc)}"
        outputs.discard()
        return f"leukgui: {text}; {kept}\n"
    # The swap takes milliseconds and must not stop half-way; after it nothing is left to
    # abort, so a later Ctrl-C only says that the command is finishing.
    ctrl_c.abortable = False
    try:
        outputs.swap()
    except ReportSwapError as exc:
        outputs.discard()
        if not outputs.new:
            return f"leukgui: {exc}; {kept}\n"
        return (
            f"leukgui: {exc}. New from this run: {', '.join(outputs.new)}; every other "
            "output is NOT from this run (left as it was, or missing)\n"
        )
    return None


def cmd_models(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """List the installed models (a table, or JSON with --json)."""
    from leukgui.core.bundle import find_bundles
    from leukgui.core.inference_graph import INFERENCE_KEY
    from leukgui.core.model_registry import RegistryError, history
    from leukgui.core.paths import bundled_models_dir, user_models_dir

    if args.upgrade is not None:
        return _upgrade_model(args.upgrade, args.out, out, err)
    if getattr(args, "adopt", None) is not None:
        return _adopt_model(args, out, err)
    found, broken = find_bundles()
    try:
        adoptions = history()
    except RegistryError as exc:
        err.write(clean(f"leukgui models: {exc}\n"))
        adoptions = []
    in_use = adoptions[-1] if adoptions else None
    adopted = {a.sha256 for a in adoptions}
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
                "inference_graph": INFERENCE_KEY in b.manifest,
                "path": str(b.path),
                "adopted": b.sha256 in adopted,
                "in_use": in_use is not None and b.sha256 == in_use.sha256,
                "lineage": b.lineage,
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
        lineage = [(b, b.lineage) for b in found if b.lineage]
        for b, text in lineage:
            out.write(clean(f"{b.name} v{b.version}: {text}\n"))
        new = [b for b in found if b.source == "user" and b.sha256 not in adopted]
        for b in new:
            out.write(clean(f"{b.name} v{b.version}: new — not adopted (see --adopt)\n"))
        out.write(clean(_in_use_text(in_use) + "\n"))
    for path, reason in broken:
        reason = reason.removeprefix(f"{path.name}: ")  # the path is said once
        err.write(clean(f"unusable model file {display_path(path)}: {reason}\n"))
    return EXIT_OK


def _in_use_text(adoption: Any) -> str:
    if adoption is None:
        return (
            "In use: no model adopted yet (the default model is used: the newest non-demo "
            "model, else the demo model)"
        )
    text = (
        f"In use: {adoption.name} v{adoption.version} ({adoption.sha256}), adopted by "
        f"{adoption.who} on {adoption.when_text}"
    )
    if not Path(adoption.path).is_file():
        text += f" — its file {adoption.path} is gone; the default model is used"
    return text


def _in_models_folder(path: Path) -> bool:
    from leukgui.core.paths import bundled_models_dir, user_models_dir

    folder = Path(path).resolve().parent
    return any(folder == d.resolve() for d in (bundled_models_dir(), user_models_dir()))


def _installed_for_adoption(info: Any, out: TextIO, err: TextIO) -> Any:
    """A model file from elsewhere (e.g. `train --out DIR`) is installed into the models
    folder before it is adopted, so `leukgui models` and the window list the model in use;
    a clash with an installed model of the same name and version is refused (None)."""
    from leukgui.core.bundle import BundleError, BundleInfo, install_bundle, read_manifest

    try:
        outcome = install_bundle(info.path)
    except BundleError as exc:
        err.write(clean(f"leukgui models: {exc}\n"))
        return None
    if not outcome.installed:
        where = display_path(info.path)
        err.write(clean(f"leukgui models: {where} not adopted: {outcome.reason}\n"))
        return None
    out.write(clean(f"Installed {display_path(info.path)} as {display_path(outcome.target)}\n"))
    return BundleInfo(path=outcome.target, manifest=read_manifest(outcome.target), source="user")


def _adopt_model(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """`models --adopt NAME|FILE --reviewer NAME [--yes]`: show the comparison, confirm,
    record the adoption in the lab's model registry."""
    from leukgui.core.bundle import BundleError, choose_bundle
    from leukgui.core.model_registry import RegistryError, adopt, comparison_lines

    reviewer = " ".join(str(args.reviewer or "").split())
    if not reviewer:
        err.write("leukgui models: --adopt needs --reviewer NAME (who decides)\n")
        return EXIT_USAGE
    try:
        info = choose_bundle(args.adopt)
    except BundleError as exc:
        err.write(clean(f"leukgui models: {exc}\n"))
        return EXIT_MODEL
    if info.source == "file" and not _in_models_folder(info.path):
        info = _installed_for_adoption(info, out, err)  # listed, like every model in use
        if info is None:
            return EXIT_MODEL
    out.write(clean(f"{info.name} v{info.version} ({info.backbone}), SHA-256 {info.sha256}\n"))
    out.write(clean(f"Lineage: {info.lineage or 'not fine-tuned from another model'}\n"))
    lines = comparison_lines(info.manifest)
    if lines:
        out.write("Parent vs new model:\n")
        for line in lines:
            out.write(clean(f"  {line}\n"))
    else:
        out.write("No comparison with a parent model is recorded in this model file.\n")
    if not args.yes:
        out.write(f"Use {info.name} {info.version} for the next analyses? [y/N] ")
        out.flush()
        answer = sys.stdin.readline().strip().lower()
        if answer not in ("y", "yes"):
            out.write("Nothing was changed.\n")
            return EXIT_OK
    try:
        adoption = adopt(info, reviewer)
    except RegistryError as exc:
        err.write(clean(f"leukgui models: {exc}\n"))
        return EXIT_MODEL
    out.write(
        clean(
            f"Adopted {adoption.name} v{adoption.version} by {adoption.who} on "
            f"{adoption.when_text}; it is the model in use for the next analyses.\n"
        )
    )
    return EXIT_OK


def _upgrade_model(old: Path, new: Path | None, out: TextIO, err: TextIO) -> int:
    """`models --upgrade OLD --out NEW`: a lab's model from before manifests were hashed,
    made usable again by the person who knows where it came from (never done silently)."""
    from leukgui.core.bundle import BundleError, read_manifest, upgrade_bundle

    if new is None:
        err.write("leukgui models: --upgrade needs --out NEW.leukmodel\n")
        return EXIT_USAGE
    try:
        upgrade_bundle(old, new)
        manifest = read_manifest(new)
    except FileExistsError as exc:
        err.write(f"leukgui models: {clean(str(exc))}\n")
        return EXIT_USAGE
    except (BundleError, OSError, ValueError, KeyError) as exc:
        name = clean(display_path(old))
        err.write(f"leukgui models: {name} cannot be upgraded: {clean(str(exc))}\n")
        return EXIT_MODEL
    out.write(
        clean(
            f"Wrote {display_path(new)}: {manifest['name']} v{manifest['version']} "
            f"({manifest['backbone']}), threshold {manifest['decision_threshold']}, "
            f"{'DEMO' if manifest.get('demo') else 'not a demo'}, "
            f"model SHA-256 {manifest['bundle_sha256']}.\n"
            "The old file's manifest was not covered by any hash: check these values against "
            "what the model was trained and validated with before analyzing with it.\n"
        )
    )
    return EXIT_OK


def cmd_runtimes(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """List the runtimes and devices here, start each on a model and run its self-check."""
    from leukgui.core.runtimes import ENGINES, check_all, gpu_paths_missing, installed_engines

    wanted_engine, _, wanted_device = (args.require or "").partition(":")
    if args.require and wanted_engine.lower() not in ENGINES:
        err.write(
            f"leukgui runtimes: error: --require {args.require!r}: the engine must be one of "
            f"{', '.join(ENGINES)} (then optionally :DEVICE, e.g. onnx:DirectML)\n"
        )
        return EXIT_USAGE
    bundle = load_model(args.model, err, "leukgui runtimes", keras=False)
    if bundle is None:
        return EXIT_MODEL
    results = check_all(
        bundle.backbone, bundle.inference_graph, bundle.keras_model, precision=args.precision
    )
    chosen = next((r for r in results if r.passed), None)
    missing = gpu_paths_missing()
    not_installed = [e for e in ENGINES if e not in installed_engines()]
    if args.json:
        rows = [
            {
                "engine": r.candidate.engine,
                "device": r.device,
                "gpu": r.candidate.gpu,
                "precision": r.precision,
                "description": r.description,
                "passed": r.passed,
                "problem": r.problem,
                "auto_choice": r is chosen,
            }
            for r in results
        ]
        listing = {
            "model": {"name": bundle.name, "version": bundle.version, "sha256": bundle.sha256},
            "installed": installed_engines(),
            "not_installed": not_installed,
            "runtimes": rows,
            "gpu_paths_missing": missing,
        }
        out.write(json.dumps(listing, indent=2) + "\n")
    else:
        out.write(f"Model: {bundle.name} v{bundle.version} ({bundle.backbone})\n")
        out.write(
            "Runtimes, in the order 'auto' tries them (each checked on the model's probe cells):\n"
        )
        for r in results:
            status = "ok " if r.passed else "no "
            why = f": {r.problem}" if r.problem else ""
            mine = "   <- auto uses this" if r is chosen else ""
            out.write(f"  {status} {r.description}{why}{mine}\n")
        for engine in not_installed:
            out.write(f"  no  {engine}: not installed\n")
        if missing:
            out.write("GPU paths not available here:\n")
            for line in missing:
                out.write(f"  -   {line}\n")
    if args.require:
        wanted = [
            r
            for r in results
            if r.candidate.engine == wanted_engine.lower()
            and (not wanted_device or wanted_device.lower() in r.description.lower())
        ]
        if not wanted:
            err.write(f"leukgui runtimes: the required runtime {args.require!r} is not here\n")
            return EXIT_SOME_ERRORS
        if not any(r.passed for r in wanted):
            err.write(f"leukgui runtimes: the required runtime {args.require!r} did not pass\n")
            return EXIT_SOME_ERRORS
    return EXIT_OK if chosen is not None else EXIT_MODEL


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
        "default: the adopted model (see 'leukgui models --adopt'), else the newest "
        "non-demo model, else the demo model",
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
        "--max-file-mib",
        type=int,
        default=DEFAULT_MAX_BYTES // 2**20,
        metavar="MIB",
        help="refuse image files larger than MIB mebibytes, from their size alone "
        f"(default {DEFAULT_MAX_BYTES // 2**20})",
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
    analyze.add_argument(
        "--um-per-px",
        dest="um_per_px",
        type=_um_per_px_arg,
        default=None,
        metavar="X|auto",
        help="smear fields: micrometres per image pixel of your microscope and camera (camera "
        "pixel size / (objective x coupler), e.g. 0.069 for 3.45 um pixels, 100x, 0.5x); "
        "auto measures it on every field from its red cells (default auto). The report "
        "gives each field's scale and where it came from",
    )
    # The option's first name, kept (out of --help) so existing scripts still run.
    analyze.add_argument("--fields", dest="image_kind", choices=IMAGE_KINDS, help=argparse.SUPPRESS)
    analyze.add_argument(
        "--tta",
        action="store_true",
        help="test-time augmentation: P(ALL) is the mean over 8 views of each cell (flips and "
        "90-degree rotations); about 8 times slower, the heatmap is the unturned cell's",
    )
    add_runtime_options(analyze)
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
    models.add_argument(
        "--upgrade",
        metavar="OLD",
        type=Path,
        help="rewrite a model file from an older LeukGUI (format 1) in the current format, "
        "with its weights checked and its manifest, as it stands, covered by the new hash; "
        "needs --out. Check the model card of the result before using it.",
    )
    models.add_argument("--out", type=Path, help="where --upgrade writes the new model file")
    models.add_argument(
        "--adopt",
        metavar="NAME|FILE",
        help="make this model the one in use for the next analyses: shows its lineage and "
        "parent-vs-new comparison, asks for confirmation and records who adopted it and when",
    )
    models.add_argument("--reviewer", metavar="NAME", help="who adopts the model (with --adopt)")
    models.add_argument(
        "--yes", action="store_true", help="with --adopt: do not ask for confirmation"
    )
    models.set_defaults(func=cmd_models)

    runtimes = sub.add_parser(
        "runtimes",
        help="list the inference runtimes here and check each on a model",
        description="Start every inference runtime and device found here (GPUs first, then "
        "the CPU engines fastest first) on a model, and run each one's self-check: the probe "
        "cells the model file carries, whose P(ALL) and heatmaps must match TensorFlow's.",
    )
    runtimes.add_argument(
        "--model", metavar="NAME|FILE", help="model to check (default as analyze)"
    )
    runtimes.add_argument("--json", action="store_true", help="machine-readable output")
    runtimes.add_argument(
        "--require",
        metavar="ENGINE[:DEVICE]",
        help="exit 1 unless this runtime passes, e.g. onnx:DirectML (for release checks)",
    )
    runtimes.add_argument(
        "--precision",
        choices=(AUTO, "fp32"),
        default=AUTO,
        help="auto: OpenVINO in bf16 where the CPU supports it; fp32: check full precision",
    )
    runtimes.set_defaults(func=cmd_runtimes)
