"""`patrol-deploy patrol CONFIG --out DIR`: baseline, then PATROL into DIR/patrol/."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from patrol_deploy.cli.options import config_args, emit, force_option, json_option, out_option
from patrol_deploy.config import load_config


def patrol_text(s: dict[str, Any]) -> str:
    b, a, before = s["baseline_split"], s["edge_after"], s["edge_before"]
    metric = s["utility_metric"]
    return "\n".join([
        f"unpruned split within budget: {b['split']} ({b['edge_macs']:,} MACs)",
        f"PATROL split: {s['split']}: edge MACs {before['edge_macs']:,} -> {a['edge_macs']:,}, "
        f"params {before['edge_params']:,} -> {a['edge_params']:,} (budget {s['budget']})",
        f"{metric}: {s['utility_before']:.2f} -> {s['utility_after']:.2f}",
        *([f"search: {s['search']['why']}"] if s.get("search") else []),
    ])


@click.command()
@config_args
@out_option()
@force_option
@json_option
def patrol(config: Path, overrides: tuple[str, ...], out: Path, force: bool, as_json: bool) -> None:
    """Prune and train the edge with PATROL; writes OUT/patrol/{model.pt,model.json,summary.json}."""
    from patrol_deploy.baseline import baseline_model
    from patrol_deploy.data import load_data
    from patrol_deploy.distributed import init_distributed
    from patrol_deploy.patrol import patrol_stage
    from patrol_deploy.preflight import preflight
    from patrol_deploy.runfolder import RunFolder, check_run_folder, run_identity

    cfg = load_config(config, overrides)
    ctx = init_distributed(cfg.train.device)
    run = RunFolder(out)
    check_run_folder(run, run_identity(cfg), force)  # every rank refuses a foreign folder before any work
    preflight(cfg, components=True)  # an unknown name or an unmeetable budget fails before any training
    bundle = load_data(cfg.data, cfg.seed)
    baseline = baseline_model(cfg, bundle, run, ctx)
    _, summary = patrol_stage(cfg, bundle, baseline, run, ctx=ctx)
    if ctx.is_main:
        emit(summary.model_dump(mode="json"), as_json, patrol_text)
    search = summary.search
    if search is not None and not search.passed:
        from patrol_deploy.errors import UtilityNotKept

        raise UtilityNotKept(f"PATROL's search kept no candidate within patrol.max_utility_drop: {search.why}.",
                             "raise patrol.max_utility_drop knowingly, add weaker patrol.search.strengths, more "
                             "patrol.finetune_epochs, or a larger edge budget (a shallower split)")
