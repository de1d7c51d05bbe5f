"""Inference runtimes: the exported graph, the probe self-check, fallbacks, and the same
calls and heatmaps as TensorFlow (issue 15)."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import CNMC_SAMPLES, DEMO_BUNDLE, REPO

from leukgui.core import runtimes
from leukgui.core.inference_graph import GRAPH_MEMBER, INFERENCE_KEY, PROBE_MEMBER, GraphFiles
from leukgui.core.results import CellResult

pytest.importorskip("openvino")
pytest.importorskip("onnxruntime")


def _rewrite_member(src: Path, dst: Path, member: str, data: bytes) -> Path:
    """A copy of a bundle with one zip member's bytes replaced (the manifest untouched)."""
    with zipfile.ZipFile(src) as a, zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED) as b:
        for info in a.infolist():
            b.writestr(info.filename, data if info.filename == member else a.read(info))
    return dst


def _cells(folder: Path, n: int, seed: int = 3) -> Path:
    import cv2

    from leukgui.core.results import ALL, HEM
    from leukgui.core.synthetic import make_cell

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        label = (ALL, HEM)[i % 2]
        image = make_cell(label, rng, 300).image
        cv2.imwrite(str(folder / f"cell{i:03d}_{label.lower()}.png"), image[..., ::-1])
    return folder


def _results(run) -> list[CellResult]:
    return [o for o in run.outcomes if isinstance(o, CellResult)]


@pytest.fixture(scope="module")
def demo():
    from leukgui.core.bundle import load_bundle

    return load_bundle(DEMO_BUNDLE, source="bundled")


@pytest.fixture(scope="module")
def benchmark_cells(tmp_path_factory) -> Path:
    return _cells(tmp_path_factory.mktemp("cells") / "patient1", 24)


@pytest.fixture(scope="module")
def reference_run(demo, benchmark_cells):
    from leukgui.core.engine import Analyzer, analyze_paths

    return analyze_paths([benchmark_cells], Analyzer(demo, "tensorflow"))


def test_a_new_bundle_carries_its_graph_under_its_identity(tiny_bundle_path: Path) -> None:
    from leukgui.core.bundle import BundleError, bundle_identity, load_bundle, read_manifest

    manifest = read_manifest(tiny_bundle_path)
    with zipfile.ZipFile(tiny_bundle_path) as archive:
        names = set(archive.namelist())
        onnx_bytes = archive.read(GRAPH_MEMBER)
    assert {GRAPH_MEMBER, PROBE_MEMBER} <= names
    import hashlib

    assert manifest[INFERENCE_KEY]["onnx_sha256"] == hashlib.sha256(onnx_bytes).hexdigest()
    assert manifest[INFERENCE_KEY]["opset"] <= 17
    assert manifest["bundle_sha256"] == bundle_identity(manifest)

    import onnx

    graph = onnx.load_from_string(onnx_bytes)
    assert [i.name for i in graph.graph.input] == ["image"]  # no stray Normalization inputs
    assert sorted(o.name for o in graph.graph.output) == ["features", "logits"]

    # Pointing the manifest at another graph changes the identity: the bundle is refused.
    edited = dict(manifest)
    edited[INFERENCE_KEY] = dict(manifest[INFERENCE_KEY], onnx_sha256="0" * 64)
    tampered = tiny_bundle_path.parent / "edited-graph-hash.leukmodel"
    _rewrite_member(tiny_bundle_path, tampered, "manifest.json", json.dumps(edited).encode("utf-8"))
    with pytest.raises(BundleError, match="changed after the model file was written"):
        load_bundle(tampered, keras=False)


