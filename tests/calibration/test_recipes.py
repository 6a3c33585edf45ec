"""The calibration recipe: calib-split images only, preprocessed like training, stored as the .npz ModelOpt reads."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from patrol_deploy.config import DataConfig
from patrol_deploy.data import DataBundle
from patrol_deploy.deployment.calibration import INPUT_NAME, CalibrationRecipe, calibration_array, write_npz
from patrol_deploy.errors import DataError

DIGITS = DataConfig(source="digits", image_size=16)  # the config behind the session's digits_bundle


def rows(x: np.ndarray) -> set[bytes]:
    return {row.tobytes() for row in np.ascontiguousarray(x, dtype=np.float32)}


def test_images_come_from_the_calib_split_preprocessed_like_training(digits_bundle: DataBundle) -> None:
    x = calibration_array(DIGITS, 0, CalibrationRecipe(images=20, seed=3))
    assert x.shape == (20, 1, 16, 16) and x.dtype == np.float32
    calib = rows(digits_bundle.calib.tensors()[0].numpy())  # the exact tensors training's batches are made of
    assert rows(x) <= calib and len(rows(x)) == 20
    assert not rows(x) & rows(digits_bundle.test.tensors()[0].numpy())  # never the evaluation images


def test_the_seed_picks_the_images_and_the_split_caps_the_count(digits_bundle: DataBundle) -> None:
    a = calibration_array(DIGITS, 0, CalibrationRecipe(images=10, seed=1))
    assert np.array_equal(a, calibration_array(DIGITS, 0, CalibrationRecipe(images=10, seed=1)))
    assert not np.array_equal(a, calibration_array(DIGITS, 0, CalibrationRecipe(images=10, seed=2)))
    assert len(calibration_array(DIGITS, 0, CalibrationRecipe(images=10_000))) == len(digits_bundle.calib)


def test_an_empty_calib_split_names_the_fix() -> None:
    with pytest.raises(DataError, match="calibration split") as info:
        calibration_array(DIGITS.model_copy(update={"calib_fraction": 0.0}), 0, CalibrationRecipe())
    assert "calib_fraction" in (info.value.fix or "")


def test_npz_holds_one_float32_array_under_the_input_name(tmp_path: Path) -> None:
    x = np.random.default_rng(0).standard_normal((3, 1, 4, 4))  # float64 in, float32 out
    path = write_npz(tmp_path / "calib.npz", x)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["calib.npz"]  # no temp or doubled-suffix files
    with np.load(path) as npz:
        assert npz.files == [INPUT_NAME] and npz[INPUT_NAME].dtype == np.float32
        np.testing.assert_allclose(npz[INPUT_NAME], x, rtol=1e-6)
