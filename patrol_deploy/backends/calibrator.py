"""INT8 entropy calibration for TensorRT (IInt8EntropyCalibrator2) from a calibration .npz, with a reusable cache.

Implicit INT8 quantization (TensorRT 8.x on the GPU, and DLA up to 10.x)
needs TensorRT to measure activation ranges on representative inputs. The
calibration recipe writes those inputs to an .npz file: key `input`, a
float32 array (N, C, H, W) normalized exactly like training. The calibrator
feeds it in batches and saves TensorRT's calibration cache, so later builds
(and trtexec `--calib`, and DLA builds) reuse the scales without the data.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np

from patrol_deploy.errors import DataError
from patrol_deploy.runfolder import atomic_path

if TYPE_CHECKING:
    from patrol_deploy.backends.cuda import CudaBackend

CALIB_KEY = "input"


def load_calibration(path: str | Path, input_shape: tuple[int, ...], batch_size: int) -> np.ndarray:
    """Calibration batches (B, batch_size, C, H, W) float32 from the recipe's .npz; a partial last batch is dropped."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as npz:
            if CALIB_KEY not in npz.files:
                raise DataError(f"{path} has no '{CALIB_KEY}' array (it has: {', '.join(npz.files) or 'nothing'}).",
                                "pass the .npz written by the calibration recipe")
            data = npz[CALIB_KEY]
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read calibration data {path}: {exc}.",
                        "pass the .npz written by the calibration recipe") from exc
    if data.ndim != 4 or tuple(data.shape[1:]) != tuple(input_shape):
        raise DataError(f"{path}:{CALIB_KEY} has shape {list(data.shape)}, but the network input is "
                        f"(N, {', '.join(str(d) for d in input_shape)}).",
                        "write calibration data at the exported model's input size")
    if not np.issubdtype(data.dtype, np.floating) or not np.isfinite(data).all():
        raise DataError(f"{path}:{CALIB_KEY} must be finite floats (got {data.dtype}).",
                        "regenerate the calibration data")
    count = data.shape[0] // batch_size
    if count < 1:
        raise DataError(f"{path} holds {data.shape[0]} images, fewer than one calibration batch of {batch_size}.",
                        "write more calibration images (a few hundred is typical)")
    return np.ascontiguousarray(data[: count * batch_size], dtype=np.float32).reshape(
        count, batch_size, *input_shape)


def make_entropy_calibrator(trt: ModuleType, batches: np.ndarray | None, cache_path: Path, batch_size: int,
                            cuda: CudaBackend) -> Any:
    """A trt.IInt8EntropyCalibrator2 over `batches` (or, with None, one that only replays `cache_path`).

    Given data, it always recalibrates and rewrites the cache; given no data,
    TensorRT takes the scales from the cache.

    The class is defined here because its base class lives in the lazily
    imported TensorRT module.
    """

    class EntropyCalibrator(trt.IInt8EntropyCalibrator2):  # type: ignore[name-defined]
        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)  # pybind trampolines need the explicit base init
            self.index = 0
            self.device_ptr: int | None = None

        def get_batch_size(self) -> int:
            return batch_size

        def get_batch(self, names: list[str]) -> list[int] | None:
            if batches is None or self.index >= len(batches):
                self.free()
                return None
            batch = batches[self.index]
            if self.device_ptr is None:
                self.device_ptr = cuda.malloc(batch.nbytes)
            cuda.memcpy_htod(self.device_ptr, batch)
            self.index += 1
            return [self.device_ptr for _ in names]

        def read_calibration_cache(self) -> bytes | None:
            if batches is not None:  # fresh data: recalibrate rather than trust a cache made from other data
                return None
            return cache_path.read_bytes() if cache_path.is_file() and cache_path.stat().st_size else None

        def write_calibration_cache(self, cache: Any) -> None:
            with atomic_path(cache_path) as tmp:
                tmp.write_bytes(bytes(cache))

        def free(self) -> None:
            if self.device_ptr is not None:
                cuda.free(self.device_ptr)
                self.device_ptr = None

    return EntropyCalibrator()
