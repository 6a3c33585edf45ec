"""BlockNet: `head(blocks[-1](...blocks[0](x)))` with named top-level blocks."""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn


def pooled(pool: nn.Module, z: torch.Tensor) -> torch.Tensor:
    """Globally pooled (N, C) features; a model whose last block already pools passes them through."""
    return z if z.dim() == 2 else torch.flatten(pool(z), 1)


class Head(nn.Module):
    """Global average pool + flatten + classifier (the torchvision classification head)."""

    def __init__(self, in_features: int, num_classes: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.fc = nn.Linear(in_features, num_classes)

    def features(self, z: torch.Tensor) -> torch.Tensor:
        return pooled(self.pool, z)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(self.features(z)))


class ReIDHead(nn.Module):
    """Re-ID head: pool -> embedding -> BN-neck -> ID classifier (Luo et al.'s bag of tricks).

    `forward` returns ID logits (so the model composes like a classifier);
    `embed` returns the BN-neck feature used for retrieval; `train_outputs`
    returns (pre-BN embedding for the triplet loss, logits for cross-entropy).
    """

    def __init__(self, in_features: int, num_classes: int, embedding_dim: int) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.embedding = nn.Linear(in_features, embedding_dim)
        self.bnneck = nn.BatchNorm1d(embedding_dim)
        self.bnneck.bias.requires_grad_(False)
        self.fc = nn.Linear(embedding_dim, num_classes, bias=False)

    def train_outputs(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feat = self.embedding(pooled(self.pool, z))
        return feat, self.fc(self.bnneck(feat))

    def embed(self, z: torch.Tensor) -> torch.Tensor:
        return self.bnneck(self.embedding(pooled(self.pool, z)))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.train_outputs(z)[1]


class BlockNet(nn.Module):
    """A network as named blocks followed by a head; block boundaries are the split points."""

    def __init__(self, blocks: OrderedDict[str, nn.Module], head: nn.Module) -> None:
        super().__init__()
        self.blocks = nn.ModuleDict(blocks)
        self.head = head

    @property
    def block_names(self) -> list[str]:
        return list(self.blocks.keys())

    def features(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks.values():
            x = block(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))
