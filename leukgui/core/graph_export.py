"""Exporting a bundle's inference graph (TensorFlow + tf2onnx), parity-checked on ONNX
Runtime before it is accepted. Kept apart from `inference_graph` (reading, no TensorFlow) and
`runtimes` (which read graphs), so that the export can check its graph on a runtime without
an import cycle.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from leukgui.core.inference_graph import (
    INPUT_NAME,
    OPSET,
    OUTPUTS,
    PROBE_CELLS,
    PROBE_SEED,
    GraphError,
    Probe,
)
from leukgui.core.runtimes import OnnxRuntimeEngine, parity_problem


def probe_images(size: int) -> np.ndarray:
    """Two ALL-like and two HEM-like synthetic cells at the model's input size (uint8)."""
    from leukgui.core.imaging import to_model_input
    from leukgui.core.results import ALL, HEM
    from leukgui.core.synthetic import make_cell

    rng = np.random.default_rng(PROBE_SEED)
    cells = [make_cell(label, rng, size=224).image for label in (ALL, HEM, ALL, HEM)]
    batch = np.stack([to_model_input(cell, size) for cell in cells[:PROBE_CELLS]])
    return np.clip(np.rint(batch), 0, 255).astype(np.uint8)


def _graph_function(model: Any) -> tuple[Any, Any, int]:
    """A tf.function image -> {features, logits} over the same layers as BatchedGradCAM."""
    import tensorflow as tf

    from leukgui.core.backbones import split_classifier

    parts = split_classifier(model)
    size = int(model.inputs[0].shape[1])

    def graph(images: Any) -> dict[str, Any]:
        features = parts.features(images)
        return {
            "features": tf.identity(tf.cast(features, tf.float32), name="features"),
            "logits": tf.identity(tf.cast(parts.logits(features), tf.float32), name="logits"),
        }

    spec = (tf.TensorSpec([None, size, size, 3], tf.float32, name=INPUT_NAME),)
    function = tf.function(graph, input_signature=spec, autograph=False)
    return function, spec, size


def _fold_captured_inputs(proto: Any, function: Any) -> None:
    """Turn the exporter's extra graph inputs into constants.

    tf2onnx (and Keras's ONNX export) leave tensors the function captured, such as
    EfficientNet's Normalization mean and variance, as graph inputs that a runtime would ask
    the caller to feed. Their values are the captured tensors; unused ones are dropped.
    """
    from onnx import numpy_helper

    concrete = function.get_concrete_function()
    captured: dict[str, np.ndarray] = {}
    for outer, inner in concrete.graph.captures:
        if getattr(outer, "dtype", None) is None or outer.dtype.name == "resource":
            continue  # variables: the exporter freezes those itself
        try:
            captured[inner.name] = np.asarray(outer.numpy())
        except (AttributeError, ValueError, TypeError):
            continue
    used = {name for node in proto.graph.node for name in node.input}
    for graph_input in list(proto.graph.input):
        if graph_input.name == INPUT_NAME:
            continue
        if graph_input.name in used:
            if graph_input.name not in captured:
                raise GraphError(
                    f"the exported graph asks for an input {graph_input.name!r} "
                    "that is not a captured constant"
                )
            value = captured[graph_input.name]
            proto.graph.initializer.append(numpy_helper.from_array(value, graph_input.name))
        proto.graph.input.remove(graph_input)


def export_graph(model: Any) -> tuple[bytes, bytes]:
    """Export a bundle's Keras model: (ONNX bytes, probe bytes), parity-checked.

    Raises GraphError when the exporter is missing, the graph is not of the expected shape
    (exactly one input, the two outputs), or ONNX Runtime's result on the probe differs
    from TensorFlow's.
    """
    try:
        import onnx
        import tf2onnx
    except ImportError as exc:
        raise GraphError(
            f"exporting the inference graph needs tf2onnx and onnx ({exc.name} is missing)"
        ) from exc

    from leukgui.core.backbones import CLASS_NAMES, cam_grid_geometry, split_classifier
    from leukgui.core.gradcam import BatchedGradCAM
    from leukgui.core.results import ALL, HEM

    function, spec, size = _graph_function(model)
    images = probe_images(size)
    function(images[:1].astype(np.float32))  # the exporter needs the function traced once
    proto, _ = tf2onnx.convert.from_function(function, input_signature=spec, opset=OPSET)
    _fold_captured_inputs(proto, function)
    names_in = [i.name for i in proto.graph.input]
    names_out = [o.name for o in proto.graph.output]
    if names_in != [INPUT_NAME] or sorted(names_out) != sorted(OUTPUTS):
        raise GraphError(
            f"the exported graph has inputs {names_in} and outputs {names_out}; "
            f"expected exactly [{INPUT_NAME!r}] and {list(OUTPUTS)}"
        )
    proto.producer_name = "leukgui"
    onnx.checker.check_model(proto)
    onnx_bytes = proto.SerializeToString()

    parts = split_classifier(model)
    kernel = np.asarray(parts.head[-1].get_weights()[0], np.float32)  # (C, 2)
    cam_weights = kernel[:, CLASS_NAMES.index(ALL)] - kernel[:, CLASS_NAMES.index(HEM)]
    gradcam = BatchedGradCAM(model)
    p_ref, cams_ref, _ = gradcam(images.astype(np.float32))
    stride, offset = cam_grid_geometry(parts.backbone)
    probe = Probe(
        images=images,
        p_all=np.asarray(p_ref, np.float32),
        cams=np.asarray(cams_ref, np.float32),
        cam_weights=cam_weights,
        grid_stride=float(stride),
        grid_offset=float(offset),
    )
    try:
        engine = OnnxRuntimeEngine(onnx_bytes, probe, provider="CPUExecutionProvider")
    except Exception as exc:  # a graph ONNX Runtime cannot load is not a graph we ship
        raise GraphError(f"ONNX Runtime cannot load the exported graph ({exc})") from exc
    problem = parity_problem(engine, probe)
    if problem:
        raise GraphError(f"the exported graph disagrees with the Keras model: {problem}")
    return onnx_bytes, probe.to_bytes()
