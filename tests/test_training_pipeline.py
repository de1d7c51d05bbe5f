"""The tf.data training pipeline: pixels, labels, weights, bad files, augmentation, caching."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from leukgui.core.imaging import decode_image, thumbnail
from leukgui.core.results import ALL, HEM
from leukgui.core.synthetic import write_dataset
from training.datasets import Record
from training.pipeline import (
    Augmentation,
    FailedFiles,
    class_weights,
    label_index,
    load_cell,
    make_dataset,
)

SIZE = 32  # model input side: small, so every test stays fast

# Geometry only (the default flips, rotation, zoom and shift) and strong colour jitter only.
GEOMETRY = Augmentation(brightness=0.0, contrast=0.0, hue=0.0, saturation=0.0)
COLOUR = Augmentation(
    flips=False,
    rotation_deg=0.0,
    scale=0.0,
    shift=0.0,
    brightness=0.3,
    contrast=0.3,
    hue=0.1,
    saturation=0.3,
)
FLIPS_ONLY = Augmentation(True, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)


def _records(paths: list[Path]) -> list[Record]:
    return [
        Record(p, ALL if p.parent.name == "all" else HEM, f"S{i % 3}") for i, p in enumerate(paths)
    ]


@pytest.fixture()
def cells(tmp_path: Path) -> list[Record]:
    """20 synthetic cells (10 ALL, 10 HEM) at 64 px in a fresh folder."""
    return _records(write_dataset(tmp_path / "cells", 10, seed=4, fmt="png", size=64))


def _epoch(ds) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One full pass: images, labels and weights of every batch, concatenated."""
    batches = list(ds.as_numpy_iterator())
    if not batches:
        return np.zeros((0, SIZE, SIZE, 3), np.float32), np.zeros(0, np.int32), np.zeros(0)
    return tuple(np.concatenate([b[k] for b in batches]) for k in range(3))


def _originals(records: list[Record]) -> np.ndarray:
    """The pixels the analysis engine sees for each record (independent of the pipeline)."""
    return np.stack([thumbnail(decode_image(r.path), SIZE) for r in records]).astype(np.float32)


def _match(images: np.ndarray, originals: np.ndarray) -> list[int]:
    """Index of the original each image equals exactly (-1 when none does)."""
    out = []
    for image in images:
        hits = [i for i, o in enumerate(originals) if np.array_equal(image, o)]
        out.append(hits[0] if len(hits) == 1 else -1)
    return out


def _dihedral(image: np.ndarray) -> list[np.ndarray]:
    """The 8 flips and quarter turns of an HxWxC image."""
    turns = [np.rot90(image, k, axes=(0, 1)) for k in range(4)]
    return turns + [np.flip(t, axis=1) for t in turns]


# ------------------------------------------------------------------------------ plain stream


def test_evaluation_stream_is_the_analysis_pixels_in_record_order(cells: list[Record]) -> None:
    ds = make_dataset(cells, input_size=SIZE, batch_size=6, training=False)
    spec_images, spec_labels, spec_weights = ds.element_spec
    assert spec_images.shape.as_list() == [None, SIZE, SIZE, 3]
    assert spec_images.dtype.name == "float32"
    assert spec_labels.dtype.name == "int32"
    assert spec_weights.dtype.name == "float32"

    batches = list(ds.as_numpy_iterator())
    assert [len(b[0]) for b in batches] == [6, 6, 6, 2]
    images, labels, weights = _epoch(ds)
    assert images.dtype == np.float32 and labels.dtype == np.int32
    assert weights.dtype == np.float32
    np.testing.assert_array_equal(images, _originals(cells))
    assert labels.tolist() == [1 if r.label == ALL else 0 for r in cells]
    assert set(labels.tolist()) == {0, 1}
    assert weights.tolist() == [1.0] * len(cells)
    assert images.min() >= 0.0 and images.max() <= 255.0
    assert images.max() > 50  # real cells, not blank frames
    for record, image in zip(cells[:3], images[:3], strict=True):
        np.testing.assert_array_equal(image, load_cell(str(record.path), SIZE))


