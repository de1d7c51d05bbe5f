"""The inference runtime in the window: chosen in Preferences, used by the next run, said in
the status bar, and a fallback never silent."""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import html  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import textwrap  # noqa: E402
import zipfile  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
from PySide6.QtCore import Qt  # noqa: E402
from PySide6.QtWidgets import QDialogButtonBox  # noqa: E402

from leukgui.core.paths import user_models_dir  # noqa: E402
from leukgui.core.preferences import Preferences, load_preferences  # noqa: E402
from leukgui.core.runtimes import ENGINE_LABELS, installed_engines  # noqa: E402
from leukgui.core.synthetic import write_dataset  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
GRAPH_MEMBER = "model.onnx"


@pytest.fixture
def cells_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "patient3"
    write_dataset(folder, 3, 5, fmt="png", size=64)
    return folder


@pytest.fixture(scope="module")
def damaged_graph_bundle(tiny_bundle_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny bundle with other bytes in its inference graph; manifest and weights as they
    were, so the weights still verify and only the graph runtimes must refuse it."""
    target = tmp_path_factory.mktemp("damaged") / "tiny-damaged-graph.leukmodel"
    with zipfile.ZipFile(tiny_bundle_path) as src, zipfile.ZipFile(target, "w") as dst:
        names = src.namelist()
        assert GRAPH_MEMBER in names and "manifest.json" in names
        for info in src.infolist():
            data = src.read(info.filename)
            if info.filename == GRAPH_MEMBER:
                data = bytes(b ^ 0x5A for b in data[:4096]) + data[4096:]
            dst.writestr(info, data)
    return target


def _window(qtbot, bundle: Path):
    """A window on `bundle` (installed in the temporary models folder), no preload."""
    from leukgui.gui import analysis
    from leukgui.gui.main_window import MainWindow

    analysis._loaded.clear()  # no analyzer left from another test
    target = user_models_dir() / bundle.name
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(bundle, target)
    prefs = Preferences(reviewer="Dr. Test", open_report_after_export=False, preload_model=False)
    win = MainWindow(prefs, restore_check=False)
    qtbot.addWidget(win)
    win.show()
    win.select_model(target)
    assert win.current_bundle_path() == str(target)
    return win


def _choose_runtime(qtbot, win, name: str) -> None:
    """File › Preferences…, pick the runtime in its combo box, OK."""
    win.act_preferences.trigger()
    dialog = win.preferences_dialog
    assert dialog is not None and dialog.isVisible()
    combo = dialog.runtime_combo
    row = combo.findData(name)
    assert row >= 0 and dialog.runtime_enabled(name)
    combo.setFocus()
    combo.setCurrentIndex(row)
    assert combo.currentText().startswith(ENGINE_LABELS.get(name, "Automatic"))
    qtbot.mouseClick(dialog.buttons.button(QDialogButtonBox.StandardButton.Ok), Qt.LeftButton)
    assert not dialog.isVisible()
    assert win.prefs.runtime == name
    assert load_preferences()[0].runtime == name  # saved, like the other settings


def _analyze(qtbot, win, folder: Path):
    with qtbot.waitSignal(win.analysis_finished, timeout=180_000) as blocker:
        win.open_paths([str(folder)])
    return blocker.args[0]


@pytest.mark.skipif(
    not {"openvino", "onnx"} <= set(installed_engines()), reason="needs OpenVINO and ONNX Runtime"
)
def test_the_runtime_chosen_in_preferences_runs_the_next_analysis(
    qtbot, tiny_bundle_path: Path, cells_folder: Path
) -> None:
    from leukgui.gui import analysis

    win = _window(qtbot, tiny_bundle_path)
    assert not win.runtime_label.isVisible()  # nothing loaded yet: nothing said
    path = win.current_bundle_path()

    _choose_runtime(qtbot, win, "openvino")
    assert win.runtime_label.isVisible()
    assert "OpenVINO — loads with the next analysis" in win.runtime_label.text()
    run = _analyze(qtbot, win, cells_folder)
    assert len(run.cells) == 6 and not run.errors
    description = run.info.device
    assert description.startswith("OpenVINO · CPU")
    assert win.runtime_label.text() == html.escape(f"Runtime: {description}")
    assert "fallback" not in win.runtime_label.text()
    assert "Runtime notes" not in run.info.extra
    assert analysis.is_loaded(path, "openvino")

    # Changed in Preferences, used by the next run: no restart, no stale cached analyzer.
    _choose_runtime(qtbot, win, "onnx")
    assert "ONNX Runtime — loads with the next analysis" in win.runtime_label.text()
    second = _analyze(qtbot, win, cells_folder)
    assert second.info.device.startswith("ONNX Runtime · CPU")
    assert win.runtime_label.text() == html.escape(f"Runtime: {second.info.device}")
    assert win.runtime_status() is not None and win.runtime_status().notes == ()
    assert analysis.is_loaded(path, "onnx") and not analysis.is_loaded(path, "openvino")
    # Both engines ran the same network: the same calls, P(ALL) close (OpenVINO may be bf16).
    by_path = {c.path: c.p_all for c in run.cells}
    assert all(abs(by_path[c.path] - c.p_all) < 0.05 for c in second.cells)


def test_a_damaged_graph_falls_back_to_tensorflow_and_says_why(
    qtbot, damaged_graph_bundle: Path, cells_folder: Path, monkeypatch
) -> None:
    win = _window(qtbot, damaged_graph_bundle)
    _choose_runtime(qtbot, win, "openvino")
    run = _analyze(qtbot, win, cells_folder)

    assert len(run.cells) == 6 and not run.errors  # the run completed, on TensorFlow
    assert run.info.device.startswith("TensorFlow · CPU")
    label = win.runtime_label
    assert label.isVisible()
    assert label.text().startswith(html.escape(f"Runtime: {run.info.device}"))
    assert "⚠ fallback — see details" in label.text()
    assert "changed or damaged" in label.toolTip()
    assert "OpenVINO · CPU not used" in label.toolTip()
    assert "not used" in win.statusBar().currentMessage()  # said once where messages go
    in_use = win.runtime_status()
    assert in_use is not None and in_use.notes
    assert all("changed or damaged" in note for note in in_use.notes)
    assert "changed or damaged" in run.info.extra["Runtime notes"]  # and in the report

    shown: list[tuple] = []
    monkeypatch.setattr(win, "_show_message", lambda *a, **k: shown.append(a))
    label.linkActivated.emit("#runtime-notes")  # the "see details" link
    ((kind, title, text, details),) = shown
    assert kind == "warning" and title == "Inference runtime"
    assert run.info.device in text
    assert details.splitlines() == list(in_use.notes)


def test_engines_not_installed_cannot_be_chosen(qtbot, tiny_bundle_path: Path, monkeypatch) -> None:
    from leukgui.gui import preferences_dialog

    monkeypatch.setattr(preferences_dialog, "installed_engines", lambda: ["tensorflow"])
    win = _window(qtbot, tiny_bundle_path)
    win.act_preferences.trigger()
    dialog = win.preferences_dialog
    combo = dialog.runtime_combo
    texts = [combo.itemText(i) for i in range(combo.count())]
    assert texts == [
        "Automatic (fastest checked: GPU, then OpenVINO)",
        "OpenVINO",
        "ONNX Runtime",
        "TensorFlow (reference)",
    ]
    assert combo.currentData() == "auto"
    for name, enabled in (("auto", True), ("openvino", False), ("onnx", False)):
        assert dialog.runtime_enabled(name) is enabled
    assert dialog.runtime_enabled("tensorflow")
    tip = combo.itemData(combo.findData("openvino"), Qt.ItemDataRole.ToolTipRole)
    assert "not installed" in tip
    tip = combo.itemData(combo.findData("tensorflow"), Qt.ItemDataRole.ToolTipRole)
    assert "not installed" not in tip
    # The keyboard skips the disabled entries: Down from Automatic lands on TensorFlow.
    combo.setFocus()
    qtbot.keyClick(combo, Qt.Key.Key_Down)
    assert combo.currentData() == "tensorflow"
    qtbot.mouseClick(dialog.buttons.button(QDialogButtonBox.StandardButton.Cancel), Qt.LeftButton)
    assert win.prefs.runtime == "auto"  # cancelled: nothing changed

    # A saved choice whose engine was uninstalled since is shown, said, and not accepted.
    win.prefs.runtime = "openvino"
    dialog = win.show_preferences()
    assert dialog.runtime_combo.currentData() == "openvino"
    assert dialog.runtime_warning.isVisible()
    assert "not installed" in dialog.runtime_warning.text()
    ok = dialog.buttons.button(QDialogButtonBox.StandardButton.Ok)
    assert not ok.isEnabled()
    dialog.runtime_combo.setCurrentIndex(dialog.runtime_combo.findData("auto"))
    assert ok.isEnabled() and not dialog.runtime_warning.isVisible()
    dialog.reject()


def test_a_runtime_that_is_not_installed_stops_the_run_with_a_message(
    qtbot, tiny_bundle_path: Path, cells_folder: Path, monkeypatch
) -> None:
    from leukgui.core import runtimes

    win = _window(qtbot, tiny_bundle_path)
    win.prefs.runtime = "onnx"  # chosen while it was installed
    monkeypatch.setattr(runtimes, "installed_engines", lambda: ["tensorflow"])
    shown: list[tuple] = []
    monkeypatch.setattr(win, "_show_message", lambda *a, **k: shown.append(a))
    win.open_paths([str(cells_folder)])
    qtbot.waitUntil(lambda: bool(shown), timeout=60_000)
    kind, title, text, _details = shown[0]
    assert (kind, title) == ("critical", "Analysis failed")
    assert "'onnx' runtime is not available" in text and "Preferences" in text
    assert win.progress_label.text().startswith("Analysis failed: Inference runtime")
    assert win.worker is None and win.act_analyze.isEnabled()  # ready for another try
    assert not win.runtime_label.isVisible()


def test_the_openvino_runtime_never_loads_tensorflow(tmp_path: Path, tiny_bundle_path: Path):
    """Preload and a whole run on OpenVINO, in a fresh process: TensorFlow stays unloaded."""
    if "openvino" not in installed_engines():
        pytest.skip("OpenVINO is not installed")
    folder = tmp_path / "cells"
    write_dataset(folder, 2, 9, fmt="png", size=64)
    code = textwrap.dedent(
        f"""
        import shutil, sys
        from pathlib import Path
        from PySide6.QtCore import QEventLoop, QTimer
        from PySide6.QtWidgets import QApplication
        app = QApplication([])
        from leukgui.core.paths import user_models_dir
        from leukgui.core.preferences import Preferences
        from leukgui.gui.main_window import MainWindow

        def wait(signal, seconds):
            box = []
            loop = QEventLoop()
            signal.connect(lambda value: (box.append(value), loop.quit()))
            QTimer.singleShot(int(seconds * 1000), loop.quit)
            loop.exec()
            return box

        user_models_dir().mkdir(parents=True, exist_ok=True)
        target = shutil.copy2({str(tiny_bundle_path)!r}, user_models_dir())
        w = MainWindow(Preferences(runtime="openvino", reviewer="t"), restore_check=False)
        w._show_message = lambda *a, **k: print("MESSAGE", a)
        w.select_model(target)
        w.show()
        print("preloaded:", wait(w.warmed_up, 300))
        print("tensorflow after preload:", "tensorflow" in sys.modules)
        w.open_paths([{str(folder)!r}])
        (run,) = wait(w.analysis_finished, 300)
        print("cells:", len(run.cells), "device:", run.info.device)
        print("status:", w.runtime_label.text())
        print("tensorflow after run:", "tensorflow" in sys.modules)
        sys.stdout.flush()
        """
    )
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", LEUKGUI_USER_DIR=str(tmp_path / "u"))
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=REPO, timeout=600
    )
    out = result.stdout + result.stderr[-3000:]
    assert "tensorflow after preload: False" in result.stdout, out
    assert "cells: 4 device: OpenVINO · CPU" in result.stdout, out
    assert "status: Runtime: OpenVINO · CPU" in result.stdout, out
    assert "tensorflow after run: False" in result.stdout, out
    assert "MESSAGE" not in result.stdout, out
