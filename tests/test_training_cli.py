"""`leukgui train` and `leukgui evaluate` as a user runs them."""

from __future__ import annotations

import re
from pathlib import Path

import openpyxl
import pytest
from training_samples import write_subjects

from leukgui.cli import main
from leukgui.core.synthetic import write_dataset


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("cells")
    write_dataset(folder, 24, 17, fmt="png", layout="cnmc", subjects=6, size=64)
    return folder


@pytest.fixture(scope="module")
def comparison(data: Path, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("models")
    code = main(
        [
            "train",
            str(data),
            "--backbones",
            "vgg16,efficientnetb0",
            "--weights",
            "none",
            "--input-size",
            "32",
            "--epochs",
            "1",
            "--batch-size",
            "8",
            "--validation",
            "0.25",
            "--test",
            "0.25",
            "--out",
            str(out),
            "--quiet",
        ]
    )
    return code, out


def test_train_several_backbones_writes_bundles_and_a_comparison(comparison, capsys) -> None:
    code, out = comparison
    assert code == 0
    bundles = sorted(p.name for p in out.glob("*.leukmodel"))
    assert len(bundles) == 2
    assert bundles[0].startswith("efficientnetb0-") and bundles[1].startswith("vgg16-")
    from leukgui.core.bundle import load_bundle
    from leukgui.core.engine import Analyzer

    for path in sorted(out.glob("*.leukmodel")):  # each carries its checked inference graph
        bundle = load_bundle(path, keras=False)
        assert bundle.graph is not None and bundle.graph.origin == "bundle", path.name
        analyzer = Analyzer(bundle, "openvino")
        assert analyzer.runtime.engine == "openvino" and analyzer.runtime_notes == [], path.name
    md = next(out.glob("comparison-*.md")).read_text()
    rows = [
        line for line in md.splitlines() if line.startswith("| vgg16") or "efficientnetb0 |" in line
    ]
    assert len(rows) == 2
    wb = openpyxl.load_workbook(next(out.glob("comparison-*.xlsx")))
    text = {str(c.value) for row in wb["Comparison"].iter_rows() for c in row if c.value}
    assert {"vgg16", "efficientnetb0"} <= text


def test_both_backbones_were_scored_on_the_same_test_subjects(comparison) -> None:
    from leukgui.core.bundle import read_manifest

    _, out = comparison
    tests = [
        read_manifest(p)["training_data"]["split"]["subjects"]["test"]
        for p in out.glob("*.leukmodel")
    ]
    assert tests[0] == tests[1] and tests[0]


def test_evaluate_scores_a_bundle_and_writes_the_report(comparison, data, tmp_path, capsys):
    _, out = comparison
    bundle = next(out.glob("vgg16-*.leukmodel"))
    report = tmp_path / "eval.xlsx"
    code = main(["evaluate", str(bundle), str(data), "--out", str(report), "--quiet"])
    printed = capsys.readouterr().out
    assert code == 0
    assert re.search(r"48 cells of 12 subjects", printed), printed
    wb = openpyxl.load_workbook(report)
    assert {"Summary", "Metrics", "Subjects", "Predictions"} <= set(wb.sheetnames)
    assert wb["Predictions"].max_row >= 49


def test_evaluate_lists_unreadable_cells_and_exits_1(comparison, data, tmp_path, capsys):
    import shutil

    _, out = comparison
    bundle = next(out.glob("vgg16-*.leukmodel"))
    copy = tmp_path / "cells"
    shutil.copytree(data, copy)
    broken = copy / "all" / "UID_P1_99_1_all.png"
    broken.write_bytes(b"not a png")
    report = tmp_path / "eval.xlsx"
    code = main(["evaluate", str(bundle), str(copy), "--out", str(report), "--quiet"])
    assert code == 1
    assert "1 unreadable" in capsys.readouterr().out
    wb = openpyxl.load_workbook(report)
    errors = "\n".join(str(c.value) for row in wb["Errors"].iter_rows() for c in row if c.value)
    assert broken.name in errors


def test_train_usage_errors(data: Path, tmp_path: Path, capsys) -> None:
    assert main(["train", str(data), "--backbone", "alexnet", "--out", str(tmp_path)]) == 2
    assert "unknown backbone" in capsys.readouterr().err
    assert main(["train", str(tmp_path / "nothing"), "--out", str(tmp_path)]) == 3
    assert "no such file or folder" in capsys.readouterr().err
    assert main(["train", str(data), "--class-map", "blast", "--out", str(tmp_path)]) == 2


def test_train_without_imagenet_weights_says_where_to_put_them(data, tmp_path, capsys) -> None:
    code = main(["train", str(data), "--input-size", "32", "--out", str(tmp_path), "--quiet"])
    assert code == 4
    err = capsys.readouterr().err
    assert "efficientnetb0_notop.h5" in err and "never downloads" in err
    assert not list(tmp_path.glob("*.leukmodel"))


def test_evaluate_refuses_a_missing_model(data: Path, tmp_path: Path, capsys) -> None:
    code = main(
        ["evaluate", str(tmp_path / "x.leukmodel"), str(data), "--out", str(tmp_path / "e.xlsx")]
    )
    assert code == 4
    assert "not found" in capsys.readouterr().err


def test_train_with_too_few_subjects_says_why_without_a_traceback(tmp_path, capsys) -> None:
    data = write_subjects(tmp_path / "few", n_all=4, n_hem=2)
    out = tmp_path / "out"
    code = main(["train", str(data), "--weights", "none", "--out", str(out), "--quiet"])
    err = capsys.readouterr().err
    assert code == 3, err
    assert err.strip() == (
        "leukgui train: HEM has 2 subjects; a split by subject needs at least 3 per class "
        "(one each for training, validation and test)."
    )
    assert "Traceback" not in err and not out.exists()
