"""Export the edge and the cloud partition of a model folder to ONNX, checked against torch on real images.

Each partition goes through the TorchScript exporter (`dynamo=False`: one flat
graph at exactly the opset asked for, which TensorRT 8.x-10.x parse), onnxsim
(kept unsimplified, with a SimplifyWarning, where simplification fails), the
ONNX checker, and a comparison with the torch module on calibration images in
ONNX Runtime (a breach of export.atol / export.rtol is an error). Names,
shapes, normalization, split and task go into the ONNX metadata and a sidecar
JSON beside each file, so the device side needs nothing else.
"""

from __future__ import annotations

import io
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from patrol_deploy.backends.onnxrt import cpu_session
from patrol_deploy.checkpoint import Checkpoints
from patrol_deploy.config import ExportConfig
from patrol_deploy.deployment.calibration import CalibrationRecipe, calibration_array
from patrol_deploy.deployment.onnx_runner import (
    graph_inputs,
    opset_version,
    run_session,
    value_spec,
    write_metadata,
)
from patrol_deploy.errors import ModelError
from patrol_deploy.lazy import require
from patrol_deploy.modelio import META_FILE, MODEL_FILE, ModelMeta, load_model_dir
from patrol_deploy.models.blocknet import ReIDHead
from patrol_deploy.progress import status
from patrol_deploy.relocate import DataLocation
from patrol_deploy.runfolder import RunFolder, atomic_path, read_marked_json, sha256, write_json
from patrol_deploy.split import CloudNet, cut
from patrol_deploy.stages import run_stage

STAGE = "export"
EDGE_INPUT = "input"
EDGE_OUTPUT = "features"
CHECK_IMAGES = 32
SIDECAR_FORMAT = "patrol-deploy-onnx"
SIDECAR_VERSION = 1


class SimplifyWarning(UserWarning):
    """onnxsim could not simplify a graph; the unsimplified (still checked) graph was kept."""


@dataclass
class ExportResult:
    """The exported partitions and what their sidecars say."""

    edge: Path
    cloud: Path
    edge_info: dict[str, Any]
    cloud_info: dict[str, Any]

    def files(self) -> list[Path]:
        return [self.edge, sidecar_path(self.edge), self.cloud, sidecar_path(self.cloud)]

    def as_dict(self) -> dict[str, Any]:
        return {"edge": str(self.edge), "cloud": str(self.cloud), "edge_info": self.edge_info,
                "cloud_info": self.cloud_info}


class _EmbeddingCloud(nn.Module):
    """The re-ID cloud as deployed: it returns the retrieval embedding (BN-neck), not the ID logits."""

    def __init__(self, cloud: CloudNet, head: ReIDHead) -> None:
        super().__init__()
        self.cloud = cloud
        self.head = head

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.head.embed(self.cloud.features(z))


def sidecar_path(onnx_path: str | Path) -> Path:
    """`edge.onnx` -> `edge.json`, `edge.int8.onnx` -> `edge.int8.json`."""
    return Path(onnx_path).with_suffix(".json")


def read_sidecar(onnx_path: str | Path) -> dict[str, Any]:
    """The sidecar JSON of an exported or quantized ONNX file."""
    path = sidecar_path(onnx_path)
    if not path.is_file():
        raise ModelError(f"'{onnx_path}' has no sidecar {path.name} (names, shapes, normalization, data).",
                         "export it with `patrol-deploy export MODEL_DIR`, or pass the model folder instead")
    return read_marked_json(path, SIDECAR_FORMAT, ModelError, "a patrol-deploy sidecar",
                            "re-run `patrol-deploy export`")


def model_data(meta: ModelMeta, model_dir: Path) -> tuple[dict[str, Any], int]:
    """The data config and seed that trained the model (to reload its exact calibration split)."""
    data, seed = meta.extra.get("data"), meta.extra.get("seed")
    if not isinstance(data, dict) or not isinstance(seed, int):
        raise ModelError(f"{model_dir / META_FILE} does not record the data it was trained on (extra.data/seed).",
                         "re-create the model folder with `patrol-deploy train` or `patrol-deploy patrol`")
    return data, seed


