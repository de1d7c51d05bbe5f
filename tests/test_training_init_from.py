"""`leukgui train --init-from MODEL`: fine-tuning a current model, its lineage, and the guard
rails checked on a data set before training.

The parent is a tiny EfficientNetB0 built here from random weights (no ImageNet file needed)
and saved with `save_bundle`, as a lab's current model would be; the fine-tune runs one epoch
on 32 px synthetic cells.
"""

from __future__ import annotations

import csv
import hashlib
import io
from collections import Counter
from pathlib import Path

import numpy as np
import openpyxl
import pytest

from leukgui.cli import main
from leukgui.core.synthetic import write_dataset
from training.datasets import Record, read_dataset
from training.splits import LeakageError, Split
from training.trainer import INIT_FROM_DEFAULTS

SIZE = 32
SUBJECTS = 6  # per class: enough for the subjects guard rail (5) to stay quiet


def _save_parent(folder: Path, name: str, *, seed: int, trained_on: list[str] = ()) -> Path:
    """A tiny random-weights bundle; `trained_on` subjects recorded as its training part."""
    from leukgui.core.backbones import build_classifier
    from leukgui.core.bundle import make_manifest, save_bundle

    model = build_classifier("efficientnetb0", weights=None, input_size=SIZE, seed=seed)
    split = {"subjects": {"train": sorted(trained_on), "validation": [], "test": []}}
    manifest = make_manifest(
        name=name,
        version="2026-11-01",
        backbone="efficientnetb0",
        input_size=SIZE,
        threshold=0.5,
        uncertainty_band=(0.4, 0.6),
        training_data={"split": split},
    )
    return save_bundle(model, manifest, folder / f"{name}.leukmodel", inference_graph=False)


def _write_csv(folder: Path, reviewers: list[str]) -> Path:
    """dataset.csv as the lab data set writes it (path,label,subject,sample,reviewer), the
    reviewers dealt round-robin over the cells."""
    scan = read_dataset(folder)
    path = folder / "dataset.csv"
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "label", "subject", "sample", "reviewer"])
        for i, r in enumerate(scan.records):
            rel = Path(r.path).relative_to(folder).as_posix()
            writer.writerow([rel, r.label, r.subject, r.subject, reviewers[i % len(reviewers)]])
    return path


