"""Model bundles: one `.leukmodel` file = `model.keras` + `manifest.json` in a zip.

A bare weights file says nothing about how it was trained or which threshold to use, and
can be swapped silently. A bundle carries its manifest (classes, backbone, input size,
preprocessing, threshold and uncertainty band, training data, held-out metrics) and the
SHA-256 of its weights; loading verifies that hash and uses Keras `safe_mode`.

The manifest is covered too: it records `bundle_sha256`, the SHA-256 of its own canonical
JSON form without that field (`bundle_identity`), and since the manifest holds the weights'
hash, that one value names weights and manifest together. It is the hash every report,
listing and window shows. Reading refuses a manifest whose recorded identity does not match
(an edited threshold, name or demo flag), a zip holding anything but exactly one manifest and
one model entry, oversized entries (checked before decompressing), and manifests of format 1,
which predate the identity and so cannot be verified.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import zipfile
import zlib
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from leukgui import __version__
from leukgui.core.atomic import atomic_write
from leukgui.core.backbones import CLASS_NAMES, get_spec, split_classifier
from leukgui.core.inference_graph import (
    GRAPH_MEMBER,
    INFERENCE_KEY,
    MAX_PROBE_BYTES,
    PROBE_MEMBER,
    GraphError,
    GraphFiles,
    check_graph_manifest,
    sha256,
    verify_members,
)
from leukgui.core.paths import bundled_models_dir, user_models_dir
from leukgui.core.results import ALL, DEMO_NOTICE

BUNDLE_SUFFIX = ".leukmodel"
FORMAT_NAME = "leukgui-model"
# 2: the manifest records `bundle_sha256`, which covers the manifest and (through
# `weights_sha256`) the weights. Format 1 files carry no such field and are refused.
FORMAT_VERSION = 2
IDENTITY_KEY = "bundle_sha256"
MODEL_MEMBER = "model.keras"
MANIFEST_MEMBER = "manifest.json"
CALIBRATION_KEY = "calibration"  # optional: {"method": "temperature", "temperature": T, ...}
STAIN_KEY = "stain_normalisation"  # optional: {"method": "reinhard", "lab_mean": [...], ...}
# optional: the bundle a fine-tuned model started from (`leukgui train --init-from`):
# {"name", "version", "bundle_sha256" (the parent's identity), "weights_sha256", "backbone"}
PARENT_KEY = "parent"
# optional, inside `training_data`: the data set a model was trained on (see training.trainer)
DATASET_KEY = "dataset"
REQUIRED_KEYS = (
    "format",
    "format_version",
    "name",
    "version",
    "class_names",
    "backbone",
    "input_size",
    "preprocessing",
    "cam_layer",
    "decision_threshold",
    "uncertainty_band",
    "weights_sha256",
    "created",
    IDENTITY_KEY,
)

# Limits checked on the zip's directory before anything is decompressed: a manifest is a few
# kilobytes; the largest backbone's weights (VGG16 without its top) are under 100 MB.
MAX_MANIFEST_BYTES = 1 << 20
MAX_MODEL_BYTES = 1 << 30
# Above this size an entry may not expand more than MAX_RATIO times (a zip bomb does 1000x).
RATIO_CHECK_BYTES = 1 << 20
MAX_RATIO = 50

# The weights of the bundled demo model (`python -m training.demo`): a file carrying them must
# say it is the demo, whatever else its manifest was edited to say. Regenerating the demo
# with new weights means adding their hash here (tests/test_demo_model.py checks it).
DEMO_WEIGHTS_SHA256 = frozenset(
    {"8602817fee091d23d819a249f8ef6183c75aee9453b8b968b1aae84e28d0996b"}
)


class BundleError(RuntimeError):
    """A bundle that cannot be trusted or read; the message says why in plain words."""


# Below this held-out balanced accuracy a model is marked in the picker and choosing it warns:
# 0.5 is chance on two classes; a model a lab relies on should be far from it.
MIN_BALANCED_ACCURACY = 0.8


@dataclass
class BundleInfo:
    """A bundle found on disk, described by its manifest only (cheap: no TensorFlow)."""

    path: Path
    manifest: dict[str, Any]
    source: str  # "bundled", "user" or "file"

    @property
    def name(self) -> str:
        return str(self.manifest["name"])

    @property
    def version(self) -> str:
        return str(self.manifest["version"])

    @property
    def backbone(self) -> str:
        return str(self.manifest["backbone"])

    @property
    def sha256(self) -> str:
        """The bundle's identity: SHA-256 over its manifest, which includes the weights' hash.
        What reports, listings and the window show to name the exact model."""
        return str(self.manifest[IDENTITY_KEY])

    @property
    def weights_sha256(self) -> str:
        return str(self.manifest["weights_sha256"])

    @property
    def demo(self) -> bool:
        return bool(self.manifest.get("demo", False))

    @property
    def threshold(self) -> float:
        return float(self.manifest["decision_threshold"])

    @property
    def uncertainty_band(self) -> tuple[float, float]:
        low, high = self.manifest["uncertainty_band"]
        return float(low), float(high)

    @property
    def score_warning(self) -> str:
        """Why this model's own scores do not support using it ("" when they do): no scores
        on held-out cells, or a held-out balanced accuracy below MIN_BALANCED_ACCURACY."""
        metrics = self.manifest.get("metrics")
        if not isinstance(metrics, dict):
            return "it has no held-out scores"
        value = metrics.get("balanced_accuracy")
        part = str(metrics.get("evaluated_on", ""))
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            return "it has no held-out scores"
        if part.strip().lower() == "validation":
            return "its scores are from validation cells, not held-out ones"
        if value < MIN_BALANCED_ACCURACY:
            return (
                f"its held-out balanced accuracy is {100 * value:.1f}%, below "
                f"{100 * MIN_BALANCED_ACCURACY:.0f}%"
            )
        return ""

    @property
    def temperature(self) -> float:
        """The calibration temperature applied to P(ALL); 1.0 (no change) when the manifest
        has no `calibration`, so bundles written before calibration behave as they did."""
        value = self.manifest.get(CALIBRATION_KEY)
        return 1.0 if value is None else check_calibration(value)

    @property
    def calibration_fitted_on(self) -> str:
        value = self.manifest.get(CALIBRATION_KEY)
        return str(value.get("fitted_on", "")) if isinstance(value, dict) else ""

    @property
    def stain(self) -> Any:
        """The manifest's stain normalisation (`ReinhardStats`), or None when it has none."""
        value = self.manifest.get(STAIN_KEY)
        return None if value is None else check_stain_normalisation(value)

    @property
    def lineage(self) -> str:
        """ "fine-tuned from <name> <version> (<sha8>) on <n> cells, <k> subjects", or ""."""
        return lineage_text(self.manifest)

    def calibrate(self, p_all: Any) -> Any:
        """Network P(ALL) (a number or an array) with this bundle's temperature applied:
        the score that the threshold and the uncertainty band were chosen on."""
        from leukgui.core.calibration import apply_temperature

        out = apply_temperature(p_all, self.temperature)
        return float(out) if out.ndim == 0 else out

    def label(self, p_all: float) -> str:
        """This model's call for P(ALL), by the one label policy (`metrics.call_label`)."""
        from leukgui.core.metrics import call_label

        return call_label(p_all, self.threshold, self.uncertainty_band)


