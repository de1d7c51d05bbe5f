"""One cell up close: a large view with a Grad-CAM toggle (or original and overlay side by
side), zoom that keeps the cell centred, a colour scale, and the cell's details.

Layouts. "overlay" (the default) gives the whole panel to one view of the cell; the heatmap
is switched on and off over it (button or O), so the reviewer compares the morphology and
the evidence at the same place and the largest size. "side by side" shows the original next
to the overlay, both always on the same region at the same scale. The overlay is drawn from
the cell's own heatmap at full strength and faded by the opacity slider (item opacity o over
the original gives exactly `overlay(rgb, heatmap, alpha=o)`); when there is no usable
heatmap the widget says so instead of drawing anything.

Which class a heatmap explains comes from `leukgui.core.gradcam.BatchedGradCAM`: the
gradient of logit(predicted) - logit(other), the predicted class being the network's arg-max
(see `heatmap_class`), not the bundle's decision threshold.
"""

from __future__ import annotations

from collections.abc import Callable

from PySide6.QtCore import QEvent, QPointF, QRect, QRectF, QSize, Qt, QTimer, Signal, Slot
from PySide6.QtGui import (
    QColor,
    QFont,
    QLinearGradient,
    QPainter,
    QPainterPath,
    QPaintEvent,
    QPalette,
    QPen,
    QPixmap,
    QResizeEvent,
    QShowEvent,
    QTransform,
    QWheelEvent,
)
from PySide6.QtWidgets import (
    QApplication,
    QFormLayout,
    QFrame,
    QGraphicsPixmapItem,
    QGraphicsScene,
    QGraphicsTextItem,
    QGraphicsView,
    QHBoxLayout,
    QLabel,
    QScrollArea,
    QScrollBar,
    QSizePolicy,
    QSlider,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from leukgui.core.cells import cell_image
from leukgui.core.fields import NOTE_ONE_CELL
from leukgui.core.overlay import colorize, overlay
from leukgui.core.results import ALL, HEM, CellResult
from leukgui.core.text import display_path
from leukgui.gui.cell_model import rgb_to_qimage
from leukgui.gui.gallery import badge_spec, is_dark, label_color

__all__ = ["LAYOUTS", "OVERLAY", "SIDE_BY_SIDE", "CellInspector", "ColourScale", "heatmap_class"]

OVERLAY, SIDE_BY_SIDE = "overlay", "side by side"
LAYOUTS = (OVERLAY, SIDE_BY_SIDE)  # the values of Preferences.inspector_layout

_MIN_ZOOM, _MAX_ZOOM = 0.05, 32.0
_STEP = 1.25
# The image surround: a neutral dark grey in both themes, so stain colours are judged against
# the same background (C-NMC cells sit on black) whatever the window's palette is.
_SURROUND = "#2B2B2B"


def heatmap_class(cell: CellResult) -> str:
    """The class whose evidence `cell.heatmap` shows.

    `BatchedGradCAM` explains the arg-max class of the two logits. In a two-class softmax
    that is ALL exactly when P(ALL) > 0.5 (a tie goes to index 0, HEM), whatever the
    bundle's threshold: a cell called ALL at P(ALL) 0.45 has a heatmap for HEM.
    """
    return ALL if float(cell.p_all) > 0.5 else HEM


def field_cell_rows(cell: CellResult) -> list[tuple[str, str]]:
    """Size, scale and border rows of a smear-field cell for the details panel (none of
    them for what is unknown, e.g. a session saved before sizes were recorded)."""
    rows: list[tuple[str, str]] = []
    if cell.area_px is not None and cell.diameter_px is not None:
        size = f"{cell.diameter_px:.1f} px across, {cell.area_px} px²"
        if cell.diameter_um is not None and cell.area_um2 is not None:
            size = f"{cell.diameter_um:.1f} µm across, {cell.area_um2:.0f} µm² ({size})"
        rows.append(("Cell size", size))
    if cell.um_per_px is not None:
        source = f" ({cell.scale_source})" if cell.scale_source else ""
        rows.append(("µm per pixel", f"{cell.um_per_px:.4g}{source}"))
    if cell.touches_border:
        rows.append(("Border", "cut by the image border: size is a lower bound"))
    return rows


class _ZoomView(QGraphicsView):
    """A graphics view that reports wheel turns instead of scrolling, for synced zooming."""

    wheel_zoom = Signal(float)
    resized = Signal()

    def __init__(self, scene: QGraphicsScene, parent: QWidget | None = None) -> None:
        super().__init__(scene, parent)
        self.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform)
        self.setTransformationAnchor(QGraphicsView.ViewportAnchor.AnchorUnderMouse)
        self.setResizeAnchor(QGraphicsView.ViewportAnchor.AnchorViewCenter)
        self.setDragMode(QGraphicsView.DragMode.ScrollHandDrag)
        self.setBackgroundBrush(QColor(_SURROUND))
        self.setFrameShape(QFrame.Shape.NoFrame)
        self.setMinimumSize(120, 120)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)

    def wheelEvent(self, event: QWheelEvent) -> None:  # noqa: N802
        steps = event.angleDelta().y() / 120
        if steps:
            self.wheel_zoom.emit(_STEP**steps)
        event.accept()

    def resizeEvent(self, event: QResizeEvent) -> None:  # noqa: N802
        super().resizeEvent(event)
        self.resized.emit()


