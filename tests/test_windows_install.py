"""The first real Windows install: runtime DLLs, a running app, NSIS's limits, IT deployment.

What can run here runs for real: the DLL gate reads real PE files (wine's builds of the VC++
runtime) and the committed import tables of the pinned Windows wheels; the spec is executed
as on Windows with PyInstaller stubbed; the installer is compiled with makensis and run under
wine, against a stand-in process that holds LeukGUI's named mutex as the app does.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

import leukgui
from leukgui.core import running

REPO = Path(__file__).resolve().parents[1]
PACKAGING = REPO / "packaging"
NSI = PACKAGING / "windows" / "installer.nsi"
MANIFEST = PACKAGING / "windows" / "dll-imports.json"
SPEC = PACKAGING / "leukgui.spec"
LOCK = PACKAGING / "requirements-build.txt"
WINE_DLLS = Path("/usr/lib/x86_64-linux-gnu/wine/x86_64-windows")

sys.path.insert(0, str(PACKAGING))
import dll_gate  # noqa: E402
import nsis_payload  # noqa: E402

sys.path.pop(0)


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _windows_pins() -> dict[str, str]:
    """The lock's pins as Windows sees them (markers for win32 kept, the others dropped)."""
    pins = {}
    for line in LOCK.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        requirement, _, marker = line.partition(";")
        if "!= 'win32'" in marker:
            continue
        name, version = requirement.strip().split("==")
        pins[_normal(name)] = version
    return pins


# --- 1-3: the VC++ runtime and the DLL gate --------------------------------------------------


def test_manifest_is_the_pinned_windows_wheels() -> None:
    """The committed import tables come from exactly the wheels the lock pins for Windows:
    a bumped pin without a regenerated manifest fails here."""
    manifest = json.loads(MANIFEST.read_text())
    wheels = {}
    for name in manifest["wheels"]:
        assert name.endswith(".whl"), name
        project, version = name.split("-")[:2]
        assert re.search(r"-(none-any|win_amd64|abi3-win_amd64)\.whl$", name) or "win_amd64" in name
        wheels[_normal(project)] = version
    assert wheels == _windows_pins()


def test_pinned_windows_wheels_need_the_vc_runtime_the_spec_bundles() -> None:
    """Offline, from the pinned wheels' import tables: every DLL import resolves once the
    build adds the VC++ runtime; without it, TensorFlow's import of vcruntime140_threads.dll
    (which no wheel ships) is named as missing: item 1 of the issue, caught by the gate."""
    manifest = json.loads(MANIFEST.read_text())
    result = dll_gate.check_manifest(manifest)
    assert result.ok, result.report()
    assert set(result.needs_vc) == set(dll_gate.VC_RUNTIME)
    assert result.needs_vc["vcruntime140_threads.dll"] == [
        "tensorflow/lite/python/pywrap_tflite_common.dll"
    ]
    shipped = {
        path.rsplit("/", 1)[-1].lower()
        for members in manifest["wheels"].values()
        for path in members
    }
    assert "vcruntime140_threads.dll" not in shipped
    # The same tables without the app-local runtime: the gate fails and names the DLL.
    imports = {p: n for m in manifest["wheels"].values() for p, n in m.items()}
    bare = dll_gate.check_modules(
        {p: n for p, n in imports.items() if not p.startswith(dll_gate.NOT_COLLECTED)},
        list(imports),
        provided=dll_gate.PYTHON_DLLS,
    )
    assert not bare.ok
    assert bare.missing["vcruntime140_threads.dll"] == [
        "tensorflow/lite/python/pywrap_tflite_common.dll"
    ]
    assert "MISSING vcruntime140_threads.dll" in bare.report()


def _pe(name: str) -> bytes:
    return (WINE_DLLS / name).read_bytes()


def _bundle(root: Path, *, vc_at_top: bool, vc_in: str | None = None) -> Path:
    """A onedir of real PE files: an extension module that imports msvcp140.dll (wine's
    msvcp140_atomic_wait.dll, renamed) and the VC++ runtime at the top or in a package."""
    internal = root / "LeukGUI" / "_internal"
    (internal / "tensorflow" / "python").mkdir(parents=True)
    (root / "LeukGUI" / "leukgui-cli.exe").write_bytes(_pe("msvcp140_2.dll"))
    (internal / "tensorflow" / "python" / "_pywrap_demo.pyd").write_bytes(
        _pe("msvcp140_atomic_wait.dll")
    )
    places = ([internal] if vc_at_top else []) + ([internal / vc_in] if vc_in else [])
    for place in places:
        place.mkdir(parents=True, exist_ok=True)
        for name in dll_gate.VC_RUNTIME:
            source = name if (WINE_DLLS / name).is_file() else "vcruntime140.dll"
            (place / name).write_bytes(_pe(source))
    return root / "LeukGUI"


