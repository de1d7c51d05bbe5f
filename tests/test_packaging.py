"""Packaging files stay consistent and the installer script compiles.

The frozen build itself takes many minutes and is run by `packaging/build.sh`; these checks
catch a broken spec, installer script or release workflow in every test run.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
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


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_build_requirements_pin_everything_and_respect_the_project_pins() -> None:
    pins = {}
    for line in (REPO / "packaging" / "requirements-build.txt").read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        requirement = line.split(";")[0].strip()
        assert re.fullmatch(r"[A-Za-z0-9_.-]+==[0-9][0-9A-Za-z.+]*", requirement), line
        name, version = requirement.split("==")
        pins[_normal(name)] = version
    major, minor = (int(v) for v in pins["pyside6-essentials"].split(".")[:2])
    assert (major, minor) < (6, 12), "PySide6 6.12.0 leaks references to None"
    assert "pyinstaller" in pins and "pefile" in pins  # pefile: PyInstaller on Windows
    # Every runtime dependency of the project is in the build's lock.
    tomllib = pytest.importorskip("tomllib", reason="Python 3.11+")
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    for dependency in project["dependencies"]:
        name = re.match(r"[A-Za-z0-9_.-]+", dependency).group(0)
        assert _normal(name) in pins, f"{name} is not pinned for the frozen build"


def _fake_onedir(folder: Path) -> Path:
    """The file layout the installer packs (a real onedir has ~1 GB more in _internal)."""
    (folder / "_internal").mkdir(parents=True)
    for name in ("LeukGUI.exe", "leukgui-cli.exe", "_internal/base_library.zip"):
        (folder / name).write_bytes(b"MZ placeholder")
    from leukgui.gui.icons import write_icon

    write_icon(str(folder / "_internal" / "leukgui.ico"))
    return folder


def _makensis(source: Path, out: Path, version: str, *defines: str) -> Path:
    """Compile the installer script for `source`; fails the test with makensis's output."""
    result = subprocess.run(
        ["makensis", "-V2", *defines, f"-DVERSION={version}", f"-DSOURCE={source}"]
        + [f"-DOUTFILE={out}", str(NSI)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return out


@pytest.mark.skipif(
    shutil.which("makensis") is None,
    reason="makensis (NSIS) is not installed here; .ci/run installs it where apt-get works",
)
def test_installer_script_compiles_with_makensis(tmp_path: Path) -> None:
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    source = _fake_onedir(tmp_path / "LeukGUI")
    out = _makensis(source, tmp_path / "setup.exe", leukgui.__version__)
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


def _find_actionlint() -> str | None:
    """The test extra's actionlint sits beside this Python even when its venv is not active."""
    beside = Path(sys.executable).with_name("actionlint")
    return str(beside) if beside.is_file() else shutil.which("actionlint")


ACTIONLINT = _find_actionlint()


def _actionlint(*args: str) -> subprocess.CompletedProcess[str]:
    assert ACTIONLINT is not None
    return subprocess.run(
        [ACTIONLINT, "-no-color", *args], capture_output=True, text=True, timeout=120, cwd=REPO
    )


@pytest.mark.skipif(
    ACTIONLINT is None,
    reason="actionlint is not installed (the test extra installs it on Linux and Windows x64)",
)
def test_release_workflow_passes_actionlint(tmp_path: Path) -> None:
    result = _actionlint(str(WORKFLOW))
    assert result.returncode == 0, result.stdout + result.stderr
    # The same check fails on a workflow with a mistyped runner and a wrong expression,
    # so a passing run above means something.
    broken = tmp_path / "broken.yml"
    broken.write_text(
        WORKFLOW.read_text()
        .replace("runs-on: windows-latest", "runs-on: windows-latst", 1)
        .replace("env.SIGNING_CERT", "secret.SIGNING_CERT", 1)
    )
    result = _actionlint(str(broken))
    assert result.returncode == 1
    assert "windows-latst" in result.stdout and "secret" in result.stdout


WINE = shutil.which("wine")
AMD64_STUB = Path("/usr/share/nsis/Stubs/lzma_solid-amd64-unicode")


def _wine(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(WINE), *args], env=env, capture_output=True, text=True, timeout=180
    )
    # Wait for every process of this prefix: the uninstaller finishes from a temporary copy,
    # and the registry reaches user.reg only when the wine server exits.
    subprocess.run(["wineserver", "-w"], env=env, timeout=180, check=False)
    return result


def _registry(env: dict[str, str], key: str) -> dict[str, str]:
    """The values of one HKCU key, or {} when it does not exist."""
    result = subprocess.run(
        [str(WINE), "reg", "query", key], env=env, capture_output=True, text=True, timeout=60
    )
    values = {}
    for line in result.stdout.splitlines():
        parts = line.strip().split(None, 2)
        if len(parts) == 3 and parts[1].startswith("REG_"):
            values[parts[0]] = parts[2]
        elif len(parts) == 2 and parts[1].startswith("REG_"):
            values[parts[0]] = ""
    return values if result.returncode == 0 else {}


def _setup_exe(tmp_path: Path, version: str, extra: str | None = None) -> Path:
    source = _fake_onedir(tmp_path / f"onedir-{version}" / "LeukGUI")
    if extra:
        (source / "_internal" / extra).write_text("only in this version")
    out = tmp_path / f"LeukGUI-{version}-setup.exe"
    # Debian's wine runs 64-bit programs without the i386 libraries a 32-bit stub needs.
    return _makensis(source, out, version, "-DTARGET=amd64-unicode")


@pytest.mark.skipif(
    WINE is None or shutil.which("makensis") is None or not AMD64_STUB.is_file(),
    reason="needs wine and makensis with the amd64 stub (.ci/run installs both where apt works)",
)
def test_installer_round_trip_under_wine(tmp_path: Path) -> None:
    """Install, upgrade and uninstall the real installer script, as a user without admin rights.

    The payload is a stand-in onedir (a Linux build cannot run on Windows), so this checks what
    the installer does: where files go, the uninstall entry, the association, the Start-menu
    shortcut, that an upgrade removes the old program files, and that user data survives.
    """
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    env = {
        **os.environ,
        "WINEPREFIX": str(tmp_path / "prefix"),
        "WINEDEBUG": "-all",
        "WINEDLLOVERRIDES": "mscoree,mshtml=",  # no Mono or Gecko prompts
    }
    env.pop("DISPLAY", None)
    _wine(env, "wineboot", "-i")
    homes = [p for p in (tmp_path / "prefix" / "drive_c" / "users").iterdir() if p.name != "Public"]
    assert len(homes) == 1
    local = homes[0] / "AppData" / "Local"
    program = local / "Programs" / "LeukGUI"
    user_data = local / "LeukGUI"
    start_menu = homes[0] / "AppData/Roaming/Microsoft/Windows/Start Menu/Programs/LeukGUI.lnk"
    uninstall_key = r"HKCU\Software\Microsoft\Windows\CurrentVersion\Uninstall\LeukGUI"
    old = _setup_exe(tmp_path, "0.0.1", extra="dropped-in-0.0.2.txt")
    new = _setup_exe(tmp_path, "0.0.2")

    # A silent install goes to %LOCALAPPDATA%\Programs\LeukGUI without elevation.
    assert _wine(env, str(old), "/S").returncode == 0
    for name in ("LeukGUI.exe", "leukgui-cli.exe", "Uninstall.exe", "_internal/leukgui.ico"):
        assert (program / name).is_file(), name
    assert (program / "_internal" / "dropped-in-0.0.2.txt").is_file()
    assert start_menu.is_file()
    entry = _registry(env, uninstall_key)
    assert entry["DisplayName"] == "LeukGUI" and entry["DisplayVersion"] == "0.0.1"
    assert entry["Publisher"] == "LeukGUI team"
    assert entry["DisplayIcon"].endswith(r"Programs\LeukGUI\LeukGUI.exe,0")
    assert int(entry["EstimatedSize"], 16) > 0
    assert entry["QuietUninstallString"].endswith(r'Uninstall.exe" /S')
    assert _registry(env, r"HKCU\Software\Classes\.leukmodel")["(Default)"] == "LeukGUI.ModelBundle"
    command = _registry(env, r"HKCU\Software\Classes\LeukGUI.ModelBundle\shell\open\command")
    assert command["(Default)"].endswith(r'Programs\LeukGUI\LeukGUI.exe" "%1"')

    # The user's models and settings live beside, never inside, the program folder.
    (user_data / "models").mkdir(parents=True)
    (user_data / "settings.json").write_text('{"reviewer": "A. Tech"}')
    (user_data / "models" / "lab.leukmodel").write_bytes(b"lab's own model")

    # Upgrade: the old program files go, the new ones come, user data stays.
    assert _wine(env, str(new), "/S").returncode == 0
    assert (program / "LeukGUI.exe").is_file()
    assert not (program / "_internal" / "dropped-in-0.0.2.txt").exists()
    assert _registry(env, uninstall_key)["DisplayVersion"] == "0.0.2"
    assert (user_data / "settings.json").read_text() == '{"reviewer": "A. Tech"}'

    # Silent uninstall: program files, entry, association and shortcut go; user data stays.
    assert _wine(env, str(program / "Uninstall.exe"), "/S").returncode == 0
    assert not program.exists()
    assert _registry(env, uninstall_key) == {}
    assert _registry(env, r"HKCU\Software\Classes\LeukGUI.ModelBundle") == {}
    assert not start_menu.exists()
    assert (user_data / "models" / "lab.leukmodel").read_bytes() == b"lab's own model"

    # /D= picks another folder, and a later upgrade without /D finds it there.
    assert _wine(env, str(old), "/S", r"/D=C:\Apps\LeukGUI").returncode == 0
    custom = tmp_path / "prefix" / "drive_c" / "Apps" / "LeukGUI"
    assert (custom / "LeukGUI.exe").is_file() and not program.exists()
    assert _wine(env, str(new), "/S").returncode == 0
    assert not (custom / "_internal" / "dropped-in-0.0.2.txt").exists()
    assert _registry(env, uninstall_key)["InstallLocation"] == r"C:\Apps\LeukGUI"
