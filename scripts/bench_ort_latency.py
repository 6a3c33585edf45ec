#!/usr/bin/env python3
"""ONNX Runtime CPU latency of a pruned edge against the unpruned edge at the same split, next to their MACs.

    python scripts/bench_ort_latency.py --unpruned RUN/train --pruned RUN/patrol [--batch 1] [--threads 1]

Both edges are exported (FP32, simplified, checked against torch) and timed in
one process with the same input, batch, warm-up and thread count; each round
times both, alternating which goes first, and the median per-inference time
over the rounds is reported. Prints the MACs of each edge, the MAC reduction
ratio, the measured speed-up and speed-up / MAC ratio. Target: >= 0.7 (MACs
that do not turn into time are a finding to report and fix).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from patrol_deploy.backends.onnxrt import cpu_session
from patrol_deploy.budget import count_macs_params
from patrol_deploy.config import ExportConfig
from patrol_deploy.deployment.calibration import CalibrationRecipe, calibration_array
from patrol_deploy.deployment.export import export_model_dir
from patrol_deploy.errors import ModelError, PatrolError
from patrol_deploy.modelio import load_model_dir, read_meta
from patrol_deploy.runfolder import RunFolder
from patrol_deploy.split import cut

TARGET = 0.7


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--unpruned", type=Path, required=True, help="Model folder of the unpruned model (RUN/train).")
    p.add_argument("--pruned", type=Path, required=True, help="Model folder of the pruned model (RUN/patrol).")
    p.add_argument("--split", default=None,
                   help="Cut both models here (e.g. the unpruned baseline RUN/train at PATROL's split).")
    p.add_argument("--batch", type=int, default=1, help="Images per inference (default 1, as on the edge).")
    p.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads (default 1: stable timing).")
    p.add_argument("--warmup", type=int, default=20, help="Untimed runs of each edge first.")
    p.add_argument("--rounds", type=int, default=15, help="Timed rounds; each times both edges, order alternating.")
    p.add_argument("--runs", type=int, default=40, help="Inferences per edge per round.")
    p.add_argument("--json", action="store_true", help="Print the result as JSON.")
    args = p.parse_args(argv)
    if min(args.batch, args.threads, args.rounds, args.runs) < 1 or args.warmup < 0:
        p.error("--batch, --threads, --rounds and --runs must be >= 1, --warmup >= 0")
    return args


def prepare(model_dir: Path, work: Path, batch: int) -> dict[str, Any]:
    """Export one edge and count its MACs; returns what the timing and the report need."""
    model, meta = load_model_dir(model_dir)
    macs, params, feature_shape = count_macs_params(cut(model, meta.split)[0], tuple(meta.input_shape))
    exported = export_model_dir(model_dir, RunFolder(work), ExportConfig(dynamic_batch=batch > 1))
    return {"model_dir": str(model_dir), "split": meta.split, "macs": macs,
            "params": params, "feature_shape": list(feature_shape), "onnx": exported.edge,
            "data": exported.edge_info["source"]}


def measure(sessions: dict[str, Any], x: np.ndarray, args: argparse.Namespace) -> dict[str, list[float]]:
    """Per-inference milliseconds of each session in each round, the order of the sessions alternating by round."""
    feeds = {name: {s.get_inputs()[0].name: x} for name, s in sessions.items()}
    for name, s in sessions.items():
        for _ in range(args.warmup):
            s.run(None, feeds[name])
    times: dict[str, list[float]] = {name: [] for name in sessions}
    names = list(sessions)
    for r in range(args.rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            start = time.perf_counter()
            for _ in range(args.runs):
                sessions[name].run(None, feeds[name])
            times[name].append((time.perf_counter() - start) * 1000.0 / args.runs)
    return times


def at_split(folder: Path, split: str | None, tmp: Path) -> Path:
    """`folder` itself, or a copy whose model.json names `split` (same weights, another cut)."""
    meta = read_meta(folder)
    if split is None or split == meta.split:
        return folder
    copy = tmp / f"{folder.name}-at-{split}"
    shutil.copytree(folder, copy)
    info = json.loads((copy / "model.json").read_text())
    info["split"] = split
    (copy / "model.json").write_text(json.dumps(info))
    return copy


def run(args: argparse.Namespace) -> dict[str, Any]:
    staging = Path(tempfile.mkdtemp(prefix="bench-ort-split-"))
    args.unpruned, args.pruned = (at_split(f, args.split, staging) for f in (args.unpruned, args.pruned))
    ma, mb = read_meta(args.unpruned), read_meta(args.pruned)
    if ma.split != mb.split or ma.input_shape != mb.input_shape:
        raise ModelError(f"the edges differ in split or input ({ma.split} {ma.input_shape} vs "
                         f"{mb.split} {mb.input_shape}).", "compare two model folders at the same split")
    with tempfile.TemporaryDirectory(prefix="bench-ort-") as tmp:
        edges = {name: prepare(folder, Path(tmp) / name, args.batch)
                 for name, folder in (("unpruned", args.unpruned), ("pruned", args.pruned))}
        a, b = edges["unpruned"], edges["pruned"]
        src = a["data"]
        images = calibration_array(src["data"], src["seed"], CalibrationRecipe(images=args.batch, seed=src["seed"]))
        x = np.resize(images, (args.batch, *images.shape[1:])).astype(np.float32)  # repeat if the split is small
        sessions = {name: cpu_session(e["onnx"], args.threads) for name, e in edges.items()}
        times = measure(sessions, x, args)
    for name, e in edges.items():
        e["onnx"] = str(e.pop("onnx"))
        e.pop("data")
        e["latency_ms"] = {"median": statistics.median(times[name]), "min": min(times[name]),
                           "max": max(times[name]), "rounds": times[name]}
    mac_ratio = a["macs"] / b["macs"]
    speedup = a["latency_ms"]["median"] / b["latency_ms"]["median"]
    return {"split": a["split"], "batch": args.batch, "threads": args.threads, "warmup": args.warmup,
            "rounds": args.rounds, "runs_per_round": args.runs, "edges": edges, "mac_ratio": mac_ratio,
            "speedup": speedup, "efficiency": speedup / mac_ratio, "target": TARGET,
            "target_met": speedup / mac_ratio >= TARGET}


def text(result: dict[str, Any]) -> str:
    lines = [f"split {result['split']} | batch {result['batch']} | {result['threads']} thread(s) | "
             f"{result['rounds']} rounds x {result['runs_per_round']} runs, alternating order | median ms per run"]
    for name, e in result["edges"].items():
        lat = e["latency_ms"]
        lines.append(f"{name:9s} {e['macs'] / 1e6:8.2f} M MACs  {e['params']:>9,d} params  features "
                     f"{e['feature_shape']}  {lat['median']:.4f} ms (min {lat['min']:.4f}, max {lat['max']:.4f})"
                     f"  {e['model_dir']}")
    verdict = "met" if result["target_met"] else "NOT met"
    lines.append(f"MAC reduction {result['mac_ratio']:.2f}x | measured speed-up {result['speedup']:.2f}x | "
                 f"speed-up / MAC ratio {result['efficiency']:.2f} (target >= {TARGET}: {verdict})")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        result = run(args)
    except PatrolError as exc:
        print(f"bench_ort_latency: error: {exc}", file=sys.stderr)
        return exc.exit_code
    print(json.dumps(result, indent=2) if args.json else text(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
