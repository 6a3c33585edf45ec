"""CUDA memory, streams and events for the engine runner: cuda-python first, pycuda as the fallback.

NVIDIA's current TensorRT samples use cuda-python (`cuda.bindings.runtime`,
wheels on PyPI for aarch64 too; older releases expose it as `cuda.cudart`).
Older JetPack images often have only pycuda, which builds from source against
the CUDA toolkit. Both are wrapped behind the same small `CudaBackend` surface.
"""

from __future__ import annotations

import atexit
import ctypes
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import numpy as np

from patrol_deploy.errors import HardwareError, MissingDependency
from patrol_deploy.lazy import require

CUDA_FIX = "pip install 'patrol-deploy[device]' (cuda-python), or pycuda on older JetPack images"


@dataclass(frozen=True)
class DeviceInfo:
    """The CUDA device an engine is built for or runs on."""

    name: str
    compute_capability: str  # "8.7"
    total_memory_mib: int
    cuda_binding: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class CudaBackend(Protocol):
    """What the runner and the calibrator need from a CUDA binding (pointers are plain ints)."""

    name: str

    def device_info(self) -> DeviceInfo: ...
    def malloc(self, nbytes: int) -> int: ...
    def free(self, ptr: int) -> None: ...
    def pinned(self, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray: ...
    def free_pinned(self, array: np.ndarray) -> None: ...
    def memcpy_htod(self, dst: int, src: np.ndarray) -> None: ...
    def create_stream(self) -> Any: ...
    def stream_handle(self, stream: Any) -> int: ...
    def destroy_stream(self, stream: Any) -> None: ...
    def memcpy_htod_async(self, dst: int, src: np.ndarray, stream: Any) -> None: ...
    def memcpy_dtoh_async(self, dst: np.ndarray, src: int, stream: Any) -> None: ...
    def synchronize(self, stream: Any) -> None: ...
    def create_event(self) -> Any: ...
    def record(self, event: Any, stream: Any) -> None: ...
    def elapsed_ms(self, start: Any, end: Any) -> float: ...
    def destroy_event(self, event: Any) -> None: ...


class CudaPython:
    """cuda-python's runtime API (the binding NVIDIA's TensorRT samples use)."""

    name = "cuda-python"

    def __init__(self, cudart: Any) -> None:
        self.rt = cudart
        err, count = cudart.cudaGetDeviceCount()
        if err != cudart.cudaError_t.cudaSuccess or not count:
            why = _error_name(err) if err != cudart.cudaError_t.cudaSuccess else "the driver reports 0 devices"
            raise HardwareError(
                f"no usable CUDA device ({why}).",
                "run on a Jetson or a machine with an NVIDIA GPU and driver (check `nvidia-smi` or `tegrastats`)")

    def _call(self, result: tuple[Any, ...], what: str) -> Any:
        err, rest = result[0], result[1:]
        if err != self.rt.cudaError_t.cudaSuccess:
            raise HardwareError(f"CUDA call {what} failed: {_error_name(err)}.",
                                "check the device with `nvidia-smi` or `tegrastats`, then retry")
        return rest[0] if len(rest) == 1 else None

    def device_info(self) -> DeviceInfo:
        dev = self._call(self.rt.cudaGetDevice(), "cudaGetDevice")
        prop = self._call(self.rt.cudaGetDeviceProperties(dev), "cudaGetDeviceProperties")
        name = prop.name.split(b"\0", 1)[0].decode() if isinstance(prop.name, bytes) else str(prop.name)
        return DeviceInfo(name, f"{prop.major}.{prop.minor}", int(prop.totalGlobalMem) >> 20, self.name)

    def malloc(self, nbytes: int) -> int:
        return int(self._call(self.rt.cudaMalloc(max(nbytes, 1)), "cudaMalloc"))

    def free(self, ptr: int) -> None:
        self._call(self.rt.cudaFree(ptr), "cudaFree")

    def pinned(self, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        count = int(np.prod(shape))
        ptr = self._call(self.rt.cudaMallocHost(max(count * dtype.itemsize, 1)), "cudaMallocHost")
        buffer = (ctypes.c_ubyte * (count * dtype.itemsize)).from_address(int(ptr))
        return np.frombuffer(memoryview(buffer), dtype=dtype, count=count).reshape(shape)

    def free_pinned(self, array: np.ndarray) -> None:
        self._call(self.rt.cudaFreeHost(array.ctypes.data), "cudaFreeHost")

    def memcpy_htod(self, dst: int, src: np.ndarray) -> None:
        kind = self.rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        self._call(self.rt.cudaMemcpy(dst, src.ctypes.data, src.nbytes, kind), "cudaMemcpy")

    def create_stream(self) -> Any:
        return self._call(self.rt.cudaStreamCreate(), "cudaStreamCreate")

    def stream_handle(self, stream: Any) -> int:
        return int(stream)

    def destroy_stream(self, stream: Any) -> None:
        self._call(self.rt.cudaStreamDestroy(stream), "cudaStreamDestroy")

    def memcpy_htod_async(self, dst: int, src: np.ndarray, stream: Any) -> None:
        kind = self.rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        self._call(self.rt.cudaMemcpyAsync(dst, src.ctypes.data, src.nbytes, kind, stream), "cudaMemcpyAsync")

    def memcpy_dtoh_async(self, dst: np.ndarray, src: int, stream: Any) -> None:
        kind = self.rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self._call(self.rt.cudaMemcpyAsync(dst.ctypes.data, src, dst.nbytes, kind, stream), "cudaMemcpyAsync")

    def synchronize(self, stream: Any) -> None:
        self._call(self.rt.cudaStreamSynchronize(stream), "cudaStreamSynchronize")

    def create_event(self) -> Any:
        return self._call(self.rt.cudaEventCreate(), "cudaEventCreate")

    def record(self, event: Any, stream: Any) -> None:
        self._call(self.rt.cudaEventRecord(event, stream), "cudaEventRecord")

    def elapsed_ms(self, start: Any, end: Any) -> float:
        self._call(self.rt.cudaEventSynchronize(end), "cudaEventSynchronize")
        return float(self._call(self.rt.cudaEventElapsedTime(start, end), "cudaEventElapsedTime"))

    def destroy_event(self, event: Any) -> None:
        self._call(self.rt.cudaEventDestroy(event), "cudaEventDestroy")


class PyCuda:
    """pycuda's driver API on the device's primary context (shared with TensorRT's runtime API)."""

    name = "pycuda"

    def __init__(self, driver: Any) -> None:
        self.drv = driver
        try:
            driver.init()
            if driver.Device.count() < 1:
                raise HardwareError("no CUDA device found by pycuda.",
                                    "run on a Jetson or a machine with an NVIDIA GPU and driver")
            self.device = driver.Device(0)
        except driver.Error as exc:
            raise HardwareError(f"CUDA is not usable through pycuda: {exc}.",
                                "check the NVIDIA driver (`nvidia-smi` or `tegrastats`)") from exc
        self.context = self.device.retain_primary_context()
        self.context.push()
        atexit.register(self.context.pop)
        self._allocations: dict[int, Any] = {}

    def device_info(self) -> DeviceInfo:
        major, minor = self.device.compute_capability()
        return DeviceInfo(self.device.name(), f"{major}.{minor}", int(self.device.total_memory()) >> 20, self.name)

    def malloc(self, nbytes: int) -> int:
        allocation = self.drv.mem_alloc(max(nbytes, 1))
        self._allocations[int(allocation)] = allocation
        return int(allocation)

    def free(self, ptr: int) -> None:
        self._allocations.pop(ptr).free()

    def pinned(self, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        return self.drv.pagelocked_empty(shape, dtype)

    def free_pinned(self, array: np.ndarray) -> None:
        """pycuda frees page-locked memory when the array is garbage collected."""

    def memcpy_htod(self, dst: int, src: np.ndarray) -> None:
        self.drv.memcpy_htod(dst, np.ascontiguousarray(src))

    def create_stream(self) -> Any:
        return self.drv.Stream()

    def stream_handle(self, stream: Any) -> int:
        return int(stream.handle)

    def destroy_stream(self, stream: Any) -> None:
        """pycuda destroys streams when they are garbage collected."""

    def memcpy_htod_async(self, dst: int, src: np.ndarray, stream: Any) -> None:
        self.drv.memcpy_htod_async(dst, src, stream)

    def memcpy_dtoh_async(self, dst: np.ndarray, src: int, stream: Any) -> None:
        self.drv.memcpy_dtoh_async(dst, src, stream)

    def synchronize(self, stream: Any) -> None:
        stream.synchronize()

    def create_event(self) -> Any:
        return self.drv.Event()

    def record(self, event: Any, stream: Any) -> None:
        event.record(stream)

    def elapsed_ms(self, start: Any, end: Any) -> float:
        end.synchronize()
        return float(start.time_till(end))

    def destroy_event(self, event: Any) -> None:
        """pycuda destroys events when they are garbage collected."""


def _error_name(err: Any) -> str:
    return str(getattr(err, "name", err))


# cuda-python >= 12.6 names its runtime module cuda.bindings.runtime; older releases cuda.cudart.
_BINDINGS = (("cuda.bindings.runtime", CudaPython), ("cuda.cudart", CudaPython), ("pycuda.driver", PyCuda))


def load_cuda() -> CudaBackend:
    """The first CUDA binding that imports (cuda-python, then pycuda), checked for a usable device."""
    problems = []
    for module, backend in _BINDINGS:
        try:
            binding = require(module, "running TensorRT engines")
        except MissingDependency as exc:
            problems.append(exc.problem)
            continue
        return backend(binding)
    raise MissingDependency(f"no CUDA Python binding is installed ({' '.join(problems)})", CUDA_FIX)
