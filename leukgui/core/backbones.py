"""CNN backbones (VGG16, ResNet50, EfficientNetB0-B3) with a transfer-learning head.

Every classifier built here has the same shape, which the Grad-CAM code and the bundle
checks rely on:

    image (0..255 RGB) -> [preprocess] -> backbone (ends at the Grad-CAM layer)
                       -> head_* layers -> logits (Dense 2) -> probabilities (softmax)

Preprocessing lives inside the model, so a bundle is self-contained: callers always feed raw
RGB pixel values. ImageNet weights are never downloaded here: they come from the Keras cache,
from a file the installer bundles, or from a file the user names (see `resolve_imagenet_weights`).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from leukgui.core.paths import bundled_weights_dir

CLASS_NAMES = ("HEM", "ALL")  # output index 0 = HEM, 1 = ALL
BACKBONE_LAYER = "backbone"
LOGITS_LAYER = "logits"
PROBABILITIES_LAYER = "probabilities"
HEAD_PREFIX = "head_"


@dataclass(frozen=True)
class BackboneSpec:
    """What differs between backbones: constructor, input size, preprocessing, CAM layer."""

    name: str
    keras_name: str  # attribute of keras.applications
    input_size: int
    preprocessing: str  # "caffe" (BGR, ImageNet mean subtracted) or "efficientnet" (built in)
    cam_layer: str  # last convolutional feature map that Grad-CAM reads
    weights_file: str  # file name of the no-top ImageNet weights in the Keras cache
    head_max_pool: bool = False  # VGG16: the CAM layer sits before block5_pool
    unfreeze_prefix: str = ""  # layer-name prefix of the top block (for fine-tuning)


BACKBONES: dict[str, BackboneSpec] = {
    spec.name: spec
    for spec in (
        BackboneSpec(
            "vgg16",
            "VGG16",
            224,
            "caffe",
            "block5_conv3",
            "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
            head_max_pool=True,
            unfreeze_prefix="block5_",
        ),
        BackboneSpec(
            "resnet50",
            "ResNet50",
            224,
            "caffe",
            "conv5_block3_out",
            "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
            unfreeze_prefix="conv5_",
        ),
        BackboneSpec(
            "efficientnetb0",
            "EfficientNetB0",
            224,
            "efficientnet",
            "top_activation",
            "efficientnetb0_notop.h5",
            unfreeze_prefix="block7",
        ),
        BackboneSpec(
            "efficientnetb1",
            "EfficientNetB1",
            240,
            "efficientnet",
            "top_activation",
            "efficientnetb1_notop.h5",
            unfreeze_prefix="block7",
        ),
        BackboneSpec(
            "efficientnetb2",
            "EfficientNetB2",
            260,
            "efficientnet",
            "top_activation",
            "efficientnetb2_notop.h5",
            unfreeze_prefix="block7",
        ),
        BackboneSpec(
            "efficientnetb3",
            "EfficientNetB3",
            300,
            "efficientnet",
            "top_activation",
            "efficientnetb3_notop.h5",
            unfreeze_prefix="block7",
        ),
    )
}
ALIASES = {"efficientnet": "efficientnetb0", "vgg": "vgg16", "resnet": "resnet50"}
DEFAULT_BACKBONE = "efficientnetb0"


class WeightsMissingError(RuntimeError):
    """ImageNet weights are not on this machine; the message says which file goes where."""


def get_spec(name: str) -> BackboneSpec:
    """Look a backbone up by name (case-insensitive, `efficientnet` means B0)."""
    key = name.strip().lower().replace("-", "").replace("_", "")
    key = ALIASES.get(key, key)
    try:
        return BACKBONES[key]
    except KeyError:
        known = ", ".join(BACKBONES)
        raise ValueError(f"unknown backbone {name!r}; choose one of: {known}") from None


def keras_cache_dir() -> Path:
    """The folder Keras keeps downloaded weights in (`$KERAS_HOME/models` or ~/.keras/models)."""
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return Path(home) / "models"


def _sha256(path: Path) -> str:
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _official_hash(spec: BackboneSpec) -> str | None:
    """Keras's published hash of the no-top ImageNet file (md5 or sha256), if it lists one."""
    from keras.src.applications import efficientnet, resnet

    if spec.keras_name.startswith("EfficientNet"):
        return efficientnet.WEIGHTS_HASHES[spec.keras_name[-2:].lower()][1]
    if spec.keras_name == "ResNet50":
        return resnet.WEIGHTS_HASHES["resnet50"][1]
    return None  # VGG16: Keras publishes no hash for this file


def _file_matches(path: Path, expected: str) -> bool:
    if len(expected) == 32:  # md5, as Keras lists for some files
        import hashlib

        digest = hashlib.md5(usedforsecurity=False)
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
        return digest.hexdigest() == expected
    return _sha256(path) == expected


