"""trtexec command lines per TensorRT version (8.6, 10.3, 11)."""

from __future__ import annotations

from pathlib import Path

import pytest

from patrol_deploy.backends.onnxinfo import read_onnx
from patrol_deploy.backends.trt import TrtVersion
from patrol_deploy.backends.trt_options import BatchProfile, BuildOptions
from patrol_deploy.engine.trtexec import trtexec_command
from patrol_deploy.errors import ConfigError
from tests.engine.conftest import make_onnx


def command(onnx_path: Path, version: str, **options) -> dict:
    return trtexec_command(read_onnx(onnx_path), Path("/run/edge.engine"), BuildOptions(**options),
                           TrtVersion.parse(version))


def test_trt10_fp16_dynamic_batch_dla_and_profiling_flags(tiny_onnx):
    argv = command(tiny_onnx, "10.3", precision="fp16", batch=BatchProfile(1, 4, 8), workspace_mib=1024,
                   dla_core=0, timing_cache=Path("/run/timing.cache"))["argv"]
    assert argv[:3] == ["/usr/src/tensorrt/bin/trtexec", f"--onnx={tiny_onnx}", "--saveEngine=/run/edge.engine"]
    assert {"--minShapes=input:1x3x8x8", "--optShapes=input:4x3x8x8", "--maxShapes=input:8x3x8x8",
            "--memPoolSize=workspace:1024", "--fp16", "--useDLACore=0", "--allowGPUFallback",
            "--timingCacheFile=/run/timing.cache", "--profilingVerbosity=detailed",
            "--exportLayerInfo=/run/edge.engine.layers.json", "--separateProfileRun", "--dumpProfile",
            "--exportProfile=/run/edge.engine.profile.json"} <= set(argv)
    assert "--int8" not in argv and not any(a.startswith("--workspace=") for a in argv)


def test_trt86_int8_calibrates_from_a_cache(tiny_onnx, calib_npz):
    result = command(tiny_onnx, "8.6", precision="int8", calib=calib_npz)
    assert "--int8" in result["argv"] and "--calib=/run/edge.engine.calib" in result["argv"]
    assert "--fp16" not in result["argv"]
    assert "calibrates only from a cache" in result["notes"][0]  # the cache does not exist yet
    assert result["api_generation"] == 8


def test_trt10_gpu_int8_needs_qdq_and_then_has_no_calib(tmp_path, calib_npz):
    with pytest.raises(ConfigError, match="deprecates implicit INT8"):
        command(make_onnx(tmp_path / "f.onnx"), "10.3", precision="int8", calib=calib_npz)
    argv = command(make_onnx(tmp_path / "q.onnx", qdq=True, opset=19), "10.3", precision="int8")["argv"]
    assert "--int8" in argv and not any(a.startswith("--calib") for a in argv)


def test_trt11_has_no_precision_flags(tmp_path):
    result = command(make_onnx(tmp_path / "q.onnx", qdq=True, opset=19), "11", precision="best")
    flags = set(result["argv"])
    assert not flags & {"--fp16", "--int8", "--best", "--stronglyTyped"}
    assert not any(a.startswith("--calib") for a in flags)
    assert result["precision"] == "int8" and "strongly typed" in result["notes"][-1]


def test_static_batch_gets_no_shape_flags_and_opset_is_checked(tmp_path):
    static = make_onnx(tmp_path / "s.onnx", batch=1)
    assert not any("Shapes=" in a for a in command(static, "10.3")["argv"])
    with pytest.raises(ConfigError, match="opset 19"):
        command(make_onnx(tmp_path / "o.onnx", opset=19), "8.6")
