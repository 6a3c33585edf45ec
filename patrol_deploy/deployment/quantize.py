"""Quantize the exported edge with NVIDIA ModelOpt: INT8 Q/DQ (ONNX or torch route) or FP16 (AutoCast).

- ONNX route, INT8: `modelopt.onnx.quantization.quantize` (entropy calibration on
  the CPU) emits Q/DQ ONNX at opset >= 19 for TensorRT 10/11 explicit quantization.
- torch route, INT8: `modelopt.torch.quantization.quantize` with a calibration
  forward loop, exported as Q/DQ ONNX at opset 17 for TensorRT 8.x (JetPack 5).
- FP16: ModelOpt AutoCast on the FP32 ONNX (inputs and outputs stay float32).

Calibration images come from `patrol_deploy.deployment.calibration` (the calib split, never the
evaluation images). Every result is run in ONNX Runtime against the float edge
before it is written, and recorded in the run folder with a sidecar JSON.
"""

from __future__ import annotations

import contextlib
import copy
import io
import shutil
import sys
import tempfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch

from patrol_deploy.backends.onnxrt import cpu_session
from patrol_deploy.checkpoint import Checkpoints
from patrol_deploy.config import Config, ExportConfig
from patrol_deploy.deployment.calibration import INPUT_NAME, CalibrationRecipe, calibration_array, write_npz
from patrol_deploy.deployment.export import EDGE_INPUT, EDGE_OUTPUT, export_model_dir, read_sidecar, save_onnx, to_onnx
from patrol_deploy.deployment.onnx_runner import graph_inputs, load_onnx, opset_version, run_session, value_spec
from patrol_deploy.errors import ConfigError, DataError, ModelError, PatrolError
from patrol_deploy.lazy import require
from patrol_deploy.modelio import MODEL_FILE, load_model_dir
from patrol_deploy.progress import is_quiet, status
from patrol_deploy.relocate import DataLocation
from patrol_deploy.runfolder import RunFolder, sha256
from patrol_deploy.split import cut
from patrol_deploy.stages import run_stage
from patrol_deploy.targets import INT8_MIN_CHANNELS

STAGES = {"ptq": "quantize", "qat": "quantize/qat"}  # QAT's edge lives beside PTQ's, so re-runs reuse both
STAGE = STAGES["ptq"]


MODES = ("int8", "fp16")
ROUTES = ("onnx", "torch")
ONNX_PTQ_MIN_OPSET = 19  # ModelOpt's Q/DQ for INT8 (TensorRT 10/11)
TORCH_ROUTE_OPSET = 17  # the newest opset TensorRT 8.5/8.6 (JetPack 5) parse
COMPUTE_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")  # what INT8 is for; anything else may stay float
# Calibration methods each ModelOpt route offers (0.47): the ONNX route's `calibration_method` takes entropy or
# max (anything else silently means max there, so it is checked here); the torch route's INT8_DEFAULT_CFG
# calibrates with max.
CALIBRATION_METHODS = {"onnx": ("entropy", "max"), "torch": ("max",)}
DEFAULT_CALIBRATION = {"onnx": "entropy", "torch": "max"}
_STANDARD_DOMAINS = ("", "ai.onnx")


@dataclass
class QuantizeResult:
    """The quantized edge, its sidecar and what it says."""

    path: Path
    sidecar: Path
    info: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "sidecar": str(self.sidecar), "info": self.info}


