"""What the window says about a model and about itself: the model card and the About text.

Kept apart from the window so the texts can be read and tested without building one.
"""

from __future__ import annotations

import html
import json
import platform
import sys

from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QLabel,
    QLineEdit,
    QTextBrowser,
    QVBoxLayout,
    QWidget,
)

from leukgui import APP_NAME, __version__
from leukgui.core.bundle import BundleInfo
from leukgui.core.formatting import edges_text
from leukgui.core.results import DEMO_NOTICE
from leukgui.gui.theme import status_colour
from training.stats import FEW_SUBJECTS_PER_CLASS

__all__ = [
    "AdoptionDialog",
    "about_html",
    "adoption_html",
    "model_card_dialog",
    "model_card_html",
    "score_parts",
]


def _warning_html(text: str) -> str:
    """A bold warning line in the theme's warning colour (legible on light and dark)."""
    return f"<p style='color:{status_colour('warning')}'><b>{html.escape(text)}</b></p>"


# (manifest key, label, kind): kinds pct (shown as %), prob (3 decimals), int
_SCORES = (
    ("balanced_accuracy", "Balanced accuracy", "pct"),
    ("recall", "Sensitivity (recall, ALL)", "pct"),
    ("specificity", "Specificity (HEM)", "pct"),
    ("accuracy", "Accuracy", "pct"),
    ("precision", "Precision", "pct"),
    ("f1", "F1 (ALL)", "pct"),
    ("weighted_f1", "Weighted F1 (C-NMC ranking)", "pct"),
    ("roc_auc", "ROC AUC", "prob"),
    ("expected_calibration_error", "Calibration error (ECE)", "prob"),
)


def _value_text(value: object, kind: str) -> str:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return "n/a" if value is None else str(value)
    if kind == "pct":
        return f"{100 * value:.1f}%"
    if kind == "int":
        return f"{value:,.0f}"
    return f"{value:.3f}"


def _interval_text(interval: object, kind: str) -> str:
    if not isinstance(interval, (list, tuple)) or len(interval) != 2:
        return ""
    low, high = interval
    if not all(isinstance(v, (int, float)) for v in (low, high)):
        return ""
    return f"{_value_text(low, kind)} – {_value_text(high, kind)}"


def score_parts(metrics: dict) -> list[tuple[str, dict]]:
    """The manifest's scores as (part, scores) pairs, test first.

    New manifests keep each part's scores under its own key; older ones put the main scores at
    the top level, named by `evaluated_on`, with the validation scores under "validation".
    Validation scores are never returned as anything but "validation".
    """
    parts: list[tuple[str, dict]] = []
    if isinstance(metrics.get("test"), dict):
        parts.append(("test", metrics["test"]))
    top = {k: v for k, v in metrics.items() if not isinstance(v, dict) or k == "confusion_matrix"}
    on = str(top.get("evaluated_on", ""))
    if not parts and any(k in top for k, _, _ in _SCORES):
        parts.append(
            ("validation" if on == "validation" else ("test" if on == "test" else on), top)
        )
    if isinstance(metrics.get("validation"), dict) and not any(p == "validation" for p, _ in parts):
        parts.append(("validation", metrics["validation"]))
    return parts


def _part_heading(part: str, scores: dict) -> str:
    cells = scores.get("n")
    subjects = scores.get("subjects")
    size = ""
    if isinstance(cells, int):
        size = f"{cells:,} cells" + (
            f" of {subjects:,} subjects" if isinstance(subjects, int) else ""
        )
    if part == "test":
        return f"Test scores — held-out subjects{': ' + size if size else ''}"
    if part == "validation":
        return (
            f"Validation scores{' — ' + size if size else ''} (these cells chose the best epoch, "
            "the threshold and the band: not held-out, optimistic)"
        )
    return f"Scores on {part}" + (f" — {size}" if size else "")


