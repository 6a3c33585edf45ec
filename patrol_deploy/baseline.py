"""The baseline stage: the user's checkpoint, or a model trained from scratch, saved in the run folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from patrol_deploy.budget import deepest_fitting, split_costs
from patrol_deploy.checkpoint import Checkpoints
from patrol_deploy.config import Config
from patrol_deploy.data.bundle import DataBundle
from patrol_deploy.distributed import DistContext
from patrol_deploy.modelio import ModelMeta, load_model_dir, save_model_dir
from patrol_deploy.models import BlockNet, create_model
from patrol_deploy.progress import status
from patrol_deploy.runfolder import RunFolder, write_json
from patrol_deploy.stages import run_stage
from patrol_deploy.training import evaluate, fit, utility_metric

STAGE = "train"


def stage_config(cfg: Config) -> dict[str, Any]:
    """The part of the config that decides the baseline model."""
    return {"seed": cfg.seed, "data": cfg.data.model_dump(mode="json"), "model": cfg.model.model_dump(mode="json"),
            "train": cfg.train.model_dump(mode="json")}


def model_meta(cfg: Config, bundle: DataBundle, split: str, **extra: Any) -> ModelMeta:
    """Model-folder metadata; `extra["data"]` and `extra["seed"]` let later stages reload the same data splits."""
    return ModelMeta(model=cfg.model.model_dump(mode="json"), split=split, num_classes=bundle.num_classes,
                     input_shape=[bundle.channels, bundle.image_size, bundle.image_size],
                     mean=list(bundle.mean), std=list(bundle.std), task=cfg.model.task,
                     extra={"data": cfg.data.model_dump(mode="json"), "seed": cfg.seed, **extra})


def baseline_model(cfg: Config, bundle: DataBundle, run: RunFolder, ctx: DistContext = DistContext()) -> BlockNet:
    """Return the trained baseline, reusing the run folder's copy when its config is unchanged."""

    def build(ckpts: Checkpoints) -> tuple[BlockNet, list[Path] | None]:
        torch.manual_seed(cfg.seed)
        model = create_model(cfg.model, bundle.num_classes, bundle.channels)
        history: list[float] = []
        if cfg.model.checkpoint is None or not getattr(model, "head_loaded", False):
            what = ("training" if cfg.model.checkpoint is None else "fine-tuning the checkpoint's backbone with a "
                    f"new {cfg.model.task} head (its own head does not fit {bundle.num_classes} classes / the task)")
            status(f"baseline: {what} {cfg.model.name} for {cfg.train.epochs} epochs on {len(bundle.train)} images")
            history = fit(model, bundle, cfg.train, cfg.seed, ctx=ctx, desc="baseline",
                          checkpoint=ckpts.file("baseline"))
        model.eval()
        if not ctx.is_main:
            return model, None
        utility = evaluate(model, bundle, cfg.model.task, cfg.train.device)
        costs = split_costs(model, (bundle.channels, bundle.image_size, bundle.image_size), cfg.budget)
        split = deepest_fitting(costs).split
        files = save_model_dir(run.path(STAGE), model, model_meta(cfg, bundle, split, utility=utility))
        summary = write_json(run.path(STAGE, "summary.json"), {
            "model": cfg.model.name, "split": split, "utility_metric": utility_metric(cfg.model.task),
            "utility": utility, "loss_history": history, "data": bundle.summary(),
            "splits": [c.as_dict() for c in costs]})
        return model, [*files, summary]

    return run_stage(run, STAGE, stage_config(cfg), label="baseline", seed=cfg.seed,
                     reuse=lambda: load_model_dir(run.path(STAGE))[0], build=build)
