"""Structured pruning: channels physically removed, budgets met, split width handled, bad input refused."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from torch import nn

from patrol_deploy.config import BudgetConfig, ModelConfig
from patrol_deploy.errors import ModelError
from patrol_deploy.modelio import ModelMeta, load_model_dir, save_model_dir
from patrol_deploy.models import BlockNet, create_model
from patrol_deploy.patrol.masks import SoftMasks
from patrol_deploy.patrol.prune import EdgePruner
from patrol_deploy.patrol.trainer import surrogate_decoder
from patrol_deploy.split import cut

SHAPE = (1, 16, 16)


def _convs(module: nn.Module) -> dict[str, int]:
    return {n: m.out_channels for n, m in module.named_modules() if isinstance(m, nn.Conv2d)}


def test_prune_to_budget_removes_channels_and_keeps_split_width(model_copy: BlockNet) -> None:
    edge, cloud = cut(model_copy, "layer3")
    before = _convs(edge)
    cloud_before = _convs(cloud)
    masks = SoftMasks(model_copy, edge)
    pruner = EdgePruner(model_copy, "layer3", masks, SHAPE, keep_split_width=True)
    budget = BudgetConfig(edge_macs=1.0e6)
    result = pruner.prune_to_budget(budget, step_ratio=0.2, max_rounds=30)
    assert result.before.edge_macs > 2.5e6 and not result.before.fits
    assert result.after.fits and result.after.edge_macs <= 1.0e6
    assert result.after.edge_macs > 0.5e6, "pruning should land near the budget, not far below it"
    after = _convs(cut(model_copy, "layer3")[0])
    removed = sum(before[k] - after[k] for k in before)
    assert removed > 0 and removed == sum(result.removed.values()) + _coupled_extra(before, after, result.removed)
    assert result.after.feature_shape == result.before.feature_shape  # uploaded tensor keeps its channels
    assert _convs(cloud) == cloud_before
    x = torch.randn(3, *SHAPE)
    model_copy.eval()
    assert model_copy(x).shape == (3, 10)
    assert all(masks.params[k].shape[1] == bn.num_features for k, bn in masks.bns.items())  # masks pruned too


def _coupled_extra(before: dict[str, int], after: dict[str, int], roots: dict[str, int]) -> int:
    """Channels removed from non-root convs of coupled groups (e.g. residual partners)."""
    return sum(before[k] - after[k] for k in before if f"blocks.{k}" not in roots and k not in roots)


def test_prune_width_of_split_when_allowed(model_copy: BlockNet) -> None:
    edge = cut(model_copy, "layer2")[0]
    width = edge(torch.zeros(1, *SHAPE)).shape[1]
    pruner = EdgePruner(model_copy, "layer2", None, SHAPE, keep_split_width=False)
    result = pruner.prune_to_budget(BudgetConfig(edge_macs=0.8e6), step_ratio=0.2, max_rounds=30)
    assert result.after.fits
    assert result.after.feature_shape[0] < width  # the uploaded tensor lost channels ...
    model_copy.eval()
    assert model_copy(torch.randn(2, *SHAPE)).shape == (2, 10)  # ... and the cloud's consumers followed


def test_prune_width_of_split_prunes_the_surrogate_input_too(model_copy: BlockNet) -> None:
    example = torch.randn(4, *SHAPE)
    decoder = surrogate_decoder(model_copy, "layer2", example)
    masks = SoftMasks(model_copy, cut(model_copy, "layer2")[0])
    pruner = EdgePruner(model_copy, "layer2", masks, SHAPE, keep_split_width=False, decoder=decoder)
    result = pruner.prune_to_budget(BudgetConfig(edge_macs=0.8e6), step_ratio=0.2, max_rounds=30)
    width = result.after.feature_shape[0]
    assert result.after.fits and width < result.before.feature_shape[0]
    model_copy.eval()
    decoder.eval()
    z = cut(model_copy, "layer2")[0](example)
    assert z.shape[1] == width and decoder(z).shape == example.shape  # the surrogate reads the narrower tensor
    assert all(not name.startswith("model.") for name in result.removed)  # names as in the model, not the wrapper
    assert all(not str(h[0]).startswith("model.") for h in result.history)


def test_importance_follows_masks(model_copy: BlockNet) -> None:
    edge = cut(model_copy, "layer1")[0]
    masks = SoftMasks(model_copy, edge)
    key = "blocks__layer1__0__bn1"
    with torch.no_grad():
        masks.params[key][0, :3] = 0.0  # three dead channels in layer1.0's inner conv
        masks.params[key][0, 3:] = 1.0
    conv = model_copy.blocks["layer1"][0].conv1
    w_before = conv.weight.detach().clone()
    pruner = EdgePruner(model_copy, "layer1", masks, SHAPE, keep_split_width=True)
    pruner.prune_round(3 / sum(len(g[0].idxs) for g in pruner.groups()))
    assert conv.out_channels == 5
    torch.testing.assert_close(conv.weight.detach(), w_before[3:])  # exactly the masked-out channels went


def test_pruned_model_saves_and_loads_without_pickle(model_copy: BlockNet, tmp_path: Path) -> None:
    pruner = EdgePruner(model_copy, "layer3", None, SHAPE)
    pruner.prune_to_budget(BudgetConfig(edge_macs=1.2e6), 0.2, 30)
    model_copy.eval()
    meta = ModelMeta(model=ModelConfig(width=8, stages=3).model_dump(mode="json"), split="layer3", num_classes=10,
                     input_shape=list(SHAPE), mean=[0.5], std=[0.5])
    save_model_dir(tmp_path, model_copy, meta)
    loaded, _ = load_model_dir(tmp_path)
    x = torch.randn(4, *SHAPE)
    torch.testing.assert_close(loaded(x), model_copy(x))


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2"])
def test_torchvision_models_prune(name: str) -> None:
    model = create_model(ModelConfig(name=name), 10, 3).train()
    split = "layer2" if name == "resnet18" else "features6"
    shape = (3, 32, 32)
    pruner = EdgePruner(model, split, SoftMasks(model, cut(model, split)[0]), shape)
    full = pruner.cost(BudgetConfig(edge_macs=1e18)).edge_macs
    result = pruner.prune_to_budget(BudgetConfig(edge_macs=0.6 * full), 0.2, 30)
    assert result.after.fits and result.after.feature_shape == result.before.feature_shape
    model.eval()
    assert model(torch.randn(2, *shape)).shape == (2, 10)


def test_frozen_parameters_are_refused(model_copy: BlockNet) -> None:
    model_copy.blocks["stem"][0].weight.requires_grad_(False)
    with pytest.raises(ModelError, match=r"frozen.*blocks\.stem\.0\.weight"):
        EdgePruner(model_copy, "layer2", None, SHAPE)


def test_no_grad_is_refused(model_copy: BlockNet) -> None:
    with torch.no_grad(), pytest.raises(ModelError, match="no_grad"):
        EdgePruner(model_copy, "layer2", None, SHAPE)


class _Untraceable(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("data-dependent control flow")


def test_untraceable_module_named_in_error(model_copy: BlockNet) -> None:
    broken = copy.deepcopy(model_copy)
    broken.blocks["layer3"].append(_Untraceable())
    with pytest.raises(ModelError, match=r"cannot trace.*data-dependent"):
        EdgePruner(broken, "layer2", None, SHAPE)


@pytest.mark.parametrize("share,step", [(0.5, 0.2), (0.39, 0.1)])
def test_round_to_keeps_multiples(share: float, step: float) -> None:
    model = create_model(ModelConfig(width=16), 10, 1).train()
    pruner = EdgePruner(model, "layer3", SoftMasks(model, cut(model, "layer3")[0]), SHAPE, round_to=8)
    full = pruner.cost(BudgetConfig(edge_macs=1e18)).edge_macs
    # small steps near the budget pick a channel or two per group, which rounds to nothing: must not stall
    result = pruner.prune_to_budget(BudgetConfig(edge_macs=share * full), step, 40)
    assert result.after.fits and sum(result.removed.values()) > 0
    widths = [m.out_channels for m in cut(model, "layer3")[0].modules() if isinstance(m, nn.Conv2d)]
    assert all(w % 8 == 0 for w in widths), widths


@pytest.mark.parametrize(("min_channels", "round_to"), [(None, 1), (3, 1), (5, 4)])
def test_no_group_drops_below_its_channel_floor(model_copy: BlockNet, min_channels: int | None,
                                                round_to: int) -> None:
    """An unreachable budget prunes every group down to its floor (a quarter of its width by default, or
    patrol.prune.min_channels, rounded up to a multiple of round_to), never further, and says that the floor is
    what stopped it."""
    split = "layer3"
    pruner = EdgePruner(model_copy, split, None, SHAPE, round_to=round_to, min_channels=min_channels)
    widths = {root: pruner._original[root] for root in pruner._original}
    result = pruner.prune_to_budget(BudgetConfig(edge_macs=1.0), step_ratio=0.5, max_rounds=100)
    assert not result.after.fits and result.at_floor
    for root, original in widths.items():
        wanted = min_channels if min_channels is not None else max(1, -(-original // 4))
        floor = min(original, -(-wanted // round_to) * round_to)
        kept = root.out_channels
        assert kept == floor, (pruner._name(root), original, kept)  # pruned to the floor, not below
    model_copy.eval()
    assert model_copy(torch.randn(2, *SHAPE)).shape == (2, 10)


def test_min_channels_above_a_layers_width_is_refused_naming_the_layer(model_copy: BlockNet) -> None:
    with pytest.raises(ModelError, match=r"min_channels 12 is more than layer 'blocks\.stem\.0' has \(8 channels.*"
                                         r"at most 8"):
        EdgePruner(model_copy, "layer3", None, SHAPE, min_channels=12)


def _narrow_convs(edge: nn.Module, minimum: int = 16) -> list[str]:
    """Convolutions (apart from the one reading the image) with fewer than `minimum` channels on both sides:
    the ones ModelOpt's INT8 rule leaves in float."""
    convs = [(n, m) for n, m in edge.named_modules() if isinstance(m, nn.Conv2d)]
    return [n for n, m in convs[1:] if max(m.in_channels, m.out_channels) < minimum]


