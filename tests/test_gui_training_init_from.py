"""The Training tab's "Start from: <model>" (a fine-tune, `TrainConfig.init_from`) and its
"Parent vs new" view: the form locks what the parent fixes and says why, a missing parent
file holds Start with the reason, and after a fine-tune the tab shows the parent against
the new model on the same test cells, without adopting anything.
"""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import math  # noqa: E402
import shutil  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
from PySide6.QtCore import Qt  # noqa: E402

from leukgui.core.paths import user_models_dir  # noqa: E402
from leukgui.core.synthetic import write_dataset  # noqa: E402
from leukgui.gui.parent_comparison_view import ParentComparisonView  # noqa: E402
from leukgui.gui.training_form import START_IMAGENET, WEIGHTS_NONE  # noqa: E402
from leukgui.gui.training_page import TrainingPage  # noqa: E402
from training.comparison import compare_with_parent  # noqa: E402
from training.scoring import Predictions, evaluate_predictions  # noqa: E402
from training.trainer import INIT_FROM_DEFAULTS, INIT_FROM_WEIGHTS  # noqa: E402

TRAIN_TIMEOUT_MS = 240_000


@pytest.fixture
def installed(tiny_bundle_path: Path) -> Path:
    """The tiny bundle (EfficientNetB0, 64 px) in the user's models folder."""
    folder = user_models_dir()
    folder.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copy2(tiny_bundle_path, folder / tiny_bundle_path.name))


@pytest.fixture
def page(qtbot, monkeypatch):
    page = TrainingPage()
    qtbot.addWidget(page)
    page.errors = []
    monkeypatch.setattr(page, "show_error_dialog", lambda *args: page.errors.append(args))
    monkeypatch.setattr(page, "open_path", lambda path: True)
    page.resize(1280, 800)
    page.show()
    yield page
    assert page.shutdown(120_000), "a worker thread did not finish"


def _scan(qtbot, page: TrainingPage, folder: Path) -> None:
    with qtbot.waitSignal(page.scan_finished, timeout=60_000):
        page.set_data_folder(folder)


def _choose(form, path: Path) -> None:
    """Pick `path` in "Start from" as a user does: its entry in the list."""
    index = form.start_combo.findData(str(path))
    assert index > 0, [form.start_combo.itemText(i) for i in range(form.start_combo.count())]
    form.start_combo.setCurrentIndex(index)


# ------------------------------------------------------------------------------ the form


def test_the_demo_model_can_be_fine_tuned_with_its_notice_said(qtbot, page) -> None:
    """Fine-tuning the demo is how a new user tries the loop; the form says the new model
    keeps the DEMO notice (as the trainer records it) and does not refuse."""
    form = page.form
    form.refresh_models()
    texts = [form.start_combo.itemText(i) for i in range(form.start_combo.count())]
    demo = next(i for i, t in enumerate(texts) if t.endswith("DEMO"))
    form.start_combo.setCurrentIndex(demo)
    assert "keeps the DEMO notice on every report" in form.start_status.text()
    assert "demo" not in form.problem().lower()
    assert form.make_config().init_from is not None


