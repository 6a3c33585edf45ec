"""The builder's three API paths, against recording fakes of TensorRT 8.6, 10.x and 11.x."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from patrol_deploy.backends.trt_builder import build_engine
from patrol_deploy.backends.trt_meta import engine_meta_path
from patrol_deploy.backends.trt_options import BatchProfile, BuildOptions
from patrol_deploy.errors import ConfigError, HardwareError, MissingDependency, ModelError
from tests.engine.conftest import make_onnx
from tests.engine.trt_fakes import EnumValue, install, stubs_available

pytestmark = pytest.mark.skipif(not stubs_available(), reason="tensorrt-stubs (the 10.x API list) is not installed")


def flags_set(world) -> list[str]:
    return [args[0].name for args in world.calls("IBuilderConfig", "set_flag")]


def test_trt8_fp16_uses_explicit_batch_flag_and_fp16_builder_flag(monkeypatch, tiny_onnx, tmp_path):
    world, _ = install(monkeypatch, 8)
    engine = tmp_path / "edge.engine"
    meta = build_engine(tiny_onnx, engine, BuildOptions(precision="fp16", workspace_mib=256))

    assert world.calls("Builder", "create_network") == [(1 << 0,)]  # 1 << int(EXPLICIT_BATCH)
    assert ("NetworkDefinitionCreationFlag", "EXPLICIT_BATCH") in world.touched()
    assert flags_set(world) == ["FP16"]
    assert world.calls("IBuilderConfig", "set_memory_pool_limit") == [
        (EnumValue("MemoryPoolType", "WORKSPACE", 0), 256 << 20)]
    assert world.sets("IBuilderConfig", "profiling_verbosity")[0].name == "DETAILED"
    assert not world.sets("IBuilderConfig", "int8_calibrator")
    assert engine.read_bytes().startswith(b"FAKEPLAN|8.6.2.3|")
    saved = json.loads(engine_meta_path(engine).read_text())
    assert saved == json.loads(json.dumps(meta))
    assert meta["tensorrt"] == {"version": "8.6.2.3", "api_generation": 8}
    assert meta["precision"] == "fp16" and meta["builder_flags"] == ["FP16"]
    assert meta["device"]["compute_capability"] == "8.7"
    assert [layer["Name"] for layer in meta["layers"]["Layers"]] == ["layer0", "layer1"]
    assert meta["batch_profile"] == {"input": {"min": [1, 3, 8, 8], "opt": [1, 3, 8, 8], "max": [1, 3, 8, 8]}}


def test_trt8_int8_calibrates_implicitly_then_reuses_the_cache(monkeypatch, tiny_onnx, calib_npz, tmp_path):
    world, cuda = install(monkeypatch, 8)
    engine = tmp_path / "edge.engine"
    options = BuildOptions(precision="int8", calib=calib_npz, batch=BatchProfile(1, 4, 8))
    meta = build_engine(tiny_onnx, engine, options)

    assert flags_set(world) == ["INT8"]
    calibrator = world.sets("IBuilderConfig", "int8_calibrator")[0]
    assert calibrator.get_batch_size() == 4  # the OPT batch of the profile
    assert world.calibration_batches == 5  # 20 images in batches of 4
    (profile,) = [args[0] for args in world.calls("IBuilderConfig", "set_calibration_profile")]
    assert profile._shapes == {"input": ((4, 3, 8, 8),) * 3}
    cache = tmp_path / "edge.engine.calib"
    assert cache.read_bytes() == b"TRT-fake-EntropyCalibration2"
    assert meta["calibration"] == {"data": str(calib_npz), "cache": str(cache)}
    assert cuda.memory == {}  # the calibrator's device buffer was freed

    world2, _ = install(monkeypatch, 8)
    build_engine(tiny_onnx, engine, BuildOptions(precision="int8", batch=BatchProfile(1, 4, 8)))  # cache only
    assert world2.calibration_batches == 0
    assert flags_set(world2) == ["INT8"]


def test_trt10_creates_network_without_flags_and_sets_fp16(monkeypatch, tiny_onnx, tmp_path):
    world, _ = install(monkeypatch, 10)
    meta = build_engine(tiny_onnx, tmp_path / "e.engine", BuildOptions(precision="fp16", batch=BatchProfile(1, 4, 8)))
    assert world.calls("Builder", "create_network") == [(0,)]
    assert ("NetworkDefinitionCreationFlag", "EXPLICIT_BATCH") not in world.touched()
    assert flags_set(world) == ["FP16"]
    (profile,) = [args[0] for args in world.calls("IBuilderConfig", "add_optimization_profile")]
    assert profile._shapes == {"input": ((1, 3, 8, 8), (4, 3, 8, 8), (8, 3, 8, 8))}
    assert meta["tensorrt"]["api_generation"] == 10


def test_trt10_refuses_implicit_int8_on_the_gpu(monkeypatch, tiny_onnx, calib_npz, tmp_path):
    world, _ = install(monkeypatch, 10)
    with pytest.raises(ConfigError, match="deprecates implicit INT8") as err:
        build_engine(tiny_onnx, tmp_path / "e.engine", BuildOptions(precision="int8", calib=calib_npz))
    assert "patrol-deploy quantize" in str(err.value.fix)
    assert not world.calls("Builder", "create_network")  # refused before building anything


def test_trt10_qdq_model_builds_int8_with_the_flag_and_no_calibrator(monkeypatch, tmp_path):
    world, _ = install(monkeypatch, 10)
    onnx_path = make_onnx(tmp_path / "q.onnx", qdq=True, opset=19)
    meta = build_engine(onnx_path, tmp_path / "q.engine", BuildOptions(precision="int8"))
    assert flags_set(world) == ["INT8"]
    assert not world.sets("IBuilderConfig", "int8_calibrator")
    assert meta["precision"] == "int8" and meta["calibration"] is None


def test_trt10_dla_with_calibration_and_gpu_fallback_report(monkeypatch, tmp_path, calib_npz):
    world, _ = install(monkeypatch, 10, num_dla=2)
    onnx_path = make_onnx(tmp_path / "s.onnx", softmax=True)
    meta = build_engine(onnx_path, tmp_path / "s.engine", BuildOptions(precision="int8", dla_core=1, calib=calib_npz))
    assert world.sets("IBuilderConfig", "default_device_type")[0].name == "DLA"
    assert world.sets("IBuilderConfig", "DLA_core") == [1]
    assert flags_set(world) == ["INT8", "GPU_FALLBACK"]
    assert world.sets("IBuilderConfig", "int8_calibrator")  # DLA still calibrates implicitly on 10.x
    assert meta["gpu_fallback_layers"] == ["softmax0 (SOFTMAX)"]
    assert world.sets("Runtime", "DLA_core") == [1]  # the inspector deserializes on the same DLA core


@pytest.mark.parametrize(("cores", "core", "message"), [(0, 0, "has no DLA"), (2, 2, "has 2 \\(0..1\\)")])
def test_dla_requests_the_device_cannot_serve_are_hardware_errors(monkeypatch, tiny_onnx, tmp_path, cores, core,
                                                                  message):
    install(monkeypatch, 10, num_dla=cores)
    with pytest.raises(HardwareError, match=message) as err:
        build_engine(tiny_onnx, tmp_path / "e.engine", BuildOptions(precision="fp16", dla_core=core))
    assert err.value.exit_code == 3


def test_trt11_is_strongly_typed_without_precision_flags(monkeypatch, tmp_path):
    world, _ = install(monkeypatch, 11)
    onnx_path = make_onnx(tmp_path / "q.onnx", qdq=True, opset=19)
    meta = build_engine(onnx_path, tmp_path / "q.engine", BuildOptions(precision="int8"))
    assert world.calls("Builder", "create_network") == [(0,)]
    assert flags_set(world) == []
    assert not any(cls == "BuilderFlag" for cls, _ in world.touched())
    assert meta["precision"] == "int8" and meta["precision_source"] == "model (strongly typed)"
    with pytest.raises(AttributeError):  # the fake really lacks the removed flags
        getattr(__import__("tensorrt").BuilderFlag, "FP16")  # noqa: B009


def test_trt11_refuses_a_precision_the_model_does_not_carry(monkeypatch, tiny_onnx, tmp_path):
    install(monkeypatch, 11)
    with pytest.raises(ConfigError, match="strongly typed") as err:
        build_engine(tiny_onnx, tmp_path / "e.engine", BuildOptions(precision="fp16"))
    assert "AutoCast" in str(err.value.fix)
    fp16_model = make_onnx(tmp_path / "h.onnx", fp16=True)
    assert build_engine(fp16_model, tmp_path / "h.engine", BuildOptions(precision="fp16"))["precision"] == "fp16"


def test_opset_newer_than_the_parser_is_refused_before_parsing(monkeypatch, tmp_path):
    world, _ = install(monkeypatch, 8)
    onnx_path = make_onnx(tmp_path / "o18.onnx", opset=18)
    with pytest.raises(ConfigError, match=r"opset 18.*8\.6\.2\.3 supports opsets 7-17"):
        build_engine(onnx_path, tmp_path / "e.engine", BuildOptions())
    assert not world.calls("Builder", "create_network")
    assert build_engine(onnx_path, tmp_path / "e.engine", BuildOptions(skip_opset_check=True))["onnx"]["opset"] == 18


def test_parser_errors_name_the_failing_node(monkeypatch, tiny_onnx, tmp_path):
    install(monkeypatch, 10, parse_errors=[(1, "Unsupported attribute", "UNSUPPORTED_NODE")])
    with pytest.raises(ModelError) as err:
        build_engine(tiny_onnx, tmp_path / "e.engine", BuildOptions())
    assert "node 1 'relu0' (Relu): Unsupported attribute [UNSUPPORTED_NODE]" in err.value.problem


def test_a_failed_build_reports_tensorrts_error_and_writes_nothing(monkeypatch, tiny_onnx, tmp_path):
    install(monkeypatch, 10, build_fails=True)
    engine = tmp_path / "e.engine"
    with pytest.raises(ModelError, match="could not find any implementation for node conv0"):
        build_engine(tiny_onnx, engine, BuildOptions())
    assert not engine.exists() and not engine_meta_path(engine).exists()


def test_timing_cache_is_created_reused_and_replaced_when_rejected(monkeypatch, tiny_onnx, tmp_path):
    cache = tmp_path / "timing.cache"
    install(monkeypatch, 10)
    fp16 = BuildOptions(precision="fp16", timing_cache=cache)  # explicit: --precision auto adds a note of its own
    first = build_engine(tiny_onnx, tmp_path / "a.engine", fp16)
    assert first["notes"] == [f"timing cache created: {cache}"] and cache.read_bytes() == b"+timings"
    install(monkeypatch, 10)
    assert build_engine(tiny_onnx, tmp_path / "b.engine", fp16)["notes"] == [f"timing cache reused: {cache}"]
    install(monkeypatch, 10, accept_timing_cache=False)
    notes = build_engine(tiny_onnx, tmp_path / "c.engine", fp16)["notes"]
    assert "rejected" in notes[0]


def test_missing_tensorrt_says_how_to_install_it(monkeypatch, tiny_onnx, tmp_path):
    import types

    monkeypatch.setitem(__import__("sys").modules, "tensorrt", types.ModuleType("tensorrt"))  # stubs-only namespace
    with pytest.raises(MissingDependency, match="not TensorRT's Python package") as err:
        build_engine(tiny_onnx, tmp_path / "e.engine", BuildOptions())
    assert err.value.exit_code == 3 and "JetPack" in str(err.value.fix)


def test_unsupported_tensorrt_versions_are_refused(monkeypatch, tiny_onnx, tmp_path: Path):
    world, _ = install(monkeypatch, 10)
    world.version = "8.4.3.1"
    object.__setattr__(__import__("sys").modules["tensorrt"], "__version__", "8.4.3.1")
    with pytest.raises(MissingDependency, match=r"8\.4\.3\.1 is not supported") as err:
        build_engine(tiny_onnx, tmp_path / "e.engine", BuildOptions())
    assert err.value.exit_code == 3