def normalization(meta: ModelMeta) -> dict[str, Any]:
    """How raw pixels become the edge input: the device must apply exactly this."""
    return {
        "layout": "NCHW", "channels": meta.input_shape[0], "pixel_range": [0.0, 1.0], "pixel_scale": 1.0 / 255.0,
        "mean": list(meta.mean), "std": list(meta.std), "formula": "input = (pixel / 255 - mean[c]) / std[c]",
        "input_range": [[(0.0 - m) / s, (1.0 - m) / s] for m, s in zip(meta.mean, meta.std, strict=True)],
    }


def stage_config(model_dir: Path, cfg: ExportConfig, check_images: int) -> dict[str, Any]:
    """What decides the export: the export settings and the exact model files."""
    return {"export": cfg.model_dump(mode="json"), "check_images": check_images,
            "model_sha256": sha256(model_dir / MODEL_FILE), "meta_sha256": sha256(model_dir / META_FILE)}


def export_model_dir(model_dir: str | Path, run: RunFolder, cfg: ExportConfig | None = None,
                     check_images: int = CHECK_IMAGES, location: DataLocation = DataLocation()) -> ExportResult:
    """Export a model folder's edge and cloud into RUN/export/ and record the stage (reused when unchanged).

    `location` points the data recorded in model.json (for the check images) at this machine's copy.
    """
    cfg = cfg or ExportConfig()
    model_dir = Path(model_dir)
    model, meta = load_model_dir(model_dir)  # first: a clear error for a folder that is not a model folder
    conf = stage_config(model_dir, cfg, check_images)
    data, seed = model_data(meta, model_dir)
    if location.changes(data):  # other images than the recorded config's: another check
        conf["data_changes"] = location.changes(data)
    folder = run.path(STAGE)

    def reuse() -> ExportResult:
        edge_path, cloud_path = folder / "edge.onnx", folder / "cloud.onnx"
        return ExportResult(edge_path, cloud_path, read_sidecar(edge_path), read_sidecar(cloud_path))

    def build(_: Checkpoints) -> tuple[ExportResult, list[Path]]:
        x = torch.from_numpy(calibration_array(location.data(data), seed, CalibrationRecipe(images=check_images,
                                                                                          seed=seed)))
        edge, cloud = cut(model, meta.split)
        base = {"format": SIDECAR_FORMAT, "sidecar_version": SIDECAR_VERSION, "precision": "fp32",
                "split": meta.split, "task": meta.task, "num_classes": meta.num_classes, "model": meta.model,
                "source": {"model_dir": str(model_dir.resolve()), "model_sha256": conf["model_sha256"],
                           "model_dir_relative": os.path.relpath(model_dir.resolve(), folder.resolve()),
                           "data": data, "seed": seed}}
        status(f"export: edge and cloud of {model_dir} at split {meta.split}, opset {cfg.opset}")
        edge_info = export_partition(edge, x, folder / "edge.onnx", cfg, EDGE_INPUT, EDGE_OUTPUT,
                                     {**base, "partition": "edge", "normalization": normalization(meta)})
        with torch.no_grad():
            z = edge.eval()(x)
        head = cloud.head
        deployed: nn.Module = _EmbeddingCloud(cloud, head) if isinstance(head, ReIDHead) else cloud
        cloud_info = export_partition(deployed, z, folder / "cloud.onnx", cfg, EDGE_OUTPUT,
                                      "embedding" if isinstance(head, ReIDHead) else "logits",
                                      {**base, "partition": "cloud"})
        result = ExportResult(folder / "edge.onnx", folder / "cloud.onnx", edge_info, cloud_info)
        return result, result.files()

    return run_stage(run, STAGE, conf, label="export", seed=seed, reuse=reuse, build=build)


