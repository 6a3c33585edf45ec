"""Distributed data parallel under `torchrun`: gloo on CPU, NCCL on GPU, a no-op otherwise."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str = "cpu") -> DistContext:
    """Join the process group that `torchrun` describes in the environment (WORLD_SIZE, RANK, ...)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext()
    if not dist.is_initialized():
        backend = "nccl" if device.startswith("cuda") else "gloo"
        dist.init_process_group(backend=backend)
    return DistContext(rank=dist.get_rank(), world_size=dist.get_world_size())


def wrap(module: nn.Module, ctx: DistContext) -> nn.Module:
    """DistributedDataParallel around `module` when running distributed, else `module` itself."""
    if not ctx.enabled:
        return module
    params = [p for p in module.parameters() if p.requires_grad]
    if not params:
        return module
    return nn.parallel.DistributedDataParallel(module)


def unwrap(module: nn.Module) -> nn.Module:
    return module.module if isinstance(module, nn.parallel.DistributedDataParallel) else module


def sync_gradients(params: Iterable[nn.Parameter], ctx: DistContext) -> None:
    """Average gradients over ranks for updates made outside a DDP forward (extra attacker steps)."""
    if not ctx.enabled:
        return
    for p in params:
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad.div_(ctx.world_size)


def sync_buffers(module: nn.Module, ctx: DistContext) -> None:
    """Average float buffers (batch-norm running stats) over ranks at the end of training, so every rank
    ends with identical models; integer buffers are taken from rank 0."""
    if not ctx.enabled:
        return
    for buf in module.buffers():
        if buf.is_floating_point():
            dist.all_reduce(buf)
            buf.div_(ctx.world_size)
        else:
            dist.broadcast(buf, src=0)


def average_scalar(value: float, ctx: DistContext) -> float:
    """Mean of a float over ranks (for logging the same loss on every rank)."""
    if not ctx.enabled:
        return value
    t = torch.tensor([value], dtype=torch.float64)
    dist.all_reduce(t)
    return float(t.item()) / ctx.world_size
