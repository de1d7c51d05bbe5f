"""The training page: data preview, a real tiny training, cancel, registration, the plot."""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import math  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
from PySide6.QtCore import Qt  # noqa: E402
from PySide6.QtGui import QColor, QImage  # noqa: E402
from training_samples import write_subjects  # noqa: E402

from leukgui.core.bundle import BUNDLE_SUFFIX, read_manifest  # noqa: E402
from leukgui.core.paths import user_models_dir  # noqa: E402
from leukgui.core.synthetic import write_dataset  # noqa: E402
from leukgui.gui.plot import PALETTE, LinePlot, nice_ticks  # noqa: E402
from leukgui.gui.training_form import AUTO_SIZE, WEIGHTS_NONE  # noqa: E402
from leukgui.gui.training_page import TrainingPage  # noqa: E402
from leukgui.gui.training_run import ProgressThrottle  # noqa: E402
from training.history import TrainingProgress  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
TRAIN_TIMEOUT_MS = 240_000


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("cells") / "data"
    write_dataset(folder, 12, 5, fmt="png", layout="cnmc", subjects=4, size=64)
    return folder


@pytest.fixture
def page(qtbot, monkeypatch):
    page = TrainingPage()
    qtbot.addWidget(page)
    page.errors = []
    page.opened = []
    monkeypatch.setattr(page, "show_error_dialog", lambda *args: page.errors.append(args))
    monkeypatch.setattr(page, "open_path", lambda path: page.opened.append(path) or True)
    page.resize(1280, 860)
    page.show()
    yield page
    assert page.shutdown(120_000), "a worker thread did not finish"


def _scan(qtbot, page: TrainingPage, folder: Path):
    with qtbot.waitSignal(page.scan_finished, timeout=60_000) as blocker:
        page.set_data_folder(folder)
    return blocker.args[0]


def _tiny_settings(page: TrainingPage, out: Path, epochs: int) -> None:
    form = page.form
    form.set_backbones(["efficientnetb0"])
    form.set_weights_mode(WEIGHTS_NONE)
    form.size_spin.setValue(32)
    form.epochs_spin.setValue(epochs)
    form.batch_spin.setValue(8)
    form.output_edit.setText(str(out))


# ------------------------------------------------------------------------------ preview


def test_preview_shows_counts_subjects_and_unreadable_files(qtbot, page, tmp_path) -> None:
    folder = tmp_path / "cells"
    write_dataset(folder, 12, 3, fmt="png", layout="cnmc", subjects=4, size=64)
    (folder / "all" / "UID_P9_1_1_all.png").write_bytes(b"")  # empty: listed, not trained on

    outcome = _scan(qtbot, page, folder)

    assert outcome.checked and outcome.error is None
    text = page.form.dataset.preview_label.text()
    assert "24 cells" in text and "ALL 12 · HEM 12" in text
    assert "8 subjects" in text and "ALL 4 · HEM 4" in text
    assert "class folders" in text
    table = page.form.dataset.subject_table
    assert table.rowCount() == 8
    rows = {
        table.item(r, 0).text(): (table.item(r, 1).text(), table.item(r, 2).text())
        for r in range(table.rowCount())
    }
    assert rows["P1"] == ("ALL", "3") and rows["H4"] == ("HEM", "3")
    assert page.form.dataset.unreadable_toggle.isVisible()
    assert "1 file cannot be used" in page.form.dataset.unreadable_toggle.text()
    assert not page.form.dataset.unreadable_list.isVisible()
    qtbot.mouseClick(page.form.dataset.unreadable_toggle, Qt.LeftButton)
    assert page.form.dataset.unreadable_list.isVisible()
    assert "empty file" in page.form.dataset.unreadable_list.item(0).text()

    # ImageNet weights are not in the test's empty Keras home: Start says what is missing.
    assert not page.run_control.start_button.isEnabled()
    assert "efficientnetb0_notop.h5" in page.form.weights_status.text()
    page.form.set_weights_mode(WEIGHTS_NONE)
    assert page.run_control.start_button.isEnabled(), page.run_control.start_reason.text()
    assert page.errors == []


