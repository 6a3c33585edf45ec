"""ModelOpt quantization of a real exported edge: INT8 Q/DQ (ONNX and torch routes), FP16, and bad inputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from patrol_deploy.baseline import model_meta
from patrol_deploy.config import ExportConfig, load_config
from patrol_deploy.data import DataBundle
from patrol_deploy.deployment.calibration import CalibrationRecipe, calibration_array
from patrol_deploy.deployment.export import ExportResult
from patrol_deploy.deployment.onnx_runner import OnnxEdgeRunner, load_onnx, read_metadata
from patrol_deploy.deployment.quantize import (
    QuantizeResult,
    check_calibration_fits,
    check_quantized,
    check_standard_ops,
    graph_stats,
    modelopt_onnx_int8,
    quantize_edge,
    quantized_ops,
)
from patrol_deploy.errors import ConfigError, DataError, ModelError
from patrol_deploy.modelio import load_model_dir, save_model_dir
from patrol_deploy.models import create_model
from patrol_deploy.runfolder import RunFolder
from patrol_deploy.split import cut

onnx = pytest.importorskip("onnx")
pytest.importorskip("modelopt.onnx.quantization")

# Measured on this fixture (digits 16x16, width 16, 32 calibration images) with the weights of seeds 0-2 under
# ATEN_CPU_CAPABILITY default/avx2 x OMP_NUM_THREADS 1/2 (12 runs; the fixture's one epoch of training differs with
# the CPU): ONNX-route INT8 features differ from float by a mean of 0.21-0.37 % of the float features' range
# (0.21-0.34 % on held-out images), and at most by 14-43 % of it in the single worst element (entropy calibration
# clips the rare largest activations, so that one varies most); FP16 by at most 0.02-0.06 %. The bounds leave at
# least 2x room: the mean catches a wrong scale, the max only an edge that loses its range.
INT8_MEAN_REL_BOUND = 0.008
INT8_MAX_REL_BOUND = 0.9
FP16_MAX_REL_BOUND = 2e-3


def op_count(path: Path, op: str) -> int:
    return sum(n.op_type == op for n in load_onnx(path).graph.node)


@pytest.fixture(scope="module")
def int8(exported: ExportResult) -> QuantizeResult:
    return quantize_edge(exported.edge, RunFolder(exported.edge.parent.parent), "int8", "onnx", calibration_images=32)


def test_onnx_route_int8_is_qdq_and_close_to_float(int8: QuantizeResult, exported: ExportResult,
                                                   model_dir: Path) -> None:
    q = int8.info["quantization"]
    assert int8.path.name == "edge.int8.onnx" and int8.info["precision"] == "int8" and int8.info["opset"] >= 19
    n_q, n_dq = op_count(int8.path, "QuantizeLinear"), op_count(int8.path, "DequantizeLinear")
    assert n_q > 0 and n_dq >= n_q and q["graph"]["quantize_linear"] == n_q
    assert q["graph"]["ops_quantized"] == q["graph"]["ops_total"] == op_count(int8.path, "Conv")
    assert q["calibration"]["split"] == "calib" and q["calibration"]["images_used"] == 32
    assert q["vs_float"]["mean_rel_error"] < INT8_MEAN_REL_BOUND and q["vs_float"]["max_rel_error"] < INT8_MAX_REL_BOUND
    # the device-side facts travel with the quantized file too
    meta = read_metadata(load_onnx(int8.path))
    assert meta["precision"] == "int8" and meta["normalization"] == exported.edge_info["normalization"]
    assert int8.info["inputs"] == exported.edge_info["inputs"]
    # it runs in ONNX Runtime as an EdgeRunner, on images it was not calibrated on
    model, mmeta = load_model_dir(model_dir)
    edge = cut(model, mmeta.split)[0]
    x = calibration_array(exported.edge_info["source"]["data"], 0, CalibrationRecipe(images=48))[32:]
    got = OnnxEdgeRunner(int8.path, edge).features(torch.from_numpy(x)).numpy()
    ref = OnnxEdgeRunner(exported.edge, edge).features(torch.from_numpy(x)).numpy()
    assert np.abs(got - ref).mean() / np.abs(ref).max() < INT8_MEAN_REL_BOUND
    # the calibration data is stored as ModelOpt reads it, and recorded
    with np.load(int8.path.parent / "calib.npz") as npz:
        assert npz.files == ["input"] and npz["input"].shape == (32, 1, 16, 16) and npz["input"].dtype == np.float32
    stage = RunFolder(int8.path.parent.parent).stage("quantize")
    assert stage is not None and {"quantize/edge.int8.onnx", "quantize/calib.npz"} <= set(stage["files"])


def test_fp16_has_float16_weights_and_float32_io(exported: ExportResult, tmp_path: Path) -> None:
    result = quantize_edge(exported.edge, RunFolder(tmp_path), "fp16", "onnx", calibration_images=8)
    fp16 = load_onnx(result.path)
    assert sum(t.data_type == onnx.TensorProto.FLOAT16 for t in fp16.graph.initializer) > 0
    assert result.info["inputs"][0]["dtype"] == "float32" and result.info["outputs"][0]["dtype"] == "float32"
    assert result.info["quantization"]["vs_float"]["max_rel_error"] < FP16_MAX_REL_BOUND


def test_torch_route_exports_qdq_at_opset_17(modelopt_torch: None, model_dir: Path, tmp_path: Path) -> None:
    result = quantize_edge(model_dir, RunFolder(tmp_path), "int8", "torch", calibration_images=16)
    model = load_onnx(result.path)
    assert result.info["opset"] == 17 and next(o.version for o in model.opset_import if o.domain == "") == 17
    assert op_count(result.path, "QuantizeLinear") > 0 and op_count(result.path, "DequantizeLinear") > 0
    q = result.info["quantization"]
    assert q["route"] == "torch" and q["graph"]["ops_quantized"] == q["graph"]["ops_total"]
    # ORT's real INT8 matches mtq's fake quantization: measured at most 4e-4 (the 12 runs above)
    assert q["vs_fake_quant"]["mean_abs_error"] < 1e-2
    assert (tmp_path / "export" / "edge.onnx").is_file()  # the model folder was exported first (opset 17)


def test_truncated_onnx_is_refused(exported: ExportResult, tmp_path: Path) -> None:
    bad = tmp_path / "edge.onnx"
    bad.write_bytes(exported.edge.read_bytes()[:-100])
    with pytest.raises(ModelError, match="corrupt or truncated"):
        quantize_edge(bad, RunFolder(tmp_path / "run"))


def test_inputs_that_do_not_match_the_calibration_data_are_refused(exported: ExportResult) -> None:
    model = load_onnx(exported.edge)
    calib = np.zeros((4, 1, 16, 16), np.float32)
    check_calibration_fits(model, calib, exported.edge)  # the real pair fits
    with pytest.raises(DataError, match=r"input shape \['batch', 1, 16, 16\].*\[4, 3, 16, 16\]"):
        check_calibration_fits(model, np.zeros((4, 3, 16, 16), np.float32), exported.edge)
    model.graph.input[0].name = "pixels"
    with pytest.raises(DataError, match="takes input 'pixels'"):
        check_calibration_fits(model, calib, exported.edge)


def test_opset_17_on_the_onnx_route_names_opset_19(model_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelError) as info:
        quantize_edge(model_dir, RunFolder(tmp_path), "int8", "onnx", 8, ExportConfig(opset=17))
    assert "opset 17" in info.value.problem and "--opset 19" in (info.value.fix or "")


def test_ops_modelopt_cannot_quantize_are_named(tmp_path: Path) -> None:
    helper = onnx.helper
    x = helper.make_tensor_value_info("input", onnx.TensorProto.FLOAT, [1, 1, 8, 8])
    y = helper.make_tensor_value_info("features", onnx.TensorProto.FLOAT, [1, 1, 4, 4])
    nodes = [helper.make_node("Relu", ["input"], ["r"]),
             helper.make_node("MaxPool", ["r"], ["features"], kernel_shape=[2, 2], strides=[2, 2])]
    model = helper.make_model(helper.make_graph(nodes, "pool", [x], [y]),
                              opset_imports=[helper.make_opsetid("", 19)])
    path = tmp_path / "pool.onnx"
    onnx.save(model, str(path))
    quantized, _ = modelopt_onnx_int8(path, np.random.default_rng(0).random((8, 1, 8, 8), np.float32))
    graph = {**graph_stats(quantized), **quantized_ops(quantized)}
    with pytest.raises(ModelError, match=r"quantized none of the ops.*MaxPool, Relu"):
        check_quantized(graph, path)
    custom = helper.make_model(helper.make_graph([helper.make_node("FancyPool", ["input"], ["features"],
                                                                   domain="com.example")], "c", [x], [y]),
                               opset_imports=[helper.make_opsetid("", 19), helper.make_opsetid("com.example", 1)])
    with pytest.raises(ModelError, match=r"com\.example::FancyPool"):
        check_standard_ops(custom, path)


def test_bad_mode_and_non_fp32_sources_are_refused(int8: QuantizeResult, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="int4"):
        quantize_edge(int8.path, RunFolder(tmp_path), "int4", "onnx")
    with pytest.raises(ModelError, match="quantize the FP32 edge"):
        quantize_edge(int8.path, RunFolder(tmp_path), "int8", "onnx")


def test_convolutions_left_in_float_are_counted_and_explained(digits_bundle: DataBundle, tmp_path: Path) -> None:
    """A width-8 edge: ModelOpt leaves its 8-in / 8-out convolutions in float; the sidecar counts them against all
    compute ops, says why for each, and records the weight scales and the calibration method asked for."""
    cfg = load_config(None, ["data.source=digits", "data.image_size=16", "model.width=8"])
    torch.manual_seed(0)
    model = create_model(cfg.model, digits_bundle.num_classes, digits_bundle.channels).eval()
    folder = tmp_path / "train"
    save_model_dir(folder, model, model_meta(cfg, digits_bundle, "layer1"))
    result = quantize_edge(folder, RunFolder(tmp_path / "run"), "int8", "onnx", 16, calibration_method="max")
    q = result.info["quantization"]
    graph = q["graph"]
    assert graph["ops_total"] == op_count(result.path, "Conv") == 7  # stem + 3 blocks x 2
    assert graph["ops_quantized"] == 1 and len(graph["float_ops"]) == 6  # only the stem reads the image
    assert all("8 input and 8 output channels" in f["why"] and "16" in f["why"] for f in graph["float_ops"])
    assert graph["weight_scales"] == ["per-channel"] and q["calibration_method"] == "max" and q["method"] == "ptq"


def test_calibration_methods_a_route_does_not_offer_are_refused_with_the_list(exported: ExportResult,
                                                                             model_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"'percentile' is not offered by ModelOpt's onnx route.*entropy, max"):
        quantize_edge(exported.edge, RunFolder(tmp_path), "int8", "onnx", 8, calibration_method="percentile")
    with pytest.raises(ConfigError, match=r"'entropy' is not offered by ModelOpt's torch route.*offers max"):
        quantize_edge(model_dir, RunFolder(tmp_path), "int8", "torch", 8, calibration_method="entropy")
    assert not (tmp_path / "quantize").exists()  # refused before anything was written


def test_qat_fine_tunes_and_exports_qdq_at_the_configured_opset(modelopt_torch: None, model_dir: Path,
                                                                tmp_path: Path) -> None:
    """QAT (ModelOpt torch route): every convolution of the edge INT8 with per-channel weight scales, at the
    target's opset (17 here, TensorRT 8.x), fine-tuned for quantize.qat.epochs with distillation; recorded as QAT in
    the sidecar and the manifest, and reused by a second call with the same inputs."""
    cfg = load_config(None, ["data.source=digits", "data.image_size=16", "model.width=16", "quantize.qat.epochs=1",
                             "export.opset=17", "patrol.adversarial.surrogate_width=16"])
    run = RunFolder(tmp_path)
    result = quantize_edge(model_dir, run, "int8", "onnx", 16, qat=cfg)
    q = result.info["quantization"]
    assert result.info["opset"] == 17 and q["method"] == "qat" and q["route"] == "torch"
    assert q["graph"]["ops_quantized"] == q["graph"]["ops_total"] == op_count(result.path, "Conv") > 0
    assert q["graph"]["weight_scales"] == ["per-channel"] and q["quantizers"] > 0
    assert len(q["history"]) == 1 and q["history"][0]["distill"] > 0 and np.isfinite(q["history"][0]["task"])
    stage = run.stage("quantize/qat")  # beside PTQ's edge, so `auto` re-runs reuse both
    assert stage is not None and stage["config"]["method"] == "qat" and run.stage("quantize") is None
    assert result.path == tmp_path / "quantize" / "qat" / "edge.int8.onnx"
    model, meta = load_model_dir(model_dir)
    x = torch.from_numpy(np.load(tmp_path / "quantize" / "qat" / "calib.npz")["input"])
    got = OnnxEdgeRunner(result.path, cut(model, meta.split)[0]).features(x)
    assert got.shape == cut(model, meta.split)[0](x).shape and torch.isfinite(got).all()
    # an explicit PTQ calibration setting does not apply to QAT (it calibrates with max on the torch route)
    entropy = cfg.model_copy(update={"quantize": cfg.quantize.model_copy(update={"calibration_method": "entropy"})})
    assert quantize_edge(model_dir, run, "int8", "onnx", 16, calibration_method="entropy",
                         qat=entropy).info["quantization"]["calibration_method"] == "max"
    again = quantize_edge(model_dir, run, "int8", "onnx", 16, qat=cfg)
    assert again.info["sha256"] == result.info["sha256"]  # reused, not trained again


def test_qat_without_its_training_data_names_data_root(modelopt_torch: None, model_dir: Path,
                                                       tmp_path: Path) -> None:
    cfg = load_config(None, ["data.source=imagefolder", f"data.root={tmp_path / 'gone'}", "data.image_size=16",
                             "model.width=16"])
    with pytest.raises(DataError, match=r"data\.root"):
        quantize_edge(model_dir, RunFolder(tmp_path / "run"), "int8", "onnx", 8, qat=cfg)
