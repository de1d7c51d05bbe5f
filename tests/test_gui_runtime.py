"""The inference runtime in the window: chosen in Preferences, used by the next run, said in
the status bar, and a fallback never silent."""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import html  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import textwrap  # noqa: E402
import zipfile  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
from PySide6.QtCore import Qt  # noqa: E402
from PySide6.QtGui import QColor, QImage, QPalette  # noqa: E402
from PySide6.QtWidgets import QApplication, QDialogButtonBox  # noqa: E402

from leukgui.core.paths import user_models_dir  # noqa: E402
from leukgui.core.preferences import (  # noqa: E402
    Preferences,
    load_preferences,
    preferences_path,
)
from leukgui.core.runtimes import ENGINE_LABELS, installed_engines  # noqa: E402
from leukgui.core.synthetic import write_dataset  # noqa: E402
from leukgui.gui.theme import apply_theme  # noqa: E402

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
    assert run.info.extra["Runtime notes"] == "none"  # nothing passed over, and said so
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


def _contrast(a: QColor, b: QColor) -> float:
    """The WCAG contrast ratio of two colours (1 to 21; 4.5 is the minimum for text)."""

    def lum(c: QColor) -> float:
        parts = [c.redF(), c.greenF(), c.blueF()]
        lin = [p / 12.92 if p <= 0.03928 else ((p + 0.055) / 1.055) ** 2.4 for p in parts]
        return 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]

    hi, lo = sorted((lum(a), lum(b)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


def _link_colours(label) -> list[QColor]:
    """The colours the label's rich text gives its links (none: the palette's link blue)."""
    anchors = re.findall(r"<a [^>]*>", label.text())
    assert anchors, label.text()
    found = [re.search(r"color:\s*(#[0-9a-fA-F]{6})", a) for a in anchors]
    return [
        QColor(m.group(1)) if m else label.palette().color(QPalette.ColorRole.Link) for m in found
    ]


def _painted_colours(widget) -> set[str]:
    image = widget.grab().toImage().convertToFormat(QImage.Format.Format_RGB32)
    return {
        image.pixelColor(x, y).name() for y in range(image.height()) for x in range(image.width())
    }


def _check_link_legible(win) -> None:
    """The fallback link and its ⚠ marker read well on the status bar in the current theme:
    the colour the label asks for has a contrast of at least 4.5:1 with the status bar's
    background, and it is the colour actually painted (not the palette's default link blue)."""
    label = win.runtime_label
    background = win.statusBar().palette().color(QPalette.ColorRole.Window)
    (link,) = _link_colours(label)
    assert _contrast(link, background) >= 4.5, (link.name(), background.name())
    painted = _painted_colours(label)
    assert link.name() in painted  # the link's glyphs are drawn in that colour
    assert "#0000ff" not in painted  # and nothing in Qt's default link blue


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
    in_use = win.runtime_status()
    assert in_use is not None and in_use.notes
    assert all("changed or damaged" in note for note in in_use.notes)
    assert "changed or damaged" in run.info.extra["Runtime notes"]  # and in the report

    # Said once where messages go: how many runtimes were passed over, and the first reason.
    passed = [n for n in in_use.notes if " not used" in n]
    assert len(passed) == len(in_use.notes) >= 2  # OpenVINO, then ONNX Runtime, refused it
    message = win.statusBar().currentMessage()
    assert f"{len(passed)} runtimes passed over" in message
    assert message.startswith("Runtime fallback:") and passed[0] in message

    shown: list[tuple] = []
    monkeypatch.setattr(win, "_show_message", lambda *a, **k: shown.append(a))
    label.linkActivated.emit("#runtime-notes")  # the "see details" link
    ((kind, title, text, *details),) = shown
    assert kind == "warning" and title == "Inference runtime"
    assert run.info.device in text
    lines = text.splitlines()
    for note in in_use.notes:  # every reason in the box itself, one a line; none hidden
        assert f"• {note}" in lines
    assert not any(details)

    # The link is legible on both themes, switched as a person does (View › Dark theme).
    _check_link_legible(win)
    try:
        win.act_dark.trigger()
        QApplication.processEvents()  # the palette change reaches the widgets
        assert win.prefs.theme == "dark"
        background = win.statusBar().palette().color(QPalette.ColorRole.Window)
        assert background.lightnessF() < 0.2  # the near-black status bar of the report
        _check_link_legible(win)
        assert "#8a4b00" not in label.text().lower()  # the light theme's brown is gone
        # Links elsewhere (rich text without a colour of their own) use a light blue now.
        link = win.palette().color(QPalette.ColorRole.Link)
        assert _contrast(link, background) >= 4.5
        win.act_dark.trigger()
        QApplication.processEvents()
        assert win.prefs.theme == "light"
        _check_link_legible(win)
    finally:
        apply_theme("light")


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


def test_the_precision_chosen_in_preferences_reaches_the_runtime(
    qtbot, tiny_bundle_path: Path, cells_folder: Path, monkeypatch
) -> None:
    """File › Preferences… › Precision: saved, passed to the analyzer by the warm-up and the
    run, and a change loads the model again (the cache is by runtime and precision)."""
    from leukgui.gui import analysis

    asked: list[tuple[str, str]] = []
    real = analysis.Analyzer

    def recording(bundle, runtime, *, precision="auto"):
        asked.append((runtime, precision))
        return real(bundle, runtime, precision=precision)

    monkeypatch.setattr(analysis, "Analyzer", recording)
    win = _window(qtbot, tiny_bundle_path)
    path = win.current_bundle_path()
    assert win.prefs.precision == "auto"

    win.act_preferences.trigger()
    dialog = win.preferences_dialog
    combo = dialog.precision_combo
    texts = [combo.itemText(i) for i in range(combo.count())]
    assert texts == [
        "Automatic (bf16 where the CPU supports it; cells near a decision boundary are "
        "recomputed in fp32)",
        "Full precision (fp32)",
    ]
    assert combo.currentData() == "auto"
    tip = combo.itemData(combo.findData("fp32"), Qt.ItemDataRole.ToolTipRole)
    assert "--precision fp32" in tip
    combo.setFocus()
    qtbot.keyClick(combo, Qt.Key.Key_Down)  # the keyboard, as a person would
    assert combo.currentData() == "fp32"
    qtbot.mouseClick(dialog.buttons.button(QDialogButtonBox.StandardButton.Ok), Qt.LeftButton)
    assert win.prefs.precision == "fp32" and win.prefs.runtime == "auto"
    assert load_preferences()[0].precision == "fp32"  # saved
    assert "Automatic (fp32) — loads with the next analysis" in win.runtime_label.text()

    # The warm-up (what a start-up preload runs) loads it at fp32.
    with qtbot.waitSignal(win.warmed_up, timeout=180_000):
        assert win.warm_up() is not None
    assert asked == [("auto", "fp32")]
    assert analysis.is_loaded(path, "auto", "fp32") and not analysis.is_loaded(path, "auto")
    run = _analyze(qtbot, win, cells_folder)
    assert asked == [("auto", "fp32")]  # the run used the loaded analyzer: no reload
    assert run.info.device.endswith("· fp32")
    shown = win.runtime_status()
    assert shown is not None and shown.precision == "fp32"
    assert win.runtime_label.text() == html.escape(f"Runtime: {run.info.device}")

    # Back to Automatic: the next run loads the model again at the automatic precision.
    dialog = win.show_preferences()
    assert dialog.precision_combo.currentData() == "fp32"  # the saved choice is shown
    dialog.precision_combo.setCurrentIndex(dialog.precision_combo.findData("auto"))
    qtbot.mouseClick(dialog.buttons.button(QDialogButtonBox.StandardButton.Ok), Qt.LeftButton)
    assert win.prefs.precision == "auto"
    assert win.runtime_status() is None  # the fp32 analyzer is no longer what runs next
    assert "Automatic — loads with the next analysis" in win.runtime_label.text()
    _analyze(qtbot, win, cells_folder)
    assert asked == [("auto", "fp32"), ("auto", "auto")]
    assert analysis.is_loaded(path, "auto", "auto")

    # A hand-edited value is refused on load (a note, the default), like the runtime's.
    preferences_path().write_text(json.dumps({"precision": "bf16"}), encoding="utf-8")
    prefs, notes = load_preferences()
    assert prefs.precision == "auto" and notes == ["settings.json: ignored precision='bf16'"]


def test_a_model_whose_graph_is_damaged_is_imported_for_tensorflow_only(
    qtbot, tiny_bundle_path: Path, damaged_graph_bundle: Path, tmp_path: Path, monkeypatch
) -> None:
    """Model › Import model… on a file whose inference graph is damaged: installed, and the
    person is told it runs on TensorFlow only, and why. Two models with one name and version
    can be told apart in the picker."""
    from leukgui.core.bundle import load_bundle
    from leukgui.gui import main_window

    win = _window(qtbot, tiny_bundle_path)
    messages: list[tuple] = []
    monkeypatch.setattr(win, "_show_message", lambda *a, **k: messages.append(a))
    # An intact model, another file name, the same name and version: no warning.
    intact = tmp_path / "tiny-from-the-lab.leukmodel"
    shutil.copy2(tiny_bundle_path, intact)
    problem = load_bundle(damaged_graph_bundle, keras=False).graph_problem
    assert problem and load_bundle(intact, keras=False).graph_problem == ""

    def import_through_the_menu(path: Path) -> None:
        monkeypatch.setattr(
            main_window.QFileDialog, "getOpenFileName", lambda *a, **k: (str(path), "")
        )
        model_menu = next(
            a.menu() for a in win.menuBar().actions() if a.text().replace("&", "") == "Model"
        )
        assert win.act_import_model in model_menu.actions()
        before = set(win._workers)
        win.act_import_model.trigger()
        (worker,) = set(win._workers) - before
        qtbot.waitUntil(lambda: worker not in win._workers, timeout=60_000)

    import_through_the_menu(intact)
    assert messages == []
    assert win.statusBar().currentMessage() == f"Model {intact.name} added"

    import_through_the_menu(damaged_graph_bundle)
    installed = user_models_dir() / damaged_graph_bundle.name
    assert win.current_bundle_path() == str(installed)  # installed and chosen all the same
    ((kind, title, text),) = messages
    assert kind == "warning" and "TensorFlow only" in title
    assert f"Model {damaged_graph_bundle.name} added" in text
    assert "inference graph cannot be used" in text and problem.rstrip(".") in text
    assert "TensorFlow only (slower)" in text
    status = win.statusBar().currentMessage()
    assert damaged_graph_bundle.name in status and "TensorFlow only" in status

    # Three files named "tiny-test v1": each entry names its file and where it comes from.
    combo = win.model_combo
    rows = {Path(combo.itemData(i)).name: i for i in range(combo.count()) if combo.itemData(i)}
    files = [tiny_bundle_path.name, intact.name, damaged_graph_bundle.name]
    assert set(files) <= set(rows)
    texts = [combo.itemText(rows[name]) for name in files]
    assert len(set(texts)) == 3, texts
    for name, text in zip(files, texts, strict=True):
        assert text.startswith("tiny-test v1 · efficientnetb0") and f"· {name} (user)" in text
        tip = combo.itemData(rows[name], Qt.ItemDataRole.ToolTipRole)
        assert str(user_models_dir() / name) in tip and "your models folder" in tip
    demo = next(i for i in range(combo.count()) if "DEMO" in combo.itemText(i))
    assert ".leukmodel" not in combo.itemText(demo)  # a unique name stays short
    assert "bundled with LeukGUI" in combo.itemData(demo, Qt.ItemDataRole.ToolTipRole)


GPU_NOTES = [
    "ONNX Runtime · DirectML not used: it could not start (no DirectX 12 device)",
    "ONNX Runtime · CUDA not used: it failed on the probe cells (CUDA driver too old)",
    "OpenVINO · GPU not used: P(ALL) differs from TensorFlow's by up to 0.3 on the probe cells",
    "ONNX Runtime · DirectML · fp32 failed during the run (device removed); the remaining "
    "cells were analysed on OpenVINO · CPU · bf16",
]


def test_the_self_test_fails_only_when_a_cpu_runtime_was_passed_over() -> None:
    from leukgui.gui.app import cpu_runtimes_passed_over

    assert cpu_runtimes_passed_over([]) == []
    assert cpu_runtimes_passed_over(GPU_NOTES) == []  # a GPU that was not used: printed only
    cpu = [
        "OpenVINO · CPU not used: it could not start (libopenvino_intel_cpu_plugin.so missing)",
        "ONNX Runtime · CPU not used: the model file lacks its model.onnx or probe.npz",
        "ONNX Runtime not used: it is not installed",  # a package missing from the install
    ]
    assert cpu_runtimes_passed_over([*GPU_NOTES, *cpu]) == cpu
    assert cpu_runtimes_passed_over(iter(cpu[:1])) == cpu[:1]


def test_the_self_test_fails_when_the_first_cpu_runtime_falls_back(monkeypatch) -> None:
    """`leukgui --self-test` in this process, with OpenVINO's CPU engine made to fail its
    probe (what a broken package does): the run completes on the next engine, and the
    self-test fails, the note printed, instead of passing quietly."""
    import io

    from leukgui.core import runtimes
    from leukgui.gui import analysis
    from leukgui.gui.app import self_test

    if "openvino" not in installed_engines() or "onnx" not in installed_engines():
        pytest.skip("needs OpenVINO and ONNX Runtime")
    real = runtimes.parity_problem

    def broken_openvino(engine, probe):
        if isinstance(engine, runtimes.OpenVinoEngine) and not engine.gpu:
            return "it failed on the probe cells (a library of the package is missing)"
        return real(engine, probe)

    monkeypatch.setattr(runtimes, "parity_problem", broken_openvino)
    analysis._loaded.clear()
    out = io.StringIO()
    try:
        code = self_test(out)
    finally:
        analysis._loaded.clear()
    text = out.getvalue()
    assert code == 1, text
    assert "runtime ONNX Runtime · CPU" in text  # the analysis itself ran
    assert "runtime note: OpenVINO · CPU not used: it failed on the probe cells" in text
    assert "FAILED: the analysis ran on ONNX Runtime · CPU" in text
    assert "OK" not in text.split()
    assert not [w for w in QApplication.topLevelWidgets() if w.isVisible()]  # closed