def test_unrecognized_folder_says_so(qtbot, page, tmp_path) -> None:
    folder = tmp_path / "holiday-photos"
    folder.mkdir()
    (folder / "notes.txt").write_text("not cells")
    page.form.set_weights_mode(WEIGHTS_NONE)

    outcome = _scan(qtbot, page, folder)

    assert outcome.error is not None
    text = page.form.dataset.preview_label.text()
    assert "not a labelled data set" in text and "layout not recognized" in text
    assert not page.form.dataset.subject_table.isVisible()
    assert not page.run_control.start_button.isEnabled()
    assert page.errors == []


def test_start_waits_with_the_reason_while_the_data_cannot_be_split(qtbot, page, tmp_path):
    page.form.set_weights_mode(WEIGHTS_NONE)  # so that only the data decides
    control = page.run_control

    _scan(qtbot, page, write_subjects(tmp_path / "few", n_all=4, n_hem=2))

    reason = control.start_reason.text()
    assert not control.start_button.isEnabled()
    assert reason == (
        "HEM has 2 subjects; a split by subject needs at least 3 per class "
        "(one each for training, validation and test)."
    )
    assert control.start_reason.isVisible()
    assert control.start_button.toolTip() == f"Cannot start: {reason}"
    assert "Training cannot use it yet" in control.status_label.text()
    # The split settings count: without a test part two subjects per class are enough.
    page.form.test_spin.setValue(0)
    assert control.start_button.isEnabled(), control.start_reason.text()
    assert control.start_reason.text() == "" and "Cannot" not in control.start_button.toolTip()
    page.form.test_spin.setValue(15)
    assert not control.start_button.isEnabled() and control.start_reason.text() == reason
    page.start_training()  # started anyway (a shortcut, a script): refused in the same words
    assert not control.is_running() and control.status_label.text() == reason

    _scan(qtbot, page, write_subjects(tmp_path / "enough", n_all=4, n_hem=3))

    assert control.start_button.isEnabled(), control.start_reason.text()
    assert control.start_reason.text() == ""
    assert "Cannot" not in control.start_button.toolTip()
    assert "Data set ready: 21 cells of 7 subjects." in control.status_label.text()
    assert page.errors == []


def test_one_class_or_a_failed_scan_keeps_start_disabled(qtbot, page, tmp_path, monkeypatch):
    import leukgui.gui.dataset_box as dataset_box

    page.form.set_weights_mode(WEIGHTS_NONE)
    control = page.run_control
    _scan(qtbot, page, write_subjects(tmp_path / "all-only", n_all=4, n_hem=0))
    assert not control.start_button.isEnabled()
    assert "both classes" in control.start_reason.text()

    def broken(*_args, **_kwargs):
        raise PermissionError("access denied to the folder")

    monkeypatch.setattr(dataset_box, "preview_dataset", broken)
    page.set_data_folder(tmp_path / "locked")
    qtbot.waitUntil(lambda: len(page.errors) == 1, timeout=30_000)
    assert not control.start_button.isEnabled()
    assert control.start_reason.text().startswith("Could not read the data set:")
    assert "access denied" in control.start_reason.text()


def test_a_dropped_folder_is_scanned(qtbot, page, dataset) -> None:
    from PySide6.QtCore import QMimeData, QPointF, QUrl
    from PySide6.QtGui import QDropEvent

    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(dataset))])
    event = QDropEvent(QPointF(10, 10), Qt.CopyAction, mime, Qt.LeftButton, Qt.NoModifier)
    with qtbot.waitSignal(page.scan_finished, timeout=60_000) as blocker:
        page.dropEvent(event)
    assert blocker.args[0].path == dataset
    assert page.form.dataset.folder_edit.text() == str(dataset)
    assert "24 cells" in page.form.dataset.preview_label.text()


# ------------------------------------------------------------------------------ training


