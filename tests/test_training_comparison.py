"""The backbone comparison: one row per run, as Excel and Markdown; the model is chosen on the
validation part, the test part is reported once, and each other model is compared with the
chosen one on the same test subjects (paired bootstrap and McNemar's exact test)."""

from __future__ import annotations

import math
from pathlib import Path

import openpyxl
import pytest
import training_samples as samples

from leukgui.core.atomic import ReportWriteError
from leukgui.core.results import ALL, HEM
from training.comparison import write_comparison
from training.history import TrainingRun
from training.stats import paired_comparison

CHOSEN = "chosen (validation)"


def _interval_text(interval: tuple[float, float]) -> str:
    low, high = interval
    if not (math.isfinite(low) and math.isfinite(high)):
        return "n/a"
    return f"{low:.1%} – {high:.1%}"


def _comparison_runs() -> list[TrainingRun]:
    weaker = samples.evaluation(
        [("P01", ALL, [0.9, 0.4, 0.3]), ("H01", HEM, [0.1, 0.6, 0.2])], "test"
    )  # balanced accuracy 50%, one subject per class: no subject-bootstrap interval
    return [
        samples.training_run(),
        samples.training_run(
            backbone="mobilenetv3small", test=weaker, bundle_path=Path("/m/mnv3.leukmodel")
        ),
        samples.training_run(backbone="=resnet50", test=None, bundle_path=None),
    ]


# Validation: A looks better; test: B is better on every subject, on the very same cells.
_VAL_WORSE = [("V1", ALL, [0.9, 0.3, 0.35]), ("V2", HEM, [0.1, 0.3, 0.52])]
_SUBJECTS = [("P01", ALL), ("P02", ALL), ("P03", ALL), ("P04", ALL)] + [
    ("H01", HEM),
    ("H02", HEM),
    ("H03", HEM),
    ("H04", HEM),
]
# A: one wrong cell in every subject; B: every cell right.
_TEST_A = [(s, t, [0.9, 0.9, 0.2] if t == ALL else [0.1, 0.1, 0.8]) for s, t in _SUBJECTS]
_TEST_B = [(s, t, [0.9, 0.9, 0.9] if t == ALL else [0.1, 0.1, 0.1]) for s, t, _ in _TEST_A]


def _validation_vs_test_runs() -> list[TrainingRun]:
    split = samples.split([s for s, *_ in _TEST_A])
    a = samples.training_run(
        backbone="val-winner",
        split=split,
        validation=samples.evaluation(samples.VALIDATION_CELLS, "validation"),
        test=samples.evaluation(_TEST_A, "test"),
        bundle_path=Path("/m/a.leukmodel"),
    )
    b = samples.training_run(
        backbone="test-winner",
        split=split,
        validation=samples.evaluation(_VAL_WORSE, "validation"),
        test=samples.evaluation(_TEST_B, "test"),
        bundle_path=Path("/m/b.leukmodel"),
    )
    va, vb = a.validation.metrics, b.validation.metrics
    ta, tb = a.test.metrics, b.test.metrics
    assert va.balanced_accuracy > vb.balanced_accuracy  # the premise of the tests below
    assert tb.balanced_accuracy > ta.balanced_accuracy
    return [b, a]  # the test winner first, so "first row" or "best test" would be wrong


def _md_tables(text: str) -> list[list[list[str]]]:
    """Every Markdown table: a list of rows (header first, no separator), cells stripped."""
    tables: list[list[list[str]]] = []
    current: list[list[str]] = []
    for line in [*text.splitlines(), ""]:
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
            if not all(set(c) <= set("-: ") for c in cells):
                current.append(cells)
        elif current:
            tables.append(current)
            current = []
    return tables


def _xlsx_table(ws, first_header: str) -> tuple[int, tuple, list[tuple]]:
    """(0-based index of the header row, header, rows below it up to the first row that is
    blank or a note (text in the first cell only))."""
    rows = samples.sheet_rows(ws)
    at = next(i for i, r in enumerate(rows) if r[0] == first_header)
    body = []
    for r in rows[at + 1 :]:
        if r[0] is None or all(v is None for v in r[1:]):
            break
        body.append(r)
    return at, rows[at], body


# --------------------------------------------------------------------------- choice