@dataclass
class LoadedBundle(BundleInfo):
    """A verified bundle: its Keras model (loaded now, or on first `keras_model()`) and its
    inference graph for the runtimes without TensorFlow."""

    model: Any = None
    model_bytes: bytes | None = field(default=None, repr=False)
    graph: GraphFiles | None = field(default=None, repr=False)
    graph_problem: str = ""  # why the graph the bundle carries cannot be used ("" if fine)

    def keras_model(self) -> Any:
        """The Keras model, deserialised on first use (analysis on a graph runtime never
        asks, so it never imports TensorFlow)."""
        if self.model is None:
            if self.model_bytes is None:
                raise BundleError(f"{self.path.name}: the model's weights were not kept")
            self.model = _keras_from_bytes(self.model_bytes, self.manifest, self.path.name)
        return self.model

    def inference_graph(self) -> GraphFiles:
        """The graph for OpenVINO and ONNX Runtime: the bundle's own, or for a bundle written
        before graphs existed, one exported once into the cache. GraphError says why not."""
        if self.graph is not None:
            return self.graph
        if self.graph_problem:
            raise GraphError(self.graph_problem)
        from leukgui.core import inference_graph as ig

        cached = ig.read_cached_graph(self.sha256)  # GraphError when damaged: said, not hidden
        if cached is not None:
            self.graph = cached
            return cached
        from leukgui.core.graph_export import export_graph

        onnx_bytes, probe_bytes = export_graph(self.keras_model())
        ig.write_cached_graph(self.sha256, onnx_bytes, probe_bytes)
        self.graph = GraphFiles(onnx_bytes, ig.Probe.from_bytes(probe_bytes), "exported now")
        return self.graph


