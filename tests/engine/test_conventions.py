"""What a trtexec / Polygraphy user expects: --precision auto read from the model, --input-shape for dynamic
models, compare of two ONNX models without TensorRT, profile --threads."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from patrol_deploy.backends.inputs import parse_input_shapes, random_inputs, with_input_shapes
from patrol_deploy.backends.onnxinfo import TensorInfo, read_onnx
from patrol_deploy.backends.trt import TrtVersion
from patrol_deploy.backends.trt_options import BatchProfile, BuildOptions, plan_precision, shape_profile
from patrol_deploy.cli.main import main
from patrol_deploy.engine.compare import compare_engine
from patrol_deploy.engine.profile import profile_model
from patrol_deploy.engine.trtexec import trtexec_command
from patrol_deploy.errors import ConfigError
from tests.engine.conftest import make_onnx
from tests.engine.test_engine_cli import run_blocked
from tests.engine.trt_fakes import install, stubs_available


def cli(*args: str | Path) -> int:
    with pytest.raises(SystemExit) as done:
        main([str(a) for a in args])
    return int(done.value.code or 0)


def dynamic_hw(path: Path) -> Path:
    """The tiny edge with dynamic height and width as well as batch (what a fully dynamic export gives)."""
    model = onnx.load(str(make_onnx(path)))
    for value in (model.graph.input[0], model.graph.output[0]):
        for axis, name in ((2, "height"), (3, "width")):
            value.type.tensor_type.shape.dim[axis].dim_param = name
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def test_precision_auto_is_the_default_and_reads_the_model():
    assert BuildOptions().precision == "auto"
    for generation in (8, 10):
        qdq = plan_precision(generation, BuildOptions(), "int8", False)
        assert (qdq.int8_flag, qdq.fp16_flag, qdq.calibrate, qdq.effective) == (True, True, False, "int8")
        assert "FP16 for its float layers" in qdq.notes[0]
        float_model = plan_precision(generation, BuildOptions(), "fp32", False)
        assert (float_model.fp16_flag, float_model.int8_flag, float_model.effective) == (True, False, "fp16")
    strongly = plan_precision(11, BuildOptions(), "int8", False)
    assert strongly.strongly_typed and not (strongly.fp16_flag or strongly.int8_flag) and strongly.effective == "int8"
    assert strongly.notes == ()  # nothing to suggest for a Q/DQ model
    fp32 = plan_precision(11, BuildOptions(), "fp32", False)
    assert fp32.effective == "fp32" and "AutoCast" in fp32.notes[0]
    with pytest.raises(ConfigError, match="--precision auto never does"):
        plan_precision(8, BuildOptions(calib=Path("c.npz")), "fp32", True)


def test_trt11_never_suggests_autocast_for_an_int8_model():
    with pytest.raises(ConfigError, match="strongly typed") as err:
        plan_precision(11, BuildOptions(precision="fp16"), "int8", False)
    assert "AutoCast" not in str(err.value) and "--precision auto or int8" in str(err.value.fix)


@pytest.mark.skipif(not stubs_available(), reason="tensorrt-stubs (the 10.x API list) is not installed")
def test_build_engine_from_qdq_sets_int8_and_fp16_by_default(monkeypatch, tmp_path, capsys):
    world, _ = install(monkeypatch, 10)
    qdq = make_onnx(tmp_path / "q.onnx", qdq=True, opset=19)
    assert cli("build-engine", qdq, "--out", tmp_path / "q.engine", "--json") == 0
    meta = json.loads(capsys.readouterr().out)
    assert meta["precision"] == "int8" and set(meta["builder_flags"]) == {"FP16", "INT8"}
    assert {args[0].name for args in world.calls("IBuilderConfig", "set_flag")} == {"FP16", "INT8"}


def test_trtexec_cmd_default_follows_the_model(tmp_path, capsys):
    qdq = make_onnx(tmp_path / "q.onnx", qdq=True, opset=19)
    assert cli("trtexec-cmd", qdq, "--trt-version", "10.3", "--json") == 0
    argv = json.loads(capsys.readouterr().out)["argv"]
    assert "--int8" in argv and "--fp16" in argv
    assert cli("trtexec-cmd", qdq, "--trt-version", "11", "--json") == 0
    assert not {"--int8", "--fp16"} & set(json.loads(capsys.readouterr().out)["argv"])


def test_input_shape_parsing_and_checks():
    assert parse_input_shapes(["input:1x3x64x64", "mask:0:2x4, b:1X2"]) == {
        "input": (1, 3, 64, 64), "mask:0": (2, 4), "b": (1, 2)}
    for bad in ("input", "input:1x3xhx64", ":1x3", "input:0x3"):
        with pytest.raises(ConfigError, match="NAME:DIMS"):
            parse_input_shapes([bad])
    spec = [TensorInfo("input", (-1, 3, -1, -1), "float32")]
    assert with_input_shapes(spec, {"input": (2, 3, 16, 20)})[0].shape == (2, 3, 16, 20)
    with pytest.raises(ConfigError, match="does not fit"):
        with_input_shapes(spec, {"input": (2, 1, 16, 20)})
    with pytest.raises(ConfigError, match="does not have"):
        with_input_shapes(spec, {"image": (2, 3, 16, 20)})
    with pytest.raises(ConfigError, match="--input-shape input:1x3xNxN"):
        random_inputs(spec, 1)


def test_input_shape_makes_an_optimization_profile(tmp_path):
    spec = [TensorInfo("input", (-1, 3, -1, -1), "float32")]
    with pytest.raises(ConfigError, match="--input-shape"):
        shape_profile(spec, None)
    fixed = shape_profile(spec, None, [("input", (2, 3, 16, 16))])
    assert fixed == {"input": ((2, 3, 16, 16),) * 3}
    batched = shape_profile(spec, BatchProfile(1, 4, 8), [("input", (1, 3, 16, 16))])
    assert batched == {"input": ((1, 3, 16, 16), (4, 3, 16, 16), (8, 3, 16, 16))}
    info = read_onnx(dynamic_hw(tmp_path / "d.onnx"))
    argv = trtexec_command(info, Path("d.engine"), BuildOptions(input_shapes=(("input", (1, 3, 32, 32)),)),
                           TrtVersion.parse("10.3"))["argv"]
    assert {"--minShapes=input:1x3x32x32", "--optShapes=input:1x3x32x32", "--maxShapes=input:1x3x32x32"} <= set(argv)


def test_profile_a_dynamic_model_with_input_shape_and_threads(tmp_path, capsys):
    model = dynamic_hw(tmp_path / "d.onnx")
    with pytest.raises(ConfigError, match="--input-shape input:"):
        profile_model(model, None, None, 2, 0, state=lambda: {"jetson": None, "warnings": []})
    assert cli("-q", "profile", model, "--input-shape", "input:2x3x12x20", "--threads", "1", "--runs", "3",
               "--warmup", "1", "--json") == 0
    result = json.loads(capsys.readouterr().out)
    assert result["latency"]["batch"] == 2 and result["threads"] == 1 and result["layers"]
    assert cli("profile", model, "--backend", "trt", "--threads", "2") == 2  # engines take no thread setting
    assert "does not take --threads" in capsys.readouterr().err


def test_compare_two_onnx_models_in_onnx_runtime(tmp_path, capsys):
    fp32, qdq = make_onnx(tmp_path / "f.onnx"), make_onnx(tmp_path / "q.onnx", qdq=True, opset=19)
    result = compare_engine(fp32, qdq, batch=2)
    assert result["precision"] == "int8" and result["runtime"].startswith("onnxruntime")
    assert (result["atol"], result["rtol"]) == (0.1, 0.1) and result["passed"]
    assert cli("compare", fp32, fp32, "--json") == 0 and json.loads(capsys.readouterr().out)["passed"]
    other = make_onnx(tmp_path / "s.onnx", softmax=True)  # computes something else
    assert cli("compare", fp32, other) == 1
    assert "ONNX model outputs ['features'] differ from ONNX" in capsys.readouterr().err


def test_compare_of_onnx_models_needs_neither_torch_nor_tensorrt(tmp_path):
    model = dynamic_hw(tmp_path / "d.onnx")
    done = run_blocked("compare", str(model), str(model), "--input-shape", "input:1x3x10x10", "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["passed"] and result["outputs"][0]["shape"] == [1, 4, 10, 10]
    assert np.isclose(result["outputs"][0]["max_abs"], 0.0)
