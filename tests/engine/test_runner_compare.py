"""The engine runner, compare and TRT profiling against the fake TensorRT (which executes the ONNX with ORT)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from patrol_deploy.backends.trt_builder import build_engine
from patrol_deploy.backends.trt_meta import engine_meta_path
from patrol_deploy.backends.trt_options import BatchProfile, BuildOptions
from patrol_deploy.backends.trt_runner import EngineRunner
from patrol_deploy.engine.compare import compare_arrays, compare_engine, compare_outputs
from patrol_deploy.engine.profile import profile_model
from patrol_deploy.errors import HardwareError, ModelError
from tests.engine.trt_fakes import install, stubs_available

pytestmark = pytest.mark.skipif(not stubs_available(), reason="tensorrt-stubs (the 10.x API list) is not installed")


def no_jetson() -> dict:
    """platform_state off a Jetson."""
    return {"jetson": None, "warnings": []}


@pytest.fixture
def built(monkeypatch, tiny_onnx, tmp_path):
    world, cuda = install(monkeypatch, 10)
    engine = tmp_path / "edge.engine"
    build_engine(tiny_onnx, engine, BuildOptions(precision="fp32", batch=BatchProfile(1, 4, 8)))
    return world, cuda, engine


def test_runner_runs_times_profiles_and_frees_everything(built, tiny_onnx):
    world, cuda, engine = built
    x = np.random.default_rng(0).standard_normal((3, 3, 8, 8)).astype(np.float32)
    import onnxruntime as ort

    expected = ort.InferenceSession(str(tiny_onnx), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    with EngineRunner(engine) as runner:
        assert [t.shape for t in runner.input_specs()] == [(-1, 3, 8, 8)]
        outputs, times = runner.run({"input": x})
        layers = runner.layer_times({"input": x}, runs=3)
    np.testing.assert_allclose(outputs["features"], expected, rtol=1e-6)
    assert (times.h2d_ms, times.compute_ms, times.d2h_ms) == (0.125, 0.125, 0.125)
    assert [(layer["name"], layer["mean_ms"]) for layer in layers] == [("layer0", 0.25), ("layer1", 0.5)]
    assert sum(layer["percent"] for layer in layers) == pytest.approx(100)
    assert world.sets("IExecutionContext", "enqueue_emits_profile") == [False]
    assert len(world.calls("IExecutionContext", "report_to_profiler")) == 3
    assert cuda.memory == {} and cuda.pinned_live == 0


def test_batch_outside_the_profile_is_a_clear_error(built):
    _, _, engine = built
    with EngineRunner(engine) as runner, pytest.raises(ModelError, match="outside the engine's optimization"):
        runner.run({"input": np.zeros((9, 3, 8, 8), np.float32)})


def test_engine_from_another_tensorrt_version_is_detected_from_metadata(built, monkeypatch):
    _, _, engine = built
    meta = json.loads(engine_meta_path(engine).read_text())
    meta["tensorrt"]["version"] = "8.6.2.3"
    meta["device"].update(name="Xavier", compute_capability="7.2")
    engine_meta_path(engine).write_text(json.dumps(meta))
    with pytest.raises(HardwareError) as err:
        EngineRunner(engine)
    assert "TensorRT 8.6.2.3 built it, this is TensorRT 10.3.0.30" in err.value.problem
    assert "built for Xavier (compute 7.2), this is Fake Orin (compute 8.7)" in err.value.problem
    assert "build-engine" in str(err.value.fix) and err.value.exit_code == 3


def test_metadata_of_another_build_is_ignored(built):
    _, _, engine = built
    meta = json.loads(engine_meta_path(engine).read_text())
    meta.update(engine_sha256="0" * 64, tensorrt={"version": "8.6.2.3", "api_generation": 8})
    engine_meta_path(engine).write_text(json.dumps(meta))
    with EngineRunner(engine) as runner:  # the stale metadata would claim TensorRT 8.6; it is not trusted
        assert runner.meta is None


def test_engine_without_metadata_from_another_version_is_explained_not_crashed(built, monkeypatch):
    _, _, engine = built
    engine_meta_path(engine).unlink()
    install(monkeypatch, 11)  # the same plan file, now on TensorRT 11
    with pytest.raises(HardwareError, match=r"built by another TensorRT version.*TensorRT said: .*not compatible"):
        EngineRunner(engine)


def test_compare_passes_on_matching_outputs_and_fails_on_drift(built, tiny_onnx, monkeypatch):
    world, _, engine = built
    result = compare_engine(tiny_onnx, engine, batch=2)
    assert result["passed"] and result["precision"] == "fp32"
    (out,) = result["outputs"]
    assert out["name"] == "features" and out["shape"] == [2, 4, 8, 8] and out["max_abs"] < 1e-5
    world.output_offset = 0.05
    drifted = compare_engine(tiny_onnx, engine, batch=2)
    assert not drifted["passed"] and drifted["outputs"][0]["max_abs"] == pytest.approx(0.05, rel=1e-3)
    assert compare_engine(tiny_onnx, engine, batch=2, atol=0.06)["passed"]


def test_compare_arrays_statistics():
    ref = np.array([1.0, -2.0, 0.0, 4.0])
    got = ref + np.array([0.0, 0.1, 0.0, -0.4])
    row = compare_arrays("y", ref, got, atol=0.05, rtol=0.05)
    assert row["max_abs"] == pytest.approx(0.4) and row["max_rel"] == pytest.approx(0.1)
    assert row["mismatch_fraction"] == pytest.approx(0.25) and not row["passed"]  # 0.1 <= 0.15 passes, 0.4 > 0.25
    assert compare_arrays("y", ref, np.full(4, np.nan), 1, 1)["passed"] is False
    assert compare_arrays("y", ref, ref[:2], 1, 1)["passed"] is False
    with pytest.raises(ModelError, match="differ from the ONNX outputs"):
        compare_outputs({"a": ref}, {"b": ref}, 1, 1)


def test_trt_profile_reports_latency_transfers_and_layers(built):
    _, _, engine = built
    result = profile_model(engine, None, batch=4, runs=5, warmup=1, state=no_jetson)
    assert result["backend"] == "trt" and result["tensorrt"] == "10.3.0.30" and result["precision"] == "fp32"
    assert result["latency"]["runs"] == 5 and result["latency"]["batch"] == 4
    assert set(result["transfers"]) == {"h2d", "compute", "d2h"}
    assert result["transfers"]["compute"]["mean_ms"] == pytest.approx(0.125)
    assert [layer["name"] for layer in result["layers"]] == ["layer0", "layer1"]
