"""Subject-level train/validation/test splits, checked for patient leakage.

A cell-level random split puts cells of the same person into training and test, and the
network then scores well by recognising the person (stain, scanner day, cell morphology of
that patient) rather than the disease. Every split here keeps each subject in exactly one
part, and `check_no_leakage` proves it before a split is handed out.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from leukgui.core.results import ALL, HEM
from training.datasets import Record

__all__ = [
    "PARTS",
    "LeakageError",
    "Split",
    "SplitError",
    "check_no_leakage",
    "split_by_folds",
    "split_by_subject",
    "split_problem",
]

PARTS = ("train", "validation", "test")
_FOLD = re.compile(r"^(?:fold_?)?(\d+)$", re.IGNORECASE)
_SHOWN = 10  # subjects named in a leakage message before "and N more"
_PART_WORDS = {"train": "training", "validation": "validation", "test": "test"}


@dataclass
class Split:
    """Records per part plus how they were split, so a training run can be reproduced."""

    train: list[Record]
    validation: list[Record]
    test: list[Record]
    seed: int | None
    method: str  # "grouped-stratified" or "folds"
    folds: dict[str, list[str]] | None = None  # method "folds": which folds went where

    def part(self, name: str) -> list[Record]:
        """The records of one part by name ("train", "validation", "test")."""
        if name not in PARTS:
            raise ValueError(f"part must be one of {PARTS}, not {name!r}")
        return getattr(self, name)

    def subjects(self, part: str) -> set[str]:
        """Subjects in one part: what the leakage check and the manifest compare."""
        return {r.subject for r in self.part(part)}

    def summary(self) -> dict:
        """Per part: cells and subjects per class, to see at a glance that each part is usable."""
        out = {}
        for name in PARTS:
            records = self.part(name)
            cells = Counter(r.label for r in records)
            subjects: dict[str, set[str]] = defaultdict(set)
            for r in records:
                subjects[r.label].add(r.subject)
            out[name] = {
                "cells": len(records),
                "subjects": len({r.subject for r in records}),
                "cells_per_class": {c: cells.get(c, 0) for c in (ALL, HEM)},
                "subjects_per_class": {c: len(subjects.get(c, ())) for c in (ALL, HEM)},
            }
        return out

    def to_manifest(self) -> dict:
        """JSON-ready description saved next to a trained model, so its test set is known."""
        summary = self.summary()
        manifest: dict = {
            "method": self.method,
            "seed": self.seed,
            "subjects": {name: sorted(self.subjects(name)) for name in PARTS},
            "counts": {name: summary[name]["cells_per_class"] for name in PARTS},
        }
        if self.folds is not None:
            manifest["folds"] = {k: list(v) for k, v in self.folds.items()}
        return manifest


class LeakageError(ValueError):
    """A subject appears in more than one part; `subjects` maps each to its parts."""

    def __init__(self, message: str, subjects: dict[str, list[str]]) -> None:
        super().__init__(message)
        self.subjects = subjects


class SplitError(ValueError):
    """The records cannot give every part cells of both classes; the message says why.

    Raised before any training starts, in words a user can act on, instead of the trainer
    failing later on a validation part with one class or a test part that cannot be scored.
    """


def check_no_leakage(split: Split) -> None:
    """Raise LeakageError naming every subject found in two or more parts."""
    where: dict[str, list[str]] = defaultdict(list)
    for name in PARTS:
        for subject in sorted(split.subjects(name)):
            where[subject].append(name)
    leaked = {s: parts for s, parts in sorted(where.items()) if len(parts) > 1}
    if not leaked:
        return
    shown = [f"{s!r} ({', '.join(parts)})" for s, parts in list(leaked.items())[:_SHOWN]]
    more = f" and {len(leaked) - _SHOWN} more" if len(leaked) > _SHOWN else ""
    raise LeakageError(
        f"{len(leaked)} subject(s) in more than one part: {', '.join(shown)}{more}", leaked
    )


def _majority(labels: Counter) -> str:
    """A subject's stratum: its majority class (ties go to ALL, deterministically)."""
    return ALL if labels.get(ALL, 0) >= labels.get(HEM, 0) else HEM