def _describe(value: Any) -> str:
    """A JSON value as the user would name it in a message."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:40] + "…"
        return f"the text {shown!r}"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, list):
        return f"a list of {len(value)}"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_sha256(value: Any) -> bool:
    return (
        isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value)
    )


def _need(ok: bool, key: str, what: str, value: Any) -> None:
    if not ok:
        raise BundleError(f"{key} must be {what}, not {_describe(value)}")


def check_manifest_fields(manifest: Any, *, identity: bool = True) -> None:
    """Check every field's type and range; raise BundleError naming the first bad one.

    `identity=False` skips `bundle_sha256` (for `save_bundle`, which adds it last).
    """
    if not isinstance(manifest, dict):
        raise BundleError(f"the manifest must be a JSON object, not {_describe(manifest)}")
    required = [k for k in REQUIRED_KEYS if identity or k != IDENTITY_KEY]
    fmt = manifest.get("format")
    if "format" in manifest and fmt != FORMAT_NAME:
        raise BundleError(f"not a LeukGUI model file (format {_describe(fmt)})")
    version = manifest.get("format_version")
    if "format_version" in manifest:
        _need(_is_int(version) and version >= 1, "format_version", "a whole number", version)
        if version > FORMAT_VERSION:
            raise BundleError(
                f"model file format version {version} is newer than this LeukGUI "
                f"understands ({FORMAT_VERSION}); update LeukGUI"
            )
        if version < FORMAT_VERSION:
            raise BundleError(
                f"model file format version {version} was written by an older LeukGUI and its "
                "manifest (threshold, name, demo flag) is not covered by any hash, so it cannot "
                "be verified; refusing it. Export or train the model again with this LeukGUI."
            )
    missing = [key for key in required if key not in manifest]
    if missing:
        raise BundleError(f"manifest is missing {', '.join(missing)}")
    for key in ("name", "version", "preprocessing", "cam_layer", "created"):
        value = manifest[key]
        _need(isinstance(value, str) and value.strip() != "", key, "non-empty text", value)
    name = manifest["name"]
    _need(len(name) <= 200, "name", "at most 200 characters", name)
    names = manifest["class_names"]
    _need(
        isinstance(names, list) and all(isinstance(n, str) for n in names),
        "class_names",
        "a list of class names",
        names,
    )
    if names != list(CLASS_NAMES):
        raise BundleError(f"manifest classes {names} are not {list(CLASS_NAMES)}")
    backbone = manifest["backbone"]
    _need(isinstance(backbone, str), "backbone", "the name of a backbone", backbone)
    try:
        get_spec(backbone)
    except ValueError as exc:
        raise BundleError(str(exc)) from None
    size = manifest["input_size"]
    _need(_is_int(size) and 32 <= size <= 4096, "input_size", "a whole number 32..4096", size)
    threshold = manifest["decision_threshold"]
    _need(
        _is_number(threshold) and 0.0 <= threshold <= 1.0,
        "decision_threshold",
        "a number between 0 and 1",
        threshold,
    )
    band = manifest["uncertainty_band"]
    _need(
        isinstance(band, list) and len(band) == 2 and all(_is_number(v) for v in band),
        "uncertainty_band",
        "a list of two numbers [low, high]",
        band,
    )
    low, high = band
    if not (0.0 <= low <= threshold <= high <= 1.0):
        raise BundleError(
            f"uncertainty band {low}..{high} must contain the threshold {threshold} within 0..1"
        )
    digest = manifest["weights_sha256"]
    _need(_is_sha256(digest), "weights_sha256", "64 lowercase hex digits", digest)
    if identity:
        value = manifest[IDENTITY_KEY]
        _need(_is_sha256(value), IDENTITY_KEY, "64 lowercase hex digits", value)
    for key, kind, what in (
        ("demo", bool, "true or false"),
        ("notice", str, "text"),
        ("description", str, "text"),
        ("positive_class", str, "text"),
        ("metrics", dict, "an object"),
        ("training_data", dict, "an object"),
    ):
        if key in manifest:
            _need(isinstance(manifest[key], kind), key, what, manifest[key])
    if CALIBRATION_KEY in manifest:
        check_calibration(manifest[CALIBRATION_KEY])
    if STAIN_KEY in manifest:
        check_stain_normalisation(manifest[STAIN_KEY])
    if PARENT_KEY in manifest:
        check_parent(manifest[PARENT_KEY])
    if INFERENCE_KEY in manifest:
        try:
            check_graph_manifest(manifest[INFERENCE_KEY])
        except ValueError as exc:
            raise BundleError(f"{INFERENCE_KEY} is unusable: {exc}") from None


def check_calibration(value: Any) -> float:
    """The temperature of a manifest's `calibration` object; BundleError when it is unusable.

    A temperature of 0, below 0 or not finite would make every P(ALL) 0, 1 or undefined, so
    such a model is refused at load instead of producing confident nonsense.
    """
    if not isinstance(value, dict):
        raise BundleError(f"calibration must be an object, not {_describe(value)}")
    method = value.get("method")
    if method != "temperature":
        raise BundleError(
            f"calibration method must be 'temperature', not {_describe(method)}; this LeukGUI "
            "knows no other"
        )
    temperature = value.get("temperature")
    if not _is_number(temperature) or temperature <= 0:
        raise BundleError(
            "calibration temperature must be a positive finite number, not "
            f"{_describe(temperature)}"
        )
    if "fitted_on" in value:
        _need(
            isinstance(value["fitted_on"], str), "calibration fitted_on", "text", value["fitted_on"]
        )
    return float(temperature)


def check_parent(value: Any) -> dict[str, Any]:
    """A manifest's `parent` object (the bundle it was fine-tuned from); BundleError if bad."""
    if not isinstance(value, dict):
        raise BundleError(f"parent must be an object, not {_describe(value)}")
    for key in ("name", "version"):
        _need(
            isinstance(value.get(key), str) and value[key].strip() != "",
            f"parent {key}",
            "non-empty text",
            value.get(key),
        )
    _need(
        _is_sha256(value.get(IDENTITY_KEY)),
        f"parent {IDENTITY_KEY}",
        "64 lowercase hex digits",
        value.get(IDENTITY_KEY),
    )
    return value


