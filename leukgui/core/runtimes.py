"""Inference runtimes: one interface over TensorFlow, OpenVINO and ONNX Runtime.

TensorFlow is the reference (and what training uses); it has had no GPU on Windows since
2.10 and is not the fastest CPU engine for these networks. OpenVINO (CPU, Intel GPUs) and
ONNX Runtime (DirectML on Windows for any DirectX 12 GPU, CUDA on Linux, the CPU) run the
bundle's exported graph (`inference_graph`) and compute the same heatmaps from its
features without a gradient.

Nothing is trusted by name: a runtime is used only after it reproduced, on the bundle's
probe cells, the P(ALL) and heatmaps TensorFlow gave at export. A runtime that cannot load,
is refused by its probe, or fails during a run gives way to the next one, and the reason is
kept (`Selection.notes`) for the status bar, the CLI and the report.

Measured order of the CPU engines (2-core AVX-512 CPU, P(ALL) plus heatmap per image, 32-image
batches, 2026-11-30): OpenVINO bf16 with 2 requests in flight is 2.36x TensorFlow for
EfficientNetB0, 1.70x for ResNet50 and 1.49x for VGG16; ONNX Runtime's CPU engine is 1.32x,
1.03x and 0.88x. A GPU that passes its probe comes before any CPU engine.
"""

from __future__ import annotations

import importlib.util
import math
import os
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from leukgui.core.inference_graph import (
    INPUT_NAME,
    MIN_HEATMAP_CORRELATION,
    OUTPUTS,
    P_TOLERANCE,
    GraphError,
    GraphFiles,
    Probe,
)

AUTO = "auto"
TENSORFLOW = "tensorflow"
OPENVINO = "openvino"
ONNX = "onnx"
ENGINES = (OPENVINO, ONNX, TENSORFLOW)
RUNTIME_CHOICES = (AUTO, *ENGINES)
ENGINE_LABELS = {TENSORFLOW: "TensorFlow", OPENVINO: "OpenVINO", ONNX: "ONNX Runtime"}
_MODULES = {TENSORFLOW: "tensorflow", OPENVINO: "openvino", ONNX: "onnxruntime"}

# CPU engines fastest first, per backbone, from the measurements in the module docstring.
CPU_ORDER = {
    "efficientnetb0": (OPENVINO, ONNX, TENSORFLOW),
    "resnet50": (OPENVINO, ONNX, TENSORFLOW),
    "vgg16": (OPENVINO, TENSORFLOW, ONNX),
}
_EPS = 1e-7
_ORT_GPU_PROVIDERS = (
    ("CUDAExecutionProvider", "CUDA"),
    ("DmlExecutionProvider", "DirectML"),
)


class RuntimeUnavailable(RuntimeError):
    """A runtime named by the user is not installed here; the message lists the ones that are."""

    def __init__(self, name: str, available: Sequence[str]) -> None:
        self.name = name
        self.available = list(available)
        listed = ", ".join([AUTO, *available])
        super().__init__(f"the {name!r} runtime is not available here; available: {listed}")


class NoRuntime(RuntimeError):
    """Every runtime was refused; the message gives each reason."""


def installed_engines() -> list[str]:
    """Engines whose Python package is importable, without importing them."""
    found = []
    for engine in ENGINES:
        try:
            if importlib.util.find_spec(_MODULES[engine]) is not None:
                found.append(engine)
        except (ImportError, ValueError):
            continue
    return found


def check_choice(name: str) -> str:
    """A runtime name as given on the CLI or in Preferences; RuntimeUnavailable if absent."""
    name = (name or AUTO).strip().lower()
    if name not in RUNTIME_CHOICES:
        raise ValueError(f"unknown runtime {name!r}; choose one of {', '.join(RUNTIME_CHOICES)}")
    if name != AUTO and name not in installed_engines():
        raise RuntimeUnavailable(name, installed_engines())
    return name


# --- heatmaps from features ------------------------------------------------------------------


