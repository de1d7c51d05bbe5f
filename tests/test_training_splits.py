"""Subject-level splits: seeded, stratified, and never leaking a subject between parts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from leukgui.core.results import ALL, HEM
from leukgui.core.synthetic import write_dataset
from training.datasets import Record, read_cnmc
from training.splits import (
    PARTS,
    LeakageError,
    Split,
    check_no_leakage,
    split_by_folds,
    split_by_subject,
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


def test_few_subjects_still_fill_every_part() -> None:
    split = split_by_subject(_records(2), seed=0)
    summary = split.summary()
    assert summary["train"]["subjects_per_class"] == {ALL: 1, HEM: 1}
    assert split.validation and split.test
    check_no_leakage(split)


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
    with pytest.raises(ValueError, match="no records"):
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
            4,
            seed=fold,
            fmt="bmp",
            layout="cnmc",
            size=64,
        )
    scan = read_cnmc(tmp_path)
    assert len(scan.records) == 24
    # write_dataset reuses P1, P2, H1, H2 in every fold, so a fold split must leak
    with pytest.raises(LeakageError, match="split_by_subject"):
        split_by_folds(scan.records, train_folds=[0, 1], validation_folds=[2])
    split = split_by_subject(scan.records, validation=0.25, test=0.25, seed=0)
    check_no_leakage(split)
    assert split.summary()["train"]["subjects_per_class"] == {ALL: 1, HEM: 1}