def test_choosing_a_model_locks_what_the_parent_fixes(qtbot, page, installed) -> None:
    from leukgui.core.model_registry import adopt

    adopt(installed, "Dr. Test")  # the model in use is marked as such
    form = page.form
    form.refresh_models()
    texts = [form.start_combo.itemText(i) for i in range(form.start_combo.count())]
    assert texts[0] == "ImageNet (transfer learning)" and texts[-1] == "Other model file…"
    assert "tiny-test v1 · adopted (in use)" in texts
    demo = next(i for i, t in enumerate(texts) if t.endswith("DEMO"))  # choosable, marked
    assert form.start_combo.model().item(demo).isEnabled()
    assert "keeps the DEMO notice" in form.start_combo.itemData(demo, Qt.ToolTipRole)
    form.set_backbones(["vgg16", "resnet50"])
    form.stain_combo.setCurrentIndex(form.stain_combo.findData("reinhard"))
    form.epochs_spin.setValue(17)

    _choose(form, installed)

    assert form.selected_backbones() == ["efficientnetb0"]
    for name, check in form.backbone_checks.items():
        assert not check.isEnabled()
        assert "keeps its backbone (EfficientNetB0)" in check.toolTip(), name
    assert not form.weights_combo.isEnabled() and "parent model's own weights" in (
        form.weights_combo.toolTip()
    )
    assert not form.stain_combo.isEnabled() and form.stain_combo.currentData() == "none"
    assert "own stain normalisation" in form.stain_combo.toolTip()
    assert not form.size_spin.isEnabled() and form.input_size() == 64
    assert form.epochs_spin.value() == INIT_FROM_DEFAULTS["epochs"]
    assert form.head_epochs_spin.value() == INIT_FROM_DEFAULTS["head_epochs"]
    assert "Fine-tune" in form.start_status.text() and form.start_status.isVisible()
    assert form.stains() is None

    config = form.make_config()
    assert config.init_from == str(installed) and config.weights == INIT_FROM_WEIGHTS
    assert config.backbone == "efficientnetb0" and config.size == 64 and config.stain == "none"
    assert (config.head_lr, config.fine_tune_lr) == (
        INIT_FROM_DEFAULTS["head_lr"],
        INIT_FROM_DEFAULTS["fine_tune_lr"],
    )
    assert not config.mixed_precision

    # ImageNet again: today's behaviour and the settings the model choice had replaced
    form.start_combo.setCurrentIndex(form.start_combo.findData(START_IMAGENET))
    assert form.selected_backbones() == ["vgg16", "resnet50"]
    assert all(check.isEnabled() for check in form.backbone_checks.values())
    assert form.weights_combo.isEnabled() and form.stain_combo.isEnabled()
    assert form.stain_combo.currentData() == "reinhard" and form.epochs_spin.value() == 17
    assert form.size_spin.isEnabled() and not form.start_status.isVisible()
    form.set_weights_mode(WEIGHTS_NONE)
    config = form.make_config()
    assert config.init_from is None and config.weights == "none" and config.backbone == "vgg16"


def test_the_choice_survives_a_restart(qtbot, page, installed) -> None:
    page.form.refresh_models()
    _choose(page.form, installed)
    page.form.epochs_spin.setValue(3)  # a user's own number is kept, not the schedule's
    state = page.state()
    assert state["start_from"] == str(installed)

    other = TrainingPage()
    qtbot.addWidget(other)
    other.restore_state(state)
    assert other.state() == state
    assert other.form.init_from() == installed and other.form.epochs_spin.value() == 3
    assert not other.form.backbone_checks["vgg16"].isEnabled()
    other.restore_state({**state, "start_from": ""})
    assert other.form.init_from() is None and other.form.backbone_checks["vgg16"].isEnabled()
    assert other.shutdown(10_000)


def test_a_missing_or_broken_parent_holds_start_with_the_reason(
    qtbot, page, installed, tmp_path
) -> None:
    data = tmp_path / "cells"
    write_dataset(data, 8, 4, fmt="png", layout="cnmc", subjects=4, size=32)
    _scan(qtbot, page, data)
    page.form.test_spin.setValue(25)
    page.form.validation_spin.setValue(25)
    page.form.refresh_models()
    _choose(page.form, installed)
    assert page.run_control.start_button.isEnabled(), page.run_control.start_reason.text()

    installed.unlink()  # deleted while chosen: the next look says so, nothing crashes
    page.form.check_weights()
    reason = page.run_control.start_reason.text()
    assert "is gone" in reason and str(installed) in reason
    assert not page.run_control.start_button.isEnabled()
    assert "is gone" in page.form.start_status.text()
    page.form.refresh_models()  # still chosen, still explained: never silently ImageNet
    assert page.form.init_from() == installed and "is gone" in page.form.problem()

    broken = tmp_path / "broken.leukmodel"
    broken.write_bytes(b"not a zip")
    page.form.set_init_from(broken)
    assert "cannot be read" in page.run_control.start_reason.text()
    assert not page.run_control.start_button.isEnabled()
    with pytest.raises(ValueError):
        page.form.make_config()

    page.form.set_weights_mode(WEIGHTS_NONE)  # no ImageNet files in the test's Keras home
    page.form.set_init_from(None)
    assert page.run_control.start_button.isEnabled(), page.run_control.start_reason.text()


