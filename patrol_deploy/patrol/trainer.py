"""Training loops for the PATROL objective (mask phase and fine-tuning), DDP-ready under torchrun."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from patrol_deploy.checkpoint import Checkpoint, Stateful
from patrol_deploy.config import Config
from patrol_deploy.data.bundle import DataBundle
from patrol_deploy.distributed import DistContext, sync_buffers, sync_gradients, wrap
from patrol_deploy.models.blocknet import BlockNet, ReIDHead
from patrol_deploy.patrol.masks import SoftMasks
from patrol_deploy.patrol.objective import PatrolNet
from patrol_deploy.split import cut
from patrol_deploy.training import (
    Stream,
    check_finite_parameters,
    cosine,
    make_optimizer,
    train_batches,
    train_epochs,
)

TERMS = ("total", "task", "distill", "lipschitz", "adversarial", "sparsity")


@dataclass
class History:
    """Mean of each loss term per epoch."""

    epochs: list[dict[str, float]] = field(default_factory=list)


def surrogate_decoder(model: BlockNet, split: str, example: torch.Tensor, width: int = 128) -> nn.Module:
    """The training-time surrogate inverse network for images like `example` (never the evaluating attacker)."""
    from patrol_deploy.attacks.decoder import build_decoder

    edge = cut(model, split)[0]
    with torch.no_grad():
        was = edge.training
        edge.eval()
        feat = edge(example[:1].to(next(model.parameters()).device))
        edge.train(was)
    return build_decoder(tuple(feat.shape[1:]), image_channels=example.shape[1], image_size=example.shape[-1],
                         width=width)


def surrogate_step(decoder: nn.Module, opt: torch.optim.Optimizer, z: torch.Tensor, x: torch.Tensor,
                   ctx: DistContext = DistContext()) -> None:
    """One update of the surrogate toward reconstructing `x` from the (detached) features `z`."""
    loss = F.mse_loss(decoder(z), x)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    sync_gradients(decoder.parameters(), ctx)
    opt.step()


def warm_up_surrogate(model: BlockNet, split: str, decoder: nn.Module, bundle: DataBundle, cfg: Config,
                      ctx: DistContext, checkpoint: Checkpoint | None = None) -> None:
    """One epoch of decoder-only training on the current edge, so the defender faces a real attacker from step 1.

    With `checkpoint`, the trained decoder is saved there, and loaded instead of trained again on a re-run.
    """
    device = torch.device(cfg.train.device)
    decoder.to(device).train()  # built on the CPU; the edge runs on train.device
    parts = {"decoder": decoder}
    if checkpoint is not None and checkpoint.resume(parts, "PATROL surrogate warm-up")[0]:
        return
    edge = cut(model, split)[0]
    opt = torch.optim.Adam(decoder.parameters(), lr=cfg.patrol.adversarial.lr)
    was = edge.training
    edge.eval()
    for x, _ in train_batches(bundle.train, cfg.train, False, cfg.seed, Stream.SURROGATE, ctx):
        x = x.to(device)
        with torch.no_grad():
            z = edge(x)
        surrogate_step(decoder, opt, z, x, ctx)
    edge.train(was)
    if checkpoint is not None and ctx.is_main:
        checkpoint.save_epoch(0, [], parts)


def train_patrol(model: BlockNet, split: str, bundle: DataBundle, cfg: Config, epochs: int,
                 masks: SoftMasks | None, decoder: nn.Module | None, ctx: DistContext = DistContext(),
                 desc: str = "PATROL", checkpoint: Checkpoint | None = None,
                 teacher: BlockNet | None = None, freeze_cloud: bool = False) -> History:
    """Train edge and cloud (and masks and surrogate) with the full objective for `epochs` epochs; `teacher`
    (the frozen unpruned baseline) is distilled from when `patrol.distill` is on. With `freeze_cloud` only the
    edge learns: the cloud keeps its weights and batch-norm statistics (QAT: the cloud that ships is unchanged).

    With `checkpoint`, the state after every epoch (model with its masks, surrogate, optimizers, RNGs) is saved
    there and a re-run resumes after the last finished epoch, as `training.fit` does.
    """
    device = torch.device(cfg.train.device)
    model.to(device).train()
    if freeze_cloud:
        cloud = cut(model, split)[1]
        cloud.eval().requires_grad_(False)
    if decoder is not None:
        decoder.to(device).train()
    if teacher is not None:
        teacher.to(device).eval()
    net = PatrolNet(model, split, cfg.patrol, decoder, masks, cfg.train.triplet_margin, teacher)
    wrapped = wrap(net, ctx)
    mask_ids = {id(p) for p in (masks.parameters() if masks else [])}
    groups: list[dict[str, Any]] = [{"params": [p for p in model.parameters()
                                                if id(p) not in mask_ids and p.requires_grad]}]
    if masks is not None:
        groups.append({"params": masks.parameters(), "weight_decay": 0.0})
    opt = make_optimizer(groups, cfg.patrol.lr, cfg.train.weight_decay)
    opt_adv = torch.optim.Adam(decoder.parameters(), lr=cfg.patrol.adversarial.lr) if decoder is not None else None
    reid = isinstance(model.head, ReIDHead)
    steps = max(1, sum(1 for _ in train_batches(bundle.train, cfg.train, reid, cfg.seed, 0, ctx)))
    sched = cosine(opt, epochs * steps)
    parts: dict[str, Stateful] = {"model": model, "optimizer": opt, "scheduler": sched}
    if decoder is not None and opt_adv is not None:
        parts.update(decoder=decoder, adversary=opt_adv)

    def update(losses: dict[str, torch.Tensor], x: torch.Tensor) -> None:
        opt.zero_grad(set_to_none=True)
        if opt_adv is not None:
            opt_adv.zero_grad(set_to_none=True)
        losses["total"].backward()
        opt.step()
        sched.step()
        if opt_adv is not None and decoder is not None:
            opt_adv.step()
            for _ in range(cfg.patrol.adversarial.attacker_steps - 1):
                surrogate_step(decoder, opt_adv, losses["features"], x, ctx)

    epochs_done = train_epochs(model, parts, epochs,
                               lambda epoch: train_batches(bundle.train, cfg.train, reid, cfg.seed,
                                                           Stream.TRAIN + epoch, ctx),
                               wrapped, update, device=device, desc=desc, ctx=ctx, checkpoint=checkpoint,
                               record=TERMS)
    sync_buffers(net, ctx)
    check_finite_parameters(model, desc)  # a diverged model is never recorded
    model.eval()
    return History(epochs_done)
