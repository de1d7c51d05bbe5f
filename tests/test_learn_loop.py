"""Issue 18's whole loop on synthetic cells, as a lab would run it: analyse with the demo
model, review (confirm some calls, correct others, leave some alone, one UNCLASSIFIABLE),
add the reviewed cells to the lab data set, fine-tune the demo model on it for one epoch,
compare parent and new model, adopt the new model, and analyse again with it.

The analysis and the review use the engine and the review session the window uses; the data
set, training and adoption go through the `leukgui` command line.
"""

from __future__ import annotations

import csv
import hashlib
import io
from pathlib import Path

import openpyxl
import pytest

from leukgui.core.engine import AnalysisOptions, analyze_paths
from leukgui.core.lab_dataset import DATASET_CSV
from leukgui.core.model_registry import current, history
from leukgui.core.paths import user_models_dir
from leukgui.core.results import ALL, HEM, CellResult
from leukgui.core.review import UNCLASSIFIABLE
from leukgui.core.sessions import ReviewSession, SessionStore
from leukgui.core.synthetic import write_dataset

REVIEWERS = ("Ada", "Bob")


def _cli(argv: list[str], stdin: str = "") -> tuple[int, str, str]:
    """`leukgui ARGV` in this process: (exit code, stdout, stderr)."""
    import sys

    from leukgui import cli

    out, err = io.StringIO(), io.StringIO()
    old = sys.stdin, sys.stdout, sys.stderr
    sys.stdin, sys.stdout, sys.stderr = io.StringIO(stdin), out, err
    try:
        code = cli.main(argv)
    finally:
        sys.stdin, sys.stdout, sys.stderr = old
    return code, out.getvalue(), err.getvalue()


def _truth(cell: CellResult) -> str:
    return ALL if cell.path.stem.endswith("_all") else HEM


@pytest.fixture(scope="module")
def loop(tmp_path_factory: pytest.TempPathFactory, demo_bundle) -> dict:
    """Everything the loop produced, run once for the tests below."""
    root = tmp_path_factory.mktemp("loop")
    images = root / "images"
    # Cells as another lab's stain and microscope show them ("lab-b"), which the demo model
    # gets partly wrong: the reviewers have calls to correct. 8 subjects per class: the
    # subject guard rail stays quiet and the test part holds at least 2 subjects per class,
    # which the paired interval needs.
    write_dataset(images, 24, 41, fmt="png", layout="cnmc", subjects=8, size=96, shift="lab-b")
    run = analyze_paths([images], demo_bundle, AnalysisOptions(batch_size=16))
    assert not run.errors and len(run.cells) == 48

    session = ReviewSession.create(root / "sessions", run)
    review = session.review
    cells = sorted(run.cells, key=lambda c: c.path.name)
    unreviewed, unclassifiable = cells[0], cells[1]
    confirmed = corrected = 0
    for i, cell in enumerate(cells[2:]):
        who = REVIEWERS[i % 2]
        if cell.label == _truth(cell):
            review.confirm(cell, who)
            confirmed += 1
        else:
            review.set_label(cell, _truth(cell), who)
            corrected += 1
    review.set_label(unclassifiable, UNCLASSIFIABLE, "Ada")
    before = {str(c.path): review.final_label(c) for c in cells}
    session.close()

    dataset = root / "lab-dataset"
    add = _cli(["dataset", "add", str(session.folder), "--dataset", str(dataset), "--create"])
    again = _cli(["dataset", "add", str(session.folder), "--dataset", str(dataset)])

    out = root / "models"
    train = _cli(
        [
            "train",
            str(dataset / DATASET_CSV),
            "--init-from",
            str(demo_bundle.path),
            "--epochs",
            "1",
            "--batch-size",
            "8",
            "--validation",
            "0.25",
            "--test",
            "0.25",
            "--bootstrap",
            "200",
            "--no-inference-graph",
            "--out",
            str(out),
        ]
    )
    return {
        "root": root,
        "cells": cells,
        "unreviewed": unreviewed,
        "unclassifiable": unclassifiable,
        "confirmed": confirmed,
        "corrected": corrected,
        "before": before,
        "session": session.folder,
        "dataset": dataset,
        "add": add,
        "again": again,
        "out": out,
        "train": train,
    }


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8-sig") as fh:
        return list(csv.DictReader(fh))


def test_the_data_set_holds_exactly_the_reviewed_cells_with_their_labels(loop) -> None:
    code, text, err = loop["add"]
    assert code == 0, err
    rows = _rows(loop["dataset"] / DATASET_CSV)
    reviewed = loop["cells"][2:]
    assert len(rows) == len(reviewed) == loop["confirmed"] + loop["corrected"]
    assert loop["corrected"] > 0 and loop["confirmed"] > 0  # both kinds of review happened
    by_hash = {}
    for row in rows:
        image = loop["dataset"] / row["path"]
        by_hash[hashlib.sha256(image.read_bytes()).hexdigest()] = row
        assert row["label"] in (ALL, HEM)
        assert row["reviewer"] in REVIEWERS
    # every label is the reviewed (true) one, and every subject the cell's C-NMC subject
    truths = sorted((_truth(c), c.subject) for c in reviewed)
    assert sorted((r["label"], r["subject"]) for r in rows) == truths
    assert f"{len(rows)} added" in text