def test_other_model_file_asks_for_one_and_a_cancel_keeps_the_choice(
    qtbot, page, tiny_bundle_path, monkeypatch
) -> None:
    form = page.form
    answers = iter(["", str(tiny_bundle_path)])
    monkeypatch.setattr(form, "_pick_model_file", lambda: next(answers))
    other = form.start_combo.findData("other-file")
    form.start_combo.setCurrentIndex(other)  # cancelled
    assert form.start_combo.currentData() == START_IMAGENET
    form.start_combo.setCurrentIndex(form.start_combo.findData("other-file"))
    assert form.init_from() == tiny_bundle_path
    assert "tiny-test v1" in form.start_combo.currentText()
    assert form.make_config().init_from == str(tiny_bundle_path)


# ------------------------------------------------------------------------------ the view


def _evaluation(preds: Predictions, part: str):
    return evaluate_predictions(preds, 0.5, (0.4, 0.6), part, resamples=100)


def _comparison(folder: Path):
    """A ParentComparison from real Evaluations on 4 subjects; the cells are image files
    except one, which is gone."""
    files = write_dataset(folder, 6, 2, fmt="png", layout="cnmc", subjects=2, size=40)
    files = sorted(files, key=lambda p: p.name)
    paths = [str(p) for p in files]
    subjects = [p.name.split("_")[1] for p in files]
    truth = ["ALL" if p.name.endswith("_all.png") else "HEM" for p in files]
    new_p = [0.9 if t == "ALL" else 0.1 for t in truth]
    parent_p = [(1 - v if i % 3 == 0 else v) for i, v in enumerate(new_p)]  # 4 wrong
    files[0].unlink()  # moved away since training
    new = Predictions(paths, subjects, truth, new_p)
    parent = Predictions(paths, subjects, truth, parent_p)
    return compare_with_parent(
        _evaluation(new, "test"),
        _evaluation(parent, "test (parent)"),
        {"name": "labmodel", "version": "2026-11-01", "bundle_sha256": "ab" * 32},
        resamples=200,
    )


def test_the_view_shows_the_comparison_numbers(qtbot, tmp_path) -> None:
    c = _comparison(tmp_path / "cells")
    view = ParentComparisonView()
    qtbot.addWidget(view)
    view.resize(900, 600)
    bundle = tmp_path / "new.leukmodel"
    bundle.write_bytes(b"x")
    view.show_comparison(c, bundle)
    view.show()

    text = view.text()
    p = c.paired
    assert f"{100 * p.difference:+.1f} points" in text
    low, high = p.interval
    assert math.isfinite(low) and f"CI {100 * low:+.1f} to {100 * high:+.1f}" in text
    assert f"McNemar p = <b>{p.mcnemar_p:.3f}</b>" in text or "p = <b><0.001" in text
    assert c.verdict in text and "labmodel v2026-11-01" in text
    assert "Not adopted" in view.adoption_label.text()
    assert f"{100 * c.parent.metrics.balanced_accuracy:.1f}%" in text
    assert f"{100 * c.new.metrics.balanced_accuracy:.1f}%" in text
    assert len(c.disagreements) == 4 and view.thumbnail_count() == 4
    assert f"{len(c.disagreements)} test cells the two models label differently" in text
    first = c.disagreements[0]
    assert view.missing_images == [first.path]  # the deleted file: a placeholder, no crash
    assert "missing" in view.cells_table.item(0, 0).toolTip()
    assert not view.cells_table.item(0, 0).icon().isNull()
    assert view.cells_table.item(1, 0).toolTip() == c.disagreements[1].path
    assert view.adopt_button.isEnabled()
    adopt = []
    view.adopt_requested.connect(adopt.append)
    qtbot.mouseClick(view.adopt_button, Qt.LeftButton)
    assert adopt == [bundle]

    view.show_missing("labmodel v2026-11-01", "there is no test part.")
    assert not view.metrics_table.isVisible() and "no test part" in view.reason_label.text()


# ------------------------------------------------------------------------------ end to end


