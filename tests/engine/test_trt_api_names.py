"""Every TensorRT name the engine and backends code uses exists in the 10.x API listed by the tensorrt-stubs package.

Two checks: a static scan of `trt.X` / `trt.X.Y` in the source, and the
recorded accesses of a full build + run + profile on the 10.x fake (which
covers methods called on builders, configs, engines and contexts).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from patrol_deploy.backends.trt_builder import build_engine
from patrol_deploy.backends.trt_options import BatchProfile, BuildOptions
from patrol_deploy.engine.profile import profile_model
from tests.engine.conftest import make_onnx
from tests.engine.trt_fakes import MODULE, install, stub_api, stubs_available

pytestmark = pytest.mark.skipif(not stubs_available(), reason="tensorrt-stubs (the 10.x API list) is not installed")
ROOT = Path(__file__).resolve().parents[2]
SOURCES = sorted(p for part in ("engine", "backends") for p in (ROOT / "patrol_deploy" / part).glob("*.py"))
# Names used only on the 8.x or 11.x paths that the 10.x API lacks. None today: EXPLICIT_BATCH (8.x path)
# is still listed (deprecated) in 10.x, and the 11.x path uses no name that 10.x lacks.
ONLY_OUTSIDE_10: set[tuple[str, str]] = set()


def _is_trt(node: ast.expr) -> bool:
    """`trt` or `self.trt`: the names the engine code binds the TensorRT module to."""
    return ((isinstance(node, ast.Name) and node.id == "trt")
            or (isinstance(node, ast.Attribute) and node.attr == "trt" and isinstance(node.value, ast.Name)
                and node.value.id == "self"))


def trt_names(source: Path) -> set[tuple[str, ...]]:
    """('Builder',), ('BuilderFlag', 'FP16'), ... for every attribute chain rooted at the TensorRT module."""
    found: set[tuple[str, ...]] = set()
    for node in ast.walk(ast.parse(source.read_text())):
        if isinstance(node, ast.Attribute) and _is_trt(node.value):
            found.add((node.attr,))
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute) and _is_trt(node.value.value):
            found.add((node.value.attr, node.attr))
    return found


def test_every_trt_name_in_the_source_exists_in_the_10x_stubs():
    api = stub_api()
    used = set().union(*(trt_names(s) for s in SOURCES))
    assert {("BuilderFlag", "FP16"), ("Builder",), ("TensorIOMode", "INPUT"), ("nptype",)} <= used  # sees the code
    missing = sorted(name for name in used if name not in ONLY_OUTSIDE_10 and (
        name[0] not in api[MODULE] if len(name) == 1 else name[1] not in api.get(name[0], set())))
    assert missing == [], f"not in the TensorRT 10.x API: {missing}"


def test_every_member_touched_on_the_10x_path_exists_in_the_stubs(monkeypatch, tmp_path, calib_npz):
    api = stub_api()
    world, _ = install(monkeypatch, 10, num_dla=2)
    onnx_path = make_onnx(tmp_path / "edge.onnx", softmax=True)
    engine = tmp_path / "edge.engine"
    build_engine(onnx_path, engine, BuildOptions(precision="best", dla_core=0, calib=calib_npz, workspace_mib=64,
                                                 batch=BatchProfile(1, 2, 4), timing_cache=tmp_path / "t.cache"))
    profile_model(engine, "trt", batch=2, runs=2, warmup=1, state=lambda: {"jetson": None, "warnings": []})
    touched = world.touched() - {("IInt8EntropyCalibrator2", "__init__")}
    assert len(touched) > 40
    assert {("IBuilderConfig", "set_flag"), ("IExecutionContext", "execute_async_v3"),
            ("OnnxParser", "parse"), ("EngineInspector", "get_engine_information")} <= touched
    missing = sorted((cls, name) for cls, name in touched if name not in api.get(cls, set()))
    assert missing == [], f"not in the TensorRT 10.x API: {missing}"