def test_heatmaps_without_a_gradient_equal_gradcam_through_a_max_pool_head() -> None:
    """VGG16's head max-pools before averaging: the CAM weights are still w_ALL - w_HEM."""
    import tensorflow as tf

    from leukgui.core.backbones import CLASS_NAMES, build_classifier, split_classifier
    from leukgui.core.gradcam import BatchedGradCAM
    from leukgui.core.results import ALL, HEM

    for backbone, size in (("vgg16", 96), ("resnet50", 64)):
        model = build_classifier(backbone, weights=None, input_size=size, seed=5)
        parts = split_classifier(model)
        kernel = parts.head[-1].get_weights()[0]
        # Random weights give near-equal logits; a larger head makes the maps meaningful.
        parts.head[-1].set_weights([kernel * 50.0, parts.head[-1].get_weights()[1]])
        images = np.random.default_rng(1).uniform(0, 255, (6, size, size, 3)).astype(np.float32)
        p_ref, cams_ref, ok = BatchedGradCAM(model)(images)
        features = parts.features(tf.convert_to_tensor(images))
        h = parts.logits(features)
        weights = parts.head[-1].get_weights()[0]
        w_all, w_hem = (weights[:, CLASS_NAMES.index(name)] for name in (ALL, HEM))
        cams = runtimes.cams_from_features(features.numpy(), h.numpy(), w_all - w_hem)
        assert ok.all()
        np.testing.assert_allclose(runtimes.softmax_all(h.numpy()), p_ref, atol=1e-6)
        for mine, ref in zip(cams, cams_ref, strict=True):
            assert runtimes.heatmap_correlation(mine, ref) > 0.9999, backbone
            np.testing.assert_allclose(mine, ref, atol=1e-4)


@pytest.mark.parametrize(
    ("runtime", "precision", "p_tolerance"),
    [("onnx", "auto", 1e-4), ("openvino", "fp32", 1e-4), ("openvino", "auto", 2e-2)],
)
def test_graph_runtimes_make_the_calls_and_heatmaps_of_tensorflow(
    demo, benchmark_cells, reference_run, runtime, precision, p_tolerance
) -> None:
    from leukgui.core.engine import Analyzer, analyze_paths

    analyzer = Analyzer(demo, runtime, precision=precision)
    assert analyzer.runtime.engine == runtime and analyzer.runtime_notes == []
    run = analyze_paths([benchmark_cells], analyzer)
    ours, ref = _results(run), _results(reference_run)
    assert [c.path for c in ours] == [c.path for c in ref] and len(ours) == 24
    low, high = demo.uncertainty_band
    for mine, theirs in zip(ours, ref, strict=True):
        assert abs(mine.p_all - theirs.p_all) <= p_tolerance
        if not low <= theirs.p_all <= high:
            assert mine.label == theirs.label
        assert runtimes.heatmap_correlation(mine.heatmap, theirs.heatmap) >= 0.99
        assert mine.heatmap.shape == theirs.heatmap.shape
    assert run.info.device == analyzer.runtime.description
    assert run.info.extra["Runtime version"].startswith(runtimes.ENGINE_LABELS[runtime])


@pytest.mark.skipif(not CNMC_SAMPLES.is_dir(), reason=f"real C-NMC cells not at {CNMC_SAMPLES}")
def test_graph_runtimes_agree_on_real_cells(demo) -> None:
    from leukgui.core.engine import Analyzer, analyze_paths

    ref = _results(analyze_paths([CNMC_SAMPLES], Analyzer(demo, "tensorflow")))
    ours = _results(analyze_paths([CNMC_SAMPLES], Analyzer(demo, "openvino")))
    assert len(ref) == len(ours) >= 6
    for mine, theirs in zip(ours, ref, strict=True):
        assert mine.label == theirs.label
        assert abs(mine.p_all - theirs.p_all) <= 2e-2
        assert runtimes.heatmap_correlation(mine.heatmap, theirs.heatmap) >= 0.99


