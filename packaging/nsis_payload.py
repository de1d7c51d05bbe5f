"""Will NSIS be able to pack this folder? Checked before makensis, which fails late and obscurely.

makensis keeps sizes in signed 32-bit integers: one file cannot exceed 2 GiB, and the
installer's data (the compressed payload) cannot either. A *solid* block also holds the
whole uncompressed payload in one buffer, which is why the installer script compresses file
by file (``SetCompressor lzma`` without /SOLID): with runtimes and ImageNet weights the frozen
folder passes 2 GB uncompressed, and a solid build then stops with "Internal compiler error
#12345: error mmapping file ... is out of range".

The compressed size is estimated from samples of every file compressed with zlib at level 1,
which compresses worse than NSIS's LZMA, so the estimate errs high. The check fails when the
estimate comes within `MARGIN` of the limit, so there is time to act (leave the ImageNet
weights out of the installer and ship them as a file beside it; see the README) before a
release build breaks.

    python packaging/nsis_payload.py dist/LeukGUI
    python packaging/nsis_payload.py dist/LeukGUI --installer LeukGUI-0.1.0-setup.exe

No imports from leukgui and none outside the standard library.
"""

from __future__ import annotations

import argparse
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path

LIMIT = 2**31 - 1  # makensis's signed 32-bit sizes
MARGIN = 0.90  # fail when the estimate passes 90 % of the limit
SAMPLE = 64 * 1024  # bytes compressed per sample
STRIDE = 1024 * 1024  # one sample per MiB of each file


@dataclass(frozen=True)
class Payload:
    files: int
    total: int  # bytes, uncompressed
    largest: tuple[int, str]  # bytes, path
    estimate: int  # bytes, compressed (errs high)


def estimate_compressed(path: Path, size: int) -> int:
    """Compressed size of one file, from SAMPLE-byte samples every STRIDE bytes."""
    if size <= 2 * SAMPLE:
        data = path.read_bytes()
        return len(zlib.compress(data, 1)) if data else 0
    raw = packed = 0
    with path.open("rb") as handle:
        for offset in range(0, size, STRIDE):
            handle.seek(offset)
            chunk = handle.read(SAMPLE)
            raw += len(chunk)
            packed += len(zlib.compress(chunk, 1))
    return int(size * packed / max(raw, 1))


def measure(folder: Path) -> Payload:
    """Sizes of every file under `folder` and the estimated compressed total."""
    total = estimate = count = 0
    largest = (0, "")
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        size = path.stat().st_size
        count += 1
        total += size
        largest = max(largest, (size, path.relative_to(folder).as_posix()))
        estimate += estimate_compressed(path, size)
    return Payload(count, total, largest, estimate)


def problems(payload: Payload, limit: int = LIMIT, margin: float = MARGIN) -> list[str]:
    """Plain-language reasons makensis would fail (or nearly): empty when it is safe."""
    found = []
    size, name = payload.largest
    if size > limit:
        found.append(f"{name} is {size:,} bytes: NSIS cannot pack a file over {limit:,} bytes")
    if payload.estimate > limit * margin:
        found.append(
            f"the compressed installer would be about {payload.estimate:,} bytes, past "
            f"{margin:.0%} of NSIS's limit of {limit:,}: leave the ImageNet weights out "
            "(LEUKGUI_BUNDLE_WEIGHTS) and ship them beside the installer, or shrink the folder"
        )
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path, help="the frozen folder (dist/LeukGUI)")
    parser.add_argument("--installer", type=Path, help="also check a built installer's size")
    parser.add_argument("--limit", type=int, default=LIMIT, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if not args.folder.is_dir():
        parser.error(f"{args.folder} is not a folder")
    payload = measure(args.folder)
    print(
        f"NSIS payload: {payload.files:,} files, {payload.total:,} bytes; largest "
        f"{payload.largest[0]:,} ({payload.largest[1]}); compressed about "
        f"{payload.estimate:,} bytes (limit {args.limit:,})"
    )
    found = problems(payload, args.limit)
    if args.installer is not None:
        built = args.installer.stat().st_size
        print(f"installer: {built:,} bytes")
        if built > args.limit * MARGIN:
            found.append(f"the installer is {built:,} bytes, past {MARGIN:.0%} of {args.limit:,}")
    for problem in found:
        print(f"FAILED: {problem}", file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
