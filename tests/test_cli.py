"""The command line as a user meets it: exit codes, outputs, summary line, model listing."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import openpyxl
import pytest

from leukgui import cli
from leukgui.core.synthetic import write_dataset

REPO = Path(__file__).resolve().parents[1]


def _run(args: list[str], capsys) -> tuple[int, str, str]:
    code = cli.main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_analyze_writes_report_csv_and_heatmaps(
    tiny_bundle_path: Path, tmp_path: Path, capsys, monkeypatch
) -> None:
    data = tmp_path / "cells"
    write_dataset(data, n_per_class=2, seed=3, fmt="bmp")
    out = tmp_path / "out" / "p7.xlsx"
    out.parent.mkdir()
    monkeypatch.chdir(tmp_path)  # a relative input: the reports must still give full paths
    code, stdout, stderr = _run(
        [
            "analyze",
            "cells",
            "--model",
            str(tiny_bundle_path),
            "--out",
            str(out),
            "--csv",
            "--heatmaps",
            str(tmp_path / "maps"),
            "--no-progress",
        ],
        capsys,
    )
    assert code == cli.EXIT_OK, stderr
    assert stdout.startswith("4 cells: ALL ")
    assert f"report {out}" in stdout and "0 errors" in stdout
    book = openpyxl.load_workbook(out)
    assert {"Summary", "Cells", "Errors", "Metrics", "Provenance"} <= set(book.sheetnames)
    rows = list(csv.DictReader(out.with_suffix(".csv").open(encoding="utf-8-sig")))
    assert len(rows) == 4 and {r["status"] for r in rows} == {"ok"}
    assert all(Path(r["path"]).is_absolute() and Path(r["path"]).is_file() for r in rows)
    assert len(list((tmp_path / "maps").rglob("*_gradcam.png"))) == 4


def test_some_bad_inputs_give_exit_1_and_are_listed(
    tiny_bundle_path: Path, tmp_path: Path, capsys
) -> None:
    data = tmp_path / "cells"
    write_dataset(data, n_per_class=1, seed=4, fmt="png")
    (data / "broken.png").write_bytes(b"")
    code, stdout, stderr = _run(
        [
            "analyze",
            str(data),
            "--model",
            str(tiny_bundle_path),
            "--out",
            str(tmp_path / "r.xlsx"),
            "-q",
        ],
        capsys,
    )
    assert code == cli.EXIT_SOME_ERRORS
    assert "2 cells" in stdout and "1 errors" in stdout
    errors = openpyxl.load_workbook(tmp_path / "r.xlsx")["Errors"]
    assert "empty file" in [c.value for row in errors.iter_rows() for c in row]


def test_no_images_exit_3(tmp_path: Path, capsys) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    code, _, stderr = _run(["analyze", str(tmp_path), "--out", str(tmp_path / "r.xlsx")], capsys)
    assert code == cli.EXIT_NO_IMAGES
    assert "no images found" in stderr
    assert not (tmp_path / "r.xlsx").exists()


def test_unknown_model_exit_4(tmp_path: Path, capsys) -> None:
    write_dataset(tmp_path, n_per_class=1, seed=5, fmt="png")
    code, _, stderr = _run(
        ["analyze", str(tmp_path), "--model", "no-such-model", "--out", str(tmp_path / "r.xlsx")],
        capsys,
    )
    assert code == cli.EXIT_MODEL
    assert "no model named 'no-such-model'" in stderr


def test_report_that_cannot_be_written_exit_5_keeps_old_report(
    tiny_bundle_path: Path, tmp_path: Path, capsys, monkeypatch
) -> None:
    import os

    data = tmp_path / "cells"
    write_dataset(data, n_per_class=1, seed=6, fmt="png")
    report = tmp_path / "r.xlsx"
    report.write_bytes(b"previous report")

    def locked(src, dst):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(os, "replace", locked)
    code, _, stderr = _run(
        ["analyze", str(data), "--model", str(tiny_bundle_path), "--out", str(report), "-q"], capsys
    )
    assert code == cli.EXIT_REPORT
    assert "cannot write report" in stderr
    assert report.read_bytes() == b"previous report"
    assert [p.name for p in tmp_path.iterdir() if p.suffix == ".xlsx"] == ["r.xlsx"]


def test_out_must_be_xlsx(tmp_path: Path, capsys) -> None:
    code, _, stderr = _run(["analyze", str(tmp_path), "--out", str(tmp_path / "r.pdf")], capsys)
    assert code == cli.EXIT_USAGE and ".xlsx" in stderr


def test_models_lists_name_backbone_version_and_sha(
    tiny_bundle_path: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    import shutil

    monkeypatch.setenv("LEUKGUI_USER_DIR", str(tmp_path))
    (tmp_path / "models").mkdir()
    shutil.copy(tiny_bundle_path, tmp_path / "models")
    from leukgui.core.bundle import read_manifest

    sha = read_manifest(tiny_bundle_path)["weights_sha256"]
    code, stdout, _ = _run(["models"], capsys)
    assert code == 0
    line = next(line for line in stdout.splitlines() if line.startswith("tiny-test"))
    assert line.split()[:4] == ["tiny-test", "1", "efficientnetb0", "64"]
    assert line.endswith(sha) and "user" in line
    assert "efficientnetb0-demo [DEMO]" in stdout
    assert "not for diagnosis" in stdout


def test_help_documents_exit_codes() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "leukgui", "analyze", "--help"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert result.returncode == 0
    assert "exit codes:" in result.stdout and "--heatmaps DIR" in result.stdout


@pytest.mark.slow
def test_demo_model_on_bundled_samples(tmp_path: Path, capsys) -> None:
    """The Quick start's main job: bundled samples + bundled demo model → a report."""
    out = tmp_path / "report.xlsx"
    code, stdout, stderr = _run(
        ["analyze", str(REPO / "resources" / "samples"), "--out", str(out), "--no-progress"], capsys
    )
    assert code == cli.EXIT_OK, stderr
    assert "DEMO MODEL" in stderr
    assert stdout.startswith("12 cells: ALL 6 (50.0% of ALL+HEM), HEM 6, uncertain 0; 0 errors")
    summary = openpyxl.load_workbook(out)["Summary"]
    texts = [c.value for row in summary.iter_rows() for c in row if isinstance(c.value, str)]
    assert any("DEMO MODEL" in t for t in texts)


