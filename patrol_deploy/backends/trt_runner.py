"""Run a serialized TensorRT engine (8.5+ tensor-name API) with host-to-device, compute and device-to-host timed.

Follows NVIDIA's Python samples: pinned host buffers, device buffers,
`set_input_shape` / `set_tensor_address` / `execute_async_v3` on one CUDA
stream, with CUDA events around each phase so transfers are reported apart
from compute. Per-layer times come from an IProfiler on a second execution
context (a separate profiling run, as trtexec's --separateProfileRun), so the
latency runs are not slowed by profiling.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from patrol_deploy.backends.cuda import CudaBackend, load_cuda
from patrol_deploy.backends.onnxinfo import TensorInfo
from patrol_deploy.backends.trt import load_tensorrt, trt_logger
from patrol_deploy.backends.trt_meta import check_compatible, deserialize_failure, read_engine_meta
from patrol_deploy.errors import DataError, HardwareError, ModelError
from patrol_deploy.progress import status
from patrol_deploy.runfolder import sha256


@dataclass(frozen=True)
class StageTimes:
    """GPU-side milliseconds of one inference, from CUDA events."""

    h2d_ms: float
    compute_ms: float
    d2h_ms: float


class EngineRunner:
    """A deserialized engine with one execution context, its buffers and stream; use as a context manager."""

    def __init__(self, engine_path: str | Path, cuda: CudaBackend | None = None) -> None:
        self.path = Path(engine_path)
        if not self.path.is_file():
            raise DataError(f"engine '{self.path}' does not exist.", "build it with `patrol-deploy build-engine`")
        self.trt, self.version = load_tensorrt("running TensorRT engines")
        self.cuda = cuda or load_cuda()
        self.device = self.cuda.device_info()
        self.meta = read_engine_meta(self.path)
        if self.meta is not None and self.meta.get("engine_sha256") != sha256(self.path):
            status(f"ignoring {self.path.name}.json: it describes another build of this engine file")
            self.meta = None
        if self.meta is not None:
            check_compatible(self.path, self.meta, self.version, self.device)
        self.logger = trt_logger(self.trt)
        self.logger.take_errors()
        runtime = self.trt.Runtime(self.logger)
        if self.meta is not None and self.meta.get("dla_core") is not None:
            runtime.DLA_core = int(self.meta["dla_core"])
        self.engine = runtime.deserialize_cuda_engine(self.path.read_bytes())
        if self.engine is None:
            raise deserialize_failure(self.path, self.logger.take_errors(), self.meta, self.version, self.device)
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.input_names = [n for n in names if self.engine.get_tensor_mode(n) == self.trt.TensorIOMode.INPUT]
        self.output_names = [n for n in names if n not in self.input_names]
        self.dtypes = {n: np.dtype(self.trt.nptype(self.engine.get_tensor_dtype(n))) for n in names}
        self.stream = self.cuda.create_stream()
        self.events = [self.cuda.create_event() for _ in range(4)]
        self._buffers: dict[str, tuple[tuple[int, ...], np.ndarray, int]] = {}

    def input_specs(self) -> list[TensorInfo]:
        """Engine inputs with -1 on the dynamic (batch) axis."""
        return [TensorInfo(n, tuple(int(d) for d in self.engine.get_tensor_shape(n)), self.dtypes[n].name)
                for n in self.input_names]

    def run(self, feeds: dict[str, np.ndarray], context: Any = None) -> tuple[dict[str, np.ndarray], StageTimes]:
        """Run once on `feeds` (host arrays by input name); returns output copies and the phase times."""
        ctx = context if context is not None else self.context
        shapes = {}
        for name in self.input_names:
            if name not in feeds:
                raise DataError(f"no data for engine input '{name}'.", f"provide inputs for {self.input_names}")
            shapes[name] = tuple(feeds[name].shape)
            if not ctx.set_input_shape(name, shapes[name]):
                raise ModelError(f"input '{name}' of shape {list(shapes[name])} is outside the engine's "
                                 "optimization profile.", "rebuild with a --batch MIN,OPT,MAX that covers it")
        for name in self.output_names:
            shapes[name] = tuple(int(d) for d in ctx.get_tensor_shape(name))
        for name, shape in shapes.items():
            ctx.set_tensor_address(name, self._buffer(name, shape)[2])
        for name in self.input_names:
            np.copyto(self._buffers[name][1], feeds[name], casting="same_kind")
        cuda, stream, (ev0, ev1, ev2, ev3) = self.cuda, self.stream, self.events
        cuda.record(ev0, stream)
        for name in self.input_names:
            cuda.memcpy_htod_async(self._buffers[name][2], self._buffers[name][1], stream)
        cuda.record(ev1, stream)
        if not ctx.execute_async_v3(cuda.stream_handle(stream)):
            raise HardwareError(f"TensorRT could not run {self.path.name}: "
                                f"{' '.join(self.logger.take_errors()) or 'no error was logged'}.",
                                "check the device (`tegrastats`, `dmesg`) and rebuild the engine on it")
        cuda.record(ev2, stream)
        for name in self.output_names:
            cuda.memcpy_dtoh_async(self._buffers[name][1], self._buffers[name][2], stream)
        cuda.record(ev3, stream)
        cuda.synchronize(stream)
        times = StageTimes(cuda.elapsed_ms(ev0, ev1), cuda.elapsed_ms(ev1, ev2), cuda.elapsed_ms(ev2, ev3))
        return {name: self._buffers[name][1].copy() for name in self.output_names}, times

    def layer_times(self, feeds: dict[str, np.ndarray], runs: int) -> list[dict[str, Any]]:
        """Mean per-layer milliseconds over `runs` profiled inferences (IProfiler, separate execution context)."""
        trt = self.trt

        class LayerProfiler(trt.IProfiler):  # type: ignore[name-defined]
            def __init__(self) -> None:
                trt.IProfiler.__init__(self)
                self.times: dict[str, list[float]] = defaultdict(list)

            def report_layer_time(self, layer_name: str, ms: float) -> None:
                self.times[layer_name].append(ms)

        profiler = LayerProfiler()
        ctx = self.engine.create_execution_context()
        ctx.profiler = profiler
        ctx.enqueue_emits_profile = False  # keep enqueue asynchronous; collect after each synchronized run
        for _ in range(runs):
            self.run(feeds, ctx)
            ctx.report_to_profiler()
        means = {name: float(np.mean(t)) for name, t in profiler.times.items()}
        total = sum(means.values()) or 1.0
        return [{"name": name, "mean_ms": ms, "percent": 100.0 * ms / total} for name, ms in means.items()]

    def _buffer(self, name: str, shape: tuple[int, ...]) -> tuple[tuple[int, ...], np.ndarray, int]:
        """Pinned host array and device pointer for `name`, reallocated when its shape changes."""
        held = self._buffers.get(name)
        if held is None or held[0] != shape:
            if held is not None:
                self._release(held)
            host = self.cuda.pinned(shape, self.dtypes[name])
            self._buffers[name] = (shape, host, self.cuda.malloc(host.nbytes))
        return self._buffers[name]

    def _release(self, held: tuple[tuple[int, ...], np.ndarray, int]) -> None:
        self.cuda.free(held[2])
        self.cuda.free_pinned(held[1])

    def close(self) -> None:
        for held in self._buffers.values():
            self._release(held)
        self._buffers.clear()
        for event in self.events:
            self.cuda.destroy_event(event)
        self.events = []
        if self.stream is not None:
            self.cuda.destroy_stream(self.stream)
            self.stream = None

    def __enter__(self) -> EngineRunner:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
