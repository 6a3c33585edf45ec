"""The on-device commands: run with torch / torch_pruning / ModelOpt imports blocked, exit codes, JSON output."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from patrol_deploy.cli.main import main
from tests.engine.trt_fakes import install, stubs_available

ROOT = Path(__file__).resolve().parents[2]
BLOCKED = ("torch", "torch_pruning", "modelopt", "torchvision")
WRAPPER = textwrap.dedent(f"""
    import importlib.abc, sys

    class Blocker(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in {BLOCKED!r}:
                raise ImportError(f"{{name}} is blocked: on-device commands must not import it")
            return None

    sys.meta_path.insert(0, Blocker())
    from patrol_deploy.cli.main import main
    main(sys.argv[1:])
""")


def run_blocked(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", WRAPPER, *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=120, check=False)


def test_blocker_really_blocks():
    done = subprocess.run([sys.executable, "-c", WRAPPER.replace("from patrol_deploy.cli.main import main\n"
                                                                  "main(sys.argv[1:])", "import torch")],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode != 0 and "torch is blocked" in done.stderr


def test_on_device_commands_run_without_torch_or_modelopt(tiny_onnx):
    helped = run_blocked("build-engine", "--help")
    assert helped.returncode == 0 and "--dla-core" in helped.stdout and "--batch MIN,OPT,MAX" in helped.stdout

    command = run_blocked("trtexec-cmd", str(tiny_onnx), "--trt-version", "8.6", "--batch", "1,2,4")
    assert command.returncode == 0, command.stderr
    assert command.stdout.startswith("/usr/src/tensorrt/bin/trtexec --onnx=") and "--fp16" in command.stdout
    assert "PASSED | patrol-deploy trtexec-cmd" in command.stderr

    profiled = run_blocked("--quiet", "profile", str(tiny_onnx), "--backend", "ort", "--runs", "5", "--warmup", "1",
                           "--json")
    assert profiled.returncode == 0, profiled.stderr
    result = json.loads(profiled.stdout)
    assert {"mean_ms", "p50_ms", "p90_ms", "p99_ms", "throughput_per_s"} <= set(result["latency"])
    assert result["layers"] and result["backend"] == "ort"


def test_build_engine_without_tensorrt_exits_3_with_the_fix(tiny_onnx, tmp_path):
    done = run_blocked("build-engine", str(tiny_onnx), "--out", str(tmp_path / "e.engine"))
    assert done.returncode == 3
    assert "patrol-deploy: error:" in done.stderr and "pip install tensorrt" in done.stderr
    assert "Traceback" not in done.stderr and "FAILED | patrol-deploy build-engine" in done.stderr


def test_engine_modules_import_nothing_heavy():
    code = ("import sys\nimport patrol_deploy.cli.engine_cmds\n"
            "for m in ['compare','profile','trtexec','jetson']:\n"
            "    __import__('patrol_deploy.engine.' + m)\n"
            "for m in ['onnxrt','onnxinfo','inputs','trt','trt_builder','trt_options','trt_meta','trt_runner','cuda',"
            "'calibrator']:\n"
            "    __import__('patrol_deploy.backends.' + m)\n"
            "print(sorted(m for m in ('torch','modelopt','tensorrt','onnx','onnxruntime','cuda','pycuda') "
            "if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60,
                          check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def cli(*args: str) -> int:
    with pytest.raises(SystemExit) as done:
        main(list(args))
    return int(done.value.code or 0)


@pytest.mark.skipif(not stubs_available(), reason="tensorrt-stubs (the 10.x API list) is not installed")
def test_build_compare_profile_commands_on_the_fake_tensorrt(monkeypatch, tiny_onnx, tmp_path, capsys):
    world, _ = install(monkeypatch, 10)
    engine = tmp_path / "edge.engine"
    assert cli("build-engine", str(tiny_onnx), "--out", str(engine), "--precision", "fp32", "--batch", "1,2,4",
               "--json") == 0
    assert json.loads(capsys.readouterr().out)["batch_profile"]["input"]["max"] == [4, 3, 8, 8]

    report = tmp_path / "compare.json"
    assert cli("compare", str(tiny_onnx), str(engine), "--batch", "2", "--report", str(report)) == 0
    out = capsys.readouterr()
    assert "features" in out.out and " ok" in out.out and json.loads(report.read_text())["passed"] is True

    world.output_offset = 1.0
    assert cli("compare", str(tiny_onnx), str(engine)) == 1
    err = capsys.readouterr().err
    assert "differ from ONNX beyond atol" in err and "FAILED | patrol-deploy compare" in err

    world.output_offset = 0.0
    profile_report = tmp_path / "profile.json"
    assert cli("profile", str(engine), "--runs", "3", "--warmup", "1", "--report", str(profile_report)) == 0
    text = capsys.readouterr().out
    assert "[trt]" in text and "h2d" in text and "layer0" in text
    assert json.loads(profile_report.read_text())["transfers"]["d2h"]["runs"] == 3
