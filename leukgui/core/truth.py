"""Ground truth and subject id read from file and folder names.

Labelled data sets (C-NMC 2019 above all) encode the answer in the name, so a run over them
can be scored without a separate answer sheet, and the subject id lets metrics and splits
group cells by person: cells of one person must never be split across train and test.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from leukgui.core.results import ALL, HEM

__all__ = ["Truth", "normalise_subject", "parse_cnmc_name", "truth_for"]

# UID_<subject>_<image>_<cell>[_<all|hem>][.<ext>], any letter case. The subject is an optional
# letter prefix (H = healthy donor) followed by digits: "1", "H6", "h6", "P3".
_CNMC = re.compile(
    r"^uid_(?P<prefix>[a-z]*)(?P<number>\d+)_\d+_\d+(?:_(?P<label>all|hem))?(?:\.[a-z0-9]+)?$",
    re.IGNORECASE,
)
_FOLDER_LABELS = {"all": ALL, "hem": HEM}
# Only the file's own folder and the one above it can label it (all/x.bmp, all/slide2/x.bmp):
# an `all` folder far up the tree (D:/studies/all/patient7/...) says nothing about a cell.
FOLDER_LEVELS = 2


def normalise_subject(text: str) -> str:
    """One spelling per subject id: stripped, inner whitespace collapsed, upper-cased.

    Subject ids come from file names, CSV cells, folder names and patterns typed by people;
    "h3", "H3" and " H3 " must be one person everywhere, or the leakage check between a
    training set and a separate test set would miss the same patient spelled two ways. The
    C-NMC spelling ("H3", "57") is already in this form, so it is unchanged.
    """
    return " ".join(str(text).split()).upper()


@dataclass(frozen=True)
class Truth:
    """What the names say about a cell: its true class and whose cell it is (None = unknown)."""

    label: str | None  # "ALL", "HEM" or None (unknown)
    subject: str | None  # normalised subject id, or None


def parse_cnmc_name(name: str) -> Truth | None:
    """Truth from a C-NMC style file name, or None if the name is not C-NMC style.

    The subject's letter prefix is upper-cased ("h6" -> "H6") because the data set spells the
    same healthy donor both ways, and treating them as two people would leak cells between
    splits. Names without the trailing label (UID_H6_14_1.bmp) still give the subject.
    """
    match = _CNMC.match(name.strip())
    if match is None:
        return None
    subject = normalise_subject(match["prefix"] + match["number"])
    label = match["label"]
    return Truth(label=_FOLDER_LABELS[label.lower()] if label else None, subject=subject)


def truth_for(path: Path) -> Truth:
    """Truth for one image: the C-NMC file name first, else an all/hem folder at most two levels up.

    When the file name carries a label it wins over the folder, even if they disagree: the
    name travels with the file, while folders get reorganised (a cell dragged into the wrong
    folder keeps its true name). A folder label is used only when the name has none; the
    subject then still comes from the name when it is C-NMC style, otherwise it is None.
    """
    path = Path(path)
    from_name = parse_cnmc_name(path.name)
    if from_name is not None and from_name.label is not None:
        return from_name
    subject = from_name.subject if from_name is not None else None
    for folder in list(path.parents)[:FOLDER_LEVELS]:
        label = _FOLDER_LABELS.get(folder.name.lower())
        if label is not None:
            return Truth(label=label, subject=subject)
    return Truth(label=None, subject=subject)
