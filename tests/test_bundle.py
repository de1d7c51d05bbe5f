"""Model bundles: round trip, hash check, manifest schema and identity, zip limits,
manifest/model match, safe_mode, discovery."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from leukgui.core.backbones import build_classifier
from leukgui.core.bundle import (
    CONFLICT,
    COPIED,
    IDENTICAL,
    MANIFEST_MEMBER,
    MODEL_MEMBER,
    BundleError,
    BundleInfo,
    bundle_identity,
    choose_bundle,
    find_bundles,
    install_bundle,
    load_bundle,
    make_manifest,
    read_manifest,
    save_bundle,
)
from leukgui.core.results import ALL, HEM, UNCERTAIN


def _rewrite(src: Path, dst: Path, *, manifest=None, model_bytes=None, sign=True) -> Path:
    """Copy a bundle, changing its manifest or model. `sign` records the changed manifest's
    identity, as a file written by `save_bundle` would; `sign=False` leaves the old one."""
    with zipfile.ZipFile(src) as archive:
        m = json.loads(archive.read(MANIFEST_MEMBER))
        data = archive.read(MODEL_MEMBER)
    if manifest is not None:
        m = manifest(m)
    if sign and isinstance(m, dict):
        m = {**m, "bundle_sha256": bundle_identity(m)}
    if model_bytes is not None:
        data = model_bytes(data)
    with zipfile.ZipFile(dst, "w") as archive:
        archive.writestr(MANIFEST_MEMBER, json.dumps(m))
        archive.writestr(MODEL_MEMBER, data)
    return dst


def test_round_trip_keeps_predictions_and_manifest(tiny_bundle_path: Path, tiny_bundle) -> None:
    manifest = read_manifest(tiny_bundle_path)
    assert manifest["name"] == "tiny-test"
    assert manifest["class_names"] == ["HEM", "ALL"]
    assert manifest["cam_layer"] == "top_activation"
    assert len(manifest["weights_sha256"]) == 64
    fresh = build_classifier("efficientnetb0", weights=None, input_size=64, seed=7)
    x = np.random.default_rng(1).uniform(0, 255, (3, 64, 64, 3)).astype(np.float32)
    np.testing.assert_allclose(
        tiny_bundle.model.predict(x, verbose=0), fresh.predict(x, verbose=0), atol=1e-6
    )


def test_bundle_is_small_without_optimizer_state(tmp_path: Path) -> None:
    import keras

    model = build_classifier("efficientnetb0", weights=None, input_size=64, seed=1)
    model.compile(optimizer=keras.optimizers.Adam(), loss="sparse_categorical_crossentropy")
    model.fit(np.zeros((2, 64, 64, 3)), np.array([0, 1]), verbose=0)
    manifest = make_manifest(name="m", version="1", backbone="efficientnetb0", input_size=64)
    path = save_bundle(model, manifest, tmp_path, inference_graph=False)
    assert path.stat().st_size < 20e6  # weights alone; Adam state would add ~2x
    loaded = load_bundle(path)
    x = np.ones((1, 64, 64, 3), np.float32) * 120
    np.testing.assert_allclose(
        loaded.model.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6
    )


def test_changed_weights_are_refused(tiny_bundle_path: Path, tmp_path: Path) -> None:
    def flip_a_byte(data: bytes) -> bytes:
        middle = len(data) // 2
        return data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1 :]

    bad = _rewrite(tiny_bundle_path, tmp_path / "bad.leukmodel", model_bytes=flip_a_byte)
    with pytest.raises(BundleError, match="changed or damaged"):
        load_bundle(bad)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("input_size", 128, "manifest says input 128"),
        ("cam_layer", "block6a_expand_activation", "Grad-CAM layer"),
        ("backbone", "resnet50", "backbone resnet50"),
    ],
)
def test_manifest_that_does_not_match_the_model_is_refused(
    tiny_bundle_path: Path, tmp_path: Path, field: str, value, message: str
) -> None:
    bad = _rewrite(
        tiny_bundle_path, tmp_path / f"{field}.leukmodel", manifest=lambda m: {**m, field: value}
    )
    with pytest.raises(BundleError, match=message):
        load_bundle(bad)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda m: {k: v for k, v in m.items() if k != "decision_threshold"}, "missing"),
        (lambda m: {**m, "format": "something-else"}, "not a LeukGUI model file"),
        (lambda m: {**m, "format_version": 99}, "newer than this LeukGUI"),
        (lambda m: {**m, "uncertainty_band": [0.6, 0.9]}, "must contain the threshold"),
        (lambda m: {**m, "class_names": ["ALL", "HEM"]}, "classes"),
    ],
)
def test_bad_manifests_are_refused(tiny_bundle_path: Path, tmp_path: Path, change, message):
    bad = _rewrite(tiny_bundle_path, tmp_path / "bad.leukmodel", manifest=change)
    with pytest.raises(BundleError, match=message):
        read_manifest(bad)


def test_not_a_bundle(tmp_path: Path) -> None:
    junk = tmp_path / "junk.leukmodel"
    junk.write_bytes(b"hello")
    with pytest.raises(BundleError, match="not a readable model file"):
        read_manifest(junk)


def test_safe_mode_refuses_code_inside_the_model(tmp_path: Path, tiny_bundle_path: Path) -> None:
    """A model carrying a Lambda layer (arbitrary code) must not be deserialised."""
    import hashlib

    import keras

    inputs = keras.Input((64, 64, 3))
    outputs = keras.layers.Lambda(lambda t: t * 2.0)(inputs)
    lam = keras.Model(inputs, outputs)
    path = tmp_path / "lam.keras"
    lam.save(path)
    data = path.read_bytes()
    bad = _rewrite(
        tiny_bundle_path,
        tmp_path / "lambda.leukmodel",
        manifest=lambda m: {**m, "weights_sha256": hashlib.sha256(data).hexdigest()},
        model_bytes=lambda _: data,
    )
    with pytest.raises(BundleError, match="cannot be loaded"):
        load_bundle(bad)


def test_bundles_are_never_overwritten(tiny_bundle_path: Path, tiny_bundle) -> None:
    with pytest.raises(FileExistsError):
        save_bundle(tiny_bundle.model, tiny_bundle.manifest, tiny_bundle_path)


def test_labels_follow_threshold_and_band(tiny_bundle) -> None:
    assert tiny_bundle.uncertainty_band == (0.4, 0.6)
    assert tiny_bundle.label(0.9) == ALL
    assert tiny_bundle.label(0.6) == ALL
    assert tiny_bundle.label(0.55) == UNCERTAIN
    assert tiny_bundle.label(0.41) == UNCERTAIN
    assert tiny_bundle.label(0.4) == HEM
    assert tiny_bundle.label(0.01) == HEM


def test_discovery_and_choice(tiny_bundle_path: Path, tmp_path: Path, monkeypatch) -> None:
    import shutil

    user = tmp_path / "user"
    (user / "models").mkdir(parents=True)
    monkeypatch.setenv("LEUKGUI_USER_DIR", str(user))
    resources = tmp_path / "resources"
    (resources / "models").mkdir(parents=True)
    monkeypatch.setenv("LEUKGUI_RESOURCES", str(resources))
    demo = _rewrite(
        tiny_bundle_path,
        resources / "models" / "demo.leukmodel",
        manifest=lambda m: {**m, "name": "demo", "demo": True},
    )
    with pytest.raises(BundleError, match="no model named 'lab'"):
        choose_bundle("lab")
    assert choose_bundle().path == demo  # only the demo is installed
    shutil.copy(tiny_bundle_path, user / "models" / "lab-v1.leukmodel")
    _rewrite(
        tiny_bundle_path,
        user / "models" / "lab-v2.leukmodel",
        manifest=lambda m: {**m, "name": "lab", "version": "2"},
    )
    _rewrite(
        tiny_bundle_path,
        user / "models" / "lab-v10.leukmodel",
        manifest=lambda m: {**m, "name": "lab", "version": "10"},
    )
    (user / "models" / "broken.leukmodel").write_bytes(b"not a zip")
    found, broken = find_bundles()
    assert {(b.name, b.version, b.source) for b in found} == {
        ("demo", "1", "bundled"),
        ("tiny-test", "1", "user"),
        ("lab", "2", "user"),
        ("lab", "10", "user"),
    }
    assert [p.name for p, _ in broken] == ["broken.leukmodel"]
    assert choose_bundle("lab").version == "10"  # numeric, not text, order
    assert choose_bundle("lab-v2").version == "2"
    assert choose_bundle().name != "demo"  # a real model wins over the demo
    assert choose_bundle(str(demo)).source == "file"
    with pytest.raises(BundleError, match="not found"):
        choose_bundle(str(tmp_path / "missing.leukmodel"))


# ---------------------------------------------------------------------------- installing


def test_install_copies_then_finds_the_identical_file(tiny_bundle_path: Path, tmp_path) -> None:
    models = tmp_path / "models"
    first = install_bundle(tiny_bundle_path, models)
    assert (first.status, first.installed) == (COPIED, True)
    assert first.target == models / tiny_bundle_path.name
    assert first.target.read_bytes() == tiny_bundle_path.read_bytes()
    again = install_bundle(tiny_bundle_path, models)
    assert (again.status, again.target) == (IDENTICAL, first.target)
    assert sorted(p.name for p in models.iterdir()) == [tiny_bundle_path.name]  # no leftovers


def test_install_never_overwrites_a_file_of_the_same_name(tiny_bundle_path: Path, tmp_path) -> None:
    models = tmp_path / "models"
    install_bundle(tiny_bundle_path, models)
    before = (models / tiny_bundle_path.name).read_bytes()
    other = tmp_path / "elsewhere" / tiny_bundle_path.name
    other.parent.mkdir()
    _rewrite(tiny_bundle_path, other, manifest=lambda m: {**m, "description": "edited"})
    outcome = install_bundle(other, models)
    assert (outcome.status, outcome.installed) == (CONFLICT, False)
    assert "rename the file" in outcome.reason
    assert (models / tiny_bundle_path.name).read_bytes() == before


def test_install_refuses_a_second_model_with_the_same_name_and_version(
    tiny_bundle_path: Path, tmp_path
) -> None:
    """Reports name a model by name and version: two sets of weights under one name would be
    indistinguishable in a signed report."""
    models = tmp_path / "models"
    install_bundle(tiny_bundle_path, models)
    twin = build_classifier("efficientnetb0", weights=None, input_size=64, seed=8)
    manifest = read_manifest(tiny_bundle_path)
    manifest = make_manifest(
        name=manifest["name"],
        version=manifest["version"],
        backbone="efficientnetb0",
        input_size=64,
        threshold=0.5,
        uncertainty_band=(0.4, 0.6),
    )
    (tmp_path / "other").mkdir()
    other = save_bundle(twin, manifest, tmp_path / "other" / "renamed.leukmodel")
    outcome = install_bundle(other, models)
    assert outcome.status == CONFLICT
    assert "already installed" in outcome.reason and "tiny-test" in outcome.reason
    assert not (models / "renamed.leukmodel").exists()


def test_install_rejects_a_damaged_file_and_leaves_nothing(
    tiny_bundle_path: Path, tmp_path
) -> None:
    models = tmp_path / "models"
    bad = _rewrite(
        tiny_bundle_path, tmp_path / "bad.leukmodel", model_bytes=lambda b: b[:-10] + b"0" * 10
    )
    with pytest.raises(BundleError):
        install_bundle(bad, models)
    assert not models.exists() or not any(models.iterdir())


def test_score_warning_flags_models_without_good_held_out_scores() -> None:
    def info(metrics: object) -> BundleInfo:
        return BundleInfo(Path("m.leukmodel"), {"metrics": metrics}, "user")

    assert "no held-out scores" in info({}).score_warning
    assert "no held-out scores" in info(None).score_warning
    assert "no held-out scores" in info({"balanced_accuracy": None}).score_warning
    weak = info({"evaluated_on": "test", "balanced_accuracy": 0.5}).score_warning
    assert "50.0%" in weak and "80%" in weak
    validation = {"evaluated_on": "validation", "balanced_accuracy": 0.95}
    assert "validation" in info(validation).score_warning
    assert info({"evaluated_on": "test", "balanced_accuracy": 0.91}).score_warning == ""


# ------------------------------------------------------- manifest schema (issue 13, bug 2)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        (
            "decision_threshold",
            "0.5",
            "decision_threshold must be a number between 0 and 1, not the text '0.5'",
        ),
        ("decision_threshold", 1.5, "decision_threshold must be a number between 0 and 1"),
        ("decision_threshold", True, "decision_threshold must be a number .* not true"),
        ("format_version", None, "format_version must be a whole number, not null"),
        ("class_names", 5, "class_names must be a list of class names, not 5"),
        ("backbone", ["efficientnetb0"], "backbone must be the name of a backbone, not a list"),
        ("input_size", "64", "input_size must be a whole number 32..4096, not the text '64'"),
        ("uncertainty_band", 0.5, "uncertainty_band must be a list of two numbers"),
        ("uncertainty_band", [0.4, None], "uncertainty_band must be a list of two numbers"),
        ("name", 7, "name must be non-empty text, not 7"),
        ("demo", "no", "demo must be true or false, not the text 'no'"),
        ("metrics", [], "metrics must be an object"),
        ("weights_sha256", None, "weights_sha256 must be 64 lowercase hex digits, not null"),
    ],
)
def test_badly_typed_manifests_are_refused_with_a_specific_reason(
    tiny_bundle_path: Path, tmp_path: Path, field: str, value, message: str
) -> None:
    bad = _rewrite(
        tiny_bundle_path, tmp_path / "typed.leukmodel", manifest=lambda m: {**m, field: value}
    )
    with pytest.raises(BundleError, match=message):
        read_manifest(bad)
    with pytest.raises(BundleError, match=message):
        load_bundle(bad)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[1, 2]", "must be a JSON object, not a list"),
        ('"hello"', "must be a JSON object, not the text"),
        ("null", "must be a JSON object, not null"),
    ],
)
def test_a_manifest_that_is_not_an_object_is_refused(
    tiny_bundle_path: Path, tmp_path: Path, text: str, message: str
) -> None:
    bad = tmp_path / "odd.leukmodel"
    with zipfile.ZipFile(tiny_bundle_path) as archive:
        data = archive.read(MODEL_MEMBER)
    with zipfile.ZipFile(bad, "w") as archive:
        archive.writestr(MANIFEST_MEMBER, text)
        archive.writestr(MODEL_MEMBER, data)
    with pytest.raises(BundleError, match=message):
        read_manifest(bad)


def test_nan_and_repeated_keys_in_the_manifest_are_refused(
    tiny_bundle_path: Path, tmp_path: Path
) -> None:
    with zipfile.ZipFile(tiny_bundle_path) as archive:
        text = archive.read(MANIFEST_MEMBER).decode()
        data = archive.read(MODEL_MEMBER)
    for i, (changed, message) in enumerate(
        [
            (text.replace('"demo": false', '"demo": false, "demo": true'), "'demo' twice"),
            (text.replace('"decision_threshold": 0.5', '"decision_threshold": NaN'), "NaN"),
        ]
    ):
        assert changed != text
        bad = tmp_path / f"json{i}.leukmodel"
        with zipfile.ZipFile(bad, "w") as archive:
            archive.writestr(MANIFEST_MEMBER, changed)
            archive.writestr(MODEL_MEMBER, data)
        with pytest.raises(BundleError, match=message):
            read_manifest(bad)


def _user_models(tmp_path: Path, monkeypatch) -> Path:
    user = tmp_path / "user"
    (user / "models").mkdir(parents=True)
    monkeypatch.setenv("LEUKGUI_USER_DIR", str(user))
    return user / "models"


def test_one_badly_typed_bundle_never_hides_the_good_ones(
    tiny_bundle_path: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    import shutil

    from leukgui import cli

    models = _user_models(tmp_path, monkeypatch)
    shutil.copy(tiny_bundle_path, models / "good.leukmodel")
    for i, (field, value) in enumerate(
        [
            ("decision_threshold", "0.5"),
            ("format_version", None),
            ("class_names", 5),
            ("backbone", ["efficientnetb0"]),
        ]
    ):
        _rewrite(
            tiny_bundle_path,
            models / f"bad{i}.leukmodel",
            manifest=lambda m, f=field, v=value: {**m, "name": "bad", f: v},
        )
    found, broken = find_bundles()
    assert [b.path.name for b in found if b.source == "user"] == ["good.leukmodel"]
    assert [p.name for p, _ in broken] == [f"bad{i}.leukmodel" for i in range(4)]
    assert "decision_threshold must be a number between 0 and 1" in broken[0][1]
    assert choose_bundle().path == models / "good.leukmodel"

    code = cli.main(["models"])
    captured = capsys.readouterr()
    assert code == cli.EXIT_OK
    assert any(line.startswith("tiny-test") for line in captured.out.splitlines())
    assert "efficientnetb0-demo [DEMO]" in captured.out
    for i in range(4):  # each listed once, as the window's picker says it: "unusable"
        assert captured.err.count(f"bad{i}.leukmodel") == 1
    assert captured.err.count("unusable model file") == 4
    assert "not the text '0.5'" in captured.err
    assert "class_names must be a list of class names, not 5" in captured.err


def test_analyze_without_model_works_beside_a_bad_bundle_and_with_it_exits_4(
    tiny_bundle_path: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    import shutil

    from leukgui import cli
    from leukgui.core.synthetic import write_dataset

    models = _user_models(tmp_path, monkeypatch)
    shutil.copy(tiny_bundle_path, models / "good.leukmodel")
    bad = _rewrite(
        tiny_bundle_path,
        models / "zz-bad.leukmodel",
        manifest=lambda m: {**m, "decision_threshold": "0.5"},
    )
    cells = tmp_path / "cells"
    write_dataset(cells, n_per_class=1, seed=5, fmt="png")
    report = tmp_path / "r.xlsx"
    code = cli.main(["analyze", str(cells), "--out", str(report), "--no-progress"])
    captured = capsys.readouterr()
    assert code == cli.EXIT_OK, captured.err
    assert report.is_file() and "tiny-test" in captured.err

    code = cli.main(["analyze", str(cells), "--model", str(bad), "--out", str(tmp_path / "b.xlsx")])
    captured = capsys.readouterr()
    assert code == cli.EXIT_MODEL
    assert "decision_threshold must be a number between 0 and 1" in captured.err
    assert not (tmp_path / "b.xlsx").exists()


# -------------------------------------------------- the manifest's identity (issue 13, bug 3)


def test_the_identity_covers_manifest_and_weights(tiny_bundle_path: Path, tiny_bundle) -> None:
    manifest = read_manifest(tiny_bundle_path)
    assert manifest["format_version"] == 2
    assert tiny_bundle.sha256 == manifest["bundle_sha256"] == bundle_identity(manifest)
    assert tiny_bundle.sha256 != tiny_bundle.weights_sha256 == manifest["weights_sha256"]
    assert bundle_identity({**manifest, "decision_threshold": 0.02}) != tiny_bundle.sha256
    assert bundle_identity({**manifest, "weights_sha256": "0" * 64}) != tiny_bundle.sha256


def test_an_edited_manifest_is_refused_exit_4(
    tiny_bundle_path: Path, tmp_path: Path, capsys
) -> None:
    from leukgui import cli
    from leukgui.core.synthetic import write_dataset

    tampered = _rewrite(
        tiny_bundle_path,
        tmp_path / "tampered.leukmodel",
        manifest=lambda m: {
            **m,
            "name": "lab-validated",
            "demo": False,
            "decision_threshold": 0.02,
            "uncertainty_band": [0.01, 0.03],
        },
        sign=False,
    )
    with pytest.raises(BundleError, match="manifest has been changed"):
        read_manifest(tampered)
    cells = tmp_path / "cells"
    write_dataset(cells, n_per_class=1, seed=5, fmt="png")
    report = tmp_path / "r.xlsx"
    code = cli.main(["analyze", str(cells), "--model", str(tampered), "--out", str(report)])
    assert code == cli.EXIT_MODEL
    assert "manifest has been changed" in capsys.readouterr().err
    assert not report.exists()


def test_the_demo_cannot_be_passed_off_as_a_real_model(tmp_path: Path) -> None:
    """Even re-signed, the demo's weights under demo=false are refused; unsigned, the edit is."""
    from leukgui.core.bundle import DEMO_WEIGHTS_SHA256

    demo = Path(__file__).resolve().parents[1] / "resources/models/efficientnetb0-demo.leukmodel"
    assert read_manifest(demo)["weights_sha256"] in DEMO_WEIGHTS_SHA256

    def relabel(m):
        return {
            **m,
            "name": "lab-validated",
            "demo": False,
            "notice": "",
            "decision_threshold": 0.02,
            "uncertainty_band": [0.01, 0.03],
        }

    unsigned = _rewrite(demo, tmp_path / "a.leukmodel", manifest=relabel, sign=False)
    with pytest.raises(BundleError, match="manifest has been changed"):
        read_manifest(unsigned)
    resigned = _rewrite(demo, tmp_path / "b.leukmodel", manifest=relabel)
    with pytest.raises(BundleError, match="weights of the bundled demo model"):
        read_manifest(resigned)


