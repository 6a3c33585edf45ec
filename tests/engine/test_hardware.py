"""Real TensorRT on a real CUDA device: build, run, compare and profile a tiny engine.

Runs only where `tensorrt` imports as TensorRT and a CUDA device is usable
(a Jetson, or an x86 machine with an NVIDIA GPU); skipped with the reason
everywhere else. Run with `pytest -m hardware tests/engine/test_hardware.py`.
"""

from __future__ import annotations

import numpy as np
import pytest

from patrol_deploy.backends.cuda import load_cuda
from patrol_deploy.backends.trt import TrtVersion, load_tensorrt
from patrol_deploy.backends.trt_builder import build_engine
from patrol_deploy.backends.trt_options import BatchProfile, BuildOptions
from patrol_deploy.backends.trt_runner import EngineRunner
from patrol_deploy.engine.compare import compare_engine
from patrol_deploy.engine.profile import profile_model
from patrol_deploy.errors import PatrolError
from tests.engine.conftest import make_onnx

pytestmark = pytest.mark.hardware


def _device_or_reason() -> tuple[TrtVersion | None, str]:
    try:
        _, version = load_tensorrt("running the hardware tests")
        load_cuda()
    except PatrolError as exc:
        return None, f"needs TensorRT and a CUDA device: {exc.problem}"
    return version, ""


VERSION, REASON = _device_or_reason()
requires_device = pytest.mark.skipif(VERSION is None, reason=REASON or "no TensorRT device")


@requires_device
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_build_run_compare_profile_a_tiny_engine(tmp_path, precision):
    onnx_path = make_onnx(tmp_path / "edge.onnx")
    engine = tmp_path / "edge.engine"
    meta = build_engine(onnx_path, engine, BuildOptions(precision=precision, batch=BatchProfile(1, 2, 4),
                                                        workspace_mib=256, timing_cache=tmp_path / "timing.cache"))
    assert engine.stat().st_size > 0 and (tmp_path / "timing.cache").stat().st_size > 0
    assert meta["tensorrt"]["version"] == str(VERSION) and meta["layers"] is not None
    comparison = compare_engine(onnx_path, engine, batch=3)
    assert comparison["passed"], comparison
    result = profile_model(engine, "trt", batch=2, runs=20, warmup=5)
    assert result["latency"]["mean_ms"] > 0 and result["transfers"]["compute"]["mean_ms"] > 0
    assert result["layers"], "IProfiler reported no layers"


@requires_device
def test_engine_rejects_batches_outside_its_profile_and_runs_inside(tmp_path):
    onnx_path = make_onnx(tmp_path / "edge.onnx")
    engine = tmp_path / "edge.engine"
    build_engine(onnx_path, engine, BuildOptions(precision="fp32", batch=BatchProfile(1, 2, 4)))
    with EngineRunner(engine) as runner:
        outputs, times = runner.run({"input": np.ones((4, 3, 8, 8), np.float32)})
        assert outputs["features"].shape == (4, 4, 8, 8) and times.compute_ms > 0
        with pytest.raises(PatrolError, match="optimization profile"):
            runner.run({"input": np.ones((5, 3, 8, 8), np.float32)})


@requires_device
def test_int8_path_of_this_version(tmp_path):
    calib = tmp_path / "calib.npz"
    np.savez(calib, input=np.random.default_rng(0).standard_normal((16, 3, 8, 8)).astype(np.float32))
    if VERSION is not None and VERSION.generation == 8:  # implicit calibration from the .npz, cache written
        onnx_path, options = make_onnx(tmp_path / "edge.onnx"), BuildOptions(precision="int8", calib=calib)
    else:  # 10.x on the GPU and 11.x: explicit Q/DQ
        onnx_path, options = make_onnx(tmp_path / "q.onnx", qdq=True, opset=19), BuildOptions(precision="int8")
    meta = build_engine(onnx_path, tmp_path / "int8.engine", options)
    assert meta["precision"] == "int8"
    if meta["calibration"]:
        assert (tmp_path / "int8.engine.calib").stat().st_size > 0
    assert compare_engine(onnx_path, tmp_path / "int8.engine", batch=1, atol=0.5, rtol=0.5)["outputs"]