def test_the_model_is_chosen_on_validation_not_test(tmp_path: Path) -> None:
    runs = _validation_vs_test_runs()
    xlsx, md = write_comparison(runs, tmp_path / "cmp.xlsx", tmp_path / "cmp.md")
    ws = openpyxl.load_workbook(xlsx)["Comparison"]
    at, header, body = _xlsx_table(ws, "Backbone")
    col = {name: i for i, name in enumerate(header) if name}
    assert [r[0] for r in body] == ["test-winner", "val-winner"]
    for r, run in zip(body, runs, strict=True):
        assert r[col["Validation balanced accuracy"]] == pytest.approx(
            run.validation.metrics.balanced_accuracy
        )
        assert r[col["Test balanced accuracy"]] == pytest.approx(run.test.metrics.balanced_accuracy)
    assert body[1][col["Chosen"]] == CHOSEN
    assert body[0][col["Chosen"]] is None
    # The chosen row (second) is bold across, with the choosing cells green; the test winner
    # is not bold anywhere although its test score is the higher one.
    chosen_row, other_row = at + 3, at + 2
    for c in range(1, len(header) + 1):
        assert ws.cell(row=chosen_row, column=c).font.b
        assert not ws.cell(row=other_row, column=c).font.b
    for name in ("Validation balanced accuracy", "Chosen"):
        chosen_cell = ws.cell(row=chosen_row, column=col[name] + 1)
        other_cell = ws.cell(row=other_row, column=col[name] + 1)
        assert chosen_cell.fill.fgColor.rgb != other_cell.fill.fgColor.rgb
    test_col = col["Test balanced accuracy"] + 1
    assert ws.cell(row=chosen_row, column=test_col).fill.fgColor.rgb == (
        ws.cell(row=other_row, column=test_col).fill.fgColor.rgb
    )  # no "best test" highlight
    # Markdown: the same choice.
    table = _md_tables(md.read_text(encoding="utf-8"))[0]
    mcol = {name: i for i, name in enumerate(table[0])}
    rows = {r[0].strip("*"): r for r in table[1:]}
    assert rows["val-winner"][0] == "**val-winner**"  # the whole chosen row is bold
    assert rows["val-winner"][mcol["Chosen"]] == f"**{CHOSEN}**"
    assert rows["val-winner"][mcol["Test balanced accuracy"]] == (
        f"**{runs[1].test.metrics.balanced_accuracy:.1%}**"
    )
    assert rows["test-winner"][mcol["Chosen"]] == ""
    assert not any(c.startswith("**") for c in rows["test-winner"])
    assert rows["test-winner"][mcol["Test balanced accuracy"]] == (
        f"{runs[0].test.metrics.balanced_accuracy:.1%}"
    )


def test_paired_table_against_the_chosen_model(tmp_path: Path) -> None:
    runs = _validation_vs_test_runs()
    b, a = runs
    xlsx, md = write_comparison(runs, tmp_path / "cmp.xlsx", tmp_path / "cmp.md")
    expected = paired_comparison(
        b.test.predictions,
        a.test.predictions,
        b.test.threshold,
        a.test.threshold,
        name_a="test-winner",
        name_b="val-winner",
    )
    # B is right on every cell, A wrong on one cell per subject: B better, and said so.
    assert expected.verdict == "test-winner better"
    assert expected.interval[0] > 0
    ws = openpyxl.load_workbook(xlsx)["Comparison"]
    texts = samples.sheet_texts(ws)
    assert "Paired differences on the same test subjects" in texts
    _, header, body = _xlsx_table(ws, "Model")
    col = {name: i for i, name in enumerate(header) if name}
    assert len(body) == 1  # only the other model; the chosen one is not compared with itself
    r = body[0]
    assert r[col["Model"]] == "test-winner"
    assert r[col["Compared with (chosen)"]] == "val-winner"
    assert r[col["Test subjects"]] == expected.subjects == 8
    assert r[col["Test cells"]] == expected.cells == a.test.metrics.n
    assert r[col["Balanced accuracy"]] == pytest.approx(b.test.metrics.balanced_accuracy)
    assert r[col["Chosen's balanced accuracy"]] == pytest.approx(a.test.metrics.balanced_accuracy)
    assert r[col["Difference (% points)"]] == pytest.approx(100 * expected.difference)
    low, high = expected.interval
    assert r[col["95% CI of difference"]] == f"{100 * low:+.1f} to {100 * high:+.1f}"
    assert r[col["Only this one right"]] == expected.mcnemar_b == 8
    assert r[col["Only chosen right"]] == expected.mcnemar_c == 0
    p_text = "<0.001" if expected.mcnemar_p < 0.001 else f"{expected.mcnemar_p:.3f}"
    assert r[col["McNemar p (exact)"]] == p_text
    # 4 subjects per class: the paired bootstrap's verdict is said not to be conclusive.
    assert r[col["Verdict"]] == "test-winner better (not conclusive: too few subjects per class)"
    # Markdown: the same row.
    tables = _md_tables(md.read_text(encoding="utf-8"))
    assert "## Paired differences on the same test subjects" in md.read_text(encoding="utf-8")
    paired = tables[1]
    pcol = {name: i for i, name in enumerate(paired[0])}
    assert len(paired) == 2
    row = paired[1]
    assert row[pcol["Model"]] == "test-winner"
    assert row[pcol["Difference (% points)"]] == f"{100 * expected.difference:+.1f}"
    assert row[pcol["95% CI of difference"]] == f"{100 * low:+.1f} to {100 * high:+.1f}"
    assert row[pcol["McNemar p (exact)"]] == p_text
    assert row[pcol["Verdict"]].startswith("test-winner better")