def test_a_format_1_bundle_without_identity_is_refused(
    tiny_bundle_path: Path, tmp_path: Path
) -> None:
    def old(m):
        return {k: v for k, v in m.items() if k != "bundle_sha256"} | {"format_version": 1}

    legacy = _rewrite(tiny_bundle_path, tmp_path / "old.leukmodel", manifest=old, sign=False)
    with pytest.raises(BundleError, match="older LeukGUI .* cannot be verified"):
        read_manifest(legacy)
    unsigned = _rewrite(
        tiny_bundle_path,
        tmp_path / "unsigned.leukmodel",
        manifest=lambda m: {k: v for k, v in m.items() if k != "bundle_sha256"},
        sign=False,
    )
    with pytest.raises(BundleError, match="missing bundle_sha256"):
        read_manifest(unsigned)


def _zip(path: Path, entries: list[tuple[str, bytes]]) -> Path:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about the duplicate name we want
        with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            for name, data in entries:
                archive.writestr(name, data)
    return path


def _parts(bundle: Path) -> tuple[bytes, bytes]:
    with zipfile.ZipFile(bundle) as archive:
        return archive.read(MANIFEST_MEMBER), archive.read(MODEL_MEMBER)


def test_a_second_manifest_entry_is_refused(tiny_bundle_path: Path, tmp_path: Path) -> None:
    manifest, model = _parts(tiny_bundle_path)
    edited = json.dumps({**json.loads(manifest), "demo": True}).encode()
    for order in ([manifest, edited], [edited, manifest]):
        bad = _zip(
            tmp_path / "two.leukmodel",
            [(MANIFEST_MEMBER, order[0]), (MODEL_MEMBER, model), (MANIFEST_MEMBER, order[1])],
        )
        with pytest.raises(BundleError, match="manifest.json more than once"):
            read_manifest(bad)
        with pytest.raises(BundleError, match="more than once"):
            load_bundle(bad)