def _scores_html(part: str, scores: dict) -> list[str]:
    intervals = scores.get("intervals") or {}
    boot = scores.get("bootstrap") or {}
    out = [f"<h3>{html.escape(_part_heading(part, scores))}</h3><table cellspacing=4>"]
    level = scores.get("subject_level") or {}
    few = ""
    if isinstance(level, dict) and level.get("n"):
        cm = level.get("confusion_matrix") or {}
        n_all = int(cm.get("tp", 0)) + int(cm.get("fn", 0))
        n_hem = int(cm.get("tn", 0)) + int(cm.get("fp", 0))
        for key, label, of in (
            ("accuracy", "Subject-level accuracy", f"{int(level['n'])} subjects"),
            ("sensitivity", "Subject-level sensitivity", f"{n_all} ALL subjects"),
            ("specificity", "Subject-level specificity", f"{n_hem} HEM subjects"),
        ):
            if level.get(key) is None:
                continue
            ci = _interval_text((level.get("intervals") or {}).get(key), "pct")
            ci_html = f" <span style='color:gray'>(95% CI {html.escape(ci)})</span>" if ci else ""
            out.append(
                f"<tr><td>{html.escape(label)}</td><td><b>"
                f"{html.escape(_value_text(level[key], 'pct'))}</b>{ci_html} of "
                f"{html.escape(of)}</td></tr>"
            )
        if min(n_all, n_hem) < FEW_SUBJECTS_PER_CLASS:
            few = (
                f"Caution: only {n_all} ALL and {n_hem} HEM subjects; a bootstrap over so few "
                "subjects understates the uncertainty: the subject-level exact intervals are "
                "the safer guide."
            )
    has_interval = False
    for key, label, kind in _SCORES:
        if key not in scores or scores[key] is None:
            continue
        ci = _interval_text(intervals.get(key), kind)
        has_interval = has_interval or bool(ci)
        ci_html = f" <span style='color:gray'>(95% CI {html.escape(ci)})</span>" if ci else ""
        out.append(
            f"<tr><td>{html.escape(label)}</td><td><b>{html.escape(_value_text(scores[key], kind))}"
            f"</b>{ci_html}</td></tr>"
        )
    out.append("</table>")
    if has_interval and boot:
        out.append(
            f"<p><i>95% CIs: bootstrap over {html.escape(str(boot.get('unit', 'subject')))}s "
            f"({html.escape(str(boot.get('resamples', '?')))} resamples, seed "
            f"{html.escape(str(boot.get('seed', '?')))}), since a subject's cells are not "
            "independent; subject-level rows: exact intervals over subjects.</i></p>"
        )
    if few:
        out.append(_warning_html(few))
    return out


def model_card_html(info: BundleInfo) -> str:
    """The manifest as a readable card: identity, each score under the part it came from, and
    the training data, so a validation score is never read as a held-out one."""
    m = info.manifest
    rows = [
        ("Name", f"{info.name} v{info.version}"),
        ("Backbone", f"{info.backbone}, {m.get('input_size')} px"),
        ("Created", m.get("created", "")),
        ("Decision threshold", f"{info.threshold:.3f}"),
        ("Uncertainty band", edges_text(*info.uncertainty_band, sep=" – ")),
        ("File", str(info.path)),
        ("Model SHA-256 (manifest and weights)", info.sha256),
        ("model.keras SHA-256", info.weights_sha256),
        ("Description", m.get("description", "")),
    ]
    if info.lineage:  # a model fine-tuned from another (`leukgui train --init-from`)
        rows.insert(2, ("Lineage", info.lineage))
    calibration = m.get("calibration") or {}
    if isinstance(calibration, dict) and calibration.get("temperature") is not None:
        rows.insert(
            5,
            (
                "Calibration",
                f"temperature {float(calibration['temperature']):.3f}"
                f" (fitted on {calibration.get('fitted_on', 'validation')})",
            ),
        )
    stain = m.get("stain_normalisation") or {}
    if isinstance(stain, dict) and stain.get("method"):
        rows.insert(5, ("Stain normalisation", f"{stain['method']} ({stain.get('fitted_on', '')})"))
    out = [f"<h2>{html.escape(info.name)} v{html.escape(info.version)}</h2>"]
    if info.demo:
        out.append(_warning_html(DEMO_NOTICE))
    elif info.score_warning:
        out.append(_warning_html(f"Caution: {info.score_warning}."))
    data = m.get("training_data") or {}
    split = data.get("split") or {} if isinstance(data, dict) else {}
    if isinstance(split, dict) and split.get("split_by") == "image":
        out.append(
            _warning_html(
                "Split by image: the subjects (patients) of these cells were not known, so cells "
                "of one patient may be in both training and test. Scores are optimistic."
            )
        )
    out.append("<table cellspacing=4>")
    for key, value in rows:
        out.append(f"<tr><td><b>{html.escape(key)}</b></td><td>{html.escape(str(value))}</td></tr>")
    out.append("</table>")
    metrics = m.get("metrics") or {}
    parts = score_parts(metrics) if isinstance(metrics, dict) else []
    if parts and not any(p != "validation" for p, _ in parts):
        out.append(_warning_html("No test part: this model has no held-out scores."))
    note = str(metrics.get("note") or "") if isinstance(metrics, dict) else ""
    if note and not note.startswith("No test part"):  # that one is the warning above
        out.append(f"<p><i>{html.escape(note)}</i></p>")
    warnings = data.get("warnings") if isinstance(data, dict) else None
    if isinstance(warnings, list) and warnings:
        out.append("<h3>Warnings when it was trained</h3><ul>")
        out.extend(f"<li>{html.escape(str(w))}</li>" for w in warnings)
        out.append("</ul>")
    for part, scores in parts:
        out.extend(_scores_html(part, scores))
    if data:
        shown = {k: v for k, v in data.items() if k not in ("settings", "warnings")}
        if isinstance(shown.get("split"), dict):
            shown["split"] = {k: v for k, v in shown["split"].items() if k != "files"}
        out.append("<h3>Training data</h3><pre>")
        out.append(html.escape(json.dumps(shown, indent=1, ensure_ascii=False)[:6000]))
        out.append("</pre>")
    return "".join(out)


