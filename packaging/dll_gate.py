"""DLL gate: every DLL the Windows build can load must be in the build or be part of Windows.

A frozen app that starts on the build machine can still fail on a lab PC: the build machine
has Visual Studio and its C++ runtime in System32, a lab PC may have an older runtime or
none, and PyInstaller leaves System32 DLLs out unless they are on its allow-list. So after
PyInstaller, this reads the import table (and delay-import table) of every .exe, .dll and
.pyd in the folder with pefile and checks that each imported DLL is

- beside the importer, at the top of ``_internal`` (the bootloader puts it on the DLL search
  path) or beside the executables, or
- a DLL that every Windows 10 has (`SYSTEM_DLLS`, an explicit list, plus the ``api-ms-win-*``
  API sets), or
- elsewhere in the folder (a package adds its own folder to the search path, as PySide6 and
  OpenVINO do): allowed, and listed with ``--verbose``;

and that the Visual C++ runtime DLLs (`VC_RUNTIME`) sit at the top of ``_internal``, where
the CLI finds them without Qt having loaded them first. Anything else stops the build and is
named with the modules that import it.

    python packaging/dll_gate.py dist/LeukGUI              # after PyInstaller (build.ps1)
    python packaging/dll_gate.py --wheels DIR              # the pinned win_amd64 wheels
    python packaging/dll_gate.py --wheels DIR --write-manifest packaging/windows/dll-imports.json
    python packaging/dll_gate.py --manifest packaging/windows/dll-imports.json

The manifest is the import tables of the pinned Windows wheels, committed, so the Linux tests
check them offline (tests/test_packaging.py); regenerate it whenever a Windows pin changes.
Needs pefile for folders and wheels (it is in the build lock and the test extra), not for a
manifest. No imports from leukgui: the spec and build.ps1 run it in the freeze environment.
"""

from __future__ import annotations

import argparse
import json
import sys
import zipfile
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

# The Visual C++ 2015-2022 runtime (x64) that the frozen app deploys app-local at the top of
# _internal (the redistributable's licence allows it): a per-user installer cannot run
# vc_redist, which needs administrator rights. TensorFlow 2.21's pywrap_tflite_common.dll
# imports vcruntime140_threads.dll, which only runtimes from VS 2022 17.8 on have.
VC_RUNTIME = (
    "concrt140.dll",
    "msvcp140.dll",
    "msvcp140_1.dll",
    "msvcp140_2.dll",
    "vcruntime140.dll",
    "vcruntime140_1.dll",
    "vcruntime140_threads.dll",
)

# The interpreter's own DLLs: PyInstaller always collects them from the Python it runs on.
PYTHON_DLLS = ("python3.dll", "python311.dll")

# DLLs in System32 of every Windows 10 (1809+) and Windows 11 x64, including the Universal C
# runtime (ucrtbase, part of Windows 10). Reviewed by hand: add a name only when it is part
# of Windows itself, never a redistributable (the VC++ runtime, DirectX redistributables,
# OpenCL ICDs shipped by drivers: those belong in the bundle or are loaded optionally).
SYSTEM_DLLS = frozenset(
    [
        "advapi32.dll",
        "authz.dll",
        "bcrypt.dll",
        "bcryptprimitives.dll",
        "cabinet.dll",
        "cfgmgr32.dll",
        "comctl32.dll",
        "comdlg32.dll",
        "crypt32.dll",
        "cryptbase.dll",
        "cryptnet.dll",
        "d2d1.dll",
        "d3d11.dll",
        "d3d12.dll",
        "d3d9.dll",
        "d3dcompiler_47.dll",
        "dbgeng.dll",
        "dbghelp.dll",
        "dcomp.dll",
        "dnsapi.dll",
        "dwmapi.dll",
        "dwrite.dll",
        "dxcore.dll",
        "dxgi.dll",
        "dxva2.dll",
        "gdi32.dll",
        "gdiplus.dll",
        "glu32.dll",
        "hid.dll",
        "icu.dll",
        "icuin.dll",
        "icuuc.dll",
        "imagehlp.dll",
        "imm32.dll",
        "iphlpapi.dll",
        "odbc32.dll",
        "uiautomationcore.dll",
        "kernel32.dll",
        "kernelbase.dll",
        "mf.dll",
        "mfplat.dll",
        "mfreadwrite.dll",
        "mpr.dll",
        "msimg32.dll",
        "msvcrt.dll",
        "ncrypt.dll",
        "netapi32.dll",
        "normaliz.dll",
        "ntdll.dll",
        "ole32.dll",
        "oleacc.dll",
        "oleaut32.dll",
        "opengl32.dll",
        "pdh.dll",
        "powrprof.dll",
        "propsys.dll",
        "psapi.dll",
        "rpcrt4.dll",
        "secur32.dll",
        "setupapi.dll",
        "shcore.dll",
        "shell32.dll",
        "shlwapi.dll",
        "sspicli.dll",
        "ucrtbase.dll",
        "urlmon.dll",
        "user32.dll",
        "userenv.dll",
        "usp10.dll",
        "uxtheme.dll",
        "version.dll",
        "wevtapi.dll",
        "winhttp.dll",
        "wininet.dll",
        "winmm.dll",
        "winspool.drv",
        "wintrust.dll",
        "wldap32.dll",
        "ws2_32.dll",
        "wsock32.dll",
        "wtsapi32.dll",
        "windowscodecs.dll",
    ]
)
# Imports that may be absent on a lab PC because what imports them is optional: the loader
# fails for that one plugin, and the app carries on without it. Each says why.
OPTIONAL_DLLS = {
    "opencl.dll": "installed by a GPU driver; without it OpenVINO's GPU plugin does not load "
    "and the CPU runs",
    "ze_loader.dll": "Intel NPU driver (OpenVINO's NPU plugin, left out by the spec)",
    "qt6pdf.dll": "Qt's PDF image plugin; QtPdf is not part of PySide6-Essentials",
    "qt6virtualkeyboard.dll": "Qt's virtual-keyboard input plugin; not part of PySide6-Essentials",
}