def imagenet_search_dirs() -> list[Path]:
    """Where ImageNet weight files are looked for, in order."""
    return [keras_cache_dir(), bundled_weights_dir()]


def resolve_imagenet_weights(
    backbone: str, weights_file: str | os.PathLike | None = None, *, verify: bool = True
) -> Path:
    """Find the no-top ImageNet weights file for `backbone` without touching the network.

    A file the user names is taken as is. Otherwise the Keras cache and then the installer's
    bundled folder are searched; a found file is checked against Keras's published hash
    (when Keras lists one), so a half-downloaded file is caught here, not as a cryptic error.
    """
    spec = get_spec(backbone)
    if weights_file is not None:
        path = Path(weights_file)
        if not path.is_file():
            raise WeightsMissingError(f"ImageNet weights file not found: {path}")
        return path
    for folder in imagenet_search_dirs():
        path = folder / spec.weights_file
        if path.is_file():
            expected = _official_hash(spec) if verify else None
            if expected and not _file_matches(path, expected):
                raise WeightsMissingError(
                    f"{path} is not the official ImageNet weights file for {spec.name} "
                    "(its checksum does not match; it may be incomplete). Delete it and place "
                    f"a good copy of {spec.weights_file} in {keras_cache_dir()}."
                )
            return path
    folders = " or ".join(str(d) for d in imagenet_search_dirs())
    raise WeightsMissingError(
        f"ImageNet weights for {spec.name} are not on this computer and LeukGUI never "
        f"downloads them. Place the file {spec.weights_file} in {folders}, or name the file "
        "with --weights PATH. (On a machine with internet access, Keras saves it to "
        f"{keras_cache_dir()} the first time keras.applications.{spec.keras_name}"
        "(weights='imagenet', include_top=False) runs.)"
    )


@contextlib.contextmanager
def _offline_weights(path: Path) -> Iterator[None]:
    """Make keras.applications read `path` instead of downloading.

    Building with weights="imagenet" (not a path) matters: EfficientNet adds an ImageNet-only
    rescaling layer in that case, which a plain `load_weights` would silently miss.
    """
    from keras.src.utils import file_utils

    original = file_utils.get_file

    def local_only(fname: str | None = None, origin: str | None = None, **_: Any) -> str:
        return str(path)

    file_utils.get_file = local_only
    try:
        yield
    finally:
        file_utils.get_file = original


def _caffe_layer() -> Any:
    import keras

    @keras.saving.register_keras_serializable(package="leukgui", name="CaffePreprocess")
    class CaffePreprocess(keras.layers.Layer):
        """RGB 0..255 -> BGR minus the ImageNet mean, as VGG16 and ResNet50 expect."""

        MEAN_BGR = (103.939, 116.779, 123.68)

        def call(self, inputs: Any) -> Any:
            bgr = keras.ops.flip(inputs, axis=-1)
            return bgr - keras.ops.convert_to_tensor(self.MEAN_BGR, dtype=inputs.dtype)

    return CaffePreprocess


_CAFFE_CLASS: Any = None


def caffe_preprocess_class() -> Any:
    """The registered preprocessing layer (created lazily so importing this module is cheap)."""
    global _CAFFE_CLASS
    if _CAFFE_CLASS is None:
        _CAFFE_CLASS = _caffe_layer()
    return _CAFFE_CLASS


def build_classifier(
    backbone: str = DEFAULT_BACKBONE,
    *,
    weights: str | os.PathLike | None = None,
    input_size: int | None = None,
    dropout: float = 0.3,
    seed: int | None = None,
    verify_weights: bool = True,
) -> Any:
    """Build an ALL/HEM classifier on a keras.applications backbone.

    `weights` is None (random init), "imagenet" (cache or bundled file, never downloaded)
    or a path to a no-top ImageNet weights file. `verify_weights=False` skips the check of a
    cached file against Keras's published checksum (tests use files they write themselves).
    """
    import keras

    spec = get_spec(backbone)
    size = input_size or spec.input_size
    if seed is not None:
        keras.utils.set_random_seed(seed)
    constructor = getattr(keras.applications, spec.keras_name)
    kwargs = {"include_top": False, "input_shape": (size, size, 3)}
    if weights is None or str(weights).lower() == "none":
        full = constructor(weights=None, **kwargs)
    else:
        named = None if str(weights).lower() == "imagenet" else weights
        path = resolve_imagenet_weights(spec.name, named, verify=verify_weights)
        with _offline_weights(path):
            full = constructor(weights="imagenet", **kwargs)
    feature_model = keras.Model(
        full.input, full.get_layer(spec.cam_layer).output, name=BACKBONE_LAYER
    )

    image = keras.Input((size, size, 3), name="image")
    x = image
    if spec.preprocessing == "caffe":
        x = caffe_preprocess_class()(name="preprocess")(x)
    x = feature_model(x)
    if spec.head_max_pool:
        x = keras.layers.MaxPooling2D(2, name=HEAD_PREFIX + "pool")(x)
    x = keras.layers.GlobalAveragePooling2D(name=HEAD_PREFIX + "gap")(x)
    x = keras.layers.Dropout(dropout, seed=seed, name=HEAD_PREFIX + "dropout")(x)
    logits = keras.layers.Dense(len(CLASS_NAMES), name=LOGITS_LAYER)(x)
    probabilities = keras.layers.Activation("softmax", dtype="float32", name=PROBABILITIES_LAYER)(
        logits
    )
    return keras.Model(image, probabilities, name=f"leukgui_{spec.name}")


