"""Recording fakes of the `tensorrt` module (8.6, 10.x, 11.x API surfaces) and of a CUDA device.

The 10.x surface is read from the `tensorrt-stubs` package (stubs of the real
10.13 bindings). The 8.6 and 11.x surfaces are that list with the documented
differences applied: members added after 8.6 removed (ADDED_AFTER_8_6), and
the APIs TensorRT 11 removed (REMOVED_IN_11, from NVIDIA's 10.x -> 11.x
migration guide). Every attribute the engine code reads, sets or calls on a
fake is checked against its version's surface (an unknown name raises
AttributeError, as the real bindings would) and recorded in `World.log`.

Behaviour: parsing reads the real ONNX file; "building" writes a plan that
names the TensorRT version and the ONNX file; the engine "executes" by running
that ONNX file with ONNX Runtime on the fake CUDA memory, so outputs are real.
"""

from __future__ import annotations

import json
import re
import sysconfig
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from patrol_deploy.backends.cuda import DeviceInfo
from patrol_deploy.backends.onnxinfo import read_onnx

MODULE = "<module>"
STUB_DIR = Path(sysconfig.get_paths()["purelib"])
STUB_FILES = (STUB_DIR / "tensorrt_bindings" / "tensorrt.pyi", STUB_DIR / "tensorrt" / "__init__.pyi")

# Members of the 10.13 surface that TensorRT 8.6 does not have (8.6 Python API reference; onnx-tensorrt changelog).
ADDED_AFTER_8_6 = {
    ("ParserError", "node_name"), ("ParserError", "node_operator"),  # IParserError additions, 9.1
    ("ParserError", "local_function_stack"), ("ParserError", "local_function_stack_size"),
    ("NetworkDefinitionCreationFlag", "STRONGLY_TYPED"),  # strongly typed networks, 9.x/10.0
    ("NetworkDefinitionCreationFlag", "PREFER_AOT_PYTHON_PLUGINS"),
    ("NetworkDefinitionCreationFlag", "PREFER_JIT_PYTHON_PLUGINS"),
    ("OnnxParser", "load_model_proto"), ("OnnxParser", "load_initializer"), ("OnnxParser", "parse_model_proto"),
    ("OnnxParser", "supports_model_v2"), ("OnnxParser", "get_layer_output_tensor"),
    ("Builder", "build_serialized_network_to_stream"),
    ("ICudaEngine", "device_memory_size_v2"), ("ICudaEngine", "create_serialization_config"),
    ("ICudaEngine", "create_runtime_config"), ("ICudaEngine", "weight_streaming_budget_v2"),
    ("IExecutionContext", "set_aux_streams"), ("IExecutionContext", "update_device_memory_size_for_shapes"),
    ("IBuilderConfig", "runtime_platform"), ("IBuilderConfig", "max_num_tactics"),
    ("IBuilderConfig", "tiling_optimization_level"), ("IBuilderConfig", "l2_limit_for_tiling"),
    ("BuilderFlag", "STRIP_PLAN"), ("BuilderFlag", "WEIGHTLESS"), ("BuilderFlag", "REFIT_IDENTICAL"),
    ("BuilderFlag", "WEIGHT_STREAMING"), ("BuilderFlag", "INT4"), ("BuilderFlag", "FP4"),
    ("BuilderFlag", "EDITABLE_TIMING_CACHE"), ("BuilderFlag", "MONITOR_MEMORY"), ("BuilderFlag", "REFIT_INDIVIDUAL"),
    ("BuilderFlag", "DISTRIBUTIVE_INDEPENDENCE"),
}
# Members 8.6 has that 10.x removed (implicit-batch and binding-index APIs): present only in the 8.6 fake.
ONLY_IN_8_6 = {("ICudaEngine", "num_bindings"), ("IExecutionContext", "execute_async_v2"),
               ("IBuilderConfig", "max_workspace_size")}