# Wheel members PyInstaller does not collect for this app (the spec's excludes and PyInstaller's
# Qt hooks): their imports are not checked when checking wheels. A folder is always checked whole.
NOT_COLLECTED = (
    "PySide6/qml/",
    "PySide6/plugins/designer/",
    "PySide6/plugins/qmltooling/",
    "PySide6/plugins/sqldrivers/",
    "openvino/libs/openvino_intel_npu",
)
API_SET_PREFIXES = ("api-ms-win-", "ext-ms-win-")
PE_SUFFIXES = (".dll", ".pyd", ".exe")


def is_system(name: str) -> bool:
    """Part of every Windows 10/11 x64: on the reviewed list, or an API set the loader maps."""
    name = name.lower()
    return name in SYSTEM_DLLS or name.startswith(API_SET_PREFIXES)


def pe_imports(data: bytes) -> list[str]:
    """The DLL names a PE file imports (normal and delay-loaded), lower-case, sorted."""
    import pefile

    pe = pefile.PE(data=data, fast_load=True)
    pe.parse_data_directories(
        directories=[
            pefile.DIRECTORY_ENTRY["IMAGE_DIRECTORY_ENTRY_IMPORT"],
            pefile.DIRECTORY_ENTRY["IMAGE_DIRECTORY_ENTRY_DELAY_IMPORT"],
        ]
    )
    names = set()
    for entry in getattr(pe, "DIRECTORY_ENTRY_IMPORT", []) + getattr(
        pe, "DIRECTORY_ENTRY_DELAY_IMPORT", []
    ):
        names.add(entry.dll.decode("ascii", "replace").lower())
    # No pe.close(): it only unmaps files pefile opened itself (this one was given bytes),
    # and it runs a full gc.collect(), seconds per file in a process with a large heap.
    return sorted(names)


@dataclass
class GateResult:
    """What the gate found: `missing` and `misplaced` stop the build."""

    modules: int = 0
    missing: dict[str, list[str]] = field(default_factory=dict)  # DLL -> importers
    misplaced: list[str] = field(default_factory=list)  # VC runtime DLLs not at the top
    indirect: dict[str, list[str]] = field(default_factory=dict)  # found in another folder
    needs_vc: dict[str, list[str]] = field(default_factory=dict)  # VC runtime DLL -> importers
    optional: dict[str, list[str]] = field(default_factory=dict)  # absent but optional
    unreadable: dict[str, str] = field(default_factory=dict)  # module -> reason

    @property
    def ok(self) -> bool:
        return not (self.missing or self.misplaced or self.unreadable)

    def report(self, verbose: bool = False) -> str:
        """Plain-language summary for the build log; names every problem and its importers."""
        lines = [f"DLL gate: {self.modules} modules read"]
        for name, importers in sorted(self.missing.items()):
            shown = ", ".join(importers[:4]) + (" ..." if len(importers) > 4 else "")
            lines.append(f"  MISSING {name} (imported by {shown})")
        for name in self.misplaced:
            lines.append(f"  MISPLACED {name}: must be at the top of _internal (app-local VC++)")
        for module, reason in sorted(self.unreadable.items()):
            lines.append(f"  UNREADABLE {module}: {reason}")
        for name, importers in sorted(self.optional.items()):
            lines.append(f"  optional, absent: {name} ({OPTIONAL_DLLS[name]}; {len(importers)})")
        for name, importers in sorted(self.needs_vc.items()):
            lines.append(f"  VC++ runtime {name}: imported by {len(importers)} module(s)")
        if verbose:
            for name, places in sorted(self.indirect.items()):
                lines.append(f"  via a package folder: {name} ({', '.join(places[:3])})")
        lines.append("DLL gate: " + ("passed" if self.ok else "FAILED"))
        return "\n".join(lines)


