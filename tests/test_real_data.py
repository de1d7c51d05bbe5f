"""The six real C-NMC cells in ../shared/data, when that folder is present."""

from __future__ import annotations

from pathlib import Path

import openpyxl
import pytest
from conftest import CNMC_SAMPLES

from leukgui import cli

pytestmark = pytest.mark.skipif(
    not CNMC_SAMPLES.is_dir(),
    reason=f"real C-NMC samples not present at {CNMC_SAMPLES} (only in the team's workspace)",
)


def test_real_cnmc_cells_end_to_end(tmp_path: Path, capsys) -> None:
    out = tmp_path / "real.xlsx"
    code = cli.main(["analyze", str(CNMC_SAMPLES), "--out", str(out), "--csv", "--no-progress"])
    stdout = capsys.readouterr().out
    assert code == cli.EXIT_OK
    assert stdout.startswith("6 cells:")
    book = openpyxl.load_workbook(out)
    cells = book["Cells"]
    header = [c.value for c in next(cells.iter_rows(min_row=1, max_row=40)) if c.value]
    rows = [
        [c.value for c in row]
        for row in cells.iter_rows()
        if any(isinstance(c.value, str) and c.value.endswith(".bmp") for c in row)
    ]
    assert len(rows) == 6, header
    text = " ".join(str(v) for row in rows for v in row if v is not None)
    for name in ("UID_1_3_1_all.bmp", "UID_H6_14_1_hem.bmp"):
        assert name in text
    assert "H6" in text  # subjects parsed from the C-NMC names
    assert "Metrics" in book.sheetnames  # truths parsed, so the run is scored
    from leukgui.core.truth import truth_for

    truths = {p.name: truth_for(p) for p in CNMC_SAMPLES.rglob("*.bmp")}
    assert {t.subject for t in truths.values()} == {"1", "H6"}
    assert all(t.label == ("ALL" if "_all" in n else "HEM") for n, t in truths.items())