@pytest.fixture(scope="module")
def cells(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("cells")
    write_dataset(folder, 20, 5, fmt="png", layout="cnmc", subjects=SUBJECTS, size=48)
    return _write_csv(folder, ["alice"])  # one reviewer: a guard rail fires


@pytest.fixture(scope="module")
def parent(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _save_parent(tmp_path_factory.mktemp("parent"), "labmodel", seed=3)


def _train_args(data: Path, out: Path, *extra: str) -> list[str]:
    return [
        "train",
        str(data),
        "--epochs",
        "1",
        "--batch-size",
        "8",
        "--validation",
        "0.25",
        "--test",
        "0.25",
        "--bootstrap",
        "100",
        "--no-inference-graph",
        "--no-augment",
        "--out",
        str(out),
        *extra,
    ]


@pytest.fixture(scope="module")
def fine_tuned(cells: Path, parent: Path, tmp_path_factory: pytest.TempPathFactory):
    """One fine-tune through the command line: (exit code, out folder, stdout, stderr)."""
    from leukgui.cli import build_parser
    from leukgui.cli.train import cmd_train

    out = tmp_path_factory.mktemp("models")
    stdout, stderr = io.StringIO(), io.StringIO()
    argv = _train_args(
        cells, out, "--init-from", str(parent), "--epochs", "2", "--head-epochs", "1"
    )
    args = build_parser().parse_args(argv)
    code = cmd_train(args, stdout, stderr)
    return code, out, stdout.getvalue(), stderr.getvalue()


def test_fine_tune_writes_a_bundle_recording_parent_and_data(fine_tuned, parent, cells) -> None:
    from leukgui.core.bundle import load_bundle, read_manifest

    code, out, stdout, stderr = fine_tuned
    assert code == 0, stderr
    [path] = list(out.glob("*.leukmodel"))
    assert path.name.startswith("efficientnetb0-")
    child = load_bundle(path)
    parent_manifest = read_manifest(parent)
    m = child.manifest
    assert m["parent"]["name"] == "labmodel"
    assert m["parent"]["version"] == "2026-11-01"
    assert m["parent"]["bundle_sha256"] == parent_manifest["bundle_sha256"]
    assert m["parent"]["weights_sha256"] == parent_manifest["weights_sha256"]
    assert m["backbone"] == "efficientnetb0" and m["input_size"] == SIZE
    assert m["class_names"] == parent_manifest["class_names"]
    settings = m["training_data"]["settings"]
    # both phases ran on the parent's network: the head, then the top layers (default rates)
    [log] = list(out.glob("*-training/training_log.csv"))
    with open(log, newline="", encoding="utf-8-sig") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["phase"] for r in rows] == ["head", "fine-tune"]
    assert float(rows[1]["learning_rate"]) == pytest.approx(INIT_FROM_DEFAULTS["fine_tune_lr"])
    assert settings["weights"] == "parent model"
    assert settings["head_lr"] == pytest.approx(INIT_FROM_DEFAULTS["head_lr"])
    assert settings["fine_tune_lr"] == pytest.approx(INIT_FROM_DEFAULTS["fine_tune_lr"])
    # threshold, band and calibration are chosen afresh on the new validation cells
    assert m["calibration"]["fitted_on"] == "validation"
    low, high = m["uncertainty_band"]
    assert low <= m["decision_threshold"] <= high

    # the data set: hash over sorted (content SHA-256, label, subject) rows, and its size
    dataset = m["training_data"]["dataset"]
    scan = read_dataset(cells)
    rows = sorted(
        f"{hashlib.sha256(Path(r.path).read_bytes()).hexdigest()}\t{r.label}\t{r.subject}"
        for r in scan.records
    )
    assert dataset["sha256"] == hashlib.sha256("\n".join(rows).encode()).hexdigest()
    assert dataset["cells"] == len(scan.records) == 40
    assert dataset["cells_per_class"] == {"ALL": 20, "HEM": 20}
    assert dataset["subjects"] == 2 * SUBJECTS
    assert dataset["subjects_per_class"] == {"ALL": SUBJECTS, "HEM": SUBJECTS}

    sha8 = parent_manifest["bundle_sha256"][:8]
    lineage = f"fine-tuned from labmodel 2026-11-01 ({sha8}) on 40 cells, {2 * SUBJECTS} subjects"
    assert child.lineage == lineage
    assert lineage in stdout


def test_model_card_shows_the_lineage(fine_tuned) -> None:
    from leukgui.core.bundle import BundleInfo, read_manifest
    from leukgui.gui.model_card import model_card_html

    _, out, _, _ = fine_tuned
    [path] = list(out.glob("*.leukmodel"))
    info = BundleInfo(path=path, manifest=read_manifest(path), source="file")
    html = model_card_html(info)
    assert "Lineage" in html and "fine-tuned from labmodel 2026-11-01" in html


def test_a_model_without_parent_has_no_lineage(parent) -> None:
    from leukgui.core.bundle import BundleInfo, read_manifest
    from leukgui.gui.model_card import model_card_html

    info = BundleInfo(path=parent, manifest=read_manifest(parent), source="file")
    assert info.lineage == ""
    assert "Lineage" not in model_card_html(info)


def test_training_starts_from_the_parents_weights(fine_tuned, parent) -> None:
    from leukgui.core.backbones import build_classifier
    from leukgui.core.bundle import load_bundle
    from training.trainer import TrainConfig, _build

    parent_weights = load_bundle(parent).keras_model().get_weights()
    config = TrainConfig(backbone="efficientnetb0", input_size=SIZE, init_from=str(parent))
    assert config.transfer and config.weights == "parent model"
    built = _build(config, "float32").get_weights()  # what the loop starts from, before a step
    assert len(built) == len(parent_weights)
    assert all(np.array_equal(a, b) for a, b in zip(built, parent_weights, strict=True))

    # after training: far closer to the parent than to a fresh network of the same shape
    _, out, _, _ = fine_tuned
    [path] = list(out.glob("*.leukmodel"))
    trained = load_bundle(path).keras_model().get_weights()
    fresh = build_classifier("efficientnetb0", weights=None, input_size=SIZE, seed=99)

    def distance(a: list[np.ndarray], b: list[np.ndarray]) -> float:
        return float(sum(np.sum((x - y) ** 2) for x, y in zip(a, b, strict=True)))

    to_parent = distance(trained, parent_weights)
    assert to_parent < distance(trained, fresh.get_weights()) / 100
    assert to_parent > 0  # it did train


def test_guard_rail_warning_is_printed_and_recorded(fine_tuned) -> None:
    from leukgui.core.bundle import read_manifest

    _, out, stdout, stderr = fine_tuned
    needle = "every reviewed cell was labelled by one reviewer (alice"
    assert needle in stdout and needle in stderr
    [path] = list(out.glob("*.leukmodel"))
    warnings = read_manifest(path)["training_data"]["warnings"]
    assert any(needle in w for w in warnings)
    [report] = list(out.glob("*-training/training_report.xlsx"))
    text = " ".join(
        str(c.value)
        for ws in openpyxl.load_workbook(report).worksheets
        for row in ws.iter_rows()
        for c in row
        if c.value is not None
    )
    assert needle in text
    assert "Fine-tuned from labmodel v2026-11-01 (SHA-256 " in text
    # good data otherwise: 6 subjects per class, 50% each class
    assert "subject(s) in the data set" not in stdout
    assert "of the cells (" not in stdout


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        (["--backbone", "vgg16"], "--backbone vgg16"),
        (["--weights", "imagenet"], "--weights"),
        (["--weights", "none"], "--weights"),
        (["--backbones", "vgg16,efficientnetb0"], "--backbones"),
        (["--input-size", "64"], "--input-size 64"),
        (["--stain", "reinhard"], "--stain"),
        (["--mixed-precision"], "--mixed-precision"),
    ],
)
def test_conflicting_options_are_refused(cells, parent, tmp_path, capsys, extra, named) -> None:
    code = main(_train_args(cells, tmp_path, "--init-from", str(parent), *extra))
    err = capsys.readouterr().err
    assert code == 2
    assert "--init-from" in err and named in err
    assert not list(tmp_path.glob("*.leukmodel"))


