"""Subject-level train/validation/test splits, checked for patient leakage.

A cell-level random split puts cells of the same person into training and test, and the
network then scores well by recognising the person (stain, scanner day, cell morphology of
that patient) rather than the disease. Every split here keeps each subject in exactly one
part, and `check_no_leakage` proves it before a split is handed out.

Around that: `split_warnings`/`split_check` say when a split is usable but shaky (by image,
few subjects or cells per part), `check_duplicates` finds the same image in two parts (the
same cell saved twice under two names defeats any subject rule), and `Split.to_manifest` /
`split_from_manifest` record and rebuild a split file by file.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePath

import numpy as np

from leukgui.core.results import ALL, HEM
from training.datasets import DatasetScan, Record

__all__ = [
    "MIN_SUBJECTS_PER_CLASS",
    "MIN_VALIDATION_CELLS",
    "NEAR_DUPLICATE_BITS",
    "NEAR_DUPLICATE_CORRELATION",
    "PARTS",
    "DuplicateError",
    "DuplicatePair",
    "DuplicateReport",
    "LeakageError",
    "Split",
    "SplitError",
    "check_duplicates",
    "check_no_leakage",
    "majority_class",
    "mixed_subjects",
    "split_by_folds",
    "split_by_subject",
    "split_check",
    "split_from_manifest",
    "split_problem",
    "split_warnings",
    "with_sources",
]

PARTS = ("train", "validation", "test")
# Below these a part is still usable but its numbers are shaky; split_warnings says so.
MIN_SUBJECTS_PER_CLASS = 3  # per class in validation and test (the hard minimum is 1)
MIN_VALIDATION_CELLS = 50  # the decision threshold and uncertainty band are chosen on them
FRACTION_TOLERANCE = 0.10  # a part's share of cells this far from its fraction is reported
# Near-duplicates: a 64-bit DCT hash (pHash) within this many bits finds candidates, and the
# correlation of their 32x32 grey thumbnails confirms them. The hash alone is not enough for
# cells (a round cell on black looks alike at 8x8: distinct cells come within 2 bits), while
# a brightened, re-compressed copy stays above 0.999 and distinct cells below 0.98.
NEAR_DUPLICATE_BITS = 7
NEAR_DUPLICATE_CORRELATION = 0.99
_BANDS = 8  # 8-bit bands: two hashes within 7 bits share at least one band exactly
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
    method: str  # "grouped-stratified", "folds" or "manifest"
    folds: dict[str, list[str]] | None = None  # method "folds": which folds went where
    split_by: str = "subject"  # "subject", or "image" when some cells have no known subject
    fractions: dict[str, float] | None = None  # the fractions asked for, per part
    data_root: str | None = None  # manifest file paths are relative to it where possible
    test_source: str | None = None  # the separate test data (folder or CSV), if there was one
    subject_rule: dict | None = None  # SubjectRule.to_manifest() the data was read with
    file_hashes: dict[Path, str] | None = field(default=None, repr=False)  # path -> SHA-256

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

    def root_of(self, part: str) -> str | None:
        """The folder a part's manifest paths are relative to: the test data's for the test
        part when it came separately, else the data root."""
        if part == "test" and self.test_source is not None:
            source = Path(self.test_source)
            return str(source.parent if source.suffix.lower() == ".csv" else source)
        return self.data_root

    def to_manifest(self) -> dict:
        """JSON-ready description saved next to a trained model, so the split can be rebuilt.

        Besides subjects and counts it lists every part's files (relative POSIX paths, each
        with its SHA-256 when `file_hashes` holds it, else null), how subjects were read and
        whether the split is by subject or only by image. `split_from_manifest` reads it back.
        """
        summary = self.summary()
        manifest: dict = {
            "method": self.method,
            "seed": self.seed,
            "split_by": self.split_by,
            "subjects": {name: sorted(self.subjects(name)) for name in PARTS},
            "counts": {name: summary[name]["cells_per_class"] for name in PARTS},
            "data_root": self.data_root,
            "test_source": self.test_source,
            "subject_rule": dict(self.subject_rule) if self.subject_rule else None,
            "files": {name: self._files(name) for name in PARTS},
        }
        if self.fractions is not None:
            manifest["fractions"] = dict(self.fractions)
        if self.folds is not None:
            manifest["folds"] = {k: list(v) for k, v in self.folds.items()}
        return manifest

    def _files(self, part: str) -> dict[str, str | None]:
        root = self.root_of(part)
        hashes = self.file_hashes or {}
        return {_relative(r.path, root): hashes.get(r.path) for r in self.part(part)}


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


def majority_class(labels: Counter) -> str:
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

    How many subjects of a class stratum go to each part is fixed first, so the counts follow
    the fractions fairly: every part with a non-zero fraction gets one subject (training
    first), then the rest go by largest remainder of fraction x subjects; a tie between
    validation and test goes to validation in one stratum and to test in the next, so neither
    part is favoured overall (10 + 10 subjects at 0.15/0.15 give 3 and 3 subjects, not 4 and
    2). Then the subjects, shuffled by `seed`, fill those places, each going to the part whose
    cell target is furthest off per place left, so large subjects do not skew the cell shares.

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
        strata[majority_class(per_subject[subject])].append(subject)
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
        others = [p for p in wanted if p != "train"]
        if others and index % 2:
            others = others[::-1]  # ties and lone places rotate between validation and test
        places = _places(len(subjects), fractions, ["train", *others])
        size = {s: sum(per_subject[s].values()) for s in subjects}
        total = sum(size.values())
        target = {p: fractions[p] * total for p in PARTS}
        current = dict.fromkeys(PARTS, 0.0)
        rank = {p: i for i, p in enumerate(["train", *others])}
        for subject in subjects:  # in shuffled order
            open_parts = [p for p in rank if places[p] > 0]
            part = max(open_parts, key=lambda p: ((target[p] - current[p]) / places[p], -rank[p]))
            assignment[subject] = part
            current[part] += size[subject]
            places[part] -= 1

    parts: dict[str, list[Record]] = {p: [] for p in PARTS}
    for r in records:
        parts[assignment[r.subject]].append(r)
    split = Split(
        train=parts["train"],
        validation=parts["validation"],
        test=parts["test"],
        seed=seed,
        method="grouped-stratified",
        split_by=_split_by(records),
        fractions=fractions,
    )
    check_no_leakage(split)
    _check_both_classes(split, wanted, per_subject, strata)
    return split


def _places(n: int, fractions: Mapping[str, float], order: Sequence[str]) -> dict[str, int]:
    """Subjects per part for a stratum of `n`: one each in `order` (as far as `n` goes), then
    largest remainder of fraction x n; equal remainders go by `order`."""
    places = dict.fromkeys(PARTS, 0)
    for part in order[:n]:
        places[part] = 1
    for _ in range(n - sum(places.values())):
        part = max(order, key=lambda p: (round(fractions[p] * n - places[p], 9), -order.index(p)))
        places[part] += 1
    return places


def _split_by(records: Iterable[Record]) -> str:
    """ "image" when any cell's subject is only its image, else "subject"."""
    return "image" if any(r.subject_from == "image" for r in records) else "subject"


