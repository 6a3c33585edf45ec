"""PATROL's `auto` split keeps collaborative inference: intermediate splits only, deepest first, unless opted in."""

from __future__ import annotations

import pytest

from patrol_deploy.budget import deepest_fitting, split_costs
from patrol_deploy.config import Config
from patrol_deploy.errors import BudgetError, ConfigError
from patrol_deploy.models import create_model
from patrol_deploy.patrol.stage import candidate_splits


def _candidates(**prune: object) -> list[str]:
    cfg = Config.model_validate({"model": {"width": 8, "stages": 4}, "budget": {"edge_macs": 4e6},
                                 "patrol": {"prune": {"max_reduction": 0.9, **prune}}})
    costs = split_costs(create_model(cfg.model, 10, 1), (1, 32, 32), cfg.budget)
    return [c.split for c in candidate_splits(costs, deepest_fitting(costs), cfg)]


def test_auto_tries_intermediate_splits_deepest_first() -> None:
    assert _candidates() == ["layer3", "layer2"]  # never layer4 or pool: the cloud would only pool and classify


def test_terminal_splits_need_the_opt_in() -> None:
    assert _candidates(allow_terminal_split=True) == ["pool", "layer4", "layer3", "layer2"]
    assert _candidates(split="pool", allow_terminal_split=True) == ["pool"]
    with pytest.raises(ConfigError, match="allow_terminal_split") as info:
        _candidates(split="pool")
    assert "terminal" in info.value.problem


def test_no_intermediate_split_deeper_is_a_clear_error() -> None:
    # layer2 fits unpruned, and with three stages the only deeper splits are terminal
    cfg = Config.model_validate({"model": {"width": 8, "stages": 3}, "budget": {"edge_macs": 8e6}})
    costs = split_costs(create_model(cfg.model, 10, 1), (1, 32, 32), cfg.budget)
    with pytest.raises(BudgetError, match="no intermediate split") as info:
        candidate_splits(costs, deepest_fitting(costs), cfg)
    assert "allow_terminal_split" in (info.value.fix or "")
