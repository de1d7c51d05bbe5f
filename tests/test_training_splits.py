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
    SplitError,
    check_no_leakage,
    split_by_folds,
    split_by_subject,
    split_problem,
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