def test_drop_remainder_gives_full_batches_only(cells: list[Record]) -> None:
    ds = make_dataset(cells, input_size=SIZE, batch_size=6, training=True, drop_remainder=True)
    assert [len(b[1]) for b in ds.as_numpy_iterator()] == [6, 6, 6]


def test_bad_files_are_dropped_and_listed_with_a_reason(cells: list[Record]) -> None:
    garbage = cells[0].path.parent / "garbage.png"
    garbage.write_bytes(b"this is not a png at all" * 20)
    missing = cells[0].path.parent / "missing.png"
    records = [*cells[:5], Record(garbage, ALL, "S9"), *cells[5:12], Record(missing, HEM, "S9")]
    records += cells[12:]
    failed = FailedFiles()
    ds = make_dataset(records, input_size=SIZE, batch_size=4, training=False, failed=failed)
    images, labels, _ = _epoch(ds)

    np.testing.assert_array_equal(images, _originals(cells))
    assert labels.tolist() == [label_index(r.label) for r in cells]
    items = dict(failed.items())
    assert set(items) == {str(garbage), str(missing)}
    assert all(reason.strip() for reason in items.values())
    assert "not an image" in items[str(garbage)]
    assert "cannot be read" in items[str(missing)]

    _epoch(ds)  # a second pass lists each file once
    assert len(failed) == 2
    # Without a FailedFiles the bad files are still dropped.
    plain = make_dataset(records, input_size=SIZE, batch_size=4, training=False)
    assert len(_epoch(plain)[1]) == len(cells)


def test_label_index_and_unknown_labels() -> None:
    assert (label_index(ALL), label_index(HEM)) == (1, 0)
    for bad in ("UNCERTAIN", "all", "", "1"):
        with pytest.raises(ValueError, match="unknown label"):
            label_index(bad)


def test_no_records_is_an_error() -> None:
    with pytest.raises(ValueError, match="no records"):
        make_dataset([], input_size=SIZE, batch_size=4, training=False)


# ------------------------------------------------------------------------------ class weights


def test_class_weights_balance_a_two_to_one_imbalance(cells: list[Record]) -> None:
    records = [r for r in cells if r.label == ALL] + [r for r in cells if r.label == HEM][:5]
    weights = class_weights(records)
    # 15 cells, 10 ALL and 5 HEM: n / (2 n_class) = 15/20 for ALL, 15/10 for HEM.
    assert weights == {1: pytest.approx(0.75), 0: pytest.approx(1.5)}
    for training, augmentation in ((False, None), (True, Augmentation())):
        ds = make_dataset(
            records,
            input_size=SIZE,
            batch_size=4,
            training=training,
            augmentation=augmentation,
            weights=weights,
        )
        _, labels, w = _epoch(ds)
        assert sorted(labels.tolist()) == [0] * 5 + [1] * 10
        np.testing.assert_allclose(w, np.where(labels == 1, 0.75, 1.5))
        assert w[labels == 1].sum() == pytest.approx(w[labels == 0].sum())


def test_class_weights_of_balanced_and_one_class_sets(cells: list[Record]) -> None:
    assert class_weights(cells) == {0: 1.0, 1: 1.0}
    only_all = [r for r in cells if r.label == ALL]
    assert class_weights(only_all) == {0: 0.0, 1: 0.5}
    with pytest.raises(ValueError):
        class_weights([Record(Path("x.png"), "UNCERTAIN", "S1")])


# ------------------------------------------------------------------------------ training order


def test_training_shuffles_but_yields_every_record_once_per_epoch(cells: list[Record]) -> None:
    ds = make_dataset(
        cells,
        input_size=SIZE,
        batch_size=6,
        training=True,
        seed=1,
        augmentation=Augmentation.none(),
    )
    originals = _originals(cells)
    orders = []
    for _ in range(2):
        images, labels, _ = _epoch(ds)
        order = _match(images, originals)  # no augmentation: pixels are untouched
        assert sorted(order) == list(range(len(cells)))
        assert labels.tolist() == [label_index(cells[i].label) for i in order]
        orders.append(order)
    assert orders[0] != list(range(len(cells)))
    assert orders[0] != orders[1]  # shuffled anew each epoch


