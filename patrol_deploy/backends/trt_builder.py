"""Build a TensorRT engine from an ONNX file, on the device that will run it, for TensorRT 8.x, 10.x or 11.x.

The builder detects the installed version and takes one of three API paths
(`API_PATHS`), which differ in how the network is created and how precision
is requested; everything else (ONNX parsing with node-level errors, the
optimization profile for a dynamic batch, workspace limit, DLA with GPU
fallback, timing cache, profiling verbosity, engine inspector) is shared.
The engine and `ENGINE.json` (see `meta.py`) are written atomically.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from patrol_deploy.backends.cuda import CudaBackend, load_cuda
from patrol_deploy.backends.onnxinfo import OnnxInfo, TensorInfo, read_onnx
from patrol_deploy.backends.trt import check_opset, load_tensorrt, trt_logger
from patrol_deploy.backends.trt_meta import META_FORMAT, engine_meta_path
from patrol_deploy.backends.trt_options import BuildOptions, PrecisionPlan, plan_precision, shape_profile
from patrol_deploy.errors import ConfigError, HardwareError, ModelError
from patrol_deploy.progress import status
from patrol_deploy.runfolder import atomic_path, sha256, write_json


class ApiPath:
    """How one TensorRT generation creates the network and applies a precision plan."""

    generation = 0

    def network_flags(self, trt: ModuleType) -> int:
        return 0

    def apply_precision(self, trt: ModuleType, config: Any, plan: PrecisionPlan, calibrator: Any,
                        calib_profile: Any) -> list[str]:
        """Set precision on `config`; returns the builder flags set, for the metadata."""
        return []


class Trt8Path(ApiPath):
    """TensorRT 8.5/8.6 (JetPack 5): explicit batch must be requested; FP16/INT8 builder flags; implicit INT8."""

    generation = 8

    def network_flags(self, trt: ModuleType) -> int:
        return 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)

    def apply_precision(self, trt: ModuleType, config: Any, plan: PrecisionPlan, calibrator: Any,
                        calib_profile: Any) -> list[str]:
        flags = []
        if plan.fp16_flag:
            config.set_flag(trt.BuilderFlag.FP16)
            flags.append("FP16")
        if plan.int8_flag:  # also required for Q/DQ (explicit) INT8 in weakly typed networks
            config.set_flag(trt.BuilderFlag.INT8)
            flags.append("INT8")
        if calibrator is not None:
            config.int8_calibrator = calibrator
            if calib_profile is not None:
                config.set_calibration_profile(calib_profile)
        return flags


class Trt10Path(Trt8Path):
    """TensorRT 10.x (JetPack 6): every network is explicit batch (the flag is deprecated and ignored, so none
    is passed); the same FP16/INT8 flags; a calibrator only for DLA, which `plan_precision` enforces."""

    generation = 10

    def network_flags(self, trt: ModuleType) -> int:
        return 0


class Trt11Path(ApiPath):
    """TensorRT 11.x: networks are always strongly typed; precision flags and calibrators no longer exist, so the
    precision is the model's own (ModelOpt AutoCast FP16, or Q/DQ INT8)."""

    generation = 11


API_PATHS: dict[int, ApiPath] = {8: Trt8Path(), 10: Trt10Path(), 11: Trt11Path()}