def quantize_edge(source: str | Path, run: RunFolder, mode: str = "int8", route: str = "onnx",
                  calibration_images: int = 128, export_cfg: ExportConfig | None = None,
                  location: DataLocation = DataLocation(), calibration_method: str | None = None,
                  qat: Config | None = None) -> QuantizeResult:
    """Quantize a model folder (exported first) or an FP32 edge.onnx into RUN/quantize/edge.<mode>.onnx.

    `location` points the data recorded in the sidecar (for the calibration images) at this machine's copy.
    `calibration_method` (INT8): one of CALIBRATION_METHODS[route]; None: the route's default. With `qat` (the
    run's config: data, train, patrol, quantize.qat, export.opset) INT8 comes from quantization-aware
    fine-tuning of the torch model (patrol_deploy.deployment.qat) instead of post-training quantization.
    """
    if mode not in MODES or route not in ROUTES:
        raise ConfigError(f"unknown quantization mode/route '{mode}'/'{route}'.",
                          f"use a mode of {', '.join(MODES)} and a route of {', '.join(ROUTES)}")
    if qat is not None and mode != "int8":
        raise ConfigError(f"quantization-aware fine-tuning makes INT8, not {mode}.",
                          "use --mode int8 with --method qat")
    if qat is not None:  # QAT calibrates with max itself (torch route); the PTQ setting does not apply to it
        route, export_cfg, calibration_method = "torch", qat.export, None
    method = calibration_method_for(route, calibration_method)
    stage_name = STAGES["ptq" if qat is None else "qat"]
    fp32_path = _float_edge(Path(source), run, route if qat is None else "onnx", export_cfg or ExportConfig(),
                            location)
    fp32 = load_onnx(fp32_path)
    info = read_sidecar(fp32_path)
    if info.get("partition") != "edge" or info.get("precision") != "fp32":
        raise ModelError(f"'{fp32_path}' is the {info.get('precision')} {info.get('partition')} partition.",
                         "quantize the FP32 edge (RUN/export/edge.onnx) or pass the model folder")
    folder = run.path(stage_name)
    out = folder / f"edge.{mode}.onnx"
    conf: dict[str, Any] = {"mode": mode, "route": route, "calibration_images": calibration_images,
                            "float_sha256": sha256(fp32_path)}
    if mode == "int8":
        conf.update(method="qat" if qat is not None else "ptq", calibration_method=method)
    if qat is not None:
        from patrol_deploy.deployment.qat import training_config

        conf["qat"] = training_config(qat)
    if location.changes(info["source"]["data"]):  # other calibration images than the recorded config's
        conf["data_changes"] = location.changes(info["source"]["data"])
    seed = int(info["source"]["seed"])

    def build(_: Checkpoints) -> tuple[QuantizeResult, list[Path]]:
        recipe = CalibrationRecipe(images=calibration_images, seed=seed)
        calib = calibration_array(location.data(info["source"]["data"]), seed, recipe)
        check_calibration_fits(fp32, calib, fp32_path)
        npz = write_npz(folder / "calib.npz", calib)
        how = "quantization-aware fine-tuning" if qat is not None else f"the {route} route"
        status(f"quantize: {mode} via {how}, {len(calib)} calibration images")
        model, details, graph = _quantize(mode, route, fp32_path, fp32, info, calib, npz, method, qat)
        vs_float = compare_with_float(model, fp32, calib)
        result_info = {key: value for key, value in info.items() if key not in ("check", "sha256", "file")}
        result_info.update({
            "file": out.name, "precision": mode, "opset": opset_version(model),
            "inputs": [value_spec(v) for v in graph_inputs(model)],
            "outputs": [value_spec(v) for v in model.graph.output],
            "float_model": {"file": fp32_path.name, "sha256": conf["float_sha256"]},
            "quantization": {"mode": mode, "route": route,
                             **({"method": conf["method"]} if "method" in conf else {}), **details,
                             "graph": graph, "vs_float": vs_float,
                             "calibration": {**recipe.as_dict(), "images_used": len(calib), "npz": npz.name,
                                             "npz_key": INPUT_NAME, "npz_sha256": sha256(npz)}},
        })
        save_onnx(model, out, result_info)
        result = QuantizeResult(out, out.with_suffix(".json"), result_info)
        return result, [out, result.sidecar, npz]

    return run_stage(run, stage_name, conf, label="quantize", seed=seed,
                     reuse=lambda: QuantizeResult(out, out.with_suffix(".json"), read_sidecar(out)), build=build,
                     shown=out)


def calibration_method_for(route: str, method: str | None) -> str:
    """`method`, or the route's default, checked against what ModelOpt's route offers (ConfigError listing them)."""
    chosen = method or DEFAULT_CALIBRATION[route]
    if chosen not in CALIBRATION_METHODS[route]:
        offered = ", ".join(CALIBRATION_METHODS[route])
        try:
            tool = modelopt_tool()
        except metadata.PackageNotFoundError:
            tool = "nvidia-modelopt 0.47, not installed here"
        raise ConfigError(f"quantize.calibration_method: '{chosen}' is not offered by ModelOpt's {route} route "
                          f"({tool}): it offers {offered}.",
                          f"set quantize.calibration_method (--calibration-method) to one of {offered}"
                          + (", or use the onnx route for entropy" if route == "torch" else ""))
    return chosen


