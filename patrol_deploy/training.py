"""Plain training and evaluation: produces the baseline model when the user brings no checkpoint.

Classification uses cross-entropy and reports accuracy (%); re-ID uses ID
cross-entropy plus a batch-hard triplet loss on P x K batches and reports mAP
and CMC rank-1 (%) over query / gallery.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from enum import IntEnum
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from patrol_deploy.checkpoint import Checkpoint, Stateful
from patrol_deploy.config import TrainConfig
from patrol_deploy.data.bundle import DataBundle, ImageSplit
from patrol_deploy.distributed import DistContext, average_scalar, sync_buffers, unwrap, wrap
from patrol_deploy.errors import TrainingError
from patrol_deploy.models.blocknet import BlockNet, ReIDHead
from patrol_deploy.progress import progress

StepFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class Stream(IntEnum):
    """The named random streams of a run: the second key of numpy's seed sequence `[seed, stream]`.

    A training loop's epoch e draws its batch order (and augmentation) from `[seed, stream + e]`, so loops that
    train on the same images see other orders; the attackers and the search draw their data splits and orders
    from their own stream. The values are part of every reported number (changing one changes the results),
    which is why they are named once, here.
    """

    TRAIN = 0  # the baseline, and PATROL's mask and fine-tuning epochs
    BLACKBOX = 1  # the black-box attacker's batch order
    QUERY_FREE = 2  # the query-free attacker's shadow-edge batch order
    PROXY = 7  # which auxiliary images PATROL's search proxy attacker trains on and scores
    DEFENSE = 100  # a baseline defense's fine-tuning epochs
    IMPORTANCE = 10_000  # the batches that score channel importance (Taylor) before pruning
    SURROGATE = 1_000_000  # the surrogate decoder's warm-up before PATROL


def utility_metric(task: str) -> str:
    return "mAP" if task == "reid" else "accuracy"


def batch_hard_triplet(feat: torch.Tensor, labels: torch.Tensor, margin: float) -> torch.Tensor:
    """Batch-hard triplet loss (Hermans et al. 2017) on L2 distances."""
    dist = torch.cdist(feat, feat)
    same = labels[:, None] == labels[None, :]
    hardest_pos = (dist * same.float()).max(dim=1).values
    hardest_neg = dist.masked_fill(same, float("inf")).min(dim=1).values
    valid = torch.isfinite(hardest_neg)
    if not valid.any():
        return feat.sum() * 0.0
    return F.relu(hardest_pos[valid] - hardest_neg[valid] + margin).mean()


def head_loss(head: nn.Module, h: torch.Tensor, y: torch.Tensor,
              margin: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """The task loss of every training loop, from the head's input `h`: cross-entropy, plus the batch-hard
    triplet loss on the embedding for a re-ID head. Returns (loss, logits, embedding or None)."""
    if isinstance(head, ReIDHead):
        feat, logits = head.train_outputs(h)
        return F.cross_entropy(logits, y) + batch_hard_triplet(feat, y, margin), logits, feat
    logits = head(h)
    return F.cross_entropy(logits, y), logits, None


def task_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, margin: float) -> torch.Tensor:
    """`head_loss` of a whole model on images x (a classifier through its wrapper, which syncs DDP gradients)."""
    inner = unwrap(model)
    if isinstance(inner, BlockNet) and isinstance(inner.head, ReIDHead):
        return head_loss(inner.head, inner.features(x), y, margin)[0]
    return F.cross_entropy(model(x), y)


def pk_batches(split: ImageSplit, p: int, k: int, seed: int, epoch: int,
               ctx: DistContext = DistContext()) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """P identities x K images per batch, so every anchor has positives (re-ID).

    Like torchreid's RandomIdentitySampler, an epoch deals out each identity's
    shuffled images in chunks of K (topped up by resampling when it has fewer),
    so it covers about every training image once.
    """
    rng = np.random.default_rng([seed, epoch])
    chunks: dict[int, list[np.ndarray]] = {}
    for lab in np.unique(split.labels):
        own = rng.permutation(np.flatnonzero(split.labels == lab))
        if len(own) < k:
            own = np.concatenate([own, rng.choice(own, size=k - len(own))])
        chunks[int(lab)] = [own[i:i + k] for i in range(0, len(own) - k + 1, k)]
    p = min(p, len(chunks))
    batches: list[np.ndarray] = []
    while len(active := [lab for lab, left in chunks.items() if left]) >= p:
        batches.append(np.concatenate([chunks[int(lab)].pop() for lab in rng.choice(active, size=p, replace=False)]))
    if len(batches) >= ctx.world_size:  # every rank takes the same number of steps
        batches = batches[: len(batches) - len(batches) % ctx.world_size]
    for bi, idx in enumerate(batches):
        if bi % ctx.world_size == ctx.rank:
            yield split.tensors(idx)


def train_batches(split: ImageSplit, cfg: TrainConfig, reid: bool, seed: int, epoch: int,
                  ctx: DistContext) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Shuffled training batches (P x K for re-ID), augmented as `cfg.augment` says, seeded by (seed, epoch)."""
    if reid:
        k = 4
        batches = pk_batches(split, max(cfg.batch_size // k, 2), k, seed, epoch, ctx)
    else:
        batches = split.batches(cfg.batch_size, shuffle=True, seed=seed, epoch=epoch,
                                rank=ctx.rank, world_size=ctx.world_size, drop_last=len(split) > cfg.batch_size)
    if cfg.augment == "none":
        return iter(batches)
    return augmented(batches, cfg.augment, seed, epoch, ctx.rank)


AUGMENT_PAD = 4  # pixels of zero padding (the normalized mean) around each image before the random crop


def augmented(batches: Any, mode: str, seed: int, epoch: int, rank: int = 0) -> Iterator[tuple[torch.Tensor,
                                                                                              torch.Tensor]]:
    """Random crop (after AUGMENT_PAD pixels of zero padding) and horizontal flip per image; `auto` does it for
    RGB images only (a flipped digit is another digit), `crop_flip` always. The draws are seeded by
    (seed, epoch, rank), so a resumed run sees the same images."""
    g = torch.Generator().manual_seed((seed * 1_000_003 + epoch) * 64 + rank)
    for x, y in batches:
        if mode == "auto" and x.shape[1] != 3:
            yield x, y
            continue
        n, _, h, w = x.shape
        flip = torch.rand(n, generator=g) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        padded = F.pad(x, (AUGMENT_PAD,) * 4)
        dy, dx = (torch.randint(0, 2 * AUGMENT_PAD + 1, (n,), generator=g) for _ in range(2))
        yield torch.stack([padded[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w] for i in range(n)]), y


def check_finite(loss: torch.Tensor, where: str) -> None:
    if not torch.isfinite(loss):
        raise TrainingError(f"{where}: the loss became {loss.item()} (NaN/Inf); training stopped.",
                            "lower the learning rate or the loss weights; the last good checkpoint is kept")


def check_finite_parameters(model: nn.Module, where: str) -> None:
    """Refuse a model whose parameters or float buffers hold NaN/Inf (a diverged step a finite loss did not show)."""
    bad = [name for name, t in [*model.named_parameters(), *model.named_buffers()]
           if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if bad:
        raise TrainingError(f"{where}: training diverged: {len(bad)} parameter tensor(s) hold NaN/Inf (e.g. "
                            f"{', '.join(bad[:3])}); the model is not saved.",
                            "lower the learning rate or the loss weights and run the command again")


def make_optimizer(params: Any, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=weight_decay, nesterov=True)


def cosine(optimizer: torch.optim.Optimizer, total_steps: int) -> torch.optim.lr_scheduler.LRScheduler:
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total_steps) / max(total_steps, 1))))


