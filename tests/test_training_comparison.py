"""The backbone comparison: one row per run, as Excel and Markdown, the best one marked."""

from __future__ import annotations

from pathlib import Path

import openpyxl
import pytest
import training_samples as samples

from leukgui.core.atomic import ReportWriteError
from leukgui.core.results import ALL, HEM
from training.comparison import write_comparison
from training.history import TrainingRun


def _comparison_runs() -> list[TrainingRun]:
    weaker = samples.evaluation(
        [("P01", ALL, [0.9, 0.4, 0.3]), ("H01", HEM, [0.1, 0.6, 0.2])], "test"
    )  # balanced accuracy 50%
    return [
        samples.training_run(),
        samples.training_run(
            backbone="mobilenetv3small", test=weaker, bundle_path=Path("/m/mnv3.leukmodel")
        ),
        samples.training_run(backbone="=resnet50", test=None, bundle_path=None),
    ]


def test_comparison_markdown(tmp_path: Path) -> None:
    runs = _comparison_runs()
    xlsx, md = write_comparison(runs, tmp_path / "cmp.xlsx", tmp_path / "cmp.md")
    text = md.read_text(encoding="utf-8")
    assert text.startswith("# ")
    assert "grouped-stratified" in text and "seed 42" in text and "5 test subjects" in text
    table = [line for line in text.splitlines() if line.startswith("|")]
    header = [c.strip() for c in table[0].strip("|").split("|")]
    body = [[c.strip() for c in line.strip("|").split("|")] for line in table[2:]]
    assert len(body) == len(runs)
    col = {name: i for i, name in enumerate(header)}
    best = runs[0].test.metrics
    first = body[0]
    assert first[col["Backbone"]] == "efficientnetb0"
    assert first[col["Model file"]] == "cnmc-effnet-1.2.leukmodel"
    assert first[col["Balanced accuracy"]] == f"**{best.balanced_accuracy:.1%}**"
    assert first[col["Accuracy"]] == f"{best.accuracy:.1%}"
    assert first[col["Recall (sensitivity)"]] == f"{best.recall:.1%}"
    assert first[col["Test cells"]] == str(best.n)
    assert body[1][col["Balanced accuracy"]] == "50.0%"
    # No test split: validation scores, said so in the row and in a note line.
    assert body[2][col["Scored on"]].startswith("validation")
    assert body[2][col["Test cells"]] == str(runs[2].validation.metrics.n)
    assert "No test split for =resnet50" in text


def test_comparison_markdown_na(tmp_path: Path) -> None:
    one_class = samples.evaluation([("P01", ALL, [0.9, 0.3])], "test")
    _, md = write_comparison(
        [samples.training_run(test=one_class)], tmp_path / "c.xlsx", tmp_path / "c.md"
    )
    row = [line for line in md.read_text(encoding="utf-8").splitlines() if "| effic" in line]
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
    header_at = next(i for i, r in enumerate(rows) if r[0] == "Backbone")
    header = rows[header_at]
    ba = header.index("Balanced accuracy")
    body = rows[header_at + 1 : header_at + 1 + len(runs)]
    assert [r[0] for r in body] == ["efficientnetb0", "mobilenetv3small", "=resnet50"]
    assert body[0][ba] == pytest.approx(runs[0].test.metrics.balanced_accuracy)
    assert body[1][ba] == pytest.approx(0.5)
    assert body[2][ba] == pytest.approx(runs[2].validation.metrics.balanced_accuracy)
    assert body[0][header.index("Parameters")] == 4_049_571
    best_cell = ws.cell(row=header_at + 2, column=ba + 1)
    other_cell = ws.cell(row=header_at + 3, column=ba + 1)
    assert best_cell.font.b and not other_cell.font.b
    assert best_cell.fill.fgColor.rgb != other_cell.fill.fgColor.rgb
    assert ws.cell(row=header_at + 4, column=1).data_type == "s"


def test_comparison_warns_about_different_splits(tmp_path: Path) -> None:
    runs = [
        samples.training_run(),
        samples.training_run(backbone="resnet50", split=samples.split(["P01", "H01"])),
    ]
    _, md = write_comparison(runs, tmp_path / "c.xlsx", tmp_path / "c.md")
    text = md.read_text(encoding="utf-8")
    assert "WARNING: these runs do not share one split" in text
    assert "same held-out subjects" not in text


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