# ------------------------------------------------------------------------------ augmentation


def test_flips_only_gives_one_of_the_eight_dihedral_images(cells: list[Record]) -> None:
    ds = make_dataset(
        cells, input_size=SIZE, batch_size=8, training=True, seed=3, augmentation=FLIPS_ONLY
    )
    images, labels, _ = _epoch(ds)
    variants = [
        (i, k, v) for i, o in enumerate(_originals(cells)) for k, v in enumerate(_dihedral(o))
    ]
    matched, kinds = [], set()
    for image in images:
        error, i, k = min((float(np.abs(image - v).max()), i, k) for i, k, v in variants)
        # The transform is built from float32 cos/sin of multiples of pi/2 (cos(pi/2) is
        # ~-4e-8, not 0), so bilinear sampling lands ~1e-6 px off the pixel centres: the
        # result differs from the exact flip by far less than one grey level.
        assert error < 0.01
        matched.append(i)
        kinds.add(k)
    assert sorted(matched) == list(range(len(cells)))  # every cell once
    assert labels.tolist() == [label_index(cells[i].label) for i in matched]
    # Really flipped and turned, not just copied (k < 4: quarter turns, k >= 4: mirrored).
    assert len(kinds) >= 4
    assert any(k < 4 for k in kinds) and any(k >= 4 for k in kinds)


def test_black_background_stays_black(cells: list[Record]) -> None:
    # Same seed: same order and the same random geometry, so the only difference between
    # the two streams is the colour jitter.
    geometry = make_dataset(
        cells, input_size=SIZE, batch_size=8, training=True, seed=5, augmentation=GEOMETRY
    )
    full = Augmentation(brightness=0.3, contrast=0.3, hue=0.1, saturation=0.3)
    both = make_dataset(
        cells, input_size=SIZE, batch_size=8, training=True, seed=5, augmentation=full
    )
    g, labels_g, _ = _epoch(geometry)
    f, labels_f, _ = _epoch(both)
    np.testing.assert_array_equal(labels_g, labels_f)
    background = g.max(axis=-1) == 0
    assert 0.3 < background.mean() < 0.95
    assert f[background].max() == 0.0  # jitter never lights up the background
    assert f[~background].mean() > 20  # the cells are still there
    assert np.abs(f - g)[~background].mean() > 1.0  # and their colour was jittered
    for corner in (f[:, :3, :3], f[:, :3, -3:], f[:, -3:, :3], f[:, -3:, -3:]):
        assert corner.max() == 0.0
    assert f.min() >= 0.0 and f.max() <= 255.0


def test_colour_jitter_changes_cells_within_range_and_keeps_background(
    cells: list[Record],
) -> None:
    # Without geometry the order (set by the seed) is that of an unaugmented stream.
    reference = make_dataset(
        cells,
        input_size=SIZE,
        batch_size=8,
        training=True,
        seed=6,
        augmentation=Augmentation.none(),
    )
    jittered = make_dataset(
        cells, input_size=SIZE, batch_size=8, training=True, seed=6, augmentation=COLOUR
    )
    r, _, _ = _epoch(reference)
    j, _, _ = _epoch(jittered)
    assert sorted(_match(r, _originals(cells))) == list(range(len(cells)))
    background = r.max(axis=-1) == 0
    assert j[background].max() == 0.0
    assert j.min() >= 0.0 and j.max() <= 255.0
    per_image_change = np.abs(j - r).mean(axis=(1, 2, 3))
    assert (per_image_change > 0.1).all()
    assert np.abs(j - r)[~background].mean() > 2.0


def test_same_seed_same_batches_other_seed_other_batches(cells: list[Record]) -> None:
    def stream(seed: int):
        return make_dataset(
            cells,
            input_size=SIZE,
            batch_size=8,
            training=True,
            seed=seed,
            augmentation=Augmentation(),
        )

    first = _epoch(stream(11))
    again = _epoch(stream(11))
    other = _epoch(stream(12))
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(first[0], other[0])
    assert first[0].min() >= 0.0 and first[0].max() <= 255.0


