"""Write report files atomically so a failed export never destroys the previous report.

A report is first written to a temporary file in the target's own folder (same file system,
so the final rename is atomic), flushed to disk, then renamed over the target. If anything
fails, the temporary file is removed and the old report is left exactly as it was.

A process that is killed mid-write cannot remove its temporary file; the next write to the
same target removes such leftovers (`.<stem>.<8 random characters><suffix>`, exactly the
names `tempfile.mkstemp` gives here, older than `STALE_TEMP_AGE_S`), so they never pile up.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import stat
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

__all__ = [
    "STALE_TEMP_AGE_S",
    "ReportWriteError",
    "atomic_write",
    "remove_stale_temps",
    "try_lock",
    "unlock",
]

_IS_WINDOWS = sys.platform == "win32"
# Windows (antivirus, search indexer) can hold a fresh file for a moment: retry the rename.
_REPLACE_RETRIES = 5 if _IS_WINDOWS else 1
_REPLACE_RETRY_DELAY_S = 0.2
# A temporary file this old belongs to no running export (a big report takes minutes).
STALE_TEMP_AGE_S = 3600.0


class ReportWriteError(Exception):
    """A report could not be written; str() is a message fit to show the user as is."""


def _current_umask() -> int:
    # mkstemp creates files as 0600; give the report the permissions a normal file would get.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


def _reason(exc: BaseException, path: Path, stage: str) -> str:
    """Turn an OS error into the plain reason a user can act on."""
    if isinstance(exc, OSError):
        code = exc.errno
        if code == errno.EROFS:
            return "folder is read-only"
        if code == errno.ENOSPC:
            return "the disk is full"
        if code == errno.ENAMETOOLONG:
            return "the file name or path is too long"
        if isinstance(exc, FileNotFoundError) and stage == "create":
            return "the folder does not exist"
        if isinstance(exc, PermissionError) or code in (errno.EACCES, errno.EPERM):
            if stage == "replace" and path.exists():
                return "the file is open in another program (close it in Excel and try again)"
            return "folder is read-only or you do not have permission to write there"
        if exc.strerror:
            return exc.strerror[:1].lower() + exc.strerror[1:]
    text = str(exc).strip()
    return text or type(exc).__name__


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDWR | getattr(os, "O_BINARY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(folder: Path) -> None:
    """Persist the rename itself (POSIX only; best effort)."""
    if _IS_WINDOWS:
        return
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)


def _replace(src: Path, dst: Path) -> None:
    for attempt in range(_REPLACE_RETRIES):
        try:
            os.replace(src, dst)
            return
        except PermissionError:
            if attempt == _REPLACE_RETRIES - 1:
                raise
            time.sleep(_REPLACE_RETRY_DELAY_S)


def _temp_pattern(path: Path) -> re.Pattern[str]:
    """The names `atomic_write` gives the temporary files of `path` (see `tempfile.mkstemp`:
    8 characters from lower-case letters, digits and '_')."""
    return re.compile(re.escape(f".{path.stem}.") + "[a-z0-9_]{8}" + re.escape(path.suffix))


def remove_stale_temps(path: Path, max_age_s: float = STALE_TEMP_AGE_S) -> list[Path]:
    """Remove the temporary files an interrupted write of `path` left beside it (names made
    by `atomic_write`, older than `max_age_s`); returns what was removed. Best effort."""
    path = Path(path)
    pattern = _temp_pattern(path)
    now = time.time()
    removed: list[Path] = []
    try:
        names = os.listdir(path.parent)
    except OSError:
        return removed
    for name in names:
        if not pattern.fullmatch(name):
            continue
        leftover = path.parent / name
        with contextlib.suppress(OSError):
            st = leftover.lstat()
            if not stat.S_ISREG(st.st_mode) or now - st.st_mtime < max_age_s:
                continue
            leftover.unlink()
            removed.append(leftover)
    return removed


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call `write(tmp)` to produce the file at a temp path, then move it onto `path`.

    The temp file sits in the same folder with the same suffix (so writers that check the
    extension accept it). Any failure removes the temp file and raises `ReportWriteError`
    with a readable message; the previous file at `path` is untouched.
    """
    path = Path(path)
    folder = path.parent
    remove_stale_temps(path)
    stage = "create"
    tmp: Path | None = None
    try:
        fd, name = tempfile.mkstemp(dir=folder, prefix=f".{path.stem}.", suffix=path.suffix)
        os.close(fd)
        tmp = Path(name)
        stage = "write"
        write(tmp)
        stage = "flush"
        _fsync_file(tmp)
        try:
            mode = path.stat().st_mode & 0o777 if path.exists() else 0o666 & ~_UMASK
            os.chmod(tmp, mode)
        except OSError:
            pass  # permissions are a nicety; never fail a report over them
        stage = "replace"
        _replace(tmp, path)
        tmp = None
        _fsync_dir(folder)
    except BaseException as exc:
        if tmp is not None:
            with contextlib.suppress(OSError):
                tmp.unlink()
        if not isinstance(exc, Exception):
            raise  # KeyboardInterrupt / SystemExit: clean up, but do not disguise them
        if isinstance(exc, ReportWriteError):
            raise
        raise ReportWriteError(
            f"cannot write report to {path}: {_reason(exc, path, stage)}"
        ) from exc


_O_BINARY = getattr(os, "O_BINARY", 0)


def try_lock(path: Path) -> int | None:
    """An open descriptor holding an exclusive OS lock on `path` (created if missing), or
    None if another process holds it.

    The operating system drops the lock when its process ends, crash or kill included, so a
    lock never outlives its holder and needs no clean-up (sessions, and `--out` reports).
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT | _O_BINARY, 0o666)
    try:
        if _IS_WINDOWS:
            import msvcrt

            os.lseek(fd, 0, os.SEEK_SET)
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        else:
            import fcntl

            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def unlock(fd: int) -> None:
    """Release a lock from `try_lock` and close its descriptor."""
    with contextlib.suppress(OSError):
        if _IS_WINDOWS:
            import msvcrt

            os.lseek(fd, 0, os.SEEK_SET)
            msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
        else:
            import fcntl

            fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)
