"""Image intake: find cell images, read them safely, and shape them for the models.

Everything a lab can throw at the tool (empty files, half-copied JPEGs, renamed text files,
16-bit or transparent images, giant scans, non-ASCII folder names, symlink loops) must end up
either as a clean HxWx3 RGB uint8 array or as a plain-language reason, never as a crash or a
hang. The reasons are shown to lab staff as they are, so they are short and free of jargon.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import stat
import struct
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from leukgui.core.results import (
    NOT_AN_IMAGE,
    TOO_LARGE,
    UNREADABLE,
    FileError,
    FileStamp,
    InputFile,
)

__all__ = [
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_PIXELS",
    "IMAGE_SUFFIXES",
    "MIN_SIDE",
    "NOTE_ROTATED",
    "DecodedImage",
    "ImageError",
    "decode_image",
    "discover",
    "read_image",
    "read_image_size",
    "thumbnail",
    "to_model_input",
]

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".bmp", ".png", ".jpg", ".jpeg", ".tif", ".tiff")  # matched in any letter case
DEFAULT_MAX_PIXELS = 100_000_000  # refuse bigger images before decoding
MIN_SIDE = 8  # a cell image smaller than this on either side is not a cell

_Buffer = bytes | bytearray | memoryview
_PNG_SIG = b"\x89PNG\r\n\x1a\n"
DEFAULT_MAX_BYTES = 512 * 2**20  # refuse bigger files before reading them
_HEAD_BYTES = 256 * 2**10  # read first: enough for the size in any header we understand


class ImageError(Exception):
    """Carries a plain-language reason (str(exc) is shown to lab staff as-is) and the error
    kind (`leukgui.core.results.ERROR_KINDS`) that code decides on, so nobody parses reasons."""

    def __init__(self, reason: str, kind: str = UNREADABLE) -> None:
        super().__init__(reason)
        self.reason = reason
        self.kind = kind

    def __str__(self) -> str:
        return self.reason


# --------------------------------------------------------------------------------------------
# Discovery
# --------------------------------------------------------------------------------------------


def _is_image_name(name: str) -> bool:
    return name.lower().endswith(IMAGE_SUFFIXES)


def _sort_key(name: str) -> tuple:
    """Case-insensitive *natural* order ("cell2" before "cell10"), identical on every OS.

    Names are NFC-normalised first because macOS reports decomposed Unicode; the raw name is
    the final tie-break so the order is total and deterministic.
    """
    folded = unicodedata.normalize("NFC", name).casefold()
    parts = re.split(r"(\d+)", folded)
    # Even positions are text, odd positions digit runs, so tuples always compare like types.
    key = tuple(int(p) if i % 2 else p for i, p in enumerate(parts))
    return (key, name)


def _real(path: str) -> str:
    """Identity of a file or folder on disk, used to spot duplicates and symlink loops."""
    return os.path.normcase(os.path.realpath(path))


def _folder_name(path: str) -> str:
    """Display name of a folder for `sample` (the absolute path's last part)."""
    absolute = os.path.abspath(path)
    name = os.path.basename(absolute.rstrip("\\/"))
    return unicodedata.normalize("NFC", name or absolute)


def _explicit_file_sample(path: str) -> str:
    return _folder_name(os.path.dirname(os.path.abspath(path)))


def discover(
    paths: Sequence[str | os.PathLike[str]],
) -> tuple[list[InputFile], list[FileError]]:
    """Expand files and folders into the images to analyze, plus what could not be used.

    Inputs are handled in the order given. Folders are walked recursively and depth-first:
    within each folder its image files come first, then its subfolders, both in
    case-insensitive natural order (see `_sort_key`), so runs are reproducible on any OS.
    Symbolic links are followed; a link that leads back into one of its own parent folders is
    reported once as a loop and not entered, and a link to a folder already walked is skipped
    (its images are already in the list). The same real file named twice is listed once,
    under the first name it was found by.

    Inside folders, files without an image suffix are ignored silently (Thumbs.db, notes),
    as are hidden entries (names starting with "."), e.g. macOS "._cell.bmp" resource forks
    and viewer thumbnail caches. A file named explicitly is never ignored: an unsupported
    type gets a FileError. A pipe, socket or device with an image name gets one FileError
    saying what it is; it is never opened (reading a pipe would block the run).

    `sample` is the file's folder relative to the input root, prefixed with the root's own
    name, POSIX-style: root ".../patient7" gives "patient7" and "patient7/slide2". An
    explicitly named file gets its parent folder's name.
    """
    files: list[InputFile] = []
    errors: list[FileError] = []
    seen_files: set[str] = set()
    seen_dirs: set[str] = set()

    def add_file(path: Path, sample: str) -> None:
        real = _real(str(path))
        if real in seen_files:
            log.debug("duplicate input %s skipped", path)
            return
        seen_files.add(real)
        files.append(InputFile(path=path, sample=sample))

    for given in paths:
        text = os.fspath(given)
        path = Path(text)
        if os.path.isdir(text):
            _walk(text, errors, seen_dirs, add_file)
        elif os.path.isfile(text):
            sample = _explicit_file_sample(text)
            if _is_image_name(path.name):
                add_file(path, sample)
            else:
                suffix = path.suffix.lower()
                what = f"({suffix})" if suffix else "(no file extension)"
                errors.append(
                    FileError(path, sample, f"not a supported image type {what}", NOT_AN_IMAGE)
                )
        elif os.path.lexists(text) and not os.path.islink(text):
            errors.append(_special_file_error(text, _explicit_file_sample(text)))
        else:  # missing, or a symbolic link whose target is missing
            reason = "no such file or folder"
            errors.append(FileError(path, _explicit_file_sample(text), reason, UNREADABLE))
    return files, errors


def _special_file_error(path: str, sample: str) -> FileError:
    """The error row of a pipe, socket or device: named by what it is, and never opened."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        mode = 0
    return FileError(Path(path), sample, _not_regular_reason(mode), NOT_AN_IMAGE)


def _walk(
    root: str,
    errors: list[FileError],
    seen_dirs: set[str],
    add_file: Callable[[Path, str], None],
) -> None:
    """Depth-first walk of one input folder (iterative, so deep trees cannot overflow)."""
    root_name = _folder_name(root)
    root_real = _real(root)
    if root_real in seen_dirs:
        log.debug("folder %s already walked, skipped", root)
        return
    seen_dirs.add(root_real)
    # Stack items: (folder path, sample name, real paths of this folder and its ancestors).
    stack: list[tuple[str, str, frozenset[str]]] = [(root, root_name, frozenset({root_real}))]
    while stack:
        folder, sample, ancestors = stack.pop()
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: _sort_key(e.name))
        except PermissionError:
            reason = "folder cannot be read (permission denied)"
            errors.append(FileError(Path(folder), sample, reason, UNREADABLE))
            continue
        except OSError as exc:
            reason = f"folder cannot be read ({exc.strerror or exc})"
            errors.append(FileError(Path(folder), sample, reason, UNREADABLE))
            continue

        subfolders: list[tuple[str, str, frozenset[str]]] = []
        for entry in entries:
            if entry.name.startswith("."):
                continue
            try:
                is_dir = entry.is_dir()  # follows symbolic links
                is_file = not is_dir and entry.is_file()
            except OSError as exc:
                log.warning("cannot inspect %s: %s", entry.path, exc)
                continue
            if is_dir:
                real = _real(entry.path)
                child_sample = unicodedata.normalize("NFC", f"{sample}/{entry.name}")
                if real in ancestors:
                    reason = "folder loop via symbolic link, skipped"
                    errors.append(FileError(Path(entry.path), child_sample, reason, UNREADABLE))
                elif real in seen_dirs:
                    log.debug("folder %s already walked via another link, skipped", entry.path)
                else:
                    seen_dirs.add(real)
                    subfolders.append((entry.path, child_sample, ancestors | {real}))
            elif _is_image_name(entry.name):
                if is_file:
                    add_file(Path(entry.path), sample)
                elif entry.is_symlink() and not os.path.exists(entry.path):
                    reason = "broken symbolic link"
                    errors.append(FileError(Path(entry.path), sample, reason, UNREADABLE))
                else:  # a pipe, socket or device with an image name: never opened (could hang)
                    errors.append(_special_file_error(entry.path, sample))
        stack.extend(reversed(subfolders))


# --------------------------------------------------------------------------------------------
# Header parsing
# --------------------------------------------------------------------------------------------


def _sniff(data: _Buffer) -> str | None:
    """The container format from its magic bytes, or None."""
    head = bytes(data[:8])
    if head.startswith(_PNG_SIG):
        return "PNG"
    if head.startswith(b"\xff\xd8"):
        return "JPEG"
    if head.startswith(b"BM"):
        return "BMP"
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "TIFF"
    return None


def read_image_size(data: _Buffer) -> tuple[int, int] | None:
    """(width, height) from the header alone, so giant images are refused before decoding.

    Understands PNG, JPEG, BMP and TIFF/BigTIFF (first page); None when the format is unknown
    or the header is damaged.
    """
    try:
        kind = _sniff(data)
        if kind == "PNG":
            size = _png_size(data)
        elif kind == "JPEG":
            size = _jpeg_size(data)
        elif kind == "BMP":
            size = _bmp_size(data)
        elif kind == "TIFF":
            size = _tiff_size(data)
        else:
            return None
    except (struct.error, IndexError, ValueError):
        return None
    if size is None or size[0] <= 0 or size[1] <= 0:
        return None
    return size


def _png_size(data: _Buffer) -> tuple[int, int] | None:
    if bytes(data[12:16]) != b"IHDR":
        return None
    return struct.unpack_from(">II", data, 16)


# SOFn markers carry the frame size; C4 (DHT), C8 (JPG) and CC (DAC) do not.
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def _jpeg_size(data: _Buffer) -> tuple[int, int] | None:
    pos, end = 2, len(data)
    while pos < end:
        if data[pos] != 0xFF:
            return None
        while pos < end and data[pos] == 0xFF:  # fill bytes
            pos += 1
        if pos >= end:
            return None
        marker = data[pos]
        pos += 1
        if marker in (0x01, 0xD8) or 0xD0 <= marker <= 0xD7:  # no length field
            continue
        if marker in (0xD9, 0xDA):  # end of image / start of scan before any frame header
            return None
        (length,) = struct.unpack_from(">H", data, pos)
        if marker in _JPEG_SOF:
            height, width = struct.unpack_from(">HH", data, pos + 3)
            return width, height
        pos += length
    return None


def _bmp_size(data: _Buffer) -> tuple[int, int] | None:
    (header_size,) = struct.unpack_from("<I", data, 14)
    if header_size == 12:  # BITMAPCOREHEADER: unsigned 16-bit sizes
        return struct.unpack_from("<HH", data, 18)
    if header_size < 16:
        return None
    width, height = struct.unpack_from("<ii", data, 18)
    return width, abs(height)  # negative height = rows stored top-down


_TIFF_WIDTH, _TIFF_LENGTH = 256, 257


def _tiff_size(data: _Buffer) -> tuple[int, int] | None:
    bo = "<" if bytes(data[:2]) == b"II" else ">"
    (version,) = struct.unpack_from(bo + "H", data, 2)
    if version == 42:
        (ifd,) = struct.unpack_from(bo + "I", data, 4)
        (count,) = struct.unpack_from(bo + "H", data, ifd)
        first, step, value_at = ifd + 2, 12, 8
        formats = {3: "H", 4: "I"}
    elif version == 43:  # BigTIFF
        (ifd,) = struct.unpack_from(bo + "Q", data, 8)
        (count,) = struct.unpack_from(bo + "Q", data, ifd)
        first, step, value_at = ifd + 8, 20, 12
        formats = {3: "H", 4: "I", 16: "Q"}
    else:
        return None
    found: dict[int, int] = {}
    for i in range(min(count, 4096)):
        entry = first + i * step
        tag, typ = struct.unpack_from(bo + "HH", data, entry)
        if tag in (_TIFF_WIDTH, _TIFF_LENGTH) and typ in formats:
            (found[tag],) = struct.unpack_from(bo + formats[typ], data, entry + value_at)
            if len(found) == 2:
                return found[_TIFF_WIDTH], found[_TIFF_LENGTH]
    return None


def _bmp_truncated(data: _Buffer) -> bool:
    """True when the file ends before the pixel data its header promises."""
    try:
        (offset,) = struct.unpack_from("<I", data, 10)
        (header_size,) = struct.unpack_from("<I", data, 14)
        if header_size == 12:
            width, height, _, bpp = struct.unpack_from("<HHHH", data, 18)
            compression, declared = 0, 0
        else:
            width, height, _, bpp, compression, declared = struct.unpack_from("<iiHHII", data, 18)
    except struct.error:
        return True  # not even a whole header
    if compression in (0, 3, 6):  # uncompressed (BI_RGB, BI_BITFIELDS, BI_ALPHABITFIELDS)
        stride = (abs(width) * bpp + 31) // 32 * 4
        needed = stride * abs(height)
    else:  # RLE / embedded JPEG or PNG: only the header's own figure is known
        needed = declared
    return len(data) < offset + needed


# Structure walks: whether a JPEG or PNG is complete, where it ends, and what its header says.
# OpenCV silently decodes half a JPEG as grey, so completeness is decided here, by following
# the format's own markers or chunks to the end marker; bytes after it are not the image's and
# are ignored (cameras and editors append metadata there).
_COMPLETE, _TRUNCATED, _INVALID = "complete", "truncated", "invalid"
# A marker that can end entropy-coded data: 0xFF then neither a stuffed 0x00, a restart marker
# RST0..7 (part of the scan) nor another 0xFF (fill byte: the marker follows it).
_JPEG_SCAN_END = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")


@dataclass
class _Layout:
    """What a structure walk found: `status`, the offset just past the end marker (`end`),
    an EXIF block (TIFF-structured bytes), the animation frame count and whether bytes that
    belong to no marker had to be skipped."""

    status: str
    end: int
    exif: bytes | None = None
    frames: int = 1
    skipped: bool = False


def _jpeg_layout(data: _Buffer) -> _Layout:
    """Follow the JPEG's markers from SOI to EOI.

    Segments are skipped by their length field and entropy-coded data by searching for the
    next marker, so a file is truncated exactly when the data runs out before EOI. Bytes
    where a marker should start are skipped up to the next marker, as libjpeg does (it warns
    and decodes); a length field below 2 or a second SOI is invalid.
    """
    end = len(data)
    out = _Layout(_TRUNCATED, end)
    pos = 2
    while True:
        if pos >= end:
            return out
        if data[pos] != 0xFF:
            found = _JPEG_SCAN_END.search(data, pos)
            if found is None:
                return out
            out.skipped = True
            pos = found.start()
        while pos < end and data[pos] == 0xFF:  # fill bytes
            pos += 1
        if pos >= end:
            return out
        marker = data[pos]
        pos += 1
        if marker == 0xD9:  # EOI
            out.status, out.end = _COMPLETE, pos
            return out
        if marker in (0x00, 0xD8):  # stuffed zero outside a scan, or a second SOI
            out.status, out.end = _INVALID, pos
            return out
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # no length field
            continue
        if pos + 2 > end:
            return out
        length = (data[pos] << 8) | data[pos + 1]
        if length < 2:
            out.status, out.end = _INVALID, pos
            return out
        if pos + length > end:
            return out
        if marker == 0xE1 and out.exif is None and bytes(data[pos + 2 : pos + 8]) == b"Exif\0\0":
            out.exif = bytes(data[pos + 8 : pos + length])
        pos += length
        if marker == 0xDA:  # start of scan: entropy-coded data up to the next marker
            found = _JPEG_SCAN_END.search(data, pos)
            if found is None:
                return out
            pos = found.start()


def _png_layout(data: _Buffer) -> _Layout:
    """Follow the PNG's chunks from the signature to IEND (a chunk cut short = truncated)."""
    end = len(data)
    out = _Layout(_TRUNCATED, end)
    pos = len(_PNG_SIG)
    while pos + 8 <= end:
        (length,) = struct.unpack_from(">I", data, pos)
        ctype = bytes(data[pos + 4 : pos + 8])
        if not ctype.isalpha():
            out.status, out.end = _INVALID, pos
            return out
        body, chunk_end = pos + 8, pos + 12 + length
        if chunk_end > end:
            return out
        if ctype == b"IEND":
            out.status, out.end = _COMPLETE, chunk_end
            return out
        if ctype == b"eXIf" and out.exif is None:
            out.exif = bytes(data[body : body + length])
        elif ctype == b"acTL" and length >= 4:  # animated PNG: number of frames
            (out.frames,) = struct.unpack_from(">I", data, body)
        pos = chunk_end
    return out


_TIFF_ORIENTATION = 274


def _exif_orientation(tiff: _Buffer) -> int:
    """The EXIF/TIFF orientation (1..8) from the first IFD of TIFF-structured bytes; 1 when
    absent or unreadable."""
    try:
        bo = {b"II": "<", b"MM": ">"}[bytes(tiff[:2])]
        (version,) = struct.unpack_from(bo + "H", tiff, 2)
        if version == 43:  # BigTIFF
            (ifd,) = struct.unpack_from(bo + "Q", tiff, 8)
            (count,) = struct.unpack_from(bo + "Q", tiff, ifd)
            first, step, value_at = ifd + 8, 20, 12
        else:
            (ifd,) = struct.unpack_from(bo + "I", tiff, 4)
            (count,) = struct.unpack_from(bo + "H", tiff, ifd)
            first, step, value_at = ifd + 2, 12, 8
        for i in range(min(count, 4096)):
            entry = first + i * step
            tag, typ = struct.unpack_from(bo + "HH", tiff, entry)
            if tag == _TIFF_ORIENTATION and typ == 3:  # SHORT
                (value,) = struct.unpack_from(bo + "H", tiff, entry + value_at)
                return value if 1 <= value <= 8 else 1
    except (KeyError, struct.error, IndexError):
        pass
    return 1


def _tiff_pages(data: _Buffer, limit: int = 10_000) -> int:
    """How many pages (IFDs) a TIFF chains together; stops at a loop or damaged link."""
    try:
        bo = "<" if bytes(data[:2]) == b"II" else ">"
        (version,) = struct.unpack_from(bo + "H", data, 2)
        if version == 43:
            off, count_fmt, step, head, link_fmt = 8, "Q", 20, 8, "Q"
        else:
            off, count_fmt, step, head, link_fmt = 4, "H", 12, 2, "I"
        (ifd,) = struct.unpack_from(bo + link_fmt, data, off)
    except struct.error:
        return 1
    pages, seen = 0, set()
    while ifd and ifd not in seen and pages < limit:
        seen.add(ifd)
        try:
            (count,) = struct.unpack_from(bo + count_fmt, data, ifd)
            (ifd,) = struct.unpack_from(bo + link_fmt, data, ifd + head + count * step)
        except struct.error:
            return pages + 1
        pages += 1
    return max(pages, 1)


def _apply_orientation(img: np.ndarray, orientation: int) -> np.ndarray:
    """Turn/flip pixels stored as EXIF `orientation` says, exactly as OpenCV's own
    ApplyExifOrientation does (so IMREAD_COLOR of the same file gives the same array)."""
    if orientation == 2:
        return img[:, ::-1]
    if orientation == 3:
        return img[::-1, ::-1]
    if orientation == 4:
        return img[::-1]
    if 5 <= orientation <= 8:
        img = np.swapaxes(img, 0, 1)
        if orientation == 6:
            return img[:, ::-1]
        if orientation == 7:
            return img[::-1, ::-1]
        if orientation == 8:
            return img[::-1]
    return img


# --------------------------------------------------------------------------------------------
# Decoding
# --------------------------------------------------------------------------------------------


NOTE_ROTATED = "turned upright as the file's orientation tag asks"


@dataclass(frozen=True)
class DecodedImage:
    """An image read for analysis: `rgb` (HxWx3 uint8) and plain-language `notes` about what
    was done to read it (orientation applied, first page of several used, bytes ignored).
    Notes are no errors: the image is fine to analyze; they belong next to its results."""

    rgb: np.ndarray
    notes: tuple[str, ...] = ()
    stamp: FileStamp | None = None  # size, time and SHA-256 of the very bytes decoded


def _size_text(n: int) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            value = n / scale
            return f"{value:.0f} {unit}" if value == int(value) else f"{value:.1f} {unit}"
    return f"{n} B"


def _not_regular_reason(mode: int) -> str:
    """Why a path that is no regular file is not read (it is never opened: it could block)."""
    if stat.S_ISDIR(mode):
        return "a folder, not an image file"
    if stat.S_ISFIFO(mode):
        what = "a pipe"
    elif stat.S_ISSOCK(mode):
        what = "a socket"
    elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        what = "a device"
    else:
        what = "a special file"
    return f"not a regular file ({what}), skipped"


def _read_file(
    path: str | os.PathLike[str], max_pixels: int, max_bytes: int
) -> tuple[np.ndarray, FileStamp]:
    """The file's bytes and their stamp, after checking from its header alone that it may be
    read at all (hashed here, from memory, so a run reads each file once).

    Only a regular file is opened (a FIFO or device could block or never end), and it is
    opened non-blocking so one swapped in meanwhile cannot hang either. The first
    `_HEAD_BYTES` are read first: a header claiming more than `max_pixels` or a file over
    `max_bytes` is refused before the rest is read, so neither costs memory.
    """
    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode):
            raise ImageError(_not_regular_reason(st.st_mode), NOT_AN_IMAGE)
        flags = os.O_RDONLY | getattr(os, "O_BINARY", 0) | getattr(os, "O_NONBLOCK", 0)
        fd = os.open(path, flags)
        with os.fdopen(fd, "rb", buffering=0) as f:
            st = os.fstat(f.fileno())
            if not stat.S_ISREG(st.st_mode):
                raise ImageError(_not_regular_reason(st.st_mode), NOT_AN_IMAGE)
            head = f.read(_HEAD_BYTES) or b""
            if not head:
                raise ImageError("empty file", UNREADABLE)
            size = read_image_size(head)
            if size is not None and size[0] * size[1] > max_pixels:
                raise ImageError(f"too large: {size[0]} x {size[1]} px", TOO_LARGE)
            total = max(st.st_size, len(head))
            if total > max_bytes:
                raise ImageError(
                    f"too large: {_size_text(total)} file (limit {_size_text(max_bytes)})",
                    TOO_LARGE,
                )
            data = np.empty(total, np.uint8)
            data[: len(head)] = np.frombuffer(head, np.uint8)
            filled = len(head)
            view = memoryview(data)
            while filled < total:  # the file may shrink while being read: keep what came
                got = f.readinto(view[filled:])
                if not got:
                    break
                filled += got
            data = data[:filled]
            digest = hashlib.sha256(memoryview(data)).hexdigest()
            return data, FileStamp(int(st.st_size), int(st.st_mtime_ns), digest)
    except PermissionError as exc:
        raise ImageError("cannot be read (permission denied)", UNREADABLE) from exc
    except OSError as exc:
        raise ImageError(f"cannot be read ({exc.strerror or exc})", UNREADABLE) from exc


