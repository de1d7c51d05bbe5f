"""The bundle's inference graph: `model.onnx` plus `inference.npz`, for runtimes without
TensorFlow (OpenVINO, ONNX Runtime with DirectML, CUDA or the CPU).

The graph has one input (`image`, raw RGB as float32, B x S x S x 3) and two outputs: the
CAM layer's features and the two logits. No gradient is needed for the heatmap: the head is
global-average-pooling (after a max-pool for VGG16) then one dense layer, so the gradient of
the log-odds with respect to the features is the same at every position of a channel,
(w_ALL - w_HEM) / (h * w) with the sign of the predicted class. Grad-CAM of the log-odds is
therefore the class-activation map of the features and that weight difference, which
`inference.npz` carries (`cam_weights`) beside the CAM grid's geometry and a probe: a few
synthetic cells with the P(ALL) and heatmaps TensorFlow gave them at export, which every
runtime must reproduce before it is trusted (`runtimes.parity_problem`).

Export (`graph_export`) needs TensorFlow and tf2onnx; reading needs neither. New bundles
carry both members (covered by the manifest's hashes, so by the bundle's identity); an older
bundle is exported once, on first use, into a cache folder named by its SHA-256
(`read_cached_graph`, `write_cached_graph`).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from leukgui.core.paths import user_dir

GRAPH_MEMBER = "model.onnx"
PROBE_MEMBER = "inference.npz"
INFERENCE_KEY = "inference_graph"  # manifest: {"onnx_sha256", "probe_sha256", "opset", ...}
OPSET = 17  # DirectML supports opsets up to 17 (ONNX Runtime 1.24)
INPUT_NAME = "image"
OUTPUTS = ("features", "logits")
PROBE_CELLS = 4  # two ALL-like and two HEM-like synthetic cells
PROBE_SEED = 20261130
MAX_PROBE_BYTES = 32 << 20

# Tolerances of the parity check, by the runtime's precision. fp32 engines reorder sums and
# differ from TensorFlow by rounding only; bf16 keeps 8 bits of mantissa.
P_TOLERANCE = {"fp32": 1e-4, "fp16": 2e-2, "bf16": 2e-2}
MIN_HEATMAP_CORRELATION = 0.99


class GraphError(RuntimeError):
    """An inference graph that is missing, damaged, or disagrees with its Keras model."""


@dataclass(frozen=True)
class Probe:
    """What a runtime must reproduce, and the numbers it needs besides the graph."""

    images: np.ndarray  # (N, S, S, 3) uint8: the probe cells as the network sees them
    p_all: np.ndarray  # (N,) TensorFlow's P(ALL), uncalibrated
    cams: np.ndarray  # (N, h, w) TensorFlow's Grad-CAM grids, 0..1
    cam_weights: np.ndarray  # (C,) w_ALL - w_HEM of the logits layer
    grid_stride: float
    grid_offset: float

    def to_bytes(self) -> bytes:
        buffer = io.BytesIO()
        np.savez_compressed(
            buffer,
            images=self.images,
            p_all=self.p_all,
            cams=self.cams,
            cam_weights=self.cam_weights,
            grid=np.array([self.grid_stride, self.grid_offset], np.float64),
        )
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> Probe:
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as npz:
                images = np.asarray(npz["images"], np.uint8)
                p_all = np.asarray(npz["p_all"], np.float32)
                cams = np.asarray(npz["cams"], np.float32)
                weights = np.asarray(npz["cam_weights"], np.float32)
                grid = np.asarray(npz["grid"], np.float64)
        except Exception as exc:  # zip, key and dtype errors all mean a damaged file
            raise GraphError(f"{PROBE_MEMBER} cannot be read ({exc})") from exc
        n = len(images)
        if (
            images.ndim != 4
            or images.shape[-1] != 3
            or images.shape[1] != images.shape[2]
            or p_all.shape != (n,)
            or cams.ndim != 3
            or len(cams) != n
            or weights.ndim != 1
            or grid.shape != (2,)
            or n == 0
        ):
            raise GraphError(f"{PROBE_MEMBER} does not have the expected arrays")
        return cls(images, p_all, cams, weights, float(grid[0]), float(grid[1]))


@dataclass(frozen=True)
class GraphFiles:
    """An inference graph ready for a runtime: ONNX bytes, its probe, and where it came from."""

    onnx: bytes
    probe: Probe
    origin: str  # "bundle" or "cache"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def graph_manifest(onnx_bytes: bytes, probe_bytes: bytes) -> dict[str, Any]:
    """The manifest's `inference_graph` object: hashes of both members and how it was made."""
    try:
        import tf2onnx

        exporter = f"tf2onnx {tf2onnx.__version__}"
    except ImportError:  # pragma: no cover - export cannot have run without it
        exporter = "tf2onnx"
    return {
        "onnx_sha256": sha256(onnx_bytes),
        "probe_sha256": sha256(probe_bytes),
        "opset": OPSET,
        "input": INPUT_NAME,
        "outputs": list(OUTPUTS),
        "exporter": exporter,
    }


