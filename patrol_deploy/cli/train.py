"""`patrol-deploy train CONFIG --out DIR`: the baseline model (user checkpoint or trained from scratch)."""

from __future__ import annotations

from pathlib import Path

import click

from patrol_deploy.cli.options import config_args, emit, force_option, json_option, out_option
from patrol_deploy.config import load_config


@click.command()
@config_args
@out_option()
@force_option
@json_option
def train(config: Path, overrides: tuple[str, ...], out: Path, force: bool, as_json: bool) -> None:
    """Train the baseline model (or load model.checkpoint) into OUT/train/."""
    import json

    from patrol_deploy.baseline import baseline_model
    from patrol_deploy.data import load_data
    from patrol_deploy.distributed import init_distributed
    from patrol_deploy.preflight import preflight
    from patrol_deploy.runfolder import RunFolder, check_run_folder, run_identity

    cfg = load_config(config, overrides)
    ctx = init_distributed(cfg.train.device)
    run = RunFolder(out)
    check_run_folder(run, run_identity(cfg), force)  # every rank refuses a foreign folder before any work
    preflight(cfg, patrol=False)  # a budget no split meets fails before any training
    bundle = load_data(cfg.data, cfg.seed)
    baseline_model(cfg, bundle, run, ctx)
    if ctx.is_main:
        summary = json.loads(run.path("train", "summary.json").read_text())
        emit(summary, as_json, lambda s: f"baseline {s['model']}: {s['utility_metric']} "
             f"{s['utility'][s['utility_metric']]:.2f} -> {run.path('train', 'model.pt')}")