class _ElidedLabel(QLabel):
    """One line that shortens in the middle ("syn_hem…0001.png") instead of being cut off at
    the end, so a narrow panel still shows the file's extension and the field's "#n"; the
    whole text is in `full_text()` and the tooltip."""

    def __init__(self, text: str = "") -> None:
        super().__init__()
        self._full = ""
        self.setText(text)

    def setText(self, text: str) -> None:  # noqa: N802 - Qt override
        self._full = text
        self._elide()

    def full_text(self) -> str:
        return self._full

    def _elide(self) -> None:
        width = max(0, self.contentsRect().width())
        shown = self.fontMetrics().elidedText(self._full, Qt.TextElideMode.ElideMiddle, width)
        super().setText(shown if width > 0 else self._full)

    def resizeEvent(self, event: QResizeEvent) -> None:  # noqa: N802
        super().resizeEvent(event)
        self._elide()


class _WrappingLabel(QLabel):
    """A word-wrapped label that asks for the height its lines need at its current width.

    Layouts inside a splitter ignore height-for-width, so a plain wrapped label keeps the
    height of one line and its second line (a long path, the model and its hash) is cut off.
    """

    def __init__(self, text: str, on_height: Callable[[], None] | None = None) -> None:
        super().__init__(text)
        self.setWordWrap(True)
        self.setAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignTop)
        self._on_height = on_height

    def lines_height(self, width: int) -> int:
        """The height of the wrapped text at `width` (QLabel.heightForWidth never answers
        less than the minimum height, so it cannot shrink once the label was narrow)."""
        margins = self.contentsMargins()
        inner = max(1, width - margins.left() - margins.right() - 2 * max(0, self.margin()))
        rect = self.fontMetrics().boundingRect(
            QRect(0, 0, inner, 100_000), int(Qt.TextFlag.TextWordWrap), self.text()
        )
        return rect.height() + margins.top() + margins.bottom() + 2 * max(0, self.margin())

    def sizeHint(self) -> QSize:  # noqa: N802
        """The lines it needs at its width (QLabel guesses a width of its own), so a form
        with spare height does not hand it to the wrapped rows as gaps."""
        hint = super().sizeHint()
        if self.width() > 0:
            hint.setHeight(max(self.minimumHeight(), self.lines_height(self.width())))
        return hint

    def resizeEvent(self, event: QResizeEvent) -> None:  # noqa: N802
        super().resizeEvent(event)
        needed = self.lines_height(self.width())
        if needed > 0 and needed != self.minimumHeight():
            self.setMinimumHeight(needed)
            if self._on_height is not None:  # the panel around it re-measures its rows
                QTimer.singleShot(0, self, self._on_height)  # not after the label is gone


class ColourScale(QWidget):
    """The heatmap's colour scale, low to high, in the overlay's own colormap.

    The colours come from `leukgui.core.overlay.colorize`, the function that paints the
    overlay, so the legend cannot drift from the picture.
    """

    LOW, HIGH = "less", "more evidence"

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        import numpy as np

        rgb = colorize(np.linspace(0.0, 1.0, 17, dtype=np.float32)[None, :])[0]
        self._stops = [QColor(int(r), int(g), int(b)) for r, g, b in rgb]
        self.setToolTip(
            "Grad-CAM colour scale: blue = little evidence, red = strong evidence"
            " (the colour is also more opaque where the evidence is stronger)"
        )
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)

    def colour_at(self, fraction: float) -> QColor:
        """The scale's colour at 0..1 (for tests: low end blue, high end red)."""
        index = round(max(0.0, min(1.0, fraction)) * (len(self._stops) - 1))
        return QColor(self._stops[index])

    def sizeHint(self) -> QSize:  # noqa: N802
        return QSize(220, self.fontMetrics().height() + 6)

    def minimumSizeHint(self) -> QSize:  # noqa: N802
        return QSize(140, self.fontMetrics().height() + 6)

    def paintEvent(self, event: QPaintEvent) -> None:  # noqa: N802
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        metrics = self.fontMetrics()
        text = self.palette().color(QPalette.ColorRole.WindowText)
        low_w = metrics.horizontalAdvance(self.LOW)
        high_w = metrics.horizontalAdvance(self.HIGH)
        h = self.height()
        painter.setPen(text)
        painter.drawText(QRectF(0, 0, low_w, h), Qt.AlignmentFlag.AlignVCenter, self.LOW)
        painter.drawText(
            QRectF(self.width() - high_w, 0, high_w, h),
            Qt.AlignmentFlag.AlignVCenter | Qt.AlignmentFlag.AlignRight,
            self.HIGH,
        )
        bar = QRectF(low_w + 6, h * 0.2, max(10.0, self.width() - low_w - high_w - 12), h * 0.6)
        gradient = QLinearGradient(bar.topLeft(), bar.topRight())
        for i, colour in enumerate(self._stops):
            gradient.setColorAt(i / (len(self._stops) - 1), colour)
        painter.setBrush(gradient)
        painter.setPen(QPen(self.palette().color(QPalette.ColorRole.Mid), 1))
        painter.drawRoundedRect(bar, 2, 2)
        painter.end()