def test_a_missing_parent_is_a_usage_error(cells, tmp_path, capsys) -> None:
    code = main(_train_args(cells, tmp_path, "--init-from", str(tmp_path / "gone.leukmodel")))
    assert code == 2
    assert "--init-from" in capsys.readouterr().err


def test_a_test_part_holding_the_parents_training_subjects_is_refused(
    cells, tmp_path, capsys
) -> None:
    subjects = sorted({r.subject for r in read_dataset(cells).records})
    leaky = _save_parent(tmp_path, "leaky", seed=4, trained_on=subjects)
    code = main(_train_args(cells, tmp_path / "out", "--init-from", str(leaky), "--quiet"))
    err = capsys.readouterr().err
    assert code == 2
    assert "leaks subjects" in err and "parent model leaky" in err
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").glob("*.leukmodel"))


def test_a_leaking_split_is_refused_for_init_from_runs(cells, parent, tmp_path) -> None:
    from training.trainer import TrainConfig, train_backbone

    records = read_dataset(cells).records
    one = records[0].subject
    train = [r for r in records if r.subject != one] + [r for r in records if r.subject == one][:2]
    split = Split(
        train=train,
        validation=[r for r in records if r.subject == one][2:],
        test=[],
        method="manual",
        seed=0,
    )
    config = TrainConfig(backbone="efficientnetb0", input_size=SIZE, init_from=str(parent))
    with pytest.raises(LeakageError):
        train_backbone(split, config, tmp_path)
    assert not list(tmp_path.glob("*.leukmodel"))


# ---------------------------------------------------------------------------- guard rails


def _records(per_class: dict[str, tuple[int, int]]) -> list[Record]:
    """{label: (subjects, cells per subject)} as records (no files needed)."""
    out = []
    for label, (subjects, cells) in per_class.items():
        for s in range(subjects):
            for c in range(cells):
                out.append(Record(Path(f"{label}{s}_{c}.png"), label, f"{label[0]}{s}"))
    return out


def test_no_guard_rail_warning_for_good_data() -> None:
    from training.run import data_warnings

    good = _records({"ALL": (6, 10), "HEM": (5, 12)})
    assert data_warnings(good, Counter({"alice": 60, "bob": 60})) == []
    assert data_warnings(good, None) == []  # no reviewer column: nothing to say


def test_too_few_subjects_of_a_class_warns_with_its_rule() -> None:
    from training.run import data_warnings

    [warning] = data_warnings(_records({"ALL": (6, 10), "HEM": (4, 15)}))
    assert warning.startswith("HEM has 4 subject(s) in the data set")
    assert "rule: warn below 5 subjects per class" in warning


def test_extreme_class_balance_warns_with_its_rule() -> None:
    from training.run import data_warnings

    [warning] = data_warnings(_records({"ALL": (6, 30), "HEM": (6, 3)}))
    assert warning.startswith("HEM is 9.1% of the cells (18 of 198")
    assert "rule: warn below 10% per class" in warning


def test_one_reviewer_warns_and_two_do_not(tmp_path) -> None:
    from training.run import data_warnings, reviewers_of

    write_dataset(tmp_path, 3, 1, fmt="png", layout="cnmc", subjects=1, size=32)
    csv_path = _write_csv(tmp_path, ["carol", "carol", ""])
    records = read_dataset(csv_path).records
    reviewers = reviewers_of(csv_path, records)
    assert reviewers == Counter({"carol": 4, "": 2})
    good = _records({"ALL": (6, 10), "HEM": (6, 10)})
    [warning] = data_warnings(good, reviewers)
    assert "labelled by one reviewer (carol; rule:" in warning
    two = reviewers_of(_write_csv(tmp_path, ["carol", "dan"]), records)
    assert data_warnings(good, two) == []
    # a folder of images has no reviewer column
    assert reviewers_of(tmp_path / "all", records) is None


def test_init_from_defaults_match_the_help_text() -> None:
    """The fine-tune schedule the help, the README and the Training tab describe is the one
    the trainer uses (see INIT_FROM_DEFAULTS for why these rates: bench_learn.py)."""
    from leukgui.cli import build_parser
    from training.trainer import INIT_FROM_DEFAULTS

    assert INIT_FROM_DEFAULTS == {
        "epochs": 20,
        "head_epochs": 5,
        "head_lr": 1e-3,
        "fine_tune_lr": 1e-4,
    }
    train = build_parser()._subparsers._group_actions[0].choices["train"]
    text = " ".join(train.format_help().split())
    assert "defaults: 20 epochs at most, the first 5 training the head" in text
    assert "learning rates 1e-3 then 1e-4" in text
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    assert "(20 epochs at most, 5 of them for the head; learning rates 1e-3" in " ".join(
        readme.split()
    )
