"""The cell gallery's model, filters, thumbnails, delegate and inspector (pytest-qt, offscreen)."""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from PySide6.QtCore import QModelIndex, QPoint, QPointF, QRect, QRectF, Qt
from PySide6.QtGui import QColor, QFont, QImage, QPainter, QPixmap, QWheelEvent
from PySide6.QtWidgets import QListView, QStyle, QStyleOptionViewItem

from leukgui.core.imaging import decode_image
from leukgui.core.overlay import overlay
from leukgui.core.results import ALL, HEM, UNCERTAIN, CellResult
from leukgui.core.synthetic import write_dataset
from leukgui.gui.cell_model import (
    UNCLASSIFIABLE,
    CellFilterProxy,
    CellListModel,
    CellRole,
    ChangedRole,
    LabelRole,
    LockedRole,
    ModelCallRole,
    ModelLabelRole,
    PAllRole,
    ReviewedRole,
    SampleRole,
    UncertaintyRole,
    path_key,
    rgb_to_qimage,
)
from leukgui.gui.cell_view import CellInspector
from leukgui.gui.gallery import CellDelegate, GalleryView, badge_spec, paint_badge

THRESHOLD = 0.5
BAND = (0.4, 0.6)


def _label_for(p: float) -> str:
    if BAND[0] <= p <= BAND[1]:
        return UNCERTAIN
    return ALL if p > THRESHOLD else HEM


def _blob_heatmap(rng: np.random.Generator, side: int = 28) -> np.ndarray:
    """A smooth single hot spot, like a real Grad-CAM map (0..1 float32)."""
    yy, xx = np.mgrid[0:side, 0:side].astype(np.float32)
    cy, cx = rng.uniform(6, side - 6, size=2)
    heat = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * rng.uniform(3, 6) ** 2))
    return (heat / heat.max()).astype(np.float32)


def _make_cells(paths: list[Path], seed: int = 1, samples: int = 3) -> list[CellResult]:
    rng = np.random.default_rng(seed)
    cells = []
    for i, path in enumerate(paths):
        p = float(rng.uniform(0, 1))
        cells.append(
            CellResult(
                path=path,
                sample=f"S{i % samples + 1}",
                p_all=p,
                label=_label_for(p),
                heatmap=_blob_heatmap(rng),
                width=128,
                height=128,
                truth=path.parent.name.upper() if path.parent.name in ("all", "hem") else None,
                subject=f"P{i % 2 + 1}",
            )
        )
    return cells


