"""TensorRT version parsing, opset limits, precision plans per generation, shape profiles, ONNX reading."""

from __future__ import annotations

import pytest

from patrol_deploy.backends.onnxinfo import TensorInfo, read_onnx
from patrol_deploy.backends.trt import TrtVersion, check_opset
from patrol_deploy.backends.trt_options import BatchProfile, BuildOptions, plan_precision, shape_profile
from patrol_deploy.errors import ConfigError, DataError, MissingDependency
from tests.engine.conftest import make_onnx


@pytest.mark.parametrize(("text", "generation", "max_opset"), [
    ("8.5.2.2", 8, 17), ("8.6.2.3", 8, 17), ("10.3.0.30", 10, 20), ("10.15.1", 10, 24), ("11", 11, 24),
    ("11.5.0", 11, 25), ("12.0", 11, 25)])
def test_versions_map_to_generations_and_parser_limits(text, generation, max_opset):
    version = TrtVersion.parse(text)
    assert version.generation == generation and version.max_opset == max_opset and str(version) == text


@pytest.mark.parametrize("text", ["8.4.3", "9.3.0", "7.1"])
def test_unsupported_versions_are_missing_dependencies(text):
    with pytest.raises(MissingDependency, match="not supported"):
        TrtVersion.parse(text).generation  # noqa: B018


def test_version_strings_must_be_versions():
    with pytest.raises(ConfigError):
        TrtVersion.parse("latest")
    assert TrtVersion.parse("10.3") == TrtVersion.parse("10.3.0")


def test_opset_check_bounds():
    check_opset(TrtVersion.parse("8.6"), 17, "m.onnx")
    with pytest.raises(ConfigError, match=r"opset 19.*supports opsets 7-17") as err:
        check_opset(TrtVersion.parse("8.6"), 19, "m.onnx")
    assert "export --opset 17" in str(err.value.fix)
    with pytest.raises(ConfigError, match="parses opset 9 and newer"):
        check_opset(TrtVersion.parse("10.3"), 8, "m.onnx")


def plan(generation, model="fp32", calibration=False, **options):
    return plan_precision(generation, BuildOptions(**options), model, calibration)


def test_precision_plans_trt8():
    assert (plan(8, precision="fp16").fp16_flag, plan(8, precision="fp16").int8_flag) == (True, False)
    int8 = plan(8, precision="int8", calibration=True)
    assert (int8.int8_flag, int8.calibrate, int8.effective) == (True, True, "int8")
    best = plan(8, precision="best", calibration=True)
    assert (best.fp16_flag, best.int8_flag, best.calibrate) == (True, True, True)
    fallback = plan(8, precision="best")
    assert (fallback.int8_flag, fallback.effective) == (False, "fp16") and "INT8 not enabled" in fallback.notes[0]
    with pytest.raises(ConfigError, match="needs calibration data"):
        plan(8, precision="int8")
    qdq = plan(8, "int8", precision="int8")
    assert (qdq.int8_flag, qdq.calibrate) == (True, False)


def test_precision_plans_trt10_calibrate_only_for_dla():
    with pytest.raises(ConfigError, match="deprecates implicit INT8"):
        plan(10, precision="int8", calibration=True)
    dla = plan(10, precision="int8", calibration=True, dla_core=0)
    assert (dla.int8_flag, dla.calibrate) == (True, True)
    assert plan(10, precision="best", calibration=True).calibrate is False
    with pytest.raises(ConfigError, match="DLA runs FP16 and INT8 only"):
        plan(10, precision="fp32", dla_core=0)
    with pytest.raises(ConfigError, match="carries Q/DQ"):
        plan(10, "int8", precision="fp16")


def test_precision_plans_trt11_take_the_models_precision():
    for model in ("fp32", "fp16", "int8"):
        result = plan(11, model, precision="best")
        assert (result.fp16_flag, result.int8_flag, result.calibrate) == (False, False, False)
        assert result.strongly_typed and result.effective == model
    with pytest.raises(ConfigError, match="no INT8 calibrators"):
        plan(11, "fp32", precision="fp32", calib_cache=__import__("pathlib").Path("x.calib"))
    with pytest.raises(ConfigError, match="quantize"):
        plan(11, "fp16", precision="int8")


def test_build_options_validate():
    with pytest.raises(ConfigError):
        BuildOptions(precision="fp8")
    with pytest.raises(ConfigError):
        BuildOptions(dla_core=-1)
    assert BatchProfile.parse("1,4,8") == BatchProfile(1, 4, 8) and BatchProfile.parse("2") == BatchProfile(2, 2, 2)
    for bad in ("4,2,8", "0,1,1", "a,b,c", "1,2"):
        with pytest.raises(ConfigError):
            BatchProfile.parse(bad)


def test_shape_profiles():
    dynamic = TensorInfo("input", (-1, 3, 32, 32), "float32")
    assert shape_profile([dynamic], BatchProfile(1, 4, 8)) == {
        "input": ((1, 3, 32, 32), (4, 3, 32, 32), (8, 3, 32, 32))}
    static = TensorInfo("input", (2, 3, 32, 32), "float32")
    assert shape_profile([static], None) == {} and shape_profile([static], BatchProfile(2, 2, 2)) == {}
    with pytest.raises(ConfigError, match="fixed batch of 2"):
        shape_profile([static], BatchProfile(1, 2, 4))
    with pytest.raises(ConfigError, match="dynamic axes \\[2, 3\\]"):
        shape_profile([TensorInfo("input", (-1, 3, -1, -1), "float32")], None)


def test_read_onnx_summarizes_the_graph(tmp_path):
    info = read_onnx(make_onnx(tmp_path / "a.onnx"))
    assert info.opset == 17 and info.precision == "fp32"
    assert info.inputs == (TensorInfo("input", (-1, 3, 8, 8), "float32"),)
    assert info.outputs[0].name == "features" and info.node_label(1) == "node 1 'relu0' (Relu)"
    assert info.node_label(99) == ""
    assert read_onnx(make_onnx(tmp_path / "q.onnx", qdq=True, opset=19)).precision == "int8"
    assert read_onnx(make_onnx(tmp_path / "h.onnx", fp16=True)).precision == "fp16"
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(DataError, match="not a readable ONNX model"):
        read_onnx(tmp_path / "junk.onnx")
    with pytest.raises(DataError, match="does not exist"):
        read_onnx(tmp_path / "missing.onnx")
