"""Synthetic C-NMC-like cells: reproducible, well-formed, and the two classes really differ."""

from __future__ import annotations

import re

import cv2
import numpy as np
import pytest

from leukgui.core.synthetic import (
    SyntheticCell,
    generate_cells,
    main,
    make_cell,
    nucleus_fraction,
    write_dataset,
)

SIZE = 450


@pytest.fixture(scope="module")
def cells() -> list[SyntheticCell]:
    """40 ALL + 40 HEM full-size cells, shared by the per-cell and statistical tests."""
    return list(generate_cells(80, seed=7, all_fraction=0.5, size=SIZE))


def _by_label(cells: list[SyntheticCell], label: str) -> list[SyntheticCell]:
    return [c for c in cells if c.label == label]


def _read_rgb(path) -> np.ndarray:
    data = np.fromfile(str(path), dtype=np.uint8)
    bgr = cv2.imdecode(data, cv2.IMREAD_COLOR)
    assert bgr is not None, path
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def test_same_seed_same_cells_different_seed_different():
    a = list(generate_cells(4, seed=123, size=128))
    b = list(generate_cells(4, seed=123, size=128))
    c = list(generate_cells(4, seed=124, size=128))
    assert [x.label for x in a] == [x.label for x in b]
    for x, y in zip(a, b, strict=True):
        assert np.array_equal(x.image, y.image)
        assert np.array_equal(x.mask, y.mask)
    assert any(not np.array_equal(x.image, z.image) for x, z in zip(a, c, strict=True))


def test_make_cell_is_driven_by_rng_only():
    one = make_cell("ALL", np.random.default_rng(5), size=200)
    two = make_cell("ALL", np.random.default_rng(5), size=200)
    other = make_cell("ALL", np.random.default_rng(6), size=200)
    assert np.array_equal(one.image, two.image)
    assert not np.array_equal(one.image, other.image)


@pytest.mark.parametrize("size", [64, 224, SIZE])
def test_shape_dtype_and_black_background(size):
    for label in ("ALL", "HEM"):
        cell = make_cell(label, np.random.default_rng(size), size=size)
        assert cell.label == label
        assert cell.image.shape == (size, size, 3)
        assert cell.image.dtype == np.uint8
        assert cell.mask.shape == (size, size)
        assert cell.mask.dtype == bool
        assert 0.03 < cell.mask.mean() < 0.6
        assert not cell.image[~cell.mask].any(), "background must be exactly (0, 0, 0)"
        # Inside the cell no pixel is pure black, so the mask can be recovered from pixels.
        assert np.array_equal(cell.image.any(axis=2), cell.mask)


def test_mask_is_one_centred_component(cells):
    centre = np.array([SIZE / 2, SIZE / 2])
    for cell in cells:
        count, _ = cv2.connectedComponents(cell.mask.astype(np.uint8), connectivity=4)
        assert count == 2, "exactly one cell component plus background"
        ys, xs = np.nonzero(cell.mask)
        assert np.abs(np.array([xs.mean(), ys.mean()]) - centre).max() < 0.15 * SIZE
        # The cell never touches the frame edge (C-NMC crops are centred on the cell).
        assert ys.min() > 0 and xs.min() > 0 and ys.max() < SIZE - 1 and xs.max() < SIZE - 1
        # Cell spans roughly the C-NMC range of 150-330 px.
        span = max(ys.max() - ys.min(), xs.max() - xs.min())
        assert 120 < span < 380


def test_cell_has_stained_purple_nucleus(cells):
    for cell in cells:
        r, g, b = cell.image[cell.mask].astype(float).mean(axis=0)
        assert g < r and g < b, "Romanowsky-stained cells are purple: green absorbed most"


def test_all_cells_are_larger_on_average(cells):
    all_area = np.mean([c.mask.sum() for c in _by_label(cells, "ALL")])
    hem_area = np.mean([c.mask.sum() for c in _by_label(cells, "HEM")])
    assert all_area > 1.3 * hem_area


def test_sizes_overlap_so_size_alone_is_not_enough(cells):
    all_areas = [c.mask.sum() for c in _by_label(cells, "ALL")]
    hem_areas = [c.mask.sum() for c in _by_label(cells, "HEM")]
    assert min(all_areas) < max(hem_areas)


def test_all_cells_have_higher_nucleus_fraction(cells):
    all_nf = np.array([nucleus_fraction(c.image, c.mask) for c in _by_label(cells, "ALL")])
    hem_nf = np.array([nucleus_fraction(c.image, c.mask) for c in _by_label(cells, "HEM")])
    # Means near the intended 0.80-0.90 (ALL) and 0.60-0.75 (HEM) ranges ...
    assert 0.76 < all_nf.mean() < 0.93
    assert 0.57 < hem_nf.mean() < 0.78
    # ... and a clear, not merely average, separation.
    assert np.percentile(all_nf, 10) > np.percentile(hem_nf, 90)


