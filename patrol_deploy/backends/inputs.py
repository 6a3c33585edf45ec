"""Input arrays for running, comparing and profiling models: seeded random data or the user's .npz."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from patrol_deploy.backends.onnxinfo import TensorInfo
from patrol_deploy.errors import ConfigError, DataError


def parse_input_shapes(texts: Sequence[str]) -> dict[str, tuple[int, ...]]:
    """`--input-shape` values (trtexec's `--shapes` syntax): 'input:1x3x64x64', several per value with commas."""
    shapes: dict[str, tuple[int, ...]] = {}
    for text in (part.strip() for value in texts for part in value.split(",")):
        name, _, dims = text.rpartition(":")  # names may contain ':' (e.g. 'input:0'); the dims never do
        try:
            shape = tuple(int(d) for d in dims.lower().split("x"))
        except ValueError:
            shape = ()
        if not name or not shape or min(shape) < 1:
            raise ConfigError(f"--input-shape '{text}' is not NAME:DIMS.", "write e.g. --input-shape input:1x3x64x64")
        shapes[name] = shape
    return shapes


def with_input_shapes(specs: Sequence[TensorInfo], shapes: dict[str, tuple[int, ...]]) -> list[TensorInfo]:
    """`specs` with the `--input-shape` of each named input; a shape must keep the rank and the fixed axes."""
    unknown = sorted(set(shapes) - {t.name for t in specs})
    if unknown:
        raise ConfigError(f"--input-shape names {unknown}, which the model does not have.",
                          f"its inputs are: {', '.join(t.name for t in specs)}")
    resolved = []
    for tensor in specs:
        shape = shapes.get(tensor.name)
        if shape is not None and (len(shape) != len(tensor.shape)
                                  or any(0 <= d != s for d, s in zip(tensor.shape, shape, strict=True))):
            raise ConfigError(f"--input-shape {tensor.name}:{'x'.join(map(str, shape))} does not fit the model's "
                              f"input {list(tensor.shape)} (-1 marks a dynamic axis).",
                              "keep the rank and the fixed axes, and choose only the dynamic ones")
        resolved.append(tensor if shape is None else TensorInfo(tensor.name, shape, tensor.dtype))
    return resolved


def default_batch(specs: Sequence[TensorInfo], batch: int | None) -> int:
    """`--batch`, or when not given the batch an input fixes (its model or its `--input-shape`), else 1."""
    if batch is not None:
        return batch
    return next((t.shape[0] for t in specs if t.shape and t.shape[0] > 0), 1)


def batch_shape(tensor: TensorInfo, batch: int) -> tuple[int, ...]:
    """`tensor`'s shape with the dynamic batch axis set to `batch`; a fixed batch must match, and no other axis may
    be dynamic (`--input-shape` fixes them)."""
    if not tensor.shape:
        return ()
    if tensor.shape[0] >= 0 and batch != tensor.shape[0]:
        raise ConfigError(f"input '{tensor.name}' has a fixed batch of {tensor.shape[0]}; --batch {batch} "
                          "cannot be used.", f"pass --batch {tensor.shape[0]}, or export with a dynamic batch axis")
    dynamic = [i for i, d in enumerate(tensor.shape[1:], start=1) if d < 0]
    if dynamic:
        example = "x".join(str(batch if i == 0 else d if d > 0 else "N") for i, d in enumerate(tensor.shape))
        raise ConfigError(f"input '{tensor.name}' has dynamic axes {dynamic} besides the batch axis "
                          f"(shape {list(tensor.shape)}), so its size must be chosen.",
                          f"pass --input-shape {tensor.name}:{example} with N set")
    return (batch, *tensor.shape[1:])


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