def lineage_text(manifest: dict[str, Any]) -> str:
    """ "fine-tuned from <name> <version> (<sha8>) on <n> cells, <k> subjects", or "" for a
    model without a parent. The counts are the training data set's (`training_data.dataset`);
    when a manifest lacks them the text stops after the parent."""
    parent = manifest.get(PARENT_KEY)
    if not isinstance(parent, dict):
        return ""
    text = (
        f"fine-tuned from {parent.get('name', '?')} {parent.get('version', '?')} "
        f"({str(parent.get(IDENTITY_KEY, ''))[:8]})"
    )
    data = manifest.get("training_data")
    dataset = data.get(DATASET_KEY) if isinstance(data, dict) else None
    if isinstance(dataset, dict) and _is_int(dataset.get("cells")):
        subjects = dataset.get("subjects")
        text += f" on {dataset['cells']:,} cells"
        if _is_int(subjects):
            text += f", {subjects:,} subjects"
    return text


def check_stain_normalisation(value: Any) -> Any:
    """The ReinhardStats of a manifest's `stain_normalisation` object; BundleError if bad."""
    from leukgui.core.stain import ReinhardStats

    try:
        return ReinhardStats.from_manifest(value)
    except ValueError as exc:
        raise BundleError(f"stain_normalisation is unusable: {exc}") from None


def validate_manifest(manifest: Any) -> None:
    """Refuse a manifest that lacks fields, holds values the engine cannot use, or whose
    recorded identity (`bundle_sha256`) does not match its contents."""
    check_manifest_fields(manifest)
    expected = bundle_identity(manifest)
    if manifest[IDENTITY_KEY] != expected:
        raise BundleError(
            "the manifest has been changed after the model file was written (its SHA-256 "
            f"{expected[:12]}… does not match the recorded {manifest[IDENTITY_KEY][:12]}…); "
            "refusing to load it. Re-install or re-import the original model file."
        )
    if manifest["weights_sha256"] in DEMO_WEIGHTS_SHA256 and manifest.get("demo") is not True:
        raise BundleError(
            "these are the weights of the bundled demo model, but the manifest does not say "
            "demo: true; refusing a demo model presented as a real one"
        )


def bundle_identity(manifest: dict[str, Any]) -> str:
    """SHA-256 over the canonical JSON of the manifest without `bundle_sha256` (sorted keys,
    no spaces, UTF-8). The manifest holds `weights_sha256`, so this names both."""
    body = {k: v for k, v in manifest.items() if k != IDENTITY_KEY}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return sha256(b"leukgui-model-identity\n" + text.encode("utf-8"))


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise BundleError(f"the manifest names {key!r} twice")
        seen[key] = value
    return seen


def _no_constant(name: str) -> Any:
    raise BundleError(f"the manifest holds {name}, which is not a number")


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


def _check_members(archive: zipfile.ZipFile, label: str) -> dict[str, zipfile.ZipInfo]:
    """Exactly one manifest and one model entry, within the size limits (checked on the
    zip's directory, before decompressing anything)."""
    infos = archive.infolist()
    names = [i.filename for i in infos]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise BundleError(f"{label}: the file holds {', '.join(duplicates)} more than once")
    unexpected = sorted(set(names) - {MANIFEST_MEMBER, MODEL_MEMBER, GRAPH_MEMBER, PROBE_MEMBER})
    if unexpected:
        shown = ", ".join(repr(n) for n in unexpected[:5])
        raise BundleError(f"{label}: the file holds unexpected entries ({shown})")
    if MANIFEST_MEMBER not in names or MODEL_MEMBER not in names:
        raise BundleError(
            f"{label} is not a model file (missing {MANIFEST_MEMBER} or {MODEL_MEMBER})"
        )
    members = {i.filename: i for i in infos}
    limits = {
        MANIFEST_MEMBER: MAX_MANIFEST_BYTES,
        MODEL_MEMBER: MAX_MODEL_BYTES,
        GRAPH_MEMBER: MAX_MODEL_BYTES,
        PROBE_MEMBER: MAX_PROBE_BYTES,
    }
    for name, info in members.items():
        limit = limits[name]
        if info.flag_bits & 0x1:
            raise BundleError(f"{label}: {name} is encrypted")
        if info.file_size > limit:
            raise BundleError(
                f"{label}: {name} would unpack to {_mb(info.file_size)}, more than the "
                f"{_mb(limit)} allowed; refusing to unpack it"
            )
        ratio = info.file_size / max(info.compress_size, 1)
        if info.file_size > RATIO_CHECK_BYTES and ratio > MAX_RATIO:
            raise BundleError(
                f"{label}: {name} would expand {ratio:.0f} times when unpacked "
                f"(more than {MAX_RATIO}); refusing to unpack it"
            )
    return members