def test_re_adding_the_same_session_adds_nothing(loop) -> None:
    code, text, err = loop["again"]
    assert code == 0, err
    assert "0 added" in text and f"{len(loop['cells']) - 2} already present" in text
    assert len(_rows(loop["dataset"] / DATASET_CSV)) == len(loop["cells"]) - 2


def test_adding_to_the_data_set_changed_no_review(loop) -> None:
    run, state = SessionStore(loop["session"]).load()
    after = {str(c.path): state.final_label(c) for c in run.cells}
    assert after == loop["before"]
    assert after[str(loop["unclassifiable"].path)] == UNCLASSIFIABLE


@pytest.fixture(scope="module")
def bundle(loop) -> Path:
    code, text, err = loop["train"]
    assert code == 0, err + text
    found = sorted(loop["out"].glob("*.leukmodel"))
    assert len(found) == 1, found
    return found[0]


def test_the_new_bundle_names_its_parent_and_the_data_set(bundle, demo_bundle, loop) -> None:
    from leukgui.core.bundle import read_manifest

    manifest = read_manifest(bundle)
    parent = manifest["parent"]
    assert parent["name"] == demo_bundle.manifest["name"]
    assert parent["weights_sha256"] == demo_bundle.manifest["weights_sha256"]
    data = manifest["training_data"]["dataset"]
    # The data set hash, recomputed here from the data set's own CSV and files.
    rows = _rows(loop["dataset"] / DATASET_CSV)
    lines = []
    for row in rows:
        digest = hashlib.sha256((loop["dataset"] / row["path"]).read_bytes()).hexdigest()
        lines.append(f"{digest}\t{row['label']}\t{row['subject']}")
    expected = hashlib.sha256("\n".join(sorted(lines)).encode("utf-8")).hexdigest()
    assert data["sha256"] == expected
    assert data["cells"] == len(rows)
    # Its weights began as the demo's: it keeps the DEMO notice.
    assert manifest["demo"] is True and "DEMO model" in manifest["description"]


def test_training_compared_parent_and_new_on_the_same_test_cells(bundle, loop) -> None:
    from leukgui.core.bundle import read_manifest

    comparison = read_manifest(bundle)["comparison"]
    assert comparison["against"] == "parent"
    low, high = comparison["interval"]
    diff = comparison["difference"]
    assert low <= diff <= high
    assert diff == pytest.approx(
        comparison["balanced_accuracy_new"] - comparison["balanced_accuracy_parent"]
    )
    assert 0.0 <= comparison["mcnemar_p"] <= 1.0
    _, text, _ = loop["train"]
    assert "parent vs new" in text
    reports = sorted(loop["out"].rglob("training_report.xlsx"))
    assert reports
    sheets = {n for r in reports for n in openpyxl.load_workbook(r, read_only=True).sheetnames}
    assert "Parent vs new" in sheets


def test_adoption_is_a_recorded_decision_and_the_next_run_uses_the_model(
    bundle, loop, demo_bundle
) -> None:
    from leukgui.core.bundle import read_manifest

    code, text, _ = _cli(["models", "--adopt", str(bundle), "--reviewer", "Dr Lab"], "n\n")
    assert code == 0 and "Nothing was changed" in text and current() is None
    code, text, err = _cli(["models", "--adopt", str(bundle), "--reviewer", "Dr Lab", "--yes"])
    assert code == 0, err
    adoption = current()
    assert adoption is not None and adoption.who == "Dr Lab"
    # trained with --out elsewhere: installed into the models folder first, so the model in
    # use is one `leukgui models` and the window list
    assert "Installed" in text
    assert Path(adoption.path).parent == user_models_dir() and len(history()) == 1
    assert Path(adoption.path).read_bytes() == bundle.read_bytes()
    code, text, _ = _cli(["models"])
    assert f"In use: {adoption.name} v{adoption.version}" in text
    manifest = read_manifest(bundle)
    assert adoption.comparison == manifest["comparison"]["verdict"]

    report = loop["root"] / "after.xlsx"
    code, text, err = _cli(["analyze", str(loop["root"] / "images"), "--out", str(report)])
    assert code == 0, err
    book = openpyxl.load_workbook(report, read_only=True)
    values = [
        str(v) for ws in book.worksheets for row in ws.iter_rows(values_only=True) for v in row
    ]
    assert any(manifest["name"] in v for v in values)  # the report names the model in use
    assert not any(demo_bundle.manifest["weights_sha256"] in v for v in values)