def test_identical_predictions_show_no_detectable_difference(tmp_path: Path) -> None:
    test = samples.evaluation(samples.WIDE_TEST_CELLS, "test")
    split = samples.split([s for s, *_ in samples.WIDE_TEST_CELLS])
    runs = [
        samples.training_run(split=split, test=test),
        samples.training_run(backbone="twin", split=split, test=test, parameters=9_000_000),
    ]
    xlsx, md = write_comparison(runs, tmp_path / "cmp.xlsx", tmp_path / "cmp.md")
    ws = openpyxl.load_workbook(xlsx)["Comparison"]
    _, header, body = _xlsx_table(ws, "Backbone")
    col = {name: i for i, name in enumerate(header) if name}
    # Equal validation scores: the tie goes to the smaller network.
    assert [r[col["Chosen"]] for r in body] == [CHOSEN, None]
    _, header, paired = _xlsx_table(ws, "Model")
    pcol = {name: i for i, name in enumerate(header) if name}
    assert len(paired) == 1
    r = paired[0]
    assert r[pcol["Model"]] == "twin" and r[pcol["Compared with (chosen)"]] == "efficientnetb0"
    assert r[pcol["Difference (% points)"]] == 0
    assert r[pcol["95% CI of difference"]] == "+0.0 to +0.0"
    assert (r[pcol["Only this one right"]], r[pcol["Only chosen right"]]) == (0, 0)
    assert r[pcol["McNemar p (exact)"]] == "1.000"
    assert r[pcol["Verdict"]] == "no detectable difference"
    assert "| no detectable difference |" in md.read_text(encoding="utf-8")


def test_a_single_model_has_no_paired_rows(tmp_path: Path) -> None:
    xlsx, md = write_comparison([samples.training_run()], tmp_path / "c.xlsx", tmp_path / "c.md")
    assert "None: fewer than two models with a test part." in samples.sheet_texts(
        openpyxl.load_workbook(xlsx)["Comparison"]
    )
    text = md.read_text(encoding="utf-8")
    assert "None: fewer than two models with a test part." in text
    assert len(_md_tables(text)) == 1


# --------------------------------------------------------------------------- tables