def test_an_unexpected_entry_is_refused(tiny_bundle_path: Path, tmp_path: Path) -> None:
    manifest, model = _parts(tiny_bundle_path)
    bad = _zip(
        tmp_path / "extra.leukmodel",
        [(MANIFEST_MEMBER, manifest), (MODEL_MEMBER, model), ("../evil.py", b"print(1)")],
    )
    with pytest.raises(BundleError, match="unexpected entries .*evil"):
        read_manifest(bad)


# ---------------------------------------------------- size limits (issue 13, bug 6, part 2)


def test_a_huge_manifest_is_refused_without_unpacking_it(
    tiny_bundle_path: Path, tmp_path: Path, monkeypatch
) -> None:
    import shutil

    _, model = _parts(tiny_bundle_path)
    models = _user_models(tmp_path, monkeypatch)
    shutil.copy(tiny_bundle_path, models / "good.leukmodel")
    huge = b'{"name": "' + b" " * (3 << 20) + b'"}'  # 3 MB that deflate to a few kB
    bomb = _zip(models / "bomb.leukmodel", [(MANIFEST_MEMBER, huge), (MODEL_MEMBER, model)])

    def no_unpacking(self, name, *args, **kwargs):
        member = getattr(name, "filename", name)
        if self.filename == str(bomb) and member == MANIFEST_MEMBER:
            raise AssertionError("the oversized manifest was unpacked")
        return real_open(self, name, *args, **kwargs)

    real_open = zipfile.ZipFile.open
    monkeypatch.setattr(zipfile.ZipFile, "open", no_unpacking)
    with pytest.raises(BundleError, match="manifest.json would unpack to 3.1 MB"):
        read_manifest(bomb)
    found, broken = find_bundles()
    assert [b.path.name for b in found if b.source == "user"] == ["good.leukmodel"]
    assert [p.name for p, _ in broken] == ["bomb.leukmodel"]