def split_by_subject(
    records: Sequence[Record],
    *,
    validation: float = 0.15,
    test: float = 0.15,
    seed: int = 0,
) -> Split:
    """Split by subject, stratified by each subject's majority class, seeded and repeatable.

    Within each class stratum the subjects are shuffled by `seed` and assigned greedily to
    the part furthest below its cell target. Before that, each part with a non-zero fraction
    is seeded with one subject per stratum where the stratum has enough subjects (train
    first, so training always sees both classes; validation and test take the subject whose
    size is closest to their target).

    Every part with a non-zero fraction must end up with cells of both classes, or the run
    could not be validated or scored: SplitError says which class has too few subjects
    (`split_problem` asks the same question without raising, for a Start button).
    """
    if validation < 0 or test < 0 or validation + test >= 1:
        raise ValueError(
            f"validation ({validation}) and test ({test}) must be >= 0 and sum to less than 1"
        )
    if not records:
        raise SplitError("No labelled cells to split.")
    fractions = {"train": 1.0 - validation - test, "validation": validation, "test": test}
    wanted = [p for p in PARTS if fractions[p] > 0]

    per_subject: dict[str, Counter] = defaultdict(Counter)
    for r in records:
        per_subject[r.subject][r.label] += 1
    strata: dict[str, list[str]] = defaultdict(list)
    for subject in sorted(per_subject):
        strata[_majority(per_subject[subject])].append(subject)
    present = {r.label for r in records}
    if present != {ALL, HEM}:
        (only,) = present
        raise SplitError(
            f"Training needs cells of both classes, {ALL} and {HEM}; this data has only "
            f"{only} cells."
        )

    rng = np.random.default_rng(seed)
    assignment: dict[str, str] = {}
    for index, stratum in enumerate(sorted(strata)):
        subjects = list(strata[stratum])
        order = rng.permutation(len(subjects))
        subjects = [subjects[i] for i in order]
        size = {s: sum(per_subject[s].values()) for s in subjects}
        total = sum(size.values())
        target = {p: fractions[p] * total for p in PARTS}
        current = dict.fromkeys(PARTS, 0)

        # Seeding: train first, then the other parts in an order rotating over strata, so
        # that with few subjects validation and test still each get something overall.
        others = [p for p in wanted if p != "train"]
        if others:
            shift = index % len(others)
            others = others[shift:] + others[:shift]
        for part in ["train", *others]:
            if not subjects:
                break
            if part == "train":
                chosen = subjects[0]
            else:
                chosen = min(subjects, key=lambda s, p=part: abs(size[s] - target[p]))
            subjects.remove(chosen)
            assignment[chosen] = part
            current[part] += size[chosen]

        for subject in subjects:  # greedy, in shuffled order
            part = max(wanted, key=lambda p: target[p] - current[p])  # ties: PARTS order
            assignment[subject] = part
            current[part] += size[subject]

    parts: dict[str, list[Record]] = {p: [] for p in PARTS}
    for r in records:
        parts[assignment[r.subject]].append(r)
    split = Split(
        train=parts["train"],
        validation=parts["validation"],
        test=parts["test"],
        seed=seed,
        method="grouped-stratified",
    )
    check_no_leakage(split)
    _check_both_classes(split, wanted, per_subject, strata)
    return split


