"""Input arrays for running, comparing and profiling models: seeded random data or the user's .npz."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from patrol_deploy.engine.onnxinfo import TensorInfo
from patrol_deploy.errors import ConfigError, DataError


def batch_shape(tensor: TensorInfo, batch: int) -> tuple[int, ...]:
    """`tensor`'s shape with the dynamic batch axis set to `batch`; a fixed batch must match."""
    if not tensor.shape:
        return ()
    if tensor.shape[0] < 0:
        return (batch, *tensor.shape[1:])
    if batch != tensor.shape[0]:
        raise ConfigError(f"input '{tensor.name}' has a fixed batch of {tensor.shape[0]}; --batch {batch} "
                          "cannot be used.", f"pass --batch {tensor.shape[0]}, or export with a dynamic batch axis")
    return tensor.shape


def random_inputs(specs: Sequence[TensorInfo], batch: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Standard-normal float inputs (the scale of normalized images) and zero integer inputs, reproducibly."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for tensor in specs:
        shape, dtype = batch_shape(tensor, batch), np.dtype(tensor.dtype)
        feeds[tensor.name] = (rng.standard_normal(shape).astype(dtype) if np.issubdtype(dtype, np.floating)
                              else np.zeros(shape, dtype))
    return feeds


def load_inputs(path: str | Path, specs: Sequence[TensorInfo], batch: int) -> dict[str, np.ndarray]:
    """Inputs from an .npz: keyed by input name, or `input` for a single-input model; the first `batch` rows."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read inputs from {path}: {exc}.", "pass an .npz of input arrays") from exc
    feeds = {}
    for tensor in specs:
        key = tensor.name if tensor.name in arrays else "input" if len(specs) == 1 and "input" in arrays else None
        if key is None:
            raise DataError(f"{path} has no array for input '{tensor.name}' (it has: {', '.join(arrays)}).",
                            f"save the array under the key '{tensor.name}'")
        array = arrays[key][:batch].astype(np.dtype(tensor.dtype))
        expected = batch_shape(tensor, batch)
        if array.shape != expected:
            raise DataError(f"{path}:{key} gives shape {list(array.shape)} for input '{tensor.name}', "
                            f"expected {list(expected)}.", "save at least --batch rows of the model's input size")
        feeds[tensor.name] = np.ascontiguousarray(array)
    return feeds
