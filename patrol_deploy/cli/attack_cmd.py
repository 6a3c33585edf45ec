"""`patrol-deploy attack CONFIG --model DIR --out DIR`: invert a model folder's uploaded features (the stage is
pipeline/attack.py; this prints its numbers and exits 1 when an attack failed)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import click

from patrol_deploy.cli.options import config_args, emit, json_option, out_option
from patrol_deploy.config import load_config


def attack_table(result: dict[str, Any]) -> str:
    """The human summary: one line per attack and the worst case."""
    rows = [f"split {result['split']}, {result['utility_metric']} {result['utility']:.2f}",
            f"{'attack':<12} {'SSIM':>13} {'PSNR (dB)':>14}"]
    for name, r in result["privacy"]["attacks"].items():
        if "error" in r:
            rows.append(f"{name:<12} failed: {r['error']}")
        else:
            rows.append(f"{name:<12} {r['ssim']:>6.3f} ± {r['ssim_std']:.3f} {r['psnr']:>7.2f} ± {r['psnr_std']:.2f}")
    worst = result["privacy"]["worst_ssim"]
    rows.append(f"worst case: {result['privacy']['worst_attack']} SSIM "
                f"{'n/a' if math.isnan(worst) else f'{worst:.3f}'} (< 0.3 is unrecognizable, He et al. 2019)")
    return "\n".join(rows)


@click.command()
@config_args
@click.option("--model", "model_dir", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Model folder (model.pt + model.json), e.g. RUN/train.")
@out_option(help_text="Folder for attack.json and reconstructions.npz.")
@click.option("--attacks", "attack_names", default=None, metavar="NAMES",
              help="Comma-separated attacks (default: attacks.names from the config).")
@click.option("--split", default=None, metavar="NAME",
              help="Attack the edge cut at this split instead of the model's own (see `patrol-deploy splits`).")
@json_option
@click.pass_context
def attack(ctx: click.Context, config: Path, overrides: tuple[str, ...], model_dir: Path, out: Path,
           attack_names: str | None, split: str | None, as_json: bool) -> None:
    """Attack the edge of a model folder with model-inversion attacks and score the reconstructions."""
    from patrol_deploy.errors import PatrolError
    from patrol_deploy.pipeline.attack import attack_model

    cfg = load_config(config, overrides)
    names = [n.strip() for n in attack_names.split(",") if n.strip()] if attack_names else cfg.attacks.names
    result, suite, report = attack_model(cfg, model_dir, out, names, split)
    emit(result, as_json, attack_table)
    if suite.errors:
        if ctx.obj and ctx.obj.get("debug"):
            for r in suite.results.values():
                if r.traceback:
                    click.echo(r.traceback, err=True)
        failed = "; ".join(f"{n}: {e}" for n, e in suite.errors.items())
        raise PatrolError(f"attack(s) failed ({failed}); recorded as errors in {report}, so the worst case is "
                          "unknown.", "rerun with --debug for the traceback")
