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
3. Each inference runtime by name, frozen `leukgui-cli analyze resources/samples --runtime X`
   against the source install's, best of several fresh processes: whole process time (runtime
   start, the model's graph compiled or loaded, 12 cells, report) and the `Runtime:` line the
   frozen run printed (engine, device, precision). `--skip-start` leaves out part 2.
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


RUNTIMES = ("openvino", "onnx", "tensorflow")


def timed_analyze(command: list[str], runtime: str) -> tuple[float, str]:
    """Seconds for one `analyze --runtime` of the bundled samples, and its `Runtime:` line."""
    with tempfile.TemporaryDirectory(prefix="leukgui-bench-") as user:
        env = dict(os.environ, LEUKGUI_USER_DIR=user, QT_QPA_PLATFORM="offscreen")
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        out = Path(user) / f"{runtime}.xlsx"
        args = ["analyze", str(REPO / "resources" / "samples"), "--runtime", runtime]
        start = time.perf_counter()
        proc = subprocess.run(
            [*command, *args, "--out", str(out)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=user,
        )
        elapsed = time.perf_counter() - start
        lines = proc.stderr.splitlines()
        used = next((line for line in lines if line.startswith("Runtime: ")), "")
        if proc.returncode != 0 or not out.is_file():
            raise RuntimeError(f"{command} analyze --runtime {runtime} failed:\n{proc.stderr}")
        if any("runtime note:" in line for line in lines):
            used += "  (fell back: " + "; ".join(x.strip() for x in lines if "note:" in x) + ")"
        return elapsed, used


def best_analyze(command: list[str], runtime: str, repeat: int) -> tuple[float, str]:
    runs = [timed_analyze(command, runtime) for _ in range(repeat)]
    return min(seconds for seconds, _ in runs), runs[0][1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dist", type=Path, default=REPO / "dist" / "LeukGUI")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--skip-start", action="store_true", help="leave out the cold-start comparison"
    )
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
    if not args.skip_start:
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

    print(
        f"\nanalyze resources/samples --runtime X, best of {args.repeat} fresh processes "
        "(frozen vs source install):"
    )
    for runtime in RUNTIMES:
        frozen, used = best_analyze([str(cli)], runtime, args.repeat)
        plain, _ = best_analyze(source, runtime, args.repeat)
        print(
            f"  {runtime:10s} frozen {frozen:6.2f} s  source {plain:6.2f} s  "
            f"ratio {frozen / plain:4.2f}  {used}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