def _relative(path: Path, root: str | None) -> str:
    """`path` relative to `root` with POSIX separators, or absolute (POSIX) if not below it."""
    path = Path(path)
    if root is not None:
        try:
            return path.relative_to(root).as_posix()
        except ValueError:
            try:
                return path.resolve().relative_to(Path(root).resolve()).as_posix()
            except (ValueError, OSError):
                pass
    return path.as_posix()


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
        split_by=_split_by(records),
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


# --------------------------------------------------------------------------------------------
# Warnings a user can act on
# --------------------------------------------------------------------------------------------


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def split_warnings(split: Split) -> list[str]:
    """Plain sentences about a usable but shaky split: by image, few subjects, few cells.

    Computed on the split itself (the one training uses), naming the part, the class and the
    counts, so a user knows what to add or which fraction to raise.
    """
    warnings: list[str] = []
    every = [r for p in PARTS for r in split.part(p)]
    unknown = sum(1 for r in every if r.subject_from == "image")
    if unknown or split.split_by == "image":
        warnings.append(
            f"Subjects unknown for {_plural(unknown, 'cell')}: this split is by image, not by "
            "subject, so scores are optimistic (cells of one patient can land in training and "
            "test). Give subjects by a CSV subject column, a folder level or a file-name pattern."
        )
    if not split.test:
        warnings.append(
            "No test part: the model will have no held-out scores; the scores it reports will "
            "be on the validation cells, which choose the epoch, the threshold and the band, so "
            "they are optimistic. Raise the test fraction or give a separate test set."
        )
    mixed = mixed_subjects(every)
    if mixed:
        shown = ", ".join(repr(s) for s in mixed[:3]) + (" …" if len(mixed) > 3 else "")
        warnings.append(
            f"{_plural(len(mixed), 'subject')} ({shown}) hold cells of both ALL and HEM: a "
            "patient is normally one or the other, so check where subjects come from (the "
            "folder level or the file-name pattern)."
        )
    summary = split.summary()
    for part in ("validation", "test"):
        if not split.part(part):
            continue
        for label in (ALL, HEM):
            n = summary[part]["subjects_per_class"][label]
            if n < MIN_SUBJECTS_PER_CLASS:
                warnings.append(
                    f"The {_PART_WORDS[part]} part holds only {_plural(n, label + ' subject')} "
                    f"(fewer than {MIN_SUBJECTS_PER_CLASS}): its numbers rest on very few "
                    f"people; add subjects or raise the {_PART_WORDS[part]} fraction."
                )
    cells = len(split.validation)
    if 0 < cells < MIN_VALIDATION_CELLS:
        warnings.append(
            f"The validation part holds only {_plural(cells, 'cell')} (fewer than "
            f"{MIN_VALIDATION_CELLS}): the decision threshold and the uncertainty band are "
            "chosen on them, so they may not hold on new data; raise the validation fraction "
            "or add data."
        )
    total = len(every)
    if split.fractions and total:
        for part in PARTS:
            asked = split.fractions.get(part, 0.0)
            share = len(split.part(part)) / total
            if abs(share - asked) > FRACTION_TOLERANCE:
                warnings.append(
                    f"The {_PART_WORDS[part]} part holds {share:.0%} of the cells, "
                    f"{asked:.0%} was asked: there are too few (or too unequal) subjects to "
                    "follow the fractions."
                )
    return warnings


