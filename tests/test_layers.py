"""The layer rules of DESIGN.md, executable: a wrong import arrow fails here, not in review."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

FORBIDDEN = {
    "leukgui/core": (
        "PySide6",
        "PyQt5",
        "PyQt6",
        "shiboken6",
        "leukgui.gui",
        "leukgui.cli",
        "training",
    ),
    "training": ("PySide6", "PyQt5", "PyQt6", "leukgui.gui", "leukgui.cli"),
}


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return names


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_no_upward_imports(layer: str) -> None:
    files = sorted((REPO / layer).rglob("*.py"))
    assert files, f"no Python files under {layer}"
    wrong = []
    for path in files:
        for name in _imports(path):
            if any(name == bad or name.startswith(bad + ".") for bad in FORBIDDEN[layer]):
                wrong.append(f"{path.relative_to(REPO)} imports {name}")
    assert not wrong, "layer rule broken:\n" + "\n".join(wrong)


def test_the_rule_checker_sees_imports(tmp_path: Path) -> None:
    sample = tmp_path / "x.py"
    sample.write_text("import PySide6.QtCore\nfrom training.demo import main\n")
    assert _imports(sample) == ["PySide6.QtCore", "training.demo"]


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
