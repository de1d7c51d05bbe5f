"""How big is the frozen folder, and how much slower does it start than the source install?

    bash packaging/build.sh                    # builds dist/LeukGUI first
    python benchmarks/bench_frozen.py          # figures for dist/LeukGUI
    python benchmarks/bench_frozen.py --dist path/to/LeukGUI --repeat 5

1. Size: total, file count, and the ten largest parts of the folder (a package folder or a
   top-level file in _internal counts as one part).
2. Cold start, frozen `leukgui-cli` against this Python's source install, each the best of
   several fresh processes in this same run (so the ratio survives a noisy machine):
   - `--version`: process start, imports and argument parsing;
   - window shown: `--self-test` up to its "window shown" line;
   - whole self-test: TensorFlow import, 12 sample cells analyzed, report exported.
Runs offscreen (QT_QPA_PLATFORM=offscreen), with a throwaway user folder for every process.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def folder_size(path: Path) -> tuple[int, int]:
    files = [p for p in path.rglob("*") if p.is_file() and not p.is_symlink()]
    return sum(p.stat().st_size for p in files), len(files)


def largest_parts(dist: Path, n: int = 10) -> list[tuple[str, int]]:
    parts: list[tuple[str, int]] = []
    for top in (dist, dist / "_internal"):
        for entry in top.iterdir():
            if entry.name == "_internal" or entry.is_symlink():
                continue
            size = folder_size(entry)[0] if entry.is_dir() else entry.stat().st_size
            parts.append((str(entry.relative_to(dist)), size))
    return sorted(parts, key=lambda item: -item[1])[:n]


def timed(command: list[str], until: str | None) -> float:
    """Seconds from process start to a line containing `until` (or to exit when None)."""
    with tempfile.TemporaryDirectory(prefix="leukgui-bench-") as user:
        env = dict(os.environ, LEUKGUI_USER_DIR=user, QT_QPA_PLATFORM="offscreen")
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        start = time.perf_counter()
        proc = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=env,
            cwd=user,
        )
        assert proc.stdout is not None
        seen = until is None
        for line in proc.stdout:
            if until is not None and until in line:
                seen = True
                break
        elapsed = time.perf_counter() - start
        if until is not None:
            proc.kill()
        code = proc.wait()
        if not seen or (until is None and code != 0):
            raise RuntimeError(f"{command} did not reach {until or 'a clean exit'} (exit {code})")
        return elapsed


def best(command: list[str], until: str | None, repeat: int) -> float:
    return min(timed(command, until) for _ in range(repeat))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dist", type=Path, default=REPO / "dist" / "LeukGUI")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    dist: Path = args.dist
    cli = dist / ("leukgui-cli.exe" if sys.platform == "win32" else "leukgui-cli")
    if not cli.is_file():
        print(f"no frozen build at {dist}: run packaging/build.sh first", file=sys.stderr)
        return 2

    size, count = folder_size(dist)
    print(f"folder {dist}: {size / 2**20:,.0f} MiB in {count:,} files")
    print("ten largest parts:")
    for name, part in largest_parts(dist):
        print(f"  {part / 2**20:8,.1f} MiB  {name}")

    source = [sys.executable, "-m", "leukgui"]
    print(f"\ncold start, best of {args.repeat} fresh processes (frozen vs source install):")
    for label, extra, until in (
        ("--version", ["--version"], None),
        ("window shown", ["--self-test"], "window shown"),
        ("whole self-test", ["--self-test"], None),
    ):
        frozen = best([str(cli), *extra], until, args.repeat)
        plain = best([*source, *extra], until, args.repeat)
        print(
            f"  {label:16s} frozen {frozen:6.2f} s  source {plain:6.2f} s  "
            f"ratio {frozen / plain:4.2f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