def mixed_subjects(records: Iterable[Record]) -> list[str]:
    """Subjects holding cells of both classes, sorted: usually a subject rule that lumps
    different people together."""
    labels: dict[str, set[str]] = defaultdict(set)
    for r in records:
        labels[r.subject].add(r.label)
    return sorted(s for s, found in labels.items() if len(found) > 1)


def split_check(
    records: Sequence[Record], *, validation: float, test: float, seed: int
) -> tuple[str, list[str]]:
    """(why training cannot start, or ""; warnings) for a Start button and the CLI.

    Runs the real splitter, so it can never disagree with the split training makes; the
    warnings are `split_warnings` of that split (only the by-image one when it is refused).
    """
    try:
        split = split_by_subject(records, validation=validation, test=test, seed=seed)
    except ValueError as exc:
        unknown = [r for r in records if r.subject_from == "image"]
        warnings = []
        if unknown:
            empty = Split(list(unknown), [], [], seed, "grouped-stratified", split_by="image")
            warnings = split_warnings(empty)[:1]
        mixed = mixed_subjects(records)
        if mixed:
            shown = ", ".join(repr(s) for s in mixed[:3]) + (" …" if len(mixed) > 3 else "")
            warnings.append(
                f"{_plural(len(mixed), 'subject')} ({shown}) hold cells of both ALL and HEM: "
                "check where subjects come from (the folder level or the file-name pattern)."
            )
        return str(exc), warnings
    return "", split_warnings(split)


def with_sources(split: Split, scan: DatasetScan, test_scan: DatasetScan | None = None) -> Split:
    """The split plus where its data came from (data root, subject rule, separate test data),
    and `split_by` for all its parts, so its manifest can rebuild it and says what it is."""
    rule = scan.subject_rule
    test_root = test_scan.root if test_scan is not None else None
    every = [r for p in PARTS for r in split.part(p)]
    return replace(
        split,
        data_root=str(scan.root) if scan.root is not None else split.data_root,
        subject_rule=rule.to_manifest() if rule is not None else split.subject_rule,
        test_source=str(test_root) if test_root is not None else split.test_source,
        split_by=_split_by(every),
    )


# --------------------------------------------------------------------------------------------
# Rebuilding a recorded split
# --------------------------------------------------------------------------------------------


