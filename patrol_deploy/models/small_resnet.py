"""A small CIFAR-style ResNet (He et al. 2016, ResNet-20 layout) that trains on CPU in minutes."""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


def small_resnet_blocks(in_channels: int, width: int, depth: int = 3,
                        stages: int = 3) -> tuple[OrderedDict[str, nn.Module], int]:
    """Stem + `stages` stages of `depth` basic blocks (widths w, 2w, 4w, 8w; each after the first halves the
    side) + global average pooling; returns blocks and output width.

    The pooling block makes the pooled embedding a split point of its own: the deepest one, where the edge
    uploads one vector per image (as re-ID deployments do)."""
    blocks: OrderedDict[str, nn.Module] = OrderedDict()
    blocks["stem"] = nn.Sequential(
        nn.Conv2d(in_channels, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True)
    )
    cin = width
    for i, (mult, stride) in enumerate(((1, 1), (2, 2), (4, 2), (8, 2))[:stages], start=1):
        cout = width * mult
        layers = [BasicBlock(cin, cout, stride)] + [BasicBlock(cout, cout, 1) for _ in range(depth - 1)]
        blocks[f"layer{i}"] = nn.Sequential(*layers)
        cin = cout
    blocks["pool"] = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
    return blocks, cin
