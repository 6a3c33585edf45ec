"""Split points: cut a BlockNet into an edge part and a cloud part with f = f_c(f_e(x)) exactly."""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from patrol_deploy.errors import ModelError
from patrol_deploy.models.blocknet import BlockNet


class EdgeNet(nn.Sequential):
    """The edge partition: the blocks up to and including the split block."""


class CloudNet(nn.Module):
    """The cloud partition: the remaining blocks and the head."""

    def __init__(self, blocks: OrderedDict[str, nn.Module], head: nn.Module) -> None:
        super().__init__()
        self.blocks = nn.ModuleDict(blocks)
        self.head = head

    def features(self, z: torch.Tensor) -> torch.Tensor:
        for block in self.blocks.values():
            z = block(z)
        return z

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(z))


def split_points(model: BlockNet) -> list[str]:
    """Candidate split points: after each top-level block (after the last, the cloud runs only the head)."""
    return model.block_names


def split_index(model: BlockNet, name: str) -> int:
    points = split_points(model)
    if name not in points:
        raise ModelError(f"unknown split point '{name}'.", f"use one of: {', '.join(points)}")
    return points.index(name)


def cut(model: BlockNet, name: str) -> tuple[EdgeNet, CloudNet]:
    """Edge and cloud modules sharing `model`'s parameters (no copies)."""
    k = split_index(model, name)
    items = list(model.blocks.items())
    edge = EdgeNet(OrderedDict(items[: k + 1]))
    cloud = CloudNet(OrderedDict(items[k + 1:]), model.head)
    return edge, cloud