def test_hem_chromatin_is_coarser_and_darker(cells):
    def nucleus_stats(cell: SyntheticCell) -> tuple[float, float]:
        grey = cv2.cvtColor(cell.image, cv2.COLOR_RGB2GRAY).astype(np.float32)
        core = cv2.erode(cell.mask.astype(np.uint8), np.ones((61, 61), np.uint8)) > 0
        # Clump-sized texture: band-pass (blob ~8-30 px) spread, robust to small nucleoli.
        band = cv2.GaussianBlur(grey, (0, 0), 4.0) - cv2.GaussianBlur(grey, (0, 0), 16.0)
        q25, q75 = np.percentile(band[core], [25, 75])
        return float((q75 - q25) / grey[core].mean()), float(grey[core].mean())

    all_stats = np.array([nucleus_stats(c) for c in _by_label(cells, "ALL")])
    hem_stats = np.array([nucleus_stats(c) for c in _by_label(cells, "HEM")])
    assert hem_stats[:, 0].mean() > 1.5 * all_stats[:, 0].mean(), "HEM chromatin is clumped"
    assert hem_stats[:, 1].mean() < all_stats[:, 1].mean(), "HEM chromatin is denser"


def test_nucleus_fraction_of_plain_masks():
    image = np.zeros((100, 100, 3), np.uint8)
    mask = np.zeros((100, 100), bool)
    mask[10:90, 10:90] = True
    image[mask] = (150, 140, 190)
    image[30:70, 30:70] = (70, 30, 85)  # 1600 of 6400 px dark
    image[45:50, 45:50] = (160, 150, 200)  # pale "nucleolus" hole is filled
    assert nucleus_fraction(image, mask) == pytest.approx(0.25)
    assert nucleus_fraction(image, np.zeros_like(mask)) == 0.0


@pytest.mark.parametrize(
    ("n", "fraction"), [(10, 0.5), (7, 0.5), (9, 0.3), (9, 1.0), (5, 0.0), (0, 0.5)]
)
def test_generate_cells_label_counts(n, fraction):
    labels = [c.label for c in generate_cells(n, seed=1, all_fraction=fraction, size=32)]
    assert len(labels) == n
    assert labels.count("ALL") == round(n * fraction)
    assert labels.count("HEM") == n - round(n * fraction)


def test_generate_cells_shuffles_labels():
    labels = [c.label for c in generate_cells(40, seed=3, size=32)]
    assert labels != sorted(labels), "labels must be interleaved, not all ALL then all HEM"


def test_bad_arguments_raise(tmp_path):
    with pytest.raises(ValueError):
        make_cell("BLAST", np.random.default_rng(0))
    with pytest.raises(ValueError):
        next(generate_cells(4, seed=0, all_fraction=1.5))
    with pytest.raises(ValueError):
        write_dataset(tmp_path, 1, 0, fmt="gif")
    with pytest.raises(ValueError):
        write_dataset(tmp_path, 1, 0, layout="flat")
    assert not any(tmp_path.iterdir()), "nothing is written when arguments are invalid"


@pytest.mark.parametrize("fmt", ["png", "bmp"])
def test_write_dataset_folders_round_trip(tmp_path, fmt):
    out = tmp_path / "dåta ünïcode"
    paths = write_dataset(out, n_per_class=3, seed=11, fmt=fmt, layout="folders", size=96)
    assert len(paths) == 6
    assert sorted(p.name for p in (out / "all").iterdir()) == [
        f"syn_all_000{i}.{fmt}" for i in (1, 2, 3)
    ]
    assert len(list((out / "hem").iterdir())) == 3
    expected = list(generate_cells(6, seed=11, size=96))
    for path, cell in zip(paths, expected, strict=True):
        assert path.parent.name == cell.label.lower()
        assert np.array_equal(_read_rgb(path), cell.image), "lossless formats decode exactly"


def test_write_dataset_cnmc_names(tmp_path):
    paths = write_dataset(tmp_path, n_per_class=5, seed=2, fmt="jpg", layout="cnmc", subjects=2)
    assert len(paths) == 10
    pattern = re.compile(r"UID_([PH])(\d+)_(\d+)_(\d+)_(all|hem)\.jpg")
    subjects = {"all": set(), "hem": set()}
    for path in paths:
        match = pattern.fullmatch(path.name)
        assert match, path.name
        prefix, number, _, _, tag = match.groups()
        assert path.parent.name == tag
        assert prefix == ("P" if tag == "all" else "H")
        subjects[tag].add(prefix + number)
        # Real C-NMC files use numeric subjects; synthetic ones must never look like that.
        assert not re.match(r"UID_\d+_", path.name)
        image = _read_rgb(path)
        assert image.shape == (SIZE, SIZE, 3)
    assert subjects == {"all": {"P1", "P2"}, "hem": {"H1", "H2"}}
    assert len({p.name for p in paths}) == 10, "names are unique"


def test_cli_writes_dataset(tmp_path, capsys):
    args = [str(tmp_path), "--per-class", "2", "--seed", "4", "--format", "png", "--size", "64"]
    assert main(args) == 0
    assert len(list((tmp_path / "all").glob("*.png"))) == 2
    assert len(list((tmp_path / "hem").glob("*.png"))) == 2
    assert "wrote 4 images" in capsys.readouterr().out