def test_a_damaged_graph_is_refused_with_the_reason_and_tensorflow_runs(
    tiny_bundle_path: Path, tmp_path: Path
) -> None:
    from leukgui.core.bundle import load_bundle
    from leukgui.core.engine import Analyzer, analyze_paths

    with zipfile.ZipFile(tiny_bundle_path) as archive:
        onnx_bytes = bytearray(archive.read(GRAPH_MEMBER))
    onnx_bytes[len(onnx_bytes) // 2] ^= 0xFF  # one flipped byte
    damaged = _rewrite_member(
        tiny_bundle_path, tmp_path / "damaged.leukmodel", GRAPH_MEMBER, bytes(onnx_bytes)
    )
    bundle = load_bundle(damaged, keras=False)  # the weights are fine: the bundle still loads
    assert "model.onnx has been changed or damaged" in bundle.graph_problem
    analyzer = Analyzer(bundle, "openvino")
    assert analyzer.runtime.engine == "tensorflow"
    notes = " | ".join(analyzer.runtime_notes)
    assert "OpenVINO · CPU not used: model.onnx has been changed or damaged" in notes
    assert "ONNX Runtime · CPU not used" in notes
    run = analyze_paths([_cells(tmp_path / "s", 4)], analyzer)
    assert len(_results(run)) == 4
    assert "model.onnx has been changed or damaged" in run.info.extra["Runtime notes"]


def test_a_graph_that_disagrees_with_its_model_fails_the_probe(
    tiny_bundle, demo, tmp_path: Path
) -> None:
    """A graph of other weights under this model's probe: the self-check catches it."""
    from leukgui.core.backbones import build_classifier
    from leukgui.core.graph_export import export_graph
    from leukgui.core.inference_graph import Probe

    other = build_classifier("efficientnetb0", weights=None, input_size=64, seed=99)
    onnx_bytes, _ = export_graph(other)
    probe = tiny_bundle.inference_graph().probe
    # Make the probe's reference values those of a trained-looking model (far from 0.5).
    probe = Probe(
        probe.images,
        np.array([0.9, 0.1, 0.9, 0.1], np.float32),
        probe.cams,
        probe.cam_weights,
        probe.grid_stride,
        probe.grid_offset,
    )
    selection = runtimes.select(
        "efficientnetb0",
        lambda: GraphFiles(onnx_bytes, probe, "bundle"),
        tiny_bundle.keras_model,
        "onnx",
    )
    assert selection.engine.engine == "tensorflow"
    assert any(
        "ONNX Runtime · CPU not used: P(ALL) differs from TensorFlow's" in n
        for n in selection.notes
    )


def test_an_older_bundle_is_exported_once_into_the_cache(tmp_path: Path) -> None:
    from leukgui.core.backbones import build_classifier
    from leukgui.core.bundle import load_bundle, make_manifest, save_bundle
    from leukgui.core.engine import Analyzer
    from leukgui.core.inference_graph import graph_cache_dir

    model = build_classifier("efficientnetb0", weights=None, input_size=64, seed=11)
    manifest = make_manifest(name="old", version="1", backbone="efficientnetb0", input_size=64)
    path = save_bundle(model, manifest, tmp_path, inference_graph=False)
    with zipfile.ZipFile(path) as archive:
        assert GRAPH_MEMBER not in archive.namelist()

    first = Analyzer(load_bundle(path, keras=False), "onnx")
    assert first.runtime.engine == "onnx" and first.graph_origin == "exported now"
    cached = graph_cache_dir() / first.bundle.sha256
    assert (cached / GRAPH_MEMBER).is_file()
    assert not [p for p in graph_cache_dir().iterdir() if p.name.startswith(".tmp")]

    second = Analyzer(load_bundle(path, keras=False), "onnx")
    assert second.graph_origin == "cache" and second.runtime.engine == "onnx"

    (cached / GRAPH_MEMBER).write_bytes(b"not a graph")  # damaged on disk
    third = Analyzer(load_bundle(path, keras=False), "onnx")
    assert third.runtime.engine == "tensorflow"
    assert any("model.onnx has been changed or damaged" in n for n in third.runtime_notes)


class _FailingGpu(runtimes.Engine):
    """A GPU engine that works for `good` batches, then fails as a reset driver does."""

    engine = "onnx"
    device = "DirectML · Test GPU"
    gpu = True

    def __init__(self, inner: runtimes.Engine, good: int) -> None:
        self.inner = inner
        self.input_size = inner.input_size
        self._aligner = inner._aligner
        self.good = good
        self.calls = 0

    def __call__(self, batch):
        self.calls += 1
        if self.calls > self.good:
            raise RuntimeError("DXGI_ERROR_DEVICE_REMOVED: the GPU was reset")
        return self.inner(batch)


def test_a_gpu_that_fails_mid_run_hands_the_rest_to_the_cpu(demo, tmp_path: Path) -> None:
    from leukgui.core.engine import AnalysisOptions, Analyzer, analyze_paths

    folder = _cells(tmp_path / "p", 12, seed=8)
    options = AnalysisOptions(batch_size=4)
    reference = _results(analyze_paths([folder], Analyzer(demo, "onnx"), options))
    analyzer = Analyzer(demo, "onnx")
    analyzer.runtime = _FailingGpu(analyzer.runtime, good=1)
    run = analyze_paths([folder], analyzer, options)
    cells = _results(run)
    assert [c.path for c in cells] == [c.path for c in reference]  # nothing lost, in order
    assert len(cells) == 12 and not [o for o in run.outcomes if not isinstance(o, CellResult)]
    for mine, ref in zip(cells, reference, strict=True):
        assert abs(mine.p_all - ref.p_all) <= 2e-2
    assert not analyzer.runtime.gpu
    notes = run.info.extra["Runtime notes"]
    assert "ONNX Runtime · DirectML · Test GPU · fp32 failed during the run" in notes
    assert "DEVICE_REMOVED" in notes and "remaining cells were analysed on" in notes
    assert run.info.device.startswith("ONNX Runtime · DirectML · Test GPU · fp32, then ")


def test_auto_tries_a_gpu_first_and_says_why_it_was_not_used(demo, monkeypatch) -> None:
    monkeypatch.setattr(
        runtimes, "_ort_providers", lambda: ["DmlExecutionProvider", "CPUExecutionProvider"]
    )
    order = runtimes.candidates("efficientnetb0")
    assert order[0] == runtimes.Candidate("onnx", "DmlExecutionProvider", True)
    assert [c.engine for c in order[1:]] == ["openvino", "onnx", "tensorflow"]
    assert [c.engine for c in runtimes.candidates("vgg16")[1:]] == [
        "openvino",
        "tensorflow",
        "onnx",
    ]
    selection = runtimes.select("efficientnetb0", demo.inference_graph, demo.keras_model)
    assert selection.engine.engine == "openvino"  # this machine has no DirectML
    assert selection.notes[0].startswith("ONNX Runtime · DirectML not used: it could not start")


def test_naming_a_runtime_that_is_not_installed_is_a_usage_error(
    monkeypatch, capsys, tmp_path: Path
) -> None:
    from leukgui import cli

    monkeypatch.setattr(runtimes, "installed_engines", lambda: ["tensorflow"])
    code = cli.main(
        [
            "analyze",
            str(REPO / "resources" / "samples"),
            "--runtime",
            "openvino",
            "--out",
            str(tmp_path / "r.xlsx"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert "the 'openvino' runtime is not available here; available: auto, tensorflow" in err
    assert not (tmp_path / "r.xlsx").exists()


def test_analysis_on_a_graph_runtime_never_imports_tensorflow(tmp_path: Path) -> None:
    """The CLI, in a fresh process: report written, TensorFlow and Keras never imported."""
    report = tmp_path / "report.xlsx"
    script = (
        "import sys\n"
        "from leukgui import cli\n"
        f"code = cli.main(['analyze', {str(REPO / 'resources' / 'samples')!r}, "
        f"'--runtime', 'openvino', '--out', {str(report)!r}, '--no-progress'])\n"
        "print('EXIT', code, 'tensorflow' in sys.modules, 'keras' in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=REPO
    )
    assert "EXIT 0 False False" in done.stdout, done.stdout + done.stderr
    assert "Runtime: OpenVINO · CPU" in done.stderr

    import openpyxl

    sheet = openpyxl.load_workbook(report, read_only=True)["Provenance"]
    rows = {str(r[0]): str(r[1]) for r in sheet.iter_rows(values_only=True) if r and r[0]}
    assert rows["Device"].startswith("OpenVINO · CPU · ")
    assert rows["Runtime version"].startswith("OpenVINO 20")
    assert rows["Runtime asked for"] == "openvino" and rows["Runtime notes"] == "none"
    keys = list(rows)
    assert keys.index("Runtime asked for") == keys.index("Device") + 1  # beside the device
    assert rows["TensorFlow version"].startswith("not loaded")


def test_leukgui_runtimes_lists_and_checks_every_runtime(capsys) -> None:
    from leukgui import cli

    assert cli.main(["runtimes", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    rows = listed["runtimes"]
    assert [r["engine"] for r in rows] == ["openvino", "onnx", "tensorflow"]
    assert all(r["passed"] for r in rows)
    assert [r["auto_choice"] for r in rows] == [True, False, False]
    assert cli.main(["runtimes", "--require", "onnx:DirectML"]) == 1
    assert "'onnx:DirectML' is not here" in capsys.readouterr().err
    assert cli.main(["runtimes", "--require", "onnx:CPU"]) == 0


def test_bf16_cells_near_a_decision_boundary_are_recomputed_in_fp32(
    demo, benchmark_cells, monkeypatch
) -> None:
    from leukgui.core import engine
    from leukgui.core.engine import Analyzer, analyze_paths

    analyzer = Analyzer(demo, "openvino")
    if analyzer.runtime.precision == "fp32":
        pytest.skip("this CPU has no bf16: OpenVINO computes in fp32 already")
    exact = _results(analyze_paths([benchmark_cells], Analyzer(demo, "openvino", precision="fp32")))
    plain = _results(analyze_paths([benchmark_cells], analyzer))
    monkeypatch.setattr(engine, "NEAR_BOUNDARY", 1.0)  # now every cell is "near"
    rechecked = Analyzer(demo, "openvino")
    run = analyze_paths([benchmark_cells], rechecked)
    cells = _results(run)
    assert rechecked.rechecked == len(cells) == 24
    for mine, ref in zip(cells, exact, strict=True):
        assert abs(mine.p_all - ref.p_all) <= 1e-5  # fp32 values, not bf16 ones
        assert runtimes.heatmap_correlation(mine.heatmap, ref.heatmap) > 0.9999
    assert max(abs(a.p_all - b.p_all) for a, b in zip(plain, exact, strict=True)) > 0
    assert "computed again in fp32: 24 cells" in run.info.extra["Reduced-precision check"]


def test_an_engine_that_is_not_installed_is_said_not_skipped_silently(demo, monkeypatch) -> None:
    monkeypatch.setattr(runtimes, "installed_engines", lambda: ["onnx", "tensorflow"])
    selection = runtimes.select("efficientnetb0", demo.inference_graph, demo.keras_model)
    assert selection.engine.engine == "onnx"
    assert selection.notes == ["OpenVINO not used: it is not installed"]


def test_evaluate_reports_the_runtime_it_scored_with(tmp_path: Path, capsys) -> None:
    import openpyxl

    from leukgui import cli

    out = tmp_path / "eval.xlsx"
    code = cli.main(
        [
            "evaluate",
            "efficientnetb0-demo",
            str(REPO / "resources" / "samples"),
            "--out",
            str(out),
            "--runtime",
            "onnx",
            "--quiet",
        ]
    )
    assert code == 0, capsys.readouterr().err
    sheet = openpyxl.load_workbook(out, read_only=True)["Summary"]
    rows = {str(r[0]): str(r[1]) for r in sheet.iter_rows(values_only=True) if r and r[0]}
    assert rows["Device"] == "ONNX Runtime · CPU · fp32"
    assert rows["Runtime asked for"] == "onnx"
    assert rows["Runtime version"].startswith("ONNX Runtime 1.")
    assert rows["Runtime notes"] == "none"
