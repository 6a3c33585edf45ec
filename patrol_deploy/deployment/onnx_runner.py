"""ONNX files on the CPU (load and validate them, read their patrol-deploy metadata) and the torch adapters over
the runtimes of backends/: a deployed edge as an EdgeRunner for the attacks and the utility evaluation.

`OnnxEdgeRunner` serves an exported edge (FP32, FP16 or Q/DQ INT8) through
ONNX Runtime, `EngineEdgeRunner` a TensorRT engine; so the privacy gate
measures the model that is deployed, not its float original.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from patrol_deploy.attacks.runner import EdgeRunner
from patrol_deploy.backends.onnxrt import FIX_REEXPORT, cpu_session
from patrol_deploy.errors import ModelError
from patrol_deploy.lazy import require
from patrol_deploy.models.blocknet import BlockNet
from patrol_deploy.split import cut

META_PREFIX = "patrol_deploy."


def load_onnx(path: str | Path) -> Any:
    """Load an ONNX model and run the ONNX checker; corrupt, truncated or empty files raise ModelError."""
    onnx = require("onnx", "reading ONNX models")
    from google.protobuf.message import DecodeError

    p = Path(path)
    if not p.is_file():
        raise ModelError(f"ONNX file '{p}' does not exist.", "pass the path of an .onnx file")
    if p.stat().st_size == 0:
        raise ModelError(f"ONNX file '{p}' is empty.", FIX_REEXPORT)
    try:
        model = onnx.load(str(p))
    except (DecodeError, ValueError, OSError) as exc:
        raise ModelError(f"'{p}' is not a readable ONNX model (corrupt or truncated): {exc}.", FIX_REEXPORT) from exc
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"'{p}' fails the ONNX checker (corrupt or truncated?): {first}", FIX_REEXPORT) from exc
    if not graph_inputs(model) or not model.graph.output:
        raise ModelError(f"'{p}' has no graph inputs or outputs (truncated?).", FIX_REEXPORT)
    return model


def graph_inputs(model: Any) -> list[Any]:
    """The real inputs of a graph (initializers listed as inputs by old exporters are left out)."""
    weights = {init.name for init in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in weights]


def opset_version(model: Any) -> int:
    """The default-domain ONNX opset of `model`."""
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def value_spec(value: Any) -> dict[str, Any]:
    """Name, shape (a string for a symbolic dimension) and element type of a graph input or output."""
    onnx = require("onnx", "reading ONNX models")
    tensor = value.type.tensor_type
    shape = [d.dim_param or (d.dim_value if d.HasField("dim_value") else "?") for d in tensor.shape.dim]
    dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type).name if tensor.elem_type else "unknown"
    return {"name": value.name, "shape": shape, "dtype": dtype}


def write_metadata(model: Any, info: dict[str, Any]) -> None:
    """Store `info` in the model's metadata_props, one JSON value per `patrol_deploy.<key>`, replacing old ones."""
    keep = [(p.key, p.value) for p in model.metadata_props if not p.key.startswith(META_PREFIX)]
    del model.metadata_props[:]
    for key, value in [*keep, *((META_PREFIX + k, json.dumps(v, default=str)) for k, v in info.items())]:
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value


def read_metadata(model: Any) -> dict[str, Any]:
    """The patrol-deploy metadata of a model (what `write_metadata` stored)."""
    return {p.key[len(META_PREFIX):]: json.loads(p.value) for p in model.metadata_props
            if p.key.startswith(META_PREFIX)}


def run_session(session: Any, x: np.ndarray) -> np.ndarray:
    """Run a single-input session on x (N, ...), in chunks of the model's batch size when that is fixed."""
    inp = session.get_inputs()[0]
    want = [d if isinstance(d, int) else None for d in inp.shape]
    got = list(x.shape)
    if len(want) != len(got) or any(w is not None and w != g for w, g in zip(want[1:], got[1:], strict=True)):
        raise ModelError(f"input of shape {tuple(got)} does not fit the ONNX input '{inp.name}' {inp.shape}.",
                         "feed images preprocessed like the calibration data (see the model's sidecar JSON)")
    if len(x) == 0:
        raise ModelError("no images to run the ONNX model on.", "pass at least one image")
    dtype = np.float16 if inp.type == "tensor(float16)" else np.float32
    chunk = want[0] or len(x)
    outs = [session.run(None, {inp.name: x[i:i + chunk].astype(dtype)})[0] for i in range(0, len(x), chunk)]
    return np.concatenate(outs).astype(np.float32)


class OnnxEdgeRunner:
    """An exported edge run by ONNX Runtime on the CPU; `torch_module` (the float edge) serves gradients."""

    differentiable = False

    def __init__(self, onnx_path: str | Path, torch_module: nn.Module, name: str | None = None,
                 threads: int | None = None) -> None:
        model = load_onnx(onnx_path)
        self.path = Path(onnx_path)
        self.name = name or self.path.stem
        self.metadata = read_metadata(model)
        self.torch_module = torch_module.eval()
        self.session = cpu_session(model, threads)

    @torch.no_grad()
    def features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(run_session(self.session, x.detach().float().cpu().numpy()))


class EngineEdgeRunner:
    """A TensorRT engine as an EdgeRunner (target features only; gradients from the float torch edge)."""

    differentiable = False

    def __init__(self, engine: Path, torch_module: torch.nn.Module) -> None:
        from patrol_deploy.backends.trt_runner import EngineRunner  # TensorRT and CUDA: imported on use

        self.name = f"TensorRT {engine.name}"
        self.torch_module = torch_module.eval()
        self.runner = EngineRunner(engine)
        self.input_name = self.runner.input_specs()[0].name

    @torch.no_grad()
    def features(self, x: torch.Tensor) -> torch.Tensor:
        outputs, _ = self.runner.run({self.input_name: x.detach().float().cpu().numpy()})
        return torch.from_numpy(np.asarray(next(iter(outputs.values())), dtype=np.float32))


class RunnerBlock(nn.Module):
    """A module whose forward is an EdgeRunner's features (no gradients), to drop into a BlockNet."""

    def __init__(self, runner: EdgeRunner) -> None:
        super().__init__()
        self.runner = runner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.runner.features(x).to(x.device)


def with_edge_runner(model: BlockNet, split: str, runner: EdgeRunner) -> BlockNet:
    """`model` with its edge replaced by `runner` (cloud blocks and head shared), for `training.evaluate`."""
    _, cloud = cut(model, split)
    return BlockNet(OrderedDict([("edge", RunnerBlock(runner)), *cloud.blocks.items()]), cloud.head).eval()