def _float_edge(source: Path, run: RunFolder, route: str, export_cfg: ExportConfig, location: DataLocation) -> Path:
    """The FP32 edge ONNX to quantize: `source` itself, or a model folder's export (opset 17 for the torch route)."""
    if not source.is_dir():
        return source
    if route == "torch":  # the whole torch-route artifact targets TensorRT 8.x
        export_cfg = export_cfg.model_copy(update={"opset": TORCH_ROUTE_OPSET})
    return export_model_dir(source, run, export_cfg, location=location).edge


def _quantize(mode: str, route: str, fp32_path: Path, fp32: Any, info: dict[str, Any], calib: np.ndarray,
              npz: Path, method: str, qat: Config | None) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    """Run the chosen ModelOpt tool and check its result; returns the model, how it was made and its graph stats."""
    if qat is not None:
        from patrol_deploy.deployment.qat import qat_int8

        model, details = qat_int8(_model_dir_of(info, fp32_path), calib, qat, bool(info.get("dynamic_batch")))
    elif mode == "fp16":
        check_standard_ops(fp32, fp32_path)
        model, details = autocast_fp16(fp32_path, npz)
    elif route == "onnx":
        check_onnx_ptq_opset(fp32, fp32_path)
        check_standard_ops(fp32, fp32_path)
        model, details = modelopt_onnx_int8(fp32_path, calib, method)
    else:
        model, details = modelopt_torch_int8(_model_dir_of(info, fp32_path), calib, bool(info.get("dynamic_batch")))
    graph = graph_stats(model)
    if mode == "int8":
        graph.update(quantized_ops(model))
        check_quantized(graph, fp32_path)
    elif graph["float16_initializers"] == 0:
        raise ModelError(f"AutoCast left every weight of '{fp32_path}' in float32.",
                         "inspect the model's ops; AutoCast keeps ops in FP32 whose values overflow FP16")
    return model, details, graph


def check_calibration_fits(model: Any, calib: np.ndarray, path: Path) -> None:
    """The ONNX input must be named like the calibration data's key and take its (C, H, W)."""
    inputs = graph_inputs(model)
    if len(inputs) != 1:
        raise ModelError(f"'{path}' has {len(inputs)} inputs; an edge takes one image tensor.",
                         "export the edge with `patrol-deploy export`")
    spec = value_spec(inputs[0])
    if spec["name"] != INPUT_NAME:
        raise DataError(f"'{path}' takes input '{spec['name']}' but the calibration data is stored as '{INPUT_NAME}'.",
                        f"export the edge with `patrol-deploy export` (its input is named '{INPUT_NAME}')")
    want = spec["shape"][1:]
    if len(want) != calib.ndim - 1 or any(isinstance(w, int) and w != g for w, g in zip(want, calib.shape[1:],
                                                                                          strict=False)):
        raise DataError(f"'{path}' takes input shape {spec['shape']} but the calibration images are "
                        f"{list(calib.shape)} (N, C, H, W).",
                        "export the edge from the model folder trained on this data (its input shape is in model.json)")


def check_onnx_ptq_opset(model: Any, path: Path) -> None:
    """ModelOpt's ONNX PTQ emits Q/DQ at opset >= 19; refuse instead of letting it upgrade the opset silently."""
    opset = opset_version(model)
    if opset < ONNX_PTQ_MIN_OPSET:
        raise ModelError(f"'{path}' is opset {opset}; ModelOpt ONNX PTQ needs opset >= {ONNX_PTQ_MIN_OPSET} "
                         "(Q/DQ for TensorRT 10/11).",
                         f"re-export with `patrol-deploy export MODEL_DIR --opset {ONNX_PTQ_MIN_OPSET}`, or use "
                         f"`--route torch` for TensorRT 8.x (opset {TORCH_ROUTE_OPSET})")


def check_standard_ops(model: Any, path: Path) -> None:
    """ModelOpt calibrates on the CPU with ONNX Runtime, which cannot run custom-domain (plugin) ops."""
    custom = sorted({f"{n.domain}::{n.op_type}" for n in model.graph.node if n.domain not in _STANDARD_DOMAINS})
    if custom:
        raise ModelError(f"'{path}' has ops ModelOpt cannot quantize on the CPU: {', '.join(custom)}.",
                         "replace them with standard ONNX ops in the model, or use `--route torch`")