def _read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, limit: int, label: str) -> bytes:
    """An entry's bytes, never more than `limit` even if its declared size lies."""
    with archive.open(info) as stream:
        data = stream.read(limit + 1)
    if len(data) > limit:
        raise BundleError(f"{label}: {info.filename} is larger than the {_mb(limit)} allowed")
    return data


def _read_archive(
    path: Path, *, model: bool
) -> tuple[dict[str, Any], bytes | None, tuple[bytes, bytes] | None]:
    """The checked manifest and (when `model`) the model's bytes and the graph members'."""
    data = None
    graph = None
    try:
        with zipfile.ZipFile(path) as archive:
            members = _check_members(archive, path.name)
            raw = _read_member(archive, members[MANIFEST_MEMBER], MAX_MANIFEST_BYTES, path.name)
            if model:
                data = _read_member(archive, members[MODEL_MEMBER], MAX_MODEL_BYTES, path.name)
                if GRAPH_MEMBER in members and PROBE_MEMBER in members:
                    graph = (
                        _read_member(archive, members[GRAPH_MEMBER], MAX_MODEL_BYTES, path.name),
                        _read_member(archive, members[PROBE_MEMBER], MAX_PROBE_BYTES, path.name),
                    )
        manifest = json.loads(
            raw.decode("utf-8"),
            object_pairs_hook=_no_duplicate_keys,
            parse_constant=_no_constant,
        )
    except BundleError as exc:
        text = str(exc)
        raise BundleError(text if text.startswith(path.name) else f"{path.name}: {text}") from None
    except (
        zipfile.BadZipFile,
        zipfile.LargeZipFile,
        json.JSONDecodeError,
        UnicodeDecodeError,
        NotImplementedError,
        EOFError,
        RecursionError,
        ValueError,
        zlib.error,
    ) as exc:
        raise BundleError(f"{path.name} is not a readable model file ({exc})") from exc
    except OSError as exc:
        raise BundleError(f"cannot read {path}: {exc.strerror or exc}") from exc
    try:
        validate_manifest(manifest)
    except BundleError as exc:
        raise BundleError(f"{path.name}: {exc}") from None
    return manifest, data, graph


def read_manifest(path: str | os.PathLike) -> dict[str, Any]:
    """Read and check a bundle's manifest (types, ranges, identity) without TensorFlow."""
    return _read_archive(Path(path), model=False)[0]


def _graph_of(
    manifest: dict[str, Any], graph: tuple[bytes, bytes] | None
) -> tuple[GraphFiles | None, str]:
    """The bundle's own graph, or None and the reason it cannot be used ("" when the bundle
    predates graphs and one may be exported). A damaged graph never blocks TensorFlow."""
    described = INFERENCE_KEY in manifest
    if graph is None:
        if described:
            return None, f"the model file lacks its {GRAPH_MEMBER} or {PROBE_MEMBER}"
        return None, ""
    if not described:
        return None, f"the model file carries a {GRAPH_MEMBER} its manifest does not describe"
    try:
        return GraphFiles(graph[0], verify_members(manifest, *graph), "bundle"), ""
    except GraphError as exc:
        return None, str(exc)


def _check_model_matches(model: Any, manifest: dict[str, Any]) -> None:
    spec = get_spec(manifest["backbone"])
    problems = []
    shape = tuple(model.inputs[0].shape[1:])
    size = int(manifest["input_size"])
    if shape != (size, size, 3):
        problems.append(f"manifest says input {size} x {size} x 3, model takes {shape}")
    units = int(model.outputs[0].shape[-1])
    if units != len(manifest["class_names"]):
        problems.append(f"manifest lists {len(manifest['class_names'])} classes, model has {units}")
    try:
        parts = split_classifier(model)
    except ValueError as exc:
        problems.append(str(exc))
    else:
        cam = parts.backbone.layers[-1].name
        if cam != manifest["cam_layer"]:
            problems.append(
                f"manifest says Grad-CAM layer {manifest['cam_layer']!r}, model ends at {cam!r}"
            )
    if model.name != f"leukgui_{spec.name}":
        problems.append(f"manifest says backbone {spec.name}, model is {model.name!r}")
    if problems:
        raise BundleError("manifest does not match the model: " + "; ".join(problems))


