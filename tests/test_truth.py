"""Ground truth and subject ids from C-NMC names and all/hem folders."""

from __future__ import annotations

from pathlib import Path

import pytest

from leukgui.core.results import ALL, HEM
from leukgui.core.truth import Truth, parse_cnmc_name, truth_for

SAMPLES = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "cnmc-samples"


@pytest.mark.parametrize(
    ("name", "label", "subject"),
    [
        ("UID_1_3_1_all.bmp", ALL, "1"),
        ("UID_H6_14_1_hem.bmp", HEM, "H6"),
        ("UID_h6_14_1_hem.bmp", HEM, "H6"),  # same donor as H6
        ("uid_h6_14_1_HEM.BMP", HEM, "H6"),
        ("UID_P3_2_7_ALL.png", ALL, "P3"),
        ("UID_p3_2_7_All.tif", ALL, "P3"),
        ("UID_45_12_3_all", ALL, "45"),  # no extension
        ("UID_H6_14_1.bmp", None, "H6"),  # label missing: subject still known
        ("UID_11_1_2.BMP", None, "11"),
    ],
)
def test_parse_cnmc_name(name: str, label: str | None, subject: str) -> None:
    assert parse_cnmc_name(name) == Truth(label=label, subject=subject)


@pytest.mark.parametrize(
    "name",
    [
        "cell 1.png",
        "1.bmp",
        "UID_H6_14_hem.bmp",  # cell number missing
        "UID__14_1_hem.bmp",  # subject missing
        "UID_H6_14_1_blast.bmp",  # unknown label
        "XUID_1_3_1_all.bmp",
        "UID_1_3_1_all_copy.bmp",
        "",
    ],
)
def test_parse_cnmc_name_rejects_other_names(name: str) -> None:
    assert parse_cnmc_name(name) is None


def test_h_and_lowercase_h_are_one_subject() -> None:
    a = parse_cnmc_name("UID_H6_1_1_hem.bmp")
    b = parse_cnmc_name("UID_h6_2_1_hem.bmp")
    assert a is not None and b is not None and a.subject == b.subject == "H6"


def test_truth_from_name(tmp_path: Path) -> None:
    assert truth_for(tmp_path / "x" / "UID_1_3_1_all.bmp") == Truth(ALL, "1")


def test_truth_from_nearest_folder(tmp_path: Path) -> None:
    assert truth_for(tmp_path / "ALL" / "cell.png") == Truth(ALL, None)
    assert truth_for(tmp_path / "Hem" / "slide 2" / "cell.png") == Truth(HEM, None)
    # The nearest all/hem folder wins over one further up.
    assert truth_for(tmp_path / "all" / "hem" / "cell.png") == Truth(HEM, None)
    assert truth_for(Path("hem") / "cell.png") == Truth(HEM, None)  # relative path


def test_folder_label_keeps_subject_from_unlabelled_name(tmp_path: Path) -> None:
    assert truth_for(tmp_path / "hem" / "UID_h6_14_1.bmp") == Truth(HEM, "H6")


def test_name_label_beats_folder_label(tmp_path: Path) -> None:
    assert truth_for(tmp_path / "hem" / "UID_1_3_1_all.bmp") == Truth(ALL, "1")


def test_unknown_truth(tmp_path: Path) -> None:
    assert truth_for(tmp_path / "patient7" / "cell.png") == Truth(None, None)
    assert truth_for(tmp_path / "allcells" / "cell.png") == Truth(None, None)  # not "all"
    assert truth_for(Path("cell.png")) == Truth(None, None)


@pytest.mark.skipif(
    not SAMPLES.is_dir(), reason=f"real C-NMC samples not present at {SAMPLES} (optional data)"
)
def test_real_cnmc_samples() -> None:
    files = sorted(SAMPLES.glob("*/*.bmp"))
    assert len(files) == 6
    for path in files:
        truth = truth_for(path)
        if path.parent.name == "all":
            assert truth == Truth(ALL, "1")
        else:
            assert truth == Truth(HEM, "H6")
    assert truth_for(SAMPLES / "all" / "UID_1_3_1_all.bmp") == Truth(ALL, "1")
    assert truth_for(SAMPLES / "hem" / "UID_H6_14_1_hem.bmp") == Truth(HEM, "H6")


def test_all_folder_far_above_does_not_label_cells() -> None:
    """A study folder called `all` three levels up must not turn every cell into ALL."""
    truth = truth_for(Path("/studies/all/patient7/slide2/cell.png"))
    assert truth.label is None
    assert truth_for(Path("/x/all/slide2/cell.png")).label == "ALL"
