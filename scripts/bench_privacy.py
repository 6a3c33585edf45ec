#!/usr/bin/env python3
"""The full privacy comparison over several seeds: numbers that are seeds, not a seed.

    python scripts/bench_privacy.py --config patrol_deploy/configs/default.yaml --seeds 0 1 2 --out runs/bench-privacy

Runs `patrol-deploy run`'s comparison (baseline, PATROL, the `pruned` and
`deep_undefended` ablations, the matched defenses, every attack) once per seed
into OUT/seed-N (a re-run reuses finished stages), then prints per variant the
mean +- std over seeds of utility and worst-case SSIM, the ratios
patrol/undefended and patrol/pruned, and where PATROL's gain comes from
(depth, pruning, training terms). `--set KEY=VALUE` overrides config keys for
every seed; `--json` prints the same numbers as JSON.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from patrol_deploy.config import load_config
from patrol_deploy.errors import PatrolError
from patrol_deploy.pipeline.compare import compare
from patrol_deploy.runfolder import RunFolder


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _stats(values: list[float]) -> dict[str, float]:
    finite = [v for v in values if isinstance(v, int | float) and math.isfinite(v)]
    if len(finite) != len(values) or not finite:
        return {"mean": math.nan, "std": math.nan, "n": len(finite)}
    return {"mean": statistics.fmean(finite), "std": statistics.stdev(finite) if len(finite) > 1 else 0.0,
            "n": len(finite)}


def summarize(reports: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """Per variant mean/std over seeds of utility and worst SSIM, the PATROL ratios and the gain split."""
    names: list[str] = []
    for rep in reports.values():
        names += [n for n in rep["variants"] if n not in names]
    variants = {}
    for name in names:
        entries = [rep["variants"][name] for rep in reports.values() if name in rep["variants"]]
        variants[name] = {"split": sorted({e["split"]["name"] for e in entries}),
                          "edge_macs": sorted({e["split"]["edge_macs"] for e in entries}),
                          "utility": _stats([e["utility"] for e in entries]),
                          "worst_ssim": _stats([e["privacy"]["worst_ssim"] for e in entries]),
                          "worst_ssim_ci95": [e["privacy"]["attacks"][e["privacy"]["worst_attack"]].get("ssim_ci95")
                                              if e["privacy"].get("worst_attack") in e["privacy"]["attacks"] else None
                                              for e in entries]}

    def ratio(a: str, b: str) -> dict[str, float]:
        pairs = [(r["variants"][a]["privacy"]["worst_ssim"], r["variants"][b]["privacy"]["worst_ssim"])
                 for r in reports.values() if a in r["variants"] and b in r["variants"]]
        return _stats([x / y if y else math.nan for x, y in pairs])

    gain = {step: _stats([r.get("privacy_gain", {}).get(step, math.nan) for r in reports.values()])
            for step in ("depth", "pruning", "terms", "total")}
    verdicts = {seed: r.get("patrol_verdict", {}).get("passed") for seed, r in reports.items()}
    return {"seeds": sorted(reports), "variants": variants, "patrol_over_undefended": ratio("patrol", "undefended"),
            "patrol_over_pruned": ratio("patrol", "pruned"), "gain": gain, "patrol_verdict": verdicts}


def _fmt(s: dict[str, float], spec: str) -> str:
    return f"{s['mean']:{spec}} +- {s['std']:{spec}}" if math.isfinite(s["mean"]) else "n/a"


def table(summary: dict[str, Any], metric: str) -> str:
    rows = [f"{'variant':<18} {'split':<16} {metric + ' %':>18} {'worst SSIM':>18}"]
    for name, v in summary["variants"].items():
        rows.append(f"{name:<18} {','.join(v['split']):<16} {_fmt(v['utility'], '.2f'):>18} "
                    f"{_fmt(v['worst_ssim'], '.3f'):>18}")
    rows.append(f"patrol / undefended worst SSIM: {_fmt(summary['patrol_over_undefended'], '.3f')}")
    rows.append(f"patrol / pruned worst SSIM:     {_fmt(summary['patrol_over_pruned'], '.3f')}")
    rows.append("worst-SSIM drop from: " + ", ".join(f"{k} {_fmt(v, '+.3f')}" for k, v in summary["gain"].items()))
    rows.append(f"PATROL verdict per seed: {summary['patrol_verdict']}")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", type=Path, default=None,
                    help="YAML config (e.g. the bundled default; default: the schema defaults, docs/config.md)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--out", type=Path, default=Path("runs/bench-privacy"), help="one run folder per seed under it")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    reports: dict[int, dict[str, Any]] = {}
    seconds: dict[int, float] = {}
    try:
        for seed in args.seeds:
            cfg = load_config(args.config, [*args.overrides, f"seed={seed}"])
            started = time.perf_counter()
            reports[seed] = compare(cfg, RunFolder(args.out / f"seed-{seed}"))
            seconds[seed] = round(time.perf_counter() - started, 1)
            print(f"seed {seed}: {seconds[seed]} s", file=sys.stderr, flush=True)
    except PatrolError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    summary = {**summarize(reports), "config": str(args.config), "overrides": args.overrides,
               "seconds_per_seed": seconds, "cpu": _cpu()}
    metric = next(iter(reports.values()))["utility_metric"]
    head = f"{args.config or 'defaults'} {' '.join(args.overrides)} | seeds {args.seeds} | CPU {summary['cpu']}"
    print(json.dumps(summary, indent=2, default=str) if args.json else head + "\n" + table(summary, metric))
    return 0


if __name__ == "__main__":
    sys.exit(main())
