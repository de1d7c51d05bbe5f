"""The questions the window asks before it touches a person's review work, and what they say.

Each dialog is one function, so the window stays a caller and tests can answer them (see
`tests/conftest.py`): discard unexported work, restore a crashed session, sign off a sample.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import QMessageBox, QWidget

from leukgui.core.text import display_path

if TYPE_CHECKING:
    from leukgui.core.metrics import SampleSummary
    from leukgui.core.sessions import SessionSummary

__all__ = [
    "ask_restore",
    "ask_unsaved",
    "confirm_sign_off",
    "restore_offer_text",
    "shortcuts_html",
    "sign_off_text",
]


def ask_unsaved(parent: QWidget, action: str, what: str, *, can_export: bool = True) -> str:
    """The one dialog that guards review work: "export", "discard" or "cancel". Export is
    offered only when a report is missing review changes (`can_export`); when the only
    concern is samples not signed off, the text says the review can be signed off later."""
    later = (
        "The review stays in the session folder, but no report holds these changes yet."
        if can_export
        else "The review stays in the session folder: File ▸ Recent sessions reopens it to "
        "sign the samples off."
    )
    box = QMessageBox(
        QMessageBox.Icon.Warning,
        "Review work not saved" if can_export else "Samples not signed off",
        f"Before you {action}: {what}.\n\n{later}",
        QMessageBox.StandardButton.NoButton,
        parent,
    )
    export = None
    if can_export:
        export = box.addButton("Export report…", QMessageBox.ButtonRole.AcceptRole)
    discard = box.addButton(
        "Discard" if can_export else f"{action[:1].upper()}{action[1:]} anyway",
        QMessageBox.ButtonRole.DestructiveRole,
    )
    cancel = box.addButton(QMessageBox.StandardButton.Cancel)
    box.setDefaultButton(cancel)
    box.exec()
    clicked = box.clickedButton()
    if export is not None and clicked is export:
        return "export"
    return "discard" if clicked is discard else "cancel"


def ask_restore(parent: QWidget, text: str) -> str:
    """What to do with work a crash left behind: "restore", "discard" or "later"."""
    box = QMessageBox(
        QMessageBox.Icon.Question,
        "Restore the last session?",
        text,
        QMessageBox.StandardButton.NoButton,
        parent,
    )
    restore = box.addButton("Restore", QMessageBox.ButtonRole.AcceptRole)
    discard = box.addButton("Discard", QMessageBox.ButtonRole.DestructiveRole)
    box.addButton("Later", QMessageBox.ButtonRole.RejectRole)
    box.setDefaultButton(restore)
    box.exec()
    clicked = box.clickedButton()
    return "restore" if clicked is restore else "discard" if clicked is discard else "later"


def confirm_sign_off(parent: QWidget, text: str) -> bool:
    """True when the person confirmed the sign-off `text` describes."""
    box = QMessageBox(
        QMessageBox.Icon.Question,
        "Sign off sample",
        text,
        QMessageBox.StandardButton.Cancel,
        parent,
    )
    sign = box.addButton("Sign off", QMessageBox.ButtonRole.AcceptRole)
    box.setDefaultButton(sign)
    box.exec()
    return box.clickedButton() is sign


def sign_off_text(sample: str, reviewer: str, row: SampleSummary) -> str:
    """What the sign-off dialog says: the sample, how much of it was reviewed, and what is
    still open (unreviewed or UNCERTAIN cells)."""
    lines = [f"Sign off sample '{display_path(sample)}' under the name '{reviewer}'?"]
    lines.append(f"Reviewed: {row.reviewed} of {row.cells} cells.")
    unreviewed = row.cells - row.reviewed
    if unreviewed:
        lines.append(
            f"Warning: {unreviewed} cell{'s' * (unreviewed != 1)} not reviewed"
            + (f", {row.n_uncertain} of them UNCERTAIN" if row.n_uncertain else "")
            + "."
        )
    lines.append("Its cells are locked until the sample is reopened.")
    return "\n".join(lines)


def shortcuts_html(groups: Sequence[tuple[str, Sequence[QAction]]]) -> str:
    """The shortcut sheet: each group's actions with every key that triggers them."""
    out = []
    for title, actions in groups:
        out.append(f"<h3>{html.escape(title)}</h3><table cellspacing=3>")
        for action in actions:
            keys = " or ".join(
                k.toString(QKeySequence.SequenceFormat.NativeText) for k in action.shortcuts()
            )
            name = action.text().replace("&", "").rstrip("…")
            out.append(f"<tr><td><b>{html.escape(keys)}</b></td><td>{html.escape(name)}</td></tr>")
        out.append("</table>")
    out.append(
        "<p>Review keys never act while a text field, spin box or list has the "
        "focus, nor on another tab.</p>"
    )
    return "".join(out)


def restore_offer_text(summary: SessionSummary | None) -> str:
    """What the restore offer says: what comes back, not where it is stored."""
    head = "LeukGUI was not closed properly last time."
    if summary is None:
        return f"{head} Its last session could not be read; Restore will say why."
    when = f"{summary.started:%Y-%m-%d %H:%M}" if summary.started else "an earlier run"
    folders = ", ".join(Path(p).name or p for p in summary.inputs) or "(no folders)"
    who = ", ".join(summary.reviewers) if summary.reviewers else "nobody yet"
    changes = f"{summary.changes} review change{'s' * (summary.changes != 1)}"
    return (
        f"{head}\n\nResults of {when}: {folders}, {summary.cells} cells"
        f"{f' and {summary.errors} errors' if summary.errors else ''}, analyzed with "
        f"{summary.model}; {changes} by {who}.\n\nRestore brings back the results and every "
        "review change. Discard keeps them under File > Recent sessions. Later asks again at "
        "the next start."
    )
