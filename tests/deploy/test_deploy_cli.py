"""`patrol-deploy export` and `patrol-deploy quantize` as a user runs them: exit 0 with results, 2 with one line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from patrol_deploy.cli.main import main

pytest.importorskip("modelopt.onnx.quantization")

BIN = Path(sys.executable).parent


def cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "patrol-deploy"), *map(str, args)], capture_output=True, text=True, timeout=600)


def assert_one_line_error(result: subprocess.CompletedProcess[str], command: str, expected: str) -> None:
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("patrol-deploy: error: ")]
    assert len(errors) == 1 and expected in errors[0] and " Fix: " in errors[0], result.stderr
    assert lines[-1] == f"FAILED | patrol-deploy {command}" and "Traceback" not in result.stderr


def test_export_in_process(model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as code:
        main(["export", str(model_dir), "--out", str(tmp_path), "--dynamic-batch", "--json"])
    out, err = capsys.readouterr()
    assert code.value.code == 0, err
    assert err.splitlines()[-1] == "PASSED | patrol-deploy export"
    result = json.loads(out)
    assert Path(result["edge"]).is_file() and result["edge_info"]["inputs"][0]["shape"][0] == "batch"
    assert Path(result["cloud"]).is_file() and result["cloud_info"]["outputs"][0]["name"] == "logits"


def test_quantize_a_model_folder_end_to_end(model_dir: Path, tmp_path: Path) -> None:
    done = cli("-q", "quantize", model_dir, "--mode", "int8", "--route", "onnx", "--calibration-images", "16",
               "--out", tmp_path, "--json")
    assert done.returncode == 0, done.stderr
    info = json.loads(done.stdout)["info"]  # ModelOpt's own prints stay off stdout
    assert info["precision"] == "int8" and info["quantization"]["graph"]["quantize_linear"] > 0
    assert (tmp_path / "export" / "edge.onnx").is_file() and (tmp_path / "quantize" / "edge.int8.onnx").is_file()
    assert done.stderr.strip() == "PASSED | patrol-deploy quantize"  # --quiet: only the verdict


def test_bad_inputs_exit_2_with_one_line(model_dir: Path, tmp_path: Path) -> None:
    assert_one_line_error(cli("export", model_dir, "--out", tmp_path, "--opset", "99"), "export", "--opset")
    truncated = tmp_path / "edge.onnx"
    truncated.write_bytes(b"\x08\x09\x12\x04torch")
    assert_one_line_error(cli("quantize", truncated, "--out", tmp_path), "quantize", "corrupt or truncated")
    assert_one_line_error(cli("quantize", model_dir, "--out", tmp_path / "m", "--calibration-method", "percentile"),
                          "quantize", "it offers entropy, max")
