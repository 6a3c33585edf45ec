"""`patrol-deploy splits CONFIG`: edge cost of every split point and the deepest one within budget."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from patrol_deploy.cli.options import config_args, emit, json_option
from patrol_deploy.config import load_config


def splits_table(result: dict[str, Any]) -> str:
    rows = [f"{'split':<12} {'edge MACs':>14} {'edge params':>12} {'feature':>14} {'upload B':>10}  fits"]
    for s in result["splits"]:
        mark = "<- deepest within budget" if s["split"] == result["deepest_fitting"] else ""
        shape = "x".join(str(d) for d in s["feature_shape"])
        rows.append(f"{s['split']:<12} {s['edge_macs']:>14,} {s['edge_params']:>12,} {shape:>14} "
                    f"{s['upload_bytes']:>10,}  {'yes' if s['fits'] else 'no ':<3} {mark}")
    return "\n".join(rows)


@click.command()
@config_args
@json_option
def splits(config: Path, overrides: tuple[str, ...], as_json: bool) -> None:
    """Print each candidate split (edge MACs, params, feature shape, upload bytes) and mark the deepest that fits;
    exit 2 after the table when none fits."""
    cfg = load_config(config, overrides)  # before importing torch: config mistakes are reported at once

    from patrol_deploy.budget import deepest_fitting, split_costs
    from patrol_deploy.data import load_data
    from patrol_deploy.models import create_model

    bundle = load_data(cfg.data, cfg.seed)
    model = create_model(cfg.model, bundle.num_classes, bundle.channels)
    costs = split_costs(model, (bundle.channels, bundle.image_size, bundle.image_size), cfg.budget)
    fitting = [c for c in costs if c.fits]
    result = {"model": cfg.model.name, "input_shape": [bundle.channels, bundle.image_size, bundle.image_size],
              "budget": cfg.budget.model_dump(), "deepest_fitting": fitting[-1].split if fitting else None,
              "splits": [c.as_dict() for c in costs]}
    emit(result, as_json, splits_table)  # the table first, also (above all) when nothing fits
    if not fitting:
        deepest_fitting(costs)  # BudgetError (exit 2) naming what the shallowest split exceeds