# APIs removed in TensorRT 11 (Migrating from TensorRT 10.x to 11.x: removed Python APIs; Builder page of 11.0).
REMOVED_IN_11 = {
    *(("BuilderFlag", f) for f in ("FP16", "INT8", "FP8", "BF16", "INT4", "FP4", "OBEY_PRECISION_CONSTRAINTS",
                                   "PREFER_PRECISION_CONSTRAINTS", "DIRECT_IO")),
    ("IBuilderConfig", "int8_calibrator"), ("IBuilderConfig", "set_calibration_profile"),
    ("IBuilderConfig", "get_calibration_profile"), ("IBuilderConfig", "set_quantization_flag"),
    ("IBuilderConfig", "get_quantization_flag"), ("IBuilderConfig", "quantization_flags"),
    ("IBuilderConfig", "clear_quantization_flag"), ("NetworkDefinitionCreationFlag", "EXPLICIT_BATCH"),
    ("Builder", "platform_has_fast_fp16"), ("Builder", "platform_has_fast_int8"),
    ("ICudaEngine", "device_memory_size"), ("ICudaEngine", "device_memory_size_v2"),
    *((MODULE, c) for c in ("IInt8Calibrator", "IInt8EntropyCalibrator", "IInt8EntropyCalibrator2",
                            "IInt8LegacyCalibrator", "IInt8MinMaxCalibrator", "CalibrationAlgoType",
                            "IAlgorithm", "IAlgorithmContext", "IAlgorithmIOInfo", "IAlgorithmSelector",
                            "IAlgorithmVariant")),
}
VERSIONS = {8: "8.6.2.3", 10: "10.3.0.30", 11: "11.4.1.2"}
ONNX_TO_LAYER = {"Conv": "CONVOLUTION", "Relu": "ACTIVATION", "QuantizeLinear": "QUANTIZE",
                 "DequantizeLinear": "DEQUANTIZE", "Softmax": "SOFTMAX"}


def stubs_available() -> bool:
    return all(p.is_file() for p in STUB_FILES)


def stub_api() -> dict[str, set[str]]:
    """Class -> member names, plus MODULE -> module-level names, from the tensorrt-stubs .pyi files.

    Read with regular expressions: the stubs are not valid Python for `ast` (mypy rejects some lines too).
    """
    api: dict[str, set[str]] = {MODULE: set()}
    bindings, package = (p.read_text() for p in STUB_FILES)
    current: set[str] | None = None
    for line in bindings.splitlines():
        if match := re.match(r"^class (\w+)", line):
            current = api.setdefault(match.group(1), set())
            api[MODULE].add(match.group(1))
        elif match := re.match(r"^def (\w+)|^(\w+)\s*[:=]", line):
            api[MODULE].add(match.group(1) or match.group(2))
            current = None
        elif current is not None and (match := re.match(r"^    (?:def |class )?(\w+)\s*[:(]", line)):
            current.add(match.group(1))
    for line in package.splitlines():
        if match := re.match(r"^from \S+ import (\w+)|^(\w+)\s*:|^def (\w+)", line):
            api[MODULE].add(next(g for g in match.groups() if g))
    return api


def api_for(generation: int) -> dict[str, set[str]]:
    """The API surface of one generation (see the module docstring)."""
    api = {cls: set(members) for cls, members in stub_api().items()}
    if generation == 8:
        removed, added = ADDED_AFTER_8_6, ONLY_IN_8_6
    elif generation == 11:
        removed, added = REMOVED_IN_11, set()
    else:
        removed, added = set(), set()
    for cls, name in removed:
        api.get(cls, set()).discard(name)
    for cls, name in added:
        api.setdefault(cls, set()).add(name)
    return api


class EnumValue:
    """A pybind11 enum member: int() gives its index, equality by class and name."""

    def __init__(self, cls: str, name: str, index: int) -> None:
        self.cls, self.name, self.index = cls, name, index

    def __int__(self) -> int:
        return self.index

    def __eq__(self, other: object) -> bool:
        return isinstance(other, EnumValue) and (self.cls, self.name) == (other.cls, other.name)

    def __hash__(self) -> int:
        return hash((self.cls, self.name))

    def __repr__(self) -> str:
        return f"{self.cls}.{self.name}"