@pytest.mark.parametrize("deploy_min", [16, 1])
def test_deploy_floor_keeps_every_convolution_int8_quantizable(deploy_min: int) -> None:
    """deploy.target's floor (patrol.prune.deploy_min_channels 16): pruning a width-16 model deep into a budget
    leaves every edge convolution with 16 channels on one side, while the blocks' inner widths still shrink; the
    same pruning without the floor (1, the reference in the same test) leaves convolutions narrower than that."""
    model = create_model(ModelConfig(width=16), 10, 1).train()
    edge = cut(model, "layer3")[0]
    assert not _narrow_convs(edge)  # every convolution is INT8-quantizable before pruning
    pruner = EdgePruner(model, "layer3", None, SHAPE, round_to=8, deploy_min_channels=deploy_min)
    result = pruner.prune_to_budget(BudgetConfig(edge_macs=1.0), step_ratio=0.3, max_rounds=100)  # to the floor
    assert result.at_floor and sum(result.removed.values()) > 0
    widths = [m.out_channels for m in edge.modules() if isinstance(m, nn.Conv2d)]
    assert all(w % 8 == 0 for w in widths), widths
    if deploy_min == 16:
        assert not _narrow_convs(edge), _narrow_convs(edge)
        assert min(widths) == 8, widths  # inner widths were free to go below 16
    else:
        assert _narrow_convs(edge)
    model.eval()
    assert model(torch.randn(2, *SHAPE)).shape == (2, 10)
