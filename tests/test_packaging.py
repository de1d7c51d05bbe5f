"""Packaging files stay consistent and the installer script compiles.

The frozen build itself takes many minutes and is run by `packaging/build.sh`; these checks
catch a broken spec, installer script or release workflow in every test run.
"""

from __future__ import annotations

import fnmatch
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


RUNTIME_PACKAGES = ("openvino", "openvino-telemetry", "tf2onnx", "onnx")
BUILD_SH = REPO / "packaging" / "build.sh"
BUILD_PS1 = REPO / "packaging" / "build.ps1"
LOCK = REPO / "packaging" / "requirements-build.txt"
# engine name on the command line -> the label `Runtime:` starts with
RUNTIME_LABELS = {"openvino": "OpenVINO", "onnx": "ONNX Runtime", "tensorflow": "TensorFlow"}


def _lock_for(platform: str) -> dict[str, str]:
    """The lock's pins whose environment marker holds on `platform` ("linux" or "win32")."""
    from packaging.markers import default_environment
    from packaging.requirements import Requirement

    environment = {**default_environment(), "sys_platform": platform, "extra": ""}
    pins = {}
    for line in LOCK.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        requirement = Requirement(line)
        if requirement.marker is None or requirement.marker.evaluate(environment):
            pins[_normal(requirement.name)] = str(requirement.specifier).removeprefix("==")
    return pins


def test_build_lock_pins_the_inference_runtimes_for_each_platform() -> None:
    from packaging.markers import default_environment
    from packaging.requirements import Requirement

    linux, windows = _lock_for("linux"), _lock_for("win32")
    for name in RUNTIME_PACKAGES:
        assert name in linux and name in windows, name
    # ONNX Runtime: the CPU build on Linux, the DirectML build (and what only it needs) on Windows.
    assert "onnxruntime" in linux and "onnxruntime-directml" not in linux
    assert "onnxruntime-directml" in windows and "onnxruntime" not in windows
    for name in ("sympy", "mpmath", "pefile", "pywin32-ctypes"):
        assert name in windows and name not in linux, name
    # Each project dependency is pinned, within its range, on every platform its marker names.
    tomllib = pytest.importorskip("tomllib", reason="Python 3.11+")
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    for platform, pins in (("linux", linux), ("win32", windows)):
        environment = {**default_environment(), "sys_platform": platform, "extra": ""}
        for dependency in map(Requirement, project["dependencies"]):
            if dependency.marker and not dependency.marker.evaluate(environment):
                continue
            name = _normal(dependency.name)
            assert name in pins, f"{name} is not pinned for the frozen build on {platform}"
            assert dependency.specifier.contains(pins[name], prereleases=True), (name, platform)


def test_build_lock_holds_the_dependencies_of_the_installed_pins() -> None:
    """Where this environment has a pinned package at its pinned version, the lock (Linux side)
    also pins what that package requires, at a version it accepts: the build's `pip check`
    finds the same, minutes later."""
    import importlib.metadata as metadata

    from packaging.markers import default_environment
    from packaging.requirements import Requirement

    pins = _lock_for("linux")
    environment = {**default_environment(), "sys_platform": "linux", "extra": ""}
    checked = set()
    for name, version in pins.items():
        try:
            distribution = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        if distribution.version != version:
            continue
        checked.add(name)
        for line in distribution.requires or []:
            requirement = Requirement(line)
            if requirement.marker and not requirement.marker.evaluate(environment):
                continue
            needed = _normal(requirement.name)
            assert needed in pins, f"{name} {version} needs {line}, which the lock misses"
            assert requirement.specifier.contains(pins[needed], prereleases=True), (name, line)
    # The runtimes are installed here (pyproject depends on them), so they were checked.
    assert {"openvino", "onnxruntime", "tf2onnx", "onnx"} <= checked, checked


