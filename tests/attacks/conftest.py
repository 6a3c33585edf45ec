"""A briefly trained small ResNet on 1,000 real MNIST digits at 32x32, shared by the attack and defense tests."""

from __future__ import annotations

import functools

import pytest
import torch

from patrol_deploy.attacks import AttackContext, TorchEdgeRunner
from patrol_deploy.config import Config
from patrol_deploy.data import DataBundle, load_data
from patrol_deploy.models import BlockNet, create_model
from patrol_deploy.split import cut
from patrol_deploy.training import fit


def attack_config(defenses: dict[str, object] | None = None, **attacks: object) -> Config:
    """MNIST 32x32 (1,000 images: 500 train, 200 test, 200 aux), width-8 small ResNet, short attacks."""
    return Config.model_validate({
        "data": {"source": "mnist", "image_size": 32, "limit": 1000},
        "model": {"width": 8, "stages": 3},
        "train": {"epochs": 5, "batch_size": 32, "lr": 0.05},
        "patrol": {"adversarial": {"surrogate_width": 32}},
        "attacks": {"eval_images": 16, "whitebox": {"iterations": 100},
                    "blackbox": {"epochs": 40, "patience": 5, "widths": [32], "large_budget": False},
                    "query_free": {"shadow_epochs": 4}, **attacks},
        "defenses": {"epochs": 1, **(defenses or {})},
    })


@functools.cache
def trained_mnist() -> tuple[DataBundle, BlockNet]:
    """The bundle and a model after five epochs of plain training (92.5% test accuracy, about 15 s).

    Cached per process, so the attack and defense tests share one training run.
    """
    cfg = attack_config()
    bundle = load_data(cfg.data, seed=0)
    torch.manual_seed(0)
    model = create_model(cfg.model, bundle.num_classes, bundle.channels)
    fit(model, bundle, cfg.train, seed=0)
    return bundle, model.eval()


@pytest.fixture(scope="session")
def mnist_bundle() -> DataBundle:
    return trained_mnist()[0]


@pytest.fixture(scope="session")
def mnist_model() -> BlockNet:
    """Shared by many tests: tests that train it must work on a copy."""
    return trained_mnist()[1]


def context(model: BlockNet, bundle: DataBundle, split: str, cfg: Config | None = None) -> AttackContext:
    """An attack context against the torch edge of `model` cut at `split`."""
    edge, cloud = cut(model, split)
    cfg = cfg or attack_config()
    return AttackContext.from_test_split(TorchEdgeRunner(edge), cloud, bundle, cfg.attacks, seed=0)