@pytest.mark.skipif(
    not (WINE_DLLS / "msvcp140_atomic_wait.dll").is_file(),
    reason="needs wine's PE builds of the VC++ runtime (.ci/run installs wine where apt works)",
)
def test_dll_gate_reads_real_pe_files(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    # No runtime anywhere: msvcp140.dll is missing, named with its importer.
    folder = _bundle(tmp_path / "none", vc_at_top=False)
    assert dll_gate.main([str(folder)]) == 1
    out = capsys.readouterr().out
    assert "MISSING msvcp140.dll (imported by _internal/tensorflow/python/_pywrap_demo.pyd)" in out
    assert "DLL gate: FAILED" in out
    # Only in shiboken6\ (where PyInstaller put PySide6's copy): found by the GUI once Qt
    # loaded it, not by the CLI. The gate says where it must be.
    folder = _bundle(tmp_path / "shiboken", vc_at_top=False, vc_in="shiboken6")
    result = dll_gate.check_folder(folder)
    assert not result.missing and not result.ok
    assert set(result.misplaced) == set(dll_gate.VC_RUNTIME)
    assert "MISPLACED msvcp140.dll: must be at the top of _internal" in result.report()
    # At the top of _internal: passes, and lists who needs the runtime.
    folder = _bundle(tmp_path / "top", vc_at_top=True, vc_in="shiboken6")
    assert dll_gate.main([str(folder)]) == 0, capsys.readouterr().out
    result = dll_gate.check_folder(folder)
    assert result.needs_vc["msvcp140.dll"][0] == "_internal/tensorflow/python/_pywrap_demo.pyd"
    # A file that is not a PE image but is named like one is reported, not skipped.
    (folder / "_internal" / "broken.pyd").write_bytes(b"not a PE file")
    result = dll_gate.check_folder(folder)
    assert not result.ok and "_internal/broken.pyd" in result.unreadable


def test_dll_gate_resolution_rules() -> None:
    imports = {
        "_internal/PySide6/QtCore.pyd": ["qt6core.dll", "kernel32.dll", "python3.dll"],
        "_internal/openvino/_pyopenvino.pyd": ["openvino.dll", "api-ms-win-crt-heap-l1-1-0.dll"],
        "_internal/openvino/libs/openvino_intel_gpu_plugin.dll": ["opencl.dll"],
        "_internal/x.pyd": ["lab-driver.dll", "vcruntime140.dll"],
    }
    files = [
        *imports,
        "_internal/PySide6/Qt6Core.dll",
        "_internal/openvino/libs/openvino.dll",
        "_internal/python3.dll",
        "_internal/vcruntime140.dll",
    ]
    result = dll_gate.check_modules(imports, files, top_dirs=["", "_internal"])
    assert result.missing == {"lab-driver.dll": ["_internal/x.pyd"]}  # unknown: fails
    assert "openvino.dll" in result.indirect  # found via the package's own DLL folder
    assert result.optional == {
        "opencl.dll": ["_internal/openvino/libs/openvino_intel_gpu_plugin.dll"]
    }
    assert dll_gate.is_system("API-MS-WIN-CRT-HEAP-L1-1-0.DLL") and dll_gate.is_system(
        "Kernel32.dll"
    )
    # The VC++ runtime is never "part of Windows": it must come with the app.
    assert not any(dll_gate.is_system(name) for name in dll_gate.VC_RUNTIME)


def _run_spec_as_windows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, vc_dir: Path
) -> list[tuple[str, str]]:
    from test_packaging import _stub_pyinstaller

    root = tmp_path / "repo"
    (root / "packaging").mkdir(parents=True)
    shutil.copy(PACKAGING / "dll_gate.py", root / "packaging" / "dll_gate.py")
    (root / "leukgui").mkdir()
    (root / "leukgui" / "__init__.py").write_text('__version__ = "9.8.7"\n')
    (root / "build" / "pyinstaller-extra").mkdir(parents=True)
    (root / "build" / "pyinstaller-extra" / "leukgui.ico").write_bytes(b"icon")
    monkeypatch.delenv("LEUKGUI_BUNDLE_WEIGHTS", raising=False)
    monkeypatch.setenv("LEUKGUI_VC_RUNTIME_DIR", str(vc_dir))
    monkeypatch.setattr(sys, "platform", "win32")
    monkeypatch.setattr(sys, "path", list(sys.path))  # the spec prepends packaging/
    monkeypatch.delitem(sys.modules, "dll_gate", raising=False)
    names = _stub_pyinstaller(monkeypatch, [])
    names["SPECPATH"] = str(root / "packaging")
    exec(compile(SPEC.read_text(), str(SPEC), "exec"), names)  # noqa: S102
    # The Windows version resource came from the one version number.
    assert "9.8.7" in (root / "build" / "pyinstaller-extra" / "version_info.txt").read_text()
    return names["_recorded"]["analysis"].kwargs["binaries"]