class World:
    """One fake TensorRT installation: its API surface, knobs, the call log and the fake CUDA device."""

    def __init__(self, generation: int, cuda: FakeCuda, *, num_dla: int = 0, parse_errors: list[tuple] | None = None,
                 build_fails: bool = False, dla_unsupported: tuple[str, ...] = ("SOFTMAX",),
                 output_offset: float = 0.0, accept_timing_cache: bool = True) -> None:
        self.generation, self.version, self.cuda = generation, VERSIONS[generation], cuda
        self.api = api_for(generation)
        self.num_dla, self.parse_errors, self.build_fails = num_dla, parse_errors or [], build_fails
        self.dla_unsupported, self.output_offset = dla_unsupported, output_offset
        self.accept_timing_cache = accept_timing_cache
        self.log: list[tuple[Any, ...]] = []
        self.logger: Any = None
        self.calibration_batches = 0

    def check(self, cls: str, name: str) -> None:
        if name not in self.api.get(cls, set()):
            raise AttributeError(f"'{cls}' has no attribute '{name}' in the TensorRT {self.version} API")

    def enum(self, cls: str, name: str) -> EnumValue:
        self.check(cls, name)
        members = sorted(m for m in self.api[cls] if m.isupper())
        return EnumValue(cls, name, members.index(name))

    def calls(self, cls: str, name: str) -> list[tuple[Any, ...]]:
        """Argument tuples of every call of cls.name."""
        return [entry[3] for entry in self.log if entry[:3] == ("call", cls, name)]

    def sets(self, cls: str, name: str) -> list[Any]:
        return [entry[3] for entry in self.log if entry[:3] == ("set", cls, name)]

    def touched(self) -> set[tuple[str, str]]:
        return {(entry[1], entry[2]) for entry in self.log}


class Fake:
    """Base of fake TensorRT objects: checks and records every public attribute access, call and assignment."""

    _cls = ""

    def __init__(self, world: World, **attrs: Any) -> None:
        object.__setattr__(self, "_world", world)
        for key, value in attrs.items():
            object.__setattr__(self, key, value)

    def _raw(self, name: str) -> Any:
        """Read an attribute without checking or recording it (the fake's own bookkeeping)."""
        return object.__getattribute__(self, name)

    def __getattribute__(self, name: str) -> Any:
        value = object.__getattribute__(self, name)
        if name.startswith("_"):
            return value
        world, cls = object.__getattribute__(self, "_world"), object.__getattribute__(self, "_cls")
        world.check(cls, name)
        if callable(value) and not isinstance(value, Fake):
            def call(*args: Any, **kwargs: Any) -> Any:
                world.log.append(("call", cls, name, args, kwargs))
                return value(*args, **kwargs)
            return call
        world.log.append(("get", cls, name))
        return value

    def __setattr__(self, name: str, value: Any) -> None:
        world = object.__getattribute__(self, "_world")
        world.check(self._cls, name)
        world.log.append(("set", self._cls, name, value))
        object.__setattr__(self, name, value)


class FakeEnum:
    """An enum class of the fake module (e.g. trt.BuilderFlag)."""

    def __init__(self, world: World, cls: str) -> None:
        self._world, self._cls = world, cls

    def __getattr__(self, name: str) -> EnumValue:
        value = self._world.enum(self._cls, name)
        self._world.log.append(("get", self._cls, name))
        return value


class FakeModule(types.ModuleType):
    """The `tensorrt` module: module-level names are checked against the version's surface."""

    def __init__(self, world: World) -> None:
        super().__init__("tensorrt")
        object.__setattr__(self, "_world", world)

    def __getattribute__(self, name: str) -> Any:
        if not name.startswith("_") or name == "__version__":
            world = object.__getattribute__(self, "_world")
            world.check(MODULE, name)
            world.log.append(("get", MODULE, name))
        return object.__getattribute__(self, name)


