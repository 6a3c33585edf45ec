"""Compare a TensorRT engine, or a second ONNX model, with an ONNX model on the same inputs (the Polygraphy idea,
without Polygraphy).

ONNX Runtime on the CPU is the reference. Each output is checked element-wise
with |candidate - onnx| <= atol + rtol * |onnx| and reported with its maximum
absolute and relative errors. Default tolerances follow the candidate's
precision (an engine's metadata, or the ONNX graph: Q/DQ is INT8): reduced
precision needs looser bounds. Two ONNX models (e.g. the float edge and its
Q/DQ version) are both run in ONNX Runtime, so no TensorRT is needed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from patrol_deploy.backends import onnxrt
from patrol_deploy.backends.cuda import CudaBackend
from patrol_deploy.backends.inputs import default_batch, load_inputs, random_inputs, with_input_shapes
from patrol_deploy.backends.onnxinfo import read_onnx
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
        raise ModelError(f"the compared model's outputs {sorted(actual)} differ from the ONNX outputs "
                         f"{sorted(reference)}.", "compare an engine or ONNX model made from this ONNX file")
    outputs = [compare_arrays(n, reference[n], actual[n], atol, rtol) for n in reference]
    return {"passed": all(o["passed"] for o in outputs), "atol": atol, "rtol": rtol, "outputs": outputs}


def is_onnx(path: str | Path) -> bool:
    return Path(path).suffix.lower() == ".onnx"


def compare_engine(onnx_path: str | Path, engine_path: str | Path, batch: int | None = None, seed: int = 0,
                   atol: float | None = None, rtol: float | None = None, inputs: str | Path | None = None,
                   cuda: CudaBackend | None = None,
                   input_shapes: dict[str, tuple[int, ...]] | None = None) -> dict[str, Any]:
    """Run ONNX Runtime and the engine (or, for a `.onnx` path, a second ONNX model in ONNX Runtime) on the same
    inputs (seeded random or from `inputs` .npz) and compare; `input_shapes` fixes dynamic axes."""
    info = read_onnx(onnx_path)
    specs = with_input_shapes(info.inputs, input_shapes or {})
    batch = default_batch(specs, batch)
    feeds = load_inputs(inputs, specs, batch) if inputs else random_inputs(specs, batch, seed)
    reference = onnxrt.run(info.path, feeds)
    if is_onnx(engine_path):
        candidate = read_onnx(engine_path)
        actual, precision = onnxrt.run(candidate.path, feeds), candidate.precision
        runtime = f"onnxruntime {require('onnxruntime').__version__} CPU"
    else:
        from patrol_deploy.backends.trt_runner import EngineRunner

        with EngineRunner(engine_path, cuda) as runner:
            actual, _ = runner.run(feeds)
            precision = (runner.meta or {}).get("precision", "fp32")
            runtime = f"TensorRT {runner.version}"
    default_atol, default_rtol = TOLERANCES.get(precision, TOLERANCES["fp32"])
    result = compare_outputs(reference, actual, default_atol if atol is None else atol,
                             default_rtol if rtol is None else rtol)
    return {"onnx": str(info.path), "engine": str(engine_path), "runtime": runtime, "precision": precision,
            "batch": batch, "inputs": str(inputs) if inputs else f"random normal, seed {seed}", **result}