def check_modules(
    imports: Mapping[str, Iterable[str]],
    files: Iterable[str],
    *,
    top_dirs: Iterable[str] = ("",),
    provided: Iterable[str] = (),
) -> GateResult:
    """Resolve every import of `imports` (module path -> DLL names) against `files`.

    Paths are POSIX-style and relative to the bundle. `top_dirs` are the folders on the
    default DLL search path (the executables' folder and ``_internal``); `provided` are names
    the build adds that the scanned files lack (the VC++ runtime when checking wheels).
    """
    result = GateResult(modules=len(imports))
    where: dict[str, list[str]] = defaultdict(list)
    for path in files:
        p = PurePosixPath(path)
        where[p.name.lower()].append(str(p.parent) if str(p.parent) != "." else "")
    tops = {d.strip("/") for d in top_dirs}
    provided_names = {n.lower() for n in provided}
    vc = {n.lower() for n in VC_RUNTIME}
    missing: dict[str, list[str]] = defaultdict(list)
    for module, names in sorted(imports.items()):
        folder = str(PurePosixPath(module).parent)
        folder = "" if folder == "." else folder
        for name in names:
            name = name.lower()
            if name in vc:
                result.needs_vc.setdefault(name, []).append(module)
            places = where.get(name, [])
            if folder in places or tops & set(places) or name in provided_names:
                continue
            if is_system(name):
                continue
            if places:
                result.indirect.setdefault(name, []).append(places[0])
                continue
            if name in OPTIONAL_DLLS:
                result.optional.setdefault(name, []).append(module)
                continue
            missing[name].append(module)
    result.missing = dict(missing)
    return result


def check_folder(root: Path) -> GateResult:
    """The gate on a PyInstaller onedir (dist/LeukGUI)."""
    internal = root / "_internal"
    tops = ["", "_internal"] if internal.is_dir() else [""]
    files = [p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()]
    imports: dict[str, list[str]] = {}
    unreadable: dict[str, str] = {}
    for rel in files:
        if not rel.lower().endswith(PE_SUFFIXES):
            continue
        try:
            imports[rel] = pe_imports((root / rel).read_bytes())
        except Exception as exc:  # noqa: BLE001 - any parse failure is named, not fatal here
            unreadable[rel] = f"{type(exc).__name__}: {exc}"
    result = check_modules(imports, files, top_dirs=tops)
    result.unreadable = unreadable
    present = {
        PurePosixPath(f).name.lower()
        for f in files
        if PurePosixPath(f).parent.as_posix() in ("_internal" if internal.is_dir() else ".",)
    }
    result.misplaced = [name for name in VC_RUNTIME if name not in present]
    return result


def read_wheels(folder: Path) -> dict:
    """Import tables of every PE member of every win_amd64 wheel in `folder` (a manifest)."""
    wheels: dict[str, dict[str, list[str]]] = {}
    for wheel in sorted(folder.glob("*.whl")):
        members: dict[str, list[str]] = {}
        with zipfile.ZipFile(wheel) as archive:
            for info in archive.infolist():
                if info.filename.lower().endswith(PE_SUFFIXES):
                    members[info.filename] = pe_imports(archive.read(info))
        wheels[wheel.name] = members
    return {"format": 1, "wheels": wheels}


def check_manifest(manifest: Mapping) -> GateResult:
    """The gate on the pinned wheels: everything PyInstaller would collect from them, plus the
    VC++ runtime and the interpreter's DLLs that the build adds."""
    imports: dict[str, list[str]] = {}
    files: list[str] = []
    for members in manifest["wheels"].values():
        for path, names in members.items():
            files.append(path)
            if not path.startswith(NOT_COLLECTED):
                imports[path] = names
    return check_modules(imports, files, provided=VC_RUNTIME + PYTHON_DLLS)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", nargs="?", type=Path, help="PyInstaller onedir (dist/LeukGUI)")
    parser.add_argument("--wheels", type=Path, help="folder of the pinned win_amd64 wheels")
    parser.add_argument("--manifest", type=Path, help="a manifest written by --write-manifest")
    parser.add_argument("--write-manifest", type=Path, help="with --wheels: save their imports")
    parser.add_argument("--verbose", action="store_true", help="also list indirect resolutions")
    args = parser.parse_args(argv)
    if sum(x is not None for x in (args.folder, args.wheels, args.manifest)) != 1:
        parser.error("give exactly one of FOLDER, --wheels or --manifest")
    if args.folder is not None:
        if not args.folder.is_dir():
            parser.error(f"{args.folder} is not a folder")
        result = check_folder(args.folder)
    else:
        if args.wheels is not None:
            manifest = read_wheels(args.wheels)
            if args.write_manifest:
                args.write_manifest.write_text(
                    json.dumps(manifest, indent=0, sort_keys=True) + "\n", encoding="utf-8"
                )
        else:
            manifest = json.loads(args.manifest.read_text(encoding="utf-8"))
        result = check_manifest(manifest)
    print(result.report(verbose=args.verbose))
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
