"""`leukgui train` and `leukgui evaluate`: the training module's front end."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any, TextIO

from leukgui.cli.console import (
    EXIT_INTERRUPTED,
    EXIT_MODEL,
    EXIT_NO_DATA,
    EXIT_OK,
    EXIT_REPORT,
    EXIT_SOME_ERRORS,
    EXIT_USAGE,
    ProgressPrinter,
    add_runtime_options,
    ctrl_c_cancels,
    load_model,
    start_runtime,
)
from leukgui.core.formatting import edges_text, percent
from leukgui.core.results import CancelToken

__all__ = ["TrainingPrinter", "add_parsers", "cmd_evaluate", "cmd_train"]

TRAIN_EXAMPLES = """\
examples:
  leukgui train C-NMC_Leukemia/training_data --backbone efficientnetb0 --weights imagenet \\
      --out models/
  leukgui train my_cells/ --backbones vgg16,resnet50,efficientnetb0 --epochs 30 --out models/
  leukgui train C-NMC_Leukemia/training_data --train-folds 0,1 --validation-folds 2 \\
      --test-data C-NMC_Leukemia/validation_data --out models/
  leukgui train lab-dataset/dataset.csv --init-from efficientnetb0-2026-11-25 --out models/
      (fine-tune the current model on your own reviewed cells; the new model records its parent)

data layouts: C-NMC training_data (fold_N/all|hem), the C-NMC preliminary test folder with its
labels CSV, class folders all/ and hem/ (or --class-map), ALL-IDB2 (ImNNN_L.tif), or a CSV
with path,label[,subject]. Cells are split by subject, never silently by image: when subjects
are unknown, give them (--subject-folder, --subject-pattern, a CSV subject column) or accept
an optimistic split with --split-by image.

