#!/usr/bin/env python3
"""Utility, INT8 coverage and ONNX Runtime latency of the INT8 edge against the float edge, with the cloud in torch.

    patrol-deploy run patrol_deploy/configs/default.yaml --out runs/default
    python scripts/bench_int8.py runs/default/patrol [--calibration-images 128] [--calibration-method max]
                                 [--qat-epochs 2]

The float edge runs in torch; the exported FP32 edge and the INT8 edge (ModelOpt
ONNX PTQ on the calib split; with --qat-epochs also quantization-aware
fine-tuning) run in ONNX Runtime on the CPU and feed the same torch cloud.
Utility is measured on the evaluation images (the test split, never used for
calibration). Prints how many of the edge's convolutions / GEMMs INT8 covers
(and why the others stay float), and the ONNX Runtime CPU latency of the FP32
and INT8 edges at batch 1 and 32 on one thread, timed side by side (alternating
order, median of rounds). Targets: INT8 within 0.5 point of float; >= 90 % of
compute ops quantized; INT8 faster than FP32. The attack-side (SSIM) comparison
is `patrol-deploy verify`'s privacy gate.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
from bench_ort_latency import measure

from patrol_deploy.backends.onnxrt import cpu_session
from patrol_deploy.config import DataConfig, ExportConfig
from patrol_deploy.data import load_data
from patrol_deploy.deployment.export import model_data
from patrol_deploy.deployment.onnx_runner import OnnxEdgeRunner, with_edge_runner
from patrol_deploy.deployment.quantize import quantize_edge
from patrol_deploy.errors import PatrolError
from patrol_deploy.modelio import load_model_dir
from patrol_deploy.pipeline.verify import gate_config
from patrol_deploy.runfolder import RunFolder
from patrol_deploy.split import cut
from patrol_deploy.training import evaluate, utility_metric

TARGET_POINTS = 0.5
TARGET_COVERAGE = 0.9
BATCHES = (1, 32)


def run(model_dir: Path, calibration_images: int, calibration_method: str | None = None,
        qat_epochs: int | None = None, rounds: int = 15) -> dict[str, Any]:
    model, meta = load_model_dir(model_dir)
    data, seed = model_data(meta, model_dir)
    bundle = load_data(DataConfig.model_validate(data), seed)
    edge = cut(model, meta.split)[0]
    metric = utility_metric(meta.task)
    export = ExportConfig(dynamic_batch=True)  # one file for batch 1 and 32

    def utility(path: Path) -> float:
        deployed = with_edge_runner(model, meta.split, OnnxEdgeRunner(path, edge))
        return float(evaluate(deployed, bundle, meta.task)[metric])

    with tempfile.TemporaryDirectory(prefix="bench-int8-") as tmp:
        int8 = {"ptq": quantize_edge(model_dir, RunFolder(Path(tmp) / "ptq"), "int8", "onnx", calibration_images,
                                     export, calibration_method=calibration_method)}
        if qat_epochs is not None:
            cfg = gate_config(None, model_dir)
            cfg = cfg.model_copy(update={"export": export, "quantize": cfg.quantize.model_copy(update={
                "qat": cfg.quantize.qat.model_copy(update={"epochs": qat_epochs})})})
            int8["qat"] = quantize_edge(model_dir, RunFolder(Path(tmp) / "qat"), "int8", "onnx", calibration_images,
                                        export, qat=cfg)
        fp32 = Path(tmp) / "ptq" / "export" / "edge.onnx"
        result: dict[str, Any] = {"float (torch)": float(evaluate(model, bundle, meta.task)[metric]),
                                  "fp32 (ONNX Runtime)": utility(fp32)}
        result.update({f"int8 {m} (ONNX Runtime)": utility(r.path) for m, r in int8.items()})
        latency = time_edges({"fp32": fp32, **{f"int8 {m}": r.path for m, r in int8.items()}},
                             int8["ptq"].path.parent / "calib.npz", rounds)
    methods = {}
    for m, r in int8.items():
        q = r.info["quantization"]
        drop = result["float (torch)"] - result[f"int8 {m} (ONNX Runtime)"]
        methods[m] = {"drop_points": drop, "target_met": drop <= TARGET_POINTS,
                      "ops_quantized": q["graph"]["ops_quantized"], "ops_total": q["graph"]["ops_total"],
                      "float_ops": q["graph"]["float_ops"], "weight_scales": q["graph"]["weight_scales"],
                      "calibration_method": q.get("calibration_method"), "qdq_pairs": q["graph"]["quantize_linear"],
                      "features_vs_float": q["vs_float"]}
    return {"model_dir": str(model_dir), "split": meta.split, "metric": metric, "eval_images": len(bundle.test),
            "calibration_images": int8["ptq"].info["quantization"]["calibration"]["images_used"],
            "utility": result, "methods": methods, "latency_ms": latency, "target_points": TARGET_POINTS,
            "target_coverage": TARGET_COVERAGE}


def time_edges(edges: dict[str, Path], npz: Path, rounds: int) -> dict[str, dict[str, float]]:
    """Median per-inference ms of each edge at each batch size, one ONNX Runtime thread, timed side by side."""
    with np.load(npz) as f:
        images = f["input"]
    out: dict[str, dict[str, float]] = {name: {} for name in edges}
    for batch in BATCHES:
        x = np.resize(images, (batch, *images.shape[1:])).astype(np.float32)
        sessions = {name: cpu_session(path, 1) for name, path in edges.items()}
        args = SimpleNamespace(warmup=10, rounds=rounds, runs=max(5, 160 // batch))
        for name, times in measure(sessions, x, args).items():  # type: ignore[arg-type]
            out[name][f"batch {batch}"] = statistics.median(times)
    return out


def text(r: dict[str, Any]) -> str:
    lines = [f"{r['model_dir']} | split {r['split']} | {r['metric']} on {r['eval_images']} evaluation images | "
             f"INT8 calibrated on {r['calibration_images']} calib images"]
    lines += [f"  {name:26s} {value:7.2f}" for name, value in r["utility"].items()]
    for m, d in r["methods"].items():
        share = d["ops_quantized"] / max(d["ops_total"], 1)
        lines.append(f"INT8 {m} vs float: {-d['drop_points']:+.2f} points (target: drop <= {r['target_points']}: "
                     f"{'met' if d['target_met'] else 'NOT met'}); {d['ops_quantized']}/{d['ops_total']} compute ops "
                     f"in INT8 ({share:.0%}, target >= {r['target_coverage']:.0%}: "
                     f"{'met' if share >= r['target_coverage'] else 'NOT met'}), {d['calibration_method']} "
                     f"calibration, {'/'.join(d['weight_scales'])} weight scales; features: mean rel error "
                     f"{d['features_vs_float']['mean_rel_error']:.4f}")
        lines += [f"    float: {f['op']}: {f['why']}" for f in d["float_ops"]]
    for batch in BATCHES:
        key = f"batch {batch}"
        fp32 = r["latency_ms"]["fp32"][key]
        lines.append(f"ORT CPU, 1 thread, {key}: fp32 {fp32:.3f} ms | " + " | ".join(
            f"{name} {t[key]:.3f} ms ({fp32 / t[key]:.2f}x)" for name, t in r["latency_ms"].items() if name != "fp32"))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model_dir", type=Path, help="Model folder (RUN/train or RUN/patrol).")
    p.add_argument("--calibration-images", type=int, default=128, help="Images from the calibration split.")
    p.add_argument("--calibration-method", default=None, help="entropy (default) or max.")
    p.add_argument("--qat-epochs", type=int, default=None,
                   help="Also quantization-aware fine-tuning for this many epochs (PATROL defaults otherwise).")
    p.add_argument("--rounds", type=int, default=15, help="Timed rounds per batch size.")
    p.add_argument("--json", action="store_true", help="Print the result as JSON.")
    args = p.parse_args(argv)
    try:
        result = run(args.model_dir, args.calibration_images, args.calibration_method, args.qat_epochs, args.rounds)
    except PatrolError as exc:
        print(f"bench_int8: error: {exc}", file=sys.stderr)
        return exc.exit_code
    print(json.dumps(result, indent=2) if args.json else text(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
