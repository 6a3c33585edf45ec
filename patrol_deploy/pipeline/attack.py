"""`patrol-deploy attack`'s stage: invert a model folder's uploaded features with the attack suite.

Loads the model folder, cuts it at its recorded split (or another, to measure how leakage falls with depth),
attacks the torch edge on `attacks.eval_images` test images and writes `attack.json` (the privacy numbers plus
utility) and `reconstructions.npz` (originals and each attack's reconstructions, [0, 1] float32 N,C,H,W).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import numpy as np

from patrol_deploy.attacks import AttackContext, SuiteResult, TorchEdgeRunner, run_attacks
from patrol_deploy.config import Config
from patrol_deploy.data import load_data
from patrol_deploy.modelio import load_model_dir
from patrol_deploy.runfolder import RunFolder, write_json, write_npz
from patrol_deploy.split import cut
from patrol_deploy.training import evaluate, utility_metric

STAGE = "attack"


def attack_model(cfg: Config, model_dir: Path, out: Path, names: list[str],
                 split: str | None = None) -> tuple[dict[str, Any], SuiteResult, Path]:
    """Attack `model_dir`'s edge (at `split`, default its own) into OUT; returns attack.json's content, the suite's
    result and the path of attack.json. A failed attack is recorded (NaN), not raised."""
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
    npz = write_npz(run.path("reconstructions.npz"), arrays)
    report = write_json(run.path("attack.json"), result)
    run.record(STAGE, [report, npz], {"config": cfg.dump(), "model": str(model_dir), "attacks": names,
                                      "split": split}, seed=cfg.seed, started=started)
    return result, suite, report