def _stub_pyinstaller(monkeypatch: pytest.MonkeyPatch, calls: list[tuple]) -> dict[str, object]:
    """PyInstaller's hook helpers and spec objects, recording what the spec asks of them."""
    import types

    def collect_submodules(package: str, filter=None) -> list[str]:  # noqa: A002
        calls.append(("collect_submodules", package))
        names = [package, f"{package}.convert", f"{package}.tests.test_x"]
        return [n for n in names if filter is None or filter(n)]

    def collect_dynamic_libs(package: str, **kwargs: object) -> list[tuple[str, str]]:
        calls.append(("collect_dynamic_libs", package, tuple(kwargs.get("search_patterns") or ())))
        return [(f"/site/{package}/libs/lib{package}.so", f"{package}/libs")]

    def collect_data_files(package: str, **kwargs: object) -> list[tuple[str, str]]:
        calls.append(("collect_data_files", package, tuple(kwargs.get("includes") or ())))
        return [(f"/site/{package}/libs/cache.json", f"{package}/libs")]

    hooks = types.ModuleType("PyInstaller.utils.hooks")
    hooks.collect_submodules = collect_submodules
    hooks.collect_dynamic_libs = collect_dynamic_libs
    hooks.collect_data_files = collect_data_files
    for name in ("PyInstaller", "PyInstaller.utils"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    monkeypatch.setitem(sys.modules, "PyInstaller.utils.hooks", hooks)

    class Analysis:
        def __init__(self, scripts: list[str], **kwargs: object) -> None:
            self.kwargs = kwargs
            self.scripts = [("entry_gui", "", "PYSOURCE"), ("entry_cli", "", "PYSOURCE")]
            self.pure, self.datas = [], []
            self.binaries = [(name, "/src/" + name, "BINARY") for name in FROZEN_BINARIES]

    recorded: dict[str, object] = {}

    def record(kind: str):
        def make(*args: object, **kwargs: object) -> object:
            recorded.setdefault(kind, []).append((args, kwargs))
            return kind

        return make

    return {
        "Analysis": lambda *a, **k: recorded.setdefault("analysis", Analysis(*a, **k)),
        "PYZ": record("PYZ"),
        "EXE": record("EXE"),
        "COLLECT": record("COLLECT"),
        "_recorded": recorded,
    }


# What the import scan and the spec's own collections give Analysis (Linux and Windows names).
KEPT_BINARIES = (
    "openvino/libs/libopenvino.so.2641",
    "openvino/libs/libopenvino_intel_cpu_plugin.so",
    "openvino/libs/libopenvino_intel_gpu_plugin.so",
    "openvino/libs/libopenvino_auto_plugin.so",
    "openvino/libs/libopenvino_onnx_frontend.so.2641",
    "openvino/libs/libopenvino_ir_frontend.so.2641",
    "openvino/libs/libtbb.so.12",
    "openvino\\libs\\openvino_intel_cpu_plugin.dll",
    "openvino\\libs\\openvino_onnx_frontend.dll",
    "onnxruntime/capi/libonnxruntime.so.1.32.0",
    "onnxruntime/capi/libonnxruntime_providers_shared.so",
    "onnxruntime\\capi\\DirectML.dll",
    "onnxruntime\\capi\\onnxruntime.dll",
    "PySide6/Qt/plugins/platforms/libqxcb.so",
)
DROPPED_BINARIES = (
    "openvino/libs/libopenvino_intel_npu_plugin.so",
    "openvino\\libs\\openvino_intel_npu_compiler.dll",
    "openvino/libs/libopenvino_pytorch_frontend.so.2641",
    "openvino/libs/libopenvino_tensorflow_frontend.so.2641",
    "openvino/libs/libopenvino_tensorflow_lite_frontend.so.2641",
    "openvino\\libs\\openvino_paddle_frontend.dll",
    "openvino/libs/libopenvino_jax_frontend.so.2641",
    "PySide6/Qt/plugins/platforms/libqvnc.so",
)
FROZEN_BINARIES = KEPT_BINARIES + DROPPED_BINARIES


def test_spec_collects_the_inference_runtimes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Run the spec with PyInstaller's helpers stubbed: what it collects and what it trims."""
    root = tmp_path / "repo"
    (root / "packaging").mkdir(parents=True)
    (root / "leukgui").mkdir()
    (root / "leukgui" / "__init__.py").write_text('__version__ = "9.8.7"\n')
    (root / "build" / "pyinstaller-extra").mkdir(parents=True)
    (root / "build" / "pyinstaller-extra" / "leukgui.ico").write_bytes(b"icon")
    monkeypatch.delenv("LEUKGUI_BUNDLE_WEIGHTS", raising=False)
    calls: list[tuple] = []
    names = _stub_pyinstaller(monkeypatch, calls)
    names["SPECPATH"] = str(root / "packaging")
    exec(compile(SPEC.read_text(), str(SPEC), "exec"), names)  # noqa: S102
    analysis = names["_recorded"]["analysis"]
    kwargs = analysis.kwargs

    dynamic = {c[1]: c[2] for c in calls if c[0] == "collect_dynamic_libs"}
    assert "onnxruntime" in dynamic  # DirectML.dll sits in onnxruntime/capi too
    # OpenVINO's frontends on Linux are libopenvino_onnx_frontend.so.2641: PyInstaller's
    # default patterns (lib*.so) miss them, and OpenVINO then cannot read the ONNX graph.
    patterns = dynamic["openvino"]
    for library in ("libopenvino_onnx_frontend.so.2641", "openvino_onnx_frontend.dll"):
        assert any(fnmatch.fnmatch(library, p) for p in patterns), (library, patterns)
    binaries = kwargs.get("binaries") or []
    assert ("/site/openvino/libs/libopenvino.so", "openvino/libs") in binaries
    assert ("/site/onnxruntime/libs/libonnxruntime.so", "onnxruntime/libs") in binaries
    data_calls = [c for c in calls if c[:2] == ("collect_data_files", "openvino")]
    assert data_calls and "libs/*.json" in data_calls[0][2]  # the GPU plugin's cache.json
    assert ("/site/openvino/libs/cache.json", "openvino/libs") in kwargs["datas"]
    hidden = kwargs["hiddenimports"]
    assert ("collect_submodules", "tf2onnx") in calls
    assert "tf2onnx.convert" in hidden and "tf2onnx.tests.test_x" not in hidden
    for module in ("openvino", "onnxruntime", "onnx"):
        assert module in hidden, module
    for module in ("openvino.tools", "openvino.frontend.pytorch", "torch"):
        assert module in kwargs["excludes"], module
    # The OpenVINO core, its CPU and GPU plugins, the ONNX and IR frontends and every ONNX
    # Runtime library stay; the NPU plugin and other frameworks' frontends go.
    kept = {entry[0] for entry in analysis.binaries}
    assert set(KEPT_BINARIES) <= kept, set(KEPT_BINARIES) - kept
    assert not kept & set(DROPPED_BINARIES), kept & set(DROPPED_BINARIES)
    ((collect_args, collect_kwargs),) = names["_recorded"]["COLLECT"]
    assert collect_kwargs["upx"] is False and analysis.binaries in collect_args


FAKE_CLI = r"""#!/usr/bin/env bash
# Stands in for the frozen leukgui-cli: FAKE_MODE says how it misbehaves.
echo "$*" >> "$FAKE_LOG"
if [ "$1" = --self-test ]; then exit 0; fi
if [ "$1" = runtimes ]; then echo "Runtimes in the order 'auto' tries them:"; exit 0; fi
runtime= out=
while [ $# -gt 0 ]; do
    case $1 in --runtime) runtime=$2; shift ;; --out) out=$2; shift ;; esac
    shift
done
case $runtime in
    openvino) label=OpenVINO ;; onnx) label="ONNX Runtime" ;; *) label=TensorFlow ;;
esac
case "$FAKE_MODE:$runtime" in
    fallback:onnx) echo "Runtime: TensorFlow · CPU · fp32" >&2
                   echo "  runtime note: ONNX Runtime failed its self-check" >&2 ;;
    note:openvino) echo "Runtime: OpenVINO · CPU · fp32" >&2
                   echo "  runtime note: OpenVINO GPU failed its self-check" >&2 ;;
    crash:tensorflow) echo "Traceback" >&2; exit 3 ;;
    silent:openvino) ;;
    *) echo "Runtime: $label · CPU · fp32" >&2 ;;
esac
echo "12 cells"
[ "$FAKE_MODE:$runtime" = "noreport:onnx" ] || echo xlsx > "$out"
"""


def _runtime_checks(tmp_path: Path, mode: str) -> tuple[subprocess.CompletedProcess[str], str]:
    """build.sh's checks after PyInstaller, run against a fake frozen CLI."""
    text = BUILD_SH.read_text()
    start = text.index('echo "== frozen self-test"')
    checks = tmp_path / mode / "checks.sh"
    cli = tmp_path / mode / "dist" / "LeukGUI" / "leukgui-cli"
    cli.parent.mkdir(parents=True)
    cli.write_text(FAKE_CLI)
    cli.chmod(0o755)
    # The size check runs the real packaging/nsis_payload.py with this Python.
    (tmp_path / mode / "packaging").mkdir()
    shutil.copy(REPO / "packaging" / "nsis_payload.py", tmp_path / mode / "packaging")
    (tmp_path / mode / "venv" / "bin").mkdir(parents=True)
    (tmp_path / mode / "venv" / "bin" / "python").symlink_to(sys.executable)
    checks.write_text("set -euo pipefail\nVENV=venv\n" + text[start:])
    log = tmp_path / mode / "calls.log"
    result = subprocess.run(
        ["bash", str(checks)],
        cwd=checks.parent,
        env={**os.environ, "FAKE_MODE": mode, "FAKE_LOG": str(log)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    return result, log.read_text() if log.exists() else ""


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_build_sh_checks_each_runtime_of_the_frozen_cli(tmp_path: Path) -> None:
    result, calls = _runtime_checks(tmp_path, "good")
    assert result.returncode == 0, result.stdout + result.stderr
    for runtime, label in RUNTIME_LABELS.items():
        assert re.search(
            rf"^analyze resources/samples --runtime {runtime} --out \S+{runtime}"
            r"\.xlsx$",
            calls,
            re.M,
        ), calls
        assert f"Runtime: {label} · CPU" in result.stdout
    assert re.search(r"^runtimes$", calls, re.M) and "== size:" in result.stdout
    assert "== NSIS size limits" in result.stdout and "NSIS payload: 1 files" in result.stdout
    # Each way a runtime can be passed over or fail stops the build.
    for mode in ("fallback", "note", "crash", "silent", "noreport"):
        result, _ = _runtime_checks(tmp_path, mode)
        assert result.returncode != 0, (mode, result.stdout, result.stderr)
        assert "FAILED" in result.stderr, (mode, result.stderr)


def test_build_ps1_checks_each_runtime_and_requires_directml() -> None:
    text = BUILD_PS1.read_text()
    assert text.isascii()  # PowerShell 5 reads a BOM-less script as the ANSI code page
    for runtime, label in RUNTIME_LABELS.items():
        assert f'"{runtime}" = "{label}"' in text, runtime
    assert '"analyze", "resources\\samples", "--runtime", $runtime' in text
    assert 'StartsWith("Runtime: $label")' in text and '-match "runtime note:"' in text
    assert 'throw "--runtime $runtime did not run on $label' in text
    # The DirectML self-check, and a failing exit stops the build.
    lines = text.splitlines()
    require = [
        i
        for i, line in enumerate(lines)
        if "runtimes --require onnx:DirectML" in line and not line.lstrip().startswith("#")
    ]
    assert len(require) == 1 and lines[require[0]].startswith("& dist\\LeukGUI\\")
    assert lines[require[0] + 1].startswith("if ($LASTEXITCODE) { throw")
    self_test = next(i for i, line in enumerate(lines) if line.endswith("--self-test"))
    assert self_test < require[0] and "== size:" in text


def test_release_workflow_checks_the_runtimes_and_directml() -> None:
    yaml = pytest.importorskip("yaml", reason="PyYAML is part of the test extra")
    steps = yaml.safe_load(WORKFLOW.read_text())["jobs"]["installer"]["steps"]
    build = next(s for s in steps if "packaging\\build.ps1" in str(s.get("run", "")))
    assert "runtime" in build["name"].lower() and build["shell"] == "pwsh"
    assert "continue-on-error" not in build and "if" not in build
    # The installed app, too: each runtime by name, and DirectML's self-check.
    installed = next(s for s in steps if "Uninstall.exe" in str(s.get("run", "")))
    run = installed["run"]
    assert "continue-on-error" not in installed
    for runtime, label in RUNTIME_LABELS.items():
        assert f'"{runtime}" = "{label}"' in run, runtime
    assert '"$target\\leukgui-cli.exe" -NoNewWindow' in run and '"--runtime", $runtime' in run
    assert '-match "runtime note:"' in run
    directml = run.index('& "$target\\leukgui-cli.exe" runtimes --require onnx:DirectML')
    assert run[directml:].splitlines()[1].strip().startswith("if ($LASTEXITCODE) { throw")
    assert run.index("--self-test") < directml < run.index("Uninstall.exe")


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
    # HKCU per user, HKLM machine-wide (/ALLUSERS): SHCTX follows SetShellVarContext.
    assert 'WriteRegStr SHCTX "Software\\Classes\\.leukmodel"' in text
    assert "SetShellVarContext all" in text and "$PROGRAMFILES64\\${APP}" in text
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
    # The frozen folder is checked against NSIS's limits before makensis runs, and the
    # installer after it.
    guard = runs.index("packaging\\nsis_payload.py dist\\LeukGUI")
    assert guard < runs.index("& $makensis") and "throw" in runs[guard : guard + 200]
    assert "nsis_payload.py dist\\LeukGUI --installer $out" in runs
    signing = [s for s in steps if "sign" in s.get("name", "").lower()]
    assert signing and all(s.get("if") == "env.SIGNING_AVAILABLE == 'true'" for s in signing)


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
        .replace("env.SIGNING_AVAILABLE", "secret.SIGNING_AVAILABLE", 1)
    )
    result = _actionlint(str(broken))
    assert result.returncode == 1
    assert "windows-latst" in result.stdout and "secret" in result.stdout


WINE = shutil.which("wine")
AMD64_STUB = Path("/usr/share/nsis/Stubs/lzma-amd64-unicode")


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
    # In place (_?=), so IT tools wait for it and get its exit code.
    assert entry["QuietUninstallString"].endswith(
        r'Uninstall.exe" /S _?=' + entry["InstallLocation"]
    )
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