def fit(model: BlockNet, bundle: DataBundle, cfg: TrainConfig, seed: int, epochs: int | None = None,
        lr: float | None = None, ctx: DistContext = DistContext(), desc: str = "training",
        checkpoint: Checkpoint | None = None,
        loss_fn: StepFn | None = None,
        stream: Stream = Stream.TRAIN) -> list[float]:
    """Train `model` in place with the task loss (or `loss_fn(x, y)`); returns the mean loss per epoch.

    With `checkpoint`, the state after every epoch is saved there and an interrupted run with the same
    checkpoint key resumes after its last finished epoch (the result equals an uninterrupted run).
    A NaN/Inf loss stops training with TrainingError and leaves the last good checkpoint in place; so do NaN/Inf
    parameters after the last step (nothing is returned to be saved).
    `stream` names the seeded batch order (see Stream), so a second training of the same model sees other orders.
    """
    reid = isinstance(model.head, ReIDHead)
    epochs = epochs or cfg.epochs
    device = torch.device(cfg.device)
    model.to(device).train()
    net = wrap(model, ctx)
    opt = make_optimizer(model.parameters(), lr or cfg.lr, cfg.weight_decay)
    steps_per_epoch = max(1, sum(1 for _ in train_batches(bundle.train, cfg, reid, seed, 0, ctx)))
    sched = cosine(opt, epochs * steps_per_epoch)

    def forward(x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"total": loss_fn(x, y) if loss_fn is not None else task_loss(net, x, y, cfg.triplet_margin)}

    def update(losses: dict[str, torch.Tensor], _: torch.Tensor) -> None:
        opt.zero_grad(set_to_none=True)
        losses["total"].backward()
        opt.step()
        sched.step()

    history = train_epochs(model, {"model": model, "optimizer": opt, "scheduler": sched}, epochs,
                           lambda epoch: train_batches(bundle.train, cfg, reid, seed, stream + epoch, ctx),
                           forward, update, device=device, desc=desc, ctx=ctx, checkpoint=checkpoint)
    sync_buffers(net, ctx)
    check_finite_parameters(model, desc)  # the averaged buffers too
    model.eval()
    return [e["total"] for e in history]