def test_each_epoch_is_augmented_anew(cells: list[Record]) -> None:
    ds = make_dataset(
        cells, input_size=SIZE, batch_size=20, training=True, seed=2, augmentation=GEOMETRY
    )
    one, labels_one, _ = _epoch(ds)
    two, labels_two, _ = _epoch(ds)
    assert sorted(labels_one.tolist()) == sorted(labels_two.tolist())
    assert not np.array_equal(one, two)
    # One cell, so no shuffling: any change between epochs comes from new random draws.
    for augmentation in (GEOMETRY, COLOUR):
        single = make_dataset(
            cells[:1],
            input_size=SIZE,
            batch_size=1,
            training=True,
            seed=2,
            augmentation=augmentation,
        )
        epochs = [_epoch(single)[0] for _ in range(3)]
        assert not np.array_equal(epochs[0], epochs[1])
        assert not np.array_equal(epochs[1], epochs[2])


# ------------------------------------------------------------------------------ cache


def _delete(records: list[Record]) -> None:
    for r in records:
        Path(r.path).unlink()


def test_file_cache_keeps_the_cells_after_the_files_are_gone(
    cells: list[Record], tmp_path: Path
) -> None:
    prefix = tmp_path / "cache" / "validation"  # the folder does not exist yet
    failed = FailedFiles()
    ds = make_dataset(
        cells, input_size=SIZE, batch_size=6, training=False, cache=prefix, failed=failed
    )
    originals = _originals(cells)
    first = _epoch(ds)
    np.testing.assert_array_equal(first[0], originals)
    written = sorted(p.name for p in prefix.parent.iterdir())
    assert written and all(name.startswith("validation") for name in written)
    assert any(name.endswith(".index") for name in written)

    _delete(cells)  # a second pass that re-read the files would now fail on every one
    second = _epoch(ds)
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(second[0], originals)
    assert len(failed) == 0


def test_memory_cache_and_no_cache(cells: list[Record]) -> None:
    originals = _originals(cells)
    cached = make_dataset(cells, input_size=SIZE, batch_size=6, training=False, cache=True)
    uncached_failed = FailedFiles()
    uncached = make_dataset(
        cells,
        input_size=SIZE,
        batch_size=6,
        training=False,
        cache=False,
        failed=uncached_failed,
    )
    np.testing.assert_array_equal(_epoch(cached)[0], originals)
    np.testing.assert_array_equal(_epoch(uncached)[0], originals)

    _delete(cells)
    np.testing.assert_array_equal(_epoch(cached)[0], originals)  # served from memory
    assert len(_epoch(uncached)[1]) == 0  # decoded again: every file is now missing
    assert len(uncached_failed) == len(cells)


def test_file_cache_is_not_reused_for_other_records(cells: list[Record], tmp_path: Path) -> None:
    prefix = tmp_path / "cache" / "train"
    first, second = cells[:8], cells[8:]
    _epoch(make_dataset(first, input_size=SIZE, batch_size=4, training=False, cache=prefix))
    ds = make_dataset(second, input_size=SIZE, batch_size=4, training=False, cache=prefix)
    np.testing.assert_array_equal(_epoch(ds)[0], _originals(second))


def test_augmentation_description() -> None:
    assert Augmentation.none().describe() == "none"
    text = Augmentation().describe()
    assert "flips and 90-degree rotations: on" in text
    assert "black background kept black" in text
    assert "flips and 90-degree rotations: off" in COLOUR.describe()


