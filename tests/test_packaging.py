"""Packaging files stay consistent and the installer script compiles.

The frozen build itself takes many minutes and is run by `packaging/build.sh`; these checks
catch a broken spec, installer script or release workflow in every test run.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

import leukgui

REPO = Path(__file__).resolve().parents[1]
SPEC = REPO / "packaging" / "leukgui.spec"
NSI = REPO / "packaging" / "windows" / "installer.nsi"
WORKFLOW = REPO / ".github" / "workflows" / "windows-release.yml"


def test_spec_is_onedir_without_upx_and_takes_the_one_version() -> None:
    text = SPEC.read_text()
    # Onedir: the executables exclude the binaries, which COLLECT puts beside them.
    assert "COLLECT(" in text and "exclude_binaries=True" in text
    assert "upx=True" not in text and text.count("upx=False") >= 2
    assert 'leukgui" / "__init__.py"' in text  # the version's only source
    for name in ("PyQt5", "PyQt6", "PySide2", "torch", "jax", "tkinter", "IPython", "tests"):
        assert f'"{name}"' in text, name
    assert 'name="LeukGUI", console=False' in text
    assert 'name="leukgui-cli", console=True' in text  # differs from LeukGUI.exe on Windows
    assert '"resources/models"' in text and '"resources/samples"' in text


def test_pinned_build_requirements_respect_the_project_pins() -> None:
    pins = dict(
        line.split("==")
        for line in (REPO / "packaging" / "requirements-build.txt").read_text().splitlines()
        if "==" in line and not line.startswith("#")
    )
    major, minor = (int(v) for v in pins["PySide6-Essentials"].split(".")[:2])
    assert (major, minor) < (6, 12), "PySide6 6.12.0 leaks references to None"
    assert "pyinstaller" in pins and "tensorflow" in pins


def _fake_onedir(folder: Path) -> Path:
    """The file layout the installer packs (a real onedir has ~1 GB more in _internal)."""
    (folder / "_internal").mkdir(parents=True)
    for name in ("LeukGUI.exe", "leukgui-cli.exe", "_internal/base_library.zip"):
        (folder / name).write_bytes(b"MZ placeholder")
    from leukgui.gui.icons import write_icon

    write_icon(str(folder / "_internal" / "leukgui.ico"))
    return folder


@pytest.mark.skipif(
    shutil.which("makensis") is None,
    reason="makensis (NSIS) is not installed here; .ci/run installs it where apt-get works",
)
def test_installer_script_compiles_with_makensis(tmp_path: Path) -> None:
    import os

    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    source = _fake_onedir(tmp_path / "LeukGUI")
    out = tmp_path / "setup.exe"
    result = subprocess.run(
        [
            "makensis",
            "-V2",
            f"-DVERSION={leukgui.__version__}",
            f"-DSOURCE={source}",
            f"-DOUTFILE={out}",
            str(NSI),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert out.is_file() and out.read_bytes()[:2] == b"MZ"
    text = NSI.read_text()
    assert "RequestExecutionLevel user" in text
    assert "$LOCALAPPDATA\\Programs\\${APP}" in text
    assert 'WriteRegStr HKCU "Software\\Classes\\.leukmodel"' in text
    # The uninstaller removes program files only, never the user data folder.
    uninstall = text[text.index('Section "Uninstall"') :]
    assert "$LOCALAPPDATA\\LeukGUI" not in uninstall.replace("%LOCALAPPDATA%\\LeukGUI", "")


def test_release_workflow_runs_the_whole_round_trip() -> None:
    yaml = pytest.importorskip("yaml", reason="PyYAML is part of the test extra")
    flow = yaml.safe_load(WORKFLOW.read_text())
    job = flow["jobs"]["installer"]
    assert job["runs-on"] == "windows-latest"
    steps = job["steps"]
    runs = "\n".join(str(s.get("run", "")) for s in steps)
    uses = [s.get("uses", "") for s in steps]
    assert any(u.startswith("actions/setup-python") for u in uses)
    python = next(s for s in steps if s.get("uses", "").startswith("actions/setup-python"))
    assert python["with"]["python-version"] == "3.11"
    assert "packaging\\build.ps1" in runs and "makensis" in runs
    assert re.search(r'"/S", "/D=', runs) and "--self-test" in runs
    assert "Uninstall.exe" in runs and "user data was removed" in runs
    assert any(u.startswith("actions/upload-artifact") for u in uses)
    signing = [s for s in steps if "sign" in s.get("name", "").lower()]
    assert signing and all(s.get("if") == "env.SIGNING_CERT != ''" for s in signing)