def _lock_pixmap(colour: QColor, size: int = 16) -> QPixmap:
    """A padlock drawn in `colour` (no icon font or emoji needed on a clinic PC)."""
    ratio = 2.0
    pixmap = QPixmap(int(size * ratio), int(size * ratio))
    pixmap.setDevicePixelRatio(ratio)
    pixmap.fill(Qt.GlobalColor.transparent)
    p = QPainter(pixmap)
    p.setRenderHint(QPainter.RenderHint.Antialiasing)
    s = float(size)
    p.setPen(QPen(colour, s * 0.12))
    shackle = QPainterPath()
    shackle.moveTo(s * 0.3, s * 0.48)
    shackle.lineTo(s * 0.3, s * 0.32)
    shackle.arcTo(QRectF(s * 0.3, s * 0.1, s * 0.4, s * 0.4), 180, -180)
    shackle.lineTo(s * 0.7, s * 0.48)
    p.drawPath(shackle)
    p.setPen(Qt.PenStyle.NoPen)
    p.setBrush(colour)
    p.drawRoundedRect(QRectF(s * 0.18, s * 0.46, s * 0.64, s * 0.46), s * 0.08, s * 0.08)
    p.end()
    return pixmap


class CellInspector(QWidget):
    """The selected cell, large, with its Grad-CAM heatmap, zoom, colour scale and details.

    `layout` is "overlay" (one view, heatmap toggled with `toggle_overlay` / O) or "side by
    side"; `layout_changed` says when the person switched it, so the window can keep it.
    """

    layout_changed = Signal(str)
    overlay_toggled = Signal(bool)

    def __init__(self, parent: QWidget | None = None, *, layout: str = OVERLAY) -> None:
        super().__init__(parent)
        self._cell: CellResult | None = None
        self._zoom = 1.0
        self._fit = True
        self._syncing = False
        self._image_rect = QRectF()
        self._view_layout = layout if layout in LAYOUTS else OVERLAY
        self._overlay_on = True
        self._has_heatmap = False
        self._explained = False  # the shown cell has a heatmap the class line explains
        self._chip: tuple[str, bool, str | None] | None = None
        self._remeasures_left = 0

        # --- header: file name, final label, lock -----------------------------------
        self._title = _ElidedLabel("No cell selected")
        title_font = QFont(self._title.font())
        title_font.setBold(True)
        title_font.setPointSizeF(title_font.pointSizeF() * 1.15)
        self._title.setFont(title_font)
        self._title.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self._title.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self._label_chip = QLabel()
        self._label_chip.setVisible(False)

        # A signed-off sample: a framed line with a padlock, on the palette's alternate base.
        self.lock_banner = QFrame()
        self.lock_banner.setFrameShape(QFrame.Shape.StyledPanel)
        self.lock_banner.setAutoFillBackground(True)
        self.lock_banner.setBackgroundRole(QPalette.ColorRole.AlternateBase)
        self._lock_icon = QLabel()
        self.lock_label = QLabel()
        self.lock_label.setWordWrap(True)
        lock_font = QFont(self.lock_label.font())
        lock_font.setBold(True)
        self.lock_label.setFont(lock_font)
        lock_row = QHBoxLayout(self.lock_banner)
        lock_row.setContentsMargins(6, 3, 6, 3)
        lock_row.addWidget(self._lock_icon, 0, Qt.AlignmentFlag.AlignTop)
        lock_row.addWidget(self.lock_label, 1)
        self.lock_banner.setVisible(False)

        # --- image views ------------------------------------------------------------
        self._original_scene = QGraphicsScene(self)
        self._overlay_scene = QGraphicsScene(self)
        self.original_view = _ZoomView(self._original_scene, self)
        self.overlay_view = _ZoomView(self._overlay_scene, self)  # the one view in "overlay"
        self.original_item = QGraphicsPixmapItem()
        self.base_item = QGraphicsPixmapItem()  # the original again, under the overlay
        self.overlay_item = QGraphicsPixmapItem()
        for item in (self.original_item, self.base_item, self.overlay_item):
            item.setTransformationMode(Qt.TransformationMode.SmoothTransformation)
        self._original_scene.addItem(self.original_item)
        self._overlay_scene.addItem(self.base_item)
        self._overlay_scene.addItem(self.overlay_item)
        self._original_note = self._note_item(self._original_scene)
        self._overlay_note = self._note_item(self._overlay_scene)

        for view in (self.original_view, self.overlay_view):
            view.wheel_zoom.connect(self._on_wheel_zoom)
        self.overlay_view.resized.connect(self._on_view_resized)
        # Bound slots, not lambdas holding scroll bars: the views are torn down one after
        # the other, and a lambda would then touch a scroll bar that is already gone.
        for view in (self.original_view, self.overlay_view):
            view.horizontalScrollBar().valueChanged.connect(self._on_scrolled)
            view.verticalScrollBar().valueChanged.connect(self._on_scrolled)

        self._original_caption = self._muted(QLabel("Original"))
        self._overlay_caption = self._muted(QLabel("Grad-CAM overlay"))
        self._original_column = QWidget()
        self._overlay_column = QWidget()
        for column_widget, caption, view in (
            (self._original_column, self._original_caption, self.original_view),
            (self._overlay_column, self._overlay_caption, self.overlay_view),
        ):
            column = QVBoxLayout(column_widget)
            column.setContentsMargins(0, 0, 0, 0)
            column.setSpacing(2)
            column.addWidget(caption)
            column.addWidget(view, 1)
        images = QHBoxLayout()
        images.setSpacing(6)
        images.addWidget(self._original_column, 1)
        images.addWidget(self._overlay_column, 1)

        # --- heatmap explanation and colour scale -----------------------------------
        self.class_label = _WrappingLabel("")
        self.colour_scale = ColourScale()
        explain = QVBoxLayout()
        explain.setSpacing(2)
        explain.addWidget(self.class_label)
        explain.addWidget(self.colour_scale)

        # --- controls ---------------------------------------------------------------
        self.heatmap_button = self._tool_button(
            "Heatmap off", "Show the Grad-CAM heatmap over the cell, or the original alone (O)"
        )
        self.heatmap_button.setCheckable(True)
        self.heatmap_button.setChecked(True)
        self.heatmap_button.setText("Heatmap on")  # the state in words, not only a sunken look
        self.heatmap_button.toggled.connect(self.set_overlay_shown)
        self.opacity_slider = QSlider(Qt.Orientation.Horizontal)
        self.opacity_slider.setRange(0, 100)
        self.opacity_slider.setValue(50)
        self.opacity_slider.setToolTip("Heatmap opacity")
        self.opacity_slider.setMinimumWidth(40)
        self._opacity_label = QLabel()
        self._opacity_label.setMinimumWidth(30)
        self.opacity_slider.valueChanged.connect(self._on_opacity)

        self.zoom_out_button = self._tool_button("−", "Zoom out (−, mouse wheel down)")
        self.zoom_in_button = self._tool_button("+", "Zoom in (+, mouse wheel up)")
        self.fit_button = self._tool_button("Fit", "Fit the whole image in view (0)")
        self.actual_button = self._tool_button("1:1", "One image pixel per screen pixel")
        self.zoom_out_button.clicked.connect(self.zoom_out)
        self.zoom_in_button.clicked.connect(self.zoom_in)
        self.fit_button.clicked.connect(self.zoom_fit)
        self.actual_button.clicked.connect(lambda: self.set_zoom(1.0))
        self._zoom_label = QLabel("100%")
        self._zoom_label.setMinimumWidth(40)

        self.layout_button = self._tool_button(
            "Side by side", "Show the original and the overlay side by side (kept as a preference)"
        )
        self.layout_button.setCheckable(True)
        for button in (self.heatmap_button, self.layout_button):  # never elided to "H…"
            button.setMinimumWidth(button.sizeHint().width())
        metrics = self.heatmap_button.fontMetrics()  # room for the longer of its two texts
        self.heatmap_button.setMinimumWidth(
            self.heatmap_button.sizeHint().width()
            + metrics.horizontalAdvance("Heatmap off")
            - metrics.horizontalAdvance("Heatmap on")
        )
        self.layout_button.toggled.connect(
            lambda on: self.set_view_layout(SIDE_BY_SIDE if on else OVERLAY)
        )

        self._heat_box = QWidget()
        heat_row = QHBoxLayout(self._heat_box)
        heat_row.setContentsMargins(0, 0, 0, 0)
        heat_row.setSpacing(4)
        heat_row.addWidget(self.heatmap_button)
        heat_row.addWidget(self.opacity_slider, 1)
        heat_row.addWidget(self._opacity_label)
        heat_row.addWidget(self.layout_button)
        self._zoom_box = QWidget()
        zoom_row = QHBoxLayout(self._zoom_box)
        zoom_row.setContentsMargins(0, 0, 0, 0)
        zoom_row.setSpacing(4)
        for w in (self.zoom_out_button, self.zoom_in_button, self.fit_button, self.actual_button):
            zoom_row.addWidget(w)
        zoom_row.addWidget(self._zoom_label)
        # One row when the panel is wide enough, two when narrow (see `_arrange_controls`).
        self._controls_top = QHBoxLayout()
        self._controls_top.setSpacing(10)
        self._controls_bottom = QHBoxLayout()
        self._controls_wide: bool | None = None
        controls = QVBoxLayout()
        controls.setSpacing(4)
        controls.addLayout(self._controls_top)
        controls.addLayout(self._controls_bottom)

        # --- details ----------------------------------------------------------------
        self._details = QFormLayout()
        self._details.setLabelAlignment(Qt.AlignmentFlag.AlignRight)
        self._details.setHorizontalSpacing(10)
        self._details.setVerticalSpacing(3)
        self._details.setContentsMargins(0, 0, 0, 0)
        self._detail_rows: list[tuple[str, QLabel]] = []
        details_box = QWidget()
        details_box.setLayout(self._details)
        # The details scroll when the panel is short, so the cell keeps most of the height.
        self._details_area = QScrollArea()
        self._details_area.setWidget(details_box)
        self._details_area.setWidgetResizable(True)
        self._details_area.setFrameShape(QFrame.Shape.NoFrame)
        self._details_area.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self._details_area.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Fixed)

        header = QHBoxLayout()
        header.addWidget(self._title, 1)
        header.addWidget(self._label_chip)

        layout_ = QVBoxLayout(self)
        layout_.setContentsMargins(8, 8, 8, 8)
        layout_.setSpacing(5)
        layout_.addLayout(header)
        layout_.addWidget(self.lock_banner)
        layout_.addLayout(controls)
        layout_.addLayout(images, 1)
        layout_.addLayout(explain)
        layout_.addWidget(self._details_area)

        self._on_opacity(self.opacity_slider.value())
        self._update_lock_icon()
        self._arrange_controls()
        self._apply_view_layout()
        self.show_cell(None, final_label="", reviewed=False, model_text="")

    # ------------------------------------------------------------------ public API

    def cell(self) -> CellResult | None:
        return self._cell

    def show_cell(
        self,
        cell: CellResult | None,
        *,
        final_label: str,
        reviewed: bool,
        model_text: str,
        locked: str | None = None,
        model_call: str | None = None,
    ) -> None:
        """Show `cell` (None clears the inspector); `locked` is the sign-off line of a
        signed-off sample ("Signed off by X at ... — locked"), None when it is open;
        `model_call` is the model's call the review is measured against (the chip reads
        "HEM → ALL ✓" when the reviewer changed it, as the gallery's badge does).

        Decodes the image on the GUI thread: a C-NMC cell (450 px) takes a few milliseconds.
        """
        self._cell = cell
        for item in (self.original_item, self.base_item, self.overlay_item):
            item.setPixmap(QPixmap())
        self._original_note.setVisible(False)
        self._overlay_note.setVisible(False)
        self.lock_label.setText(locked or "")
        self.lock_banner.setVisible(bool(locked) and cell is not None)
        self._has_heatmap = False
        if cell is None:
            self._title.setText("No cell selected")
            self._title.setToolTip("")
            self._label_chip.setVisible(False)
            self._chip = None
            self._set_details([])
            self._show_note(self._overlay_note, "Select a cell in the gallery.")
            self._image_rect = QRectF()
            self._set_explanation(None)
            self._update_captions()
            for scene in (self._original_scene, self._overlay_scene):
                scene.setSceneRect(QRectF(0, 0, 300, 120))
            for view in (self.original_view, self.overlay_view):
                view.resetTransform()  # the note at its own size, whatever the last zoom was
            self._fit, self._zoom = True, 1.0
            return

        # The number first: a narrow panel clips the end of the title, never the "#n".
        self._title.setText(
            display_path(cell.path.name)
            if not cell.in_field
            else f"#{cell.cell_index} in {display_path(cell.path.name)}"
        )
        self._title.setToolTip(display_path(cell.path))
        changed_from = model_call if reviewed and model_call not in (None, final_label) else None
        self._set_chip(final_label or cell.label, reviewed, changed_from)

        image_problem = None
        heat_problem = None
        crop_size = None
        try:
            rgb = cell_image(cell)  # a smear-field cell: the crop the model saw
        except Exception as exc:  # noqa: BLE001 - an unreadable file is shown, not raised
            rgb = None
            image_problem = str(exc) or exc.__class__.__name__
        if rgb is not None:
            height, width = rgb.shape[:2]
            crop_size = f"{width} × {height} px"
            pixmap = QPixmap.fromImage(rgb_to_qimage(rgb))
            self.original_item.setPixmap(pixmap)
            self.base_item.setPixmap(pixmap)
            try:
                # Full strength; the item's opacity does the fading (see module docstring).
                blended = overlay(rgb, cell.heatmap, alpha=1.0)
            except Exception as exc:  # noqa: BLE001 - never draw a stand-in heatmap
                heat_problem = str(exc) or exc.__class__.__name__
            else:
                self.overlay_item.setPixmap(QPixmap.fromImage(rgb_to_qimage(blended)))
                self._has_heatmap = True
            self._image_rect = QRectF(0, 0, width, height)
        else:
            self._image_rect = QRectF()
            message = f"This image cannot be read:\n{image_problem}"
            self._show_note(self._original_note, message)
            self._show_note(self._overlay_note, message)
        if heat_problem is not None:
            self._show_note(
                self._overlay_note, f"No Grad-CAM heatmap for this cell:\n{heat_problem}"
            )

        for scene in (self._original_scene, self._overlay_scene):
            rect = self._image_rect if not self._image_rect.isNull() else QRectF(0, 0, 300, 120)
            scene.setSceneRect(rect)

        unreadable = f"cannot be read: {image_problem}"
        rows = [("File", display_path(cell.path.name)), ("Path", display_path(cell.path))]
        if cell.in_field and cell.box is not None:
            x0, y0, x1, y1 = cell.box
            rows += [
                (
                    "Field",
                    f"{cell.width} × {cell.height} px "
                    + ("(close-up of one cell)" if NOTE_ONE_CELL in cell.note else "(smear field)"),
                ),
                (
                    "Cell box",
                    f"#{cell.cell_index}: x {x0}–{x1}, y {y0}–{y1} ({x1 - x0} × {y1 - y0} px)",
                ),
                ("Crop", crop_size if crop_size else unreadable),
                *field_cell_rows(cell),
            ]
        else:
            rows.append(("Image", crop_size if crop_size else unreadable))
        rows.append(("Sample", cell.sample))
        if cell.subject:
            rows.append(("Subject", cell.subject))
        if cell.truth:
            rows.append(("Truth", cell.truth))
        rows.append(("P(ALL)", f"{float(cell.p_all):.3f}"))
        rows.append(("Model label", cell.label))
        final = final_label or cell.label
        rows.append(
            ("Final label", f"{final} (reviewed)" if reviewed else f"{final} (not reviewed)")
        )
        if heat_problem is not None:
            rows.append(("Grad-CAM", f"not available: {heat_problem}"))
        if cell.note:
            rows.append(("Note", cell.note))
        rows.append(("Model", model_text or "—"))
        self._set_details(rows)
        self._set_explanation(cell if self._has_heatmap else None)
        self._update_captions()
        self._fit = True
        self._apply_fit()

    def details_text(self) -> str:
        """The details panel as "Key: value" lines (for copying and for tests)."""
        return "\n".join(f"{key}: {label.text()}" for key, label in self._detail_rows)

    def lock_text(self) -> str:
        """The sign-off line shown, "" when the cell's sample is open."""
        return self.lock_label.text() if not self.lock_banner.isHidden() else ""

    def explanation(self) -> str:
        """The line saying which class the heatmap explains ("" without a heatmap)."""
        return self.class_label.text() if not self.class_label.isHidden() else ""

    def opacity(self) -> float:
        """Overlay opacity, 0..1."""
        return self.opacity_slider.value() / 100.0

    # --- layout and the heatmap toggle

    def view_layout(self) -> str:
        """ "overlay" (one view, heatmap toggled) or "side by side"."""
        return self._view_layout

    def set_view_layout(self, mode: str) -> None:
        """Switch layouts; emits `layout_changed` when the layout really changed."""
        if mode not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}, not {mode!r}")
        if mode == self._view_layout:
            return
        self._view_layout = mode
        self._apply_view_layout()
        self._show_explanation()
        self.layout_changed.emit(mode)

    def overlay_shown(self) -> bool:
        """Whether the heatmap is drawn over the cell (the O toggle)."""
        return self._overlay_on

    def set_overlay_shown(self, on: bool) -> None:
        on = bool(on)
        if on != self.heatmap_button.isChecked():
            self.heatmap_button.setChecked(on)  # comes back here through `toggled`
            return
        changed = on != self._overlay_on
        self._overlay_on = on
        self.overlay_item.setVisible(on)
        self.opacity_slider.setEnabled(on)
        self.heatmap_button.setText("Heatmap on" if on else "Heatmap off")
        self._update_captions()
        self._show_explanation()
        if changed:
            self.overlay_toggled.emit(on)

    def toggle_overlay(self) -> None:
        """O: the original alone, or with its heatmap."""
        self.set_overlay_shown(not self._overlay_on)

    # --- zoom

    def zoom(self) -> float:
        """Screen pixels per image pixel."""
        return self._zoom

    def view_centre(self) -> QPointF:
        """The image point at the centre of the main view (it stays put as keys zoom)."""
        view = self.overlay_view
        return QPointF(view.mapToScene(view.viewport().rect().center()))

    def set_zoom(self, factor: float) -> None:
        """Zoom to `factor` (1.0 = one image pixel per screen pixel) about the view centre."""
        self._fit = False
        self._set_zoom(factor, self.view_centre())

    def zoom_in(self) -> None:
        self.set_zoom(self._zoom * _STEP)

    def zoom_out(self) -> None:
        self.set_zoom(self._zoom / _STEP)

    def zoom_fit(self) -> None:
        """Fit the whole image in the views; stays fitted as the widget is resized."""
        self._fit = True
        self._apply_fit()

    # ------------------------------------------------------------------ internals

    def _tool_button(self, text: str, tip: str) -> QToolButton:
        button = QToolButton(self)
        button.setText(text)
        button.setToolTip(tip)
        button.setMinimumWidth(28)
        return button

    @staticmethod
    def _muted(label: QLabel) -> QLabel:
        """Secondary text in the palette's muted colour (follows the light or dark theme)."""
        label.setForegroundRole(QPalette.ColorRole.PlaceholderText)
        return label

    @staticmethod
    def _note_item(scene: QGraphicsScene) -> QGraphicsTextItem:
        item = QGraphicsTextItem()
        item.setDefaultTextColor(QColor("#F1F3F4"))  # on the fixed dark image surround
        item.setTextWidth(280)
        item.setZValue(10)
        item.setVisible(False)
        scene.addItem(item)
        return item

    def _show_note(self, item: QGraphicsTextItem, text: str) -> None:
        item.setPlainText(text)
        item.setPos(10, 10)
        item.setVisible(True)

    def _apply_view_layout(self) -> None:
        side = self._view_layout == SIDE_BY_SIDE
        self._original_column.setVisible(side)
        self.layout_button.blockSignals(True)
        self.layout_button.setChecked(side)
        self.layout_button.blockSignals(False)
        self._update_captions()
        centre = self.view_centre()
        if self.layout() is not None:
            self.layout().activate()  # the views take their new widths now, before a fit
        if side:
            self._match_hidden_twin()
        if self._fit:
            self._apply_fit()
        else:
            self._set_zoom(self._zoom, centre)

    def _update_captions(self) -> None:
        side = self._view_layout == SIDE_BY_SIDE
        if self._cell is None:
            self._overlay_caption.setText("" if not side else "Grad-CAM overlay")
            return
        if not self._has_heatmap:
            self._overlay_caption.setText("Original (no heatmap)")
        elif self._overlay_on:
            self._overlay_caption.setText(
                "Grad-CAM overlay" if side else "Grad-CAM overlay — O shows the original"
            )
        else:
            self._overlay_caption.setText(
                "Heatmap hidden — O shows it" if side else "Original — O shows the heatmap"
            )

    def _show_explanation(self) -> None:
        """The class line and colour scale belong to a heatmap on screen: hidden without one
        (no heatmap, or O showing the original alone in the one-view layout)."""
        on = self._explained and (self._overlay_on or self._view_layout == SIDE_BY_SIDE)
        self.class_label.setVisible(on)
        self.colour_scale.setVisible(on)

    def _set_explanation(self, cell: CellResult | None) -> None:
        """The class line and colour scale, shown only with a real heatmap."""
        self._explained = cell is not None
        self._show_explanation()
        if cell is None:
            self.class_label.setText("")
            return
        explained = heatmap_class(cell)
        p = float(cell.p_all) if explained == ALL else 1.0 - float(cell.p_all)
        text = f"Heatmap: where the model saw evidence for {explained}"
        if cell.label != explained:  # UNCERTAIN, or a threshold other than 0.5
            text += f", its more likely class (P({explained}) {p:.2f}; called {cell.label})"
        else:
            text += f" (P({explained}) {p:.2f})"
        self.class_label.setText(text)

    def _set_chip(self, label: str, reviewed: bool, changed_from: str | None = None) -> None:
        self._chip = (label, reviewed, changed_from)
        spec = badge_spec(label)
        dark = is_dark(self.palette())
        color = label_color(label, dark).name()
        if changed_from:
            text = f"{changed_from} → {label}  ✓"
            tip = f"Reviewed: {label} (the model's call was {changed_from})"
        else:
            text = label + ("  ✓ reviewed" if reviewed else "")
            tip = f"Reviewed: {label}" if reviewed else f"The model's call: {label}"
        self._label_chip.setText(text)
        self._label_chip.setToolTip(tip)
        filled = spec.shape == "filled_square"
        style = "dashed" if spec.shape == "dashed_outline" else "solid"
        base = self.palette().color(QPalette.ColorRole.Base).name()
        self._label_chip.setStyleSheet(
            f"QLabel {{ border: 2px {style} {color}; border-radius: 3px; padding: 1px 6px;"
            f" font-weight: bold; color: {'white' if filled else color};"
            f" background: {color if filled else base}; }}"
        )
        self._label_chip.setVisible(True)

    def _update_lock_icon(self) -> None:
        colour = self.palette().color(QPalette.ColorRole.WindowText)
        self._lock_icon.setPixmap(_lock_pixmap(colour, self.fontMetrics().height()))

    def _set_details(self, rows: list[tuple[str, str]]) -> None:
        while self._details.rowCount():
            self._details.removeRow(0)
        self._detail_rows = []
        for key, value in rows:
            wraps = key in ("Path", "Model", "Note", "Cell box", "Field")
            label = _WrappingLabel(value, self._rewrapped) if wraps else QLabel(value)
            label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
            key_label = self._muted(QLabel(key))
            self._details.addRow(key_label, label)
            # Shown now, not at the next event loop turn, so the height below counts them.
            key_label.show()
            label.show()
            self._detail_rows.append((key, label))
        # Re-measured when the wrapped rows settle at their real width, twice at most: a
        # scroll bar that comes and goes changes that width, and must not loop forever.
        self._remeasures_left = 2
        self._size_details()

    def _rewrapped(self) -> None:
        if self._remeasures_left > 0:
            self._remeasures_left -= 1
            self._size_details()

    def _size_details(self) -> None:
        """Details take what they need, up to 35% of the panel; beyond that they scroll."""
        content = self._details_area.widget()
        content.adjustSize()
        needed = content.minimumSizeHint().height() + 2  # wrapped rows: their minimum
        cap = max(90, int(self.height() * 0.35))
        self._details_area.setFixedHeight(min(needed, cap) if self._detail_rows else 0)

    def _arrange_controls(self) -> None:
        """Zoom and heatmap controls on one row when they fit, else on two (no elided
        buttons in a narrow panel)."""
        needed = self._zoom_box.sizeHint().width() + self._heat_box.sizeHint().width() + 30
        wide = self.width() >= needed + 16
        if wide == self._controls_wide:
            return
        self._controls_wide = wide
        for row in (self._controls_top, self._controls_bottom):
            while row.count():
                row.takeAt(0)
        self._controls_top.addWidget(self._zoom_box)
        if wide:
            self._controls_top.addStretch(1)
            self._controls_top.addWidget(self._heat_box, 1)
        else:
            self._controls_top.addStretch(1)
            self._controls_bottom.addWidget(self._heat_box, 1)

    def _match_hidden_twin(self) -> None:
        """Give the hidden original view the size of the shown one, with its resize handled
        now (a hidden widget's resize waits until it is shown), so both keep the same scroll
        ranges and switching to side by side shows the same region."""
        shown, hidden = self.overlay_view, self.original_view
        if not self._original_column.isHidden() or hidden.size() == shown.size():
            return
        old = hidden.size()
        hidden.resize(shown.size())
        QApplication.sendEvent(hidden, QResizeEvent(shown.size(), old))

    def _set_zoom(self, factor: float, centre: QPointF | None) -> None:
        """Both views to one scale; with `centre`, that image point stays in the middle."""
        self._zoom = max(_MIN_ZOOM, min(_MAX_ZOOM, float(factor)))
        transform = QTransform.fromScale(self._zoom, self._zoom)
        self._syncing = True
        try:
            for view in (self.overlay_view, self.original_view):
                anchor = view.transformationAnchor()
                view.setTransformationAnchor(QGraphicsView.ViewportAnchor.NoAnchor)
                view.setTransform(transform)
                view.setTransformationAnchor(anchor)
                if centre is not None:
                    view.centerOn(centre)
        finally:
            self._syncing = False
        if centre is None:
            self._copy_scroll(self.overlay_view, self.original_view)
        self._zoom_label.setText(f"{self._zoom * 100:.0f}%")

    def _copy_scroll(self, lead: QGraphicsView, other: QGraphicsView) -> None:
        self._sync_scroll(other.horizontalScrollBar(), lead.horizontalScrollBar().value())
        self._sync_scroll(other.verticalScrollBar(), lead.verticalScrollBar().value())

    def _apply_fit(self) -> None:
        if self._image_rect.isNull():
            self._set_zoom(1.0, None)
            return
        viewport = self.overlay_view.viewport().rect()
        if viewport.width() < 2 or viewport.height() < 2:
            return
        margin = 4
        sx = (viewport.width() - margin) / self._image_rect.width()
        sy = (viewport.height() - margin) / self._image_rect.height()
        self._set_zoom(min(sx, sy), self._image_rect.center())

    @Slot(float)
    def _on_wheel_zoom(self, factor: float) -> None:
        """The wheel zooms about the point under the mouse; the other view follows."""
        source = self.sender()
        self._fit = False
        self._zoom = max(_MIN_ZOOM, min(_MAX_ZOOM, self._zoom * factor))
        transform = QTransform.fromScale(self._zoom, self._zoom)
        views = [v for v in (self.original_view, self.overlay_view) if v is source]
        views += [v for v in (self.original_view, self.overlay_view) if v is not source]
        for view in views:
            view.setTransform(transform)
        self._copy_scroll(views[0], views[1])
        self._zoom_label.setText(f"{self._zoom * 100:.0f}%")

    def _sync_scroll(self, other: QScrollBar, value: int) -> None:
        if self._syncing:
            return
        self._syncing = True
        try:
            other.setValue(value)
        except RuntimeError:  # the widget is being destroyed
            pass
        finally:
            self._syncing = False

    @Slot(int)
    def _on_scrolled(self, value: int) -> None:
        """Mirror a scroll of one view onto the other, so both show the same region."""
        if self._syncing:
            return
        source = self.sender()
        try:
            o, v = self.original_view, self.overlay_view
            twins = {
                o.horizontalScrollBar(): v.horizontalScrollBar(),
                v.horizontalScrollBar(): o.horizontalScrollBar(),
                o.verticalScrollBar(): v.verticalScrollBar(),
                v.verticalScrollBar(): o.verticalScrollBar(),
            }
        except RuntimeError:  # one of the views is already destroyed
            return
        other = twins.get(source)
        if other is not None:
            self._sync_scroll(other, value)

    @Slot(int)
    def _on_opacity(self, value: int) -> None:
        self.overlay_item.setOpacity(value / 100.0)
        self._opacity_label.setText(f"{value}%")

    @Slot()
    def _on_view_resized(self) -> None:
        self._match_hidden_twin()
        if self._fit:
            self._apply_fit()

    def resizeEvent(self, event: QResizeEvent) -> None:  # noqa: N802
        super().resizeEvent(event)
        self._arrange_controls()
        self._size_details()

    def changeEvent(self, event: QEvent) -> None:  # noqa: N802
        super().changeEvent(event)
        if event.type() == QEvent.Type.PaletteChange:  # the light or dark theme was applied
            self._update_lock_icon()
            if self._chip is not None:
                self._set_chip(*self._chip)

    def showEvent(self, event: QShowEvent) -> None:  # noqa: N802
        super().showEvent(event)
        self._size_details()
        if self._fit:
            self._apply_fit()
