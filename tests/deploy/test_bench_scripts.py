"""The benchmark scripts run end to end on a small model folder (their real numbers come from real runs)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.scripts import load_script

pytest.importorskip("modelopt.onnx.quantization")

script = load_script


def test_latency_bench_compares_two_edges(model_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bench = script("bench_ort_latency")
    args = ["--unpruned", str(model_dir), "--pruned", str(model_dir), "--rounds", "2", "--runs", "2", "--warmup", "1"]
    assert bench.main([*args, "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["mac_ratio"] == 1.0 and result["split"] == "layer1"
    for edge in result["edges"].values():
        assert edge["macs"] > 0 and len(edge["latency_ms"]["rounds"]) == 2 and edge["latency_ms"]["median"] > 0
    assert result["efficiency"] == pytest.approx(result["speedup"])


def test_latency_bench_refuses_different_splits(model_dir: Path, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    other = tmp_path / "stem_split"
    shutil.copytree(model_dir, other)
    meta = json.loads((other / "model.json").read_text())
    (other / "model.json").write_text(json.dumps({**meta, "split": "stem"}))
    bench = script("bench_ort_latency")
    assert bench.main(["--unpruned", str(model_dir), "--pruned", str(other), "--rounds", "1", "--runs", "1"]) == 2
    assert "same split" in capsys.readouterr().err


def test_int8_bench_reports_utility_coverage_and_latency_of_each_edge(model_dir: Path) -> None:
    result = script("bench_int8").run(model_dir, 16, rounds=2)
    utility = result["utility"]
    assert set(utility) == {"float (torch)", "fp32 (ONNX Runtime)", "int8 ptq (ONNX Runtime)"}
    # Same weights, two runtimes: their kernels round differently, so an image at a near-tie may change class.
    # Measured: no image changed (seeds 0-2, ATEN_CPU_CAPABILITY default/avx2 x OMP_NUM_THREADS 1/2); allow two.
    one_image = 100.0 / result["eval_images"]
    assert utility["fp32 (ONNX Runtime)"] == pytest.approx(utility["float (torch)"], abs=2 * one_image + 1e-9)
    ptq = result["methods"]["ptq"]
    assert ptq["drop_points"] == pytest.approx(utility["float (torch)"] - utility["int8 ptq (ONNX Runtime)"])
    assert result["calibration_images"] == 16 and ptq["qdq_pairs"] > 0
    assert ptq["ops_quantized"] == ptq["ops_total"] > 0 and ptq["calibration_method"] == "entropy"  # width 16
    for edge in ("fp32", "int8 ptq"):
        assert set(result["latency_ms"][edge]) == {"batch 1", "batch 32"}
        assert all(t > 0 for t in result["latency_ms"][edge].values())
