"""The entropy calibrator: batches from the recipe's .npz, device copies, and the calibration cache."""

from __future__ import annotations

import types

import numpy as np
import pytest

from patrol_deploy.backends.calibrator import CALIB_KEY, load_calibration, make_entropy_calibrator
from patrol_deploy.errors import DataError
from tests.engine.trt_fakes import FakeCuda


@pytest.fixture
def calib_npz(tmp_path):
    """20 images (N,3,8,8) float32 under 'input', the format the calibration recipe writes."""
    path = tmp_path / "calib.npz"
    np.savez(path, input=np.random.default_rng(1).standard_normal((20, 3, 8, 8)).astype(np.float32))
    return path


def fake_trt() -> types.ModuleType:
    trt = types.ModuleType("tensorrt")

    class IInt8EntropyCalibrator2:
        def __init__(self) -> None:
            self.base_initialized = True

    trt.IInt8EntropyCalibrator2 = IInt8EntropyCalibrator2  # type: ignore[attr-defined]
    return trt


def test_load_calibration_batches_and_drops_the_partial_batch(calib_npz):
    batches = load_calibration(calib_npz, (3, 8, 8), batch_size=6)
    assert batches.shape == (3, 6, 3, 8, 8) and batches.dtype == np.float32
    raw = np.load(calib_npz)[CALIB_KEY]
    np.testing.assert_array_equal(batches[1, 0], raw[6])


@pytest.mark.parametrize(("arrays", "message"), [
    ({"images": np.zeros((4, 3, 8, 8), np.float32)}, "no 'input' array"),
    ({"input": np.zeros((4, 1, 8, 8), np.float32)}, "network input is \\(N, 3, 8, 8\\)"),
    ({"input": np.full((4, 3, 8, 8), np.nan, np.float32)}, "finite floats"),
    ({"input": np.zeros((2, 3, 8, 8), np.float32)}, "fewer than one calibration batch of 4"),
])
def test_bad_calibration_files_are_data_errors(tmp_path, arrays, message):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(DataError, match=message):
        load_calibration(path, (3, 8, 8), batch_size=4)


def test_calibrator_feeds_batches_to_the_device_and_writes_the_cache(calib_npz, tmp_path):
    cuda = FakeCuda()
    batches = load_calibration(calib_npz, (3, 8, 8), batch_size=5)
    cache = tmp_path / "edge.calib"
    cache.write_bytes(b"stale cache from other data")
    calibrator = make_entropy_calibrator(fake_trt(), batches, cache, 5, cuda)
    assert calibrator.base_initialized and calibrator.get_batch_size() == 5
    assert calibrator.read_calibration_cache() is None  # fresh data: recalibrate, do not trust the old cache
    pointers = [calibrator.get_batch(["input"]) for _ in range(4)]
    assert len({p[0] for p in pointers}) == 1  # one device buffer, reused
    np.testing.assert_array_equal(cuda.read(pointers[0][0], (5, 3, 8, 8), np.float32), batches[3])
    assert calibrator.get_batch(["input"]) is None and cuda.memory == {}  # exhausted: buffer freed
    calibrator.write_calibration_cache(memoryview(b"TRT-8601-EntropyCalibration2\ninput: 3c010a14"))
    assert cache.read_bytes().startswith(b"TRT-8601-EntropyCalibration2")


def test_cache_only_calibrator_replays_the_cache(tmp_path):
    cache = tmp_path / "edge.calib"
    calibrator = make_entropy_calibrator(fake_trt(), None, cache, 4, FakeCuda())
    assert calibrator.read_calibration_cache() is None  # no cache yet
    cache.write_bytes(b"TRT-100300-EntropyCalibration2\n")
    assert calibrator.read_calibration_cache() == b"TRT-100300-EntropyCalibration2\n"
    assert calibrator.get_batch(["input"]) is None
