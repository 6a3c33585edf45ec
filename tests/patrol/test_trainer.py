"""PATROL's training loop: how often the surrogate learns per defender step."""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn.functional as F

from patrol_deploy.config import Config
from patrol_deploy.data import DataBundle
from patrol_deploy.distributed import DistContext
from patrol_deploy.models import BlockNet
from patrol_deploy.patrol import trainer
from patrol_deploy.patrol.trainer import surrogate_decoder, surrogate_step, train_patrol
from patrol_deploy.split import cut
from patrol_deploy.training import Stream, train_batches
from tests.patrol.conftest import small_config


@pytest.mark.parametrize("steps", [1, 3])
def test_attacker_steps_is_surrogate_updates_per_defender_update(
        steps: int, model_copy: BlockNet, digits_bundle: DataBundle, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg: Config = small_config(adversarial={"attacker_steps": steps})
    calls: list[torch.Tensor] = []
    real = trainer.surrogate_step

    def counting(decoder: Any, opt: Any, z: torch.Tensor, x: torch.Tensor, ctx: Any = None) -> None:
        assert not z.requires_grad  # the extra updates train the surrogate only, never the edge
        calls.append(z)
        real(decoder, opt, z, x)

    monkeypatch.setattr(trainer, "surrogate_step", counting)
    x = digits_bundle.train.tensors(slice(0, 1))[0]
    decoder = surrogate_decoder(model_copy, "layer2", x, cfg.patrol.adversarial.surrogate_width)
    train_patrol(model_copy, "layer2", digits_bundle, cfg, 1, None, decoder)
    batches = sum(1 for _ in train_batches(digits_bundle.train, cfg.train, False, cfg.seed, Stream.TRAIN,
                                           DistContext()))
    assert len(calls) == (steps - 1) * batches  # the first update of each step rides on the defender's backward


def test_a_surrogate_step_lowers_its_reconstruction_error(model_copy: BlockNet, digits_bundle: DataBundle) -> None:
    x = digits_bundle.train.tensors(slice(0, 64))[0]
    decoder = surrogate_decoder(model_copy, "layer2", x, 16).train()
    with torch.no_grad():
        z = cut(model_copy, "layer2")[0](x)
    opt = torch.optim.Adam(decoder.parameters(), lr=1e-2)
    before = F.mse_loss(decoder(z), x).item()
    for _ in range(5):
        surrogate_step(decoder, opt, z, x)
    assert F.mse_loss(decoder(z), x).item() < before