def graph_stats(model: Any) -> dict[str, Any]:
    """Op counts, Q/DQ counts and how many weights are float16."""
    onnx = require("onnx", "ONNX quantization")
    ops = Counter(n.op_type for n in model.graph.node)
    return {"op_counts": dict(sorted(ops.items())), "quantize_linear": ops["QuantizeLinear"],
            "dequantize_linear": ops["DequantizeLinear"],
            "float16_initializers": sum(t.data_type == onnx.TensorProto.FLOAT16 for t in model.graph.initializer)}


def quantized_ops(model: Any) -> dict[str, Any]:
    """Which compute ops (Conv, Gemm, MatMul, ...) read dequantized INT8 inputs, which stay float and why, and
    whether the weights have one scale per output channel or one per tensor."""
    nodes = list(model.graph.node)
    dq = [n for n in nodes if n.op_type == "DequantizeLinear"]
    dequantized = {out for n in dq for out in n.output}
    compute = [n for n in nodes if n.op_type in COMPUTE_OPS]
    floats = [n for n in compute if not dequantized.intersection(n.input)]
    reasons = _float_reasons(model)
    kinds = {_scale_kind(model, n) for n in compute if n not in floats and len(n.input) > 1
             and n.input[1] in dequantized}
    weight_scales = sorted(k for k in kinds if k is not None)
    return {"ops_total": len(compute), "ops_quantized": len(compute) - len(floats),
            "float_ops": [{"op": f"{n.op_type} '{n.name}'", "why": reasons.get(n.name, _NOT_SELECTED)} for n in floats],
            "weight_scales": weight_scales}


_NOT_SELECTED = "ModelOpt did not select it for INT8 (inspect with --debug)"


def _float_reasons(model: Any) -> dict[str, str]:
    """Why ModelOpt 0.47 leaves a convolution in float, by its INT8 rule (`int8_conv_rule`)."""
    onnx = require("onnx", "ONNX quantization")
    weights = {t.name: list(t.dims) for t in model.graph.initializer}
    inputs = {i.name for i in model.graph.input}
    out = {}
    for n in model.graph.node:
        if n.op_type != "Conv" or len(n.input) < 2:
            continue
        shape = weights.get(n.input[1]) or weights.get(_dq_source(model, n.input[1]))
        if not shape:
            out[n.name] = "its weight is not a constant"
            continue
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}
        why = int8_conv_rule(shape[0], shape[1], int(attrs.get("group", 1)),
                             list(attrs.get("kernel_shape", shape[2:])), n.input[0] in inputs)
        if why:
            out[n.name] = why
    return out


def int8_conv_rule(oc: int, ic: int, group: int, kernel: list[int], reads_input: bool) -> str | None:
    """ModelOpt 0.47's INT8 rule for a convolution (`find_nodes_from_convs_to_exclude`): None when it quantizes
    it, else why not. `ic` is the weight's input channels per group, as ModelOpt reads it."""
    small = INT8_MIN_CHANNELS
    if oc >= small and ic >= small:
        return None
    if group == 1 and (oc % 8 == 0 or ic % 8 == 0) and (reads_input or oc >= small or ic >= small) \
            and len(set(kernel)) == 1:
        return None
    if group > 1 and oc % 8 == 0 and all(k >= 3 for k in kernel):
        return None
    return (f"{ic} input and {oc} output channels (group {group}, kernel {'x'.join(map(str, kernel))}): "
            f"ModelOpt's INT8 rule needs {small} on both sides, or a multiple of 8 on one side and {small} on the "
            "other (or the network input), with a square kernel (prune with deploy.target's channel floors, or "
            "widen the model)")


def _dq_source(model: Any, name: str) -> str:
    """The initializer a DequantizeLinear output reads (Q/DQ weights), else ''."""
    for n in model.graph.node:
        if n.op_type == "DequantizeLinear" and name in n.output:
            return str(n.input[0])
    return ""