def make_tensorrt(world: World) -> FakeModule:
    """A fake `tensorrt` module of `world`'s generation."""
    trt = FakeModule(world)
    base = {"__version__": world.version, "nptype": lambda t: {"FLOAT": np.float32, "HALF": np.float16,
                                                               "INT32": np.int32, "INT8": np.int8}[t.name],
            "volume": lambda it: int(np.prod(list(it)))}
    enums = ("BuilderFlag", "NetworkDefinitionCreationFlag", "MemoryPoolType", "ProfilingVerbosity", "DeviceType",
             "LayerInformationFormat", "TensorIOMode", "DataType", "LayerType", "ErrorCode")
    severity = {n: EnumValue("ILogger.Severity", n, i)
                for i, n in enumerate(("INTERNAL_ERROR", "ERROR", "WARNING", "INFO", "VERBOSE"))}

    class ILogger:
        def __init__(self) -> None:
            world.logger = self
    for name, value in severity.items():
        setattr(ILogger, name, value)

    class IProfiler:
        def __init__(self) -> None:
            pass

    class IInt8EntropyCalibrator2:
        def __init__(self) -> None:
            world.log.append(("init", "IInt8EntropyCalibrator2", "__init__"))

    classes: dict[str, Any] = {
        "ILogger": ILogger, "IProfiler": IProfiler, "IInt8EntropyCalibrator2": IInt8EntropyCalibrator2,
        "Builder": lambda logger: FakeBuilder(world, logger=logger, num_DLA_cores=world.num_dla),
        "OnnxParser": lambda network, logger: FakeParser(world, _network=network, num_errors=0),
        "Runtime": lambda logger: FakeRuntime(world, DLA_core=-1),
    }
    for name, value in {**base, **classes}.items():
        if name in world.api[MODULE]:
            object.__setattr__(trt, name, value)
    for name in enums:
        object.__setattr__(trt, name, FakeEnum(world, name))
    return trt


class FakeTensor(Fake):
    _cls = "ITensor"


class FakeLayer(Fake):
    _cls = "ILayer"


class FakeNetwork(Fake):
    _cls = "INetworkDefinition"

    def get_input(self, index: int) -> FakeTensor:
        return self._inputs[index]

    def get_layer(self, index: int) -> FakeLayer:
        return self._layers[index]


class FakeParserError(Fake):
    _cls = "ParserError"

    def code(self) -> EnumValue:
        return self._code

    def desc(self) -> str:
        return self._desc

    def node(self) -> int:
        return self._node


class FakeParser(Fake):
    _cls = "OnnxParser"

    def parse(self, model: bytes, path: str | None = None) -> bool:
        """Reads the real ONNX file: inputs and one layer per node go into the network."""
        world, network = self._world, self._network
        if world.parse_errors:
            object.__setattr__(self, "num_errors", len(world.parse_errors))
            return False
        info = read_onnx(str(path))
        dtype = world.enum("DataType", "FLOAT")
        inputs = [FakeTensor(world, name=t.name, shape=t.shape, dtype=dtype) for t in info.inputs]
        layers = [FakeLayer(world, name=name or f"node{i}",
                            type=world.enum("LayerType", ONNX_TO_LAYER.get(op, "UNARY")))
                  for i, (name, op) in enumerate(info.nodes)]
        object.__setattr__(network, "_inputs", inputs)
        object.__setattr__(network, "_layers", layers)
        object.__setattr__(network, "_onnx", path)
        object.__setattr__(network, "num_inputs", len(inputs))
        object.__setattr__(network, "num_layers", len(layers))
        return True

    def get_error(self, index: int) -> FakeParserError:
        node, desc, code = self._world.parse_errors[index]
        return FakeParserError(self._world, _node=node, _desc=desc, _code=self._world.enum("ErrorCode", code))


class FakeProfile(Fake):
    _cls = "IOptimizationProfile"

    def set_shape(self, name: str, low: Any, opt: Any, high: Any) -> None:
        self._shapes[name] = (tuple(low), tuple(opt), tuple(high))


class FakeTimingCache(Fake):
    _cls = "ITimingCache"

    def serialize(self) -> bytes:
        return self._data + b"+timings"


class FakeConfig(Fake):
    _cls = "IBuilderConfig"

    def set_flag(self, flag: EnumValue) -> None:
        self._flags.add(flag.name)

    def set_memory_pool_limit(self, pool: EnumValue, size: int) -> None:
        self._pools[pool.name] = size

    def add_optimization_profile(self, profile: FakeProfile) -> int:
        self._profiles.append(profile)
        return len(self._profiles) - 1

    def set_calibration_profile(self, profile: FakeProfile) -> bool:
        object.__setattr__(self, "_calib_profile", profile)
        return True

    def can_run_on_DLA(self, layer: FakeLayer) -> bool:
        return layer._raw("type").name not in self._world.dla_unsupported

    def create_timing_cache(self, data: bytes) -> FakeTimingCache:
        return FakeTimingCache(self._world, _data=bytes(data))

    def set_timing_cache(self, cache: FakeTimingCache, ignore_mismatch: bool) -> bool:
        accepted = self._world.accept_timing_cache or not cache._data
        if accepted:
            object.__setattr__(self, "_timing_cache", cache)
        return accepted

    def get_timing_cache(self) -> FakeTimingCache:
        return self._timing_cache


