"""Adopting a model is an explicit, recorded decision (registry, CLI, window).

A newly trained model joins the model list marked "new — not adopted"; it becomes the model
in use only when a person adopts it, and the registry records who, when and the comparison
they were shown.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import zipfile

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from leukgui.core.bundle import IDENTITY_KEY, _read_archive, _write_bundle, read_manifest  # noqa: E402
from leukgui.core.model_registry import (  # noqa: E402
    NO_COMPARISON,
    RegistryError,
    adopt,
    current,
    history,
    registry_path,
)
from leukgui.core.paths import user_models_dir  # noqa: E402
from leukgui.core.preferences import Preferences  # noqa: E402

VERDICT = "The new model is better than its parent (difference +6.0 points, 95% CI +2.0 to +10.0)."


def _child_of(parent: Path, out: Path) -> Path:
    """A fine-tuned-looking bundle: the parent's weights, a `parent` and a `comparison`."""
    manifest, data, graph = _read_archive(parent, model=True)
    assert data is not None
    manifest = dict(
        manifest,
        name="lab-finetuned",
        version="2",
        parent={
            "name": manifest["name"],
            "version": str(manifest["version"]),
            IDENTITY_KEY: manifest[IDENTITY_KEY],
            "weights_sha256": manifest["weights_sha256"],
            "backbone": manifest["backbone"],
        },
        comparison={
            "against": "parent",
            "parent": f"{manifest['name']} v{manifest['version']}",
            "part": "test",
            "balanced_accuracy_parent": 0.81,
            "balanced_accuracy_new": 0.87,
            "difference": 0.06,
            "interval": [0.02, 0.10],
            "mcnemar_p": 0.013,
            "verdict": VERDICT,
        },
    )
    _write_bundle(out, manifest, data, graph)
    return out


@pytest.fixture
def installed(tiny_bundle_path: Path) -> tuple[Path, Path]:
    """The tiny bundle (parent) and a fine-tuned child, both in the user models folder."""
    folder = user_models_dir()
    folder.mkdir(parents=True, exist_ok=True)
    parent = folder / tiny_bundle_path.name
    shutil.copy2(tiny_bundle_path, parent)
    child = _child_of(parent, folder / "lab-finetuned-v2.leukmodel")
    return parent, child


def _info(path: Path):
    from leukgui.core.bundle import BundleInfo

    return BundleInfo(path=path, manifest=read_manifest(path), source="user")


# ---------------------------------------------------------------------------- registry


def test_registry_round_trip_records_who_when_comparison_and_previous(installed) -> None:
    parent, child = installed
    assert current() is None and history() == []

    first = adopt(_info(parent), "Dr. One")
    assert current() == first
    assert first.comparison == NO_COMPARISON and first.previous is None

    second = adopt(_info(child), "  Dr.   Two ")
    assert second.who == "Dr. Two"
    assert second.comparison == VERDICT
    assert second.previous == {"name": first.name, "version": first.version, "sha256": first.sha256}
    assert second.sha256 == read_manifest(child)[IDENTITY_KEY]
    assert second.when.endswith("+00:00")  # UTC

    assert [a.name for a in history()] == [first.name, "lab-finetuned"]
    raw = json.loads(registry_path().read_text(encoding="utf-8"))
    assert raw["format"] == "leukgui-model-registry"
    assert raw["adoptions"][-1]["who"] == "Dr. Two"
    assert current().sha256 == second.sha256


def test_a_changed_or_missing_file_is_refused_and_nothing_is_recorded(installed, tmp_path) -> None:
    parent, child = installed
    shown = _info(child)
    # The file is replaced by another model under the same name after it was shown.
    _child_of(parent, tmp_path / "other.leukmodel")
    manifest, data, graph = _read_archive(tmp_path / "other.leukmodel", model=True)
    _write_bundle(child, dict(manifest, version="3"), data, graph)
    with pytest.raises(RegistryError, match="has changed"):
        adopt(shown, "Dr. One")
    # Damaged weights: the archive's model bytes no longer match the manifest.
    damaged = tmp_path / "damaged.leukmodel"
    with zipfile.ZipFile(parent) as src, zipfile.ZipFile(damaged, "w") as dst:
        for item in src.infolist():
            body = src.read(item)
            dst.writestr(item, body + b"x" if item.filename == "model.keras" else body)
    with pytest.raises(RegistryError, match="cannot be adopted"):
        adopt(damaged, "Dr. One")
    gone = _info(parent)
    parent.unlink()
    with pytest.raises(RegistryError, match="gone"):
        adopt(gone, "Dr. One")
    with pytest.raises(RegistryError, match="who"):
        adopt(child, "   ")
    assert history() == [] and not registry_path().exists()


