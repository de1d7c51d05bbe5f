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
    LabelRole,
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
    inspector = CellInspector()
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
    splitter.setSizes([560, 330])  # narrower than the inspector's minimum width
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
    bottom = label.mapTo(inspector, label.rect().bottomLeft()).y()
    assert bottom <= inspector.height(), "the model line is cut off"


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