class FakeBuilder(Fake):
    _cls = "Builder"

    def create_network(self, flags: int = 0) -> FakeNetwork:
        return FakeNetwork(self._world, _flags=flags)

    def create_builder_config(self) -> FakeConfig:
        return FakeConfig(self._world, _flags=set(), _pools={}, _profiles=[], _calib_profile=None,
                          _timing_cache=None)

    def create_optimization_profile(self) -> FakeProfile:
        return FakeProfile(self._world, _shapes={})

    def build_serialized_network(self, network: FakeNetwork, config: FakeConfig) -> bytes | None:
        """Runs the calibrator as TensorRT does (cache first, else batches, then writes the cache)."""
        world = self._world
        if world.build_fails:
            world.logger.log(world.logger.ERROR, "Internal error: could not find any implementation for node conv0")
            return None
        calibrator = object.__getattribute__(config, "__dict__").get("int8_calibrator")
        if calibrator is not None:
            world.calibration_batches = 0
            if calibrator.read_calibration_cache() is None:
                calibrator.get_batch_size()
                while calibrator.get_batch(["input"]):
                    world.calibration_batches += 1
                calibrator.write_calibration_cache(b"TRT-fake-EntropyCalibration2")
        return f"FAKEPLAN|{world.version}|{network._onnx}".encode()


class FakeInspector(Fake):
    _cls = "EngineInspector"

    def get_engine_information(self, fmt: EnumValue) -> str:
        return json.dumps({"Layers": [{"Name": f"layer{i}", "LayerType": "Fake"} for i in range(2)],
                           "Bindings": ["input", "output"]})


class FakeContext(Fake):
    _cls = "IExecutionContext"

    def set_input_shape(self, name: str, shape: Any) -> bool:
        low, _, high = self._engine._profile
        batch = int(next(iter(shape)))
        if not low[0] <= batch <= high[0]:
            return False
        self._shapes[name] = tuple(shape)
        return True

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        if name in self._shapes:
            return self._shapes[name]
        batch = next(iter(self._shapes.values()))[0]
        shape = self._engine._outputs[name]
        return (batch, *shape[1:]) if shape[0] < 0 else shape

    def set_tensor_address(self, name: str, ptr: int) -> bool:
        self._addresses[name] = ptr
        return True

    def execute_async_v3(self, stream_handle: int) -> bool:
        """Runs the ONNX model with ONNX Runtime on the fake device memory (plus the world's output offset)."""
        import onnxruntime as ort

        world, engine, cuda = self._world, self._engine, self._world.cuda
        feeds = {n: cuda.read(self._addresses[n], self._shapes[n], np.float32) for n in engine._inputs}
        session = ort.InferenceSession(engine._onnx, providers=["CPUExecutionProvider"])
        for name, value in zip([o.name for o in session.get_outputs()], session.run(None, feeds), strict=True):
            cuda.write(self._addresses[name], value + np.float32(world.output_offset))
        return True

    def report_to_profiler(self) -> bool:
        for i in range(2):
            self._raw("profiler").report_layer_time(f"layer{i}", 0.25 * (i + 1))
        return True


class FakeEngine(Fake):
    _cls = "ICudaEngine"

    def get_tensor_name(self, index: int) -> str:
        return [*self._inputs, *self._outputs][index]

    def get_tensor_mode(self, name: str) -> EnumValue:
        return self._world.enum("TensorIOMode", "INPUT" if name in self._inputs else "OUTPUT")

    def get_tensor_dtype(self, name: str) -> EnumValue:
        return self._world.enum("DataType", "FLOAT")

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        return {**self._inputs, **self._outputs}[name]

    def create_execution_context(self) -> FakeContext:
        return FakeContext(self._world, _engine=self, _shapes={}, _addresses={}, profiler=None,
                           enqueue_emits_profile=True)

    def create_engine_inspector(self) -> FakeInspector:
        return FakeInspector(self._world)


