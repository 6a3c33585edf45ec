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

Each seed also trains the reference the baseline is held to: ResNet-20 with
the CIFAR recipe of He et al. 2016 (section 4.2: SGD with momentum 0.9, lr 0.1,
weight decay 1e-4, batch 128, 4-pixel padding + random crop + horizontal
flip; cosine decay over `--reference-epochs` instead of the paper's step decay
at 64k iterations, which is thousands of epochs on a few thousand images) on
the same data splits, into OUT/reference-seed-N. Target: the default
baseline's test utility is no worse than the reference's.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from bench_privacy import main as bench_privacy

from patrol_deploy.baseline import STAGE as BASELINE_STAGE
from patrol_deploy.baseline import baseline_model
from patrol_deploy.config import load_config
from patrol_deploy.data import load_data
from patrol_deploy.errors import PatrolError
from patrol_deploy.pipeline.render import comparison_of
from patrol_deploy.runfolder import RunFolder, read_json

SETTINGS = ["data.source=imagefolder", "data.channels=3", "data.image_size=32", "model.name=small_resnet",
            "model.width=16", "budget.edge_macs=1.5e7"]
# ResNet-20 (small_resnet with 3 stages of 3 blocks at width 16) and He et al.'s CIFAR hyper-parameters.
REFERENCE = ["model.name=small_resnet", "model.width=16", "model.stages=3", "train.lr=0.1",
             "train.weight_decay=1e-4", "train.batch_size=128", "train.augment=crop_flip"]
REFERENCE_EPOCHS = 30
TARGETS = {"reference_minus_baseline": 0.0, "drop_points": 1.0, "patrol_over_undefended": 0.6,
           "patrol_over_pruned": 0.9, "time_ratio": 3.0}


def reference_utility(out: Path, seed: int, overrides: list[str], epochs: int) -> float:
    """Test utility of the ResNet-20 reference recipe on the seed's data splits (trained into
    OUT/reference-seed-N, reused when its config is unchanged)."""
    cfg = load_config(None, [*overrides, *REFERENCE, f"train.epochs={epochs}", f"seed={seed}"])
    run = RunFolder(out / f"reference-seed-{seed}")
    baseline_model(cfg, load_data(cfg.data, cfg.seed), run)
    summary = read_json(run.path(BASELINE_STAGE, "summary.json"))
    return float(summary["utility"][summary["utility_metric"]])


def per_seed(out: Path, seeds: list[int], reference: dict[int, float] | None = None) -> dict[int, dict[str, Any]]:
    """PATROL's drop, its SSIM ratios and its stage time against the baseline's, from each seed's run folder, and
    the reference recipe's utility minus the baseline's where `reference` has the seed."""
    rows = {}
    for seed in seeds:
        run = RunFolder(out / f"seed-{seed}")
        report = comparison_of(run)
        if report is None:
            raise PatrolError(f"'{run.root}' holds no finished comparison (comparison.json or report.json).",
                              "run the benchmark for this seed again: finished stages are reused")
        seconds = {name: float(s["ended"] - s["started"]) for name, s in run.manifest()["stages"].items()}
        v = report["variants"]
        worst = {name: v[name]["privacy"]["worst_ssim"] for name in ("undefended", "pruned", "patrol")}
        rows[seed] = {"drop_points": v["undefended"]["utility"] - v["patrol"]["utility"],
                      "patrol_over_undefended": worst["patrol"] / worst["undefended"],
                      "patrol_over_pruned": worst["patrol"] / worst["pruned"],
                      "time_ratio": seconds["patrol"] / seconds["train"], "split": v["patrol"]["split"]["name"],
                      "search": (report.get("patrol_search") or {}).get("why")}
        if reference is not None and seed in reference:
            rows[seed] = {"reference_minus_baseline": reference[seed] - v["undefended"]["utility"], **rows[seed]}
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, required=True, help="ImageFolder of RGB photographs")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--out", type=Path, default=Path("runs/bench-realdata"))
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--reference-epochs", type=int, default=REFERENCE_EPOCHS,
                    help="epochs of the ResNet-20 reference recipe (0: skip it)")
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
    try:
        reference = {seed: reference_utility(args.out, seed, [*SETTINGS, f"data.root={args.data.resolve()}",
                                                              *args.overrides], args.reference_epochs)
                     for seed in args.seeds} if args.reference_epochs > 0 else None
        rows = per_seed(args.out, args.seeds, reference)
    except PatrolError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for seed, row in rows.items():
        checks = ", ".join(f"{k} {row[k]:.3f} ({'met' if row[k] <= t else 'NOT met'}, target <= {t})"
                           for k, t in TARGETS.items() if k in row)
        print(f"seed {seed} (PATROL at {row['split']}): {checks}")
        if row["search"]:
            print(f"  search: {row['search']}")
    print(json.dumps({"per_seed": rows, "targets": TARGETS}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