def export_partition(module: nn.Module, sample: torch.Tensor, path: Path, cfg: ExportConfig, input_name: str,
                     output_name: str, info: dict[str, Any]) -> dict[str, Any]:
    """Export, simplify, check and compare one partition; writes `path` and its sidecar; returns the sidecar."""
    onnx = require("onnx", "ONNX export")
    model = to_onnx(module, sample[:1], cfg.opset, cfg.dynamic_batch, input_name, output_name)
    partition = info.get("partition", path.stem)
    simplify_error = None
    if cfg.simplify:
        model, simplify_error = simplify(model, partition)
    try:
        onnx.checker.check_model(model, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise ModelError(f"the exported {partition} fails the ONNX checker: {str(exc).strip().splitlines()[0]}",
                         "try another --opset, or report the model's layers that the exporter mishandles") from exc
    check = compare_with_torch(model, module, sample, cfg, partition)
    info = {**info, "file": path.name, "opset": opset_version(model), "dynamic_batch": cfg.dynamic_batch,
            "inputs": [value_spec(v) for v in graph_inputs(model)],
            "outputs": [value_spec(v) for v in model.graph.output],
            "simplified": cfg.simplify and simplify_error is None, "simplify_error": simplify_error, "check": check}
    save_onnx(model, path, info)
    return info


def to_onnx(module: nn.Module, example: torch.Tensor, opset: int, dynamic_batch: bool, input_name: str,
            output_name: str) -> Any:
    """Trace `module` (in eval mode) to an in-memory ONNX ModelProto."""
    onnx = require("onnx", "ONNX export")
    buf = io.BytesIO()
    axes = {input_name: {0: "batch"}, output_name: {0: "batch"}} if dynamic_batch else None
    module.eval()
    try:
        with warnings.catch_warnings():  # dynamo=False is chosen; the comparison with torch checks the trace
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            torch.onnx.export(module, (example,), buf,  # type: ignore[arg-type]  # it takes file objects
                              dynamo=False, opset_version=opset, input_names=[input_name],
                              output_names=[output_name], dynamic_axes=axes, do_constant_folding=True)
    except Exception as exc:  # the exporter raises many types (SymbolicValueError, RuntimeError, ...)
        raise ModelError(f"torch.onnx.export failed at opset {opset}: {type(exc).__name__}: {exc}",
                         "try another --opset (17 for TensorRT 8.x, 19 for ModelOpt PTQ)") from exc
    finally:
        module.eval()  # the exporter restores the *top* module's mode recursively, which flips children to train
    return onnx.load_from_string(buf.getvalue())


def simplify(model: Any, partition: str = "model") -> tuple[Any, str | None]:
    """onnxsim's simplification, or the untouched model and the reason (with a SimplifyWarning) when it fails."""
    onnx = require("onnx", "ONNX export")
    work = onnx.ModelProto()
    work.CopyFrom(model)  # onnxsim may change its argument before it fails
    try:
        onnxsim = require("onnxsim", "ONNX simplification")
        simplified, ok = onnxsim.simplify(work)
        error = None if ok else "onnxsim's own check found that the simplified graph computes something else"
    except Exception as exc:  # MissingDependency, or whatever onnxsim's C++ core raises for a graph it cannot handle
        error = f"{type(exc).__name__}: {exc}"
    if error is None:
        return simplified, None
    warnings.warn(f"onnxsim could not simplify the {partition} ({error}); keeping the unsimplified graph",
                  SimplifyWarning, stacklevel=2)
    return model, error


def compare_with_torch(model: Any, module: nn.Module, x: torch.Tensor, cfg: ExportConfig,
                       partition: str = "model") -> dict[str, Any]:
    """Run the ONNX model in ONNX Runtime (CPU) and torch on x; ModelError if they differ beyond atol + rtol*|ref|."""
    ort = require("onnxruntime", "checking the export")
    with torch.no_grad():
        ref = module.eval()(x).float().numpy()
    got = run_session(cpu_session(model), x.numpy())
    diff = np.abs(got - ref)
    beyond = int((diff > cfg.atol + cfg.rtol * np.abs(ref)).sum())
    check = {"images": len(x), "runtime": f"onnxruntime {ort.__version__} CPU", "atol": cfg.atol, "rtol": cfg.rtol,
             "max_abs_error": float(diff.max()),
             "max_rel_error": float(diff.max() / max(float(np.abs(ref).max()), 1e-12)),  # relative to the output range
             "values_beyond_tolerance": beyond}
    if beyond:
        raise ModelError(
            f"the exported {partition} differs from torch on {beyond} of {diff.size} values (max abs error "
            f"{check['max_abs_error']:.3g}, max rel error {check['max_rel_error']:.3g}; "
            f"atol {cfg.atol}, rtol {cfg.rtol}).",
            "try another --opset or --no-simplify; raise the tolerances only if the difference is acceptable")
    return check


def save_onnx(model: Any, path: Path, info: dict[str, Any]) -> dict[str, Any]:
    """Write the model (with `info` as metadata) and its sidecar atomically; the sidecar also gets the file hash."""
    onnx = require("onnx", "ONNX export")
    write_metadata(model, info)
    with atomic_path(path) as tmp:
        onnx.save(model, str(tmp))
    info["sha256"] = sha256(path)
    write_json(sidecar_path(path), info)
    return info
