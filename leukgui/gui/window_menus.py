"""The window's actions and menus, in one place: what each key and menu item does.

`w` is the `leukgui.gui.main_window.MainWindow` (not imported here: it imports this module).

Review keys (A, H, U, Enter, Ctrl+Z, ...) are created scoped to the cells: `MainWindow._action`
with `review=True` gives them a widget-with-children context and `ensure_content` attaches
them to the gallery, the inspector and the field view, so a key typed in a text field or on
another tab never reaches a review.
"""

from __future__ import annotations

from collections.abc import Callable

from PySide6.QtCore import Qt
from PySide6.QtGui import QAction, QActionGroup, QKeySequence
from PySide6.QtWidgets import QMainWindow, QStyle

from leukgui.core.results import ALL, HEM, UNCLASSIFIABLE
from leukgui.gui.icons import shape_icon
from leukgui.gui.scale_setting import um_per_px_label

__all__ = ["build_actions", "build_menus"]


def build_actions(w: QMainWindow) -> None:
    """Every action of the window, review keys scoped to the cells (see `MainWindow._action`)."""
    style = w.style()
    w.act_open_folder = w._action(
        "Open &Folder…",
        w.choose_folder,
        QKeySequence.StandardKey.Open,
        "Analyze every image in a folder (sub-folders become samples)",
    )
    w.act_open_folder.setIcon(style.standardIcon(QStyle.StandardPixmap.SP_DirOpenIcon))
    w.act_open_files = w._action(
        "Open F&iles…", w.choose_files, "Ctrl+Shift+O", "Analyze selected image files"
    )
    w.act_analyze = w._action(
        "&Analyze",
        w.start_analysis,
        "F5",
        "Classify the loaded images with the chosen model",
    )
    w.act_analyze.setIcon(shape_icon("play"))
    w.act_cancel = w._action(
        "&Cancel",
        w.cancel_analysis,
        "Esc",
        "Stop after the current batch; finished cells stay",
    )
    w.act_cancel.setIcon(shape_icon("stop"))
    w.act_export = w._action(
        "Export &Excel report…",
        w.choose_export_excel,
        "Ctrl+E",
        "Write the report a pathologist signs (reviewed labels and audit trail included)",
    )
    w.act_export.setIcon(style.standardIcon(QStyle.StandardPixmap.SP_DialogSaveButton))
    w.act_export_csv = w._action(
        "Export &CSV…", w.choose_export_csv, "Ctrl+Shift+E", "One row per image"
    )
    w.act_open_after = w._action(
        "Open report after e&xport",
        w._toggle_open_after,
        None,
        "Open each exported report in Excel (or the system's spreadsheet program)",
    )
    w.act_open_after.setCheckable(True)
    w.act_open_after.setChecked(w.prefs.open_report_after_export)
    w.act_tta = w._action(
        "&Test-time augmentation (8 views, about 8x slower)",
        w._toggle_tta,
        None,
        "Average each cell's P(ALL) over its 8 flips and quarter turns; the heatmap stays the "
        "cell's own. Said in the report's provenance.",
    )
    w.act_tta.setCheckable(True)
    w.act_tta.setChecked(w.prefs.tta)
    w.act_um_per_px = w._action(
        f"µm per &pixel: {um_per_px_label(w.um_per_px())}…",
        w.choose_um_per_px,
        None,
        "Smear fields: micrometres per image pixel (Automatic: measured from the red cells "
        "of each field). Said in the report with each field's scale.",
    )
    w.act_preferences = w._action(
        "&Preferences…",
        w.show_preferences,
        QKeySequence.StandardKey.Preferences,
        "Inference runtime (which engine classifies the cells)",
    )
    w.act_preferences.setMenuRole(QAction.MenuRole.PreferencesRole)
    w.act_quit = w._action("&Quit", w.close, QKeySequence.StandardKey.Quit)
    w.act_import_model = w._action(
        "&Import model…",
        w.choose_import_model,
        None,
        "Verify a model file (.leukmodel) and add it to your models folder",
    )
    w.act_use_model = w._action(
        "&Use this model…",
        w.show_adopt_dialog,
        None,
        "Adopt the chosen model for the next analyses: see its lineage and comparison with "
        "its parent, then record who decided and when",
    )
    w.act_model_card = w._action(
        "Model &card…",
        w.show_model_card,
        "Ctrl+I",
        "Training data, held-out scores and SHA-256 of the chosen model",
    )
    w.act_heatmaps = w._action(
        "&Heatmaps in gallery",
        w._toggle_heatmaps,
        "Ctrl+M",
        "Show Grad-CAM on every thumbnail",
    )
    w.act_heatmaps.setCheckable(True)
    w.act_dark = w._action("&Dark theme", w._toggle_theme)
    w.act_dark.setCheckable(True)
    w.act_dark.setChecked(w.prefs.theme == "dark")
    w.act_all = w._action("Mark &ALL", lambda: w.review_current(ALL), "A", review=True)
    w.act_hem = w._action("Mark &HEM", lambda: w.review_current(HEM), "H", review=True)
    w.act_unclassifiable = w._action(
        "Mark &UNCLASSIFIABLE", lambda: w.review_current(UNCLASSIFIABLE), "U", review=True
    )
    w.act_confirm = w._action(
        "&Confirm suggestion",
        w.confirm_current,
        QKeySequence(Qt.Key.Key_Return),
        "Accept the model's call (an UNCERTAIN cell takes the side of the threshold)",
        review=True,
    )
    w.act_confirm.setShortcuts([QKeySequence(Qt.Key.Key_Return), QKeySequence(Qt.Key.Key_Enter)])
    w.act_undo = w._action(
        "&Undo last review",
        w.undo_last_review,
        QKeySequence.StandardKey.Undo,
        "Undo the newest label or confirmation, wherever its cell is",
        review=True,
    )
    w.act_undo.setShortcuts(
        [QKeySequence(QKeySequence.StandardKey.Undo), QKeySequence(Qt.Key.Key_Backspace)]
    )
    w.act_redo = w._action(
        "&Redo review",
        w.redo_review,
        QKeySequence("Ctrl+Shift+Z"),
        "Make the undone review change again",
        review=True,
    )
    w.act_redo.setShortcuts([QKeySequence("Ctrl+Shift+Z"), QKeySequence("Ctrl+Y")])
    w.act_next = w._action("&Next cell", lambda: w.move_selection(1), "Right", review=True)
    w.act_previous = w._action("&Previous cell", lambda: w.move_selection(-1), "Left", review=True)
    w.act_sign_off = w._action(
        "&Sign off sample",
        w.sign_off_current_sample,
        "Ctrl+Shift+S",
        "Lock the selected sample's review under your name",
    )
    w.act_reopen = w._action("&Reopen sample", w.reopen_current_sample)
    w.act_reviewer = w._action("Reviewer &name…", w.ask_reviewer)
    w.act_lab_dataset = w._action(
        "Add reviewed cells to the &lab data set…",
        w.show_lab_dataset_dialog,
        None,
        "Copy the cells you reviewed or confirmed as ALL or HEM into the lab data set that "
        "training reads (the review itself is not changed)",
    )
    w.act_about = w._action("&About LeukGUI", w.show_about)
    w.act_shortcuts = w._action(
        "&Keyboard shortcuts", w.show_shortcuts, "F1", "Every key the window answers to"
    )
    # "?" is a character a text field may want: it opens the sheet only from the cells.
    w.act_shortcuts_key = w._action("Keyboard shortcuts", w.show_shortcuts, "?", review=True)
    # Zoom and the heatmap toggle act on the inspector from wherever the review focus is
    # (gallery, inspector, field view); keys and buttons keep the cell centred.
    w.act_zoom_in = w._action(
        "Zoom &in", _on_inspector(w, "zoom_in"), "+", "Zoom the cell in (+)", review=True
    )
    w.act_zoom_in.setShortcuts(
        [QKeySequence("+"), QKeySequence("="), QKeySequence(QKeySequence.StandardKey.ZoomIn)]
    )
    w.act_zoom_out = w._action(
        "Zoom &out", _on_inspector(w, "zoom_out"), "-", "Zoom the cell out (−)", review=True
    )
    w.act_zoom_out.setShortcuts([QKeySequence("-"), QKeySequence(QKeySequence.StandardKey.ZoomOut)])
    w.act_zoom_fit = w._action(
        "&Fit cell in view",
        _on_inspector(w, "zoom_fit"),
        "0",
        "The whole cell in view (0)",
        review=True,
    )
    w.act_overlay = w._action(
        "Heatmap &overlay on/off",
        _on_inspector(w, "toggle_overlay"),
        "O",
        "Show the cell with or without its Grad-CAM heatmap (O)",
        review=True,
    )
    for name, action in (
        ("zoom_in", w.act_zoom_in),
        ("zoom_out", w.act_zoom_out),
        ("zoom_fit", w.act_zoom_fit),
        ("toggle_overlay", w.act_overlay),
    ):
        action.setObjectName(name)  # the big field window answers the zoom keys itself


