"""Loading ONNX files (corrupt, truncated, empty, missing) and running an exported edge as an EdgeRunner."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from patrol_deploy.attacks.runner import EdgeRunner, TorchEdgeRunner
from patrol_deploy.data import DataBundle
from patrol_deploy.deployment.export import ExportResult
from patrol_deploy.deployment.onnx_runner import (
    OnnxEdgeRunner,
    load_onnx,
    read_metadata,
    with_edge_runner,
    write_metadata,
)
from patrol_deploy.errors import ModelError
from patrol_deploy.modelio import load_model_dir
from patrol_deploy.split import cut
from patrol_deploy.training import evaluate


@pytest.mark.parametrize("damage", ["half", "tail", "empty", "garbage"])
def test_corrupt_or_truncated_files_are_clear_errors(exported: ExportResult, tmp_path: Path, damage: str) -> None:
    data = exported.edge.read_bytes()
    bad = {"half": data[: len(data) // 2], "tail": data[:-7], "empty": b"",
           "garbage": bytes(np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8))}[damage]
    path = tmp_path / "edge.onnx"
    path.write_bytes(bad)
    with pytest.raises(ModelError) as info:
        load_onnx(path)
    assert info.value.fix and ("corrupt" in info.value.problem or "empty" in info.value.problem)


def test_a_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="does not exist"):
        load_onnx(tmp_path / "nope.onnx")


def test_metadata_round_trip_replaces_old_values(exported: ExportResult) -> None:
    model = load_onnx(exported.edge)
    write_metadata(model, {"split": "layer9", "extra": [1, 2]})
    assert read_metadata(model) == {"split": "layer9", "extra": [1, 2]}
    assert sum(p.key == "patrol_deploy.split" for p in model.metadata_props) == 1


def test_onnx_edge_runner_matches_torch_and_the_protocol(exported: ExportResult, model_dir: Path,
                                                         digits_bundle: DataBundle) -> None:
    model, meta = load_model_dir(model_dir)
    edge = cut(model, meta.split)[0]
    runner = OnnxEdgeRunner(exported.edge, edge)
    assert isinstance(runner, EdgeRunner) and not runner.differentiable and runner.name == "edge"
    assert runner.metadata["split"] == meta.split
    x, _ = digits_bundle.aux.tensors(np.arange(7))
    np.testing.assert_allclose(runner.features(x).numpy(), TorchEdgeRunner(edge).features(x).numpy(),
                               atol=1e-4, rtol=1e-3)
    with pytest.raises(ModelError, match="does not fit the ONNX input"):
        runner.features(torch.zeros(2, 3, 16, 16))


def test_utility_through_the_onnx_edge_equals_torch(exported: ExportResult, model_dir: Path,
                                                    digits_bundle: DataBundle) -> None:
    model, meta = load_model_dir(model_dir)
    runner = OnnxEdgeRunner(exported.edge, cut(model, meta.split)[0])
    hybrid = with_edge_runner(model, meta.split, runner)
    assert evaluate(hybrid, digits_bundle, meta.task) == pytest.approx(evaluate(model, digits_bundle, meta.task),
                                                                        abs=0.2)