def load_bundle(
    path: str | os.PathLike, source: str = "file", *, keras: bool = True
) -> LoadedBundle:
    """Verify and load a bundle. Refuses changed weights and manifest/model mismatches.

    `keras=False` checks the weights' hash but defers deserialising the Keras model (and so
    importing TensorFlow) to `keras_model()`, for analysis on a runtime without TensorFlow.
    """
    path = Path(path)
    manifest, data, graph_bytes = _read_archive(path, model=True)
    assert data is not None
    digest = sha256(data)
    if digest != manifest["weights_sha256"]:
        raise BundleError(
            f"{path.name}: the model weights have been changed or damaged (SHA-256 {digest[:12]}… "
            f"does not match the manifest's {str(manifest['weights_sha256'])[:12]}…); "
            "refusing to load it. Re-install or re-import the original model file."
        )
    graph, problem = _graph_of(manifest, graph_bytes)
    bundle = LoadedBundle(
        path=path,
        manifest=manifest,
        source=source,
        model_bytes=data,
        graph=graph,
        graph_problem=problem,
    )
    if keras:
        bundle.keras_model()
    return bundle


def _keras_from_bytes(data: bytes, manifest: dict[str, Any], label: str) -> Any:
    """Deserialise a bundle's `model.keras` (safe mode) and check it matches the manifest."""
    import keras

    from leukgui.core.backbones import caffe_preprocess_class

    caffe_preprocess_class()  # register the custom layer before deserialising
    import tempfile

    with tempfile.TemporaryDirectory(prefix="leukgui-") as tmp:
        model_path = Path(tmp) / MODEL_MEMBER
        model_path.write_bytes(data)
        try:
            model = keras.models.load_model(model_path, compile=False, safe_mode=True)
        except Exception as exc:  # Keras raises many types for a bad archive
            raise BundleError(f"{label}: the model inside cannot be loaded ({exc})") from exc
    try:
        _check_model_matches(model, manifest)
    except BundleError as exc:
        raise BundleError(f"{label}: {exc}") from None
    return model


def make_manifest(
    *,
    name: str,
    version: str,
    backbone: str,
    input_size: int,
    threshold: float = 0.5,
    uncertainty_band: tuple[float, float] = (0.35, 0.65),
    demo: bool = False,
    training_data: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
    description: str = "",
    extra: dict[str, Any] | None = None,
    temperature: float | None = None,
    calibration_fitted_on: str = "validation",
    stain: Any = None,
) -> dict[str, Any]:
    """A manifest with every required field; `save_bundle` adds the weights hash.

    `temperature` (fitted by `calibration.fit_temperature` on validation scores) adds the
    `calibration` object, `stain` (a `stain.ReinhardStats`) the `stain_normalisation` one;
    left at None, the bundle has neither and analysis uses the network's scores and pixels.
    """
    import keras
    import tensorflow as tf

    spec = get_spec(backbone)
    manifest: dict[str, Any] = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "name": name,
        "version": version,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "demo": demo,
        "notice": DEMO_NOTICE if demo else "",
        "description": description,
        "class_names": list(CLASS_NAMES),
        "positive_class": ALL,
        "backbone": spec.name,
        "input_size": int(input_size),
        "preprocessing": spec.preprocessing,
        "cam_layer": spec.cam_layer,
        "decision_threshold": float(threshold),
        "uncertainty_band": [float(uncertainty_band[0]), float(uncertainty_band[1])],
        "training_data": training_data or {},
        "metrics": metrics or {},
        "app_version": __version__,
        "tensorflow_version": tf.__version__,
        "keras_version": keras.__version__,
    }
    if temperature is not None:
        manifest[CALIBRATION_KEY] = calibration_manifest(temperature, calibration_fitted_on)
    if stain is not None:
        manifest[STAIN_KEY] = stain.to_manifest()
    if extra:
        manifest.update(extra)
    return manifest


def calibration_manifest(temperature: float, fitted_on: str = "validation") -> dict[str, Any]:
    """The manifest's `calibration` object for a fitted temperature (checked here)."""
    value = {"method": "temperature", "temperature": float(temperature), "fitted_on": fitted_on}
    check_calibration(value)
    return value