def build_engine(onnx_path: str | Path, engine_path: str | Path, options: BuildOptions,
                 cuda: CudaBackend | None = None) -> dict[str, Any]:
    """Build `engine_path` from `onnx_path` with the installed TensorRT; returns (and writes) its metadata."""
    started = time.perf_counter()
    engine_path = Path(engine_path)
    info = read_onnx(onnx_path)
    trt, version = load_tensorrt("building TensorRT engines")
    api = API_PATHS[version.generation]
    if not options.skip_opset_check:
        check_opset(version, info.opset, str(info.path))
    plan = plan_precision(api.generation, options, info.precision, options.calibration_available(engine_path))
    cuda = cuda or load_cuda()
    device = cuda.device_info()
    status(f"building {engine_path.name} with TensorRT {version} on {device.name} ({plan.effective})")

    logger = trt_logger(trt)
    logger.take_errors()
    builder = trt.Builder(logger)
    if options.dla_core is not None:
        _check_dla(builder, options.dla_core)
    network = builder.create_network(api.network_flags(trt))
    parser = trt.OnnxParser(network, logger)
    _parse(parser, info)
    inputs = [_network_input(network.get_input(i)) for i in range(network.num_inputs)]
    shapes = shape_profile(inputs, options.batch, options.input_shapes)

    config = builder.create_builder_config()
    if options.workspace_mib is not None:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, options.workspace_mib << 20)
    config.profiling_verbosity = (trt.ProfilingVerbosity.DETAILED if options.detailed
                                  else trt.ProfilingVerbosity.LAYER_NAMES_ONLY)
    if shapes:
        profile = builder.create_optimization_profile()
        for name, (low, opt, high) in shapes.items():
            profile.set_shape(name, low, opt, high)
        config.add_optimization_profile(profile)
    calibrator, calib_profile = (_calibrator(trt, builder, options, engine_path, inputs, shapes, cuda)
                                 if plan.calibrate else (None, None))
    flags = api.apply_precision(trt, config, plan, calibrator, calib_profile)
    fallback = _target_dla(trt, config, network, options.dla_core) if options.dla_core is not None else []
    notes = list(plan.notes) + (_attach_timing_cache(config, options.timing_cache) if options.timing_cache else [])

    try:
        serialized = builder.build_serialized_network(network, config)
    finally:
        if calibrator is not None:
            calibrator.free()
    if serialized is None:
        errors = logger.take_errors()
        raise ModelError(f"TensorRT {version} could not build an engine from {info.path}: "
                         f"{' '.join(errors) or 'no error was logged'}.",
                         "read the TensorRT messages above; try a larger --workspace or --precision fp32")
    with atomic_path(engine_path) as tmp, open(tmp, "wb") as fh:
        fh.write(serialized)
    if options.timing_cache:
        with atomic_path(options.timing_cache) as tmp:
            tmp.write_bytes(bytes(config.get_timing_cache().serialize()))

    meta = {
        "format": META_FORMAT,
        "engine": engine_path.name,
        "engine_sha256": sha256(engine_path),
        "onnx": {"path": str(info.path), "sha256": sha256(info.path), "opset": info.opset,
                 "model_precision": info.precision},
        "tensorrt": {"version": str(version), "api_generation": api.generation},
        "device": device.as_dict(),
        "precision": plan.effective,
        "precision_source": "model (strongly typed)" if plan.strongly_typed else "builder flags",
        "builder_flags": flags + (["GPU_FALLBACK"] if options.dla_core is not None else []),
        "calibration": ({"data": str(options.calib) if options.calib else None,
                         "cache": str(options.calib_cache_for(engine_path))} if plan.calibrate else None),
        "dla_core": options.dla_core,
        "gpu_fallback_layers": fallback,
        "batch_profile": {name: {"min": list(s[0]), "opt": list(s[1]), "max": list(s[2])}
                          for name, s in shapes.items()},
        "workspace_mib": options.workspace_mib,
        "timing_cache": str(options.timing_cache) if options.timing_cache else None,
        "profiling_verbosity": "detailed" if options.detailed else "layer_names_only",
        "inputs": [t.as_dict() for t in info.inputs],
        "outputs": [t.as_dict() for t in info.outputs],
        "layers": _inspect(trt, logger, serialized, options.dla_core),
        "notes": notes,
        "build_seconds": round(time.perf_counter() - started, 2),
    }
    write_json(engine_meta_path(engine_path), meta)
    return meta


def _check_dla(builder: Any, core: int) -> None:
    cores = int(builder.num_DLA_cores)
    if cores == 0:
        raise HardwareError(
            f"DLA core {core} was requested, but this device has no DLA (Jetson AGX Orin, Orin NX and Xavier have "
            "DLA cores; Orin Nano, Thor and discrete GPUs do not).", "drop --dla-core to build for the GPU")
    if core >= cores:
        raise HardwareError(f"DLA core {core} was requested, but this device has {cores} (0..{cores - 1}).",
                            f"pass --dla-core between 0 and {cores - 1}")


def _parse(parser: Any, info: OnnxInfo) -> None:
    """Parse the ONNX file; a failure names each failing node (index, name, op type) and the parser's reason."""
    if parser.parse(info.path.read_bytes(), str(info.path)):
        return
    problems = []
    for i in range(parser.num_errors):
        error = parser.get_error(i)
        code = getattr(error.code(), "name", str(error.code()))
        where = info.node_label(int(error.node())) or "graph"
        problems.append(f"{where}: {error.desc()} [{code}]")
    raise ModelError(f"TensorRT's ONNX parser rejected {info.path}: {'; '.join(problems) or 'no error reported'}.",
                     "replace or simplify the failing node (onnxsim, or re-export with another opset)")