def test_tiny_training_through_the_page(qtbot, page, dataset, tmp_path) -> None:
    _scan(qtbot, page, dataset)
    out = tmp_path / "out"
    _tiny_settings(page, out, epochs=1)
    started = []
    page.training_started.connect(lambda: started.append(True))
    assert page.run_control.start_button.isEnabled(), page.run_control.start_reason.text()

    with qtbot.waitSignal(page.training_finished, timeout=TRAIN_TIMEOUT_MS) as blocker:
        qtbot.mouseClick(page.run_control.start_button, Qt.LeftButton)
        assert (
            started and page.run_control.is_running() and page.run_control.cancel_button.isEnabled()
        )
    session = blocker.args[0]

    assert page.errors == []
    assert session is not None and not session.cancelled and len(session.runs) == 1
    run = session.runs[0]
    bundle = Path(run.bundle_path)
    assert bundle.is_file() and bundle.parent == out
    assert len(page.results.cards) == 1
    card = page.results.cards[0]
    assert bundle.name in card.text()
    assert "CANCELLED" not in card.text()
    assert "Balanced accuracy" in card.text() and "ROC AUC" in card.text()
    for plot, names in (
        (page.curves.loss_plot, ("loss", "val_loss")),
        (page.curves.metrics_plot, ("val_accuracy", "val_balanced_accuracy", "val_auc")),
    ):
        for name in names:
            assert len(plot.points(name)) >= 1, name
    assert "Finished" in page.run_control.status_label.text()
    assert (
        page.run_control.start_button.isEnabled() and not page.run_control.cancel_button.isEnabled()
    )

    qtbot.mouseClick(card.report_button, Qt.LeftButton)
    assert page.opened == [run.report_xlsx] and Path(run.report_xlsx).is_file()
    qtbot.mouseClick(card.folder_button, Qt.LeftButton)
    assert page.opened[-1] == Path(run.run_folder or bundle.parent)
    page.curves.reset("")
    qtbot.mouseClick(card.curves_button, Qt.LeftButton)
    assert "EfficientNetB0" in page.curves.loss_plot.accessibleName()
    assert len(page.curves.loss_plot.points("loss")) == len(run.history)

    # Not saved in the models folder: "Add to model list" installs it there, but a different
    # file of that name already in the folder is never replaced: the card says why.
    planted = user_models_dir() / bundle.name
    planted.parent.mkdir(parents=True, exist_ok=True)
    planted.write_bytes(b"someone else's model")
    registered = []
    page.bundle_registered.connect(registered.append)
    qtbot.mouseClick(card.register_button, Qt.LeftButton)
    assert not card.register_button.isEnabled()
    qtbot.waitUntil(card.register_button.isEnabled, timeout=120_000)
    assert "Not added to the model list" in card.text() and "rename" in card.text()
    assert "Not added" in page.run_control.status_label.text()
    assert planted.read_bytes() == b"someone else's model" and registered == []

    planted.unlink()
    with qtbot.waitSignal(page.bundle_registered, timeout=120_000) as added:
        qtbot.mouseClick(card.register_button, Qt.LeftButton)
    target = Path(added.args[0])
    assert target == planted and target.read_bytes() == bundle.read_bytes()
    assert not card.register_button.isEnabled() and "Added to the model list" in card.text()

    # The same bytes again: nothing copied, still in the list.
    with qtbot.waitSignal(page.bundle_registered, timeout=120_000) as again:
        page.add_to_model_list(bundle)
    assert Path(again.args[0]) == target
    assert "Already in the model list" in page.run_control.status_label.text()
    assert sorted(p.name for p in user_models_dir().iterdir()) == [bundle.name]  # no partials
    assert page.errors == []


def test_an_unusable_model_file_is_reported(qtbot, page, tmp_path) -> None:
    broken = tmp_path / f"broken{BUNDLE_SUFFIX}"
    broken.write_bytes(b"not a zip")
    page.add_to_model_list(broken)
    qtbot.waitUntil(lambda: len(page.errors) == 1, timeout=30_000)
    title, message, _details = page.errors[0]
    assert "could not be added" in title and message
    assert "Not added to the model list" in page.run_control.status_label.text()
    assert not (user_models_dir() / broken.name).exists()


