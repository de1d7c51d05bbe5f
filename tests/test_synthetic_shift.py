"""The synthetic generator's opt-in lab shift, and the learning-from-review benchmark's machinery.

The shift must leave the default cells byte-identical (the demo model and other tests were
made from them), really move stain hue and cell size the stated way, and be reproducible.
The benchmark runs here end to end on a tiny configuration: its figures must agree with
each other and with what the trainer recorded, not reach the issue's targets.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from leukgui.core.results import ALL, HEM
from leukgui.core.synthetic import (
    SHIFTS,
    Shift,
    SyntheticCell,
    generate_cells,
    get_shift,
    main,
    write_dataset,
)
from leukgui.core.truth import parse_cnmc_name

REPO = Path(__file__).resolve().parents[1]
# sha256 over (image bytes, mask bytes, label) of generate_cells(6, seed=7, size=224), taken
# from the generator before the shift option existed.
DEFAULT_DIGEST_SEED7_224 = "9a51c99b42da84a0a3f85c753818e80f83f7e4787929286e32a2432d9c94e63e"


def _digest(cells: list[SyntheticCell]) -> str:
    h = hashlib.sha256()
    for c in cells:
        h.update(c.image.tobytes())
        h.update(c.mask.tobytes())
        h.update(c.label.encode())
    return h.hexdigest()


def _nucleus_hue_deg(cell: SyntheticCell) -> float:
    """Circular mean hue (degrees) of the darkest 40 % of the cell's pixels: the nucleus."""
    hsv = cv2.cvtColor(cell.image, cv2.COLOR_RGB2HSV_FULL)
    grey = cv2.cvtColor(cell.image, cv2.COLOR_RGB2GRAY)
    nucleus = cell.mask & (grey <= np.percentile(grey[cell.mask], 40))
    angles = hsv[..., 0][nucleus].astype(float) * (2 * np.pi / 256)
    return float(np.degrees(np.angle(np.mean(np.exp(1j * angles)))))


@pytest.fixture(scope="module")
def pair() -> tuple[list[SyntheticCell], list[SyntheticCell]]:
    """The same seed's 24 cells without and with the lab-b shift (labels in the same order)."""
    return list(generate_cells(24, 5, size=160)), list(
        generate_cells(24, 5, size=160, shift="lab-b")
    )


# ---------------------------------------------------------------------------- opt-in


def test_default_output_is_unchanged() -> None:
    cells = list(generate_cells(6, 7, size=224))
    assert _digest(cells) == DEFAULT_DIGEST_SEED7_224
    assert _digest(list(generate_cells(6, 7, size=224, shift=None))) == DEFAULT_DIGEST_SEED7_224


def test_shifted_cells_differ_but_keep_the_label_order(pair) -> None:
    plain, shifted = pair
    assert [c.label for c in plain] == [c.label for c in shifted]
    assert all(not np.array_equal(a.image, b.image) for a, b in zip(plain, shifted, strict=True))


def test_shift_is_deterministic_per_seed() -> None:
    a = list(generate_cells(4, 11, size=96, shift="lab-b"))
    b = list(generate_cells(4, 11, size=96, shift=SHIFTS["lab-b"]))
    c = list(generate_cells(4, 12, size=96, shift="lab-b"))
    assert _digest(a) == _digest(b)
    assert _digest(a) != _digest(c)


# ---------------------------------------------------------------------------- direction


def test_shift_turns_the_nucleus_hue_outside_the_default_range(pair) -> None:
    plain, shifted = pair
    before = np.array([_nucleus_hue_deg(c) for c in plain])
    after = np.array([_nucleus_hue_deg(c) for c in shifted])
    turn = (after - before + 180.0) % 360.0 - 180.0
    assert np.all(turn > 20.0)  # every cell turned the same way (purple towards red)
    assert 40.0 < float(np.mean(turn)) < 90.0  # about the preset's 60 degrees
    assert after.min() > before.max()  # no shifted hue inside the default range


def test_shift_makes_cells_larger_in_both_classes(pair) -> None:
    plain, shifted = pair
    for label in (ALL, HEM):
        area_before = np.mean([c.mask.sum() for c in plain if c.label == label])
        area_after = np.mean([c.mask.sum() for c in shifted if c.label == label])
        assert area_after > 1.5 * area_before  # 1.3-1.5x the diameter, a little clipped
    hem_after = np.mean([c.mask.sum() for c in shifted if c.label == HEM])
    all_before = np.mean([c.mask.sum() for c in plain if c.label == ALL])
    assert hem_after > all_before  # shifted HEM cells have the demo's ALL sizes


def test_lighter_stain_makes_cells_brighter() -> None:
    plain = list(generate_cells(8, 3, size=96, shift=Shift(density=1.0)))
    light = list(generate_cells(8, 3, size=96, shift=Shift(density=0.6)))
    for a, b in zip(plain, light, strict=True):  # the same draws: only the density differs
        assert b.image[b.mask].mean() > a.image[a.mask].mean()


def test_bad_shifts_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown shift"):
        get_shift("lab-z")
    with pytest.raises(ValueError, match="density"):
        Shift(density=0.0)
    with pytest.raises(ValueError, match="size"):
        Shift(size=(1.5, 1.2))
    assert get_shift(None) is None


