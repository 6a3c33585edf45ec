"""ONNX export of a real trained model folder: round trip, metadata, batch handling, onnxsim fallback, tolerance."""

from __future__ import annotations

import json
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from patrol_deploy.backends.onnxrt import cpu_session
from patrol_deploy.baseline import model_meta
from patrol_deploy.config import ExportConfig, load_config
from patrol_deploy.data import DataBundle
from patrol_deploy.deployment.calibration import CalibrationRecipe, calibration_array
from patrol_deploy.deployment.export import (
    ExportResult,
    SimplifyWarning,
    compare_with_torch,
    export_model_dir,
    read_sidecar,
    sidecar_path,
    to_onnx,
)
from patrol_deploy.deployment.onnx_runner import load_onnx, read_metadata
from patrol_deploy.errors import ModelError
from patrol_deploy.modelio import load_model_dir, save_model_dir
from patrol_deploy.models import create_model
from patrol_deploy.runfolder import RunFolder
from patrol_deploy.split import cut


def calib_images(info: dict, n: int) -> np.ndarray:
    return calibration_array(info["source"]["data"], info["source"]["seed"], CalibrationRecipe(images=n))


def test_round_trip_names_metadata_and_tolerance(exported: ExportResult, model_dir: Path) -> None:
    _, meta = load_model_dir(model_dir)
    edge, cloud = exported.edge_info, exported.cloud_info
    assert edge["inputs"] == [{"name": "input", "shape": ["batch", 1, 16, 16], "dtype": "float32"}]
    assert edge["outputs"] == [{"name": "features", "shape": ["batch", 16, 16, 16], "dtype": "float32"}]
    assert cloud["inputs"][0]["name"] == "features" and cloud["outputs"][0]["name"] == "logits"
    assert cloud["outputs"][0]["shape"] == ["batch", meta.num_classes]
    for info in (edge, cloud):
        check = info["check"]
        assert check["images"] == 32 and check["values_beyond_tolerance"] == 0
        assert check["max_abs_error"] <= info["check"]["atol"] + 1e-9
        assert info["simplified"] and info["opset"] == 19 and info["split"] == "layer1"
    norm = edge["normalization"]
    assert norm["mean"] == meta.mean and norm["std"] == meta.std and norm["layout"] == "NCHW"
    lo, hi = norm["input_range"][0]
    assert lo == pytest.approx(-meta.mean[0] / meta.std[0]) and hi == pytest.approx((1 - meta.mean[0]) / meta.std[0])
    # the ONNX file carries the same facts, so the device needs nothing else
    model = load_onnx(exported.edge)
    stored = read_metadata(model)
    for key in ("split", "task", "normalization", "inputs", "outputs", "partition", "precision", "num_classes"):
        assert stored[key] == edge[key], key
    assert read_sidecar(exported.edge)["sha256"] == edge["sha256"]
    assert [i.name for i in model.graph.input] == ["input"]
    # recorded in the run folder's manifest with every file
    run = RunFolder(exported.edge.parent.parent)
    recorded = run.stage("export")
    assert recorded is not None and sorted(recorded["files"]) == sorted(
        f"export/{p.name}" for p in exported.files())


def test_dynamic_batch_runs_batches_of_1_and_5(exported: ExportResult, model_dir: Path) -> None:
    model, meta = load_model_dir(model_dir)
    edge = cut(model, meta.split)[0].eval()
    session = cpu_session(exported.edge)
    x = calib_images(exported.edge_info, 5)
    for batch in (x[:1], x):
        got = session.run(None, {"input": batch})[0]
        with torch.no_grad():
            ref = edge(torch.from_numpy(batch)).numpy()
        assert got.shape == ref.shape == (len(batch), 16, 16, 16)
        np.testing.assert_allclose(got, ref, atol=1e-4, rtol=1e-3)


def test_onnxsim_failure_falls_back_with_a_warning(model_dir: Path, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    onnxsim = pytest.importorskip("onnxsim")

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("simulated onnxsim crash")

    monkeypatch.setattr(onnxsim, "simplify", broken)
    with pytest.warns(SimplifyWarning, match="simulated onnxsim crash"):
        result = export_model_dir(model_dir, RunFolder(tmp_path), ExportConfig(opset=17))
    info = result.edge_info
    assert not info["simplified"] and "simulated onnxsim crash" in info["simplify_error"]
    assert info["check"]["values_beyond_tolerance"] == 0 and info["opset"] == 17
    assert info["inputs"][0]["shape"] == [1, 1, 16, 16]  # static batch by default
    load_onnx(result.edge)  # still a valid, checked file


class _Shifted(nn.Module):
    """An edge whose output is off by 0.01: what an exporter bug would look like."""

    def __init__(self, edge: nn.Module) -> None:
        super().__init__()
        self.edge = edge

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.edge(x) + 0.01


def test_a_difference_beyond_tolerance_is_an_error(exported: ExportResult, model_dir: Path) -> None:
    model, meta = load_model_dir(model_dir)
    shifted = _Shifted(cut(model, meta.split)[0])
    x = torch.from_numpy(calib_images(exported.edge_info, 4))
    with pytest.raises(ModelError, match="differs from torch"):
        compare_with_torch(load_onnx(exported.edge), shifted, x, ExportConfig())


def test_an_unchanged_export_is_reused(exported: ExportResult, model_dir: Path) -> None:
    before = exported.edge.stat().st_mtime_ns
    again = export_model_dir(model_dir, RunFolder(exported.edge.parent.parent), ExportConfig(dynamic_batch=True))
    assert again.edge == exported.edge and exported.edge.stat().st_mtime_ns == before
    assert again.edge_info == exported.edge_info


def test_reid_cloud_exports_the_embedding(tmp_path: Path, digits_bundle: DataBundle) -> None:
    cfg = load_config(None, ["data.source=digits", "data.image_size=16", "model.width=8", "model.task=reid",
                             "model.embedding_dim=12"])
    torch.manual_seed(0)
    model = create_model(cfg.model, digits_bundle.num_classes, 1).eval()
    save_model_dir(tmp_path / "m", model, model_meta(cfg, digits_bundle, "layer2"))
    result = export_model_dir(tmp_path / "m", RunFolder(tmp_path / "run"), ExportConfig())
    assert result.cloud_info["outputs"] == [{"name": "embedding", "shape": [1, 12], "dtype": "float32"}]
    assert result.edge_info["task"] == "reid" and result.edge_info["outputs"][0]["shape"] == [1, 16, 8, 8]
    assert json.loads(sidecar_path(result.cloud).read_text())["partition"] == "cloud"


def test_export_failure_names_the_opset() -> None:
    class Unexportable(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.linalg.svd(x).S  # no ONNX symbolic for SVD

    with pytest.raises(ModelError, match="opset 19"):
        to_onnx(nn.Sequential(OrderedDict(svd=Unexportable())), torch.zeros(1, 2, 2), 19, False, "input", "out")