def _network_input(tensor: Any) -> TensorInfo:
    return TensorInfo(tensor.name, tuple(int(d) for d in tensor.shape), str(tensor.dtype))


def _calibrator(trt: ModuleType, builder: Any, options: BuildOptions, engine_path: Path,
                inputs: Sequence[TensorInfo], shapes: dict[str, Any], cuda: CudaBackend) -> tuple[Any, Any]:
    """The entropy calibrator (data from --calib, or replaying the cache) and, for a dynamic batch, its profile."""
    from patrol_deploy.backends.calibrator import load_calibration, make_entropy_calibrator

    if len(inputs) != 1:
        raise ConfigError(f"INT8 calibration supports single-input models; this one has {len(inputs)} inputs.",
                          "quantize it to Q/DQ with `patrol-deploy quantize` instead")
    tensor = inputs[0]
    shape = shapes[tensor.name][1] if tensor.name in shapes else tensor.shape  # the OPT shape
    batch = int(shape[0])
    data = load_calibration(options.calib, shape[1:], batch) if options.calib else None
    cache = options.calib_cache_for(engine_path)
    status(f"INT8 calibration: {len(data)} batches of {batch} from {options.calib}" if data is not None
           else f"INT8 calibration from cache {cache}")
    calib_profile = None
    if tensor.name in shapes:
        calib_profile = builder.create_optimization_profile()
        calib_profile.set_shape(tensor.name, shape, shape, shape)
    return make_entropy_calibrator(trt, data, cache, batch, cuda), calib_profile


def _target_dla(trt: ModuleType, config: Any, network: Any, core: int) -> list[str]:
    """Put the network on DLA `core` with GPU fallback; returns the layers that will fall back to the GPU."""
    config.default_device_type = trt.DeviceType.DLA
    config.DLA_core = core
    config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
    fallback = []
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        if not config.can_run_on_DLA(layer):
            fallback.append(f"{layer.name} ({getattr(layer.type, 'name', layer.type)})")
    status(f"DLA core {core}: {network.num_layers - len(fallback)} of {network.num_layers} layers on DLA"
           + (f"; GPU fallback: {', '.join(fallback)}" if fallback else ""))
    return fallback


def _attach_timing_cache(config: Any, path: Path) -> list[str]:
    """Reuse the timing cache at `path` if TensorRT accepts it (same device and version), else start a fresh one."""
    data = path.read_bytes() if path.is_file() else b""
    if config.set_timing_cache(config.create_timing_cache(data), ignore_mismatch=False):
        return [f"timing cache {'reused' if data else 'created'}: {path}"]
    config.set_timing_cache(config.create_timing_cache(b""), ignore_mismatch=False)
    return [f"timing cache {path} was rejected (another device or TensorRT version) and is rebuilt"]


def _inspect(trt: ModuleType, logger: Any, serialized: Any, dla_core: int | None) -> Any:
    """The engine inspector's per-layer JSON (detailed when built with ProfilingVerbosity.DETAILED)."""
    runtime = trt.Runtime(logger)
    if dla_core is not None:
        runtime.DLA_core = dla_core
    engine = runtime.deserialize_cuda_engine(serialized)
    if engine is None:
        status("engine inspector skipped: the new engine did not deserialize")
        return None
    inspector = engine.create_engine_inspector()
    return json.loads(inspector.get_engine_information(trt.LayerInformationFormat.JSON))


def describe(meta: dict[str, Any]) -> str:
    """One paragraph about a built engine, for the CLI."""
    layers = (meta.get("layers") or {}).get("Layers", [])
    lines = [f"engine {meta['engine']}: TensorRT {meta['tensorrt']['version']} on {meta['device']['name']} "
             f"(compute {meta['device']['compute_capability']}), precision {meta['precision']} "
             f"({meta['precision_source']}), {len(layers)} layers, built in {meta['build_seconds']} s"]
    if meta["dla_core"] is not None:
        lines.append(f"DLA core {meta['dla_core']}: {len(meta['gpu_fallback_layers'])} layers fall back to the GPU")
    for name, prof in meta["batch_profile"].items():
        lines.append(f"batch profile {name}: min {prof['min']} opt {prof['opt']} max {prof['max']}")
    lines += [f"note: {n}" for n in meta["notes"]]
    return "\n".join(lines)

