"""ONNX Runtime CPU profiling: it really runs here, so its latency statistics and per-node times are checked."""

from __future__ import annotations

import pytest

from patrol_deploy.engine.profile import guess_backend, latency_summary, ort_node_times, profile_model
from patrol_deploy.errors import ConfigError


def no_jetson() -> dict:
    """platform_state off a Jetson."""
    return {"jetson": None, "warnings": []}


def test_latency_summary_statistics():
    summary = latency_summary([1.0, 2.0, 3.0, 4.0, 10.0], batch=4)
    assert summary["runs"] == 5 and summary["mean_ms"] == pytest.approx(4.0)
    assert summary["p50_ms"] == pytest.approx(3.0) and summary["min_ms"] == 1.0 and summary["max_ms"] == 10.0
    assert summary["p90_ms"] == pytest.approx(7.6) and summary["p99_ms"] == pytest.approx(9.76)
    assert summary["throughput_per_s"] == pytest.approx(1000.0)  # 4 images per 4 ms


def test_ort_node_times_skip_warmup_runs():
    def run(ts, dur):
        return {"cat": "Session", "name": "model_run", "ts": ts, "dur": dur}

    def node(name, ts, dur, op):
        return {"cat": "Node", "name": f"{name}_kernel_time", "ts": ts, "dur": dur, "args": {"op_name": op}}

    events = [run(0, 100), node("conv", 10, 90, "Conv"),  # warm-up run: ignored
              run(200, 50), node("conv", 210, 30, "Conv"), node("relu", 240, 10, "Relu"),
              run(300, 50), node("conv", 310, 10, "Conv"), node("relu", 330, 10, "Relu")]
    layers = ort_node_times(events, warmup=1)
    assert [(x["name"], x["op"], x["mean_ms"]) for x in layers] == [("conv", "Conv", 0.02), ("relu", "Relu", 0.01)]
    assert [round(x["percent"], 1) for x in layers] == [66.7, 33.3]


def test_profile_ort_on_a_real_model(tiny_onnx):
    result = profile_model(tiny_onnx, None, batch=2, runs=20, warmup=2, state=no_jetson)
    assert result["backend"] == "ort" and result["provider"] == "CPUExecutionProvider"
    latency = result["latency"]
    assert latency["runs"] == 20 and latency["batch"] == 2
    assert 0 < latency["min_ms"] <= latency["p50_ms"] <= latency["p90_ms"] <= latency["p99_ms"] <= latency["max_ms"]
    assert latency["throughput_per_s"] == pytest.approx(2000.0 / latency["mean_ms"])
    assert result["layers"] and all(layer["mean_ms"] > 0 for layer in result["layers"])
    assert {layer["op"] for layer in result["layers"]} & {"Conv", "FusedConv"}
    assert sum(layer["percent"] for layer in result["layers"]) == pytest.approx(100)
    assert result["platform"] == {"jetson": None, "warnings": []}


def test_backend_guessing_and_argument_checks(tmp_path, tiny_onnx):
    assert guess_backend(tiny_onnx) == "ort" and guess_backend(tmp_path / "e.plan") == "trt"
    assert guess_backend(tmp_path) == "torch"
    with pytest.raises(ConfigError, match="--backend"):
        guess_backend(tmp_path / "model.bin")
    with pytest.raises(ConfigError, match="--runs"):
        profile_model(tiny_onnx, "ort", batch=1, runs=0, warmup=0, state=no_jetson)
    with pytest.raises(ConfigError, match="unknown profile backend 'tvm'"):
        profile_model(tiny_onnx, "tvm", batch=1, runs=1, warmup=0, state=no_jetson)
