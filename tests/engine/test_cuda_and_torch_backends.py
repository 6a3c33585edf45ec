"""The cuda-python wrapper's pointer handling (against host memory), CUDA detection, and the torch profile backend."""

from __future__ import annotations

import ctypes

import numpy as np
import pytest

from patrol_deploy.backends.cuda import CudaPython, load_cuda
from patrol_deploy.engine.profile import profile_model
from patrol_deploy.errors import HardwareError, MissingDependency


class HostRuntime:
    """Stands in for `cuda.bindings.runtime`: same call shapes ((err, value) tuples), memory on the host."""

    class cudaError_t:
        cudaSuccess = 0
        cudaErrorMemoryAllocation = 2

    class cudaMemcpyKind:
        cudaMemcpyHostToDevice = 1
        cudaMemcpyDeviceToHost = 2

    def __init__(self, devices: int = 1) -> None:
        self.devices = devices
        self.buffers: dict[int, ctypes.Array] = {}
        self.copies: list[int] = []

    def cudaGetDeviceCount(self):
        return (0, self.devices)

    def _alloc(self, nbytes):
        buffer = ctypes.create_string_buffer(nbytes)
        self.buffers[ctypes.addressof(buffer)] = buffer
        return (0, ctypes.addressof(buffer))

    def cudaMalloc(self, nbytes):
        return self._alloc(nbytes) if nbytes < 1 << 30 else (2, None)

    cudaMallocHost = cudaMalloc

    def cudaFree(self, ptr):
        del self.buffers[ptr]
        return (0,)

    cudaFreeHost = cudaFree

    def cudaMemcpy(self, dst, src, nbytes, kind):
        self.copies.append(kind)
        ctypes.memmove(dst, src, nbytes)
        return (0,)

    def cudaMemcpyAsync(self, dst, src, nbytes, kind, stream):
        return self.cudaMemcpy(dst, src, nbytes, kind)


def test_cuda_python_wrapper_moves_real_bytes_through_pointers():
    rt = HostRuntime()
    cuda = CudaPython(rt)
    host = cuda.pinned((2, 3), np.dtype(np.float32))
    assert host.ctypes.data in rt.buffers  # the array is a view of the pinned allocation
    host[...] = np.arange(6, dtype=np.float32).reshape(2, 3)
    device = cuda.malloc(host.nbytes)
    cuda.memcpy_htod_async(device, host, stream=None)
    back = cuda.pinned((2, 3), np.dtype(np.float32))
    cuda.memcpy_dtoh_async(back, device, stream=None)
    np.testing.assert_array_equal(back, host)
    assert rt.copies == [1, 2]
    for array in (host, back):
        cuda.free_pinned(array)
    cuda.free(device)
    assert rt.buffers == {}
    with pytest.raises(HardwareError, match="cudaMalloc failed"):
        cuda.malloc(1 << 31)


def test_cuda_python_without_devices_is_a_hardware_error():
    with pytest.raises(HardwareError, match="0 devices") as err:
        CudaPython(HostRuntime(devices=0))
    assert err.value.exit_code == 3


def test_load_cuda_here_either_finds_a_device_or_says_why():
    try:
        backend = load_cuda()
    except HardwareError as exc:  # a CUDA binding but no driver / GPU (this CI machine)
        assert "no usable CUDA device" in exc.problem and exc.exit_code == 3
        return
    except MissingDependency as exc:
        assert "pycuda" in str(exc.fix)
        return
    info = backend.device_info()
    assert info.name and info.compute_capability.count(".") == 1


def test_torch_backend_profiles_the_edge_blocks_of_a_model_folder(tmp_path):
    torch = pytest.importorskip("torch")
    from patrol_deploy.config import ModelConfig
    from patrol_deploy.modelio import ModelMeta, save_model_dir
    from patrol_deploy.models import create_model

    torch.set_num_threads(1)
    cfg = ModelConfig(width=8)
    save_model_dir(tmp_path / "m", create_model(cfg, 5, 1),
                   ModelMeta(model=cfg.model_dump(mode="json"), split="layer1", num_classes=5, input_shape=[1, 16, 16],
                             mean=[0.13], std=[0.3]))
    result = profile_model(tmp_path / "m", None, batch=2, runs=4, warmup=1,
                           state=lambda: {"jetson": None, "warnings": []})
    assert result["backend"] == "torch" and result["split"] == "layer1" and result["device"] in ("cpu", "cuda")
    assert [layer["name"] for layer in result["layers"]] == ["stem", "layer1"]
    assert result["latency"]["runs"] == 4 and all(layer["mean_ms"] > 0 for layer in result["layers"])