def test_spec_bundles_the_vc_runtime_at_the_top_of_internal_on_windows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    vc = tmp_path / "vcrt"
    vc.mkdir()
    for name in dll_gate.VC_RUNTIME:
        (vc / name).write_bytes(b"MZ")
    binaries = _run_spec_as_windows(tmp_path, monkeypatch, vc)
    # The seven DLLs the issue names (the wheels' import tables confirm each one is used).
    names = "msvcp140 msvcp140_1 msvcp140_2 vcruntime140 vcruntime140_1 vcruntime140_threads"
    for name in [*names.split(), "concrt140"]:
        assert (str(vc / f"{name}.dll"), ".") in binaries, name
    # One missing DLL stops the build and is named, with the fix.
    (vc / "vcruntime140_threads.dll").unlink()
    with pytest.raises(
        SystemExit, match=r"lacks vcruntime140_threads\.dll.*LEUKGUI_VC_RUNTIME_DIR"
    ):
        _run_spec_as_windows(tmp_path / "again", monkeypatch, vc)


# --- 5: a running app --------------------------------------------------------------------------


def test_the_installer_checks_the_mutex_the_app_holds(monkeypatch: pytest.MonkeyPatch) -> None:
    text = NSI.read_text()
    assert f'!define RUNNING_MUTEX "{running.MUTEX_NAME}"' in text
    for namespace in running.NAMESPACES:
        assert f'CHECK_MUTEX "{namespace}"' in text
    # Per user: this session only (Local); machine-wide: everyone (Global).
    local, machine = text.index('CHECK_MUTEX "Local'), text.index('CHECK_MUTEX "Global')
    assert "${If} $AllUsers == 1" in text[local:machine]
    assert "AllowSkipFiles off" in text
    # Checked on start (installer and uninstaller) and again before files are replaced.
    assert text.count("Call WaitUntilClosed") == 2 and "Call un.WaitUntilClosed" in text
    # Every LeukGUI process announces itself: the command line's main() (which also opens
    # the window) holds the mutex; off Windows it is a no-op.
    assert running.announce_running() == []
    calls = []
    import leukgui.cli as cli

    monkeypatch.setattr(cli, "announce_running", lambda: calls.append(1))
    with pytest.raises(SystemExit):
        cli.main(["--version"])
    assert calls == [1]


# --- 7: NSIS's size limits ---------------------------------------------------------------------


def test_installer_is_not_solid() -> None:
    text = NSI.read_text()
    compressors = [line for line in text.splitlines() if line.startswith("SetCompressor")]
    assert compressors == ["SetCompressor lzma"]