def test_comparison_markdown(tmp_path: Path) -> None:
    runs = _comparison_runs()
    xlsx, md = write_comparison(runs, tmp_path / "cmp.xlsx", tmp_path / "cmp.md")
    text = md.read_text(encoding="utf-8")
    assert text.startswith("# ")
    assert "grouped-stratified" in text and "seed 42" in text and "5 test subjects" in text
    assert "Chosen on the validation part" in text
    table = _md_tables(text)[0]
    header, body = table[0], table[1:]
    assert len(body) == len(runs)
    col = {name: i for i, name in enumerate(header)}
    assert "Balanced accuracy" not in col  # the old "best by test" column is gone
    test = runs[0].test
    m = test.metrics
    first = body[0]
    # Equal validation scores and sizes: the first run keeps the choice.
    assert first[col["Backbone"]] == "**efficientnetb0**"
    assert first[col["Model file"]] == "**cnmc-effnet-1.2.leukmodel**"
    assert first[col["Chosen"]] == f"**{CHOSEN}**"
    assert first[col["Validation balanced accuracy"]] == (
        f"**{runs[0].validation.metrics.balanced_accuracy:.1%}**"
    )
    assert first[col["Test balanced accuracy"]] == f"**{m.balanced_accuracy:.1%}**"
    ci = test.intervals.intervals["balanced_accuracy"]
    assert first[col["95% CI (subjects)"]] == f"**{_interval_text(ci)}**"
    assert first[col["Test accuracy"]] == f"**{m.accuracy:.1%}**"
    assert first[col["Test recall (sensitivity)"]] == f"**{m.recall:.1%}**"
    assert first[col["Test weighted F1"]] == f"**{m.weighted_f1:.1%}**"
    assert first[col["Test cells"]] == f"**{m.n}**"
    assert first[col["Test subjects"]] == f"**{len(test.subjects)}**"
    second = body[1]
    assert second[col["Chosen"]] == ""
    assert second[col["Test balanced accuracy"]] == "50.0%"
    assert second[col["95% CI (subjects)"]] == "n/a"  # one subject per class: undefined
    assert second[col["Test subject-level accuracy"]] == (
        f"{runs[1].test.subject_level.metrics.accuracy:.1%}"
    )
    # No test part: said so in the row and in a note line; the validation score still shows.
    third = body[2]
    assert third[col["Backbone"]] == "=resnet50"
    assert third[col["95% CI (subjects)"]] == "no test part"
    assert third[col["Test cells"]] == "n/a" and third[col["Test balanced accuracy"]] == "n/a"
    assert third[col["Validation balanced accuracy"]] == (
        f"{runs[2].validation.metrics.balanced_accuracy:.1%}"
    )
    assert "No test part for =resnet50" in text


def test_comparison_markdown_na(tmp_path: Path) -> None:
    one_class = samples.evaluation([("P01", ALL, [0.9, 0.3])], "test")
    _, md = write_comparison(
        [samples.training_run(test=one_class)], tmp_path / "c.xlsx", tmp_path / "c.md"
    )
    row = [line for line in md.read_text(encoding="utf-8").splitlines() if "| **effic" in line]
    assert len(row) == 1 and "n/a" in row[0] and "50.0%" in row[0]


def test_comparison_xlsx(tmp_path: Path) -> None:
    runs = _comparison_runs()
    xlsx, _ = write_comparison(runs, tmp_path / "cmp.xlsx", tmp_path / "cmp.md")
    wb = openpyxl.load_workbook(xlsx)
    assert wb.sheetnames == ["Comparison"]
    ws = wb["Comparison"]
    rows = samples.sheet_rows(ws)
    assert any("seed 42" in str(r[0]) and "5 test subjects" in str(r[0]) for r in rows)
    assert any("one confusion matrix per model" in str(r[0]) for r in rows)
    assert any(str(r[0]).startswith("No test part for =resnet50") for r in rows)
    header_at, header, body = _xlsx_table(ws, "Backbone")
    col = {name: i for i, name in enumerate(header) if name}
    assert "Balanced accuracy" not in col
    ba = col["Test balanced accuracy"]
    assert len(body) == len(runs)
    assert [r[0] for r in body] == ["efficientnetb0", "mobilenetv3small", "=resnet50"]
    for r, run in zip(body, runs, strict=True):
        assert r[col["Validation balanced accuracy"]] == pytest.approx(
            run.validation.metrics.balanced_accuracy
        )
    test = runs[0].test
    assert body[0][ba] == pytest.approx(test.metrics.balanced_accuracy)
    assert body[0][col["95% CI (subjects)"]] == _interval_text(
        test.intervals.intervals["balanced_accuracy"]
    )
    assert body[0][col["Test cells"]] == test.metrics.n
    assert body[0][col["Test subjects"]] == len(test.subjects)
    assert body[0][col["Test weighted F1"]] == pytest.approx(test.metrics.weighted_f1)
    assert body[0][col["Test subject-level accuracy"]] == pytest.approx(
        test.subject_level.metrics.accuracy
    )
    assert body[0][col["Test ECE"]] == pytest.approx(test.ece)
    assert body[0][col["Threshold"]] == pytest.approx(test.threshold)
    assert body[0][col["Chosen"]] == CHOSEN
    assert body[1][ba] == pytest.approx(0.5)
    assert body[1][col["95% CI (subjects)"]] == "n/a"
    assert body[1][col["Chosen"]] is None
    assert body[2][ba] == "n/a"
    assert body[2][col["95% CI (subjects)"]] == "no test part"
    assert body[0][col["Parameters"]] == 4_049_571
    best_cell = ws.cell(row=header_at + 2, column=col["Validation balanced accuracy"] + 1)
    other_cell = ws.cell(row=header_at + 3, column=col["Validation balanced accuracy"] + 1)
    assert best_cell.font.b and not other_cell.font.b
    assert best_cell.fill.fgColor.rgb != other_cell.fill.fgColor.rgb
    # A backbone name like "=resnet50" stays inert text.
    assert ws.cell(row=header_at + 4, column=1).value == "=resnet50"
    assert ws.cell(row=header_at + 4, column=1).data_type == "s"
    assert ws.page_setup.orientation == "landscape"
    assert ws.print_title_rows == f"${header_at + 1}:${header_at + 1}"


