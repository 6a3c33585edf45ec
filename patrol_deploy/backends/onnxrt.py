"""ONNX Runtime on the CPU, torch-free: `cpu_session` (the loader) is the one place sessions are made (the
attacks' ONNX edge runner, the export and quantization checks, `compare` and `profile` all open them here);
`run` (the runner) runs named feeds."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from patrol_deploy.errors import ModelError
from patrol_deploy.lazy import require

PROVIDER = "CPUExecutionProvider"
FIX_REEXPORT = "re-create it with `patrol-deploy export` (or `patrol-deploy quantize`)"


def cpu_session(model: Any, threads: int | None = None, profile_prefix: str | Path | None = None) -> Any:
    """A session on ONNX Runtime's CPU provider for a ModelProto or a path; `threads` sets the intra-op threads
    (default: ONNX Runtime's choice), `profile_prefix` turns its per-node profiler on."""
    ort = require("onnxruntime", "running ONNX models on the CPU")
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if threads:
        opts.intra_op_num_threads = threads
    if profile_prefix is not None:
        opts.enable_profiling = True
        opts.profile_file_prefix = str(profile_prefix)
    source = str(model) if isinstance(model, str | Path) else model.SerializeToString()
    try:
        return ort.InferenceSession(source, sess_options=opts, providers=[PROVIDER])
    except Exception as exc:  # ORT's pybind errors (Fail, InvalidGraph, NotImplemented, ...) derive from Exception
        raise ModelError(f"ONNX Runtime cannot load the model: {exc}".rstrip() + ".", FIX_REEXPORT) from exc


def run(model: Any, feeds: dict[str, Any]) -> dict[str, Any]:
    """Every output of `model` (a path or ModelProto) for named numpy `feeds`, on ONNX Runtime's CPU provider."""
    session = cpu_session(model)
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, feeds), strict=True))
