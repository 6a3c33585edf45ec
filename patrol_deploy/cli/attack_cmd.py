"""`patrol-deploy attack CONFIG --model DIR --out DIR`: invert a model folder's uploaded features.

Loads the model folder, cuts it at its recorded split (or `--split`, to measure
how leakage falls with depth), attacks the torch edge
with the chosen attacks on `attacks.eval_images` test images and writes
`attack.json` (the privacy numbers plus utility) and `reconstructions.npz`
(originals and each attack's reconstructions, [0, 1] float32 N,C,H,W) into OUT.
"""

from __future__ import annotations

import math
import time
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
    import dataclasses

    import numpy as np

    from patrol_deploy.attacks import AttackContext, TorchEdgeRunner, run_attacks
    from patrol_deploy.data import load_data
    from patrol_deploy.errors import PatrolError
    from patrol_deploy.modelio import load_model_dir
    from patrol_deploy.runfolder import RunFolder, atomic_path, write_json
    from patrol_deploy.split import cut
    from patrol_deploy.training import evaluate, utility_metric

    cfg = load_config(config, overrides)
    names = [n.strip() for n in attack_names.split(",") if n.strip()] if attack_names else cfg.attacks.names
    model, meta = load_model_dir(model_dir)
    bundle = load_data(cfg.data, cfg.seed)
    # Normalize with the model's own statistics, whatever the config's data would give.
    bundle = dataclasses.replace(bundle, **{
        k: dataclasses.replace(getattr(bundle, k), mean=tuple(meta.mean), std=tuple(meta.std))
        for k in ("train", "val", "test", "aux", "calib")})
    device = cfg.train.device
    model.to(device)
    split = split or meta.split
    edge, cloud = cut(model, split)
    shape = (meta.input_shape[0], meta.input_shape[1], meta.input_shape[2])
    actx = AttackContext.from_test_split(TorchEdgeRunner(edge), cloud, bundle, cfg.attacks, cfg.seed, device, shape)
    started = time.time()
    suite = run_attacks(names, actx)
    metric = utility_metric(meta.task)
    utility = evaluate(model, bundle, meta.task, device)
    result = {"model": str(model_dir), "split": split, "utility_metric": metric, "utility": utility[metric],
              "utility_all": utility, "eval_images": len(actx.images), "privacy": suite.privacy_dict()}
    run = RunFolder(out)
    arrays = {"originals": bundle.denormalize(suite.originals).numpy().astype(np.float32)}
    arrays.update({n: bundle.denormalize(r.reconstructions).numpy().astype(np.float32)
                   for n, r in suite.results.items() if r.reconstructions is not None})
    npz = run.path("reconstructions.npz")
    with atomic_path(npz) as tmp, open(tmp, "wb") as fh:
        np.savez_compressed(fh, **arrays)
    report = write_json(run.path("attack.json"), result)
    run.record("attack", [report, npz], {"config": cfg.dump(), "model": str(model_dir), "attacks": names,
                                      "split": split},
               seed=cfg.seed, started=started)
    emit(result, as_json, attack_table)
    if suite.errors:
        if ctx.obj and ctx.obj.get("debug"):
            for r in suite.results.values():
                if r.traceback:
                    click.echo(r.traceback, err=True)
        failed = "; ".join(f"{n}: {e}" for n, e in suite.errors.items())
        raise PatrolError(f"attack(s) failed ({failed}); recorded as errors in {report}, so the worst case is "
                          "unknown.", "rerun with --debug for the traceback")
