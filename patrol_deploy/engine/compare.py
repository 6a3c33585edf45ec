"""Compare a TensorRT engine with its ONNX model on the same inputs (the Polygraphy idea, without Polygraphy).

ONNX Runtime on the CPU is the reference. Each output is checked element-wise
with |engine - onnx| <= atol + rtol * |onnx| and reported with its maximum
absolute and relative errors. Default tolerances follow the engine's
precision from its metadata: reduced precision needs looser bounds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from patrol_deploy.engine.cuda import CudaBackend
from patrol_deploy.engine.inputs import load_inputs, random_inputs
from patrol_deploy.engine.onnxinfo import read_onnx
from patrol_deploy.errors import ModelError
from patrol_deploy.lazy import require

# (atol, rtol) per engine precision.
TOLERANCES = {"fp32": (1e-4, 1e-3), "fp16": (1e-2, 1e-2), "int8": (1e-1, 1e-1), "best": (1e-1, 1e-1)}


def compare_arrays(name: str, reference: np.ndarray, actual: np.ndarray, atol: float, rtol: float) -> dict[str, Any]:
    """Error statistics of `actual` against `reference` and whether every element is within tolerance."""
    if reference.shape != actual.shape:
        return {"name": name, "shape": list(reference.shape), "actual_shape": list(actual.shape), "passed": False,
                "max_abs": None, "max_rel": None, "mean_abs": None, "mismatch_fraction": 1.0}
    ref, act = reference.astype(np.float64), actual.astype(np.float64)
    diff = np.abs(act - ref)
    bad = ~(diff <= atol + rtol * np.abs(ref))  # NaN counts as a mismatch
    rel = diff / np.maximum(np.abs(ref), np.finfo(np.float32).tiny)
    return {"name": name, "shape": list(ref.shape), "passed": not bool(bad.any()),
            "max_abs": float(diff.max()) if diff.size else 0.0, "max_rel": float(rel.max()) if rel.size else 0.0,
            "mean_abs": float(diff.mean()) if diff.size else 0.0, "mismatch_fraction": float(bad.mean())}


def compare_outputs(reference: dict[str, np.ndarray], actual: dict[str, np.ndarray], atol: float,
                    rtol: float) -> dict[str, Any]:
    """Per-output comparison; an output missing on either side is an error, not a silent skip."""
    if set(reference) != set(actual):
        raise ModelError(f"the engine's outputs {sorted(actual)} differ from the ONNX outputs {sorted(reference)}.",
                         "rebuild the engine from this ONNX file")
    outputs = [compare_arrays(n, reference[n], actual[n], atol, rtol) for n in reference]
    return {"passed": all(o["passed"] for o in outputs), "atol": atol, "rtol": rtol, "outputs": outputs}


def run_onnxruntime(onnx_path: Path, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The reference outputs: ONNX Runtime's CPU provider."""
    ort = require("onnxruntime", "running the ONNX reference")
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, feeds), strict=True))


def compare_engine(onnx_path: str | Path, engine_path: str | Path, batch: int = 1, seed: int = 0,
                   atol: float | None = None, rtol: float | None = None, inputs: str | Path | None = None,
                   cuda: CudaBackend | None = None) -> dict[str, Any]:
    """Run ONNX Runtime and the engine on the same inputs (seeded random or from `inputs` .npz) and compare."""
    from patrol_deploy.engine.runner import EngineRunner

    info = read_onnx(onnx_path)
    feeds = load_inputs(inputs, info.inputs, batch) if inputs else random_inputs(info.inputs, batch, seed)
    reference = run_onnxruntime(info.path, feeds)
    with EngineRunner(engine_path, cuda) as runner:
        actual, _ = runner.run(feeds)
        precision = (runner.meta or {}).get("precision", "fp32")
    default_atol, default_rtol = TOLERANCES.get(precision, TOLERANCES["fp32"])
    result = compare_outputs(reference, actual, default_atol if atol is None else atol,
                             default_rtol if rtol is None else rtol)
    return {"onnx": str(info.path), "engine": str(engine_path), "precision": precision, "batch": batch,
            "inputs": str(inputs) if inputs else f"random normal, seed {seed}", **result}