def test_comparison_warns_about_different_splits(tmp_path: Path) -> None:
    runs = [
        samples.training_run(),
        samples.training_run(backbone="resnet50", split=samples.split(["P01", "H01"])),
    ]
    _, md = write_comparison(runs, tmp_path / "c.xlsx", tmp_path / "c.md")
    text = md.read_text(encoding="utf-8")
    assert "WARNING: these runs do not share one split" in text
    assert "same held-out subjects" not in text


def test_comparison_warns_about_a_split_by_image(tmp_path: Path) -> None:
    split = {**samples.split(), "split_by": "image"}
    runs = [samples.training_run(split=split), samples.training_run(backbone="b", split=split)]
    xlsx, md = write_comparison(runs, tmp_path / "c.xlsx", tmp_path / "c.md")
    assert "WARNING: split by image" in md.read_text(encoding="utf-8")
    assert any(
        t.startswith("WARNING: split by image")
        for t in samples.sheet_texts(openpyxl.load_workbook(xlsx)["Comparison"])
    )


def test_comparison_needs_runs(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        write_comparison([], tmp_path / "c.xlsx", tmp_path / "c.md")


def test_failed_md_write_keeps_the_previous_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, md = write_comparison([samples.training_run()], tmp_path / "c.xlsx", tmp_path / "c.md")
    before = md.read_bytes()

    def partial_write(self: Path, data: object, *args: object, **kw: object) -> None:
        with open(self, "wb") as fh:
            fh.write(b"partial")
        samples.fail_disk_full()

    monkeypatch.setattr(Path, "write_text", partial_write)
    with pytest.raises(ReportWriteError):
        write_comparison([samples.training_run(backbone="other")], tmp_path / "c.xlsx", md)
    assert md.read_bytes() == before


def test_models_scored_on_different_cells_are_not_paired(tmp_path: Path) -> None:
    runs = _comparison_runs()[:2]  # the second run's test part holds other cells
    xlsx, md = write_comparison(runs, tmp_path / "c.xlsx", tmp_path / "c.md")
    _, header, paired = _xlsx_table(openpyxl.load_workbook(xlsx)["Comparison"], "Model")
    col = {name: i for i, name in enumerate(header) if name}
    assert len(paired) == 1
    r = paired[0]
    assert r[col["Model"]] == "mobilenetv3small"
    assert r[col["Verdict"]].startswith("the two prediction sets hold different cells")
    for name in ("Test subjects", "Difference (% points)", "McNemar p (exact)"):
        assert r[col[name]] == "n/a"


def test_unpaired_models_show_na_for_the_interval(tmp_path: Path) -> None:
    runs = _comparison_runs()[:2]
    xlsx, md = write_comparison(runs, tmp_path / "c.xlsx", tmp_path / "c.md")
    _, header, paired = _xlsx_table(openpyxl.load_workbook(xlsx)["Comparison"], "Model")
    assert paired[0][header.index("95% CI of difference")] == "n/a"
    assert "| nan |" not in md.read_text(encoding="utf-8")


def test_a_chosen_model_without_test_part_is_named_as_the_reason(tmp_path: Path) -> None:
    runs = _validation_vs_test_runs()
    chosen = next(r for r in runs if r.backbone == "val-winner")
    chosen.test = None
    third = samples.training_run(
        backbone="third",
        split=runs[0].split,
        validation=samples.evaluation(samples.VALIDATION_CELLS, "validation"),
        test=samples.evaluation(_TEST_B, "test"),
    )
    third.parameters = (chosen.parameters or 0) + 1  # ties on validation go to the smaller one
    _, md = write_comparison([*runs, third], tmp_path / "c.xlsx", tmp_path / "c.md")
    text = md.read_text(encoding="utf-8")
    assert "None: the model chosen on validation has no test part to pair the others with." in text
    assert "fewer than two models with a test part" not in text