def test_ctrl_c_keeps_finished_cells_and_marks_the_report(tiny_bundle_path: Path, tmp_path: Path):
    """A real SIGINT to a real process: exit 130, and the report of what finished is written."""
    import os
    import signal

    data = tmp_path / "cells"
    write_dataset(data, n_per_class=500, seed=9, fmt="png", size=64)
    out = tmp_path / "r.xlsx"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "leukgui",
            "analyze",
            str(data),
            "--model",
            str(tiny_bundle_path),
            "--out",
            str(out),
            "--batch-size",
            "1",
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    for line in process.stderr:  # piped: one progress line per 10%
        if "images" in line:
            process.send_signal(signal.SIGINT)
            break
    stdout, stderr = process.communicate(timeout=300)
    assert process.returncode == cli.EXIT_INTERRUPTED, stderr
    assert stdout.startswith("CANCELLED: ")
    summary = openpyxl.load_workbook(out)["Summary"]
    texts = [c.value for row in summary.iter_rows() for c in row if isinstance(c.value, str)]
    banner = next(t for t in texts if t.startswith("Run cancelled"))
    done = int(banner.split("—")[1].split()[0])
    assert 0 < done < 1000


@pytest.mark.parametrize("option", ["--batch-size", "--max-pixels"])
def test_sizes_below_one_are_usage_errors(option: str, tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["analyze", str(tmp_path), option, "0"])
    assert exit_info.value.code == cli.EXIT_USAGE
    assert f"{option} must be at least 1" in capsys.readouterr().err


def test_the_progress_printer_draws_a_bar_or_writes_a_line_per_tenth() -> None:
    import io

    from leukgui.cli.console import ProgressPrinter
    from leukgui.core.results import Progress

    piped = io.StringIO()
    with ProgressPrinter(piped) as printer:
        for done in range(0, 21):
            printer(Progress(done=done, total=20, rate=2.0, eta_s=(20 - done) / 2))
    lines = piped.getvalue().splitlines()
    assert len(lines) == 11  # 0%, 10%, ... 100%
    assert lines[0] == "0/20 images    0%     2.0 img/s  ETA 0:10"
    assert lines[-1] == "20/20 images  100%     2.0 img/s  ETA 0:00"

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    terminal = Terminal()
    with ProgressPrinter(terminal) as printer:
        printer(Progress(done=5, total=20, rate=1.0, eta_s=None))
    text = terminal.getvalue()
    assert text.startswith("\r[#######---------------------] 5/20 images")
    assert text.endswith("ETA --:--\n")  # leaving ends the bar's line

    silent = io.StringIO()
    with ProgressPrinter(silent, enabled=False) as printer:
        printer(Progress(done=1, total=1, rate=1.0, eta_s=0.0))
    assert silent.getvalue() == ""


def test_ctrl_c_cancels_first_and_aborts_second() -> None:
    import io
    import signal

    from leukgui.cli.console import ctrl_c_cancels
    from leukgui.core.results import CancelToken

    before = signal.getsignal(signal.SIGINT)
    cancel, err = CancelToken(), io.StringIO()
    with pytest.raises(KeyboardInterrupt), ctrl_c_cancels(cancel, err, "stopping soon"):
        signal.raise_signal(signal.SIGINT)
        assert cancel.cancelled and "stopping soon" in err.getvalue()
        signal.raise_signal(signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is before


def test_image_kind_option_and_its_old_name(capsys) -> None:
    parse = cli.build_parser().parse_args
    assert parse(["analyze", "x"]).image_kind == "auto"
    assert parse(["analyze", "x", "--image-kind", "fields"]).image_kind == "fields"
    assert parse(["analyze", "x", "--fields", "cells"]).image_kind == "cells"  # old scripts
    with pytest.raises(SystemExit):
        parse(["analyze", "x", "--image-kind", "smears"])
    with pytest.raises(SystemExit):
        parse(["analyze", "--help"])
    text = capsys.readouterr().out
    assert "--image-kind" in text and "--fields" not in text  # one name in the help