def softmax_all(logits: np.ndarray) -> np.ndarray:
    """P(ALL) from the two logits (ALL is class 0), computed stably in float64."""
    from leukgui.core.backbones import CLASS_NAMES
    from leukgui.core.results import ALL

    z = np.asarray(logits, np.float64)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return (e[:, CLASS_NAMES.index(ALL)] / e.sum(axis=1)).astype(np.float32)


def cams_from_features(
    features: np.ndarray, logits: np.ndarray, cam_weights: np.ndarray
) -> np.ndarray:
    """Grad-CAM of the predicted class's log-odds, without a gradient (see inference_graph).

    The gradient is (w_ALL - w_HEM) / (h * w) at every position, with the sign of the
    predicted class; the same arithmetic as `gradcam.BatchedGradCAM`, so the maps agree.
    """
    from leukgui.core.backbones import CLASS_NAMES
    from leukgui.core.results import ALL

    features = np.asarray(features, np.float32)
    b, h, w, _ = features.shape
    predicted_all = np.argmax(logits, axis=1) == CLASS_NAMES.index(ALL)
    sign = np.where(predicted_all, 1.0, -1.0).astype(np.float32)
    weights = cam_weights.astype(np.float32) / float(h * w)
    cam = np.einsum("bhwc,c->bhw", features, weights) * sign[:, None, None]
    cam = np.maximum(cam, 0.0)
    peak = cam.reshape(b, -1).max(axis=1)[:, None, None]
    return (cam / (peak + _EPS)).astype(np.float32)