def decode_image(
    path: str | os.PathLike[str],
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> np.ndarray:
    """Read one image file as HxWx3 RGB uint8, or raise ImageError with a plain reason.

    `read_image` without its notes; see there.
    """
    return read_image(path, max_pixels=max_pixels, max_bytes=max_bytes).rgb


def read_image(
    path: str | os.PathLike[str],
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> DecodedImage:
    """Read one image file as HxWx3 RGB uint8 plus notes, or raise ImageError.

    The bytes are read with plain file I/O and decoded in memory (never `cv2.imread`, which
    fails on non-ASCII Windows paths). The header is checked before the file is read whole,
    so a tiny or sparse file that claims a gigantic image cannot exhaust memory, and files
    over `max_bytes` are refused unread. Truncated JPEGs and PNGs (no end marker) and BMPs
    (fewer pixel bytes than the header promises) are caught explicitly because OpenCV
    silently decodes half an image as grey/black; data after the end marker is ignored.
    An EXIF orientation is applied, as every viewer does, and a multi-page TIFF or animated
    PNG gives its first frame; both are said in the notes.
    """
    data, stamp = _read_file(path, max_pixels, max_bytes)
    view = memoryview(data)
    kind = _sniff(view)
    notes: list[str] = []
    orientation = 1
    layout = None
    if kind == "JPEG":
        layout = _jpeg_layout(view)
    elif kind == "PNG":
        layout = _png_layout(view)
    elif kind == "BMP" and _bmp_truncated(view):
        raise ImageError("truncated BMP", UNREADABLE)
    elif kind == "TIFF":
        pages = _tiff_pages(view)
        if pages > 1:
            notes.append(f"first of {pages} pages used")
        if _exif_orientation(view) != 1:  # OpenCV's TIFF reader applies it itself
            notes.append(NOTE_ROTATED)
    if layout is not None:
        if layout.status == _TRUNCATED:
            raise ImageError(f"truncated {kind}", UNREADABLE)
        if layout.status == _COMPLETE and layout.end < len(data):
            extra = len(data) - layout.end
            notes.append(f"{_size_text(extra)} after the end of the image ignored")
            data = data[: layout.end]
        if layout.skipped:
            notes.append("damaged bytes between JPEG markers skipped")
        if layout.frames > 1:
            notes.append(f"animated: first of {layout.frames} frames used")
        if layout.exif is not None:
            orientation = _exif_orientation(layout.exif)

    try:
        img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)  # never applies EXIF orientation
    except cv2.error:
        img = None
    if img is None or img.size == 0:
        if kind is None:
            raise ImageError("not an image", NOT_AN_IMAGE)
        if kind == "JPEG":
            raise ImageError("not a valid JPEG", UNREADABLE)
        raise ImageError(f"damaged or unsupported {kind} file", UNREADABLE)

    height, width = img.shape[:2]
    if width * height > max_pixels:  # header was not understood; still enforce the limit
        raise ImageError(f"too large: {width} x {height} px", TOO_LARGE)
    if orientation != 1:
        img = _apply_orientation(img, orientation)
        height, width = img.shape[:2]
        notes.append(NOTE_ROTATED)
    if width < MIN_SIDE or height < MIN_SIDE:
        # Decodable, but too few pixels to hold a cell: no image this tool can analyze.
        raise ImageError(f"too small: {width} x {height} px", NOT_AN_IMAGE)
    try:
        return DecodedImage(_to_rgb8(np.ascontiguousarray(img)), tuple(notes), stamp)
    except ValueError as exc:
        raise ImageError(f"unsupported image layout ({exc})", NOT_AN_IMAGE) from exc


def _to_uint8(img: np.ndarray) -> np.ndarray:
    """Any sample depth to 0..255 uint8 (16-bit: divide by 257 and round)."""
    if img.dtype == np.uint8:
        return img
    if img.dtype == np.uint16:
        return ((img.astype(np.uint32) + 128) // 257).astype(np.uint8)
    if np.issubdtype(img.dtype, np.floating):
        f = np.nan_to_num(img.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
        if f.max(initial=0.0) <= 1.0:
            f = f * 255.0
        return np.rint(np.clip(f, 0.0, 255.0)).astype(np.uint8)
    if np.issubdtype(img.dtype, np.integer):  # int8/int16/uint32...: scale the positive range
        top = float(np.iinfo(img.dtype).max)
        f = np.clip(img.astype(np.float64), 0.0, top) * (255.0 / top)
        return np.rint(f).astype(np.uint8)
    raise ValueError(f"sample type {img.dtype}")


def _to_rgb8(img: np.ndarray) -> np.ndarray:
    """OpenCV's BGR/BGRA/gray output of any depth to contiguous RGB uint8.

    Transparency is composited over black, because C-NMC cells are segmented onto black.
    """
    img = _to_uint8(img)
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if img.ndim == 2:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2RGB)
    if img.ndim != 3:
        raise ValueError(f"{img.ndim} dimensions")
    channels = img.shape[2]
    if channels == 2:  # gray + alpha
        gray = _over_black(img[:, :, :1], img[:, :, 1:2])[:, :, 0]
        return cv2.cvtColor(np.ascontiguousarray(gray), cv2.COLOR_GRAY2RGB)
    if channels == 3:
        return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    if channels == 4:
        rgb = _over_black(img[:, :, 2::-1], img[:, :, 3:4])
        return np.ascontiguousarray(rgb)
    raise ValueError(f"{channels} channels")


def _over_black(color: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """color * alpha / 255, rounded, in integers (uint8 in, uint8 out)."""
    mixed = color.astype(np.uint16) * alpha.astype(np.uint16) + 127
    return (mixed // 255).astype(np.uint8)


# --------------------------------------------------------------------------------------------
# Shaping for models and display
# --------------------------------------------------------------------------------------------


_LINEAR_MAX_REDUCTION = 2.25


def _square(rgb: np.ndarray, size: int) -> np.ndarray:
    """Pad to a centred square with black, then resize to size x size (uint8 throughout)."""
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"expected HxWx3 uint8, got {rgb.shape} {rgb.dtype}")
    if size < 1:
        raise ValueError(f"size must be positive, got {size}")
    height, width = rgb.shape[:2]
    side = max(height, width)
    if height != width:
        top, left = (side - height) // 2, (side - width) // 2
        rgb = cv2.copyMakeBorder(
            rgb,
            top,
            side - height - top,
            left,
            side - width - left,
            cv2.BORDER_CONSTANT,
            value=(0, 0, 0),
        )
    if side != size:
        # Up to ~2x smaller, bilinear samples between neighbouring pixels and so averages them
        # like INTER_AREA (C-NMC's 450 -> 224: mean difference 0.2 grey levels) at a tenth of
        # the cost, which matters on the hot path; stronger reductions need INTER_AREA's box
        # filter against aliasing.
        interpolation = cv2.INTER_AREA if side > _LINEAR_MAX_REDUCTION * size else cv2.INTER_LINEAR
        rgb = cv2.resize(rgb, (size, size), interpolation=interpolation)
    return rgb


def to_model_input(rgb: np.ndarray, size: int) -> np.ndarray:
    """size x size x 3 float32 of raw 0..255 values; padding keeps the cell's aspect ratio.

    Each model applies its own preprocessing, so no scaling happens here. Resizing is done in
    uint8 with a single conversion at the end because this runs for every image.
    """
    return _square(rgb, size).astype(np.float32)


def thumbnail(rgb: np.ndarray, size: int) -> np.ndarray:
    """The same padded square as the model sees, as uint8 for display and reports."""
    out = _square(rgb, size)
    return out.copy() if out is rgb else out