def test_cancel_saves_the_best_epoch_marked_cancelled(qtbot, page, dataset, monkeypatch) -> None:
    import leukgui.gui.training_run as training_run

    # Tiny epochs take a fraction of a second and early stopping could end the run before
    # the click lands, so the worker waits after its first epoch until the test has cancelled.
    gate = threading.Event()

    class GatedThrottle(training_run.ProgressThrottle):
        def __call__(self, progress: TrainingProgress) -> None:
            super().__call__(progress)
            if progress.kind == "epoch":
                gate.wait(120)

    monkeypatch.setattr(training_run, "ProgressThrottle", GatedThrottle)
    _scan(qtbot, page, dataset)
    _tiny_settings(page, user_models_dir(), epochs=30)
    registered = []
    page.bundle_registered.connect(registered.append)

    with qtbot.waitSignal(page.training_finished, timeout=TRAIN_TIMEOUT_MS) as blocker:
        qtbot.mouseClick(page.run_control.start_button, Qt.LeftButton)
        try:
            qtbot.waitUntil(
                lambda: len(page.curves.loss_plot.points("loss")) >= 1, timeout=TRAIN_TIMEOUT_MS
            )
            qtbot.mouseClick(page.run_control.cancel_button, Qt.LeftButton)
        finally:
            gate.set()
        assert "CANCELLED" in page.run_control.status_label.text()
    session = blocker.args[0]

    assert page.errors == []
    assert session is not None and session.cancelled and len(session.runs) == 1
    run = session.runs[0]
    assert run.cancelled and len(run.history) == 1 and run.best_epoch == 1
    bundle = Path(run.bundle_path)
    assert bundle.is_file() and bundle.suffix == BUNDLE_SUFFIX
    assert read_manifest(bundle)["cancelled"] is True
    card = page.results.cards[0]
    assert "CANCELLED" in card.text() and bundle.name in card.text()
    assert "CANCELLED" in page.run_control.status_label.text()
    # Saved straight into the models folder, so it is registered at once.
    assert registered == [bundle] and bundle.parent == user_models_dir()
    assert not card.register_button.isEnabled()


def test_worker_errors_are_shown_never_silent(qtbot, page, dataset, monkeypatch) -> None:
    import training.run

    def broken(*args, **kwargs):
        raise RuntimeError("disk full while writing the bundle")

    monkeypatch.setattr(training.run, "train_session", broken)
    _scan(qtbot, page, dataset)
    _tiny_settings(page, user_models_dir(), epochs=1)
    with qtbot.waitSignal(page.training_finished, timeout=30_000) as blocker:
        qtbot.mouseClick(page.run_control.start_button, Qt.LeftButton)
    assert blocker.args[0] is None
    assert "disk full" in page.run_control.status_label.text()
    assert len(page.errors) == 1
    title, message, details = page.errors[0]
    assert "disk full" in message and "RuntimeError" in details
    assert page.run_control.start_button.isEnabled()


# ------------------------------------------------------------------------------ small parts


def test_weights_status_names_missing_files_and_sees_placed_ones(qtbot, page) -> None:
    from leukgui.core.backbones import keras_cache_dir

    page.form.set_backbones(["vgg16", "efficientnetb0"])
    page.form.set_weights_mode("imagenet")
    text = page.form.weights_status.text()
    assert "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5" in text
    assert "efficientnetb0_notop.h5" in text and str(keras_cache_dir()) in text
    keras_cache_dir().mkdir(parents=True, exist_ok=True)
    (keras_cache_dir() / "efficientnetb0_notop.h5").write_bytes(b"placed by the user")
    qtbot.mouseClick(page.form.weights_recheck, Qt.LeftButton)
    text = page.form.weights_status.text()
    assert "✓ EfficientNetB0" in text and "✗ VGG16" in text
    page.form.set_weights_mode("file")
    assert "one backbone" in page.form.weights_status.text()
    assert page.form.head_epochs_spin.isEnabled()  # transfer learning: head epochs apply
    page.form.set_weights_mode(WEIGHTS_NONE)
    assert not page.form.head_epochs_spin.isEnabled()


def test_live_progress_moves_the_bar_and_marks_fine_tuning(qtbot, page) -> None:
    from training.history import EpochLog

    control = page.run_control
    control.begin(["efficientnetb0"], batch_size=32)

    def epoch(n: int, phase: str) -> TrainingProgress:
        log = EpochLog(phase, n, 1 / n, 0.5, 1.2 / n, 0.6, 0.6, float("nan"), 1e-3, 3.0, 40.0)
        return TrainingProgress(
            "epoch", "efficientnetb0", phase, n, 6, 10, 10, 1 / n, 0.5, 40.0, epoch_log=log
        )

    for n in (1, 2, 3):
        control.on_progress(epoch(n, "head"))
    assert page.curves.loss_plot.marker() is None
    control.on_progress(
        TrainingProgress("batch", "efficientnetb0", "fine-tune", 4, 6, 5, 10, 0.3, 0.8, 40.0)
    )
    assert page.curves.loss_plot.marker() == (3.5, "fine-tune")
    assert page.curves.metrics_plot.marker() == (3.5, "fine-tune")
    assert "epoch 4 of 6" in page.run_control.progress_bar.format()
    assert page.run_control.progress_bar.value() == 583  # (3 + 5/10) / 6 of the way
    control.on_progress(epoch(4, "fine-tune"))
    assert [x for x, _ in page.curves.loss_plot.points("val_loss")] == [1, 2, 3, 4]
    assert math.isnan(page.curves.metrics_plot.points("val_auc")[-1][1])  # AUC undefined: a gap
    assert "Epoch 4 (fine-tuning the top block)" in page.run_control.status_label.text()