@pytest.fixture(scope="module")
def image_paths(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    folder = tmp_path_factory.mktemp("cells")
    return write_dataset(folder, 20, seed=3, fmt="png", size=128)


@pytest.fixture
def cells(image_paths: list[Path]) -> list[CellResult]:
    return _make_cells(image_paths)


@pytest.fixture
def model(qtbot) -> CellListModel:
    m = CellListModel()
    yield m
    m.thumbnail_cache.shutdown()


class FakeReview:
    """Stands in for leukgui.core.review.ReviewState (final_label / is_reviewed only)."""

    def __init__(self) -> None:
        self.labels: dict[str, str] = {}

    def set(self, cell: CellResult, label: str) -> None:
        self.labels[path_key(cell.path)] = label

    def final_label(self, cell: CellResult) -> str:
        return self.labels.get(path_key(cell.path), cell.label)

    def is_reviewed(self, cell: CellResult) -> bool:
        return path_key(cell.path) in self.labels


def _wheel(widget, delta: int, ctrl: bool = False) -> None:
    pos = QPointF(widget.width() / 2, widget.height() / 2)
    mods = Qt.KeyboardModifier.ControlModifier if ctrl else Qt.KeyboardModifier.NoModifier
    event = QWheelEvent(
        pos,
        widget.mapToGlobal(pos),
        QPoint(0, 0),
        QPoint(0, delta),
        Qt.MouseButton.NoButton,
        mods,
        Qt.ScrollPhase.NoScrollPhase,
        False,
    )
    widget.wheelEvent(event)


def _proxy_paths(proxy: CellFilterProxy) -> list[Path]:
    return [proxy.index(r, 0).data(CellRole).path for r in range(proxy.rowCount())]


# -------------------------------------------------------------------------------- model


def test_append_chunks_sets_row_count(qtbot, model: CellListModel, cells) -> None:
    inserted = []
    model.rowsInserted.connect(lambda _p, first, last: inserted.append((first, last)))
    model.append_cells(cells[:7])
    assert model.rowCount() == 7
    model.append_cells(cells[7:20])
    model.append_cells(cells[20:])
    assert model.rowCount() == len(cells)
    assert inserted == [(0, 6), (7, 19), (20, len(cells) - 1)]  # one insert per chunk
    model.append_cells(cells[:3])  # already listed: ignored
    assert model.rowCount() == len(cells)
    assert [model.cell(r) for r in range(model.rowCount())] == cells
    assert model.row_of(cells[5].path) == 5
    assert model.row_of(str(cells[5].path)) == 5
    assert model.row_of("/no/such/cell.png") is None

    index = model.index(3)
    cell = cells[3]
    assert index.data(Qt.ItemDataRole.DisplayRole) == cell.path.name
    assert index.data(CellRole) is cell
    assert index.data(LabelRole) == cell.label
    assert index.data(ModelLabelRole) == cell.label
    assert index.data(PAllRole) == pytest.approx(cell.p_all)
    assert index.data(ReviewedRole) is False
    assert index.data(SampleRole) == cell.sample
    assert index.data(UncertaintyRole) == pytest.approx(abs(cell.p_all - 0.5))
    tip = index.data(Qt.ItemDataRole.ToolTipRole)
    assert str(cell.path) in tip and f"{cell.p_all:.3f}" in tip and cell.label in tip
    assert model.samples() == ["S1", "S2", "S3"]

    model.clear()
    assert model.rowCount() == 0
    assert model.row_of(cells[0].path) is None


def test_filters_match_a_plain_python_filter(qtbot, model: CellListModel, cells) -> None:
    review = FakeReview()
    for cell in cells[::4]:
        review.set(cell, UNCLASSIFIABLE)
    for cell in cells[1::5]:
        review.set(cell, HEM)
    model.set_review(review)
    model.append_cells(cells)
    proxy = CellFilterProxy()
    proxy.setSourceModel(model)

    def expected(labels=None, sample=None, reviewed=None) -> list[Path]:
        return [
            c.path
            for c in cells
            if (labels is None or review.final_label(c) in labels)
            and (sample is None or c.sample == sample)
            and (reviewed is None or review.is_reviewed(c) == reviewed)
        ]

    cases = [
        {},
        {"labels": {ALL}},
        {"labels": {HEM, UNCERTAIN}},
        {"labels": {UNCLASSIFIABLE}},
        {"sample": "S2"},
        {"reviewed": True},
        {"reviewed": False},
        {"labels": {ALL, HEM}, "sample": "S1", "reviewed": False},
        {"labels": set()},
    ]
    for case in cases:
        proxy.set_labels(case.get("labels"))
        proxy.set_sample(case.get("sample"))
        proxy.set_reviewed(case.get("reviewed"))
        assert _proxy_paths(proxy) == expected(**case), case
    with pytest.raises(ValueError):
        proxy.set_labels({"BLAST"})


def test_sort_modes(qtbot, model: CellListModel, cells) -> None:
    model.append_cells(cells)
    proxy = CellFilterProxy()
    proxy.setSourceModel(model)
    proxy.set_sort("p_all")
    by_p = sorted(cells, key=lambda c: -c.p_all)
    assert _proxy_paths(proxy) == [c.path for c in by_p]
    proxy.set_sort("least_certain")
    by_u = sorted(cells, key=lambda c: abs(c.p_all - 0.5))
    assert _proxy_paths(proxy) == [c.path for c in by_u]
    model.set_threshold(0.3)  # "least certain" is measured from the decision threshold
    by_u3 = sorted(cells, key=lambda c: abs(c.p_all - 0.3))
    assert _proxy_paths(proxy) == [c.path for c in by_u3]
    proxy.set_sort("file")
    assert _proxy_paths(proxy) == [c.path for c in cells]
    with pytest.raises(ValueError):
        proxy.set_sort("size")

    # Sorted and filtered at once, and new chunks land in their sorted place.
    proxy.set_sort("p_all")
    proxy.set_labels({ALL, UNCERTAIN})
    extra = _make_cells([Path(f"/tmp/extra_{i}.png") for i in range(15)], seed=9)
    model.append_cells(extra)
    everything = cells + extra
    want = sorted((c for c in everything if c.label in (ALL, UNCERTAIN)), key=lambda c: -c.p_all)
    assert _proxy_paths(proxy) == [c.path for c in want]
    assert proxy.row_of(want[2].path) == 2
    assert proxy.cell(0) is want[0]


# -------------------------------------------------------------------------------- thumbnails


def test_thumbnails_load_asynchronously(qtbot, model: CellListModel, cells) -> None:
    model.append_cells(cells[:4])
    model.set_thumb_size(96)
    cache = model.thumbnail_cache
    index = model.index(0)
    first = index.data(Qt.ItemDataRole.DecorationRole)
    assert first.cacheKey() == cache.placeholder().cacheKey()  # neutral tile while loading
    with (
        qtbot.waitSignal(model.dataChanged, timeout=10_000) as changed,
        qtbot.waitSignal(cache.ready, timeout=10_000) as ready,
    ):
        pass
    assert ready.args == [path_key(cells[0].path), False]
    assert changed.args[0].row() == 0
    assert Qt.ItemDataRole.DecorationRole in changed.args[2]
    pix = index.data(Qt.ItemDataRole.DecorationRole)
    assert isinstance(pix, QPixmap)
    assert pix.cacheKey() not in (cache.placeholder().cacheKey(), cache.unreadable().cacheKey())
    assert (pix.width(), pix.height()) == (96, 96)

    # The plain tile is the model's padded square, at the cache's size.
    plain = pix.toImage().convertToFormat(QImage.Format.Format_RGB888)
    assert plain.pixelColor(0, 0) == QColor(0, 0, 0)  # C-NMC background is black

    # With heatmaps on, the tile is the Grad-CAM overlay of the same cell.
    model.set_show_heatmaps(True)
    assert index.data(Qt.ItemDataRole.DecorationRole).cacheKey() == cache.placeholder().cacheKey()
    with qtbot.waitSignal(cache.ready, timeout=10_000) as ready:
        pass
    assert ready.args == [path_key(cells[0].path), True]
    heat = index.data(Qt.ItemDataRole.DecorationRole)
    assert heat.size() == pix.size()
    assert heat.toImage() != pix.toImage()
    assert cache.contains(cells[0].path, heatmap=True)
    assert len(cache) == 2


def test_unreadable_file_gets_the_unreadable_tile(qtbot, model: CellListModel, tmp_path) -> None:
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\nthis is not really a png")
    missing = tmp_path / "gone.bmp"
    cells = _make_cells([bad, missing])
    model.append_cells(cells)
    cache = model.thumbnail_cache
    for row in range(2):
        model.index(row).data(Qt.ItemDataRole.DecorationRole)
    with qtbot.waitSignals([cache.ready, cache.ready], timeout=10_000):
        pass
    cache.wait_for_done()
    qtbot.waitUntil(lambda: cache.pending_count() == 0, timeout=5_000)
    for row, cell in enumerate(cells):
        pix = model.index(row).data(Qt.ItemDataRole.DecorationRole)
        assert pix.cacheKey() == cache.unreadable().cacheKey()
        assert cache.failed(cell.path)
        assert "cannot be read" in model.index(row).data(Qt.ItemDataRole.ToolTipRole)
    assert cache.pending_count() == 0  # a failure is remembered, not retried on every paint


def test_cache_is_bounded(qtbot, cells) -> None:
    model = CellListModel()
    from leukgui.gui.cell_model import ThumbnailCache

    cache = ThumbnailCache(64, max_entries=3)
    model = CellListModel(cache=cache)
    model.append_cells(cells[:6])
    for row in range(6):
        model.index(row).data(Qt.ItemDataRole.DecorationRole)
    qtbot.waitUntil(lambda: cache.pending_count() == 0, timeout=10_000)
    assert len(cache) == 3
    cache.shutdown()


# -------------------------------------------------------------------------------- review


def test_review_changes_labels_and_emits(qtbot, model: CellListModel, cells) -> None:
    model.append_cells(cells)
    proxy = CellFilterProxy()
    proxy.setSourceModel(model)
    review = FakeReview()
    model.set_review(review)
    target = next(c for c in cells if c.label == ALL)
    row = model.row_of(target.path)
    proxy.set_labels({ALL})
    assert proxy.row_of(target.path) is not None

    review.set(target, HEM)
    with qtbot.waitSignal(model.dataChanged, timeout=1000) as blocker:
        model.cell_changed(target.path)
    assert blocker.args[0].row() == row == blocker.args[1].row()
    index = model.index(row)
    assert index.data(LabelRole) == HEM
    assert index.data(ModelLabelRole) == ALL
    assert index.data(ReviewedRole) is True
    assert "Reviewed: HEM" in index.data(Qt.ItemDataRole.ToolTipRole)
    assert proxy.row_of(target.path) is None  # the ALL filter drops it at once

    # The short badges ("?", "U") are spelled out in full in the tooltip.
    uncertain = next(c for c in cells if c.label == UNCERTAIN)
    tip = model.index(model.row_of(uncertain.path)).data(Qt.ItemDataRole.ToolTipRole)
    assert badge_spec(UNCERTAIN).text == "?" and "Model: UNCERTAIN" in tip
    review.set(uncertain, UNCLASSIFIABLE)
    model.cell_changed(uncertain.path)
    tip = model.index(model.row_of(uncertain.path)).data(Qt.ItemDataRole.ToolTipRole)
    assert badge_spec(UNCLASSIFIABLE).text == "U" and "Reviewed: UNCLASSIFIABLE" in tip

    model.set_review(None)
    assert index.data(LabelRole) == ALL and index.data(ReviewedRole) is False
    model.cell_changed("/not/listed.png")  # harmless


# -------------------------------------------------------------------------------- delegate


def test_badges_differ_without_colour() -> None:
    specs = {label: badge_spec(label) for label in (ALL, HEM, UNCERTAIN, UNCLASSIFIABLE)}
    assert [s.text for s in specs.values()] == ["ALL", "HEM", "?", "U"]
    assert len({s.shape for s in specs.values()}) == 4
    images = []
    for spec in specs.values():
        image = QImage(60, 20, QImage.Format.Format_ARGB32)
        image.fill(QColor("white"))
        painter = QPainter(image)
        font = QFont()
        font.setPixelSize(12)
        paint_badge(painter, QRectF(0, 0, 60, 20), spec, font)
        painter.end()
        # Grey-scale: the shapes and texts must still tell the labels apart.
        images.append(image.convertToFormat(QImage.Format.Format_Grayscale8))
    for i in range(len(images)):
        for j in range(i + 1, len(images)):
            assert images[i] != images[j]


def test_delegate_paints_tiles(qtbot, model: CellListModel, cells) -> None:
    review = FakeReview()
    model.set_review(review)
    model.append_cells(cells)
    labelled = {}
    for row, cell in enumerate(cells):
        labelled.setdefault(cell.label, row)
    review.set(cells[0], UNCLASSIFIABLE)
    model.cell_changed(cells[0].path)
    delegate = CellDelegate(thumb_size=96)
    option = QStyleOptionViewItem()
    size = delegate.sizeHint(option, QModelIndex())
    assert 96 < size.width() < 96 + 24 and size.height() > 96
    assert delegate.sizeHint(option, model.index(1)) == size  # uniform tiles
    option.rect = QRect(0, 0, size.width(), size.height())
    option.state = QStyle.StateFlag.State_Enabled

    def render(row: int, selected: bool = False) -> QImage:
        image = QImage(size, QImage.Format.Format_ARGB32)
        image.fill(QColor("white"))
        painter = QPainter(image)
        opt = QStyleOptionViewItem(option)
        if selected:
            opt.state |= QStyle.StateFlag.State_Selected | QStyle.StateFlag.State_HasFocus
        delegate.paint(painter, opt, model.index(row))
        painter.end()
        return image

    tiles = [render(row) for row in labelled.values()]
    assert len(tiles) >= 2
    assert tiles[0] != tiles[1]
    assert render(0) != render(0, selected=True)  # selection is visible
    reviewed_tile = render(0)
    review.labels.clear()
    model.cell_changed(cells[0].path)
    assert render(0) != reviewed_tile  # the check mark / badge changed


def test_gallery_view(qtbot, model: CellListModel, cells) -> None:
    model.append_cells(cells)
    proxy = CellFilterProxy()
    proxy.setSourceModel(model)
    view = GalleryView(thumb_size=80)
    qtbot.addWidget(view)
    view.setModel(proxy)
    view.resize(700, 500)
    view.show()
    assert view.viewMode() == QListView.ViewMode.IconMode
    assert view.uniformItemSizes()
    assert view.layoutMode() == QListView.LayoutMode.Batched
    assert view.movement() == QListView.Movement.Static
    assert view.selectionMode() == QListView.SelectionMode.SingleSelection
    assert not view.dragEnabled()
    assert model.thumbnail_cache.size() == 80

    with qtbot.waitSignal(view.current_cell_changed, timeout=1000) as blocker:
        view.setCurrentIndex(proxy.index(2, 0))
    assert blocker.args == [cells[2]]
    assert view.current_cell() is cells[2]
    assert view.select_path(cells[5].path)
    assert view.current_cell() is cells[5]

    _wheel(view, 120, ctrl=True)  # Ctrl + wheel grows the tiles
    assert view.thumb_size() == 96
    _wheel(view, -240, ctrl=True)
    assert view.thumb_size() == 64
    view.set_thumb_size(1000)
    assert view.thumb_size() == 256
    view.set_thumb_size(10)
    assert view.thumb_size() == 64
    assert model.thumbnail_cache.size() == 64

    # Painting requests thumbnails for visible tiles only, and they arrive.
    view.grab()
    qtbot.waitUntil(lambda: len(model.thumbnail_cache) > 0, timeout=10_000)
    model.thumbnail_cache.wait_for_done()
    assert len(model.thumbnail_cache) <= len(cells)


# -------------------------------------------------------------------------------- inspector


def test_inspector_shows_a_cell(qtbot, cells) -> None:
    inspector = CellInspector(layout="side by side")  # two views that zoom and scroll together
    qtbot.addWidget(inspector)
    inspector.resize(800, 600)
    inspector.show()
    cell = cells[0]
    inspector.show_cell(
        cell, final_label=HEM, reviewed=True, model_text="demo-model v1 (SHA-256 abc123…)"
    )
    details = inspector.details_text()
    assert cell.path.name in details and str(cell.path) in details
    assert f"P(ALL): {cell.p_all:.3f}" in details
    assert "HEM (reviewed)" in details and f"Model label: {cell.label}" in details
    assert "demo-model v1" in details and "128 × 128 px" in details
    assert f"Subject: {cell.subject}" in details and "Sample: S1" in details

    # The overlay is the cell's real heatmap on the real image, at the image's resolution.
    rgb = decode_image(cell.path)
    expected = rgb_to_qimage(overlay(rgb, cell.heatmap, alpha=1.0))
    shown = inspector.overlay_item.pixmap().toImage().convertToFormat(QImage.Format.Format_RGB888)
    assert shown == expected
    assert inspector.original_item.pixmap().size() == inspector.overlay_item.pixmap().size()

    inspector.opacity_slider.setValue(20)
    assert inspector.overlay_item.opacity() == pytest.approx(0.2)
    inspector.opacity_slider.setValue(100)
    assert inspector.overlay_item.opacity() == pytest.approx(1.0)

    before = inspector.original_view.transform().m11()
    inspector.zoom_in_button.click()
    after = inspector.original_view.transform().m11()
    assert after == pytest.approx(before * 1.25)
    assert inspector.overlay_view.transform().m11() == pytest.approx(after)  # views stay synced
    inspector.zoom_out_button.click()
    assert inspector.zoom() == pytest.approx(before)
    inspector.set_zoom(0.25)
    assert inspector.original_view.transform().m11() == pytest.approx(0.25)
    inspector.fit_button.click()  # the whole 128 px image fills the view again
    assert inspector.zoom() == pytest.approx(before)
    viewport = inspector.original_view.viewport().rect()
    assert 128 * inspector.zoom() <= min(viewport.width(), viewport.height())

    inspector.zoom_fit()
    fitted = inspector.zoom()
    _wheel(inspector.overlay_view, 120)  # one notch up on either view zooms both
    assert inspector.zoom() == pytest.approx(fitted * 1.25)
    assert inspector.original_view.transform().m11() == pytest.approx(fitted * 1.25)
    assert inspector.overlay_view.transform().m11() == pytest.approx(fitted * 1.25)

    inspector.set_zoom(6.0)  # larger than the view: scrolling one view scrolls the other
    bar = inspector.original_view.horizontalScrollBar()
    assert bar.maximum() > 0
    bar.setValue(bar.maximum() // 3)
    assert inspector.overlay_view.horizontalScrollBar().value() == bar.maximum() // 3
    inspector.overlay_view.verticalScrollBar().setValue(7)
    assert inspector.original_view.verticalScrollBar().value() == 7

    inspector.show_cell(None, final_label="", reviewed=False, model_text="")
    assert inspector.cell() is None


def test_inspector_details_are_not_cut_off_in_a_narrow_splitter(qtbot, cells, request) -> None:
    """Wrapped lines (a long path, the model with its hash) stay inside the panel."""
    from PySide6.QtWidgets import QSplitter, QTextEdit

    splitter = QSplitter()
    qtbot.addWidget(splitter)
    splitter.addWidget(QTextEdit())
    inspector = CellInspector()
    splitter.addWidget(inspector)
    splitter.resize(1000, 600)
    splitter.setSizes([720, 280])  # about the inspector's minimum width
    splitter.show()
    model = "efficientnetb0-demo v1 (SHA-256 8602817fee09…)"
    # A path short enough for one line: then only the model line wraps, the case that was cut.
    short = Path(tempfile.mkdtemp(prefix="c")) / "c.png"
    request.addfinalizer(lambda: shutil.rmtree(short.parent, ignore_errors=True))
    shutil.copy(cells[0].path, short)
    cell = CellResult(**{**cells[0].__dict__, "path": short})
    inspector.show_cell(cell, final_label=HEM, reviewed=False, model_text=model)
    qtbot.waitExposed(splitter)
    qtbot.wait(50)
    label = next(lab for k, lab in inspector._detail_rows if k == "Model")
    one_line = label.fontMetrics().lineSpacing()
    assert label.heightForWidth(label.width()) > 1.5 * one_line  # it does wrap here
    assert label.height() >= label.heightForWidth(label.width())
    # The details scroll (the cell keeps most of a short panel): the model line is reachable
    # in full, and inside the panel once scrolled to.
    area = inspector._details_area
    area.ensureWidgetVisible(label)
    qtbot.wait(20)
    top = label.mapTo(area.viewport(), label.rect().topLeft()).y()
    bottom = label.mapTo(area.viewport(), label.rect().bottomLeft()).y()
    assert top >= 0 and bottom <= area.viewport().height(), "the model line is cut off"
    assert label.mapTo(inspector, label.rect().bottomLeft()).y() <= inspector.height()


def test_inspector_reports_unreadable_images_and_missing_heatmaps(qtbot, cells, tmp_path) -> None:
    inspector = CellInspector()
    qtbot.addWidget(inspector)
    bad = tmp_path / "half.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 truncated")
    cell = _make_cells([bad])[0]
    inspector.show_cell(cell, final_label=cell.label, reviewed=False, model_text="m")
    assert "cannot be read" in inspector.details_text()
    assert inspector.original_item.pixmap().isNull()
    assert inspector.overlay_item.pixmap().isNull()
    assert "cannot be read" in inspector._original_note.toPlainText()

    broken = CellResult(**{**cells[1].__dict__, "heatmap": np.zeros((0,), np.float32)})
    inspector.show_cell(broken, final_label=broken.label, reviewed=False, model_text="m")
    assert not inspector.original_item.pixmap().isNull()
    assert inspector.overlay_item.pixmap().isNull()  # never a stand-in heatmap
    assert "Grad-CAM: not available" in inspector.details_text()


# -------------------------------------------------------------------------------- scale


def test_ten_thousand_cells_filter_and_sort_fast(qtbot) -> None:
    n = 10_000
    rng = np.random.default_rng(0)
    heat = np.zeros((28, 28), np.float32)
    ps = rng.uniform(0, 1, n)
    cells = [
        CellResult(
            path=Path(f"/data/run/S{i % 7}/cell_{i:05d}.bmp"),
            sample=f"S{i % 7}",
            p_all=float(p),
            label=_label_for(float(p)),
            heatmap=heat,
            width=450,
            height=450,
        )
        for i, p in enumerate(ps)
    ]
    model = CellListModel()
    t0 = time.perf_counter()
    for start in range(0, n, 512):
        model.append_cells(cells[start : start + 512])
    t_append = time.perf_counter() - t0
    proxy = CellFilterProxy()
    proxy.setSourceModel(model)
    assert proxy.rowCount() == n

    t0 = time.perf_counter()
    proxy.set_labels({ALL})
    n_all = proxy.rowCount()
    t_filter = time.perf_counter() - t0
    assert n_all == sum(c.label == ALL for c in cells)

    t0 = time.perf_counter()
    proxy.set_labels(None)
    proxy.set_sort("p_all")
    proxy.rowCount()
    t_sort_p = time.perf_counter() - t0

    t0 = time.perf_counter()
    proxy.set_sort("least_certain")
    proxy.rowCount()
    t_sort_u = time.perf_counter() - t0
    order = proxy.source_rows()
    uncert = np.abs(ps - 0.5)
    assert np.all(np.diff(uncert[order]) >= 0)

    t0 = time.perf_counter()
    proxy.set_sample("S3")
    proxy.set_labels({HEM, UNCERTAIN})
    m = proxy.rowCount()
    t_both = time.perf_counter() - t0
    assert m == sum(c.sample == "S3" and c.label in (HEM, UNCERTAIN) for c in cells)

    print(
        f"\n10k cells: append {t_append * 1000:.0f} ms, filter {t_filter * 1000:.0f} ms, "
        f"sort P(ALL) {t_sort_p * 1000:.0f} ms, sort least-certain {t_sort_u * 1000:.0f} ms, "
        f"sample+label filter on sorted {t_both * 1000:.0f} ms"
    )
    assert t_filter + t_sort_p + t_sort_u + t_both < 10.0  # generous: CI machines are shared


# -------------------------------------------------------------------------------- review marks
# Re-labelled cells read "HEM → ALL", "Changed by review" lists exactly them (live), signed-off
# cells carry a padlock, smear-field cells are numbered, and tiles follow the dark theme.


def _review_cells(root: Path) -> list[CellResult]:
    """Model calls of every kind in two samples (S1 single cells, S2 two cells of a field)."""
    heat = np.zeros((28, 28), np.float32)

    def one(name: str, sample: str, p: float, label: str, **kw) -> CellResult:
        return CellResult(root / sample / name, sample, p, label, heat, 40, 30, **kw)

    field = root / "S2" / "BloodImage_00010.jpg"
    return [
        one("a.png", "S1", 0.9, ALL),
        one("b.png", "S1", 0.1, HEM),
        one("c.png", "S1", 0.55, UNCERTAIN),  # the call at threshold 0.5: ALL
        one("d.png", "S1", 0.45, UNCERTAIN),  # the call: HEM
        CellResult(field, "S2", 0.8, ALL, heat, 640, 480, box=(10, 10, 90, 90), cell_index=1),
        CellResult(field, "S2", 0.2, HEM, heat, 640, 480, box=(200, 50, 280, 130), cell_index=2),
    ]


def _reviewed_model(qtbot, tmp_path: Path):
    from leukgui.core.review import ReviewState

    cells = _review_cells(tmp_path)
    review = ReviewState(threshold=THRESHOLD)
    model = CellListModel()
    model.set_threshold(THRESHOLD)
    model.set_review(review)
    model.append_cells(cells)
    return model, review, cells


def _tile(
    delegate: CellDelegate,
    index,
    palette=None,
    fill: str = "white",
) -> QImage:
    option = QStyleOptionViewItem()
    if palette is not None:
        option.palette = palette
    size = delegate.sizeHint(option, index)
    option.rect = QRect(0, 0, size.width(), size.height())
    option.state = QStyle.StateFlag.State_Enabled
    image = QImage(size, QImage.Format.Format_ARGB32)
    image.fill(QColor(fill))
    painter = QPainter(image)
    delegate.paint(painter, option, index)
    painter.end()
    return image


def _badge_row(delegate: CellDelegate) -> range:
    top = 7 + delegate.thumb_size() + 3  # _PAD + thumbnail + _GAP
    return range(top + 3, top + delegate._row_height() - 3)


def _first_column_of(image: QImage, rows: range, colour: str, tol: int = 40) -> int | None:
    """The leftmost x where a pixel in `rows` is within `tol` of `colour` (per channel)."""
    want = QColor(colour)
    for x in range(image.width()):
        for y in rows:
            c = image.pixelColor(x, y)
            if (
                abs(c.red() - want.red()) <= tol
                and abs(c.green() - want.green()) <= tol
                and abs(c.blue() - want.blue()) <= tol
            ):
                return x
    return None


def test_relabelled_cell_reads_model_then_reviewed(qtbot, tmp_path) -> None:
    from leukgui.gui.gallery import LABEL_COLORS, badge_text

    model, review, cells = _reviewed_model(qtbot, tmp_path)
    a, b, c, d = cells[:4]
    review.set_label(a, ALL, "Dr. A")  # confirmed: unchanged
    review.set_label(b, ALL, "Dr. A")  # HEM -> ALL
    review.set_label(c, HEM, "Dr. A")  # UNCERTAIN, called ALL at the threshold -> HEM
    review.set_label(d, HEM, "Dr. A")  # UNCERTAIN, called HEM -> HEM: the call confirmed
    model.refresh_review()
    delegate = CellDelegate(thumb_size=128)

    def idx(cell: CellResult):
        return model.index(model.row_of(cell.key))

    assert delegate.badge_text(idx(a)) == "ALL"
    assert delegate.badge_text(idx(b)) == "HEM → ALL"
    assert delegate.badge_text(idx(c)) == "ALL → HEM"
    assert delegate.badge_text(idx(d)) == "HEM"
    assert badge_text(UNCLASSIFIABLE, HEM, True) == "HEM → U"
    assert [idx(x).data(ChangedRole) for x in (a, b, c, d)] == [False, True, True, False]
    assert idx(c).data(ModelCallRole) == review.suggestion(c) == ALL
    assert "Reviewed: ALL (changed from HEM)" in idx(b).data(Qt.ItemDataRole.ToolTipRole)
    assert idx(a).data(ReviewedRole) and idx(b).data(ReviewedRole)  # both keep the check

    # Painted: the reviewed ALL badge starts right of the struck-through model call.
    rows = _badge_row(delegate)
    plain = _first_column_of(_tile(delegate, idx(a)), rows, LABEL_COLORS[ALL])
    moved = _first_column_of(_tile(delegate, idx(b)), rows, LABEL_COLORS[ALL])
    assert plain is not None and moved is not None
    assert moved > plain + 15

    review.undo(b, "Dr. A")
    model.cell_changed(b.key)
    assert delegate.badge_text(idx(b)) == "HEM" and not idx(b).data(ChangedRole)


def test_changed_by_review_filter_follows_relabels_and_undos(qtbot, tmp_path) -> None:
    model, review, cells = _reviewed_model(qtbot, tmp_path)
    a, b, c, d = cells[:4]
    proxy = CellFilterProxy()
    proxy.setSourceModel(model)
    assert proxy.dynamicSortFilter()
    proxy.set_changed(True)
    assert proxy.changed() is True and proxy.rowCount() == 0

    review.confirm(a, "Dr. A")
    model.cell_changed(a.key)
    review.set_label(b, ALL, "Dr. A")
    model.cell_changed(b.key)  # live: no filter call in between
    assert _proxy_paths(proxy) == [b.path]
    review.set_label(c, HEM, "Dr. A")
    model.cell_changed(c.key)
    review.confirm(d, "Dr. A")
    model.cell_changed(d.key)
    assert _proxy_paths(proxy) == [b.path, c.path]

    review.undo_last("Dr. A")  # undoes d's confirmation: not listed either way
    model.cell_changed(d.key)
    review.undo_last("Dr. A")  # undoes c -> HEM
    model.cell_changed(c.key)
    assert _proxy_paths(proxy) == [b.path]
    review.set_label(b, HEM, "Dr. A")  # back to the model's call: no longer changed
    model.cell_changed(b.key)
    assert proxy.rowCount() == 0
    review.undo_last("Dr. A")
    model.cell_changed(b.key)
    assert _proxy_paths(proxy) == [b.path]

    proxy.set_changed(False)
    assert b.path not in _proxy_paths(proxy) and proxy.rowCount() == len(cells) - 1
    proxy.set_changed(None)
    assert proxy.rowCount() == len(cells)


def test_signed_off_cells_are_locked_on_their_tiles(qtbot, tmp_path) -> None:
    model, review, cells = _reviewed_model(qtbot, tmp_path)
    field_cell = cells[4]
    index = model.index(model.row_of(field_cell.key))
    delegate = CellDelegate(thumb_size=96)
    unlocked = _tile(delegate, index)
    assert index.data(LockedRole) is False
    assert "locked" not in index.data(Qt.ItemDataRole.ToolTipRole)

    review.sign_off("S2", "Dr. B")
    with qtbot.waitSignal(model.dataChanged, timeout=1000) as blocker:
        model.refresh_review()  # what the window calls after a sign-off or a reopen
    assert LockedRole in blocker.args[2]
    assert index.data(LockedRole) is True
    assert "Signed off by Dr. B — locked" in index.data(Qt.ItemDataRole.ToolTipRole)
    assert model.index(model.row_of(cells[0].key)).data(LockedRole) is False  # S1 is open
    locked = _tile(delegate, index)
    assert locked != unlocked
    # The padlock sits at the thumbnail's top-left corner, where nothing else is drawn.
    corner = locked.copy(7, 7, 24, 24)
    assert corner != unlocked.copy(7, 7, 24, 24)

    review.reopen("S2", "Dr. B")
    model.refresh_review()
    assert index.data(LockedRole) is False
    assert _tile(delegate, index) == unlocked


def test_field_cells_are_numbered_like_their_keys_and_the_report(qtbot, tmp_path) -> None:
    from leukgui.gui.cell_model import display_name

    model, _review, cells = _reviewed_model(qtbot, tmp_path)
    first, second = cells[4], cells[5]
    names = [model.index(model.row_of(c.key)).data(Qt.ItemDataRole.DisplayRole) for c in cells]
    assert names[4:] == ["BloodImage_00010.jpg #1", "BloodImage_00010.jpg #2"]
    assert names[0] == "a.png"  # a single-cell image has no number
    for cell in (first, second):  # the same number as the key (and the report's "#n")
        assert cell.key.endswith(f"#{cell.cell_index}")
        assert display_name(cell).endswith(f"#{cell.cell_index}")
    tip = model.index(model.row_of(second.key)).data(Qt.ItemDataRole.ToolTipRole)
    assert "Cell #2 of this smear field" in tip


def test_tiles_follow_the_dark_palette(qtbot, tmp_path) -> None:
    from PySide6.QtGui import QPalette

    from leukgui.gui.gallery import LABEL_COLORS_DARK, is_dark

    model, review, cells = _reviewed_model(qtbot, tmp_path)
    hem = model.index(model.row_of(cells[1].key))
    dark = QPalette()
    for role, colour in (
        (QPalette.ColorRole.Base, "#15171b"),
        (QPalette.ColorRole.Text, "#e6e8eb"),
        (QPalette.ColorRole.Window, "#1e2126"),
        (QPalette.ColorRole.Highlight, "#4c8dff"),
    ):
        dark.setColor(role, QColor(colour))
    assert is_dark(dark)
    delegate = CellDelegate(thumb_size=128)
    image = _tile(delegate, hem, dark, fill="#15171b")
    rows = _badge_row(delegate)
    # No white HEM pill on a dark tile: the badge is filled with the base colour and drawn in
    # the lighter teal, and the text row is painted in the palette's (light) text colour.
    whites = sum(
        image.pixelColor(x, y).lightness() > 235 for x in range(image.width()) for y in rows
    )
    assert whites < 10
    assert _first_column_of(image, rows, LABEL_COLORS_DARK[HEM], tol=30) is not None
    name_rows = range(rows.stop + 6, image.height() - 8)
    brightest = max(
        image.pixelColor(x, y).lightness() for x in range(image.width()) for y in name_rows
    )
    assert brightest > 140  # the file name is light on dark, not dark grey on dark


# -------------------------------------------------------------------------------- in the window


def _window_with_review(qtbot, tmp_path: Path):
    """The main window showing a restored session (no model or analysis needed)."""
    from review_samples import info

    from leukgui.core.preferences import Preferences
    from leukgui.core.results import RunResult
    from leukgui.core.sessions import ReviewSession
    from leukgui.gui.main_window import MainWindow

    cells = _review_cells(tmp_path / "images")
    run = RunResult(info(inputs=[str(tmp_path / "images")]), list(cells))
    session = ReviewSession.create(tmp_path / "sessions", run)
    session.close()
    prefs = Preferences(reviewer="Dr. Test", open_report_after_export=False, preload_model=False)
    win = MainWindow(prefs, restore_check=False)
    qtbot.addWidget(win)
    win.show()
    win.restore_session(session.folder)
    return win


def _focus_cell(qtbot, win, cell: CellResult) -> None:
    win.activateWindow()
    win.tabs.setCurrentIndex(0)
    win.gallery.setFocus()
    assert win.gallery.select_path(cell)
    qtbot.waitUntil(win.gallery.hasFocus, timeout=5000)


def _tile_index(win, cell: CellResult):
    return win.cells.index(win.cells.row_of(cell.key))


def test_review_keys_mark_relabelled_cells_and_the_changed_filter_follows(qtbot, tmp_path) -> None:
    win = _window_with_review(qtbot, tmp_path)
    delegate = win.gallery.itemDelegate()
    b = next(c for c in win.run.cells if c.path.name == "b.png")  # the model says HEM
    assert delegate.badge_text(_tile_index(win, b)) == "HEM"
    combo = win.label_filter
    assert combo.findText("Changed by review") >= 0

    _focus_cell(qtbot, win, b)
    qtbot.keyClick(win.gallery, Qt.Key.Key_A)
    assert win.review.final_label(b) == ALL
    assert delegate.badge_text(_tile_index(win, b)) == "HEM → ALL"
    win.select_cell(b)
    assert win.inspector._label_chip.text() == "HEM → ALL  ✓"  # the inspector says it too

    combo.setCurrentIndex(combo.findText("Changed by review"))
    assert [win.proxy.cell(r) for r in range(win.proxy.rowCount())] == [b]

    # Back to the model's call with H: no longer changed, gone from the list at once.
    _focus_cell(qtbot, win, b)
    qtbot.keyClick(win.gallery, Qt.Key.Key_H)
    assert win.review.final_label(b) == HEM and win.proxy.rowCount() == 0
    assert delegate.badge_text(_tile_index(win, b)) == "HEM"
    # Undo (Ctrl+Z): ALL again, listed again, and the filter stayed on.
    win.gallery.setFocus()
    qtbot.keyClick(win.gallery, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    assert win.review.final_label(b) == ALL
    assert combo.currentData() == "changed"
    assert [win.proxy.cell(r) for r in range(win.proxy.rowCount())] == [b]
    assert "filters cleared" not in win.statusBar().currentMessage()
    # Undo again (back to the model's HEM): the cell leaves the filter, so undo clears the
    # filter to show it, and says so.
    qtbot.keyClick(win.gallery, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    assert win.review.final_label(b) == HEM and win.current_cell().key == b.key
    assert combo.currentData() is None
    assert win.statusBar().currentMessage().endswith("; filters cleared to show the cell")
    qtbot.keyClick(win.gallery, Qt.Key.Key_Y, Qt.KeyboardModifier.ControlModifier)  # redo
    combo.setCurrentIndex(combo.findText("Changed by review"))

    # Other Show choices still work, and leave the changed filter off.
    combo.setCurrentIndex(combo.findText("HEM"))
    assert win.proxy.changed() is None and b not in [
        win.proxy.cell(r) for r in range(win.proxy.rowCount())
    ]
    combo.setCurrentIndex(combo.findText("Not reviewed"))
    assert win.proxy.changed() is None and win.proxy.rowCount() == len(win.run.cells) - 1


def test_signing_off_locks_the_tiles_of_that_sample(qtbot, tmp_path) -> None:
    win = _window_with_review(qtbot, tmp_path)
    field_cell = next(c for c in win.run.cells if c.cell_index == 2)
    index = _tile_index(win, field_cell)
    assert index.data(Qt.ItemDataRole.DisplayRole) == "BloodImage_00010.jpg #2"
    win.select_cell(field_cell)
    win.samples.clear_selection()
    win.sign_off_current_sample()
    assert win.review.is_locked("S2")
    assert index.data(LockedRole) is True
    assert "Signed off by Dr. Test — locked" in index.data(Qt.ItemDataRole.ToolTipRole)
    other = next(c for c in win.run.cells if c.sample == "S1")
    assert _tile_index(win, other).data(LockedRole) is False
    win.reopen_current_sample()
    assert index.data(LockedRole) is False


def test_a_mark_that_hides_the_cell_moves_on_to_the_cell_that_followed_it(qtbot, tmp_path) -> None:
    """Bug: under "Changed by review", Enter on a changed cell took it out of the list; the
    highlight jumped to another tile while the inspector still showed the marked cell, and
    the next key changed a cell that was not on screen."""
    win = _window_with_review(qtbot, tmp_path)
    by_name = {c.path.name: c for c in win.run.cells if not c.in_field}
    a, b, c = by_name["a.png"], by_name["b.png"], by_name["c.png"]
    for cell, key in ((a, Qt.Key.Key_H), (b, Qt.Key.Key_A), (c, Qt.Key.Key_H)):
        _focus_cell(qtbot, win, cell)
        qtbot.keyClick(win.gallery, key)  # three cells changed by review
    win.label_filter.setCurrentIndex(win.label_filter.findText("Changed by review"))
    listed = [win.proxy.cell(r).key for r in range(win.proxy.rowCount())]
    assert listed == [a.key, b.key, c.key]

    _focus_cell(qtbot, win, b)
    qtbot.keyClick(win.gallery, Qt.Key.Key_Return)  # back to the model's HEM: leaves the list
    assert win.review.final_label(b) == HEM
    assert [win.proxy.cell(r).key for r in range(win.proxy.rowCount())] == [a.key, c.key]
    assert win.current_cell().key == c.key  # the cell that followed b
    assert win.inspector.cell().key == c.key  # and the inspector shows that same cell
    qtbot.keyClick(win.gallery, Qt.Key.Key_A)  # so A acts on the cell on screen
    assert win.review.final_label(c) == ALL and win.review.final_label(a) == HEM
    # c agrees with the model now and leaves too; it was the last: the one before it is shown.
    assert win.current_cell().key == a.key and win.inspector.cell().key == a.key


def test_a_damaged_journal_line_is_said_when_the_window_restores(qtbot, tmp_path) -> None:
    """The review journal keeps the changes after a damaged line; the window says which line
    was skipped instead of restoring quietly."""
    from review_samples import info

    from leukgui.core.preferences import Preferences
    from leukgui.core.results import RunResult
    from leukgui.core.sessions import ReviewSession
    from leukgui.gui.main_window import MainWindow

    cells = _review_cells(tmp_path / "images")
    run = RunResult(info(inputs=[str(tmp_path / "images")]), list(cells))
    session = ReviewSession.create(tmp_path / "sessions", run)
    a, b, c = cells[:3]
    session.review.set_label(a, HEM, "Dr. Test")
    session.review.set_label(b, ALL, "Dr. Test")
    session.review.set_label(c, HEM, "Dr. Test")
    session.close()
    journal = session.store.journal_path
    lines = journal.read_bytes().splitlines(keepends=True)
    lines[1] = lines[1].replace(b'"ALL"', b'"HEM"')  # a flipped label: its checksum fails
    journal.write_bytes(b"".join(lines))

    win = MainWindow(
        Preferences(reviewer="Dr. Test", open_report_after_export=False, preload_model=False),
        restore_check=False,
    )
    qtbot.addWidget(win)
    messages = []
    win._show_message = lambda *a, **k: messages.append(a)
    win.show()
    win.restore_session(session.folder)
    assert win.review.final_label(a) == HEM and win.review.final_label(c) == HEM
    assert not win.review.is_reviewed(b)  # the damaged change is not applied
    assert len(messages) == 1 and messages[0][1] == "Review restored with gaps"
    assert "line 2" in messages[0][2]


def test_a_file_name_that_is_not_text_shows_with_a_replacement_character(qtbot, tmp_path):
    """Qt drops a lone surrogate silently ("Patient_Mller.bmp"); the window shows the
    undecodable byte as U+FFFD, as the report does, and keeps the exact path for reading."""
    import os

    name = os.fsdecode(b"Patient_M\xfcller.bmp")
    cell = CellResult(tmp_path / name, "S\udcfc", 0.9, ALL, np.zeros((8, 8), np.float32), 40, 30)
    model = CellListModel()
    model.append_cells([cell])
    index = model.index(0)
    assert index.data(Qt.ItemDataRole.DisplayRole) == "Patient_M\ufffdller.bmp"
    assert "\ufffd" in index.data(Qt.ItemDataRole.ToolTipRole)
    assert index.data(CellRole).path == tmp_path / name  # the real path, for re-reading
    inspector = CellInspector()
    qtbot.addWidget(inspector)
    inspector.show_cell(cell, final_label=ALL, reviewed=False, model_text="m")
    assert inspector._title.full_text() == "Patient_M\ufffdller.bmp"
    assert "Patient_M\ufffdller.bmp" in inspector.details_text()