def _scale_kind(model: Any, node: Any) -> str | None:
    """'per-channel' or 'per-tensor' for the scale of the DequantizeLinear feeding `node`'s weight."""
    scales = {t.name: list(t.dims) for t in model.graph.initializer}
    scales.update({n.output[0]: list(a.t.dims) for n in model.graph.node if n.op_type == "Constant"
                   for a in n.attribute if a.name == "value"})  # the torch exporter's constants
    for n in model.graph.node:
        if n.op_type == "DequantizeLinear" and node.input[1] in n.output and len(n.input) > 1:
            dims = scales.get(n.input[1])
            if dims is None:
                return None
            return "per-channel" if dims and dims[0] > 1 else "per-tensor"
    return None


def check_quantized(graph: dict[str, Any], path: Path) -> None:
    """INT8 must have quantized something; ops left in float are reported, not hidden."""
    if graph["quantize_linear"] == 0 or graph["ops_quantized"] == 0:
        kinds = ", ".join(sorted(graph["op_counts"])) or "none"
        raise ModelError(f"ModelOpt quantized none of the ops of '{path}' (its op types: {kinds}); INT8 covers "
                         f"{', '.join(COMPUTE_OPS)}.", "use `--mode fp16` for this edge")
    if graph["float_ops"]:
        status(f"quantize: {len(graph['float_ops'])} of {graph['ops_total']} compute op(s) stay in float: "
               + "; ".join(f"{f['op']} ({f['why']})" for f in graph["float_ops"][:3])
               + (" ..." if len(graph["float_ops"]) > 3 else ""))


def compare_with_float(model: Any, fp32: Any, calib: np.ndarray) -> dict[str, float]:
    """Run the quantized and the float edge in ONNX Runtime on the calibration images and measure the difference."""
    ref = run_session(cpu_session(fp32), calib)
    got = run_session(cpu_session(model), calib)
    diff = np.abs(got - ref)
    scale = max(float(np.abs(ref).max()), 1e-12)
    return {"images": len(calib), "max_abs_error": float(diff.max()), "mean_abs_error": float(diff.mean()),
            "max_rel_error": float(diff.max()) / scale, "mean_rel_error": float(diff.mean()) / scale}


@contextlib.contextmanager
def modelopt_step(what: str, fix: str) -> Iterator[None]:
    """Run a ModelOpt step: its prints and progress bars go to stderr (stdout belongs to --json; --quiet drops
    them), and whatever it raises (assertions, ValueErrors, ONNX Runtime errors alike) becomes a ModelError."""
    sink = io.StringIO() if is_quiet() else sys.stderr
    try:
        with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            yield
    except PatrolError:
        raise
    except Exception as exc:
        raise ModelError(f"{what} failed: {type(exc).__name__}: {exc}", fix) from exc


def _ignore_stub_tensorrt() -> None:
    """`tensorrt-stubs` makes `import tensorrt` succeed without the runtime; ModelOpt would then call trt.Logger."""
    trt_utils = require("modelopt.onnx.trt_utils", "ModelOpt ONNX quantization")
    flags = vars(trt_utils)  # load_onnx_model reads the module global TRT_PYTHON_AVAILABLE at call time
    if flags.get("TRT_PYTHON_AVAILABLE") and not hasattr(flags.get("trt"), "Logger"):
        flags["TRT_PYTHON_AVAILABLE"] = False


def modelopt_tool() -> str:
    return f"nvidia-modelopt {metadata.version('nvidia-modelopt')}"


def modelopt_onnx_int8(fp32_path: Path, calib: np.ndarray, method: str = "entropy") -> tuple[Any, dict[str, Any]]:
    """ModelOpt ONNX PTQ (`method` calibration on the CPU); non-quantized ops stay FP32 so ORT can check them."""
    moq = require("modelopt.onnx.quantization", "INT8 quantization (ONNX route)")
    onnx = require("onnx", "ONNX quantization")
    _ignore_stub_tensorrt()
    with tempfile.TemporaryDirectory(prefix="patrol-ptq-") as tmp:  # ModelOpt writes intermediates beside its input
        src, out = Path(tmp) / "edge.onnx", Path(tmp) / "edge.int8.onnx"
        shutil.copyfile(fp32_path, src)
        with modelopt_step(f"ModelOpt ONNX PTQ of '{fp32_path}'", "check the ops in the model, or try --route torch"):
            moq.quantize(onnx_path=str(src), quantize_mode="int8", calibration_data={INPUT_NAME: calib},
                         calibration_method=method, calibration_eps=["cpu"], high_precision_dtype="fp32",
                         output_path=str(out), log_level="WARNING")
        if not out.is_file():
            raise ModelError(f"ModelOpt ONNX PTQ wrote no model for '{fp32_path}'.", "run again with --debug")
        model = onnx.load(str(out))
    return model, {"tool": modelopt_tool(), "calibration_method": method, "high_precision_dtype": "fp32",
                   "api": "modelopt.onnx.quantization.quantize"}


