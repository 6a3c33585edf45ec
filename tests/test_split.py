"""Cutting a model at any split point gives f = cloud(edge(x)) exactly, with shared parameters."""

from __future__ import annotations

import pytest
import torch

from patrol_deploy.config import ModelConfig
from patrol_deploy.errors import ModelError
from patrol_deploy.models import MODELS, create_model
from patrol_deploy.split import CloudNet, EdgeNet, cut, split_points


@pytest.mark.parametrize("task", ["classification", "reid"])
@pytest.mark.parametrize("name", MODELS.names())
def test_every_split_composes_exactly(name: str, task: str) -> None:
    torch.manual_seed(0)
    model = create_model(ModelConfig(name=name, task=task, width=8, embedding_dim=16), 6, 3).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        full = model(x)
        points = split_points(model)
        assert points == model.block_names and len(points) >= 4
        for point in points:
            edge, cloud = cut(model, point)
            assert isinstance(edge, EdgeNet) and isinstance(cloud, CloudNet)
            assert torch.equal(cloud(edge(x)), full), f"{name} ({task}) split at {point}"
            assert len(edge) + len(cloud.blocks) == len(points)


def test_edge_and_cloud_share_the_model_parameters() -> None:
    model = create_model(ModelConfig(width=8, stages=3), 10, 1)
    edge, cloud = cut(model, "layer2")
    ours = {p.data_ptr() for p in model.parameters()}
    parts = [p.data_ptr() for p in edge.parameters()] + [p.data_ptr() for p in cloud.parameters()]
    assert sorted(parts) == sorted(ours)  # every parameter in exactly one part, none copied
    assert [n for n, _ in edge.named_children()] == ["stem", "layer1", "layer2"]
    assert list(cloud.blocks.keys()) == ["layer3", "pool"]


def test_split_after_the_last_block_leaves_only_the_head() -> None:
    model = create_model(ModelConfig(width=8, stages=3), 10, 1)
    edge, cloud = cut(model, "pool")
    assert len(cloud.blocks) == 0 and cloud.head is model.head
    x = torch.randn(2, 1, 32, 32)
    assert edge(x).shape == (2, 32)  # the pooled embedding is uploaded
    assert torch.equal(cloud(edge(x)), model(x))


def test_unknown_split_lists_the_valid_ones() -> None:
    model = create_model(ModelConfig(width=8, stages=3), 10, 1)
    with pytest.raises(ModelError, match="unknown split point 'layer4'") as info:
        cut(model, "layer4")
    assert info.value.fix == "use one of: stem, layer1, layer2, layer3, pool"
