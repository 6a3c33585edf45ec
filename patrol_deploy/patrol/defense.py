"""`adversarial_only`: PATROL's adversarial reconstruction training alone (no pruning, no Lipschitz term),
registered as a baseline defense so the report shows what the other parts of PATROL add."""

from __future__ import annotations

import torch

from patrol_deploy.defenses.base import DefendedModel, Defense, DefenseJob
from patrol_deploy.patrol.stage import run_patrol
from patrol_deploy.split import cut
from patrol_deploy.training import evaluate


def train_adversarial_only(job: DefenseJob, beta: float) -> DefendedModel:
    """PATROL's objective with pruning and the Lipschitz term off, at the unpruned split, with weight beta."""
    cfg = job.cfg.model_copy(deep=True)
    cfg.patrol.prune.enabled = False
    cfg.patrol.lipschitz.enabled = False
    cfg.patrol.adversarial.enabled = True
    cfg.patrol.adversarial.beta = beta
    cfg.patrol.distill.enabled = False  # a baseline defense: no teacher, like noise, dropout and NoPeek
    torch.manual_seed(job.seed)  # the surrogate's initial weights, whatever ran before in this process
    model, summary = run_patrol(cfg, job.bundle, job.model,
                                ckpts=job.checkpoints.sub(f"adversarial_only-{beta}") if job.checkpoints else None)
    edge, cloud = cut(model, summary["split"])
    val = evaluate(model, job.bundle, cfg.model.task, cfg.train.device, split=job.bundle.val)
    history = [e["total"] for e in summary["loss_history"]["train"]]
    return DefendedModel("adversarial_only", beta, "beta", model, edge, cloud, summary["utility_detail"], val,
                         history)


ADVERSARIAL_ONLY = Defense(name="adversarial_only", knob="beta", train=train_adversarial_only, grid=(8.0, 4.0, 2.0))