def insert_quantizers(edge: torch.nn.Module, x: torch.Tensor, what: str, fix: str) -> None:
    """`mtq.quantize` with INT8_DEFAULT_CFG (max calibration on `x`, per-channel weight scales), in place."""
    mtq = require("modelopt.torch.quantization", "INT8 quantization (torch route)")

    def forward_loop(module: torch.nn.Module) -> None:
        with torch.no_grad():
            for start in range(0, len(x), 32):
                module(x[start:start + 32])

    with modelopt_step(what, fix):
        mtq.quantize(edge, mtq.INT8_DEFAULT_CFG, forward_loop=forward_loop)


def modelopt_torch_int8(model_dir: Path, calib: np.ndarray, dynamic_batch: bool) -> tuple[Any, dict[str, Any]]:
    """`mtq.quantize` (INT8_DEFAULT_CFG, max calibration) on a copy of the torch edge, exported as Q/DQ at opset 17."""
    model, meta = load_model_dir(model_dir)
    edge = copy.deepcopy(cut(model, meta.split)[0]).eval()
    x = torch.from_numpy(calib)
    insert_quantizers(edge, x, f"ModelOpt torch quantization of {model_dir}", "use --route onnx (opset 19)")
    qdq = to_onnx(edge, x[:1], TORCH_ROUTE_OPSET, dynamic_batch, EDGE_INPUT, EDGE_OUTPUT)
    with torch.no_grad():
        fake = edge(x).numpy()
    diff = np.abs(run_session(cpu_session(qdq), calib) - fake)  # real INT8 rounding vs mtq's fake quantization
    return qdq, {"tool": modelopt_tool(), "calibration_method": "max", "config": "INT8_DEFAULT_CFG",
                 "api": "modelopt.torch.quantization.quantize", "model_dir": str(model_dir),
                 "vs_fake_quant": {"max_abs_error": float(diff.max()), "mean_abs_error": float(diff.mean())}}


def autocast_fp16(fp32_path: Path, npz: Path) -> tuple[Any, dict[str, Any]]:
    """ModelOpt AutoCast to FP16 with float32 I/O; ops whose values overflow FP16 on calibration data stay FP32."""
    autocast = require("modelopt.onnx.autocast", "FP16 conversion")
    _ignore_stub_tensorrt()
    with modelopt_step(f"ModelOpt AutoCast of '{fp32_path}'", "check the ops in the model"):
        model = autocast.convert_to_mixed_precision(onnx_path=str(fp32_path), low_precision_type="fp16",
                                                    keep_io_types=True, calibration_data=str(npz), providers=["cpu"])
    return model, {"tool": modelopt_tool(), "api": "modelopt.onnx.autocast.convert_to_mixed_precision",
                   "keep_io_types": True}


def model_dir_for(source: Path) -> Path:
    """The torch model folder behind `source`: itself when it is a folder, else the one its sidecar records."""
    return source if source.is_dir() else _model_dir_of(read_sidecar(source), source)


def _model_dir_of(info: dict[str, Any], fp32_path: Path) -> Path:
    """The torch route needs the torch model: the folder the FP32 edge was exported from, unchanged since (where it
    was, or where it is relative to the ONNX file, for a run folder that moved)."""
    model_dir = Path(info["source"]["model_dir"])
    relative = info["source"].get("model_dir_relative")
    for candidate in [model_dir, *([fp32_path.parent / relative] if isinstance(relative, str) else [])]:
        weights = candidate / MODEL_FILE
        if weights.is_file() and sha256(weights) == info["source"].get("model_sha256"):
            return candidate
    raise ModelError(f"the torch route needs the model folder '{fp32_path}' was exported from ({model_dir}), "
                     "which is missing or has changed.", "pass the model folder itself to `patrol-deploy quantize`")