def test_payload_guard_fails_on_oversized_stand_ins(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    folder = tmp_path / "LeukGUI" / "_internal"
    folder.mkdir(parents=True)
    (folder / "random.bin").write_bytes(os.urandom(3 * 1024 * 1024))  # does not compress
    (folder / "zeros.bin").write_bytes(bytes(8 * 1024 * 1024))  # compresses ~1000x
    payload = nsis_payload.measure(folder.parent)
    assert payload.files == 2 and payload.total == 11 * 1024 * 1024
    assert 3 * 1024 * 1024 < payload.estimate < 3.2 * 1024 * 1024
    assert nsis_payload.main([str(folder.parent)]) == 0
    assert "compressed about" in capsys.readouterr().out
    # Near the limit (here a stand-in limit of 3.4 MB: 90 % is 3.06 MB): refused, and why.
    assert nsis_payload.main([str(folder.parent), "--limit", str(3_400_000)]) == 1
    err = capsys.readouterr().err
    assert "FAILED: the compressed installer would be about" in err and "ImageNet weights" in err
    # One file over 2 GiB (sparse: no disk used) cannot be packed at all.
    huge = folder / "huge.bin"
    with huge.open("wb") as handle:
        handle.truncate(nsis_payload.LIMIT + 1)
    found = nsis_payload.problems(nsis_payload.measure(folder.parent))
    assert found == [
        f"_internal/huge.bin is {nsis_payload.LIMIT + 1:,} bytes: NSIS cannot "
        f"pack a file over {nsis_payload.LIMIT:,} bytes"
    ]


# --- under wine: the compiled installer against a process holding the mutex ------------------

WINE = shutil.which("wine")
AMD64_STUB = Path("/usr/share/nsis/Stubs/lzma-amd64-unicode")
needs_wine = pytest.mark.skipif(
    WINE is None or shutil.which("makensis") is None or not AMD64_STUB.is_file(),
    reason="needs wine and makensis with the amd64 stub (.ci/run installs both where apt works)",
)

HOLDER = r"""
Target amd64-unicode
Unicode true
RequestExecutionLevel user
SilentInstall silent
OutFile "{out}"
Section
  System::Call 'kernel32::CreateMutexW(p 0, i 0, w "{name}") p .r0'
  FileOpen $1 "$EXEDIR\holding" w
  FileClose $1
  loop:
    Sleep 100
    IfFileExists "$EXEDIR\stop" 0 loop
SectionEnd
"""


class _Holder:
    """A Windows process that holds the mutex as LeukGUI does, until told to stop."""

    def __init__(self, env: dict[str, str], folder: Path, name: str) -> None:
        from test_packaging import _makensis  # noqa: F401 - same makensis checks

        folder.mkdir(parents=True)
        script = folder / "holder.nsi"
        script.write_text(HOLDER.format(out=folder / "holder.exe", name=name))
        result = subprocess.run(["makensis", "-V2", str(script)], capture_output=True, text=True)
        assert result.returncode == 0, result.stdout + result.stderr
        self.folder = folder
        self.process = subprocess.Popen(
            [str(WINE), str(folder / "holder.exe")],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(300):
            if (folder / "holding").exists():
                break
            time.sleep(0.1)
        assert (folder / "holding").exists(), "the mutex holder did not start"

    def stop(self) -> None:
        (self.folder / "stop").write_text("")
        self.process.wait(timeout=60)


def _prefix(tmp_path: Path) -> dict[str, str]:
    """A fresh wine prefix (no Mono or Gecko prompts, no display) and its environment."""
    from test_packaging import _wine

    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")  # _setup_exe draws the icon
    env = {
        **os.environ,
        "WINEPREFIX": str(tmp_path / "prefix"),
        "WINEDEBUG": "-all",
        "WINEDLLOVERRIDES": "mscoree,mshtml=",
    }
    env.pop("DISPLAY", None)
    _wine(env, "wineboot", "-i")
    return env


@needs_wine
def test_installer_and_uninstaller_refuse_while_leukgui_runs(tmp_path: Path) -> None:
    from test_packaging import _registry, _setup_exe, _wine

    env = _prefix(tmp_path)
    home = next(p for p in (tmp_path / "prefix/drive_c/users").iterdir() if p.name != "Public")
    program = home / "AppData/Local/Programs/LeukGUI"
    key = r"HKCU\Software\Microsoft\Windows\CurrentVersion\Uninstall\LeukGUI"
    old = _setup_exe(tmp_path, "0.0.1", extra="only-in-0.0.1.txt")
    new = _setup_exe(tmp_path, "0.0.2")
    assert _wine(env, str(old), "/S").returncode == 0

    # LeukGUI running in this session (it holds the Local and the Global mutex; the stand-in
    # holds Local): the silent upgrade exits 3 and replaces nothing, and so does the silent
    # uninstall by the registry's QuietUninstallString, which runs in place so its exit
    # code comes back.
    quiet = _registry(env, key)["QuietUninstallString"]
    assert quiet == f'"{_windows(program)}\\Uninstall.exe" /S _?={_windows(program)}'
    uninstall = [quiet.split('"')[1], *quiet.split('"')[2].split()]
    holder = _Holder(env, tmp_path / "local", "Local\\" + running.MUTEX_NAME)
    try:
        assert _wine_now(env, str(new), "/S").returncode == 3
        assert (program / "_internal" / "only-in-0.0.1.txt").is_file()
        assert _registry(env, key)["DisplayVersion"] == "0.0.1"
        assert _wine_now(env, *uninstall).returncode == 3
        assert (program / "LeukGUI.exe").is_file() and _registry(env, key)
    finally:
        holder.stop()

    # Another user's LeukGUI on a shared PC (only the Global mutex is visible from here) does
    # not block this user's per-user upgrade; an _internal.old left by an upgrade that was cut
    # off does not stop it either.
    (program / "_internal.old").mkdir()
    (program / "_internal.old" / "stale.txt").write_text("from a cut-off upgrade")
    holder = _Holder(env, tmp_path / "global", "Global\\" + running.MUTEX_NAME)
    try:
        assert _wine_now(env, str(new), "/S").returncode == 0
    finally:
        holder.stop()
    assert not (program / "_internal" / "only-in-0.0.1.txt").exists()
    assert not (program / "_internal.old").exists()
    assert _registry(env, key)["DisplayVersion"] == "0.0.2"

    # Closed: the quiet uninstall exits 0 and, a moment later, nothing is left, not even the
    # uninstaller that ran in place or its folder.
    assert _wine(env, *uninstall).returncode == 0
    assert not program.exists() and _registry(env, key) == {}


def _wine_now(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """Run one Windows program and wait for it alone (the holder keeps wineserver busy)."""
    return subprocess.run([str(WINE), *args], env=env, capture_output=True, text=True, timeout=180)


def _windows(path: Path) -> str:
    """A path inside the wine prefix as Windows sees it."""
    parts = path.parts
    index = parts.index("drive_c")
    return "C:\\" + "\\".join(parts[index + 1 :])


@needs_wine
def test_machine_wide_install_under_wine(tmp_path: Path) -> None:
    """/ALLUSERS: Program Files, HKLM, everyone's Start menu; the uninstaller finds the mode
    from HKLM and removes it all. (Wine's account counts as an administrator.)"""
    from test_packaging import _registry, _setup_exe, _wine

    env = _prefix(tmp_path)
    drive = tmp_path / "prefix" / "drive_c"
    program = drive / "Program Files" / "LeukGUI"
    start_menu = drive / "ProgramData/Microsoft/Windows/Start Menu/Programs/LeukGUI.lnk"
    machine = r"HKLM\Software\Microsoft\Windows\CurrentVersion\Uninstall\LeukGUI"
    user = r"HKCU\Software\Microsoft\Windows\CurrentVersion\Uninstall\LeukGUI"
    setup = _setup_exe(tmp_path, leukgui.__version__)
    assert _wine(env, str(setup), "/S", "/ALLUSERS").returncode == 0
    assert (program / "LeukGUI.exe").is_file() and start_menu.is_file()
    entry = _registry(env, machine)
    assert entry["InstallLocation"] == r"C:\Program Files\LeukGUI"
    assert entry["DisplayVersion"] == leukgui.__version__
    assert _registry(env, user) == {}
    command = _registry(env, r"HKLM\Software\Classes\LeukGUI.ModelBundle\shell\open\command")
    assert command["(Default)"] == r'"C:\Program Files\LeukGUI\LeukGUI.exe" "%1"'
    home = next(p for p in (drive / "users").iterdir() if p.name != "Public")
    assert not (home / "AppData/Local/Programs/LeukGUI").exists()

    # Any user's LeukGUI (the Global mutex) blocks a machine-wide upgrade.
    holder = _Holder(env, tmp_path / "global", "Global\\" + running.MUTEX_NAME)
    try:
        assert _wine_now(env, str(setup), "/S", "/ALLUSERS").returncode == 3
    finally:
        holder.stop()
    assert _wine(env, str(program / "Uninstall.exe"), "/S").returncode == 0
    assert not program.exists() and not start_menu.exists()
    assert _registry(env, machine) == {}
    assert _registry(env, r"HKLM\Software\Classes\LeukGUI.ModelBundle") == {}


# --- 8: the release workflow and the build script ----------------------------------------------

WORKFLOW = REPO / ".github" / "workflows" / "windows-release.yml"
BUILD_PS1 = PACKAGING / "build.ps1"


def _steps() -> list[dict]:
    yaml = pytest.importorskip("yaml", reason="PyYAML is part of the test extra")
    return yaml.safe_load(WORKFLOW.read_text())["jobs"]["installer"]["steps"]


def test_workflow_keeps_signing_secrets_in_the_signing_steps() -> None:
    yaml = pytest.importorskip("yaml", reason="PyYAML is part of the test extra")
    job = yaml.safe_load(WORKFLOW.read_text())["jobs"]["installer"]
    # The job knows only whether a certificate exists.
    assert job["env"] == {"SIGNING_AVAILABLE": "${{ secrets.SIGNING_CERT != '' }}"}
    for step in job["steps"]:
        text = json.dumps(step)
        if "secrets." in text:
            assert step["name"].startswith("Sign "), step["name"]
            assert step["if"] == "env.SIGNING_AVAILABLE == 'true'"
            assert "Remove-Item $pfx" in step["run"]  # the certificate file does not linger


def test_workflow_checks_the_tag_nsis_and_every_exit_code() -> None:
    steps = _steps()
    version = next(s for s in steps if s.get("id") == "version")
    assert '$env:REF_NAME -ne "v$v"' in version["run"] and "throw" in version["run"]
    build = next(s for s in steps if "makensis" in str(s.get("run", "")))["run"]
    assert "for ($i = 1; $i -le 3; $i++)" in build and "choco install nsis" in build
    assert 'throw "could not install NSIS' in build and "Test-Path $makensis" in build
    runs = [s["run"] for s in steps if "run" in s]
    for run in runs:
        for line in run.splitlines():
            if "Start-Process" in line and "function" not in line:
                assert "-PassThru" in line, line
        lines = run.splitlines()
        for i, line in enumerate(lines):
            # Every native command's exit code is looked at on the next line.
            if line.strip().startswith("& ") and "signtool" not in line:
                assert "$LASTEXITCODE" in lines[i + 1], line
    installed = next(s for s in steps if s.get("name", "").startswith("Per-user install"))["run"]
    # A running app: both refuse with 3, found through the app's own mutex.
    assert f'"Global\\{running.MUTEX_NAME}"' in installed
    assert 'Invoke-Setup ".\\$setup" @("/S") 3' in installed
    assert 'Invoke-Setup "$target\\Uninstall.exe" @("/S", "_?=$target") 3' in installed
    # The uninstall is over when its registry entry is gone, not when the exe is.
    assert "for ($i = 0; $i -lt 120 -and (Test-Path $key); $i++)" in installed
    assert installed.index("(Test-Path $key); $i++)") < installed.index('"program files left')
    machine = next(s for s in steps if "/ALLUSERS" in s.get("name", ""))["run"]
    assert '"/S", "/ALLUSERS"' in machine and "HKLM:" in machine
    upload = next(s for s in steps if s.get("uses", "").startswith("actions/upload-artifact"))
    assert "SHA256SUMS.txt" in upload["with"]["path"]


def test_build_ps1_picks_python_311_and_checks_every_native_command() -> None:
    text = BUILD_PS1.read_text()
    assert text.isascii()
    assert '$python = @("py", "-3.11")' in text
    assert "sys.version_info[:2] == (3, 11) and struct.calcsize('P') == 8" in text
    assert "LongPathsEnabled" in text and "Write-Warning" in text
    lines = text.splitlines()
    natives = [i for i, line in enumerate(lines) if line.lstrip().startswith("& ")]
    assert len(natives) >= 10
    for i in natives:
        follow = lines[i + 1] if not lines[i].endswith("`") else lines[i + 2]
        if lines[i].startswith("$ok = "):
            continue
        assert "$LASTEXITCODE" in follow, lines[i]
    # The DLL gate runs on the frozen folder before anything is started from it.
    gate = text.index("packaging\\dll_gate.py dist\\LeukGUI")
    assert gate < text.index("--self-test") and "nsis_payload.py dist\\LeukGUI" in text