def test_a_model_entry_that_expands_like_a_zip_bomb_is_refused(
    tiny_bundle_path: Path, tmp_path: Path
) -> None:
    manifest, _ = _parts(tiny_bundle_path)
    bomb = _zip(
        tmp_path / "bomb.leukmodel",
        [(MANIFEST_MEMBER, manifest), (MODEL_MEMBER, bytes(40 << 20))],
    )
    with pytest.raises(BundleError, match="model.keras would expand .* times"):
        load_bundle(bomb)


def test_the_size_limits_are_checked_before_reading(
    monkeypatch, tmp_path: Path, tiny_bundle_path: Path
) -> None:
    from leukgui.core import bundle

    monkeypatch.setattr(bundle, "MAX_MODEL_BYTES", 1000)
    with pytest.raises(BundleError, match="model.keras would unpack to .* more than"):
        read_manifest(tiny_bundle_path)


def test_models_upgrade_makes_an_old_lab_model_usable_and_says_what_to_check(
    tiny_bundle_path: Path, tmp_path: Path, capsys
) -> None:
    from leukgui import cli

    def old(m):
        return {k: v for k, v in m.items() if k != "bundle_sha256"} | {"format_version": 1}

    legacy = _rewrite(tiny_bundle_path, tmp_path / "old.leukmodel", manifest=old, sign=False)
    new = tmp_path / "new.leukmodel"
    assert cli.main(["models", "--upgrade", str(legacy)]) == cli.EXIT_USAGE  # no --out
    assert cli.main(["models", "--upgrade", str(legacy), "--out", str(new)]) == cli.EXIT_OK
    said = capsys.readouterr().out
    manifest = read_manifest(new)  # verified: format 2, identity over manifest and weights
    assert manifest["bundle_sha256"] in said and "threshold" in said
    assert "not covered by any hash" in said
    assert load_bundle(new).name == "tiny-test"
    # Never over an existing file; a file whose weights do not match is refused (exit 4).
    assert cli.main(["models", "--upgrade", str(legacy), "--out", str(new)]) == cli.EXIT_USAGE
    broken = _rewrite(
        tiny_bundle_path,
        tmp_path / "broken.leukmodel",
        manifest=old,
        model_bytes=lambda b: b[:-10] + b"0123456789",
        sign=False,
    )
    code = cli.main(["models", "--upgrade", str(broken), "--out", str(tmp_path / "x.leukmodel")])
    assert code == cli.EXIT_MODEL and not (tmp_path / "x.leukmodel").exists()


