"""Tiny real ONNX models built with onnx.helper, for the engine tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper


def make_onnx(path: Path, *, batch: int | str = "batch", opset: int = 17, qdq: bool = False, fp16: bool = False,
              softmax: bool = False) -> Path:
    """input (B,3,8,8) -> Conv(4) -> Relu [-> Q/DQ] [-> Softmax] -> features; real weights, checked by onnx."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32) * 0.3, "W"),
             numpy_helper.from_array(rng.standard_normal(4).astype(np.float32) * 0.1, "B")]
    nodes = [helper.make_node("Conv", ["input", "W", "B"], ["c"], name="conv0", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"], name="relu0")]
    last = "r"
    if qdq:
        inits += [numpy_helper.from_array(np.array(0.05, np.float32), "scale"),
                  numpy_helper.from_array(np.array(0, np.int8), "zero")]
        nodes += [helper.make_node("QuantizeLinear", ["r", "scale", "zero"], ["q"], name="quant0"),
                  helper.make_node("DequantizeLinear", ["q", "scale", "zero"], ["dq"], name="dequant0")]
        last = "dq"
    if fp16:
        nodes += [helper.make_node("Cast", [last], ["h"], name="cast16", to=TensorProto.FLOAT16),
                  helper.make_node("Cast", ["h"], ["h32"], name="cast32", to=TensorProto.FLOAT)]
        last = "h32"
    if softmax:
        nodes.append(helper.make_node("Softmax", [last], ["s"], name="softmax0", axis=1))
        last = "s"
    nodes.append(helper.make_node("Identity", [last], ["features"], name="out"))
    graph = helper.make_graph(nodes, "tiny_edge",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, 3, 8, 8])],
                              [helper.make_tensor_value_info("features", TensorProto.FLOAT, [batch, 4, 8, 8])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


@pytest.fixture
def tiny_onnx(tmp_path: Path) -> Path:
    """Dynamic batch, float32, opset 17."""
    return make_onnx(tmp_path / "edge.onnx")


@pytest.fixture
def calib_npz(tmp_path: Path) -> Path:
    """20 calibration images (N,3,8,8) float32 under key 'input', as the calibration recipe writes."""
    path = tmp_path / "calib.npz"
    np.savez(path, input=np.random.default_rng(1).standard_normal((20, 3, 8, 8)).astype(np.float32))
    return path
