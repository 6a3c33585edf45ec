"""scripts/jetson_build.sh: which files it picks and the commands it runs, with a recording `patrol-deploy`."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "jetson_build.sh"


@pytest.fixture
def recorder(tmp_path, monkeypatch):
    """A fake `patrol-deploy` that appends its arguments to calls.txt (and prints a command for trtexec-cmd)."""
    bin_dir, log = tmp_path / "bin", tmp_path / "calls.txt"
    bin_dir.mkdir()
    fake = bin_dir / "patrol-deploy"
    fake.write_text(f'#!/bin/sh\necho "$*" >> {log}\n[ "$1" = trtexec-cmd ] && echo "trtexec --onnx=x"\nexit 0\n')
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return log


def run_script(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=60, check=False)


def make_run(tmp_path: Path, quantized: bool) -> Path:
    run = tmp_path / "run"
    (run / "export").mkdir(parents=True)
    (run / "export" / "edge.onnx").write_bytes(b"onnx")
    (run / "quantize").mkdir()
    (run / "quantize" / "calib.npz").write_bytes(b"npz")
    if quantized:
        (run / "quantize" / "edge.int8.onnx").write_bytes(b"qdq")
    return run


def test_float_int8_build_calibrates_compares_profiles_and_gates(tmp_path, recorder):
    run = make_run(tmp_path, quantized=False)
    done = run_script(str(run), "--precision", "int8", "--dla-core", "1", "--runs", "50")
    assert done.returncode == 0, done.stderr
    engine, onnx, npz = run / "engine/edge.int8.dla1.engine", run / "export/edge.onnx", run / "quantize/calib.npz"
    calls = recorder.read_text().splitlines()
    assert [c.split()[0] for c in calls] == ["build-engine", "trtexec-cmd", "compare", "profile", "verify"]
    assert calls[0] == (f"build-engine {onnx} --out {engine} --precision int8 --dla-core 1 --calib {npz} "
                        f"--timing-cache {run}/engine/timing.cache")
    assert calls[2] == f"compare {onnx} {engine} --inputs {npz} --report {run}/engine/compare.json"
    assert calls[3] == f"profile {engine} --backend trt --runs 50 --warmup 20 --report {run}/engine/profile.json"
    assert calls[4] == f"verify {run} --engine {engine}"
    assert (run / "engine/trtexec_command.txt").read_text() == "trtexec --onnx=x\n"


def test_quantized_onnx_is_preferred_and_needs_no_calibration(tmp_path, recorder):
    run = make_run(tmp_path, quantized=True)
    assert run_script(str(run), "--precision", "int8").returncode == 0
    build = recorder.read_text().splitlines()[0]
    assert build.startswith(f"build-engine {run}/quantize/edge.int8.onnx --out {run}/engine/edge.int8.engine")
    assert "--calib " not in build


def test_bad_invocations_fail_early(tmp_path, recorder):
    assert run_script().returncode == 2
    assert run_script(str(tmp_path / "missing")).returncode == 2
    empty = tmp_path / "empty"
    empty.mkdir()
    done = run_script(str(empty))
    assert done.returncode == 2 and "patrol-deploy export" in done.stderr
    assert not recorder.exists()
