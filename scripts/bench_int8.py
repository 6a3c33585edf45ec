#!/usr/bin/env python3
"""Utility of the INT8 edge (ModelOpt ONNX route) against the float edge, with the cloud in torch.

    patrol-deploy train patrol_deploy/configs/default.yaml --out runs/default
    python scripts/bench_int8.py runs/default/train [--calibration-images 128]

The float edge runs in torch; the exported FP32 edge and the INT8 edge (Q/DQ,
entropy calibration on the calib split) run in ONNX Runtime on the CPU and feed
the same torch cloud. Utility is measured on the evaluation images (the test
split, never used for calibration). Target: INT8 within 0.5 point of float.
The attack-side (SSIM) comparison is `patrol-deploy verify`'s privacy gate.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from patrol_deploy.config import DataConfig
from patrol_deploy.data import load_data
from patrol_deploy.errors import PatrolError
from patrol_deploy.export import model_data
from patrol_deploy.modelio import load_model_dir
from patrol_deploy.onnx_runner import OnnxEdgeRunner, with_edge_runner
from patrol_deploy.quantize import quantize_edge
from patrol_deploy.runfolder import RunFolder
from patrol_deploy.split import cut
from patrol_deploy.training import evaluate, utility_metric

TARGET_POINTS = 0.5


def run(model_dir: Path, calibration_images: int) -> dict[str, Any]:
    model, meta = load_model_dir(model_dir)
    data, seed = model_data(meta, model_dir)
    bundle = load_data(DataConfig.model_validate(data), seed)
    edge = cut(model, meta.split)[0]
    metric = utility_metric(meta.task)
    with tempfile.TemporaryDirectory(prefix="bench-int8-") as tmp:
        int8 = quantize_edge(model_dir, RunFolder(tmp), "int8", "onnx", calibration_images)
        utility = {
            "float (torch)": evaluate(model, bundle, meta.task)[metric],
            "fp32 (ONNX Runtime)": evaluate(with_edge_runner(model, meta.split, OnnxEdgeRunner(
                int8.path.parent.parent / "export" / "edge.onnx", edge)), bundle, meta.task)[metric],
            "int8 (ONNX Runtime)": evaluate(with_edge_runner(model, meta.split, OnnxEdgeRunner(int8.path, edge)),
                                            bundle, meta.task)[metric],
        }
    drop = utility["float (torch)"] - utility["int8 (ONNX Runtime)"]
    q = int8.info["quantization"]
    return {"model_dir": str(model_dir), "split": meta.split, "metric": metric, "eval_images": len(bundle.test),
            "calibration_images": q["calibration"]["images_used"], "utility": utility, "int8_drop_points": drop,
            "target_points": TARGET_POINTS, "target_met": drop <= TARGET_POINTS,
            "qdq_pairs": q["graph"]["quantize_linear"],
            "compute_ops_int8": f"{q['graph']['compute_ops_quantized']}/{q['graph']['compute_ops']}",
            "features_vs_float": q["vs_float"]}


def text(r: dict[str, Any]) -> str:
    lines = [f"{r['model_dir']} | split {r['split']} | {r['metric']} on {r['eval_images']} evaluation images | "
             f"INT8 calibrated on {r['calibration_images']} calib images, {r['qdq_pairs']} Q/DQ pairs, "
             f"{r['compute_ops_int8']} compute ops in INT8"]
    lines += [f"  {name:20s} {value:7.2f}" for name, value in r["utility"].items()]
    verdict = "met" if r["target_met"] else "NOT met"
    change = r["utility"]["int8 (ONNX Runtime)"] - r["utility"]["float (torch)"]
    lines.append(f"INT8 vs float: {change:+.2f} points (target: drop <= {TARGET_POINTS}: {verdict}); "
                 f"features: mean rel error {r['features_vs_float']['mean_rel_error']:.4f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model_dir", type=Path, help="Model folder (RUN/train or RUN/patrol).")
    p.add_argument("--calibration-images", type=int, default=128, help="Images from the calibration split.")
    p.add_argument("--json", action="store_true", help="Print the result as JSON.")
    args = p.parse_args(argv)
    try:
        result = run(args.model_dir, args.calibration_images)
    except PatrolError as exc:
        print(f"bench_int8: error: {exc}", file=sys.stderr)
        return exc.exit_code
    print(json.dumps(result, indent=2) if args.json else text(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
