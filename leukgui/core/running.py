"""A named mutex that tells the Windows installer and uninstaller that LeukGUI is running.

Windows keeps a running program's files locked, and NSIS in silent mode skips a file it
cannot replace: a silent upgrade over a running LeukGUI would leave a mix of old and new
files and report success, and an uninstall would leave files behind. So every LeukGUI
process (window or command line) holds this mutex for its lifetime; the installer and
uninstaller (packaging/windows/installer.nsi, which spells the same name) open it before they
touch a file, ask to close LeukGUI when run interactively, and exit with code 3 when silent.

The mutex lives in the Global namespace so an installer in another session (an IT tool
running as SYSTEM, another user on a shared PC) sees it; where Global cannot be used (another
user's process holds it with a DACL this user may not open) the Local one is created.
Windows closes the handle when the process ends, however it ends.
"""

from __future__ import annotations

import sys

__all__ = ["MUTEX_NAME", "NAMESPACES", "announce_running"]

MUTEX_NAME = "LeukGUI.Running.{5C6A1B8E-2D4F-4A57-9E0C-7B1D3F9A6E42}"
NAMESPACES = ("Global\\", "Local\\")

_held: list[int] = []  # handles stay open until the process exits


def announce_running() -> str | None:
    """Create (or open) the mutex; the full name held, or None off Windows or on failure.

    Never raises: a missing mutex only weakens the installer's check, it must not stop the
    app from starting.
    """
    if sys.platform != "win32" or _held:
        return None
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
                return namespace + MUTEX_NAME
    except (OSError, AttributeError):
        return None
    return None