class FakeRuntime(Fake):
    _cls = "Runtime"

    def deserialize_cuda_engine(self, plan: bytes) -> FakeEngine | None:
        world = self._world
        try:
            magic, version, onnx_path = bytes(plan).decode().split("|")
        except (UnicodeDecodeError, ValueError):
            magic, version, onnx_path = "", "", ""
        if magic != "FAKEPLAN" or version != world.version:
            world.logger.log(world.logger.ERROR, "1: [stdArchiveReader.cpp::StdArchiveReader::32] Error Code 1: "
                             f"Serialization (Serialization assertion magicTagRead == kMAGIC_TAG failed. "
                             f"The engine plan file is not compatible with this version of TensorRT, expecting "
                             f"library version {world.version} got {version or '?'})")
            return None
        info = read_onnx(onnx_path)
        dynamic = any(t.shape and t.shape[0] < 0 for t in info.inputs)
        profile = ((1,), (4,), (8,)) if dynamic else ((info.inputs[0].shape[0],),) * 3
        return FakeEngine(world, num_io_tensors=len(info.inputs) + len(info.outputs), _onnx=onnx_path,
                          _inputs={t.name: t.shape for t in info.inputs},
                          _outputs={t.name: t.shape for t in info.outputs}, _profile=profile)


class FakeCuda:
    """A CUDA backend over host memory: real copies, fake event times, allocation bookkeeping."""

    name = "fake-cuda"

    def __init__(self, compute_capability: str = "8.7") -> None:
        self.memory: dict[int, bytearray] = {}
        self.pinned_live = 0
        self.next_ptr = 0x1000
        self.clock = 0.0
        self.cc = compute_capability

    def device_info(self) -> DeviceInfo:
        return DeviceInfo("Fake Orin", self.cc, 8192, self.name)

    def malloc(self, nbytes: int) -> int:
        ptr, self.next_ptr = self.next_ptr, self.next_ptr + nbytes + 256
        self.memory[ptr] = bytearray(nbytes)
        return ptr

    def free(self, ptr: int) -> None:
        del self.memory[ptr]

    def pinned(self, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        self.pinned_live += 1
        return np.zeros(shape, dtype)

    def free_pinned(self, array: np.ndarray) -> None:
        self.pinned_live -= 1

    def memcpy_htod(self, dst: int, src: np.ndarray) -> None:
        data = np.ascontiguousarray(src).tobytes()
        self.memory[dst][: len(data)] = data

    def read(self, ptr: int, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        count = int(np.prod(shape))
        return np.frombuffer(bytes(self.memory[ptr][: count * np.dtype(dtype).itemsize]), dtype).reshape(shape)

    def write(self, ptr: int, array: np.ndarray) -> None:
        self.memcpy_htod(ptr, array)

    def create_stream(self) -> str:
        return "stream"

    def stream_handle(self, stream: Any) -> int:
        return 7

    def destroy_stream(self, stream: Any) -> None:
        pass

    def memcpy_htod_async(self, dst: int, src: np.ndarray, stream: Any) -> None:
        self.memcpy_htod(dst, src)

    def memcpy_dtoh_async(self, dst: np.ndarray, src: int, stream: Any) -> None:
        dst[...] = self.read(src, dst.shape, dst.dtype)

    def synchronize(self, stream: Any) -> None:
        pass

    def create_event(self) -> list[float]:
        return [0.0]

    def record(self, event: list[float], stream: Any) -> None:
        self.clock += 0.125
        event[0] = self.clock

    def elapsed_ms(self, start: list[float], end: list[float]) -> float:
        return end[0] - start[0]

    def destroy_event(self, event: Any) -> None:
        pass


def install(monkeypatch: Any, generation: int, **knobs: Any) -> tuple[World, FakeCuda]:
    """Put a fake TensorRT of `generation` in sys.modules and make it the default CUDA backend."""
    cuda = FakeCuda(knobs.pop("compute_capability", "8.7"))
    world = World(generation, cuda, **knobs)
    monkeypatch.setitem(__import__("sys").modules, "tensorrt", make_tensorrt(world))
    loader: Callable[[], FakeCuda] = lambda: cuda  # noqa: E731
    for module in ("patrol_deploy.backends.trt_builder", "patrol_deploy.backends.trt_runner"):
        monkeypatch.setattr(f"{module}.load_cuda", loader)
    return world, cuda