def check_graph_manifest(value: Any) -> None:
    """Raise ValueError when a manifest's `inference_graph` object is malformed."""
    if not isinstance(value, dict):
        raise ValueError("must be an object")
    for key in ("onnx_sha256", "probe_sha256"):
        digest = value.get(key)
        if not (
            isinstance(digest, str)
            and len(digest) == 64
            and all(c in "0123456789abcdef" for c in digest)
        ):
            raise ValueError(f"{key} must be a SHA-256 in hex")


def verify_members(manifest: dict[str, Any], onnx_bytes: bytes, probe_bytes: bytes) -> Probe:
    """The probe of a bundle's graph members once both match the manifest's hashes."""
    info = manifest.get(INFERENCE_KEY)
    if not isinstance(info, dict):
        raise GraphError("the manifest does not describe the inference graph it carries")
    if sha256(onnx_bytes) != info.get("onnx_sha256"):
        raise GraphError(f"{GRAPH_MEMBER} has been changed or damaged (its SHA-256 differs)")
    if sha256(probe_bytes) != info.get("probe_sha256"):
        raise GraphError(f"{PROBE_MEMBER} has been changed or damaged (its SHA-256 differs)")
    return Probe.from_bytes(probe_bytes)


# --- the cache of graphs exported for older bundles -------------------------------------------


def graph_cache_dir() -> Path:
    return user_dir() / "inference-graphs"


def _cache_folder(bundle_sha256: str) -> Path:
    return graph_cache_dir() / bundle_sha256


def read_cached_graph(bundle_sha256: str) -> GraphFiles | None:
    """The cached graph of a bundle, or None when there is none; GraphError when damaged."""
    folder = _cache_folder(bundle_sha256)
    index = folder / "graph.json"
    if not index.is_file():
        return None
    try:
        info = json.loads(index.read_text("utf-8"))
        onnx_bytes = (folder / GRAPH_MEMBER).read_bytes()
        probe_bytes = (folder / PROBE_MEMBER).read_bytes()
    except (OSError, ValueError) as exc:
        raise GraphError(f"the cached inference graph cannot be read ({exc})") from exc
    probe = verify_members({INFERENCE_KEY: info}, onnx_bytes, probe_bytes)
    return GraphFiles(onnx_bytes, probe, "cache")


def write_cached_graph(bundle_sha256: str, onnx_bytes: bytes, probe_bytes: bytes) -> Path:
    """Write a graph into the cache atomically: a temporary folder, renamed into place."""
    target = _cache_folder(bundle_sha256)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=target.parent))
    try:
        (tmp / GRAPH_MEMBER).write_bytes(onnx_bytes)
        (tmp / PROBE_MEMBER).write_bytes(probe_bytes)
        (tmp / "graph.json").write_text(
            json.dumps(graph_manifest(onnx_bytes, probe_bytes), indent=2), "utf-8"
        )
        if target.exists():
            shutil.rmtree(target)  # a damaged earlier export; the new one replaces it
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target
