"""A briefly trained small ResNet on real digits, shared by the PATROL tests."""

from __future__ import annotations

import copy

import pytest
import torch

from patrol_deploy.config import Config
from patrol_deploy.data import DataBundle
from patrol_deploy.models import BlockNet, create_model
from patrol_deploy.training import fit


def small_config(**patrol: object) -> Config:
    """Digits at 16x16, width-8 small ResNet, budget that fits the unpruned model only up to layer1. Channel counts
    are free (round_to 1, no deploy floor): a width-8 model has nothing to prune at deploy.target's multiples of 8
    (tests/patrol/test_prune.py tests those on a width-16 model)."""
    patrol = {"mask_epochs": 1, "finetune_epochs": 1, **patrol}
    patrol["prune"] = {"round_to": 1, "deploy_min_channels": 1, **dict(patrol.get("prune") or {})}  # type: ignore[call-overload]
    cfg = Config.model_validate({
        "data": {"source": "digits", "image_size": 16},
        "model": {"width": 8, "stages": 3},
        "train": {"epochs": 1, "batch_size": 64, "lr": 0.05},
        "budget": {"edge_macs": 1.0e6},
        "patrol": patrol,
    })
    return cfg


@pytest.fixture(scope="session")
def trained(digits_bundle: DataBundle) -> tuple[Config, BlockNet]:
    cfg = small_config()
    torch.manual_seed(0)
    model = create_model(cfg.model, digits_bundle.num_classes, digits_bundle.channels)
    fit(model, digits_bundle, cfg.train, seed=0, epochs=2)
    return cfg, model


@pytest.fixture
def model_copy(trained: tuple[Config, BlockNet]) -> BlockNet:
    return copy.deepcopy(trained[1]).train()