def test_a_fine_tune_through_the_tab_shows_the_comparison(
    qtbot, page, installed, tmp_path, monkeypatch
) -> None:
    data = tmp_path / "cells"
    write_dataset(data, 16, 5, fmt="png", layout="cnmc", subjects=4, size=64)
    _scan(qtbot, page, data)
    form = page.form
    form.refresh_models()
    _choose(form, installed)
    form.epochs_spin.setValue(1)
    form.head_epochs_spin.setValue(1)
    form.batch_spin.setValue(8)
    form.validation_spin.setValue(25)
    form.test_spin.setValue(25)
    form.output_edit.setText(str(user_models_dir()))
    import training.trainer

    original = training.trainer.TrainConfig.__post_init__

    def quick(self) -> None:  # a quick run: no ONNX graph, a short bootstrap
        self.inference_graph = False
        self.bootstrap_resamples = 200
        original(self)

    monkeypatch.setattr(training.trainer.TrainConfig, "__post_init__", quick)
    assert page.run_control.start_button.isEnabled(), page.run_control.start_reason.text()
    assert not page.result_tabs.isTabVisible(1)

    with qtbot.waitSignal(page.training_finished, timeout=TRAIN_TIMEOUT_MS) as blocker:
        qtbot.mouseClick(page.run_control.start_button, Qt.LeftButton)
    session = blocker.args[0]

    assert page.errors == [] and session is not None and len(session.runs) == 1
    c = session.parent_comparison
    assert c is not None, session.warnings
    assert page.result_tabs.isTabVisible(1) and page.result_tabs.currentIndex() == 1
    view = page.parent_view
    assert view.comparison is c and "tiny-test v1" in view.title.text()
    assert c.verdict in view.text() and view.thumbnail_count() == len(c.disagreements)
    assert view.missing_images == []
    # never adopted by training; the button only opens the question
    from leukgui.core.model_registry import history

    assert history() == []
    new_bundle = Path(session.runs[0].bundle_path)
    assert view.new_bundle == new_bundle and view.adopt_button.isEnabled()
    qtbot.mouseClick(view.adopt_button, Qt.LeftButton)
    dialog = page.adopt_dialog
    assert dialog is not None and dialog.isVisible() and "Use" in dialog.question.text()
    dialog.reject()
    assert history() == []


def test_the_wheel_scrolls_past_unfocused_fields_without_changing_them(qtbot, page) -> None:
    """Scrolling the long form must not change epochs or the starting model unnoticed."""
    from PySide6.QtCore import QPoint, QPointF
    from PySide6.QtGui import QWheelEvent
    from PySide6.QtWidgets import QApplication

    form = page.form
    spin = form.epochs_spin
    before = spin.value()

    def wheel() -> None:
        event = QWheelEvent(
            QPointF(5, 5), QPointF(spin.mapToGlobal(QPoint(5, 5))), QPoint(0, 0),
            QPoint(0, -120), Qt.NoButton, Qt.NoModifier, Qt.ScrollUpdate, False,
        )  # fmt: skip
        QApplication.sendEvent(spin, event)

    spin.clearFocus()
    wheel()
    assert spin.value() == before
    start = form.start_combo.currentIndex()
    QApplication.sendEvent(
        form.start_combo,
        QWheelEvent(
            QPointF(5, 5), QPointF(5, 5), QPoint(0, 0), QPoint(0, -120),
            Qt.NoButton, Qt.NoModifier, Qt.ScrollUpdate, False,
        ),
    )  # fmt: skip
    assert form.start_combo.currentIndex() == start
    spin.setFocus()
    if spin.hasFocus():  # offscreen platforms may refuse focus to a hidden window
        wheel()
        assert spin.value() != before


def test_the_data_sets_guard_rails_show_before_start(qtbot, page, tmp_path: Path) -> None:
    """A lab data set folder (as Review > Add… writes it: dataset.csv + history.csv) is read
    as it is, and its guard rails (few subjects, one reviewer) are on screen before Start."""
    import csv

    from training.datasets import read_dataset

    cells = tmp_path / "cells"
    write_dataset(cells, 8, 3, fmt="png", layout="cnmc", subjects=3, size=48)
    lab = tmp_path / "lab"
    lab.mkdir()
    rows = [[str(r.path), r.label, r.subject, "Ada"] for r in read_dataset(cells).records]
    for name in ("dataset.csv", "history.csv"):
        with open(lab / name, "w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(["path", "label", "subject", "reviewer"])
            writer.writerows(rows)
    _scan(qtbot, page, lab)
    assert page.form.dataset.problem() == ""
    shown = page.form.split_warnings_label.text()
    assert page.form.split_warnings_label.isVisible()
    assert "ALL has 3 subject(s) in the data set" in shown
    assert "labelled by one reviewer (Ada" in shown
