"""Text from the file system and from users, made safe to show and to write anywhere.

A file name is bytes on Linux and macOS (and UTF-16 that may hold lone surrogates on
Windows), not necessarily valid text: a name written by an old Windows or a USB stick in
Latin-1 (b"Patient_M\\xfcller.bmp") reaches Python as a str with a *surrogate escape*
("Patient_M\\udcfcller.bmp", see `os.fsdecode`). Such a str cannot be encoded as UTF-8, and
control characters (a bell, a NUL) cannot be stored in Excel's XML at all. So there are two
forms of every path:

* `display_text` / `display_path`: what a person reads and every report holds. Undecodable
  bytes and lone surrogates become U+FFFD (the replacement character), characters XML cannot
  hold become U+FFFD too; it always encodes as UTF-8 and is valid in an xlsx cell.
* `exact_path`: the path exactly as the file system holds it, as plain text: the UTF-8 text of
  the name, with '%', every undecodable byte and every control character written as %XX
  (the byte in hex), like a URL. `path_from_exact` gives the original path back
  (`os.fsdecode(urllib.parse.unquote_to_bytes(text))`), so a report row can always find its
  file again. For an ordinary name the two forms are identical except for a literal '%'.

The `Path` objects kept in memory and in review sessions are never changed: only what is
written or shown goes through these functions.
"""

from __future__ import annotations

import os
import re
import urllib.parse

__all__ = [
    "REPLACEMENT",
    "display_path",
    "display_text",
    "exact_path",
    "is_exact_text",
    "path_from_exact",
]

REPLACEMENT = "\ufffd"

# Lone surrogates (surrogate escapes of undecodable bytes) and the characters XML 1.0 cannot
# hold: C0 controls other than tab, line feed and carriage return, and U+FFFE / U+FFFF.
_XML_ILLEGAL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
# In a name every control character (tab and line breaks, DEL and C1 too) is shown as U+FFFD:
# a file name that breaks a table row or a CSV line misleads the reader.
_NAME_ILLEGAL = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff\ufffe\uffff]")
# What `exact_path` escapes: '%' itself, control characters and lone surrogates.
_EXACT_ESCAPE = re.compile("[%\x00-\x1f\x7f-\x9f\ud800-\udfff]")


def _as_str(value: object) -> str:
    if isinstance(value, (bytes, os.PathLike)):
        return os.fsdecode(value)
    return str(value)


def _join_pairs(text: str) -> str:
    """A surrogate *pair* (two lone surrogates that together are one character, e.g. from a
    Windows name read as UTF-16) becomes that character; lone surrogates stay as they are."""
    if not any("\ud800" <= ch <= "\udfff" for ch in text):
        return text
    return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "surrogatepass")


def display_text(value: object) -> str:
    """`value` (any text, path or bytes) as text that every file format can hold: lone
    surrogates and XML-illegal control characters become U+FFFD; tab and line breaks stay."""
    return _XML_ILLEGAL.sub(REPLACEMENT, _join_pairs(_as_str(value)))


def display_path(value: object) -> str:
    """A path or file name as a person should read it: like `display_text`, and every control
    character (tab and line breaks included) shown as U+FFFD."""
    return _NAME_ILLEGAL.sub(REPLACEMENT, _join_pairs(_as_str(value)))


def exact_path(value: object) -> str:
    """The path exactly as the file system holds it, as printable text (see the module notes):
    '%', control characters and undecodable bytes as %XX; `path_from_exact` reverses it."""
    raw = os.fsencode(_as_str(value))
    text = raw.decode("utf-8", "surrogateescape")

    def escape(match: re.Match[str]) -> str:
        return "".join(f"%{b:02X}" for b in match.group().encode("utf-8", "surrogateescape"))

    return _EXACT_ESCAPE.sub(escape, text)


def path_from_exact(text: str) -> str:
    """The path an `exact_path` text stands for, as Python's file functions take it."""
    return os.fsdecode(urllib.parse.unquote_to_bytes(text))


def is_exact_text(value: object) -> bool:
    """Whether `value` shows exactly as it is (nothing in it would be replaced for display)."""
    text = _as_str(value)
    return display_path(text) == text