def _noisy_background_cells(folder: Path, n: int = 6) -> tuple[list[Record], np.ndarray]:
    """Synthetic cells whose background is JPEG-like noise 1..8 (never exactly 0), saved
    losslessly at the model size; returns the records and the background masks."""
    import cv2

    from leukgui.core.synthetic import make_cell

    rng = np.random.default_rng(21)
    folder.mkdir(parents=True, exist_ok=True)
    records, masks = [], []
    for i in range(n):
        label = ALL if i % 2 else HEM
        cell = make_cell(label, rng, size=SIZE)
        image = cell.image.copy()
        background = ~cell.mask.astype(bool)
        noise = rng.integers(1, 9, size=image.shape, dtype=np.uint8)
        image[background] = noise[background]
        path = folder / f"cell_{i}.png"
        cv2.imwrite(str(path), image[..., ::-1])
        records.append(Record(path, label, f"S{i % 3}"))
        masks.append(image.max(axis=-1) <= 8)
    return records, np.stack(masks)


def test_colour_jitter_keeps_a_noisy_black_background_as_it_was(tmp_path: Path) -> None:
    # Before the fix the mask was "exactly 0", so a background of JPEG noise 1..8 was jittered
    # like the cell: this test measured a background maximum of 58.9 after the jitter.
    records, _ = _noisy_background_cells(tmp_path / "noisy")
    plain = make_dataset(records, input_size=SIZE, batch_size=8, training=False)
    originals, _, _ = _epoch(plain)
    reference = make_dataset(
        records, input_size=SIZE, batch_size=8, training=True, seed=6, augmentation=COLOUR
    )
    unjittered = make_dataset(
        records,
        input_size=SIZE,
        batch_size=8,
        training=True,
        seed=6,
        augmentation=Augmentation.none(),
    )
    r, _, _ = _epoch(unjittered)
    j, _, _ = _epoch(reference)
    assert sorted(_match(r, originals)) == list(range(len(records)))
    background = r.max(axis=-1) <= 8
    assert 0.2 < background.mean() < 0.95
    assert r[background].max() > 0  # the test's background is noise, not exact zeros
    assert j[background].max() <= 8.0
    np.testing.assert_array_equal(j[background], r[background])  # untouched
    assert np.abs(j - r)[~background].mean() > 2.0  # the cells were jittered


def test_stain_normalisation_is_applied_when_decoding_every_part(
    cells: list[Record], tmp_path: Path
) -> None:
    from leukgui.core.engine import model_input
    from leukgui.core.stain import apply_reinhard, lab_statistics
    from training.pipeline import fit_stain

    stats = fit_stain(cells[:12], SIZE)
    assert stats.fitted_on == "12 training cells"
    plain = make_dataset(cells, input_size=SIZE, batch_size=8, training=False)
    normalised = make_dataset(cells, input_size=SIZE, batch_size=8, training=False, stain=stats)
    p, _, _ = _epoch(plain)
    n, _, _ = _epoch(normalised)
    expected = np.stack([apply_reinhard(o.astype(np.uint8), stats) for o in _originals(cells)])
    np.testing.assert_array_equal(n, expected.astype(np.float32))
    assert np.abs(n - p).mean() > 0.5
    # The very pixels the analysis engine feeds the network for the same file.
    engine = model_input(decode_image(cells[3].path), SIZE, stats)
    np.testing.assert_array_equal(n[3], engine)
    mean, _ = lab_statistics(n[3].astype(np.uint8))
    np.testing.assert_allclose(mean, stats.lab_mean, atol=2.0)
    # Training streams (augmented or not) start from the same normalised cells.
    train = make_dataset(
        cells,
        input_size=SIZE,
        batch_size=8,
        training=True,
        seed=6,
        augmentation=Augmentation.none(),
        stain=stats,
    )
    t, _, _ = _epoch(train)
    assert sorted(_match(t, n)) == list(range(len(cells)))
    # A file cache of normalised cells is never read back for plain ones.
    prefix = tmp_path / "cache" / "c"
    _epoch(make_dataset(cells, input_size=SIZE, batch_size=8, training=False, cache=prefix))
    _epoch(
        make_dataset(
            cells, input_size=SIZE, batch_size=8, training=False, cache=prefix, stain=stats
        )
    )
    assert len({f.name.split(".")[0] for f in prefix.parent.iterdir()}) == 2
