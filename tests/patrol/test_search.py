"""Importance criteria, the sparsity term, progressive pruning and PATROL's utility-guarded search, on real digits."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch

from patrol_deploy.budget import edge_cost
from patrol_deploy.config import BudgetConfig, Config
from patrol_deploy.data import DataBundle
from patrol_deploy.errors import ConfigError
from patrol_deploy.models import BlockNet
from patrol_deploy.patrol import EdgePruner, SoftMasks, run_patrol
from patrol_deploy.patrol.importance import IMPORTANCES, ImportanceInputs
from patrol_deploy.patrol.search import Candidate, closest, coarse_guard, guard_utility, proxy_ssim, winner
from patrol_deploy.patrol.stage import prune_progressively
from patrol_deploy.patrol.trainer import train_patrol
from patrol_deploy.preflight import check_component_names
from patrol_deploy.progress import PatrolWarning
from patrol_deploy.split import cut
from patrol_deploy.training import evaluate

from .conftest import small_config

SHAPE = (1, 16, 16)


@pytest.mark.parametrize("name", ["mask_gamma", "mask", "mask_taylor", "magnitude", "bn_scale"])
def test_every_importance_scores_each_channel_of_every_group(model_copy: BlockNet, name: str) -> None:
    masks = SoftMasks(model_copy, cut(model_copy, "layer3")[0])
    pruner = EdgePruner(model_copy, "layer3", masks, SHAPE, importance=name)
    for g in pruner.groups():
        s = pruner.scores(g)
        assert s.shape == (len(g[0].idxs),) and torch.isfinite(s).all() and (s >= 0).all()


def test_mask_gamma_ranks_by_the_product_of_mask_and_gamma(model_copy: BlockNet) -> None:
    """In a group with one mask (a block's inner width), zeroing a channel's gamma (mask still 1) drops its score
    to zero, and halving its mask halves it: the score follows what scales the channel, not the mask alone (the
    `mask` criterion, on the same group, sees nothing)."""
    masks = SoftMasks(model_copy, cut(model_copy, "layer3")[0])
    pruner = EdgePruner(model_copy, "layer3", masks, SHAPE, importance="mask_gamma")
    by_param = masks.by_parameter()
    group = next(g for g in pruner.groups()
                 if sum(id(i.dep.target.module) in by_param for i in g) == 1)
    item = next(i for i in group if id(i.dep.target.module) in by_param)
    bn = by_param[id(item.dep.target.module)][0]
    channel = item.idxs[0]
    before = pruner.scores(group)
    with torch.no_grad():
        item.dep.target.module.flatten()[channel] = 0.5
    assert pruner.scores(group)[0] == pytest.approx(0.5 * before[0])
    with torch.no_grad():
        bn.weight[channel] = 0.0
    assert pruner.scores(group)[0] == 0.0 and (pruner.scores(group)[1:] == before[1:]).all()
    assert torch.equal(IMPORTANCES.get("mask")(group, ImportanceInputs(masks))[1:], torch.ones(len(before) - 1))


def test_unknown_importance_is_refused_before_training() -> None:
    cfg = small_config(prune={"importance": "l2_norm"})
    with pytest.raises(ConfigError, match=r"patrol.prune.importance: unknown pruning importance 'l2_norm'.*bn_scale"):
        check_component_names(cfg)


@pytest.mark.parametrize("bad", ["-1", ".nan", "inf"])
def test_max_utility_drop_must_be_a_non_negative_number(bad: str) -> None:
    from patrol_deploy.config import load_config

    with pytest.raises(ConfigError, match=r"patrol\.max_utility_drop"):
        load_config(None, [f"patrol.max_utility_drop={bad}"])


def test_sparsity_term_spreads_the_scales_apart(trained: tuple[Config, BlockNet],
                                                 digits_bundle: DataBundle) -> None:
    """Training the masks with the sparsity term leaves the normalized scales further apart (relative spread,
    std / mean) than the same training without it: channels separate into kept and prunable ones. Both runs in
    this test, from the same start and seed."""
    spread = {}
    for weight in (0.0, 10.0):
        cfg = small_config(prune={"sparsity_weight": weight}, adversarial={"enabled": False},
                           lipschitz={"enabled": False}, distill={"enabled": False})
        model = copy.deepcopy(trained[1])
        masks = SoftMasks(model, cut(model, "layer3")[0])
        torch.manual_seed(0)
        train_patrol(model, "layer3", digits_bundle, cfg, 2, masks, None)
        v = torch.tensor(masks.scale_values())
        spread[weight] = float(v.std() / v.mean())
    assert spread[10.0] > 3 * spread[0.0], spread


def test_progressive_pruning_recovers_between_steps_and_meets_the_budget(model_copy: BlockNet) -> None:
    cfg = small_config(prune={"progressive_steps": 3})
    masks = SoftMasks(model_copy, cut(model_copy, "layer3")[0])
    pruner = EdgePruner(model_copy, "layer3", masks, SHAPE)
    seen: list[tuple[int, int]] = []
    full = pruner.cost(cfg.budget).edge_macs
    result = prune_progressively(pruner, cfg, lambda step: seen.append((step, pruner.cost(cfg.budget).edge_macs)))
    assert [s for s, _ in seen] == [1, 2]  # recovery after every step but the last
    # each step lands near its geometric target (MACs shrink by the same factor per step), never in one go
    factor = (cfg.budget.edge_macs / full) ** (1 / 3)
    for step, macs in seen:
        assert macs <= full * factor ** step * 1.001 and macs > cfg.budget.edge_macs
    assert result.after.fits and result.before.edge_macs == full
    cost = edge_cost(cut(model_copy, "layer3")[0], "layer3", SHAPE, BudgetConfig(edge_macs=cfg.budget.edge_macs))
    assert cost.edge_macs == result.after.edge_macs


def test_winner_is_the_most_private_within_the_drop_and_closest_is_the_smallest_drop() -> None:
    tried = [Candidate("layer2", 1.0, True, 9, 1.0, 90.0, 0.5, 0.6, True),
             Candidate("layer3", 1.0, True, 9, 1.0, 85.0, 5.5, None, False),
             Candidate("layer3", 0.3, True, 9, 1.0, 89.8, 0.7, 0.4, True),
             Candidate("layer4", 1.0, False, 12, 1.0)]
    assert winner(tried) is tried[2]
    for c in tried:
        c.within_drop = False
    assert winner(tried) is None and closest(tried) is tried[0]


def test_search_records_every_candidate_and_keeps_one_within_the_drop(trained: tuple[Config, BlockNet],
                                                                      digits_bundle: DataBundle) -> None:
    """The search tries splits shallow to deep; what it ships is within max_utility_drop on validation, has the
    lowest proxy SSIM of those that are, and the record says so."""
    cfg = small_config(finetune_epochs=2, max_utility_drop=100.0, search={"strengths": [1.0], "proxy_epochs": 2},
                       prune={"allow_terminal_split": True}, adversarial={"surrogate_width": 16})
    _, summary = run_patrol(cfg, digits_bundle, trained[1])
    search = summary["search"]
    cands = search["candidates"]
    assert search["passed"] and search["enabled"]
    assert [c["split"] for c in cands] == ["layer2", "layer3", "pool"]  # shallow to deep, all within 100 points
    chosen = [c for c in cands if c["chosen"]]
    assert len(chosen) == 1 and chosen[0]["split"] == summary["split"]
    assert chosen[0]["proxy_ssim"] == min(c["proxy_ssim"] for c in cands)
    assert all(0 < c["proxy_ssim"] < 1 and c["seconds"] > 0 for c in cands)
    assert math.isclose(search["baseline_val_utility"] - chosen[0]["val_utility"], chosen[0]["drop"])
    # the guard reads the validation and auxiliary images together, and the record says how many
    assert search["guard_images"] == len(digits_bundle.val) + len(digits_bundle.aux)
    assert search["baseline_val_utility"] == evaluate(trained[1], digits_bundle, "classification",
                                                      split=digits_bundle.selection)["accuracy"]
    assert "lowest proxy SSIM" in search["why"]
    assert summary["mask_scales"]["channels"] > 0 and sum(summary["mask_scales"]["counts"]) == \
        summary["mask_scales"]["channels"]


def test_search_with_nothing_within_the_drop_stops_and_ships_nothing_as_passed(
        trained: tuple[Config, BlockNet], digits_bundle: DataBundle, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every candidate loses more than max_utility_drop on validation (set here: the baseline reads 90, PATROL
    loses 5 points at strength 1 and 3 at 0.5): the search stops after the shallowest split although deeper ones
    exist, records passed=false and names the closest candidate; the run's verdict then fails on it
    (tests/test_verdict.py)."""
    from patrol_deploy.patrol import stage

    baseline = trained[1]
    drops = iter([5.0, 3.0])
    monkeypatch.setattr(stage, "guard_utility", lambda m, b, c: 90.0 if m is baseline else 90.0 - next(drops))
    cfg = small_config(max_utility_drop=1.0, search={"strengths": [1.0, 0.5], "proxy_epochs": 1},
                       prune={"allow_terminal_split": True}, adversarial={"surrogate_width": 16})
    _, summary = run_patrol(cfg, digits_bundle, baseline)
    search = summary["search"]
    cands = search["candidates"]
    assert not search["passed"]
    assert [(c["split"], c["strength"], c["drop"]) for c in cands] == [("layer2", 1.0, 5.0), ("layer2", 0.5, 3.0)]
    assert [c["chosen"] for c in cands] == [False, True] and summary["split"] == "layer2"
    assert all(c["proxy_ssim"] is None for c in cands)  # nothing within the drop: no proxy attack spent
    assert "no candidate kept selection utility" in search["why"] and "lost 3.00 points" in search["why"]


def test_a_candidate_trains_the_same_whatever_the_search_tried_before_it(
        trained: tuple[Config, BlockNet], digits_bundle: DataBundle, monkeypatch: pytest.MonkeyPatch) -> None:
    """layer2 at strength 1 gives the same model whether it is the search's only candidate or comes after a
    stronger one that lost too much utility: a candidate's result does not depend on the strengths list."""
    from patrol_deploy.patrol import stage

    baseline = trained[1]
    monkeypatch.setattr(stage, "proxy_ssim", lambda *args: 0.5)

    def searched(strengths: list[float], drops: list[float]) -> BlockNet:
        readings = iter(drops)
        monkeypatch.setattr(stage, "guard_utility", lambda m, b, c: 90.0 if m is baseline else 90.0 - next(readings))
        cfg = small_config(max_utility_drop=1.0, search={"strengths": strengths, "proxy_epochs": 1},
                           prune={"split": "layer2"}, adversarial={"surrogate_width": 16})
        model, summary = run_patrol(cfg, digits_bundle, baseline)
        assert [(c["strength"], c["chosen"]) for c in summary["search"]["candidates"]][-1] == (1.0, True)
        return model

    alone = searched([1.0], [0.0])
    after_a_stronger_one = searched([2.0, 1.0], [5.0, 0.0])
    assert alone.state_dict().keys() == after_a_stronger_one.state_dict().keys()
    for name, tensor in alone.state_dict().items():
        assert torch.equal(tensor, after_a_stronger_one.state_dict()[name]), name


def splits_read(bundle: DataBundle, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The ids of the splits whose images are read from now on (every split's `tensors` is spied on)."""
    read: list[int] = []
    original = type(bundle.test).tensors

    def spy(self: object, *a: object, **k: object) -> object:
        read.append(id(self))
        return original(self, *a, **k)  # type: ignore[arg-type]

    monkeypatch.setattr(type(bundle.test), "tensors", spy)
    return read


def test_proxy_attacker_never_reads_evaluation_images(trained: tuple[Config, BlockNet],
                                                      digits_bundle: DataBundle, monkeypatch: pytest.MonkeyPatch
                                                      ) -> None:
    cfg = small_config(search={"proxy_epochs": 1})
    read = splits_read(digits_bundle, monkeypatch)
    value = proxy_ssim(trained[1], "layer2", digits_bundle, cfg)
    assert 0 < value < 1
    assert id(digits_bundle.test) not in read and id(digits_bundle.aux) in read


def test_the_search_guard_never_reads_evaluation_images(trained: tuple[Config, BlockNet],
                                                        digits_bundle: DataBundle,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    read = splits_read(digits_bundle, monkeypatch)
    value = guard_utility(trained[1], digits_bundle, small_config())
    assert read and id(digits_bundle.test) not in read
    assert value == evaluate(trained[1], digits_bundle, "classification", split=digits_bundle.selection)["accuracy"]


def test_the_selection_images_are_validation_then_auxiliary(digits_bundle: DataBundle) -> None:
    sel = digits_bundle.selection
    n = len(digits_bundle.val)
    assert len(sel) == n + len(digits_bundle.aux)
    assert (sel.images[:n] == digits_bundle.val.images).all() and (sel.images[n:] == digits_bundle.aux.images).all()
    assert (sel.labels[n:] == digits_bundle.aux.labels).all()


def test_a_guard_coarser_than_the_drop_is_named_with_its_fix() -> None:
    """One image of 80 is 1.25 points: a 1-point guard cannot resolve it, and the message says so and what to raise;
    at 180 images (0.56 points) it can; re-ID's mAP has no per-image step."""
    cfg = small_config(max_utility_drop=1.0)
    why = coarse_guard(80, cfg)
    assert why is not None and "80 images" in why and "1.25 points" in why and "data.val_fraction" in why
    assert coarse_guard(180, cfg) is None
    assert coarse_guard(80, small_config(max_utility_drop=2.0)) is None
    reid = cfg.model_copy(update={"model": cfg.model.model_copy(update={"task": "reid"})})
    assert coarse_guard(10, reid) is None


def test_a_search_on_too_few_selection_images_warns_and_records_why(
        trained: tuple[Config, BlockNet], digits_bundle: DataBundle, monkeypatch: pytest.MonkeyPatch) -> None:
    from dataclasses import replace

    from patrol_deploy.patrol import stage

    monkeypatch.setattr(stage, "proxy_ssim", lambda *args: 0.5)
    few = replace(digits_bundle, val=digits_bundle.val.subset(np.arange(20)),
                  aux=digits_bundle.aux.subset(np.arange(40)))
    cfg = small_config(search={"strengths": [1.0], "proxy_epochs": 1}, prune={"split": "layer2"},
                       adversarial={"surrogate_width": 16})
    with pytest.warns(PatrolWarning, match="60 images"):
        _, summary = run_patrol(cfg, few, trained[1])
    assert summary["search"]["guard_images"] == 60 and "1.67 points" in summary["search"]["coarse_guard"]