def _sha256(path: Path) -> str:
    """SHA-256 of the file's bytes (hex), read in chunks (Python 3.10 has no file_digest)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _suffixes(path: Path) -> list[str]:
    """POSIX suffixes of `path`, longest first: a/b/c.png, b/c.png, c.png."""
    parts = PurePath(path).as_posix().split("/")
    return ["/".join(parts[i:]) for i in range(len(parts)) if parts[i:] != [""]]


def split_from_manifest(
    manifest_split: Mapping,
    records: Sequence[Record],
    test_records: Sequence[Record] = (),
    *,
    verify_hashes: bool = True,
) -> Split:
    """Rebuild exactly the parts a bundle recorded (`Split.to_manifest()`), from current data.

    Files are matched by their recorded relative path (the longest matching tail of the
    current path, so the data may have moved), and by SHA-256 when one was recorded and
    `verify_hashes` is on. The test part is matched in `test_records` when the split had a
    separate test set, else in `records`. SplitError says how many recorded files are missing
    or changed and how many current files are not in the recorded split (for a fold split,
    files of folds it did not use are fine).
    """
    files = manifest_split.get("files")
    if not isinstance(files, Mapping):
        return _split_from_subjects(manifest_split, [*records, *test_records])
    separate = manifest_split.get("test_source") is not None
    pools: dict[str, list[Record]] = {"main": list(records), "test": list(test_records)}
    wanted: dict[str, dict[str, tuple[str, str | None]]] = {"main": {}, "test": {}}
    for part in PARTS:
        pool = "test" if part == "test" and separate else "main"
        for rel, digest in (files.get(part) or {}).items():
            wanted[pool][rel] = (part, digest)
    parts: dict[str, list[Record]] = {p: [] for p in PARTS}
    found: set[tuple[str, str]] = set()
    extra = changed = 0
    folds = manifest_split.get("folds") or {}
    used_folds = {f for names in folds.values() for f in names}
    hashes: dict[Path, str] = {}
    for pool, pool_records in pools.items():
        for record in pool_records:
            key = next((k for k in _suffixes(record.path) if k in wanted[pool]), None)
            if key is None or (pool, key) in found:
                if not (folds and record.fold not in used_folds):
                    extra += 1
                continue
            part, digest = wanted[pool][key]
            if digest and verify_hashes:
                actual = _sha256(record.path)
                if actual != digest:
                    changed += 1
                    continue
                hashes[record.path] = actual
            found.add((pool, key))
            parts[part].append(record)
    missing = sum(len(keys) for keys in wanted.values()) - len(found) - changed
    if missing or changed or extra:
        said = []
        if missing:
            said.append(f"{_plural(missing, 'recorded file')} missing")
        if changed:
            said.append(f"{_plural(changed, 'file')} changed since (SHA-256 differs)")
        if extra:
            said.append(f"{_plural(extra, 'current file')} not in the recorded split")
        raise SplitError(f"The data does not match the recorded split: {', '.join(said)}.")
    order = {p: {k: i for i, k in enumerate(files.get(p) or {})} for p in PARTS}
    for part in PARTS:
        root_keys = order[part]
        parts[part].sort(
            key=lambda r, keys=root_keys: next(
                (keys[k] for k in _suffixes(r.path) if k in keys), len(keys)
            )
        )
    split = Split(
        train=parts["train"],
        validation=parts["validation"],
        test=parts["test"],
        seed=manifest_split.get("seed"),
        method=manifest_split.get("method", "manifest"),
        folds={k: list(v) for k, v in folds.items()} or None,
        split_by=manifest_split.get("split_by", "subject"),
        fractions=manifest_split.get("fractions"),
        data_root=manifest_split.get("data_root"),
        test_source=manifest_split.get("test_source"),
        subject_rule=manifest_split.get("subject_rule"),
        file_hashes=hashes or None,
    )
    check_no_leakage(split)
    return split


def _split_from_subjects(manifest_split: Mapping, records: Sequence[Record]) -> Split:
    """An older manifest (subjects per part, no file list): parts rebuilt by subject, which
    is exact as long as the data is the same, since subjects were dealt out whole."""
    recorded = manifest_split.get("subjects")
    if not isinstance(recorded, Mapping):
        raise SplitError("This split records neither files nor subjects, so it cannot be rebuilt.")
    owner = {s: part for part in PARTS for s in recorded.get(part) or ()}
    folds = manifest_split.get("folds") or {}
    used_folds = {f for names in folds.values() for f in names}
    parts: dict[str, list[Record]] = {p: [] for p in PARTS}
    extra = 0
    for record in records:
        part = owner.get(record.subject)
        if part is None:
            extra += 0 if folds and record.fold not in used_folds else 1
        elif not folds or record.fold is None or record.fold in folds.get(part, ()):
            parts[part].append(record)
    missing = len(set(owner) - {r.subject for p in PARTS for r in parts[p]})
    if missing or extra:
        said = [f"{_plural(missing, 'recorded subject')} missing"] if missing else []
        if extra:
            said.append(f"{_plural(extra, 'current cell')} of subjects not in the recorded split")
        raise SplitError(f"The data does not match the recorded split: {', '.join(said)}.")
    split = Split(
        parts["train"],
        parts["validation"],
        parts["test"],
        seed=manifest_split.get("seed"),
        method=manifest_split.get("method", "manifest"),
        folds={k: list(v) for k, v in folds.items()} or None,
        split_by=manifest_split.get("split_by", "subject"),
        test_source=manifest_split.get("test_source"),
    )
    check_no_leakage(split)
    return split


# --------------------------------------------------------------------------------------------
# Duplicate images across parts
# --------------------------------------------------------------------------------------------


class DuplicateError(ValueError):
    """The same image (identical bytes) is in two parts: its test score would be memorised."""


@dataclass(frozen=True)
class DuplicatePair:
    """Two records holding the same (or nearly the same) image, and the parts they are in."""

    first: Record
    first_part: str
    second: Record
    second_part: str
    distance: int  # pHash bits apart; 0 for identical bytes

    def describe(self) -> str:
        """One pair in words: file (part) and file (part)."""
        return (
            f"{self.first.path.name} ({_PART_WORDS[self.first_part]}) and "
            f"{self.second.path.name} ({_PART_WORDS[self.second_part]})"
        )


@dataclass
class DuplicateReport:
    """What `check_duplicates` found; `sha256` can go into `Split.file_hashes` for the manifest."""

    exact: list[DuplicatePair] = field(default_factory=list)  # identical, in different parts
    near: list[DuplicatePair] = field(default_factory=list)  # nearly identical, across parts
    within: list[DuplicatePair] = field(default_factory=list)  # identical, in one part: noted
    sha256: dict[Path, str] = field(default_factory=dict)
    unreadable: list[tuple[Path, str]] = field(default_factory=list)

    def raise_if_exact(self) -> None:
        """Refuse a split with one image in two parts: DuplicateError naming the first pairs."""
        if not self.exact:
            return
        shown = _pairs_in_words(self.exact)
        raise DuplicateError(
            f"{_plural(len(self.exact), 'identical image pair')} across parts: {shown}. "
            "The same image in training and validation or test inflates the scores; remove "
            "the copies from the data."
        )

    def message(self) -> str:
        """A warning about near-duplicates across parts and copies within a part ("" if none)."""
        said = []
        if self.near:
            shown = _pairs_in_words(self.near)
            said.append(
                f"{_plural(len(self.near), 'near-duplicate image pair')} across parts "
                f"(re-saved or retouched copies?): {shown}. Scores may be optimistic."
            )
        if self.within:
            said.append(
                f"{_plural(len(self.within), 'identical image pair')} within one part "
                "(counted twice in training or scoring)."
            )
        return " ".join(said)


_SHOWN_PAIRS = 5


def _pairs_in_words(pairs: Sequence[DuplicatePair]) -> str:
    """The first few pairs in words, then "and N more"."""
    shown = "; ".join(p.describe() for p in pairs[:_SHOWN_PAIRS])
    extra = len(pairs) - _SHOWN_PAIRS
    return f"{shown}; and {extra} more" if extra > 0 else shown


_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


def _popcount(values: np.ndarray) -> np.ndarray:
    """Set bits per uint64 (numpy < 2 has no bitwise_count)."""
    as_bytes = np.ascontiguousarray(values, dtype=np.uint64).view(np.uint8)
    return _POPCOUNT[as_bytes].reshape(-1, 8).sum(axis=1)


def _image_hashes(data: bytes) -> tuple[int, np.ndarray] | None:
    """(64-bit pHash, normalised 32x32 grey thumbnail) of encoded image bytes, or None."""
    import cv2

    grey = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE)
    if grey is None or grey.size == 0:
        return None
    small = cv2.resize(grey, (32, 32), interpolation=cv2.INTER_AREA).astype(np.float32)
    low = cv2.dct(small)[:8, :8].ravel()
    bits = low > np.median(low[1:])  # the DC term would dominate the median
    phash = int(np.packbits(bits).view(">u8")[0])
    thumb = small.ravel() - small.mean()
    norm = float(np.linalg.norm(thumb))
    return phash, (thumb / norm if norm > 0 else thumb)


def check_duplicates(
    split: Split, *, progress: Callable[[int, int], None] | None = None
) -> DuplicateReport:
    """Find the same image in two parts: identical bytes (refuse) and near-copies (warn).

    Every file is read once: SHA-256 of its bytes, and a pHash plus a small thumbnail of its
    pixels. Identical bytes are bucketed by hash; near-copies are found by comparing only
    hashes that share one of eight 8-bit bands (so ~10,000 C-NMC cells take seconds, not
    hours), then confirmed by thumbnail correlation. `progress(done, total)` per file.
    """
    entries = [(part, r) for part in PARTS for r in split.part(part)]
    report = DuplicateReport()
    by_sha: dict[str, list[int]] = defaultdict(list)
    shas: list[str | None] = []
    phashes: list[int] = []
    thumbs: list[np.ndarray] = []
    hashed: list[int] = []  # entry index of each pHash
    total = len(entries)
    for index, (_part, record) in enumerate(entries):
        try:
            data = Path(record.path).read_bytes()
        except OSError as exc:
            report.unreadable.append((record.path, exc.strerror or str(exc)))
            shas.append(None)
        else:
            digest = hashlib.sha256(data).hexdigest()
            shas.append(digest)
            report.sha256[record.path] = digest
            by_sha[digest].append(index)
            pixels = _image_hashes(data)
            if pixels is None:
                report.unreadable.append((record.path, "could not be decoded"))
            else:
                phashes.append(pixels[0])
                thumbs.append(pixels[1])
                hashed.append(index)
        if progress is not None:
            progress(index + 1, total)

    def pair(i: int, j: int, distance: int) -> DuplicatePair:
        (pi, ri), (pj, rj) = entries[i], entries[j]
        return DuplicatePair(ri, pi, rj, pj, distance)

    for group in by_sha.values():
        first_in: dict[str, int] = {}  # part -> first entry of this content there
        for j in group:
            part = entries[j][0]
            report.exact.extend(pair(i, j, 0) for p, i in first_in.items() if p != part)
            if part in first_in:
                report.within.append(pair(first_in[part], j, 0))
            else:
                first_in[part] = j

    if len(hashed) > 1:
        values = np.array(phashes, dtype=np.uint64)
        part_of = np.array([PARTS.index(entries[i][0]) for i in hashed])
        candidates: set[tuple[int, int]] = set()
        for band in range(_BANDS):
            keys = (values >> np.uint64(8 * band)) & np.uint64(0xFF)
            order = np.argsort(keys, kind="stable")
            bounds = np.flatnonzero(np.diff(keys[order])) + 1
            for bucket in np.split(order, bounds):
                for pos in range(len(bucket) - 1):
                    a, rest = bucket[pos], bucket[pos + 1 :]
                    rest = rest[part_of[rest] != part_of[a]]
                    if not len(rest):
                        continue
                    close = rest[_popcount(values[rest] ^ values[a]) <= NEAR_DUPLICATE_BITS]
                    candidates.update((min(a, b), max(a, b)) for b in close.tolist())
        for a, b in sorted(candidates):
            i, j = hashed[a], hashed[b]
            if shas[i] is not None and shas[i] == shas[j]:
                continue  # already an exact pair
            if float(thumbs[a] @ thumbs[b]) >= NEAR_DUPLICATE_CORRELATION:
                distance = int(_popcount(np.array([phashes[a] ^ phashes[b]], np.uint64))[0])
                report.near.append(pair(i, j, distance))
    return report
