"""Model bundles: one `.leukmodel` file = `model.keras` + `manifest.json` in a zip.

A bare weights file says nothing about how it was trained or which threshold to use, and
can be swapped silently. A bundle carries its manifest (classes, backbone, input size,
preprocessing, threshold and uncertainty band, training data, held-out metrics) and the
SHA-256 of its weights; loading verifies that hash and uses Keras `safe_mode`, and every
report names the bundle and its hash.
"""

from __future__ import annotations

import json
import os
import shutil
import zipfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from leukgui import __version__
from leukgui.core.atomic import atomic_write
from leukgui.core.backbones import CLASS_NAMES, get_spec, split_classifier
from leukgui.core.paths import bundled_models_dir, user_models_dir
from leukgui.core.results import ALL, DEMO_NOTICE

BUNDLE_SUFFIX = ".leukmodel"
FORMAT_NAME = "leukgui-model"
FORMAT_VERSION = 1
MODEL_MEMBER = "model.keras"
MANIFEST_MEMBER = "manifest.json"
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

    def label(self, p_all: float) -> str:
        """This model's call for P(ALL), by the one label policy (`metrics.call_label`)."""
        from leukgui.core.metrics import call_label

        return call_label(p_all, self.threshold, self.uncertainty_band)


@dataclass
class LoadedBundle(BundleInfo):
    """A verified bundle with its Keras model in memory."""

    model: Any = None


def _sha256_bytes(data: bytes) -> str:
    import hashlib  # imported when needed: the window's start-up does not hash anything

    return hashlib.sha256(data).hexdigest()


def validate_manifest(manifest: dict[str, Any]) -> None:
    """Refuse a manifest that lacks fields or holds values the engine cannot use."""
    missing = [key for key in REQUIRED_KEYS if key not in manifest]
    if missing:
        raise BundleError(f"manifest is missing {', '.join(missing)}")
    if manifest["format"] != FORMAT_NAME:
        raise BundleError(f"not a LeukGUI model file (format {manifest['format']!r})")
    if int(manifest["format_version"]) > FORMAT_VERSION:
        raise BundleError(
            f"model file format version {manifest['format_version']} is newer than this LeukGUI "
            f"understands ({FORMAT_VERSION}); update LeukGUI"
        )
    if list(manifest["class_names"]) != list(CLASS_NAMES):
        raise BundleError(f"manifest classes {manifest['class_names']} are not {list(CLASS_NAMES)}")
    get_spec(manifest["backbone"])  # raises ValueError for unknown backbones
    low, high = manifest["uncertainty_band"]
    threshold = manifest["decision_threshold"]
    if not (0.0 <= low <= threshold <= high <= 1.0):
        raise BundleError(
            f"uncertainty band {low}..{high} must contain the threshold {threshold} within 0..1"
        )


def read_manifest(path: str | os.PathLike) -> dict[str, Any]:
    """Read and check a bundle's manifest without loading TensorFlow."""
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            if MANIFEST_MEMBER not in names or MODEL_MEMBER not in names:
                raise BundleError(
                    f"{path.name} is not a model file (missing {MANIFEST_MEMBER} or {MODEL_MEMBER})"
                )
            manifest = json.loads(archive.read(MANIFEST_MEMBER).decode("utf-8"))
    except (zipfile.BadZipFile, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleError(f"{path.name} is not a readable model file ({exc})") from exc
    except OSError as exc:
        raise BundleError(f"cannot read {path}: {exc.strerror or exc}") from exc
    if not isinstance(manifest, dict):
        raise BundleError(f"{path.name}: manifest is not a JSON object")
    try:
        validate_manifest(manifest)
    except ValueError as exc:
        raise BundleError(f"{path.name}: {exc}") from exc
    return manifest


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


def load_bundle(path: str | os.PathLike, source: str = "file") -> LoadedBundle:
    """Verify and load a bundle. Refuses changed weights and manifest/model mismatches."""
    path = Path(path)
    manifest = read_manifest(path)
    with zipfile.ZipFile(path) as archive:
        data = archive.read(MODEL_MEMBER)
    digest = _sha256_bytes(data)
    if digest != manifest["weights_sha256"]:
        raise BundleError(
            f"{path.name}: the model weights have been changed or damaged (SHA-256 {digest[:12]}… "
            f"does not match the manifest's {str(manifest['weights_sha256'])[:12]}…); "
            "refusing to load it. Re-install or re-import the original model file."
        )
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
            raise BundleError(f"{path.name}: the model inside cannot be loaded ({exc})") from exc
    _check_model_matches(model, manifest)
    return LoadedBundle(path=path, manifest=manifest, source=source, model=model)


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
) -> dict[str, Any]:
    """A manifest with every required field; `save_bundle` adds the weights hash."""
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
    if extra:
        manifest.update(extra)
    return manifest


def save_bundle(
    model: Any, manifest: dict[str, Any], out: str | os.PathLike, *, overwrite: bool = False
) -> Path:
    """Write `model` + `manifest` as one bundle file, atomically.

    `out` is a file path or a folder (then `<name>-v<version>.leukmodel` inside it). An
    existing bundle is never overwritten unless asked, so old model versions stay usable.
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
    manifest = dict(manifest, weights_sha256=_sha256_bytes(data))
    validate_manifest(manifest)
    _check_model_matches(model, manifest)

    def write(target: Path) -> None:
        with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            archive.writestr(MANIFEST_MEMBER, json.dumps(manifest, indent=2, ensure_ascii=False))
            archive.writestr(MODEL_MEMBER, data)

    atomic_write(out, write)
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
            "weights_sha256"
        ] != manifest["weights_sha256"]:
            return InstallOutcome(
                source,
                other,
                CONFLICT,
                f"model {name} version {version} is already installed as {other.name} with "
                "other weights; a report could not tell them apart",
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