# ---------------------------------------------------------------------------- CLI


@pytest.fixture
def cli(monkeypatch, capsys):
    from leukgui import cli as leukgui_cli

    def run(argv: list[str], stdin: str = "") -> tuple[int, str, str]:
        monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
        code = leukgui_cli.main(argv)
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


def test_cli_adopt_asks_and_n_changes_nothing(installed, cli) -> None:
    _, child = installed
    code, out, _ = cli(["models", "--adopt", str(child), "--reviewer", "Dr. Cli"], stdin="n\n")
    assert code == 0
    assert "Balanced accuracy, parent" in out and "81.0%" in out and "87.0%" in out
    assert "+6.0 points, interval +2.0 points to +10.0 points" in out
    assert "McNemar p: 0.013" in out and VERDICT in out
    assert "Use lab-finetuned 2 for the next analyses? [y/N]" in out
    assert "Nothing was changed" in out
    assert current() is None and not registry_path().exists()

    code, out, _ = cli(["models"])
    assert "lab-finetuned v2: new — not adopted" in out
    assert "fine-tuned from" in out
    assert "In use: no model adopted yet" in out


def test_cli_adopt_with_yes_records_and_models_shows_it(installed, cli) -> None:
    _, child = installed
    code, out, err = cli(["models", "--adopt", "lab-finetuned", "--reviewer", "Dr. Cli", "--yes"])
    assert code == 0, err
    assert "Adopted lab-finetuned v2 by Dr. Cli" in out
    adoption = current()
    assert adoption is not None and adoption.who == "Dr. Cli" and adoption.comparison == VERDICT
    code, out, _ = cli(["models"])
    assert f"In use: lab-finetuned v2 ({adoption.sha256}), adopted by Dr. Cli" in out
    assert "lab-finetuned v2: new — not adopted" not in out
    code, out, _ = cli(["models", "--json"])
    rows = {r["name"]: r for r in json.loads(out)}
    assert rows["lab-finetuned"]["in_use"] and rows["lab-finetuned"]["adopted"]
    # y on stdin also adopts; a missing reviewer is a usage error that records nothing more.
    code, _, err = cli(["models", "--adopt", str(child)], stdin="y\n")
    assert code != 0 and "--reviewer" in err
    assert len(history()) == 1


# ---------------------------------------------------------------------------- window


@pytest.fixture
def window(qtbot, installed):
    from leukgui.gui.main_window import MainWindow

    prefs = Preferences(reviewer="Dr. Prefs", open_report_after_export=False, preload_model=False)
    win = MainWindow(prefs, restore_check=False)
    qtbot.addWidget(win)
    win.show()
    return win


def _row_text(win, path: Path) -> str:
    return win.model_combo.itemText(win.model_combo.findData(str(path)))


def test_never_adopted_models_are_marked_and_the_label_names_the_model(window, installed) -> None:
    parent, child = installed
    assert "new — not adopted" in _row_text(window, child)
    assert "new — not adopted" in _row_text(window, parent)
    window.select_model(child)
    assert "In use: lab-finetuned v2" in window.model_use_label.toolTip()
    assert "not adopted" in window.model_use_label.text()
    assert window.act_use_model in window.menuBar().actions()[2].menu().actions()


def test_use_this_model_cancel_changes_nothing(window, installed) -> None:
    parent, child = installed
    window.select_model(parent)
    window.select_model(child)
    dialog = window.show_adopt_dialog()
    text = dialog.browser.toPlainText()
    assert "fine-tuned from" in text and "81.0%" in text and "87.0%" in text
    assert "McNemar p: 0.013" in text and VERDICT in text
    assert dialog.question.text() == "Use lab-finetuned 2 for the next analyses?"
    assert dialog.reviewer_edit.text() == "Dr. Prefs"
    dialog.reject()
    assert current() is None and not registry_path().exists()
    assert "new — not adopted" in _row_text(window, child)