def _feature_chain(backbone: Any) -> list[Any]:
    """Layers from the input to the CAM layer along the first-input path (residual branches
    join with equal geometry, so one path fixes where each feature sits on the image)."""
    chain = []
    layer = backbone.layers[-1]
    while layer.__class__.__name__ != "InputLayer":
        inputs = layer._inbound_nodes[0].input_tensors
        if not inputs:
            break
        chain.append(layer)
        layer = inputs[0]._keras_history[0]
    return chain[::-1]


def cam_grid_geometry(backbone: Any) -> tuple[float, float]:
    """Where CAM cell i sits on the model input: centre at `stride * i + offset` pixels.

    Upsampling a 7x7 map as if cell i were centred at 32 * i + 15.5 is wrong for networks
    with asymmetric padding: EfficientNet's features sit half a cell lower-right than that
    and ResNet50's half a cell upper-left, which moves every heatmap off the cell. The
    geometry follows from kernel sizes, strides and paddings along the feature path.
    """
    stride, offset = 1.0, 0.0
    for layer in _feature_chain(backbone):
        name = layer.__class__.__name__
        if name == "ZeroPadding2D":
            (top, _), (left, _) = layer.padding
            if top != left:
                raise ValueError(f"{layer.name}: unequal padding is not supported")
            a, b = 1.0, -float(top)
        elif name in ("Conv2D", "DepthwiseConv2D", "MaxPooling2D", "AveragePooling2D"):
            k = (layer.kernel_size if hasattr(layer, "kernel_size") else layer.pool_size)[0]
            s = layer.strides[0]
            if layer.padding == "same":
                size = int(layer._inbound_nodes[0].input_tensors[0].shape[1])
                out = -(-size // s)
                before = max((out - 1) * s + k - size, 0) // 2
            else:
                before = 0
            a, b = float(s), -float(before) + (k - 1) / 2
        else:
            continue  # activations, normalisation, adds: no change of geometry
        stride, offset = stride * a, stride * b + offset
    return stride, offset


@dataclass
class ModelParts:
    """A classifier split where Grad-CAM needs it: before, at and after the CAM layer."""

    preprocess: list[Any]
    backbone: Any
    head: list[Any]  # ends with the logits layer; softmax is applied separately

    def features(self, images: Any) -> Any:
        """The CAM layer's feature maps of raw RGB images (inference mode)."""
        x = images
        for layer in self.preprocess:
            x = layer(x, training=False)
        return self.backbone(x, training=False)

    def logits(self, features: Any) -> Any:
        """The two logits from the feature maps (inference mode: dropout is identity)."""
        h = features
        for layer in self.head:
            h = layer(h, training=False)
        return h


def split_classifier(model: Any) -> ModelParts:
    """Split a classifier built by `build_classifier` (or loaded from a bundle).

    Raises ValueError when the model does not have the expected chain of layers, which is
    how a bundle whose manifest and model disagree gets refused.
    """
    names = [layer.name for layer in model.layers]
    if BACKBONE_LAYER not in names or LOGITS_LAYER not in names:
        raise ValueError(
            f"model {model.name!r} is not a LeukGUI classifier "
            f"(needs layers {BACKBONE_LAYER!r} and {LOGITS_LAYER!r})"
        )
    b = names.index(BACKBONE_LAYER)
    lg = names.index(LOGITS_LAYER)
    layers = model.layers
    pre = [layer for layer in layers[:b] if layer.__class__.__name__ != "InputLayer"]
    head = layers[b + 1 : lg + 1]
    tail = layers[lg + 1 :]
    if len(tail) != 1 or tail[0].name != PROBABILITIES_LAYER:
        raise ValueError(f"model {model.name!r} must end with a softmax {PROBABILITIES_LAYER!r}")
    return ModelParts(preprocess=pre, backbone=layers[b], head=head)
