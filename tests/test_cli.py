"""The command line as a user meets it: exit codes, outputs, summary line, model listing."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
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
    from leukgui.core.bundle import IDENTITY_KEY, read_manifest

    sha = read_manifest(tiny_bundle_path)[IDENTITY_KEY]  # the bundle's identity
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


@pytest.mark.parametrize("value", ["0", "-5"])
@pytest.mark.parametrize("option", ["--batch-size", "--max-pixels", "--max-file-mib"])
def test_sizes_below_one_are_usage_errors(option: str, value: str, tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["analyze", str(tmp_path), option, value])
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


# --------------------------------------------------------------------------- issue 13

# Runs the real `leukgui` entry point in a fresh process with report.write_excel slowed down:
# "EXPORT-STARTED" on stderr says the export has begun, so a SIGINT sent then lands in it.
_SLOW_EXPORT = """
import sys, time
import leukgui.core.report as report
real = report.write_excel
def slow(*args, **kwargs):
    sys.stderr.write("EXPORT-STARTED\\n")
    sys.stderr.flush()
    time.sleep(float(sys.argv[1]))
    return real(*args, **kwargs)
report.write_excel = slow
from leukgui import cli
sys.exit(cli.main(sys.argv[2:]))
"""


def _slow_export(delay: float, args: list[str]) -> subprocess.Popen:
    import os

    return subprocess.Popen(
        [sys.executable, "-c", _SLOW_EXPORT, str(delay), *args],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def _wait_for(process: subprocess.Popen, text: str) -> list[str]:
    seen = []
    for line in process.stderr:
        seen.append(line)
        if text in line:
            return seen
    raise AssertionError(f"{text!r} never printed: {''.join(seen)}")


def test_first_ctrl_c_during_export_finishes_the_report(tiny_bundle_path: Path, tmp_path: Path):
    """Bug 5: one SIGINT after "N/N" used to give a traceback and lose the whole run."""
    import signal

    write_dataset(tmp_path / "cells", n_per_class=10, seed=21, fmt="png", size=64)
    out = tmp_path / "r.xlsx"
    process = _slow_export(
        2.0,
        ["analyze", str(tmp_path / "cells"), "--model", str(tiny_bundle_path), "--out", str(out)],
    )
    seen = _wait_for(process, "EXPORT-STARTED")
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=300)
    stderr = "".join(seen) + stderr
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr, stderr
    assert process.returncode == cli.EXIT_OK, stderr  # every cell was analyzed and reported
    assert "Finishing the report" in stderr
    assert stdout.startswith("20 cells: ") and f"report {out}" in stdout
    assert len(list(openpyxl.load_workbook(out)["Cells"].iter_rows())) > 20


def test_second_ctrl_c_during_export_aborts_and_keeps_the_old_report(
    tiny_bundle_path: Path, tmp_path: Path
):
    import signal

    write_dataset(tmp_path / "cells", n_per_class=2, seed=22, fmt="png", size=64)
    out = tmp_path / "r.xlsx"
    out.write_bytes(b"previous report")
    out.with_suffix(".csv").write_bytes(b"previous csv")
    args = ["analyze", str(tmp_path / "cells"), "--model", str(tiny_bundle_path)]
    process = _slow_export(120.0, [*args, "--out", str(out), "--csv"])
    seen = _wait_for(process, "EXPORT-STARTED")
    process.send_signal(signal.SIGINT)
    seen += _wait_for(process, "Finishing the report")
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=60)
    stderr = "".join(seen) + stderr
    assert process.returncode == cli.EXIT_INTERRUPTED, stderr
    assert "Traceback" not in stderr and "aborted" in stderr
    assert out.read_bytes() == b"previous report"
    assert out.with_suffix(".csv").read_bytes() == b"previous csv"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cells", "r.csv", "r.xlsx"]


def _analyze_args(tiny_bundle_path: Path, data: Path, out: Path) -> list[str]:
    return ["analyze", str(data), "--model", str(tiny_bundle_path), "--out", str(out)]


def test_a_failing_csv_replaces_nothing_and_exit_5_is_true(
    tiny_bundle_path: Path, tmp_path: Path, capsys, monkeypatch
) -> None:
    """Bug 7: the xlsx used to be replaced before the CSV failed, yet exit 5 said "intact"."""
    import leukgui.core.exports as exports
    from leukgui.core.atomic import ReportWriteError

    write_dataset(tmp_path / "cells", n_per_class=1, seed=23, fmt="png")
    out = tmp_path / "r.xlsx"
    out.write_bytes(b"previous report")
    out.with_suffix(".csv").write_bytes(b"previous csv")

    def full_disk(run, path, review=None):
        raise ReportWriteError(f"cannot write report to {path}: the disk is full")

    monkeypatch.setattr(exports, "write_csv", full_disk)
    args = [*_analyze_args(tiny_bundle_path, tmp_path / "cells", out), "--csv", "-q"]
    code, stdout, stderr = _run(args, capsys)
    assert code == cli.EXIT_REPORT
    assert out.read_bytes() == b"previous report"
    assert out.with_suffix(".csv").read_bytes() == b"previous csv"
    assert f"cannot write report to {out.with_suffix('.csv')}: the disk is full" in stderr
    assert "nothing was replaced" in stderr
    assert stdout.startswith("2 cells: ") and "report NOT written" in stdout  # always a summary
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cells", "r.csv", "r.xlsx"]


def test_a_rename_failing_midway_names_exactly_the_new_files(
    tiny_bundle_path: Path, tmp_path: Path, capsys, monkeypatch
) -> None:
    import os

    write_dataset(tmp_path / "cells", n_per_class=1, seed=24, fmt="png")
    out = tmp_path / "r.xlsx"
    csv_path = out.with_suffix(".csv")
    out.write_bytes(b"previous report")
    csv_path.write_bytes(b"previous csv")
    real_replace = os.replace

    def csv_open_elsewhere(src, dst):
        if Path(dst) == csv_path:
            raise PermissionError(13, "Permission denied")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", csv_open_elsewhere)
    args = [*_analyze_args(tiny_bundle_path, tmp_path / "cells", out), "--csv", "-q"]
    code, stdout, stderr = _run(args, capsys)
    assert code == cli.EXIT_REPORT
    assert f"cannot replace {csv_path}" in stderr
    assert f"New from this run: report {out};" in stderr and "NOT from this run" in stderr
    assert "Summary" in openpyxl.load_workbook(out).sheetnames
    assert csv_path.read_bytes() == b"previous csv"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cells", "r.csv", "r.xlsx"]


def test_csv_and_heatmaps_are_written_with_the_report(
    tiny_bundle_path: Path, tmp_path: Path, capsys
) -> None:
    write_dataset(tmp_path / "cells", n_per_class=1, seed=25, fmt="png")
    out = tmp_path / "r.xlsx"
    maps = tmp_path / "maps"
    maps.mkdir()
    (maps / "keep.txt").write_text("not ours")
    args = _analyze_args(tiny_bundle_path, tmp_path / "cells", out)
    code, _, stderr = _run([*args, "--csv", "--heatmaps", str(maps)], capsys)
    assert code == cli.EXIT_OK, stderr
    assert "Wrote 2 heatmap overlays" in stderr
    assert len(list(maps.rglob("*_gradcam.png"))) == 2 and (maps / "keep.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cells", "maps", "r.csv", "r.xlsx"]


@pytest.mark.parametrize(
    ("word", "hint"),
    [("analyse", "analyze"), ("anlyze", "analyze"), ("modles", "models"), ("blah", None)],
)
def test_an_unknown_word_is_a_usage_error_not_an_empty_window(
    word: str, hint: str | None, tmp_path: Path, capsys, monkeypatch
) -> None:
    """Bug 9: `leukgui analyse DIR` opened an empty window (offscreen: hung)."""
    import leukgui.gui.app as app

    opened: list[list[str]] = []
    monkeypatch.setattr(app, "main", lambda argv: opened.append(list(argv)) or 0)
    monkeypatch.chdir(tmp_path)
    code, _, stderr = _run([word, str(tmp_path)], capsys)
    assert code == cli.EXIT_USAGE and opened == []
    assert f"'{word}' is neither a command nor an existing file or folder" in stderr
    if hint:
        assert f"Did you mean 'leukgui {hint}'?" in stderr
    else:
        assert "Did you mean" not in stderr
    # An existing folder (even one named like a typo) still opens the window.
    (tmp_path / word).mkdir()
    code, _, _ = _run([word], capsys)
    assert code == 0 and opened == [[word]]


def test_control_characters_never_reach_the_terminal(tmp_path: Path, capsys) -> None:
    from leukgui.cli.console import clean

    assert clean("a\x1b[31mred\x07\tb\n\x9b2J\x00z") == "a[31mred\tb\n2Jz"
    assert clean("\r[###] 1/2 images") == "\r[###] 1/2 images"  # the progress bar's redraw
    assert clean("x\rhidden") == "xhidden"
    assert clean("M\udcfcller") == "M\ufffdller"  # undecodable file name bytes
    hostile = tmp_path / "cells\x1b]0;pwned\x07\x1b[2J"
    hostile.mkdir()
    code, _, stderr = _run(["analyze", str(hostile), "--out", str(tmp_path / "r.xlsx")], capsys)
    assert code == cli.EXIT_NO_IMAGES
    assert "no images found in" in stderr and "cells]0;pwned[2J" in stderr
    assert "\x1b" not in stderr and "\x07" not in stderr


def test_a_second_run_on_the_same_report_stops_with_a_clear_message(
    tiny_bundle_path: Path, tmp_path: Path, capsys
) -> None:
    from leukgui.cli.analyze import _ReportLock

    write_dataset(tmp_path / "cells", n_per_class=1, seed=26, fmt="png")
    out = tmp_path / "r.xlsx"
    out.write_bytes(b"the first run's report")
    first = _ReportLock(out)  # another run, holding the report's lock
    assert first.acquire()
    try:
        code, stdout, stderr = _run(
            [*_analyze_args(tiny_bundle_path, tmp_path / "cells", out), "-q"], capsys
        )
    finally:
        first.release()
    assert code == cli.EXIT_REPORT and stdout == ""
    assert f"another leukgui run is writing {out}" in stderr and "r.xlsx.lock" in stderr
    assert out.read_bytes() == b"the first run's report"
    # A lock file left by a killed run holds no OS lock: it never blocks a later run.
    out.with_name("r.xlsx.lock").write_text("")
    code, _, stderr = _run(
        [*_analyze_args(tiny_bundle_path, tmp_path / "cells", out), "-q"], capsys
    )
    assert code == cli.EXIT_OK, stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cells", "r.xlsx"]  # lock removed


def test_the_lock_is_exclusive_and_released() -> None:
    import tempfile

    from leukgui.cli.analyze import _ReportLock

    with tempfile.TemporaryDirectory() as folder:
        report = Path(folder) / "r.xlsx"
        a, b = _ReportLock(report), _ReportLock(report)
        assert a.acquire() and not b.acquire()
        a.release()
        assert b.acquire()
        b.release()
        assert not report.with_name("r.xlsx.lock").exists()


@pytest.mark.skipif(sys.platform == "win32", reason="symlinks need privileges on Windows")
def test_a_symlinked_out_is_written_through_to_its_target(
    tiny_bundle_path: Path, tmp_path: Path, capsys
) -> None:
    write_dataset(tmp_path / "cells", n_per_class=1, seed=27, fmt="png")
    shared = tmp_path / "shared"
    shared.mkdir()
    target = shared / "latest.xlsx"
    target.write_bytes(b"old")
    link = tmp_path / "r.xlsx"
    link.symlink_to(target)
    args = [*_analyze_args(tiny_bundle_path, tmp_path / "cells", link), "--csv", "-q"]
    code, stdout, stderr = _run(args, capsys)
    assert code == cli.EXIT_OK, stderr
    assert link.is_symlink() and link.resolve() == target.resolve()
    assert "Summary" in openpyxl.load_workbook(target).sheetnames
    assert f"report {link}" in stdout
    assert sorted(p.name for p in shared.iterdir()) == ["latest.xlsx"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cells", "r.csv", "r.xlsx", "shared"]


def test_max_file_mib_refuses_bigger_files_by_size(
    tiny_bundle_path: Path, tmp_path: Path, capsys
) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    cv2.imwrite(str(folder / "small.png"), np.zeros((64, 64, 3), np.uint8))
    with open(folder / "big.png", "wb") as fh:  # a sparse 3 MiB file after a real PNG header
        fh.write(cv2.imencode(".png", np.zeros((64, 64, 3), np.uint8))[1].tobytes())
        fh.truncate(3 * 2**20)
    out = tmp_path / "r.xlsx"
    args = ["analyze", str(folder), "--model", str(tiny_bundle_path), "--out", str(out)]
    code = cli.main([*args, "--max-file-mib", "2", "--no-progress"])
    captured = capsys.readouterr()
    assert code == cli.EXIT_SOME_ERRORS
    assert "big.png: too large: 3 MiB file (limit 2 MiB)" in captured.err
