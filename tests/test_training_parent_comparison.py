"""Every fine-tune (`leukgui train --init-from`) ends with the parent against the new model on
the same held-out test cells: both models' metrics, the paired subject-bootstrap difference in
balanced accuracy, McNemar's exact test, the cells they label differently, in the training
report's "Parent vs new" sheet, the bundle's manifest and on the command line.

The parent is a tiny random-weights EfficientNetB0 (as in test_training_init_from.py); the
fine-tune runs one epoch on 32 px synthetic cells, 6 subjects per class, 4 of them in test.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import openpyxl
import pytest

from leukgui.core.synthetic import write_dataset
from training.comparison import (
    DISAGREEMENT_CAP,
    PARENT_SHEET,
    compare_with_parent,
)
from training.predictions import Predictions
from training.scoring import evaluate_predictions
from training.stats import mcnemar_exact, paired_bootstrap, paired_comparison

SIZE = 32
SUBJECTS = 6  # per class; validation 0.2 and test 0.4 put 2 of each class in test


def _save_parent(folder: Path) -> Path:
    from leukgui.core.backbones import build_classifier
    from leukgui.core.bundle import make_manifest, save_bundle

    model = build_classifier("efficientnetb0", weights=None, input_size=SIZE, seed=3)
    split = {"subjects": {"train": ["elsewhere-1"], "validation": ["elsewhere-2"], "test": []}}
    manifest = make_manifest(
        name="labmodel",
        version="2026-11-01",
        backbone="efficientnetb0",
        input_size=SIZE,
        threshold=0.5,
        uncertainty_band=(0.4, 0.6),
        training_data={"split": split},
    )
    return save_bundle(model, manifest, folder / "labmodel.leukmodel", inference_graph=False)


@pytest.fixture(scope="module")
def cells(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("cells")
    write_dataset(folder, 24, 5, fmt="png", layout="cnmc", subjects=SUBJECTS, size=48)
    return folder


@pytest.fixture(scope="module")
def parent(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _save_parent(tmp_path_factory.mktemp("parent"))


def _argv(cells: Path, parent: Path, out: Path) -> list[str]:
    return [
        "train",
        str(cells),
        "--init-from",
        str(parent),
        "--epochs",
        "1",
        "--head-epochs",
        "1",
        "--batch-size",
        "8",
        "--validation",
        "0.2",
        "--test",
        "0.4",
        "--bootstrap",
        "200",
        "--no-inference-graph",
        "--no-augment",
        "--out",
        str(out),
    ]


@pytest.fixture(scope="module")
def fine_tuned(cells: Path, parent: Path, tmp_path_factory: pytest.TempPathFactory):
    """(out folder, stdout, parent path, cells folder) of one CLI fine-tune."""
    from leukgui.cli import build_parser
    from leukgui.cli.train import cmd_train

    out = tmp_path_factory.mktemp("models")
    argv = _argv(cells, parent, out)
    stdout, stderr = io.StringIO(), io.StringIO()
    code = cmd_train(build_parser().parse_args(argv), stdout, stderr)
    assert code == 0, stderr.getvalue()
    return out, stdout.getvalue(), parent, cells


def _sheet(out: Path):
    [report] = list(out.glob("*-training/training_report.xlsx"))
    wb = openpyxl.load_workbook(report)
    assert PARENT_SHEET in wb.sheetnames
    return wb[PARENT_SHEET]


def _rows(ws) -> list[list]:
    return [[c.value for c in row] for row in ws.iter_rows()]


def _value(ws, key: str):
    for row in _rows(ws):
        if row[0] == key:
            return row[1:]
    raise AssertionError(f"no row {key!r}")


@pytest.fixture(scope="module")
def direct(fine_tuned):
    """Both saved bundles scored again on the test cells, independently of the session."""
    from leukgui.core.bundle import read_manifest
    from training.datasets import read_dataset
    from training.run import score_parent
    from training.trainer import TrainConfig

    out, _, parent, cells = fine_tuned
    [bundle] = list(out.glob("*.leukmodel"))
    manifest = read_manifest(bundle)
    test_subjects = set(manifest["training_data"]["split"]["subjects"]["test"])
    records = [r for r in read_dataset(cells).records if r.subject in test_subjects]
    config = TrainConfig(
        backbone="efficientnetb0", input_size=SIZE, batch_size=8, bootstrap_resamples=200
    )
    return (
        score_parent(parent, records, config),  # the parent
        score_parent(bundle, records, config),  # the new model, from its file
        manifest,
        records,
    )


def test_the_sheet_shows_both_models_metrics(fine_tuned, direct) -> None:
    parent_eval, new_eval, _, records = direct
    ws = _sheet(fine_tuned[0])
    rows = _rows(ws)
    header = next(r for r in rows if r[0] == "Metric")
    assert header[1].startswith("Parent (labmodel v2026-11-01)") and header[2] == "New model"
    assert _value(ws, "Test cells")[:2] == [len(records), len(records)] == [16, 16]
    assert _value(ws, "Test subjects")[:2] == [4, 4]
    for key, attr in (
        ("Balanced accuracy", "balanced_accuracy"),
        ("Sensitivity (recall, ALL)", "recall"),
        ("Specificity (HEM)", "specificity"),
        ("ROC AUC", "roc_auc"),
    ):
        old, new = _value(ws, key)[:2]
        for shown, ev in ((old, parent_eval), (new, new_eval)):
            want = getattr(ev.metrics, attr)
            assert (shown is None and math.isnan(want)) or shown == pytest.approx(want, abs=1e-6)
    old_t, new_t = _value(ws, "Threshold (each model's own)")[:2]
    assert old_t == pytest.approx(0.5) and new_t == pytest.approx(new_eval.threshold)


def test_paired_interval_is_over_subjects_and_holds_the_estimate(fine_tuned, direct) -> None:
    parent_eval, new_eval, manifest, records = direct
    record = manifest["comparison"]
    boot = paired_bootstrap(
        new_eval.predictions,
        parent_eval.predictions,
        new_eval.threshold,
        parent_eval.threshold,
        resamples=200,
        seed=2019,
    )
    assert boot.unit == "subject"
    assert sorted(boot.units) == sorted({r.subject for r in records})  # 4 units, not 16 cells
    assert len(boot.units) == 4 and len(records) == 16
    # two subjects per class: at most 3 x 3 distinct draws, so at most 9 distinct differences
    assert len(np.unique(boot.differences)) <= 9
    low, high = np.quantile(boot.differences, [0.025, 0.975])
    assert record["interval"] == [pytest.approx(low), pytest.approx(high)]
    assert low - 1e-12 <= record["difference"] <= high + 1e-12
    assert record["bootstrap"] == {"unit": "subject", "resamples": 200, "seed": 2019}
    ws = _sheet(fine_tuned[0])
    assert _value(ws, "95% CI (percentage points)")[0] == f"{100 * low:+.1f} to {100 * high:+.1f}"
    assert "resampling 4 subjects (not cells)" in _value(ws, "Bootstrap")[0]


def test_mcnemar_counts_and_disagreements_match_a_direct_count(fine_tuned, direct) -> None:
    parent_eval, new_eval, manifest, _ = direct
    p_old = dict(zip(parent_eval.predictions.paths, parent_eval.predictions.p_all, strict=True))
    old_call = {p: ("ALL" if v >= parent_eval.threshold else "HEM") for p, v in p_old.items()}
    n = new_eval.predictions
    new_call = {
        p: ("ALL" if v >= new_eval.threshold else "HEM")
        for p, v in zip(n.paths, n.p_all, strict=True)
    }
    truth = dict(zip(n.paths, n.truth, strict=True))
    only_new = sum(new_call[p] == truth[p] != old_call[p] for p in n.paths)
    only_old = sum(old_call[p] == truth[p] != new_call[p] for p in n.paths)
    record = manifest["comparison"]
    assert (record["only_new_right"], record["only_parent_right"]) == (only_new, only_old)
    assert record["mcnemar_p"] == pytest.approx(mcnemar_exact(only_new, only_old))
    ws = _sheet(fine_tuned[0])
    assert _value(ws, "Only the new model right (cells)")[0] == only_new
    assert _value(ws, "Only the parent right (cells)")[0] == only_old

    differ = sorted(p for p in n.paths if new_call[p] != old_call[p])
    rows = _rows(ws)
    at = next(i for i, r in enumerate(rows) if r[:2] == ["Thumbnail", "Path"])
    listed = [r for r in rows[at + 1 :] if r[1]]
    assert sorted(r[1] for r in listed) == differ
    for r in listed:
        assert (r[5], r[7]) == (old_call[r[1]], new_call[r[1]])
        assert r[3] == truth[r[1]]
        assert r[4] == pytest.approx(p_old[r[1]], abs=1e-6)
    assert record["disagreements"] == len(differ)
    assert len(ws._images) == len(differ)  # one thumbnail per disagreement (a written sheet)


def test_manifest_record_matches_the_sheet(fine_tuned, direct) -> None:
    from leukgui.core.bundle import load_bundle, read_manifest

    out, _, parent, _ = fine_tuned
    record = direct[2]["comparison"]
    assert record["parent_bundle_sha256"] == read_manifest(parent)["bundle_sha256"]
    assert (record["cells"], record["subjects"]) == (16, 4)
    ws = _sheet(out)
    old, new = _value(ws, "Balanced accuracy")[:2]
    assert record["balanced_accuracy_parent"] == pytest.approx(old)
    assert record["balanced_accuracy_new"] == pytest.approx(new)
    assert record["difference"] == pytest.approx(new - old)
    assert _value(ws, "Difference (percentage points)")[0] == pytest.approx(100 * (new - old))
    assert record["verdict"] == ws["A2"].value
    assert record["parent_split_known"] is True
    [bundle] = list(out.glob("*.leukmodel"))
    load_bundle(bundle, keras=False)  # still a valid, signed bundle after the record was added


def test_cli_prints_the_verdict(fine_tuned) -> None:
    out, stdout, _, _ = fine_tuned
    verdict = _sheet(out)["A2"].value
    assert f"  parent vs new: {verdict}\n" in stdout
    assert verdict.startswith("The new model's balanced accuracy ")
    assert "on 16 cells from 4 subjects the parent never saw" in verdict
    assert "McNemar p = " in verdict


# ---------------------------------------------------------------------------- statistics


@pytest.mark.parametrize(("b", "c"), [(0, 0), (0, 5), (3, 9), (7, 7), (1, 20), (40, 25)])
def test_mcnemar_exact_equals_a_binomial_test_on_the_discordant_cells(b: int, c: int) -> None:
    scipy_stats = pytest.importorskip("scipy.stats")
    want = 1.0 if b + c == 0 else scipy_stats.binomtest(b, b + c, 0.5).pvalue
    assert mcnemar_exact(b, c) == pytest.approx(want, rel=1e-9)
    contingency = pytest.importorskip("statsmodels.stats.contingency_tables")
    if b + c:
        table = [[10, b], [c, 10]]
        assert mcnemar_exact(b, c) == pytest.approx(
            contingency.mcnemar(table, exact=True).pvalue, rel=1e-9
        )


def _predictions(
    spec: dict[str, tuple[str, list[float]]], truths: dict[str, list[str]] | None = None
):
    paths, subjects, truth, p = [], [], [], []
    for subject, (label, scores) in spec.items():
        labels = (truths or {}).get(subject) or [label] * len(scores)
        for i, (value, t) in enumerate(zip(scores, labels, strict=True)):
            paths.append(f"/cells/{subject}_{i}.png")
            subjects.append(subject)
            truth.append(t)
            p.append(value)
    return Predictions(paths, subjects, truth, p)


def test_paired_bootstrap_resamples_the_three_subjects_not_the_cells() -> None:
    # three subjects, each mostly ALL cells with some HEM: one stratum of 3 units, 24 cells
    truths = {s: ["ALL"] * 6 + ["HEM"] * 2 for s in ("s1", "s2", "s3")}
    rng = np.random.default_rng(0)
    a = _predictions({s: ("ALL", rng.uniform(0, 1, 8).tolist()) for s in truths}, truths)
    b = Predictions(a.paths, a.subjects, a.truth, rng.uniform(0, 1, 24).tolist())
    boot = paired_bootstrap(a, b, 0.5, 0.5, resamples=500, seed=1)
    assert boot.unit == "subject" and boot.units == ("s1", "s2", "s3") and boot.note is None
    # draws of 3 of 3 subjects with replacement: at most C(5, 3) = 10 distinct multisets
    assert len(np.unique(np.round(boot.differences, 12))) <= 10
    c = paired_comparison(a, b, 0.5, 0.5, name_a="a", name_b="b", resamples=500, seed=1)
    assert c.subjects == 3 and c.cells == 24 and c.unit == "subject"
    assert c.interval == pytest.approx(tuple(np.quantile(boot.differences, [0.025, 0.975])))


def test_paired_bootstrap_with_one_subject_of_a_class_gives_no_interval() -> None:
    a = _predictions({"p1": ("ALL", [0.9, 0.8]), "p2": ("ALL", [0.7, 0.2]), "h1": ("HEM", [0.1])})
    boot = paired_bootstrap(a, a, 0.5, 0.5, resamples=100)
    assert boot.units == ("h1", "p1", "p2") or sorted(boot.units) == ["h1", "p1", "p2"]
    assert len(boot.differences) == 0 and "fewer than 2 subjects" in boot.note
    c = paired_comparison(a, a, 0.5, 0.5, name_a="a", name_b="b", resamples=100)
    assert all(math.isnan(v) for v in c.interval)


def _evaluation(preds: Predictions, threshold: float, part: str):
    return evaluate_predictions(
        preds, threshold, (threshold - 0.1, threshold + 0.1), part, resamples=100
    )


def test_compare_with_parent_lists_disagreements_and_records_json_safe_numbers() -> None:
    import json

    new = _predictions(
        {
            "p1": ("ALL", [0.9, 0.8, 0.3]),
            "p2": ("ALL", [0.7, 0.6, 0.65]),
            "h1": ("HEM", [0.1, 0.2, 0.55]),
            "h2": ("HEM", [0.3, 0.1, 0.2]),
        }
    )
    order = list(reversed(range(len(new))))  # the parent's cells in another order
    old_p = [0.6, 0.4, 0.45, 0.3, 0.52, 0.7, 0.2, 0.1, 0.8, 0.9, 0.35, 0.2]
    parent = Predictions(
        [new.paths[i] for i in order],
        [new.subjects[i] for i in order],
        [new.truth[i] for i in order],
        [old_p[i] for i in order],
    )
    c = compare_with_parent(
        _evaluation(new, 0.5, "test"),
        _evaluation(parent, 0.5, "test (parent)"),
        {"name": "lab", "version": "1", "bundle_sha256": "ab" * 32},
        resamples=200,
    )
    call = lambda v: "ALL" if v >= 0.5 else "HEM"  # noqa: E731
    want = [i for i in range(len(new)) if call(new.p_all[i]) != call(old_p[i])]
    assert [d.path for d in c.disagreements] == [new.paths[i] for i in want]
    d = c.disagreements[0]
    i = want[0]
    assert (d.parent_p_all, d.new_p_all) == (old_p[i], new.p_all[i])
    record = c.manifest_record()
    json.dumps(record, allow_nan=False)  # no NaN in a manifest
    assert record["parent_split_known"] is False
    assert "records no training subjects, so it may have seen some of them" in c.verdict
    assert record["cells"] == 12 and record["subjects"] == 4
    assert DISAGREEMENT_CAP == 200


def test_the_sheet_caps_the_disagreement_rows(tmp_path) -> None:
    from openpyxl import Workbook

    from training.reports import parent_sheet

    n = DISAGREEMENT_CAP + 5
    spec = {f"s{k}": ("ALL" if k % 2 else "HEM", [0.9] * (n // 4 + 1)) for k in range(4)}
    new = _predictions(spec)
    parent = Predictions(new.paths, new.subjects, new.truth, [0.1] * len(new))
    c = compare_with_parent(
        _evaluation(new, 0.5, "test"),
        _evaluation(parent, 0.5, "test (parent)"),
        {"name": "lab", "version": "1", "bundle_sha256": "ab" * 32},
        resamples=100,
    )
    assert len(c.disagreements) == len(new) > DISAGREEMENT_CAP
    wb = Workbook()
    parent_sheet(wb.active, c, thumbnails=False)
    rows = _rows(wb.active)
    at = next(i for i, r in enumerate(rows) if r[:2] == ["Thumbnail", "Path"])
    assert len([r for r in rows[at + 1 :] if r[1]]) == DISAGREEMENT_CAP
    assert any(
        isinstance(r[0], str) and r[0].startswith(f"Only the first {DISAGREEMENT_CAP} of")
        for r in rows
    )


def test_a_failed_comparison_keeps_the_model_and_warns(cells, parent, tmp_path, monkeypatch):
    from leukgui.cli import build_parser
    from leukgui.cli.train import cmd_train
    from leukgui.core.bundle import BundleError, read_manifest

    def broken(*_args, **_kwargs):
        raise BundleError("labmodel.leukmodel: gone")

    monkeypatch.setattr("training.run.score_parent", broken)
    stdout, stderr = io.StringIO(), io.StringIO()
    code = cmd_train(build_parser().parse_args(_argv(cells, parent, tmp_path)), stdout, stderr)
    assert code == 0, stderr.getvalue()
    needle = "the comparison with the parent model could not be made: labmodel.leukmodel: gone"
    assert f"WARNING: {needle}" in stdout.getvalue()
    assert "parent vs new:" not in stdout.getvalue()
    [bundle] = list(tmp_path.glob("*.leukmodel"))
    assert "comparison" not in read_manifest(bundle)
    [report] = list(tmp_path.glob("*-training/training_report.xlsx"))
    assert PARENT_SHEET not in openpyxl.load_workbook(report).sheetnames
