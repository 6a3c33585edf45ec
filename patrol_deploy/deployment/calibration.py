"""Calibration recipes: which images calibrate INT8, how many, and the .npz file ModelOpt and TensorRT read.

A recipe always draws from the `calib` split, which `load_data` keeps disjoint
from the evaluation images (`test`) and from the attacker's auxiliary data, and
preprocesses exactly like training because it goes through `ImageSplit.tensors`
(resize at load time, /255, per-channel mean/std of the training split). The
.npz holds one float32 array (N, C, H, W) under the ONNX input name.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from patrol_deploy.config import DataConfig
from patrol_deploy.data import load_data
from patrol_deploy.errors import DataError
from patrol_deploy.progress import warn
from patrol_deploy.runfolder import write_npz as write_arrays

INPUT_NAME = "input"  # the edge ONNX input name that `patrol_deploy.deployment.export` writes
SPLIT = "calib"  # the only split a recipe draws from: disjoint from test and aux


@dataclass(frozen=True)
class CalibrationRecipe:
    """Which calibration images: `images` of the calib split, picked by a seeded shuffle of it."""

    images: int = 128
    seed: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {"split": SPLIT, **asdict(self),
                "preprocessing": "ImageSplit.tensors: /255, then (x - mean) / std of training"}


def calibration_array(data: DataConfig | dict[str, Any], data_seed: int, recipe: CalibrationRecipe) -> np.ndarray:
    """The recipe's images as normalized float32 (N, C, H, W), reloaded from the data config that trained the model."""
    cfg = data if isinstance(data, DataConfig) else DataConfig.model_validate(data)
    split = load_data(cfg, data_seed).calib
    if len(split) == 0:
        raise DataError(f"the calibration split of '{cfg.source}' is empty.",
                        "raise data.calib_fraction (or data.limit) and retrain, so INT8 can be calibrated")
    take = min(recipe.images, len(split))
    if take < recipe.images:
        warn(f"{recipe.images} calibration images were asked for (quantize.calibration_images / "
             f"--calibration-images) but the calibration split of '{cfg.source}' holds {len(split)}: calibrating on "
             f"{take}. Raise data.calib_fraction (or data.limit) for more.")
    order = np.sort(np.random.default_rng(recipe.seed).permutation(len(split))[:take])
    x, _ = split.tensors(order)
    return np.ascontiguousarray(x.numpy(), dtype=np.float32)


def write_npz(path: str | Path, array: np.ndarray, input_name: str = INPUT_NAME) -> Path:
    """Write `array` as `{input_name: array}` atomically (the layout ModelOpt's --calibration_data expects)."""
    return write_arrays(path, {input_name: np.asarray(array, dtype=np.float32)}, compressed=False)