def train_epochs(model: nn.Module, parts: dict[str, Stateful], epochs: int,
                 batches: Callable[[int], Iterable[tuple[torch.Tensor, torch.Tensor]]],
                 forward: Callable[[torch.Tensor, torch.Tensor], dict[str, torch.Tensor]],
                 update: Callable[[dict[str, torch.Tensor], torch.Tensor], None], *, device: torch.device,
                 desc: str, ctx: DistContext, checkpoint: Checkpoint | None,
                 record: tuple[str, ...] = ("total",)) -> list[dict[str, float]]:
    """The one training loop (baseline, defenses, PATROL's phases, QAT): per epoch, `forward(x, y)` on each of
    `batches(epoch)` gives the losses (a NaN/Inf `total` stops with TrainingError), `update(losses, x)` steps the
    optimizers; returns per epoch the mean of each `record` key.

    With `checkpoint`, `parts` (model, optimizers, schedulers, ...), the RNGs and the history are saved after
    every epoch, and a re-run resumes after the last finished one (the result equals an uninterrupted run).
    NaN/Inf parameters stop training before a checkpoint could keep them.
    """
    start, done = checkpoint.resume(parts, desc) if checkpoint is not None else (0, [])
    # a checkpoint of `fit` written before the loops were one kept the bare mean loss per epoch
    history: list[dict[str, float]] = [e if isinstance(e, dict) else {"total": float(e)} for e in done]
    for epoch in progress(range(start, epochs), desc=desc, unit="epoch", initial=start, total=epochs):
        sums = dict.fromkeys(record, 0.0)
        count = 0
        for x, y in batches(epoch):
            x, y = x.to(device), y.to(device)
            losses = forward(x, y)
            check_finite(losses["total"], f"{desc}, epoch {epoch + 1}")
            update(losses, x)
            for k in record:
                sums[k] += float(losses[k].detach())
            count += 1
        history.append({k: average_scalar(v / max(count, 1), ctx) for k, v in sums.items()})
        check_finite_parameters(model, f"{desc}, epoch {epoch + 1}")
        if checkpoint is not None and ctx.is_main:
            checkpoint.save_epoch(epoch, history, parts)
    return history


@torch.no_grad()
def predict(model: nn.Module, split: ImageSplit, batch_size: int = 256,
            device: str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Logits (or re-ID embeddings) and labels for a whole split."""
    model.eval().to(device)
    outs, labels = [], []
    inner = unwrap(model)
    embed = isinstance(inner, BlockNet) and isinstance(inner.head, ReIDHead)
    for x, y in split.batches(batch_size):
        x = x.to(device)
        out = inner.head.embed(inner.features(x)) if embed else model(x)  # type: ignore[union-attr, operator]
        outs.append(out.float().cpu())
        labels.append(y)
    return torch.cat(outs), torch.cat(labels)


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return float((logits.argmax(1) == labels).float().mean().item() * 100.0)


def reid_metrics(q_feat: np.ndarray, q_ids: np.ndarray, q_cams: np.ndarray, g_feat: np.ndarray,
                 g_ids: np.ndarray, g_cams: np.ndarray) -> dict[str, float]:
    """mAP and CMC rank-1 (%) with the standard protocol: same id and same camera gallery entries are ignored."""
    dist = ((q_feat[:, None, :] - g_feat[None, :, :]) ** 2).sum(-1)
    aps, top1 = [], []
    for i in range(len(q_feat)):
        order = np.argsort(dist[i], kind="stable")
        keep = ~((g_ids[order] == q_ids[i]) & (g_cams[order] == q_cams[i]))
        match = (g_ids[order][keep] == q_ids[i]).astype(np.float64)
        if match.sum() == 0:
            continue
        hits = np.cumsum(match)
        precision = hits / np.arange(1, len(match) + 1)
        aps.append(float((precision * match).sum() / match.sum()))
        top1.append(float(match[0]))
    if not aps:
        return {"mAP": float("nan"), "rank1": float("nan")}
    return {"mAP": 100.0 * float(np.mean(aps)), "rank1": 100.0 * float(np.mean(top1))}


def evaluate(model: nn.Module, bundle: DataBundle, task: str, device: str = "cpu",
             split: ImageSplit | None = None) -> dict[str, float]:
    """Utility of `model` on `split` (default: the test split): {'accuracy'}, or {'mAP', 'rank1'} for re-ID.

    Re-ID on the test split uses the fixed query / gallery protocol when the dataset has one; any other split
    (validation, for every selection step) is alternated into its own query and gallery, so selecting never
    reads a test image.
    """
    if task != "reid":
        logits, labels = predict(model, split or bundle.test, device=device)
        return {"accuracy": accuracy(logits, labels)}
    query, gallery = (bundle.query, bundle.gallery) if split is None else (None, None)
    if query is None or gallery is None:  # no fixed protocol: alternate the split's images into query / gallery
        test = split or bundle.test
        idx = np.arange(len(test))
        query, gallery = test.subset(idx[::2]), test.subset(idx[1::2])
    qf, qy = predict(model, query, device=device)
    gf, gy = predict(model, gallery, device=device)
    qc = query.cams if query.cams is not None else np.zeros(len(query), np.int64)
    gc = gallery.cams if gallery.cams is not None else np.ones(len(gallery), np.int64)
    return reid_metrics(qf.numpy(), qy.numpy(), qc, gf.numpy(), gy.numpy(), gc)