def _check_both_classes(
    split: Split,
    wanted: Sequence[str],
    per_subject: dict[str, Counter],
    strata: dict[str, list[str]],
) -> None:
    """Raise SplitError unless every wanted part holds cells of both classes.

    The test is on the split itself, so it is exactly what the trainer and the scoring need;
    the message explains it by the rule behind it: subjects are dealt out whole, so a class
    needs one subject of its own for each part (mixed subjects count for their majority).
    """
    lacking = {
        part: [c for c in (ALL, HEM) if c not in {r.label for r in split.part(part)}]
        for part in wanted
    }
    lacking = {part: classes for part, classes in lacking.items() if classes}
    if not lacking:
        return
    need = len(wanted)
    words = [_PART_WORDS[p] for p in wanted]
    each = f"{', '.join(words[:-1])} and {words[-1]}" if len(words) > 1 else words[0]
    with_cells = {c: sum(1 for n in per_subject.values() if n.get(c, 0)) for c in (ALL, HEM)}
    short = []
    for c in (ALL, HEM):
        n = len(strata.get(c, ()))
        if n >= need:
            continue
        if n == with_cells[c]:
            short.append(f"{c} has {n} subject{'s' if n != 1 else ''}")
        else:  # some subjects carry a few cells of the class but mostly the other one
            short.append(f"{c} is the main class of only {n} subject{'s' if n != 1 else ''}")
    rule = f"a split by subject needs at least {need} per class (one each for {each})"
    if short:
        raise SplitError(f"{' and '.join(short)}; {rule}.")
    part, classes = next(iter(lacking.items()))  # not expected: seeding gives each part one
    raise SplitError(
        f"The {_PART_WORDS[part]} part would hold no {' or '.join(classes)} cells; {rule}."
    )


def split_problem(
    records: Sequence[Record],
    *,
    validation: float = 0.15,
    test: float = 0.15,
    seed: int = 0,
) -> str:
    """Why `split_by_subject` would refuse these records and settings, or "" when it would not.

    It runs the splitter itself (no images are read, so this takes milliseconds even for
    C-NMC), so a Start button that asks this can never disagree with the split training makes.
    """
    try:
        split_by_subject(records, validation=validation, test=test, seed=seed)
    except ValueError as exc:  # SplitError, or fractions out of range
        return str(exc)
    return ""


def _fold_name(fold: object) -> str:
    """Canonical fold name: 0, "0", "fold_0", "FOLD0" -> "fold_0"."""
    match = _FOLD.match(str(fold).strip())
    return f"fold_{int(match[1])}" if match else str(fold).strip()


def split_by_folds(
    records: Sequence[Record],
    *,
    train_folds: Iterable[str | int],
    validation_folds: Iterable[str | int],
    test_folds: Iterable[str | int] = (),
) -> Split:
    """Split along C-NMC's own folds (fold_0..fold_2), still checked for subject leakage.

    Folds may be given as 0, "0" or "fold_0". Records of folds not named are left out.
    If the chosen folds share subjects, LeakageError explains it: use split_by_subject then.
    """
    chosen = {
        "train": [_fold_name(f) for f in train_folds],
        "validation": [_fold_name(f) for f in validation_folds],
        "test": [_fold_name(f) for f in test_folds],
    }
    if not chosen["train"]:
        raise ValueError("train_folds is empty")
    owner: dict[str, str] = {}
    for part, folds in chosen.items():
        for fold in folds:
            if fold in owner and owner[fold] != part:
                raise ValueError(f"{fold} is given for both {owner[fold]} and {part}")
            owner[fold] = part
    available = {r.fold for r in records if r.fold is not None}
    if not available:
        raise ValueError("the records carry no fold (not C-NMC training data?): split by subject")
    missing = sorted(set(owner) - available)
    if missing:
        raise ValueError(
            f"fold(s) {', '.join(missing)} not in the data (found {', '.join(sorted(available))})"
        )
    parts: dict[str, list[Record]] = {p: [] for p in PARTS}
    for r in records:
        if r.fold is not None and _fold_name(r.fold) in owner:
            parts[owner[_fold_name(r.fold)]].append(r)
    split = Split(
        train=parts["train"],
        validation=parts["validation"],
        test=parts["test"],
        seed=None,
        method="folds",
        folds=chosen,
    )
    try:
        check_no_leakage(split)
    except LeakageError as exc:
        raise LeakageError(
            f"the chosen C-NMC folds share subjects, so a fold split would leak patients "
            f"between parts; use split_by_subject instead. {exc}",
            exc.subjects,
        ) from None
    return split