# ---------------------------------------------------------------------------- subjects, CLI


def test_first_subject_gives_disjoint_subjects(tmp_path) -> None:
    a = write_dataset(tmp_path / "a", 4, 1, fmt="png", layout="cnmc", subjects=2, size=64)
    b = write_dataset(
        tmp_path / "b", 4, 2, fmt="png", layout="cnmc", subjects=2, size=64, first_subject=3
    )

    def subjects(paths: list[Path]) -> set[str]:
        return {parse_cnmc_name(p.name).subject for p in paths}

    assert subjects(a) == {"P1", "P2", "H1", "H2"}
    assert subjects(b) == {"P3", "P4", "H3", "H4"}
    with pytest.raises(ValueError, match="first_subject"):
        write_dataset(tmp_path / "c", 1, 1, layout="cnmc", first_subject=0)


def test_cli_shift_flag(tmp_path, capsys) -> None:
    out_plain, out_shift = tmp_path / "plain", tmp_path / "shift"
    args = ["--per-class", "2", "--seed", "4", "--size", "64", "--format", "png"]
    assert main([str(out_plain), *args]) == 0
    assert main([str(out_shift), *args, "--shift", "lab-b"]) == 0
    plain = sorted(out_plain.rglob("*.png"))
    shifted = sorted(out_shift.rglob("*.png"))
    assert [p.name for p in plain] == [p.name for p in shifted] and len(plain) == 4
    assert any(a.read_bytes() != b.read_bytes() for a, b in zip(plain, shifted, strict=True))
    with pytest.raises(SystemExit):
        main([str(tmp_path / "x"), "--shift", "lab-z"])
    capsys.readouterr()


# ---------------------------------------------------------------------------- the benchmark


def _bench_module():
    spec = importlib.util.spec_from_file_location(
        "bench_learn", REPO / "benchmarks" / "bench_learn.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_learn"] = module
    spec.loader.exec_module(module)
    return module


def test_benchmark_machinery_end_to_end(tmp_path) -> None:
    """The whole loop on a tiny random 32 px parent: review, lab data set, fine-tune with the
    trainer's parent comparison, scoring on the original cells; figures consistent."""
    from leukgui.core.backbones import build_classifier
    from leukgui.core.bundle import make_manifest, read_manifest, save_bundle
    from leukgui.core.lab_dataset import LabDataset

    bl = _bench_module()
    model = build_classifier("efficientnetb0", weights=None, input_size=32, seed=3)
    manifest = make_manifest(name="tiny", version="1", backbone="efficientnetb0", input_size=32)
    parent = save_bundle(model, manifest, tmp_path / "tiny.leukmodel", inference_graph=False)
    config = bl.BenchConfig(
        parent=str(parent),
        train_subjects=4,
        cells_per_subject=2,
        heldout_subjects=2,
        heldout_per_class=4,
        image_size=48,
        epochs=1,
        head_epochs=1,
        batch_size=8,
        bootstrap=100,
        augment=False,
    )
    lines: list[str] = []
    result = bl.run_benchmark(config, tmp_path / "work", log=lines.append)
    result = json.loads(json.dumps(result))  # JSON-ready as --json writes it

    assert result["parent"] == {"file": "tiny.leukmodel"}
    review = result["review"]
    assert review["cells"] == 16 and review["subjects"] == 8
    assert review["corrected"] + review["confirmed"] == review["cells"]
    entries = LabDataset(tmp_path / "work" / "lab-dataset").entries()
    assert len(entries) == 16 and {e.reviewer for e in entries} == {bl.REVIEWER}
    assert all(e.label == parse_cnmc_name(Path(e.image).name).label for e in entries)
    assert any("one reviewer" in w for w in result["guard_rail_warnings"])

    training = result["training"]
    assert training["train_cells"] + training["validation_cells"] == 16
    assert training["epochs_run"] == 1

    for key in ("shifted", "original"):
        f = result[key]
        assert f["cells"] == 8 and f["subjects"] == 4
        assert f["difference"] == pytest.approx(f["new_ba"] - f["parent_ba"])
        assert f["interval"][0] <= f["interval"][1]
        assert 0.0 <= f["mcnemar_p"] <= 1.0
    # the shifted figure is the comparison the trainer recorded in the new bundle
    recorded = result["recorded_in_bundle"]
    assert recorded["difference"] == pytest.approx(result["shifted"]["difference"])
    assert recorded["cells"] == 8
    bundles = list((tmp_path / "work" / "models").glob("*.leukmodel"))
    assert len(bundles) == 1 and read_manifest(bundles[0])["parent"]["name"] == "tiny"

    s, o = result["shifted"], result["original"]
    gain = result["targets"]["shifted_gain"]["passed"]
    assert gain == (s["difference"] >= bl.TARGET_GAIN and s["interval"][0] > 0)
    drop = result["targets"]["original_drop"]["passed"]
    assert drop == (o["parent_ba"] - o["new_ba"] <= bl.TARGET_MAX_DROP)
    table = bl.format_table(result)
    assert table.count("PASS") + table.count("FAIL") == 2
    assert f"{100 * s['difference']:+.1f}" in table