# ------------------------------------------------------- calibration and stain normalisation


def test_a_bundle_without_calibration_or_stain_keeps_its_scores(tiny_bundle) -> None:
    assert "calibration" not in tiny_bundle.manifest
    assert tiny_bundle.temperature == 1.0
    assert tiny_bundle.stain is None
    assert tiny_bundle.calibrate(0.8) == pytest.approx(0.8)


def test_calibration_and_stain_round_trip_through_a_bundle(tiny_bundle, tmp_path: Path) -> None:
    from leukgui.core.stain import ReinhardStats

    stats = ReinhardStats((60.0, 20.0, -20.0), (12.0, 5.0, 8.0), "120 training cells")
    manifest = make_manifest(
        name="calibrated",
        version="1",
        backbone="efficientnetb0",
        input_size=64,
        temperature=2.0,
        stain=stats,
    )
    assert manifest["calibration"] == {
        "method": "temperature",
        "temperature": 2.0,
        "fitted_on": "validation",
    }
    assert manifest["stain_normalisation"]["method"] == "reinhard"
    path = save_bundle(tiny_bundle.model, manifest, tmp_path)
    loaded = load_bundle(path)
    assert loaded.temperature == 2.0
    assert loaded.calibration_fitted_on == "validation"
    assert loaded.stain == stats
    p = np.array([0.1, 0.5, 0.9])
    z = np.log(p / (1 - p)) / 2.0
    np.testing.assert_allclose(loaded.calibrate(p), 1 / (1 + np.exp(-z)), rtol=1e-6)
    # The identity covers the calibration: a changed temperature is an edited manifest.
    edited = _rewrite(
        path,
        tmp_path / "edited.leukmodel",
        manifest=lambda m: {**m, "calibration": {**m["calibration"], "temperature": 1.0}},
        sign=False,
    )
    with pytest.raises(BundleError, match="changed after the model file was written"):
        read_manifest(edited)