def save_bundle(
    model: Any,
    manifest: dict[str, Any],
    out: str | os.PathLike,
    *,
    overwrite: bool = False,
    inference_graph: bool = True,
) -> Path:
    """Write `model` + `manifest` (+ the inference graph) as one bundle file, atomically.

    `out` is a file path or a folder (then `<name>-v<version>.leukmodel` inside it). An
    existing bundle is never overwritten unless asked, so old model versions stay usable.
    The graph (`model.onnx`, `inference.npz`) is exported and parity-checked here, and its
    hashes go into the manifest, so the bundle's identity covers it; `inference_graph=False`
    writes a bundle without one (it is then exported into the cache on first use).
    """
    out = Path(out)
    if out.suffix.lower() != BUNDLE_SUFFIX:
        out = out / f"{manifest['name']}-v{manifest['version']}{BUNDLE_SUFFIX}"
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists; model files are never overwritten")
    out.parent.mkdir(parents=True, exist_ok=True)
    if getattr(model, "optimizer", None) is not None:
        # A compiled model would drag its optimizer state along (3x the size); ship weights only.
        import keras

        clone = keras.models.clone_model(model)
        clone.set_weights(model.get_weights())
        model = clone
    import tempfile

    with tempfile.TemporaryDirectory(prefix="leukgui-") as tmp:
        model_path = Path(tmp) / MODEL_MEMBER
        model.save(model_path)
        data = model_path.read_bytes()
    manifest = dict(manifest, format_version=FORMAT_VERSION, weights_sha256=sha256(data))
    manifest.pop(IDENTITY_KEY, None)
    manifest.pop(INFERENCE_KEY, None)
    check_manifest_fields(manifest, identity=False)
    _check_model_matches(model, manifest)
    graph = None
    if inference_graph:
        from leukgui.core.graph_export import export_graph
        from leukgui.core.inference_graph import graph_manifest

        try:
            graph = export_graph(model)
        except GraphError as exc:
            raise BundleError(f"the inference graph could not be written: {exc}") from exc
        manifest[INFERENCE_KEY] = graph_manifest(*graph)
    _write_bundle(out, manifest, data, graph)
    return out


def _write_bundle(
    out: Path, manifest: dict[str, Any], data: bytes, graph: tuple[bytes, bytes] | None = None
) -> None:
    """Sign `manifest` (add `bundle_sha256`) and write it with the model bytes, atomically."""
    manifest = dict(manifest)
    manifest.pop(IDENTITY_KEY, None)
    manifest[IDENTITY_KEY] = bundle_identity(manifest)
    validate_manifest(manifest)
    if len(data) > MAX_MODEL_BYTES:
        raise BundleError(f"the model is {_mb(len(data))}, more than {_mb(MAX_MODEL_BYTES)}")

    def write(target: Path) -> None:
        with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            archive.writestr(MANIFEST_MEMBER, json.dumps(manifest, indent=2, ensure_ascii=False))
            archive.writestr(MODEL_MEMBER, data)
            if graph is not None:
                archive.writestr(GRAPH_MEMBER, graph[0])
                archive.writestr(PROBE_MEMBER, graph[1])

    atomic_write(out, write)


def add_inference_graph(
    path: str | os.PathLike, out: str | os.PathLike, *, overwrite: bool = False
) -> Path:
    """Write a copy of a bundle with its inference graph inside, the model bytes unchanged.

    The manifest gains `inference_graph` and is signed again, so the copy has a new
    identity (its SHA-256); the weights' hash stays. For the maintainers' demo bundle and for
    a lab that wants the graph inside a model it already uses, instead of in the cache.
    """
    path, out = Path(path), Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists; model files are never overwritten")
    bundle = load_bundle(path)
    from leukgui.core.graph_export import export_graph
    from leukgui.core.inference_graph import graph_manifest

    try:
        graph = export_graph(bundle.keras_model())
    except GraphError as exc:
        raise BundleError(f"the inference graph could not be written: {exc}") from exc
    manifest = dict(bundle.manifest)
    manifest[INFERENCE_KEY] = graph_manifest(*graph)
    assert bundle.model_bytes is not None
    _write_bundle(out, manifest, bundle.model_bytes, graph)
    return out


def upgrade_bundle(
    path: str | os.PathLike, out: str | os.PathLike, *, overwrite: bool = False
) -> Path:
    """Rewrite a format-1 bundle in the current format with the same model bytes.

    Only for files whose origin is known (the maintainers' re-signing of the bundled demo):
    it verifies the weights against the old manifest, then signs that manifest as it is.
    """
    path, out = Path(path), Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists; model files are never overwritten")
    with zipfile.ZipFile(path) as archive:
        members = _check_members(archive, path.name)
        raw = _read_member(archive, members[MANIFEST_MEMBER], MAX_MANIFEST_BYTES, path.name)
        data = _read_member(archive, members[MODEL_MEMBER], MAX_MODEL_BYTES, path.name)
    manifest = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicate_keys)
    if sha256(data) != manifest.get("weights_sha256"):
        raise BundleError(f"{path.name}: the weights do not match the manifest's hash")
    manifest["format_version"] = FORMAT_VERSION
    check_manifest_fields(manifest, identity=False)
    _write_bundle(out, manifest, data)
    return out


def find_bundles() -> tuple[list[BundleInfo], list[tuple[Path, str]]]:
    """All bundles in `resources/models` and the per-user models folder, and unreadable ones."""
    found: list[BundleInfo] = []
    broken: list[tuple[Path, str]] = []
    for source, folder in (("bundled", bundled_models_dir()), ("user", user_models_dir())):
        if not folder.is_dir():
            continue
        for path in sorted(folder.glob("*" + BUNDLE_SUFFIX), key=lambda p: p.name.lower()):
            try:
                found.append(BundleInfo(path=path, manifest=read_manifest(path), source=source))
            except BundleError as exc:
                broken.append((path, str(exc)))
            except Exception as exc:  # noqa: BLE001 - one bad file never hides the good ones
                broken.append((path, f"{path.name}: unusable ({type(exc).__name__}: {exc})"))
    return found, broken