scores: every score says which part it is from. The test part is held out; validation chose
the best epoch, the threshold and the band. Intervals are 95% bootstrap intervals over
subjects; subject-level results come first. With several backbones the model is chosen on
validation, and compared with the others on the same test subjects (paired bootstrap and
McNemar's test).

exit codes:
  0    trained and saved      4  model/weights problem
  3    no labelled cells, too few subjects per class, subjects unknown (see --split-by),
       or the same image in two parts
  2    bad command line       5  a report could not be written
  130  cancelled with Ctrl-C (the best epoch so far is still saved, marked CANCELLED)
"""

TRAIN_CANCEL_MESSAGE = (
    "Cancelling after the current batch; the best epoch so far will be saved "
    "(Ctrl-C again to abort without saving)..."
)

EVALUATE_EXAMPLES = """\
examples:
  leukgui evaluate models/efficientnetb0-2026-11-25.leukmodel \\
      C-NMC_Leukemia/validation_data --out eval.xlsx
  leukgui evaluate efficientnetb0-demo resources/samples --out demo-eval.xlsx
"""


def _class_map(text: str | None) -> dict[str, str] | None:
    """'blast=ALL,normal=HEM' -> {'blast': 'ALL', 'normal': 'HEM'}."""
    if not text:
        return None
    out = {}
    for item in text.split(","):
        folder, sep, label = item.partition("=")
        if not sep or not folder.strip() or not label.strip():
            raise argparse.ArgumentTypeError(
                f"--class-map entries are FOLDER=ALL|HEM, not {item!r}"
            )
        out[folder.strip()] = label.strip().upper()
    return out


def _folds(text: str | None) -> tuple[str, ...]:
    return tuple(f.strip() for f in text.split(",") if f.strip()) if text else ()


def _recorded_split(bundle: str) -> dict:
    """The split a model file recorded (`--split-from`), or ValueError saying why not."""
    from leukgui.core.bundle import BundleError, read_manifest

    try:
        manifest = read_manifest(bundle)
    except (BundleError, OSError) as exc:
        raise ValueError(f"--split-from {bundle}: {exc}") from None
    split = (manifest.get("training_data") or {}).get("split")
    if not isinstance(split, dict):
        raise ValueError(f"--split-from {bundle}: the model file records no split")
    return split


def _parent(args: argparse.Namespace) -> Any:
    """`--init-from MODEL` resolved as `--model` is (a name, `name-vVERSION` or a file) and
    checked against the options it fixes; ValueError (a usage error) saying which clash."""
    from leukgui.core.backbones import get_spec
    from leukgui.core.bundle import BundleError, choose_bundle, load_bundle

    clashes = [
        flag
        for flag, given in (
            ("--backbones", bool(args.backbones)),
            ("--weights", args.weights is not None),
            ("--stain", args.stain != "none"),
            ("--mixed-precision", args.mixed_precision),
            ("--cv", bool(args.cv)),
        )
        if given
    ]
    try:
        # verified as any model is (weights hash, manifest identity); Keras loads it later
        info = load_bundle(choose_bundle(args.init_from).path, keras=False)
    except (BundleError, OSError) as exc:
        raise ValueError(f"--init-from {args.init_from}: {exc}") from None
    if args.backbone is not None and get_spec(args.backbone).name != info.backbone:
        clashes.append(f"--backbone {args.backbone} (the parent is a {info.backbone})")
    size = int(info.manifest["input_size"])
    if args.input_size is not None and args.input_size != size:
        clashes.append(f"--input-size {args.input_size} (the parent takes {size} px)")
    if clashes:
        raise ValueError(
            f"--init-from {args.init_from} starts from that model's weights, backbone, input "
            "size, preprocessing and stain normalisation; it cannot be combined with "
            + ", ".join(clashes)
        )
    return info


def _interval(ev: Any, key: str) -> str:
    boot = getattr(getattr(ev, "intervals", None), "intervals", {}) or {}
    low, high = boot.get(key, (float("nan"), float("nan")))
    if low != low or high != high:  # NaN: too few subjects for an interval
        return ""
    return f" (95% CI {percent(low)}-{percent(high)})"


def score_line(ev: Any) -> str:
    """One part's scores in a line: subjects first, then cells with subject-bootstrap CIs."""
    from training.stats import few_subjects

    m = ev.metrics
    parts = [f"{m.n} cells of {len(ev.subjects)} subjects"]
    level = getattr(ev, "subject_level", None)
    if level is not None:
        sm = level.metrics
        parts.append(f"subjects right {sm.tp + sm.tn}/{sm.n}")
    parts.append(
        f"balanced accuracy {percent(m.balanced_accuracy)}{_interval(ev, 'balanced_accuracy')}"
    )
    parts.append(f"sensitivity {percent(m.recall)}, specificity {percent(m.specificity)}")
    if getattr(m, "weighted_f1", None) is not None:
        parts.append(f"weighted F1 {percent(m.weighted_f1)}")
    parts.append(f"AUC {m.roc_auc:.3f}")
    if few_subjects(level):
        parts.append("few subjects: the intervals understate the uncertainty")
    return ", ".join(parts)


def _cross_validate(
    args: argparse.Namespace,
    scan: Any,
    backbones: list[str],
    config: Any,
    out_dir: Path,
    cancel: CancelToken,
    say: Any,
    out: TextIO,
    err: TextIO,
) -> int:
    """`leukgui train --cv K [--repeats R]`: every backbone on the same subject folds."""
    from training.crossval import CV_METRICS, cross_validate
    from training.run import subjects_unknown_message
    from training.splits import SplitError

    if args.test_data or args.train_folds or args.validation_folds or args.split_from:
        err.write(
            "leukgui train: error: --cv makes its own folds; it cannot be combined with "
            "--test-data, --train-folds/--validation-folds or --split-from\n"
        )
        return EXIT_USAGE
    if scan.image_subjects and args.split_by != "image":
        err.write(
            f"leukgui train: {subjects_unknown_message(scan.image_subjects, len(scan.records))}\n"
        )
        return EXIT_NO_DATA
    try:
        with ctrl_c_cancels(cancel, err, TRAIN_CANCEL_MESSAGE):
            result = cross_validate(
                scan.records,
                backbones,
                config,
                out_dir,
                folds=args.cv,
                repeats=args.repeats,
                seed=args.seed,
                validation=args.validation,
                progress=TrainingPrinter(err, quiet=args.quiet),
                cancel=cancel,
                log=say,
                source=str(Path(args.data).absolute()),
            )
    except KeyboardInterrupt:
        err.write("leukgui train: aborted\n")
        return EXIT_INTERRUPTED
    except SplitError as exc:  # too few subjects per class for the folds
        err.write(f"leukgui train: {exc}\n")
        return EXIT_NO_DATA
    except ValueError as exc:
        err.write(f"leukgui train: {exc}\n")
        return EXIT_USAGE
    for backbone in backbones:
        figures = []
        for key, name, _ in CV_METRICS:
            s = result.summary(backbone, key)
            figures.append(
                f"{name} {s['mean']:.3f} ± {s['sd']:.3f} ({s['min']:.3f}-{s['max']:.3f})"
            )
        out.write(
            f"{backbone}: {result.summary(backbone, 'balanced_accuracy')['n']} folds; "
            + "; ".join(figures)
            + "\n"
        )
    if result.xlsx:
        out.write(f"cross-validation: {result.xlsx} and {result.md}\n")
    return EXIT_INTERRUPTED if result.cancelled else EXIT_OK


class TrainingPrinter:
    """A batch progress line on a terminal and one line per epoch."""

    def __init__(self, stream: TextIO, quiet: bool = False) -> None:
        self.stream = stream
        self.quiet = quiet
        self.tty = hasattr(stream, "isatty") and stream.isatty()

    def __call__(self, p: Any) -> None:
        if self.quiet:
            return
        head = f"{p.backbone} {p.phase} epoch {p.epoch}/{p.epochs}"
        if p.kind == "batch":
            if self.tty:
                self.stream.write(
                    f"\r{head}: batch {p.batch}/{p.batches} loss {p.loss:.4f} "
                    f"acc {p.accuracy:.3f} {p.images_per_second:.1f} img/s   "
                )
                self.stream.flush()
            return
        e = p.epoch_log
        if self.tty:
            self.stream.write("\r")
        self.stream.write(
            f"{head}: loss {e.loss:.4f} acc {e.accuracy:.3f} | val loss {e.val_loss:.4f} "
            f"acc {e.val_accuracy:.3f} balanced {e.val_balanced_accuracy:.3f} "
            f"AUC {e.val_auc:.3f} | lr {e.learning_rate:.1e} {e.images_per_second:.1f} img/s "
            f"{e.seconds:.0f} s\n"
        )
        self.stream.flush()


def cmd_train(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from leukgui.core.atomic import ReportWriteError
    from leukgui.core.backbones import DEFAULT_BACKBONE, WeightsMissingError, get_spec
    from leukgui.core.bundle import BundleError
    from leukgui.core.paths import user_models_dir
    from training.datasets import parse_subject_rule, read_dataset
    from training.pipeline import Augmentation
    from training.run import SplitOptions, train_session
    from training.splits import DuplicateError, LeakageError, SplitError
    from training.trainer import INIT_FROM_DEFAULTS, TrainConfig

    names = args.backbones.split(",") if args.backbones else [args.backbone or DEFAULT_BACKBONE]
    try:
        parent = _parent(args) if args.init_from else None
        if parent is not None:
            names = [parent.backbone]
        backbones = [get_spec(n).name for n in names if n.strip()]
        class_map = _class_map(args.class_map)
        schedule = {"epochs": 30, "head_epochs": 5, "head_lr": 1e-3, "fine_tune_lr": 1e-4}
        if parent is not None:
            schedule.update(INIT_FROM_DEFAULTS)  # short and gentle: see TrainConfig

        def given(value: Any, key: str) -> Any:
            return schedule[key] if value is None else value

        config = TrainConfig(
            backbone=backbones[0],
            weights=args.weights or "imagenet",
            input_size=int(parent.manifest["input_size"]) if parent else args.input_size,
            batch_size=args.batch_size,
            epochs=given(args.epochs, "epochs"),
            head_epochs=given(args.head_epochs, "head_epochs"),
            head_lr=args.lr or schedule["head_lr"],
            fine_tune_lr=given(args.fine_tune_lr, "fine_tune_lr"),
            full_lr=args.lr,
            patience=args.patience,
            seed=args.seed,
            mixed_precision=args.mixed_precision,
            strategy=args.strategy,
            class_balance=args.balance,
            augmentation=Augmentation.none() if args.no_augment else Augmentation(),
            cache={"memory": True, "none": False}.get(args.cache, args.cache),
            name=args.name,
            calibrate=not args.no_calibration,
            stain="none" if args.stain == "both" else args.stain,
            bootstrap_resamples=args.bootstrap,
            inference_graph=not args.no_inference_graph,
            init_from=str(parent.path) if parent is not None else None,
        )
        subjects = parse_subject_rule(args.subject_folder, args.subject_pattern)
        split_from = _recorded_split(args.split_from) if args.split_from else None
    except (ValueError, argparse.ArgumentTypeError) as exc:
        err.write(f"leukgui train: error: {exc}\n")
        return EXIT_USAGE
    stains = ["none", "reinhard"] if args.stain == "both" else None
    if args.name and (len(backbones) > 1 or stains):
        err.write("leukgui train: error: --name works with one backbone and one --stain only\n")
        return EXIT_USAGE
    test_data = args.test_data
    if split_from is not None and test_data is None and split_from.get("test_source"):
        test_data = split_from["test_source"]  # the recorded split had a separate test set
    options = SplitOptions(
        validation=args.validation,
        test=args.test,
        seed=args.seed,
        train_folds=_folds(args.train_folds),
        validation_folds=_folds(args.validation_folds),
        test_folds=_folds(args.test_folds),
        split_by=args.split_by,
        split_from=split_from,
    )
    try:
        scan = read_dataset(args.data, class_map=class_map, subjects=subjects)
    except ValueError as exc:
        err.write(f"leukgui train: {exc}\n")
        return EXIT_NO_DATA
    if not scan.records:
        err.write(f"leukgui train: no labelled cells in {args.data}\n")
        return EXIT_NO_DATA
    out_dir = Path(args.out) if args.out else user_models_dir()
    cancel = CancelToken()
    started = time.perf_counter()
    say = (lambda msg: None) if args.quiet else (lambda msg: err.write(msg + "\n"))
    if args.cv:
        return _cross_validate(args, scan, backbones, config, out_dir, cancel, say, out, err)
    try:
        with ctrl_c_cancels(cancel, err, TRAIN_CANCEL_MESSAGE):
            session = train_session(
                scan,
                backbones,
                config,
                out_dir,
                split_options=options,
                test_data=test_data,
                class_map=class_map,
                subjects=subjects,
                stains=stains,
                progress=TrainingPrinter(err, quiet=args.quiet),
                cancel=cancel,
                log=say,
                source=str(Path(args.data).absolute()),
            )
    except KeyboardInterrupt:
        err.write("leukgui train: aborted; nothing saved\n")
        return EXIT_INTERRUPTED
    except (WeightsMissingError, BundleError) as exc:
        err.write(f"leukgui train: {exc}\n")
        return EXIT_MODEL
    except ReportWriteError as exc:
        err.write(f"leukgui train: {exc}\n")
        return EXIT_REPORT
    except LeakageError as exc:
        err.write(f"leukgui train: the split leaks subjects: {exc}\n")
        return EXIT_USAGE
    except SplitError as exc:  # too few subjects, subjects unknown: the Training tab's reason
        err.write(f"leukgui train: {exc}\n")
        return EXIT_NO_DATA
    except DuplicateError as exc:
        err.write(f"leukgui train: {exc}\n")
        return EXIT_NO_DATA
    except ValueError as exc:
        err.write(f"leukgui train: {exc}\n")
        return EXIT_USAGE
    for backbone, reason in session.failures:
        err.write(f"leukgui train: {backbone}: {reason}\n")
    for warning in session.warnings:
        out.write(f"WARNING: {warning}\n")
    for run in session.runs:
        state = "CANCELLED, best epoch so far: " if run.cancelled else ""
        out.write(f"{state}{run.bundle_path}; report {run.report_xlsx}\n")
        if parent is not None and run.bundle_path is not None:
            from leukgui.core.bundle import lineage_text, read_manifest

            out.write(f"  {lineage_text(read_manifest(run.bundle_path))}\n")
        if parent is not None and session.parent_comparison is not None:
            out.write(f"  parent vs new: {session.parent_comparison.verdict}\n")
        for ev, words in (
            (run.test, "test (held-out subjects)"),
            (run.validation, "validation (chose the epoch, threshold and band: not held-out)"),
        ):
            if ev is not None:
                out.write(f"  {words}: {score_line(ev)}\n")
        if run.test is None:
            out.write("  no test part: this model has no held-out scores\n")
        ref = run.validation or run.test
        if ref is not None:
            out.write(
                f"  threshold {ref.threshold:.3f}, uncertainty band "
                f"{edges_text(*ref.uncertainty_band, sep='-')}, temperature "
                f"{getattr(ref, 'temperature', 1.0):.3f}\n"
            )
    if len(session.runs) > 1:
        from training.comparison import choose_run, run_label

        chosen = choose_run(session.runs)
        if chosen is not None:
            out.write(
                f"chosen on validation: {run_label(session.runs[chosen])} "
                f"({session.runs[chosen].bundle_path})\n"
            )
    if session.comparison_md:
        out.write(f"comparison: {session.comparison_xlsx} and {session.comparison_md}\n")
    out.write(f"{time.perf_counter() - started:.0f} s\n")
    if session.cancelled:
        return EXIT_INTERRUPTED
    return EXIT_OK


def cmd_evaluate(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from leukgui.core.atomic import ReportWriteError
    from training.datasets import parse_subject_rule, read_dataset
    from training.evaluate import evaluate_bundle, seen_in_training, seen_text
    from training.reports import write_evaluation_report

    report = Path(args.out)
    if report.suffix.lower() != ".xlsx":
        err.write(f"leukgui evaluate: error: --out must name an .xlsx file, not {report}\n")
        return EXIT_USAGE
    try:
        subjects = parse_subject_rule(args.subject_folder, args.subject_pattern)
    except ValueError as exc:
        err.write(f"leukgui evaluate: error: {exc}\n")
        return EXIT_USAGE
    try:
        class_map = _class_map(args.class_map)
        scan = read_dataset(args.data, class_map=class_map, subjects=subjects)
    except (ValueError, argparse.ArgumentTypeError) as exc:
        err.write(f"leukgui evaluate: {exc}\n")
        return EXIT_NO_DATA
    if not scan.records:
        err.write(f"leukgui evaluate: no labelled cells in {args.data}\n")
        return EXIT_NO_DATA
    bundle = load_model(args.model, err, "leukgui evaluate", keras=args.runtime == "tensorflow")
    if bundle is None:
        return EXIT_MODEL
    analyzer = start_runtime(bundle, args.runtime, args.precision, err, "leukgui evaluate")
    if analyzer is None:
        return EXIT_MODEL
    cancel = CancelToken()
    try:
        with (
            ctrl_c_cancels(cancel, err),
            ProgressPrinter(err, enabled=not args.quiet) as printer,
        ):
            result = evaluate_bundle(
                bundle,
                scan,
                analyzer=analyzer,
                part=Path(args.data).name,
                batch_size=args.batch_size,
                progress=printer,
                cancel=cancel,
                tta=args.tta,
            )
    except KeyboardInterrupt:
        err.write("leukgui evaluate: aborted; no report written\n")
        return EXIT_INTERRUPTED
    model = dict(bundle.manifest, path=str(bundle.path.absolute()))
    seen = seen_in_training(bundle.manifest, scan)
    try:
        write_evaluation_report(
            result.evaluation,
            report,
            model=model,
            data=dict(scan.summary(), folder=str(Path(args.data).absolute())),
            unreadable=result.unreadable,
            title=f"Evaluation of {bundle.name} v{bundle.version} on {Path(args.data).name}",
            tta=result.tta_evaluation,
            images_per_second=result.images_per_second,
            tta_images_per_second=result.tta_images_per_second,
            seen=seen,
            runtime=result.runtime,
        )
    except ReportWriteError as exc:
        err.write(f"leukgui evaluate: {exc}\n")
        return EXIT_REPORT
    state = "CANCELLED: " if result.cancelled else ""
    if seen:
        out.write(
            f"WARNING: {seen_text(seen)}, so these scores are not held-out and are optimistic\n"
        )
    if scan.image_subjects:
        out.write(
            f"WARNING: subjects unknown for {scan.image_subjects} cells: each counts as its own "
            "subject, so subject-level results and intervals are by image\n"
        )
    out.write(f"{state}{score_line(result.evaluation)}; {len(result.unreadable)} unreadable\n")
    if result.tta_evaluation is not None:
        plain, tta = result.images_per_second, result.tta_images_per_second or 0.0
        cost = f"{tta:.1f} images/s against {plain:.1f} without" if plain else ""
        out.write(f"with test-time augmentation (8 views): {score_line(result.tta_evaluation)}")
        out.write(f"; {cost}\n" if cost else "\n")
    out.write(f"report {report}\n")
    if result.cancelled:
        return EXIT_INTERRUPTED
    return EXIT_SOME_ERRORS if result.unreadable else EXIT_OK


def add_parsers(sub: Any) -> None:
    """Register `train` and `evaluate` on the main parser's subcommands."""
    from leukgui.core.backbones import BACKBONES, DEFAULT_BACKBONE

    train = sub.add_parser(
        "train",
        help="fine-tune a model on your labelled cells and save it as a new model file",
        description=(
            "Train a classifier on labelled cells: split by subject, train the head on a "
            "frozen ImageNet backbone, fine-tune the top block, choose the threshold on the "
            "validation subjects and score on the test subjects. Writes a versioned .leukmodel "
            "model file, a CSV log, curves and a training report; with several backbones also a "
            "comparison table (.xlsx and .md)."
        ),
        epilog=TRAIN_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    train.add_argument("data", metavar="DATA", help="labelled folder or CSV")
    which = train.add_mutually_exclusive_group()
    which.add_argument(
        "--backbone",
        help=f"one of {', '.join(BACKBONES)} (default {DEFAULT_BACKBONE})",
    )
    which.add_argument(
        "--backbones", metavar="A,B,C", help="train several on the same split and compare them"
    )
    train.add_argument(
        "--weights",
        metavar="imagenet|none|PATH",
        help="start from ImageNet weights (Keras cache or the bundled folder; never "
        "downloaded), from scratch (none), or from a no-top weights file (default imagenet)",
    )
    train.add_argument(
        "--init-from",
        metavar="MODEL",
        help="fine-tune a current model (a name, name-vVERSION or .leukmodel file, as --model "
        "elsewhere) instead of starting from ImageNet: its weights, backbone, input size, "
        "preprocessing and stain normalisation, with a short schedule for a few hundred "
        "cells (defaults: 20 epochs at most, the first 5 training the head, then the top "
        "layers; learning rates 1e-3 then 1e-4; early stopping on the validation cells); "
        "the new model file records "
        "its parent. Not with --backbone(s), --weights, --input-size, --stain, "
        "--mixed-precision or --cv",
    )
    train.add_argument("--out", metavar="DIR", help="where to write (default: your models folder)")
    train.add_argument("--name", help="name of the new model (default: the backbone)")
    train.add_argument(
        "--epochs", type=int, help="most epochs in all (default 30; 20 with --init-from)"
    )
    train.add_argument(
        "--head-epochs",
        type=int,
        help="most epochs of the head phase (default 5, also with --init-from)",
    )
    train.add_argument("--batch-size", type=int, default=32, help="cells per step (default 32)")
    train.add_argument(
        "--input-size", type=int, help="input size in pixels (default: the backbone's own)"
    )
    train.add_argument(
        "--lr",
        type=float,
        help="learning rate of the head phase (default 1e-3, also with --init-from), or of "
        "from-scratch training with --weights none (default 1e-3; 1e-4 for vgg16)",
    )
    train.add_argument(
        "--fine-tune-lr",
        type=float,
        help="fine-tuning learning rate (default 1e-4, also with --init-from)",
    )
    train.add_argument(
        "--patience", type=int, default=4, help="early stopping patience in epochs (default 4)"
    )
    train.add_argument("--seed", type=int, default=2019, help="random seed (default 2019)")
    train.add_argument(
        "--validation", type=float, default=0.15, help="share of cells for validation (0.15)"
    )
    train.add_argument("--test", type=float, default=0.15, help="share of cells for test (0.15)")
    train.add_argument("--train-folds", metavar="0,1", help="C-NMC folds to train on")
    train.add_argument("--validation-folds", metavar="2", help="C-NMC folds to validate on")
    train.add_argument("--test-folds", metavar="N", help="C-NMC folds to test on")
    train.add_argument(
        "--test-data", metavar="PATH", help="a separate labelled set used as the test part"
    )
    train.add_argument(
        "--class-map", metavar="FOLDER=ALL,...", help="class folder names, e.g. blast=ALL,norm=HEM"
    )
    subjects = train.add_argument_group("subjects (patients) and the split")
    subjects.add_argument(
        "--subject-folder",
        type=int,
        metavar="N",
        help="the subject is the Nth folder of each file's path below DATA (1 = the first)",
    )
    subjects.add_argument(
        "--subject-pattern",
        metavar="REGEX",
        help="the subject is the part of each file name matched by REGEX's group "
        "(?P<subject>...) or (...), e.g. '^(P\\d+)_'",
    )
    subjects.add_argument(
        "--split-by",
        choices=("subject", "image"),
        default="subject",
        help="'image' accepts a split where cells without a known subject count as their own "
        "subject (scores are then optimistic, and every report says so)",
    )
    subjects.add_argument(
        "--split-from",
        metavar="MODEL",
        help="rebuild exactly the split a .leukmodel file recorded (same files in each part)",
    )
    subjects.add_argument(
        "--cv",
        type=int,
        metavar="K",
        help="K-fold subject-grouped cross-validation instead of one split: every backbone "
        "on the same folds, with the spread across folds",
    )
    subjects.add_argument(
        "--repeats", type=int, default=1, metavar="R", help="repeat --cv with R shuffles (1)"
    )
    scoring = train.add_argument_group("scoring and preprocessing")
    scoring.add_argument(
        "--stain",
        choices=("none", "reinhard", "both"),
        default="none",
        help="stain normalisation fitted on the training cells (Reinhard), or both to train "
        "each backbone with and without it and compare (default none: colour jitter only)",
    )
    scoring.add_argument(
        "--no-inference-graph",
        action="store_true",
        help="do not write model.onnx into the model file (about 10 s per model); OpenVINO and "
        "ONNX Runtime then export it once, on first use, into the user folder's cache",
    )
    scoring.add_argument(
        "--no-calibration",
        action="store_true",
        help="keep P(ALL) as the network gives it (default: temperature scaling on validation)",
    )
    scoring.add_argument(
        "--bootstrap",
        type=int,
        default=2000,
        metavar="N",
        help="subject-bootstrap resamples for the 95%% intervals (default 2000)",
    )
    train.add_argument(
        "--balance",
        choices=("weights", "none"),
        default="weights",
        help="class weights against the ALL:HEM imbalance (default weights)",
    )
    train.add_argument("--no-augment", action="store_true", help="no data augmentation")
    train.add_argument(
        "--cache",
        default="memory",
        metavar="memory|none|DIR",
        help="keep decoded cells in memory (default), not at all, or in files under DIR",
    )
    train.add_argument(
        "--mixed-precision",
        action="store_true",
        help="float16 on a GPU, bfloat16 on a CPU (faster, weights stay float32)",
    )
    train.add_argument(
        "--strategy",
        choices=("default", "mirrored", "multiworker"),
        default="default",
        help="tf.distribute: one device, all GPUs of this machine, or a cluster from TF_CONFIG",
    )
    train.add_argument("-q", "--quiet", action="store_true", help="only the result lines")
    train.set_defaults(func=cmd_train)

    evaluate = sub.add_parser(
        "evaluate",
        help="score a model on a labelled folder and write an evaluation report",
        description=(
            "Run the cells of a labelled folder or CSV through the analysis engine with the "
            "model's own threshold and uncertainty band, and report accuracy, sensitivity, "
            "specificity, F1, balanced accuracy, ROC AUC, calibration and per-subject results."
        ),
        epilog=EVALUATE_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    evaluate.add_argument("model", metavar="MODEL", help="model name or .leukmodel file")
    evaluate.add_argument("data", metavar="DATA", help="labelled folder or CSV")
    evaluate.add_argument("--out", required=True, metavar="EVAL.xlsx", help="report to write")
    evaluate.add_argument("--class-map", metavar="FOLDER=ALL,...", help="class folder names")
    evaluate.add_argument("--batch-size", type=int, default=32, help="images per network call")
    evaluate.add_argument(
        "--tta",
        action="store_true",
        help="also score with test-time augmentation (8 flips and 90-degree rotations per "
        "cell), reported separately with its cost in images/s",
    )
    evaluate.add_argument("--subject-folder", type=int, metavar="N", help="as for train")
    evaluate.add_argument("--subject-pattern", metavar="REGEX", help="as for train")
    evaluate.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    add_runtime_options(evaluate)
    evaluate.set_defaults(func=cmd_evaluate)
