"""Soft masks: applied by hooks, pruned with their channels, folded away exactly."""

from __future__ import annotations

import pytest
import torch

from patrol_deploy.errors import ModelError
from patrol_deploy.models import BlockNet
from patrol_deploy.patrol.masks import SoftMasks
from patrol_deploy.split import cut


def test_masks_scale_outputs_and_fold_exactly(model_copy: BlockNet) -> None:
    masks = SoftMasks(model_copy, cut(model_copy, "layer2")[0])
    torch.manual_seed(1)
    with torch.no_grad():
        for p in masks.parameters():
            p.copy_(torch.rand_like(p) * 2 - 0.5)  # includes negative and near-zero entries
    x = torch.randn(4, 1, 16, 16)
    model_copy.eval()
    masked = model_copy(x)
    masks.fold()
    folded = model_copy(x)
    torch.testing.assert_close(folded, masked, rtol=1e-5, atol=1e-5)
    assert not hasattr(model_copy, "patrol_masks")
    assert not any("patrol_masks" in k for k in model_copy.state_dict())
    assert all(not bn._forward_hooks for bn in masks.bns.values())


def test_masks_change_the_output(model_copy: BlockNet) -> None:
    x = torch.randn(2, 1, 16, 16)
    model_copy.eval()
    before = model_copy(x)
    masks = SoftMasks(model_copy, cut(model_copy, "layer1")[0])
    with torch.no_grad():
        next(iter(masks.params.values())).zero_()
    assert not torch.allclose(model_copy(x), before)
    assert masks.sparsity().item() > 0


def test_masks_only_on_the_edge(model_copy: BlockNet) -> None:
    masks = SoftMasks(model_copy, cut(model_copy, "layer1")[0])
    assert masks.bns and all(k.startswith(("blocks__stem", "blocks__layer1")) for k in masks.bns)


def test_masks_twice_refused(model_copy: BlockNet) -> None:
    SoftMasks(model_copy, cut(model_copy, "layer1")[0])
    with pytest.raises(ModelError, match="already carries"):
        SoftMasks(model_copy, cut(model_copy, "layer1")[0])
