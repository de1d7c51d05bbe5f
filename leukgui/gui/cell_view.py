"""One cell up close: the original image beside its Grad-CAM overlay, zoomable, with details.

The two views always show the same region at the same scale, so a hot spot on the right can
be checked against the morphology on the left. The overlay is drawn from the cell's own
heatmap at full strength and faded by the opacity slider (item opacity o over the original
gives exactly `overlay(rgb, heatmap, alpha=o)`); when there is no usable heatmap the widget
says so instead of drawing anything.
"""

from __future__ import annotations

from PySide6.QtCore import QRectF, Qt, Signal, Slot
from PySide6.QtGui import (
    QColor,
    QFont,
    QPainter,
    QPixmap,
    QResizeEvent,
    QShowEvent,
    QTransform,
    QWheelEvent,
)
from PySide6.QtWidgets import (
    QFormLayout,
    QFrame,
    QGraphicsPixmapItem,
    QGraphicsScene,
    QGraphicsTextItem,
    QGraphicsView,
    QHBoxLayout,
    QLabel,
    QScrollBar,
    QSizePolicy,
    QSlider,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from leukgui.core.cells import cell_image
from leukgui.core.overlay import overlay
from leukgui.core.results import CellResult
from leukgui.gui.cell_model import rgb_to_qimage
from leukgui.gui.gallery import LABEL_COLORS, badge_spec

__all__ = ["CellInspector"]

_MIN_ZOOM, _MAX_ZOOM = 0.05, 32.0
_STEP = 1.25


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
        self.setBackgroundBrush(QColor("#2B2B2B"))  # C-NMC cells sit on black: dark surround
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


class _WrappingLabel(QLabel):
    """A word-wrapped label that asks for the height its lines need at its current width.

    Layouts inside a splitter ignore height-for-width, so a plain wrapped label keeps the
    height of one line and its second line (a long path, the model and its hash) is cut off.
    """

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.setWordWrap(True)

    def resizeEvent(self, event: QResizeEvent) -> None:  # noqa: N802
        super().resizeEvent(event)
        needed = self.heightForWidth(self.width())
        if needed > 0 and needed != self.minimumHeight():
            self.setMinimumHeight(needed)


class CellInspector(QWidget):
    """Original and Grad-CAM overlay side by side, opacity and zoom controls, cell details."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._cell: CellResult | None = None
        self._zoom = 1.0
        self._fit = True
        self._syncing = False
        self._image_rect = QRectF()

        # --- header: file name and final label --------------------------------------
        self._title = QLabel("No cell selected")
        title_font = QFont(self._title.font())
        title_font.setBold(True)
        title_font.setPointSizeF(title_font.pointSizeF() * 1.15)
        self._title.setFont(title_font)
        self._title.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self._label_chip = QLabel()
        self._label_chip.setVisible(False)

        # --- image views ------------------------------------------------------------
        self._original_scene = QGraphicsScene(self)
        self._overlay_scene = QGraphicsScene(self)
        self.original_view = _ZoomView(self._original_scene, self)
        self.overlay_view = _ZoomView(self._overlay_scene, self)
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
        self.original_view.resized.connect(self._on_view_resized)
        # Bound slots, not lambdas holding scroll bars: the views are torn down one after
        # the other, and a lambda would then touch a scroll bar that is already gone.
        for view in (self.original_view, self.overlay_view):
            view.horizontalScrollBar().valueChanged.connect(self._on_scrolled)
            view.verticalScrollBar().valueChanged.connect(self._on_scrolled)

        images = QHBoxLayout()
        images.setSpacing(6)
        for caption, view in (
            ("Original", self.original_view),
            ("Grad-CAM overlay", self.overlay_view),
        ):
            column = QVBoxLayout()
            column.setSpacing(2)
            label = QLabel(caption)
            label.setStyleSheet("color: #5F6368;")
            column.addWidget(label)
            column.addWidget(view, 1)
            images.addLayout(column, 1)

        # --- controls ---------------------------------------------------------------
        self.zoom_out_button = self._tool_button("−", "Zoom out (mouse wheel down)")
        self.zoom_in_button = self._tool_button("+", "Zoom in (mouse wheel up)")
        self.fit_button = self._tool_button("Fit", "Fit the whole image in view")
        self.actual_button = self._tool_button("1:1", "One image pixel per screen pixel")
        self.zoom_out_button.clicked.connect(self.zoom_out)
        self.zoom_in_button.clicked.connect(self.zoom_in)
        self.fit_button.clicked.connect(self.zoom_fit)
        self.actual_button.clicked.connect(lambda: self.set_zoom(1.0))
        self._zoom_label = QLabel("100%")
        self._zoom_label.setMinimumWidth(44)

        self.opacity_slider = QSlider(Qt.Orientation.Horizontal)
        self.opacity_slider.setRange(0, 100)
        self.opacity_slider.setValue(50)
        self.opacity_slider.setToolTip("Heatmap opacity")
        self.opacity_slider.setMinimumWidth(90)
        self._opacity_label = QLabel()
        self._opacity_label.setMinimumWidth(36)
        self.opacity_slider.valueChanged.connect(self._on_opacity)

        controls = QHBoxLayout()
        controls.setSpacing(4)
        for w in (self.zoom_out_button, self.zoom_in_button, self.fit_button, self.actual_button):
            controls.addWidget(w)
        controls.addWidget(self._zoom_label)
        controls.addStretch(1)
        controls.addWidget(QLabel("Heatmap"))
        controls.addWidget(self.opacity_slider, 1)
        controls.addWidget(self._opacity_label)

        # --- details ----------------------------------------------------------------
        self._details = QFormLayout()
        self._details.setLabelAlignment(Qt.AlignmentFlag.AlignRight)
        self._details.setHorizontalSpacing(10)
        self._details.setVerticalSpacing(3)
        self._detail_rows: list[tuple[str, QLabel]] = []
        details_box = QWidget()
        details_box.setLayout(self._details)

        header = QHBoxLayout()
        header.addWidget(self._title, 1)
        header.addWidget(self._label_chip)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(8, 8, 8, 8)
        layout.setSpacing(6)
        layout.addLayout(header)
        layout.addLayout(controls)
        layout.addLayout(images, 1)
        layout.addWidget(details_box)

        self._on_opacity(self.opacity_slider.value())
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
    ) -> None:
        """Show `cell` (None clears the inspector). Decodes the image on the GUI thread: a
        C-NMC cell (450 px) takes a few milliseconds."""
        self._cell = cell
        for item in (self.original_item, self.base_item, self.overlay_item):
            item.setPixmap(QPixmap())
        self._original_note.setVisible(False)
        self._overlay_note.setVisible(False)
        if cell is None:
            self._title.setText("No cell selected")
            self._label_chip.setVisible(False)
            self._set_details([])
            self._show_note(self._original_note, "Select a cell in the gallery.")
            self._image_rect = QRectF()
            return

        self._title.setText(
            cell.path.name if not cell.in_field else f"{cell.path.name} #{cell.cell_index}"
        )
        self._title.setToolTip(str(cell.path))
        self._set_chip(final_label, reviewed)

        image_problem = None
        heat_problem = None
        size_text = f"{cell.width} × {cell.height} px"
        try:
            rgb = cell_image(cell)  # a smear-field cell: the crop the model saw
        except Exception as exc:  # noqa: BLE001 - an unreadable file is shown, not raised
            rgb = None
            image_problem = str(exc) or exc.__class__.__name__
        if rgb is not None:
            height, width = rgb.shape[:2]
            size_text = f"{width} × {height} px"
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
            self._image_rect = QRectF(0, 0, width, height)
        else:
            self._image_rect = QRectF()
            message = f"This image cannot be read:\n{image_problem}"
            self._show_note(self._original_note, message)
            self._show_note(self._overlay_note, "No overlay: the image cannot be read.")
        if heat_problem is not None:
            self._show_note(
                self._overlay_note, f"No Grad-CAM heatmap for this cell:\n{heat_problem}"
            )

        for scene in (self._original_scene, self._overlay_scene):
            rect = self._image_rect if not self._image_rect.isNull() else QRectF(0, 0, 300, 120)
            scene.setSceneRect(rect)

        rows = [
            ("File", cell.path.name),
            ("Path", str(cell.path)),
            ("Image", size_text if image_problem is None else f"cannot be read: {image_problem}"),
            ("Sample", cell.sample),
        ]
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
        rows.append(("Model", model_text or "—"))
        self._set_details(rows)
        self._fit = True
        self._apply_fit()

    def details_text(self) -> str:
        """The details panel as "Key: value" lines (for copying and for tests)."""
        return "\n".join(f"{key}: {label.text()}" for key, label in self._detail_rows)

    def opacity(self) -> float:
        """Overlay opacity, 0..1."""
        return self.opacity_slider.value() / 100.0

    def zoom(self) -> float:
        """Screen pixels per image pixel."""
        return self._zoom

    def set_zoom(self, factor: float) -> None:
        """Zoom both views to `factor` (1.0 = one image pixel per screen pixel)."""
        self._fit = False
        self._set_zoom(factor)

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
        button.setMinimumWidth(30)
        return button

    @staticmethod
    def _note_item(scene: QGraphicsScene) -> QGraphicsTextItem:
        item = QGraphicsTextItem()
        item.setDefaultTextColor(QColor("#F1F3F4"))
        item.setTextWidth(280)
        item.setZValue(10)
        item.setVisible(False)
        scene.addItem(item)
        return item

    def _show_note(self, item: QGraphicsTextItem, text: str) -> None:
        item.setPlainText(text)
        item.setPos(10, 10)
        item.setVisible(True)

    def _set_chip(self, label: str, reviewed: bool) -> None:
        spec = badge_spec(label)
        color = LABEL_COLORS.get(label, LABEL_COLORS["UNCLASSIFIABLE"])
        text = label + ("  ✓ reviewed" if reviewed else "")
        self._label_chip.setText(text)
        filled = spec.shape == "filled_square"
        style = "dashed" if spec.shape == "dashed_outline" else "solid"
        self._label_chip.setStyleSheet(
            f"QLabel {{ border: 2px {style} {color}; border-radius: 3px; padding: 1px 6px;"
            f" font-weight: bold; color: {'white' if filled else color};"
            f" background: {color if filled else 'white'}; }}"
        )
        self._label_chip.setVisible(True)

    def _set_details(self, rows: list[tuple[str, str]]) -> None:
        while self._details.rowCount():
            self._details.removeRow(0)
        self._detail_rows = []
        for key, value in rows:
            label = _WrappingLabel(value) if key in ("Path", "Model") else QLabel(value)
            label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
            key_label = QLabel(key)
            key_label.setStyleSheet("color: #5F6368;")
            self._details.addRow(key_label, label)
            self._detail_rows.append((key, label))

    def _set_zoom(self, factor: float) -> None:
        self._zoom = max(_MIN_ZOOM, min(_MAX_ZOOM, float(factor)))
        transform = QTransform.fromScale(self._zoom, self._zoom)
        self._syncing = True
        try:
            for view in (self.original_view, self.overlay_view):
                view.setTransform(transform)
        finally:
            self._syncing = False
        # Same transform, same scene size: copy the scroll position so both show one region.
        for a, b in (
            (self.original_view.horizontalScrollBar(), self.overlay_view.horizontalScrollBar()),
            (self.original_view.verticalScrollBar(), self.overlay_view.verticalScrollBar()),
        ):
            self._sync_scroll(b, a.value())
        self._zoom_label.setText(f"{self._zoom * 100:.0f}%")

    def _apply_fit(self) -> None:
        if self._image_rect.isNull():
            self._set_zoom(1.0)
            return
        viewport = self.original_view.viewport().rect()
        if viewport.width() < 2 or viewport.height() < 2:
            return
        margin = 4
        sx = (viewport.width() - margin) / self._image_rect.width()
        sy = (viewport.height() - margin) / self._image_rect.height()
        self._set_zoom(min(sx, sy))
        for view in (self.original_view, self.overlay_view):
            view.centerOn(self._image_rect.center())

    @Slot(float)
    def _on_wheel_zoom(self, factor: float) -> None:
        source = self.sender()
        self._fit = False
        self._zoom = max(_MIN_ZOOM, min(_MAX_ZOOM, self._zoom * factor))
        transform = QTransform.fromScale(self._zoom, self._zoom)
        # Zoom the view under the mouse around the cursor, then make the other one follow.
        views = [v for v in (self.original_view, self.overlay_view) if v is source]
        views += [v for v in (self.original_view, self.overlay_view) if v is not source]
        for view in views:
            view.setTransform(transform)
        lead = views[0]
        other = views[1]
        self._sync_scroll(other.horizontalScrollBar(), lead.horizontalScrollBar().value())
        self._sync_scroll(other.verticalScrollBar(), lead.verticalScrollBar().value())
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
        if self._fit:
            self._apply_fit()

    def showEvent(self, event: QShowEvent) -> None:  # noqa: N802
        super().showEvent(event)
        if self._fit:
            self._apply_fit()