def _version_key(info: BundleInfo) -> tuple[Any, ...]:
    parts = []
    for token in str(info.version).replace("-", ".").split("."):
        parts.append((0, int(token), "") if token.isdigit() else (1, 0, token))
    return (tuple(parts), info.manifest.get("created", ""))


def choose_bundle(name: str | None = None) -> BundleInfo:
    """Pick a bundle by path, by `name` or `name-vVERSION`, or the default.

    The default is the newest non-demo bundle; the demo model only when nothing else is
    installed, so a lab's own model wins once it exists (and the report names it).
    """
    if name:
        candidate = Path(name)
        if candidate.suffix.lower() == BUNDLE_SUFFIX or candidate.is_file():
            if not candidate.is_file():
                raise BundleError(f"model file not found: {candidate}")
            return BundleInfo(path=candidate, manifest=read_manifest(candidate), source="file")
    found, broken = find_bundles()
    if name:
        wanted = name.lower()
        matches = [
            b
            for b in found
            if wanted in (b.name.lower(), b.path.stem.lower(), f"{b.name}-v{b.version}".lower())
        ]
        if not matches:
            known = ", ".join(sorted({b.name for b in found})) or "none installed"
            raise BundleError(f"no model named {name!r} (installed: {known})")
        return max(matches, key=_version_key)
    if not found:
        hint = f" ({len(broken)} unreadable)" if broken else ""
        raise BundleError(f"no models found in {bundled_models_dir()} or {user_models_dir()}{hint}")
    real = [b for b in found if not b.demo]
    return max(real or found, key=_version_key)


# ---------------------------------------------------------------------------- installing

COPIED = "copied"
IDENTICAL = "identical"
CONFLICT = "conflict"


@dataclass(frozen=True)
class InstallOutcome:
    """What installing a model file did: copied it, found it already there, or refused."""

    source: Path
    target: Path
    status: str  # COPIED, IDENTICAL or CONFLICT
    reason: str = ""  # for CONFLICT: what clashes, in words fit for the user

    @property
    def installed(self) -> bool:
        return self.status in (COPIED, IDENTICAL)


def _same_bytes(a: Path, b: Path) -> bool:
    if a.stat().st_size != b.stat().st_size:
        return False
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            ca, cb = fa.read(1 << 20), fb.read(1 << 20)
            if ca != cb:
                return False
            if not ca:
                return True


def _already_there(source: Path, target: Path) -> InstallOutcome:
    """The outcome when `target` exists: the same file (IDENTICAL) or another (CONFLICT)."""
    if _same_bytes(source, target):
        return InstallOutcome(source, target, IDENTICAL)
    return InstallOutcome(
        source,
        target,
        CONFLICT,
        f"{target.name} already exists in {target.parent} with other contents; "
        "rename the file to add it as another model",
    )


def install_bundle(
    path: str | os.PathLike, folder: str | os.PathLike | None = None
) -> InstallOutcome:
    """Verify a model file (manifest, hash, safe loading) and copy it into the models folder.

    The one rule for conflicts, for Model > Import and the Training page alike: a model is
    named in reports by its name, version and hash, so nothing is ever overwritten. The same
    bytes already installed is IDENTICAL; a different file under the same file name, or
    another model with the same name and version but other weights, is a CONFLICT whose
    reason says what to rename. Raises BundleError when the file itself is unusable.
    """
    source = Path(path)
    manifest = read_manifest(source)  # the cheap checks first, with the clearest messages
    load_bundle(source)
    folder = Path(folder) if folder is not None else user_models_dir()
    target = folder / source.name
    if target.exists():
        return _already_there(source, target)
    name, version = str(manifest["name"]), str(manifest["version"])
    for other in folder.glob("*" + BUNDLE_SUFFIX) if folder.is_dir() else ():
        try:
            theirs = read_manifest(other)
        except BundleError:
            continue
        if (str(theirs["name"]), str(theirs["version"])) == (name, version) and theirs[
            IDENTITY_KEY
        ] != manifest[IDENTITY_KEY]:
            return InstallOutcome(
                source,
                other,
                CONFLICT,
                f"model {name} version {version} is already installed as {other.name} with "
                "other weights or settings; a report could not tell them apart by name",
            )
    folder.mkdir(parents=True, exist_ok=True)
    partial = folder / f".{source.name}.{os.getpid()}.partial"
    try:
        shutil.copyfile(source, partial)
        try:
            os.link(partial, target)  # fails if the name appeared meanwhile: never overwrite
        except FileExistsError:  # the name appeared meanwhile (another window)
            return _already_there(source, target)
        except OSError:  # file systems without hard links
            if target.exists():
                return _already_there(source, target)
            os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    return InstallOutcome(source, target, COPIED)