def test_adopting_on_the_training_tab_updates_the_window(window, installed) -> None:
    """The Training tab's "Use this model…" adopts through the same dialog; the window's
    picker and "in use" label follow at once (not at the next start)."""
    parent, child = installed
    window.select_model(parent)
    window.ensure_content()  # built after the first paint in real use
    dialog = window.training_page.open_adoption(child)
    dialog.reviewer_edit.setText("Dr. Tab")
    dialog.ok_button.click()
    assert current() is not None and current().who == "Dr. Tab"
    assert window.current_bundle_path() == str(child)
    assert "adopted by Dr. Tab" in window.model_use_label.text()


def test_use_this_model_ok_records_and_the_window_uses_it(window, installed, qtbot) -> None:
    from leukgui.core.preferences import load_preferences

    parent, child = installed
    window.select_model(parent)
    dialog = window.show_adopt_dialog()
    assert "No comparison with a parent model is recorded" in dialog.browser.toPlainText()
    dialog.reject()

    window.select_model(child)
    dialog = window.show_adopt_dialog()
    dialog.reviewer_edit.setText("")
    assert not dialog.ok_button.isEnabled()  # a name is needed
    dialog.reviewer_edit.setText("Dr. Window")
    dialog.ok_button.click()
    adoption = current()
    assert adoption is not None and adoption.who == "Dr. Window" and adoption.comparison == VERDICT
    assert adoption.sha256 == read_manifest(child)[IDENTITY_KEY]
    assert window.current_bundle_path() == str(child)
    assert "adopted by Dr. Window" in window.model_use_label.text()
    assert "new — not adopted" not in _row_text(window, child)
    assert load_preferences()[0].model == str(child)

    # A new window starts with the adopted model, even when another one was picked last.
    from leukgui.gui.main_window import MainWindow

    again = MainWindow(Preferences(model=str(parent), preload_model=False), restore_check=False)
    qtbot.addWidget(again)
    assert again.current_bundle_path() == str(child)
    assert "adopted by Dr. Window" in again.model_use_label.text()
    assert "In use: lab-finetuned v2 — adopted by Dr. Window" in again.model_use_label.toolTip()


def test_two_processes_adopting_at_once_both_are_recorded(installed) -> None:
    import subprocess
    import sys

    parent, child = installed
    code = (
        "import sys; from leukgui.core.model_registry import adopt; "
        "[adopt(sys.argv[1], sys.argv[2] + str(i)) for i in range(5)]"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", code, str(path), who])
        for path, who in ((parent, "A"), (child, "B"))
    ]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    assert sorted(a.who for a in history()) == sorted(
        [f"A{i}" for i in range(5)] + [f"B{i}" for i in range(5)]
    )


@pytest.mark.parametrize(
    ("difference", "interval", "caution"),
    [
        (0.06, [0.02, 0.10], ""),
        (-0.075, [-0.2, 0.05], "scored LOWER than its parent"),
        (0.03, [-0.01, 0.07], "the gain may be chance"),
        (0.03, [None, None], "too few test subjects"),
    ],
)
def test_the_comparison_warns_before_a_worse_or_unproven_model_is_adopted(
    difference, interval, caution
) -> None:
    from leukgui.core.model_registry import comparison_lines

    manifest = {
        "comparison": {
            "parent": "lab v1",
            "balanced_accuracy_parent": 0.65,
            "balanced_accuracy_new": 0.65 + difference,
            "difference": difference,
            "interval": interval,
            "mcnemar_p": 0.5,
        }
    }
    lines = comparison_lines(manifest)
    cautions = [line for line in lines if line.startswith("CAUTION")]
    if caution:
        assert len(cautions) == 1 and caution in cautions[0]
    else:
        assert cautions == []
    if interval[0] is None:
        assert any("no 95% interval" in line for line in lines)
        assert not any("n/a to n/a" in line for line in lines)


def test_an_empty_uncertainty_band_is_said_in_words() -> None:
    from leukgui.core.report import band_text

    assert band_text(0.4, 0.6) == "UNCERTAIN when 0.400 < P(ALL) < 0.600"
    assert "no uncertainty band" in band_text(0.553, 0.553)
