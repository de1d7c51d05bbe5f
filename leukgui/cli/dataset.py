"""`leukgui dataset add` and `leukgui dataset show`: the lab data set from the command line.

`add` copies the reviewed cells of a review session or a reviewed Excel report into the lab
data set (see `leukgui.core.lab_dataset`), which `leukgui train DATASET/dataset.csv` reads;
`show` says what the set holds, so a person can check it before training on it.
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path
from typing import Any, TextIO

from leukgui.cli.console import EXIT_NO_DATA, EXIT_OK, EXIT_REPORT, EXIT_SOME_ERRORS, EXIT_USAGE
from leukgui.core.lab_dataset import (
    DATASET_CSV,
    DatasetError,
    LabDataset,
    chosen_folder,
    default_folder,
    read_source,
    summary_lines,
)

__all__ = ["add_parsers", "cmd_dataset_add", "cmd_dataset_show", "default_dataset_dir"]

ADD_EXAMPLES = """\
examples:
  leukgui dataset add report.xlsx
  leukgui dataset add ~/.local/share/LeukGUI/sessions/20261130-120301-000001 \\
      --subject S1=patient7 --subject S2=patient7
  leukgui dataset add report.xlsx --dataset //labserver/share/lab-dataset

Only cells a person reviewed (set or confirmed the label) are added, never the model's own
unreviewed calls nor UNCLASSIFIABLE cells. A cell already in the set is not added again; a
changed label becomes a new label version. Cells whose image file is gone or changed are
listed and left out; the others are added. Smear-field cells are added from sessions only.

exit codes:
  0  done: every reviewed cell is in the set    1  done, but some reviewed cells were
                                                   skipped (image gone or changed, ...)
  3  no reviewed cell could be added            5  the data set or source could not be used
  2  bad command line
