"""Data set readers: labels, subjects, skipped files and layout auto-detection."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from leukgui.core.results import ALL, HEM, CancelToken
from leukgui.core.synthetic import write_dataset
from training.datasets import (
    CNMC_PRELIM_FOLDER,
    CNMC_PRELIM_LABELS,
    DatasetPreview,
    Record,
    preview_dataset,
    read_all_idb2,
    read_cnmc,
    read_cnmc_prelim,
    read_csv_list,
    read_dataset,
    read_imagefolder,
    subject_rows,
)

CNMC_SAMPLES = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "cnmc-samples"


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Path]]:
    """Six small synthetic cells per class, copied into each layout under test."""
    folder = tmp_path_factory.mktemp("pool")
    paths = write_dataset(folder, 6, seed=3, fmt="png", size=64)
    return {
        ALL: [p for p in paths if p.parent.name == "all"],
        HEM: [p for p in paths if p.parent.name == "hem"],
    }


def _put(source: Path, dest: Path) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, dest)
    return dest


def _by_name(records: list[Record]) -> dict[str, Record]:
    return {r.path.name: r for r in records}


@pytest.fixture
def cnmc_tree(tmp_path: Path, pool: dict[str, list[Path]]) -> Path:
    """root/training_data/fold_{0,1,2}/{all,hem}: P1..P3 and H3..H5, H3 spelled H3 and h3."""
    root = tmp_path / "C-NMC"
    train = root / "training_data"
    a, h = pool[ALL], pool[HEM]
    _put(a[0], train / "fold_0" / "all" / "UID_P1_1_1_all.bmp")
    _put(a[1], train / "fold_0" / "all" / "UID_P1_1_2_all.bmp")
    _put(h[0], train / "fold_0" / "hem" / "UID_H3_1_1_hem.bmp")
    _put(h[1], train / "fold_0" / "hem" / "UID_h3_2_1_hem.bmp")
    _put(a[2], train / "fold_1" / "all" / "UID_P2_1_1_all.bmp")
    _put(h[2], train / "fold_1" / "hem" / "UID_H4_1_1_hem.bmp")
    _put(a[3], train / "fold_2" / "all" / "UID_P3_1_1_all.bmp")
    _put(h[3], train / "fold_2" / "hem" / "UID_H5_1_1_hem.bmp")
    return root


def test_cnmc_labels_subjects_and_folds(cnmc_tree: Path) -> None:
    scan = read_cnmc(cnmc_tree)
    assert scan.source == "cnmc"
    assert scan.unreadable == []
    records = _by_name(scan.records)
    assert len(records) == 8
    assert records["UID_P1_1_1_all.bmp"] == Record(
        cnmc_tree / "training_data" / "fold_0" / "all" / "UID_P1_1_1_all.bmp",
        ALL,
        "P1",
        "fold_0",
    )
    assert records["UID_H4_1_1_hem.bmp"].label == HEM
    assert records["UID_H4_1_1_hem.bmp"].fold == "fold_1"
    # H3 and h3 are one healthy donor
    assert records["UID_h3_2_1_hem.bmp"].subject == "H3"
    assert {r.subject for r in scan.records} == {"P1", "P2", "P3", "H3", "H4", "H5"}


def test_cnmc_accepts_training_data_a_fold_or_class_folders(cnmc_tree: Path) -> None:
    train = cnmc_tree / "training_data"
    assert len(read_cnmc(train).records) == 8
    fold = read_cnmc(train / "fold_0")
    assert len(fold.records) == 4
    assert {r.fold for r in fold.records} == {"fold_0"}
    loose = cnmc_tree.parent / "loose"
    shutil.copytree(train / "fold_1", loose)
    flat = read_cnmc(loose)
    assert {(r.subject, r.fold) for r in flat.records} == {("P2", None), ("H4", None)}


def test_cnmc_lists_bad_names_and_label_conflicts(cnmc_tree: Path, pool) -> None:
    fold = cnmc_tree / "training_data" / "fold_0"
    _put(pool[ALL][4], fold / "all" / "scan0001.bmp")
    _put(pool[HEM][4], fold / "all" / "UID_H9_1_1_hem.bmp")  # hem cell in the all folder
    scan = read_cnmc(cnmc_tree)
    assert len(scan.records) == 8
    reasons = {p.name: why for p, why in scan.unreadable}
    assert "not a C-NMC file name" in reasons["scan0001.bmp"]
    assert "name says HEM" in reasons["UID_H9_1_1_hem.bmp"]


def test_cnmc_check_images_lists_an_empty_file(cnmc_tree: Path) -> None:
    empty = cnmc_tree / "training_data" / "fold_2" / "all" / "UID_P3_2_1_all.bmp"
    empty.write_bytes(b"")
    assert len(read_cnmc(cnmc_tree).records) == 9  # only existence and name are checked
    scan = read_cnmc(cnmc_tree, check_images=True)
    assert len(scan.records) == 8
    assert scan.unreadable == [(empty, "empty file")]
    assert scan.summary()["unreadable"] == 1


def test_cnmc_summary(cnmc_tree: Path) -> None:
    summary = read_cnmc(cnmc_tree).summary()
    assert summary["cells"] == 8
    assert summary["cells_per_class"] == {ALL: 4, HEM: 4}
    assert summary["subjects"] == 6
    assert summary["subjects_per_class"] == {ALL: 3, HEM: 3}
    assert summary["cells_per_subject"]["H3"] == 2
    assert summary["cells_per_subject"]["P1"] == 2
    assert summary["cells_per_fold"] == {"fold_0": 4, "fold_1": 2, "fold_2": 2}
    assert summary["unreadable"] == 0


def test_not_a_cnmc_folder(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not a C-NMC folder"):
        read_cnmc(tmp_path)


@pytest.fixture
def prelim(tmp_path: Path, pool) -> Path:
    """validation_data/ with the renamed prelim images and their labels CSV."""
    root = tmp_path / "validation_data"
    folder = root / CNMC_PRELIM_FOLDER
    _put(pool[ALL][0], folder / "1.bmp")
    _put(pool[HEM][0], folder / "2.bmp")
    _put(pool[HEM][1], folder / "3.bmp")
    _put(pool[ALL][1], folder / "4.bmp")  # not in the CSV
    (root / CNMC_PRELIM_LABELS).write_text(
        "Patient_ID,new_names,labels\n"
        "UID_57_29_1_all.bmp,1.bmp,1\n"
        "UID_H22_1_1_hem.bmp,2.bmp,0\n"
        "UID_h22_3_1_hem.bmp,3.bmp,0\n"
        "UID_58_1_1_all.bmp,9.bmp,1\n"
        "UID_59_1_1_all.bmp,1.bmp,7\n",
        encoding="utf-8",
    )
    return root


def test_cnmc_prelim(prelim: Path) -> None:
    folder = prelim / CNMC_PRELIM_FOLDER
    scan = read_cnmc_prelim(folder, prelim / CNMC_PRELIM_LABELS)
    assert scan.source == "cnmc-prelim"
    records = _by_name(scan.records)
    assert {n: (r.label, r.subject) for n, r in records.items()} == {
        "1.bmp": (ALL, "57"),
        "2.bmp": (HEM, "H22"),
        "3.bmp": (HEM, "H22"),
    }
    reasons = {(p.name, why) for p, why in scan.unreadable}
    assert ("9.bmp", "row 5: file not found") in reasons
    assert ("1.bmp", "row 6: unknown label '7'") in reasons
    assert ("4.bmp", f"not listed in {CNMC_PRELIM_LABELS}") in reasons
    assert len(scan.unreadable) == 3


def test_cnmc_prelim_auto_detected(prelim: Path) -> None:
    for path in (prelim, prelim / CNMC_PRELIM_FOLDER, prelim / CNMC_PRELIM_LABELS):
        scan = read_dataset(path)
        assert scan.source == "cnmc-prelim", path
        assert len(scan.records) == 3


@pytest.fixture
def imagefolder(tmp_path: Path, pool) -> Path:
    root = tmp_path / "cells"
    _put(pool[ALL][0], root / "ALL" / "patient7" / "a.png")
    _put(pool[ALL][1], root / "ALL" / "patient7" / "slide2" / "b.png")
    _put(pool[ALL][2], root / "ALL" / "patient8" / "c.png")
    _put(pool[HEM][0], root / "hem" / "donor2" / "d.png")
    _put(pool[HEM][1], root / "hem" / "loose.png")
    _put(pool[HEM][2], root / "hem" / "UID_h6_1_1_hem.png")
    _put(pool[HEM][3], root / "other" / "e.png")
    return root


def test_imagefolder_labels_and_subjects(imagefolder: Path) -> None:
    scan = read_imagefolder(imagefolder)
    assert scan.source == "imagefolder"
    got = {n: (r.label, r.subject) for n, r in _by_name(scan.records).items()}
    assert got == {
        "a.png": (ALL, "PATIENT7"),
        "b.png": (ALL, "PATIENT7"),
        "c.png": (ALL, "PATIENT8"),
        "d.png": (HEM, "DONOR2"),
        "loose.png": (HEM, "HEM/LOOSE"),  # no patient folder: the file is its own subject
        "UID_h6_1_1_hem.png": (HEM, "H6"),  # the C-NMC name wins
    }
    origin = {n: r.subject_from for n, r in _by_name(scan.records).items()}
    assert origin["a.png"] == "folder" and origin["UID_h6_1_1_hem.png"] == "name"
    assert origin["loose.png"] == "image"
    assert not scan.subjects_known and scan.image_subjects == 1
    assert scan.unreadable == [(imagefolder / "other", "folder is not a class folder, skipped")]


def test_imagefolder_class_map(tmp_path: Path, pool) -> None:
    root = tmp_path / "mapped"
    _put(pool[ALL][0], root / "Blast" / "p1" / "a.png")
    _put(pool[HEM][0], root / "normal" / "p2" / "b.png")
    scan = read_imagefolder(root, class_map={"blast": "ALL", "normal": "hem"})
    got = {n: (r.label, r.subject) for n, r in _by_name(scan.records).items()}
    assert got == {"a.png": (ALL, "P1"), "b.png": (HEM, "P2")}
    assert read_dataset(root, class_map={"blast": "ALL", "normal": "HEM"}).source == "imagefolder"
    with pytest.raises(ValueError, match="not ALL or HEM"):
        read_imagefolder(root, class_map={"blast": "leukaemia"})
    with pytest.raises(ValueError, match="no class folders"):
        read_imagefolder(root)


def test_all_idb2(tmp_path: Path, pool) -> None:
    root = tmp_path / "ALL_IDB2" / "img"
    _put(pool[ALL][0], root / "Im001_1.tif")
    _put(pool[ALL][1], root / "Im002_1.tif")
    _put(pool[HEM][0], root / "Im131_0.tif")
    _put(pool[HEM][1], root / "readme.png")
    for scan in (read_all_idb2(root.parent), read_dataset(root.parent)):
        assert scan.source == "all-idb2"
        got = {n: (r.label, r.subject) for n, r in _by_name(scan.records).items()}
        assert got == {
            "Im001_1.tif": (ALL, "IM001"),
            "Im002_1.tif": (ALL, "IM002"),
            "Im131_0.tif": (HEM, "IM131"),
        }
        assert not scan.subjects_known and scan.image_subjects == 3
        assert [p.name for p, _ in scan.unreadable] == ["readme.png"]


@pytest.fixture
def csv_list(tmp_path: Path, pool) -> Path:
    root = tmp_path / "listed"
    _put(pool[ALL][0], root / "all" / "patient7" / "a.png")
    _put(pool[HEM][0], root / "b.png")
    _put(pool[HEM][1], root / "x" / "c.png")
    _put(pool[ALL][1], root / "imgs" / "UID_P4_1_1_all.png")
    _put(pool[ALL][2], root / "d.png")
    csv_path = root / "list.csv"
    csv_path.write_text(
        "path,label,subject\n"
        "all/patient7/a.png,ALL,\n"
        "b.png,0,\n"
        "x/c.png,hem,S9\n"
        "imgs/UID_P4_1_1_all.png,1,\n"
        "missing.png,ALL,\n"
        "d.png,maybe,\n"
        "b.png,HEM,\n",
        encoding="utf-8",
    )
    return csv_path


def test_csv_list(csv_list: Path) -> None:
    scan = read_csv_list(csv_list)
    assert scan.source == "csv"
    got = {n: (r.label, r.subject) for n, r in _by_name(scan.records).items()}
    assert got == {
        "a.png": (ALL, "PATIENT7"),
        "b.png": (HEM, "B"),
        "c.png": (HEM, "S9"),
        "UID_P4_1_1_all.png": (ALL, "P4"),
    }
    reasons = [(p.name, why) for p, why in scan.unreadable]
    assert reasons == [
        ("missing.png", "row 6: file not found"),
        ("d.png", "row 7: unknown label 'maybe'"),
        ("b.png", "row 8: duplicate of row 3"),
    ]


def test_csv_list_without_subject_column(tmp_path: Path, pool) -> None:
    _put(pool[ALL][0], tmp_path / "p1" / "a.png")
    (tmp_path / "cells.csv").write_text("Path,Label\np1/a.png,all\n", encoding="utf-8")
    scan = read_dataset(tmp_path)  # the only path,label CSV in the folder
    assert scan.source == "csv"
    assert [(r.label, r.subject) for r in scan.records] == [(ALL, "P1")]


def test_csv_list_bad_header(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("file,class\na.png,ALL\n", encoding="utf-8")
    with pytest.raises(ValueError, match="path,label"):
        read_csv_list(bad)


def test_auto_detection(cnmc_tree: Path, imagefolder: Path, csv_list: Path) -> None:
    assert read_dataset(cnmc_tree).source == "cnmc"
    assert read_dataset(cnmc_tree / "training_data").source == "cnmc"
    assert read_dataset(imagefolder).source == "imagefolder"
    assert read_dataset(csv_list).source == "csv"
    assert len(read_dataset(cnmc_tree, check_images=True).records) == 8


def test_auto_detection_refuses_unknown_layouts(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello", encoding="utf-8")
    with pytest.raises(ValueError, match="layout not recognized"):
        read_dataset(tmp_path)
    with pytest.raises(ValueError, match="not a CSV"):
        read_dataset(tmp_path / "notes.txt")
    with pytest.raises(ValueError, match="no such file"):
        read_dataset(tmp_path / "nowhere")


def test_synthetic_cnmc_layout_round_trip(tmp_path: Path) -> None:
    write_dataset(tmp_path / "fold_0", 4, seed=5, fmt="bmp", layout="cnmc", size=64)
    scan = read_dataset(tmp_path)
    assert scan.source == "cnmc"
    assert scan.summary()["cells_per_class"] == {ALL: 4, HEM: 4}
    assert {r.subject for r in scan.records} == {"P1", "P2", "H1", "H2"}
    assert all(r.subject.startswith("P") == (r.label == ALL) for r in scan.records)


@pytest.mark.skipif(
    not CNMC_SAMPLES.is_dir(), reason=f"real C-NMC sample cells not found at {CNMC_SAMPLES}"
)
def test_real_cnmc_samples() -> None:
    scan = read_imagefolder(CNMC_SAMPLES, check_images=True)
    assert scan.unreadable == []
    got = sorted((r.label, r.subject) for r in scan.records)
    assert got == [(ALL, "1")] * 3 + [(HEM, "H6")] * 3


# ------------------------------------------------------------------------------ preview


@pytest.fixture
def cells(tmp_path: Path) -> Path:
    """all/ and hem/ with 6 C-NMC-named cells each (subjects P1..P3, H1..H3), one empty."""
    folder = tmp_path / "cells"
    write_dataset(folder, 6, seed=4, fmt="png", layout="cnmc", subjects=3, size=64)
    (folder / "all" / "UID_P9_1_1_all.png").write_bytes(b"")
    return folder


def test_preview_decodes_every_image_and_reports_progress(cells: Path) -> None:
    listed: list[DatasetPreview] = []
    progress: list[tuple[int, int]] = []

    preview = preview_dataset(
        cells, listed=listed.append, progress=lambda *p: progress.append(p), interval=0.0
    )

    # The fast pass comes first (13 named files), then one report per decoded image.
    assert len(listed) == 1 and not listed[0].checked and len(listed[0].scan.records) == 13
    assert progress == [(i, 13) for i in range(1, 14)]
    assert preview.checked and preview.error is None
    assert len(preview.scan.records) == 12
    assert [(p.name, why) for p, why in preview.scan.unreadable] == [
        ("UID_P9_1_1_all.png", "empty file")
    ]
    assert preview.layout == "class folders all/ and hem/"
    rows = dict((subject, (label, n)) for subject, label, n in preview.subjects)
    assert rows["P1"] == (ALL, 2) and rows["H3"] == (HEM, 2) and "P9" not in rows
    assert preview.problem() == "" and preview.warnings() == []


def test_preview_progress_is_throttled(cells: Path) -> None:
    progress: list[tuple[int, int]] = []
    preview_dataset(cells, progress=lambda *p: progress.append(p), interval=3600.0)
    assert progress == [(13, 13)]  # only the final count within the interval


def test_preview_stops_when_cancelled(cells: Path) -> None:
    token = CancelToken()
    seen: list[tuple[int, int]] = []

    def progress(done: int, total: int) -> None:
        seen.append((done, total))
        if done == 3:
            token.cancel()

    preview = preview_dataset(cells, progress=progress, cancel=token, interval=0.0)

    assert seen[-1] == (3, 13)  # nothing decoded after the cancel
    assert not preview.checked and preview.problem() == "Checking the images…"
    assert len(preview.scan.records) == 13  # the fast pass, unchecked


def test_preview_of_an_unknown_layout_is_an_outcome(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not cells", encoding="utf-8")
    preview = preview_dataset(tmp_path)
    assert preview.scan is None and "layout not recognized" in preview.error
    assert preview.problem() == "The data folder holds no usable labelled cells."
    assert preview.layout == "" and preview.warnings() == []


def test_preview_warnings_and_problems(tmp_path: Path, pool) -> None:
    one_class = tmp_path / "one"
    for i, path in enumerate(pool[ALL][:2]):
        _put(path, one_class / "all" / f"cell{i}.png")
    preview = preview_dataset(one_class)
    assert preview.problem() == "Training needs cells of both classes."
    assert "Training needs cells of both classes, ALL and HEM." in preview.warnings()
    assert any(w.startswith("Subjects unknown for 2 cells:") for w in preview.warnings())

    few = tmp_path / "few"
    _put(pool[ALL][0], few / "all" / "patient1" / "a.png")
    _put(pool[ALL][1], few / "all" / "patient1" / "b.png")
    _put(pool[HEM][0], few / "hem" / "donor1" / "a.png")
    preview = preview_dataset(few)
    assert preview.problem() == ""
    # Too few subjects to split is said once, exactly, by the split check (splits.split_problem)
    assert preview.warnings() == []


def test_subject_rows_mark_mixed_subjects() -> None:
    records = [
        Record(Path("a.png"), ALL, "s2"),
        Record(Path("b.png"), HEM, "s2"),
        Record(Path("c.png"), HEM, "S1"),
    ]
    assert subject_rows(records) == [("S1", HEM, 1), ("s2", f"{ALL} + {HEM}", 2)]