def model_card_dialog(info: BundleInfo, parent: QWidget | None = None) -> QDialog:
    """A non-modal dialog showing `model_card_html(info)`; the caller opens it."""
    dialog = QDialog(parent)
    dialog.setWindowTitle(f"Model card — {info.name} v{info.version}")
    layout = QVBoxLayout(dialog)
    browser = QTextBrowser()
    browser.setHtml(model_card_html(info))
    layout.addWidget(browser)
    buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
    buttons.rejected.connect(dialog.reject)
    layout.addWidget(buttons)
    dialog.resize(640, 560)
    return dialog


def about_html(info: BundleInfo | None) -> str:
    """Versions, and the not-for-diagnosis note when a demo model is active."""
    import PySide6
    from PySide6.QtCore import qVersion

    tf = sys.modules.get("tensorflow")
    tf_text = getattr(tf, "__version__", "not loaded (loads only when an analysis runs on it)")
    parts = [
        f"<h2>{APP_NAME} {__version__}</h2>",
        "<p>Classifies white blood cells as ALL (leukemic blast) or HEM (normal) with Grad-CAM "
        "heatmaps, for review by trained staff.</p>",
        "<p><b>Not a medical device.</b> Results must be reviewed and signed by a qualified "
        "person.</p>",
    ]
    if info is not None and info.demo:
        parts.append(_warning_html(DEMO_NOTICE))
    if info is not None:
        parts.append(
            f"<p>Model: {info.name} v{info.version} ({info.backbone}), SHA-256 "
            f"{info.sha256[:16]}…</p>"
        )
    parts.append(
        f"<p>Python {platform.python_version()} · Qt {qVersion()} · PySide6 "
        f"{PySide6.__version__} · TensorFlow {tf_text}</p>"
    )
    return "".join(parts)


def adoption_html(info: BundleInfo) -> str:
    """What a person reads before adopting a model: its identity, lineage and, for a
    fine-tuned model, the parent-vs-new comparison recorded in its file."""
    from leukgui.core.model_registry import comparison_lines

    esc = html.escape
    out = [
        f"<h3>{esc(info.name)} v{esc(info.version)}</h3>",
        f"<p>Backbone {esc(info.backbone)} · SHA-256 <code>{esc(info.sha256)}</code></p>",
        f"<p><b>Lineage:</b> {esc(info.lineage or 'not fine-tuned from another model')}</p>",
    ]
    lines = comparison_lines(info.manifest)
    if lines:
        out.append("<p><b>Parent vs new model</b> (on the new split's test cells):</p><ul>")
        out.extend(
            _warning_html(line) if line.startswith("CAUTION") else f"<li>{esc(line)}</li>"
            for line in lines
        )
        out.append("</ul>")
    else:
        out.append(
            "<p><b>No comparison with a parent model is recorded in this model file</b>: "
            "nothing here says whether it is better or worse than the model in use.</p>"
        )
    if info.demo:
        out.append(_warning_html(DEMO_NOTICE))
    elif info.score_warning:
        out.append(_warning_html(f"Caution: {info.score_warning}"))
    return "".join(out)


class AdoptionDialog(QDialog):
    """ "Use <name> <version> for the next analyses?" with the evidence and the reviewer's
    name. Accepting records nothing by itself: the window records the adoption."""

    def __init__(self, info: BundleInfo, reviewer: str = "", parent: QWidget | None = None):
        super().__init__(parent)
        self.info = info
        self.setWindowTitle(f"Use this model — {info.name} v{info.version}")
        layout = QVBoxLayout(self)
        self.browser = QTextBrowser()
        self.browser.setHtml(adoption_html(info))
        layout.addWidget(self.browser)
        self.question = QLabel(f"Use {info.name} {info.version} for the next analyses?")
        self.question.setWordWrap(True)
        layout.addWidget(self.question)
        form = QFormLayout()
        self.reviewer_edit = QLineEdit(reviewer)
        self.reviewer_edit.setPlaceholderText("who decides (recorded with the date)")
        form.addRow("Reviewer:", self.reviewer_edit)
        layout.addLayout(form)
        self.buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel
        )
        self.ok_button = self.buttons.button(QDialogButtonBox.StandardButton.Ok)
        self.ok_button.setText("Use this model")
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)
        layout.addWidget(self.buttons)
        self.reviewer_edit.textChanged.connect(self._update_ok)
        self._update_ok()
        self.resize(600, 460)

    def reviewer(self) -> str:
        return " ".join(self.reviewer_edit.text().split())

    def _update_ok(self) -> None:
        self.ok_button.setEnabled(bool(self.reviewer()))