"""


default_dataset_dir = default_folder  # the name this module has always exported


def chosen_dataset_dir() -> Path:
    """The data set the window adds to (see `lab_dataset.chosen_folder`)."""
    from leukgui.core.preferences import load_preferences

    return chosen_folder(load_preferences()[0].lab_dataset_folder)


def _subject_pair(text: str) -> tuple[str, str]:
    sample, sep, subject = text.partition("=")
    if not sep or not sample.strip() or not subject.strip():
        raise argparse.ArgumentTypeError(f"--subject takes SAMPLE=SUBJECT, not {text!r}")
    return sample.strip(), subject.strip()


def _open(args: argparse.Namespace, create: bool) -> LabDataset:
    """The data set named by --dataset, or the default one (created on first use).

    An explicit folder that does not exist is created only with --create: a path on a
    disconnected drive must fail, not start a new, empty data set.
    """
    if args.dataset is None:
        folder = chosen_dataset_dir()
        if create and folder == default_dataset_dir():
            folder.parent.mkdir(parents=True, exist_ok=True)
            return LabDataset.create(folder)
        return LabDataset(folder)
    folder = Path(args.dataset)
    if create and getattr(args, "create", False):
        return LabDataset.create(folder)
    dataset = LabDataset(folder)
    if folder.is_dir() and not dataset.exists() and create:
        return LabDataset.create(folder)  # an empty folder becomes a data set
    return dataset


def cmd_dataset_add(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """Add the reviewed cells of one source; print what was added, relabelled and skipped."""
    subjects = dict(args.subject or [])
    try:
        cells, skipped = read_source(args.source)  # first: a bad source creates no folder
        dataset = _open(args, create=True)
        summary = dataset.add_reviewed(cells, subjects)
    except DatasetError as exc:
        hint = ""
        if args.dataset is not None and not Path(args.dataset).exists():
            hint = " (a new data set folder: add --create)"
        err.write(f"leukgui dataset add: {exc}{hint}\n")
        return EXIT_REPORT
    summary.skipped[:0] = skipped
    out.write(f"Lab data set {dataset.folder}: {summary.describe()}.\n")
    kept = [e for e in summary.already_present if e.sample in subjects]
    if kept:
        out.write(
            f"  note: {len(kept)} cell(s) already in the set keep the subject they were added "
            "with; --subject applies to cells added now\n"
        )
    for line in summary_lines(summary, present=False):
        out.write(f"  {line}\n")
    if summary.changed:
        out.write(f"Train on it with: leukgui train {dataset.folder / DATASET_CSV}\n")
    if not (summary.added or summary.relabelled or summary.already_present):
        out.write("No reviewed cell could be added.\n")
        return EXIT_NO_DATA
    return EXIT_SOME_ERRORS if any(item.problem for item in summary.skipped) else EXIT_OK


def cmd_dataset_show(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """Cells per class and subject, the reviewers, and the history of relabelled cells."""
    try:
        dataset = _open(args, create=False)
        if args.dataset is None and not dataset.folder.exists():
            out.write(f"Lab data set {dataset.folder}: 0 cells\n")
            out.write("  (nothing added yet: 'leukgui dataset add REPORT.xlsx|SESSION')\n")
            return EXIT_OK
        history = dataset.history()
    except DatasetError as exc:
        err.write(f"leukgui dataset show: {exc}\n")
        return EXIT_REPORT
    entries = dataset.entries()
    out.write(f"Lab data set {dataset.folder}: {len(entries)} cells\n")
    if not entries:
        out.write("  (empty: add reviewed cells with 'leukgui dataset add REPORT.xlsx|SESSION')\n")
        return EXIT_OK
    by_class = Counter(e.label for e in entries)
    out.write("  " + ", ".join(f"{label} {by_class[label]}" for label in ("ALL", "HEM")) + "\n")
    out.write("Cells per subject (ALL / HEM):\n")
    per_subject: dict[str, Counter[str]] = {}
    for e in entries:
        per_subject.setdefault(e.subject, Counter())[e.label] += 1
    for subject in sorted(per_subject):
        c = per_subject[subject]
        out.write(f"  {subject}: {c['ALL']} / {c['HEM']}\n")
    reviewers = Counter(e.reviewer for e in entries)
    out.write("Reviewers (cells whose current label they set):\n")
    for name, n in reviewers.most_common():
        out.write(f"  {name}: {n}\n")
    relabelled = [e for e in entries if e.label_version > 1]
    if relabelled:
        out.write("Label history of relabelled cells:\n")
        for e in relabelled:
            versions = [h for h in history if h.sha256 == e.sha256]
            steps = " -> ".join(
                f"v{h.label_version} {h.label} ({h.reviewer}, {h.reviewed_at})" for h in versions
            )
            out.write(f"  {e.path} [{e.image}]: {steps}\n")
    return EXIT_OK


def add_parsers(sub: Any) -> None:
    """Register `dataset add` and `dataset show` on the main parser's subcommands."""
    dataset = sub.add_parser(
        "dataset",
        help="collect reviewed cells into the lab data set the trainer reads",
        description=(
            "The lab data set: every cell a person reviewed, as the model saw it, with its "
            "label, subject, reviewer and the model's original call, in a folder that "
            "'leukgui train FOLDER/dataset.csv' reads."
        ),
    )
    actions = dataset.add_subparsers(dest="dataset_command", metavar="ACTION")
    dataset.set_defaults(func=_missing_action(dataset))
    add = actions.add_parser(
        "add",
        help="add the reviewed cells of a review session or a reviewed Excel report",
        epilog=ADD_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add.add_argument("source", metavar="REPORT.xlsx|SESSION", help="report or session folder")
    add.add_argument(
        "--dataset",
        metavar="DIR",
        help=f"data set folder (default: the one the window adds to, else {default_dataset_dir()})",
    )
    add.add_argument(
        "--create",
        action="store_true",
        help="create the --dataset folder if it does not exist (its parent must)",
    )
    add.add_argument(
        "--subject",
        action="append",
        type=_subject_pair,
        metavar="SAMPLE=SUBJECT",
        help="the patient/subject of a sample (repeatable; default: the sample itself)",
    )
    add.set_defaults(func=cmd_dataset_add)
    show = actions.add_parser(
        "show", help="cells per class and subject, reviewers, and label history"
    )
    show.add_argument(
        "--dataset",
        metavar="DIR",
        help=f"data set folder (default: the one the window adds to, else {default_dataset_dir()})",
    )
    show.set_defaults(func=cmd_dataset_show)


def _missing_action(parser: argparse.ArgumentParser) -> Any:
    def run(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
        err.write(parser.format_usage())
        err.write("leukgui dataset: choose an action: add or show\n")
        return EXIT_USAGE

    return run
