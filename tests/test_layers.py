"""The layer rules of DESIGN.md, executable: a wrong import arrow fails here, not in review."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[1]

# A deliberate violation for each contract in pyproject.toml: (contract id, file, import line).
VIOLATIONS = {
    "core": [
        ("leukgui/core/results.py", "import PySide6.QtCore"),
        ("leukgui/core/results.py", "import training.splits"),
        ("leukgui/core/metrics.py", "from leukgui.gui import workers"),
        ("leukgui/core/metrics.py", "import leukgui.cli"),
    ],
    "training": [
        ("training/splits.py", "from PySide6 import QtWidgets"),
        ("training/splits.py", "import leukgui.gui.theme"),
        ("training/splits.py", "import leukgui.cli"),
    ],
}


def _lint(root: Path) -> subprocess.CompletedProcess[str]:
    """`lint-imports` on the tree at `root` with the contracts of this repo's pyproject."""
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run(
        [
            sys.executable,
            "-c",
            "from importlinter.cli import lint_imports_command; lint_imports_command()",
            "--config",
            str(REPO / "pyproject.toml"),
            "--no-cache",
        ],
        capture_output=True,
        text=True,
        cwd=root,
        env=env,
        timeout=300,
    )


def test_the_layer_contracts_hold() -> None:
    result = _lint(REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 kept, 0 broken" in result.stdout


def _contract_names() -> dict[str, str]:
    config = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    return {c["id"]: c["name"] for c in config["tool"]["importlinter"]["contracts"]}


def test_every_contract_is_exercised_here() -> None:
    assert set(VIOLATIONS) == set(_contract_names())


@pytest.mark.parametrize(
    ("contract", "target", "line"),
    [(c, t, line) for c, cases in VIOLATIONS.items() for t, line in cases],
)
def test_each_contract_fails_on_a_violation(
    tmp_path: Path, contract: str, target: str, line: str
) -> None:
    """A contract that cannot fail proves nothing: break it on a copy and watch it fail."""
    for package in ("leukgui", "training"):
        shutil.copytree(
            REPO / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    path = tmp_path / target
    path.write_text(path.read_text(encoding="utf-8") + f"\n{line}  # deliberate\n")
    result = _lint(tmp_path)
    assert result.returncode != 0, result.stdout
    assert f"{_contract_names()[contract]} BROKEN" in result.stdout


def test_no_import_cycles() -> None:
    """No module of leukgui or training imports a module that imports it back."""
    graph = grimp.build_graph("leukgui", "training", cache_dir=None)
    modules = sorted(graph.modules)
    index = {m: i for i, m in enumerate(modules)}
    edges = {m: sorted(graph.find_modules_directly_imported_by(m) & set(modules)) for m in modules}
    # Tarjan's strongly connected components; any component of two or more is a cycle.
    counter, stack, on_stack, low, order, cycles = [0], [], set(), {}, {}, []

    def visit(m: str) -> None:
        order[m] = low[m] = counter[0]
        counter[0] += 1
        stack.append(m)
        on_stack.add(m)
        for n in edges[m]:
            if n not in order:
                visit(n)
                low[m] = min(low[m], low[n])
            elif n in on_stack:
                low[m] = min(low[m], order[n])
        if low[m] == order[m]:
            component = []
            while True:
                n = stack.pop()
                on_stack.discard(n)
                component.append(n)
                if n == m:
                    break
            if len(component) > 1:
                cycles.append(sorted(component, key=index.get))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10 * len(modules)))
    for m in modules:
        if m not in order:
            visit(m)
    assert not cycles, "import cycles: " + "; ".join(" <-> ".join(c) for c in cycles)


def test_cheap_commands_do_not_load_tensorflow() -> None:
    """`leukgui models` and --help must answer without the ~2 s TensorFlow import."""
    code = (
        "import sys, io, contextlib\n"
        "from leukgui.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    main(['models'])\n"
        "print('tensorflow' in sys.modules, 'keras' in sys.modules, 'PySide6' in sys.modules)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "False", "False"]
