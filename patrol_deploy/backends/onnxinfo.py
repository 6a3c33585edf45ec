"""What the engine tools need to know about an ONNX file, read from the graph itself.

The opset (checked against the TensorRT parser before parsing), the graph
inputs and outputs with their shapes (a dynamic batch axis is -1), whether
the model carries Q/DQ nodes (explicit INT8) or float16 tensors (AutoCast
FP16), and the node list (to name the node a parser error points at).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from patrol_deploy.errors import DataError
from patrol_deploy.lazy import require

QDQ_OPS = frozenset({"QuantizeLinear", "DequantizeLinear"})


@dataclass(frozen=True)
class TensorInfo:
    """A graph input or output: name, shape (-1 where not fixed) and numpy dtype name."""

    name: str
    shape: tuple[int, ...]
    dtype: str

    @property
    def dynamic_axes(self) -> list[int]:
        return [i for i, d in enumerate(self.shape) if d < 0]

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}


@dataclass(frozen=True)
class OnnxInfo:
    """Summary of one ONNX model file."""

    path: Path
    opset: int
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    nodes: tuple[tuple[str, str], ...]  # (name, op_type) in graph order
    has_qdq: bool
    has_fp16: bool

    @property
    def precision(self) -> str:
        """The precision the model itself carries: 'int8' (Q/DQ), 'fp16' (float16 tensors) or 'fp32'."""
        return "int8" if self.has_qdq else "fp16" if self.has_fp16 else "fp32"

    def node_label(self, index: int) -> str:
        """"node 3 'conv3' (Conv)" for the node index a parser error reports, or '' when out of range."""
        if 0 <= index < len(self.nodes):
            name, op = self.nodes[index]
            return f"node {index} '{name or '<unnamed>'}' ({op})"
        return ""


def read_onnx(path: str | Path) -> OnnxInfo:
    """Read `path` (external weights are not loaded) into an OnnxInfo, with a clear error if unreadable."""
    onnx = require("onnx", "reading ONNX models")
    path = Path(path)
    if not path.is_file():
        raise DataError(f"ONNX file '{path}' does not exist.", "pass the edge.onnx written by `patrol-deploy export`")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf raises its own DecodeError types
        raise DataError(f"'{path}' is not a readable ONNX model: {exc}.",
                        "re-export it with `patrol-deploy export`") from exc
    if not model.opset_import or not model.graph.output:  # an empty file parses as an empty ModelProto
        raise DataError(f"'{path}' is not an ONNX model (empty, or no graph outputs and no opset).",
                        "re-export it with `patrol-deploy export`")
    graph = model.graph
    initializers = {t.name for t in graph.initializer}
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    fp16 = onnx.TensorProto.FLOAT16
    has_fp16 = (any(t.data_type == fp16 for t in graph.initializer)
                or any(_elem_type(v) == fp16 for v in [*graph.input, *graph.output, *graph.value_info])
                or any(n.op_type == "Cast" and any(a.name == "to" and a.i == fp16 for a in n.attribute)
                       for n in graph.node))
    return OnnxInfo(
        path=path,
        opset=int(opset),
        inputs=tuple(_tensor(onnx, v) for v in graph.input if v.name not in initializers),
        outputs=tuple(_tensor(onnx, v) for v in graph.output),
        nodes=tuple((n.name, n.op_type) for n in graph.node),
        has_qdq=any(n.op_type in QDQ_OPS for n in graph.node),
        has_fp16=has_fp16,
    )


def _elem_type(value: Any) -> int:
    return int(value.type.tensor_type.elem_type)


def _tensor(onnx: Any, value: Any) -> TensorInfo:
    dims = value.type.tensor_type.shape.dim
    shape = tuple(int(d.dim_value) if d.HasField("dim_value") else -1 for d in dims)
    dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(_elem_type(value))).name
    return TensorInfo(value.name, shape, dtype)
