"""No selection step reads the test split: poisoning every test image changes no choice (classification, re-ID).

Selection steps: PATROL's target utility for the defenses (validation), the defense strength search
(validation), the split (budget only), the black-box attacker's early stopping (a slice of its own data), and
re-ID validation (query / gallery built from the validation split, never the fixed test protocol).
"""

from __future__ import annotations

import copy
from dataclasses import replace

import numpy as np
import pytest
import torch

from patrol_deploy.budget import deepest_fitting, split_costs
from patrol_deploy.config import BudgetConfig, ModelConfig
from patrol_deploy.data import DataBundle
from patrol_deploy.defenses import DEFENSES, DefenseJob, match_utility
from patrol_deploy.models import BlockNet, create_model
from patrol_deploy.patrol.stage import candidate_splits
from patrol_deploy.training import evaluate
from tests.attacks.conftest import attack_config


def _poisoned(bundle: DataBundle) -> DataBundle:
    """The same bundle with every test (and query / gallery) image replaced by noise and its labels shuffled."""
    rng = np.random.default_rng(1)

    def poison(split):  # type: ignore[no-untyped-def]
        if split is None:
            return None
        return replace(split, images=rng.integers(0, 256, split.images.shape, dtype=np.uint8),
                       labels=rng.permutation(split.labels))

    return replace(bundle, test=poison(bundle.test), query=poison(bundle.query), gallery=poison(bundle.gallery))


def test_defense_matching_and_split_choice_ignore_the_test_split(mnist_model: BlockNet,
                                                                 mnist_bundle: DataBundle) -> None:
    cfg = attack_config({"epochs": 1, "utility_tolerance": 0.5})
    cfg.budget = BudgetConfig(edge_macs=4e6)  # layer1 fits unpruned, layer2 after pruning
    noise = DEFENSES.get("noise")
    picks = []
    for bundle in (mnist_bundle, _poisoned(mnist_bundle)):
        target = evaluate(mnist_model, bundle, "classification", split=bundle.val)["accuracy"] - 3.0
        job = DefenseJob(copy.deepcopy(mnist_model), "layer1", bundle, cfg)
        picked = match_utility(noise, job, target=target, grid=[2.0, 0.5])
        costs = split_costs(mnist_model, (1, 32, 32), cfg.budget)  # from the budget and shapes alone
        splits = [c.split for c in candidate_splits(costs, deepest_fitting(costs), cfg)]
        picks.append((target, [(t["strength"], t["val_utility"]) for t in picked.tried], picked.strength, splits))
    assert picks[0] == picks[1] and picks[0][3] == ["layer2"]
    # ...while the test utility the report shows does change: the poison reached what is only reported
    assert evaluate(mnist_model, _poisoned(mnist_bundle), "classification")["accuracy"] < \
        evaluate(mnist_model, mnist_bundle, "classification")["accuracy"] - 30.0


def test_reid_validation_never_reads_the_fixed_query_and_gallery(digits_bundle: DataBundle) -> None:
    torch.manual_seed(0)
    model = create_model(ModelConfig(width=8, task="reid", embedding_dim=32), digits_bundle.num_classes, 1).eval()
    half = len(digits_bundle.test) // 2
    protocol = replace(digits_bundle, query=digits_bundle.test.subset(np.arange(half)),
                       gallery=digits_bundle.test.subset(np.arange(half, len(digits_bundle.test))))
    val = evaluate(model, protocol, "reid", split=protocol.val)
    assert val == evaluate(model, _poisoned(protocol), "reid", split=protocol.val)
    assert val == pytest.approx(evaluate(model, replace(protocol, query=None, gallery=None), "reid",
                                         split=protocol.val))
    # the test protocol itself is still the fixed query / gallery
    assert evaluate(model, protocol, "reid") != evaluate(model, _poisoned(protocol), "reid")