@pytest.mark.parametrize(
    ("calibration", "message"),
    [
        ({"method": "temperature", "temperature": 0}, "positive finite number, not 0"),
        ({"method": "temperature", "temperature": -2.0}, "positive finite number, not -2.0"),
        ({"method": "temperature", "temperature": "2"}, "positive finite number, not the text"),
        ({"method": "temperature", "temperature": True}, "positive finite number, not true"),
        ({"method": "temperature"}, "positive finite number, not null"),
        ({"method": "platt", "temperature": 2.0}, "method must be 'temperature'"),
        ({"method": "temperature", "temperature": 2.0, "fitted_on": 3}, "fitted_on must be text"),
        ([2.0], "calibration must be an object"),
    ],
)
def test_an_unusable_calibration_is_refused_at_load(
    tiny_bundle_path: Path, tmp_path: Path, calibration, message
) -> None:
    bad = _rewrite(
        tiny_bundle_path,
        tmp_path / "bad.leukmodel",
        manifest=lambda m: {**m, "calibration": calibration},
    )
    with pytest.raises(BundleError, match=message):
        load_bundle(bad)


def test_an_unusable_stain_normalisation_is_refused_at_load(
    tiny_bundle_path: Path, tmp_path: Path
) -> None:
    bad = _rewrite(
        tiny_bundle_path,
        tmp_path / "bad.leukmodel",
        manifest=lambda m: {
            **m,
            "stain_normalisation": {
                "method": "reinhard",
                "lab_mean": [60.0, 20.0, -20.0],
                "lab_std": [12.0, 0.0, 8.0],
            },
        },
    )
    with pytest.raises(BundleError, match="stain_normalisation is unusable.*lab_std"):
        read_manifest(bad)
    with pytest.raises(BundleError, match="temperature must be a positive"):
        make_manifest(
            name="x", version="1", backbone="efficientnetb0", input_size=64, temperature=0.0
        )
