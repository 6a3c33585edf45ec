"""Edge MACs / params / upload bytes per split, and the deepest split that fits a budget."""

from __future__ import annotations

import pytest
from torch import nn

from patrol_deploy.budget import EdgeCost, count_macs_params, deepest_fitting, split_costs
from patrol_deploy.config import DEFAULT_CONFIG, BudgetConfig, ModelConfig, load_config
from patrol_deploy.errors import BudgetError
from patrol_deploy.models import create_model

INPUT = (1, 32, 32)


def test_conv_macs_by_hand() -> None:
    conv = nn.Conv2d(3, 8, kernel_size=3, padding=1, bias=False)
    macs, params, shape = count_macs_params(conv, (3, 10, 10))
    assert macs == 8 * 3 * 3 * 3 * 10 * 10  # out channels x in channels x k x k x output pixels
    assert params == 8 * 3 * 3 * 3
    assert shape == (8, 10, 10)
    strided = nn.Conv2d(4, 6, kernel_size=1, stride=2, bias=True)
    assert count_macs_params(strided, (4, 8, 8))[:2] == (6 * 4 * 4 * 4 + 6 * 4 * 4, 6 * 4 + 6)


@pytest.fixture(scope="module")
def costs() -> list[EdgeCost]:
    model = create_model(ModelConfig(width=16, stages=3), 10, 1)
    return split_costs(model, INPUT, BudgetConfig(edge_macs=1e12))


def test_split_costs_grow_with_depth(costs: list[EdgeCost]) -> None:
    assert [c.split for c in costs] == ["stem", "layer1", "layer2", "layer3", "pool"]
    assert [c.feature_shape for c in costs] == [(16, 32, 32), (16, 32, 32), (32, 16, 16), (64, 8, 8), (64,)]
    assert [c.upload_bytes for c in costs] == [4 * 16 * 32 * 32, 4 * 16 * 32 * 32, 4 * 32 * 16 * 16, 4 * 64 * 8 * 8,
                                               4 * 64]
    macs = [c.edge_macs for c in costs]
    assert macs == sorted(macs) and len(set(macs)) == 5
    assert costs[0].edge_macs >= 16 * 1 * 9 * 32 * 32  # at least the stem convolution
    assert costs[0].edge_params == 16 * 9 + 2 * 16  # conv weights + batch-norm affine
    assert all(c.fits for c in costs)


def costs_for(budget: BudgetConfig) -> list[EdgeCost]:
    model = create_model(ModelConfig(width=16, stages=3), 10, 1)
    return split_costs(model, INPUT, budget)


def test_deepest_fitting_split(costs: list[EdgeCost]) -> None:
    layer1, layer2 = costs[1].edge_macs, costs[2].edge_macs
    assert deepest_fitting(costs_for(BudgetConfig(edge_macs=(layer1 + layer2) / 2))).split == "layer1"
    assert deepest_fitting(costs_for(BudgetConfig(edge_macs=layer2))).split == "layer2"  # the limit is inclusive
    assert deepest_fitting(costs_for(BudgetConfig(edge_params=costs[3].edge_params))).split == "pool"  # no params
    assert deepest_fitting(costs_for(BudgetConfig(edge_macs=costs[3].edge_macs))).split == "layer3"
    both = BudgetConfig(edge_macs=1e12, edge_params=costs[1].edge_params)
    assert deepest_fitting(costs_for(both)).split == "layer1"


def test_upload_budget_and_dtype(costs: list[EdgeCost]) -> None:
    fp32 = costs_for(BudgetConfig(upload_bytes=20_000))
    assert [c.fits for c in fp32] == [False, False, False, True, True]
    assert deepest_fitting(fp32).split == "pool"
    int8 = costs_for(BudgetConfig(upload_bytes=20_000, upload_dtype="int8"))
    assert [c.upload_bytes for c in int8] == [c.upload_bytes // 4 for c in costs]
    assert all(c.fits for c in int8)


def test_nothing_fits_names_the_smallest_split(costs: list[EdgeCost]) -> None:
    tight = costs_for(BudgetConfig(edge_macs=1000))
    assert tight[0].violations == [f"edge MACs {costs[0].edge_macs:,} > budget 1,000"]
    with pytest.raises(BudgetError) as info:
        deepest_fitting(tight)
    message = str(info.value)
    assert "even the shallowest split 'stem'" in message and f"{costs[0].edge_macs:,}" in message
    assert "budget.edge_macs" in str(info.value.fix)
    assert info.value.exit_code == 2


def test_bundled_default_budget_fits_up_to_layer1() -> None:
    cfg = load_config(DEFAULT_CONFIG)
    model = create_model(cfg.model, 10, cfg.data.channels)
    shape = (cfg.data.channels, cfg.data.image_size, cfg.data.image_size)
    assert deepest_fitting(split_costs(model, shape, cfg.budget)).split == "layer1"


def test_terminal_splits_are_those_after_which_the_cloud_has_no_layer_on_spatial_maps(costs: list[EdgeCost]) -> None:
    # stem..layer2: the cloud still runs layer3 on 8x8 maps; after layer3 it only pools and classifies
    assert [c.terminal for c in costs] == [False, False, False, True, True]
    four = split_costs(create_model(ModelConfig(width=8, stages=4), 10, 1), INPUT, BudgetConfig(edge_macs=1e12))
    assert {c.split: c.terminal for c in four} == {"stem": False, "layer1": False, "layer2": False, "layer3": False,
                                                   "layer4": True, "pool": True}
    assert EdgeCost.from_dict(costs[3].as_dict()).terminal is True
