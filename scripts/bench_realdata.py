#!/usr/bin/env python3
"""PATROL with default settings on a folder of real photographs, over seeds: what a new user would get.

    python scripts/bench_realdata.py --data FOLDER [--seeds 0 1 2] [--out runs/bench-realdata] [--set KEY=VALUE]

FOLDER is an ImageFolder of RGB photographs (one sub-folder per class; keep it
out of the repository, never downloaded at run time). Every seed runs `run`'s
comparison with the schema defaults (docs/config.md) plus only the data, model
(small_resnet, width 16) and budget (15 M MACs) keys, as in the PATROL-on-real-
data issue, through scripts/bench_privacy.py (one run folder per seed under
OUT, reused on a re-run). Prints bench_privacy's table, then per seed PATROL's
utility drop against the baseline, the worst-SSIM ratios, and the time PATROL's
stage took against the baseline's training (from the run folder's manifest).
Targets: drop <= 1.0 point, patrol/undefended <= 0.6, patrol/pruned <= 0.9,
PATROL time <= 3x the baseline's.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from bench_privacy import main as bench_privacy

from patrol_deploy.runfolder import RunFolder, read_json

SETTINGS = ["data.source=imagefolder", "data.channels=3", "data.image_size=32", "model.name=small_resnet",
            "model.width=16", "budget.edge_macs=1.5e7"]
TARGETS = {"drop_points": 1.0, "patrol_over_undefended": 0.6, "patrol_over_pruned": 0.9, "time_ratio": 3.0}


def per_seed(out: Path, seeds: list[int]) -> dict[int, dict[str, Any]]:
    """PATROL's drop, its SSIM ratios and its stage time against the baseline's, from each seed's run folder."""
    rows = {}
    for seed in seeds:
        run = RunFolder(out / f"seed-{seed}")
        report = read_json(run.path("report.json"))
        seconds = {name: float(s["ended"] - s["started"]) for name, s in run.manifest()["stages"].items()}
        v = report["variants"]
        worst = {name: v[name]["privacy"]["worst_ssim"] for name in ("undefended", "pruned", "patrol")}
        rows[seed] = {"drop_points": v["undefended"]["utility"] - v["patrol"]["utility"],
                      "patrol_over_undefended": worst["patrol"] / worst["undefended"],
                      "patrol_over_pruned": worst["patrol"] / worst["pruned"],
                      "time_ratio": seconds["patrol"] / seconds["train"], "split": v["patrol"]["split"]["name"],
                      "search": (report.get("patrol_search") or {}).get("why")}
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, required=True, help="ImageFolder of RGB photographs")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--out", type=Path, default=Path("runs/bench-realdata"))
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = ap.parse_args(argv)
    if not args.data.is_dir():
        print(f"error: --data '{args.data}' is not a folder. Fix: pass an ImageFolder of photographs "
              "(one sub-folder per class).", file=sys.stderr)
        return 2
    overrides = [*SETTINGS, f"data.root={args.data.resolve()}", *args.overrides]
    code = bench_privacy(["--seeds", *map(str, args.seeds), "--out", str(args.out),
                          *[a for o in overrides for a in ("--set", o)]])
    if code != 0:
        return code
    rows = per_seed(args.out, args.seeds)
    for seed, row in rows.items():
        checks = ", ".join(f"{k} {row[k]:.3f} ({'met' if row[k] <= t else 'NOT met'}, target <= {t})"
                           for k, t in TARGETS.items())
        print(f"seed {seed} (PATROL at {row['split']}): {checks}")
        if row["search"]:
            print(f"  search: {row['search']}")
    print(json.dumps({"per_seed": rows, "targets": TARGETS}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
