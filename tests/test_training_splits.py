"""Subject-level splits: seeded, stratified, and never leaking a subject between parts."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from leukgui.core.results import ALL, HEM
from leukgui.core.synthetic import write_dataset
from training.datasets import Record, read_cnmc, read_dataset
from training.splits import (
    MIN_SUBJECTS_PER_CLASS,
    MIN_VALIDATION_CELLS,
    NEAR_DUPLICATE_BITS,
    PARTS,
    DuplicateError,
    LeakageError,
    Split,
    SplitError,
    check_duplicates,
    check_no_leakage,
    split_by_folds,
    split_by_subject,
    split_check,
    split_from_manifest,
    split_problem,
    split_warnings,
    with_sources,
)


def _records(per_class: int, cells: int = 5, folds: int = 0) -> list[Record]:
    """`per_class` ALL patients P.. and HEM donors H.., each with `cells` cells."""
    out = []
    for label, prefix in ((ALL, "P"), (HEM, "H")):
        for s in range(1, per_class + 1):
            fold = f"fold_{s % folds}" if folds else None
            for c in range(cells):
                path = Path(f"{label.lower()}/UID_{prefix}{s}_1_{c}_{label.lower()}.bmp")
                out.append(Record(path, label, f"{prefix}{s}", fold))
    return out


def _assignment(split: Split) -> dict[str, set[str]]:
    return {part: split.subjects(part) for part in PARTS}


def test_deterministic_for_a_seed_and_different_for_another() -> None:
    records = _records(12)
    first = split_by_subject(records, seed=1)
    again = split_by_subject(list(records), seed=1)
    other = split_by_subject(records, seed=2)
    assert _assignment(first) == _assignment(again)
    assert first.to_manifest() == again.to_manifest()
    assert _assignment(first) != _assignment(other)


def test_no_subject_in_two_parts_and_every_cell_kept() -> None:
    records = _records(12, cells=3)
    for seed in range(5):
        split = split_by_subject(records, seed=seed)
        parts = _assignment(split)
        assert not parts["train"] & parts["validation"]
        assert not parts["train"] & parts["test"]
        assert not parts["validation"] & parts["test"]
        assert len(split.train) + len(split.validation) + len(split.test) == len(records)
        check_no_leakage(split)


def test_stratified_and_close_to_the_fractions() -> None:
    split = split_by_subject(_records(20), validation=0.15, test=0.15, seed=3)
    summary = split.summary()
    total = 200
    for part, fraction in (("train", 0.7), ("validation", 0.15), ("test", 0.15)):
        per_class = summary[part]["subjects_per_class"]
        assert per_class[ALL] > 0 and per_class[HEM] > 0, part
        assert abs(summary[part]["cells"] / total - fraction) < 0.06, part
    assert split.method == "grouped-stratified"
    assert split.seed == 3


def test_three_subjects_per_class_give_every_part_both_classes() -> None:
    split = split_by_subject(_records(3), seed=0)
    summary = split.summary()
    for part in PARTS:
        assert summary[part]["subjects_per_class"] == {ALL: 1, HEM: 1}, part
    check_no_leakage(split)


def _uneven(n_all: int, n_hem: int, cells: int = 5) -> list[Record]:
    """`n_all` ALL patients and `n_hem` HEM donors, each with `cells` cells."""
    return [
        r
        for r in _records(max(n_all, n_hem), cells)
        if int(r.subject[1:]) <= (n_all if r.label == ALL else n_hem)
    ]


def test_too_few_subjects_are_refused_naming_the_class_and_count() -> None:
    with pytest.raises(SplitError) as info:
        split_by_subject(_uneven(5, 2), seed=0)
    assert str(info.value) == (
        "HEM has 2 subjects; a split by subject needs at least 3 per class "
        "(one each for training, validation and test)."
    )
    assert isinstance(info.value, ValueError)  # callers catching ValueError still do
    assert split_problem(_uneven(5, 2)) == str(info.value)
    assert split_problem(_uneven(1, 1)).startswith("ALL has 1 subject and HEM has 1 subject;")
    # Without a test part two subjects per class are enough; with one, the rule says two.
    assert split_problem(_uneven(5, 2), test=0.0) == ""
    assert split_problem(_uneven(5, 1), test=0.0) == (
        "HEM has 1 subject; a split by subject needs at least 2 per class "
        "(one each for training and validation)."
    )


def test_no_cells_one_class_and_bad_fractions_are_problems_too() -> None:
    assert split_problem([]) == "No labelled cells to split."
    only_all = [r for r in _records(4) if r.label == ALL]
    assert split_problem(only_all) == (
        "Training needs cells of both classes, ALL and HEM; this data has only ALL cells."
    )
    assert "sum to less than 1" in split_problem(_records(4), validation=0.5, test=0.5)
    assert split_problem(_records(3)) == ""


def test_mixed_subjects_count_for_their_majority() -> None:
    records = _uneven(4, 2)
    records.append(Record(Path("hem/x.bmp"), HEM, "P1"))  # P1 stays mostly ALL
    problem = split_problem(records, seed=0)
    assert problem.startswith("HEM is the main class of only 2 subjects;"), problem


@pytest.mark.parametrize("test_fraction", [0.15, 0.0])
@pytest.mark.parametrize("n_all", [1, 2, 3, 4, 6])
@pytest.mark.parametrize("n_hem", [1, 2, 3, 5])
def test_the_check_agrees_with_the_real_split(n_all: int, n_hem: int, test_fraction) -> None:
    """Whatever `split_problem` says, the splitter does; and an accepted split is trainable."""
    records = _uneven(n_all, n_hem, cells=3)
    need = 3 if test_fraction else 2
    for seed in (0, 1, 7):
        problem = split_problem(records, validation=0.15, test=test_fraction, seed=seed)
        assert bool(problem) == (min(n_all, n_hem) < need), (n_all, n_hem, seed)
        if problem:
            with pytest.raises(SplitError) as info:
                split_by_subject(records, validation=0.15, test=test_fraction, seed=seed)
            assert str(info.value) == problem
            for label, n in ((ALL, n_all), (HEM, n_hem)):
                if n < need:
                    assert f"{label} has {n} subject" in problem
        else:
            split = split_by_subject(records, validation=0.15, test=test_fraction, seed=seed)
            parts = PARTS if test_fraction else ("train", "validation")
            for part in parts:
                assert {r.label for r in split.part(part)} == {ALL, HEM}, (part, seed)


def test_uneven_subject_sizes() -> None:
    records = _records(6, cells=2)
    records += [Record(Path(f"big/{i}.bmp"), ALL, "P1") for i in range(40)]
    split = split_by_subject(records, seed=4)
    check_no_leakage(split)
    assert {ALL, HEM} <= {r.label for r in split.train}
    assert all(split.part(p) for p in PARTS)


def test_zero_validation_leaves_it_empty() -> None:
    split = split_by_subject(_records(6), validation=0.0, test=0.3, seed=0)
    assert split.validation == []
    assert split.train and split.test


def test_mixed_subject_follows_its_majority() -> None:
    records = _records(4)
    records.append(Record(Path("hem/UID_P1_9_9_hem.bmp"), HEM, "P1"))  # a normal cell of P1
    split = split_by_subject(records, seed=0)
    check_no_leakage(split)
    parts = [p for p in PARTS if "P1" in split.subjects(p)]
    assert len(parts) == 1


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="sum to less than 1"):
        split_by_subject(_records(3), validation=0.5, test=0.5)
    with pytest.raises(ValueError, match=">= 0"):
        split_by_subject(_records(3), validation=-0.1)
    with pytest.raises(SplitError, match="No labelled cells"):
        split_by_subject([])
    with pytest.raises(ValueError, match="part must be"):
        split_by_subject(_records(3)).subjects("training")


def test_leaky_split_is_refused_naming_the_subject() -> None:
    records = _records(2)
    p1 = [r for r in records if r.subject == "P1"]
    rest = [r for r in records if r.subject != "P1"]
    leaky = Split(train=rest + p1[:2], validation=[], test=p1[2:], seed=None, method="folds")
    with pytest.raises(LeakageError, match="'P1' \\(train, test\\)") as info:
        check_no_leakage(leaky)
    assert info.value.subjects == {"P1": ["train", "test"]}
    assert isinstance(info.value, ValueError)


def test_manifest_is_json_ready() -> None:
    split = split_by_subject(_records(5), seed=7)
    manifest = json.loads(json.dumps(split.to_manifest()))
    assert manifest["method"] == "grouped-stratified"
    assert manifest["seed"] == 7
    for part in PARTS:
        assert set(manifest["subjects"][part]) == split.subjects(part)
        counts = manifest["counts"][part]
        assert counts[ALL] + counts[HEM] == len(split.part(part))


def test_folds() -> None:
    records = _records(6, folds=3)  # P1..P6, H1..H6 in fold_(s % 3): no shared subjects
    split = split_by_folds(records, train_folds=[0, "1"], validation_folds=["fold_2"])
    assert split.method == "folds"
    assert split.seed is None
    assert {r.fold for r in split.train} == {"fold_0", "fold_1"}
    assert {r.fold for r in split.validation} == {"fold_2"}
    assert split.test == []
    manifest = split.to_manifest()
    assert manifest["folds"] == {
        "train": ["fold_0", "fold_1"],
        "validation": ["fold_2"],
        "test": [],
    }
    assert manifest["subjects"]["validation"] == ["H2", "H5", "P2", "P5"]


def test_folds_sharing_subjects_raise_leakage_error() -> None:
    records = _records(3, folds=3)
    records.append(Record(Path("all/UID_P1_5_1_all.bmp"), ALL, "P1", "fold_2"))  # P1 in 1 and 2
    with pytest.raises(LeakageError, match="share subjects") as info:
        split_by_folds(records, train_folds=[1], validation_folds=[2], test_folds=[0])
    assert "'P1' (train, validation)" in str(info.value)
    assert info.value.subjects == {"P1": ["train", "validation"]}


def test_fold_argument_errors() -> None:
    records = _records(3, folds=3)
    with pytest.raises(ValueError, match="both train and validation"):
        split_by_folds(records, train_folds=[0], validation_folds=[0])
    with pytest.raises(ValueError, match="fold_5 not in the data"):
        split_by_folds(records, train_folds=[0], validation_folds=[5])
    with pytest.raises(ValueError, match="carry no fold"):
        split_by_folds(_records(3), train_folds=[0], validation_folds=[1])


def test_synthetic_cnmc_tree_end_to_end(tmp_path: Path) -> None:
    for fold in range(3):
        write_dataset(
            tmp_path / "training_data" / f"fold_{fold}",
            6,
            seed=fold,
            fmt="bmp",
            layout="cnmc",
            subjects=3,
            size=64,
        )
    scan = read_cnmc(tmp_path)
    assert len(scan.records) == 36
    # write_dataset reuses P1..P3, H1..H3 in every fold, so a fold split must leak
    with pytest.raises(LeakageError, match="split_by_subject"):
        split_by_folds(scan.records, train_folds=[0, 1], validation_folds=[2])
    split = split_by_subject(scan.records, validation=0.25, test=0.25, seed=0)
    check_no_leakage(split)
    assert split.summary()["train"]["subjects_per_class"] == {ALL: 1, HEM: 1}


# ------------------------------------------------------------------ fair allocation, warnings


def test_ten_and_ten_subjects_follow_the_fractions_fairly() -> None:
    """Ties used to go to validation: 4 validation subjects and 1 test subject per class."""
    for seed in range(4):
        split = split_by_subject(_records(10), validation=0.15, test=0.15, seed=seed)
        summary = split.summary()
        assert summary["validation"]["subjects"] == 3, seed
        assert summary["test"]["subjects"] == 3, seed
        assert summary["train"]["subjects_per_class"] == {ALL: 7, HEM: 7}, seed
        for part in ("validation", "test"):
            assert min(summary[part]["subjects_per_class"].values()) >= 1, (part, seed)
        check_no_leakage(split)


def test_three_and_three_subjects_warn_about_every_thin_part() -> None:
    split = split_by_subject(_records(3, cells=20), seed=0)
    warnings = split_warnings(split)
    for part in ("validation", "test"):
        for label in (ALL, HEM):
            assert (
                f"The {part} part holds only 1 {label} subject (fewer than "
                f"{MIN_SUBJECTS_PER_CLASS}): its numbers rest on very few people; add subjects "
                f"or raise the {part} fraction."
            ) in warnings
    assert (
        "The training part holds 33% of the cells, 70% was asked: there are too few (or too "
        "unequal) subjects to follow the fractions."
    ) in warnings
    assert split_check(_records(3, cells=20), validation=0.15, test=0.15, seed=0) == (
        "",
        warnings,
    )


def test_eight_validation_cells_are_warned_about() -> None:
    records = _records(8, cells=4)  # 64 cells: validation gets 2 subjects = 8 cells
    problem, warnings = split_check(records, validation=0.15, test=0.15, seed=1)
    split = split_by_subject(records, validation=0.15, test=0.15, seed=1)
    assert problem == "" and len(split.validation) == 8
    assert (
        f"The validation part holds only 8 cells (fewer than {MIN_VALIDATION_CELLS}): the "
        "decision threshold and the uncertainty band are chosen on them, so they may not hold "
        "on new data; raise the validation fraction or add data."
    ) in warnings


def test_a_large_clean_split_has_no_warnings() -> None:
    split = split_by_subject(_records(20, cells=30), validation=0.15, test=0.15, seed=0)
    assert split_warnings(split) == []
    assert split.split_by == "subject"


def test_split_check_refusal_and_image_split() -> None:
    assert split_check(_uneven(5, 2), validation=0.15, test=0.15, seed=0) == (
        split_problem(_uneven(5, 2)),
        [],
    )
    by_image = [replace(r, subject_from="image") for r in _records(10, cells=30)]
    problem, warnings = split_check(by_image, validation=0.15, test=0.15, seed=0)
    assert problem == ""
    assert warnings[0].startswith("Subjects unknown for 600 cells: this split is by image")
    assert split_by_subject(by_image).split_by == "image"
    refused = split_check(by_image[:30] + by_image[-30:], validation=0.15, test=0.15, seed=0)
    assert refused[0].startswith("ALL has 1 subject")
    assert refused[1][0].startswith("Subjects unknown for 60 cells")


# ------------------------------------------------------------------ reproducing a split (f)


@pytest.fixture
def cnmc_root(tmp_path: Path) -> Path:
    for fold in range(2):
        write_dataset(
            tmp_path / "data" / "training_data" / f"fold_{fold}",
            8,
            seed=fold,
            fmt="png",
            layout="cnmc",
            subjects=4,
            size=48,
        )
    return tmp_path / "data"


def test_manifest_round_trip_rebuilds_the_same_parts(cnmc_root: Path, tmp_path: Path) -> None:
    scan = read_dataset(cnmc_root)
    split = with_sources(split_by_subject(scan.records, seed=5), scan)
    report = check_duplicates(split)
    split = replace(split, file_hashes=report.sha256)
    manifest = json.loads(json.dumps(split.to_manifest()))
    assert manifest["data_root"] == str(cnmc_root)
    assert manifest["split_by"] == "subject" and manifest["test_source"] is None
    assert manifest["fractions"] == {"train": 0.7, "validation": 0.15, "test": 0.15}
    first = split.train[0]
    rel = first.path.relative_to(cnmc_root).as_posix()
    assert rel.startswith("training_data/fold_")
    assert manifest["files"]["train"][rel] == report.sha256[first.path]
    assert sum(len(manifest["files"][p]) for p in PARTS) == len(scan.records)

    # The data moved and is read in another order: the same parts come back.
    moved = tmp_path / "elsewhere"
    shutil.copytree(cnmc_root, moved)
    again = read_dataset(moved).records[::-1]
    rebuilt = split_from_manifest(manifest, again)
    for part in PARTS:
        names = [r.path.relative_to(moved).as_posix() for r in rebuilt.part(part)]
        assert names == list(manifest["files"][part]), part
    assert rebuilt.seed == 5 and rebuilt.method == "grouped-stratified"

    # A missing file, an extra one and a changed one are each refused, with counts.
    gone = moved / rel
    gone.unlink()
    with pytest.raises(SplitError, match="1 recorded file missing"):
        split_from_manifest(manifest, read_dataset(moved).records)
    shutil.copyfile(first.path, gone)
    extra = gone.with_name("UID_P9_9_9_all.png")
    shutil.copyfile(first.path, extra)
    with pytest.raises(SplitError, match="1 current file not in the recorded split"):
        split_from_manifest(manifest, read_dataset(moved).records)
    extra.unlink()
    gone.write_bytes(gone.read_bytes() + b"\0")
    with pytest.raises(SplitError, match="1 file changed since"):
        split_from_manifest(manifest, read_dataset(moved).records)
    assert split_from_manifest(manifest, read_dataset(moved).records, verify_hashes=False)


def test_manifest_with_a_separate_test_set(cnmc_root: Path, tmp_path: Path) -> None:
    test_root = tmp_path / "external"
    write_dataset(test_root, 3, seed=9, fmt="png", layout="cnmc", subjects=3, size=48)
    for path in list(test_root.rglob("*.png")):
        path.rename(path.with_name(path.name.replace("UID_P", "UID_Q").replace("UID_H", "UID_K")))
    scan, test_scan = read_dataset(cnmc_root), read_dataset(test_root)
    split = split_by_subject(scan.records, validation=0.2, test=0.0, seed=1)
    split = with_sources(replace(split, test=list(test_scan.records)), scan, test_scan)
    manifest = json.loads(json.dumps(split.to_manifest()))
    assert manifest["test_source"] == str(test_root)
    assert set(manifest["files"]["test"]) == {
        r.path.relative_to(test_root).as_posix() for r in test_scan.records
    }
    rebuilt = split_from_manifest(manifest, scan.records, test_scan.records)
    assert {p: len(rebuilt.part(p)) for p in PARTS} == {p: len(split.part(p)) for p in PARTS}
    with pytest.raises(SplitError, match="6 recorded files missing"):
        split_from_manifest(manifest, scan.records)  # the test data was not given


def test_old_manifest_without_files_is_rebuilt_by_subject() -> None:
    records = _records(6)
    split = split_by_subject(records, seed=3)
    old = {k: v for k, v in split.to_manifest().items() if k in ("method", "seed", "subjects")}
    rebuilt = split_from_manifest(old, records[::-1])
    assert _assignment(rebuilt) == _assignment(split)
    assert sorted(r.path for r in rebuilt.test) == sorted(r.path for r in split.test)
    with pytest.raises(SplitError, match="5 current cells of subjects not in the recorded"):
        split_from_manifest(old, [*records, *[replace(r, subject="Z1") for r in records[:5]]])
    with pytest.raises(SplitError, match="1 recorded subject missing"):
        split_from_manifest(old, [r for r in records if r.subject != "P1"])
    with pytest.raises(SplitError, match="neither files nor subjects"):
        split_from_manifest({"method": "grouped-stratified", "seed": 3}, records)


# ------------------------------------------------------------------ duplicates across parts (d)


@pytest.fixture
def cells(tmp_path: Path) -> list[Record]:
    """40 distinct synthetic cells per class as Records of subjects S0..S9 (by index)."""
    paths = write_dataset(tmp_path / "cells", 40, seed=11, fmt="png", size=128)
    return [
        Record(p, ALL if p.parent.name == "all" else HEM, f"S{i % 10}")
        for i, p in enumerate(sorted(paths))
    ]


def _three_parts(records: list[Record]) -> Split:
    return Split(records[::3], records[1::3], records[2::3], 0, "grouped-stratified")


def test_distinct_cells_are_not_duplicates(cells: list[Record]) -> None:
    report = check_duplicates(_three_parts(cells))
    assert report.exact == [] and report.near == [] and report.within == []
    assert report.message() == ""
    assert len(report.sha256) == len(cells)
    report.raise_if_exact()


def test_an_exact_copy_in_the_test_part_is_refused(cells: list[Record], tmp_path) -> None:
    split = _three_parts(cells)
    source = split.train[4]
    copy = tmp_path / "copy" / "renamed.png"
    copy.parent.mkdir()
    shutil.copyfile(source.path, copy)
    split.test.append(Record(copy, source.label, "S99"))
    progress: list[tuple[int, int]] = []
    report = check_duplicates(split, progress=lambda *p: progress.append(p))
    assert progress[-1] == (len(cells) + 1, len(cells) + 1)
    assert len(report.exact) == 1 and report.near == []
    pair = report.exact[0]
    assert (pair.first.path, pair.first_part, pair.second_part) == (source.path, "train", "test")
    with pytest.raises(DuplicateError) as info:
        report.raise_if_exact()
    assert str(info.value).startswith(
        f"1 identical image pair across parts: {source.path.name} (training) and renamed.png "
        "(test)."
    )
    assert isinstance(info.value, ValueError)


def test_a_recompressed_brightened_copy_is_a_near_duplicate(cells, tmp_path) -> None:
    import cv2

    split = _three_parts(cells)
    source = split.validation[2]
    image = cv2.imread(str(source.path))
    brighter = np.clip(image.astype(int) + 20, 0, 255).astype(np.uint8)
    copy = tmp_path / "retouched.jpg"
    cv2.imwrite(str(copy), brighter, [cv2.IMWRITE_JPEG_QUALITY, 70])
    split.test.append(Record(copy, source.label, "S77"))
    report = check_duplicates(split)
    assert report.exact == []
    assert [(p.first.path, p.second.path) for p in report.near] == [(source.path, copy)]
    assert report.near[0].distance <= NEAR_DUPLICATE_BITS
    assert report.message().startswith("1 near-duplicate image pair across parts")
    report.raise_if_exact()  # only a warning


def test_the_same_image_twice_in_one_part_is_only_noted(cells, tmp_path) -> None:
    split = _three_parts(cells)
    copy = tmp_path / "again.png"
    shutil.copyfile(split.train[0].path, copy)
    split.train.append(Record(copy, split.train[0].label, split.train[0].subject))
    report = check_duplicates(split)
    assert report.exact == [] and len(report.within) == 1
    assert "within one part" in report.message()
    report.raise_if_exact()


def test_no_test_part_and_mixed_subjects_are_warned_about() -> None:
    from training.splits import mixed_subjects, split_check

    records = [
        Record(Path(f"{s}_{i}.png"), ALL if s.startswith("P") else HEM, s)
        for s in [f"P{k}" for k in range(6)] + [f"H{k}" for k in range(6)]
        for i in range(10)
    ]
    problem, warnings = split_check(records, validation=0.3, test=0.0, seed=1)
    assert problem == ""
    assert any(
        w.startswith("No test part: the model will have no held-out scores") for w in warnings
    )
    lumped = [Record(r.path, r.label, "0") for r in records]  # a pattern that lumps everyone
    assert mixed_subjects(lumped) == ["0"]
    problem, warnings = split_check(lumped, validation=0.15, test=0.15, seed=1)
    assert problem  # one subject cannot be split
    assert any("1 subject ('0') hold cells of both ALL and HEM" in w for w in warnings)


def test_make_split_takes_a_separate_test_set_and_checks_it_for_leaked_subjects(tmp_path) -> None:
    """The session's own path: a separate test CSV becomes the test part and is recorded by the
    name the user gave; its subject 'h3' is the C-NMC training subject 'H3'."""
    from training.run import SplitOptions, make_split

    train_dir = tmp_path / "train"
    write_dataset(train_dir, 18, 3, fmt="png", layout="cnmc", subjects=6, size=32)
    scan = read_dataset(train_dir)
    other = tmp_path / "other"
    write_dataset(other, 4, 4, fmt="png", layout="folders", size=32)
    rows = [f"{p.relative_to(other).as_posix()},{p.parent.name},Q{i % 2}"
            for i, p in enumerate(sorted(other.rglob("*.png")))]  # fmt: skip
    csv = other / "test.csv"
    csv.write_text("path,label,subject\n" + "\n".join(rows) + "\n", encoding="utf-8")
    split = make_split(scan, SplitOptions(validation=0.3), read_dataset(csv), test_source=str(csv))
    assert {r.subject for r in split.test} == {"Q0", "Q1"}
    assert split.test_source == str(csv) and split.data_root == str(scan.root)
    assert split.to_manifest()["test_source"] == str(csv)

    leaky = csv.read_text(encoding="utf-8").replace(",Q0", ",h3")
    csv.write_text(leaky, encoding="utf-8")
    assert "H3" in {r.subject for r in scan.records}
    with pytest.raises(LeakageError, match="H3"):
        make_split(scan, SplitOptions(validation=0.3), read_dataset(csv), test_source=str(csv))