def _on_inspector(w: QMainWindow, method: str) -> Callable[[], None]:
    """A slot calling `w.inspector.<method>()`, a no-op before the inspector is built."""

    def call() -> None:
        inspector = getattr(w, "inspector", None)
        if inspector is not None:
            getattr(inspector, method)()

    return call


def build_menus(w: QMainWindow) -> None:
    """The menu bar: File, Analysis, Model, Review, View, Help."""
    bar = w.menuBar()
    file_menu = bar.addMenu("&File")
    file_menu.addAction(w.act_open_folder)
    file_menu.addAction(w.act_open_files)
    w.recent_menu = file_menu.addMenu("Open &Recent")
    w._fill_recent()
    w.sessions_menu = file_menu.addMenu("Recent &sessions")
    w.sessions_menu.setToolTipsVisible(True)
    w.sessions_menu.aboutToShow.connect(w._fill_sessions)
    file_menu.addSeparator()
    file_menu.addAction(w.act_export)
    file_menu.addAction(w.act_export_csv)
    file_menu.addAction(w.act_open_after)
    file_menu.addSeparator()
    file_menu.addAction(w.act_preferences)
    file_menu.addAction(w.act_quit)
    analysis_menu = bar.addMenu("&Analysis")
    analysis_menu.addAction(w.act_analyze)
    analysis_menu.addAction(w.act_cancel)
    analysis_menu.addSeparator()
    kinds = analysis_menu.addMenu("Image &kind")
    group = QActionGroup(w)
    w.image_kind_actions: dict[str, QAction] = {}
    for mode, text in (
        ("auto", "&Decided per image (cell crop or smear field)"),
        ("cells", "Single-&cell crops"),
        ("fields", "Smear &fields (find the white cells)"),
    ):
        action = kinds.addAction(text)
        action.setCheckable(True)
        action.setChecked(w.prefs.image_kind == mode)
        action.triggered.connect(lambda _=False, m=mode: w.set_image_kind(m))
        group.addAction(action)
        w.image_kind_actions[mode] = action
    kinds.addSeparator()
    kinds.addAction(w.act_um_per_px)  # the fields' scale, next to the choice of fields
    analysis_menu.addAction(w.act_tta)
    analysis_menu.addSeparator()
    analysis_menu.addAction(w.act_preferences)  # the inference runtime is chosen there
    model_menu = bar.addMenu("&Model")
    model_menu.addAction(w.act_model_card)
    model_menu.addAction(w.act_use_model)
    model_menu.addAction(w.act_import_model)
    review_menu = bar.addMenu("&Review")
    for action in (
        w.act_all,
        w.act_hem,
        w.act_unclassifiable,
        w.act_confirm,
        w.act_undo,
        w.act_redo,
    ):
        review_menu.addAction(action)
    review_menu.addSeparator()
    review_menu.addAction(w.act_next)
    review_menu.addAction(w.act_previous)
    review_menu.addSeparator()
    review_menu.addAction(w.act_sign_off)
    review_menu.addAction(w.act_reopen)
    review_menu.addAction(w.act_reviewer)
    review_menu.addSeparator()
    review_menu.addAction(w.act_lab_dataset)
    review_menu.setToolTipsVisible(True)  # a greyed-out "Add to the lab data set" says why
    view_menu = bar.addMenu("&View")
    view_menu.addAction(w.act_heatmaps)
    view_menu.addAction(w.act_overlay)
    view_menu.addSeparator()
    view_menu.addAction(w.act_zoom_in)
    view_menu.addAction(w.act_zoom_out)
    view_menu.addAction(w.act_zoom_fit)
    view_menu.addSeparator()
    view_menu.addAction(w.act_dark)
    help_menu = bar.addMenu("&Help")
    help_menu.addAction(w.act_shortcuts)
    help_menu.addAction(w.act_about)
