"""A named mutex that tells the Windows installer and uninstaller that LeukGUI is running.

Windows keeps a running program's files locked, and NSIS in silent mode skips a file it
cannot replace: a silent upgrade over a running LeukGUI would leave a mix of old and new
files and report success, and an uninstall would leave files behind. So every LeukGUI
process (window or command line) holds this mutex for its lifetime; the installer and
uninstaller (packaging/windows/installer.nsi, which spells the same name) open it before they
touch a file, ask to close LeukGUI when run interactively, and exit with code 3 when silent.

Each process holds it twice: in its session (Local), which a per-user installer checks, so
another user's LeukGUI on a shared PC does not block this user's upgrade; and machine-wide
(Global), which a machine-wide (/ALLUSERS) installer checks, since every user runs those
files. Where Global cannot be created (another user's process holds it with a DACL this
user may not open) it still exists while that process runs. Windows closes the handles when
the process ends, however it ends.
"""

from __future__ import annotations

import sys

__all__ = ["MUTEX_NAME", "NAMESPACES", "announce_running"]

MUTEX_NAME = "LeukGUI.Running.{5C6A1B8E-2D4F-4A57-9E0C-7B1D3F9A6E42}"
NAMESPACES = ("Global\\", "Local\\")

_held: list[int] = []  # handles stay open until the process exits


def announce_running() -> list[str]:
    """Create (or open) the mutex in each namespace; the full names held (none off Windows).

    Never raises: a missing mutex only weakens the installer's check, it must not stop the
    app from starting.
    """
    if sys.platform != "win32" or _held:
        return []
    held = []
    try:
        import ctypes
        from ctypes import wintypes

        kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)
        create = kernel32.CreateMutexW
        create.restype = wintypes.HANDLE
        create.argtypes = (wintypes.LPVOID, wintypes.BOOL, wintypes.LPCWSTR)
        for namespace in NAMESPACES:
            handle = create(None, False, namespace + MUTEX_NAME)
            if handle:
                _held.append(handle)
                held.append(namespace + MUTEX_NAME)
    except (OSError, AttributeError):
        pass
    return held
