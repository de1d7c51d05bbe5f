"""What the window says about a model and about itself: the model card and the About text.

Kept apart from the window so the texts can be read and tested without building one.
"""

from __future__ import annotations

import html
import json
import platform
import sys

from PySide6.QtWidgets import QDialog, QDialogButtonBox, QTextBrowser, QVBoxLayout, QWidget

from leukgui import APP_NAME, __version__
from leukgui.core.bundle import BundleInfo
from leukgui.core.results import DEMO_NOTICE
from leukgui.gui.theme import status_colour

__all__ = ["about_html", "model_card_dialog", "model_card_html"]


def _warning_html(text: str) -> str:
    """A bold warning line in the theme's warning colour (legible on light and dark)."""
    return f"<p style='color:{status_colour('warning')}'><b>{html.escape(text)}</b></p>"


_SCORES = (
    "evaluated_on",
    "n",
    "accuracy",
    "precision",
    "recall",
    "specificity",
    "f1",
    "balanced_accuracy",
    "roc_auc",
    "expected_calibration_error",
)


def model_card_html(info: BundleInfo) -> str:
    """The manifest as a readable card (training data, held-out scores, SHA-256)."""
    m = info.manifest
    rows = [
        ("Name", f"{info.name} v{info.version}"),
        ("Backbone", f"{info.backbone}, {m.get('input_size')} px"),
        ("Created", m.get("created", "")),
        ("Decision threshold", f"{info.threshold:.3f}"),
        ("Uncertainty band", f"{info.uncertainty_band[0]:.3f} – {info.uncertainty_band[1]:.3f}"),
        ("File", str(info.path)),
        ("Model SHA-256 (manifest and weights)", info.sha256),
        ("Weights SHA-256", info.weights_sha256),
        ("Description", m.get("description", "")),
    ]
    out = [f"<h2>{html.escape(info.name)} v{html.escape(info.version)}</h2>"]
    if info.demo:
        out.append(_warning_html(DEMO_NOTICE))
    elif info.score_warning:
        out.append(_warning_html(f"Caution: {info.score_warning}."))
    out.append("<table cellspacing=4>")
    for key, value in rows:
        out.append(f"<tr><td><b>{html.escape(key)}</b></td><td>{html.escape(str(value))}</td></tr>")
    out.append("</table>")
    metrics = m.get("metrics") or {}
    if metrics:
        out.append("<h3>Held-out scores</h3><table cellspacing=4>")
        for key in _SCORES:
            if key in metrics and metrics[key] is not None:
                value = metrics[key]
                text = f"{value:.4f}" if isinstance(value, float) else str(value)
                out.append(f"<tr><td>{html.escape(key)}</td><td>{html.escape(text)}</td></tr>")
        out.append("</table>")
    data = m.get("training_data") or {}
    if data:
        shown = {k: v for k, v in data.items() if k not in ("settings",)}
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
    tf_text = getattr(tf, "__version__", "not loaded yet (loads with the first analysis)")
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