def test_state_round_trip_and_bad_values(qtbot, page, tmp_path) -> None:
    page.form.set_backbones(["vgg16", "efficientnetb2"])
    page.form.epochs_spin.setValue(12)
    page.form.size_spin.setValue(96)
    page.form.set_weights_mode(WEIGHTS_NONE)
    state = page.state()
    assert state["backbones"] == ["vgg16", "efficientnetb2"]
    assert state["epochs"] == 12 and state["input_size"] == 96 and state["weights"] == "none"

    other = TrainingPage()
    qtbot.addWidget(other)
    other.restore_state(state)
    assert other.state() == state
    assert other.form.more_widget.isVisibleTo(other.form)  # a "more" backbone opens that group

    other.restore_state(
        {"epochs": "many", "batch_size": -3, "backbones": ["alexnet"], "input_size": None}
    )
    assert (
        other.form.epochs_spin.value() == 12
        and other.form.batch_spin.value() == state["batch_size"]
    )
    assert other.form.selected_backbones() == ["vgg16", "efficientnetb2"]
    assert other.form.size_spin.value() == AUTO_SIZE and other.form.input_size() is None
    assert other.shutdown(10_000)


def test_page_module_does_not_import_tensorflow() -> None:
    code = (
        "import sys\n"
        "import leukgui.gui.training_page, leukgui.gui.plot, training.datasets\n"
        "print('tensorflow' in sys.modules, 'keras' in sys.modules)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "False"]


def test_progress_throttle_passes_every_epoch_and_few_batches() -> None:
    sent = []
    throttle = ProgressThrottle(sent.append, interval=10.0)

    def event(kind: str, batch: int) -> TrainingProgress:
        return TrainingProgress(kind, "efficientnetb0", "full", 1, 3, batch, 500, 0.5, 0.5, 9.0)

    for b in range(1, 501):
        throttle(event("batch", b))
    throttle(event("epoch", 500))
    throttle(event("epoch", 500))
    assert [p.kind for p in sent] == ["batch", "epoch", "epoch"]


def _render(plot: LinePlot, w: int = 420, h: int = 260) -> QImage:
    plot.resize(w, h)
    image = QImage(w, h, QImage.Format_ARGB32)
    image.fill(QColor("white"))
    plot.render(image)
    return image


def _has_color(image: QImage, color: str, tolerance: int = 40) -> bool:
    target = QColor(color)
    for y in range(0, image.height(), 1):
        for x in range(0, image.width(), 2):
            c = image.pixelColor(x, y)
            if (
                abs(c.red() - target.red())
                + abs(c.green() - target.green())
                + abs(c.blue() - target.blue())
                < tolerance
            ):
                return True
    return False


def test_line_plot_series_nan_single_point_and_empty(qtbot) -> None:
    plot = LinePlot("Loss", x_label="epoch", integer_x=True)
    qtbot.addWidget(plot)
    assert not _render(plot).isNull()  # empty: axes and "no data yet"

    plot.set_series("loss", [1, 2, 3, 4], [0.9, float("nan"), 0.5, 0.4])
    plot.add_point("val_loss", 1, 1.2)  # one point only
    plot.add_point("lonely", 2, float("nan"))  # nothing drawable at all
    plot.set_marker(2.5, "fine-tune")
    image = _render(plot)
    assert plot.legend_names() == ["loss", "val_loss", "lonely"]
    assert _has_color(image, PALETTE[0]) and _has_color(image, PALETTE[1])
    styles = {plot.series_style(n)[1:] for n in plot.legend_names()}
    assert len(styles) == 3  # line style and marker differ, not just colour
    assert plot.points("loss")[1][0] == 2 and math.isnan(plot.points("loss")[1][1])
    assert plot.marker() == (2.5, "fine-tune")

    plot.set_log_y(True)
    plot.set_series("zero", [1, 2, 3], [0.0, -1.0, 0.1])  # non-positive: gaps on a log axis
    assert not _render(plot, 300, 180).isNull()
    _render(plot, 60, 40)  # too small to draw a plot area: must not fail

    with pytest.raises(ValueError):
        plot.set_series("bad", [1, 2], [1.0])
    plot.clear()
    assert plot.legend_names() == [] and plot.marker() is None
    plot.add_point("one", 5, 3.0)
    assert not _render(plot).isNull()


def test_nice_ticks() -> None:
    assert nice_ticks(0, 1, 5) == pytest.approx([0, 0.2, 0.4, 0.6, 0.8, 1.0])
    assert nice_ticks(1, 30, 5, integer=True) == [10, 20, 30]
    assert all(t == int(t) for t in nice_ticks(1, 3, 8, integer=True))
    assert nice_ticks(2, 2) == [2]
    assert nice_ticks(float("nan"), 1) == []


# ------------------------------------------------------------------------------ honest splits


def test_unknown_subjects_hold_start_until_given_or_accepted(qtbot, page, tmp_path) -> None:
    """Files lying loose in all/ and hem/: no silent split by image. A folder-level rule or
    the explicit "Allow a split by image" tick lets training start, and the warning stays."""
    page.form.set_weights_mode(WEIGHTS_NONE)
    control = page.run_control
    folder = tmp_path / "flat"
    write_dataset(folder, 24, 8, fmt="png", layout="folders", size=64)

    preview = _scan(qtbot, page, folder)

    assert preview.scan.image_subjects == 48
    reason = control.start_reason.text()
    assert not control.start_button.isEnabled()
    assert reason.startswith("Subjects (patients) are unknown for 48 of 48 cells")
    assert "Allow a split by image" in reason
    assert any("by image" in w for w in preview.warnings())

    page.form.split_by_image_check.setChecked(True)
    assert control.start_button.isEnabled(), control.start_reason.text()
    warnings = page.form.split_warnings_label.text()
    assert page.form.split_warnings_label.isVisibleTo(page)
    assert "Subjects unknown for 48 cells" in warnings and "optimistic" in warnings
    assert page.form.split_options().split_by == "image"
    assert control.status_label.text() == (
        "Data set ready: 48 cells of 48 images without a known subject."
    )
    page.form.split_by_image_check.setChecked(False)
    assert "Training cannot use it yet" in control.status_label.text()
    assert not control.start_button.isEnabled()

    # Give subjects by a file-name pattern: syn_all_0007.png -> subject "7" (one cell each is
    # silly, but it is what the user asked for, and the split is then by subject).
    with qtbot.waitSignal(page.scan_finished, timeout=60_000) as blocker:
        page.form.subject_combo.setCurrentIndex(page.form.subject_combo.findData("pattern"))
        page.form.subject_pattern_edit.setText(r"_(\d)\d*\.png$")
        page.form.subject_pattern_edit.editingFinished.emit()
    rescanned = blocker.args[0]
    assert rescanned.scan.image_subjects == 0
    assert {r.subject_from for r in rescanned.scan.records} == {"pattern"}
    assert page.form.dataset.subject_rule().pattern == r"_(\d)\d*\.png$"
    assert "unknown" not in control.start_reason.text()


def test_a_bad_subject_pattern_is_the_start_reason(qtbot, page, dataset) -> None:
    page.form.set_weights_mode(WEIGHTS_NONE)
    _scan(qtbot, page, dataset)
    page.form.subject_combo.setCurrentIndex(page.form.subject_combo.findData("pattern"))
    page.form.subject_pattern_edit.setText("(unclosed")
    page.form.subject_pattern_edit.editingFinished.emit()
    reason = page.run_control.start_reason.text()
    assert reason.startswith("Subjects: subject pattern '(unclosed' is not valid")
    assert not page.run_control.start_button.isEnabled()


def test_small_splits_are_warned_about_before_start(qtbot, page, tmp_path) -> None:
    """4 + 3 subjects can be split, but the parts hold one subject per class: say so."""
    page.form.set_weights_mode(WEIGHTS_NONE)
    _scan(qtbot, page, write_subjects(tmp_path / "small", n_all=4, n_hem=3))
    assert page.run_control.start_button.isEnabled()
    text = page.form.split_warnings_label.text()
    assert page.form.split_warnings_label.isVisibleTo(page)
    assert "The test part holds only 1 ALL subject (fewer than 3)" in text
    assert "The validation part holds only" in text