def heatmap_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two maps; 1.0 for two flat maps that are equal."""
    a = np.asarray(a, np.float64).ravel()
    b = np.asarray(b, np.float64).ravel()
    if a.std() < 1e-9 or b.std() < 1e-9:
        return 1.0 if np.allclose(a, b, atol=0.05) else 0.0
    return float(np.corrcoef(a, b)[0, 1])


# --- engines -----------------------------------------------------------------------------------


class Engine:
    """A loaded runtime: P(ALL) and heatmaps for float32 batches of raw RGB."""

    engine: str = ""
    device: str = "CPU"
    precision: str = "fp32"
    gpu: bool = False

    def __init__(self, input_size: int, grid_stride: float, grid_offset: float) -> None:
        from leukgui.core.gradcam import CamAligner

        self.input_size = input_size
        self._aligner = CamAligner(input_size, grid_stride, grid_offset)

    @property
    def description(self) -> str:
        """What the report and status bar say, e.g. "OpenVINO · CPU · bf16"."""
        return f"{ENGINE_LABELS[self.engine]} · {self.device} · {self.precision}"

    def __call__(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """P(ALL) (B,), raw CAM grids (B, h, w) in 0..1, and a per-image `ok` flag."""
        raise NotImplementedError

    def forward(self, batch: np.ndarray) -> np.ndarray:
        """P(ALL) without heatmaps (the extra views of test-time augmentation)."""
        return self(batch)[0]

    def align(self, cams: np.ndarray) -> np.ndarray:
        return self._aligner(cams)

    @property
    def reduced_precision(self) -> bool:
        """True when `exact()` gives an fp32 twin of this engine."""
        return False

    def exact(self) -> Engine | None:
        """The same engine in fp32 when this one computes in lower precision, else None:
        `engine.Analyzer` recomputes the cells near a decision boundary on it."""
        return None


class GraphEngine(Engine):
    """An engine that runs the exported graph: features and logits, then numpy."""

    def __init__(self, probe: Probe) -> None:
        super().__init__(int(probe.images.shape[1]), probe.grid_stride, probe.grid_offset)
        self.cam_weights = probe.cam_weights

    def run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(features, logits) of a float32 batch."""
        raise NotImplementedError

    def __call__(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        features, logits = self.run(batch)
        p_all = softmax_all(logits)
        cams = cams_from_features(features, logits, self.cam_weights)
        ok = (
            np.isfinite(p_all)
            & np.isfinite(logits).all(axis=1)
            & np.isfinite(features).all(axis=(1, 2, 3))
            & np.isfinite(cams).all(axis=(1, 2))
        )
        return p_all, cams, ok


class TensorFlowEngine(Engine):
    """Today's path and the reference: the batched Grad-CAM `tf.function`."""

    engine = TENSORFLOW

    def __init__(self, model: Any) -> None:
        from leukgui.core.gradcam import BatchedGradCAM

        self.gradcam = BatchedGradCAM(model)
        super().__init__(
            self.gradcam.input_size, self.gradcam.grid_stride, self.gradcam.grid_offset
        )
        self.device, self.gpu = tensorflow_device()
        self.precision = _tensorflow_precision(model)

    def __call__(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self.gradcam(batch)

    def forward(self, batch: np.ndarray) -> np.ndarray:
        return self.gradcam.forward(batch)


def tensorflow_device() -> tuple[str, bool]:
    """TensorFlow's device in words, and whether it is a GPU."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        names = []
        for gpu in gpus:
            details = tf.config.experimental.get_device_details(gpu)
            names.append(details.get("device_name", gpu.name))
        return "GPU: " + ", ".join(names), True
    return f"CPU ({os.cpu_count()} logical cores)", False


def _tensorflow_precision(model: Any) -> str:
    policy = str(getattr(getattr(model, "dtype_policy", None), "name", "float32"))
    return {"mixed_bfloat16": "bf16", "mixed_float16": "fp16"}.get(policy, "fp32")


class OnnxRuntimeEngine(GraphEngine):
    """ONNX Runtime: DirectML (Windows, any DirectX 12 GPU), CUDA (Linux) or the CPU."""

    engine = ONNX

    def __init__(self, onnx_bytes: bytes, probe: Probe, provider: str) -> None:
        super().__init__(probe)
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3
        if provider == "DmlExecutionProvider":
            # DirectML needs these two off (ONNX Runtime's DirectML documentation).
            options.enable_mem_pattern = False
            options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        providers = (
            [provider] if provider == "CPUExecutionProvider" else [provider, "CPUExecutionProvider"]
        )
        self.session = ort.InferenceSession(onnx_bytes, options, providers=providers)
        used = self.session.get_providers()
        if not used or used[0] != provider:
            raise RuntimeError(f"ONNX Runtime could not start {provider} (it offered {used})")
        self.gpu = provider != "CPUExecutionProvider"
        self.device = dict(_ORT_GPU_PROVIDERS).get(provider, "CPU")
        if self.gpu:
            self.device += f" · {_gpu_name(provider)}"
        self._outputs = list(OUTPUTS)

    def run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        features, logits = self.session.run(self._outputs, {INPUT_NAME: batch})
        return np.asarray(features, np.float32), np.asarray(logits, np.float32)


def _gpu_name(provider: str) -> str:
    """The GPU's name where the system says it cheaply, else a plain "GPU"."""
    if provider == "CUDAExecutionProvider":
        try:
            import subprocess

            out = subprocess.run(
                ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                capture_output=True,
                text=True,
                timeout=5,
                check=True,
            ).stdout.strip()
            if out:
                return out.splitlines()[0].strip()
        except (OSError, subprocess.SubprocessError):
            pass
    if provider == "DmlExecutionProvider" and sys.platform == "win32":
        try:
            import subprocess

            out = subprocess.run(
                [
                    "powershell",
                    "-NoProfile",
                    "-Command",
                    "(Get-CimInstance Win32_VideoController | Select-Object -First 1).Name",
                ],
                capture_output=True,
                text=True,
                timeout=10,
                check=True,
                creationflags=getattr(subprocess, "CREATE_NO_WINDOW", 0),
            ).stdout.strip()
            if out:
                return out.splitlines()[0].strip()
        except (OSError, subprocess.SubprocessError):
            pass
    return "GPU"


class OpenVinoEngine(GraphEngine):
    """OpenVINO in throughput mode: each batch is split over several requests in flight.

    A single synchronous request is slower than TensorFlow on a 2-core CPU; the gain needs
    the requests the plugin asks for (OPTIMAL_NUMBER_OF_INFER_REQUESTS) running at once.
    On a CPU with native bf16 the plugin computes in bf16 unless `precision="fp32"`.
    """

    engine = OPENVINO

    def __init__(
        self, onnx_bytes: bytes, probe: Probe, device: str = "CPU", precision: str = AUTO
    ) -> None:
        super().__init__(probe)
        import io

        import openvino as ov

        self._source = (onnx_bytes, probe, device)
        self._exact: Engine | None = None
        core = ov.Core()
        model = core.read_model(io.BytesIO(onnx_bytes))
        config: dict[str, Any] = {"PERFORMANCE_HINT": "THROUGHPUT"}
        if precision == "fp32":
            config["INFERENCE_PRECISION_HINT"] = "f32"
        self.compiled = core.compile_model(model, device, config)
        self.requests = max(1, int(self.compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")))
        self.queue = ov.AsyncInferQueue(self.compiled, self.requests)
        self._features = self.compiled.output(OUTPUTS[0])
        self._logits = self.compiled.output(OUTPUTS[1])
        hint = str(self.compiled.get_property("INFERENCE_PRECISION_HINT")).lower()
        if "bf16" in hint or "bfloat16" in hint:
            self.precision = "bf16"
        elif "f16" in hint or "float16" in hint:
            self.precision = "fp16"
        else:
            self.precision = "fp32"
        self.gpu = device.upper().startswith("GPU")
        if self.gpu:
            self.device = f"GPU · {core.get_property(device, 'FULL_DEVICE_NAME')}"
        self._lock = threading.Lock()

    @property
    def reduced_precision(self) -> bool:
        return self.precision != "fp32"

    def exact(self) -> Engine | None:
        if not self.reduced_precision:
            return None
        if self._exact is None:  # compiled on first need: most runs have few such cells
            self._exact = OpenVinoEngine(*self._source, precision="fp32")
        return self._exact

    def run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        n = len(batch)
        step = max(1, math.ceil(n / self.requests))
        chunks = [(i, batch[i : i + step]) for i in range(0, n, step)]
        results: dict[int, tuple[np.ndarray, np.ndarray]] = {}

        def done(request: Any, start: int) -> None:
            results[start] = (
                np.array(request.get_tensor(self._features).data, np.float32),
                np.array(request.get_tensor(self._logits).data, np.float32),
            )

        with self._lock:  # one batch at a time on this compiled model
            self.queue.set_callback(done)
            for start, chunk in chunks:
                self.queue.start_async({0: chunk}, userdata=start)
            self.queue.wait_all()
        if len(results) != len(chunks):
            raise RuntimeError("OpenVINO did not return every part of the batch")
        features = np.concatenate([results[s][0] for s, _ in chunks])
        logits = np.concatenate([results[s][1] for s, _ in chunks])
        return features, logits


# --- choosing, checking and falling back -------------------------------------------------------


@dataclass(frozen=True)
class Candidate:
    """One engine on one device, to be tried in order."""

    engine: str
    device: str  # "CPU", "GPU" (OpenVINO), an ONNX Runtime provider, or "" (TensorFlow's own)
    gpu: bool

    @property
    def device_label(self) -> str:
        """The device in words: "CPU", "DirectML", "CUDA", "GPU" ("" for TensorFlow, which
        picks its own device)."""
        if self.engine == TENSORFLOW:
            return ""
        if self.device == "CPUExecutionProvider":
            return "CPU"
        return dict(_ORT_GPU_PROVIDERS).get(self.device, self.device)

    @property
    def label(self) -> str:
        if self.engine == TENSORFLOW:
            return "TensorFlow"
        return f"{ENGINE_LABELS[self.engine]} · {self.device_label}"


def _openvino_devices() -> list[str]:
    try:
        import openvino as ov

        return list(ov.Core().available_devices)
    except Exception:  # a broken install or driver is "no device", not a crash
        return []


def _ort_providers() -> list[str]:
    try:
        import onnxruntime as ort

        return list(ort.get_available_providers())
    except Exception:
        return []


def candidates(backbone: str, choice: str = AUTO) -> list[Candidate]:
    """Engines and devices to try, best first: the named engine first when one is named,
    then the rest in the automatic order (GPUs, then CPU engines by measured speed)."""
    installed = installed_engines()
    gpus: list[Candidate] = []
    cpus: dict[str, Candidate] = {}
    if ONNX in installed:
        providers = _ort_providers()
        for provider, _ in _ORT_GPU_PROVIDERS:
            if provider in providers:
                gpus.append(Candidate(ONNX, provider, True))
        cpus[ONNX] = Candidate(ONNX, "CPUExecutionProvider", False)
    if OPENVINO in installed:
        devices = _openvino_devices()
        gpus.extend(Candidate(OPENVINO, d, True) for d in devices if d.upper().startswith("GPU"))
        if "CPU" in devices:
            cpus[OPENVINO] = Candidate(OPENVINO, "CPU", False)
    if TENSORFLOW in installed:
        cpus[TENSORFLOW] = Candidate(TENSORFLOW, "", False)
    order = CPU_ORDER.get(backbone, (OPENVINO, ONNX, TENSORFLOW))
    ranked = gpus + [cpus[e] for e in order if e in cpus]
    if choice == AUTO:
        return ranked
    named = [c for c in ranked if c.engine == choice]
    return named + [c for c in ranked if c.engine != choice]


def parity_problem(engine: Engine, probe: Probe) -> str:
    """ "" when `engine` reproduces the probe within its precision's tolerance, else why not."""
    p_all, cams, ok = engine(probe.images.astype(np.float32))
    if not np.all(ok):
        return "it returned non-finite values for the probe cells"
    if cams.shape != probe.cams.shape:
        return f"its heatmaps are {cams.shape[1:]} cells, TensorFlow's {probe.cams.shape[1:]}"
    tolerance = P_TOLERANCE.get(engine.precision, P_TOLERANCE["fp32"])
    worst = float(np.max(np.abs(p_all.astype(np.float64) - probe.p_all)))
    if not worst <= tolerance:
        return (
            f"P(ALL) differs from TensorFlow's by up to {worst:.2g} on the probe cells "
            f"(allowed {tolerance:g} at {engine.precision})"
        )
    for i in range(len(cams)):
        r = heatmap_correlation(cams[i], probe.cams[i])
        if not r >= MIN_HEATMAP_CORRELATION:
            return (
                f"its heatmap of probe cell {i + 1} correlates {r:.3f} with TensorFlow's "
                f"(at least {MIN_HEATMAP_CORRELATION} needed)"
            )
    return ""


@dataclass
class Selection:
    """The runtime in use and everything that was not used, with the reasons."""

    engine: Engine
    notes: list[str] = field(default_factory=list)
    graph_origin: str = ""  # "bundle", "cache", "exported now" or "" (TensorFlow)

    @property
    def description(self) -> str:
        return self.engine.description


GraphSource = Callable[[], GraphFiles]
ModelSource = Callable[[], Any]


def _build(
    candidate: Candidate, graph: GraphFiles | None, model: ModelSource, precision: str
) -> Engine:
    if candidate.engine == TENSORFLOW:
        return TensorFlowEngine(model())
    assert graph is not None
    if candidate.engine == ONNX:
        return OnnxRuntimeEngine(graph.onnx, graph.probe, candidate.device)
    return OpenVinoEngine(graph.onnx, graph.probe, candidate.device, precision)


class _Graph:
    """The bundle's graph, fetched once and only when a graph engine is tried."""

    def __init__(self, source: GraphSource) -> None:
        self.source = source
        self.files: GraphFiles | None = None
        self.error = ""

    def get(self) -> GraphFiles | None:
        if self.files is None and not self.error:
            try:
                self.files = self.source()
            except GraphError as exc:
                self.error = str(exc)
        return self.files


def _attempt(
    candidate: Candidate, graph: _Graph, model: ModelSource, precision: str
) -> tuple[Engine | None, str]:
    """Start one candidate and, for a graph engine, run its probe: (engine, "") or
    (engine or None, why it must not be used)."""
    files = None
    if candidate.engine != TENSORFLOW:
        files = graph.get()
        if files is None:
            return None, graph.error
    try:
        engine = _build(candidate, files, model, precision)
    except Exception as exc:  # an engine that cannot start is a reason, not a crash
        return None, f"it could not start ({_short(exc)})"
    if files is None:
        return engine, ""  # TensorFlow is the reference the probe was made with
    try:
        return engine, parity_problem(engine, files.probe)
    except Exception as exc:
        return engine, f"it failed on the probe cells ({_short(exc)})"


def select(
    backbone: str,
    graph: GraphSource,
    model: ModelSource,
    choice: str = AUTO,
    *,
    precision: str = AUTO,
    exclude_gpu: bool = False,
) -> Selection:
    """Load the first candidate that passes its probe; the others' reasons become notes.

    `graph` returns the bundle's graph (raising GraphError when it is missing, damaged or
    cannot be exported); it is called once, and only when a graph engine is tried. `model`
    returns the Keras model, only when TensorFlow is tried.
    """
    choice = check_choice(choice)
    installed = installed_engines()
    notes = [
        f"{ENGINE_LABELS[e]} not used: it is not installed" for e in ENGINES if e not in installed
    ]
    state = _Graph(graph)
    for candidate in candidates(backbone, choice):
        if exclude_gpu and candidate.gpu:
            continue
        engine, problem = _attempt(candidate, state, model, precision)
        if engine is None or problem:
            notes.append(f"{candidate.label} not used: {problem}")
            continue
        origin = state.files.origin if state.files and candidate.engine != TENSORFLOW else ""
        return Selection(engine, notes, origin)
    raise NoRuntime("no runtime could run this model: " + "; ".join(notes or ["none installed"]))


@dataclass(frozen=True)
class CheckResult:
    """One candidate's self-check, for `leukgui runtimes`."""

    candidate: Candidate
    description: str  # the engine's description once started, else the candidate's label
    problem: str  # "" when it passed
    device: str = ""  # the device in words, as the engine named it once started
    precision: str = ""  # "" when it did not start

    @property
    def passed(self) -> bool:
        return not self.problem


def gpu_paths_missing() -> list[str]:
    """The GPU paths LeukGUI knows that this machine lacks, each with what it needs: what an
    IT person checks when `auto` runs on the CPU."""
    missing = []
    providers = _ort_providers() if ONNX in installed_engines() else []
    if "CUDAExecutionProvider" not in providers:
        missing.append(
            "ONNX Runtime · CUDA: not available (Linux with an NVIDIA GPU: install onnxruntime-gpu)"
        )
    if "DmlExecutionProvider" not in providers:
        missing.append(
            "ONNX Runtime · DirectML: not available (Windows with a DirectX 12 GPU: "
            "onnxruntime-directml, which the Windows installer ships)"
        )
    devices = _openvino_devices() if OPENVINO in installed_engines() else []
    if not any(d.upper().startswith("GPU") for d in devices):
        missing.append("OpenVINO · GPU: no Intel GPU (or its driver) found")
    return missing


def check_all(
    backbone: str, graph: GraphSource, model: ModelSource, *, precision: str = AUTO
) -> list[CheckResult]:
    """Start every candidate and run its probe: what `auto` chooses among, and why each one
    would or would not be used."""
    state = _Graph(graph)
    results = []
    for candidate in candidates(backbone, AUTO):
        engine, problem = _attempt(candidate, state, model, precision)
        if engine is None:
            results.append(CheckResult(candidate, candidate.label, problem, candidate.device_label))
        else:
            results.append(
                CheckResult(candidate, engine.description, problem, engine.device, engine.precision)
            )
    return results


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."
