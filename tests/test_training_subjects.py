"""Subjects: where each reader gets them, rules a user gives, one spelling, C-NMC test sets."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from leukgui.core.results import ALL, HEM
from leukgui.core.synthetic import write_dataset
from training.datasets import (
    CNMC_FINAL_FOLDER,
    CNMC_FINAL_LABELS,
    DatasetScan,
    SubjectRule,
    normalise_subject,
    parse_subject_rule,
    preview_dataset,
    read_all_idb2,
    read_cnmc,
    read_csv_list,
    read_dataset,
)
from training.splits import LeakageError, Split, check_no_leakage, split_by_subject


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Path]]:
    folder = tmp_path_factory.mktemp("pool")
    paths = write_dataset(folder, 6, seed=8, fmt="png", size=48)
    return {
        ALL: [p for p in paths if p.parent.name == "all"],
        HEM: [p for p in paths if p.parent.name == "hem"],
    }


def _put(source: Path, dest: Path) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, dest)
    return dest


def _subjects(scan: DatasetScan) -> dict[str, tuple[str, str]]:
    return {r.path.name: (r.subject, r.subject_from) for r in scan.records}


# ------------------------------------------------------------------ subjects unknown (1)


def test_loose_files_in_class_folders_are_flagged_as_image_subjects(tmp_path, pool) -> None:
    root = tmp_path / "loose"
    for i in range(3):
        _put(pool[ALL][i], root / "all" / f"a{i}.png")
        _put(pool[HEM][i], root / "hem" / f"h{i}.png")
    _put(pool[HEM][3], root / "hem" / "donor1" / "x.png")
    scan = read_dataset(root)
    assert scan.image_subjects == 6
    assert not scan.subjects_known
    assert _subjects(scan)["x.png"] == ("DONOR1", "folder")
    assert _subjects(scan)["a0.png"] == ("ALL/A0", "image")
    preview = preview_dataset(root)
    assert preview.warnings() == [
        "Subjects unknown for 6 cells: the split would be by image, so scores are optimistic "
        "(cells of one patient can land in training and test). Give subjects by a subject (or "
        "patient_id) column in a CSV list, by patient folders, or by a folder level or "
        "file-name pattern."
    ]
    split = split_by_subject(scan.records, validation=0.25, test=0.25, seed=0)
    assert split.split_by == "image"
    assert split.to_manifest()["split_by"] == "image"


def test_all_idb2_and_csv_rows_without_subject_are_image_subjects(tmp_path, pool) -> None:
    idb = tmp_path / "idb"
    _put(pool[ALL][0], idb / "Im001_1.tif")
    _put(pool[HEM][0], idb / "Im002_0.tif")
    scan = read_all_idb2(idb)
    assert not scan.subjects_known and scan.image_subjects == 2
    assert _subjects(scan)["Im001_1.tif"] == ("IM001", "image")

    _put(pool[ALL][0], tmp_path / "list" / "a.png")
    _put(pool[HEM][0], tmp_path / "list" / "b.png")
    _put(pool[HEM][1], tmp_path / "list" / "c.png")
    (tmp_path / "list" / "cells.csv").write_text(
        "path,label,Patient_ID\na.png,ALL,p 7\nb.png,HEM,\nc.png,HEM, h2 \n", encoding="utf-8"
    )
    scan = read_csv_list(tmp_path / "list" / "cells.csv")
    assert _subjects(scan) == {
        "a.png": ("P 7", "column"),  # patient_id is an alias of subject
        "b.png": ("B", "image"),
        "c.png": ("H2", "column"),
    }
    assert scan.image_subjects == 1


def test_known_subjects_everywhere_give_no_warning(tmp_path) -> None:
    write_dataset(tmp_path / "fold_0", 3, seed=1, fmt="png", layout="cnmc", size=48)
    scan = read_dataset(tmp_path)
    assert scan.subjects_known and scan.image_subjects == 0
    assert {r.subject_from for r in scan.records} == {"name"}


# ------------------------------------------------------------------ rules a user gives (2)


def test_parse_subject_rule() -> None:
    assert parse_subject_rule(None, None) is None
    assert parse_subject_rule(None, "  ") is None
    rule = parse_subject_rule(2, None)
    assert rule == SubjectRule(folder=2)
    assert rule.describe() == "subject = folder level 2 below the data root"
    assert SubjectRule.from_manifest(rule.to_manifest()) == rule
    pattern = parse_subject_rule(None, r"^(?P<subject>pt\d+)_")
    assert pattern.to_manifest() == {
        "pattern": r"^(?P<subject>pt\d+)_",
        "description": "subject = the part of the file name matched by the pattern "
        "'^(?P<subject>pt\\d+)_'",
    }
    assert SubjectRule.from_manifest(pattern.to_manifest()) == pattern
    assert "pattern" in pattern.describe() and pattern.kind == "pattern"
    assert SubjectRule.from_manifest(None) is None
    with pytest.raises(ValueError, match="is not valid"):
        parse_subject_rule(None, "pt(\\d+")
    with pytest.raises(ValueError, match="has no group"):
        parse_subject_rule(None, r"pt\d+")
    with pytest.raises(ValueError, match="not both"):
        parse_subject_rule(1, "(x)")
    with pytest.raises(ValueError, match="1 or more"):
        parse_subject_rule(0, None)


def test_folder_rule_for_an_imagefolder(tmp_path, pool) -> None:
    root = tmp_path / "cells"
    _put(pool[ALL][0], root / "all" / "Patient 7" / "slide1" / "a.png")
    _put(pool[ALL][1], root / "all" / "patient  7" / "b.png")
    _put(pool[HEM][0], root / "hem" / "donor2" / "c.png")
    _put(pool[HEM][1], root / "hem" / "loose.png")
    scan = read_dataset(root, subjects=SubjectRule(folder=2))
    assert _subjects(scan) == {
        "a.png": ("PATIENT 7", "folder"),
        "b.png": ("PATIENT 7", "folder"),
        "c.png": ("DONOR2", "folder"),
    }
    assert [(p.name, why) for p, why in scan.unreadable] == [
        ("loose.png", "no folder at level 2 below the data root")
    ]
    assert scan.subject_rule == SubjectRule(folder=2) and scan.root == root


def test_pattern_rule_for_every_reader(tmp_path, pool) -> None:
    rule = SubjectRule(pattern=r"^(pt\d+)-")
    folders = tmp_path / "folders"
    _put(pool[ALL][0], folders / "all" / "PT1-a.png")
    _put(pool[HEM][0], folders / "hem" / "pt2-b.png")
    _put(pool[HEM][1], folders / "hem" / "scan.png")
    scan = read_dataset(folders, subjects=rule)
    assert _subjects(scan) == {"PT1-a.png": ("PT1", "pattern"), "pt2-b.png": ("PT2", "pattern")}
    assert scan.unreadable == [
        (folders / "hem" / "scan.png", r"file name does not match the subject pattern '^(pt\d+)-'")
    ]
    assert scan.subjects_known

    (folders / "list.csv").write_text(
        "path,label,subject\nall/PT1-a.png,ALL,other\nhem/scan.png,HEM,\n", encoding="utf-8"
    )
    scan = read_csv_list(folders / "list.csv", subjects=rule)
    assert _subjects(scan) == {"PT1-a.png": ("PT1", "pattern")}  # the rule wins
    assert scan.unreadable[0][1].startswith("row 3: file name does not match")

    idb = tmp_path / "idb" / "pt4"
    _put(pool[ALL][0], idb / "Im001_1.tif")
    scan = read_all_idb2(idb.parent, subjects=SubjectRule(folder=1))
    assert _subjects(scan) == {"Im001_1.tif": ("PT4", "folder")}

    cnmc = tmp_path / "cnmc" / "fold_0"
    _put(pool[ALL][0], cnmc / "all" / "UID_P1_1_1_all.bmp")
    scan = read_cnmc(cnmc.parent, subjects=SubjectRule(pattern=r"UID_(?P<subject>\w\d)_1"))
    assert _subjects(scan) == {"UID_P1_1_1_all.bmp": ("P1", "pattern")}


# ------------------------------------------------------------------ one spelling (5, c)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("h3", "H3"), ("H3", "H3"), (" H3 ", "H3"), ("patient \t 7", "PATIENT 7"), ("57", "57")],
)
def test_normalise_subject(text: str, expected: str) -> None:
    assert normalise_subject(text) == expected


def test_csv_test_set_with_h3_leaks_against_cnmc_training_h3(tmp_path, pool) -> None:
    train = tmp_path / "train" / "training_data" / "fold_0"
    for i in range(3):
        _put(pool[ALL][i], train / "all" / f"UID_P{i + 1}_1_1_all.bmp")
        _put(pool[HEM][i], train / "hem" / f"UID_H{i + 3}_1_1_hem.bmp")
    extra = tmp_path / "extra"
    _put(pool[ALL][4], extra / "x.png")
    _put(pool[HEM][4], extra / "y.png")
    (extra / "test.csv").write_text(
        "path,label,subject\nx.png,ALL,P9\ny.png,HEM,h3\n", encoding="utf-8"
    )
    scan = read_dataset(tmp_path / "train")
    test_scan = read_dataset(extra / "test.csv")
    assert {r.subject for r in test_scan.records} == {"P9", "H3"}
    split = split_by_subject(scan.records, validation=0.34, test=0.0, seed=0)
    joined = Split(split.train, split.validation, list(test_scan.records), 0, split.method)
    with pytest.raises(LeakageError, match="'H3'"):
        check_no_leakage(joined)


# ------------------------------------------------------------------ C-NMC final test set (g)


def test_cnmc_final_test_set(tmp_path, pool) -> None:
    root = tmp_path / "testing_data"
    folder = root / CNMC_FINAL_FOLDER
    _put(pool[ALL][0], folder / "1.bmp")
    _put(pool[HEM][0], folder / "2.bmp")
    _put(pool[HEM][1], folder / "3.bmp")
    (root / CNMC_FINAL_LABELS).write_text(
        "Patient_ID,new_names,labels\n"
        "UID_71_2_1_all.bmp,1.bmp,1\n"
        "UID_h30_1_1_hem.bmp,2.bmp,0\n"
        "UID_H30_2_1_hem.bmp,3.bmp,0\n",
        encoding="utf-8",
    )
    for path in (root, folder, root / CNMC_FINAL_LABELS):
        scan = read_dataset(path)
        assert scan.source == "cnmc-final", path
        assert sorted((r.path.name, r.label, r.subject, r.subject_from) for r in scan.records) == [
            ("1.bmp", ALL, "71", "name"),
            ("2.bmp", HEM, "H30", "name"),
            ("3.bmp", HEM, "H30", "name"),
        ]
        assert scan.unreadable == []
    assert preview_dataset(root).layout == "C-NMC final test set with its labels CSV"
